// deadlock.ts - scenario: deadlock detection (docs/deadlocks.md).
//
// Figures:
//   - from the request that closes a cycle to its DEADLOCK answer, for cycles
//     of 2, 4 and 8 remote owners, each on a lock-server process of its own
//     (jdls -ib with clientsPerProcess: 1), through the real client library:
//     p50 and p99 over many cycles (goal p99 <= 1 ms);
//   - the uncontended lock+unlock pair (TypeScript, LockTable) with
//     detection on (break) and off, interleaved rounds: on / off (goal
//     <= 1.05: a request that does not wait never looks);
//   - the contended cycle "A holds, B waits (B's wait looks), A releases, B
//     is granted, B releases" with detection on and off: the cost of one
//     look where it is paid (no goal: reported).
import { JdlsClient, type RemoteLockOptions } from '../src/client/client.js';
import { JdlsError } from '../src/errors.js';
import { fileId, makeOwner, type LockTable } from '../src/locks/table.js';
import { C } from '../src/native.js';
import { TempInstallation, median, BenchError, type Figure } from './lib.js';
import { Service } from './remote.js';

const FILE = { inode: 4343n, dev: -1n };
/** Ask to be refused in a cycle (the library's default is to wait, as jBASE). */
const BREAK: RemoteLockOptions = { breakDeadlock: true };

function percentile(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)] ?? NaN;
}

/**
 * One cycle of n owners, closed `rounds` times: ms from the closing send to
 * DEADLOCK, and, as the floor to compare with, ms of a LOCK by the same
 * client that is granted at once (the same round trip without a cycle).
 */
async function cycleLatency(port: number, n: number, rounds: number): Promise<{ deadlock: number[]; granted: number[] }> {
  const clients = await Promise.all(Array.from({ length: n }, (_, i) =>
    JdlsClient.connect(`SERVER=127.0.0.1,${port},WAIT`, { errorTrace: false, program: `bench-cycle-${i}` })));
  const out: number[] = [];
  const granted: number[] = [];
  try {
    for (let r = 0; r < rounds; r++) {
      const keys = clients.map((_, i) => `C${n}-${r}-${i}`);
      for (let i = 0; i < n; i++) {
        const g = await clients[i]?.lock(FILE, keys[i] ?? '', 'write', { nowait: true });
        if (!g?.granted) throw new BenchError('cycle: a free key was not granted');
      }
      // Owners 0..n-2 wait for the next one's key. A lock-server process
      // handles a connection's frames in order and queues a LOCK before it
      // reads the next frame, so a PING answered after it means the wait
      // is in the table.
      const waits = clients.slice(0, n - 1).map((c, i) => c.lock(FILE, keys[i + 1] ?? '', 'write', BREAK));
      await Promise.all(clients.slice(0, n - 1).map((c) => c.ping()));
      const last = clients[n - 1];
      if (!last) throw new BenchError('cycle: no client');
      const g0 = process.hrtime.bigint();
      await last.lock(FILE, `F${n}-${r}`, 'write', BREAK);
      granted.push(Number(process.hrtime.bigint() - g0) / 1e6);
      const t0 = process.hrtime.bigint();
      const err = await last.lock(FILE, keys[0] ?? '', 'write', BREAK).then(() => undefined, (e: unknown) => e);
      const t1 = process.hrtime.bigint();
      if (!(err instanceof JdlsError) || err.code !== 'DEADLOCK') throw new BenchError(`cycle of ${n}: the closing request got ${String(err)}, not DEADLOCK`);
      out.push(Number(t1 - t0) / 1e6);
      // Unwind: the last owner releases, then each waiter in turn is granted and releases.
      await last.unlock(FILE, keys[n - 1] ?? '');
      for (let i = n - 2; i >= 0; i--) {
        await waits[i];
        await clients[i]?.unlockAll();
      }
    }
  } finally {
    await Promise.all(clients.map((c) => c.close()));
  }
  return { deadlock: out, granted };
}

function pairNs(table: LockTable, iterations: number): number {
  const owner = makeOwner();
  const file = fileId(4242, 11);
  const key = Buffer.from('BENCH*DL-PAIR');
  const once = (): void => {
    if (!table.tryLock(owner, file, key, 'write').granted) throw new BenchError('pair: not granted');
    if (!table.unlock(owner, file, key)) throw new BenchError('pair: not held');
  };
  for (let i = 0; i < Math.ceil(iterations / 10); i++) once();
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < iterations; i++) once();
  return Number(process.hrtime.bigint() - t0) / iterations;
}

/** A holds, B's lock() waits (and looks), A releases, B is granted and releases: us per round. */
async function waitCycleUs(table: LockTable, iterations: number): Promise<number> {
  const a = makeOwner({ ownerTid: 1 });
  const b = makeOwner({ ownerTid: 2 });
  const file = fileId(4242, 12);
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < iterations; i++) {
    if (!table.tryLock(a, file, 'W', 'write').granted) throw new BenchError('wait cycle: not granted');
    const w = table.lock(b, file, 'W', 'write', { breakDeadlock: true });
    table.unlock(a, file, 'W');
    await w;
    table.unlock(b, file, 'W');
  }
  return Number(process.hrtime.bigint() - t0) / iterations / 1000;
}

export interface DeadlockResult {
  cycles: Record<string, { p50Ms: number; p99Ms: number; maxMs: number; samples: number; grantedP50Ms: number; grantedP99Ms: number }>;
  pairOnNs: number;
  pairOffNs: number;
  pairRatio: number;
  waitOnUs: number;
  waitOffUs: number;
}

export async function runDeadlock(opts: { rounds?: number; pairIterations?: number } = {}): Promise<{ result: DeadlockResult; figures: Figure[] }> {
  const rounds = opts.rounds ?? 200;
  const pairIterations = opts.pairIterations ?? 200_000;
  const cycles: DeadlockResult['cycles'] = {};
  const svc = new Service('deadlock', { clientsPerProcess: 1, spareProcesses: 8 });
  try {
    for (const n of [2, 4, 8]) {
      const { deadlock: ms, granted } = await cycleLatency(svc.port, n, rounds);
      cycles[String(n)] = { p50Ms: median(ms), p99Ms: percentile(ms, 99), maxMs: Math.max(...ms), samples: ms.length, grantedP50Ms: median(granted), grantedP99Ms: percentile(granted, 99) };
    }
  } finally {
    svc.stop();
  }
  const inst = new TempInstallation('deadlock-pair');
  let pairOn: number[] = [];
  let pairOff: number[] = [];
  let waitOn: number[] = [];
  let waitOff: number[] = [];
  try {
    const table = inst.create();
    for (let r = 0; r < 7; r++) {
      for (const policy of r % 2 ? [C.DEADLOCK_BREAK, C.DEADLOCK_OFF] : [C.DEADLOCK_OFF, C.DEADLOCK_BREAK]) {
        table.setDeadlockPolicy(policy);
        const ns = pairNs(table, pairIterations);
        const us = await waitCycleUs(table, 2000);
        if (policy === C.DEADLOCK_OFF) { pairOff.push(ns); waitOff.push(us); } else { pairOn.push(ns); waitOn.push(us); }
      }
    }
  } finally {
    inst.dispose();
  }
  const result: DeadlockResult = {
    cycles,
    pairOnNs: median(pairOn),
    pairOffNs: median(pairOff),
    pairRatio: median(pairOn) / median(pairOff),
    waitOnUs: median(waitOn),
    waitOffUs: median(waitOff),
  };
  pairOn = pairOff = waitOn = waitOff = [];
  const r2 = (x: number): number => Math.round(x * 1000) / 1000;
  const figures: Figure[] = [];
  for (const n of ['2', '4', '8']) {
    const c = cycles[n];
    if (!c) continue;
    figures.push({ id: `deadlock-cycle-${n}-p99`, label: `deadlock answer, cycle of ${n} remote owners: p99 (p50 ${r2(c.p50Ms)})`, value: r2(c.p99Ms), unit: 'ms', goal: '<= 1', pass: c.p99Ms <= 1, note: `${c.samples} cycles, max ${r2(c.maxMs)} ms; a LOCK granted at once, same client: p50 ${r2(c.grantedP50Ms)}, p99 ${r2(c.grantedP99Ms)} ms` });
  }
  figures.push({ id: 'deadlock-pair-ratio', label: 'lock+unlock pair, detection on / off', value: r2(result.pairRatio), unit: 'x', goal: '<= 1.05', pass: result.pairRatio <= 1.05, note: `${Math.round(result.pairOnNs)} ns vs ${Math.round(result.pairOffNs)} ns` });
  figures.push({ id: 'deadlock-wait-cycle', label: 'hold / wait (looks) / hand-off / release, detection on vs off', value: r2(result.waitOnUs), unit: 'us', note: `off: ${r2(result.waitOffUs)} us` });
  return { result, figures };
}
