// range-session.ts - one connection's binary (byte-range) locks on a lock
// server: RANGE_LOCK / RANGE_UNLOCK / RANGE_TEST (docs/protocol.md), the
// remote half of JDLS BINARY.
//
// Owns: mapping the range frames onto BinaryLocks (space 'range': byte
// ranges; 'exec': LOCK n; 'file': FILELOCK, which needs the OS record-lock
// mechanism - under the shm table it is NOT_SUPPORTED; src/locks/binary.ts: POSIX
// semantics per owner - split, merge, upgrade/downgrade, partial unlock - as
// OFD locks on pseudo files jrange_<inode>_<dev>, so every lock-server
// process of the installation excludes every other through the kernel), the
// connection's range owners (connection + tid: the shim's owner tag), its
// waiting range requests (CANCEL withdraws them), and releasing everything
// when the connection closes. Does not own: the conversation (session.ts
// calls in here), the range model (ranges.ts), the OS primitive (ofd.ts).
//
// The pseudo-file directory: <dirname(lockDir)>/jbase_lock - /tmp/jbase_lock
// for the default lockDir /tmp/jbase (binary.ts's own default), and inside
// the installation for a test's private lockDir.
import path from 'node:path';
import { BinaryLocks, type BinaryHolder } from '../locks/binary.js';
import { makeOwner, fileId, type Owner } from '../locks/table.js';
import type { RangeLockFrame, RangeUnlockFrame, RangeTestFrame, ServerFrame, WireHolder, WireFile } from '../protocol/frames.js';
import type { Logger } from '../log.js';
import type { RecordLocks } from '../locks/mechanism.js';
import { JdlsError } from '../errors.js';
import { rangeFileName } from '../locks/binary-paths.js';
import { RangeFileBudget } from './quota.js';

export type RangeFrame = RangeLockFrame | RangeUnlockFrame | RangeTestFrame;

/** One BinaryLocks per directory and process (its OFDs and model are per process anyway), with its file budget. */
const perDir = new Map<string, { b: BinaryLocks; files: RangeFileBudget }>();
function binaryLocks(lockDir: string, maxFiles: number): { b: BinaryLocks; files: RangeFileBudget } {
  const dir = path.join(path.dirname(path.resolve(lockDir)), 'jbase_lock');
  let b = perDir.get(dir);
  if (!b) {
    b = { b: BinaryLocks.open({ binaryDir: dir, recordLockDir: lockDir }), files: new RangeFileBudget(dir, maxFiles) };
    perDir.set(dir, b);
  }
  return b;
}

/** Descriptors this process's range locks use (every directory). */
export function rangeDescriptors(): number {
  let n = 0;
  for (const d of perDir.values()) n += d.b.openCount;
  return n;
}

export interface RangeSessionDeps {
  lockDir: string;
  /** the process's record-lock mechanism (FILELOCK needs the OS one; under the shm table it is NOT_SUPPORTED) */
  mech: RecordLocks;
  /** the client's pid and port (from HELLO) and address */
  /** the client as HELLO named it, and the connection (the owner's conn: session.ts) */
  client: () => { pid: number; port: number; ip: string; conn: number };
  send: (f: ServerFrame) => void;
  answerError: (requestId: number, e: unknown) => void;
  log: Logger;
  /** range lock files beyond which a range on a new file is refused (maxRangeFiles) */
  maxRangeFiles: number;
  /** a new held lock (or wait) may be added: undefined, else why not (the connection's and address's limits) */
  admitLock: (waiting: boolean, descriptor: boolean) => string | undefined;
  /** a wait that holds a native thread may start: undefined, else why not; give it back with giveThread */
  takeThread: () => string | undefined;
  giveThread: () => void;
}

// A holder this process does not model is what the kernel reports: a
// classic lock's pid, or -1 for an OFD lock - such as a range held through
// ANOTHER lock-server process of the installation (they all take OFD locks
// on the same pseudo files). -1 cannot travel as a u32: it is sent as 0,
// "unknown", with address 0.0.0.0.
const u32 = (n: number): number => (n >= 0 && n <= 0xffffffff ? n : 0);
const wireHolder = (h: BinaryHolder): WireHolder => ({
  mode: h.mode, port: u32(h.port), pid: u32(h.pid), ownerPid: u32(h.ownerPid), ownerTid: u32(h.ownerTid),
  addr: h.ip || '0.0.0.0',
});

/** FILELOCK: the whole file, start 0 and length 0 - anything else is a client's mistake, not a smaller lock. */
function checkFileRange(start: bigint, length: bigint): void {
  if (start !== 0n || length !== 0n) throw new JdlsError('BAD_ARGUMENT', `a FILELOCK covers the whole file: start 0, length 0; got start ${start}, length ${length}`);
}

/** LOCK n: start = n, length 1. */
function execNumber(start: bigint, length: bigint): number {
  if (length !== 1n || start > 255n) throw new JdlsError('BAD_ARGUMENT', `an execution lock is one number 0..255 (start n, length 1); got start ${start}, length ${length}`);
  return Number(start);
}

export class RangeSession {
  readonly #deps: RangeSessionDeps;
  #b: BinaryLocks | undefined;
  #files: RangeFileBudget | undefined;
  readonly #owners = new Map<number, Owner>();
  readonly #waits = new Map<number, { ac: AbortController; done: Promise<boolean> }>();
  #closed = false;

  constructor(deps: RangeSessionDeps) {
    this.#deps = deps;
  }

  get #binary(): BinaryLocks {
    if (!this.#b) {
      const d = binaryLocks(this.#deps.lockDir, this.#deps.maxRangeFiles);
      this.#b = d.b;
      this.#files = d.files;
    }
    return this.#b;
  }

  /** Lock files this connection's owners hold or wait in (open descriptions): what its limit counts. */
  get units(): number {
    if (!this.#b) return 0;
    this.#conn ??= this.#deps.client().conn; // fixed for the connection's life; client() makes an object
    return this.#b.connFiles(this.#conn);
  }
  #conn: number | undefined;

  /** Range requests waiting. */
  get waiting(): number {
    return this.#waits.size;
  }

  /** Whether `requestId` is a waiting RANGE_LOCK (an outstanding request: session.ts). */
  isWaiting(requestId: number): boolean {
    return this.#waits.has(requestId);
  }

  /** The request ids of the waiting RANGE_LOCKs. */
  waitingIds(): number[] {
    return [...this.#waits.keys()];
  }

  #owner(tid: number): Owner {
    let o = this.#owners.get(tid);
    if (!o) {
      const c = this.#deps.client();
      o = makeOwner({ pid: process.pid, ownerPid: c.pid, ownerTid: tid, port: c.port, ip: c.ip, conn: c.conn });
      this.#owners.set(tid, o);
    }
    return o;
  }

  #target(f: WireFile): ReturnType<typeof fileId> {
    return fileId(f.inode, f.dev);
  }

  onFrame(f: RangeFrame): void {
    const rid = f.requestId;
    try {
      switch (f.type) {
        case 'RANGE_LOCK': return this.#lock(f);
        case 'RANGE_UNLOCK': {
          const o = this.#owner(f.tid);
          const b = this.#binary;
          let count: number;
          if (f.space === 'exec') count = f.length === 0n ? b.execUnlock(o) : b.execUnlock(o, execNumber(f.start, f.length));
          else if (f.space === 'file') {
            checkFileRange(f.start, f.length);
            count = b.fileUnlock(o, this.#target(f.file)) ? 1 : 0;
          }
          else count = b.rangeUnlock(o, this.#target(f.file), f.start, f.length) ? 1 : 0;
          return this.#deps.send({ type: 'RELEASED', requestId: rid, count });
        }
        case 'RANGE_TEST': {
          // EXEC and FILELOCK are exclusive locks: the mode is ignored.
          const o = this.#owner(f.tid);
          let h: BinaryHolder | undefined;
          if (f.space === 'exec') h = this.#binary.execTest(o, execNumber(f.start, f.length));
          else if (f.space === 'file') {
            checkFileRange(f.start, f.length);
            h = this.#binary.fileTest(o, this.#target(f.file), this.#deps.mech);
          } else h = this.#binary.rangeTest(o, this.#target(f.file), f.start, f.length, f.mode);
          return this.#deps.send(h
            ? { type: 'RANGE_RESULT', requestId: rid, conflict: { holder: wireHolder(h), start: h.start, length: h.len } }
            : { type: 'RANGE_RESULT', requestId: rid });
        }
      }
    } catch (e) {
      this.#deps.answerError(rid, e);
    }
  }

  #lock(f: RangeLockFrame): void {
    const rid = f.requestId;
    const b = this.#binary;
    if (f.space === 'file') {
      checkFileRange(f.start, f.length);
      // A re-lock costs nothing more: granted without asking the limits (as a record LOCK's renewal).
      if (b.fileLocked(this.#owner(f.tid), this.#target(f.file))) return this.#deps.send({ type: 'GRANTED', requestId: rid });
    }
    const limit = this.#deps.admitLock(!f.nowait, true);
    if (limit) return this.#deps.send({ type: 'ERROR', requestId: rid, code: 'LIMIT', text: limit });
    if (f.space === 'range' && this.#files && !this.#files.admit(rangeFileName(b.binaryDir, f.file))) {
      return this.#deps.send({
        type: 'ERROR', requestId: rid, code: 'LIMIT',
        text: `the range lock directory ${b.binaryDir} holds ${this.#files.max} files, the most allowed (maxRangeFiles)`,
      });
    }
    // Every wait blocks a native thread (F_OFD_SETLKW): counted against the process's bound.
    let thread = false;
    if (!f.nowait) {
      const why = this.#deps.takeThread();
      if (why) return this.#deps.send({ type: 'ERROR', requestId: rid, code: 'LIMIT', text: why });
      thread = true;
    }
    const ac = new AbortController();
    const owner = this.#owner(f.tid);
    const opts = { wait: !f.nowait, signal: ac.signal };
    const p = f.space === 'exec' ? b.execLock(owner, execNumber(f.start, f.length), opts)
      : f.space === 'file' ? b.fileLock(owner, this.#target(f.file), this.#deps.mech, opts)
        : b.rangeLock(owner, this.#target(f.file), f.start, f.length, f.mode, opts);
    const done = p.then(
      (r) => {
        if (this.#closed) {
          // Granted as the connection went: close() already released; drop it again.
          if (r.granted) this.#binary.releaseAll(owner);
          return false;
        }
        this.#deps.send(r.granted ? { type: 'GRANTED', requestId: rid } : { type: 'LOCKED', requestId: rid, holder: wireHolder(r.holder) });
        return false;
      },
      (e: unknown) => {
        this.#deps.answerError(rid, e);
        return ac.signal.aborted;
      },
    ).finally(() => {
      this.#waits.delete(rid);
      if (thread) this.#deps.giveThread();
    });
    this.#waits.set(rid, { ac, done });
  }

  /**
   * CANCEL of a waiting RANGE_LOCK: undefined if `target` is not one;
   * else a promise of the CANCEL's count, settled after the lock's own final
   * answer was sent (ERROR CANCELLED, or GRANTED if the grant won).
   */
  cancel(target: number): Promise<number> | undefined {
    const w = this.#waits.get(target);
    if (!w) return undefined;
    w.ac.abort();
    return w.done.then((withdrawn) => (withdrawn ? 1 : 0));
  }

  /** The connection is gone: withdraw the waits, release every range lock. Returns how many segments were released. */
  close(): number {
    if (this.#closed) return 0;
    this.#closed = true;
    for (const w of this.#waits.values()) w.ac.abort();
    let n = 0;
    if (this.#b) {
      for (const o of this.#owners.values()) {
        try {
          n += this.#b.releaseAll(o);
        } catch (e) {
          this.#deps.log.error({ err: e }, 'could not release a closed connection\'s range locks');
        }
      }
    }
    this.#owners.clear();
    return n;
  }
}
