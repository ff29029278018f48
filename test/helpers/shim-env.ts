// shim-env.ts - a private installation for the preload-shim tests.
//
// Owns: a CliEnv (temp JBCRELEASEDIR, its table and processes, all cleaned up
// in t.teardown), a record lock directory inside it (JDLS_LOCKDIR), and
// running programs with or without LD_PRELOAD=libjdlsshim.so: to completion
// (bounded) or in the background, line by line. Every process started here
// is tracked and killed by pid at teardown.
import type { ExecutionContext } from 'ava';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { CliEnv, type RunResult } from './cli-env.js';
import { buildDir } from '../../src/native.js';
import { shimPath } from '../../src/shim.js';
import { findListener } from '../../src/server/state.js';
import { captureOutput } from './output.js';
import { brokerPidPath, brokerSocketPath } from '../../src/broker/paths.js';
import { isOurProcess, readPidRecord } from '../../src/safefile.js';

export const SHIM = shimPath();
export const SHIM_LOCKER = path.join(buildDir, 'jdls-shimlocker');
export const SHIM_API = path.join(buildDir, 'jdls-shimapi');
export const JBRT = path.join(buildDir, 'jdls-jbrt');

export interface JsonLock {
  state: 'held' | 'waiting';
  type: 'READ' | 'WRITE';
  pid: number;
  ownerPid: number;
  port: number;
  inode: string;
  dev: string;
  key: string;
}

export interface BgProc {
  child: ChildProcess;
  pid: number;
  lines: string[];
  stderr(): string;
  /** resolves with the first line matching re (bounded) */
  waitFor(re: RegExp, timeoutMs?: number): Promise<string>;
  /** resolves with the first n lines once they are printed (bounded; throws with stderr if it ends first) */
  firstLines(n: number, timeoutMs?: number): Promise<string[]>;
  /** close stdin (a `hold` step then releases) and wait for the exit (bounded) */
  finish(timeoutMs?: number): Promise<number | null>;
}

export class ShimEnv {
  readonly cli: CliEnv;
  readonly lockDir: string;
  readonly env: NodeJS.ProcessEnv;

  constructor(t: ExecutionContext) {
    this.cli = new CliEnv(t);
    this.lockDir = path.join(this.cli.dir, 'jbase');
    fs.mkdirSync(this.lockDir, { recursive: true });
    this.env = { ...this.cli.env, JDLS_LOCKDIR: this.lockDir };
    delete this.env['JDLS'];
    delete this.env['LD_PRELOAD'];
    delete this.env['JDLS_BROKER'];
    // One broker socket rule for every test: the per-uid directory in the
    // test's installation, not the runner's XDG_RUNTIME_DIR.
    delete this.env['XDG_RUNTIME_DIR'];
    delete this.env['JDLS_NODE'];
    // A broker a test started (the shim starts it on first use) is killed by
    // the pid in its pid file; CliEnv's cleanup also finds it by its
    // environment (JBCRELEASEDIR).
    t.teardown(() => this.killBroker());
  }

  /** The broker's socket (the default for this user and network namespace: $JBCRELEASEDIR/tmp/broker-<euid>/jdls-broker.net<inode>.sock; src/broker/paths.ts). */
  get brokerSocket(): string {
    return brokerSocketPath(this.env);
  }

  /** The running broker's pid (from its pid file), if any. */
  brokerPid(): number | undefined {
    // {pid, start}: a pid the kernel gave to another process since is not
    // the broker (safefile.isOurProcess), and is not killed.
    const rec = readPidRecord(brokerPidPath(this.brokerSocket));
    return rec && isOurProcess(rec.pid, rec.start) ? rec.pid : undefined;
  }

  killBroker(): void {
    const pid = this.brokerPid();
    if (pid === undefined) return;
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      /* gone */
    }
  }

  /** `jdls -ib` (monitor and listener on loopback, port 0; `-ibD`: the listener alone, OS locks); returns the JDLS value that reaches it. */
  async startServer(settings: Record<string, number | string> = {}, args: string[] = ['-ib']): Promise<string> {
    const extra = Object.entries(settings).map(([k, v]) => `${k}: ${v}\n`).join('');
    if (extra) fs.appendFileSync(path.join(this.cli.dir, 'jdls.yaml'), extra);
    await this.cli.startBackground(args);
    const l = findListener(this.cli.dir);
    if (!l || !(l.port > 0)) throw new Error('no listener port');
    return `SERVER=127.0.0.1,${l.port}`;
  }

  /** The monitor only (-ibA): record locks of preloaded processes go to the table. */
  async startMonitor(): Promise<number> {
    return (await this.cli.startBackground(['-ibA'])).pid;
  }

  /** A jlock file name in the lock directory for (inode, dev). */
  jlock(inode: number, dev: number): string {
    const h = (n: number): string => (n >>> 0).toString(16).padStart(8, '0');
    return path.join(this.lockDir, `jlock_${h(inode)}_${h(dev)}`);
  }

  private envFor(preload: boolean, extra: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
    const env = { ...this.env, ...extra };
    if (preload) env['LD_PRELOAD'] = SHIM;
    return env;
  }

  /** Run to completion (bounded: then SIGKILL). */
  run(cmd: string, args: string[], opts: { preload?: boolean; env?: NodeJS.ProcessEnv; input?: string; timeoutMs?: number } = {}): Promise<RunResult> {
    return new Promise((resolve, reject) => {
      const child = spawn(cmd, args, { env: this.envFor(opts.preload ?? true, opts.env ?? {}), stdio: ['pipe', 'pipe', 'pipe'] });
      if (child.pid) this.cli.track(child.pid);
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      // A program that exits without reading its input makes the write fail
      // with EPIPE: not an error of the test.
      child.stdin.on('error', () => {});
      child.stdin.end(opts.input ?? '');
      const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 30_000);
      child.on('error', reject);
      child.on('close', (code, signal) => {
        clearTimeout(timer);
        resolve({ code, signal, stdout, stderr });
      });
    });
  }

  /** Start in the background; stdin stays open until finish(). */
  start(cmd: string, args: string[], opts: { preload?: boolean; env?: NodeJS.ProcessEnv } = {}): BgProc {
    const child = spawn(cmd, args, { env: this.envFor(opts.preload ?? true, opts.env ?? {}), stdio: ['pipe', 'pipe', 'pipe'] });
    if (!child.pid) throw new Error(`${cmd} did not start`);
    this.cli.track(child.pid);
    child.stdin?.on('error', () => {}); // EPIPE when it exits first
    const { lines, stderr, waitFor } = captureOutput(child, path.basename(cmd));
    const exited = new Promise<number | null>((r) => child.on('close', (code) => r(code)));
    const finish = async (timeoutMs = 10_000): Promise<number | null> => {
      child.stdin?.end();
      const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
      const code = await exited;
      clearTimeout(timer);
      return code;
    };
    const firstLines = async (n: number, timeoutMs = 10_000): Promise<string[]> => {
      for (const end = Date.now() + timeoutMs; lines.length < n;) {
        if (Date.now() > end || child.exitCode !== null) throw new Error(`${path.basename(cmd)}: ${lines.length} of ${n} lines ${JSON.stringify(lines)} ${stderr()}`);
        await new Promise((r) => setTimeout(r, 10));
      }
      return lines.slice(0, n);
    };
    return { child, pid: child.pid, lines, stderr, waitFor, firstLines, finish };
  }

  /** The table's locks, through `jdls -dvL --json`. */
  async locks(): Promise<JsonLock[]> {
    const r = await this.cli.run(['-dvL', '--json']);
    if (r.code !== 0) throw new Error(`jdls -dvL --json: ${r.code} ${r.stderr}`);
    return ((JSON.parse(r.stdout) as { locks?: JsonLock[] }).locks ?? []);
  }
}
