/*
 * jdls_oslock.h - OS file locks: a general byte-range primitive on Linux
 * open file description (OFD) locks, and the record-lock naming on top of it.
 *
 * Plain C with no Node dependency: the addon (native/addon/oslock.cc), the C
 * fixtures and the preload shim link native/common/jdls_oslock.c, with
 * jdls_table.c (jdls_release_dir: the service's user owns the installation
 * directory, and is trusted to own lock directories and lock files).
 *
 * Divisions of this file (keep them):
 *   1. result codes and constants
 *   2. record-lock naming: lock directory, lock file name, key -> byte
 *   3. the byte-range primitive (open, setlk, interruptible setlkw, getlk)
 *   4. interrupting a blocked wait (the real-time signal)
 *
 * Results: >= 0 are outcomes (JDLS_OSL_*), < 0 are negated errno values
 * (-EACCES, -EMFILE, ...): the caller names them; nothing here prints.
 *
 * Why OFD locks (F_OFD_SETLK/F_OFD_SETLKW/F_OFD_GETLK) and not classic
 * F_SETLK: classic locks belong to the PROCESS, so a lock server hosting many
 * clients in one process could never make two clients conflict, and closing
 * ANY descriptor of the file drops all of the process's locks on it. OFD
 * locks belong to the open file description: two descriptions in one process
 * conflict, a close() of another descriptor does not touch them, and they
 * still conflict with classic locks that ordinary processes take on the same
 * bytes (both are POSIX locks in the kernel's one list per inode). What they
 * give up: F_OFD_GETLK reports an OFD holder as l_pid = -1 (no pid), and the
 * kernel does no deadlock detection for them (no EDEADLK: a cycle waits until
 * a timeout or cancel).
 */
#ifndef JDLS_OSLOCK_H
#define JDLS_OSLOCK_H

#include <stdint.h>
#include <stddef.h>
#include <pthread.h>
#include <signal.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ===== 1. result codes and constants ==================================== */

#define JDLS_OSL_OK        0   /* granted / done / free */
#define JDLS_OSL_CONFLICT  1   /* NOWAIT: someone else holds a conflicting lock */
#define JDLS_OSL_CANCELLED 3   /* a wait was cancelled; nothing was taken */

/* Lock types, as struct flock's l_type on Linux (checked in the .c). */
#define JDLS_OSL_READ   0   /* F_RDLCK: shared */
#define JDLS_OSL_WRITE  1   /* F_WRLCK: exclusive */
#define JDLS_OSL_UNLOCK 2   /* F_UNLCK */

/* The guide's lock directory and its permissions: world-writable and
 * sticky, like /tmp, because every user's jBASE processes create lock files
 * there and nobody may delete another's. */
#define JDLS_OSL_DEFAULT_DIR  "/tmp/jbase"
#define JDLS_OSL_DIR_MODE     01777
/* A lock directory created anywhere else than in a world-writable parent:
 * the service's own (owner, and the jdls group; files keep the group). */
#define JDLS_OSL_PRIVATE_DIR_MODE 02770
/* Lock files are readable and writable by all (a write lock needs a
 * descriptor open for writing), whatever the creator's umask. */
#define JDLS_OSL_FILE_MODE    0666

/* Longest lock file path this code builds. */
#define JDLS_OSL_PATH_MAX 4096

/* A record key's byte lies in [0, 2^62): far below off_t's 2^63 - 1, so a
 * one-byte range never overflows. */
#define JDLS_OSL_KEY_OFFSET_BITS 62

/* What F_OFD_GETLK (or F_GETLK) says about the first conflicting lock. */
typedef struct jdls_osl_holder {
  int type;        /* JDLS_OSL_READ or JDLS_OSL_WRITE */
  int64_t start;
  int64_t len;     /* 0: to the end of the file and beyond */
  int32_t pid;     /* the classic holder's pid; -1 for an OFD holder */
} jdls_osl_holder;

/* ===== 2. record-lock naming ============================================ */

/* Make sure `dir` exists, is a directory and is trusted
 * (jdls_osl_check_dir): create it (one level, regardless of umask) if
 * missing: JDLS_OSL_DIR_MODE (01777) in a world-writable parent such as
 * /tmp, else JDLS_OSL_PRIVATE_DIR_MODE (02770, the parent's group). 0 or -errno (-ENOTDIR: something else is
 * there; -ENOENT: its parent is missing; -EPERM: not trusted). */
int jdls_osl_ensure_dir(const char *dir);

/* Is an existing lock directory trusted? Its owner must be root, the
 * service's user (the owner of the installation directory,
 * jdls_release_dir) or this process's euid, and others may not write to it
 * unless it is sticky (01777). A symlink at `dir` is followed only when its
 * own owner is one of those. 0, -EPERM (not trusted), -ENOTDIR, or -errno
 * of lstat/stat (-ENOENT: missing). */
int jdls_osl_check_dir(const char *dir);

/* "<dir>/jlock_xxxxxxxx_yyyyyyyy": 8 lowercase hex digits of the inode's low
 * 32 bits and 8 of the device's (dev -1 -> ffffffff). Returns the length, or
 * -ENAMETOOLONG if it does not fit in `cap`. */
int jdls_osl_lock_path(char *buf, size_t cap, const char *dir, uint64_t inode, int64_t dev);

/* Does the lock file's name say the file's identity in full? The name keeps
 * the low 32 bits of the inode and of the device (the guide's format), so
 * two files whose inodes (or devices) differ only above bit 32 - XFS and
 * btrfs hand out such inodes - share one lock file. 1 when inode < 2^32 and
 * dev is -1 or < 2^32. */
int jdls_osl_name_exact(uint64_t inode, int64_t dev);

/* A file whose name is not exact puts its identity in front of each key:
 * JDLS_OSL_ID_PREFIX bytes, the inode then the device, each 8 bytes
 * big-endian (the device as two's complement). The prefixed key chooses
 * the byte, so two files sharing a lock file lock different bytes for one
 * key, and a lock owner's registry (native/addon/oslock.cc, keyed by key
 * bytes per description) holds them as different keys. Without it, an
 * owner holding K in both files released both bytes' lock with one release
 * (the registry took the second lock for a re-lock): another owner got K in
 * the first file - locking LESS. Files with exact names keep the plain key,
 * so their bytes are what they always were. */
#define JDLS_OSL_ID_PREFIX 16

/* The byte of a record key of file (inode, dev): a 62-bit hash (jdls_hash.h,
 * the top 62 bits) of the key's bytes - with the identity prefix first when
 * the lock file's name is not exact. Two keys of one file may share a byte;
 * then they conflict when they need not - never the reverse. Pass inode 0,
 * dev 0 for a key that carries its prefix already (the addon's OFD
 * registry, fed by src/locks/oslock.ts). */
uint64_t jdls_osl_key_offset(uint64_t inode, int64_t dev, const uint8_t *key, size_t len);

/* A byte-offset key: a lock on a byte the CALLER names, not a hashed record
 * key - what a lock server takes for a preloaded program's fcntl/lockf on a
 * jlock file (protocol flag OFFSET: the program locks byte X itself, and a
 * local program without JDLS locks byte X in the kernel; a hash of the key
 * text would lock another byte and both would be granted). Its form in the
 * addon's registry (src/locks/oslock.ts offsetKey): exactly
 * JDLS_OSL_OFFSET_KEY_LEN bytes, the offset big-endian in the first 8, zeros
 * after. That length is longer than any record key even with the identity
 * prefix (512 + JDLS_OSL_ID_PREFIX), so no record key is ever taken for one,
 * and the registry keeps it apart from a record key hashing to the same
 * byte. jdls_osl_key_offset returns the offset it carries (any inode/dev:
 * a byte of the lock file is that byte whatever identities share the file). */
#define JDLS_OSL_OFFSET_KEY_LEN (512 + JDLS_OSL_ID_PREFIX + 9)

/* ===== 3. the byte-range primitive ====================================== */

/* Open (creating if `create`, mode JDLS_OSL_FILE_MODE) a lock file for
 * reading and writing: O_CLOEXEC (a child must not share our locks) and
 * O_NOFOLLOW (the directory is world-writable: a planted symlink must not
 * redirect us). Returns the fd or -errno. */
int jdls_osl_open(const char *path, int create);

/* jdls_osl_open for a LOCK file (one that exists only to be locked, in a
 * lock directory), then checked on the descriptor: a regular file with one
 * link and no execute or set-id bits (-EPERM otherwise). As root, a lock
 * file in a sticky directory owned by another user (not root, not the
 * service's user) is taken over (fchown to root) so that user can no longer
 * delete it and split its locks. See jdls_oslock.c, check_file. */
int jdls_osl_open_lock(const char *path, int create);

/* After taking a lock through `fd`: does `path` still name fd's file? 1 yes,
 * 0 no (deleted or replaced before the lock was taken: the lock is on a
 * file nobody else will open; release it, reopen and lock again), -errno. */
int jdls_osl_still_named(int fd, const char *path);

/* Close a descriptor. Closing the last descriptor of an open file
 * description releases all of its OFD locks. */
void jdls_osl_close(int fd);

/* F_OFD_SETLK on [start, start+len) (len 0: to EOF and beyond). type is
 * JDLS_OSL_READ/WRITE/UNLOCK. JDLS_OSL_OK, JDLS_OSL_CONFLICT, or -errno.
 * On the same description a lock converts in place (READ<->WRITE), and an
 * unlock of part of a range splits it (the kernel does POSIX split/merge). */
int jdls_osl_setlk(int fd, int64_t start, int64_t len, int type);

/* F_OFD_SETLKW, interruptible: returns JDLS_OSL_OK when granted,
 * JDLS_OSL_CANCELLED if *cancel was non-zero before the call or became
 * non-zero and the thread was interrupted (jdls_osl_interrupt), or -errno.
 * EINTR alone never ends the wait (only with *cancel set). */
int jdls_osl_setlkw(int fd, int64_t start, int64_t len, int type, const int *cancel);

/* F_OFD_GETLK: JDLS_OSL_OK if a `type` lock on the range could be taken now
 * (locks of this same description never count), JDLS_OSL_CONFLICT with
 * *holder filled, or -errno. */
int jdls_osl_getlk(int fd, int64_t start, int64_t len, int type, jdls_osl_holder *holder);

/* One byte a description holds for its record keys: offset and
 * JDLS_OSL_READ / JDLS_OSL_WRITE. */
typedef struct jdls_osl_byte {
  uint64_t off;
  int type;
} jdls_osl_byte;

/* FILEUNLOCK on a description that holds [0, infinity) WRITE (a FILELOCK)
 * over its own record keys: give the kernel back exactly `bytes` (n of
 * them, sorted here by offset). Each gap between them is unlocked and each
 * READ byte converted in place; WRITE bytes stay. Every call either
 * releases bytes no key holds or downgrades one this description alone
 * holds, so the kernel does it at once and nothing a key holds is let go in
 * between (the trap of "unlock all, re-take the keys": a waiter takes a
 * byte in the gap). JDLS_OSL_OK or -errno (then more stays locked, never
 * less). Used by the lock server (addon) and the shim's C API alike. */
int jdls_osl_reshape(int fd, jdls_osl_byte *bytes, size_t n);

/* ===== 4. interrupting a blocked wait =================================== */

/* Install (once per process; later calls return the same) the no-op
 * handler of the signal used to interrupt a thread blocked in
 * jdls_osl_setlkw, and return that signal's number, or -errno. */
int jdls_osl_signal_init(void);

/* Send the interrupt signal to `thread` (which must block every other
 * signal and unblock this one: see jdls_osl_thread_mask). 0 or -errno. */
int jdls_osl_interrupt(pthread_t thread);

/* Signal masks for a waiter thread: `all` receives a full set (block it in
 * the creating thread around thread creation, so the new thread starts with
 * everything blocked), `only` the set with just the interrupt signal (the
 * new thread unblocks it). */
void jdls_osl_thread_masks(sigset_t *all, sigset_t *only);

#ifdef __cplusplus
}
#endif

#endif /* JDLS_OSLOCK_H */
