// shim-pair.test.ts - a preloaded program with JDLS SERVER2 holds its two
// server connections itself (the broker hands both over: docs/broker.md
// "Pairs"; the pair's rules in C: shim/shim_broker.c): its locks are held on
// both servers (the primary's grant, then the MIRROR), its unlocks reach both;
// kill -9 of the primary's server processes: it carries on with the
// secondary, whose copy of its lock excludes other programs; the secondary
// killed: it carries on with the primary alone.
// Two real `jdls -ib` installations on loopback (A, B); the broker and the
// programs live in a third (ShimEnv's), so killing A's processes kills no
// broker or program.
// Serial: several processes per test, and the machine has 2 cores.
import test, { type ExecutionContext } from 'ava';
import fs from 'node:fs';
import { ShimEnv, SHIM_API, SHIM_LOCKER, type JsonLock } from './helpers/shim-env.js';
import { CliEnv, processesOf } from './helpers/cli-env.js';
import { findListener } from '../src/server/state.js';
import { FakeServer } from './helpers/fake-server.js';
import type { ClientFrame, LockFrame } from '../src/protocol/frames.js';
import { Etcd } from './helpers/etcd.js';
import { ServerEnv, until } from './helpers/server-env.js';
import { readWitnessRecord } from '../src/server/witness-state.js';

interface Server {
  cli: CliEnv;
  port: number;
}

async function server(t: ExecutionContext): Promise<Server> {
  const cli = new CliEnv(t);
  await cli.startBackground(['-ib']);
  const l = findListener(cli.dir);
  if (!l || !(l.port > 0)) throw new Error('no listener port');
  return { cli, port: l.port };
}

async function locksOf(s: Server): Promise<JsonLock[]> {
  const r = await s.cli.run(['-dvL', '--json']);
  if (r.code !== 0) throw new Error(`jdls -dvL --json: ${r.code} ${r.stderr}`);
  return (JSON.parse(r.stdout) as { locks?: JsonLock[] }).locks ?? [];
}

/** The remote ports of the process's own TCP connections (its /proc/<pid>/fd sockets in /proc/net/tcp{,6}). */
function tcpPeerPorts(pid: number): number[] {
  const inodes = new Set<string>();
  for (const fd of fs.readdirSync(`/proc/${pid}/fd`)) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(fs.readlinkSync(`/proc/${pid}/fd/${fd}`));
      if (m?.[1]) inodes.add(m[1]);
    } catch {
      /* closed meanwhile */
    }
  }
  const ports: number[] = [];
  for (const f of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text = '';
    try {
      text = fs.readFileSync(f, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n').slice(1)) {
      const c = line.trim().split(/\s+/);
      // sl local rem st tx:rx tr:when retrnsmt uid timeout inode
      if (c.length > 9 && inodes.has(c[9] ?? '')) ports.push(parseInt((c[2] ?? ':0').split(':')[1] ?? '0', 16));
    }
  }
  return ports.sort((x, y) => x - y);
}

function fdLinks(pid: number): string {
  return fs.readdirSync(`/proc/${pid}/fd`).map((fd) => {
    try {
      return `${fd}->${fs.readlinkSync(`/proc/${pid}/fd/${fd}`)}`;
    } catch {
      return fd;
    }
  }).join(' ');
}

function killAll(s: Server): number[] {
  const pids = processesOf(s.cli.dir);
  for (const p of pids) {
    try {
      process.kill(p, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
  return pids;
}

const held = (locks: JsonLock[], pid: number): string[] => locks.filter((l) => l.state === 'held' && l.ownerPid === pid).map((l) => l.type).sort();

test.serial('SERVER2: the process holds both server connections itself; its lock is held on both servers, its unlock releases both', async (t) => {
  const a = await server(t);
  const b = await server(t);
  const s = new ShimEnv(t);
  const JDLS = `SERVER=127.0.0.1,${a.port},SERVER2=127.0.0.1,${b.port}`;
  const p = s.start(SHIM_API, ['4242', '7', 'x:K1', 'x:K2', 'u:K2', 'hold'], { env: { JDLS } });
  await p.waitFor(/^holding$/, 15_000);
  t.deepEqual(p.lines, ['ok', 'ok', 'ok', 'holding'], p.stderr());
  // Its own descriptors: one TCP connection to each server (not the broker's).
  t.deepEqual(tcpPeerPorts(p.pid), [a.port, b.port].sort((x, y) => x - y), fdLinks(p.pid));
  const broker = s.brokerPid();
  t.truthy(broker);
  if (broker) t.deepEqual(tcpPeerPorts(broker).filter((x) => x === a.port || x === b.port), [], 'the broker keeps no server connection for it');
  // K1 held on both (primary grant + MIRROR); K2 released on both.
  const la = await locksOf(a);
  const lb = await locksOf(b);
  t.is(held(la, p.pid).length, 1, JSON.stringify(la));
  t.is(held(lb, p.pid).length, 1, JSON.stringify(lb));
  // Another pair program is excluded.
  const q = await s.run(SHIM_API, ['4242', '7', 'x:K1', 'x:K2', 'u:K2'], { env: { JDLS } });
  t.deepEqual(q.stdout.trim().split('\n'), ['locked port=0', 'ok', 'ok'], q.stderr);
  t.is(await p.finish(), 0);
  // Its exit closed both connections: both servers released it.
  t.true(await s.cli.until(async () => (await locksOf(a)).length === 0 && (await locksOf(b)).length === 0, 10_000));
});

test.serial('SERVER2: kill -9 of the primary server: the program carries on with the secondary, and its locks there exclude another program', async (t) => {
  const a = await server(t);
  const b = await server(t);
  const s = new ShimEnv(t);
  const JDLS = `SERVER=127.0.0.1,${a.port},SERVER2=127.0.0.1,${b.port}`;
  const p = s.start(SHIM_API, ['4242', '7', 'x:K1', 'line', 'x:K2', 'u:K1', 'x:K3', 'hold'], { env: { JDLS } });
  await p.waitFor(/^ok$/, 15_000);
  t.true(await s.cli.until(async () => held(await locksOf(b), p.pid).length === 1, 10_000), 'K1 mirrored on the secondary');
  const killed = killAll(a);
  t.true(killed.length > 0);
  t.true(await s.cli.until(() => killed.every((x) => !s.cli.isAlive(x)), 10_000));
  p.child.stdin?.write('go\n');
  await p.waitFor(/^holding$/, 20_000);
  t.deepEqual(p.lines, ['ok', 'read', 'ok', 'ok', 'ok', 'holding'], p.stderr());
  t.true(s.cli.isAlive(p.pid));
  t.deepEqual(tcpPeerPorts(p.pid), [b.port], 'the failed server is never contacted again');
  t.is(held(await locksOf(b), p.pid).length, 2); // K2, K3 (K1 released)
  // Another SERVER2 program (its primary B answers; A is logged unreachable): excluded from K2 and K3, K1 free.
  const q = await s.run(SHIM_API, ['4242', '7', 'x:K2', 'x:K3', 'x:K1'], { env: { JDLS: `SERVER=127.0.0.1,${b.port},SERVER2=127.0.0.1,${a.port}` } });
  t.deepEqual(q.stdout.trim().split('\n'), ['locked port=0', 'locked port=0', 'ok'], q.stderr);
  t.is(await p.finish(), 0);
});

test.serial('SERVER2: the secondary server killed: the program carries on with the primary alone', async (t) => {
  const a = await server(t);
  const b = await server(t);
  const s = new ShimEnv(t);
  const JDLS = `SERVER=127.0.0.1,${a.port},SERVER2=127.0.0.1,${b.port}`;
  const p = s.start(SHIM_API, ['4242', '7', 'x:K1', 'line', 'x:K2', 'u:K1', 'hold'], { env: { JDLS } });
  await p.waitFor(/^ok$/, 15_000);
  t.true(await s.cli.until(async () => held(await locksOf(b), p.pid).length === 1, 10_000), 'K1 mirrored on the secondary');
  const killed = killAll(b);
  t.true(await s.cli.until(() => killed.every((x) => !s.cli.isAlive(x)), 10_000));
  p.child.stdin?.write('go\n');
  await p.waitFor(/^holding$/, 20_000);
  t.deepEqual(p.lines, ['ok', 'read', 'ok', 'ok', 'holding'], p.stderr());
  t.deepEqual(tcpPeerPorts(p.pid), [a.port]);
  t.is(held(await locksOf(a), p.pid).length, 1); // K2
  const q = await s.run(SHIM_API, ['4242', '7', 'x:K2', 'x:K1'], { env: { JDLS: `SERVER=127.0.0.1,${a.port}` } });
  t.deepEqual(q.stdout.trim().split('\n'), ['locked port=0', 'ok'], q.stderr);
  t.is(await p.finish(), 0);
});

// --- the witness (PROMOTE), against fake servers: the verdict is scripted ---

async function witnessed(t: ExecutionContext, roleA: 'leader' | 'follower', roleB: 'leader' | 'follower'): Promise<[FakeServer, FakeServer]> {
  const a = await FakeServer.start({ welcome: { witness: { role: roleA, term: 1 }, server: 'A' } });
  const b = await FakeServer.start({ welcome: { witness: { role: roleB, term: 1 }, server: 'B' } });
  t.teardown(() => a.close());
  t.teardown(() => b.close());
  return [a, b];
}

const lockKeys = (fs: FakeServer): string[] => fs.received('LOCK').map((f: ClientFrame) => {
  const l = f as LockFrame;
  return `${l.key.toString()}${l.mirror ? ' MIRROR' : ''}`;
});

test.serial('SERVER2 with a witness: the primary fails, PROMOTE (wait = TIMEOUT) to the secondary; PROMOTED: the request goes to it and the process carries on', async (t) => {
  const [a, b] = await witnessed(t, 'leader', 'follower');
  b.script = (f, conn) => {
    if (f.type !== 'PROMOTE') return false;
    conn.send({ type: 'PROMOTED', requestId: f.requestId, term: 2 });
    return true;
  };
  const s = new ShimEnv(t);
  const JDLS = `SERVER=127.0.0.1,${a.port},SERVER2=127.0.0.1,${b.port},TIMEOUT=4`;
  const p = s.start(SHIM_API, ['4242', '7', 'x:K1', 'line', 'x:K2', 'hold'], { env: { JDLS } });
  await p.waitFor(/^ok$/, 15_000);
  await b.until(() => lockKeys(b).length === 1, 5000, 'the MIRROR of K1');
  t.deepEqual(lockKeys(a), ['K1']);
  t.deepEqual(lockKeys(b), ['K1 MIRROR']);
  a.closeAll();
  p.child.stdin?.write('go\n');
  await p.waitFor(/^holding$/, 15_000);
  t.deepEqual(p.lines, ['ok', 'read', 'ok', 'holding'], p.stderr());
  const promotes = b.received('PROMOTE');
  t.is(promotes.length, 1);
  t.like(promotes[0], { waitMs: 4000 });
  t.deepEqual(lockKeys(b), ['K1 MIRROR', 'K2'], 'K2 sent again to the new primary, as a primary lock');
  t.is(await p.finish(), 0);
});

test.serial('SERVER2 with a witness: the secondary answers PROMOTE with NOT_LEADER: the process exits with the witness message', async (t) => {
  const [a, b] = await witnessed(t, 'leader', 'follower');
  b.script = (f, conn) => {
    if (f.type !== 'PROMOTE') return false;
    conn.send({ type: 'ERROR', requestId: f.requestId, code: 'NOT_LEADER', text: 'the leadership key is held' });
    return true;
  };
  const s = new ShimEnv(t);
  const JDLS = `SERVER=127.0.0.1,${a.port},SERVER2=127.0.0.1,${b.port},TIMEOUT=4`;
  const p = s.start(SHIM_API, ['4242', '7', 'x:K1', 'line', 'x:K2', 'hold'], { env: { JDLS } });
  await p.waitFor(/^ok$/, 15_000);
  a.closeAll();
  p.child.stdin?.write('go\n');
  const code = await p.finish(15_000);
  t.is(code, 1);
  t.regex(p.stderr(), new RegExp(`the primary lock server 127\\.0\\.0\\.1:${a.port} is unreachable and the witness did not make 127\\.0\\.0\\.1:${b.port} the primary within TIMEOUT: exiting rather than risk two holders of one lock`));
  t.deepEqual(p.lines, ['ok', 'read']);
  t.deepEqual(lockKeys(b), ['K1 MIRROR'], 'no primary lock was sent to the unpromoted secondary');
});

test.serial('SERVER2 with a witness: the server whose WELCOME says LEADER is the primary whatever the JDLS order', async (t) => {
  const [a, b] = await witnessed(t, 'follower', 'leader');
  const s = new ShimEnv(t);
  const JDLS = `SERVER=127.0.0.1,${a.port},SERVER2=127.0.0.1,${b.port}`;
  const r = await s.run(SHIM_API, ['4242', '7', 'x:K1'], { env: { JDLS } });
  t.is(r.code, 0, r.stderr);
  t.deepEqual(lockKeys(b), ['K1']);
  t.deepEqual(lockKeys(a), ['K1 MIRROR']);
});

test.serial('SERVER2 with a witness: neither server leads: the broker asks SERVER to take the leadership (PROMOTE) before handing both over, and SERVER is the primary', async (t) => {
  const [a, b] = await witnessed(t, 'follower', 'follower');
  a.script = (f, conn) => {
    if (f.type !== 'PROMOTE') return false;
    conn.send({ type: 'PROMOTED', requestId: f.requestId, term: 3 });
    return true;
  };
  const s = new ShimEnv(t);
  const JDLS = `SERVER=127.0.0.1,${a.port},SERVER2=127.0.0.1,${b.port},TIMEOUT=3`;
  const r = await s.run(SHIM_API, ['4242', '7', 'x:K1'], { env: { JDLS } });
  t.is(r.code, 0, r.stderr);
  t.like(a.received('PROMOTE')[0], { waitMs: 3000 });
  t.deepEqual(b.received('PROMOTE'), []);
  t.deepEqual(lockKeys(a), ['K1']);
  t.deepEqual(lockKeys(b), ['K1 MIRROR']);
});

test.serial('SERVER2: an unlock goes to both servers at once, not after the primary\'s answer', async (t) => {
  const a = await FakeServer.start({ welcome: { server: 'A' } });
  const b = await FakeServer.start({ welcome: { server: 'B' } });
  t.teardown(() => a.close());
  t.teardown(() => b.close());
  // A answers the UNLOCK only once B has it: a shim that waits for A's
  // answer before sending to B never gets one (the test then times out).
  a.script = (f, conn) => {
    if (f.type !== 'UNLOCK') return false;
    b.until(() => b.received('UNLOCK').length > 0, 5000, 'UNLOCK at B').then(
      () => conn.send({ type: 'RELEASED', requestId: f.requestId, count: 1 }),
      () => conn.send({ type: 'ERROR', requestId: f.requestId, code: 'SYSTEM', text: 'B never got the UNLOCK first' }),
    );
    return true;
  };
  const s = new ShimEnv(t);
  const r = await s.run(SHIM_API, ['4242', '7', 'x:K1', 'u:K1'], { env: { JDLS: `SERVER=127.0.0.1,${a.port},SERVER2=127.0.0.1,${b.port}` } });
  t.is(r.code, 0, r.stderr);
  t.deepEqual(r.stdout.trim().split('\n'), ['ok', 'ok'], r.stderr);
  t.is(b.received('UNLOCK').length, 1);
});

test.serial('SERVER2 with a witness: ERROR NOT_LEADER to a LOCK is the primary\'s failure: PROMOTE, then the LOCK goes to the new primary', async (t) => {
  const [a, b] = await witnessed(t, 'leader', 'follower');
  a.script = (f, conn) => {
    if (f.type !== 'LOCK' || f.key.toString() !== 'K2') return false;
    conn.send({ type: 'ERROR', requestId: f.requestId, code: 'NOT_LEADER', text: 'lease lapsed' });
    return true;
  };
  b.script = (f, conn) => {
    if (f.type !== 'PROMOTE') return false;
    conn.send({ type: 'PROMOTED', requestId: f.requestId, term: 2 });
    return true;
  };
  const s = new ShimEnv(t);
  const r = await s.run(SHIM_API, ['4242', '7', 'x:K1', 'x:K2', 'x:K3'], { env: { JDLS: `SERVER=127.0.0.1,${a.port},SERVER2=127.0.0.1,${b.port}` } });
  t.is(r.code, 0, r.stderr);
  t.deepEqual(r.stdout.trim().split('\n'), ['ok', 'ok', 'ok'], r.stderr);
  t.is(b.received('PROMOTE').length, 1);
  t.deepEqual(lockKeys(a), ['K1', 'K2'], 'never contacted again after its NOT_LEADER');
  t.deepEqual(lockKeys(b), ['K1 MIRROR', 'K2', 'K3']);
});

test.serial('SERVER2: siglongjmp out of a blocked F_SETLKW (the pair\'s reader in poll): the request is cancelled at the primary, and nothing is left held on either server', async (t) => {
  const a = await server(t);
  const b = await server(t);
  const s = new ShimEnv(t);
  const f = s.jlock(4242, 7);
  const env = { JDLS: `SERVER=127.0.0.1,${a.port},SERVER2=127.0.0.1,${b.port}` };
  const x = s.start(SHIM_LOCKER, [f, 'w:3', 'hold'], { env });
  await x.waitFor(/^holding$/, 20_000);
  const y = s.start(SHIM_LOCKER, [f, 'jmpW:3:500', 'line', 'w:10', 'hold'], { env });
  await y.waitFor(/^jumped$/, 20_000);
  t.is(await x.finish(), 0);
  y.child.stdin?.write('\n');
  await y.waitFor(/^holding$/, 20_000);
  t.deepEqual(y.lines, ['jumped', 'go', 'ok', 'holding']);
  const c = await s.run(SHIM_LOCKER, [f, 'w:3', 'w:10'], { env });
  t.deepEqual(c.stdout.trim().split('\n'), ['ok', 'EAGAIN'], c.stderr);
  // y holds byte 10 on both servers and nothing else.
  t.is(held(await locksOf(a), y.pid).length, 1);
  t.is(held(await locksOf(b), y.pid).length, 1);
  t.is(await y.finish(), 0);
});

test.serial('SERVER2: threads share the pair without blocking each other: a thread waiting for a lock does not hold up another thread\'s unlock (to both servers)', async (t) => {
  const a = await server(t);
  const b = await server(t);
  const s = new ShimEnv(t);
  const JDLS = `SERVER=127.0.0.1,${a.port},SERVER2=127.0.0.1,${b.port}`;
  // P holds K2; Q takes K1 and waits for K2; P's second thread waits for K1
  // while P's main thread releases K2: Q gets K2, releases K1, P's thread gets K1.
  const p = s.start(SHIM_API, ['4242', '7', 'x:K2', 'hold', 'mt:K1:K2'], { env: { JDLS } });
  await p.waitFor(/^holding$/, 15_000);
  const q = s.start(SHIM_API, ['4242', '7', 'x:K1', 'X:K2', 'u:K1', 'u:K2'], { env: { JDLS } });
  await q.waitFor(/^ok$/, 15_000);
  t.true(await s.cli.until(async () => (await locksOf(a)).some((l) => l.state === 'waiting' && l.ownerPid === q.pid), 10_000), 'Q waits for K2');
  p.child.stdin?.end();
  await p.waitFor(/^mt /, 15_000);
  t.deepEqual(p.lines, ['ok', 'holding', 'released', 'mt ok']);
  t.is(await q.finish(), 0);
  t.is(await p.finish(), 0);
  t.true(await s.cli.until(async () => (await locksOf(a)).length === 0 && (await locksOf(b)).length === 0, 10_000), 'nothing left on either server');
});

test.serial('SERVER2 with TIMEOUT: a primary that stops answering (SIGSTOP) is declared dead within TIMEOUT and the secondary takes over', async (t) => {
  const a = await server(t);
  const b = await server(t);
  const s = new ShimEnv(t);
  const JDLS = `SERVER=127.0.0.1,${a.port},SERVER2=127.0.0.1,${b.port},TIMEOUT=2`;
  const p = s.start(SHIM_API, ['4242', '7', 'x:K1', 'line', 'x:K2', 'hold'], { env: { JDLS } });
  await p.waitFor(/^ok$/, 15_000);
  const stopped = processesOf(a.cli.dir);
  for (const x of stopped) process.kill(x, 'SIGSTOP');
  t.teardown(() => {
    for (const x of stopped) {
      try {
        process.kill(x, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
  });
  const t0 = Date.now();
  p.child.stdin?.write('go\n');
  await p.waitFor(/^holding$/, 20_000);
  const took = Date.now() - t0;
  t.deepEqual(p.lines, ['ok', 'read', 'ok', 'holding'], p.stderr());
  t.true(took >= 1500, `declared dead after the TIMEOUT, not before (${took} ms)`);
  t.deepEqual(tcpPeerPorts(p.pid), [b.port], 'the silent primary is dropped');
  t.is(held(await locksOf(b), p.pid).length, 2);
  t.is(await p.finish(), 0);
});

test.serial('SERVER2: a fork child is another owner (it drops both of the parent\'s connections and gets its own pair); a counter stays exact across pair processes', async (t) => {
  const a = await server(t);
  const b = await server(t);
  const s = new ShimEnv(t);
  const JDLS = `SERVER=127.0.0.1,${a.port},SERVER2=127.0.0.1,${b.port}`;
  const f = s.jlock(0x1093, 0x801);
  fs.writeFileSync(f, '');
  const r = await s.run(SHIM_LOCKER, [f, 'w:3', 'forkclose:3', 'g:3', 'w:3'], { env: { JDLS }, timeoutMs: 15_000 });
  t.is(r.code, 0, r.stderr);
  // the child is refused the parent's lock, and its close() did not release it
  t.deepEqual(r.stdout.trim().split('\n'), ['ok', 'child EAGAIN', 'free', 'ok']);
  const data = `${s.cli.dir}/counter`;
  fs.writeFileSync(data, '0');
  const rs = await Promise.all(Array.from({ length: 3 }, () => s.run(SHIM_LOCKER, [f, `count:40:${data}`], { env: { JDLS }, timeoutMs: 30_000 })));
  for (const x of rs) t.is(x.stdout.trim(), 'counted', x.stderr);
  t.is(Number(fs.readFileSync(data, 'utf8')), 120);
});

// --- a real witness (etcd) and two witnessed servers ---

test.serial('SERVER2 with a real witness (etcd): the leader killed -9; the shim PROMOTEs the follower, which leads once the lease lapsed; the lock goes there and excludes others', async (t) => {
  const LEASE = 2000;
  const etcd = await Etcd.start(t);
  const prefix = `/jdls/shim-pair-${process.pid}`;
  const witness = (name: string): Record<string, unknown> => ({ witness: { endpoints: [etcd.url], prefix, leaseMs: LEASE, name } });
  const a = new ServerEnv(t);
  a.writeConfig(witness('a'));
  const b = new ServerEnv(t);
  b.writeConfig(witness('b'));
  await a.start();
  await until(() => readWitnessRecord(a.dir)?.role === 'leader', 15_000, 'server a to lead');
  await b.start();
  await until(() => readWitnessRecord(b.dir)?.leader === 'a', 15_000, 'server b to see a as the leader');
  const s = new ShimEnv(t);
  // The JDLS order names the follower first: the leader is the primary anyway. TIMEOUT above the lease.
  const JDLS = `SERVER=127.0.0.1,${b.port},SERVER2=127.0.0.1,${a.port},TIMEOUT=${(LEASE * 4) / 1000}`;
  const p = s.start(SHIM_API, ['4242', '7', 'x:K1', 'line', 'x:K2', 'hold'], { env: { JDLS } });
  await p.waitFor(/^ok$/, 15_000);
  for (const pid of processesOf(a.dir)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
  p.child.stdin?.write('go\n');
  await p.waitFor(/^holding$/, 20_000);
  t.deepEqual(p.lines, ['ok', 'read', 'ok', 'holding'], p.stderr());
  t.is(readWitnessRecord(b.dir)?.role, 'leader', 'b leads now');
  t.deepEqual(tcpPeerPorts(p.pid), [b.port]);
  // Another program on b alone: K1 (mirrored before the kill) and K2 (granted after) are held.
  const q = await s.run(SHIM_API, ['4242', '7', 'x:K1', 'x:K2', 'x:K3'], { env: { JDLS: `SERVER=127.0.0.1,${b.port}` } });
  t.deepEqual(q.stdout.trim().split('\n'), ['locked port=0', 'locked port=0', 'ok'], q.stderr);
  t.is(await p.finish(), 0);
});
