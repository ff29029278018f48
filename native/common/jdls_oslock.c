/*
 * jdls_oslock.c - OS file locks on Linux OFD locks (see jdls_oslock.h).
 *
 * Divisions (keep them, as in the header):
 *   1. checks and helpers
 *   2. record-lock naming
 *   3. the byte-range primitive
 *   4. interrupting a blocked wait
 */
#define _GNU_SOURCE
#include "jdls_oslock.h"
#include "jdls_hash.h"
#include "jdls_table.h" /* jdls_release_dir: the service's user owns it */

#include <errno.h>
#include <stdlib.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ===== 1. checks and helpers ============================================ */

_Static_assert(JDLS_OSL_READ == F_RDLCK, "JDLS_OSL_READ is F_RDLCK");
_Static_assert(JDLS_OSL_WRITE == F_WRLCK, "JDLS_OSL_WRITE is F_WRLCK");
_Static_assert(JDLS_OSL_UNLOCK == F_UNLCK, "JDLS_OSL_UNLOCK is F_UNLCK");
_Static_assert(sizeof(off_t) == 8, "64-bit offsets");

/* Every OFD call starts from a zeroed struct: the kernel rejects an OFD
 * request whose l_pid is not 0 (EINVAL), and l_whence must be SEEK_SET. */
static void fill(struct flock *fl, int64_t start, int64_t len, int type) {
  memset(fl, 0, sizeof *fl);
  fl->l_type = (short)type;
  fl->l_whence = SEEK_SET;
  fl->l_start = (off_t)start;
  fl->l_len = (off_t)len;
}

static int valid(int64_t start, int64_t len, int type) {
  if (type != JDLS_OSL_READ && type != JDLS_OSL_WRITE && type != JDLS_OSL_UNLOCK) return 0;
  if (start < 0 || len < 0) return 0;
  /* the last byte, start + len - 1, must be a valid off_t */
  if (len > 0 && start > INT64_MAX - len + 1) return 0;
  return 1;
}

/* ===== 2. record-lock naming ============================================ */

/*
 * Who may own a lock directory, and why it matters. Whoever owns the
 * directory can delete or replace any file in it, and in a world-writable
 * directory without the sticky bit anybody can. Deleting a lock file while
 * it is locked splits its locks: the next process creates a new file (a new
 * inode) and locks that, while the old holder still holds the old one - two
 * holders of one lock. So a directory is trusted only when its owner is
 * root, the service's user (the owner of the installation directory,
 * jdls_release_dir) or this process's euid, and others cannot write to it
 * unless it is sticky (jBASE's shared 01777, owned by root). A user who made
 * /tmp/jbase first owns it: refused, not silently used.
 *
 * A symlink at the configured path is followed only if root, the service's
 * user or we made it: in a sticky /tmp, a link planted by another user
 * would send our lock files where that user chose.
 */
static long service_uid(void) {
  char dir[4096];
  struct stat st;
  if (jdls_release_dir(dir, sizeof dir) < 0 || stat(dir, &st) != 0) return -1;
  return (long)st.st_uid;
}

static int trusted_uid(uid_t uid) {
  return uid == 0 || uid == geteuid() || (long)uid == service_uid();
}

static int dir_trusted(const struct stat *st) {
  if (!S_ISDIR(st->st_mode)) return -ENOTDIR;
  if (!trusted_uid(st->st_uid)) return -EPERM;
  if ((st->st_mode & S_IWOTH) && !(st->st_mode & S_ISVTX)) return -EPERM;
  return 0;
}

int jdls_osl_check_dir(const char *dir) {
  struct stat st;
  if (lstat(dir, &st) != 0) return -errno;
  if (S_ISLNK(st.st_mode)) {
    if (!trusted_uid(st.st_uid)) return -EPERM;
    if (stat(dir, &st) != 0) return -errno;
  }
  return dir_trusted(&st);
}

/*
 * The mode a missing lock directory is created with follows its parent:
 *   - a world-writable parent (/tmp): jBASE's shared mode, 01777 - every
 *     user's processes create lock files there, the sticky bit keeps them
 *     from deleting each other's (but not their own: docs/security.md);
 *   - any other parent (the installation directory, /var/lib/...): the
 *     service's mode, 02770 with the parent's group (the jdls group) - only
 *     root, the owner and the group's members can reach it, and files
 *     created in it keep the group (setgid).
 */
static int make_dir(const char *dir) {
  char parent[JDLS_OSL_PATH_MAX];
  size_t n = strlen(dir);
  while (n > 1 && dir[n - 1] == '/') n--;
  while (n > 0 && dir[n - 1] != '/') n--;
  while (n > 1 && dir[n - 1] == '/') n--;
  if (n == 0) snprintf(parent, sizeof parent, ".");
  else if (n >= sizeof parent) return -ENAMETOOLONG;
  else {
    memcpy(parent, dir, n);
    parent[n] = 0;
  }
  struct stat ps;
  if (stat(parent, &ps) != 0) return -errno;
  int shared = (ps.st_mode & S_IWOTH) != 0;
  mode_t mode = shared ? JDLS_OSL_DIR_MODE : JDLS_OSL_PRIVATE_DIR_MODE;
  if (mkdir(dir, mode) != 0) return -errno;
  /* mkdir applies the umask (and drops the set-id bits): set the mode. The
   * group: the parent's (a failure leaves ours - narrower, never wider). */
  if (!shared && chown(dir, (uid_t)-1, ps.st_gid) != 0) { /* keep our group */ }
  if (chmod(dir, mode) != 0) return -errno;
  return 0;
}

int jdls_osl_ensure_dir(const char *dir) {
  int rc = jdls_osl_check_dir(dir);
  if (rc != -ENOENT) return rc;
  rc = make_dir(dir);
  /* EEXIST: created by someone else meanwhile: checked as any other */
  if (rc < 0 && rc != -EEXIST) return rc;
  return jdls_osl_check_dir(dir);
}

/* The low 32 bits only, as the guide names lock files: runtimes that name
 * them themselves must find the same file. Files that share a name because
 * of it are kept apart by their keys' bytes (jdls_osl_key_offset). */
int jdls_osl_lock_path(char *buf, size_t cap, const char *dir, uint64_t inode, int64_t dev) {
  int n = snprintf(buf, cap, "%s/jlock_%08x_%08x", dir, (unsigned)(uint32_t)inode,
                   (unsigned)(uint32_t)(uint64_t)dev);
  if (n < 0 || (size_t)n >= cap) return -ENAMETOOLONG;
  return n;
}

int jdls_osl_name_exact(uint64_t inode, int64_t dev) {
  return (inode >> 32) == 0 && (dev == -1 || ((uint64_t)dev >> 32) == 0);
}

static uint64_t bytes_offset(const uint8_t *key, size_t len) {
  /* jdls_hash.h: the same hash as the table's, another seed, 62 bits. */
  uint64_t h = jdls_hash_final(jdls_hash_bytes(0xcbf29ce484222325ull, key, len));
  return h >> (64 - JDLS_OSL_KEY_OFFSET_BITS);
}

uint64_t jdls_osl_key_offset(uint64_t inode, int64_t dev, const uint8_t *key, size_t len) {
  if (len == JDLS_OSL_OFFSET_KEY_LEN) {
    /* a byte-offset key (jdls_oslock.h): the byte it names, kept below 2^63 (an off_t) */
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v = v << 8 | key[i];
    return v & 0x7fffffffffffffffull;
  }
  if (jdls_osl_name_exact(inode, dev)) return bytes_offset(key, len);
  /* The name lost bits: hash the identity with the key (jdls_oslock.h). A
   * key longer than the stack buffer has no record-lock meaning (the limit
   * is 512 bytes); it is hashed without room to spare, truncated. */
  uint8_t buf[JDLS_OSL_ID_PREFIX + 1024];
  uint64_t d = (uint64_t)dev;
  for (int i = 0; i < 8; i++) {
    buf[i] = (uint8_t)(inode >> (56 - 8 * i));
    buf[8 + i] = (uint8_t)(d >> (56 - 8 * i));
  }
  size_t n = len < sizeof buf - JDLS_OSL_ID_PREFIX ? len : sizeof buf - JDLS_OSL_ID_PREFIX;
  if (n) memcpy(buf + JDLS_OSL_ID_PREFIX, key, n);
  return bytes_offset(buf, JDLS_OSL_ID_PREFIX + n);
}

/* ===== 3. the byte-range primitive ====================================== */

/*
 * What an opened lock file must be, checked on the descriptor (fstat: the
 * file we hold, not whatever the name says now):
 *   - a regular file: not a FIFO (open would block), device or directory;
 *   - one link: a hard link planted in a shared directory would make us
 *     lock (and, as root, take over) a file that lives elsewhere, and two
 *     names for one inode mean one of them can be removed without the other
 *     noticing;
 *   - no execute, set-id or sticky bits: lock files are created 0666; such
 *     bits say somebody else put it there for another purpose.
 * Then the trap this file exists to dodge: in a sticky directory the owner
 * of a lock file can still delete it while someone holds a lock in it,
 * which splits that lock (see the directory's comment). When we are root
 * and the file belongs to a user who is neither root nor the service's
 * user, we take it over (fchown to root, group kept): from then on only
 * root and the directory's owner can unlink it. A deletion that wins the
 * race before the fchown is caught by the check after each lock
 * (jdls_osl_still_named). A caller that is not root cannot do this: in the
 * shared jBASE mode (01777 in /tmp), a lock file owned by another user can
 * be deleted by that user and its locks split (docs/security.md). A
 * service-owned directory without o+w (docs/os-locks.md) has no such user.
 */
static int check_file(int fd, const char *path) {
  struct stat st;
  if (fstat(fd, &st) != 0) return -errno;
  if (!S_ISREG(st.st_mode) || st.st_nlink != 1 || (st.st_mode & 07111)) return -EPERM;
  if (geteuid() == 0 && st.st_uid != 0 && (long)st.st_uid != service_uid()) {
    char dir[JDLS_OSL_PATH_MAX];
    const char *slash = strrchr(path, '/');
    size_t n = slash ? (size_t)(slash - path) : 0;
    if (n == 0 && slash) n = 1; /* "/jlock_..." */
    if (n >= sizeof dir) return -ENAMETOOLONG;
    if (n) memcpy(dir, path, n);
    else dir[n++] = '.';
    dir[n] = 0;
    struct stat ds;
    if (stat(dir, &ds) != 0) return -errno;
    if ((ds.st_mode & S_ISVTX) && fchown(fd, 0, (gid_t)-1) != 0) return -errno;
  }
  return 0;
}

int jdls_osl_open(const char *path, int create) {
  for (int attempt = 0; attempt < 4; attempt++) {
    int fd = open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
    if (fd >= 0) return fd;
    if (errno != ENOENT || !create) return -errno;
    /* O_EXCL so that only the creator sets the mode (fchmod beats the
     * umask); losing the race to another creator just means: open again. */
    fd = open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW | O_CREAT | O_EXCL, JDLS_OSL_FILE_MODE);
    if (fd >= 0) {
      if (fchmod(fd, JDLS_OSL_FILE_MODE) != 0) { /* keep the file: the umask mode still works for us */ }
      return fd;
    }
    if (errno != EEXIST) return -errno;
  }
  return -EAGAIN;
}

int jdls_osl_open_lock(const char *path, int create) {
  int fd = jdls_osl_open(path, create);
  if (fd < 0) return fd;
  int rc = check_file(fd, path);
  if (rc < 0) {
    close(fd);
    return rc;
  }
  return fd;
}

int jdls_osl_still_named(int fd, const char *path) {
  struct stat a, b;
  if (fstat(fd, &a) != 0) return -errno;
  if (lstat(path, &b) != 0) return errno == ENOENT ? 0 : -errno;
  return a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

void jdls_osl_close(int fd) {
  /* No retry on EINTR: on Linux the descriptor is gone either way. */
  if (fd >= 0) close(fd);
}

int jdls_osl_setlk(int fd, int64_t start, int64_t len, int type) {
  if (!valid(start, len, type)) return -EINVAL;
  struct flock fl;
  fill(&fl, start, len, type);
  for (;;) {
    if (fcntl(fd, F_OFD_SETLK, &fl) == 0) return JDLS_OSL_OK;
    if (errno == EINTR) continue; /* F_OFD_SETLK does not sleep, but be safe */
    if (errno == EAGAIN || errno == EACCES) return JDLS_OSL_CONFLICT;
    return -errno;
  }
}

int jdls_osl_setlkw(int fd, int64_t start, int64_t len, int type, const int *cancel) {
  if (!valid(start, len, type)) return -EINVAL;
  struct flock fl;
  fill(&fl, start, len, type);
  for (;;) {
    /* The interrupt can land between this check and the kernel going to
     * sleep; the handler then runs for nothing and the sleep begins. The
     * canceller therefore repeats the signal until this thread reports back
     * (see oslock.cc, Waits::Cancel): a lost signal costs one repeat. */
    if (__atomic_load_n(cancel, __ATOMIC_ACQUIRE)) return JDLS_OSL_CANCELLED;
    if (fcntl(fd, F_OFD_SETLKW, &fl) == 0) return JDLS_OSL_OK;
    if (errno == EINTR) continue; /* cancel re-checked at the top */
    return -errno;
  }
}

int jdls_osl_getlk(int fd, int64_t start, int64_t len, int type, jdls_osl_holder *holder) {
  if (!valid(start, len, type) || type == JDLS_OSL_UNLOCK) return -EINVAL;
  struct flock fl;
  fill(&fl, start, len, type);
  if (fcntl(fd, F_OFD_GETLK, &fl) != 0) return -errno;
  if (fl.l_type == F_UNLCK) return JDLS_OSL_OK;
  if (holder) {
    holder->type = fl.l_type;
    holder->start = fl.l_start;
    holder->len = fl.l_len;
    holder->pid = fl.l_pid;
  }
  return JDLS_OSL_CONFLICT;
}

/* ===== 4. interrupting a blocked wait =================================== */

/*
 * Why a real-time signal, and which: a thread blocked in F_OFD_SETLKW can
 * only be woken by the lock or by a signal whose handler runs (SIG_IGN and
 * SA_RESTART would both leave it asleep). The handler does nothing; it is
 * installed WITHOUT SA_RESTART so fcntl returns EINTR. The signal must be
 * one nobody else in a Node process uses: Node takes SIGUSR1 (inspector),
 * SIGPROF (profiler), SIGCHLD/SIGWINCH/SIGPIPE (libuv), SIGSEGV/SIGBUS (V8's
 * WebAssembly trap handler) and whatever `process.on()` asks for (it cannot
 * name real-time signals); glibc keeps 32 and 33 for itself, below SIGRTMIN;
 * some libraries use SIGRTMIN itself for POSIX timers. We take the first
 * signal from SIGRTMIN+5 upwards whose disposition is still SIG_DFL (or
 * already ours), so a host that claimed one makes us move on, not clash.
 * Waiter threads block every other signal, so process-directed signals never
 * land on them, and only they unblock this one (pthread_kill is directed).
 */
static void on_interrupt(int sig) { (void)sig; }

static pthread_once_t signal_once = PTHREAD_ONCE_INIT;
static int signal_no = -ENOSYS;

static void install_signal(void) {
  for (int s = SIGRTMIN + 5; s <= SIGRTMAX - 1; s++) {
    struct sigaction old;
    if (sigaction(s, NULL, &old) != 0) continue;
    if (!(old.sa_flags & SA_SIGINFO) && old.sa_handler != SIG_DFL && old.sa_handler != on_interrupt) continue;
    if ((old.sa_flags & SA_SIGINFO) && old.sa_sigaction != NULL) continue;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_interrupt;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0; /* no SA_RESTART: the point is EINTR */
    if (sigaction(s, &sa, NULL) != 0) {
      signal_no = -errno;
      return;
    }
    signal_no = s;
    return;
  }
  signal_no = -EBUSY;
}

int jdls_osl_signal_init(void) {
  pthread_once(&signal_once, install_signal);
  return signal_no;
}

int jdls_osl_interrupt(pthread_t thread) {
  int s = jdls_osl_signal_init();
  if (s < 0) return s;
  int rc = pthread_kill(thread, s);
  return rc == 0 ? 0 : -rc;
}

void jdls_osl_thread_masks(sigset_t *all, sigset_t *only) {
  sigfillset(all);
  sigemptyset(only);
  int s = jdls_osl_signal_init();
  if (s > 0) sigaddset(only, s);
}

static int by_offset(const void *a, const void *b) {
  uint64_t x = ((const jdls_osl_byte *)a)->off, y = ((const jdls_osl_byte *)b)->off;
  return x < y ? -1 : x > y;
}

int jdls_osl_reshape(int fd, jdls_osl_byte *bytes, size_t n) {
  if (fd < 0) return -EBADF;
  qsort(bytes, n, sizeof *bytes, by_offset);
  uint64_t next = 0;
  int rc = JDLS_OSL_OK;
  for (size_t i = 0; i < n && rc == JDLS_OSL_OK; i++) {
    uint64_t off = bytes[i].off;
    if (off > next) rc = jdls_osl_setlk(fd, (int64_t)next, (int64_t)(off - next), JDLS_OSL_UNLOCK);
    if (rc == JDLS_OSL_OK && bytes[i].type == JDLS_OSL_READ) rc = jdls_osl_setlk(fd, (int64_t)off, 1, JDLS_OSL_READ);
    next = off + 1;
  }
  if (rc == JDLS_OSL_OK) rc = jdls_osl_setlk(fd, (int64_t)next, 0, JDLS_OSL_UNLOCK);
  /* A conflict cannot happen (see the header); were it to, it is an error, not a grant. */
  return rc == JDLS_OSL_OK ? JDLS_OSL_OK : rc < 0 ? rc : -EAGAIN;
}
