// server-service.test.ts - a lock server follows the installation's service
// state too: once `jdls -Ko` has retired the table (and every preloaded
// program has turned to OS file locks), a lock-server process that still
// maps it grants nothing more in it. Real `jdls` processes, loopback.
import test from 'ava';
import { ServerEnv } from './helpers/server-env.js';
import { expectType } from './helpers/wire-client.js';

test.serial('after jdls -Ko a lock server that still maps the retired table refuses new locks in it (ERROR), never grants', async (t) => {
  const env = new ServerEnv(t);
  await env.start(['-ib']);
  const a = await env.client({ pid: 8101, port: 81 });
  expectType(await a.lock('BEFORE'), 'GRANTED');
  const k = await env.jdls(['-Ko']);
  t.is(k.code, 0, k.stderr);
  t.regex(k.stderr, /keep(s its| their) mapping of the removed table/);
  // Before the fix: GRANTED, in a table nobody else looks at.
  const e = expectType(await a.lock('AFTER'), 'ERROR');
  t.regex(e.text, /^RETIRED: .*the lock table was taken out of service/);
  const b = await env.client({ pid: 8102, port: 82 });
  expectType(await b.lock('AFTER', 'write', { nowait: true }), 'ERROR');
});
