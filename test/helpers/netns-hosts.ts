// netns-hosts.ts - any number of "hosts" for a test (network namespaces)
// joined by point-to-point veth links, made for one test and removed at its
// end: the resilient-pair tests need a witness host, two server hosts and
// several client hosts, and a way to cut ONE link (a client and the primary,
// the primary and the witness) while every other link stays up.
//
// Owns: the namespaces `jdls-t<pid>-<n><name>`, one /30 per link (addresses
// 10.232.x.y ONLY inside these namespaces: nothing is added to the root
// namespace, so nothing is routed elsewhere), which address a host reaches
// another at (addr), cutting a link (both ends down: silence, no FIN, no
// RST), running programs inside a host, and cleanup (pass or fail): every
// process still inside a namespace is killed by pid (`ip netns pids`: the
// namespaces are ours), then the namespaces go (their veths with them). Every
// `ip` call is bounded. Hosts without a link between them cannot reach each
// other at all (no forwarding): a link is the only path.
//
// Needs root and iproute2 (netnsUnavailable() in netns.ts says why not).
import type { ExecutionContext } from 'ava';
import { execFileSync, spawn, type SpawnOptions } from 'node:child_process';
import { Proc } from './table-env.js';
import { registerNetns, unregisterNetns } from './installations.js';

const IP_TIMEOUT_MS = 10_000;

function ip(args: string[]): string {
  return execFileSync('ip', args, { encoding: 'utf8', timeout: IP_TIMEOUT_MS, killSignal: 'SIGKILL', stdio: ['ignore', 'pipe', 'pipe'] });
}

interface Link {
  a: string;
  b: string;
  aIf: string;
  bIf: string;
  aAddr: string;
  bAddr: string;
}

let seq = 0;

export class NetnsHosts {
  readonly #ns = new Map<string, string>();
  readonly #links: Link[] = [];
  readonly #procs: Proc[] = [];
  readonly #tag: string;
  readonly #net: string;
  readonly #short: string;

  /** Make the hosts now (no links yet); removed at teardown. */
  constructor(t: ExecutionContext, names: readonly string[]) {
    const n = seq++;
    this.#tag = `${process.pid}-${n}`;
    // One /24 per NetnsHosts, a /30 per link within it; the octet only has to
    // differ from the other sets of this run (netns.ts uses 10.231).
    this.#net = `10.232.${(process.pid * 7 + n) % 256}`;
    this.#short = `${process.pid % 100_000}${n % 10}`;
    t.teardown(() => this.cleanup());
    for (const name of names) {
      const ns = `jdls-t${this.#tag}${name}`;
      registerNetns(ns);
      this.#ns.set(name, ns);
      ip(['netns', 'add', ns]);
      ip(['-n', ns, 'link', 'set', 'lo', 'up']);
    }
  }

  /** The namespace of a host. */
  ns(host: string): string {
    const ns = this.#ns.get(host);
    if (!ns) throw new Error(`no host ${host}`);
    return ns;
  }

  /** Join two hosts by a veth link of their own. */
  link(a: string, b: string): void {
    const i = this.#links.length;
    if (i >= 63) throw new Error('at most 63 links per NetnsHosts');
    // Interface names are at most 15 bytes.
    const l: Link = { a, b, aIf: `jh${this.#short}${i}a`, bIf: `jh${this.#short}${i}b`, aAddr: `${this.#net}.${4 * i + 1}`, bAddr: `${this.#net}.${4 * i + 2}` };
    ip(['link', 'add', 'name', l.aIf, 'netns', this.ns(a), 'type', 'veth', 'peer', 'name', l.bIf, 'netns', this.ns(b)]);
    for (const [host, ifname, addr] of [[a, l.aIf, l.aAddr], [b, l.bIf, l.bAddr]] as const) {
      ip(['-n', this.ns(host), 'addr', 'add', `${addr}/30`, 'dev', ifname]);
      ip(['-n', this.ns(host), 'link', 'set', ifname, 'up']);
    }
    this.#links.push(l);
  }

  #link(a: string, b: string): Link {
    const l = this.#links.find((x) => (x.a === a && x.b === b) || (x.a === b && x.b === a));
    if (!l) throw new Error(`no link between ${a} and ${b}`);
    return l;
  }

  /** The address at which `from` reaches `to` (to's end of their link). */
  addr(from: string, to: string): string {
    const l = this.#link(from, to);
    return l.a === to ? l.aAddr : l.bAddr;
  }

  /** Cut the link between two hosts: both ends down (silence: no FIN, no RST). */
  cut(a: string, b: string): void {
    const l = this.#link(a, b);
    ip(['-n', this.ns(l.a), 'link', 'set', l.aIf, 'down']);
    ip(['-n', this.ns(l.b), 'link', 'set', l.bIf, 'down']);
  }

  /** Run a program inside a host (a Proc, killed at teardown). */
  spawn(host: string, label: string, cmd: string, args: string[], env: NodeJS.ProcessEnv, opts: SpawnOptions = {}): Proc {
    const p = new Proc(spawn('ip', ['netns', 'exec', this.ns(host), cmd, ...args], { env, stdio: ['pipe', 'pipe', 'pipe'], ...opts }), `[${host}] ${label}`);
    this.#procs.push(p);
    return p;
  }

  /** Pids of the processes inside a host. */
  pids(host: string): number[] {
    try {
      return ip(['netns', 'pids', this.ns(host)]).split('\n').filter(Boolean).map(Number);
    } catch {
      return [];
    }
  }

  /** kill -9 of every process inside a host (a crash of the whole host's software); resolves once none is left. */
  async killAll(host: string): Promise<void> {
    for (let round = 0; round < 100; round++) {
      const left = this.pids(host);
      if (left.length === 0) return;
      for (const pid of left) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          /* gone */
        }
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`processes left in ${host} after kill -9: ${this.pids(host).join(' ')}`);
  }

  async cleanup(): Promise<void> {
    for (const host of this.#ns.keys()) await this.killAll(host).catch(() => undefined);
    await Promise.all(this.#procs.map((p) => Promise.race([p.exited, new Promise((r) => setTimeout(r, 5000))])));
    for (const ns of this.#ns.values()) {
      try {
        ip(['netns', 'del', ns]);
      } catch {
        /* never made, or gone */
      }
      unregisterNetns(ns);
    }
  }
}
