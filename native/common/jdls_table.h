/*
 * jdls_table.h - the shared-memory record lock table: layout and C API.
 *
 * This header is the ONE definition of the table's layout, its constants and
 * its error codes. The addon (native/addon), the C fixtures (test/fixtures),
 * the benchmarks and the preload shim all include it; TypeScript gets the
 * numbers from the addon's `constants` export (src/native.ts mirrors them and
 * test/native-constants.test.ts compares the two).
 *
 * Divisions of this file (keep them):
 *   1. constants and error codes
 *   2. the shared layout (header, process slots, groups, entries)
 *   3. the process-local handle and the API
 *
 * What lives where in the segment:
 *
 *   +----------------------+  offset 0
 *   | jdls_header          |  magic, version, geometry, monitor statistics
 *   +----------------------+  header_size
 *   | jdls_proc_slot[1024] |  doorbells of processes that wait asynchronously
 *   +----------------------+  groups_offset
 *   | group 0              |  jdls_group (robust mutex, count) + per_group
 *   |                      |  jdls_entry
 *   | group 1 ...          |
 *   +----------------------+  total_size
 *
 * Locking rules (written on the struct, checked by jdls_table_check):
 *   - Every field of a group and of its entries is read and written only with
 *     that group's mutex held, EXCEPT entry.state, which a waiter reads
 *     without the mutex (it is the futex word it sleeps on) and which is
 *     always written with an atomic store while the mutex is held, and
 *     entry.seq, which jdls_wait_poll(reap = 0) reads without the mutex
 *     (atomic loads and stores; seq is written before state is published).
 *   - A thread never holds two group mutexes at once (no lock ordering, no
 *     deadlock between groups).
 *   - group.count and group.waiting are derived (non-FREE and WAITING
 *     entries); repair recomputes them.
 */
#ifndef JDLS_TABLE_H
#define JDLS_TABLE_H

#include <stdint.h>
#include <stddef.h>
#include <pthread.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ===== 1. constants and error codes ===================================== */

#define JDLS_MAGIC            0x534c444aU   /* "JDLS" little-endian */
#define JDLS_LAYOUT_VERSION   7U   /* 4: the group hash is jdls_hash.h; 5: entries carry the owner's connection, header.service; 6: header.hash_seed; 7: fencing tokens, deadlock detection */
#define JDLS_MAX_KEY          512U          /* longest key, in bytes */
#define JDLS_PROC_SLOTS       1024U         /* async waiters' doorbells */
#define JDLS_DEFAULT_LOCKS    3020U         /* jBASE's default -s3020,20 */
#define JDLS_DEFAULT_PER_GROUP 20U
#define JDLS_MAX_LOCKS        50000000U     /* refuse absurd sizes */
#define JDLS_MAX_PER_GROUP    10000U
/* How often a waiter re-checks that the owners it waits for are alive: a
 * holder killed with -9 never releases, so without this a waiter would sleep
 * until someone else happened to conflict with the dead lock. */
#define JDLS_LIVENESS_TICK_MS 20U
/* Every JDLS_THOROUGH_EVERY-th tick the check also reads /proc/<pid>/stat
 * (a zombie or a recycled pid passes kill()); the others ask kill() only. */
#define JDLS_THOROUGH_EVERY   10U
/* jdls_wait_poll's `reap` levels. */
#define JDLS_REAP_NONE        0
#define JDLS_REAP_QUICK       1
#define JDLS_REAP_THOROUGH    2

/* Header flags (set when the table is created, never changed after). */
#define JDLS_FLAG_PORT_LOCKS  0x1U   /* -P: owner is (ip, port) */
#define JDLS_FLAG_TIMESTAMPS  0x2U   /* -T: entries carry their grant time */

/* Lock modes. READ is jBASE's READL (shared), WRITE its READU (exclusive). */
#define JDLS_MODE_READ   1
#define JDLS_MODE_WRITE  2

/* Entry states; the state word is also the futex a waiter sleeps on. */
#define JDLS_STATE_FREE     0U
#define JDLS_STATE_HELD     1U
#define JDLS_STATE_WAITING  2U
/* A wait refused by deadlock detection (policy break): it no longer queues
 * and blocks nobody; the entry stays until its waiter collects the verdict
 * (jdls_wait_poll says JDLS_DEADLOCK; jdls_wait_cancel frees it) or its
 * process is reaped. */
#define JDLS_STATE_REFUSED  3U

/* Fencing tokens (docs/fencing.md): u64 < 2^63, epoch in bits 62..44, a
 * counter below. One counter per table: every grant takes the next value
 * under its group's mutex, so tokens strictly increase per key (and
 * globally). The epoch is the installation's (persisted by the monitor,
 * bumped at each table creation) and can be raised (SERVER2 failover). */
#define JDLS_TOKEN_EPOCH_SHIFT 44
#define JDLS_TOKEN_MAX_EPOCH   ((1ULL << 19) - 1)

/* Deadlock reports: the last JDLS_REPORTS cycles found, in the header, for
 * the monitor to log and -dvL to show. A cycle longer than
 * JDLS_REPORT_MEMBERS is reported by its first members and its length. */
#define JDLS_REPORTS          16U
#define JDLS_REPORT_MEMBERS   8U
#define JDLS_REPORT_KEY       64U   /* key bytes kept per member */
/* Longest cycle looked for, in owners (the kernel looks 10 deep). */
#define JDLS_DEADLOCK_DEPTH   64U

/* Request flags. */
#define JDLS_REQ_NOWAIT  0x1U   /* jBASE LOCKED clause: never queue */
#define JDLS_REQ_BREAK_DEADLOCK 0x2U /* if this wait closes (or is in) a cycle of waiters, it may be
                                        refused with JDLS_DEADLOCK (policy break): docs/deadlocks.md */

/* Deadlock policies (jdls_header.deadlock_policy; jdls.yaml `deadlock:`). */
#define JDLS_DEADLOCK_OFF    0U   /* no detection */
#define JDLS_DEADLOCK_REPORT 1U   /* detect and record (the monitor logs it); never refuse */
#define JDLS_DEADLOCK_BREAK  2U   /* also refuse the youngest waiter of the cycle that asked for it */

/* Outcomes of a lock request (>= 0) and errors (< 0). One enum for C and,
 * through the addon, for TypeScript (JdlsError.code is the name). */
typedef enum jdls_rc {
  JDLS_OK            = 0,   /* granted */
  JDLS_CONFLICT      = 1,   /* NOWAIT and someone else holds it */
  JDLS_QUEUED        = 2,   /* enqueued; wait with jdls_wait_* */
  JDLS_TIMEOUT       = 3,   /* the wait's deadline passed; nothing held */
  JDLS_NOT_HELD      = 4,   /* release of a lock the owner does not hold */
  JDLS_DEADLOCK      = 5,   /* the wait was refused: it was in a cycle of waiters (nothing held) */
  /* Errors stay clear of -3..3: jdls_status returns RECORDLOCKED values
   * (-3..3) and errors in one int, so -2 must never mean both "WRITE-locked
   * by another" and an error (it once meant KEY_TOO_LONG too). */
  JDLS_E_TABLE_FULL  = -37, /* jBASE Error 37: the key's group is full */
  JDLS_E_KEY_TOO_LONG = -12,
  JDLS_E_ARG         = -13, /* bad argument (mode, size, address) */
  JDLS_E_NO_TABLE    = -14, /* no table for this JBCRELEASEDIR */
  JDLS_E_BAD_TABLE   = -15, /* magic/version/size mismatch */
  JDLS_E_SYS         = -16, /* system call failed; errno kept */
  JDLS_E_NO_SLOT     = -17, /* no free process slot for async waits */
  JDLS_E_EXISTS      = -18, /* create: the table exists already */
  JDLS_E_RECOVER     = -19, /* a group mutex is not recoverable */
  JDLS_E_RETIRED     = -20, /* the table was taken out of service (jdls -K/-Ko) */
  JDLS_E_UNTRUSTED   = -21  /* the file at the table's (or marker's) name is not
                               one the installation made: wrong owner, writable
                               by others, extra links, not a regular file, a
                               symlink (jdls_detail() says which); refused */
} jdls_rc;

/* RECORDLOCKED() results (jBASE): >0 held by this owner, <0 by another. */
#define JDLS_RL_FILELOCK  3
#define JDLS_RL_WRITE     2
#define JDLS_RL_READ      1
#define JDLS_RL_FREE      0

/* ===== 2. the shared layout ============================================= */

/* One record lock, or one queued request for one. 624 bytes. */
typedef struct jdls_entry {
  uint32_t state;        /* JDLS_STATE_*; atomic; futex word of the waiter */
  uint8_t  mode;         /* JDLS_MODE_* */
  uint8_t  ip_len;       /* 4 (IPv4) or 16 (IPv6); 4 with 0.0.0.0 = local */
  uint16_t key_len;
  uint32_t hash;         /* 30-bit hash of (inode, dev, key): "value" */
  uint32_t pid;          /* local process that holds the entry (liveness) */
  uint32_t owner_pid;    /* the lock owner's pid (a remote client's pid for
                            entries a lock-server process holds for it) */
  uint32_t owner_tid;    /* the owner's thread id */
  uint32_t port;         /* jBASE port number */
  int32_t  doorbell;     /* process slot to ring on grant, -1 = none */
  uint64_t pid_start;    /* start time of `pid` (clock ticks), vs pid reuse */
  uint64_t inode;
  int64_t  dev;          /* -1 for files reached through a lock server */
  uint64_t seq;          /* arrival order: FIFO among waiters of one key */
  int64_t  stamp_ms;     /* grant/enqueue time, ms since epoch (-T), else 0 */
  uint32_t conn;         /* the owner's connection within `pid` (a lock
                            server's client connection), 0 for a local
                            process: part of the owner (see jdls_owner) */
  uint8_t  wflags;       /* JDLS_REQ_BREAK_DEADLOCK of a WAITING entry */
  uint8_t  pad_e[3];
  uint64_t token;        /* fencing token of the grant (HELD), else 0 */
  uint64_t wait_no;      /* global arrival order of a wait (header.next_wait):
                            the youngest waiter of a cycle has the largest */
  uint8_t  ip[16];       /* client address, network byte order */
  uint8_t  key[JDLS_MAX_KEY];
} jdls_entry;

/* A group: the unit of hashing and of mutual exclusion. */
typedef struct jdls_group {
  pthread_mutex_t mutex; /* robust, process-shared */
  uint32_t count;        /* non-FREE entries (derived; repair recomputes) */
  uint32_t max_count;    /* high-water mark */
  uint64_t next_seq;     /* FIFO ticket dispenser */
  uint32_t waiting;      /* WAITING entries (derived): lets a release skip
                            the hand-off scan when nobody queues */
  uint8_t  pad[4];       /* to 64 bytes (static_assert in jdls_table.c) */
} jdls_group;

/* A process that waits asynchronously (the Node addon's waiter thread) owns
 * one slot; a grant for it increments `bell` and wakes it, so one thread can
 * sleep on a single futex for all of its process's pending waits. */
typedef struct jdls_proc_slot {
  uint32_t pid;          /* atomic; 0 = free */
  uint32_t bell;         /* atomic futex word */
  uint64_t pid_start;
} jdls_proc_slot;

/* One member of a reported cycle: an owner, and the lock it waits for. */
typedef struct jdls_report_member {
  uint32_t pid;          /* holding process (a lock server for a remote client) */
  uint32_t owner_pid;
  uint32_t owner_tid;
  uint32_t port;
  uint32_t conn;
  uint8_t  ip_len;
  uint8_t  mode;         /* the mode it waits for */
  uint16_t key_len;      /* the key's full length (key[] keeps at most JDLS_REPORT_KEY) */
  uint8_t  ip[16];
  uint64_t inode;
  int64_t  dev;
  uint64_t wait_no;
  uint8_t  key[JDLS_REPORT_KEY];
} jdls_report_member;

/* A cycle found. Written under detect_mutex; `number` is 0 while it is
 * being written and the report's number (1, 2, ...) once complete (release
 * store), so a reader without the mutex copies it and checks `number`
 * before and after (a seqlock with one writer). */
typedef struct jdls_deadlock_report {
  uint64_t number;
  int64_t  time_ms;      /* ms since the epoch */
  uint32_t members;      /* owners in the cycle (m[] holds the first ones) */
  int32_t  victim;       /* index in m[] of the refused wait, -1: reported only */
  jdls_report_member m[JDLS_REPORT_MEMBERS];
} jdls_deadlock_report;

typedef struct jdls_header {
  uint32_t magic;        /* written last by the creator (release store) */
  uint32_t version;
  uint32_t header_size;  /* sizeof(jdls_header) */
  uint32_t entry_size;   /* sizeof(jdls_entry) */
  uint32_t group_size;   /* sizeof(jdls_group) + per_group * entry_size */
  uint32_t ngroups;      /* prime */
  uint32_t per_group;
  uint32_t flags;        /* JDLS_FLAG_* */
  uint64_t groups_offset;
  uint64_t total_size;
  uint32_t requested_locks;
  uint32_t tidy_ms;      /* tidy-up period (-t minutes, decimals allowed) */
  /* The monitor writes these; readers treat them as a snapshot. */
  uint32_t monitor_pid;
  uint32_t listener_pid;
  uint64_t monitor_start; /* pid start time of monitor_pid */
  uint64_t listener_start;
  int64_t  created_ms;
  int64_t  started_ms;   /* monitor "Program started" */
  int64_t  last_ran_ms;
  int64_t  last_tidy_ms;
  uint64_t tidy_ops;     /* locks freed by tidy-ups and dead-owner reaping */
  uint64_t lock_retries; /* distributed lock retries (listener) */
  uint32_t listener_port;
  uint8_t  listener_addr[46];
  uint8_t  pad0[2];
  /* Whether the table is THE record-lock mechanism of its installation
   * (JDLS_SERVICE_*; atomic). Every process routes by this, never by the
   * monitor's liveness: stopping the monitor stops tidy-ups, nothing else
   * (jdls_service.c says how a table enters and leaves service). */
  uint32_t service;
  uint32_t starter_pid;  /* who is putting it in service (STARTING) */
  uint32_t pad1;
  uint64_t starter_start;
  /* The group hash's key, random per table (getrandom at creation). Why:
   * with a public hash a remote client could choose keys that all fall in
   * one group and fill it (20 entries) well within its quota, after which
   * every other client's key of that group got TABLE_FULL - a full table
   * that only one client had reached. Keyed by a secret that only the
   * table's users can read, a client cannot aim its keys at a group. */
  uint64_t hash_seed;
  /* ---- 7: deadlock detection (docs/deadlocks.md) ---- */
  uint32_t deadlock_policy;  /* JDLS_DEADLOCK_*; set once by the creator */
  uint32_t pad2;
  uint64_t deadlocks_found;  /* cycles detected (atomic) */
  uint64_t deadlocks_broken; /* waits refused with JDLS_DEADLOCK (atomic) */
  uint64_t reports_written;  /* reports ever written to `reports` (atomic;
                                report n is in reports[(n - 1) % JDLS_REPORTS]) */
  uint64_t next_wait;        /* dispenser of jdls_entry.wait_no (atomic) */
  uint8_t  reserved[8];
  /* On a cache line of its own: every grant of every process takes one. */
  uint64_t next_token __attribute__((aligned(64)));
  uint8_t  pad3[56];
  /* Robust, process-shared: one detection at a time, and the ring. */
  pthread_mutex_t detect_mutex;
  uint8_t  pad4[64 - sizeof(pthread_mutex_t) % 64];
  jdls_deadlock_report reports[JDLS_REPORTS];
} jdls_header;

/* Service states of a table (jdls_header.service). */
#define JDLS_SERVICE_STARTING 0U  /* created; not yet the mechanism */
#define JDLS_SERVICE_ON       1U  /* the installation's record-lock mechanism */
#define JDLS_SERVICE_RETIRED  2U  /* taken out of service (jdls -K/-Ko) */

/* ===== 3. the process-local handle and the API ========================== */

/* Who the installation trusts (docs/lock-table.md, "Who may use it"): its
 * files may be owned by root or by `uid`, the service's user (the owner of
 * the installation directory); `gid` is the installation directory's group,
 * the jdls group: the table is created 0660 with that group, and its
 * members may use it (and are trusted as equals: they can read every key
 * and free any lock). */
typedef struct jdls_trust {
  uint32_t uid;
  uint32_t gid;
} jdls_trust;

/* Trap: every geometry field below is a PRIVATE copy, taken and validated
 * once when the table is opened. The header's own fields are shared memory
 * that anyone who can write the table can rewrite at any moment; address
 * arithmetic done from them ran the writer's numbers inside every process
 * that mapped the table (a rewritten group count sent a lock call to a
 * group far outside the mapping: SIGSEGV in root's lock servers). Nothing
 * in the segment is used as an address, an index or a length without a
 * check against these. */
typedef struct jdls_table {
  jdls_header *hdr;
  size_t size;
  int fd;
  int slot;              /* this process's doorbell slot, -1 until claimed */
  char path[256];        /* /dev/shm/... */
  uint32_t ngroups;      /* private copies of the header's geometry */
  uint32_t per_group;
  uint32_t flags;
  uint32_t group_size;
  uint64_t groups_offset;
  uint64_t hash_seed;    /* private copy of header.hash_seed */
  jdls_trust trust;      /* who may own the marker beside it */
} jdls_table;

/* Who asks. `pid` (with `pid_start`) is the local process that holds the
 * entries (liveness); the owner identity is (ip, owner_pid, owner_tid,
 * conn) within that process, or (ip, port) when the table has
 * JDLS_FLAG_PORT_LOCKS. `conn` is the lock server's connection: a client
 * can only ever touch what its own connection took, whatever pid and tid it
 * presents (two connections presenting the same ones are two owners). A
 * local process uses 0. */
typedef struct jdls_owner {
  uint32_t pid;
  uint32_t owner_pid;
  uint32_t owner_tid;
  uint32_t port;
  uint64_t pid_start;
  uint8_t  ip[16];
  uint8_t  ip_len;
  uint32_t conn;
} jdls_owner;

/* What NOWAIT reports (jBASE's LOCKED clause: SYSTEM(43) is `port`). */
typedef struct jdls_holder {
  uint32_t pid;
  uint32_t owner_pid;
  uint32_t owner_tid;
  uint32_t port;
  uint8_t  mode;
  uint8_t  ip_len;
  uint8_t  ip[16];
} jdls_holder;

/* A queued request: where its entry lives, and which request it is. */
typedef struct jdls_ticket {
  uint32_t group;
  uint32_t slot;
  uint64_t seq;
} jdls_ticket;

/* A lock request. */
typedef struct jdls_request {
  uint64_t inode;
  int64_t dev;
  const uint8_t *key;
  uint32_t key_len;
  int mode;              /* JDLS_MODE_* */
  unsigned flags;        /* JDLS_REQ_* */
} jdls_request;

/* One row of a listing. */
typedef struct jdls_row {
  uint32_t group;
  uint32_t slot;
  uint32_t state;
  uint32_t queued;       /* for HELD rows: waiters queued on the same key */
  jdls_entry entry;
} jdls_row;

/* --- naming and trust ---------------------------------------------------- */
/* The installation directory: $JBCRELEASEDIR, else $HOME/.jdls, else
 * /tmp/jdls-<uid>. Returns the length written, or -1 if it does not fit. */
int jdls_release_dir(char *out, size_t cap);
/* Who the installation trusts: the directory's owner and group (one
 * stat). A directory that does not exist yet: the caller's euid and egid
 * (whoever makes it will own it). 0, or -1 with errno. */
int jdls_installation_trust(const char *release_dir, jdls_trust *out);
/* The shared-memory path for an installation directory:
 * /dev/shm/jdls-<uid>-<16 hex digits of FNV-1a of the absolute path>, where
 * uid is the installation directory's owner (the service's user), so every
 * user of one installation names one table. */
int jdls_table_path(const char *release_dir, char *out, size_t cap);
/* The human detail of this thread's last refused or failed open, create or
 * marker registration: names the path, the owner, the mode and what to do.
 * "" if none. */
const char *jdls_detail(void);
/* Set it (jdls_service.c). */
__attribute__((format(printf, 1, 2))) void jdls_set_detail(const char *fmt, ...);
/* Check an open file at one of the installation's names (kind: "lock
 * table", "OS-route marker"): a regular file, one link, not writable by
 * others, owned by root or trust->uid (or, with `group_ok`, of group
 * trust->gid: a member made it). JDLS_OK, or JDLS_E_UNTRUSTED / JDLS_E_SYS
 * with jdls_detail() set. */
int jdls_check_file(int fd, const char *path, const char *kind, const jdls_trust *trust, int group_ok);
/* The 30-bit lock hash ("value" in -dvL) under a table's key (the
 * table's private hash_seed): the key's group is this % ngroups. */
uint32_t jdls_hash(uint64_t seed, uint64_t inode, int64_t dev, const uint8_t *key, uint32_t key_len);
/* Smallest prime >= n (n >= 2). */
uint32_t jdls_next_prime(uint32_t n);
/* Start time of a process (field 22 of /proc/pid/stat), 0 if unknown. */
uint64_t jdls_pid_start(uint32_t pid);
/* Is this (pid, start) process alive? start 0 = do not compare. */
int jdls_pid_alive(uint32_t pid, uint64_t start, int thorough);

/* --- lifecycle ---------------------------------------------------------- */
/* Create a table. If it exists already, opens it, sets *existed = 1 and
 * leaves its geometry alone (the caller warns). `trust` is the
 * installation's (jdls_installation_trust); NULL: the caller's euid and
 * egid (fixtures and benchmarks on a path of their own). Only root or
 * trust->uid may create; the file is 0660, group trust->gid. */
int jdls_table_create(const char *path, const jdls_trust *trust, uint32_t nlocks, uint32_t per_group,
                      uint32_t flags, jdls_table *out, int *existed);
/* Open an existing table: O_NOFOLLOW, jdls_check_file, then the geometry
 * copied and validated (JDLS_E_BAD_TABLE if anything is off). */
int jdls_table_open(const char *path, const jdls_trust *trust, jdls_table *out);
void jdls_table_close(jdls_table *t);
int jdls_table_unlink(const char *path);

/* --- locking ------------------------------------------------------------ */
/* Take a lock. Returns JDLS_OK, JDLS_CONFLICT (NOWAIT; *holder filled),
 * JDLS_QUEUED (*ticket filled; the caller waits), JDLS_DEADLOCK (waiting
 * would close a cycle and the request asked to be refused then: nothing
 * held, nothing queued), or an error. Deadlock detection runs here, when
 * a request starts to wait (docs/deadlocks.md). `doorbell`
 * is the caller's process slot for async waits, or -1. */
int jdls_lock_begin(jdls_table *t, const jdls_owner *o, const jdls_request *r,
                    int doorbell, jdls_ticket *ticket, jdls_holder *holder);
/* Look at a queued request: JDLS_OK if granted, JDLS_QUEUED if it still
 * waits, JDLS_DEADLOCK if deadlock detection refused it (then end it with
 * jdls_wait_cancel, which frees the entry and says JDLS_DEADLOCK again). With `reap` (JDLS_REAP_QUICK: kill(); JDLS_REAP_THOROUGH: also
 * /proc) it first frees the locks of dead processes holding the key (called
 * every JDLS_LIVENESS_TICK_MS). */
int jdls_wait_poll(jdls_table *t, const jdls_ticket *tk, int reap);
/* Give up a queued request: JDLS_TIMEOUT if it was still waiting (its entry
 * is gone), JDLS_OK if it was granted in the meantime (the caller holds it),
 * JDLS_DEADLOCK if it had been refused (its entry is gone now). */
int jdls_wait_cancel(jdls_table *t, const jdls_ticket *tk);
/* Block until granted, timeout (ms, <0 = forever), all in one call. */
int jdls_lock(jdls_table *t, const jdls_owner *o, const jdls_request *r,
              int timeout_ms, jdls_holder *holder);
/* Release one key. JDLS_OK or JDLS_NOT_HELD. */
int jdls_unlock(jdls_table *t, const jdls_owner *o, uint64_t inode, int64_t dev,
                const uint8_t *key, uint32_t key_len);
/* Release everything of an owner (all files, or one file when
 * `one_file`). Returns the number of entries freed (>= 0). */
int jdls_unlock_all(jdls_table *t, const jdls_owner *o, int one_file,
                    uint64_t inode, int64_t dev);
/* RECORDLOCKED(): JDLS_RL_* (negative = another owner), holder of the first
 * conflicting lock in *holder when negative. */
int jdls_status(jdls_table *t, const jdls_owner *o, uint64_t inode, int64_t dev,
                const uint8_t *key, uint32_t key_len, jdls_holder *holder);

/* F_GETLK: does ANOTHER owner hold the key in a mode that conflicts with
 * `mode`? 1 with the first such holder in *holder, 0 if none, < 0 an error.
 * Unlike jdls_status it looks past the caller's own lock (a reader probing
 * for a write must see the other readers), and a dead holder does not
 * count. */
int jdls_conflict(jdls_table *t, const jdls_owner *o, uint64_t inode, int64_t dev,
                  const uint8_t *key, uint32_t key_len, int mode, jdls_holder *holder);

/* --- fencing tokens and deadlocks --------------------------------------- */
/* The fencing token of this THREAD's last JDLS_OK from jdls_lock_begin,
 * jdls_wait_poll, jdls_wait_cancel or jdls_lock (0: none yet). */
uint64_t jdls_last_token(void);
/* The token of the lock the owner holds on the key, 0 if it holds none. */
uint64_t jdls_token_of(jdls_table *t, const jdls_owner *o, uint64_t inode, int64_t dev,
                       const uint8_t *key, uint32_t key_len);
/* Make every later token >= `floor` (atomic max; never lowers). */
void jdls_token_floor(jdls_table *t, uint64_t floor);
/* The next token the table would give (a snapshot). */
uint64_t jdls_token_peek(jdls_table *t);
/* Set the table's deadlock policy (JDLS_DEADLOCK_*): JDLS_OK or JDLS_E_ARG. */
int jdls_set_deadlock_policy(jdls_table *t, uint32_t policy);
/* Copy report number `n` (1-based; see header.reports_written) into *out:
 * JDLS_OK, or JDLS_NOT_HELD if it was overwritten or is being written. */
int jdls_read_report(jdls_table *t, uint64_t n, jdls_deadlock_report *out);

/* --- upkeep ------------------------------------------------------------- */
/* Free every entry whose process is gone (thorough check: pid and its start
 * time). Returns the number freed. */
int jdls_tidy(jdls_table *t);
/* Copy out rows of groups [first, first+n): rows of non-FREE entries, at most
 * `cap`. Returns the number of rows written; *next_group is where to go on. */
int jdls_list(jdls_table *t, uint32_t first, uint32_t n, jdls_row *rows,
              uint32_t cap, uint32_t *next_group);
/* Usage from the group counters alone (no mutex, no entry read): cheap even
 * for a million-lock table, and a snapshot, not a consistent cut. */
typedef struct jdls_usage {
  uint64_t held;          /* held locks */
  uint64_t waiting;       /* queued requests */
  uint32_t max_in_group;  /* most held locks in one group now */
  uint32_t high_water;    /* most entries ever in use in one group */
} jdls_usage;
void jdls_table_usage(jdls_table *t, jdls_usage *u);
/* Become the table's monitor: atomically replace a monitor pid that is 0 or
 * names a dead process with (pid, pid_start), both published as one. Returns
 * 0, or the live monitor's pid. */
uint32_t jdls_claim_monitor(jdls_table *t, uint32_t pid, uint64_t pid_start);
/* The monitor's (pid, start) as one consistent pair (read monitor_pid and
 * monitor_start through this, not directly: a claim in progress marks the
 * pid word). start 0 while a claim is in progress (do not compare). */
void jdls_monitor_read(jdls_table *t, uint32_t *pid, uint64_t *start);
/* Count one distributed lock retry ("Lock retries:"), atomically: many
 * lock-server processes count into one header. */
void jdls_count_lock_retry(jdls_table *t);
/* Verify every group's invariants; returns the number of problems found. */
int jdls_table_check(jdls_table *t);
/* Claim this process's doorbell slot (idempotent). */
int jdls_slot_claim(jdls_table *t);
void jdls_slot_release(jdls_table *t);
/* For the calling THREAD only: grants it makes to requests whose doorbell is
 * `slot` do not ring that doorbell (-1: ring always, the default). For a
 * caller that collects its own process's grants itself right after a
 * release (the addon: unlock, unlockAll, cancel, then takeGranted), so its
 * waiter thread is not woken for nothing on every hand-off within the
 * process. Thread-local: grants made on any other thread still ring. */
void jdls_quiet_doorbell(int slot);

/* --- service (jdls_service.c) ------------------------------------------- */
/* The installation's "OS route" marker beside the table (<table path>.os):
 * every process that locks records with OS file locks because no table was
 * in service holds an OFD read lock on it for the rest of its life. */
int jdls_marker_path(const char *table_path, char *out, size_t cap);
/* Register this process as an OS-route user: open the marker (created if
 * need be, close-on-exec, moved to a descriptor >= `min_fd`) and take an OFD
 * read lock on it, waiting while a table is being put in service. The
 * descriptor (>= 0) must stay open as long as the process may hold OS record
 * locks; -errno on failure (a marker that fails jdls_check_file: -EPERM,
 * with jdls_detail() set). The marker may also be owned by a member of the
 * installation's group: any process of the installation registers, and the
 * first one creates it. */
int jdls_os_route_register(const char *table_path, const jdls_trust *trust, int min_fd);
/* The table's effective service state: STARTING whose starter is gone
 * counts as RETIRED (nobody will finish putting it in service). */
uint32_t jdls_table_service(const jdls_table *t);
/* Put the table in service: JDLS_OK when it is (or already was);
 * JDLS_CONFLICT while OS-route users live (the marker is read-locked): the
 * caller may retry, or give up with jdls_table_retire. Records the caller
 * as the starter first. */
int jdls_table_enter_service(jdls_table *t);
/* Take the table out of service (before it is removed). */
void jdls_table_retire(jdls_table *t);

/* Release the table mutexes the CALLING thread holds (group mutexes are
 * repaired first, as for a holder that died inside the section): for a
 * thread that left a critical section for good - a longjmp out of a signal
 * handler that interrupted it (the preload shim's undo, shim_recover).
 * Returns how many. O(groups): only after such a jump. */
int jdls_release_abandoned(jdls_table *t);

/* Test hook: take group g's mutex, scribble a half-written entry, and return
 * with the mutex held (a crash test kills the process then). */
int jdls_debug_hold_group(jdls_table *t, uint32_t g);

/* Human text for a jdls_rc. */
const char *jdls_strerror(int rc);
const char *jdls_rc_name(int rc);

#ifdef __cplusplus
}
#endif
#endif /* JDLS_TABLE_H */
