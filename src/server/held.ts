// held.ts - the locks one connection holds, as its lock-server process knows
// them: for the per-client limit (maxLocksPerClient) and to know which
// mechanism holds a lock taken with the OSLOCKS flag.
//
// Owns: bookkeeping only. The mechanism (RecordLocks) stays the authority on
// what is held; on disconnect the session releases through unlockAll, not
// through this list. Does not own: taking or releasing locks.
import type { RecordLocks } from '../locks/mechanism.js';

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
  /**
   * `${tid}|${file}|${key}` -> the mechanism holding it. One flat Map, with
   * a placeholder entry so that it never drops to zero entries. Trap: V8
   * reallocates a Map's table when a delete leaves fewer entries than half
   * its buckets, so per-(thread, file) Maps going 1 -> 0 -> 1 entries cost a
   * table (and a new Map) per request - a quarter of the lock server's
   * allocation (docs/benchmarks.md). tid and file have no '|', so a prefix
   * names a thread's or a file's locks whatever bytes the key holds.
   */
  #locks = new Map<string, RecordLocks | null>([['', null]]);
  /** tid -> locks held; entries stay at 0 (forget() removes them) */
  #perTid = new Map<number, number>();
  /** file -> OS-mechanism locks held in it (maxOsLocksPerFile) */
  #osPerFile = new Map<string, number>();

  /** OS-mechanism locks this connection holds in `file` (any thread). */
  osInFile(file: string): number {
    return this.#osPerFile.get(file) ?? 0;
  }

  #os(k: string, mech: RecordLocks | null | undefined, d: number): void {
    if (!mech || mech.kind !== 'os') return;
    const file = k.slice(k.indexOf('|') + 1, k.indexOf('|', k.indexOf('|') + 1));
    const n = (this.#osPerFile.get(file) ?? 0) + d;
    if (n > 0) this.#osPerFile.set(file, n);
    else this.#osPerFile.delete(file);
  }

  /** Locks held by the connection. */
  get count(): number {
    return this.#locks.size - 1;
  }

  has(tid: number, file: string, key: string): boolean {
    return this.#locks.has(`${tid}|${file}|${key}`);
  }

  /** The mechanism holding it, if this connection holds it. */
  get(tid: number, file: string, key: string): RecordLocks | undefined {
    return this.#locks.get(`${tid}|${file}|${key}`) ?? undefined;
  }

  /** Holds nothing under this tid. */
  idle(tid: number): boolean {
    return (this.#perTid.get(tid) ?? 0) === 0;
  }

  /** Drop an idle tid's counter (its owner is forgotten). */
  forget(tid: number): void {
    if (this.idle(tid)) this.#perTid.delete(tid);
  }

  add(tid: number, file: string, key: string, mech: RecordLocks): void {
    const k = `${tid}|${file}|${key}`;
    if (!this.#locks.has(k)) {
      this.#perTid.set(tid, (this.#perTid.get(tid) ?? 0) + 1);
      this.#os(k, mech, 1);
    }
    this.#locks.set(k, mech);
  }

  delete(tid: number, file: string, key: string): void {
    const k = `${tid}|${file}|${key}`;
    const mech = this.#locks.get(k);
    if (this.#locks.delete(k)) {
      this.#perTid.set(tid, (this.#perTid.get(tid) ?? 1) - 1);
      this.#os(k, mech, -1);
    }
  }

  /**
   * Every lock held, as (tid, file key, key text, mechanism): the info
   * record's view (written at most every INFO_FLUSH_MS, so a scan is fine).
   */
  *entries(): Generator<{ tid: number; file: string; key: string; mech: RecordLocks; id: string }> {
    for (const [k, mech] of this.#locks) {
      if (!mech) continue; // the placeholder
      const a = k.indexOf('|');
      const b = k.indexOf('|', a + 1);
      yield { tid: Number(k.slice(0, a)), file: k.slice(a + 1, b), key: k.slice(b + 1), mech, id: k };
    }
  }

  /** A thread's locks in one file (UNLOCK_FILE): a scan, as rare as the request. */
  deleteFile(tid: number, file: string): void {
    this.#deletePrefix(tid, `${tid}|${file}|`);
  }

  deleteTid(tid: number): void {
    this.#deletePrefix(tid, `${tid}|`);
  }

  #deletePrefix(tid: number, prefix: string): void {
    let n = 0;
    for (const [k, mech] of this.#locks) {
      if (k.startsWith(prefix)) {
        this.#os(k, mech, -1);
        this.#locks.delete(k);
        n++;
      }
    }
    if (n > 0) this.#perTid.set(tid, (this.#perTid.get(tid) ?? n) - n);
  }

  clear(): void {
    this.#locks.clear();
    this.#locks.set('', null);
    this.#perTid.clear();
    this.#osPerFile.clear();
  }
}
