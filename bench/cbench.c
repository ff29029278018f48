/*
 * cbench.c - the C side of `npm run bench` (build/Release/jdls-cbench).
 *
 * Owns: the measurements that must not pass through Node: a lock+unlock pair
 * in-process, an fcntl lock+unlock pair for comparison, the hand-off latency
 * between two processes, filling a big table, and timing jdls_table_create.
 * Does not own: scheduling rounds, goals, verdicts, reports (the bench/ TypeScript files).
 *
 * Each sub-command prints ONE line of JSON on stdout and exits 0; on failure
 * it prints a message on stderr and exits 2. bench/lib.ts runs it.
 *
 *   jdls-cbench pair    <shm-path> <iterations>
 *   jdls-cbench fcntl   <file> <iterations>
 *   jdls-cbench handoff <shm-path> <rounds>
 *   jdls-cbench fill    <shm-path>        (then holds the locks until stdin closes)
 *   jdls-cbench create  <shm-path> <locks> <per-group>
 *   jdls-cbench full    <shm-path> <probes>   (requests into a full table)
 *   jdls-cbench parts   <shm-path> <iterations>   (cost breakdown of a pair)
 *   jdls-cbench capi    <libjdlsshim.so> <iterations>   (the shim's C API pair)
 *   jdls-cbench getfl   <file> <iterations>   (non-lock fcntl calls: run with
 *                                             and without LD_PRELOAD)
 *
 * Divisions (keep them):
 *   1. helpers: clocks, owners, failing
 *   2. pair and fcntl
 *   3. hand-off between two processes
 *   4. big table: create and fill
 *   5. parts: where a pair's time goes
 *   6. the shim: its C API pair, and fcntl calls it must pass through
 *   7. main
 */
#define _GNU_SOURCE
#include "../native/common/jdls_table.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ===== 1. helpers ======================================================= */

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void die(const char *what, int rc) {
  fprintf(stderr, "jdls-cbench: %s: %s (rc %d, errno %s)\n", what,
          rc < 0 || rc > 0 ? jdls_strerror(rc) : "failed", rc, strerror(errno));
  exit(2);
}

/* The owner a local process is: this pid and thread, local address. */
static void self_owner(jdls_owner *o) {
  memset(o, 0, sizeof *o);
  o->pid = (uint32_t)getpid();
  o->owner_pid = o->pid;
  o->owner_tid = (uint32_t)syscall(SYS_gettid);
  o->pid_start = jdls_pid_start(o->pid);
  o->ip_len = 4; /* 0.0.0.0 = local */
}

static void open_table(const char *path, jdls_table *t) {
  int rc = jdls_table_open(path, NULL, t);
  if (rc != JDLS_OK) die("opening the table", rc);
}

static long arg_long(const char *s, const char *name) {
  char *end;
  long v = strtol(s, &end, 10);
  if (*s == 0 || *end != 0 || v <= 0) {
    fprintf(stderr, "jdls-cbench: %s must be a positive integer, got '%s'\n", name, s);
    exit(2);
  }
  return v;
}

static int cmp_i64(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return x < y ? -1 : x > y;
}

/* ===== 2. pair and fcntl ================================================ */

/* The bench key of the C pair; the TypeScript pair uses another key in the
 * same table, so the two never touch one entry. */
static const uint8_t PAIR_KEY[] = "BENCH*C-PAIR";
#define PAIR_INODE 4242u
#define PAIR_DEV 7

static int cmd_pair(const char *path, long iters) {
  jdls_table t;
  open_table(path, &t);
  jdls_owner o;
  self_owner(&o);
  jdls_request r = {PAIR_INODE, PAIR_DEV, PAIR_KEY, sizeof PAIR_KEY - 1, JDLS_MODE_WRITE,
                    JDLS_REQ_NOWAIT};
  jdls_ticket tk;
  jdls_holder h;
  /* Warm the entry's cache lines and the code first (a tenth of the run). */
  for (long i = 0; i < iters / 10 + 1; i++) {
    int rc = jdls_lock_begin(&t, &o, &r, -1, &tk, &h);
    if (rc != JDLS_OK) die("lock (warm-up)", rc);
    rc = jdls_unlock(&t, &o, r.inode, r.dev, r.key, r.key_len);
    if (rc != JDLS_OK) die("unlock (warm-up)", rc);
  }
  int64_t t0 = now_ns();
  for (long i = 0; i < iters; i++) {
    int rc = jdls_lock_begin(&t, &o, &r, -1, &tk, &h);
    if (rc != JDLS_OK) die("lock", rc);
    rc = jdls_unlock(&t, &o, r.inode, r.dev, r.key, r.key_len);
    if (rc != JDLS_OK) die("unlock", rc);
  }
  int64_t t1 = now_ns();
  printf("{\"nsPerPair\":%.2f,\"iterations\":%ld}\n", (double)(t1 - t0) / (double)iters, iters);
  jdls_table_close(&t);
  return 0;
}

static int setlk(int fd, short type) {
  struct flock fl = {.l_type = type, .l_whence = SEEK_SET, .l_start = 0, .l_len = 1};
  return fcntl(fd, F_SETLK, &fl);
}

static int cmd_fcntl(const char *file, long iters) {
  int fd = open(file, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) die("opening the fcntl file", JDLS_E_SYS);
  for (long i = 0; i < iters / 10 + 1; i++) {
    if (setlk(fd, F_WRLCK) != 0 || setlk(fd, F_UNLCK) != 0) die("fcntl (warm-up)", JDLS_E_SYS);
  }
  int64_t t0 = now_ns();
  for (long i = 0; i < iters; i++) {
    if (setlk(fd, F_WRLCK) != 0) die("fcntl F_WRLCK", JDLS_E_SYS);
    if (setlk(fd, F_UNLCK) != 0) die("fcntl F_UNLCK", JDLS_E_SYS);
  }
  int64_t t1 = now_ns();
  printf("{\"nsPerPair\":%.2f,\"iterations\":%ld}\n", (double)(t1 - t0) / (double)iters, iters);
  close(fd);
  return 0;
}

/* ===== 3. hand-off between two processes ================================ */

/*
 * Two processes pass one key back and forth. In every round one holds the
 * key and the other is queued on it inside jdls_lock (asleep on its entry's
 * futex). The holder waits until it SEES the waiting entry in the table, then
 * sleeps 150 us more so the waiter is really inside futex_wait (not still
 * on its way there: that would measure a spin, not a wake-up), stamps the
 * release time into the shared page and unlocks. The waiter stamps right
 * after jdls_lock returns. Then the roles swap: the new holder is the one
 * that was just granted, and the old holder queues at once - it cannot
 * overtake, because the unlock granted the waiter before it returned.
 */
typedef struct handoff_page {
  int64_t release_ns[4096];
  int64_t grant_ns[4096];
  volatile int failed;
} handoff_page;

static const uint8_t HAND_KEY[] = "BENCH*HANDOFF";
#define HAND_INODE 4243u
#define HAND_DEV 7

/* Is a WAITING entry for the hand-off key in its group? */
static int waiter_queued(jdls_table *t, uint32_t group, jdls_row *rows, uint32_t cap) {
  uint32_t next;
  int n = jdls_list(t, group, 1, rows, cap, &next);
  if (n < 0) die("listing the hand-off group", n);
  for (int i = 0; i < n; i++)
    if (rows[i].state == JDLS_STATE_WAITING) return 1;
  return 0;
}

/* One side of the hand-off. `first_holder`: this side starts with the key. */
static void handoff_side(jdls_table *t, handoff_page *pg, int rounds, int first_holder) {
  jdls_owner o;
  self_owner(&o);
  jdls_request r = {HAND_INODE, HAND_DEV, HAND_KEY, sizeof HAND_KEY - 1, JDLS_MODE_WRITE, 0};
  jdls_holder h;
  uint32_t group = jdls_hash(t->hash_seed, r.inode, r.dev, r.key, r.key_len) % t->ngroups;
  uint32_t cap = t->per_group;
  jdls_row *rows = calloc(cap, sizeof *rows);
  if (!rows) die("calloc", JDLS_E_SYS);
  /* Round k is released by the side that holds at k: side A holds at even
   * rounds, side B at odd ones. */
  for (int k = 0; k < rounds && !pg->failed; k++) {
    int holder = (k % 2 == 0) == first_holder;
    if (holder) {
      /* Bounded: about 2 s of polling, then the round counts as failed. */
      int seen = 0;
      for (int spins = 0; spins < 200000 && !pg->failed; spins++) {
        if (waiter_queued(t, group, rows, cap)) { seen = 1; break; }
        usleep(10);
      }
      if (!seen) { pg->failed = 1; break; }
      usleep(150);
      pg->release_ns[k] = now_ns();
      int rc = jdls_unlock(t, &o, r.inode, r.dev, r.key, r.key_len);
      if (rc != JDLS_OK) { pg->failed = 1; die("hand-off unlock", rc); }
    } else {
      int rc = jdls_lock(t, &o, &r, 5000, &h);
      int64_t granted = now_ns();
      if (rc != JDLS_OK) { pg->failed = 1; die("hand-off lock", rc); }
      pg->grant_ns[k] = granted;
    }
  }
  free(rows);
}

static int cmd_handoff(const char *path, long rounds) {
  if (rounds > 4096) rounds = 4096;
  jdls_table t;
  open_table(path, &t);
  handoff_page *pg = mmap(NULL, sizeof *pg, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (pg == MAP_FAILED) die("mmap of the shared page", JDLS_E_SYS);
  memset(pg, 0, sizeof *pg);
  /* Side A takes the key before the fork, so B's first request queues. */
  jdls_owner a;
  self_owner(&a);
  jdls_request r = {HAND_INODE, HAND_DEV, HAND_KEY, sizeof HAND_KEY - 1, JDLS_MODE_WRITE, JDLS_REQ_NOWAIT};
  jdls_ticket tk;
  jdls_holder h;
  int rc = jdls_lock_begin(&t, &a, &r, -1, &tk, &h);
  if (rc != JDLS_OK) die("hand-off first lock", rc);
  pid_t child = fork();
  if (child < 0) die("fork", JDLS_E_SYS);
  if (child == 0) {
    /* Round 0 is the child's wait. */
    handoff_side(&t, pg, (int)rounds, 0);
    _exit(pg->failed ? 3 : 0);
  }
  handoff_side(&t, pg, (int)rounds, 1);
  int status = 0;
  if (pg->failed) kill(child, SIGKILL); /* it may sit in jdls_lock: bounded by its timeout anyway */
  waitpid(child, &status, 0);
  if (pg->failed || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    fprintf(stderr, "jdls-cbench: hand-off failed (child status %d)\n", status);
    return 2;
  }
  /* The last holder may still hold the key: release it (either owner). */
  jdls_owner mine;
  self_owner(&mine);
  jdls_unlock(&t, &mine, r.inode, r.dev, r.key, r.key_len);
  /* Whatever the child left is reaped as a dead owner's on the next conflict. */
  int64_t *lat = malloc(sizeof(int64_t) * (size_t)rounds);
  if (!lat) die("malloc", JDLS_E_SYS);
  for (long k = 0; k < rounds; k++) lat[k] = pg->grant_ns[k] - pg->release_ns[k];
  qsort(lat, (size_t)rounds, sizeof *lat, cmp_i64);
  double sum = 0;
  for (long k = 0; k < rounds; k++) sum += (double)lat[k];
  long i50 = (rounds - 1) / 2, i99 = (long)ceil(0.99 * (double)rounds) - 1;
  printf("{\"rounds\":%ld,\"p50Ns\":%" PRId64 ",\"p90Ns\":%" PRId64 ",\"p99Ns\":%" PRId64
         ",\"minNs\":%" PRId64 ",\"maxNs\":%" PRId64 ",\"meanNs\":%.0f}\n",
         rounds, lat[i50], lat[(long)ceil(0.90 * (double)rounds) - 1], lat[i99], lat[0],
         lat[rounds - 1], sum / (double)rounds);
  free(lat);
  munmap(pg, sizeof *pg);
  jdls_table_close(&t);
  return 0;
}

/* ===== 4. big table: create and fill ==================================== */

static int cmd_create(const char *path, long locks, long per_group) {
  jdls_table t;
  int existed = 0;
  int64_t t0 = now_ns();
  int rc = jdls_table_create(path, NULL, (uint32_t)locks, (uint32_t)per_group, 0, &t, &existed);
  int64_t t1 = now_ns();
  if (rc != JDLS_OK) die("creating the table", rc);
  if (existed) { fprintf(stderr, "jdls-cbench: the table exists already\n"); return 2; }
  printf("{\"createMs\":%.3f,\"totalSize\":%" PRIu64 ",\"ngroups\":%u}\n", (double)(t1 - t0) / 1e6,
         t.hdr->total_size, t.ngroups);
  jdls_table_close(&t);
  return 0;
}

/*
 * Fill every entry of every group. Keys whose group is known to be full are
 * skipped BEFORE asking the table (the hash is public), because a request
 * into a full group is expensive: jdls_lock_begin then tidies the group,
 * checking each of its entries' owners through /proc (see the `fullNs`
 * figure of cmd_full).
 */
static int cmd_fill(const char *path) {
  jdls_table t;
  open_table(path, &t);
  jdls_owner o;
  self_owner(&o);
  uint32_t ngroups = t.ngroups, per = t.per_group;
  uint64_t capacity = (uint64_t)ngroups * per;
  uint32_t *count = calloc(ngroups, sizeof *count);
  if (!count) die("calloc", JDLS_E_SYS);
  uint64_t filled = 0, tried = 0, full_rc = 0;
  char key[32];
  jdls_ticket tk;
  jdls_holder h;
  int64_t t0 = now_ns();
  /* Bounded: a fair hash fills all groups well within 20 keys per lock. */
  for (uint64_t n = 0; filled < capacity && n < capacity * 20; n++) {
    int len = snprintf(key, sizeof key, "REC%" PRIu64, n);
    uint32_t g = jdls_hash(t.hash_seed, 1, 1, (const uint8_t *)key, (uint32_t)len) % ngroups;
    if (count[g] >= per) continue;
    tried++;
    jdls_request r = {1, 1, (const uint8_t *)key, (uint32_t)len, JDLS_MODE_WRITE, JDLS_REQ_NOWAIT};
    int rc = jdls_lock_begin(&t, &o, &r, -1, &tk, &h);
    if (rc == JDLS_OK) { count[g]++; filled++; }
    else if (rc == JDLS_E_TABLE_FULL) { full_rc++; count[g] = per; }
    else die("filling", rc);
  }
  int64_t t1 = now_ns();
  printf("{\"fillMs\":%.1f,\"filled\":%" PRIu64 ",\"capacity\":%" PRIu64 ",\"requests\":%" PRIu64
         ",\"tableFullResults\":%" PRIu64 ",\"pid\":%d}\n",
         (double)(t1 - t0) / 1e6, filled, capacity, tried, full_rc, (int)getpid());
  fflush(stdout);
  free(count);
  /* Hold the locks (a live owner) until the bench closes our stdin. */
  char buf[64];
  while (read(0, buf, sizeof buf) > 0) {}
  jdls_table_close(&t);
  return 0;
}

/*
 * The cost of jBASE Error 37 for a process other than the holders: requests
 * into full groups, from a process that owns none of the entries (the filler
 * does). Each one makes jdls_lock_begin tidy the group first.
 */
static int cmd_full(const char *path, long probes) {
  jdls_table t;
  open_table(path, &t);
  jdls_owner o;
  self_owner(&o);
  char key[32];
  jdls_ticket tk;
  jdls_holder h;
  int64_t t0 = now_ns();
  for (long n = 0; n < probes; n++) {
    int len = snprintf(key, sizeof key, "FULL%ld", n);
    jdls_request r = {1, 1, (const uint8_t *)key, (uint32_t)len, JDLS_MODE_WRITE, JDLS_REQ_NOWAIT};
    int rc = jdls_lock_begin(&t, &o, &r, -1, &tk, &h);
    if (rc != JDLS_E_TABLE_FULL) die("a request into a full table", rc);
  }
  int64_t t1 = now_ns();
  printf("{\"fullNs\":%.0f,\"probes\":%ld}\n", (double)(t1 - t0) / (double)probes, probes);
  jdls_table_close(&t);
  return 0;
}

/* ===== 5. parts: where a pair's time goes =============================== */

/* Times the pieces a lock+unlock pair is made of, each in a loop of its own:
 * jdls_hash, a robust process-shared mutex lock+unlock (what every group
 * uses), a plain private mutex for contrast, the whole pair, a re-lock by the
 * holder (hash + mutex + finding its entry), and an unlock of a key nobody
 * holds (hash + mutex + a scan of the whole group). */
static int cmd_parts(const char *path, long iters) {
  jdls_table t;
  open_table(path, &t);
  jdls_owner o;
  self_owner(&o);
  jdls_request r = {PAIR_INODE, PAIR_DEV, PAIR_KEY, sizeof PAIR_KEY - 1, JDLS_MODE_WRITE,
                    JDLS_REQ_NOWAIT};
  jdls_ticket tk;
  jdls_holder h;
  volatile uint32_t sink = 0;
  int64_t t0, t1;

  t0 = now_ns();
  for (long i = 0; i < iters; i++) sink += jdls_hash(t.hash_seed, r.inode, r.dev, r.key, r.key_len);
  t1 = now_ns();
  double hash_ns = (double)(t1 - t0) / iters;

  pthread_mutexattr_t ma;
  pthread_mutexattr_init(&ma);
  pthread_mutexattr_setpshared(&ma, PTHREAD_PROCESS_SHARED);
  pthread_mutexattr_setrobust(&ma, PTHREAD_MUTEX_ROBUST);
  pthread_mutex_t *m = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (m == MAP_FAILED) die("mmap", JDLS_E_SYS);
  pthread_mutex_init(m, &ma);
  t0 = now_ns();
  for (long i = 0; i < iters; i++) { pthread_mutex_lock(m); pthread_mutex_unlock(m); }
  t1 = now_ns();
  double robust_ns = (double)(t1 - t0) / iters;
  pthread_mutex_destroy(m);
  pthread_mutex_init(m, NULL); /* plain private mutex, for contrast */
  t0 = now_ns();
  for (long i = 0; i < iters; i++) { pthread_mutex_lock(m); pthread_mutex_unlock(m); }
  t1 = now_ns();
  double plain_ns = (double)(t1 - t0) / iters;
  munmap(m, 4096);

  t0 = now_ns();
  for (long i = 0; i < iters; i++) {
    int rc = jdls_lock_begin(&t, &o, &r, -1, &tk, &h);
    if (rc != JDLS_OK) die("lock", rc);
    rc = jdls_unlock(&t, &o, r.inode, r.dev, r.key, r.key_len);
    if (rc != JDLS_OK) die("unlock", rc);
  }
  t1 = now_ns();
  double pair_ns = (double)(t1 - t0) / iters;
  /* Re-lock by the owner (entry held, the request converts in place). */
  if (jdls_lock_begin(&t, &o, &r, -1, &tk, &h) != JDLS_OK) die("lock", 0);
  t0 = now_ns();
  for (long i = 0; i < iters; i++) {
    int rc = jdls_lock_begin(&t, &o, &r, -1, &tk, &h);
    if (rc != JDLS_OK) die("re-lock", rc);
  }
  t1 = now_ns();
  double relock_ns = (double)(t1 - t0) / iters;
  /* Unlock of a key not held: hash + mutex + full group scan. */
  jdls_unlock(&t, &o, r.inode, r.dev, r.key, r.key_len);
  t0 = now_ns();
  for (long i = 0; i < iters; i++) {
    int rc = jdls_unlock(&t, &o, r.inode, r.dev, r.key, r.key_len);
    if (rc != JDLS_NOT_HELD) die("unlock of a free key", rc);
  }
  t1 = now_ns();
  double miss_ns = (double)(t1 - t0) / iters;
  printf("{\"hashNs\":%.2f,\"robustMutexPairNs\":%.2f,\"plainMutexPairNs\":%.2f,\"pairNs\":%.2f,"
         "\"relockNs\":%.2f,\"unlockNotHeldNs\":%.2f,\"perGroup\":%u}\n",
         hash_ns, robust_ns, plain_ns, pair_ns, relock_ns, miss_ns, t.per_group);
  (void)sink;
  jdls_table_close(&t);
  return 0;
}

/* ===== 6. the shim ====================================================== */

/* The shim's C API is reached through dlopen, as a runtime that loads it
 * would: this program is not linked against it (no rpath to manage). The
 * route (table, in-process) comes from the environment: JBCRELEASEDIR of an
 * installation whose monitor runs, JDLS unset. */
typedef int (*record_lock_fn)(uint64_t, int64_t, const void *, size_t, int, int, int, uint32_t *);
typedef int (*record_unlock_fn)(uint64_t, int64_t, const void *, size_t, int);
typedef int (*route_fn)(void);

static int cmd_capi(const char *so, long iters) {
  void *h = dlopen(so, RTLD_NOW | RTLD_LOCAL);
  if (!h) {
    fprintf(stderr, "jdls-cbench: dlopen %s: %s\n", so, dlerror());
    exit(2);
  }
  record_lock_fn lock = (record_lock_fn)dlsym(h, "jdls_record_lock");
  record_unlock_fn unlock = (record_unlock_fn)dlsym(h, "jdls_record_unlock");
  route_fn route = (route_fn)dlsym(h, "jdls_route");
  if (!lock || !unlock || !route) die("the shim does not export the C API", JDLS_E_ARG);
  static const char key[] = "BENCH*CAPI";
  uint32_t port = 0;
  for (long i = 0; i < iters / 10 + 1; i++) {
    if (lock(4243, 7, key, sizeof key - 1, 2 /* EXCLUSIVE */, 1 /* NOWAIT */, 0, &port) != 0) die("C API lock (warm-up)", JDLS_E_SYS);
    if (unlock(4243, 7, key, sizeof key - 1, 0) != 0) die("C API unlock (warm-up)", JDLS_E_SYS);
  }
  int64_t t0 = now_ns();
  for (long i = 0; i < iters; i++) {
    if (lock(4243, 7, key, sizeof key - 1, 2, 1, 0, &port) != 0) die("C API lock", JDLS_E_SYS);
    if (unlock(4243, 7, key, sizeof key - 1, 0) != 0) die("C API unlock", JDLS_E_SYS);
  }
  int64_t t1 = now_ns();
  printf("{\"nsPerPair\":%.2f,\"iterations\":%ld,\"route\":%d}\n", (double)(t1 - t0) / (double)iters, iters, route());
  return 0;
}

static int cmd_getfl(const char *file, long iters) {
  int fd = open(file, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) die("opening the getfl file", JDLS_E_SYS);
  long sink = 0;
  for (long i = 0; i < iters / 10 + 1; i++) sink += fcntl(fd, F_GETFL);
  int64_t t0 = now_ns();
  for (long i = 0; i < iters; i++) sink += fcntl(fd, F_GETFL);
  int64_t t1 = now_ns();
  if (sink < 0) die("fcntl F_GETFL", JDLS_E_SYS);
  printf("{\"nsPerCall\":%.2f,\"iterations\":%ld}\n", (double)(t1 - t0) / (double)iters, iters);
  close(fd);
  return 0;
}

/* ===== 7. main ========================================================== */

static int usage(void) {
  fprintf(stderr,
          "usage: jdls-cbench pair <shm-path> <iterations>\n"
          "       jdls-cbench fcntl <file> <iterations>\n"
          "       jdls-cbench handoff <shm-path> <rounds>\n"
          "       jdls-cbench fill <shm-path>\n"
          "       jdls-cbench create <shm-path> <locks> <per-group>\n"
          "       jdls-cbench full <shm-path> <probes>\n"
          "       jdls-cbench parts <shm-path> <iterations>\n"
          "       jdls-cbench capi <libjdlsshim.so> <iterations>\n"
          "       jdls-cbench getfl <file> <iterations>\n");
  return 2;
}

int main(int argc, char **argv) {
  if (argc < 3) return usage();
  const char *cmd = argv[1];
  if (!strcmp(cmd, "pair") && argc == 4) return cmd_pair(argv[2], arg_long(argv[3], "iterations"));
  if (!strcmp(cmd, "fcntl") && argc == 4) return cmd_fcntl(argv[2], arg_long(argv[3], "iterations"));
  if (!strcmp(cmd, "handoff") && argc == 4) return cmd_handoff(argv[2], arg_long(argv[3], "rounds"));
  if (!strcmp(cmd, "fill") && argc == 3) return cmd_fill(argv[2]);
  if (!strcmp(cmd, "create") && argc == 5)
    return cmd_create(argv[2], arg_long(argv[3], "locks"), arg_long(argv[4], "per-group"));
  if (!strcmp(cmd, "full") && argc == 4) return cmd_full(argv[2], arg_long(argv[3], "probes"));
  if (!strcmp(cmd, "parts") && argc == 4) return cmd_parts(argv[2], arg_long(argv[3], "iterations"));
  if (!strcmp(cmd, "capi") && argc == 4) return cmd_capi(argv[2], arg_long(argv[3], "iterations"));
  if (!strcmp(cmd, "getfl") && argc == 4) return cmd_getfl(argv[2], arg_long(argv[3], "iterations"));
  return usage();
}
