// cluster.ts - one round's simulated estate: server hosts and client hosts
// as network namespaces joined by point-to-point veth links, the lock
// service(s) running inside the server hosts, and the workload clients
// (chaos/workers/*) on every host, restarted when they die.
//
// Owns: the namespaces, links and addresses (only inside namespaces made
// here: 10.233.<link>.0/30, nothing in the root namespace, so nothing is
// ever routed off the machine), the installations (one JBCRELEASEDIR per
// server, service on the guide's port 50002 inside its own namespace), the
// client plan per configuration, respawning clients (recording a wpair
// client's SPLIT_REFUSED exit), the witness host of wpair (etcd in its own
// namespace, linked to each server host only), the servers' own
// records (snapshots.jsonl), and tearing everything down - every process by
// pid, then the namespaces - with a list of whatever would not go (the
// cleanup property). Does not own: faults (nemesis.ts, adversary.ts),
// histories (the workers), judging (checker.ts).
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { stringify } from 'yaml';
import type { ChaosCluster, ClientHandle, ConfigName, RunResult, ServerHandle } from './cluster-types.js';
import { FAULT_LOG, type FaultRecord } from './faults.js';
import { LockTable } from '../src/locks/table.js';
import { tablePath, markerPath, installationProcesses } from '../src/installation.js';
import { LISTENER_TITLE } from '../src/server/listener.js';
import { LOCK_SERVER_TITLE } from '../src/server/lockserver.js';
import { MONITOR_TITLE } from '../src/cli/start.js';
import { shimPath } from '../src/shim.js';

const here = path.dirname(fileURLToPath(import.meta.url));
/** dist/ */
const distDir = path.resolve(here, '..');
const JDLS_CLI = path.join(distDir, 'src', 'cli', 'jdls.js');
const NODE_WORKER = path.join(here, 'workers', 'node-worker.js');
const SQLITE_WORKER = path.join(here, 'workers', 'sqlite-worker.js');
/** Not compiled: the source, run by python3 under the shim. */
const PYTHON_WORKER = path.resolve(distDir, '..', 'chaos', 'workers', 'python-worker.py');
/**
 * The shim clients' data file, in the installation's lock directory: only a
 * record-lock file (jlock_<inode>_<dev>; dev ffffffff = -1, so the table and
 * the server name it alike) is routed by the shim to the table or the
 * server - any other file keeps kernel locks (docs/shim.md).
 */
const SHIM_DATA_FILE = 'jlock_0000a000_ffffffff';
const buildDir = path.resolve(distDir, '..', 'build', 'Release');
export const CHAOS_SHIM = path.join(buildDir, 'jdls-chaosshim');
/** The guide's port: every server host is its own namespace, so it is free. */
export const SERVICE_PORT = 50002;
/** The file identity of the record locks (inode, dev) of the library clients. */
export const REC_FILE = { inode: 4242n, dev: 7n };
/** The witness of the `wpair` configuration (Debian's etcd-server). */
export const ETCD = '/usr/bin/etcd';
const ETCDCTL = '/usr/bin/etcdctl';
const ETCD_CLIENT_PORT = 2379;
/** The lease of the leader key (ms) in `wpair`: etcd's smallest TTL with its default timing is 2 s. */
export const WITNESS_LEASE_MS = 2000;
/** A worker's exit code when its client refused to split (SPLIT_REFUSED: the witness did not make the secondary the primary). */
export const EXIT_SPLIT_REFUSED = 6;

/** undefined when the `wpair` configuration can run here (etcd and etcdctl present); else why not. */
export function etcdUnavailable(): string | undefined {
  for (const f of [ETCD, ETCDCTL]) if (!fs.existsSync(f)) return `${f} is missing (apt-get install etcd-server etcd-client)`;
  return undefined;
}

const IP_TIMEOUT_MS = 10_000;
function ip(args: string[]): string {
  return execFileSync('ip', args, { encoding: 'utf8', timeout: IP_TIMEOUT_MS, killSignal: 'SIGKILL', stdio: ['ignore', 'pipe', 'pipe'] });
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Whether namespaces and veth links can be made here (root, iproute2); the reason if not. */
export function netnsUnavailable(): string | undefined {
  if (process.getuid?.() !== 0) return 'the chaos suite needs root (ip netns add)';
  const name = `jdlsc-probe-${process.pid}`;
  try {
    ip(['netns', 'add', name]);
    try {
      ip(['-n', name, 'link', 'add', 'jcprobe0', 'type', 'veth', 'peer', 'name', 'jcprobe1']);
    } finally {
      ip(['netns', 'del', name]);
    }
    return undefined;
  } catch (e) {
    const err = e as { stderr?: string; message: string };
    return `network namespaces unavailable: ${(err.stderr || err.message).trim()}`;
  }
}

function procState(pid: number): string | undefined {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'latin1');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
  } catch {
    return undefined;
  }
}

/** Alive and not a zombie. */
export function running(pid: number): boolean {
  const s = procState(pid);
  return s !== undefined && s !== 'Z' && s !== 'X';
}

export function stopped(pid: number): boolean {
  const s = procState(pid);
  return s === 'T' || s === 't';
}

function cmdline(pid: number): string {
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean).join(' ');
  } catch {
    return '';
  }
}

/** Live (not zombie) processes whose environment names this JBCRELEASEDIR (only ever ours: the directory is unique). */
export function processesOf(dir: string): number[] {
  return installationProcesses(dir).filter(running);
}

function kill(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    /* gone */
  }
}

/** Run a program to its end, bounded; never throws. */
export function runToEnd(cmd: string, args: string[], env: NodeJS.ProcessEnv, timeoutMs = 30_000): Promise<RunResult> {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => {
      kill(child.pid ?? 0, 'SIGKILL');
      stderr += `\n(killed after ${timeoutMs} ms)`;
    }, timeoutMs);
    child.on('error', (e) => {
      clearTimeout(timer);
      resolve({ code: null, stdout, stderr: `${stderr}${e.message}` });
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

interface Link {
  clientHost: string;
  server: 'primary' | 'secondary';
  clientIf: string;
  serverAddr: string;
  clientAddr: string;
}

class Installation implements ServerHandle {
  port = SERVICE_PORT;
  up = true;
  readonly env: NodeJS.ProcessEnv;
  constructor(
    readonly name: 'primary' | 'secondary',
    readonly ns: string,
    readonly dir: string,
    readonly startArgs: string[],
    readonly hasTable: boolean,
    settings: Record<string, unknown>,
    extraEnv: NodeJS.ProcessEnv,
  ) {
    fs.mkdirSync(dir, { recursive: true, mode: 0o755 });
    fs.writeFileSync(path.join(dir, 'jdls.yaml'), stringify({ port: SERVICE_PORT, bind: '0.0.0.0', lockDir: path.join(dir, 'jbase'), ...settings }));
    this.env = { ...process.env, ...extraEnv, JBCRELEASEDIR: dir };
    for (const k of ['JDLS', 'JBCPORTNO', 'JDLS_LOG_LEVEL', 'LD_PRELOAD']) delete this.env[k];
  }
  jdls(args: string[]): Promise<RunResult> {
    return runToEnd('ip', ['netns', 'exec', this.ns, process.execPath, JDLS_CLI, ...args], this.env);
  }
  #titled(title: string): number[] {
    return processesOf(this.dir).filter((p) => cmdline(p).startsWith(title));
  }
  monitorPid(): number | undefined {
    return this.#titled(MONITOR_TITLE)[0];
  }
  listenerPid(): number | undefined {
    return this.#titled(LISTENER_TITLE)[0];
  }
  lockServerPids(): number[] {
    return this.#titled(LOCK_SERVER_TITLE);
  }
  logs(): string {
    let s = '';
    for (const f of ['jdls-listener.log', 'jdls-monitor.log']) {
      try {
        s += `--- ${f}\n${fs.readFileSync(path.join(this.dir, f), 'utf8').split('\n').slice(-30).join('\n')}`;
      } catch {
        /* none */
      }
    }
    return s;
  }
}

/** What runs where, per configuration: one entry per client "slot" (a slot's dead client is replaced by a new incarnation). */
export interface ClientSlot {
  base: string;
  path: 'lib-direct' | 'lib-remote' | 'lib-pair' | 'lib-oslocks' | 'shim-direct' | 'shim-remote' | 'py-direct' | 'py-remote' | 'sqlite-direct' | 'sqlite-remote';
  /** 'primary' = on the server host itself; else a client host index */
  host: 'primary' | number;
  /** loopback: a remote client on the server host itself */
  loopback?: boolean;
}

export function planFor(config: ConfigName): ClientSlot[] {
  const remote = (host: number, n: number, p: ClientSlot['path'] = 'lib-remote'): ClientSlot[] =>
    Array.from({ length: n }, (_, i) => ({ base: `${p === 'lib-pair' ? 'pair' : p === 'lib-oslocks' ? 'osl' : p === 'shim-remote' ? 'shimr' : p === 'py-remote' ? 'pyr' : 'libr'}-c${host + 1}-${i}`, path: p, host }));
  switch (config) {
    case 'table':
      return [
        { base: 'libd-0', path: 'lib-direct', host: 'primary' },
        { base: 'libd-1', path: 'lib-direct', host: 'primary' },
        { base: 'libl-0', path: 'lib-remote', host: 'primary', loopback: true },
        { base: 'shimd-0', path: 'shim-direct', host: 'primary' },
        { base: 'shimd-1', path: 'shim-direct', host: 'primary' },
        { base: 'sqld-0', path: 'sqlite-direct', host: 'primary' },
        ...remote(0, 2),
        ...remote(0, 1, 'shim-remote'),
        { base: 'sqlr-c1-0', path: 'sqlite-remote', host: 0 },
        { base: 'pyd-0', path: 'py-direct', host: 'primary' },
        ...remote(1, 2),
        ...remote(1, 1, 'lib-oslocks'),
        ...remote(1, 1, 'py-remote'),
        ...remote(2, 1),
      ];
    case 'port':
      return [
        { base: 'libd-0', path: 'lib-direct', host: 'primary' },
        { base: 'libd-1', path: 'lib-direct', host: 'primary' },
        ...remote(0, 2),
        ...remote(1, 2),
        ...remote(2, 1),
      ];
    case 'oslock':
      return [
        { base: 'libl-0', path: 'lib-remote', host: 'primary', loopback: true },
        // Local preloaded programs on the server host take kernel locks on
        // the same record-lock file (no table: the OS route) - the guide's
        // "local processes use the same mechanism as the service".
        { base: 'shimd-0', path: 'shim-direct', host: 'primary' },
        ...remote(0, 2),
        ...remote(0, 1, 'shim-remote'),
        ...remote(1, 1, 'py-remote'),
        ...remote(1, 2),
        ...remote(2, 1),
      ];
    case 'pair':
    case 'wpair':
      return [...remote(0, 2, 'lib-pair'), ...remote(1, 2, 'lib-pair'), ...remote(2, 1, 'lib-pair')];
  }
}

export interface ClusterOptions {
  runDir: string;
  config: ConfigName;
  round: number;
  seed: number;
  /** the lock servers' keep-alive bound (ms): a paused or cut-off client is dropped after it */
  keepaliveMs: number;
  /** JDLS TIMEOUT (seconds) of the remote clients */
  clientTimeoutS: number;
  /** cold keys of the library clients (0: every lock on the hot keys) */
  coldKeys: number;
  /** extra environment of the service's processes (the teeth tests' JDLS_FAULT_INJECTION) */
  serviceEnv?: NodeJS.ProcessEnv;
  /** 'two-services': the teeth test's misconfiguration - remote clients are sent to two unrelated services */
  misroute?: boolean;
  /** wpair: the witness lease (ms; default WITNESS_LEASE_MS) */
  witnessLeaseMs?: number;
  /** wpair, the teeth test: etcd runs but the servers do not name it (a pair without a witness under wpair's faults; the primary counts as the leader) */
  witnessOff?: boolean;
  log: (line: string) => void;
}

/** The witness host of `wpair`: etcd in a namespace of its own, linked to each server host (and nothing else). */
interface WitnessHost {
  ns: string;
  child: ChildProcess;
  /** the etcd key prefix of this round's pair */
  prefix: string;
  leaseMs: number;
  /** per server: its end of the link to the witness, and the witness's address on that link */
  links: { server: 'primary' | 'secondary'; serverNs: string; serverIf: string; witnessAddr: string }[];
}

interface LiveClient extends ClientHandle {
  slot: ClientSlot;
  child: ChildProcess;
  incarnation: number;
  exited: Promise<void>;
}

let nsSeq = 0;

export class Cluster implements ChaosCluster {
  readonly servers: Installation[] = [];
  readonly clientHosts: string[] = [];
  readonly #links: Link[] = [];
  readonly #namespaces: string[] = [];
  readonly #spawned: ChildProcess[] = [];
  readonly #clients = new Map<string, LiveClient>();
  readonly #slots: ClientSlot[] = [];
  readonly #backoff = new Map<ClientSlot, number>();
  #stopping = false;
  #snapTimer: NodeJS.Timeout | undefined;
  #snapFd: number;
  #faultFd: number;
  #tables = new Map<string, LockTable>();
  /** the key family prefix of this round (rounds never share fencing state: each has fresh installations) */
  readonly prefix: string;
  /** clients the nemesis paused on purpose (the stray watcher leaves them alone) */
  readonly paused = new Set<number>();
  #strayTimer: NodeJS.Timeout | undefined;
  #strays = new Map<number, bigint>();
  readonly sqliteDb: string;
  #witness: WitnessHost | undefined;
  /** wpair: clients that exited SPLIT_REFUSED (refused to split), this round */
  splitRefused = 0;
  /** each ended client's exit code (null: a signal), by id */
  readonly exitCodes = new Map<string, number | null>();

  private constructor(readonly opts: ClusterOptions) {
    this.prefix = `r${opts.round}.`;
    fs.mkdirSync(path.join(opts.runDir, 'hist'), { recursive: true });
    this.#snapFd = fs.openSync(path.join(opts.runDir, 'snapshots.jsonl'), 'a');
    this.#faultFd = fs.openSync(path.join(opts.runDir, FAULT_LOG), 'a');
    this.sqliteDb = path.join(this.roundDir, 'counter.db');
  }

  get runDir(): string {
    return this.opts.runDir;
  }
  get config(): ConfigName {
    return this.opts.config;
  }
  get roundDir(): string {
    return path.join(this.opts.runDir, `round-${this.opts.round}`);
  }

  now(): bigint {
    return process.hrtime.bigint();
  }
  stopping(): boolean {
    return this.#stopping;
  }

  recordFault(f: FaultRecord): void {
    fs.writeSync(this.#faultFd, `${JSON.stringify(f)}\n`);
    this.opts.log(`fault ${f.kind}: ${f.target}${f.note ? ` (${f.note})` : ''}`);
  }

  /** Make the namespaces, links and services of one round. */
  static async create(opts: ClusterOptions): Promise<Cluster> {
    const c = new Cluster(opts);
    try {
      await c.#build();
    } catch (e) {
      await c.teardown();
      throw e;
    }
    return c;
  }

  #ns(role: string): string {
    const name = `jdlsc${process.pid % 100000}-${nsSeq}-${role}`;
    ip(['netns', 'add', name]);
    this.#namespaces.push(name);
    ip(['-n', name, 'link', 'set', 'lo', 'up']);
    return name;
  }

  async #build(): Promise<void> {
    fs.mkdirSync(this.roundDir, { recursive: true, mode: 0o755 });
    nsSeq++;
    const pair = this.opts.config === 'pair' || this.opts.config === 'wpair';
    const serverNs: Record<string, string> = { primary: this.#ns('p') };
    if (pair) serverNs['secondary'] = this.#ns('s');
    for (let i = 0; i < 3; i++) this.clientHosts.push(this.#ns(`c${i + 1}`));
    let linkNo = 0;
    for (const [server, sns] of Object.entries(serverNs) as ['primary' | 'secondary', string][]) {
      for (const ch of this.clientHosts) {
        const n = linkNo++;
        const tag = `${process.pid % 10000}${nsSeq % 100}${n}`;
        const sIf = `jcs${tag}`;
        const cIf = `jcc${tag}`;
        ip(['link', 'add', 'name', sIf, 'netns', sns, 'type', 'veth', 'peer', 'name', cIf, 'netns', ch]);
        const serverAddr = `10.233.${n}.1`;
        const clientAddr = `10.233.${n}.2`;
        ip(['-n', sns, 'addr', 'add', `${serverAddr}/30`, 'dev', sIf]);
        ip(['-n', ch, 'addr', 'add', `${clientAddr}/30`, 'dev', cIf]);
        ip(['-n', sns, 'link', 'set', sIf, 'up']);
        ip(['-n', ch, 'link', 'set', cIf, 'up']);
        this.#links.push({ clientHost: ch, server, clientIf: cIf, serverAddr, clientAddr });
      }
    }
    if (this.opts.config === 'wpair') {
      // The witness host: linked to each server host only (the clients never talk to etcd).
      const wns = this.#ns('w');
      const links: WitnessHost['links'] = [];
      for (const [server, sns] of Object.entries(serverNs) as ['primary' | 'secondary', string][]) {
        const n = linkNo++;
        const tag = `${process.pid % 10000}${nsSeq % 100}${n}`;
        const sIf = `jcw${tag}`;
        const wIf = `jcx${tag}`;
        ip(['link', 'add', 'name', sIf, 'netns', sns, 'type', 'veth', 'peer', 'name', wIf, 'netns', wns]);
        ip(['-n', sns, 'addr', 'add', `10.233.${n}.2/30`, 'dev', sIf]);
        ip(['-n', wns, 'addr', 'add', `10.233.${n}.1/30`, 'dev', wIf]);
        ip(['-n', sns, 'link', 'set', sIf, 'up']);
        ip(['-n', wns, 'link', 'set', wIf, 'up']);
        links.push({ server, serverNs: sns, serverIf: sIf, witnessAddr: `10.233.${n}.1` });
      }
      const prefix = `/jdls/chaos-${process.pid}-r${this.opts.round}`;
      const child = await this.#startEtcd(wns, links[0]?.witnessAddr ?? '127.0.0.1');
      this.#witness = { ns: wns, child, prefix, leaseMs: this.opts.witnessLeaseMs ?? WITNESS_LEASE_MS, links };
    }
    const settings: Record<string, unknown> = {
      keepaliveMs: this.opts.keepaliveMs,
      // Small enough that floods and exhaustion reach the limits quickly.
      maxConnections: 256,
    };
    const startArgs = this.opts.config === 'oslock' ? ['-ibD'] : this.opts.config === 'port' ? ['-ibP', '-t0.05'] : ['-ib', '-t0.05'];
    for (const [server, sns] of Object.entries(serverNs) as ['primary' | 'secondary', string][]) {
      const w = this.#witness;
      const wl = w?.links.find((l) => l.server === server);
      const own = w && wl && !this.opts.witnessOff ? { ...settings, witness: { endpoints: [`http://${wl.witnessAddr}:${ETCD_CLIENT_PORT}`], prefix: w.prefix, leaseMs: w.leaseMs, name: server } } : settings;
      const inst = new Installation(server, sns, path.join(this.roundDir, server), startArgs, this.opts.config !== 'oslock', own, this.opts.serviceEnv ?? {});
      this.servers.push(inst);
      const r = await inst.jdls(startArgs);
      if (r.code !== 0) throw new Error(`jdls ${startArgs.join(' ')} on ${server} failed (${r.code}): ${r.stdout}${r.stderr}\n${inst.logs()}`);
      if (w && server === 'primary' && !this.opts.witnessOff) {
        // The primary leads before the secondary starts (else which one
        // takes the key first is a race): every round begins alike.
        const deadline = Date.now() + 30_000;
        while ((await this.leader()) !== 'primary') {
          if (Date.now() > deadline) throw new Error(`the primary did not take the witness's leader key within 30 s\n${inst.logs()}`);
          await sleep(100);
        }
      }
    }
    if (this.opts.misroute) {
      // The teeth test: a second, unrelated service on the primary host's
      // client links (another installation, another table) - half the
      // remote clients are sent there, as a mistyped JDLS would.
      const inst = new Installation('secondary', serverNs['primary'] ?? '', path.join(this.roundDir, 'unrelated'), startArgs, true, { ...settings, port: SERVICE_PORT + 1 }, this.opts.serviceEnv ?? {});
      inst.port = SERVICE_PORT + 1;
      this.servers.push(inst);
      const r = await inst.jdls(startArgs);
      if (r.code !== 0) throw new Error(`unrelated service failed (${r.code}): ${r.stdout}${r.stderr}`);
    }
    this.#snapTimer = setInterval(() => this.#snapshot(), 250);
    this.#strayTimer = setInterval(() => this.#resumeStrays(), 250);
  }

  server(name: 'primary' | 'secondary'): Installation {
    const s = this.servers.find((x) => x.name === name && x.port === SERVICE_PORT);
    if (!s) throw new Error(`no ${name} server in this configuration`);
    return s;
  }

  /** etcd in the witness namespace; resolves once it takes requests. */
  async #startEtcd(wns: string, advertise: string): Promise<ChildProcess> {
    const data = path.join(this.roundDir, 'etcd');
    const peer = 'http://127.0.0.1:2380';
    const child = this.spawnIn(wns, 'etcd', ETCD, [
      '--name', 'w', '--data-dir', data,
      '--listen-client-urls', `http://0.0.0.0:${ETCD_CLIENT_PORT}`,
      '--advertise-client-urls', `http://${advertise}:${ETCD_CLIENT_PORT}`,
      '--listen-peer-urls', peer, '--initial-advertise-peer-urls', peer,
      '--initial-cluster', `w=${peer}`, '--initial-cluster-state', 'new',
    ], { ...process.env });
    let err = '';
    child.stderr?.on('data', (d: Buffer) => {
      if (err.length < 200_000) err += d.toString('utf8');
    });
    const deadline = Date.now() + 30_000;
    while (!/ready to serve client requests/.test(err)) {
      if (child.exitCode !== null || child.signalCode !== null) throw new Error(`etcd exited: ${err.slice(-2000)}`);
      if (Date.now() > deadline) throw new Error(`etcd not ready within 30 s: ${err.slice(-2000)}`);
      await sleep(50);
    }
    this.opts.log(`witness: etcd (pid ${child.pid}) ready in ${wns}`);
    return child;
  }

  /** wpair: the witness's pid (undefined: no witness). */
  get witnessPid(): number | undefined {
    return this.#witness?.child.pid;
  }

  get witnessLeaseMs(): number {
    return this.#witness?.leaseMs ?? 0;
  }

  /** wpair: which server holds the leader key now, per etcd (undefined: none, or etcd did not answer within 3 s). */
  async leader(): Promise<'primary' | 'secondary' | undefined> {
    const w = this.#witness;
    if (!w) return undefined;
    if (this.opts.witnessOff) return this.servers.find((s) => s.up)?.name;
    const r = await runToEnd('ip', ['netns', 'exec', w.ns, ETCDCTL, `--endpoints=http://127.0.0.1:${ETCD_CLIENT_PORT}`, '--command-timeout=2s', 'get', `${w.prefix}/leader`, '--print-value-only'], { ...process.env, ETCDCTL_API: '3' }, 3000);
    const v = r.code === 0 ? r.stdout.trim() : '';
    return v === 'primary' || v === 'secondary' ? v : undefined;
  }

  /** wpair: a server host's link to the witness down or up (its end; silence, no RST). */
  setWitnessLink(server: 'primary' | 'secondary', up: boolean): void {
    const l = this.#witness?.links.find((x) => x.server === server);
    if (!l) throw new Error(`no witness link of ${server}`);
    ip(['-n', l.serverNs, 'link', 'set', l.serverIf, up ? 'up' : 'down']);
  }

  /** The service's own processes of a server (not the clients, which share the primary's JBCRELEASEDIR in their environment). */
  serverPids(s: ServerHandle): number[] {
    const clients = new Set([...this.#clients.values()].map((c) => c.pid));
    return processesOf(s.dir).filter((p) => !clients.has(p) && !cmdline(p).includes('node-worker'));
  }

  /** Start a server again after it was killed (wpair): a fresh table, the same jdls.yaml (it comes back as a follower). */
  async restartServer(s: Installation): Promise<RunResult> {
    const t = this.#tables.get(s.dir);
    if (t) {
      t.close();
      this.#tables.delete(s.dir);
    }
    const shm = tablePath(s.dir);
    fs.rmSync(shm, { force: true });
    fs.rmSync(markerPath(shm), { force: true });
    const r = await s.jdls(s.startArgs);
    if (r.code === 0) s.up = true;
    return r;
  }

  serverAddr(server: 'primary' | 'secondary', clientHost: string): string {
    const l = this.#links.find((x) => x.server === server && x.clientHost === clientHost);
    if (!l) throw new Error(`no link between ${clientHost} and ${server}`);
    return l.serverAddr;
  }

  setLink(clientHost: string, server: 'primary' | 'secondary', up: boolean): void {
    const l = this.#links.find((x) => x.server === server && x.clientHost === clientHost);
    if (!l) throw new Error(`no link between ${clientHost} and ${server}`);
    ip(['-n', clientHost, 'link', 'set', l.clientIf, up ? 'up' : 'down']);
  }

  spawnIn(ns: string | null, label: string, cmd: string, args: string[], env: NodeJS.ProcessEnv): ChildProcess {
    const child = ns
      ? spawn('ip', ['netns', 'exec', ns, cmd, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] })
      : spawn(cmd, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    child.on('error', (e) => this.opts.log(`${label}: ${e.message}`));
    // Keep the pipes drained (a full pipe would stall the program); keep the tail for errors.
    let tail = '';
    const keep = (d: Buffer): void => {
      tail = (tail + d.toString('utf8')).slice(-2000);
    };
    child.stdout?.on('data', keep);
    child.stderr?.on('data', keep);
    child.on('exit', (code, sig) => {
      if (code !== 0 && code !== null && code !== 3 && code !== EXIT_SPLIT_REFUSED && !this.#stopping) this.opts.log(`${label} (pid ${child.pid}) exited ${code}${sig ? ` ${sig}` : ''}: ${tail.trim().split('\n').slice(-3).join(' | ')}`);
    });
    this.#spawned.push(child);
    return child;
  }

  clients(): ClientHandle[] {
    return [...this.#clients.values()].filter((c) => c.alive());
  }

  /** The JDLS value of a remote slot (null: a direct client, JDLS unset). */
  #jdlsFor(slot: ClientSlot, hostNs: string): string | null {
    const to = (name: 'primary' | 'secondary'): string => `${slot.loopback ? '127.0.0.1' : this.serverAddr(name, hostNs)},${SERVICE_PORT}`;
    const timeout = `TIMEOUT=${this.opts.clientTimeoutS}`;
    switch (slot.path) {
      case 'lib-direct':
      case 'shim-direct':
      case 'py-direct':
      case 'sqlite-direct':
        return null;
      case 'lib-pair': {
        const p = this.servers.find((s) => s.name === 'primary');
        const s = this.servers.find((x) => x.name === 'secondary');
        // The guide's clients never reconnect to a failed server: once the
        // primary is gone, new incarnations start on the secondary alone
        // (what the running clients promoted), never on a restarted primary.
        if (this.opts.config === 'wpair') {
          // With a witness the client puts the leader first whatever the
          // order; SERVER must answer at connect, so a server that is down
          // (killed, not yet restarted) goes second.
          return p && !p.up ? `SERVER=${to('secondary')},SERVER2=${to('primary')},${timeout}` : `SERVER=${to('primary')},SERVER2=${to('secondary')},${timeout}`;
        }
        if (p && !p.up) return `SERVER=${to('secondary')},${timeout}`;
        if (s && !s.up) return `SERVER=${to('primary')},${timeout}`;
        return `SERVER=${to('primary')},SERVER2=${to('secondary')},${timeout}`;
      }
      case 'lib-oslocks':
        return `SERVER=${to('primary')},OSLOCKS,${timeout}`;
      default:
        if (this.opts.misroute && typeof slot.host === 'number' && slot.host % 2 === 1) {
          const l = this.#links.find((x) => x.server === 'primary' && x.clientHost === hostNs);
          return `SERVER=${l?.serverAddr},${SERVICE_PORT + 1},${timeout}`;
        }
        return `SERVER=${to('primary')},${timeout}`;
    }
  }

  /** Hosts ('*': all) whose unfenced remote clients may not start now (holdUnfenced). */
  readonly #unfencedHold = new Map<string, number>();

  /**
   * While a fault that may take remote locks away is on, no unfenced remote
   * client may start where it would hit: the nemesis killed those clients
   * first (their late writes cannot be refused), and a new incarnation that
   * connected before the fault began would be in the same place. Returns
   * the release.
   */
  holdUnfenced(host = '*'): () => void {
    this.#unfencedHold.set(host, (this.#unfencedHold.get(host) ?? 0) + 1);
    let done = false;
    return () => {
      if (done) return;
      done = true;
      const n = (this.#unfencedHold.get(host) ?? 1) - 1;
      if (n <= 0) this.#unfencedHold.delete(host);
      else this.#unfencedHold.set(host, n);
    };
  }

  /** Start (or restart) the client of a slot. */
  #startClient(slot: ClientSlot, incarnation: number): void {
    if (this.#stopping) return;
    const primary = this.server('primary');
    const hostNs = slot.host === 'primary' ? primary.ns : (this.clientHosts[slot.host] ?? '');
    const unfencedRemote = !slot.path.startsWith('lib-') && !slot.path.endsWith('-direct');
    if (unfencedRemote && (this.#unfencedHold.has('*') || this.#unfencedHold.has(hostNs))) {
      setTimeout(() => this.#startClient(slot, incarnation), 100);
      return;
    }
    const id = `${this.prefix}${slot.base}.${incarnation}`;
    const seed = (this.opts.seed * 1_000_003 + this.opts.round * 7919 + this.#slots.indexOf(slot) * 104_729 + incarnation * 31) >>> 0;
    const jdls = this.#jdlsFor(slot, hostNs);
    // JDLS_LOCKDIR: the shim routes only locks on record-lock files of this
    // directory (the runtime's lockDir) to the table or the server.
    const env: NodeJS.ProcessEnv = { ...primary.env, JDLS_LOCKDIR: path.dirname(this.shimDataFile) };
    if (jdls !== null) env['JDLS'] = jdls;
    const port = 100 + this.#slots.indexOf(slot);
    if (this.opts.config === 'port') env['JBCPORTNO'] = String(port);
    const host = slot.host === 'primary' ? 'primary' : `c${slot.host + 1}`;
    let child: ChildProcess;
    const family = slot.path === 'lib-oslocks' ? 'os' : 'rec';
    if (slot.path.startsWith('lib-')) {
      const spec = {
        id, path: slot.path, runDir: this.opts.runDir, host, seed, family, keyPrefix: this.prefix, hot: 3, cold: this.opts.coldKeys,
        releaseDir: primary.dir, port: this.opts.config === 'port' ? port : undefined, pingMs: Math.max(100, Math.floor(this.opts.keepaliveMs / 4)),
      };
      child = this.spawnIn(hostNs, id, process.execPath, [NODE_WORKER, JSON.stringify(spec)], env);
    } else if (slot.path.startsWith('shim-')) {
      env['LD_PRELOAD'] = shimPath();
      // The C API's record lock of key hex(X) is byte X's lock only where
      // both name one table entry; an OS-lock server hashes a record key to
      // another byte (a record "1a" and byte 0x1a are two locks there, as
      // for the kernel) - so no C-API ops against one.
      if (this.opts.config === 'oslock') env['CHAOS_SHIM_SKIP'] = `${env['CHAOS_SHIM_SKIP'] ?? ''}C`;
      child = this.spawnIn(hostNs, id, CHAOS_SHIM, [this.opts.runDir, id, String(seed), host, this.shimDataFile, '12', '0', `${this.prefix}fcntl`], env);
    } else if (slot.path.startsWith('py-')) {
      env['LD_PRELOAD'] = shimPath();
      child = this.spawnIn(hostNs, id, 'python3', [PYTHON_WORKER, JSON.stringify({ id, runDir: this.opts.runDir, host, seed, dataFile: this.shimDataFile, nkeys: 12, keyPrefix: this.prefix })], env);
    } else {
      env['LD_PRELOAD'] = shimPath();
      child = this.spawnIn(hostNs, id, process.execPath, [SQLITE_WORKER, JSON.stringify({ id, runDir: this.opts.runDir, host, db: this.sqliteDb, key: `sqlite:${this.prefix}counter` })], env);
    }
    const pid = child.pid ?? 0;
    const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()));
    let tail = '';
    child.stderr?.on('data', (d: Buffer) => {
      tail = (tail + d.toString('utf8')).slice(-1000);
    });
    const servers: ('primary' | 'secondary')[] = slot.path === 'lib-pair' ? ['primary', 'secondary'] : ['primary'];
    const remote = !slot.path.endsWith('-direct');
    // Fenced: the library's grants carry tokens the store can check (the
    // table's, and on a lock server the OS-lock counter's). The shim's
    // fcntl route and sqlite3 present none: the nemesis never
    // pauses or cuts such a client while it may hold (its late write could
    // not be refused - that is what fencing is for, not a lock-service fault).
    const fenced = slot.path.startsWith('lib-');
    const c: LiveClient = {
      id, path: slot.path, host: hostNs, pid, remote, fenced, servers, slot, child, incarnation, exited,
      alive: () => running(pid),
      startedAt: Date.now(),
      pauseNextHold: slot.path.startsWith('lib-') || slot.path.startsWith('shim-') ? () => kill(pid, 'SIGUSR2') : undefined,
    };
    this.#clients.set(id, c);
    const born = Date.now();
    child.on('exit', (code) => {
      this.#clients.delete(id);
      this.exitCodes.set(id, code);
      if (code === EXIT_SPLIT_REFUSED && !this.#stopping) {
        // Expected under a partial failure of a witnessed pair: the client
        // lost its primary and the witness kept the other server a follower,
        // so it gave up rather than lock on two servers. Recorded (it takes
        // nobody's lock: its locks went with its exit), and restarted below.
        this.splitRefused++;
        const why = tail.trim().split('\n').filter((l) => /SPLIT_REFUSED/.test(l)).pop() ?? tail.trim().split('\n').pop() ?? '';
        this.recordFault({ kind: 'split-refused', target: `client ${id} (pid ${pid}) exited ${EXIT_SPLIT_REFUSED} (SPLIT_REFUSED)`, start: this.now().toString(), affects: [], note: why.slice(0, 300) });
      }
      // A client that cannot start (its server unreachable behind a cut
      // link) is retried with a growing delay, not in a tight loop.
      const prev = this.#backoff.get(slot) ?? 50;
      const delay = Date.now() - born < 1000 ? Math.min(2000, prev * 2) : 50;
      this.#backoff.set(slot, delay);
      if (!this.#stopping) setTimeout(() => this.#startClient(slot, incarnation + 1), delay);
    });
  }

  /** The shim clients' record-lock file (made here, in the primary's lock directory). */
  get shimDataFile(): string {
    return path.join(this.server('primary').dir, 'jbase', SHIM_DATA_FILE);
  }

  startClients(): void {
    const data = this.shimDataFile;
    fs.mkdirSync(path.dirname(data), { recursive: true });
    fs.closeSync(fs.openSync(data, 'a', 0o666));
    for (const slot of planFor(this.opts.config)) {
      if (slot.path.startsWith('shim-') && !fs.existsSync(CHAOS_SHIM)) continue;
      if (slot.path.startsWith('sqlite-') && !fs.existsSync(SQLITE_WORKER)) continue;
      this.#slots.push(slot);
      this.#startClient(slot, 1);
    }
  }

  /** A stopped client nobody paused on purpose (a late self-pause of pauseNextHold): resumed after twice the keep-alive, recorded as a pause. */
  #resumeStrays(): void {
    const now = this.now();
    for (const c of this.#clients.values()) {
      if (this.paused.has(c.pid) || !stopped(c.pid)) {
        this.#strays.delete(c.pid);
        continue;
      }
      const since = this.#strays.get(c.pid);
      if (since === undefined) {
        this.#strays.set(c.pid, now);
        // Recorded when first seen: from here on its hold may be taken away.
        this.recordFault({ kind: 'pause-holder', target: `client ${c.id} (pid ${c.pid}), stopped itself at a hold`, start: now.toString(), affects: [c.id] });
      } else if (now - since > BigInt(this.opts.keepaliveMs * 2) * 1_000_000n) {
        kill(c.pid, 'SIGCONT');
        this.#strays.delete(c.pid);
      }
    }
  }

  #table(s: Installation): LockTable | undefined {
    if (!s.hasTable) return undefined;
    let t = this.#tables.get(s.dir);
    if (!t) {
      try {
        t = LockTable.open({ releaseDir: s.dir });
      } catch {
        return undefined;
      }
      this.#tables.set(s.dir, t);
    }
    return t;
  }

  /** The servers' own records: every granted lock of each table, one line per server and sample. */
  #snapshot(): void {
    for (const s of this.servers) {
      // A killed server's table is frozen where the kill left it: not its records any more.
      const table = s.up ? this.#table(s) : undefined;
      if (!table) continue;
      const holders: { key: string; mode: 'read' | 'write'; owner: string; token: string }[] = [];
      try {
        for (const batch of table.rows()) {
          for (const r of batch) {
            if (r.state !== 'held') continue;
            const name = r.key.toString('latin1');
            const key = r.inode === REC_FILE.inode && r.dev === REC_FILE.dev ? `rec:${this.prefix}${name}` : `raw:${this.prefix}${r.inode}/${r.dev}/${name}`;
            const owner = this.opts.config === 'port' ? `${r.ip}/port${r.port}` : `${r.ip}/${r.pid}/${r.ownerPid}/${r.ownerTid}/${r.conn}`;
            holders.push({ key, mode: r.mode === 'read' ? 'read' : 'write', owner, token: r.token.toString() });
          }
        }
      } catch {
        continue;
      }
      if (holders.length > 0) fs.writeSync(this.#snapFd, `${JSON.stringify({ t: this.now().toString(), server: s.port === SERVICE_PORT ? s.name : 'unrelated', holders })}\n`);
    }
  }

  /**
   * End of the round: heal what the nemesis left, ask every client to finish
   * (SIGTERM), and return the clients that did not end within the bound
   * (liveness: "nothing hangs past its bound once faults heal").
   */
  async stopClients(boundMs: number): Promise<{ id: string; pid: number }[]> {
    if (this.#witness) {
      kill(this.#witness.child.pid ?? 0, 'SIGCONT');
      for (const l of this.#witness.links) {
        try {
          ip(['-n', l.serverNs, 'link', 'set', l.serverIf, 'up']);
        } catch {
          /* namespace gone */
        }
      }
    }
    for (const l of this.#links) {
      try {
        ip(['-n', l.clientHost, 'link', 'set', l.clientIf, 'up']);
      } catch {
        /* namespace gone */
      }
    }
    this.#stopping = true;
    const live = [...this.#clients.values()];
    for (const c of live) {
      kill(c.pid, 'SIGCONT');
      kill(c.pid, 'SIGTERM');
    }
    const hung: { id: string; pid: number }[] = [];
    // One timer for the whole bound, cleared at the end (a pending sleep per
    // client kept the runner alive for the rest of the bound after its report).
    let timer: NodeJS.Timeout | undefined;
    const expired = new Promise<boolean>((resolve) => {
      timer = setTimeout(() => resolve(false), boundMs);
    });
    for (const c of live) {
      const done = await Promise.race([c.exited.then(() => true), expired]);
      if (!done && running(c.pid)) hung.push({ id: c.id, pid: c.pid });
    }
    clearTimeout(timer);
    for (const h of hung) kill(h.pid, 'SIGKILL');
    // The brokers of the preloaded clients (one per client host and user,
    // docs/broker.md) are the clients' side: they end with them (SIGTERM;
    // they would exit on their own once idle).
    for (const s of this.servers) for (const pid of processesOf(s.dir)) if (cmdline(pid).includes('--broker')) kill(pid, 'SIGTERM');
    return hung;
  }

  /** After the clients ended: locks still held in a table, by owners that are all gone (waits up to boundMs for the servers and the monitor's tidy-up). */
  async leftoverLocks(boundMs: number): Promise<string[]> {
    const deadline = Date.now() + boundMs;
    let left: string[] = [];
    do {
      left = [];
      for (const s of this.servers) {
        // A server killed for good (a pair's failover) is not cleaned up by
        // anybody: its table goes with the installation.
        const table = s.up ? this.#table(s) : undefined;
        if (!table) continue;
        try {
          for (const batch of table.rows()) for (const r of batch) left.push(`${s.name}: ${r.state} ${r.mode} lock on (${r.inode}, ${r.dev}) "${r.key.toString('latin1')}" of pid ${r.pid} (owner ${r.ownerPid}/${r.ownerTid}, conn ${r.conn}) after every client ended`);
        } catch {
          /* unmapped */
        }
      }
      if (left.length === 0) return [];
      await sleep(200);
    } while (Date.now() < deadline);
    return left;
  }

  /** Stop the services, kill whatever is left by pid, remove the namespaces; returns what had to be killed or would not go. */
  async teardown(): Promise<string[]> {
    this.#stopping = true;
    if (this.#snapTimer) clearInterval(this.#snapTimer);
    if (this.#strayTimer) clearInterval(this.#strayTimer);
    const leftovers: string[] = [];
    for (const c of this.#clients.values()) kill(c.pid, 'SIGKILL');
    for (const t of this.#tables.values()) t.close();
    this.#tables.clear();
    for (const s of this.servers) {
      if (processesOf(s.dir).length > 0) {
        const r = await s.jdls(['-k']);
        if (r.code !== 0 && s.up) this.opts.log(`jdls -k on ${s.name}: ${r.code} ${r.stdout}${r.stderr}`);
      }
    }
    for (const s of this.servers) {
      for (let round = 0; round < 40; round++) {
        const left = processesOf(s.dir);
        if (left.length === 0) break;
        if (round === 20) leftovers.push(...left.map((p) => `process ${p} of ${s.name} still running after jdls -k: ${cmdline(p)}`));
        if (round >= 20) for (const p of left) kill(p, 'SIGKILL');
        await sleep(100);
      }
    }
    for (const child of this.#spawned) if (child.pid && running(child.pid)) kill(child.pid, 'SIGKILL');
    for (const ns of this.#namespaces) {
      let pids: number[] = [];
      try {
        pids = ip(['netns', 'pids', ns]).split('\n').filter(Boolean).map(Number);
      } catch {
        /* gone */
      }
      for (const p of pids) {
        leftovers.push(`process ${p} still inside namespace ${ns}: ${cmdline(p)}`);
        kill(p, 'SIGKILL');
      }
    }
    await sleep(100);
    for (const ns of this.#namespaces) {
      try {
        ip(['netns', 'del', ns]);
      } catch (e) {
        leftovers.push(`namespace ${ns} could not be removed: ${(e as Error).message}`);
      }
    }
    for (const s of this.servers) {
      const shm = tablePath(s.dir);
      fs.rmSync(shm, { force: true });
      fs.rmSync(markerPath(shm), { force: true });
    }
    fs.closeSync(this.#snapFd);
    fs.closeSync(this.#faultFd);
    return leftovers;
  }

  /** Namespaces and veth links of this round still present (cleanup check after teardown). */
  remaining(): string[] {
    let list: string[] = [];
    try {
      list = ip(['netns', 'list']).split('\n').map((l) => l.split(' ')[0] ?? '');
    } catch {
      /* none */
    }
    return this.#namespaces.filter((n) => list.includes(n)).map((n) => `namespace ${n} remains`);
  }
}
