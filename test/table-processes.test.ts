// table-processes.test.ts - the lock table under real, separate processes:
// jdls-locker (C, linked to the native core) and Node children contending on
// the same keys, processes killed with -9 as holders, as waiters and inside
// the table's critical section. Serial: these tests start many processes and
// their liveness bounds should not compete with each other on 2 cores.
import test from 'ava';
import fs from 'node:fs';
import { makeOwner, type Owner } from '../src/locks/table.js';
import { native } from '../src/native.js';
import { tableEnv, DEFAULT_FILE as F, allRows, waitUntil, withTimeout, keyInGroup, lockerPath } from './helpers/table-env.js';

const owner = (n: number, port?: number): Owner =>
  makeOwner(port === undefined ? { ownerTid: 2_000_000 + n } : { ownerTid: 2_000_000 + n, port });

const queued = (rows: ReturnType<typeof allRows>, pid: number, key: string): boolean =>
  rows.some((r) => r.state === 'waiting' && r.pid === pid && r.key.toString() === key);

/** Liveness bound for "promptly" after a kill: generous for a loaded 2-core box. */
const PROMPT_MS = 3000;

test.serial('exclusive locks keep a read-modify-write counter exact: 3 C + 2 Node processes', async (t) => {
  const env = tableEnv(t);
  const counter = env.file('counter');
  fs.writeFileSync(counter, '0');
  const perC = 2000, perNode = 500;
  const procs = [
    ...[1, 2, 3].map(() => env.locker(['counter', counter, 'COUNTER', String(perC)])),
    ...[1, 2].map(() => env.node('node-locker', ['counter', counter, 'COUNTER', String(perNode)])),
  ];
  for (const p of procs) {
    await p.expect('DONE', 60_000);
    await p.success();
  }
  t.is(Number(fs.readFileSync(counter, 'utf8')), 3 * perC + 2 * perNode);
  t.is(allRows(env.table).length, 0);
  t.is(env.table.check(), 0);
});

test.serial('shared locks of two processes block a writer; it gets in after both release', async (t) => {
  const env = tableEnv(t);
  const h1 = env.locker(['hold', 'SH', 'read']);
  const h2 = env.locker(['hold', 'SH', 'read']);
  await h1.expect('LOCKED');
  await h2.expect('LOCKED');
  const tr = env.locker(['try', 'SH', 'write']);
  const [, pid] = await tr.expect('CONFLICT');
  t.true([h1.pid, h2.pid].includes(Number(pid)));
  await tr.success();
  const w = env.locker(['wait', 'SH', 'write']);
  await w.expect('QUEUED');
  h1.release();
  await h1.expect('RELEASED');
  // The release hands over synchronously; a wrongful grant would show now.
  const row = allRows(env.table).find((r) => r.pid === w.pid);
  t.is(row?.state, 'waiting', 'one reader still holds it');
  h2.release();
  await h2.expect('RELEASED');
  await w.expect('GRANTED');
  const rows = allRows(env.table);
  t.is(rows.length, 1);
  t.is(rows[0]?.mode, 'write');
  t.is(rows[0]?.pid, w.pid);
  w.release();
  await w.success();
  t.is(env.table.check(), 0);
});

test.serial('FIFO across processes: C and Node waiters are granted in arrival order', async (t) => {
  const env = tableEnv(t);
  const holder = env.locker(['hold', 'FIFO', 'write']);
  await holder.expect('LOCKED');
  // Arrival order is start order only if each one is in the queue before
  // the next starts.
  const start = [
    () => env.locker(['wait', 'FIFO', 'write', '-1', '20']),
    () => env.node('node-locker', ['wait', 'FIFO', 'write', '20']),
    () => env.locker(['wait', 'FIFO', 'write', '-1', '20']),
    () => env.node('node-locker', ['wait', 'FIFO', 'write', '20']),
    () => env.locker(['wait', 'FIFO', 'write', '-1', '20']),
  ];
  const waiters = [];
  for (const [i, s] of start.entries()) {
    const w = s();
    waiters.push(w);
    if (w.label.startsWith('jdls-locker')) await w.expect('QUEUED');
    else await waitUntil(() => queued(allRows(env.table), w.pid, 'FIFO'), 10_000, `waiter ${i} queued`);
  }
  holder.release();
  const stamps: bigint[] = [];
  for (const w of waiters) {
    const [ns] = await w.expect('GRANTED', 20_000);
    stamps.push(BigInt(ns ?? '0'));
    await w.expect('RELEASED');
    await w.success();
  }
  const order = stamps.map((s, i) => ({ s, i })).sort((x, y) => (x.s < y.s ? -1 : x.s > y.s ? 1 : 0)).map((x) => x.i);
  t.deepEqual(order, [0, 1, 2, 3, 4]);
  t.is(env.table.check(), 0);
});

test.serial('NOWAIT from C reports the holder port ($JBCPORTNO) and pid; status agrees', async (t) => {
  const env = tableEnv(t);
  const holder = env.locker(['hold', 'NW', 'write'], { env: { JBCPORTNO: '4711' } });
  const [hpid] = await holder.expect('LOCKED');
  t.is(Number(hpid), holder.pid);
  const tr = env.locker(['try', 'NW', 'read'], { env: { JBCPORTNO: '5' } });
  t.deepEqual(await tr.expect('CONFLICT'), ['4711', String(holder.pid)]);
  const st = env.locker(['status', 'NW']);
  t.deepEqual(await st.expect('STATUS'), ['-2', '4711', String(holder.pid)]);
  const fromNode = env.table.tryLock(owner(1), F, 'NW', 'write');
  t.false(fromNode.granted);
  if (!fromNode.granted) {
    t.is(fromNode.holder.port, 4711);
    t.is(fromNode.holder.pid, holder.pid);
    t.is(fromNode.holder.mode, 'write');
  }
  // And the other way round: a Node holder seen from C.
  t.true(env.table.tryLock(owner(2, 99), F, 'NW2', 'read').granted);
  const tr2 = env.locker(['try', 'NW2', 'write']);
  t.deepEqual(await tr2.expect('CONFLICT'), ['99', String(process.pid)]);
});

test.serial('kill -9 of a holder: the next waiter (C, then Node) gets the lock promptly', async (t) => {
  const env = tableEnv(t);
  const holder = env.locker(['hold', 'KH', 'write']);
  await holder.expect('LOCKED');
  const w = env.locker(['wait', 'KH', 'write']);
  await w.expect('QUEUED');
  const b = owner(1);
  let nodeGranted = false;
  const nodeWait = env.table.lock(b, F, 'KH', 'write').then(() => { nodeGranted = true; });
  await waitUntil(() => queued(allRows(env.table), process.pid, 'KH'), 10_000, 'Node waiter queued');
  await holder.kill9();
  await w.expect('GRANTED', PROMPT_MS);
  t.false(nodeGranted, 'the second waiter still waits: FIFO kept through the reaping');
  // The same for a waiter on the addon's waiter thread.
  await w.kill9();
  await withTimeout(nodeWait, PROMPT_MS, 'the Node waiter after its predecessor was killed');
  t.is(env.table.status(b, F, 'KH').code, 2);
  t.is(allRows(env.table).length, 1);
  t.is(env.table.check(), 0);
});

test.serial('kill -9 of a waiter does not block the queue', async (t) => {
  const env = tableEnv(t);
  const a = owner(1);
  t.true(env.table.tryLock(a, F, 'KW', 'write').granted);
  const w1 = env.locker(['wait', 'KW', 'write']);
  await w1.expect('QUEUED');
  const w2 = env.locker(['wait', 'KW', 'write']);
  await w2.expect('QUEUED');
  const w3 = env.node('node-locker', ['wait', 'KW', 'read']);
  await waitUntil(() => queued(allRows(env.table), w3.pid, 'KW'), 10_000, 'Node waiter queued');
  await w1.kill9();
  t.true(env.table.unlock(a, F, 'KW'));
  await w2.expect('GRANTED', PROMPT_MS);
  t.false(allRows(env.table).some((r) => r.pid === w1.pid), 'the dead waiter left no entry');
  // A Node waiter killed while queued, too.
  await w3.kill9();
  const w4 = env.locker(['wait', 'KW', 'write']);
  await w4.expect('QUEUED');
  w2.release();
  await w2.expect('RELEASED');
  await w4.expect('GRANTED', PROMPT_MS);
  w4.release();
  await w4.success();
  t.is(allRows(env.table).length, 0);
  t.is(env.table.check(), 0);
});

test.serial('kill -9 inside the critical section: the group is repaired, earlier locks survive', async (t) => {
  const env = tableEnv(t);
  const { table } = env;
  const ngroups = table.header().ngroups;
  const hash = (k: string): number => table.keyHash(F, k);
  const g = hash('CRASH') % ngroups;
  const before = keyInGroup(hash, ngroups, g, 'BEFORE');
  const after = keyInGroup(hash, ngroups, g, 'AFTER');
  const a = owner(1);
  t.true(table.tryLock(a, F, before, 'write').granted);
  // A C process queued in that group before the crash.
  const queuedBefore = env.locker(['wait', before, 'read']);
  await queuedBefore.expect('QUEUED');

  const crasher = env.locker(['crash-in-group', 'CRASH']);
  t.deepEqual(await crasher.expect('READY'), [String(g)]);
  await crasher.kill9();

  // The next process into that group finds the mutex owner dead and repairs.
  const tr = env.locker(['try', after, 'write']);
  await tr.expect('GRANTED', PROMPT_MS);
  await tr.success();
  t.is(table.check(), 0);
  t.is(table.status(a, F, before).code, 2, 'the lock held before the crash is still there');
  const rows = allRows(table);
  t.deepEqual(rows.map((r) => `${r.key.toString()} ${r.state} ${r.pid}`).sort(),
    [`${before} held ${process.pid}`, `${before} waiting ${queuedBefore.pid}`].sort());
  t.true(table.tryLock(owner(2), F, after, 'write').granted, 'the group takes new locks');
  t.true(table.unlock(owner(2), F, after));
  // The waiter from before the crash is still served.
  t.true(table.unlock(a, F, before));
  await queuedBefore.expect('GRANTED', PROMPT_MS);
  queuedBefore.release();
  await queuedBefore.success();
  t.is(table.check(), 0);
  t.is(allRows(table).length, 0);
});

test.serial('a dead holder\'s lock is freed the moment someone conflicts (no tidy-up needed)', async (t) => {
  const env = tableEnv(t);
  const { table } = env;
  const h = env.locker(['hold', 'DEAD', 'write']);
  await h.expect('LOCKED');
  const h2 = env.locker(['hold', 'DEAD2', 'read']);
  await h2.expect('LOCKED');
  await h.kill9();
  await h2.kill9();
  // Still listed: nobody has conflicted yet.
  t.is(allRows(table).length, 2);
  const opsBefore = table.header().tidyOps;
  const tr = env.locker(['try', 'DEAD', 'write']);
  await tr.expect('GRANTED');
  await tr.success();
  t.true(table.header().tidyOps > opsBefore);
  // The same for a NOWAIT request from Node.
  t.true(table.tryLock(owner(1), F, 'DEAD2', 'write').granted);
  t.is(allRows(table).length, 1);
  // Without a conflict, the tidy-up (the monitor's scan) frees them.
  const h3 = env.locker(['hold', 'DEAD3', 'read']);
  await h3.expect('LOCKED');
  await h3.kill9();
  t.is(allRows(table).length, 2);
  t.is(table.tidy(), 1);
  t.is(allRows(table).length, 1);
  t.is(table.check(), 0);
});

test.serial('a holder killed while its parent does not reap it (a zombie) loses its locks too', async (t) => {
  const env = tableEnv(t);
  // sh starts the holder in the background, then blocks in `read`, during
  // which it does not reap children: the killed holder stays a zombie until
  // sh gets a line and runs `wait`. (Ending sh that way, not by a kill,
  // leaves no zombie behind for init, which here reaps only now and then.)
  const script = 'exec 3<&0; "$0" -i 4242 -d 7 hold ZOMBIE write <&3 & read x; wait';
  const parent = env.spawn('sh (zombie parent)', '/bin/sh', ['-c', script, lockerPath]);
  const [lpid] = await parent.expect('LOCKED');
  const holderPid = Number(lpid);
  // Teardowns run last-registered first: this one before the env's kills.
  t.teardown(async () => {
    try { process.kill(holderPid, 'SIGKILL'); } catch { /* gone */ }
    parent.release();
    await withTimeout(parent.exited, 5000, 'the zombie parent to exit').catch(() => undefined);
  });
  process.kill(holderPid, 'SIGKILL');
  await waitUntil(() => /State:\s+Z/.test(fs.readFileSync(`/proc/${holderPid}/status`, 'utf8')), 5000, 'the holder to be a zombie');
  const tr = env.locker(['try', 'ZOMBIE', 'write']);
  t.is(await tr.line(), 'GRANTED');
  await tr.success(); // it released again before exiting
  t.is(env.table.status(owner(1), F, 'ZOMBIE').code, 0);
  t.is(env.table.check(), 0);
  parent.release();
  await parent.success();
  t.false(fs.existsSync(`/proc/${holderPid}`), 'the parent reaped the holder');
});
