// server-env.ts - a private installation with a running lock service for
// the server tests: temp JBCRELEASEDIR with its jdls.yaml (port 0 on
// loopback, so tests never collide), `jdls` runs, remote and local client
// processes, and test connections.
//
// Owns: cleanup, pass or fail - every process whose environment names this
// test's JBCRELEASEDIR (the monitor, the listener, its lock-server
// processes, the fixtures: only ever ours, since the directory is unique)
// is killed by pid, then the /dev/shm table and the directory go.
import type { ExecutionContext } from 'ava';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { stringify } from 'yaml';
import { Proc, lockerPath, nodeFixture, withTimeout } from './table-env.js';
import { JDLS, runToEnd, type RunResult } from './cli-env.js';
import { processAlive } from './procscan.js';
import { WireClient } from './wire-client.js';
import { LockTable } from '../../src/locks/table.js';
import { tablePath, markerPath } from '../../src/installation.js';
import type { ServerConfig } from '../../src/server/config.js';
import { findListener } from '../../src/server/state.js';
import { testDir, recordPid } from './installations.js';

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Processes (not this one) whose environment has JBCRELEASEDIR=dir. */
export function processesOf(dir: string): number[] {
  const needle = `JBCRELEASEDIR=${dir}\0`;
  const out: number[] = [];
  for (const name of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(name) || Number(name) === process.pid) continue;
    try {
      if (fs.readFileSync(`/proc/${name}/environ`, 'latin1').includes(needle) && !isZombie(Number(name))) out.push(Number(name));
    } catch {
      /* gone, or a kernel thread */
    }
  }
  return out;
}

const isZombie = (pid: number): boolean => !processAlive(pid);

export const alive = (pid: number): boolean => !isZombie(pid);

function cmdline(pid: number): string {
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean).join(' ');
  } catch {
    return '';
  }
}

export class ServerEnv {
  readonly dir: string;
  readonly env: NodeJS.ProcessEnv;
  readonly shm: string;
  #procs: Proc[] = [];
  #clients: WireClient[] = [];
  #table: LockTable | undefined;

  constructor(t: ExecutionContext, settings: Partial<ServerConfig> = {}) {
    this.dir = testDir('srv');
    this.env = { ...process.env, JBCRELEASEDIR: this.dir };
    delete this.env['JBCPORTNO'];
    delete this.env['JDLS_LOG_LEVEL'];
    this.shm = tablePath(this.dir);
    this.writeConfig(settings);
    t.teardown(() => this.cleanup());
  }

  /** The OS record-lock directory of this installation's server. */
  get lockDir(): string {
    return path.join(this.dir, 'jbase');
  }

  writeConfig(settings: Partial<ServerConfig> | Record<string, unknown>): void {
    // Own port, loopback, and own OS lock directory: tests never meet.
    fs.writeFileSync(path.join(this.dir, 'jdls.yaml'), stringify({ port: 0, bind: '127.0.0.1', lockDir: this.lockDir, ...settings }));
  }

  /** The table (opened on first use, after the monitor made it). */
  get table(): LockTable {
    this.#table ??= LockTable.open({ releaseDir: this.dir });
    return this.#table;
  }

  /** The running listener's port (from its pid file / the header). */
  get port(): number {
    const l = findListener(this.dir);
    if (!l) throw new Error('no listener running');
    return l.port;
  }

  /** The running listener's pid, once it listens (its pid file names a port). */
  listenerPid(): number | undefined {
    const l = findListener(this.dir);
    return l && l.port > 0 ? l.pid : undefined;
  }

  /** Lock-server processes of this installation. */
  lockServers(): number[] {
    return processesOf(this.dir).filter((p) => cmdline(p).includes('(lock server)'));
  }

  /** Run jdls to completion (bounded). */
  jdls(args: string[], timeoutMs = 30_000): Promise<RunResult> {
    return runToEnd(process.execPath, [JDLS, ...args], this.env, timeoutMs);
  }


  /** `jdls -ib` (or the args given); throws unless it succeeded. */
  async start(args: string[] = ['-ib']): Promise<RunResult> {
    const r = await this.jdls(args);
    if (r.code !== 0) throw new Error(`jdls ${args.join(' ')} failed (${r.code}): ${r.stdout} ${r.stderr}\n${this.logs()}`);
    return r;
  }

  logs(): string {
    let s = '';
    for (const f of ['jdls-listener.log', 'jdls-monitor.log']) {
      try {
        s += `--- ${f}\n${fs.readFileSync(path.join(this.dir, f), 'utf8')}`;
      } catch {
        /* none */
      }
    }
    return s;
  }

  /** A test connection (HELLO done), closed at teardown. */
  async client(hello: Parameters<typeof WireClient.connect>[1] = {}): Promise<WireClient> {
    const c = await WireClient.connect(this.port, hello);
    this.#clients.push(c);
    return c;
  }

  /** A connection without HELLO, closed at teardown. */
  async raw(): Promise<WireClient> {
    const c = await WireClient.raw(this.port);
    this.#clients.push(c);
    return c;
  }

  remote(args: string[]): Proc {
    return this.#spawn(`remote-locker ${args.join(' ')}`, process.execPath, [nodeFixture('remote-locker'), args[0] ?? '', String(this.port), ...args.slice(1)]);
  }

  /** jdls-locker (C, direct in the shm table), default file (4242, 7). */
  locker(args: string[]): Proc {
    return this.#spawn(`jdls-locker ${args.join(' ')}`, lockerPath, args);
  }

  /** node-locker (test/fixtures/node-locker.ts): LockTable, the table directly. */
  nodeLocker(args: string[]): Proc {
    return this.#spawn(`node-locker ${args.join(' ')}`, process.execPath, [nodeFixture('node-locker'), ...args]);
  }

  #spawn(label: string, cmd: string, args: string[]): Proc {
    const p = new Proc(spawn(cmd, args, { env: this.env, stdio: ['pipe', 'pipe', 'pipe'] }), label);
    recordPid(this.dir, p.pid);
    this.#procs.push(p);
    return p;
  }

  file(name: string): string {
    return path.join(this.dir, name);
  }

  async cleanup(): Promise<void> {
    for (const c of this.#clients) c.close();
    for (let round = 0; round < 20; round++) {
      const left = processesOf(this.dir);
      if (left.length === 0) break;
      for (const pid of left) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          /* gone */
        }
      }
      await sleep(50);
    }
    await Promise.all(this.#procs.map((p) => withTimeout(p.exited, 5000, `${p.label} to die`).catch(() => undefined)));
    this.#table?.close();
    fs.rmSync(this.shm, { force: true });
    fs.rmSync(markerPath(this.shm), { force: true }); // the OS-route marker (jdls_service.c): every process is gone
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

/** Poll until cond() (bounded). */
export async function until(cond: () => boolean | Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(10);
  }
}
