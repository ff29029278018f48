// mechanism.ts - which record-lock mechanism the lock server uses, and
// opening it in a lock-server process.
//
// Owns: the rule (the shm table when the installation has one in service,
// else OS file locks) and the one place a mechanism is opened. Does not
// own: the mechanisms (src/locks/table.ts, src/locks/oslock.ts), nor the service state
// (native/common/jdls_service.c).
//
import fs from 'node:fs';
import { LockTable } from '../locks/table.js';
import { OsLocks } from '../locks/oslock.js';
import { native, C } from '../native.js';
import { JdlsError } from '../errors.js';
import { tablePath } from '../installation.js';
import type { MechanismKind, RecordLocks } from '../locks/mechanism.js';
import type { TokenSource } from '../locks/token-counter.js';

/** How long a lock server waits for a table that is being put in service. */
export const STARTING_WAIT_MS = 15_000;

/** The table's service state, or undefined when there is none (or it cannot be read). */
function serviceOf(releaseDir: string): number | undefined {
  let table: LockTable;
  try {
    table = LockTable.open({ releaseDir });
  } catch {
    return undefined;
  }
  try {
    return table.header().service;
  } finally {
    table.close();
  }
}

/**
 * The guide: local processes use the same mechanism as the lock service.
 * That is the installation's state - a table in service (its header says
 * so), whether its monitor runs or not - never the monitor's liveness: a
 * listener that chose by liveness served OS locks while the table's users
 * locked in shared memory. A table being put in service is waited for.
 */
export function chooseMechanism(releaseDir: string): MechanismKind {
  const until = Date.now() + STARTING_WAIT_MS;
  for (;;) {
    const s = serviceOf(releaseDir);
    if (s === C.SERVICE_ON) return 'shm';
    if (s !== C.SERVICE_STARTING || Date.now() >= until) return 'os';
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 20);
  }
}

/** The OS file-lock mechanism over the configured lock directory (also the OSLOCKS flag's). */
export function openOsLocks(lockDir: string, tokens?: TokenSource): RecordLocks {
  // maxProbes: a lock-server process takes no classic locks, so closing a
  // probe loses nothing; unbounded, one client's STATUS on many files
  // spent a descriptor each (docs/server.md "Limits").
  return OsLocks.open({ lockDir, maxProbes: 256, ...(tokens ? { tokens } : {}) });
}

/** This process's OS-route registration (kept open for its life), if made. */
let osRouteFd: number | undefined;

/**
 * Before a process serves record locks as OS file locks because no table is
 * in service, it registers (the marker's read lock, jdls_service.c): while
 * it lives no table can enter service under its locks. Then it looks again:
 * a table that appeared meanwhile is used instead. Returns the mechanism to
 * use.
 */
function registerOsRoute(releaseDir: string): MechanismKind {
  if (osRouteFd !== undefined) return 'os';
  const fd = native.registerOsRoute(tablePath(releaseDir), releaseDir);
  if (fd < 0) throw new JdlsError('SYSTEM', `cannot register for OS record locks beside ${tablePath(releaseDir)} (errno ${-fd})`);
  if (chooseMechanism(releaseDir) === 'shm') {
    fs.closeSync(fd);
    return 'shm';
  }
  osRouteFd = fd;
  return 'os';
}

/** Open a mechanism in this process (a lock-server process opens one and shares it among its clients). */
export function openMechanism(kind: MechanismKind, releaseDir: string, lockDir: string, tokens?: TokenSource): RecordLocks {
  if (kind === 'os' && registerOsRoute(releaseDir) === 'os') return openOsLocks(lockDir, tokens);
  return LockTable.open({ releaseDir });
}

/** Fail early (at listener start) if the mechanism cannot be opened here. */
export function probeMechanism(kind: MechanismKind, releaseDir: string, lockDir: string): void {
  openMechanism(kind, releaseDir, lockDir).close();
}
