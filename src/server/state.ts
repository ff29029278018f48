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
import { createExclusive, isOurProcess, readPidRecord, replaceFile, trustedOwners } from '../safefile.js';
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

/** The users whose pid file we believe: root and the installation's owner. */
function owners(dir: string): readonly number[] {
  return trustedOwners(fs.statSync(dir, { throwIfNoEntry: false })?.uid);
}

/** The pid file's record; undefined if absent, unreadable, or not ours to trust (a link, another user's: safefile.ts). */
function readPidFile(dir: string): ListenerInfo | undefined {
  const o = readPidRecord(pidFilePath(dir), owners(dir));
  if (!o) return undefined;
  return {
    pid: o.pid, start: o.start, port: Number(o['port'] ?? 0), addr: String(o['addr'] ?? ''),
    mechanism: o['mechanism'] === 'os' ? 'os' : 'shm', startedMs: Number(o['startedMs'] ?? 0),
  };
}

/**
 * The running listener of the installation, if any (pid file first, then the
 * header). Only a live jdls process of a trusted user counts (isOurProcess):
 * a pid file naming a pid that now belongs to another program - recycled,
 * or planted - names no listener, so nobody signals that program.
 */
export function findListener(dir: string): ListenerInfo | undefined {
  const f = readPidFile(dir);
  if (f && isOurProcess(f.pid, f.start, owners(dir))) return f;
  let table: LockTable;
  try {
    table = LockTable.open({ releaseDir: dir });
  } catch {
    return undefined;
  }
  try {
    const h = table.header();
    if (!isOurProcess(h.listenerPid, h.listenerStart, owners(dir))) return undefined;
    return { pid: h.listenerPid, start: h.listenerStart, port: h.listenerPort, addr: h.listenerAddr, mechanism: 'shm', startedMs: 0 };
  } finally {
    table.close();
  }
}

/**
 * Claim the installation's listener role before listening: the pid file is
 * created exclusively (safefile.createExclusive: link(2) of a complete
 * temporary file), so of two listeners started at once exactly one wins
 * (with port 0, both could otherwise listen). A pid file naming no live
 * listener of ours is stale (or planted) and replaced. Returns the live
 * listener that holds the claim, or undefined when this process now holds it.
 */
export function claimListener(dir: string): ListenerInfo | undefined {
  const me = { pid: process.pid, start: native.pidStart(process.pid), port: 0, addr: '', mechanism: 'shm', startedMs: Date.now() };
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      createExclusive(pidFilePath(dir), `${JSON.stringify(me)}\n`);
      return undefined;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
    const other = readPidFile(dir);
    if (other && other.pid !== process.pid && isOurProcess(other.pid, other.start, owners(dir))) return other;
    // Stale, planted (then rm removes the name, never a link's target), or
    // another claimant's (complete: createExclusive is atomic in content).
    fs.rmSync(pidFilePath(dir), { force: true });
  }
  const other = readPidFile(dir);
  if (other && isOurProcess(other.pid, other.start, owners(dir))) return other;
  throw new Error(`cannot claim ${pidFilePath(dir)}`);
}

/** This process as the installation's listener: pid file (atomically, never through a planted link) and header. */
export function publishListener(dir: string, info: Omit<ListenerInfo, 'pid' | 'start'>): ListenerInfo {
  const me: ListenerInfo = { pid: process.pid, start: native.pidStart(process.pid), ...info };
  replaceFile(pidFilePath(dir), `${JSON.stringify(me)}\n`);
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
