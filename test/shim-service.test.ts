// shim-service.test.ts - one mechanism per installation, whenever a process
// started (issue 9, item 5). Preloaded programs with no JDLS lock records in
// the shm table when the installation has one IN SERVICE (its header says
// so), never by whether the monitor runs: stopping the monitor only stops
// tidy-ups. A table cannot enter service while processes hold (or may take)
// record locks as OS file locks: they registered on the marker
// (native/common/jdls_service.c), and `jdls -ib` names them and gives up.
// Serial: each test runs several processes and the machine has 2 cores.
import test from 'ava';
import fs from 'node:fs';
import { ShimEnv, SHIM_LOCKER } from './helpers/shim-env.js';
import { tablePath } from '../src/installation.js';

const INODE = 0x5e41;
const DEV = 0x802;

test.serial('after jdls -kA a new process still locks in the table: a record held there is refused to it (EAGAIN)', async (t) => {
  const s = new ShimEnv(t);
  await s.startMonitor();
  const f = s.jlock(INODE, DEV);
  const holder = s.start(SHIM_LOCKER, [f, 'w:5', 'hold']);
  await holder.waitFor(/^holding$/);
  t.is(holder.lines[0], 'ok');
  const k = await s.cli.run(['-kA']);
  t.is(k.code, 0, k.stderr);
  t.regex(k.stdout, /lock monitor at pid \d+ stopped/);
  // Before the fix this process chose the OS route (no monitor) and was
  // granted the record the holder has in the table.
  const late = s.start(SHIM_LOCKER, [f, 'w:5', 'g:5', 'w:6', 'hold']);
  await late.waitFor(/^holding$/);
  t.deepEqual(late.lines.slice(0, 3), ['EAGAIN', `held W pid=${holder.pid}`, 'ok']);
  t.deepEqual((await s.locks()).filter((r) => r.pid === late.pid).map((r) => r.key), ['6'], 'its lock is in the table');
  t.is(await late.finish(), 0);
  const d = await s.cli.run(['-dv']);
  t.regex(d.stdout, /Locking mechanism:\s+Shared memory lock table/);
  t.is(await holder.finish(), 0);
});

test.serial('a process that took OS record locks before the table existed keeps the table out of service; jdls -ibA names it; after it ends the table enters service', async (t) => {
  const s = new ShimEnv(t);
  const f = s.jlock(INODE, DEV);
  // No table: the record lock is the kernel's.
  const early = s.start(SHIM_LOCKER, [f, 'w:9', 'hold']);
  await early.waitFor(/^holding$/);
  t.is(early.lines[0], 'ok');
  s.env['JDLS_SERVICE_WAIT_MS'] = '300';
  s.cli.env['JDLS_SERVICE_WAIT_MS'] = '300';
  const r = await s.cli.run(['-ibA']);
  t.is(r.code, 1, r.stdout);
  t.regex(r.stderr, /the lock table cannot be put in service: 1 process of this installation lock records as OS file locks/);
  t.regex(r.stderr, new RegExp(`\\n  ${early.pid} `), 'the process is named');
  t.false(fs.existsSync(tablePath(s.cli.dir)), 'no table is left behind');
  // Before the fix the table entered service and this process was granted
  // the record in it while `early` held it in the kernel.
  const other = await s.run(SHIM_LOCKER, [f, 'w:9']);
  t.is(other.stdout.trim(), 'EAGAIN');
  t.is(await early.finish(), 0);
  await s.startMonitor();
  const now = s.start(SHIM_LOCKER, [f, 'w:9', 'hold']);
  await now.waitFor(/^holding$/);
  t.is(now.lines[0], 'ok');
  t.deepEqual((await s.locks()).filter((r) => r.pid === now.pid).map((r) => r.key), ['9'], 'in the table now');
  t.is(await now.finish(), 0);
  const d = await s.cli.run(['-dv']);
  t.regex(d.stdout, /Locking mechanism:\s+Shared memory lock table/);
});

test.serial('a process that loaded the shim before the table but had taken no record lock uses the table once it is in service', async (t) => {
  const s = new ShimEnv(t);
  const f = s.jlock(INODE, DEV);
  // 'wait' first: the process exists (shim loaded, no lock yet) while the
  // monitor starts; then it locks.
  const early = s.start(SHIM_LOCKER, [f, 'wait', 'w:3', 'hold']);
  await early.waitFor(/^waiting$/);
  await s.startMonitor();
  early.child.stdin?.write('go\n');
  await early.waitFor(/^holding$/);
  t.is(early.lines.at(-2), 'ok');
  t.deepEqual((await s.locks()).filter((r) => r.pid === early.pid).map((r) => r.key), ['3']);
  const other = await s.run(SHIM_LOCKER, [f, 'w:3']);
  t.is(other.stdout.trim(), 'EAGAIN');
  t.is(await early.finish(), 0);
});

test.serial('jdls -Ko retires the table: a process that mapped it turns to OS file locks at its next call, as does every new process', async (t) => {
  const s = new ShimEnv(t);
  await s.startMonitor();
  const f = s.jlock(INODE, DEV);
  const p = s.start(SHIM_LOCKER, [f, 'w:1', 'wait', 'w:2', 'hold']);
  await p.waitFor(/^waiting$/);
  const k = await s.cli.run(['-Ko']);
  t.is(k.code, 0, k.stderr);
  p.child.stdin?.write('go\n');
  await p.waitFor(/^holding$/);
  t.is(p.lines.at(-2), 'ok');
  // Its lock of 2 is the kernel's now: a new process (OS route) is refused.
  const other = await s.run(SHIM_LOCKER, [f, 'w:2']);
  t.is(other.stdout.trim(), 'EAGAIN');
  t.is(await p.finish(), 0);
});
