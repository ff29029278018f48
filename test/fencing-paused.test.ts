// fencing-paused.test.ts - the story fencing tokens exist for
// (docs/fencing.md), end to end with a real lock service and the real
// client library: client A (a child process) takes an exclusive lock with
// token tA and writes through the SQLite recipe; A is paused (SIGSTOP) past
// the server's keep-alive bound; the server drops it and grants the lock to
// client B (this process) with tB > tA; B writes with tB; A resumes
// (SIGCONT) and writes with tA, still believing it holds the lock: the
// resource refuses it and B's data stands.
//
// Needs issue 12's tokens end to end: the table's (the lead's C work) and
// GRANTED's token in the protocol and the client (helper A). Without them
// the grant carries no token and the test fails at its first check, saying so.
import test from 'ava';
import { spawn } from 'node:child_process';
import { JdlsClient } from '../src/client/client.js';
import { recordLockName } from '../src/fencing.js';
import { ServerEnv, until } from './helpers/server-env.js';
import { Proc, nodeFixture, waitingOn, withTimeout } from './helpers/table-env.js';
import { recordPid } from './helpers/installations.js';
import { FENCING_FILE, grantToken } from './helpers/fencing-env.js';
import { createLedger, ledgerWrite, query } from './helpers/sqlite-cli.js';

test.serial('a paused holder that lost its lock is refused by a resource that checks tokens', async (t) => {
  // A short keep-alive, so A's pause outlasts it soon; A pings every 300 ms
  // while it runs (the server's bound: max(keepaliveMs, 2 x 300) = 1000 ms).
  const env = new ServerEnv(t, { keepaliveMs: 1000 });
  await env.start(['-ib']);
  const db = env.file('resource.db');
  await createLedger(db);
  const KEY = 'ACCOUNT*42';
  const lock = recordLockName(FENCING_FILE, KEY);
  const jdls = `SERVER=127.0.0.1,${env.port}`;

  // Client A, in its own process (ServerEnv's cleanup kills it by its
  // JBCRELEASEDIR, stopped or not; SIGKILL ends a stopped process too).
  const a = new Proc(spawn(process.execPath, [nodeFixture('fencing-client'), '--ping', '300', db, KEY], { env: { ...env.env, JDLS: jdls }, stdio: ['pipe', 'pipe', 'pipe'] }), 'fencing-client A');
  recordPid(env.dir, a.pid);
  let stopped = false;
  t.teardown(() => {
    if (stopped && a.running) try { process.kill(a.pid, 'SIGCONT'); } catch { /* gone */ }
  });
  const [tokenText] = await a.expect('GRANTED', 20_000);
  if (tokenText === 'none' || tokenText === undefined) {
    t.fail('the grant carried no fencing token: needs issue 12 tokens in the table (lead) and in GRANTED / JdlsClient.lock() (helper A)');
    return;
  }
  const tA = BigInt(tokenText);
  t.true(tA > 0n && tA < 1n << 63n);

  // While A holds the lock its writes go through.
  a.child.stdin?.write('write from A, holding\n');
  t.deepEqual(await a.expect('WROTE'), []);

  // Client B queues behind A.
  const b = await JdlsClient.connect(jdls, { program: 'fencing B', errorTrace: false });
  t.teardown(() => b.close());
  const bGrant = b.lock(FENCING_FILE, KEY, 'write');
  await until(() => waitingOn(env.table, KEY) === 1, 10_000, 'B queued behind A');

  // A is paused: no pings; the server drops it after its keep-alive bound,
  // frees its lock and hands it to B.
  process.kill(a.pid, 'SIGSTOP');
  stopped = true;
  const g = await withTimeout(bGrant, 30_000, "B's grant after A was dropped");
  t.true(g.granted);
  await until(() => /keep-alive: no complete frame from the client/.test(env.logs()), 10_000, 'the keep-alive drop in the log');
  const tB = grantToken(g);
  t.not(tB, undefined, "B's grant carries a token");
  if (tB === undefined) return;
  t.true(tB > tA, `tB ${tB} > tA ${tA}`);
  t.log(`tA ${tA}, tB ${tB} (epoch ${tB >> 44n})`);

  const wb = await ledgerWrite(db, lock, tB, 'acct', 'from B');
  t.is(wb.code, 0, wb.stderr);

  // A resumes and writes with tA, as if it still held the lock: refused.
  process.kill(a.pid, 'SIGCONT');
  stopped = false;
  a.child.stdin?.write('write LATE from A\n');
  const refused = await a.line(20_000);
  t.regex(refused, /^REFUSED .*refused a lower fencing token/);
  t.deepEqual(await query(db, 'SELECT value, token FROM ledger;'), [`from B|${tB}`], "B's data stands");
  t.deepEqual(await query(db, 'SELECT lock, token FROM jdls_fence;'), [`${lock}|${tB}`]);

  a.child.stdin?.end();
  await a.exited;
  t.is(await b.unlock(FENCING_FILE, KEY), 1);
});
