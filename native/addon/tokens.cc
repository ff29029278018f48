// tokens.cc - the fencing-token counter of the OS file-lock mechanism
// (docs/fencing.md): a u64 in a small file of the installation, mapped
// shared by every lock-server process, taken with one atomic add per grant.
//
// Why a file and not the lock table's counter: the OS mechanism runs when no
// table is in service (jdls -ibD, OSLOCKS), so there is no table to hold it.
// Why it still rises per lock: a grant's token is taken AFTER the kernel
// granted the lock and before it is released, and the next holder's only
// after its own grant, which the release precedes: one counter, taken in
// grant order for each lock. Across restarts the listener floors it at a
// new epoch (src/server/token-epoch.ts): the file's value is not durable
// (a power cut may lose its last pages), the epoch record is.
//
// Trust: the file is the service's (created 0600, O_NOFOLLOW, checked like
// the table: a regular file with one link, owned by root or the
// installation's owner, writable by nobody else): anyone who could write it
// could make tokens repeat.
#include <napi.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cerrno>
#include <cstring>
#include "../common/jdls_table.h"

namespace {

struct Counter {
  uint64_t *word = nullptr;
};

void Unmap(napi_env, void *data, void *) {
  auto *c = static_cast<Counter *>(data);
  if (c->word) munmap(c->word, 64);
  delete c;
}

Counter *CounterOf(const Napi::CallbackInfo &info) {
  if (info.Length() < 1 || !info[0].IsExternal()) return nullptr;
  return info[0].As<Napi::External<Counter>>().Data();
}

// tokenCounterOpen(path, releaseDir) -> External | -errno (with lastDetail set on a refusal)
Napi::Value Open(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsString() || !info[1].IsString()) {
    Napi::TypeError::New(env, "tokenCounterOpen(path, releaseDir)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  std::string path = info[0].As<Napi::String>();
  std::string dir = info[1].As<Napi::String>();
  jdls_trust trust;
  if (jdls_installation_trust(dir.c_str(), &trust) != 0) return Napi::Number::New(env, -errno);
  int fd = open(path.c_str(), O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0) return Napi::Number::New(env, -errno);
  int rc = jdls_check_file(fd, path.c_str(), "fencing-token counter", &trust, 0);
  if (rc != JDLS_OK) {
    close(fd);
    return Napi::Number::New(env, -EPERM);
  }
  struct stat st;
  if (fstat(fd, &st) != 0 || (st.st_size < 64 && ftruncate(fd, 64) != 0)) {
    int e = errno;
    close(fd);
    return Napi::Number::New(env, -e);
  }
  void *p = mmap(nullptr, 64, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  int e = errno;
  close(fd);
  if (p == MAP_FAILED) return Napi::Number::New(env, -e);
  auto *c = new Counter{static_cast<uint64_t *>(p)};
  return Napi::External<Counter>::New(env, c, [](Napi::Env, Counter *x) { Unmap(nullptr, x, nullptr); });
}

// tokenCounterNext(counter) -> bigint: the next token (atomic add)
Napi::Value Next(const Napi::CallbackInfo &info) {
  Counter *c = CounterOf(info);
  if (!c) {
    Napi::TypeError::New(info.Env(), "tokenCounterNext(counter)").ThrowAsJavaScriptException();
    return info.Env().Undefined();
  }
  return Napi::BigInt::New(info.Env(), __atomic_fetch_add(c->word, 1, __ATOMIC_SEQ_CST));
}

// tokenCounterPeek(counter) -> bigint: the next token (no change)
Napi::Value Peek(const Napi::CallbackInfo &info) {
  Counter *c = CounterOf(info);
  if (!c) {
    Napi::TypeError::New(info.Env(), "tokenCounterPeek(counter)").ThrowAsJavaScriptException();
    return info.Env().Undefined();
  }
  return Napi::BigInt::New(info.Env(), __atomic_load_n(c->word, __ATOMIC_SEQ_CST));
}

// tokenCounterFloor(counter, bigint): every later token >= it (never lowers)
Napi::Value Floor(const Napi::CallbackInfo &info) {
  Counter *c = CounterOf(info);
  bool lossless = false;
  if (!c || info.Length() < 2 || !info[1].IsBigInt()) {
    Napi::TypeError::New(info.Env(), "tokenCounterFloor(counter, bigint)").ThrowAsJavaScriptException();
    return info.Env().Undefined();
  }
  uint64_t floor = info[1].As<Napi::BigInt>().Uint64Value(&lossless);
  uint64_t cur = __atomic_load_n(c->word, __ATOMIC_SEQ_CST);
  while (cur < floor && !__atomic_compare_exchange_n(c->word, &cur, floor, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {
  }
  return info.Env().Undefined();
}

}  // namespace

void JdlsTokensInit(Napi::Env env, Napi::Object exports) {
  auto o = Napi::Object::New(env);
  o.Set("open", Napi::Function::New(env, Open));
  o.Set("next", Napi::Function::New(env, Next));
  o.Set("floor", Napi::Function::New(env, Floor));
  o.Set("peek", Napi::Function::New(env, Peek));
  exports.Set("tokenCounter", o);
}
