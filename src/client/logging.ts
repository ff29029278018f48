// logging.ts (client) - where a JDLS client's log lines go (pino, JSON lines).
//
//   VERBOSE        trace (debug level and up) to stderr
//   TRACE=file     trace to that file, appended (overrides VERBOSE, as the guide says)
//   always         errors (connection failures, a dead server, protocol
//                  errors, resilience events) appended to jbase_error_trace:
//                  <JBCRELEASEDIR>/tmp/jbase_error_trace by default
//
// Does not own: what is logged (connection.ts, client.ts decide).
// Writes are synchronous: the guide's client "wraps up and exits" when its
// last server fails, and an asynchronous stream could lose that last line.
import fs from 'node:fs';
import path from 'node:path';
import { pino, type Logger, type DestinationStream, type StreamEntry } from 'pino';
import { releaseDir } from '../installation.js';
import { openLog } from '../safefile.js';
import type { JdlsConfig } from './jdls-env.js';

export const ERROR_TRACE_NAME = 'jbase_error_trace';

/** The default jbase_error_trace: <JBCRELEASEDIR>/tmp/jbase_error_trace (JBCRELEASEDIR as src/installation.ts decides it). */
export function defaultErrorTracePath(env: NodeJS.ProcessEnv = process.env): string {
  return path.join(releaseDir(env), 'tmp', ERROR_TRACE_NAME);
}

/**
 * Appends to a file, opening it only when the first line comes: a client that
 * never fails never creates the directory or the file.
 */
class LazyAppend implements DestinationStream {
  readonly #path: string;
  #fd = -1;
  #broken = false;
  constructor(file: string) {
    this.#path = file;
  }
  write(msg: string): void {
    if (this.#broken) return;
    try {
      if (this.#fd < 0) {
        fs.mkdirSync(path.dirname(this.#path), { recursive: true, mode: 0o750 });
        // The trace file lives in $JBCRELEASEDIR/tmp, which every user may
        // write (01777: the per-user broker directories are made there): a
        // link planted at its name must not make us (root, perhaps) append
        // to a file of someone else's choosing. openLog: O_NOFOLLOW, a
        // regular file of root's or ours, 0640.
        this.#fd = openLog(this.#path);
      }
      fs.writeSync(this.#fd, msg);
    } catch {
      // Logging must never break locking: an unwritable trace file is dropped.
      this.#broken = true;
    }
  }
}

export interface ClientLogOptions {
  /** jbase_error_trace path; false: none. Default: defaultErrorTracePath() */
  errorTrace?: string | false;
  /** component name in each line; default 'client' */
  name?: string;
}

/** The logger for one JDLS client, per its VERBOSE/TRACE options. */
export function createClientLogger(cfg: Pick<JdlsConfig, 'verbose' | 'trace'>, opts: ClientLogOptions = {}): Logger {
  const streams: StreamEntry[] = [];
  if (cfg.trace !== undefined) {
    streams.push({ level: 'debug', stream: pino.destination({ dest: path.resolve(cfg.trace), append: true, sync: true, mkdir: true }) });
  } else if (cfg.verbose) {
    streams.push({ level: 'debug', stream: pino.destination({ fd: 2, sync: true }) });
  }
  const errorTrace = opts.errorTrace === undefined ? defaultErrorTracePath() : opts.errorTrace;
  if (errorTrace !== false) streams.push({ level: 'error', stream: new LazyAppend(errorTrace) });
  const name = `jdls-${opts.name ?? 'client'}`;
  if (streams.length === 0) return pino({ name, level: 'silent' });
  const level = streams.some((s) => s.level === 'debug') ? 'debug' : 'error';
  return pino({ name, level }, pino.multistream(streams));
}
