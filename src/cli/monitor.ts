// monitor.ts - the shared-memory lock monitor loop (jBASE's jRLA successor).
//
// Owns: the monitor's fields of the table header (monitorPid, monitorStart,
// startedMs, tidyMs, lastRanMs, lastTidyMs), the tidy-up schedule, and
// the monitor's orderly exit. Does not own: deciding which locks are orphaned
// (LockTable.tidy, in C, checks each owner's pid and start time and counts
// what it frees in the header's tidyOps), nor starting the process
// (start.ts).
//
// Life of a monitor:
//   start   refuse if another live monitor is in the header; write the
//           statistics, tidy once, then publish monitorPid (the "ready" sign
//           that `jdls -ib` waits for).
//   wake    every min(10 s, period): lastRanMs; every period: tidy.
//           Every second: log the deadlock cycles the table recorded
//           (docs/deadlocks.md) and keep the token epoch record at or
//           above the table's (src/server/token-epoch.ts).
//   stop    SIGTERM/SIGINT: clear monitorPid if it is still ours, exit 0.
//           The table and every lock in it stay as they are.
import fs from 'node:fs';
import type { LockTable } from '../locks/table.js';
import { native } from '../native.js';
import type { Logger } from '../log.js';
import { isRunning } from './procs.js';
import { keepEpoch, readEpoch } from '../server/token-epoch.js';
import { describeCycle } from '../locks/deadlock-report.js';
import { InfoTidy } from '../info/tidy.js';

/** How often the monitor looks for new deadlock reports and a raised token epoch. */
export const REPORT_POLL_MS = 1000;


export interface MonitorOptions {
  table: LockTable;
  tidyMinutes: number;
  log: Logger;
}

/** The longest the monitor sleeps, so "Time last ran" stays fresh. */
export const MAX_WAKE_MS = 10_000;

/** Run until a signal; resolves with the process exit code. */
export function runMonitor(opts: MonitorOptions): Promise<number> {
  const { table, tidyMinutes, log } = opts;
  const me = process.pid;
  // One atomic claim of the header's monitor pid: of two `jdls -i` started
  // at the same instant exactly one becomes the monitor. Holding the claim
  // is the "ready" sign `jdls -ib` waits for.
  const other = table.claimMonitor(me);
  if (other !== 0) {
    log.error({ other }, `lock monitor already running at pid ${other}`);
    table.close();
    return Promise.resolve(1);
  }

  const periodMs = tidyMinutes * 60_000;
  const wakeMs = Math.min(MAX_WAKE_MS, periodMs);
  const now = Date.now();
  table.setHeader('startedMs', now);
  table.setHeader('lastRanMs', now);
  table.setHeader('tidyMs', Math.round(periodMs));
  tidyNow(table, log, 'start');
  // Info records (docs/info-records.md): stale ones removed, duplicate ports logged - at every wake (a readdir), not only every tidy period.
  const infoTidy = new InfoTidy();
  const tidyInfo = (): void => {
    try {
      infoTidy.run(table.releaseDir, log);
    } catch (e) {
      log.error({ err: e }, 'info record tidy-up failed');
    }
  };
  tidyInfo();

  // The table's identity: if it is removed (jdls -Ko, or a test unlinking
  // /dev/shm) the monitor would tidy an orphaned mapping forever; it leaves.
  const ino = inodeOf(table.path);
  const h = table.header();
  log.info(
    { table: table.path, releaseDir: table.releaseDir, groups: h.ngroups, perGroup: h.perGroup, locks: h.capacity, tidyMinutes },
    'lock monitor started',
  );

  let reported = table.header().deadlockReports;
  let epoch = 0n;
  try {
    epoch = readEpoch(table.releaseDir);
  } catch (e) {
    log.error({ err: e }, 'cannot read the token epoch record');
  }
  const poll = (): void => {
    try {
      const n = table.header().deadlockReports;
      // Older than the ring keeps: say how many were missed, not nothing.
      if (n - reported > 16) {
        log.warn({ missed: n - reported - 16 }, `deadlock: ${n - reported - 16} cycle reports were overwritten before they could be logged`);
        reported = n - 16;
      }
      for (; reported < n; reported++) {
        const r = table.deadlockReport(reported + 1);
        if (!r) continue;
        const d = describeCycle(r);
        log.warn({ deadlock: { number: r.number, members: d.members, refused: r.victim >= 0 } }, d.text);
      }
      epoch = keepEpoch(table, table.releaseDir, epoch);
    } catch (e) {
      log.error({ err: e }, 'deadlock report or token epoch upkeep failed');
    }
  };
  const reportTimer = setInterval(poll, REPORT_POLL_MS);

  return new Promise<number>((resolve) => {
    let timer: NodeJS.Timeout | undefined;
    let nextTidy = now + periodMs;
    let done = false;

    const finish = (code: number, clear: boolean, why: string): void => {
      if (done) return;
      done = true;
      if (timer) clearTimeout(timer);
      clearInterval(reportTimer);
      poll(); // the last reports and epoch before the table is closed
      process.off('SIGTERM', onSignal);
      process.off('SIGINT', onSignal);
      try {
        // Only if it is still ours: a monitor that was superseded must not
        // wipe its successor's pid.
        if (clear && table.header().monitorPid === me) {
          table.setHeader('monitorPid', 0);
          table.setHeader('lastRanMs', Date.now());
        }
      } catch (e) {
        log.error({ err: e }, 'could not clear the monitor pid in the table header');
      }
      table.close();
      log.info({ code }, `lock monitor stopped: ${why}`);
      resolve(code);
    };
    const onSignal = (sig: NodeJS.Signals): void => finish(0, true, `${sig} received`);
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);

    const wake = (): void => {
      if (done) return;
      const t = Date.now();
      if (ino === undefined || inodeOf(table.path) !== ino) {
        finish(0, false, `lock table ${table.path} was removed`);
        return;
      }
      const cur = table.header();
      if (cur.monitorPid !== me) {
        // Two `jdls -i` raced past the "already running" check: the later
        // writer won the header, so the earlier one steps aside.
        log.warn({ other: cur.monitorPid }, `another lock monitor (pid ${cur.monitorPid}) has taken over`);
        finish(1, false, 'superseded');
        return;
      }
      table.setHeader('lastRanMs', t);
      tidyInfo();
      if (t >= nextTidy) {
        tidyNow(table, log, 'period');
        nextTidy = Date.now() + periodMs;
      }
      timer = setTimeout(wake, Math.max(1, Math.min(wakeMs, nextTidy - Date.now())));
    };
    timer = setTimeout(wake, Math.min(wakeMs, periodMs));
  });
}

function tidyNow(table: LockTable, log: Logger, reason: string): void {
  try {
    const freed = table.tidy();
    table.setHeader('lastTidyMs', Date.now());
    log.info({ freed, tidyOps: table.header().tidyOps, reason }, `tidy-up freed ${freed} orphaned lock${freed === 1 ? '' : 's'}`);
  } catch (e) {
    log.error({ err: e }, 'tidy-up failed');
  }
}

function inodeOf(p: string): number | undefined {
  try {
    return fs.statSync(p).ino;
  } catch {
    return undefined;
  }
}
