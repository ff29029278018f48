// state.ts - where a running listener says so: its pid file
// ($JBCRELEASEDIR/jdls-listener.json, always) and the table header's listener
// fields (when the installation has a table), and how -k/-dvL/-ib find it.
//
// Owns: the pid file's format, writing/clearing the header's listener fields,
// and the one "is a listener running, where?" lookup. Does not own: the
// listener's life (listener.ts).
//
// Why a pid file as well as the header: a listener that runs without a
// monitor (-ibD, OS file locks) has no table to write into, and a table can
// be removed (-Ko) or created after the listener started.
import fs from 'node:fs';
import path from 'node:path';
import { LockTable } from '../locks/table.js';
import { native } from '../native.js';
import { isRunning } from '../cli/procs.js';
import type { MechanismKind } from '../locks/mechanism.js';

export const PID_FILE = 'jdls-listener.json';
export const LISTENER_LOG = 'jdls-listener.log';

export interface ListenerInfo {
  pid: number;
  /** process start time (native.pidStart), so a recycled pid is not taken for it */
  start: number;
  port: number;
  addr: string;
  mechanism: MechanismKind;
  startedMs: number;
}

export const pidFilePath = (dir: string): string => path.join(dir, PID_FILE);

function readPidFile(dir: string): ListenerInfo | undefined {
  try {
    const o = JSON.parse(fs.readFileSync(pidFilePath(dir), 'utf8')) as Partial<ListenerInfo>;
    if (typeof o.pid !== 'number' || typeof o.start !== 'number') return undefined;
    return {
      pid: o.pid, start: o.start, port: Number(o.port ?? 0), addr: String(o.addr ?? ''),
      mechanism: o.mechanism === 'os' ? 'os' : 'shm', startedMs: Number(o.startedMs ?? 0),
    };
  } catch {
    return undefined;
  }
}

/** The running listener of the installation, if any (pid file first, then the header). */
export function findListener(dir: string): ListenerInfo | undefined {
  const f = readPidFile(dir);
  if (f && isRunning(f.pid, f.start)) return f;
  let table: LockTable;
  try {
    table = LockTable.open({ releaseDir: dir });
  } catch {
    return undefined;
  }
  try {
    const h = table.header();
    if (!isRunning(h.listenerPid, h.listenerStart)) return undefined;
    return { pid: h.listenerPid, start: h.listenerStart, port: h.listenerPort, addr: h.listenerAddr, mechanism: 'shm', startedMs: 0 };
  } finally {
    table.close();
  }
}

/**
 * Claim the installation's listener role before listening: the pid file is
 * created with O_EXCL, so of two listeners started at once exactly one
 * wins (with port 0, both could otherwise listen). A pid file naming a dead
 * process is stale and replaced. Returns the live listener that holds the
 * claim, or undefined when this process now holds it.
 */
export function claimListener(dir: string): ListenerInfo | undefined {
  const me = { pid: process.pid, start: native.pidStart(process.pid), port: 0, addr: '', mechanism: 'shm', startedMs: Date.now() };
  fs.mkdirSync(dir, { recursive: true });
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      fs.writeFileSync(pidFilePath(dir), `${JSON.stringify(me)}\n`, { flag: 'wx' });
      return undefined;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
    const other = readPidFile(dir);
    if (other && other.pid !== process.pid && isRunning(other.pid, other.start)) return other;
    // Stale (or being written this instant: then the next attempt sees it).
    if (!other) {
      const age = Date.now() - (fs.statSync(pidFilePath(dir), { throwIfNoEntry: false })?.mtimeMs ?? 0);
      if (age < 1000) continue;
    }
    fs.rmSync(pidFilePath(dir), { force: true });
  }
  const other = readPidFile(dir);
  if (other && isRunning(other.pid, other.start)) return other;
  throw new Error(`cannot claim ${pidFilePath(dir)}`);
}

/** This process as the installation's listener: pid file (atomically) and header. */
export function publishListener(dir: string, info: Omit<ListenerInfo, 'pid' | 'start'>): ListenerInfo {
  const me: ListenerInfo = { pid: process.pid, start: native.pidStart(process.pid), ...info };
  const file = pidFilePath(dir);
  const tmp = `${file}.${process.pid}.tmp`;
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(tmp, `${JSON.stringify(me)}\n`);
  fs.renameSync(tmp, file);
  writeHeader(dir, me);
  return me;
}

/** Put the listener into the table header if there is a table and it does not name us. True if written. */
export function writeHeader(dir: string, me: ListenerInfo): boolean {
  let table: LockTable;
  try {
    table = LockTable.open({ releaseDir: dir });
  } catch {
    return false;
  }
  try {
    const h = table.header();
    if (h.listenerPid === me.pid && h.listenerStart === me.start && h.listenerPort === me.port) return false;
    table.setHeader('listenerStart', me.start);
    table.setHeader('listenerPort', me.port);
    table.setHeader('listenerAddr', me.addr);
    table.setHeader('listenerPid', me.pid); // last: readers check pid, then the rest
    return true;
  } finally {
    table.close();
  }
}

/** Remove our pid file and header entry (only if they still name us). */
export function withdrawListener(dir: string, me: ListenerInfo): void {
  const f = readPidFile(dir);
  if (f && f.pid === me.pid && f.start === me.start) fs.rmSync(pidFilePath(dir), { force: true });
  let table: LockTable;
  try {
    table = LockTable.open({ releaseDir: dir });
  } catch {
    return;
  }
  try {
    if (table.header().listenerPid === me.pid) {
      table.setHeader('listenerPid', 0);
      table.setHeader('listenerStart', 0);
    }
  } finally {
    table.close();
  }
}
