// stats.ts - the lock server's figures in the table header: "Lock retries:"
// of `jdls -dvL` (one per WAITING interim message sent).
//
// Owns: counting. Does not own: the header layout (native) or display.
//
// Trap: the addon offers setHeader('lockRetries', n), a store, not an atomic
// add. Lock-server processes are many, so this is read-add-store: two
// processes adding in the same instant can lose one count. Interim messages
// come every interimMs per waiting request, so collisions are rare and the
// figure is a statistic, not an invariant. (A native fetch-add would close it.)
import type { RecordLocks } from '../mechanism.js';
import { LockTable } from '../table.js';

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
        mech.setHeader('lockRetries', mech.header().lockRetries + 1);
      } catch {
        /* a closed or removed table: the figure is lost, nothing else */
      }
    },
  };
}
