// shim-binary.test.ts - JDLS with BINARY: the binary locks of unmodified
// programs (sqlite3's fcntl byte ranges, flock(1), python3 fcntl.lockf /
// os.lockf) go through the broker to a real `jdls -ib` lock server as
// RANGE_* requests, with POSIX semantics; a negative control shows the
// sqlite test detects broken exclusion (two unrelated servers).
// Serial: each test runs several processes and the machine has 2 cores.
import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { ShimEnv } from './helpers/shim-env.js';
import { packageRoot } from '../src/native.js';

const LOCKF_RANGES = path.join(packageRoot, 'test', 'fixtures', 'lockf-ranges.py');
const N = 4;
const EACH = 100;

/** The server's pseudo file for a file's byte ranges (src/locks/binary-paths.ts). */
function rangeFile(s: ShimEnv, file: string): string {
  const ino = fs.statSync(file).ino;
  return path.join(s.cli.dir, 'jbase_lock', `jrange_${ino.toString(16).padStart(8, '0')}_ffffffff`);
}

/** N preloaded sqlite3 processes, EACH increments; jdls[i] is process i's JDLS. */
async function sqliteRun(s: ShimEnv, db: string, jdls: (i: number) => string): Promise<{ count: string; failures: string[]; integrity: string }> {
  const sql = `.timeout 20000\n${'BEGIN IMMEDIATE; UPDATE c SET n = n + 1; COMMIT;\n'.repeat(EACH)}`;
  const runs = await Promise.all(Array.from({ length: N }, (_, i) => s.run('sqlite3', [db], { input: sql, timeoutMs: 60_000, env: { JDLS: jdls(i) } })));
  const failures = runs.filter((r) => r.code !== 0 || r.stderr !== '').map((r) => `${r.code} ${r.stderr.slice(0, 200)}`);
  const count = (await s.run('sqlite3', [db, 'SELECT n FROM c;'], { preload: false })).stdout.trim();
  const integrity = (await s.run('sqlite3', [db, 'PRAGMA integrity_check;'], { preload: false })).stdout.trim();
  return { count, failures, integrity };
}

async function initDb(s: ShimEnv, name: string): Promise<string> {
  const db = path.join(s.cli.dir, name);
  const init = await s.run('sqlite3', [db, 'CREATE TABLE c(n INTEGER); INSERT INTO c VALUES (0);'], { preload: false });
  if (init.code !== 0) throw new Error(init.stderr);
  return db;
}

for (const perProcess of [16, 1]) {
  test.serial(`sqlite3: several preloaded processes with BINARY keep a counter exact through the server (${perProcess} client(s) per lock-server process)`, async (t) => {
  const s = new ShimEnv(t);
  // 1 per process: every client in its own lock-server process, so exclusion
  // crosses processes (the kernel's OFD locks on the server's pseudo files)
  const server = await s.startServer({ clientsPerProcess: perProcess });
  const db = await initDb(s, 'c.db');
  const r = await sqliteRun(s, db, () => `${server},BINARY`);
  t.deepEqual(r.failures, []);
  t.is(r.count, String(N * EACH));
  t.is(r.integrity, 'ok');
  t.true(fs.existsSync(rangeFile(s, db)), 'the server took byte-range locks on the database file');
  });
}

test.serial('negative control: sqlite3 processes sent to two unrelated servers lose exclusion, and the test sees it', async (t) => {
  const a = new ShimEnv(t);
  const b = new ShimEnv(t);
  const sa = await a.startServer();
  const sb = await b.startServer();
  const db = await initDb(a, 'c.db');
  const r = await sqliteRun(a, db, (i) => `${i % 2 ? sb : sa},BINARY`);
  t.log(`count ${r.count} of ${N * EACH}, ${r.failures.length} failed processes, integrity ${r.integrity.split('\n')[0]}`);
  t.true(r.count !== String(N * EACH) || r.failures.length > 0 || r.integrity !== 'ok', 'broken exclusion must be detected');
});

test.serial('flock(1) through the server: -n fails and -w 0.5 times out while another preloaded process holds it; a kernel lock is not taken', async (t) => {
  const s = new ShimEnv(t);
  const JDLS = `${await s.startServer({ clientsPerProcess: 1 })},BINARY`;
  const f = path.join(s.cli.dir, 'some.lock');
  fs.writeFileSync(f, '');
  const holder = s.start('flock', [f, 'sh', '-c', 'echo holding; cat'], { env: { JDLS } });
  await holder.waitFor(/^holding$/, 15_000);
  const n = await s.run('flock', ['-n', f, 'true'], { env: { JDLS } });
  t.is(n.code, 1);
  t.is(n.stderr, '', 'a plain conflict (EWOULDBLOCK), not an error');
  const t0 = Date.now();
  const w = await s.run('flock', ['-w', '0.5', f, 'true'], { env: { JDLS }, timeoutMs: 10_000 });
  const took = Date.now() - t0;
  t.is(w.code, 1, w.stderr);
  t.true(took >= 400 && took < 5_000, `took ${took} ms`);
  // not a kernel lock: a program without the shim is not excluded
  t.is((await s.run('flock', ['-n', f, 'true'], { preload: false })).code, 0);
  t.is(await holder.finish(), 0);
  t.is((await s.run('flock', ['-n', f, 'true'], { env: { JDLS } })).code, 0);
});

test.serial('python3 fcntl.lockf / os.lockf: ranges, downgrade/upgrade, partial unlock answer as the kernel does, through the server', async (t) => {
  const s = new ShimEnv(t);
  // parent and probing children in different lock-server processes
  const JDLS = `${await s.startServer({ clientsPerProcess: 1 })},BINARY`;
  const f = path.join(s.cli.dir, 'ranges.dat');
  fs.writeFileSync(f, '');
  const kernel = await s.run('python3', [LOCKF_RANGES, f], { preload: false });
  t.is(kernel.code, 0, kernel.stderr);
  t.is(kernel.stdout.trim(), 'F T T F T F T F F T T F T', 'the kernel\'s answers');
  const shim = await s.run('python3', [LOCKF_RANGES, f], { env: { JDLS }, timeoutMs: 30_000 });
  t.is(shim.code, 0, shim.stderr);
  t.is(shim.stdout.trim(), kernel.stdout.trim());
  t.true(fs.existsSync(rangeFile(s, f)), 'the locks went to the server');
});
