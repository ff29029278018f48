// procs.ts - is the process named in the table header (monitor, listener)
// running, and what has it cost? A helper of the command line only.
//
// Owns: reading a process's CPU times. Does not own: liveness itself (the C
// core's jdls_pid_alive decides it for the CLI as for tidy-up and reaping).
import fs from 'node:fs';
import { native } from '../native.js';

/**
 * Is (pid, start) a live process? native.pidAlive compares the start time,
 * so a recycled pid is not mistaken for the monitor. Trap: a background
 * monitor is re-parented to pid 1, and in containers pid 1 often never reaps,
 * so an exited monitor stays a zombie that kill(pid, 0) still finds. A zombie
 * runs no code: it counts as gone (jdls_pid_alive: state Z with one thread).
 */
export function isRunning(pid: number, start: number): boolean {
  if (!pid) return false;
  // Thorough (jdls_pid_alive): a zombie or a recycled pid is gone, a process
  // whose main thread called pthread_exit() (state Z, other threads running)
  // is not. A state check of our own here judged that one dead.
  return native.pidAlive(pid, start);
}

/** User and system CPU seconds of a process, or undefined. */
export function cpuSeconds(pid: number): { usr: number; sys: number } | undefined {
  let stat: string;
  try {
    stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // Fields after the command: state is field 3; utime 14, stime 15. /proc
  // reports them in USER_HZ, which Linux fixes at 100 for user space.
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const utime = Number(f[11]);
  const stime = Number(f[12]);
  if (!Number.isFinite(utime) || !Number.isFinite(stime)) return undefined;
  return { usr: utime / 100, sys: stime / 100 };
}

/** Wait (bounded, polling) until a process is gone. True if it went. */
export async function waitGone(pid: number, start: number, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (isRunning(pid, start)) {
    if (Date.now() >= deadline) return false;
    await new Promise((r) => setTimeout(r, 25));
  }
  return true;
}
