// store-protocol.ts - the guarded-value store's wire format and log record,
// shared by the store (store.ts), its Node client (store-client.ts), the C
// fixture (fixtures/chaos-shim.c speaks the same lines) and the checker.
//
// The store is a separate process on a Unix socket in the run directory:
// pathname sockets are reachable from every network namespace (namespaces
// do not change the file system), so clients on every simulated host use
// one store, and a cut link never cuts the store (the store stands for the
// shared database; cutting it is not a fault this suite injects).
//
// Requests, one line each, answered with one line, in order:
//   R <client> <key> <token>           read the value            -> "V <value>" | "X <max token>"
//   W <client> <key> <token> <value>   write the value           -> "OK" | "X <max token>"
// <token> is the decimal fencing token; 0 = the client's path gives none.
// A fenced store refuses (X) a read or write whose token is below the
// highest token it has seen for the key (Kleppmann's fencing: reads carry
// the token too, so a new holder's first read already shuts out the old
// holder's late write); token 0 is never refused and never raises the
// bound. An "ignore" store (the checker's teeth) accepts everything.
export const STORE_SOCKET = 'store.sock';
export const STORE_LOG = 'store.jsonl';

export type StoreMode = 'fenced' | 'ignore';

/** One handled request, in the store's order (store.jsonl). */
export interface StoreRecord {
  /** CLOCK_MONOTONIC ns when the store handled it */
  t: string;
  c: string;
  key: string;
  op: 'R' | 'W';
  token: string;
  /** R: the value read; W: the value written (accepted or not) */
  value: number;
  ok: boolean;
  /** the highest token seen for the key before this request */
  max: string;
}
