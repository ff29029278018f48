// etcd.ts (test helper) - a real, single-member etcd for witness tests:
// Debian's etcd-server (/usr/bin/etcd), a temp data dir, free ports on the
// address asked for, ready when its JSON gateway answers.
//
// Owns: starting, pausing (SIGSTOP) and stopping it, and removing its data
// dir - in t.teardown, pass or fail. The data dir is a test directory
// (installations.ts testDir) and etcd's command line names it, so the
// worker's last cleanup kills it by pid too when a test timed out and no
// teardown ran. Reusable by multi-host tests: `host` is the listen address
// and `prefix` a command to run it under (e.g. ['ip', 'netns', 'exec', ns]).
import type { ExecutionContext } from 'ava';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { testDir, recordPid } from './installations.js';

export const ETCD_BIN = '/usr/bin/etcd';

export interface EtcdOptions {
  /** listen address (default 127.0.0.1) */
  host?: string;
  /** client and peer ports (default: free ones on host, found from here: give them when host is in another namespace) */
  clientPort?: number;
  peerPort?: number;
  /** run under this command, e.g. ['ip', 'netns', 'exec', 'ns1'] */
  prefix?: string[];
  /** ms to wait for it to answer (default 20 s) */
  readyMs?: number;
}

/** A port free on `host` now (closed again: a small race, fine for tests). */
export function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, host, () => {
      const a = s.address();
      const port = typeof a === 'object' && a ? a.port : 0;
      s.close(() => resolve(port));
    });
  });
}

/** fetch with a timeout that holds: not AbortSignal.timeout, whose signal Node may collect mid-call (src/server/etcd.ts). */
async function post(url: string, body: unknown, ms: number): Promise<Response> {
  const ac = new AbortController();
  const timer = setTimeout(() => ac.abort(), ms);
  try {
    const r = await fetch(url, { method: 'POST', body: JSON.stringify(body), signal: ac.signal });
    await r.clone().arrayBuffer();
    return r;
  } finally {
    clearTimeout(timer);
  }
}

const hostUrl = (host: string, port: number): string => `http://${net.isIPv6(host) ? `[${host}]` : host}:${port}`;

export class Etcd {
  readonly dir: string;
  readonly url: string;
  readonly child: ChildProcess;
  #exited: Promise<void>;
  #stopped = false;

  private constructor(dir: string, url: string, child: ChildProcess) {
    this.dir = dir;
    this.url = url;
    this.child = child;
    this.#exited = new Promise((r) => {
      if (child.exitCode !== null || child.signalCode !== null) r();
      else child.once('exit', () => r());
    });
  }

  get pid(): number {
    return this.child.pid ?? 0;
  }

  /** Start one; stopped and removed at t's teardown (when t is given). */
  static async start(t: ExecutionContext | undefined, opts: EtcdOptions = {}): Promise<Etcd> {
    const host = opts.host ?? '127.0.0.1';
    const clientPort = opts.clientPort ?? (await freePort(host));
    let peerPort = opts.peerPort ?? (await freePort(host));
    while (peerPort === clientPort) peerPort = await freePort(host);
    const dir = testDir('etcd');
    const client = hostUrl(host, clientPort);
    const peer = hostUrl(host, peerPort);
    const args = [
      '--name', 'default', '--data-dir', path.join(dir, 'data'),
      '--listen-client-urls', client, '--advertise-client-urls', client,
      '--listen-peer-urls', peer, '--initial-advertise-peer-urls', peer,
      '--initial-cluster', `default=${peer}`, '--log-level', 'warn',
    ];
    const [cmd, ...pre] = opts.prefix && opts.prefix.length > 0 ? [...opts.prefix, ETCD_BIN] : [ETCD_BIN];
    const log = fs.openSync(path.join(dir, 'etcd.log'), 'a');
    const child = spawn(cmd as string, [...pre, ...args], { stdio: ['ignore', log, log] });
    fs.closeSync(log);
    if (child.pid) recordPid(dir, child.pid);
    const e = new Etcd(dir, client, child);
    t?.teardown(() => e.stop());
    const deadline = Date.now() + (opts.readyMs ?? 20_000);
    for (;;) {
      if (child.exitCode !== null || child.signalCode !== null) throw new Error(`etcd exited at start (${child.exitCode ?? child.signalCode}):\n${e.log()}`);
      try {
        const r = await post(`${client}/v3/kv/range`, { key: Buffer.from('x').toString('base64') }, 1000);
        if (r.ok) return e;
      } catch {
        /* not yet */
      }
      if (Date.now() > deadline) {
        await e.stop();
        throw new Error(`etcd did not answer at ${client} within ${opts.readyMs ?? 20_000} ms:\n${e.log()}`);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  log(): string {
    try {
      return fs.readFileSync(path.join(this.dir, 'etcd.log'), 'utf8');
    } catch {
      return '';
    }
  }

  /** SIGSTOP: it neither answers nor expires leases until resume(). */
  pause(): void {
    if (this.child.pid && !this.#stopped) process.kill(this.child.pid, 'SIGSTOP');
  }

  resume(): void {
    if (this.child.pid && !this.#stopped) process.kill(this.child.pid, 'SIGCONT');
  }

  /** Kill it (-9, after SIGCONT in case it was paused), wait for the exit, remove the data. Idempotent. */
  async stop(): Promise<void> {
    if (!this.#stopped) {
      this.#stopped = true;
      try {
        this.child.kill('SIGKILL');
      } catch {
        /* gone */
      }
    }
    await Promise.race([this.#exited, new Promise((r) => setTimeout(r, 5000))]);
    fs.rmSync(this.dir, { recursive: true, force: true });
  }

  /** One key's value through the gateway (undefined: absent). */
  async get(key: string): Promise<string | undefined> {
    const r = await post(`${this.url}/v3/kv/range`, { key: Buffer.from(key).toString('base64') }, 3000);
    const j = (await r.json()) as { kvs?: { value?: string }[] };
    const v = j.kvs?.[0]?.value;
    return v === undefined ? undefined : Buffer.from(v, 'base64').toString('utf8');
  }
}
