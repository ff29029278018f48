// stats.ts - the lock server's figures in the table header: "Lock retries:"
// of `jdls -dvL` (one per WAITING interim message sent).
//
// Owns: counting. Does not own: the header layout (native) or display.
//
// Many lock-server processes count into one header: countLockRetry() is an
// atomic add in the segment (a read-add-store from here could lose counts).
import type { RecordLocks } from '../locks/mechanism.js';
import { LockTable } from '../locks/table.js';

export interface ServerStats {
  /** One distributed lock retry (an interim WAITING message). */
  lockRetry(): void;
}

/** Counts into the shm table's header when the mechanism is the table; else nowhere. */
export function statsFor(mech: RecordLocks): ServerStats {
  if (!(mech instanceof LockTable)) return { lockRetry: () => {} };
  return {
    lockRetry: () => {
      try {
        mech.countLockRetry();
      } catch {
        /* a closed or removed table: the figure is lost, nothing else */
      }
    },
  };
}
