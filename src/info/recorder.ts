// recorder.ts - the info record of a Node runtime that locks directly in
// the shared-memory table (no lock server between): opt-in, through
// LockTable.open({ releaseDir, info: {...} }) (docs/info-records.md).
//
// Owns: this process's record - who it is (port, program, user), the files
// it declared, and its locks and wait, read from the table's own rows of
// this process at write time. So a lock or an unlock costs the table one
// call to change() (a flag and a time check, writer.ts); the table is
// scanned at most every INFO_FLUSH_MS, and only when something changed.
// Does not own: writing (writer.ts) or the table (table.ts calls the hooks).
import os from 'node:os';
import { native } from '../native.js';
import { INFO_VERSION, LOCAL_ADDR, MAX_CLIENT_FILES, MAX_RECORD_LOCKS, type InfoFile, type InfoLock, type InfoRecord, type InfoWait } from './format.js';
import { InfoWriter } from './writer.js';
import type { LockTable } from '../locks/table.js';

export interface InfoRecorderOptions {
  /** jBASE port number; default $JBCPORTNO if one number, else 0 */
  port?: number;
  /** default: the script's base name */
  program?: string;
  /** default: the login name */
  user?: string;
  /** default INFO_FLUSH_MS */
  flushMs?: number;
  /** default: on unless JDLS_INFO=0 */
  enabled?: boolean;
  /** told once why no record could be written (no info directory...) */
  onSkip?: (why: string) => void;
}

/** What the table calls (table.ts): cheap, no I/O but an overdue write. */
export interface TableInfoHook {
  /** a lock granted (counted, then as change()) */
  granted(): void;
  change(): void;
  /** a wait() request queued: the "about to block" moment */
  block(): void;
  /** a queued request settled (granted, withdrawn or refused) */
  unblock(): void;
  close(): void;
}

const lockNo = (hash: number): string => `0x${(hash >>> 0).toString(16).padStart(8, '0')}`;

function defaultPort(): number {
  const p = process.env['JBCPORTNO'];
  return p !== undefined && /^\d+$/.test(p) ? Number(p) : 0;
}

function loginName(): string {
  try {
    return os.userInfo().username;
  } catch {
    return process.env['USER'] ?? '';
  }
}

export class InfoRecorder implements TableInfoHook {
  readonly #table: LockTable;
  readonly #writer: InfoWriter;
  readonly #port: number;
  readonly #program: string;
  readonly #user: string;
  readonly #startedMs = Math.round(Date.now() - process.uptime() * 1000);
  readonly #start = native.pidStart(process.pid);
  /** inode:dev -> declared file, oldest first */
  #files = new Map<string, InfoFile>();
  #stats = { locks: 0, waits: 0, waitMs: 0, retries: 0 };
  /** a lock's identity -> when this recorder first saw it (tables without -T have no time stamps) */
  #seen = new Map<string, number>();
  #blockedAt: number[] = [];
  readonly #onExit = (): void => this.#writer.remove();

  constructor(table: LockTable, opts: InfoRecorderOptions = {}) {
    this.#table = table;
    this.#port = opts.port ?? defaultPort();
    this.#program = opts.program ?? (process.argv[1] ?? process.argv0 ?? 'node').split('/').pop() ?? 'node';
    this.#user = opts.user ?? loginName();
    this.#writer = new InfoWriter({
      releaseDir: table.releaseDir, port: this.#port, ipaddr: LOCAL_ADDR, pid: process.pid, build: () => this.#record(),
      ...(opts.flushMs !== undefined ? { flushMs: opts.flushMs } : {}), ...(opts.enabled !== undefined ? { enabled: opts.enabled } : {}),
      ...(opts.onSkip ? { onSkip: opts.onSkip } : {}),
    });
    if (!this.#writer.enabled) return;
    // A normal exit without close() removes the record too (a kill leaves it: stale, the monitor tidies it).
    process.on('exit', this.#onExit);
    this.#writer.moment('start');
  }

  /** records written so far (the bench counts them) */
  get writes(): number {
    return this.#writer.writes;
  }

  /** the record's path */
  get file(): string {
    return this.#writer.file;
  }

  /** Name a file this process has open (LIST-OPEN-FILES; locks in it show the name). Coalesced. */
  declareFile(name: string, file: { inode: bigint | number; dev: bigint | number }): void {
    const f: InfoFile = { name, inode: BigInt(file.inode).toString(), dev: BigInt(file.dev).toString() };
    const k = `${f.inode}:${f.dev}`;
    this.#files.delete(k);
    this.#files.set(k, f);
    if (this.#files.size > MAX_CLIENT_FILES) this.#files.delete(this.#files.keys().next().value as string);
    this.#writer.change();
  }

  /** The runtime is idle: written now. */
  idle(): void {
    this.#writer.moment('idle');
  }

  change(): void {
    this.#writer.change();
  }

  granted(): void {
    this.#stats.locks++;
    this.#writer.change();
  }

  block(): void {
    this.#stats.waits++;
    this.#blockedAt.push(Date.now());
    this.#writer.moment('block');
  }

  unblock(): void {
    const t = this.#blockedAt.shift();
    if (t !== undefined) this.#stats.waitMs += Date.now() - t;
    this.#writer.moment('unblock');
  }

  /** Stop recording and remove the record (LockTable.close calls it). */
  close(): void {
    process.off('exit', this.#onExit);
    this.#writer.remove();
  }

  /** Write now what changed (tests; a runtime about to sleep may call it). */
  flush(): void {
    this.#writer.flush();
  }

  #record(): InfoRecord {
    const names = new Map<string, string>();
    for (const f of this.#files.values()) if (f.name !== undefined) names.set(`${f.inode}:${f.dev}`, f.name);
    const locks: InfoLock[] = [];
    let waiting: InfoWait | undefined;
    const seen = new Map<string, number>();
    const now = Date.now();
    let omitted = 0;
    for (const batch of this.#table.rows()) {
      for (const r of batch) {
        // This process's own direct locks (a lock server in this process would be conn != 0: not ours to show).
        if (r.pid !== process.pid || r.conn !== 0 || r.state === 'refused') continue;
        const inode = r.inode.toString();
        const dev = r.dev.toString();
        const key = r.key.toString('latin1');
        const id = `${r.state}|${r.ownerTid}|${inode}:${dev}|${key}`;
        const since = r.stampMs || (this.#seen.get(id) ?? now);
        seen.set(id, since);
        const name = names.get(`${inode}:${dev}`);
        if (r.state === 'waiting') {
          if (!waiting || since < waiting.sinceMs) {
            waiting = { inode, dev, key, mode: r.mode, kind: 'record', sinceMs: since, lockNo: lockNo(r.hash) };
            if (name !== undefined) waiting.file = name;
          }
          continue;
        }
        if (locks.length >= MAX_RECORD_LOCKS) {
          omitted++;
          continue;
        }
        const l: InfoLock = { inode, dev, key, mode: r.mode, kind: 'record', sinceMs: since, lockNo: lockNo(r.hash), tid: r.ownerTid };
        if (name !== undefined) l.file = name;
        if (r.token) l.token = r.token.toString();
        locks.push(l);
      }
    }
    this.#seen = seen;
    const rec: InfoRecord = {
      version: INFO_VERSION, port: this.#port, pid: process.pid, ipaddr: LOCAL_ADDR, host: os.hostname(), user: this.#user, program: this.#program,
      startedMs: this.#startedMs, updatedMs: 0, writer: { kind: 'local', pid: process.pid, start: this.#start },
      files: [...this.#files.values()], locks, stats: { ...this.#stats },
    };
    if (waiting) rec.waiting = waiting;
    if (omitted > 0) rec.locksOmitted = omitted;
    return rec;
  }
}
