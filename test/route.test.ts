// route.test.ts - the routing decision table (shim/route-cases.json) against
// both implementations: routeLock (src/route.ts, the broker's and the docs')
// and jdls_route_decide (native/common/jdls_route.h, the shim's, through the
// jdls-routecases program), over every combination of inputs.
import test from 'ava';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildDir } from '../src/native.js';
import { routeLock, type RouteDest, type RouteInput } from '../src/route.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const casesPath = path.join(root, 'shim', 'route-cases.json');
const routecases = path.join(buildDir, 'jdls-routecases');

type Field = keyof RouteInput;
interface Row extends Partial<RouteInput> {
  why: string;
  dest: RouteDest;
}
interface Cases {
  inputs: Record<Field, (string | boolean)[]>;
  rows: Row[];
}

const cases = JSON.parse(fs.readFileSync(casesPath, 'utf8')) as Cases;
const FIELDS: Field[] = ['jdlsSet', 'tableInService', 'kind', 'origin', 'binary', 'lock', 'osLocks'];

function combinations(): RouteInput[] {
  let out: Record<string, string | boolean>[] = [{}];
  for (const f of FIELDS) {
    const values = cases.inputs[f];
    out = out.flatMap((o) => values.map((v) => ({ ...o, [f]: v })));
  }
  return out as unknown as RouteInput[];
}

/** The table's answer: the first row whose fields all match. */
function expected(i: RouteInput): { dest: RouteDest; row: number } | undefined {
  const row = cases.rows.findIndex((r) => FIELDS.every((f) => r[f] === undefined || r[f] === i[f]));
  const r = cases.rows[row];
  return r ? { dest: r.dest, row } : undefined;
}

const DEST_C: Record<number, RouteDest> = { 0: 'os', 1: 'table', 2: 'server', 3: 'driver' };
function cLine(i: RouteInput): string {
  const lock = { ALL: 0, INTERNAL: 1, EXTERNAL: 2 }[i.lock];
  return [i.jdlsSet, i.tableInService, i.kind === 'binary', i.origin === 'external', i.binary, lock, i.osLocks]
    .map((v) => Number(v)).join(' ') + '\n';
}

const all = combinations();

test('the table covers every combination and every row is reachable', (t) => {
  t.is(all.length, 2 * 2 * 2 * 2 * 2 * 3 * 2);
  const used = new Set<number>();
  for (const i of all) {
    const e = expected(i);
    if (!e) return t.fail(`no row for ${JSON.stringify(i)}`);
    used.add(e.row);
  }
  t.deepEqual([...used].sort((a, b) => a - b), cases.rows.map((_, n) => n));
});

test('routeLock (TypeScript) follows the table', (t) => {
  for (const i of all) t.is<string, string>(routeLock(i), expected(i)?.dest ?? 'none', JSON.stringify(i));
});

test('jdls_route_decide (C) follows the table', (t) => {
  const r = spawnSync(routecases, { input: all.map(cLine).join(''), encoding: 'utf8', timeout: 10_000 });
  t.is(r.status, 0, r.stderr);
  const got = r.stdout.trim().split('\n').map((s) => DEST_C[Number(s)]);
  t.is(got.length, all.length);
  all.forEach((i, n) => t.is<string, string>(got[n] ?? 'none', expected(i)?.dest ?? 'none', JSON.stringify(i)));
});

test('the check has teeth: a changed row is detected', (t) => {
  const i: RouteInput = { jdlsSet: true, tableInService: true, kind: 'binary', origin: 'internal', binary: false, lock: 'ALL', osLocks: false };
  t.is(expected(i)?.dest, 'os');
  t.not(routeLock({ ...i, binary: true }), expected(i)?.dest);
});
