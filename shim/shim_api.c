/*
 * shim_api.c - the C API of jdls.h: jBASE record locks for runtimes and
 * drivers, on the route this process has (shim_route.c).
 *
 *   table route: straight into the shm table, owner = this process.
 *   server:      through the broker (shim_broker.c), file (inode, -1).
 *   driver:      not intercepted (JDLS LOCK=INTERNAL, an EXTERNAL call):
 *                JDLS_NOT_HANDLED, the driver uses its own handler.
 *   OS route:    OFD locks on <lockdir>/jlock_<ino>_<dev> at the key's byte
 *                (jdls_oslock.c: the same bytes and files the TypeScript OS
 *                mechanism uses, so both exclude each other). One open file
 *                description per lock file per process: OFD locks belong to
 *                the description, so one description = one owner = this
 *                process (threads share it, as with classic locks).
 *
 * Owns: the API, the OS route's descriptor list. Does not own: the decision.
 */
#undef _FILE_OFFSET_BITS
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <fcntl.h>
#include <unistd.h>
#include <pthread.h>
#include <string.h>
#include "jdls.h"
#include "shim.h"
#include "../native/common/jdls_proto.h"
#include "../native/common/jdls_oslock.h"

/* This process's route for a C-API record lock of this origin. */
static enum shim_dest api_route(int origin) { return shim_route_record(origin); }

/* Every C-API record call enters and leaves the same way: resolve the real
 * functions, undo an abandoned call (a longjmp out of a wait), raise the
 * recursion guard (a lock file the OS route opens must
 * not come back in through the interposed calls), and take the route for
 * this origin; api_leave() lowers the guard. */
#define API_ENTER(d, origin)   \
  shim_resolve();               \
  SHIM_RECOVER();               \
  SHIM_ENTER();                 \
  enum shim_dest d = api_route(origin)
/* A vfork child shares its parent's memory: the OS route's descriptions and
 * the broker connection are the parent's (locking through them would act as
 * the parent). It may use the table, as itself (shim_owner). */
#define API_FOREIGN(d) ((d) == SHIM_REFUSED || (shim_in_vfork && (d) != SHIM_TO_TABLE && (d) != SHIM_TO_DRIVER))
static int api_leave(int rc) {
  SHIM_LEAVE();
  return rc;
}

/* The server route's file identity: dev -1, whatever the caller passed
 * (DESIGN.md: device numbers differ between hosts). */
#define REMOTE_DEV ((int64_t)-1)

/* --- the OS route's descriptors --------------------------------------------
 * Rule: `osf`/`nosf` only with `omu` held. */
#define MAX_OS_FILES 256
/*
 * Why the bytes are kept here too, when the kernel holds them: the FILELOCK
 * (shim_binapi.c) is a WRITE lock on [0, infinity) on this SAME description.
 * While it is held, the kernel cannot tell the owner's record locks apart
 * from it: a record unlock of the owner's would cut a hole in the FILELOCK
 * (another process then locks that key while the file is locked), a READ
 * would downgrade that byte of it, and FILEUNLOCK's unlock of everything
 * dropped the owner's record locks with it (two holders of one record: the
 * owner still believes it holds them). So while `whole`, record locks and
 * unlocks change only this list, and FILEUNLOCK hands the kernel back
 * exactly these bytes (shim_api_os_reshape).
 */
typedef struct os_file {
  uint64_t inode;
  int64_t dev;
  int fd;
  int whole;        /* the process holds the FILELOCK of this file */
  jdls_osl_byte *held; /* the keys' bytes held, unordered; malloc'd */
  unsigned nheld, cap;
} os_file;
static pthread_mutex_t omu = PTHREAD_MUTEX_INITIALIZER;
static os_file osf[MAX_OS_FILES];
static unsigned nosf;

/* omu is taken with signals blocked: a C-API call may be one a timer's
 * handler jumps out of (the classic lock timeout), and a jump with omu held
 * - or out of os_note's realloc, which leaves glibc's arena lock held -
 * would hang the process's next call (or malloc) for ever. The holder's
 * mask is kept here, written and read with omu held (no TLS: the shim's
 * initial-exec TLS is small, shim_real.c). */
static sigset_t omu_caller;
static void omu_lock(void) {
  sigset_t c;
  shim_block_signals(&c);
  pthread_mutex_lock(&omu);
  omu_caller = c;
}
static void omu_unlock(void) {
  sigset_t c = omu_caller;
  pthread_mutex_unlock(&omu);
  shim_restore_signals(&c);
}

/* The descriptor for (inode, dev), opened (and the directory created) on
 * first use when `create`. fd >= 0, or -errno (-ENOENT: none and !create). */
int shim_api_os_fd(uint64_t inode, int64_t dev, int create) {
  int fd = -ENOENT;
  omu_lock();
  for (unsigned i = 0; i < nosf; i++)
    if (osf[i].inode == inode && osf[i].dev == dev) {
      fd = osf[i].fd;
      goto out;
    }
  if (!create) goto out;
  if (nosf == MAX_OS_FILES) {
    fd = -ENOLCK;
    goto out;
  }
  char path[JDLS_OSL_PATH_MAX];
  const char *dir = shim_lockdir();
  if ((fd = jdls_osl_ensure_dir(dir)) < 0) goto out;
  if ((fd = jdls_osl_lock_path(path, sizeof path, dir, inode, dev)) < 0) goto out;
  if ((fd = jdls_osl_open_lock(path, 1)) < 0) goto out;
  fd = shim_high_fd(fd);
  osf[nosf] = (os_file){inode, dev, fd, 0, NULL, 0, 0};
  __atomic_store_n(&nosf, nosf + 1, __ATOMIC_RELEASE);
out:
  omu_unlock();
  return fd;
}

/*
 * The trap after every OS-route lock: our description is kept for the life
 * of the process, and the lock file can be deleted meanwhile (by its owner
 * in a shared directory, by a group member in the service's directory, by a
 * tidy-up). A lock taken on a deleted file excludes nobody who opens the
 * name now. So after a grant the name is looked up again; if it no longer
 * leads to our file, the descriptor number is pointed at a fresh
 * description of the file the name leads to (dup3: the number must not
 * change, shim_api_owns_fd reads slots without the mutex) and the caller
 * locks again. Locks this process still held in the old file go with the
 * old description: they were on a file no newcomer opens, so they already
 * excluded nobody new (docs/security.md). Used for jlock files (record
 * locks, FILELOCK) and jexec (LOCK n, shim_binapi.c).
 * 1: still ours; 0: replaced, lock again; -errno.
 */
int shim_os_after_lock(int fd, const char *path) {
  int named = jdls_osl_still_named(fd, path);
  if (named != 0) return named;
  int nfd = jdls_osl_open_lock(path, 1);
  if (nfd < 0) return nfd;
  shim_busy++; /* our own close of the old description, not the program's */
  int rc = real_dup3(nfd, fd, O_CLOEXEC) < 0 ? -errno : 0;
  real_close(nfd);
  shim_busy--;
  return rc;
}

/* Fork child: the child shares the parent's descriptions (and with them
 * the parent's OFD locks), so it must never lock or unlock through them:
 * drop its copies (closing a copy leaves the parent's locks alone; the
 * description lives on in the parent) and start its own on first use. */
void shim_api_forget(void) {
  pthread_mutex_init(&omu, NULL);
  shim_busy++;
  for (unsigned i = 0; i < nosf; i++) {
    real_close(osf[i].fd);
    free(osf[i].held);
    osf[i].held = NULL;
  }
  shim_busy--;
  nosf = 0;
}

/* --- the OS route's record of held bytes (see os_file) ----------------------
 * All with `omu` held. */
static os_file *os_find(uint64_t inode, int64_t dev) {
  for (unsigned i = 0; i < nosf; i++)
    if (osf[i].inode == inode && osf[i].dev == dev) return &osf[i];
  return NULL;
}

/* Record that the byte `off` is held in `type`, or not at all (type < 0).
 * Two keys of one byte (a 62-bit hash collision) are one entry, as they
 * are one lock in the kernel. -ENOMEM if it cannot be recorded. */
static int os_note(os_file *f, uint64_t off, int type) {
  for (unsigned i = 0; i < f->nheld; i++)
    if (f->held[i].off == off) {
      if (type >= 0) f->held[i].type = type;
      else f->held[i] = f->held[--f->nheld];
      return 0;
    }
  if (type < 0) return 0;
  if (f->nheld == f->cap) {
    unsigned cap = f->cap ? 2 * f->cap : 16;
    jdls_osl_byte *h = realloc(f->held, cap * sizeof *h);
    if (!h) return -ENOMEM;
    f->held = h;
    f->cap = cap;
  }
  f->held[f->nheld++] = (jdls_osl_byte){off, type};
  return 0;
}

/* RELEASE of a file's record locks (and of all files', one by one): with
 * the FILELOCK held only the record goes - the FILELOCK stays until
 * FILEUNLOCK, as in jBASE - else the kernel releases the whole file. */
static int os_release_file(os_file *f) {
  if (!f) return 0;
  int rc = f->whole ? JDLS_OSL_OK : jdls_osl_setlk(f->fd, 0, 0, JDLS_OSL_UNLOCK);
  if (rc == JDLS_OSL_OK) f->nheld = 0;
  return rc;
}

/* Whether the process holds the FILELOCK of (inode, dev). */
int shim_api_os_whole(uint64_t inode, int64_t dev) {
  omu_lock();
  os_file *f = os_find(inode, dev);
  int w = f ? f->whole : 0;
  omu_unlock();
  return w;
}

/* The FILELOCK was just granted on the file's description. */
void shim_api_os_set_whole(uint64_t inode, int64_t dev) {
  omu_lock();
  os_file *f = os_find(inode, dev);
  if (f) f->whole = 1;
  omu_unlock();
}

/* FILEUNLOCK: from [0, infinity) WRITE back to exactly the held bytes
 * (jdls_osl_reshape says why nothing held is let go in between).
 * JDLS_UNLOCK_OK, JDLS_UNLOCK_NOT_HELD (no FILELOCK held), or -errno (then
 * more stays locked, never less). */
int shim_api_os_reshape(uint64_t inode, int64_t dev) {
  omu_lock();
  os_file *f = os_find(inode, dev);
  int rc = JDLS_UNLOCK_NOT_HELD;
  if (f && f->whole) {
    rc = jdls_osl_reshape(f->fd, f->held, f->nheld);
    if (rc == JDLS_OSL_OK) {
      f->whole = 0;
      rc = JDLS_UNLOCK_OK;
    }
  }
  omu_unlock();
  return rc;
}

/* Trap: these descriptions hold this process's OS-route record locks (OFD
 * locks belong to the description): a daemon that closes every descriptor,
 * or a close of a reused number, would drop them while the program believes
 * it holds them. Protected like the broker socket (close() reports success
 * and leaves them open). Read without the mutex: a slot is written before
 * `nosf` grows and never changes while the process lives (fork resets). */
int shim_api_owns_fd(int fd) {
  unsigned n = __atomic_load_n(&nosf, __ATOMIC_ACQUIRE);
  for (unsigned i = 0; i < n; i++)
    if (osf[i].fd == fd) return 1;
  return 0;
}

int shim_api_fds(int *out, int max) {
  unsigned n = __atomic_load_n(&nosf, __ATOMIC_ACQUIRE);
  int k = 0;
  for (unsigned i = 0; i < n && k < max; i++) out[k++] = osf[i].fd;
  return k;
}

static int bad_args(const void *key, size_t key_len) {
  return (key_len && !key) || key_len > JDLS_MAX_KEY;
}

/* --- the API ---------------------------------------------------------------- */
/* The fencing token of this thread's last granted jdls_record_lock
 * (jdls_record_token). Per thread, as jdls_last_token in the table: a grant
 * in another thread between this thread's lock and its question must not
 * change the answer. */
static SHIM_TLS uint64_t api_token;

SHIM_EXPORT uint64_t jdls_record_token(void) { return api_token; }

SHIM_EXPORT int jdls_record_lock(uint64_t inode, int64_t dev, const void *key, size_t key_len,
                                 int mode, int flags, int origin, uint32_t *holder_port) {
  if (bad_args(key, key_len) || (mode != JDLS_SHARED && mode != JDLS_EXCLUSIVE)) return -EINVAL;
  API_ENTER(d, origin);
  if (d == SHIM_TO_DRIVER) return api_leave(JDLS_NOT_HANDLED);
  if (API_FOREIGN(d)) return api_leave(-ENOLCK);
  int rc;
  /* The grant's fencing token: 0 unless a table or a server gives one. */
  uint64_t token = 0;
  /* JDLS_BREAK_DEADLOCK only when the caller asks: jBASE's own READU waits
   * whatever happens (a cycle is the operator's to break), unlike fcntl's
   * F_SETLKW, which the kernel refuses with EDEADLK (shim_record.c). */
  int brk = (flags & JDLS_BREAK_DEADLOCK) && !(flags & JDLS_NOWAIT);
  if (d == SHIM_TO_SERVER) {
    shim_answer a;
    rc = shim_broker_lock(mode == JDLS_SHARED ? 1 : 2, flags & JDLS_NOWAIT, brk, 1, inode, REMOTE_DEV, key,
                          key_len, &a);
    if (rc == 0) {
      if (a.type == JDLS_FT_GRANTED) {
        rc = JDLS_LOCK_OK;
        token = a.token;
      } else if (a.type == JDLS_FT_LOCKED) {
        if (holder_port) *holder_port = a.holder_port;
        rc = JDLS_LOCK_LOCKED;
      } else if (a.type == JDLS_FT_ERROR && a.code == JDLS_PE_DEADLOCK) {
        rc = JDLS_LOCK_DEADLOCK;
      } else rc = -shim_broker_errno(&a);
    }
  } else if (d == SHIM_TO_TABLE) {
    jdls_owner o;
    shim_owner(&o);
    jdls_request r = {inode, dev, key, (uint32_t)key_len,
                      mode == JDLS_SHARED ? JDLS_MODE_READ : JDLS_MODE_WRITE,
                      (flags & JDLS_NOWAIT) ? JDLS_REQ_NOWAIT : brk ? JDLS_REQ_BREAK_DEADLOCK : 0};
    jdls_ticket tk;
    jdls_holder h;
    memset(&h, 0, sizeof h);
    if (!shim_in_vfork) __atomic_store_n(&shim_used_table, 1, __ATOMIC_RELAXED);
    int waited;
    /* A waiting lock: a try, then (contended) queue and wait with signals
     * blocked (shim_table_lock_wait says why). */
    rc = (flags & JDLS_NOWAIT) ? jdls_lock_begin(shim_table(), &o, &r, -1, &tk, &h)
                               : shim_table_lock_wait(shim_table(), &o, &r, &h, &waited);
    if (rc == JDLS_OK) {
      /* This thread's last grant in the table is this one: the wait above
       * ends with the grant (jdls_wait_poll/_cancel), nothing locks after. */
      token = jdls_last_token();
      shim_info_granted();
    } else if (rc == JDLS_CONFLICT) {
      shim_info_retry();
      if (holder_port) *holder_port = h.port;
      rc = JDLS_LOCK_LOCKED;
    } else if (rc == JDLS_DEADLOCK) {
      rc = JDLS_LOCK_DEADLOCK;
    } else {
      rc = -shim_errno_of(rc);
    }
  } else {
    int fd = shim_api_os_fd(inode, dev, 1);
    uint64_t off = jdls_osl_key_offset(inode, dev, key, key_len);
    int type = mode == JDLS_SHARED ? JDLS_OSL_READ : JDLS_OSL_WRITE;
    if (fd >= 0) {
      /* Under the process's own FILELOCK: granted, and only recorded (a READ
       * here would downgrade a byte of the FILELOCK: see os_file). */
      omu_lock();
      os_file *f = os_find(inode, dev);
      if (f && f->whole) fd = (rc = os_note(f, off, type)) < 0 ? rc : -EALREADY;
      omu_unlock();
      if (fd == -EALREADY) {
        api_token = 0; /* the OS route gives no token */
        return api_leave(JDLS_LOCK_OK);
      }
    }
    if (fd < 0) rc = fd;
    else {
      static const int no_cancel = 0;
      for (int attempt = 0;; attempt++) {
        rc = (flags & JDLS_NOWAIT) ? jdls_osl_setlk(fd, (int64_t)off, 1, type)
                                   : jdls_osl_setlkw(fd, (int64_t)off, 1, type, &no_cancel);
        if (rc != JDLS_OSL_OK) break;
        char path[JDLS_OSL_PATH_MAX];
        int c = jdls_osl_lock_path(path, sizeof path, shim_lockdir(), inode, dev);
        if (c >= 0) c = shim_os_after_lock(fd, path);
        if (c == 1) break;
        jdls_osl_setlk(fd, (int64_t)off, 1, JDLS_OSL_UNLOCK); /* the old description's, if it is still ours */
        rc = c < 0 ? c : attempt >= 8 ? -ESTALE : 0;
        if (rc < 0) break;
      }
      if (rc == JDLS_OSL_CONFLICT) {
        if (holder_port) *holder_port = 0; /* OFD holders have no pid/port */
        rc = JDLS_LOCK_LOCKED;
      } else if (rc == JDLS_OSL_OK) {
        omu_lock();
        os_file *f = os_find(inode, dev);
        /* Granted but not recorded: a later FILEUNLOCK would drop it. Give it back. */
        if (f && os_note(f, off, type) < 0) {
          jdls_osl_setlk(fd, (int64_t)off, 1, JDLS_OSL_UNLOCK);
          rc = -ENOMEM;
        }
        omu_unlock();
      }
    }
  }
  if (rc == JDLS_LOCK_OK) api_token = token;
  return api_leave(rc);
}

SHIM_EXPORT int jdls_record_unlock(uint64_t inode, int64_t dev, const void *key, size_t key_len,
                                   int origin) {
  if (bad_args(key, key_len)) return -EINVAL;
  API_ENTER(d, origin);
  if (d == SHIM_TO_DRIVER) return api_leave(JDLS_NOT_HANDLED);
  if (API_FOREIGN(d)) return api_leave(-ENOLCK);
  int rc;
  if (d == SHIM_TO_SERVER) {
    shim_answer a;
    shim_broker_call(JDLS_FT_UNLOCK, inode, REMOTE_DEV, key, key_len, &a);
    rc = a.type != JDLS_FT_RELEASED ? -shim_broker_errno(&a)
         : a.count ? JDLS_UNLOCK_OK : JDLS_UNLOCK_NOT_HELD;
  } else if (d == SHIM_TO_TABLE) {
    jdls_owner o;
    shim_owner(&o);
    rc = jdls_unlock(shim_table(), &o, inode, dev, key, (uint32_t)key_len);
    shim_info_touch();
    rc = rc == JDLS_OK ? JDLS_UNLOCK_OK : rc == JDLS_NOT_HELD ? JDLS_UNLOCK_NOT_HELD
                                                              : -shim_errno_of(rc);
  } else {
    int fd = shim_api_os_fd(inode, dev, 0);
    uint64_t off = jdls_osl_key_offset(inode, dev, key, key_len);
    if (fd == -ENOENT) rc = JDLS_UNLOCK_NOT_HELD;
    else if (fd < 0) rc = fd;
    else {
      omu_lock();
      os_file *f = os_find(inode, dev);
      /* Under the FILELOCK the byte stays locked (no hole in it): only the record goes. */
      rc = f && f->whole ? JDLS_UNLOCK_OK : jdls_osl_setlk(fd, (int64_t)off, 1, JDLS_OSL_UNLOCK);
      if (f && rc == JDLS_OSL_OK) os_note(f, off, -1);
      omu_unlock();
    }
  }
  return api_leave(rc);
}

SHIM_EXPORT int jdls_record_unlock_file(uint64_t inode, int64_t dev, int origin) {
  API_ENTER(d, origin);
  if (d == SHIM_TO_DRIVER) return api_leave(JDLS_NOT_HANDLED);
  if (API_FOREIGN(d)) return api_leave(-ENOLCK);
  if (!shim_in_vfork && shim_foreign()) return api_leave(-ENOLCK); /* as unlock_all */
  int rc;
  if (d == SHIM_TO_SERVER) {
    shim_answer a;
    shim_broker_call(JDLS_FT_UNLOCK_FILE, inode, REMOTE_DEV, NULL, 0, &a);
    rc = a.type == JDLS_FT_RELEASED ? (int)a.count : -shim_broker_errno(&a);
  } else if (d == SHIM_TO_TABLE) {
    jdls_owner o;
    shim_owner(&o);
    rc = jdls_unlock_all(shim_table(), &o, 1, inode, dev);
    shim_info_touch();
    if (rc < 0) rc = -shim_errno_of(rc);
  } else {
    int fd = shim_api_os_fd(inode, dev, 0);
    if (fd == -ENOENT || fd < 0) rc = fd == -ENOENT ? 0 : fd;
    else {
      omu_lock();
      rc = os_release_file(os_find(inode, dev));
      omu_unlock();
    }
  }
  return api_leave(rc);
}

SHIM_EXPORT int jdls_record_unlock_all(int origin) {
  API_ENTER(d, origin);
  if (d == SHIM_TO_DRIVER) return api_leave(JDLS_NOT_HANDLED);
  if (API_FOREIGN(d)) return api_leave(-ENOLCK);
  /* A child that ran no atfork handler (raw clone) would release as its
   * parent: the one system call is worth it on this rare call. */
  if (!shim_in_vfork && shim_foreign()) return api_leave(-ENOLCK);
  int rc = 0;
  if (d == SHIM_TO_SERVER) {
    shim_answer a;
    shim_broker_call(JDLS_FT_UNLOCK_ALL, 0, 0, NULL, 0, &a);
    rc = a.type == JDLS_FT_RELEASED ? (int)a.count : -shim_broker_errno(&a);
  } else if (d == SHIM_TO_TABLE) {
    jdls_owner o;
    shim_owner(&o);
    rc = jdls_unlock_all(shim_table(), &o, 0, 0, 0);
    shim_info_touch();
    if (rc < 0) rc = -shim_errno_of(rc);
  } else {
    omu_lock();
    for (unsigned i = 0; i < nosf && rc >= 0; i++) rc = os_release_file(&osf[i]);
    omu_unlock();
  }
  return api_leave(rc);
}

SHIM_EXPORT int jdls_record_locked(uint64_t inode, int64_t dev, const void *key, size_t key_len,
                                   int origin, uint32_t *holder_port) {
  if (bad_args(key, key_len)) return -EINVAL;
  API_ENTER(d, origin);
  if (d == SHIM_TO_DRIVER) return api_leave(JDLS_NOT_HANDLED);
  if (API_FOREIGN(d)) return api_leave(-ENOLCK);
  int rc;
  if (d == SHIM_TO_SERVER) {
    shim_answer a;
    shim_broker_call(JDLS_FT_STATUS, inode, REMOTE_DEV, key, key_len, &a);
    if (a.type != JDLS_FT_STATUS_RESULT) rc = -shim_broker_errno(&a);
    else {
      rc = a.code;
      if (rc < 0 && holder_port) *holder_port = a.holder_port;
    }
  } else if (d == SHIM_TO_TABLE) {
    jdls_owner o;
    jdls_holder h;
    memset(&h, 0, sizeof h);
    shim_owner(&o);
    rc = jdls_status(shim_table(), &o, inode, dev, key, (uint32_t)key_len, &h);
    /* RECORDLOCKED values are -3..3; errors lie below (jdls_table.h). */
    if (rc == -JDLS_RL_READ || rc == -JDLS_RL_WRITE) {
      if (holder_port) *holder_port = h.port;
    } else if (rc < 0) {
      rc = -shim_errno_of(rc);
    }
  } else {
    int fd = shim_api_os_fd(inode, dev, 1);
    uint64_t off = jdls_osl_key_offset(inode, dev, key, key_len);
    if (fd < 0) rc = fd;
    else {
      /* The process's own first (F_GETLK never reports the caller's own
       * description): its FILELOCK (3), its lock of this key (2/1). */
      rc = -1;
      omu_lock();
      os_file *f = os_find(inode, dev);
      if (f && f->whole) rc = 3;
      for (unsigned i = 0; f && rc < 0 && i < f->nheld; i++)
        if (f->held[i].off == off) rc = f->held[i].type == JDLS_OSL_WRITE ? JDLS_RECORD_WRITE : JDLS_RECORD_READ;
      omu_unlock();
      if (rc < 0) {
        jdls_osl_holder h;
        rc = jdls_osl_getlk(fd, (int64_t)off, 1, JDLS_OSL_WRITE, &h);
        if (rc == JDLS_OSL_CONFLICT) {
          if (holder_port) *holder_port = 0;
          /* A WRITE lock from byte 0 to infinity is another process's FILELOCK (-3). */
          rc = h.type == JDLS_OSL_WRITE && h.start == 0 && h.len == 0 ? -3
             : h.type == JDLS_OSL_WRITE ? -JDLS_RECORD_WRITE : -JDLS_RECORD_READ;
        }
      }
    }
  }
  return api_leave(rc);
}
