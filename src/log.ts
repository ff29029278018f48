// log.ts - the pino logger factory for jdls' long-running processes.
//
// Owns: where log lines go and at what level. Every logger writes JSON lines
// to a file descriptor synchronously: the foreground monitor's fd 2 is the
// terminal or the journal (systemd), the background monitor's fd 2 is its log
// file (<JBCRELEASEDIR>/jdls-monitor.log, opened by the parent that spawned
// it). Does not own: what is logged (the callers decide).
import { pino, type Logger } from 'pino';

export type { Logger } from 'pino';

export interface LoggerOptions {
  /** the component, e.g. 'monitor' */
  name: string;
  /** default: $JDLS_LOG_LEVEL, else 'info' */
  level?: string;
  /** default: 2 (stderr) */
  fd?: number;
}

const LEVELS = new Set(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']);

export function createLogger(opts: LoggerOptions): Logger {
  const wanted = opts.level ?? process.env['JDLS_LOG_LEVEL'] ?? 'info';
  const level = LEVELS.has(wanted) ? wanted : 'info';
  // sync: a monitor stopped by SIGTERM exits right after its last line; an
  // asynchronous destination could lose that line.
  return pino({ name: `jdls-${opts.name}`, level }, pino.destination({ fd: opts.fd ?? 2, sync: true }));
}
