/*
 * shim_route.c - the routing inputs of this process and the decision
 * (DESIGN.md "Routing"). The table itself is data, shim/route-cases.json;
 * jdls_route_decide (native/common/jdls_route.h) implements it, and the
 * TypeScript routeLock (src/route.ts) likewise; test/route.test.ts checks
 * both against every case. Summary:
 *
 *   JDLS set?  monitor active?  record locks      binary locks
 *   no         yes              shm table         OS (untouched)
 *   no         no               OS (untouched)    OS (untouched)
 *   yes        any              the server        OS, or the server with BINARY
 *   (LOCK=INTERNAL|EXTERNAL: an origin not intercepted goes where it would
 *   without JDLS - the local route, or back to an external driver)
 *
 * A lock that belongs to the server goes through the broker
 * (shim_broker.c); if the lock service cannot be reached the process gets
 * the guide's message and exits. It must never run on with local locks
 * believing they are distributed (a warning and OS locks was the first
 * version: rejected as a silent downgrade of locking for every reader who
 * misses stderr).
 *
 * The inputs are gathered once per process, at its first lock call, except
 * one: whether the installation's shm table is in service. That is the
 * installation's state, recorded in the table's header (jdls_service.c
 * says how it changes), never the monitor's liveness - a process that
 * routed by "is the monitor alive?" at its first lock split the
 * installation in two when the monitor stopped or started: processes
 * started afterwards locked records in the other mechanism. Now:
 *   - a table in service is used whether its monitor runs or not; a process
 *     that mapped it sees RETIRED (jdls -K/-Ko) at its next call and turns
 *     to the OS route;
 *   - a process that takes a record lock on the OS route registers first
 *     (jdls_os_route_register): while it lives, no table can enter service;
 *     after registering it looks for a table once more, and if one appeared
 *     it unregisters and uses the table (waiting while it is STARTING).
 * Cost on the hot path: one atomic load of the header's service word.

 * Owns: the decision, the process's table handle, the owner identity.
 */
#undef _FILE_OFFSET_BITS
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>
#include "jdls.h"
#include "shim.h"
#include "../native/common/jdls_route.h"

static pthread_once_t once = PTHREAD_ONCE_INIT;
static jdls_route_in in; /* kind/origin filled per call; table_in_service below */
/* The table is open and in service (atomic: read on every call). */
static int use_table;
static jdls_table table;
static char table_path[256]; /* "" when the installation has no path */
static jdls_trust trust;      /* the installation's (jdls_installation_trust) */
/* A table exists at the installation's name but this process may not use
 * it: refused (not the installation's: jdls_check_file), or not ours to
 * open (EACCES: not a member of the installation's group). Record locks
 * then fail with ENOLCK - never the OS route: the installation's other
 * processes lock in that table, and an OS lock beside it is a second
 * holder of the same record (the first version did exactly that, silently,
 * for every user outside the table's group). Set once, never cleared. */
static int refused;
static char refused_why[600];
static uint32_t port;
/* Transitions of use_table/registration; never held on the hot path. */
static pthread_mutex_t route_mu = PTHREAD_MUTEX_INITIALIZER;
/* The OS-route marker descriptor (registered), or -1. Kept open for the
 * life of the process: its OFD read lock is what keeps a table from
 * entering service while this process may hold OS record locks. */
static int marker_fd = -1;

/* Does the comma-separated JDLS value hold the word `w` (case-insensitive)?
 * With `value`, the item must be `w=...` and its value is copied there. */
static int jdls_item(const char *v, const char *w, char *value, size_t vsize) {
  size_t n = strlen(w);
  for (const char *p = v; *p;) {
    while (*p == ' ' || *p == ',') p++;
    const char *e = p;
    while (*e && *e != ',') e++;
    const char *t = e;
    while (t > p && t[-1] == ' ') t--;
    if (!value && (size_t)(t - p) == n && strncasecmp(p, w, n) == 0) return 1;
    if (value && (size_t)(t - p) > n && strncasecmp(p, w, n) == 0 && p[n] == '=') {
      const char *s = p + n + 1;
      while (s < t && *s == ' ') s++;
      snprintf(value, vsize, "%.*s", (int)(t - s), s);
      return 1;
    }
    p = e;
  }
  return 0;
}

const char *shim_jdls_value(void) { return getenv("JDLS"); }

int shim_jdls_option(const char *word, char *value, size_t vsize) {
  const char *j = getenv("JDLS");
  return j ? jdls_item(j, word, value, vsize) : 0;
}

/* Record the refusal; the line is written at the first record lock it
 * fails (shim_route_record), once per process. */
static void refuse(int rc) {
  const char *d = jdls_detail();
  snprintf(refused_why, sizeof refused_why, "%s", d && *d ? d : jdls_strerror(rc));
  __atomic_store_n(&refused, 1, __ATOMIC_RELEASE);
}

static void decide(void) {
  shim_busy++;
  const char *p = getenv("JBCPORTNO");
  port = p ? (uint32_t)strtoul(p, NULL, 10) : 0;
  const char *j = getenv("JDLS");
  in.lock = JDLS_LOCKOPT_ALL;
  if (j) {
    char v[16];
    in.jdls_set = 1;
    in.binary = jdls_item(j, "BINARY", NULL, 0);
    in.oslocks = jdls_item(j, "OSLOCKS", NULL, 0);
    /* A malformed LOCK= value is the broker's to refuse (parseJdls): here
     * it counts as ALL, so every lock goes to the broker, which says so. */
    if (jdls_item(j, "LOCK", v, sizeof v)) {
      if (strcasecmp(v, "INTERNAL") == 0) in.lock = JDLS_LOCKOPT_INTERNAL;
      else if (strcasecmp(v, "EXTERNAL") == 0) in.lock = JDLS_LOCKOPT_EXTERNAL;
    }
  }
  /* The table only matters without JDLS, or for the origin LOCK= leaves
   * local. */
  if (!in.jdls_set || in.lock != JDLS_LOCKOPT_ALL) {
    char dir[4096];
    if (jdls_release_dir(dir, sizeof dir) < 0) table_path[0] = 0;
    else if (jdls_installation_trust(dir, &trust) != 0 || jdls_table_path(dir, table_path, sizeof table_path) < 0) {
      /* The directory exists but cannot be looked at (EACCES on a parent):
       * whether its table exists is unknowable, so no mechanism is safe. */
      table_path[0] = 0;
      jdls_set_detail("cannot look at the installation directory %s: %s", dir, strerror(errno));
      refuse(JDLS_E_SYS);
    } else {
      int rc = jdls_table_open(table_path, &trust, &table);
      if (rc == JDLS_OK) {
        if (jdls_table_service(&table) != JDLS_SERVICE_RETIRED) __atomic_store_n(&use_table, 1, __ATOMIC_RELEASE);
        else jdls_table_close(&table);
      } else if (rc != JDLS_E_NO_TABLE) {
        refuse(rc);
      }
    }
  }
  shim_busy--;
}

/* The table was retired (or its starter died): from now on the OS route.
 * The mapping stays (another thread may be inside a call on it). */
static void leave_table(void) {
  __atomic_store_n(&use_table, 0, __ATOMIC_RELEASE);
}

/* Does a table in service (or being put in service) exist now? Opens it
 * into `table` if so. route_mu held, use_table 0. */
static int table_appeared(void) {
  if (!table_path[0]) return 0;
  jdls_table t;
  int rc = jdls_table_open(table_path, &trust, &t);
  if (rc != JDLS_OK) {
    if (rc != JDLS_E_NO_TABLE) refuse(rc);
    return 0;
  }
  if (jdls_table_service(&t) == JDLS_SERVICE_RETIRED) {
    jdls_table_close(&t);
    return 0;
  }
  /* The old mapping (a retired table) is left mapped, not reused: a thread
   * may still be reading it. */
  table = t;
  return 1;
}

/* Wait while the table is STARTING (its starter waits for OS-route
 * processes to end, or gives up and retires it). 0: in service; -1: it
 * will not be (the caller takes the OS route). */
static int await_in_service(void) {
  for (;;) {
    uint32_t s = jdls_table_service(&table);
    if (s == JDLS_SERVICE_ON) return 0;
    if (s == JDLS_SERVICE_RETIRED) return -1;
    struct timespec ts = {0, 2 * 1000 * 1000};
    nanosleep(&ts, NULL);
  }
}

/* A record lock is about to go to the OS: register first (see the top of
 * this file), then look for a table again. Returns 1 if the table route
 * applies after all. route_mu held. */
static int register_os_route(void) {
  if (marker_fd >= 0 || !table_path[0]) return 0;
  int fd = jdls_os_route_register(table_path, &trust, 0);
  if (fd == -EPERM) {
    /* The marker is not the installation's (jdls_service.c): refused like
     * a table that is not. */
    refuse(JDLS_E_UNTRUSTED);
    return 0;
  }
  if (fd < 0) {
    /* Cannot register (no /dev/shm, EMFILE): locking on would let a table
     * enter service under this process's OS locks. The guide's rule for a
     * lock service that cannot be had: say so and stop. */
    char why[400];
    snprintf(why, sizeof why, "cannot register for OS record locks (%s): %s", table_path, strerror(-fd));
    shim_server_unreachable(why);
  }
  /* Out of the way of programs that dup2 onto low descriptors, like the
   * shim's other descriptors (an OFD lock belongs to the description, so
   * the copy keeps it). */
  fd = shim_high_fd(fd);
  int appeared = table_appeared();
  if (__atomic_load_n(&refused, __ATOMIC_ACQUIRE)) {
    real_close(fd);
    return 0;
  }
  if (appeared) {
    real_close(fd);
    __atomic_store_n(&use_table, 1, __ATOMIC_RELEASE);
    return 1;
  }
  __atomic_store_n(&marker_fd, fd, __ATOMIC_RELEASE);
  return 0;
}

/* ENOLCK for every record lock from now on, and the reason once. */
static enum shim_dest refused_route(void) {
  static int told;
  if (!__atomic_exchange_n(&told, 1, __ATOMIC_ACQ_REL)) {
    char msg[800];
    int n = snprintf(msg, sizeof msg, "jdls shim: %s; record locks fail with ENOLCK\n", refused_why);
    if (n > (int)sizeof msg - 1) n = (int)sizeof msg - 1;
    ssize_t r = write(2, msg, (size_t)n);
    (void)r;
  }
  return SHIM_REFUSED;
}

enum shim_dest shim_route_record(int origin) {
  enum shim_dest d = shim_route(SHIM_RECORD, origin);
  if ((d == SHIM_TO_OS || d == SHIM_TO_TABLE) && __atomic_load_n(&refused, __ATOMIC_ACQUIRE)) return refused_route();
  if (d == SHIM_TO_TABLE) {
    if (jdls_table_service(&table) == JDLS_SERVICE_ON) return d;
    pthread_mutex_lock(&route_mu);
    if (__atomic_load_n(&use_table, __ATOMIC_ACQUIRE) && await_in_service() != 0) leave_table();
    pthread_mutex_unlock(&route_mu);
    d = shim_route(SHIM_RECORD, origin);
  }
  if (d == SHIM_TO_OS && __atomic_load_n(&marker_fd, __ATOMIC_ACQUIRE) < 0) {
    pthread_mutex_lock(&route_mu);
    int table_now = register_os_route();
    pthread_mutex_unlock(&route_mu);
    if (__atomic_load_n(&refused, __ATOMIC_ACQUIRE)) return refused_route();
    if (table_now) return shim_route_record(origin);
  }
  return d;
}

int shim_route_os_settled(void) {
  if (__atomic_load_n(&refused, __ATOMIC_ACQUIRE)) return 0; /* a record lock must be seen: ENOLCK */
  return __atomic_load_n(&marker_fd, __ATOMIC_ACQUIRE) >= 0 || !table_path[0];
}

int shim_route_owns_fd(int fd) { return fd >= 0 && fd == __atomic_load_n(&marker_fd, __ATOMIC_RELAXED); }

int shim_route_fd(void) { return __atomic_load_n(&marker_fd, __ATOMIC_RELAXED); }

/* Set once decide() has run (shim_route_decided: a signal handler must not
 * wait in pthread_once for the decision its own thread is taking). */
static int decided;
int shim_route_decided(void) { return __atomic_load_n(&decided, __ATOMIC_ACQUIRE); }

enum shim_dest shim_route(enum shim_kind kind, int origin) {
  pthread_once(&once, decide);
  if (!__atomic_load_n(&decided, __ATOMIC_RELAXED)) __atomic_store_n(&decided, 1, __ATOMIC_RELEASE);
  jdls_route_in i = in;
  int t = __atomic_load_n(&use_table, __ATOMIC_ACQUIRE);
  if (t && __atomic_load_n(&table.hdr->service, __ATOMIC_ACQUIRE) == JDLS_SERVICE_RETIRED) {
    /* No mutex: a signal handler comes through here too (routed_while_busy),
     * and leaving is one store. */
    leave_table();
    t = 0;
  }
  i.table_in_service = t;
  i.kind = kind == SHIM_RECORD ? JDLS_KIND_RECORD : JDLS_KIND_BINARY;
  i.origin = origin == JDLS_ORIGIN_EXTERNAL ? JDLS_FROM_EXTERNAL : JDLS_FROM_INTERNAL;
  switch (jdls_route_decide(&i)) {  /* SHIM_REFUSED: shim_route_record's alone */
    case JDLS_DEST_TABLE: return SHIM_TO_TABLE;
    case JDLS_DEST_SERVER: return SHIM_TO_SERVER;
    case JDLS_DEST_DRIVER: return SHIM_TO_DRIVER;
    default: return SHIM_TO_OS;
  }
}

jdls_table *shim_table(void) { return &table; }

void shim_owner(jdls_owner *o) {
  memset(o, 0, sizeof *o);
  /* Classic POSIX locks belong to the PROCESS: every thread is the same
   * owner (tid = pid), so two threads never conflict, as with the kernel's
   * own classic locks. The pid (not a cached copy from before a fork) is
   * what separates a fork child from its parent. */
  o->pid = o->owner_pid = o->owner_tid = shim_pid();
  o->pid_start = shim_pid_start();
  o->port = port;
  o->ip_len = 4; /* 0.0.0.0: local */
}

SHIM_EXPORT int jdls_route(void) {
  enum shim_dest d = shim_route(SHIM_RECORD, JDLS_ORIGIN_INTERNAL);
  return d == SHIM_TO_TABLE ? JDLS_ROUTE_TABLE : d == SHIM_TO_SERVER ? JDLS_ROUTE_SERVER : JDLS_ROUTE_OS;
}
