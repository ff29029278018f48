// admin-cli.ts - the operator's commands over the listener's admin socket
// (src/server/admin.ts): the "Client sessions" section of `jdls -dvL`,
// `jdls --sessions`, `jdls --drop-session`, and `release-item-locks`.
//
// Owns: the text and JSON these print, the checks made before asking
// (root or the installation's owner: said plainly, exit 1), and the
// release-item-locks command line. Does not own: the socket, the sessions
// or the release itself (admin.ts, session.ts).
import fs from 'node:fs';
import { adminCall, AdminUnavailable, adminAllowed } from '../server/admin.js';
import { SESSION_LOCKS_LISTED, type AdminAnswer, type AdminRequest, type ReleasedLock, type SessionView, type SilentLockServer } from '../server/admin-types.js';
import { describeUid } from '../safefile.js';
import { ctime, escapeKey } from './display.js';

/** Why this user may not use the admin socket, or undefined. */
export function notAllowed(releaseDir: string): string | undefined {
  const me = process.geteuid?.() ?? 0;
  let owner: number;
  try {
    owner = fs.statSync(releaseDir).uid;
  } catch (e) {
    return `cannot look at ${releaseDir}: ${(e as Error).message}`;
  }
  if (adminAllowed(me, owner)) return undefined;
  return `only root and the installation's owner (${describeUid(owner)}) may do this; you are ${describeUid(me)}`;
}

/** address:port, IPv6 in brackets (its colons would run into the port's). */
const hostPort = (addr: string, port: number): string => (addr.includes(':') ? `[${addr}]:${port}` : `${addr}:${port}`);
const keyText = (key: string): string => escapeKey(Buffer.from(key, 'latin1'));
const modeName = (m: 'read' | 'write'): string => (m === 'write' ? 'WRITE' : 'READ');

function silentText(silent: SilentLockServer[]): string {
  return silent.map((s) => `  lock-server process ${s.lockServer} did not answer: ${s.why}\n`).join('');
}

/** How many locks of one session the text lists before "... n more". */
const LOCKS_SHOWN = 20;

export const SESSION_HEADER = 'ls-pid/conn  client address          port  pid      connected since           locks  waiting for\n';

/** One line per client session, its locks indented below it. */
export function sessionsText(sessions: SessionView[], silent: SilentLockServer[]): string {
  let s = `\nClient sessions (${sessions.length}; lock-server pid/connection, the client's address, jBASE port and pid)\n`;
  if (sessions.length) s += SESSION_HEADER;
  for (const v of sessions) {
    const w = v.waiting[0];
    const waiting = w ? `${modeName(w.mode)} ${w.inode}/${w.dev} ${keyText(w.key)}${w.kind === 'os' ? ' (OSLOCKS)' : ''} since ${ctime(w.sinceMs).slice(11, 19)}${v.waiting.length > 1 ? ` (+${v.waiting.length - 1})` : ''}`
      : v.rangeWaits ? `${v.rangeWaits} range lock(s)` : '-';
    s += `${`${v.lockServer}/${v.conn}`.padEnd(13)}${hostPort(v.addr, v.remotePort).padEnd(24)}${String(v.clientPort ?? '-').padEnd(6)}${String(v.clientPid ?? '-').padEnd(9)}${ctime(v.connectedMs).padEnd(26)}${String(v.lockCount).padEnd(7)}${waiting}\n`;
    for (const l of v.locks.slice(0, LOCKS_SHOWN)) {
      s += `    ${modeName(l.mode).padEnd(6)}${l.kind === 'os' ? 'OSLOCKS ' : 'record  '}${l.inode.padStart(8, '0')} ${l.dev.padEnd(6)}token ${(l.token ?? '-').padEnd(20)}${keyText(l.key)}\n`;
    }
    if (v.lockCount > LOCKS_SHOWN) s += `    ... ${v.lockCount - LOCKS_SHOWN} more (jdls --sessions --json lists up to ${SESSION_LOCKS_LISTED})\n`;
    if (v.ranges) s += `    ${v.ranges} byte-range lock file(s) (BINARY)\n`;
  }
  return s + silentText(silent);
}

/**
 * The sessions for -dvL: the text section (or the reason they cannot be
 * listed) and the JSON value.
 */
export async function sessionsForDisplay(releaseDir: string): Promise<{ text: string; json: unknown }> {
  const why = notAllowed(releaseDir);
  if (why) return { text: `\nClient sessions:     not listed: ${why}\n`, json: { listed: false, why } };
  try {
    const a = await adminCall(releaseDir, { cmd: 'sessions' });
    if (!a.ok) return { text: `\nClient sessions:     not listed: ${a.error}\n`, json: { listed: false, why: a.error } };
    if (a.cmd !== 'sessions') throw new AdminUnavailable('unexpected answer');
    return { text: sessionsText(a.sessions, a.silent), json: { listed: true, sessions: a.sessions, silent: a.silent } };
  } catch (e) {
    const msg = (e as Error).message;
    return { text: `\nClient sessions:     not listed: ${msg}\n`, json: { listed: false, why: msg } };
  }
}

interface Out {
  out: (s: string) => void;
  err: (s: string) => void;
}

async function ask(releaseDir: string, req: AdminRequest, io: Out): Promise<Exclude<AdminAnswer, { ok: false }> | undefined> {
  const why = notAllowed(releaseDir);
  if (why) {
    io.err(`refused: ${why}\n`);
    return undefined;
  }
  try {
    const a = await adminCall(releaseDir, req);
    if (!a.ok) {
      io.err(`${a.error}\n`);
      return undefined;
    }
    return a;
  } catch (e) {
    io.err(`${(e as Error).message}\n`);
    return undefined;
  }
}

/** `jdls --sessions [--json]`. */
export async function listSessions(releaseDir: string, json: boolean, io: Out): Promise<number> {
  const a = await ask(releaseDir, { cmd: 'sessions' }, io);
  if (!a || a.cmd !== 'sessions') return 1;
  io.out(json ? `${JSON.stringify(a)}\n` : sessionsText(a.sessions, a.silent).replace(/^\n/, ''));
  return 0;
}

/** `jdls --drop-session PID/CONN | --port N [--addr A]`. */
export async function dropSession(releaseDir: string, req: Extract<AdminRequest, { cmd: 'drop' }>, json: boolean, io: Out): Promise<number> {
  const a = await ask(releaseDir, req, io);
  if (!a || a.cmd !== 'drop') return 1;
  if (json) io.out(`${JSON.stringify(a)}\n`);
  else {
    for (const d of a.dropped)
      io.out(`dropped client session ${d.lockServer}/${d.conn}: ${hostPort(d.addr, d.remotePort)} port ${d.clientPort ?? '-'} pid ${d.clientPid ?? '-'} (${d.program || '-'} on ${d.host || '-'}), ${d.lockCount} lock${d.lockCount === 1 ? '' : 's'} released\n`);
    io.out(silentText(a.silent));
  }
  return a.dropped.length > 0 ? 0 : 1;
}

export const RELEASED_HEADER = 'owner                                   mode   i-node   dev    token                file / key\n';

function ownerText(r: ReleasedLock): string {
  const o = r.owner;
  if (o.kind === 'local') return `local pid ${o.pid} port ${o.port}`;
  return `${o.addr} port ${o.port} pid ${o.pid} (${o.lockServer}/${o.conn}${o.unreachable ? ', unreachable' : ''})`;
}

export function releasedText(rs: ReleasedLock[]): string {
  let s = `${rs.length} lock${rs.length === 1 ? '' : 's'} released\n`;
  if (rs.length) s += RELEASED_HEADER;
  for (const r of rs)
    s += `${ownerText(r).padEnd(40)}${modeName(r.mode).padEnd(7)}${r.inode.padStart(8, '0')} ${r.dev.padEnd(7)}${(r.token ?? '-').padEnd(21)}${r.file ? `${r.file} ` : ''}${keyText(r.key)}${r.kind === 'os' ? ' (OSLOCKS)' : ''}\n`;
  return s;
}

export const RELEASE_USAGE = `release-item-locks - release stuck record locks (root or the installation's owner)

Usage:
  release-item-locks -p PORT                  every lock of that jBASE port
  release-item-locks -f FILE {-k KEY}         the locks in FILE (one key with -k)
  release-item-locks -i INODE,DEV {-k KEY}    the same, by file identity
  release-item-locks -p PORT -f FILE {-k KEY} both must match
  options: --json (the answer as JSON), -h (this help)

FILE is an application file name as the info records know it
(JBCRELEASEDIR/proc/info: show-item-locks lists them; the last path
component is enough) or a path on this host. The locks of remote clients are
released by their lock-server processes (the client's later unlock is
answered as for a lock not held); those of local processes in the lock
table. The next grant of a released key carries a higher fencing token.
Every release is logged in jdls-listener.log with who asked. Needs the lock
listener (jdls -ib) running; exit 0 when something was released, 1 when
nothing was (or refused), 2 for a usage error.
`;

export type ReleaseArgs = { help: true } | { help: false; json: boolean; req: Extract<AdminRequest, { cmd: 'release' }> };

export function parseReleaseArgs(argv: readonly string[]): ReleaseArgs | string {
  const req: Extract<AdminRequest, { cmd: 'release' }> = { cmd: 'release' };
  let json = false;
  for (let i = 0; i < argv.length; i++) {
    const tok = (argv[i] ?? '').replace(/^\u2013/, '-');
    if (tok === '-h' || tok === '--help') return { help: true };
    if (tok === '--json') {
      json = true;
      continue;
    }
    const m = /^-([pfik])(.*)$/.exec(tok);
    if (!m) return `unexpected argument '${tok}'`;
    const opt = m[1] ?? '';
    let value = m[2] ?? '';
    if (value === '') {
      const next = argv[i + 1];
      if (next === undefined) return `option -${opt} needs a value`;
      value = next;
      i++;
    }
    if (opt === 'p') {
      if (!/^\d+$/.test(value) || Number(value) > 0xffffffff) return `-p needs a port number; got '${value}'`;
      if (req.port !== undefined) return 'option -p given twice';
      req.port = Number(value);
    } else if (opt === 'f') {
      if (req.file !== undefined || req.inode !== undefined) return 'give one file (-f or -i)';
      req.file = value;
    } else if (opt === 'i') {
      const im = /^(\d{1,20}),(-?\d{1,20})$/.exec(value);
      if (!im) return `-i needs INODE,DEV (decimal, as jdls -dvL shows them); got '${value}'`;
      if (req.file !== undefined || req.inode !== undefined) return 'give one file (-f or -i)';
      req.inode = im[1] ?? '';
      req.dev = im[2] ?? '';
    } else {
      if (req.key !== undefined) return 'option -k given twice';
      req.key = value;
    }
  }
  if (req.key !== undefined && req.file === undefined && req.inode === undefined) return '-k needs its file: -f FILE or -i INODE,DEV';
  if (req.port === undefined && req.file === undefined && req.inode === undefined) return 'give -p PORT, -f FILE (or -i INODE,DEV), or both';
  return { help: false, json, req };
}

/** release-item-locks: returns the exit code. */
export async function releaseItemLocks(releaseDir: string, argv: readonly string[], io: Out): Promise<number> {
  const p = parseReleaseArgs(argv);
  if (typeof p === 'string') {
    io.err(`release-item-locks: ${p}\ntry release-item-locks -h\n`);
    return 2;
  }
  if (p.help) {
    io.out(RELEASE_USAGE);
    return 0;
  }
  const a = await ask(releaseDir, p.req, { out: io.out, err: (s) => io.err(`release-item-locks: ${s}`) });
  if (!a || a.cmd !== 'release') return 1;
  if (p.json) io.out(`${JSON.stringify(a)}\n`);
  else {
    io.out(releasedText(a.released));
    for (const n of a.notes) io.out(`note: ${n}\n`);
    io.out(silentText(a.silent));
  }
  return a.released.length > 0 ? 0 : 1;
}
