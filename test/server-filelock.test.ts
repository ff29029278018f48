// server-filelock.test.ts - FILELOCK through a lock server (issue 11 items 9
// and 2): RANGE_LOCK/RANGE_UNLOCK with the FILELOCK flag on the OS-lock
// server (-ibD, no monitor) and its refusal under the shm table (-ib);
// RECORDLOCKED 3/-3 with the holder named; LOCKED and WAITING naming the
// FILELOCK's holder; the owner's own record locks in its FILELOCKed file;
// RANGE_TEST of the EXEC and FILELOCK spaces. Real `jdls` processes, raw
// protocol clients over loopback. Serial: each test runs a listener and
// lock-server processes.
import test, { type ExecutionContext } from 'ava';
import { ServerEnv } from './helpers/server-env.js';
import { expectType, type WireClient } from './helpers/wire-client.js';
import { keyOffset } from '../src/locks/oslock.js';
import type { ServerFrame, WaitingFrame, WireHolder } from '../src/protocol/frames.js';

const F = { inode: 0x4a11n, dev: -1n };
const G = { inode: 0x4a12n, dev: -1n };

const fileLock = (c: WireClient, o: { nowait?: boolean; tid?: number; file?: typeof F; start?: bigint; length?: bigint } = {}): Promise<ServerFrame> =>
  c.request({ type: 'RANGE_LOCK', nowait: o.nowait ?? true, space: 'file', mode: 'write', tid: o.tid ?? 1, file: o.file ?? F, start: o.start ?? 0n, length: o.length ?? 0n });
const fileUnlock = (c: WireClient, o: { tid?: number; start?: bigint; length?: bigint } = {}): Promise<ServerFrame> =>
  c.request({ type: 'RANGE_UNLOCK', space: 'file', tid: o.tid ?? 1, file: F, start: o.start ?? 0n, length: o.length ?? 0n });
const lock = (c: WireClient, key: string, mode: 'read' | 'write' = 'write', nowait = true, file = F): Promise<ServerFrame> =>
  c.lock(key, mode, { nowait, file, noInterim: nowait });
const status = (c: WireClient, key: string, probe?: 'read' | 'write', file = F): Promise<ServerFrame> =>
  c.request({ type: 'STATUS', tid: 1, file, key: Buffer.from(key), ...(probe ? { probe } : {}) });
const code = async (p: Promise<ServerFrame>): Promise<number> => expectType(await p, 'STATUS_RESULT').code;

/** What the holder fields say about a client of the same lock-server process (HELLO pid/port, tid 1, loopback). */
const named = (c: WireClient, pid: number, port: number): Partial<WireHolder> =>
  ({ pid: c.welcome.serverPid, ownerPid: pid, ownerTid: 1, port, addr: '127.0.0.1' });

async function osServer(t: ExecutionContext, settings: Record<string, number> = {}): Promise<[ServerEnv, WireClient, WireClient]> {
  const env = new ServerEnv(t, settings);
  await env.start(['-ibD']);
  const a = await env.client({ pid: 8001, port: 81 });
  const b = await env.client({ pid: 8002, port: 82 });
  if (a.welcome.mechanism !== 'os') throw new Error(`expected the OS mechanism, got ${a.welcome.mechanism}`);
  return [env, a, b];
}

test.serial('(a) the FILELOCK owner locks records of its file at once; FILELOCK over its own record locks waits only for others; FILEUNLOCK leaves its record locks as they were', async (t) => {
  const [, a, b] = await osServer(t);
  // a holds record locks of F (one READ, one WRITE), b one more.
  expectType(await lock(a, 'AR', 'read'), 'GRANTED');
  expectType(await lock(a, 'AW'), 'GRANTED');
  expectType(await lock(b, 'BW'), 'GRANTED');
  // a's FILELOCK waits for b's record lock, not for its own.
  const fl = fileLock(a, { nowait: false });
  expectType(await a.ping(), 'PONG'); // the FILELOCK is waiting now (one connection's requests are served in order)
  expectType(await lock(b, 'BX', 'write'), 'GRANTED'); // others may still lock meanwhile
  t.is(expectType(await b.unlock('BW', { file: F }), 'RELEASED').count, 1);
  t.is(expectType(await b.unlock('BX', { file: F }), 'RELEASED').count, 1);
  expectType(await fl, 'GRANTED');
  // Own record locks of the FILELOCKed file: granted at once, re-lock, upgrade and downgrade included.
  expectType(await lock(a, 'NEW'), 'GRANTED');
  expectType(await lock(a, 'WAITED', 'write', false), 'GRANTED');
  expectType(await lock(a, 'NEWR', 'read'), 'GRANTED');
  expectType(await lock(a, 'AR', 'write'), 'GRANTED');
  expectType(await lock(a, 'AR', 'read'), 'GRANTED');
  t.is(expectType(await a.unlock('NEW', { file: F }), 'RELEASED').count, 1);
  // b is kept out of every key, including those a released.
  for (const k of ['NEW', 'AR', 'FREE']) expectType(await lock(b, k, 'read'), 'LOCKED');
  // FILEUNLOCK: what a holds stays held exactly (READ shared, WRITE exclusive), the rest is free.
  t.is(expectType(await fileUnlock(a), 'RELEASED').count, 1);
  expectType(await lock(b, 'FREE'), 'GRANTED');
  expectType(await lock(b, 'NEW'), 'GRANTED');
  expectType(await lock(b, 'AR', 'read'), 'GRANTED');
  expectType(await lock(b, 'NEWR', 'read'), 'GRANTED');
  expectType(await lock(b, 'AW', 'read'), 'LOCKED');
  expectType(await lock(b, 'WAITED', 'read'), 'LOCKED');
  expectType(await lock(b, 'NEWR', 'write'), 'LOCKED');
  t.is(await code(status(a, 'AW')), 2);
  t.is(await code(status(a, 'AR')), 1);
  t.is(await code(status(a, 'NEW')), -2, 'released by a inside its FILELOCK, then taken by b');
});

test.serial('(b) STATUS: 3 for the FILELOCK owner on every key, -3 with the holder named for another owner; (f) the probe (F_GETLK) stays F_GETLK', async (t) => {
  const [, a, b] = await osServer(t);
  expectType(await fileLock(a), 'GRANTED');
  for (const k of ['K1', 'K2']) {
    t.is(await code(status(a, k)), 3);
    const s = expectType(await status(b, k), 'STATUS_RESULT');
    t.is(s.code, -3);
    t.like(s.holder, { ...named(a, 8001, 81), mode: 'write' });
  }
  t.is(await code(status(b, 'K1', undefined, G)), 0, 'another file is free');
  // F_GETLK: the owner's own locks never block it; another owner is blocked by the FILELOCK, named.
  t.is(await code(status(a, 'K1', 'write')), 0);
  const p = expectType(await status(b, 'K1', 'read'), 'STATUS_RESULT');
  t.is(p.code, -2);
  t.like(p.holder, { ...named(a, 8001, 81), mode: 'write' });
  expectType(await fileUnlock(a), 'RELEASED');
  t.is(await code(status(a, 'K1')), 0);
  t.is(await code(status(b, 'K1')), 0);
  t.is(await code(status(b, 'K1', 'write')), 0);
});

test.serial('(c) LOCKED and WAITING for a record lock blocked by a FILELOCK name its holder; the wait is granted at FILEUNLOCK', async (t) => {
  const [, a, b] = await osServer(t, { interimMs: 100 });
  expectType(await fileLock(a), 'GRANTED');
  const locked = expectType(await lock(b, 'K'), 'LOCKED');
  t.like(locked.holder, { ...named(a, 8001, 81), mode: 'write' });
  let first: WaitingFrame | undefined;
  let seen!: () => void;
  const interim = new Promise<void>((r) => (seen = r));
  const w = b.request({ type: 'LOCK', nowait: false, noInterim: false, osLocks: false, mode: 'write', tid: 1, file: F, key: Buffer.from('K') },
    { onInterim: (f) => { first ??= f; seen(); } });
  await interim;
  t.like(first?.holder, { ...named(a, 8001, 81), mode: 'write' });
  expectType(await fileUnlock(a), 'RELEASED');
  expectType(await w, 'GRANTED');
});

test.serial('(d) RANGE_LOCK and RANGE_UNLOCK of a FILELOCK with a start or length other than 0 are BAD_ARGUMENT', async (t) => {
  const [, a, b] = await osServer(t);
  for (const [start, length] of [[1n, 0n], [0n, 1n], [5n, 10n]] as const) {
    const e = expectType(await fileLock(a, { start, length }), 'ERROR');
    t.is(e.code, 'BAD_ARGUMENT');
    t.regex(e.text, /start 0, length 0/);
  }
  t.is(await code(status(b, 'K')), 0, 'nothing was taken');
  expectType(await fileLock(a), 'GRANTED');
  t.is(expectType(await fileUnlock(a, { start: 1n }), 'ERROR').code, 'BAD_ARGUMENT');
  t.is(await code(status(b, 'K')), -3, 'a refused unlock released nothing');
  t.is(expectType(await fileUnlock(a), 'RELEASED').count, 1);
});

test.serial('(e) under the shm table FILELOCK is NOT_SUPPORTED, saying why and what to do', async (t) => {
  const env = new ServerEnv(t);
  await env.start(['-ib']);
  const a = await env.client({ pid: 8001, port: 81 });
  t.is(a.welcome.mechanism, 'shm');
  for (const nowait of [true, false]) {
    const e = expectType(await fileLock(a, { nowait }), 'ERROR');
    t.is(e.code, 'NOT_SUPPORTED');
    t.regex(e.text, /shared-memory lock table/);
    t.regex(e.text, /-ibD/, 'says what to do');
  }
  // The connection and the service carry on.
  expectType(await a.lock('K', 'write', { nowait: true }), 'GRANTED');
});

test.serial('RANGE_TEST EXEC names another owner\'s execution lock n (start n, length 1), or none', async (t) => {
  const [, a, b] = await osServer(t);
  const execLock = (c: WireClient, n: bigint): Promise<ServerFrame> =>
    c.request({ type: 'RANGE_LOCK', nowait: true, space: 'exec', mode: 'write', tid: 1, file: { inode: 0n, dev: -1n }, start: n, length: 1n });
  const execTest = (c: WireClient, n: bigint, mode: 'read' | 'write' = 'write'): Promise<ServerFrame> =>
    c.request({ type: 'RANGE_TEST', space: 'exec', mode, tid: 1, file: { inode: 0n, dev: -1n }, start: n, length: 1n });
  expectType(await execLock(a, 7n), 'GRANTED');
  expectType(await execLock(a, 8n), 'GRANTED');
  for (const mode of ['read', 'write'] as const) {
    const r = expectType(await execTest(b, 7n, mode), 'RANGE_RESULT');
    t.like(r.conflict?.holder, { ...named(a, 8001, 81), mode: 'write' });
    t.is(r.conflict?.start, 7n);
    t.is(r.conflict?.length, 1n, 'the number asked for, not the holder\'s merged [7, 9)');
  }
  t.is(expectType(await execTest(b, 9n), 'RANGE_RESULT').conflict, undefined);
  t.is(expectType(await execTest(a, 7n), 'RANGE_RESULT').conflict, undefined, 'its own lock blocks nothing');
  const bad = expectType(await b.request({ type: 'RANGE_TEST', space: 'exec', mode: 'write', tid: 1, file: { inode: 0n, dev: -1n }, start: 256n, length: 1n }), 'ERROR');
  t.is(bad.code, 'BAD_ARGUMENT');
});

test.serial('RANGE_TEST FILELOCK names the first lock of another owner that blocks a FILELOCK: a record lock in the file, or the FILELOCK; none otherwise', async (t) => {
  const [, a, b] = await osServer(t);
  const fileTest = (c: WireClient, o: { start?: bigint; length?: bigint } = {}): Promise<ServerFrame> =>
    c.request({ type: 'RANGE_TEST', space: 'file', mode: 'write', tid: 1, file: F, start: o.start ?? 0n, length: o.length ?? 0n });
  t.is(expectType(await fileTest(a), 'RANGE_RESULT').conflict, undefined);
  expectType(await lock(a, 'MINE'), 'GRANTED');
  t.is(expectType(await fileTest(a), 'RANGE_RESULT').conflict, undefined, 'its own record locks do not block its FILELOCK');
  expectType(await lock(b, 'THEIRS', 'read'), 'GRANTED');
  const r = expectType(await fileTest(a), 'RANGE_RESULT');
  t.like(r.conflict?.holder, { ...named(b, 8002, 82), mode: 'read' });
  t.is(r.conflict?.start, keyOffset('THEIRS', F));
  t.is(r.conflict?.length, 1n);
  expectType(await b.unlock('THEIRS', { file: F }), 'RELEASED');
  expectType(await fileLock(a), 'GRANTED');
  const r2 = expectType(await fileTest(b), 'RANGE_RESULT');
  t.like(r2.conflict?.holder, { ...named(a, 8001, 81), mode: 'write' });
  t.is(r2.conflict?.start, 0n);
  t.is(r2.conflict?.length, 0n);
  t.is(expectType(await fileTest(a), 'RANGE_RESULT').conflict, undefined, 'its own FILELOCK');
  t.is(expectType(await fileTest(b, { start: 3n }), 'ERROR').code, 'BAD_ARGUMENT');
});

test.serial('across lock-server processes: FILELOCK still excludes; STATUS says -3 and LOCKED/RANGE_TEST report the whole-file lock, holder unnamed', async (t) => {
  const [, a, b] = await osServer(t, { clientsPerProcess: 1 });
  t.not(a.welcome.serverPid, b.welcome.serverPid, 'two lock-server processes');
  expectType(await lock(b, 'K'), 'GRANTED');
  const fl = fileLock(a, { nowait: false });
  expectType(await a.ping(), 'PONG');
  const blocked = expectType(await b.request({ type: 'RANGE_TEST', space: 'file', mode: 'write', tid: 1, file: F, start: 0n, length: 0n }), 'RANGE_RESULT');
  t.is(blocked.conflict, undefined, 'b\'s own record lock does not block b');
  expectType(await b.unlock('K', { file: F }), 'RELEASED');
  expectType(await fl, 'GRANTED');
  const s = expectType(await status(b, 'K'), 'STATUS_RESULT');
  t.is(s.code, -3);
  t.like(s.holder, { mode: 'write', ownerPid: 0, addr: '0.0.0.0' });
  expectType(await lock(b, 'K'), 'LOCKED');
  const r = expectType(await b.request({ type: 'RANGE_TEST', space: 'file', mode: 'write', tid: 1, file: F, start: 0n, length: 0n }), 'RANGE_RESULT');
  t.like(r.conflict, { start: 0n, length: 0n });
  t.is(await code(status(a, 'K')), 3);
  expectType(await fileUnlock(a), 'RELEASED');
  expectType(await lock(b, 'K'), 'GRANTED');
});

test.serial('UNLOCK_FILE and UNLOCK_ALL leave the FILELOCK; closing the connection releases it (and its record locks)', async (t) => {
  const [env, a, b] = await osServer(t);
  expectType(await fileLock(a), 'GRANTED');
  expectType(await lock(a, 'MINE'), 'GRANTED');
  expectType(await lock(a, 'GONE'), 'GRANTED');
  // UNLOCK_FILE and UNLOCK_ALL release record locks, not the FILELOCK.
  t.is(expectType(await a.request({ type: 'UNLOCK_FILE', tid: 1, file: F }), 'RELEASED').count, 2);
  t.is(expectType(await a.request({ type: 'UNLOCK_ALL', tid: 1, allThreads: true }), 'RELEASED').count, 0);
  t.is(await code(status(a, 'GONE')), 3);
  expectType(await lock(b, 'GONE'), 'LOCKED');
  expectType(await lock(a, 'MINE'), 'GRANTED');
  const w = lock(b, 'MINE', 'write', false);
  const w2 = lock(b, 'OTHER', 'write', false);
  a.close();
  await a.closed;
  expectType(await w2, 'GRANTED');
  expectType(await w, 'GRANTED');
  const c = await env.client({ pid: 8003, port: 83 });
  expectType(await fileLock(c), 'LOCKED'); // b's two record locks now
  t.is(expectType(await b.request({ type: 'UNLOCK_ALL', tid: 1, allThreads: true }), 'RELEASED').count, 2);
  expectType(await fileLock(c), 'GRANTED');
});

test.serial('a FILELOCK counts against the connection\'s locks (maxLocksPerClient), held or waiting, and is given back at FILEUNLOCK', async (t) => {
  const [, a, b] = await osServer(t, { maxLocksPerClient: 2 });
  const H = { inode: 0x4a13n, dev: -1n };
  expectType(await fileLock(a, { file: F }), 'GRANTED');
  expectType(await fileLock(a, { file: G }), 'GRANTED');
  expectType(await fileLock(a, { file: G }), 'GRANTED'); // a re-lock costs nothing more
  const e = expectType(await fileLock(a, { file: H }), 'ERROR');
  t.is(e.code, 'LIMIT');
  expectType(await fileUnlock(a), 'RELEASED');
  expectType(await fileLock(a, { file: H }), 'GRANTED');
  // b: one FILELOCK waiting behind a's, and one held.
  expectType(await fileLock(b, { file: F }), 'GRANTED');
  const waiting = fileLock(b, { file: G, nowait: false });
  t.is(expectType(await fileLock(b, { file: H, nowait: false }), 'ERROR').code, 'LIMIT');
  expectType(await a.request({ type: 'RANGE_UNLOCK', space: 'file', tid: 1, file: G, start: 0n, length: 0n }), 'RELEASED');
  expectType(await waiting, 'GRANTED');
});
