// display.ts - `jdls -d[v][L]` and `--json`: the lock table as text in the
// jBASE guide's layout ("jDLS -dvL"), or as one JSON document.
//
// Owns: formatting (ctime dates, row columns, key escaping), the memory and
// summary figures, and streaming output to fd 1. Does not own: reading the
// table (LockTable.rows) or process liveness (procs.ts).
//
// Trap: a table can hold 1,000,000 entries. Output is written a batch of
// groups at a time with fs.writeSync and never assembled into one string.
// process.stdout is not used: to a pipe it writes asynchronously, so a
// million rows would pile up in memory and could be cut off by the exit. A reader that
// goes away (`jdls -dvL | head`) ends the listing quietly (EPIPE).
import fs from 'node:fs';
import type { DisplayCommand } from './args.js';
import { LockTable, type LockRow, type TableHeader } from '../locks/table.js';
import { JdlsError } from '../errors.js';
import { C } from '../native.js';
import { tablePath } from '../installation.js';
import { isRunning, cpuSeconds } from './procs.js';
import { findListener, type ListenerInfo } from '../server/state.js';
import { loadConfig } from '../server/config.js';
import { DEFAULT_LOCK_DIR } from '../locks/oslock.js';
import { describeCycle } from '../locks/deadlock-report.js';
import { osRecordLocks, osRowText, OS_ROW_HEADER, type OsRecordLockRow } from './oslist.js';
import { sessionsForDisplay } from './admin-cli.js';
import { readWitnessRecord, witnessText, type WitnessRecord } from '../server/witness-state.js';

// ===== output ==============================================================

/** Thrown by writeFd when the reader has gone; callers stop quietly. */
export class PipeClosed extends Error {
  constructor() {
    super('output closed');
  }
}

const pause = new Int32Array(new SharedArrayBuffer(4));

/** Write all of text to fd, synchronously. */
export function writeFd(fd: number, text: string): void {
  let buf = Buffer.from(text);
  while (buf.length) {
    let n: number;
    try {
      n = fs.writeSync(fd, buf);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'EPIPE') throw new PipeClosed();
      // A non-blocking descriptor (inherited from a parent that set
      // O_NONBLOCK) whose reader is slow: wait a moment and go on.
      if (code === 'EAGAIN') {
        Atomics.wait(pause, 0, 0, 5);
        continue;
      }
      throw e;
    }
    buf = buf.subarray(n);
  }
}

// ===== formatting ==========================================================

const DAYS = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'];
const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
const two = (n: number): string => String(n).padStart(2, '0');

/** C ctime() without the newline, local time: "Thu Apr 27 17:28:17 2006"; 0 is "Never". */
export function ctime(ms: number): string {
  if (!ms) return 'Never';
  const d = new Date(ms);
  return `${DAYS[d.getDay()]} ${MONTHS[d.getMonth()]} ${String(d.getDate()).padStart(2, ' ')} ${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())} ${d.getFullYear()}`;
}

/** Local "YYYY-MM-DD HH:MM:SS" for the -T time column; "-" if unset. */
function stamp(ms: number): string {
  if (!ms) return '-';
  const d = new Date(ms);
  return `${d.getFullYear()}-${two(d.getMonth() + 1)}-${two(d.getDate())} ${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())}`;
}

/** Printable ASCII as-is, a backslash doubled, every other byte as \xNN. */
export function escapeKey(key: Buffer): string {
  let s = '';
  for (const b of key) {
    if (b === 0x5c) s += '\\\\';
    else if (b >= 0x20 && b < 0x7f) s += String.fromCharCode(b);
    else s += `\\x${b.toString(16).padStart(2, '0')}`;
  }
  return s;
}

export function mechanism(h: TableHeader): string {
  return `Shared memory lock table, robust mutexes, locks based on ${h.portLocks ? 'PORT number' : 'THREAD id'}${h.timestamps ? ', time stamped' : ''}`;
}

/** Is the table the installation's record-lock mechanism? (its header says; not the monitor's liveness) */
const inService = (h: TableHeader): boolean => h.service === C.SERVICE_ON;

/** Why a table that exists is not the mechanism. */
const notInServiceWhy = (h: TableHeader): string =>
  h.service === C.SERVICE_RETIRED ? 'the lock table is out of service; it takes no new locks' : `the lock table is being put in service by pid ${h.starterPid}; it takes no locks yet`;

/** The OS mechanism's line: what record locks use while no table is in service. */
const osMechanism = (lockDir: string, why: string): string => `OS file locks in ${lockDir} (${why})`;

/** The installation's OS lock directory (jdls.yaml lockDir), default /tmp/jbase. */
function lockDirOf(dir: string): string {
  try {
    return loadConfig(dir).lockDir;
  } catch {
    return DEFAULT_LOCK_DIR; // a broken jdls.yaml is reported by the commands that start things
  }
}

function osRowJson(r: OsRecordLockRow): string {
  return JSON.stringify({ ...r, start: r.start.toString(), end: r.end === null ? null : r.end.toString() });
}

/** The OS record locks section of the text display. */
function osLocksText(lockDir: string, locks: boolean): string {
  const { rows, files } = osRecordLocks(lockDir);
  const held = rows.filter((r) => !r.blocked);
  let s = '';
  if (locks) {
    s += `\nRecord locks outstanding (OS file locks in ${lockDir}; the byte is a hash of the key)\n${OS_ROW_HEADER}`;
    for (const r of rows) s += `${osRowText(r)}\n`;
  }
  const waiting = rows.length - held.length;
  s += line('OS record locks:', `${held.length} locks in ${files} lock files${waiting ? `, ${waiting} requests waiting` : ''}`);
  return s;
}

/** A column of the guide's layout: padded to its width, always one space after. */
const col = (s: string, w: number): string => (s.length < w ? s.padEnd(w) : `${s} `);
const hex8 = (n: number): string => `0x${n.toString(16).padStart(8, '0')}`;
const typeName = (r: LockRow): string => (r.mode === 'write' ? 'WRITE' : 'READ');

const ROW_HEADER = 'Group value      pid     type  port i-node   dev queued ipaddr      ';

function rowText(r: LockRow, timestamps: boolean): string {
  return (
    col(String(r.group), 6) + col(hex8(r.hash), 11) + col(String(r.pid), 8) + col(typeName(r), 6) +
    col(String(r.port), 5) + col(r.inode.toString().padStart(8, '0'), 9) + col(r.dev.toString(), 4) +
    col(r.queued ? String(r.queued) : 'None', 7) + col(r.ip, 12) + (timestamps ? col(stamp(r.stampMs), 20) : '') +
    escapeKey(r.key)
  );
}

function rowJson(r: LockRow): string {
  return JSON.stringify({
    group: r.group,
    value: hex8(r.hash),
    state: r.state,
    type: typeName(r),
    pid: r.pid,
    ownerPid: r.ownerPid,
    ownerTid: r.ownerTid,
    port: r.port,
    inode: r.inode.toString(),
    dev: r.dev.toString(),
    queued: r.queued,
    ip: r.ip,
    key: escapeKey(r.key),
    keyHex: r.key.toString('hex'),
    seq: r.seq,
    token: r.token.toString(),
    stampMs: r.stampMs,
    time: r.stampMs ? new Date(r.stampMs).toISOString() : null,
  });
}

// ===== figures =============================================================

export interface Counts {
  /** entries in use: held locks and queued requests */
  entries: number;
  held: number;
  waiting: number;
  /** most held locks in one group */
  maxInGroup: number;
}

function addBatch(c: Counts, batch: LockRow[]): void {
  const perGroup = new Map<number, number>();
  for (const r of batch) {
    c.entries++;
    if (r.state !== 'held') {
      c.waiting++;
      continue;
    }
    c.held++;
    const n = (perGroup.get(r.group) ?? 0) + 1;
    perGroup.set(r.group, n);
    if (n > c.maxInGroup) c.maxInGroup = n;
  }
}

const noCounts = (): Counts => ({ entries: 0, held: 0, waiting: 0, maxInGroup: 0 });

/** Counts from the group counters: no pass over the entries (a million-lock
 * table would take seconds), a snapshot rather than a consistent cut. */
function countAll(table: LockTable): Counts {
  const u = table.usage();
  return { entries: u.held + u.waiting, held: u.held, waiting: u.waiting, maxInGroup: u.maxInGroup };
}

export interface Memory {
  used: number;
  free: number;
}

/** Used: header, process slots and group headers, plus entries in use; free: free entries. */
export function memory(h: TableHeader, entries: number): Memory {
  const fixed = h.totalSize - h.capacity * h.entrySize;
  return { used: fixed + entries * h.entrySize, free: (h.capacity - entries) * h.entrySize };
}

interface ProcStatus {
  pid: number;
  active: boolean;
}

const procStatus = (pid: number, start: number): ProcStatus => ({ pid, active: isRunning(pid, start) });
const procText = (p: ProcStatus): string => (p.pid ? `${p.pid} - ${p.active ? 'Active' : 'Not running'}` : 'Not running');

interface ListenerStatus extends ProcStatus {
  port: number;
  addr: string;
  mechanism?: string;
}

/**
 * The listener: the header's entry, or (a listener without a table entry:
 * started before the table, or -ibD) its pid file.
 */
function listenerStatus(h: TableHeader | undefined, dir: string): ListenerStatus {
  const fromHeader: ListenerStatus | undefined = h
    ? { ...procStatus(h.listenerPid, h.listenerStart), port: h.listenerPort, addr: h.listenerAddr }
    : undefined;
  if (fromHeader?.active) return fromHeader;
  const f: ListenerInfo | undefined = findListener(dir);
  if (f) return { pid: f.pid, active: true, port: f.port, addr: f.addr, mechanism: f.mechanism };
  return fromHeader ?? { pid: 0, active: false, port: 0, addr: '' };
}

/** The running listener's witness (jdls.yaml witness:), from the record it keeps (witness-state.ts). */
function witnessOf(l: ListenerStatus, dir: string): WitnessRecord | undefined {
  if (!l.active) return undefined;
  const r = readWitnessRecord(dir);
  return r && r.pid === l.pid ? r : undefined;
}

const listenerText = (l: ListenerStatus, dir: string): string => {
  const w = witnessOf(l, dir);
  return `Lock listener at pid:     ${procText(l)}\n${l.active ? `Lock listener on:         ${l.addr || '0.0.0.0'} port ${l.port}\n` : ''}${w ? witnessText(w) : ''}`;
};

const listenerJson = (l: ListenerStatus, dir: string): Record<string, unknown> => {
  const w = witnessOf(l, dir);
  return {
    pid: l.pid || null, active: l.active, port: l.active ? l.port : null, addr: l.active ? l.addr || null : null,
    ...(w ? { witness: { endpoints: w.endpoints, prefix: w.prefix, name: w.name, role: w.role, term: w.term, leader: w.leader, leaseMs: w.leaseMs, leaseLeftMs: w.role === 'leader' ? Math.max(0, (w.untilMs ?? 0) - Date.now()) : null } } : {}),
  };
};

function tidyTime(h: TableHeader): string {
  const minutes = h.tidyMs / 60_000;
  if (Number.isInteger(minutes)) return `${minutes} minute${minutes === 1 ? '' : 's'}`;
  const seconds = Math.round(h.tidyMs / 100) / 10;
  return `${seconds} second${seconds === 1 ? '' : 's'}`;
}

// ===== the command =========================================================

export function noTableMessage(dir: string): string {
  return `jdls: no lock table for JBCRELEASEDIR=${dir} (start one with jdls -ib)`;
}

/** The client sessions, when -L asks and a listener runs (admin socket: admin-cli.ts); else undefined. */
async function clientSessions(cmd: DisplayCommand, dir: string): Promise<Sessions | undefined> {
  if (!cmd.locks) return undefined;
  if (!findListener(dir)) return undefined;
  return sessionsForDisplay(dir);
}

type Sessions = { text: string; json: unknown };

/** Runs `jdls -d...`; returns the exit code. */
export async function display(cmd: DisplayCommand, dir: string): Promise<number> {
  // Asked first (the one asynchronous step): the output below is written synchronously.
  const sessions = await clientSessions(cmd, dir);
  let table: LockTable;
  try {
    table = LockTable.open({ releaseDir: dir });
  } catch (e) {
    if (e instanceof JdlsError && e.code === 'NO_TABLE') {
      // No table: record locks are OS file locks (the guide's rule for an
      // installation without a monitor) - show those, and the listener.
      try {
        showOs(cmd, dir, sessions);
      } catch (err) {
        if (err instanceof PipeClosed) return 0;
        throw err;
      }
      return 0;
    }
    writeFd(2, `jdls: cannot open the lock table ${tablePath(dir)}: ${(e as Error).message}\n`);
    return 1;
  }
  try {
    if (cmd.json) showJson(cmd, table, sessions);
    else showText(cmd, table, sessions);
    return 0;
  } catch (e) {
    if (e instanceof PipeClosed) return 0;
    throw e;
  } finally {
    table.close();
  }
}

const LABEL = 21;
const line = (label: string, value: string): string => `${label.padEnd(LABEL)}${value}\n`;

/** `-dvL` of an installation without a table: the OS mechanism's locks. */
function showOs(cmd: DisplayCommand, dir: string, sessions: Sessions | undefined): void {
  const lis = listenerStatus(undefined, dir);
  const lockDir = lockDirOf(dir);
  const why = 'no shared memory lock table';
  if (cmd.json) {
    const { rows, files } = osRecordLocks(lockDir);
    writeFd(1, `${JSON.stringify({
      releaseDir: dir,
      table: null,
      monitor: { pid: null, active: false },
      listener: listenerJson(lis, dir),
      mechanism: { kind: 'os', text: osMechanism(lockDir, why), lockDir },
      osLockFiles: files,
      ...(sessions ? { clientSessions: sessions.json } : {}),
    }).slice(0, -1)},"osLocks":[${rows.map(osRowJson).join(',')}]}\n`);
    return;
  }
  writeFd(1, `Lock monitor at pid:      Not running\n${listenerText(lis, dir)}${line('Locking mechanism:', osMechanism(lockDir, why))}${osLocksText(lockDir, cmd.locks)}${sessions?.text ?? ''}`);
}

const POLICY_NAMES = ['off', 'report', 'break'];

function deadlockText(h: TableHeader): string {
  return `${h.deadlocksFound} found, ${h.deadlocksBroken} refused (policy ${POLICY_NAMES[h.deadlockPolicy] ?? h.deadlockPolicy})`;
}

/** The counters, and the cycles the table still keeps (the last 16), newest last. */
function deadlocksJson(table: LockTable): Record<string, unknown> {
  const h = table.header();
  const recent = [];
  for (let n = Math.max(1, h.deadlockReports - 15); n <= h.deadlockReports; n++) {
    const r = table.deadlockReport(n);
    if (!r) continue;
    const d = describeCycle(r);
    recent.push({ number: r.number, time: new Date(r.timeMs).toISOString(), members: r.members, refused: r.victim >= 0, waiters: d.members, text: d.text });
  }
  return { policy: POLICY_NAMES[h.deadlockPolicy] ?? h.deadlockPolicy, found: h.deadlocksFound, refused: h.deadlocksBroken, reports: h.deadlockReports, recent };
}

/**
 * The OS locks taken for OSLOCKS requests while the table is the mechanism
 * (the lock directory holds only those then): listed with -L when there are
 * any, so that nothing held is invisible while the monitor runs.
 */
function osLocksBesideTable(dir: string): { rows: OsRecordLockRow[]; lockDir: string; why?: string } {
  const lockDir = lockDirOf(dir);
  try {
    return { rows: osRecordLocks(lockDir).rows, lockDir };
  } catch (e) {
    return { rows: [], lockDir, why: (e as Error).message };
  }
}

function showText(cmd: DisplayCommand, table: LockTable, sessions?: Sessions): void {
  const h = table.header();
  const mon = procStatus(h.monitorPid, h.monitorStart);
  const lis = listenerStatus(h, table.releaseDir);
  let head = `Lock monitor at pid:      ${procText(mon)}\n${listenerText(lis, table.releaseDir)}`;
  let counts: Counts | undefined;
  if (cmd.verbose) {
    // The memory line comes before the rows: it uses the group counters, and
    // the summary below uses the rows actually listed.
    counts = countAll(table);
    const mem = memory(h, counts.entries);
    head +=
      line('Program started:', ctime(h.startedMs)) +
      line('Time last ran:', `${ctime(h.lastRanMs)} Time last tidied up: ${ctime(h.lastTidyMs)}`) +
      line('Lock retries:', String(h.lockRetries)) +
      line('Tidy-up time:', tidyTime(h)) +
      line('Locking mechanism:', inService(h) ? mechanism(h) : osMechanism(lockDirOf(table.releaseDir), notInServiceWhy(h))) +
      line('Tidy-up operations:', String(h.tidyOps)) +
      line('Deadlocks:', deadlockText(h)) +
      line('Memory:', `${mem.used} bytes used , ${mem.free} bytes free`);
    const cpu = mon.active ? cpuSeconds(mon.pid) : undefined;
    if (cpu) head += line('CPU Usage:', `${cpu.usr.toFixed(2)} usr , ${cpu.sys.toFixed(2)} sys`);
  }
  writeFd(1, head);
  if (cmd.locks) {
    writeFd(1, `\nRecord locks outstanding\n${ROW_HEADER}${h.timestamps ? col('time', 20) : ''}key\n`);
    const c = noCounts();
    for (const batch of table.rows()) {
      addBatch(c, batch);
      let chunk = '';
      // Queued requests are not rows here; their held lock's "queued" counts them.
      for (const r of batch) if (r.state === 'held') chunk += `${rowText(r, h.timestamps)}\n`;
      if (chunk) writeFd(1, chunk);
    }
    counts = c;
  }
  counts ??= countAll(table);
  const pad = ' '.repeat(LABEL);
  let tail =
    line('Record locks:', `${h.capacity} locks maximum in ${h.ngroups} groups of ${h.perGroup} locks/group`) +
    `${pad}${counts.held} locks currently in use\n` +
    `${pad}${counts.maxInGroup} is max. locks found in one group\n`;
  if (counts.waiting) tail += `${pad}${counts.waiting} lock requests queued\n`;
  // Without a table in service, record locks are OS file locks: show them too.
  if (!inService(h)) tail += osLocksText(lockDirOf(table.releaseDir), cmd.locks);
  else if (cmd.locks) {
    const os = osLocksBesideTable(table.releaseDir);
    if (os.why) tail += `\nOSLOCKS locks:        not listed: ${os.why}\n`;
    else if (os.rows.length) {
      tail += `\nOS locks for OSLOCKS requests (OS file locks in ${os.lockDir}; the byte is a hash of the key)\n${OS_ROW_HEADER}`;
      for (const r of os.rows) tail += `${osRowText(r)}\n`;
    }
  }
  if (sessions) tail += sessions.text;
  writeFd(1, tail);
}

function showJson(cmd: DisplayCommand, table: LockTable, sessions?: Sessions): void {
  const h = table.header();
  const mon = procStatus(h.monitorPid, h.monitorStart);
  const lis = listenerStatus(h, table.releaseDir);
  const cpu = mon.active ? cpuSeconds(mon.pid) : undefined;
  const head = {
    releaseDir: table.releaseDir,
    table: table.path,
    monitor: {
      pid: h.monitorPid || null,
      active: mon.active,
      started: h.startedMs ? new Date(h.startedMs).toISOString() : null,
      lastRan: h.lastRanMs ? new Date(h.lastRanMs).toISOString() : null,
      lastTidy: h.lastTidyMs ? new Date(h.lastTidyMs).toISOString() : null,
      tidyMinutes: h.tidyMs / 60_000,
      tidyOps: h.tidyOps,
      cpu: cpu ?? null,
    },
    listener: listenerJson(lis, table.releaseDir),
    header: { ...h, nextToken: h.nextToken.toString() },
    deadlocks: deadlocksJson(table),
    mechanism: inService(h)
      ? { kind: 'shm', text: mechanism(h), portLocks: h.portLocks, timestamps: h.timestamps }
      : { kind: 'os', text: osMechanism(lockDirOf(table.releaseDir), notInServiceWhy(h)), lockDir: lockDirOf(table.releaseDir), portLocks: h.portLocks, timestamps: h.timestamps },
    geometry: { requestedLocks: h.requestedLocks, locks: h.capacity, groups: h.ngroups, perGroup: h.perGroup, entrySize: h.entrySize, totalSize: h.totalSize },
  };
  // Streamed: everything known up front, then the locks a batch at a time,
  // then the figures that need the whole scan (key order is free in JSON).
  const text = JSON.stringify(head);
  writeFd(1, text.slice(0, -1));
  const c = noCounts();
  if (cmd.locks) writeFd(1, ',"locks":[');
  let first = true;
  for (const batch of table.rows()) {
    addBatch(c, batch);
    if (!cmd.locks) continue;
    let chunk = '';
    for (const r of batch) {
      chunk += `${first ? '\n' : ',\n'}${rowJson(r)}`;
      first = false;
    }
    writeFd(1, chunk);
  }
  if (cmd.locks) writeFd(1, '\n]');
  const summary = {
    locksMaximum: h.capacity,
    groups: h.ngroups,
    perGroup: h.perGroup,
    inUse: c.held,
    queued: c.waiting,
    maxInOneGroup: c.maxInGroup,
  };
  let extra = '';
  if (cmd.locks && inService(h)) {
    const os = osLocksBesideTable(table.releaseDir);
    extra += `,"osLocks":[${os.rows.map(osRowJson).join(',')}]`;
  }
  if (sessions) extra += `,"clientSessions":${JSON.stringify(sessions.json)}`;
  writeFd(1, `,"memory":${JSON.stringify(memory(h, c.entries))},"summary":${JSON.stringify(summary)}${extra}}\n`);
}
