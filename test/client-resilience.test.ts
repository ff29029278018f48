// client-resilience.test.ts - SERVER2 (src/client/resilient.ts) against two
// fake servers: duplication only after the primary's acknowledgement,
// mismatches logged, failover of either server, re-sending what the failed
// primary had not answered, the last failure killing the client.
import test, { type ExecutionContext } from 'ava';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { JdlsClient } from '../src/client/client.js';
import { JdlsError } from '../src/errors.js';
import { FakeServer } from './helpers/fake-server.js';
import { testDir } from './helpers/installations.js';
import { untoken } from './helpers/grants.js';

const FILE = { inode: 42n };
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

interface Env {
  p: FakeServer;
  s: FakeServer;
  errorTrace: string;
  client: JdlsClient;
}

async function setup(t: ExecutionContext, extra = ''): Promise<Env> {
  const dir = testDir('res');
  const p = await FakeServer.start({ welcome: { serverPid: 1 } });
  const s = await FakeServer.start({ welcome: { serverPid: 2 } });
  const errorTrace = path.join(dir, 'jbase_error_trace');
  let client: JdlsClient | undefined;
  t.teardown(async () => {
    await client?.close();
    await p.close();
    await s.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  client = await JdlsClient.connect(`SERVER=127.0.0.1,${p.port},SERVER2=127.0.0.1,${s.port}${extra}`, { errorTrace });
  return { p, s, errorTrace, client };
}

test('requests go to the secondary only after the primary acknowledged them', async (t) => {
  const { p, s, client } = await setup(t);
  t.true(client.resilient);
  t.is(client.server.pid, 1);
  let release: (() => void) | undefined;
  p.script = (f, conn) => {
    if (f.type !== 'LOCK' || f.key.toString() !== 'SLOW') return false;
    release = () => conn.send({ type: 'GRANTED', requestId: f.requestId });
    return true;
  };
  const slow = client.lock(FILE, 'SLOW', 'write');
  await p.until(() => release !== undefined);
  await sleep(100);
  t.is(s.received('LOCK').length, 0, 'nothing at the secondary before the primary answered');
  release?.();
  t.deepEqual(untoken(await slow), { granted: true });
  t.is(s.received('LOCK').length, 1, 'the secondary has it once the call resolved');
  t.like(s.received('LOCK')[0], { mode: 'write', nowait: false });
  // (the script granted SLOW without the toy model: the primary does not hold it)
  t.is(await client.unlock(FILE, 'SLOW'), 0);
  t.is(s.received('UNLOCK').length, 1, 'RELEASED 0 is an acknowledgement too');
  await client.lock(FILE, 'B', 'read');
  t.is(await client.unlock(FILE, 'B'), 1);
  t.is(s.received('UNLOCK').length, 2);
  t.is(s.locks.size, 0);
  // not duplicated: NOWAIT conflicts, STATUS, TEST, PING
  const other = await JdlsClient.connect(`SERVER=127.0.0.1,${p.port}`, { errorTrace: false });
  t.teardown(() => other.close());
  await other.lock(FILE, 'HELD', 'write');
  t.false((await client.lock(FILE, 'HELD', 'write', { nowait: true })).granted);
  await client.status(FILE, 'HELD');
  await client.test('t');
  await client.ping();
  t.is(s.received('LOCK').length, 2);
  t.is(s.received('STATUS').length + s.received('TEST').length, 0);
});

test('a different secondary answer is logged and emitted; the primary\'s answer stands', async (t) => {
  const { s, client, errorTrace } = await setup(t);
  const mism: unknown[] = [];
  client.on('mismatch', (m) => mism.push(m));
  s.script = (f, conn) => {
    if (f.type === 'LOCK') {
      conn.send({ type: 'ERROR', requestId: f.requestId, code: 'TABLE_FULL', text: 'full' });
      return true;
    }
    if (f.type === 'UNLOCK') {
      conn.send({ type: 'RELEASED', requestId: f.requestId, count: 0 });
      return true;
    }
    return false;
  };
  t.deepEqual(untoken(await client.lock(FILE, 'K', 'write')), { granted: true });
  t.is(await client.unlock(FILE, 'K'), 1);
  t.deepEqual(mism, [
    { request: 'LOCK write inode 42 key "K"', primary: 'GRANTED', secondary: 'error TABLE_FULL' },
    { request: 'UNLOCK inode 42 key "K"', primary: 'RELEASED 1', secondary: 'RELEASED 0' },
  ]);
  t.regex(fs.readFileSync(errorTrace, 'utf8'), /primary and secondary lock servers answered differently/);
  t.true(client.resilient, 'a mismatch is not a failure');
});

test('primary fails: logged, secondary promoted, duplication stops, the failed server is never contacted again', async (t) => {
  const { p, s, client, errorTrace } = await setup(t);
  const fo: { failed: { port: number }; now: { port: number }; error: JdlsError }[] = [];
  client.on('failover', (f) => fo.push(f));
  await client.lock(FILE, 'A', 'write');
  p.closeAll();
  await s.until(() => fo.length === 1, 3000, 'failover');
  t.is(fo[0]?.failed.port, p.port);
  t.is(fo[0]?.now.port, s.port);
  t.is(fo[0]?.error.code, 'SERVER_CLOSED');
  t.false(client.resilient);
  t.is(client.server.pid, 2);
  // the secondary still has A (mirrored); new requests go there alone
  t.deepEqual(untoken(await client.lock(FILE, 'B', 'write')), { granted: true });
  t.is(await client.unlock(FILE, 'A'), 1);
  t.is(s.received('LOCK').length, 2);
  t.is(p.conns.length, 1, 'no reconnection to the failed primary');
  t.regex(fs.readFileSync(errorTrace, 'utf8'), /primary lock server failed.*promoted to primary, no longer resilient/);
  // the last server fails: the client is dead
  const dead: JdlsError[] = [];
  client.on('dead', (e) => dead.push(e));
  s.closeAll();
  await s.until(() => dead.length === 1, 3000, 'dead');
  await t.throwsAsync(client.lock(FILE, 'C', 'write'), { instanceOf: JdlsError, message: /closed the connection/ });
  t.is(p.conns.length, 1);
  t.regex(fs.readFileSync(errorTrace, 'utf8'), /last lock server failed/);
});

test('primary fails with a request unanswered: it is sent again to the promoted secondary', async (t) => {
  const { p, s, client } = await setup(t);
  p.script = (f) => f.type === 'LOCK'; // the primary never answers a LOCK
  const pending = client.lock(FILE, 'W', 'write');
  await p.until(() => p.received('LOCK').length === 1);
  t.is(s.received('LOCK').length, 0);
  p.closeAll();
  t.deepEqual(untoken(await pending), { granted: true });
  t.is(s.received('LOCK').length, 1);
  t.false(client.resilient);
});

test('secondary fails: the client carries on with the primary, no longer resilient', async (t) => {
  const { p, s, client, errorTrace } = await setup(t);
  s.script = (f) => f.type === 'LOCK'; // the secondary hangs on LOCK...
  const pending = client.lock(FILE, 'X', 'write');
  await s.until(() => s.received('LOCK').length === 1);
  s.closeAll(); // ...then goes away
  t.deepEqual(untoken(await pending), { granted: true }, "the primary's answer stands");
  t.false(client.resilient);
  t.is(client.server.pid, 1);
  await client.lock(FILE, 'Y', 'write');
  t.is(p.received('LOCK').length, 2);
  t.is(s.conns.length, 1);
  t.regex(fs.readFileSync(errorTrace, 'utf8'), /secondary lock server failed/);
});

test('at connect: an unreachable secondary is logged and the client starts without resilience; an unreachable primary fails', async (t) => {
  const dir = testDir('res');
  const p = await FakeServer.start();
  t.teardown(async () => {
    await p.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  const holder = net.createServer();
  await new Promise<void>((r) => holder.listen(0, '127.0.0.1', () => r()));
  const closed = (holder.address() as net.AddressInfo).port;
  await new Promise<void>((r) => holder.close(() => r()));
  const errorTrace = path.join(dir, 'jbase_error_trace');
  const c = await JdlsClient.connect(`SERVER=127.0.0.1,${p.port},SERVER2=127.0.0.1,${closed}`, { errorTrace });
  t.false(c.resilient);
  t.deepEqual(untoken(await c.lock(FILE, 'K', 'write')), { granted: true });
  await c.close();
  t.regex(fs.readFileSync(errorTrace, 'utf8'), /secondary lock server unavailable at start/);
  const e = await t.throwsAsync(JdlsClient.connect(`SERVER=127.0.0.1,${closed},SERVER2=127.0.0.1,${p.port}`, { errorTrace }), { instanceOf: JdlsError });
  t.is(e?.code, 'CONNECT_FAILED');
  await p.until(() => p.conns.every((x) => x.socket.destroyed || x.socket.readableEnded), 3000, 'the secondary connection to close');
});

test('WAIT and a waiting lock: the secondary gets the same flags after the grant', async (t) => {
  const { p, s, client } = await setup(t, ',WAIT');
  const other = await JdlsClient.connect(`SERVER=127.0.0.1,${p.port}`, { errorTrace: false });
  t.teardown(() => other.close());
  await other.lock(FILE, 'K', 'write');
  const w = client.lock(FILE, 'K', 'write');
  await p.until(() => p.received('LOCK').length === 2);
  await other.unlock(FILE, 'K');
  t.deepEqual(untoken(await w), { granted: true });
  t.like(s.received('LOCK')[0], { noInterim: true, nowait: false });
});
