// fencing.ts - what a RESOURCE (a database, a file, a service that a lock
// protects) uses to refuse a late writer: a holder that was paused or cut off
// long enough for jdls to give its lock to someone else, and then wrote
// anyway. Each grant carries a fencing token that strictly increases per lock
// (docs/fencing.md); the resource keeps the highest token it has seen per
// lock and refuses a lower one.
//
// Owns: the rule (FenceKeeper, in memory), the SQLite recipe (SQL text: jdls
// depends on no SQLite driver; the tests drive the sqlite3 CLI), and the name
// a record lock's token is kept under. Does not own: where tokens come from
// (the table, src/locks/table.ts; the client, src/client/client.ts).
// Pure: no native import, so a resource process loads it without the addon.
import { JdlsError } from './errors.js';

/** Tokens are u64 below 2^63 (epoch in bits 62..44, counter in 43..0); 0 means "none". */
const TOKEN_LIMIT = 1n << 63n;

/**
 * Throws BAD_ARGUMENT unless `token` is a token a grant can carry.
 * Trap: 0 (wire) or undefined (library) is not a small token but "this
 * mechanism gives none" (OS file locks, OSLOCKS, -ibD); admitting it would
 * silently disable fencing, so it is an error, named as such.
 */
export function checkFencingToken(token: unknown): bigint {
  if (token === undefined || token === 0n) {
    throw new JdlsError('BAD_ARGUMENT', 'no fencing token: the lock mechanism gives none (OS file locks: OSLOCKS, -ibD); a resource cannot be fenced with it');
  }
  if (typeof token !== 'bigint') throw new JdlsError('BAD_ARGUMENT', `a fencing token is a bigint; got ${typeof token}`);
  if (token < 0n || token >= TOKEN_LIMIT) throw new JdlsError('BAD_ARGUMENT', `fencing token ${token} is outside 0 < token < 2^63`);
  return token;
}

function checkLock(lock: unknown): string {
  if (typeof lock !== 'string' || lock.length === 0) throw new JdlsError('BAD_ARGUMENT', 'a fence lock name is a non-empty string');
  // NUL would end the name early in C and in SQL text.
  if (lock.includes('\0')) throw new JdlsError('BAD_ARGUMENT', 'a fence lock name must not contain NUL');
  return lock;
}

// ---- the rule, in memory ---------------------------------------------------

/**
 * The highest token seen per lock, in one process. admit() is the whole
 * rule: a token at least the highest is admitted (equal: the same grant
 * writing again), a lower one is refused and changes nothing.
 *
 * In memory only: it is right for ONE writer process (every write to the
 * resource passes through it). If that process restarts, seed it with the
 * highest tokens stored next to the data (constructor), or an old holder's
 * write is admitted once.
 */
export class FenceKeeper {
  readonly #highest = new Map<string, bigint>();

  constructor(seed: Iterable<readonly [string, bigint]> = []) {
    for (const [lock, token] of seed) this.admit(lock, token);
  }

  /** true: write, `token` is now the highest for `lock`; false: refuse the write. */
  admit(lock: string, token: bigint): boolean {
    checkLock(lock);
    checkFencingToken(token);
    const high = this.#highest.get(lock);
    if (high !== undefined && token < high) return false;
    this.#highest.set(lock, token);
    return true;
  }

  /** The highest token admitted for `lock`, or undefined if none was. */
  highest(lock: string): bigint | undefined {
    return this.#highest.get(checkLock(lock));
  }

  /** Every lock and its highest token (to persist next to the data; seed a new keeper with them). */
  entries(): Array<[string, bigint]> {
    return [...this.#highest];
  }
}

// ---- the name a record lock's token is kept under ---------------------------

/** Key bytes a name shows as they are: printable ASCII but space, % (the escape) and ' (so a name goes inside '...' in SQL or shell as is). */
const KEPT = new Set(Array.from({ length: 0x7f - 0x21 }, (_, i) => 0x21 + i).filter((b) => b !== 0x25 && b !== 0x27));

/**
 * `record:<inode>:<dev>:<key>`: the lock's identity as jdls has it (file
 * identity and key), so that every writer of one record, and the docs, use
 * one name. `dev` defaults to -1, as for locks that reach a lock server
 * (JdlsClient's default): use the same file identity you lock with. Key
 * bytes other than printable ASCII, and space, % and ', are written %XX,
 * so any key (binary, or not UTF-8) has exactly one name, and the name is
 * plain text that goes inside single quotes (SQL, shell) as it is.
 */
export function recordLockName(file: { inode: bigint | number; dev?: bigint | number }, key: Buffer | string): string {
  const inode = toBigInt(file.inode, 'inode');
  const dev = toBigInt(file.dev ?? -1, 'dev');
  if (inode < 0n || inode >= 1n << 64n) throw new JdlsError('BAD_ARGUMENT', `inode ${inode} is not a u64`);
  if (dev < -(1n << 63n) || dev >= 1n << 63n) throw new JdlsError('BAD_ARGUMENT', `dev ${dev} is not an i64`);
  const bytes = typeof key === 'string' ? Buffer.from(key, 'utf8') : key;
  if (!Buffer.isBuffer(bytes)) throw new JdlsError('BAD_ARGUMENT', 'a key is a Buffer or a string');
  if (bytes.length > 512) throw new JdlsError('KEY_TOO_LONG', `key of ${bytes.length} bytes exceeds 512`);
  let k = '';
  for (const b of bytes) k += KEPT.has(b) ? String.fromCharCode(b) : `%${b.toString(16).toUpperCase().padStart(2, '0')}`;
  return `record:${inode}:${dev}:${k}`;
}

function toBigInt(v: unknown, what: string): bigint {
  if (typeof v === 'bigint') return v;
  if (typeof v === 'number' && Number.isSafeInteger(v)) return BigInt(v);
  throw new JdlsError('BAD_ARGUMENT', `${what} must be an integer (bigint or safe number); got ${String(v)}`);
}

// ---- the SQLite recipe -----------------------------------------------------
//
// One table keeps the highest token per lock; a trigger refuses a lower one.
// A guarded write is ONE transaction that first admits the token, then
// writes the data:
//
//   BEGIN IMMEDIATE;
//   INSERT INTO jdls_fence(lock, token) VALUES (?1, ?2)
//     ON CONFLICT(lock) DO UPDATE SET token = excluded.token;   -- the trigger refuses a lower token
//   ... the data write ...
//   COMMIT;
//
// Why a trigger rather than `... DO UPDATE ... WHERE excluded.token >=
// jdls_fence.token` followed by `SELECT changes()`: with changes() the refusal
// is a 0 that the writer must test before its data write, and a writer that
// forgets to test writes anyway (fails open); the sqlite3 CLI cannot branch on
// it at all. With the trigger the refusal is an SQL error (SQLITE_CONSTRAINT)
// at the fence statement: a driver throws, its transaction rolls back, the
// data write never runs; the CLI with `.bail on` stops and rolls back (fails
// closed). The trigger also holds for every writer of the database, not only
// the ones that use this helper. (Trap: `INSERT OR REPLACE` into jdls_fence
// deletes and re-inserts, which fires no UPDATE trigger: write the fence only
// with the admit statement.)
//
// Concurrent writers: BEGIN IMMEDIATE takes SQLite's write lock before the
// fence is read, so the check, the fence update and the data write of one
// writer are never interleaved with another's; a waiting writer waits (busy
// timeout) instead of failing with SQLITE_BUSY half way through. The fence
// row and the data commit together or not at all.
//
// Bind the token as a 64-bit integer (a bigint), never as a JS number: above
// 2^53 a double is rounded and two tokens would compare equal. The CHECK
// cannot catch that (SQLite stores an integral double as an integer, already
// rounded); it refuses what is not an integer at all (text, a fraction) and 0.

/** The schema: the fence table and the trigger that refuses a lower token. Idempotent. */
export const SQLITE_FENCE_SCHEMA = `CREATE TABLE IF NOT EXISTS jdls_fence (
  lock  TEXT PRIMARY KEY,
  token INTEGER NOT NULL CHECK (typeof(token) = 'integer' AND token > 0)
);
CREATE TRIGGER IF NOT EXISTS jdls_fence_refuse_lower
BEFORE UPDATE ON jdls_fence
WHEN NEW.token < OLD.token
BEGIN
  SELECT RAISE(ABORT, 'jdls_fence: refused a lower fencing token');
END;
`;

/** The admit statement for a driver: bind ?1 = the lock name, ?2 = the token as a 64-bit integer (bigint). Run it first in a BEGIN IMMEDIATE transaction. */
export const SQLITE_FENCE_ADMIT = 'INSERT INTO jdls_fence(lock, token) VALUES (?1, ?2) ON CONFLICT(lock) DO UPDATE SET token = excluded.token;';

/** The message of the refusal (in the SQLite error's text). */
export const SQLITE_FENCE_REFUSED = 'jdls_fence: refused a lower fencing token';

/** An SQL string literal. */
function sqlText(s: string): string {
  return `'${s.replaceAll("'", "''")}'`;
}

/**
 * A script for the sqlite3 CLI (`sqlite3 db.sqlite < script`): the guarded
 * write of `dataSql` (your statements, trusted text) under `lock`'s
 * `token`. Exit status 0: admitted and committed; non-zero with
 * SQLITE_FENCE_REFUSED on stderr: refused, nothing written. `.bail on` is
 * what makes a refusal stop the script: without it the CLI would carry on
 * with the data write and COMMIT it. `busyTimeoutMs` (default 10 s) is how
 * long to wait for another writer.
 */
export function sqliteFencedScript(lock: string, token: bigint, dataSql: string, busyTimeoutMs = 10_000): string {
  checkLock(lock);
  checkFencingToken(token);
  if (!Number.isSafeInteger(busyTimeoutMs) || busyTimeoutMs < 0) throw new JdlsError('BAD_ARGUMENT', `busyTimeoutMs must be a non-negative integer; got ${busyTimeoutMs}`);
  return [
    '.bail on',
    `.timeout ${busyTimeoutMs}`,
    'BEGIN IMMEDIATE;',
    // the token as an integer literal: exact, whatever its size (< 2^63)
    SQLITE_FENCE_ADMIT.replace('VALUES (?1, ?2)', `VALUES (${sqlText(lock)}, ${token.toString()})`),
    // its own line and a ';' of ours: a last statement without one, or a
    // trailing -- comment, cannot swallow the COMMIT (an empty statement is harmless)
    dataSql,
    ';',
    'COMMIT;',
    '',
  ].join('\n');
}
