// start.ts - `jdls -i[b][A][P][T] [-snn,mm] [-tnn]`: create the lock table
// and run the monitor, in the foreground or as a background process.
//
// Owns: the checks before a start (a live monitor refuses, an existing table
// warns that new sizing is ignored), spawning the background monitor with
// its log file, and waiting until it is ready. Does not own: the monitor
// loop (monitor.ts) or the table (table.ts).
//
// The parent creates the table, so sizing warnings reach the operator's
// terminal; the background child only opens it. Ready means the child has
// published its pid in the header (the last thing monitor.ts does before its
// loop) and is alive.
import fs from 'node:fs';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { LockTable, type TableHeader } from '../table.js';
import { createLogger } from '../log.js';
import { MONITOR_CHILD_FLAG, type StartCommand } from './args.js';
import { runMonitor } from './monitor.js';
import { isRunning } from './procs.js';
import { writeFd } from './display.js';

/** How long `jdls -ib` waits for the background monitor to be ready. */
export const READY_WAIT_MS = 10_000;

export const LOG_FILE = 'jdls-monitor.log';

const say = (text: string): void => writeFd(1, `${text}\n`);
const complain = (text: string): void => writeFd(2, `${text}\n`);

const geometry = (h: TableHeader): string => `${h.capacity} locks in ${h.ngroups} groups of ${h.perGroup} locks/group`;
const basis = (port: boolean): string => (port ? 'PORT number based locks (-P)' : 'THREAD id based locks');

function warnExisting(cmd: StartCommand, h: TableHeader): void {
  // The guide: an allocated table's group structure cannot change; lock
  // configuration options on the command line are ignored.
  if (cmd.size)
    complain(`jdls: warning: the lock table exists already (${geometry(h)}); new sizing -s${cmd.size.locks},${cmd.size.perGroup} ignored`);
  if (cmd.portLocks !== h.portLocks)
    complain(`jdls: warning: the existing lock table uses ${basis(h.portLocks)}${cmd.portLocks ? '; -P ignored' : ', which it keeps'}`);
  if (cmd.timestamps !== h.timestamps)
    complain(h.timestamps
      ? 'jdls: warning: the existing lock table time-stamps its locks (-T), which it keeps'
      : 'jdls: warning: the existing lock table has no time stamps; -T ignored');
}

/** Create (or open) the table; refuse if a live monitor runs. undefined: reported, exit 1. */
function prepare(cmd: StartCommand, dir: string): LockTable | undefined {
  let table: LockTable;
  try {
    table = LockTable.create({
      releaseDir: dir,
      ...(cmd.size ? { locks: cmd.size.locks, perGroup: cmd.size.perGroup } : {}),
      portLocks: cmd.portLocks,
      timestamps: cmd.timestamps,
    });
  } catch (e) {
    complain(`jdls: cannot create the lock table for JBCRELEASEDIR=${dir}: ${(e as Error).message}`);
    return undefined;
  }
  const h = table.header();
  if (isRunning(h.monitorPid, h.monitorStart)) {
    table.close();
    complain(`jdls: lock monitor already running at pid ${h.monitorPid}`);
    return undefined;
  }
  if (table.existed) warnExisting(cmd, h);
  return table;
}

export async function start(cmd: StartCommand, dir: string): Promise<number> {
  const table = prepare(cmd, dir);
  if (!table) return 1;
  if (!cmd.background) return runMonitor({ table, tidyMinutes: cmd.tidyMinutes, log: createLogger({ name: 'monitor' }) });
  try {
    return await startBackground(cmd, dir, table);
  } finally {
    table.close();
  }
}

/** The internal `--monitor-child` process: open the table its parent made, run. */
export async function monitorChild(tidyMinutes: number, dir: string): Promise<number> {
  const log = createLogger({ name: 'monitor' });
  let table: LockTable;
  try {
    table = LockTable.open({ releaseDir: dir });
  } catch (e) {
    log.error({ err: e }, `cannot open the lock table: ${(e as Error).message}`);
    return 1;
  }
  return runMonitor({ table, tidyMinutes, log });
}

async function startBackground(cmd: StartCommand, dir: string, table: LockTable): Promise<number> {
  const logPath = path.join(dir, LOG_FILE);
  let fd: number;
  let logStart: number;
  try {
    fs.mkdirSync(dir, { recursive: true });
    fd = fs.openSync(logPath, 'a');
    logStart = fs.fstatSync(fd).size;
  } catch (e) {
    complain(`jdls: cannot open the monitor log ${logPath}: ${(e as Error).message}`);
    return 1;
  }
  const script = fileURLToPath(new URL('./jdls.js', import.meta.url));
  let exited: string | undefined;
  // detached: its own session, so the terminal's SIGHUP/SIGINT do not reach
  // it; stdout and stderr (pino) go to the log file.
  const child = spawn(process.execPath, [script, MONITOR_CHILD_FLAG, `-t${cmd.tidyMinutes}`], {
    detached: true,
    stdio: ['ignore', fd, fd],
    env: { ...process.env, JBCRELEASEDIR: dir },
  });
  fs.closeSync(fd);
  child.on('error', (e) => (exited = `could not be run: ${e.message}`));
  child.on('exit', (code, sig) => (exited = sig ? `was killed by ${sig}` : `exited with code ${code}`));
  child.unref();

  const deadline = Date.now() + READY_WAIT_MS;
  while (Date.now() < deadline && exited === undefined) {
    const pid = child.pid;
    const h = table.header();
    if (pid && h.monitorPid === pid && isRunning(pid, h.monitorStart)) {
      say(`jdls: lock monitor started at pid ${pid} (log: ${logPath})`);
      return 0;
    }
    await new Promise((r) => setTimeout(r, 25));
  }
  if (exited === undefined) {
    exited = `was not ready within ${READY_WAIT_MS / 1000} s`;
    // Ours, by pid: it will not be left half-started.
    if (child.pid) {
      try {
        process.kill(child.pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
  }
  complain(`jdls: the lock monitor failed to start: it ${exited}`);
  for (const l of logTail(logPath, logStart, child.pid)) complain(`  ${l}`);
  return 1;
}

/**
 * What the child logged since `from`: its pino messages, or raw lines (a
 * crash). The log file is shared, so other monitors' lines are skipped.
 */
function logTail(file: string, from: number, pid: number | undefined): string[] {
  let text: string;
  try {
    text = fs.readFileSync(file).subarray(from).toString('utf8');
  } catch {
    return [];
  }
  return text
    .split('\n')
    .filter(Boolean)
    .flatMap((l) => {
      try {
        const o = JSON.parse(l) as { msg?: unknown; pid?: unknown };
        if (o.pid !== pid) return [];
        return [typeof o.msg === 'string' ? o.msg : l];
      } catch {
        return [l];
      }
    })
    .slice(-10);
}
