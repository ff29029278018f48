// operator-timeout.test.ts - a TIMEOUT below the server's interim period
// (5 s by default) must not make a healthy server look dead during an
// ordinary lock wait (issue 14): the client's JDLS options reach the server
// in HELLO, and that connection's WAITING frames come at a third of its
// TIMEOUT. For the library and for a preloaded program (the shim's direct
// connection, which never pings).
import test from 'ava';
import { interimFor } from '../src/server/session.js';
import { JdlsClient } from '../src/client/client.js';
import { ServerEnv, sleep } from './helpers/server-env.js';
import { ShimEnv, SHIM_API } from './helpers/shim-env.js';

const FILE = { inode: 4242n, dev: 7n };

test('interimFor: a third of the client\'s TIMEOUT when that is shorter than the server\'s period', (t) => {
  t.is(interimFor(5000, 'SERVER=lockhost,50002,TIMEOUT=1'), 333);
  t.is(interimFor(5000, 'TIMEOUT=0.3,SERVER=lockhost'), 100);
  t.is(interimFor(5000, 'SERVER=lockhost, timeout = 2 ,WAIT'), 666, 'as the client parses it: any case, spaces');
  t.is(interimFor(5000, 'SERVER=lockhost,TIMEOUT=60'), 5000, 'a long TIMEOUT keeps the server\'s period');
  t.is(interimFor(5000, 'SERVER=lockhost'), 5000, 'the default TIMEOUT (30 s) is well outside 5 s');
  t.is(interimFor(5000, 'TIMEOUT=abc'), 5000, 'what does not parse changes nothing');
  t.is(interimFor(5000, 'TIMEOUT=0.001'), 10, 'never below 10 ms');
  t.is(interimFor(200, 'TIMEOUT=1'), 200, 'a server period already inside it stays');
});

test('the library with TIMEOUT=1 waits 6 s for a lock another client holds, and is granted when it is released', async (t) => {
  const env = new ServerEnv(t);
  await env.start();
  const holder = await JdlsClient.connect(`SERVER=127.0.0.1,${env.port}`, { errorTrace: false, program: 'holder' });
  t.teardown(() => holder.close());
  const waiter = await JdlsClient.connect(`SERVER=127.0.0.1,${env.port},TIMEOUT=1`, { errorTrace: false, program: 'waiter' });
  t.teardown(() => waiter.close());
  t.is(waiter.server.interimMs, 333, 'WELCOME: this connection\'s interim period');
  t.is(holder.server.interimMs, 5000);
  t.true((await holder.lock(FILE, 'K1', 'write')).granted);
  let interims = 0;
  let settled = false;
  const wait = waiter.lock(FILE, 'K1', 'write', { onWaiting: () => interims++ });
  void wait.then(() => (settled = true), () => (settled = true));
  await sleep(6000);
  t.false(settled, 'still waiting (not declared dead, not refused)');
  t.is(waiter.failure, undefined, 'the connection lives');
  t.true(interims >= 6, `WAITING frames kept the server audible (${interims})`);
  t.is(await holder.unlock(FILE, 'K1'), 1);
  const r = await wait;
  t.true(r.granted);
  t.true((await waiter.lock(FILE, 'K2', 'write', { nowait: true })).granted, 'the connection goes on');
});

test.serial('a preloaded program with TIMEOUT=1 waits 6 s for a lock another holds, and is granted when it is released', async (t) => {
  const s = new ShimEnv(t);
  const JDLS = await s.startServer();
  const a = s.start(SHIM_API, ['4242', '7', 'x:K1', 'hold'], { env: { JDLS } });
  await a.waitFor(/^holding$/, 15_000);
  const b = s.start(SHIM_API, ['4242', '7', 'X:K1', 'hold'], { env: { JDLS: `${JDLS},TIMEOUT=1` } });
  t.true(await s.cli.until(async () => (await s.locks()).some((l) => l.state === 'waiting' && l.ownerPid === b.pid), 10_000), 'b waits on the server');
  await sleep(6000);
  t.true(s.cli.isAlive(b.pid), `b is alive (stderr: ${b.stderr()})`);
  t.deepEqual(b.lines, [], 'still waiting');
  t.is(await a.finish(), 0);
  await b.waitFor(/^holding$/, 10_000);
  t.deepEqual(b.lines.slice(0, 1), ['ok']);
  t.is(await b.finish(), 0);
  t.notRegex(b.stderr(), /declared dead|unable to connect/);
});
