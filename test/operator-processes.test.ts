// operator-processes.test.ts - the guide's process model and its trade-off
// (docs/operations.md): with clientsPerProcess 1 every client has its own
// lock-server process, and kill -9 of one drops exactly that client - every
// other client keeps its connection and its locks. With clients sharing a
// process, one crash drops every client of that process and nobody else.
// Serial: many processes on a 2-core machine.
import test from 'ava';
import { ServerEnv, until, alive } from './helpers/server-env.js';
import { WireClient, expectType } from './helpers/wire-client.js';

/** Connect n clients, each holding its own key; resolves with them. */
async function holders(env: ServerEnv, n: number, base: number): Promise<WireClient[]> {
  const out: WireClient[] = [];
  for (let i = 0; i < n; i++) {
    const c = await env.client({ pid: base + i, port: base + i });
    expectType(await c.lock(`K${i}`), 'GRANTED');
    out.push(c);
  }
  return out;
}

/** Which clients' connections closed (bounded wait for the expected ones, then a moment for any others). */
async function droppedAfterKill(env: ServerEnv, clients: WireClient[], victimPid: number): Promise<WireClient[]> {
  const closed = new Set<WireClient>();
  for (const c of clients) void c.closed.then(() => closed.add(c), () => closed.add(c));
  const expected = clients.filter((c) => c.welcome.serverPid === victimPid).length;
  process.kill(victimPid, 'SIGKILL');
  await until(() => closed.size >= expected, 10_000, 'the victim\'s clients to be dropped');
  await until(() => !alive(victimPid), 5_000, 'the lock server to be gone');
  // Anyone else who would be dropped is dropped by now: the kernel closed
  // the victim's sockets when it died, and every survivor answers below.
  return clients.filter((c) => closed.has(c));
}

test.serial('clientsPerProcess 1 (the guide\'s model): kill -9 of one lock-server process drops exactly its one client; every other client keeps its connection and locks', async (t) => {
  const env = new ServerEnv(t, { clientsPerProcess: 1, spareProcesses: 0 });
  await env.start();
  const clients = await holders(env, 5, 7100);
  const pids = clients.map((c) => c.welcome.serverPid);
  t.is(new Set(pids).size, 5, 'one lock-server process per client');
  const victim = clients[2]!;
  const dropped = await droppedAfterKill(env, clients, victim.welcome.serverPid);
  t.deepEqual(dropped, [victim], 'exactly the one client of the killed process');
  for (const [i, c] of clients.entries()) {
    if (c === victim) continue;
    expectType(await c.ping(), 'PONG');
    t.is(expectType(await c.status(`K${i}`), 'STATUS_RESULT').code, 2, `client ${i} still holds its lock`);
  }
  // The victim's lock is free at once: another client takes it.
  expectType(await clients[0]!.lock('K2', 'write', { nowait: true }), 'GRANTED');
  t.is(env.table.check(), 0);
});

test.serial('clients sharing a lock-server process (clientsPerProcess 3): one crash drops the clients of that process, and only those', async (t) => {
  const env = new ServerEnv(t, { clientsPerProcess: 3, spareProcesses: 0 });
  await env.start();
  const clients = await holders(env, 6, 7200);
  const byServer = new Map<number, WireClient[]>();
  for (const c of clients) byServer.set(c.welcome.serverPid, [...(byServer.get(c.welcome.serverPid) ?? []), c]);
  t.is(byServer.size, 2, 'two processes of three clients');
  const victimPid = clients[0]!.welcome.serverPid;
  const dropped = await droppedAfterKill(env, clients, victimPid);
  t.deepEqual(new Set(dropped), new Set(byServer.get(victimPid)), 'the three clients of that process');
  for (const c of clients) {
    if (dropped.includes(c)) continue;
    expectType(await c.ping(), 'PONG');
  }
});
