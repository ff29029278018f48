// shim-mixed.test.ts - local and remote routes at once, and OSLOCKS: a
// jBASE-like runtime (jdls-jbrt) updates one counter record with READU/WRITE
// from processes without JDLS (the shm table, in-process) and processes with
// JDLS (the broker and the lock server, which locks in that same table) at
// the same time, through the C API and through fcntl on a jlock file; with
// OSLOCKS the server takes the locks as OS file locks instead.
// Serial: each test runs several processes and the machine has 2 cores.
import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { ShimEnv, JBRT, SHIM_API } from './helpers/shim-env.js';

const EACH = 100;

async function mixed(t: import('ava').ExecutionContext, how: 'api' | 'fcntl'): Promise<void> {
  const s = new ShimEnv(t);
  const JDLS = await s.startServer(); // the monitor runs too: local processes use the table
  const data = path.join(s.cli.dir, 'counter');
  fs.writeFileSync(data, '0\n');
  // dev -1 on both sides: a file shared with other hosts (DESIGN.md); for
  // fcntl the jlock file's name carries it (ffffffff).
  const target = how === 'api' ? '4242' : s.jlock(4242, 0xffffffff);
  const envs = [{}, { JDLS }, {}, { JDLS }];
  const runs = await Promise.all(envs.map((env) => s.run(JBRT, [how, target, data, String(EACH)], { env, timeoutMs: 60_000 })));
  for (const r of runs) t.is(r.code, 0, r.stderr);
  if (how === 'api') t.deepEqual(runs.map((r) => r.stdout.split('\n')[0]), ['route table', 'route server', 'route table', 'route server']);
  t.is(Number(fs.readFileSync(data, 'utf8')), envs.length * EACH);
  t.deepEqual(await s.locks(), []);
}

test.serial('a jBASE-like runtime through the C API: local (table) and remote (server) processes at the same time keep the counter exact', (t) => mixed(t, 'api'));
test.serial('a jBASE-like runtime through fcntl on a jlock file: local and remote processes at the same time keep the counter exact', (t) => mixed(t, 'fcntl'));

test.serial('OSLOCKS: the server takes the record locks as OS file locks, not in its table', async (t) => {
  const s = new ShimEnv(t);
  const JDLS = `${await s.startServer()},OSLOCKS`;
  const a = s.start(SHIM_API, ['4242', '7', 'x:K1', 'hold'], { env: { JDLS, JBCPORTNO: '5' } });
  await a.waitFor(/^holding$/, 15_000);
  t.deepEqual(await s.locks(), [], 'nothing in the shm table');
  // the server's OS record-lock file for (4242, -1), locked by a lock-server process
  const f = path.join(s.lockDir, 'jlock_00001092_ffffffff');
  t.true(fs.existsSync(f));
  const ino = fs.statSync(f).ino;
  t.true(fs.readFileSync('/proc/locks', 'utf8').split('\n').some((l) => l.includes(`:${ino} `)), 'a kernel lock on the server\'s jlock file');
  const b = await s.run(SHIM_API, ['4242', '7', 'x:K1'], { env: { JDLS } });
  t.regex(b.stdout, /^locked port=/, b.stderr);
  t.is(await a.finish(), 0);
  const c = await s.run(SHIM_API, ['4242', '7', 'x:K1'], { env: { JDLS } });
  t.is(c.stdout.trim(), 'ok');
});
