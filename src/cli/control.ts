// control.ts - `jdls -k[A|D]` (stop the monitor and/or the listener) and
// `jdls -K[o]` (remove the lock table).
//
// Owns: finding the monitor through the table header and the listener
// through its pid file or the header (src/server/state.ts), signalling them and
// waiting for it to go; refusing to remove a table that processes still
// have mapped (or hold locks in), or forcing it. Does not own: the monitor's own exit (it clears
// its pid in the header itself, monitor.ts) or the list of attached
// processes (installation.ts reads /proc/<pid>/maps).
import fs from 'node:fs';
import { LockTable } from '../locks/table.js';
import { JdlsError } from '../errors.js';
import { attachedProcesses, tablePath, type AttachedProcess } from '../installation.js';
import { isRunning, waitGone } from './procs.js';
import { writeFd, noTableMessage } from './display.js';
import { findListener } from '../server/state.js';
import { notOurProcess } from '../safefile.js';

/** How long -k waits for the monitor to exit after SIGTERM. */
export const STOP_WAIT_MS = 5_000;

const say = (text: string): void => writeFd(1, `${text}\n`);
const complain = (text: string): void => writeFd(2, `${text}\n`);

/** One line per process: a command line may hold newlines (node -e) and be long. */
const procLine = (p: Named): string => {
  const cmd = p.command.replace(/\s+/g, ' ').trim();
  return `  ${p.pid} ${cmd.length > 160 ? `${cmd.slice(0, 157)}...` : cmd}${p.note ? ` (${p.note})` : ''}`;
};

/** A process that keeps the table in use, and why if it is not a mapping. */
type Named = AttachedProcess & { note?: string };

interface MonitorRef {
  pid: number;
  start: number;
}

/** The live monitor named in the header, if any (the table is opened and closed). */
function liveMonitor(dir: string): MonitorRef | undefined | 'no-table' {
  let table: LockTable;
  try {
    table = LockTable.open({ releaseDir: dir });
  } catch (e) {
    if (e instanceof JdlsError && e.code === 'NO_TABLE') return 'no-table';
    // A damaged segment has no monitor to trust; -Ko removes it anyway.
    return undefined;
  }
  try {
    const h = table.header();
    if (!isRunning(h.monitorPid, h.monitorStart)) return undefined;
    // The header is only numbers: a pid recycled for another program (or
    // written there by someone else) is no monitor to signal.
    const why = notOurProcess(h.monitorPid, h.monitorStart);
    if (why) {
      complain(`jdls: the lock table names pid ${h.monitorPid} as its monitor, which is ${why}: not signalled`);
      return undefined;
    }
    return { pid: h.monitorPid, start: h.monitorStart };
  } finally {
    table.close();
  }
}

/**
 * Live processes that hold or await locks in the table without having it
 * mapped. Trap: a process whose LockTable handle was closed or garbage-
 * collected is not "attached", yet its locks are held; removing the table
 * would drop them silently. -K counts these too.
 */
function unmappedHolders(dir: string, known: Set<number>): Named[] {
  let table: LockTable;
  try {
    table = LockTable.open({ releaseDir: dir });
  } catch {
    return [];
  }
  const out: Named[] = [];
  try {
    for (const batch of table.rows()) {
      for (const r of batch) {
        if (known.has(r.pid) || r.pid === process.pid) continue;
        known.add(r.pid);
        if (!isRunning(r.pid, 0)) continue;
        let command = '';
        try {
          command = fs.readFileSync(`/proc/${r.pid}/cmdline`, 'utf8').split('\0').filter(Boolean).join(' ');
        } catch {
          /* exited meanwhile */
        }
        out.push({ pid: r.pid, command, note: 'holds locks; table not mapped' });
      }
    }
  } finally {
    table.close();
  }
  return out;
}

/** SIGTERM, then wait; with `kill`, SIGKILL if it is still there. */
async function stopProcess(m: MonitorRef, kill: boolean): Promise<boolean> {
  try {
    process.kill(m.pid, 'SIGTERM');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ESRCH') throw e;
    return true;
  }
  if (await waitGone(m.pid, m.start, STOP_WAIT_MS)) return true;
  if (!kill) return false;
  try {
    process.kill(m.pid, 'SIGKILL');
  } catch {
    /* gone meanwhile */
  }
  return waitGone(m.pid, m.start, 2_000);
}

/**
 * -kD: stop the listener. Its lock-server processes stay: connected clients
 * keep their locks and keep locking; new connections are refused until a
 * listener runs again.
 */
async function stopListener(dir: string): Promise<number> {
  const l = findListener(dir);
  if (!l) {
    say('jdls: lock listener not running');
    return 0;
  }
  try {
    if (await stopProcess({ pid: l.pid, start: l.start }, false)) {
      say(`jdls: lock listener at pid ${l.pid} stopped`);
      return 0;
    }
  } catch (e) {
    complain(`jdls: cannot stop the lock listener at pid ${l.pid}: ${(e as Error).message}`);
    return 1;
  }
  complain(`jdls: lock listener at pid ${l.pid} did not stop within ${STOP_WAIT_MS / 1000} s`);
  return 1;
}

/**
 * -k: stop the listener and the lock monitor; -kA the monitor only; -kD the
 * listener only. The table and every lock stay, and lock-server processes
 * keep serving the clients connected to them.
 */
export async function stop(dir: string, which: { monitor: boolean; listener: boolean } = { monitor: true, listener: true }): Promise<number> {
  const lrc = which.listener ? await stopListener(dir) : 0;
  const mrc = which.monitor ? await stopMonitor(dir) : 0;
  return lrc || mrc;
}

async function stopMonitor(dir: string): Promise<number> {
  const m = liveMonitor(dir);
  if (m === 'no-table') {
    say(`jdls: lock monitor not running (no lock table for JBCRELEASEDIR=${dir})`);
    return 0;
  }
  if (!m) {
    say('jdls: lock monitor not running');
    return 0;
  }
  try {
    if (await stopProcess(m, false)) {
      say(`jdls: lock monitor at pid ${m.pid} stopped`);
      return 0;
    }
  } catch (e) {
    complain(`jdls: cannot stop the lock monitor at pid ${m.pid}: ${(e as Error).message}`);
    return 1;
  }
  complain(`jdls: lock monitor at pid ${m.pid} did not stop within ${STOP_WAIT_MS / 1000} s`);
  return 1;
}

/** Take the table out of service (jdls_service.c): every process that mapped it stops using it. */
function retire(dir: string): void {
  try {
    const table = LockTable.open({ releaseDir: dir });
    table.retire();
    table.close();
  } catch {
    /* a damaged segment: nobody can be using it */
  }
}

/** -K: remove the table, refusing while processes have it mapped; -Ko: force. */
export async function remove(dir: string, force: boolean): Promise<number> {
  const shm = tablePath(dir);
  if (!fs.existsSync(shm)) {
    complain(noTableMessage(dir));
    return 1;
  }
  if (force) {
    const m = liveMonitor(dir);
    if (m && m !== 'no-table') {
      try {
        if (!(await stopProcess(m, true))) {
          complain(`jdls: lock monitor at pid ${m.pid} did not stop; lock table not removed`);
          return 1;
        }
        say(`jdls: lock monitor at pid ${m.pid} stopped`);
      } catch (e) {
        complain(`jdls: cannot stop the lock monitor at pid ${m.pid}: ${(e as Error).message}`);
        return 1;
      }
    }
  }
  // Our own handles are closed by now, and attachedProcesses skips this
  // process anyway. A process that attaches between this check and the
  // unlink keeps a mapping of the removed table (the same is true of -Ko);
  // the table is retired first, so such a process turns to OS file locks at
  // its next call instead of locking where nobody else looks.
  const attached: Named[] = attachedProcesses(shm);
  if (!force) attached.push(...unmappedHolders(dir, new Set(attached.map((p) => p.pid))));
  if (attached.length && !force) {
    complain(`jdls: lock table ${shm} is in use by ${attached.length} process${attached.length === 1 ? '' : 'es'}:`);
    for (const p of attached) complain(procLine(p));
    complain('jdls: stop them first (jdls -k stops the lock monitor), or force the removal with jdls -Ko');
    return 1;
  }
  retire(dir);
  try {
    fs.unlinkSync(shm);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') {
      complain(`jdls: cannot remove ${shm}: ${(e as Error).message}`);
      return 1;
    }
  }
  say(`jdls: lock table ${shm} removed`);
  if (attached.length) {
    complain(`jdls: warning: ${attached.length} process${attached.length === 1 ? ' keeps its' : 'es keep their'} mapping of the removed table:`);
    for (const p of attached) complain(procLine(p));
  }
  return 0;
}
