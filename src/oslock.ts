// oslock.ts - the OS file-lock mechanism for record locks (kind 'os'): the
// second implementation of RecordLocks (src/mechanism.ts), beside the
// shared-memory table.
//
// Owns: the lock directory, which open file description each owner uses for
// each lock file, the registry of held keys per owner (key bytes, mode,
// file) and the holder identities the kernel cannot report. Does not own:
// the byte-range primitive, waits and errno mapping (src/ofd.ts, native/).
//
// A record lock on (inode, dev, key) is an OFD lock on ONE byte of
// <lockDir>/jlock_<inode low 32 bits, 8 hex>_<dev low 32 bits, 8 hex>, at
// the byte given by a 62-bit hash of the key (jdls_osl_key_offset). Each
// owner has its own open file description per lock file, so owners of one
// process conflict with each other as separate processes do, and with
// classic fcntl locks that other processes take on the same byte.
//
// Two keys of one file can hash to one byte. Then they conflict when they
// need not - only ever the direction of locking MORE. Within one owner the
// registry counts the keys on each byte, so releasing one of two colliding
// keys keeps the byte locked for the other (see #apply).
import fs from 'node:fs';
import path from 'node:path';
import { JdlsError } from './errors.js';
import { C } from './native.js';
import type { RecordLocks } from './mechanism.js';
import type { FileId, Owner, LockMode, LockResult, LockOptions, Holder } from './table.js';
import {
  osn, OSL, osError, OsLockError, openNativeOfd, startWait, typeOf, modeOf,
  type NativeOfd, type PendingWait, type OsLockErrorCode,
} from './ofd.js';

export const DEFAULT_LOCK_DIR = '/tmp/jbase';

export interface OsLocksOptions {
  /** where the jlock_* files live; default /tmp/jbase (created 01777 if missing) */
  lockDir?: string;
  /** -P: a lock belongs to (ip, port), not to (ip, ownerPid, ownerTid) */
  portLocks?: boolean;
  /** descriptors of owners that hold nothing in a file, kept open for reuse; default 256 */
  maxIdleFiles?: number;
}

/** One held record lock, for displays (jdls -dvL) and tests. */
export interface OsLockRow {
  pid: number;
  ownerPid: number;
  ownerTid: number;
  port: number;
  ip: string;
  inode: bigint;
  dev: bigint;
  key: Buffer;
  mode: LockMode;
  /** the lock file and the byte */
  lockFile: string;
  offset: bigint;
}

interface Held {
  mode: LockMode;
  off: bigint;
}

/** Keys of one owner on one byte (normally one key). */
interface ByteUse {
  r: number;
  w: number;
}

/**
 * One owner's open file description on one lock file. Registry invariant:
 * the kernel holds, for this description, byte `off` in mode
 * effective(bytes.get(off)) - WRITE if any key there is WRITE, READ if any
 * is READ, nothing otherwise.
 */
class OwnerFile {
  readonly keys = new Map<string, Held>();
  readonly bytes = new Map<bigint, ByteUse>();
  readonly waits = new Set<PendingWait>();
  constructor(
    readonly owner: Owner,
    readonly ownerId: string,
    readonly file: FileId,
    readonly lockFile: string,
    readonly ofd: NativeOfd,
  ) {}
}

// Every OwnerFile of every OsLocks in this environment, by lock file: a
// conflict with another owner of THIS process is named from here (the
// kernel reports an OFD holder as pid -1).
const byLockFile = new Map<string, Set<OwnerFile>>();

const NONE = -1;
const effective = (u: ByteUse | undefined): number => (!u ? NONE : u.w > 0 ? OSL.WRITE : u.r > 0 ? OSL.READ : NONE);

// Registry keys are the key's bytes as a latin1 string: exact, reversible
// (Buffer.from(s, 'latin1')), and equal for a string key and a Buffer with
// its UTF-8 bytes.
const ASCII = /^[\x00-\x7f]*$/;
function keyString(key: Buffer | string): string {
  if (typeof key === 'string') return ASCII.test(key) ? key : Buffer.from(key, 'utf8').toString('latin1');
  return key.toString('latin1');
}

function checkKey(key: Buffer | string): void {
  if (typeof key !== 'string' && !Buffer.isBuffer(key)) throw new JdlsError('BAD_ARGUMENT', 'key must be a Buffer or a string');
  const len = typeof key === 'string' ? Buffer.byteLength(key) : key.length;
  if (len > C.MAX_KEY) throw new JdlsError('KEY_TOO_LONG', `key is ${len} bytes; the longest a lock can hold is ${C.MAX_KEY}`);
}

function holderOfOwner(o: Owner, mode: LockMode): Holder {
  return { pid: o.pid, ownerPid: o.ownerPid, ownerTid: o.ownerTid, port: o.port, mode, ip: o.ip };
}

/** A holder only the kernel knows: its pid (classic lock) or -1 (OFD lock of some description). */
function holderOfPid(pid: number, mode: LockMode): Holder {
  return { pid, ownerPid: pid, ownerTid: 0, port: 0, mode, ip: '0.0.0.0' };
}

/** The lock file of a file identity: <dir>/jlock_%08x_%08x (low 32 bits each; dev -1 -> ffffffff). */
export function lockFileName(dir: string, file: { inode: bigint; dev: bigint }): string {
  const p = osn.lockPath(dir, BigInt.asUintN(64, file.inode), file.dev);
  if (typeof p === 'number') throw osError(p, 'lock file name in', dir);
  return p;
}

/** The byte a key locks in its lock file. */
export function keyOffset(key: Buffer | string): bigint {
  return osn.keyOffset(key);
}

function dirError(rc: number, dir: string): OsLockError {
  const e = osError(rc, 'lock directory', dir);
  const code: OsLockErrorCode = e.osCode === 'BAD_PATH' ? 'BAD_LOCK_DIR' : e.osCode;
  return new OsLockError(code, e.message, e.errno, dir);
}

export class OsLocks implements RecordLocks {
  readonly kind = 'os' as const;
  readonly lockDir: string;
  readonly portLocks: boolean;
  readonly #maxIdle: number;
  // owner id -> lock file -> that owner's description
  #owners = new Map<string, Map<string, OwnerFile>>();
  // descriptions whose owner holds nothing in them, oldest first
  #idle = new Map<OwnerFile, true>();
  // one read-only look per lock file for status() of owners without a description
  #probes = new Map<string, NativeOfd>();
  #ownerIds = new WeakMap<Owner, string>();
  #lockFiles = new WeakMap<FileId, string>();
  #closed = false;

  private constructor(dir: string, portLocks: boolean, maxIdle: number) {
    this.lockDir = dir;
    this.portLocks = portLocks;
    this.#maxIdle = maxIdle;
  }

  /**
   * The mechanism over a lock directory: creates it (mode 01777) if missing.
   * Throws OsLockError BAD_LOCK_DIR (missing parent, not a directory) or
   * PERMISSION (cannot create or write in it), naming the directory.
   */
  static open(opts: OsLocksOptions = {}): OsLocks {
    const dir = path.resolve(opts.lockDir ?? DEFAULT_LOCK_DIR);
    const maxIdle = opts.maxIdleFiles ?? 256;
    if (!Number.isInteger(maxIdle) || maxIdle < 0) throw new JdlsError('BAD_ARGUMENT', `maxIdleFiles must be an integer >= 0, got ${maxIdle}`);
    const rc = osn.ensureDir(dir);
    if (rc < 0) throw dirError(rc, dir);
    try {
      fs.accessSync(dir, fs.constants.W_OK | fs.constants.X_OK);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code ?? '';
      throw new OsLockError('PERMISSION', `lock directory ${dir}: no permission to create lock files (${code})`, code, dir);
    }
    return new OsLocks(dir, opts.portLocks ?? false, maxIdle);
  }

  // ---- identities --------------------------------------------------------

  #ownerId(o: Owner): string {
    let id = this.#ownerIds.get(o);
    if (id === undefined) {
      id = this.portLocks ? `${o.ip}|port ${o.port}` : `${o.ip}|${o.ownerPid}|${o.ownerTid}`;
      this.#ownerIds.set(o, id);
    }
    return id;
  }

  /** The lock file of a file identity in this mechanism's directory. */
  lockFile(file: FileId): string {
    let p = this.#lockFiles.get(file);
    if (p === undefined) {
      p = lockFileName(this.lockDir, file);
      this.#lockFiles.set(file, p);
    }
    return p;
  }

  #check(): void {
    if (this.#closed) throw new JdlsError('CLOSED', 'OS lock mechanism is closed');
  }

  #find(owner: Owner, file: FileId): OwnerFile | undefined {
    return this.#owners.get(this.#ownerId(owner))?.get(this.lockFile(file));
  }

  #get(owner: Owner, file: FileId): OwnerFile {
    const oid = this.#ownerId(owner);
    const lf = this.lockFile(file);
    let files = this.#owners.get(oid);
    const found = files?.get(lf);
    if (found) return found;
    let ofd: NativeOfd;
    try {
      ofd = openNativeOfd(lf, true);
    } catch (e) {
      if (e instanceof OsLockError && e.osCode === 'BAD_PATH') throw new OsLockError('BAD_LOCK_DIR', e.message, e.errno, e.path);
      throw e;
    }
    const of = new OwnerFile(owner, oid, file, lf, ofd);
    if (!files) this.#owners.set(oid, (files = new Map()));
    files.set(lf, of);
    let set = byLockFile.get(lf);
    if (!set) byLockFile.set(lf, (set = new Set()));
    set.add(of);
    this.#idle.set(of, true);
    return of;
  }

  /** Close an owner's description: the kernel releases all its locks in that file. */
  #drop(of: OwnerFile): void {
    of.ofd.close();
    this.#idle.delete(of);
    const files = this.#owners.get(of.ownerId);
    files?.delete(of.lockFile);
    if (files && files.size === 0) this.#owners.delete(of.ownerId);
    const set = byLockFile.get(of.lockFile);
    set?.delete(of);
    if (set && set.size === 0) byLockFile.delete(of.lockFile);
  }

  #idleNow(of: OwnerFile): void {
    this.#idle.delete(of);
    this.#idle.set(of, true);
    // Keep descriptors for reuse (an open() per lock would double a pair's
    // cost), but not without bound: a lock server sees many owners.
    while (this.#idle.size > this.#maxIdle) {
      let victim: OwnerFile | undefined;
      for (const v of this.#idle.keys()) {
        if (v.waits.size === 0 && v.keys.size === 0) { victim = v; break; }
      }
      if (!victim) break;
      this.#drop(victim);
    }
  }

  // ---- the registry ------------------------------------------------------

  /** Record `ks` held in `mode` (replacing its earlier mode). */
  #record(of: OwnerFile, ks: string, mode: LockMode, off: bigint): void {
    const held = of.keys.get(ks);
    let u = of.bytes.get(off);
    if (!u) of.bytes.set(off, (u = { r: 0, w: 0 }));
    if (held) {
      if (held.mode === 'write') u.w--;
      else u.r--;
      held.mode = mode;
    } else {
      if (of.keys.size === 0) this.#idle.delete(of);
      of.keys.set(ks, { mode, off });
    }
    if (mode === 'write') u.w++;
    else u.r++;
  }

  /** Forget `ks`; returns the byte's mode afterwards. */
  #forget(of: OwnerFile, held: Held, ks: string): number {
    const u = of.bytes.get(held.off);
    if (u) {
      if (held.mode === 'write') u.w--;
      else u.r--;
      if (u.r <= 0 && u.w <= 0) of.bytes.delete(held.off);
    }
    of.keys.delete(ks);
    if (of.keys.size === 0) this.#idleNow(of);
    return effective(of.bytes.get(held.off));
  }

  /** The byte's mode if `ks` were held in `mode` (undefined: released). */
  static #after(of: OwnerFile, held: Held | undefined, off: bigint, mode: LockMode): number {
    const u = of.bytes.get(off);
    let r = u?.r ?? 0;
    let w = u?.w ?? 0;
    if (held) {
      if (held.mode === 'write') w--;
      else r--;
    }
    if (mode === 'write') w++;
    else r++;
    return w > 0 ? OSL.WRITE : r > 0 ? OSL.READ : NONE;
  }

  /** Who else holds byte `off` of this lock file: an owner of this process, else what F_OFD_GETLK says. */
  #holder(of: OwnerFile, off: bigint, type: number): Holder | undefined {
    const set = byLockFile.get(of.lockFile);
    if (set) {
      for (const other of set) {
        if (other === of) continue;
        const t = effective(other.bytes.get(off));
        if (t === OSL.WRITE || (t === OSL.READ && type === OSL.WRITE)) return holderOfOwner(other.owner, modeOf(t));
      }
    }
    const g = of.ofd.getlk(off, 1n, type);
    if (typeof g === 'number') throw osError(g, 'testing a lock in', of.lockFile);
    return g ? holderOfPid(g.pid, modeOf(g.type)) : undefined;
  }

  // ---- RecordLocks -------------------------------------------------------

  /** NOWAIT (jBASE's LOCKED clause): granted, or who holds it. */
  tryLock(owner: Owner, file: FileId, key: Buffer | string, mode: LockMode): LockResult {
    this.#check();
    checkKey(key);
    typeOf(mode);
    const of = this.#get(owner, file);
    const ks = keyString(key);
    const held = of.keys.get(ks);
    if (held && held.mode === mode) return { granted: true };
    const off = held ? held.off : osn.keyOffset(key);
    const before = effective(of.bytes.get(off));
    const after = OsLocks.#after(of, held, off, mode);
    if (after !== before) {
      // Bounded: a conflict whose holder is gone by the time we ask is
      // retried, a few times, then reported without a name.
      for (let attempt = 0; ; attempt++) {
        const rc = of.ofd.setlk(off, 1n, after);
        if (rc === OSL.OK) break;
        if (rc !== OSL.CONFLICT) throw osError(rc, 'locking in', of.lockFile);
        const h = this.#holder(of, off, after);
        if (h) return { granted: false, holder: h };
        if (attempt >= 3) return { granted: false, holder: holderOfPid(-1, 'write') };
      }
    }
    this.#record(of, ks, mode, off);
    return { granted: true };
  }

  /**
   * Wait until granted: F_OFD_SETLKW on a thread of its own, so neither the
   * event loop nor the libuv pool waits. Rejects with TIMEOUT / ABORTED /
   * CLOSED having taken nothing (an owner's earlier READ stays if an upgrade
   * is withdrawn). Order among waiters is the kernel's: see docs/os-locks.md.
   */
  lock(owner: Owner, file: FileId, key: Buffer | string, mode: LockMode, opts: LockOptions = {}): Promise<void> {
    let of: OwnerFile, ks: string, off: bigint, after: number;
    try {
      if (opts.signal?.aborted) throw new JdlsError('ABORTED', 'lock request aborted');
      const r = this.tryLock(owner, file, key, mode);
      if (r.granted) return Promise.resolve();
      of = this.#get(owner, file);
      ks = keyString(key);
      const held = of.keys.get(ks);
      off = held ? held.off : osn.keyOffset(key);
      after = OsLocks.#after(of, held, off, mode);
    } catch (e) {
      return Promise.reject(e instanceof Error ? e : new Error(String(e)));
    }
    const waits = of.waits;
    const w: PendingWait = startWait({
      ofd: of.ofd,
      start: off,
      len: 1n,
      type: after,
      path: of.lockFile,
      opts,
      onSettled: () => waits.delete(w),
      onGranted: () => {
        if (this.#closed) return;
        // The registry may have moved while we waited (this owner locked or
        // released a colliding key): put the kernel's byte back in line.
        this.#record(of, ks, mode, off);
        const eff = effective(of.bytes.get(off));
        if (eff !== after) of.ofd.setlk(off, 1n, eff === NONE ? OSL.UNLOCK : eff);
      },
    });
    if (w.pending) {
      waits.add(w);
      this.#idle.delete(of); // not a victim while it waits
    }
    return w.promise;
  }

  /** Release one key. False if this owner did not hold it. */
  unlock(owner: Owner, file: FileId, key: Buffer | string): boolean {
    this.#check();
    checkKey(key);
    const of = this.#find(owner, file);
    if (!of) return false;
    const ks = keyString(key);
    const held = of.keys.get(ks);
    if (!held) return false;
    const before = effective(of.bytes.get(held.off));
    const off = held.off;
    const after = this.#forget(of, held, ks);
    if (after !== before) {
      // A release or a downgrade: the kernel grants both at once.
      const rc = of.ofd.setlk(off, 1n, after === NONE ? OSL.UNLOCK : after);
      if (rc !== OSL.OK) throw osError(rc < 0 ? rc : -11, 'unlocking in', of.lockFile);
    }
    return true;
  }

  /**
   * Release all of an owner's record locks, or those in one file; returns
   * how many keys. The owner's description on each file is closed (the
   * kernel releases everything it held there) unless a wait still uses it;
   * then the whole file is unlocked on it instead.
   */
  unlockAll(owner: Owner, file?: FileId): number {
    this.#check();
    const files = this.#owners.get(this.#ownerId(owner));
    if (!files) return 0;
    const list = file ? [files.get(this.lockFile(file))].filter((x): x is OwnerFile => x !== undefined) : [...files.values()];
    let n = 0;
    for (const of of list) {
      n += of.keys.size;
      of.keys.clear();
      of.bytes.clear();
      if (of.waits.size === 0) this.#drop(of);
      else {
        const rc = of.ofd.setlk(0n, 0n, OSL.UNLOCK);
        if (rc !== OSL.OK) throw osError(rc, 'unlocking all in', of.lockFile);
      }
    }
    return n;
  }

  /**
   * jBASE RECORDLOCKED(): 2/1 held by this owner (WRITE/READ, from the
   * registry), 0 free, -2/-1 held by another. The holder is named when it
   * is an owner of this process; otherwise it is what F_OFD_GETLK reports:
   * the pid of a classic fcntl holder, -1 for an OFD holder elsewhere.
   */
  status(owner: Owner, file: FileId, key: Buffer | string): { code: number; holder?: Holder } {
    this.#check();
    checkKey(key);
    const of = this.#find(owner, file);
    const ks = keyString(key);
    const held = of?.keys.get(ks);
    if (held) return { code: held.mode === 'write' ? C.RL_WRITE : C.RL_READ };
    const lf = this.lockFile(file);
    const off = osn.keyOffset(key);
    const set = byLockFile.get(lf);
    if (set) {
      for (const other of set) {
        if (other === of) continue;
        const t = effective(other.bytes.get(off));
        if (t !== NONE) return { code: t === OSL.WRITE ? -C.RL_WRITE : -C.RL_READ, holder: holderOfOwner(other.owner, modeOf(t)) };
      }
    }
    const probe = of?.ofd ?? this.#probe(lf);
    if (!probe) return { code: C.RL_FREE };
    const g = probe.getlk(off, 1n, OSL.WRITE);
    if (typeof g === 'number') throw osError(g, 'testing a lock in', lf);
    if (!g) return { code: C.RL_FREE };
    return { code: g.type === OSL.WRITE ? -C.RL_WRITE : -C.RL_READ, holder: holderOfPid(g.pid, modeOf(g.type)) };
  }

  // Why probes are kept, not opened and closed per call: close() of ANY
  // descriptor drops this process's CLASSIC locks on the file. We take none,
  // but a host program (or the preload shim) in this process might.
  #probe(lf: string): NativeOfd | undefined {
    let p = this.#probes.get(lf);
    if (p) return p;
    const fd = osn.open(lf, false);
    if (fd < 0) {
      if (fd === -2 /* ENOENT: never locked, so free */) return undefined;
      throw osError(fd, 'opening lock file', lf);
    }
    p = new osn.Ofd(fd);
    this.#probes.set(lf, p);
    return p;
  }

  // ---- listings ----------------------------------------------------------

  /** Every record lock this mechanism holds for its owners (registry snapshot). */
  rows(): OsLockRow[] {
    const out: OsLockRow[] = [];
    for (const files of this.#owners.values()) {
      for (const of of files.values()) {
        for (const [ks, h] of of.keys) {
          const o = of.owner;
          out.push({
            pid: o.pid, ownerPid: o.ownerPid, ownerTid: o.ownerTid, port: o.port, ip: o.ip,
            inode: of.file.inode, dev: of.file.dev, key: Buffer.from(ks, 'latin1'), mode: h.mode,
            lockFile: of.lockFile, offset: h.off,
          });
        }
      }
    }
    return out;
  }

  /** Open descriptions (owner x lock file) and probes: what this mechanism costs in descriptors. */
  openFiles(): { owners: number; probes: number } {
    let owners = 0;
    for (const files of this.#owners.values()) owners += files.size;
    return { owners, probes: this.#probes.size };
  }

  /** Withdraw pending waits (they reject with CLOSED) and close every description: the kernel releases all locks. */
  close(): void {
    if (this.#closed) return;
    for (const files of [...this.#owners.values()]) {
      for (const of of [...files.values()]) {
        for (const w of [...of.waits]) w.cancel(new JdlsError('CLOSED', 'OS lock mechanism closed while waiting'));
      }
    }
    this.#closed = true;
    for (const files of [...this.#owners.values()]) for (const of of [...files.values()]) this.#drop(of);
    for (const p of this.#probes.values()) p.close();
    this.#probes.clear();
  }
}
