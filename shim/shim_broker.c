/*
 * shim_broker.c - the process's connection to the broker (`jdls --broker`,
 * docs/broker.md): the remote routes of the decision table.
 *
 * The shim speaks the wire protocol (docs/protocol.md, numbers from
 * jdls_proto.h) over a Unix-domain socket: HELLO carries this process's pid,
 * program, JBCPORTNO and its JDLS value; the broker opens its own server
 * connection for it with that JDLS value and forwards. One connection per
 * PROCESS, opened lazily at the first routed lock; a fork child drops the
 * parent's (it is another owner: sharing the socket would make the parent's
 * locks the child's and the child's exit would not release its own).
 *
 * Started on first use: if nothing listens on the socket, the shim starts
 * the broker detached (double fork + setsid, exec of node on the package's
 * dist/src/cli/jdls.js --broker; the package is found from this library's
 * own path with dladdr; node is $JDLS_NODE, else the path in the file
 * `jdls-node` next to the library (written at build time), else `node` on
 * PATH) and retries connecting for a bounded time ($JDLS_BROKER_START_MS,
 * default 10000). Two processes racing to start it both start one; the
 * broker whose bind loses exits quietly.
 *
 * SERVER2 (no TLS): the broker hands over BOTH server connections, the
 * primary's first (docs/broker.md "Pairs"), and the shim keeps the pair's
 * rules of src/client/resilient.ts itself: locks to the primary, then
 * MIRROR to the secondary; unlocks to both at once; failover with or
 * without the witness (PROMOTE). docs/shim.md "Pairs".
 *
 * Threads of one process share the connection (the process is the owner):
 * requests go out as they come and their answers are matched by request id
 * (leader/follower, below), so a thread waiting for a lock never holds up
 * another thread's unlock.
 *
 * Owns: the socket, the frames in C, starting the broker, the unreachable
 * exit. Does not own: what a lock call means (shim_record.c, shim_api.c).
 */
#undef _FILE_OFFSET_BITS
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include "shim.h"
#include "../native/common/jdls_proto.h"

extern char **environ;

static pthread_mutex_t bmu = PTHREAD_MUTEX_INITIALIZER;
/* The connections: cfd[0] is the broker socket, or the (primary) server
 * connection (direct mode); cfd[1] the secondary server connection of a
 * resilient pair (SERVER2: both handed over by the broker, docs/broker.md
 * "Pairs"), else -1. A failed server's connection is -1 for good: the
 * guide's rule, it is never contacted again. Changed only with bmu AND wmu
 * held (senders pick the descriptor under wmu alone, send_slot). */
static int cfd[2] = {-1, -1};
#define bfd (cfd[0])
/* Both WELCOMEs said WITNESS: the primary's failure needs the witness's
 * word (PROMOTE) before the secondary may grant (docs/shim.md "Pairs"). */
static int witness;
/* Two server connections were handed over (SERVER2): the pair's reader
 * (read_pair) serves them, also after one failed. */
static int paired;
/* A PROMOTE is out (its slot id), the primary having failed: requests wait
 * for its verdict. 0: none. */
static uint32_t promote_id;
/* the secondary's "host:port" for the exit message while promoting */
static char promote_to[96];
/* Direct mode: the broker opened this process's server connection and
 * handed it over (SCM_RIGHTS with its WELCOME); requests then go straight to
 * the lock server, two hops fewer each (docs/broker.md). The broker stays in
 * the path only for TLS (a TLS session cannot move to another process).
 * Without the broker's client in between, the shim itself sets the LOCK
 * flags of the JDLS value (WAIT, OSLOCKS) and keeps the TIMEOUT rule; with
 * SERVER2 it also keeps the pair rules of src/client/resilient.ts. */
static int direct;
static int lock_flags;      /* JDLS_FF_NO_INTERIM (WAIT) | JDLS_FF_OSLOCKS */
static int timeout_ms = 30000; /* TIMEOUT=seconds: longest silence with an answer due */
static int wait_opt;        /* WAIT: a waiting lock is not timed */
/* The WELCOME said TOKENS: GRANTED and STATUS_RESULT carry a u64 fencing
 * token (docs/protocol.md). Set once, before any request. */
static int tokens;
/* The WELCOME said INFO (JDLS_FF_INFO): INFO frames are taken (the
 * process's file names, user, program, statistics for the record the server
 * writes: docs/info-records.md) - by the server itself (direct mode: the
 * broker handed its connection over) or by the broker, which passes them on
 * (src/broker/session.ts). Never sent otherwise: an older server closes the
 * connection on an unknown frame type. Per connection (a pair's servers may
 * differ). */
static int info_oks[2];
#define info_ok (info_oks[0])
/* Files were declared since the last INFO: one is sent before the next
 * request (coalesced: many declarations, one frame). */
static int info_due;
static uint32_t next_id = 1; /* one sequence for both connections: an id names one request */
/* The frames kept in the slots (for resending to a promoted secondary). */
typedef struct fbuf {
  uint8_t b[4096];
  size_t n;
} fbuf;
/* The outstanding requests (see "leader/follower" below). */
#define MAX_SLOTS 64
typedef struct slot {
  uint32_t id;
  int used, done;
  int untimed; /* a waiting lock under WAIT (or a waiting range lock): TIMEOUT does not apply */
  int conn;    /* 0: sent to the primary (cfd[0]), 1: to the secondary */
  int both;    /* one half of a request sent to both at once: the primary's failure just drops it */
  int sent;    /* on its connection (send_slot); the promotion sends it again, or for the first time */
  int internal;/* the PROMOTE: no caller waits for it, the reader closes it */
  shim_answer a;
  int64_t waited;  /* a WAITING came (the "block" moment): since when (monotonic ms) */
  int unblocked;   /* the final answer of a request that waited: the "unblock" moment */
  fbuf f;          /* the frame as sent */
} slot;
static slot slots[MAX_SLOTS];
static int reading;
static pthread_cond_t bcv = PTHREAD_COND_INITIALIZER;
static pthread_mutex_t wmu = PTHREAD_MUTEX_INITIALIZER;

/* The trace's name for the other end: the server's address in direct mode,
 * else "broker" (docs/shim.md, "Trace and errors"). Set once connected.
 * labels[1]: the secondary's. */
static char labels[2][96] = {"broker", ""};
#define server_label (labels[0])

void shim_server_unreachable(const char *why) {
  /* Before the guide's lines: jbase_error_trace (always) and the trace
   * (VERBOSE/TRACE), as the library logs a connection failure. */
  {
    char fields[160];
    size_t fl = 0;
    memcpy(fields, "\"server\":", 9);
    fl = shim_log_jstr(fields, sizeof fields, 9, server_label, strlen(server_label));
    fields[fl] = 0;
    shim_log_line(SHIM_LOG_ERROR, fields, why && *why ? why : "the lock service cannot be reached");
  }
  char msg[1400];
  int n = snprintf(msg, sizeof msg,
                   "Client: unable to connect to distributed lock service, locks not enabled\n"
                   "jdls shim: %s\n", why && *why ? why : "the lock service cannot be reached");
  if (n > (int)sizeof msg - 1) n = (int)sizeof msg - 1;
  ssize_t r = write(2, msg, (size_t)n);
  (void)r;
  _exit(1);
}

int shim_broker_fd(void) { return __atomic_load_n(&cfd[0], __ATOMIC_RELAXED); }
int shim_broker_fd2(void) { return __atomic_load_n(&cfd[1], __ATOMIC_RELAXED); }

int shim_broker_owns_fd(int fd) {
  return fd >= 0 && (fd == __atomic_load_n(&cfd[0], __ATOMIC_RELAXED) || fd == __atomic_load_n(&cfd[1], __ATOMIC_RELAXED));
}

void shim_broker_forget(void) {
  /* Another thread of the parent may have held these at the fork. */
  pthread_mutex_init(&bmu, NULL);
  pthread_mutex_init(&wmu, NULL);
  pthread_cond_init(&bcv, NULL);
  reading = 0;
  memset(slots, 0, sizeof slots);
  for (int i = 0; i < 2; i++) {
    if (cfd[i] >= 0) {
      /* The parent's socket: closing the child's copy leaves the parent's
       * connection (and locks) alone - both of a pair. */
      shim_busy++;
      real_close(cfd[i]);
      shim_busy--;
    }
    cfd[i] = -1;
  }
  direct = 0;
  paired = 0;
  witness = 0;
  promote_id = 0;
  tokens = 0;
  info_oks[0] = info_oks[1] = 0;
  info_due = 0;
  strcpy(labels[0], "broker"); /* the child connects anew, maybe not directly */
  labels[1][0] = 0;
}

/* --- frames ----------------------------------------------------------------- */

static void put8(fbuf *f, uint8_t v) { if (f->n < sizeof f->b) f->b[f->n++] = v; }
static void put16(fbuf *f, uint16_t v) { put8(f, (uint8_t)(v >> 8)); put8(f, (uint8_t)v); }
static void put32(fbuf *f, uint32_t v) { put16(f, (uint16_t)(v >> 16)); put16(f, (uint16_t)v); }
static void put64(fbuf *f, uint64_t v) { put32(f, (uint32_t)(v >> 32)); put32(f, (uint32_t)v); }
static void putbytes(fbuf *f, const void *p, size_t n) {
  if (n > sizeof f->b - f->n) n = sizeof f->b - f->n;
  memcpy(f->b + f->n, p, n);
  f->n += n;
}
/* str16/key: u16 length + bytes (cut at `max`). */
static void putstr(fbuf *f, const void *p, size_t n, size_t max) {
  if (n > max) n = max;
  put16(f, (uint16_t)n);
  putbytes(f, p, n);
}
static void begin(fbuf *f, int type, int flags, uint32_t id) {
  f->n = 0;
  put32(f, 0);
  put8(f, JDLS_PROTO_VERSION);
  put8(f, (uint8_t)type);
  put16(f, (uint16_t)flags);
  put32(f, id);
}
static void finish(fbuf *f) {
  uint32_t len = (uint32_t)(f->n - 4);
  f->b[0] = (uint8_t)(len >> 24);
  f->b[1] = (uint8_t)(len >> 16);
  f->b[2] = (uint8_t)(len >> 8);
  f->b[3] = (uint8_t)len;
}

static uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static uint32_t get32(const uint8_t *p) { return (uint32_t)get16(p) << 16 | get16(p + 2); }
static uint64_t get64(const uint8_t *p) { return (uint64_t)get32(p) << 32 | get32(p + 4); }

static void lost(const char *what) {
  char why[256];
  snprintf(why, sizeof why, "the connection to the lock broker was lost (%s): this process's distributed locks are gone", what);
  shim_server_unreachable(why);
}

/* Whole bytes on fd; 0, or -1 with errno (MSG_NOSIGNAL: a peer that died
 * must not kill us with SIGPIPE; we exit with the guide's message, or fall
 * over to the other server of a pair, instead). */
static int send_fd(int fd, const uint8_t *p, size_t n) {
  size_t off = 0;
  while (off < n) {
    ssize_t w = send(fd, p + off, n - off, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      if (w == 0) errno = EPIPE;
      return -1;
    }
    off += (size_t)w;
  }
  return 0;
}

static void send_frame(fbuf *f) {
  finish(f);
  if (send_fd(bfd, f->b, f->n) != 0) lost(strerror(errno));
}

/* An INFO frame (request id 0, never answered): u32 length + the ClientInfo
 * JSON of shim_info_client_json. With signals blocked and the connection
 * made; takes wmu (whole frames). The JSON is kept under the frame limit by
 * the builder (the newest files first). To every server of a pair that
 * takes INFO (each keeps its own record of the process); a send that fails
 * there is left to the reader, which sees the connection's end. */
#define INFO_JSON_MAX (JDLS_PROTO_MAX_FRAME - 64)
static void send_info(const char *moment) {
  if (!(info_oks[0] && cfd[0] >= 0) && !(info_oks[1] && cfd[1] >= 0)) return;
  char *j = shim_info_client_json(moment, INFO_JSON_MAX);
  if (!j) return;
  size_t n = strlen(j);
  uint8_t *b = malloc(JDLS_PROTO_HEADER + 4 + n);
  if (!b) {
    free(j);
    return;
  }
  uint32_t len = (uint32_t)(8 + 4 + n);
  uint8_t hdr[16] = {(uint8_t)(len >> 24), (uint8_t)(len >> 16), (uint8_t)(len >> 8), (uint8_t)len,
                     JDLS_PROTO_VERSION, JDLS_FT_INFO, 0, 0, 0, 0, 0, 0,
                     (uint8_t)(n >> 24), (uint8_t)(n >> 16), (uint8_t)(n >> 8), (uint8_t)n};
  memcpy(b, hdr, sizeof hdr);
  memcpy(b + sizeof hdr, j, n);
  free(j);
  size_t total = sizeof hdr + n;
  pthread_mutex_lock(&wmu);
  int pair = cfd[1] >= 0;
  for (int c = 0; c < 2; c++) {
    if (cfd[c] < 0 || !info_oks[c]) continue;
    if (send_fd(cfd[c], b, total) != 0 && !pair) {
      pthread_mutex_unlock(&wmu);
      free(b);
      lost(strerror(errno));
    }
  }
  pthread_mutex_unlock(&wmu);
  free(b);
}

/* Read exactly n bytes. With `interruptible` and nothing read yet, a signal
 * handler that ran (EINTR) returns -EINTR; otherwise 0. */
static int read_all(uint8_t *p, size_t n, int interruptible, int wait_ms) {
  size_t got = 0;
  while (got < n) {
    /* What has arrived is taken without a poll first: a frame almost always
     * arrives whole, so the header and the body cost one system call each
     * (strace: 4 polls a frame before, on the single-server pair too). */
    ssize_t r = recv(bfd, p + got, n - got, MSG_DONTWAIT);
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      if (wait_ms < 0) {
        r = recv(bfd, p + got, n - got, 0);
      } else {
        /* TIMEOUT (direct mode): silence from the server with an answer due
         * means it is dead or hung; the guide: declared dead. */
        struct pollfd pf = {bfd, POLLIN, 0};
        int pr = poll(&pf, 1, wait_ms);
        if (pr < 0 && errno == EINTR) {
          if (interruptible && got == 0) return -EINTR;
          continue;
        }
        if (pr == 0) {
          char why[200];
          snprintf(why, sizeof why, "lock server %s silent for more than %d ms with an answer due; declared dead (JDLS TIMEOUT)", server_label, wait_ms);
          shim_server_unreachable(why);
        }
        continue;
      }
    }
    if (r < 0 && errno == EINTR) {
      if (interruptible && got == 0) return -EINTR;
      continue;
    }
    if (r == 0) lost(direct ? "the lock server closed it" : "the broker closed it");
    if (r < 0) lost(strerror(errno));
    got += (size_t)r;
  }
  return 0;
}

/* The program's signal mask while this thread's request runs with signals
 * blocked (request(): a jump out of a half-sent or half-read frame put the
 * stream out of step - "a frame of a bad length" - and one out of a send
 * left `wmu` held). NULL: no wait of this thread lets signals in. */
static SHIM_TLS const sigset_t *wait_mask;

/* Wait until the next frame begins (its first byte can be read), with the
 * program's signal mask, and block signals again. Nothing is half-done
 * here: a handler that jumps leaves this thread the reader, with its
 * request noted - shim_broker_recover undoes both. -EINTR when
 * `interruptible` and a handler ran, as read_all answered before: the peek
 * (recv) is restarted by the kernel after an SA_RESTART handler, so only a
 * handler without it ends the wait; poll (TIMEOUT) never is. */
static int wait_frame(int interruptible, int wait_ms) {
  for (;;) {
    sigset_t held;
    if (wait_mask) pthread_sigmask(SIG_SETMASK, wait_mask, &held);
    ssize_t r;
    if (wait_ms >= 0) {
      /* TIMEOUT (direct mode): silence from the server with an answer due
       * means it is dead or hung; the guide: declared dead. */
      struct pollfd pf = {bfd, POLLIN, 0};
      r = poll(&pf, 1, wait_ms);
    } else {
      uint8_t c;
      r = recv(bfd, &c, 1, MSG_PEEK);
    }
    int e = errno;
    if (wait_mask) pthread_sigmask(SIG_SETMASK, &held, NULL);
    if (r < 0 && e == EINTR) {
      if (interruptible) return -EINTR;
      continue;
    }
    if (r == 0 && wait_ms >= 0) {
      char why[200];
      snprintf(why, sizeof why, "lock server %s silent for more than %d ms with an answer due; declared dead (JDLS TIMEOUT)", server_label, wait_ms);
      shim_server_unreachable(why);
    }
    if (r == 0) lost(direct ? "the lock server closed it" : "the broker closed it");
    if (r < 0) lost(strerror(e));
    return 0;
  }
}

/* One frame: its type, request id, and body (in buf, length *blen). */
static int read_frame(uint8_t *buf, size_t cap, int *type, uint32_t *id, size_t *blen,
                      int interruptible, int wait_ms) {
  uint8_t h[JDLS_PROTO_HEADER];
  int rc = wait_frame(interruptible, wait_ms);
  if (rc) return rc;
  read_all(h, 4, 0, wait_ms);
  read_all(h + 4, JDLS_PROTO_HEADER - 4, 0, wait_ms);
  uint32_t len = get32(h);
  if (len < JDLS_PROTO_MIN_LENGTH || len - 8 > cap) lost("a frame of a bad length");
  *type = h[5];
  *id = get32(h + 8);
  *blen = len - 8;
  read_all(buf, *blen, 0, wait_ms);
  return 0;
}

/* The holder fields of LOCKED/WAITING/STATUS_RESULT: mode u8, port, pid,
 * owner_pid, owner_tid, addr. */
static void holder(const uint8_t *p, size_t n, shim_answer *a) {
  if (n < 17) return;
  a->holder_mode = p[0];
  a->holder_port = get32(p + 1);
  a->holder_pid = get32(p + 9);
}

static void parse_final(int type, const uint8_t *b, size_t n, shim_answer *a) {
  memset(a, 0, sizeof *a);
  a->type = type;
  switch (type) {
    case JDLS_FT_LOCKED: holder(b, n, a); break;
    case JDLS_FT_RELEASED: if (n >= 4) a->count = get32(b); break;
    /* GRANTED: empty, or (tokens negotiated) the u64 fencing token. Judged
     * by the length, not by the WELCOME alone: the broker forwards a
     * SERVER2 client's answers (docs/broker.md), and an empty body from any
     * server is "no token" (0), never a fault. */
    case JDLS_FT_GRANTED: if (n >= 8) a->token = get64(b); break;
    case JDLS_FT_STATUS_RESULT:
      if (n >= 1) a->code = (int8_t)b[0];
      if (a->code < 0) holder(b + 1, n - 1, a);
      /* The token trails the body (after the holder, whose address has two
       * lengths): only the WELCOME says whether those 8 bytes are one. */
      if (tokens && n >= 9) a->token = get64(b + n - 8);
      break;
    case JDLS_FT_ERROR: if (n >= 2) a->code = get16(b); break;
    case JDLS_FT_RANGE_RESULT:
      /* found u8, then holder (17 or 29 bytes: the address), start, length */
      if (n >= 1 && b[0] == 1 && n >= 1 + 17 + 16) {
        holder(b + 1, n - 1, a);
        a->code = 1;
        const uint8_t *r = b + n - 16;
        a->range_start = (int64_t)((uint64_t)get32(r) << 32 | get32(r + 4));
        a->range_len = (int64_t)((uint64_t)get32(r + 8) << 32 | get32(r + 12));
      }
      break;
  }
}

int shim_broker_errno(const shim_answer *a) {
  switch (a->code) {
    case JDLS_PE_KEY_TOO_LONG:
    case JDLS_PE_BAD_ARGUMENT: return EINVAL;
    case JDLS_PE_CANCELLED: return EINTR;
    case JDLS_PE_SYSTEM: return EIO;
    case JDLS_PE_NOT_SUPPORTED: return ENOTSUP;
    case JDLS_PE_DEADLOCK: return EDEADLK; /* LOCK with BREAK_DEADLOCK: as the kernel's F_SETLKW */
    default: return ENOLCK; /* TABLE_FULL, LIMIT, SHUTDOWN: fcntl's "no locks available" */
  }
}

/* --- starting the broker --------------------------------------------------- */
/* Make every missing directory of `d` (and `d` itself) with `mode`. */
static void mkdirs(const char *dpath, mode_t mode) {
  char d[PATH_MAX];
  snprintf(d, sizeof d, "%s", dpath);
  for (char *p = d + 1; *p; p++) {
    if (*p != '/') continue;
    *p = 0;
    mkdir(d, mode);
    *p = '/';
  }
  mkdir(d, mode);
}

/*
 * Where the broker listens: one socket per user and installation, so that no
 * other user can listen where this program looks (a broker that answers
 * GRANTED to everything, or that makes every program exit). The rule is
 * src/broker/paths.ts's - keep them one (docs/broker.md, a test compares):
 *   1. $JDLS_BROKER when set (made absolute against the working directory);
 *   2. $XDG_RUNTIME_DIR/jdls/<table name>.sock when XDG_RUNTIME_DIR is an
 *      absolute path to a directory of our euid with no group/other write;
 *   3. else $JBCRELEASEDIR/tmp/broker-<euid>/jdls-broker.sock.
 * In 2 and 3 the name carries the network namespace (".net<inode>" before
 * ".sock", netns_tag): a Unix socket's path is seen from every network
 * namespace that shares the file system (containers, or hosts simulated
 * with `ip netns` over one JBCRELEASEDIR), but the broker's TCP connection
 * is made from the namespace it started in. One broker for two namespaces
 * would lock a program of one at the address as the other sees it - no
 * route there, or worse another lock server at the same address: two lock
 * domains, one lock granted twice.
 * For 2 and 3 the directory is made 0700 if missing ($JBCRELEASEDIR/tmp
 * 01777: shared by the installation's users, sticky), then must be a
 * directory - lstat: not a symlink - of our euid with no group or other
 * bits. A directory another user made first is refused, not used.
 * 0, or -1 with `why` filled.
 */
/* ".net<inode of /proc/self/ns/net>", or "" where /proc cannot say (then one broker per path, as before). */
static void netns_tag(char *out, size_t n) {
  struct stat st;
  if (stat("/proc/self/ns/net", &st) == 0) snprintf(out, n, ".net%llu", (unsigned long long)st.st_ino);
  else out[0] = '\0';
}

static int sock_path(char *out, size_t n, char *why, size_t wn) {
  const char *e = getenv("JDLS_BROKER");
  if (e && *e) {
    /* Absolute: the broker runs in / (it must not pin the program's cwd). */
    char cwd[PATH_MAX - 128];
    if (e[0] != '/' && getcwd(cwd, sizeof cwd)) snprintf(out, n, "%s/%s", cwd, e);
    else snprintf(out, n, "%s", e);
    return 0;
  }
  uid_t me = geteuid();
  char rd[PATH_MAX - 256], dir[PATH_MAX - 64], tag[32];
  netns_tag(tag, sizeof tag);
  if (jdls_release_dir(rd, sizeof rd) < 0) {
    snprintf(why, wn, "the installation directory's path is too long");
    return -1;
  }
  const char *x = getenv("XDG_RUNTIME_DIR");
  struct stat st;
  if (x && x[0] == '/' && lstat(x, &st) == 0 && S_ISDIR(st.st_mode) && st.st_uid == me && !(st.st_mode & 022)) {
    char tp[PATH_MAX];
    if (jdls_table_path(rd, tp, sizeof tp) < 0 || snprintf(dir, sizeof dir, "%s/jdls", x) >= (int)sizeof dir) {
      snprintf(why, wn, "the broker socket's path is too long");
      return -1;
    }
    const char *base = strrchr(tp, '/');
    base = base ? base + 1 : tp;
    /* The length is judged by snprintf's own count: a cut path would name another socket. */
    if (snprintf(out, n, "%s/%s%s.sock", dir, base, tag) >= (int)n) {
      snprintf(why, wn, "the broker socket's path is too long");
      return -1;
    }
  } else {
    char tmp[PATH_MAX - 128];
    snprintf(tmp, sizeof tmp, "%s/tmp", rd);
    if (access(tmp, F_OK) != 0) {
      mkdirs(rd, 0750); /* the installation directory, if missing: not for others (docs/security.md) */
      if (mkdir(tmp, 01777) == 0) chmod(tmp, 01777);
    }
    snprintf(dir, sizeof dir, "%s/broker-%u", tmp, (unsigned)me);
    if (snprintf(out, n, "%s/jdls-broker%s.sock", dir, tag) >= (int)n) {
      snprintf(why, wn, "the broker socket's path is too long");
      return -1;
    }
  }
  if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
    snprintf(why, wn, "cannot make the broker directory %s: %s", dir, strerror(errno));
    return -1;
  }
  if (lstat(dir, &st) != 0) {
    snprintf(why, wn, "cannot examine the broker directory %s: %s", dir, strerror(errno));
    return -1;
  }
  if (!S_ISDIR(st.st_mode) || st.st_uid != me || (st.st_mode & 077)) {
    snprintf(why, wn,
             "the broker directory %s is %s of uid %u, mode 0%o: it must be a directory of uid %u with mode 0700 "
             "(another user may have made it to listen where this program looks for its broker): refused",
             dir, S_ISLNK(st.st_mode) ? "a symbolic link" : S_ISDIR(st.st_mode) ? "a directory" : "not a directory",
             (unsigned)st.st_uid, (unsigned)(st.st_mode & 07777), (unsigned)me);
    return -1;
  }
  return 0;
}

/* Who may talk to whom (the other half is the broker's, src/broker/broker.ts):
 * the shim talks only to a broker whose uid - SO_PEERCRED, the kernel's word
 * for who called listen(), not anything the broker says - is our euid or
 * root. JDLS_BROKER gets the same check: it names a path, not a trust. */
static int peer_ok(int fd, const char *path, char *why, size_t wn) {
  struct ucred c;
  socklen_t l = sizeof c;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &c, &l) != 0) {
    snprintf(why, wn, "cannot check who runs the lock broker at %s: %s", path, strerror(errno));
    return 0;
  }
  if (c.uid == geteuid() || c.uid == 0) return 1;
  snprintf(why, wn,
           "the lock broker at %s runs as uid %u, not as uid %u or root: refused "
           "(another user may be listening where this program looks for its broker)",
           path, (unsigned)c.uid, (unsigned)geteuid());
  return 0;
}

static int try_connect(const char *path) {
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  struct sockaddr_un sa;
  memset(&sa, 0, sizeof sa);
  sa.sun_family = AF_UNIX;
  snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
  int rc;
  do rc = connect(fd, (struct sockaddr *)&sa, sizeof sa);
  while (rc != 0 && errno == EINTR);
  if (rc != 0) {
    int e = errno;
    real_close(fd);
    errno = e;
    return -1;
  }
  return fd;
}

/* node: $JDLS_NODE, else the build's `jdls-node` file next to the library. */
static void node_path(const char *libdir, char *out, size_t n) {
  const char *e = getenv("JDLS_NODE");
  if (e && *e) {
    snprintf(out, n, "%s", e);
    return;
  }
  char f[PATH_MAX + 16];
  snprintf(f, sizeof f, "%s/jdls-node", libdir);
  snprintf(out, n, "node");
  int fd = open(f, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;
  ssize_t r = read(fd, out, n - 1);
  real_close(fd);
  if (r <= 0) {
    snprintf(out, n, "node");
    return;
  }
  out[r] = 0;
  out[strcspn(out, "\r\n")] = 0;
}

static void start_broker(const char *sock) {
  Dl_info info;
  char lib[PATH_MAX], libdir[PATH_MAX], script[PATH_MAX + 64], node[PATH_MAX], log[PATH_MAX + 8];
  if (!dladdr((void *)start_broker, &info) || !info.dli_fname || !realpath(info.dli_fname, lib)) return;
  snprintf(libdir, sizeof libdir, "%s", lib);
  char *s = strrchr(libdir, '/');
  if (!s) return;
  *s = 0;
  /* <package>/build/Release/libjdlsshim.so -> <package>/dist/src/cli/jdls.js */
  snprintf(script, sizeof script, "%s/../../dist/src/cli/jdls.js", libdir);
  node_path(libdir, node, sizeof node);
  {
    /* an explicit JDLS_BROKER's directory; the default ones exist already */
    char d[PATH_MAX];
    snprintf(d, sizeof d, "%s", sock);
    char *sl = strrchr(d, '/');
    if (sl && sl != d) {
      *sl = 0;
      mkdirs(d, 0750);
    }
  }
  snprintf(log, sizeof log, "%s.log", sock);

  /* Everything the child needs is built before fork(): between fork and
   * exec only async-signal-safe calls (another thread may hold malloc's
   * lock at the fork). The broker must not run preloaded (its own locks
   * would route to itself), and it must listen where we look. */
  size_t ne = 0;
  while (environ[ne]) ne++;
  char **envp = malloc((ne + 2) * sizeof *envp);
  char *brk = malloc(strlen(sock) + 16);
  if (!envp || !brk) {
    free(envp);
    free(brk);
    return;
  }
  sprintf(brk, "JDLS_BROKER=%s", sock);
  size_t k = 0;
  for (size_t i = 0; i < ne; i++)
    if (strncmp(environ[i], "LD_PRELOAD=", 11) != 0 && strncmp(environ[i], "JDLS_BROKER=", 12) != 0)
      envp[k++] = environ[i];
  envp[k++] = brk;
  envp[k] = NULL;
  char *argv[] = {node, script, "--broker", NULL};

  pid_t pid = fork();
  if (pid == 0) {
    /* The program's mask, not the one request() blocks everything with
     * (the broker must stay killable). */
    if (wait_mask) sigprocmask(SIG_SETMASK, wait_mask, NULL);
    setsid();
    if (fork() != 0) _exit(0); /* the broker is re-parented to init: no zombie of ours */
    if (chdir("/") != 0) _exit(126);
    int nul = open("/dev/null", O_RDWR);
    /* The log lies in the installation directory (<socket>.log), where a
     * link planted at the name would make this program - root's, maybe -
     * append the broker's output to a file of the planter's choosing:
     * O_NOFOLLOW; then only a regular file of ours (or root's) with one
     * name (a hard link to another's file is no log either), else none.
     * O_NONBLOCK: a planted FIFO must not hang us (a regular file ignores
     * it). 0640: the broker logs clients' keys. open/fstat are
     * async-signal-safe; close by syscall (this child must not run the
     * interposed close). */
    int lf = open(log, O_WRONLY | O_CREAT | O_APPEND | O_NOFOLLOW | O_NONBLOCK, 0640);
    if (lf >= 0) {
      struct stat st;
      if (fstat(lf, &st) != 0 || !S_ISREG(st.st_mode) || st.st_nlink != 1 ||
          (st.st_uid != geteuid() && st.st_uid != 0)) {
        syscall(SYS_close, lf);
        lf = -1;
      }
    }
    if (nul >= 0) dup2(nul, 0);
    if (lf < 0) lf = nul;
    if (lf >= 0) {
      dup2(lf, 1);
      dup2(lf, 2);
    }
    syscall(SYS_close_range, 3, ~0U, 0); /* best effort: most are CLOEXEC anyway */
    if (strchr(node, '/')) execve(node, argv, envp);
    else execvpe(node, argv, envp);
    _exit(127);
  }
  if (pid > 0)
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {
    }
  free(envp);
  free(brk);
}

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The broker's answer to HELLO, read with recvmsg: WELCOME (with the server
 * connection's descriptor attached in direct mode: SCM_RIGHTS rides on the
 * frame's first byte) or ERROR. Sets fds[0] to the descriptor or -1.
 * A pair (SERVER2): the message carries TWO descriptors, the primary's then
 * the secondary's, and the secondary's WELCOME follows the first frame on
 * the socket (read_second). The count of descriptors is the signal: no
 * extra field, and a broker that hands one over is read as before. */
static void read_first(uint8_t *body, size_t cap, int *type, int *flags, size_t *blen, int fds[2]) {
  uint8_t buf[4096 + JDLS_PROTO_HEADER];
  size_t got = 0, need = JDLS_PROTO_HEADER;
  fds[0] = fds[1] = -1;
  while (got < need) {
    union {
      char b[CMSG_SPACE(2 * sizeof(int))];
      struct cmsghdr align;
    } ctl;
    struct iovec iov = {buf + got, need - got};
    struct msghdr m;
    memset(&m, 0, sizeof m);
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    m.msg_control = ctl.b;
    m.msg_controllen = sizeof ctl.b;
    ssize_t r = recvmsg(bfd, &m, MSG_CMSG_CLOEXEC);
    if (r < 0 && errno == EINTR) continue;
    if (r == 0) lost("the broker closed it");
    if (r < 0) lost(strerror(errno));
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c))
      if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
        if (c->cmsg_len == CMSG_LEN(sizeof(int))) memcpy(fds, CMSG_DATA(c), sizeof(int));
        else if (c->cmsg_len == CMSG_LEN(2 * sizeof(int))) memcpy(fds, CMSG_DATA(c), 2 * sizeof(int));
      }
    got += (size_t)r;
    if (got >= JDLS_PROTO_HEADER && need == JDLS_PROTO_HEADER) {
      uint32_t len = get32(buf);
      if (len < JDLS_PROTO_MIN_LENGTH || len - 8 > cap) lost("a frame of a bad length");
      need = 4 + len;
    }
  }
  *type = buf[5];
  *flags = get16(buf + 6);
  *blen = need - JDLS_PROTO_HEADER;
  memcpy(body, buf + JDLS_PROTO_HEADER, *blen);
}

/* The secondary's WELCOME (a plain frame after the first, on the broker socket). */
static void read_second(uint8_t *body, size_t cap, int *type, int *flags, size_t *blen) {
  uint8_t h[JDLS_PROTO_HEADER];
  read_all(h, sizeof h, 0, -1);
  uint32_t len = get32(h);
  if (len < JDLS_PROTO_MIN_LENGTH || len - 8 > cap) lost("a frame of a bad length");
  *type = h[5];
  *flags = get16(h + 6);
  *blen = len - 8;
  read_all(body, *blen, 0, -1);
}

/* labels[c] from the server connection's peer address ("ip:port", IPv6 in brackets). */
static void peer_label(int fd, int c) {
  char *out = labels[c];
  struct sockaddr_storage ss;
  socklen_t sl = sizeof ss;
  char ip[INET6_ADDRSTRLEN] = "";
  if (getpeername(fd, (struct sockaddr *)&ss, &sl) != 0) return;
  if (ss.ss_family == AF_INET) {
    struct sockaddr_in *a = (struct sockaddr_in *)&ss;
    inet_ntop(AF_INET, &a->sin_addr, ip, sizeof ip);
    snprintf(out, sizeof labels[c], "%s:%u", ip, (unsigned)ntohs(a->sin_port));
  } else if (ss.ss_family == AF_INET6) {
    struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
    inet_ntop(AF_INET6, &a->sin6_addr, ip, sizeof ip);
    snprintf(out, sizeof labels[c], "[%s]:%u", ip, (unsigned)ntohs(a->sin6_port));
  }
}

/* The trace's "connected" line: WELCOME's version u8, mechanism u8, server
 * pid, session, interim ms, keep-alive ms. */
static void log_connected(const uint8_t *w, size_t n, int c) {
  if (!shim_log_tracing()) return;
  char fields[400];
  memcpy(fields, "\"server\":", 9);
  size_t fl = shim_log_jstr(fields, sizeof fields, 9, labels[c], strlen(labels[c]));
  if (n >= 18)
    snprintf(fields + fl, sizeof fields - fl,
             ",\"direct\":%s,\"pair\":\"%s\",\"welcome\":{\"version\":%u,\"mechanism\":\"%s\",\"serverPid\":%u,\"session\":%u,\"interimMs\":%u,\"keepaliveMs\":%u,\"tokens\":%s}",
             direct ? "true" : "false", paired ? (c ? "secondary" : "primary") : "none", w[0], w[1] == 2 ? "os" : "shm", (unsigned)get32(w + 2), (unsigned)get32(w + 6),
             (unsigned)get32(w + 10), (unsigned)get32(w + 14), tokens ? "true" : "false");
  else
    fields[fl] = 0;
  shim_log_line(SHIM_LOG_DEBUG, fields, "connected");
}

/* Connect (starting the broker if need be) and say HELLO; with bmu held. */
static void ensure_connected(void) {
  if (bfd >= 0) return;
  shim_log_init();
  if (shim_log_tracing()) {
    const char *jv = shim_jdls_value();
    char fields[1200];
    memcpy(fields, "\"jdls\":", 7);
    size_t fl = shim_log_jstr(fields, sizeof fields, 7, jv ? jv : "", jv ? strlen(jv) : 0);
    fields[fl] = 0;
    shim_log_line(SHIM_LOG_DEBUG, fields, "connecting");
  }
  char path[PATH_MAX], bad[PATH_MAX + 256];
  if (sock_path(path, sizeof path, bad, sizeof bad) < 0) shim_server_unreachable(bad);
  int fd = try_connect(path);
  if (fd < 0) {
    start_broker(path);
    const char *e = getenv("JDLS_BROKER_START_MS");
    int64_t limit = e && *e ? strtol(e, NULL, 10) : 10000;
    int64_t until = now_ms() + limit;
    struct timespec pause = {0, 20 * 1000000L};
    while ((fd = try_connect(path)) < 0 && now_ms() < until) nanosleep(&pause, NULL);
  }
  if (fd < 0) {
    char why[PATH_MAX + 128];
    snprintf(why, sizeof why, "cannot reach or start the lock broker at %s: %s", path, strerror(errno));
    shim_server_unreachable(why);
  }
  if (!peer_ok(fd, path, bad, sizeof bad)) {
    real_close(fd);
    shim_server_unreachable(bad);
  }
  bfd = fd = shim_high_fd(fd);

  const char *j = shim_jdls_value();
  const char *p = getenv("JBCPORTNO");
  char host[256] = "";
  gethostname(host, sizeof host - 1);
  const char *prog = program_invocation_short_name;
  fbuf f;
  /* TOKENS: fencing tokens for the C API (jdls_record_token). Trap: the
   * broker's reader is strict - one of a build before the flag refuses this
   * HELLO (unknown flags) and the process exits unreachable. The broker is
   * started from this library's own package (start_broker), so the two
   * match unless an older broker still listens on the socket; the broker
   * then asks the server for tokens on our behalf (docs/broker.md). */
  /* INFO: this process sends INFO frames when the WELCOME says the server
   * (or the broker, which passes them on) takes them. Same trap as TOKENS:
   * the broker must be of this build (the broker offers it to the server
   * and connects again without it to an older server). JDLS_INFO=0: not
   * offered. */
  /* PAIR (SERVER2 only): this shim takes both server connections of a
   * resilient pair and keeps the pair rules itself (docs/broker.md "Pairs");
   * the broker passes the flag on to the servers (their WELCOMEs then say
   * WITNESS when a witness decides who leads). */
  char s2[8]; /* SERVER2=host,port: a value (the bare word is no server) */
  int pair_hello = shim_jdls_option("SERVER2", s2, sizeof s2);
  begin(&f, JDLS_FT_HELLO, JDLS_FF_TOKENS | (shim_info_disabled() ? 0 : JDLS_FF_INFO) | (pair_hello ? JDLS_FF_PAIR : 0), 0);
  putbytes(&f, "JDLS", 4);
  put8(&f, JDLS_PROTO_MIN_VERSION);
  put8(&f, JDLS_PROTO_VERSION);
  put32(&f, p ? (uint32_t)strtoul(p, NULL, 10) : 0);
  put32(&f, shim_pid());
  put32(&f, 0); /* keep-alive: a Unix socket cannot go silent, it closes */
  putstr(&f, host, strlen(host), JDLS_PROTO_MAX_STR);
  putstr(&f, prog ? prog : "", prog ? strlen(prog) : 0, JDLS_PROTO_MAX_STR);
  putstr(&f, j ? j : "", j ? strlen(j) : 0, JDLS_PROTO_MAX_STR);
  send_frame(&f);

  uint8_t body[4096];
  int type = 0, wflags = 0;
  size_t n = 0;
  int sfds[2];
  read_first(body, sizeof body, &type, &wflags, &n, sfds);
  uint8_t body2[4096];
  int type2 = 0, wflags2 = 0;
  size_t n2 = 0;
  if (type == JDLS_FT_WELCOME && sfds[1] >= 0) {
    read_second(body2, sizeof body2, &type2, &wflags2, &n2);
    if (type2 != JDLS_FT_WELCOME) lost("a pair's second WELCOME missing");
  }
  if (type == JDLS_FT_WELCOME) {
    tokens = (wflags & JDLS_FF_TOKENS) != 0;
    /* The server's WELCOME (direct mode) or the broker's, which says INFO
     * only when it passes INFO on to a server that takes it. */
    info_ok = (wflags & JDLS_FF_INFO) != 0 && !shim_info_disabled();
    if (sfds[0] >= 0) {
      /* Direct mode: the server connection(s) are ours now; the broker
       * socket has done its job. */
      shim_busy++;
      real_close(bfd);
      bfd = -1;
      for (int c = 0; c < 2; c++) {
        int sfd = sfds[c];
        if (sfd < 0) continue;
        /* Trap: the socket comes from Node, which made it non-blocking, and
         * O_NONBLOCK belongs to the open file description, which is shared:
         * our blocking recv() would fail with EAGAIN. */
        int fl = real_fcntl(sfd, F_GETFL, 0);
        if (fl >= 0 && (fl & O_NONBLOCK)) real_fcntl(sfd, F_SETFL, (void *)(intptr_t)(fl & ~O_NONBLOCK));
        cfd[c] = shim_high_fd(sfd);
        peer_label(cfd[c], c);
      }
      shim_busy--;
      direct = 1;
      if (cfd[1] >= 0) {
        /* The broker put the leader first (src/broker/session.ts: with a
         * witness it orders by WELCOME role and PROMOTEs SERVER when
         * neither leads, before handing over): cfd[0] is the primary. */
        paired = 1;
        info_oks[1] = (wflags2 & JDLS_FF_INFO) != 0 && !shim_info_disabled();
        witness = (wflags & JDLS_FF_WITNESS) && (wflags2 & JDLS_FF_WITNESS);
      }
      char v[32];
      wait_opt = shim_jdls_option("WAIT", NULL, 0);
      lock_flags = (wait_opt ? JDLS_FF_NO_INTERIM : 0) | (shim_jdls_option("OSLOCKS", NULL, 0) ? JDLS_FF_OSLOCKS : 0);
      /* Seconds, decimals allowed, as the library reads it (jdls-env.ts);
       * the server reads the same value from the HELLO's options and sends
       * its WAITING frames at a third of it (session.ts interimFor). */
      if (shim_jdls_option("TIMEOUT", v, sizeof v)) {
        double s = strtod(v, NULL);
        if (s > 0 && s <= 86400) timeout_ms = s * 1000 < 1 ? 1 : (int)(s * 1000 + 0.5);
      }
    }
    log_connected(body, n, 0);
    if (paired) log_connected(body2, n2, 1);
    /* The guide's "start" moment: who this process is and what it has
     * declared so far. */
    info_due = 0;
    send_info("start");
    return;
  }
  for (int c = 0; c < 2; c++)
    if (sfds[c] >= 0) {
      shim_busy++;
      real_close(sfds[c]);
      shim_busy--;
    }
  if (type == JDLS_FT_ERROR && n >= 4) {
    /* ERROR: code u16, text str16 - the broker's reason (the server could
     * not be reached, JDLS is malformed, ...) */
    size_t tl = get16(body + 2);
    if (tl > n - 4) tl = n - 4;
    char why[1100];
    snprintf(why, sizeof why, "%.*s", (int)tl, (const char *)body + 4);
    shim_server_unreachable(why);
  }
  lost("no WELCOME from the broker");
}

/* --- requests and answers: leader/follower ----------------------------------
 * Several threads of the process may have requests outstanding (a thread
 * waiting for a lock must not stop another from releasing one: that would
 * be a deadlock the kernel's own locks do not have). Each request has a slot;
 * one thread at a time (the leader, `reading`) reads frames from the socket
 * and files each final answer in its slot; the others wait on `bcv` and one
 * of them takes over when the leader's own answer came. Writes of whole
 * frames are serialised by `wmu`.
 * Rule: slots, `reading`, `bfd` changes and `next_id` only with `bmu` held.
 * Known gap: a signal handler that runs in a thread waiting on `bcv` (not
 * the reader) does not end its wait with EINTR; in a single-threaded program
 * the waiting thread is always the reader. */

/* A longjmp out of a request (shim_real.c, "siglongjmp") never comes back
 * through it: what the thread had is noted per thread so its next entry
 * can undo it (shim_broker_recover): the mutex (while held), the reader role
 * (while reading), the request's slot id and how to release the lock if it
 * was granted after the jump. A jump can only come while this thread waits
 * for the next frame (request() blocks signals everywhere else): never
 * with half a frame sent or read, `wmu` held, or the handshake unfinished. */
static SHIM_TLS int my_holds_bmu;
static SHIM_TLS int my_reading;
static SHIM_TLS uint32_t my_slot_id;
static SHIM_TLS int my_undo;   /* 0, or JDLS_FT_LOCK / JDLS_FT_RANGE_LOCK: release if granted */
static SHIM_TLS struct {
  int space;
  uint32_t tag;
  uint64_t inode;
  int64_t dev, start, len;
  size_t klen;
  int kflags;   /* the LOCK's JDLS_FF_OFFSET: its UNLOCK must name the same lock */
  uint8_t *key; /* shim_thread_buf(1): not in TLS (shim_real.c) */
} my_req;

static void lock_bmu(void) {
  pthread_mutex_lock(&bmu);
  my_holds_bmu = 1;
}
static void unlock_bmu(void) {
  my_holds_bmu = 0;
  pthread_mutex_unlock(&bmu);
}
/* pthread_cond_wait gives the mutex up while it sleeps: a jump out of the
 * sleep leaves it not held. */
static void wait_bcv(void) {
  my_holds_bmu = 0;
  pthread_cond_wait(&bcv, &bmu);
  my_holds_bmu = 1;
}

/* With bmu held: a free slot for a new request id (waits while all are in use). */
static slot *open_slot(uint32_t *id) {
  for (;;) {
    for (int i = 0; i < MAX_SLOTS; i++)
      if (!slots[i].used) {
        slot *s = &slots[i];
        /* field by field: the kept frame (4 KiB) need not be cleared */
        s->id = next_id++;
        if (!next_id) next_id = 1; /* id 0 is the server's own (ERROR NOT_LEADER on id 0) */
        s->used = 1;
        s->done = s->untimed = s->conn = s->both = s->sent = s->internal = 0;
        memset(&s->a, 0, sizeof s->a);
        s->waited = 0;
        s->unblocked = 0;
        s->f.n = 0;
        *id = s->id;
        return s;
      }
    wait_bcv();
  }
}

/* Send the slot's frame on its connection, once. The descriptor is picked
 * under wmu: a promotion (with bmu and wmu) moves the slot to another
 * connection, or sends it there itself, and never while a frame is half
 * out. A pair's failed send is left to the reader (the connection's end
 * shows there: conn_failed); a lone connection's is the end of the process,
 * as before. */
static void send_slot(slot *s) {
  pthread_mutex_lock(&wmu);
  int fd = cfd[s->conn];
  if (!s->sent && fd >= 0) {
    s->sent = 1;
    if (send_fd(fd, s->f.b, s->f.n) != 0 && cfd[1] < 0 && !paired) {
      int e = errno;
      pthread_mutex_unlock(&wmu);
      lost(strerror(e));
    }
  }
  pthread_mutex_unlock(&wmu);
}

/* Trace a slot's frame with its connection's label. */
static void trace_slot(const slot *s) {
  if (shim_log_tracing()) shim_log_request(labels[s->conn], s->f.b, s->f.n);
}

/* The exit when the witness did not make the secondary the primary (the
 * contract's words, docs/shim.md "Pairs"). */
static void exit_unpromoted(const char *failed, const char *to) {
  char why[600];
  snprintf(why, sizeof why,
           "the primary lock server %s is unreachable and the witness did not make %s the primary within TIMEOUT: "
           "exiting rather than risk two holders of one lock", failed, to);
  shim_server_unreachable(why);
}

static void log_pair(int level, const char *msg) {
  char fields[300];
  memcpy(fields, "\"server\":", 9);
  size_t fl = shim_log_jstr(fields, sizeof fields, 9, labels[0], strlen(labels[0]));
  if (labels[1][0]) {
    memcpy(fields + fl, ",\"secondary\":", 13);
    fl = shim_log_jstr(fields, sizeof fields, fl + 13, labels[1], strlen(labels[1]));
  }
  fields[fl] = 0;
  shim_log_line(level, fields, msg);
}

/* With bmu held, after the witness's PROMOTED (or at once without a
 * witness): the secondary is the primary. Requests the old primary had not
 * answered go to it again (the same ids: a CANCEL still names its LOCK);
 * the old primary's halves of requests sent to both are dropped (the
 * secondary's half answers); the secondary's are the primary's now. */
static void promote(void) {
  pthread_mutex_lock(&wmu);
  cfd[0] = cfd[1];
  cfd[1] = -1;
  memcpy(labels[0], labels[1], sizeof labels[0]);
  labels[1][0] = 0;
  info_oks[0] = info_oks[1];
  info_oks[1] = 0;
  /* In the order they were made (request ids), not of the slots: a CANCEL
   * must follow the LOCK it names, or it finds nothing to withdraw and the
   * LOCK waits on at the new primary. */
  for (uint32_t after = 0;;) {
    slot *s = NULL;
    for (int i = 0; i < MAX_SLOTS; i++) {
      slot *x = &slots[i];
      if (x->used && !x->done && !x->internal && x->id > after && (!s || x->id < s->id)) s = x;
    }
    if (!s) break;
    after = s->id;
    if (s->conn == 1) {
      s->conn = 0;
    } else if (s->both) {
      s->done = 1;
      memset(&s->a, 0, sizeof s->a); /* type 0: no answer from this server */
    } else {
      /* Unsent (its thread had not reached send_slot): sent now, and its
       * thread's send_slot finds it sent. Sent: once more, here. */
      s->sent = 1;
      if (shim_log_tracing()) shim_log_request(labels[0], s->f.b, s->f.n);
      (void)send_fd(cfd[0], s->f.b, s->f.n); /* a failure: the reader sees the end */
    }
  }
  pthread_mutex_unlock(&wmu);
  pthread_cond_broadcast(&bcv);
}

/* With bmu held and no reader (await_slot calls it after giving the role
 * up, before anyone can take it): connection c failed. The secondary:
 * logged, carry on alone. The primary: with a witness, PROMOTE to the
 * secondary and the verdict decides (await_slot); without, the guide's
 * rule: promoted at once. The last server: the process ends, as before. */
static void conn_failed(int c, const char *why) {
  if (cfd[c] < 0) return;
  char msg[700], failed[96];
  memcpy(failed, labels[c], sizeof failed);
  pthread_mutex_lock(&wmu);
  int fd = cfd[c];
  cfd[c] = -1; /* never contacted again */
  shim_busy++;
  real_close(fd);
  shim_busy--;
  pthread_mutex_unlock(&wmu);
  if (c == 1) {
    if (promote_id) exit_unpromoted(promote_to, failed);
    snprintf(msg, sizeof msg, "secondary lock server %s failed (%s); continuing with %s alone, no longer resilient", failed, why, labels[0]);
    log_pair(SHIM_LOG_ERROR, msg);
    labels[1][0] = 0;
    for (int i = 0; i < MAX_SLOTS; i++)
      if (slots[i].used && !slots[i].done && slots[i].conn == 1) {
        slots[i].done = 1;
        memset(&slots[i].a, 0, sizeof slots[i].a);
      }
    pthread_cond_broadcast(&bcv);
    return;
  }
  if (cfd[1] < 0) {
    /* the last one (or the promoting primary's successor is gone) */
    if (promote_id) exit_unpromoted(promote_to, labels[1]);
    char w[600];
    snprintf(w, sizeof w, "lock server %s: %s", failed, why);
    shim_server_unreachable(w);
  }
  if (witness) {
    /* The witness decides: the secondary may be a follower that must not
     * grant (the primary may only have lost us, not its leadership). */
    snprintf(msg, sizeof msg, "primary lock server %s failed (%s); asking %s to take the leadership (PROMOTE, wait %d ms)", failed, why, labels[1], timeout_ms);
    log_pair(SHIM_LOG_ERROR, msg);
    memcpy(promote_to, failed, sizeof promote_to);
    uint32_t id;
    slot *p = open_slot(&id);
    p->conn = 1;
    p->internal = 1;
    begin(&p->f, JDLS_FT_PROMOTE, 0, id);
    put32(&p->f, (uint32_t)(timeout_ms > 0 ? timeout_ms : 30000));
    finish(&p->f);
    promote_id = id;
    trace_slot(p);
    send_slot(p);
    return;
  }
  snprintf(msg, sizeof msg, "primary lock server %s failed (%s); secondary %s promoted to primary, no longer resilient", failed, why, labels[1]);
  log_pair(SHIM_LOG_ERROR, msg);
  promote();
}

/* Pair mode: the next frame from either connection (*which). 0; -EINTR
 * (interruptible, a handler ran); -ETIMEDOUT (silence on both past
 * wait_ms); -EIO (*which's connection ended or broke: why). Signals are let
 * in only during the poll, where nothing is half-read. */
static int read_pair(uint8_t *buf, size_t cap, int *type, uint32_t *id, size_t *blen, int *which,
                     int interruptible, int wait_ms, char *why, size_t wn) {
  static int rot; /* the reader's alone: neither connection starves the other */
  struct pollfd pf[2];
  int map[2], np = 0;
  for (int k = 0; k < 2; k++) {
    int c = (k + rot) & 1;
    if (cfd[c] >= 0) {
      pf[np].fd = cfd[c];
      pf[np].events = POLLIN;
      pf[np].revents = 0;
      map[np++] = c;
    }
  }
  rot ^= 1;
  for (;;) {
    sigset_t held;
    if (wait_mask) pthread_sigmask(SIG_SETMASK, wait_mask, &held);
    int r = poll(pf, (nfds_t)np, wait_ms);
    int e = errno;
    if (wait_mask) pthread_sigmask(SIG_SETMASK, &held, NULL);
    if (r < 0 && e == EINTR) {
      if (interruptible) return -EINTR;
      continue;
    }
    if (r < 0) {
      *which = map[0];
      snprintf(why, wn, "poll: %s", strerror(e));
      return -EIO;
    }
    if (r == 0) return -ETIMEDOUT;
    break;
  }
  int k = 0;
  while (k < np - 1 && !pf[k].revents) k++;
  *which = map[k];
  int fd = pf[k].fd;
  /* The rest of a frame that began: TIMEOUT bounds it too (a server that
   * stops mid-frame is as dead as a silent one). */
  int mid = timeout_ms > 0 ? timeout_ms : -1;
  uint8_t h[JDLS_PROTO_HEADER];
  size_t need = JDLS_PROTO_HEADER, got = 0;
  uint8_t *dst = h;
  for (int part = 0; part < 2; part++) {
    while (got < need) {
      /* What is there already is taken without a poll (a frame almost
       * always arrives whole: one system call, not two, per part). */
      ssize_t r = recv(fd, dst + got, need - got, MSG_DONTWAIT);
      if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        struct pollfd q = {fd, POLLIN, 0};
        int pr = poll(&q, 1, mid);
        if (pr == 0) {
          snprintf(why, wn, "silent for more than %d ms in the middle of a frame", mid);
          return -EIO;
        }
        continue;
      }
      if (r < 0 && errno == EINTR) continue;
      if (r == 0) {
        snprintf(why, wn, "the lock server closed the connection");
        return -EIO;
      }
      if (r < 0) {
        snprintf(why, wn, "%s", strerror(errno));
        return -EIO;
      }
      got += (size_t)r;
    }
    if (part == 0) {
      uint32_t len = get32(h);
      if (len < JDLS_PROTO_MIN_LENGTH || len - 8 > cap) {
        snprintf(why, wn, "a frame of a bad length");
        return -EIO;
      }
      *type = h[5];
      *id = get32(h + 8);
      *blen = len - 8;
      dst = buf;
      need = *blen;
      got = 0;
    }
  }
  return 0;
}

/* With bmu held, pair mode: one frame (or the lack of one) from read_pair. */
static void pair_frame(int rc, int which, int type, uint32_t id, const uint8_t *body, size_t n, const char *why) {
  if (rc == -ETIMEDOUT) {
    /* TIMEOUT: every connection with a timed answer due is declared dead
     * (the secondary first: the primary's failure then finds no successor
     * only when both are silent). Known gap: a connection that keeps
     * talking hides the other's silence from this poll. */
    int due[2] = {0, 0};
    for (int i = 0; i < MAX_SLOTS; i++)
      if (slots[i].used && !slots[i].done && !slots[i].untimed && slots[i].sent) due[slots[i].conn] = 1;
    char w[160];
    snprintf(w, sizeof w, "silent for more than %d ms with an answer due; declared dead (JDLS TIMEOUT)", timeout_ms);
    if (due[1]) conn_failed(1, w);
    if (due[0]) conn_failed(0, w);
    return;
  }
  if (rc == -EIO) {
    conn_failed(which, why);
    return;
  }
  shim_log_answer(labels[which], type, id, body, n);
  if (type == JDLS_FT_ERROR && id == 0) {
    /* The server ends the connection: ERROR NOT_LEADER on id 0 is a leader
     * that lost its lease (it closes every client's connection). */
    char w[120];
    snprintf(w, sizeof w, "ERROR %u on request id 0: the server ends the connection", n >= 2 ? (unsigned)get16(body) : 0u);
    conn_failed(which, w);
    return;
  }
  if (promote_id && id == promote_id && which == 1) {
    for (int i = 0; i < MAX_SLOTS; i++)
      if (slots[i].used && slots[i].internal && slots[i].id == id) slots[i].used = 0;
    promote_id = 0;
    if (type != JDLS_FT_PROMOTED) exit_unpromoted(promote_to, labels[1]);
    char msg[300];
    snprintf(msg, sizeof msg, "the witness made %s the primary (PROMOTED term %u); %s is never contacted again", labels[1],
             n >= 4 ? (unsigned)get32(body) : 0u, promote_to);
    log_pair(SHIM_LOG_ERROR, msg);
    promote();
    return;
  }
  if (type == JDLS_FT_ERROR && which == 0 && cfd[1] >= 0 && n >= 2 && get16(body) == JDLS_PE_NOT_LEADER) {
    /* A witnessed server that is not the pair's leader refuses to grant:
     * it is no primary. The request is sent again after the promotion. */
    conn_failed(0, "ERROR NOT_LEADER: it is not the pair's leader");
    return;
  }
  for (int i = 0; i < MAX_SLOTS; i++) {
    slot *s = &slots[i];
    if (!s->used || s->done || s->id != id || s->conn != which) continue;
    if (type == JDLS_FT_WAITING) {
      if (!s->waited) {
        s->waited = now_ms();
        if (!s->waited) s->waited = 1;
        __atomic_store_n(&shim_info_waits, shim_info_waits + 1, __ATOMIC_RELAXED);
      }
      return;
    }
    parse_final(type, body, n, &s->a);
    s->done = 1;
    if (s->waited) {
      int64_t d = now_ms() - s->waited;
      if (d > 0) __atomic_store_n(&shim_info_wait_ms, shim_info_wait_ms + (uint64_t)d, __ATOMIC_RELAXED);
      s->waited = 0;
      s->unblocked = 1;
    }
    return;
  }
}

/* With bmu held: wait until `s` has its final answer, reading as the leader
 * when no one else is. -EINTR when `interruptible` and a signal handler ran
 * while this thread was reading (the slot stays open: the answer still
 * comes). */
static int await_slot(slot *s, int interruptible) {
  uint8_t body[4096];
  while (!s->done) {
    if (reading) {
      wait_bcv();
      continue;
    }
    reading = 1;
    my_reading = 1;
    int wait_ms = -1; /* TIMEOUT applies while any outstanding request is timed */
    if (direct && timeout_ms > 0)
      for (int i = 0; i < MAX_SLOTS; i++)
        if (slots[i].used && !slots[i].done && !slots[i].untimed) {
          /* the PROMOTE: the server answers within wait_ms = TIMEOUT; a
           * second more for the answer to travel */
          wait_ms = timeout_ms + (promote_id ? 1000 : 0);
        }
    unlock_bmu();
    int type = 0;
    uint32_t id = 0;
    size_t n = 0;
    int rc, which = 0;
    char why[160] = "";
    if (paired) rc = read_pair(body, sizeof body, &type, &id, &n, &which, interruptible, wait_ms, why, sizeof why);
    else rc = read_frame(body, sizeof body, &type, &id, &n, interruptible, wait_ms);
    lock_bmu();
    reading = 0;
    my_reading = 0;
    pthread_cond_broadcast(&bcv);
    if (rc == -EINTR) return rc;
    if (paired) {
      pair_frame(rc, which, type, id, body, n, why);
      continue;
    }
    shim_log_answer(server_label, type, id, body, n);
    if (type == JDLS_FT_WAITING) {
      /* The guide's "block" moment: the server queued the request and
       * writes the wait in its record itself. No INFO is sent from here:
       * this loop runs inside the wait, where a signal handler may
       * siglongjmp out (docs/shim.md "jumps"), and an INFO sent here
       * (malloc, wmu) made the chaos suite's jump test hang (seen 2 of 3
       * runs; never with JDLS_INFO=0). The statistics go with the
       * "unblock" INFO after the request, with signals blocked. */
      for (int i = 0; i < MAX_SLOTS; i++)
        if (slots[i].used && !slots[i].done && slots[i].id == id && !slots[i].waited) {
          slots[i].waited = now_ms();
          if (!slots[i].waited) slots[i].waited = 1;
          __atomic_store_n(&shim_info_waits, shim_info_waits + 1, __ATOMIC_RELAXED);
          break;
        }
      continue;
    }
    for (int i = 0; i < MAX_SLOTS; i++)
      if (slots[i].used && !slots[i].done && slots[i].id == id) {
        parse_final(type, body, n, &slots[i].a);
        slots[i].done = 1;
        if (slots[i].waited) {
          int64_t d = now_ms() - slots[i].waited;
          if (d > 0) __atomic_store_n(&shim_info_wait_ms, shim_info_wait_ms + (uint64_t)d, __ATOMIC_RELAXED);
          slots[i].waited = 0;
          slots[i].unblocked = 1;
        }
        break;
      }
  }
  return 0;
}

static void close_slot(slot *s) {
  s->used = 0;
  pthread_cond_broadcast(&bcv);
}

/* One request: `build` writes the frame for id; the answer into *a. With
 * `interruptible`, a signal handler that ran during the wait withdraws the
 * request (CANCEL) and the call returns -EINTR - unless the grant won the
 * race: then we hold the lock and succeed rather than lose it. */
typedef void (*build_fn)(fbuf *f, uint32_t id, const void *arg);
/* With bmu held: withdraw request `id` (slot s) with CANCEL and wait for
 * its final answer (GRANTED if the grant won the race). */
static void cancel_slot(slot *s, uint32_t id) {
  uint32_t cid;
  /* Signals stay blocked to the end (a round trip): a jump out of these
   * waits would leave the CANCEL's own slot open for good. */
  const sigset_t *m = wait_mask;
  wait_mask = NULL;
  slot *c = open_slot(&cid);
  c->conn = s->conn; /* where the LOCK is (a promotion moves both alike) */
  begin(&c->f, JDLS_FT_CANCEL, 0, cid);
  put32(&c->f, id);
  finish(&c->f);
  unlock_bmu();
  trace_slot(c);
  send_slot(c);
  lock_bmu();
  await_slot(s, 0);
  await_slot(c, 0);
  close_slot(c);
  wait_mask = m;
}

static int unlock_type(int t) {
  return t == JDLS_FT_UNLOCK || t == JDLS_FT_UNLOCK_FILE || t == JDLS_FT_UNLOCK_ALL || t == JDLS_FT_RANGE_UNLOCK;
}

/* Two servers' different answers to one request: logged as an error
 * (jbase_error_trace has it, as the library logs it); the primary's stands. */
static void log_differ(int type, const shim_answer *p, const shim_answer *q) {
  char msg[200];
  snprintf(msg, sizeof msg, "primary and secondary lock servers answered differently: request type 0x%02x, primary 0x%02x (count %u), secondary 0x%02x (count %u)",
           (unsigned)type, (unsigned)p->type, (unsigned)p->count, (unsigned)q->type, (unsigned)q->count);
  log_pair(SHIM_LOG_ERROR, msg);
}

/* With bmu held: the primary GRANTED a LOCK/RANGE_LOCK (slot s): the same
 * request to the secondary with MIRROR (and FENCE with the primary's
 * token, without BREAK_DEADLOCK: the primary granted it, the mirror must
 * follow - src/client/resilient.ts fenced()). Not interruptible, signals
 * blocked: the caller's lock is granted; the mirror is bookkeeping. */
static void mirror(const slot *s, const shim_answer *pa) {
  uint32_t mid;
  slot *m = open_slot(&mid);
  m->conn = 1;
  memcpy(m->f.b, s->f.b, s->f.n);
  m->f.n = s->f.n;
  uint8_t *h = m->f.b;
  h[8] = (uint8_t)(mid >> 24);
  h[9] = (uint8_t)(mid >> 16);
  h[10] = (uint8_t)(mid >> 8);
  h[11] = (uint8_t)mid;
  int type = h[5];
  uint16_t fl = get16(h + 6);
  fl |= JDLS_FF_MIRROR;
  if (type == JDLS_FT_LOCK) {
    fl &= (uint16_t)~JDLS_FF_BREAK_DEADLOCK;
    if (pa->token && !(fl & JDLS_FF_FENCE)) {
      fl |= JDLS_FF_FENCE;
      put64(&m->f, pa->token); /* after the key: the LOCK's last field */
      finish(&m->f);
    }
  }
  h[6] = (uint8_t)(fl >> 8);
  h[7] = (uint8_t)fl;
  unlock_bmu();
  trace_slot(m);
  send_slot(m);
  lock_bmu();
  const sigset_t *mm = wait_mask;
  wait_mask = NULL;
  await_slot(m, 0);
  wait_mask = mm;
  /* type 0: the secondary failed meanwhile (conn_failed logged it) */
  if (m->a.type && m->a.type != JDLS_FT_GRANTED) log_differ(type, pa, &m->a);
  close_slot(m);
}

static int request(build_fn build, const void *arg, int interruptible, int untimed, shim_answer *a) {
  /* Signals blocked from here to the end but for the wait for an answer
   * (wait_frame): a jump can only leave from a point where nothing is
   * half-done. Two system calls on a round trip to another process.
   * The connection too: a jump out of the handshake (the first lock of a
   * process is often the one a timer interrupts) left `bfd` set with no
   * WELCOME read - every later request then waited for an answer the
   * broker never sends (the chaos repro's server-route hang). Starting the
   * broker restores the program's mask in the child (start_broker). */
  sigset_t caller;
  shim_block_signals(&caller);
  const sigset_t *outer = wait_mask;
  if (!outer) wait_mask = &caller;
  lock_bmu();
  ensure_connected();
  if (info_due && info_ok) {
    /* declared files since the last INFO: before this request */
    info_due = 0;
    send_info("change");
  }
  uint32_t id;
  slot *s = open_slot(&id);
  s->untimed = untimed;
  /* Built with bmu held, into the slot: a promotion may send it (again). */
  build(&s->f, id, arg);
  finish(&s->f);
  int type = s->f.b[5];
  /* A pair's unlocks go to both servers AT ONCE, not after the primary's
   * answer: the pair's cost is then the lock's two round trips in sequence
   * and the unlock's one in parallel (issue 15: <= 2.1 x the single
   * server's pair). */
  slot *s2 = NULL;
  if (paired && cfd[1] >= 0 && !promote_id && unlock_type(type)) {
    uint32_t id2;
    s2 = open_slot(&id2);
    s2->conn = 1;
    s2->both = s->both = 1;
    memcpy(s2->f.b, s->f.b, s->f.n);
    s2->f.n = s->f.n;
    s2->f.b[8] = (uint8_t)(id2 >> 24);
    s2->f.b[9] = (uint8_t)(id2 >> 16);
    s2->f.b[10] = (uint8_t)(id2 >> 8);
    s2->f.b[11] = (uint8_t)id2;
  }
  unlock_bmu();
  trace_slot(s);
  if (s2) trace_slot(s2);
  /* Noted before it is sent: from here a jump must withdraw it. */
  my_slot_id = id;
  send_slot(s);
  if (s2) send_slot(s2);
  lock_bmu();
  int rc = await_slot(s, interruptible);
  if (rc == -EINTR) {
    cancel_slot(s, id);
    rc = s->a.type == JDLS_FT_GRANTED ? 0 : -EINTR;
  }
  shim_answer pa = s->a;
  if (s2) {
    const sigset_t *m = wait_mask;
    wait_mask = NULL;
    await_slot(s2, 0);
    wait_mask = m;
    if (!pa.type) pa = s2->a; /* the primary failed: the new primary's word */
    else if (s2->a.type && (s2->a.type != pa.type || (pa.type == JDLS_FT_RELEASED && s2->a.count != pa.count)))
      log_differ(type, &pa, &s2->a); /* as resilient.ts compares: RELEASED with its count */
    close_slot(s2);
  }
  int unblocked = s->unblocked;
  /* The slot stays open during the mirror: its frame is copied from it. */
  if (paired && cfd[1] >= 0 && !promote_id && s->conn == 0 && !s->both && pa.type == JDLS_FT_GRANTED &&
      (type == JDLS_FT_LOCK || type == JDLS_FT_RANGE_LOCK))
    mirror(s, &pa);
  close_slot(s);
  *a = pa;
  my_slot_id = 0;
  my_undo = 0;
  unlock_bmu();
  /* after a wait: the process's statistics with it ("unblock") */
  if (unblocked && info_ok) send_info("unblock");
  wait_mask = outer;
  shim_restore_signals(&caller);
  return rc;
}

void shim_broker_recover(void) {
  /* The jump left request()'s frame, and the mask it saved with it; the
   * jump could only leave from wait_frame, under the program's mask. */
  wait_mask = NULL;
  if (my_holds_bmu) unlock_bmu();
  if (!my_slot_id && !my_reading) return;
  uint32_t id = my_slot_id;
  int undo = my_undo;
  my_slot_id = 0;
  my_undo = 0;
  lock_bmu();
  if (my_reading) {
    /* It was the reader: another thread (or the next request) reads now. */
    my_reading = 0;
    reading = 0;
    pthread_cond_broadcast(&bcv);
  }
  slot *s = NULL;
  for (int i = 0; i < MAX_SLOTS && id; i++)
    if (slots[i].used && slots[i].id == id) s = &slots[i];
  if (!s) {
    unlock_bmu();
    return;
  }
  if (!s->done) cancel_slot(s, id);
  int granted = s->a.type == JDLS_FT_GRANTED;
  close_slot(s);
  unlock_bmu();
  if (!granted || !undo) return;
  /* Granted after the jump: the program does not know it holds it. */
  shim_answer a;
  if (undo == JDLS_FT_LOCK)
    shim_broker_call_key(JDLS_FT_UNLOCK, my_req.kflags, my_req.inode, my_req.dev, my_req.key, my_req.klen, &a);
  else
    shim_broker_range(JDLS_FT_RANGE_UNLOCK, my_req.space, 0, 0, my_req.tag, my_req.inode, my_req.start,
                      my_req.len, &a);
}

static void put_file(fbuf *f, uint64_t inode, int64_t dev) {
  put64(f, inode);
  put64(f, (uint64_t)dev);
}

/* A request about one key (LOCK, UNLOCK, STATUS) or a file (UNLOCK_FILE,
 * UNLOCK_ALL): mode and nowait only for LOCK; kflags (JDLS_FF_OFFSET or 0)
 * for LOCK, UNLOCK and STATUS. */
typedef struct key_args {
  int type, mode, nowait, brk;
  uint64_t inode;
  int64_t dev;
  const void *key;
  size_t klen;
  int kflags;
} key_args;

static void build_lock(fbuf *f, uint32_t id, const void *arg) {
  const key_args *l = arg;
  begin(f, JDLS_FT_LOCK, (l->nowait ? JDLS_FF_NOWAIT : 0) | (l->brk ? JDLS_FF_BREAK_DEADLOCK : 0) | lock_flags | l->kflags, id);
  put8(f, (uint8_t)l->mode);
  put32(f, shim_pid()); /* tid = pid: the process is the owner */
  put_file(f, l->inode, l->dev);
  putstr(f, l->key, l->klen, JDLS_PROTO_MAX_KEY);
}

int shim_broker_lock(int mode, int nowait, int break_deadlock, int interruptible, uint64_t inode,
                     int64_t dev, const void *key, size_t klen, shim_answer *a) {
  return shim_broker_lock_key(mode, nowait, break_deadlock, interruptible, 0, inode, dev, key, klen, a);
}

int shim_broker_lock_key(int mode, int nowait, int break_deadlock, int interruptible, int kflags,
                         uint64_t inode, int64_t dev, const void *key, size_t klen, shim_answer *a) {
  key_args l = {JDLS_FT_LOCK, mode, nowait, break_deadlock && !nowait, inode, dev, key, klen, kflags};
  if (!nowait && (my_req.key = shim_thread_buf(1)) != NULL) {
    my_undo = JDLS_FT_LOCK;
    my_req.kflags = kflags;
    my_req.inode = inode;
    my_req.dev = dev;
    my_req.klen = klen > SHIM_THREAD_BUF ? SHIM_THREAD_BUF : klen;
    memcpy(my_req.key, key, my_req.klen);
  }
  /* Under WAIT no interim frames come for a waiting lock: not timed. */
  int rc = request(build_lock, &l, interruptible && !nowait, !nowait && wait_opt, a);
  /* InfoStats for the INFO frames (plain increments, as shim_info.c's) */
  if (rc == 0 && a->type == JDLS_FT_GRANTED)
    __atomic_store_n(&shim_info_locks, shim_info_locks + 1, __ATOMIC_RELAXED);
  else if (rc == 0 && a->type == JDLS_FT_LOCKED)
    __atomic_store_n(&shim_info_retries, shim_info_retries + 1, __ATOMIC_RELAXED);
  return rc;
}

typedef struct range_args {
  int type, space, mode, nowait;
  uint32_t tag;
  uint64_t inode;
  int64_t start, len;
} range_args;

static void build_range(fbuf *f, uint32_t id, const void *arg) {
  const range_args *r = arg;
  begin(f, r->type, (r->type == JDLS_FT_RANGE_LOCK && r->nowait ? JDLS_FF_NOWAIT : 0) | r->space, id);
  if (r->type != JDLS_FT_RANGE_UNLOCK) put8(f, (uint8_t)r->mode);
  put32(f, r->tag);
  put_file(f, r->inode, -1);
  put64(f, (uint64_t)r->start);
  put64(f, (uint64_t)r->len);
}

int shim_broker_range(int type, int space, int mode, int nowait, uint32_t tag, uint64_t inode,
                      int64_t start, int64_t len, shim_answer *a) {
  range_args r = {type, space, mode, nowait, tag, inode, start, len};
  if (type == JDLS_FT_RANGE_LOCK && !nowait) {
    my_undo = JDLS_FT_RANGE_LOCK;
    my_req.space = space;
    my_req.tag = tag;
    my_req.inode = inode;
    my_req.start = start;
    my_req.len = len;
  }
  /* A waiting range lock gets no interim frames: not timed. */
  return request(build_range, &r, type == JDLS_FT_RANGE_LOCK && !nowait, type == JDLS_FT_RANGE_LOCK && !nowait, a);
}

static void build_call(fbuf *f, uint32_t id, const void *arg) {
  const key_args *c = arg;
  /* STATUS with a mode: the F_GETLK probe (another owner's lock that blocks it). */
  int probe = c->type == JDLS_FT_STATUS && c->mode ? (c->mode == 2 ? JDLS_FF_PROBE_WRITE : JDLS_FF_PROBE_READ) : 0;
  /* OSLOCKS: this process's LOCKs go to the OS record locks, so its STATUS asks there too. */
  if (c->type == JDLS_FT_STATUS && (lock_flags & JDLS_FF_OSLOCKS)) probe |= JDLS_FF_STATUS_OSLOCKS;
  if (c->type == JDLS_FT_UNLOCK || c->type == JDLS_FT_STATUS) probe |= c->kflags;
  begin(f, c->type, probe, id);
  put32(f, shim_pid());
  if (c->type != JDLS_FT_UNLOCK_ALL) put_file(f, c->inode, c->dev);
  if (c->type == JDLS_FT_UNLOCK || c->type == JDLS_FT_STATUS) putstr(f, c->key, c->klen, JDLS_PROTO_MAX_KEY);
}

int shim_broker_call(int type, uint64_t inode, int64_t dev, const void *key, size_t klen,
                     shim_answer *a) {
  return shim_broker_call_key(type, 0, inode, dev, key, klen, a);
}

int shim_broker_call_key(int type, int kflags, uint64_t inode, int64_t dev, const void *key, size_t klen,
                         shim_answer *a) {
  key_args c = {type, 0, 0, 0, inode, dev, key, klen, kflags};
  request(build_call, &c, 0, 0, a);
  return 0;
}

int shim_broker_probe(int mode, uint64_t inode, int64_t dev, const void *key, size_t klen, shim_answer *a) {
  return shim_broker_probe_key(mode, 0, inode, dev, key, klen, a);
}

int shim_broker_probe_key(int mode, int kflags, uint64_t inode, int64_t dev, const void *key, size_t klen,
                          shim_answer *a) {
  key_args c = {JDLS_FT_STATUS, mode, 0, 0, inode, dev, key, klen, kflags};
  request(build_call, &c, 0, 0, a);
  return 0;
}


/* --- INFO moments from the C API (shim.h) ------------------------------------ */
void shim_info_remote_changed(int idle) {
  if (!__atomic_load_n(&info_ok, __ATOMIC_RELAXED) || shim_in_vfork) return;
  if (!idle) {
    __atomic_store_n(&info_due, 1, __ATOMIC_RELAXED);
    return;
  }
  /* The runtime is about to wait for input: at once (with what is due). */
  sigset_t caller;
  shim_block_signals(&caller);
  shim_busy++;
  __atomic_store_n(&info_due, 0, __ATOMIC_RELAXED);
  send_info("idle");
  shim_busy--;
  shim_restore_signals(&caller);
}

void shim_info_remote_forget(void) {
  info_ok = 0;
  info_due = 0;
}
