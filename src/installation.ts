// installation.ts - what names an installation: its directory
// (JBCRELEASEDIR, or the per-user default), the path of its lock table in
// /dev/shm, which processes have that table mapped, and which name it in
// their environment.
//
// The rule for the default and the path lives in C (jdls_release_dir,
// jdls_table_path) because the shim and the C fixtures need it too; this
// module only asks the addon.
import fs from 'node:fs';
import path from 'node:path';
import { native } from './native.js';
import { JdlsError } from './errors.js';

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
