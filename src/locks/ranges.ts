// ranges.ts - the POSIX byte-range lock model, defined once: ranges over
// unsigned 64-bit offsets, one owner's holdings in one file (RangeSet), and the
// holdings of many owners in one file (LockSpace), with POSIX semantics
// (replace-in-range, split on partial unlock, merge of same-mode neighbours).
//
// Owns: range arithmetic and validation (POSIX l_len 0 = to infinity, negative
// l_len = the bytes before start), the lockf() -> range mapping, conflict
// answers (F_GETLK) among the owners it is told about, listings for displays.
//
// Does NOT: talk to the kernel (src/locks/oslock.ts does), wait or queue (a blocking
// F_SETLKW is the caller's loop around tryLock), detect deadlocks, resolve
// l_whence (the shim knows the descriptor's offset and size), know file
// identities or owner lifetimes (the server calls unlockAll when an owner dies
// or closes a descriptor of the file).
//
// Representation: a range is { start, end } with `end` EXCLUSIVE. "To the end
// of the file, infinitely" is end === END_INFINITY (2^64): the model's address
// space is bytes 0..2^64-1, so [start, 2^64) is exactly every byte from start
// on. A finite range that reaches the last byte is therefore the same range as
// the infinite one and reports l_len 0 - Linux does the same with OFFSET_MAX.
//
// Cost: every operation is a binary search plus work on the segments it
// touches (and one splice); nothing is per byte.
import { JdlsError } from '../errors.js';
import type { LockMode } from './table.js';

/** Shared ('read', F_RDLCK) or exclusive ('write', F_WRLCK); the table's LockMode. */
export type RangeMode = LockMode;

/** Exclusive end of the address space; as a range end it means "to infinity" (l_len 0). */
export const END_INFINITY: bigint = 1n << 64n;

/**
 * The kernel's limit: off_t is signed, so Linux locks only bytes 0..2^63-1 and
 * treats a lock reaching OFFSET_MAX (2^63-1) as "to infinity".
 */
export const KERNEL_END: bigint = 1n << 63n;

/** Bytes [start, end): 0 <= start < end <= END_INFINITY. Never empty. */
export interface Range {
  readonly start: bigint;
  readonly end: bigint;
}

/** One piece of an owner's holdings. */
export interface Segment extends Range {
  readonly mode: RangeMode;
}

/** A segment with its owner and its POSIX length (0 = to infinity): an F_GETLK answer, a display row. */
export interface Holding<O> extends Segment {
  readonly owner: O;
  readonly len: bigint;
}

/** Why a POSIX (start, len) pair is not a range, as the errno fcntl would set. */
export interface RangeFault {
  readonly errno: 'EINVAL' | 'EOVERFLOW';
  readonly message: string;
}

export function isRangeFault(x: Range | RangeFault | LockfAction): x is RangeFault {
  return 'errno' in x;
}

// ------------------------------------------------------------------ ranges

const fault = (errno: RangeFault['errno'], message: string): RangeFault => ({ errno, message });

/**
 * The range of a POSIX lock request whose l_whence is already resolved:
 * `start` is the absolute l_start, `len` is l_len (0: to infinity; negative:
 * the |len| bytes before start, as POSIX.1-2008 and Linux allow). Returns the
 * errno fcntl would give instead of a range: EINVAL for a start outside the
 * space or a backwards range reaching below 0, EOVERFLOW for a range running
 * past the end. With `kernel`, the space is the kernel's (0..2^63-1), and a
 * range reaching 2^63 becomes the infinite range, as Linux stores it.
 */
export function fromPosix(start: bigint, len: bigint, opts: { kernel?: boolean } = {}): Range | RangeFault {
  if (typeof start !== 'bigint' || typeof len !== 'bigint') return fault('EINVAL', 'start and len must be bigints');
  const limit = opts.kernel ? KERNEL_END : END_INFINITY;
  if (start < 0n || start >= limit) return fault('EINVAL', `start ${start} is outside 0..${limit - 1n}`);
  let r: Range;
  if (len === 0n) {
    r = { start, end: END_INFINITY };
  } else if (len > 0n) {
    // Why the check is on end and not on start + len - 1 in a wider type:
    // bigints cannot wrap, so the only question is whether it fits the space.
    if (start + len > limit) return fault('EOVERFLOW', `range ${start}+${len} runs past ${limit - 1n}`);
    r = { start, end: start + len };
  } else {
    // Negative l_len: bytes start+len .. start-1 (the byte at start excluded).
    if (start + len < 0n) return fault('EINVAL', `range ${start}${len} would begin before offset 0`);
    r = { start: start + len, end: start };
  }
  if (opts.kernel && r.end === KERNEL_END) r = { start: r.start, end: END_INFINITY };
  return r;
}

/** fromPosix() for programs: throws JdlsError BAD_ARGUMENT, the message naming the errno. */
export function range(start: bigint, len: bigint, opts: { kernel?: boolean } = {}): Range {
  const r = fromPosix(start, len, opts);
  if (isRangeFault(r)) throw new JdlsError('BAD_ARGUMENT', `${r.errno}: ${r.message}`);
  return r;
}

/** The POSIX l_len of a range: 0 when it runs to infinity. */
export function posixLen(r: Range): bigint {
  return r.end === END_INFINITY ? 0n : r.end - r.start;
}

/** The (l_start, l_len) pair of a range, as F_GETLK reports it (whence SEEK_SET). */
export function toPosix(r: Range): { start: bigint; len: bigint } {
  return { start: r.start, len: posixLen(r) };
}

/** For displays: first and last byte, "EOF" for infinity ("1073741826-1073742335", "0-EOF"). */
export function formatRange(r: Range): string {
  return `${r.start}-${r.end === END_INFINITY ? 'EOF' : String(r.end - 1n)}`;
}

/** Throws unless r is a well-formed, non-empty range. */
function checkRange(r: Range): void {
  if (typeof r !== 'object' || r === null || typeof r.start !== 'bigint' || typeof r.end !== 'bigint'
    || r.start < 0n || r.end <= r.start || r.end > END_INFINITY) {
    throw new JdlsError('BAD_ARGUMENT', `not a byte range [start, end) within 0..2^64: ${describe(r)}`);
  }
}

function checkMode(m: RangeMode): void {
  if (m !== 'read' && m !== 'write') throw new JdlsError('BAD_ARGUMENT', `lock mode must be 'read' or 'write', got ${String(m)}`);
}

function describe(r: unknown): string {
  if (typeof r !== 'object' || r === null) return String(r);
  const o = r as { start?: unknown; end?: unknown };
  return `{ start: ${String(o.start)}, end: ${String(o.end)} }`;
}

/** Whether a request in `want` mode conflicts with a held segment in `held` mode. */
export function modesConflict(want: RangeMode, held: RangeMode): boolean {
  return want === 'write' || held === 'write';
}

// ------------------------------------------------------------------ lockf

/** lockf() commands (Linux/glibc values). */
export const LOCKF = { F_ULOCK: 0, F_LOCK: 1, F_TLOCK: 2, F_TEST: 3 } as const;

/** What a lockf() call means as a POSIX lock operation. */
export type LockfAction =
  | { readonly op: 'lock'; readonly wait: boolean; readonly mode: 'write'; readonly range: Range }
  | { readonly op: 'unlock'; readonly range: Range }
  | { readonly op: 'test'; readonly mode: 'read'; readonly range: Range };

/**
 * lockf(fd, cmd, len) as glibc implements it: l_whence SEEK_CUR with l_start
 * 0, so the range starts at the descriptor's current `offset`; len > 0 runs
 * forward, len 0 to infinity, len < 0 covers the |len| bytes before offset.
 * F_LOCK is F_SETLKW of a write lock, F_TLOCK F_SETLK, F_ULOCK an unlock.
 * Trap: glibc's F_TEST probes with F_GETLK of a READ lock, so only another
 * owner's write lock makes it fail (EACCES); an F_TEST here is 'read' too.
 * An unknown cmd is EINVAL, as in glibc.
 */
export function lockfAction(cmd: number, offset: bigint, len: bigint, opts: { kernel?: boolean } = {}): LockfAction | RangeFault {
  if (cmd !== LOCKF.F_ULOCK && cmd !== LOCKF.F_LOCK && cmd !== LOCKF.F_TLOCK && cmd !== LOCKF.F_TEST) {
    return fault('EINVAL', `unknown lockf command ${cmd}`);
  }
  const r = fromPosix(offset, len, opts);
  if (isRangeFault(r)) return r;
  switch (cmd) {
    case LOCKF.F_ULOCK: return { op: 'unlock', range: r };
    case LOCKF.F_TEST: return { op: 'test', mode: 'read', range: r };
    default: return { op: 'lock', wait: cmd === LOCKF.F_LOCK, mode: 'write', range: r };
  }
}

// ------------------------------------------------------------------ RangeSet

/**
 * One owner's locks in one file. Invariant: segments sorted by start,
 * non-empty, non-overlapping, and two segments that touch have different
 * modes (same-mode neighbours are always merged). Segments are immutable
 * objects, so holdings() can hand them out.
 */
export class RangeSet {
  #segs: Segment[] = [];

  /** Number of segments. */
  get size(): number {
    return this.#segs.length;
  }

  isEmpty(): boolean {
    return this.#segs.length === 0;
  }

  /** The segments, sorted by start (a copy). */
  holdings(): Segment[] {
    return this.#segs.slice();
  }

  /**
   * POSIX F_SETLK of this owner: its lock on `r` becomes `mode`, whatever it
   * held there before (upgrade or downgrade of exactly that part; segments
   * partly covered are split, same-mode neighbours merged). Conflicts with
   * other owners are not this set's business (LockSpace.tryLock). Returns
   * false if the owner already held all of r in that mode (nothing changed).
   */
  set(r: Range, mode: RangeMode): boolean {
    checkRange(r);
    checkMode(mode);
    if (this.holds(r, mode)) return false;
    let i = this.#carve(r);
    let seg: Segment = { start: r.start, end: r.end, mode };
    // Merge with the left neighbour, then the right one, when they touch and
    // share the mode (carving may have left a same-mode piece on either side).
    const left = this.#segs[i - 1];
    if (left && left.end === seg.start && left.mode === mode) {
      seg = { start: left.start, end: seg.end, mode };
      i -= 1;
      this.#segs.splice(i, 1);
    }
    const right = this.#segs[i];
    if (right && right.start === seg.end && right.mode === mode) {
      seg = { start: seg.start, end: right.end, mode };
      this.#segs.splice(i, 1);
    }
    this.#segs.splice(i, 0, seg);
    return true;
  }

  /** POSIX F_UNLCK of `r`: removes it, splitting segments partly covered. False if nothing was held there. */
  unlock(r: Range): boolean {
    checkRange(r);
    const before = this.#segs.length;
    const lo = this.#firstEndAfter(r.start);
    const touched = lo < before && this.#segs[lo]!.start < r.end;
    if (touched) this.#carve(r);
    return touched;
  }

  /** Releases everything; returns what was held. */
  unlockAll(): Segment[] {
    const was = this.#segs;
    this.#segs = [];
    return was;
  }

  /** Whether every byte of r is held in exactly `mode` (set(r, mode) would change nothing). */
  holds(r: Range, mode: RangeMode): boolean {
    let pos = r.start;
    for (let i = this.#firstEndAfter(r.start); i < this.#segs.length; i++) {
      const s = this.#segs[i]!;
      if (s.start > pos || s.mode !== mode) return false;
      pos = s.end;
      if (pos >= r.end) return true;
    }
    return false;
  }

  /** The mode held at one byte, if any. */
  modeAt(offset: bigint): RangeMode | undefined {
    const s = this.#segs[this.#firstEndAfter(offset)];
    return s && s.start <= offset ? s.mode : undefined;
  }

  /** The first (lowest) segment overlapping r that conflicts with a request of `mode`. */
  firstConflict(r: Range, mode: RangeMode): Segment | undefined {
    for (let i = this.#firstEndAfter(r.start); i < this.#segs.length; i++) {
      const s = this.#segs[i]!;
      if (s.start >= r.end) return undefined;
      if (modesConflict(mode, s.mode)) return s;
    }
    return undefined;
  }

  /** Index of the first segment whose end lies beyond x (the first that can contain or follow byte x). */
  #firstEndAfter(x: bigint): number {
    let lo = 0;
    let hi = this.#segs.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.#segs[mid]!.end > x) hi = mid;
      else lo = mid + 1;
    }
    return lo;
  }

  /**
   * Empties r: segments inside it go, segments straddling its edges keep
   * their outside pieces (one straddling both edges becomes two pieces).
   * Returns the index where a segment for r belongs.
   */
  #carve(r: Range): number {
    const lo = this.#firstEndAfter(r.start);
    let hi = lo;
    while (hi < this.#segs.length && this.#segs[hi]!.start < r.end) hi++;
    if (hi === lo) return lo;
    const first = this.#segs[lo]!;
    const last = this.#segs[hi - 1]!;
    const keep: Segment[] = [];
    if (first.start < r.start) keep.push({ start: first.start, end: r.start, mode: first.mode });
    if (last.end > r.end) keep.push({ start: r.end, end: last.end, mode: last.mode });
    this.#segs.splice(lo, hi - lo, ...keep);
    return first.start < r.start ? lo + 1 : lo;
  }
}

// ------------------------------------------------------------------ LockSpace

export type TryLockResult<O> =
  | { readonly granted: true; readonly changed: boolean }
  | { readonly granted: false; readonly conflict: Holding<O> };

const holding = <O>(owner: O, s: Segment): Holding<O> =>
  ({ owner, start: s.start, end: s.end, mode: s.mode, len: posixLen(s) });

/**
 * The byte-range locks of many owners in one file. Owners are keys of type O
 * compared as Map keys (SameValueZero): use strings (e.g. "host:pid" for a
 * classic-lock process, "ofd:<id>" for an open file description) or interned
 * objects. Invariant, kept by tryLock: no two owners hold conflicting bytes.
 * An owner appears only while it holds something.
 */
export class LockSpace<O = string> {
  readonly #owners = new Map<O, RangeSet>();

  /**
   * F_GETLK: the conflicting segment of ANOTHER owner with the lowest start
   * (ties: the owner that has held locks here longest), or undefined. Read
   * never conflicts with read; an owner never conflicts with itself.
   */
  conflicts(owner: O, r: Range, mode: RangeMode): Holding<O> | undefined {
    checkRange(r);
    checkMode(mode);
    let best: Holding<O> | undefined;
    // Skip the owner's own set by identity of the set: same key semantics as the Map.
    const mine = this.#owners.get(owner);
    for (const [o, set] of this.#owners) {
      if (set === mine) continue;
      const s = set.firstConflict(r, mode);
      if (s && (!best || s.start < best.start)) best = holding(o, s);
    }
    return best;
  }

  /** F_SETLK: set(r, mode) for the owner unless another owner conflicts. */
  tryLock(owner: O, r: Range, mode: RangeMode): TryLockResult<O> {
    const conflict = this.conflicts(owner, r, mode);
    if (conflict) return { granted: false, conflict };
    let set = this.#owners.get(owner);
    if (!set) {
      set = new RangeSet();
      this.#owners.set(owner, set);
    }
    return { granted: true, changed: set.set(r, mode) };
  }

  /** F_UNLCK of r for the owner; false if it held nothing there. */
  unlock(owner: O, r: Range): boolean {
    checkRange(r);
    const set = this.#owners.get(owner);
    if (!set) return false;
    const changed = set.unlock(r);
    if (set.isEmpty()) this.#owners.delete(owner);
    return changed;
  }

  /**
   * Everything of one owner: its death, or (classic locks) a close() of ANY
   * descriptor of this file by that process - POSIX drops all the process's
   * locks on the file then, not only those taken through that descriptor.
   */
  unlockAll(owner: O): Segment[] {
    const set = this.#owners.get(owner);
    if (!set) return [];
    this.#owners.delete(owner);
    return set.unlockAll();
  }

  /** One owner's segments, sorted. */
  holdings(owner: O): Segment[] {
    return this.#owners.get(owner)?.holdings() ?? [];
  }

  /** Owners holding anything, oldest first. */
  owners(): O[] {
    return [...this.#owners.keys()];
  }

  isEmpty(): boolean {
    return this.#owners.size === 0;
  }

  /** For displays: every owner's segments, by start, then oldest owner first. */
  listing(): Holding<O>[] {
    const rows: Holding<O>[] = [];
    for (const [o, set] of this.#owners) for (const s of set.holdings()) rows.push(holding(o, s));
    // Array.prototype.sort is stable, so equal starts keep owner order.
    return rows.sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : 0));
  }
}
