// oslock.ts - scenario: the cost of one uncontended OS record lock pair
// through the OS-lock mechanism (OsLocks.tryLock + unlock, same owner, file
// and key: two F_OFD_SETLK calls plus the registry) against a raw fcntl
// F_SETLK lock+unlock pair in C (jdls-cbench fcntl), in interleaved rounds
// so that drift of the machine touches both alike. Each figure is the median
// over rounds. Goal: the mechanism's pair within 1.5x the raw pair.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { OsLocks } from '../src/locks/oslock.js';
import { openNativeOfd, OSL } from '../src/locks/ofd.js';
import { fileId, makeOwner } from '../src/locks/table.js';
import { cbench, median, BenchError, type Figure } from './lib.js';

export interface OsLockPairResult {
  rounds: number;
  tsIterations: number;
  fcntlIterations: number;
  tsNs: number[];
  fcntlNs: number[];
  tsMedianNs: number;
  fcntlMedianNs: number;
  ratio: number;
  /** two Ofd.setlk calls from JS without OsLocks around them */
  addonOfdPairNs: number;
}

export interface OsLockPairOptions {
  rounds?: number;
  tsIterations?: number;
  fcntlIterations?: number;
}

function loopNs(iterations: number, once: () => void): number {
  for (let i = 0; i < Math.ceil(iterations / 10); i++) once(); // let V8 optimise first
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < iterations; i++) once();
  return Number(process.hrtime.bigint() - t0) / iterations;
}

export function runOsLockPair(opts: OsLockPairOptions = {}): { result: OsLockPairResult; figures: Figure[] } {
  const rounds = opts.rounds ?? 7;
  const tsIterations = opts.tsIterations ?? 60_000;
  const fcntlIterations = opts.fcntlIterations ?? 60_000;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'jdls-bench-oslock-'));
  const m = OsLocks.open({ lockDir: path.join(dir, 'jbase') });
  try {
    const owner = makeOwner();
    const file = fileId(4242, -1);
    const key = Buffer.from('BENCH*OS-PAIR');
    const once = (): void => {
      if (!m.tryLock(owner, file, key, 'write').granted) throw new BenchError('OS pair: tryLock was not granted');
      if (!m.unlock(owner, file, key)) throw new BenchError('OS pair: unlock found nothing to release');
    };
    const fcntlFile = path.join(dir, 'fcntl.lock');
    const tsNs: number[] = [];
    const fcntlNs: number[] = [];
    for (let r = 0; r < rounds; r++) {
      tsNs.push(loopNs(tsIterations, once));
      fcntlNs.push(cbench<{ nsPerPair: number }>(['fcntl', fcntlFile, String(fcntlIterations)], 'fcntl pair').nsPerPair);
    }
    if (m.rows().length !== 0) throw new BenchError('OS pair: locks left in the registry after the rounds');
    // Breakdown: the same two system calls through the addon alone.
    const ofd = openNativeOfd(path.join(dir, 'raw.lock'), true);
    let addonOfdPairNs: number;
    try {
      addonOfdPairNs = median([0, 1, 2].map(() => loopNs(tsIterations, () => {
        if (ofd.setlk(12345n, 1n, OSL.WRITE) !== OSL.OK) throw new BenchError('addon OFD pair: not granted');
        if (ofd.setlk(12345n, 1n, OSL.UNLOCK) !== OSL.OK) throw new BenchError('addon OFD pair: unlock failed');
      })));
    } finally {
      ofd.close();
    }
    const tsMedianNs = median(tsNs);
    const fcntlMedianNs = median(fcntlNs);
    const ratio = tsMedianNs / fcntlMedianNs;
    const result: OsLockPairResult = { rounds, tsIterations, fcntlIterations, tsNs, fcntlNs, tsMedianNs, fcntlMedianNs, ratio, addonOfdPairNs };
    const figures: Figure[] = [
      { id: 'osPair', label: 'OS record lock pair (OsLocks tryLock+unlock)', value: round1(tsMedianNs), unit: 'ns' },
      { id: 'osFcntlPair', label: 'fcntl F_SETLK lock+unlock pair (C, same rounds)', value: round1(fcntlMedianNs), unit: 'ns' },
      { id: 'osRatio', label: 'OS record lock pair / fcntl pair', value: round3(ratio), unit: 'x', goal: '<= 1.5', pass: ratio <= 1.5 },
      { id: 'osAddonPair', label: '  OFD pair from JS without OsLocks (addon direct)', value: round1(addonOfdPairNs), unit: 'ns' },
    ];
    return { result, figures };
  } finally {
    m.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

const round1 = (x: number): number => Math.round(x * 10) / 10;
const round3 = (x: number): number => Math.round(x * 1000) / 1000;
