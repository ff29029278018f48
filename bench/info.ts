// info.ts - scenario: the cost of info records (docs/info-records.md) to a
// Node runtime locking directly in the table.
//
// Figures:
//   - the uncontended lock+unlock pair (TypeScript, LockTable) of a table
//     opened with an info record vs the same with records off (as
//     JDLS_INFO=0), interleaved rounds in one process: on / off, the
//     fastest round of each (goal <= 1.05: a lock or an unlock costs the
//     record a flag; the record is rewritten at most every INFO_FLUSH_MS).
//     The fastest round, not the median: on a loaded host (other builds,
//     other benches) the median of a round moves by tens of percent between
//     runs, the fastest one is the least disturbed; both are reported;
//   - the same with 1000 other locks held (a record that is dear to build:
//     the writer spaces its rewrites so they take ~2 % of the time);
//   - one record write (table scan of this process's rows, JSON, temp file,
//     rename) with 1 and with 1000 locks held: the cost paid at most 5 times
//     a second (no goal: reported).
import { fileId, makeOwner, LockTable } from '../src/locks/table.js';
import { ensureInfoDir } from '../src/info/tidy.js';
import { TempInstallation, median, BenchError, type Figure } from './lib.js';

function pairNs(table: LockTable, iterations: number): number {
  const owner = makeOwner({ port: 7 });
  const file = fileId(4242, 21);
  const key = Buffer.from('BENCH*INFO-PAIR');
  const once = (): void => {
    if (!table.tryLock(owner, file, key, 'write').granted) throw new BenchError('pair: not granted');
    if (!table.unlock(owner, file, key)) throw new BenchError('pair: not held');
  };
  for (let i = 0; i < Math.ceil(iterations / 10); i++) once();
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < iterations; i++) once();
  return Number(process.hrtime.bigint() - t0) / iterations;
}

/** us per record write with `held` locks of this process in the table. */
function writeUs(table: LockTable, held: number, writes: number): number {
  const rec = table.info;
  if (!rec) throw new BenchError('no recorder');
  const owner = makeOwner({ port: 7 });
  const file = fileId(4242, 22);
  for (let i = 0; i < held; i++) if (!table.tryLock(owner, file, `H${i}`, 'write').granted) throw new BenchError('held: not granted');
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < writes; i++) rec.idle();
  const us = Number(process.hrtime.bigint() - t0) / writes / 1000;
  table.unlockAll(owner, file);
  return us;
}

/** The pair again, with `held` other locks of this process in the table (a dear record: the writer's bound applies). */
function heldPairNs(table: LockTable, held: number, iterations: number): number {
  const owner = makeOwner({ port: 7 });
  const file = fileId(4242, 23);
  for (let i = 0; i < held; i++) if (!table.tryLock(owner, file, `P${i}`, 'write').granted) throw new BenchError('held: not granted');
  try {
    return pairNs(table, iterations);
  } finally {
    table.unlockAll(owner, file);
  }
}

export interface InfoBenchResult {
  pairOnMedianNs: number;
  pairOffMedianNs: number;
  pairOnNs: number;
  pairOffNs: number;
  pairRatio: number;
  writesDuringOn: number;
  write1Us: number;
  write1000Us: number;
  held1000OnNs: number;
  held1000OffNs: number;
  held1000Ratio: number;
}

export function runInfo(opts: { rounds?: number; pairIterations?: number } = {}): { result: InfoBenchResult; figures: Figure[] } {
  const rounds = opts.rounds ?? 11;
  const pairIterations = opts.pairIterations ?? 200_000;
  const inst = new TempInstallation('info');
  let on: LockTable | undefined;
  let off: LockTable | undefined;
  let big: LockTable | undefined;
  const pairOn: number[] = [];
  const pairOff: number[] = [];
  let result: InfoBenchResult;
  try {
    inst.create({ locks: 20_000 });
    ensureInfoDir(inst.dir);
    on = LockTable.open({ releaseDir: inst.dir, info: { port: 7, program: 'bench-info', enabled: true } });
    off = LockTable.open({ releaseDir: inst.dir, info: { port: 8, program: 'bench-info', enabled: false } });
    const before = writesOf(on);
    for (let r = 0; r < rounds; r++) {
      for (const which of r % 2 ? ['on', 'off'] : ['off', 'on']) {
        if (which === 'on') pairOn.push(pairNs(on, pairIterations));
        else pairOff.push(pairNs(off, pairIterations));
      }
    }
    const writesDuringOn = writesOf(on) - before;
    const heldOn: number[] = [];
    const heldOff: number[] = [];
    for (let r = 0; r < 5; r++) {
      for (const which of r % 2 ? ['on', 'off'] : ['off', 'on']) {
        if (which === 'on') heldOn.push(heldPairNs(on, 1000, pairIterations * 5));
        else heldOff.push(heldPairNs(off, 1000, pairIterations * 5));
      }
    }
    big = on;
    result = {
      held1000OnNs: Math.min(...heldOn), held1000OffNs: Math.min(...heldOff), held1000Ratio: Math.min(...heldOn) / Math.min(...heldOff),
      pairOnMedianNs: median(pairOn), pairOffMedianNs: median(pairOff),
      pairOnNs: Math.min(...pairOn), pairOffNs: Math.min(...pairOff), pairRatio: Math.min(...pairOn) / Math.min(...pairOff), writesDuringOn,
      write1Us: writeUs(big, 1, 200), write1000Us: writeUs(big, 1000, 50),
    };
  } finally {
    on?.close();
    off?.close();
    inst.dispose();
  }
  const r2 = (x: number): number => Math.round(x * 1000) / 1000;
  const figures: Figure[] = [
    { id: 'info-pair-ratio', label: 'direct lock+unlock pair, info record on / JDLS_INFO=0', value: r2(result.pairRatio), unit: 'x', goal: '<= 1.05', pass: result.pairRatio <= 1.05, note: `fastest rounds ${Math.round(result.pairOnNs)} ns vs ${Math.round(result.pairOffNs)} ns (medians ${Math.round(result.pairOnMedianNs)} vs ${Math.round(result.pairOffMedianNs)}); ${result.writesDuringOn} record writes during the "on" rounds` },
    { id: 'info-pair-held-ratio', label: 'the same pair with 1000 other locks held (records dear to write), on / off', value: r2(result.held1000Ratio), unit: 'x', goal: '<= 1.05', pass: result.held1000Ratio <= 1.05, note: `${Math.round(result.held1000OnNs)} ns vs ${Math.round(result.held1000OffNs)} ns` },
    { id: 'info-write', label: 'one info record write (20000-lock table), 1 / 1000 locks held', value: r2(result.write1Us), unit: 'us', note: `1000 held: ${r2(result.write1000Us)} us; at most 5 writes a second` },
  ];
  return { result, figures };
}

function writesOf(t: LockTable): number {
  return t.info?.writes ?? 0;
}
