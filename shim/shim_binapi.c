/*
 * shim_binapi.c - the C API's binary locks (jdls.h): execution locks
 * (jBASE LOCK n / UNLOCK n) and file locks (FILELOCK / FILEUNLOCK).
 *
 * Local (the decision table's "os" for binary locks), the same OS locks
 * src/locks/binary.ts takes, so the two exclude each other:
 *   LOCK n    an OFD write lock on byte n of <binarydir>/jexec, one open
 *             file description per process (the process is the owner);
 *             <binarydir> is $JDLS_BINARY_DIR, else /tmp/jbase_lock.
 *   FILELOCK  an OFD write lock on [0, infinity) of the record-lock file
 *             <lockdir>/jlock_<ino>_<dev>, on the SAME description as the
 *             C API's OS-route record locks of that file: it waits until the
 *             other processes' record locks are gone, then blocks new ones,
 *             and covers this process's own (a second description would
 *             wait for them forever). While it is held, the process's record
 *             locks and unlocks of the file are only recorded, and FILEUNLOCK
 *             gives the kernel back exactly those (shim_api.c, os_file): the
 *             owner keeps its record locks, as in jBASE.
 *             With the monitor running, record locks are in the shm table,
 *             which an OS lock can neither wait for nor block: refused with
 *             -ENOTSUP, as src/locks/binary.ts refuses it (jBASE error 22).
 * On the server (JDLS with BINARY): RANGE_LOCK / RANGE_UNLOCK in the EXEC or
 * FILELOCK space (docs/protocol.md), owner tag = pid, file (inode, -1); the
 * server takes them with src/locks/binary.ts. A FILELOCK there needs the server's
 * OS record-lock mechanism (-ibD without a monitor): under its shm table it
 * is -ENOTSUP (ERROR NOT_SUPPORTED). Waits there are interruptible (EINTR).
 * Not intercepted (LOCK=INTERNAL, an EXTERNAL call): JDLS_NOT_HANDLED.
 * Waits here are not interruptible (as the C API's OS route).
 *
 * Owns: the jexec description. Does not own: the record-lock descriptions
 * (shim_api.c), the decision (shim_route.c).
 */
#undef _FILE_OFFSET_BITS
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "jdls.h"
#include "shim.h"
#include "../native/common/jdls_oslock.h"
#include "../native/common/jdls_proto.h"

#define DEFAULT_BINARY_DIR "/tmp/jbase_lock"

/* Rule: xfd only with xmu held. */
static pthread_mutex_t xmu = PTHREAD_MUTEX_INITIALIZER;
static int xfd = -1;
static char xpath[JDLS_OSL_PATH_MAX]; /* jexec's path, set with xfd */

static int exec_fd(void) {
  pthread_mutex_lock(&xmu);
  int fd = xfd;
  if (fd < 0) {
    const char *dir = getenv("JDLS_BINARY_DIR");
    if (!dir || !*dir) dir = DEFAULT_BINARY_DIR;
    char path[JDLS_OSL_PATH_MAX];
    if ((fd = jdls_osl_ensure_dir(dir)) >= 0) {
      if (snprintf(path, sizeof path, "%s/jexec", dir) >= (int)sizeof path) fd = -ENAMETOOLONG;
      else fd = jdls_osl_open_lock(path, 1);
    }
    if (fd >= 0) {
      memcpy(xpath, path, sizeof xpath);
      xfd = fd = shim_high_fd(fd);
    }
  }
  pthread_mutex_unlock(&xmu);
  return fd;
}

/* jexec holds the LOCK n locks: protected as shim_api.c's descriptions. */
int shim_binapi_owns_fd(int fd) { return fd >= 0 && fd == __atomic_load_n(&xfd, __ATOMIC_RELAXED); }

int shim_binapi_fd(void) { return __atomic_load_n(&xfd, __ATOMIC_RELAXED); }

void shim_binapi_forget(void) {
  pthread_mutex_init(&xmu, NULL);
  if (xfd >= 0) {
    /* The parent's description (and its LOCK n locks): the child is another
     * owner and opens its own. */
    shim_busy++;
    real_close(xfd);
    shim_busy--;
  }
  xfd = -1;
}

/* -1 (go on: local or server), or JDLS_NOT_HANDLED; -ENOLCK in a vfork
 * child: the jexec description, the OS-route descriptions and the broker
 * connection are its parent's (it shares the parent's memory), and locking
 * through them would act as the parent (shim_real.c, "vfork"). */
static int not_local(enum shim_dest d) {
  if (d == SHIM_TO_DRIVER) return JDLS_NOT_HANDLED;
  return shim_in_vfork ? -ENOLCK : -1;
}

/* On the server: RANGE_LOCK in the EXEC or FILELOCK space (docs/protocol.md). */
static int remote_lock(int space, uint64_t inode, int64_t start, int64_t len, int flags,
                       uint32_t *holder_port) {
  shim_answer a;
  int rc = shim_broker_range(JDLS_FT_RANGE_LOCK, space, 2, (flags & JDLS_NOWAIT) != 0, shim_pid(), inode,
                             start, len, &a);
  if (rc) return rc; /* -EINTR */
  if (a.type == JDLS_FT_GRANTED) return JDLS_LOCK_OK;
  if (a.type == JDLS_FT_LOCKED) {
    if (holder_port) *holder_port = a.holder_port;
    return JDLS_LOCK_LOCKED;
  }
  return -shim_broker_errno(&a);
}

static int remote_unlock(int space, uint64_t inode, int64_t start, int64_t len) {
  shim_answer a;
  shim_broker_range(JDLS_FT_RANGE_UNLOCK, space, 0, 0, shim_pid(), inode, start, len, &a);
  if (a.type != JDLS_FT_RELEASED) return -shim_broker_errno(&a);
  return a.count ? JDLS_UNLOCK_OK : JDLS_UNLOCK_NOT_HELD;
}

/* Lock [start, start+len) of the lock file `path` through `fd`, then make
 * sure the name still leads to it (shim_os_after_lock: a kept description
 * of a deleted file locks nothing anyone else sees), bounded. */
static int take(int fd, const char *path, int64_t start, int64_t len, int flags, uint32_t *holder_port) {
  static const int no_cancel = 0;
  for (int attempt = 0;; attempt++) {
    int rc = (flags & JDLS_NOWAIT) ? jdls_osl_setlk(fd, start, len, JDLS_OSL_WRITE)
                                   : jdls_osl_setlkw(fd, start, len, JDLS_OSL_WRITE, &no_cancel);
    if (rc == JDLS_OSL_CONFLICT) {
      if (holder_port) *holder_port = 0; /* OFD holders have no pid/port */
      return JDLS_LOCK_LOCKED;
    }
    if (rc != JDLS_OSL_OK) return rc;
    int c = shim_os_after_lock(fd, path);
    if (c == 1) return rc;
    jdls_osl_setlk(fd, start, len, JDLS_OSL_UNLOCK);
    if (c < 0) return c;
    if (attempt >= 8) return -ESTALE;
  }
}

SHIM_EXPORT int jdls_exec_lock(int n, int flags, int origin, uint32_t *holder_port) {
  if (n < 0 || n > 255) return -EINVAL;
  shim_resolve();
  SHIM_RECOVER();
  SHIM_ENTER();
  enum shim_dest d = shim_route(SHIM_BINARY, origin);
  int rc = not_local(d);
  if (rc == -1 && d == SHIM_TO_SERVER) rc = remote_lock(JDLS_FF_EXEC, 0, n, 1, flags, holder_port);
  else if (rc == -1) {
    int fd = exec_fd();
    rc = fd < 0 ? fd : take(fd, xpath, n, 1, flags, holder_port);
  }
  shim_busy--;
  return rc;
}

SHIM_EXPORT int jdls_exec_unlock(int n, int origin) {
  if (n > 255) return -EINVAL;
  shim_resolve();
  SHIM_RECOVER();
  SHIM_ENTER();
  enum shim_dest d = shim_route(SHIM_BINARY, origin);
  int rc = not_local(d);
  if (rc == -1 && d == SHIM_TO_SERVER) {
    rc = remote_unlock(JDLS_FF_EXEC, 0, n < 0 ? 0 : n, n < 0 ? 0 : 1);
    if (rc > 0) rc = 0;
  } else if (rc == -1) {
    int fd = exec_fd();
    /* n < 0: bare UNLOCK, every execution lock of the process */
    rc = fd < 0 ? fd : jdls_osl_setlk(fd, n < 0 ? 0 : n, n < 0 ? 0 : 1, JDLS_OSL_UNLOCK);
  }
  shim_busy--;
  return rc;
}

SHIM_EXPORT int jdls_file_lock(uint64_t inode, int64_t dev, int flags, int origin, uint32_t *holder_port) {
  shim_resolve();
  SHIM_RECOVER();
  SHIM_ENTER();
  enum shim_dest d = shim_route(SHIM_BINARY, origin);
  int rc = not_local(d);
  if (rc == -1 && d == SHIM_TO_SERVER) rc = remote_lock(JDLS_FF_FILELOCK, inode, 0, 0, flags, holder_port);
  else if (rc == -1) {
    if (shim_route_record(origin) == SHIM_TO_TABLE) rc = -ENOTSUP;
    else {
      int fd = shim_api_os_fd(inode, dev, 1);
      char path[JDLS_OSL_PATH_MAX];
      if (fd >= 0 && (rc = jdls_osl_lock_path(path, sizeof path, shim_lockdir(), inode, dev)) < 0) fd = rc;
      /* Held already: a second take would be a no-op for the kernel, and is for us. */
      if (fd >= 0 && shim_api_os_whole(inode, dev)) rc = JDLS_LOCK_OK;
      else rc = fd < 0 ? fd : take(fd, path, 0, 0, flags, holder_port);
      if (rc == JDLS_LOCK_OK && fd >= 0) shim_api_os_set_whole(inode, dev);
    }
  }
  shim_busy--;
  return rc;
}

SHIM_EXPORT int jdls_file_unlock(uint64_t inode, int64_t dev, int origin) {
  shim_resolve();
  SHIM_RECOVER();
  SHIM_ENTER();
  enum shim_dest d = shim_route(SHIM_BINARY, origin);
  int rc = not_local(d);
  if (rc == -1 && d == SHIM_TO_SERVER) rc = remote_unlock(JDLS_FF_FILELOCK, inode, 0, 0);
  else if (rc == -1) {
    if (shim_route_record(origin) == SHIM_TO_TABLE) rc = -ENOTSUP;
    else {
      int fd = shim_api_os_fd(inode, dev, 0);
      /* Back to exactly the process's record locks of the file (jBASE: the
       * FILELOCK's owner keeps them): shim_api.c, os_file. */
      rc = fd == -ENOENT ? JDLS_UNLOCK_NOT_HELD : fd < 0 ? fd : shim_api_os_reshape(inode, dev);
    }
  }
  shim_busy--;
  return rc;
}
