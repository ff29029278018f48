// oslock.cc - the Node face of OS file locks (native/common/jdls_oslock.c).
//
// Owns: the Ofd object (one open file description: a descriptor and its
// OFD byte-range locks), the Waits object (blocking waits, one thread each),
// and the module functions for record-lock naming. Registered by addon.cc's
// Init through jdls_oslock_init as `exports.oslock`. Does not own: owners,
// the registry of held keys, error wording, validation of ranges (src/locks/ofd.ts,
// src/locks/oslock.ts).
//
// Waiting (the trap this file exists to dodge): F_OFD_SETLKW sleeps in the
// kernel, so it may run neither on the event loop nor on the libuv pool
// (four pending waits would starve fs and dns). Each pending wait gets a
// thread of its own: the kernel, not we, holds the queue of blocked POSIX
// lock requests, and a thread blocked in fcntl can only be woken by the lock
// or by a signal - one thread per wait is the only way to wait for several
// locks at once. A cancel (timeout, abort, close) sets the wait's flag and
// sends the thread the interrupt signal (jdls_osl_interrupt) until the thread
// reports back; results go back to JS through one ThreadSafeFunction per
// Waits object. Threads are joined when their result is delivered, on
// cancel, and in the Waits object's env cleanup hook (worker exit, process
// exit), which is registered AFTER the TSFN is created so that it runs
// before the TSFN's own teardown (cleanup hooks run in reverse order).
#include <napi.h>
#include <sys/stat.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include <fcntl.h>
#include <unistd.h>

extern "C" {
#include "../common/jdls_oslock.h"
}
#include "env_cleanup.h"
#include "oslock.h"

namespace {

#define OSL_REQUIRE(cond, msg)                                     \
  do {                                                             \
    if (!(cond)) {                                                 \
      Napi::TypeError::New(env, msg).ThrowAsJavaScriptException(); \
      return env.Undefined();                                      \
    }                                                              \
  } while (0)

// An integer argument as int64: a BigInt (lossless) or a safe Number.
bool I64Arg(napi_env env, napi_value v, int64_t *out) {
  bool lossless = false;
  if (napi_get_value_bigint_int64(env, v, out, &lossless) == napi_ok) return lossless;
  double d;
  if (napi_get_value_double(env, v, &d) != napi_ok) return false;
  if (!(d >= -9007199254740991.0 && d <= 9007199254740991.0) || d != static_cast<double>(static_cast<int64_t>(d))) return false;
  *out = static_cast<int64_t>(d);
  return true;
}

bool KeyBytes(napi_env env, napi_value v, std::string *tmp, const uint8_t **data, size_t *len) {
  void *d;
  if (napi_get_buffer_info(env, v, &d, len) == napi_ok) {
    *data = static_cast<const uint8_t *>(d);
    return true;
  }
  size_t n = 0;
  if (napi_get_value_string_utf8(env, v, nullptr, 0, &n) != napi_ok) return false;
  tmp->resize(n + 1);
  napi_get_value_string_utf8(env, v, &(*tmp)[0], n + 1, &n);
  tmp->resize(n);
  *data = reinterpret_cast<const uint8_t *>(tmp->data());
  *len = n;
  return true;
}

// ---- the record keys an Ofd holds ------------------------------------------

// One owner's record keys in one lock file, by byte. Lives on the JS thread
// only (waits touch nothing here). Why native and not a TypeScript Map: on
// the machines measured, each system call costs the JS that follows it
// cache and TLB misses, and a registry in JS objects touched a dozen heap
// pages per lock - a pair cost 2.4x a raw fcntl pair; one native call per
// operation brings it back to the fcntl floor (docs/benchmarks.md).
//
// Invariant: the kernel holds byte `off` for this description in mode
// Effective(off): WRITE if any key on it is WRITE, READ if any is READ,
// nothing otherwise. Two keys on one byte (a hash collision) thus keep it
// locked until both are released: the collision only ever locks MORE.
// Exception: while the owner holds the FILELOCK of the file on this
// description (Ofd::whole_), the kernel holds all of it, [0, infinity)
// WRITE, and the registry alone records the owner's keys (see HoldWhole).
class KeyRegistry {
 public:
  static constexpr int kNone = -1;

  struct Held {
    std::string key;
    int type;
  };

  // The keys on one byte: the first inline (the normal case, no allocation
  // beyond the map node; short keys fit std::string's inline buffer), any
  // colliding ones in `more`.
  struct Byte {
    Held first;
    std::vector<Held> more;
    int Effective(const Held *skip = nullptr, int extra = kNone) const {
      int e = extra;
      if (&first != skip && first.type > e) e = first.type;
      for (const Held &h : more)
        if (&h != skip && h.type > e) e = h.type;
      return e;
    }
    Held *Find(const uint8_t *k, size_t n) {
      if (Same(first, k, n)) return &first;
      for (Held &h : more)
        if (Same(h, k, n)) return &h;
      return nullptr;
    }
    static bool Same(const Held &h, const uint8_t *k, size_t n) {
      return h.key.size() == n && (n == 0 || std::memcmp(h.key.data(), k, n) == 0);
    }
  };
  using Map = std::unordered_map<uint64_t, Byte>;

  // The solo byte: while the owner holds keys on one byte only (the common
  // case: a program locks a record, writes it, releases it), that byte lives
  // inline here, in the Ofd object the call touches anyway, not in the map:
  // after a system call every page touched costs (docs/benchmarks.md).
  Byte *At(uint64_t off) {
    if (has_solo_ && solo_off_ == off) return &solo_;
    if (bytes_.empty()) return nullptr;
    auto it = bytes_.find(off);
    return it == bytes_.end() ? nullptr : &it->second;
  }
  int Effective(uint64_t off) {
    Byte *b = At(off);
    return b ? b->Effective() : kNone;
  }

  // Record a key as held in `type` (`b`/`mine` from At/Find, may be null).
  void Record(uint64_t off, Byte *b, Held *mine, const uint8_t *k, size_t n, int type) {
    if (mine) {
      mine->type = type;
      return;
    }
    count_++;
    if (b) {
      b->more.push_back(Held{std::string(reinterpret_cast<const char *>(k), n), type});
      return;
    }
    if (!has_solo_ && bytes_.empty()) {
      has_solo_ = true;
      solo_off_ = off;
      solo_.first.key.assign(reinterpret_cast<const char *>(k), n);
      solo_.first.type = type;
      solo_.more.clear();
      return;
    }
    // Reuse the node of the last released byte: a lock+unlock pair then
    // allocates nothing.
    if (spare_) {
      spare_.key() = off;
      spare_.mapped().first.key.assign(reinterpret_cast<const char *>(k), n);
      spare_.mapped().first.type = type;
      spare_.mapped().more.clear();
      bytes_.insert(std::move(spare_));
      return;
    }
    Byte nb;
    nb.first.key.assign(reinterpret_cast<const char *>(k), n);
    nb.first.type = type;
    bytes_.emplace(off, std::move(nb));
  }

  void Forget(uint64_t off, Byte *b, Held *mine) {
    count_--;
    if (mine != &b->first) {
      for (size_t i = 0; i < b->more.size(); i++)
        if (&b->more[i] == mine) {
          b->more.erase(b->more.begin() + static_cast<std::ptrdiff_t>(i));
          return;
        }
      return;
    }
    if (!b->more.empty()) {
      b->first = std::move(b->more.back());
      b->more.pop_back();
      return;
    }
    if (b == &solo_) {
      has_solo_ = false;
      return;
    }
    if (!spare_) spare_ = bytes_.extract(off);
    else bytes_.erase(off);
  }

  size_t Clear() {
    size_t n = count_;
    bytes_.clear();
    has_solo_ = false;
    count_ = 0;
    return n;
  }

  size_t count() const { return count_; }
  // Every byte with its keys (solo first).
  template <typename F>
  void ForEach(F f) const {
    if (has_solo_) f(solo_off_, solo_);
    for (const auto &kv : bytes_) f(kv.first, kv.second);
  }

 private:
  Byte solo_;
  uint64_t solo_off_ = 0;
  bool has_solo_ = false;
  Map bytes_;
  Map::node_type spare_;
  size_t count_ = 0;
};

// ---- Ofd: one open file description --------------------------------------

class Ofd : public Napi::ObjectWrap<Ofd>, public EnvCleanup<Ofd> {
 public:
  static Napi::Function Init(Napi::Env env) {
    Napi::Function ctor = DefineClass(env, "Ofd",
                                      {
                                          InstanceMethod("getlk", &Ofd::GetLk),
                                          InstanceMethod("close", &Ofd::Close),
                                          InstanceMethod("keyTarget", &Ofd::KeyTarget),
                                          InstanceMethod("grantKey", &Ofd::GrantKey),
                                          InstanceMethod("keyMode", &Ofd::KeyMode),
                                          InstanceMethod("byteMode", &Ofd::ByteMode),
                                          InstanceMethod("keys", &Ofd::Keys),
                                          InstanceMethod("clearKeys", &Ofd::ClearKeys),
                                          InstanceMethod("keyCount", &Ofd::KeyCount),
                                          InstanceMethod("stillNamed", &Ofd::StillNamed),
                                          InstanceMethod("holdWhole", &Ofd::HoldWhole),
                                          InstanceMethod("reshape", &Ofd::ReshapeJs),
                                      });
    // The hot call is plain N-API (see addon.cc: node-addon-api's wrapper
    // costs more than a cheap native call).
    Napi::Object proto = ctor.Get("prototype").As<Napi::Object>();
    napi_value fn;
    napi_create_function(env, "setlk", NAPI_AUTO_LENGTH, FastSetLk, nullptr, &fn);
    proto.Set("setlk", Napi::Value(env, fn));
    napi_create_function(env, "lockKey", NAPI_AUTO_LENGTH, FastLockKey, nullptr, &fn);
    proto.Set("lockKey", Napi::Value(env, fn));
    napi_create_function(env, "unlockKey", NAPI_AUTO_LENGTH, FastUnlockKey, nullptr, &fn);
    proto.Set("unlockKey", Napi::Value(env, fn));
    return ctor;
  }

  // new Ofd(fd): adopts a descriptor from open() (closed by close(), the
  // finalizer or env teardown - whichever comes first).
  Ofd(const Napi::CallbackInfo &info) : Napi::ObjectWrap<Ofd>(info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsNumber()) {
      Napi::TypeError::New(env, "Ofd(fd)").ThrowAsJavaScriptException();
      return;
    }
    fd_ = info[0].As<Napi::Number>().Int32Value();
    // The file's identity as opened, for StillNamed: one lstat per check
    // instead of lstat + fstat.
    struct stat st;
    if (fstat(fd_, &st) == 0) {
      dev_ = st.st_dev;
      ino_ = st.st_ino;
      known_ = true;
    }
    HookEnvCleanup(env);
    Bind(env, info.This(), 0, "lockKey", FastLockKey);
    Bind(env, info.This(), 1, "unlockKey", FastUnlockKey);
  }

  ~Ofd() override {
    for (Slot *&s : slots_)
      if (s) {
        s->o = nullptr;
        s = nullptr;
      }
    Shutdown();
  }

  int fd() const { return fd_; }
  dev_t dev_ = 0;
  ino_t ino_ = 0;
  bool known_ = false;

  // stillNamed(path) -> 1 | 0 | -errno: does `path` still name this
  // description's file (jdls_osl_still_named)? Asked after taking a lock.
  Napi::Value StillNamed(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    OSL_REQUIRE(info.Length() >= 1 && info[0].IsString(), "stillNamed(path)");
    std::string p = info[0].As<Napi::String>();
    if (fd_ < 0) return Napi::Number::New(env, -EBADF);
    if (!known_) return Napi::Number::New(env, jdls_osl_still_named(fd_, p.c_str()));
    struct stat st;
    if (lstat(p.c_str(), &st) != 0) return Napi::Number::New(env, errno == ENOENT ? 0 : -errno);
    return Napi::Number::New(env, st.st_dev == dev_ && st.st_ino == ino_ ? 1 : 0);
  }

 private:
  friend class EnvCleanup<Ofd>;
  void Shutdown() {
    UnhookEnvCleanup();
    // Closing the description releases its locks: a worker's exit or the
    // end of the process lets go of everything it held.
    jdls_osl_close(fd_);
    fd_ = -1;
  }


  // setlk(start, len, type) -> 0 | 1 (conflict) | -errno
  static napi_value FastSetLk(napi_env env, napi_callback_info cbinfo) {
    size_t argc = 3;
    napi_value argv[3], self;
    napi_get_cb_info(env, cbinfo, &argc, argv, &self, nullptr);
    void *p = nullptr;
    int64_t start, len;
    int32_t type;
    if (napi_unwrap(env, self, &p) != napi_ok || !p || argc < 3 || !I64Arg(env, argv[0], &start) ||
        !I64Arg(env, argv[1], &len) || napi_get_value_int32(env, argv[2], &type) != napi_ok) {
      napi_throw_type_error(env, nullptr, "setlk(start, len, type)");
      return nullptr;
    }
    Ofd *o = static_cast<Ofd *>(p);
    napi_value out;
    napi_create_int32(env, o->fd_ < 0 ? -EBADF : jdls_osl_setlk(o->fd_, start, len, type), &out);
    return out;
  }

  // getlk(start, len, type) -> null | {type, start, len, pid} | -errno
  Napi::Value GetLk(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    int64_t start, len;
    OSL_REQUIRE(info.Length() >= 3 && I64Arg(env, info[0], &start) && I64Arg(env, info[1], &len) && info[2].IsNumber(),
                "getlk(start, len, type)");
    if (fd_ < 0) return Napi::Number::New(env, -EBADF);
    jdls_osl_holder h;
    int rc = jdls_osl_getlk(fd_, start, len, info[2].As<Napi::Number>().Int32Value(), &h);
    if (rc < 0) return Napi::Number::New(env, rc);
    if (rc == JDLS_OSL_OK) return env.Null();
    auto o = Napi::Object::New(env);
    o.Set("type", h.type);
    o.Set("start", Napi::BigInt::New(env, h.start));
    o.Set("len", Napi::BigInt::New(env, h.len));
    o.Set("pid", h.pid);
    return o;
  }

  Napi::Value Close(const Napi::CallbackInfo &info) {
    Shutdown();
    return info.Env().Undefined();
  }

  // ---- record keys (see KeyRegistry) ----

  // A key argument: Buffer bytes, or a string's UTF-8 (short ones on the
  // stack, no allocation).
  struct Key {
    const uint8_t *data = nullptr;
    size_t len = 0;
    char small[256];
    std::string big;
    bool Read(napi_env env, napi_value v) {
      void *d;
      if (napi_get_buffer_info(env, v, &d, &len) == napi_ok) {
        data = static_cast<const uint8_t *>(d);
        return true;
      }
      size_t n = 0;
      if (napi_get_value_string_utf8(env, v, small, sizeof small, &n) != napi_ok) return false;
      if (n < sizeof small - 1) {
        data = reinterpret_cast<const uint8_t *>(small);
        len = n;
        return true;
      }
      return KeyBytes(env, v, &big, &data, &len);  // may not fit: measure and copy
    }
    // The key as src/locks/oslock.ts gives it: with the file's identity in front
    // already when the lock file's name is not exact (jdls_oslock.h).
    uint64_t Offset() const { return jdls_osl_key_offset(0, 0, data, len); }
  };

  // this (an Ofd, open), key, and an int32 type when N == 2
  template <size_t N>
  static Ofd *KeyArgs(napi_env env, napi_callback_info cbinfo, Key *k, int32_t *type, const char *usage, bool *closed) {
    size_t argc = N;
    napi_value argv[N], self;
    void *data = nullptr;
    napi_get_cb_info(env, cbinfo, &argc, argv, &self, &data);
    void *p = nullptr;
    bool ok;
    if (data) {
      // an Ofd's own function (see Slot); a slot whose Ofd is gone is closed
      p = static_cast<Slot *>(data)->o;
      if (!p) {
        *closed = true;
        return nullptr;
      }
      ok = true;
    } else {
      ok = napi_unwrap(env, self, &p) == napi_ok && p;
    }
    if (!ok || argc < N || !k->Read(env, argv[0]) ||
        (N == 2 && napi_get_value_int32(env, argv[N - 1], type) != napi_ok) ||
        (N == 2 && *type != JDLS_OSL_READ && *type != JDLS_OSL_WRITE)) {
      napi_throw_type_error(env, nullptr, usage);
      return nullptr;
    }
    return static_cast<Ofd *>(p);
  }

  static napi_value Int(napi_env env, int v) {
    napi_value out;
    napi_create_int32(env, v, &out);
    return out;
  }

  // lockKey(key, type) -> 0 granted | 1 conflict | -errno. Re-lock: no call;
  // READ<->WRITE: converts the byte in place.
  static napi_value FastLockKey(napi_env env, napi_callback_info cbinfo) {
    Key k;
    int32_t type = 0;
    bool closed = false;
    Ofd *o = KeyArgs<2>(env, cbinfo, &k, &type, "lockKey(key, type)", &closed);
    if (!o) return closed ? Int(env, -EBADF) : nullptr;
    if (o->fd_ < 0) return Int(env, -EBADF);
    uint64_t off = k.Offset();
    KeyRegistry::Byte *b = o->reg_.At(off);
    KeyRegistry::Held *mine = b ? b->Find(k.data, k.len) : nullptr;
    if (mine && mine->type == type) return Int(env, JDLS_OSL_OK);
    if (o->whole_) {
      // The FILELOCK holds the whole file: a READ here would open a hole in it.
      o->reg_.Record(off, b, mine, k.data, k.len, type);
      return Int(env, JDLS_OSL_OK);
    }
    int before = b ? b->Effective() : KeyRegistry::kNone;
    int after = b ? b->Effective(mine, type) : type;
    if (after != before) {
      int rc = jdls_osl_setlk(o->fd_, static_cast<int64_t>(off), 1, after);
      if (rc != JDLS_OSL_OK) return Int(env, rc);
    }
    o->reg_.Record(off, b, mine, k.data, k.len, type);
    return Int(env, JDLS_OSL_OK);
  }

  // unlockKey(key) -> 0 released | 4 not held | -errno
  static napi_value FastUnlockKey(napi_env env, napi_callback_info cbinfo) {
    Key k;
    bool closed = false;
    Ofd *o = KeyArgs<1>(env, cbinfo, &k, nullptr, "unlockKey(key)", &closed);
    if (!o) return closed ? Int(env, -EBADF) : nullptr;
    uint64_t off = k.Offset();
    KeyRegistry::Byte *b = o->reg_.At(off);
    KeyRegistry::Held *mine = b ? b->Find(k.data, k.len) : nullptr;
    if (!mine) return Int(env, 4);
    if (o->whole_) {
      // The FILELOCK keeps the byte: only the registry forgets the key.
      o->reg_.Forget(off, b, mine);
      return Int(env, JDLS_OSL_OK);
    }
    int before = b->Effective();
    int after = b->Effective(mine, KeyRegistry::kNone);
    if (after != before && o->fd_ >= 0) {
      // A release or a downgrade: the kernel grants both at once.
      int rc = jdls_osl_setlk(o->fd_, static_cast<int64_t>(off), 1, after == KeyRegistry::kNone ? JDLS_OSL_UNLOCK : after);
      if (rc != JDLS_OSL_OK) return Int(env, rc < 0 ? rc : -EAGAIN);
    }
    o->reg_.Forget(off, b, mine);
    return Int(env, JDLS_OSL_OK);
  }

  // keyTarget(key, type) -> [offset: bigint, type the byte must be taken in]
  Napi::Value KeyTarget(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    Key k;
    OSL_REQUIRE(info.Length() >= 2 && k.Read(env, info[0]) && info[1].IsNumber(), "keyTarget(key, type)");
    uint64_t off = k.Offset();
    KeyRegistry::Byte *b = reg_.At(off);
    KeyRegistry::Held *mine = b ? b->Find(k.data, k.len) : nullptr;
    int type = info[1].As<Napi::Number>().Int32Value();
    auto a = Napi::Array::New(env, 2);
    a.Set(0u, Napi::BigInt::New(env, off));
    a.Set(1u, Napi::Number::New(env, b ? b->Effective(mine, type) : type));
    return a;
  }

  // grantKey(key, type, heldType): a wait took the key's byte as heldType;
  // record the key and bring the byte back in line with the registry (it
  // may have moved while the wait slept). 0 | -errno
  Napi::Value GrantKey(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    Key k;
    OSL_REQUIRE(info.Length() >= 3 && k.Read(env, info[0]) && info[1].IsNumber() && info[2].IsNumber(),
                "grantKey(key, type, heldType)");
    uint64_t off = k.Offset();
    int type = info[1].As<Napi::Number>().Int32Value();
    int held = info[2].As<Napi::Number>().Int32Value();
    OSL_REQUIRE(type == JDLS_OSL_READ || type == JDLS_OSL_WRITE, "grantKey: type");
    KeyRegistry::Byte *b = reg_.At(off);
    reg_.Record(off, b, b ? b->Find(k.data, k.len) : nullptr, k.data, k.len, type);
    int eff = reg_.Effective(off);
    if (whole_) {
      // A wait of this owner's that slept through its own FILELOCK's grant
      // may have taken the byte as READ - a hole in the FILELOCK: close it
      // again (the same description's WRITE over its own READ is a
      // conversion; it fails only if another owner slipped in meanwhile).
      if (held != JDLS_OSL_WRITE && fd_ >= 0) jdls_osl_setlk(fd_, static_cast<int64_t>(off), 1, JDLS_OSL_WRITE);
      return Napi::Number::New(env, 0);
    }
    if (eff != held && fd_ >= 0) {
      int rc = jdls_osl_setlk(fd_, static_cast<int64_t>(off), 1, eff == KeyRegistry::kNone ? JDLS_OSL_UNLOCK : eff);
      if (rc < 0) return Napi::Number::New(env, rc);
    }
    return Napi::Number::New(env, 0);
  }

  // holdWhole(on) -> 0 | -errno. on: the kernel has just granted this
  // description [0, infinity) WRITE (a FILELOCK): from now on lockKey,
  // unlockKey and grantKey change the registry only - the owner's own keys
  // never conflict with its FILELOCK, and a READ or a release of a key must
  // not open a hole in it. off: Reshape() gives the kernel back exactly the
  // registry's bytes, then keys touch the kernel again.
  Napi::Value HoldWhole(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    OSL_REQUIRE(info.Length() >= 1 && info[0].IsBoolean(), "holdWhole(on)");
    if (info[0].As<Napi::Boolean>().Value()) {
      whole_ = true;
      return Napi::Number::New(env, 0);
    }
    int rc = Reshape();
    if (rc == 0) whole_ = false;
    return Napi::Number::New(env, rc);
  }

  // reshape() -> 0 | -errno: Reshape() without the FILELOCK (a grant that
  // lost a race and is given back before it was ever held).
  Napi::Value ReshapeJs(const Napi::CallbackInfo &info) {
    return Napi::Number::New(info.Env(), Reshape());
  }

  // From "this description may hold more than its keys" (all of [0, inf)
  // WRITE, or a part of it) to exactly the registry's bytes:
  // jdls_osl_reshape (jdls_oslock.c, shared with the shim's C API) says why
  // nothing a key holds is let go in between. Colliding keys count once per
  // byte (Effective). A failure leaves MORE locked, never less.
  int Reshape() {
    std::vector<jdls_osl_byte> bytes;
    bytes.reserve(reg_.count());
    reg_.ForEach([&](uint64_t off, const KeyRegistry::Byte &b) { bytes.push_back({off, b.Effective()}); });
    return jdls_osl_reshape(fd_, bytes.data(), bytes.size());
  }

  // keyMode(key) -> -1 | READ | WRITE: this key, from the registry
  Napi::Value KeyMode(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    Key k;
    OSL_REQUIRE(info.Length() >= 1 && k.Read(env, info[0]), "keyMode(key)");
    KeyRegistry::Byte *b = reg_.At(k.Offset());
    KeyRegistry::Held *mine = b ? b->Find(k.data, k.len) : nullptr;
    return Napi::Number::New(env, mine ? mine->type : KeyRegistry::kNone);
  }

  // byteMode(key) -> -1 | READ | WRITE: the key's byte, whatever key holds it
  Napi::Value ByteMode(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    Key k;
    OSL_REQUIRE(info.Length() >= 1 && k.Read(env, info[0]), "byteMode(key)");
    return Napi::Number::New(env, reg_.Effective(k.Offset()));
  }

  // keys() -> [{key: Buffer, type, offset: bigint}]
  Napi::Value Keys(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    auto a = Napi::Array::New(env, reg_.count());
    uint32_t i = 0;
    reg_.ForEach([&](uint64_t off, const KeyRegistry::Byte &b) {
      auto add = [&](const KeyRegistry::Held &h) {
        auto o = Napi::Object::New(env);
        o.Set("key", Napi::Buffer<char>::Copy(env, h.key.data(), h.key.size()));
        o.Set("type", h.type);
        o.Set("offset", Napi::BigInt::New(env, off));
        a.Set(i++, o);
      };
      add(b.first);
      for (const KeyRegistry::Held &h : b.more) add(h);
    });
    return a;
  }

  // clearKeys() -> how many: forgets them (the caller closes the
  // description or unlocks the whole file)
  Napi::Value ClearKeys(const Napi::CallbackInfo &info) {
    return Napi::Number::New(info.Env(), static_cast<double>(reg_.Clear()));
  }

  Napi::Value KeyCount(const Napi::CallbackInfo &info) {
    return Napi::Number::New(info.Env(), static_cast<double>(reg_.count()));
  }

  // The hot calls (lockKey, unlockKey) are functions of each Ofd's own,
  // their data a Slot pointing at the Ofd: napi_unwrap looks up a private
  // property through V8's generic (C++) lookup, ~20 ns a call - a tenth of
  // what the registry costs over two raw setlk calls (docs/benchmarks.md).
  // The function may outlive the Ofd (someone kept a reference): the Ofd's
  // destructor clears the slot (calls then fail with EBADF), the function's
  // finalizer frees it; whichever runs first unlinks the other.
  struct Slot {
    Ofd *o;
    int i;
  };
  Slot *slots_[2] = {nullptr, nullptr};

  void Bind(Napi::Env env, Napi::Value self, int i, const char *name, napi_callback cb) {
    Slot *slot = new Slot{this, i};
    napi_value fn;
    if (napi_create_function(env, name, NAPI_AUTO_LENGTH, cb, slot, &fn) != napi_ok ||
        napi_add_finalizer(env, fn, slot, &Ofd::FreeSlot, nullptr, nullptr) != napi_ok) {
      delete slot;
      return;  // the prototype's version (napi_unwrap) stays in use
    }
    slots_[i] = slot;
    napi_set_named_property(env, self, name, fn);
  }

  static void FreeSlot(napi_env, void *data, void *) {
    Slot *slot = static_cast<Slot *>(data);
    if (slot->o) slot->o->slots_[slot->i] = nullptr;
    delete slot;
  }

  int fd_ = -1;
  KeyRegistry reg_;
  // The owner holds the FILELOCK on this description (HoldWhole).
  bool whole_ = false;
};

// ---- Waits: blocking waits, one thread each --------------------------------

// One pending wait. Guarded by Waits::mu_: done, rc, withdrawn. `cancel` is
// read by the waiting thread without the mutex (atomically).
struct Wait {
  double id;
  int fd;  // a dup of the Ofd's descriptor: same description, same owner
  int64_t start, len;
  int type;
  int cancel = 0;
  bool done = false;
  bool withdrawn = false;  // cancelled from JS: do not report
  int rc = 0;
  // pthread, not std::thread: exceptions are off in this build, and a
  // failed std::thread construction would abort the process.
  pthread_t thread{};
  bool joinable = false;
  class Waits *owner = nullptr;
};

struct Done {
  double id;
  int rc;
};

class Waits : public Napi::ObjectWrap<Waits>, public EnvCleanup<Waits> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "Waits",
                       {
                           InstanceMethod("start", &Waits::Start),
                           InstanceMethod("cancel", &Waits::Cancel),
                           InstanceMethod("pending", &Waits::Pending),
                           InstanceMethod("close", &Waits::Close),
                       });
  }

  // new Waits(onDone(id, rc)): rc 0 = granted, < 0 = -errno
  Waits(const Napi::CallbackInfo &info) : Napi::ObjectWrap<Waits>(info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsFunction()) {
      Napi::TypeError::New(env, "Waits(onDone)").ThrowAsJavaScriptException();
      return;
    }
    signal_ = jdls_osl_signal_init();
    tsfn_ = Napi::ThreadSafeFunction::New(env, info[0].As<Napi::Function>(), "jdls-oslock-waits", 0, 1);
    tsfn_.Unref(env);
    HookEnvCleanup(env);
    open_ = true;
  }

  ~Waits() override { Shutdown(); }

 private:
  friend class EnvCleanup<Waits>;
  void Shutdown() {
    UnhookEnvCleanup();
    if (!open_) return;
    open_ = false;
    std::map<double, std::unique_ptr<Wait>> all;
    {
      std::lock_guard<std::mutex> g(mu_);
      all.swap(waits_);
    }
    for (auto &kv : all)
      if (!Stop(kv.second.get())) kv.second.release();  // see Stop
    tsfn_.Release();
  }


  static void *Main(void *arg) {
    Wait *w = static_cast<Wait *>(arg);
    w->owner->Run(w);
    return nullptr;
  }

  void Run(Wait *w) {
    sigset_t all, only;
    jdls_osl_thread_masks(&all, &only);
    pthread_sigmask(SIG_UNBLOCK, &only, nullptr);
    int rc = jdls_osl_setlkw(w->fd, w->start, w->len, w->type, &w->cancel);
    bool report;
    {
      std::lock_guard<std::mutex> g(mu_);
      w->done = true;
      w->rc = rc;
      report = !w->withdrawn;
    }
    cv_.notify_all();
    if (!report) return;
    auto *d = new Done{w->id, rc};
    napi_status s = tsfn_.BlockingCall(d, [this](Napi::Env env, Napi::Function fn, Done *done) {
      std::unique_ptr<Done> own(done);
      if (env == nullptr || fn == nullptr) return;  // env teardown
      // Join the finished thread before JS hears of it; a wait withdrawn
      // meanwhile (cancel got there first) is not reported.
      if (!Reap(own->id)) return;
      napi_value argv[2], ignored;
      napi_create_double(env, own->id, &argv[0]);
      napi_create_int32(env, own->rc, &argv[1]);
      // Raw call: during teardown a throwing Napi::Function::Call would abort.
      napi_call_function(env, env.Undefined(), fn, 2, argv, &ignored);
    });
    if (s != napi_ok) delete d;
  }

  // JS thread: forget a finished wait, joining its thread. False if gone.
  bool Reap(double id) {
    std::unique_ptr<Wait> w;
    {
      std::lock_guard<std::mutex> g(mu_);
      auto it = waits_.find(id);
      if (it == waits_.end()) return false;
      w = std::move(it->second);
      waits_.erase(it);
    }
    Finish(w.get());
    return true;
  }

  // The thread has reported (or is about to): join it, drop its descriptor.
  void Finish(Wait *w) {
    if (w->joinable) pthread_join(w->thread, nullptr);
    w->joinable = false;
    jdls_osl_close(w->fd);
    w->fd = -1;
    Unrefed();
  }

  // Interrupt until the thread reports back, then join it. Bounded: the
  // signal is repeated every 2 ms (one repeat covers a signal that landed
  // just before the thread entered the kernel), for at most ~10 s. False if
  // the thread never answered: it was detached and still uses `w`, which
  // the caller must then leak rather than free.
  bool Stop(Wait *w) {
    __atomic_store_n(&w->cancel, 1, __ATOMIC_RELEASE);
    {
      std::unique_lock<std::mutex> g(mu_);
      w->withdrawn = true;
      for (int i = 0; i < 5000 && !w->done; i++) {
        if (w->joinable) jdls_osl_interrupt(w->thread);
        cv_.wait_for(g, std::chrono::milliseconds(2), [w] { return w->done; });
      }
      if (!w->done) {
        // A thread that ignores the signal: leave it rather than hang the
        // event loop; it, its Wait and its descriptor are leaked.
        pthread_detach(w->thread);
        w->joinable = false;
        w->fd = -1;
        w->rc = JDLS_OSL_CANCELLED;
        Unrefed();
        return false;
      }
    }
    Finish(w);
    return true;
  }

  void Refed(Napi::Env env) {
    if (active_++ == 0) tsfn_.Ref(env);
  }
  void Unrefed() {
    if (active_ > 0 && --active_ == 0 && open_) tsfn_.Unref(env_);
  }

  // start(ofd, start, len, type, id) -> 0 | -errno
  Napi::Value Start(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    int64_t start, len;
    OSL_REQUIRE(info.Length() >= 5 && info[0].IsObject() && I64Arg(env, info[1], &start) &&
                    I64Arg(env, info[2], &len) && info[3].IsNumber() && info[4].IsNumber(),
                "start(ofd, start, len, type, id)");
    if (!open_) return Napi::Number::New(env, -EBADF);
    if (signal_ < 0) return Napi::Number::New(env, signal_);
    Ofd *o = Ofd::Unwrap(info[0].As<Napi::Object>());
    OSL_REQUIRE(o != nullptr, "start: not an Ofd");
    if (o->fd() < 0) return Napi::Number::New(env, -EBADF);
    // A dup: the thread may outlive a close() of the Ofd by a moment; the
    // description (and so the owner of the lock) is the same.
    int fd = fcntl(o->fd(), F_DUPFD_CLOEXEC, 3);
    if (fd < 0) return Napi::Number::New(env, -errno);
    auto w = std::make_unique<Wait>();
    w->id = info[4].As<Napi::Number>().DoubleValue();
    w->fd = fd;
    w->start = start;
    w->len = len;
    w->type = info[3].As<Napi::Number>().Int32Value();
    Wait *raw = w.get();
    {
      std::lock_guard<std::mutex> g(mu_);
      if (waits_.count(w->id)) {
        jdls_osl_close(fd);
        Napi::TypeError::New(env, "start: id in use").ThrowAsJavaScriptException();
        return env.Undefined();
      }
      waits_[w->id] = std::move(w);
    }
    // The new thread inherits this thread's mask: block everything around
    // its creation, so no signal meant for the process ever lands on it.
    sigset_t all, only, old;
    jdls_osl_thread_masks(&all, &only);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    raw->owner = this;
    int err = pthread_create(&raw->thread, nullptr, &Waits::Main, raw);
    if (err == 0) raw->joinable = true;
    pthread_sigmask(SIG_SETMASK, &old, nullptr);
    if (err) {
      std::lock_guard<std::mutex> g(mu_);
      jdls_osl_close(raw->fd);
      waits_.erase(raw->id);
      return Napi::Number::New(env, -err);
    }
    Refed(env);
    return Napi::Number::New(env, 0);
  }

  // cancel(id) -> 3 (cancelled: nothing taken) | 0 (granted meanwhile: the
  // caller holds it) | -errno (the wait had failed) | 4 (no such wait)
  Napi::Value Cancel(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    OSL_REQUIRE(info.Length() >= 1 && info[0].IsNumber(), "cancel(id)");
    double id = info[0].As<Napi::Number>().DoubleValue();
    std::unique_ptr<Wait> w;
    {
      std::lock_guard<std::mutex> g(mu_);
      auto it = waits_.find(id);
      if (it == waits_.end()) return Napi::Number::New(env, 4);
      w = std::move(it->second);
      waits_.erase(it);
    }
    bool joined = Stop(w.get());
    int rc = w->rc;
    if (!joined) w.release();  // see Stop
    return Napi::Number::New(env, rc);
  }

  Napi::Value Pending(const Napi::CallbackInfo &info) {
    std::lock_guard<std::mutex> g(mu_);
    return Napi::Number::New(info.Env(), static_cast<double>(waits_.size()));
  }

  Napi::Value Close(const Napi::CallbackInfo &info) {
    Shutdown();
    return info.Env().Undefined();
  }

  Napi::ThreadSafeFunction tsfn_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<double, std::unique_ptr<Wait>> waits_;
  int signal_ = -1;
  int active_ = 0;  // JS thread only: waits started and not yet finished
  bool open_ = false;
};

// ---- module functions ------------------------------------------------------

// open(path, create) -> fd | -errno
Napi::Value Open(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  OSL_REQUIRE(info.Length() >= 2 && info[0].IsString() && info[1].IsBoolean(), "open(path, create)");
  std::string p = info[0].As<Napi::String>();
  return Napi::Number::New(env, jdls_osl_open(p.c_str(), info[1].As<Napi::Boolean>() ? 1 : 0));
}

// openLock(path, create) -> fd | -errno (a lock file: checked, see jdls_osl_open_lock)
Napi::Value OpenLock(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  OSL_REQUIRE(info.Length() >= 2 && info[0].IsString() && info[1].IsBoolean(), "openLock(path, create)");
  std::string p = info[0].As<Napi::String>();
  return Napi::Number::New(env, jdls_osl_open_lock(p.c_str(), info[1].As<Napi::Boolean>() ? 1 : 0));
}

// checkDir(dir) -> 0 | -errno (jdls_osl_check_dir)
Napi::Value CheckDir(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  OSL_REQUIRE(info.Length() >= 1 && info[0].IsString(), "checkDir(dir)");
  std::string d = info[0].As<Napi::String>();
  return Napi::Number::New(env, jdls_osl_check_dir(d.c_str()));
}

// ensureDir(dir) -> 0 | -errno
Napi::Value EnsureDir(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  OSL_REQUIRE(info.Length() >= 1 && info[0].IsString(), "ensureDir(dir)");
  std::string d = info[0].As<Napi::String>();
  return Napi::Number::New(env, jdls_osl_ensure_dir(d.c_str()));
}

// lockPath(dir, inode, dev) -> string | -errno
Napi::Value LockPath(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  int64_t inode, dev;
  OSL_REQUIRE(info.Length() >= 3 && info[0].IsString(), "lockPath(dir, inode, dev)");
  bool lossless = true;
  uint64_t uinode = 0;
  if (info[1].IsBigInt()) uinode = info[1].As<Napi::BigInt>().Uint64Value(&lossless);
  else OSL_REQUIRE(I64Arg(env, info[1], &inode) && inode >= 0 && (uinode = static_cast<uint64_t>(inode), true), "lockPath: inode");
  OSL_REQUIRE(lossless && I64Arg(env, info[2], &dev), "lockPath(dir, inode, dev)");
  std::string d = info[0].As<Napi::String>();
  char buf[JDLS_OSL_PATH_MAX];
  int n = jdls_osl_lock_path(buf, sizeof buf, d.c_str(), uinode, dev);
  if (n < 0) return Napi::Number::New(env, n);
  return Napi::String::New(env, buf, static_cast<size_t>(n));
}

// keyOffset(key: Buffer | string) -> bigint
napi_value KeyOffset(napi_env env, napi_callback_info cbinfo) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, cbinfo, &argc, argv, nullptr, nullptr);
  std::string tmp;
  const uint8_t *data = nullptr;
  size_t len = 0;
  if (argc < 1 || !KeyBytes(env, argv[0], &tmp, &data, &len)) {
    napi_throw_type_error(env, nullptr, "keyOffset(key)");
    return nullptr;
  }
  napi_value out;
  napi_create_bigint_uint64(env, jdls_osl_key_offset(0, 0, data, len), &out);
  return out;
}

Napi::Value Signal(const Napi::CallbackInfo &info) {
  return Napi::Number::New(info.Env(), jdls_osl_signal_init());
}

}  // namespace

// Called once from addon.cc's Init: everything lands in exports.oslock.
void jdls_oslock_init(Napi::Env env, Napi::Object exports) {
  auto o = Napi::Object::New(env);
  o.Set("Ofd", Ofd::Init(env));
  o.Set("Waits", Waits::Init(env));
  o.Set("open", Napi::Function::New(env, Open));
  o.Set("ensureDir", Napi::Function::New(env, EnsureDir));
  o.Set("openLock", Napi::Function::New(env, OpenLock));
  o.Set("checkDir", Napi::Function::New(env, CheckDir));
  o.Set("lockPath", Napi::Function::New(env, LockPath));
  napi_value fn;
  napi_create_function(env, "keyOffset", NAPI_AUTO_LENGTH, KeyOffset, nullptr, &fn);
  o.Set("keyOffset", Napi::Value(env, fn));
  o.Set("signal", Napi::Function::New(env, Signal));
  auto c = Napi::Object::New(env);
  c.Set("READ", JDLS_OSL_READ);
  c.Set("WRITE", JDLS_OSL_WRITE);
  c.Set("UNLOCK", JDLS_OSL_UNLOCK);
  c.Set("OK", JDLS_OSL_OK);
  c.Set("CONFLICT", JDLS_OSL_CONFLICT);
  c.Set("CANCELLED", JDLS_OSL_CANCELLED);
  c.Set("KEY_OFFSET_BITS", JDLS_OSL_KEY_OFFSET_BITS);
  c.Set("DEFAULT_DIR", JDLS_OSL_DEFAULT_DIR);
  c.Set("DIR_MODE", JDLS_OSL_DIR_MODE);
  c.Set("FILE_MODE", JDLS_OSL_FILE_MODE);
  o.Set("constants", c);
  exports.Set("oslock", o);
}
