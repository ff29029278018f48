// env_cleanup.h - the one lifecycle of an ObjectWrap that owns native
// resources (a waiter thread, descriptors, a mapping, a TSFN).
//
// Trap: an env is torn down (a worker's exit, the process's exit) without
// running JS and before the wraps' destructors, so a thread of ours could
// call into a dead TSFN, and a description's locks could outlive the
// worker that took them. Each wrap registers an env cleanup hook at
// construction; Shutdown() - from close(), the destructor or the hook,
// whichever comes first - unhooks and releases. Per object and per env:
// one addon instance serves the main thread and every worker, and a
// worker's exit must shut down only ITS objects.
//
// Use: class X : public Napi::ObjectWrap<X>, public EnvCleanup<X>; call
// HookEnvCleanup(env) in the constructor; X::Shutdown() (idempotent) calls
// UnhookEnvCleanup() first; `friend class EnvCleanup<X>` if it is private.
#ifndef JDLS_ADDON_ENV_CLEANUP_H
#define JDLS_ADDON_ENV_CLEANUP_H

#include <node_api.h>

template <typename Derived>
class EnvCleanup {
 protected:
  void HookEnvCleanup(napi_env env) {
    env_ = env;
    napi_add_env_cleanup_hook(env, &EnvCleanup::Run, this);
    hooked_ = true;
  }
  void UnhookEnvCleanup() {
    if (!hooked_) return;
    napi_remove_env_cleanup_hook(env_, &EnvCleanup::Run, this);
    hooked_ = false;
  }
  napi_env env_ = nullptr;

 private:
  static void Run(void *arg) {
    auto *self = static_cast<EnvCleanup *>(arg);
    self->hooked_ = false;  // being run: do not remove
    static_cast<Derived *>(self)->Shutdown();
  }
  bool hooked_ = false;
};

#endif
