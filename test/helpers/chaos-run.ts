// chaos-run.ts - run `npm run chaos` (dist/chaos/run.js) from a test, as a
// child process in a test directory, and clean up whatever happens: the
// runner tears its rounds down itself; if it cannot (killed, timed out),
// every process naming the test directory is killed by pid
// (installations.ts) and the runner's network namespaces - named
// `jdlsc<runner pid mod 100000>-...`, registered here as they appear so
// the worker's last cleanup removes them too - are deleted.
import type { ExecutionContext } from 'ava';
import { execFileSync, spawn } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { testDir, registerNetns, removeNetnsSync, unregisterNetns } from './installations.js';
import { withTimeout } from './table-env.js';

const RUNNER = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'chaos', 'run.js');

export interface ChaosReport {
  seed: number;
  clients: number;
  operations: number;
  grants: number;
  outcomes: Record<string, number>;
  faults: Record<string, number>;
  perProperty: Record<'double-grant' | 'lost-update' | 'tokens' | 'liveness' | 'cleanup', number>;
  violations: { property: string; message: string; slice: string[] }[];
}

export interface ChaosRun {
  code: number | null;
  report: ChaosReport | undefined;
  stdout: string;
  stderr: string;
  dir: string;
}

function namespacesWithPrefix(prefix: string): string[] {
  try {
    return execFileSync('ip', ['netns', 'list'], { encoding: 'utf8', timeout: 10_000 })
      .split('\n')
      .map((l) => l.split(' ')[0] ?? '')
      .filter((n) => n.startsWith(prefix));
  } catch {
    return [];
  }
}

/** Run the chaos suite with these arguments (plus --dir and --json); resolves when it ended. */
export async function runChaos(t: ExecutionContext, args: string[], boundMs: number): Promise<ChaosRun> {
  const dir = testDir('chaos');
  const child = spawn(process.execPath, [RUNNER, ...args, '--dir', dir, '--json'], { stdio: ['ignore', 'pipe', 'pipe'] });
  const prefix = `jdlsc${(child.pid ?? 0) % 100000}-`;
  const seen = new Set<string>();
  const register = (): void => {
    for (const n of namespacesWithPrefix(prefix)) if (!seen.has(n)) (seen.add(n), registerNetns(n));
  };
  const poll = setInterval(register, 500);
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  t.teardown(async () => {
    clearInterval(poll);
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      await withTimeout(exited, 60_000, 'the chaos runner to tear down').catch(() => child.kill('SIGKILL'));
    }
    register();
    for (const n of seen) {
      removeNetnsSync(n);
      unregisterNetns(n);
    }
  });
  const code = await withTimeout(exited, boundMs, 'the chaos run');
  clearInterval(poll);
  register();
  const start = stdout.indexOf('\n{');
  let report: ChaosReport | undefined;
  try {
    const end = stdout.lastIndexOf('\n}');
    report = JSON.parse(stdout.slice(start + 1, end + 2)) as ChaosReport;
  } catch {
    report = undefined;
  }
  return { code, report, stdout, stderr, dir };
}
