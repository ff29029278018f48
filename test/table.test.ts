// table.test.ts - the lock table's semantics through LockTable, in process,
// with jdls-locker (C) and Node children where another process must ask.
// Each test has its own installation (test/helpers/table-env.ts).
import test from 'ava';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { LockTable, makeOwner, fileId, groupsFor, type Owner } from '../src/locks/table.js';
import { JdlsError } from '../src/errors.js';
import { native, C } from '../src/native.js';
import { Worker } from 'node:worker_threads';
import { tableEnv, DEFAULT_FILE as F, allRows, waitUntil, withTimeout, nodeFixture } from './helpers/table-env.js';

/** Owners of this process that differ by thread id (distinct lock owners). */
const owner = (n: number, spec: { port?: number; ip?: string } = {}): Owner => makeOwner({ ownerTid: 1_000_000 + n, ...spec });

/** The JdlsError of a call that must fail, whether it throws or rejects. */
async function failure(fn: () => unknown): Promise<JdlsError> {
  try {
    await fn();
  } catch (e) {
    if (e instanceof JdlsError) return e;
    throw e;
  }
  throw new Error('expected a JdlsError, the call succeeded');
}

/** Track a promise's state without awaiting it. */
function track<T>(p: Promise<T>): { p: Promise<T>; state: () => 'pending' | 'resolved' | 'rejected' } {
  let s: 'pending' | 'resolved' | 'rejected' = 'pending';
  p.then(() => { s = 'resolved'; }, () => { s = 'rejected'; });
  return { p, state: () => s };
}

const tick = (): Promise<void> => new Promise((r) => setTimeout(r, 30));

test('re-lock by the same owner succeeds and leaves one entry', async (t) => {
  const { table } = tableEnv(t);
  const a = owner(1);
  const first = table.tryLock(a, F, 'K', 'write');
  t.true(first.granted && typeof first.token === 'bigint' && first.token > 0n);
  // A re-lock in the same mode is no new grant: the same fencing token.
  t.deepEqual(table.tryLock(a, F, 'K', 'write'), first);
  t.deepEqual(await table.lock(a, F, 'K', 'write'), { token: first.granted ? first.token : -1n });
  t.is(allRows(table).length, 1);
  t.true(table.unlock(a, F, 'K'));
  t.false(table.unlock(a, F, 'K'));
  t.is(allRows(table).length, 0);
});

test('READ locks coexist across owners and processes; WRITE is refused to others', async (t) => {
  const env = tableEnv(t);
  const { table } = env;
  const a = owner(1), b = owner(2);
  t.true(table.tryLock(a, F, 'R', 'read').granted);
  t.true(table.tryLock(b, F, 'R', 'read').granted);
  const c = env.locker(['try', 'R', 'read']);
  t.deepEqual(await c.expect('GRANTED'), []);
  await c.success();
  const d = env.locker(['try', 'R', 'write']);
  const [port, pid] = await d.expect('CONFLICT');
  t.is(Number(port), 0);
  t.is(Number(pid), process.pid);
  await d.success();
  t.is(table.check(), 0);
});

test('WRITE blocks READ and READ blocks WRITE; NOWAIT names the holder', (t) => {
  const { table } = tableEnv(t);
  const a = owner(1, { port: 77, ip: '10.1.2.3' }), b = owner(2);
  t.true(table.tryLock(a, F, 'W', 'write').granted);
  const r = table.tryLock(b, F, 'W', 'read');
  t.false(r.granted);
  if (!r.granted) {
    t.deepEqual(r.holder, { pid: process.pid, ownerPid: process.pid, ownerTid: a.ownerTid, port: 77, mode: 'write', ip: '10.1.2.3' });
  }
  t.true(table.unlock(a, F, 'W'));
  const v6 = owner(3, { ip: '::1', port: 5 });
  t.true(table.tryLock(v6, F, 'W', 'read').granted);
  const w = table.tryLock(b, F, 'W', 'write');
  t.false(w.granted);
  if (!w.granted) {
    t.is(w.holder.mode, 'read');
    t.is(w.holder.ip, '::1');
    t.is(w.holder.port, 5);
  }
});

test('shared -> exclusive upgrade: alone it succeeds, beside another reader NOWAIT fails', async (t) => {
  const { table } = tableEnv(t);
  const a = owner(1), b = owner(2);
  t.true(table.tryLock(a, F, 'U1', 'read').granted);
  t.true(table.tryLock(a, F, 'U1', 'write').granted);
  t.is(table.status(a, F, 'U1').code, 2);
  t.is(table.status(b, F, 'U1').code, -2);
  t.is(allRows(table).length, 1, 'the upgrade converts in place');

  t.true(table.tryLock(a, F, 'U2', 'read').granted);
  t.true(table.tryLock(b, F, 'U2', 'read').granted);
  const up = table.tryLock(a, F, 'U2', 'write');
  t.false(up.granted);
  if (!up.granted) t.is(up.holder.ownerTid, b.ownerTid);
  t.is(table.status(a, F, 'U2').code, 1, 'a failed upgrade keeps the shared lock');

  // A waiting upgrade is granted when the other reader leaves, and replaces
  // the shared entry.
  const p = track(table.lock(a, F, 'U2', 'write'));
  await tick();
  t.is(p.state(), 'pending');
  t.true(table.unlock(b, F, 'U2'));
  await withTimeout(p.p, 5000, 'upgrade');
  t.is(table.status(a, F, 'U2').code, 2);
  t.is(allRows(table).filter((r) => r.key.toString() === 'U2').length, 1);
  t.is(table.check(), 0);
});

test('downgrade exclusive -> shared lets queued readers in', async (t) => {
  const { table } = tableEnv(t);
  const a = owner(1), b = owner(2);
  t.true(table.tryLock(a, F, 'D', 'write').granted);
  const p = track(table.lock(b, F, 'D', 'read'));
  await tick();
  t.is(p.state(), 'pending');
  t.true(table.tryLock(a, F, 'D', 'read').granted);
  await withTimeout(p.p, 5000, 'reader after downgrade');
  t.is(table.status(a, F, 'D').code, 1);
  t.is(table.status(b, F, 'D').code, 1);
  t.is(table.check(), 0);
});

test('unlock returns false when this owner does not hold the key', (t) => {
  const { table } = tableEnv(t);
  const a = owner(1), b = owner(2);
  t.false(table.unlock(a, F, 'nothing'));
  t.true(table.tryLock(a, F, 'X', 'write').granted);
  t.false(table.unlock(b, F, 'X'));
  t.is(table.status(a, F, 'X').code, 2);
});

test('unlockAll: all files, or one file, of one owner only', (t) => {
  const { table } = tableEnv(t);
  const a = owner(1), b = owner(2);
  const f1 = fileId(1, 1), f2 = fileId(2, 1);
  for (const k of ['k1', 'k2', 'k3']) t.true(table.tryLock(a, f1, k, 'write').granted);
  for (const k of ['k1', 'k2']) t.true(table.tryLock(a, f2, k, 'read').granted);
  t.true(table.tryLock(b, f1, 'x', 'write').granted);
  t.is(table.unlockAll(a, f1), 3);
  t.is(table.status(a, f2, 'k1').code, 1);
  t.is(table.unlockAll(a), 2);
  t.is(table.unlockAll(a), 0);
  t.is(table.status(b, f1, 'x').code, 2);
  t.is(allRows(table).length, 1);
});

test('status: RECORDLOCKED codes 2/1/0/-1/-2 with the first holder', async (t) => {
  const env = tableEnv(t);
  const { table } = env;
  const a = owner(1, { port: 31 }), b = owner(2);
  t.deepEqual(table.status(a, F, 'S'), { code: 0 });
  table.tryLock(a, F, 'S', 'write');
  t.is(table.status(a, F, 'S').code, 2);
  const other = table.status(b, F, 'S');
  t.is(other.code, -2);
  t.is(other.holder?.ownerTid, a.ownerTid);
  t.is(other.holder?.port, 31);
  t.is(other.holder?.mode, 'write');
  table.tryLock(a, F, 'S', 'read');
  t.is(table.status(a, F, 'S').code, 1);
  t.is(table.status(b, F, 'S').code, -1);
  // The same answer from another process (C).
  const c = env.locker(['status', 'S']);
  t.deepEqual(await c.expect('STATUS'), ['-1', '31', String(process.pid)]);
  await c.success();
});

test('keys: 512 bytes are fine, 513 are KEY_TOO_LONG (string and Buffer, every call)', async (t) => {
  const { table } = tableEnv(t);
  const a = owner(1);
  const k512 = 'k'.repeat(512);
  t.true(table.tryLock(a, F, k512, 'write').granted);
  t.true(table.tryLock(a, F, Buffer.alloc(512, 0xff), 'write').granted);
  const wide = 'é'.repeat(256); // 512 bytes in UTF-8
  t.true(table.tryLock(a, F, wide, 'read').granted);
  const keys = allRows(table).map((r) => r.key);
  t.true(keys.some((k) => k.equals(Buffer.from(k512))));
  t.true(keys.some((k) => k.equals(Buffer.alloc(512, 0xff))));
  t.true(keys.some((k) => k.toString('utf8') === wide));
  for (const long of ['k'.repeat(513), Buffer.alloc(513, 1), 'é'.repeat(257)]) {
    t.is((await failure(() => table.tryLock(a, F, long, 'write'))).code, 'KEY_TOO_LONG');
    t.is((await failure(() => table.lock(a, F, long, 'write'))).code, 'KEY_TOO_LONG');
    t.is((await failure(() => table.unlock(a, F, long))).code, 'KEY_TOO_LONG');
    t.is((await failure(() => table.status(a, F, long))).code, 'KEY_TOO_LONG');
  }
  // The C core refuses too, not only the TypeScript check in front of it.
  const raw = new native.Table(table.path, false, 0, 0, 0, table.releaseDir);
  t.teardown(() => raw.close());
  const tooLong = native.constants.RC['KEY_TOO_LONG']?.value ?? 0;
  t.is(raw.tryLock(a.packed, F.packed, 'k'.repeat(513), 2, C.REQ_NOWAIT), tooLong);
  t.is(raw.tryLock(a.packed, F.packed, Buffer.alloc(513), 2, 0), tooLong);
  t.is(raw.unlock(a.packed, F.packed, 'k'.repeat(513)), tooLong);
  t.is(raw.status(a.packed, F.packed, 'k'.repeat(5000)).code, tooLong);
  t.true(tooLong < -3, 'an error is never a RECORDLOCKED value');
  t.is(allRows(table).length, 3);
  t.is(table.check(), 0);
});

test('a full group is TABLE_FULL (Error 37), never an overwrite', async (t) => {
  const env = tableEnv(t, { locks: 4, perGroup: 2 });
  const { table } = env;
  const h = table.header();
  t.is(h.ngroups, 2);
  t.is(h.capacity, 4);
  const a = owner(1), b = owner(2);
  const granted: string[] = [];
  let full = 0;
  for (let i = 0; i < 64; i++) {
    const key = `FULL${i}`;
    try {
      t.true(table.tryLock(a, F, key, 'write').granted);
      granted.push(key);
    } catch (e) {
      t.true(e instanceof JdlsError);
      t.is((e as JdlsError).code, 'TABLE_FULL');
      t.is((e as JdlsError).jbaseError, 37);
      full++;
    }
  }
  t.is(granted.length, 4);
  t.is(full, 60);
  t.is(table.check(), 0);
  // Every granted key is there, whole, with its owner: nothing overwritten.
  const rows = allRows(table);
  t.deepEqual(rows.map((r) => r.key.toString()).sort(), [...granted].sort());
  for (const r of rows) t.is(r.ownerTid, a.ownerTid);
  // What needs no new entry still works; what needs one is refused cleanly.
  const first = granted[0] ?? '';
  t.true(table.tryLock(a, F, first, 'write').granted, 're-lock needs no entry');
  t.false(table.tryLock(b, F, first, 'write').granted, 'NOWAIT conflict reports the holder');
  t.is((await failure(() => table.lock(b, F, first, 'write'))).code, 'TABLE_FULL', 'no entry to queue in');
  const c = env.locker(['try', 'FULL999', 'write']);
  const [name] = await c.expect('ERROR');
  t.is(name, 'TABLE_FULL');
  t.is((await c.exited).code, 1);
  // Freeing one entry makes room in its group again.
  t.true(table.unlock(a, F, first));
  const g = table.keyHash(F, first) % h.ngroups;
  const next = Array.from({ length: 64 }, (_, i) => `FULL${i}`).find((k) => !granted.includes(k) && table.keyHash(F, k) % h.ngroups === g);
  t.truthy(next);
  t.true(table.tryLock(b, F, next ?? '', 'write').granted);
  t.is(table.check(), 0);
  t.is(allRows(table).length, 4);
});

test('sizing: groups rounded up to a prime; 13000,50 -> 263 x 50; default 3020,20 -> 151', (t) => {
  t.is(groupsFor(13000, 50), 263);
  t.is(groupsFor(3020, 20), 151);
  t.is(groupsFor(4, 2), 2);
  const big = tableEnv(t, { locks: 13000, perGroup: 50 }).table.header();
  t.is(big.ngroups, 263);
  t.is(big.perGroup, 50);
  t.is(big.capacity, 13150);
  t.is(big.requestedLocks, 13000);
  const k = native.constants;
  t.is(big.totalSize, k.HEADER_SIZE + k.PROC_SLOTS * k.PROC_SLOT_SIZE + 263 * (k.GROUP_HEADER_SIZE + 50 * k.ENTRY_SIZE));
  const def = tableEnv(t).table.header();
  t.is(def.ngroups, 151);
  t.is(def.perGroup, 20);
  t.is(def.capacity, 3020);
});

test('create on an existing table: existed, geometry kept, same locks', (t) => {
  const env = tableEnv(t, { locks: 100, perGroup: 10 });
  t.false(env.table.existed);
  const again = LockTable.create({ releaseDir: env.dir, locks: 13000, perGroup: 50, portLocks: true });
  t.teardown(() => again.close());
  t.true(again.existed);
  t.is(again.path, env.table.path);
  const h = again.header();
  t.is(h.ngroups, 11);
  t.is(h.perGroup, 10);
  t.false(h.portLocks);
  t.true(again.tryLock(owner(1), F, 'E', 'write').granted);
  t.is(env.table.status(owner(2), F, 'E').code, -2);
  t.is((() => { try { LockTable.open({ releaseDir: path.join(env.dir, 'nope') }); return 'opened'; } catch (e) { return (e as JdlsError).code; } })(), 'NO_TABLE');
});

test('-P: owners on one port share their locks, across processes too', async (t) => {
  const env = tableEnv(t, { portLocks: true });
  const { table } = env;
  t.true(table.header().portLocks);
  const a = makeOwner({ ownerPid: 50001, port: 12 });
  const b = makeOwner({ ownerPid: 50002, port: 12 });
  const c = makeOwner({ ownerPid: 50003, port: 13 });
  t.true(table.tryLock(a, F, 'P', 'write').granted);
  t.true(table.tryLock(b, F, 'P', 'write').granted);
  t.is(table.status(b, F, 'P').code, 2);
  const other = table.tryLock(c, F, 'P', 'read');
  t.false(other.granted);
  if (!other.granted) t.is(other.holder.port, 12);
  const c13 = env.locker(['try', 'P', 'write'], { env: { JBCPORTNO: '13' } });
  t.deepEqual(await c13.expect('CONFLICT'), ['12', '50001']);
  const c12 = env.locker(['try', 'P', 'write'], { env: { JBCPORTNO: '12' } });
  await c12.expect('GRANTED');
  await c12.success();
  // c12 was the same owner as a and b, and released the shared lock.
  t.is(table.status(a, F, 'P').code, 0);
  t.true(table.tryLock(b, F, 'P2', 'write').granted);
  t.true(table.unlock(a, F, 'P2'), 'a releases what b took: one owner');
});

test('-T time-stamps grants; without it stampMs is 0', async (t) => {
  const { table } = tableEnv(t, { timestamps: true });
  t.true(table.header().timestamps);
  const a = owner(1), b = owner(2);
  const before = Date.now();
  t.true(table.tryLock(a, F, 'T', 'write').granted);
  const after = Date.now();
  const stamp = allRows(table)[0]?.stampMs ?? 0;
  t.true(stamp >= before && stamp <= after, `${before} <= ${stamp} <= ${after}`);
  const p = table.lock(b, F, 'T', 'write');
  await new Promise((r) => setTimeout(r, 50));
  const releasedAt = Date.now();
  table.unlock(a, F, 'T');
  await withTimeout(p, 5000, 'grant');
  const granted = allRows(table).find((r) => r.ownerTid === b.ownerTid);
  t.true((granted?.stampMs ?? 0) >= releasedAt, 'a queued request is stamped again when granted');

  const plain = tableEnv(t).table;
  t.true(plain.tryLock(a, F, 'T', 'write').granted);
  t.is(allRows(plain)[0]?.stampMs, 0);
});

test('lock(): waiters of one process are granted in FIFO order, readers together, none overtakes', async (t) => {
  const { table } = tableEnv(t);
  const a = owner(0);
  t.true(table.tryLock(a, F, 'Q', 'write').granted);
  const order: number[] = [];
  const ws = [1, 2, 3, 4, 5].map((n) => owner(n));
  const ps = ws.map((w, i) => table.lock(w, F, 'Q', 'write').then(() => {
    order.push(i);
    table.unlock(w, F, 'Q');
  }));
  await tick();
  t.deepEqual(order, []);
  table.unlock(a, F, 'Q');
  await withTimeout(Promise.all(ps), 10_000, 'all waiters');
  t.deepEqual(order, [0, 1, 2, 3, 4]);

  // Mixed: READ, READ, WRITE, READ behind a WRITE.
  t.true(table.tryLock(a, F, 'M', 'write').granted);
  const [r1, r2, w3, r4] = [owner(11), owner(12), owner(13), owner(14)];
  const p1 = track(table.lock(r1, F, 'M', 'read'));
  const p2 = track(table.lock(r2, F, 'M', 'read'));
  const p3 = track(table.lock(w3, F, 'M', 'write'));
  const p4 = track(table.lock(r4, F, 'M', 'read'));
  table.unlock(a, F, 'M');
  await withTimeout(Promise.all([p1.p, p2.p]), 5000, 'both readers');
  await tick();
  t.is(p3.state(), 'pending');
  t.is(p4.state(), 'pending', 'a reader never overtakes a queued writer');
  table.unlock(r1, F, 'M');
  table.unlock(r2, F, 'M');
  await withTimeout(p3.p, 5000, 'writer');
  await tick();
  t.is(p4.state(), 'pending');
  table.unlock(w3, F, 'M');
  await withTimeout(p4.p, 5000, 'last reader');
  t.is(table.check(), 0);
});

test('wait(): settles at once when free, is granted DURING the release by another owner of this process (no event-loop turn), and cancelWait withdraws', async (t) => {
  const { table } = tableEnv(t);
  const a = owner(21);
  const b = owner(22);
  const c = owner(23);
  const events: string[] = [];
  t.is(table.wait(a, F, 'W', 'write', (e) => events.push(`a:${e ? e.code : 'granted'}`)), 0, 'free: settled synchronously');
  t.deepEqual(events, ['a:granted']);
  const idB = table.wait(b, F, 'W', 'write', (e) => events.push(`b:${e ? e.code : 'granted'}`));
  const idC = table.wait(c, F, 'W', 'write', (e) => events.push(`c:${e ? e.code : 'granted'}`));
  t.true(idB > 0 && idC > 0);
  t.deepEqual(events, ['a:granted']);
  // The lock server's hand-off: the next holder is told inside unlock().
  t.true(table.unlock(a, F, 'W'));
  t.deepEqual(events, ['a:granted', 'b:granted']);
  table.cancelWait(idC);
  t.deepEqual(events, ['a:granted', 'b:granted', 'c:ABORTED']);
  table.cancelWait(idC); // twice: nothing more
  t.true(table.unlock(b, F, 'W'));
  t.is(table.status(c, F, 'W').code, 0, 'the withdrawn request holds nothing');
  // Argument errors are done(err) at once, never a throw.
  t.is(table.wait(a, F, 'K'.repeat(600), 'write', (e) => events.push(`big:${e ? e.code : 'granted'}`)), 0);
  t.is(events.at(-1), 'big:KEY_TOO_LONG');
  t.is(table.check(), 0);
});

test('conflict() (F_GETLK) looks past the owner\'s own lock: a reader probing for a write sees the other readers', (t) => {
  const { table } = tableEnv(t);
  const a = owner(31);
  const b = owner(32);
  t.true(table.tryLock(a, F, 'P', 'read').granted);
  t.is(table.conflict(a, F, 'P', 'write'), undefined, 'alone: only its own lock');
  t.true(table.tryLock(b, F, 'P', 'read').granted);
  t.is(table.status(a, F, 'P').code, 1, 'RECORDLOCKED still reports its own READ');
  t.like(table.conflict(a, F, 'P', 'write'), { mode: 'read', ownerTid: b.ownerTid });
  t.is(table.conflict(a, F, 'P', 'read'), undefined, 'readers do not block a read');
  table.unlock(b, F, 'P');
  t.true(table.tryLock(a, F, 'P', 'write').granted);
  t.like(table.conflict(b, F, 'P', 'read'), { mode: 'write', ownerTid: a.ownerTid });
});

test('lock(): FIFO across processes (this process, C, this process, Node child)', async (t) => {
  const env = tableEnv(t);
  const { table } = env;
  const a = owner(0);
  t.true(table.tryLock(a, F, 'X', 'write').granted);
  const grants: Array<{ who: string; ns: bigint }> = [];
  const queuedBy = (pid: number, ownerTid?: number): boolean =>
    allRows(table).some((r) => r.state === 'waiting' && r.pid === pid && (ownerTid === undefined || r.ownerTid === ownerTid));
  const inProc = (n: number): Promise<void> => {
    const w = owner(n);
    const p = table.lock(w, F, 'X', 'write').then(() => {
      grants.push({ who: `in-process ${n}`, ns: process.hrtime.bigint() });
      table.unlock(w, F, 'X');
    });
    return p;
  };
  const p1 = inProc(1);
  const c2 = env.locker(['wait', 'X', 'write', '-1', '0']);
  await c2.expect('QUEUED');
  const p3 = inProc(3);
  const n4 = env.node('node-locker', ['wait', 'X', 'write', '0']);
  await waitUntil(() => queuedBy(n4.pid), 10_000, 'the Node child to queue');
  t.is(allRows(table).filter((r) => r.state === 'waiting').length, 4);
  table.unlock(a, F, 'X');
  await withTimeout(Promise.all([p1, p3]), 10_000, 'in-process waiters');
  const [c2ns] = await c2.expect('GRANTED');
  const [n4ns] = await n4.expect('GRANTED');
  await c2.success();
  await n4.success();
  grants.push({ who: 'C 2', ns: BigInt(c2ns ?? '0') }, { who: 'Node 4', ns: BigInt(n4ns ?? '0') });
  grants.sort((x, y) => (x.ns < y.ns ? -1 : x.ns > y.ns ? 1 : 0));
  t.deepEqual(grants.map((g) => g.who), ['in-process 1', 'C 2', 'in-process 3', 'Node 4']);
});

test('lock(): timeoutMs rejects with TIMEOUT and leaves the queue', async (t) => {
  const { table } = tableEnv(t);
  const a = owner(1), b = owner(2), c = owner(3);
  t.true(table.tryLock(a, F, 'TO', 'write').granted);
  const e = await failure(() => table.lock(b, F, 'TO', 'write', { timeoutMs: 100 }));
  t.is(e.code, 'TIMEOUT');
  t.is(allRows(table).filter((r) => r.state === 'waiting').length, 0);
  const later = table.lock(c, F, 'TO', 'write');
  table.unlock(a, F, 'TO');
  await withTimeout(later, 5000, 'the later waiter');
  t.is(table.status(c, F, 'TO').code, 2);

  // A timed-out writer stood in front of a reader that fits beside the
  // current reader: leaving the queue lets that reader in at once.
  t.true(table.tryLock(a, F, 'TR', 'read').granted);
  const w = track(table.lock(b, F, 'TR', 'write', { timeoutMs: 300 }));
  const r = track(table.lock(c, F, 'TR', 'read'));
  // Checked at once (lock() queues synchronously), not after a pause: the
  // writer times out after 300 ms, and a stalled machine could pass that
  // during a pause and let the reader in before the check.
  t.deepEqual(allRows(table).filter((x) => x.state === 'waiting').map((x) => x.mode).sort(), ['read', 'write'], 'the reader queues behind the writer');
  t.is((await failure(() => w.p)).code, 'TIMEOUT');
  await withTimeout(r.p, 5000, 'reader behind the timed-out writer');
  t.is(table.status(c, F, 'TR').code, 1);

  // lockBlocking (tools, workers) times out the same way.
  t.is((await failure(() => table.lockBlocking(b, F, 'TR', 'write', 50))).code, 'TIMEOUT');
  t.is(table.check(), 0);
});

test('lock(): an AbortSignal withdraws the request (ABORTED)', async (t) => {
  const { table } = tableEnv(t);
  const a = owner(1), b = owner(2), c = owner(3);
  t.true(table.tryLock(a, F, 'AB', 'write').granted);
  const ac = new AbortController();
  const p = table.lock(b, F, 'AB', 'write', { signal: ac.signal });
  await tick();
  t.is(allRows(table).filter((r) => r.state === 'waiting').length, 1);
  ac.abort();
  t.is((await failure(() => p)).code, 'ABORTED');
  t.is(allRows(table).filter((r) => r.state === 'waiting').length, 0);
  t.is((await failure(() => table.lock(b, F, 'AB', 'write', { signal: AbortSignal.abort() }))).code, 'ABORTED');
  const later = table.lock(c, F, 'AB', 'write');
  table.unlock(a, F, 'AB');
  await withTimeout(later, 5000, 'the next waiter');
});

test('pending waits block neither the event loop nor the libuv pool', async (t) => {
  const { table } = tableEnv(t);
  const a = owner(0);
  t.true(table.tryLock(a, F, 'EL', 'write').granted);
  let released = false;
  const waits = [1, 2, 3, 4, 5, 6].map((n) => table.lock(owner(n), F, 'EL', 'read'));
  // Everything below needs the loop or a pool thread (4 by default: 6 waits
  // parked on the pool would starve all of them).
  const poolWork = Promise.all([
    fs.promises.stat(os.tmpdir()),
    ...[1, 2, 3, 4, 5].map(() => new Promise<void>((resolve, reject) =>
      crypto.pbkdf2('pw', 'salt', 1000, 32, 'sha256', (err) => (err ? reject(err) : resolve())))),
    new Promise<void>((resolve) => setImmediate(resolve)),
  ]).then(() => released);
  // Bounded: release anyway after 10 s, so a failure is reported, not hung.
  const safety = setTimeout(() => { released = true; table.unlock(a, F, 'EL'); }, 10_000);
  const doneBeforeRelease = await poolWork;
  t.false(doneBeforeRelease, 'pool and loop work finished while the lock was still held');
  t.is(allRows(table).filter((r) => r.state === 'waiting').length, 6);
  clearTimeout(safety);
  released = true;
  table.unlock(a, F, 'EL');
  await withTimeout(Promise.all(waits), 5000, 'the six readers');
});

test('close() rejects pending waits with CLOSED and withdraws them', async (t) => {
  const env = tableEnv(t);
  const a = owner(1);
  t.true(env.table.tryLock(a, F, 'CL', 'write').granted);
  const second = LockTable.open({ releaseDir: env.dir });
  const p1 = second.lock(owner(2), F, 'CL', 'write');
  const p2 = second.lock(owner(3), F, 'CL', 'read');
  await tick();
  t.is(allRows(env.table).filter((r) => r.state === 'waiting').length, 2);
  second.close();
  t.is((await failure(() => p1)).code, 'CLOSED');
  t.is((await failure(() => p2)).code, 'CLOSED');
  t.is(allRows(env.table).filter((r) => r.state === 'waiting').length, 0);
  t.is((await failure(() => second.tryLock(a, F, 'CL', 'write'))).code, 'CLOSED');
  second.close(); // twice is harmless
  t.is(env.table.status(a, F, 'CL').code, 2);
});

test('two JBCRELEASEDIRs are two independent tables', async (t) => {
  const one = tableEnv(t);
  const two = tableEnv(t);
  t.not(one.table.path, two.table.path);
  t.true(one.table.tryLock(owner(1), F, 'SAME', 'write').granted);
  t.true(two.table.tryLock(owner(2), F, 'SAME', 'write').granted);
  const inOne = one.locker(['try', 'SAME', 'write']);
  await inOne.expect('CONFLICT');
  const inTwo = two.locker(['try', 'OTHER', 'write']);
  await inTwo.expect('GRANTED');
  await inTwo.success(); // released again before exiting
  const inTwoSame = two.locker(['try', 'SAME', 'write']);
  const [, pid] = await inTwoSame.expect('CONFLICT');
  t.is(Number(pid), process.pid);
  t.is(allRows(one.table).length, 1);
  t.is(allRows(two.table).length, 1);
});

test('a worker thread that ends with a pending wait leaves this thread\'s table open and the key usable', async (t) => {
  const env = tableEnv(t);
  const { table } = env;
  const a = owner(1), b = owner(2);
  t.true(table.tryLock(a, F, 'WK', 'write').granted);
  const w = new Worker(nodeFixture('worker-locker'), { workerData: { dir: env.dir, key: 'WK' } });
  t.teardown(async () => { await w.terminate(); });
  t.is(await new Promise((resolve) => w.once('message', resolve)), 'queued');
  await waitUntil(() => allRows(table).some((r) => r.state === 'waiting'), 5000, 'the worker to queue');
  await w.terminate();
  // The worker's teardown must not close the tables of other threads.
  t.like(table.status(a, F, 'WK'), { code: 2 });
  t.true(table.unlock(a, F, 'WK'));
  // Nobody is left to receive a grant for the worker's request: it must not
  // hold the key now.
  t.true(table.tryLock(b, F, 'WK', 'write').granted);
  t.is(table.check(), 0);
});

test('listing costs memory for the rows it returns, not per_group x 64 zeroed rows per call', async (t) => {
  // 10,000 locks per group: a call of rows() once reserved (and zero-filled)
  // 64 groups' worth of rows, 640,000 x 624 bytes = 400 MB, for one lock.
  // Measured in a child (its peak RSS is its own, not the test runner's).
  const env = tableEnv(t, { locks: 10_000 * 67, perGroup: 10_000 });
  t.true(env.table.tryLock(owner(41), F, 'ONE', 'write').granted);
  const code = `
    import { LockTable } from ${JSON.stringify(new URL('../src/locks/table.js', import.meta.url).href)};
    const t = LockTable.open({ releaseDir: ${JSON.stringify(env.dir)} });
    const before = process.resourceUsage().maxRSS;
    let rows = 0;
    for (let i = 0; i < 3; i++) for (const b of t.rows()) rows += b.length;
    console.log(JSON.stringify({ rows, growthKiB: process.resourceUsage().maxRSS - before }));
    t.close();`;
  const p = env.spawn('list-rss', process.execPath, ['--input-type=module', '-e', code]);
  const r = JSON.parse(await p.line(30_000)) as { rows: number; growthKiB: number };
  await p.success();
  t.is(r.rows, 3);
  t.true(r.growthKiB < 64 * 1024, `peak RSS grew by ${Math.round(r.growthKiB / 1024)} MiB while listing one lock`);
});
