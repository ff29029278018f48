// pair-witness-netns.test.ts - issue 15's scenarios: a SERVER2 pair guarded
// by an etcd witness, on hosts of their own (network namespaces: the witness
// w, the servers a and b, client hosts c1, c2, ...; helpers/pair-estate.ts),
// with resilient clients on the real client library counting under one lock
// (test/fixtures/pair-counter.ts). Exclusion is proved by the count (every
// increment is a read-modify-write of a shared file under the lock: a double
// grant loses an update, so the count falls behind the log's lines) and
// fencing by the tokens, which must rise along the order of the writes,
// across every failover.
import test, { type ExecutionContext } from 'ava';
import { netnsUnavailable } from './helpers/netns.js';
import { PairEstate, etcdUnavailable } from './helpers/pair-estate.js';
import { withTimeout, type Proc } from './helpers/table-env.js';
import { tokenEpoch } from '../src/locks/table.js';

const why = netnsUnavailable() ?? etcdUnavailable();
const pairTest = why ? test.serial.skip : test.serial;
if (why) test.serial(`pair witness tests skipped: ${why}`, (t) => t.pass());

/** Lines until one starts with `word` (other lines - AT, FAILOVER - are progress). */
async function until(p: Proc, word: string, timeoutMs: number): Promise<string[]> {
  const deadline = Date.now() + timeoutMs;
  const seen: string[] = [];
  for (;;) {
    const l = await p.line(Math.max(1, deadline - Date.now()));
    seen.push(l);
    const f = l.split(' ');
    if (f[0] === word) return f.slice(1);
    if (f[0] === 'ERROR' || (f[0] === 'DEAD' && word !== 'DEAD')) throw new Error(`${p.label}: ${l}; before: ${seen.slice(-5).join(' | ')}; stderr: ${p.stderr.slice(-1500)}`);
  }
}

/** The count is exact and the tokens rise along the writes. */
function checkCounter(t: ExecutionContext, e: PairEstate, expected?: number): void {
  const { count, lines } = e.results();
  t.is(count, lines.length, 'every increment kept: no lost update (no double grant)');
  if (expected !== undefined) t.is(count, expected);
  lines.forEach((l, i) => t.is(l.value, i + 1, `write ${i + 1} saw the count before it`));
  for (let i = 1; i < lines.length; i++) {
    const [prev, cur] = [lines[i - 1]?.token ?? 0n, lines[i]?.token ?? 0n];
    if (!(cur > prev)) t.fail(`token of write ${i + 1} (${cur}) does not outrank write ${i}'s (${prev})`);
  }
}

pairTest('the primary killed with -9: clients of two hosts fail over, the count is exact, tokens keep rising', async (t) => {
  const e = await PairEstate.start(t, { clients: 2 });
  const n = 60;
  const c1 = e.client('c1', [String(n), '20']);
  const c2 = e.client('c2', [String(n), '20']);
  await until(c1, 'AT', 30_000);
  await until(c2, 'AT', 30_000);
  const before = e.results().lines.at(-1)?.token ?? 0n;
  await e.crash('a');
  for (const c of [c1, c2]) await until(c, 'DONE', 60_000);
  checkCounter(t, e, 2 * n);
  const last = e.results().lines.at(-1)?.token ?? 0n;
  t.true(tokenEpoch(last) > tokenEpoch(before), `the new leader's epoch (${tokenEpoch(last)}) outranks the old one's (${tokenEpoch(before)})`);
});

pairTest('the secondary killed: clients carry on with the primary alone', async (t) => {
  const e = await PairEstate.start(t, { clients: 2 });
  const n = 40;
  const c1 = e.client('c1', [String(n), '20']);
  const c2 = e.client('c2', [String(n), '20']);
  await until(c1, 'AT', 30_000);
  await until(c2, 'AT', 30_000);
  await e.crash('b');
  for (const c of [c1, c2]) await until(c, 'DONE', 60_000);
  checkCounter(t, e, 2 * n);
});

pairTest('a cut link between one client host and the primary: that client does not split, it waits for the verdict and exits; the others continue', async (t) => {
  const e = await PairEstate.start(t, { clients: 2, timeoutSeconds: 4 });
  const n = 80;
  const c1 = e.client('c1', [String(n), '20']);
  const c2 = e.client('c2', [String(n), '20']);
  await until(c1, 'AT', 30_000);
  await until(c2, 'AT', 30_000);
  e.hosts.cut('c1', 'a');
  // c1: its primary silent longer than TIMEOUT, the secondary refuses the
  // promotion (a still holds the key): it gives up rather than split.
  const dead = await until(c1, 'DEAD', 60_000);
  t.is(dead[0], 'SPLIT_REFUSED', dead.join(' '));
  t.regex(dead.join(' '), /witness/);
  await withTimeout(c1.exited, 10_000, 'c1 exits');
  // c2 carries on with a (c1's connection there is dropped by a's silence bound, freeing its lock).
  await until(c2, 'DONE', 90_000);
  checkCounter(t, e);
  const { lines } = e.results();
  t.true(lines.filter((l) => l.pid === c2.pid).length === n, 'c2 did all its increments');
});

pairTest('the primary cut off from the witness: it stops granting within its lease, clients move to the secondary, no double grant', async (t) => {
  const e = await PairEstate.start(t, { clients: 2 });
  const n = 80;
  const c1 = e.client('c1', [String(n), '20']);
  const c2 = e.client('c2', [String(n), '20']);
  await until(c1, 'AT', 30_000);
  await until(c2, 'AT', 30_000);
  const before = e.results().lines.at(-1)?.token ?? 0n;
  e.hosts.cut('a', 'w');
  for (const c of [c1, c2]) await until(c, 'FAILOVER', 60_000);
  for (const c of [c1, c2]) await until(c, 'DONE', 60_000);
  checkCounter(t, e, 2 * n);
  const last = e.results().lines.at(-1)?.token ?? 0n;
  t.true(tokenEpoch(last) > tokenEpoch(before), 'tokens after the failover outrank those before');
});

pairTest('both servers lost: the client exits with the guide\'s message; a failed server that comes back is not reconnected to', async (t) => {
  const e = await PairEstate.start(t, { clients: 1 });
  const c1 = e.client('c1', ['100000', '20']);
  await until(c1, 'AT', 30_000);
  await e.crash('a');
  await until(c1, 'FAILOVER', 60_000);
  const at = Number((await until(c1, 'AT', 30_000))[0]);
  // a comes back (and may even lead again once b is gone): the client must not return to it.
  await e.startServer('a');
  await e.crash('b');
  const dead = await until(c1, 'DEAD', 60_000);
  t.regex(dead.join(' '), /lock server|distributed locking/i, dead.join(' '));
  await withTimeout(c1.exited, 10_000, 'c1 exits');
  t.true(at > 0);
  checkCounter(t, e);
});
