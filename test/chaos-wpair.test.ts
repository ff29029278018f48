// chaos-wpair.test.ts - the fault-injection suite's witnessed pair
// (docs/reliability.md, `wpair`): a short fixed-seed run of a SERVER2 pair
// guarded by an etcd witness, under the faults it must survive whole - kill
// -9 of the leader or follower, a client host cut off from the leader (its
// clients refuse to split: SPLIT_REFUSED), the leader cut off from the
// witness, the witness paused past its lease - must find 0 violations of
// every property. Safety only: nothing here depends on timing (every fault
// is awaited by the runner; the report is judged from the histories).
// Skipped, with the reason, when not root, namespaces cannot be made, or
// etcd is missing.
import test from 'ava';
import { netnsUnavailable } from './helpers/netns.js';
import { runChaos, type ChaosRun } from './helpers/chaos-run.js';
import { etcdUnavailable } from '../chaos/cluster.js';

const why = netnsUnavailable() ?? etcdUnavailable();
if (why) console.warn(`chaos-wpair.test: SKIPPED: ${why}`);
const nsTest = why ? test.serial.skip : test.serial;

const SEED = 7;

function explain(r: ChaosRun): string {
  const v = r.report?.violations.slice(0, 3).map((x) => `${x.property}: ${x.message}\n  ${x.slice.slice(0, 8).join('\n  ')}`).join('\n') ?? '';
  return `exit ${r.code}; run directory ${r.dir}\n${v}\n--- stderr (tail)\n${r.stderr.split('\n').slice(-30).join('\n')}`;
}

nsTest('a fixed-seed run of the pair with its witness (wpair) under its faults: 0 violations of every property', async (t) => {
  t.timeout(150_000);
  const r = await runChaos(t, ['--minutes', '0.75', '--seed', String(SEED), '--config', 'wpair'], 140_000);
  const rep = r.report;
  if (!rep) return t.fail(`no report: ${explain(r)}`);
  t.log(`seed ${SEED}: ${rep.clients} clients, ${rep.operations} operations, ${rep.grants} grants, faults ${JSON.stringify(rep.faults)}`);
  t.deepEqual(rep.perProperty, { 'double-grant': 0, 'lost-update': 0, tokens: 0, liveness: 0, cleanup: 0 }, explain(r));
  t.is(r.code, 0, explain(r));
  t.true(rep.grants > 0, 'locks were granted');
});
