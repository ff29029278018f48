// info-records.test.ts - info records written by lock servers (one per
// client session) and by Node runtimes locking directly (LockTable.open
// info), removed at the normal end and when a client dies; stale records of
// a killed lock server or direct process marked by readInfoDir and removed
// by the monitor's tidy-up; duplicate ports logged once; atomic rewrites
// (a reader racing them never sees a bad record); jdls -ib's directory.
import test from 'ava';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { JdlsClient } from '../src/client/client.js';
import { infoDir, INFO_VERSION, recordFileName, type InfoRecord } from '../src/info/format.js';
import { readInfoDir, type ReadRecord } from '../src/info/reader.js';
import { InfoWriter } from '../src/info/writer.js';
import { native } from '../src/native.js';
import { ServerEnv, until, alive } from './helpers/server-env.js';
import { Proc, nodeFixture } from './helpers/table-env.js';
import { recordPid, testDir } from './helpers/installations.js';

const records = (dir: string, port?: number): ReadRecord[] =>
  readInfoDir(dir, port === undefined ? {} : { filter: { port } }).records;

function fixture(env: ServerEnv, args: string[]): Proc {
  const p = new Proc(spawn(process.execPath, [nodeFixture('info-client'), ...args], { env: env.env, stdio: ['pipe', 'pipe', 'pipe'] }), `info-client ${args.join(' ')}`);
  recordPid(env.dir, p.pid);
  return p;
}

test('jdls -ib makes proc/info 03770, owned like the release directory', async (t) => {
  const env = new ServerEnv(t);
  await env.start();
  const st = fs.statSync(infoDir(env.dir));
  const rel = fs.statSync(env.dir);
  t.true(st.isDirectory());
  t.is((st.mode & 0o7777).toString(8), '3770');
  t.is(st.uid, rel.uid);
  t.is(st.gid, rel.gid);
});

test('a remote library client: its lock server writes its record (files, lock, lockNo, session) and removes it at close', async (t) => {
  const env = new ServerEnv(t);
  await env.start();
  const c = await JdlsClient.connect(`SERVER=127.0.0.1,${env.port}`, { port: 41, program: 'PROG41', errorTrace: false });
  t.teardown(() => c.close());
  t.true(c.server.info);
  c.declareFile('/data/CUSTOMERS', { inode: 4242n });
  t.true((await c.lock({ inode: 4242n }, 'C*1', 'write')).granted);
  // the lock and the declared file are written within ~2 x INFO_FLUSH_MS
  // Deadlines, not timings: the writer's coalescing gap grows with a slow
  // write (49 x its duration, src/info/writer.ts), so on a loaded host a
  // change can take seconds to be written (a fresh-clone CI run missed 5 s).
  await until(() => records(env.dir, 41).some((r) => r.record.locks.length === 1 && r.record.files.length === 1), 30_000, 'record with the lock and the file');
  const [r] = records(env.dir, 41);
  if (!r) return t.fail('no record');
  t.is(r.record.ipaddr, '127.0.0.1');
  t.is(r.record.pid, process.pid);
  t.is(r.record.program, 'PROG41');
  t.is(r.record.user, os.userInfo().username);
  t.is(r.record.writer.kind, 'lockserver');
  t.true(env.lockServers().includes(r.record.writer.pid));
  t.is(r.stale, undefined);
  t.like(r.record.locks[0], { file: '/data/CUSTOMERS', inode: '4242', dev: '-1', key: 'C*1', mode: 'write', kind: 'record' });
  t.regex(r.record.locks[0]?.lockNo ?? '', /^0x[0-9a-f]{8}$/);
  t.regex(r.record.locks[0]?.token ?? '', /^\d+$/);
  t.is(r.record.session?.pid, r.record.writer.pid);
  t.true((r.record.session?.stats.requests ?? 0) >= 1);
  t.is(r.file, recordFileName(41, '127.0.0.1', process.pid));
  t.is((fs.statSync(path.join(infoDir(env.dir), r.file)).mode & 0o777).toString(8), '640');
  // the query sees the same
  t.is((await c.queryInfo({ port: 41 })).records[0]?.record.locks[0]?.key, 'C*1');
  await c.unlock({ inode: 4242n }, 'C*1');
  await until(() => records(env.dir, 41)[0]?.record.locks.length === 0, 30_000, 'the unlock written');
  await c.close();
  await until(() => records(env.dir, 41).length === 0, 30_000, 'record removed at close');
  t.pass();
});

test('a waiting remote client: its record shows the wait at once, and not after the grant', async (t) => {
  const env = new ServerEnv(t, { interimMs: 200 });
  await env.start();
  const a = await JdlsClient.connect(`SERVER=127.0.0.1,${env.port}`, { port: 51, errorTrace: false });
  const b = await JdlsClient.connect(`SERVER=127.0.0.1,${env.port}`, { port: 52, errorTrace: false });
  t.teardown(async () => { await a.close(); await b.close(); });
  t.true((await a.lock({ inode: 7n }, 'W', 'write')).granted);
  const waiting = b.lock({ inode: 7n }, 'W', 'write');
  await until(() => records(env.dir, 52)[0]?.record.waiting?.key === 'W', 5000, 'the wait in the record');
  t.like(records(env.dir, 52)[0]?.record.waiting, { inode: '7', dev: '-1', mode: 'write', kind: 'record' });
  await a.unlock({ inode: 7n }, 'W');
  t.true((await waiting).granted);
  await until(() => { const r = records(env.dir, 52)[0]?.record; return r !== undefined && r.waiting === undefined && r.locks.length === 1; }, 5000, 'the grant written');
  const s = records(env.dir, 52)[0]?.record.session?.stats;
  t.true((s?.waits ?? 0) >= 1);
});

test('a killed (-9) remote client: its lock server removes its record', async (t) => {
  const env = new ServerEnv(t);
  await env.start();
  const p = fixture(env, ['remote', String(env.port), '61', 'K61']);
  await p.expect('READY');
  await until(() => records(env.dir, 61).some((r) => r.record.locks.length === 1 && r.record.files[0]?.name === '/data/CUSTOMERS'), 5000, 'record of the child');
  process.kill(p.pid, 'SIGKILL');
  await until(() => records(env.dir, 61).length === 0, 10_000, 'record removed by the lock server');
  t.pass();
});

test('a Node runtime locking directly: its own record (0.0.0.0, lockNo, file name), removed at close', async (t) => {
  const env = new ServerEnv(t);
  await env.start();
  const p = fixture(env, ['direct', '71', 'D71']);
  const [file] = await p.expect('READY');
  const [r] = records(env.dir, 71);
  if (!r) return t.fail('no record');
  t.is(path.join(infoDir(env.dir), r.file), file ?? '');
  t.like(r.record, { port: 71, pid: p.pid, ipaddr: '0.0.0.0', program: 'info-direct', writer: { kind: 'local', pid: p.pid } });
  t.like(r.record.locks[0], { file: '/data/CUSTOMERS', inode: '4242', dev: '7', key: 'D71', mode: 'write', kind: 'record' });
  t.regex(r.record.locks[0]?.lockNo ?? '', /^0x[0-9a-f]{8}$/);
  t.is(r.record.stats.locks, 1);
  p.child.stdin?.end();
  await p.expect('DONE');
  t.deepEqual(records(env.dir, 71), []);
});

test('killed (-9) writers: a direct process and a lock-server process leave stale records; readInfoDir says so and the monitor removes them', async (t) => {
  const env = new ServerEnv(t);
  await env.start();
  const d = fixture(env, ['direct', '81', 'D81']);
  await d.expect('READY');
  const r = fixture(env, ['remote', String(env.port), '82', 'K82']);
  await r.expect('READY');
  await until(() => records(env.dir, 82).some((x) => x.record.locks.length === 1), 5000, 'remote record');
  const server = records(env.dir, 82)[0]?.record.writer.pid ?? 0;
  t.true(server > 0 && env.lockServers().includes(server));
  process.kill(d.pid, 'SIGKILL');
  process.kill(server, 'SIGKILL');
  await until(() => !alive(d.pid) && !alive(server), 5000, 'both dead');
  // before the monitor's next wake (10 s) the records may still be there: stale
  const seen = records(env.dir).filter((x) => x.record.port === 81 || x.record.port === 82);
  for (const x of seen) t.regex(x.stale ?? '', /is dead/, `${x.file} stale`);
  await until(() => records(env.dir).every((x) => x.record.port !== 81 && x.record.port !== 82), 25_000, 'the monitor removed them');
  // the monitor's log lines may reach the file a little after the unlink
  await until(() => /info record of port 81 removed: process \d+ is dead/.test(env.logs()), 10_000, 'removal of 81 logged');
  await until(() => /info record of port 82 removed: lock-server process \d+ is dead/.test(env.logs()), 10_000, 'removal of 82 logged');
  t.pass();
});

test('two live records claim one port: the monitor logs it, once', async (t) => {
  const env = new ServerEnv(t);
  await env.start();
  const now = Date.now();
  const rec = (pid: number, ipaddr: string): InfoRecord => ({
    version: INFO_VERSION, port: 91, pid, ipaddr, host: 'apphost', user: 'u', program: 'DUP', startedMs: now, updatedMs: now,
    writer: { kind: 'local', pid: process.pid, start: native.pidStart(process.pid) }, files: [], locks: [], stats: { locks: 0, waits: 0, waitMs: 0, retries: 0 },
  });
  for (const [pid, ip] of [[5001, '10.0.0.1'], [5002, '10.0.0.2']] as const) fs.writeFileSync(path.join(infoDir(env.dir), recordFileName(91, ip, pid)), JSON.stringify(rec(pid, ip)));
  await until(() => /port 91 is claimed by 2 live processes/.test(env.logs()), 25_000, 'duplicate logged');
  // a later wake (every <= 10 s) does not log it again
  const before = env.logs().match(/port 91 is claimed/g)?.length;
  await new Promise((res) => setTimeout(res, 11_000));
  t.is(env.logs().match(/port 91 is claimed/g)?.length, before);
  t.is(before, 1);
});

test('atomic rewrites: a reader racing 2000 rewrites never sees a half-written record, and temp names are skipped', async (t) => {
  const dir = testDir('info');
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  fs.mkdirSync(infoDir(dir), { recursive: true });
  let n = 0;
  const now = Date.now();
  const w = new InfoWriter({
    releaseDir: dir, port: 5, ipaddr: '0.0.0.0', pid: process.pid, enabled: true, flushMs: 0,
    build: () => ({
      version: INFO_VERSION, port: 5, pid: process.pid, ipaddr: '0.0.0.0', host: 'h', user: 'u', program: 'p', startedMs: now, updatedMs: 0,
      writer: { kind: 'local', pid: process.pid, start: native.pidStart(process.pid) }, files: [], stats: { locks: n, waits: 0, waitMs: 0, retries: 0 },
      // a record of varying size: a torn write would be cut JSON
      locks: Array.from({ length: n % 50 }, (_, i) => ({ inode: String(i), dev: '1', key: `K${i}`.repeat(n % 7 + 1), mode: 'read' as const, kind: 'record' as const, sinceMs: now })),
    }),
  });
  // a planted temp-looking file is never read
  fs.writeFileSync(path.join(infoDir(dir), '.5.0.0.0.0.1.json.abc'), '{half');
  // The reader: reads the directory in a loop from "STARTED" until the stop file exists.
  const stop = path.join(dir, 'stop');
  const child = spawn(process.execPath, ['--input-type=module', '-e', `
    import fs from 'node:fs';
    const { readInfoDir } = await import(${JSON.stringify(path.resolve('dist/src/info/reader.js'))});
    let reads = 0, bad = 0;
    console.log('STARTED');
    while (!fs.existsSync(${JSON.stringify(stop)})) { const l = readInfoDir(${JSON.stringify(dir)}); reads++; bad += l.skipped.length + (l.records.length === 1 ? 0 : 1); }
    console.log(JSON.stringify({ reads, bad }));
  `], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout.on('data', (d: Buffer) => { out += d.toString(); });
  const closed = new Promise<void>((res) => child.on('close', () => res()));
  w.moment('start');
  await until(() => out.startsWith('STARTED'), 10_000, 'the reader started');
  // 2000 rewrites while it reads, yielding between batches
  await new Promise<void>((resolve) => {
    const step = (): void => {
      for (let i = 0; i < 50 && n < 2000; i++) { n++; w.moment('idle'); }
      if (n < 2000) setImmediate(step);
      else resolve();
    };
    step();
  });
  fs.writeFileSync(stop, '');
  await closed;
  const res = JSON.parse(out.slice(out.indexOf('\n') + 1)) as { reads: number; bad: number };
  t.log(`${res.reads} reads raced ${n} rewrites`);
  t.true(res.reads > 0);
  t.is(res.bad, 0);
  t.is(w.writes, n + 1);
  w.remove();
  t.false(fs.existsSync(w.file));
});

test('JDLS_INFO=0 and a missing directory: nothing is written, no error', (t) => {
  const dir = testDir('info');
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const build = (): InfoRecord => ({ version: INFO_VERSION, port: 1, pid: 1, ipaddr: '0.0.0.0', host: 'h', user: 'u', program: 'p', startedMs: 0, updatedMs: 0, writer: { kind: 'local', pid: 1, start: 1 }, files: [], locks: [], stats: { locks: 0, waits: 0, waitMs: 0, retries: 0 } });
  const skips: string[] = [];
  const missing = new InfoWriter({ releaseDir: dir, port: 1, ipaddr: '0.0.0.0', pid: 1, build, enabled: true, onSkip: (w) => skips.push(w) });
  missing.moment('start');
  missing.moment('idle');
  t.is(missing.writes, 0);
  t.is(skips.length, 1, 'said once');
  t.regex(skips[0] ?? '', /no info directory/);
  fs.mkdirSync(infoDir(dir), { recursive: true });
  const off = new InfoWriter({ releaseDir: dir, port: 1, ipaddr: '0.0.0.0', pid: 1, build, enabled: false });
  off.moment('start');
  off.change();
  t.is(off.writes, 0);
  t.deepEqual(fs.readdirSync(infoDir(dir)), []);
});

test('INFO with bad JSON: a warning, the record keeps what it had, the connection goes on; INFO without flag INFO closes', async (t) => {
  const env = new ServerEnv(t);
  await env.start();
  const w = await env.client({ info: true, port: 95 });
  t.true(w.welcome?.info);
  w.sendFrame({ type: 'INFO', requestId: 0, info: { user: 'alice', program: 'P', files: [{ name: 'F', inode: '1', dev: '-1' }], stats: { locks: 0, waits: 0, waitMs: 0, retries: 0 }, moment: 'idle' } });
  await until(() => records(env.dir, 95)[0]?.record.user === 'alice', 5000, 'the INFO written (moment idle: at once)');
  const bad = Buffer.from('{"user":');
  const len = Buffer.alloc(4);
  len.writeUInt32BE(bad.length);
  const head = Buffer.alloc(12);
  head.writeUInt32BE(8 + 4 + bad.length, 0);
  head.writeUInt8(1, 4);
  head.writeUInt8(0x1b, 5);
  w.sendBytes(Buffer.concat([head, len, bad]));
  t.is((await w.ping()).type, 'PONG');
  t.is(w.connectionError, undefined);
  await until(() => /INFO ignored: its JSON is not a client info/.test(env.logs()), 5000, 'the warning');
  t.is(records(env.dir, 95)[0]?.record.user, 'alice');
  t.is(records(env.dir, 95)[0]?.record.files[0]?.name, 'F');
  // a client that did not offer INFO must not send it: the stream is not trusted any more
  const old = await env.client({ port: 96 });
  t.is(old.welcome?.info, undefined);
  old.sendFrame({ type: 'INFO', requestId: 0, info: { user: 'x', program: 'P', files: [], stats: { locks: 0, waits: 0, waitMs: 0, retries: 0 }, moment: 'idle' } });
  await until(() => old.connectionError !== undefined, 5000, 'closed');
  t.like(old.connectionError, { code: 'PROTOCOL' });
});
