/*
 * shim_route.c - the routing decision of this build (DESIGN.md "Routing").
 *
 *   JDLS set?  monitor active?  record locks      binary locks
 *   no         yes              shm table         OS (untouched)
 *   no         no               OS (untouched)    OS (untouched)
 *   yes        any              the server        OS, or the server with BINARY
 *
 * The broker and the server route are not in this build, so a lock that
 * belongs to the server cannot be taken: the process gets the guide's
 * "Client: unable to connect to distributed lock service, locks not
 * enabled" and exits, as jBASE does when the service cannot be reached. It
 * must never run on with local locks believing they are distributed (a
 * warning and OS locks was the first version of this slice: rejected as a
 * silent downgrade of locking for every reader who misses stderr).
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

static pthread_once_t once = PTHREAD_ONCE_INIT;
static int jdls_set;
static int use_table;
static jdls_table table;
static uint32_t port;

static int binary_remote; /* JDLS has BINARY: binary locks go to the server too */

/* Does the comma-separated JDLS value hold the word `w` (case-insensitive)? */
static int jdls_has_word(const char *v, const char *w) {
  size_t n = strlen(w);
  for (const char *p = v; *p;) {
    while (*p == ' ' || *p == ',') p++;
    const char *e = p;
    while (*e && *e != ',') e++;
    const char *t = e;
    while (t > p && t[-1] == ' ') t--;
    if ((size_t)(t - p) == n && strncasecmp(p, w, n) == 0) return 1;
    p = e;
  }
  return 0;
}

void shim_server_unreachable(void) {
  static const char msg[] =
      "Client: unable to connect to distributed lock service, locks not enabled\n"
      "jdls shim: JDLS is set, but this build cannot route locks to the lock service yet "
      "(the broker is not built); unset JDLS to lock locally\n";
  ssize_t r = write(2, msg, sizeof msg - 1);
  (void)r;
  _exit(1);
}

static void decide(void) {
  shim_busy++;
  const char *p = getenv("JBCPORTNO");
  port = p ? (uint32_t)strtoul(p, NULL, 10) : 0;
  const char *j = getenv("JDLS");
  if (j) {
    jdls_set = 1;
    binary_remote = jdls_has_word(j, "BINARY");
  } else {
    char dir[4096], path[256];
    if (jdls_release_dir(dir, sizeof dir) >= 0 && jdls_table_path(dir, path, sizeof path) >= 0 &&
        jdls_table_open(path, &table) == JDLS_OK) {
      jdls_header *h = table.hdr;
      uint32_t mp = __atomic_load_n(&h->monitor_pid, __ATOMIC_ACQUIRE);
      if (mp && jdls_pid_alive(mp, h->monitor_start, 1)) use_table = 1;
      else jdls_table_close(&table);
    }
  }
  shim_busy--;
}

enum shim_dest shim_route(enum shim_kind kind, int origin) {
  (void)origin; /* LOCK=INTERNAL|EXTERNAL|ALL: with the broker (not built) */
  pthread_once(&once, decide);
  if (jdls_set) return kind == SHIM_RECORD || binary_remote ? SHIM_TO_SERVER : SHIM_TO_OS;
  if (kind == SHIM_BINARY) return SHIM_TO_OS;
  return use_table ? SHIM_TO_TABLE : SHIM_TO_OS;
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
  return shim_route(SHIM_RECORD, JDLS_ORIGIN_INTERNAL) == SHIM_TO_TABLE ? JDLS_ROUTE_TABLE
                                                                        : JDLS_ROUTE_OS;
}
