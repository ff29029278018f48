// table-env.ts - one private installation per test, and the child processes
// that contend in it.
//
// Owns: the temporary JBCRELEASEDIR and its lock table (removed at teardown,
// pass or fail), starting jdls-locker (C) and Node fixture children with that
// installation in their environment, reading their output line by line, and
// killing - by pid, only ours - whatever is still running at teardown.
import type { ExecutionContext } from 'ava';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { LockTable, fileId, type CreateOptions, type FileId, type LockRow } from '../../src/locks/table.js';
import { buildDir } from '../../src/native.js';
import { markerPath } from '../../src/installation.js';
import { testDir, recordPid } from './installations.js';

export const lockerPath = path.join(buildDir, 'jdls-locker');
const here = path.dirname(fileURLToPath(import.meta.url));
/** Compiled Node fixture children live next to this helper's directory. */
export const nodeFixture = (name: string): string => path.resolve(here, '..', 'fixtures', `${name}.js`);

/** jdls-locker's default file (test/fixtures/locker.c: DEFAULT_INODE/DEV). */
export const DEFAULT_FILE: FileId = fileId(4242n, 7n);

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** A child process whose stdout is read as lines. stdin stays a pipe: a
 * fixture holding a lock releases it on a line or EOF there. */
export class Proc {
  readonly child: ChildProcess;
  readonly pid: number;
  readonly exited: Promise<Exit>;
  #lines: string[] = [];
  #waiters: Array<() => void> = [];
  #ended = false;
  #stderr = '';
  #exit: Exit | undefined;

  constructor(child: ChildProcess, readonly label: string) {
    this.child = child;
    if (child.pid === undefined) throw new Error(`${label}: did not start`);
    this.pid = child.pid;
    let partial = '';
    child.stdout?.setEncoding('utf8');
    child.stdout?.on('data', (chunk: string) => {
      partial += chunk;
      const parts = partial.split('\n');
      partial = parts.pop() ?? '';
      for (const p of parts) this.#lines.push(p);
      this.#notify();
    });
    child.stdout?.on('end', () => {
      if (partial) this.#lines.push(partial);
      partial = '';
      this.#ended = true;
      this.#notify();
    });
    child.stderr?.setEncoding('utf8');
    child.stderr?.on('data', (chunk: string) => { this.#stderr += chunk; });
    // A fixture that died closes its end; writes to it must not crash us.
    child.stdin?.on('error', () => {});
    this.exited = new Promise((resolve) => {
      child.on('exit', (code, signal) => {
        this.#exit = { code, signal };
        resolve(this.#exit);
      });
    });
  }

  get running(): boolean {
    return this.#exit === undefined;
  }

  get stderr(): string {
    return this.#stderr;
  }

  #notify(): void {
    const w = this.#waiters;
    this.#waiters = [];
    for (const f of w) f();
  }

  /** The next output line, or an error naming the process after timeoutMs. */
  async line(timeoutMs = 10_000): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const l = this.#lines.shift();
      if (l !== undefined) return l;
      if (this.#ended) throw new Error(`${this.label} (pid ${this.pid}) ended its output; stderr: ${this.#stderr}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`${this.label} (pid ${this.pid}): no output within ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.#waiters.push(() => { clearTimeout(timer); resolve(); });
      });
    }
  }

  /** The next line, which must start with `word`; returns its fields. */
  async expect(word: string, timeoutMs = 10_000): Promise<string[]> {
    const l = await this.line(timeoutMs);
    const fields = l.split(' ');
    if (fields[0] !== word) throw new Error(`${this.label} (pid ${this.pid}): expected ${word}, got "${l}"; stderr: ${this.#stderr}`);
    return fields.slice(1);
  }

  /** Tell a holding fixture to release (any line on stdin). */
  release(): void {
    this.child.stdin?.write('\n');
  }

  /** SIGKILL, then wait until it is reaped (a zombie still counts as alive). */
  async kill9(): Promise<Exit> {
    if (this.running) process.kill(this.pid, 'SIGKILL');
    return this.exited;
  }

  /** Wait for a normal end, and require exit code 0. */
  async success(timeoutMs = 30_000): Promise<void> {
    const e = await withTimeout(this.exited, timeoutMs, `${this.label} (pid ${this.pid}) to exit`);
    if (e.code !== 0) throw new Error(`${this.label} (pid ${this.pid}) exited ${e.code ?? e.signal}; stderr: ${this.#stderr}`);
  }
}

export interface TableEnv {
  dir: string;
  table: LockTable;
  /** the environment for children: JBCRELEASEDIR set to dir */
  env: NodeJS.ProcessEnv;
  /** jdls-locker [-i inode -d dev] args... */
  locker(args: string[], opts?: { env?: NodeJS.ProcessEnv; file?: FileId }): Proc;
  /** node dist/test/fixtures/<name>.js args... */
  node(name: string, args: string[], opts?: { env?: NodeJS.ProcessEnv }): Proc;
  /** any other program, same environment and bookkeeping */
  spawn(label: string, cmd: string, args: string[], opts?: { env?: NodeJS.ProcessEnv }): Proc;
  /** a scratch file path inside dir */
  file(name: string): string;
}

/**
 * A fresh installation with its table (create options as given), removed
 * with every child it started when the test ends, pass or fail.
 */
export function tableEnv(t: ExecutionContext, opts: Omit<CreateOptions, 'releaseDir'> = {}): TableEnv {
  const dir = testDir('table');
  const procs: Proc[] = [];
  let table: LockTable | undefined;
  t.teardown(async () => {
    for (const p of procs) {
      if (p.running) {
        try { process.kill(p.pid, 'SIGKILL'); } catch { /* gone meanwhile */ }
      }
    }
    await Promise.all(procs.map((p) => withTimeout(p.exited, 5000, `${p.label} to die`).catch(() => undefined)));
    if (table) {
      const p = table.path;
      table.close();
      fs.rmSync(p, { force: true });
      fs.rmSync(markerPath(p), { force: true });
    }
    fs.rmSync(dir, { recursive: true, force: true });
  });
  table = LockTable.create({ ...opts, releaseDir: dir });
  const env: NodeJS.ProcessEnv = { ...process.env, JBCRELEASEDIR: dir };
  delete env['JBCPORTNO'];
  const start = (label: string, cmd: string, args: string[], extra?: NodeJS.ProcessEnv): Proc => {
    const child = spawn(cmd, args, { env: { ...env, ...extra }, stdio: ['pipe', 'pipe', 'pipe'] });
    const p = new Proc(child, label);
    recordPid(dir, p.pid);
    procs.push(p);
    return p;
  };
  return {
    dir,
    table,
    env,
    locker(args, o = {}) {
      const f = o.file ?? DEFAULT_FILE;
      return start(`jdls-locker ${args.join(' ')}`, lockerPath, ['-i', String(f.inode), '-d', String(f.dev), ...args], o.env);
    },
    node(name, args, o = {}) {
      return start(`node ${name} ${args.join(' ')}`, process.execPath, [nodeFixture(name), ...args], o.env);
    },
    spawn(label, cmd, args, o = {}) {
      return start(label, cmd, args, o.env);
    },
    file(name) {
      return path.join(dir, name);
    },
  };
}

export async function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const limit = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  try {
    return await Promise.race([p, limit]);
  } finally {
    clearTimeout(timer);
  }
}

/** Poll `cond` every few ms until true; throws after timeoutMs (bounded). */
export async function waitUntil(cond: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** All rows of the table, flattened. */
export function allRows(table: LockTable): LockRow[] {
  const out: LockRow[] = [];
  for (const batch of table.rows()) out.push(...batch);
  return out;
}

/** Queued requests for `key` (any file), in the table. */
export function waitingOn(table: LockTable, key: string): number {
  return allRows(table).filter((r) => r.state === 'waiting' && r.key.toString() === key).length;
}

/** A key that lands in group `group` of a table with `ngroups` groups. */
export function keyInGroup(hash: (key: string) => number, ngroups: number, group: number, prefix: string, skip = 0): string {
  let seen = 0;
  for (let i = 0; i < 100_000; i++) {
    const k = `${prefix}${i}`;
    if (hash(k) % ngroups === group && seen++ === skip) return k;
  }
  throw new Error(`no key with prefix ${prefix} in group ${group}`);
}
