// deadlock-report.ts - a deadlock cycle the table recorded (jdls_table.h,
// jdls_deadlock_report), as words and as a log record: the monitor logs it,
// `jdls -dvL --json` lists the last ones. docs/deadlocks.md explains them.
import type { NativeReport } from '../native.js';

/** A deadlock report as one log record: who waits for what, and which wait was refused. */
export function describeCycle(r: NativeReport): { text: string; members: Record<string, unknown>[] } {
  const members = r.m.map((m, i) => ({
    host: m.ip,
    port: m.port,
    pid: m.ownerPid,
    thread: m.ownerTid,
    ...(m.pid !== m.ownerPid ? { lockServerPid: m.pid } : {}),
    inode: m.inode.toString(),
    dev: m.dev.toString(),
    key: printableKey(m.key, m.keyLength),
    waitsFor: m.mode === 2 ? 'write' : 'read',
    ...(i === r.victim ? { refused: true } : {}),
  }));
  const who = members.map((m) => `${String(m.host)} port ${String(m.port)} pid ${String(m.pid)} waits for ${String(m.key)}`).join(' -> ');
  const verdict = r.victim >= 0 ? `refused the wait of pid ${String(members[r.victim]?.pid)} (DEADLOCK)` : 'reported only (no member asked to be refused, or policy report)';
  const more = r.members > members.length ? ` (+${r.members - members.length} more)` : '';
  return { text: `deadlock: a cycle of ${r.members} waiters: ${who}${more}; ${verdict}`, members };
}

function printableKey(key: Buffer, full: number): string {
  const text = [...key].map((b) => (b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : `\\x${b.toString(16).padStart(2, '0')}`)).join('');
  return full > key.length ? `${text}...(${full} bytes)` : text;
}
