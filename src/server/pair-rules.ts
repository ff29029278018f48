// pair-rules.ts - the server's numbers for SERVER2 pairs with a witness,
// shared by the listener (witness.ts) and its lock-server processes.
import type { Leadership } from './leadership.js';

/**
 * The longest a PROMOTE keeps a client waiting here, whatever its wait_ms:
 * a client with a long TIMEOUT must not pin a request for ever.
 */
export const PROMOTE_CAP_MS = 60_000;

/** What a session needs of its process's pair state. */
export interface PairDeps {
  leadership: Leadership;
  /** PROMOTE: the term led within waitMs (0 without a witness), else undefined */
  promote(waitMs: number): Promise<number | undefined>;
}
