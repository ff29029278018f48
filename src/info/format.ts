// format.ts - the per-port info record (guide, "Distributed Lock Information"):
// what one client process - a port - has open, holds and waits for, as one
// JSON file in JBCRELEASEDIR/proc/info on the lock server's host.
//
// Owns: the record's shape (version 1), its file name, and checking a record
// read back (a reader trusts nothing it did not check: a half-written or
// foreign file is skipped, never shown as locks). Does not own: writing
// (writer.ts: atomic, coalesced), reading the directory and judging staleness
// (reader.ts), or the wire (INFO / INFO_QUERY frames, docs/protocol.md).
// docs/info-records.md documents every field; keep the two in step.
//
// Pure: no native import, so the utilities and the C side's tests can load it.
import path from 'node:path';

export const INFO_VERSION = 1;
/** The info directory under a release directory (guide: JBCRELEASEDIR/proc/info). */
export const INFO_SUBDIR = path.join('proc', 'info');
export const infoDir = (releaseDir: string): string => path.join(releaseDir, INFO_SUBDIR);

/**
 * Coalescing: a writer rewrites its record at most this often for ordinary
 * changes (a batch job taking 100,000 locks a second writes 5 files a
 * second, not 100,000); the guide's moments (start, blocking, unblocked,
 * idle) write at once, and a change is never left unwritten longer than
 * this. Mirrored in native/common/jdls_info.h (JDLS_INFO_FLUSH_MS).
 */
export const INFO_FLUSH_MS = 200;

/** Set to 0 to write no info record (JDLS_INFO=0), e.g. to measure their cost. */
export const INFO_ENV = 'JDLS_INFO';

/** The address a local process taking locks directly in the table shows (guide: "a dotted address of 0"). */
export const LOCAL_ADDR = '0.0.0.0';

/** A file the port has open. inode and dev are decimal strings (u64); dev "-1" when defaulted (NFS: guide). */
export interface InfoFile {
  /** the application's file name (declared by the runtime, or a descriptor's path), when known */
  name?: string;
  inode: string;
  dev: string;
}

export type InfoLockKind = 'record' | 'binary' | 'os';

/** One lock the port holds. */
export interface InfoLock {
  /** the file's name when known (as in files[]) */
  file?: string;
  inode: string;
  dev: string;
  /** the record key as text (latin1); binary locks: "start-end" or "LOCK n" */
  key: string;
  mode: 'read' | 'write';
  kind: InfoLockKind;
  /** ms since the epoch (Date.now()) the lock was granted */
  sinceMs: number;
  /** the grant's fencing token (decimal u64), when the mechanism gives one */
  token?: string;
  /** the table's lock number (the -dvL "value", 0x%08x), shared-memory locks only */
  lockNo?: string;
  /** the owning thread id, when the runtime has threads */
  tid?: number;
}

/** What the port waits for, if anything. */
export interface InfoWait {
  file?: string;
  inode: string;
  dev: string;
  key: string;
  mode: 'read' | 'write';
  kind: InfoLockKind;
  sinceMs: number;
  lockNo?: string;
}

/** The port's own statistics (the client's, or the lock server's count for a remote one). */
export interface InfoStats {
  /** locks granted */
  locks: number;
  /** requests that had to wait */
  waits: number;
  /** total time spent waiting, ms */
  waitMs: number;
  /** retries (a lock taken again after a conflict: NOWAIT answers, interim messages) */
  retries: number;
}

/** Who writes the record: the client itself ("local"), or its lock-server process ("lockserver"). */
export interface InfoWriter {
  kind: 'local' | 'lockserver';
  pid: number;
  /** the writer's process start time (clock ticks since boot, as native.pidStart), so a reused pid is not taken for it */
  start: number;
}

/** A remote client's session in its lock-server process. */
export interface InfoSession {
  /** the lock-server process */
  pid: number;
  /** the connection's number within that process */
  conn: number;
  /** the client's address and port as the server sees them, "a.b.c.d:port" */
  remote: string;
  connectedMs: number;
  /** the lock server's statistics for this client (the guide's "appended statistics") */
  stats: InfoStats & { requests: number };
}

export interface InfoRecord {
  version: typeof INFO_VERSION;
  /** jBASE port number (JBCPORTNO; -P owners use it as the lock owner) */
  port: number;
  /** the client process's pid on its own host */
  pid: number;
  /** LOCAL_ADDR for a process locking directly; 127.0.0.1 for one through loopback; else the client host's address */
  ipaddr: string;
  /** the client's host name */
  host: string;
  user: string;
  program: string;
  /** when the process started (local) or connected (remote), ms since the epoch */
  startedMs: number;
  /** when this record was written, ms since the epoch */
  updatedMs: number;
  writer: InfoWriter;
  /** remote clients: the lock-server session that serves them */
  session?: InfoSession;
  files: InfoFile[];
  locks: InfoLock[];
  waiting?: InfoWait;
  stats: InfoStats;
  /** locks held but not listed (more than MAX_RECORD_LOCKS); absent when all are listed. An extension of version 1: readers that do not know it ignore it */
  locksOmitted?: number;
}

/**
 * The record's file name: port, address and pid, so two processes that claim
 * one port (overlapping JBCPORTNO ranges on two application servers) keep
 * two records, and the utilities can say so. Dots in an IPv6 address are
 * fine; ':' is replaced so the name stays portable.
 */
export function recordFileName(port: number, ipaddr: string, pid: number): string {
  return `${port}.${ipaddr.replace(/:/g, '_')}.${pid}.json`;
}

/** Names a writer may use for its temporary file (readers skip them). */
export const isTempName = (name: string): boolean => name.startsWith('.');

const isNum = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);
const isInt = (v: unknown): v is number => isNum(v) && Number.isInteger(v) && v >= 0;
const isStr = (v: unknown): v is string => typeof v === 'string';
const isDec = (v: unknown): v is string => isStr(v) && /^(-1|\d{1,20})$/.test(v);
const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const isMode = (v: unknown): v is 'read' | 'write' => v === 'read' || v === 'write';
const isKind = (v: unknown): v is InfoLockKind => v === 'record' || v === 'binary' || v === 'os';
const optStr = (v: unknown): boolean => v === undefined || isStr(v);

function checkStats(v: unknown): v is InfoStats {
  return isObj(v) && isInt(v['locks']) && isInt(v['waits']) && isNum(v['waitMs']) && isInt(v['retries']);
}

function checkLockish(v: unknown, what: string): string | undefined {
  if (!isObj(v)) return `${what} is not an object`;
  if (!optStr(v['file'])) return `${what}.file is not text`;
  if (!isDec(v['inode']) || !isDec(v['dev'])) return `${what} has no decimal inode/dev`;
  if (!isStr(v['key'])) return `${what}.key is not text`;
  if (!isMode(v['mode'])) return `${what}.mode is neither read nor write`;
  if (!isKind(v['kind'])) return `${what}.kind is not record, binary or os`;
  if (!isNum(v['sinceMs'])) return `${what}.sinceMs is not a number`;
  if (!optStr(v['lockNo'])) return `${what}.lockNo is not text`;
  return undefined;
}

/**
 * Checks a parsed record; returns it typed, or the reason it is not one.
 * Unknown fields are kept (a newer writer may add some); missing or
 * mistyped known ones refuse the record.
 */
export function checkRecord(v: unknown): InfoRecord | string {
  if (!isObj(v)) return 'not a JSON object';
  if (v['version'] !== INFO_VERSION) return `version ${JSON.stringify(v['version'])}, not ${INFO_VERSION}`;
  if (!isInt(v['port']) || !isInt(v['pid'])) return 'no port or pid';
  for (const f of ['ipaddr', 'host', 'user', 'program'] as const) if (!isStr(v[f])) return `${f} is not text`;
  if (!isNum(v['startedMs']) || !isNum(v['updatedMs'])) return 'no startedMs/updatedMs';
  const w = v['writer'];
  if (!isObj(w) || (w['kind'] !== 'local' && w['kind'] !== 'lockserver') || !isInt(w['pid']) || !isInt(w['start'])) return 'no valid writer';
  const s = v['session'];
  if (s !== undefined && (!isObj(s) || !isInt(s['pid']) || !isInt(s['conn']) || !isStr(s['remote']) || !isNum(s['connectedMs']) || !checkStats(s['stats']))) return 'session is not valid';
  if (!Array.isArray(v['files'])) return 'files is not a list';
  for (const [i, f] of (v['files'] as unknown[]).entries()) {
    if (!isObj(f) || !optStr(f['name']) || !isDec(f['inode']) || !isDec(f['dev'])) return `files[${i}] is not valid`;
  }
  if (!Array.isArray(v['locks'])) return 'locks is not a list';
  for (const [i, l] of (v['locks'] as unknown[]).entries()) {
    const why = checkLockish(l, `locks[${i}]`);
    if (why) return why;
    const lo = l as Record<string, unknown>;
    if (!optStr(lo['token'])) return `locks[${i}].token is not text`;
  }
  if (v['waiting'] !== undefined) {
    const why = checkLockish(v['waiting'], 'waiting');
    if (why) return why;
  }
  if (!checkStats(v['stats'])) return 'stats is not valid';
  return v as unknown as InfoRecord;
}

/** Parses a record's text: the record, or why it is not one. */
export function parseRecord(text: string): InfoRecord | string {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    return `not JSON (${(e as Error).message})`;
  }
  return checkRecord(v);
}

/** Same lock target: file identity and key (mode aside). */
export const sameTarget = (a: { inode: string; dev: string; key: string; kind: InfoLockKind }, b: { inode: string; dev: string; key: string; kind: InfoLockKind }): boolean =>
  a.inode === b.inode && a.dev === b.dev && a.key === b.key && a.kind === b.kind;

/** Zeroed statistics. */
export const noStats = (): InfoStats => ({ locks: 0, waits: 0, waitMs: 0, retries: 0 });

// ---- what a client tells its lock server (INFO, docs/protocol.md) ----------

/** Why the client sent INFO now (the guide's moments; "change" = a coalesced ordinary change). */
export type InfoMoment = 'start' | 'block' | 'unblock' | 'idle' | 'change';
export const INFO_MOMENTS: readonly InfoMoment[] = ['start', 'block', 'unblock', 'idle', 'change'];

/**
 * A record lists at most this many locks (then `locksOmitted` says how many
 * more): a client may hold 100,000, and a record must stay well under the
 * readers' 4 MiB bound (~170 bytes a lock) and cheap to rewrite.
 */
export const MAX_RECORD_LOCKS = 10_000;

/** A client sends at most this many files (the most recently declared): one INFO frame must stay under MAX_FRAME. */
export const MAX_CLIENT_FILES = 500;

/**
 * The JSON of an INFO frame: what only the client knows (who runs it, which
 * files it has open by name, its own statistics). The lock server adds what
 * it knows itself - the session's locks and wait, which are authoritative -
 * and writes the client's record.
 */
export interface ClientInfo {
  user: string;
  program: string;
  files: InfoFile[];
  stats: InfoStats;
  moment: InfoMoment;
}

/**
 * Checks a parsed INFO payload; returns it typed, or why it is not one.
 * Unknown fields are allowed (a newer client may send more) but not kept in
 * the record; more than MAX_CLIENT_FILES files is refused (a client keeps
 * the most recent ones).
 */
export function checkClientInfo(v: unknown): ClientInfo | string {
  if (!isObj(v)) return 'not a JSON object';
  if (!isStr(v['user']) || !isStr(v['program'])) return 'user/program is not text';
  if (!Array.isArray(v['files'])) return 'files is not a list';
  const files = v['files'] as unknown[];
  if (files.length > MAX_CLIENT_FILES) return `${files.length} files, more than ${MAX_CLIENT_FILES}`;
  for (const [i, f] of files.entries()) {
    if (!isObj(f) || !optStr(f['name']) || !isDec(f['inode']) || !isDec(f['dev'])) return `files[${i}] is not valid`;
  }
  if (!checkStats(v['stats'])) return 'stats is not valid';
  if (!INFO_MOMENTS.includes(v['moment'] as InfoMoment)) return `moment ${JSON.stringify(v['moment'])} is not one of ${INFO_MOMENTS.join(', ')}`;
  return v as unknown as ClientInfo;
}

/** The filter of INFO_QUERY (same shape as reader.ts InfoFilter, which re-exports this check's type). */
export interface InfoQueryFilter {
  port?: number;
  file?: string;
  key?: string;
}

/** Checks a parsed INFO_QUERY filter: only port (u32), file and key (text) are known; anything else is refused. */
export function checkInfoFilter(v: unknown): InfoQueryFilter | string {
  if (!isObj(v)) return 'the filter is not a JSON object';
  const out: InfoQueryFilter = {};
  for (const [k, x] of Object.entries(v)) {
    if (k === 'port') {
      if (!isInt(x) || x > 0xffffffff) return 'filter port is not a port number';
      out.port = x;
    } else if (k === 'file' || k === 'key') {
      if (!isStr(x)) return `filter ${k} is not text`;
      out[k] = x;
    } else {
      return `filter field ${JSON.stringify(k)} is unknown (port, file, key)`;
    }
  }
  return out;
}
