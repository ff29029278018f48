// server-owner.test.ts - through a lock server, the connection is part of the
// owner: two connections that present the same client pid and thread id are
// two owners. One cannot release, re-take or see as its own what the other
// took, and closing one releases only its own locks - for the shm table
// (-ib) and the OS file-lock mechanism (-ibD). Real `jdls` processes,
// loopback. Serial: each test runs a listener and lock-server processes.
import test from 'ava';
import { ServerEnv, until } from './helpers/server-env.js';
import { expectType, type WireClient } from './helpers/wire-client.js';

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
