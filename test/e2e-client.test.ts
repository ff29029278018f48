// e2e-client.test.ts - the REAL client library (JdlsClient, src/client/)
// against the real lock service (jdls -ib / -ibD: monitor, listener,
// lock-server processes), end to end: remote client processes and local
// direct processes keep a shared counter exact; kill -9 of a remote client
// frees its lock for a waiting competitor (remote or local) at once; WAIT vs
// interim messages vs TIMEOUT (a lock server that stops answering: SIGSTOP);
// OSLOCKS with -ibD and with -ib; `jdls -C` against the real server.
// Serial: each test runs several processes on a 2-core machine.
import test, { type ExecutionContext } from 'ava';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { ServerEnv, until, sleep, alive } from './helpers/server-env.js';
import { Proc, lockerPath, nodeFixture, waitingOn, withTimeout } from './helpers/table-env.js';
import { JDLS, type RunResult } from './helpers/cli-env.js';
import { buildDir } from '../src/native.js';
import { JdlsClient, type ConnectOptions, type WaitingInfo } from '../src/client/client.js';
import { JdlsError } from '../src/errors.js';
import { tablePath } from '../src/installation.js';
import { untoken } from './helpers/grants.js';

const FILE = { inode: 4242n, dev: 7n }; // jdls-locker's default file
const oslockerPath = path.join(buildDir, 'jdls-oslocker');

/** The service's JDLS value (loopback, the listener's port) plus options. */
const jdlsFor = (env: ServerEnv, extra = ''): string => `SERVER=127.0.0.1,${env.port}${extra ? `,${extra}` : ''}`;

/** Children and in-process clients of one test; all gone at teardown, pass or fail. */
class E2E {
  readonly procs: Proc[] = [];
  readonly clients: JdlsClient[] = [];
  /** pids we SIGSTOPped: continued at teardown (then ServerEnv kills them) */
  readonly stopped: number[] = [];

  constructor(t: ExecutionContext, readonly env: ServerEnv) {
    // Registered after ServerEnv's: runs first (ava runs teardowns last-in, first-out).
    t.teardown(async () => {
      for (const pid of this.stopped) {
        try {
          process.kill(pid, 'SIGCONT');
        } catch {
          /* gone */
        }
      }
      await Promise.all(this.clients.map((c) => withTimeout(c.close(), 3000, 'client close').catch(() => undefined)));
      for (const p of this.procs) {
        if (p.running) {
          try {
            process.kill(p.pid, 'SIGKILL');
          } catch {
            /* gone meanwhile */
          }
        }
      }
      await Promise.all(this.procs.map((p) => withTimeout(p.exited, 5000, `${p.label} to die`).catch(() => undefined)));
    });
  }

  #spawn(label: string, cmd: string, args: string[], extraEnv: NodeJS.ProcessEnv = {}): Proc {
    const p = new Proc(spawn(cmd, args, { env: { ...this.env.env, ...extraEnv }, stdio: ['pipe', 'pipe', 'pipe'] }), label);
    this.procs.push(p);
    return p;
  }

  /** A remote client process (JdlsClient) with JDLS=jdls. */
  remote(jdls: string, args: string[]): Proc {
    return this.#spawn(`jdls-client-locker ${args.join(' ')}`, process.execPath, [nodeFixture('jdls-client-locker'), ...args], { JDLS: jdls });
  }

  /** jdls-locker (C, direct in the shm table). */
  local(args: string[]): Proc {
    return this.#spawn(`jdls-locker ${args.join(' ')}`, lockerPath, args);
  }

  /** jdls-oslocker (C, OFD locks in the server's lock directory) on the default file. */
  oslocker(cmd: string, args: string[]): Proc {
    return this.#spawn(`jdls-oslocker ${cmd} ${args.join(' ')}`, oslockerPath, [this.env.lockDir, '4242', '7', cmd, ...args]);
  }

  /** An in-process JdlsClient (the real library), closed at teardown. */
  async client(jdls: string, opts: ConnectOptions = {}): Promise<JdlsClient> {
    const c = await JdlsClient.connect(jdls, { errorTrace: false, connectTimeoutMs: 10_000, program: 'e2e', ...opts });
    this.clients.push(c);
    return c;
  }

  stop(pid: number): void {
    this.stopped.push(pid);
    process.kill(pid, 'SIGSTOP');
  }

  /** `jdls args` with JDLS set (bounded). */
  jdls(args: string[], jdls: string): Promise<RunResult> {
    return new Promise((resolve, reject) => {
      const child = spawn(process.execPath, [JDLS, ...args], { env: { ...this.env.env, JDLS: jdls }, stdio: ['ignore', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
      child.on('error', reject);
      child.on('close', (code, signal) => {
        clearTimeout(timer);
        resolve({ code, signal, stdout, stderr });
      });
    });
  }
}

async function rejectsCode(t: ExecutionContext, p: Promise<unknown>, code: string): Promise<JdlsError> {
  const e = await t.throwsAsync(p, { instanceOf: JdlsError });
  t.is((e as JdlsError).code as string, code, (e as Error).message);
  return e as JdlsError;
}

test.serial('JdlsClient processes and local direct processes increment one counter under one key: the count is exact', async (t) => {
  const env = new ServerEnv(t, { clientsPerProcess: 2 });
  await env.start();
  const e = new E2E(t, env);
  const counter = env.file('counter');
  fs.writeFileSync(counter, '0');
  const N = 150;
  const jdls = jdlsFor(env);
  const procs = [
    e.remote(jdls, ['counter', counter, 'CNT', String(N)]),
    e.remote(jdls, ['counter', counter, 'CNT', String(N)]),
    e.remote(jdls, ['counter', counter, 'CNT', String(N)]),
    e.local(['counter', counter, 'CNT', String(N)]),
    e.local(['counter', counter, 'CNT', String(N)]),
  ];
  t.is(new Set(procs.map((p) => p.pid)).size, procs.length, 'each client its own process');
  for (const p of procs) t.deepEqual(await p.expect('DONE', 60_000), [String(N)], p.stderr);
  await Promise.all(procs.map((p) => p.success()));
  t.is(fs.readFileSync(counter, 'utf8'), String(N * procs.length));
  t.is(env.table.check(), 0);
  t.is(env.table.usage().held, 0);
});

test.serial('kill -9 of a JdlsClient process holding a lock: a waiting competitor (remote or local) gets it within the bound', async (t) => {
  const env = new ServerEnv(t);
  await env.start();
  const e = new E2E(t, env);
  const jdls = jdlsFor(env, 'WAIT');
  const samples: { who: string; ms: number }[] = [];
  for (let i = 0; i < 6; i++) {
    const key = `KILL${i}`;
    const holder = e.remote(jdls, ['hold', key, 'write']);
    await holder.expect('GRANTED', 15_000);
    const remoteWaiter = i % 2 === 0;
    const waiter = remoteWaiter ? e.remote(jdls, ['wait', key, 'write']) : e.local(['wait', key, 'write', '10000', '0']);
    if (remoteWaiter) await waiter.expect('CONNECTED', 15_000);
    else t.deepEqual(await waiter.expect('QUEUED'), []);
    // Queued in the table (the remote one through its lock-server process).
    await until(() => waitingOn(env.table, key) === 1, 10_000, `a waiter queued on ${key}`);
    const t0 = process.hrtime.bigint();
    process.kill(holder.pid, 'SIGKILL');
    const [ns] = await waiter.expect('GRANTED', 5000);
    samples.push({ who: remoteWaiter ? 'remote' : 'local', ms: Number(BigInt(ns ?? '0') - t0) / 1e6 });
    waiter.release();
    await waiter.expect('RELEASED');
    await waiter.success();
  }
  t.log(`kill -9 -> waiting competitor granted: ${samples.map((s) => `${s.who} ${s.ms.toFixed(1)}`).join(', ')} ms`);
  // Generous (the goal is 100 ms): it proves the kernel's EOF frees the
  // locks, not the keep-alive (30 s) or the monitor's tidy-up.
  for (const s of samples) t.true(s.ms < 2000, `${s.who} granted ${s.ms} ms after the kill`);
  t.is(env.table.check(), 0);
  t.is(env.table.usage().held, 0);
});

test.serial('interim messages at interimMs without WAIT (and they keep a TIMEOUT client alive); none with WAIT, which TIMEOUT does not cut', async (t) => {
  const interimMs = 200;
  const env = new ServerEnv(t, { interimMs });
  await env.start();
  const e = new E2E(t, env);
  const holder = await e.client(jdlsFor(env), { pid: 6001, port: 61 });
  t.true((await holder.lock(FILE, 'HOT', 'write')).granted);
  // TIMEOUT=1 on both waiters: they wait longer than that.
  const chatty = await e.client(jdlsFor(env, 'TIMEOUT=1'), { pid: 6002 });
  const quiet = await e.client(jdlsFor(env, 'TIMEOUT=1,WAIT'), { pid: 6003 });
  t.is(chatty.server.interimMs, interimMs);
  const chattyEvents: WaitingInfo[] = [];
  const quietEvents: WaitingInfo[] = [];
  const deaths: string[] = [];
  for (const c of [chatty, quiet]) c.on('dead', (err) => deaths.push(err.code));
  const t0 = Date.now();
  // One after the other: two connections' requests reach the server in no
  // guaranteed order, and the test releases in FIFO order (chatty first).
  const chattyLock = chatty.lock(FILE, 'HOT', 'write', { onWaiting: (w) => chattyEvents.push(w) });
  await until(() => waitingOn(env.table, 'HOT') === 1, 10_000, 'the first waiter queued');
  const quietLock = quiet.lock(FILE, 'HOT', 'write', { onWaiting: (w) => quietEvents.push(w) });
  await until(() => waitingOn(env.table, 'HOT') === 2, 10_000, 'both waiters queued');
  await sleep(1600);
  const waited = Date.now() - t0;
  t.is(await holder.unlock(FILE, 'HOT'), 1);
  t.deepEqual(untoken(await chattyLock), { granted: true });
  t.is(await chatty.unlock(FILE, 'HOT'), 1);
  t.deepEqual(untoken(await quietLock), { granted: true });
  t.is(await quiet.unlock(FILE, 'HOT'), 1);
  t.log(`waited ${waited} ms; WAITING events without WAIT at ${chattyEvents.map((w) => w.waitedMs).join(', ')} ms; with WAIT: ${quietEvents.length}`);
  // About waited / interimMs (8) of them; bounds generous for a loaded machine.
  t.true(chattyEvents.length >= 3 && chattyEvents.length <= Math.ceil(waited / interimMs) + 1, `${chattyEvents.length} interim events`);
  for (const w of chattyEvents) {
    t.is(w.holder.port, 61, 'the interim message names the holder');
    t.is(w.holder.ownerPid, 6001);
  }
  const gaps = chattyEvents.slice(1).map((w, i) => w.waitedMs - (chattyEvents[i]?.waitedMs ?? 0));
  // A lower bound only: the server's timer never sends them closer, but
  // nothing bounds how late a loaded machine runs it.
  for (const g of gaps) t.true(g >= interimMs / 2, `interim gap ${g} ms`);
  t.is(quietEvents.length, 0, 'WAIT: no interim messages');
  t.deepEqual(deaths, [], 'nobody declared the server dead');
  t.is(chatty.failure, undefined);
  t.is(quiet.failure, undefined);
  const d = await env.jdls(['-dv']);
  const retries = Number(/^Lock retries:\s+(\d+)/m.exec(d.stdout)?.[1] ?? '-1');
  t.true(retries >= chattyEvents.length, `Lock retries: ${retries}`);
});

test.serial('TIMEOUT: a lock server that stops answering (SIGSTOP) is declared dead within TIMEOUT; WAIT still finds it through PINGs', async (t) => {
  const env = new ServerEnv(t, { clientsPerProcess: 1, spareProcesses: 0 });
  await env.start();
  const e = new E2E(t, env);
  // A request due: declared dead TIMEOUT after it was sent.
  const c = await e.client(jdlsFor(env, 'TIMEOUT=1'), { pid: 6101 });
  t.true((await c.lock(FILE, 'T1', 'write')).granted);
  const dead = new Promise<JdlsError>((resolve) => c.once('dead', resolve));
  e.stop(c.server.pid);
  const t0 = Date.now();
  await rejectsCode(t, c.status(FILE, 'T1'), 'SERVER_DEAD');
  const ms = Date.now() - t0;
  t.is((await withTimeout(dead, 1000, 'the dead event')).code, 'SERVER_DEAD');
  t.is(c.failure?.code, 'SERVER_DEAD');
  await rejectsCode(t, c.lock(FILE, 'T2', 'write'), 'SERVER_DEAD');
  t.log(`TIMEOUT=1: declared dead ${ms} ms after the request`);
  t.true(ms >= 950 && ms < 4000, `declared dead after ${ms} ms`);

  // WAIT: a waiting lock is exempt from TIMEOUT, but the keep-alive PINGs are not.
  const holder = await e.client(jdlsFor(env), { pid: 6102 });
  t.true((await holder.lock(FILE, 'W1', 'write')).granted);
  const w = await e.client(jdlsFor(env, 'WAIT,TIMEOUT=1'), { pid: 6103, pingIntervalMs: 300 });
  t.not(w.server.pid, holder.server.pid);
  const waiting = w.lock(FILE, 'W1', 'write');
  await until(() => waitingOn(env.table, 'W1') === 1, 10_000, 'the WAIT client queued');
  await sleep(1500); // longer than TIMEOUT: not dead (no answer is due, PONGs come)
  t.is(w.failure, undefined, 'WAIT: a long wait is not a dead server');
  e.stop(w.server.pid);
  const t1 = Date.now();
  await rejectsCode(t, waiting, 'SERVER_DEAD');
  const ms2 = Date.now() - t1;
  t.log(`WAIT,TIMEOUT=1 with PINGs every 300 ms: declared dead ${ms2} ms after SIGSTOP`);
  t.true(ms2 < 5000, `declared dead after ${ms2} ms`);
  // The first lock server, continued, sees its client gone and frees T1.
  process.kill(e.stopped[0] ?? 0, 'SIGCONT');
  const again = await e.client(jdlsFor(env), { pid: 6104 });
  t.true((await withTimeout(again.lock(FILE, 'T1', 'write'), 10_000, 'T1')).granted, 'T1 freed once the stopped server ran again');
});

test.serial('OSLOCKS: with -ibD (OS file locks) and with -ib (shm, the flag sends the lock to OS file locks); local OFD processes see them; a counter stays exact', async (t) => {
  const env = new ServerEnv(t);
  const r = await env.start(['-ibD']);
  t.regex(r.stdout, /OS file locks/);
  const e = new E2E(t, env);
  const jdls = jdlsFor(env, 'OSLOCKS');
  const a = await e.client(jdls, { pid: 6201, port: 71 });
  const b = await e.client(jdlsFor(env), { pid: 6202 });
  t.is(a.server.mechanism, 'os');
  t.true(a.config.osLocks);
  t.true((await a.lock(FILE, 'OSK', 'write')).granted);
  t.deepEqual(fs.readdirSync(env.lockDir), ['jlock_00001092_00000007']);
  const other = await b.lock(FILE, 'OSK', 'write', { nowait: true });
  t.false(other.granted);
  const probe = e.oslocker('try', ['OSK', 'write', 'ofd']);
  t.regex(await probe.line(), /^CONFLICT /, 'a local OFD lock sees the remote lock');
  t.is(await a.unlock(FILE, 'OSK'), 1);
  t.true((await b.lock(FILE, 'OSK', 'write', { nowait: true })).granted);
  t.is(await b.unlock(FILE, 'OSK'), 1);

  const counter = env.file('oscounter');
  fs.writeFileSync(counter, '0');
  const N = 100;
  const procs = [
    e.remote(jdls, ['counter', counter, 'OSCNT', String(N)]),
    e.remote(jdls, ['counter', counter, 'OSCNT', String(N)]),
    e.oslocker('counter', ['OSCNT', counter, String(N), 'ofd']),
  ];
  for (const p of procs) t.deepEqual(await p.expect('DONE', 60_000), [String(N)], p.stderr);
  await Promise.all(procs.map((p) => p.success()));
  t.is(fs.readFileSync(counter, 'utf8'), String(N * procs.length));

  // The listener goes; its lock server keeps serving `a` with OS file locks.
  // A table cannot enter service under those locks (one record, two
  // mechanisms): -ib names the process and gives up, leaving no table.
  t.true((await a.lock(FILE, 'HELD', 'write')).granted);
  const k = await env.jdls(['-kD']);
  t.is(k.code, 0, k.stderr);
  const servers = env.lockServers();
  t.true(servers.length > 0);
  env.env['JDLS_SERVICE_WAIT_MS'] = '300';
  const refused = await env.jdls(['-ib']);
  delete env.env['JDLS_SERVICE_WAIT_MS'];
  t.is(refused.code, 1, refused.stdout);
  t.regex(refused.stderr, /the lock table cannot be put in service: 1 process of this installation lock records as OS file locks/);
  t.regex(refused.stderr, new RegExp(`\\b${servers[0]} `));
  t.false(fs.existsSync(tablePath(env.dir)), 'no table left behind');
  t.true((await b.lock(FILE, 'HELD', 'write', { nowait: true })).granted === false, 'the OS lock still holds');
  // Once its clients leave, the lock server ends, and the table can enter service.
  await a.close();
  await b.close();
  await until(() => servers.every((p) => !alive(p)), 10_000, 'the OS lock server to end with its clients');
  // -ib: the table is the mechanism; OSLOCKS still takes OS file locks.
  await env.start(['-ib']);
  const c = await e.client(jdlsFor(env, 'OSLOCKS'), { pid: 6203 });
  t.is(c.server.mechanism, 'shm');
  t.true((await c.lock(FILE, 'OSK2', 'write')).granted);
  t.is(env.table.usage().held, 0, 'not in the table');
  const probe2 = e.oslocker('try', ['OSK2', 'write', 'ofd']);
  t.regex(await probe2.line(), /^CONFLICT /, 'an OS file lock');
  await c.close();
  // The lock server frees it when it sees the EOF: poll (bounded).
  let last = '';
  for (let i = 0; i < 50 && last !== 'GRANTED'; i++) {
    if (i > 0) await sleep(100);
    last = await e.oslocker('try', ['OSK2', 'write', 'ofd']).line();
  }
  t.is(last, 'GRANTED', 'closing the client freed its OS lock');
});

test.serial('jdls -C against the real server: success lines and exit 0; a refused port: the failure lines and exit 1', async (t) => {
  const env = new ServerEnv(t);
  await env.start();
  const e = new E2E(t, env);
  const port = env.port;
  const jdls = jdlsFor(env);
  const ok = await e.jdls(['-Cteststring'], jdls);
  t.is(ok.code, 0, ok.stderr);
  const m = new RegExp(`^Client: Using host '127\\.0\\.0\\.1', service '${port}'\\nClient: test string 'teststring' echoed by lock server pid (\\d+) \\(mechanism shm\\)\\n$`).exec(ok.stdout);
  t.truthy(m, ok.stdout);
  t.true(env.lockServers().includes(Number(m?.[1])), 'the pid of one of our lock-server processes');
  t.is(ok.stderr, '');

  // A client stays connected through -kD; a new -C is refused.
  const stays = await e.client(jdls, { pid: 6301 });
  const listener = env.listenerPid() ?? 0;
  t.is((await env.jdls(['-kD'])).code, 0);
  await until(() => !alive(listener), 5000, 'the listener to go');
  const refused = await e.jdls(['-C', 'teststring'], jdls);
  t.is(refused.code, 1);
  t.is(refused.stdout, `Client: Using host '127.0.0.1', service '${port}'\n`);
  t.is(refused.stderr, `Client: unable to connect to distributed lock service, locks not enabled\nClient: connection failed for host '127.0.0.1', service '${port}', error Connection refused\n`);
  t.true((await stays.lock(FILE, 'STAYS', 'write')).granted, 'the connected client keeps locking');
});
