// pair.ts - scenario: the cost of one uncontended lock+unlock pair, three
// ways, in interleaved rounds (C in-process, TypeScript through the addon,
// fcntl F_SETLK on one byte), so that drift of the machine (frequency,
// neighbours) touches all three alike. Each figure is the median over rounds.
import path from 'node:path';
import { fileId, makeOwner, type LockTable } from '../src/locks/table.js';
import { native } from '../src/native.js';
import { TempInstallation, cbench, median, BenchError, type Figure } from './lib.js';

export interface PairResult {
  rounds: number;
  cIterations: number;
  tsIterations: number;
  fcntlIterations: number;
  cNs: number[];
  tsNs: number[];
  fcntlNs: number[];
  cMedianNs: number;
  tsMedianNs: number;
  fcntlMedianNs: number;
  cRatio: number;
  tsRatio: number;
  breakdown: Breakdown;
}

/** Where the pairs' time goes (one run after the rounds; see docs/benchmarks.md). */
export interface Breakdown {
  /** cbench parts: the pieces of a C pair, each timed in a loop of its own */
  c: { hashNs: number; robustMutexPairNs: number; plainMutexPairNs: number; pairNs: number; relockNs: number; unlockNotHeldNs: number };
  /** the addon's tryLock+unlock called directly, without LockTable around it */
  addonPairNs: number;
  /** two calls of a trivial addon function (nextPrime(2)): the N-API floor */
  twoTrivialCallsNs: number;
}

export interface PairOptions {
  rounds?: number;
  cIterations?: number;
  tsIterations?: number;
  fcntlIterations?: number;
}

/** One TypeScript round: ns per tryLock+unlock, owner, file and key prebuilt. */
function tsRound(table: LockTable, iterations: number): number {
  const owner = makeOwner();
  const file = fileId(4242, 8); // not the C pair's (inode, dev)
  const key = Buffer.from('BENCH*TS-PAIR');
  const once = (): void => {
    const r = table.tryLock(owner, file, key, 'write');
    if (!r.granted) throw new BenchError('TypeScript pair: tryLock was not granted');
    if (!table.unlock(owner, file, key)) throw new BenchError('TypeScript pair: unlock found nothing to release');
  };
  // Warm-up: let V8 optimise the call path before the clock starts.
  for (let i = 0; i < Math.ceil(iterations / 10); i++) once();
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < iterations; i++) once();
  const t1 = process.hrtime.bigint();
  return Number(t1 - t0) / iterations;
}

function loopNs(iterations: number, once: () => void): number {
  for (let i = 0; i < Math.ceil(iterations / 10); i++) once();
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < iterations; i++) once();
  return Number(process.hrtime.bigint() - t0) / iterations;
}

function breakdown(shmPath: string, dir: string, iterations: number): Breakdown {
  const c = cbench<Breakdown['c']>(['parts', shmPath, String(iterations * 2)], 'C pair breakdown');
  const raw = new native.Table(shmPath, false, 0, 0, 0, dir);
  try {
    const owner = makeOwner().packed;
    const file = fileId(4242, 9).packed;
    const key = Buffer.from('BENCH*TS-RAW');
    const addonPairNs = median([0, 1, 2].map(() => loopNs(iterations, () => {
      if (raw.tryLock(owner, file, key, native.constants.MODE_WRITE, native.constants.REQ_NOWAIT) !== 0) throw new BenchError('addon pair: not granted');
      if (raw.unlock(owner, file, key) !== 0) throw new BenchError('addon pair: not held');
    })));
    const twoTrivialCallsNs = median([0, 1, 2].map(() => loopNs(iterations, () => {
      native.nextPrime(2);
      native.nextPrime(2);
    })));
    return { c, addonPairNs, twoTrivialCallsNs };
  } finally {
    raw.close();
  }
}

export function runPair(opts: PairOptions = {}): { result: PairResult; figures: Figure[] } {
  const rounds = opts.rounds ?? 7;
  const cIterations = opts.cIterations ?? 300_000;
  const tsIterations = opts.tsIterations ?? 150_000;
  const fcntlIterations = opts.fcntlIterations ?? 60_000;
  const inst = new TempInstallation('pair');
  try {
    const table = inst.create();
    const lockFile = path.join(inst.dir, 'fcntl.lock');
    const cNs: number[] = [];
    const tsNs: number[] = [];
    const fcntlNs: number[] = [];
    for (let r = 0; r < rounds; r++) {
      cNs.push(cbench<{ nsPerPair: number }>(['pair', inst.shmPath, String(cIterations)], 'C pair').nsPerPair);
      tsNs.push(tsRound(table, tsIterations));
      fcntlNs.push(cbench<{ nsPerPair: number }>(['fcntl', lockFile, String(fcntlIterations)], 'fcntl pair').nsPerPair);
    }
    const parts = breakdown(inst.shmPath, inst.dir, tsIterations);
    if (table.check() !== 0) throw new BenchError('pair: the table is inconsistent after the rounds');
    const cMedianNs = median(cNs);
    const tsMedianNs = median(tsNs);
    const fcntlMedianNs = median(fcntlNs);
    const result: PairResult = {
      rounds, cIterations, tsIterations, fcntlIterations, cNs, tsNs, fcntlNs,
      cMedianNs, tsMedianNs, fcntlMedianNs,
      cRatio: cMedianNs / fcntlMedianNs,
      tsRatio: tsMedianNs / fcntlMedianNs,
      breakdown: parts,
    };
    const b = parts.c;
    const figures: Figure[] = [
      { id: 'cPair', label: 'C lock+unlock pair (in-process)', value: round1(cMedianNs), unit: 'ns' },
      { id: 'tsPair', label: 'TypeScript tryLock+unlock pair (addon)', value: round1(tsMedianNs), unit: 'ns' },
      { id: 'fcntlPair', label: 'fcntl F_SETLK lock+unlock pair (C)', value: round1(fcntlMedianNs), unit: 'ns' },
      { id: 'cRatio', label: 'C pair / fcntl pair', value: round3(result.cRatio), unit: 'x', goal: '<= 0.10', pass: result.cRatio <= 0.1 },
      { id: 'tsRatio', label: 'TypeScript pair / fcntl pair', value: round3(result.tsRatio), unit: 'x', goal: '<= 0.30', pass: result.tsRatio <= 0.3 },
      { id: 'cParts', label: '  C pair: 2 x jdls_hash + 2 x robust mutex', value: round1(2 * b.hashNs + 2 * b.robustMutexPairNs), unit: 'ns', note: `hash ${round1(b.hashNs)}, robust mutex lock+unlock ${round1(b.robustMutexPairNs)} (plain ${round1(b.plainMutexPairNs)})` },
      { id: 'addonPair', label: '  TS pair without LockTable (addon direct)', value: round1(parts.addonPairNs), unit: 'ns', note: `2 trivial addon calls: ${round1(parts.twoTrivialCallsNs)} ns` },
    ];
    return { result, figures };
  } finally {
    inst.dispose();
  }
}

const round1 = (x: number): number => Math.round(x * 10) / 10;
const round3 = (x: number): number => Math.round(x * 1000) / 1000;
