// proclocks.ts - what the kernel says about file locks: /proc/locks and the
// "lock:" lines of /proc/<pid>/fdinfo/<fd>.
//
// Owns: parsing those files, and naming the process behind an OFD lock.
// Does not own: taking locks (src/locks/oslock.ts) or display (src/cli/display.ts).
//
// The trap this module exists for: /proc/locks shows an OFD lock's pid as -1,
// because an open file description belongs to no single process. The lock
// does show in /proc/<pid>/fdinfo/<fd> of every process that has that
// description open, so a scan of fdinfo names its holders (a lock server's
// pid for remote clients' locks). Classic (POSIX) locks carry their pid.
import fs from 'node:fs';

export type KernelLockKind = 'POSIX' | 'OFDLCK' | 'FLOCK' | 'LEASE' | 'DELEG' | 'OTHER';

export interface KernelLock {
  /** the line's id in /proc/locks (unique only within one read) */
  id: number;
  kind: KernelLockKind;
  mode: 'read' | 'write';
  /** holder pid; -1 for OFD locks (see ofdHolders) */
  pid: number;
  /** device of the locked file, as major:minor numbers */
  major: number;
  minor: number;
  inode: bigint;
  start: bigint;
  /** last byte locked, inclusive; null = to the end of the file and beyond */
  end: bigint | null;
  /** a request waiting for this lock ("->" lines) */
  blocked: boolean;
}

// "1: POSIX  ADVISORY  WRITE 22188 fe:00:2146461 100 100"
// "2: -> OFDLCK ADVISORY  READ -1 fe:00:2146461 200 EOF"
const LINE = /^(\d+):\s+(->\s+)?(\S+)\s+\S+\s+(READ|WRITE|UNLCK|\S+)\s+(-?\d+)\s+([0-9a-f]+):([0-9a-f]+):(\d+)\s+(\d+)\s+(\d+|EOF)\s*$/;

export function parseLockLine(line: string): KernelLock | undefined {
  const m = LINE.exec(line.trim());
  if (!m) return undefined;
  const kind = (['POSIX', 'OFDLCK', 'FLOCK', 'LEASE', 'DELEG'] as const).find((k) => k === m[3]) ?? 'OTHER';
  return {
    id: Number(m[1]),
    blocked: m[2] !== undefined,
    kind,
    mode: m[4] === 'WRITE' ? 'write' : 'read',
    pid: Number(m[5]),
    major: parseInt(m[6] ?? '0', 16),
    minor: parseInt(m[7] ?? '0', 16),
    inode: BigInt(m[8] ?? '0'),
    start: BigInt(m[9] ?? '0'),
    end: m[10] === 'EOF' ? null : BigInt(m[10] ?? '0'),
  };
}

/** Every lock the kernel knows (empty if /proc/locks cannot be read). */
export function readProcLocks(text?: string): KernelLock[] {
  let body = text;
  if (body === undefined) {
    try {
      body = fs.readFileSync('/proc/locks', 'utf8');
    } catch {
      return [];
    }
  }
  const out: KernelLock[] = [];
  for (const line of body.split('\n')) {
    const l = parseLockLine(line);
    if (l) out.push(l);
  }
  return out;
}

/** Identity of a lock independent of the pid column: kind, mode, file, range. */
export function lockSignature(l: KernelLock): string {
  return `${l.kind} ${l.mode} ${l.major}:${l.minor}:${l.inode} ${l.start} ${l.end ?? 'EOF'}`;
}

/**
 * The processes that have each OFD lock's open file description open, from
 * /proc/<pid>/fdinfo. Keyed by lockSignature(). Only files whose inode is in
 * `inodes` (if given) are looked at, to keep the scan cheap. Processes we may
 * not read are skipped.
 */
export function ofdHolders(inodes?: ReadonlySet<bigint>): Map<string, number[]> {
  const out = new Map<string, number[]>();
  let pids: string[];
  try {
    pids = fs.readdirSync('/proc').filter((n) => /^\d+$/.test(n));
  } catch {
    return out;
  }
  for (const pid of pids) {
    let fds: string[];
    try {
      fds = fs.readdirSync(`/proc/${pid}/fdinfo`);
    } catch {
      continue;
    }
    for (const fd of fds) {
      let info: string;
      try {
        info = fs.readFileSync(`/proc/${pid}/fdinfo/${fd}`, 'utf8');
      } catch {
        continue;
      }
      if (!info.includes('OFDLCK')) continue;
      for (const line of info.split('\n')) {
        if (!line.startsWith('lock:')) continue;
        const l = parseLockLine(line.slice(5));
        if (!l || l.kind !== 'OFDLCK') continue;
        if (inodes && !inodes.has(l.inode)) continue;
        const sig = lockSignature(l);
        const list = out.get(sig) ?? [];
        if (!list.includes(Number(pid))) list.push(Number(pid));
        out.set(sig, list);
      }
    }
  }
  return out;
}
