// server-owner.test.ts - through a lock server, the connection is part of the
// owner: two connections that present the same client pid and thread id are
// two owners. One cannot release, re-take or see as its own what the other
// took, and closing one releases only its own locks - for the shm table
// (-ib) and the OS file-lock mechanism (-ibD). Real `jdls` processes,
// loopback. Serial: each test runs a listener and lock-server processes.
import test from 'ava';
import { ServerEnv, until } from './helpers/server-env.js';
import { expectType, type WireClient } from './helpers/wire-client.js';
import type { ServerFrame } from '../src/protocol/frames.js';

/** Two connections with the same HELLO (pid, port) served by one lock-server process. */
async function twins(env: ServerEnv): Promise<[WireClient, WireClient]> {
  const a = await env.client({ pid: 7001, port: 71 });
  const b = await env.client({ pid: 7001, port: 71 });
  if (a.welcome.serverPid !== b.welcome.serverPid) throw new Error('the two connections went to different lock-server processes');
  return [a, b];
}

for (const [name, args] of [['shm table (-ib)', ['-ib']], ['OS file locks (-ibD)', ['-ibD']]] as const) {
  test.serial(`${name}: a connection presenting another's pid and tid cannot touch its lock`, async (t) => {
    const env = new ServerEnv(t);
    await env.start([...args]);
    const [a, b] = await twins(env);
    expectType(await a.lock('MINE'), 'GRANTED');
    // Same pid, same tid (1), other connection: another owner.
    const locked = expectType(await b.lock('MINE', 'write', { nowait: true }), 'LOCKED');
    t.like(locked.holder, { ownerPid: 7001, ownerTid: 1 });
    t.is(expectType(await b.status('MINE'), 'STATUS_RESULT').code, -2, 'b does not see a\'s lock as its own');
    t.is(expectType(await b.unlock('MINE'), 'RELEASED').count, 0, 'b cannot release a\'s lock');
    t.is(expectType(await b.request({ type: 'UNLOCK_ALL', tid: 1, allThreads: true }), 'RELEASED').count, 0);
    t.is(expectType(await a.status('MINE'), 'STATUS_RESULT').code, 2, 'a still holds it');
    // b takes a lock of its own; a cannot release that one either.
    expectType(await b.lock('THEIRS'), 'GRANTED');
    t.is(expectType(await a.unlock('THEIRS'), 'RELEASED').count, 0);
    // Closing b releases b's lock only.
    b.close();
    await b.closed;
    const c = await env.client({ pid: 7002, port: 72 });
    await until(async () => (await c.lock('THEIRS', 'write', { nowait: true })).type === 'GRANTED', 5000, 'b\'s lock to be released');
    expectType(await c.lock('MINE', 'write', { nowait: true }), 'LOCKED');
    t.is(expectType(await a.status('MINE'), 'STATUS_RESULT').code, 2, 'closing b left a\'s lock alone');
    t.is(expectType(await a.unlock('MINE'), 'RELEASED').count, 1);
  });
}

test.serial('byte ranges (RANGE_*): a connection presenting another\'s pid and tid cannot take, test as its own, or release its range', async (t) => {
  const env = new ServerEnv(t);
  await env.start(['-ib']);
  const [a, b] = await twins(env);
  const file = { inode: 0x7777n, dev: -1n };
  const range = { tid: 1, file, start: 10n, length: 5n };
  expectType(await a.request({ type: 'RANGE_LOCK', nowait: true, space: 'range', mode: 'write', ...range }), 'GRANTED');
  // Same pid, same tid, other connection: another owner, refused.
  const locked = expectType(await b.request({ type: 'RANGE_LOCK', nowait: true, space: 'range', mode: 'write', ...range }), 'LOCKED');
  t.like(locked.holder, { ownerPid: 7001, ownerTid: 1 });
  t.truthy(expectType(await b.request({ type: 'RANGE_TEST', mode: 'write', ...range }), 'RANGE_RESULT').conflict, 'b sees a\'s range as another owner\'s');
  // b's unlock of the range is an unlock of nothing of its own.
  expectType(await b.request({ type: 'RANGE_UNLOCK', space: 'range', ...range }), 'RELEASED');
  expectType(await b.request({ type: 'RANGE_LOCK', nowait: true, space: 'range', mode: 'write', ...range }), 'LOCKED');
  // Closing b leaves a's range; a's own test sees no conflict (its own lock).
  b.close();
  await b.closed;
  t.falsy(expectType(await a.request({ type: 'RANGE_TEST', mode: 'write', ...range }), 'RANGE_RESULT').conflict);
  const c = await env.client({ pid: 7002, port: 72 });
  expectType(await c.request({ type: 'RANGE_LOCK', nowait: true, space: 'range', mode: 'write', ...range }), 'LOCKED');
});

// The other paths a second connection could use to reach a's locks: the OS
// file-lock mechanism asked for by flag (OSLOCKS) on a table service,
// UNLOCK_FILE, and CANCEL of a's waiting request by its id (request ids are
// small counters: easy to guess). None may touch a's.
test.serial('OSLOCKS, UNLOCK_FILE and CANCEL: a connection presenting another\'s pid and tid cannot release, re-take or cancel its locks', async (t) => {
  const env = new ServerEnv(t);
  await env.start(['-ib']);
  const [a, b] = await twins(env);
  const osLock = (w: WireClient, key: string, requestId?: number): Promise<ServerFrame> =>
    w.request({ type: 'LOCK', nowait: requestId === undefined, noInterim: true, osLocks: true, mode: 'write', tid: 1, file: { inode: 0x5151n, dev: -1n }, key: Buffer.from(key) },
      requestId === undefined ? {} : { requestId });
  // OSLOCKS: a's OS record lock.
  expectType(await osLock(a, 'OSKEY'), 'GRANTED');
  expectType(await osLock(b, 'OSKEY'), 'LOCKED');
  t.is(expectType(await b.request({ type: 'UNLOCK', tid: 1, file: { inode: 0x5151n, dev: -1n }, key: Buffer.from('OSKEY') }), 'RELEASED').count, 0);
  t.is(expectType(await b.request({ type: 'UNLOCK_FILE', tid: 1, file: { inode: 0x5151n, dev: -1n } }), 'RELEASED').count, 0);
  t.is(expectType(await b.request({ type: 'UNLOCK_ALL', tid: 1, allThreads: true }), 'RELEASED').count, 0);
  expectType(await osLock(b, 'OSKEY'), 'LOCKED');
  // UNLOCK_FILE on the table mechanism.
  expectType(await a.lock('FILEKEY'), 'GRANTED');
  t.is(expectType(await b.request({ type: 'UNLOCK_FILE', tid: 1, file: { inode: 4242n, dev: 7n } }), 'RELEASED').count, 0);
  expectType(await b.lock('FILEKEY', 'write', { nowait: true }), 'LOCKED');
  // CANCEL: a waits for a lock c holds; b cancels a's request id - nothing.
  const c = await env.client({ pid: 7003, port: 73 });
  expectType(await c.lock('WAITED'), 'GRANTED');
  const rid = a.nextId();
  const waiting = a.lock('WAITED', 'write', { requestId: rid, noInterim: true });
  // A PING answered on a means the server has read a's LOCK before it, so
  // b's CANCEL below finds a's request there to aim at.
  expectType(await a.ping(), 'PONG');
  t.is(expectType(await b.request({ type: 'CANCEL', target: rid }), 'RELEASED').count, 0, 'b cannot cancel a\'s request');
  t.is(expectType(await c.unlock('WAITED'), 'RELEASED').count, 1);
  expectType(await waiting, 'GRANTED');
  // (a's STATUS would ask the OS mechanism: a has locked with OSLOCKS.)
  expectType(await c.lock('WAITED', 'write', { nowait: true }), 'LOCKED');
  // And a still holds everything b tried to take.
  const d = await env.client({ pid: 7004, port: 74 });
  expectType(await osLock(d, 'OSKEY'), 'LOCKED');
  expectType(await d.lock('FILEKEY', 'write', { nowait: true }), 'LOCKED');
});
