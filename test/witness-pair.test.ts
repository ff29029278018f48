// witness-pair.test.ts - a SERVER2 pair of two real services (two
// installations, `jdls -ib` each on loopback) with a real etcd as their
// witness (jdls.yaml witness:), and the real client library: one leader;
// a follower grants only MIRROR locks; the leader killed -9 -> the client
// fails over by PROMOTE and a lock-guarded counter stays exact, tokens after
// outranking tokens before; etcd silent -> the leader stops granting within
// its lease and closes its connections with NOT_LEADER; PROMOTE refused
// while the leader lives -> a client that lost only its primary connection
// is dead (SPLIT_REFUSED) and locks nothing on the follower.
import test, { type ExecutionContext } from 'ava';
import net from 'node:net';
import { Etcd } from './helpers/etcd.js';
import { ServerEnv, processesOf, until } from './helpers/server-env.js';
import { withTimeout } from './helpers/table-env.js';
import { JdlsClient } from '../src/client/client.js';
import { JdlsError } from '../src/errors.js';
import { readWitnessRecord } from '../src/server/witness-state.js';
import { tokenEpoch } from '../src/locks/table.js';
import { EtcdClient } from '../src/server/etcd.js';

const LEASE = 2000;
const FILE = { inode: 4242n, dev: 7n };
let pairs = 0;

interface Pair {
  etcd: Etcd;
  leader: ServerEnv;
  follower: ServerEnv;
}

function killAll(dir: string): void {
  for (const pid of processesOf(dir)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
}

const role = (env: ServerEnv): string | undefined => readWitnessRecord(env.dir)?.role;

/** Two installations configured as a pair with etcd as the witness (not started). */
function pairEnvs(t: ExecutionContext, etcd: Etcd): { a: ServerEnv; b: ServerEnv; prefix: string } {
  const prefix = `/jdls/test-${process.pid}-${++pairs}`;
  const witness = (name: string): Record<string, unknown> => ({ witness: { endpoints: [etcd.url], prefix, leaseMs: LEASE, name } });
  const a = new ServerEnv(t);
  a.writeConfig(witness('a'));
  const b = new ServerEnv(t);
  b.writeConfig(witness('b'));
  if (process.env['WITNESS_DEBUG']) a.env['JDLS_LOG_LEVEL'] = b.env['JDLS_LOG_LEVEL'] = 'debug';
  return { a, b, prefix };
}

/** etcd, then server a (which becomes the leader), then server b (the follower). */
async function startPair(t: ExecutionContext): Promise<Pair> {
  const etcd = await Etcd.start(t);
  const { a: leader, b: follower } = pairEnvs(t, etcd);
  await leader.start();
  await until(() => role(leader) === 'leader', 15_000, 'server a to lead');
  await follower.start();
  await until(() => readWitnessRecord(follower.dir)?.leader === 'a', 15_000, 'server b to see a as the leader');
  return { etcd, leader, follower };
}

test.serial('one leader; a follower grants only MIRROR locks; PROMOTE refused while the leader lives; -dvL shows the witness', async (t) => {
  const { etcd, leader, follower } = await startPair(t);
  t.is(role(follower), 'follower');
  const term = Number(await etcd.get(readWitnessRecord(leader.dir)?.prefix + '/term'));
  t.true(term > 0);
  const onLeader = await leader.client({ pair: true, tokens: true });
  const onFollower = await follower.client({ pair: true, tokens: true });
  t.deepEqual(onLeader.welcome.witness, { role: 'leader', term });
  t.is(onFollower.welcome.witness?.role, 'follower');
  t.is(onFollower.welcome.witness?.term, term);
  // A client without PAIR gets no WITNESS (it would not know the flag).
  const plain = await follower.client({});
  t.is(plain.welcome.witness, undefined);
  // Follower: LOCK and RANGE_LOCK without MIRROR refused; MIRROR granted; unlocks and status served.
  t.like(await onFollower.lock('K1'), { type: 'ERROR', code: 'NOT_LEADER' });
  t.like(await plain.lock('K1'), { type: 'ERROR', code: 'NOT_LEADER' });
  t.like(await onFollower.request({ type: 'RANGE_LOCK', nowait: true, space: 'range', mode: 'write', tid: 1, file: FILE, start: 0n, length: 10n }), { type: 'ERROR', code: 'NOT_LEADER' });
  t.like(await onFollower.lock('K1', 'write', { mirror: true }), { type: 'GRANTED' });
  t.like(await onFollower.unlock('K1'), { type: 'RELEASED', count: 1 });
  // Leader grants.
  const g = await onLeader.lock('K1');
  t.is(g.type, 'GRANTED');
  if (g.type === 'GRANTED') t.true(tokenEpoch(g.token ?? 0n) >= BigInt(term), 'the leader\'s tokens are of an epoch >= its term');
  // PROMOTE: the leader answers with its term; the follower is refused (a's lease is renewed).
  t.like(await onLeader.request({ type: 'PROMOTE', waitMs: 100 }), { type: 'PROMOTED', term });
  t.like(await onFollower.request({ type: 'PROMOTE', waitMs: 500 }), { type: 'ERROR', code: 'NOT_LEADER' });
  const shown = await leader.jdls(['-dvL']);
  t.regex(shown.stdout, /Witness role:\s+LEADER \(a\) term \d+, lease left/);
  const shownF = await follower.jdls(['-dvL', '--json']);
  t.like(JSON.parse(shownF.stdout).listener.witness, { role: 'follower', leader: 'a', name: 'b' });
});

test.serial('the leader killed -9: a SERVER2 client fails over by PROMOTE; a lock-guarded counter stays exact; tokens rise', async (t) => {
  const { leader, follower } = await startPair(t);
  const jdls = `SERVER=127.0.0.1,${leader.port},SERVER2=127.0.0.1,${follower.port}`;
  const clients: JdlsClient[] = [];
  t.teardown(() => Promise.all(clients.map((c) => c.close().catch(() => undefined))));
  // TIMEOUT above the lease: the follower can only lead after a's lease lapsed.
  for (let i = 0; i < 3; i++) clients.push(await JdlsClient.connect(jdls, { timeoutMs: LEASE * 4, errorTrace: false }));
  for (const c of clients) t.is(c.server.port, leader.port);
  let counter = 0;
  let done = 0;
  let failovers = 0;
  let killed = false;
  let maxBefore = 0n;
  const after: bigint[] = [];
  const failedOver = new Set<JdlsClient>();
  for (const c of clients) c.on('failover', () => {
    failovers++;
    failedOver.add(c);
  });
  const worker = async (c: JdlsClient, n: number): Promise<void> => {
    for (let i = 0; i < n; i++) {
      // Which server granted: the old leader when granted before the kill,
      // the new one when asked after this client's failover (a call in
      // flight across the kill may be granted by either: not counted).
      const startedAfterFailover = failedOver.has(c);
      const g = await c.lock(FILE, 'COUNTER', 'write');
      if (!g.granted || g.token === undefined) throw new Error('no token');
      if (!killed) maxBefore = g.token > maxBefore ? g.token : maxBefore;
      else if (startedAfterFailover) after.push(g.token);
      const v = counter;
      await new Promise((r) => setTimeout(r, 1)); // a race the lock must prevent
      counter = v + 1;
      done++;
      await c.unlock(FILE, 'COUNTER');
    }
  };
  const N = 60;
  const run = Promise.all(clients.map((c) => worker(c, N)));
  await until(() => done >= 20, 20_000, 'some increments before the kill');
  killed = true;
  killAll(leader.dir);
  await run;
  t.is(counter, 3 * N, 'every increment under the lock, none lost or doubled');
  t.is(failovers, 3);
  for (const c of clients) {
    t.is(c.server.port, follower.port);
    t.is(c.failure, undefined);
  }
  t.is(role(follower), 'leader');
  t.true(after.length > 0);
  t.true(after.every((tok) => tok > maxBefore), `every token after the failover outranks ${maxBefore}`);
});

test.serial('etcd silent: the leader stops granting within its lease and closes every connection with NOT_LEADER', async (t) => {
  const { etcd, leader } = await startPair(t);
  if (process.env['WITNESS_DEBUG']) console.log('etcd pid', etcd.pid, etcd.url);
  const c = await leader.client({ pair: true });
  const holder = await leader.client({ pair: true });
  t.like(await holder.lock('W'), { type: 'GRANTED' });
  const waiting = c.lock('W').catch((e: unknown) => e); // waits: its end comes with the lapse
  await until(() => leader.table.usage().waiting > 0, 5000, 'the second LOCK to wait');
  etcd.pause();
  const paused = Date.now();
  await withTimeout(c.closed, 10_000, `the waiting client's connection to close\n${leader.logs()}`);
  // How soon is not asserted (a loaded host delays timers): that the wait
  // was never granted, and every connection closed, is the guarantee.
  t.log(`connections closed ${Date.now() - paused} ms after etcd stopped (lease ${LEASE} ms)`);
  t.like(c.connectionError, { code: 'NOT_LEADER' });
  t.like(await waiting, { type: 'ERROR', code: 'NOT_LEADER' }, 'the wait ended with NOT_LEADER, not granted');
  await withTimeout(holder.closed, 5000, `the holder's connection to close\n${leader.logs()}`);
  t.like(holder.connectionError, { code: 'NOT_LEADER' });
  // A new connection is not granted anything while etcd is silent.
  const late = await leader.client({ pair: true });
  t.is(late.welcome.witness?.role, 'follower');
  t.like(await late.lock('W'), { type: 'ERROR', code: 'NOT_LEADER' });
  etcd.resume();
});

/** A TCP proxy to `port` whose connections the test can cut. */
async function proxy(t: ExecutionContext, port: number): Promise<{ port: number; cut: () => void }> {
  const socks = new Set<net.Socket>();
  const server = net.createServer((inbound) => {
    const out = net.connect({ port, host: '127.0.0.1' });
    socks.add(inbound).add(out);
    inbound.pipe(out).pipe(inbound);
    const end = (): void => {
      inbound.destroy();
      out.destroy();
    };
    inbound.on('error', end).on('close', end);
    out.on('error', end).on('close', end);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const cut = (): void => {
    for (const s of socks) s.destroy();
    socks.clear();
  };
  t.teardown(() => {
    cut();
    server.close();
  });
  const a = server.address();
  return { port: typeof a === 'object' && a ? a.port : 0, cut };
}

test.serial('PROMOTE refused while the leader lives: a client that lost only its primary connection is dead and locks nothing on the follower', async (t) => {
  const { leader, follower } = await startPair(t);
  const px = await proxy(t, leader.port);
  const TIMEOUT = 1500;
  const c = await JdlsClient.connect(`SERVER=127.0.0.1,${px.port},SERVER2=127.0.0.1,${follower.port}`, { timeoutMs: TIMEOUT, errorTrace: false });
  t.teardown(() => c.close().catch(() => undefined));
  t.is(c.server.port, px.port);
  t.true((await c.lock(FILE, 'HELD', 'write')).granted);
  const dead = new Promise<JdlsError>((r) => c.once('dead', r));
  px.cut(); // the leader lives; only this client's way to it is gone
  const pending = c.lock(FILE, 'NEXT', 'write');
  const e = await dead;
  t.is(e.code, 'SPLIT_REFUSED');
  t.regex(e.message, new RegExp(`the primary lock server 127\\.0\\.0\\.1:${px.port} is unreachable and the witness did not make 127\\.0\\.0\\.1:${follower.port} the primary within ${TIMEOUT} ms \\(TIMEOUT\\): exiting rather than risk two holders of one lock`));
  await t.throwsAsync(pending, { instanceOf: JdlsError, code: 'SPLIT_REFUSED' });
  await t.throwsAsync(c.lock(FILE, 'AFTER', 'write'), { code: 'SPLIT_REFUSED' });
  // Nothing of this client is held on the follower: its connection was closed, NEXT never sent there.
  const probe = await follower.client({ pair: true });
  await until(async () => {
    const s = await probe.status('HELD');
    return s.type === 'STATUS_RESULT' && s.code === 0;
  }, 5000, 'HELD released on the follower');
  const s = await probe.status('NEXT');
  t.like(s, { type: 'STATUS_RESULT', code: 0 });
  t.is(role(leader), 'leader', 'the leader kept its leadership throughout');
});

test.serial('the leader\'s listener killed -9: its lock servers stop at their deadline by themselves (NOT_LEADER), and the follower leads', async (t) => {
  const { leader, follower } = await startPair(t);
  const c = await leader.client({ pair: true });
  t.like(await c.lock('L'), { type: 'GRANTED' });
  const listener = leader.listenerPid();
  if (!listener) return t.fail('no listener pid');
  process.kill(listener, 'SIGKILL');
  const killedAt = Date.now();
  await c.closed;
  t.true(Date.now() - killedAt <= LEASE, `closed ${Date.now() - killedAt} ms after the listener died (lease ${LEASE} ms)`);
  t.like(c.connectionError, { code: 'NOT_LEADER' });
  await until(() => role(follower) === 'leader', 15_000, 'the follower to lead');
  const d = await follower.client({ pair: true });
  t.like(await d.lock('L'), { type: 'GRANTED' });
});

test.serial('connect: neither server leads (the key held elsewhere) -> PROMOTE SERVER refused, connect rejects NOT_LEADER; SERVER unreachable but SERVER2 leads -> starts on SERVER2', async (t) => {
  const etcd = await Etcd.start(t);
  const { a, b, prefix } = pairEnvs(t, etcd);
  // A ghost holds the leadership key under a lease of its own.
  const ec = new EtcdClient([etcd.url]);
  const ghost = await ec.grant(30, 3000);
  const put = await ec.txn([{ key: `${prefix}/leader`, target: 'CREATE', createRevision: 0n }], [{ put: { key: `${prefix}/leader`, value: 'ghost', lease: ghost.id } }], [], 3000);
  t.true(put.succeeded);
  await a.start();
  await b.start();
  await until(() => readWitnessRecord(a.dir)?.leader === 'ghost' && readWitnessRecord(b.dir)?.leader === 'ghost', 15_000, 'both to follow the ghost');
  const jdls = `SERVER=127.0.0.1,${a.port},SERVER2=127.0.0.1,${b.port}`;
  const e = await t.throwsAsync(JdlsClient.connect(jdls, { timeoutMs: 800, errorTrace: false }), { instanceOf: JdlsError });
  t.is(e?.code, 'NOT_LEADER');
  t.regex(e?.message ?? '', /neither lock server of the pair is the leader .* did not make 127\.0\.0\.1:\d+ the leader within 800 ms: not connecting/);
  // The ghost goes: one of them leads; a client whose SERVER is unreachable starts on a leading SERVER2.
  await ec.revoke(ghost.id, 3000);
  await until(() => role(a) === 'leader' || role(b) === 'leader', 15_000, 'a or b to lead');
  const lead = role(a) === 'leader' ? a : b;
  const c = await JdlsClient.connect(`SERVER=127.0.0.1,1,SERVER2=127.0.0.1,${lead.port}`, { timeoutMs: 3000, errorTrace: false });
  t.teardown(() => c.close().catch(() => undefined));
  t.is(c.server.port, lead.port);
  t.false(c.resilient);
  t.true((await c.lock(FILE, 'X', 'write')).granted);
  // And with both up, the leader is the primary whatever the JDLS order.
  const other = lead === a ? b : a;
  const d = await JdlsClient.connect(`SERVER=127.0.0.1,${other.port},SERVER2=127.0.0.1,${lead.port}`, { timeoutMs: 3000, errorTrace: false });
  t.teardown(() => d.close().catch(() => undefined));
  t.is(d.server.port, lead.port);
  t.true(d.resilient);
  t.false((await d.lock(FILE, 'X', 'write', { nowait: true })).granted, 'c holds X on the leader');
  t.is(await c.unlock(FILE, 'X'), 1);
  t.true((await d.lock(FILE, 'X', 'write')).granted);
  t.is(await d.unlock(FILE, 'X'), 1, 'an unlock sent to both at once answers as the primary did');
});
