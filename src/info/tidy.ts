// tidy.ts - the lock monitor's upkeep of JBCRELEASEDIR/proc/info
// (docs/info-records.md): records whose writer is gone are removed, and a
// port claimed by two live processes is logged, once per new duplicate.
//
// Owns: the decision to remove (a record judged stale by reader.ts, judged
// again just before the unlink, so a record rewritten meanwhile by a live
// writer is kept) and the memory of duplicates already logged. Does not
// own: staleness itself (reader.ts staleReason) or the schedule (monitor.ts).
import fs from 'node:fs';
import path from 'node:path';
import type { Logger } from 'pino';
import { parseRecord } from './format.js';
import { readInfoDir, staleReason, duplicateText } from './reader.js';

export class InfoTidy {
  /** duplicates logged and still present: "port|pid@ip,..." */
  #logged = new Set<string>();

  /** One pass: returns how many stale records were removed and the duplicate ports now. */
  run(releaseDir: string, log: Logger): { removed: number; duplicates: number } {
    const listing = readInfoDir(releaseDir);
    let removed = 0;
    for (const r of listing.records) {
      if (!r.stale) continue;
      const p = path.join(listing.dir, r.file);
      try {
        // Judged again: the writer may have rewritten it (a pid reused by a new writer of the same name).
        const again = parseRecord(fs.readFileSync(p, 'utf8'));
        if (typeof again !== 'string' && staleReason(again) === undefined) continue;
        fs.unlinkSync(p);
        removed++;
        log.info({ record: r.file, port: r.record.port, pid: r.record.pid, why: r.stale }, `info record of port ${r.record.port} removed: ${r.stale}`);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ENOENT') log.warn({ err: e, record: r.file }, 'could not remove a stale info record');
      }
    }
    const now = new Set<string>();
    for (const d of listing.duplicates) {
      const id = `${d.port}|${d.claims.map((c) => `${c.pid}@${c.ipaddr}`).sort().join(',')}`;
      now.add(id);
      if (!this.#logged.has(id)) log.warn({ port: d.port, claims: d.claims }, duplicateText(d));
    }
    this.#logged = now;
    return { removed, duplicates: listing.duplicates.length };
  }
}

/**
 * The info directory (jdls -ib): JBCRELEASEDIR/proc/info, mode 03770 - setgid
 * (records get the installation's group), sticky (users cannot remove each
 * other's records), group-writable (members' local processes write their
 * own) - owned by the installation's owner and group (those of the release
 * directory, when root starts the service). A symbolic link or a
 * non-directory in its place is refused, never followed.
 */
export const INFO_DIR_MODE = 0o3770;

export function ensureInfoDir(releaseDir: string): string {
  const owner = fs.statSync(releaseDir);
  const root = (process.geteuid?.() ?? 1) === 0;
  const make = (p: string, mode: number): void => {
    try {
      fs.mkdirSync(p, { mode: mode & 0o777 });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
    const st = fs.lstatSync(p);
    if (!st.isDirectory()) throw new Error(`${p} is not a directory (a symbolic link or a file is in its place)`);
    if (root && (st.uid !== owner.uid || st.gid !== owner.gid)) fs.chownSync(p, owner.uid, owner.gid);
    // mkdir drops the setgid and sticky bits, and the umask others: set them exactly.
    if ((st.mode & 0o7777) !== mode && (root || st.uid === process.geteuid?.())) fs.chmodSync(p, mode);
  };
  const proc = path.join(releaseDir, 'proc');
  make(proc, 0o755);
  const dir = path.join(proc, 'info');
  make(dir, INFO_DIR_MODE);
  return dir;
}
