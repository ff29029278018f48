// server-limits.test.ts - limits that protect the other clients of a lock
// service (issue 10, "Limits that protect the others"): lock quotas per
// connection and per client address sized from the table, every lock and
// wait counted (records, OSLOCKS, ranges), a bound on native wait threads, a
// failed hand-off gives its listener slot back, range lock files bounded,
// idle slots (HELLO deadline, minimum keep-alive, partial frames, per-address
// connections), log volume and log fields.
// Real `jdls -ib` / `jdls -ibD` processes and raw protocol clients on loopback.
// Serial: each test runs its own service.
import test, { type ExecutionContext } from 'ava';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { ServerEnv, until } from './helpers/server-env.js';
import { WireClient, expectType } from './helpers/wire-client.js';
import { encode } from '../src/protocol/codec.js';
import { native } from '../src/native.js';
import { lockFileName } from '../src/locks/oslock.js';
import type { ServerFrame } from '../src/protocol/frames.js';

/** A connection from a chosen loopback source address, closed at teardown. */
async function clientFrom(t: ExecutionContext, env: ServerEnv, local: string, hello: Parameters<typeof WireClient.connect>[1] = {}): Promise<WireClient> {
  const c = await WireClient.connect(env.port, hello, '127.0.0.1', local);
  t.teardown(() => c.close());
  return c;
}

/** LOCK nowait on keys K<from>..K<to-1>, pipelined; the answers in order. */
async function lockMany(c: WireClient, prefix: string, n: number, file = { inode: 4242n, dev: 7n }): Promise<ServerFrame[]> {
  const out: ServerFrame[] = [];
  for (let i = 0; i < n; i += 200) {
    const batch: Promise<ServerFrame>[] = [];
    for (let j = i; j < Math.min(n, i + 200); j++) batch.push(c.lock(`${prefix}${j}`, 'write', { nowait: true, file }));
    out.push(...(await Promise.all(batch)));
  }
  return out;
}

const codes = (fs: ServerFrame[]): Record<string, number> => {
  const r: Record<string, number> = {};
  for (const f of fs) {
    const k = f.type === 'ERROR' ? `ERROR ${f.code}` : f.type;
    r[k] = (r[k] ?? 0) + 1;
  }
  return r;
};

test.serial('quota: one connection cannot fill the table; one address cannot either; TABLE_FULL stays out of reach of one client', async (t) => {
  const env = new ServerEnv(t);
  await env.start();
  const cap = env.table.header().capacity;
  const a = await env.client({ pid: 7001 });
  const got = await lockMany(a, 'A', cap + 50);
  const c = codes(got);
  t.falsy(c['ERROR TABLE_FULL'], `one connection reached TABLE_FULL: ${JSON.stringify(c)}`);
  t.true((c['ERROR LIMIT'] ?? 0) > 0, JSON.stringify(c));
  t.true((c['GRANTED'] ?? 0) < cap / 2, `one connection holds ${c['GRANTED']} of ${cap}`);
  // More connections from the same address: together they stop at the address's share.
  let fromAddr = c['GRANTED'] ?? 0;
  for (let i = 0; i < 12; i++) {
    const more = await clientFrom(t, env, '127.0.0.1', { pid: 7100 + i });
    fromAddr += codes(await lockMany(more, `M${i}_`, Math.ceil(cap / 6)))['GRANTED'] ?? 0;
  }
  t.true(fromAddr < cap, `one address holds ${fromAddr} of ${cap}`);
  t.is(env.table.usage().held, fromAddr);
  // Another client (another address) still locks.
  const b = await clientFrom(t, env, '127.0.0.2', { pid: 7002 });
  expectType(await b.lock('B1', 'write', { nowait: true }), 'GRANTED');
});

// A client that knows the hash (the code is public) picks keys that all
// fall in one group and fills it - 20 entries, far within its quota - so
// that every other client's key of that group got TABLE_FULL. The table's
// secret hash key (jdls_table.h, hash_seed) takes the aim away: the keys
// it computed with the public hash (seed 0) scatter over the groups.
test.serial('quota: a client cannot aim its keys at one group of the table and fill it for the others', async (t) => {
  const env = new ServerEnv(t);
  await env.start();
  const h = env.table.header();
  const file = { inode: 4242n, dev: 7n };
  const packed = native.makeFile(file.inode, file.dev);
  const group = (k: string): number => native.hash(packed, k) % h.ngroups; // the public hash: seed 0
  const target = group('VICTIM');
  const aimed: string[] = [];
  for (let i = 0; aimed.length < h.perGroup && i < 1_000_000; i++) if (group(`AIM${i}`) === target) aimed.push(`AIM${i}`);
  t.is(aimed.length, h.perGroup);
  const attacker = await env.client({ pid: 7001 });
  for (const k of aimed) expectType(await attacker.lock(k, 'write', { nowait: true, file }), 'GRANTED');
  const victim = await clientFrom(t, env, '127.0.0.2', { pid: 7002 });
  const r = await victim.lock('VICTIM', 'write', { nowait: true, file });
  t.is(r.type, 'GRANTED', `another client's key of the aimed group: ${JSON.stringify(r)}`);
});

test.serial('ranges count: held ranges count toward the connection\'s lock limit, waiting ranges toward maxOutstanding', async (t) => {
  const env = new ServerEnv(t, { maxLocksPerClient: 20, maxOutstanding: 5 });
  await env.start();
  const a = await env.client({ pid: 7201 });
  const got: ServerFrame[] = [];
  for (let i = 0; i < 30; i++) {
    got.push(await a.request({ type: 'RANGE_LOCK', nowait: true, space: 'range', mode: 'write', tid: 1, file: { inode: 90000n + BigInt(i), dev: 9n }, start: 0n, length: 10n }));
  }
  const c = codes(got);
  t.is(c['GRANTED'], 20, JSON.stringify(c));
  t.is(c['ERROR LIMIT'], 10, JSON.stringify(c));
  // Waits: b waits behind a's ranges.
  const b = await env.client({ pid: 7202 });
  const waits: Promise<ServerFrame>[] = [];
  for (let i = 0; i < 8; i++) {
    waits.push(b.request({ type: 'RANGE_LOCK', nowait: false, space: 'range', mode: 'write', tid: 1, file: { inode: 90000n + BigInt(i), dev: 9n }, start: 0n, length: 10n }));
  }
  const refused = await Promise.all(waits.slice(5));
  t.deepEqual(codes(refused), { 'ERROR LIMIT': 3 });
  a.close();
  t.deepEqual(codes(await Promise.all(waits.slice(0, 5))), { GRANTED: 5 });
});

/** Threads of a process (/proc). */
const threads = (pid: number): number => Number(/Threads:\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0);

test.serial('threads: blocking waits (ranges, OSLOCKS) are bounded per lock-server process: beyond maxBlockingWaits, LIMIT', async (t) => {
  const env = new ServerEnv(t, { maxBlockingWaits: 16, maxOutstanding: 1000 });
  await env.start();
  const a = await env.client({ pid: 7301 });
  const file = { inode: 91000n, dev: 9n };
  expectType(await a.request({ type: 'RANGE_LOCK', nowait: true, space: 'range', mode: 'write', tid: 1, file, start: 0n, length: 0n }), 'GRANTED');
  const pid = a.welcome.serverPid;
  const before = threads(pid);
  const answers: ServerFrame[] = [];
  const conns: WireClient[] = [];
  for (let i = 0; i < 4; i++) conns.push(await env.client({ pid: 7310 + i }));
  const pending: Promise<ServerFrame>[] = [];
  for (const [i, c] of conns.entries()) {
    for (let j = 0; j < 20; j++) {
      const p = c.request({ type: 'RANGE_LOCK', nowait: false, space: 'range', mode: 'write', tid: 1 + j, file, start: BigInt(i * 20 + j), length: 1n });
      pending.push(p);
      void p.then((f) => answers.push(f), () => undefined);
    }
  }
  // Every request past the bound is answered at once (LIMIT); the others wait.
  await until(() => answers.length >= 80 - 16, 10_000, 'the refusals beyond the bound');
  t.deepEqual(codes(answers), { 'ERROR LIMIT': 64 });
  t.true(threads(pid) <= before + 16 + 2, `threads ${before} -> ${threads(pid)}`);
  // OSLOCKS waits block a thread each too: the bound is reached, LIMIT at once.
  expectType(await a.request({ type: 'LOCK', nowait: true, noInterim: false, osLocks: true, mode: 'write', tid: 1, file, key: Buffer.from('O') }), 'GRANTED');
  const os = expectType(await conns[0]!.request({ type: 'LOCK', nowait: false, noInterim: false, osLocks: true, mode: 'write', tid: 99, file, key: Buffer.from('O') }), 'ERROR');
  t.is(os.code, 'LIMIT');
  t.regex(os.text, /maxBlockingWaits/);
  a.close();
  await until(() => answers.length === 80, 10_000, 'the waits to be granted');
  t.is(codes(answers)['GRANTED'], 16);
});

test.serial('hand-off: connections a lock server cannot take (EMFILE) give their listener slot back', async (t) => {
  const env = new ServerEnv(t, { maxConnections: 4, maxConnectionsPerAddress: 4, spareProcesses: 0, clientsPerProcess: 100 });
  await env.start();
  const a = await env.client({ pid: 7401 });
  const pid = a.welcome.serverPid;
  const hard = fs.readFileSync(`/proc/${pid}/limits`, 'utf8').split('\n').find((l) => l.startsWith('Max open files'))?.trim().split(/\s+/)[4] ?? '1048576';
  execFileSync('prlimit', [`--pid=${pid}`, `--nofile=3:${hard}`]);
  t.teardown(() => { try { execFileSync('prlimit', [`--pid=${pid}`, `--nofile=${hard}:${hard}`]); } catch { /* gone */ } });
  for (let i = 0; i < 8; i++) {
    const c = await WireClient.raw(env.port);
    t.teardown(() => c.close());
    await t.throwsAsync(c.hello({ pid: 7410 + i }));
    await c.closed;
  }
  execFileSync('prlimit', [`--pid=${pid}`, `--nofile=${hard}:${hard}`]);
  // Every failed hand-off gives its slot back (after the listener's hand-off
  // acknowledgement time): three more fit (a holds one).
  const later: WireClient[] = [];
  await until(async () => {
    try {
      later.push(await clientFrom(t, env, '127.0.0.1', { pid: 7420 + later.length }));
    } catch {
      /* LIMIT: not yet */
    }
    return later.length >= 3;
  }, 20_000, 'three more connections to be accepted');
  for (const c of later) expectType(await c.ping(), 'PONG');
  expectType(await a.ping(), 'PONG');
});

test.serial('range lock files: the pseudo files the service creates are bounded (maxRangeFiles)', async (t) => {
  const env = new ServerEnv(t, { maxRangeFiles: 50 });
  await env.start();
  const a = await env.client({ pid: 7501 });
  const got: ServerFrame[] = [];
  for (let i = 0; i < 120; i++) {
    const file = { inode: 92000n + BigInt(i), dev: 9n };
    const r = await a.request({ type: 'RANGE_LOCK', nowait: true, space: 'range', mode: 'write', tid: 1, file, start: 0n, length: 1n });
    got.push(r);
    if (r.type === 'GRANTED') expectType(await a.request({ type: 'RANGE_UNLOCK', tid: 1, file, start: 0n, length: 1n, space: 'range' }), 'RELEASED');
  }
  const dir = path.join(env.dir, 'jbase_lock');
  const files = fs.readdirSync(dir).filter((n) => n.startsWith('jrange_'));
  t.true(files.length <= 50, `${files.length} range lock files`);
  t.true((codes(got)['ERROR LIMIT'] ?? 0) > 0, JSON.stringify(codes(got)));
  // A file that exists is still usable.
  expectType(await a.request({ type: 'RANGE_LOCK', nowait: true, space: 'range', mode: 'write', tid: 1, file: { inode: 92000n, dev: 9n }, start: 0n, length: 1n }), 'GRANTED');
});

test.serial('idle slots: HELLO deadline; partial frames are not liveness', async (t) => {
  const env = new ServerEnv(t, { keepaliveMs: 1000, helloTimeoutMs: 300 });
  await env.start();
  const ping = encode({ type: 'PING', requestId: 9 });
  const hello = encode({ type: 'HELLO', requestId: 0, minVersion: 1, maxVersion: 1, port: 1, pid: 7603, keepaliveMs: 100, host: 'h', program: 'p', options: '' });
  const drips: NodeJS.Timeout[] = [];
  t.teardown(() => drips.forEach(clearInterval));
  /** One byte of `frame` every 50 ms (never all of it). */
  const dripInto = (c: WireClient, frame: Buffer): void => {
    let i = 0;
    drips.push(setInterval(() => { if (i < frame.length - 1) c.sendBytes(frame.subarray(i, ++i)); }, 50));
  };
  // No HELLO at all, and a HELLO that never completes: closed at the HELLO deadline, before any keep-alive bound.
  const mute = await env.raw();
  const slowHello = await env.raw();
  dripInto(slowHello, hello);
  // After HELLO: one byte of a PING every 50 ms is not a sign of life.
  const drip = await env.client({ pid: 7602, keepaliveMs: 100 });
  t.is(drip.welcome.keepaliveMs, 1000);
  dripInto(drip, ping);
  const bounded = (c: WireClient, what: string): Promise<void> => Promise.race([c.closed, new Promise<void>((_r, rej) => setTimeout(() => rej(new Error(`${what}: still connected after 8 s`)), 8000).unref())]);
  await bounded(mute, 'no HELLO');
  t.is(mute.connectionError?.code, 'PROTOCOL');
  t.regex(mute.connectionError?.text ?? '', /helloTimeoutMs/);
  await bounded(slowHello, 'HELLO a byte at a time');
  t.regex(slowHello.connectionError?.text ?? '', /helloTimeoutMs/);
  await bounded(drip, 'partial frame');
});

test.serial('idle slots: idle connections of one address (keep-alive 0) cannot take every place; a keep-alive that does not fit WELCOME is refused', async (t) => {
  const env = new ServerEnv(t, { maxConnections: 8 });
  await env.start();
  // keep-alive 0: exempt from the silence bound (a preloaded program cannot
  // ping), so idle ones stay; the per-address cap (default: half of
  // maxConnections) keeps places for other addresses.
  const idle: WireClient[] = [];
  for (let i = 0; i < 8; i++) {
    try {
      idle.push(await clientFrom(t, env, '127.0.0.1', { pid: 7700 + i, keepaliveMs: 0 }));
    } catch {
      /* refused */
    }
  }
  t.is(idle.length, 4);
  const fifth = await WireClient.raw(env.port, '127.0.0.1', '127.0.0.1');
  t.teardown(() => fifth.close());
  await fifth.closed;
  t.is(fifth.connectionError?.code, 'LIMIT');
  t.regex(fifth.connectionError?.text ?? '', /maxConnectionsPerAddress/);
  // Another address is served.
  const other = await clientFrom(t, env, '127.0.0.3', { pid: 7710 });
  expectType(await other.ping(), 'PONG');
  // 2 x 0x90000000 does not fit a u32.
  const huge = await WireClient.raw(env.port, '127.0.0.1', '127.0.0.4');
  t.teardown(() => huge.close());
  await t.throwsAsync(huge.hello({ pid: 7711, keepaliveMs: 0x90000000 }));
  await Promise.race([huge.closed, new Promise((_r, rej) => setTimeout(() => rej(new Error('still connected after 5 s')), 5000).unref())]);
  t.is(huge.connectionError?.code, 'BAD_ARGUMENT');
  t.regex(huge.connectionError?.text ?? '', /keep-alive/);
});

/** Bytes of the listener's log. */
const logSize = (env: ServerEnv): number => fs.statSync(env.file('jdls-listener.log')).size;

test.serial('log volume: a flood of refused requests grows the log by a bounded amount, without stacks', async (t) => {
  // One client may fill the table here: every further LOCK is TABLE_FULL.
  const env = new ServerEnv(t, { logLinesPerSecond: 5, connectionSharePct: 100, addressSharePct: 100 });
  await env.start();
  const cap = env.table.header().capacity;
  const a = await env.client({ pid: 7801 });
  t.true((codes(await lockMany(a, 'F', cap + 20))['ERROR TABLE_FULL'] ?? 0) > 0);
  const start = logSize(env);
  const t0 = Date.now();
  const n = 3000;
  const got = await lockMany(a, 'G', n);
  const seconds = Math.ceil((Date.now() - t0) / 1000) + 1;
  expectType(await a.ping(), 'PONG');
  // Groups fill unevenly (some keys still fit), then the connection's share (all of the table here) is reached: LIMIT.
  t.true((codes(got)['ERROR TABLE_FULL'] ?? 0) + (codes(got)['ERROR LIMIT'] ?? 0) > n / 2, JSON.stringify(codes(got)));
  const grown = logSize(env) - start;
  // At most logLinesPerSecond lines and one summary per second of the flood, 1 KB each at most.
  const bound = (5 + 1) * seconds * 1024;
  t.true(grown <= bound, `the log grew by ${grown} bytes for ${n} refusals in ~${seconds} s (bound ${bound})`);
  const text = fs.readFileSync(env.file('jdls-listener.log'), 'utf8').slice(start);
  t.false(text.includes('"stack"'), 'an expected refusal is logged with a stack');
});

test.serial('log lines: the server\'s pid is never replaced by the client\'s; the log file is 0640', async (t) => {
  const env = new ServerEnv(t);
  await env.start();
  const a = await env.client({ pid: 999_999, port: 4321, host: 'claimed-host', program: 'claimed' });
  expectType(await a.ping(), 'PONG');
  const server = a.welcome.serverPid;
  let line: Record<string, unknown> | undefined;
  await until(() => {
    const lines = fs.readFileSync(env.file('jdls-listener.log'), 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>);
    line = lines.find((l) => l['msg'] === 'client connected' && l['clientPid'] === 999_999);
    return line !== undefined || lines.some((l) => l['msg'] === 'client connected' && l['pid'] === 999_999);
  }, 5000, 'the client connected line');
  t.truthy(line, 'the client connected line names the client pid as clientPid');
  t.is(line?.['pid'], server);
  t.is(line?.['clientHost'], 'claimed-host');
  for (const f of ['jdls-listener.log', 'jdls-monitor.log']) t.is(fs.statSync(env.file(f)).mode & 0o777, 0o640, f);
});

test.serial('OS locks: one connection\'s locks in one lock file are capped (maxOsLocksPerFile)', async (t) => {
  const env = new ServerEnv(t, { maxOsLocksPerFile: 100 });
  await env.start(['-ibD']);
  const a = await env.client({ pid: 7901 });
  t.is(a.welcome.mechanism, 'os');
  const c = codes(await lockMany(a, 'K', 150));
  t.deepEqual(c, { GRANTED: 100, 'ERROR LIMIT': 50 });
  // Another file is another budget; another client on this file is not refused.
  t.is(codes(await lockMany(a, 'K', 10, { inode: 4243n, dev: 7n }))['GRANTED'], 10);
  const b = await clientFrom(t, env, '127.0.0.2', { pid: 7902 });
  expectType(await b.lock('B1', 'write', { nowait: true }), 'GRANTED');
});

test.serial('descriptors: one client\'s ranges on distinct files cannot exhaust a lock server\'s descriptors; it still takes new connections', async (t) => {
  const env = new ServerEnv(t, { connectionSharePct: 100, addressSharePct: 100, spareProcesses: 0 });
  await env.start();
  const a = await env.client({ pid: 7951 });
  const pid = a.welcome.serverPid;
  const hard = fs.readFileSync(`/proc/${pid}/limits`, 'utf8').split('\n').find((l) => l.startsWith('Max open files'))?.trim().split(/\s+/)[4] ?? '1048576';
  const used = fs.readdirSync(`/proc/${pid}/fd`).length;
  // Room for 150 more descriptors.
  execFileSync('prlimit', [`--pid=${pid}`, `--nofile=${used + 150}:${hard}`]);
  t.teardown(() => { try { execFileSync('prlimit', [`--pid=${pid}`, `--nofile=${hard}:${hard}`]); } catch { /* gone */ } });
  // (The lock server reads its limit at its first OS or range lock: this test's first, below.)
  const got: ServerFrame[] = [];
  for (let i = 0; i < 300; i++) {
    got.push(await a.request({ type: 'RANGE_LOCK', nowait: true, space: 'range', mode: 'write', tid: 1, file: { inode: 93000n + BigInt(i), dev: 9n }, start: 0n, length: 1n }));
  }
  const c = codes(got);
  t.falsy(c['ERROR SYSTEM'], JSON.stringify(c));
  t.true((c['ERROR LIMIT'] ?? 0) > 0, JSON.stringify(c));
  // The same lock server still takes a new connection.
  const b = await clientFrom(t, env, '127.0.0.2', { pid: 7952 });
  t.is(b.welcome.serverPid, pid);
  expectType(await b.ping(), 'PONG');
});

test.serial('descriptors: STATUS on many OS lock files does not keep a descriptor per file', async (t) => {
  const env = new ServerEnv(t);
  await env.start(['-ibD']);
  const a = await env.client({ pid: 7961 });
  t.is(a.welcome.mechanism, 'os');
  const files = Array.from({ length: 600 }, (_v, i) => ({ inode: 94000n + BigInt(i), dev: 9n }));
  // Lock files that exist (as any earlier lock leaves them).
  for (const f of files) fs.writeFileSync(lockFileName(env.lockDir, f), '');
  const pid = a.welcome.serverPid;
  const before = fs.readdirSync(`/proc/${pid}/fd`).length;
  for (const f of files) expectType(await a.request({ type: 'STATUS', tid: 1, file: f, key: Buffer.from('K') }), 'STATUS_RESULT');
  const after = fs.readdirSync(`/proc/${pid}/fd`).length;
  t.true(after - before <= 256 + 8, `descriptors ${before} -> ${after}`);
});
