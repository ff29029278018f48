// ratelog.ts - what one connection's refused or failed requests may write
// to the log: at most `perSecond` lines a second, then one line saying how
// many were left out. Logging is synchronous (log.ts): a client that sends
// thousands of failing requests a second would otherwise make the process
// write megabytes a second, and every other client of the process waits
// for those writes (37,000 failing LOCKs grew the log by 39 MB in 3 s and
// took another client's PING from 0.03 ms to 78 ms).
//
// Owns: the per-connection budget. Does not own: what is an error (the
// session decides; expected refusals carry no stack).
import type { Logger } from 'pino';

export class RateLog {
  #log: () => Logger;
  #perSecond: number;
  #windowMs = 0;
  #lines = 0;
  #suppressed = 0;

  constructor(log: () => Logger, perSecond: number) {
    this.#log = log;
    this.#perSecond = perSecond;
  }

  /** Log at `level` if this second's budget allows; else count it. */
  write(level: 'warn' | 'error' | 'info', obj: object, msg: string): void {
    const now = Date.now();
    if (now - this.#windowMs >= 1000) {
      this.flush();
      this.#windowMs = now;
      this.#lines = 0;
      this.#suppressed = 0;
    }
    if (this.#lines >= this.#perSecond) {
      this.#suppressed++;
      return;
    }
    this.#lines++;
    this.#log()[level](obj, msg);
  }

  /** The connection ends: say what was left out. */
  flush(): void {
    if (this.#suppressed > 0) this.#log().warn({ suppressed: this.#suppressed }, `${this.#suppressed} similar log lines suppressed (logLinesPerSecond)`);
    this.#suppressed = 0;
  }
}
