// shim-info.test.ts - the info records of preloaded programs that lock
// directly in the installation's table (shim/shim_info.c, docs/shim.md
// "Info records"): the record appears with the process's port, pid and
// 0.0.0.0, its locks and the files' names (declared through the C API, or
// found from a descriptor for fcntl-only programs), shows a wait, is kept
// up to date after the program goes quiet, is removed at a normal exit and
// left (stale) after kill -9, and a fork child leaves its parent's alone.
// Serial: each test runs several processes and the machine has 2 cores.
import test, { type ExecutionContext } from 'ava';
import fs from 'node:fs';
import net from 'node:net';
import { once } from 'node:events';
import path from 'node:path';
import { ShimEnv } from './helpers/shim-env.js';
import { until } from './helpers/server-env.js';
import { buildDir } from '../src/native.js';
import { INFO_FLUSH_MS, INFO_VERSION, INFO_SUBDIR, INFO_ENV, LOCAL_ADDR, infoDir, parseRecord, recordFileName, type InfoRecord } from '../src/info/format.js';
import { readInfoDir } from '../src/info/reader.js';
import { encode } from '../src/protocol/codec.js';
import { handOver } from '../src/broker/handover.js';
import { FrameFlag, FrameType } from '../src/protocol/constants.js';

const SHIM_INFO = path.join(buildDir, 'jdls-shiminfo');
const HEADER = path.join(process.cwd(), 'native', 'common', 'jdls_info.h');

/** The private installation, its monitor, and its info directory (made here if `jdls -ib` does not make it). */
async function setup(t: ExecutionContext): Promise<{ s: ShimEnv; dir: string }> {
  const s = new ShimEnv(t);
  await s.startMonitor();
  const dir = infoDir(s.cli.dir);
  fs.mkdirSync(dir, { recursive: true, mode: 0o770 });
  return { s, dir };
}

function readRecord(dir: string, port: number, pid: number): InfoRecord | undefined {
  let text: string;
  try {
    text = fs.readFileSync(path.join(dir, recordFileName(port, LOCAL_ADDR, pid)), 'utf8');
  } catch {
    return undefined;
  }
  const r = parseRecord(text);
  if (typeof r === 'string') throw new Error(`not a record: ${r}\n${text}`);
  return r;
}

/** Poll until the record of (port, pid) satisfies `ok` (bounded); returns it. */
async function recordWhen(dir: string, port: number, pid: number, ok: (r: InfoRecord) => boolean, what: string): Promise<InfoRecord> {
  let got: InfoRecord | undefined;
  await until(() => {
    got = readRecord(dir, port, pid);
    return got !== undefined && ok(got);
  }, 10_000, what);
  return got!;
}

const keys = (r: InfoRecord): string[] => r.locks.map((l) => `${l.key} ${l.mode}`).sort();

test('jdls_info.h agrees with src/info/format.ts', (t) => {
  const h = fs.readFileSync(HEADER, 'utf8');
  const def = (name: string): string => {
    const m = new RegExp(`^#define ${name}\\s+(\\S+)`, 'm').exec(h);
    if (!m) throw new Error(`${name} is not defined in jdls_info.h`);
    return m[1]!;
  };
  t.is(Number(def('JDLS_INFO_VERSION')), INFO_VERSION);
  t.is(Number(def('JDLS_INFO_FLUSH_MS')), INFO_FLUSH_MS);
  t.is(JSON.parse(def('JDLS_INFO_SUBDIR')), INFO_SUBDIR);
  t.is(JSON.parse(def('JDLS_INFO_ENV')), INFO_ENV);
  t.is(JSON.parse(def('JDLS_INFO_LOCAL_ADDR')), LOCAL_ADDR);
  t.is(Number(def('JDLS_INFO_MAX_FILES')), 500);
});

test.serial('a C-API holder: its record shows port, pid, 0.0.0.0, the locks and the declared name; removed at exit', async (t) => {
  const { s, dir } = await setup(t);
  const data = path.join(s.cli.dir, 'custfile');
  const p = s.start(SHIM_INFO, [`open:${data}`, 'declare:CUSTOMERS', 'x:CUST*1', 's:CUST*2', 'hold'], { env: { JBCPORTNO: '41' } });
  await p.waitFor(/^holding$/);
  const st = fs.statSync(data);
  const r = await recordWhen(dir, 41, p.pid, (x) => x.locks.length === 2, 'the record lists both locks');
  t.is(r.version, 1);
  t.is(r.port, 41);
  t.is(r.pid, p.pid);
  t.is(r.ipaddr, '0.0.0.0');
  t.is(r.writer.kind, 'local');
  t.is(r.writer.pid, p.pid);
  t.true(r.program.includes('jdls-shiminfo'), r.program);
  t.true(r.user.length > 0);
  t.deepEqual(r.files, [{ name: 'CUSTOMERS', inode: String(st.ino), dev: String(st.dev) }]);
  t.deepEqual(keys(r), ['CUST*1 write', 'CUST*2 read']);
  for (const l of r.locks) {
    t.is(l.file, 'CUSTOMERS');
    t.is(l.inode, String(st.ino));
    t.is(l.kind, 'record');
    t.regex(l.lockNo ?? '', /^0x[0-9a-f]{8}$/);
  }
  t.is(r.stats.locks, 2);
  t.is(r.waiting, undefined);
  // The reader (what the utilities use) takes it as a live record.
  const listing = readInfoDir(s.cli.dir);
  const mine = listing.records.find((x) => x.record.pid === p.pid);
  t.truthy(mine);
  t.is(mine?.stale, undefined);
  t.deepEqual(listing.skipped, []);
  // Normal exit: removed.
  t.is(await p.finish(), 0);
  t.is(readRecord(dir, 41, p.pid), undefined);
  t.deepEqual(fs.readdirSync(dir), []);
});

test.serial('a change after the first write is written within the period even if the program then sleeps', async (t) => {
  const { s, dir } = await setup(t);
  const data = path.join(s.cli.dir, 'f');
  // x:A is the first lock (written at once); x:B comes 50 ms later, inside
  // the coalescing period, and then the program only sleeps: the flusher
  // must still write it.
  const p = s.start(SHIM_INFO, [`open:${data}`, 'x:A', 'sleep:50', 'x:B', 'hold'], { env: { JBCPORTNO: '5' } });
  await p.waitFor(/^holding$/);
  const r = await recordWhen(dir, 5, p.pid, (x) => x.locks.length === 2, 'B shows without another call');
  t.deepEqual(keys(r), ['A write', 'B write']);
  await p.finish();
});

test.serial('an fcntl-only program (python3 fcntl.lockf on a jlock file): the data file path from its descriptor', async (t) => {
  const { s, dir } = await setup(t);
  const data = path.join(s.cli.dir, 'orders.dat');
  fs.writeFileSync(data, '');
  const script = [
    'import fcntl, os, sys',
    'f = open(sys.argv[1], "r+")',
    'st = os.fstat(f.fileno())',
    'j = open(os.path.join(sys.argv[2], "jlock_%08x_%08x" % (st.st_ino & 0xffffffff, st.st_dev & 0xffffffff)), "a+")',
    'fcntl.lockf(j, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 31)',
    'print("locked", flush=True)',
    'sys.stdin.read()',
  ].join('\n');
  const p = s.start('python3', ['-c', script, data, s.lockDir], { env: { JBCPORTNO: '9' } });
  await p.waitFor(/^locked$/);
  const st = fs.statSync(data);
  const r = await recordWhen(dir, 9, p.pid, (x) => x.locks.length === 1, 'the fcntl lock is listed');
  t.is(r.locks[0]!.key, '1f');
  t.is(r.locks[0]!.inode, String(st.ino));
  t.is(r.locks[0]!.file, data);
  t.deepEqual(r.files, [{ name: data, inode: String(st.ino), dev: String(st.dev) }]);
  t.regex(r.program, /python3 -c import fcntl/);
  await p.finish();
  t.is(readRecord(dir, 9, p.pid), undefined);
});

test.serial('a blocked program shows waiting; unblocked, the lock and its wait statistics', async (t) => {
  const { s, dir } = await setup(t);
  const data = path.join(s.cli.dir, 'f');
  const holder = s.start(SHIM_INFO, [`open:${data}`, 'x:K', 'hold'], { env: { JBCPORTNO: '11' } });
  await holder.waitFor(/^holding$/);
  const waiter = s.start(SHIM_INFO, [`open:${data}`, 'declare:STOCK', 'X:K', 'hold'], { env: { JBCPORTNO: '12' } });
  const w = await recordWhen(dir, 12, waiter.pid, (x) => x.waiting !== undefined, 'the waiter shows its wait');
  t.is(w.waiting?.key, 'K');
  t.is(w.waiting?.mode, 'write');
  t.is(w.waiting?.file, 'STOCK');
  t.regex(w.waiting?.lockNo ?? '', /^0x[0-9a-f]{8}$/);
  t.deepEqual(w.locks, []);
  t.is(w.stats.waits, 1);
  await holder.finish();
  await waiter.waitFor(/^holding$/);
  const g = await recordWhen(dir, 12, waiter.pid, (x) => x.waiting === undefined && x.locks.length === 1, 'the grant shows');
  t.deepEqual(keys(g), ['K write']);
  t.is(g.stats.waits, 1);
  t.is(g.stats.locks, 1);
  t.true(g.stats.waitMs >= 0);
  await waiter.finish();
});

test.serial('kill -9 leaves the record, which the reader marks stale', async (t) => {
  const { s, dir } = await setup(t);
  const p = s.start(SHIM_INFO, [`open:${path.join(s.cli.dir, 'f')}`, 'x:K', 'hold'], { env: { JBCPORTNO: '3' } });
  await p.waitFor(/^holding$/);
  await recordWhen(dir, 3, p.pid, (x) => x.locks.length === 1, 'the record');
  // The monitor's tidy-up removes stale records: stopped first, so what the
  // shim leaves is what is looked at (the table stays in service).
  t.is((await s.cli.run(['-kA'])).code, 0);
  const gone = new Promise((r) => p.child.once('exit', r));
  process.kill(p.pid, 'SIGKILL');
  await gone;
  t.truthy(readRecord(dir, 3, p.pid));
  const rec = readInfoDir(s.cli.dir).records.find((x) => x.record.pid === p.pid);
  t.truthy(rec?.stale, 'stale');
});

test.serial('exec: the new image (same pid) removes the record of the image before it', async (t) => {
  const { s, dir } = await setup(t);
  const p = s.start(SHIM_INFO, [`open:${path.join(s.cli.dir, 'f')}`, 'x:K', 'line', 'exec'], { env: { JBCPORTNO: '8' } });
  await recordWhen(dir, 8, p.pid, (x) => x.locks.length === 1, 'the record before exec');
  p.child.stdin?.write('\n');
  await p.waitFor(/^execd$/);
  // The writer pid and its start time are the same after exec: no reader
  // could tell this record is no longer true.
  t.is(readRecord(dir, 8, p.pid), undefined);
  await p.finish();
});

test.serial('a fork child writes its own record and removes only its own at exit', async (t) => {
  const { s, dir } = await setup(t);
  const data = path.join(s.cli.dir, 'f');
  const p = s.start(SHIM_INFO, [`open:${data}`, 'declare:PARENTFILE', 'x:P', 'fork:x:C,line', 'hold'], { env: { JBCPORTNO: '21' } });
  await p.waitFor(/^ok$/);
  // The child (line 3 "ok" = its lock) waits for a line: find its record.
  await p.firstLines(3);
  let child: InfoRecord | undefined;
  await until(() => {
    child = fs.readdirSync(dir).map((n) => readRecord(dir, 21, Number(n.split('.')[5]))).find((r) => r !== undefined && r.pid !== p.pid);
    return child !== undefined && child.locks.length === 1;
  }, 10_000, "the child's record");
  t.deepEqual(keys(child!), ['C write']);
  t.not(child!.pid, p.pid);
  p.child.stdin?.write('\n');
  await p.waitFor(/^holding$/);
  t.is(readRecord(dir, 21, child!.pid), undefined, "the child's record went with it");
  const parent = await recordWhen(dir, 21, p.pid, (x) => x.locks.length === 1, "the parent's record stays");
  t.deepEqual(keys(parent), ['P write']);
  t.is(parent.files[0]?.name, 'PARENTFILE');
  await p.finish();
  t.is(readRecord(dir, 21, p.pid), undefined);
});

test.serial('JDLS_INFO=0 writes no record; without the directory none either', async (t) => {
  const { s, dir } = await setup(t);
  const data = path.join(s.cli.dir, 'f');
  const wait = String(3 * INFO_FLUSH_MS);
  const off = await s.run(SHIM_INFO, [`open:${data}`, 'x:K', `sleep:${wait}`, 'idle', `sleep:${wait}`], { env: { JBCPORTNO: '1', JDLS_INFO: '0' } });
  t.is(off.code, 0, off.stderr);
  t.deepEqual(fs.readdirSync(dir), []);
  fs.rmdirSync(dir);
  const none = await s.run(SHIM_INFO, [`open:${data}`, 'x:K', `sleep:${wait}`], { env: { JBCPORTNO: '1' } });
  t.is(none.code, 0, none.stderr);
  t.false(fs.existsSync(dir));
});

interface RawFrame {
  type: number;
  flags: number;
  id: number;
  body: Buffer;
}

/**
 * The server route without a real lock server or broker: a fake broker on
 * JDLS_BROKER hands the shim a connection to a fake server (as the broker's
 * direct mode does), whose WELCOME says INFO when `info`; the fake server
 * keeps every frame raw and grants every LOCK. Until the real server takes
 * INFO (helper A), this is how the frame's bytes are checked.
 */
async function fakeRoute(t: ExecutionContext, s: ShimEnv, info: boolean): Promise<{ frames: RawFrame[]; env: NodeJS.ProcessEnv }> {
  const frames: RawFrame[] = [];
  const conns: net.Socket[] = [];
  const server = net.createServer((c) => {
    conns.push(c);
    let buf = Buffer.alloc(0);
    c.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      while (buf.length >= 4 && buf.length >= 4 + buf.readUInt32BE(0)) {
        const len = buf.readUInt32BE(0);
        const fr = buf.subarray(0, 4 + len);
        buf = buf.subarray(4 + len);
        const f = { type: fr[5]!, flags: fr.readUInt16BE(6), id: fr.readUInt32BE(8), body: Buffer.from(fr.subarray(12)) };
        frames.push(f);
        if (f.type === FrameType.LOCK) c.write(encode({ type: 'GRANTED', requestId: f.id }));
      }
    });
    c.on('error', () => {});
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as net.AddressInfo).port;
  const dir = fs.mkdtempSync(path.join(s.cli.dir, 'fakebroker-'));
  fs.chmodSync(dir, 0o700);
  const sock = path.join(dir, 'b.sock');
  const broker = net.createServer((shim) => {
    conns.push(shim);
    shim.on('error', () => {});
    shim.once('data', () => {
      // HELLO (one small frame): connect to the server and hand it over.
      const up = net.connect(port, '127.0.0.1', () => {
        const w = encode({ type: 'WELCOME', requestId: 0, version: 1, mechanism: 'shm', serverPid: process.pid, session: 1, interimMs: 1000, keepaliveMs: 0, clientAddr: '127.0.0.1', server: 'fake' });
        if (info) w.writeUInt16BE(w.readUInt16BE(6) | FrameFlag.INFO, 6);
        handOver(shim, [up], [w]);
        up.destroy();
      });
      up.on('error', () => {});
    });
  });
  broker.listen(sock);
  await once(broker, 'listening');
  t.teardown(() => {
    for (const c of conns) c.destroy();
    server.close();
    broker.close();
  });
  return { frames, env: { JDLS: `SERVER=127.0.0.1,${port}`, JDLS_BROKER: sock, JBCPORTNO: '33' } };
}

const infoOf = (f: RawFrame): Record<string, unknown> => {
  const n = f.body.readUInt32BE(0);
  t0(f.body.length === 4 + n, 'the INFO body is u32 length + the JSON');
  return JSON.parse(f.body.subarray(4, 4 + n).toString('utf8')) as Record<string, unknown>;
};
function t0(ok: boolean, what: string): void {
  if (!ok) throw new Error(what);
}

test.serial('server route: INFO frames (start, change, idle) carry the declared names when the WELCOME says INFO', async (t) => {
  const s = new ShimEnv(t);
  const { frames, env } = await fakeRoute(t, s, true);
  const data = path.join(s.cli.dir, 'f');
  const p = s.start(SHIM_INFO, [`open:${data}`, 'declare:CUSTOMERS', 'x:K', `open:${data}2`, 'declare:ORDERS', 'x:K2', 'idle', 'hold'], { env });
  await p.waitFor(/^holding$/);
  await until(() => frames.filter((f) => f.type === FrameType.INFO).length >= 3, 10_000, 'three INFO frames');
  const st = fs.statSync(data);
  const seq = frames.map((f) => (f.type === FrameType.INFO ? `INFO ${String(infoOf(f)['moment'])}` : f.type === FrameType.LOCK ? 'LOCK' : `0x${f.type.toString(16)}`));
  t.deepEqual(seq, ['INFO start', 'LOCK', 'INFO change', 'LOCK', 'INFO idle']);
  const infos = frames.filter((f) => f.type === FrameType.INFO);
  for (const f of infos) {
    t.is(f.id, 0, 'never answered: request id 0');
    t.is(f.flags, 0);
  }
  const start = infoOf(infos[0]!);
  t.deepEqual(start['files'], [{ name: 'CUSTOMERS', inode: String(st.ino), dev: '-1' }]);
  t.true(String(start['program']).includes('jdls-shiminfo'));
  t.true(String(start['user']).length > 0);
  t.deepEqual(start['stats'], { locks: 0, waits: 0, waitMs: 0, retries: 0 });
  const change = infoOf(infos[1]!);
  // newest first (a frame keeps the most recently declared that fit)
  t.deepEqual((change['files'] as { name: string }[]).map((f) => f.name), ['ORDERS', 'CUSTOMERS']);
  t.is((change['stats'] as { locks: number }).locks, 1);
  t.is((infoOf(infos[2]!)['stats'] as { locks: number }).locks, 2);
  await p.finish();
});

test.serial('server route: no INFO frame when the WELCOME does not say INFO', async (t) => {
  const s = new ShimEnv(t);
  const { frames, env } = await fakeRoute(t, s, false);
  const p = s.start(SHIM_INFO, [`open:${path.join(s.cli.dir, 'f')}`, 'declare:CUSTOMERS', 'x:K', 'declare:ORDERS', 'x:K2', 'idle', 'hold'], { env });
  await p.waitFor(/^holding$/);
  t.deepEqual(frames.map((f) => f.type), [FrameType.LOCK, FrameType.LOCK]);
  await p.finish();
});

for (const via of ['handed-over connection', 'broker'] as const) {
  test.serial(`server route (${via}): the lock server's record of the process shows its declared file names`, async (t) => {
    const s = new ShimEnv(t);
    const jdls = await s.startServer();
    fs.mkdirSync(infoDir(s.cli.dir), { recursive: true, mode: 0o770 });
    const data = path.join(s.cli.dir, 'f');
    const env: NodeJS.ProcessEnv = { JDLS: jdls, JBCPORTNO: '44', ...(via === 'broker' ? { JDLS_BROKER_HANDOVER: '0' } : {}) };
    const p = s.start(SHIM_INFO, [`open:${data}`, 'declare:CUSTOMERS', 'x:K', 'idle', 'hold'], { env });
    await p.waitFor(/^holding$/);
    const st = fs.statSync(data);
    let rec: InfoRecord | undefined;
    await until(() => {
      rec = readInfoDir(s.cli.dir).records.map((r) => r.record).find((r) => r.pid === p.pid && r.port === 44);
      return rec !== undefined && rec.files.some((f) => f.name === 'CUSTOMERS') && rec.locks.length === 1;
    }, 15_000, "the server's record with the declared name");
    t.is(rec!.writer.kind, 'lockserver');
    t.is(rec!.ipaddr, '127.0.0.1');
    t.deepEqual(rec!.files.filter((f) => f.name === 'CUSTOMERS').map((f) => f.inode), [String(st.ino)]);
    t.is(rec!.locks[0]!.key, 'K');
    t.true(rec!.program.includes('jdls-shiminfo'), rec!.program);
    // No local record: the process locks on the server.
    t.is(readRecord(infoDir(s.cli.dir), 44, p.pid), undefined);
    await p.finish();
  });
}
