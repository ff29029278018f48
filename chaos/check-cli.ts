// check-cli.ts - re-checks a chaos run directory after the fact:
//
//   node dist/chaos/check-cli.js <run dir> [--json] [--seed S] [--max N]
//
// Prints the report (formatReport) or, with --json, the CheckReport. The
// seed printed with violations is --seed, else `seed` from <run dir>/run.json
// when the runner left one. Exit status: 0 no violations, 1 violations,
// 2 usage or an unreadable run dir.
import fs from 'node:fs';
import path from 'node:path';
import { checkRun, formatReport, PROPERTIES } from './checker.js';

function usage(msg: string): never {
  process.stderr.write(`check-cli: ${msg}\nusage: check-cli <run dir> [--json] [--seed S] [--max N]\n`);
  process.exit(2);
}

function seedOf(runDir: string): number | undefined {
  try {
    const meta = JSON.parse(fs.readFileSync(path.join(runDir, 'run.json'), 'utf8')) as { seed?: unknown };
    return typeof meta.seed === 'number' ? meta.seed : undefined;
  } catch {
    return undefined;
  }
}

function main(argv: string[]): void {
  let runDir: string | undefined;
  let json = false;
  let seed: number | undefined;
  let max: number | undefined;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--json') json = true;
    else if (a === '--seed' || a === '--max') {
      const v = Number(argv[++i]);
      if (!Number.isSafeInteger(v) || v < 0) usage(`${a} needs a whole number`);
      if (a === '--seed') seed = v;
      else max = v;
    } else if (a.startsWith('-')) usage(`unknown option ${a}`);
    else if (runDir === undefined) runDir = a;
    else usage('one run dir only');
  }
  if (!runDir) usage('no run dir');
  if (!fs.existsSync(runDir) || !fs.statSync(runDir).isDirectory()) usage(`${runDir} is not a directory`);
  const report = checkRun(runDir, max !== undefined ? { maxViolations: max } : {});
  seed ??= seedOf(runDir);
  process.stdout.write(json ? `${JSON.stringify(report, null, 2)}\n` : formatReport(report, seed));
  process.exitCode = PROPERTIES.some((p) => report.perProperty[p] > 0) ? 1 : 0;
}

main(process.argv.slice(2));
