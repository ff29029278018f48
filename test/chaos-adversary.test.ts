// chaos-adversary.test.ts - every adversary of the chaos suite
// (chaos/adversary.ts) once against a live lock service with real lock
// holders (a remote client through a lock server, a direct one in the
// table): no violations, each records its fault, the holders keep their
// locks, and the service still serves afterwards. And teeth: the
// impersonation check reports a violation against a server that lets
// anybody release, and the probe reports one when the service no longer
// answers.
//
// The cluster is a stand-in for chaos/cluster.ts: one ServerEnv on loopback
// (the root namespace), two "client hosts" h1 and h2 that are the root
// namespace too, told apart by source address (127.0.0.1, 127.0.0.2: the
// adversaries' processes bind it, see ADV_LOCAL_ADDRESS in
// chaos/fixtures/adv-proc.ts), so the per-address limit sees two hosts.
import test, { type ExecutionContext } from 'ava';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { ServerEnv, until } from './helpers/server-env.js';
import { expectType } from './helpers/wire-client.js';
import { FakeServer } from './helpers/fake-server.js';
import { hosts } from './helpers/netns-service.js';
import { netnsUnavailable } from './helpers/netns.js';
import { ADVERSARIES, type AdversaryResult } from '../chaos/adversary.js';
import type { ChaosCluster, ClientHandle, ServerHandle, ConfigName } from '../chaos/cluster-types.js';
import { FAULT_LOG, type FaultRecord } from '../chaos/faults.js';

/** mulberry32 */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let x = a;
    x = Math.imul(x ^ (x >>> 15), x | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

const HOST_ADDR: Record<string, string> = { h1: '127.0.0.1', h2: '127.0.0.2' };

class StandIn implements ChaosCluster {
  readonly runDir: string;
  clientHosts = ['h1', 'h2'];
  readonly faults: FaultRecord[] = [];
  readonly spawned: ChildProcess[] = [];
  readonly held: ClientHandle[] = [];

  constructor(t: ExecutionContext, readonly config: ConfigName, readonly servers: ServerHandle[]) {
    this.runDir = fs.mkdtempSync(path.join(os.tmpdir(), 'jdls-chaos-adv-'));
    t.teardown(async () => {
      for (const c of this.spawned) {
        if (c.exitCode === null && c.signalCode === null && c.pid) {
          try { process.kill(c.pid, 'SIGKILL'); } catch { /* gone */ }
          await new Promise((r) => c.once('exit', r));
        }
      }
      fs.rmSync(this.runDir, { recursive: true, force: true });
    });
  }

  serverAddr(): string {
    return '127.0.0.1';
  }

  clients(): ClientHandle[] {
    return this.held;
  }

  setLink(): void {
    throw new Error('no links in the stand-in');
  }

  spawnIn(ns: string | null, _label: string, cmd: string, args: string[], env: NodeJS.ProcessEnv): ChildProcess {
    const local = ns ? HOST_ADDR[ns] : undefined;
    const c = spawn(cmd, args, { env: { ...env, ...(local ? { ADV_LOCAL_ADDRESS: local } : {}) }, stdio: ['ignore', 'pipe', 'pipe'] }); // as chaos/cluster.ts: no stdin
    c.stdout?.resume();
    this.spawned.push(c);
    return c;
  }

  recordFault(f: FaultRecord): void {
    this.faults.push(f);
    fs.appendFileSync(path.join(this.runDir, FAULT_LOG), `${JSON.stringify(f)}\n`);
  }

  now(): bigint {
    return process.hrtime.bigint();
  }

  stopping(): boolean {
    return false;
  }
}

function handleOf(env: ServerEnv, args: string[], port?: () => number): ServerHandle {
  return {
    name: 'primary', ns: 'srv', dir: env.dir, env: env.env, startArgs: args, hasTable: !args.includes('-ibD'), up: true,
    get port(): number { return port ? port() : env.port; },
    jdls: (a) => env.jdls(a),
    monitorPid: () => undefined,
    listenerPid: () => env.listenerPid(),
    lockServerPids: () => env.lockServers(),
  };
}

const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

/** A service with a remote holder (COLD1 via h1) and, with a table, a direct one (COLD2), in the stand-in's clients. */
async function service(t: ExecutionContext, args: string[]): Promise<{ env: ServerEnv; cluster: StandIn; keys: string[] }> {
  // A per-address limit the flood goes past at once.
  const env = new ServerEnv(t, { maxConnectionsPerAddress: 40, maxConnections: 400, keepaliveMs: 2000 });
  await env.start(args);
  const config: ConfigName = args.includes('-ibP') ? 'port' : args.includes('-ibD') ? 'oslock' : 'table';
  const cluster = new StandIn(t, config, [handleOf(env, args)]);
  const remote = env.remote(['hold', 'COLD1', 'write']);
  await remote.expect('GRANTED');
  cluster.held.push({ id: 'r1', path: 'lib-remote', host: 'h1', pid: remote.pid, remote: true, fenced: false, servers: ['primary'], alive: () => alive(remote.pid) });
  if (config === 'oslock') return { env, cluster, keys: ['COLD1'] };
  const direct = env.nodeLocker(['wait', 'COLD2', 'write']);
  await direct.expect('GRANTED');
  cluster.held.push({ id: 'd1', path: 'lib-direct', host: 'srv', pid: direct.pid, remote: false, fenced: false, servers: ['primary'], alive: () => alive(direct.pid) });
  return { env, cluster, keys: ['COLD1', 'COLD2'] };
}

async function stillServes(t: ExecutionContext, env: ServerEnv, keys: string[]): Promise<void> {
  // Its own port: on -P a connection announcing the holder's port (77) shares its locks.
  const c = await env.client({ pid: 91_001, port: 91_001 });
  expectType(await c.lock('ADVCHECK'), 'GRANTED');
  t.is(expectType(await c.unlock('ADVCHECK'), 'RELEASED').count, 1);
  // The holders still hold: a NOWAIT of their keys is refused.
  for (const k of keys) expectType(await c.lock(k, 'write', { nowait: true }), 'LOCKED');
  c.close();
}

for (const args of [['-ib'], ['-ibP'], ['-ibD']]) {
  test.serial(`every adversary against jdls ${args.join(' ')} with real holders: no violations, faults recorded, the service serves`, async (t) => {
    const { env, cluster, keys } = await service(t, args);
    const r = rng(1313);
    for (const [name, a] of Object.entries(ADVERSARIES)) {
      if (!a.configs.includes(cluster.config)) continue;
      const t0 = Date.now();
      const res: AdversaryResult = await a.run(cluster, r);
      t.log(`${name} (${Date.now() - t0} ms): ${res.faults.map((f) => `${f.kind} ${f.target} ${f.note ?? ''}`).join(' | ')}`);
      t.deepEqual(res.violations, [], name);
      t.true(res.faults.length >= 1, `${name} recorded its fault`);
      t.true(res.faults.every((f) => Array.isArray(f.affects) && f.affects.length === 0 && f.end !== undefined), `${name}: affects nobody, has an end`);
    }
    const recorded = fs.readFileSync(path.join(cluster.runDir, FAULT_LOG), 'utf8').trim().split('\n');
    t.is(recorded.length, cluster.faults.length, 'every fault is in faults.jsonl');
    if (cluster.config !== 'oslock') {
      // The impersonation met the holders while they held (else it proved nothing).
      const imp = cluster.faults.find((f) => f.kind === 'impersonation');
      const tries = JSON.parse(/tries (\{[^}]*\})/.exec(imp?.note ?? '')?.[1] ?? '{}') as Record<string, number>;
      t.true((tries['remoteHits'] ?? 0) > 0 && (tries['directHits'] ?? 0) > 0, `impersonation hit live holds: ${imp?.note}`);
      const pr = cluster.faults.find((f) => f.kind === 'pid-reuse');
      t.regex(pr?.note ?? '', /gone: /, 'the planted dead-owned entry went');
      t.is(env.table.check(), 0, 'the table is consistent');
    }
    await stillServes(t, env, keys);
  });
}

test.serial('teeth: impersonation against a server that lets anybody release reports a double grant', async (t) => {
  const { env, cluster } = await service(t, ['-ib']);
  // The victims' rows come from the real table; the impostor talks to a fake
  // server that answers every UNLOCK with "released 1".
  const fake = await FakeServer.start();
  t.teardown(() => fake.close());
  fake.script = (f, conn) => {
    if (f.type === 'UNLOCK') {
      conn.send({ type: 'RELEASED', requestId: f.requestId, count: 1 });
      return true;
    }
    return false;
  };
  const lying = new StandIn(t, 'table', [handleOf(env, ['-ib'], () => fake.port)]);
  lying.held.push(...cluster.held.filter((c) => c.remote));
  const a = ADVERSARIES['impersonation'];
  if (!a) throw new Error('no impersonation adversary');
  const res = await a.run(lying, rng(7));
  t.true(res.violations.some((v) => v.property === 'double-grant' && /unlock released/.test(v.message)), JSON.stringify(res.violations));
});

test.serial('teeth: the probe reports a liveness violation when the service no longer answers', async (t) => {
  const env = new ServerEnv(t);
  // A port nobody listens on (bound, then closed).
  const srv = net.createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  const dead = (srv.address() as net.AddressInfo).port;
  await new Promise<void>((r) => srv.close(() => r()));
  const cluster = new StandIn(t, 'oslock', [handleOf(env, ['-ibD'], () => dead)]);
  const a = ADVERSARIES['malformed-frames'];
  if (!a) throw new Error('no malformed-frames adversary');
  const res = await a.run(cluster, rng(3));
  t.true(res.violations.some((v) => v.property === 'liveness' && /not served/.test(v.message)), JSON.stringify(res.violations));
});

test.serial('pid reuse: a waiter queued behind the planted dead-owned entry is handed the key', async (t) => {
  const env = new ServerEnv(t);
  await env.start(['-ib']);
  const cluster = new StandIn(t, 'table', [handleOf(env, ['-ib'])]);
  const a = ADVERSARIES['pid-reuse'];
  if (!a) throw new Error('no pid-reuse adversary');
  const run = a.run(cluster, rng(5));
  // The planted entry: a hot key held under the adversary's port.
  let key = '';
  await until(() => {
    for (const b of env.table.rows()) for (const r of b) if (r.state === 'held' && r.port >= 0x0adad000 && r.port < 0x0adad000 + 1000) key = r.key.toString();
    return key !== '';
  }, 10_000, 'the planted entry');
  // The pid is live, so only a look at its start time shows the entry is
  // dead: the waiter's own re-examination or the tidy-up; either way the
  // waiter must be handed the key.
  const waiter = env.nodeLocker(['wait', key, 'write']);
  const res = await run;
  await waiter.expect('GRANTED', 15_000);
  t.deepEqual(res.violations, []);
  t.regex(res.faults[0]?.note ?? '', /gone: (tidy-up \(freed 1\)|reaped by a request)/);
  waiter.release();
  await waiter.expect('RELEASED');
  t.is(env.table.check(), 0);
});

test.serial('in network namespaces (ip netns exec): every adversary against jdls -ib with a real JdlsClient holding a lock', async (t) => {
  const why = netnsUnavailable();
  if (why) {
    t.log(`skipped: ${why}`);
    t.pass();
    return;
  }
  const h = await hosts(t, { maxConnectionsPerAddress: 40, maxConnections: 400, keepaliveMs: 2000 });
  const victim = h.remote(h.pair.client, ['--ping', '500', 'hold', 'COLD1', 'write']);
  await victim.expect('GRANTED');
  const handle: ServerHandle = { ...handleOf(h.env, ['-ib']), ns: h.pair.server };
  const cluster = new StandIn(t, 'table', [handle]);
  // Two client hosts: the client namespace, and the server's own (another
  // source address: the probe's "other host").
  cluster.clientHosts = [h.pair.client, h.pair.server];
  cluster.serverAddr = (): string => h.pair.serverAddr;
  cluster.spawnIn = (ns, label, cmd, args, env): ChildProcess => {
    if (!ns) throw new Error('the adversaries run everything in a namespace here');
    const c = h.pair.spawn(ns, label, cmd, args, env).child;
    cluster.spawned.push(c);
    return c;
  };
  cluster.held.push({ id: 'jc1', path: 'lib-remote', host: h.pair.client, pid: victim.pid, remote: true, fenced: false, servers: ['primary'], alive: () => alive(victim.pid) });
  const r = rng(2026);
  for (const [name, a] of Object.entries(ADVERSARIES)) {
    const t0 = Date.now();
    const res = await a.run(cluster, r);
    t.log(`${name} (${Date.now() - t0} ms): ${res.faults.map((f) => `${f.target} ${f.note ?? ''}`).join(' | ')}`);
    t.deepEqual(res.violations, [], name);
    t.true(res.faults.length >= 1, `${name} recorded its fault`);
  }
  const imp = cluster.faults.find((f) => f.kind === 'impersonation');
  t.regex(imp?.note ?? '', /"remoteHits":[1-9]/, 'the impostor met the JdlsClient\'s live hold');
  // The victim still holds its lock, and releases it normally.
  const rows = [...h.env.table.rows()].flat().filter((x) => x.state === 'held' && x.ownerPid === victim.pid && x.key.toString() === 'COLD1');
  t.is(rows.length, 1, 'the JdlsClient still holds COLD1');
  victim.release();
  await victim.expect('RELEASED');
  t.is(h.env.table.check(), 0);
});

test.serial('under churn (remote clients locking hot keys in a loop): impersonation, pid reuse and malformed frames report no violation', async (t) => {
  const env = new ServerEnv(t, { keepaliveMs: 2000 });
  await env.start(['-ib']);
  const cluster = new StandIn(t, 'table', [handleOf(env, ['-ib'])]);
  const loops = ['HOT0', 'HOT1', 'HOT2'].map((k) => env.remote(['loop', k]));
  for (const [i, l] of loops.entries()) {
    await l.expect('READY');
    cluster.held.push({ id: `loop${i}`, path: 'lib-remote', host: 'h1', pid: l.pid, remote: true, fenced: false, servers: ['primary'], alive: () => alive(l.pid) });
  }
  const r = rng(99);
  for (const name of ['impersonation', 'pid-reuse', 'malformed-frames']) {
    const a = ADVERSARIES[name];
    if (!a) throw new Error(`no ${name}`);
    const res = await a.run(cluster, r);
    t.log(`${name}: ${res.faults.map((f) => `${f.target} ${f.note ?? ''}`).join(' | ')}`);
    t.deepEqual(res.violations, [], name);
  }
  // The loops still go (each prints OK every 100 lock/unlock pairs).
  for (const l of loops) await l.expect('OK', 20_000);
  t.is(env.table.check(), 0);
});
