/*
 * shim_classify.c - record or binary: is a descriptor open on a record-lock
 * file?
 *
 * A jBASE runtime in OS-lock mode takes a record lock as a POSIX lock on one
 * byte of <lockdir>/jlock_<inode 8 hex>_<device 8 hex> (jdls_oslock.h). Those
 * are RECORD locks; every other POSIX lock (hashed-file groups, whole files,
 * execution-lock pseudo files, any program's own lock files) is BINARY.
 *
 * The lock directory: $JDLS_LOCKDIR, else /tmp/jbase (the guide's default),
 * read once per process and resolved with realpath() when it exists, because
 * the descriptor's path comes from /proc/self/fd, which is always canonical.
 * Owns: the lock directory, the name test and the per-descriptor cache of
 * its answers (below). Does not own: routing.
 */
#undef _FILE_OFFSET_BITS
#define _GNU_SOURCE
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>
#include "jdls.h"
#include "shim.h"
#include "../native/common/jdls_oslock.h"

static pthread_once_t once = PTHREAD_ONCE_INIT;
static char lockdir[PATH_MAX];

static void init_lockdir(void) {
  const char *d = getenv("JDLS_LOCKDIR");
  if (!d || !*d) d = JDLS_OSL_DEFAULT_DIR;
  if (!realpath(d, lockdir)) {
    /* Not there (yet): compare with the name as given. */
    snprintf(lockdir, sizeof lockdir, "%s", d);
  }
  size_t n = strlen(lockdir);
  while (n > 1 && lockdir[n - 1] == '/') lockdir[--n] = 0;
}

const char *shim_lockdir(void) {
  pthread_once(&once, init_lockdir);
  return lockdir;
}

static int hex8(const char *s, uint32_t *out) {
  uint32_t v = 0;
  for (int i = 0; i < 8; i++) {
    char c = s[i];
    int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
    if (d < 0) return 0;
    v = v << 4 | (uint32_t)d;
  }
  *out = v;
  return 1;
}

SHIM_EXPORT int jdls_shim_classify_path(const char *path, uint64_t *inode, int64_t *dev) {
  const char *dir = shim_lockdir();
  size_t dl = strlen(dir);
  if (strncmp(path, dir, dl) != 0 || path[dl] != '/') return 0;
  const char *name = path + dl + 1;
  uint32_t ino, dv;
  /* exactly "jlock_" 8 hex "_" 8 hex, nothing after */
  if (strlen(name) != 23 || strncmp(name, "jlock_", 6) != 0 || name[14] != '_') return 0;
  if (!hex8(name + 6, &ino) || !hex8(name + 15, &dv)) return 0;
  if (inode) *inode = ino;
  if (dev) *dev = dv == 0xffffffffU ? -1 : (int64_t)dv;
  return 1;
}

static int classify_by_name(int fd, uint64_t *inode, int64_t *dev) {
  char link[64], path[PATH_MAX];
  snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
  ssize_t n = readlink(link, path, sizeof path - 1);
  if (n <= 0) return 0;
  path[n] = 0;
  return jdls_shim_classify_path(path, inode, dev);
}

/* --- the per-descriptor cache -------------------------------------------------
 * Why: the name test costs a readlink of /proc/self/fd/N (a path walk in the
 * kernel: ~3 us here, more than the kernel's own lock pair), and a runtime
 * locks the same few descriptors over and over. So the answer is kept per
 * descriptor number, with the open file's (st_dev, st_ino) it was given for.
 *
 * The trap: a descriptor number is reused after ANY close, and a stale
 * answer would send a binary lock to the table or a record lock to the
 * kernel - two holders. How the cache stays right:
 *   - every lock and probe (F_SETLK/F_SETLKW with a read or write lock,
 *     F_GETLK, lockf) VALIDATES the entry with one fstat() (the raw system
 *     call): a mismatch, or no entry, classifies by name again. This catches
 *     everything, the closes the shim cannot see included (a raw
 *     syscall(SYS_close) and a reopen onto another file, fcloseall); the
 *     fstat is needed anyway (the held-file list is keyed by st_dev/st_ino).
 *   - every close the shim sees (close, dup2/dup3 target, close_range,
 *     closefrom, fclose, freopen) drops the entry first (shim_classify_forget).
 *   - an UNLOCK trusts a valid entry without the fstat. It can only be stale
 *     after a close the shim did not see, and that close already left the
 *     locks where the kernel would have dropped them (docs/shim.md, "out of
 *     reach"); the stale unlock then releases on the old file's mechanism
 *     what that close should have released, and an unlock never makes a
 *     second holder. Rejected: validating unlocks too - a second system call
 *     per pair, ~1.5 us on the measured VM, half of the kernel's whole pair.
 *   - a vfork child shares this memory but has its own descriptor table: it
 *     neither reads nor writes the cache (its answers could be wrong for the
 *     parent, and the parent trusts them on unlock).
 *   - exec replaces the memory; a fork child copies descriptors and cache
 *     together.
 * Known limit: the class of an open file is its name at classification; a
 * jlock file renamed while open keeps its class (the runtime never does).
 * Entries are written under a per-entry sequence number (odd while being
 * written); a reader that sees it change treats the entry as absent. */
#define FD_CACHE 4096
enum { FDC_NONE = 0, FDC_RECORD = 1, FDC_OTHER = 2 };
typedef struct fd_entry {
  uint32_t seq;
  uint32_t cls;
  uint64_t st_dev, st_ino;
  uint64_t inode;
  int64_t dev;
} fd_entry;
static fd_entry fdc[FD_CACHE];

/* A consistent copy of fd's entry: 1, or 0 when absent/being written. */
static int fdc_read(int fd, fd_entry *out) {
  if (fd < 0 || fd >= FD_CACHE) return 0;
  fd_entry *e = &fdc[fd];
  uint32_t s1 = __atomic_load_n(&e->seq, __ATOMIC_ACQUIRE);
  if (s1 & 1) return 0;
  out->cls = __atomic_load_n(&e->cls, __ATOMIC_RELAXED);
  out->st_dev = __atomic_load_n(&e->st_dev, __ATOMIC_RELAXED);
  out->st_ino = __atomic_load_n(&e->st_ino, __ATOMIC_RELAXED);
  out->inode = __atomic_load_n(&e->inode, __ATOMIC_RELAXED);
  out->dev = __atomic_load_n(&e->dev, __ATOMIC_RELAXED);
  __atomic_thread_fence(__ATOMIC_ACQUIRE);
  return __atomic_load_n(&e->seq, __ATOMIC_RELAXED) == s1 && out->cls != FDC_NONE;
}

static void fdc_write(int fd, uint32_t cls, const struct stat *st, uint64_t inode, int64_t dev) {
  if (fd < 0 || fd >= FD_CACHE || shim_in_vfork) return;
  fd_entry *e = &fdc[fd];
  uint32_t s = __atomic_load_n(&e->seq, __ATOMIC_RELAXED);
  /* Another thread is writing it: leave it to that one. */
  if ((s & 1) || !__atomic_compare_exchange_n(&e->seq, &s, s + 1, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
    return;
  __atomic_thread_fence(__ATOMIC_RELEASE);
  __atomic_store_n(&e->cls, cls, __ATOMIC_RELAXED);
  __atomic_store_n(&e->st_dev, st ? (uint64_t)st->st_dev : 0, __ATOMIC_RELAXED);
  __atomic_store_n(&e->st_ino, st ? (uint64_t)st->st_ino : 0, __ATOMIC_RELAXED);
  __atomic_store_n(&e->inode, inode, __ATOMIC_RELAXED);
  __atomic_store_n(&e->dev, dev, __ATOMIC_RELAXED);
  __atomic_store_n(&e->seq, s + 2, __ATOMIC_RELEASE);
}

void shim_classify_forget(int fd) {
  if (fd < 0 || fd >= FD_CACHE || shim_in_vfork) return;
  /* Cheap for the descriptors never classified (most closes). */
  if (__atomic_load_n(&fdc[fd].cls, __ATOMIC_RELAXED) == FDC_NONE) return;
  fdc_write(fd, FDC_NONE, NULL, 0, 0);
  /* A writer in progress skipped the store above: it is writing an answer
   * for the descriptor being closed, which the next lock's fstat rejects. */
}

void shim_classify_forget_range(unsigned lo, unsigned hi) {
  if (shim_in_vfork || lo >= FD_CACHE) return;
  unsigned end = hi < FD_CACHE - 1 ? hi : FD_CACHE - 1;
  for (unsigned fd = lo; fd <= end; fd++) shim_classify_forget((int)fd);
}

int shim_classify_fd_checked(int fd, struct stat *st, uint64_t *inode, int64_t *dev) {
  if (syscall(SYS_fstat, fd, st) != 0) return -1;
  fd_entry e;
  if (!shim_in_vfork && fdc_read(fd, &e) && e.st_dev == (uint64_t)st->st_dev && e.st_ino == (uint64_t)st->st_ino) {
    if (e.cls != FDC_RECORD) return 0;
    *inode = e.inode;
    *dev = e.dev;
    return 1;
  }
  uint64_t ino = 0;
  int64_t dv = 0;
  int r = classify_by_name(fd, &ino, &dv);
  fdc_write(fd, r ? FDC_RECORD : FDC_OTHER, st, ino, dv);
  if (r) {
    *inode = ino;
    *dev = dv;
  }
  return r;
}

int shim_classify_fd_trusted(int fd, uint64_t *inode, int64_t *dev) {
  fd_entry e;
  if (!shim_in_vfork && fdc_read(fd, &e)) {
    if (e.cls != FDC_RECORD) return 0;
    *inode = e.inode;
    *dev = e.dev;
    return 1;
  }
  struct stat st;
  int r = shim_classify_fd_checked(fd, &st, inode, dev);
  return r < 0 ? 0 : r;
}

int shim_classify_fd(int fd, uint64_t *inode, int64_t *dev) { return shim_classify_fd_trusted(fd, inode, dev); }
