// mechanism.ts - the one interface both record-lock mechanisms offer.
//
// jDLS has two: the shared-memory table (src/locks/table.ts, LockTable) and OS file
// locks (src/locks/oslock.ts). The lock server and the broker take record locks
// through this interface and cannot tell the two apart, except through what
// `kind` and a mechanism's own listing can show.
import type { FileId, Owner, LockMode, LockResult, LockOptions, Holder, LockGrant, WaitOptions } from './table.js';

export type MechanismKind = 'shm' | 'os';

export interface RecordLocks {
  readonly kind: MechanismKind;
  /** NOWAIT (jBASE's LOCKED clause): granted, or who holds it. */
  tryLock(owner: Owner, file: FileId, key: Buffer | string, mode: LockMode): LockResult;
  /** Wait until granted; rejects with TIMEOUT / ABORTED / DEADLOCK having left the queue. Never blocks the event loop or the libuv pool. */
  lock(owner: Owner, file: FileId, key: Buffer | string, mode: LockMode, opts?: LockOptions): Promise<LockGrant>;
  /**
   * Optional, callback form of lock() (LockTable has it): done is called
   * once, no error when granted (then with the grant's fencing token, if
   * the mechanism gives one); synchronously when settled at once (result
   * 0), else the result is an id for cancelWait().
   */
  wait?(owner: Owner, file: FileId, key: Buffer | string, mode: LockMode, done: (err?: Error, token?: bigint) => void, opts?: WaitOptions): number;
  cancelWait?(id: number): void;
  /** Release one key; false if this owner did not hold it. */
  unlock(owner: Owner, file: FileId, key: Buffer | string): boolean;
  /** Release all of an owner's record locks, or those in one file; returns how many. */
  unlockAll(owner: Owner, file?: FileId): number;
  /** jBASE RECORDLOCKED(): 2/1 held by this owner, 0 free, -2/-1 by another (holder when known). */
  status(owner: Owner, file: FileId, key: Buffer | string): { code: number; holder?: Holder; token?: bigint };
  /** F_GETLK: the first lock of ANOTHER owner that blocks `mode`, past this owner's own; undefined if none. */
  conflict(owner: Owner, file: FileId, key: Buffer | string, mode: LockMode): Holder | undefined;
  /**
   * Optional: make every later grant's token exceed `token`'s epoch (a
   * SERVER2 secondary told what its primary gave: docs/fencing.md). True
   * when the epoch moved. BAD_ARGUMENT for a token out of range or too far
   * above (MAX_FENCE_JUMP).
   */
  raiseTokenFloor?(token: bigint): boolean;
  close(): void;
}

const noop = (): void => undefined;

/**
 * Start a waiting lock request on any mechanism: `done` is called once (no
 * argument: granted), perhaps synchronously. Returns the withdrawal, after
 * which done gets ABORTED unless the grant won the race. Uses the
 * mechanism's callback form when it has one (no promise, no AbortController
 * per request: the lock server's allocation sets its GC pauses), else lock()
 * with an AbortSignal.
 */
export function startWait(mech: RecordLocks, owner: Owner, file: FileId, key: Buffer | string, mode: LockMode, done: (err?: Error, token?: bigint) => void, opts: WaitOptions = {}): () => void {
  if (mech.wait && mech.cancelWait) {
    const id = mech.wait(owner, file, key, mode, done, opts);
    if (id === 0) return noop;
    const cancel = mech.cancelWait.bind(mech);
    return () => cancel(id);
  }
  const ac = new AbortController();
  mech.lock(owner, file, key, mode, { signal: ac.signal, ...opts }).then(
    (g) => done(undefined, g.token),
    (e: unknown) => done(e instanceof Error ? e : new Error(String(e))),
  );
  return () => ac.abort();
}
