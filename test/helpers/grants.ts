// grants.ts - lock results compared without their fencing token.
//
// A shm server's grant carries a token (docs/protocol.md, "Fencing tokens")
// whose value only the table knows; a test that checks "granted" compares
// the rest, and the token tests (test/server-tokens.test.ts) check tokens.

/** The result with `token` left out (a bigint when present: anything else is a bug, so it throws). */
export function untoken<T extends object>(r: T): Omit<T, 'token'> {
  if (!('token' in r)) return r;
  const { token, ...rest } = r as T & { token?: unknown };
  if (token !== undefined && typeof token !== 'bigint') throw new TypeError(`token ${String(token)} is not a bigint`);
  return rest;
}
