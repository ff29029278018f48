/*
 * jdls_table.c - the shared-memory record lock table.
 *
 * Owns: the segment's creation and validation (who may own it, its mode and
 * links: jdls_check_file; its geometry, copied into the process once and
 * never re-read), record locking inside it
 * (grant, queue, hand-off, release), dead-owner reaping, crash repair, and
 * listings. Does not own: naming policy beyond the path rule, monitor
 * scheduling, display formats (all in src/), OS file locks (native/oslock).
 *
 * Divisions (keep them):
 *   1. small helpers: hashing, primes, futexes, process liveness
 *   2. creating, opening and removing the segment (trust, geometry)
 *   3. group locking and crash repair
 *   4. the lock algorithm: grant, queue, hand-off
 *   5. the public lock calls
 *   6. upkeep: tidy, list, check, process slots
 */
#define _GNU_SOURCE
#include "jdls_table.h"
#include "jdls_hash.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

_Static_assert(sizeof(jdls_entry) == 624, "jdls_entry layout changed: bump JDLS_LAYOUT_VERSION");
_Static_assert(sizeof(jdls_group) == 64, "jdls_group must stay 64 bytes");
_Static_assert(sizeof(jdls_header) == 17152, "jdls_header layout changed: bump JDLS_LAYOUT_VERSION");
_Static_assert(offsetof(jdls_header, next_token) % 64 == 0, "jdls_header.next_token on its own cache line");
_Static_assert(sizeof(jdls_proc_slot) == 16, "jdls_proc_slot layout changed");
_Static_assert(offsetof(jdls_entry, conn) == 72, "jdls_entry.conn offset");
_Static_assert(offsetof(jdls_entry, key) == 112, "jdls_entry.key offset");
_Static_assert(offsetof(jdls_header, groups_offset) == 32, "jdls_header.groups_offset offset");
_Static_assert(offsetof(jdls_header, service) == 180, "jdls_header.service offset");
_Static_assert(offsetof(jdls_header, starter_start) == 192, "jdls_header.starter_start offset");

/* ===== 1. small helpers ================================================= */

#define ALOAD(p)      __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define ASTORE(p, v)  __atomic_store_n((p), (v), __ATOMIC_RELEASE)

uint32_t jdls_hash(uint64_t seed, uint64_t inode, int64_t dev, const uint8_t *key, uint32_t key_len) {
  /* Chooses the group and fills the display's "value"; identity is the full
   * key (jdls_hash.h says why this hash). The table's seed is the starting
   * state: every later step is a bijection of the state, so which keys
   * share a group depends on the seed, which a remote client never sees
   * (jdls_header.hash_seed says why that matters). Not a cryptographic PRF
   * (SipHash would be, at several times the cost): it hides the groups from
   * a client that cannot read the table, which is the threat here. */
  uint64_t h = jdls_hash_mix(0x6a09e667f3bcc909ull ^ seed, inode);
  h = jdls_hash_mix(h, (uint64_t)dev);
  h = jdls_hash_final(jdls_hash_bytes(h, key, key_len));
  return (uint32_t)(h >> 34); /* the top 30 bits */
}

/* A table's hash key: from the kernel's random pool. Were getrandom to
 * fail (it does not block for 8 bytes once the pool is up), the clock and
 * the pid still make it unknown to a remote client. */
static uint64_t random_seed(void) {
  uint64_t seed = 0;
  if (syscall(SYS_getrandom, &seed, sizeof seed, 0) != (long)sizeof seed) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    seed = jdls_hash_final((uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 30) ^ ((uint64_t)getpid() << 48));
  }
  return seed;
}

uint32_t jdls_next_prime(uint32_t n) {
  if (n <= 2) return 2;
  for (uint32_t c = n | 1u;; c += 2) {
    int prime = 1;
    for (uint32_t d = 3; (uint64_t)d * d <= c; d += 2)
      if (c % d == 0) { prime = 0; break; }
    if (prime) return c;
  }
}

static int futex_wait(uint32_t *word, uint32_t expected, int timeout_ms) {
  struct timespec ts, *tp = NULL;
  if (timeout_ms >= 0) {
    ts.tv_sec = timeout_ms / 1000;
    ts.tv_nsec = (long)(timeout_ms % 1000) * 1000000L;
    tp = &ts;
  }
  /* Shared (not FUTEX_PRIVATE): the waker is another process. */
  return (int)syscall(SYS_futex, word, FUTEX_WAIT, expected, tp, NULL, 0);
}

static void futex_wake(uint32_t *word) {
  syscall(SYS_futex, word, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
}

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* State letter (field 3) and start time (field 22) of /proc/<pid>/stat.
 * Returns 0, or -1 if the process is gone or the file unreadable. */
static int pid_stat(uint32_t pid, char *state, uint64_t *start) {
  char path[64], buf[1024];
  snprintf(path, sizeof path, "/proc/%u/stat", pid);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0) return -1;
  buf[n] = 0;
  /* The command name (field 2) may hold spaces and ')': skip to the last ')'. */
  char *p = strrchr(buf, ')');
  if (!p || p[1] != ' ') return -1;
  *state = p[2];
  p++;
  /* Fields from 3 on; starttime is field 22, i.e. the 20th after ')'. */
  for (int field = 3; field < 22 && *p; field++) {
    while (*p == ' ') p++;
    while (*p && *p != ' ') p++;
  }
  *start = strtoull(p, NULL, 10);
  return 0;
}

/* Trap: /proc/<pid>/stat describes the thread group LEADER, the main
 * thread. A main thread that called pthread_exit() shows state Z there while
 * the process's other threads run on; only the whole thread group's end is
 * death. "Threads:" in /proc/<pid>/status counts the group's threads, the
 * exited leader included: a process that is really a zombie has 1 (just the
 * leader), a live one with an exited main thread has 2 or more. Unreadable or
 * gone: 0 (dead). */
static unsigned live_threads(uint32_t pid) {
  char path[64], buf[4096];
  snprintf(path, sizeof path, "/proc/%u/status", pid);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0) return 0;
  buf[n] = 0;
  const char *p = strstr(buf, "\nThreads:");
  if (!p) return 0;
  return (unsigned)strtoul(p + 9, NULL, 10);
}

uint64_t jdls_pid_start(uint32_t pid) {
  char state;
  uint64_t start;
  return pid_stat(pid, &state, &start) == 0 ? start : 0;
}

/* This process's start time, cached per THREAD: a cache shared by threads
 * would need the pid and the start published together (a thread that saw
 * the new pid with the old start 0 would judge its own process dead and
 * reap its locks), and after fork() the pid no longer matches, so a child
 * never answers with its parent's start. */
static __thread uint32_t self_pid;
static __thread uint64_t self_start;

static uint64_t my_start(void) {
  uint32_t me = (uint32_t)getpid();
  if (self_pid != me) {
    self_start = jdls_pid_start(me);
    self_pid = me;
  }
  return self_start;
}

/* A process is (pid, start time), never a bare pid: pid_max is often 32768
 * and pids are recycled. Trap: our own pid is not always us - an entry left
 * by a dead process whose pid the kernel has since given to this one names
 * our pid with another start time, and it is dead. */
int jdls_pid_alive(uint32_t pid, uint64_t start, int thorough) {
  /* Above INT_MAX it is no pid (kill() would take it for a process group). */
  if (pid == 0 || pid > (uint32_t)INT_MAX) return 0;
  if (pid == (uint32_t)getpid()) {
    uint64_t mine = my_start();
    return start == 0 || mine == 0 || start == mine;
  }
  if (kill((pid_t)pid, 0) != 0 && errno == ESRCH) return 0;
  if (thorough) {
    /* kill() succeeds for a recycled pid and for a zombie (killed, not yet
     * reaped by its parent - which may never happen): a zombie has run its
     * exit and released its robust mutexes, but would keep its locks. */
    char state;
    uint64_t now;
    if (pid_stat(pid, &state, &now) == 0) {
      if (start != 0 && now != 0 && now != start) return 0;
      if ((state == 'Z' || state == 'X') && live_threads(pid) <= 1) return 0;
    }
  }
  return 1;
}

/* ===== 2. creating, opening and removing the segment ==================== */

int jdls_release_dir(char *out, size_t cap) {
  const char *d = getenv("JBCRELEASEDIR");
  int n;
  if (d && *d) n = snprintf(out, cap, "%s", d);
  else {
    const char *home = getenv("HOME");
    if (home && *home) n = snprintf(out, cap, "%s/.jdls", home);
    else n = snprintf(out, cap, "/tmp/jdls-%u", (unsigned)getuid());
  }
  return (n < 0 || (size_t)n >= cap) ? -1 : n;
}

int jdls_installation_trust(const char *release_dir, jdls_trust *out) {
  struct stat st;
  if (stat(release_dir, &st) == 0) {
    out->uid = (uint32_t)st.st_uid;
    out->gid = (uint32_t)st.st_gid;
    return 0;
  }
  if (errno != ENOENT) return -1;
  out->uid = (uint32_t)geteuid();
  out->gid = (uint32_t)getegid();
  return 0;
}

int jdls_table_path(const char *release_dir, char *out, size_t cap) {
  char abs[2 * PATH_MAX + 2];
  /* Two spellings of one directory must name one table; a directory that
   * does not exist yet is taken as written (made absolute). */
  if (!realpath(release_dir, abs)) {
    if (release_dir[0] == '/') snprintf(abs, sizeof abs, "%s", release_dir);
    else {
      char cwd[PATH_MAX];
      if (!getcwd(cwd, sizeof cwd)) return -1;
      snprintf(abs, sizeof abs, "%s/%s", cwd, release_dir);
    }
  }
  /* The uid is the installation's owner, not the caller's: the name was
   * once per caller (getuid()), so a member of the installation's group
   * looked for a table nobody made and locked records as OS file locks
   * beside root's table - one lock, two holders. */
  jdls_trust tr;
  if (jdls_installation_trust(abs, &tr) != 0) return -1;
  uint64_t h = 1469598103934665603ull;
  for (const char *p = abs; *p; p++) { h ^= (uint8_t)*p; h *= 1099511628211ull; }
  int n = snprintf(out, cap, "/dev/shm/jdls-%u-%016llx", (unsigned)tr.uid, (unsigned long long)h);
  return (n < 0 || (size_t)n >= cap) ? -1 : n;
}

static jdls_group *group_at(jdls_table *t, uint32_t g) {
  /* Private geometry (jdls_table); callers have checked g < t->ngroups. */
  return (jdls_group *)((uint8_t *)t->hdr + t->groups_offset + (uint64_t)g * t->group_size);
}

static jdls_entry *entry_at(jdls_table *t, jdls_group *g, uint32_t i) {
  (void)t; /* i < t->per_group, checked by the callers */
  return (jdls_entry *)((uint8_t *)(g + 1) + (uint64_t)i * sizeof(jdls_entry));
}

static jdls_proc_slot *slots_of(jdls_table *t) {
  return (jdls_proc_slot *)((uint8_t *)t->hdr + sizeof(jdls_header));
}

/* The detail of the last refusal on this thread (like dlerror()): the rc
 * says what kind of failure, this says which file and what to do. */
static __thread char detail[512];

const char *jdls_detail(void) { return detail; }

void jdls_set_detail(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(detail, sizeof detail, fmt, ap);
  va_end(ap);
}

static void default_trust(const jdls_trust *in, jdls_trust *out) {
  if (in) *out = *in;
  else {
    out->uid = (uint32_t)geteuid();
    out->gid = (uint32_t)getegid();
  }
}

/* The name is predictable (/dev/shm is world-writable), so whoever comes
 * first can put a file there: their own table (or a hard link to it: then
 * they read every key and owner and free any lock through their own name),
 * a file others may write, a symlink to a file of root's (O_NOFOLLOW refuses
 * that one at open). Every check is on the open descriptor (fstat), never on
 * the name: the name can be swapped between a stat() and the open(). */
int jdls_check_file(int fd, const char *path, const char *kind, const jdls_trust *trust, int group_ok) {
  struct stat st;
  if (fstat(fd, &st) != 0) {
    jdls_set_detail("cannot stat %s %s: %s", kind, path, strerror(errno));
    return JDLS_E_SYS;
  }
  unsigned mode = (unsigned)st.st_mode & 07777;
  const char *what = NULL;
  char why[200];
  if (!S_ISREG(st.st_mode)) what = "is not a regular file";
  else if (st.st_uid != 0 && st.st_uid != (uid_t)trust->uid &&
           !(group_ok && st.st_gid == (gid_t)trust->gid)) {
    if (group_ok)
      snprintf(why, sizeof why, "is owned by uid %u, not by root, the installation's owner (uid %u) or a member of its group (gid %u)",
               (unsigned)st.st_uid, (unsigned)trust->uid, (unsigned)trust->gid);
    else
      snprintf(why, sizeof why, "is owned by uid %u, not by root or the installation's owner (uid %u)",
               (unsigned)st.st_uid, (unsigned)trust->uid);
    what = why;
  } else if (mode & S_IWOTH) what = "is writable by others";
  else if (st.st_nlink != 1) {
    /* A second name is a second way in: a user's hard link to the
     * installation's table lets them reach it whatever the mode says later. */
    snprintf(why, sizeof why, "has %lu links (a second name for it exists)", (unsigned long)st.st_nlink);
    what = why;
  }
  if (!what) return JDLS_OK;
  jdls_set_detail("%s %s %s (owner uid %u, group %u, mode 0%03o): refusing it; if no jdls process of this "
             "installation is running, remove it (rm %s) and start again",
             kind, path, what, (unsigned)st.st_uid, (unsigned)st.st_gid, mode, path);
  return JDLS_E_UNTRUSTED;
}

/* Trap: the ids that map the table are never the shared header's. They are
 * copied here once, checked against the layout version and the file's size,
 * and every later address comes from the copy (see jdls_table in the
 * header). A header that passed the old check (sums equal modulo 2^64) could
 * still place group 0 below the mapping; here each field has the one value
 * the layout allows, or a range, and the sums are done in 64 bits without
 * overflow (ngroups <= JDLS_MAX_LOCKS, group_size < 2^23). */
static int map_and_validate(int fd, const char *path, jdls_table *out) {
  struct stat st;
  /* A creator sets the magic last; wait a little for one in progress. */
  for (int tries = 0;; tries++) {
    if (fstat(fd, &st) != 0) return JDLS_E_SYS;
    if ((size_t)st.st_size >= sizeof(jdls_header)) {
      uint32_t magic;
      if (pread(fd, &magic, sizeof magic, 0) == (ssize_t)sizeof magic && magic == JDLS_MAGIC) break;
    }
    if (tries >= 300) {
      jdls_set_detail("%s is not a lock table (no header after 3 s: a creator died half-way?)", path);
      return JDLS_E_BAD_TABLE; /* 3 s: a creator died half-way */
    }
    usleep(10000);
  }
  jdls_header h;
  if (pread(fd, &h, sizeof h, 0) != (ssize_t)sizeof h) return JDLS_E_SYS;
  const uint64_t groups_offset = sizeof(jdls_header) + (uint64_t)JDLS_PROC_SLOTS * sizeof(jdls_proc_slot);
  uint64_t group_size = sizeof(jdls_group) + (uint64_t)h.per_group * sizeof(jdls_entry);
  if (h.magic != JDLS_MAGIC || h.version != JDLS_LAYOUT_VERSION || h.header_size != sizeof(jdls_header) ||
      h.entry_size != sizeof(jdls_entry) || h.per_group == 0 || h.per_group > JDLS_MAX_PER_GROUP ||
      h.group_size != group_size || h.ngroups == 0 || h.ngroups > JDLS_MAX_LOCKS ||
      h.groups_offset != groups_offset || h.total_size != (uint64_t)st.st_size ||
      groups_offset + (uint64_t)h.ngroups * group_size != h.total_size) {
    jdls_set_detail("%s is not a valid lock table of layout version %u: its header's geometry (%u groups of %u "
               "entries, groups at %llu, %llu bytes) does not match the layout and the file's size (%lld "
               "bytes); remove it with jdls -Ko",
               path, JDLS_LAYOUT_VERSION, h.ngroups, h.per_group, (unsigned long long)h.groups_offset,
               (unsigned long long)h.total_size, (long long)st.st_size);
    return JDLS_E_BAD_TABLE;
  }
  void *base = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (base == MAP_FAILED) return JDLS_E_SYS;
  out->hdr = base;
  out->size = (size_t)st.st_size;
  out->fd = fd;
  out->slot = -1;
  out->ngroups = h.ngroups;
  out->per_group = h.per_group;
  out->flags = h.flags;
  out->group_size = (uint32_t)group_size;
  out->groups_offset = groups_offset;
  out->hash_seed = h.hash_seed;
  snprintf(out->path, sizeof out->path, "%s", path);
  return JDLS_OK;
}

int jdls_table_open(const char *path, const jdls_trust *trust, jdls_table *out) {
  memset(out, 0, sizeof *out);
  out->fd = -1;
  detail[0] = 0;
  default_trust(trust, &out->trust);
  /* O_NOFOLLOW: a symlink planted at the name would make root map (and
   * write mutexes into) a file of the planter's choosing. */
  int fd = open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) {
    int e = errno;
    if (e == ENOENT) return JDLS_E_NO_TABLE;
    if (e == ELOOP) {
      jdls_set_detail("lock table %s is a symbolic link: refusing it; remove it (rm %s) and start again", path, path);
      return JDLS_E_UNTRUSTED;
    }
    if (e == EACCES)
      jdls_set_detail("cannot open lock table %s: permission denied (only root, the installation's owner uid %u "
                 "and members of its group %u may use it)", path, (unsigned)out->trust.uid, (unsigned)out->trust.gid);
    else jdls_set_detail("cannot open lock table %s: %s", path, strerror(e));
    errno = e;
    return JDLS_E_SYS;
  }
  int rc = jdls_check_file(fd, path, "lock table", &out->trust, 0);
  if (rc == JDLS_OK) rc = map_and_validate(fd, path, out);
  if (rc != JDLS_OK) {
    int e = errno;
    close(fd);
    out->fd = -1;
    errno = e;
  }
  return rc;
}

int jdls_table_create(const char *path, const jdls_trust *trust, uint32_t nlocks, uint32_t per_group,
                      uint32_t flags, jdls_table *out, int *existed) {
  *existed = 0;
  if (nlocks == 0 || per_group == 0 || nlocks > JDLS_MAX_LOCKS ||
      per_group > JDLS_MAX_PER_GROUP || per_group > nlocks)
    return JDLS_E_ARG;
  memset(out, 0, sizeof *out);
  out->fd = -1;
  detail[0] = 0;
  jdls_trust tr;
  default_trust(trust, &tr);
  uid_t me = geteuid();
  if (me != 0 && me != (uid_t)tr.uid) {
    /* A table this user made would be refused by everyone else (owner
     * check): say so now rather than make one nobody may use. */
    jdls_set_detail("only root or the installation's owner (uid %u) may create its lock table %s; this is uid %u",
               (unsigned)tr.uid, path, (unsigned)me);
    return JDLS_E_UNTRUSTED;
  }
  /* O_EXCL decides who creates: everyone else opens and waits for magic.
   * O_NOFOLLOW: O_EXCL already refuses a symlink, said twice on purpose. */
  int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) {
    if (errno != EEXIST) {
      jdls_set_detail("cannot create lock table %s: %s", path, strerror(errno));
      return JDLS_E_SYS;
    }
    *existed = 1;
    return jdls_table_open(path, &tr, out);
  }
  /* The group and the mode are set on the descriptor, not left to the
   * creator's egid and umask: 0660 with the installation directory's group
   * (its members use the table), whatever umask the operator's shell has. */
  struct stat st;
  if (fstat(fd, &st) != 0) goto fail;
  if (st.st_gid != (gid_t)tr.gid && fchown(fd, (uid_t)-1, (gid_t)tr.gid) != 0) {
    int e = errno;
    jdls_set_detail("cannot give lock table %s the installation's group %u: %s", path, (unsigned)tr.gid, strerror(e));
    errno = e;
    goto fail;
  }
  if (fchmod(fd, 0660) != 0) goto fail;
  uint32_t ngroups = jdls_next_prime((nlocks + per_group - 1) / per_group);
  uint64_t group_size = sizeof(jdls_group) + (uint64_t)per_group * sizeof(jdls_entry);
  uint64_t groups_offset = sizeof(jdls_header) + JDLS_PROC_SLOTS * sizeof(jdls_proc_slot);
  uint64_t total = groups_offset + (uint64_t)ngroups * group_size;
  if (ftruncate(fd, (off_t)total) != 0) goto fail;
  void *base = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (base == MAP_FAILED) goto fail;
  jdls_header *h = base;
  h->version = JDLS_LAYOUT_VERSION;
  h->header_size = sizeof(jdls_header);
  h->entry_size = sizeof(jdls_entry);
  h->group_size = (uint32_t)group_size;
  h->ngroups = ngroups;
  h->per_group = per_group;
  h->flags = flags;
  h->groups_offset = groups_offset;
  h->total_size = total;
  h->requested_locks = nlocks;
  h->tidy_ms = 5 * 60 * 1000;
  h->created_ms = now_ms();
  /* STARTING (0) until jdls_table_enter_service: its creator is the
   * starter, so a creator that dies half-way leaves a table nobody routes
   * to (jdls_table_service), not one everybody waits for. */
  h->starter_start = jdls_pid_start((uint32_t)getpid());
  h->starter_pid = (uint32_t)getpid();
  h->hash_seed = random_seed();
  h->deadlock_policy = JDLS_DEADLOCK_BREAK; /* the product's default (docs/deadlocks.md) */
  h->next_token = 1;                        /* epoch 0 until the creator sets one */
  h->next_wait = 1;
  out->hdr = h;
  out->size = total;
  out->fd = fd;
  out->slot = -1;
  out->ngroups = ngroups;
  out->per_group = per_group;
  out->flags = flags;
  out->group_size = (uint32_t)group_size;
  out->groups_offset = groups_offset;
  out->hash_seed = h->hash_seed;
  out->trust = tr;
  snprintf(out->path, sizeof out->path, "%s", path);
  pthread_mutexattr_t ma;
  pthread_mutexattr_init(&ma);
  pthread_mutexattr_setpshared(&ma, PTHREAD_PROCESS_SHARED);
  pthread_mutexattr_setrobust(&ma, PTHREAD_MUTEX_ROBUST);
  if (pthread_mutex_init(&h->detect_mutex, &ma) != 0) {
    pthread_mutexattr_destroy(&ma);
    munmap(base, total);
    goto fail;
  }
  for (uint32_t g = 0; g < ngroups; g++) {
    jdls_group *gr = group_at(out, g);
    if (pthread_mutex_init(&gr->mutex, &ma) != 0) {
      pthread_mutexattr_destroy(&ma);
      munmap(base, total);
      goto fail;
    }
    gr->next_seq = 1;
  }
  pthread_mutexattr_destroy(&ma);
  ASTORE(&h->magic, JDLS_MAGIC); /* last: openers wait for it */
  return JDLS_OK;
fail:;
  int e = errno;
  if (!detail[0]) jdls_set_detail("cannot create lock table %s: %s", path, strerror(e));
  unlink(path);
  close(fd);
  errno = e;
  memset(out, 0, sizeof *out);
  out->fd = -1;
  return JDLS_E_SYS;
}

void jdls_table_close(jdls_table *t) {
  if (!t->hdr) return;
  jdls_slot_release(t);
  munmap(t->hdr, t->size);
  close(t->fd);
  t->hdr = NULL;
  t->fd = -1;
}

int jdls_table_unlink(const char *path) {
  if (unlink(path) != 0) return errno == ENOENT ? JDLS_E_NO_TABLE : JDLS_E_SYS;
  return JDLS_OK;
}

/* ===== 3. group locking and crash repair ================================ */

static int same_key(const jdls_entry *e, uint64_t inode, int64_t dev,
                    const uint8_t *key, uint32_t key_len) {
  /* key_len may come from the segment (entry_same_key): a length past the
   * entry's key would compare bytes beyond it, past the mapping for the
   * last entry. Such an entry matches nothing. */
  if (key_len > JDLS_MAX_KEY) return 0;
  return e->inode == inode && e->dev == dev && e->key_len == key_len &&
         memcmp(e->key, key, key_len) == 0;
}

static int entry_same_key(const jdls_entry *a, const jdls_entry *b) {
  return same_key(a, b->inode, b->dev, b->key, b->key_len);
}

/* The owner of a lock: (ip, owner pid, owner tid, connection) and the local
 * process that holds the entry, or (ip, port) on a -P table. The holding pid is part of it
 * because a remote client whose lock-server process was killed may reconnect
 * through another one before the dead entries are reaped: without the pid it
 * would "re-take" an entry that still names the dead process - and lose it
 * at the next reap while believing it holds the lock. For a local process
 * pid == owner pid, so nothing changes there. */
/* One rule for "same owner", for an entry or an owner on either side (the
 * fields have the same names in both): owner_eq compares an entry with a
 * request's owner, deadlock detection two owners. */
#define SAME_OWNER(t, a, b)                                                       \
  ((a)->ip_len == (b)->ip_len && memcmp((a)->ip, (b)->ip, (b)->ip_len) == 0 &&    \
   (((t)->flags & JDLS_FLAG_PORT_LOCKS)                                           \
        ? (a)->port == (b)->port                                                  \
        : ((a)->owner_pid == (b)->owner_pid && (a)->owner_tid == (b)->owner_tid && \
           (a)->conn == (b)->conn && (a)->pid == (b)->pid && (a)->pid_start == (b)->pid_start)))

/* The start time is part of it: a process that got a dead process's pid is
 * another owner. Were it the same, it would be told GRANTED on the dead
 * entry (a "re-lock"), which the next thorough reap frees under it - while
 * it believes it holds the lock and a third process takes it.
 * And the connection: without it, any program that reaches the lock
 * server could present another client's pid and tid and release or re-take
 * its locks, and closing one of two connections that present the same ones
 * released the other's. */
static int owner_eq(const jdls_table *t, const jdls_entry *e, const jdls_owner *o) {
  return SAME_OWNER(t, e, o);
}

/* Does entry e belong to the process (pid, start)? */
static int entry_of(const jdls_entry *e, uint32_t pid, uint64_t start) {
  return e->pid == pid && e->pid_start == start;
}

static void owner_of(const jdls_entry *e, jdls_owner *o) {
  memset(o, 0, sizeof *o);
  o->pid = e->pid;
  o->owner_pid = e->owner_pid;
  o->owner_tid = e->owner_tid;
  o->port = e->port;
  o->pid_start = e->pid_start;
  o->conn = e->conn;
  o->ip_len = e->ip_len;
  memcpy(o->ip, e->ip, sizeof o->ip);
}

static int entry_valid(const jdls_table *t, const jdls_entry *e) {
  uint32_t s = ALOAD(&e->state);
  if (s == JDLS_STATE_FREE) return 1;
  if (s != JDLS_STATE_HELD && s != JDLS_STATE_WAITING && s != JDLS_STATE_REFUSED) return 0;
  if (e->mode != JDLS_MODE_READ && e->mode != JDLS_MODE_WRITE) return 0;
  if (e->key_len > JDLS_MAX_KEY) return 0;
  if (e->ip_len != 4 && e->ip_len != 16) return 0;
  if (e->doorbell < -1 || e->doorbell >= (int32_t)JDLS_PROC_SLOTS) return 0;
  if (e->hash != jdls_hash(t->hash_seed, e->inode, e->dev, e->key, e->key_len)) return 0;
  (void)t;
  return 1;
}

static __thread int quiet_doorbell = -1;

/* The token of this thread's last grant (jdls_last_token). */
static __thread uint64_t last_token;

uint64_t jdls_last_token(void) { return last_token; }

/* The next fencing token. Called with the group mutex of the key held, so
 * the grants of one key take their tokens in grant order: per-key strictly
 * increasing (and globally, as one counter serves every key). */
static uint64_t take_token(jdls_table *t) {
  return __atomic_fetch_add(&t->hdr->next_token, 1, __ATOMIC_RELAXED);
}

void jdls_quiet_doorbell(int slot) { quiet_doorbell = slot; }

static void wake_entry(jdls_table *t, jdls_entry *e) {
  futex_wake(&e->state);
  if (quiet_doorbell >= 0 && e->doorbell == quiet_doorbell) return; /* the caller collects it */
  if (e->doorbell >= 0 && e->doorbell < (int32_t)JDLS_PROC_SLOTS) {
    /* No check that the slot still belongs to the entry's pid: a lock
     * server's entries carry its own pid but owners may name another, and
     * ringing a reassigned slot costs its owner one spurious scan. */
    jdls_proc_slot *s = &slots_of(t)[e->doorbell];
    __atomic_fetch_add(&s->bell, 1, __ATOMIC_ACQ_REL);
    futex_wake(&s->bell);
  }
}

static void free_entry(jdls_group *g, jdls_entry *e) {
  if (ALOAD(&e->state) == JDLS_STATE_WAITING) g->waiting--;
  ASTORE(&e->state, JDLS_STATE_FREE);
  g->count--;
}

static void grant_waiters(jdls_table *t, jdls_group *g, const jdls_entry *k);
static int reap_group_locked(jdls_table *t, jdls_group *g, int thorough);

/* Repair after a process died holding this group's mutex (EOWNERDEAD). Every
 * change to an entry writes `state` last when filling it and first when
 * freeing it, so a torn write leaves either a FREE entry (ignored) or a
 * complete one; anything else that fails validation is freed. Then count is
 * recomputed and any waiter the dead process should have granted is granted. */
static void group_repair(jdls_table *t, jdls_group *g) {
  uint32_t count = 0, waiting = 0;
  for (uint32_t i = 0; i < t->per_group; i++) {
    jdls_entry *e = entry_at(t, g, i);
    if (!entry_valid(t, e)) {
      ASTORE(&e->state, JDLS_STATE_FREE);
      futex_wake(&e->state);
    } else if (ALOAD(&e->state) != JDLS_STATE_FREE) {
      count++;
      if (ALOAD(&e->state) == JDLS_STATE_WAITING) waiting++;
    }
  }
  g->count = count;
  g->waiting = waiting;
  for (uint32_t i = 0; i < t->per_group; i++) {
    jdls_entry *e = entry_at(t, g, i);
    if (ALOAD(&e->state) == JDLS_STATE_WAITING) grant_waiters(t, g, e);
  }
}

static int group_lock(jdls_table *t, jdls_group *g) {
  int e = pthread_mutex_lock(&g->mutex);
  if (e == EOWNERDEAD) {
    /* The holder died inside the critical section. Repair, THEN mark the
     * mutex consistent: unlocking without pthread_mutex_consistent() makes
     * every later lock fail with ENOTRECOVERABLE, forever. */
    group_repair(t, g);
    pthread_mutex_consistent(&g->mutex);
    return JDLS_OK;
  }
  if (e == ENOTRECOVERABLE) return JDLS_E_RECOVER;
  if (e != 0) { errno = e; return JDLS_E_SYS; }
  return JDLS_OK;
}

static void group_unlock(jdls_group *g) { pthread_mutex_unlock(&g->mutex); }

/* ===== 4. the lock algorithm ============================================ */

static int modes_conflict(int a, int b) {
  return a == JDLS_MODE_WRITE || b == JDLS_MODE_WRITE;
}

static void fill_holder(const jdls_entry *e, jdls_holder *h) {
  if (!h) return;
  h->pid = e->pid;
  h->owner_pid = e->owner_pid;
  h->owner_tid = e->owner_tid;
  h->port = e->port;
  h->mode = e->mode;
  h->ip_len = e->ip_len;
  memcpy(h->ip, e->ip, sizeof h->ip);
}

/* Free every entry of the group held by the dead process (dead_pid,
 * dead_start). Only that process's: another live process may have been
 * given the same pid since, and its entries carry its own start time. */
static int reap_pid(jdls_table *t, jdls_group *g, uint32_t dead_pid, uint64_t dead_start) {
  int n = 0;
  for (uint32_t i = 0; i < t->per_group; i++) {
    jdls_entry *e = entry_at(t, g, i);
    if (ALOAD(&e->state) != JDLS_STATE_FREE && entry_of(e, dead_pid, dead_start)) {
      free_entry(g, e);
      n++;
    }
  }
  if (n) {
    __atomic_fetch_add(&t->hdr->tidy_ops, (uint64_t)n, __ATOMIC_RELAXED);
    for (uint32_t i = 0; i < t->per_group; i++) {
      jdls_entry *e = entry_at(t, g, i);
      if (ALOAD(&e->state) == JDLS_STATE_WAITING) grant_waiters(t, g, e);
    }
  }
  return n;
}

/* Reap the entries of dead processes among those that stand in the way of a
 * request on key k by owner o (holders and waiters of k, other owners).
 * Returns entries freed. `thorough` adds a read of /proc/<pid>/stat to the
 * kill(pid, 0): a zombie (killed, not yet reaped by its parent) or a recycled
 * pid passes kill() but must not keep a lock. The read costs ~5 us under the
 * group mutex, so a request that is going to queue asks kill() only (its
 * waits re-check thoroughly every JDLS_LIVENESS_TICK_MS); NOWAIT requests,
 * which get no second look, and the waiters' ticks check thoroughly. (Doing
 * it on every queued request doubled the hand-off time on 2 CPUs: the
 * releaser, re-queueing at once, kept the CPU its woken waiter shared.) */
static int reap_blockers(jdls_table *t, jdls_group *g, const jdls_entry *k,
                         const jdls_owner *o, int thorough, int held_only) {
  /* One look per process: a hot key's queue holds many entries of few
   * processes. By (pid, start): a live process must not vouch for a dead
   * one that had its pid. */
  uint32_t alive[16];
  uint64_t alive_start[16];
  unsigned nalive = 0;
  int n = 0;
  for (uint32_t i = 0; i < t->per_group; i++) {
    jdls_entry *e = entry_at(t, g, i);
    uint32_t s = ALOAD(&e->state);
    if (s == JDLS_STATE_FREE || (held_only && s != JDLS_STATE_HELD) || !entry_same_key(e, k)) continue;
    if (o && owner_eq(t, e, o)) continue;
    unsigned j = 0;
    while (j < nalive && !entry_of(e, alive[j], alive_start[j])) j++;
    if (j < nalive) continue;
    if (jdls_pid_alive(e->pid, e->pid_start, thorough)) {
      if (nalive < 16) { alive[nalive] = e->pid; alive_start[nalive++] = e->pid_start; }
    } else {
      n += reap_pid(t, g, e->pid, e->pid_start);
    }
  }
  return n;
}

/* Hand the key over: grant queued requests for key k in FIFO order, as many
 * as are compatible, stopping at the first that is not (a later request
 * never overtakes an earlier one). Mutex held. */
static void grant_waiters(jdls_table *t, jdls_group *g, const jdls_entry *k) {
  if (g->waiting == 0) return; /* the common release: nobody queues here */
  uint64_t inode = k->inode;
  int64_t dev = k->dev;
  uint32_t key_len = k->key_len;
  /* From the segment: a rewritten length must not overrun `key` (this was a
   * stack overflow in whichever process released the key). The key is then
   * unknown, and a waiter for it must not be stranded (a wait is only
   * re-examined when a blocker is reaped): hand over every queued key of
   * the group instead - each one's own length checked, so no deeper. */
  if (key_len > JDLS_MAX_KEY) {
    for (uint32_t i = 0; i < t->per_group; i++) {
      jdls_entry *e = entry_at(t, g, i);
      if (ALOAD(&e->state) == JDLS_STATE_WAITING && e->key_len <= JDLS_MAX_KEY) grant_waiters(t, g, e);
    }
    return;
  }
  uint8_t key[JDLS_MAX_KEY];
  memcpy(key, k->key, key_len); /* k may be freed below */
  for (;;) {
    jdls_entry *w = NULL;
    for (uint32_t i = 0; i < t->per_group; i++) {
      jdls_entry *e = entry_at(t, g, i);
      if (ALOAD(&e->state) == JDLS_STATE_WAITING && same_key(e, inode, dev, key, key_len) &&
          (!w || e->seq < w->seq))
        w = e;
    }
    if (!w) return;
    /* kill() only (a /proc read per hand-off is too dear under the mutex):
     * a dead waiter whose pid was recycled may be granted, but its entry
     * still names the dead (pid, start), which no live owner matches, and
     * the next thorough reap frees it. Our own pid is checked exactly. */
    if (!jdls_pid_alive(w->pid, w->pid_start, 0)) {
      /* Never hand a lock to a process that is gone. */
      free_entry(g, w);
      __atomic_fetch_add(&t->hdr->tidy_ops, 1, __ATOMIC_RELAXED);
      continue;
    }
    jdls_owner wo;
    owner_of(w, &wo);
    int blocked = 0;
    for (uint32_t i = 0; i < t->per_group; i++) {
      jdls_entry *e = entry_at(t, g, i);
      if (ALOAD(&e->state) == JDLS_STATE_HELD && same_key(e, inode, dev, key, key_len) &&
          !owner_eq(t, e, &wo) && modes_conflict(e->mode, w->mode)) {
        blocked = 1;
        break;
      }
    }
    if (blocked) return;
    /* Conversion: the owner's earlier lock on this key is replaced. */
    for (uint32_t i = 0; i < t->per_group; i++) {
      jdls_entry *e = entry_at(t, g, i);
      if (e != w && ALOAD(&e->state) == JDLS_STATE_HELD &&
          same_key(e, inode, dev, key, key_len) && owner_eq(t, e, &wo))
        free_entry(g, e);
    }
    if (t->flags & JDLS_FLAG_TIMESTAMPS) w->stamp_ms = now_ms();
    __atomic_store_n(&w->token, take_token(t), __ATOMIC_RELAXED); /* before state: the waiter reads it after */
    g->waiting--;
    ASTORE(&w->state, JDLS_STATE_HELD);
    wake_entry(t, w);
  }
}

static jdls_entry *alloc_entry(jdls_table *t, jdls_group *g) {
  if (g->count >= t->per_group) return NULL;
  for (uint32_t i = 0; i < t->per_group; i++) {
    jdls_entry *e = entry_at(t, g, i);
    if (ALOAD(&e->state) == JDLS_STATE_FREE) return e;
  }
  return NULL;
}

/* Fill a free entry for (o, r) and publish it with `state` last. */
static void fill_entry(jdls_table *t, jdls_group *g, jdls_entry *e, const jdls_owner *o,
                       const jdls_request *r, uint32_t hash, uint32_t state, int doorbell) {
  e->mode = (uint8_t)r->mode;
  e->ip_len = o->ip_len;
  e->key_len = (uint16_t)r->key_len;
  e->hash = hash;
  e->pid = o->pid;
  e->owner_pid = o->owner_pid;
  e->owner_tid = o->owner_tid;
  e->port = o->port;
  e->doorbell = doorbell;
  e->pid_start = o->pid_start;
  e->conn = o->conn;
  e->wflags = state == JDLS_STATE_WAITING ? (uint8_t)(r->flags & JDLS_REQ_BREAK_DEADLOCK) : 0;
  memset(e->pad_e, 0, sizeof e->pad_e);
  __atomic_store_n(&e->token, state == JDLS_STATE_HELD ? take_token(t) : 0, __ATOMIC_RELAXED);
  e->wait_no = state == JDLS_STATE_WAITING ? __atomic_fetch_add(&t->hdr->next_wait, 1, __ATOMIC_RELAXED) : 0;
  e->inode = r->inode;
  e->dev = r->dev;
  /* Atomic: jdls_wait_poll reads seq without the mutex (see there). */
  __atomic_store_n(&e->seq, g->next_seq++, __ATOMIC_RELAXED);
  e->stamp_ms = (t->flags & JDLS_FLAG_TIMESTAMPS) ? now_ms() : 0;
  memcpy(e->ip, o->ip, sizeof e->ip);
  memcpy(e->key, r->key, r->key_len);
  g->count++;
  if (state == JDLS_STATE_WAITING) g->waiting++;
  if (g->count > g->max_count) g->max_count = g->count;
  ASTORE(&e->state, state);
}

static int check_request(const jdls_owner *o, const jdls_request *r) {
  if (r->key_len > JDLS_MAX_KEY) return JDLS_E_KEY_TOO_LONG;
  if (r->mode != JDLS_MODE_READ && r->mode != JDLS_MODE_WRITE) return JDLS_E_ARG;
  if (o->ip_len != 4 && o->ip_len != 16) return JDLS_E_ARG;
  if (r->key_len && !r->key) return JDLS_E_ARG;
  if (r->flags & ~(JDLS_REQ_NOWAIT | JDLS_REQ_BREAK_DEADLOCK)) return JDLS_E_ARG;
  return JDLS_OK;
}

static int detect_deadlock(jdls_table *t, const jdls_ticket *tk);

/* ===== 5. the public lock calls ========================================= */

int jdls_lock_begin(jdls_table *t, const jdls_owner *o, const jdls_request *r,
                    int doorbell, jdls_ticket *ticket, jdls_holder *holder) {
  int rc = check_request(o, r);
  if (rc != JDLS_OK) return rc;
  /* A retired table (jdls -K/-Ko took it out of service) is nobody's
   * mechanism any more: every other process locks records elsewhere now,
   * so a grant here would be a second holder. One load: a process that
   * keeps a mapping (a lock server) learns it at its next request. */
  if (__atomic_load_n(&t->hdr->service, __ATOMIC_ACQUIRE) == JDLS_SERVICE_RETIRED) return JDLS_E_RETIRED;
  uint32_t hash = jdls_hash(t->hash_seed, r->inode, r->dev, r->key, r->key_len);
  uint32_t gi = hash % t->ngroups;
  jdls_group *g = group_at(t, gi);
  if ((rc = group_lock(t, g)) != JDLS_OK) return rc;
  for (int round = 0;; round++) {
    jdls_entry *mine = NULL, *blocker = NULL, *first_other = NULL, *free_e = NULL, *inherited = NULL;
    int others_waiting = 0;
    uint32_t seen = 0;
    for (uint32_t i = 0; i < t->per_group; i++) {
      jdls_entry *e = entry_at(t, g, i);
      uint32_t s = ALOAD(&e->state);
      if (s == JDLS_STATE_FREE) {
        if (!free_e) free_e = e;
        if (seen >= g->count) break; /* every used entry seen */
        continue;
      }
      seen++;
      if (!same_key(e, r->inode, r->dev, r->key, r->key_len)) continue;
      int own = owner_eq(t, e, o);
      if (s == JDLS_STATE_HELD) {
        if (own) {
          mine = e;
          if (!entry_of(e, o->pid, o->pid_start)) inherited = e;
        } else {
          if (!first_other) first_other = e;
          if (!blocker && modes_conflict(e->mode, r->mode)) blocker = e;
        }
      } else if (s == JDLS_STATE_WAITING && !own) {
        /* (A REFUSED entry neither queues nor blocks.) */
        others_waiting = 1;
      }
    }
    /* On a -P table the owner is the port, so "our" lock may be an entry of
     * another process on the same port. If that process is dead, its entry
     * is reaped, not inherited: it would be freed under us at the next reap
     * (it still names the dead process). A live one is shared, by design. */
    if (inherited && round < 8 && !jdls_pid_alive(inherited->pid, inherited->pid_start, 1) &&
        reap_pid(t, g, inherited->pid, inherited->pid_start) > 0)
      continue;
    if (!blocker && mine) {
      /* Re-lock by the owner: succeeds; READ<->WRITE converts in place. An
       * owner's own upgrade does not queue behind waiters that wait for it. */
      int down = mine->mode == JDLS_MODE_WRITE && r->mode == JDLS_MODE_READ;
      /* A conversion is a new grant, so a new token (a resource must see
       * the exclusive lock outrank the shared one it replaced); a re-lock
       * in the same mode keeps its token. */
      if (mine->mode != (uint8_t)r->mode) __atomic_store_n(&mine->token, take_token(t), __ATOMIC_RELAXED);
      mine->mode = (uint8_t)r->mode;
      last_token = mine->token;
      if (down) grant_waiters(t, g, mine);
      group_unlock(g);
      return JDLS_OK;
    }
    if (!blocker && !others_waiting) {
      if (!free_e) free_e = alloc_entry(t, g);
      if (!free_e) {
        if (round < 2 && reap_group_locked(t, g, 0) > 0) continue;
        group_unlock(g);
        return JDLS_E_TABLE_FULL;
      }
      fill_entry(t, g, free_e, o, r, hash, JDLS_STATE_HELD, -1);
      last_token = free_e->token;
      group_unlock(g);
      return JDLS_OK;
    }
    /* Someone stands in the way. Dead processes never release: clear them
     * now, not at the next tidy-up, and look again. */
    jdls_entry probe;
    probe.inode = r->inode;
    probe.dev = r->dev;
    probe.key_len = (uint16_t)r->key_len;
    memcpy(probe.key, r->key, r->key_len);
    if (round < 8 && reap_blockers(t, g, &probe, o, (r->flags & JDLS_REQ_NOWAIT) != 0, 0) > 0) continue;
    if (r->flags & JDLS_REQ_NOWAIT) {
      fill_holder(blocker ? blocker : first_other ? first_other : mine, holder);
      group_unlock(g);
      return JDLS_CONFLICT;
    }
    if (!free_e) free_e = alloc_entry(t, g);
    if (!free_e) {
      if (round < 2 && reap_group_locked(t, g, 0) > 0) continue;
      group_unlock(g);
      return JDLS_E_TABLE_FULL;
    }
    fill_entry(t, g, free_e, o, r, hash, JDLS_STATE_WAITING, doorbell);
    ticket->group = gi;
    ticket->slot = (uint32_t)(((uint8_t *)free_e - (uint8_t *)(g + 1)) / sizeof(jdls_entry));
    ticket->seq = free_e->seq;
    if (holder && (blocker || first_other)) fill_holder(blocker ? blocker : first_other, holder);
    group_unlock(g);
    /* The request waits now: does its wait close a cycle of waiters? */
    if (__atomic_load_n(&t->hdr->deadlock_policy, __ATOMIC_RELAXED) != JDLS_DEADLOCK_OFF)
      return detect_deadlock(t, ticket);
    return JDLS_QUEUED;
  }
}

static jdls_entry *ticket_entry(jdls_table *t, const jdls_ticket *tk, jdls_group **gout) {
  if (tk->group >= t->ngroups || tk->slot >= t->per_group) return NULL;
  jdls_group *g = group_at(t, tk->group);
  *gout = g;
  return entry_at(t, g, tk->slot);
}

int jdls_wait_poll(jdls_table *t, const jdls_ticket *tk, int reap) {
  jdls_group *g;
  jdls_entry *e = ticket_entry(t, tk, &g);
  if (!e) return JDLS_E_ARG;
  if (!reap) {
    /* Without the mutex (the waiter thread and takeGranted look at every
     * pending ticket this way). The slot may have been freed and refilled
     * with another request meanwhile; the order makes that safe: `state` is
     * loaded (acquire) BEFORE `seq`, and fill_entry stores `seq` before it
     * publishes `state` (release). So if the state we saw is a newer
     * request's, we also see that request's seq, never ours (seqs of a group
     * never repeat), and answer E_ARG, not its HELD. `seq` is an atomic load
     * so that it cannot tear (64 bits; a plain read racing fill_entry's
     * write is a data race even where it does not tear). */
    uint32_t s = ALOAD(&e->state);
    uint64_t seq = __atomic_load_n(&e->seq, __ATOMIC_RELAXED);
    if (seq != tk->seq || s == JDLS_STATE_FREE) return JDLS_E_ARG;
    if (s == JDLS_STATE_REFUSED) return JDLS_DEADLOCK;
    if (s != JDLS_STATE_HELD) return JDLS_QUEUED;
    /* Ours and HELD: only we free it, so the token read is ours too. */
    last_token = __atomic_load_n(&e->token, __ATOMIC_RELAXED);
    return JDLS_OK;
  }
  int rc = group_lock(t, g);
  if (rc != JDLS_OK) return rc;
  uint32_t s = ALOAD(&e->state);
  if (e->seq != tk->seq || s == JDLS_STATE_FREE) rc = JDLS_E_ARG;
  else if (s == JDLS_STATE_HELD) {
    last_token = e->token;
    rc = JDLS_OK;
  } else if (s == JDLS_STATE_REFUSED) rc = JDLS_DEADLOCK;
  else {
    jdls_owner o;
    owner_of(e, &o);
    /* Only the holders: a dead request queued ahead of us is skipped by the
     * hand-off itself (grant_waiters never grants to the dead), and checking
     * every queued entry on every tick of every waiter cost the square of
     * the queue (100 remote waiters on one key: p99 hand-off 337 ms). */
    if (reap_blockers(t, g, e, &o, reap >= JDLS_REAP_THOROUGH, 1) > 0) grant_waiters(t, g, e);
    rc = ALOAD(&e->state) == JDLS_STATE_HELD ? JDLS_OK : JDLS_QUEUED;
    if (rc == JDLS_OK) last_token = e->token;
  }
  group_unlock(g);
  return rc;
}

int jdls_wait_cancel(jdls_table *t, const jdls_ticket *tk) {
  jdls_group *g;
  jdls_entry *e = ticket_entry(t, tk, &g);
  if (!e) return JDLS_E_ARG;
  int rc = group_lock(t, g);
  if (rc != JDLS_OK) return rc;
  uint32_t s = ALOAD(&e->state);
  if (e->seq != tk->seq || s == JDLS_STATE_FREE) rc = JDLS_E_ARG;
  else if (s == JDLS_STATE_HELD) {
    last_token = e->token;
    rc = JDLS_OK;
  } else if (s == JDLS_STATE_REFUSED) {
    /* The verdict collected: the entry goes (it queued for nobody). */
    free_entry(g, e);
    rc = JDLS_DEADLOCK;
  } else {
    /* Leaving the queue may unblock those behind us (shared requests queued
     * behind our exclusive one while a shared lock is held). */
    free_entry(g, e);
    grant_waiters(t, g, e);
    rc = JDLS_TIMEOUT;
  }
  group_unlock(g);
  return rc;
}

int jdls_lock(jdls_table *t, const jdls_owner *o, const jdls_request *r,
              int timeout_ms, jdls_holder *holder) {
  jdls_ticket tk;
  int rc = jdls_lock_begin(t, o, r, -1, &tk, holder);
  if (rc != JDLS_QUEUED) return rc;
  jdls_group *g;
  jdls_entry *e = ticket_entry(t, &tk, &g);
  int64_t deadline = timeout_ms >= 0 ? mono_ms() + timeout_ms : INT64_MAX;
  int64_t next_tick = mono_ms() + JDLS_LIVENESS_TICK_MS;
  unsigned ticks = 0;
  for (;;) {
    uint32_t s = ALOAD(&e->state);
    if (s == JDLS_STATE_HELD) {
      last_token = __atomic_load_n(&e->token, __ATOMIC_RELAXED);
      return JDLS_OK;
    }
    if (s == JDLS_STATE_REFUSED) return jdls_wait_cancel(t, &tk);
    if (s != JDLS_STATE_WAITING) return JDLS_E_ARG;
    int64_t now = mono_ms();
    if (now >= deadline) return jdls_wait_cancel(t, &tk);
    if (now >= next_tick) {
      rc = jdls_wait_poll(t, &tk, ++ticks % JDLS_THOROUGH_EVERY == 0 ? JDLS_REAP_THOROUGH : JDLS_REAP_QUICK);
      if (rc == JDLS_DEADLOCK) return jdls_wait_cancel(t, &tk);
      if (rc != JDLS_QUEUED) return rc;
      next_tick = now + JDLS_LIVENESS_TICK_MS;
    }
    int64_t until = deadline < next_tick ? deadline : next_tick;
    futex_wait(&e->state, JDLS_STATE_WAITING, (int)(until - now));
  }
}

int jdls_unlock(jdls_table *t, const jdls_owner *o, uint64_t inode, int64_t dev,
                const uint8_t *key, uint32_t key_len) {
  if (key_len > JDLS_MAX_KEY) return JDLS_E_KEY_TOO_LONG;
  uint32_t hash = jdls_hash(t->hash_seed, inode, dev, key, key_len);
  jdls_group *g = group_at(t, hash % t->ngroups);
  int rc = group_lock(t, g);
  if (rc != JDLS_OK) return rc;
  rc = JDLS_NOT_HELD;
  for (uint32_t i = 0; i < t->per_group; i++) {
    jdls_entry *e = entry_at(t, g, i);
    if (ALOAD(&e->state) == JDLS_STATE_HELD && same_key(e, inode, dev, key, key_len) &&
        owner_eq(t, e, o)) {
      free_entry(g, e);
      grant_waiters(t, g, e);
      rc = JDLS_OK;
      break;
    }
  }
  group_unlock(g);
  return rc;
}

int jdls_unlock_all(jdls_table *t, const jdls_owner *o, int one_file,
                    uint64_t inode, int64_t dev) {
  int freed = 0;
  for (uint32_t gi = 0; gi < t->ngroups; gi++) {
    jdls_group *g = group_at(t, gi);
    if (__atomic_load_n(&g->count, __ATOMIC_RELAXED) == 0) continue;
    int rc = group_lock(t, g);
    if (rc != JDLS_OK) return rc;
    for (uint32_t i = 0; i < t->per_group; i++) {
      jdls_entry *e = entry_at(t, g, i);
      if (ALOAD(&e->state) != JDLS_STATE_HELD || !owner_eq(t, e, o)) continue;
      if (one_file && (e->inode != inode || e->dev != dev)) continue;
      free_entry(g, e);
      grant_waiters(t, g, e);
      freed++;
    }
    group_unlock(g);
  }
  return freed;
}

int jdls_status(jdls_table *t, const jdls_owner *o, uint64_t inode, int64_t dev,
                const uint8_t *key, uint32_t key_len, jdls_holder *holder) {
  if (key_len > JDLS_MAX_KEY) return JDLS_E_KEY_TOO_LONG;
  uint32_t hash = jdls_hash(t->hash_seed, inode, dev, key, key_len);
  jdls_group *g = group_at(t, hash % t->ngroups);
  int rc = group_lock(t, g);
  if (rc != JDLS_OK) return rc;
  int result = JDLS_RL_FREE;
  for (uint32_t i = 0; i < t->per_group; i++) {
    jdls_entry *e = entry_at(t, g, i);
    if (ALOAD(&e->state) != JDLS_STATE_HELD || !same_key(e, inode, dev, key, key_len)) continue;
    int code = e->mode == JDLS_MODE_WRITE ? JDLS_RL_WRITE : JDLS_RL_READ;
    if (owner_eq(t, e, o)) { result = code; break; }
    if (result == JDLS_RL_FREE) {
      /* Dead (or a zombie): as good as free; the next conflict reaps it. */
      if (!jdls_pid_alive(e->pid, e->pid_start, 1)) continue;
      result = -code;
      fill_holder(e, holder);
    }
  }
  group_unlock(g);
  return result;
}

int jdls_conflict(jdls_table *t, const jdls_owner *o, uint64_t inode, int64_t dev,
                  const uint8_t *key, uint32_t key_len, int mode, jdls_holder *holder) {
  if (key_len > JDLS_MAX_KEY) return JDLS_E_KEY_TOO_LONG;
  if (mode != JDLS_MODE_READ && mode != JDLS_MODE_WRITE) return JDLS_E_ARG;
  uint32_t hash = jdls_hash(t->hash_seed, inode, dev, key, key_len);
  jdls_group *g = group_at(t, hash % t->ngroups);
  int rc = group_lock(t, g);
  if (rc != JDLS_OK) return rc;
  int found = 0;
  for (uint32_t i = 0; i < t->per_group && !found; i++) {
    jdls_entry *e = entry_at(t, g, i);
    if (ALOAD(&e->state) != JDLS_STATE_HELD || !same_key(e, inode, dev, key, key_len)) continue;
    if (owner_eq(t, e, o) || !modes_conflict(e->mode, mode)) continue;
    if (!jdls_pid_alive(e->pid, e->pid_start, 1)) continue; /* reaped at the next conflict */
    fill_holder(e, holder);
    found = 1;
  }
  group_unlock(g);
  return found;
}

/* ===== 6. upkeep ======================================================== */

/* Free entries of dead processes in one group (mutex held). `thorough`
 * also compares start times (a /proc read per process): the monitor's
 * tidy-up does that; a request that finds its group full only asks kill(),
 * once per distinct pid, because it holds the group mutex meanwhile. */
static int reap_group_locked(jdls_table *t, jdls_group *g, int thorough) {
  /* Cached by (pid, start), as in reap_blockers. */
  uint32_t alive[64];
  uint64_t alive_start[64];
  unsigned nalive = 0;
  int n = 0;
  for (uint32_t i = 0; i < t->per_group; i++) {
    jdls_entry *e = entry_at(t, g, i);
    if (ALOAD(&e->state) == JDLS_STATE_FREE) continue;
    unsigned k = 0;
    while (k < nalive && !entry_of(e, alive[k], alive_start[k])) k++;
    if (k < nalive) continue;
    if (jdls_pid_alive(e->pid, e->pid_start, thorough)) {
      if (nalive < 64) { alive[nalive] = e->pid; alive_start[nalive++] = e->pid_start; }
    } else {
      n += reap_pid(t, g, e->pid, e->pid_start);
    }
  }
  return n;
}

int jdls_tidy(jdls_table *t) {
  int freed = 0;
  for (uint32_t gi = 0; gi < t->ngroups; gi++) {
    jdls_group *g = group_at(t, gi);
    if (__atomic_load_n(&g->count, __ATOMIC_RELAXED) == 0) continue;
    int rc = group_lock(t, g);
    if (rc != JDLS_OK) return rc;
    freed += reap_group_locked(t, g, 1);
    group_unlock(g);
  }
  return freed;
}

int jdls_list(jdls_table *t, uint32_t first, uint32_t n, jdls_row *rows,
              uint32_t cap, uint32_t *next_group) {
  uint32_t out = 0, gi = first;
  uint32_t end = first + n > t->ngroups ? t->ngroups : first + n;
  for (; gi < end; gi++) {
    jdls_group *g = group_at(t, gi);
    if (__atomic_load_n(&g->count, __ATOMIC_RELAXED) == 0) continue;
    if (cap - out < t->per_group) break; /* a group is listed whole */
    int rc = group_lock(t, g);
    if (rc != JDLS_OK) { *next_group = gi; return rc; }
    for (uint32_t i = 0; i < t->per_group; i++) {
      jdls_entry *e = entry_at(t, g, i);
      uint32_t s = ALOAD(&e->state);
      if (s == JDLS_STATE_FREE) continue;
      jdls_row *row = &rows[out++];
      row->group = gi;
      row->slot = i;
      row->state = s;
      row->queued = 0;
      /* The fields and the key's own bytes, not all 512 (the rest of the
       * row's key is never read). */
      memcpy(&row->entry, e, offsetof(jdls_entry, key) + (e->key_len <= JDLS_MAX_KEY ? e->key_len : JDLS_MAX_KEY));
      if (s == JDLS_STATE_HELD) {
        for (uint32_t j = 0; j < t->per_group; j++) {
          jdls_entry *w = entry_at(t, g, j);
          if (ALOAD(&w->state) == JDLS_STATE_WAITING && entry_same_key(w, e)) row->queued++;
        }
      }
    }
    group_unlock(g);
  }
  *next_group = gi;
  return (int)out;
}

void jdls_count_lock_retry(jdls_table *t) {
  __atomic_fetch_add(&t->hdr->lock_retries, 1, __ATOMIC_RELAXED);
}

void jdls_table_usage(jdls_table *t, jdls_usage *u) {
  memset(u, 0, sizeof *u);
  for (uint32_t gi = 0; gi < t->ngroups; gi++) {
    jdls_group *g = group_at(t, gi);
    uint32_t count = __atomic_load_n(&g->count, __ATOMIC_RELAXED);
    uint32_t waiting = __atomic_load_n(&g->waiting, __ATOMIC_RELAXED);
    uint32_t held = waiting <= count ? count - waiting : 0;
    u->held += held;
    u->waiting += waiting;
    if (held > u->max_in_group) u->max_in_group = held;
    uint32_t hw = __atomic_load_n(&g->max_count, __ATOMIC_RELAXED);
    if (hw > u->high_water) u->high_water = hw;
  }
}

/* The monitor's (pid, start) pair is two words, and a claim must publish
 * both as one. History: the claim CASed the pid in, then wrote the start; a
 * reader in between saw the new pid with the previous monitor's start time,
 * judged the new monitor dead, and a second claimer could take the header
 * over from it - two monitors. (The window is a few instructions wide:
 * jdls-locker claim-race did not hit it in 260,000 rounds on 2 CPUs, but a
 * preempted claimer widens it to a time slice.) Now the CAS installs the pid with MONITOR_CLAIMING set
 * (pids stay below 2^22, so bit 31 is free), the start is written, then the
 * plain pid is stored (release). A reader that sees the bit knows a live
 * process is claiming and reads no start; one that sees a plain pid sees its
 * start (jdls_monitor_read re-reads the pid to catch a claim in between). A
 * claimer killed between its two stores leaves the bit set on a dead pid,
 * which the next claimer takes over like any dead monitor. */
#define MONITOR_CLAIMING 0x80000000U

void jdls_monitor_read(jdls_table *t, uint32_t *pid, uint64_t *start) {
  jdls_header *h = t->hdr;
  for (int tries = 0;; tries++) {
    uint32_t p = ALOAD(&h->monitor_pid);
    if (p & MONITOR_CLAIMING) {
      /* Being claimed by that live process: it is the monitor, start not
       * known yet (0: do not compare). */
      *pid = p & ~MONITOR_CLAIMING;
      *start = 0;
      return;
    }
    uint64_t s = __atomic_load_n(&h->monitor_start, __ATOMIC_ACQUIRE);
    if (ALOAD(&h->monitor_pid) == p || tries >= 100) {
      *pid = p;
      *start = s;
      return;
    }
  }
}

uint32_t jdls_claim_monitor(jdls_table *t, uint32_t pid, uint64_t pid_start) {
  jdls_header *h = t->hdr;
  for (int tries = 0; tries < 1000; tries++) {
    uint32_t raw = ALOAD(&h->monitor_pid);
    uint32_t cur = raw & ~MONITOR_CLAIMING;
    if (raw & MONITOR_CLAIMING) {
      if (cur != pid && jdls_pid_alive(cur, 0, 0)) {
        /* Another process is between its two stores: let it finish. */
        if (tries >= 999) return cur;
        sched_yield();
        continue;
      }
    } else if (cur != 0 && cur != pid) {
      uint32_t p;
      uint64_t s;
      jdls_monitor_read(t, &p, &s);
      if (p != raw) continue; /* changed meanwhile: look again */
      if (jdls_pid_alive(cur, s, 1)) return cur;
    }
    if (__atomic_compare_exchange_n(&h->monitor_pid, &raw, pid | MONITOR_CLAIMING, 0, __ATOMIC_ACQ_REL,
                                    __ATOMIC_ACQUIRE)) {
      __atomic_store_n(&h->monitor_start, pid_start, __ATOMIC_RELEASE);
      ASTORE(&h->monitor_pid, pid);
      return 0;
    }
  }
  uint32_t p;
  uint64_t s;
  jdls_monitor_read(t, &p, &s);
  return p;
}

int jdls_table_check(jdls_table *t) {
  int problems = 0;
  for (uint32_t gi = 0; gi < t->ngroups; gi++) {
    jdls_group *g = group_at(t, gi);
    if (group_lock(t, g) != JDLS_OK) { problems++; continue; }
    uint32_t count = 0, waiting = 0;
    for (uint32_t i = 0; i < t->per_group; i++) {
      jdls_entry *e = entry_at(t, g, i);
      if (!entry_valid(t, e)) { problems++; continue; }
      uint32_t s = ALOAD(&e->state);
      if (s == JDLS_STATE_FREE) continue;
      count++;
      if (s == JDLS_STATE_WAITING) waiting++;
      if (e->hash % t->ngroups != gi) problems++;
      if (s != JDLS_STATE_HELD) continue;
      /* No two owners may hold one key in conflicting modes. */
      for (uint32_t j = i + 1; j < t->per_group; j++) {
        jdls_entry *f = entry_at(t, g, j);
        if (ALOAD(&f->state) != JDLS_STATE_HELD || !entry_same_key(e, f)) continue;
        jdls_owner fo;
        owner_of(f, &fo);
        if (owner_eq(t, e, &fo) || modes_conflict(e->mode, f->mode)) problems++;
      }
    }
    if (count != g->count || waiting != g->waiting) problems++;
    group_unlock(g);
  }
  return problems;
}

int jdls_slot_claim(jdls_table *t) {
  if (t->slot >= 0) return t->slot;
  uint32_t me = (uint32_t)getpid();
  jdls_proc_slot *slots = slots_of(t);
  for (uint32_t i = 0; i < JDLS_PROC_SLOTS; i++) {
    uint32_t cur = ALOAD(&slots[i].pid);
    /* kill() only: pid and start time cannot be published together, so a
     * thorough check could see a fresh claimant with its predecessor's start
     * time and steal its slot. A recycled pid merely keeps a slot busy. */
    if (cur != 0 && jdls_pid_alive(cur, 0, 0)) continue;
    if (__atomic_compare_exchange_n(&slots[i].pid, &cur, me, 0, __ATOMIC_ACQ_REL,
                                    __ATOMIC_ACQUIRE)) {
      slots[i].pid_start = jdls_pid_start(me);
      t->slot = (int)i;
      return (int)i;
    }
  }
  return JDLS_E_NO_SLOT;
}

void jdls_slot_release(jdls_table *t) {
  if (t->slot < 0) return;
  uint32_t me = (uint32_t)getpid();
  __atomic_compare_exchange_n(&slots_of(t)[t->slot].pid, &me, 0, 0, __ATOMIC_ACQ_REL,
                              __ATOMIC_ACQUIRE);
  t->slot = -1;
}

/* Is robust mutex m held by thread `tid`, its lock completed? A robust
 * mutex keeps its owner's TID in the lock word (the kernel clears it when
 * the owner dies). Listed on the owner's robust list (__next set) means
 * glibc's own lock code finished: a jump out of that code, between taking
 * the word and listing the mutex, cannot be undone here - unlocking would
 * unlink it from a list it is not on. glibc x86_64/aarch64 layout. */
static int held_by(pthread_mutex_t *m, int tid) {
  int w = __atomic_load_n(&m->__data.__lock, __ATOMIC_ACQUIRE);
  if ((w & FUTEX_TID_MASK) != tid) return 0;
  return __atomic_load_n(&m->__data.__list.__next, __ATOMIC_RELAXED) != NULL;
}

int jdls_release_abandoned(jdls_table *t) {
  if (!t->hdr) return 0;
  int tid = (int)syscall(SYS_gettid);
  int n = 0;
  for (uint32_t gi = 0; gi < t->ngroups; gi++) {
    jdls_group *g = group_at(t, gi);
    if (!held_by(&g->mutex, tid)) continue;
    /* As for a holder that died inside the section: it will never finish. */
    group_repair(t, g);
    group_unlock(g);
    n++;
  }
  /* detect_deadlock's mutex guards only its own ring and the DFS's reads. */
  if (held_by(&t->hdr->detect_mutex, tid)) {
    pthread_mutex_unlock(&t->hdr->detect_mutex);
    n++;
  }
  return n;
}

int jdls_debug_hold_group(jdls_table *t, uint32_t gi) {
  if (gi >= t->ngroups) return JDLS_E_ARG;
  jdls_group *g = group_at(t, gi);
  int rc = group_lock(t, g);
  if (rc != JDLS_OK) return rc;
  jdls_entry *e = alloc_entry(t, g);
  if (e) {
    /* A torn write: the state is published but the rest is garbage. */
    e->mode = 77;
    e->key_len = 9999;
    ASTORE(&e->state, JDLS_STATE_HELD);
    g->count += 5;
  }
  return JDLS_OK; /* mutex still held: the caller is about to be killed */
}

const char *jdls_rc_name(int rc) {
  switch (rc) {
    case JDLS_OK: return "OK";
    case JDLS_CONFLICT: return "CONFLICT";
    case JDLS_QUEUED: return "QUEUED";
    case JDLS_TIMEOUT: return "TIMEOUT";
    case JDLS_NOT_HELD: return "NOT_HELD";
    case JDLS_DEADLOCK: return "DEADLOCK";
    case JDLS_E_TABLE_FULL: return "TABLE_FULL";
    case JDLS_E_KEY_TOO_LONG: return "KEY_TOO_LONG";
    case JDLS_E_ARG: return "BAD_ARGUMENT";
    case JDLS_E_NO_TABLE: return "NO_TABLE";
    case JDLS_E_BAD_TABLE: return "BAD_TABLE";
    case JDLS_E_SYS: return "SYSTEM";
    case JDLS_E_NO_SLOT: return "NO_PROCESS_SLOT";
    case JDLS_E_EXISTS: return "EXISTS";
    case JDLS_E_RECOVER: return "NOT_RECOVERABLE";
    case JDLS_E_RETIRED: return "RETIRED";
    case JDLS_E_UNTRUSTED: return "UNTRUSTED";
    default: return NULL;
  }
}

const char *jdls_strerror(int rc) {
  switch (rc) {
    case JDLS_OK: return "lock granted";
    case JDLS_CONFLICT: return "record is locked by another owner";
    case JDLS_QUEUED: return "request queued";
    case JDLS_TIMEOUT: return "timed out waiting for the lock";
    case JDLS_NOT_HELD: return "lock not held by this owner";
    case JDLS_DEADLOCK: return "refused: waiting would close a cycle of waiters (deadlock)";
    case JDLS_E_TABLE_FULL: return "Error 37: lock table full (the key's group has no free entry)";
    case JDLS_E_KEY_TOO_LONG: return "key longer than 512 bytes";
    case JDLS_E_ARG: return "invalid argument";
    case JDLS_E_NO_TABLE: return "no lock table for this JBCRELEASEDIR (start the monitor with jdls -ib)";
    case JDLS_E_BAD_TABLE: return "the shared memory segment is not a lock table of this version (remove it with jdls -Ko)";
    case JDLS_E_SYS: return "system call failed";
    case JDLS_E_NO_SLOT: return "no free process slot for asynchronous waits";
    case JDLS_E_EXISTS: return "lock table exists already";
    case JDLS_E_RECOVER: return "a lock group is not recoverable (remove the table with jdls -Ko)";
    case JDLS_E_RETIRED: return "the lock table was taken out of service (jdls -K/-Ko): it takes no new locks";
    case JDLS_E_UNTRUSTED: return "the file at the lock table's name was not made by this installation (wrong owner, mode or links): refused";
    default: return "unknown error";
  }
}

/* ===== 8. fencing tokens and deadlock detection ========================= */

uint64_t jdls_token_of(jdls_table *t, const jdls_owner *o, uint64_t inode, int64_t dev,
                       const uint8_t *key, uint32_t key_len) {
  if (key_len > JDLS_MAX_KEY) return 0;
  uint32_t hash = jdls_hash(t->hash_seed, inode, dev, key, key_len);
  jdls_group *g = group_at(t, hash % t->ngroups);
  if (group_lock(t, g) != JDLS_OK) return 0;
  uint64_t token = 0;
  for (uint32_t i = 0; i < t->per_group; i++) {
    jdls_entry *e = entry_at(t, g, i);
    if (ALOAD(&e->state) == JDLS_STATE_HELD && same_key(e, inode, dev, key, key_len) && owner_eq(t, e, o)) {
      token = e->token;
      break;
    }
  }
  group_unlock(g);
  return token;
}

void jdls_token_floor(jdls_table *t, uint64_t floor) {
  uint64_t cur = __atomic_load_n(&t->hdr->next_token, __ATOMIC_RELAXED);
  while (cur < floor &&
         !__atomic_compare_exchange_n(&t->hdr->next_token, &cur, floor, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
  }
}

uint64_t jdls_token_peek(jdls_table *t) { return __atomic_load_n(&t->hdr->next_token, __ATOMIC_RELAXED); }

int jdls_set_deadlock_policy(jdls_table *t, uint32_t policy) {
  if (policy > JDLS_DEADLOCK_BREAK) return JDLS_E_ARG;
  __atomic_store_n(&t->hdr->deadlock_policy, policy, __ATOMIC_RELAXED);
  return JDLS_OK;
}

int jdls_read_report(jdls_table *t, uint64_t n, jdls_deadlock_report *out) {
  if (n == 0) return JDLS_E_ARG;
  jdls_deadlock_report *r = &t->hdr->reports[(n - 1) % JDLS_REPORTS];
  if (__atomic_load_n(&r->number, __ATOMIC_ACQUIRE) != n) return JDLS_NOT_HELD;
  memcpy(out, r, sizeof *out);
  __atomic_thread_fence(__ATOMIC_ACQUIRE);
  if (__atomic_load_n(&r->number, __ATOMIC_RELAXED) != n) return JDLS_NOT_HELD;
  /* From the segment: clamp what a reader will index with. */
  if (out->members > JDLS_DEADLOCK_DEPTH) out->members = JDLS_DEADLOCK_DEPTH;
  if (out->victim < -1 || out->victim >= (int32_t)JDLS_REPORT_MEMBERS) out->victim = -1;
  return JDLS_OK;
}

/*
 * Deadlock detection (docs/deadlocks.md).
 *
 * The wait-for graph: an owner that has a WAITING entry for a key waits for
 * every OTHER owner that holds the key in a conflicting mode, and - the
 * queue is strictly FIFO (grant_waiters) - for every other owner with an
 * earlier WAITING entry for the key. Every owner of the installation's
 * table is in it: local processes and every lock-server process's clients.
 *
 * When: a request that starts to wait looks for a cycle through ITSELF
 * (jdls_lock_begin, after queueing, the group mutex released). Any cycle is
 * closed by some wait starting, and that wait's own look finds it: the look
 * starts after its entry is published and serialises with every other look
 * (detect_mutex), so of two waits that close one cycle together, the later
 * look sees both. Hence no periodic re-check is needed for the table.
 *
 * Why a snapshot plus a verification: groups are read one at a time (the
 * table's rule: never two group mutexes at once), so the snapshot is not a
 * consistent cut - an edge read early may be gone when a late one is read.
 * A cycle found in it is therefore re-read: each of its edges, under its
 * group's mutex, must still be the same entries (same seq; a holder with
 * the same token, which changes at every grant and conversion; a waiter
 * still WAITING). An entry that is the same at both reads was there
 * throughout (seqs and tokens never repeat; a WAITING entry never returns
 * to WAITING), and every first read precedes every second read, so at the
 * instant between the two passes every edge of the cycle existed at once:
 * a real deadlock, not a race with a release or a grant.
 *
 * Who is refused (policy break): the YOUNGEST wait of the cycle (largest
 * wait_no, one counter for the table) among those that asked for it
 * (JDLS_REQ_BREAK_DEADLOCK). Normally that is the wait that closed the
 * cycle, as with the kernel's EDEADLK; it is deterministic whichever look
 * finds the cycle. If no member asked, the cycle is reported only.
 *
 * Dead owners: a member whose process is gone is reaped (its locks freed
 * and handed on), not reported, and the look starts again.
 */
typedef struct dl_node {        /* a WAITING entry in the snapshot */
  uint32_t group, slot;
  uint64_t seq;
  uint8_t wflags;
  jdls_owner owner;
  uint32_t owner_id;            /* dense id of `owner` */
  uint32_t edge0, nedges;       /* its edges in the edge array */
  jdls_report_member info;
} dl_node;

typedef struct dl_edge {        /* an entry the node waits for (same group) */
  uint32_t slot;
  uint32_t state;               /* HELD or WAITING when read */
  uint64_t seq;
  uint64_t token;
  int64_t to;                   /* owner id of its owner, -1: that owner waits for nothing */
  jdls_owner owner;
} dl_edge;

typedef struct dl_snap {
  dl_node *nodes;
  uint32_t nnodes, cap_nodes;
  dl_edge *edges;
  uint32_t nedges, cap_edges;
  uint32_t nowners;
  uint32_t *by_owner;           /* node indexes sorted by owner id */
  uint32_t *owner_first;        /* by_owner[owner_first[o] .. owner_first[o+1]) */
} dl_snap;

/* The most waits one look considers; beyond it the look gives up (and says
 * so nowhere but docs/deadlocks.md: an estate with more than 65536 waiting
 * requests at once has other problems). */
#define DL_MAX_NODES 65536U

static int dl_push_node(dl_snap *s, const dl_node *n) {
  if (s->nnodes == s->cap_nodes) {
    uint32_t cap = s->cap_nodes ? s->cap_nodes * 2 : 64;
    if (cap > DL_MAX_NODES) return -1;
    dl_node *p = realloc(s->nodes, cap * sizeof *p);
    if (!p) return -1;
    s->nodes = p;
    s->cap_nodes = cap;
  }
  s->nodes[s->nnodes++] = *n;
  return 0;
}

static int dl_push_edge(dl_snap *s, const dl_edge *e) {
  if (s->nedges == s->cap_edges) {
    uint32_t cap = s->cap_edges ? s->cap_edges * 2 : 256;
    if (cap > DL_MAX_NODES * 32U) return -1;
    dl_edge *p = realloc(s->edges, cap * sizeof *p);
    if (!p) return -1;
    s->edges = p;
    s->cap_edges = cap;
  }
  s->edges[s->nedges++] = *e;
  return 0;
}

static void dl_free(dl_snap *s) {
  free(s->nodes);
  free(s->edges);
  free(s->by_owner);
  free(s->owner_first);
  memset(s, 0, sizeof *s);
}

/* Owner identity as owner_eq compares it, for hashing. */
static uint64_t dl_owner_hash(const jdls_table *t, const jdls_owner *o) {
  uint64_t h = 1469598103934665603ULL;
#define MIX(v) do { h ^= (uint64_t)(v); h *= 1099511628211ULL; } while (0)
  MIX(o->ip_len);
  for (unsigned i = 0; i < o->ip_len && i < 16; i++) MIX(o->ip[i]);
  if (t->flags & JDLS_FLAG_PORT_LOCKS) {
    MIX(o->port);
  } else {
    MIX(o->owner_pid); MIX(o->owner_tid); MIX(o->conn); MIX(o->pid); MIX(o->pid_start);
  }
#undef MIX
  return h;
}

static int dl_owner_same(const jdls_table *t, const jdls_owner *a, const jdls_owner *b) {
  return SAME_OWNER(t, a, b);
}

static void dl_member(const jdls_entry *e, jdls_report_member *m) {
  memset(m, 0, sizeof *m);
  m->pid = e->pid;
  m->owner_pid = e->owner_pid;
  m->owner_tid = e->owner_tid;
  m->port = e->port;
  m->conn = e->conn;
  m->ip_len = e->ip_len;
  m->mode = e->mode;
  m->key_len = e->key_len;
  memcpy(m->ip, e->ip, sizeof m->ip);
  m->inode = e->inode;
  m->dev = e->dev;
  m->wait_no = e->wait_no;
  memcpy(m->key, e->key, e->key_len < JDLS_REPORT_KEY ? e->key_len : JDLS_REPORT_KEY);
}

/* Pass 1: every WAITING entry of the table and what it waits for. 0, or -1
 * (out of memory or too many waits: no verdict). */
static int dl_snapshot(jdls_table *t, dl_snap *s) {
  for (uint32_t gi = 0; gi < t->ngroups; gi++) {
    jdls_group *g = group_at(t, gi);
    /* A hint read without the mutex: a group whose waits start after this
     * read belong to requests whose own looks come after this one. */
    if (__atomic_load_n(&g->waiting, __ATOMIC_RELAXED) == 0) continue;
    if (group_lock(t, g) != JDLS_OK) continue;
    int rc = 0;
    for (uint32_t i = 0; i < t->per_group && rc == 0; i++) {
      jdls_entry *w = entry_at(t, g, i);
      if (ALOAD(&w->state) != JDLS_STATE_WAITING) continue;
      dl_node n;
      memset(&n, 0, sizeof n);
      n.group = gi;
      n.slot = i;
      n.seq = w->seq;
      n.wflags = w->wflags;
      owner_of(w, &n.owner);
      n.edge0 = s->nedges;
      dl_member(w, &n.info);
      for (uint32_t j = 0; j < t->per_group && rc == 0; j++) {
        jdls_entry *b = entry_at(t, g, j);
        uint32_t bs = ALOAD(&b->state);
        if (b == w || !entry_same_key(b, w) || owner_eq(t, b, &n.owner)) continue;
        int blocks = (bs == JDLS_STATE_HELD && modes_conflict(b->mode, w->mode)) ||
                     (bs == JDLS_STATE_WAITING && b->seq < w->seq);
        if (!blocks) continue;
        dl_edge e;
        memset(&e, 0, sizeof e);
        e.slot = j;
        e.state = bs;
        e.seq = b->seq;
        e.token = b->token;
        e.to = -1;
        owner_of(b, &e.owner);
        rc = dl_push_edge(s, &e);
        n.nedges++;
      }
      if (rc == 0) rc = dl_push_node(s, &n);
    }
    group_unlock(g);
    if (rc != 0) return -1;
  }
  return 0;
}

/* Give every waiting owner a dense id, index nodes by owner, and point each
 * edge at its owner's id (or -1). 0, or -1 (out of memory). */
static int dl_index(jdls_table *t, dl_snap *s) {
  uint32_t cap = 1;
  while (cap < s->nnodes * 2U) cap <<= 1;
  int64_t *slots = malloc(cap * sizeof *slots); /* node index of the owner's first node, or -1 */
  if (!slots) return -1;
  for (uint32_t i = 0; i < cap; i++) slots[i] = -1;
  s->nowners = 0;
  for (uint32_t i = 0; i < s->nnodes; i++) {
    dl_node *n = &s->nodes[i];
    uint32_t h = (uint32_t)dl_owner_hash(t, &n->owner) & (cap - 1);
    while (slots[h] >= 0 && !dl_owner_same(t, &s->nodes[slots[h]].owner, &n->owner)) h = (h + 1) & (cap - 1);
    if (slots[h] < 0) {
      slots[h] = i;
      n->owner_id = s->nowners++;
    } else {
      n->owner_id = s->nodes[slots[h]].owner_id;
    }
  }
  for (uint32_t k = 0; k < s->nedges; k++) {
    dl_edge *e = &s->edges[k];
    uint32_t h = (uint32_t)dl_owner_hash(t, &e->owner) & (cap - 1);
    while (slots[h] >= 0 && !dl_owner_same(t, &s->nodes[slots[h]].owner, &e->owner)) h = (h + 1) & (cap - 1);
    e->to = slots[h] >= 0 ? (int64_t)s->nodes[slots[h]].owner_id : -1;
  }
  free(slots);
  s->owner_first = calloc((size_t)s->nowners + 1, sizeof *s->owner_first);
  s->by_owner = malloc(((size_t)s->nnodes + 1) * sizeof *s->by_owner);
  if (!s->owner_first || !s->by_owner) return -1;
  for (uint32_t i = 0; i < s->nnodes; i++) s->owner_first[s->nodes[i].owner_id + 1]++;
  for (uint32_t o = 0; o < s->nowners; o++) s->owner_first[o + 1] += s->owner_first[o];
  uint32_t *fill = calloc((size_t)s->nowners + 1, sizeof *fill);
  if (!fill) return -1;
  for (uint32_t i = 0; i < s->nnodes; i++) {
    uint32_t o = s->nodes[i].owner_id;
    s->by_owner[s->owner_first[o] + fill[o]++] = i;
  }
  free(fill);
  return 0;
}

/* One step of a cycle: owner of node `node` waits, through edge `edge`, for
 * the next step's owner. */
typedef struct dl_step {
  uint32_t node;
  uint32_t edge;
} dl_step;

/* Depth-first search for a path from the start node's owner back to it,
 * the first step through the start node. Returns the cycle's length (steps
 * written to path[]), or 0. */
static uint32_t dl_find_cycle(dl_snap *s, uint32_t start, dl_step *path) {
  uint32_t target = s->nodes[start].owner_id;
  uint8_t *seen = calloc(s->nowners ? s->nowners : 1, 1);
  if (!seen) return 0;
  /* Frame d: the node being expanded (path[d].node) and its next edge. */
  uint32_t depth = 0, found = 0;
  uint32_t next_edge[JDLS_DEADLOCK_DEPTH];
  uint32_t next_node[JDLS_DEADLOCK_DEPTH]; /* for d > 0: position in the owner's node list */
  path[0].node = start;
  next_edge[0] = 0;
  next_node[0] = 0;
  seen[target] = 1;
  for (;;) {
    dl_node *n = &s->nodes[path[depth].node];
    if (next_edge[depth] < n->nedges) {
      uint32_t ek = n->edge0 + next_edge[depth]++;
      int64_t to = s->edges[ek].to;
      if (to < 0) continue;
      if ((uint32_t)to == target) {
        path[depth].edge = ek;
        found = depth + 1;
        break;
      }
      if (seen[to] || depth + 1 >= JDLS_DEADLOCK_DEPTH) continue;
      seen[to] = 1; /* done or on the path: either way, not again */
      path[depth].edge = ek;
      depth++;
      next_node[depth] = s->owner_first[to];
      path[depth].node = s->by_owner[next_node[depth]];
      next_edge[depth] = 0;
      continue;
    }
    /* This node is exhausted: the owner's next waiting node, else back up. */
    if (depth > 0) {
      uint32_t o = n->owner_id;
      if (++next_node[depth] < s->owner_first[o + 1]) {
        path[depth].node = s->by_owner[next_node[depth]];
        next_edge[depth] = 0;
        continue;
      }
      depth--;
      continue;
    }
    break; /* the start node is exhausted: no cycle through it */
  }
  free(seen);
  return found;
}

/* Pass 2: is every edge of the cycle still there? 1 yes, 0 no. Also
 * reports a member whose process is dead (*dead_node), which the caller
 * reaps. */
static int dl_verify(jdls_table *t, dl_snap *s, const dl_step *path, uint32_t len, int64_t *dead_node) {
  *dead_node = -1;
  for (uint32_t k = 0; k < len; k++) {
    const dl_node *n = &s->nodes[path[k].node];
    const dl_edge *e = &s->edges[path[k].edge];
    jdls_group *g = group_at(t, n->group);
    if (group_lock(t, g) != JDLS_OK) return 0;
    jdls_entry *w = entry_at(t, g, n->slot);
    jdls_entry *b = entry_at(t, g, e->slot);
    int same = ALOAD(&w->state) == JDLS_STATE_WAITING && w->seq == n->seq &&
               ALOAD(&b->state) == e->state && b->seq == e->seq &&
               (e->state != JDLS_STATE_HELD || b->token == e->token);
    group_unlock(g);
    if (!same) return 0;
  }
  /* Only live owners deadlock: a dead one's locks are to be freed. */
  for (uint32_t k = 0; k < len; k++) {
    const dl_node *n = &s->nodes[path[k].node];
    if (!jdls_pid_alive(n->owner.pid, n->owner.pid_start, 1)) {
      *dead_node = path[k].node;
      return 0;
    }
  }
  return 1;
}

/* Record the cycle in the ring (detect_mutex held). */
static void dl_report(jdls_table *t, dl_snap *s, const dl_step *path, uint32_t len, int32_t victim_step) {
  jdls_header *h = t->hdr;
  uint64_t n = __atomic_add_fetch(&h->reports_written, 1, __ATOMIC_RELAXED);
  jdls_deadlock_report *r = &h->reports[(n - 1) % JDLS_REPORTS];
  __atomic_store_n(&r->number, 0, __ATOMIC_RELAXED);
  __atomic_thread_fence(__ATOMIC_RELEASE);
  r->time_ms = now_ms();
  r->members = len;
  r->victim = victim_step >= 0 && (uint32_t)victim_step < JDLS_REPORT_MEMBERS ? victim_step : -1;
  memset(r->m, 0, sizeof r->m);
  for (uint32_t k = 0; k < len && k < JDLS_REPORT_MEMBERS; k++) r->m[k] = s->nodes[path[k].node].info;
  __atomic_store_n(&r->number, n, __ATOMIC_RELEASE);
}

/* Refuse the wait of node `v` (its group's mutex taken here). Returns 1 if
 * it was refused, 0 if it had stopped waiting meanwhile. `self`: the
 * caller's own request - its entry is freed at once (the caller answers
 * JDLS_DEADLOCK itself); another waiter's entry becomes REFUSED and is
 * woken (its doorbell rung even if this thread's is quiet: the refusal is
 * not a grant the caller will collect). */
static int dl_refuse(jdls_table *t, const dl_node *v, int self) {
  jdls_group *g = group_at(t, v->group);
  if (group_lock(t, g) != JDLS_OK) return 0;
  jdls_entry *e = entry_at(t, g, v->slot);
  int done = 0;
  if (ALOAD(&e->state) == JDLS_STATE_WAITING && e->seq == v->seq) {
    if (self) {
      free_entry(g, e);
    } else {
      g->waiting--;
      ASTORE(&e->state, JDLS_STATE_REFUSED);
    }
    /* It queued for its key: those behind it may go now. */
    grant_waiters(t, g, e);
    if (!self) {
      int quiet = quiet_doorbell;
      quiet_doorbell = -1;
      wake_entry(t, e);
      quiet_doorbell = quiet;
    }
    done = 1;
  }
  group_unlock(g);
  return done;
}

static int detect_deadlock(jdls_table *t, const jdls_ticket *tk) {
  jdls_header *h = t->hdr;
  int m = pthread_mutex_lock(&h->detect_mutex);
  /* A look that died half-way leaves at most a report with number 0. */
  if (m == EOWNERDEAD) pthread_mutex_consistent(&h->detect_mutex);
  else if (m != 0) return JDLS_QUEUED;
  int result = JDLS_QUEUED;
  dl_step path[JDLS_DEADLOCK_DEPTH];
  /* Again after a dead member was reaped, or a cycle did not verify (its
   * edges moved; another cycle may remain). Bounded. */
  for (int round = 0; round < 4; round++) {
    dl_snap s;
    memset(&s, 0, sizeof s);
    if (dl_snapshot(t, &s) != 0 || dl_index(t, &s) != 0) { dl_free(&s); break; }
    int64_t start = -1;
    for (uint32_t i = 0; i < s.nnodes; i++)
      if (s.nodes[i].group == tk->group && s.nodes[i].slot == tk->slot && s.nodes[i].seq == tk->seq) start = i;
    if (start < 0) { dl_free(&s); break; } /* granted (or gone) already */
    uint32_t len = dl_find_cycle(&s, (uint32_t)start, path);
    if (len == 0) { dl_free(&s); break; }
    int64_t dead = -1;
    if (!dl_verify(t, &s, path, len, &dead)) {
      if (dead >= 0) {
        dl_node *d = &s.nodes[dead];
        jdls_group *g = group_at(t, d->group);
        if (group_lock(t, g) == JDLS_OK) {
          reap_pid(t, g, d->owner.pid, d->owner.pid_start);
          group_unlock(g);
        }
      }
      dl_free(&s);
      continue;
    }
    /* A real cycle. Its youngest wait that asked to be refused, if any. */
    int32_t victim = -1;
    uint64_t youngest = 0;
    if (__atomic_load_n(&h->deadlock_policy, __ATOMIC_RELAXED) == JDLS_DEADLOCK_BREAK) {
      for (uint32_t k = 0; k < len; k++) {
        const dl_node *n = &s.nodes[path[k].node];
        if ((n->wflags & JDLS_REQ_BREAK_DEADLOCK) && n->info.wait_no >= youngest) {
          youngest = n->info.wait_no;
          victim = (int32_t)k;
        }
      }
    }
    __atomic_fetch_add(&h->deadlocks_found, 1, __ATOMIC_RELAXED);
    if (victim >= 0) {
      uint32_t vn = path[victim].node;
      int self = vn == (uint32_t)start;
      if (dl_refuse(t, &s.nodes[vn], self)) {
        __atomic_fetch_add(&h->deadlocks_broken, 1, __ATOMIC_RELAXED);
        if (self) result = JDLS_DEADLOCK;
      } else {
        victim = -1; /* it stopped waiting: the cycle is broken already */
      }
    }
    dl_report(t, &s, path, len, victim);
    dl_free(&s);
    break;
  }
  pthread_mutex_unlock(&h->detect_mutex);
  return result;
}
