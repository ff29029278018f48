// netns-keepalive.test.ts - the lock service across two "hosts" (network
// namespaces joined by a veth link, test/helpers/netns.ts): the lock server
// runs in the server namespace, bound to its veth address; remote clients
// (the real JdlsClient, test/fixtures/jdls-client-locker.ts) run in the
// client namespace. The shm table is host-wide (namespaces only change
// networking), so local direct processes in the root namespace contend on
// the same keys.
//   - the link is cut while a client holds a lock: the server hears nothing,
//     frees its locks within the keep-alive bound, another client gets it;
//   - a client on the other host and a local direct process keep a shared
//     counter exact.
// Skipped, with the reason, when not root or `ip netns add` fails.
import test, { type ExecutionContext } from 'ava';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import { until } from './helpers/server-env.js';
import { lockerPath, waitingOn, withTimeout } from './helpers/table-env.js';
import { netnsUnavailable } from './helpers/netns.js';
import { hosts } from './helpers/netns-service.js';

const why = netnsUnavailable();
if (why) console.warn(`netns-keepalive.test: SKIPPED: ${why}`);
const nsTest = why ? test.serial.skip : test.serial;

nsTest('a client on another host whose link is cut: the server frees its locks within the keep-alive bound and another client gets the lock', async (t) => {
  const keepaliveMs = 1500;
  const h = await hosts(t, { keepaliveMs });
  const { pair, env } = h;
  // The addresses exist only inside the namespaces.
  const rootAddrs = execFileSync('ip', ['-o', 'addr', 'show'], { encoding: 'utf8', timeout: 10_000 });
  t.false(rootAddrs.includes(` ${pair.serverAddr}/`) || rootAddrs.includes(` ${pair.clientAddr}/`), 'nothing added to the root namespace');
  t.regex(pair.exec(pair.client, 'ip', ['-o', 'addr', 'show', 'dev', pair.clientIf]), new RegExp(` ${pair.clientAddr.replace(/\./g, '\\.')}/30 `));
  // Ping every 500 ms (announced in HELLO): the server's silence bound is max(keepaliveMs, 2 x 500) = 1500 ms.
  const holder = h.remote(pair.client, ['--ping', '500', 'hold', 'NETKEY', 'write']);
  await holder.expect('GRANTED', 20_000);
  const d = await env.jdls(['-dvL']);
  const row = d.stdout.split('\n').find((l) => / NETKEY$/.test(l)) ?? '';
  t.regex(row, new RegExp(` ${pair.clientAddr.replace(/\./g, '\\.')} +NETKEY$`), `-dvL names the client's address: ${row}`);
  // Competitors: a remote client on the server host, and a local direct process.
  const remoteWaiter = h.remote(pair.server, ['wait', 'NETKEY', 'write']);
  await remoteWaiter.expect('CONNECTED', 20_000);
  await until(() => waitingOn(env.table, 'NETKEY') === 1, 10_000, 'the remote waiter queued');
  const localWaiter = h.local(['wait', 'NETKEY', 'write', '30000', '0']);
  await localWaiter.expect('QUEUED');
  const t0 = process.hrtime.bigint();
  pair.cut();
  const [ns] = await remoteWaiter.expect('GRANTED', 15_000);
  const ms = Number(BigInt(ns ?? '0') - t0) / 1e6;
  t.log(`link cut -> the holder's locks freed, next client granted after ${ms.toFixed(0)} ms (keepaliveMs ${keepaliveMs}, client ping 500 ms)`);
  // At most the bound after the last data heard (which is before the cut),
  // plus scheduling: generous upper bound for a loaded 2-core machine.
  t.true(ms <= keepaliveMs + 3000, `granted ${ms} ms after the cut`);
  t.true(holder.running, 'the holder did not die: its server went silent');
  remoteWaiter.release();
  await remoteWaiter.expect('RELEASED');
  t.truthy(await localWaiter.expect('GRANTED', 5000));
  await localWaiter.success();
  await until(() => /keep-alive: no complete frame from the client/.test(env.logs()), 5000, 'the keep-alive reason in the log');
  t.regex(env.logs(), /keep-alive: no complete frame from the client for \d+ ms \(limit 1500 ms\)/);
  t.is(env.table.check(), 0);
  t.is(env.table.usage().held, 0);
});

nsTest('a client on another host and a local direct process on the server host keep a shared counter exact', async (t) => {
  const h = await hosts(t);
  const counter = h.env.file('counter');
  fs.writeFileSync(counter, '0');
  const N = 100;
  const procs = [
    h.remote(h.pair.client, ['counter', counter, 'NETCNT', String(N)]),
    h.remote(h.pair.client, ['counter', counter, 'NETCNT', String(N)]),
    h.local(['counter', counter, 'NETCNT', String(N)]),
  ];
  for (const p of procs) t.deepEqual(await p.expect('DONE', 60_000), [String(N)], p.stderr);
  await Promise.all(procs.map((p) => p.success()));
  t.is(fs.readFileSync(counter, 'utf8'), String(N * procs.length));
  t.is(h.env.table.check(), 0);
});
