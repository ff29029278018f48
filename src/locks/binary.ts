// binary.ts - binary locks: group locks, file locks (jBASE FILELOCK),
// execution locks (jBASE LOCK n) and general POSIX byte ranges for
// intercepted programs, as OFD locks on OfdFile (src/locks/ofd.ts).
//
// Owns: which open file description each owner uses for each lock file, the
// model of who holds which bytes (one LockSpace per lock file, src/locks/ranges.ts)
// for displays, release-all and naming holders of this process, and the rules
// of each kind (argument checks, FILELOCK's refusal under the shm table).
// Does not own: the byte-range primitive, waits and errno mapping
// (src/locks/ofd.ts), range arithmetic (src/locks/ranges.ts), file names
// (src/locks/binary-paths.ts, lockFileName in src/locks/oslock.ts), record locks
// (src/locks/oslock.ts, src/locks/table.ts).
//
// Every kind is "an OFD lock on a range of one file":
//   group  <binaryDir>/jgroup_%08x_%08x  byte = group number (read or write)
//   exec   <binaryDir>/jexec             byte = n, 0..255 (write)
//   file   <recordLockDir>/jlock_%08x_%08x  [0, infinity) write: the record-lock
//          file itself, so it waits for record locks to drain and then blocks new ones.
//          Given the OsLocks instance, it is taken by OsLocks on the owner's own
//          record-lock description (oslock.ts, "FILELOCK"): the owner's record
//          locks then neither block it nor are blocked by it, as in jBASE.
//   range  <binaryDir>/jrange_%08x_%08x (FileId) or the real file ({ path })
// One OfdFile per (owner, lock file): owners of one process conflict with
// each other as processes do, and the kernel releases everything of a process
// that dies (its descriptors close).
import fs from 'node:fs';
import path from 'node:path';
import { JdlsError, type JdlsErrorCode } from '../errors.js';
import { openLockDir } from './lockdir.js';
import { OfdFile, OsLockError, checkRange, osError, type RangeArg, type RangeHolder } from './ofd.js';
import { OsLocks, DEFAULT_LOCK_DIR, lockFileName, type FileLockHolder } from './oslock.js';
import { LockSpace, range, posixLen, END_INFINITY, type Range, type Holding } from './ranges.js';
import { DEFAULT_BINARY_DIR, groupFileName, rangeFileName, execFileName } from './binary-paths.js';
import type { RecordLocks, MechanismKind } from './mechanism.js';
import { fileId, type FileId, type Owner, type LockMode, type LockOptions, type Holder } from './table.js';

export { DEFAULT_BINARY_DIR } from './binary-paths.js';

const NOT_SUPPORTED: JdlsErrorCode = 'NOT_SUPPORTED';

/** jBASE's error number for a FILELOCK on a file that cannot take OS locks ("Error 22 during FILELOCK_ERROR"). */
const JBASE_FILELOCK_ERROR = 22;

export type BinaryKind = 'group' | 'file' | 'exec' | 'range';

export interface BinaryLocksOptions {
  /** pseudo files of group, execution and range locks; default /tmp/jbase_lock (created 01777 if missing) */
  binaryDir?: string;
  /** the OS record-lock directory, whose jlock_* files FILELOCK covers; default /tmp/jbase (created if missing) */
  recordLockDir?: string;
  /** -P: a lock belongs to (ip, port), not to (ip, ownerPid, ownerTid) */
  portLocks?: boolean;
}

export interface BinaryLockOptions extends LockOptions {
  /** wait until granted (default true); false is NOWAIT (jBASE ELSE / LOCKED): resolves { granted: false, holder } */
  wait?: boolean;
}

/** Who holds a conflicting lock, and the range it holds (len 0: to infinity). */
export interface BinaryHolder extends Holder {
  start: bigint;
  len: bigint;
}

export type BinaryLockResult = { granted: true } | { granted: false; holder: BinaryHolder };

/** A byte-range target: a file identity (pseudo file jrange_*) or a real file (locked itself; local use). */
export type RangeTarget = FileId | { readonly path: string };

/** One held binary lock, for displays. */
export interface BinaryLockRow {
  kind: BinaryKind;
  pid: number;
  ownerPid: number;
  ownerTid: number;
  port: number;
  ip: string;
  mode: LockMode;
  /** the file whose bytes are locked */
  lockFile: string;
  /** the file identity (group, file, range by FileId; for { path } ranges the real file's) */
  inode?: bigint;
  dev?: bigint;
  /** group: the group number; exec: n */
  group?: number;
  n?: number;
  /** the range (exec and group: one byte per number, adjacent numbers of one owner merge) */
  start: bigint;
  /** 0: to infinity */
  len: bigint;
}

const EXEC_MAX = 255;
const GROUP_MAX = 0xffffffff;
/** How often a FILELOCK NOWAIT retries when the holder it was refused by is gone before it can be named. */
const NAME_RETRIES = 4;

/**
 * One lock file and what this mechanism's owners hold in it. The model is
 * updated only after the kernel grants (or releases), so it never claims
 * more than the kernel holds for longer than a microtask.
 */
class Space {
  readonly model = new LockSpace<string>();
  /** owner id -> that owner's description of this file */
  readonly ofds = new Map<string, OfdFile>();
  /** file spaces: the OsLocks that holds the FILELOCKs of this model (then `ofds` stays empty) */
  os: OsLocks | undefined;
  /** FILELOCK requests in progress through `os` (the space must outlive them) */
  pending = 0;
  constructor(
    readonly key: string,
    readonly kind: BinaryKind,
    readonly lockFile: string,
    readonly file: { inode: bigint; dev: bigint } | undefined,
    /** a pseudo file we may create; false for a real { path } target */
    readonly pseudo: boolean,
  ) {}
}

function ownerHolder(o: Owner, mode: LockMode, start: bigint, len: bigint): BinaryHolder {
  return { pid: o.pid, ownerPid: o.ownerPid, ownerTid: o.ownerTid, port: o.port, ip: o.ip, mode, start, len };
}

/** A holder only the kernel knows: a classic lock's pid, or -1 for an OFD lock (any process, this one included). */
function kernelHolder(h: RangeHolder): BinaryHolder {
  return { pid: h.pid, ownerPid: h.pid, ownerTid: 0, port: 0, ip: '0.0.0.0', mode: h.mode, start: h.start, len: h.len };
}

function ensureDir(dir: string, what: string): void {
  openLockDir(dir, what);
}

function checkExec(n: number): void {
  if (typeof n !== 'number' || !Number.isInteger(n) || n < 0 || n > EXEC_MAX) {
    throw new JdlsError('BAD_ARGUMENT', `execution lock number must be an integer 0..${EXEC_MAX}, got ${String(n)}`);
  }
}

function checkGroup(g: number): void {
  if (typeof g !== 'number' || !Number.isInteger(g) || g < 0 || g > GROUP_MAX) {
    throw new JdlsError('BAD_ARGUMENT', `group number must be an integer 0..${GROUP_MAX}, got ${String(g)}`);
  }
}

/** [start, len] for the kernel and the model's Range (kernel space: reaching 2^63 is infinity, as Linux stores it). */
function ranges(start: RangeArg, len: RangeArg): { s: bigint; l: bigint; r: Range } {
  const [s, l] = checkRange(start, len);
  return { s, l, r: range(s, l, { kernel: true }) };
}

const isPathTarget = (t: RangeTarget): t is { readonly path: string } =>
  typeof t === 'object' && t !== null && typeof (t as { path?: unknown }).path === 'string';

export class BinaryLocks {
  readonly binaryDir: string;
  readonly recordLockDir: string;
  readonly portLocks: boolean;
  /** lock file key -> space */
  #spaces = new Map<string, Space>();
  /** owner id -> the Owner last seen with that id (for naming holders) */
  #owners = new Map<string, Owner>();
  #ownerIds = new WeakMap<Owner, string>();
  /** resolved real path -> its space key (stat once while the space lives, so an unlink does not stop an unlock) */
  #realKeys = new Map<string, string>();
  /** owner's connection (Owner.conn) -> open descriptions of its owners: what a lock server's limits count */
  #perConn = new Map<number, number>();
  #closed = false;

  private constructor(binaryDir: string, recordLockDir: string, portLocks: boolean) {
    this.binaryDir = binaryDir;
    this.recordLockDir = recordLockDir;
    this.portLocks = portLocks;
  }

  /**
   * Binary locks over a binary lock directory and a record-lock directory,
   * both created if missing (01777 in a world-writable parent, else 02770)
   * and checked (src/locks/lockdir.ts). Throws OsLockError BAD_LOCK_DIR
   * (missing parent, not a directory, not trusted: owner and mode named) or
   * PERMISSION, naming the directory.
   */
  static open(opts: BinaryLocksOptions = {}): BinaryLocks {
    const bdir = path.resolve(opts.binaryDir ?? DEFAULT_BINARY_DIR);
    const rdir = path.resolve(opts.recordLockDir ?? DEFAULT_LOCK_DIR);
    ensureDir(bdir, 'binary lock directory');
    ensureDir(rdir, 'record lock directory');
    return new BinaryLocks(bdir, rdir, opts.portLocks ?? false);
  }

  // ---- owners, spaces, descriptions --------------------------------------------

  #id(o: Owner): string {
    let id = this.#ownerIds.get(o);
    if (id === undefined) {
      if (typeof o !== 'object' || o === null || typeof o.ip !== 'string') throw new JdlsError('BAD_ARGUMENT', 'owner must come from makeOwner()');
      // The connection is part of the owner (a lock server's session): a
      // client can only ever touch the ranges its own connection took.
      id = this.#rowId(o);
      this.#ownerIds.set(o, id);
    }
    this.#owners.set(id, o);
    return id;
  }

  #check(): void {
    if (this.#closed) throw new JdlsError('CLOSED', 'binary lock mechanism is closed');
  }

  #space(key: string, kind: BinaryKind, lockFile: string, file: { inode: bigint; dev: bigint } | undefined, pseudo: boolean): Space {
    let s = this.#spaces.get(key);
    if (!s) this.#spaces.set(key, (s = new Space(key, kind, lockFile, file, pseudo)));
    return s;
  }

  #checkFile(file: FileId): void {
    if (typeof file !== 'object' || file === null || typeof file.inode !== 'bigint' || typeof file.dev !== 'bigint') {
      throw new JdlsError('BAD_ARGUMENT', 'file must come from fileId(inode, dev)');
    }
  }

  #groupSpace(file: FileId): Space {
    this.#checkFile(file);
    const lf = groupFileName(this.binaryDir, file);
    return this.#space(lf, 'group', lf, { inode: file.inode, dev: file.dev }, true);
  }

  #execSpace(): Space {
    const lf = execFileName(this.binaryDir);
    return this.#space(lf, 'exec', lf, undefined, true);
  }

  #fileSpace(file: FileId): Space {
    this.#checkFile(file);
    const lf = lockFileName(this.recordLockDir, file);
    return this.#space(lf, 'file', lf, { inode: file.inode, dev: file.dev }, true);
  }

  #rangeSpace(t: RangeTarget): Space {
    if (!isPathTarget(t)) {
      this.#checkFile(t);
      const lf = rangeFileName(this.binaryDir, t);
      return this.#space(lf, 'range', lf, { inode: t.inode, dev: t.dev }, true);
    }
    if (t.path === '') throw new JdlsError('BAD_ARGUMENT', 'range target path must not be empty');
    const real = path.resolve(t.path);
    const known = this.#realKeys.get(real);
    const s = known === undefined ? undefined : this.#spaces.get(known);
    if (s) return s;
    // Keyed by (dev, inode), not by name: two names of one file are one
    // file to the kernel, and must be one model too.
    let st: fs.BigIntStats;
    try {
      st = fs.statSync(real, { bigint: true });
    } catch (e) {
      const errno = (e as NodeJS.ErrnoException).errno;
      throw osError(typeof errno === 'number' ? errno : -5, 'range lock target', real);
    }
    const key = `real ${st.dev} ${st.ino}`;
    this.#realKeys.set(real, key);
    return this.#space(key, 'range', real, { inode: st.ino, dev: st.dev }, false);
  }

  #ofd(s: Space, oid: string): OfdFile {
    let of = s.ofds.get(oid);
    if (of) return of;
    try {
      of = OfdFile.open(s.lockFile, { create: s.pseudo, lockFile: s.pseudo });
    } catch (e) {
      // A pseudo file that cannot be opened means the directory is wrong (removed, replaced, a symlink planted).
      if (s.pseudo && e instanceof OsLockError && e.osCode === 'BAD_PATH') throw new OsLockError('BAD_LOCK_DIR', e.message, e.errno, e.path);
      throw e;
    }
    s.ofds.set(oid, of);
    this.#countConn(oid, 1);
    return of;
  }

  /**
   * Close an owner's description once it holds nothing and waits for
   * nothing, and forget the space once nobody uses it: descriptors stay
   * bounded by what is held. Not for real files: close() of ANY descriptor of
   * a file drops this process's CLASSIC locks on it, and a host program in
   * this process may hold some; those descriptions stay until releaseAll or
   * close().
   */
  #tidy(s: Space, oid: string): void {
    const of = s.ofds.get(oid);
    if (of && s.pseudo && of.waiting === 0 && s.model.holdings(oid).length === 0) {
      of.close();
      s.ofds.delete(oid);
      this.#countConn(oid, -1);
    }
    if (s.ofds.size === 0 && s.model.isEmpty() && !s.pending) {
      this.#spaces.delete(s.key);
      if (!s.pseudo) this.#realKeys.delete(s.lockFile);
    }
  }

  /** Record a granted range. The kernel just said no other description holds it: a model saying otherwise is stale and yields. */
  #record(s: Space, oid: string, r: Range, mode: LockMode): void {
    for (let i = 0; i < 64; i++) {
      const t = s.model.tryLock(oid, r, mode);
      if (t.granted) return;
      s.model.unlock(t.conflict.owner, r);
    }
  }

  #localHolder(h: Holding<string>): BinaryHolder {
    const o = this.#owners.get(h.owner);
    if (!o) return { pid: -1, ownerPid: -1, ownerTid: 0, port: 0, ip: '0.0.0.0', mode: h.mode, start: h.start, len: h.len };
    return ownerHolder(o, h.mode, h.start, h.len);
  }

  /** The one way every kind takes a lock. */
  async #lock(s: Space, owner: Owner, start: RangeArg, len: RangeArg, mode: LockMode, opts: BinaryLockOptions,
    name?: (h: RangeHolder) => BinaryHolder | undefined): Promise<BinaryLockResult> {
    this.#check();
    const { s: st, l, r } = ranges(start, len);
    const oid = this.#id(owner);
    const wait = opts.wait ?? true;
    if (opts.signal?.aborted) throw new JdlsError('ABORTED', 'lock request aborted');
    const r0 = await this.#attempt(s, owner, oid, st, l, r, mode, opts, wait, name);
    // Why clamp: a group or LOCK number is one byte, but the kernel and the
    // model report the holder's whole merged segment (LOCK 7 and LOCK 8 of
    // one owner are one lock [7, 9)). The holder of THIS number is the answer.
    if (!r0.granted && (s.kind === 'group' || s.kind === 'exec')) return { granted: false, holder: { ...r0.holder, start: st, len: 1n } };
    return r0;
  }

  /*
   * The trap after every grant on a pseudo file: an owner's description may
   * have been opened before the file was deleted (it waited, or it holds
   * other ranges there), and a lock on a deleted file excludes nobody who
   * opens the name now (docs/security.md, "Lock directories"). So the name
   * is looked up again: still ours, the lock counts; not ours, the range is
   * released and, when the owner holds nothing else there, the description
   * is closed and the lock taken again on the file the name leads to now;
   * otherwise an error, never a silent grant. Real files ({ path }) are the
   * caller's, not ours to judge.
   */
  #named(s: Space, oid: string, of: OfdFile, st: bigint, l: bigint): boolean {
    if (!s.pseudo) return true;
    const n = of.stillNamed();
    if (n === 1) return true;
    of.unlockRange(st, l);
    if (n < 0) throw osError(n, 'checking lock file', s.lockFile);
    if (s.model.holdings(oid).length === 0 && of.waiting === 0) {
      of.close();
      s.ofds.delete(oid);
      return false;
    }
    throw new OsLockError('BAD_LOCK_DIR', `lock file ${s.lockFile} was deleted or replaced while this owner still held locks in it: those locks no longer exclude other processes; release them and lock again`, 'ESTALE', s.lockFile);
  }

  // #attempt once more after #named closed a description of a replaced file (bounded).
  #again(s: Space, owner: Owner, oid: string, st: bigint, l: bigint, r: Range, mode: LockMode, opts: BinaryLockOptions, wait: boolean,
    name: ((h: RangeHolder) => BinaryHolder | undefined) | undefined, tries: number): Promise<BinaryLockResult> {
    if (tries >= 8) throw new OsLockError('BAD_LOCK_DIR', `lock file ${s.lockFile} keeps being deleted or replaced: gave up after ${tries + 1} tries`, 'ESTALE', s.lockFile);
    return this.#attempt(s, owner, oid, st, l, r, mode, opts, wait, name, tries + 1);
  }

  async #attempt(s: Space, owner: Owner, oid: string, st: bigint, l: bigint, r: Range, mode: LockMode, opts: BinaryLockOptions, wait: boolean,
    name?: (h: RangeHolder) => BinaryHolder | undefined, tries = 0): Promise<BinaryLockResult> {
    const local = s.model.conflicts(oid, r, mode);
    if (local && !wait) return { granted: false, holder: this.#localHolder(local) };
    const of = this.#ofd(s, oid);
    try {
      if (!local) {
        // Bounded: a holder that is gone by the time we ask is retried, then reported unnamed.
        for (let attempt = 0; ; attempt++) {
          const t = of.tryLockRange(st, l, mode);
          if (t.granted) {
            if (!this.#named(s, oid, of, st, l)) return await this.#again(s, owner, oid, st, l, r, mode, opts, wait, name, tries);
            this.#record(s, oid, r, mode);
            return { granted: true };
          }
          if (wait) break;
          if (t.holder) return { granted: false, holder: name?.(t.holder) ?? kernelHolder(t.holder) };
          if (attempt >= NAME_RETRIES) return { granted: false, holder: kernelHolder({ mode: 'write', start: st, len: l, pid: -1 }) };
        }
      }
      const waitOpts: LockOptions = {};
      if (opts.timeoutMs !== undefined) waitOpts.timeoutMs = opts.timeoutMs;
      if (opts.signal) waitOpts.signal = opts.signal;
      await of.lockRange(st, l, mode, waitOpts);
      // Granted in a race with releaseAll()/close(): the description is closed, so nothing is held.
      if (of.closed) throw new JdlsError('CLOSED', `lock on ${s.lockFile} released while it was being granted`);
      if (!this.#named(s, oid, of, st, l)) return await this.#again(s, owner, oid, st, l, r, mode, opts, wait, name, tries);
      this.#record(s, oid, r, mode);
      return { granted: true };
    } finally {
      this.#tidy(s, oid);
    }
  }

  #unlock(s: Space, owner: Owner, start: RangeArg, len: RangeArg): boolean {
    this.#check();
    const { s: st, l, r } = ranges(start, len);
    const oid = this.#id(owner);
    const of = s.ofds.get(oid);
    if (!of) {
      this.#tidy(s, oid);
      return false;
    }
    of.unlockRange(st, l);
    const had = s.model.unlock(oid, r);
    this.#tidy(s, oid);
    return had;
  }

  // ---- group locks ---------------------------------------------------------------

  /** Lock group `group` (0..2^32-1) of a hashed file: byte `group` of <binaryDir>/jgroup_%08x_%08x. */
  groupLock(owner: Owner, file: FileId, group: number, mode: LockMode, opts: BinaryLockOptions = {}): Promise<BinaryLockResult> {
    try {
      checkGroup(group);
      return this.#lock(this.#groupSpace(file), owner, group, 1, mode, opts);
    } catch (e) {
      return Promise.reject(e instanceof Error ? e : new Error(String(e)));
    }
  }

  /** Release a group lock; false if this owner did not hold it. */
  groupUnlock(owner: Owner, file: FileId, group: number): boolean {
    checkGroup(group);
    return this.#unlock(this.#groupSpace(file), owner, group, 1);
  }

  // ---- execution locks -------------------------------------------------------------

  /** jBASE LOCK n (n integer 0..255): exclusive, byte n of <binaryDir>/jexec. wait:false is LOCK n ELSE. */
  execLock(owner: Owner, n: number, opts: BinaryLockOptions = {}): Promise<BinaryLockResult> {
    try {
      checkExec(n);
      return this.#lock(this.#execSpace(), owner, n, 1, 'write', opts);
    } catch (e) {
      return Promise.reject(e instanceof Error ? e : new Error(String(e)));
    }
  }

  /**
   * RANGE_TEST of execution lock n: another owner's LOCK n (start n, len 1),
   * or undefined. Execution locks are exclusive: no mode.
   */
  execTest(owner: Owner, n: number): BinaryHolder | undefined {
    checkExec(n);
    const h = this.#test(this.#execSpace(), owner, n, 1, 'write');
    // As in #lock: the holder of THIS number, not its merged segment.
    return h ? { ...h, start: BigInt(n), len: 1n } : undefined;
  }

  /** jBASE UNLOCK n, or bare UNLOCK (no n): all of the owner's execution locks. Returns how many were released. */
  execUnlock(owner: Owner, n?: number): number {
    this.#check();
    const s = this.#execSpace();
    if (n !== undefined) {
      checkExec(n);
      const r = this.#unlock(s, owner, n, 1) ? 1 : 0;
      return r;
    }
    const oid = this.#id(owner);
    const held = s.model.holdings(oid).reduce((sum, seg) => sum + Number(seg.end - seg.start), 0);
    if (held > 0 || s.ofds.has(oid)) this.#unlock(s, owner, 0, 0);
    else this.#tidy(s, oid);
    return held;
  }

  // ---- file locks (FILELOCK) ---------------------------------------------------------

  /**
   * jBASE FILELOCK: an exclusive lock on the whole record-lock file of
   * `file` (<recordLockDir>/jlock_%08x_%08x, start 0, to infinity). It waits
   * until no record locks remain in that file (others may still lock
   * meanwhile, as in jBASE), then blocks new record locks of the file until
   * fileUnlock. wait:false (the LOCKED clause) reports the holder.
   *
   * `mechanism`: the record-lock mechanism the caller uses. Under the shm
   * table FILELOCK cannot see record locks (they are not OS locks), so it is
   * refused with NOT_SUPPORTED rather than half-taken. Pass the OsLocks
   * instance when there is one (it must use this recordLockDir): the
   * FILELOCK is then taken on the owner's own record-lock description, so
   * it waits only for OTHER owners' record locks and the owner may lock
   * records of its file meanwhile (jBASE's rule); holders are named. With
   * the kind 'os' alone it is taken on a description of its own, which the
   * owner's record locks in that file (if any) block.
   */
  fileLock(owner: Owner, file: FileId, mechanism: RecordLocks | MechanismKind, opts: BinaryLockOptions = {}): Promise<BinaryLockResult> {
    try {
      this.#check();
      const s = this.#fileSpace(file);
      const os = this.#fileMechanism(mechanism, s);
      if (os) return this.#osFileLock(os, s, owner, file, opts);
      return this.#lock(s, owner, 0, 0, 'write', opts);
    } catch (e) {
      return Promise.reject(e instanceof Error ? e : new Error(String(e)));
    }
  }

  /** FILELOCK through OsLocks; the model records it for listing(), fileLocked() and releaseAll(). */
  async #osFileLock(os: OsLocks, s: Space, owner: Owner, file: FileId, opts: BinaryLockOptions): Promise<BinaryLockResult> {
    const oid = this.#id(owner);
    s.os = os;
    s.pending++;
    // Counted for the connection (connFiles) while it waits and while it is
    // held, as a FILELOCK on a description of its own was: it is one more
    // file the connection keeps open in the OS mechanism.
    const counted = !this.#heldFile(s, oid);
    if (counted) this.#countOsFile(owner.conn, 1);
    let keep = false;
    try {
      const lopts: LockOptions & { wait?: boolean } = { wait: opts.wait ?? true };
      if (opts.timeoutMs !== undefined) lopts.timeoutMs = opts.timeoutMs;
      if (opts.signal) lopts.signal = opts.signal;
      const r = await os.fileLock(owner, file, lopts);
      if (!r.granted) return { granted: false, holder: r.holder };
      // Two requests of one owner may both have counted; the one that finds it recorded gives its count back.
      keep = counted && !this.#heldFile(s, oid);
      this.#record(s, oid, range(0n, 0n, { kernel: true }), 'write');
      return { granted: true };
    } finally {
      if (counted && !keep) this.#countOsFile(owner.conn, -1);
      s.pending--;
      this.#tidy(s, oid);
    }
  }

  #heldFile(s: Space, oid: string): boolean {
    return s.model.holdings(oid).length > 0;
  }

  /** FILELOCKs held or waited for through OsLocks, per connection (their descriptions are OsLocks'). */
  #osFiles = new Map<number, number>();
  #countOsFile(conn: number, d: number): void {
    const n = (this.#osFiles.get(conn) ?? 0) + d;
    if (n > 0) this.#osFiles.set(conn, n);
    else this.#osFiles.delete(conn);
  }

  /** Check the record-lock mechanism for a FILELOCK; returns the OsLocks to take it with, if given one. */
  #fileMechanism(m: RecordLocks | MechanismKind, s: Space): OsLocks | undefined {
    const kind = typeof m === 'string' ? m : m?.kind;
    if (kind === 'shm') {
      throw new JdlsError(NOT_SUPPORTED,
        `FILELOCK of ${s.lockFile} needs the OS record-lock mechanism in this release: the shared-memory lock table's record locks are not OS locks, so a FILELOCK could neither wait for them nor block them. For applications that use FILELOCK, run the lock service on OS file locks (jdls -ibD, without the monitor and its table)`,
        { jbaseError: JBASE_FILELOCK_ERROR });
    }
    if (kind !== 'os') throw new JdlsError('BAD_ARGUMENT', `FILELOCK: the record-lock mechanism must be 'os' or 'shm' (or a RecordLocks), got ${String(kind)}`);
    if (!(m instanceof OsLocks)) return undefined;
    if (path.resolve(m.lockDir) !== this.recordLockDir) {
      throw new JdlsError('BAD_ARGUMENT', `FILELOCK: the OS record-lock mechanism uses ${m.lockDir}, but these binary locks cover ${this.recordLockDir}: the FILELOCK would not see its record locks`);
    }
    return m;
  }

  #rowId(o: { ip: string; port: number; ownerPid: number; ownerTid: number; conn: number }): string {
    return this.portLocks ? `${o.ip}|port ${o.port}` : `${o.ip}|${o.ownerPid}|${o.ownerTid}|${o.conn}`;
  }

  /** jBASE FILEUNLOCK; false if this owner did not hold the FILELOCK. Its record locks of the file stay. */
  fileUnlock(owner: Owner, file: FileId): boolean {
    const s = this.#fileSpace(file);
    if (!s.os) return this.#unlock(s, owner, 0, 0);
    this.#check();
    const oid = this.#id(owner);
    const had = s.os.fileUnlock(owner, file);
    if (s.model.unlock(oid, range(0n, 0n, { kernel: true }))) this.#countOsFile(owner.conn, -1);
    this.#tidy(s, oid);
    return had;
  }

  /**
   * RANGE_TEST of a FILELOCK: the first lock of another owner that would
   * block this owner's FILELOCK of `file` - another owner's FILELOCK, or
   * another owner's record lock in the file - or undefined. Needs the
   * OsLocks instance (the record locks are its own); 'shm' is NOT_SUPPORTED.
   */
  fileTest(owner: Owner, file: FileId, mechanism: RecordLocks | MechanismKind): BinaryHolder | undefined {
    this.#check();
    const s = this.#fileSpace(file);
    try {
      const os = this.#fileMechanism(mechanism, s);
      if (os) {
        const h: FileLockHolder | undefined = os.fileConflict(owner, file);
        return h;
      }
      const oid = this.#id(owner);
      const local = s.model.conflicts(oid, range(0n, 0n, { kernel: true }), 'write');
      if (local) return this.#localHolder(local);
      const h = this.#ofd(s, oid).getlk(0n, 0n, 'write');
      return h ? kernelHolder(h) : undefined;
    } finally {
      this.#tidy(s, this.#id(owner));
    }
  }

  /** Whether this owner holds the FILELOCK of `file` (RECORDLOCKED code 3 for every key of the file). */
  fileLocked(owner: Owner, file: FileId): boolean {
    this.#check();
    const s = this.#spaces.get(lockFileName(this.recordLockDir, file));
    if (!s) return false;
    if (s.os) return s.os.fileLocked(owner, file);
    return s.model.holdings(this.#id(owner)).some((seg) => seg.start === 0n && seg.end === END_INFINITY && seg.mode === 'write');
  }

  /**
   * The owner of this mechanism holding the FILELOCK of `file`, if any: the
   * holder to name when a record lock of that file is refused (the OS record
   * locks see it as an OFD holder, pid -1).
   */
  fileLockHolder(file: FileId): BinaryHolder | undefined {
    this.#check();
    const s = this.#spaces.get(lockFileName(this.recordLockDir, file));
    const row = s?.model.listing()[0];
    return row ? this.#localHolder(row) : undefined;
  }

  // ---- general byte ranges -------------------------------------------------------------

  /**
   * POSIX byte-range lock [start, start+len) (len 0: to infinity; 64-bit
   * offsets, last byte <= 2^63-1). A lock over part of a held range converts
   * that part; same-mode neighbours merge (the kernel per description, the
   * model per owner alike).
   */
  rangeLock(owner: Owner, target: RangeTarget, start: RangeArg, len: RangeArg, mode: LockMode, opts: BinaryLockOptions = {}): Promise<BinaryLockResult> {
    try {
      this.#check();
      return this.#lock(this.#rangeSpace(target), owner, start, len, mode, opts);
    } catch (e) {
      return Promise.reject(e instanceof Error ? e : new Error(String(e)));
    }
  }

  /** POSIX unlock of [start, start+len): splits what it covers partly. False if the owner held nothing there. */
  rangeUnlock(owner: Owner, target: RangeTarget, start: RangeArg, len: RangeArg): boolean {
    this.#check();
    return this.#unlock(this.#rangeSpace(target), owner, start, len);
  }

  /**
   * F_GETLK: the first lock that would block `mode` on the range for this
   * owner, or undefined. Owners of this mechanism are named in full (from
   * the model); others are what the kernel reports: a classic lock's pid, or
   * -1 for an OFD lock.
   */
  rangeTest(owner: Owner, target: RangeTarget, start: RangeArg, len: RangeArg, mode: LockMode): BinaryHolder | undefined {
    this.#check();
    return this.#test(this.#rangeSpace(target), owner, start, len, mode);
  }

  /** F_GETLK in one space: the model's owners first (named), then the kernel. */
  #test(s: Space, owner: Owner, start: RangeArg, len: RangeArg, mode: LockMode): BinaryHolder | undefined {
    this.#check();
    const { s: st, l, r } = ranges(start, len);
    const oid = this.#id(owner);
    const local = s.model.conflicts(oid, r, mode);
    if (local) return this.#localHolder(local);
    try {
      const h = this.#ofd(s, oid).getlk(st, l, mode);
      return h ? kernelHolder(h) : undefined;
    } finally {
      this.#tidy(s, oid);
    }
  }

  // ---- all kinds -------------------------------------------------------------------

  /**
   * Release every binary lock of an owner (a client's disconnect, a
   * program's end): its descriptions are closed, so the kernel drops all
   * their locks; its pending waits reject with CLOSED. Returns how many
   * held segments were released.
   */
  releaseAll(owner: Owner): number {
    this.#check();
    const oid = this.#id(owner);
    let n = 0;
    for (const s of [...this.#spaces.values()]) {
      const segs = s.model.unlockAll(oid);
      n += segs.length;
      // A FILELOCK held through OsLocks lives on the owner's record-lock description there.
      if (s.os && s.file && segs.length > 0) {
        this.#countOsFile(owner.conn, -1);
        s.os.fileUnlock(owner, fileId(s.file.inode, s.file.dev));
      }
      const of = s.ofds.get(oid);
      if (of) {
        s.ofds.delete(oid);
        this.#countConn(oid, -1);
        of.close();
      }
      this.#tidy(s, oid);
    }
    this.#owners.delete(oid);
    return n;
  }

  /** Every binary lock this mechanism's owners hold (model snapshot), by kind then file then start. */
  listing(): BinaryLockRow[] {
    const rows: BinaryLockRow[] = [];
    for (const s of this.#spaces.values()) {
      for (const h of s.model.listing()) {
        const o = this.#localHolder(h);
        const row: BinaryLockRow = {
          kind: s.kind, pid: o.pid, ownerPid: o.ownerPid, ownerTid: o.ownerTid, port: o.port, ip: o.ip,
          mode: h.mode, lockFile: s.lockFile, start: h.start, len: posixLen(h),
        };
        if (s.file) {
          row.inode = s.file.inode;
          row.dev = s.file.dev;
        }
        if (s.kind === 'group' || s.kind === 'exec') {
          // One row per number: adjacent numbers of one owner merge into one segment in the model (as in the kernel).
          for (let b = h.start; b < h.end; b++) {
            const one: BinaryLockRow = { ...row, start: b, len: 1n };
            if (s.kind === 'group') one.group = Number(b);
            else one.n = Number(b);
            rows.push(one);
          }
        } else {
          rows.push(row);
        }
      }
    }
    const order: Record<BinaryKind, number> = { file: 0, group: 1, exec: 2, range: 3 };
    return rows.sort((a, b) => order[a.kind] - order[b.kind] || (a.lockFile < b.lockFile ? -1 : a.lockFile > b.lockFile ? 1 : 0)
      || (a.start < b.start ? -1 : a.start > b.start ? 1 : 0));
  }

  #countConn(oid: string, d: number): void {
    this.#openTotal += d;
    const conn = this.#owners.get(oid)?.conn ?? 0;
    const n = (this.#perConn.get(conn) ?? 0) + d;
    if (n > 0) this.#perConn.set(conn, n);
    else this.#perConn.delete(conn);
  }

  #openTotal = 0;

  /** Open descriptions of pseudo and real files (owner x lock file), counted: what this mechanism costs in descriptors. */
  get openCount(): number {
    return this.#openTotal;
  }

  /** Open descriptions of the owners of one connection (Owner.conn): lock files it holds or waits in. */
  connFiles(conn: number): number {
    return (this.#perConn.get(conn) ?? 0) + (this.#osFiles.get(conn) ?? 0);
  }

  /** Open descriptions (owner x lock file): what this mechanism costs in descriptors. */
  openFiles(): number {
    let n = 0;
    for (const s of this.#spaces.values()) n += s.ofds.size;
    return n;
  }

  /** Withdraw pending waits (they reject with CLOSED) and close every description: the kernel releases all locks. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const s of this.#spaces.values()) {
      for (const of of s.ofds.values()) of.close();
      s.ofds.clear();
    }
    this.#perConn.clear();
    this.#osFiles.clear();
    this.#openTotal = 0;
    this.#spaces.clear();
    this.#realKeys.clear();
  }
}
