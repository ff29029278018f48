// safefile.ts - opening files in a directory somebody else may have written
// to first, and signalling a process named in a file (docs/security.md,
// "The installation directory").
//
// Owns: how jdls opens its logs, pid files, temporary files and jdls.yaml in
// the installation directory, and the one "is this pid one of our
// processes?" check made before a signal. Does not own: whether the
// directory itself is acceptable (installation.ts, checkReleaseDir) or what
// is in the files (their owners: state.ts, start.ts, broker.ts, config.ts).
//
// The traps, each dodged below:
// - open(O_CREAT|O_APPEND) follows a symbolic link planted at the name: a
//   root process then appends to a file of the planter's choosing. Every open
//   here has O_NOFOLLOW (ELOOP on a link), and the opened file is checked
//   with fstat (regular, one link, a trusted owner): a hard link to someone
//   else's file is refused too (fs.protected_hardlinks is a sysctl, not a
//   guarantee).
// - writeFile(name) truncates whatever is there, a link's target included.
//   Files jdls replaces (pid files) are written to a fresh temporary name
//   (O_CREAT|O_EXCL|O_NOFOLLOW: never an existing file) and renamed over the
//   name: rename replaces a planted link, never writes through it.
// - A pid in a file is only a number: the process may have ended and the pid
//   been given to another (the start time is recorded to tell), and a file
//   can be planted or copied (then the start time may even match: it is in
//   /proc for anyone to read). Before a signal, the process must also be a
//   jdls one (its command line) of a trusted user.
import fs from 'node:fs';
import path from 'node:path';
import crypto from 'node:crypto';
import { JdlsError } from './errors.js';
import { native } from './native.js';

/** Files jdls makes: owner read-write, the jdls group (the directory's) read; others nothing (logs name clients and keys). */
export const FILE_MODE = 0o640;

// libuv adds O_CLOEXEC to every open. O_NONBLOCK: a planted FIFO must not
// hang the opener (ENXIO for a writer without reader; refused by fstat).
const { O_WRONLY, O_RDONLY, O_CREAT, O_EXCL, O_APPEND, O_NOFOLLOW, O_NONBLOCK } = fs.constants;

const euid = (): number => process.geteuid?.() ?? 0;

/** The users whose files jdls trusts in a directory: root and the caller (or the directory's owner, when given). */
export function trustedOwners(dirOwner?: number): readonly number[] {
  return [...new Set([0, dirOwner ?? euid()])];
}

/** "uid 1001 (alice)" (the name from /etc/passwd when it has one). */
export function describeUid(uid: number): string {
  try {
    for (const l of fs.readFileSync('/etc/passwd', 'utf8').split('\n')) {
      const f = l.split(':');
      if (f[2] === String(uid) && f[0]) return `uid ${uid} (${f[0]})`;
    }
  } catch {
    /* no passwd: the number alone */
  }
  return `uid ${uid}`;
}

export const modeText = (mode: number): string => (mode & 0o7777).toString(8).padStart(4, '0');

function untrusted(file: string, why: string): JdlsError {
  return new JdlsError('UNTRUSTED', `${file} ${why}; refused`);
}

function openError(file: string, e: unknown): JdlsError | NodeJS.ErrnoException {
  const err = e as NodeJS.ErrnoException;
  // O_NOFOLLOW on a symbolic link: ELOOP.
  if (err.code === 'ELOOP') return untrusted(file, 'is a symbolic link (planted? jdls never makes one)');
  return err;
}

/** fstat checks of a file jdls opened: regular, one name, a trusted owner, nobody else may write it. */
function checkOpened(fd: number, file: string, owners: readonly number[]): void {
  const st = fs.fstatSync(fd);
  if (!st.isFile()) throw untrusted(file, 'is not a regular file');
  if (st.nlink !== 1) throw untrusted(file, `has ${st.nlink} names (a hard link to another file?)`);
  if (!owners.includes(st.uid)) throw untrusted(file, `is owned by ${describeUid(st.uid)}, not by ${owners.map(describeUid).join(' or ')}`);
  if (st.mode & 0o002) throw untrusted(file, `is writable by others (mode ${modeText(st.mode)})`);
}

/**
 * Open a log file for appending (made 0640 if absent); the descriptor is the
 * caller's. Throws JdlsError UNTRUSTED for a link, a non-regular file, a
 * hard-linked file or one owned by another user.
 */
export function openLog(file: string, owners: readonly number[] = trustedOwners()): number {
  let fd: number;
  try {
    fd = fs.openSync(file, O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW | O_NONBLOCK, FILE_MODE);
  } catch (e) {
    throw openError(file, e);
  }
  try {
    checkOpened(fd, file, owners);
  } catch (e) {
    fs.closeSync(fd);
    throw e;
  }
  return fd;
}

/**
 * Read a small file that decides something (a pid file, jdls.yaml), or
 * undefined if there is none. Throws JdlsError UNTRUSTED if it is a link,
 * not a regular file, owned by someone not in `owners` or writable by others.
 */
export function readTrusted(file: string, owners: readonly number[] = trustedOwners()): string | undefined {
  let fd: number;
  try {
    fd = fs.openSync(file, O_RDONLY | O_NOFOLLOW | O_NONBLOCK);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw openError(file, e);
  }
  try {
    checkOpened(fd, file, owners);
    return fs.readFileSync(fd, 'utf8');
  } finally {
    fs.closeSync(fd);
  }
}

/** A new temporary file beside `file`, created exclusively (never an existing one), holding `text`; returns its name. */
function writeTemp(file: string, text: string, durable = false): string {
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.${crypto.randomBytes(6).toString('hex')}.tmp`);
  const fd = fs.openSync(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, FILE_MODE);
  try {
    fs.writeSync(fd, text);
    if (durable) fs.fsyncSync(fd);
  } catch (e) {
    fs.closeSync(fd);
    fs.rmSync(tmp, { force: true });
    throw e;
  }
  fs.closeSync(fd);
  return tmp;
}

/**
 * Replace `file` with `text` atomically (temporary file, then rename over
 * it: a planted link is replaced, not followed). `durable`: on disk before
 * this returns (the data, then the directory entry, are fsync'ed) - for a
 * record that must survive a power cut (the token epoch: a lost bump would
 * hand out tokens again).
 */
export function replaceFile(file: string, text: string, opts: { durable?: boolean } = {}): void {
  const tmp = writeTemp(file, text, opts.durable);
  try {
    fs.renameSync(tmp, file);
  } catch (e) {
    fs.rmSync(tmp, { force: true });
    throw e;
  }
  if (opts.durable) {
    const dfd = fs.openSync(path.dirname(file), 'r');
    try {
      fs.fsyncSync(dfd);
    } finally {
      fs.closeSync(dfd);
    }
  }
}

/**
 * Create `file` holding `text` only if no file of that name exists (EEXIST
 * otherwise, as an Error with code EEXIST). Atomic in content too: link(2)
 * of a complete temporary file, so a reader never sees it half written.
 */
export function createExclusive(file: string, text: string): void {
  const tmp = writeTemp(file, text);
  try {
    fs.linkSync(tmp, file);
  } finally {
    fs.rmSync(tmp, { force: true });
  }
}

/** What a pid file records: the pid and its start time (native.pidStart), and whatever else its writer adds. */
export interface PidRecord {
  pid: number;
  start: number;
  [k: string]: unknown;
}

/** A pid file's record, or undefined if there is none, it is not ours to trust (see readTrusted) or it is not a record. */
export function readPidRecord(file: string, owners: readonly number[] = trustedOwners()): PidRecord | undefined {
  let text: string | undefined;
  try {
    text = readTrusted(file, owners);
  } catch {
    return undefined;
  }
  if (text === undefined) return undefined;
  try {
    const o = JSON.parse(text) as Partial<PidRecord> | null;
    if (!o || typeof o.pid !== 'number' || typeof o.start !== 'number' || !(o.pid > 0)) return undefined;
    return o as PidRecord;
  } catch {
    return undefined;
  }
}

/** Write a pid file for this process (pid, start time, `extra`), replacing any. */
export function writePidRecord(file: string, extra: Record<string, unknown> = {}): PidRecord {
  const rec: PidRecord = { ...extra, pid: process.pid, start: native.pidStart(process.pid) };
  replaceFile(file, `${JSON.stringify(rec)}\n`);
  return rec;
}

/** Is this command line (NUL-separated, from /proc/<pid>/cmdline) a jdls process? */
export function isJdlsCommand(cmdline: string): boolean {
  const args = cmdline.split('\0').filter(Boolean);
  // The daemons set process.title ('jdls -ib (lock monitor)'), which
  // replaces the whole command line; others run `node [flags] .../jdls.js`
  // or the installed `jdls` link.
  const first = args[0] ?? '';
  if (first === 'jdls' || first.startsWith('jdls ')) return true;
  return args.slice(0, 6).some((a) => /^jdls(\.js)?$/.test(path.basename(a)));
}

/**
 * /proc/<pid>/cmdline. Trap: a process whose main thread called
 * pthread_exit() (others still running: alive, see jdls_pid_alive) has an
 * empty one, as the kernel reads it through the main thread's memory map,
 * gone with it; any other thread's /proc/<pid>/task/<tid>/cmdline still has it.
 */
function commandLine(pid: number): string {
  const main = fs.readFileSync(`/proc/${pid}/cmdline`, 'latin1');
  if (main) return main;
  for (const tid of fs.readdirSync(`/proc/${pid}/task`)) {
    try {
      const c = fs.readFileSync(`/proc/${pid}/task/${tid}/cmdline`, 'latin1');
      if (c) return c;
    } catch {
      /* that thread ended */
    }
  }
  return '';
}

/** Why (pid, start) is not one of our processes, or undefined when it is. */
export function notOurProcess(pid: number, start: number, owners: readonly number[] = trustedOwners()): string | undefined {
  if (!Number.isInteger(pid) || pid <= 0) return 'no pid';
  if (pid === process.pid) return start === native.pidStart(pid) ? undefined : 'not running';
  if (!start) return 'no start time recorded';
  // Same start time: not a process that got the pid after ours ended.
  if (!native.pidAlive(pid, start)) return 'not running';
  let cmdline: string;
  let status: string;
  try {
    cmdline = commandLine(pid);
    status = fs.readFileSync(`/proc/${pid}/status`, 'latin1');
  } catch {
    return 'not running';
  }
  if (!isJdlsCommand(cmdline)) return `not a jdls process (${cmdline.split('\0').filter(Boolean).join(' ').slice(0, 80) || '?'})`;
  // Uid: real, effective, saved, filesystem.
  const uid = Number(/^Uid:\s+\d+\s+(\d+)/m.exec(status)?.[1] ?? NaN);
  if (!owners.includes(uid)) return `run by ${describeUid(uid)}`;
  return undefined;
}

/** Is (pid, start) a live jdls process of a trusted user: one we may signal? */
export function isOurProcess(pid: number, start: number, owners?: readonly number[]): boolean {
  return notOurProcess(pid, start, owners) === undefined;
}
