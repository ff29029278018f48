// lib.ts - what the bench scenarios share: where things are, running the C
// side (build/Release/jdls-cbench) and child Node processes, temporary
// installations that always get removed, statistics, and the machine's
// description. Owns no measurement and no verdict.
import { spawnSync, type SpawnSyncOptions } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { packageRoot, buildDir } from '../src/native.js';
import { LockTable, type CreateOptions } from '../src/locks/table.js';
import { tablePath, markerPath } from '../src/installation.js';

export const cbenchPath = path.join(buildDir, 'jdls-cbench');
export const distDir = path.join(packageRoot, 'dist');
/** The jdls CLI timed by the big-table scenario; JDLS_BENCH_CLI overrides it. */
export const cliPath = process.env['JDLS_BENCH_CLI'] || path.join(distDir, 'src', 'cli', 'jdls.js');

/** A failure that makes the scenario (and `npm run bench`) fail: not a missed goal. */
export class BenchError extends Error {
  override name = 'BenchError';
}

/** One line of JSON from a finished child, or a BenchError saying why not. */
export function runJson<T>(cmd: string, args: string[], what: string, opts: SpawnSyncOptions = {}): T {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 60_000, killSignal: 'SIGKILL', ...opts });
  if (r.error) throw new BenchError(`${what}: ${r.error.message}`);
  if (r.status !== 0) throw new BenchError(`${what}: exit ${r.status ?? r.signal}: ${String(r.stderr).trim()}`);
  const line = String(r.stdout).trim().split('\n').pop() ?? '';
  try {
    return JSON.parse(line) as T;
  } catch {
    throw new BenchError(`${what}: no JSON result in ${JSON.stringify(line)}`);
  }
}

export function cbench<T>(args: string[], what: string): T {
  return runJson<T>(cbenchPath, args, what);
}

// Every temporary installation is listed here, so the exit hook can remove
// tables and directories even when a scenario throws or the run is
// interrupted: a leftover 600 MB /dev/shm file would outlive the bench.
const installations = new Set<TempInstallation>();

export class TempInstallation {
  readonly dir: string;
  readonly shmPath: string;
  #table: LockTable | undefined;

  constructor(label: string) {
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), `jdls-bench-${label}-`));
    this.shmPath = tablePath(this.dir);
    installations.add(this);
  }

  /** Create the table in this process (keep it open). */
  create(opts: Omit<CreateOptions, 'releaseDir'> = {}): LockTable {
    this.#table = LockTable.create({ ...opts, releaseDir: this.dir });
    return this.#table;
  }

  dispose(): void {
    this.#table?.close();
    this.#table = undefined;
    fs.rmSync(this.shmPath, { force: true });
    fs.rmSync(markerPath(this.shmPath), { force: true });
    fs.rmSync(this.dir, { recursive: true, force: true });
    installations.delete(this);
  }
}

export function disposeAll(): void {
  for (const i of [...installations]) {
    try {
      i.dispose();
    } catch {
      /* best effort at exit */
    }
  }
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const n = s.length;
  if (n === 0) return NaN;
  const hi = s[Math.floor(n / 2)] ?? NaN;
  const lo = s[Math.floor((n - 1) / 2)] ?? NaN;
  return (hi + lo) / 2;
}

export interface Machine {
  nproc: number;
  cpu: string;
  memTotalMiB: number;
  node: string;
  kernel: string;
  date: string;
}

export function machine(): Machine {
  let cpu = os.cpus()[0]?.model ?? 'unknown';
  try {
    const m = /^model name\s*:\s*(.*)$/m.exec(fs.readFileSync('/proc/cpuinfo', 'utf8'));
    if (m?.[1]) cpu = m[1].trim();
  } catch {
    /* keep os.cpus()'s */
  }
  return {
    nproc: os.availableParallelism(),
    cpu,
    memTotalMiB: Math.round(os.totalmem() / 1048576),
    node: process.version,
    kernel: os.release(),
    date: new Date().toISOString(),
  };
}

/** One line of the report. `pass` undefined: a figure without a goal. */
export interface Figure {
  id: string;
  label: string;
  value: number | string;
  unit: string;
  goal?: string;
  pass?: boolean;
  note?: string;
}
