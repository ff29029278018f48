// server-offset.test.ts - protocol flag OFFSET: a preloaded program's
// fcntl/lockf on a jlock file, sent to a lock server as key hex(X), locks
// byte X of the server's jlock file when the server takes OS record locks
// (`jdls -ibD`, or the client's OSLOCKS): so it excludes a program on the
// server host that locks byte X in the kernel (without JDLS). Before the
// flag the OS locks hashed the text "1a" to another byte and both were
// granted (found by the chaos suite, test/chaos-shim-worker.test.ts).
// Serial: the shim tests each run a server and several processes (2 cores).
import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { ShimEnv, SHIM_LOCKER } from './helpers/shim-env.js';
import { OsLocks, offsetKey, isOffsetKey, keyOffset } from '../src/locks/oslock.js';
import { makeOwner, fileId } from '../src/locks/table.js';
import { byteOffsetOfKey, decodeBody, encode } from '../src/protocol/codec.js';
import { FrameFlag } from '../src/protocol/constants.js';
import type { LockFrame } from '../src/protocol/frames.js';
import { testDir } from './helpers/installations.js';

const X = 26; // byte 0x1a: the shim names it "1a"

/**
 * A remote and a local program on byte X of one jlock file, both ways:
 * `remoteEnv` reaches the server; `localPreload`: whether the local program
 * runs under the shim (on an OS-lock server the shim leaves it untouched:
 * kernel locks) or without it (a table server: only an unpreloaded program
 * takes kernel locks there).
 */
async function bothWays(t: import('ava').ExecutionContext, s: ShimEnv, remoteEnv: NodeJS.ProcessEnv, localPreload: boolean): Promise<void> {
  const f = s.jlock(0xa000, -1);
  const local = { preload: localPreload };

  // remote holds WRITE: the local program is refused, and F_GETLK names a holder
  const rw = s.start(SHIM_LOCKER, [f, `w:${X}`, 'hold'], { env: remoteEnv });
  await rw.waitFor(/holding/);
  const l1 = await s.run(SHIM_LOCKER, [f, `w:${X}`, `r:${X}`, `g:${X}`, `w:${X + 1}`], local);
  t.deepEqual(l1.stdout.trim().split('\n').map((l) => l.replace(/pid=.*/, 'pid')), ['EAGAIN', 'EAGAIN', 'held W pid', 'ok'], l1.stderr);
  t.is(await rw.finish(), 0);
  // The server releases the remote's lock when it reads the end of that
  // connection - after the process is gone, not before its exit is seen
  // here: await the release (CI's fresh run once tried too early, EAGAIN).
  let l2 = await s.run(SHIM_LOCKER, [f, `w:${X}`], local);
  for (const deadline = Date.now() + 10_000; l2.stdout.trim() === 'EAGAIN' && Date.now() < deadline;) {
    await new Promise((r) => setTimeout(r, 50));
    l2 = await s.run(SHIM_LOCKER, [f, `w:${X}`], local);
  }
  t.is(l2.stdout.trim(), 'ok', 'released with the remote process');

  // local holds READ: a remote READ shares it, a remote WRITE is refused,
  // the remote F_GETLK sees it; the remote UNLOCK (flag OFFSET) releases
  // the remote's own READ, not the local one's
  const lr = s.start(SHIM_LOCKER, [f, `r:${X}`, 'hold'], local);
  await lr.waitFor(/holding/);
  const r1 = await s.run(SHIM_LOCKER, [f, `r:${X}`, `u:${X}`, `w:${X}`, `g:${X}`], { env: remoteEnv });
  t.deepEqual(r1.stdout.trim().split('\n').map((l) => l.replace(/pid=.*/, 'pid')), ['ok', 'ok', 'EAGAIN', 'held R pid'], r1.stderr);
  t.is(await lr.finish(), 0);
  const r2 = await s.run(SHIM_LOCKER, [f, `w:${X}`, `g:${X}`], { env: remoteEnv });
  t.deepEqual(r2.stdout.trim().split('\n'), ['ok', 'free'], r2.stderr);
}

test.serial('OS-lock server (-ibD): a remote preloaded fcntl lock and a local kernel lock on one byte exclude each other both ways', async (t) => {
  t.timeout(60_000);
  const s = new ShimEnv(t);
  const JDLS = await s.startServer({}, ['-ibD']);
  await bothWays(t, s, { JDLS }, true);
});

test.serial('OSLOCKS on a table server: a remote preloaded fcntl lock and a local unpreloaded kernel lock on one byte exclude each other both ways', async (t) => {
  t.timeout(60_000);
  const s = new ShimEnv(t);
  const JDLS = `${await s.startServer()},OSLOCKS`;
  await bothWays(t, s, { JDLS }, false);
  t.deepEqual(await s.locks(), [], 'nothing in the shm table');
});

test('the codec: OFFSET on LOCK, UNLOCK and STATUS round-trips; a key that is not a canonical hex offset is refused', (t) => {
  t.is(FrameFlag.OFFSET, 0x0020);
  const file = { inode: 0xa000n, dev: -1n };
  const lock: LockFrame = { type: 'LOCK', requestId: 1, nowait: true, noInterim: false, osLocks: false, offset: true, mode: 'write', tid: 3, file, key: Buffer.from('1a') };
  t.like(decodeBody(encode(lock).subarray(4)), { type: 'LOCK', offset: true, key: Buffer.from('1a') });
  t.like(decodeBody(encode({ type: 'UNLOCK', requestId: 2, tid: 3, file, key: Buffer.from('1a'), offset: true }).subarray(4)), { type: 'UNLOCK', offset: true });
  t.like(decodeBody(encode({ type: 'STATUS', requestId: 3, tid: 3, file, key: Buffer.from('1a'), offset: true, probe: 'read' }).subarray(4)), { type: 'STATUS', offset: true, probe: 'read' });
  t.is((decodeBody(encode({ ...lock, offset: undefined } as unknown as LockFrame).subarray(4)) as LockFrame).offset, undefined);
  for (const bad of ['', 'x', '1A', '01', '8000000000000000', '1a ', '00000000000000001']) {
    t.throws(() => decodeBody(encode({ ...lock, key: Buffer.from(bad) }).subarray(4)), { message: /flag OFFSET needs a key/ }, JSON.stringify(bad));
  }
  t.is(byteOffsetOfKey(Buffer.from('0')), 0n);
  t.is(byteOffsetOfKey(Buffer.from('7fffffffffffffff')), (1n << 63n) - 1n);
  t.is(byteOffsetOfKey(Buffer.from('8000000000000000')), undefined);
});

test('OsLocks: an offset key locks exactly its byte, apart from a record key of the same text', async (t) => {
  const dir = testDir('offset');
  const m = OsLocks.open({ lockDir: path.join(dir, 'jbase') });
  t.teardown(() => {
    m.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  const F = fileId(0x1234n, -1n);
  const a = makeOwner({ ownerTid: 1_000_001 });
  const b = makeOwner({ ownerTid: 1_000_002 });
  const k = offsetKey(26n);
  t.true(isOffsetKey(k));
  t.false(isOffsetKey(Buffer.alloc(512)));
  t.is(keyOffset(k), 26n);
  t.is(keyOffset(k, { inode: 1n << 40n, dev: -1n }), 26n, 'never prefixed: a byte of the lock file is that byte');
  t.throws(() => offsetKey(1n << 63n), { code: 'BAD_ARGUMENT' });
  t.true(m.tryLock(a, F, k, 'write').granted);
  t.is(m.tryLock(b, F, offsetKey(26n), 'read').granted, false);
  // the text "1a" as a record key is another lock (its byte is the hash's)
  t.true(m.tryLock(b, F, '1a', 'write').granted);
  t.true(m.tryLock(a, F, '1a', 'read').granted === false);
  const rows = m.rows().filter((r) => r.ownerTid === a.ownerTid);
  t.deepEqual(rows.map((r) => [r.key.toString('latin1'), r.offset]), [['1a', 26n]]);
  t.is(m.status(a, F, k).code, 2);
  t.is(m.status(b, F, k).code, -2);
  t.true(m.unlock(a, F, k));
  t.false(m.unlock(a, F, k));
  t.true(m.tryLock(b, F, k, 'write').granted);
  t.is(m.unlockAll(b, F), 2);
});
