// token-counter.ts - fencing tokens for the OS file-lock mechanism
// (docs/fencing.md): one counter per installation in
// `$JBCRELEASEDIR/token-counter`, mapped shared by every lock-server process
// (native/addon/tokens.cc says why a grant's token, taken after the kernel
// granted it, still rises per lock). The table mechanism has its own counter
// in the table's header.
import path from 'node:path';
import { JdlsError } from '../errors.js';
import { native, type TokenCounterHandle } from '../native.js';
import { tokenBase } from './table.js';

export const COUNTER_FILE = 'token-counter';

/** Where grants of a mechanism without a table take their tokens. */
export interface TokenSource {
  next(): bigint;
  /** the next token, unchanged */
  peek(): bigint;
  /** every later token >= floor */
  floor(floor: bigint): void;
}

export class TokenCounter implements TokenSource {
  readonly #h: TokenCounterHandle;

  private constructor(h: TokenCounterHandle) {
    this.#h = h;
  }

  /** The installation's counter (created if missing). Throws UNTRUSTED or SYSTEM. */
  static open(releaseDir: string): TokenCounter {
    const file = path.join(releaseDir, COUNTER_FILE);
    const h = native.tokenCounter.open(file, releaseDir);
    if (typeof h === 'number') {
      const detail = native.lastDetail();
      throw new JdlsError(h === -1 ? 'UNTRUSTED' : 'SYSTEM', detail || `cannot open the fencing-token counter ${file} (errno ${-h})`);
    }
    return new TokenCounter(h);
  }

  next(): bigint {
    return native.tokenCounter.next(this.#h);
  }

  floor(floor: bigint): void {
    native.tokenCounter.floor(this.#h, floor);
  }

  peek(): bigint {
    return native.tokenCounter.peek(this.#h);
  }

  /** Tokens from now on start at `epoch` (never lowered). */
  startEpoch(epoch: bigint): void {
    this.floor(tokenBase(epoch));
  }
}
