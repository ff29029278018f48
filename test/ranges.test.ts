// ranges.test.ts - the POSIX byte-range model (src/locks/ranges.ts): range
// conversion, RangeSet split/merge, LockSpace conflicts, the sqlite3 lock
// sequence, lockf mapping, and seeded randomized comparison with a per-byte
// brute-force model. Pure computation: no processes, no tables.
import test from 'ava';
import {
  END_INFINITY, KERNEL_END, LOCKF, LockSpace, RangeSet, formatRange, fromPosix, isRangeFault, lockfAction,
  modesConflict, posixLen, range, toPosix, type Holding, type Range, type RangeMode, type Segment,
} from '../src/locks/ranges.js';
import { JdlsError } from '../src/errors.js';

const INF = END_INFINITY;
const R = (start: bigint, len: bigint): Range => range(start, len);
const seg = (start: bigint, end: bigint, mode: RangeMode): Segment => ({ start, end, mode });
const G = 1n << 30n;

// ------------------------------------------------------------------ ranges

test('fromPosix: positive, zero (to infinity) and negative lengths', (t) => {
  t.deepEqual(fromPosix(10n, 5n), { start: 10n, end: 15n });
  t.deepEqual(fromPosix(10n, 0n), { start: 10n, end: INF });
  t.deepEqual(fromPosix(0n, 0n), { start: 0n, end: INF });
  // Negative l_len: the |len| bytes BEFORE start; the byte at start is not included.
  t.deepEqual(fromPosix(10n, -5n), { start: 5n, end: 10n });
  t.deepEqual(fromPosix(10n, -10n), { start: 0n, end: 10n });
});

test('fromPosix: refuses with the errno fcntl would give', (t) => {
  const errno = (x: ReturnType<typeof fromPosix>): string | undefined => (isRangeFault(x) ? x.errno : undefined);
  t.is(errno(fromPosix(10n, -11n)), 'EINVAL');          // would begin before 0
  t.is(errno(fromPosix(0n, -1n)), 'EINVAL');
  t.is(errno(fromPosix(-1n, 5n)), 'EINVAL');            // negative start
  t.is(errno(fromPosix(INF, 1n)), 'EINVAL');            // start beyond the last byte
  t.is(errno(fromPosix(INF, 0n)), 'EINVAL');
  t.is(errno(fromPosix(INF - 1n, 2n)), 'EOVERFLOW');    // runs past 2^64-1
  t.is(errno(fromPosix(1n, INF)), 'EOVERFLOW');
  t.is(errno(fromPosix(1 as unknown as bigint, 1n)), 'EINVAL');
  const f = fromPosix(3n, -4n);
  t.true(isRangeFault(f) && /before offset 0/.test(f.message));
});

test('fromPosix: the last byte, 2^63, and the kernel space', (t) => {
  const last = fromPosix(INF - 1n, 1n);
  t.deepEqual(last, { start: INF - 1n, end: INF });
  // Reaching the last byte IS "to infinity": same bytes, reported with len 0 (as Linux does at OFFSET_MAX).
  t.is(posixLen(last as Range), 0n);
  t.deepEqual(fromPosix(1n << 63n, 1n), { start: 1n << 63n, end: (1n << 63n) + 1n });
  t.deepEqual(fromPosix(0n, INF), { start: 0n, end: INF });
  // Kernel space: off_t is signed.
  t.like(fromPosix(KERNEL_END, 1n, { kernel: true }), { errno: 'EINVAL' });
  t.like(fromPosix(KERNEL_END - 1n, 2n, { kernel: true }), { errno: 'EOVERFLOW' });
  t.deepEqual(fromPosix(KERNEL_END - 1n, 1n, { kernel: true }), { start: KERNEL_END - 1n, end: INF });
  t.deepEqual(fromPosix(5n, 0n, { kernel: true }), { start: 5n, end: INF });
  t.deepEqual(fromPosix(5n, 10n, { kernel: true }), { start: 5n, end: 15n });
});

test('range() throws BAD_ARGUMENT naming the errno; helpers report POSIX pairs', (t) => {
  const e = t.throws(() => range(2n, -3n), { instanceOf: JdlsError });
  t.is(e?.code, 'BAD_ARGUMENT');
  t.regex(e?.message ?? '', /^EINVAL: /);
  t.regex(t.throws(() => range(INF - 1n, 5n))?.message ?? '', /^EOVERFLOW: /);
  t.deepEqual(toPosix(R(7n, 0n)), { start: 7n, len: 0n });
  t.deepEqual(toPosix(R(7n, -2n)), { start: 5n, len: 2n });
  t.is(formatRange(R(G + 2n, 510n)), '1073741826-1073742335');
  t.is(formatRange(R(0n, 0n)), '0-EOF');
  t.true(modesConflict('write', 'read'));
  t.true(modesConflict('read', 'write'));
  t.true(modesConflict('write', 'write'));
  t.false(modesConflict('read', 'read'));
});

test('RangeSet refuses malformed ranges and modes', (t) => {
  const s = new RangeSet();
  for (const bad of [{ start: 5n, end: 5n }, { start: 6n, end: 5n }, { start: -1n, end: 5n }, { start: 0n, end: INF + 1n },
    { start: 0, end: 5 } as unknown as Range]) {
    t.is(t.throws(() => s.set(bad, 'read'), { instanceOf: JdlsError })?.code, 'BAD_ARGUMENT');
    t.is(t.throws(() => s.unlock(bad), { instanceOf: JdlsError })?.code, 'BAD_ARGUMENT');
  }
  t.is(t.throws(() => s.set(R(0n, 1n), 'exclusive' as RangeMode), { instanceOf: JdlsError })?.code, 'BAD_ARGUMENT');
  t.true(s.isEmpty());
});

// ------------------------------------------------------------------ RangeSet

test('unlock splits: middle leaves two pieces, head and tail trim', (t) => {
  const s = new RangeSet();
  t.true(s.set(R(10n, 20n), 'write'));                  // [10,30)
  t.true(s.unlock(R(15n, 5n)));                         // middle
  t.deepEqual(s.holdings(), [seg(10n, 15n, 'write'), seg(20n, 30n, 'write')]);
  t.true(s.unlock(R(10n, 2n)));                         // head
  t.deepEqual(s.holdings(), [seg(12n, 15n, 'write'), seg(20n, 30n, 'write')]);
  t.true(s.unlock(R(28n, 0n)));                         // tail, to infinity
  t.deepEqual(s.holdings(), [seg(12n, 15n, 'write'), seg(20n, 28n, 'write')]);
  t.false(s.unlock(R(15n, 5n)));                        // the gap: nothing held
  t.false(s.unlock(R(0n, 12n)));
  t.true(s.unlock(R(14n, 7n)));                         // spans the gap: trims both
  t.deepEqual(s.holdings(), [seg(12n, 14n, 'write'), seg(21n, 28n, 'write')]);
  t.true(s.unlock(R(0n, 0n)));
  t.true(s.isEmpty());
});

test('set merges adjacent and overlapping same-mode ranges, not different modes', (t) => {
  const s = new RangeSet();
  s.set(R(0n, 10n), 'read');
  s.set(R(10n, 10n), 'read');                           // adjacent
  t.deepEqual(s.holdings(), [seg(0n, 20n, 'read')]);
  s.set(R(15n, 10n), 'read');                           // overlapping
  t.deepEqual(s.holdings(), [seg(0n, 25n, 'read')]);
  s.set(R(40n, 5n), 'read');
  s.set(R(30n, 5n), 'read');
  t.deepEqual(s.holdings(), [seg(0n, 25n, 'read'), seg(30n, 35n, 'read'), seg(40n, 45n, 'read')]);
  s.set(R(20n, 22n), 'read');                           // bridges three into one
  t.deepEqual(s.holdings(), [seg(0n, 45n, 'read')]);
  s.set(R(45n, 5n), 'write');                           // adjacent, other mode: stays separate
  t.deepEqual(s.holdings(), [seg(0n, 45n, 'read'), seg(45n, 50n, 'write')]);
  t.false(s.set(R(5n, 5n), 'read'));                    // already held so: no change
  t.false(s.set(R(0n, 45n), 'read'));
  t.is(s.size, 2);
});

test('upgrade of part of a read range gives three pieces; downgrade restores one', (t) => {
  const s = new RangeSet();
  s.set(R(0n, 100n), 'read');
  t.true(s.set(R(40n, 20n), 'write'));
  t.deepEqual(s.holdings(), [seg(0n, 40n, 'read'), seg(40n, 60n, 'write'), seg(60n, 100n, 'read')]);
  t.is(s.modeAt(39n), 'read');
  t.is(s.modeAt(40n), 'write');
  t.is(s.modeAt(59n), 'write');
  t.is(s.modeAt(60n), 'read');
  t.is(s.modeAt(100n), undefined);
  t.true(s.holds(R(45n, 10n), 'write'));
  t.false(s.holds(R(35n, 10n), 'write'));
  t.true(s.set(R(40n, 20n), 'read'));                   // downgrade: merges back
  t.deepEqual(s.holdings(), [seg(0n, 100n, 'read')]);
  // Downgrade of part of a write range, overlapping its edge.
  const w = new RangeSet();
  w.set(R(10n, 10n), 'write');
  w.set(R(15n, 10n), 'read');
  t.deepEqual(w.holdings(), [seg(10n, 15n, 'write'), seg(15n, 25n, 'read')]);
  // Upgrade spanning a gap and both modes.
  w.set(R(30n, 5n), 'read');
  w.set(R(12n, 20n), 'write');
  t.deepEqual(w.holdings(), [seg(10n, 32n, 'write'), seg(32n, 35n, 'read')]);
});

test('to-infinity ranges interact with finite ones', (t) => {
  const s = new RangeSet();
  s.set(R(100n, 0n), 'read');                           // [100, inf)
  s.set(R(200n, 10n), 'write');
  t.deepEqual(s.holdings(), [seg(100n, 200n, 'read'), seg(200n, 210n, 'write'), seg(210n, INF, 'read')]);
  t.true(s.holds(R(300n, 0n), 'read'));
  t.false(s.holds(R(150n, 0n), 'read'));
  s.unlock(R(150n, 0n));                                // unlock to infinity from inside
  t.deepEqual(s.holdings(), [seg(100n, 150n, 'read')]);
  s.set(R(50n, 0n), 'write');                           // covers everything from 50
  t.deepEqual(s.holdings(), [seg(50n, INF, 'write')]);
  s.unlock(R(60n, 10n));
  t.deepEqual(s.holdings(), [seg(50n, 60n, 'write'), seg(70n, INF, 'write')]);
  t.deepEqual(s.holdings().map(toPosix), [{ start: 50n, len: 10n }, { start: 70n, len: 0n }]);
  // A finite range up to the last byte merges with infinity: they are the same bytes.
  const e = new RangeSet();
  e.set(R(INF - 10n, 0n), 'read');
  e.set(R(INF - 20n, 10n), 'read');
  t.deepEqual(e.holdings(), [seg(INF - 20n, INF, 'read')]);
  e.unlock(R(0n, 0n));
  t.true(e.isEmpty());
});

test('ranges at 2^63 and near 2^64-1', (t) => {
  const s = new RangeSet();
  const H = 1n << 63n;
  s.set(R(H - 1n, 2n), 'write');                        // straddles 2^63
  s.set(R(H + 1n, 3n), 'read');
  t.deepEqual(s.holdings(), [seg(H - 1n, H + 1n, 'write'), seg(H + 1n, H + 4n, 'read')]);
  s.unlock(R(H, 2n));
  t.deepEqual(s.holdings(), [seg(H - 1n, H, 'write'), seg(H + 2n, H + 4n, 'read')]);
  s.set(R(INF - 1n, 1n), 'write');                      // the very last byte
  s.set(R(INF - 3n, 2n), 'write');
  t.deepEqual(s.holdings().at(-1), seg(INF - 3n, INF, 'write'));
  s.unlock(R(INF - 2n, 1n));
  t.deepEqual(s.holdings().slice(-2), [seg(INF - 3n, INF - 2n, 'write'), seg(INF - 1n, INF, 'write')]);
  t.is(posixLen(s.holdings().at(-1)!), 0n);
  t.is(s.modeAt(INF - 1n), 'write');
  t.is(s.modeAt(INF - 2n), undefined);
  t.deepEqual(s.unlockAll().length, 4);
  t.true(s.isEmpty());
});

test('holdings() is a copy; segments are values', (t) => {
  const s = new RangeSet();
  s.set(R(0n, 10n), 'read');
  const h = s.holdings();
  h.pop();
  t.is(s.size, 1);
  const before = s.holdings()[0];
  s.set(R(5n, 1n), 'write');
  t.deepEqual(before, seg(0n, 10n, 'read'));           // the handed-out segment did not change
});

test('many segments: one unlock clears them all', (t) => {
  const s = new RangeSet();
  for (let i = 0n; i < 2000n; i++) s.set(R(i * 3n, 2n), i % 2n === 0n ? 'read' : 'write');
  t.is(s.size, 2000);
  t.true(s.unlock(R(1n, 5996n)));
  t.deepEqual(s.holdings(), [seg(0n, 1n, 'read'), seg(5997n, 5999n, 'write')]);
});

// ------------------------------------------------------------------ LockSpace

test('conflicts: read/read never, write with anything, never with oneself', (t) => {
  const sp = new LockSpace();
  t.true(sp.tryLock('a', R(0n, 10n), 'read').granted);
  t.true(sp.tryLock('b', R(5n, 10n), 'read').granted);  // read vs read
  t.is(sp.conflicts('c', R(0n, 100n), 'read'), undefined);
  t.deepEqual(sp.conflicts('c', R(8n, 1n), 'write'), { owner: 'a', start: 0n, end: 10n, mode: 'read', len: 10n });
  t.deepEqual(sp.conflicts('a', R(0n, 10n), 'write'), { owner: 'b', start: 5n, end: 15n, mode: 'read', len: 10n });
  t.is(sp.conflicts('a', R(0n, 5n), 'write'), undefined); // only a's own lock there
  const r = sp.tryLock('a', R(0n, 5n), 'write');        // upgrade own part
  t.deepEqual(r, { granted: true, changed: true });
  t.deepEqual(sp.holdings('a'), [seg(0n, 5n, 'write'), seg(5n, 10n, 'read')]);
  const refused = sp.tryLock('b', R(3n, 0n), 'read');
  t.false(refused.granted);
  t.like(refused, { conflict: { owner: 'a', start: 0n, end: 5n, mode: 'write', len: 5n } });
  t.deepEqual(sp.holdings('b'), [seg(5n, 15n, 'read')]); // refused: unchanged
  t.deepEqual(sp.tryLock('b', R(5n, 10n), 'read'), { granted: true, changed: false });
});

test('conflicts: the lowest conflicting segment among owners, ties to the oldest owner', (t) => {
  const sp = new LockSpace();
  sp.tryLock('late', R(50n, 10n), 'write');
  sp.tryLock('early', R(20n, 10n), 'read');
  sp.tryLock('early', R(70n, 0n), 'write');
  t.like(sp.conflicts('x', R(0n, 0n), 'write'), { owner: 'early', start: 20n });
  t.like(sp.conflicts('x', R(0n, 0n), 'read'), { owner: 'late', start: 50n });
  t.like(sp.conflicts('x', R(65n, 10n), 'read'), { owner: 'early', start: 70n, len: 0n, end: INF });
  t.like(sp.conflicts('late', R(0n, 0n), 'read'), { owner: 'early', start: 70n });
  const ties = new LockSpace();
  ties.tryLock('first', R(10n, 10n), 'read');
  ties.tryLock('second', R(10n, 5n), 'read');
  t.like(ties.conflicts('x', R(12n, 1n), 'write'), { owner: 'first' });
  // A conflicting segment that began before the asked range is reported whole.
  t.deepEqual(ties.conflicts('x', R(19n, 5n), 'write'), { owner: 'first', start: 10n, end: 20n, mode: 'read', len: 10n });
});

test('LockSpace: unlock, unlockAll (close() or death), owners and listing', (t) => {
  const sp = new LockSpace<string>();
  sp.tryLock('p1', R(0n, 10n), 'write');
  sp.tryLock('p2', R(10n, 10n), 'read');
  sp.tryLock('p3', R(10n, 5n), 'read');
  sp.tryLock('p2', R(100n, 0n), 'write');
  t.deepEqual(sp.owners(), ['p1', 'p2', 'p3']);
  t.deepEqual(sp.listing().map((h: Holding<string>) => `${h.owner}:${h.start}+${h.len}:${h.mode}`),
    ['p1:0+10:write', 'p2:10+10:read', 'p3:10+5:read', 'p2:100+0:write']);
  t.false(sp.unlock('p1', R(50n, 1n)));
  t.false(sp.unlock('nobody', R(0n, 0n)));
  t.true(sp.unlock('p1', R(0n, 0n)));
  t.deepEqual(sp.owners(), ['p2', 'p3']);               // an owner holding nothing is gone
  t.deepEqual(sp.unlockAll('p2'), [seg(10n, 20n, 'read'), seg(100n, INF, 'write')]);
  t.deepEqual(sp.unlockAll('p2'), []);
  t.deepEqual(sp.holdings('p2'), []);
  t.true(sp.tryLock('p1', R(15n, 0n), 'write').granted);
  t.false(sp.tryLock('p1', R(10n, 1n), 'write').granted);
  sp.unlockAll('p3');
  sp.unlockAll('p1');
  t.true(sp.isEmpty());
  t.deepEqual(sp.listing(), []);
});

test('LockSpace with non-string owner keys', (t) => {
  const a = { pid: 1 };
  const b = { pid: 2 };
  const sp = new LockSpace<{ pid: number }>();
  sp.tryLock(a, R(0n, 1n), 'write');
  t.is(sp.conflicts(b, R(0n, 1n), 'read')?.owner, a);
  t.is(sp.conflicts({ pid: 1 }, R(0n, 1n), 'read')?.owner, a); // identity, not structure
  t.is(sp.conflicts(a, R(0n, 1n), 'write'), undefined);
});

// ------------------------------------------------------------------ sqlite3

test('the sqlite3 lock sequence (two connections) gives the expected holdings at each step', (t) => {
  // os_unix.c: PENDING_BYTE 0x40000000, RESERVED_BYTE +1, SHARED_FIRST +2, SHARED_SIZE 510.
  const PENDING = 0x40000000n;
  const RESERVED = PENDING + 1n;
  const SHARED = PENDING + 2n;
  const SHARED_END = SHARED + 510n;
  const sp = new LockSpace();
  const ok = (o: string, r: Range, m: RangeMode): void => { t.true(sp.tryLock(o, r, m).granted, `${o} ${formatRange(r)} ${m}`); };

  // A: NONE -> SHARED: read PENDING byte, read the shared range, drop the PENDING byte.
  ok('A', R(PENDING, 1n), 'read');
  t.deepEqual(sp.holdings('A'), [seg(PENDING, RESERVED, 'read')]);
  ok('A', R(SHARED, 510n), 'read');
  t.deepEqual(sp.holdings('A'), [seg(PENDING, RESERVED, 'read'), seg(SHARED, SHARED_END, 'read')]);
  t.true(sp.unlock('A', R(PENDING, 1n)));
  t.deepEqual(sp.holdings('A'), [seg(SHARED, SHARED_END, 'read')]);
  // B: also SHARED.
  ok('B', R(PENDING, 1n), 'read');
  ok('B', R(SHARED, 510n), 'read');
  sp.unlock('B', R(PENDING, 1n));
  // A: SHARED -> RESERVED (write on the RESERVED byte). B cannot reserve now.
  ok('A', R(RESERVED, 1n), 'write');
  t.deepEqual(sp.holdings('A'), [seg(RESERVED, SHARED, 'write'), seg(SHARED, SHARED_END, 'read')]);
  t.like(sp.tryLock('B', R(RESERVED, 1n), 'write'), { granted: false, conflict: { owner: 'A', start: RESERVED, len: 1n, mode: 'write' } });
  // A: RESERVED -> PENDING (write on PENDING byte): merges with RESERVED.
  ok('A', R(PENDING, 1n), 'write');
  t.deepEqual(sp.holdings('A'), [seg(PENDING, SHARED, 'write'), seg(SHARED, SHARED_END, 'read')]);
  // A new reader C is kept out by PENDING.
  t.like(sp.tryLock('C', R(PENDING, 1n), 'read'), { granted: false, conflict: { owner: 'A', start: PENDING, len: 2n } });
  // A: PENDING -> EXCLUSIVE refused while B reads (sqlite busy-waits: F_SETLK only).
  t.like(sp.tryLock('A', R(SHARED, 510n), 'write'), { granted: false, conflict: { owner: 'B', start: SHARED, len: 510n, mode: 'read' } });
  // B: unlock all, start 0 len 0.
  t.true(sp.unlock('B', R(0n, 0n)));
  t.deepEqual(sp.owners(), ['A']);
  ok('A', R(SHARED, 510n), 'write');
  t.deepEqual(sp.holdings('A'), [seg(PENDING, SHARED_END, 'write')]);  // one exclusive piece
  t.deepEqual(sp.listing(), [{ owner: 'A', start: PENDING, end: SHARED_END, mode: 'write', len: 512n }]);
  // EXCLUSIVE -> SHARED: downgrade the shared range, drop PENDING and RESERVED (start PENDING, len 2).
  ok('A', R(SHARED, 510n), 'read');
  t.deepEqual(sp.holdings('A'), [seg(PENDING, SHARED, 'write'), seg(SHARED, SHARED_END, 'read')]);
  t.true(sp.unlock('A', R(PENDING, 2n)));
  t.deepEqual(sp.holdings('A'), [seg(SHARED, SHARED_END, 'read')]);
  // SHARED -> NONE: start 0, len 0.
  t.true(sp.unlock('A', R(0n, 0n)));
  t.true(sp.isEmpty());
});

// ------------------------------------------------------------------ lockf

test('lockf maps to ranges relative to the current offset', (t) => {
  t.deepEqual(lockfAction(LOCKF.F_LOCK, 100n, 10n), { op: 'lock', wait: true, mode: 'write', range: { start: 100n, end: 110n } });
  t.deepEqual(lockfAction(LOCKF.F_TLOCK, 100n, 10n), { op: 'lock', wait: false, mode: 'write', range: { start: 100n, end: 110n } });
  t.deepEqual(lockfAction(LOCKF.F_ULOCK, 100n, 0n), { op: 'unlock', range: { start: 100n, end: INF } });
  t.deepEqual(lockfAction(LOCKF.F_LOCK, 100n, -10n), { op: 'lock', wait: true, mode: 'write', range: { start: 90n, end: 100n } });
  // glibc's F_TEST probes with a READ lock: only another owner's write lock fails it.
  t.deepEqual(lockfAction(LOCKF.F_TEST, 0n, 0n), { op: 'test', mode: 'read', range: { start: 0n, end: INF } });
  t.like(lockfAction(LOCKF.F_LOCK, 5n, -6n), { errno: 'EINVAL' });
  t.like(lockfAction(9, 0n, 1n), { errno: 'EINVAL' });
  t.like(lockfAction(LOCKF.F_LOCK, INF - 1n, 2n), { errno: 'EOVERFLOW' });
  t.like(lockfAction(LOCKF.F_LOCK, KERNEL_END - 1n, 2n, { kernel: true }), { errno: 'EOVERFLOW' });
  t.deepEqual(lockfAction(LOCKF.F_TLOCK, KERNEL_END - 1n, 1n, { kernel: true }),
    { op: 'lock', wait: false, mode: 'write', range: { start: KERNEL_END - 1n, end: INF } });
  t.deepEqual(LOCKF, { F_ULOCK: 0, F_LOCK: 1, F_TLOCK: 2, F_TEST: 3 });
  // F_TEST against a space: a read lock of another owner does not fail it, a write lock does.
  const sp = new LockSpace();
  sp.tryLock('other', R(100n, 5n), 'read');
  const test1 = lockfAction(LOCKF.F_TEST, 100n, 5n);
  if (isRangeFault(test1) || test1.op !== 'test') return t.fail();
  t.is(sp.conflicts('me', test1.range, test1.mode), undefined);
  sp.tryLock('other', R(102n, 1n), 'write');
  t.like(sp.conflicts('me', test1.range, test1.mode), { owner: 'other', start: 102n });
});

// ------------------------------------------------------------------ randomized

/** mulberry32: a small deterministic PRNG. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let x = a;
    x = Math.imul(x ^ (x >>> 15), x | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

// The brute-force model: CELLS cells at `base`; cells 0..63 are single bytes,
// cell 64 stands for every byte from base+64 to infinity.
const CELLS = 65;
type Cells = (RangeMode | undefined)[];

function randomRange(rnd: () => number, base: bigint): { r: Range; lo: number; hi: number } {
  const lo = Math.floor(rnd() * CELLS);
  const toInf = lo === CELLS - 1 || rnd() < 0.2;
  const hi = toInf ? CELLS : lo + 1 + Math.floor(rnd() * Math.min(CELLS - 1 - lo, rnd() < 0.5 ? 6 : 64));
  const start = base + BigInt(lo);
  return { r: { start, end: toInf ? INF : base + BigInt(hi) }, lo, hi };
}

/** Run-length encoding of cells: what a coalesced RangeSet must hold. */
function rle(cells: Cells, base: bigint): Segment[] {
  const out: Segment[] = [];
  for (let i = 0; i < CELLS;) {
    const m = cells[i];
    let j = i + 1;
    while (j < CELLS && cells[j] === m) j++;
    if (m) out.push({ start: base + BigInt(i), end: j === CELLS ? INF : base + BigInt(j), mode: m });
    i = j;
  }
  return out;
}

for (const [name, base] of [['0', 0n], ['2^63-32', (1n << 63n) - 32n], ['2^64-65 (last cell is the last byte)', INF - 65n]] as const) {
  test(`randomized: RangeSet equals a per-byte model (base ${name})`, (t) => {
    for (let seed = 1; seed <= 40; seed++) {
      const rnd = prng(seed * 7919);
      const s = new RangeSet();
      const cells: Cells = new Array<RangeMode | undefined>(CELLS).fill(undefined);
      for (let step = 0; step < 150; step++) {
        const { r, lo, hi } = randomRange(rnd, base);
        const op = rnd();
        const before = rle(cells, base);
        let changed: boolean;
        if (op < 0.6) {
          const mode: RangeMode = rnd() < 0.5 ? 'read' : 'write';
          changed = s.set(r, mode);
          for (let i = lo; i < hi; i++) cells[i] = mode;
        } else if (op < 0.97) {
          changed = s.unlock(r);
          for (let i = lo; i < hi; i++) cells[i] = undefined;
        } else {
          changed = s.unlockAll().length > 0;
          cells.fill(undefined);
        }
        const want = rle(cells, base);
        const got = s.holdings();
        if (JSON.stringify(got, big) !== JSON.stringify(want, big)) {
          t.fail(`seed ${seed} step ${step}: ${JSON.stringify(got, big)} != ${JSON.stringify(want, big)}`);
          return;
        }
        if (changed !== (JSON.stringify(before, big) !== JSON.stringify(want, big))) {
          t.fail(`seed ${seed} step ${step}: changed=${changed} is wrong`);
          return;
        }
        // Spot checks of the queries against the cells.
        const probe = Math.floor(rnd() * CELLS);
        if (s.modeAt(base + BigInt(probe)) !== cells[probe]) return t.fail(`seed ${seed} step ${step}: modeAt ${probe}`);
      }
    }
    t.pass();
  });
}

test('randomized: LockSpace conflicts and grants equal a per-byte model of three owners', (t) => {
  const owners = ['a', 'b', 'c'] as const;
  for (let seed = 1; seed <= 40; seed++) {
    const rnd = prng(seed * 104729);
    const sp = new LockSpace();
    const cells = new Map<string, Cells>(owners.map((o) => [o, new Array<RangeMode | undefined>(CELLS).fill(undefined)]));
    let order: string[] = [];                           // oldest holder first, as the space keeps them
    for (let step = 0; step < 150; step++) {
      const o = owners[Math.floor(rnd() * owners.length)]!;
      const mine = cells.get(o)!;
      const { r, lo, hi } = randomRange(rnd, 0n);
      const mode: RangeMode = rnd() < 0.6 ? 'read' : 'write';
      const op = rnd();
      // Expected F_GETLK answer: among other owners' segments overlapping r and
      // conflicting with mode, the lowest start; ties to the oldest owner.
      let want: Holding<string> | undefined;
      for (const other of order) {
        if (other === o) continue;
        for (const sg of rle(cells.get(other)!, 0n)) {
          if (sg.end > r.start && sg.start < r.end && modesConflict(mode, sg.mode) && (!want || sg.start < want.start)) {
            want = { owner: other, start: sg.start, end: sg.end, mode: sg.mode, len: posixLen(sg) };
          }
          if (want && want.owner === other) break;
        }
      }
      const got = sp.conflicts(o, r, mode);
      if (JSON.stringify(got, big) !== JSON.stringify(want, big)) {
        return t.fail(`seed ${seed} step ${step}: conflicts ${JSON.stringify(got, big)} != ${JSON.stringify(want, big)}`);
      }
      if (op < 0.6) {
        const res = sp.tryLock(o, r, mode);
        if (res.granted !== (want === undefined)) return t.fail(`seed ${seed} step ${step}: tryLock`);
        if (res.granted) for (let i = lo; i < hi; i++) mine[i] = mode;
      } else if (op < 0.95) {
        sp.unlock(o, r);
        for (let i = lo; i < hi; i++) mine[i] = undefined;
      } else {
        sp.unlockAll(o);
        mine.fill(undefined);
      }
      const holds = mine.some((m) => m !== undefined);
      if (holds && !order.includes(o)) order.push(o);
      if (!holds) order = order.filter((x) => x !== o);
      if (JSON.stringify(sp.owners()) !== JSON.stringify(order)) return t.fail(`seed ${seed} step ${step}: owners`);
      for (const x of owners) {
        if (JSON.stringify(sp.holdings(x), big) !== JSON.stringify(rle(cells.get(x)!, 0n), big)) {
          return t.fail(`seed ${seed} step ${step}: holdings of ${x}`);
        }
      }
      // The space's invariant: no byte is held by two owners in conflicting modes.
      for (let i = 0; i < CELLS; i++) {
        const modes = owners.map((x) => cells.get(x)![i]).filter((m) => m !== undefined);
        if (modes.length > 1 && modes.includes('write')) return t.fail(`seed ${seed} step ${step}: conflicting holders at ${i}`);
      }
    }
  }
  t.pass();
});

/** JSON.stringify replacer for bigints. */
function big(_k: string, v: unknown): unknown {
  return typeof v === 'bigint' ? `${v}n` : v;
}
