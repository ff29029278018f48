// history.ts - what every chaos client writes and the checker reads: one
// ordered history per client process, one JSON object per line.
//
// Owns: the event schema (HistoryEvent), the monotonic clock all histories
// share (CLOCK_MONOTONIC, in ns: Node's process.hrtime.bigint() and C's
// clock_gettime(CLOCK_MONOTONIC) read the same clock, in every network
// namespace), and a writer that survives kill -9 (each line is one write(2)
// on an O_APPEND descriptor: what was logged before the kill is on disk;
// nothing is buffered in the process). Does not own: what the events mean
// for safety (checker.ts).
//
// Why the client logs "grant" AFTER the grant returned and "release" BEFORE
// it asks to unlock: the logged interval [grant, release] then lies inside
// the lock's real holding time, so two logged intervals that overlap prove
// two real holders at once (no false positive from logging delays).
import fs from 'node:fs';

export type LockModeName = 'read' | 'write';

/**
 * Events, in the order a client makes them:
 * - start     the client process began (path, host, pid)
 * - invoke    it asks for a lock (key, mode; wait: 'wait' | 'nowait' | 'timeout:<ms>')
 * - grant     the lock is held (token: decimal u64, '0' when the path gives none)
 * - locked    NOWAIT refused: another holds it
 * - deadlock  refused as a deadlock victim
 * - timeout   its own timeout ended the wait
 * - cancelled it gave up waiting (cancel)
 * - error     the request failed (err: code and text); nothing is held for it
 * - read      it read the guarded value from the store (value; token presented)
 * - write     the store accepted its write (value written)
 * - refused   the store refused its read or write: a stale fencing token
 * - release   it is about to unlock (the logged hold ends here)
 * - released  the unlock returned
 * - lost      it knows it lost the lock without unlocking (connection dead,
 *             an implicit close such as dup2 over the lock file): the hold ends
 * - exit      the client ends normally (holding: keys it exits holding)
 */
export type EventKind =
  | 'start' | 'invoke' | 'grant' | 'locked' | 'deadlock' | 'timeout' | 'cancelled' | 'error'
  | 'read' | 'write' | 'refused' | 'release' | 'released' | 'lost' | 'exit';

export interface HistoryEvent {
  /** CLOCK_MONOTONIC in ns, decimal */
  t: string;
  /** the client's id: unique per process incarnation, e.g. "libr-2.1" */
  c: string;
  /** operation number within the client (0: process-level events) */
  op: number;
  ev: EventKind;
  /** the lock: "<family>:<name>"; locks of different families never conflict */
  key?: string;
  mode?: LockModeName;
  /** fencing token, decimal u64; '0' = the path gives none */
  token?: string;
  value?: number;
  /** error code and text */
  err?: string;
  /** for start: the path (lib-direct, lib-remote, lib-pair, shim-c, sqlite, ...), host, pid */
  path?: string;
  host?: string;
  pid?: number;
  /** invoke: 'wait' | 'nowait' | 'timeout:<ms>' | 'cancel:<ms>' */
  wait?: string;
  /** exit: keys still held */
  holding?: string[];
}

export function monotonicNs(): bigint {
  return process.hrtime.bigint();
}

/** Appends events to one history file, one write(2) per event. */
export class HistoryWriter {
  readonly #fd: number;
  #op = 0;
  constructor(readonly file: string, readonly client: string) {
    this.#fd = fs.openSync(file, fs.constants.O_WRONLY | fs.constants.O_APPEND | fs.constants.O_CREAT, 0o644);
  }
  /** A new operation number. */
  nextOp(): number {
    return ++this.#op;
  }
  log(ev: Omit<HistoryEvent, 't' | 'c'> & { op?: number }): void {
    const e: HistoryEvent = { t: monotonicNs().toString(), c: this.client, ...ev, op: ev.op ?? 0 };
    fs.writeSync(this.#fd, `${JSON.stringify(e)}\n`);
  }
  close(): void {
    fs.closeSync(this.#fd);
  }
}

/** Reads one history file; a torn last line (kill -9 mid-write cannot tear one write(2) of a regular file, but be safe) is dropped. */
export function readHistory(file: string): HistoryEvent[] {
  const out: HistoryEvent[] = [];
  for (const line of fs.readFileSync(file, 'utf8').split('\n')) {
    if (!line) continue;
    try {
      out.push(JSON.parse(line) as HistoryEvent);
    } catch {
      /* torn */
    }
  }
  return out;
}
