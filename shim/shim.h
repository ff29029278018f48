/*
 * shim.h - internal declarations shared by the shim's files (not installed;
 * the public API is jdls.h). One file per concern:
 *   shim_real.c      real_* pointers, recursion guard, cached pid, fork
 *   shim_classify.c  record vs binary: is an fd/path a jlock file
 *   shim_route.c     the routing decision (JDLS? monitor?) and the table
 *   shim_record.c    classic POSIX record locks emulated in the shm table
 *   shim_interpose.c the interposed libc entry points
 *   shim_api.c       the C API of jdls.h
 */
#ifndef JDLS_SHIM_INTERNAL_H
#define JDLS_SHIM_INTERNAL_H

#include <fcntl.h>
#include <stdint.h>
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
/* Resolve the real_* pointers (once). */
void shim_resolve(void);
/* The recursion guard: non-zero while this thread is inside the shim. */
extern SHIM_TLS int shim_busy;
/* This process's pid, cached (reset in the fork child). */
uint32_t shim_pid(void);
uint64_t shim_pid_start(void);
/* Called by the atfork child handler. */
void shim_record_forget(void);
void shim_api_forget(void);

/* --- shim_classify.c ----------------------------------------------------- */
/* The record lock directory: $JDLS_LOCKDIR, else /tmp/jbase, resolved. */
const char *shim_lockdir(void);
/* Is fd open on a jlock file? 1 with *inode and *dev, else 0. */
int shim_classify_fd(int fd, uint64_t *inode, int64_t *dev);

/* --- shim_route.c -------------------------------------------------------- */
enum shim_kind { SHIM_RECORD, SHIM_BINARY };
enum shim_dest { SHIM_TO_OS, SHIM_TO_TABLE, SHIM_TO_SERVER };
/* The one decision table (DESIGN.md "Routing") for this build. `origin` is
 * JDLS_ORIGIN_*; it only matters with JDLS. SHIM_TO_SERVER means the lock
 * belongs to the distributed lock service, which this build cannot reach:
 * the caller must call shim_server_unreachable(). */
enum shim_dest shim_route(enum shim_kind kind, int origin);
/* The guide's behaviour when the lock service cannot be reached: its
 * message on stderr, then the process exits - it never runs on without the
 * locks it was configured to take. Does not return. */
void shim_server_unreachable(void);
/* The installation's table (valid when shim_route gave SHIM_TO_TABLE). */
jdls_table *shim_table(void);
/* This process as a lock owner: (pid, tid = pid, JBCPORTNO). */
void shim_owner(jdls_owner *o);

/* --- shim_record.c ------------------------------------------------------- */
/* F_GETLK/F_SETLK/F_SETLKW on a jlock file, in the table. Returns what fcntl
 * returns (0 / -1 with errno). */
int shim_record_fcntl(int fd, int cmd, struct flock *fl, uint64_t inode, int64_t dev);
/* close(fd): release the process's record locks in fd's file if it is one
 * this process locked in. Cheap when it locked in none. */
void shim_record_on_close(int fd);
/* Wait for a queued table request, interruptibly (JDLS_TIMEOUT = a signal
 * handler ran; the request is cancelled). */
int shim_table_wait(jdls_table *t, const jdls_ticket *tk);
/* Set once this process took a table lock: a normal exit then releases
 * all of its table locks (the destructor in shim_record.c). */
extern int shim_used_table;
/* Translate a jdls_rc to errno (the one place). */
int shim_errno_of(int rc);

#endif
