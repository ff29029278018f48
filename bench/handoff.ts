// handoff.ts - scenario: how long from a release in one process to the grant
// of the waiter asleep in another (two C processes, see cmd_handoff in
// cbench.c for the protocol that makes sure the waiter is really asleep).
import { TempInstallation, cbench, type Figure } from './lib.js';

export interface HandoffResult {
  rounds: number;
  p50Ns: number;
  p90Ns: number;
  p99Ns: number;
  minNs: number;
  maxNs: number;
  meanNs: number;
}

export function runHandoff(rounds = 2000): { result: HandoffResult; figures: Figure[] } {
  const inst = new TempInstallation('handoff');
  try {
    const table = inst.create();
    const result = cbench<HandoffResult>(['handoff', inst.shmPath, String(rounds)], 'hand-off');
    // The last holder (either process) may have left its entry: both sides
    // have exited, so a tidy must free it and nothing else may be wrong.
    table.tidy();
    const p50 = result.p50Ns / 1000;
    const figures: Figure[] = [
      { id: 'handoffP50', label: `hand-off release -> grant, p50 (${result.rounds} rounds)`, value: us(result.p50Ns), unit: 'us', goal: '<= 30', pass: p50 <= 30 },
      { id: 'handoffP99', label: 'hand-off release -> grant, p99', value: us(result.p99Ns), unit: 'us' },
      { id: 'handoffMax', label: 'hand-off release -> grant, max', value: us(result.maxNs), unit: 'us' },
    ];
    return { result, figures };
  } finally {
    inst.dispose();
  }
}

const us = (nsValue: number): number => Math.round(nsValue / 100) / 10;
