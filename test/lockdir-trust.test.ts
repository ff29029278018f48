// lockdir-trust.test.ts - issue 10, "Trust boundaries on the host": lock
// directories. An unprivileged user (made here with useradd) against root's
// OS-lock users: a lock directory that user created first must be refused by
// every one of them (the TS mechanism a lock server and the jdls tools use,
// a lock server with OS file locks, a C process, the shim's OS route, the
// binary locks); a lock file that user owns must not let them split a lock
// root holds by deleting the file. Real processes throughout: jdls-oslocker
// (C), jdls -ibD, jdls-shimapi under the shim. Serial: several processes
// each, and the users are global state.
import test, { type ExecutionContext } from 'ava';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { OsLocks, lockFileName } from '../src/locks/oslock.js';
import { makeOwner, fileId } from '../src/locks/table.js';
import { BinaryLocks } from '../src/locks/binary.js';
import { buildDir } from '../src/native.js';
import { Proc, withTimeout } from './helpers/table-env.js';
import { ServerEnv } from './helpers/server-env.js';
import { ShimEnv, SHIM_API } from './helpers/shim-env.js';
import { TEST_PREFIX } from './helpers/installations.js';
import { makeUser, asUser } from './helpers/users.js';

const oslocker = path.join(buildDir, 'jdls-oslocker');

/**
 * A directory that plays /tmp: root's, mode 01777, directly in os.tmpdir()
 * (the run root may be 0700, and the user must reach it). Removed at teardown.
 */
function sharedTmp(t: ExecutionContext): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), `${TEST_PREFIX}lockdir-`));
  fs.chmodSync(d, 0o1777);
  t.teardown(() => fs.rmSync(d, { recursive: true, force: true }));
  return d;
}

const F = { inode: 0x4242n, dev: 7n };
const fargs = (dir: string): string[] => [dir, String(F.inode), String(F.dev)];

function start(t: ExecutionContext, label: string, cmd: string, args: string[]): Proc {
  const p = new Proc(spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] }), label);
  t.teardown(async () => {
    if (p.running) {
      try { process.kill(p.pid, 'SIGKILL'); } catch { /* gone meanwhile */ }
    }
    await withTimeout(p.exited, 5000, `${label} to die`).catch(() => undefined);
  });
  return p;
}

test.serial('a lock directory an unprivileged user created first is refused by root\'s lock server, C processes, the shim and the TS mechanisms, naming path, owner and mode', async (t) => {
  const u = makeUser(t, 'jdlsc1');
  const shared = sharedTmp(t);
  const dir = path.join(shared, 'jbase');
  const made = asUser(u, ['mkdir', '-m', '0777', dir]);
  t.is(made.code, 0, made.out);
  t.is(fs.statSync(dir).uid, u.uid);
  const says = new RegExp(`${dir.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}.*(owned by|owner).*${u.uid}.*0?777`, 's');

  // The mechanism a lock server (OSLOCKS, -ibD) and the jdls tools open.
  const e = t.throws(() => OsLocks.open({ lockDir: dir }));
  t.regex(e?.message ?? '', says);
  const b = t.throws(() => BinaryLocks.open({ binaryDir: dir, recordLockDir: dir }));
  t.regex(b?.message ?? '', says);

  // A lock server with OS file locks in that directory.
  const env = new ServerEnv(t, { lockDir: dir });
  const r = await env.jdls(['-ibD']);
  t.not(r.code, 0, `jdls -ibD used ${dir}: ${r.stdout}`);
  t.regex(`${r.stdout}${r.stderr}`, says);
  // jdls -dvL lists the OS locks of that directory: refused too.
  const d = await env.jdls(['-dvL']);
  t.not(d.code, 0, `jdls -dvL listed ${dir}: ${d.stdout}`);
  t.regex(`${d.stdout}${d.stderr}`, says);

  // A C process (jdls_osl_ensure_dir, as the shim and the fixtures call it).
  const c = start(t, 'oslocker try', oslocker, [...fargs(dir), 'try', 'K', 'write', 'ofd']);
  t.regex(await c.line(), /^ERROR .*jbase: Operation not permitted/, `a C process locked in ${dir}`);
  t.not((await withTimeout(c.exited, 10_000, 'oslocker')).code, 0);

  // The shim's OS route (no monitor) with JDLS_LOCKDIR there: EPERM to the program.
  const s = new ShimEnv(t);
  const sr = await s.run(SHIM_API, ['77', '5', 'route', 'x:K'], { env: { JDLS_LOCKDIR: dir } });
  t.deepEqual(sr.stdout.trim().split('\n'), ['route os', 'err -1']);

  // Nobody created a lock file in it.
  t.deepEqual(fs.readdirSync(dir), []);

  // The same directory made safe: root's, sticky, world-writable (jBASE's shared mode) is accepted;
  // root's but 0777 without the sticky bit is not.
  fs.chownSync(dir, 0, 0);
  fs.chmodSync(dir, 0o777);
  t.throws(() => OsLocks.open({ lockDir: dir }), { message: /mode 0?777/ });
  fs.chmodSync(dir, 0o1777);
  OsLocks.open({ lockDir: dir }).close();

  // A symlink planted by the user where the lock directory should be is not followed.
  const planted = path.join(shared, 'jbase-link');
  t.is(asUser(u, ['ln', '-s', '/etc', planted]).code, 0);
  t.throws(() => OsLocks.open({ lockDir: planted }), { message: /symlink|symbolic link|owned by/ });
});

test.serial('a lock file an unprivileged user owns: deleting it while root holds its lock must not give a second root process the same lock', async (t) => {
  const u = makeUser(t, 'jdlsc2');
  const shared = sharedTmp(t);
  const dir = path.join(shared, 'jbase');
  fs.mkdirSync(dir);
  fs.chmodSync(dir, 0o1777); // jBASE's shared mode, root's: trusted
  const lf = lockFileName(dir, F);

  // The user locks first: the lock file is created by them, theirs.
  const first = asUser(u, [oslocker, ...fargs(dir), 'try', 'K', 'write', 'ofd']);
  t.regex(first.out, /GRANTED/);
  t.is(fs.statSync(lf).uid, u.uid);

  // Root holds K.
  const holder = start(t, 'oslocker hold', oslocker, [...fargs(dir), 'hold', 'K', 'write', 'ofd']);
  t.regex(await holder.line(), /^LOCKED /);

  // The user deletes the lock file (sticky directory: the owner may).
  const rm = asUser(u, ['rm', '-f', lf]);
  t.log(`user's rm: exit ${rm.code} ${rm.out.trim()}`);

  // A second root process asks for K: it must see root's holder, not a fresh file.
  const second = start(t, 'oslocker try', oslocker, [...fargs(dir), 'try', 'K', 'write', 'ofd']);
  t.regex(await second.line(), /^CONFLICT /, 'two holders of one exclusive lock');
  holder.release();
  await holder.success();
});

test.serial('a lock file deleted while an owner keeps its description open: the owner\'s next lock is taken on the file the name leads to now (OsLocks)', async (t) => {
  const shared = sharedTmp(t);
  const dir = path.join(shared, 'jbase');
  const m = OsLocks.open({ lockDir: dir });
  t.teardown(() => m.close());
  const o = makeOwner({ ownerTid: 1 });
  const f = fileId(F.inode, F.dev);
  t.true(m.tryLock(o, f, 'K', 'write').granted);
  t.true(m.unlock(o, f, 'K')); // the description stays open, kept for the next lock
  fs.unlinkSync(lockFileName(dir, F)); // a tidy-up, or the file's owner
  const holder = start(t, 'oslocker hold', oslocker, [...fargs(dir), 'hold', 'K', 'write', 'ofd']);
  t.regex(await holder.line(), /^LOCKED /);
  t.false(m.tryLock(o, f, 'K', 'write').granted, 'granted on the deleted file while a C process holds K in the one its name leads to');
  const waiting = m.lock(o, f, 'K', 'write');
  holder.release();
  await holder.success();
  await withTimeout(waiting, 10_000, 'the wait');
  const probe = start(t, 'oslocker try', oslocker, [...fargs(dir), 'try', 'K', 'write', 'ofd']);
  t.regex(await probe.line(), /^CONFLICT /, 'the lock the wait got is in the file the name leads to');
  t.is(m.unlockAll(o), 1);
});

test.serial('a lock file deleted while a preloaded program keeps its description open: its next OS-route lock is taken on the file the name leads to now (shim)', async (t) => {
  const s = new ShimEnv(t);
  const prog = s.start(SHIM_API, ['77', '5', 'route', 'x:K', 'u:K', 'line', 'x:K', 'hold']);
  const lines = (n: number): Promise<string[]> => prog.firstLines(n);
  t.deepEqual(await lines(3), ['route os', 'ok', 'ok']);
  fs.unlinkSync(s.jlock(77, 5)); // the description stays open in the program
  const holder = start(t, 'oslocker hold', oslocker, [s.lockDir, '77', '5', 'hold', 'K', 'write', 'ofd']);
  t.regex(await holder.line(), /^LOCKED /);
  prog.child.stdin?.write('\n');
  t.deepEqual(await lines(5), ['route os', 'ok', 'ok', 'read', 'locked port=0'], 'granted on the deleted file while a C process holds K in the one its name leads to');
  holder.release();
  await holder.success();
  await prog.finish();
});

/** The first n lines a preloaded program printed (bounded wait; its stderr if it ends first). */
async function lines(p: ReturnType<ShimEnv['start']>, n: number): Promise<string[]> {
  for (const end = Date.now() + 10_000; p.lines.length < n;) {
    if (Date.now() > end || p.child.exitCode !== null) throw new Error(`lines ${JSON.stringify(p.lines)} ${p.stderr()}`);
    await new Promise((r) => setTimeout(r, 10));
  }
  return p.lines.slice(0, n);
}

test.serial('binary locks: jexec deleted while a preloaded program keeps it open: its next LOCK 7 is not taken on the deleted file (shim)', async (t) => {
  const s = new ShimEnv(t);
  const bdir = path.join(path.dirname(s.lockDir), 'jbase_lock');
  const env = { JDLS_BINARY_DIR: bdir };
  const jexec = path.join(bdir, 'jexec');

  // The shim keeps jexec open for the life of the process.
  const prog = s.start(SHIM_API, ['0', '0', 'lock:7', 'unlock:7', 'line', 'lock:7', 'hold'], { env });
  t.deepEqual(await lines(prog, 2), ['ok', 'ok']);
  fs.unlinkSync(jexec);
  const other = s.start(SHIM_API, ['0', '0', 'lock:7', 'hold'], { env });
  t.deepEqual(await lines(other, 2), ['ok', 'holding']);
  prog.child.stdin?.write('\n');
  t.deepEqual(await lines(prog, 4), ['ok', 'ok', 'read', 'locked port=0'], 'LOCK 7 granted on the deleted jexec while another process holds it in the new one');
  await other.finish();
  await prog.finish();
});

test.serial('binary locks: jexec deleted while a BinaryLocks owner waits on it: the owner does not get LOCK 7 on the deleted file', async (t) => {
  const s = new ShimEnv(t);
  const bdir = path.join(path.dirname(s.lockDir), 'jbase_lock');
  const env = { JDLS_BINARY_DIR: bdir };
  const jexec = path.join(bdir, 'jexec');

  // A BinaryLocks owner that waits on jexec while it is deleted and another process takes LOCK 7 in the new one.
  const m = BinaryLocks.open({ binaryDir: bdir, recordLockDir: s.lockDir });
  t.teardown(() => m.close());
  const a = makeOwner({ ownerTid: 1 });
  const b = makeOwner({ ownerTid: 2 });
  t.true((await m.execLock(a, 7)).granted);
  const waiting = m.execLock(b, 7);
  let settled = false;
  void waiting.then(() => (settled = true), () => (settled = true));
  fs.unlinkSync(jexec);
  const c = s.start(SHIM_API, ['0', '0', 'lock:7', 'hold'], { env });
  t.deepEqual(await lines(c, 2), ['ok', 'holding']);
  t.is(m.execUnlock(a, 7), 1);
  // b's wait ends on the deleted file now; it must go on waiting in the new one while c holds LOCK 7.
  await new Promise((r) => setTimeout(r, 300));
  t.false(settled, 'b was granted LOCK 7 on the deleted jexec while c holds it in the new one');
  await c.finish();
  t.true((await withTimeout(waiting, 10_000, 'b')).granted);
  const probe = await s.run(SHIM_API, ['0', '0', 'lock:7'], { env });
  t.deepEqual(probe.stdout.trim().split('\n'), ['locked port=0'], 'b holds LOCK 7 in the file jexec names');
  t.is(m.execUnlock(b), 1);
});
