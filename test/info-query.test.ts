// info-query.test.ts - INFO_QUERY over a real connection: a running lock
// service answers JdlsClient.queryInfo() from its host's info directory
// (filtered; answers of many chunks reassembled; a bad filter answered
// BAD_ARGUMENT with the connection kept), through SERVER2 the primary
// answers, and a server without flag INFO is never asked (NOT_SUPPORTED).
import test, { type ExecutionContext } from 'ava';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { JdlsClient } from '../src/client/client.js';
import { JdlsError } from '../src/errors.js';
import { infoDir, recordFileName, INFO_VERSION, type InfoRecord } from '../src/info/format.js';
import { native } from '../src/native.js';
import { ServerEnv, until } from './helpers/server-env.js';
import { readInfoDir } from '../src/info/reader.js';
import { FakeServer } from './helpers/fake-server.js';
import { expectType, recordFrames } from './helpers/wire-client.js';
import { rawFrame } from './helpers/proto-vectors.js';
import { FrameType } from '../src/protocol/constants.js';
import { encode, FrameReader } from '../src/protocol/codec.js';
import net from 'node:net';

/** A live record (this test process is its writer) of `port`, padded to about `pad` bytes. */
function plantRecord(releaseDir: string, port: number, opts: { file?: string; key?: string; pad?: number } = {}): string {
  const dir = infoDir(releaseDir);
  fs.mkdirSync(dir, { recursive: true });
  const now = Date.now();
  const r: InfoRecord = {
    version: INFO_VERSION, port, pid: 1000 + port, ipaddr: '0.0.0.0', host: os.hostname(), user: 'tester', program: `P${'x'.repeat(opts.pad ?? 0)}`,
    startedMs: now, updatedMs: now, writer: { kind: 'local', pid: process.pid, start: native.pidStart(process.pid) },
    files: [{ name: opts.file ?? 'CUSTOMERS', inode: '11', dev: '2049' }],
    locks: [{ file: opts.file ?? 'CUSTOMERS', inode: '11', dev: '2049', key: opts.key ?? `K${port}`, mode: 'write', kind: 'record', sinceMs: now }],
    stats: { locks: 1, waits: 0, waitMs: 0, retries: 0 },
  };
  const name = recordFileName(port, r.ipaddr, r.pid);
  fs.writeFileSync(path.join(dir, name), JSON.stringify(r));
  return name;
}

async function started(t: ExecutionContext): Promise<ServerEnv> {
  const env = new ServerEnv(t);
  await env.start();
  return env;
}

async function connect(t: ExecutionContext, jdls: string): Promise<JdlsClient> {
  const c = await JdlsClient.connect(jdls, { errorTrace: false, connectTimeoutMs: 10_000 });
  t.teardown(() => c.close());
  return c;
}

test('a lock server answers queryInfo from its info directory: all, by port, by file, by key', async (t) => {
  const env = await started(t);
  plantRecord(env.dir, 5, { file: '/data/CUSTOMERS', key: 'C1' });
  plantRecord(env.dir, 6, { file: 'ORDERS', key: 'O1' });
  const c = await connect(t, `SERVER=127.0.0.1,${env.port}`);
  t.true(c.server.info, 'WELCOME has flag INFO');
  const all = await c.queryInfo();
  t.is(all.host, os.hostname());
  t.is(all.dir, infoDir(env.dir));
  t.deepEqual(all.records.filter((r) => r.record.user === 'tester').map((r) => r.record.port), [5, 6]);
  t.true(all.records.every((r) => r.stale === undefined || r.record.user !== 'tester'));
  t.deepEqual((await c.queryInfo({ port: 6 })).records.map((r) => r.record.port), [6]);
  t.deepEqual((await c.queryInfo({ file: 'CUSTOMERS' })).records.map((r) => r.record.port), [5], 'by the last path component');
  t.deepEqual((await c.queryInfo({ key: 'O1' })).records.map((r) => r.record.port), [6]);
  t.deepEqual((await c.queryInfo({ port: 99 })).records, []);
});

test('an answer of many chunks is reassembled (the server sends as the socket drains)', async (t) => {
  const env = await started(t);
  // ~200 records of ~3 KB: about 600 KB, ten chunks or so
  for (let p = 100; p < 300; p++) plantRecord(env.dir, p, { pad: 3000 });
  const c = await connect(t, `SERVER=127.0.0.1,${env.port}`);
  const a = await c.queryInfo();
  t.is(a.records.filter((r) => r.record.user === 'tester').length, 200);
  t.true(a.records.every((r) => r.record.program.length === 3001 || r.record.user !== 'tester'));
  // and the connection serves on
  await c.ping();
  t.is((await c.queryInfo({ port: 150 })).records.length, 1);
});

test('a bad filter is answered BAD_ARGUMENT and the connection stays', async (t) => {
  const env = await started(t);
  const plain = await env.client();
  t.is(plain.welcome?.info, undefined, 'no flag INFO for a HELLO without it (an older client refuses unknown WELCOME flags)');
  const w = await env.client({ info: true });
  t.true(w.welcome?.info, 'WELCOME flag INFO');
  const seen = recordFrames(w);
  const body = Buffer.from('{"bogus":1}');
  const len = Buffer.alloc(4);
  len.writeUInt32BE(body.length);
  // request() cannot send a malformed filter: the bytes go raw; a PING after it orders the answers
  const rid = w.nextId();
  w.sendBytes(rawFrame({ type: FrameType.INFO_QUERY, requestId: rid, body: Buffer.concat([len, body]) }));
  await w.ping();
  const refused = seen.find((f) => f.requestId === rid);
  t.like(refused, { type: 'ERROR', code: 'BAD_ARGUMENT' });
  t.regex(refused?.type === 'ERROR' ? refused.text : '', /filter field "bogus" is unknown/);
  const good = expectType(await w.request({ type: 'INFO_QUERY', filter: { port: 1 } }), 'INFO_RESULT');
  t.false(good.more);
  const parsed = JSON.parse(Buffer.from(good.chunk).toString('utf8')) as { host: string; records: unknown[] };
  t.is(parsed.host, os.hostname());
  t.deepEqual(parsed.records, []);
  t.is(w.connectionError, undefined);
  // through the library: the library sends what it is given, the server refuses it
  const c = await connect(t, `SERVER=127.0.0.1,${env.port}`);
  const e = await t.throwsAsync(c.queryInfo({ port: -1 }), { instanceOf: JdlsError });
  t.is(e?.code, 'BAD_ARGUMENT', e?.message);
  await c.ping();
});

test('SERVER2: the primary answers queryInfo', async (t) => {
  const a = await started(t);
  const b = await started(t);
  plantRecord(a.dir, 7);
  plantRecord(b.dir, 8);
  const c = await JdlsClient.connect(`SERVER=127.0.0.1,${a.port},SERVER2=127.0.0.1,${b.port}`, { errorTrace: false, connectTimeoutMs: 10_000, port: 77 });
  t.teardown(() => c.close());
  t.true(c.resilient);
  const got = await c.queryInfo();
  t.is(got.dir, infoDir(a.dir));
  t.deepEqual(got.records.filter((r) => r.record.user === 'tester').map((r) => r.record.port), [7]);
  // INFO goes to both servers: each writes its own record of this client (with the user INFO carries)
  c.declareFile('/data/X', { inode: 5n });
  for (const env of [a, b]) {
    await until(() => readInfoDir(env.dir, { filter: { port: 77 } }).records.some((r) => r.record.user === os.userInfo().username && r.record.files[0]?.name === '/data/X'), 5000, `record at ${env.dir}`);
  }
  t.pass();
});

test('a server without flag INFO: queryInfo rejects NOT_SUPPORTED and sends nothing', async (t) => {
  const server = await FakeServer.start();
  t.teardown(() => server.close());
  const c = await connect(t, server.jdls);
  t.false(c.server.info);
  const e = await t.throwsAsync(c.queryInfo(), { instanceOf: JdlsError });
  t.is(e?.code, 'NOT_SUPPORTED');
  t.regex(e?.message ?? '', /predates info records/);
  await c.ping();
  t.is(server.received('INFO_QUERY').length, 0);
  t.is(server.conns.length, 1, 'the connection was kept');
});

test('a server older than INFO (it refuses the unknown HELLO flag and closes) is asked again without it: tokens kept, no INFO, queryInfo NOT_SUPPORTED', async (t) => {
  // What a server of the TOKENS era does, byte for byte: HELLO flags other than AUTH and TOKENS are a protocol error.
  const hellos: number[] = [];
  const socks = new Set<net.Socket>();
  const server = net.createServer((sock) => {
    socks.add(sock);
    const reader = FrameReader.forServer();
    sock.on('data', (d: Buffer) => {
      for (const f of reader.push(d)) {
        if (f.type !== 'HELLO') { sock.write(encode({ type: 'PONG', requestId: f.requestId })); continue; }
        const flags = (f.auth ? 0x0001 : 0) | (f.tokens ? 0x0002 : 0) | (f.info ? 0x0004 : 0);
        hellos.push(flags);
        if (flags & ~0x0003) {
          sock.end(encode({ type: 'ERROR', requestId: 0, code: 'PROTOCOL', text: `HELLO: unknown flags 0x${flags.toString(16)}` }));
          return;
        }
        sock.write(encode({ type: 'WELCOME', requestId: 0, version: 1, mechanism: 'shm', serverPid: 1, session: 1, interimMs: 5000, keepaliveMs: 0, clientAddr: '127.0.0.1', server: 'old', tokens: true }));
      }
    });
    sock.on('error', () => {});
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(async () => {
    for (const x of socks) x.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });
  const c = await connect(t, `SERVER=127.0.0.1,${(server.address() as net.AddressInfo).port}`);
  t.deepEqual(hellos, [0x0006, 0x0002]);
  t.true(c.server.tokens);
  t.false(c.server.info);
  const e = await t.throwsAsync(c.queryInfo(), { instanceOf: JdlsError });
  t.is(e?.code, 'NOT_SUPPORTED');
  await c.ping();
});
