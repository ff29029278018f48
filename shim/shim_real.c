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
#include <stdio.h>
#include <stdlib.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>
#include "shim.h"

SHIM_TLS int shim_busy;
SHIM_TLS int shim_in_vfork;
SHIM_TLS uintptr_t shim_entry_sp;
SHIM_TLS int shim_abandoned;

static pthread_once_t once = PTHREAD_ONCE_INIT;
static int resolved;
/* The process that owns the shim's state (the held-file lists, the broker
 * connection, the C API's descriptions, the exit release): set when the
 * library is loaded and in the fork child, NEVER lazily - a lazy first call
 * could come from a vfork child and write the child's pid into the memory it
 * shares with its parent. */
static uint32_t cached_pid;
static uint64_t cached_start;

static uint32_t sys_getpid(void) { return (uint32_t)syscall(SYS_getpid); }

/* --- siglongjmp ---------------------------------------------------------------
 * Trap: fcntl is async-signal-safe, so alarm() + siglongjmp out of a blocked
 * F_SETLKW is a legal lock timeout. The jump never returns through the shim:
 * the recursion guard would stay raised for ever (every later fcntl/close of
 * the thread bypassing the shim: a lock on the wrong mechanism) and the
 * queued request would stay in the table, to be granted later to a process
 * that does not know it holds it. The jump functions are interposed: a jump
 * while the thread is inside the shim whose target stack pointer lies above
 * the outermost entry's frame (stacks grow down) leaves the shim: the guard
 * is reset and the thread marked; the next entry withdraws what was left
 * (shim_recover) - not here, in a signal handler, where the interrupted code
 * may hold the broker's mutex. A jump within a handler that interrupted the
 * shim (its target is deeper) changes nothing.
 * Rejected: comparing the stack pointer at the next entry with the entry
 * frame's - a later call made from deeper in the program looks nested.
 * glibc stores the stack pointer in the jmp_buf mangled (PTR_MANGLE: xor
 * with the pointer guard at %fs:0x30, then rotate left 17), x86_64 only.
 * Jump-safe stretches: what a jump cannot undo (a mutex held, a queued
 * request not yet noted, half a frame) is done with signals blocked
 * (shim_block_signals): the contended table path (shim_table_lock_wait)
 * and every broker request (shim_broker.c, request()).
 * The uncontended table calls stay unmasked (a mask change costs more than
 * the whole emulated pair): a group mutex a jump leaves held is released at
 * the jump (note_jump). Known gap: a jump out of glibc's own lock/unlock of
 * that mutex, between the lock word and the robust list (docs/shim.md). */
typedef void (*jump_fn)(struct __jmp_buf_tag *, int);
static jump_fn real_longjmp, real_siglongjmp, real__longjmp, real_longjmp_chk;

static void note_jump(struct __jmp_buf_tag *env) {
  if (!shim_busy) return;
#if defined(__x86_64__)
  uintptr_t v = (uintptr_t)env->__jmpbuf[6]; /* JB_RSP */
  uintptr_t guard;
  __asm__("mov %%fs:0x30, %0" : "=r"(guard));
  uintptr_t sp = ((v >> 17) | (v << 47)) ^ guard;
  if (sp <= shim_entry_sp) return; /* a jump within a handler, deeper */
#endif
  shim_busy = 0;
  shim_abandoned = 1;
  /* A jump out of an unmasked table call (F_SETLK, an unlock, the try of
   * F_SETLKW, the C API's calls) may leave a group mutex held: released
   * here, at the jump (repaired as for a holder that died inside the
   * section), not at the thread's next entry - it may not come for long,
   * and every process waits on that group meanwhile. Safe in a handler:
   * the section it interrupted never resumes, and the repair only reads
   * the segment and wakes futexes. (shim_recover looks again.) */
  if (shim_route_decided() && shim_table()->hdr) jdls_release_abandoned(shim_table());
}

__attribute__((noreturn)) static void jump(jump_fn real, struct __jmp_buf_tag *env, int val) {
  note_jump(env);
  if (!real) real = (jump_fn)dlsym(RTLD_NEXT, "siglongjmp");
  real(env, val);
  __builtin_unreachable();
}

SHIM_EXPORT void longjmp(struct __jmp_buf_tag env[1], int val) { jump(real_longjmp, env, val); }
SHIM_EXPORT void siglongjmp(struct __jmp_buf_tag env[1], int val) { jump(real_siglongjmp, env, val); }
SHIM_EXPORT void _longjmp(struct __jmp_buf_tag env[1], int val) { jump(real__longjmp, env, val); }
/* _FORTIFY_SOURCE builds call this one. */
SHIM_EXPORT void __longjmp_chk(struct __jmp_buf_tag env[1], int val) { jump(real_longjmp_chk, env, val); }

__attribute__((constructor)) static void init_owner(void) {
  __atomic_store_n(&cached_pid, sys_getpid(), __ATOMIC_RELAXED);
  /* Here, not lazily: the jump functions run in signal handlers, where
   * dlsym (malloc, locks) must not. */
  real_longjmp = (jump_fn)dlsym(RTLD_NEXT, "longjmp");
  real_siglongjmp = (jump_fn)dlsym(RTLD_NEXT, "siglongjmp");
  real__longjmp = (jump_fn)dlsym(RTLD_NEXT, "_longjmp");
  real_longjmp_chk = (jump_fn)dlsym(RTLD_NEXT, "__longjmp_chk");
}

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

static int sys_dup2(int o, int n) { return (int)syscall(SYS_dup2, o, n); }
static int sys_dup3(int o, int n, int f) { return (int)syscall(SYS_dup3, o, n, f); }
static int sys_close_range(unsigned lo, unsigned hi, int f) { return (int)syscall(SYS_close_range, lo, hi, f); }
static void sys_closefrom(int lo) { syscall(SYS_close_range, (unsigned)lo, ~0U, 0); }
/* No system call closes a stream: these two look libc's up on the spot
 * (an fclose before resolution, from another library's constructor). */
static int early_fclose(FILE *f) {
  fclose_fn r = (fclose_fn)dlsym(RTLD_NEXT, "fclose");
  return r ? r(f) : EOF;
}
static FILE *early_freopen(const char *p, const char *m, FILE *f) {
  freopen_fn r = (freopen_fn)dlsym(RTLD_NEXT, "freopen");
  return r ? r(p, m, f) : NULL;
}

/* Start on the system calls; resolve() swaps in libc's functions. */
fcntl_fn real_fcntl = sys_fcntl;
flock_fn real_flock = sys_flock;
lockf_fn real_lockf = sys_lockf;
close_fn real_close = sys_close;
dup2_fn real_dup2 = sys_dup2;
dup3_fn real_dup3 = sys_dup3;
close_range_fn real_close_range = sys_close_range;
closefrom_fn real_closefrom = sys_closefrom;
fclose_fn real_fclose = early_fclose;
freopen_fn real_freopen = early_freopen;

/* Fork: classic locks are not inherited (POSIX). The child gets a new pid,
 * so it is a different owner in the table automatically; resetting the
 * cache is what makes that true (a stale cached pid would make the child
 * act - and release on close() - as its parent). */
static void atfork_child(void) {
  cached_pid = sys_getpid();
  cached_start = 0;
  shim_record_forget();
  shim_api_forget();
  shim_broker_forget();
  shim_binary_forget();
  shim_binapi_forget();
  shim_info_forget();
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
  dup2_fn d2 = (dup2_fn)dlsym(RTLD_NEXT, "dup2");
  dup3_fn d3 = (dup3_fn)dlsym(RTLD_NEXT, "dup3");
  /* close_range and closefrom: glibc 2.34 and later; the system call else. */
  close_range_fn cr = (close_range_fn)dlsym(RTLD_NEXT, "close_range");
  closefrom_fn cf = (closefrom_fn)dlsym(RTLD_NEXT, "closefrom");
  fclose_fn fc = (fclose_fn)dlsym(RTLD_NEXT, "fclose");
  freopen_fn fr = (freopen_fn)dlsym(RTLD_NEXT, "freopen");
  if (d2) real_dup2 = d2;
  if (d3) real_dup3 = d3;
  if (cr) real_close_range = cr;
  if (cf) real_closefrom = cf;
  if (fc) real_fclose = fc;
  if (fr) real_freopen = fr;
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
  /* A vfork child is another process (another lock owner) that shares our
   * memory: it gets its own pid and writes nothing to the cache. */
  if (shim_in_vfork) return sys_getpid();
  uint32_t p = __atomic_load_n(&cached_pid, __ATOMIC_RELAXED);
  if (!p) {
    /* Only when the constructor did not run (a call from another library's
     * constructor before ours): the loading process itself. */
    p = sys_getpid();
    __atomic_store_n(&cached_pid, p, __ATOMIC_RELAXED);
  }
  return p;
}

uint64_t shim_pid_start(void) {
  if (shim_in_vfork) return jdls_pid_start(sys_getpid());
  uint64_t s = __atomic_load_n(&cached_start, __ATOMIC_RELAXED);
  if (!s) {
    s = jdls_pid_start(shim_pid());
    __atomic_store_n(&cached_start, s, __ATOMIC_RELAXED);
  }
  return s;
}

/* The shim's own descriptors (broker socket, the C API's lock-file
 * descriptions, jexec) live at the top of the descriptor range: a program's
 * dup2 onto 0-2, its "lowest free descriptor" logic and fd_set-based code
 * never meet them there. F_DUPFD_CLOEXEC from (soft limit - 64), closing
 * the low one; kept where it is when that fails. */
int shim_high_fd(int fd) {
  if (fd < 0) return fd;
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur < 128) return fd;
  long from = (long)rl.rlim_cur - 64;
  if (from > 1 << 20) from = 1 << 20;
  int h = (int)syscall(SYS_fcntl, fd, F_DUPFD_CLOEXEC, from);
  if (h < 0) return fd;
  syscall(SYS_close, fd);
  return h;
}

/* --- per-thread buffers ---------------------------------------------------------
 * Trap: the shim's TLS is initial-exec (no malloc on first access, see
 * shim.h), and a library loaded with dlopen (the C API linked at run time)
 * gets initial-exec TLS from glibc's small static surplus (a few hundred
 * bytes shared by every such library): "cannot allocate memory in static
 * TLS block" past it. So nothing big lives in TLS: the copies of a waiting
 * request's key (for a longjmp's undo) are in a per-thread heap block,
 * allocated on the thread's first wait (never in a signal handler) and freed
 * at thread exit. */
static pthread_key_t buf_key;
static pthread_once_t buf_once = PTHREAD_ONCE_INIT;
static SHIM_TLS uint8_t *thread_buf;
static void buf_free(void *p) { free(p); }
static void buf_init(void) { pthread_key_create(&buf_key, buf_free); }

uint8_t *shim_thread_buf(int which) {
  if (!thread_buf) {
    /* Signals blocked: a caller may be a lock call a timer's handler jumps
     * out of (the classic lock timeout), and a jump out of malloc leaves
     * glibc's arena lock held - the program's next malloc then waits for
     * ever (the chaos suite's server-route jump test: the jump's PC was in
     * sysmalloc, called from here). The signal stays pending and comes at
     * the wait, where a jump is undone. */
    sigset_t caller;
    shim_block_signals(&caller);
    pthread_once(&buf_once, buf_init);
    uint8_t *b = malloc(2 * SHIM_THREAD_BUF);
    if (b) {
      pthread_setspecific(buf_key, b);
      thread_buf = b;
    }
    shim_restore_signals(&caller);
    if (!b) return NULL;
  }
  return thread_buf + (which ? SHIM_THREAD_BUF : 0);
}

int shim_foreign(void) {
  return shim_in_vfork || sys_getpid() != __atomic_load_n(&cached_pid, __ATOMIC_RELAXED);
}

/* --- vfork -------------------------------------------------------------------
 * Trap: a vfork child shares its parent's memory and runs no pthread_atfork
 * handler, so everything the shim caches (owner pid, held-file lists, the
 * broker connection) is the PARENT's, and the child writes into the parent's
 * copy. A child that closes an inherited descriptor of a locked file between
 * vfork and exec (common) would release the parent's locks. Comparing
 * getpid() with the cached owner on every lock call would catch it, but a
 * system call costs ~1.5 us on the VMs measured (docs/benchmarks.md), more
 * than the whole emulated lock: so vfork itself is interposed and marks the
 * calling thread (TLS, which the child shares with exactly this thread) for
 * as long as the child runs on it; the parent, resumed after the child's
 * exec or _exit, clears the mark. Written in assembly like glibc's own:
 * the child returns through our frame first and may overwrite the stack
 * slot holding our return address before the parent returns through it, so
 * the return address is kept in a register (%rdi) across the system call.
 * Not seen: a raw syscall(SYS_vfork) or clone(CLONE_VM) - the paths where the
 * state is released (close, exit, unlock-all) also compare getpid() with the
 * owner (shim_foreign), which catches those children too; their lock calls
 * would act as the parent (docs/shim.md). posix_spawn, system and popen use
 * clone(CLONE_VM|CLONE_VFORK) but run only glibc-internal calls in the child
 * (not interposed), so the shim never runs there. */
__attribute__((visibility("hidden"))) int shim_vfork_fail(int e) {
  errno = e;
  return -1;
}
#if defined(__x86_64__)
__asm__(".text\n"
        ".globl vfork\n"
        ".globl __vfork\n"
        ".type vfork, @function\n"
        ".type __vfork, @function\n"
        "vfork:\n"
        "__vfork:\n"
        "  popq %rdi\n"
        "  movq shim_in_vfork@gottpoff(%rip), %rsi\n"
        "  movl $1, %fs:(%rsi)\n"
        "  movl $58, %eax\n" /* SYS_vfork */
        "  syscall\n"
        "  pushq %rdi\n"
        "  testq %rax, %rax\n"
        "  jz 1f\n"           /* the child: marked until it execs or exits */
        "  movl $0, %fs:(%rsi)\n" /* the parent, or the call failed */
        "  cmpq $-4095, %rax\n"
        "  jae 2f\n"
        "1:\n"
        "  ret\n"
        "2:\n"
        "  negl %eax\n"
        "  movl %eax, %edi\n"
        "  jmp shim_vfork_fail\n"
        ".size vfork, .-vfork\n"
        ".size __vfork, .-__vfork\n");
#endif
