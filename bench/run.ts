// run.ts - `npm run bench`: runs every scenario once, prints one table of
// figures with their goals and PASS/FAIL, and writes bench/results/latest.json.
//
// A missed goal is a measurement, not a failure: the exit code is 0. A
// scenario that crashes (a child fails, a result is missing, the table is
// inconsistent) makes the exit code 1; the other scenarios still run.
import fs from 'node:fs';
import path from 'node:path';
import { packageRoot } from '../src/native.js';
import { machine, disposeAll, cbenchPath, type Figure } from './lib.js';
import { runPair } from './pair.js';
import { runHandoff } from './handoff.js';
import { runBigTable } from './big-table.js';
import { runOsLockPair } from './oslock.js';
import { runRemote, runAuth } from './remote.js';
import { runShim } from './shim.js';
import { runDeadlock } from './deadlock.js';
import { runInfo } from './info.js';
import { runFailover } from './failover.js';

interface ScenarioOutcome {
  name: string;
  ms: number;
  ok: boolean;
  error?: string;
  result?: unknown;
  figures: Figure[];
}

// Tables and temp directories go even on Ctrl-C (the big one is ~600 MB of
// /dev/shm). Children are ours: spawnSync kills its own on timeout, and the
// filler exits when our end of its stdin closes with us.
process.on('exit', disposeAll);
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.on(sig, () => {
    disposeAll();
    process.exit(130);
  });
}

async function scenario(name: string, fn: () => Promise<{ result: unknown; figures: Figure[] }> | { result: unknown; figures: Figure[] }): Promise<ScenarioOutcome> {
  const t0 = Date.now();
  process.stderr.write(`bench: ${name} ...\n`);
  try {
    const { result, figures } = await fn();
    return { name, ms: Date.now() - t0, ok: true, result, figures };
  } catch (e) {
    const error = e instanceof Error ? `${e.name}: ${e.message}` : String(e);
    process.stderr.write(`bench: ${name} FAILED: ${error}\n`);
    return { name, ms: Date.now() - t0, ok: false, error, figures: [] };
  }
}

function table(rows: string[][]): string {
  const widths = rows[0]?.map((_, c) => Math.max(...rows.map((r) => (r[c] ?? '').length))) ?? [];
  const line = (r: string[]): string => r.map((cell, c) => (c === 1 ? cell.padStart(widths[c] ?? 0) : cell.padEnd(widths[c] ?? 0))).join('  ').trimEnd();
  const head = rows[0] ? [line(rows[0]), widths.map((w) => '-'.repeat(w)).join('  ')] : [];
  return [...head, ...rows.slice(1).map(line)].join('\n');
}

if (!fs.existsSync(cbenchPath)) {
  process.stderr.write(`bench: ${cbenchPath} is missing: run npm run build:native first\n`);
  process.exit(1);
}

const m = machine();
const started = Date.now();
const outcomes: ScenarioOutcome[] = [];
outcomes.push(await scenario('pair (C, TypeScript, fcntl; interleaved rounds)', () => runPair()));
outcomes.push(await scenario('OS record lock pair vs fcntl (interleaved rounds)', () => runOsLockPair()));
outcomes.push(await scenario('hand-off between processes', () => runHandoff()));
outcomes.push(await scenario('big table -s1000000,50', () => runBigTable()));
outcomes.push(await scenario('remote locks over TCP vs echo (interleaved rounds), hand-off, server memory', () => runRemote()));
outcomes.push(await scenario('remote pair with the shared secret off / on / on + TLS (interleaved rounds), handshake cost', () => runAuth()));
outcomes.push(await scenario('deadlock detection: the answer to a cycle of 2/4/8 remote owners, the pair with detection on/off', () => runDeadlock()));
outcomes.push(await scenario('info records: the direct pair with a record on / JDLS_INFO=0 (interleaved rounds), one record write', () => runInfo()));
outcomes.push(await scenario('the shim: C API pair, direct fcntl pair, non-lock fcntl, redirected fcntl pair, resilient (SERVER2) pair vs single-server pair (interleaved rounds)', () => runShim()));
outcomes.push(await scenario('the resilient pair with its witness: library pair SERVER2 / SERVER (interleaved rounds), 20 failovers after kill -9 of the primary', () => runFailover()));
const totalMs = Date.now() - started;

const figures = outcomes.flatMap((o) => o.figures);
const rows: string[][] = [['figure', 'value', 'unit', 'goal', 'result', 'note']];
for (const f of figures) {
  rows.push([f.label, String(f.value), f.unit, f.goal ?? '', f.pass === undefined ? '' : f.pass ? 'PASS' : 'FAIL', f.note ?? '']);
}
for (const o of outcomes.filter((x) => !x.ok)) rows.push([`${o.name}`, '', '', '', 'CRASH', o.error ?? '']);

const out: string[] = [];
out.push(`jdls bench - ${m.date}`);
out.push(`machine: ${m.nproc} CPUs, ${m.cpu}, ${m.memTotalMiB} MiB, Linux ${m.kernel}, Node ${m.node}`);
out.push('');
out.push(table(rows));
out.push('');
const goals = figures.filter((f) => f.pass !== undefined);
out.push(`goals: ${goals.filter((f) => f.pass).length} of ${goals.length} met; scenarios: ${outcomes.filter((o) => o.ok).length} of ${outcomes.length} ran; ${(totalMs / 1000).toFixed(1)} s`);
process.stdout.write(out.join('\n') + '\n');

const resultsDir = path.join(packageRoot, 'bench', 'results');
fs.mkdirSync(resultsDir, { recursive: true });
const json = { machine: m, totalMs, outcomes, figures };
fs.writeFileSync(path.join(resultsDir, 'latest.json'), JSON.stringify(json, null, 2) + '\n');
process.stdout.write(`results: ${path.relative(process.cwd(), path.join(resultsDir, 'latest.json')) || 'bench/results/latest.json'}\n`);

process.exitCode = outcomes.every((o) => o.ok) ? 0 : 1;
