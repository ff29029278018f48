// view.ts - what show-item-locks and list-open-files print: from an
// InfoAnswer (the info directory read locally, or a lock server's answer to
// INFO_QUERY) to their rows, as text in the guide's layout or as JSON.
//
// Owns: the rows (one per held lock; one per port with its open files), the
// waiter column (who waits for each lock), the filters applied to rows, the
// stale mark, the warnings (duplicate ports), and both texts. Does not own:
// reading the directory or judging staleness (reader.ts), the record's shape
// (format.ts), where the answer comes from (src/cli/info-source.ts).
//
// Pure: no native import, no I/O - both CLIs and the tests build views from
// synthetic answers.
//
// Why the filters are applied here and not only by the reader or the server:
// a record matches a filter when any of its locks does, but the utility shows
// only the matching locks; and the waiter column must see every record,
// whichever the filter keeps (a waiter on port 7 is shown in the row of the
// lock port 2 holds even with -p 2).
import type { InfoAnswer, InfoFilter, ReadRecord, SkippedFile } from './reader.js';
import { duplicateText } from './reader.js';
import { sameTarget, type InfoLock, type InfoLockKind, type InfoRecord, type InfoWait } from './format.js';

// ===== shared ================================================================

/** The guide's header line (SHOW-ITEM-LOCKS); `tool` names the utility, `dir` the real directory after the guide's words. */
export function headerLine(tool: string, host: string, dir: string): string {
  return `${tool} information retrieved from process information entries generated in JBCRELEASEDIR/proc/info directory on host ${host} (${dir})`;
}

/** A duplicate port as the views give it: the reader's facts and its warning text. */
export interface DuplicateView {
  port: number;
  claims: { ipaddr: string; pid: number; host: string; program: string }[];
  text: string;
}

/** Keys are latin1 text: printable ASCII as-is, a backslash doubled, every other character as \xNN (as jdls -dvL). */
export function keyText(key: string): string {
  let s = '';
  for (const ch of key) {
    const c = ch.codePointAt(0) ?? 0;
    if (c === 0x5c) s += '\\\\';
    else if (c >= 0x20 && c < 0x7f) s += ch;
    else if (c <= 0xff) s += `\\x${c.toString(16).padStart(2, '0')}`;
    else s += `\\u{${c.toString(16)}}`;
  }
  return s;
}

const baseName = (f: string): string => f.split('/').pop() ?? f;
/** As the reader's filter: the name exactly, or the same last path component. */
const fileMatches = (want: string, name: string | undefined): boolean =>
  name !== undefined && (name === want || baseName(name) === baseName(want));

/** The file's name as the record knows it: the lock's own, else an open file with the same identity. */
function nameOf(r: InfoRecord, l: { file?: string; inode: string; dev: string }): string | undefined {
  if (l.file) return l.file;
  return r.files.find((f) => f.name && f.inode === l.inode && f.dev === l.dev)?.name;
}

/** FILENAME: the name, or inode:dev when no name is known. */
const fileText = (r: InfoRecord, l: { file?: string; inode: string; dev: string }): string => nameOf(r, l) ?? `${l.inode}:${l.dev}`;

/** Text columns padded to the widest cell, one space between; the last column is not padded. */
function table(rows: string[][]): string[] {
  const widths: number[] = [];
  for (const r of rows) r.forEach((c, i) => (widths[i] = Math.max(widths[i] ?? 0, c.length)));
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i] ?? 0))).join(' ').trimEnd());
}

/** The answer's duplicate ports (those of the filtered port only, under -p). */
const duplicatesOf = (a: InfoAnswer, port: number | undefined): DuplicateView[] =>
  a.duplicates.filter((d) => port === undefined || d.port === port).map((d) => ({ port: d.port, claims: d.claims, text: duplicateText(d) }));

/** The warning line a duplicate port gives (after the table, and on stderr). */
export const duplicateWarning = (d: DuplicateView): string => `WARNING: ${d.text}`;

// ===== show-item-locks =======================================================

/** One held lock: the guide's columns and what JSON readers may want besides. */
export interface ItemLockRow {
  ipaddr: string;
  port: number;
  pid: number;
  /** the file's name, or "inode:dev" when none is known */
  filename: string;
  /** the key as the record has it (latin1 text); the text column escapes it (keyText) */
  key: string;
  /** LOCK#: "<lockNo>,<R|W>", "-,<R|W>" when the mechanism gives no number */
  lock: string;
  /** PORT/-PID: who waits for this lock - ports, or -pid for a waiter without a port; longest waiting first */
  waiters: string[];
  mode: 'read' | 'write';
  kind: InfoLockKind;
  inode: string;
  dev: string;
  sinceMs: number;
  token?: string;
  host: string;
  user: string;
  program: string;
  /** the record's file in the info directory */
  record: string;
  /** why the record is stale (its writer is gone), when it is */
  stale?: string;
}

/** A wait for a lock that no record shows held (its holder writes no info record, or the record is behind). */
export interface UnheldWait {
  ipaddr: string;
  port: number;
  pid: number;
  filename: string;
  key: string;
  mode: 'read' | 'write';
  kind: InfoLockKind;
  inode: string;
  dev: string;
  sinceMs: number;
  record: string;
}

export interface StaleView {
  record: string;
  port: number;
  pid: number;
  ipaddr: string;
  why: string;
}

export interface ItemLocksView {
  host: string;
  dir: string;
  rows: ItemLockRow[];
  waits: UnheldWait[];
  stale: StaleView[];
  duplicates: DuplicateView[];
  skipped: SkippedFile[];
}

/** PORT/-PID of a waiter: its port, or -pid when it has no port (0). */
export const waiterId = (r: InfoRecord): string => (r.port > 0 ? String(r.port) : `-${r.pid}`);

const modeLetter = (m: 'read' | 'write'): string => (m === 'write' ? 'W' : 'R');

function lockRowMatches(row: { port: number; filename: string; key: string }, name: string | undefined, filter: InfoFilter): boolean {
  if (filter.port !== undefined && row.port !== filter.port) return false;
  if (filter.file !== undefined && !fileMatches(filter.file, name)) return false;
  if (filter.key !== undefined && row.key !== filter.key) return false;
  return true;
}

/**
 * The rows of show-item-locks. Waiters are live records only (a dead
 * process waits for nothing) and never the holder's own record (a process
 * waiting to upgrade its own read lock is not its own blocker).
 */
export function itemLocksView(answer: InfoAnswer, filter: InfoFilter = {}): ItemLocksView {
  const live = answer.records.filter((r) => !r.stale && r.record.waiting);
  const waitersOf = (holder: ReadRecord, l: InfoLock): ReadRecord[] =>
    live
      .filter((w) => w !== holder && w.record.waiting !== undefined && sameTarget(w.record.waiting, l))
      // Longest waiting first (the likely queue order), then by port and pid.
      .sort((a, b) => (a.record.waiting?.sinceMs ?? 0) - (b.record.waiting?.sinceMs ?? 0) || a.record.port - b.record.port || a.record.pid - b.record.pid);
  const rows: ItemLockRow[] = [];
  const heldBySomeone = (w: InfoWait): boolean => answer.records.some((h) => h.record.locks.some((l) => sameTarget(l, w)));
  for (const rr of answer.records) {
    const r = rr.record;
    for (const l of r.locks) {
      const row: ItemLockRow = {
        ipaddr: r.ipaddr,
        port: r.port,
        pid: r.pid,
        filename: fileText(r, l),
        key: l.key,
        lock: `${l.lockNo ?? '-'},${modeLetter(l.mode)}`,
        waiters: waitersOf(rr, l).map((w) => waiterId(w.record)),
        mode: l.mode,
        kind: l.kind,
        inode: l.inode,
        dev: l.dev,
        sinceMs: l.sinceMs,
        host: r.host,
        user: r.user,
        program: r.program,
        record: rr.file,
      };
      if (l.token !== undefined) row.token = l.token;
      if (rr.stale) row.stale = rr.stale;
      if (lockRowMatches(row, nameOf(r, l), filter)) rows.push(row);
    }
  }
  const waits: UnheldWait[] = [];
  for (const rr of live) {
    const r = rr.record;
    const w = r.waiting;
    if (!w || heldBySomeone(w)) continue;
    const u: UnheldWait = {
      ipaddr: r.ipaddr, port: r.port, pid: r.pid, filename: fileText(r, w), key: w.key, mode: w.mode, kind: w.kind,
      inode: w.inode, dev: w.dev, sinceMs: w.sinceMs, record: rr.file,
    };
    if (lockRowMatches(u, nameOf(r, w), filter)) waits.push(u);
  }
  const stale = answer.records
    .filter((r) => r.stale && (filter.port === undefined || r.record.port === filter.port))
    .map((r) => ({ record: r.file, port: r.record.port, pid: r.record.pid, ipaddr: r.record.ipaddr, why: r.stale ?? '' }));
  return { host: answer.host, dir: answer.dir, rows, waits, stale, duplicates: duplicatesOf(answer, filter.port), skipped: answer.skipped };
}

export const ITEM_LOCKS_COLUMNS = ['IPADDR', 'PORT', 'PID', 'FILENAME', 'RECORD KEY', 'LOCK#', 'PORT/-PID'] as const;

const clock = (ms: number): string => new Date(ms).toTimeString().slice(0, 8);

/**
 * show-item-locks as text: the guide's header line, a blank line, the
 * columns; a stale record's rows end with "(stale: why)"; then the waits for
 * locks no record shows held, and a WARNING line per duplicate port.
 */
export function itemLocksText(v: ItemLocksView): string {
  const cells: string[][] = [[...ITEM_LOCKS_COLUMNS]];
  for (const r of v.rows) {
    cells.push([r.ipaddr, String(r.port), String(r.pid), r.filename, keyText(r.key), r.lock, r.waiters.length ? r.waiters.join(',') : '---']);
  }
  const lines = table(cells);
  // The stale mark goes after the aligned columns, so they stay the guide's.
  const out = [headerLine('show-item-locks', v.host, v.dir), '', lines[0] ?? ''];
  v.rows.forEach((r, i) => out.push(r.stale ? `${lines[i + 1]}  (stale: ${r.stale})` : (lines[i + 1] ?? '')));
  if (v.rows.length === 0) out.push('No item locks found');
  if (v.waits.length) {
    out.push('');
    for (const w of v.waits) {
      out.push(
        `port ${w.port} (pid ${w.pid}, ${w.ipaddr}) waits since ${clock(w.sinceMs)} for ${w.filename} key ${keyText(w.key)} (${modeLetter(w.mode)}), held by no process with an info record`,
      );
    }
  }
  if (v.duplicates.length) {
    out.push('');
    for (const d of v.duplicates) out.push(duplicateWarning(d));
  }
  return `${out.join('\n')}\n`;
}

// ===== list-open-files =======================================================

export interface OpenFileRow {
  /** the application's name, when known */
  name?: string;
  inode: string;
  dev: string;
}

export interface OpenFilesPort {
  port: number;
  pid: number;
  ipaddr: string;
  host: string;
  user: string;
  program: string;
  /** the record's file in the info directory */
  record: string;
  stale?: string;
  files: OpenFileRow[];
}

export interface OpenFilesView {
  host: string;
  dir: string;
  ports: OpenFilesPort[];
  duplicates: DuplicateView[];
  skipped: SkippedFile[];
}

/** The ports of list-open-files; -f keeps the ports that have that file open, with that file only. */
export function openFilesView(answer: InfoAnswer, filter: Pick<InfoFilter, 'port' | 'file'> = {}): OpenFilesView {
  const ports: OpenFilesPort[] = [];
  for (const rr of answer.records) {
    const r = rr.record;
    if (filter.port !== undefined && r.port !== filter.port) continue;
    const files = r.files
      .filter((f) => filter.file === undefined || fileMatches(filter.file, f.name))
      .map((f) => (f.name === undefined ? { inode: f.inode, dev: f.dev } : { name: f.name, inode: f.inode, dev: f.dev }));
    if (filter.file !== undefined && files.length === 0) continue;
    const p: OpenFilesPort = { port: r.port, pid: r.pid, ipaddr: r.ipaddr, host: r.host, user: r.user, program: r.program, record: rr.file, files };
    if (rr.stale) p.stale = rr.stale;
    ports.push(p);
  }
  return { host: answer.host, dir: answer.dir, ports, duplicates: duplicatesOf(answer, filter.port), skipped: answer.skipped };
}

/**
 * list-open-files as text: the header line, then per port a line naming it
 * ("Port 4, pid 15112, ipaddr 127.0.0.1, user u, program p", and the stale
 * mark) and its files,
 * indented, in columns FILENAME INODE DEV; a WARNING line per duplicate port.
 */
export function openFilesText(v: OpenFilesView): string {
  const out = [headerLine('list-open-files', v.host, v.dir)];
  for (const p of v.ports) {
    out.push('');
    const head = `Port ${p.port}, pid ${p.pid}, ipaddr ${p.ipaddr}, user ${p.user}, program ${p.program}`;
    out.push(p.stale ? `${head}  (stale: ${p.stale})` : head);
    if (p.files.length === 0) out.push('    (no files open)');
    else out.push(...table([['FILENAME', 'INODE', 'DEV'], ...p.files.map((f) => [f.name ?? '-', f.inode, f.dev])]).map((l) => `    ${l}`));
  }
  if (v.ports.length === 0) out.push('', 'No open files found');
  if (v.duplicates.length) {
    out.push('');
    for (const d of v.duplicates) out.push(duplicateWarning(d));
  }
  return `${out.join('\n')}\n`;
}
