// shim-driver.ts - how the chaos suite starts its unmodified C workload
// (chaos/fixtures/chaos-shim.c, `jdls-chaosshim`) under the preload shim,
// and a small driver that keeps one logical client going across the
// incarnations its "exit holding" ops end.
//
// Owns: the program's path and argument list (shimCommand), the labels of
// incarnations ("<id>.<n>": every process incarnation writes its own
// history, chaos/history.ts), and runShimWorker: start incarnation after
// incarnation until the logical client has made maxOps operations or is
// told to stop. Does not own: the environment (the runner sets LD_PRELOAD
// to the shim and, for shim-remote, JDLS; shimEnv helps), the cluster's
// process bookkeeping (spawn is the caller's, so a runner can spawn in a
// namespace and track the pid).
//
// The runner may as well spawn `jdls-chaosshim` itself (shimCommand) and
// restart it as it restarts other clients: a nemesis that kill -9s a client
// must hit the C process, not this driver. The CLI form below is for people
// and tests:
//   node dist/chaos/workers/shim-driver.js '<json ShimWorkerSpec>'
// (environment inherited; SIGTERM and SIGUSR2 are passed on to the current
// incarnation; exit 0 when done).
import { spawn as nodeSpawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { buildDir } from '../../src/native.js';
import { shimPath } from '../../src/shim.js';
import { readHistory } from '../history.js';

export const CHAOS_SHIM = path.join(buildDir, 'jdls-chaosshim');

export interface ShimWorkerSpec {
  /** the logical client: incarnations are "<id>.<n>" */
  id: string;
  runDir: string;
  host: string;
  seed: number;
  /** the lock file: <JDLS_LOCKDIR>/jlock_<8 hex>_ffffffff for record locks through the shim */
  dataFile: string;
  /** keys 0..2 hot, 3..nkeys-1 cold */
  nkeys: number;
  /** operations over all incarnations (default: until stopped) */
  maxOps?: number;
  /** first incarnation number (default 1) */
  firstIncarnation?: number;
  /** the key family argument: "fcntl" (default) or "<prefix>fcntl", e.g. "r3.fcntl" -> keys "fcntl:r3.HOT0", "flock:r3.F", "bin:r3.HOT0" */
  family?: string;
}

/** The command of one incarnation (its own id and seed, so incarnations do not replay each other's choices). */
export function shimCommand(spec: ShimWorkerSpec, incarnation: number, maxOps?: number): { cmd: string; args: string[]; id: string } {
  const id = `${spec.id}.${incarnation}`;
  const seed = (BigInt(spec.seed) * 1000003n + BigInt(incarnation)) & 0xffffffffffffn;
  const args = [spec.runDir, id, seed.toString(), spec.host, spec.dataFile, String(spec.nkeys)];
  // maxOps 0: until SIGTERM
  if (maxOps !== undefined || spec.family !== undefined) args.push(String(maxOps ?? 0));
  if (spec.family !== undefined) args.push(spec.family);
  return { cmd: CHAOS_SHIM, args, id };
}

/** The environment of a shim client: the shim preloaded; JDLS only for shim-remote (jdls: the value; undefined removes it). */
export function shimEnv(base: NodeJS.ProcessEnv, jdls: string | undefined): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...base, LD_PRELOAD: shimPath() };
  if (jdls === undefined) delete env['JDLS'];
  else env['JDLS'] = jdls;
  return env;
}

/** Operations an incarnation made: the distinct op numbers it invoked. */
export function opsIn(historyFile: string): number {
  if (!fs.existsSync(historyFile)) return 0;
  const ops = new Set<number>();
  for (const e of readHistory(historyFile)) if (e.ev === 'invoke') ops.add(e.op);
  return ops.size;
}

export interface ShimRun {
  /** incarnation ids, in order */
  ids: string[];
  /** exit codes (null: killed by a signal), in order */
  codes: (number | null)[];
}

export interface DriverControl {
  /** ask the current incarnation to finish its op and exit, and start no more */
  stop(): void;
  /** pass a signal to the current incarnation */
  signal(sig: NodeJS.Signals): void;
  /** the current incarnation's pid */
  pid(): number | undefined;
  done: Promise<ShimRun>;
}

/**
 * Run incarnations until maxOps operations are made (or stop()). An
 * incarnation that ends before its share (an "exit holding" op, a kill, the
 * shim's exit 1 on a lost lock service) is followed by the next; one that
 * fails for good (status 2: usage, 3: history or store) ends the run.
 */
export function runShimWorker(
  spec: ShimWorkerSpec,
  opts: { env: NodeJS.ProcessEnv; spawn?: (cmd: string, args: string[], env: NodeJS.ProcessEnv) => ChildProcess },
): DriverControl {
  const spawnFn = opts.spawn ?? ((cmd, args, env) => nodeSpawn(cmd, args, { env, stdio: ['ignore', 'ignore', 'inherit'] }));
  let stopping = false;
  let child: ChildProcess | undefined;
  const run: ShimRun = { ids: [], codes: [] };
  const done = (async (): Promise<ShimRun> => {
    let made = 0;
    for (let n = spec.firstIncarnation ?? 1; !stopping; n++) {
      const left = spec.maxOps === undefined ? undefined : spec.maxOps - made;
      if (left !== undefined && left <= 0) break;
      const c = shimCommand(spec, n, left);
      const ch = spawnFn(c.cmd, c.args, opts.env);
      child = ch;
      run.ids.push(c.id);
      const code = await new Promise<number | null>((resolve) => {
        ch.once('error', () => resolve(127));
        ch.once('exit', (code) => resolve(code));
      });
      child = undefined;
      run.codes.push(code);
      made += opsIn(path.join(spec.runDir, 'hist', `${c.id}.jsonl`));
      // 2: usage, 3: its history or the store failed - restarting would
      // only fail again. 1 is the shim's own end when the lock service is
      // lost (a cut link, a killed lock server): the next incarnation goes on.
      if (code === 2 || code === 3 || code === 127) break;
    }
    return run;
  })();
  return {
    stop(): void {
      stopping = true;
      child?.kill('SIGTERM');
    },
    signal(sig: NodeJS.Signals): void {
      child?.kill(sig);
    },
    pid: () => child?.pid,
    done,
  };
}

async function main(): Promise<void> {
  const arg = process.argv[2];
  if (!arg) {
    process.stderr.write("usage: shim-driver '<json {id, runDir, host, seed, dataFile, nkeys, maxOps?}>'\n");
    process.exit(2);
  }
  const spec = JSON.parse(arg) as ShimWorkerSpec;
  const ctl = runShimWorker(spec, { env: process.env });
  process.on('SIGTERM', () => ctl.stop());
  process.on('SIGUSR2', () => ctl.signal('SIGUSR2'));
  const r = await ctl.done;
  const bad = r.codes.find((c) => c !== null && c !== 0);
  process.exit(bad ?? 0);
}

if (process.argv[1] && path.resolve(process.argv[1]) === path.resolve(new URL(import.meta.url).pathname)) void main();
