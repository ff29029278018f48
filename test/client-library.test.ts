// client-library.test.ts - JdlsClient (src/client/) against the scripted fake
// server (test/helpers/fake-server.ts): handshake, NOWAIT conflicts, waiting
// with interim frames, WAIT, TIMEOUT declaring a server dead, cancel, unlock
// counts, status, keep-alive, a server closing mid-request, protocol errors,
// server ERROR codes, logging to TRACE and jbase_error_trace.
import test, { type ExecutionContext } from 'ava';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { JdlsClient, type ConnectOptions, type WaitingInfo } from '../src/client/client.js';
import { JdlsError } from '../src/errors.js';
import { encode } from '../src/protocol/codec.js';
import { FakeServer, type FakeConn, type FakeServerOptions } from './helpers/fake-server.js';
import { testDir } from './helpers/installations.js';
import { untoken } from './helpers/grants.js';

const FILE = { inode: 1483651n };
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

interface Env {
  server: FakeServer;
  dir: string;
  errorTrace: string;
  connect(extraJdls?: string, opts?: ConnectOptions): Promise<JdlsClient>;
}

async function setup(t: ExecutionContext, welcome: FakeServerOptions['welcome'] = {}): Promise<Env> {
  const dir = testDir('client');
  const server = await FakeServer.start({ welcome });
  const clients: JdlsClient[] = [];
  t.teardown(async () => {
    for (const c of clients) await c.close().catch(() => undefined);
    await server.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  const errorTrace = path.join(dir, 'tmp', 'jbase_error_trace');
  return {
    server, dir, errorTrace,
    async connect(extra = '', opts = {}) {
      const c = await JdlsClient.connect(`${server.jdls}${extra ? `,${extra}` : ''}`, { errorTrace, connectTimeoutMs: 10000, ...opts });
      clients.push(c);
      return c;
    },
  };
}

async function closedPort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

async function rejectsCode(t: ExecutionContext, p: Promise<unknown>, code: string, re?: RegExp): Promise<JdlsError> {
  const e = await t.throwsAsync(p, { instanceOf: JdlsError });
  t.is((e as JdlsError).code as string, code, (e as Error).message);
  if (re) t.regex((e as Error).message, re);
  return e as JdlsError;
}

test('handshake: HELLO names the client, WELCOME describes the server', async (t) => {
  const env = await setup(t, { mechanism: 'os', interimMs: 1234, keepaliveMs: 60000, server: 'lockhost' });
  const c = await env.connect('WAIT', { port: 77, program: 'MYPROG', hostname: 'apphost', pid: 4242 });
  const conn = env.server.conns[0];
  t.like(conn?.hello, { type: 'HELLO', minVersion: 1, maxVersion: 1, port: 77, pid: 4242, host: 'apphost', program: 'MYPROG', options: `${env.server.jdls},WAIT` });
  t.like(c.server, { host: '127.0.0.1', port: env.server.port, pid: process.pid, mechanism: 'os', interimMs: 1234, keepaliveMs: 60000, clientAddr: '127.0.0.1', name: 'lockhost' });
  t.false(c.resilient);
  t.is(await c.test('teststring'), 'teststring');
  t.is(await c.test(''), '');
  t.is(await c.test('ünï'), 'ünï');
  await c.ping();
});

test('NOWAIT conflict: { granted: false, holder } naming the holder', async (t) => {
  const env = await setup(t);
  const a = await env.connect('', { port: 11, pid: 111 });
  const b = await env.connect('', { port: 22, pid: 222 });
  t.deepEqual(untoken(await a.lock(FILE, 'K1', 'write', { nowait: true })), { granted: true });
  const r = await b.lock(FILE, 'K1', 'write', { nowait: true });
  t.false(r.granted);
  if (!r.granted) t.like(r.holder, { mode: 'write', port: 11, ownerPid: 111, addr: '127.0.0.1' });
  // shared locks share; a reader conflicts with the writer
  t.deepEqual(untoken(await a.lock(FILE, 'K2', 'read', { nowait: true })), { granted: true });
  t.deepEqual(untoken(await b.lock(FILE, 'K2', 'read', { nowait: true })), { granted: true });
  t.false((await b.lock(FILE, 'K1', 'read', { nowait: true })).granted);
  // the LOCK frame carried what the options say
  const locks = env.server.received('LOCK');
  t.like(locks[0], { mode: 'write', nowait: true, noInterim: false, osLocks: false, tid: 0, file: { inode: 1483651n, dev: -1n } });
  t.deepEqual((locks[0] as { key: Buffer }).key, Buffer.from('K1'));
});

test('OSLOCKS sets the frame flag (LOCK, and STATUS asks about the OS locks); tid and dev are passed through', async (t) => {
  const env = await setup(t);
  const c = await env.connect('OSLOCKS');
  await c.lock({ inode: 5, dev: 9 }, Buffer.from([0, 1, 2]), 'read', { tid: 7 });
  t.like(env.server.received('LOCK')[0], { osLocks: true, tid: 7, file: { inode: 5n, dev: 9n }, mode: 'read' });
  await c.status({ inode: 5, dev: 9 }, Buffer.from([0, 1, 2]), { tid: 7 });
  t.like(env.server.received('STATUS')[0], { osLocks: true, tid: 7 });
  const plain = await env.connect('');
  await plain.status({ inode: 5, dev: 9 }, 'K');
  t.is((env.server.received('STATUS')[1] as { osLocks?: boolean } | undefined)?.osLocks, undefined);
});

test('a waiting lock gets interim WAITING frames (event and callback) and resolves when granted', async (t) => {
  const env = await setup(t, { interimMs: 100 });
  const a = await env.connect('', { port: 11 });
  // TIMEOUT shorter than the wait: interim frames keep the server alive
  const b = await env.connect('TIMEOUT=1', { port: 22 });
  await a.lock(FILE, 'K', 'write');
  const cb: WaitingInfo[] = [];
  const ev: WaitingInfo[] = [];
  b.on('waiting', (w) => ev.push(w));
  const p = b.lock(FILE, 'K', 'write', { onWaiting: (w) => cb.push(w) });
  await sleep(2200); // time passing: more than twice TIMEOUT, the client must stay alive
  // At least three interim frames (every 100 ms): awaited, a loaded machine may be late.
  await env.server.until(() => cb.length >= 3, 10_000, 'three interim callbacks');
  t.is(ev.length, cb.length);
  t.like(cb[0], { mode: 'write', holder: { port: 11, mode: 'write' } });
  t.deepEqual(cb[0]?.key, Buffer.from('K'));
  t.true((cb.at(-1)?.waitedMs ?? 0) >= 100);
  t.is(await a.unlock(FILE, 'K'), 1);
  t.deepEqual(untoken(await p), { granted: true });
  t.is(b.failure, undefined);
  t.is(await b.unlockAll(), 1);
});

test('WAIT: no interim frames, the TIMEOUT does not apply to the waiting lock, PONGs prove liveness', async (t) => {
  const env = await setup(t, { interimMs: 40 });
  const a = await env.connect('');
  const b = await env.connect('WAIT,TIMEOUT=1', { pingIntervalMs: 50 });
  await a.lock(FILE, 'K', 'write');
  let interim = 0;
  const p = b.lock(FILE, 'K', 'write', { onWaiting: () => interim++ });
  await sleep(2500); // more than twice TIMEOUT
  t.is(interim, 0);
  t.is(b.failure, undefined);
  t.like(env.server.received('LOCK')[1], { noInterim: true, nowait: false });
  await env.server.until(() => env.server.conns[1]!.frames.filter((f) => f.type === 'PING').length >= 5, 10_000, 'pings while waiting');
  await a.unlock(FILE, 'K');
  t.deepEqual(untoken(await p), { granted: true });
});

test('WAIT does not hide a dead server: unanswered PINGs declare it dead', async (t) => {
  const env = await setup(t);
  const a = await env.connect('');
  const b = await env.connect('WAIT,TIMEOUT=0.3', { pingIntervalMs: 50 });
  await a.lock(FILE, 'K', 'write');
  const p = b.lock(FILE, 'K', 'write');
  await sleep(100);
  env.server.silent = true;
  const started = Date.now();
  await rejectsCode(t, p, 'SERVER_DEAD', /silent for more than 300 ms/);
  t.true(Date.now() - started < 3000);
});

test('TIMEOUT: a silent server is declared dead, outstanding requests reject, the client is closed, jbase_error_trace has it', async (t) => {
  const env = await setup(t);
  const c = await env.connect('TIMEOUT=0.5');
  const dead: JdlsError[] = [];
  c.on('dead', (e) => dead.push(e));
  t.deepEqual(untoken(await c.lock(FILE, 'A', 'write')), { granted: true });
  env.server.silent = true;
  const started = Date.now();
  const p1 = c.lock(FILE, 'B', 'write');
  const p2 = c.unlock(FILE, 'A');
  const p3 = c.status(FILE, 'A');
  const e1 = await rejectsCode(t, p1, 'SERVER_DEAD');
  const elapsed = Date.now() - started;
  t.true(elapsed >= 450 && elapsed < 5000, `declared dead after ${elapsed} ms`);
  t.is(await t.throwsAsync(p2), e1, 'every outstanding request gets the same error');
  t.is(await t.throwsAsync(p3), e1);
  t.deepEqual(dead, [e1]);
  t.is(c.failure, e1);
  await rejectsCode(t, c.lock(FILE, 'C', 'write'), 'SERVER_DEAD');
  await rejectsCode(t, c.test('x'), 'SERVER_DEAD');
  await env.server.until(() => env.server.conns[0]!.socket.destroyed || env.server.conns[0]!.socket.readableEnded, 3000, 'the socket to close');
  const trace = fs.readFileSync(env.errorTrace, 'utf8');
  t.regex(trace, /"level":50.*declared dead/);
  t.regex(trace, /distributed lock client is dead/);
});

test('an idle client is not timed out by its first request after a long quiet spell', async (t) => {
  const env = await setup(t, { keepaliveMs: 0 });
  const c = await env.connect('TIMEOUT=1', { pingIntervalMs: 100000 });
  await sleep(1500); // longer than TIMEOUT, nothing outstanding
  env.server.script = (f, conn) => {
    if (f.type !== 'TEST') return false;
    setTimeout(() => conn.send({ type: 'TEST_RESULT', requestId: f.requestId, text: f.text }), 300);
    return true;
  };
  t.is(await c.test('late but in time'), 'late but in time');
});

test('cancel: aborting a waiting lock sends CANCEL and rejects ABORTED; an aborted signal sends nothing', async (t) => {
  const env = await setup(t, { interimMs: 1000 });
  const a = await env.connect('');
  const b = await env.connect('');
  await a.lock(FILE, 'K', 'write');
  const ac = new AbortController();
  const p = b.lock(FILE, 'K', 'write', { signal: ac.signal });
  await env.server.until(() => env.server.received('LOCK').length === 2);
  ac.abort();
  await rejectsCode(t, p, 'ABORTED');
  const cancel = env.server.received('CANCEL')[0];
  t.like(cancel, { type: 'CANCEL', target: env.server.received('LOCK')[1]!.requestId });
  // the withdrawn request does not get the lock later
  t.is(await a.unlock(FILE, 'K'), 1);
  t.deepEqual(untoken(await a.lock(FILE, 'K', 'write', { nowait: true })), { granted: true });
  const ac2 = new AbortController();
  ac2.abort();
  await rejectsCode(t, b.lock(FILE, 'Z', 'write', { signal: ac2.signal }), 'ABORTED');
  t.is(env.server.received('LOCK').length, 3);
});

test('cancel race: if the grant wins, the aborted lock resolves granted', async (t) => {
  const env = await setup(t);
  const c = await env.connect('');
  // a server that answers CANCEL with RELEASED 0 after granting the lock
  env.server.script = (f, conn) => {
    if (f.type === 'LOCK') return true; // hold it
    if (f.type === 'CANCEL') {
      conn.send({ type: 'GRANTED', requestId: f.target });
      conn.send({ type: 'RELEASED', requestId: f.requestId, count: 0 });
      return true;
    }
    return false;
  };
  const ac = new AbortController();
  const p = c.lock(FILE, 'K', 'write', { signal: ac.signal });
  await env.server.until(() => env.server.received('LOCK').length === 1);
  ac.abort();
  t.deepEqual(untoken(await p), { granted: true });
});

test('unlock, unlockFile, unlockAll return the number of locks freed', async (t) => {
  const env = await setup(t);
  const c = await env.connect('');
  const other = { inode: 2n };
  await c.lock(FILE, 'A', 'write');
  await c.lock(FILE, 'B', 'write');
  await c.lock(FILE, 'C', 'read');
  await c.lock(other, 'A', 'write');
  await c.lock(other, 'T', 'write', { tid: 5 });
  t.is(await c.unlock(FILE, 'A'), 1);
  t.is(await c.unlock(FILE, 'A'), 0);
  t.is(await c.unlock(FILE, 'B', { tid: 9 }), 0, 'another thread does not own it');
  t.is(await c.unlockFile(FILE), 2);
  t.is(await c.unlockFile(FILE), 0);
  t.is(await c.unlockAll(), 1, 'this thread only');
  t.is(await c.unlockAll({ allThreads: true }), 1);
  t.is(await c.unlockAll({ allThreads: true }), 0);
  t.like(env.server.received('UNLOCK_ALL')[1], { allThreads: true });
});

test('status: RECORDLOCKED codes and the holder', async (t) => {
  const env = await setup(t);
  const a = await env.connect('', { port: 31 });
  const b = await env.connect('', { port: 32 });
  t.deepEqual(await a.status(FILE, 'K'), { code: 0 });
  await a.lock(FILE, 'K', 'write');
  await a.lock(FILE, 'R', 'read');
  t.deepEqual(untoken(await a.status(FILE, 'K')), { code: 2 });
  t.deepEqual(untoken(await a.status(FILE, 'R')), { code: 1 });
  const s = await b.status(FILE, 'K');
  t.is(s.code, -2);
  t.like(s.holder, { port: 31, mode: 'write' });
  t.is((await b.status(FILE, 'R')).code, -1);
});

test('keep-alive: PINGs when idle, at most a third of the server keepalive apart', async (t) => {
  const env = await setup(t, { keepaliveMs: 150 });
  const c = await env.connect('', { pingIntervalMs: 100000 });
  t.is(env.server.conns[0]?.hello?.keepaliveMs, 100000);
  const started = Date.now();
  await env.server.until(() => env.server.received('PING').length >= 5, 10000, 'five pings');
  const elapsed = Date.now() - started;
  t.true(elapsed >= 150, `five pings after ${elapsed} ms: about 50 ms apart, not a storm`);
  t.is(c.failure, undefined);
  // Busy clients do not ping: the requests themselves show liveness. What
  // the client guarantees is an order, not a rate: a PING goes out only once
  // pingEvery (keepalive / 3 = 50 ms) has passed since its last frame. So a
  // PING the server sees between request i and request i+1 means those two
  // were sent at least 50 ms apart (each stamp is taken just before the
  // request is written, synchronously; a ping written between them comes
  // after the first stamp + 50 and before the second). A loaded machine may
  // stretch the gaps and so allow pings; it can never make this fail.
  const frames = env.server.conns[0]!.frames;
  const from = frames.length;
  const stamps: number[] = [];
  const end = Date.now() + 300;
  while (Date.now() < end) {
    stamps.push(Date.now());
    await c.test('busy');
    await sleep(10);
  }
  let requests = 0;
  let pingAfter = -1;
  for (const f of frames.slice(from)) {
    if (f.type === 'TEST') {
      if (pingAfter >= 1) {
        const gap = stamps[requests]! - stamps[requests - 1]!;
        t.true(gap >= 50, `a PING between requests ${requests} and ${requests + 1}, sent ${gap} ms apart`);
      }
      requests++;
      pingAfter = -1;
    } else if (f.type === 'PING' && pingAfter < 0) {
      pingAfter = requests;
    }
  }
  t.is(requests, stamps.length, 'every request reached the server');
});

test('the server closing mid-request: SERVER_CLOSED for every outstanding request and the dead event', async (t) => {
  const env = await setup(t);
  const c = await env.connect('');
  const dead: JdlsError[] = [];
  c.on('dead', (e) => dead.push(e));
  env.server.script = (f, conn) => {
    if (f.type === 'UNLOCK') {
      conn.socket.destroy();
      return true;
    }
    return f.type === 'LOCK'; // never answered
  };
  const p1 = c.lock(FILE, 'A', 'write');
  const p2 = c.unlock(FILE, 'A');
  await rejectsCode(t, p1, 'SERVER_CLOSED', /closed the connection|connection lost/);
  await rejectsCode(t, p2, 'SERVER_CLOSED');
  t.is(dead.length, 1);
  await rejectsCode(t, c.status(FILE, 'A'), 'SERVER_CLOSED');
});

const protocolCases: [string, (f: { type: string; requestId: number }, conn: FakeConn) => void, RegExp][] = [
  ['garbage bytes', (_f, conn) => conn.sendRaw(Buffer.from('HTTP/1.1 400 Bad Request\r\n\r\n')), /frame length/],
  ['an unknown frame type', (f, conn) => {
    const b = encode({ type: 'PONG', requestId: f.requestId });
    b[5] = 0x77;
    conn.sendRaw(b);
  }, /unknown frame type 0x77/],
  ['a client frame', (f, conn) => conn.sendRaw(encode({ type: 'PING', requestId: f.requestId })), /PING frame is not sent to a client/],
  ['the wrong answer type', (f, conn) => conn.send({ type: 'RELEASED', requestId: f.requestId, count: 1 }), /RELEASED is not an answer to LOCK/],
  ['LOCKED for a waiting lock', (f, conn) => conn.send({ type: 'LOCKED', requestId: f.requestId, holder: conn.holder(0, 'write') }), /LOCKED is not an answer to LOCK/],
  ['an answer to no request', (f, conn) => conn.send({ type: 'GRANTED', requestId: f.requestId + 1000 }), /not outstanding/],
  ['a second WELCOME', (_f, conn) => conn.send({ type: 'WELCOME', requestId: 0, version: 1, mechanism: 'shm', serverPid: 1, session: 1, interimMs: 1, keepaliveMs: 1, clientAddr: '127.0.0.1', server: 'x' }), /second WELCOME/],
  ['ERROR PROTOCOL from the server', (_f, conn) => conn.send({ type: 'ERROR', requestId: 0, code: 'PROTOCOL', text: 'you sent rubbish' }), /you sent rubbish/],
];

for (const [name, act, re] of protocolCases) {
  test(`protocol error from the server: ${name}`, async (t) => {
    const env = await setup(t);
    const c = await env.connect('');
    env.server.script = (f, conn) => {
      if (f.type !== 'LOCK') return false;
      act(f, conn);
      return true;
    };
    const p = c.lock(FILE, 'K', 'write');
    await rejectsCode(t, p, 'PROTOCOL', re);
    t.truthy(c.failure);
    await env.server.until(() => env.server.conns[0]!.socket.destroyed || env.server.conns[0]!.socket.readableEnded, 3000, 'disconnect');
    t.regex(fs.readFileSync(env.errorTrace, 'utf8'), re);
  });
}

test('server ERROR answers become typed errors; the connection stays usable', async (t) => {
  const env = await setup(t);
  const c = await env.connect('');
  const codes = ['TABLE_FULL', 'LIMIT', 'KEY_TOO_LONG', 'CANCELLED', 'BAD_ARGUMENT', 'SYSTEM'] as const;
  let i = 0;
  env.server.script = (f, conn) => {
    if (f.type !== 'LOCK') return false;
    const code = codes[i++] ?? 'SYSTEM';
    conn.send({ type: 'ERROR', requestId: f.requestId, code, text: `no: ${code}` });
    return true;
  };
  for (const code of codes) {
    const e = await rejectsCode(t, c.lock(FILE, 'K', 'write'), code, new RegExp(`no: ${code}`));
    if (code === 'TABLE_FULL') t.is(e.jbaseError, 37);
  }
  t.is(await c.test('still here'), 'still here');
  // SHUTDOWN for the connection: the client is dead
  env.server.conns[0]!.send({ type: 'ERROR', requestId: 0, code: 'SHUTDOWN', text: 'server stopping' });
  await env.server.until(() => c.failure !== undefined);
  t.is(c.failure?.code, 'SHUTDOWN');
});

test('arguments are checked before sending', async (t) => {
  const env = await setup(t);
  const c = await env.connect('');
  await rejectsCode(t, c.lock(FILE, Buffer.alloc(513), 'write'), 'KEY_TOO_LONG');
  await rejectsCode(t, c.lock(FILE, 'K', 'exclusive' as 'write'), 'BAD_ARGUMENT');
  await rejectsCode(t, c.lock({ inode: -1n }, 'K', 'write'), 'BAD_ARGUMENT');
  await rejectsCode(t, c.lock(FILE, 'K', 'write', { tid: -1 }), 'BAD_ARGUMENT');
  t.is(env.server.received('LOCK').length, 0);
  t.deepEqual(untoken(await c.lock(FILE, Buffer.alloc(512, 1), 'write')), { granted: true });
});

test('connect: refused, version refused, LIMIT at the handshake, no WELCOME in time, bad JDLS', async (t) => {
  const dir = testDir('client');
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const errorTrace = path.join(dir, 'jbase_error_trace');
  const port = await closedPort();
  const e = await rejectsCode(t, JdlsClient.connect(`SERVER=127.0.0.1,${port}`, { errorTrace }), 'CONNECT_FAILED',
    new RegExp(`connection failed for host '127.0.0.1', service '${port}', error Connection refused`));
  t.is((e.cause as NodeJS.ErrnoException).code, 'ECONNREFUSED');
  t.regex(fs.readFileSync(errorTrace, 'utf8'), /Connection refused/);

  for (const [code, text] of [['VERSION', 'this server speaks versions 2..3'], ['LIMIT', 'too many connections']] as const) {
    const s = await FakeServer.start({ onHello: (_h, conn) => { conn.send({ type: 'ERROR', requestId: 0, code, text }); conn.socket.end(); return true; } });
    t.teardown(() => s.close());
    await rejectsCode(t, JdlsClient.connect(s.jdls, { errorTrace }), code, new RegExp(text));
  }
  const mute = await FakeServer.start({ onHello: () => true });
  t.teardown(() => mute.close());
  await rejectsCode(t, JdlsClient.connect(`${mute.jdls},TIMEOUT=0.2`, { errorTrace }), 'SERVER_DEAD', /no WELCOME within 200 ms/);
  const v2 = await FakeServer.start({ welcome: { version: 2 } });
  t.teardown(() => v2.close());
  await rejectsCode(t, JdlsClient.connect(v2.jdls, { errorTrace }), 'VERSION', /version 2/);
  await rejectsCode(t, JdlsClient.connect('SERVER2=x', { errorTrace }), 'BAD_JDLS');
});

test('close(): outstanding requests reject CLOSED, the server sees the disconnect and frees the locks', async (t) => {
  const env = await setup(t);
  const a = await env.connect('');
  const b = await env.connect('');
  await a.lock(FILE, 'K', 'write');
  const p = b.lock(FILE, 'K', 'write');
  await env.server.until(() => env.server.received('LOCK').length === 2);
  await a.close();
  t.deepEqual(untoken(await p), { granted: true }, 'the waiter got the lock freed by the disconnect');
  const q = b.lock(FILE, 'Q', 'write');
  env.server.silent = true;
  const q2 = b.lock(FILE, 'Q2', 'write');
  await b.close();
  await t.notThrowsAsync(q.catch(() => undefined));
  await rejectsCode(t, q2, 'CLOSED');
  await rejectsCode(t, b.lock(FILE, 'R', 'write'), 'CLOSED');
  await b.close(); // twice is harmless
});

test('logging: TRACE=file gets the trace (overriding VERBOSE); no error, no jbase_error_trace', async (t) => {
  const env = await setup(t);
  const trace = path.join(env.dir, 'trace.log');
  const c = await env.connect(`TRACE=${trace},VERBOSE`);
  await c.lock(FILE, 'K', 'write');
  await c.close();
  const lines = fs.readFileSync(trace, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { msg: string; level: number });
  t.true(lines.some((l) => l.msg === 'connected'));
  t.true(lines.some((l) => l.msg === 'request'));
  t.true(lines.some((l) => l.msg === 'answer'));
  t.false(fs.existsSync(env.errorTrace), 'no error, no jbase_error_trace');
});
