// pair-estate.ts - a resilient pair guarded by an etcd witness, on hosts of
// their own (network namespaces, netns-hosts.ts): host `w` runs etcd, hosts
// `a` and `b` run `jdls -ib` (a the primary, b the secondary; both name the
// witness), and client hosts `c1`, `c2`, ... reach a and b over links of
// their own. The servers reach the witness, the clients reach the servers;
// nothing else is linked, so cutting one link is exactly one failure.
//
// Owns: starting etcd (its data in a temp dir, removed at teardown) and the
// two services, making `a` the leader before `b` starts (a first client
// promotes it: deterministic whatever the campaign timing), starting
// resilient clients (test/fixtures/pair-counter.ts), killing a host's
// software with -9, and restarting a server. Everything is killed and
// removed at teardown, pass or fail (NetnsHosts.cleanup, ServerEnv's own).
import type { ExecutionContext } from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { NetnsHosts } from './netns-hosts.js';
import { ServerEnv } from './server-env.js';
import { Proc, nodeFixture, withTimeout } from './table-env.js';
import { JDLS } from './cli-env.js';
import { testDir } from './installations.js';

export const ETCD = '/usr/bin/etcd';
const ETCD_CLIENT_PORT = 2379;

/** undefined when etcd can be run here; else why not (a skip message). */
export function etcdUnavailable(): string | undefined {
  return fs.existsSync(ETCD) ? undefined : `${ETCD} is missing (apt-get install etcd-server)`;
}

export interface PairOptions {
  clients: number;
  /** the witness lease (ms); the servers' keepaliveMs is kept short too */
  leaseMs?: number;
  /** the clients' TIMEOUT (seconds): how long a client waits for a promotion verdict */
  timeoutSeconds?: number;
}

export class PairEstate {
  readonly hosts: NetnsHosts;
  readonly a: ServerEnv;
  readonly b: ServerEnv;
  readonly clients: string[];
  readonly dir: string;
  readonly counter: string;
  readonly log: string;
  readonly leaseMs: number;
  readonly timeoutSeconds: number;
  #etcd: Proc | undefined;

  private constructor(t: ExecutionContext, o: PairOptions) {
    this.clients = Array.from({ length: o.clients }, (_, i) => `c${i + 1}`);
    this.leaseMs = o.leaseMs ?? 2000;
    this.timeoutSeconds = o.timeoutSeconds ?? 8;
    // The hosts first: their teardown (kill everything inside, delete the
    // namespaces) then runs after the ServerEnvs' (last in, first out).
    this.hosts = new NetnsHosts(t, ['w', 'a', 'b', ...this.clients]);
    this.hosts.link('w', 'a');
    this.hosts.link('w', 'b');
    for (const c of this.clients) {
      this.hosts.link(c, 'a');
      this.hosts.link(c, 'b');
    }
    this.dir = testDir('pair');
    t.teardown(() => fs.rmSync(this.dir, { recursive: true, force: true }));
    this.counter = path.join(this.dir, 'counter');
    this.log = path.join(this.dir, 'log');
    fs.writeFileSync(this.counter, '0');
    fs.writeFileSync(this.log, '');
    const prefix = `/jdls/test-${process.pid}-${path.basename(this.dir)}`;
    const server = (name: 'a' | 'b'): ServerEnv => {
      const env = new ServerEnv(t);
      env.writeConfig({
        bind: '0.0.0.0',
        // Short silence bound: a client cut off from a server is dropped there (its locks freed) in seconds.
        keepaliveMs: 3000,
        witness: { endpoints: [`http://${this.hosts.addr(name, 'w')}:${ETCD_CLIENT_PORT}`], prefix, leaseMs: this.leaseMs, name },
      });
      return env;
    };
    this.a = server('a');
    this.b = server('b');
  }

  static async start(t: ExecutionContext, o: PairOptions): Promise<PairEstate> {
    const e = new PairEstate(t, o);
    await e.#startEtcd();
    await e.startServer('a');
    // a leads before b starts (else which one takes the key first is a race):
    // a client of a alone locks once it can - a follower refuses it NOT_LEADER.
    const deadline = Date.now() + 30_000;
    for (;;) {
      const probe = e.client('c1', ['1'], { only: 'a', key: 'PROBE' });
      const exit = await withTimeout(probe.exited, 30_000, 'a probe of a');
      if (exit.code === 0) break;
      if (Date.now() > deadline) throw new Error(`a never led: ${probe.stderr}\n${e.a.logs()}`);
      await new Promise((r) => setTimeout(r, 200));
    }
    fs.writeFileSync(e.log, '');
    fs.writeFileSync(e.counter, '0');
    await e.startServer('b');
    return e;
  }

  async #startEtcd(): Promise<void> {
    const data = path.join(this.dir, 'etcd');
    const peer = 'http://127.0.0.1:2380';
    this.#etcd = this.hosts.spawn('w', 'etcd', ETCD, [
      '--name', 'w', '--data-dir', data,
      '--listen-client-urls', `http://0.0.0.0:${ETCD_CLIENT_PORT}`,
      '--advertise-client-urls', `http://${this.hosts.addr('a', 'w')}:${ETCD_CLIENT_PORT}`,
      '--listen-peer-urls', peer, '--initial-advertise-peer-urls', peer,
      '--initial-cluster', `w=${peer}`, '--initial-cluster-state', 'new',
    ], { ...process.env });
    // etcd logs to stderr; "ready to serve client requests" once it takes requests.
    const deadline = Date.now() + 30_000;
    while (!/ready to serve client requests/.test(this.#etcd.stderr)) {
      if (!this.#etcd.running) throw new Error(`etcd exited: ${this.#etcd.stderr.slice(-2000)}`);
      if (Date.now() > deadline) throw new Error(`etcd not ready within 30 s: ${this.#etcd.stderr.slice(-2000)}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /** SIGSTOP / SIGCONT of the witness. */
  pauseWitness(): void {
    if (this.#etcd) process.kill(this.#etcd.pid, 'SIGSTOP');
  }

  server(name: 'a' | 'b'): ServerEnv {
    return name === 'a' ? this.a : this.b;
  }

  /** `jdls -ib` of a server, inside its host. */
  async startServer(name: 'a' | 'b'): Promise<void> {
    const env = this.server(name);
    const p = this.hosts.spawn(name, 'jdls -ib', process.execPath, [JDLS, '-ib'], env.env);
    const exit = await withTimeout(p.exited, 30_000, `jdls -ib on ${name}`);
    if (exit.code !== 0) throw new Error(`jdls -ib on ${name} failed (${exit.code}): ${p.stderr}\n${env.logs()}`);
  }

  /** The JDLS value a client host uses (a first, as the guide's SERVER), TIMEOUT in seconds. */
  jdls(client: string, only?: 'a' | 'b'): string {
    const at = (s: 'a' | 'b'): string => `${this.hosts.addr(client, s)},${this.server(s).port}`;
    const t = `TIMEOUT=${this.timeoutSeconds}`;
    if (only) return `SERVER=${at(only)},${t}`;
    return `SERVER=${at('a')},SERVER2=${at('b')},${t}`;
  }

  /** A pair-counter client on a client host: args = [n, pause ms?] on the shared counter. */
  client(host: string, args: string[], o: { only?: 'a' | 'b'; key?: string } = {}): Proc {
    return this.hosts.spawn(host, `pair-counter ${args.join(' ')}`, process.execPath,
      [nodeFixture('pair-counter'), this.counter, this.log, o.key ?? 'COUNT', ...args], { ...this.a.env, JDLS: this.jdls(host, o.only) });
  }

  /** kill -9 of every process of a server host (monitor, listener, lock servers). */
  async crash(name: 'a' | 'b'): Promise<void> {
    await this.hosts.killAll(name);
  }

  /** The counter's value and the log's lines: [token, pid, value]. */
  results(): { count: number; lines: { token: bigint; pid: number; value: number }[] } {
    const count = Number(fs.readFileSync(this.counter, 'utf8').trim());
    const lines = fs.readFileSync(this.log, 'utf8').split('\n').filter(Boolean).map((l) => {
      const [token, pid, value] = l.split(' ');
      return { token: BigInt(token ?? '0'), pid: Number(pid), value: Number(value) };
    });
    return { count, lines };
  }
}
