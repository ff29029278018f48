/*
 * shim_real.c - the real libc functions behind the interposed ones, the
 * per-thread recursion guard, the cached pid and the fork handler.
 *
 * Owns: real_* pointers (resolved once with dlsym(RTLD_NEXT) under
 * pthread_once; tests may overwrite them to inject faults), shim_busy, the
 * pid cache. Does not own: any decision about locks.
 */
#undef _FILE_OFFSET_BITS
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <sys/syscall.h>
#include <unistd.h>
#include "shim.h"

SHIM_TLS int shim_busy;

static pthread_once_t once = PTHREAD_ONCE_INIT;
static int resolved;
static uint32_t cached_pid;
static uint64_t cached_start;

/* Fallbacks for the window before resolution (dlsym itself, or a very early
 * caller): plain system calls, so nothing can recurse into the shim. */
static int sys_fcntl(int fd, int cmd, ...) {
  va_list ap;
  va_start(ap, cmd);
  void *arg = va_arg(ap, void *);
  va_end(ap);
  return (int)syscall(SYS_fcntl, fd, cmd, arg);
}
static int sys_flock(int fd, int op) { return (int)syscall(SYS_flock, fd, op); }
static int sys_close(int fd) { return (int)syscall(SYS_close, fd); }
/* lockf as glibc does it (misc/lockf.c), on the raw system call. */
static int sys_lockf(int fd, int cmd, off_t len) {
  struct flock fl = {.l_whence = SEEK_CUR, .l_start = 0, .l_len = len};
  switch (cmd) {
    case F_TEST:
      fl.l_type = F_RDLCK;
      if (syscall(SYS_fcntl, fd, F_GETLK, &fl) < 0) return -1;
      if (fl.l_type == F_UNLCK || fl.l_pid == getpid()) return 0;
      errno = EACCES;
      return -1;
    case F_ULOCK: fl.l_type = F_UNLCK; return (int)syscall(SYS_fcntl, fd, F_SETLK, &fl);
    case F_LOCK: fl.l_type = F_WRLCK; return (int)syscall(SYS_fcntl, fd, F_SETLKW, &fl);
    case F_TLOCK: fl.l_type = F_WRLCK; return (int)syscall(SYS_fcntl, fd, F_SETLK, &fl);
  }
  errno = EINVAL;
  return -1;
}

/* Start on the system calls; resolve() swaps in libc's functions. */
fcntl_fn real_fcntl = sys_fcntl;
flock_fn real_flock = sys_flock;
lockf_fn real_lockf = sys_lockf;
close_fn real_close = sys_close;

/* Fork: classic locks are not inherited (POSIX). The child gets a new pid,
 * so it is a different owner in the table automatically; resetting the
 * cache is what makes that true (a stale cached pid would make the child
 * act - and release on close() - as its parent). */
static void atfork_child(void) {
  cached_pid = 0;
  cached_start = 0;
  shim_record_forget();
  shim_api_forget();
  shim_broker_forget();
  shim_binary_forget();
  shim_binapi_forget();
}

static void resolve(void) {
  shim_busy++;
  /* glibc exports fcntl, __fcntl and fcntl64 at one address (same for
   * lockf/lockf64); fcntl64 is the 64-bit-offset entry, so take it first. */
  fcntl_fn f = (fcntl_fn)dlsym(RTLD_NEXT, "fcntl64");
  if (!f) f = (fcntl_fn)dlsym(RTLD_NEXT, "fcntl");
  lockf_fn l = (lockf_fn)dlsym(RTLD_NEXT, "lockf64");
  if (!l) l = (lockf_fn)dlsym(RTLD_NEXT, "lockf");
  flock_fn fl = (flock_fn)dlsym(RTLD_NEXT, "flock");
  close_fn c = (close_fn)dlsym(RTLD_NEXT, "close");
  if (f) real_fcntl = f;
  if (l) real_lockf = l;
  if (fl) real_flock = fl;
  if (c) real_close = c;
  pthread_atfork(NULL, NULL, atfork_child);
  __atomic_store_n(&resolved, 1, __ATOMIC_RELEASE);
  shim_busy--;
}

void shim_resolve(void) {
  if (__atomic_load_n(&resolved, __ATOMIC_ACQUIRE)) return;
  /* Re-entered from inside resolve() (dlsym): no pthread_once here, it
   * would deadlock; the system-call fallbacks serve this one call. */
  if (shim_busy) return;
  pthread_once(&once, resolve);
}

uint32_t shim_pid(void) {
  uint32_t p = __atomic_load_n(&cached_pid, __ATOMIC_RELAXED);
  if (!p) {
    p = (uint32_t)getpid();
    __atomic_store_n(&cached_pid, p, __ATOMIC_RELAXED);
  }
  return p;
}

uint64_t shim_pid_start(void) {
  uint64_t s = __atomic_load_n(&cached_start, __ATOMIC_RELAXED);
  if (!s) {
    s = jdls_pid_start(shim_pid());
    __atomic_store_n(&cached_start, s, __ATOMIC_RELAXED);
  }
  return s;
}
