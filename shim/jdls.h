/*
 * jdls.h - the public C API of libjdlsshim.so: jBASE-style record locks for
 * runtimes and database drivers that link against (or dlsym) the shim.
 *
 * Every call names its origin: JDLS_ORIGIN_INTERNAL (the runtime's own lock
 * handler) or JDLS_ORIGIN_EXTERNAL (an external driver's handler). The origin
 * only matters when JDLS is set (LOCK=INTERNAL|EXTERNAL|ALL).
 *
 * Where the locks go (docs/shim.md, the table in shim/route-cases.json):
 *   - JDLS set and the origin intercepted (LOCK=): the lock server, through
 *     the broker (docs/broker.md), file (inode, -1) whatever dev is passed;
 *   - JDLS set, LOCK=INTERNAL and an EXTERNAL call: not handled - the call
 *     returns JDLS_NOT_HANDLED and the driver uses its own lock handler;
 *   - JDLS unset (or LOCK=EXTERNAL and an INTERNAL call), the installation's
 *     lock monitor running: the shm table of $JBCRELEASEDIR, in-process;
 *   - otherwise: OS file locks (OFD) on <lockdir>/jlock_<ino>_<dev>, one open
 *     file description per lock file per process.
 *
 * Owner: the calling PROCESS (jBASE: a port's locks), whatever the thread;
 * a fork child is a different owner and inherits none.
 *
 * Results: >= 0 outcomes, < 0 errors (negative errno values: -EINVAL,
 * -ENOLCK when the lock table is full, -EINTR, ...), or JDLS_NOT_HANDLED.
 *
 * With JDLS set, a lock service that cannot be reached (or a connection to
 * it that is lost) ends the process with the guide's "Client: unable to
 * connect to distributed lock service, locks not enabled" (status 1).
 */
#ifndef JDLS_SHIM_H
#define JDLS_SHIM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define JDLS_ORIGIN_INTERNAL 0   /* the runtime's own lock handler */
#define JDLS_ORIGIN_EXTERNAL 1   /* an external database driver's handler */

#define JDLS_SHARED     1        /* READL */
#define JDLS_EXCLUSIVE  2        /* READU */

/* Every call: not intercepted (JDLS LOCK=INTERNAL, an EXTERNAL call): the
 * caller's own lock handler must take the lock. Not an errno value. */
#define JDLS_NOT_HANDLED (-1000)

#define JDLS_WAIT       0
#define JDLS_NOWAIT     1        /* the LOCKED clause: never queue */
/* jdls_record_lock only, with JDLS_WAIT: if this wait would close a cycle of
 * waiters (a deadlock: record locks in the table or on the server, the
 * table's `deadlock: break` policy), refuse it with JDLS_LOCK_DEADLOCK
 * rather than wait. Without it the call waits whatever happens, as jBASE's
 * READU does (the cycle is only reported: jdls -dvL, the monitor's log).
 * The table refuses the youngest waiter of the cycle that set this flag -
 * the caller that closes the cycle when it set it; an older one otherwise. */
#define JDLS_BREAK_DEADLOCK 2

/* jdls_record_lock outcomes */
#define JDLS_LOCK_OK       0
#define JDLS_LOCK_LOCKED   1     /* NOWAIT: another owner holds it */
#define JDLS_LOCK_DEADLOCK 2     /* JDLS_BREAK_DEADLOCK: the wait was refused, it
                                    was in a cycle of waiters; not granted (a lock
                                    the caller held on the key before stays) */

/* jdls_record_unlock outcomes */
#define JDLS_UNLOCK_OK       0
#define JDLS_UNLOCK_NOT_HELD 1   /* (the OS route cannot tell for a record: it says OK; it can for FILEUNLOCK) */

/* jdls_record_locked results: RECORDLOCKED() */
#define JDLS_RECORD_FREE   0
#define JDLS_RECORD_READ   1     /* negative: held by another owner */
#define JDLS_RECORD_WRITE  2

/* Where this process's C-API locks go (jdls_route). */
#define JDLS_ROUTE_TABLE 1       /* shm table, in-process */
#define JDLS_ROUTE_OS    2       /* OS file locks */
#define JDLS_ROUTE_SERVER 3      /* the lock server, through the broker */

/* Lock record `key` of the file (inode, dev). mode JDLS_SHARED/EXCLUSIVE,
 * flags JDLS_WAIT/JDLS_NOWAIT, | JDLS_BREAK_DEADLOCK. A re-lock by the owner
 * converts in place. On JDLS_LOCK_LOCKED, *holder_port (if not NULL) is the
 * holder's port (SYSTEM(43)); 0 when unknown (the OS route cannot name it).
 * Deadlocks are detected for record locks in the shm table (table route,
 * and a server whose mechanism is its table); not on the OS route nor on an
 * OS-lock server (-ibD), and never for jdls_exec_lock/jdls_file_lock. */
int jdls_record_lock(uint64_t inode, int64_t dev, const void *key, size_t key_len,
                     int mode, int flags, int origin, uint32_t *holder_port);
/* The fencing token of this THREAD's last jdls_record_lock that returned
 * JDLS_LOCK_OK: a number that strictly increases over the grants of one key
 * (and of the whole table; a table made after a restart starts above the
 * last one's), so a resource guarded by the lock can refuse a writer whose
 * token is older than one it has seen (docs/fencing.md). Every grant gets a
 * new one, a READ<->WRITE conversion included; a re-lock in the mode already
 * held keeps (and returns) the lock's token. 0: none - the OS route, an
 * OS-lock server, a server too old to send tokens, or no grant yet. */
uint64_t jdls_record_token(void);
/* Release one key: JDLS_UNLOCK_OK or JDLS_UNLOCK_NOT_HELD (the server
 * route tells too: RELEASED 0). */
int jdls_record_unlock(uint64_t inode, int64_t dev, const void *key, size_t key_len,
                       int origin);
/* Release the caller's locks in one file / everywhere: the number released
 * (the OS route returns 0: it cannot count). */
int jdls_record_unlock_file(uint64_t inode, int64_t dev, int origin);
int jdls_record_unlock_all(int origin);
/* RECORDLOCKED(): JDLS_RECORD_* (negative: another owner; then *holder_port
 * as above). The OS route cannot see the caller's own locks: it reports them
 * as JDLS_RECORD_FREE. */
int jdls_record_locked(uint64_t inode, int64_t dev, const void *key, size_t key_len,
                       int origin, uint32_t *holder_port);
/* JDLS_ROUTE_TABLE, _OS or _SERVER for the runtime's own (INTERNAL) record
 * locks: decided once per process (the first lock call), so one process
 * never splits its locks between two places. */
int jdls_route(void);

/* Binary locks of a runtime (binary locks in the decision table: the OS
 * locally, as src/locks/binary.ts takes them; with JDLS and BINARY the server,
 * through the broker). Local waits are not interruptible. */
/* jBASE LOCK n (0..255), flags JDLS_WAIT / JDLS_NOWAIT (LOCK n ELSE):
 * JDLS_LOCK_OK or JDLS_LOCK_LOCKED (holder port 0: unknown), or -errno. */
int jdls_exec_lock(int n, int flags, int origin, uint32_t *holder_port);
/* jBASE UNLOCK n; n < 0: bare UNLOCK (all of the process's). 0 or -errno. */
int jdls_exec_unlock(int n, int origin);
/* jBASE FILELOCK / FILEUNLOCK of the file (inode, dev): an exclusive lock on
 * the whole record-lock file, so it waits for the other processes' record
 * locks of the file and blocks new ones. -ENOTSUP while the record locks are
 * in a shm table (the local monitor runs, or a shm-table server). Locally,
 * FILEUNLOCK also releases the process's own record locks in the file (one
 * description, docs/shim.md). */
int jdls_file_lock(uint64_t inode, int64_t dev, int flags, int origin, uint32_t *holder_port);
int jdls_file_unlock(uint64_t inode, int64_t dev, int origin);

/* Info records (docs/shim.md "Info records"; the guide's "Distributed Lock
 * Information"): what SHOW-ITEM-LOCKS and list-open-files show for this
 * process. A runtime names the files it opens, so the utilities show the
 * application's file names rather than inodes: call jdls_declare_file when
 * a file is opened (name: its name as the application knows it, e.g. the
 * path or "CUSTOMERS"), and again with name NULL when it is closed. By
 * descriptor (the file's inode and st_dev) or by identity (inode, dev as
 * passed to jdls_record_lock; dev -1 matches any device). At most 500 files
 * are kept: the most recently declared. 0, or -errno (-EBADF). Cheap (no
 * I/O: the record is written later, coalesced), but it blocks signals for
 * a few instructions (two system calls): call it per open, not per lock.
 * Programs that never call it (fcntl through the shim) show the path of a
 * descriptor they have open on the locked file, when there is one. */
int jdls_declare_file(int fd, const char *name);
int jdls_declare_file_id(uint64_t inode, int64_t dev, const char *name);
/* The runtime is about to wait for input or sleep: the record is written
 * now if anything changed (else within 200 ms anyway), and on the server
 * route an INFO frame with moment "idle" is sent. */
void jdls_info_idle(void);

/* Test hook: is `path` a record-lock file (a jlock_<8hex>_<8hex> file in the lock directory)?
 * 1 with *inode and *dev (dev ffffffff -> -1) filled, else 0. */
int jdls_shim_classify_path(const char *path, uint64_t *inode, int64_t *dev);

#ifdef __cplusplus
}
#endif
#endif /* JDLS_SHIM_H */
