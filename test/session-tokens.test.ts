// session-tokens.test.ts - the lock server's session (src/server/session.ts)
// and the client library over it, with a scripted mechanism: what the
// session does with a grant's token (GRANTED, STATUS_RESULT), the order of
// FENCE's raiseTokenFloor and the lock, the wait option BREAK_DEADLOCK, a
// mechanism's DEADLOCK as ERROR DEADLOCK (and JdlsError DEADLOCK in the
// library), SERVER2 mirroring with FENCE, and the broker's part (a shim's
// TOKENS, the flags and the token through the broker, the hand-over's
// HELLO). In-process: no table, so it
// checks the session's part whatever the table gives (test/server-tokens
// checks a live server's tokens).
import test, { type ExecutionContext } from 'ava';
import net from 'node:net';
import pino from 'pino';
import { Session } from '../src/server/session.js';
import { DEFAULTS, type ServerConfig } from '../src/server/config.js';
import { limitsFor } from '../src/server/quota.js';
import { JdlsError } from '../src/errors.js';
import { JdlsClient } from '../src/client/client.js';
import type { RecordLocks } from '../src/locks/mechanism.js';
import type { FileId, Holder, LockGrant, LockMode, LockResult, Owner, WaitOptions } from '../src/locks/table.js';
import { BrokerSession } from '../src/broker/session.js';
import { connectFor } from '../src/broker/handover.js';
import { FrameReader, decodeBody, encode } from '../src/protocol/codec.js';
import type { HelloFrame } from '../src/protocol/frames.js';
import { WireClient, expectType, FILE } from './helpers/wire-client.js';

type Done = (err?: Error, token?: bigint) => void;

/** A mechanism that records its calls; keys named BUSY* wait, and the test settles them. */
class ScriptedLocks implements RecordLocks {
  readonly kind = 'shm' as const;
  next = 100n;
  /** tokens tryLock gives: undefined = the next counter value */
  tokenless = false;
  /** which keys are held by someone else (tryLock: not granted, so a LOCK waits) */
  busy = (key: string): boolean => key.startsWith('BUSY');
  readonly calls: string[] = [];
  readonly waits: { key: string; opts: WaitOptions | undefined; done: Done }[] = [];
  #waited: ((n: number) => void) | undefined;
  #nextId = 1;

  tryLock(_o: Owner, _f: FileId, key: Buffer | string, _m: LockMode): LockResult {
    const k = String(key);
    this.calls.push(`tryLock ${k}`);
    if (this.busy(k)) return { granted: false, holder: HOLDER };
    if (this.tokenless) return { granted: true };
    return { granted: true, token: this.next++ };
  }

  lock(): Promise<LockGrant> {
    return Promise.reject(new Error('not used: wait() is'));
  }

  wait(_o: Owner, _f: FileId, key: Buffer | string, _m: LockMode, done: Done, opts?: WaitOptions): number {
    this.waits.push({ key: String(key), opts, done });
    this.#waited?.(this.waits.length);
    return this.#nextId++;
  }

  cancelWait(): void {}

  /** Resolves once `n` waits were started. */
  waited(n: number): Promise<void> {
    if (this.waits.length >= n) return Promise.resolve();
    return new Promise((resolve) => (this.#waited = (k) => { if (k >= n) resolve(); }));
  }

  unlock(): boolean { return true; }
  unlockAll(): number { return 0; }
  status(): { code: number; token?: bigint } {
    return { code: 2, token: 777n };
  }
  conflict(): Holder | undefined { return undefined; }
  raiseTokenFloor(token: bigint): boolean {
    this.calls.push(`floor ${token}`);
    return true;
  }
  close(): void {}
}

const HOLDER: Holder = { pid: 1, ownerPid: 2, ownerTid: 3, port: 4, mode: 'write', ip: '127.0.0.1' };

/** An in-process lock server over `mech` on a loopback port; closed at teardown. */
async function serve(t: ExecutionContext, mech: RecordLocks): Promise<number> {
  // lockDir: never used (no ranges, no OS locks here)
  const cfg: ServerConfig = { ...DEFAULTS, lockDir: '/nonexistent/jdls-session-tokens', interimMs: 60_000 };
  const sessions = new Set<Session>();
  let id = 0;
  const server = net.createServer((sock) => {
    const s = new Session(sock, {
      mech, osLocks: () => { throw new JdlsError('NOT_SUPPORTED', 'no OS locks here'); }, cfg, limits: limitsFor(cfg, undefined),
      descriptors: () => 0, log: pino({ level: 'silent' }), stats: { lockRetry: () => {} }, id: ++id, onClose: (x) => sessions.delete(x),
    });
    sessions.add(s);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(async () => {
    for (const s of sessions) s.close('test over');
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });
  return (server.address() as net.AddressInfo).port;
}

async function wire(t: ExecutionContext, port: number, tokens: boolean): Promise<WireClient> {
  const c = await WireClient.connect(port, tokens ? { tokens: true } : {});
  t.teardown(() => c.close());
  return c;
}

test('GRANTED and STATUS_RESULT carry the mechanism\'s token under TOKENS (0 when it gives none), never without', async (t) => {
  const mech = new ScriptedLocks();
  const port = await serve(t, mech);
  const a = await wire(t, port, true);
  t.true(a.welcome.tokens);
  t.is(expectType(await a.lock('A'), 'GRANTED').token, 100n);
  t.is(expectType(await a.status('A'), 'STATUS_RESULT').token, 777n);
  mech.tokenless = true;
  t.is(expectType(await a.lock('B'), 'GRANTED').token, 0n, 'no token from the mechanism: 0');
  mech.tokenless = false;
  const old = await wire(t, port, false);
  t.is(old.welcome.tokens, undefined);
  const g = expectType(await old.lock('C'), 'GRANTED');
  t.false('token' in g);
  t.false('token' in expectType(await old.status('C'), 'STATUS_RESULT'));
});

test('a waiting LOCK: BREAK_DEADLOCK reaches the mechanism; the wait\'s token goes into GRANTED; DEADLOCK is ERROR DEADLOCK and the connection stays', async (t) => {
  const mech = new ScriptedLocks();
  const port = await serve(t, mech);
  const a = await wire(t, port, true);
  const p1 = a.lock('BUSY1', 'write', { noInterim: true, breakDeadlock: true });
  const p2 = a.lock('BUSY2', 'write', { noInterim: true });
  await mech.waited(2);
  t.deepEqual(mech.waits.map((w) => [w.key, w.opts?.breakDeadlock]), [['BUSY1', true], ['BUSY2', undefined]]);
  mech.waits[0]?.done(new JdlsError('DEADLOCK', 'waiting would close a cycle: pid 1 -> pid 2 -> pid 1'));
  const e = expectType(await p1, 'ERROR');
  t.is(e.code, 'DEADLOCK');
  t.regex(e.text, /cycle/);
  mech.waits[1]?.done(undefined, 4242n);
  t.is(expectType(await p2, 'GRANTED').token, 4242n);
  expectType(await a.ping(), 'PONG');
  t.false(a.isClosed);
});

test('FENCE: raiseTokenFloor(fence) before the lock is taken', async (t) => {
  const mech = new ScriptedLocks();
  const port = await serve(t, mech);
  const a = await wire(t, port, true);
  const fence = (9n << 44n) | 5n;
  expectType(await a.lock('F', 'write', { fence }), 'GRANTED');
  t.deepEqual(mech.calls, [`floor ${fence}`, 'tryLock F']);
});

test('the client library: lock() resolves the token, status() gives it, breakDeadlock rejects with JdlsError DEADLOCK', async (t) => {
  const mech = new ScriptedLocks();
  const port = await serve(t, mech);
  const c = await JdlsClient.connect(`SERVER=127.0.0.1,${port}`, { errorTrace: false });
  t.teardown(() => c.close());
  t.true(c.server.tokens);
  t.deepEqual(await c.lock(FILE, 'A', 'write'), { granted: true, token: 100n });
  t.deepEqual(await c.status(FILE, 'A'), { code: 2, token: 777n });
  mech.tokenless = true;
  t.deepEqual(await c.lock(FILE, 'B', 'write'), { granted: true }, 'token 0 on the wire: none');
  const p = c.lock(FILE, 'BUSY', 'write', { breakDeadlock: true });
  await mech.waited(1);
  t.is(mech.waits[0]?.opts?.breakDeadlock, true);
  mech.waits[0]?.done(new JdlsError('DEADLOCK', 'cycle'));
  const e = await t.throwsAsync(p, { instanceOf: JdlsError });
  t.is(e?.code, 'DEADLOCK');
  t.deepEqual(await c.lock(FILE, 'C', 'write', { nowait: true }), { granted: true }, 'the client carries on');
});

test('SERVER2: the LOCK mirrored to the secondary carries the primary\'s token as FENCE and not BREAK_DEADLOCK', async (t) => {
  const primary = new ScriptedLocks();
  const secondary = new ScriptedLocks();
  primary.next = (3n << 44n) | 1n;
  const pp = await serve(t, primary);
  const sp = await serve(t, secondary);
  const c = await JdlsClient.connect(`SERVER=127.0.0.1,${pp},SERVER2=127.0.0.1,${sp}`, { errorTrace: false });
  t.teardown(() => c.close());
  t.true(c.resilient);
  t.deepEqual(await c.lock(FILE, 'K', 'write', { breakDeadlock: true }), { granted: true, token: (3n << 44n) | 1n }, 'the primary\'s token');
  t.deepEqual(secondary.calls, [`floor ${(3n << 44n) | 1n}`, 'tryLock K']);
  // The mirror waits on the secondary (its K2 is busy): the wait is a plain one, not BREAK_DEADLOCK.
  secondary.busy = (k) => k === 'K2';
  const p = c.lock(FILE, 'K2', 'write', { breakDeadlock: true });
  await secondary.waited(1);
  t.is(secondary.waits[0]?.opts?.breakDeadlock, undefined, 'the mirror does not accept being refused');
  secondary.waits[0]?.done(undefined, 5n);
  t.deepEqual(await p, { granted: true, token: (3n << 44n) | 2n }, 'the primary\'s answer');
  secondary.calls.length = 0;
  primary.tokenless = true;
  t.deepEqual(await c.lock(FILE, 'L', 'write'), { granted: true });
  t.deepEqual(secondary.calls, ['tryLock L'], 'no token from the primary: no FENCE');
});

/** A broker (BrokerSession per connection) on a loopback TCP port: the shim's side is a WireClient. */
async function broker(t: ExecutionContext): Promise<number> {
  const socks = new Set<net.Socket>();
  const server = net.createServer((sock) => {
    socks.add(sock);
    new BrokerSession(sock, { onEnd: () => socks.delete(sock), log: pino({ level: 'silent' }), errorTrace: false });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(async () => {
    for (const s of socks) s.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });
  return (server.address() as net.AddressInfo).port;
}

test('broker (served through it: SERVER2): a shim\'s TOKENS gets tokens; BREAK_DEADLOCK, FENCE pass on; ERROR DEADLOCK comes back; no TOKENS, no token', async (t) => {
  const primary = new ScriptedLocks();
  const secondary = new ScriptedLocks();
  const jdls = `SERVER=127.0.0.1,${await serve(t, primary)},SERVER2=127.0.0.1,${await serve(t, secondary)}`;
  const bp = await broker(t);
  const shim = await WireClient.connect(bp, { tokens: true, options: jdls, pid: 8101 });
  t.teardown(() => shim.close());
  t.true(shim.welcome.tokens, 'WELCOME with TOKENS');
  t.is(expectType(await shim.lock('A'), 'GRANTED').token, 100n, 'the server\'s token');
  t.is(expectType(await shim.status('A'), 'STATUS_RESULT').token, 777n);
  const fence = (4n << 44n) | 9n;
  expectType(await shim.lock('F', 'write', { fence }), 'GRANTED');
  t.true(primary.calls.includes(`floor ${fence}`), 'FENCE reached the server');
  const p = shim.lock('BUSY', 'write', { breakDeadlock: true, noInterim: true });
  await primary.waited(1);
  t.is(primary.waits[0]?.opts?.breakDeadlock, true, 'BREAK_DEADLOCK reached the server');
  primary.waits[0]?.done(new JdlsError('DEADLOCK', 'waiting would close a cycle'));
  const e = expectType(await p, 'ERROR');
  t.is(e.code, 'DEADLOCK');
  expectType(await shim.ping(), 'PONG');

  const old = await WireClient.connect(bp, { options: jdls, pid: 8102 });
  t.teardown(() => old.close());
  t.is(old.welcome.tokens, undefined);
  const g = expectType(await old.lock('B'), 'GRANTED');
  t.false('token' in g, 'an old shim gets the empty GRANTED');
  t.false('token' in expectType(await old.status('B'), 'STATUS_RESULT'));
});

test('broker hand-over: the HELLO it sends for the process asks TOKENS exactly when the process did', async (t) => {
  const port = await serve(t, new ScriptedLocks());
  const hello = (tokens: boolean): HelloFrame => ({
    type: 'HELLO', requestId: 0, minVersion: 1, maxVersion: 1, port: 3, pid: 8201, keepaliveMs: 0, host: 'h', program: 'p',
    options: `SERVER=127.0.0.1,${port}`, ...(tokens ? { tokens: true as const } : {}),
  });
  for (const tokens of [true, false]) {
    const { sock, welcome } = await connectFor({ host: '127.0.0.1', port }, hello(tokens), 10_000);
    sock.destroy();
    const w = decodeBody(welcome.subarray(4));
    if (w.type !== 'WELCOME') { t.fail(w.type); continue; }
    t.is(w.tokens, tokens ? true : undefined, `process asked tokens: ${tokens}`);
  }
});

test('a server older than TOKENS (it refuses the unknown HELLO flag and closes) is asked again without it; the client works, without tokens', async (t) => {
  // What an older server does, byte for byte: any HELLO flag but AUTH is a protocol error.
  const hellos: number[] = [];
  const socks = new Set<net.Socket>();
  const server = net.createServer((sock) => {
    socks.add(sock);
    const reader = FrameReader.forServer();
    sock.on('data', (d: Buffer) => {
      for (const f of reader.push(d)) {
        if (f.type === 'HELLO') {
          const flags = (f.auth ? 0x0001 : 0) | (f.tokens ? 0x0002 : 0) | (f.info ? 0x0004 : 0);
          hellos.push(flags);
          if (flags & ~0x0001) {
            sock.end(encode({ type: 'ERROR', requestId: 0, code: 'PROTOCOL', text: `HELLO: unknown flags 0x${flags.toString(16)}` }));
            return;
          }
          sock.write(encode({ type: 'WELCOME', requestId: 0, version: 1, mechanism: 'shm', serverPid: 1, session: 1, interimMs: 5000, keepaliveMs: 0, clientAddr: '127.0.0.1', server: 'old' }));
          continue;
        }
        // Requests: LOCK the old way (empty GRANTED), anything else with PONG (only PING comes).
        sock.write(encode(f.type === 'LOCK' ? { type: 'GRANTED', requestId: f.requestId } : { type: 'PONG', requestId: f.requestId }));
      }
    });
    sock.on('error', () => {});
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(async () => {
    for (const x of socks) x.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });
  const port = (server.address() as net.AddressInfo).port;
  const c = await JdlsClient.connect(`SERVER=127.0.0.1,${port}`, { errorTrace: false });
  t.teardown(() => c.close());
  t.deepEqual(hellos, [0x0006, 0x0002, 0x0000], 'TOKENS and INFO first, then TOKENS alone, then neither');
  t.false(c.server.tokens);
  t.deepEqual(await c.lock(FILE, 'K', 'write', { nowait: true }), { granted: true });
});
