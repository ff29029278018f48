/*
 * shim_binary.c - binary locks on the lock server (JDLS with BINARY): the
 * classic POSIX locks (fcntl F_SETLK/F_SETLKW/F_GETLK, lockf) a program
 * takes on any file that is not a jlock file, and flock(), become byte-range
 * locks on the server (RANGE_LOCK / RANGE_UNLOCK / RANGE_TEST), which keeps
 * POSIX semantics per owner (split, merge, upgrade/downgrade, partial
 * unlock).
 *
 * Identity: the file is (st_ino, -1) - device numbers differ between hosts,
 * as for record locks (DESIGN.md). The owner tag (the wire's tid):
 *   classic locks  the process: tag = pid (every thread is one owner, and
 *                  close() of ANY descriptor of the file drops them all);
 *   flock          the open file description: tag = 0x80000000 | fd of the
 *                  flock() call (the kernel has no user-visible OFD id).
 *                  Known gap: a dup()ed descriptor is another owner, and
 *                  the lock is released when THAT descriptor closes, not
 *                  the last one of the description.
 * A fork child is another owner by construction: its own broker connection
 * (shim_broker.c), so it inherits no lock, as POSIX says for classic locks.
 * (For flock the kernel would share the parent's lock with the child: a
 * known difference - the child cannot unlock the parent's flock.)
 *
 * Owns: the mapping from the libc calls to range frames, the lists of files
 * and descriptors this process holds binary locks through (for close()).
 */
#undef _FILE_OFFSET_BITS
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include "shim.h"
#include "../native/common/jdls_proto.h"

#define FLOCK_TAG 0x80000000U
#define MAX_BFILES 256
#define MAX_BFDS 256

/* Rule: the lists only with bmu held; the counts are also read without it
 * (atomic) for the empty fast path of close(). */
static pthread_mutex_t bmu = PTHREAD_MUTEX_INITIALIZER;
typedef struct bfile {
  dev_t st_dev;
  ino_t st_ino;
} bfile;
static bfile files[MAX_BFILES]; /* files with classic binary locks */
static unsigned nfiles;
typedef struct bfd {
  int fd;
  ino_t st_ino;
} bfd;
static bfd fds[MAX_BFDS];       /* descriptors with a flock lock */
static unsigned nfds;

void shim_binary_forget(void) {
  pthread_mutex_init(&bmu, NULL);
  nfiles = 0;
  nfds = 0;
}

static int fail(int e) {
  errno = e;
  return -1;
}

static int remember_file(const struct stat *st) {
  int rc = 0;
  pthread_mutex_lock(&bmu);
  unsigned i;
  for (i = 0; i < nfiles; i++)
    if (files[i].st_dev == st->st_dev && files[i].st_ino == st->st_ino) break;
  if (i == nfiles) {
    if (nfiles == MAX_BFILES) rc = -1;
    else {
      files[i] = (bfile){st->st_dev, st->st_ino};
      __atomic_store_n(&nfiles, nfiles + 1, __ATOMIC_RELEASE);
    }
  }
  pthread_mutex_unlock(&bmu);
  return rc;
}

/* Whether the process may hold classic binary locks on this file. */
static int holds_file(const struct stat *st) {
  if (__atomic_load_n(&nfiles, __ATOMIC_ACQUIRE) == 0) return 0;
  int found = 0;
  pthread_mutex_lock(&bmu);
  for (unsigned i = 0; i < nfiles && !found; i++)
    found = files[i].st_dev == st->st_dev && files[i].st_ino == st->st_ino;
  pthread_mutex_unlock(&bmu);
  return found;
}

static int remember_fd(int fd, ino_t ino) {
  int rc = 0;
  pthread_mutex_lock(&bmu);
  unsigned i;
  for (i = 0; i < nfds; i++)
    if (fds[i].fd == fd) break;
  if (i == nfds) {
    if (nfds == MAX_BFDS) rc = -1;
    else {
      fds[i] = (bfd){fd, ino};
      __atomic_store_n(&nfds, nfds + 1, __ATOMIC_RELEASE);
    }
  } else {
    fds[i].st_ino = ino;
  }
  pthread_mutex_unlock(&bmu);
  return rc;
}

static void forget_fd(int fd) {
  pthread_mutex_lock(&bmu);
  for (unsigned i = 0; i < nfds; i++)
    if (fds[i].fd == fd) {
      fds[i] = fds[nfds - 1];
      __atomic_store_n(&nfds, nfds - 1, __ATOMIC_RELEASE);
      break;
    }
  pthread_mutex_unlock(&bmu);
}

int shim_binary_fcntl(int fd, int cmd, struct flock *fl) {
  if (!fl) return fail(EFAULT);
  struct stat st;
  if (fstat(fd, &st) != 0) return -1;
  int64_t start;
  if (shim_abs_start(fd, fl, &start) != 0) return -1;
  int64_t len = fl->l_len < 0 ? -fl->l_len : fl->l_len;
  uint32_t tag = shim_pid();
  shim_answer a;
  if (cmd == F_SETLK || cmd == F_SETLKW) {
    if (fl->l_type == F_UNLCK) {
      /* Nothing locked in this file since its last close: nothing to
       * unlock (and no broker to start for it - programs unlock eagerly). */
      if (!holds_file(&st)) return 0;
      shim_broker_range(JDLS_FT_RANGE_UNLOCK, 0, 0, 0, tag, (uint64_t)st.st_ino, start, len, &a);
      return a.type == JDLS_FT_RELEASED ? 0 : fail(shim_broker_errno(&a));
    }
    if (fl->l_type != F_RDLCK && fl->l_type != F_WRLCK) return fail(EINVAL);
    /* Remember the file before locking: a close() racing in another thread must find it. */
    if (remember_file(&st) != 0) return fail(ENOLCK);
    int rc = shim_broker_range(JDLS_FT_RANGE_LOCK, 0, fl->l_type == F_RDLCK ? 1 : 2, cmd == F_SETLK, tag,
                               (uint64_t)st.st_ino, start, len, &a);
    if (rc == -EINTR) return fail(EINTR);
    if (a.type == JDLS_FT_GRANTED) return 0;
    if (a.type == JDLS_FT_LOCKED) return fail(EAGAIN);
    return fail(shim_broker_errno(&a));
  }
  /* F_GETLK */
  if (fl->l_type != F_RDLCK && fl->l_type != F_WRLCK) return fail(EINVAL);
  shim_broker_range(JDLS_FT_RANGE_TEST, 0, fl->l_type == F_RDLCK ? 1 : 2, 0, tag, (uint64_t)st.st_ino, start,
                    len, &a);
  if (a.type != JDLS_FT_RANGE_RESULT) return fail(shim_broker_errno(&a));
  if (a.code == 1) {
    fl->l_type = a.holder_mode == 2 ? F_WRLCK : F_RDLCK;
    fl->l_whence = SEEK_SET;
    fl->l_start = a.range_start;
    fl->l_len = a.range_len;
    fl->l_pid = (pid_t)a.holder_pid;
  } else {
    fl->l_type = F_UNLCK;
  }
  return 0;
}

int shim_binary_flock(int fd, int op) {
  struct stat st;
  if (fstat(fd, &st) != 0) return -1;
  uint32_t tag = FLOCK_TAG | (uint32_t)fd;
  shim_answer a;
  int what = op & (LOCK_SH | LOCK_EX | LOCK_UN);
  if (what == LOCK_UN) {
    shim_broker_range(JDLS_FT_RANGE_UNLOCK, 0, 0, 0, tag, (uint64_t)st.st_ino, 0, 0, &a);
    forget_fd(fd);
    return a.type == JDLS_FT_RELEASED ? 0 : fail(shim_broker_errno(&a));
  }
  if (what != LOCK_SH && what != LOCK_EX) return fail(EINVAL);
  if (remember_fd(fd, st.st_ino) != 0) return fail(ENOLCK);
  /* The whole file, [0, infinity): flock locks do not split. */
  int rc = shim_broker_range(JDLS_FT_RANGE_LOCK, 0, what == LOCK_SH ? 1 : 2, (op & LOCK_NB) != 0, tag,
                             (uint64_t)st.st_ino, 0, 0, &a);
  if (rc == -EINTR) return fail(EINTR);
  if (a.type == JDLS_FT_GRANTED) return 0;
  if (a.type == JDLS_FT_LOCKED) return fail(EWOULDBLOCK);
  return fail(shim_broker_errno(&a));
}

int shim_binary_holds(void) {
  return __atomic_load_n(&nfiles, __ATOMIC_ACQUIRE) != 0 || __atomic_load_n(&nfds, __ATOMIC_ACQUIRE) != 0;
}

void shim_binary_on_close(int fd) {
  if (__atomic_load_n(&nfiles, __ATOMIC_ACQUIRE) == 0 && __atomic_load_n(&nfds, __ATOMIC_ACQUIRE) == 0)
    return;
  if (shim_foreign()) return; /* a vfork child: the parent's locks (shim_real.c) */
  struct stat st;
  if (fstat(fd, &st) != 0) return;
  int classic = 0, flk = 0;
  pthread_mutex_lock(&bmu);
  for (unsigned i = 0; i < nfiles; i++)
    if (files[i].st_dev == st.st_dev && files[i].st_ino == st.st_ino) {
      files[i] = files[nfiles - 1];
      __atomic_store_n(&nfiles, nfiles - 1, __ATOMIC_RELEASE);
      classic = 1;
      break;
    }
  for (unsigned i = 0; i < nfds; i++)
    if (fds[i].fd == fd) {
      fds[i] = fds[nfds - 1];
      __atomic_store_n(&nfds, nfds - 1, __ATOMIC_RELEASE);
      flk = 1;
      break;
    }
  pthread_mutex_unlock(&bmu);
  shim_answer a;
  /* POSIX: close() of any descriptor of the file drops all of the process's
   * classic locks on it. */
  if (classic) shim_broker_range(JDLS_FT_RANGE_UNLOCK, 0, 0, 0, shim_pid(), (uint64_t)st.st_ino, 0, 0, &a);
  if (flk) shim_broker_range(JDLS_FT_RANGE_UNLOCK, 0, 0, 0, FLOCK_TAG | (uint32_t)fd, (uint64_t)st.st_ino, 0, 0, &a);
}
