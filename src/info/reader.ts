// reader.ts - reading JBCRELEASEDIR/proc/info: every port's record, which
// ones are stale, and which ports two live processes claim.
//
// Owns: listing and reading the directory safely (no link followed, no
// special file opened, a size cap), judging staleness, finding duplicate
// ports, and the filters the utilities offer. Does not own: the record's
// shape (format.ts) or writing (writer.ts). Used by show-item-locks and
// list-open-files on the server's host, by the lock server answering
// INFO_QUERY, and by the monitor's tidy-up (it removes stale records).
//
// Stale: the record's writer is gone - its pid is dead, or now belongs to a
// process that started at another time (a reused pid). A lock-server
// process removes a client's record when the connection ends, so a record
// whose lock server lives is current; one whose lock server died is stale
// (its connection no longer exists).
import fs from 'node:fs';
import path from 'node:path';
import { native } from '../native.js';
import { infoDir, isTempName, parseRecord, type InfoRecord, type InfoQueryFilter } from './format.js';

/** A record too big to be one (a planted or runaway file is not read whole). */
export const MAX_RECORD_BYTES = 4 << 20;

export interface ReadRecord {
  /** the file's name in the info directory */
  file: string;
  record: InfoRecord;
  /** why the record is stale (its writer is gone), or undefined when current */
  stale?: string;
}

export interface SkippedFile {
  file: string;
  why: string;
}

/** Two or more live records that claim one port. */
export interface DuplicatePort {
  port: number;
  claims: { ipaddr: string; pid: number; host: string; program: string }[];
}

export interface InfoListing {
  dir: string;
  records: ReadRecord[];
  skipped: SkippedFile[];
  duplicates: DuplicatePort[];
}

/** What INFO_QUERY answers (the JSON of its INFO_RESULT chunks): a listing and the host it is from. */
export interface InfoAnswer extends InfoListing {
  /** the lock server's host name (the utilities' header line names it) */
  host: string;
}

/**
 * port; file: matches a lock's or an open file's name, exactly or by its
 * last path component; key: a lock's or the wait's key. The shape lives in
 * format.ts (pure: the codec checks INFO_QUERY's filter with it).
 */
export type InfoFilter = InfoQueryFilter;

/**
 * A live process's start time, 0 when it is dead - a zombie included: a
 * killed lock server stays one until the listener reaps it, and its
 * record must be stale at once (its clients' connections are gone).
 */
export function liveStart(pid: number): number {
  const start = native.pidStart(pid);
  if (start === 0) return 0;
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'latin1');
    const state = stat.charAt(stat.lastIndexOf(')') + 2);
    return state === 'Z' || state === 'X' ? 0 : start;
  } catch {
    return 0;
  }
}

/** Why the writer of `r` is gone, or undefined when it lives. */
export function staleReason(r: InfoRecord, pidStart: (pid: number) => number = liveStart): string | undefined {
  const w = r.writer;
  const who = w.kind === 'lockserver' ? `lock-server process ${w.pid}` : `process ${w.pid}`;
  let start: number;
  try {
    start = pidStart(w.pid);
  } catch {
    start = 0;
  }
  if (start === 0) return `${who} is dead`;
  if (start !== w.start) return `${who} is dead (its pid now belongs to another process)`;
  return undefined;
}

function readOne(dir: string, name: string): { record: InfoRecord } | { why: string } {
  let fd: number;
  try {
    // O_NOFOLLOW: a link planted in the directory is not followed; O_NONBLOCK: a FIFO does not hang us.
    fd = fs.openSync(path.join(dir, name), fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK);
  } catch (e) {
    return { why: (e as NodeJS.ErrnoException).code === 'ELOOP' ? 'a symbolic link' : (e as Error).message };
  }
  try {
    const st = fs.fstatSync(fd);
    if (!st.isFile()) return { why: 'not a regular file' };
    if (st.size > MAX_RECORD_BYTES) return { why: `${st.size} bytes, more than a record can be` };
    const text = fs.readFileSync(fd, 'utf8');
    const r = parseRecord(text);
    return typeof r === 'string' ? { why: r } : { record: r };
  } finally {
    fs.closeSync(fd);
  }
}

const baseName = (f: string): string => f.split('/').pop() ?? f;
const fileMatches = (want: string, name: string | undefined): boolean => name !== undefined && (name === want || baseName(name) === want || baseName(name) === baseName(want));

/** Does the record concern `filter` (its port; a lock, wait or open file of that name; a lock or wait on that key)? */
export function matches(r: InfoRecord, filter: InfoFilter): boolean {
  if (filter.port !== undefined && r.port !== filter.port) return false;
  const targets = [...r.locks, ...(r.waiting ? [r.waiting] : [])];
  if (filter.file !== undefined) {
    const f = filter.file;
    const byLock = targets.some((l) => fileMatches(f, l.file));
    const byFile = r.files.some((o) => fileMatches(f, o.name));
    if (!byLock && !byFile) return false;
  }
  if (filter.key !== undefined && !targets.some((l) => l.key === filter.key)) return false;
  return true;
}

/**
 * Every record of the installation's info directory (sorted by port, then
 * address and pid), stale ones marked; files that are not records are
 * listed as skipped, never shown as locks. A missing directory is an empty
 * listing (no client has written yet).
 */
export function readInfoDir(releaseDir: string, opts: { filter?: InfoFilter; pidStart?: (pid: number) => number } = {}): InfoListing {
  const dir = infoDir(releaseDir);
  const out: InfoListing = { dir, records: [], skipped: [], duplicates: [] };
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return out;
    throw e;
  }
  for (const name of names.sort()) {
    if (isTempName(name)) continue;
    if (!name.endsWith('.json')) {
      out.skipped.push({ file: name, why: 'not a record name' });
      continue;
    }
    const got = readOne(dir, name);
    if ('why' in got) {
      // A record removed between readdir and open is simply gone.
      if (!/ENOENT/.test(got.why)) out.skipped.push({ file: name, why: got.why });
      continue;
    }
    const stale = staleReason(got.record, opts.pidStart);
    out.records.push(stale ? { file: name, record: got.record, stale } : { file: name, record: got.record });
  }
  out.records.sort((a, b) => a.record.port - b.record.port || a.record.ipaddr.localeCompare(b.record.ipaddr) || a.record.pid - b.record.pid);
  out.duplicates = duplicatePorts(out.records);
  if (opts.filter) out.records = out.records.filter((r) => matches(r.record, opts.filter!));
  return out;
}

/** Ports that two or more live records claim (stale records do not count: their process is gone). */
export function duplicatePorts(records: readonly ReadRecord[]): DuplicatePort[] {
  const byPort = new Map<number, ReadRecord[]>();
  for (const r of records) {
    if (r.stale) continue;
    const l = byPort.get(r.record.port) ?? [];
    l.push(r);
    byPort.set(r.record.port, l);
  }
  const out: DuplicatePort[] = [];
  for (const [port, rs] of byPort) {
    if (rs.length < 2) continue;
    out.push({ port, claims: rs.map((r) => ({ ipaddr: r.record.ipaddr, pid: r.record.pid, host: r.record.host, program: r.record.program })) });
  }
  return out.sort((a, b) => a.port - b.port);
}

/** The warning line for a duplicate port (log and utilities say the same). */
export function duplicateText(d: DuplicatePort): string {
  const who = d.claims.map((c) => `pid ${c.pid} at ${c.ipaddr} (${c.host}, ${c.program})`).join(' and ');
  return `port ${d.port} is claimed by ${d.claims.length} live processes: ${who}; port-based locks (-P) of these processes do not exclude each other - check the JBCPORTNO ranges of the application servers`;
}
