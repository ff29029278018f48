// shim-record.test.ts - record locks of unmodified programs under
// LD_PRELOAD=libjdlsshim.so with the lock monitor running and no JDLS: classic
// fcntl/lockf locks on jlock files go into the shm table in-process, with
// classic POSIX semantics (per process, close() releases, fork inherits
// none, F_SETLKW interruptible, a killed holder lets the next in).
// Serial: each test runs several processes and the machine has 2 cores.
import test from 'ava';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ShimEnv, SHIM_LOCKER } from './helpers/shim-env.js';

const INODE = 0xabcd;
const DEV = 0x801;

/** Does the kernel hold any POSIX/flock lock on this file? (/proc/locks) */
function osLocked(file: string): boolean {
  const ino = fs.statSync(file).ino;
  return fs.readFileSync('/proc/locks', 'utf8').split('\n').some((l) => l.split(/\s+/).some((f) => f.endsWith(`:${ino}`)));
}

test.serial('fcntl F_SETLK on a jlock file goes into the table: EAGAIN for another process, F_GETLK names the holder, no OS lock', async (t) => {
  const s = new ShimEnv(t);
  await s.startMonitor();
  const f = s.jlock(INODE, DEV);
  const holder = s.start(SHIM_LOCKER, [f, 'w:31', 'r:40', 'hold']);
  await holder.waitFor(/^holding$/);
  t.deepEqual(holder.lines.slice(0, 2), ['ok', 'ok']);
  const rows = await s.locks();
  const mine = rows.filter((r) => r.pid === holder.pid).map((r) => `${r.key} ${r.type} ${r.inode} ${r.dev} ${r.state}`).sort();
  t.deepEqual(mine, [`1f WRITE ${INODE} ${DEV} held`, `28 READ ${INODE} ${DEV} held`]);
  t.false(osLocked(f), 'the kernel holds no lock on the jlock file');
  // After r:40 of its own, a write probe of 40 still sees the holder's read
  // lock (POSIX F_GETLK looks past the caller's own locks).
  const other = await s.run(SHIM_LOCKER, [f, 'w:31', 'g:31', 'g:40', 'r:40', 'g:40', 'w:41']);
  t.is(other.code, 0, other.stderr);
  t.deepEqual(other.stdout.trim().split('\n'), ['EAGAIN', `held W pid=${holder.pid}`, `held R pid=${holder.pid}`, 'ok', `held R pid=${holder.pid}`, 'ok']);
  // Control: the same program without the shim does not see the table lock.
  const plain = await s.run(SHIM_LOCKER, [f, 'w:31'], { preload: false });
  t.is(plain.stdout.trim(), 'ok');
  t.is(await holder.finish(), 0);
  t.deepEqual((await s.locks()).filter((r) => r.pid === holder.pid), [], 'a normal exit releases');
});

test.serial('lockf(F_TLOCK) at the current offset goes into the table too', async (t) => {
  const s = new ShimEnv(t);
  await s.startMonitor();
  const f = s.jlock(INODE, DEV);
  const holder = s.start(SHIM_LOCKER, [f, 'L:7', 'hold']);
  await holder.waitFor(/^holding$/);
  t.is(holder.lines[0], 'ok');
  t.deepEqual((await s.locks()).filter((r) => r.pid === holder.pid).map((r) => r.key), ['7']);
  const other = await s.run(SHIM_LOCKER, [f, 'L:7', 'g:7']);
  t.deepEqual(other.stdout.trim().split('\n'), ['EAGAIN', `held W pid=${holder.pid}`]);
  await holder.finish();
});

test.serial('close() of another descriptor of the lock file releases the process\'s record locks', async (t) => {
  const s = new ShimEnv(t);
  await s.startMonitor();
  const f = s.jlock(INODE, DEV);
  // Control: a second descriptor opened but not closed keeps the lock.
  const keeps = s.start(SHIM_LOCKER, [f, 'w:5', 'open2', 'hold']);
  await keeps.waitFor(/^holding$/);
  t.is((await s.run(SHIM_LOCKER, [f, 'w:5'])).stdout.trim(), 'EAGAIN');
  await keeps.finish();
  const drops = s.start(SHIM_LOCKER, [f, 'w:5', 'w:6', 'open2', 'close2', 'hold']);
  await drops.waitFor(/^holding$/);
  t.deepEqual(drops.lines.slice(0, 4), ['ok', 'ok', 'ok', 'ok']);
  t.deepEqual((await s.locks()).filter((r) => r.pid === drops.pid), []);
  t.deepEqual((await s.run(SHIM_LOCKER, [f, 'w:5', 'w:6'])).stdout.trim().split('\n'), ['ok', 'ok']);
  await drops.finish();
});

test.serial('a fork child inherits none of the parent\'s locks and its close() does not release them', async (t) => {
  const s = new ShimEnv(t);
  await s.startMonitor();
  const f = s.jlock(INODE, DEV);
  const parent = s.start(SHIM_LOCKER, [f, 'w:5', 'forkclose:5', 'hold']);
  await parent.waitFor(/^holding$/);
  t.deepEqual(parent.lines.slice(0, 2), ['ok', 'child EAGAIN']);
  const rows = (await s.locks()).filter((r) => r.key === '5');
  t.deepEqual(rows.map((r) => r.pid), [parent.pid]);
  t.is((await s.run(SHIM_LOCKER, [f, 'w:5'])).stdout.trim(), 'EAGAIN');
  await parent.finish();
});

test.serial('kill -9 of a holder lets a blocked F_SETLKW in', async (t) => {
  const s = new ShimEnv(t);
  await s.startMonitor();
  const f = s.jlock(INODE, DEV);
  const holder = s.start(SHIM_LOCKER, [f, 'w:9', 'hold']);
  await holder.waitFor(/^holding$/);
  const waiter = s.start(SHIM_LOCKER, [f, 'W:9', 'hold']);
  await s.cli.until(async () => (await s.locks()).some((r) => r.pid === waiter.pid && r.state === 'waiting'), 5_000);
  t.deepEqual(waiter.lines, [], 'still waiting');
  holder.child.kill('SIGKILL');
  await waiter.waitFor(/^holding$/, 3_000);
  t.is(waiter.lines[0], 'ok');
  t.deepEqual((await s.locks()).filter((r) => r.key === '9').map((r) => r.pid), [waiter.pid]);
  await waiter.finish();
});

/** Is `sig` (a number) pending for pid, thread- or process-directed? (/proc/PID/status) */
function signalPending(pid: number, sig: number): boolean {
  let status = '';
  try {
    status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  } catch {
    return false;
  }
  const bit = 1n << BigInt(sig - 1);
  return [/^SigPnd:\s*([0-9a-f]+)$/m, /^ShdPnd:\s*([0-9a-f]+)$/m].some((re) => {
    const m = re.exec(status);
    return m !== null && (BigInt(`0x${m[1] ?? '0'}`) & bit) !== 0n;
  });
}

/** The scheduler state letter of pid (R running/runnable, S sleeping...), '' when gone. */
function procState(pid: number): string {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.charAt(stat.lastIndexOf(')') + 2);
  } catch {
    return '';
  }
}

const SIGALRM = os.constants.signals.SIGALRM;

/** Waits until pid's F_SETLKW is queued in the table (bounded). */
async function queued(s: ShimEnv, pid: number): Promise<boolean> {
  return s.cli.until(async () => (await s.locks()).some((r) => r.pid === pid && r.state === 'waiting'), 10_000);
}

// The signal comes from the test once the request is queued, not from a
// timer armed before the call: a timer that fires before the process reaches
// its wait (a loaded machine, the shim's first-lock set-up) would make the
// kernel's F_SETLKW block for ever too. The handler is the fixture's alarm
// step (no SA_RESTART); its own timer is far away.
test.serial('F_SETLKW returns EINTR when a signal handler runs (SIGALRM without SA_RESTART, like flock -w)', async (t) => {
  const s = new ShimEnv(t);
  await s.startMonitor();
  const f = s.jlock(INODE, DEV);
  const holder = s.start(SHIM_LOCKER, [f, 'w:3', 'hold']);
  await holder.waitFor(/^holding$/);
  const waiter = s.start(SHIM_LOCKER, [f, 'alarm:600000', 'W:3']);
  await waiter.waitFor(/^armed$/);
  t.true(await queued(s, waiter.pid), 'the request is queued');
  process.kill(waiter.pid, 'SIGALRM');
  await waiter.waitFor(/^EINTR$/, 10_000);
  t.is(await waiter.finish(), 0, waiter.stderr());
  t.deepEqual((await s.locks()).filter((x) => x.state === 'waiting'), [], 'the cancelled request left no entry');
  await holder.finish();
});

// The shim's wait sleeps in FUTEX_WAIT for one liveness tick (20 ms) at a
// time and checks the holders between two sleeps. A signal that lands in
// between must still end the wait. To land it there on purpose the waiter is
// starved: pinned to CPU 0 with SCHED_IDLE behind a busy loop on the same
// CPU, it spends nearly all its time runnable between two sleeps (woken by
// the tick, waiting for the CPU), and the test signals it when it is seen
// runnable. Before the fix the handler ran there and the next FUTEX_WAIT
// slept on: no EINTR, ever.
test.serial('F_SETLKW returns EINTR when the signal lands between two liveness ticks of the wait (starved waiter)', async (t) => {
  const s = new ShimEnv(t);
  await s.startMonitor();
  const f = s.jlock(INODE, DEV);
  const holder = s.start(SHIM_LOCKER, [f, 'w:3', 'hold']);
  await holder.waitFor(/^holding$/);
  const waiter = s.start(SHIM_LOCKER, [f, 'alarm:600000', 'W:3']);
  await waiter.waitFor(/^armed$/);
  t.true(await queued(s, waiter.pid), 'the request is queued');
  execFileSync('taskset', ['-p', '-c', '0', String(waiter.pid)], { stdio: 'ignore' });
  execFileSync('chrt', ['-i', '-p', '0', String(waiter.pid)], { stdio: 'ignore' });
  const hog = s.start('taskset', ['-c', '0', 'sh', '-c', 'while :; do :; done'], { preload: false });
  try {
    t.true(await s.cli.until(() => procState(waiter.pid) === 'R', 10_000, 1), 'the starved waiter is seen runnable');
    process.kill(waiter.pid, 'SIGALRM');
    // Until the waiter has run again (handled or noticed the signal) it stays starved.
    t.true(await s.cli.until(() => !signalPending(waiter.pid, SIGALRM), 20_000, 5), 'the waiter took the signal');
  } finally {
    process.kill(hog.pid, 'SIGKILL');
  }
  await hog.finish();
  await waiter.waitFor(/^EINTR$/, 5_000);
  t.is(await waiter.finish(), 0, waiter.stderr());
  t.deepEqual((await s.locks()).filter((x) => x.state === 'waiting'), [], 'the cancelled request left no entry');
  await holder.finish();
});

// The kernel restarts F_SETLKW after a handler installed with SA_RESTART:
// the call goes on waiting and later succeeds. (A FUTEX_WAIT with a timeout
// returns EINTR even under SA_RESTART, so the shim used to end the wait.)
test.serial('F_SETLKW goes on waiting after a SA_RESTART handler ran, and is granted later', async (t) => {
  const s = new ShimEnv(t);
  await s.startMonitor();
  const f = s.jlock(INODE, DEV);
  const holder = s.start(SHIM_LOCKER, [f, 'w:3', 'hold']);
  await holder.waitFor(/^holding$/);
  const waiter = s.start(SHIM_LOCKER, [f, 'alarmr:600000', 'W:3']);
  await waiter.waitFor(/^armed$/);
  t.true(await queued(s, waiter.pid), 'the request is queued');
  process.kill(waiter.pid, 'SIGALRM');
  await waiter.waitFor(/^signal$/, 10_000);
  t.true(await queued(s, waiter.pid), 'still queued after the handler ran');
  t.deepEqual(waiter.lines, ['armed', 'signal'], 'no EINTR');
  await holder.finish();
  await waiter.waitFor(/^ok$/, 10_000);
  t.deepEqual(waiter.lines, ['armed', 'signal', 'ok']);
  t.is(await waiter.finish(), 0, waiter.stderr());
});

test.serial('several preloaded processes keep a counter exact with fcntl record locks on a jlock file', async (t) => {
  const s = new ShimEnv(t);
  await s.startMonitor();
  const f = s.jlock(INODE, DEV);
  const data = path.join(s.cli.dir, 'counter');
  fs.writeFileSync(data, '0\n');
  const N = 4;
  const EACH = 1500;
  const procs = Array.from({ length: N }, () => s.start(SHIM_LOCKER, [f, `count:${EACH}:${data}`]));
  // Watch while they run: the locks are in the table, never in the kernel.
  let seenInTable = false;
  let seenInOs = false;
  const done = Promise.all(procs.map((p) => p.finish(60_000)));
  let finished = false;
  void done.then(() => (finished = true));
  for (let i = 0; i < 200 && !finished; i++) {
    if ((await s.locks()).some((r) => r.key === '0' && r.inode === String(INODE))) seenInTable = true;
    if (fs.existsSync(f) && osLocked(f)) seenInOs = true;
  }
  const codes = await done;
  t.deepEqual(codes, procs.map(() => 0), procs.map((p) => p.stderr()).join(''));
  t.is(fs.readFileSync(data, 'utf8').trim(), String(N * EACH));
  t.false(seenInOs, 'no kernel lock on the jlock file');
  t.log(`lock seen in the table while running: ${seenInTable}`);
});
