// checker.ts - reads a chaos run directory and judges the safety and
// liveness properties of issue 13 from what the clients, the store, the
// nemesis and the servers recorded. Pure: reads files, starts nothing.
//
// Owns: the hold model (when a client's logged lock is trusted), the five
// properties' exact rules, the hand-off figure after faults, the report and
// its text, and the two run-dir file formats only the checker reads
// (ServerSnapshot in snapshots.jsonl, RunOutcome in outcome.json). Does not
// own: the event schema (history.ts), the store's records
// (store-protocol.ts), fault records (faults.ts).
//
// Divisions, in order (please keep them):
//   1. Run-dir formats and the report's types
//   2. Reading the run dir
//   3. Holds: from one client's history to trusted intervals
//   4. double-grant (histories, servers' records)
//   5. lost-update (store, sqlite)
//   6. tokens
//   7. liveness and cleanup
//   8. recovery (hand-off after a fault)
//   9. checkRun, formatReport
//
// The rule above all: NO false positives. A false alarm makes the suite
// worthless, so wherever the records cannot prove a violation the checker
// gives the benefit of the doubt, and says in comments why each doubt
// exists. Two facts make history intervals sound: a client logs `grant`
// after the grant returned and `release` before it unlocks (history.ts), so
// a logged hold lies inside the real one; and a hold is trusted only until
// a fault that may legitimately take it away begins (faults.ts).
//
// Scale: a 30-minute run has 1-3 million events. Histories are read one
// file at a time (only holds and a few counters are kept); every check is
// a sort per key plus a sweep; nothing is quadratic over all holds.
import fs from 'node:fs';
import path from 'node:path';
import type { HistoryEvent, LockModeName } from './history.js';
import { FAULT_LOG, type FaultRecord } from './faults.js';
import { STORE_LOG, type StoreRecord } from './store-protocol.js';

/* ==================================================================== */
/* 1. Run-dir formats and the report's types                             */
/* ==================================================================== */

export const HISTORY_DIR = 'hist';
export const SNAPSHOT_LOG = 'snapshots.jsonl';
export const OUTCOME_FILE = 'outcome.json';

/** One granted lock as a server's own records show it (key in `<family>:<name>` form). */
export interface SnapshotHolder {
  key: string;
  mode: LockModeName;
  owner: string;
  token: string;
}

/** One line of snapshots.jsonl: a server's granted locks, sampled by the runner. */
export interface ServerSnapshot {
  /** CLOCK_MONOTONIC ns, decimal */
  t: string;
  server: 'primary' | 'secondary';
  holders: SnapshotHolder[];
}

/** outcome.json, written by the runner after the run. */
export interface RunOutcome {
  /** clients that did not end within their bound once faults healed */
  hung: { id: string; pid: number }[];
  /** what remained afterwards: locks of dead owners, stray processes, namespaces, veths */
  leftovers: string[];
  /** the sqlite workload's final counters */
  sqlite?: { key: string; value: number }[];
  /** findings of the adversaries (chaos/adversary.ts) */
  adversary: { property: string; message: string }[];
}

export type Property = 'double-grant' | 'lost-update' | 'tokens' | 'liveness' | 'cleanup';
export const PROPERTIES: readonly Property[] = ['double-grant', 'lost-update', 'tokens', 'liveness', 'cleanup'];

export interface Violation {
  property: Property;
  message: string;
  /** the shortest set of lines (events/records/faults, time-ordered, as JSON) that shows it */
  slice: string[];
}

export interface CheckReport {
  clients: number;
  operations: number;
  grants: number;
  /** grant/locked/deadlock/timeout/cancelled/error counts */
  outcomes: Record<string, number>;
  /** per FaultRecord.kind */
  faults: Record<string, number>;
  /** at most `maxViolations` per property are kept (shortest slices first); perProperty counts all */
  violations: Violation[];
  perProperty: Record<Property, number>;
  recovery: {
    /**
     * After a fault that hit a holder: ms from the fault's start (no end:
     * a kill) or its end (healed: pause, cut) to the next grant of a key
     * the holder held, to another client; 0 when the hand-off came before
     * the heal (a paused holder dropped after the keep-alive bound).
     */
    handoffMs: { p50: number; max: number; n: number };
    /** the same, per fault kind */
    byKind: Record<string, { max: number; n: number }>;
  };
  /** the store replay: final value == accepted writes on every key unless a lost update was found */
  store: {
    records: number;
    keys: number;
    acceptedWrites: number;
    refused: number;
    finalEqualsWrites: boolean;
    mismatchedKeys: string[];
    /** lost updates by a writer with no fencing token whose lock a fault (one that affects it) had taken: fencing could not have refused them */
    unfencedAfterFault: number;
  };
  /** what the checker could not judge (missing files, odd lines), for people */
  notes: string[];
}

export interface CheckOptions {
  /** violations kept per property in `violations` (default 50); perProperty counts all */
  maxViolations?: number;
  /**
   * A lost update written with token 0 by a client whose lock a fault that
   * affects it had legitimately taken (its path gives no token, so no store
   * could have refused it): 'violation' (default: issue 13 counts every
   * write accepted without a valid token) or 'note' (counted in
   * store.unfencedAfterFault only, for runs that pause unfenced holders on
   * purpose).
   */
  unfencedAfterFault?: 'violation' | 'note';
}

/* ==================================================================== */
/* 2. Reading the run dir                                                */
/* ==================================================================== */

/**
 * Calls `f` for each JSON line of a file, reading it in chunks (a long run's
 * store log may pass V8's longest string); counts lines it cannot parse (a
 * torn last line of a killed writer).
 */
function forEachJsonLine<T>(file: string, f: (v: T) => void): { lines: number; bad: number } {
  let lines = 0;
  let bad = 0;
  if (!fs.existsSync(file)) return { lines, bad };
  const one = (line: string): void => {
    if (!line) return;
    let v: T;
    try {
      v = JSON.parse(line) as T;
    } catch {
      bad++;
      return;
    }
    lines++;
    f(v);
  };
  const fd = fs.openSync(file, 'r');
  try {
    const buf = Buffer.alloc(CHUNK);
    let rest = '';
    for (;;) {
      const n = fs.readSync(fd, buf, 0, CHUNK, null);
      if (n === 0) break;
      // Cut at the last newline so that no UTF-8 sequence or line is split.
      const end = buf.lastIndexOf(0x0a, n - 1);
      if (end < 0) {
        rest += buf.toString('utf8', 0, n);
        continue;
      }
      const text = rest + buf.toString('utf8', 0, end + 1);
      rest = buf.toString('utf8', end + 1, n);
      let from = 0;
      for (let nl = text.indexOf('\n'); nl >= 0; nl = text.indexOf('\n', from)) {
        one(text.slice(from, nl));
        from = nl + 1;
      }
    }
    one(rest);
  } finally {
    fs.closeSync(fd);
  }
  return { lines, bad };
}
const CHUNK = 8 << 20;

/** A decimal u64 as bigint; undefined when it is missing or not a number. */
function big(s: string | undefined): bigint | undefined {
  if (s === undefined) return undefined;
  try {
    return BigInt(s);
  } catch {
    return undefined;
  }
}

const TWO_63 = 1n << 63n;
const OUTCOME_KINDS = ['grant', 'locked', 'deadlock', 'timeout', 'cancelled', 'error'] as const;
/** answers that end a lock request (error is special: it may also be a later failure of the same op) */
const ANSWERS = new Set(['grant', 'locked', 'deadlock', 'timeout', 'cancelled']);
/** answers that mean nothing was granted (an sqlite request so answered cannot have committed) */
const REFUSALS = new Set(['locked', 'deadlock', 'timeout', 'cancelled']);
/** paths that lock in the server host's table directly: not hit by 'remote' faults. Anything else (and a client without a start event) counts as remote: the cautious side, since 'remote' faults end trust. */
const DIRECT_PATH = /-direct$/;

/** One line of a slice: its time and its JSON. */
interface Line {
  t: bigint;
  text: string;
}
const evLine = (e: HistoryEvent): Line => ({ t: big(e.t) ?? 0n, text: JSON.stringify(e) });
const faultLine = (f: FaultRecord): Line => ({ t: big(f.start) ?? 0n, text: JSON.stringify(f) });
const storeLine = (r: StoreRecord): Line => ({ t: big(r.t) ?? 0n, text: JSON.stringify(r) });
function slice(lines: Line[]): string[] {
  const seen = new Set<string>();
  return lines
    .filter((l) => (seen.has(l.text) ? false : (seen.add(l.text), true)))
    .sort((a, b) => (a.t < b.t ? -1 : a.t > b.t ? 1 : 0))
    .map((l) => l.text);
}

/** Collects violations: counts every one, keeps the shortest `max` per property. */
class Findings {
  readonly count: Record<Property, number> = { 'double-grant': 0, 'lost-update': 0, tokens: 0, liveness: 0, cleanup: 0 };
  readonly #kept = new Map<Property, Violation[]>();
  constructor(readonly max: number) {}
  add(property: Property, message: string, lines: Line[]): void {
    this.count[property]++;
    let kept = this.#kept.get(property);
    if (!kept) this.#kept.set(property, (kept = []));
    const v: Violation = { property, message, slice: slice(lines) };
    if (kept.length < this.max) {
      kept.push(v);
      return;
    }
    // Keep the shortest slices: the report shows the simplest evidence first.
    let worst = 0;
    for (let i = 1; i < kept.length; i++) if (kept[i]!.slice.length > kept[worst]!.slice.length) worst = i;
    if (kept[worst]!.slice.length > v.slice.length) kept[worst] = v;
  }
  all(): Violation[] {
    const out: Violation[] = [];
    for (const p of PROPERTIES) out.push(...(this.#kept.get(p) ?? []).sort((a, b) => a.slice.length - b.slice.length));
    return out;
  }
}

/* ==================================================================== */
/* 3. Holds: from one client's history to trusted intervals              */
/* ==================================================================== */

type EndKind = 'release' | 'lost' | 'exit' | 'regrant' | 'last';

/**
 * One logged hold of one key by one client. [start, end) is what the history
 * says (grant to release/lost/exit/re-grant in another mode/last event);
 * [start, trustedEnd) is what the checker trusts once faults are counted.
 */
interface Hold {
  c: string;
  key: string;
  mode: LockModeName;
  /** the newest token of the hold (a same-mode re-grant keeps the hold, raises the token) */
  token: bigint;
  /** when the request that led to it was sent (the grant's own time when no invoke was logged) */
  invokeT: bigint;
  start: bigint;
  end: bigint;
  endKind: EndKind;
  grant: HistoryEvent;
  endEv: HistoryEvent;
  trustedEnd: bigint;
  /** the fault that ended trust in it (or made it untrusted from the start) */
  cutBy?: FaultRecord;
}

/** Faults that affect one client, in the forms the hold model needs. */
class ClientFaults {
  /** every affecting fault, by start */
  readonly starts: bigint[];
  readonly faults: FaultRecord[];
  /** the union of the affecting faults that have an end, as disjoint windows by start (with the first fault of each) */
  readonly #winStart: bigint[] = [];
  readonly #winEnd: bigint[] = [];
  readonly #winFault: FaultRecord[] = [];
  constructor(faults: FaultRecord[]) {
    this.faults = faults.slice().sort((a, b) => cmp(big(a.start) ?? 0n, big(b.start) ?? 0n));
    this.starts = this.faults.map((f) => big(f.start) ?? 0n);
    for (const f of this.faults) {
      const s = big(f.start);
      const e = big(f.end);
      if (s === undefined || e === undefined || e <= s) continue;
      const n = this.#winEnd.length;
      if (n && s <= this.#winEnd[n - 1]!) {
        if (e > this.#winEnd[n - 1]!) this.#winEnd[n - 1] = e;
      } else {
        this.#winStart.push(s);
        this.#winEnd.push(e);
        this.#winFault.push(f);
      }
    }
  }
  /** the first affecting fault starting at or after t */
  firstFrom(t: bigint): FaultRecord | undefined {
    return this.faults[lowerBound(this.starts, t)];
  }
  /** the last affecting fault starting at or before t */
  lastUpTo(t: bigint): FaultRecord | undefined {
    return this.faults[lowerBound(this.starts, t + 1n) - 1];
  }
  /** an affecting fault going on at t (started before, healed at or after t) */
  ongoingAt(t: bigint): FaultRecord | undefined {
    const i = lowerBound(this.#winStart, t) - 1;
    if (i < 0) return undefined;
    return this.#winEnd[i]! >= t ? this.#winFault[i] : undefined;
  }
}

function cmp(a: bigint, b: bigint): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
/** the first index i with xs[i] >= t (xs sorted) */
function lowerBound(xs: bigint[], t: bigint): number {
  let lo = 0;
  let hi = xs.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (xs[mid]! < t) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/**
 * Trust in a hold begins at its grant only if no fault that affects the
 * client began while the request was out or was going on when it was sent:
 * a lock server killed after it wrote GRANTED still delivers the reply, and
 * the client then logs a grant of a lock nobody holds any more. Trust ends
 * at the first affecting fault that begins after the grant.
 */
function trust(h: Hold, cf: ClientFaults | undefined): void {
  h.trustedEnd = h.end;
  if (!cf) return;
  const during = cf.ongoingAt(h.invokeT);
  if (during) {
    h.trustedEnd = h.start;
    h.cutBy = during;
    return;
  }
  const next = cf.firstFrom(h.invokeT);
  if (!next) return;
  const s = big(next.start) ?? 0n;
  if (s <= h.start) {
    h.trustedEnd = h.start;
    h.cutBy = next;
  } else if (s < h.end) {
    h.trustedEnd = s;
    h.cutBy = next;
  }
}

/** Per-client state while its history is read. */
interface ClientSummary {
  /** HistoryEvent.c */
  id: string;
  remote: boolean;
  path?: string;
  last5: HistoryEvent[];
  lastT: bigint;
}

/** What reading all histories leaves for the checks. */
interface HistoryData {
  holdsByKey: Map<string, Hold[]>;
  holdsByClient: Map<string, Hold[]>;
  /** every grant with its token, per key (same-mode re-grants too) */
  /** every grant with its token and its request's time (`asked`; the grant's own time when it had no invoke), per key (same-mode re-grants too) */
  grantsByKey: Map<string, { t: bigint; asked: bigint; token: bigint; mode: LockModeName; ev: HistoryEvent }[]>;
  clients: Map<string, ClientSummary>;
  operations: number;
  outcomes: Record<string, number>;
  /** sqlite keys: accepted writes logged, and requests that might have committed without logging */
  sqlite: Map<string, { writes: number; unsure: number }>;
  grantsWithoutMode: number;
}

/** The faults that affect a client: listed by id, 'all', or 'remote' for remote clients. */
class FaultIndex {
  readonly #all: FaultRecord[] = [];
  readonly #remote: FaultRecord[] = [];
  readonly #byId = new Map<string, FaultRecord[]>();
  readonly #cache = new Map<string, ClientFaults | undefined>();
  constructor(readonly faults: FaultRecord[]) {
    for (const f of faults) {
      if (f.affects === 'all') this.#all.push(f);
      else if (f.affects === 'remote') this.#remote.push(f);
      else if (Array.isArray(f.affects))
        for (const id of f.affects) {
          let l = this.#byId.get(id);
          if (!l) this.#byId.set(id, (l = []));
          l.push(f);
        }
    }
  }
  affects(f: FaultRecord, c: string, remote: boolean): boolean {
    return f.affects === 'all' || (f.affects === 'remote' ? remote : Array.isArray(f.affects) && f.affects.includes(c));
  }
  forClient(c: string, remote: boolean): ClientFaults | undefined {
    const k = `${remote ? 'r' : 'd'}${c}`;
    if (this.#cache.has(k)) return this.#cache.get(k);
    const fs = [...this.#all, ...(remote ? this.#remote : []), ...(this.#byId.get(c) ?? [])];
    const cf = fs.length ? new ClientFaults(fs) : undefined;
    this.#cache.set(k, cf);
    return cf;
  }
}

function push<K, V>(m: Map<K, V[]>, k: K, v: V): void {
  const l = m.get(k);
  if (l) l.push(v);
  else m.set(k, [v]);
}

/**
 * Reads one client's events (in log order) into holds, and checks its
 * liveness: a history that ends with `exit` must answer every invoke once.
 */
function readClient(events: HistoryEvent[], file: string, faults: FaultIndex, data: HistoryData, found: Findings): void {
  const first = events[0];
  if (!first) return;
  const c = first.c;
  const start = events.find((e) => e.ev === 'start');
  const remote = !(start?.path && DIRECT_PATH.test(start.path));
  const cf = faults.forClient(c, remote);
  const summary: ClientSummary = { id: c, remote, last5: events.slice(-5), lastT: big(events[events.length - 1]!.t) ?? 0n };
  if (start?.path) summary.path = start.path;
  // An id is one incarnation; should two files use one id, keep both apart in the counts.
  const cid = data.clients.has(c) ? `${c} (${path.basename(file)})` : c;
  data.clients.set(cid, summary);

  const open = new Map<string, Hold>();
  const holds: Hold[] = [];
  // Requests not yet answered, per op and key: the invoke events, oldest first.
  const pending = new Map<string, HistoryEvent[]>();
  // Requests answered, per op and key: a second terminal answer with no new invoke is a liveness fault.
  const answered = new Set<string>();
  const close = (h: Hold, e: HistoryEvent, kind: EndKind): void => {
    h.end = big(e.t) ?? h.start;
    h.endEv = e;
    h.endKind = kind;
    trust(h, cf);
    holds.push(h);
    open.delete(h.key);
  };
  const sqliteOps = new Map<string, { key: string; wrote: boolean; refused: boolean }>();
  /** Takes the oldest pending request of exactly `pk`, or (pk ending in the separator) of any key of that op. */
  const takePending = (pk: string): HistoryEvent | undefined => {
    const ks = pk.endsWith('\u0000') ? [...pending.keys()].filter((k) => k.startsWith(pk)) : [pk];
    for (const k of ks) {
      const q = pending.get(k);
      const inv = q?.shift();
      if (q && q.length === 0) pending.delete(k);
      if (inv) {
        answered.add(k);
        return inv;
      }
    }
    return undefined;
  };

  for (const e of events) {
    const t = big(e.t) ?? 0n;
    const key = e.key;
    const pk = `${e.op}\u0000${key ?? ''}`;
    if (e.ev === 'invoke') {
      data.operations++;
      const held = key !== undefined ? open.get(key) : undefined;
      if (held && held.mode === 'write' && e.mode === 'read') {
        // A downgrade: the lock turns into a read lock when the service
        // converts it, which is before the grant is logged - so the write
        // hold ends where the client asked, and a read hold (it holds at
        // least that throughout) goes on from there with the same token -
        // and the same request time: a fault since the grant (a pause that
        // lost the lock) leaves the rest of the hold untrusted too.
        close(held, e, 'regrant');
        open.set(held.key, { ...held, mode: 'read', start: t, end: t, endKind: 'last', grant: e, endEv: e, trustedEnd: t, cutBy: undefined });
      }
      push(pending, pk, e);
      answered.delete(pk);
      if (key?.startsWith('sqlite:')) sqliteOps.set(String(e.op), { key, wrote: false, refused: false });
      continue;
    }
    if ((OUTCOME_KINDS as readonly string[]).includes(e.ev)) data.outcomes[e.ev] = (data.outcomes[e.ev] ?? 0) + 1;
    if (key?.startsWith('sqlite:') && REFUSALS.has(e.ev)) {
      // Refused before it could commit: not one of the requests that may have written unlogged.
      const s = sqliteOps.get(String(e.op));
      if (s) s.refused = true;
    }
    if (ANSWERS.has(e.ev) && key === undefined) {
      // An answer that names no key answers its op's oldest request.
      takePending(`${e.op}\u0000`);
      continue;
    }
    if (ANSWERS.has(e.ev) && key !== undefined) {
      const inv = takePending(pk);
      if (!inv && e.ev !== 'grant' && answered.has(pk))
        // A grant without its own invoke may be an unlogged re-lock (upgrade, downgrade): safety judges it, not liveness.
        found.add('liveness', `${c}: op ${e.op} on ${key} answered twice (${e.ev} after an earlier answer)`, [evLine(e)]);
      if (e.ev === 'grant') {
        // The mode as granted, else as asked; only a grant with neither counts as a write (and is noted).
        const asked = e.mode ?? inv?.mode;
        if (!asked) data.grantsWithoutMode++;
        const mode: LockModeName = asked === 'read' ? 'read' : 'write';
        // No token logged is token 0 (the path gives none); a token that is not a number is a broken grant.
        const token = e.token === undefined ? 0n : big(e.token);
        if (token === undefined) found.add('tokens', `${c}: grant of ${key} with an unreadable token ${JSON.stringify(e.token)}`, [evLine(e)]);
        else if (token >= TWO_63) found.add('tokens', `${c}: grant of ${key} with token ${token} >= 2^63`, [evLine(e)]);
        const tok = token ?? 0n;
        const invT = inv ? (big(inv.t) ?? t) : t;
        push(data.grantsByKey, key, { t, asked: invT, token: tok, mode, ev: e });
        const prev = open.get(key);
        if (prev && prev.mode === mode) {
          // The same lock again in the same mode: the hold goes on.
          if (tok > prev.token) prev.token = tok;
          continue;
        }
        if (prev) close(prev, e, 'regrant');
        open.set(key, { c, key, mode, token: tok, invokeT: invT, start: t, end: t, endKind: 'last', grant: e, endEv: e, trustedEnd: t });
      }
      continue;
    }
    if ((e.ev === 'write' || e.ev === 'read' || e.ev === 'refused') && key !== undefined && pending.has(pk)) {
      // A path that logs no grant (sqlite: invoke, then write or error): the
      // store request proves the lock call returned.
      takePending(pk);
    }
    if (e.ev === 'error') {
      // An error answers a pending request of its op (a lock call that failed);
      // other errors (of a release, of the store) answer nothing.
      if (!(key !== undefined && takePending(pk))) takePending(`${e.op}\u0000`);
      continue;
    }
    if (e.ev === 'release' && key !== undefined) {
      const h = open.get(key);
      if (h) close(h, e, 'release');
      continue;
    }
    if (e.ev === 'lost') {
      if (key !== undefined) {
        const h = open.get(key);
        if (h) close(h, e, 'lost');
      } else for (const h of [...open.values()]) close(h, e, 'lost');
      continue;
    }
    if (e.ev === 'exit') {
      for (const h of [...open.values()]) close(h, e, 'exit');
      continue;
    }
    if (key?.startsWith('sqlite:') && (e.ev === 'write' || e.ev === 'refused')) {
      const s = sqliteOps.get(String(e.op));
      if (s && e.ev === 'write') s.wrote = true;
      if (s && e.ev === 'refused') s.refused = true;
    }
  }
  const last = events[events.length - 1]!;
  for (const h of [...open.values()]) close(h, last, 'last');

  // sqlite: a logged write is a commit; a request that neither logged its
  // write nor was refused may have committed before the process died.
  for (const s of sqliteOps.values()) {
    let k = data.sqlite.get(s.key);
    if (!k) data.sqlite.set(s.key, (k = { writes: 0, unsure: 0 }));
    if (s.wrote) k.writes++;
    else if (!s.refused) k.unsure++;
  }
  for (const e of events) if (e.ev === 'write' && e.key?.startsWith('sqlite:') && !sqliteOps.has(String(e.op))) {
    let k = data.sqlite.get(e.key);
    if (!k) data.sqlite.set(e.key, (k = { writes: 0, unsure: 0 }));
    k.writes++;
  }

  // Liveness: only a client that ended normally must have answered everything
  // (a killed client's history just stops).
  if (last.ev === 'exit') {
    for (const q of pending.values())
      for (const inv of q) {
        const lines = [evLine(inv), evLine(last)];
        const it = big(inv.t) ?? 0n;
        for (const e of events) if (e.op === inv.op && e !== inv && (big(e.t) ?? 0n) >= it && lines.length < 6) lines.push(evLine(e));
        found.add('liveness', `${c}: invoke of ${inv.key ?? '?'} (op ${inv.op}) has no outcome, and the client exited normally`, lines);
      }
  }
  holds.sort((a, b) => cmp(a.start, b.start));
  data.holdsByClient.set(cid, holds);
  for (const h of holds) push(data.holdsByKey, h.key, h);
}

function readHistories(runDir: string, faults: FaultIndex, found: Findings, notes: string[]): HistoryData {
  const data: HistoryData = { holdsByKey: new Map(), holdsByClient: new Map(), grantsByKey: new Map(), clients: new Map(), operations: 0, outcomes: {}, sqlite: new Map(), grantsWithoutMode: 0 };
  for (const k of OUTCOME_KINDS) data.outcomes[k] = 0;
  const dir = path.join(runDir, HISTORY_DIR);
  if (!fs.existsSync(dir)) {
    notes.push(`no ${HISTORY_DIR}/ directory: no histories`);
    return data;
  }
  for (const name of fs.readdirSync(dir).filter((n) => n.endsWith('.jsonl')).sort()) {
    const file = path.join(dir, name);
    // A file is one client incarnation; group by id anyway, in log order.
    const byClient = new Map<string, HistoryEvent[]>();
    const { bad } = forEachJsonLine<HistoryEvent>(file, (e) => push(byClient, e.c, e));
    if (bad) notes.push(`${HISTORY_DIR}/${name}: ${bad} unreadable line(s) skipped`);
    for (const events of byClient.values()) readClient(events, file, faults, data, found);
  }
  if (data.grantsWithoutMode) notes.push(`${data.grantsWithoutMode} grant(s) named no mode (nor did their invoke): judged as write locks`);
  return data;
}

/* ==================================================================== */
/* 4. double-grant                                                        */
/* ==================================================================== */

const conflict = (a: LockModeName, b: LockModeName): boolean => a === 'write' || b === 'write';

function holdEndLines(h: Hold): Line[] {
  const out = [evLine(h.grant)];
  if (h.cutBy) out.push(faultLine(h.cutBy));
  else out.push(evLine(h.endEv));
  return out;
}

/** Histories: per key, holds by start; a sweep keeps the holds still going on. */
function checkHistoryOverlaps(data: HistoryData, faults: FaultRecord[], found: Findings): void {
  const faultStarts = faults.map((f) => big(f.start) ?? 0n);
  for (const [key, holds] of data.holdsByKey) {
    const trusted = holds.filter((h) => h.trustedEnd > h.start).sort((a, b) => cmp(a.start, b.start));
    let active: Hold[] = [];
    for (const b of trusted) {
      active = active.filter((a) => a.trustedEnd > b.start);
      for (const a of active) {
        if (a.c === b.c || !conflict(a.mode, b.mode)) continue;
        const from = a.start;
        const to = a.trustedEnd > b.trustedEnd ? a.trustedEnd : b.trustedEnd;
        const lines = [...holdEndLines(a), ...holdEndLines(b)];
        // The faults in between: whatever took a lock away without saying so in `affects`
        // (past a few thousand findings only the count matters: skip the scan).
        for (let i = 0; i < faults.length && found.count['double-grant'] < 5000; i++) {
          const f = faults[i]!;
          const s = faultStarts[i]!;
          const e = big(f.end) ?? s;
          if (s <= to && e >= from && lines.length < 12) lines.push(faultLine(f));
        }
        found.add(
          'double-grant',
          `${key}: ${a.c} held it (${a.mode}, token ${a.token}) while ${b.c} was granted it (${b.mode}, token ${b.token}); overlap ${Number((a.trustedEnd < b.trustedEnd ? a.trustedEnd : b.trustedEnd) - b.start) / 1e6} ms`,
          lines,
        );
      }
      active.push(b);
    }
  }
}

/** Servers' records: within one snapshot, two owners of one key, one of them writing. */
function checkSnapshots(runDir: string, found: Findings, notes: string[]): number {
  const file = path.join(runDir, SNAPSHOT_LOG);
  if (!fs.existsSync(file)) {
    notes.push(`no ${SNAPSHOT_LOG}: servers' records not judged`);
    return 0;
  }
  const { lines, bad } = forEachJsonLine<ServerSnapshot>(file, (s) => {
    const byKey = new Map<string, SnapshotHolder[]>();
    for (const h of s.holders ?? []) push(byKey, h.key, h);
    for (const [key, hs] of byKey) {
      if (hs.length < 2) continue;
      const w = hs.find((h) => h.mode === 'write');
      if (!w) continue;
      const other = hs.find((h) => h !== w && h.owner !== w.owner);
      if (!other) continue;
      const t = big(s.t) ?? 0n;
      found.add('double-grant', `${s.server}'s records at ${s.t}: ${key} held by ${w.owner} (write) and ${other.owner} (${other.mode})`, [
        { t, text: JSON.stringify({ t: s.t, server: s.server, holders: [w, other] }) },
      ]);
    }
  });
  if (bad) notes.push(`${SNAPSHOT_LOG}: ${bad} unreadable line(s) skipped`);
  return lines;
}

/* ==================================================================== */
/* 5. lost-update                                                         */
/* ==================================================================== */

/**
 * Replays store.jsonl per key: every accepted write must be the last
 * accepted value + 1, and no request with a token may be accepted below the
 * highest token the store had seen (the record's own `max`).
 */
function checkStore(runDir: string, data: HistoryData, found: Findings, notes: string[], opts: CheckOptions): CheckReport['store'] {
  const out: CheckReport['store'] = { records: 0, keys: 0, acceptedWrites: 0, refused: 0, finalEqualsWrites: true, mismatchedKeys: [], unfencedAfterFault: 0 };
  // The holds of one client on one key, by start (built when a finding needs them).
  const index = new Map<string, { starts: bigint[]; holds: Hold[] }>();
  const holdAt = (c: string, key: string, t: bigint): Hold | undefined => {
    const ik = `${c}\u0000${key}`;
    let x = index.get(ik);
    if (!x) {
      const holds = (data.holdsByClient.get(c) ?? []).filter((h) => h.key === key);
      index.set(ik, (x = { starts: holds.map((h) => h.start), holds }));
    }
    return x.holds[lowerBound(x.starts, t + 1n) - 1];
  };
  const file = path.join(runDir, STORE_LOG);
  if (!fs.existsSync(file)) {
    notes.push(`no ${STORE_LOG}: lost updates not judged`);
    return out;
  }
  const keys = new Map<string, { value: number; writes: number; lastW?: StoreRecord; lastR: Map<string, StoreRecord> }>();
  const { lines, bad } = forEachJsonLine<StoreRecord>(file, (r) => {
    let k = keys.get(r.key);
    if (!k) keys.set(r.key, (k = { value: 0, writes: 0, lastR: new Map() }));
    if (!r.ok) {
      out.refused++;
      return;
    }
    const token = big(r.token) ?? 0n;
    const max = big(r.max) ?? 0n;
    const problems: string[] = [];
    const lines: Line[] = [storeLine(r)];
    if (token >= TWO_63) found.add('tokens', `store: ${r.c} presented token ${token} >= 2^63 for ${r.key}`, [storeLine(r)]);
    if (token !== 0n && token < max) problems.push(`accepted with a stale fencing token (${token} < ${max} already seen)`);
    if (r.op === 'W') {
      if (r.value !== k.value + 1) {
        problems.push(`wrote ${r.value} over ${k.value} (lost update: expected ${k.value + 1})`);
        if (k.lastW) lines.push(storeLine(k.lastW));
        const myR = k.lastR.get(r.c);
        if (myR) lines.push(storeLine(myR));
      }
      k.value = r.value;
      k.writes++;
      k.lastW = r;
      out.acceptedWrites++;
    } else k.lastR.set(r.c, r);
    if (problems.length) {
      // Say whether the writer had lost its lock to a fault: the hold the
      // request fell in (its client's hold of the key begun last before it),
      // and the fault that ended the checker's trust in that hold.
      const t = big(r.t) ?? 0n;
      const h = holdAt(r.c, r.key, t);
      let why = '';
      let unfencedAfterFault = false;
      if (h?.cutBy) {
        unfencedAfterFault = token === 0n && problems.length === 1;
        why = `; ${token === 0n ? 'the writer has no fencing token, and ' : ''}a fault that affects it (${h.cutBy.kind}) had taken its lock`;
        lines.push(evLine(h.grant), faultLine(h.cutBy));
      } else if (!h) why = `; no hold of ${r.key} by ${r.c} in its history covers it`;
      else lines.push(evLine(h.grant));
      if (unfencedAfterFault) out.unfencedAfterFault++;
      const msg = `store: ${r.op} by ${r.c} on ${r.key} ${problems.join('; ')}${why}`;
      if (unfencedAfterFault && opts.unfencedAfterFault === 'note') {
        if (out.unfencedAfterFault <= 5) notes.push(`not counted (unfencedAfterFault: 'note'): ${msg}`);
      } else found.add('lost-update', msg, lines);
    }
  });
  if (bad) notes.push(`${STORE_LOG}: ${bad} unreadable line(s) skipped`);
  out.records = lines;
  out.keys = keys.size;
  for (const [key, k] of keys)
    if (k.value !== k.writes) {
      out.finalEqualsWrites = false;
      if (out.mismatchedKeys.length < 20) out.mismatchedKeys.push(`${key}: final ${k.value}, ${k.writes} accepted writes`);
    }
  return out;
}

/** sqlite: the database's counter lies between the commits logged and those plus the requests that may have committed unlogged. */
function checkSqlite(outcome: RunOutcome | undefined, data: HistoryData, found: Findings): void {
  for (const s of outcome?.sqlite ?? []) {
    const key = s.key.startsWith('sqlite:') ? s.key : `sqlite:${s.key}`;
    const k = data.sqlite.get(key) ?? { writes: 0, unsure: 0 };
    const line: Line = { t: 0n, text: JSON.stringify({ sqlite: s, writesLogged: k.writes, unsure: k.unsure }) };
    if (s.value < k.writes) found.add('lost-update', `sqlite ${key}: final value ${s.value} < ${k.writes} writes logged as committed`, [line]);
    else if (s.value > k.writes + k.unsure) found.add('lost-update', `sqlite ${key}: final value ${s.value} > ${k.writes} writes logged + ${k.unsure} unfinished requests`, [line]);
  }
}

/* ==================================================================== */
/* 6. tokens                                                              */
/* ==================================================================== */

/**
 * Per key: a grant asked for after a hold's real release (not a fault's cut)
 * was logged must carry a higher token than that hold. The request's time,
 * not the grant's: the server grants after the request was sent, but the
 * client may log the grant much later (paused while its server granted it -
 * and then dropped it with the connection, and granted the key to others;
 * found by CI, seed 13013). Such a stale grant's writes are the store's to
 * refuse (lost-update). Grants and releases merge by time; at equal times the
 * grant goes first (the release must come before).
 */
function checkTokens(data: HistoryData, found: Findings): void {
  for (const [key, grants] of data.grantsByKey) {
    const releases = (data.holdsByKey.get(key) ?? []).filter((h) => h.endKind === 'release' && h.token !== 0n).sort((a, b) => cmp(a.end, b.end));
    if (!releases.length) continue;
    const gs = grants.slice().sort((a, b) => cmp(a.asked, b.asked));
    let ri = 0;
    // A read grant logged after a read release may really have come first
    // (two readers at once, one slow to log): it is compared with released
    // write holds only. A write grant is compared with every release.
    let maxAny: Hold | undefined;
    let maxWrite: Hold | undefined;
    for (const g of gs) {
      while (ri < releases.length && releases[ri]!.end < g.asked) {
        const r = releases[ri++]!;
        if (!maxAny || r.token > maxAny.token) maxAny = r;
        if (r.mode === 'write' && (!maxWrite || r.token > maxWrite.token)) maxWrite = r;
      }
      const than = g.mode === 'read' ? maxWrite : maxAny;
      if (g.token === 0n || !than || g.token > than.token) continue;
      found.add('tokens', `${key}: ${g.ev.c} granted token ${g.token} (${g.mode}) after ${than.c} released token ${than.token} (${than.mode})`, [
        evLine(than.grant),
        evLine(than.endEv),
        evLine(g.ev),
      ]);
    }
  }
}

/* ==================================================================== */
/* 7. liveness and cleanup (from outcome.json)                            */
/* ==================================================================== */

const PROPERTY_ALIASES: Record<string, Property> = {
  'double-grant': 'double-grant',
  'lost-update': 'lost-update',
  tokens: 'tokens',
  liveness: 'liveness',
  cleanup: 'cleanup',
};

function checkOutcome(outcome: RunOutcome | undefined, data: HistoryData, found: Findings): void {
  if (!outcome) return;
  for (const h of outcome.hung ?? []) {
    const c = data.clients.get(h.id);
    found.add('liveness', `${h.id} (pid ${h.pid}) hung past its bound after the faults healed`, (c?.last5 ?? []).map(evLine));
  }
  for (const l of outcome.leftovers ?? []) found.add('cleanup', `left over after the run: ${l}`, [{ t: 0n, text: JSON.stringify({ leftover: l }) }]);
  for (const a of outcome.adversary ?? []) {
    const p = PROPERTY_ALIASES[a.property];
    // An unknown property name is still a finding: count it under cleanup and keep its name.
    found.add(p ?? 'cleanup', p ? `adversary: ${a.message}` : `adversary (${a.property}): ${a.message}`, [{ t: 0n, text: JSON.stringify(a) }]);
  }
}

/* ==================================================================== */
/* 8. recovery (hand-off after a fault)                                   */
/* ==================================================================== */

function recovery(data: HistoryData, faults: FaultRecord[], index: FaultIndex): CheckReport['recovery'] {
  const samples: number[] = [];
  const byKind: Record<string, { max: number; n: number }> = {};
  // Per key, grant (hold start) times and clients: binary search for the next one.
  const starts = new Map<string, { t: bigint[]; c: string[] }>();
  for (const [key, holds] of data.holdsByKey) {
    const hs = holds.slice().sort((a, b) => cmp(a.start, b.start));
    starts.set(key, { t: hs.map((h) => h.start), c: hs.map((h) => h.c) });
  }
  const byClient = new Map<string, { open: Hold[]; closed: Hold[]; starts: bigint[]; maxDur: bigint }>();
  for (const [cid, holds] of data.holdsByClient) {
    const closed = holds.filter((h) => h.endKind !== 'last');
    let maxDur = 0n;
    for (const h of closed) if (h.end - h.start > maxDur) maxDur = h.end - h.start;
    byClient.set(cid, { open: holds.filter((h) => h.endKind === 'last'), closed, starts: closed.map((h) => h.start), maxDur });
  }
  for (const f of faults) {
    const fs0 = big(f.start);
    if (fs0 === undefined) continue;
    const ref = big(f.end) ?? fs0;
    // Who held what when it began: holds that started before and had not ended
    // (a history that just stops - a killed client - holds on until the server frees it).
    const held = new Map<string, Set<string>>();
    for (const [cid, c] of data.clients) {
      if (!index.affects(f, c.id, c.remote)) continue;
      const ch = byClient.get(cid);
      if (!ch) continue;
      const add = (h: Hold): void => {
        let s = held.get(h.key);
        if (!s) held.set(h.key, (s = new Set()));
        s.add(h.c);
      };
      for (const h of ch.open) if (h.start <= fs0) add(h);
      // Closed holds that began at most maxDur before the fault are the only ones that can still be going on.
      for (let i = lowerBound(ch.starts, fs0 + 1n) - 1; i >= 0 && ch.closed[i]!.start >= fs0 - ch.maxDur; i--) if (ch.closed[i]!.end > fs0) add(ch.closed[i]!);
    }
    for (const [key, holders] of held) {
      const st = starts.get(key);
      if (!st) continue;
      for (let i = lowerBound(st.t, fs0); i < st.t.length; i++) {
        if (holders.has(st.c[i]!)) continue;
        const ms = st.t[i]! > ref ? Number(st.t[i]! - ref) / 1e6 : 0;
        samples.push(ms);
        const k = (byKind[f.kind] ??= { max: 0, n: 0 });
        k.n++;
        if (ms > k.max) k.max = ms;
        break;
      }
    }
  }
  samples.sort((a, b) => a - b);
  const p50 = samples.length ? samples[Math.floor((samples.length - 1) / 2)]! : 0;
  return { handoffMs: { p50, max: samples.length ? samples[samples.length - 1]! : 0, n: samples.length }, byKind };
}

/* ==================================================================== */
/* 9. checkRun, formatReport                                              */
/* ==================================================================== */

export function readOutcome(runDir: string): RunOutcome | undefined {
  const file = path.join(runDir, OUTCOME_FILE);
  if (!fs.existsSync(file)) return undefined;
  return JSON.parse(fs.readFileSync(file, 'utf8')) as RunOutcome;
}

export function checkRun(runDir: string, opts: CheckOptions = {}): CheckReport {
  const notes: string[] = [];
  const found = new Findings(opts.maxViolations ?? 50);
  const faultList: FaultRecord[] = [];
  const fr = forEachJsonLine<FaultRecord>(path.join(runDir, FAULT_LOG), (f) => faultList.push(f));
  if (fr.bad) notes.push(`${FAULT_LOG}: ${fr.bad} unreadable line(s) skipped`);
  faultList.sort((a, b) => cmp(big(a.start) ?? 0n, big(b.start) ?? 0n));
  const index = new FaultIndex(faultList);

  const data = readHistories(runDir, index, found, notes);
  checkHistoryOverlaps(data, faultList, found);
  checkSnapshots(runDir, found, notes);
  const store = checkStore(runDir, data, found, notes, opts);
  let outcome: RunOutcome | undefined;
  try {
    outcome = readOutcome(runDir);
    if (!outcome) notes.push(`no ${OUTCOME_FILE}: hung clients, leftovers, sqlite and adversary findings not judged`);
  } catch (e) {
    notes.push(`${OUTCOME_FILE} unreadable: ${(e as Error).message}`);
  }
  checkSqlite(outcome, data, found);
  checkTokens(data, found);
  checkOutcome(outcome, data, found);

  const faults: Record<string, number> = {};
  for (const f of faultList) faults[f.kind] = (faults[f.kind] ?? 0) + 1;
  return {
    clients: data.clients.size,
    operations: data.operations,
    grants: data.outcomes['grant'] ?? 0,
    outcomes: data.outcomes,
    faults,
    violations: found.all(),
    perProperty: { ...found.count },
    recovery: recovery(data, faultList, index),
    store,
    notes,
  };
}

const fmtCounts = (r: Record<string, number>): string =>
  Object.entries(r)
    .map(([k, v]) => `${k} ${v}`)
    .join(', ') || 'none';

/** The report for people: figures, then one line per property ("<prop>: 0 violations"), then the evidence. */
export function formatReport(r: CheckReport, seed?: number): string {
  const out: string[] = [];
  out.push(`clients ${r.clients}, operations ${r.operations}, grants ${r.grants}`);
  out.push(`outcomes: ${fmtCounts(r.outcomes)}`);
  out.push(`faults: ${fmtCounts(r.faults)}`);
  const s = r.store;
  out.push(
    `store: ${s.records} requests, ${s.keys} keys, ${s.acceptedWrites} accepted writes, ${s.refused} refused; ` +
      (s.finalEqualsWrites ? 'every final value equals its accepted writes' : `final value != accepted writes on ${s.mismatchedKeys.join('; ')}`) +
      (s.unfencedAfterFault ? `; ${s.unfencedAfterFault} lost update(s) by writers without a token after a fault took their lock` : ''),
  );
  const h = r.recovery.handoffMs;
  out.push(
    h.n
      ? `hand-off after a fault: p50 ${h.p50.toFixed(1)} ms, worst ${h.max.toFixed(1)} ms (n=${h.n}; ${Object.entries(r.recovery.byKind)
          .map(([k, v]) => `${k} worst ${v.max.toFixed(1)} ms`)
          .join(', ')})`
      : 'hand-off after a fault: none measured',
  );
  for (const p of PROPERTIES) out.push(`${p}: ${r.perProperty[p]} violation${r.perProperty[p] === 1 ? '' : 's'}`);
  for (const n of r.notes) out.push(`note: ${n}`);
  const total = PROPERTIES.reduce((a, p) => a + r.perProperty[p], 0);
  if (total) {
    out.push('');
    out.push(`FAILED: ${total} violation${total === 1 ? '' : 's'}${seed !== undefined ? `; replay with --seed ${seed}` : ''}`);
    for (const p of PROPERTIES) {
      const vs = r.violations.filter((v) => v.property === p).slice(0, 3);
      for (const v of vs) {
        out.push('');
        out.push(`[${p}] ${v.message}`);
        for (const l of v.slice) out.push(`  ${l}`);
      }
      const more = r.perProperty[p] - vs.length;
      if (vs.length && more > 0) out.push(`  (... ${more} more ${p} violation${more === 1 ? '' : 's'})`);
    }
    if (seed !== undefined) out.push('', `seed ${seed}`);
  }
  return `${out.join('\n')}\n`;
}
