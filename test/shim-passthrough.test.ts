// shim-passthrough.test.ts - what the shim must leave alone: binary locks
// (flock(1), python3 fcntl.lockf, sqlite3 on ordinary files) behave the same
// with and without LD_PRELOAD, even with the lock monitor running; non-lock
// fcntl commands pass straight through; with no monitor record locks on
// jlock files stay OS locks; with JDLS set and the lock service unreachable
// a record lock ends the process with the guide's message.
// Serial: each test runs several processes and the machine has 2 cores.
import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { ShimEnv, SHIM_LOCKER } from './helpers/shim-env.js';

function osLocked(file: string): boolean {
  const ino = fs.statSync(file).ino;
  return fs.readFileSync('/proc/locks', 'utf8').split('\n').some((l) => l.split(/\s+/).some((f) => f.endsWith(`:${ino}`)));
}

for (const preload of [false, true]) {
  const label = preload ? 'with the shim' : 'without the shim';
  test.serial(`flock(1) on an ordinary file ${label}: -n fails and -w 0.5 times out while another holds it`, async (t) => {
    const s = new ShimEnv(t);
    await s.startMonitor();
    const f = path.join(s.cli.dir, 'some.lock');
    const holder = s.start('flock', [f, 'sh', '-c', 'echo holding; cat'], { preload });
    await holder.waitFor(/^holding$/);
    t.true(osLocked(f));
    t.is((await s.run('flock', ['-n', f, 'true'], { preload })).code, 1);
    const t0 = Date.now();
    const w = await s.run('flock', ['-w', '0.5', f, 'true'], { preload, timeoutMs: 10_000 });
    const took = Date.now() - t0;
    t.is(w.code, 1);
    t.true(took >= 400 && took < 5_000, `took ${took} ms`);
    t.is(await holder.finish(), 0);
    t.is((await s.run('flock', ['-n', f, 'true'], { preload })).code, 0);
  });

  test.serial(`python3 fcntl.lockf on an ordinary file ${label} stays a kernel lock`, async (t) => {
    const s = new ShimEnv(t);
    await s.startMonitor();
    const f = path.join(s.cli.dir, 'py.lock');
    const hold = `import fcntl,sys\nf=open(${JSON.stringify(f)},'a+')\nfcntl.lockf(f,fcntl.LOCK_EX,10,0)\nprint('holding',flush=True)\nsys.stdin.read()\n`;
    const tryIt = `import fcntl,errno\nf=open(${JSON.stringify(f)},'a+')\ntry:\n  fcntl.lockf(f,fcntl.LOCK_EX|fcntl.LOCK_NB,1,5)\n  print('got')\nexcept OSError as e:\n  print(errno.errorcode[e.errno])\n`;
    const holder = s.start('python3', ['-c', hold], { preload });
    await holder.waitFor(/^holding$/);
    t.true(osLocked(f));
    t.regex((await s.run('python3', ['-c', tryIt], { preload })).stdout.trim(), /^(EAGAIN|EACCES)$/);
    await holder.finish();
    t.is((await s.run('python3', ['-c', tryIt], { preload })).stdout.trim(), 'got');
  });
}

test.serial('several preloaded sqlite3 processes keep a counter exact (BEGIN IMMEDIATE, busy_timeout)', async (t) => {
  const s = new ShimEnv(t);
  await s.startMonitor();
  const db = path.join(s.cli.dir, 'c.db');
  const init = await s.run('sqlite3', [db, 'CREATE TABLE c(n INTEGER); INSERT INTO c VALUES (0);']);
  t.is(init.code, 0, init.stderr);
  const N = 4;
  const EACH = 100;
  const sql = `.timeout 20000\n${'BEGIN IMMEDIATE; UPDATE c SET n = n + 1; COMMIT;\n'.repeat(EACH)}`;
  const runs = await Promise.all(Array.from({ length: N }, () => s.run('sqlite3', [db], { input: sql, timeoutMs: 60_000 })));
  for (const r of runs) t.is(r.code, 0, r.stderr);
  const out = await s.run('sqlite3', [db, 'SELECT n FROM c;']);
  t.is(out.stdout.trim(), String(N * EACH));
  t.deepEqual(await s.locks(), [], 'nothing of sqlite went into the table');
});

test.serial('non-lock fcntl (F_GETFL) is unaffected', async (t) => {
  const s = new ShimEnv(t);
  await s.startMonitor();
  const f = s.jlock(1, 2);
  const a = await s.run(SHIM_LOCKER, [f, 'getfl'], { preload: false });
  const b = await s.run(SHIM_LOCKER, [f, 'getfl'], { preload: true });
  t.regex(a.stdout, /^flags \d+/);
  t.is(b.stdout, a.stdout);
});

test.serial('no monitor: record locks on jlock files are left to the OS', async (t) => {
  const s = new ShimEnv(t);
  const f = s.jlock(0xabcd, 0x801);
  const holder = s.start(SHIM_LOCKER, [f, 'w:5', 'hold']);
  await holder.waitFor(/^holding$/);
  t.true(osLocked(f), 'a kernel lock');
  // A program without the shim sees it: it is an ordinary OS lock.
  t.deepEqual((await s.run(SHIM_LOCKER, [f, 'w:5', 'g:5'], { preload: false })).stdout.trim().split('\n'), ['EAGAIN', `held W pid=${holder.pid}`]);
  await holder.finish();
});

test.serial('JDLS set: record locks belong to the lock service; unreachable, the process gets the guide\'s message and exits, never locks locally', async (t) => {
  const s = new ShimEnv(t);
  await s.startMonitor();
  const f = s.jlock(0xabcd, 0x801);
  const r = await s.run(SHIM_LOCKER, [f, 'w:5', 'hold'], { env: { JDLS: 'SERVER=127.0.0.1,1' } });
  t.is(r.code, 1);
  t.regex(r.stderr, /^Client: unable to connect to distributed lock service, locks not enabled$/m);
  t.notRegex(r.stdout, /holding/, 'it never ran on holding a local lock');
  t.false(osLocked(f), 'no kernel lock');
  t.deepEqual(await s.locks(), [], 'no table lock');
  // A binary lock (flock on an ordinary file) is the OS's unless BINARY.
  const plain = path.join(s.cli.dir, 'plain.lock');
  t.is((await s.run('flock', ['-n', plain, 'true'], { env: { JDLS: 'SERVER=127.0.0.1,1' } })).code, 0);
  const bin = await s.run('flock', ['-n', plain, 'true'], { env: { JDLS: 'SERVER=127.0.0.1,1, binary' } });
  t.is(bin.code, 1);
  t.regex(bin.stderr, /unable to connect to distributed lock service, locks not enabled/);
});
