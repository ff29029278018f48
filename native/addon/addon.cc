// addon.cc - the Node face of the shared-memory lock table.
//
// Owns: argument unpacking, the Table object, and asynchronous waits. Does
// not own: option parsing, defaults, error wording, display - those are in
// src/ (src/native.ts is the only module that loads this addon).
//
// Asynchronous waits (the trap this file exists to dodge): a blocking wait
// must neither block the event loop nor park on the libuv pool, where four
// pending waits would starve fs and dns. Each Table that has had a wait owns
// ONE waiter thread. The process claims a doorbell slot in the segment; a
// grant for any of its queued requests rings that doorbell (a futex word),
// so the thread sleeps on a single futex for all of them and wakes at once.
// It does NOT report grants: it only tells the JS thread "look" through a
// ThreadSafeFunction, and the JS thread collects what is settled
// (TakeGranted). One consumer by construction: when a release on the JS
// thread hands a lock to another wait of this process, that wait is settled
// inside the release, always, never by a waiter-thread scan that happened to
// take the list's mutex first (a test failed on half its runs that way, and
// the lock server's promise - the next holder's GRANTED is written before
// the releaser's RELEASED - held only by luck). It also wakes every
// JDLS_LIVENESS_TICK_MS to reap dead holders (a process killed with -9 never
// releases). The doorbell is read BEFORE the pending list is scanned, so a
// grant that lands between the scan and the sleep makes the sleep return at
// once instead of being lost.
#include <napi.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <climits>
#include <cstring>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include <arpa/inet.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

extern "C" {
#include "../common/jdls_table.h"
}
#include "env_cleanup.h"
#include "oslock.h"

void JdlsProtoInit(Napi::Env env, Napi::Object exports);  // proto.cc: the `proto` export
void JdlsFdpassInit(Napi::Env env, Napi::Object exports);  // fdpass.cc: the `fdpass` export
void JdlsTokensInit(Napi::Env env, Napi::Object exports);  // tokens.cc: the `tokenCounter` export

namespace {

// ---- argument helpers: one family, one message shape ---------------------

#define REQUIRE(cond, msg)                                         \
  do {                                                             \
    if (!(cond)) {                                                 \
      Napi::TypeError::New(env, msg).ThrowAsJavaScriptException(); \
      return env.Undefined();                                      \
    }                                                              \
  } while (0)

inline bool RawBuffer(napi_env env, napi_value v, void **data, size_t *len) {
  return napi_get_buffer_info(env, v, data, len) == napi_ok;
}

struct FileId {
  uint64_t inode;
  int64_t dev;
};

// Owners and file identities are packed once into native memory and handed
// to JS as externals: reading one back is a single napi_get_value_external.
// (As Buffers they cost napi_get_buffer_info each, whose ArrayBufferView
// ->Buffer() showed up at 10 % of a lock+unlock pair under perf.) The magic
// word stops an owner being taken for a file or any other external.
template <typename T> struct Handle;
template <> struct Handle<jdls_owner> { static constexpr uint32_t kMagic = 0x4f574e52; };  // "OWNR"
template <> struct Handle<FileId> { static constexpr uint32_t kMagic = 0x46494c45; };      // "FILE"

template <typename T>
struct Boxed {
  uint32_t magic;
  T value;
};

template <typename T>
napi_value MakeHandle(napi_env env, const T &value) {
  auto *b = new Boxed<T>{Handle<T>::kMagic, value};
  napi_value out;
  napi_create_external(env, b, [](napi_env, void *data, void *) { delete static_cast<Boxed<T> *>(data); }, nullptr, &out);
  return out;
}

template <typename T>
bool RawHandle(napi_env env, napi_value v, const T **out) {
  void *p = nullptr;
  if (napi_get_value_external(env, v, &p) != napi_ok || !p) return false;
  auto *b = static_cast<const Boxed<T> *>(p);
  if (b->magic != Handle<T>::kMagic) return false;
  *out = &b->value;
  return true;
}

template <typename T>
bool AsStruct(const Napi::Value &v, const T **out) {
  return RawHandle(v.Env(), v, out);
}

// A key arrives as a Buffer (raw bytes) or a string (UTF-8). The buffer is
// larger than JDLS_MAX_KEY so that an over-long key is seen as such rather
// than silently truncated.
struct KeyArg {
  const uint8_t *data = nullptr;
  size_t len = 0;
  char buf[JDLS_MAX_KEY * 2 + 2];
  bool Read(napi_env env, napi_value v) {
    void *d;
    if (RawBuffer(env, v, &d, &len)) {
      data = static_cast<const uint8_t *>(d);
      return true;
    }
    size_t n = 0;
    if (napi_get_value_string_utf8(env, v, buf, sizeof buf, &n) != napi_ok) return false;
    data = reinterpret_cast<const uint8_t *>(buf);
    len = n;
    return true;
  }
};

uint64_t ToU64(const Napi::Value &v, bool *ok) {
  if (v.IsBigInt()) {
    bool lossless = true;
    uint64_t r = v.As<Napi::BigInt>().Uint64Value(&lossless);
    *ok = lossless;
    return r;
  }
  if (v.IsNumber()) {
    double d = v.As<Napi::Number>().DoubleValue();
    *ok = d >= 0 && d < 18446744073709551616.0;
    return static_cast<uint64_t>(d);
  }
  *ok = false;
  return 0;
}

int64_t ToI64(const Napi::Value &v, bool *ok) {
  if (v.IsBigInt()) {
    bool lossless = true;
    int64_t r = v.As<Napi::BigInt>().Int64Value(&lossless);
    *ok = lossless;
    return r;
  }
  if (v.IsNumber()) {
    *ok = true;
    return v.As<Napi::Number>().Int64Value();
  }
  *ok = false;
  return 0;
}

std::string IpText(const uint8_t *ip, uint8_t len) {
  char out[INET6_ADDRSTRLEN] = "0.0.0.0";
  inet_ntop(len == 16 ? AF_INET6 : AF_INET, ip, out, sizeof out);
  return out;
}

Napi::Object HolderObject(Napi::Env env, const jdls_holder &h) {
  auto o = Napi::Object::New(env);
  o.Set("pid", h.pid);
  o.Set("ownerPid", h.owner_pid);
  o.Set("ownerTid", h.owner_tid);
  o.Set("port", h.port);
  o.Set("mode", static_cast<uint32_t>(h.mode));
  o.Set("ip", IpText(h.ip, h.ip_len));
  return o;
}

// ---- the waiter thread ---------------------------------------------------

struct Pending {
  jdls_ticket ticket;
  double id;
};

struct Done {
  double id;
  int rc;
  uint64_t token;  // the grant's fencing token (rc OK)
};

class Waiter {
 public:
  Waiter(Napi::Env env, jdls_table *t, Napi::Function onLook) : table_(t) {
    tsfn_ = Napi::ThreadSafeFunction::New(env, onLook, "jdls-waiter", 0, 1);
    tsfn_.Unref(env);
    thread_ = std::thread([this] { Run(); });
  }

  void Add(const jdls_ticket &tk, double id) {
    bool was_empty;
    {
      std::lock_guard<std::mutex> g(mu_);
      was_empty = pending_.empty();
      pending_.push_back({tk, id});
    }
    // Wake the thread only when it must look: it may sleep without a
    // timeout (nothing was pending), or the request was granted before it
    // was on the list (that grant's ring found it missing). Otherwise the
    // grant will ring. Ringing on every queued request woke this thread
    // once per hand-off on a hot key (a lock server re-queueing clients).
    if (was_empty || jdls_wait_poll(table_, &tk, JDLS_REAP_NONE) != JDLS_QUEUED) Ring();
  }

  // Forget a pending wait (cancel). True if it was still pending.
  bool Remove(const jdls_ticket &tk) {
    std::lock_guard<std::mutex> g(mu_);
    for (auto it = pending_.begin(); it != pending_.end(); ++it) {
      if (it->ticket.group == tk.group && it->ticket.slot == tk.slot && it->ticket.seq == tk.seq) {
        pending_.erase(it);
        return true;
      }
    }
    return false;
  }

  // Settled pending waits, taken off the list: the ONE place where a wait
  // leaves it settled (the JS thread calls it right after a release of its
  // own, and when the waiter thread says "look"). A lock-free look at each
  // ticket's state word; no reaping.
  std::vector<Done> TakeGranted() {
    std::vector<Done> out;
    // Cleared before the scan: a grant the waiter thread sees from now on
    // posts another look, and one it saw before is found by this scan.
    posted_.store(false);
    std::lock_guard<std::mutex> g(mu_);
    for (auto it = pending_.begin(); it != pending_.end();) {
      int rc = jdls_wait_poll(table_, &it->ticket, JDLS_REAP_NONE);
      if (rc == JDLS_QUEUED) { ++it; continue; }
      // A refused wait's entry is freed by collecting the verdict.
      if (rc == JDLS_DEADLOCK) rc = jdls_wait_cancel(table_, &it->ticket);
      out.push_back({it->id, rc, rc == JDLS_OK ? jdls_last_token() : 0});
      it = pending_.erase(it);
    }
    return out;
  }

  // After Stop(): withdraw the requests that are still queued.
  void CancelPending() {
    std::lock_guard<std::mutex> g(mu_);
    for (const Pending &p : pending_) jdls_wait_cancel(table_, &p.ticket);
    pending_.clear();
  }

  void Ref(Napi::Env env) { tsfn_.Ref(env); }
  void Unref(Napi::Env env) { tsfn_.Unref(env); }

  void Stop() {
    if (!thread_.joinable()) return;
    stop_.store(true);
    Ring();
    thread_.join();
  }

  ~Waiter() { Stop(); }

 private:
  uint32_t *Bell() {
    jdls_proc_slot *slots = reinterpret_cast<jdls_proc_slot *>(
        reinterpret_cast<uint8_t *>(table_->hdr) + sizeof(jdls_header));  // not the header's own field (jdls_table)
    return &slots[table_->slot].bell;
  }

  void Ring() {
    __atomic_fetch_add(Bell(), 1, __ATOMIC_ACQ_REL);
    syscall(SYS_futex, Bell(), FUTEX_WAKE, INT_MAX, nullptr, nullptr, 0);
  }

  void Run() {
    auto next_tick = std::chrono::steady_clock::now();
    unsigned ticks = 0;
    while (!stop_.load()) {
      uint32_t seen = __atomic_load_n(Bell(), __ATOMIC_ACQUIRE);  // before the scan
      auto now = std::chrono::steady_clock::now();
      bool tick = now >= next_tick;
      if (tick) next_tick = now + std::chrono::milliseconds(JDLS_LIVENESS_TICK_MS);
      int reap = !tick ? JDLS_REAP_NONE : ++ticks % JDLS_THOROUGH_EVERY == 0 ? JDLS_REAP_THOROUGH : JDLS_REAP_QUICK;
      bool settled = false;
      bool any = false;
      {
        std::lock_guard<std::mutex> g(mu_);
        any = !pending_.empty();
        // Reap on a tick for ONE pending request per group, not for each: a
        // hot key with 100 queued requests of this process made 100 reaps
        // (group mutex + kill(), /proc reads every 10th tick) per tick, all
        // on the hot group, and the releases waited behind them (hand-off
        // p99 in milliseconds). The list is rotated after each tick so the
        // requests of a group take turns (another key of the group with a
        // dead holder is reaped a few ticks later, or at once by any
        // conflicting request: jdls_lock_begin reaps too).
        reaped_.clear();
        for (auto it = pending_.begin(); it != pending_.end();) {
          int r = reap;
          if (r != JDLS_REAP_NONE) {
            bool seen_group = false;
            for (uint32_t gr : reaped_) seen_group = seen_group || gr == it->ticket.group;
            if (seen_group) r = JDLS_REAP_NONE;
            else reaped_.push_back(it->ticket.group);
          }
          // Settled waits stay on the list for the JS thread to take.
          if (jdls_wait_poll(table_, &it->ticket, r) != JDLS_QUEUED) settled = true;
          ++it;
        }
        if (tick && pending_.size() > 1) std::rotate(pending_.begin(), pending_.begin() + 1, pending_.end());
      }
      // One "look" in flight at a time: while one is posted and not yet
      // taken, further settled waits are found by the scan it triggers.
      if (settled && !posted_.exchange(true)) {
        tsfn_.BlockingCall([](Napi::Env env, Napi::Function fn) {
          if (env == nullptr || fn == nullptr) return;
          // Raw call: during env teardown a failing Napi::Function::Call
          // would throw from a place that cannot, and abort the process.
          napi_value ignored;
          napi_call_function(env, env.Undefined(), fn, 0, nullptr, &ignored);
        });
      }
      if (stop_.load()) break;
      // With nothing pending, sleep until rung; otherwise until the next tick.
      struct timespec ts;
      struct timespec *tp = nullptr;
      if (any) {
        auto left = std::chrono::duration_cast<std::chrono::nanoseconds>(next_tick - std::chrono::steady_clock::now()).count();
        if (left < 0) left = 0;
        ts.tv_sec = left / 1000000000;
        ts.tv_nsec = left % 1000000000;
        tp = &ts;
      }
      syscall(SYS_futex, Bell(), FUTEX_WAIT, seen, tp, nullptr, 0);
    }
    tsfn_.Release();
  }

  jdls_table *table_;
  Napi::ThreadSafeFunction tsfn_;
  std::thread thread_;
  std::mutex mu_;
  std::vector<Pending> pending_;
  std::vector<uint32_t> reaped_;  // groups reaped in this tick (waiter thread only)
  std::atomic<bool> stop_{false};
  std::atomic<bool> posted_{false};  // a "look" is on its way to the JS thread
};

// While alive, releases on this thread do not ring this table's own
// doorbell: the JS side collects its own grants right after (takeGranted).
// Only with a waiter: without one, nothing of ours is queued.
struct QuietBell {
  QuietBell(const jdls_table *t, bool on) {
    if (on && t->slot >= 0) jdls_quiet_doorbell(t->slot);
  }
  ~QuietBell() { jdls_quiet_doorbell(-1); }
};

// ---- the Table object ----------------------------------------------------

class Table : public Napi::ObjectWrap<Table>, public EnvCleanup<Table> {
 public:
  static Napi::Function Init(Napi::Env env) {
    Napi::Function ctor = DefineClass(env, "Table",
                       {
                           InstanceMethod("waitAsync", &Table::WaitAsync),
                           InstanceMethod("cancel", &Table::Cancel),
                           InstanceMethod("takeGranted", &Table::TakeGranted),
                           InstanceMethod("ref", &Table::RefWaits),
                           InstanceMethod("unref", &Table::UnrefWaits),
                           InstanceMethod("lockBlocking", &Table::LockBlocking),
                           InstanceMethod("unlockAll", &Table::UnlockAll),
                           InstanceMethod("status", &Table::Status),
                           InstanceMethod("conflict", &Table::Conflict),
                           InstanceMethod("tidy", &Table::Tidy),
                           InstanceMethod("list", &Table::List),
                           InstanceMethod("check", &Table::Check),
                           InstanceMethod("usage", &Table::Usage),
                           InstanceMethod("countLockRetry", &Table::CountLockRetry),
                           InstanceMethod("claimMonitor", &Table::ClaimMonitor),
                           InstanceMethod("header", &Table::Header),
                           InstanceMethod("setTokenSink", &Table::SetTokenSink),
                           InstanceMethod("tokenOf", &Table::TokenOf),
                           InstanceMethod("tokenFloor", &Table::TokenFloor),
                           InstanceMethod("tokenPeek", &Table::TokenPeek),
                           InstanceMethod("setDeadlockPolicy", &Table::SetDeadlockPolicy),
                           InstanceMethod("readReport", &Table::ReadReport),
                           InstanceMethod("setHeader", &Table::SetHeader),
                           InstanceMethod("enterService", &Table::EnterService),
                           InstanceMethod("retire", &Table::Retire),
                           InstanceMethod("debugHoldGroup", &Table::DebugHoldGroup),
                           InstanceMethod("close", &Table::Close),
                       });
    // The hot pair is plain N-API, not node-addon-api's InstanceMethod: the
    // wrapper's CallbackInfo, Unwrap and exception plumbing cost more than
    // the lock itself (bench/pair.ts: TS pair 0.32x -> see docs/benchmarks.md).
    Napi::Object proto = ctor.Get("prototype").As<Napi::Object>();
    napi_value fn;
    napi_create_function(env, "tryLock", NAPI_AUTO_LENGTH, FastTryLock, nullptr, &fn);
    proto.Set("tryLock", Napi::Value(env, fn));
    napi_create_function(env, "unlock", NAPI_AUTO_LENGTH, FastUnlock, nullptr, &fn);
    proto.Set("unlock", Napi::Value(env, fn));
    return ctor;
  }

  // new Table(path, create, nlocks, perGroup, flags, releaseDir): the
  // installation directory says who may own the table (jdls_installation_trust).
  Table(const Napi::CallbackInfo &info) : Napi::ObjectWrap<Table>(info) {
    Napi::Env env = info.Env();
    std::memset(&t_, 0, sizeof t_);
    t_.fd = -1;
    if (info.Length() < 6 || !info[0].IsString() || !info[1].IsBoolean() || !info[2].IsNumber() ||
        !info[3].IsNumber() || !info[4].IsNumber() || !info[5].IsString()) {
      Napi::TypeError::New(env, "Table(path, create, nlocks, perGroup, flags, releaseDir)").ThrowAsJavaScriptException();
      return;
    }
    std::string path = info[0].As<Napi::String>();
    std::string dir = info[5].As<Napi::String>();
    jdls_trust trust;
    int existed = 0, rc;
    if (jdls_installation_trust(dir.c_str(), &trust) != 0) {
      rc = JDLS_E_SYS;
      jdls_set_detail("cannot stat the installation directory %s: %s", dir.c_str(), strerror(errno));
    } else if (info[1].As<Napi::Boolean>()) {
      rc = jdls_table_create(path.c_str(), &trust, info[2].As<Napi::Number>().Uint32Value(),
                             info[3].As<Napi::Number>().Uint32Value(),
                             info[4].As<Napi::Number>().Uint32Value(), &t_, &existed);
    } else {
      rc = jdls_table_open(path.c_str(), &trust, &t_);
    }
    int err = errno;
    if (rc != JDLS_OK) {
      auto e = Napi::Error::New(env, jdls_strerror(rc));
      e.Set("rc", Napi::Number::New(env, rc));
      e.Set("detail", Napi::String::New(env, jdls_detail()));
      e.Set("errno", Napi::Number::New(env, rc == JDLS_E_SYS ? err : 0));
      e.Set("syscall", Napi::String::New(env, rc == JDLS_E_SYS ? strerror(err) : ""));
      e.ThrowAsJavaScriptException();
      return;
    }
    existed_ = existed != 0;
    info.This().As<Napi::Object>().Set("existed", Napi::Boolean::New(env, existed_));
    // Per table and per env (env_cleanup.h): a process-wide list closed the
    // main thread's tables too when a worker exited.
    HookEnvCleanup(env);
  }

  ~Table() override { Shutdown(); }

  // Also the env teardown's (env_cleanup.h): stop and join this table's
  // waiter thread before the env goes away, or it calls into a dead TSFN.
  void Shutdown() {
    UnhookEnvCleanup();
    if (waiter_) {
      waiter_->Stop();
      // Requests still queued have nobody left to hand a grant to: withdraw
      // them, or the key would go to a dead owner (LockTable.close() does
      // this from JS, but an env teardown never runs JS).
      waiter_->CancelPending();
      delete waiter_;
      waiter_ = nullptr;
    }
    if (t_.hdr) jdls_table_close(&t_);
  }


 private:
  bool Open(Napi::Env env) {
    if (t_.hdr) return true;
    Napi::Error::New(env, "lock table is closed").ThrowAsJavaScriptException();
    return false;
  }

  // The table behind `this` of a plain N-API method, or null (thrown).
  static Table *Self(napi_env env, napi_value self) {
    void *p = nullptr;
    if (napi_unwrap(env, self, &p) != napi_ok || !p) {
      napi_throw_type_error(env, nullptr, "not a lock table");
      return nullptr;
    }
    Table *t = static_cast<Table *>(p);
    if (!t->t_.hdr) {
      napi_throw_error(env, nullptr, "lock table is closed");
      return nullptr;
    }
    return t;
  }

  // The arguments the hot pair shares: this, owner, file, key (+ extras).
  template <size_t N>
  struct HotArgs {
    napi_value argv[N];
    Table *t = nullptr;
    const jdls_owner *o = nullptr;
    const FileId *fid = nullptr;
    KeyArg k;
    // False with a JS exception pending (bad `this`, closed, or bad args).
    bool Read(napi_env env, napi_callback_info cbinfo, const char *usage) {
      size_t argc = N;
      napi_value self;
      napi_get_cb_info(env, cbinfo, &argc, argv, &self, nullptr);
      t = Self(env, self);
      if (!t) return false;
      if (argc < N || !RawHandle(env, argv[0], &o) || !RawHandle(env, argv[1], &fid) || !k.Read(env, argv[2])) {
        napi_throw_type_error(env, nullptr, usage);
        return false;
      }
      return true;
    }
  };

  // tryLock(owner, file, key, mode, flags) -> rc | {rc, holder} | {rc, group, slot, seq}
  // flags: JDLS_REQ_* (a boolean is NOWAIT or not). On rc OK the grant's
  // token is in the token sink (setTokenSink), if one was given: no BigInt
  // made per call unless JS reads it.
  static napi_value FastTryLock(napi_env env, napi_callback_info cbinfo) {
    static const char usage[] = "tryLock(owner, file, key, mode, flags)";
    HotArgs<5> a;
    if (!a.Read(env, cbinfo, usage)) return nullptr;
    Table *t = a.t;
    const jdls_owner *o = a.o;
    const FileId *fid = a.fid;
    KeyArg &k = a.k;
    int32_t mode = 0;
    bool nowait_b = false;
    uint32_t flags = 0;
    if (napi_get_value_int32(env, a.argv[3], &mode) != napi_ok ||
        (napi_get_value_uint32(env, a.argv[4], &flags) != napi_ok &&
         napi_get_value_bool(env, a.argv[4], &nowait_b) != napi_ok)) {
      napi_throw_type_error(env, nullptr, usage);
      return nullptr;
    }
    if (nowait_b) flags = JDLS_REQ_NOWAIT;
    bool nowait = (flags & JDLS_REQ_NOWAIT) != 0;
    jdls_request r{fid->inode, fid->dev, k.data, static_cast<uint32_t>(k.len), mode, flags};
    napi_value out;
    int doorbell = -1;
    if (!nowait) {
      doorbell = jdls_slot_claim(&t->t_);
      if (doorbell < 0) {
        napi_create_int32(env, doorbell, &out);
        return out;
      }
    }
    jdls_ticket tk;
    jdls_holder h;
    std::memset(&h, 0, sizeof h);
    int rc = jdls_lock_begin(&t->t_, o, &r, doorbell, &tk, &h);
    if (rc == JDLS_OK && t->token_sink_) *t->token_sink_ = jdls_last_token();
    if (rc == JDLS_CONFLICT || rc == JDLS_QUEUED) return SlowResult(Napi::Env(env), rc, tk, h);
    napi_create_int32(env, rc, &out);
    return out;
  }

  // unlock(owner, file, key) -> rc
  static napi_value FastUnlock(napi_env env, napi_callback_info cbinfo) {
    HotArgs<3> a;
    if (!a.Read(env, cbinfo, "unlock(owner, file, key)")) return nullptr;
    napi_value out;
    QuietBell quiet(&a.t->t_, a.t->waiter_ != nullptr);
    napi_create_int32(env, jdls_unlock(&a.t->t_, a.o, a.fid->inode, a.fid->dev, a.k.data,
                                       static_cast<uint32_t>(a.k.len)),
                      &out);
    return out;
  }

  static napi_value SlowResult(Napi::Env env, int rc, const jdls_ticket &tk, const jdls_holder &h) {
    if (rc == JDLS_CONFLICT) {
      auto res = Napi::Object::New(env);
      res.Set("rc", rc);
      res.Set("holder", HolderObject(env, h));
      return res;
    }
    auto res = Napi::Object::New(env);  // JDLS_QUEUED
    res.Set("rc", rc);
    res.Set("group", tk.group);
    res.Set("slot", tk.slot);
    res.Set("seq", static_cast<double>(tk.seq));
    if (h.pid) res.Set("holder", HolderObject(env, h));
    return res;
  }

  static bool Ticket(const Napi::CallbackInfo &info, jdls_ticket *tk) {
    if (info.Length() < 3 || !info[0].IsNumber() || !info[1].IsNumber() || !info[2].IsNumber()) return false;
    tk->group = info[0].As<Napi::Number>().Uint32Value();
    tk->slot = info[1].As<Napi::Number>().Uint32Value();
    tk->seq = static_cast<uint64_t>(info[2].As<Napi::Number>().DoubleValue());
    return true;
  }

  // waitAsync(group, slot, seq, id, onLook): onLook() is called (no
  // arguments) when some wait of this table may be settled: call takeGranted.
  Napi::Value WaitAsync(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    if (!Open(env)) return env.Undefined();
    jdls_ticket tk;
    REQUIRE(Ticket(info, &tk) && info[3].IsNumber() && info[4].IsFunction(),
            "waitAsync(group, slot, seq, id, onLook)");
    REQUIRE(t_.slot >= 0, "waitAsync before a queued request");
    if (!waiter_) waiter_ = new Waiter(env, &t_, info[4].As<Napi::Function>());
    waiter_->Add(tk, info[3].As<Napi::Number>().DoubleValue());
    return env.Undefined();
  }

  // cancel(group, slot, seq) -> rc (TIMEOUT: withdrawn; OK: granted meanwhile)
  Napi::Value Cancel(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    if (!Open(env)) return env.Undefined();
    jdls_ticket tk;
    REQUIRE(Ticket(info, &tk), "cancel(group, slot, seq)");
    if (waiter_) waiter_->Remove(tk);
    QuietBell quiet(&t_, waiter_ != nullptr);
    int rc = jdls_wait_cancel(&t_, &tk);
    if (rc == JDLS_OK && token_sink_) *token_sink_ = jdls_last_token();  // granted in the race
    return Napi::Number::New(env, rc);
  }

  // takeGranted() -> [id, rc, token, id, rc, token, ...] | undefined: this process's waits
  // that are settled now - the only way a settled wait reaches JS. Called on
  // the main thread right after a release (when the release handed the lock
  // to a wait of this same process, a lock server's other client, the grant
  // is answered in this turn of the event loop, with no hop through the
  // waiter thread: docs/benchmarks.md, hand-off), and when the waiter thread
  // says "look" (a grant from another process, or a reaped holder).
  Napi::Value TakeGranted(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    if (!waiter_) return env.Undefined();
    std::vector<Done> done = waiter_->TakeGranted();
    if (done.empty()) return env.Undefined();
    auto out = Napi::Array::New(env, done.size() * 3);
    for (size_t i = 0; i < done.size(); i++) {
      out.Set(static_cast<uint32_t>(3 * i), Napi::Number::New(env, done[i].id));
      out.Set(static_cast<uint32_t>(3 * i + 1), Napi::Number::New(env, done[i].rc));
      out.Set(static_cast<uint32_t>(3 * i + 2), Napi::BigInt::New(env, done[i].token));
    }
    return out;
  }

  Napi::Value RefWaits(const Napi::CallbackInfo &info) {
    if (waiter_) waiter_->Ref(info.Env());
    return info.Env().Undefined();
  }
  Napi::Value UnrefWaits(const Napi::CallbackInfo &info) {
    if (waiter_) waiter_->Unref(info.Env());
    return info.Env().Undefined();
  }

  // lockBlocking(owner, file, key, mode, timeoutMs): blocks the calling
  // thread - for worker threads and tools only, never the event loop.
  Napi::Value LockBlocking(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    if (!Open(env)) return env.Undefined();
    const jdls_owner *o;
    const FileId *f;
    KeyArg k;
    REQUIRE(info.Length() >= 5 && AsStruct(info[0], &o) && AsStruct(info[1], &f) &&
                k.Read(env, info[2]) && info[3].IsNumber() && info[4].IsNumber() &&
                (info.Length() < 6 || info[5].IsNumber()),
            "lockBlocking(owner, file, key, mode, timeoutMs, flags?)");
    uint32_t flags = info.Length() >= 6 ? info[5].As<Napi::Number>().Uint32Value() : 0u;
    jdls_request r{f->inode, f->dev, k.data, static_cast<uint32_t>(k.len),
                   static_cast<int>(info[3].As<Napi::Number>().Int32Value()), flags};
    jdls_holder h;
    int rc = jdls_lock(&t_, o, &r, info[4].As<Napi::Number>().Int32Value(), &h);
    if (rc == JDLS_OK && token_sink_) *token_sink_ = jdls_last_token();
    return Napi::Number::New(env, rc);
  }

  // unlockAll(owner, file | null) -> count | rc
  Napi::Value UnlockAll(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    if (!Open(env)) return env.Undefined();
    const jdls_owner *o;
    const FileId *f = nullptr;
    REQUIRE(info.Length() >= 2 && AsStruct(info[0], &o) && (info[1].IsNull() || AsStruct(info[1], &f)),
            "unlockAll(owner, file|null)");
    QuietBell quiet(&t_, waiter_ != nullptr);
    return Napi::Number::New(env, jdls_unlock_all(&t_, o, f != nullptr, f ? f->inode : 0, f ? f->dev : 0));
  }

  // status(owner, file, key) -> {code, holder?}
  Napi::Value Status(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    if (!Open(env)) return env.Undefined();
    const jdls_owner *o;
    const FileId *f;
    KeyArg k;
    REQUIRE(info.Length() >= 3 && AsStruct(info[0], &o) && AsStruct(info[1], &f) && k.Read(env, info[2]),
            "status(owner, file, key)");
    jdls_holder h;
    std::memset(&h, 0, sizeof h);
    int code = jdls_status(&t_, o, f->inode, f->dev, k.data, static_cast<uint32_t>(k.len), &h);
    auto res = Napi::Object::New(env);
    res.Set("code", code);
    if (code < 0 && code >= -JDLS_RL_FILELOCK) res.Set("holder", HolderObject(env, h));
    return res;
  }

  // conflict(owner, file, key, mode) -> holder | null | rc (< 0): F_GETLK,
  // another owner's lock that blocks `mode` (jdls_conflict).
  Napi::Value Conflict(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    if (!Open(env)) return env.Undefined();
    const jdls_owner *o;
    const FileId *f;
    KeyArg k;
    REQUIRE(info.Length() >= 4 && AsStruct(info[0], &o) && AsStruct(info[1], &f) && k.Read(env, info[2]) &&
                info[3].IsNumber(),
            "conflict(owner, file, key, mode)");
    jdls_holder h;
    std::memset(&h, 0, sizeof h);
    int rc = jdls_conflict(&t_, o, f->inode, f->dev, k.data, static_cast<uint32_t>(k.len),
                           info[3].As<Napi::Number>().Int32Value(), &h);
    if (rc < 0) return Napi::Number::New(env, rc);
    if (rc == 0) return env.Null();
    return HolderObject(env, h);
  }

  Napi::Value Tidy(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    if (!Open(env)) return env.Undefined();
    return Napi::Number::New(env, jdls_tidy(&t_));
  }

  Napi::Value Check(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    if (!Open(env)) return env.Undefined();
    return Napi::Number::New(env, jdls_table_check(&t_));
  }

  Napi::Value CountLockRetry(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    if (!Open(env)) return env.Undefined();
    jdls_count_lock_retry(&t_);
    return env.Undefined();
  }

  Napi::Value Usage(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    if (!Open(env)) return env.Undefined();
    jdls_usage u;
    jdls_table_usage(&t_, &u);
    auto o = Napi::Object::New(env);
    o.Set("held", static_cast<double>(u.held));
    o.Set("waiting", static_cast<double>(u.waiting));
    o.Set("maxInGroup", u.max_in_group);
    o.Set("highWater", u.high_water);
    return o;
  }

  // claimMonitor(pid, pidStart) -> 0 | pid of the live monitor
  Napi::Value ClaimMonitor(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    if (!Open(env)) return env.Undefined();
    REQUIRE(info.Length() >= 2 && info[0].IsNumber() && info[1].IsNumber(), "claimMonitor(pid, pidStart)");
    return Napi::Number::New(env, jdls_claim_monitor(&t_, info[0].As<Napi::Number>().Uint32Value(),
                                                      static_cast<uint64_t>(info[1].As<Napi::Number>().DoubleValue())));
  }

  // list(firstGroup, groupCount) -> {rows, next} | rc
  Napi::Value List(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    if (!Open(env)) return env.Undefined();
    REQUIRE(info.Length() >= 2 && info[0].IsNumber() && info[1].IsNumber(), "list(firstGroup, groupCount)");
    uint32_t first = info[0].As<Napi::Number>().Uint32Value();
    uint32_t n = info[1].As<Napi::Number>().Uint32Value();
    // Room for whole groups (jdls_list lists a group whole): as many as fit
    // in about 1 MiB, at least one. The buffer is kept for the next call
    // and never zeroed: jdls_list writes every row it returns. (A fresh
    // zero-filled vector of per_group x 64 rows per call cost 400 MB and its
    // page faults per call on a table of 10,000 locks per group.)
    uint32_t per = t_.per_group;  // the private copy (jdls_table), not the segment's
    uint32_t groups = static_cast<uint32_t>((1u << 20) / (static_cast<size_t>(per) * sizeof(jdls_row)));
    if (groups < 1) groups = 1;
    if (groups > 64) groups = 64;
    uint32_t cap = per * groups;
    if (list_cap_ < cap) {
      list_buf_.reset(new jdls_row[cap]);  // default-initialised: not zeroed
      list_cap_ = cap;
    }
    jdls_row *rows = list_buf_.get();
    uint32_t next = first;
    int got = jdls_list(&t_, first, n, rows, cap, &next);
    if (got < 0) return Napi::Number::New(env, got);
    auto arr = Napi::Array::New(env, static_cast<size_t>(got));
    for (int i = 0; i < got; i++) {
      const jdls_row &row = rows[i];
      const jdls_entry &e = row.entry;
      auto o = Napi::Object::New(env);
      o.Set("group", row.group);
      o.Set("slot", row.slot);
      o.Set("state", row.state);
      o.Set("queued", row.queued);
      o.Set("mode", static_cast<uint32_t>(e.mode));
      o.Set("hash", e.hash);
      o.Set("pid", e.pid);
      o.Set("ownerPid", e.owner_pid);
      o.Set("ownerTid", e.owner_tid);
      o.Set("conn", e.conn);
      o.Set("port", e.port);
      o.Set("inode", Napi::BigInt::New(env, e.inode));
      o.Set("dev", Napi::BigInt::New(env, e.dev));
      o.Set("seq", static_cast<double>(e.seq));
      o.Set("stampMs", static_cast<double>(e.stamp_ms));
      o.Set("token", Napi::BigInt::New(env, e.token));
      o.Set("waitNo", static_cast<double>(e.wait_no));
      o.Set("ip", IpText(e.ip, e.ip_len));
      o.Set("key", Napi::Buffer<uint8_t>::Copy(env, e.key, e.key_len));
      arr.Set(static_cast<uint32_t>(i), o);
    }
    auto res = Napi::Object::New(env);
    res.Set("rows", arr);
    res.Set("next", next);
    return res;
  }

  // setTokenSink(BigUint64Array(1)): where tryLock and lockBlocking put
  // the token of a grant (kept referenced while the table lives).
  Napi::Value SetTokenSink(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    REQUIRE(info.Length() >= 1 && info[0].IsTypedArray() &&
                info[0].As<Napi::TypedArray>().TypedArrayType() == napi_biguint64_array &&
                info[0].As<Napi::TypedArray>().ElementLength() >= 1,
            "setTokenSink(BigUint64Array)");
    token_sink_ref_ = Napi::Persistent(info[0].As<Napi::Object>());
    auto arr = info[0].As<Napi::TypedArrayOf<uint64_t>>();
    token_sink_ = arr.Data();
    return env.Undefined();
  }

  // tokenOf(owner, file, key) -> bigint: the token of the owner's lock on
  // the key, 0n if it holds none.
  Napi::Value TokenOf(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    if (!Open(env)) return env.Undefined();
    const jdls_owner *o;
    const FileId *f;
    KeyArg k;
    REQUIRE(info.Length() >= 3 && AsStruct(info[0], &o) && AsStruct(info[1], &f) && k.Read(env, info[2]),
            "tokenOf(owner, file, key)");
    return Napi::BigInt::New(env, jdls_token_of(&t_, o, f->inode, f->dev, k.data, static_cast<uint32_t>(k.len)));
  }

  // tokenFloor(bigint): every later token >= it.
  Napi::Value TokenFloor(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    if (!Open(env)) return env.Undefined();
    REQUIRE(info.Length() >= 1 && info[0].IsBigInt(), "tokenFloor(bigint)");
    bool lossless = false;
    uint64_t v = info[0].As<Napi::BigInt>().Uint64Value(&lossless);
    REQUIRE(lossless, "tokenFloor: a u64");
    jdls_token_floor(&t_, v);
    return env.Undefined();
  }

  // tokenPeek() -> bigint: the next token the table would give.
  Napi::Value TokenPeek(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    if (!Open(env)) return env.Undefined();
    return Napi::BigInt::New(env, jdls_token_peek(&t_));
  }

  Napi::Value SetDeadlockPolicy(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    if (!Open(env)) return env.Undefined();
    REQUIRE(info.Length() >= 1 && info[0].IsNumber(), "setDeadlockPolicy(policy)");
    return Napi::Number::New(env, jdls_set_deadlock_policy(&t_, info[0].As<Napi::Number>().Uint32Value()));
  }

  // readReport(n) -> {number, timeMs, members, victim, m: [...]} | undefined
  Napi::Value ReadReport(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    if (!Open(env)) return env.Undefined();
    REQUIRE(info.Length() >= 1 && info[0].IsNumber(), "readReport(n)");
    jdls_deadlock_report r;
    if (jdls_read_report(&t_, static_cast<uint64_t>(info[0].As<Napi::Number>().DoubleValue()), &r) != JDLS_OK)
      return env.Undefined();
    auto o = Napi::Object::New(env);
    o.Set("number", static_cast<double>(r.number));
    o.Set("timeMs", static_cast<double>(r.time_ms));
    o.Set("members", r.members);
    o.Set("victim", r.victim);
    uint32_t n = r.members < JDLS_REPORT_MEMBERS ? r.members : JDLS_REPORT_MEMBERS;
    auto arr = Napi::Array::New(env, n);
    for (uint32_t i = 0; i < n; i++) {
      const jdls_report_member &m = r.m[i];
      auto x = Napi::Object::New(env);
      x.Set("pid", m.pid);
      x.Set("ownerPid", m.owner_pid);
      x.Set("ownerTid", m.owner_tid);
      x.Set("port", m.port);
      x.Set("conn", m.conn);
      x.Set("mode", static_cast<uint32_t>(m.mode));
      x.Set("ip", IpText(m.ip, m.ip_len == 16 ? 16 : 4));
      x.Set("inode", Napi::BigInt::New(env, m.inode));
      x.Set("dev", Napi::BigInt::New(env, m.dev));
      x.Set("waitNo", static_cast<double>(m.wait_no));
      x.Set("keyLength", static_cast<uint32_t>(m.key_len));
      x.Set("key", Napi::Buffer<uint8_t>::Copy(env, m.key, m.key_len < JDLS_REPORT_KEY ? m.key_len : JDLS_REPORT_KEY));
      arr.Set(i, x);
    }
    o.Set("m", arr);
    return o;
  }

  Napi::Value Header(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    if (!Open(env)) return env.Undefined();
    const jdls_header *h = t_.hdr;
    auto o = Napi::Object::New(env);
    o.Set("version", h->version);
    o.Set("ngroups", t_.ngroups);
    o.Set("perGroup", t_.per_group);
    o.Set("flags", t_.flags);
    o.Set("totalSize", static_cast<double>(t_.size));
    o.Set("entrySize", static_cast<uint32_t>(sizeof(jdls_entry)));
    o.Set("requestedLocks", h->requested_locks);
    o.Set("tidyMs", h->tidy_ms);
    uint32_t mpid;
    uint64_t mstart;
    jdls_monitor_read(&t_, &mpid, &mstart);  // one consistent pair
    o.Set("monitorPid", mpid);
    o.Set("monitorStart", static_cast<double>(mstart));
    o.Set("listenerPid", __atomic_load_n(&h->listener_pid, __ATOMIC_ACQUIRE));
    o.Set("listenerStart", static_cast<double>(h->listener_start));
    o.Set("listenerPort", h->listener_port);
    o.Set("listenerAddr", std::string(reinterpret_cast<const char *>(h->listener_addr),
                                      strnlen(reinterpret_cast<const char *>(h->listener_addr), sizeof h->listener_addr)));
    o.Set("createdMs", static_cast<double>(h->created_ms));
    o.Set("startedMs", static_cast<double>(h->started_ms));
    o.Set("lastRanMs", static_cast<double>(h->last_ran_ms));
    o.Set("lastTidyMs", static_cast<double>(h->last_tidy_ms));
    o.Set("tidyOps", static_cast<double>(__atomic_load_n(&h->tidy_ops, __ATOMIC_RELAXED)));
    o.Set("lockRetries", static_cast<double>(__atomic_load_n(&h->lock_retries, __ATOMIC_RELAXED)));
    o.Set("service", jdls_table_service(&t_));
    o.Set("starterPid", __atomic_load_n(&h->starter_pid, __ATOMIC_ACQUIRE));
    o.Set("hashSeed", Napi::BigInt::New(env, t_.hash_seed));
    o.Set("deadlockPolicy", __atomic_load_n(&h->deadlock_policy, __ATOMIC_RELAXED));
    o.Set("deadlocksFound", static_cast<double>(__atomic_load_n(&h->deadlocks_found, __ATOMIC_RELAXED)));
    o.Set("deadlocksBroken", static_cast<double>(__atomic_load_n(&h->deadlocks_broken, __ATOMIC_RELAXED)));
    o.Set("deadlockReports", static_cast<double>(__atomic_load_n(&h->reports_written, __ATOMIC_RELAXED)));
    o.Set("nextToken", Napi::BigInt::New(env, jdls_token_peek(&t_)));
    return o;
  }

  // setHeader(field, value): the monitor's and listener's fields only.
  Napi::Value SetHeader(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    if (!Open(env)) return env.Undefined();
    REQUIRE(info.Length() >= 2 && info[0].IsString(), "setHeader(field, value)");
    std::string f = info[0].As<Napi::String>();
    jdls_header *h = t_.hdr;
    if (f == "listenerAddr") {
      REQUIRE(info[1].IsString(), "setHeader: listenerAddr is a string");
      std::string s = info[1].As<Napi::String>();
      std::memset(h->listener_addr, 0, sizeof h->listener_addr);
      std::memcpy(h->listener_addr, s.data(), s.size() < sizeof h->listener_addr - 1 ? s.size() : sizeof h->listener_addr - 1);
      return env.Undefined();
    }
    REQUIRE(info[1].IsNumber(), "setHeader: value must be a number");
    double v = info[1].As<Napi::Number>().DoubleValue();
    if (f == "monitorPid") __atomic_store_n(&h->monitor_pid, static_cast<uint32_t>(v), __ATOMIC_RELEASE);
    else if (f == "monitorStart") h->monitor_start = static_cast<uint64_t>(v);
    else if (f == "listenerPid") __atomic_store_n(&h->listener_pid, static_cast<uint32_t>(v), __ATOMIC_RELEASE);
    else if (f == "listenerStart") h->listener_start = static_cast<uint64_t>(v);
    else if (f == "listenerPort") h->listener_port = static_cast<uint32_t>(v);
    else if (f == "startedMs") h->started_ms = static_cast<int64_t>(v);
    else if (f == "lastRanMs") h->last_ran_ms = static_cast<int64_t>(v);
    else if (f == "lastTidyMs") h->last_tidy_ms = static_cast<int64_t>(v);
    else if (f == "tidyMs") h->tidy_ms = static_cast<uint32_t>(v);
    else if (f == "lockRetries") __atomic_store_n(&h->lock_retries, static_cast<uint64_t>(v), __ATOMIC_RELAXED);
    else {
      Napi::TypeError::New(env, "setHeader: unknown field " + f).ThrowAsJavaScriptException();
    }
    return env.Undefined();
  }

  // enterService(): 0 (OK: in service) or 1 (CONFLICT: OS-route
  // processes live; retry or retire); another rc on error.
  Napi::Value EnterService(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    if (!Open(env)) return env.Undefined();
    return Napi::Number::New(env, jdls_table_enter_service(&t_));
  }

  Napi::Value Retire(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    if (!Open(env)) return env.Undefined();
    jdls_table_retire(&t_);
    return env.Undefined();
  }

  Napi::Value DebugHoldGroup(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    if (!Open(env)) return env.Undefined();
    REQUIRE(info.Length() >= 1 && info[0].IsNumber(), "debugHoldGroup(group)");
    return Napi::Number::New(env, jdls_debug_hold_group(&t_, info[0].As<Napi::Number>().Uint32Value()));
  }

  Napi::Value Close(const Napi::CallbackInfo &info) {
    Shutdown();
    return info.Env().Undefined();
  }

  jdls_table t_;
  std::unique_ptr<jdls_row[]> list_buf_;  // list()'s rows, reused
  uint32_t list_cap_ = 0;
  bool existed_ = false;
  Waiter *waiter_ = nullptr;
  uint64_t *token_sink_ = nullptr;        // setTokenSink: a grant's token for JS
  Napi::ObjectReference token_sink_ref_;  // keeps the sink's buffer alive
};

// ---- module functions ----------------------------------------------------

// registerOsRoute(tablePath, releaseDir?): this process locks records with
// OS file locks (no table in service): hold the marker's read lock for the
// rest of its life (jdls_service.c). The descriptor, or -errno (-EPERM: the
// marker was refused; markerDetail() says why). Without releaseDir, the
// process's own installation (jdls_release_dir) says who may own the marker.
Napi::Value RegisterOsRoute(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString() || (info.Length() >= 2 && !info[1].IsString() && !info[1].IsUndefined())) {
    Napi::TypeError::New(env, "registerOsRoute(tablePath, releaseDir?)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  std::string p = info[0].As<Napi::String>();
  char buf[4096];
  std::string dir;
  if (info.Length() >= 2 && info[1].IsString()) dir = info[1].As<Napi::String>();
  else if (jdls_release_dir(buf, sizeof buf) >= 0) dir = buf;
  jdls_trust trust;
  if (dir.empty() || jdls_installation_trust(dir.c_str(), &trust) != 0)
    return Napi::Number::New(env, jdls_os_route_register(p.c_str(), nullptr, 0));
  return Napi::Number::New(env, jdls_os_route_register(p.c_str(), &trust, 0));
}

// lastDetail(): jdls_detail() of this thread (why the last open, create or
// marker registration was refused).
Napi::Value LastDetail(const Napi::CallbackInfo &info) { return Napi::String::New(info.Env(), jdls_detail()); }

Napi::Value ReleaseDir(const Napi::CallbackInfo &info) {
  char buf[4096];
  if (jdls_release_dir(buf, sizeof buf) < 0) return info.Env().Null();
  return Napi::String::New(info.Env(), buf);
}

Napi::Value TablePath(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  REQUIRE(info.Length() >= 1 && info[0].IsString(), "tablePath(releaseDir)");
  std::string dir = info[0].As<Napi::String>();
  char buf[512];
  if (jdls_table_path(dir.c_str(), buf, sizeof buf) < 0) return env.Null();
  return Napi::String::New(env, buf);
}

Napi::Value Hash(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  const FileId *f;
  KeyArg k;
  REQUIRE(info.Length() >= 2 && AsStruct(info[0], &f) && k.Read(env, info[1]) &&
              (info.Length() < 3 || info[2].IsBigInt()), "hash(file, key, seed?: bigint)");
  uint64_t seed = 0;
  if (info.Length() >= 3) {
    bool lossless;
    seed = info[2].As<Napi::BigInt>().Uint64Value(&lossless);
  }
  return Napi::Number::New(env, jdls_hash(seed, f->inode, f->dev, k.data, static_cast<uint32_t>(k.len)));
}

Napi::Value NextPrime(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  REQUIRE(info.Length() >= 1 && info[0].IsNumber(), "nextPrime(n)");
  return Napi::Number::New(env, jdls_next_prime(info[0].As<Napi::Number>().Uint32Value()));
}

Napi::Value PidStart(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  REQUIRE(info.Length() >= 1 && info[0].IsNumber(), "pidStart(pid)");
  return Napi::Number::New(env, static_cast<double>(jdls_pid_start(info[0].As<Napi::Number>().Uint32Value())));
}

Napi::Value PidAlive(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  REQUIRE(info.Length() >= 2 && info[0].IsNumber() && info[1].IsNumber(), "pidAlive(pid, start)");
  return Napi::Boolean::New(env, jdls_pid_alive(info[0].As<Napi::Number>().Uint32Value(),
                                                static_cast<uint64_t>(info[1].As<Napi::Number>().DoubleValue()), 1) != 0);
}

Napi::Value GetTid(const Napi::CallbackInfo &info) {
  return Napi::Number::New(info.Env(), static_cast<double>(syscall(SYS_gettid)));
}

// makeOwner(pid, ownerPid, ownerTid, port, pidStart, ip: Buffer(4|16), conn)
Napi::Value MakeOwner(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  REQUIRE(info.Length() >= 7 && info[0].IsNumber() && info[1].IsNumber() && info[2].IsNumber() &&
              info[3].IsNumber() && info[4].IsNumber() && info[5].IsBuffer() && info[6].IsNumber(),
          "makeOwner(pid, ownerPid, ownerTid, port, pidStart, ip, conn)");
  auto ip = info[5].As<Napi::Buffer<uint8_t>>();
  REQUIRE(ip.Length() == 4 || ip.Length() == 16, "makeOwner: ip must be 4 or 16 bytes");
  jdls_owner o;
  std::memset(&o, 0, sizeof o);
  o.pid = info[0].As<Napi::Number>().Uint32Value();
  o.owner_pid = info[1].As<Napi::Number>().Uint32Value();
  o.owner_tid = info[2].As<Napi::Number>().Uint32Value();
  o.port = info[3].As<Napi::Number>().Uint32Value();
  o.pid_start = static_cast<uint64_t>(info[4].As<Napi::Number>().DoubleValue());
  o.ip_len = static_cast<uint8_t>(ip.Length());
  std::memcpy(o.ip, ip.Data(), ip.Length());
  o.conn = info[6].As<Napi::Number>().Uint32Value();
  return Napi::Value(env, MakeHandle(env, o));
}

// makeFile(inode, dev): bigint or number each
Napi::Value MakeFile(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  bool ok1 = false, ok2 = false;
  uint64_t inode = info.Length() >= 1 ? ToU64(info[0], &ok1) : 0;
  int64_t dev = info.Length() >= 2 ? ToI64(info[1], &ok2) : 0;
  REQUIRE(ok1 && ok2, "makeFile(inode, dev): integers (bigint or number)");
  return Napi::Value(env, MakeHandle(env, FileId{inode, dev}));
}

Napi::Object Constants(Napi::Env env) {
  auto c = Napi::Object::New(env);
  c.Set("MAGIC", JDLS_MAGIC);
  c.Set("LAYOUT_VERSION", JDLS_LAYOUT_VERSION);
  c.Set("MAX_KEY", JDLS_MAX_KEY);
  c.Set("PROC_SLOTS", JDLS_PROC_SLOTS);
  c.Set("DEFAULT_LOCKS", JDLS_DEFAULT_LOCKS);
  c.Set("DEFAULT_PER_GROUP", JDLS_DEFAULT_PER_GROUP);
  c.Set("MAX_LOCKS", JDLS_MAX_LOCKS);
  c.Set("MAX_PER_GROUP", JDLS_MAX_PER_GROUP);
  c.Set("LIVENESS_TICK_MS", JDLS_LIVENESS_TICK_MS);
  c.Set("FLAG_PORT_LOCKS", JDLS_FLAG_PORT_LOCKS);
  c.Set("FLAG_TIMESTAMPS", JDLS_FLAG_TIMESTAMPS);
  c.Set("MODE_READ", JDLS_MODE_READ);
  c.Set("MODE_WRITE", JDLS_MODE_WRITE);
  c.Set("STATE_FREE", JDLS_STATE_FREE);
  c.Set("STATE_HELD", JDLS_STATE_HELD);
  c.Set("STATE_WAITING", JDLS_STATE_WAITING);
  c.Set("STATE_REFUSED", JDLS_STATE_REFUSED);
  c.Set("REQ_NOWAIT", JDLS_REQ_NOWAIT);
  c.Set("REQ_BREAK_DEADLOCK", JDLS_REQ_BREAK_DEADLOCK);
  c.Set("DEADLOCK_OFF", JDLS_DEADLOCK_OFF);
  c.Set("DEADLOCK_REPORT", JDLS_DEADLOCK_REPORT);
  c.Set("DEADLOCK_BREAK", JDLS_DEADLOCK_BREAK);
  c.Set("TOKEN_EPOCH_SHIFT", JDLS_TOKEN_EPOCH_SHIFT);
  c.Set("TOKEN_MAX_EPOCH", Napi::BigInt::New(env, static_cast<uint64_t>(JDLS_TOKEN_MAX_EPOCH)));
  c.Set("SERVICE_STARTING", JDLS_SERVICE_STARTING);
  c.Set("SERVICE_ON", JDLS_SERVICE_ON);
  c.Set("SERVICE_RETIRED", JDLS_SERVICE_RETIRED);
  c.Set("ENTRY_SIZE", static_cast<uint32_t>(sizeof(jdls_entry)));
  c.Set("GROUP_HEADER_SIZE", static_cast<uint32_t>(sizeof(jdls_group)));
  c.Set("HEADER_SIZE", static_cast<uint32_t>(sizeof(jdls_header)));
  c.Set("PROC_SLOT_SIZE", static_cast<uint32_t>(sizeof(jdls_proc_slot)));
  c.Set("RL_FILELOCK", JDLS_RL_FILELOCK);
  c.Set("RL_WRITE", JDLS_RL_WRITE);
  c.Set("RL_READ", JDLS_RL_READ);
  c.Set("RL_FREE", JDLS_RL_FREE);
  // Every result code with its name and text: the one table src/ maps from.
  auto rc = Napi::Object::New(env);
  for (int v = -64; v <= 16; v++) {
    const char *name = jdls_rc_name(v);
    if (!name) continue;
    auto d = Napi::Object::New(env);
    d.Set("value", v);
    d.Set("text", jdls_strerror(v));
    rc.Set(name, d);
  }
  c.Set("RC", rc);
  return c;
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("Table", Table::Init(env));
  exports.Set("releaseDir", Napi::Function::New(env, ReleaseDir));
  exports.Set("tablePath", Napi::Function::New(env, TablePath));
  exports.Set("lastDetail", Napi::Function::New(env, LastDetail));
  exports.Set("hash", Napi::Function::New(env, Hash));
  exports.Set("nextPrime", Napi::Function::New(env, NextPrime));
  exports.Set("pidStart", Napi::Function::New(env, PidStart));
  exports.Set("pidAlive", Napi::Function::New(env, PidAlive));
  exports.Set("gettid", Napi::Function::New(env, GetTid));
  exports.Set("makeOwner", Napi::Function::New(env, MakeOwner));
  exports.Set("makeFile", Napi::Function::New(env, MakeFile));
  exports.Set("registerOsRoute", Napi::Function::New(env, RegisterOsRoute));
  exports.Set("constants", Constants(env));
  JdlsProtoInit(env, exports);
  JdlsFdpassInit(env, exports);
  JdlsTokensInit(env, exports);
  jdls_oslock_init(env, exports);
  return exports;
}

}  // namespace

NODE_API_MODULE(jdls, Init)
