/*
 * jdls_route.h - the routing decision (DESIGN.md "Routing"): where one lock
 * call goes. The table itself is the data file shim/route-cases.json; this
 * function and src/route.ts both implement it, and test/route.test.ts checks
 * both against every combination of inputs (this one through the
 * jdls-routecases program). Change the JSON first, then both.
 *
 * Pure: no environment, no files. The shim (shim/shim_route.c) gathers the
 * inputs once per process.
 */
#ifndef JDLS_ROUTE_H
#define JDLS_ROUTE_H

#define JDLS_DEST_OS     0  /* the kernel's locks: the call as without the shim */
#define JDLS_DEST_TABLE  1  /* the local shm table, in-process */
#define JDLS_DEST_SERVER 2  /* through the broker to the lock server */
#define JDLS_DEST_DRIVER 3  /* not intercepted: the external driver's own handler */

#define JDLS_KIND_RECORD 0
#define JDLS_KIND_BINARY 1

#define JDLS_FROM_INTERNAL 0 /* = JDLS_ORIGIN_INTERNAL of shim/jdls.h */
#define JDLS_FROM_EXTERNAL 1

#define JDLS_LOCKOPT_ALL      0 /* JDLS LOCK=ALL (the default) */
#define JDLS_LOCKOPT_INTERNAL 1
#define JDLS_LOCKOPT_EXTERNAL 2

typedef struct jdls_route_in {
  int jdls_set;       /* JDLS is in the environment */
  int table_in_service; /* the installation's shm table is in service (its header says so) */
  int kind;           /* JDLS_KIND_* */
  int origin;         /* JDLS_FROM_* */
  int binary;         /* JDLS has BINARY */
  int lock;           /* JDLS_LOCKOPT_* */
  int oslocks;        /* JDLS has OSLOCKS: how the server locks, never where */
} jdls_route_in;

static inline int jdls_route_decide(const jdls_route_in *in) {
  if (!in->jdls_set) {
    if (in->kind == JDLS_KIND_BINARY) return JDLS_DEST_OS;
    return in->table_in_service ? JDLS_DEST_TABLE : JDLS_DEST_OS;
  }
  /* LOCK=: a call of an origin that is not intercepted goes where it would
   * have gone without the shim: the driver's own handler (external), or the
   * runtime's local route as without JDLS (internal). */
  if (in->origin == JDLS_FROM_EXTERNAL && in->lock == JDLS_LOCKOPT_INTERNAL) return JDLS_DEST_DRIVER;
  if (in->origin == JDLS_FROM_INTERNAL && in->lock == JDLS_LOCKOPT_EXTERNAL) {
    if (in->kind == JDLS_KIND_BINARY) return JDLS_DEST_OS;
    return in->table_in_service ? JDLS_DEST_TABLE : JDLS_DEST_OS;
  }
  if (in->kind == JDLS_KIND_RECORD) return JDLS_DEST_SERVER;
  return in->binary ? JDLS_DEST_SERVER : JDLS_DEST_OS;
}

#endif /* JDLS_ROUTE_H */
