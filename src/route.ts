// route.ts - the routing decision (DESIGN.md "Routing"): where one lock call
// goes. The table is the data file shim/route-cases.json; this function and
// native/common/jdls_route.h (the shim's) implement it, and
// test/route.test.ts checks both against every combination of inputs.
// Change the JSON first, then both. Pure.

export type RouteKind = 'record' | 'binary';
export type RouteOrigin = 'internal' | 'external';
export type LockScope = 'ALL' | 'INTERNAL' | 'EXTERNAL';
/** table: the local shm table in-process; os: the kernel's locks (as without the shim); server: through the broker; driver: not intercepted (the external driver's own handler) */
export type RouteDest = 'table' | 'os' | 'server' | 'driver';

export interface RouteInput {
  /** JDLS is in the environment */
  jdlsSet: boolean;
  /** this installation's shm table is in service (its header says so; not the monitor's liveness) */
  tableInService: boolean;
  kind: RouteKind;
  origin: RouteOrigin;
  /** JDLS has BINARY */
  binary: boolean;
  /** JDLS LOCK= (ALL when not given) */
  lock: LockScope;
  /** JDLS has OSLOCKS: how the server takes the lock, never where it goes */
  osLocks: boolean;
}

/** The destination of one lock call. */
export function routeLock(i: RouteInput): RouteDest {
  const local = (): RouteDest => (i.kind === 'binary' ? 'os' : i.tableInService ? 'table' : 'os');
  if (!i.jdlsSet) return local();
  // LOCK=: an origin that is not intercepted goes where it would have gone
  // without the shim: the driver's own handler, or the runtime's local route.
  if (i.origin === 'external' && i.lock === 'INTERNAL') return 'driver';
  if (i.origin === 'internal' && i.lock === 'EXTERNAL') return local();
  if (i.kind === 'record') return 'server';
  return i.binary ? 'server' : 'os';
}
