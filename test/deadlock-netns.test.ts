// deadlock-netns.test.ts - deadlock detection across hosts (issue 12): a
// local direct process (node-locker: LockTable on the server host) and
// remote clients on other "hosts" (network namespaces; the real JdlsClient,
// each connection on its own lock-server process) form cycles of 2 and 3
// owners. The wait that closes the cycle is refused with DEADLOCK (it asked:
// `break`); the others are granted once it lets go; the monitor's log names
// every member with its host. Skipped, with the reason, when not root or
// `ip netns add` fails.
import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { netnsUnavailable } from './helpers/netns.js';
import { hosts } from './helpers/netns-service.js';
import { until } from './helpers/server-env.js';
import type { Proc } from './helpers/table-env.js';
import { LOG_FILE } from '../src/cli/start.js';

const why = netnsUnavailable();
if (why) console.warn(`deadlock-netns.test: SKIPPED: ${why}`);
const nsTest = why ? test.serial.skip : test.serial;

interface CycleLog {
  msg: string;
  deadlock: { members: { host: string; key: string; refused?: true }[]; refused: boolean };
}

/** Each member holds its key, then waits in turn for the next one's; the last closes the cycle. */
async function closeCycle(members: Proc[], waiting: () => number): Promise<void> {
  for (const m of members) await m.expect('HELD', 20_000);
  for (let i = 0; i < members.length - 1; i++) {
    members[i]?.release(); // "go": wait for the next key
    await until(() => waiting() === i + 1, 10_000, `member ${i} waiting`);
  }
  members[members.length - 1]?.release();
}

nsTest('a cycle of a local direct process and a client on another host: the closing wait is refused, the other granted', async (t) => {
  const h = await hosts(t, { clientsPerProcess: 1 });
  const waiting = (): number => [...h.env.table.rows()].flat().filter((r) => r.state === 'waiting').length;
  const local = h.direct(['cycle', 'DL1', 'DL2', 'break']);
  const remote = h.remote(h.pair.client, ['cycle', 'DL2', 'DL1', 'break']);
  await closeCycle([local, remote], waiting);
  t.deepEqual(await remote.expect('REFUSED', 10_000), ['DEADLOCK']);
  remote.release(); // it lets go of DL2
  const [token] = await local.expect('GRANTED', 10_000);
  t.true(BigInt(token ?? '0') > 0n, 'the grant after the cycle carries a fencing token');
  await remote.expect('RELEASED');
  local.release();
  await local.expect('RELEASED');
  const log = path.join(h.env.dir, LOG_FILE);
  await until(() => fs.readFileSync(log, 'utf8').includes('a cycle of 2 waiters'), 10_000, 'the monitor to log the cycle');
  const rec = JSON.parse(fs.readFileSync(log, 'utf8').split('\n').find((l) => l.includes('a cycle of 2 waiters')) ?? '{}') as CycleLog;
  t.true(rec.deadlock.refused);
  t.deepEqual(rec.deadlock.members.map((m) => m.host).sort(), ['0.0.0.0', h.pair.clientAddr].sort(), 'the log names each member\'s host');
  t.is(rec.deadlock.members.find((m) => m.refused)?.host, h.pair.clientAddr);
});

nsTest('a cycle of three owners on three "hosts" (local, server host, client host), on two lock-server processes: the last wait is refused', async (t) => {
  const h = await hosts(t, { clientsPerProcess: 1 });
  const waiting = (): number => [...h.env.table.rows()].flat().filter((r) => r.state === 'waiting').length;
  const local = h.direct(['cycle', 'T1', 'T2', 'break']);
  const onClient = h.remote(h.pair.client, ['cycle', 'T2', 'T3', 'break']);
  const onServer = h.remote(h.pair.server, ['cycle', 'T3', 'T1', 'break']);
  await closeCycle([local, onClient, onServer], waiting);
  t.deepEqual(await onServer.expect('REFUSED', 10_000), ['DEADLOCK']);
  t.is(h.env.lockServers().length >= 2, true, 'the two remote clients are served by two lock-server processes');
  onServer.release();
  await onClient.expect('GRANTED', 10_000);
  onClient.release();
  await local.expect('GRANTED', 10_000);
  local.release();
  for (const p of [onServer, onClient, local]) await p.expect('RELEASED');
  const log = path.join(h.env.dir, LOG_FILE);
  await until(() => fs.readFileSync(log, 'utf8').includes('a cycle of 3 waiters'), 10_000, 'the monitor to log the cycle');
  const rec = JSON.parse(fs.readFileSync(log, 'utf8').split('\n').find((l) => l.includes('a cycle of 3 waiters')) ?? '{}') as CycleLog;
  t.deepEqual(rec.deadlock.members.map((m) => m.key).sort(), ['T1', 'T2', 'T3']);
  t.deepEqual(rec.deadlock.members.map((m) => m.host).sort(), ['0.0.0.0', h.pair.clientAddr, h.pair.serverAddr].sort());
});
