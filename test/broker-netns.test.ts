// broker-netns.test.ts - one installation directory seen from two network
// namespaces (containers, or hosts simulated with `ip netns` over one
// JBCRELEASEDIR): a Unix socket's path is visible from both, but a broker
// makes its TCP connections from the namespace it started in. Each
// namespace's preloaded programs must use a broker of their own namespace:
// one broker for both would lock a program at the address as the other
// namespace sees it - no route there (the chaos suite's python3 clients of
// one host all failed so), or another lock server at the same address (one
// lock granted twice).
// Skipped, with the reason, when not root or namespaces cannot be made.
import test from 'ava';
import { netnsUnavailable } from './helpers/netns.js';
import { hosts } from './helpers/netns-service.js';
import { ShimEnv, SHIM, SHIM_API } from './helpers/shim-env.js';

const why = netnsUnavailable();
if (why) console.warn(`broker-netns.test: SKIPPED: ${why}`);
const nsTest = why ? test.serial.skip : test.serial;

nsTest('a broker started in one network namespace does not serve a program of another that shares the installation directory: the program locks through a broker of its own namespace', async (t) => {
  const h = await hosts(t);
  const s = new ShimEnv(t);
  const env = { JDLS: h.jdls, JDLS_BROKER_IDLE_MS: '120000' };
  // A program in the root namespace first: the lock server's address is not
  // there (no route, or whatever the machine's default route answers), so it fails - and leaves its broker running, listening in
  // the shared installation directory.
  const root = await s.run(SHIM_API, ['4242', '7', 'x:NETNS'], { env });
  t.is(root.code, 1, root.stderr);
  t.regex(root.stderr, /connection failed for host/);
  t.truthy(s.brokerPid(), 'the root namespace\'s broker stays, listening');
  // A program on the client host, same JBCRELEASEDIR and user: it reaches
  // the server through a broker of its own namespace.
  const p = h.pair.spawn(h.pair.client, 'jdls-shimapi', SHIM_API, ['4242', '7', 'x:NETNS', 'hold'], { ...s.env, ...env, LD_PRELOAD: SHIM });
  t.deepEqual([await p.line(20_000), await p.line(20_000)], ['ok', 'holding'], p.stderr);
  const d = await h.env.jdls(['-dvL']);
  const row = d.stdout.split('\n').find((l) => /NETNS/.test(l)) ?? '';
  t.true(row.includes(h.pair.clientAddr), `the lock server holds the lock for the client host's address: ${d.stdout}`);
  p.child.stdin?.end(); // 'hold' holds until its stdin closes
  await p.success();
});
