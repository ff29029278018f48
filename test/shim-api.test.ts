// shim-api.test.ts - the C API of libjdlsshim.so (shim/jdls.h), from a C
// program that finds it with dlsym under LD_PRELOAD: into the shm table when
// the monitor runs, OS file locks (OFD on jlock files) when it does not;
// and the record/binary classification hook.
// Serial: each test runs several processes and the machine has 2 cores.
import test from 'ava';
import fs from 'node:fs';
import { ShimEnv, SHIM_API } from './helpers/shim-env.js';

const lines = (s: string): string[] => s.trim().split('\n');

test.serial('with the monitor: C-API record locks go into the table with jBASE semantics', async (t) => {
  const s = new ShimEnv(t);
  await s.startMonitor();
  const holder = s.start(SHIM_API, ['77', '5', 'route', 'x:CUST*1', 's:CUST*2', 'X:CUST*1', 'hold'], { env: { JBCPORTNO: '41' } });
  await holder.waitFor(/^holding$/);
  t.deepEqual(holder.lines.slice(0, 4), ['route table', 'ok', 'ok', 'ok']);
  const rows = (await s.locks()).filter((r) => r.pid === holder.pid).map((r) => `${r.key} ${r.type} ${r.port} ${r.inode} ${r.dev}`).sort();
  t.deepEqual(rows, ['CUST*1 WRITE 41 77 5', 'CUST*2 READ 41 77 5']);
  const other = await s.run(SHIM_API, ['77', '5', 'x:CUST*1', 'e:CUST*1', 's:CUST*2', 'st:CUST*1', 'st:CUST*2', 'x:CUST*3', 'st:CUST*3', 'u:CUST*3', 'u:CUST*3', 'x:CUST*4', 'uf', 'ua'], { env: { JBCPORTNO: '42' } });
  t.is(other.code, 0, other.stderr);
  t.deepEqual(lines(other.stdout), [
    'locked port=41', 'locked port=41', 'ok',
    'status -2 port=41', 'status 1 port=0',
    'ok', 'status 2 port=0', 'ok', 'notheld', 'ok', 'released 2', 'released 0',
  ]);
  await holder.finish();
  t.deepEqual(await s.locks(), []);
});

test.serial('without a monitor: C-API record locks are OS file locks on the jlock file', async (t) => {
  const s = new ShimEnv(t);
  const holder = s.start(SHIM_API, ['77', '5', 'route', 'x:K', 'hold']);
  await holder.waitFor(/^holding$/);
  t.deepEqual(holder.lines.slice(0, 2), ['route os', 'ok']);
  const other = await s.run(SHIM_API, ['77', '5', 'x:K', 'st:K', 's:L', 'u:L', 'x:L']);
  t.deepEqual(lines(other.stdout), ['locked port=0', 'status -2 port=0', 'ok', 'ok', 'ok']);
  await holder.finish();
  t.deepEqual(lines((await s.run(SHIM_API, ['77', '5', 'x:K'])).stdout), ['ok']);
});

test.serial('classification: only jlock_<8hex>_<8hex> in the lock directory is a record-lock file', async (t) => {
  const s = new ShimEnv(t);
  const d = s.lockDir;
  const r = await s.run(SHIM_API, ['0', '0',
    `class:${d}/jlock_0000abcd_00000801`, `class:${d}/jlock_0000abcd_ffffffff`,
    `class:${d}/jlock_0000abcd_0000080`, `class:${d}/jlock_0000abcd_000008011`, `class:${d}/jlock_0000ABCD_00000801`,
    `class:/tmp/elsewhere/jlock_0000abcd_00000801`, `class:${d}/sub/jlock_0000abcd_00000801`, `class:${d}/x.db`]);
  t.deepEqual(lines(r.stdout), ['record 43981 2049', 'record 43981 -1', 'binary', 'binary', 'binary', 'binary', 'binary', 'binary']);
});

test.serial('jdls --shim-path prints the absolute path of the built libjdlsshim.so', async (t) => {
  const s = new ShimEnv(t);
  const r = await s.cli.run(['--shim-path']);
  t.is(r.code, 0);
  const p = r.stdout.trim();
  t.true(p.startsWith('/') && p.endsWith('/build/Release/libjdlsshim.so'), p);
  t.true(fs.statSync(p).isFile());
  t.is((await s.cli.run(['--shim-path', '-x'])).code, 2);
});
