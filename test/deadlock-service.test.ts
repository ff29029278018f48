// deadlock-service.test.ts - the installation's side of issue 12 through the
// real `jdls -ib`: the jdls.yaml `deadlock:` policy reaches the table, the
// monitor logs every cycle, -dvL counts them, and fencing tokens start a
// new epoch at every new table (restart), recorded in token-epoch.
import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { CliEnv } from './helpers/cli-env.js';
import { LockTable, makeOwner, fileId, tokenEpoch } from '../src/locks/table.js';
import { JdlsError } from '../src/errors.js';
import { LOG_FILE } from '../src/cli/start.js';

const F = fileId(1483651, -1); // the locker's default file

async function withTable<T>(env: CliEnv, fn: (table: LockTable) => Promise<T>): Promise<T> {
  const table = LockTable.open({ releaseDir: env.dir });
  try {
    return await fn(table);
  } finally {
    table.unlockAll(owner);
    table.close();
  }
}
const owner = makeOwner({ ownerTid: 77 });

/** This process holds K1; a locker holds K2 and waits for K1; then this process waits for K2. */
async function closeCycle(env: CliEnv, table: LockTable, breakDeadlock: boolean): Promise<string> {
  if (!table.tryLock(owner, F, 'K1', 'write').granted) throw new Error('K1 not granted');
  const other = await env.locker([{ key: 'K2', mode: 'write' }, { key: 'K1', mode: 'write', wait: true }]);
  await env.until(() => [...table.rows()].flat().some((r) => r.state === 'waiting'), 10_000);
  const ac = new AbortController();
  const mine = table.lock(owner, F, 'K2', 'write', { breakDeadlock, signal: ac.signal }).then(
    () => 'granted',
    (e: unknown) => (e instanceof JdlsError ? e.code : String(e)),
  );
  // Found at once (the wait looks when it starts); unless refused, the test
  // then withdraws its wait to end the cycle.
  await env.until(() => table.header().deadlockReports > 0, 10_000);
  setImmediate(() => ac.abort());
  const r = await mine;
  table.unlock(owner, F, 'K1');
  await other.waitFor(/^granted /); // the locker gets K1 once the cycle is broken
  other.child.stdin?.end();
  return r;
}

test('deadlock: report in jdls.yaml: the cycle is logged by the monitor and counted in -dvL, nobody refused', async (t) => {
  const env = new CliEnv(t);
  fs.appendFileSync(path.join(env.dir, 'jdls.yaml'), 'deadlock: report\n');
  await env.startBackground(['-ibA']);
  const r = await withTable(env, (table) => closeCycle(env, table, true));
  t.is(r, 'ABORTED', 'under report the wait was not refused (the test withdrew it)');
  const log = path.join(env.dir, LOG_FILE);
  t.true(await env.until(() => /deadlock: a cycle of 2 waiters/.test(fs.readFileSync(log, 'utf8')), 10_000), 'the monitor logged the cycle');
  const line = fs.readFileSync(log, 'utf8').split('\n').find((l) => l.includes('a cycle of 2 waiters')) ?? '';
  const rec = JSON.parse(line) as { deadlock: { members: { key: string; pid: number }[]; refused: boolean } };
  t.deepEqual(rec.deadlock.members.map((m) => m.key).sort(), ['K1', 'K2']);
  t.true(rec.deadlock.members.some((m) => m.pid === process.pid));
  t.false(rec.deadlock.refused);
  const text = await env.run(['-dv']);
  t.regex(text.stdout, /Deadlocks:\s+1 found, 0 refused \(policy report\)/);
  const json = JSON.parse((await env.run(['-dvL', '--json'])).stdout) as { deadlocks: { found: number; recent: { text: string }[] } };
  t.is(json.deadlocks.found, 1);
  t.regex(json.deadlocks.recent[0]?.text ?? '', /waits for K1/);
});

test('default policy (break): a wait that asked is refused with DEADLOCK, counted and logged as refused', async (t) => {
  const env = new CliEnv(t);
  await env.startBackground(['-ibA']);
  const r = await withTable(env, (table) => closeCycle(env, table, true));
  t.is(r, 'DEADLOCK');
  t.regex((await env.run(['-dv'])).stdout, /Deadlocks:\s+1 found, 1 refused \(policy break\)/);
  const log = path.join(env.dir, LOG_FILE);
  t.true(await env.until(() => /refused the wait of pid/.test(fs.readFileSync(log, 'utf8')), 10_000));
});

test('fencing tokens: each new table starts a new epoch, recorded before it grants; tokens keep rising across the restart', async (t) => {
  const env = new CliEnv(t);
  await env.startBackground(['-ibA']);
  t.is(fs.readFileSync(path.join(env.dir, 'token-epoch'), 'utf8').trim(), '1');
  const first = await withTable(env, async (table) => {
    const g = await table.lock(owner, F, 'T', 'write');
    table.unlock(owner, F, 'T');
    return g.token ?? 0n;
  });
  t.is(tokenEpoch(first), 1n);
  t.is((await env.run(['-k'])).code, 0);
  t.is((await env.run(['-K'])).code, 0);
  await env.startBackground(['-ibA']);
  t.is(fs.readFileSync(path.join(env.dir, 'token-epoch'), 'utf8').trim(), '2');
  const second = await withTable(env, async (table) => {
    const g = await table.lock(owner, F, 'T', 'write');
    table.unlock(owner, F, 'T');
    return g.token ?? 0n;
  });
  t.true(second > first, `${second} > ${first}`);
  t.is(tokenEpoch(second), 2n);
});
