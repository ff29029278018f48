// fencing-env.ts - what the fencing integration test and its client fixture
// (test/fencing-paused.test.ts, test/fixtures/fencing-client.ts) agree on:
// the file identity they lock, and how a grant's token is read.
import type { RemoteLockResult } from '../../src/client/client.js';

/** The file both lock (dev -1: through a lock server). */
export const FENCING_FILE = { inode: 1483651n };

/**
 * The grant's fencing token, or undefined if it carried none. Read through a
 * wider type on purpose: RemoteLockResult gains `token?` with issue 12
 * (helper A's client work); this compiles before and after that lands.
 */
export function grantToken(r: RemoteLockResult): bigint | undefined {
  const token: unknown = (r as { token?: unknown }).token;
  return typeof token === 'bigint' && token > 0n ? token : undefined;
}
