// writer.ts - writing one info record (docs/info-records.md): the one writer
// used by lock servers (a record per client session) and by Node runtimes
// that lock directly in the table (recorder.ts).
//
// Owns: when to write (coalescing, the guide's moments), how (atomically:
// a temp file with a leading '.', created exclusively without following a
// link, 0640, then renamed over the record), and removing the record at the
// normal end. Does not own: the record's contents (the caller's `build`,
// called at write time, so a change costs only a flag) or judging staleness
// (reader.ts: a writer that dies leaves its record; the monitor tidies it).
//
// Timing: change() is a flag and a time check. The first change after a
// quiet spell arms one unref'd timer for the rest of INFO_FLUSH_MS; later
// changes within it cost nothing more. A change made while the event loop
// was blocked past the due time (a synchronous batch) is written at once by
// the change itself, so no change stays unwritten longer than INFO_FLUSH_MS
// plus whatever blocks the event loop. moment() writes at once.
//
// Bounded cost: a record that is dear to build (a direct runtime's record
// scans its rows of the table: ~20 us a lock held through the addon, so
// 10-30 ms with 1000 locks) is rewritten for changes at most every 49 x
// its last write's time, so writing takes ~2 % of the process's time (the
// garbage a write leaves costs about as much again later: at 19 x the
// bench measured ~10 % on a pair with 1000 locks held); the moments still
// write at once.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { INFO_ENV, INFO_FLUSH_MS, infoDir, recordFileName, type InfoRecord } from './format.js';

/** Records are created 0640: the installation's group (the directory's setgid) may read them, nobody else. */
export const RECORD_MODE = 0o640;

/** Whether info records are written at all (JDLS_INFO=0 turns them off). */
export const infoEnabled = (env: NodeJS.ProcessEnv = process.env): boolean => env[INFO_ENV] !== '0';

export type InfoMomentNow = 'start' | 'block' | 'unblock' | 'idle';

export interface InfoWriterOptions {
  releaseDir: string;
  /** the record's name parts: port, address as shown, the client's pid */
  port: number;
  ipaddr: string;
  pid: number;
  /** the whole record as it is now (updatedMs is set by the writer) */
  build: () => InfoRecord;
  flushMs?: number;
  /** default: infoEnabled() */
  enabled?: boolean;
  /** told once why nothing could be written (no directory, no permission): a VERBOSE line, not an error */
  onSkip?: (why: string) => void;
}

export class InfoWriter {
  /** the record's path */
  readonly file: string;
  readonly #dir: string;
  readonly #build: () => InfoRecord;
  readonly #flushMs: number;
  readonly #onSkip: ((why: string) => void) | undefined;
  #on: boolean;
  #dirty = false;
  #lastWrite = 0;
  #changes = 0;
  /** the coalescing gap now: flushMs, or more when the last write was dear (~2 % of the time writing) */
  #gap: number;
  #timer: NodeJS.Timeout | undefined;
  #written = false;
  #skipped = false;
  /** writes done (tests and the bench count them) */
  writes = 0;

  constructor(opts: InfoWriterOptions) {
    this.#dir = infoDir(opts.releaseDir);
    this.file = path.join(this.#dir, recordFileName(opts.port, opts.ipaddr, opts.pid));
    this.#build = opts.build;
    this.#flushMs = opts.flushMs ?? INFO_FLUSH_MS;
    this.#gap = this.#flushMs;
    this.#onSkip = opts.onSkip;
    this.#on = opts.enabled ?? infoEnabled();
  }

  get enabled(): boolean {
    return this.#on;
  }

  /** Something in the record changed: written within flushMs (coalesced). No I/O unless a write is overdue. */
  change(): void {
    if (!this.#on) return;
    this.#dirty = true;
    if (this.#timer) {
      // Overdue: the event loop was blocked (a synchronous batch); the timer
      // could not run. Looked at every 64th change: Date.now() on every lock
      // and unlock was a visible part of a direct pair's cost.
      if ((++this.#changes & 63) === 0 && Date.now() - this.#lastWrite >= this.#gap) this.#write();
      return;
    }
    const wait = this.#lastWrite + this.#gap - Date.now();
    if (wait <= 0) return this.#write();
    this.#timer = setTimeout(this.#onTimer, wait);
    this.#timer.unref();
  }

  /** A moment of the guide (start, about to block, unblocked, idle): written now. */
  moment(_m: InfoMomentNow): void {
    if (!this.#on) return;
    this.#dirty = true;
    this.#write();
  }

  /** Write now if anything changed since the last write. */
  flush(): void {
    if (this.#on && this.#dirty) this.#write();
  }

  /** The normal end: no more writes, and the record is removed. Idempotent. */
  remove(): void {
    if (!this.#on) return;
    this.#on = false;
    this.#dirty = false;
    this.#clearTimer();
    if (!this.#written) return;
    try {
      fs.unlinkSync(this.file);
    } catch {
      /* gone already (the monitor's tidy, an operator) */
    }
  }

  readonly #onTimer = (): void => {
    this.#timer = undefined;
    if (this.#dirty && this.#on) this.#write();
  };

  #clearTimer(): void {
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  #write(): void {
    const t0 = performance.now();
    try {
      this.#writeNow();
    } finally {
      this.#gap = Math.max(this.#flushMs, (performance.now() - t0) * 49);
    }
  }

  #writeNow(): void {
    this.#clearTimer();
    this.#dirty = false;
    this.#lastWrite = Date.now();
    let text: string;
    try {
      const r = this.#build();
      r.updatedMs = this.#lastWrite;
      text = JSON.stringify(r);
    } catch (e) {
      return this.#skip(`the record could not be built: ${(e as Error).message}`);
    }
    // The temp name starts with '.', so readers skip it; random, so two
    // writers of one record (a pid reused after a crash) never share one.
    const tmp = path.join(this.#dir, `.${path.basename(this.file)}.${crypto.randomBytes(6).toString('hex')}`);
    let fd: number;
    try {
      // O_EXCL + O_NOFOLLOW: a link or file planted under the temp name is never written through.
      fd = fs.openSync(tmp, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW, RECORD_MODE);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      return this.#skip(code === 'ENOENT' ? `no info directory ${this.#dir} (jdls -ib creates it)` : `cannot write in ${this.#dir}: ${(e as Error).message}`);
    }
    try {
      // The umask may have taken the group's read bit: the record is for the installation's group.
      fs.fchmodSync(fd, RECORD_MODE);
      fs.writeSync(fd, text);
      fs.closeSync(fd);
      fd = -1;
      fs.renameSync(tmp, this.file);
      this.#written = true;
      this.writes++;
    } catch (e) {
      if (fd >= 0) try { fs.closeSync(fd); } catch { /* closing is best effort */ }
      try { fs.unlinkSync(tmp); } catch { /* never made it */ }
      this.#skip(`cannot write ${this.file}: ${(e as Error).message}`);
    }
  }

  #skip(why: string): void {
    if (this.#skipped) return;
    this.#skipped = true;
    this.#onSkip?.(why);
  }
}
