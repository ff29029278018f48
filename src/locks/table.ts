// table.ts - the shared-memory record lock table, for TypeScript.
//
// Owns: validating arguments and filling defaults before anything crosses to
// native code, owners and file identities, promises for waits (timeouts and
// AbortSignal), and the typed rows of listings. Does not own: the lock
// algorithm (native/common/jdls_table.c) or display (src/cli/display.ts).
import { native, C, errorFromRc, type OwnerHandle, type FileHandle, type NativeTable, type NativeTryLock, type NativeHolder, type NativeRow, type NativeReport, type NativeHeader, type HeaderField } from '../native.js';
import { JdlsError } from '../errors.js';
import fs from 'node:fs';
import { releaseDir as defaultReleaseDir, tablePath, markerPath } from '../installation.js';
import { ipBytes } from '../ip.js';
import type { RecordLocks } from './mechanism.js';
import { InfoRecorder, type InfoRecorderOptions, type TableInfoHook } from '../info/recorder.js';

export type LockMode = 'read' | 'write';

/** A file's identity. dev is -1 for files reached through a lock server. */
export interface FileId {
  readonly inode: bigint;
  readonly dev: bigint;
  /** packed for the addon */
  readonly packed: FileHandle;
}

export function fileId(inode: bigint | number, dev: bigint | number): FileId {
  const i = BigInt(inode);
  const d = BigInt(dev);
  if (i < 0n || i >= 1n << 64n) throw new JdlsError('BAD_ARGUMENT', `inode out of range: ${i}`);
  if (d < -(1n << 63n) || d >= 1n << 63n) throw new JdlsError('BAD_ARGUMENT', `device out of range: ${d}`);
  return { inode: i, dev: d, packed: native.makeFile(i, d) };
}

export interface OwnerSpec {
  /** local process that holds the entries (liveness); default: this process */
  pid?: number;
  /** the owner's pid (a remote client's, for a lock server); default: pid */
  ownerPid?: number;
  /** the owner's thread id; default: this thread */
  ownerTid?: number;
  /** jBASE port number; default: $JBCPORTNO or 0 */
  port?: number;
  /** the owner's address; default 0.0.0.0 (a direct local process) */
  ip?: string;
  /**
   * the connection within `pid` that the owner came through (a lock server:
   * a client can only ever touch what its own connection took, whatever pid
   * and tid it presents); default 0, a local process
   */
  conn?: number;
}

/** Who takes a lock. Create once, use for many calls. */
export interface Owner {
  readonly pid: number;
  readonly ownerPid: number;
  readonly ownerTid: number;
  readonly port: number;
  readonly ip: string;
  /** the lock server's connection, 0 for a local process */
  readonly conn: number;
  /** packed for the addon */
  readonly packed: OwnerHandle;
}

function u32(name: string, v: number): number {
  if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) throw new JdlsError('BAD_ARGUMENT', `${name} must be an integer 0..4294967295, got ${v}`);
  return v;
}

function defaultPort(): number {
  const p = process.env['JBCPORTNO'];
  if (p && /^\d+$/.test(p)) return Number(p);
  return 0;
}

export function makeOwner(spec: OwnerSpec = {}): Owner {
  const pid = u32('pid', spec.pid ?? process.pid);
  const ownerPid = u32('ownerPid', spec.ownerPid ?? pid);
  const ownerTid = u32('ownerTid', spec.ownerTid ?? (spec.ownerPid === undefined ? native.gettid() : spec.ownerPid));
  const port = u32('port', spec.port ?? defaultPort());
  const ip = spec.ip ?? '0.0.0.0';
  const conn = u32('conn', spec.conn ?? 0);
  const start = pid === process.pid ? selfStart() : native.pidStart(pid);
  return { pid, ownerPid, ownerTid, port, ip, conn, packed: native.makeOwner(pid, ownerPid, ownerTid, port, start, ipBytes(ip), conn) };
}

let cachedStart: { pid: number; start: number } | undefined;
function selfStart(): number {
  if (!cachedStart || cachedStart.pid !== process.pid) cachedStart = { pid: process.pid, start: native.pidStart(process.pid) };
  return cachedStart.start;
}

export interface Holder {
  pid: number;
  ownerPid: number;
  ownerTid: number;
  port: number;
  mode: LockMode;
  ip: string;
}

/**
 * A grant. `token` is its fencing token (docs/fencing.md): strictly
 * increasing per lock across grants, restarts and failover; undefined where
 * the mechanism gives none (OS file locks).
 */
export interface LockGrant {
  readonly token?: bigint;
}

export type LockResult = { readonly granted: true; readonly token?: bigint } | { readonly granted: false; readonly holder: Holder };

/** The one granted result: NOWAIT locks are hot, and a fresh object per call is garbage per call. */
export const GRANTED: LockResult = Object.freeze({ granted: true as const });

export interface LockOptions {
  /** give up after this many ms (rejects with code TIMEOUT); default: wait forever */
  timeoutMs?: number;
  /** withdraw the request (rejects with code ABORTED) */
  signal?: AbortSignal;
  /**
   * When this wait would close a cycle of waiters, refuse it (rejects with
   * code DEADLOCK) rather than only report the cycle. Default false: jBASE
   * waits (docs/deadlocks.md says why).
   */
  breakDeadlock?: boolean;
}

/** Options of the callback form of a wait (RecordLocks.wait). */
export interface WaitOptions {
  /** as LockOptions.breakDeadlock */
  breakDeadlock?: boolean;
}

export interface LockRow {
  group: number;
  /** refused: a wait deadlock detection refused, until its waiter collects the verdict */
  state: 'held' | 'waiting' | 'refused';
  queued: number;
  mode: LockMode;
  hash: number;
  pid: number;
  ownerPid: number;
  ownerTid: number;
  /** the owner's connection within the holding process (lock server), 0 for a local process */
  conn: number;
  port: number;
  inode: bigint;
  dev: bigint;
  seq: number;
  /** ms since the epoch when granted or queued (tables made with -T), else 0 */
  stampMs: number;
  /** the fencing token of a held lock (docs/fencing.md), 0n for a wait */
  token: bigint;
  ip: string;
  key: Buffer;
}

export interface TableHeader extends Omit<NativeHeader, 'hashSeed'> {
  /** total locks: groups x locks per group */
  capacity: number;
  portLocks: boolean;
  timestamps: boolean;
}

export interface TableUsage {
  /** held locks */
  held: number;
  /** queued requests */
  waiting: number;
  /** most held locks in one group now */
  maxInGroup: number;
  /** most entries ever in use in one group */
  highWater: number;
}

export interface CreateOptions {
  releaseDir?: string;
  /** -s nn: record locks requested (default 3020) */
  locks?: number;
  /** -s ,mm: locks per group (default 20) */
  perGroup?: number;
  /** -P: locks belong to the port */
  portLocks?: boolean;
  /** -T: time-stamp every lock */
  timestamps?: boolean;
  /**
   * Put the table in service at once (default true): it becomes the
   * installation's record-lock mechanism for every process. false leaves a
   * new table STARTING for the caller's own enterService() loop (the monitor
   * names the processes it waits for).
   */
  inService?: boolean;
}

const modeNumber = (m: LockMode): number => {
  if (m === 'read') return C.MODE_READ;
  if (m === 'write') return C.MODE_WRITE;
  throw new JdlsError('BAD_ARGUMENT', `lock mode must be 'read' or 'write', got ${String(m)}`);
};
const modeName = (m: number): LockMode => (m === C.MODE_WRITE ? 'write' : 'read');
const holderOf = (h: NativeHolder): Holder => ({ ...h, mode: modeName(h.mode) });

function checkKey(key: Buffer | string): void {
  const len = typeof key === 'string' ? Buffer.byteLength(key) : key.length;
  if (len > C.MAX_KEY) throw new JdlsError('KEY_TOO_LONG', `key is ${len} bytes; the longest a lock can hold is ${C.MAX_KEY}`);
}

interface PendingWait {
  /** called once: no argument when granted */
  done: (err?: JdlsError, token?: bigint) => void;
  ticket: { group: number; slot: number; seq: number };
}

export class LockTable implements RecordLocks {
  readonly kind = 'shm' as const;
  /** this process's info record, when opened with `info` (recorder.ts); undefined otherwise: every hook is `?.` */
  #info: TableInfoHook | undefined;
  readonly path: string;
  readonly releaseDir: string;
  /** create(): the table was there already (the requested size was ignored) */
  readonly existed: boolean;
  #t: NativeTable | undefined;
  #waits = new Map<number, PendingWait>();
  #nextId = 1;
  /** the table's hash key (private: see header()) */
  #hashSeed: bigint | undefined;
  /** the waiter thread's "look": collect what is settled (the one consumer is this thread) */
  #onLook = (): void => this.#settleHandedOff();
  /** where the addon puts the token of a grant made on this thread (tryLock, lockBlocking, cancel) */
  readonly #tokenSink = new BigUint64Array(1);

  private constructor(dir: string, t: NativeTable) {
    this.releaseDir = dir;
    this.path = tablePath(dir);
    this.#t = t;
    this.existed = t.existed;
    t.setTokenSink(this.#tokenSink);
  }

  /** Create the installation's table, or open it if it exists (see .existed). */
  static create(opts: CreateOptions = {}): LockTable {
    const dir = opts.releaseDir ?? defaultReleaseDir();
    const locks = opts.locks ?? C.DEFAULT_LOCKS;
    const perGroup = opts.perGroup ?? C.DEFAULT_PER_GROUP;
    const max = native.constants;
    if (!Number.isInteger(locks) || locks < 1 || locks > max.MAX_LOCKS)
      throw new JdlsError('BAD_ARGUMENT', `number of locks must be 1..${max.MAX_LOCKS}, got ${locks}`);
    if (!Number.isInteger(perGroup) || perGroup < 1 || perGroup > max.MAX_PER_GROUP || perGroup > locks)
      throw new JdlsError('BAD_ARGUMENT', `locks per group must be 1..${Math.min(max.MAX_PER_GROUP, locks)}, got ${perGroup}`);
    const flags = (opts.portLocks ? C.FLAG_PORT_LOCKS : 0) | (opts.timestamps ? C.FLAG_TIMESTAMPS : 0);
    const table = new LockTable(dir, LockTable.#native(tablePath(dir), dir, true, locks, perGroup, flags));
    if (opts.inService !== false && !table.enterService()) {
      const why = `the lock table cannot enter service: processes of this installation lock records as OS file locks (${markerPath(table.path)} is read-locked); stop them first`;
      if (!table.existed) table.remove();
      else table.close();
      throw new JdlsError('OS_ROUTE_IN_USE', why);
    }
    return table;
  }

  /**
   * Make this table the installation's record-lock mechanism: true when it
   * is (or was already); false while processes that lock records as OS file
   * locks live (they hold the marker's read lock: native/common/
   * jdls_service.c). It stays STARTING then: retry, or retire() it.
   */
  enterService(): boolean {
    const rc = this.#table.enterService();
    if (rc === C.RC_OK) return true;
    if (rc === C.RC_CONFLICT) return false;
    const err = errorFromRc(rc, `putting lock table ${this.path} in service`);
    const detail = native.lastDetail(); // the marker that was refused, and what to do
    if (detail) err.message = detail;
    throw err;
  }

  /** Take the table out of service: every process that mapped it turns to OS file locks at its next call. Before removing it. */
  retire(): void {
    this.#table.retire();
  }

  /** Retire, close and unlink (a table this process just made and must not leave behind). */
  remove(): void {
    this.retire();
    this.close();
    try {
      fs.unlinkSync(this.path);
    } catch {
      /* gone already */
    }
  }

  /** Open the installation's existing table (code NO_TABLE if there is none). */
  static open(opts: { releaseDir?: string; info?: InfoRecorderOptions } = {}): LockTable {
    const dir = opts.releaseDir ?? defaultReleaseDir();
    const t = new LockTable(dir, LockTable.#native(tablePath(dir), dir, false, 0, 0, 0));
    // Opt-in: a runtime locking directly gets its own info record (docs/info-records.md).
    if (opts.info) t.#info = new InfoRecorder(t, opts.info);
    return t;
  }

  /** The info recorder of this process (open with `info`): declareFile(), idle(). */
  get info(): InfoRecorder | undefined {
    return this.#info instanceof InfoRecorder ? this.#info : undefined;
  }

  static #native(p: string, dir: string, create: boolean, locks: number, perGroup: number, flags: number): NativeTable {
    try {
      return new native.Table(p, create, locks, perGroup, flags, dir);
    } catch (e) {
      const err = e as Error & { rc?: number; syscall?: string; detail?: string };
      if (typeof err.rc === 'number') {
        const je = errorFromRc(err.rc, `${create ? 'creating' : 'opening'} lock table ${p}`);
        // The C side's detail names the path, the owner, the mode and what
        // to do (jdls_check_file): it replaces the generic text.
        if (err.detail) je.message = err.detail;
        else if (err.syscall) je.message += ` (${err.syscall})`;
        throw je;
      }
      throw e;
    }
  }

  get #table(): NativeTable {
    if (!this.#t) throw new JdlsError('CLOSED', 'lock table is closed');
    return this.#t;
  }

  /** NOWAIT (jBASE's LOCKED clause): granted, or who holds it. */
  tryLock(owner: Owner, file: FileId, key: Buffer | string, mode: LockMode): LockResult {
    checkKey(key);
    const r = this.#table.tryLock(owner.packed, file.packed, key, modeNumber(mode), C.REQ_NOWAIT);
    if (r === C.RC_OK) {
      this.#info?.granted();
      return { granted: true, token: this.#tokenSink[0] ?? 0n };
    }
    if (typeof r === 'number') throw errorFromRc(r, 'lock');
    if (r.rc === C.RC_CONFLICT) return { granted: false, holder: holderOf(r.holder) };
    throw new JdlsError('BAD_ARGUMENT', 'NOWAIT request was queued');
  }

  /**
   * Take a lock, waiting in FIFO order if someone else holds it. The wait
   * runs on the addon's waiter thread: the event loop and the libuv pool stay
   * free. Rejects with TIMEOUT or ABORTED, having left the queue, or with
   * DEADLOCK (nothing held) when `breakDeadlock` is set and the wait was in
   * a cycle of waiters (docs/deadlocks.md). Resolves with the grant's
   * fencing token.
   */
  lock(owner: Owner, file: FileId, key: Buffer | string, mode: LockMode, opts: LockOptions = {}): Promise<LockGrant> {
    // Every failure, bad arguments included, is a rejection: callers that
    // only attach .catch() must see them.
    return new Promise<LockGrant>((resolve, reject) => {
      if (opts.signal?.aborted) throw new JdlsError('ABORTED', 'lock request aborted');
      let timer: NodeJS.Timeout | undefined;
      let onAbort: (() => void) | undefined;
      const id = this.wait(owner, file, key, mode, (err, token) => {
        if (timer) clearTimeout(timer);
        if (onAbort) opts.signal?.removeEventListener('abort', onAbort);
        if (err) reject(err);
        else resolve(token === undefined ? {} : { token });
      }, opts.breakDeadlock ? { breakDeadlock: true } : undefined);
      if (id === 0) return; // settled already
      if (opts.timeoutMs !== undefined) {
        timer = setTimeout(() => this.#withdraw(id, new JdlsError('TIMEOUT', `lock not granted within ${opts.timeoutMs} ms`)), opts.timeoutMs);
      }
      if (opts.signal) {
        onAbort = (): void => this.#withdraw(id, new JdlsError('ABORTED', 'lock request aborted'));
        opts.signal.addEventListener('abort', onAbort, { once: true });
      }
    });
  }

  /**
   * lock() for a caller that counts allocations (the lock server: no
   * promise, no AbortSignal per request). `done` is called exactly once: with
   * no argument when granted, else with the error; synchronously when the
   * request settles at once (then the result is 0), otherwise later, with the
   * wait's id returned here for cancelWait(). Never throws.
   */
  wait(owner: Owner, file: FileId, key: Buffer | string, mode: LockMode, done: (err?: JdlsError, token?: bigint) => void, opts?: WaitOptions): number {
    let t: NativeTable;
    let r: NativeTryLock;
    try {
      checkKey(key);
      t = this.#table;
      r = t.tryLock(owner.packed, file.packed, key, modeNumber(mode), opts?.breakDeadlock ? C.REQ_BREAK_DEADLOCK : 0);
    } catch (e) {
      done(e instanceof JdlsError ? e : new JdlsError('BAD_ARGUMENT', (e as Error).message));
      return 0;
    }
    if (r === C.RC_OK) {
      this.#info?.granted();
      done(undefined, this.#tokenSink[0]);
      return 0;
    }
    if (r === C.RC_DEADLOCK) {
      done(deadlockError());
      return 0;
    }
    if (typeof r === 'number' || r.rc !== C.RC_QUEUED) {
      done(typeof r === 'number' ? errorFromRc(r, 'lock') : new JdlsError('BAD_ARGUMENT', 'unexpected conflict on a waiting request'));
      return 0;
    }
    const id = this.#nextId++;
    this.#waits.set(id, { done, ticket: { group: r.group, slot: r.slot, seq: r.seq } });
    t.waitAsync(r.group, r.slot, r.seq, id, this.#onLook);
    // A pending wait keeps the process alive, as a pending socket would.
    if (this.#waits.size === 1) t.ref();
    this.#info?.block();
    return id;
  }

  /** Withdraw a wait() request: its done gets ABORTED - or nothing, if it was granted meanwhile (then done() was or is called). */
  cancelWait(id: number): void {
    this.#withdraw(id, new JdlsError('ABORTED', 'lock request aborted'));
  }

  /** Block this thread until granted (tools and worker threads only). */
  lockBlocking(owner: Owner, file: FileId, key: Buffer | string, mode: LockMode, timeoutMs = -1, opts: WaitOptions = {}): LockGrant {
    checkKey(key);
    const rc = this.#table.lockBlocking(owner.packed, file.packed, key, modeNumber(mode), timeoutMs, opts.breakDeadlock ? C.REQ_BREAK_DEADLOCK : 0);
    if (rc === C.RC_OK) {
      this.#info?.granted();
      return { token: this.#tokenSink[0] ?? 0n };
    }
    if (rc === C.RC_TIMEOUT) throw new JdlsError('TIMEOUT', `lock not granted within ${timeoutMs} ms`);
    if (rc === C.RC_DEADLOCK) throw deadlockError();
    throw errorFromRc(rc, 'lock');
  }

  #withdraw(id: number, err: JdlsError): void {
    const w = this.#waits.get(id);
    if (!w) return;
    const rc = this.#table.cancel(w.ticket.group, w.ticket.slot, w.ticket.seq);
    this.#finish(id);
    // Granted in the race with the timeout: the caller holds it, so say so.
    if (rc === C.RC_OK) w.done(undefined, this.#tokenSink[0]);
    else if (rc === C.RC_DEADLOCK) w.done(deadlockError());
    else w.done(err);
    // Leaving the queue can unblock requests behind it (shared ones behind
    // a withdrawn exclusive one), some perhaps of this process.
    if (this.#waits.size > 0) this.#settleHandedOff();
  }

  #settle(done: (number | bigint)[]): void {
    for (let i = 0; i + 2 < done.length; i += 3) {
      const id = Number(done[i]);
      const w = this.#waits.get(id);
      if (!w) continue; // withdrawn meanwhile
      this.#finish(id);
      const rc = Number(done[i + 1]);
      if (rc === C.RC_OK) this.#info?.granted();
      if (rc === C.RC_OK) w.done(undefined, done[i + 2] as bigint);
      else if (rc === C.RC_DEADLOCK) w.done(deadlockError());
      else w.done(errorFromRc(rc < 0 ? rc : -3, 'waiting for lock'));
    }
  }

  /**
   * Settle the waits that are granted (or failed) now. The only consumer of
   * grants: the waiter thread never settles a wait, it only calls #onLook.
   * Called right after a release, which may have handed the lock to a wait
   * of this same process (a lock server serving both clients): that wait is
   * settled inside the release, in this turn of the event loop - always, so
   * the new holder's GRANTED is written before the releaser's RELEASED - and
   * with no hop through the waiter thread (docs/benchmarks.md, "Hand-off").
   */
  #settleHandedOff(): void {
    const done = this.#t?.takeGranted();
    if (done) this.#settle(done);
  }

  #finish(id: number): void {
    const w = this.#waits.get(id);
    if (!w) return;
    this.#waits.delete(id);
    if (this.#waits.size === 0) this.#t?.unref();
    this.#info?.unblock();
  }

  /** Release one key. False if this owner did not hold it. */
  unlock(owner: Owner, file: FileId, key: Buffer | string): boolean {
    checkKey(key);
    const rc = this.#table.unlock(owner.packed, file.packed, key);
    if (rc === C.RC_OK) {
      this.#info?.change();
      if (this.#waits.size > 0) this.#settleHandedOff();
      return true;
    }
    if (rc === C.RC_NOT_HELD) return false;
    throw errorFromRc(rc, 'unlock');
  }

  /** Release all of an owner's locks, or those in one file. Returns how many. */
  unlockAll(owner: Owner, file?: FileId): number {
    const n = this.#table.unlockAll(owner.packed, file ? file.packed : null);
    if (n < 0) throw errorFromRc(n, 'unlockAll');
    if (n > 0) this.#info?.change();
    if (n > 0 && this.#waits.size > 0) this.#settleHandedOff();
    return n;
  }

  /** jBASE RECORDLOCKED(): 2/1 held by this owner (WRITE/READ), 0 free, -1/-2 by another (first holder given). */
  status(owner: Owner, file: FileId, key: Buffer | string): { code: number; holder?: Holder; token?: bigint } {
    checkKey(key);
    const r = this.#table.status(owner.packed, file.packed, key);
    if (r.code < -C.RL_FILELOCK) throw errorFromRc(r.code, 'status');
    if (r.code === C.RL_READ || r.code === C.RL_WRITE) {
      // Read separately (a second look under the group's mutex): a STATUS
      // is no hot path, and the owner's own lock cannot change meanwhile
      // unless the owner itself races its own calls.
      return { code: r.code, token: this.#table.tokenOf(owner.packed, file.packed, key) };
    }
    return r.holder ? { code: r.code, holder: holderOf(r.holder) } : { code: r.code };
  }

  /** F_GETLK: the first lock of ANOTHER owner that blocks `mode` (past this owner's own), or undefined. */
  conflict(owner: Owner, file: FileId, key: Buffer | string, mode: LockMode): Holder | undefined {
    checkKey(key);
    const r = this.#table.conflict(owner.packed, file.packed, key, modeNumber(mode));
    if (typeof r === 'number') throw errorFromRc(r, 'conflict');
    return r ? holderOf(r) : undefined;
  }

  /** Free locks of processes that no longer exist. Returns how many. */
  tidy(): number {
    const n = this.#table.tidy();
    if (n < 0) throw errorFromRc(n, 'tidy');
    return n;
  }

  /** Consistency check of every group; the number of problems (0 = sound). */
  check(): number {
    return this.#table.check();
  }

  /** Count one distributed lock retry (an interim WAITING message) in "Lock retries:", atomically. */
  countLockRetry(): void {
    this.#table.countLockRetry();
  }

  /** Held locks, queued requests and the fullest group, from the group counters (cheap; a snapshot). */
  usage(): TableUsage {
    return this.#table.usage();
  }

  /**
   * Become the table's monitor: atomically takes the header's monitor pid if
   * it is 0 or names a dead process. Returns 0, or the pid of the live
   * monitor that holds it.
   */
  claimMonitor(pid: number = process.pid): number {
    return this.#table.claimMonitor(pid, pid === process.pid ? selfStart() : native.pidStart(pid));
  }

  /**
   * Make every later token outrank `token`'s epoch: a SERVER2 secondary
   * told the primary's token for a grant it mirrors (docs/fencing.md).
   */
  raiseTokenFloor(token: bigint): boolean {
    const floor = fenceFloor(token, this.#table.tokenPeek());
    if (floor === undefined) return false;
    this.#table.tokenFloor(floor);
    return true;
  }

  /** Start the table's tokens at `epoch` (the monitor, once, when it made the table). Never lowers them. */
  setTokenEpoch(epoch: bigint): void {
    if (epoch < 0n || epoch > native.constants.TOKEN_MAX_EPOCH) throw new JdlsError('BAD_ARGUMENT', `token epoch ${epoch} out of range`);
    this.#table.tokenFloor(tokenBase(epoch));
  }

  /** C.DEADLOCK_OFF / _REPORT / _BREAK for every process of the installation. */
  setDeadlockPolicy(policy: number): void {
    const rc = this.#table.setDeadlockPolicy(policy);
    if (rc !== C.RC_OK) throw errorFromRc(rc, 'deadlock policy');
  }

  /** Deadlock report n (1-based: header().deadlockReports is the last), undefined if no longer kept. */
  deadlockReport(n: number): NativeReport | undefined {
    return this.#table.readReport(n);
  }

  header(): TableHeader {
    // The hash key stays out of the header object: it is shown nowhere
    // (-dvL --json prints the header) - a client that learnt it could aim
    // its keys at one group again (jdls_table.h, hash_seed).
    const { hashSeed, ...h } = this.#table.header();
    this.#hashSeed = hashSeed;
    return {
      ...h,
      capacity: h.ngroups * h.perGroup,
      portLocks: (h.flags & C.FLAG_PORT_LOCKS) !== 0,
      timestamps: (h.flags & C.FLAG_TIMESTAMPS) !== 0,
    };
  }

  /** The lock hash of (file, key) in this table ("value" in -dvL); its group is this % ngroups. */
  keyHash(file: FileId, key: Buffer | string): number {
    this.#hashSeed ??= this.#table.header().hashSeed;
    return native.hash(file.packed, key, this.#hashSeed);
  }

  setHeader(field: HeaderField, value: number): void;
  setHeader(field: 'listenerAddr', value: string): void;
  setHeader(field: HeaderField | 'listenerAddr', value: number | string): void {
    if (field === 'listenerAddr') this.#table.setHeader(field, String(value));
    else this.#table.setHeader(field, Number(value));
  }

  /** Every held lock and queued request, a batch of groups at a time. */
  *rows(batchGroups = 256): Generator<LockRow[]> {
    const ngroups = this.header().ngroups;
    let g = 0;
    while (g < ngroups) {
      const r = this.#table.list(g, Math.min(batchGroups, ngroups - g));
      if (typeof r === 'number') throw errorFromRc(r, 'list');
      if (r.rows.length) yield r.rows.map(rowOf);
      if (r.next <= g) throw new JdlsError('SYSTEM', `listing made no progress at group ${g}`);
      g = r.next;
    }
  }

  /** Test hook: hold a group's mutex with a torn entry (then get killed). */
  debugHoldGroup(group: number): void {
    const rc = this.#table.debugHoldGroup(group);
    if (rc < 0) throw errorFromRc(rc, 'debugHoldGroup');
  }

  /** Close: pending waits are withdrawn and rejected with CLOSED. */
  close(): void {
    if (!this.#t) return;
    this.#info?.close();
    this.#info = undefined;
    for (const id of [...this.#waits.keys()]) this.#withdraw(id, new JdlsError('CLOSED', 'lock table closed while waiting'));
    this.#t.close();
    this.#t = undefined;
  }
}

function deadlockError(): JdlsError {
  return new JdlsError('DEADLOCK', 'lock refused: waiting would close a cycle of waiters (deadlock); nothing is held - release what you hold, then retry');
}

function rowOf(r: NativeRow): LockRow {
  return {
    group: r.group,
    state: r.state === C.STATE_WAITING ? 'waiting' : r.state === C.STATE_REFUSED ? 'refused' : 'held',
    queued: r.queued,
    mode: modeName(r.mode),
    hash: r.hash,
    pid: r.pid,
    ownerPid: r.ownerPid,
    ownerTid: r.ownerTid,
    conn: r.conn,
    port: r.port,
    inode: r.inode,
    dev: r.dev,
    seq: r.seq,
    stampMs: r.stampMs,
    token: r.token,
    ip: r.ip,
    key: r.key,
  };
}

/** jBASE's group count for -s nn,mm: ceil(nn/mm) rounded up to a prime. */
/**
 * How far one FENCE may raise a server's epoch above its own. Why a bound:
 * any client that may lock can send FENCE, and an unbounded raise let one
 * request push the epoch to the last one, after which the installation
 * could not start a new epoch (jdls -i refused: tokens exhausted). Bounded,
 * burning the 2^19 epochs takes hundreds of requests, each logged
 * (docs/security.md). A real pair's epochs differ by restarts, far fewer.
 */
export const MAX_FENCE_JUMP = 1024n;

/**
 * The floor a FENCE token asks for (the first token of the epoch after its
 * own), or undefined when the tokens are there already. `next` is the
 * mechanism's next token. Throws BAD_ARGUMENT for a token out of range or
 * an epoch more than MAX_FENCE_JUMP above the mechanism's.
 */
export function fenceFloor(token: bigint, next: bigint): bigint | undefined {
  const epoch = tokenEpoch(token);
  if (token <= 0n || epoch >= native.constants.TOKEN_MAX_EPOCH)
    throw new JdlsError('BAD_ARGUMENT', `fencing token ${token} is out of range (epoch ${epoch}, at most ${native.constants.TOKEN_MAX_EPOCH - 1n})`);
  const mine = tokenEpoch(next);
  if (epoch < mine) return undefined;
  if (epoch - mine > MAX_FENCE_JUMP)
    throw new JdlsError('BAD_ARGUMENT', `FENCE token's epoch ${epoch} is more than ${MAX_FENCE_JUMP} above this server's (${mine}): refused (docs/security.md, "Fencing tokens")`);
  return tokenBase(epoch + 1n);
}

/** The first token of an epoch. */
export function tokenBase(epoch: bigint): bigint {
  return (epoch << BigInt(C.TOKEN_EPOCH_SHIFT)) | 1n;
}

/** A token's epoch (restart or failover generation). */
export function tokenEpoch(token: bigint): bigint {
  return token >> BigInt(C.TOKEN_EPOCH_SHIFT);
}

export function groupsFor(locks: number, perGroup: number): number {
  return native.nextPrime(Math.ceil(locks / perGroup));
}
