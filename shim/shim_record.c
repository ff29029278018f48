/*
 * shim_record.c - classic POSIX record locks (fcntl F_SETLK/F_SETLKW/F_GETLK
 * on a jlock file) emulated in the shm table, with classic semantics.
 *
 * The key of a lock is the lowercase hex text of its byte offset ("1f" for
 * byte 31), in the file (inode, dev) that the lock file's NAME encodes; the
 * owner is the process (shim_owner). Only one-byte ranges are emulated (that
 * is what a runtime takes: one byte per record key); an unlock of
 * (start 0, len 0) - "everything" - releases all of the process's locks in
 * the file. Other ranges fail with EINVAL rather than be half-emulated.
 *
 * Owns: the emulation, the list of lock files this process holds locks in
 * (for close()), the interruptible wait, errno translation.
 */
#undef _FILE_OFFSET_BITS
#define _GNU_SOURCE
#include <errno.h>
#include <linux/futex.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include "shim.h"
#include "../native/common/jdls_proto.h"

/* --- the lock files this process holds (or held) table locks in ---------- */
/* Why: close() of ANY descriptor of a file drops all of the process's
 * classic locks on it (POSIX), so every close() must know whether its fd is
 * such a file. Asking /proc for every close() of every program would cost a
 * readlink each; instead a close() costs nothing while this list is empty,
 * and one fstat() otherwise (compared by the lock file's own st_dev/st_ino,
 * so a descriptor opened through another path still matches).
 * Rule: `files`/`nfiles` only with `mu` held; `nfiles` is also read without
 * it (atomic) for the empty fast path. */
#define MAX_FILES 256
typedef struct held_file {
  dev_t st_dev;
  ino_t st_ino;
  uint64_t inode;  /* the data file, from the lock file's name */
  int64_t dev;
  int remote;      /* the locks are the server's (through the broker) */
} held_file;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static held_file files[MAX_FILES];
static unsigned nfiles;

/* `mu` is taken on the unmasked path (after every grant: a mask change per
 * lock would cost more than the emulated lock). A timer's handler that
 * jumps out of the lock call (the classic lock timeout) at the instant this
 * thread holds it would leave it held, and the process's next lock call
 * would wait for ever (the chaos jump test's table-route hang). So the
 * holder is noted, and the thread's next entry after a jump (shim_recover)
 * unlocks it. The list may be left mid-update by such a jump: an entry
 * appended but not counted, or a removed one still present - a stale entry
 * at worst (a close looks the file up again), never a lost one. Remaining
 * gap: the few instructions between the lock and the note. */
static SHIM_TLS int my_holds_mu;
static void lock_mu(void) {
  pthread_mutex_lock(&mu);
  my_holds_mu = 1;
}
static void unlock_mu(void) {
  my_holds_mu = 0;
  pthread_mutex_unlock(&mu);
}

static int remember_st(const struct stat *stp, uint64_t inode, int64_t dev, int remote) {
  struct stat st = *stp;
  int rc = 0;
  lock_mu();
  unsigned i;
  for (i = 0; i < nfiles; i++)
    if (files[i].st_dev == st.st_dev && files[i].st_ino == st.st_ino) break;
  if (i == nfiles) {
    if (nfiles == MAX_FILES) rc = -1;
    else {
      files[i] = (held_file){st.st_dev, st.st_ino, inode, dev, remote};
      __atomic_store_n(&nfiles, nfiles + 1, __ATOMIC_RELEASE);
    }
  }
  unlock_mu();
  return rc;
}

/* `known`: fd's fstat from the classification (one system call, not two). */
static int remember(int fd, const struct stat *known, struct stat *st, uint64_t inode, int64_t dev, int remote) {
  if (known) *st = *known;
  else if (fstat(fd, st) != 0) return -1;
  return remember_st(st, inode, dev, remote);
}

int shim_record_holds(void) { return __atomic_load_n(&nfiles, __ATOMIC_ACQUIRE) != 0; }

static void on_close_st(const struct stat *stp);

void shim_record_on_close(int fd) {
  if (__atomic_load_n(&nfiles, __ATOMIC_ACQUIRE) == 0) return;
  /* A vfork child (or any child that ran no atfork handler) sees its
   * parent's list: the child holds no classic locks, and releasing here
   * would free the PARENT's (shim_real.c, "vfork"). */
  if (shim_foreign()) return;
  struct stat st;
  if (fstat(fd, &st) != 0) return;
  on_close_st(&st);
}

/* --- closes made by signal handlers ------------------------------------------
 * A handler that runs while its thread is inside the shim may hold nothing
 * the shim needs, or the held-file mutex, or a table group mutex (the
 * interrupted code's): releasing there could deadlock the thread on itself.
 * The handler's close() is noted instead - the file's st_dev/st_ino, taken
 * with fstat (async-signal-safe) before the real close - and released as
 * soon as the thread leaves the shim (SHIM_LEAVE), or at its next entry
 * after a longjmp. Until then the locks stay a little longer than the
 * kernel would keep them: the interrupted call's duration (a F_SETLKW whose
 * handler had SA_RESTART: until it is granted). At most 8 per thread; more
 * are released at the thread's next close() of the file or exit. */
#define MAX_DEFERRED 8
SHIM_TLS int shim_deferred_n;
static SHIM_TLS struct {
  uint64_t dev, ino;
} deferred[MAX_DEFERRED];

void shim_defer_close(int fd) {
  if (__atomic_load_n(&nfiles, __ATOMIC_ACQUIRE) == 0 || shim_in_vfork) return;
  int n = shim_deferred_n;
  if (n >= MAX_DEFERRED) return;
  struct stat st;
  if (syscall(SYS_fstat, fd, &st) != 0) return;
  deferred[n].dev = (uint64_t)st.st_dev;
  deferred[n].ino = (uint64_t)st.st_ino;
  __atomic_signal_fence(__ATOMIC_SEQ_CST);
  shim_deferred_n = n + 1;
}

static void run_deferred(void) {
  while (shim_deferred_n > 0) {
    struct stat st;
    memset(&st, 0, sizeof st);
    st.st_dev = (dev_t)deferred[shim_deferred_n - 1].dev;
    st.st_ino = (ino_t)deferred[shim_deferred_n - 1].ino;
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
    shim_deferred_n--;
    if (!shim_foreign()) on_close_st(&st);
  }
}

static void on_close_st(const struct stat *stp) {
  struct stat st = *stp;
  held_file f;
  int found = 0;
  lock_mu();
  for (unsigned i = 0; i < nfiles; i++) {
    if (files[i].st_dev == st.st_dev && files[i].st_ino == st.st_ino) {
      f = files[i];
      files[i] = files[nfiles - 1];
      __atomic_store_n(&nfiles, nfiles - 1, __ATOMIC_RELEASE);
      found = 1;
      break;
    }
  }
  unlock_mu();
  if (!found) return;
  if (f.remote) {
    shim_answer a;
    shim_broker_call(JDLS_FT_UNLOCK_FILE, f.inode, f.dev, NULL, 0, &a);
    return;
  }
  jdls_owner o;
  shim_owner(&o);
  jdls_unlock_all(shim_table(), &o, 1, f.inode, f.dev);
  shim_info_touch();
}

/* Fork child: it holds no classic locks (POSIX), so it has none to release.
 * Its owner identity differs from the parent's anyway (new pid), so even a
 * stale list could not free the parent's locks - forgetting is tidiness. The
 * mutex is re-initialised: another thread of the parent may have held it at
 * the fork. */
void shim_record_forget(void) {
  pthread_mutex_init(&mu, NULL);
  my_holds_mu = 0;
  nfiles = 0;
}

/* --- errno ---------------------------------------------------------------- */
int shim_errno_of(int rc) {
  switch (rc) {
    case JDLS_CONFLICT: return EAGAIN;
    case JDLS_TIMEOUT: return EINTR;
    /* The kernel's answer to a F_SETLKW that would close a cycle of waiters
     * (fcntl(2)); only requests with JDLS_REQ_BREAK_DEADLOCK get it. */
    case JDLS_DEADLOCK: return EDEADLK;
    case JDLS_E_TABLE_FULL: return ENOLCK;   /* fcntl's "too many locks" */
    case JDLS_E_KEY_TOO_LONG:
    case JDLS_E_ARG: return EINVAL;
    case JDLS_E_SYS: return errno ? errno : EIO;
    default: return ENOLCK;
  }
}

/* --- the interruptible wait ------------------------------------------------ */
static int64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The signals a wait holds back: all but the synchronous faults (blocking
 * those makes a fault in the wait kill the process instead of reaching the
 * caller's handler). glibc keeps its own cancel/setxid signals unblockable. */
static void wait_blocked_set(sigset_t *set) {
  sigfillset(set);
  sigdelset(set, SIGSEGV);
  sigdelset(set, SIGBUS);
  sigdelset(set, SIGFPE);
  sigdelset(set, SIGILL);
  sigdelset(set, SIGTRAP);
  sigdelset(set, SIGSYS);
}

/* shim.h: the masked stretches ("Jump-safe stretches" there). */
void shim_block_signals(sigset_t *caller) {
  sigset_t blocked;
  wait_blocked_set(&blocked);
  pthread_sigmask(SIG_BLOCK, &blocked, caller);
}
void shim_restore_signals(const sigset_t *caller) { pthread_sigmask(SIG_SETMASK, caller, NULL); }

/* Did a signal come during the wait that the caller does not block?
 * 0: none. 1: yes, but none has a handler without SA_RESTART (no handler:
 * ignored, or a stop; SA_RESTART: the kernel restarts F_SETLKW): the wait
 * goes on. 2: a handler without SA_RESTART: the wait must end with EINTR.
 * Only looks; the signals stay pending (blocked) until the caller's mask
 * comes back. */
static int wait_signal_came(const sigset_t *caller) {
  sigset_t pend;
  if (sigpending(&pend) != 0) return 0;
  int came = 0;
  for (int sig = 1; sig < NSIG; sig++) {
    if (sigismember(&pend, sig) != 1 || sigismember(caller, sig) == 1) continue;
    struct sigaction sa;
    if (sigaction(sig, NULL, &sa) != 0) continue;
    if (came < 1) came = 1;
    /* sa_handler aliases sa_sigaction: SIG_DFL/SIG_IGN compare either way. */
    if (sa.sa_handler != SIG_DFL && sa.sa_handler != SIG_IGN && !(sa.sa_flags & SA_RESTART)) came = 2;
  }
  return came;
}

/* Wait for a queued request. JDLS_OK when granted; JDLS_TIMEOUT when a
 * signal handler ran (the request is cancelled: the caller returns EINTR);
 * another rc on error.
 *
 * Why not jdls_lock(): it retries futex_wait on EINTR, so F_SETLKW could
 * never be interrupted and `flock -w`-style timers (SIGALRM without
 * SA_RESTART) would hang.
 *
 * Trap: the wait sleeps one liveness tick at a time (FUTEX_WAIT with a
 * JDLS_LIVENESS_TICK_MS timeout) and checks the holders in between. A
 * signal that arrives between two sleeps - and a thread woken by the tick on
 * a loaded machine waits there, runnable, for milliseconds - used to run its
 * handler in user space; the next FUTEX_WAIT then slept on with nothing
 * pending and the EINTR was lost for good (shim-record's EINTR test failed
 * that way under load). FUTEX_WAIT takes no signal mask, and ppoll, which
 * does, cannot sleep on a futex word. So the whole wait runs with the
 * signals BLOCKED: whenever one arrives it stays pending, and before every
 * sleep sigpending() says whether one came that the caller lets through.
 * Then, for a handler without SA_RESTART, the request is withdrawn FIRST and
 * the caller's mask restored after (the handler runs inside that call, as
 * it would on the kernel's way out of fcntl, with nothing of ours queued);
 * otherwise the mask is restored (the handlers run, an ignored signal is
 * dropped, a stop stops) and the wait goes on, as the kernel restarts
 * F_SETLKW. A blocked signal does not wake the futex: a handler runs at most
 * one tick late, never lost. A grant still wakes the futex at once.
 * (Before, every handler ended the wait: a futex with a timeout returns
 * EINTR even under SA_RESTART, unlike F_SETLKW.) */
static int table_wait_blocked(jdls_table *t, const jdls_ticket *tk, const sigset_t *caller_mask) {
  jdls_header *h = t->hdr;
  uint32_t *state = (uint32_t *)((uint8_t *)h + h->groups_offset +
                                 (uint64_t)tk->group * h->group_size + sizeof(jdls_group) +
                                 (uint64_t)tk->slot * h->entry_size);
  sigset_t blocked, caller = *caller_mask;
  wait_blocked_set(&blocked);
  unsigned ticks = 0;
  int rc;
  for (;;) {
    rc = jdls_wait_poll(t, tk, ++ticks % JDLS_THOROUGH_EVERY == 0 ? JDLS_REAP_THOROUGH
                                                                  : JDLS_REAP_QUICK);
    /* Refused by deadlock detection (a later request closed a cycle through
     * this one, and this one is the youngest that asked to be refused): the
     * entry stays, marked, until its waiter collects the verdict -
     * jdls_wait_cancel frees it. Nothing is held. */
    if (rc == JDLS_DEADLOCK) {
      jdls_wait_cancel(t, tk);
      break;
    }
    if (rc != JDLS_QUEUED) break;
    int64_t until = mono_ms() + JDLS_LIVENESS_TICK_MS;
    for (;;) {
      if (__atomic_load_n(state, __ATOMIC_ACQUIRE) != JDLS_STATE_WAITING) break;
      int came = wait_signal_came(&caller);
      if (came == 2) {
        /* The caller restores its mask after: the handler runs there, with
         * nothing of ours queued (and a jump out of it finds the request
         * still noted: a grant that won the race is released). */
        rc = jdls_wait_cancel(t, tk);
        /* Granted in the meantime: we hold it; succeed rather than lose it. */
        return rc == JDLS_OK ? JDLS_OK : JDLS_TIMEOUT;
      }
      if (came == 1) {
        pthread_sigmask(SIG_SETMASK, &caller, NULL); /* handlers run, a stop stops */
        pthread_sigmask(SIG_BLOCK, &blocked, NULL);
        /* A handler's close() ran here, before the grant: release now what
         * the process held in that file (this thread holds none of the
         * shim's mutexes here). Left for SHIM_LEAVE it would also release
         * the lock granted after it, which the kernel would keep. */
        run_deferred();
        continue;
      }
      int64_t left = until - mono_ms();
      if (left <= 0) break;
      struct timespec ts = {left / 1000, (long)(left % 1000) * 1000000L};
      /* Shared futex (not PRIVATE): the waker is another process. An EINTR
       * here is a stop/continue or SIGKILL's way out: look again. */
      syscall(SYS_futex, state, FUTEX_WAIT, JDLS_STATE_WAITING, &ts, NULL, 0);
    }
  }
  return rc;
}

int shim_table_wait(jdls_table *t, const jdls_ticket *tk) {
  sigset_t caller;
  shim_block_signals(&caller);
  int rc = table_wait_blocked(t, tk, &caller);
  shim_restore_signals(&caller);
  return rc;
}

/* --- a wait abandoned by a longjmp --------------------------------------------
 * The queued request this thread waits for, noted for the length of the
 * wait: a longjmp out of it (shim_real.c, "siglongjmp") never comes back to
 * withdraw it, so the thread's next entry does (shim_recover). Per thread:
 * a thread waits for one request at a time. */
typedef struct pending_wait {
  int active;
  jdls_ticket tk;
  uint64_t inode;
  int64_t dev;
  uint32_t klen;
  uint8_t *key; /* shim_thread_buf(0): not in TLS (shim_real.c) */
} pending_wait;
static SHIM_TLS pending_wait pending;

/* Note tk as this thread's pending request (signals blocked: nothing can
 * jump between the queueing and the note). 0 when it could not be noted. */
static int note_pending(const jdls_ticket *tk, uint64_t inode, int64_t dev, const void *key,
                        uint32_t klen) {
  if (klen > SHIM_THREAD_BUF) klen = SHIM_THREAD_BUF;
  uint8_t *buf = shim_thread_buf(0);
  /* No buffer (out of memory): the wait goes on, without the undo. */
  if (!buf) return 0;
  pending.key = buf;
  pending.tk = *tk;
  pending.inode = inode;
  pending.dev = dev;
  pending.klen = klen;
  memcpy(pending.key, key, klen);
  __atomic_store_n(&pending.active, 1, __ATOMIC_RELAXED);
  __atomic_signal_fence(__ATOMIC_SEQ_CST);
  return 1;
}

static void forget_pending(void) {
  __atomic_signal_fence(__ATOMIC_SEQ_CST);
  __atomic_store_n(&pending.active, 0, __ATOMIC_RELAXED);
}

int shim_table_wait_key(jdls_table *t, const jdls_ticket *tk, uint64_t inode, int64_t dev,
                        const void *key, uint32_t klen) {
  sigset_t caller;
  shim_block_signals(&caller);
  note_pending(tk, inode, dev, key, klen);
  int rc = table_wait_blocked(t, tk, &caller);
  /* Restored while the request is still noted: a handler that runs here
   * and jumps (the caller never saw the grant) has it undone. */
  shim_restore_signals(&caller);
  forget_pending();
  return rc;
}

/* shim.h. The try runs with the caller's signals: it is the uncontended
 * path (a mask change is two system calls, more than the whole pair) and
 * holds the group mutex only for its scan. Everything after it - the
 * queueing jdls_lock_begin, which runs deadlock detection (detect_mutex,
 * then group mutexes one by one, a DFS over the waits-for graph) while the
 * request is about to wait, the wait, the cancel - runs with signals
 * blocked: a jump out of there left a mutex held (every process then waited
 * on the group for ever) or a queued request nobody had noted yet (granted
 * later to a process that did not know it). */
int shim_table_lock_wait(jdls_table *t, const jdls_owner *o, const jdls_request *r, jdls_holder *h,
                         int *waited) {
  jdls_ticket tk;
  jdls_request try = *r;
  try.flags = JDLS_REQ_NOWAIT;
  *waited = 0;
  int rc = jdls_lock_begin(t, o, &try, -1, &tk, h);
  if (rc != JDLS_CONFLICT) return rc;
  sigset_t caller;
  shim_block_signals(&caller);
  *waited = 1;
  rc = jdls_lock_begin(t, o, r, -1, &tk, h);
  int noted = rc == JDLS_QUEUED && note_pending(&tk, r->inode, r->dev, r->key, r->key_len);
  if (rc == JDLS_QUEUED) {
    /* The guide's moments: the record shows the wait at once, and its end
     * (the flusher writes them; nothing here but a store and a wake). */
    shim_info_block();
    rc = table_wait_blocked(t, &tk, &caller);
    shim_info_unblock();
  }
  /* As in shim_table_wait_key: restored while the request is still noted. */
  shim_restore_signals(&caller);
  if (noted) forget_pending();
  return rc;
}

void shim_recover(void) {
  /* Blocked throughout: a second jump out of the undo would leave what the
   * undo itself holds (a group mutex, the broker's mutex). Rare: only after
   * a jump or a handler's close. */
  sigset_t caller;
  shim_block_signals(&caller);
  int abandoned = shim_abandoned;
  shim_abandoned = 0;
  shim_busy++;
  int saved = errno;
  /* First: a jump out of an unmasked table call (F_SETLK, an unlock, the
   * try of F_SETLKW, the C API's calls) may have left a group mutex held -
   * every call on that group, this thread's undo below included, would
   * wait for ever. note_jump released it at the jump; this looks again
   * (nothing of the shim holds one across calls: any held now is
   * abandoned). */
  if (abandoned && my_holds_mu) unlock_mu(); /* the held-file list's (above) */
  if (abandoned && shim_table()->hdr) jdls_release_abandoned(shim_table());
  if (abandoned && pending.active) {
    pending.active = 0;
    /* Withdrawn, or - if it was granted after the jump - released: the
     * program was told nothing and does not know it holds it. */
    if (jdls_wait_cancel(shim_table(), &pending.tk) == JDLS_OK) {
      jdls_owner o;
      shim_owner(&o);
      jdls_unlock(shim_table(), &o, pending.inode, pending.dev, pending.key, pending.klen);
    }
  }
  if (abandoned) shim_broker_recover();
  run_deferred();
  shim_busy--;
  shim_restore_signals(&caller);
  errno = saved;
}

/* --- fcntl on a jlock file --------------------------------------------------- */
static int fail(int e) {
  errno = e;
  return -1;
}

/* The absolute start of fl's range (shim.h). */
int shim_abs_start(int fd, const struct flock *fl, int64_t *out) {
  int64_t base = 0;
  if (fl->l_whence == SEEK_CUR) {
    off_t c = lseek(fd, 0, SEEK_CUR);
    if (c < 0) return -1;
    base = c;
  } else if (fl->l_whence == SEEK_END) {
    struct stat st;
    if (fstat(fd, &st) != 0) return -1;
    base = st.st_size;
  } else if (fl->l_whence != SEEK_SET) {
    errno = EINVAL;
    return -1;
  }
  int64_t s = base + fl->l_start;
  int64_t len = fl->l_len;
  if (len < 0) s += len; /* POSIX: [start+len, start) */
  if (s < 0) {
    errno = EINVAL;
    return -1;
  }
  *out = s;
  return 0;
}

/* The same emulation on the server, through the broker. The file is
 * (inode, -1): device numbers differ between hosts (DESIGN.md). */
static int remote_fcntl(int fd, int cmd, struct flock *fl, uint64_t inode, int64_t start,
                        int64_t len, const char *key, int klen, const struct stat *known) {
  int64_t dev = -1;
  shim_answer a;
  if (cmd == F_SETLK || cmd == F_SETLKW) {
    if (fl->l_type == F_UNLCK) {
      if (len == 0 && start == 0) shim_broker_call(JDLS_FT_UNLOCK_FILE, inode, dev, NULL, 0, &a);
      else if (len != 1) return fail(EINVAL);
      else shim_broker_call_key(JDLS_FT_UNLOCK, JDLS_FF_OFFSET, inode, dev, key, (size_t)klen, &a);
      return 0;
    }
    if (fl->l_type != F_RDLCK && fl->l_type != F_WRLCK) return fail(EINVAL);
    if (len != 1) return fail(EINVAL);
    if (shim_in_vfork) return fail(ENOLCK); /* the connection is the parent's */
    struct stat st;
    if (remember(fd, known, &st, inode, dev, 1) != 0) return fail(ENOLCK);
    /* F_SETLKW: the server refuses (ERROR DEADLOCK -> EDEADLK) a wait that
     * closes a cycle of waiters, as the kernel does (shim_record_fcntl). */
    /* JDLS_FF_OFFSET: the key is the byte's hex; an OS-lock server (or
     * OSLOCKS) locks that byte of the jlock file, where a local program
     * without JDLS locks it in the kernel (docs/shim.md). */
    int rc = shim_broker_lock_key(fl->l_type == F_RDLCK ? 1 : 2, cmd == F_SETLK, cmd == F_SETLKW, 1,
                                  JDLS_FF_OFFSET, inode, dev, key, (size_t)klen, &a);
    if (rc == -EINTR) return fail(EINTR);
    if (a.type == JDLS_FT_GRANTED) {
      /* A close() in another thread during the wait dropped the file from
       * the list: list it again, or the last close would release nothing. */
      if (cmd == F_SETLKW) remember_st(&st, inode, dev, 1);
      return 0;
    }
    if (a.type == JDLS_FT_LOCKED) return fail(EAGAIN);
    return fail(shim_broker_errno(&a));
  }
  /* F_GETLK: the server's probe (STATUS with a mode) looks past this
   * process's own lock, as the kernel does: a reader probing for a write
   * sees the other readers (the table route: jdls_conflict). */
  if (fl->l_type != F_RDLCK && fl->l_type != F_WRLCK) return fail(EINVAL);
  if (len != 1) return fail(EINVAL);
  shim_broker_probe_key(fl->l_type == F_WRLCK ? 2 : 1, JDLS_FF_OFFSET, inode, dev, key, (size_t)klen, &a);
  if (a.type != JDLS_FT_STATUS_RESULT) return fail(shim_broker_errno(&a));
  /* -1 another holds READ (blocks only a write), -2 WRITE, -3 FILELOCK */
  if (a.code <= -2 || (a.code == -1 && fl->l_type == F_WRLCK)) {
    fl->l_type = a.code == -1 ? F_RDLCK : F_WRLCK;
    fl->l_whence = SEEK_SET;
    fl->l_start = start;
    fl->l_len = 1;
    fl->l_pid = (pid_t)a.holder_pid;
    return 0;
  }
  fl->l_type = F_UNLCK;
  return 0;
}

/* The key: lowercase hex of the offset, as "%llx" would write it (snprintf
 * was ~7 % of an emulated lock pair). */
static int hex_key(char out[24], uint64_t v) {
  char tmp[16];
  int n = 0;
  do {
    tmp[n++] = "0123456789abcdef"[v & 15];
    v >>= 4;
  } while (v);
  for (int i = 0; i < n; i++) out[i] = tmp[n - 1 - i];
  out[n] = 0;
  return n;
}

int shim_record_fcntl(int fd, int cmd, struct flock *fl, uint64_t inode, int64_t dev, int remote,
                      const struct stat *known) {
  if (!fl) return fail(EFAULT);
  int64_t start;
  if (shim_abs_start(fd, fl, &start) != 0) return -1;
  int64_t len = fl->l_len < 0 ? -fl->l_len : fl->l_len;
  char key[24];
  int klen = hex_key(key, (uint64_t)start);
  if (remote) return remote_fcntl(fd, cmd, fl, inode, start, len, key, klen, known);
  jdls_table *t = shim_table();
  jdls_owner o;
  shim_owner(&o);

  if (cmd == F_SETLK || cmd == F_SETLKW) {
    if (fl->l_type == F_UNLCK) {
      if (len == 0 && start == 0) {
        jdls_unlock_all(t, &o, 1, inode, dev);
        shim_info_touch();
        return 0;
      }
      if (len != 1) return fail(EINVAL);
      jdls_unlock(t, &o, inode, dev, (const uint8_t *)key, (uint32_t)klen);
      shim_info_touch();
      return 0; /* unlocking an unlocked byte is not an error (POSIX) */
    }
    if (fl->l_type != F_RDLCK && fl->l_type != F_WRLCK) return fail(EINVAL);
    if (len != 1) return fail(EINVAL);
    /* Remember the file BEFORE locking: a close() racing in another thread
     * must find it. A vfork child locks as itself (shim_owner gives its own
     * pid) and records nothing in the list it shares with its parent; it
     * ends in exec or _exit, and its locks are reaped as a dead owner's. */
    struct stat st;
    if (!shim_in_vfork) {
      if (remember(fd, known, &st, inode, dev, 0) != 0) return fail(ENOLCK);
      __atomic_store_n(&shim_used_table, 1, __ATOMIC_RELAXED);
    }
    /* Kernel parity: a F_SETLKW (and lockf(F_LOCK), which is one) that
     * would wait in a cycle of waiters fails with EDEADLK, nothing held -
     * so it asks the table to refuse it then (JDLS_REQ_BREAK_DEADLOCK;
     * the table refuses the youngest flagged waiter of the cycle, which is
     * this request when it closes the cycle, as in the kernel). Programs
     * written for classic locks expect that answer and back off; jBASE
     * runtimes that must wait use the C API without the flag. */
    jdls_request r = {inode, dev, (const uint8_t *)key, (uint32_t)klen,
                      fl->l_type == F_RDLCK ? JDLS_MODE_READ : JDLS_MODE_WRITE,
                      cmd == F_SETLK ? JDLS_REQ_NOWAIT : JDLS_REQ_BREAK_DEADLOCK};
    jdls_ticket tk;
    jdls_holder h;
    int waited = 0;
    int rc = cmd == F_SETLK ? jdls_lock_begin(t, &o, &r, -1, &tk, &h)
                            : shim_table_lock_wait(t, &o, &r, &h, &waited);
    if (waited) {
      /* Trap: a close() of another descriptor of the file, in another
       * thread, while this request waited, took the file off the list (and
       * released what the process held in it, as the kernel does); the
       * grant comes after it. List the file again, or closing its last
       * descriptor would release nothing and the lock would stay until
       * exit. (The kernel's own F_SETLKW has the same order: the lock
       * granted after the close is held, and the next close drops it.) */
      if (rc == JDLS_OK && !shim_in_vfork) remember_st(&st, inode, dev, 0);
    }
    if (rc == JDLS_OK) {
      shim_info_granted();
      return 0;
    }
    if (rc == JDLS_CONFLICT) shim_info_retry();
    return fail(shim_errno_of(rc));
  }

  /* F_GETLK */
  if (fl->l_type != F_RDLCK && fl->l_type != F_WRLCK) return fail(EINVAL);
  if (len != 1) return fail(EINVAL);
  jdls_holder h;
  memset(&h, 0, sizeof h);
  /* POSIX: the first lock of ANOTHER process that would block this request,
   * whatever this process holds itself (jdls_status stops at the caller's
   * own entry: a reader probing for a write would miss the other readers). */
  int rc = jdls_conflict(t, &o, inode, dev, (const uint8_t *)key, (uint32_t)klen,
                         fl->l_type == F_WRLCK ? JDLS_MODE_WRITE : JDLS_MODE_READ, &h);
  if (rc < 0) return fail(shim_errno_of(rc));
  if (rc == 1) {
    fl->l_type = h.mode == JDLS_MODE_WRITE ? F_WRLCK : F_RDLCK;
    fl->l_whence = SEEK_SET;
    fl->l_start = start;
    fl->l_len = 1;
    fl->l_pid = (pid_t)h.owner_pid;
    return 0;
  }
  fl->l_type = F_UNLCK;
  return 0;
}

/* Process exit: the kernel drops classic locks when a process ends; the
 * table would keep ours until a conflicting request or the monitor's tidy-up
 * reaps them (correct, but `jdls -dvL` would list a dead process's locks).
 * A normal exit releases them here; _exit/kill -9 leave them to reaping. */
int shim_used_table;

__attribute__((destructor)) static void release_at_exit(void) {
  if (!__atomic_load_n(&shim_used_table, __ATOMIC_RELAXED)) return;
  /* exit() in a vfork child runs the destructors too: those are the
   * parent's locks. */
  if (shim_foreign()) return;
  shim_busy++;
  jdls_owner o;
  shim_owner(&o);
  jdls_unlock_all(shim_table(), &o, 0, 0, 0);
  shim_busy--;
}
