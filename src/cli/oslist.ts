// oslist.ts - the OS file-lock mechanism's record locks, for `jdls -dvL`.
//
// Owns: finding the jlock_* files of a lock directory and the kernel's locks
// on them (/proc/locks, OFD holders named from fdinfo), as display rows.
// Does not own: the lock file naming (src/locks/oslock.ts) or the parsing of
// /proc (src/locks/proclocks.ts).
//
// What the kernel cannot say: the key. A record lock is one byte at a hash
// of the key, so a row shows the byte; the holder's pid, the lock's mode and
// the record's file identity (from the lock file's name) are exact. For OFD
// locks the pid is the process holding the description open (a lock-server
// process for remote clients' locks).
import fs from 'node:fs';
import path from 'node:path';
import { readProcLocks, ofdHolders, lockSignature, type KernelLock } from '../locks/proclocks.js';
import { checkLockDir } from '../locks/lockdir.js';

export interface OsRecordLockRow {
  /** holder pid (-1: an OFD lock whose holder could not be named) */
  pid: number;
  kind: 'OFD' | 'POSIX' | 'FLOCK' | 'OTHER';
  mode: 'read' | 'write';
  /** the record's file identity, from the lock file's name (low 32 bits; dev -1 = through a lock server) */
  inode: number;
  dev: number;
  /** the byte locked (a hash of the key), or the range for whole-file locks (FILELOCK) */
  start: bigint;
  end: bigint | null;
  blocked: boolean;
  lockFile: string;
}

const NAME = /^jlock_([0-9a-f]{8})_([0-9a-f]{8})$/;

// Linux's dev_t encoding (glibc gnu_dev_major/minor).
const major = (d: bigint): number => Number(((d >> 8n) & 0xfffn) | ((d >> 32n) & ~0xfffn));
const minor = (d: bigint): number => Number((d & 0xffn) | ((d >> 12n) & ~0xffn));

export function osRecordLocks(lockDir: string): { rows: OsRecordLockRow[]; files: number } {
  // A directory someone else controls lists what they chose to put there:
  // refused as the mechanisms refuse it (src/locks/lockdir.ts).
  const refused = checkLockDir(lockDir, 'lock directory');
  if (refused) throw refused;
  let names: string[];
  try {
    names = fs.readdirSync(lockDir).filter((n) => NAME.test(n));
  } catch {
    return { rows: [], files: 0 };
  }
  const byId = new Map<string, string>();
  for (const n of names) {
    try {
      const st = fs.statSync(path.join(lockDir, n), { bigint: true });
      byId.set(`${major(st.dev)}:${minor(st.dev)}:${st.ino}`, n);
    } catch {
      /* removed meanwhile */
    }
  }
  const mine: [KernelLock, string][] = [];
  for (const l of readProcLocks()) {
    const n = byId.get(`${l.major}:${l.minor}:${l.inode}`);
    if (n) mine.push([l, n]);
  }
  const needNames = mine.some(([l]) => l.kind === 'OFDLCK');
  const holders = needNames ? ofdHolders(new Set(mine.map(([l]) => l.inode))) : new Map<string, number[]>();
  const rows = mine.map(([l, n]): OsRecordLockRow => {
    const m = NAME.exec(n);
    const inode = parseInt(m?.[1] ?? '0', 16);
    const devRaw = parseInt(m?.[2] ?? '0', 16);
    const pid = l.kind === 'OFDLCK' ? (holders.get(lockSignature(l))?.[0] ?? -1) : l.pid;
    return {
      pid,
      kind: l.kind === 'OFDLCK' ? 'OFD' : l.kind === 'POSIX' || l.kind === 'FLOCK' ? l.kind : 'OTHER',
      mode: l.mode,
      inode,
      dev: devRaw === 0xffffffff ? -1 : devRaw,
      start: l.start,
      end: l.end,
      blocked: l.blocked,
      lockFile: n,
    };
  });
  return { rows, files: byId.size };
}

export const OS_ROW_HEADER = 'pid     kind  type  i-node   dev        byte               lock file\n';

export function osRowText(r: OsRecordLockRow): string {
  const whole = r.start === 0n && r.end === null;
  const byte = whole ? 'whole file' : r.end === r.start ? `0x${r.start.toString(16)}` : `0x${r.start.toString(16)}-${r.end === null ? 'EOF' : `0x${r.end.toString(16)}`}`;
  const type = `${r.blocked ? '->' : ''}${r.mode === 'write' ? 'WRITE' : 'READ'}`;
  return `${String(r.pid).padEnd(8)}${r.kind.padEnd(6)}${type.padEnd(6)}${String(r.inode).padStart(8, '0')} ${String(r.dev).padEnd(11)}${byte.padEnd(19)}${r.lockFile}`;
}
