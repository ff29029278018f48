// held.ts - the locks one connection holds, as its lock-server process knows
// them: for the per-client limit (maxLocksPerClient) and to know which
// mechanism holds a lock taken with the OSLOCKS flag.
//
// Owns: bookkeeping only. The mechanism (RecordLocks) stays the authority on
// what is held; on disconnect the session releases through unlockAll, not
// through this list. Does not own: taking or releasing locks.
import type { RecordLocks } from '../mechanism.js';

/** (inode, dev) as one map key (made once per file: see FileMap). */
export const fileKey = (inode: bigint, dev: bigint): string => `${inode}:${dev}`;

/**
 * (inode, dev) -> T, looked up without building a string per request: a
 * BigInt's text and the string's hash were a visible part of a request's
 * cost in the lock server (perf, docs/benchmarks.md).
 */
export class FileMap<T> {
  #byDev = new Map<bigint, Map<bigint, T>>();
  #size = 0;

  get size(): number {
    return this.#size;
  }

  get(inode: bigint, dev: bigint): T | undefined {
    return this.#byDev.get(dev)?.get(inode);
  }

  set(inode: bigint, dev: bigint, v: T): void {
    let m = this.#byDev.get(dev);
    if (!m) this.#byDev.set(dev, (m = new Map()));
    if (!m.has(inode)) this.#size++;
    m.set(inode, v);
  }

  clear(): void {
    this.#byDev.clear();
    this.#size = 0;
  }
}

export class HeldLocks {
  /** tid -> file -> key (hex) -> the mechanism that holds it */
  #byTid = new Map<number, Map<string, Map<string, RecordLocks>>>();
  #count = 0;

  /** Locks held by the connection. */
  get count(): number {
    return this.#count;
  }

  has(tid: number, file: string, key: string): boolean {
    return this.#byTid.get(tid)?.get(file)?.has(key) ?? false;
  }

  /** The mechanism holding it, if this connection holds it. */
  get(tid: number, file: string, key: string): RecordLocks | undefined {
    return this.#byTid.get(tid)?.get(file)?.get(key);
  }

  /** Holds nothing under this tid. */
  idle(tid: number): boolean {
    return !this.#byTid.has(tid);
  }

  add(tid: number, file: string, key: string, mech: RecordLocks): void {
    let files = this.#byTid.get(tid);
    if (!files) this.#byTid.set(tid, (files = new Map()));
    let keys = files.get(file);
    if (!keys) files.set(file, (keys = new Map()));
    if (!keys.has(key)) this.#count++;
    keys.set(key, mech);
  }

  delete(tid: number, file: string, key: string): void {
    const files = this.#byTid.get(tid);
    const keys = files?.get(file);
    if (!files || !keys || !keys.delete(key)) return;
    this.#count--;
    if (keys.size === 0) files.delete(file);
    if (files.size === 0) this.#byTid.delete(tid);
  }

  deleteFile(tid: number, file: string): void {
    const files = this.#byTid.get(tid);
    const keys = files?.get(file);
    if (!files || !keys) return;
    this.#count -= keys.size;
    files.delete(file);
    if (files.size === 0) this.#byTid.delete(tid);
  }

  deleteTid(tid: number): void {
    const files = this.#byTid.get(tid);
    if (!files) return;
    for (const keys of files.values()) this.#count -= keys.size;
    this.#byTid.delete(tid);
  }

  clear(): void {
    this.#byTid.clear();
    this.#count = 0;
  }
}
