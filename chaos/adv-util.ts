// adv-util.ts - what the adversaries share: driving an adv-proc process
// (chaos/fixtures/adv-proc.ts) by JSON lines, bounded waits, liveness of
// pids, and whether another fault overlapped an adversary's window (then a
// server death is not the adversary's doing).
//
// Owns: starting the fixture through the cluster (so it runs in the right
// namespace and the run kills it at the end even if we do not), killing it
// by its pid, and the timeouts of every exchange with it.
import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import type { ChaosCluster, ServerHandle } from './cluster-types.js';
import { FAULT_LOG, type FaultRecord } from './faults.js';

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** dist/chaos/fixtures/adv-proc.js, next to this module once compiled. */
export const ADV_PROC = fileURLToPath(new URL('./fixtures/adv-proc.js', import.meta.url));

/** One answer of adv-proc: fields depend on the command. */
export type Answer = Record<string, unknown> & { id: number };

export function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p.finally(() => clearTimeout(timer)),
    new Promise<never>((_r, reject) => { timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms); }),
  ]);
}

let sockSeq = 0;

/**
 * A running adv-proc, in a namespace of the cluster, driven over a Unix
 * socket in the run directory (reachable from every namespace: network
 * namespaces do not change the file system). Not stdin: the cluster's
 * spawnIn owes us no stdin pipe (cluster.ts gives none), only a pid.
 */
export class AdvProc {
  readonly child: ChildProcess;
  readonly pid: number;
  readonly exited: Promise<void>;
  readonly #server: net.Server;
  readonly #sockPath: string;
  readonly #conn: Promise<net.Socket>;
  #next = 1;
  #waiting = new Map<number, (a: Answer) => void>();
  #stderr = '';

  private constructor(child: ChildProcess, server: net.Server, sockPath: string) {
    this.child = child;
    this.#server = server;
    this.#sockPath = sockPath;
    if (child.pid === undefined) throw new Error('adv-proc did not start');
    this.pid = child.pid;
    this.exited = new Promise((resolve) => {
      if (child.exitCode !== null || child.signalCode !== null) resolve();
      else child.once('exit', () => resolve());
    });
    child.stderr?.on('data', (d: Buffer) => { if (this.#stderr.length < 4000) this.#stderr += d.toString(); });
    this.#conn = new Promise<net.Socket>((resolve, reject) => {
      server.once('connection', (s: net.Socket) => {
        s.on('error', () => {});
        readline.createInterface({ input: s }).on('line', (line) => this.#onLine(line));
        resolve(s);
      });
      void this.exited.then(() => reject(new Error(`adv-proc ${this.pid} ended before it connected${this.#stderr ? `: ${this.#stderr.trim().slice(-500)}` : ''}`)));
    });
    this.#conn.catch(() => {});
  }

  /** Start adv-proc in `ns` (null: the root namespace). */
  static async start(cluster: ChaosCluster, ns: string | null, label: string, env: NodeJS.ProcessEnv): Promise<AdvProc> {
    // A socket path is at most 107 bytes: the run directory's if it fits.
    const name = `adv-${process.pid}-${++sockSeq}.sock`;
    const sockPath = path.join(cluster.runDir, name).length < 100 ? path.join(cluster.runDir, name) : path.join(os.tmpdir(), name);
    fs.rmSync(sockPath, { force: true });
    const server = net.createServer();
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(sockPath, () => resolve());
    });
    let child: ChildProcess;
    try {
      child = cluster.spawnIn(ns, label, process.execPath, [ADV_PROC, sockPath], env);
    } catch (e) {
      server.close();
      fs.rmSync(sockPath, { force: true });
      throw e;
    }
    if (child.pid === undefined) {
      server.close();
      fs.rmSync(sockPath, { force: true });
      throw new Error(`${label}: the process did not start`);
    }
    return new AdvProc(child, server, sockPath);
  }

  #onLine(line: string): void {
    let a: Answer;
    try {
      a = JSON.parse(line) as Answer;
    } catch {
      return;
    }
    const w = this.#waiting.get(a.id);
    this.#waiting.delete(a.id);
    w?.(a);
  }

  get stderr(): string {
    return this.#stderr;
  }

  /** Send one command; its answer, or a rejection after timeoutMs (the process may hang: the caller kills it). */
  call(cmd: Record<string, unknown> & { op: string }, timeoutMs: number): Promise<Answer> {
    const id = this.#next++;
    const p = new Promise<Answer>((resolve, reject) => {
      this.#waiting.set(id, resolve);
      void this.exited.then(() => reject(new Error(`adv-proc ${this.pid} ended before answering ${cmd.op}${this.#stderr ? `: ${this.#stderr.trim().slice(-500)}` : ''}`)));
      this.#conn.then((s) => s.write(`${JSON.stringify({ ...cmd, id })}\n`), reject);
    });
    return withTimeout(p, timeoutMs, `adv-proc ${cmd.op}`).finally(() => this.#waiting.delete(id));
  }

  /** Ask it to exit; SIGKILL by pid if it has not within 1 s; resolves once it is gone. */
  async stop(): Promise<void> {
    void this.#conn.then((s) => s.end(`${JSON.stringify({ op: 'exit', id: 0 })}\n`), () => undefined);
    try {
      await withTimeout(this.exited, 1000, 'adv-proc exit');
    } catch {
      try {
        process.kill(this.pid, 'SIGKILL');
      } catch {
        /* gone */
      }
      await withTimeout(this.exited, 5000, 'adv-proc SIGKILL').catch(() => undefined);
    }
    void this.#conn.then((s) => s.destroy(), () => undefined);
    this.#server.close();
    fs.rmSync(this.#sockPath, { force: true });
  }
}

/** A live process (not a zombie), as jdls_pid_alive judges it from this namespace. */
export function pidAlive(pid: number | undefined): boolean {
  if (!pid) return false;
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const state = stat.charAt(stat.lastIndexOf(')') + 2);
    return state !== '' && state !== 'Z' && state !== 'X';
  } catch {
    return false;
  }
}

/** The server to attack: the primary if up, else any that is up. */
export function targetServer(cluster: ChaosCluster, needTable = false): ServerHandle | undefined {
  const up = cluster.servers.filter((s) => s.up && (!needTable || s.hasTable));
  return up.find((s) => s.name === 'primary') ?? up[0];
}

/** Client hosts that reach `server`: the attacker's and, if there is one, another for the probe. */
export function pickHosts(cluster: ChaosCluster, rng: () => number): { attacker: string; other: string; distinct: boolean } {
  const hosts = cluster.clientHosts;
  if (hosts.length === 0) throw new Error('the cluster has no client hosts');
  const i = Math.floor(rng() * hosts.length);
  const attacker = hosts[i] as string;
  const rest = hosts.filter((h) => h !== attacker);
  const other = rest.length ? (rest[Math.floor(rng() * rest.length)] as string) : attacker;
  return { attacker, other, distinct: rest.length > 0 };
}

/**
 * Faults of others (not `mine`) that overlap [from, now] in faults.jsonl: a
 * server death in the window may be theirs (the nemesis kills lock servers
 * and listeners), so it is not counted against the service.
 */
export function othersFaults(cluster: ChaosCluster, from: bigint, mine: readonly FaultRecord[]): FaultRecord[] {
  let text = '';
  try {
    text = fs.readFileSync(path.join(cluster.runDir, FAULT_LOG), 'utf8');
  } catch {
    return [];
  }
  const own = new Set(mine.map((f) => `${f.kind}\0${f.start}`));
  const out: FaultRecord[] = [];
  for (const line of text.split('\n')) {
    if (!line) continue;
    let f: FaultRecord;
    try {
      f = JSON.parse(line) as FaultRecord;
    } catch {
      continue;
    }
    if (own.has(`${f.kind}\0${f.start}`)) continue;
    const start = BigInt(f.start);
    // A kill has no end: it counts if it began in the window (or just
    // before: the death it caused may show only now); a healed fault counts
    // if it was still on when the window began.
    const on = f.end === undefined ? start >= from - 1_000_000_000n : BigInt(f.end) >= from;
    if (on && start <= cluster.now()) out.push(f);
  }
  return out;
}

/** The server processes now: listener and lock servers. */
export interface ServerSnapshot {
  listener: number | undefined;
  lockServers: number[];
}

export function snapshot(s: ServerHandle): ServerSnapshot {
  return { listener: s.listenerPid(), lockServers: s.lockServerPids() };
}

/**
 * Lock servers of `before` that died abnormally since: the listener logs
 * "lock server process ended" with the code or signal when one ends with a
 * failure or with clients (an idle spare ending normally is not logged and
 * not a death).
 */
export function abnormalLockServerDeaths(s: ServerHandle, before: ServerSnapshot): { pid: number; line: string }[] {
  const gone = before.lockServers.filter((p) => !pidAlive(p));
  if (gone.length === 0) return [];
  let log = '';
  try {
    log = fs.readFileSync(path.join(s.dir, 'jdls-listener.log'), 'utf8');
  } catch {
    /* no log: judge by absence alone below */
  }
  const out: { pid: number; line: string }[] = [];
  for (const pid of gone) {
    const line = log.split('\n').find((l) => l.includes('lock server process ended') && new RegExp(`"pid":${pid}[,}]`).test(l));
    if (line) out.push({ pid, line: line.slice(0, 400) });
  }
  return out;
}
