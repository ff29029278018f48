// oslock.ts - the OS file-lock mechanism for record locks (kind 'os'): the
// second implementation of RecordLocks (src/locks/mechanism.ts), beside the
// shared-memory table.
//
// Owns: the lock directory, which open file description each owner uses for
// each lock file, the registry of held keys per owner (key bytes, mode,
// file) and the holder identities the kernel cannot report. Does not own:
// the byte-range primitive, waits and errno mapping (src/locks/ofd.ts, native/).
// Also owns the FILELOCK of a file when it is taken over these record locks
// (BinaryLocks.fileLock with this mechanism: see "FILELOCK" below).
//
// A record lock on (inode, dev, key) is an OFD lock on ONE byte of
// <lockDir>/jlock_<inode low 32 bits, 8 hex>_<dev low 32 bits, 8 hex>, at
// the byte given by a 62-bit hash of the key (jdls_osl_key_offset). Each
// owner has its own open file description per lock file, so owners of one
// process conflict with each other as separate processes do, and with
// classic fcntl locks that other processes take on the same byte.
//
// Two keys of one file can hash to one byte. Then they conflict when they
// need not - only ever the direction of locking MORE.
//
// The name keeps 32 bits of the inode (the guide's format), so two files
// whose inodes differ only above bit 32 (XFS, btrfs) share a lock file. For
// such a file ("name not exact", jdls_osl_name_exact) every key travels with
// the file's identity in front (16 bytes: inode, dev, big-endian): the
// prefixed key chooses the byte and is what the registry holds, so the two
// files' keys never meet. Without it, an owner holding K in both files
// released K in both with one release (the registry counted the second lock
// as a re-lock) - locking LESS. jdls_osl_key_offset in C does the same, so a
// C process agrees on every byte. Within one owner the
// registry (KeyRegistry in native/addon/oslock.cc, one per description)
// counts the keys on each byte, so releasing one of two colliding keys keeps
// the byte locked for the other.
// Buffer imported, not the global: in an ES module the global `Buffer` is a
// getter, called on every use (a LoadGlobalIC and a call on the hot path).
import { Buffer } from 'node:buffer';
import path from 'node:path';
import { JdlsError } from '../errors.js';
import { C, native } from '../native.js';
import type { RecordLocks } from './mechanism.js';
import type { TokenSource } from './token-counter.js';
import { GRANTED, fenceFloor, type LockGrant, type FileId, type Owner, type LockMode, type LockResult, type LockOptions, type Holder } from './table.js';
import {
  osn, OSL, osError, OsLockError, openNativeOfd, startWait, typeOf, modeOf,
  refusedLockFile, type NativeOfd, type PendingWait,
} from './ofd.js';
import { openLockDir } from './lockdir.js';

export const DEFAULT_LOCK_DIR = '/tmp/jbase';

export interface OsLocksOptions {
  /** where the jlock_* files live; default /tmp/jbase (created if missing: 01777 in a world-writable parent, else 02770) */
  lockDir?: string;
  /** -P: a lock belongs to (ip, port), not to (ip, ownerPid, ownerTid, conn) */
  portLocks?: boolean;
  /** where grants take their fencing tokens (a lock server: the installation's TokenCounter); none: grants carry no token */
  tokens?: TokenSource;
  /** descriptors of owners that hold nothing in a file, kept open for reuse; default 256 */
  maxIdleFiles?: number;
  /**
   * probe descriptors (STATUS, F_GETLK of a file this process holds nothing
   * in) kept open; beyond, the oldest is closed. Default: all are kept
   * (closing one would drop a host program's classic locks on that file).
   * Only a process that takes no classic locks - a lock server - may bound
   * them; unbounded there, one client's STATUS on 20,000 files cost 20,000
   * descriptors.
   */
  maxProbes?: number;
}

/** One held record lock, for displays (jdls -dvL) and tests. */
export interface OsLockRow {
  pid: number;
  ownerPid: number;
  ownerTid: number;
  /** the owner's connection within `pid` (a lock server's session), 0 for a local process */
  conn: number;
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

/** One owner's open file description on one lock file; the keys it holds live in the description's native registry. */
class OwnerFile {
  readonly waits = new Set<PendingWait>();
  closed = false;
  /**
   * Other files whose identities share this lock file (name not exact), by
   * their prefix in hex; null while only `file` has used it (the usual case:
   * then "all of this file" is all of the description).
   */
  others: Map<string, FileId> | null = null;
  /** the owner holds the FILELOCK of the file on this description (the kernel: [0, infinity) WRITE) */
  fileLocked = false;
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
/** A grant without a fencing token (OsLocks opened without a token source). */
const NO_TOKEN: LockGrant = Object.freeze({});

function checkKey(key: Buffer | string): void {
  if (typeof key === 'string') {
    // Byte length only when it could matter: a string of n UTF-16 units has at most 3n UTF-8 bytes.
    if (key.length * 3 > C.MAX_KEY && Buffer.byteLength(key) > C.MAX_KEY) tooLong(Buffer.byteLength(key));
  } else if (!(key.length <= C.MAX_KEY) || !Buffer.isBuffer(key)) {
    // (one comparison on the hot path; the type check settles the rest)
    if (!Buffer.isBuffer(key)) throw new JdlsError('BAD_ARGUMENT', 'key must be a Buffer or a string');
    if (isOffsetKey(key)) return;
    tooLong(key.length);
  }
}

// ---- byte-offset keys ----------------------------------------------------------
//
// A preloaded program's fcntl/lockf on a jlock file locks byte X itself; a
// program on the server host without JDLS locks byte X in the kernel (shim
// route "OS, untouched"). Through a lock server the shim names the lock by
// the text hex(X) (docs/shim.md); hashing that text, as a record key is,
// locked another byte and both programs were granted. So such a request
// (protocol flag OFFSET) is given to this mechanism as an offset key: a
// Buffer of OFFSET_KEY_LEN bytes (X big-endian, then zeros) - longer than
// any record key even with the identity prefix, so never taken for one; the
// native side (jdls_osl_key_offset) locks byte X for it. It is never
// prefixed: a byte of the lock file is that byte whatever identities share
// the file.

/** JDLS_OSL_OFFSET_KEY_LEN (native/common/jdls_oslock.h). */
const OFFSET_KEY_LEN = 512 + 16 + 9;

/** The key that locks byte `offset` of the lock file itself (0 <= offset < 2^63). */
export function offsetKey(offset: bigint): Buffer {
  if (typeof offset !== 'bigint' || offset < 0n || offset >= 1n << 63n) throw new JdlsError('BAD_ARGUMENT', `byte offset ${String(offset)} is not in 0..2^63-1`);
  const b = Buffer.alloc(OFFSET_KEY_LEN);
  b.writeBigUInt64BE(offset, 0);
  return b;
}

/** Is this an offsetKey()? (Only its length can say so: no record key is that long.) */
export function isOffsetKey(key: Buffer | string): boolean {
  return typeof key !== 'string' && key.length === OFFSET_KEY_LEN;
}

function tooLong(len: number): never {
  throw new JdlsError('KEY_TOO_LONG', `key is ${len} bytes; the longest a lock can hold is ${C.MAX_KEY}`);
}

function holderOfOwner(o: Owner, mode: LockMode): Holder {
  return { pid: o.pid, ownerPid: o.ownerPid, ownerTid: o.ownerTid, port: o.port, mode, ip: o.ip };
}

/** Who blocks a FILELOCK, or holds one: a holder and its range (len 0: to infinity). */
export interface FileLockHolder extends Holder {
  start: bigint;
  len: bigint;
}

export type FileLockResult = { granted: true } | { granted: false; holder: FileLockHolder };

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

/** Does the lock file's name hold the whole identity (inode < 2^32, dev -1 or < 2^32)? */
function nameExact(file: { inode: bigint; dev: bigint }): boolean {
  return file.inode >> 32n === 0n && (file.dev === -1n || BigInt.asUintN(64, file.dev) >> 32n === 0n);
}

const ID_PREFIX = 16;
const prefixes = new WeakMap<object, Buffer | null>();
/** The identity prefix of a file whose lock file's name is not exact, else null (cached per FileId). */
function prefixOf(file: { inode: bigint; dev: bigint }): Buffer | null {
  let p = prefixes.get(file);
  if (p === undefined) {
    if (nameExact(file)) p = null;
    else {
      p = Buffer.alloc(ID_PREFIX);
      p.writeBigUInt64BE(BigInt.asUintN(64, file.inode), 0);
      p.writeBigInt64BE(file.dev, 8);
    }
    prefixes.set(file, p);
  }
  return p;
}

const sameFile = (a: { inode: bigint; dev: bigint }, b: { inode: bigint; dev: bigint }): boolean => a.inode === b.inode && a.dev === b.dev;

/** Is a registry key (as fileKey made it) one of `file`'s? */
function keyOf(file: { inode: bigint; dev: bigint }, regKey: Buffer): boolean {
  const p = prefixOf(file);
  // An offset key carries no prefix (offsetKey): an exact name's, as plain keys are.
  if (isOffsetKey(regKey)) return p === null;
  if (p !== null) return regKey.length >= ID_PREFIX && p.equals(regKey.subarray(0, ID_PREFIX));
  // An exact name's keys are plain. (A plain key whose first 16 bytes are
  // exactly another file's identity would be taken for that file's: keys
  // are record ids, not identities.)
  return true;
}

/** The key as the lock file's registry and byte see it: prefixed when the name is not exact. */
function fileKey(file: FileId, key: Buffer | string): Buffer | string {
  const p = prefixOf(file);
  return p === null || isOffsetKey(key) ? key : Buffer.concat([p, typeof key === 'string' ? Buffer.from(key) : key]);
}

/** The caller's key back from fileKey's (the identity prefix removed). */
function plainKey(file: FileId, fkey: Buffer | string): Buffer | string {
  const p = prefixOf(file);
  return p === null || typeof fkey === 'string' || isOffsetKey(fkey) ? fkey : fkey.subarray(ID_PREFIX);
}

/** The byte a key of `file` locks in its lock file (file omitted: a file whose name is exact). */
export function keyOffset(key: Buffer | string, file?: { inode: bigint; dev: bigint }): bigint {
  const p = file && !isOffsetKey(key) ? prefixOf(file) : null;
  return osn.keyOffset(p === null ? key : Buffer.concat([p, typeof key === 'string' ? Buffer.from(key) : key]));
}

export class OsLocks implements RecordLocks {
  readonly kind = 'os' as const;
  readonly lockDir: string;
  readonly portLocks: boolean;
  readonly #maxIdle: number;
  // owner id -> lock file -> that owner's description
  #owners = new Map<string, Map<string, OwnerFile>>();
  #count = 0;
  // one read-only look per lock file for status() of owners without a description
  #probes = new Map<string, NativeOfd>();
  // Why a cache by object on top of the maps by identity: callers make an
  // Owner and a FileId once and use them for many calls; two lookups by
  // object cost less than building identity strings (a closed entry is
  // skipped and refreshed).
  #fast = new WeakMap<Owner, WeakMap<FileId, OwnerFile>>();
  // the description of the last call, when the same Owner and FileId objects come again
  #last: OwnerFile | undefined;
  #ownerIds = new WeakMap<Owner, string>();
  #lockFiles = new WeakMap<FileId, string>();
  #closed = false;
  /** where grants take their fencing tokens (OsLocksOptions.tokens) */
  #tokens: TokenSource | undefined;

  readonly #maxProbes: number;

  private constructor(dir: string, portLocks: boolean, maxIdle: number, maxProbes: number) {
    this.#maxProbes = maxProbes;
    this.lockDir = dir;
    this.portLocks = portLocks;
    this.#maxIdle = maxIdle;
  }

  /**
   * The mechanism over a lock directory: creates it if missing (01777 in /tmp, else 02770).
   * Throws OsLockError BAD_LOCK_DIR (missing parent, not a directory, not
   * trusted: owned by someone else than root, the service's user or us, or
   * writable by others without the sticky bit - src/locks/lockdir.ts) or
   * PERMISSION (cannot create or write in it), naming the directory.
   */
  static open(opts: OsLocksOptions = {}): OsLocks {
    const dir = path.resolve(opts.lockDir ?? DEFAULT_LOCK_DIR);
    const maxIdle = opts.maxIdleFiles ?? 256;
    if (!Number.isInteger(maxIdle) || maxIdle < 0) throw new JdlsError('BAD_ARGUMENT', `maxIdleFiles must be an integer >= 0, got ${maxIdle}`);
    openLockDir(dir, 'lock directory');
    const m = new OsLocks(dir, opts.portLocks ?? false, maxIdle, opts.maxProbes ?? Infinity);
    m.#tokens = opts.tokens;
    return m;
  }

  // ---- identities and descriptions ------------------------------------------

  #ownerId(o: Owner): string {
    let id = this.#ownerIds.get(o);
    if (id === undefined) {
      // The connection too (a lock server's client; 0 locally): two
      // connections presenting the same pid and tid are two owners.
      id = this.portLocks ? `${o.ip}|port ${o.port}` : `${o.ip}|${o.ownerPid}|${o.ownerTid}|${o.conn}`;
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
    const last = this.#last;
    if (last && last.owner === owner && last.file === file && !last.closed) return last;
    const hit = this.#fast.get(owner)?.get(file);
    if (hit && !hit.closed) return (this.#last = hit);
    const of = this.#owners.get(this.#ownerId(owner))?.get(this.lockFile(file));
    if (of) this.#remember(owner, file, of);
    return of;
  }

  #remember(owner: Owner, file: FileId, of: OwnerFile): void {
    this.#last = of;
    let m = this.#fast.get(owner);
    if (!m) this.#fast.set(owner, (m = new WeakMap()));
    m.set(file, of);
  }

  #get(owner: Owner, file: FileId): OwnerFile {
    const found = this.#find(owner, file);
    if (found) {
      if (found.file !== file && !sameFile(found.file, file)) {
        // Another identity on the same lock file (see the file's head).
        found.others ??= new Map();
        const p = prefixOf(file);
        found.others.set(p === null ? '' : p.toString('hex'), file);
      }
      return found;
    }
    if (this.#count >= this.#maxIdle) this.#sweep();
    const oid = this.#ownerId(owner);
    const lf = this.lockFile(file);
    let ofd: NativeOfd;
    try {
      ofd = openNativeOfd(lf, true, true);
    } catch (e) {
      if (e instanceof OsLockError && e.osCode === 'BAD_PATH') throw new OsLockError('BAD_LOCK_DIR', e.message, e.errno, e.path);
      throw e;
    }
    const of = new OwnerFile(owner, oid, file, lf, ofd);
    let files = this.#owners.get(oid);
    if (!files) this.#owners.set(oid, (files = new Map()));
    files.set(lf, of);
    this.#count++;
    let set = byLockFile.get(lf);
    if (!set) byLockFile.set(lf, (set = new Set()));
    set.add(of);
    this.#remember(owner, file, of);
    return of;
  }

  // Descriptions are kept for reuse (an open() per lock would double a
  // pair's cost), but not without bound: a lock server sees many owners.
  // Past maxIdleFiles, those holding nothing are closed.
  #sweep(): void {
    for (const files of [...this.#owners.values()]) {
      for (const of of [...files.values()]) {
        if (of.waits.size === 0 && of.ofd.keyCount() === 0 && !of.fileLocked) this.#drop(of);
      }
    }
  }

  /** Close an owner's description: the kernel releases all its locks in that file. */
  #drop(of: OwnerFile): void {
    if (of.closed) return;
    of.closed = true;
    of.ofd.close();
    this.#count--;
    const files = this.#owners.get(of.ownerId);
    files?.delete(of.lockFile);
    if (files && files.size === 0) this.#owners.delete(of.ownerId);
    const set = byLockFile.get(of.lockFile);
    set?.delete(of);
    if (set && set.size === 0) byLockFile.delete(of.lockFile);
  }

  /** Who else holds the key's byte: an owner of this process, else what F_OFD_GETLK says. */
  #holder(of: OwnerFile, key: Buffer | string, type: number): Holder | undefined {
    const set = byLockFile.get(of.lockFile);
    if (set) {
      for (const other of set) {
        if (other === of) continue;
        // Another owner's FILELOCK blocks every key of the file.
        if (other.fileLocked) return holderOfOwner(other.owner, 'write');
        const t = other.ofd.byteMode(key);
        if (t === OSL.WRITE || (t === OSL.READ && type === OSL.WRITE)) return holderOfOwner(other.owner, modeOf(t));
      }
    }
    const g = of.ofd.getlk(osn.keyOffset(key), 1n, type);
    if (typeof g === 'number') throw osError(g, 'testing a lock in', of.lockFile);
    return g ? holderOfPid(g.pid, modeOf(g.type)) : undefined;
  }

  // ---- RecordLocks -------------------------------------------------------------

  /**
   * NOWAIT (jBASE's LOCKED clause): granted (with a fencing token when the
   * locks have a token source), or who holds it.
   */
  tryLock(owner: Owner, file: FileId, key: Buffer | string, mode: LockMode): LockResult {
    const r = this.#tryLock(owner, file, key, mode);
    // The token after the kernel's grant, while the lock is held: the next
    // holder's comes after this one's release (native/addon/tokens.cc).
    return r.granted && this.#tokens ? { granted: true, token: this.#tokens.next() } : r;
  }

  #tryLock(owner: Owner, file: FileId, key: Buffer | string, mode: LockMode): LockResult {
    if (this.#closed) this.#check();
    checkKey(key);
    const type = typeOf(mode);
    const fkey = fileKey(file, key);
    // Bounded: a conflict whose holder is gone by the time we ask is
    // retried a few times, then reported without a name; so is a lock file
    // replaced under us (#named).
    for (let attempt = 0; ; attempt++) {
      const of = this.#get(owner, file);
      const rc = of.ofd.lockKey(fkey, type);
      if (rc === OSL.OK) {
        if (this.#named(of, fkey, attempt)) return GRANTED;
        continue;
      }
      if (rc !== OSL.CONFLICT) throw osError(rc, 'locking in', of.lockFile);
      const [, want] = of.ofd.keyTarget(fkey, type);
      const h = this.#holder(of, fkey, want);
      if (h) return { granted: false, holder: h };
      if (attempt >= 3) return { granted: false, holder: holderOfPid(-1, 'write') };
    }
  }

  /*
   * The trap: a lock taken through a description whose file is no longer
   * the one its name leads to excludes nobody - the next process opens the
   * name, gets the new file and locks that. Descriptions are kept open
   * between locks (#sweep), and a lock file can be deleted meanwhile (by
   * its owner in a shared directory, by a member of the group in the
   * service's directory, or by anyone tidying up). So after every grant the
   * name is looked up again (one lstat): still ours, the lock counts; not
   * ours, the key is released and, when the description holds nothing else,
   * it is closed and the lock taken again on the file the name leads to now.
   * A description that still holds other keys cannot move them (they are
   * split already, which no check after the fact can undo): that is an
   * error for the caller, never a silent grant.
   */
  #named(of: OwnerFile, fkey: Buffer | string, attempt: number): boolean {
    const n = of.ofd.stillNamed(of.lockFile);
    if (n === 1) return true;
    if (n < 0) {
      of.ofd.unlockKey(fkey);
      throw osError(n, 'checking lock file', of.lockFile);
    }
    of.ofd.unlockKey(fkey);
    // (Never drop a description that holds the owner's FILELOCK: that would release it unasked.)
    if (of.ofd.keyCount() === 0 && of.waits.size === 0 && !of.fileLocked && attempt < 8) {
      this.#drop(of);
      return false;
    }
    throw new OsLockError('BAD_LOCK_DIR', `lock file ${of.lockFile} was deleted or replaced while this owner still held locks in it: those locks no longer exclude other processes; release them and lock again`, 'ESTALE', of.lockFile);
  }

  /**
   * Wait until granted: F_OFD_SETLKW on a thread of its own, so neither the
   * event loop nor the libuv pool waits. Rejects with TIMEOUT / ABORTED /
   * CLOSED having taken nothing (an owner's earlier READ stays if an upgrade
   * is withdrawn). Order among waiters is the kernel's: see docs/os-locks.md.
   */
  lock(owner: Owner, file: FileId, key: Buffer | string, mode: LockMode, opts: LockOptions = {}): Promise<LockGrant> {
    // The token once granted, while the lock is held (see tryLock).
    return this.#lock(owner, file, key, mode, opts, 0).then(() => (this.#tokens ? { token: this.#tokens.next() } : NO_TOKEN));
  }

  // lock(), as the `attempt`th try after a wait ended on a replaced lock file.
  #lock(owner: Owner, file: FileId, key: Buffer | string, mode: LockMode, opts: LockOptions, attempt: number): Promise<void> {
    let of: OwnerFile, off: bigint, want: number, type: number;
    try {
      if (opts.signal?.aborted) throw new JdlsError('ABORTED', 'lock request aborted');
      const r = this.#tryLock(owner, file, key, mode);
      if (r.granted) return Promise.resolve();
      type = typeOf(mode);
      of = this.#get(owner, file);
      key = fileKey(file, key);
      [off, want] = of.ofd.keyTarget(key, type);
    } catch (e) {
      return Promise.reject(e instanceof Error ? e : new Error(String(e)));
    }
    // The key's bytes as they are now: the caller may reuse its Buffer.
    const k = typeof key === 'string' ? key : Buffer.from(key);
    const plain = typeof key === 'string' ? key : Buffer.from(k);
    const waits = of.waits;
    let replaced = false;
    const w: PendingWait = startWait({
      ofd: of.ofd,
      start: off,
      len: 1n,
      type: want,
      path: of.lockFile,
      opts,
      onSettled: () => waits.delete(w),
      onGranted: () => {
        if (of.closed) return;
        const rc = of.ofd.grantKey(k, type, want);
        if (rc < 0) throw osError(rc, 'locking in', of.lockFile);
        // As in tryLock (#named): the wait ended on a file the name may no
        // longer lead to. This wait is still in `waits` here, hence the 1.
        const n = of.ofd.stillNamed(of.lockFile);
        if (n === 1) return;
        of.ofd.unlockKey(k);
        if (n < 0) throw osError(n, 'checking lock file', of.lockFile);
        if (of.ofd.keyCount() !== 0 || waits.size > 1 || of.fileLocked || attempt >= 8)
          throw new OsLockError('BAD_LOCK_DIR', `lock file ${of.lockFile} was deleted or replaced while this owner still held locks in it: those locks no longer exclude other processes; release them and lock again`, 'ESTALE', of.lockFile);
        replaced = true;
      },
    });
    if (w.pending) waits.add(w);
    return w.promise.then(() => {
      if (!replaced) return undefined;
      if (waits.size === 0) this.#drop(of);
      return this.#lock(owner, file, plainKey(file, plain), mode, opts, attempt + 1);
    });
  }

  /** Release one key. False if this owner did not hold it. */
  unlock(owner: Owner, file: FileId, key: Buffer | string): boolean {
    if (this.#closed) this.#check();
    checkKey(key);
    const of = this.#find(owner, file);
    if (!of) return false;
    const rc = of.ofd.unlockKey(fileKey(file, key));
    if (rc === OSL.OK) return true;
    if (rc === 4) return false;
    throw osError(rc, 'unlocking in', of.lockFile);
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
      if (file && of.others !== null) {
        // The lock file is shared with other files' keys: release this
        // file's keys one by one, leave theirs.
        for (const h of of.ofd.keys()) {
          const mine = prefixOf(file) !== null ? keyOf(file, h.key) : ![...of.others.values(), of.file].some((f) => prefixOf(f) !== null && keyOf(f, h.key));
          if (!mine) continue;
          const rc = of.ofd.unlockKey(h.key);
          if (rc === OSL.OK) n++;
          else if (rc !== 4) throw osError(rc, 'unlocking in', of.lockFile);
        }
        continue;
      }
      n += of.ofd.clearKeys();
      // A FILELOCK outlives RELEASE: only FILEUNLOCK (or the owner's end) lets it go.
      if (of.fileLocked) continue;
      if (of.waits.size === 0) this.#drop(of);
      else {
        const rc = of.ofd.setlk(0n, 0n, OSL.UNLOCK);
        if (rc !== OSL.OK) throw osError(rc, 'unlocking all in', of.lockFile);
      }
    }
    return n;
  }

  /** As LockTable.raiseTokenFloor: later tokens outrank `token`'s epoch (a SERVER2 secondary). */
  raiseTokenFloor(token: bigint): boolean {
    if (!this.#tokens) return false;
    const floor = fenceFloor(token, this.#tokens.peek());
    if (floor === undefined) return false;
    this.#tokens.floor(floor);
    return true;
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
    if (of?.fileLocked) return { code: C.RL_FILELOCK };
    const own = of ? of.ofd.keyMode(fileKey(file, key)) : NONE;
    if (own !== NONE) return { code: own === OSL.WRITE ? C.RL_WRITE : C.RL_READ };
    // Another owner's lock of any mode is what a WRITE would conflict with.
    const c = this.#conflict(owner, file, key, 'write');
    if (!c) return { code: C.RL_FREE };
    const h = c.holder;
    return { code: c.whole ? -C.RL_FILELOCK : h.mode === 'write' ? -C.RL_WRITE : -C.RL_READ, holder: h };
  }

  /**
   * F_GETLK: the first lock of ANOTHER owner that blocks `mode`, past this
   * owner's own (F_OFD_GETLK on its own description never reports its own
   * locks), or undefined.
   */
  conflict(owner: Owner, file: FileId, key: Buffer | string, mode: LockMode): Holder | undefined {
    this.#check();
    checkKey(key);
    return this.#conflict(owner, file, key, mode)?.holder;
  }

  /** conflict(), and whether the lock found covers the whole file (a FILELOCK: RECORDLOCKED -3). */
  #conflict(owner: Owner, file: FileId, key: Buffer | string, mode: LockMode): { holder: Holder; whole: boolean } | undefined {
    const of = this.#find(owner, file);
    const lf = this.lockFile(file);
    key = fileKey(file, key);
    const set = byLockFile.get(lf);
    if (set) {
      for (const other of set) {
        if (other === of) continue;
        if (other.fileLocked) return { holder: holderOfOwner(other.owner, 'write'), whole: true };
        const t = other.ofd.byteMode(key);
        if (t !== NONE && (mode === 'write' || t === OSL.WRITE)) return { holder: holderOfOwner(other.owner, modeOf(t)), whole: false };
      }
    }
    const probe = of?.ofd ?? this.#probe(lf);
    if (!probe) return undefined;
    const off = osn.keyOffset(key);
    const g = probe.getlk(off, 1n, mode === 'write' ? OSL.WRITE : OSL.READ);
    if (typeof g === 'number') throw osError(g, 'testing a lock in', lf);
    if (!g) return undefined;
    // A record lock is one byte. A lock the kernel reports over more than
    // the key's byte is a FILELOCK (of an owner in another lock-server
    // process, pid -1: not nameable from here; or a classic whole-file lock).
    return { holder: holderOfPid(g.pid, modeOf(g.type)), whole: !(g.start === off && g.len === 1n) };
  }

  // ---- FILELOCK ------------------------------------------------------------------
  //
  // jBASE's FILELOCK is exclusive, waits until no OTHER owner's record lock
  // remains in the file, then keeps other owners out until FILEUNLOCK; its
  // owner may still lock records of the file. It is taken here, on the
  // owner's OWN record-lock description of the lock file, as [0, infinity)
  // WRITE. Why here and not on a description of its own (the first
  // version, in binary.ts): OFD locks of two descriptions conflict even for
  // one owner, so the owner's record locks blocked its FILELOCK (a waiting
  // one deadlocked itself) and the FILELOCK refused its record locks. On one
  // description the kernel merges them instead: the FILELOCK waits only for
  // others, and the owner's keys are granted at once.
  //
  // The trap that follows: while the FILELOCK is held, a key of the owner
  // must not touch the kernel - a READ would turn its byte into a read lock
  // (another owner's READ gets in), a release would unlock it. So the
  // description is "whole" (native holdWhole): keys live in the registry
  // only, and FILEUNLOCK reshapes the kernel's range to exactly the keys
  // (gaps unlocked, READ bytes downgraded in place: nothing the owner holds
  // is ever released in between). Colliding keys are one byte (Effective).
  //
  // A lock file shared by two files (name not exact, see the file's head)
  // is one lock file: a FILELOCK of one keeps the other's records out too -
  // locking MORE, never less.

  /**
   * Take the FILELOCK of `file` for `owner`: granted at once when no other
   * owner holds a lock in the file (a re-lock is granted), else the first
   * one's holder (wait: false) or a wait for all of them to go
   * (TIMEOUT / ABORTED / CLOSED reject having taken nothing).
   */
  async fileLock(owner: Owner, file: FileId, opts: LockOptions & { wait?: boolean } = {}): Promise<FileLockResult> {
    this.#check();
    for (let attempt = 0; ; attempt++) {
      if (opts.signal?.aborted) throw new JdlsError('ABORTED', 'lock request aborted');
      const of = this.#get(owner, file);
      if (of.fileLocked) return { granted: true };
      const rc = of.ofd.setlk(0n, 0n, OSL.WRITE);
      if (rc === OSL.OK) {
        if (this.#wholeNamed(of, attempt)) return { granted: true };
        continue;
      }
      if (rc !== OSL.CONFLICT) throw osError(rc, 'file-locking', of.lockFile);
      if (opts.wait === false) {
        const h = this.fileConflict(owner, file);
        if (h) return { granted: false, holder: h };
        if (attempt >= 3) return { granted: false, holder: { ...holderOfPid(-1, 'write'), start: 0n, len: 0n } };
        continue; // gone meanwhile: try again
      }
      if (await this.#fileWait(of, opts)) return { granted: true };
    }
  }

  /**
   * After the kernel granted [0, inf) WRITE on `of`: check the name still
   * leads to this file (see #named), then hold it whole. False: the file
   * was replaced and the description dropped - take it again.
   */
  #wholeNamed(of: OwnerFile, attempt: number): boolean {
    const n = of.ofd.stillNamed(of.lockFile);
    if (n === 1) {
      of.ofd.holdWhole(true);
      of.fileLocked = true;
      return true;
    }
    const rc = of.ofd.reshape();
    if (n < 0) throw osError(n, 'checking lock file', of.lockFile);
    if (rc === 0 && of.ofd.keyCount() === 0 && of.waits.size === 0 && attempt < 8) {
      this.#drop(of);
      return false;
    }
    throw new OsLockError('BAD_LOCK_DIR', `lock file ${of.lockFile} was deleted or replaced while this owner still held locks in it: those locks no longer exclude other processes; release them and lock again`, 'ESTALE', of.lockFile);
  }

  /** Wait on the owner's description for [0, inf) WRITE; true once held whole, false to try again. */
  async #fileWait(of: OwnerFile, opts: LockOptions): Promise<boolean> {
    let held = false;
    let again = false;
    const waits = of.waits;
    const w: PendingWait = startWait({
      ofd: of.ofd, start: 0n, len: 0n, type: OSL.WRITE, path: of.lockFile, opts,
      onSettled: () => waits.delete(w),
      onGranted: () => {
        if (of.closed) return;
        // The grant happened on the wait's thread; until this callback the
        // owner's own requests still touched the kernel (a release or a READ
        // of one of its keys could open a hole). Asserting the whole range
        // again closes it, or finds another owner in it: then the grant is
        // given back (reshape) and the FILELOCK waits again.
        const rc = of.ofd.setlk(0n, 0n, OSL.WRITE);
        if (rc === OSL.OK) {
          const n = of.ofd.stillNamed(of.lockFile);
          if (n === 1) {
            of.ofd.holdWhole(true);
            of.fileLocked = true;
            held = true;
            return;
          }
          if (n < 0) {
            of.ofd.reshape();
            throw osError(n, 'checking lock file', of.lockFile);
          }
        } else if (rc < 0) {
          of.ofd.reshape();
          throw osError(rc, 'file-locking', of.lockFile);
        }
        const back = of.ofd.reshape();
        if (back < 0) throw osError(back, 'giving back a FILELOCK in', of.lockFile);
        again = true;
      },
    });
    if (w.pending) waits.add(w);
    await w.promise;
    if (of.closed) throw new JdlsError('CLOSED', `FILELOCK of ${of.lockFile} released while it was being granted`);
    if (again && waits.size === 0 && of.ofd.keyCount() === 0 && !of.fileLocked) this.#drop(of);
    return held;
  }

  /**
   * FILEUNLOCK: false if the owner did not hold the FILELOCK of `file`.
   * Its record locks of the file stay exactly as they are.
   */
  fileUnlock(owner: Owner, file: FileId): boolean {
    this.#check();
    const of = this.#find(owner, file);
    if (!of?.fileLocked) return false;
    const rc = of.ofd.holdWhole(false);
    if (rc < 0) throw osError(rc, 'file-unlocking', of.lockFile);
    of.fileLocked = false;
    if (of.waits.size === 0 && of.ofd.keyCount() === 0) this.#drop(of);
    return true;
  }

  /** Whether `owner` holds the FILELOCK of `file`. */
  fileLocked(owner: Owner, file: FileId): boolean {
    return this.#find(owner, file)?.fileLocked ?? false;
  }

  /**
   * The first lock of ANOTHER owner that would block `owner`'s FILELOCK of
   * `file` (F_GETLK over [0, infinity)): another owner's FILELOCK (start 0,
   * len 0) or record lock (its byte, len 1), named in full when that owner
   * is served by this process, else as the kernel reports it (pid -1 for an
   * OFD lock). Undefined when the FILELOCK would be granted.
   */
  fileConflict(owner: Owner, file: FileId): FileLockHolder | undefined {
    this.#check();
    const of = this.#find(owner, file);
    const lf = this.lockFile(file);
    const set = byLockFile.get(lf);
    if (set) {
      for (const other of set) {
        if (other !== of && other.fileLocked) return { ...holderOfOwner(other.owner, 'write'), start: 0n, len: 0n };
      }
    }
    const probe = of?.ofd ?? this.#probe(lf);
    if (!probe) return undefined;
    const g = probe.getlk(0n, 0n, OSL.WRITE);
    if (typeof g === 'number') throw osError(g, 'testing a lock in', lf);
    if (!g) return undefined;
    const mode = modeOf(g.type);
    if (g.pid === -1 && g.len === 1n && set) {
      for (const other of set) {
        if (other === of) continue;
        if (other.ofd.keys().some((k) => k.offset === g.start)) return { ...holderOfOwner(other.owner, mode), start: g.start, len: g.len };
      }
    }
    return { ...holderOfPid(g.pid, mode), start: g.start, len: g.len };
  }

  // Why probes are kept, not opened and closed per call: close() of ANY
  // descriptor drops this process's CLASSIC locks on the file. We take none,
  // but a host program (or the preload shim) in this process might.
  #probe(lf: string): NativeOfd | undefined {
    let p = this.#probes.get(lf);
    if (p) return p;
    const fd = osn.openLock(lf, false);
    if (fd < 0) {
      if (fd === -2 /* ENOENT: never locked, so free */) return undefined;
      if (fd === -1) throw refusedLockFile(lf);
      throw osError(fd, 'opening lock file', lf);
    }
    p = new osn.Ofd(fd);
    this.#probes.set(lf, p);
    if (this.#probes.size > this.#maxProbes) {
      // The oldest (a Map iterates in insertion order).
      const [oldest, o] = this.#probes.entries().next().value as [string, NativeOfd];
      this.#probes.delete(oldest);
      o.close();
    }
    return p;
  }

  // ---- listings ----------------------------------------------------------------

  /** Every record lock this mechanism holds for its owners (registry snapshot). */
  rows(): OsLockRow[] {
    const out: OsLockRow[] = [];
    for (const files of this.#owners.values()) {
      for (const of of files.values()) {
        const o = of.owner;
        for (const h of of.ofd.keys()) {
          // A prefixed key names its file (name not exact); strip it.
          let f: { inode: bigint; dev: bigint } = of.file;
          let key = h.key;
          if (isOffsetKey(h.key)) {
            // shown as the shim names it: the byte's lowercase hex
            key = Buffer.from(h.offset.toString(16), 'latin1');
          } else if (h.key.length >= ID_PREFIX) {
            for (const cand of of.others === null ? [of.file] : [of.file, ...of.others.values()]) {
              if (prefixOf(cand) !== null && keyOf(cand, h.key)) {
                f = cand;
                key = h.key.subarray(ID_PREFIX);
                break;
              }
            }
          }
          if (f === of.file && prefixOf(of.file) !== null && key === h.key && of.others !== null) {
            // a plain key on a lock file first used by a lossy file: an exact-name file's
            const exact = [...of.others.values()].find((x) => prefixOf(x) === null);
            if (exact) f = exact;
          }
          out.push({
            pid: o.pid, ownerPid: o.ownerPid, ownerTid: o.ownerTid, conn: o.conn, port: o.port, ip: o.ip,
            inode: f.inode, dev: f.dev, key, mode: modeOf(h.type),
            lockFile: of.lockFile, offset: h.offset,
          });
        }
      }
    }
    return out;
  }

  /** Open descriptions (owner x lock file) and probes: what this mechanism costs in descriptors. */
  openFiles(): { owners: number; probes: number } {
    return { owners: this.#count, probes: this.#probes.size };
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
