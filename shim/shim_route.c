/*
 * shim_route.c - the routing decision of this build (DESIGN.md "Routing").
 *
 *   JDLS set?  monitor active?  record locks      binary locks
 *   no         yes              shm table         OS (untouched)
 *   no         no               OS (untouched)    OS (untouched)
 *   yes        any              OS + a warning    OS (untouched)
 *
 * The last row is this build's stand-in: remote routing (the broker) is not
 * built yet, so with JDLS set every call goes to the OS exactly as without
 * the shim, and the process is told so once on stderr - it must never
 * believe its locks are distributed when they are not.
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
#include <unistd.h>
#include "jdls.h"
#include "shim.h"

static pthread_once_t once = PTHREAD_ONCE_INIT;
static int jdls_set;
static int use_table;
static jdls_table table;
static uint32_t port;

static void warn_remote(void) {
  static const char msg[] =
      "jdls shim: JDLS is set, but remote routing (the broker) is not in this build: "
      "every lock of this process is left to the local OS, NOT distributed\n";
  ssize_t r = write(2, msg, sizeof msg - 1);
  (void)r;
}

static void decide(void) {
  shim_busy++;
  const char *p = getenv("JBCPORTNO");
  port = p ? (uint32_t)strtoul(p, NULL, 10) : 0;
  const char *j = getenv("JDLS");
  if (j) {
    jdls_set = 1;
    warn_remote();
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
  (void)origin; /* LOCK=INTERNAL|EXTERNAL|ALL: only with JDLS (not built) */
  if (kind == SHIM_BINARY) return SHIM_TO_OS;
  pthread_once(&once, decide);
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
