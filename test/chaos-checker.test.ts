// chaos-checker.test.ts - the chaos checker (chaos/checker.ts) has teeth and
// no false alarms: synthetic run directories (histories, store log, faults,
// servers' snapshots, outcome) with one known flaw each must report exactly
// that flaw under its property, and clean ones - including the hard cases a
// real run produces (reads at once, a lock taken away by a fault, a grant
// that arrives after its server died, a killed client) - must report none.
// Also the report's text, the CLI, and a million-event run's time (logged).
import test from 'ava';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { checkRun, formatReport, type CheckOptions, PROPERTIES, type CheckReport, type RunOutcome, type ServerSnapshot } from '../chaos/checker.js';
import type { HistoryEvent, LockModeName } from '../chaos/history.js';
import type { FaultRecord } from '../chaos/faults.js';
import type { StoreRecord } from '../chaos/store-protocol.js';
import { testDir } from './helpers/installations.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const BASE = 1_000_000_000_000n;
/** ms since the run's (synthetic) start as a monotonic ns string */
const T = (ms: number): string => (BASE + BigInt(Math.round(ms * 1000)) * 1000n).toString();

/** A synthetic run directory: histories, a store that behaves like store.ts, faults, snapshots, outcome. */
class Run {
  readonly hist = new Map<string, HistoryEvent[]>();
  readonly store: StoreRecord[] = [];
  readonly faults: FaultRecord[] = [];
  readonly snaps: ServerSnapshot[] = [];
  outcome: RunOutcome | undefined = { hung: [], leftovers: [], adversary: [] };
  readonly #values = new Map<string, number>();
  readonly #max = new Map<string, bigint>();
  #op = new Map<string, number>();
  constructor(readonly storeMode: 'fenced' | 'ignore' = 'fenced') {}

  ev(c: string, ms: number, ev: HistoryEvent['ev'], more: Partial<HistoryEvent> = {}): void {
    let l = this.hist.get(c);
    if (!l) this.hist.set(c, (l = []));
    l.push({ t: T(ms), c, op: 0, ev, ...more });
  }
  start(c: string, ms: number, p = 'lib-remote'): void {
    this.ev(c, ms, 'start', { path: p, host: 'c1', pid: 1000 + this.hist.size });
  }
  exit(c: string, ms: number, holding: string[] = []): void {
    this.ev(c, ms, 'exit', { holding });
  }
  nextOp(c: string): number {
    const n = (this.#op.get(c) ?? 0) + 1;
    this.#op.set(c, n);
    return n;
  }
  /** One request to the store, judged as store.ts judges it. */
  req(c: string, ms: number, op: 'R' | 'W', key: string, token: bigint, value?: number): StoreRecord {
    const max = this.#max.get(key) ?? 0n;
    const stale = token !== 0n && token < max;
    const ok = this.storeMode === 'ignore' || !stale;
    let v = this.#values.get(key) ?? 0;
    if (op === 'W') {
      v = value!;
      if (ok) this.#values.set(key, v);
    }
    if (ok && token > max) this.#max.set(key, token);
    const r: StoreRecord = { t: T(ms), c, key, op, token: token.toString(), value: v, ok, max: max.toString() };
    this.store.push(r);
    return r;
  }
  /**
   * A whole read-modify-write (write mode) or read (read mode) operation:
   * invoke at `at`, grant at at+1, store R at +2, W at +3 (writes), release
   * at `until` (undefined: the history stops holding it, e.g. a kill).
   * Store requests are judged in call order: call in time order.
   */
  lockOp(c: string, key: string, mode: LockModeName, token: bigint, at: number, until: number | undefined, opts: { rmw?: boolean } = {}): void {
    const op = this.nextOp(c);
    this.ev(c, at, 'invoke', { op, key, mode, wait: 'wait' });
    this.ev(c, at + 1, 'grant', { op, key, mode, token: token.toString() });
    const r = this.req(c, at + 2, 'R', key, mode === 'write' ? token : 0n);
    if (!r.ok) {
      this.ev(c, at + 2, 'refused', { op, key, token: token.toString() });
    } else {
      this.ev(c, at + 2, 'read', { op, key, value: r.value, token: token.toString() });
      if (mode === 'write' && opts.rmw !== false) {
        const wAt = at + 3;
        const w = this.req(c, wAt, 'W', key, token, r.value + 1);
        this.ev(c, wAt, w.ok ? 'write' : 'refused', { op, key, value: r.value + 1, token: token.toString() });
      }
    }
    if (until !== undefined) {
      this.ev(c, until, 'release', { op, key });
      this.ev(c, until + 0.1, 'released', { op, key });
    }
  }
  fault(f: Partial<Omit<FaultRecord, 'start' | 'end'>> & { kind: string; start: number; end?: number; affects: FaultRecord['affects'] }): void {
    const { start, end, ...rest } = f;
    const rec: FaultRecord = { target: rest.kind, ...rest, start: T(start) };
    if (end !== undefined) rec.end = T(end);
    this.faults.push(rec);
  }
  write(): string {
    const dir = testDir('chaos-check');
    fs.mkdirSync(path.join(dir, 'hist'));
    for (const [c, evs] of this.hist) fs.writeFileSync(path.join(dir, 'hist', `${c}.jsonl`), evs.map((e) => `${JSON.stringify(e)}\n`).join(''));
    const lines = (xs: object[]): string => xs.map((x) => `${JSON.stringify(x)}\n`).join('');
    fs.writeFileSync(path.join(dir, 'store.jsonl'), lines(this.store));
    fs.writeFileSync(path.join(dir, 'faults.jsonl'), lines(this.faults));
    fs.writeFileSync(path.join(dir, 'snapshots.jsonl'), lines(this.snaps));
    if (this.outcome) fs.writeFileSync(path.join(dir, 'outcome.json'), JSON.stringify(this.outcome));
    return dir;
  }
  check(t: { teardown(f: () => void): void }, opts?: CheckOptions): CheckReport {
    const dir = this.write();
    t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
    return checkRun(dir, opts);
  }
}

const tok = (n: number): bigint => (1000n << 44n) + BigInt(n);

/** A clean run with the usual shapes: sequential writes, readers at once, an upgrade, a NOWAIT refusal, a fault that hits nobody holding, snapshots. */
function cleanRun(): Run {
  const r = new Run();
  for (const c of ['a', 'b', 'd']) r.start(c, 0, c === 'd' ? 'lib-direct' : 'lib-remote');
  r.lockOp('a', 'rec:HOT0', 'write', tok(1), 10, 20);
  r.lockOp('b', 'rec:HOT0', 'write', tok(2), 21, 30);
  // Two readers at once, then a writer.
  r.lockOp('a', 'rec:HOT0', 'read', tok(3), 31, 45);
  r.lockOp('b', 'rec:HOT0', 'read', tok(4), 33, 40);
  r.lockOp('d', 'rec:HOT0', 'write', tok(5), 46, 55);
  // NOWAIT refused while d held it.
  const op = r.nextOp('b');
  r.ev('b', 47, 'invoke', { op, key: 'rec:HOT0', mode: 'write', wait: 'nowait' });
  r.ev('b', 48, 'locked', { op, key: 'rec:HOT0' });
  // Upgrade: a's read becomes a write on COLD1 (a grant in the other mode, its own invoke).
  const up = r.nextOp('a');
  r.ev('a', 60, 'invoke', { op: up, key: 'rec:COLD1', mode: 'read', wait: 'wait' });
  r.ev('a', 61, 'grant', { op: up, key: 'rec:COLD1', mode: 'read', token: tok(6).toString() });
  r.ev('a', 62, 'invoke', { op: up, key: 'rec:COLD1', mode: 'write', wait: 'wait' });
  r.ev('a', 63, 'grant', { op: up, key: 'rec:COLD1', mode: 'write', token: tok(7).toString() });
  const rr = r.req('a', 64, 'R', 'rec:COLD1', tok(7));
  r.req('a', 65, 'W', 'rec:COLD1', tok(7), rr.value + 1);
  r.ev('a', 65, 'write', { op: up, key: 'rec:COLD1', value: rr.value + 1 });
  r.ev('a', 66, 'release', { op: up, key: 'rec:COLD1' });
  r.lockOp('b', 'rec:COLD1', 'write', tok(8), 67, 70);
  // A cut link that hits b while it holds nothing.
  r.fault({ kind: 'cut-link', start: 71, end: 80, affects: ['b'], target: 'link c1<->primary' });
  r.lockOp('b', 'rec:HOT1', 'write', tok(9), 81, 90);
  // Families never conflict: fcntl:HOT0 (no token) while rec:HOT0 is held.
  r.lockOp('d', 'fcntl:HOT0', 'write', 0n, 91, 99);
  r.lockOp('a', 'rec:HOT0', 'write', tok(10), 92, 98);
  r.snaps.push({ t: T(50), server: 'primary', holders: [{ key: 'rec:HOT0', mode: 'write', owner: 'd', token: tok(5).toString() }, { key: 'rec:COLD2', mode: 'read', owner: 'x', token: '1' }, { key: 'rec:COLD2', mode: 'read', owner: 'y', token: '2' }] });
  r.snaps.push({ t: T(35), server: 'primary', holders: [{ key: 'rec:HOT0', mode: 'read', owner: 'a', token: '3' }, { key: 'rec:HOT0', mode: 'write', owner: 'a', token: '4' }] });
  for (const c of ['a', 'b', 'd']) r.exit(c, 100);
  return r;
}

const only = (rep: CheckReport, p: string): void => {
  for (const q of PROPERTIES) if (q !== p && rep.perProperty[q] !== 0) throw new Error(`unexpected ${q}: ${JSON.stringify(rep.violations, null, 1)}`);
};

test('a clean run: 0 violations for every property, the figures, and the report says "0 violations"', (t) => {
  const rep = cleanRun().check(t);
  t.deepEqual(rep.violations, []);
  for (const p of PROPERTIES) t.is(rep.perProperty[p], 0, p);
  t.is(rep.clients, 3);
  t.is(rep.operations, 12);
  t.is(rep.grants, 11);
  t.is(rep.outcomes['locked'], 1);
  t.deepEqual(rep.faults, { 'cut-link': 1 });
  t.true(rep.store.finalEqualsWrites);
  t.is(rep.store.keys, 4);
  const text = formatReport(rep, 42);
  for (const p of PROPERTIES) t.true(text.includes(`${p}: 0 violations`), text);
  t.false(text.includes('FAILED'));
  t.false(text.includes('seed'));
});

test('two overlapping write holds on one key: double-grant, with both grants and their ends in the slice', (t) => {
  const r = new Run();
  r.start('a', 0);
  r.start('b', 0);
  r.lockOp('a', 'rec:HOT0', 'write', tok(1), 10, 30, { rmw: false });
  r.lockOp('b', 'rec:HOT0', 'write', tok(2), 20, 40, { rmw: false });
  r.exit('a', 50);
  r.exit('b', 50);
  const rep = r.check(t);
  t.is(rep.perProperty['double-grant'], 1);
  only(rep, 'double-grant');
  const v = rep.violations[0]!;
  t.regex(v.message, /rec:HOT0: a held it \(write/);
  t.is(v.slice.length, 4);
  const evs = v.slice.map((l) => JSON.parse(l) as HistoryEvent);
  t.deepEqual(
    evs.map((e) => `${e.c} ${e.ev}`),
    ['a grant', 'b grant', 'a release', 'b release'],
  );
});

test('a write hold overlapping a read hold is a double-grant; touching holds (release at the next grant) are not', (t) => {
  const r = new Run();
  r.start('a', 0);
  r.start('b', 0);
  r.lockOp('a', 'rec:HOT0', 'read', tok(1), 10, 30);
  r.lockOp('b', 'rec:HOT0', 'write', tok(2), 19, 40, { rmw: false }); // granted at 20 < 30
  r.lockOp('a', 'rec:HOT1', 'write', tok(3), 10, 20, { rmw: false });
  r.lockOp('b', 'rec:HOT1', 'write', tok(4), 19, 40, { rmw: false }); // granted at 20 == a's release
  r.exit('a', 50);
  r.exit('b', 50);
  const rep = r.check(t);
  t.is(rep.perProperty['double-grant'], 1);
  t.regex(rep.violations[0]!.message, /^rec:HOT0/);
});

test('overlapping read + read holds: no violation', (t) => {
  const r = new Run();
  r.start('a', 0);
  r.start('b', 0);
  r.lockOp('a', 'rec:HOT0', 'read', tok(1), 10, 30);
  r.lockOp('b', 'rec:HOT0', 'read', tok(2), 12, 40);
  r.exit('a', 50);
  r.exit('b', 50);
  const rep = r.check(t);
  for (const p of PROPERTIES) t.is(rep.perProperty[p], 0, p);
});

test('an upgrade by one client is not a conflict with itself, but another reader during its write part is', (t) => {
  const r = new Run();
  r.start('a', 0);
  r.start('b', 0);
  const op = r.nextOp('a');
  r.ev('a', 10, 'invoke', { op, key: 'rec:HOT0', mode: 'read' });
  r.ev('a', 11, 'grant', { op, key: 'rec:HOT0', mode: 'read', token: tok(1).toString() });
  r.ev('a', 12, 'invoke', { op, key: 'rec:HOT0', mode: 'write' });
  r.ev('a', 20, 'grant', { op, key: 'rec:HOT0', mode: 'write', token: tok(3).toString() });
  r.ev('a', 30, 'release', { op, key: 'rec:HOT0' });
  r.lockOp('b', 'rec:HOT0', 'read', tok(2), 12, 19); // read with a's read: fine, ends before a's write
  r.exit('a', 50);
  r.exit('b', 50);
  t.is(r.check(t).perProperty['double-grant'], 0);

  const r2 = new Run();
  r2.start('a', 0);
  r2.start('b', 0);
  const op2 = r2.nextOp('a');
  r2.ev('a', 10, 'invoke', { op: op2, key: 'rec:HOT0', mode: 'read' });
  r2.ev('a', 11, 'grant', { op: op2, key: 'rec:HOT0', mode: 'read', token: tok(1).toString() });
  r2.ev('a', 12, 'invoke', { op: op2, key: 'rec:HOT0', mode: 'write' });
  r2.ev('a', 20, 'grant', { op: op2, key: 'rec:HOT0', mode: 'write', token: tok(3).toString() });
  r2.ev('a', 30, 'release', { op: op2, key: 'rec:HOT0' });
  r2.lockOp('b', 'rec:HOT0', 'read', tok(2), 12, 25); // still reading after a's write grant
  r2.exit('a', 50);
  r2.exit('b', 50);
  t.is(r2.check(t).perProperty['double-grant'], 1);
});

test('an overlap after a fault that affects the holder is no double-grant; its late write accepted with a stale token is a lost update', (t) => {
  // a holds, is paused (the fault affects a), the server drops it, b is
  // granted with a higher token and writes; a resumes and writes late.
  for (const mode of ['fenced', 'ignore'] as const) {
    const r = new Run(mode);
    r.start('a', 0);
    r.start('b', 0);
    const op = r.nextOp('a');
    r.ev('a', 10, 'invoke', { op, key: 'rec:HOT0', mode: 'write' });
    r.ev('a', 11, 'grant', { op, key: 'rec:HOT0', mode: 'write', token: tok(1).toString() });
    const ra = r.req('a', 12, 'R', 'rec:HOT0', tok(1));
    r.ev('a', 12, 'read', { op, key: 'rec:HOT0', value: ra.value });
    r.fault({ kind: 'pause-client', start: 13, end: 200, affects: ['a'], target: 'client a' });
    r.lockOp('b', 'rec:HOT0', 'write', tok(2), 100, 120);
    const wa = r.req('a', 201, 'W', 'rec:HOT0', tok(1), ra.value + 1);
    r.ev('a', 201, wa.ok ? 'write' : 'refused', { op, key: 'rec:HOT0', value: ra.value + 1 });
    r.ev('a', 202, 'release', { op, key: 'rec:HOT0' });
    r.ev('a', 203, 'released', { op, key: 'rec:HOT0' });
    r.lockOp('b', 'rec:HOT0', 'write', tok(3), 210, 220);
    r.exit('a', 300);
    r.exit('b', 300);
    const rep = r.check(t);
    t.is(rep.perProperty['double-grant'], 0, mode);
    t.is(rep.perProperty['tokens'], 0, mode);
    t.is(rep.perProperty['liveness'], 0, mode);
    if (mode === 'fenced') {
      t.is(rep.perProperty['lost-update'], 0);
      t.is(rep.store.refused, 1);
    } else {
      t.is(rep.perProperty['lost-update'], 1);
      const v = rep.violations.find((x) => x.property === 'lost-update')!;
      t.regex(v.message, /stale fencing token/);
      t.regex(v.message, /lost update/);
      t.regex(v.message, /pause-client/);
      t.false(rep.store.finalEqualsWrites);
      t.true(formatReport(rep, 7).includes('final value != accepted writes'));
    }
    // The hand-off: b was granted before the heal, so it counts 0 ms.
    t.is(rep.recovery.handoffMs.n, 1);
    t.is(rep.recovery.handoffMs.max, 0);
  }
});

// Found by a 30-minute run (seed 20261204): a holder paused inside its hold
// lost the lock, was refused by the store, and then asked to downgrade the
// lock it no longer had; the downgrade's read hold was judged trusted (its
// request time was taken as the downgrade's, after the pause) and overlapped
// the next holder's write: a false double grant.
test('a downgrade asked after a fault took the lock is not trusted either', (t) => {
  const r = new Run();
  r.start('a', 0);
  r.start('b', 0);
  const op = r.nextOp('a');
  r.ev('a', 10, 'invoke', { op, key: 'rec:HOT0', mode: 'write' });
  r.ev('a', 11, 'grant', { op, key: 'rec:HOT0', mode: 'write', token: tok(1).toString() });
  r.fault({ kind: 'pause-holder', start: 13, end: 200, affects: ['a'], target: 'client a' });
  r.lockOp('b', 'rec:HOT0', 'write', tok(2), 100, 120);
  r.ev('a', 201, 'invoke', { op, key: 'rec:HOT0', mode: 'read' });
  r.lockOp('b', 'rec:HOT0', 'write', tok(3), 202, 220);
  r.ev('a', 221, 'error', { op, key: 'rec:HOT0', err: 'SERVER_CLOSED connection lost' });
  r.ev('a', 222, 'lost', { op, key: 'rec:HOT0' });
  r.exit('b', 300);
  const rep = r.check(t);
  t.is(rep.perProperty['double-grant'], 0);
});

// Found by CI (seed 13013, pair round): a client asked for a lock, was paused
// while its server granted it (token 1065), lost the lock with its connection,
// and logged the grant on resuming - after another client had been granted
// the key (token 1575) and released it. The server's order was right; only
// the receipt was late. A token is judged against the releases logged before
// its request was sent (the server grants after that), not before its receipt.
test('a grant received late (paused while its server granted it, lost since) is judged by its request time, not as tokens going down', (t) => {
  const r = new Run();
  r.start('a', 0);
  r.start('b', 0);
  const op = r.nextOp('a');
  r.ev('a', 10, 'invoke', { op, key: 'rec:HOT0', mode: 'write' });
  r.fault({ kind: 'pause-client', start: 11, end: 200, affects: ['a'], target: 'client a' });
  r.lockOp('b', 'rec:HOT0', 'write', tok(2), 100, 120);
  r.ev('a', 201, 'grant', { op, key: 'rec:HOT0', mode: 'write', token: tok(1).toString() });
  const ra = r.req('a', 202, 'R', 'rec:HOT0', tok(1));
  r.ev('a', 202, ra.ok ? 'read' : 'refused', { op, key: 'rec:HOT0', token: tok(1).toString() });
  r.ev('a', 203, 'lost', { op, key: 'rec:HOT0' });
  r.lockOp('b', 'rec:HOT0', 'write', tok(3), 210, 220);
  r.exit('b', 300);
  const rep = r.check(t);
  t.is(ra.ok, false, 'the fenced store refused the late holder');
  t.deepEqual(rep.perProperty, { 'double-grant': 0, 'lost-update': 0, tokens: 0, liveness: 0, cleanup: 0 });
  // ... while a request sent after the release that gets a lower token is still one.
  const r2 = new Run();
  r2.start('a', 0);
  r2.start('b', 0);
  r2.lockOp('b', 'rec:HOT0', 'write', tok(2), 100, 120, { rmw: false });
  r2.lockOp('a', 'rec:HOT0', 'write', tok(1), 121, 130, { rmw: false });
  r2.exit('a', 300);
  r2.exit('b', 300);
  t.is(r2.check(t).perProperty['tokens'], 1);
});

test('a grant that arrives after the fault began (its server died with the reply sent) is not trusted', (t) => {
  const r = new Run();
  r.start('a', 0);
  r.start('b', 0, 'lib-direct');
  const op = r.nextOp('a');
  r.ev('a', 10, 'invoke', { op, key: 'rec:HOT0', mode: 'write' });
  r.fault({ kind: 'kill-lockserver', start: 11, affects: 'remote', target: 'lock server of a' });
  r.ev('a', 12, 'grant', { op, key: 'rec:HOT0', mode: 'write', token: tok(1).toString() });
  r.lockOp('b', 'rec:HOT0', 'write', tok(2), 13, 20, { rmw: false });
  r.ev('a', 30, 'lost', { op, key: 'rec:HOT0' });
  r.lockOp('b', 'rec:HOT1', 'write', tok(3), 31, 40, { rmw: false }); // 'remote' does not cover a direct client
  r.lockOp('a', 'rec:HOT1', 'write', tok(4), 35, 50, { rmw: false }); // ... so this overlap counts
  r.exit('b', 60);
  const rep = r.check(t);
  t.is(rep.perProperty['double-grant'], 1);
  t.regex(rep.violations[0]!.message, /^rec:HOT1/);
  only(rep, 'double-grant');
});

test('a fault going on when a request is sent, or affecting "all", ends trust too; a fault affecting someone else does not', (t) => {
  const r = new Run();
  r.start('a', 0);
  r.start('b', 0);
  r.start('x', 0);
  r.fault({ kind: 'cut-link', start: 5, end: 15, affects: ['a'] });
  r.lockOp('a', 'rec:HOT0', 'write', tok(1), 10, 40, { rmw: false }); // sent during the cut
  r.lockOp('b', 'rec:HOT0', 'write', tok(2), 20, 30, { rmw: false });
  r.lockOp('a', 'rec:HOT1', 'write', tok(3), 50, 90, { rmw: false });
  r.fault({ kind: 'pause-lockserver', start: 60, end: 65, affects: 'all' });
  r.lockOp('b', 'rec:HOT1', 'write', tok(4), 70, 80, { rmw: false });
  r.lockOp('a', 'rec:HOT2', 'write', tok(5), 100, 140, { rmw: false });
  r.fault({ kind: 'kill-client', start: 110, affects: ['x'] });
  r.lockOp('b', 'rec:HOT2', 'write', tok(6), 120, 130, { rmw: false });
  for (const c of ['a', 'b', 'x']) r.exit(c, 200);
  const rep = r.check(t);
  t.is(rep.perProperty['double-grant'], 1);
  const v = rep.violations[0]!;
  t.regex(v.message, /^rec:HOT2/);
  t.true(v.slice.some((l) => l.includes('kill-client')), 'the faults in between are in the slice');
});

test('a snapshot with two writers of one key: double-grant; one owner in two modes, or two readers: none', (t) => {
  const r = new Run();
  r.snaps.push({ t: T(1), server: 'primary', holders: [{ key: 'rec:HOT0', mode: 'read', owner: 'p1', token: '1' }, { key: 'rec:HOT0', mode: 'read', owner: 'p2', token: '2' }, { key: 'rec:HOT1', mode: 'read', owner: 'p1', token: '3' }, { key: 'rec:HOT1', mode: 'write', owner: 'p1', token: '4' }] });
  r.snaps.push({ t: T(2), server: 'secondary', holders: [{ key: 'rec:HOT2', mode: 'write', owner: 'p1', token: '5' }, { key: 'rec:COLD3', mode: 'read', owner: 'p9', token: '5' }, { key: 'rec:HOT2', mode: 'write', owner: 'p2', token: '6' }] });
  const rep = r.check(t);
  t.is(rep.perProperty['double-grant'], 1);
  only(rep, 'double-grant');
  const v = rep.violations[0]!;
  t.regex(v.message, /secondary's records/);
  t.is(v.slice.length, 1);
  const s = JSON.parse(v.slice[0]!) as ServerSnapshot;
  t.deepEqual(s.holders.map((h) => h.owner), ['p1', 'p2']);
});

test('a lost update in the store (two unfenced writers read the same value): lost-update with the writer\'s read and the previous write', (t) => {
  const r = new Run();
  r.req('a', 1, 'R', 'rec:HOT0', 0n);
  r.req('a', 2, 'W', 'rec:HOT0', 0n, 1);
  r.req('b', 3, 'R', 'rec:HOT0', 0n); // reads 1
  r.req('c', 4, 'R', 'rec:HOT0', 0n); // reads 1
  r.req('b', 5, 'W', 'rec:HOT0', 0n, 2);
  r.req('c', 6, 'W', 'rec:HOT0', 0n, 2); // lost b's increment
  r.req('a', 7, 'R', 'rec:HOT0', 0n);
  r.req('a', 8, 'W', 'rec:HOT0', 0n, 3);
  const rep = r.check(t);
  t.is(rep.perProperty['lost-update'], 1);
  only(rep, 'lost-update');
  const v = rep.violations[0]!;
  t.regex(v.message, /W by c on rec:HOT0 wrote 2 over 2/);
  const recs = v.slice.map((l) => JSON.parse(l) as StoreRecord);
  t.deepEqual(recs.map((x) => `${x.c} ${x.op} ${x.value}`), ['c R 1', 'b W 2', 'c W 2']);
  t.false(rep.store.finalEqualsWrites);
  t.deepEqual(rep.store.mismatchedKeys, ['rec:HOT0: final 3, 4 accepted writes']);
});

test('a stale token accepted by the store (a read, a write): lost-update; refused ones and token 0 are fine', (t) => {
  const r = new Run('ignore');
  r.req('b', 1, 'R', 'rec:HOT0', tok(5));
  r.req('b', 2, 'W', 'rec:HOT0', tok(5), 1);
  r.req('r', 3, 'R', 'rec:HOT0', 0n); // a reader: token 0
  r.req('a', 4, 'R', 'rec:HOT0', tok(4)); // stale, accepted
  const rep = r.check(t);
  t.is(rep.perProperty['lost-update'], 1);
  t.regex(rep.violations[0]!.message, /R by a on rec:HOT0 accepted with a stale fencing token/);
  const r2 = new Run('fenced');
  r2.req('b', 1, 'R', 'rec:HOT0', tok(5));
  r2.req('a', 4, 'R', 'rec:HOT0', tok(4)); // refused
  r2.req('a', 5, 'W', 'rec:HOT0', tok(4), 1); // refused
  r2.req('b', 6, 'W', 'rec:HOT0', tok(5), 1);
  const rep2 = r2.check(t);
  t.is(rep2.perProperty['lost-update'], 0);
  t.is(rep2.store.refused, 2);
  t.true(rep2.store.finalEqualsWrites);
});

test('a token that goes down after a release: tokens; read after read has no order; a cut is not a release', (t) => {
  const r = new Run();
  r.start('a', 0);
  r.start('b', 0);
  r.lockOp('a', 'rec:HOT0', 'write', tok(5), 10, 20, { rmw: false });
  r.lockOp('b', 'rec:HOT0', 'write', tok(4), 30, 40, { rmw: false });
  r.exit('a', 50);
  r.exit('b', 50);
  const rep = r.check(t);
  t.is(rep.perProperty['tokens'], 1);
  only(rep, 'tokens');
  t.regex(rep.violations[0]!.message, /b granted token \d+ \(write\) after a released token/);
  t.is(rep.violations[0]!.slice.length, 3);

  const r2 = new Run();
  r2.start('a', 0);
  r2.start('b', 0);
  r2.lockOp('a', 'rec:HOT0', 'read', tok(5), 10, 20);
  r2.lockOp('b', 'rec:HOT0', 'read', tok(4), 30, 40); // granted earlier for real, logged late: no order
  r2.lockOp('a', 'rec:HOT1', 'write', tok(9), 10, undefined, { rmw: false });
  r2.fault({ kind: 'kill-lockserver', start: 15, affects: 'remote' });
  r2.ev('a', 16, 'lost', { key: 'rec:HOT1' });
  r2.lockOp('b', 'rec:HOT1', 'write', tok(8), 30, 40, { rmw: false }); // below a's, but a never released: no claim
  r2.exit('a', 50);
  r2.exit('b', 50);
  t.is(r2.check(t).perProperty['tokens'], 0);

  const r3 = new Run();
  r3.start('a', 0);
  r3.lockOp('a', 'rec:HOT0', 'write', (1n << 63n) + 1n, 10, 20, { rmw: false });
  r3.exit('a', 30);
  const rep3 = r3.check(t);
  t.is(rep3.perProperty['tokens'], 2, 'the grant and the store request');
  t.regex(rep3.violations[0]!.message, /2\^63/);
  t.regex(rep3.violations[1]!.message, /2\^63/);
});

test('an invoke without outcome in a history that ends with exit: liveness; a killed client (no exit): none', (t) => {
  const r = new Run();
  r.start('a', 0);
  r.lockOp('a', 'rec:HOT0', 'write', tok(1), 10, 20);
  const op = r.nextOp('a');
  r.ev('a', 30, 'invoke', { op, key: 'rec:HOT1', mode: 'write', wait: 'timeout:50' });
  r.exit('a', 100);
  const rep = r.check(t);
  t.is(rep.perProperty['liveness'], 1);
  only(rep, 'liveness');
  t.regex(rep.violations[0]!.message, /invoke of rec:HOT1 \(op 2\) has no outcome/);

  const k = new Run();
  k.start('a', 0);
  k.lockOp('a', 'rec:HOT0', 'write', tok(1), 10, 20);
  const op2 = k.nextOp('a');
  k.ev('a', 30, 'invoke', { op: op2, key: 'rec:HOT1', mode: 'write', wait: 'wait' });
  k.fault({ kind: 'kill-client', start: 40, affects: ['a'] });
  const rep2 = k.check(t);
  for (const p of PROPERTIES) t.is(rep2.perProperty[p], 0, p);

  // Each answer kind and an error answer their invoke; an error after a grant answers nothing.
  const e = new Run();
  e.start('a', 0);
  let i = 0;
  for (const ans of ['locked', 'deadlock', 'timeout', 'cancelled', 'error'] as const) {
    const o = e.nextOp('a');
    e.ev('a', 10 + ++i, 'invoke', { op: o, key: 'rec:HOT0', mode: 'write' });
    e.ev('a', 10 + ++i, ans, ans === 'error' ? { op: o, err: 'CONNECTION lost' } : { op: o, key: 'rec:HOT0' });
  }
  e.lockOp('a', 'rec:HOT1', 'write', tok(1), 50, 60);
  e.ev('a', 61, 'error', { op: 6, key: 'rec:HOT1', err: 'UNLOCK failed' });
  e.exit('a', 70);
  const rep3 = e.check(t);
  for (const p of PROPERTIES) t.is(rep3.perProperty[p], 0, p);
  t.is(rep3.outcomes['error'], 2);

  // Answered twice.
  const d = new Run();
  d.start('a', 0);
  d.ev('a', 1, 'invoke', { op: 1, key: 'rec:HOT0', mode: 'write' });
  d.ev('a', 2, 'locked', { op: 1, key: 'rec:HOT0' });
  d.ev('a', 3, 'timeout', { op: 1, key: 'rec:HOT0' });
  d.exit('a', 4);
  t.is(d.check(t).perProperty['liveness'], 1);
});

test('outcome.json: hung clients (with their last events), leftovers, adversary findings; sqlite bounds', (t) => {
  const r = new Run();
  r.start('a', 0);
  for (let i = 0; i < 4; i++) r.lockOp('a', 'rec:HOT0', 'write', tok(i + 1), 10 + 10 * i, 15 + 10 * i);
  // sqlite: 2 commits logged, 1 request unfinished (killed), 1 refused.
  r.start('s', 0, 'sqlite');
  for (let i = 0; i < 4; i++) {
    const o = r.nextOp('s');
    r.ev('s', 100 + i * 10, 'invoke', { op: o, key: 'sqlite:counter', mode: 'write' });
    if (i < 2) {
      r.ev('s', 101 + i * 10, 'grant', { op: o, key: 'sqlite:counter', mode: 'write', token: '0' });
      r.ev('s', 102 + i * 10, 'write', { op: o, key: 'sqlite:counter', value: i + 1 });
      r.ev('s', 103 + i * 10, 'release', { op: o, key: 'sqlite:counter' });
    } else if (i === 2) r.ev('s', 101 + i * 10, 'locked', { op: o, key: 'sqlite:counter' });
  }
  r.outcome = {
    hung: [{ id: 'a', pid: 4242 }],
    leftovers: ['lock rec:HOT0 held by dead pid 999', 'netns chaos-c1'],
    sqlite: [{ key: 'counter', value: 3 }],
    adversary: [{ property: 'double-grant', message: 'impostor unlocked the victim' }, { property: 'weird', message: 'x' }],
  };
  const rep = r.check(t);
  t.is(rep.perProperty['liveness'], 1);
  t.is(rep.violations.find((v) => v.property === 'liveness')!.slice.length, 5);
  t.is(rep.perProperty['cleanup'], 3);
  t.is(rep.perProperty['double-grant'], 1);
  t.is(rep.perProperty['lost-update'], 0, 'sqlite 3 is within [2, 3]');
  for (const [value, bad] of [
    [1, true],
    [2, false],
    [4, true],
  ] as const) {
    r.outcome.sqlite = [{ key: 'sqlite:counter', value }];
    t.is(r.check(t).perProperty['lost-update'], bad ? 1 : 0, `sqlite value ${value}`);
  }
});

test('recovery: a killed holder\'s key handed off to another client is measured from the kill', (t) => {
  const r = new Run();
  r.start('a', 0);
  r.start('b', 0);
  r.lockOp('a', 'rec:HOT0', 'write', tok(1), 10, undefined);
  r.fault({ kind: 'kill-client', start: 20, affects: ['a'] });
  r.lockOp('b', 'rec:HOT0', 'write', tok(2), 15, 60); // granted at 16, after a's history stopped (13), before the kill
  r.exit('b', 100);
  const rep = r.check(t);
  t.is(rep.perProperty['double-grant'], 0);
  t.is(rep.recovery.handoffMs.n, 0, 'b was granted before the kill: not a hand-off after it');

  const r2 = new Run();
  r2.start('a', 0);
  r2.start('b', 0);
  r2.lockOp('a', 'rec:HOT0', 'write', tok(1), 10, undefined);
  r2.fault({ kind: 'kill-client', start: 20, affects: ['a'] });
  r2.lockOp('b', 'rec:HOT0', 'write', tok(2), 49, 60); // granted at 50
  r2.exit('b', 100);
  const rep2 = r2.check(t);
  t.is(rep2.recovery.handoffMs.n, 1);
  t.is(rep2.recovery.handoffMs.max, 30);
  t.deepEqual(rep2.recovery.byKind, { 'kill-client': { max: 30, n: 1 } });
  t.regex(formatReport(rep2), /hand-off after a fault: p50 30\.0 ms, worst 30\.0 ms \(n=1; kill-client worst 30\.0 ms\)/);
});

test('the report on failure: the seed to replay, each property\'s count, the slice; missing files are notes, not violations', (t) => {
  const r = new Run();
  r.start('a', 0);
  r.start('b', 0);
  r.lockOp('a', 'rec:HOT0', 'write', tok(1), 10, 30, { rmw: false });
  r.lockOp('b', 'rec:HOT0', 'write', tok(2), 20, 40, { rmw: false });
  r.exit('a', 50);
  r.exit('b', 50);
  const rep = r.check(t);
  const text = formatReport(rep, 1234);
  t.true(text.includes('double-grant: 1 violation\n'), text);
  for (const p of PROPERTIES.filter((q) => q !== 'double-grant')) t.true(text.includes(`${p}: 0 violations`), text);
  t.true(text.includes('FAILED: 1 violation; replay with --seed 1234'), text);
  t.true(text.includes('seed 1234'));
  t.true(text.includes('  {"t":'), 'the slice lines');

  const empty = testDir('chaos-check');
  t.teardown(() => fs.rmSync(empty, { recursive: true, force: true }));
  const rep2 = checkRun(empty);
  for (const p of PROPERTIES) t.is(rep2.perProperty[p], 0);
  t.true(rep2.notes.length >= 3);
});

test('check-cli prints the report, --json the CheckReport; the exit status says whether there were violations', (t) => {
  const cli = path.join(here, '..', 'chaos', 'check-cli.js');
  const clean = cleanRun().write();
  t.teardown(() => fs.rmSync(clean, { recursive: true, force: true }));
  let p = spawnSync(process.execPath, [cli, clean], { encoding: 'utf8' });
  t.is(p.status, 0, p.stderr);
  t.true(p.stdout.includes('double-grant: 0 violations'));
  p = spawnSync(process.execPath, [cli, clean, '--json'], { encoding: 'utf8' });
  t.is(p.status, 0);
  t.is((JSON.parse(p.stdout) as CheckReport).perProperty['tokens'], 0);

  const r = new Run();
  r.start('a', 0);
  r.lockOp('a', 'rec:HOT0', 'write', tok(5), 10, 20, { rmw: false });
  r.lockOp('a', 'rec:HOT0', 'write', tok(4), 30, 40, { rmw: false });
  r.exit('a', 50);
  const bad = r.write();
  t.teardown(() => fs.rmSync(bad, { recursive: true, force: true }));
  fs.writeFileSync(path.join(bad, 'run.json'), JSON.stringify({ seed: 99 }));
  p = spawnSync(process.execPath, [cli, bad], { encoding: 'utf8' });
  t.is(p.status, 1);
  t.true(p.stdout.includes('tokens: 1 violation'));
  t.true(p.stdout.includes('--seed 99'));
  p = spawnSync(process.execPath, [cli], { encoding: 'utf8' });
  t.is(p.status, 2);
});

test('performance: a million events (60 clients, 3 hot + 50 cold keys, a store record per read and write) - time logged', (t) => {
  const dir = testDir('chaos-check-perf');
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  fs.mkdirSync(path.join(dir, 'hist'));
  const clients = 60;
  const keys = [...Array.from({ length: 3 }, (_, i) => `rec:HOT${i}`), ...Array.from({ length: 50 }, (_, i) => `rec:COLD${i}`)];
  const hist: string[][] = Array.from({ length: clients }, () => []);
  const store: string[] = [];
  const ops = new Array<number>(clients).fill(0);
  const values = new Map<string, number>();
  let now = BASE;
  let events = 0;
  const line = (c: number, ev: HistoryEvent): void => {
    hist[c]!.push(JSON.stringify(ev));
    events++;
  };
  for (let c = 0; c < clients; c++) line(c, { t: (now++).toString(), c: `w${c}`, op: 0, ev: 'start', path: c % 3 ? 'lib-remote' : 'lib-direct' });
  // Operations one after the other (clean by construction): the cost measured is reading and judging.
  let token = 1000n << 44n;
  let i = 0;
  while (events < 1_000_000 - 6 - clients) {
    const c = i % clients;
    const key = keys[(i * 7919) % (i % 10 < 7 ? 3 : keys.length)]!;
    i++;
    const id = `w${c}`;
    const op = ++ops[c]!;
    const t0 = now;
    now += 1000n;
    const tk = (++token).toString();
    const v = values.get(key) ?? 0;
    line(c, { t: (t0 + 1n).toString(), c: id, op, ev: 'invoke', key, mode: 'write', wait: 'wait' });
    line(c, { t: (t0 + 2n).toString(), c: id, op, ev: 'grant', key, mode: 'write', token: tk });
    store.push(JSON.stringify({ t: (t0 + 3n).toString(), c: id, key, op: 'R', token: tk, value: v, ok: true, max: (token - 1n).toString() }));
    line(c, { t: (t0 + 3n).toString(), c: id, op, ev: 'read', key, value: v });
    store.push(JSON.stringify({ t: (t0 + 4n).toString(), c: id, key, op: 'W', token: tk, value: v + 1, ok: true, max: tk }));
    values.set(key, v + 1);
    line(c, { t: (t0 + 4n).toString(), c: id, op, ev: 'write', key, value: v + 1 });
    line(c, { t: (t0 + 5n).toString(), c: id, op, ev: 'release', key });
    line(c, { t: (t0 + 6n).toString(), c: id, op, ev: 'released', key });
  }
  for (let c = 0; c < clients; c++) {
    line(c, { t: (now + 100n).toString(), c: `w${c}`, op: 0, ev: 'exit', holding: [] });
    fs.writeFileSync(path.join(dir, 'hist', `w${c}.jsonl`), `${hist[c]!.join('\n')}\n`);
  }
  fs.writeFileSync(path.join(dir, 'store.jsonl'), `${store.join('\n')}\n`);
  fs.writeFileSync(path.join(dir, 'faults.jsonl'), `${JSON.stringify({ kind: 'kill-lockserver', target: 'x', start: (BASE + 5_000_000n).toString(), affects: 'remote' })}\n`);
  fs.writeFileSync(path.join(dir, 'outcome.json'), JSON.stringify({ hung: [], leftovers: [], adversary: [] }));
  const t0 = performance.now();
  const rep = checkRun(dir);
  const ms = performance.now() - t0;
  t.log(`checked ${events} events, ${store.length} store records in ${(ms / 1000).toFixed(1)} s`);
  for (const p of PROPERTIES) t.is(rep.perProperty[p], 0, `${p}: ${JSON.stringify(rep.violations.slice(0, 2))}`);
  t.is(rep.grants, rep.operations);
  t.true(rep.store.finalEqualsWrites);
});

test('a lost update by a writer without a token whose lock a fault took: a violation, or with unfencedAfterFault "note" only counted', (t) => {
  const r = new Run();
  r.start('a', 0, 'shim-remote');
  r.start('b', 0, 'shim-remote');
  // a holds (no token), reads 0; its lock server dies; b is granted, reads 0, writes 1; a writes 1 late.
  const op = r.nextOp('a');
  r.ev('a', 10, 'invoke', { op, key: 'fcntl:HOT0', mode: 'write' });
  r.ev('a', 11, 'grant', { op, key: 'fcntl:HOT0', mode: 'write', token: '0' });
  const ra = r.req('a', 12, 'R', 'fcntl:HOT0', 0n);
  r.ev('a', 12, 'read', { op, key: 'fcntl:HOT0', value: ra.value });
  r.fault({ kind: 'kill-lockserver', start: 20, affects: ['a'] });
  r.lockOp('b', 'fcntl:HOT0', 'write', 0n, 100, 120);
  r.req('a', 250, 'W', 'fcntl:HOT0', 0n, ra.value + 1);
  r.ev('a', 250, 'write', { op, key: 'fcntl:HOT0', value: ra.value + 1 });
  r.ev('a', 300, 'release', { op, key: 'fcntl:HOT0' });
  r.exit('a', 400);
  r.exit('b', 400);
  const rep = r.check(t);
  t.is(rep.perProperty['lost-update'], 1);
  t.is(rep.store.unfencedAfterFault, 1);
  t.regex(rep.violations[0]!.message, /no fencing token, and a fault that affects it \(kill-lockserver\) had taken its lock/);
  t.is(rep.perProperty['double-grant'], 0);
  const rep2 = r.check(t, { unfencedAfterFault: 'note' });
  t.is(rep2.perProperty['lost-update'], 0);
  t.is(rep2.store.unfencedAfterFault, 1);
  t.true(rep2.notes.some((n) => n.includes('not counted')));
  t.regex(formatReport(rep2), /1 lost update\(s\) by writers without a token after a fault took their lock/);
});

test('paths that log no grant (sqlite: invoke then write or error) answer their invokes; a grant without mode takes its invoke\'s', (t) => {
  const r = new Run();
  r.start('s', 0, 'sqlite');
  for (let i = 0; i < 3; i++) {
    const o = r.nextOp('s');
    r.ev('s', 10 + i * 10, 'invoke', { op: o, key: 'sqlite:counter', mode: 'write', wait: 'timeout:10000' });
    if (i < 2) r.ev('s', 15 + i * 10, 'write', { op: o, key: 'sqlite:counter', value: i + 1 });
    else r.ev('s', 15 + i * 10, 'error', { op: o, key: 'sqlite:counter', err: 'status 1 database is locked' });
  }
  r.exit('s', 100);
  // Two readers whose grants name no mode: their invokes say read.
  r.start('a', 0);
  r.start('b', 0);
  for (const [c, at] of [['a', 10], ['b', 12]] as const) {
    const o = r.nextOp(c);
    r.ev(c, at, 'invoke', { op: o, key: 'rec:HOT0', mode: 'read' });
    r.ev(c, at + 1, 'grant', { op: o, key: 'rec:HOT0', token: tok(at).toString() });
    r.ev(c, at + 20, 'release', { op: o, key: 'rec:HOT0' });
  }
  r.exit('a', 100);
  r.exit('b', 100);
  r.outcome!.sqlite = [{ key: 'sqlite:counter', value: 2 }];
  const rep = r.check(t);
  for (const p of PROPERTIES) t.is(rep.perProperty[p], 0, `${p} ${JSON.stringify(rep.violations)}`);
  t.false(rep.notes.some((n) => n.includes('named no mode')));
});

/* ------------------------------------------------------------------ */
/* A simulated service with real log delays: no false alarms, and teeth */
/* ------------------------------------------------------------------ */

interface SimOptions {
  seed: number;
  clients: number;
  ops: number;
  /** the store refuses stale tokens (fenced) or accepts everything */
  store: 'fenced' | 'ignore';
  /** a broken service: grants a write while another holds the key, now and then */
  broken?: boolean;
  /** a broken service: gives the next grant of a key a token below the last one's, now and then */
  tokenBug?: boolean;
}

/**
 * A discrete-event simulation of clients, a lock service (FIFO, readers
 * share, per-key increasing tokens) and the store, with the delays real
 * processes have: a grant is logged some time after it happened, a release
 * some time before the unlock. Faults: a holder paused past the keep-alive
 * bound (the service drops it; it resumes and writes late) and a holder
 * killed (the service frees its lock later). Times in µs.
 */
function simulate(o: SimOptions): Run {
  let x = o.seed >>> 0 || 1;
  const rnd = (): number => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x / 0x100000000;
  };
  const between = (a: number, b: number): number => a + Math.floor(rnd() * (b - a + 1));
  const r = new Run(o.store);
  // The event queue: a binary heap by (time, sequence).
  const heap: { t: number; s: number; f: () => void }[] = [];
  let seq = 0;
  const at = (t: number, f: () => void): void => {
    heap.push({ t, s: seq++, f });
    for (let i = heap.length - 1; i > 0; ) {
      const p = (i - 1) >> 1;
      if (heap[p]!.t < heap[i]!.t || (heap[p]!.t === heap[i]!.t && heap[p]!.s < heap[i]!.s)) break;
      [heap[p], heap[i]] = [heap[i]!, heap[p]!];
      i = p;
    }
  };
  const pop = (): { t: number; f: () => void } | undefined => {
    const top = heap[0];
    const last = heap.pop()!;
    if (heap.length) {
      heap[0] = last;
      for (let i = 0; ; ) {
        const a = 2 * i + 1;
        const b = a + 1;
        let m = i;
        const less = (p: number, q: number): boolean => heap[p]!.t < heap[q]!.t || (heap[p]!.t === heap[q]!.t && heap[p]!.s < heap[q]!.s);
        if (a < heap.length && less(a, m)) m = a;
        if (b < heap.length && less(b, m)) m = b;
        if (m === i) break;
        [heap[m], heap[i]] = [heap[i]!, heap[m]!];
        i = m;
      }
    }
    return top;
  };
  const ms = (us: number): number => us / 1000;

  interface KeyState {
    holders: Map<string, LockModeName>;
    queue: { c: string; mode: LockModeName; grant: (token: bigint) => void }[];
    token: bigint;
  }
  const keys = new Map<string, KeyState>();
  const ks = (k: string): KeyState => {
    let s = keys.get(k);
    if (!s) keys.set(k, (s = { holders: new Map(), queue: [], token: tok(0) }));
    return s;
  };
  const compatible = (s: KeyState, mode: LockModeName): boolean => s.holders.size === 0 || (mode === 'read' && [...s.holders.values()].every((m) => m === 'read'));
  const grantNext = (s: KeyState): void => {
    while (s.queue.length && (compatible(s, s.queue[0]!.mode) || (o.broken && rnd() < 0.05))) {
      const w = s.queue.shift()!;
      s.holders.set(w.c, w.mode);
      s.token += o.tokenBug && rnd() < 0.1 ? -1n : 1n;
      w.grant(s.token);
    }
  };
  const unlock = (k: string, c: string): void => {
    const s = ks(k);
    if (!s.holders.delete(c)) return;
    grantNext(s);
  };

  const keyNames = ['rec:HOT0', 'rec:HOT1', 'rec:COLD0', 'rec:COLD1', 'rec:COLD2'];
  let incarnations = 0;
  const startClient = (t0: number, remaining: number): void => {
    const c = `sim-${incarnations++}`;
    r.start(c, ms(t0));
    let op = 0;
    let dead = false;
    const next = (t: number, left: number): void => {
      if (left === 0) {
        at(t + 1, () => r.exit(c, ms(t + 1)));
        return;
      }
      // The request is sent at t (the service cannot grant it before).
      at(t, () => ask(t, left));
    };
    const ask = (t: number, left: number): void => {
      const key = keyNames[rnd() < 0.7 ? between(0, 1) : between(2, 4)]!;
      const mode: LockModeName = rnd() < 0.3 ? 'read' : 'write';
      const thisOp = ++op;
      r.ev(c, ms(t), 'invoke', { op: thisOp, key, mode, wait: 'wait' });
      const s = ks(key);
      s.queue.push({
        c,
        mode,
        grant: (token) => {
          const g = now;
          const logGrant = g + between(0, 300); // logged late: a slow process
          at(logGrant, () => {
            if (dead) return;
            r.ev(c, ms(logGrant), 'grant', { op: thisOp, key, mode, token: token.toString() });
            const tR = logGrant + between(1, 50);
            at(tR, () => {
              const rr = r.req(c, ms(tR), 'R', key, mode === 'write' ? token : 0n);
              r.ev(c, ms(tR), rr.ok ? 'read' : 'refused', { op: thisOp, key, value: rr.value });
              const fate = rnd();
              if (mode === 'write' && fate < 0.03) {
                // Paused past the keep-alive: the service drops the lock at +2000; the client resumes at +5000.
                r.fault({ kind: 'pause-client', start: ms(tR + 1), end: ms(tR + 5000), affects: [c], target: c });
                at(tR + 2000, () => unlock(key, c));
                at(tR + 5000, () => {
                  const w = r.req(c, ms(tR + 5000), 'W', key, token, rr.value + 1);
                  r.ev(c, ms(tR + 5000), w.ok ? 'write' : 'refused', { op: thisOp, key, value: rr.value + 1 });
                  r.ev(c, ms(tR + 5001), 'release', { op: thisOp, key });
                  next(tR + 5100, left - 1);
                });
                return;
              }
              if (fate < 0.05) {
                // Killed while holding: its history just ends; the service frees the lock a little later.
                dead = true;
                r.fault({ kind: 'kill-client', start: ms(tR + 1), affects: [c], target: c });
                at(tR + between(100, 1000), () => unlock(key, c));
                at(tR + 1500, () => startClient(tR + 1500, left - 1));
                return;
              }
              const tW = tR + between(1, 200);
              at(tW, () => {
                if (mode === 'write' && rr.ok) {
                  const w = r.req(c, ms(tW), 'W', key, token, rr.value + 1);
                  r.ev(c, ms(tW), w.ok ? 'write' : 'refused', { op: thisOp, key, value: rr.value + 1 });
                }
                const tRel = tW + 1;
                r.ev(c, ms(tRel), 'release', { op: thisOp, key });
                const tUnl = tRel + between(0, 300); // the unlock lands late
                at(tUnl, () => {
                  unlock(key, c);
                  r.ev(c, ms(tUnl), 'released', { op: thisOp, key });
                  next(tUnl + between(0, 100), left - 1);
                });
              });
            });
          });
        },
      });
      grantNext(s);
    };
    at(t0 + 1, () => next(t0 + 1, remaining));
  };
  let now = 0;
  for (let i = 0; i < o.clients; i++) startClient(i * 7, o.ops);
  for (let e = pop(); e; e = pop()) {
    now = e.t;
    e.f();
  }
  return r;
}

test('a simulated service with late logging, pauses past the keep-alive and kills: no false alarm over many seeds', (t) => {
  let ops = 0;
  let faults = 0;
  let refused = 0;
  for (let seed = 1; seed <= 20; seed++) {
    const rep = simulate({ seed, clients: 8, ops: 150, store: 'fenced' }).check(t);
    for (const p of PROPERTIES) t.is(rep.perProperty[p], 0, `seed ${seed} ${p}: ${JSON.stringify(rep.violations.slice(0, 1))}`);
    t.true(rep.store.finalEqualsWrites);
    ops += rep.operations;
    faults += Object.values(rep.faults).reduce((a, b) => a + b, 0);
    refused += rep.store.refused;
  }
  t.log(`${ops} operations, ${faults} faults, ${refused} late requests refused by the store`);
  t.true(refused > 0, 'paused holders came back late and were refused');
});

test('the simulated service broken three ways: the checker finds each', (t) => {
  const sum = (opts: Omit<SimOptions, 'seed' | 'clients' | 'ops'>): Record<string, number> => {
    const total: Record<string, number> = {};
    for (let seed = 1; seed <= 5; seed++) {
      const rep = simulate({ seed, clients: 8, ops: 150, ...opts }).check(t);
      for (const p of PROPERTIES) total[p] = (total[p] ?? 0) + rep.perProperty[p];
    }
    return total;
  };
  const ignore = sum({ store: 'ignore' });
  t.true(ignore['lost-update']! > 0, 'a store that ignores tokens lets paused holders overwrite');
  t.is(ignore['double-grant'], 0);
  const broken = sum({ store: 'fenced', broken: true });
  t.true(broken['double-grant']! > 0, 'a service that grants a held key');
  const tokens = sum({ store: 'fenced', tokenBug: true });
  t.true(tokens['tokens']! > 0, 'tokens that go down');
  t.log(JSON.stringify({ ignore, broken, tokens }));
});
