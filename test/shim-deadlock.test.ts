// shim-deadlock.test.ts - deadlocks and fencing tokens under the preload
// shim (issue 12, docs/shim.md "Deadlocks" and "The C API").
//
// Kernel parity: a F_SETLKW (or lockf(F_LOCK)) that would close a cycle of
// waiters fails with EDEADLK and takes nothing; the kernel refuses the
// request that closes the cycle, and the others are granted in turn as the
// refused process gives its locks up. Each cycle is run first on a plain file
// WITHOUT the shim (the kernel's own answer, recorded), then under the shim
// on a jlock file - direct route (the shm table in-process) and remote route
// (JDLS=SERVER=..., a lock server whose mechanism is its table) - and the
// outcomes must be the same lines. Steps are sequenced by stdin lines and by
// waiting for the waiter to show up (/proc/locks for the kernel, `jdls -dvL
// --json` for the table), never by sleeping.
//
// The C API (jdls-shimdeadlock): JDLS_BREAK_DEADLOCK gives
// JDLS_LOCK_DEADLOCK; without it the call waits; jdls_record_token() is > 0
// and strictly increases over grants of one key, 0 on the OS route.
// Serial: each test runs several processes and the machine has 2 cores.
import test, { type ExecutionContext } from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { ShimEnv, SHIM_LOCKER, type BgProc } from './helpers/shim-env.js';
import { buildDir, packageRoot } from '../src/native.js';

const SHIM_DEADLOCK = path.join(buildDir, 'jdls-shimdeadlock');
const LOCKF_CYCLE = path.join(packageRoot, 'test', 'fixtures', 'lockf-cycle.py');
const INODE = 0xdead;
const DEV = 0x801;

type Where = 'kernel' | 'table' | 'server';

interface Place {
  s: ShimEnv;
  where: Where;
  /** the file the fcntl/lockf programs lock in */
  file: string;
  env: NodeJS.ProcessEnv;
}

/** Where a cycle runs: the kernel (plain file, no shim), the table (monitor, jlock file) or a lock server (JDLS). */
async function place(s: ShimEnv, where: Where): Promise<Place> {
  if (where === 'kernel') {
    const file = path.join(s.cli.dir, 'plain.dat');
    fs.writeFileSync(file, '');
    return { s, where, file, env: {} };
  }
  if (where === 'table') {
    await s.startMonitor();
    return { s, where, file: s.jlock(INODE, DEV), env: {} };
  }
  const JDLS = await s.startServer();
  return { s, where, file: s.jlock(INODE, DEV), env: { JDLS } };
}

/** Is pid blocked in a kernel lock wait? (/proc/locks lists blocked requests after "->") */
function kernelWaiting(pid: number): boolean {
  return fs.readFileSync('/proc/locks', 'utf8').split('\n').some((l) => l.includes('->') && l.split(/\s+/).includes(String(pid)));
}

/** Does process pid wait for a lock where `p` locks (kernel, or a WAITING entry of the table)? */
async function isWaiting(p: Place, pid: number): Promise<boolean> {
  if (p.where === 'kernel') return kernelWaiting(pid);
  // Direct route: the entry's pid is the process; remote: a lock-server
  // process holds it for its client, ownerPid is the client process.
  return (await p.s.locks()).some((l) => l.state === 'waiting' && (l.pid === pid || l.ownerPid === pid));
}

async function untilWaiting(t: ExecutionContext, p: Place, proc: BgProc, what: string): Promise<void> {
  const ok = await p.s.cli.until(async () => (await isWaiting(p, proc.pid)) || proc.child.exitCode !== null, 15_000);
  t.true(ok && proc.child.exitCode === null, `${what} waits (${p.where}); lines ${JSON.stringify(proc.lines)} ${proc.stderr()}`);
}

/**
 * The cycle: process i takes lock i, then (once told) waits for lock i+1,
 * the last one for lock 0. `args(i, own, next)` are the process's arguments:
 * take `own`, "line", wait for `next`, "hold". Process i is told to go only
 * after process i-1 really waits, so the last one closes the cycle. Then the
 * processes are let go from the last to the first (each one's exit releases
 * what the previous one waits for). Returns every process's lines.
 */
async function cycle(t: ExecutionContext, p: Place, cmd: string, n: number, args: (i: number) => string[], slowStart = false): Promise<string[][]> {
  const procs: BgProc[] = [];
  for (let i = 0; i < n; i++) procs.push(p.s.start(cmd, args(i), { preload: p.where !== 'kernel', env: p.env }));
  const first = slowStart ? 20_000 : 10_000;
  for (const [i, q] of procs.entries()) t.deepEqual(await q.firstLines(1, first), ['ok'], `process ${i} takes its own lock`);
  for (const [i, q] of procs.entries()) {
    q.child.stdin?.write('\n');
    await q.waitFor(/^go$/);
    if (i < n - 1) await untilWaiting(t, p, q, `process ${i}`);
  }
  const last = procs[n - 1];
  if (!last) throw new Error('no processes');
  // The closing request's answer, then (refused) it goes on to "hold".
  await last.firstLines(3, 15_000);
  const out: string[][] = [];
  for (let i = n - 1; i >= 0; i--) {
    const q = procs[i];
    if (!q) continue;
    await q.waitFor(/^holding$/, 15_000);
    t.is(await q.finish(), 0, `process ${i}: ${q.stderr()}`);
    out[i] = [...q.lines];
  }
  return out;
}

/** The cycle of n processes over bytes 1..n with shim-locker (fcntl F_SETLK to take, F_SETLKW to wait). */
function fcntlCycle(t: ExecutionContext, p: Place, n: number): Promise<string[][]> {
  return cycle(t, p, SHIM_LOCKER, n, (i) => [p.file, `w:${i + 1}`, 'line', `W:${((i + 1) % n) + 1}`, 'hold'], p.where === 'server');
}

// What the kernel answers, written down (each run also compares with a
// fresh kernel run): the request that closes the cycle gets EDEADLK and
// holds nothing new; every other wait is granted once the process after it
// has exited.
const GRANTED = ['ok', 'go', 'ok', 'holding', 'released'];
const REFUSED = ['ok', 'go', 'EDEADLK', 'holding', 'released'];

test.serial('kernel parity, direct route: two processes in a cycle - the F_SETLKW that closes it gets EDEADLK (the same process as with the kernel), the other is granted once it exits', async (t) => {
  const s = new ShimEnv(t);
  const kernel = await fcntlCycle(t, await place(s, 'kernel'), 2);
  t.deepEqual(kernel, [GRANTED, REFUSED], 'the kernel refuses the second waiter, which closes the cycle');
  const table = await fcntlCycle(t, await place(s, 'table'), 2);
  t.deepEqual(table, kernel);
  t.deepEqual(await s.locks(), [], 'nothing left in the table (the refused wait left no entry)');
});

test.serial('kernel parity, direct route: three processes in a cycle - the last one to wait gets EDEADLK', async (t) => {
  const s = new ShimEnv(t);
  const kernel = await fcntlCycle(t, await place(s, 'kernel'), 3);
  t.deepEqual(kernel, [GRANTED, GRANTED, REFUSED]);
  const table = await fcntlCycle(t, await place(s, 'table'), 3);
  t.deepEqual(table, kernel);
  t.deepEqual(await s.locks(), []);
});

test.serial('lockf(F_LOCK) (python os.lockf: libc lockf) gives EDEADLK as the kernel does; fcntl.lockf (F_SETLKW) too', async (t) => {
  const s = new ShimEnv(t);
  const py = (p: Place, wait: 'F' | 'f') => cycle(t, p, 'python3', 2, (i) => [LOCKF_CYCLE, p.file, `t:${i + 1}`, 'line', `${wait}:${((i + 1) % 2) + 1}`, 'hold']);
  const kp = await place(s, 'kernel');
  const kernel = await py(kp, 'F');
  t.deepEqual(kernel, [GRANTED, REFUSED]);
  t.deepEqual(await py(kp, 'f'), kernel);
  const tp = await place(s, 'table');
  t.deepEqual(await py(tp, 'F'), kernel);
  t.deepEqual(await py(tp, 'f'), kernel);
});

test.serial('remote route (JDLS=SERVER): the same two- and three-process cycles give the kernel\'s answers; the C API\'s BREAK_DEADLOCK and tokens over the server', async (t) => {
  const s = new ShimEnv(t);
  const p = await place(s, 'server');
  t.deepEqual(await fcntlCycle(t, p, 2), [GRANTED, REFUSED]);
  t.deepEqual(await fcntlCycle(t, p, 3), [GRANTED, GRANTED, REFUSED]);
  // The C API: the waiter that closes the cycle asked to be refused.
  const api = await cycle(t, p, SHIM_DEADLOCK, 2, (i) => [String(INODE), String(DEV), `x:K${i}`, 'line', `D:K${(i + 1) % 2}`, 'hold'], true);
  t.deepEqual(api, [['ok', 'go', 'ok', 'holding', 'released'], ['ok', 'go', 'deadlock', 'holding', 'released']]);
  // Tokens: > 0 and strictly increasing over the grants of one key.
  const log = path.join(s.cli.dir, 'grants-remote.log');
  const a = s.start(SHIM_DEADLOCK, [String(INODE), String(DEV), 'append:10:T:' + log], { env: p.env });
  const b = s.start(SHIM_DEADLOCK, [String(INODE), String(DEV), 'append:10:T:' + log], { env: p.env });
  t.is(await a.waitFor(/^appended$|err|deadlock/, 20_000), 'appended');
  t.is(await b.waitFor(/^appended$|err|deadlock/, 20_000), 'appended');
  await a.finish();
  await b.finish();
  checkTokens(t, log, [a.pid, b.pid], 20);
  t.deepEqual(await s.locks(), []);
});

/** The grant log of `append:` steps: n lines "<pid> <token>" in grant order; tokens > 0, strictly increasing; every pid took some. */
function checkTokens(t: ExecutionContext, log: string, pids: number[], n: number): void {
  const rows = fs.readFileSync(log, 'utf8').trim().split('\n').map((l) => l.split(' '));
  t.is(rows.length, n);
  const tokens = rows.map((r) => BigInt(r[1] ?? '0'));
  t.true(tokens.every((x) => x > 0n), `tokens > 0: ${tokens.join(' ')}`);
  t.true(tokens.every((x, i) => i === 0 || x > (tokens[i - 1] ?? 0n)), `strictly increasing in grant order: ${tokens.join(' ')}`);
  t.deepEqual([...new Set(rows.map((r) => Number(r[0])))].sort(), [...pids].sort(), 'both processes were granted');
}

test.serial('C API, direct route: JDLS_BREAK_DEADLOCK - the flagged wait that closes a cycle gets JDLS_LOCK_DEADLOCK; an unflagged one that closes it makes the older flagged waiter refused; unflagged waits only wait', async (t) => {
  const s = new ShimEnv(t);
  const p = await place(s, 'table');
  const api = (steps: (i: number) => string[]) => cycle(t, p, SHIM_DEADLOCK, 2, (i) => [String(INODE), String(DEV), `x:K${i}`, 'line', ...steps(i), 'hold']);
  // Both flagged: the one that closes the cycle is refused.
  t.deepEqual(await api((i) => [`D:K${(i + 1) % 2}`]), [
    ['ok', 'go', 'ok', 'holding', 'released'],
    ['ok', 'go', 'deadlock', 'holding', 'released'],
  ]);

  // Only the first waiter flagged: the closing one (unflagged) waits, the
  // first is refused - then it gives K0 up, and the second is granted.
  const a = s.start(SHIM_DEADLOCK, [String(INODE), String(DEV), 'x:K0', 'line', 'D:K1', 'u:K0', 'hold']);
  const b = s.start(SHIM_DEADLOCK, [String(INODE), String(DEV), 'x:K1', 'line', 'X:K0', 'hold']);
  t.deepEqual(await a.firstLines(1), ['ok']);
  t.deepEqual(await b.firstLines(1), ['ok']);
  a.child.stdin?.write('\n');
  await untilWaiting(t, p, a, 'a (flagged)');
  b.child.stdin?.write('\n');
  t.deepEqual(await a.firstLines(5, 15_000), ['ok', 'go', 'deadlock', 'ok', 'holding']);
  t.deepEqual(await b.firstLines(4, 15_000), ['ok', 'go', 'ok', 'holding']);
  await b.finish();
  await a.finish();

  // Neither flagged: both wait (jBASE's READU); the table only reports the
  // cycle. A killed member's locks are reaped and the other goes on.
  const c = s.start(SHIM_DEADLOCK, [String(INODE), String(DEV), 'x:K0', 'line', 'X:K1', 'hold']);
  const d = s.start(SHIM_DEADLOCK, [String(INODE), String(DEV), 'x:K1', 'line', 'X:K0', 'hold']);
  t.deepEqual(await c.firstLines(1), ['ok']);
  t.deepEqual(await d.firstLines(1), ['ok']);
  c.child.stdin?.write('\n');
  await untilWaiting(t, p, c, 'c');
  d.child.stdin?.write('\n');
  await untilWaiting(t, p, d, 'd');
  t.deepEqual(c.lines, ['ok', 'go'], 'c still waits');
  c.child.kill('SIGKILL');
  t.deepEqual(await d.firstLines(4, 15_000), ['ok', 'go', 'ok', 'holding']);
  await d.finish();
  t.deepEqual(await s.locks(), []);
});

test.serial('C API, direct route: jdls_record_token() is > 0, strictly increases over the grants of one key by two processes and at a READ->WRITE conversion (a same-mode re-lock keeps it); 0 on the OS route', async (t) => {
  const s = new ShimEnv(t);
  // OS route first (no monitor, no JDLS): OFD locks give no token.
  const os = await s.run(SHIM_DEADLOCK, [String(INODE), String(DEV), 'tok', 'x:K', 'tok']);
  t.is(os.code, 0, os.stderr);
  t.deepEqual(os.stdout.trim().split('\n'), ['token 0', 'ok', 'token 0']);

  await place(s, 'table');
  const conv = await s.run(SHIM_DEADLOCK, [String(INODE), String(DEV), 's:C', 'tok', 'x:C', 'tok', 'x:C', 'tok', 'x:Z', 'tok']);
  t.is(conv.code, 0, conv.stderr);
  const cl = conv.stdout.trim().split('\n');
  t.deepEqual([cl[0], cl[2], cl[4], cl[6]], ['ok', 'ok', 'ok', 'ok'], conv.stdout);
  const [t1, t2, t2again, t3] = [cl[1], cl[3], cl[5], cl[7]].map((l) => BigInt((l ?? '').replace(/^token /, '') || '0'));
  t.true(t1 !== undefined && t1 > 0n, `a grant has a token: ${conv.stdout}`);
  t.true(t2 !== undefined && t1 !== undefined && t2 > t1, `the conversion in place is a new grant with a higher token: ${conv.stdout}`);
  t.is(t2again, t2, 'a re-lock in the held mode keeps the lock\'s token');
  t.true(t3 !== undefined && t2 !== undefined && t3 > t2, `a later grant of another key: higher still: ${conv.stdout}`);

  const log = path.join(s.cli.dir, 'grants.log');
  const a = s.start(SHIM_DEADLOCK, [String(INODE), String(DEV), `append:20:T:${log}`]);
  const b = s.start(SHIM_DEADLOCK, [String(INODE), String(DEV), `append:20:T:${log}`]);
  t.is(await a.waitFor(/^appended$|err|deadlock/, 20_000), 'appended');
  t.is(await b.waitFor(/^appended$|err|deadlock/, 20_000), 'appended');
  await a.finish();
  await b.finish();
  checkTokens(t, log, [a.pid, b.pid], 40);
  t.deepEqual(await s.locks(), []);
});
