// sweep.test.ts - the last line of the suite's cleanup: scripts/sweep.mjs,
// which `npm test` runs after ava, kills every process of a test
// installation that outlived its test (a test ava timed out never runs its
// teardown) and fails the run. The suite itself cannot be made to time out
// here, so the sweep is run on a scratch installation whose `jdls -ib`
// daemons are left running on purpose, as a timed-out test would leave them.
import test from 'ava';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { CliEnv, processesOf } from './helpers/cli-env.js';
import { testDir } from './helpers/installations.js';

const here = path.dirname(fileURLToPath(import.meta.url));
/** scripts/sweep.mjs, seen from dist/test. */
const SWEEP = path.resolve(here, '..', '..', 'scripts', 'sweep.mjs');

function runSweep(root: string): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [SWEEP, root, '--keep'], { timeout: 30_000, killSignal: 'SIGKILL' }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : null) : 0;
      resolve({ code, out: stdout + stderr });
    });
  });
}

test('the sweep kills the daemons of an installation that outlived its test, by pid, and fails', async (t) => {
  // CliEnv's own teardown stays the safety net if the sweep misses.
  const cli = new CliEnv(t);
  const { result } = await cli.startBackground(['-ib']);
  const started = [...result.stdout.matchAll(/started at pid (\d+)/g)].map((m) => Number(m[1]));
  t.true(started.length >= 2, result.stdout); // the monitor and the listener
  t.true(started.every((p) => processesOf(cli.dir).includes(p)), 'the daemons name the installation');
  const r = await runSweep(cli.dir);
  t.is(r.code, 1, r.out);
  for (const p of started) t.regex(r.out, new RegExp(`killed pid ${p}\\b`));
  t.regex(r.out, /^sweep: FAILED: /m);
  t.true(await cli.until(() => processesOf(cli.dir).length === 0, 10_000, 20), `left: ${processesOf(cli.dir).join(' ')}`);
});

test('the sweep passes, killing nothing, when every process of the run is gone', async (t) => {
  const root = testDir('sweep-clean');
  t.teardown(() => fs.rmSync(root, { recursive: true, force: true }));
  const r = await runSweep(root);
  t.is(r.code, 0, r.out);
  t.regex(r.out, /^sweep: clean/m);
  t.notRegex(r.out, /killed/);
});
