/*
 * shim_interpose.c - the libc entry points the shim replaces: fcntl,
 * fcntl64, __fcntl, lockf, lockf64, flock, close - and the implicit closes:
 * dup2, dup3, close_range, closefrom, fclose, freopen(64).
 *
 * Each one: resolve the real function once; inside the shim (recursion
 * guard) or for anything that is not a classic POSIX lock on a jlock file
 * routed to the table, call the real function with the arguments untouched.
 * Owns: argument decoding and the fast paths. Does not own: the decision
 * (shim_route.c) or the emulation (shim_record.c).
 */
/* Trap: node-gyp compiles everything with -D_FILE_OFFSET_BITS=64, and the
 * glibc headers then turn `fcntl` into `fcntl64` and `lockf` into `lockf64`:
 * defining both would be "symbol `fcntl64' is already defined". binding.gyp
 * removes the define for this target ("defines!"); the #undef is the second
 * belt. On x86_64 off_t is 64 bits either way, so struct flock is the same. */
#undef _FILE_OFFSET_BITS
#define _GNU_SOURCE
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <linux/close_range.h>
#include <sys/file.h>
#include <sys/stat.h>
#include "jdls.h"
#include "shim.h"

/* Where a classic lock on fd goes: SHIM_TO_TABLE / SHIM_TO_SERVER for a
 * record lock (a jlock file; inode/dev filled); SHIM_TO_SERVER with *binary
 * for any other file when JDLS has BINARY; else SHIM_TO_OS. */
/* An unlock trusts the descriptor's cached class; a lock or a probe
 * validates it with one fstat, left in r->st (shim_classify.c); r->st_ok
 * says whether it was filled. `unlock` is a function: it reads the caller's
 * struct flock, which only the routed path may touch (on the OS route a bad
 * pointer is the kernel's EFAULT, not our crash). */
typedef int (*unlock_fn)(const void *arg);
static int fl_unlock(const void *arg) {
  const struct flock *fl = arg;
  return fl && fl->l_type == F_UNLCK;
}
static int yes(const void *arg) { (void)arg; return 1; }
static int no(const void *arg) { (void)arg; return 0; }
typedef struct fd_route {
  uint64_t inode;
  int64_t dev;
  int binary;
  int st_ok;
  struct stat st;
} fd_route;
static enum shim_dest route_fd(int fd, unlock_fn unlock, const void *arg, fd_route *r) {
  r->binary = 0;
  r->st_ok = 0;
  /* Route first: with no table in service and no JDLS nothing is looked at
   * - once this process is registered for OS record locks. Before that, a
   * record lock must be seen (registration, jdls_service.c). */
  enum shim_dest d = shim_route(SHIM_RECORD, JDLS_ORIGIN_INTERNAL);
  enum shim_dest b = shim_route(SHIM_BINARY, JDLS_ORIGIN_INTERNAL);
  if (d == SHIM_TO_OS && b == SHIM_TO_OS && shim_route_os_settled()) return SHIM_TO_OS;
  int rec;
  if (unlock(arg)) {
    rec = shim_classify_fd_trusted(fd, &r->inode, &r->dev);
  } else {
    rec = shim_classify_fd_checked(fd, &r->st, &r->inode, &r->dev);
    /* Not open: the kernel says EBADF. */
    if (rec < 0) return SHIM_TO_OS;
    r->st_ok = 1;
  }
  if (rec) return shim_route_record(JDLS_ORIGIN_INTERNAL);
  if (b != SHIM_TO_SERVER) return SHIM_TO_OS;
  r->binary = 1;
  return SHIM_TO_SERVER;
}

/* A classic lock command on a routed descriptor. */
static int routed_fcntl(int fd, int cmd, struct flock *fl, enum shim_dest d, const fd_route *r) {
  int binary = r->binary;
  uint64_t inode = r->inode;
  int64_t dev = r->dev;
  if (binary) {
    /* A vfork child would speak on its parent's connection, as its parent. */
    if (shim_in_vfork) {
      errno = ENOLCK;
      return -1;
    }
    return shim_binary_fcntl(fd, cmd, fl);
  }
  return shim_record_fcntl(fd, cmd, fl, inode, dev, d == SHIM_TO_SERVER, r->st_ok ? &r->st : NULL);
}

/* The common non-lock commands, straight to the kernel. glibc's fcntl
 * passes exactly these to the system call unchanged (F_GETOWN, for one, it
 * does not: that goes through real_fcntl); going through real_fcntl added
 * a resolve check, an indirect call and glibc's own varargs dispatch: ~8 %
 * on an F_GETFL (docs/benchmarks.md, "The shim"; goal within 5 %). */
#if defined(__x86_64__)
#include <sys/syscall.h>
static inline int direct_fcntl(int fd, int cmd, void *arg) {
  long ret;
  __asm__ volatile("syscall"
                   : "=a"(ret)
                   : "a"((long)SYS_fcntl), "D"((long)fd), "S"((long)cmd), "d"((long)arg)
                   : "rcx", "r11", "memory");
  if (ret < 0 && ret > -4096) {
    errno = (int)-ret;
    return -1;
  }
  return (int)ret;
}
#define PASS_STRAIGHT(cmd)                                                                     \
  ((cmd) == F_GETFL || (cmd) == F_SETFL || (cmd) == F_GETFD || (cmd) == F_SETFD || \
   (cmd) == F_DUPFD || (cmd) == F_DUPFD_CLOEXEC)
#else
#define PASS_STRAIGHT(cmd) 0
#define direct_fcntl(fd, cmd, arg) (-1)
#endif

/* --- Signal handlers ------------------------------------------------------------
 * A classic lock call while this thread is inside the shim: the shim's own
 * code takes no classic locks, so this is a signal handler that interrupted
 * it. It cannot be served (the interrupted code may hold the held-file
 * mutex, a table group mutex, or the broker's reader role: the thread would
 * wait for itself), and the kernel is the wrong mechanism for a lock the
 * shim routes elsewhere (other processes look for it in the table or on the
 * server). So it fails loudly with ENOLCK ("no locks available"); a call the
 * shim would leave to the kernel anyway goes there. Before the route is
 * decided (the handler interrupted the decision), a jlock file counts as
 * routed. */
static int routed_while_busy(int fd, int binary_only) {
  uint64_t i;
  int64_t v;
  if (!shim_route_decided()) return !binary_only && shim_classify_fd_trusted(fd, &i, &v);
  enum shim_dest d = shim_route(SHIM_RECORD, JDLS_ORIGIN_INTERNAL);
  enum shim_dest b = shim_route(SHIM_BINARY, JDLS_ORIGIN_INTERNAL);
  if (binary_only) return b == SHIM_TO_SERVER;
  /* A record lock on the OS route before this process registered would
   * need the registration (a mutex the interrupted code may hold): refused
   * like a routed one. */
  int settled = shim_route_os_settled();
  if (d == SHIM_TO_OS && b == SHIM_TO_OS && settled) return 0;
  if (shim_classify_fd_trusted(fd, &i, &v)) return d != SHIM_TO_OS || !settled;
  return b == SHIM_TO_SERVER;
}

static int do_fcntl(int fd, int cmd, void *arg) {
  if (PASS_STRAIGHT(cmd)) return direct_fcntl(fd, cmd, arg);
  shim_resolve();
  /* Only the three classic lock commands are ever looked at. OFD commands
   * (F_OFD_*) and everything else pass straight through: varargs are read
   * as one void * (glibc does the same) and forwarded unchanged. */
  if (cmd != F_SETLK && cmd != F_SETLKW && cmd != F_GETLK) return real_fcntl(fd, cmd, arg);
  SHIM_RECOVER();
  if (shim_busy) {
    if (routed_while_busy(fd, 0)) {
      errno = ENOLCK;
      return -1;
    }
    return real_fcntl(fd, cmd, arg);
  }
  SHIM_ENTER();
  int rc, saved;
  fd_route r;
  struct flock *fl = (struct flock *)arg;
  enum shim_dest d = route_fd(fd, cmd == F_GETLK ? no : fl_unlock, fl, &r);
  if (d == SHIM_REFUSED) {
    errno = ENOLCK;
    rc = -1;
  } else if (d != SHIM_TO_OS) {
    rc = routed_fcntl(fd, cmd, fl, d, &r);
  } else {
    rc = real_fcntl(fd, cmd, arg);
  }
  saved = errno;
  SHIM_LEAVE();
  errno = saved;
  return rc;
}

SHIM_EXPORT int fcntl(int fd, int cmd, ...) {
  va_list ap;
  va_start(ap, cmd);
  void *arg = va_arg(ap, void *);
  va_end(ap);
  return do_fcntl(fd, cmd, arg);
}

SHIM_EXPORT int fcntl64(int fd, int cmd, ...) {
  va_list ap;
  va_start(ap, cmd);
  void *arg = va_arg(ap, void *);
  va_end(ap);
  return do_fcntl(fd, cmd, arg);
}

SHIM_EXPORT int __fcntl(int fd, int cmd, ...) {
  va_list ap;
  va_start(ap, cmd);
  void *arg = va_arg(ap, void *);
  va_end(ap);
  return do_fcntl(fd, cmd, arg);
}

/* Trap: libc's lockf calls fcntl internally, not through the PLT, so the
 * fcntl wrapper above never sees it: lockf/lockf64 are wrapped themselves
 * and mapped as glibc maps them (range [cur, cur+len), F_LOCK = SETLKW
 * write, F_TLOCK = SETLK write, F_ULOCK = unlock, F_TEST = GETLK read). */
static int do_lockf(int fd, int cmd, off_t len) {
  shim_resolve();
  SHIM_RECOVER();
  if (shim_busy) {
    if (routed_while_busy(fd, 0)) {
      errno = ENOLCK;
      return -1;
    }
    return real_lockf(fd, cmd, len);
  }
  SHIM_ENTER();
  int rc;
  fd_route r;
  enum shim_dest d = route_fd(fd, cmd == F_ULOCK ? yes : no, NULL, &r);
  if (d == SHIM_REFUSED) {
    errno = ENOLCK;
    rc = -1;
  } else if (d == SHIM_TO_OS) {
    rc = real_lockf(fd, cmd, len);
  } else {
    struct flock fl = {.l_whence = SEEK_CUR, .l_start = 0, .l_len = len};
    switch (cmd) {
      case F_LOCK: fl.l_type = F_WRLCK; rc = routed_fcntl(fd, F_SETLKW, &fl, d, &r); break;
      case F_TLOCK: fl.l_type = F_WRLCK; rc = routed_fcntl(fd, F_SETLK, &fl, d, &r); break;
      case F_ULOCK: fl.l_type = F_UNLCK; rc = routed_fcntl(fd, F_SETLK, &fl, d, &r); break;
      case F_TEST:
        /* Exactly glibc's answer (misc/lockf64.c): it probes for a READ
         * lock, so another process's read lock is no conflict, and a lock
         * reported with the caller's own pid counts as free. */
        fl.l_type = F_RDLCK;
        rc = routed_fcntl(fd, F_GETLK, &fl, d, &r);
        if (rc == 0 && fl.l_type != F_UNLCK && (uint32_t)fl.l_pid != shim_pid()) {
          errno = EACCES;
          rc = -1;
        }
        break;
      default: errno = EINVAL; rc = -1;
    }
  }
  int saved = errno;
  SHIM_LEAVE();
  errno = saved;
  return rc;
}

SHIM_EXPORT int lockf(int fd, int cmd, off_t len) { return do_lockf(fd, cmd, len); }
SHIM_EXPORT int lockf64(int fd, int cmd, off_t len) { return do_lockf(fd, cmd, len); }

/* flock() locks are BINARY whatever the file (they are not POSIX record
 * locks and belong to the open file description): the OS, unless JDLS with
 * BINARY sends binary locks to the lock service (shim_binary.c). */
SHIM_EXPORT int flock(int fd, int op) {
  shim_resolve();
  SHIM_RECOVER();
  if (shim_busy) {
    if (routed_while_busy(fd, 1)) {
      errno = ENOLCK;
      return -1;
    }
    return real_flock(fd, op);
  }
  if (shim_route(SHIM_BINARY, JDLS_ORIGIN_INTERNAL) != SHIM_TO_SERVER) return real_flock(fd, op);
  if (shim_in_vfork) {
    errno = ENOLCK; /* the connection is the parent's */
    return -1;
  }
  SHIM_ENTER();
  int rc = shim_binary_flock(fd, op);
  int saved = errno;
  SHIM_LEAVE();
  errno = saved;
  return rc;
}

/* --- closes ------------------------------------------------------------------
 * Trap: close() of ANY descriptor of a file drops all of the process's
 * classic locks on it - also emulated ones, or a program that closes a
 * second descriptor of its lock file would keep locks the kernel would have
 * dropped. Released before the real close, while fd still names the file.
 * And close() is not the only close: dup2/dup3 close their target,
 * close_range/closefrom close many, fclose/freopen close through glibc's
 * internal entry (not the `close` symbol, so the close() below never sees
 * them). Each is interposed and releases first. Out of reach (docs/shim.md):
 * raw system calls, glibc-internal closes of descriptors the program did not
 * open itself (they cannot name a locked file... unless reused), fcloseall,
 * and close-on-exec at exec. */
static void before_close(int fd) {
  shim_classify_forget(fd);
  SHIM_RECOVER();
  if (fd < 0) return;
  if (shim_busy) {
    /* A signal handler's close while the thread is inside the shim (the
     * shim's own closes are of its own descriptors, never in the held
     * lists): released when the thread leaves the shim. */
    shim_defer_close(fd);
    return;
  }
  if (!shim_record_holds() && !shim_binary_holds()) return;
  SHIM_ENTER();
  int saved = errno;
  shim_record_on_close(fd);
  shim_binary_on_close(fd);
  errno = saved;
  SHIM_LEAVE();
}

static int holds_any(void) { return !shim_busy && (shim_record_holds() || shim_binary_holds()); }

/* Every open descriptor in [lo, hi] (close_range, closefrom), from
 * /proc/self/fd with raw system calls: no malloc, no stdio, nothing that
 * comes back into the shim. Only when the process holds emulated locks. */
struct shim_dirent64 {
  uint64_t d_ino;
  int64_t d_off;
  unsigned short d_reclen;
  unsigned char d_type;
  char d_name[];
};
static void before_close_range(unsigned lo, unsigned hi) {
  shim_classify_forget_range(lo, hi);
  if (!holds_any()) return;
  int dfd = (int)syscall(SYS_openat, AT_FDCWD, "/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) return;
  char buf[4096] __attribute__((aligned(8)));
  for (;;) {
    long n = syscall(SYS_getdents64, dfd, buf, sizeof buf);
    if (n <= 0) break;
    for (long off = 0; off < n;) {
      struct shim_dirent64 *d = (struct shim_dirent64 *)(buf + off);
      off += d->d_reclen;
      const char *c = d->d_name;
      if (*c < '0' || *c > '9') continue;
      unsigned long v = 0;
      for (; *c >= '0' && *c <= '9'; c++) v = v * 10 + (unsigned long)(*c - '0');
      if ((int)v != dfd && v >= lo && v <= hi) before_close((int)v);
    }
  }
  syscall(SYS_close, dfd);
}

int shim_owns_fd(int fd) {
  return shim_broker_owns_fd(fd) || shim_api_owns_fd(fd) || shim_binapi_owns_fd(fd) || shim_route_owns_fd(fd);
}

/* The shim's own descriptors, at most max, into out; their count. */
static int shim_own_fds(int *out, int max) {
  int n = 0;
  int b = shim_broker_fd();
  if (b >= 0 && n < max) out[n++] = b;
  int b2 = shim_broker_fd2();
  if (b2 >= 0 && n < max) out[n++] = b2;
  int x = shim_binapi_fd();
  if (x >= 0 && n < max) out[n++] = x;
  int r = shim_route_fd();
  if (r >= 0 && n < max) out[n++] = r;
  return n + shim_api_fds(out + n, max - n);
}

SHIM_EXPORT int close(int fd) {
  shim_resolve();
  /* Trap: programs that close every descriptor (daemons, some shells) would
   * close the broker socket, and the server would release all of this
   * process's locks while it believes it holds them; the same for the C
   * API's lock-file descriptions (their OFD locks), and the OS-route marker
   * (a table could enter service under this process's OS locks). They are ours: such a
   * close() is reported done and the descriptor stays open (close-on-exec,
   * at the top of the range). A vfork child closes its own copies. */
  if (!shim_busy && !shim_in_vfork && shim_owns_fd(fd)) return 0;
  before_close(fd);
  return real_close(fd);
}

/* dup2/dup3 close `nfd` only when they succeed: not when `ofd` is not open
 * (EBADF), and never when ofd == nfd. */
static int fd_open(int fd) { return (int)syscall(SYS_fcntl, fd, F_GETFD) >= 0; }

SHIM_EXPORT int dup2(int ofd, int nfd) {
  shim_resolve();
  if (ofd != nfd) shim_classify_forget(nfd);
  if (ofd != nfd && holds_any() && fd_open(ofd)) before_close(nfd);
  return real_dup2(ofd, nfd);
}

SHIM_EXPORT int dup3(int ofd, int nfd, int flags) {
  shim_resolve();
  if (ofd != nfd) shim_classify_forget(nfd);
  if (ofd != nfd && holds_any() && fd_open(ofd)) before_close(nfd);
  return real_dup3(ofd, nfd, flags);
}

/* close_range over the shim's own descriptors (close() above): the range
 * is closed in pieces around them (the broker socket, jexec, the C API's
 * lock files: a handful). */
static int close_range_around_own(unsigned lo, unsigned hi, int flags) {
  if (shim_busy || shim_in_vfork) return real_close_range(lo, hi, flags);
  int own[260];
  int n = shim_own_fds(own, 260);
  /* ascending (insertion sort: a handful) */
  for (int i = 1; i < n; i++)
    for (int j = i; j > 0 && own[j - 1] > own[j]; j--) {
      int t = own[j];
      own[j] = own[j - 1];
      own[j - 1] = t;
    }
  int rc = 0;
  unsigned cur = lo;
  for (int i = 0; i < n; i++) {
    unsigned o = (unsigned)own[i];
    if (o < cur || o > hi) continue;
    if (o > cur && real_close_range(cur, o - 1, flags) != 0) rc = -1;
    if (o == hi) return rc;
    cur = o + 1;
  }
  if (real_close_range(cur, hi, flags) != 0) rc = -1;
  return rc;
}

SHIM_EXPORT int close_range(unsigned lo, unsigned hi, int flags) {
  shim_resolve();
  /* CLOSE_RANGE_CLOEXEC closes nothing now (at exec: out of reach). */
  if (!(flags & CLOSE_RANGE_CLOEXEC) && lo <= hi) before_close_range(lo, hi);
  return close_range_around_own(lo, hi, flags);
}

SHIM_EXPORT void closefrom(int lo) {
  shim_resolve();
  if (lo < 0) return real_closefrom(lo);
  before_close_range((unsigned)lo, ~0U);
  /* glibc's closefrom is close_range(lo, ~0U, 0), with a /proc walk where
   * the system call is missing */
  if (close_range_around_own((unsigned)lo, ~0U, 0) != 0) real_closefrom(lo);
}

/* A stream's buffered data is written before its locks go, as with the
 * kernel (fclose writes, then closes): flushed here first, then released. */
static void before_stream_close(FILE *f) {
  if (!f) return;
  int fd = fileno(f);
  if (fd < 0) return;
  shim_classify_forget(fd);
  if (!holds_any()) return;
  fflush(f);
  before_close(fd);
}

SHIM_EXPORT int fclose(FILE *f) {
  shim_resolve();
  before_stream_close(f);
  return real_fclose(f);
}

/* freopen closes the stream's descriptor (with a NULL path too: glibc
 * reopens the file and closes the old descriptor - any close drops the
 * locks). */
SHIM_EXPORT FILE *freopen(const char *path, const char *mode, FILE *f) {
  shim_resolve();
  before_stream_close(f);
  return real_freopen(path, mode, f);
}
SHIM_EXPORT FILE *freopen64(const char *path, const char *mode, FILE *f) {
  return freopen(path, mode, f);
}
