// sweep.mjs - the last check of a test run: no process of a test
// installation may survive it.
//
//   node scripts/sweep.mjs ROOT [--keep]
//
// ROOT is the run's root directory (scripts/test.mjs makes one per `npm test`
// and passes it to the tests as JDLS_TEST_ROOT; every test directory is made
// under it, named jdlstest-*). Kills, by pid, every live process whose
// environment or command line names ROOT, or that an installation's registry
// (ROOT/jdlstest-*/.test-pids, and ROOT's own) lists with the same start
// time; removes the network namespaces a worker registered under ROOT/netns
// and never deleted; reports what the workers' own exit cleanup had to kill
// (ROOT/worker-killed-*.log). Then removes ROOT (and the /dev/shm tables of
// the installations left in it) unless --keep.
//
// Exit status 1, with a "sweep: FAILED" line, if anything had to be killed or
// removed: a process that outlives its test is a defect even when every test
// passed. 0 with a "sweep: clean" line otherwise.
// Imports the compiled test helpers: run after the build (npm test does).
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const dist = path.resolve(here, '..', 'dist');
const { processesNaming, registeredAlive, killAll } = await import(path.join(dist, 'test', 'helpers', 'procscan.js'));
const { TEST_PREFIX, WORKER_LOG_PREFIX, NETNS_DIR, DIRS_FILE, removeNetnsSync } = await import(path.join(dist, 'test', 'helpers', 'installations.js'));

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function entries(dir) {
  try {
    return fs.readdirSync(dir);
  } catch {
    return [];
  }
}

/** Sweep `root`; returns the report lines (empty: clean) and notes (reported, not failures). */
export async function sweep(root, { keep = false } = {}) {
  const report = [];
  const notes = [];
  const dirs = [root, ...entries(root).filter((n) => n.startsWith(TEST_PREFIX)).map((n) => path.join(root, n))];

  // What the workers killed at their exit (a test timed out, or leaked).
  for (const n of entries(root).filter((n) => n.startsWith(WORKER_LOG_PREFIX))) {
    for (const line of fs.readFileSync(path.join(root, n), 'utf8').split('\n').filter(Boolean)) report.push(line);
  }

  // Live processes of the run. Twice: a process killed while it was
  // starting a child may leave that child to the second round.
  for (let round = 0; round < 2; round++) {
    const found = [...processesNaming([root]), ...dirs.flatMap((d) => registeredAlive(d))];
    for (const f of killAll(found)) report.push(`killed pid ${f.pid}, left by the tests: ${f.cmd}`);
    const pids = found.map((f) => f.pid);
    for (let i = 0; i < 100 && pids.some((p) => fs.existsSync(`/proc/${p}/cmdline`) && fs.readFileSync(`/proc/${p}/cmdline`).length > 0); i++) await sleep(20);
  }

  // Network namespaces a worker made and did not delete.
  for (const ns of entries(path.join(root, NETNS_DIR))) {
    const r = removeNetnsSync(ns);
    if (r.existed) {
      report.push(`removed network namespace ${ns}, left by the tests`);
      for (const f of r.killed) report.push(`killed pid ${f.pid} ${f.cmd}`);
    }
  }

  if (!keep) {
    let tablePath;
    try {
      ({ tablePath } = await import(path.join(dist, 'src', 'installation.js')));
    } catch {
      tablePath = undefined;
    }
    // The lock tables (/dev/shm) of every installation of the run: a test
    // whose teardown ran removed its own; one left is a note, not a failure
    // (no process holds it any more).
    let made = [];
    try {
      made = fs.readFileSync(path.join(root, DIRS_FILE), 'utf8').split('\n').filter(Boolean);
    } catch {
      /* no test made one */
    }
    for (const d of new Set([...dirs.slice(1), ...made])) {
      try {
        const shm = tablePath ? tablePath(d) : undefined;
        if (shm && fs.existsSync(shm)) {
          fs.rmSync(shm, { force: true });
          notes.push(`removed the lock table ${shm} of ${d}, left by its test`);
        }
        // The OS-route marker beside it (native/common/jdls_service.c):
        // no process of the run is left to hold it.
        if (shm) fs.rmSync(`${shm}.os`, { force: true });
      } catch {
        /* not an installation */
      }
    }
    fs.rmSync(root, { recursive: true, force: true });
  }
  return { report, notes };
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const args = process.argv.slice(2);
  const root = args.find((a) => !a.startsWith('--'));
  if (!root) {
    console.error('usage: node scripts/sweep.mjs ROOT [--keep]');
    process.exit(2);
  }
  const { report, notes } = await sweep(path.resolve(root), { keep: args.includes('--keep') });
  for (const line of notes) console.log(`sweep: note: ${line}`);
  for (const line of report) console.log(`sweep: ${line}`);
  if (report.length > 0) {
    console.log(`sweep: FAILED: ${report.length} process(es) or namespace(s) of test installations outlived their tests (listed above)`);
    process.exit(1);
  }
  console.log('sweep: clean: no process of a test installation outlived the run');
}
