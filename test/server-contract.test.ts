// server-contract.test.ts - the places where docs/protocol.md and a live
// lock server once disagreed (issue 11), each checked against the server as
// the document now states it: which faults are answered and which close the
// connection, request ids, the refusal that comes before HELLO, what the
// waits limit counts, keep-alive, exactly one final answer per request even
// when the connection closes, UNLOCK_ALL and ranges, the range that ends at
// the kernel's last byte, and the smaller rules (downgrade, RANGE_UNLOCK
// errors). Serial: each test runs a monitor, a listener and lock servers.
import test from 'ava';
import net from 'node:net';
import { ServerEnv, until } from './helpers/server-env.js';
import { WireClient, expectType, FILE, recordFrames } from './helpers/wire-client.js';
import { rawFrame } from './helpers/proto-vectors.js';
import { encode, FrameReader } from '../src/protocol/codec.js';
import { FrameType as T, FrameFlag } from '../src/protocol/constants.js';
import type { ServerFrame } from '../src/protocol/frames.js';

const u8 = (n: number): Buffer => Buffer.from([n]);
const u16 = (n: number): Buffer => { const b = Buffer.alloc(2); b.writeUInt16BE(n); return b; };
const u32 = (n: number): Buffer => { const b = Buffer.alloc(4); b.writeUInt32BE(n); return b; };
const fileBytes = (): Buffer => { const b = Buffer.alloc(16); b.writeBigUInt64BE(FILE.inode, 0); b.writeBigInt64BE(FILE.dev, 8); return b; };
const lockBody = (mode: number, key: Buffer): Buffer => Buffer.concat([u8(mode), u32(1), fileBytes(), u16(key.length), key]);
const rangeBody = (mode: number, start: bigint, length: bigint): Buffer => {
  const b = Buffer.alloc(16); b.writeBigUInt64BE(start, 0); b.writeBigUInt64BE(length, 8);
  return Buffer.concat([u8(mode), u32(1), fileBytes(), b]);
};


const range = (space: 'range' | 'exec' | 'file', start: bigint, length: bigint, o: { nowait?: boolean; mode?: 'read' | 'write'; tid?: number } = {}) =>
  ({ type: 'RANGE_LOCK' as const, nowait: o.nowait ?? true, space, mode: o.mode ?? 'write', tid: o.tid ?? 1, file: FILE, start, length });

test.serial('a bad value in a sound request is answered with ERROR under its request id, and the connection stays', async (t) => {
  const env = new ServerEnv(t);
  await env.start();
  const c = await env.client({ pid: 6101 });
  expectType(await c.lock('HELD'), 'GRANTED');
  const cases: { name: string; rid: number; bytes: Buffer; code: 'KEY_TOO_LONG' | 'BAD_ARGUMENT'; text: RegExp }[] = [
    { name: 'key of 600 bytes', rid: 9001, bytes: rawFrame({ type: T.LOCK, requestId: 9001, body: lockBody(2, Buffer.alloc(600, 0x41)) }), code: 'KEY_TOO_LONG', text: /key of 600 bytes exceeds 512/ },
    { name: 'mode 3', rid: 9002, bytes: rawFrame({ type: T.LOCK, requestId: 9002, body: lockBody(3, Buffer.from('K')) }), code: 'BAD_ARGUMENT', text: /mode 3 is not 1 \(READ\) or 2 \(WRITE\)/ },
    { name: 'unknown LOCK flag', rid: 9003, bytes: rawFrame({ type: T.LOCK, requestId: 9003, flags: 0x0100, body: lockBody(2, Buffer.from('K')) }), code: 'BAD_ARGUMENT', text: /unknown flags 0x100/ },
    { name: 'STATUS with both probes', rid: 9004, bytes: rawFrame({ type: T.STATUS, requestId: 9004, flags: FrameFlag.PROBE_READ | FrameFlag.PROBE_WRITE, body: Buffer.concat([u32(1), fileBytes(), u16(1), Buffer.from('K')]) }), code: 'BAD_ARGUMENT', text: /PROBE_READ and PROBE_WRITE together/ },
    { name: 'RANGE_LOCK EXEC and FILELOCK', rid: 9005, bytes: rawFrame({ type: T.RANGE_LOCK, requestId: 9005, flags: FrameFlag.EXEC | FrameFlag.FILELOCK, body: rangeBody(2, 0n, 0n) }), code: 'BAD_ARGUMENT', text: /EXEC and FILELOCK together/ },
    { name: 'RANGE_TEST mode 0', rid: 9006, bytes: rawFrame({ type: T.RANGE_TEST, requestId: 9006, body: rangeBody(0, 0n, 1n) }), code: 'BAD_ARGUMENT', text: /mode 0/ },
    { name: 'TEST text not UTF-8', rid: 9007, bytes: rawFrame({ type: T.TEST, requestId: 9007, body: Buffer.concat([u16(2), Buffer.from([0xc3, 0x28])]) }), code: 'BAD_ARGUMENT', text: /not valid UTF-8/ },
    { name: 'UNLOCK key of 513 bytes', rid: 9008, bytes: rawFrame({ type: T.UNLOCK, requestId: 9008, body: Buffer.concat([u32(1), fileBytes(), u16(513), Buffer.alloc(513)]) }), code: 'KEY_TOO_LONG', text: /513 bytes/ },
  ];
  const seen = recordFrames(c); // WireClient ignores answers to ids it did not make
  for (const k of cases) {
    c.sendBytes(k.bytes);
    expectType(await c.ping(), 'PONG'); // answered in order: the refusal came before this PONG
  }
  for (const k of cases) {
    const f = seen.find((x) => x.requestId === k.rid);
    if (!f || f.type !== 'ERROR') { t.fail(`${k.name}: no ERROR answer (${JSON.stringify(f)})`); continue; }
    t.is(f.code, k.code, k.name);
    t.regex(f.text, k.text, k.name);
  }
  t.false(c.isClosed, 'the connection stays');
  t.is(c.connectionError, undefined);
  t.is(expectType(await c.status('HELD'), 'STATUS_RESULT').code, 2, 'its lock is still held');
});

test.serial('what closes the connection: a broken frame, request id 0, a request id still outstanding; requests read before it are answered first', async (t) => {
  const env = new ServerEnv(t);
  await env.start();
  const holder = await env.client({ pid: 6201 });
  expectType(await holder.lock('K'), 'GRANTED');

  // Good requests and a truncated frame in one write: the good ones are answered, then ERROR PROTOCOL.
  const a = await env.client({ pid: 6202 });
  const seen = recordFrames(a);
  a.sendBytes(Buffer.concat([
    encode({ type: 'PING', requestId: 11 }),
    encode({ type: 'LOCK', requestId: 12, nowait: true, noInterim: false, osLocks: false, mode: 'write', tid: 1, file: FILE, key: Buffer.from('A') }),
    rawFrame({ type: T.LOCK, requestId: 13, body: lockBody(2, Buffer.from('B')).subarray(0, 10) }),
  ]));
  await a.closed;
  t.deepEqual(seen.map((f) => `${f.type} ${f.requestId}`), ['PONG 11', 'GRANTED 12', 'ERROR 0']);
  t.is(a.connectionError?.code, 'PROTOCOL');
  t.regex(a.connectionError?.text ?? '', /truncated body/);
  // Its lock went with the connection.
  expectType(await holder.lock('A', 'write', { nowait: true }), 'GRANTED');

  // Request id 0 is the connection's own.
  const z = await env.client({ pid: 6203 });
  z.sendFrame({ type: 'PING', requestId: 0 });
  await z.closed;
  t.is(z.connectionError?.code, 'PROTOCOL');
  t.regex(z.connectionError?.text ?? '', /request id 0 is reserved/);

  // An id still outstanding (a waiting LOCK), reused by any request: close.
  const d = await env.client({ pid: 6204 });
  const waiting = d.lock('K', 'write', { requestId: 500, noInterim: true });
  await until(() => env.table.usage().waiting === 1, 3000, 'the LOCK waits');
  d.sendFrame({ type: 'PING', requestId: 500 });
  await d.closed;
  t.is(d.connectionError?.code, 'PROTOCOL');
  t.regex(d.connectionError?.text ?? '', /PING: request id 500 is already outstanding/);
  // The waiting LOCK got its own final answer before the close.
  const w = expectType(await waiting, 'ERROR');
  t.is(w.code, 'CANCELLED');

  // And a waiting RANGE_LOCK's id reused by a LOCK.
  const r1 = await env.client({ pid: 6205 });
  expectType(await r1.request(range('range', 0n, 10n)), 'GRANTED');
  const r2 = await env.client({ pid: 6206 });
  const rw = r2.request(range('range', 0n, 10n, { nowait: false }), { requestId: 77 });
  expectType(await r2.ping(), 'PONG'); // requests are read in order: the RANGE_LOCK waits now
  r2.sendFrame({ type: 'LOCK', requestId: 77, nowait: true, noInterim: false, osLocks: false, mode: 'write', tid: 1, file: FILE, key: Buffer.from('Z') });
  await r2.closed;
  t.regex(r2.connectionError?.text ?? '', /LOCK: request id 77 is already outstanding/);
  t.is(expectType(await rw, 'ERROR').code, 'CANCELLED');
});

test.serial('too many connections: ERROR LIMIT (request id 0) arrives right after connect, before HELLO, and the close is clean', async (t) => {
  const env = new ServerEnv(t, { maxConnections: 1, maxConnectionsPerAddress: 1 });
  await env.start();
  const a = await env.client({ pid: 6301 });
  expectType(await a.ping(), 'PONG');
  const sock = net.connect({ port: env.port, host: '127.0.0.1' });
  t.teardown(() => sock.destroy());
  const errors: Error[] = [];
  sock.on('error', (e) => errors.push(e));
  const chunks: Buffer[] = [];
  const first = new Promise<void>((resolve) => sock.once('data', () => resolve()));
  sock.on('data', (d: Buffer) => chunks.push(d));
  const ended = new Promise<void>((resolve) => sock.once('end', () => resolve()));
  await first; // nothing sent yet
  const [f] = FrameReader.forClient().push(Buffer.concat(chunks));
  const e = f && f.type === 'ERROR' ? f : undefined;
  t.is(e?.code, 'LIMIT');
  t.is(e?.requestId, 0);
  t.regex(e?.text ?? '', /maxConnections/);
  // The client's HELLO crosses the refusal: it is read and dropped, the connection ends with FIN, not a reset.
  sock.write(encode({ type: 'HELLO', requestId: 0, minVersion: 1, maxVersion: 1, port: 1, pid: 6302, keepaliveMs: 0, host: 'h', program: 'p', options: '' }));
  await ended;
  t.deepEqual(errors.map((x) => x.message), []);
});

test.serial('the waits limit (maxOutstanding) counts waiting LOCKs and RANGE_LOCKs; PING and STATUS are never outstanding', async (t) => {
  const env = new ServerEnv(t, { maxOutstanding: 4 });
  await env.start();
  const h = await env.client({ pid: 6401 });
  for (const k of ['W1', 'W2']) expectType(await h.lock(k), 'GRANTED');
  expectType(await h.request(range('range', 0n, 100n)), 'GRANTED');
  const c = await env.client({ pid: 6402 });
  const waits = [c.lock('W1', 'write', { noInterim: true }), c.lock('W2', 'write', { noInterim: true }),
    c.request(range('range', 0n, 1n, { nowait: false })), c.request(range('range', 5n, 1n, { nowait: false }))];
  // Far more PINGs and STATUSes than the limit, while four requests wait.
  for (let i = 0; i < 20; i++) {
    expectType(await c.ping(), 'PONG');
    t.is(expectType(await c.status('W1'), 'STATUS_RESULT').code, -2);
  }
  const over = expectType(await c.request(range('range', 50n, 1n, { nowait: false })), 'ERROR');
  t.is(over.code, 'LIMIT');
  t.regex(over.text, /4 lock requests waiting.*maxOutstanding/);
  const overLock = expectType(await c.lock('W1', 'read', { noInterim: true }), 'ERROR');
  t.is(overLock.code, 'LIMIT');
  h.close();
  t.deepEqual((await Promise.all(waits)).map((f) => f.type), ['GRANTED', 'GRANTED', 'GRANTED', 'GRANTED']);
});

test.serial('keep-alive: WELCOME gives max(keepaliveMs, 2 x announced) or 0; a client silent while its LOCK waits gets the LOCK\'s final answer, then ERROR LIMIT, and loses its locks', async (t) => {
  const env = new ServerEnv(t, { keepaliveMs: 400 });
  await env.start();
  t.is((await env.client({ pid: 6501, keepaliveMs: 0 })).welcome.keepaliveMs, 0);
  t.is((await env.client({ pid: 6502, keepaliveMs: 1000 })).welcome.keepaliveMs, 2000);
  const other = await env.client({ pid: 6503, keepaliveMs: 100 });
  const pinger = setInterval(() => void other.ping().catch(() => undefined), 100);
  t.teardown(() => clearInterval(pinger));
  expectType(await other.lock('BUSY'), 'GRANTED');
  const silent = await env.client({ pid: 6504, keepaliveMs: 100 });
  t.is(silent.welcome.keepaliveMs, 400);
  expectType(await silent.lock('MINE'), 'GRANTED');
  // It waits for BUSY and sends nothing more: the server's WAITING frames are no sign of the client's life.
  const waited = silent.lock('BUSY');
  await silent.closed;
  const w = expectType(await waited, 'ERROR');
  t.is(w.code, 'CANCELLED');
  t.is(silent.connectionError?.code, 'LIMIT');
  t.regex(silent.connectionError?.text ?? '', /keep-alive: no complete frame from the client for \d+ ms \(limit 400 ms\)/);
  expectType(await other.lock('MINE', 'write', { nowait: true }), 'GRANTED');
});

test.serial('SIGTERM: each waiting LOCK and RANGE_LOCK gets ERROR SHUTDOWN under its own id before the connection-level ERROR SHUTDOWN', async (t) => {
  // One client per lock-server process: the holder's process is not the one stopped.
  const env = new ServerEnv(t, { clientsPerProcess: 1 });
  await env.start();
  const h = await env.client({ pid: 6601 });
  expectType(await h.lock('K'), 'GRANTED');
  expectType(await h.request(range('range', 0n, 10n)), 'GRANTED');
  const c = await env.client({ pid: 6602 });
  const seen = recordFrames(c);
  const lw = c.lock('K', 'write', { requestId: 31, noInterim: true });
  const rw = c.request(range('range', 0n, 10n, { nowait: false }), { requestId: 32 });
  await until(() => env.table.usage().waiting === 1, 3000, 'the LOCK waits');
  expectType(await c.ping(), 'PONG'); // the RANGE_LOCK was read before this
  const cancelled = c.request({ type: 'CANCEL', target: 32 }, { requestId: 33 });
  void cancelled.catch(() => undefined);
  void lw.catch(() => undefined);
  void rw.catch(() => undefined);
  const server = c.welcome.serverPid;
  t.not(server, h.welcome.serverPid);
  process.kill(server, 'SIGTERM');
  await c.closed;
  const finals = seen.filter((f) => f.type !== 'PONG').map((f) => `${f.type} ${f.requestId}${f.type === 'ERROR' ? ` ${f.code}` : ''}`);
  // 31 and 32 each get one final answer (32 may have been withdrawn by the CANCEL first), 33 its RELEASED, then the close.
  t.is(finals.at(-1), 'ERROR 0 SHUTDOWN');
  t.is(finals.filter((x) => x.startsWith('ERROR 31 ')).length, 1, finals.join(', '));
  t.is(finals.filter((x) => / 32 /.test(`${x} `)).length, 1, finals.join(', '));
  t.is(finals.filter((x) => x.startsWith('RELEASED 33')).length, 1, finals.join(', '));
  t.true(finals.includes('ERROR 31 SHUTDOWN'), finals.join(', '));
});

test.serial('UNLOCK_ALL (even ALL_THREADS) and UNLOCK_FILE release record locks only: ranges, execution locks stay until RANGE_UNLOCK or the close', async (t) => {
  const env = new ServerEnv(t);
  await env.start();
  const a = await env.client({ pid: 6701 });
  expectType(await a.lock('R1'), 'GRANTED');
  expectType(await a.lock('R2', 'write', { tid: 2 }), 'GRANTED');
  expectType(await a.request(range('range', 0n, 10n)), 'GRANTED');
  expectType(await a.request(range('exec', 7n, 1n)), 'GRANTED');
  t.is(expectType(await a.request({ type: 'UNLOCK_FILE', tid: 1, file: FILE }), 'RELEASED').count, 1);
  t.is(expectType(await a.request({ type: 'UNLOCK_ALL', tid: 1, allThreads: true }), 'RELEASED').count, 1);
  const b = await env.client({ pid: 6702 });
  expectType(await b.lock('R1', 'write', { nowait: true }), 'GRANTED');
  expectType(await b.lock('R2', 'write', { nowait: true }), 'GRANTED');
  expectType(await b.request(range('range', 5n, 1n)), 'LOCKED');
  expectType(await b.request(range('exec', 7n, 1n)), 'LOCKED');
  // EXEC with length 0 is the bare UNLOCK (all of the owner's execution locks), a RANGE_UNLOCK the range.
  t.is(expectType(await a.request({ type: 'RANGE_UNLOCK', space: 'exec', tid: 1, file: FILE, start: 0n, length: 0n }), 'RELEASED').count, 1);
  t.is(expectType(await a.request({ type: 'RANGE_UNLOCK', space: 'range', tid: 1, file: FILE, start: 0n, length: 0n }), 'RELEASED').count, 1);
  expectType(await b.request(range('range', 5n, 1n)), 'GRANTED');
  expectType(await b.request(range('exec', 7n, 1n)), 'GRANTED');
});

test.serial('a range that ends at the kernel\'s last byte ([0, 2^63)) locks, tests and unlocks like "to the end" (length 0)', async (t) => {
  const env = new ServerEnv(t);
  await env.start();
  const a = await env.client({ pid: 6801 });
  const b = await env.client({ pid: 6802 });
  const TOP = 1n << 63n;
  expectType(await a.request(range('range', 0n, TOP)), 'GRANTED');
  const r = expectType(await b.request({ type: 'RANGE_TEST', mode: 'read', tid: 1, file: FILE, start: TOP - 1n, length: 1n }), 'RANGE_RESULT');
  t.is(r.conflict?.start, 0n);
  t.is(r.conflict?.length, 0n, 'reported as to-infinity: the same bytes');
  expectType(await b.request({ type: 'RANGE_TEST', mode: 'write', tid: 1, file: FILE, start: 0n, length: TOP }), 'RANGE_RESULT');
  t.is(expectType(await a.request({ type: 'RANGE_UNLOCK', space: 'range', tid: 1, file: FILE, start: 0n, length: TOP }), 'RELEASED').count, 1);
  expectType(await b.request(range('range', 0n, TOP)), 'GRANTED');
  // One byte further is out of bounds: BAD_ARGUMENT, for that request only.
  const bad = expectType(await a.request(range('range', 1n, TOP)), 'ERROR');
  t.is(bad.code, 'BAD_ARGUMENT');
  expectType(await a.ping(), 'PONG');
});

test.serial('smaller rules: READ by the holder of a WRITE downgrades it, WRITE over its READ waits for other readers; RANGE_UNLOCK answers ERROR for a bad execution number', async (t) => {
  const env = new ServerEnv(t);
  await env.start();
  const a = await env.client({ pid: 6901 });
  const b = await env.client({ pid: 6902 });
  expectType(await a.lock('D'), 'GRANTED');
  expectType(await b.lock('D', 'read', { nowait: true }), 'LOCKED');
  expectType(await a.lock('D', 'read'), 'GRANTED');
  t.is(expectType(await a.status('D'), 'STATUS_RESULT').code, 1);
  expectType(await b.lock('D', 'read', { nowait: true }), 'GRANTED');
  // Upgrade: WRITE over its own READ waits while another owner reads (LOCKED with NOWAIT), then converts.
  expectType(await a.lock('D', 'write', { nowait: true }), 'LOCKED');
  const up = a.lock('D', 'write', { noInterim: true });
  expectType(await a.ping(), 'PONG'); // the upgrade was read and waits
  t.is(expectType(await b.unlock('D'), 'RELEASED').count, 1);
  expectType(await up, 'GRANTED');
  t.is(expectType(await a.status('D'), 'STATUS_RESULT').code, 2);
  const e = expectType(await a.request({ type: 'RANGE_UNLOCK', space: 'exec', tid: 1, file: FILE, start: 300n, length: 1n }), 'ERROR');
  t.is(e.code, 'BAD_ARGUMENT');
  t.regex(e.text, /0\.\.255/);
  expectType(await a.ping(), 'PONG');
});

test.serial('-P (port-based locks): the connections of one address and port own their record locks together; any of them closing releases them', async (t) => {
  const env = new ServerEnv(t);
  await env.start(['-ibP']);
  const a = await env.client({ pid: 7001, port: 300 });
  const b = await env.client({ pid: 7002, port: 300 });
  const c = await env.client({ pid: 7003, port: 301 });
  expectType(await a.lock('PK'), 'GRANTED');
  expectType(await b.lock('PK', 'write', { nowait: true, tid: 9 }), 'GRANTED');
  t.is(expectType(await b.status('PK'), 'STATUS_RESULT').code, 2, 'port 300 holds it, whichever connection asks');
  expectType(await c.lock('PK', 'write', { nowait: true }), 'LOCKED');
  t.is(expectType(await b.unlock('PK', { tid: 9 }), 'RELEASED').count, 1, 'another connection of the port releases it');
  expectType(await c.lock('PK', 'write', { nowait: true }), 'GRANTED');
  expectType(await c.unlock('PK'), 'RELEASED');
  expectType(await a.lock('PK'), 'GRANTED');
  b.close();
  await b.closed;
  // b's close releases port 300's locks, the one a took included (the close is noticed soon, not at once).
  await until(async () => (await c.lock('PK', 'write', { nowait: true })).type === 'GRANTED', 5000, 'port 300\'s lock released by b\'s close');
  t.is(expectType(await a.status('PK'), 'STATUS_RESULT').code, -2, 'a, still connected, no longer holds it');
});

test.serial('STATUS asks the mechanism its flag names: STATUS_OSLOCKS for the OS record locks, else the server\'s table, whatever the connection used before', async (t) => {
  const env = new ServerEnv(t);
  await env.start();
  const a = await env.client({ pid: 7101 });
  expectType(await a.lock('TABLE-KEY'), 'GRANTED');
  expectType(await a.request({ type: 'LOCK', nowait: false, noInterim: true, osLocks: true, mode: 'write', tid: 1, file: FILE, key: Buffer.from('OS-KEY') }), 'GRANTED');
  // The table lock is still reported after the connection took an OSLOCKS lock.
  t.is(expectType(await a.status('TABLE-KEY'), 'STATUS_RESULT').code, 2);
  t.is(expectType(await a.request({ type: 'STATUS', tid: 1, file: FILE, key: Buffer.from('OS-KEY'), osLocks: true }), 'STATUS_RESULT').code, 2);
  t.is(expectType(await a.status('OS-KEY'), 'STATUS_RESULT').code, 0, 'the table does not hold OS-KEY: separate spaces');
  const b = await env.client({ pid: 7102 });
  const other = expectType(await b.request({ type: 'STATUS', tid: 1, file: FILE, key: Buffer.from('OS-KEY'), osLocks: true }), 'STATUS_RESULT');
  t.is(other.code, -2);
  t.is(expectType(await b.request({ type: 'STATUS', tid: 1, file: FILE, key: Buffer.from('TABLE-KEY'), osLocks: true }), 'STATUS_RESULT').code, 0);
});
