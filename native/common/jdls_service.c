/*
 * jdls_service.c - when the shm table is the installation's record-lock
 * mechanism, and how every process of the installation comes to agree.
 *
 * The guide: local processes "automatically use the same lock mechanism as
 * the Distributed Lock service". Two mechanisms can hold record locks - the
 * shm table, and OS file locks on <lockdir>/jlock_* files - and a record
 * locked in one is invisible to the other: one lock, two holders. So the
 * choice is the INSTALLATION's, made once and visible to every process:
 *
 *   - The table's header says whether it is in service (jdls_header.
 *     service). A table in service stays the mechanism whether its monitor
 *     runs or not (stopping the monitor only stops tidy-ups); it leaves
 *     service only when it is removed (jdls -K/-Ko retire it first, and
 *     processes that mapped it see RETIRED at their next call).
 *   - Without a table in service, record locks are OS file locks. A process
 *     that takes one registers first: it holds an OFD read lock on the
 *     marker file <table path>.os for the rest of its life (fork children
 *     share the description, exec closes it).
 *   - Putting a table in service needs the marker's write lock, so it
 *     cannot happen while any OS-route process lives: those processes would
 *     keep locking where the table's users never look.
 *
 * The race between a process deciding "OS" and a table entering service is
 * closed by order, as in Dekker's algorithm: the process takes its read
 * lock and THEN looks for a table; the starter creates the table and THEN
 * asks for the write lock. If the process saw no table, its read lock was
 * there before the starter asked, and the starter waits; if it saw one, it
 * drops its read lock and routes to the table (waiting while it is
 * STARTING). The starter holds the write lock only for the instant it
 * flips the state, so a registering process waits at most that long.
 *
 * Owns: the marker, the service state's transitions. Does not own: what a
 * starter does while it waits (src/cli/start.ts names the processes).
 */
#define _GNU_SOURCE
#include "jdls_table.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define ALOAD(p)      __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define ASTORE(p, v)  __atomic_store_n((p), (v), __ATOMIC_RELEASE)

int jdls_marker_path(const char *table_path, char *out, size_t cap) {
  int n = snprintf(out, cap, "%s.os", table_path);
  return (n < 0 || (size_t)n >= cap) ? -1 : n;
}

/* One byte, OFD (not classic) locks: a classic lock would be dropped by any
 * close() of any descriptor of the file in the process, and an OFD lock is
 * shared by fork children exactly as the route decision is. l_pid must be 0. */
static int marker_lock(int fd, short type, int wait) {
  struct flock fl;
  memset(&fl, 0, sizeof fl);
  fl.l_type = type;
  fl.l_whence = SEEK_SET;
  fl.l_start = 0;
  fl.l_len = 1;
  for (;;) {
    if (fcntl(fd, wait ? F_OFD_SETLKW : F_OFD_SETLK, &fl) == 0) return 0;
    if (errno != EINTR) return -1;
  }
}

/* The marker has a predictable name in a world-writable directory, like
 * the table, and root opens it: the same checks (jdls_check_file) on the
 * open descriptor. One difference: any process of the installation may be
 * the first to take the OS route and so create it - a member of the
 * installation's group, not only root or the owner - so a marker of that
 * group is accepted too (only a member can make a file of that group). An
 * outsider's marker was the way to keep every table out of service: hold a
 * read lock on it for ever. -errno; -EPERM for a refused marker or one this
 * user may not open or create with the installation's group (detail in
 * jdls_detail()). */
static int open_marker(const char *table_path, const jdls_trust *trust) {
  char path[300];
  jdls_set_detail("%s", "");
  if (jdls_marker_path(table_path, path, sizeof path) < 0) return -ENAMETOOLONG;
  jdls_trust tr;
  if (trust) tr = *trust;
  else {
    tr.uid = (uint32_t)geteuid();
    tr.gid = (uint32_t)getegid();
  }
  for (int tries = 0;; tries++) {
    int fd = open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0 && errno == ENOENT && tries < 10) {
      /* Create it exclusively, then fix group and mode on the descriptor
       * (0660, the installation's group, whatever the umask); EEXIST: a
       * racing process made it, open that one. */
      fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
      if (fd < 0 && errno == EEXIST) continue;
      if (fd >= 0) {
        struct stat st;
        if (fstat(fd, &st) != 0 || (st.st_gid != (gid_t)tr.gid && fchown(fd, (uid_t)-1, (gid_t)tr.gid) != 0) ||
            fchmod(fd, 0660) != 0) {
          int e = errno;
          jdls_set_detail("cannot give OS-route marker %s the installation's group %u and mode 0660: %s", path,
                          (unsigned)tr.gid, strerror(e));
          unlink(path);
          close(fd);
          return e == EPERM ? -EPERM : -e; /* EPERM: not a member of the group: refused */
        }
      }
    }
    if (fd < 0) {
      int e = errno;
      if (e == EACCES) {
        jdls_set_detail("cannot open OS-route marker %s: permission denied (only root, the installation's owner "
                        "uid %u and members of its group %u may lock records in this installation)",
                        path, (unsigned)tr.uid, (unsigned)tr.gid);
        return -EPERM;
      }
      if (e == ELOOP) {
        jdls_set_detail("OS-route marker %s is a symbolic link: refusing it; remove it (rm %s) and start again", path, path);
        return -EPERM;
      }
      return -e;
    }
    int rc = jdls_check_file(fd, path, "OS-route marker", &tr, 1);
    if (rc != JDLS_OK) {
      close(fd);
      return rc == JDLS_E_UNTRUSTED ? -EPERM : -EIO;
    }
    return fd;
  }
}

int jdls_os_route_register(const char *table_path, const jdls_trust *trust, int min_fd) {
  int fd = open_marker(table_path, trust);
  if (fd < 0) return fd;
  if (min_fd > 0 && fd < min_fd) {
    /* Out of the way of programs that dup2 onto low descriptors. */
    int hi = fcntl(fd, F_DUPFD_CLOEXEC, min_fd);
    if (hi >= 0) {
      close(fd);
      fd = hi;
    }
  }
  if (marker_lock(fd, F_RDLCK, 1) != 0) {
    int e = errno;
    close(fd);
    return -e;
  }
  return fd;
}

uint32_t jdls_table_service(const jdls_table *t) {
  const jdls_header *h = t->hdr;
  uint32_t s = ALOAD(&h->service);
  if (s != JDLS_SERVICE_STARTING) return s;
  uint32_t pid = ALOAD(&h->starter_pid);
  /* A starter that died half-way: nobody will finish. Its table is not the
   * mechanism (the next `jdls -ib` puts it in service, if it can). */
  if (!jdls_pid_alive(pid, h->starter_start, 1)) return JDLS_SERVICE_RETIRED;
  return JDLS_SERVICE_STARTING;
}

int jdls_table_enter_service(jdls_table *t) {
  jdls_header *h = t->hdr;
  if (ALOAD(&h->service) == JDLS_SERVICE_ON) return JDLS_OK;
  /* The starter from now on (a second `jdls -ib` after a first one died);
   * start time first: a reader that pairs the new pid with the old start
   * time judges the starter dead for an instant and routes to the OS,
   * registering - which only makes this attempt wait. */
  uint32_t me = (uint32_t)getpid();
  if (ALOAD(&h->starter_pid) != me) {
    h->starter_start = jdls_pid_start(me);
    ASTORE(&h->starter_pid, me);
  }
  if (ALOAD(&h->service) == JDLS_SERVICE_RETIRED) ASTORE(&h->service, JDLS_SERVICE_STARTING);
  int fd = open_marker(t->path, &t->trust);
  if (fd == -EPERM) return JDLS_E_UNTRUSTED;
  if (fd < 0) {
    errno = -fd;
    return JDLS_E_SYS;
  }
  int rc;
  if (marker_lock(fd, F_WRLCK, 0) == 0) {
    ASTORE(&h->service, JDLS_SERVICE_ON);
    rc = JDLS_OK;
  } else {
    rc = (errno == EAGAIN || errno == EACCES) ? JDLS_CONFLICT : JDLS_E_SYS;
  }
  int e = errno;
  close(fd); /* drops the write lock */
  errno = e;
  return rc;
}

void jdls_table_retire(jdls_table *t) { ASTORE(&t->hdr->service, JDLS_SERVICE_RETIRED); }
