// cli-env.ts - a private installation per test for the `jdls` command tests.
//
// Owns: a fresh JBCRELEASEDIR (temp dir), running `node dist/src/cli/jdls.js`
// in it, Node child processes that hold locks in its table, and cleaning all
// of it up in t.teardown: every process started here is killed by pid, the
// /dev/shm table and the temp dir are removed, even when the test failed.
import type { ExecutionContext } from 'ava';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { tablePath, installationProcesses, markerPath } from '../../src/installation.js';
import { native } from '../../src/native.js';
import { captureOutput } from './output.js';
import { testDir, recordPid } from './installations.js';
import { processAlive } from './procscan.js';

const here = path.dirname(fileURLToPath(import.meta.url));
/** dist/src/cli/jdls.js, seen from dist/test/helpers. */
export const JDLS = path.resolve(here, '..', '..', 'src', 'cli', 'jdls.js');
const INDEX = path.resolve(here, '..', '..', 'src', 'index.js');

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Run `cmd argv` to completion with its output collected; SIGKILL after `timeoutMs`. */
export function runToEnd(cmd: string, argv: string[], env: NodeJS.ProcessEnv, timeoutMs: number, onPid?: (pid: number) => void): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, argv, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    if (child.pid) onPid?.(child.pid);
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

/** One lock a locker child takes: NOWAIT (must be granted) or waiting. */
export interface LockSpec {
  key: string | Buffer;
  /** instead of key: `count` locks on keys <prefix>0.. (inode = i, dev = 1) */
  bulk?: { prefix: string; count: number };
  mode: 'read' | 'write';
  inode?: number;
  dev?: number;
  /** queue behind the holder instead of failing */
  wait?: boolean;
}

export interface Locker {
  child: ChildProcess;
  pid: number;
  /** lines the child printed so far */
  lines: string[];
  /** resolves when a line matching re appears (bounded) */
  waitFor(re: RegExp, timeoutMs?: number): Promise<string>;
}

// The locker: takes the locks in argv[1] (JSON), prints "ready <pid>", then
// holds them until killed, or until stdin closes (then it releases them and
// exits). With 'close' as argv[2] it closes its table handle after locking:
// it holds locks without having the table mapped. A waiting request prints "granted <keyHex>". `bulk` takes `count`
// locks on keys <prefix><i> (inode i), too many to pass one by one in argv.
// Trap: the table must stay referenced (globalThis): a LockTable that is
// garbage-collected unmaps the segment, and the process would no longer be
// "attached" although its locks stay held.
const LOCKER = `
import { LockTable, makeOwner, fileId } from ${JSON.stringify(INDEX)};
const specs = JSON.parse(process.argv[1]);
const table = globalThis.jdlsTable = LockTable.open();
const owner = globalThis.jdlsOwner = makeOwner();
const take = (s, key, file) => {
  if (s.wait) {
    table.lock(owner, file, key, s.mode).then(() => console.log('granted ' + key.toString('hex')), (e) => console.log('failed ' + e.code));
  } else {
    const r = table.tryLock(owner, file, key, s.mode);
    if (!r.granted) { console.log('conflict ' + JSON.stringify(r.holder)); process.exit(3); }
  }
};
for (const s of specs) {
  if (s.bulk) for (let i = 0; i < s.bulk.count; i++) take(s, Buffer.from(s.bulk.prefix + i), fileId(i, 1));
  else take(s, Buffer.from(s.keyHex, 'hex'), fileId(s.inode ?? 1483651, s.dev ?? -1));
}
if (process.argv[2] === 'close') table.close(); // locks stay held, the mapping goes
console.log('ready ' + process.pid);
process.stdin.resume();
process.stdin.on('end', () => { if (process.argv[2] !== 'close') { table.unlockAll(owner); table.close(); } process.exit(0); });
`;

export class CliEnv {
  readonly dir: string;
  readonly env: NodeJS.ProcessEnv;
  readonly shm: string;
  /** pids this test started (jdls, monitors, lockers) and their start
   * times: killed at teardown, but only if the pid is still that process */
  readonly pids = new Map<number, number>();

  constructor(t: ExecutionContext) {
    this.dir = testDir('cli');
    this.env = { ...process.env, JBCRELEASEDIR: this.dir };
    delete this.env['JDLS_LOG_LEVEL'];
    this.shm = tablePath(this.dir);
    // -ib starts a listener too: any free port on loopback, so tests never
    // collide on 50002 or listen on the network.
    fs.writeFileSync(path.join(this.dir, 'jdls.yaml'), `port: 0\nbind: 127.0.0.1\nlockDir: ${path.join(this.dir, 'jbase')}\n`);
    t.teardown(() => this.cleanup());
  }

  /** Run jdls to completion (bounded: 30 s, then SIGKILL). */
  run(args: string[], timeoutMs = 30_000): Promise<RunResult> {
    return runToEnd(process.execPath, [JDLS, ...args], this.env, timeoutMs, (pid) => this.track(pid));
  }


  /** Start jdls without waiting for it (the foreground monitor). */
  spawn(args: string[]): ChildProcess {
    const child = spawn(process.execPath, [JDLS, ...args], { env: this.env, stdio: ['ignore', 'pipe', 'pipe'] });
    if (child.pid) this.track(child.pid);
    return child;
  }

  /** `jdls -ib...`; returns the first pid started (the monitor's, from "started at pid N"); all are tracked. */
  async startBackground(args: string[] = ['-ib']): Promise<{ pid: number; result: RunResult }> {
    const result = await this.run(args);
    const pids = [...result.stdout.matchAll(/started at pid (\d+)/g)].map((m) => Number(m[1]));
    if (result.code !== 0 || pids.length === 0) throw new Error(`jdls ${args.join(' ')} failed: ${result.code} ${result.stdout} ${result.stderr}`);
    for (const p of pids) this.track(p);
    return { pid: pids[0] ?? 0, result };
  }

  /** A Node process holding locks in this installation's table. */
  async locker(specs: LockSpec[], opts: { closeTable?: boolean; readyTimeoutMs?: number } = {}): Promise<Locker> {
    const readyTimeoutMs = opts.readyTimeoutMs ?? 10_000;
    const arg = JSON.stringify(
      specs.map((s) => ({ ...s, key: undefined, keyHex: Buffer.from(s.key).toString('hex') })),
    );
    const child = spawn(process.execPath, ['--input-type=module', '-e', LOCKER, arg, ...(opts.closeTable ? ['close'] : [])], {
      env: this.env,
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    if (!child.pid) throw new Error('locker did not start');
    this.track(child.pid);
    const { lines, waitFor } = captureOutput(child, 'locker');
    const locker: Locker = { child, pid: child.pid, lines, waitFor };
    await waitFor(/^ready /, readyTimeoutMs);
    return locker;
  }

  track(pid: number): void {
    if (this.pids.has(pid)) return;
    this.pids.set(pid, native.pidStart(pid));
    recordPid(this.dir, pid);
  }

  isAlive(pid: number): boolean {
    return processAlive(pid);
  }


  /** Poll until fn() is true (bounded); returns its last value. */
  async until(fn: () => boolean | Promise<boolean>, timeoutMs = 10_000, stepMs = 50): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (await fn()) return true;
      if (Date.now() > deadline) return false;
      await sleep(stepMs);
    }
  }

  async cleanup(): Promise<void> {
    // The listener's lock-server processes are not started by the test
    // directly: they are the processes whose environment names this
    // (unique) installation directory.
    for (const pid of processesOf(this.dir)) this.track(pid);
    for (const [pid, start] of this.pids) {
      if (!this.isAlive(pid) || native.pidStart(pid) !== start) continue;
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
    await this.until(() => [...this.pids].every(([p, st]) => !this.isAlive(p) || native.pidStart(p) !== st), 5_000, 20);
    fs.rmSync(this.shm, { force: true });
    fs.rmSync(markerPath(this.shm), { force: true }); // the OS-route marker (jdls_service.c): every process is gone
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

/** Live processes (not this one) whose environment has JBCRELEASEDIR=dir. */
/** Pids of the processes of an installation (src/installation.ts). */
export const processesOf = installationProcesses;

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** The pid in "Lock monitor at pid:      N - Active", or undefined. */
export function activeMonitorPid(display: string): number | undefined {
  const m = /^Lock monitor at pid:\s+(\d+) - Active$/m.exec(display);
  return m ? Number(m[1]) : undefined;
}

/** The held-lock rows of a -dvL listing, split into columns. */
export function lockRows(display: string): string[][] {
  const lines = display.split('\n');
  const start = lines.findIndex((l) => l.startsWith('Group value'));
  if (start < 0) return [];
  const rows: string[][] = [];
  for (const l of lines.slice(start + 1)) {
    if (l.startsWith('Record locks:')) break;
    if (l.trim()) rows.push(l.trim().split(/\s+/));
  }
  return rows;
}
