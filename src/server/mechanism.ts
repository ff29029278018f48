// mechanism.ts - which record-lock mechanism the lock server uses, and
// opening it in a lock-server process.
//
// Owns: the guide's rule (shared memory when the installation's lock monitor
// runs, else OS file locks) and the one place a mechanism is opened. Does
// not own: the mechanisms (src/table.ts, src/oslock.ts).
//
// The OS file-lock mechanism (src/oslock.ts, OsLocks) is not in this build
// yet: openOsLocks() is the single function to change when it lands. Until
// then asking for it is a clear error, never a silent fall-back to shm.
import { LockTable } from '../table.js';
import { JdlsError } from '../errors.js';
import { isRunning } from '../cli/procs.js';
import type { MechanismKind, RecordLocks } from '../mechanism.js';

export const OS_LOCKS_UNAVAILABLE = 'OS file locks are not available in this build';

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

/** The OS file-lock mechanism. Replace the body with `return OsLocks.open();` when src/oslock.ts lands. */
export function openOsLocks(): RecordLocks {
  throw new JdlsError('SYSTEM', OS_LOCKS_UNAVAILABLE);
}

/** Open a mechanism in this process (a lock-server process opens one and shares it among its clients). */
export function openMechanism(kind: MechanismKind, releaseDir: string): RecordLocks {
  if (kind === 'shm') return LockTable.open({ releaseDir });
  return openOsLocks();
}

/** Fail early (at listener start) if the mechanism cannot be opened here. */
export function probeMechanism(kind: MechanismKind, releaseDir: string): void {
  openMechanism(kind, releaseDir).close();
}
