// big-table.ts - scenario: a table of 1,000,000 locks (-s1000000,50).
// Creates it in a fresh Node process (as `jdls -i` would), fills every entry
// from a C process that stays alive to own them, times a full `jdls -dvL
// --json` of it (or, while the CLI does not exist, a full listing through
// LockTable.rows() serialised the same way), states the memory per entry,
// and removes the table.
//
// Run directly, this file is the fresh child process:
//   node dist/bench/big-table.js --create <releaseDir> <locks> <perGroup>
//   node dist/bench/big-table.js --list <releaseDir>
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { LockTable } from '../src/locks/table.js';
import { native } from '../src/native.js';
import { TempInstallation, runJson, cbench, cbenchPath, cliPath, BenchError, type Figure } from './lib.js';

const self = fileURLToPath(import.meta.url);

export interface CreateChildResult {
  createMs: number;
  totalSize: number;
  ngroups: number;
  perGroup: number;
  capacity: number;
  entrySize: number;
  groupHeaderSize: number;
  headerSize: number;
  procSlotsSize: number;
}

export interface FillResult {
  fillMs: number;
  filled: number;
  capacity: number;
  requests: number;
  tableFullResults: number;
  pid: number;
}

export interface ListResult {
  via: 'cli' | 'rows';
  ms: number;
  rows?: number;
  exitCode?: number | null;
}

export interface BigTableResult {
  locks: number;
  perGroup: number;
  create: CreateChildResult & { processMs: number };
  fill: FillResult;
  /** ns per request into a full group (jBASE Error 37) from another process */
  fullNs: number;
  list: ListResult;
  bytesPerEntry: number;
  cliSkipped: boolean;
}

// --- the children ----------------------------------------------------------

function childCreate(dir: string, locks: number, perGroup: number): void {
  const t0 = process.hrtime.bigint();
  const table = LockTable.create({ releaseDir: dir, locks, perGroup });
  const t1 = process.hrtime.bigint();
  if (table.existed) throw new Error('the big table existed already');
  const h = table.header();
  const c = native.constants;
  const out: CreateChildResult = {
    createMs: Number(t1 - t0) / 1e6,
    totalSize: h.totalSize,
    ngroups: h.ngroups,
    perGroup: h.perGroup,
    capacity: h.capacity,
    entrySize: c.ENTRY_SIZE,
    groupHeaderSize: c.GROUP_HEADER_SIZE,
    headerSize: c.HEADER_SIZE,
    procSlotsSize: c.PROC_SLOTS * c.PROC_SLOT_SIZE,
  };
  table.close();
  process.stdout.write(JSON.stringify(out) + '\n');
}

// What `-dvL --json` has to do without its formatting: every row, batch by
// batch, to JSON. bigint has no JSON form; a Buffer's own toJSON (a list of
// byte numbers) runs before any replacer, so keys become strings first.
function replacer(_k: string, v: unknown): unknown {
  return typeof v === 'bigint' ? v.toString() : v;
}

function childList(dir: string): void {
  const t0 = process.hrtime.bigint();
  const table = LockTable.open({ releaseDir: dir });
  const fd = fs.openSync('/dev/null', 'w');
  let rows = 0;
  try {
    for (const batch of table.rows()) {
      rows += batch.length;
      fs.writeSync(fd, JSON.stringify(batch.map((r) => ({ ...r, key: r.key.toString('latin1') })), replacer) + '\n');
    }
  } finally {
    fs.closeSync(fd);
    table.close();
  }
  const t1 = process.hrtime.bigint();
  process.stdout.write(JSON.stringify({ rows, ms: Number(t1 - t0) / 1e6 }) + '\n');
}

// --- the scenario ------------------------------------------------------------

/** Start the filler and wait for its one line (it then holds the locks). */
function startFiller(shmPath: string): Promise<{ child: ChildProcess; fill: FillResult }> {
  const child = spawn(cbenchPath, ['fill', shmPath], { stdio: ['pipe', 'pipe', 'pipe'] });
  return new Promise((resolve, reject) => {
    let out = '';
    let err = '';
    const timer = setTimeout(() => fail(new BenchError('fill: no result within 90 s')), 90_000);
    const fail = (e: Error): void => {
      clearTimeout(timer);
      if (child.pid !== undefined && child.exitCode === null) child.kill('SIGKILL');
      reject(e);
    };
    child.stderr?.on('data', (d: Buffer) => { err += d.toString(); });
    child.stdout?.on('data', (d: Buffer) => {
      out += d.toString();
      const nl = out.indexOf('\n');
      if (nl < 0) return;
      clearTimeout(timer);
      try {
        resolve({ child, fill: JSON.parse(out.slice(0, nl)) as FillResult });
      } catch {
        fail(new BenchError(`fill: bad result ${JSON.stringify(out.slice(0, nl))}`));
      }
    });
    child.on('error', fail);
    child.on('exit', (code, sig) => fail(new BenchError(`fill: exited early (${code ?? sig}): ${err.trim()}`)));
  });
}

/** Let the filler go (it exits when its stdin closes); SIGKILL it after 5 s. */
function stopFiller(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve();
    const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
    child.removeAllListeners('exit');
    child.once('exit', () => { clearTimeout(timer); resolve(); });
    child.stdin?.end();
  });
}

function timeList(dir: string, capacity: number): ListResult {
  const env = { ...process.env, JBCRELEASEDIR: dir };
  if (fs.existsSync(cliPath)) {
    const devnull = fs.openSync('/dev/null', 'w');
    try {
      const t0 = process.hrtime.bigint();
      const r = spawnSync(process.execPath, [cliPath, '-dvL', '--json'], {
        env, stdio: ['ignore', devnull, 'pipe'], timeout: 120_000, killSignal: 'SIGKILL', encoding: 'utf8',
      });
      const t1 = process.hrtime.bigint();
      if (r.error) throw new BenchError(`jdls -dvL --json: ${r.error.message}`);
      if (r.status !== 0) throw new BenchError(`jdls -dvL --json: exit ${r.status ?? r.signal}: ${String(r.stderr).trim()}`);
      return { via: 'cli', ms: Number(t1 - t0) / 1e6, exitCode: r.status };
    } finally {
      fs.closeSync(devnull);
    }
  }
  const t0 = process.hrtime.bigint();
  const r = runJson<{ rows: number; ms: number }>(process.execPath, [self, '--list', dir], 'listing through rows()', { env, timeout: 120_000 });
  const t1 = process.hrtime.bigint();
  if (r.rows !== capacity) throw new BenchError(`listing through rows(): ${r.rows} rows, expected ${capacity}`);
  return { via: 'rows', ms: Number(t1 - t0) / 1e6, rows: r.rows };
}

export async function runBigTable(locks = 1_000_000, perGroup = 50): Promise<{ result: BigTableResult; figures: Figure[] }> {
  const inst = new TempInstallation('big');
  let filler: ChildProcess | undefined;
  try {
    const t0 = process.hrtime.bigint();
    const created = runJson<CreateChildResult>(process.execPath, [self, '--create', inst.dir, String(locks), String(perGroup)], 'creating the big table');
    const processMs = Number(process.hrtime.bigint() - t0) / 1e6;
    const started = await startFiller(inst.shmPath);
    filler = started.child;
    const fill = started.fill;
    if (fill.filled !== created.capacity) throw new BenchError(`fill: ${fill.filled} of ${created.capacity} entries filled`);
    const fullNs = cbench<{ fullNs: number }>(['full', inst.shmPath, '200'], 'requests into a full table').fullNs;
    const list = timeList(inst.dir, created.capacity);
    const bytesPerEntry = created.totalSize / created.capacity;
    const result: BigTableResult = { locks, perGroup, create: { ...created, processMs }, fill, fullNs, list, bytesPerEntry, cliSkipped: list.via !== 'cli' };
    const mb = (b: number): number => Math.round(b / 1048576 * 10) / 10;
    const figures: Figure[] = [
      { id: 'bigCreate', label: `create -s${locks},${perGroup} (LockTable.create, fresh process)`, value: Math.round(created.createMs), unit: 'ms', goal: '< 2000', pass: created.createMs < 2000, note: `whole process ${Math.round(processMs)} ms` },
      { id: 'bigCapacity', label: 'capacity (groups x locks/group)', value: created.capacity, unit: 'locks', note: `${created.ngroups} x ${created.perGroup}` },
      { id: 'bigSegment', label: 'segment size', value: mb(created.totalSize), unit: 'MiB', note: `${created.totalSize} bytes` },
      { id: 'bigPerEntry', label: 'memory per entry (entry + share of group/table headers)', value: Math.round(bytesPerEntry * 100) / 100, unit: 'B', note: `entry ${created.entrySize} B + group header ${created.groupHeaderSize} B / ${created.perGroup}` },
      { id: 'bigFill', label: 'fill every entry (C, NOWAIT, one owner)', value: Math.round(fill.fillMs), unit: 'ms', note: `${fill.filled} locks, ${fill.requests} requests` },
      { id: 'bigFullCost', label: 'one request into a full group (Error 37), other process', value: Math.round(fullNs / 100) / 10, unit: 'us', note: 'tidies the group first' },
      list.via === 'cli'
        ? { id: 'bigList', label: 'jdls -dvL --json > /dev/null, full table', value: Math.round(list.ms), unit: 'ms', goal: 'completes', pass: true, note: path.relative(process.cwd(), cliPath) }
        : { id: 'bigList', label: 'full listing, rows() + JSON (CLI SKIPPED: no dist/src/cli/jdls.js)', value: Math.round(list.ms), unit: 'ms', goal: 'completes', pass: true, note: `${list.rows} rows` },
    ];
    return { result, figures };
  } finally {
    if (filler) await stopFiller(filler);
    inst.dispose();
  }
}

if (process.argv[1] === self) {
  const [mode, dir, a, b] = process.argv.slice(2);
  if (mode === '--create' && dir) childCreate(dir, Number(a ?? 1_000_000), Number(b ?? 50));
  else if (mode === '--list' && dir) childList(dir);
  else {
    process.stderr.write('usage: big-table.js --create <dir> <locks> <perGroup> | --list <dir>\n');
    process.exit(2);
  }
}
