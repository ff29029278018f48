/*
 * shim.h - internal declarations shared by the shim's files (not installed;
 * the public API is jdls.h). One file per concern:
 *   shim_real.c      real_* pointers, recursion guard, cached pid, fork
 *   shim_classify.c  record vs binary: is an fd/path a jlock file
 *   shim_route.c     the routing decision (JDLS? monitor?) and the table
 *   shim_record.c    classic POSIX record locks emulated in the shm table
 *   shim_interpose.c the interposed libc entry points
 *   shim_api.c       the C API of jdls.h
 *   shim_broker.c    the connection to the broker (remote routes), starting it
 */
#ifndef JDLS_SHIM_INTERNAL_H
#define JDLS_SHIM_INTERNAL_H

#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>
#include "../native/common/jdls_table.h"

#define SHIM_EXPORT __attribute__((visibility("default")))
/* initial-exec: the library is preloaded, so its TLS is static; the default
 * (global-dynamic) model may call malloc on first access - from inside an
 * interposed call that could recurse. */
#define SHIM_TLS __thread __attribute__((tls_model("initial-exec")))

/* --- shim_real.c --------------------------------------------------------- */
typedef int (*fcntl_fn)(int, int, ...);
typedef int (*flock_fn)(int, int);
typedef int (*lockf_fn)(int, int, off_t);
typedef int (*close_fn)(int);
extern fcntl_fn real_fcntl;
extern flock_fn real_flock;
extern lockf_fn real_lockf;
extern close_fn real_close;
/* The implicit closes (shim_interpose.c, "Implicit closes"). */
typedef int (*dup2_fn)(int, int);
typedef int (*dup3_fn)(int, int, int);
typedef int (*close_range_fn)(unsigned, unsigned, int);
typedef void (*closefrom_fn)(int);
typedef int (*fclose_fn)(FILE *);
typedef FILE *(*freopen_fn)(const char *, const char *, FILE *);
extern dup2_fn real_dup2;
extern dup3_fn real_dup3;
extern close_range_fn real_close_range;
extern closefrom_fn real_closefrom;
extern fclose_fn real_fclose;
extern freopen_fn real_freopen;
/* Resolve the real_* pointers (once). */
void shim_resolve(void);
/* The recursion guard: non-zero while this thread is inside the shim. */
extern SHIM_TLS int shim_busy;
/* Non-local exits (shim_real.c, "siglongjmp"): the address of a local in
 * the outermost entry's frame, and set when a longjmp left that frame while
 * the thread was inside the shim (the guard was reset; what the abandoned
 * call left behind - a queued request - is undone at the next entry). */
extern SHIM_TLS uintptr_t shim_entry_sp;
extern SHIM_TLS int shim_abandoned;
/* Closes made by a signal handler while its thread was inside the shim
 * (shim_interpose.c, "Signal handlers"): released when the thread leaves
 * the shim (or at its next entry). */
extern SHIM_TLS int shim_deferred_n;
void shim_defer_close(int fd);
/* Has the route been decided (shim_route's pthread_once done)? */
int shim_route_decided(void);
/* Undo what an abandoned call left (shim_record.c): withdraw its queued
 * table request (releasing it if it was granted meanwhile), and its broker
 * request (shim_broker_recover). */
void shim_recover(void);
/* Every entry point the program calls: first undo an abandoned call, then
 * bypass when already inside (SHIM_INSIDE), else enter (SHIM_ENTER) and
 * leave (SHIM_LEAVE). The entry records a local's address: a longjmp whose
 * target stack pointer lies above it leaves the shim. */
#define SHIM_RECOVER()                                                                  \
  do {                                                                                  \
    if (__builtin_expect(shim_abandoned | (shim_deferred_n && !shim_busy), 0)) shim_recover(); \
  } while (0)
#define SHIM_ENTER()                                                          \
  volatile char shim_entry_mark_;                                             \
  if (shim_busy++ == 0) shim_entry_sp = (uintptr_t)&shim_entry_mark_
#define SHIM_LEAVE()                                                          \
  do {                                                                        \
    if (--shim_busy == 0 && __builtin_expect(shim_deferred_n, 0)) shim_recover(); \
  } while (0)
/* Non-zero in a vfork child (interposed vfork, shim_real.c): it shares the
 * parent's memory, so it must neither act as the parent nor touch its state. */
extern SHIM_TLS int shim_in_vfork;
/* This process's pid, cached (reset in the fork child); a vfork child's own. */
uint32_t shim_pid(void);
uint64_t shim_pid_start(void);
/* 1 when the caller is not the process that owns the shim's state: a vfork
 * child (marked), or any child that ran no atfork handler (getpid differs:
 * one system call). The paths that release state check this. */
int shim_foreign(void);
/* A per-thread heap buffer of SHIM_THREAD_BUF bytes (which 0: the table
 * wait's key, 1: the broker request's key); NULL if malloc failed. Not in a
 * signal handler. */
#define SHIM_THREAD_BUF 512
uint8_t *shim_thread_buf(int which);
/* Move one of the shim's own descriptors to the top of the range
 * (close-on-exec); returns the new number (the old one is closed). */
int shim_high_fd(int fd);
/* Is fd one of the shim's own (the broker socket, the C API's OS-route
 * descriptions, jexec)? close()/close_range()/closefrom() leave those open:
 * closing them would drop this process's locks behind its back. */
int shim_owns_fd(int fd);
int shim_api_owns_fd(int fd);
int shim_binapi_owns_fd(int fd);
/* The descriptors themselves: -1 when none; shim_api_fds fills at most max. */
int shim_broker_fd(void);
int shim_broker_fd2(void); /* the secondary server connection of a pair, or -1 */
int shim_binapi_fd(void);
int shim_api_fds(int *out, int max);
/* Called by the atfork child handler. */
void shim_record_forget(void);
void shim_api_forget(void);

/* --- shim_classify.c ----------------------------------------------------- */
/* The record lock directory: $JDLS_LOCKDIR, else /tmp/jbase, resolved. */
const char *shim_lockdir(void);
/* After an OS-route lock through `fd` (a lock file kept open): 1 if `path`
 * still names its file, 0 if it did not and `fd` now is a fresh description
 * of the file it names (lock again), -errno. shim_api.c. */
int shim_os_after_lock(int fd, const char *path);
/* Is fd open on a jlock file? 1 with *inode and *dev, else 0 (cached per
 * descriptor: shim_classify.c says how the cache stays right).
 * _checked: for a lock or a probe: validated with one fstat (in *st); -1
 * when fd is not open. _trusted: for an unlock: a cached answer as is. */
struct stat;
int shim_classify_fd_checked(int fd, struct stat *st, uint64_t *inode, int64_t *dev);
int shim_classify_fd_trusted(int fd, uint64_t *inode, int64_t *dev);
int shim_classify_fd(int fd, uint64_t *inode, int64_t *dev);
/* A close the shim sees: the descriptor's cached answer goes first. */
void shim_classify_forget(int fd);
void shim_classify_forget_range(unsigned lo, unsigned hi);

/* --- shim_route.c -------------------------------------------------------- */
enum shim_kind { SHIM_RECORD, SHIM_BINARY };
/* SHIM_REFUSED: a record lock this process may not take anywhere (a table
 * exists but is refused or cannot be opened: shim_route.c): ENOLCK. Only
 * shim_route_record returns it. */
enum shim_dest { SHIM_TO_OS, SHIM_TO_TABLE, SHIM_TO_SERVER, SHIM_TO_DRIVER, SHIM_REFUSED };
/* The decision for one call (native/common/jdls_route.h, the table in
 * shim/route-cases.json), on inputs gathered once per process. `origin` is
 * JDLS_ORIGIN_*. SHIM_TO_DRIVER only for JDLS_ORIGIN_EXTERNAL. */
enum shim_dest shim_route(enum shim_kind kind, int origin);
/* shim_route() for a RECORD lock that is about to be taken, released or
 * probed: also waits while the table is being put in service, turns to the
 * OS when it was retired, and registers this process before its first OS
 * record lock (jdls_service.c) - which may turn it to the table after all.
 * Call it rather than shim_route(SHIM_RECORD, ...) wherever a record lock
 * is acted on. */
enum shim_dest shim_route_record(int origin);
/* Nothing more to learn about this process's record route without a look
 * at the descriptor: registered for OS record locks, or no installation. */
int shim_route_os_settled(void);
/* Is fd the OS-route marker descriptor? (close() must not drop it: a table
 * could then enter service under this process's OS record locks.) */
int shim_route_owns_fd(int fd);
/* The marker descriptor, or -1. */
int shim_route_fd(void);
/* The JDLS value (NULL when unset). */
const char *shim_jdls_value(void);
/* An item of JDLS: 1 if the word is there; with `value`, the item must be
 * WORD=... and its value is copied there. */
int shim_jdls_option(const char *word, char *value, size_t vsize);
/* The installation's table (valid when shim_route gave SHIM_TO_TABLE). */
jdls_table *shim_table(void);
/* This process as a lock owner: (pid, tid = pid, JBCPORTNO). */
void shim_owner(jdls_owner *o);

/* --- shim_record.c ------------------------------------------------------- */
/* F_GETLK/F_SETLK/F_SETLKW on a jlock file, in the table (remote 0) or on
 * the server through the broker (remote 1). Returns what fcntl returns
 * (0 / -1 with errno). */
/* `st`: fd's fstat when the caller has it (a lock), else NULL. */
int shim_record_fcntl(int fd, int cmd, struct flock *fl, uint64_t inode, int64_t dev, int remote,
                      const struct stat *st);
/* close(fd): release the process's record locks in fd's file if it is one
 * this process locked in. Cheap when it locked in none. */
void shim_record_on_close(int fd);
/* Does the process hold (or may it hold) emulated locks that a close must
 * release? Cheap (one atomic load each). */
int shim_record_holds(void);
int shim_binary_holds(void);
/* Wait for a queued table request, interruptibly (JDLS_TIMEOUT = a signal
 * handler ran; the request is cancelled). JDLS_DEADLOCK: deadlock detection
 * refused it (its entry is freed; nothing held). */
int shim_table_wait(jdls_table *t, const jdls_ticket *tk);
/* shim_table_wait for a request of key (inode, dev, key): the request is
 * noted as this thread's pending one while it waits, so a longjmp out of the
 * wait does not leave it queued (shim_recover). */
int shim_table_wait_key(jdls_table *t, const jdls_ticket *tk, uint64_t inode, int64_t dev,
                        const void *key, uint32_t klen);
/* A waiting table lock (F_SETLKW, the C API's lock without NOWAIT; r's
 * flags are the queueing request's): a NOWAIT try with the caller's
 * signals, then - contended - the queueing jdls_lock_begin and the wait
 * with signals blocked, the request noted as pending (shim_table_wait_key).
 * *waited: the try did not decide it. Returns as jdls_lock_begin/the wait. */
int shim_table_lock_wait(jdls_table *t, const jdls_owner *o, const jdls_request *r, jdls_holder *h,
                         int *waited);
/* Jump-safe stretches (shim_real.c, "siglongjmp"): block every signal but
 * the synchronous faults, saving the caller's mask; restore it. A handler
 * that would have run in between runs at the restore, where the shim holds
 * nothing half-done. */
#include <signal.h>
void shim_block_signals(sigset_t *caller);
void shim_restore_signals(const sigset_t *caller);
/* Set once this process took a table lock: a normal exit then releases
 * all of its table locks (the destructor in shim_record.c). */
extern int shim_used_table;
/* The absolute start of a struct flock's range (l_whence, negative l_len
 * as POSIX says); 0, or -1 with errno. */
int shim_abs_start(int fd, const struct flock *fl, int64_t *out);
/* Translate a jdls_rc to errno (the one place). */
int shim_errno_of(int rc);

/* --- shim_api.c / shim_binapi.c -------------------------------------------- */
/* The C API's OS-route description for the lock file of (inode, dev), opened
 * on first use when `create`: fd, or -errno (-ENOENT: none and !create). */
int shim_api_os_fd(uint64_t inode, int64_t dev, int create);
/* The FILELOCK on the OS route (shim_api.c, os_file): whether it is held;
 * it was just granted; FILEUNLOCK back to exactly the process's record
 * locks (JDLS_UNLOCK_OK, JDLS_UNLOCK_NOT_HELD or -errno). */
int shim_api_os_whole(uint64_t inode, int64_t dev);
void shim_api_os_set_whole(uint64_t inode, int64_t dev);
int shim_api_os_reshape(uint64_t inode, int64_t dev);
/* Fork child: drop the parent's jexec description. */
void shim_binapi_forget(void);

/* --- shim_broker.c ------------------------------------------------------- */
/* The guide's behaviour when the lock service cannot be reached: its
 * message on stderr (and `why` on a second line), then the process exits
 * with status 1 - it never runs on without the locks it was configured to
 * take. Does not return. */
void shim_server_unreachable(const char *why) __attribute__((noreturn));
/* A final answer from the broker (the server's, forwarded). */
typedef struct shim_answer {
  int type;            /* JDLS_FT_GRANTED, _LOCKED, _RELEASED, _STATUS_RESULT, _ERROR */
  uint32_t count;      /* RELEASED */
  int code;            /* STATUS_RESULT: RECORDLOCKED -3..3; ERROR: JDLS_PE_* */
  int holder_mode;     /* LOCKED / STATUS_RESULT < 0: 1 read, 2 write */
  uint32_t holder_port;
  uint32_t holder_pid; /* the holding client process (owner_pid) */
  int64_t range_start; /* RANGE_RESULT: the conflicting range */
  int64_t range_len;
  uint64_t token;      /* GRANTED (and STATUS_RESULT when tokens were
                          negotiated): the fencing token, 0 = none */
} shim_answer;
/* LOCK (mode 1 read / 2 write) through the broker. 0 with *a filled; -EINTR
 * when `interruptible` and a signal handler ran during the wait (the request
 * was withdrawn with CANCEL and not granted). `break_deadlock`: LOCK flag
 * BREAK_DEADLOCK (a wait that would close a cycle of waiters is refused:
 * ERROR DEADLOCK). Exits the process (unreachable) when the broker cannot be
 * reached or the connection is lost. */
int shim_broker_lock(int mode, int nowait, int break_deadlock, int interruptible, uint64_t inode,
                     int64_t dev, const void *key, size_t klen, shim_answer *a);
/* UNLOCK / UNLOCK_FILE / UNLOCK_ALL / STATUS (JDLS_FT_*; key only for UNLOCK
 * and STATUS). 0 with *a filled; exits as above. */
/* F_GETLK on the server: STATUS with a probe mode (1 READ, 2 WRITE): the
 * answer's code is -1/-2 with the first lock of ANOTHER owner that blocks
 * it (past this process's own), or 0. */
int shim_broker_probe(int mode, uint64_t inode, int64_t dev, const void *key, size_t klen, shim_answer *a);
int shim_broker_call(int type, uint64_t inode, int64_t dev, const void *key, size_t klen,
                     shim_answer *a);
/* The same three with key flags: JDLS_FF_OFFSET for the fcntl/lockf
 * emulation on a jlock file (the key is hex of the byte the program locked:
 * an OS-lock server locks that very byte, as a local program without JDLS
 * does in the kernel), 0 for a record key (hashed to its byte). */
int shim_broker_lock_key(int mode, int nowait, int break_deadlock, int interruptible, int kflags,
                         uint64_t inode, int64_t dev, const void *key, size_t klen, shim_answer *a);
int shim_broker_call_key(int type, int kflags, uint64_t inode, int64_t dev, const void *key, size_t klen,
                         shim_answer *a);
int shim_broker_probe_key(int mode, int kflags, uint64_t inode, int64_t dev, const void *key, size_t klen,
                          shim_answer *a);
/* errno for an ERROR answer. */
/* Undo this thread's abandoned broker request (a longjmp out of its wait):
 * CANCEL it, and release it if it was granted; give up the reader role and
 * the mutex if the thread had them. */
void shim_broker_recover(void);
int shim_broker_errno(const shim_answer *a);
/* RANGE_LOCK (mode 1/2) / RANGE_UNLOCK / RANGE_TEST through the broker;
 * `space` 0 (byte ranges), JDLS_FF_EXEC (LOCK n) or JDLS_FF_FILELOCK; `tag`
 * is the owner tag (tid). Results as shim_broker_lock/_call; a RANGE_TEST
 * conflict is in *a (holder_*, and range_start/range_len). */
int shim_broker_range(int type, int space, int mode, int nowait, uint32_t tag, uint64_t inode,
                      int64_t start, int64_t len, shim_answer *a);
/* Is fd the broker socket? (close() must not close it under us: the
 * server would release every lock of this process.) */
int shim_broker_owns_fd(int fd);
/* Fork child: drop the parent's connection (the child is another owner). */
void shim_broker_forget(void);

/* --- shim_binary.c ------------------------------------------------------- */
/* JDLS with BINARY: classic POSIX locks (fcntl/lockf) on any file that is
 * not a jlock file, and flock(), on the server as byte ranges. Return what
 * the libc call returns (0 / -1 with errno). */
int shim_binary_fcntl(int fd, int cmd, struct flock *fl);
int shim_binary_flock(int fd, int op);
/* close(fd): the process's classic binary locks on fd's file, and fd's
 * flock lock, are released on the server. Cheap when it holds none. */
void shim_binary_on_close(int fd);
void shim_binary_forget(void);

/* --- shim_info.c ----------------------------------------------------------- */
/* This process's info record (direct table route; docs/shim.md "Info
 * records"). shim_info_word: the flusher's futex word. */
#define SHIM_INFO_DIRTY  1u  /* changed since the last write (records off: set for ever) */
#define SHIM_INFO_URGENT 2u  /* a moment (start, block, unblock, idle): write at once */
#define SHIM_INFO_ASLEEP 4u  /* the flusher sleeps until a change wakes it */
extern uint32_t shim_info_word;
extern uint64_t shim_info_locks, shim_info_waits, shim_info_wait_ms, shim_info_retries;
void shim_info_changed(void);
/* A table lock, unlock or release of this process: one load while the
 * record is already marked (the hot path); async-signal-safe. */
static inline void shim_info_touch(void) {
  if (__builtin_expect(__atomic_load_n(&shim_info_word, __ATOMIC_RELAXED) & SHIM_INFO_DIRTY, 1)) return;
  shim_info_changed();
}
/* A grant / a NOWAIT conflict (InfoStats locks / retries; plain increments). */
static inline void shim_info_granted(void) {
  __atomic_store_n(&shim_info_locks, __atomic_load_n(&shim_info_locks, __ATOMIC_RELAXED) + 1, __ATOMIC_RELAXED);
  shim_info_touch();
}
static inline void shim_info_retry(void) {
  __atomic_store_n(&shim_info_retries, __atomic_load_n(&shim_info_retries, __ATOMIC_RELAXED) + 1, __ATOMIC_RELAXED);
  shim_info_touch();
}
/* About to block on a table lock (queued) / the wait ended: written at once. */
void shim_info_block(void);
void shim_info_unblock(void);
/* Fork child (atfork): the parent's record and flusher are not the child's. */
void shim_info_forget(void);
/* The ClientInfo JSON of an INFO frame (malloc'd, or NULL), at most `max`
 * bytes: the most recently declared files that fit. */
char *shim_info_client_json(const char *moment, size_t max);
/* JDLS_INFO=0: no records and no INFO frames. */
int shim_info_disabled(void);
/* shim_broker.c: the server route's INFO frames. Files were declared (idle
 * 0) / the runtime is about to wait for input (idle 1): an INFO frame is
 * due (sent at the next request, or at once when idle). */
void shim_info_remote_changed(int idle);
void shim_info_remote_forget(void);

/* --- shim_log.c ---------------------------------------------------------- */
/* The trace (JDLS VERBOSE: stderr; TRACE=file: that file) and the
 * communication errors (always: $JBCRELEASEDIR/tmp/jbase_error_trace) of a
 * preloaded program, as the library writes them (docs/shim.md, "Trace and
 * errors"). Lines are preformatted and written with write(2). */
#define SHIM_LOG_DEBUG 20
#define SHIM_LOG_ERROR 50
/* Read VERBOSE/TRACE/JBCRELEASEDIR once (the first connection). */
void shim_log_init(void);
/* Is the trace on (VERBOSE or TRACE)? */
int shim_log_tracing(void);
/* One line: `fields` is JSON members without braces ("\"id\":3") or NULL. */
void shim_log_line(int level, const char *fields, const char *msg);
/* A JSON string of n bytes appended at b[len] (cap bytes); the new length. */
size_t shim_log_jstr(char *b, size_t cap, size_t len, const char *p, size_t n);
/* The trace of a request frame (whole, with its header) and of an answer. */
void shim_log_request(const char *server, const uint8_t *frame, size_t n);
void shim_log_answer(const char *server, int type, uint32_t id, const uint8_t *body, size_t n);

#endif
