// ofd.ts - open file description (OFD) byte-range locks, for TypeScript: the
// primitive under OS record locks (src/locks/oslock.ts) and binary locks.
//
// Owns: the typed view of the addon's `oslock` exports, errno -> JdlsError
// mapping (one function, naming the path), validation of 64-bit ranges,
// asynchronous waits (promises, timeouts, AbortSignal) on the addon's
// per-wait threads, and OfdFile. Does not own: owners, keys, the registry of
// held record locks (src/locks/oslock.ts), POSIX range bookkeeping (src/locks/ranges.ts).
//
// An OfdFile is ONE open file description. Its locks belong to it, not to
// the process: two OfdFiles on one file conflict with each other like two
// processes would, and both conflict with classic fcntl locks of other
// processes. Closing it releases all of its locks.
import fs from 'node:fs';
import util from 'node:util';
import { native } from '../native.js';
import { JdlsError } from '../errors.js';
import type { LockMode, LockOptions } from './table.js';

// ---- the addon's surface ---------------------------------------------------

export interface NativeGetlk {
  type: number;
  start: bigint;
  len: bigint;
  pid: number;
}

/** One open file description (native/addon/oslock.cc, class Ofd). */
export interface NativeOfd {
  /** 0 granted, 1 conflict, < 0 -errno */
  setlk(start: bigint | number, len: bigint | number, type: number): number;
  /** null: free; else the first conflicting lock; < 0 -errno */
  getlk(start: bigint | number, len: bigint | number, type: number): NativeGetlk | null | number;
  close(): void;
  // Record keys held through this description (KeyRegistry in oslock.cc):
  /** 0 granted, 1 conflict, < 0 -errno; re-lock is free, READ<->WRITE converts */
  lockKey(key: Buffer | string, type: number): number;
  /** 0 released, 4 not held, < 0 -errno */
  unlockKey(key: Buffer | string): number;
  /** [the key's byte, the type to take it in for `type`] (for waits) */
  keyTarget(key: Buffer | string, type: number): [bigint, number];
  /** record a key a wait took (byte held as heldType); 0 or -errno */
  grantKey(key: Buffer | string, type: number, heldType: number): number;
  /** -1 or the type this key is held in */
  keyMode(key: Buffer | string): number;
  /** -1 or the type the key's byte is held in (by any key of this description) */
  byteMode(key: Buffer | string): number;
  keys(): Array<{ key: Buffer; type: number; offset: bigint }>;
  /** forget every key; returns how many */
  clearKeys(): number;
  keyCount(): number;
  /** does `path` still name this description's file? 1 yes, 0 no (deleted or replaced), -errno */
  stillNamed(path: string): number;
  /**
   * true: the kernel has just granted this description [0, infinity) WRITE
   * (a FILELOCK); keys then change the registry only. false: give the
   * kernel back exactly the registry's bytes (gaps unlocked, READ bytes
   * downgraded in place; nothing held is released in between). 0 | -errno
   */
  holdWhole(on: boolean): number;
  /** the same reshaping without the flag (a FILELOCK grant given back); 0 | -errno */
  reshape(): number;
}

interface NativeWaits {
  /** 0 started, < 0 -errno */
  start(ofd: NativeOfd, start: bigint | number, len: bigint | number, type: number, id: number): number;
  /** CANCELLED (3), 0 granted meanwhile, < 0 -errno, 4 unknown id */
  cancel(id: number): number;
  pending(): number;
  close(): void;
}

export interface NativeOsLock {
  Ofd: new (fd: number) => NativeOfd;
  Waits: new (onDone: (id: number, rc: number) => void) => NativeWaits;
  open(path: string, create: boolean): number;
  ensureDir(dir: string): number;
  /** a lock file, checked (jdls_osl_open_lock): fd | -errno (-EPERM: refused) */
  openLock(path: string, create: boolean): number;
  /** jdls_osl_check_dir: 0 | -errno (-EPERM: not trusted) */
  checkDir(dir: string): number;
  lockPath(dir: string, inode: bigint, dev: bigint): string | number;
  keyOffset(key: Buffer | string): bigint;
  signal(): number;
  constants: {
    READ: number; WRITE: number; UNLOCK: number;
    OK: number; CONFLICT: number; CANCELLED: number;
    KEY_OFFSET_BITS: number; DEFAULT_DIR: string; DIR_MODE: number; FILE_MODE: number;
  };
}

export const osn: NativeOsLock = native.oslock;

/** Lock types as struct flock's l_type (checked against the addon by the tests). */
export const OSL = { READ: 0, WRITE: 1, UNLOCK: 2, OK: 0, CONFLICT: 1, CANCELLED: 3 } as const;

// ---- errors ----------------------------------------------------------------

/** The codes an OS lock failure can carry (all members of JdlsErrorCode). */
export type OsLockErrorCode =
  | 'BAD_LOCK_DIR' | 'BAD_PATH' | 'PERMISSION' | 'TOO_MANY_FILES' | 'NO_LOCKS'
  | 'BAD_ARGUMENT' | 'CLOSED' | 'SYSTEM';

/** An OS lock failure: code, the errno's name, and the path concerned. */
export class OsLockError extends JdlsError {
  /** 'EACCES', 'EMFILE', ... ('' when not from the kernel) */
  readonly errno: string;
  readonly path: string;
  /** the same as `code`, typed with the OS-lock codes */
  readonly osCode: OsLockErrorCode;
  constructor(code: OsLockErrorCode, message: string, errno: string, path: string) {
    super(code, message);
    this.osCode = code;
    this.errno = errno;
    this.path = path;
  }
}

const errnoCode = (name: string): OsLockErrorCode => {
  switch (name) {
    case 'EACCES': case 'EPERM': case 'EROFS': return 'PERMISSION';
    case 'EMFILE': case 'ENFILE': return 'TOO_MANY_FILES';
    case 'ENOENT': case 'ENOTDIR': case 'ELOOP': case 'ENAMETOOLONG': case 'EISDIR': return 'BAD_PATH';
    case 'ENOLCK': return 'NO_LOCKS';
    case 'EINVAL': case 'EOVERFLOW': return 'BAD_ARGUMENT';
    case 'EBADF': return 'CLOSED';
    default: return 'SYSTEM';
  }
};

/** The error for a native result -errno: "<what> <path>: <text> (<ENAME>)". */
export function osError(rc: number, what: string, path: string): OsLockError {
  let name = `errno ${-rc}`;
  let text = 'system error';
  try {
    const info = util.getSystemErrorMap().get(rc);
    if (info) [name, text] = info;
  } catch {
    /* keep the number */
  }
  const code = errnoCode(name);
  const hint = code === 'TOO_MANY_FILES' ? ' - too many open files (raise ulimit -n or close owners\' files)' : '';
  return new OsLockError(code, `${what} ${path}: ${text} (${name})${hint}`, name.startsWith('errno') ? '' : name, path);
}

// ---- ranges ----------------------------------------------------------------

const MAX_OFF = (1n << 63n) - 1n;

export type RangeArg = bigint | number;

/** [start, len] as bigints, checked: start >= 0, len >= 0 (0 = to EOF and beyond), last byte <= 2^63-1. */
export function checkRange(start: RangeArg, len: RangeArg): [bigint, bigint] {
  let s: bigint, l: bigint;
  try {
    s = BigInt(start);
    l = BigInt(len);
  } catch {
    throw new JdlsError('BAD_ARGUMENT', `range start and length must be integers, got ${String(start)}, ${String(len)}`);
  }
  if (s < 0n || l < 0n || s > MAX_OFF || (l > 0n && s + l - 1n > MAX_OFF))
    throw new JdlsError('BAD_ARGUMENT', `range [${s}, +${l}) is outside 0..2^63-1 (length 0 means to the end of the file)`);
  // Trap: a range that ends exactly at the last byte the kernel knows
  // (2^63-1), e.g. [0, 2^63), has a length that off_t - signed - cannot
  // carry: handed to fcntl it failed as an argument error, and an unlock of
  // it failed while the lock stayed held. It is the same set of bytes as
  // "to the end of the file" (length 0), which is what the kernel is given.
  if (l > 0n && s + l - 1n === MAX_OFF) l = 0n;
  return [s, l];
}

export const typeOf = (m: LockMode): number => {
  if (m === 'write') return OSL.WRITE;
  if (m === 'read') return OSL.READ;
  throw new JdlsError('BAD_ARGUMENT', `lock mode must be 'read' or 'write', got ${String(m)}`);
};
export const modeOf = (type: number): LockMode => (type === OSL.WRITE ? 'write' : 'read');

// ---- opening ---------------------------------------------------------------

/** Why a lock file was refused (jdls_osl_open_lock said EPERM): what lstat says now. */
export function refusedLockFile(file: string): OsLockError {
  let why = '';
  try {
    const s = fs.lstatSync(file);
    why = ` (${s.isFile() ? 'a regular file' : 'not a regular file'}, ${s.nlink} link${s.nlink === 1 ? '' : 's'}, owner uid ${s.uid}, mode 0${(s.mode & 0o7777).toString(8)})`;
  } catch {
    /* gone meanwhile */
  }
  return new OsLockError('PERMISSION', `lock file ${file} refused${why}: a lock file must be a regular file with one link and no execute or set-id bits (see docs/security.md)`, 'EPERM', file);
}

/**
 * Open (creating if asked) a file as a new open file description. Throws
 * OsLockError. `lockFile`: a file that exists only to be locked, in a lock
 * directory - opened with jdls_osl_open_lock's checks (one link, a regular
 * file; as root, taken over from another user in a sticky directory).
 */
export function openNativeOfd(path: string, create: boolean, lockFile = false): NativeOfd {
  const fd = lockFile ? osn.openLock(path, create) : osn.open(path, create);
  if (fd === -1 && lockFile) throw refusedLockFile(path);
  if (fd < 0) throw osError(fd, 'opening lock file', path);
  return new osn.Ofd(fd);
}

// ---- waits -----------------------------------------------------------------

export interface WaitRequest {
  ofd: NativeOfd;
  start: bigint;
  len: bigint;
  type: number;
  /** for messages */
  path: string;
  opts?: LockOptions;
  /** runs (synchronously, before the promise resolves) when the lock is granted */
  onGranted?: () => void;
  /** runs once when a started wait ends, however it ends; never from inside startWait */
  onSettled?: () => void;
}

export interface PendingWait {
  readonly promise: Promise<void>;
  /** still waiting (false at once if it could not start: the promise is then rejected) */
  readonly pending: boolean;
  /** Withdraw: rejects with `err` unless the lock was granted meanwhile (then it resolves: the caller holds it). */
  cancel(err: JdlsError): void;
}

interface Entry {
  id: number;
  req: WaitRequest;
  resolve: () => void;
  reject: (e: Error) => void;
  cleanup: () => void;
}

// One Waits object per module instance, i.e. per Node environment (a worker
// has its own): it owns the threads and the ThreadSafeFunction.
let hub: NativeWaits | undefined;
const entries = new Map<number, Entry>();
let nextId = 1;

function settle(e: Entry, rc: number, cancelErr?: JdlsError): void {
  if (!entries.delete(e.id)) return;
  e.cleanup();
  e.req.onSettled?.();
  if (rc === OSL.OK) {
    try {
      e.req.onGranted?.();
    } catch (err) {
      // Runs inside the addon's callback: an exception here would be uncaught.
      e.reject(err instanceof Error ? err : new Error(String(err)));
      return;
    }
    e.resolve();
  } else if (rc === OSL.CANCELLED || rc === 4) {
    e.reject(cancelErr ?? new JdlsError('ABORTED', 'lock wait withdrawn'));
  } else {
    e.reject(osError(rc, 'waiting for a lock on', e.req.path));
  }
}

function waits(): NativeWaits {
  hub ??= new osn.Waits((id, rc) => {
    const e = entries.get(id);
    if (e) settle(e, rc);
  });
  return hub;
}

/** Number of waits in progress in this environment (all OfdFiles and OsLocks). */
export function pendingWaits(): number {
  return entries.size;
}

/**
 * Wait for a lock on a dedicated thread (F_OFD_SETLKW): neither the event
 * loop nor the libuv pool is held. Rejects with TIMEOUT / ABORTED having
 * taken nothing, or with an OsLockError.
 */
export function startWait(req: WaitRequest): PendingWait {
  const opts = req.opts ?? {};
  const id = nextId++;
  let entry: Entry | undefined;
  const cancel = (err: JdlsError): void => {
    if (!entry || !entries.has(id)) return;
    const rc = waits().cancel(id);
    settle(entry, rc, err);
  };
  const promise = new Promise<void>((resolve, reject) => {
    if (opts.signal?.aborted) {
      reject(new JdlsError('ABORTED', 'lock request aborted'));
      return;
    }
    let timer: NodeJS.Timeout | undefined;
    const onAbort = (): void => cancel(new JdlsError('ABORTED', 'lock request aborted'));
    const e: Entry = {
      id,
      req,
      resolve,
      reject,
      cleanup: () => {
        if (timer) clearTimeout(timer);
        opts.signal?.removeEventListener('abort', onAbort);
      },
    };
    const rc = waits().start(req.ofd, req.start, req.len, req.type, id);
    if (rc < 0) {
      reject(osError(rc, 'starting a lock wait on', req.path));
      return;
    }
    entry = e;
    entries.set(id, e);
    if (opts.timeoutMs !== undefined) {
      timer = setTimeout(() => cancel(new JdlsError('TIMEOUT', `lock not granted within ${opts.timeoutMs} ms`)), opts.timeoutMs);
    }
    opts.signal?.addEventListener('abort', onAbort, { once: true });
  });
  return {
    promise,
    cancel,
    get pending() {
      return entries.has(id);
    },
  };
}

// ---- OfdFile ---------------------------------------------------------------

/** Who holds a conflicting range, as the kernel reports it. */
export interface RangeHolder {
  mode: LockMode;
  start: bigint;
  /** 0: to the end of the file and beyond */
  len: bigint;
  /** the holder's pid for a classic fcntl lock; -1 for an OFD holder (any process, this one included) */
  pid: number;
}

export type RangeResult = { granted: true } | { granted: false; holder?: RangeHolder };

export interface OpenOptions {
  /** create the file if missing (mode 0666, whatever the umask); default true */
  create?: boolean;
  /** a lock file in a lock directory: checked as jdls_osl_open_lock does; default false (a real file) */
  lockFile?: boolean;
}

/**
 * One open file description and its byte-range locks. Ranges are POSIX:
 * [start, start+len), len 0 = to the end of the file and beyond; a lock over
 * part of one already held converts that part (READ<->WRITE); an unlock of
 * part of a range splits it. The kernel does the split/merge.
 */
export class OfdFile {
  readonly path: string;
  #h: NativeOfd | undefined;
  #waits = new Set<PendingWait>();

  private constructor(path: string, h: NativeOfd) {
    this.path = path;
    this.#h = h;
  }

  /** Open a file for locking. Throws OsLockError (BAD_PATH, PERMISSION, TOO_MANY_FILES, ...). */
  static open(path: string, opts: OpenOptions = {}): OfdFile {
    if (typeof path !== 'string' || path === '') throw new JdlsError('BAD_ARGUMENT', 'OfdFile.open: path must be a non-empty string');
    return new OfdFile(path, openNativeOfd(path, opts.create ?? true, opts.lockFile ?? false));
  }

  get #ofd(): NativeOfd {
    if (!this.#h) throw new OsLockError('CLOSED', `lock file ${this.path} is closed`, '', this.path);
    return this.#h;
  }

  /** Does this file's path still name the file this description is of? 1 yes, 0 no (deleted or replaced), -errno. */
  stillNamed(): number {
    return this.#ofd.stillNamed(this.path);
  }

  /** NOWAIT: take the range, or say who holds a conflicting lock (holder absent if it went meanwhile). */
  tryLockRange(start: RangeArg, len: RangeArg, mode: LockMode): RangeResult {
    const [s, l] = checkRange(start, len);
    const type = typeOf(mode);
    const rc = this.#ofd.setlk(s, l, type);
    if (rc === OSL.OK) return { granted: true };
    if (rc === OSL.CONFLICT) {
      const h = this.getlk(s, l, mode);
      return h ? { granted: false, holder: h } : { granted: false };
    }
    throw osError(rc, 'locking a range of', this.path);
  }

  /** Wait until granted (dedicated thread). Rejects with TIMEOUT / ABORTED / CLOSED having taken nothing. */
  lockRange(start: RangeArg, len: RangeArg, mode: LockMode, opts: LockOptions = {}): Promise<void> {
    let s: bigint, l: bigint, type: number, ofd: NativeOfd;
    try {
      [s, l] = checkRange(start, len);
      type = typeOf(mode);
      ofd = this.#ofd;
      const rc = ofd.setlk(s, l, type);
      if (rc === OSL.OK) return Promise.resolve();
      if (rc !== OSL.CONFLICT) throw osError(rc, 'locking a range of', this.path);
    } catch (e) {
      return Promise.reject(e instanceof Error ? e : new Error(String(e)));
    }
    const waits = this.#waits;
    const w: PendingWait = startWait({ ofd, start: s, len: l, type, path: this.path, opts, onSettled: () => waits.delete(w) });
    if (w.pending) waits.add(w);
    return w.promise;
  }

  /** Release a range (or part of one: the rest stays locked). Unlocking what is not held is not an error (POSIX). */
  unlockRange(start: RangeArg, len: RangeArg): void {
    const [s, l] = checkRange(start, len);
    const rc = this.#ofd.setlk(s, l, OSL.UNLOCK);
    if (rc !== OSL.OK) throw osError(rc, 'unlocking a range of', this.path);
  }

  /** The first lock of ANOTHER description or process that would block `mode` on the range, or undefined. */
  getlk(start: RangeArg, len: RangeArg, mode: LockMode): RangeHolder | undefined {
    const [s, l] = checkRange(start, len);
    const r = this.#ofd.getlk(s, l, typeOf(mode));
    if (typeof r === 'number') throw osError(r, 'testing a lock on', this.path);
    if (r === null) return undefined;
    return { mode: modeOf(r.type), start: r.start, len: r.len, pid: r.pid };
  }

  /** Waits of this file still in progress. */
  get waiting(): number {
    return this.#waits.size;
  }

  get closed(): boolean {
    return this.#h === undefined;
  }

  /** Withdraw pending waits (they reject with CLOSED), then close: the kernel releases every lock of this description. */
  close(): void {
    if (!this.#h) return;
    for (const w of [...this.#waits]) w.cancel(new JdlsError('CLOSED', `lock file ${this.path} closed while waiting`));
    this.#h.close();
    this.#h = undefined;
  }
}
