// deadlock-table.test.ts - deadlock detection in the shm table (jdls_table.c,
// section 8; docs/deadlocks.md): cycles of owners, the victim rule, the
// policies, reports, and no false positive when a release races the look.
import test from 'ava';
import { makeOwner, type Owner, type LockTable } from '../src/locks/table.js';
import { JdlsError } from '../src/errors.js';
import { C } from '../src/native.js';
import { tableEnv, DEFAULT_FILE as F, allRows, waitUntil, withTimeout } from './helpers/table-env.js';

const owner = (tid: number): Owner => makeOwner({ ownerTid: tid });

/** Settles with the error code, or 'granted'. */
function outcome(p: Promise<unknown>): Promise<string> {
  return p.then(() => 'granted', (e: unknown) => (e instanceof JdlsError ? e.code : String(e)));
}

function waiting(table: LockTable): number {
  return allRows(table).filter((r) => r.state === 'waiting').length;
}

test('two owners: the wait that closes the cycle is refused with DEADLOCK, holding nothing; the other is granted once it releases', async (t) => {
  const { table } = tableEnv(t);
  const a = owner(1);
  const b = owner(2);
  t.true(table.tryLock(a, F, 'K1', 'write').granted);
  t.true(table.tryLock(b, F, 'K2', 'write').granted);
  const aWaits = outcome(table.lock(a, F, 'K2', 'write', { breakDeadlock: true }));
  await waitUntil(() => waiting(table) === 1, 5000, 'A waiting');
  const err = await t.throwsAsync<JdlsError>(table.lock(b, F, 'K1', 'write', { breakDeadlock: true }));
  t.is(err?.code, 'DEADLOCK');
  t.is(waiting(table), 1, 'the refused wait left the queue; A still waits');
  t.like(table.header(), { deadlocksFound: 1, deadlocksBroken: 1, deadlockReports: 1 });
  const rep = table.deadlockReport(1);
  t.is(rep?.members, 2);
  t.is(rep?.m[rep.victim]?.ownerTid, 2, 'the victim is B, the youngest wait');
  t.deepEqual(rep?.m.map((m) => m.key.toString()).sort(), ['K1', 'K2']);
  t.true(table.unlock(b, F, 'K2'));
  t.is(await withTimeout(aWaits, 5000, 'A granted'), 'granted');
});

test('report policy, or a request that did not ask: the cycle is reported, nobody is refused', async (t) => {
  for (const [policy, ask] of [[C.DEADLOCK_REPORT, true], [C.DEADLOCK_BREAK, false]] as const) {
    const { table } = tableEnv(t);
    table.setDeadlockPolicy(policy);
    const a = owner(1);
    const b = owner(2);
    t.true(table.tryLock(a, F, 'K1', 'write').granted);
    t.true(table.tryLock(b, F, 'K2', 'write').granted);
    const ac = new AbortController();
    const aWaits = outcome(table.lock(a, F, 'K2', 'write', { breakDeadlock: ask, signal: ac.signal }));
    await waitUntil(() => waiting(table) === 1, 5000, 'A waiting');
    const bWaits = outcome(table.lock(b, F, 'K1', 'write', { breakDeadlock: ask }));
    await waitUntil(() => table.header().deadlockReports === 1, 5000, 'the cycle reported');
    t.like(table.header(), { deadlocksFound: 1, deadlocksBroken: 0 });
    t.is(table.deadlockReport(1)?.victim, -1);
    t.is(waiting(table), 2, 'both still wait');
    ac.abort();
    t.is(await aWaits, 'ABORTED');
    t.true(table.unlock(a, F, 'K1'));
    t.is(await withTimeout(bWaits, 5000, 'B granted'), 'granted');
  }
});

test('off: no detection at all', async (t) => {
  const { table } = tableEnv(t);
  table.setDeadlockPolicy(C.DEADLOCK_OFF);
  const a = owner(1);
  const b = owner(2);
  table.tryLock(a, F, 'K1', 'write');
  table.tryLock(b, F, 'K2', 'write');
  const ac = new AbortController();
  const aWaits = outcome(table.lock(a, F, 'K2', 'write', { breakDeadlock: true, signal: ac.signal }));
  await waitUntil(() => waiting(table) === 1, 5000, 'A waiting');
  const bWaits = outcome(table.lock(b, F, 'K1', 'write', { breakDeadlock: true }));
  await waitUntil(() => waiting(table) === 2, 5000, 'B waiting');
  t.like(table.header(), { deadlocksFound: 0, deadlockReports: 0 });
  ac.abort();
  t.is(await aWaits, 'ABORTED');
  table.unlock(a, F, 'K1');
  t.is(await withTimeout(bWaits, 5000, 'B granted'), 'granted');
});

test('an upgrade cycle: two readers both asking to write', async (t) => {
  const { table } = tableEnv(t);
  const a = owner(1);
  const b = owner(2);
  t.true(table.tryLock(a, F, 'R', 'read').granted);
  t.true(table.tryLock(b, F, 'R', 'read').granted);
  const aUp = outcome(table.lock(a, F, 'R', 'write', { breakDeadlock: true }));
  await waitUntil(() => waiting(table) === 1, 5000, 'A waiting to upgrade');
  t.is(await outcome(table.lock(b, F, 'R', 'write', { breakDeadlock: true })), 'DEADLOCK');
  t.like(table.status(b, F, 'R'), { code: C.RL_READ }, 'B keeps its read lock');
  t.true(table.unlock(b, F, 'R'));
  t.is(await withTimeout(aUp, 5000, 'A upgraded'), 'granted');
  t.like(table.status(a, F, 'R'), { code: C.RL_WRITE });
});

test('three owners, and the victim is the youngest wait that asked even when the closing one did not', async (t) => {
  const { table } = tableEnv(t);
  const [a, b, c] = [owner(1), owner(2), owner(3)];
  table.tryLock(a, F, 'KA', 'write');
  table.tryLock(b, F, 'KB', 'write');
  table.tryLock(c, F, 'KC', 'write');
  const aWaits = outcome(table.lock(a, F, 'KB', 'write', { breakDeadlock: true }));
  await waitUntil(() => waiting(table) === 1, 5000, 'A waiting');
  const bWaits = outcome(table.lock(b, F, 'KC', 'write', { breakDeadlock: true }));
  await waitUntil(() => waiting(table) === 2, 5000, 'B waiting');
  // C closes the cycle but did not ask: B, the youngest that asked, is refused.
  const cWaits = outcome(table.lock(c, F, 'KA', 'write'));
  t.is(await withTimeout(bWaits, 5000, 'B refused'), 'DEADLOCK');
  const rep = table.deadlockReport(1);
  t.is(rep?.members, 3);
  t.is(rep?.m[rep.victim]?.ownerTid, 2);
  // The cycle is broken: B gives up KB, A gets it, and so on.
  table.unlock(b, F, 'KB');
  t.is(await withTimeout(aWaits, 5000, 'A granted'), 'granted');
  table.unlock(a, F, 'KA');
  table.unlock(a, F, 'KB');
  t.is(await withTimeout(cWaits, 5000, 'C granted'), 'granted');
});

test('FIFO edges: a wait queued behind an earlier waiter that waits for it is a cycle', async (t) => {
  // A holds K; B holds J and queues for K behind nobody; then A waits for J
  // => cycle A -> B (holder of J) -> A (holder of K).  And a third owner C
  // queued on K before B makes B wait for C too, which is no cycle by itself.
  const { table } = tableEnv(t);
  const [a, b, c] = [owner(1), owner(2), owner(3)];
  table.tryLock(a, F, 'K', 'read');
  table.tryLock(b, F, 'J', 'write');
  const cWaits = outcome(table.lock(c, F, 'K', 'write'));
  await waitUntil(() => waiting(table) === 1, 5000, 'C waiting');
  // B asks to READ K: compatible with A's read, but FIFO puts it behind C.
  const bWaits = outcome(table.lock(b, F, 'K', 'read', { breakDeadlock: true }));
  await waitUntil(() => waiting(table) === 2, 5000, 'B waiting behind C');
  t.is(table.header().deadlockReports, 0, 'no cycle yet');
  t.is(await outcome(table.lock(a, F, 'J', 'read', { breakDeadlock: true })), 'DEADLOCK');
  table.unlock(a, F, 'K');
  t.is(await withTimeout(cWaits, 5000, 'C granted'), 'granted');
  table.unlock(c, F, 'K');
  t.is(await withTimeout(bWaits, 5000, 'B granted'), 'granted');
});

test('no false positive when the holder releases while the cycle is being closed (many rounds)', async (t) => {
  const { table } = tableEnv(t);
  const a = owner(1);
  const b = owner(2);
  let refused = 0;
  for (let i = 0; i < 200; i++) {
    t.true(table.tryLock(a, F, 'K1', 'write').granted);
    t.true(table.tryLock(b, F, 'K2', 'write').granted);
    const aWaits = outcome(table.lock(a, F, 'K2', 'write', { breakDeadlock: true }));
    // B releases K2 (A's wait is granted) and only then waits for K1: no
    // cycle ever exists, so B must never be refused.
    table.unlock(b, F, 'K2');
    const bWaits = outcome(table.lock(b, F, 'K1', 'write', { breakDeadlock: true }));
    t.is(await aWaits, 'granted');
    table.unlock(a, F, 'K2');
    table.unlock(a, F, 'K1');
    const r = await withTimeout(bWaits, 5000, 'B granted');
    if (r !== 'granted') refused++;
    table.unlock(b, F, 'K1');
  }
  t.is(refused, 0);
  t.is(table.header().deadlocksFound, 0);
});

test('fencing tokens: every grant gets a larger one, per key and across keys; a conversion is a new grant', async (t) => {
  const { table } = tableEnv(t);
  const a = owner(1);
  const b = owner(2);
  const seen: bigint[] = [];
  for (let i = 0; i < 50; i++) {
    const who = i % 2 ? a : b;
    const g = await table.lock(who, F, 'T', 'write');
    if (g.token === undefined) return t.fail('no token');
    seen.push(g.token);
    t.like(table.status(who, F, 'T'), { code: C.RL_WRITE, token: g.token });
    table.unlock(who, F, 'T');
  }
  t.true(seen.every((v, i) => i === 0 || v > (seen[i - 1] ?? 0n)));
  const r = table.tryLock(a, F, 'U', 'read');
  const w = table.tryLock(a, F, 'U', 'write');
  t.true(r.granted && w.granted && (w.token ?? 0n) > (r.token ?? 0n));
  // A hand-off to a waiter carries a token too.
  const wait = table.lock(b, F, 'U', 'write');
  table.unlock(a, F, 'U');
  const handed = await wait;
  t.true((handed.token ?? 0n) > (w.granted ? w.token ?? 0n : 0n));
});

test('tokens: the epoch and the floor only ever raise them', (t) => {
  const { table } = tableEnv(t);
  const a = owner(1);
  const first = table.tryLock(a, F, 'E', 'write');
  table.unlock(a, F, 'E');
  table.setTokenEpoch(3n);
  const second = table.tryLock(a, F, 'E', 'write');
  table.unlock(a, F, 'E');
  t.true(second.granted && second.token !== undefined && second.token >> 44n === 3n);
  t.true(first.granted && second.granted && (second.token ?? 0n) > (first.token ?? 0n));
  table.setTokenEpoch(1n); // lower: ignored
  t.true(table.raiseTokenFloor((7n << 44n) + 5n), 'a primary\'s token of epoch 7 raises ours to 8');
  t.false(table.raiseTokenFloor((7n << 44n) + 9n), 'already above it: no change');
  const third = table.tryLock(a, F, 'E', 'write');
  t.true(third.granted && third.token !== undefined && third.token >> 44n === 8n);
  t.throws(() => table.raiseTokenFloor(((1n << 19n) - 1n) << 44n), { code: 'BAD_ARGUMENT' });
  // One request must not burn the epochs: at most MAX_FENCE_JUMP (1024) above ours.
  t.throws(() => table.raiseTokenFloor((8n + 1025n) << 44n), { code: 'BAD_ARGUMENT', message: /more than 1024 above/ });
  t.true(table.raiseTokenFloor((8n + 1024n) << 44n));
});

test('across processes: locks taken in one order never deadlock, so no wait is ever refused (no false positive under real races)', async (t) => {
  const env = tableEnv(t);
  const procs = [1, 2, 3, 4].map((seed) => env.node('node-locker', ['mix', '150', 'ordered', String(seed)]));
  for (const p of procs) {
    const [rounds, refused] = await p.expect('DONE', 60_000);
    t.is(rounds, '150');
    t.is(refused, '0', 'a refusal here would be a false positive: ordered locking has no cycle');
  }
  t.is(env.table.header().deadlocksFound, 0);
});

test('across processes: locks taken in random orders do deadlock, every cycle is broken, and every process finishes', async (t) => {
  const env = tableEnv(t);
  const procs = [11, 12, 13, 14].map((seed) => env.node('node-locker', ['mix', '150', 'random', String(seed)]));
  let refused = 0;
  for (const p of procs) {
    const [rounds, n] = await p.expect('DONE', 60_000);
    t.is(rounds, '150');
    refused += Number(n);
  }
  const h = env.table.header();
  t.log(`${refused} cycles broken in 600 rounds`);
  t.is(h.deadlocksBroken, refused, 'every refusal is one broken cycle');
  t.true(h.deadlocksFound >= h.deadlocksBroken);
  t.is(allRows(env.table).length, 0, 'nothing left held or queued');
});
