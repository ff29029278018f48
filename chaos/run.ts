// run.ts - `npm run chaos -- --minutes N --seed S`: the fault-injection
// suite (docs/reliability.md). Builds a simulated estate per round
// (cluster.ts), runs the workload on every path users have, injects faults
// (nemesis.ts, adversary.ts) and has the checker (checker.ts) judge the
// histories, the store's log and the servers' own records.
//
//   --minutes N        total duration (decimals allowed; default 2)
//   --seed S           the run's seed (default: random, printed); the same
//                      seed makes the same choices (processes still race)
//   --config C         table | port | oslock | pair | wpair | all (default all:
//                      the rounds cycle through the five; wpair - the pair
//                      with an etcd witness - only where /usr/bin/etcd exists)
//   --rounds K         rounds (default: one per configuration, at least one per 5 minutes)
//   --faults a,b       only these nemesis faults / adversaries (default all)
//   --no-faults        no faults at all (a baseline)
//   --cold N           cold keys of the library clients (default 50; 0: every lock on the 3 hot keys)
//   --store fenced|ignore   the store's fencing (ignore: the checker's teeth test)
//   --inject FAULT     a deliberate service fault (JDLS_FAULT_INJECTION; teeth test)
//   --misroute         half the remote clients go to an unrelated second service (teeth test)
//   --witness-off      wpair's servers do not name the witness: a pair without
//                      one under wpair's faults must split (teeth test)
//   --dir D            the run directory (default a new one under $TMPDIR; kept with --keep or on failure)
//   --keep             keep the run directory
//   --json             print the report as JSON
// Exit status: 0 when every property has 0 violations, 1 when any has, 2 on a usage or set-up error.
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Cluster, netnsUnavailable, etcdUnavailable, sleep, CHAOS_SHIM } from './cluster.js';
import type { ConfigName } from './cluster-types.js';
import { nextFault, type Rng } from './nemesis.js';
import { ADVERSARIES } from './adversary.js';
import { checkRun, formatReport, type RunOutcome } from './checker.js';
import { FAULT_LOG } from './faults.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const CONFIGS: ConfigName[] = ['table', 'port', 'oslock', 'pair', 'wpair'];
/** --config all: every configuration this machine can run (wpair needs etcd; left out with a line saying why). */
function allConfigs(): ConfigName[] {
  const why = etcdUnavailable();
  if (!why) return CONFIGS;
  process.stderr.write(`chaos: configuration wpair skipped: ${why}\n`);
  return CONFIGS.filter((c) => c !== 'wpair');
}

export interface ChaosArgs {
  minutes: number;
  seed: number;
  configs: ConfigName[];
  rounds: number;
  faults?: Set<string>;
  noFaults: boolean;
  store: 'fenced' | 'ignore';
  inject?: string;
  misroute: boolean;
  witnessOff: boolean;
  dir?: string;
  keep: boolean;
  json: boolean;
  cold: number;
}

function usage(msg: string): never {
  process.stderr.write(`chaos: ${msg}\nusage: npm run chaos -- [--minutes N] [--seed S] [--config table|port|oslock|pair|wpair|all] [--rounds K] [--faults a,b] [--no-faults] [--cold N] [--store fenced|ignore] [--inject FAULT] [--misroute] [--witness-off] [--dir D] [--keep] [--json]\n`);
  process.exit(2);
}

export function parseArgs(argv: string[]): ChaosArgs {
  let configs: ConfigName[] | undefined;
  const a: ChaosArgs = { minutes: 2, seed: Math.floor(Math.random() * 2 ** 31), configs: [], rounds: 0, noFaults: false, store: 'fenced', misroute: false, witnessOff: false, keep: false, json: false, cold: 50 };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i] ?? '';
    const value = (): string => {
      const v = argv[++i];
      if (v === undefined) usage(`${flag} needs a value`);
      return v;
    };
    switch (flag) {
      case '--minutes': a.minutes = Number(value()); if (!(a.minutes > 0)) usage('--minutes must be > 0'); break;
      case '--seed': a.seed = Number(value()); if (!Number.isSafeInteger(a.seed) || a.seed < 0) usage('--seed must be a non-negative integer'); break;
      case '--config': {
        const v = value();
        if (v === 'all') configs = undefined;
        else {
          const list = v.split(',') as ConfigName[];
          for (const c of list) if (!CONFIGS.includes(c)) usage(`unknown configuration ${c} (${CONFIGS.join(', ')}, all)`);
          const why = list.includes('wpair') ? etcdUnavailable() : undefined;
          if (why) usage(`configuration wpair needs etcd: ${why}`);
          configs = list;
        }
        break;
      }
      case '--rounds': a.rounds = Number(value()); if (!Number.isSafeInteger(a.rounds) || a.rounds < 1) usage('--rounds must be a positive integer'); break;
      case '--faults': a.faults = new Set(value().split(',')); break;
      case '--no-faults': a.noFaults = true; break;
      case '--cold': a.cold = Number(value()); if (!Number.isSafeInteger(a.cold) || a.cold < 0) usage('--cold must be a non-negative integer'); break;
      case '--store': { const v = value(); if (v !== 'fenced' && v !== 'ignore') usage('--store fenced|ignore'); a.store = v; break; }
      case '--inject': a.inject = value(); break;
      case '--misroute': a.misroute = true; break;
      case '--witness-off': a.witnessOff = true; break;
      case '--dir': a.dir = value(); break;
      case '--keep': a.keep = true; break;
      case '--json': a.json = true; break;
      case '-h': case '--help': usage('the fault-injection suite (docs/reliability.md)');
      // eslint-disable-next-line no-fallthrough
      default: usage(`unknown option ${flag}`);
    }
  }
  a.configs = configs ?? allConfigs();
  if (a.rounds === 0) a.rounds = Math.max(a.configs.length, Math.ceil(a.minutes / 5));
  return a;
}

/** xorshift32: the same seed, the same choices. */
export function rng(seed: number): Rng {
  let x = (seed >>> 0) ^ 0x9e3779b9 || 1;
  return () => {
    x ^= x << 13; x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5; x >>>= 0;
    return x / 0x100000000;
  };
}

function startStore(dir: string, mode: 'fenced' | 'ignore'): Promise<ChildProcess> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [path.join(here, 'store.js'), dir, mode], { stdio: ['ignore', 'pipe', 'inherit'] });
    const timer = setTimeout(() => reject(new Error('the store did not start within 10 s')), 10_000);
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      if (d.includes('READY')) {
        clearTimeout(timer);
        resolve(child);
      }
    });
    child.on('exit', (code) => reject(new Error(`the store exited (${code})`)));
  });
}

function sqliteValue(db: string): number | undefined {
  try {
    const out = execFileSync('sqlite3', [db, 'SELECT n FROM counter;'], { encoding: 'utf8', timeout: 10_000, env: { PATH: process.env['PATH'] ?? '' } });
    const n = Number(out.trim());
    return Number.isFinite(n) ? n : undefined;
  } catch {
    return undefined;
  }
}

export async function runChaos(a: ChaosArgs, log: (line: string) => void): Promise<{ ok: boolean; report: string; dir: string }> {
  const why = netnsUnavailable();
  if (why) throw new Error(why);
  const dir = a.dir ?? fs.mkdtempSync(path.join(os.tmpdir(), 'jdls-chaos-'));
  fs.mkdirSync(dir, { recursive: true });
  // Clients of every host and user reach the run directory (the shim's
  // programs run as root here, but the broker checks what it opens).
  fs.chmodSync(dir, 0o755);
  fs.writeFileSync(path.join(dir, 'run.json'), JSON.stringify({ seed: a.seed, minutes: a.minutes, configs: a.configs, rounds: a.rounds, store: a.store, inject: a.inject, misroute: a.misroute, started: new Date().toISOString() }));
  const random = rng(a.seed);
  const outcome: RunOutcome = { hung: [], leftovers: [], sqlite: [], adversary: [] };
  const store = await startStore(dir, a.store);
  let current: Cluster | undefined;
  let interrupted = false;
  const onSignal = (sig: NodeJS.Signals): void => {
    interrupted = true;
    log(`chaos: ${sig}: stopping`);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  const started = Date.now();
  const totalMs = a.minutes * 60_000;
  if (!fs.existsSync(CHAOS_SHIM)) log(`chaos: ${CHAOS_SHIM} is missing: the shim's fcntl clients are left out`);
  try {
    for (let round = 0; round < a.rounds && !interrupted; round++) {
      const config = a.configs[round % a.configs.length] ?? 'table';
      const roundEnd = started + (totalMs * (round + 1)) / a.rounds;
      log(`chaos: round ${round} (${config}), ${Math.round((roundEnd - Date.now()) / 1000)} s`);
      current = await Cluster.create({
        // wpair: TIMEOUT 4 s > the witness lease (2 s) + etcd's expiry tick:
        // a failover's PROMOTE gets its verdict within the client's TIMEOUT.
        runDir: dir, config, round, seed: a.seed, keepaliveMs: 1500, clientTimeoutS: config === 'wpair' ? 4 : 3, coldKeys: a.cold, log,
        serviceEnv: a.inject ? { JDLS_FAULT_INJECTION: a.inject } : {}, misroute: a.misroute, witnessOff: a.witnessOff,
      });
      const c = current;
      c.startClients();
      await sleep(1000);
      while (Date.now() < roundEnd - 1000 && !interrupted) {
        if (!a.noFaults) {
          const advNames = Object.keys(ADVERSARIES).filter((n) => (!a.faults || a.faults.has(n)) && ADVERSARIES[n]?.configs.includes(config));
          if (advNames.length > 0 && random() < 0.15) {
            const name = advNames[Math.floor(random() * advNames.length)] ?? '';
            try {
              const r = await ADVERSARIES[name]?.run(c, random);
              for (const v of r?.violations ?? []) outcome.adversary.push(v);
            } catch (e) {
              log(`adversary ${name} failed to run: ${(e as Error).message}`);
            }
          } else {
            const f = nextFault(c, random, a.faults);
            if (f) {
              try {
                await f.run(c, random);
              } catch (e) {
                log(`fault ${f.name} failed to run: ${(e as Error).message}`);
              }
            }
          }
        }
        await sleep(300 + Math.floor(random() * 1500));
      }
      const hung = await c.stopClients(30_000);
      outcome.hung.push(...hung);
      if (fs.existsSync(c.sqliteDb)) {
        const v = sqliteValue(c.sqliteDb);
        if (v !== undefined) outcome.sqlite?.push({ key: `sqlite:${c.prefix}counter`, value: v });
      }
      outcome.leftovers.push(...(await c.leftoverLocks(15_000)));
      outcome.leftovers.push(...(await c.teardown()));
      outcome.leftovers.push(...c.remaining());
      current = undefined;
    }
  } finally {
    if (current) outcome.leftovers.push(...(await current.teardown()));
    store.kill('SIGTERM');
    await new Promise((r) => store.once('exit', r));
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
  fs.writeFileSync(path.join(dir, 'outcome.json'), JSON.stringify(outcome, null, 1));
  const report = checkRun(dir);
  const total = Object.values(report.perProperty).reduce((s, n) => s + n, 0);
  const text = a.json ? JSON.stringify({ seed: a.seed, configs: a.configs, minutes: a.minutes, dir, ...report }, null, 1) : formatReport(report, a.seed);
  const ok = total === 0 && !interrupted;
  if (ok && !a.keep && !a.dir) fs.rmSync(dir, { recursive: true, force: true });
  return { ok, report: text, dir };
}

async function main(): Promise<void> {
  const a = parseArgs(process.argv.slice(2));
  const t0 = Date.now();
  process.stdout.write(`chaos: seed ${a.seed}, ${a.minutes} min, configurations ${a.configs.join(', ')}, ${a.rounds} round(s)\n`);
  try {
    const r = await runChaos(a, (l) => process.stderr.write(`${l}\n`));
    process.stdout.write(`${r.report}\n`);
    process.stdout.write(`chaos: ${((Date.now() - t0) / 1000).toFixed(0)} s; ${r.ok ? 'passed' : `FAILED - replay with --seed ${a.seed}; run directory ${r.dir}`}\n`);
    process.exitCode = r.ok ? 0 : 1;
  } catch (e) {
    process.stderr.write(`chaos: ${(e as Error).message}\n`);
    process.exitCode = 2;
  }
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) void main();
void FAULT_LOG;
