/*
 * shim_log.c - the trace and error lines of a preloaded program, as the
 * library writes them (src/client/logging.ts, docs/client.md "Logging"):
 *
 *   JDLS VERBOSE      trace (connecting, connected, each request, answer,
 *                     interim WAITING, errors) to stderr
 *   JDLS TRACE=file   the trace appended to that file instead (TRACE
 *                     overrides VERBOSE, as the guide says); a relative name
 *                     is taken against the working directory at the first
 *                     connection
 *   always (JDLS set) communication errors - the broker or server cannot be
 *                     reached, the connection is lost, TIMEOUT declared the
 *                     server dead - appended to
 *                     $JBCRELEASEDIR/tmp/jbase_error_trace
 *
 * Lines are JSON, one per line, in pino's layout (level 20 debug, 50 error;
 * time in ms; pid; hostname; name "jdls-shim"; the fields; msg), with the
 * library's messages where the event is the same, so one reader serves both.
 *
 * Async-signal safety: a line is formatted into a buffer on the stack
 * (snprintf of integers and strings: no allocation, no stdio stream, no
 * lock) and written with one write(2). Files are opened for each line and
 * closed by raw syscall: a descriptor kept open could be closed by the
 * program and its number reused for one of the program's own files. The
 * trace lines come from request() with signals blocked; the error line
 * comes just before the process exits.
 *
 * jbase_error_trace lies in $JBCRELEASEDIR/tmp, which every user of the
 * installation may write (01777): as src/safefile.ts openLog, a link planted
 * at its name is not followed (O_NOFOLLOW), and only a regular file of ours
 * or root's with one name is appended to; a new one is made 0640. Logging
 * never breaks locking: a file that cannot be written is skipped.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include <limits.h>
#include "shim.h"
#include "../native/common/jdls_table.h"
#include "../native/common/jdls_proto.h"

/* 0 not read yet, 1 being read, 2 read (the fields below are set) */
static int state;
static int verbose;
static char trace_path[PATH_MAX];
static char error_path[PATH_MAX];
static char hostname[256];

static void read_options(void) {
  int zero = 0;
  if (!__atomic_compare_exchange_n(&state, &zero, 1, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
    /* Another thread reads them; an error line meanwhile may miss the trace. */
    return;
  }
  const char *j = shim_jdls_value();
  if (j) {
    char v[PATH_MAX];
    verbose = shim_jdls_option("VERBOSE", NULL, 0);
    if (shim_jdls_option("TRACE", v, sizeof v) && v[0]) {
      char cwd[PATH_MAX];
      if (v[0] != '/' && getcwd(cwd, sizeof cwd)) {
        if (strlen(cwd) + strlen(v) + 2 <= sizeof trace_path) {
          strcpy(trace_path, cwd);
          strcat(trace_path, "/");
          strcat(trace_path, v);
        }
      } else
        snprintf(trace_path, sizeof trace_path, "%s", v);
    }
    char rd[PATH_MAX - 64];
    if (jdls_release_dir(rd, sizeof rd) >= 0)
      snprintf(error_path, sizeof error_path, "%s/tmp/jbase_error_trace", rd);
  }
  gethostname(hostname, sizeof hostname - 1);
  __atomic_store_n(&state, 2, __ATOMIC_RELEASE);
}

void shim_log_init(void) {
  if (__atomic_load_n(&state, __ATOMIC_ACQUIRE) == 0) read_options();
}

int shim_log_tracing(void) {
  return __atomic_load_n(&state, __ATOMIC_ACQUIRE) == 2 && (trace_path[0] || verbose);
}

/* Append a JSON string (quotes included) of n bytes at p to b (cap bytes,
 * *len used). Control characters are escaped; other bytes are copied. */
size_t shim_log_jstr(char *b, size_t cap, size_t len, const char *p, size_t n) {
  if (len + 1 >= cap) return len;
  b[len++] = '"';
  for (size_t i = 0; i < n && len + 8 < cap; i++) {
    unsigned char c = (unsigned char)p[i];
    if (c == '"' || c == '\\') {
      b[len++] = '\\';
      b[len++] = (char)c;
    } else if (c < 0x20) {
      static const char hex[] = "0123456789abcdef";
      memcpy(b + len, "\\u00", 4);
      b[len + 4] = hex[c >> 4];
      b[len + 5] = hex[c & 15];
      len += 6;
    } else {
      b[len++] = (char)c;
    }
  }
  if (len + 1 < cap) b[len++] = '"';
  return len;
}

static void write_all(int fd, const char *b, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, b, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return;
    b += w;
    n -= (size_t)w;
  }
}

/* The trace file: appended to as the library's pino destination does
 * (created if missing, with its directory's usual rights). */
static void append_trace(const char *line, size_t n) {
  int fd = open(trace_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NONBLOCK, 0666);
  if (fd < 0) return;
  write_all(fd, line, n);
  syscall(SYS_close, fd);
}

/* jbase_error_trace: see the head of this file. */
static void append_error(const char *line, size_t n) {
  if (!error_path[0]) return;
  char tmp[PATH_MAX];
  snprintf(tmp, sizeof tmp, "%s", error_path);
  char *sl = strrchr(tmp, '/');
  if (sl) {
    *sl = 0;
    if (access(tmp, F_OK) != 0) {
      char *up = strrchr(tmp, '/');
      if (up && up != tmp) {
        *up = 0;
        mkdir(tmp, 0750); /* the installation directory, if missing */
        *up = '/';
      }
      /* $JBCRELEASEDIR/tmp is the installation's shared tmp (the broker
       * sockets' too: shim_broker.c sock_path): 01777 */
      if (mkdir(tmp, 01777) == 0) chmod(tmp, 01777);
    }
  }
  int fd = open(error_path, O_WRONLY | O_CREAT | O_APPEND | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, 0640);
  if (fd < 0) return;
  struct stat st;
  if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_nlink == 1 && (st.st_uid == geteuid() || st.st_uid == 0))
    write_all(fd, line, n);
  syscall(SYS_close, fd);
}

void shim_log_line(int level, const char *fields, const char *msg) {
  shim_log_init();
  if (__atomic_load_n(&state, __ATOMIC_ACQUIRE) != 2) return;
  int trace = trace_path[0] || verbose;
  if (level < SHIM_LOG_ERROR && !trace) return;
  if (level >= SHIM_LOG_ERROR && !trace && !error_path[0]) return;
  char b[3072];
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  int n = snprintf(b, sizeof b, "{\"level\":%d,\"time\":%lld,\"pid\":%u,\"hostname\":", level,
                   (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000, (unsigned)shim_pid());
  size_t len = n < 0 ? 0 : (size_t)n;
  len = shim_log_jstr(b, sizeof b, len, hostname, strlen(hostname));
  n = snprintf(b + len, sizeof b - len, ",\"name\":\"jdls-shim\"%s%s,\"msg\":", fields && *fields ? "," : "",
               fields ? fields : "");
  if (n > 0) len += (size_t)n;
  if (len > sizeof b - 16) len = sizeof b - 16; /* cut fields: the line still ends well */
  len = shim_log_jstr(b, sizeof b - 3, len, msg, strlen(msg));
  b[len++] = '}';
  b[len++] = '\n';
  if (trace) {
    if (trace_path[0]) append_trace(b, len);
    else write_all(2, b, len);
  }
  if (level >= SHIM_LOG_ERROR) append_error(b, len);
}

/* --- describing frames, as the library's trace does (connection.ts) ----- */
static uint32_t g16(const uint8_t *p) { return (uint32_t)p[0] << 8 | p[1]; }
static uint32_t g32(const uint8_t *p) { return g16(p) << 16 | g16(p + 2); }
static uint64_t g64(const uint8_t *p) { return (uint64_t)g32(p) << 32 | g32(p + 4); }

static const char *type_name(int t) {
  switch (t) {
    case JDLS_FT_LOCK: return "LOCK";
    case JDLS_FT_UNLOCK: return "UNLOCK";
    case JDLS_FT_UNLOCK_FILE: return "UNLOCK_FILE";
    case JDLS_FT_UNLOCK_ALL: return "UNLOCK_ALL";
    case JDLS_FT_STATUS: return "STATUS";
    case JDLS_FT_CANCEL: return "CANCEL";
    case JDLS_FT_TEST: return "TEST";
    case JDLS_FT_PING: return "PING";
    case JDLS_FT_RANGE_LOCK: return "RANGE_LOCK";
    case JDLS_FT_RANGE_UNLOCK: return "RANGE_UNLOCK";
    case JDLS_FT_RANGE_TEST: return "RANGE_TEST";
    case JDLS_FT_INFO: return "INFO";
    case JDLS_FT_INFO_QUERY: return "INFO_QUERY";
    case JDLS_FT_PROMOTE: return "PROMOTE";
    case JDLS_FT_WELCOME: return "WELCOME";
    case JDLS_FT_GRANTED: return "GRANTED";
    case JDLS_FT_LOCKED: return "LOCKED";
    case JDLS_FT_WAITING: return "WAITING";
    case JDLS_FT_RELEASED: return "RELEASED";
    case JDLS_FT_STATUS_RESULT: return "STATUS_RESULT";
    case JDLS_FT_TEST_RESULT: return "TEST_RESULT";
    case JDLS_FT_PONG: return "PONG";
    case JDLS_FT_RANGE_RESULT: return "RANGE_RESULT";
    case JDLS_FT_INFO_RESULT: return "INFO_RESULT";
    case JDLS_FT_PROMOTED: return "PROMOTED";
    case JDLS_FT_ERROR: return "ERROR";
    default: return NULL;
  }
}

static const char *mode_name(int m) { return m == 2 ? "write" : "read"; }

/* "file":{"inode":"..","dev":".."} from 16 bytes */
static int put_file(char *b, size_t cap, const uint8_t *p) {
  return snprintf(b, cap, "\"file\":{\"inode\":\"%llu\",\"dev\":\"%lld\"}", (unsigned long long)g64(p),
                  (long long)(int64_t)g64(p + 8));
}

/* A key (str16) as the library shows a Buffer: lowercase hex, cut at 256 bytes. */
static int put_key(char *b, size_t cap, const uint8_t *p, size_t avail) {
  static const char hex[] = "0123456789abcdef";
  if (avail < 2) return 0;
  size_t kl = g16(p);
  if (kl > avail - 2) kl = avail - 2;
  if (kl > 256) kl = 256;
  int n = snprintf(b, cap, ",\"key\":\"");
  if (n < 0 || (size_t)n + kl * 2 + 2 > cap) return 0;
  for (size_t i = 0; i < kl; i++) {
    b[n++] = hex[p[2 + i] >> 4];
    b[n++] = hex[p[2 + i] & 15];
  }
  b[n++] = '"';
  b[n] = 0;
  return n;
}

static size_t server_field(char *b, size_t cap, const char *server, uint32_t id) {
  size_t len = 0;
  memcpy(b, "\"server\":", 9);
  len = shim_log_jstr(b, cap, 9, server ? server : "", server ? strlen(server) : 0);
  int n = snprintf(b + len, cap - len, ",\"id\":%u", (unsigned)id);
  return n > 0 && (size_t)n < cap - len ? len + (size_t)n : len;
}

void shim_log_request(const char *server, const uint8_t *frame, size_t n) {
  if (!shim_log_tracing() || n < JDLS_PROTO_HEADER) return;
  char f[1400];
  int type = frame[5], flags = (int)g16(frame + 6);
  uint32_t id = g32(frame + 8);
  const uint8_t *p = frame + JDLS_PROTO_HEADER;
  size_t bl = n - JDLS_PROTO_HEADER;
  size_t len = server_field(f, sizeof f, server, id);
  const char *name = type_name(type);
  int k = name ? snprintf(f + len, sizeof f - len, ",\"request\":{\"type\":\"%s\"", name)
               : snprintf(f + len, sizeof f - len, ",\"request\":{\"type\":%d", type);
  if (k > 0) len += (size_t)k;
  char *o = f + len;
  size_t cap = sizeof f - len - 2;
  k = 0;
  switch (type) {
    case JDLS_FT_LOCK:
      if (bl >= 21) {
        k = snprintf(o, cap, ",\"mode\":\"%s\",\"nowait\":%s,\"noInterim\":%s,\"osLocks\":%s,\"tid\":%u,", mode_name(p[0]),
                     flags & JDLS_FF_NOWAIT ? "true" : "false", flags & JDLS_FF_NO_INTERIM ? "true" : "false",
                     flags & JDLS_FF_OSLOCKS ? "true" : "false", (unsigned)g32(p + 1));
        k += put_file(o + k, cap - (size_t)k, p + 5);
        k += put_key(o + k, cap - (size_t)k, p + 21, bl - 21);
      }
      break;
    case JDLS_FT_UNLOCK:
    case JDLS_FT_STATUS:
    case JDLS_FT_UNLOCK_FILE:
      if (bl >= 20) {
        k = snprintf(o, cap, ",\"tid\":%u,", (unsigned)g32(p));
        k += put_file(o + k, cap - (size_t)k, p + 4);
        if (type != JDLS_FT_UNLOCK_FILE) k += put_key(o + k, cap - (size_t)k, p + 20, bl - 20);
      }
      break;
    case JDLS_FT_UNLOCK_ALL:
      if (bl >= 4) k = snprintf(o, cap, ",\"tid\":%u", (unsigned)g32(p));
      break;
    case JDLS_FT_CANCEL:
      if (bl >= 4) k = snprintf(o, cap, ",\"target\":%u", (unsigned)g32(p));
      break;
    case JDLS_FT_RANGE_LOCK:
    case JDLS_FT_RANGE_TEST:
    case JDLS_FT_RANGE_UNLOCK: {
      size_t off = type == JDLS_FT_RANGE_UNLOCK ? 0 : 1;
      if (bl >= off + 36) {
        if (off) k = snprintf(o, cap, ",\"mode\":\"%s\"", mode_name(p[0]));
        k += snprintf(o + k, cap - (size_t)k, ",\"tid\":%u,", (unsigned)g32(p + off));
        k += put_file(o + k, cap - (size_t)k, p + off + 4);
        k += snprintf(o + k, cap - (size_t)k, ",\"start\":\"%llu\",\"length\":\"%llu\"",
                      (unsigned long long)g64(p + off + 20), (unsigned long long)g64(p + off + 28));
      }
      break;
    }
  }
  if (k > 0 && (size_t)k < cap) len += (size_t)k;
  f[len++] = '}';
  f[len] = 0;
  shim_log_line(SHIM_LOG_DEBUG, f, "request");
}

/* The holder of LOCKED / WAITING: mode u8, port, pid, owner pid, owner tid (then the address). */
static int put_holder(char *b, size_t cap, const uint8_t *p, size_t n) {
  if (n < 17) return 0;
  return snprintf(b, cap, "\"holder\":{\"mode\":\"%s\",\"port\":%u,\"pid\":%u,\"ownerPid\":%u,\"ownerTid\":%u}",
                  mode_name(p[0]), (unsigned)g32(p + 1), (unsigned)g32(p + 5), (unsigned)g32(p + 9), (unsigned)g32(p + 13));
}

void shim_log_answer(const char *server, int type, uint32_t id, const uint8_t *p, size_t n) {
  if (!shim_log_tracing()) return;
  char f[1400];
  size_t len = server_field(f, sizeof f, server, id);
  size_t cap = sizeof f - len - 4;
  char *o = f + len;
  int k = 0;
  if (type == JDLS_FT_WAITING) {
    o[k++] = ',';
    k += put_holder(o + k, cap - (size_t)k, p, n);
    if (k > 0 && (size_t)k < cap) len += (size_t)k;
    f[len] = 0;
    shim_log_line(SHIM_LOG_DEBUG, f, "waiting");
    return;
  }
  if (type == JDLS_FT_ERROR) {
    /* code u16, text str16: the library's "error answer" line */
    if (n >= 4) {
      size_t tl = g16(p + 2);
      if (tl > n - 4) tl = n - 4;
      k = snprintf(o, cap, ",\"code\":%u,\"text\":", (unsigned)g16(p));
      if (k > 0) len += (size_t)k;
      len = shim_log_jstr(f, sizeof f - 2, len, (const char *)p + 4, tl);
    }
    f[len] = 0;
    shim_log_line(SHIM_LOG_DEBUG, f, "error answer");
    return;
  }
  const char *name = type_name(type);
  k = name ? snprintf(o, cap, ",\"answer\":{\"type\":\"%s\"", name) : snprintf(o, cap, ",\"answer\":{\"type\":%d", type);
  if (type == JDLS_FT_RELEASED && n >= 4) k += snprintf(o + k, cap - (size_t)k, ",\"count\":%u", (unsigned)g32(p));
  if (type == JDLS_FT_GRANTED && n >= 8) k += snprintf(o + k, cap - (size_t)k, ",\"token\":\"%llu\"", (unsigned long long)g64(p));
  if (type == JDLS_FT_LOCKED) {
    o[k++] = ',';
    k += put_holder(o + k, cap - (size_t)k, p, n);
  }
  if (type == JDLS_FT_STATUS_RESULT && n >= 1) k += snprintf(o + k, cap - (size_t)k, ",\"code\":%d", (int)(int8_t)p[0]);
  if (k > 0 && (size_t)k < cap) len += (size_t)k;
  f[len++] = '}';
  f[len] = 0;
  shim_log_line(SHIM_LOG_DEBUG, f, "answer");
}
