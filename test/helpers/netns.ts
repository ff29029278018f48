// netns.ts - two "hosts" for a test: a pair of network namespaces joined by
// a veth link, made for one test and removed at its end.
//
// Owns: creating `jdls-t<pid>-<n>-s` (the server host) and `jdls-t<pid>-<n>-c`
// (the client host), the veth between them, their addresses (10.231.x.1/30
// and .2/30, ONLY inside these namespaces: nothing is added to the root
// namespace, so nothing is ever routed elsewhere), running a command inside
// one (`ip netns exec`, which execs: the pid we get is the program's), cutting
// the link, and cleanup (pass or fail): every process still inside either
// namespace is killed by pid (`ip netns pids`: only ours, the namespaces are
// ours), then both namespaces go (the veth with them). Every `ip` call is
// bounded. Does not own: the lock service in them (server-env.ts).
//
// Needs root and iproute2 (`ip netns`); netnsUnavailable() says why not.
import type { ExecutionContext } from 'ava';
import { execFileSync, spawn, type SpawnOptions } from 'node:child_process';
import { Proc } from './table-env.js';
import { registerNetns, unregisterNetns } from './installations.js';

const IP_TIMEOUT_MS = 10_000;

function ip(args: string[]): string {
  return execFileSync('ip', args, { encoding: 'utf8', timeout: IP_TIMEOUT_MS, killSignal: 'SIGKILL', stdio: ['ignore', 'pipe', 'pipe'] });
}

let probed: string | undefined | null = null;

/** undefined when namespaces can be made here; else the reason (for a skip message). */
export function netnsUnavailable(): string | undefined {
  if (probed !== null) return probed;
  if (process.getuid?.() !== 0) return (probed = 'network namespace tests need root (ip netns add)');
  const name = `jdls-probe-${process.pid}`;
  try {
    ip(['netns', 'add', name]);
    try {
      // veth too: some kernels/containers allow namespaces but not veth.
      ip(['-n', name, 'link', 'add', 'jdlsprobe0', 'type', 'veth', 'peer', 'name', 'jdlsprobe1']);
    } finally {
      ip(['netns', 'del', name]);
    }
    probed = undefined;
  } catch (e) {
    const err = e as { stderr?: string; message: string };
    probed = `network namespaces unavailable: ${(err.stderr || err.message).trim()}`;
  }
  return probed;
}

let seq = 0;

export class NetnsPair {
  /** namespace names */
  readonly server: string;
  readonly client: string;
  /** addresses on the veth ends (inside the namespaces only) */
  readonly serverAddr: string;
  readonly clientAddr: string;
  /** veth interface names */
  readonly serverIf: string;
  readonly clientIf: string;
  readonly #procs: Proc[] = [];

  /** Make the pair now; removed at teardown (register this before anything that runs inside it). */
  constructor(t: ExecutionContext) {
    const n = seq++;
    const tag = `${process.pid}-${n}`;
    this.server = `jdls-t${tag}-s`;
    this.client = `jdls-t${tag}-c`;
    // Interface names are at most 15 bytes.
    const short = `${process.pid % 1_000_000}${n % 10}`;
    this.serverIf = `jts${short}`;
    this.clientIf = `jtc${short}`;
    // A /30 per pair; the octets only need to be unique within the pair.
    const net = `10.231.${(process.pid + n) % 256}`;
    this.serverAddr = `${net}.1`;
    this.clientAddr = `${net}.2`;
    t.teardown(() => this.cleanup());
    registerNetns(this.server);
    registerNetns(this.client);
    ip(['netns', 'add', this.server]);
    ip(['netns', 'add', this.client]);
    ip(['link', 'add', 'name', this.serverIf, 'netns', this.server, 'type', 'veth', 'peer', 'name', this.clientIf, 'netns', this.client]);
    for (const [ns, ifname, addr] of [[this.server, this.serverIf, this.serverAddr], [this.client, this.clientIf, this.clientAddr]] as const) {
      ip(['-n', ns, 'addr', 'add', `${addr}/30`, 'dev', ifname]);
      ip(['-n', ns, 'link', 'set', 'lo', 'up']);
      ip(['-n', ns, 'link', 'set', ifname, 'up']);
    }
  }

  /** Run a program inside a namespace (a Proc, killed at teardown). */
  spawn(ns: string, label: string, cmd: string, args: string[], env: NodeJS.ProcessEnv, opts: SpawnOptions = {}): Proc {
    const p = new Proc(spawn('ip', ['netns', 'exec', ns, cmd, ...args], { env, stdio: ['pipe', 'pipe', 'pipe'], ...opts }), `[${ns}] ${label}`);
    this.#procs.push(p);
    return p;
  }

  /** Run a command inside a namespace to completion (bounded). */
  exec(ns: string, cmd: string, args: string[]): string {
    return ip(['netns', 'exec', ns, cmd, ...args]);
  }

  /** Cut the link: the client host's end goes down (no FIN, no RST: silence). */
  cut(): void {
    ip(['-n', this.client, 'link', 'set', this.clientIf, 'down']);
  }

  /** Pids of the processes inside a namespace. */
  pids(ns: string): number[] {
    try {
      return ip(['netns', 'pids', ns]).split('\n').filter(Boolean).map(Number);
    } catch {
      return [];
    }
  }

  async cleanup(): Promise<void> {
    for (let round = 0; round < 20; round++) {
      const left = [...this.pids(this.server), ...this.pids(this.client)];
      if (left.length === 0) break;
      for (const pid of left) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          /* gone */
        }
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    await Promise.all(this.#procs.map((p) => Promise.race([p.exited, new Promise((r) => setTimeout(r, 5000))])));
    for (const ns of [this.client, this.server]) {
      try {
        ip(['netns', 'del', ns]);
      } catch {
        /* never made, or gone */
      }
      unregisterNetns(ns);
    }
  }
}
