// oslock.test.ts - OS record locks (src/locks/oslock.ts) and the OFD byte-range
// primitive (src/locks/ofd.ts), with real separate processes: jdls-oslocker (C,
// OFD or classic fcntl locks), Node children through OsLocks, and python3's
// fcntl.lockf (classic locks, as any ordinary program takes them). Every
// test uses its own temporary lock directory, removed at the end with every
// child it started. Serial: many processes, liveness bounds on 2 cores.
import test, { type ExecutionContext } from 'ava';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setImmediate as tick } from 'node:timers/promises';
import { OsLocks, lockFileName, keyOffset } from '../src/locks/oslock.js';
import { OfdFile, OSL, osn, pendingWaits, OsLockError } from '../src/locks/ofd.js';
import { makeOwner, fileId, type Owner, type FileId } from '../src/locks/table.js';
import { buildDir } from '../src/native.js';
import { Proc, withTimeout, nodeFixture } from './helpers/table-env.js';
import { testDir } from './helpers/installations.js';

const oslocker = path.join(buildDir, 'jdls-oslocker');
const PROMPT_MS = 3000;
const F: FileId = fileId(0x1234n, -1n);
const owner = (n: number): Owner => makeOwner({ ownerTid: 1_000_000 + n });

interface OsEnv {
  dir: string;
  m: OsLocks;
  /** jdls-oslocker <dir> <inode> <dev> args... (file F unless given) */
  c(args: string[], file?: FileId): Proc;
  node(args: string[], file?: FileId, shell?: string): Proc;
  /** python3 classic fcntl.lockf on `key`'s byte: LOCKED <pid> / CONFLICT <errno>; holds until a stdin line */
  py(key: string, mode: 'read' | 'write', file?: FileId): Proc;
  file(name: string): string;
}

function osEnv(t: ExecutionContext): OsEnv {
  const dir = testDir('oslock');
  const procs: Proc[] = [];
  const lockDir = path.join(dir, 'jbase');
  let m: OsLocks | undefined;
  t.teardown(async () => {
    for (const p of procs) {
      if (p.running) {
        try { process.kill(p.pid, 'SIGKILL'); } catch { /* gone meanwhile */ }
      }
    }
    await Promise.all(procs.map((p) => withTimeout(p.exited, 5000, `${p.label} to die`).catch(() => undefined)));
    m?.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  m = OsLocks.open({ lockDir });
  const start = (label: string, cmd: string, args: string[]): Proc => {
    const p = new Proc(spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] }), label);
    procs.push(p);
    return p;
  };
  const fargs = (f: FileId): string[] => [lockDir, String(f.inode), String(f.dev)];
  return {
    dir: lockDir,
    m,
    c: (args, f = F) => start(`jdls-oslocker ${args.join(' ')}`, oslocker, [...fargs(f), ...args]),
    node: (args, f = F, shell) =>
      shell
        ? start(`node-oslocker ${args.join(' ')}`, '/bin/sh', ['-c', `${shell}; exec "$0" "$@"`, process.execPath, nodeFixture('node-oslocker'), ...fargs(f), ...args])
        : start(`node-oslocker ${args.join(' ')}`, process.execPath, [nodeFixture('node-oslocker'), ...fargs(f), ...args]),
    py: (key, mode, f = F) => {
      const lf = lockFileName(lockDir, f);
      const script = [
        'import fcntl, os, sys',
        'fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o666)',
        'off = int(sys.argv[2])',
        "op = fcntl.LOCK_EX if sys.argv[3] == 'write' else fcntl.LOCK_SH",
        'try:',
        '    fcntl.lockf(fd, op | fcntl.LOCK_NB, 1, off)',
        'except OSError as e:',
        "    print('CONFLICT', e.errno, flush=True); sys.exit(0)",
        "print('LOCKED', os.getpid(), flush=True)",
        'sys.stdin.readline()',
        'fcntl.lockf(fd, fcntl.LOCK_UN, 1, off)',
        "print('RELEASED', flush=True)",
      ].join('\n');
      return start(`python3 lockf ${key} ${mode}`, 'python3', ['-c', script, lf, String(keyOffset(key)), mode]);
    },
    file: (name) => path.join(dir, name),
  };
}

// ---- naming and the primitive ------------------------------------------------

test('lock file names: jlock_%08x_%08x of the low 32 bits, dev -1 -> ffffffff; C and TypeScript agree on path and byte', async (t) => {
  const env = osEnv(t);
  t.is(path.basename(lockFileName('/x', fileId(0x12345678_9abcdef0n, -1n))), 'jlock_9abcdef0_ffffffff');
  t.is(path.basename(lockFileName('/x', fileId(0x2an, 0x1_0000_0005n))), 'jlock_0000002a_00000005');
  t.is(path.basename(env.m.lockFile(fileId(0, 0))), 'jlock_00000000_00000000');
  t.is(env.m.lockFile(F), path.join(env.dir, 'jlock_00001234_ffffffff'));
  for (const key of ['K1', 'CUSTOMER*1000', '', 'x'.repeat(300)]) {
    const off = keyOffset(key);
    t.true(off >= 0n && off < 1n << 62n, `offset of ${key.slice(0, 20)} is in [0, 2^62)`);
    const c = env.c(['name', key]);
    t.deepEqual(await c.expect('PATH'), [env.m.lockFile(F), 'OFFSET', String(off)]);
    await c.success();
  }
  t.is(keyOffset('ABC'), keyOffset(Buffer.from('ABC')), 'a string key and its UTF-8 bytes are one key');
  t.is(keyOffset('é'), keyOffset(Buffer.from('é', 'utf8')));
  t.not(keyOffset('K1'), keyOffset('K2'));
});

test('the TypeScript mirror of lock types and outcomes matches the addon', (t) => {
  const c = osn.constants;
  t.deepEqual([OSL.READ, OSL.WRITE, OSL.UNLOCK, OSL.OK, OSL.CONFLICT, OSL.CANCELLED], [c.READ, c.WRITE, c.UNLOCK, c.OK, c.CONFLICT, c.CANCELLED]);
  t.is(c.KEY_OFFSET_BITS, 62);
  t.is(c.DEFAULT_DIR, '/tmp/jbase');
  t.true(osn.signal() > 0, 'the interrupt signal is installed');
});

test('a missing lock directory is created 01777 in a world-writable parent (as /tmp/jbase), else 02770 with the parent\'s group; lock files are 0666 whatever the umask', (t) => {
  const env = osEnv(t);
  const st = fs.statSync(env.dir);
  t.true(st.isDirectory());
  t.is(st.mode & 0o7777, 0o2770);
  t.is(st.gid, fs.statSync(path.dirname(env.dir)).gid);
  const tmpLike = path.join(path.dirname(env.dir), 'tmp');
  fs.mkdirSync(tmpLike);
  fs.chmodSync(tmpLike, 0o1777);
  OsLocks.open({ lockDir: path.join(tmpLike, 'jbase') }).close();
  t.is(fs.statSync(path.join(tmpLike, 'jbase')).mode & 0o7777, 0o1777);
  const old = process.umask(0o077);
  try {
    env.m.tryLock(owner(1), F, 'K', 'write');
  } finally {
    process.umask(old);
  }
  t.is(fs.statSync(env.m.lockFile(F)).mode & 0o777, 0o666);
});

test('errors name the path: missing parent, not a directory, a directory or a symlink where the lock file goes', (t) => {
  const env = osEnv(t);
  const base = path.dirname(env.dir);
  const e1 = t.throws(() => OsLocks.open({ lockDir: path.join(base, 'no', 'such') }), { instanceOf: OsLockError });
  t.is(e1 instanceof OsLockError ? e1.osCode : '', 'BAD_LOCK_DIR');
  t.is(e1 instanceof OsLockError ? e1.errno : '', 'ENOENT');
  t.true(e1?.message.includes(path.join(base, 'no', 'such')), e1?.message);
  fs.writeFileSync(path.join(base, 'plain'), '');
  const e2 = t.throws(() => OsLocks.open({ lockDir: path.join(base, 'plain') }), { instanceOf: OsLockError });
  t.is(e2 instanceof OsLockError ? e2.osCode : '', 'BAD_LOCK_DIR');
  t.true(e2?.message.includes('ENOTDIR'), e2?.message);
  // A directory in the lock file's place, and a planted symlink (O_NOFOLLOW).
  const f2 = fileId(2, 2);
  fs.mkdirSync(env.m.lockFile(f2));
  const e3 = t.throws(() => env.m.tryLock(owner(1), f2, 'K', 'write'), { instanceOf: OsLockError });
  t.is(e3 instanceof OsLockError ? e3.osCode : '', 'BAD_LOCK_DIR');
  t.true(e3?.message.includes(env.m.lockFile(f2)), e3?.message);
  const f3 = fileId(3, 3);
  fs.symlinkSync(path.join(base, 'plain'), env.m.lockFile(f3));
  const e4 = t.throws(() => env.m.tryLock(owner(1), f3, 'K', 'write'), { instanceOf: OsLockError });
  t.is(e4 instanceof OsLockError ? e4.errno : '', 'ELOOP');
  t.throws(() => env.m.tryLock(owner(1), F, 'x'.repeat(513), 'write'), { code: 'KEY_TOO_LONG' });
  t.throws(() => env.m.tryLock(owner(1), F, 'K', 'upgrade' as 'write'), { code: 'BAD_ARGUMENT' });
  // Nothing was left held by the failures.
  t.deepEqual(env.m.rows(), []);
});

test.serial('too many open files is a clear TOO_MANY_FILES error naming the lock file, not a silent success', async (t) => {
  const env = osEnv(t);
  // Each owner opens a description on each file; with ulimit -n 40 a Node
  // child runs out well before 200 owners.
  const p = env.node(['owners', '200'], F, 'ulimit -n 40');
  const fields = await p.expect('ERROR', 15_000);
  t.is(fields[0], 'TOO_MANY_FILES');
  t.is(fields[1], 'EMFILE');
  t.true(fields.join(' ').includes(lockFileName(env.dir, F)), fields.join(' '));
  await p.success();
});

// ---- semantics: one process, two owners ----------------------------------------

test('two owners of one process: shared/exclusive, holder named, re-lock, conversion, release one and all, status codes', (t) => {
  const { m } = osEnv(t);
  const a = owner(1), b = owner(2);
  t.deepEqual(m.tryLock(a, F, 'K', 'read'), { granted: true });
  t.deepEqual(m.tryLock(b, F, 'K', 'read'), { granted: true }, 'readers share');
  const w = m.tryLock(b, F, 'K', 'write');
  t.false(w.granted, 'upgrade blocked by the other reader');
  if (!w.granted) t.like(w.holder, { ownerTid: a.ownerTid, mode: 'read', pid: process.pid });
  t.is(m.status(b, F, 'K').code, 1, 'the failed upgrade left b its read lock');
  t.true(m.unlock(a, F, 'K'));
  t.deepEqual(m.tryLock(b, F, 'K', 'write'), { granted: true }, 'alone: upgrade in place');
  t.deepEqual(m.tryLock(b, F, 'K', 'write'), { granted: true }, 're-lock by the owner');
  const r = m.tryLock(a, F, 'K', 'read');
  t.false(r.granted);
  if (!r.granted) t.like(r.holder, { ownerTid: b.ownerTid, mode: 'write' });
  t.like(m.status(a, F, 'K'), { code: -2, holder: { ownerTid: b.ownerTid } });
  t.is(m.status(b, F, 'K').code, 2);
  t.deepEqual(m.tryLock(b, F, 'K', 'read'), { granted: true }, 'downgrade');
  t.deepEqual(m.tryLock(a, F, 'K', 'read'), { granted: true }, 'a reader gets in after the downgrade');
  t.like(m.status(owner(3), F, 'K'), { code: -1 });
  t.is(m.status(owner(3), F, 'OTHER').code, 0);
  t.false(m.unlock(owner(3), F, 'K'), 'unlock of what is not held');
  // Several keys and files: release all of one file, then all.
  const F2 = fileId(0x5678n, -1n);
  for (const k of ['A', 'B', 'C']) t.true(m.tryLock(a, F, k, 'write').granted);
  t.true(m.tryLock(a, F2, 'A', 'write').granted);
  t.is(m.rows().filter((x) => x.ownerTid === a.ownerTid).length, 5);
  t.is(m.unlockAll(a, F2), 1);
  t.is(m.status(b, F2, 'A').code, 0);
  t.is(m.unlockAll(a), 4, 'K and A, B, C');
  t.is(m.status(b, F, 'A').code, 0);
  t.deepEqual(m.rows().map((x) => [x.ownerTid, x.key.toString(), x.mode]), [[b.ownerTid, 'K', 'read']]);
  t.is(m.unlockAll(b), 1);
  t.is(m.openFiles().owners, 0, 'unlockAll closed the descriptions');
});

test('port locks: owners with the same (ip, port) are one owner', (t) => {
  const env = osEnv(t);
  const m = OsLocks.open({ lockDir: env.dir, portLocks: true });
  t.teardown(() => m.close());
  const a = makeOwner({ ownerTid: 11, port: 7 }), a2 = makeOwner({ ownerTid: 12, port: 7 }), b = makeOwner({ ownerTid: 13, port: 8 });
  t.true(m.tryLock(a, F, 'K', 'write').granted);
  t.true(m.tryLock(a2, F, 'K', 'write').granted, 'same port: re-lock');
  t.false(m.tryLock(b, F, 'K', 'write').granted);
  t.true(m.unlock(a2, F, 'K'));
  t.true(m.tryLock(b, F, 'K', 'write').granted);
});

// ---- other processes ----------------------------------------------------------

test.serial('two processes: an OFD holder elsewhere blocks us (pid -1), our wait is granted when it releases', async (t) => {
  const env = osEnv(t);
  const h = env.c(['hold', 'K', 'write', 'ofd']);
  await h.expect('LOCKED');
  const r = env.m.tryLock(owner(1), F, 'K', 'read');
  t.false(r.granted);
  if (!r.granted) t.like(r.holder, { pid: -1, mode: 'write' }, 'the kernel cannot name an OFD holder');
  t.like(env.m.status(owner(1), F, 'K'), { code: -2, holder: { pid: -1 } });
  const w = env.m.lock(owner(1), F, 'K', 'write');
  await new Promise((r2) => setTimeout(r2, 100));
  h.release();
  await h.expect('RELEASED');
  await withTimeout(w, PROMPT_MS, 'the wait to be granted');
  const c = env.c(['try', 'K', 'read', 'ofd']);
  t.deepEqual(await c.expect('CONFLICT'), ['-1', 'write'], 'and now we hold it against the other process');
  await c.success();
  t.true(env.m.unlock(owner(1), F, 'K'));
  const c2 = env.c(['try', 'K', 'write', 'ofd']);
  await c2.expect('GRANTED');
  await h.success();
});

test.serial('OFD versus classic, both ways: python3 fcntl.lockf and C F_SETLK against our byte, and ours against theirs', async (t) => {
  const env = osEnv(t);
  // Ours -> theirs.
  t.true(env.m.tryLock(owner(1), F, 'K', 'write').granted);
  const p1 = env.py('K', 'write');
  t.true(['11', '13'].includes((await p1.expect('CONFLICT'))[0] ?? ''), 'python lockf LOCK_EX|LOCK_NB: EAGAIN or EACCES');
  const p2 = env.py('K', 'read');
  await p2.expect('CONFLICT');
  const c1 = env.c(['try', 'K', 'read', 'classic']);
  t.deepEqual(await c1.expect('CONFLICT'), ['-1', 'write'], 'F_GETLK sees our OFD lock (pid -1)');
  t.true(env.m.tryLock(owner(1), F, 'K', 'read').granted, 'downgrade');
  const p3 = env.py('K', 'read');
  await p3.expect('LOCKED', 5000);
  p3.release();
  await p3.expect('RELEASED');
  t.true(env.m.unlock(owner(1), F, 'K'));
  const p4 = env.py('K', 'write');
  await p4.expect('LOCKED');
  // Theirs -> ours: the holder's pid is known for a classic lock.
  const r = env.m.tryLock(owner(1), F, 'K', 'read');
  t.false(r.granted);
  if (!r.granted) t.like(r.holder, { pid: p4.pid, mode: 'write' });
  t.like(env.m.status(owner(2), F, 'K'), { code: -2, holder: { pid: p4.pid } });
  const w = env.m.lock(owner(1), F, 'K', 'write');
  await new Promise((r2) => setTimeout(r2, 100));
  p4.release();
  await p4.expect('RELEASED');
  await withTimeout(w, PROMPT_MS, 'our wait after python released');
  t.true(env.m.unlock(owner(1), F, 'K'));
  // A classic C holder, and our waiting lock behind it.
  const c2 = env.c(['hold', 'K', 'read', 'classic']);
  const [pid] = await c2.expect('LOCKED');
  t.true(env.m.tryLock(owner(1), F, 'K', 'read').granted, 'read locks share across OFD and classic');
  const r2 = env.m.tryLock(owner(2), F, 'K', 'write');
  t.false(r2.granted);
  if (!r2.granted) t.true([Number(pid), process.pid].includes(r2.holder.pid), `holder ${r2.holder.pid}`);
  t.true(env.m.unlock(owner(1), F, 'K'));
  const r3 = env.m.tryLock(owner(2), F, 'K', 'write');
  t.false(r3.granted);
  if (!r3.granted) t.is(r3.holder.pid, Number(pid), 'the classic holder, by pid');
  c2.release();
  await c2.expect('RELEASED');
  t.true(env.m.tryLock(owner(2), F, 'K', 'write').granted);
});

test.serial('kill -9 of a holder releases through the kernel: C OFD holder, Node OsLocks holder', async (t) => {
  const env = osEnv(t);
  const h = env.c(['hold', 'K', 'write', 'ofd']);
  await h.expect('LOCKED');
  const w = env.m.lock(owner(1), F, 'K', 'write');
  await new Promise((r) => setTimeout(r, 100));
  await h.kill9();
  await withTimeout(w, PROMPT_MS, 'the wait after kill -9 of the holder');
  t.true(env.m.unlock(owner(1), F, 'K'));
  const n = env.node(['hold', 'K2', 'write']);
  await n.expect('LOCKED');
  const c = env.c(['try', 'K2', 'write', 'ofd']);
  await c.expect('CONFLICT');
  await n.kill9();
  const c2 = env.c(['try', 'K2', 'write', 'ofd']);
  await c2.expect('GRANTED');
  t.true(env.m.tryLock(owner(1), F, 'K2', 'write').granted);
});

test.serial('a counter kept exact by OS record locks: C OFD, C classic and Node processes (one serving 3 owners)', async (t) => {
  const env = osEnv(t);
  const counter = env.file('counter');
  fs.writeFileSync(counter, '0\n');
  const perC = 1000, perNode = 150;
  const procs = [
    env.c(['counter', 'COUNTER', counter, String(perC), 'ofd']),
    env.c(['counter', 'COUNTER', counter, String(perC), 'ofd']),
    env.c(['counter', 'COUNTER', counter, String(perC), 'classic']),
    env.node(['counter', 'COUNTER', counter, String(perNode), '3']),
    env.node(['counter', 'COUNTER', counter, String(perNode), '1']),
  ];
  for (const p of procs) {
    await p.expect('DONE', 60_000);
    await p.success();
  }
  t.is(Number(fs.readFileSync(counter, 'utf8').trim()), 3 * perC + 4 * perNode);
});

// ---- waits ------------------------------------------------------------------

test.serial('timeout and abort of a wait leave nothing held; close() withdraws waits with CLOSED', async (t) => {
  const env = osEnv(t);
  const a = owner(1), b = owner(2);
  t.true(env.m.tryLock(a, F, 'K', 'write').granted);
  const t0 = Date.now();
  await t.throwsAsync(env.m.lock(b, F, 'K', 'write', { timeoutMs: 150 }), { code: 'TIMEOUT' });
  t.true(Date.now() - t0 >= 140);
  const ac = new AbortController();
  const p = env.m.lock(b, F, 'K', 'read', { signal: ac.signal });
  setTimeout(() => ac.abort(), 50);
  await t.throwsAsync(p, { code: 'ABORTED' });
  await t.throwsAsync(env.m.lock(b, F, 'K', 'read', { signal: AbortSignal.abort() }), { code: 'ABORTED' });
  t.is(pendingWaits(), 0);
  t.true(env.m.unlock(a, F, 'K'));
  t.deepEqual(env.m.rows(), []);
  // Nothing held by b, in the kernel either: another process gets a write lock.
  const c = env.c(['try', 'K', 'write', 'ofd']);
  await c.expect('GRANTED');
  // close(): a pending wait rejects with CLOSED, and every lock is released.
  const m2 = OsLocks.open({ lockDir: env.dir });
  t.true(m2.tryLock(a, F, 'K', 'write').granted);
  const pw = env.m.lock(b, F, 'K', 'write');
  await tick();
  const held = m2.lock(a, F, 'K3', 'write');
  await held;
  const p2 = m2.lock(b, F, 'K', 'write'); // b in m2 waits for a in m2
  m2.close();
  await t.throwsAsync(p2, { code: 'CLOSED' });
  await withTimeout(pw, PROMPT_MS, 'the other mechanism\'s wait after close released a');
  t.true(env.m.unlock(b, F, 'K'));
  const c2 = env.c(['try', 'K3', 'write', 'ofd']);
  await c2.expect('GRANTED');
});

test.serial('the event loop and the libuv pool stay free while 6 waits are pending', async (t) => {
  const env = osEnv(t);
  const holder = env.c(['hold', 'BUSY', 'write', 'ofd']);
  await holder.expect('LOCKED');
  const waits = [1, 2, 3, 4, 5, 6].map((i) => env.m.lock(owner(i), F, 'BUSY', 'read'));
  await new Promise((r) => setTimeout(r, 50));
  t.is(pendingWaits(), 6);
  // More waits than the pool's 4 threads: fs work and loop turns must still
  // complete WHILE the lock is held (the holder releases only after them).
  // A wait parked on the pool or the loop would make them never finish: the
  // bound only turns that hang into a failure; no duration is asserted, a
  // loaded machine may take its time.
  await withTimeout(Promise.all([1, 2, 3, 4, 5, 6, 7, 8].map(() => fs.promises.stat(env.dir))), 20_000, 'fs.promises.stat x8 with 6 lock waits pending');
  await withTimeout((async () => { for (let i = 0; i < 100; i++) await tick(); })(), 20_000, '100 setImmediate turns with 6 lock waits pending');
  t.is(pendingWaits(), 6, 'all six still waiting: the work above ran during the waits');
  holder.release();
  await holder.expect('RELEASED');
  await withTimeout(Promise.all(waits), PROMPT_MS, 'all six readers');
  t.is(env.m.rows().length, 6);
  t.is(pendingWaits(), 0);
});

// ---- OfdFile: byte ranges ------------------------------------------------------

test('OfdFile: two descriptions in one process conflict; ranges at 1 GiB and near 2^63; partial unlock splits', async (t) => {
  const env = osEnv(t);
  const p = path.join(env.dir, 'ranges');
  const a = OfdFile.open(p), b = OfdFile.open(p);
  t.teardown(() => { a.close(); b.close(); });
  const G = 0x40000000n;
  t.deepEqual(a.tryLockRange(G, 1, 'write'), { granted: true });
  const r = b.tryLockRange(G, 1, 'read');
  t.false(r.granted);
  if (!r.granted) t.like(r.holder, { pid: -1, mode: 'write', start: G, len: 1n });
  t.deepEqual(b.tryLockRange(G + 2n, 510, 'read'), { granted: true }, 'sqlite SHARED range next to it');
  // Split: [0,100) write, unlock [40,60): the middle is free, both ends held.
  t.true(a.tryLockRange(0, 100, 'write').granted);
  a.unlockRange(40, 20);
  t.true(b.tryLockRange(45, 5, 'write').granted);
  t.false(b.tryLockRange(10, 10, 'read').granted);
  t.false(b.tryLockRange(60, 1, 'read').granted);
  t.like(b.getlk(0, 0, 'read'), { start: 0n, len: 40n, pid: -1 });
  // 64-bit: the last byte of the largest file.
  const last = (1n << 63n) - 1n;
  t.true(a.tryLockRange(last, 1, 'write').granted);
  t.false(b.tryLockRange(last, 1, 'read').granted);
  t.throws(() => a.tryLockRange(last, 2, 'write'), { code: 'BAD_ARGUMENT' });
  t.throws(() => a.tryLockRange(-1, 1, 'write'), { code: 'BAD_ARGUMENT' });
  t.throws(() => a.tryLockRange(1.5, 1, 'write'), { code: 'BAD_ARGUMENT' });
  // len 0: to the end and beyond.
  a.unlockRange(0, 0);
  t.is(a.getlk(0, 0, 'write')?.start, 45n, 'only b\'s locks remain');
  // A wait on a range, granted when the other description unlocks.
  const w = a.lockRange(45, 5, 'write');
  await new Promise((r2) => setTimeout(r2, 50));
  b.unlockRange(45, 5);
  await withTimeout(w, PROMPT_MS, 'the range wait');
  await t.throwsAsync(b.lockRange(45, 1, 'read', { timeoutMs: 50 }), { code: 'TIMEOUT' });
  const pending = b.lockRange(46, 1, 'read');
  b.close();
  await t.throwsAsync(pending, { code: 'CLOSED' });
  t.throws(() => b.tryLockRange(0, 1, 'read'), { code: 'CLOSED' });
  t.is(a.getlk(0, 0, 'write'), undefined, 'closing b released its locks');
  t.is(pendingWaits(), 0);
});

test.serial('many keys of one owner in one file: each byte held in its own mode, releases touch only their key', async (t) => {
  const env = osEnv(t);
  const a = owner(1);
  const keys = Array.from({ length: 60 }, (_, i) => `REC*${i}`);
  keys.forEach((k, i) => t.true(env.m.tryLock(a, F, k, i % 3 === 0 ? 'read' : 'write').granted));
  t.is(env.m.rows().length, 60);
  keys.forEach((k, i) => t.is(env.m.status(a, F, k).code, i % 3 === 0 ? 1 : 2));
  for (let i = 0; i < 60; i += 2) t.true(env.m.unlock(a, F, keys[i] ?? ''));
  t.is(env.m.rows().length, 30);
  const free = env.c(['try', 'REC*10', 'write', 'ofd']);
  await free.expect('GRANTED');
  const held = env.c(['try', 'REC*11', 'read', 'ofd']);
  t.deepEqual(await held.expect('CONFLICT'), ['-1', 'write']);
  const shared = env.c(['try', 'REC*3', 'read', 'ofd']);
  await shared.expect('GRANTED', 5000);
  t.is(env.m.unlockAll(a, F), 30);
  const after = env.c(['try', 'REC*11', 'write', 'ofd']);
  await after.expect('GRANTED');
});

test.serial('a worker thread\'s exit releases the OFD locks it held (env cleanup closes its descriptions)', async (t) => {
  const env = osEnv(t);
  const { Worker } = await import('node:worker_threads');
  const src = `
    const { parentPort, workerData } = require('node:worker_threads');
    (async () => {
      const { OsLocks } = await import(workerData.oslock);
      const { makeOwner, fileId } = await import(workerData.table);
      const m = OsLocks.open({ lockDir: workerData.dir });
      const r = m.tryLock(makeOwner({ ownerTid: 77 }), fileId(0x1234n, -1n), 'WK', 'write');
      // a wait that is still pending when the worker goes
      m.lock(makeOwner({ ownerTid: 78 }), fileId(0x1234n, -1n), 'WK', 'write').catch(() => {});
      parentPort.postMessage(r.granted);
    })();`;
  const dist = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..', 'src', 'locks');
  const w = new Worker(src, { eval: true, workerData: { dir: env.dir, oslock: path.join(dist, 'oslock.js'), table: path.join(dist, 'table.js') } });
  const granted = await withTimeout(new Promise((resolve) => w.once('message', resolve)), 10_000, 'the worker\'s lock');
  t.true(granted);
  t.false(env.m.tryLock(owner(1), F, 'WK', 'read').granted);
  await w.terminate();
  t.true(env.m.tryLock(owner(1), F, 'WK', 'write').granted, 'released at the worker\'s exit');
});

test('conflict() (F_GETLK) looks past the owner\'s own lock: this process\'s other owners, and another process (python lockf)', async (t) => {
  const { m, py } = osEnv(t);
  const a = owner(41);
  const b = owner(42);
  t.true(m.tryLock(a, F, 'Q', 'read').granted);
  t.is(m.conflict(a, F, 'Q', 'write'), undefined, 'alone: only its own lock');
  t.true(m.tryLock(b, F, 'Q', 'read').granted);
  t.like(m.conflict(a, F, 'Q', 'write'), { mode: 'read', ownerTid: b.ownerTid });
  t.is(m.conflict(a, F, 'Q', 'read'), undefined);
  m.unlock(b, F, 'Q');
  m.unlock(a, F, 'Q');
  const p = py('R', 'write');
  t.regex(await p.line(), /^LOCKED \d+$/);
  t.like(m.conflict(a, F, 'R', 'read'), { mode: 'write', pid: p.pid });
  p.release();
  await p.expect('RELEASED');
  t.is(m.conflict(a, F, 'R', 'write'), undefined);
});

test('two files whose inodes differ only above bit 32 share a lock file (the guide\'s name) but never a lock', async (t) => {
  const env = osEnv(t);
  const m = env.m;
  // jlock_<low 32 bits of the inode>_<low 32 of dev>: XFS and btrfs give
  // inodes above 2^32, so two files can share a lock file.
  const f1 = fileId(0x1_0000_0042n, 7n);
  const f2 = fileId(0x2_0000_0042n, 7n);
  t.is(lockFileName(env.dir, f1), lockFileName(env.dir, f2), 'one lock file');
  t.is(lockFileName(env.dir, fileId(0x42n, 7n)), lockFileName(env.dir, f1), 'the name is the guide\'s');
  const a = owner(61);
  const b = owner(62);
  t.true(m.tryLock(a, f1, 'K', 'write').granted);
  t.true(m.tryLock(a, f2, 'K', 'write').granted);
  t.true(m.unlock(a, f2, 'K'));
  // a still holds K in f1: releasing K in f2 must not have released it.
  t.is(m.status(a, f1, 'K').code, 2);
  t.false(m.tryLock(b, f1, 'K', 'write').granted, 'another owner must not get K in f1');
  t.true(m.tryLock(b, f2, 'K', 'write').granted, 'K in f2 is free');
  t.false(m.tryLock(a, f2, 'K', 'read').granted);
  // A separate C process (classic fcntl lock, the byte as jdls_oslock.c
  // lays it out) agrees on the byte of each file's key.
  m.unlockAll(a);
  m.unlockAll(b);
  const c1 = env.c(['hold', 'K', 'write', 'classic'], f1);
  await c1.expect('LOCKED');
  t.false(m.tryLock(a, f1, 'K', 'write').granted, 'the C process holds K in f1');
  t.true(m.tryLock(a, f2, 'K', 'write').granted, 'and not K in f2');
  c1.release();
  await c1.expect('RELEASED');
  await c1.success();
  t.true(m.tryLock(b, f1, 'K', 'write').granted);
});

test('UNLOCK_FILE of one of two files that share a lock file releases only that file\'s keys; rows name each file', (t) => {
  const env = osEnv(t);
  const m = env.m;
  const f1 = fileId(0x1_0000_0077n, 7n);
  const f2 = fileId(0x2_0000_0077n, 7n);
  const f0 = fileId(0x77n, 7n); // the exact name of the same lock file
  const a = owner(71);
  const b = owner(72);
  for (const [f, k] of [[f0, 'Z'], [f1, 'K'], [f2, 'L']] as const) t.true(m.tryLock(a, f, k, 'write').granted);
  const rows = m.rows().map((r) => `${r.inode.toString(16)}:${r.key.toString()}`).sort();
  t.deepEqual(rows, ['100000077:K', '200000077:L', '77:Z']);
  t.is(m.unlockAll(a, f2), 1, 'only L');
  t.false(m.tryLock(b, f1, 'K', 'write').granted, 'K in f1 still held');
  t.false(m.tryLock(b, f0, 'Z', 'write').granted, 'Z in f0 still held');
  t.true(m.tryLock(b, f2, 'L', 'write').granted);
  t.is(m.unlockAll(a, f0), 1, 'only Z');
  t.false(m.tryLock(b, f1, 'K', 'write').granted, 'K in f1 still held');
  t.is(m.unlockAll(a), 1);
  t.true(m.tryLock(b, f1, 'K', 'write').granted);
});
