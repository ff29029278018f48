// installations.ts - where every test installation lives, and the cleanup
// that runs whatever happens to the test.
//
// Owns: the run's root directory (JDLS_TEST_ROOT, made by scripts/test.mjs
// for one `npm test`; os.tmpdir() when ava runs alone), the recognisable
// prefix of every test directory (TEST_PREFIX), making one (testDir), and
// the worker's last cleanup. ava stops a worker whose test timed out with
// SIGTERM: then neither t.teardown nor after.always runs, and the test's
// background processes (monitor, listener, lock servers, brokers, fixtures)
// would outlive the run. So on SIGTERM/SIGINT/SIGHUP and on process exit this
// module kills - by pid, synchronously - every process that names one of
// this worker's test directories (procscan.ts) or is in one's registry, and
// removes this worker's network namespaces (registerNetns). What it had to
// kill is written to the run root (WORKER_LOG_PREFIX*): the final sweep
// (scripts/sweep.mjs) reports it and fails the run. Does not own: each
// helper's own teardown (the normal way out), the sweep.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { processesNaming, registeredAlive, killAll, register, type Found } from './procscan.js';

/** Every test directory's name starts with this (the sweep looks for it). */
export const TEST_PREFIX = 'jdlstest-';
/** Files the worker cleanup leaves in the run root, naming what it killed. */
export const WORKER_LOG_PREFIX = 'worker-killed-';
/** The directory under the run root that lists the live network namespaces (one empty file each). */
export const NETNS_DIR = 'netns';
/** The file in the run root that lists every test directory made (for the sweep's /dev/shm check). */
export const DIRS_FILE = 'dirs';

/** The run's root (JDLS_TEST_ROOT from scripts/test.mjs), else the temp dir. */
export function testRoot(): string {
  return process.env['JDLS_TEST_ROOT'] || os.tmpdir();
}

const dirs = new Set<string>();
const namespaces = new Set<string>();

/** A fresh directory `<root>/jdlstest-<kind>-XXXXXX` for one test, cleaned up at worker exit if its test's teardown never ran. */
export function testDir(kind: string): string {
  installHandlers();
  const dir = fs.mkdtempSync(path.join(testRoot(), `${TEST_PREFIX}${kind}-`));
  dirs.add(dir);
  if (process.env['JDLS_TEST_ROOT']) fs.appendFileSync(path.join(testRoot(), DIRS_FILE), `${dir}\n`);
  return dir;
}

/** Record a process a test started in its installation's registry (with its start time). */
export function recordPid(dir: string, pid: number): void {
  register(dir, pid);
}

/** A network namespace this worker made: deleted at worker exit if still there; listed in the run root for the sweep. */
export function registerNetns(name: string): void {
  installHandlers();
  namespaces.add(name);
  if (process.env['JDLS_TEST_ROOT']) {
    try {
      fs.mkdirSync(path.join(testRoot(), NETNS_DIR), { recursive: true });
      fs.writeFileSync(path.join(testRoot(), NETNS_DIR, name), '');
    } catch {
      /* the sweep then misses it; the worker cleanup still has it */
    }
  }
}

/** The namespace is gone (its test's teardown deleted it). */
export function unregisterNetns(name: string): void {
  namespaces.delete(name);
  if (process.env['JDLS_TEST_ROOT']) fs.rmSync(path.join(testRoot(), NETNS_DIR, name), { force: true });
}

/** Kill a network namespace's processes (by pid) and delete it; true if it existed. */
export function removeNetnsSync(name: string): { existed: boolean; killed: Found[] } {
  const ip = (args: string[]): string =>
    execFileSync('ip', args, { encoding: 'utf8', timeout: 10_000, killSignal: 'SIGKILL', stdio: ['ignore', 'pipe', 'ignore'] });
  let pids: number[];
  try {
    pids = ip(['netns', 'pids', name]).split('\n').filter(Boolean).map(Number);
  } catch {
    return { existed: false, killed: [] };
  }
  const killed = killAll(pids.map((pid) => ({ pid, cmd: `(in netns ${name})` })));
  try {
    ip(['netns', 'del', name]);
  } catch {
    /* raced with its own teardown */
  }
  return { existed: true, killed };
}

/** The last cleanup of this worker: synchronous, so it can run in 'exit' and signal handlers. */
function cleanupSync(why: string): void {
  const found = [...processesNaming([...dirs]), ...[...dirs].flatMap((d) => registeredAlive(d))];
  const killed = killAll(found);
  const report = killed.map((f) => `killed pid ${f.pid} at worker ${why}: ${f.cmd}`);
  for (const ns of [...namespaces]) {
    const r = removeNetnsSync(ns);
    if (r.existed) report.push(`removed network namespace ${ns} at worker ${why}`, ...r.killed.map((f) => `killed pid ${f.pid} ${f.cmd}`));
    unregisterNetns(ns);
  }
  if (report.length === 0) return;
  process.stderr.write(`${report.join('\n')}\n`);
  if (process.env['JDLS_TEST_ROOT']) {
    try {
      fs.appendFileSync(path.join(testRoot(), `${WORKER_LOG_PREFIX}${process.pid}.log`), `${report.join('\n')}\n`);
    } catch {
      /* the root is gone */
    }
  }
}

let installed = false;
function installHandlers(): void {
  if (installed) return;
  installed = true;
  process.on('exit', () => cleanupSync('exit'));
  for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) {
    const onSignal = (): void => {
      cleanupSync(sig);
      // Then die of the signal, as without this handler.
      process.removeListener(sig, onSignal);
      process.kill(process.pid, sig);
    };
    process.on(sig, onSignal);
  }
}
