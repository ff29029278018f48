// shim-broker.test.ts - preloaded processes with JDLS set: their record
// locks (C API, and fcntl/lockf on jlock files) go through the broker
// (`jdls --broker`, started on first use) to a real `jdls -ib` lock server
// on loopback; a process's death releases its locks on the server at once;
// an unreachable lock service ends the process with the guide's message;
// LOCK= chooses which origins are intercepted; racing starters end with one
// broker; an idle broker exits.
// Serial: each test runs several processes and the machine has 2 cores.
import test from 'ava';
import fs from 'node:fs';
import { ShimEnv, SHIM_API, SHIM_LOCKER } from './helpers/shim-env.js';
import { processesOf } from './helpers/cli-env.js';

const GUIDE = /^Client: unable to connect to distributed lock service, locks not enabled$/m;

function brokers(s: ShimEnv): number[] {
  return processesOf(s.cli.dir).filter((p) => {
    try {
      return s.cli.isAlive(p) && fs.readFileSync(`/proc/${p}/cmdline`, 'utf8').split('\0').includes('--broker');
    } catch {
      return false;
    }
  });
}

test.serial('C API through the broker: lock, conflict with the holder\'s port, RECORDLOCKED, release; the server holds the lock as (inode, -1)', async (t) => {
  const s = new ShimEnv(t);
  const JDLS = await s.startServer();
  const a = s.start(SHIM_API, ['4242', '7', 'route', 'x:CUST*1', 'st:CUST*1', 'hold'], { env: { JDLS, JBCPORTNO: '11' } });
  await a.waitFor(/^holding$/, 15_000);
  t.deepEqual(a.lines.slice(0, 3), ['route server', 'ok', 'status 2 port=0']);
  t.truthy(s.brokerPid(), 'the shim started a broker');
  const locks = await s.locks();
  t.is(locks.length, 1, JSON.stringify(locks));
  t.like(locks[0], { state: 'held', type: 'WRITE', inode: '4242', dev: '-1', ownerPid: a.pid, port: 11 });
  const b = await s.run(SHIM_API, ['4242', '7', 'x:CUST*1', 's:CUST*1', 'st:CUST*1', 'u:CUST*1', 'x:OTHER', 'ua'], { env: { JDLS, JBCPORTNO: '12' } });
  t.is(b.code, 0, b.stderr);
  t.deepEqual(b.stdout.trim().split('\n'), ['locked port=11', 'locked port=11', 'status -2 port=11', 'notheld', 'ok', 'released 1']);
  t.is(await a.finish(), 0);
  const c = await s.run(SHIM_API, ['4242', '7', 'x:CUST*1', 'uf'], { env: { JDLS } });
  t.deepEqual(c.stdout.trim().split('\n'), ['ok', 'released 1']);
  t.deepEqual(await s.locks(), []);
});

test.serial('a program that closes every descriptor keeps its server connection (and its locks)', async (t) => {
  const s = new ShimEnv(t);
  const JDLS = await s.startServer();
  const a = s.start(SHIM_API, ['4242', '7', 'x:K1', 'closeall', 'st:K1', 'x:K2', 'hold'], { env: { JDLS } });
  await a.waitFor(/^holding$/, 15_000);
  t.deepEqual(a.lines.slice(0, 4), ['ok', 'closed', 'status 2 port=0', 'ok']);
  const b = await s.run(SHIM_API, ['4242', '7', 'x:K1', 'x:K2'], { env: { JDLS } });
  t.deepEqual(b.stdout.trim().split('\n'), ['locked port=0', 'locked port=0']);
  t.is(await a.finish(), 0);
});

test.serial('an OS-lock server (-ibD), one client per lock-server process: a conflict held through another lock-server process is LOCKED, not an error', async (t) => {
  const s = new ShimEnv(t);
  const JDLS = await s.startServer({ clientsPerProcess: 1 }, ['-ibD']);
  const a = s.start(SHIM_API, ['4242', '7', 'x:K1', 'hold'], { env: { JDLS } });
  await a.waitFor(/^holding$/, 15_000);
  const b = await s.run(SHIM_API, ['4242', '7', 'x:K1', 'st:K1'], { env: { JDLS } });
  t.deepEqual(b.stdout.trim().split('\n'), ['locked port=0', 'status -2 port=0'], b.stderr);
  t.is(await a.finish(), 0);
});

test.serial('threads share the process\'s connection without blocking each other: a thread waiting for a lock does not hold up another thread\'s unlock', async (t) => {
  const s = new ShimEnv(t);
  const JDLS = await s.startServer();
  // P holds K2; Q takes K1 and waits for K2; P's second thread waits for K1
  // while P's main thread releases K2: Q gets K2, releases K1, P's thread
  // gets K1. With one request at a time per process this deadlocks.
  const p = s.start(SHIM_API, ['4242', '7', 'x:K2', 'hold', 'mt:K1:K2'], { env: { JDLS } });
  await p.waitFor(/^holding$/, 15_000);
  const q = s.start(SHIM_API, ['4242', '7', 'x:K1', 'X:K2', 'u:K1', 'u:K2'], { env: { JDLS } });
  await q.waitFor(/^ok$/, 15_000);
  t.true(await s.cli.until(async () => (await s.locks()).some((l) => l.state === 'waiting' && l.ownerPid === q.pid), 10_000), 'Q waits for K2');
  p.child.stdin?.end();
  await p.waitFor(/^mt /, 15_000);
  t.deepEqual(p.lines, ['ok', 'holding', 'released', 'mt ok']);
  t.is(await q.finish(), 0);
  t.deepEqual(q.lines, ['ok', 'ok', 'ok', 'ok']);
  t.is(await p.finish(), 0);
});

test.serial('the death of a preloaded process (kill -9) releases its server locks at once: a waiter gets in', async (t) => {
  const s = new ShimEnv(t);
  const JDLS = await s.startServer();
  const a = s.start(SHIM_API, ['4242', '7', 'x:K1', 'hold'], { env: { JDLS } });
  await a.waitFor(/^holding$/, 15_000);
  const b = s.start(SHIM_API, ['4242', '7', 'X:K1', 'hold'], { env: { JDLS } });
  // b queues on the server behind a
  t.true(await s.cli.until(async () => (await s.locks()).some((l) => l.state === 'waiting' && l.ownerPid === b.pid), 10_000), 'b waits on the server');
  t.deepEqual(b.lines, []);
  process.kill(a.pid, 'SIGKILL');
  await b.waitFor(/^holding$/, 5_000);
  t.deepEqual(b.lines.slice(0, 1), ['ok']);
  t.is(await b.finish(), 0);
});

test.serial('fcntl/lockf record locks on jlock files go to the server: EAGAIN, F_GETLK names the holder, EINTR on a signal, close() releases', async (t) => {
  const s = new ShimEnv(t);
  const JDLS = await s.startServer();
  const f = s.jlock(0x1092, 0x801);
  fs.writeFileSync(f, '');
  const a = s.start(SHIM_LOCKER, [f, 'w:5', 'r:6', 'hold'], { env: { JDLS } });
  await a.waitFor(/^holding$/, 15_000);
  const locks = await s.locks();
  t.deepEqual(locks.map((l) => [l.inode, l.dev, l.key, l.type, l.ownerPid]).sort(), [
    ['4242', '-1', '5', 'WRITE', a.pid], ['4242', '-1', '6', 'READ', a.pid],
  ].sort());
  // g:6 after r:6: b holds a read lock there itself, and F_GETLK for a
  // write must still see a's read lock (the kernel looks past the caller's own)
  const b = await s.run(SHIM_LOCKER, [f, 'w:5', 'L:5', 'g:5', 'r:6', 'g:6', 'w:6', 'alarm:300', 'W:5', 'w:7', 'open2', 'close2', 'w:5'], { env: { JDLS }, timeoutMs: 15_000 });
  t.is(b.code, 0, b.stderr);
  t.deepEqual(b.stdout.trim().split('\n'), [
    'EAGAIN', 'EAGAIN', `held W pid=${a.pid}`, 'ok', `held R pid=${a.pid}`, 'EAGAIN', 'armed', 'EINTR', 'ok', 'ok', 'ok', 'EAGAIN',
  ]);
  // close2 (another descriptor of the file) dropped b's locks, and b's exit
  // closed its broker connection: nothing of b's is left
  t.is(await a.finish(), 0);
  t.deepEqual(await s.locks(), []);
});

test.serial('a fork child is another owner on the server: it inherits none of the parent\'s locks', async (t) => {
  const s = new ShimEnv(t);
  const JDLS = await s.startServer();
  const f = s.jlock(0x1093, 0x801);
  fs.writeFileSync(f, '');
  const r = await s.run(SHIM_LOCKER, [f, 'w:3', 'forkclose:3', 'g:3', 'w:3'], { env: { JDLS }, timeoutMs: 15_000 });
  t.is(r.code, 0, r.stderr);
  // the child is refused the parent's lock, and its close() did not release it
  t.deepEqual(r.stdout.trim().split('\n'), ['ok', 'child EAGAIN', 'free', 'ok']);
});

test.serial('several preloaded processes keep a counter exact with fcntl record locks through the server', async (t) => {
  const s = new ShimEnv(t);
  const JDLS = await s.startServer();
  const f = s.jlock(0x1094, 0x801);
  fs.writeFileSync(f, '');
  const data = s.cli.dir + '/counter';
  fs.writeFileSync(data, '0');
  const n = 4;
  const per = 50;
  const rs = await Promise.all(Array.from({ length: n }, () => s.run(SHIM_LOCKER, [f, `count:${per}:${data}`], { env: { JDLS }, timeoutMs: 30_000 })));
  for (const r of rs) t.is(r.stdout.trim(), 'counted', r.stderr);
  t.is(Number(fs.readFileSync(data, 'utf8')), n * per);
});

test.serial('unreachable lock service: the guide\'s message, exit 1, never a local lock', async (t) => {
  const s = new ShimEnv(t);
  await s.startMonitor();
  const f = s.jlock(0xabcd, 0x801);
  const r = await s.run(SHIM_LOCKER, [f, 'w:5', 'hold'], { env: { JDLS: 'SERVER=127.0.0.1,1' } });
  t.is(r.code, 1);
  t.regex(r.stderr, GUIDE);
  t.regex(r.stderr, /Connection refused/);
  t.notRegex(r.stdout, /holding/);
  const api = await s.run(SHIM_API, ['1', '2', 'x:K'], { env: { JDLS: 'SERVER=127.0.0.1,1' } });
  t.is(api.code, 1);
  t.regex(api.stderr, GUIDE);
  t.is(api.stdout, '');
  // a malformed JDLS: the broker says why
  const bad = await s.run(SHIM_API, ['1', '2', 'x:K'], { env: { JDLS: 'SERVER=127.0.0.1,1,NOSUCH' } });
  t.is(bad.code, 1);
  t.regex(bad.stderr, GUIDE);
  t.regex(bad.stderr, /unknown option 'NOSUCH'/);
  t.deepEqual(await s.locks(), []);
});

test.serial('a broker that cannot be started: the guide\'s message, exit 1 (bounded retry)', async (t) => {
  const s = new ShimEnv(t);
  const JDLS = await s.startServer();
  const r = await s.run(SHIM_API, ['1', '2', 'x:K'], { env: { JDLS, JDLS_NODE: '/nonexistent/node', JDLS_BROKER_START_MS: '500' } });
  t.is(r.code, 1);
  t.regex(r.stderr, GUIDE);
  t.regex(r.stderr, /cannot reach or start the lock broker/);
  t.is(r.stdout, '');
});

test.serial('LOCK=INTERNAL leaves an external driver\'s calls to the driver; LOCK=EXTERNAL keeps the runtime\'s own locks local', async (t) => {
  const s = new ShimEnv(t);
  const server = await s.startServer();
  const internal = await s.run(SHIM_API, ['4242', '7', 'route', 'e:K1', 'x:K2', 'hold'], { env: { JDLS: `${server},LOCK=INTERNAL` }, input: '' });
  t.is(internal.code, 0, internal.stderr);
  t.deepEqual(internal.stdout.trim().split('\n'), ['route server', 'nothandled', 'ok', 'holding', 'released']);

  const a = s.start(SHIM_API, ['4242', '7', 'route', 'e:K1', 'x:K2', 'hold'], { env: { JDLS: `${server},LOCK=EXTERNAL` } });
  await a.waitFor(/^holding$/, 15_000);
  // the monitor runs, so the runtime's own lock is in the table in-process
  // (dev 7, pid = the process); the driver's went to the server (dev -1)
  t.deepEqual(a.lines.slice(0, 3), ['route table', 'ok', 'ok']);
  const locks = await s.locks();
  const k1 = locks.find((l) => l.key === 'K1');
  const k2 = locks.find((l) => l.key === 'K2');
  t.like(k1, { dev: '-1', ownerPid: a.pid });
  t.not(k1?.pid, a.pid, 'held by a lock-server process');
  t.like(k2, { dev: '7', pid: a.pid, ownerPid: a.pid });
  t.is(await a.finish(), 0);
});

test.serial('a broker killed with -9: handed-over clients keep their server connection and locks and carry on; the next process starts a new broker over the stale socket', async (t) => {
  const s = new ShimEnv(t);
  const JDLS = await s.startServer();
  const a = s.start(SHIM_API, ['4242', '7', 'x:K1', 'hold', 'x:K2'], { env: { JDLS } });
  await a.waitFor(/^holding$/, 15_000);
  const old = s.brokerPid();
  if (old === undefined) return t.fail('no broker');
  process.kill(old, 'SIGKILL');
  await new Promise((r) => setTimeout(r, 500));
  t.is((await s.locks()).length, 1, 'a still holds K1: its server connection is its own');
  t.true(fs.existsSync(s.brokerSocket), 'the stale socket is left behind');
  t.is(await a.finish(), 0, a.stderr()); // takes K2 on the same connection, exits
  t.true(await s.cli.until(async () => (await s.locks()).length === 0, 10_000), 'a\'s exit released its locks');
  const b = await s.run(SHIM_API, ['4242', '7', 'x:K1'], { env: { JDLS } });
  t.is(b.stdout.trim(), 'ok', b.stderr);
  const pid = s.brokerPid();
  t.truthy(pid);
  t.not(pid, old);
});

test.serial('TIMEOUT with a handed-over connection: a lock server that stops answering (SIGSTOP) is declared dead within TIMEOUT, and the process ends with the guide\'s message', async (t) => {
  const s = new ShimEnv(t);
  const JDLS = `${await s.startServer()},TIMEOUT=1`;
  const a = s.start(SHIM_API, ['4242', '7', 'x:K1', 'hold', 'x:K2'], { env: { JDLS } });
  await a.waitFor(/^holding$/, 15_000);
  const servers = processesOf(s.cli.dir).filter((pid) => {
    try {
      return /\(lock server\)/.test(fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8'));
    } catch {
      return false;
    }
  });
  t.true(servers.length >= 1);
  for (const pid of servers) process.kill(pid, 'SIGSTOP');
  t.teardown(() => {
    for (const pid of servers) {
      try {
        process.kill(pid, 'SIGCONT');
      } catch {
        /* gone */
      }
    }
  });
  const t0 = Date.now();
  t.is(await a.finish(), 1);
  const ms = Date.now() - t0;
  t.regex(a.stderr(), GUIDE);
  t.regex(a.stderr(), /declared dead \(JDLS TIMEOUT\)/);
  t.true(ms >= 900 && ms < 5000, `declared dead after ${ms} ms`);
  for (const pid of servers) process.kill(pid, 'SIGCONT');
});

test.serial('JDLS_BROKER_HANDOVER=0 (requests through the broker): a broker killed with -9 releases its clients\' server locks, and a client exits with the guide\'s message at its next call', async (t) => {
  const s = new ShimEnv(t);
  const JDLS = await s.startServer();
  const a = s.start(SHIM_API, ['4242', '7', 'x:K1', 'hold', 'x:K2'], { env: { JDLS, JDLS_BROKER_HANDOVER: '0' } });
  await a.waitFor(/^holding$/, 15_000);
  const old = s.brokerPid();
  if (old === undefined) return t.fail('no broker');
  process.kill(old, 'SIGKILL');
  t.true(await s.cli.until(async () => (await s.locks()).length === 0, 10_000), 'the server released a\'s lock');
  t.is(await a.finish(), 1);
  t.regex(a.stderr(), GUIDE);
  t.regex(a.stderr(), /connection to the lock broker was lost/);
});

// Both paths: the pair handed over (the shim keeps the pair's rules,
// docs/broker.md "Pairs") and through the broker's JdlsClient
// (JDLS_BROKER_HANDOVER=0, as an older shim or TLS is served).
for (const handover of [true, false]) test.serial(`SERVER2 ${handover ? 'handed over as a pair' : 'through the broker (JDLS_BROKER_HANDOVER=0)'}: locks are duplicated to the secondary; when the primary dies the process carries on with the secondary`, async (t) => {
  const a = new ShimEnv(t);
  const b = new ShimEnv(t);
  const sa = await a.startServer();
  const sb = await b.startServer();
  const JDLS = `${sa},${sb.replace('SERVER=', 'SERVER2=')}`;
  const p = a.start(SHIM_API, ['4242', '7', 'x:K1', 'hold', 'x:K2', 'st:K2', 'sleep:3000'], { env: { JDLS, ...(handover ? {} : { JDLS_BROKER_HANDOVER: '0' }) } });
  await p.waitFor(/^holding$/, 15_000);
  t.is((await a.locks()).length, 1, 'on the primary');
  t.is((await b.locks()).length, 1, 'and on the secondary');
  // the primary's lock-server processes die (the listener too)
  const servers = processesOf(a.cli.dir).filter((pid) => {
    try {
      return /\((lock server|listener)\)/.test(fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8'));
    } catch {
      return false;
    }
  });
  t.true(servers.length >= 1);
  for (const pid of servers) process.kill(pid, 'SIGKILL');
  p.child.stdin?.end(); // past the hold: K2 and a status, then it sleeps holding both
  await p.waitFor(/^status /, 15_000);
  t.deepEqual(p.lines.slice(0, 5), ['ok', 'holding', 'released', 'ok', 'status 2 port=0']);
  t.deepEqual((await b.locks()).map((l) => l.key).sort(), ['K1', 'K2'], 'the secondary holds both');
  t.is(await p.finish(), 0);
});

test.serial('jdls --broker by hand: a second one exits 0 at once while one listens; extra arguments are a usage error', async (t) => {
  const s = new ShimEnv(t);
  const JDLS = await s.startServer();
  t.is((await s.run(SHIM_API, ['1', '2', 'x:K'], { env: { JDLS } })).stdout.trim(), 'ok');
  const first = s.brokerPid();
  t.truthy(first);
  const again = await s.cli.run(['--broker']);
  t.is(again.code, 0, again.stderr);
  t.is(s.brokerPid(), first, 'the first broker keeps its socket and pid file');
  const bad = await s.cli.run(['--broker', '-x']);
  t.is(bad.code, 2);
  t.regex(bad.stderr, /--broker takes no other options/);
  t.regex((await s.cli.run(['-h'])).stdout, /jdls --broker/);
});

test.serial('racing starters end with one broker; an idle broker exits and removes its socket', async (t) => {
  const s = new ShimEnv(t);
  const JDLS = await s.startServer();
  const env = { JDLS, JDLS_BROKER_IDLE_MS: '1500' };
  const rs = await Promise.all(Array.from({ length: 4 }, (_, i) => s.run(SHIM_API, ['4242', '7', `x:R${i}`], { env, timeoutMs: 20_000 })));
  for (const r of rs) t.is(r.stdout.trim(), 'ok', r.stderr);
  t.true(await s.cli.until(() => brokers(s).length <= 1, 5_000), `brokers: ${brokers(s).join(' ')}`);
  const pid = s.brokerPid();
  t.truthy(pid);
  t.deepEqual(brokers(s), [pid]);
  t.true(await s.cli.until(() => brokers(s).length === 0, 10_000), 'the idle broker exited');
  t.false(fs.existsSync(s.brokerSocket));
  t.deepEqual(await s.locks(), [], 'the servers released the exited processes\' locks');
});
