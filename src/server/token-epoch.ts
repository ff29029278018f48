// token-epoch.ts - the installation's fencing-token epoch (docs/fencing.md).
//
// Owns: the epoch record `<JBCRELEASEDIR>/token-epoch` (a decimal number,
// written durably), starting a new epoch when the monitor makes a table,
// and keeping the record at or above the epoch the table has reached.
//
// Why an epoch: the table's token counter lives in shared memory and is
// lost when the table is made anew (a restart after -K, a reboot). Tokens
// must still rise: every table starts its tokens at a NEW epoch (bits
// 62..44 of the token), recorded on disk before the table grants anything.
// The epoch in the table can also move on its own - a SERVER2 secondary
// raised above its primary's epoch (LockTable.raiseTokenFloor) - so the
// monitor writes the table's epoch back whenever it is ahead of the record.
import path from 'node:path';
import fs from 'node:fs';
import { JdlsError } from '../errors.js';
import { readTrusted, replaceFile, trustedOwners } from '../safefile.js';
import { tokenEpoch, LockTable } from '../locks/table.js';
import { TokenCounter } from '../locks/token-counter.js';
import { native } from '../native.js';

export const EPOCH_FILE = 'token-epoch';

/** The recorded epoch, 0n when there is no record yet. */
export function readEpoch(dir: string): bigint {
  const file = path.join(dir, EPOCH_FILE);
  const text = readTrusted(file, trustedOwners(fs.statSync(dir, { throwIfNoEntry: false })?.uid));
  if (text === undefined) return 0n;
  const t = text.trim();
  if (!/^\d{1,7}$/.test(t) || BigInt(t) > native.constants.TOKEN_MAX_EPOCH)
    throw new JdlsError('BAD_ARGUMENT', `${file}: not a token epoch (0..${native.constants.TOKEN_MAX_EPOCH}): ${JSON.stringify(t.slice(0, 40))}; fencing tokens cannot be kept rising - restore it or remove it with care (docs/fencing.md)`);
  return BigInt(t);
}

function writeEpoch(dir: string, epoch: bigint): void {
  replaceFile(path.join(dir, EPOCH_FILE), `${epoch}\n`, { durable: true });
}

/** A table was just made: the next epoch, on disk first, then in the table. Returns it. */
export function beginEpoch(table: LockTable, dir: string): bigint {
  const next = readEpoch(dir) + 1n;
  if (next > native.constants.TOKEN_MAX_EPOCH)
    throw new JdlsError('BAD_ARGUMENT', `token epochs exhausted (${next}): see docs/fencing.md`);
  writeEpoch(dir, next);
  table.setTokenEpoch(next);
  return next;
}

/**
 * A listener starts: the next epoch, on disk first, then as the floor of the
 * OS file-lock token counter (`token-counter`: its value is not durable, the
 * record is). Returns it.
 */
export function beginOsEpoch(dir: string): bigint {
  const next = readEpoch(dir) + 1n;
  if (next > native.constants.TOKEN_MAX_EPOCH)
    throw new JdlsError('BAD_ARGUMENT', `token epochs exhausted (${next}): see docs/fencing.md`);
  writeEpoch(dir, next);
  TokenCounter.open(dir).startEpoch(next);
  return next;
}

/** Record the table's epoch if it is ahead of `recorded`; returns the epoch now recorded. */
export function keepEpoch(table: LockTable, dir: string, recorded: bigint): bigint {
  const now = tokenEpoch(table.header().nextToken);
  if (now <= recorded) return recorded;
  writeEpoch(dir, now);
  return now;
}

/**
 * The highest token epoch this installation has reached: the record, the
 * OS token counter's, and the table's (when there is one). A witnessed pair
 * (witness.ts) starts its next leadership term above it, so that a term is
 * always a new epoch here too.
 */
export function localEpoch(dir: string): bigint {
  let e = readEpoch(dir);
  try {
    const c = tokenEpoch(TokenCounter.open(dir).peek());
    if (c > e) e = c;
  } catch {
    /* no counter: the record stands */
  }
  let table: LockTable | undefined;
  try {
    table = LockTable.open({ releaseDir: dir });
  } catch {
    return e;
  }
  try {
    const t = tokenEpoch(table.header().nextToken);
    return t > e ? t : e;
  } finally {
    table.close();
  }
}

/**
 * This server became the pair's leader for `term` (witness.ts): the epoch
 * record first (durably), then the floors of the OS token counter and the
 * table, so every token it grants from now on has an epoch >= term and
 * outranks every token granted under an earlier term. Never lowers
 * anything. Throws when the record or the counter cannot be written: then
 * the server must not lead (its tokens might not outrank the old ones).
 */
export function beginTermEpoch(dir: string, term: bigint): void {
  if (term > native.constants.TOKEN_MAX_EPOCH)
    throw new JdlsError('BAD_ARGUMENT', `leadership term ${term} exceeds the last token epoch (${native.constants.TOKEN_MAX_EPOCH}): see docs/fencing.md`);
  if (readEpoch(dir) < term) writeEpoch(dir, term);
  TokenCounter.open(dir).startEpoch(term);
  let table: LockTable | undefined;
  try {
    table = LockTable.open({ releaseDir: dir });
  } catch {
    return; // no table: OS locks only
  }
  try {
    table.setTokenEpoch(term);
  } finally {
    table.close();
  }
}
