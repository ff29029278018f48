// test.mjs - what `npm test` runs: the ava suite, then the sweep.
//
//   npm test [-- AVA ARGS...]
//
// Makes the run's root directory ($TMPDIR/jdlstest-run-XXXXXX) and gives it
// to the tests as JDLS_TEST_ROOT: every test installation is made under it
// (test/helpers/installations.ts). After ava exits - passed, failed, timed
// out or interrupted - scripts/sweep.mjs kills whatever of the run is still
// alive and fails the run if there was anything. Exit status: ava's if it
// failed, else the sweep's.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { sweep } from './sweep.mjs';

// ava's own command (its package.json "bin"), run with this Node.
const avaCli = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', 'node_modules', 'ava', 'entrypoints', 'cli.mjs');

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'jdlstest-run-'));
// Others may pass through (not list): a test that opens its installation to
// a throw-away user (chmod 0755 on its own directory) must be reachable, as
// it is when run alone under the temp dir; mkdtemp's 0700 made such a test
// see EACCES on the path above the installation instead of the one it set up.
fs.chmodSync(root, 0o711);
const ava = spawn(process.execPath, [avaCli, ...process.argv.slice(2)], {
  stdio: 'inherit',
  env: { ...process.env, JDLS_TEST_ROOT: root },
});
// Ctrl-C reaches ava itself (same process group); this process stays for
// the sweep. A SIGTERM/SIGHUP sent to this process alone is passed on.
process.on('SIGINT', () => {});
for (const sig of ['SIGTERM', 'SIGHUP']) process.on(sig, () => ava.kill(sig));
const avaStatus = await new Promise((resolve) => {
  ava.on('error', (e) => {
    console.error(`test: cannot run ava: ${e.message}`);
    resolve(1);
  });
  ava.on('exit', (code, signal) => resolve(code ?? (signal ? 1 : 0)));
});

const { report, notes } = await sweep(root);
for (const line of notes) console.log(`sweep: note: ${line}`);
for (const line of report) console.log(`sweep: ${line}`);
if (report.length > 0) {
  console.log(`sweep: FAILED: ${report.length} process(es) or namespace(s) of test installations outlived their tests (listed above)`);
} else {
  console.log('sweep: clean: no process of a test installation outlived the run');
}
process.exit(avaStatus !== 0 ? avaStatus : report.length > 0 ? 1 : 0);
