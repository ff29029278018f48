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
 * The decision is taken ONCE per process, at its first lock call, and kept:
 * a process that started with the table and switched to OS locks when the
 * monitor stopped (or the reverse) would hold half of its locks where other
 * processes no longer look. Rejected: re-checking the monitor per call (a
 * /proc read each time, and the split above).
 *
 * Owns: the decision, the process's table handle, the owner identity.
 */
#undef _FILE_OFFSET_BITS
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include "jdls.h"
#include "shim.h"
#include "../native/common/jdls_route.h"

static pthread_once_t once = PTHREAD_ONCE_INIT;
static jdls_route_in in; /* kind/origin filled per call */
static int use_table;    /* the table is open (the monitor ran at the decision) */
static jdls_table table;
static uint32_t port;

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
  /* The monitor only matters without JDLS, or for the origin LOCK= leaves
   * local. */
  if (!in.jdls_set || in.lock != JDLS_LOCKOPT_ALL) {
    char dir[4096], path[256];
    if (jdls_release_dir(dir, sizeof dir) >= 0 && jdls_table_path(dir, path, sizeof path) >= 0 &&
        jdls_table_open(path, &table) == JDLS_OK) {
      jdls_header *h = table.hdr;
      uint32_t mp = __atomic_load_n(&h->monitor_pid, __ATOMIC_ACQUIRE);
      if (mp && jdls_pid_alive(mp, h->monitor_start, 1)) use_table = 1;
      else jdls_table_close(&table);
    }
  }
  in.monitor_active = use_table;
  shim_busy--;
}

/* Set once decide() has run (shim_route_decided: a signal handler must not
 * wait in pthread_once for the decision its own thread is taking). */
static int decided;
int shim_route_decided(void) { return __atomic_load_n(&decided, __ATOMIC_ACQUIRE); }

enum shim_dest shim_route(enum shim_kind kind, int origin) {
  pthread_once(&once, decide);
  if (!__atomic_load_n(&decided, __ATOMIC_RELAXED)) __atomic_store_n(&decided, 1, __ATOMIC_RELEASE);
  jdls_route_in i = in;
  i.kind = kind == SHIM_RECORD ? JDLS_KIND_RECORD : JDLS_KIND_BINARY;
  i.origin = origin == JDLS_ORIGIN_EXTERNAL ? JDLS_FROM_EXTERNAL : JDLS_FROM_INTERNAL;
  switch (jdls_route_decide(&i)) {
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
