// mechanism.ts - which record-lock mechanism the lock server uses, and
// opening it in a lock-server process.
//
// Owns: the guide's rule (shared memory when the installation's lock monitor
// runs, else OS file locks) and the one place a mechanism is opened. Does
// not own: the mechanisms (src/table.ts, src/oslock.ts).
//
import { LockTable } from '../table.js';
import { OsLocks } from '../oslock.js';
import { isRunning } from '../cli/procs.js';
import type { MechanismKind, RecordLocks } from '../mechanism.js';

/**
 * The guide: shared-memory locks when the lock monitor runs (its table
 * exists and its header names a live monitor), else OS file locks.
 */
export function chooseMechanism(releaseDir: string): MechanismKind {
  let table: LockTable;
  try {
    table = LockTable.open({ releaseDir });
  } catch {
    return 'os';
  }
  try {
    const h = table.header();
    return isRunning(h.monitorPid, h.monitorStart) ? 'shm' : 'os';
  } finally {
    table.close();
  }
}

/** The OS file-lock mechanism over the configured lock directory. */
export function openOsLocks(lockDir: string): RecordLocks {
  return OsLocks.open({ lockDir });
}

/** Open a mechanism in this process (a lock-server process opens one and shares it among its clients). */
export function openMechanism(kind: MechanismKind, releaseDir: string, lockDir: string): RecordLocks {
  if (kind === 'shm') return LockTable.open({ releaseDir });
  return openOsLocks(lockDir);
}

/** Fail early (at listener start) if the mechanism cannot be opened here. */
export function probeMechanism(kind: MechanismKind, releaseDir: string, lockDir: string): void {
  openMechanism(kind, releaseDir, lockDir).close();
}
