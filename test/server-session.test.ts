// server-session.test.ts - one connection's conversation with a live lock
// server (real `jdls -ib` processes, loopback): HELLO rules, answers to each
// request, WAITING interim messages vs NO_INTERIM and "Lock retries",
// CANCEL, keep-alive silence, and the limits (connections, locks, waits).
// Serial: each test runs a monitor, a listener and lock-server processes.
import test from 'ava';
import net from 'node:net';
import { ServerEnv, until, sleep } from './helpers/server-env.js';
import { WireClient, expectType, FILE } from './helpers/wire-client.js';
import { encode } from '../src/protocol/codec.js';
import type { WaitingFrame } from '../src/protocol/frames.js';

test.serial('HELLO first: a request before HELLO is a PROTOCOL error and the connection closes', async (t) => {
  const env = new ServerEnv(t);
  await env.start();
  const c = await env.raw();
  c.sendFrame({ type: 'PING', requestId: 5 });
  await c.closed;
  t.is(c.connectionError?.code, 'PROTOCOL');
  t.regex(c.connectionError?.text ?? '', /PING before HELLO/);
  // The server carries on.
  const d = await env.client();
  expectType(await d.ping(), 'PONG');
});

test.serial('version negotiation: no common version is ERROR VERSION naming both sides; WELCOME otherwise', async (t) => {
  const env = new ServerEnv(t);
  await env.start();
  const c = await env.raw();
  await t.throwsAsync(c.hello({ minVersion: 2, maxVersion: 3 }), { message: /VERSION/ });
  await c.closed;
  t.is(c.connectionError?.code, 'VERSION');
  t.regex(c.connectionError?.text ?? '', /client speaks versions 2\.\.3, this server speaks version 1/);

  const ok = await env.client({ minVersion: 1, maxVersion: 9, port: 1234, pid: 4321 });
  t.is(ok.welcome.version, 1);
  t.is(ok.welcome.mechanism, 'shm');
  t.is(ok.welcome.clientAddr, '127.0.0.1');
  t.is(ok.welcome.interimMs, 5000);
  t.true(env.lockServers().includes(ok.welcome.serverPid));

  // A frame whose header version is not spoken: VERSION too.
  const v = await env.raw();
  const bad = encode({ type: 'HELLO', requestId: 0, minVersion: 1, maxVersion: 1, port: 1, pid: 1, keepaliveMs: 0, host: 'h', program: 'p', options: '' });
  bad.writeUInt8(7, 4);
  v.sendBytes(bad);
  await v.closed;
  t.is(v.connectionError?.code, 'VERSION');

  // HELLO twice.
  const twice = await env.client();
  twice.sendFrame({ type: 'HELLO', requestId: 0, minVersion: 1, maxVersion: 1, port: 1, pid: 1, keepaliveMs: 0, host: 'h', program: 'p', options: '' });
  await twice.closed;
  t.is(twice.connectionError?.code, 'PROTOCOL');
  t.regex(twice.connectionError?.text ?? '', /HELLO sent twice/);
});

test.serial('every request gets its answer; a waiting LOCK does not hold up later requests', async (t) => {
  const env = new ServerEnv(t);
  await env.start();
  const a = await env.client({ pid: 1001, port: 11 });
  const b = await env.client({ pid: 1002, port: 12 });
  expectType(await a.lock('K'), 'GRANTED');
  expectType(await a.lock('K'), 'GRANTED'); // re-take of its own lock
  const locked = expectType(await b.lock('K', 'write', { nowait: true }), 'LOCKED');
  t.like(locked.holder, { mode: 'write', port: 11, ownerPid: 1001, ownerTid: 1, addr: '127.0.0.1', pid: a.welcome.serverPid });
  const st = expectType(await b.status('K'), 'STATUS_RESULT');
  t.is(st.code, -2);
  t.is(expectType(await a.status('K'), 'STATUS_RESULT').code, 2);

  // b waits for K, and meanwhile locks and releases others, pings, tests.
  const waiting = b.lock('K', 'write', { noInterim: true });
  expectType(await b.lock('OTHER', 'read'), 'GRANTED');
  t.is(expectType(await b.unlock('OTHER'), 'RELEASED').count, 1);
  t.is(expectType(await b.unlock('OTHER'), 'RELEASED').count, 0);
  t.is(expectType(await b.request({ type: 'TEST', text: 'teststring' }), 'TEST_RESULT').text, 'teststring');
  expectType(await b.ping(), 'PONG');
  await sleep(50);
  t.is(expectType(await a.unlock('K'), 'RELEASED').count, 1);
  expectType(await waiting, 'GRANTED');

  // UNLOCK_FILE and UNLOCK_ALL (one thread / all threads).
  for (const k of ['F1', 'F2']) expectType(await b.lock(k, 'write', { file: { inode: 9n, dev: -1n } }), 'GRANTED');
  expectType(await b.lock('T2', 'write', { tid: 2 }), 'GRANTED');
  expectType(await b.lock('T3', 'write', { tid: 3 }), 'GRANTED');
  t.is(expectType(await b.request({ type: 'UNLOCK_FILE', tid: 1, file: { inode: 9n, dev: -1n } }), 'RELEASED').count, 2);
  t.is(expectType(await b.request({ type: 'UNLOCK_ALL', tid: 2, allThreads: false }), 'RELEASED').count, 1);
  t.is(expectType(await b.request({ type: 'UNLOCK_ALL', tid: 0, allThreads: true }), 'RELEASED').count, 2); // K and T3
  t.is(env.table.check(), 0);
});

test.serial('WAITING interim messages every interimMs, counted as Lock retries; NO_INTERIM (WAIT) gets none', async (t) => {
  const env = new ServerEnv(t, { interimMs: 100 });
  await env.start();
  const holder = await env.client({ pid: 2001, port: 21 });
  const w1 = await env.client({ pid: 2002, port: 22 });
  const w2 = await env.client({ pid: 2003, port: 23 });
  expectType(await holder.lock('HOT'), 'GRANTED');
  const interims: WaitingFrame[] = [];
  const quiet: WaitingFrame[] = [];
  const p1 = w1.lock('HOT', 'write', { onInterim: (f) => interims.push(f) });
  const p2 = w2.lock('HOT', 'write', { noInterim: true, onInterim: (f) => quiet.push(f) });
  await until(() => interims.length >= 3, 5000, 'three WAITING frames');
  const retries = env.table.header().lockRetries;
  t.true(retries >= 3, `lockRetries ${retries}`);
  t.like(interims[0]?.holder, { port: 21, ownerPid: 2001, addr: '127.0.0.1' });
  t.is(quiet.length, 0);
  const d = await env.jdls(['-dv']);
  t.regex(d.stdout, /^Lock retries:\s+[1-9]\d*$/m);
  expectType(await holder.unlock('HOT'), 'RELEASED');
  expectType(await p1, 'GRANTED');
  expectType(await w1.unlock('HOT'), 'RELEASED');
  expectType(await p2, 'GRANTED');
  const n = interims.length;
  await sleep(300);
  t.is(interims.length, n, 'no WAITING after the final answer');
  t.is(quiet.length, 0);
});

test.serial('CANCEL withdraws a waiting LOCK: ERROR CANCELLED, then RELEASED 1; an unknown target gets RELEASED 0', async (t) => {
  const env = new ServerEnv(t);
  await env.start();
  const a = await env.client({ pid: 3001 });
  const b = await env.client({ pid: 3002 });
  expectType(await a.lock('C'), 'GRANTED');
  const order: string[] = [];
  const waiting = b.lock('C', 'write', { requestId: 500 }).then((f) => { order.push('lock'); return f; });
  await until(() => env.table.usage().waiting === 1, 3000, 'the queued request');
  const cancel = b.request({ type: 'CANCEL', target: 500 }).then((f) => { order.push('cancel'); return f; });
  const lf = expectType(await waiting, 'ERROR');
  t.is(lf.code, 'CANCELLED');
  t.is(expectType(await cancel, 'RELEASED').count, 1);
  t.deepEqual(order, ['lock', 'cancel']);
  t.is(env.table.usage().waiting, 0);
  t.is(expectType(await b.request({ type: 'CANCEL', target: 12345 }), 'RELEASED').count, 0);
  // A duplicate outstanding request id is a protocol error.
  void b.lock('C', 'write', { requestId: 600 }).catch(() => undefined);
  void b.lock('C', 'write', { requestId: 600 }).catch(() => undefined);
  await b.closed;
  t.is(b.connectionError?.code, 'PROTOCOL');
  t.regex(b.connectionError?.text ?? '', /already outstanding/);
  await until(() => env.table.usage().waiting === 0, 3000, 'the closed connection\'s wait to go');
});

test.serial('keep-alive: a silent client is disconnected after keepaliveMs and its locks and waits are released', async (t) => {
  const env = new ServerEnv(t, { keepaliveMs: 400 });
  await env.start();
  const silent = await env.client({ pid: 4001, keepaliveMs: 100 });
  t.is(silent.welcome.keepaliveMs, 400);
  const other = await env.client({ pid: 4002, keepaliveMs: 100 });
  expectType(await silent.lock('S1'), 'GRANTED');
  expectType(await other.lock('S2'), 'GRANTED');
  void silent.lock('S2').catch(() => undefined); // queued behind other
  const pinger = setInterval(() => void other.ping().catch(() => undefined), 100);
  t.teardown(() => clearInterval(pinger));
  const t0 = Date.now();
  await silent.closed;
  const took = Date.now() - t0;
  t.true(took >= 300 && took < 3000, `closed after ${took} ms`);
  await until(() => env.table.usage().held === 1 && env.table.usage().waiting === 0, 3000, 'S1 released, wait dropped');
  t.false(other.isClosed, 'the pinging client stays');
  expectType(await other.lock('S1', 'write', { nowait: true }), 'GRANTED');
});

test.serial('limits: maxLocksPerClient and maxOutstanding are ERROR LIMIT for that request; maxConnections refuses with ERROR LIMIT', async (t) => {
  const env = new ServerEnv(t, { maxLocksPerClient: 3, maxOutstanding: 2, maxConnections: 3, maxConnectionsPerAddress: 3 });
  await env.start();
  const a = await env.client({ pid: 5001 });
  for (const k of ['L1', 'L2', 'L3']) expectType(await a.lock(k), 'GRANTED');
  const lim = expectType(await a.lock('L4'), 'ERROR');
  t.is(lim.code, 'LIMIT');
  t.regex(lim.text, /maxLocksPerClient/);
  expectType(await a.lock('L3', 'read'), 'GRANTED'); // one it holds: not a new lock
  expectType(await a.unlock('L1'), 'RELEASED');
  expectType(await a.lock('L4'), 'GRANTED');

  const b = await env.client({ pid: 5002 });
  const w1 = b.lock('L2');
  const w2 = b.lock('L3');
  const over = expectType(await b.lock('L4'), 'ERROR');
  t.is(over.code, 'LIMIT');
  t.regex(over.text, /maxOutstanding/);

  const c = await env.client({ pid: 5003 });
  expectType(await c.ping(), 'PONG');
  // The fourth connection is refused, the others are unaffected.
  const d = await WireClient.raw(env.port);
  t.teardown(() => d.close());
  await d.closed;
  t.is(d.connectionError?.code, 'LIMIT');
  t.regex(d.connectionError?.text ?? '', /maxConnections/);
  expectType(await c.ping(), 'PONG');
  // a's release lets b's waits through.
  expectType(await a.request({ type: 'UNLOCK_ALL', tid: 1, allThreads: true }), 'RELEASED');
  expectType(await w1, 'GRANTED');
  expectType(await w2, 'GRANTED');
  // A closed connection frees its place.
  c.close();
  await until(async () => {
    const e = await WireClient.raw(env.port);
    const ok = await Promise.race([e.hello().then(() => true, () => false), sleep(2000).then(() => false)]);
    e.close();
    return ok;
  }, 5000, 'a free connection slot');
  t.pass();
});

test.serial('malformed input closes only that connection; the process and its other clients carry on', async (t) => {
  const env = new ServerEnv(t);
  await env.start();
  const good = await env.client({ pid: 6001 });
  expectType(await good.lock('G'), 'GRANTED');
  const cases: Buffer[] = [
    Buffer.from([0, 0, 0, 3, 1, 2, 3]), // length below the header
    Buffer.from([0x7f, 0xff, 0xff, 0xff]), // oversized
    (() => { const b = encode({ type: 'PING', requestId: 1 }); b.writeUInt8(0x55, 5); return b; })(), // unknown type
    encode({ type: 'PONG', requestId: 1 }), // a server frame
  ];
  for (const bytes of cases) {
    const c = await env.client({ pid: 6002 });
    expectType(await c.lock('BAD'), 'GRANTED');
    c.sendBytes(bytes);
    await c.closed;
    t.is(c.connectionError?.code, 'PROTOCOL', bytes.toString('hex'));
  }
  // Truncated: half a frame, then the client goes away.
  const tr = await env.client({ pid: 6003 });
  expectType(await tr.lock('BAD'), 'GRANTED');
  tr.sendBytes(encode({ type: 'PING', requestId: 1 }).subarray(0, 7));
  tr.sock.end();
  await tr.closed;
  await until(() => env.table.usage().held === 1, 3000, 'only G held');
  expectType(await good.ping(), 'PONG');
  expectType(await good.lock('BAD', 'write', { nowait: true }), 'GRANTED');
  t.is(env.table.check(), 0);
  const log = env.logs();
  t.regex(log, /protocol error: closing the connection/);
  // A raw TCP client that says nothing and leaves.
  const s = net.connect({ port: env.port, host: '127.0.0.1' });
  await new Promise((r) => s.once('connect', r));
  s.destroy();
  expectType(await good.ping(), 'PONG');
});

test.serial('a server without a witness: PROMOTE is PROMOTED term 0 at once, and MIRROR locks are granted as any', async (t) => {
  // The guide's pair (no witness): the client's word is enough, so an
  // older-style pair keeps working with clients that speak PAIR.
  const env = new ServerEnv(t);
  await env.start();
  const a = await env.client({ pid: 1101, port: 21 });
  t.like(expectType(await a.request({ type: 'PROMOTE', waitMs: 5000 }), 'PROMOTED'), { term: 0 });
  expectType(await a.request({ type: 'LOCK', nowait: true, noInterim: false, osLocks: false, mirror: true, mode: 'write', tid: 1, file: FILE, key: Buffer.from('M') }), 'GRANTED');
  const b = await env.client({ pid: 1102, port: 22 });
  expectType(await b.lock('M', 'write', { nowait: true }), 'LOCKED');
});
