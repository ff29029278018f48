// binary.test.ts - binary locks (src/locks/binary.ts): group locks, FILELOCK,
// execution locks (LOCK n) and general byte ranges, with real separate
// processes: Node children through BinaryLocks (fixtures/node-binlocker),
// jdls-oslocker (C record locks, OFD or classic) and python3 (classic fcntl
// locks and F_GETLK probes, as any ordinary program takes them). Every test
// uses its own temporary directories, removed at the end with every child it
// started. Serial where many processes take part (liveness bounds on 2 cores).
import test, { type ExecutionContext } from 'ava';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { BinaryLocks, type BinaryLockResult } from '../src/locks/binary.js';
import { groupFileName, rangeFileName, execFileName, identitySuffix } from '../src/locks/binary-paths.js';
import { OsLocks, lockFileName } from '../src/locks/oslock.js';
import { OsLockError, pendingWaits } from '../src/locks/ofd.js';
import { JdlsError } from '../src/errors.js';
import { makeOwner, fileId, type Owner, type FileId } from '../src/locks/table.js';
import { buildDir } from '../src/native.js';
import { Proc, withTimeout, nodeFixture, tableEnv, waitUntil } from './helpers/table-env.js';
import { testDir } from './helpers/installations.js';

const oslocker = path.join(buildDir, 'jdls-oslocker');
const PROMPT_MS = 3000;
const F: FileId = fileId(0x4321n, -1n);
const F2: FileId = fileId(0x4322n, -1n);
const owner = (n: number): Owner => makeOwner({ ownerTid: 2_000_000 + n });

// python3: F_GETLK probes of ranges of a file (classic struct flock), then
// optionally a classic lockf lock held until a stdin line.
const PY_PROBE = [
  'import fcntl, os, struct, sys',
  'fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o666)',
  'for spec in sys.argv[2:]:',
  "    m, off, ln = spec.split(':')",
  "    t = fcntl.F_WRLCK if m == 'w' else fcntl.F_RDLCK",
  "    fl = struct.pack('hhqqi4x', t, 0, int(off, 0), int(ln, 0), 0)",
  '    r = fcntl.fcntl(fd, fcntl.F_GETLK, fl)',
  "    lt, wh, st, l, pid = struct.unpack('hhqqi4x', r)",
  '    if lt == fcntl.F_UNLCK:',
  "        print('FREE', flush=True)",
  '    else:',
  "        print('HELD', 'write' if lt == fcntl.F_WRLCK else 'read', pid, st, l, flush=True)",
].join('\n');

const PY_HOLD = [
  'import fcntl, os, sys',
  'fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o666)',
  "op = fcntl.LOCK_EX if sys.argv[2] == 'write' else fcntl.LOCK_SH",
  'off, ln = int(sys.argv[3], 0), int(sys.argv[4], 0)',
  'try:',
  '    fcntl.lockf(fd, op | fcntl.LOCK_NB, ln, off)',
  'except OSError as e:',
  "    print('CONFLICT', e.errno, flush=True); sys.exit(0)",
  "print('LOCKED', os.getpid(), flush=True)",
  'sys.stdin.readline()',
  'fcntl.lockf(fd, fcntl.LOCK_UN, ln, off)',
  "print('RELEASED', flush=True)",
].join('\n');

interface BinEnv {
  base: string;
  binaryDir: string;
  recordDir: string;
  b: BinaryLocks;
  m: OsLocks;
  /** node-binlocker <binaryDir> <recordDir> args... */
  node(args: string[]): Proc;
  /** jdls-oslocker <recordDir> <inode> <dev> args... (record locks of `file`) */
  c(args: string[], file?: FileId): Proc;
  /** python3 F_GETLK probes: specs "w:<off>:<len>" / "r:..." -> FREE | HELD <mode> <pid> <start> <len> */
  probe(file: string, specs: string[]): Proc;
  /** python3 classic lockf of [off, off+len): LOCKED <pid> | CONFLICT <errno>; holds until a stdin line */
  pyHold(file: string, mode: 'read' | 'write', off: bigint, len: bigint): Proc;
}

function binEnv(t: ExecutionContext): BinEnv {
  const base = testDir('binary');
  const binaryDir = path.join(base, 'jbase_lock');
  const recordDir = path.join(base, 'jbase');
  const procs: Proc[] = [];
  let b: BinaryLocks | undefined;
  let m: OsLocks | undefined;
  t.teardown(async () => {
    for (const p of procs) {
      if (p.running) {
        try { process.kill(p.pid, 'SIGKILL'); } catch { /* gone meanwhile */ }
      }
    }
    await Promise.all(procs.map((p) => withTimeout(p.exited, 5000, `${p.label} to die`).catch(() => undefined)));
    b?.close();
    m?.close();
    fs.rmSync(base, { recursive: true, force: true });
  });
  b = BinaryLocks.open({ binaryDir, recordLockDir: recordDir });
  m = OsLocks.open({ lockDir: recordDir });
  const start = (label: string, cmd: string, args: string[]): Proc => {
    const p = new Proc(spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] }), label);
    procs.push(p);
    return p;
  };
  return {
    base, binaryDir, recordDir, b, m,
    node: (args) => start(`node-binlocker ${args.join(' ')}`, process.execPath, [nodeFixture('node-binlocker'), binaryDir, recordDir, ...args]),
    c: (args, f = F) => start(`jdls-oslocker ${args.join(' ')}`, oslocker, [recordDir, String(f.inode), String(f.dev), ...args]),
    probe: (file, specs) => start(`python3 probe ${specs.join(' ')}`, 'python3', ['-c', PY_PROBE, file, ...specs]),
    pyHold: (file, mode, off, len) => start(`python3 lockf ${mode} ${off}+${len}`, 'python3', ['-c', PY_HOLD, file, mode, String(off), String(len)]),
  };
}

/** Resolves to 'pending' if p has not settled within ms (p keeps running). */
async function stillPending(p: Promise<unknown>, ms: number): Promise<boolean> {
  let settled = false;
  p.then(() => { settled = true; }, () => { settled = true; });
  await new Promise((r) => setTimeout(r, ms));
  return !settled;
}

const refused = (r: BinaryLockResult): NonNullable<Extract<BinaryLockResult, { granted: false }>['holder']> => {
  if (r.granted) throw new Error('expected a refusal, the lock was granted');
  return r.holder;
};

async function rejectsWith(t: ExecutionContext, p: Promise<unknown>, code: string): Promise<JdlsError | undefined> {
  const e = await t.throwsAsync(p, { instanceOf: JdlsError });
  t.is(e?.code as string | undefined, code, e?.message);
  return e instanceof JdlsError ? e : undefined;
}

// ---- names and directories ------------------------------------------------------

test('pseudo file names follow the record-lock file rule (low 32 bits, dev -1 -> ffffffff)', (t) => {
  const big = fileId(0x12345678_9abcdef0n, -1n);
  t.is(identitySuffix(big), '9abcdef0_ffffffff');
  t.is(path.basename(groupFileName('/d', big)), 'jgroup_9abcdef0_ffffffff');
  t.is(path.basename(rangeFileName('/d', fileId(0x2an, 0x1_0000_0005n))), 'jrange_0000002a_00000005');
  t.is(execFileName('/d'), '/d/jexec');
  for (const f of [big, fileId(0, 0), fileId(0xffffffffn, 7n), F]) {
    t.is(path.basename(groupFileName('/d', f)).slice('jgroup_'.length), path.basename(lockFileName('/d', f)).slice('jlock_'.length));
  }
});

test('open creates both directories (02770 in a parent others cannot write: the test\'s directory; 01777 in /tmp - test/oslock.test.ts); errors are OsLockError naming the path', (t) => {
  const env = binEnv(t);
  for (const d of [env.binaryDir, env.recordDir]) t.is(fs.statSync(d).mode & 0o7777, 0o2770, d);
  const missing = path.join(env.base, 'no', 'such');
  const e1 = t.throws(() => BinaryLocks.open({ binaryDir: missing, recordLockDir: env.recordDir }), { instanceOf: OsLockError });
  t.is(e1?.code, 'BAD_LOCK_DIR');
  t.true(e1?.message.includes(missing), e1?.message);
  fs.writeFileSync(path.join(env.base, 'plain'), '');
  const e2 = t.throws(() => BinaryLocks.open({ binaryDir: env.binaryDir, recordLockDir: path.join(env.base, 'plain') }), { instanceOf: OsLockError });
  t.is(e2?.code, 'BAD_LOCK_DIR');
  t.true(e2?.message.includes(path.join(env.base, 'plain')), e2?.message);
});

// ---- execution locks ------------------------------------------------------------

test('LOCK n: numbers out of 0..255 are refused naming n; 0 and 255 work', async (t) => {
  const env = binEnv(t);
  const a = owner(1);
  for (const n of [-1, 256, 1.5, Number.NaN, Infinity]) {
    const e = await rejectsWith(t, env.b.execLock(a, n), 'BAD_ARGUMENT');
    t.true(e?.message.includes(String(n)), e?.message);
    t.throws(() => env.b.execUnlock(a, n), { instanceOf: JdlsError, message: new RegExp(String(n)) });
  }
  t.deepEqual(await env.b.execLock(a, 0), { granted: true });
  t.deepEqual(await env.b.execLock(a, 255), { granted: true });
  t.deepEqual(env.b.listing().map((r) => [r.kind, r.n, r.mode, r.lockFile]), [
    ['exec', 0, 'write', path.join(env.binaryDir, 'jexec')],
    ['exec', 255, 'write', path.join(env.binaryDir, 'jexec')],
  ]);
  t.is(env.b.execUnlock(a, 0), 1);
  t.is(env.b.execUnlock(a, 0), 0, 'UNLOCK of a number not held');
  t.is(env.b.execUnlock(a), 1, 'bare UNLOCK: what is left');
  t.is(env.b.listing().length, 0);
  t.is(env.b.openFiles(), 0, 'an owner holding nothing keeps no descriptor');
});

test('LOCK 7: two owners of one process contend; ELSE names the holder; bare UNLOCK releases all and wakes the waiter', async (t) => {
  const env = binEnv(t);
  const a = owner(1);
  const b = owner(2);
  for (const n of [3, 7, 8]) t.true((await env.b.execLock(a, n)).granted);
  const h = refused(await env.b.execLock(b, 7, { wait: false }));
  t.like(h, { pid: process.pid, ownerTid: a.ownerTid, mode: 'write', start: 7n, len: 1n });
  t.true((await env.b.execLock(b, 9, { wait: false })).granted, 'another number is free');
  const waiting = env.b.execLock(b, 7);
  t.true(await stillPending(waiting, 200), 'LOCK 7 waits while another owner holds it');
  t.is(env.b.execUnlock(a), 3, 'bare UNLOCK releases 3, 7 and 8');
  t.deepEqual(await withTimeout(waiting, PROMPT_MS, 'LOCK 7 after UNLOCK'), { granted: true });
  t.deepEqual(env.b.listing().map((r) => [r.n, r.ownerTid]), [[7, b.ownerTid], [9, b.ownerTid]]);
  // Another process sees it too (an OFD holder: pid -1).
  const c = env.node(['try', 'exec:7']);
  t.deepEqual(await c.expect('CONFLICT'), ['-1', 'write', '7', '1']);
  await c.success();
  const d = env.node(['try', 'exec:3']);
  await d.expect('GRANTED');
  await d.success();
});

// ---- group locks ----------------------------------------------------------------

test('group locks: two owners of one process conflict (write), share (read), and different groups do not conflict', async (t) => {
  const env = binEnv(t);
  const a = owner(1);
  const b = owner(2);
  t.true((await env.b.groupLock(a, F, 3, 'write')).granted);
  t.like(refused(await env.b.groupLock(b, F, 3, 'write', { wait: false })), { ownerTid: a.ownerTid, mode: 'write', start: 3n, len: 1n });
  t.like(refused(await env.b.groupLock(b, F, 3, 'read', { wait: false })), { ownerTid: a.ownerTid });
  t.true((await env.b.groupLock(b, F, 4, 'write', { wait: false })).granted, 'group 4 is another byte');
  t.true((await env.b.groupLock(b, F2, 3, 'write', { wait: false })).granted, 'group 3 of another file is another file');
  t.true((await env.b.groupLock(a, F, 3, 'read')).granted, 'downgrade by the holder');
  t.true((await env.b.groupLock(b, F, 3, 'read', { wait: false })).granted, 'read shares with read');
  t.true(env.b.groupUnlock(b, F, 3));
  t.false(env.b.groupUnlock(b, F, 3), 'not held any more');
  t.true(env.b.groupUnlock(a, F, 3));
  t.deepEqual(env.b.listing().map((r) => [r.kind, r.group, r.inode, r.dev, r.ownerTid]).sort(), [
    ['group', 4, F.inode, F.dev, b.ownerTid], ['group', 3, F2.inode, F2.dev, b.ownerTid],
  ].sort());
  for (const g of [-1, 2 ** 32, 0.5]) await rejectsWith(t, env.b.groupLock(a, F, g, 'write'), 'BAD_ARGUMENT');
  t.is(fs.statSync(groupFileName(env.binaryDir, F)).isFile(), true);
});

test.serial('group locks: two processes contend; the waiter is woken when the other releases', async (t) => {
  const env = binEnv(t);
  const child = env.node(['hold', `group:${F.inode}:${F.dev}:7:write`]);
  await child.expect('LOCKED');
  const a = owner(1);
  const h = refused(await env.b.groupLock(a, F, 7, 'read', { wait: false }));
  t.like(h, { pid: -1, mode: 'write', start: 7n, len: 1n }, 'an OFD holder in another process: pid -1');
  t.true((await env.b.groupLock(a, F, 8, 'write', { wait: false })).granted, 'group 8 is free');
  const waiting = env.b.groupLock(a, F, 7, 'write');
  t.true(await stillPending(waiting, 200));
  child.release();
  await child.expect('RELEASED');
  t.deepEqual(await withTimeout(waiting, PROMPT_MS, 'group 7 after the other process released it'), { granted: true });
  const c = env.node(['try', `group:${F.inode}:${F.dev}:7:read`]);
  t.deepEqual(await c.expect('CONFLICT'), ['-1', 'write', '7', '1']);
  await c.success();
  await child.success();
});

// ---- FILELOCK -----------------------------------------------------------------

test.serial('FILELOCK waits for the record locks of its file to drain, then blocks new ones until FILEUNLOCK; other files unaffected', async (t) => {
  const env = binEnv(t);
  const x = owner(1);
  const y = owner(2);
  const r = owner(3);
  // A classic record lock in another process, and an OFD one of this process (through OsLocks).
  const c = env.c(['hold', 'K1', 'write', 'classic']);
  await c.expect('LOCKED');
  t.true(env.m.tryLock(r, F, 'K2', 'read').granted);

  const nowait = refused(await env.b.fileLock(y, F, env.m, { wait: false }));
  t.true(nowait.pid === c.pid || nowait.ownerTid === r.ownerTid, `NOWAIT names a holder: ${JSON.stringify(nowait, (_, v: unknown) => (typeof v === 'bigint' ? String(v) : v))}`);

  const fl = env.b.fileLock(x, F, env.m);
  t.true(await stillPending(fl, 250), 'FILELOCK waits while record locks remain');
  c.release();
  await c.expect('RELEASED');
  t.true(await stillPending(fl, 250), 'still one record lock (K2) in the file');
  // Now only K2 (OsLocks, this process) remains: NOWAIT names it in full.
  t.like(refused(await env.b.fileLock(y, F, env.m, { wait: false })), { pid: process.pid, ownerTid: r.ownerTid, mode: 'read' });
  t.true(env.m.unlock(r, F, 'K2'));
  t.deepEqual(await withTimeout(fl, PROMPT_MS, 'FILELOCK after the record locks drained'), { granted: true });
  t.true(env.b.fileLocked(x, F));
  t.false(env.b.fileLocked(y, F));
  t.false(env.b.fileLocked(x, F2));
  t.like(env.b.fileLockHolder(F), { ownerTid: x.ownerTid, start: 0n, len: 0n });
  t.deepEqual(env.b.listing().map((l) => [l.kind, l.lockFile, l.start, l.len, l.mode]), [['file', env.m.lockFile(F), 0n, 0n, 'write']]);

  // New record locks of F are refused (other process and this one), those of F2 are not.
  const t1 = env.c(['try', 'K3', 'read', 'ofd']);
  t.deepEqual(await t1.expect('CONFLICT'), ['-1', 'write']);
  await t1.success();
  t.false(env.m.tryLock(r, F, 'K3', 'read').granted);
  const t2 = env.c(['try', 'K3', 'write', 'classic'], F2);
  await t2.expect('GRANTED');
  await t2.success();
  t.true(env.m.tryLock(r, F2, 'K3', 'write').granted);
  // A waiting record lock in another process is granted only after FILEUNLOCK.
  const w = env.c(['hold', 'K4', 'write', 'ofd']);
  const locked = w.expect('LOCKED', 10_000);
  t.true(await stillPending(locked, 300), 'a record lock waits while the FILELOCK is held');
  t.true(env.b.fileUnlock(x, F));
  t.false(env.b.fileUnlock(x, F), 'not held any more');
  await withTimeout(locked, PROMPT_MS, 'the record lock after FILEUNLOCK');
  t.false(env.b.fileLocked(x, F));
  w.release();
  await w.expect('RELEASED');
  await w.success();
});

test('FILELOCK is refused under the shared-memory table (no silent half-lock) and with another lock dir; over its owner\'s own record locks it is granted (jBASE)', async (t) => {
  const env = binEnv(t);
  const tenv = tableEnv(t);
  const x = owner(1);
  for (const mech of [tenv.table, 'shm' as const]) {
    const e = await rejectsWith(t, env.b.fileLock(x, F, mech), 'NOT_SUPPORTED');
    t.regex(e?.message ?? '', /OS record-lock mechanism/);
    t.is(e?.jbaseError, 22);
  }
  t.is(env.b.listing().length, 0);
  t.is(env.b.openFiles(), 0);
  t.false(fs.existsSync(env.m.lockFile(F)), 'nothing was even opened');
  // Over the owner's own record locks in that file: granted at once (the
  // FILELOCK is taken on the owner's own record-lock description), and the
  // owner keeps locking records of its file; another owner is kept out.
  // (It was refused with NOT_SUPPORTED before issue 11.)
  t.true(env.m.tryLock(x, F, 'K', 'write').granted);
  t.true((await env.b.fileLock(x, F, env.m, { wait: false })).granted);
  t.true(env.b.fileLocked(x, F));
  t.true(env.m.tryLock(x, F, 'K2', 'read').granted);
  const y = owner(2);
  t.false(env.m.tryLock(y, F, 'K3', 'read').granted);
  t.is(env.m.status(x, F, 'K3').code, 3);
  t.like(env.m.status(y, F, 'K3'), { code: -3, holder: { ownerTid: x.ownerTid } });
  t.true(env.b.fileUnlock(x, F));
  // After FILEUNLOCK the owner's record locks are what they were: K exclusive, K2 shared.
  t.false(env.m.tryLock(y, F, 'K', 'read').granted);
  t.true(env.m.tryLock(y, F, 'K2', 'read').granted);
  t.true(env.m.tryLock(y, F, 'K3', 'write').granted);
  env.m.unlockAll(x);
  env.m.unlockAll(y);
  const other = OsLocks.open({ lockDir: path.join(env.base, 'elsewhere') });
  t.teardown(() => other.close());
  await rejectsWith(t, env.b.fileLock(x, F, other), 'BAD_ARGUMENT');
  await rejectsWith(t, env.b.fileLock(x, F, 'nfs' as 'os'), 'BAD_ARGUMENT');
});

// ---- death ---------------------------------------------------------------------

test.serial('kill -9 of a process holding group, execution and file locks releases them all', async (t) => {
  const env = binEnv(t);
  const child = env.node(['hold', `group:${F.inode}:${F.dev}:5:write`, 'exec:9', `file:${F.inode}:${F.dev}`, `range:${F.inode}:${F.dev}:1073741824:512:write`]);
  await child.expect('LOCKED');
  const a = owner(1);
  t.false((await env.b.groupLock(a, F, 5, 'read', { wait: false })).granted);
  t.false((await env.b.execLock(a, 9, { wait: false })).granted);
  t.false((await env.b.fileLock(a, F, env.m, { wait: false })).granted);
  t.false((await env.b.rangeLock(a, F, 0x40000100n, 1n, 'read', { wait: false })).granted);
  t.false(env.m.tryLock(a, F, 'ANY', 'read').granted, 'the FILELOCK blocks record locks');
  const waits = [
    env.b.groupLock(a, F, 5, 'write', { timeoutMs: 5000 }),
    env.b.execLock(a, 9, { timeoutMs: 5000 }),
    env.b.rangeLock(a, F, 0x40000000n, 512n, 'write', { timeoutMs: 5000 }),
  ];
  t.true(await stillPending(Promise.race(waits), 150));
  await child.kill9();
  for (const r of await withTimeout(Promise.all(waits), PROMPT_MS, 'the locks after kill -9')) t.deepEqual(r, { granted: true });
  t.true((await env.b.fileLock(a, F, env.m, { wait: false })).granted);
  t.is(env.b.releaseAll(a), 4);
  t.is(env.b.openFiles(), 0);
});

// ---- byte ranges ---------------------------------------------------------------

test.serial('byte ranges: a partial unlock splits the range, seen by another process (python F_GETLK) and a second owner', async (t) => {
  const env = binEnv(t);
  const a = owner(1);
  const b = owner(2);
  t.true((await env.b.rangeLock(a, F, 100n, 100n, 'write')).granted);
  t.true(env.b.rangeUnlock(a, F, 140n, 20n));
  t.deepEqual(env.b.listing().map((r) => [r.kind, r.start, r.len, r.mode]), [['range', 100n, 40n, 'write'], ['range', 160n, 40n, 'write']]);
  const lf = rangeFileName(env.binaryDir, F);
  const p = env.probe(lf, ['w:120:1', 'w:150:1', 'w:170:1', 'r:0:0']);
  t.deepEqual(await p.expect('HELD'), ['write', '-1', '100', '40'], 'an OFD lock: classic F_GETLK says pid -1');
  await p.expect('FREE');
  t.deepEqual(await p.expect('HELD'), ['write', '-1', '160', '40']);
  t.deepEqual(await p.expect('HELD'), ['write', '-1', '100', '40'], 'the first of the two pieces');
  await p.success();
  t.like(env.b.rangeTest(b, F, 120n, 1n, 'read'), { ownerTid: a.ownerTid, start: 100n, len: 40n, mode: 'write' });
  t.is(env.b.rangeTest(b, F, 140n, 20n, 'write'), undefined, 'the hole is free');
  t.is(env.b.rangeTest(a, F, 0n, 0n, 'write'), undefined, 'own locks never conflict');
  t.true((await env.b.rangeLock(b, F, 140n, 20n, 'write', { wait: false })).granted);
  // Merge: a's read over the hole's neighbours converts them; unlocking all leaves b alone.
  t.true((await env.b.rangeLock(a, F, 150n, 0n, 'read', { wait: false })).granted === false, 'b holds 150..159');
  t.true((await env.b.rangeLock(a, F, 160n, 0n, 'read')).granted);
  t.deepEqual(env.b.listing().filter((r) => r.ownerTid === a.ownerTid).map((r) => [r.start, r.len, r.mode]), [[100n, 40n, 'write'], [160n, 0n, 'read']]);
  t.true(env.b.rangeUnlock(a, F, 0n, 0n));
  t.deepEqual(env.b.listing().map((r) => [r.ownerTid, r.start, r.len]), [[b.ownerTid, 140n, 20n]]);
  for (const [s, l] of [[-1n, 1n], [0n, -5n], [1n << 63n, 1n], [(1n << 63n) - 1n, 2n]] as const) {
    await rejectsWith(t, env.b.rangeLock(a, F, s, l, 'write'), 'BAD_ARGUMENT');
  }
  t.true((await env.b.rangeLock(a, F, (1n << 63n) - 1n, 1n, 'write')).granted, 'the last byte the kernel can lock');
});

test.serial('sqlite-like ranges at 0x40000000 on a real file: two owners, a classic-lock process, EXCLUSIVE merges to one segment', async (t) => {
  const env = binEnv(t);
  const db = path.join(env.base, 'test.db');
  fs.writeFileSync(db, '');
  const target = { path: db };
  const PENDING = 0x40000000n;
  const RESERVED = PENDING + 1n;
  const SHARED = PENDING + 2n;
  const a = owner(1);
  const b = owner(2);
  // Both connections go to SHARED the way sqlite does: PENDING read, SHARED read, PENDING released.
  for (const o of [a, b]) {
    t.true((await env.b.rangeLock(o, target, PENDING, 1n, 'read')).granted);
    t.true((await env.b.rangeLock(o, target, SHARED, 510n, 'read')).granted);
    t.true(env.b.rangeUnlock(o, target, PENDING, 1n));
  }
  const p1 = env.probe(db, [`w:${SHARED}:510`, `w:${PENDING}:1`]);
  t.deepEqual((await p1.expect('HELD')).slice(0, 2), ['read', '-1']);
  await p1.expect('FREE');
  await p1.success();
  // a: RESERVED, PENDING, then EXCLUSIVE - which must wait for b's SHARED.
  t.true((await env.b.rangeLock(a, target, RESERVED, 1n, 'write')).granted);
  t.true((await env.b.rangeLock(a, target, PENDING, 1n, 'write')).granted);
  t.like(refused(await env.b.rangeLock(a, target, SHARED, 510n, 'write', { wait: false })), { ownerTid: b.ownerTid, mode: 'read', start: SHARED, len: 510n });
  const excl = env.b.rangeLock(a, target, SHARED, 510n, 'write');
  t.true(await stillPending(excl, 150));
  t.true(env.b.rangeUnlock(b, target, 0n, 0n), 'sqlite releases with start 0, len 0');
  t.deepEqual(await withTimeout(excl, PROMPT_MS, 'EXCLUSIVE after the reader left'), { granted: true });
  t.deepEqual(env.b.listing().map((r) => [r.kind, r.lockFile, r.start, r.len, r.mode, r.ownerTid]), [['range', db, PENDING, 512n, 'write', a.ownerTid]]);
  const held = env.pyHold(db, 'read', SHARED + 100n, 1n);
  const [errno] = await held.expect('CONFLICT');
  t.true(errno === String(os.constants.errno.EAGAIN) || errno === String(os.constants.errno.EACCES), `a classic lock of another process is refused (errno ${errno})`);
  await held.success();
  t.true(env.b.rangeUnlock(a, target, 0n, 0n));
  // A classic holder is named by pid.
  const py = env.pyHold(db, 'read', SHARED, 510n);
  const [pid] = await py.expect('LOCKED');
  t.like(refused(await env.b.rangeLock(a, target, PENDING, 512n, 'write', { wait: false })), { pid: Number(pid), mode: 'read', start: SHARED, len: 510n });
  t.like(env.b.rangeTest(b, target, SHARED, 1n, 'write'), { pid: Number(pid) });
  py.release();
  await py.expect('RELEASED');
  await py.success();
  t.true((await env.b.rangeLock(a, target, PENDING, 512n, 'write', { wait: false })).granted);
  await rejectsWith(t, env.b.rangeLock(a, { path: path.join(env.base, 'missing.db') }, 0n, 1n, 'read'), 'BAD_PATH');
  t.is(env.b.releaseAll(a), 1);
});

// ---- waits ---------------------------------------------------------------------

test.serial('waits do not block the event loop; timeout and abort leave nothing held; releaseAll rejects a pending wait', async (t) => {
  const env = binEnv(t);
  const a = owner(1);
  const b = owner(2);
  t.true((await env.b.groupLock(a, F, 5, 'write')).granted);
  const before = pendingWaits();
  let ticks = 0;
  const timer = setInterval(() => { ticks++; }, 5);
  try {
    // Timers and pool work run WHILE a wait is pending: awaited with the wait
    // still pending (no timeout on it), not counted against its timeout (a
    // loaded machine may run few 5 ms ticks within 300 ms).
    let settled = false;
    const ac0 = new AbortController();
    const w0 = env.b.groupLock(b, F, 5, 'write', { signal: ac0.signal });
    void w0.then(() => (settled = true), () => (settled = true));
    const stats = await Promise.all(Array.from({ length: 8 }, () => fs.promises.stat(env.base)));
    t.is(stats.length, 8, 'the libuv pool is free while waiting');
    await waitUntil(() => ticks >= 10 || settled, 20_000, 'ten timer ticks');
    t.false(settled, `timers ran while waiting (${ticks} ticks)`);
    ac0.abort();
    await rejectsWith(t, w0, 'ABORTED');
    const w = env.b.groupLock(b, F, 5, 'write', { timeoutMs: 300 });
    await rejectsWith(t, w, 'TIMEOUT');
  } finally {
    clearInterval(timer);
  }
  const ac = new AbortController();
  const w2 = env.b.execLock(b, 1, { signal: ac.signal });
  t.true((await env.b.execLock(a, 2, { wait: false })).granted);
  const w3 = env.b.execLock(b, 2, { signal: ac.signal });
  setTimeout(() => ac.abort(), 50);
  t.deepEqual(await w2, { granted: true }, 'LOCK 1 was free');
  await rejectsWith(t, w3, 'ABORTED');
  await rejectsWith(t, env.b.execLock(b, 2, { signal: ac.signal }), 'ABORTED');
  t.is(pendingWaits(), before);
  t.deepEqual(env.b.listing().filter((r) => r.ownerTid === b.ownerTid).map((r) => [r.kind, r.n]), [['exec', 1]], 'only what was granted');
  // After a's release, another process gets group 5 and LOCK 2 at once: b's withdrawn waits took nothing.
  t.is(env.b.releaseAll(a), 2);
  const c = env.node(['try', `group:${F.inode}:${F.dev}:5:write`]);
  await c.expect('GRANTED');
  await c.success();
  const d = env.node(['try', 'exec:2']);
  await d.expect('GRANTED');
  await d.success();
  // A pending wait of an owner being released rejects with CLOSED.
  t.true((await env.b.groupLock(a, F, 6, 'write')).granted);
  const w4 = env.b.groupLock(b, F, 6, 'write');
  t.true(await stillPending(w4, 50));
  t.is(env.b.releaseAll(b), 1);
  await rejectsWith(t, w4, 'CLOSED');
  t.is(env.b.releaseAll(a), 1);
  t.is(env.b.openFiles(), 0);
  t.is(pendingWaits(), before);
});

test('close(): pending waits reject CLOSED, every lock is released, later calls fail CLOSED', async (t) => {
  const env = binEnv(t);
  const other = BinaryLocks.open({ binaryDir: env.binaryDir, recordLockDir: env.recordDir });
  t.teardown(() => other.close());
  const a = owner(1);
  const b = owner(2);
  t.true((await env.b.groupLock(a, F, 1, 'write')).granted);
  const w = other.groupLock(b, F, 1, 'write');
  t.true(await stillPending(w, 50));
  other.close();
  await rejectsWith(t, w, 'CLOSED');
  await rejectsWith(t, other.execLock(b, 1), 'CLOSED');
  t.throws(() => other.listing().length === 0 && other.releaseAll(b), { instanceOf: JdlsError });
  t.true((await env.b.execLock(b, 3)).granted);
  env.b.close();
  const fresh = BinaryLocks.open({ binaryDir: env.binaryDir, recordLockDir: env.recordDir });
  t.teardown(() => fresh.close());
  t.true((await fresh.groupLock(b, F, 1, 'write', { wait: false })).granted, 'close released group 1');
  t.true((await fresh.execLock(a, 3, { wait: false })).granted, 'close released LOCK 3');
});
