// chaos-node-worker.test.ts - the chaos suite's Node workload client
// (chaos/workers/node-worker.ts) against a real private service (jdls -ib)
// and the real fenced store: histories are well formed (start first, exit
// last, every invoke has exactly one outcome), the store's final values
// equal the accepted writes, rec grants carry tokens; SIGUSR2 makes a
// worker stop itself holding a lock, and SIGTERM ends it cleanly.
// Serial: each test runs several processes on a 2-core machine.
import test from 'ava';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ServerEnv, until } from './helpers/server-env.js';
import { Proc, withTimeout } from './helpers/table-env.js';
import { recordPid } from './helpers/installations.js';
import { readHistory, type HistoryEvent } from '../chaos/history.js';
import { STORE_LOG, type StoreRecord } from '../chaos/store-protocol.js';
import type { NodeWorkerSpec } from '../chaos/workers/node-worker.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const WORKER = path.resolve(here, '..', 'chaos', 'workers', 'node-worker.js');
const STORE = path.resolve(here, '..', 'chaos', 'store.js');

const OUTCOMES = new Set(['grant', 'locked', 'deadlock', 'timeout', 'cancelled', 'error']);

/** A run directory inside the installation (removed with it), the fenced store running in it. */
async function startRun(env: ServerEnv, procs: Proc[]): Promise<string> {
  const runDir = path.join(env.dir, 'run');
  fs.mkdirSync(runDir, { recursive: true });
  // env.env names the installation: ServerEnv's cleanup kills it too if the test fails early.
  const store = new Proc(spawn(process.execPath, [STORE, runDir, 'fenced'], { env: env.env, stdio: ['pipe', 'pipe', 'pipe'] }), 'store');
  recordPid(env.dir, store.pid);
  procs.push(store);
  await store.expect('READY');
  return runDir;
}

function startWorker(env: ServerEnv, procs: Proc[], spec: NodeWorkerSpec, jdls = `SERVER=127.0.0.1,${env.port}`): Proc {
  const childEnv = { ...env.env, JDLS: jdls };
  const p = new Proc(spawn(process.execPath, [WORKER, JSON.stringify(spec)], { env: childEnv, stdio: ['pipe', 'pipe', 'pipe'] }), spec.id);
  recordPid(env.dir, p.pid);
  procs.push(p);
  return p;
}

function killAll(procs: Proc[]): Promise<unknown> {
  for (const p of procs) {
    if (!p.running) continue;
    try {
      process.kill(p.pid, 'SIGCONT');
      process.kill(p.pid, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
  return Promise.all(procs.map((p) => withTimeout(p.exited, 5000, `${p.label} to die`).catch(() => undefined)));
}

const histFile = (runDir: string, id: string): string => path.join(runDir, 'hist', `${id}.jsonl`);

/** Well-formedness of one history; returns the problems found. */
function historyProblems(h: HistoryEvent[]): string[] {
  const bad: string[] = [];
  const at = (i: number): string => JSON.stringify(h[i]);
  if (h[0]?.ev !== 'start') bad.push(`first event is not start: ${at(0)}`);
  if (h.at(-1)?.ev !== 'exit') bad.push(`last event is not exit: ${at(h.length - 1)}`);
  for (let i = 0; i < h.length; i++) {
    const e = h[i]!;
    if (e.ev === 'invoke') {
      // a worker runs one request at a time: the very next event is its one outcome
      const o = h[i + 1];
      if (!o || !OUTCOMES.has(o.ev) || o.key !== e.key || o.op !== e.op) bad.push(`invoke without its outcome: ${at(i)} then ${at(i + 1)}`);
    } else if (OUTCOMES.has(e.ev)) {
      const inv = h[i - 1];
      if (!inv || inv.ev !== 'invoke' || inv.key !== e.key || inv.op !== e.op) bad.push(`outcome without its invoke: ${at(i)}`);
    }
    if (e.ev === 'grant' && e.key?.startsWith('rec:') && (e.token === undefined || e.token === '0')) bad.push(`rec grant without a token: ${at(i)}`);
  }
  return bad;
}

test.serial('2 remote + 1 direct workers: well-formed histories, store values equal accepted writes, rec tokens', async (t) => {
  const env = new ServerEnv(t);
  const procs: Proc[] = [];
  t.teardown(() => killAll(procs));
  await env.start();
  const runDir = await startRun(env, procs);
  const base = { runDir, host: 'local', family: 'rec' as const, hot: 2, cold: 5, maxOps: 200 };
  const specs: NodeWorkerSpec[] = [
    { ...base, id: 'libr-a.1', path: 'lib-remote', seed: 11 },
    { ...base, id: 'libr-b.1', path: 'lib-remote', seed: 22 },
    { ...base, id: 'libd-c.1', path: 'lib-direct', seed: 33, releaseDir: env.dir },
  ];
  const workers = specs.map((s) => startWorker(env, procs, s));
  for (const w of workers) await w.success(45_000);

  let writes = 0;
  const perKind = new Map<string, number>();
  for (const s of specs) {
    const h = readHistory(histFile(runDir, s.id));
    t.deepEqual(historyProblems(h), [], s.id);
    t.like(h[0], { ev: 'start', path: s.path, host: 'local', c: s.id });
    for (const e of h) perKind.set(e.ev, (perKind.get(e.ev) ?? 0) + 1);
    writes += h.filter((e) => e.ev === 'write').length;
    // a healthy service: nothing fails, and every holder's token is the newest for its key
    t.deepEqual(h.filter((e) => e.ev === 'error' || e.ev === 'refused' || e.ev === 'lost'), [], s.id);
  }
  t.true((perKind.get('grant') ?? 0) > 100, JSON.stringify([...perKind]));
  t.true(writes > 50);

  const recs = fs.readFileSync(path.join(runDir, STORE_LOG), 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as StoreRecord);
  const accepted = new Map<string, number>();
  const last = new Map<string, number>();
  for (const r of recs) {
    if (r.op !== 'W' || !r.ok) continue;
    accepted.set(r.key, (accepted.get(r.key) ?? 0) + 1);
    last.set(r.key, r.value);
  }
  t.deepEqual(Object.fromEntries(last), Object.fromEntries(accepted), 'final value per key = accepted writes for it');
  t.is([...accepted.values()].reduce((a, b) => a + b, 0), writes, 'accepted writes = write events');
  t.true([...accepted.keys()].every((k) => /^rec:(HOT[01]|COLD[0-4])$/.test(k)));
});

/** The store's accepted writes: per key, their count and the last value written. */
function storeWrites(runDir: string): { count: Record<string, number>; last: Record<string, number> } {
  const count: Record<string, number> = {};
  const last: Record<string, number> = {};
  for (const line of fs.readFileSync(path.join(runDir, STORE_LOG), 'utf8').split('\n')) {
    if (!line) continue;
    const r = JSON.parse(line) as StoreRecord;
    if (r.op !== 'W' || !r.ok) continue;
    count[r.key] = (count[r.key] ?? 0) + 1;
    last[r.key] = r.value;
  }
  return { count, last };
}

test.serial('lib-oslocks (OSLOCKS, family os): well-formed histories, store values equal accepted writes', async (t) => {
  const env = new ServerEnv(t);
  const procs: Proc[] = [];
  t.teardown(() => killAll(procs));
  await env.start();
  const runDir = await startRun(env, procs);
  const base = { runDir, host: 'local', family: 'os' as const, path: 'lib-oslocks' as const, hot: 2, cold: 3, maxOps: 100 };
  const specs: NodeWorkerSpec[] = [{ ...base, id: 'libo-a.1', seed: 44 }, { ...base, id: 'libo-b.1', seed: 55 }];
  const workers = specs.map((s) => startWorker(env, procs, s, `SERVER=127.0.0.1,${env.port},OSLOCKS`));
  for (const w of workers) await w.success(45_000);
  let writes = 0;
  for (const s of specs) {
    const h = readHistory(histFile(runDir, s.id));
    t.deepEqual(historyProblems(h), [], s.id);
    t.deepEqual(h.filter((e) => e.ev === 'error' || e.ev === 'refused' || e.ev === 'lost'), [], s.id);
    t.true(h.filter((e) => e.key !== undefined).every((e) => e.key!.startsWith('os:')));
    writes += h.filter((e) => e.ev === 'write').length;
  }
  const { count, last } = storeWrites(runDir);
  t.deepEqual(last, count);
  t.is(Object.values(count).reduce((a, b) => a + b, 0), writes);
  t.true(writes > 20);
});

test.serial('lib-pair (SERVER2): the primary\'s lock servers die, the workers fail over and carry on without errors', async (t) => {
  const primary = new ServerEnv(t);
  const secondary = new ServerEnv(t);
  const procs: Proc[] = [];
  t.teardown(() => killAll(procs));
  await primary.start();
  await secondary.start();
  const runDir = await startRun(primary, procs);
  const jdls = `SERVER=127.0.0.1,${primary.port},SERVER2=127.0.0.1,${secondary.port}`;
  // no maxOps: they run until SIGTERM, so both are surely running when the primary's lock servers die
  const base = { runDir, host: 'local', family: 'rec' as const, path: 'lib-pair' as const, hot: 2, cold: 3, exitHolding: 0, pingMs: 200 };
  const specs: NodeWorkerSpec[] = [{ ...base, id: 'libp-a.1', seed: 66 }, { ...base, id: 'libp-b.1', seed: 77 }];
  const workers = specs.map((s) => startWorker(primary, procs, s, jdls));
  const writes = (id: string): number => (fs.existsSync(histFile(runDir, id)) ? readHistory(histFile(runDir, id)).filter((e) => e.ev === 'write').length : 0);
  await until(() => specs.every((s) => writes(s.id) >= 10), 20_000, 'writes on both');
  const before = specs.map((s) => writes(s.id));
  for (const pid of primary.lockServers()) process.kill(pid, 'SIGKILL');
  await until(() => specs.every((s, i) => writes(s.id) >= before[i]! + 20), 20_000, 'writes on both after the failover');
  for (const w of workers) process.kill(w.pid, 'SIGTERM');
  for (const w of workers) await w.success(15_000);
  for (const [i, s] of specs.entries()) {
    t.regex(workers[i]!.stderr, /failover/, s.id);
    const h = readHistory(histFile(runDir, s.id));
    t.deepEqual(historyProblems(h), [], s.id);
    t.deepEqual(h.filter((e) => e.ev === 'error' || e.ev === 'refused' || e.ev === 'lost'), [], s.id);
  }
  const { count, last } = storeWrites(runDir);
  t.deepEqual(last, count);
});

/** The state letter of /proc/<pid>/stat (after the parenthesised name). */
function procState(pid: number): string {
  const s = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  return s.slice(s.lastIndexOf(')') + 2, s.lastIndexOf(')') + 3);
}

test.serial('SIGUSR2: the worker stops itself right after a read, holding; SIGCONT resumes it; SIGTERM ends it with exit', async (t) => {
  const env = new ServerEnv(t);
  const procs: Proc[] = [];
  t.teardown(() => killAll(procs));
  await env.start();
  const runDir = await startRun(env, procs);
  const id = 'libr-p.1';
  const w = startWorker(env, procs, { id, path: 'lib-remote', runDir, host: 'local', seed: 5, family: 'rec', hot: 1, cold: 0, exitHolding: 0 });
  const file = histFile(runDir, id);
  await until(() => fs.existsSync(file) && readHistory(file).some((e) => e.ev === 'write'), 15_000, 'a first write');
  process.kill(w.pid, 'SIGUSR2');
  await until(() => procState(w.pid) === 'T', 15_000, 'the worker to stop itself');
  const h = readHistory(file);
  const lastEv = h.at(-1)!;
  t.is(lastEv.ev, 'read', 'stopped right after the read of an RMW');
  t.not(lastEv.token, '0', 'under a write lock (a fenced read)');
  // the paused holder still holds it: the service shows the key held
  const held = await env.jdls(['-dL']);
  t.regex(held.stdout, /HOT0/);

  // A second worker contends for the paused holder's key; SIGTERM must end it
  // within a few seconds even while it waits (its wait is withdrawn).
  const id2 = 'libr-q.1';
  const w2 = startWorker(env, procs, { id: id2, path: 'lib-remote', runDir, host: 'local', seed: 6, family: 'rec', hot: 1, cold: 0, exitHolding: 0 });
  const file2 = histFile(runDir, id2);
  await until(() => fs.existsSync(file2) && readHistory(file2).some((e) => e.ev === 'invoke'), 15_000, 'the second worker to ask');
  process.kill(w2.pid, 'SIGTERM');
  await w2.success(8000);
  const h2 = readHistory(file2);
  t.deepEqual(historyProblems(h2), [], id2);
  t.like(h2.at(-1), { ev: 'exit', holding: [] });

  process.kill(w.pid, 'SIGCONT');
  await until(() => readHistory(file).length > h.length + 3, 15_000, 'the worker to go on');
  const after = readHistory(file).slice(h.length);
  t.like(after[0], { ev: 'write', op: lastEv.op, key: lastEv.key });

  process.kill(w.pid, 'SIGTERM');
  await w.success(10_000);
  const all = readHistory(file);
  t.deepEqual(historyProblems(all), []);
  t.like(all.at(-1), { ev: 'exit', holding: [] });
});

test.serial('a lost connection: the worker logs lost for what it held (or its release failed), and exits 3', async (t) => {
  const env = new ServerEnv(t);
  const procs: Proc[] = [];
  t.teardown(() => killAll(procs));
  await env.start();
  const runDir = await startRun(env, procs);
  const id = 'libr-l.1';
  const w = startWorker(env, procs, { id, path: 'lib-remote', runDir, host: 'local', seed: 9, family: 'rec', hot: 1, cold: 0, pingMs: 200, exitHolding: 0 });
  const file = histFile(runDir, id);
  await until(() => fs.existsSync(file) && readHistory(file).some((e) => e.ev === 'write'), 15_000, 'a first write');
  process.kill(w.pid, 'SIGUSR2');
  await until(() => procState(w.pid) === 'T', 15_000, 'the worker to stop itself');
  const paused = readHistory(file).at(-1)!;
  for (const pid of env.lockServers()) process.kill(pid, 'SIGKILL');
  process.kill(w.pid, 'SIGCONT');
  const e = await withTimeout(w.exited, 15_000, 'the worker to exit');
  t.is(e.code, 3, w.stderr);
  const after = readHistory(file).slice(readHistory(file).findIndex((x) => x.t === paused.t) + 1);
  // Which comes first after SIGCONT is a race: the connection's end (lost), or
  // the hold's end (write, release, and the unlock fails). Either way no
  // 'released', and no 'exit'.
  const lost = after.find((x) => x.ev === 'lost');
  const release = after.find((x) => x.ev === 'release');
  t.true((lost?.key ?? release?.key) === paused.key, JSON.stringify(after));
  t.false(after.some((x) => x.ev === 'released' || x.ev === 'exit'), JSON.stringify(after));
});

test.serial('the same seed makes the same choices', async (t) => {
  const env = new ServerEnv(t);
  const procs: Proc[] = [];
  t.teardown(() => killAll(procs));
  await env.start();
  const runDir = await startRun(env, procs);
  const choices = async (id: string): Promise<string[]> => {
    // alone, on an idle service: every request is granted, so the choices alone shape the history
    await startWorker(env, procs, { id, path: 'lib-direct', releaseDir: env.dir, runDir, host: 'local', seed: 77, family: 'rec', hot: 3, cold: 10, maxOps: 40 }).success(20_000);
    return readHistory(histFile(runDir, id)).filter((e) => e.ev === 'invoke').map((e) => `${e.op} ${e.key} ${e.mode} ${e.wait}`);
  };
  const a = await choices('libd-s.1');
  const b = await choices('libd-s.2');
  t.true(a.length >= 20);
  t.deepEqual(a, b);
});
