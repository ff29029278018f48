// mechanism.ts - the one interface both record-lock mechanisms offer.
//
// jDLS has two: the shared-memory table (src/table.ts, LockTable) and OS file
// locks (src/oslock.ts). The lock server and the broker take record locks
// through this interface and cannot tell the two apart, except through what
// `kind` and a mechanism's own listing can show.
import type { FileId, Owner, LockMode, LockResult, LockOptions, Holder } from './table.js';

export type MechanismKind = 'shm' | 'os';

export interface RecordLocks {
  readonly kind: MechanismKind;
  /** NOWAIT (jBASE's LOCKED clause): granted, or who holds it. */
  tryLock(owner: Owner, file: FileId, key: Buffer | string, mode: LockMode): LockResult;
  /** Wait until granted; rejects with TIMEOUT / ABORTED having left the queue. Never blocks the event loop or the libuv pool. */
  lock(owner: Owner, file: FileId, key: Buffer | string, mode: LockMode, opts?: LockOptions): Promise<void>;
  /** Release one key; false if this owner did not hold it. */
  unlock(owner: Owner, file: FileId, key: Buffer | string): boolean;
  /** Release all of an owner's record locks, or those in one file; returns how many. */
  unlockAll(owner: Owner, file?: FileId): number;
  /** jBASE RECORDLOCKED(): 2/1 held by this owner, 0 free, -2/-1 by another (holder when known). */
  status(owner: Owner, file: FileId, key: Buffer | string): { code: number; holder?: Holder };
  close(): void;
}
