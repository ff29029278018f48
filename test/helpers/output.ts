// output.ts - a child process's stdout as lines and its stderr as text, and
// a bounded wait for a line: what the test helpers that start long-running
// fixtures (cli-env's lockers, shim-env's preloaded programs) share.
import type { ChildProcess } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';

export interface Output {
  /** complete stdout lines so far */
  lines: string[];
  stderr: () => string;
  /** the first line matching `re`; throws, naming `label`, if the child exits or the time runs out first */
  waitFor: (re: RegExp, timeoutMs?: number) => Promise<string>;
}

export function captureOutput(child: ChildProcess, label: string): Output {
  const lines: string[] = [];
  let err = '';
  let buf = '';
  child.stdout?.on('data', (d: Buffer) => {
    buf += d.toString();
    const parts = buf.split('\n');
    buf = parts.pop() ?? '';
    lines.push(...parts);
  });
  // Trap: 'exit' (exitCode set) can come before the last stdout data is
  // delivered - a child that printed its line and exited at once was judged
  // "exited, no line" (CI, shim-deadlock: `lines []` from a run that had
  // printed "appended"). Exit counts only once stdout has ended too.
  let outEnded = child.stdout === null;
  child.stdout?.on('end', () => {
    if (buf) lines.push(buf);
    buf = '';
    outEnded = true;
  });
  child.stdout?.on('close', () => { outEnded = true; });
  child.stderr?.on('data', (d: Buffer) => (err += d.toString()));
  const waitFor = async (re: RegExp, timeoutMs = 10_000): Promise<string> => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const hit = lines.find((l) => re.test(l));
      if (hit !== undefined) return hit;
      const exited = (child.exitCode !== null || child.signalCode !== null) && outEnded;
      if (exited || Date.now() > deadline) {
        const why = exited ? `exited ${child.exitCode ?? child.signalCode}` : `not within ${timeoutMs} ms`;
        throw new Error(`${label}: no line ${re} (${why}); lines ${JSON.stringify(lines)} stderr ${err}`);
      }
      await sleep(10);
    }
  };
  return { lines, stderr: () => err, waitFor };
}
