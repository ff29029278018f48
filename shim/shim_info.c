/*
 * shim_info.c - this process's info record (docs/info-records.md): what a
 * preloaded program that locks DIRECTLY in the installation's shm table
 * holds, waits for and has open, as JBCRELEASEDIR/proc/info/
 * <port>.0.0.0.0.<pid>.json, for SHOW-ITEM-LOCKS, list-open-files and
 * `jdls -dvL` (the guide's "Distributed Lock Information"). Programs on the
 * server route get theirs from the lock server (INFO frames: shim_broker.c).
 *
 * Owns: the record's content and file, the coalescing (the flusher thread),
 * the statistics, the declared file names (jdls_declare_file) and the names
 * found for fcntl-only programs. Does not own: the format (src/info/
 * format.ts, mirrored in jdls_info.h), the lock table.
 *
 * The hot path costs one load: a lock, an unlock or a release calls
 * shim_info_touch() (shim.h), which returns at once while the record is
 * already marked dirty - and the flusher takes the locks from the table
 * itself (this process's rows) when it writes, so nothing is copied per
 * lock. The guide's moments (the first lock, blocking on a lock, unblocked,
 * jdls_info_idle) ask the flusher to write at once.
 *
 * Why a flusher THREAD (started lazily, at the first change) rather than
 * writing from the lock call that finds the period over: a program that
 * takes a lock and then just sleeps holding it (`flock`-style holders,
 * python's fcntl.lockf then time.sleep) makes no further call that could
 * write the record - the lock would stay unwritten for ever. And a write
 * from the caller's thread would run inside the program's lock call (a file
 * create + rename, ~0.1 ms, in a call that costs 0.1 us), in whatever
 * signal context the program has: a handler's siglongjmp out of it would
 * abandon the record's mutex (every later write waiting for ever) and a
 * handler that locks would re-enter it.
 * Traps the thread dodges:
 *   - Not started in every preloaded process (a constructor would start it
 *     in `ls`): a thread makes a process multi-threaded, and some programs
 *     then behave differently (unshare(CLONE_NEWUSER) fails with EINVAL,
 *     fork() in a threaded process is async-signal-only in the child).
 *     Only a process that took a table lock gets one.
 *   - Every signal blocked in it (pthread_attr_setsigmask_np): a
 *     process-directed signal (SIGALRM of `flock -w`, SIGCHLD, SIGINT) is
 *     delivered to a thread that does not block it; delivered to ours, the
 *     program's handler would run there, and its F_SETLKW in the main
 *     thread would never see EINTR.
 *   - Its own calls (open, close, rename) bypass the shim (shim_busy raised
 *     for its whole life): its close() is not the program's and must
 *     release no lock.
 *   - fork(): the child has no flusher (threads do not survive fork) and is
 *     another port owner: the atfork child handler (shim_info_forget)
 *     forgets the parent's record and state; the child starts its own
 *     flusher and record at its first lock, and its exit removes only its
 *     own record. A vfork child (shared memory) and any child that ran no
 *     atfork handler remove nothing (shim_foreign).
 *   - Exit: the destructor takes the record's mutex (waiting for a write in
 *     progress), marks the record closed and removes the file: the flusher
 *     never writes after it.
 * The flusher sleeps on a futex without a timeout while nothing changes,
 * so an idle holder costs nothing.
 *
 * Jumps and signals: the only mutex here (`imu`) is taken by the flusher
 * (every signal blocked) and by jdls_declare_file/the exit removal with the
 * caller's signals blocked for that stretch; nothing here runs in a signal
 * handler (shim_info_touch/_block/_unblock only store and wake a futex:
 * async-signal-safe).
 */
#undef _FILE_OFFSET_BITS
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include "jdls.h"
#include "shim.h"
#include "../native/common/jdls_info.h"

/* --- the state --------------------------------------------------------------- */
/* shim.h: SHIM_INFO_DIRTY | SHIM_INFO_URGENT | SHIM_INFO_ASLEEP; the futex
 * word the flusher sleeps on. Records off: DIRTY for ever (the touch's
 * fast path returns). */
uint32_t shim_info_word;
/* Statistics (InfoStats): plain increments, not atomic read-modify-writes
 * (a locked instruction would be ~8 % of the emulated lock pair): two
 * threads of one process counting at the same instant may lose one. */
uint64_t shim_info_locks, shim_info_waits, shim_info_wait_ms, shim_info_retries;

static int mode;                 /* 0 undecided, 1 on, -1 off */
static pthread_mutex_t mode_mu = PTHREAD_MUTEX_INITIALIZER;
static int flusher_started;
static char info_dir[4096];
static uint32_t info_port;

/* What the record lists besides the table's rows. Rule: only with `imu`. */
typedef struct info_file {
  uint64_t inode;
  int64_t dev;      /* the file's st_dev, or what the caller declared (-1: any) */
  uint64_t seq;     /* recency: the oldest goes past JDLS_INFO_MAX_FILES */
  char *name;       /* malloc'd */
} info_file;
static pthread_mutex_t imu = PTHREAD_MUTEX_INITIALIZER;
static info_file files[JDLS_INFO_MAX_FILES];
static unsigned nfiles;
static uint64_t file_seq;
static int written;   /* the record file exists */
static int closed;    /* removed at exit: write no more */
/* When the current wait began (realtime ms) and its monotonic start. */
static int64_t wait_since_ms, wait_mono_ms;

/* --- small helpers -------------------------------------------------------------- */
static int64_t real_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}
static int64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}
static void futex_wake(uint32_t *w) { syscall(SYS_futex, w, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0); }

/* The record's file name (src/info/format.ts recordFileName). */
static int record_path(char *out, size_t cap, uint32_t pid, const char *prefix) {
  int n = snprintf(out, cap, "%s/%s%u." JDLS_INFO_LOCAL_ADDR ".%u.json", info_dir, prefix, info_port, pid);
  return n < 0 || (size_t)n >= cap ? -1 : n;
}

/* --- deciding: on or off, once per process ------------------------------------ */
static void decide_locked(void) {
  const char *e = getenv(JDLS_INFO_ENV);
  int on = !(e && strcmp(e, "0") == 0);
  char rel[4000];
  if (on && jdls_release_dir(rel, sizeof rel) < 0) on = 0;
  if (on) {
    snprintf(info_dir, sizeof info_dir, "%s/%s", rel, JDLS_INFO_SUBDIR);
    struct stat st;
    /* No directory (no `jdls -ib` made it, or not ours to see): nothing is
     * written. Checked once: a directory made later serves processes
     * started later. */
    if (stat(info_dir, &st) != 0 || !S_ISDIR(st.st_mode)) on = 0;
  }
  const char *p = getenv("JBCPORTNO");
  info_port = p ? (uint32_t)strtoul(p, NULL, 10) : 0;
  if (!on) __atomic_store_n(&shim_info_word, SHIM_INFO_DIRTY, __ATOMIC_RELAXED);
  __atomic_store_n(&mode, on ? 1 : -1, __ATOMIC_RELEASE);
}

static int info_on(void) {
  int m = __atomic_load_n(&mode, __ATOMIC_ACQUIRE);
  if (m) return m > 0;
  pthread_mutex_lock(&mode_mu);
  if (!mode) decide_locked();
  pthread_mutex_unlock(&mode_mu);
  return __atomic_load_n(&mode, __ATOMIC_ACQUIRE) > 0;
}

/* --- the record's text ------------------------------------------------------------ */
typedef struct sbuf {
  char *b;
  size_t n, cap;
  int bad;
} sbuf;
static void grow(sbuf *s, size_t more) {
  if (s->bad || s->n + more <= s->cap) return;
  size_t cap = s->cap ? s->cap : 4096;
  while (cap < s->n + more) cap *= 2;
  char *b = realloc(s->b, cap);
  if (!b) {
    s->bad = 1;
    return;
  }
  s->b = b;
  s->cap = cap;
}
static void put(sbuf *s, const char *p, size_t n) {
  grow(s, n);
  if (s->bad) return;
  memcpy(s->b + s->n, p, n);
  s->n += n;
}
static void puts_(sbuf *s, const char *p) { put(s, p, strlen(p)); }
__attribute__((format(printf, 2, 3))) static void putf(sbuf *s, const char *fmt, ...) {
  char tmp[256];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
  va_end(ap);
  if (n > 0) put(s, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}
/* The length of the valid UTF-8 sequence at p (1..4), or 0. */
static size_t utf8_len(const uint8_t *p, size_t n) {
  uint8_t c = p[0];
  size_t k = c >= 0xf0 && c <= 0xf4 ? 4 : c >= 0xe0 ? 3 : c >= 0xc2 && c <= 0xdf ? 2 : 0;
  if (!k || k > n) return 0;
  for (size_t i = 1; i < k; i++)
    if ((p[i] & 0xc0) != 0x80) return 0;
  if (k == 3 && ((c == 0xe0 && p[1] < 0xa0) || (c == 0xed && p[1] >= 0xa0))) return 0; /* overlong, surrogate */
  if (k == 4 && ((c == 0xf0 && p[1] < 0x90) || (c == 0xf4 && p[1] >= 0x90))) return 0;
  return k;
}

/* A JSON string. latin1: every byte is one code point (a record key, as
 * the format says); else valid UTF-8 passes as it is (names) and a byte
 * that is not is taken as latin1 (a file name in another encoding stays
 * readable, and the record stays valid JSON text). */
static void put_json(sbuf *s, const uint8_t *p, size_t n, int latin1) {
  grow(s, n * 6 + 3);
  if (s->bad) return;
  s->b[s->n++] = '"';
  for (size_t i = 0; i < n; i++) {
    uint8_t c = p[i];
    size_t k;
    if (!latin1 && c >= 0x80 && (k = utf8_len(p + i, n - i)) > 0) {
      memcpy(s->b + s->n, p + i, k);
      s->n += k;
      i += k - 1;
    } else if (c == '"' || c == '\\') {
      s->b[s->n++] = '\\';
      s->b[s->n++] = (char)c;
    } else if (c < 0x20 || c >= 0x7f) {
      s->n += (size_t)snprintf(s->b + s->n, 7, "\\u%04x", c);
    } else s->b[s->n++] = (char)c;
  }
  s->b[s->n++] = '"';
}
static void put_str(sbuf *s, const char *p) { put_json(s, (const uint8_t *)p, strlen(p), 0); }

/* Once per process: who and what it is. */
static char who_user[256], who_host[256], who_program[1024];
static int64_t who_started_ms;
static int who_known;

static void learn_who(void) {
  if (who_known) return;
  who_known = 1;
  struct passwd pw, *r = NULL;
  char buf[2048];
  if (getpwuid_r(geteuid(), &pw, buf, sizeof buf, &r) == 0 && r) snprintf(who_user, sizeof who_user, "%s", r->pw_name);
  else snprintf(who_user, sizeof who_user, "%u", (unsigned)geteuid());
  if (gethostname(who_host, sizeof who_host) != 0) who_host[0] = 0;
  who_host[sizeof who_host - 1] = 0;
  int fd = open("/proc/self/cmdline", O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    ssize_t n = read(fd, who_program, sizeof who_program - 1);
    close(fd);
    if (n < 0) n = 0;
    while (n > 0 && who_program[n - 1] == 0) n--;
    for (ssize_t i = 0; i < n; i++)
      if (who_program[i] == 0) who_program[i] = ' ';
    who_program[n] = 0;
  }
  /* startedMs: the boot time (btime, /proc/stat) + the start in ticks. */
  int64_t btime = 0;
  FILE *f = fopen("/proc/stat", "re");
  if (f) {
    char line[256];
    while (fgets(line, sizeof line, f))
      if (sscanf(line, "btime %lld", (long long *)&btime) == 1) break;
    fclose(f);
  }
  long hz = sysconf(_SC_CLK_TCK);
  uint64_t ticks = shim_pid_start();
  who_started_ms = btime && hz > 0 ? btime * 1000 + (int64_t)(ticks * 1000 / (uint64_t)hz) : real_ms();
}

/* --- names for fcntl-only programs ------------------------------------------------
 * A program that locks through fcntl names no file: its locks are on a
 * jlock file whose NAME carries the data file's (inode, dev). The data
 * file's path is the target of one of its descriptors with that inode:
 * /proc/self/fd is scanned when a lock's file has no name, and the answer
 * cached (a miss is retried at most once a second). */
#define NAME_CACHE 64
typedef struct name_entry {
  uint64_t inode;
  int64_t dev;
  int64_t tried_ms;
  char name[512]; /* "" = not found */
} name_entry;
static name_entry names[NAME_CACHE];
static unsigned nnames, next_name;

static int same_ino(uint64_t st_ino, uint64_t inode) {
  /* A jlock file's name keeps 32 bits of each (jdls_osl_lock_path). */
  return st_ino == inode || (inode >> 32 == 0 && (uint32_t)st_ino == inode);
}
static int same_dev(uint64_t st_dev, int64_t dev) {
  return dev == -1 || st_dev == (uint64_t)dev || ((uint64_t)dev >> 32 == 0 && (uint32_t)st_dev == (uint64_t)dev);
}

static const char *discover(uint64_t inode, int64_t dev) {
  name_entry *e = NULL;
  for (unsigned i = 0; i < nnames; i++)
    if (names[i].inode == inode && names[i].dev == dev) e = &names[i];
  int64_t now = mono_ms();
  if (e && (e->name[0] || now - e->tried_ms < 1000)) return e->name[0] ? e->name : NULL;
  if (!e) {
    if (nnames < NAME_CACHE) e = &names[nnames++];
    else e = &names[next_name++ % NAME_CACHE];
    e->inode = inode;
    e->dev = dev;
  }
  e->tried_ms = now;
  e->name[0] = 0;
  DIR *d = opendir("/proc/self/fd");
  if (!d) return NULL;
  struct dirent *de;
  int dfd = dirfd(d);
  while ((de = readdir(d))) {
    if (de->d_name[0] < '0' || de->d_name[0] > '9') continue;
    int fd = atoi(de->d_name);
    if (fd == dfd) continue;
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) continue;
    if (!same_ino((uint64_t)st.st_ino, inode) || !same_dev((uint64_t)st.st_dev, dev)) continue;
    char link[64];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, e->name, sizeof e->name - 1);
    if (n <= 0) continue;
    e->name[n] = 0;
    break;
  }
  closedir(d);
  return e->name[0] ? e->name : NULL;
}

/* The declared name of (inode, dev), else one found; with imu held. */
static const char *name_of(uint64_t inode, int64_t dev) {
  for (unsigned i = nfiles; i-- > 0;)
    if (same_ino(files[i].inode, inode) && (dev == -1 || files[i].dev == -1 || same_dev((uint64_t)files[i].dev, dev)))
      return files[i].name;
  return discover(inode, dev);
}

/* --- the table's rows of this process -------------------------------------------- */
/* sinceMs of a lock: the entry's stamp when the table keeps them (-T), else
 * when a write first saw it (at most one period late), remembered by the
 * entry's (group, seq) - unique while it lives. */
typedef struct seen {
  uint64_t id;
  int64_t since;
} seen;
static seen *seen_old, *seen_new;
static size_t seen_old_cap, seen_new_cap;

static uint64_t seen_id(const jdls_row *r) { return (uint64_t)r->group << 40 ^ r->entry.seq; }
static size_t seen_slot(uint64_t id, size_t cap) { return (size_t)((id * 0x9e3779b97f4a7c15ull) >> 20) & (cap - 1); }
static int64_t seen_lookup(uint64_t id) {
  if (!seen_old_cap) return 0;
  for (size_t i = seen_slot(id, seen_old_cap);; i = (i + 1) & (seen_old_cap - 1)) {
    if (!seen_old[i].id) return 0;
    if (seen_old[i].id == id) return seen_old[i].since;
  }
}
static void seen_put(uint64_t id, int64_t since) {
  if (!seen_new_cap) return;
  for (size_t i = seen_slot(id, seen_new_cap);; i = (i + 1) & (seen_new_cap - 1))
    if (!seen_new[i].id) {
      seen_new[i] = (seen){id | 1ull << 63, since};
      return;
    }
}

/* The most locks a record lists (a batch job may hold 100,000): the rest
 * are counted in "locksOmitted" (an addition to the format: readers keep
 * unknown fields). */
#define MAX_LISTED 10000

static jdls_row *rows;
static size_t rows_cap;
static jdls_row *mine;
static size_t nmine, mine_cap;

/* Copy this process's rows (held and waiting) out of the table. */
static void snapshot(void) {
  nmine = 0;
  /* A copy: the route may replace the table (a new one entered service
   * after this one was retired; both stay mapped) while we list. */
  jdls_table copy = *shim_table();
  jdls_table *t = &copy;
  if (!t->hdr) return;
  size_t want = (size_t)t->per_group * 16;
  if (rows_cap < want) {
    free(rows);
    rows = malloc(want * sizeof *rows);
    rows_cap = rows ? want : 0;
    if (!rows) return;
  }
  uint32_t pid = shim_pid();
  uint64_t start = shim_pid_start();
  for (uint32_t g = 0; g < t->ngroups;) {
    uint32_t next = g;
    int n = jdls_list(t, g, t->ngroups - g, rows, (uint32_t)rows_cap, &next);
    if (n < 0) break;
    for (int i = 0; i < n; i++) {
      const jdls_entry *e = &rows[i].entry;
      if (e->pid != pid || e->conn != 0 || (e->pid_start && start && e->pid_start != start)) continue;
      if (nmine == mine_cap) {
        size_t cap = mine_cap ? mine_cap * 2 : 64;
        jdls_row *m = realloc(mine, cap * sizeof *m);
        if (!m) return;
        mine = m;
        mine_cap = cap;
      }
      mine[nmine++] = rows[i];
    }
    if (next <= g) break;
    g = next;
  }
}

static void put_lockish(sbuf *s, const jdls_row *r, int64_t since) {
  const jdls_entry *e = &r->entry;
  const char *name = name_of(e->inode, e->dev);
  puts_(s, "{");
  if (name) {
    puts_(s, "\"file\":");
    put_str(s, name);
    puts_(s, ",");
  }
  putf(s, "\"inode\":\"%llu\",\"dev\":\"%lld\",\"key\":", (unsigned long long)e->inode, (long long)e->dev);
  put_json(s, e->key, e->key_len <= JDLS_MAX_KEY ? e->key_len : JDLS_MAX_KEY, 1);
  putf(s, ",\"mode\":\"%s\",\"kind\":\"record\",\"sinceMs\":%lld,\"lockNo\":\"0x%08x\"",
       e->mode == JDLS_MODE_READ ? "read" : "write", (long long)since, (unsigned)e->hash);
  if (r->state == JDLS_STATE_HELD && e->token) putf(s, ",\"token\":\"%llu\"", (unsigned long long)e->token);
  puts_(s, "}");
}

static void put_file(sbuf *s, int *first, const char *name, uint64_t inode, int64_t dev) {
  puts_(s, *first ? "" : ",");
  *first = 0;
  puts_(s, "{");
  if (name) {
    puts_(s, "\"name\":");
    put_str(s, name);
    puts_(s, ",");
  }
  putf(s, "\"inode\":\"%llu\",\"dev\":\"%lld\"}", (unsigned long long)inode, (long long)dev);
}

/* The whole record; with imu held. */
static void build(sbuf *s) {
  learn_who();
  int64_t now = real_ms();
  putf(s, "{\"version\":%d,\"port\":%u,\"pid\":%u,\"ipaddr\":\"" JDLS_INFO_LOCAL_ADDR "\",\"host\":", JDLS_INFO_VERSION,
       info_port, shim_pid());
  put_str(s, who_host);
  puts_(s, ",\"user\":");
  put_str(s, who_user);
  puts_(s, ",\"program\":");
  put_str(s, who_program);
  putf(s, ",\"startedMs\":%lld,\"updatedMs\":%lld,\"writer\":{\"kind\":\"local\",\"pid\":%u,\"start\":%llu}",
       (long long)who_started_ms, (long long)now, shim_pid(), (unsigned long long)shim_pid_start());

  /* since-times: a fresh map for this write, looked up in the last one */
  size_t held = 0;
  for (size_t i = 0; i < nmine; i++) held += mine[i].state == JDLS_STATE_HELD;
  size_t cap = 16;
  while (cap < 2 * (held < MAX_LISTED ? held : MAX_LISTED) + 2) cap *= 2;
  if (seen_new_cap < cap) {
    free(seen_new);
    seen_new = malloc(cap * sizeof *seen_new);
    seen_new_cap = seen_new ? cap : 0;
  }
  if (seen_new) memset(seen_new, 0, seen_new_cap * sizeof *seen_new);

  /* files: the declared ones, then those of held locks not declared */
  puts_(s, ",\"files\":[");
  int first = 1;
  for (unsigned i = 0; i < nfiles; i++) put_file(s, &first, files[i].name, files[i].inode, files[i].dev);
  for (size_t i = 0; i < nmine; i++) {
    const jdls_entry *e = &mine[i].entry;
    int dup = 0;
    for (unsigned j = 0; j < nfiles && !dup; j++)
      dup = same_ino(files[j].inode, e->inode) && (e->dev == -1 || files[j].dev == -1 || same_dev((uint64_t)files[j].dev, e->dev));
    for (size_t j = 0; j < i && !dup; j++) dup = mine[j].entry.inode == e->inode && mine[j].entry.dev == e->dev;
    if (!dup) put_file(s, &first, name_of(e->inode, e->dev), e->inode, e->dev);
  }
  puts_(s, "],\"locks\":[");
  first = 1;
  size_t listed = 0, omitted = 0;
  const jdls_row *waiting = NULL;
  for (size_t i = 0; i < nmine; i++) {
    const jdls_row *r = &mine[i];
    if (r->state == JDLS_STATE_WAITING) {
      if (!waiting) waiting = r;
      continue;
    }
    if (r->state != JDLS_STATE_HELD) continue;
    if (listed == MAX_LISTED) {
      omitted++;
      continue;
    }
    uint64_t id = seen_id(r);
    int64_t since = r->entry.stamp_ms ? r->entry.stamp_ms : seen_lookup(id | 1ull << 63);
    if (!since) since = now;
    seen_put(id, since);
    puts_(s, first ? "" : ",");
    first = 0;
    put_lockish(s, r, since);
    listed++;
  }
  puts_(s, "]");
  if (omitted) putf(s, ",\"locksOmitted\":%zu", omitted);
  if (waiting) {
    puts_(s, ",\"waiting\":");
    int64_t since = waiting->entry.stamp_ms ? waiting->entry.stamp_ms : wait_since_ms ? wait_since_ms : now;
    put_lockish(s, waiting, since);
  }
  putf(s, ",\"stats\":{\"locks\":%llu,\"waits\":%llu,\"waitMs\":%llu,\"retries\":%llu}}\n",
       (unsigned long long)__atomic_load_n(&shim_info_locks, __ATOMIC_RELAXED),
       (unsigned long long)__atomic_load_n(&shim_info_waits, __ATOMIC_RELAXED),
       (unsigned long long)__atomic_load_n(&shim_info_wait_ms, __ATOMIC_RELAXED),
       (unsigned long long)__atomic_load_n(&shim_info_retries, __ATOMIC_RELAXED));
  seen *tmp = seen_old;
  size_t tc = seen_old_cap;
  seen_old = seen_new;
  seen_old_cap = seen_new_cap;
  seen_new = tmp;
  seen_new_cap = tc;
}

/* Atomic: a temporary `.<name>.<pid>` beside it (readers skip names with a
 * leading '.'), written whole, then renamed over the record. 0 or -1. */
static int write_file(const sbuf *s) {
  char path[4200], tmp[4300];
  uint32_t pid = shim_pid();
  if (record_path(path, sizeof path, pid, "") < 0) return -1;
  char nm[200];
  snprintf(nm, sizeof nm, "%u." JDLS_INFO_LOCAL_ADDR ".%u.json", info_port, pid);
  int n = snprintf(tmp, sizeof tmp, "%s/.%s.%u", info_dir, nm, pid);
  if (n < 0 || (size_t)n >= sizeof tmp) return -1;
  int fd = -1;
  for (int attempt = 0; attempt < 2 && fd < 0; attempt++) {
    fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0640);
    /* A leftover of this pid (a write cut short by kill -9 of an earlier
     * image of this process): ours to replace. */
    if (fd < 0 && errno == EEXIST) unlink(tmp);
  }
  if (fd < 0) return -1;
  fchmod(fd, 0640); /* whatever the umask: the group (the directory's, setgid) reads it */
  size_t off = 0;
  while (off < s->n) {
    ssize_t w = write(fd, s->b + off, s->n - off);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) break;
    off += (size_t)w;
  }
  int ok = off == s->n;
  if (close(fd) != 0) ok = 0;
  if (ok && rename(tmp, path) == 0) return 0;
  unlink(tmp);
  return -1;
}

/* 0, or -1 when it should be tried again (at the next period). */
static int write_record(void) {
  snapshot(); /* outside imu: it takes table group mutexes */
  sbuf s = {0};
  int rc = 0;
  pthread_mutex_lock(&imu);
  if (!closed) {
    build(&s);
    /* A failure (out of memory, a descriptor the program closed under us:
     * closefrom) is tried again one period later, not left unwritten. */
    if (!s.bad && write_file(&s) == 0) written = 1;
    else rc = -1;
  }
  pthread_mutex_unlock(&imu);
  free(s.b);
  return rc;
}

/* --- the flusher --------------------------------------------------------------- */
static void futex_wait_ms(uint32_t *w, uint32_t val, int64_t ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  syscall(SYS_futex, w, FUTEX_WAIT_PRIVATE, val, ms >= 0 ? &ts : NULL, NULL, 0);
}

static void *flusher(void *arg) {
  (void)arg;
  shim_busy = 1; /* for life: its open/close/rename are not the program's */
  int64_t last = -JDLS_INFO_FLUSH_MS;
  int failures = 0;
  for (;;) {
    uint32_t w = __atomic_load_n(&shim_info_word, __ATOMIC_ACQUIRE);
    int64_t now = mono_ms();
    if ((w & SHIM_INFO_URGENT) || ((w & SHIM_INFO_DIRTY) && now - last >= JDLS_INFO_FLUSH_MS)) {
      __atomic_fetch_and(&shim_info_word, ~(uint32_t)(SHIM_INFO_URGENT | SHIM_INFO_DIRTY), __ATOMIC_ACQ_REL);
      /* A failed write is tried again a period later, three times at most
       * in a row (a directory that went away is not retried for ever; the
       * next change tries again). */
      if (write_record() == 0) failures = 0;
      else if (++failures < 3) __atomic_fetch_or(&shim_info_word, SHIM_INFO_DIRTY, __ATOMIC_ACQ_REL);
      last = mono_ms();
      continue;
    }
    if (w & SHIM_INFO_DIRTY) {
      /* a change within the period: written at its end (an urgent moment
       * changes the word and wakes us sooner) */
      futex_wait_ms(&shim_info_word, w, last + JDLS_INFO_FLUSH_MS - now);
      continue;
    }
    /* Nothing to write: sleep until a change (the touch wakes us when it
     * sees ASLEEP). */
    if (!__atomic_compare_exchange_n(&shim_info_word, &w, w | SHIM_INFO_ASLEEP, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
      continue;
    futex_wait_ms(&shim_info_word, w | SHIM_INFO_ASLEEP, -1);
    __atomic_fetch_and(&shim_info_word, ~(uint32_t)SHIM_INFO_ASLEEP, __ATOMIC_ACQ_REL);
  }
  return NULL;
}

static void start_flusher(void) {
  pthread_mutex_lock(&mode_mu);
  if (!flusher_started) {
    pthread_attr_t a;
    pthread_attr_init(&a);
    pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&a, 256 * 1024);
    sigset_t all;
    sigfillset(&all);
    pthread_attr_setsigmask_np(&a, &all);
    pthread_t th;
    if (pthread_create(&th, &a, flusher, NULL) == 0) flusher_started = 1;
    else __atomic_store_n(&shim_info_word, SHIM_INFO_DIRTY, __ATOMIC_RELAXED); /* no records then */
    pthread_attr_destroy(&a);
  }
  pthread_mutex_unlock(&mode_mu);
}

/* --- the hooks (shim.h) ------------------------------------------------------ */
static void request(uint32_t bits) {
  if (shim_in_vfork) return;
  if (!__atomic_load_n(&flusher_started, __ATOMIC_ACQUIRE)) {
    /* Once per process (the DIRTY bit stays set until the flusher runs, so
     * the touch's fast path returns meanwhile): deciding and starting take
     * mode_mu, so with signals blocked - a jump out of here would leave it
     * held. */
    sigset_t caller;
    shim_block_signals(&caller);
    if (info_on()) {
      /* the first change is the record's "start" moment: at once */
      __atomic_fetch_or(&shim_info_word, bits | SHIM_INFO_URGENT, __ATOMIC_ACQ_REL);
      start_flusher();
    }
    shim_restore_signals(&caller);
    return;
  }
  uint32_t old = __atomic_fetch_or(&shim_info_word, bits, __ATOMIC_ACQ_REL);
  if ((old & SHIM_INFO_ASLEEP) || (bits & SHIM_INFO_URGENT)) futex_wake(&shim_info_word);
}

void shim_info_changed(void) { request(SHIM_INFO_DIRTY); }

void shim_info_block(void) {
  __atomic_store_n(&shim_info_waits, shim_info_waits + 1, __ATOMIC_RELAXED);
  wait_since_ms = real_ms();
  wait_mono_ms = mono_ms();
  request(SHIM_INFO_DIRTY | SHIM_INFO_URGENT);
}

void shim_info_unblock(void) {
  int64_t d = mono_ms() - wait_mono_ms;
  if (d > 0) __atomic_store_n(&shim_info_wait_ms, shim_info_wait_ms + (uint64_t)d, __ATOMIC_RELAXED);
  wait_since_ms = 0;
  request(SHIM_INFO_DIRTY | SHIM_INFO_URGENT);
}

/* Fork child: another port owner, with no flusher and no record yet. */
void shim_info_forget(void) {
  pthread_mutex_init(&imu, NULL);
  pthread_mutex_init(&mode_mu, NULL);
  flusher_started = 0;
  written = 0;
  closed = 0;
  shim_info_locks = shim_info_waits = shim_info_wait_ms = shim_info_retries = 0;
  wait_since_ms = 0;
  who_known = 0; /* its own start time */
  __atomic_store_n(&shim_info_word, mode < 0 ? SHIM_INFO_DIRTY : 0, __ATOMIC_RELAXED);
  shim_info_remote_forget();
}

/* Normal exit: the record goes (the guide: removed when the process ends
 * normally); _exit and kill -9 leave it, stale, for the monitor's tidy-up. */
__attribute__((destructor)) static void remove_at_exit(void) {
  if (__atomic_load_n(&mode, __ATOMIC_ACQUIRE) <= 0 || shim_foreign()) return;
  sigset_t caller;
  shim_block_signals(&caller);
  shim_busy++;
  pthread_mutex_lock(&imu);
  closed = 1;
  if (written) {
    char path[4200];
    if (record_path(path, sizeof path, shim_pid(), "") >= 0) unlink(path);
    written = 0;
  }
  pthread_mutex_unlock(&imu);
  shim_busy--;
  shim_restore_signals(&caller);
}

/* An image started by exec keeps the pid of the one before it, whose
 * record (if it wrote one and exec'd without exiting) names this pid and
 * is no longer true: removed when the library loads. One unlink of a name
 * that usually does not exist. */
__attribute__((constructor)) static void remove_previous_image(void) {
  const char *e = getenv(JDLS_INFO_ENV);
  if (e && strcmp(e, "0") == 0) return;
  char rel[4000];
  if (jdls_release_dir(rel, sizeof rel) < 0) return;
  const char *p = getenv("JBCPORTNO");
  char path[4200];
  int n = snprintf(path, sizeof path, "%s/%s/%u." JDLS_INFO_LOCAL_ADDR ".%u.json", rel, JDLS_INFO_SUBDIR,
                   p ? (unsigned)strtoul(p, NULL, 10) : 0u, (unsigned)syscall(SYS_getpid));
  if (n > 0 && (size_t)n < sizeof path) unlink(path);
}

/* --- declared files (jdls.h) -------------------------------------------------- */
/* Add, rename or (name NULL) forget the file (inode, dev); with imu. */
static void declare_locked(uint64_t inode, int64_t dev, const char *name) {
  unsigned i;
  for (i = 0; i < nfiles; i++)
    if (files[i].inode == inode && files[i].dev == dev) break;
  if (!name) {
    if (i < nfiles) {
      free(files[i].name);
      memmove(&files[i], &files[i + 1], (nfiles - i - 1) * sizeof files[0]);
      nfiles--;
    }
    return;
  }
  char *copy = strdup(name);
  if (!copy) return;
  if (i == nfiles) {
    if (nfiles == JDLS_INFO_MAX_FILES) {
      /* the oldest declaration goes: files are kept in declaration order */
      free(files[0].name);
      memmove(&files[0], &files[1], (nfiles - 1) * sizeof files[0]);
      nfiles--;
      i = nfiles;
    }
    nfiles++;
  } else {
    free(files[i].name);
    info_file f = files[i];
    memmove(&files[i], &files[i + 1], (nfiles - i - 1) * sizeof files[0]);
    files[nfiles - 1] = f;
    i = nfiles - 1;
  }
  files[i] = (info_file){inode, dev, ++file_seq, copy};
}

static int declare(uint64_t inode, int64_t dev, const char *name) {
  if (name && strlen(name) > 4096) return -ENAMETOOLONG;
  /* Masked: a jump out of this stretch would leave imu held and the
   * flusher waiting for ever (the header comment). */
  sigset_t caller;
  shim_block_signals(&caller);
  pthread_mutex_lock(&imu);
  declare_locked(inode, dev, name);
  pthread_mutex_unlock(&imu);
  shim_restore_signals(&caller);
  /* The lock server's record (server route) learns it by INFO; a local
   * record at its next write. */
  shim_info_remote_changed(0);
  if (__atomic_load_n(&flusher_started, __ATOMIC_ACQUIRE)) shim_info_changed();
  return 0;
}

SHIM_EXPORT int jdls_declare_file(int fd, const char *name) {
  struct stat st;
  if (fstat(fd, &st) != 0) return -errno;
  return declare((uint64_t)st.st_ino, (int64_t)st.st_dev, name);
}

SHIM_EXPORT int jdls_declare_file_id(uint64_t inode, int64_t dev, const char *name) {
  return declare(inode, dev, name);
}

SHIM_EXPORT void jdls_info_idle(void) {
  /* Written at once if anything changed since the last write. */
  uint32_t w = __atomic_load_n(&shim_info_word, __ATOMIC_ACQUIRE);
  if (__atomic_load_n(&flusher_started, __ATOMIC_ACQUIRE) && (w & SHIM_INFO_DIRTY) && info_on()) {
    __atomic_fetch_or(&shim_info_word, SHIM_INFO_URGENT, __ATOMIC_ACQ_REL);
    futex_wake(&shim_info_word);
  }
  shim_info_remote_changed(1);
}

/* --- for the INFO frame (shim_broker.c) ----------------------------------------
 * The ClientInfo JSON (docs/info-records.md): user, program, files, stats,
 * moment. Returns a malloc'd text, or NULL. */
int shim_info_disabled(void) {
  const char *e = getenv(JDLS_INFO_ENV);
  return e && strcmp(e, "0") == 0;
}

char *shim_info_client_json(const char *moment, size_t max) {
  sbuf s = {0};
  sigset_t caller;
  shim_block_signals(&caller);
  pthread_mutex_lock(&imu);
  learn_who();
  puts_(&s, "{\"user\":");
  put_str(&s, who_user);
  puts_(&s, ",\"program\":");
  put_str(&s, who_program);
  puts_(&s, ",\"files\":[");
  int first = 1;
  /* Newest first, while they fit (a frame is at most 64 KiB; 500 long
   * names would not). The server's file identity is (inode, -1). */
  for (unsigned i = nfiles; i-- > 0;) {
    size_t before = s.n;
    put_file(&s, &first, files[i].name, files[i].inode, -1);
    if (s.n + 200 > max) {
      s.n = before;
      break;
    }
  }
  putf(&s, "],\"stats\":{\"locks\":%llu,\"waits\":%llu,\"waitMs\":%llu,\"retries\":%llu},\"moment\":\"%s\"}",
       (unsigned long long)shim_info_locks, (unsigned long long)shim_info_waits,
       (unsigned long long)shim_info_wait_ms, (unsigned long long)shim_info_retries, moment);
  pthread_mutex_unlock(&imu);
  shim_restore_signals(&caller);
  if (s.bad) {
    free(s.b);
    return NULL;
  }
  grow(&s, 1);
  if (s.bad) {
    free(s.b);
    return NULL;
  }
  s.b[s.n] = 0;
  return s.b;
}
