// witness-etcd.test.ts - the witness (src/server/witness.ts) against a real
// etcd, without lock servers: one leader of two, terms rising, a lapsed
// lease handing the key over, a silent etcd ending the leadership at the
// deadline, and PROMOTE's verdicts.
import test, { type ExecutionContext } from 'ava';
import { pino } from 'pino';
import { Etcd } from './helpers/etcd.js';
import { Witness, marginMs, type WitnessState } from '../src/server/witness.js';
import { EtcdClient } from '../src/server/etcd.js';

const LEASE = 2000;

interface Member {
  w: Witness;
  states: WitnessState[];
  becameLeader: number[];
  /** resolves at the first state that satisfies cond */
  next(cond: (s: WitnessState) => boolean, ms: number, what: string): Promise<WitnessState>;
}

function member(t: ExecutionContext, etcd: Etcd, name: string, epoch = 0, prefix = '/jdls/t'): Member {
  const states: WitnessState[] = [];
  const becameLeader: number[] = [];
  const watchers = new Set<(s: WitnessState) => void>();
  const w = new Witness({ endpoints: [etcd.url], prefix, leaseMs: LEASE, name }, 0, {
    log: pino({ level: 'silent' }),
    localEpoch: () => epoch,
    becomeLeader: (term) => void becameLeader.push(term),
    onState: (s) => {
      states.push(s);
      for (const f of [...watchers]) f(s);
    },
  });
  t.teardown(() => w.stop());
  const next = (cond: (s: WitnessState) => boolean, ms: number, what: string): Promise<WitnessState> =>
    new Promise((resolve, reject) => {
      // The state now may satisfy it already (a follower's unchanged looks are not reported again).
      const last = states[states.length - 1];
      if (last && cond(last)) return resolve(last);
      const timer = setTimeout(() => {
        watchers.delete(f);
        reject(new Error(`${name}: timed out after ${ms} ms waiting for ${what}; states: ${JSON.stringify(states.map((s) => [s.role, s.term, s.leader]))}`));
      }, ms);
      const f = (s: WitnessState): void => {
        if (!cond(s)) return;
        clearTimeout(timer);
        watchers.delete(f);
        resolve(s);
      };
      watchers.add(f);
    });
  return { w, states, becameLeader, next };
}

const leads = (s: WitnessState): boolean => s.role === 'leader';

test('exactly one of two leads; the term is above both local epochs; the key names the leader', async (t) => {
  const etcd = await Etcd.start(t);
  const a = member(t, etcd, 'a', 3);
  const b = member(t, etcd, 'b', 7);
  const aLead = a.next(leads, 10_000, 'a leader').then(() => 'a');
  const bLead = b.next(leads, 10_000, 'b leader').then(() => 'b');
  a.w.start();
  b.w.start();
  const first = await Promise.race([aLead, bLead]);
  const [lead, other] = first === 'a' ? [a, b] : [b, a];
  // The other one sees the key held (a follower state naming the leader).
  await other.next((s) => s.role === 'follower' && s.leader === first, 10_000, 'the other as follower');
  t.true(lead.w.leading);
  t.false(other.w.leading);
  t.is(await etcd.get('/jdls/t/leader'), first);
  const term = Number(await etcd.get('/jdls/t/term'));
  t.true(term > 7 || (first === 'a' && term > 3), `term ${term}`);
  t.deepEqual(lead.becameLeader, [term]);
  t.is(other.becameLeader.length, 0);
  // Renewals keep the deadline moving and never exceed the lease minus the margin from now.
  const s0 = lead.w.state;
  if (s0.role !== 'leader') return t.fail('the leader\'s state is not leader');
  const s1 = await lead.next((s) => s.role === 'leader' && s.untilNs > s0.untilNs, 5000, 'a renewal');
  if (s1.role !== 'leader') return t.fail();
  t.true(s1.untilNs - process.hrtime.bigint() <= BigInt(LEASE - marginMs(LEASE)) * 1_000_000n);
});

test('a leader that stops renewing: the other takes the key only after the lease lapsed, with a higher term', async (t) => {
  const etcd = await Etcd.start(t);
  const a = member(t, etcd, 'a');
  a.w.start();
  const sa = await a.next(leads, 10_000, 'a leader');
  const b = member(t, etcd, 'b');
  b.w.start();
  await b.next((s) => s.role === 'follower' && s.leader === 'a', 10_000, 'b follows a');
  a.w.stop(); // as a killed listener: no revoke
  const stoppedAt = Date.now();
  const sb = await b.next(leads, 15_000, 'b leader');
  // etcd keeps the key for the lease's TTL after a's last renewal (at most LEASE/3 before stop)
  t.true(Date.now() - stoppedAt >= LEASE - LEASE / 3 - 100, `took over after ${Date.now() - stoppedAt} ms`);
  t.true(sb.term > sa.term);
  t.is(await etcd.get('/jdls/t/leader'), 'b');
});

test('etcd silent (SIGSTOP): the leader stops being one at its deadline, within the lease', async (t) => {
  const etcd = await Etcd.start(t);
  const a = member(t, etcd, 'a');
  a.w.start();
  await a.next(leads, 10_000, 'a leader');
  etcd.pause();
  const paused = Date.now();
  await a.next((s) => s.role === 'follower', LEASE + 2000, 'a loses the leadership');
  t.true(Date.now() - paused <= LEASE, `lost after ${Date.now() - paused} ms (lease ${LEASE})`);
  t.false(a.w.leading);
  etcd.resume();
  // etcd back: the lease (or its successor) is taken again in time
  await a.next(leads, 15_000, 'a leader again');
});

test('PROMOTE: refused while the other leads, granted once its lease lapsed; at once for the leader', async (t) => {
  const etcd = await Etcd.start(t);
  const a = member(t, etcd, 'a');
  a.w.start();
  const sa = await a.next(leads, 10_000, 'a leader');
  t.is(await a.w.promote(100), sa.term, 'the leader answers with its term at once');
  const b = member(t, etcd, 'b');
  b.w.start();
  await b.next((s) => s.role === 'follower' && s.leader === 'a', 10_000, 'b follows a');
  t.is(await b.w.promote(300), undefined, 'refused: a holds the key');
  a.w.stop();
  const term = await b.w.promote(LEASE + 3000);
  t.true(term !== undefined && term > sa.term, `promoted with term ${term}`);
});

test('the etcd client tries the endpoints in turn: a dead first endpoint does not stop it', async (t) => {
  const etcd = await Etcd.start(t);
  const c = new EtcdClient(['http://127.0.0.1:1', etcd.url]);
  const lease = await c.grant(2, 3000);
  t.true(lease.ttlS >= 2);
  t.true((await c.keepalive(lease.id, 3000)) > 0);
  t.is(c.current, etcd.url);
  await c.revoke(lease.id, 3000);
  t.is(await c.keepalive(lease.id, 3000), 0, 'a revoked lease renews to 0');
  await t.throwsAsync(new EtcdClient(['http://127.0.0.1:1']).grant(2, 500), { message: /127\.0\.0\.1:1/ });
});
