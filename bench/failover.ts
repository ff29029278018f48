// failover.ts - the resilient pair with its witness (issue 15,
// docs/operations.md "A resilient pair and its witness"):
//
//   - the library client's resilient pair against its single-server pair:
//     lock+unlock of one key by a JdlsClient with SERVER=a,SERVER2=b, and by
//     one with SERVER=a alone, interleaved rounds, same run: goal <= 2.1 x
//     (the guide's price of resilience is one more round trip per lock; the
//     unlock goes to both servers at once);
//   - failover: from kill -9 of the primary's processes to the next grant on
//     the secondary, p50 and max over `failovers` failovers with the default
//     lease (5 s). The share of the lease is reported apart: kill -> the
//     client's failover event (the secondary answered PROMOTED: it took the
//     key once etcd expired the old leader's lease) and failover -> grant
//     (the request sent again).
//
// etcd runs on loopback (Debian's etcd-server; the scenario fails with a
// clear message without it), the servers are temp installations (remote.ts
// Service). Each failover: kill -9 of every process of the leader's
// installation, measure, then start a fresh server in its place (it comes
// back as the follower) and a fresh client (a client never returns to a
// server it lost).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import net from 'node:net';
import { spawn, type ChildProcess } from 'node:child_process';
import { JdlsClient } from '../src/client/client.js';
import { BenchError, median, type Figure } from './lib.js';
import { Service, PIN, pinPid, cmdline, SERVER_CPU, CLIENT_CPU } from './remote.js';

const ETCD = '/usr/bin/etcd';
const FILE = { inode: 5151n, dev: -1n };

export interface FailoverOptions {
  failovers?: number;
  rounds?: number;
  ms?: number;
  leaseMs?: number;
}

export interface FailoverResult {
  pairSingleNs: number[];
  pairResilientNs: number[];
  ratio: number;
  ratioOfMedians: number;
  failoverMs: number[];
  promoteMs: number[];
  resendMs: number[];
  leaseMs: number;
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      s.close(() => (a && typeof a === 'object' ? resolve(a.port) : reject(new Error('no port'))));
    });
  });
}

class Etcd {
  readonly child: ChildProcess;
  readonly dir: string;
  readonly url: string;
  #stderr = '';
  private constructor(child: ChildProcess, dir: string, url: string) {
    this.child = child;
    this.dir = dir;
    this.url = url;
    child.stderr?.setEncoding('utf8');
    child.stderr?.on('data', (c: string) => { this.#stderr = (this.#stderr + c).slice(-20_000); });
  }

  static async start(): Promise<Etcd> {
    if (!fs.existsSync(ETCD)) throw new BenchError(`${ETCD} is missing (apt-get install etcd-server): the witness cannot run`);
    const [cp, pp] = [await freePort(), await freePort()];
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'jdls-bench-etcd-'));
    const url = `http://127.0.0.1:${cp}`;
    const peer = `http://127.0.0.1:${pp}`;
    const child = spawn(ETCD, ['--name', 'w', '--data-dir', path.join(dir, 'data'), '--listen-client-urls', url, '--advertise-client-urls', url,
      '--listen-peer-urls', peer, '--initial-advertise-peer-urls', peer, '--initial-cluster', `w=${peer}`], { stdio: ['ignore', 'ignore', 'pipe'] });
    const e = new Etcd(child, dir, url);
    const deadline = Date.now() + 30_000;
    while (!/ready to serve client requests/.test(e.#stderr)) {
      if (child.exitCode !== null) throw new BenchError(`etcd exited: ${e.#stderr.slice(-1000)}`);
      if (Date.now() > deadline) { e.stop(); throw new BenchError('etcd not ready within 30 s'); }
      await new Promise((r) => setTimeout(r, 50));
    }
    return e;
  }

  stop(): void {
    if (this.child.exitCode === null) this.child.kill('SIGKILL');
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

function witnessed(etcd: Etcd, prefix: string, name: string, leaseMs: number): Service {
  return new Service(`pair-${name}`, { witness: JSON.stringify({ endpoints: [etcd.url], prefix, leaseMs, name }) });
}

const at = (s: Service): string => `127.0.0.1,${s.port}`;

/** Wait until `s` leads: a client of it alone is granted (a follower answers NOT_LEADER). */
async function leads(s: Service, limitMs = 30_000): Promise<void> {
  const deadline = Date.now() + limitMs;
  for (;;) {
    try {
      const c = await JdlsClient.connect(`SERVER=${at(s)}`, { errorTrace: false });
      try {
        const g = await c.lock(FILE, 'LEAD', 'write', { nowait: true });
        if (g.granted) { await c.unlock(FILE, 'LEAD'); return; }
      } finally {
        await c.close();
      }
    } catch {
      /* not yet */
    }
    if (Date.now() > deadline) throw new BenchError(`the server on port ${s.port} did not lead within ${limitMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function pairsFor(c: JdlsClient, ms: number): Promise<number> {
  const t0 = process.hrtime.bigint();
  const end = t0 + BigInt(ms) * 1_000_000n;
  let n = 0;
  let now = t0;
  while (now < end) {
    for (let i = 0; i < 50; i++) {
      await c.lock(FILE, 'PAIR', 'write');
      await c.unlock(FILE, 'PAIR');
    }
    n += 50;
    now = process.hrtime.bigint();
  }
  return Number(now - t0) / n;
}

function pidsKill(s: Service): void {
  for (const pid of s.pids()) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
}

export async function runFailover(opts: FailoverOptions = {}): Promise<{ result: FailoverResult; figures: Figure[] }> {
  const failovers = opts.failovers ?? 20;
  const rounds = opts.rounds ?? 7;
  const ms = opts.ms ?? 1000;
  const leaseMs = opts.leaseMs ?? 5000;
  const etcd = await Etcd.start();
  const prefix = `/jdls/bench-${process.pid}`;
  const services: Service[] = [];
  try {
    let lead = witnessed(etcd, prefix, 'a', leaseMs);
    services.push(lead);
    await leads(lead);
    let follow = witnessed(etcd, prefix, 'b', leaseMs);
    services.push(follow);

    // ---- the pair's cost --------------------------------------------------
    const single = await JdlsClient.connect(`SERVER=${at(lead)}`, { errorTrace: false });
    const pair = await JdlsClient.connect(`SERVER=${at(lead)},SERVER2=${at(follow)}`, { errorTrace: false });
    const pairSingleNs: number[] = [];
    const pairResilientNs: number[] = [];
    // Placed as the shim scenario places its programs (bench/shim.ts): this
    // process (the client) on CLIENT_CPU, every lock server of both servers
    // on SERVER_CPU - on two machines the two servers would run at once, so
    // this is the setting that does not favour the pair.
    const lockServers = (svc: Service): number[] => svc.pids().filter((p) => cmdline(p).includes('(lock server)'));
    if (PIN) {
      pinPid(process.pid, CLIENT_CPU);
      for (const p of [...lockServers(lead), ...lockServers(follow)]) pinPid(p, SERVER_CPU);
    }
    try {
      // Warm-up long enough for the JIT of both clients and the servers' (the
      // first timed round was still ~1.4x slower with 200 ms).
      await pairsFor(single, 1000);
      await pairsFor(pair, 1000);
      for (let r = 0; r < rounds; r++) {
        pairSingleNs.push(await pairsFor(single, ms));
        pairResilientNs.push(await pairsFor(pair, ms));
      }
    } finally {
      await single.close();
      await pair.close();
      if (PIN) pinPid(process.pid, undefined);
    }
    // As the shim scenario's figure: the median of the rounds' ratios (a
    // round's two runs are adjacent in time, so a load change moves both).
    const ratio = median(pairResilientNs.map((p, i) => p / (pairSingleNs[i] ?? NaN)));
    const ratioOfMedians = median(pairResilientNs) / median(pairSingleNs);

    // ---- failovers --------------------------------------------------------
    const failoverMs: number[] = [];
    const promoteMs: number[] = [];
    const resendMs: number[] = [];
    for (let i = 0; i < failovers; i++) {
      const c = await JdlsClient.connect(`SERVER=${at(lead)},SERVER2=${at(follow)},TIMEOUT=30`, { errorTrace: false });
      let failedOverAt = 0n;
      c.on('failover', () => { failedOverAt = process.hrtime.bigint(); });
      c.on('dead', () => undefined);
      let killedAt = 0n;
      let grantAfter = 0n;
      let stop = false;
      // The first grant of a request SENT after the kill: a request in flight
      // at the kill may have been granted by the old primary just before it
      // died (its answer then arrives after the kill, but that is no failover).
      const loop = (async (): Promise<void> => {
        while (!stop) {
          const sent = process.hrtime.bigint();
          await c.lock(FILE, 'FAIL', 'write');
          if (killedAt !== 0n && sent > killedAt) { grantAfter = process.hrtime.bigint(); stop = true; }
          await c.unlock(FILE, 'FAIL');
        }
      })();
      await new Promise((r) => setTimeout(r, 50 + Math.random() * Number(leaseMs) / 3));
      killedAt = process.hrtime.bigint();
      pidsKill(lead);
      await loop;
      await c.close();
      failoverMs.push(Number(grantAfter - killedAt) / 1e6);
      if (failedOverAt > killedAt && grantAfter >= failedOverAt) {
        promoteMs.push(Number(failedOverAt - killedAt) / 1e6);
        resendMs.push(Number(grantAfter - failedOverAt) / 1e6);
      }
      const dead = lead;
      dead.stop();
      services.splice(services.indexOf(dead), 1);
      lead = follow;
      follow = witnessed(etcd, prefix, i % 2 === 0 ? 'a' : 'b', leaseMs);
      services.push(follow);
    }
    const p50 = median(failoverMs);
    const max = Math.max(...failoverMs);
    const result: FailoverResult = { pairSingleNs, pairResilientNs, ratio, ratioOfMedians, failoverMs, promoteMs, resendMs, leaseMs };
    const figures: Figure[] = [
      { id: 'pairLibResilientUs', label: 'library client lock+unlock pair, SERVER2 (witnessed pair), median of rounds', value: +(median(pairResilientNs) / 1000).toFixed(1), unit: 'µs' },
      { id: 'pairLibSingleUs', label: 'library client lock+unlock pair, SERVER alone, same run', value: +(median(pairSingleNs) / 1000).toFixed(1), unit: 'µs' },
      { id: 'pairLibRatio', label: 'library client: resilient pair / single-server pair (median of the rounds\' ratios)', value: +ratio.toFixed(2), unit: 'x', goal: '<= 2.1', pass: ratio <= 2.1, note: `ratio of the medians ${ratioOfMedians.toFixed(2)}` },
      { id: 'failoverP50Ms', label: `failover, kill -9 of the primary -> next grant on the secondary, p50 of ${failoverMs.length} (lease ${leaseMs} ms)`, value: Math.round(p50), unit: 'ms' },
      { id: 'failoverMaxMs', label: `failover, max of ${failoverMs.length}`, value: Math.round(max), unit: 'ms' },
      { id: 'failoverPromoteP50Ms', label: 'of which: kill -> PROMOTED (the old lease running out, etcd expiring it, the secondary taking the key), p50', value: Math.round(median(promoteMs)), unit: 'ms' },
      { id: 'failoverResendP50Ms', label: 'of which: PROMOTED -> the request sent again is granted, p50', value: +median(resendMs).toFixed(1), unit: 'ms' },
    ];
    return { result, figures };
  } finally {
    for (const s of services) s.stop();
    etcd.stop();
  }
}
