// procscan.ts - finding and killing the processes a test run left, by pid:
// what the worker-exit cleanup (installations.ts) and the final sweep after
// the whole run (scripts/sweep.mjs, which imports the compiled module) share.
// No side effects on import.
//
// A process belongs to a test installation when its environment or its
// command line names the installation's directory (every child of a test
// gets JBCRELEASEDIR=<dir> or the run's JDLS_TEST_ROOT, and the daemons jdls
// starts keep their environment), or when its pid and start time are in the
// installation's registry file (REGISTRY, written when a test starts it).
import fs from 'node:fs';
import path from 'node:path';

/** The registry file of an installation: one "pid starttime" line per process a test started. */
export const REGISTRY = '.test-pids';

export interface Found {
  pid: number;
  /** the command line on one line, at most 160 characters (for the report) */
  cmd: string;
}

/** A command line (NUL-separated) as one short report line. */
export function oneLine(cmdline: string): string {
  const s = cmdline.split('\0').filter(Boolean).join(' ').replace(/\s+/g, ' ').trim();
  return s.length > 160 ? `${s.slice(0, 157)}...` : s;
}

/** Field 22 of /proc/<pid>/stat (start time, clock ticks since boot), or undefined when gone. */
export function startTime(pid: number): string | undefined {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command (which may hold spaces and parentheses).
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return rest[19];
  } catch {
    return undefined;
  }
}

/**
 * Alive: not a zombie (a zombie is its parent's to reap, and cannot be
 * killed). Trap: a multi-threaded process being killed (or whose main
 * thread called pthread_exit) shows its main thread as Z while other
 * threads still run - and its descriptors (a listening socket, locks) live
 * until the last thread has gone. It is gone only when no thread is left,
 * as jdls_pid_alive judges.
 */
export function processAlive(pid: number): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const state = stat.charAt(stat.lastIndexOf(')') + 2);
    if (state === '') return false;
    if (state !== 'Z' && state !== 'X') return true;
    const threads = /^Threads:\s+(\d+)/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    return threads !== null && Number(threads[1]) > 1;
  } catch {
    return false;
  }
}

/** This process and its ancestors: never ours to kill. */
function selfAndAncestors(): Set<number> {
  const out = new Set<number>();
  let pid = process.pid;
  while (pid > 1 && !out.has(pid)) {
    out.add(pid);
    try {
      const m = /^PPid:\s*(\d+)$/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
      pid = m ? Number(m[1]) : 0;
    } catch {
      break;
    }
  }
  return out;
}

function readText(file: string): string {
  try {
    return fs.readFileSync(file, 'latin1');
  } catch {
    return '';
  }
}

/** Live processes, not this one nor its ancestors, whose environment or command line contains one of `needles`. */
export function processesNaming(needles: string[]): Found[] {
  if (needles.length === 0) return [];
  const skip = selfAndAncestors();
  const out: Found[] = [];
  for (const name of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const pid = Number(name);
    if (skip.has(pid)) continue;
    const cmd = readText(`/proc/${pid}/cmdline`);
    const env = readText(`/proc/${pid}/environ`);
    if (needles.some((n) => cmd.includes(n) || env.includes(n)) && processAlive(pid)) {
      out.push({ pid, cmd: oneLine(cmd) });
    }
  }
  return out;
}

/** The registered processes of installation `dir` still alive as the same process (pid and start time). */
export function registeredAlive(dir: string): Found[] {
  const skip = selfAndAncestors();
  const out: Found[] = [];
  for (const line of readText(path.join(dir, REGISTRY)).split('\n')) {
    const [p, st] = line.trim().split(' ');
    const pid = Number(p);
    if (!(pid > 0) || skip.has(pid) || !processAlive(pid) || startTime(pid) !== st) continue;
    out.push({ pid, cmd: oneLine(readText(`/proc/${pid}/cmdline`)) });
  }
  return out;
}

/** Append pid (with its start time) to dir's registry. */
export function register(dir: string, pid: number): void {
  const st = startTime(pid);
  if (st === undefined) return;
  try {
    fs.appendFileSync(path.join(dir, REGISTRY), `${pid} ${st}\n`);
  } catch {
    /* the directory is gone: the test is over */
  }
}

/** SIGKILL each (by pid); the ones the signal reached. */
export function killAll(found: Found[]): Found[] {
  const hit: Found[] = [];
  const seen = new Set<number>();
  for (const f of found) {
    if (seen.has(f.pid)) continue;
    seen.add(f.pid);
    try {
      process.kill(f.pid, 'SIGKILL');
      hit.push(f);
    } catch {
      /* gone meanwhile */
    }
  }
  return hit;
}
