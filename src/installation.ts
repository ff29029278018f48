// installation.ts - what names an installation: its directory
// (JBCRELEASEDIR, or the per-user default), the path of its lock table in
// /dev/shm, which processes have that table mapped, and which name it in
// their environment.
//
// The rule for the default and the path lives in C (jdls_release_dir,
// jdls_table_path) because the shim and the C fixtures need it too; this
// module only asks the addon. Whether a directory may be used at all is
// decided here (checkReleaseDir), for every jdls process.
import fs from 'node:fs';
import path from 'node:path';
import { native } from './native.js';
import { JdlsError } from './errors.js';
import { describeUid, modeText } from './safefile.js';

/** The installation directory: $JBCRELEASEDIR, else $HOME/.jdls, else /tmp/jdls-<uid>. */
export function releaseDir(env: NodeJS.ProcessEnv = process.env): string {
  const set = env['JBCRELEASEDIR'];
  if (set) return path.resolve(set);
  if (env === process.env) {
    const d = native.releaseDir();
    if (d) return path.resolve(d);
  }
  const home = env['HOME'];
  return home ? path.join(home, '.jdls') : `/tmp/jdls-${process.getuid?.() ?? 0}`;
}

/** The mode of an installation directory jdls makes: the service's user, and the jdls group (the directory's group) may read. */
export const DIR_MODE = 0o750;

/**
 * Refuse an installation directory that another user could have prepared or
 * can change under us (docs/security.md, "The installation directory"):
 *
 * - the directory must be owned by root or by this process's effective user
 *   (the service's user), and not be writable by others (o+w, sticky or
 *   not: anyone could plant files in it);
 * - every directory above it must be owned by root or by this user, and
 *   not writable by others unless sticky (/tmp is fine: nobody can rename or
 *   remove what another put there), or its owner could swap the directory;
 * - a symbolic link on the way must be owned by root or by this user (in a
 *   sticky /tmp, a link made by someone else is theirs) and is followed, its
 *   target checked the same way.
 *
 * With `create`, missing directories are made (mode 0750) and then checked:
 * if another made the name first, mkdir fails and the check sees theirs.
 * Without it, a directory that does not exist is fine (nothing in it to
 * trust); what does exist above it is checked. Throws JdlsError UNTRUSTED
 * naming the path, its owner and its mode.
 */
export function checkReleaseDir(dir: string, opts: { create?: boolean } = {}): void {
  const want = path.resolve(dir);
  const me = process.geteuid?.() ?? 0;
  const trusted = (uid: number): boolean => uid === 0 || uid === me;
  const refuse = (p: string, why: string, st?: fs.Stats): JdlsError =>
    new JdlsError(
      'UNTRUSTED',
      `installation directory ${want} refused: ${p === want ? 'it' : p} ${why}` +
        (st ? ` (owner ${describeUid(st.uid)}, mode ${modeText(st.mode)})` : '') +
        `; it must be owned by root or by the user running jdls (${describeUid(me)}) and not be writable by others (docs/security.md)`,
    );
  let todo = want;
  for (let hops = 0; ; hops++) {
    if (hops > 40) throw refuse(want, 'has too many symbolic links on its path');
    const parts = todo.split('/').filter(Boolean);
    let cur = '/';
    let restart: string | undefined;
    for (let i = 0; i <= parts.length; i++) {
      if (i > 0) cur = path.join(cur, parts[i - 1] ?? '');
      const last = i === parts.length;
      let st: fs.Stats;
      try {
        st = fs.lstatSync(cur);
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if (code !== 'ENOENT') throw refuse(cur, `cannot be checked: ${(e as Error).message}`);
        if (!opts.create) return;
        try {
          fs.mkdirSync(cur, { mode: DIR_MODE });
        } catch (e2) {
          if ((e2 as NodeJS.ErrnoException).code !== 'EEXIST') throw refuse(cur, `cannot be made: ${(e2 as Error).message}`);
        }
        st = fs.lstatSync(cur);
      }
      if (st.isSymbolicLink()) {
        if (!trusted(st.uid)) throw refuse(cur, 'is a symbolic link owned by another user', st);
        let real: string;
        try {
          real = fs.realpathSync(cur);
        } catch (e) {
          throw refuse(cur, `is a symbolic link that leads nowhere: ${(e as Error).message}`);
        }
        restart = path.join(real, ...parts.slice(i));
        break;
      }
      if (!st.isDirectory()) throw refuse(cur, 'is not a directory', st);
      if (!trusted(st.uid)) throw refuse(cur, last ? 'is owned by another user' : 'is a directory above it owned by another user, who could replace it', st);
      if (st.mode & 0o002 && (last || !(st.mode & 0o1000)))
        throw refuse(cur, last ? 'is writable by others' : 'is a directory above it writable by others and not sticky: anyone could replace it', st);
    }
    if (restart === undefined) return;
    todo = restart;
  }
}

/** The shared-memory file that holds the installation's lock table. */
export function tablePath(dir: string = releaseDir()): string {
  const p = native.tablePath(dir);
  if (!p) throw new JdlsError('BAD_ARGUMENT', `installation directory path too long: ${dir}`);
  return p;
}

/**
 * The installation's OS-route marker (<table path>.os): every process that
 * locks records as OS file locks because no table was in service holds a
 * read lock on it (native/common/jdls_service.c).
 */
export function markerPath(shmPath: string): string {
  return `${shmPath}.os`;
}

/**
 * Processes that have the OS-route marker open: those that keep a table
 * from entering service. From /proc/<pid>/fd, except this process.
 */
export function osRouteProcesses(shmPath: string, exceptPid = process.pid): AttachedProcess[] {
  const marker = markerPath(shmPath);
  const out: AttachedProcess[] = [];
  for (const name of safeReaddir('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const pid = Number(name);
    if (pid === exceptPid) continue;
    const fds = safeReaddir(`/proc/${pid}/fd`);
    if (!fds.some((fd) => safeReadlink(`/proc/${pid}/fd/${fd}`) === marker)) continue;
    out.push({ pid, command: commandOf(pid) });
  }
  return out;
}

function safeReaddir(dir: string): string[] {
  try {
    return fs.readdirSync(dir);
  } catch {
    return [];
  }
}

function safeReadlink(p: string): string | undefined {
  try {
    return fs.readlinkSync(p);
  } catch {
    return undefined;
  }
}

function commandOf(pid: number): string {
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean).join(' ');
  } catch {
    return '';
  }
}

export interface AttachedProcess {
  pid: number;
  command: string;
}

/**
 * Processes that have the table mapped (from /proc/<pid>/maps), except this
 * one. A crashed process unmaps on exit, so this never names the dead.
 */
export function attachedProcesses(shmPath: string, exceptPid = process.pid): AttachedProcess[] {
  const out: AttachedProcess[] = [];
  let entries: string[];
  try {
    entries = fs.readdirSync('/proc');
  } catch {
    return out;
  }
  for (const name of entries) {
    if (!/^\d+$/.test(name)) continue;
    const pid = Number(name);
    if (pid === exceptPid) continue;
    let maps: string;
    try {
      maps = fs.readFileSync(`/proc/${pid}/maps`, 'utf8');
    } catch {
      continue; // gone, or not ours to read
    }
    if (!maps.includes(shmPath)) continue;
    out.push({ pid, command: commandOf(pid) });
  }
  return out;
}

/**
 * Pids of the processes whose environment names `dir` as JBCRELEASEDIR
 * (not this one): an installation's monitor, listener, lock-server
 * processes and brokers, and whatever else was started for it. Processes
 * whose environment cannot be read (gone, or another user's) are left out.
 */
export function installationProcesses(dir: string): number[] {
  const needle = `JBCRELEASEDIR=${dir}\0`;
  const out: number[] = [];
  for (const name of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(name) || Number(name) === process.pid) continue;
    try {
      if (fs.readFileSync(`/proc/${name}/environ`, 'latin1').includes(needle)) out.push(Number(name));
    } catch {
      /* gone, or not ours to read */
    }
  }
  return out;
}
