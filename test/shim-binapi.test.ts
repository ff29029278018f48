// shim-binapi.test.ts - the C API's binary locks: LOCK n / UNLOCK n and
// FILELOCK / FILEUNLOCK, locally as the OS locks src/locks/binary.ts takes (so a
// Node process's BinaryLocks and a preloaded C runtime exclude each other);
// FILELOCK refused while record locks are in the shm table; with JDLS and
// BINARY on the server (RANGE_* in the EXEC / FILELOCK spaces).
// Serial: each test runs several processes and the machine has 2 cores.
import test from 'ava';
import path from 'node:path';
import { ShimEnv, SHIM_API } from './helpers/shim-env.js';
import { BinaryLocks } from '../src/locks/binary.js';
import { makeOwner, fileId } from '../src/locks/table.js';

const ENOTSUP = 95;

test.serial('LOCK n: exclusive per process, UNLOCK n / bare UNLOCK, and the same OS lock as BinaryLocks.execLock', async (t) => {
  const s = new ShimEnv(t);
  const binaryDir = path.join(s.cli.dir, 'jbase_lock');
  const env = { JDLS_BINARY_DIR: binaryDir };
  const a = s.start(SHIM_API, ['1', '2', 'lock:7', 'lock:7', 'lock:9', 'hold'], { env });
  await a.waitFor(/^holding$/);
  t.deepEqual(a.lines.slice(0, 3), ['ok', 'ok', 'ok'], 'a re-lock by the owner succeeds');
  const b = await s.run(SHIM_API, ['1', '2', 'lock:7', 'lock:8', 'unlock:8', 'lock:9'], { env });
  t.deepEqual(b.stdout.trim().split('\n'), ['locked port=0', 'ok', 'ok', 'locked port=0']);
  const bin = BinaryLocks.open({ binaryDir, recordLockDir: s.lockDir });
  t.teardown(() => bin.close());
  const node = makeOwner();
  t.false((await bin.execLock(node, 7, { wait: false })).granted, 'Node is excluded by the C runtime');
  t.true((await bin.execLock(node, 10, { wait: false })).granted);
  const c = await s.run(SHIM_API, ['1', '2', 'lock:10'], { env });
  t.is(c.stdout.trim(), 'locked port=0', 'and the C runtime by Node');
  t.is(bin.execUnlock(node), 1);
  t.is(await a.finish(), 0);
  const d = await s.run(SHIM_API, ['1', '2', 'lock:7', 'lock:9', 'unlock:-1', 'lock:7'], { env });
  t.deepEqual(d.stdout.trim().split('\n'), ['ok', 'ok', 'ok', 'ok']);
});

test.serial('FILELOCK (no monitor): refused while another process holds record locks of the file, then blocks new ones; FILEUNLOCK', async (t) => {
  const s = new ShimEnv(t);
  const a = s.start(SHIM_API, ['4242', '7', 'x:K1', 'hold']);
  await a.waitFor(/^holding$/);
  t.deepEqual(a.lines.slice(0, 1), ['ok']);
  const b1 = await s.run(SHIM_API, ['4242', '7', 'filelock']);
  t.is(b1.stdout.trim(), 'locked port=0');
  t.is(await a.finish(), 0);
  const b = s.start(SHIM_API, ['4242', '7', 'x:OWN', 'filelock', 'hold']);
  await b.waitFor(/^holding$/);
  t.deepEqual(b.lines.slice(0, 2), ['ok', 'ok'], 'over its own record locks');
  const c = await s.run(SHIM_API, ['4242', '7', 'x:K2', 's:K3', 'fileunlock']);
  // (a FILEUNLOCK of a FILELOCK it does not hold: 'notheld', and b keeps it)
  t.deepEqual(c.stdout.trim().split('\n'), ['locked port=0', 'locked port=0', 'notheld']);
  // the OS record locks of a Node process see it too
  const bin = BinaryLocks.open({ binaryDir: path.join(s.cli.dir, 'jbase_lock'), recordLockDir: s.lockDir });
  t.teardown(() => bin.close());
  t.false((await bin.fileLock(makeOwner(), fileId(4242, 7), 'os', { wait: false })).granted);
  t.is(await b.finish(), 0);
  const d = await s.run(SHIM_API, ['4242', '7', 'filelock', 'x:K2', 'fileunlock']);
  t.deepEqual(d.stdout.trim().split('\n'), ['ok', 'ok', 'ok']);
});

test.serial('FILELOCK (no monitor) keeps jBASE\'s rules for its owner: record unlocks and READs while it is held leave it whole, FILEUNLOCK keeps the owner\'s record locks, RELEASE keeps the FILELOCK', async (t) => {
  const s = new ShimEnv(t);
  const a = s.start(SHIM_API, ['4242', '7', 'x:K1', 's:K2', 'filelock', 'u:K1', 's:K3', 'st:K9', 'line', 'fileunlock', 'st:K2', 'st:K1', 'line', 'filelock', 'uf', 'line', 'fileunlock', 'hold']);
  const lines = (n: number): Promise<string[]> => a.firstLines(n);
  const probe = async (...steps: string[]): Promise<string[]> => (await s.run(SHIM_API, ['4242', '7', ...steps])).stdout.trim().split('\n');
  // RECORDLOCKED: 3 for the FILELOCK's owner, -3 for the others.
  t.deepEqual(await lines(6), ['ok', 'ok', 'ok', 'ok', 'ok', 'status 3 port=0']);
  // FILELOCK held; the owner released K1 and took K3 shared meanwhile: no hole for anyone else.
  t.deepEqual(await probe('x:K1', 's:K3', 's:K2', 'x:K9', 'st:K9'), ['locked port=0', 'locked port=0', 'locked port=0', 'locked port=0', 'status -3 port=0']);
  a.child.stdin?.write('\n');
  t.deepEqual((await lines(10)).slice(6), ['read', 'ok', 'status 1 port=0', 'status 0 port=0']);
  // After FILEUNLOCK the owner still holds K2 and K3 shared, not K1; the rest of the file is free.
  t.deepEqual(await probe('s:K2', 'x:K2', 's:K3', 'x:K3', 'x:K1', 'x:K9'), ['ok', 'locked port=0', 'ok', 'locked port=0', 'ok', 'ok']);
  a.child.stdin?.write('\n');
  t.deepEqual((await lines(13)).slice(10), ['read', 'ok', 'released 0']);
  // RELEASE of the file's record locks (uf) leaves the FILELOCK: the file stays locked.
  t.deepEqual(await probe('x:K9', 's:K2'), ['locked port=0', 'locked port=0']);
  a.child.stdin?.write('\n');
  t.deepEqual((await lines(16)).slice(13), ['read', 'ok', 'holding']);
  t.deepEqual(await probe('x:K2', 'x:K3', 'x:K9'), ['ok', 'ok', 'ok'], 'uf released K2 and K3, FILEUNLOCK the rest');
  t.is(await a.finish(), 0);
});

test.serial('FILELOCK with the monitor running (record locks in the shm table) is refused: ENOTSUP', async (t) => {
  const s = new ShimEnv(t);
  await s.startMonitor();
  const r = await s.run(SHIM_API, ['4242', '7', 'filelock', 'fileunlock', 'lock:3']);
  t.deepEqual(r.stdout.trim().split('\n'), [`err -${ENOTSUP}`, `err -${ENOTSUP}`, 'ok']);
});

test.serial('JDLS with BINARY: LOCK n goes to the server (nothing local); FILELOCK there needs OS record locks (shm table: ENOTSUP); without BINARY they stay local', async (t) => {
  const s = new ShimEnv(t);
  const server = await s.startServer();
  const binaryDir = path.join(s.cli.dir, 'jbase_lock');
  const env = { JDLS: `${server},BINARY`, JDLS_BINARY_DIR: path.join(s.cli.dir, 'local_lock') };
  const a = s.start(SHIM_API, ['4242', '7', 'lock:3', 'hold'], { env });
  await a.waitFor(/^holding$/, 15_000);
  t.deepEqual(a.lines.slice(0, 1), ['ok']);
  const b = await s.run(SHIM_API, ['4242', '7', 'lock:3', 'lock:4', 'unlock:4', 'filelock', 'x:K1'], { env });
  t.deepEqual(b.stdout.trim().split('\n'), ['locked port=0', 'ok', 'ok', `err -${ENOTSUP}`, 'ok']);
  // the server's execution lock file is <dirname(lockDir)>/jbase_lock/jexec; nothing was taken locally
  const bin = BinaryLocks.open({ binaryDir, recordLockDir: s.lockDir });
  t.teardown(() => bin.close());
  t.false((await bin.execLock(makeOwner(), 3, { wait: false })).granted);
  const local = BinaryLocks.open({ binaryDir: env.JDLS_BINARY_DIR, recordLockDir: s.lockDir });
  t.teardown(() => local.close());
  t.true((await local.execLock(makeOwner(), 3, { wait: false })).granted);
  t.is(await a.finish(), 0);
  t.true(await s.cli.until(async () => (await bin.execLock(makeOwner(), 3, { wait: false })).granted, 5_000), 'released with its process');
  const l = await s.run(SHIM_API, ['4242', '7', 'lock:3', 'e:K1'], { env: { JDLS: `${server},LOCK=INTERNAL`, JDLS_BINARY_DIR: binaryDir } });
  t.deepEqual(l.stdout.trim().split('\n'), ['locked port=0', 'nothandled'], 'without BINARY: the local jexec (here the server\'s own file, where this test now holds 3)');
});

test.serial('JDLS with BINARY on an OS-lock server (-ibD): FILELOCK waits for other processes\' record locks and blocks new ones, through the server', async (t) => {
  const s = new ShimEnv(t);
  const env = { JDLS: `${await s.startServer({}, ['-ibD'])},BINARY` };
  const a = s.start(SHIM_API, ['4242', '7', 'x:K1', 'hold'], { env });
  await a.waitFor(/^holding$/, 15_000);
  const b1 = await s.run(SHIM_API, ['4242', '7', 'filelock'], { env });
  t.is(b1.stdout.trim(), 'locked port=0');
  t.is(await a.finish(), 0);
  const b = s.start(SHIM_API, ['4242', '7', 'filelock', 'hold'], { env });
  await b.waitFor(/^holding$/, 15_000);
  t.deepEqual(b.lines.slice(0, 1), ['ok']);
  const c = await s.run(SHIM_API, ['4242', '7', 'x:K2', 'fileunlock'], { env });
  t.deepEqual(c.stdout.trim().split('\n'), ['locked port=0', 'notheld']);
  t.is(await b.finish(), 0);
  const d = await s.run(SHIM_API, ['4242', '7', 'filelock', 'fileunlock', 'x:K2'], { env });
  t.deepEqual(d.stdout.trim().split('\n'), ['ok', 'ok', 'ok']);
});
