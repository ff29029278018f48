// sqlite-worker.ts - the chaos suite's sqlite3 workload: an unmodified
// program (the sqlite3 shell) whose own file locking the preload shim
// intercepts, incrementing one counter in transactions.
//
//   node dist/chaos/workers/sqlite-worker.js '<json SqliteWorkerSpec>'
//
// Each operation spawns `sqlite3 -bail <db>` (LD_PRELOAD and JDLS are
// inherited from this process's environment: the runner sets them) with
//   .timeout 10000
//   BEGIN IMMEDIATE; UPDATE counter SET n = n + 1 RETURNING n; COMMIT;
// and logs, with history key `sqlite:counter` (or the spec's key) (chaos/history.ts):
// `invoke` before, then `write` (exit 0; value: the n it committed) or
// `error` (the exit status and stderr). sqlite's own locks are byte ranges
// on the database file, i.e. binary locks (the kernel; the server with
// JDLS ... BINARY) - they, not jdls' record locks, keep the counter exact.
//
// The checker compares the counter at the end with the `write` events:
// a sqlite3 killed mid-commit (an `invoke` without an outcome) may or may
// not have committed, so n must lie in [writes, writes + unfinished].
// No grant/release events: the lock is sqlite's, invisible from here; the
// `write` is the whole transaction.
//
// SIGTERM: let the current sqlite3 finish, log `exit`, exit 0.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { HistoryWriter } from '../history.js';

export interface SqliteWorkerSpec {
  id: string;
  runDir: string;
  host: string;
  /** the database file (made, with counter(n) = 0, if absent) */
  db: string;
  /** stop after this many operations (default: until SIGTERM) */
  maxOps?: number;
  /** the history key (default SQLITE_KEY; a chaos round's: "sqlite:r3.counter") */
  key?: string;
}

export const SQLITE_KEY = 'sqlite:counter';

/** sqlite3's own error reports (3.40: "Runtime error near line N: ...", "Parse error ...", older "Error: ..."). */
const SQLITE_ERROR = /^(Runtime error|Parse error|Error)\b/m;
/** The shim's exit when the lock service is lost (shim/jdls.h). */
const LOST_SERVICE = /unable to connect to distributed lock service/;

interface Sqlite3Result {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

function sqlite3(db: string, script: string): Promise<Sqlite3Result> {
  return new Promise((resolve, reject) => {
    // -bail: stop at the first error with a non-zero status (a BUSY
    // after the timeout must not go on to UPDATE outside a transaction).
    const child = spawn('sqlite3', ['-bail', db], { stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.stdin.on('error', () => {}); // it may exit (bail) before reading all
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
    child.stdin.end(script);
  });
}

/**
 * Make the table race-safely: every worker may try at once. IF NOT EXISTS
 * and the guarded INSERT run inside one IMMEDIATE transaction, so sqlite's
 * own write lock orders them: exactly one row, n = 0, whoever comes first.
 */
export const SQLITE_INIT = '.timeout 10000\nBEGIN IMMEDIATE;\nCREATE TABLE IF NOT EXISTS counter(n INTEGER NOT NULL);\nINSERT INTO counter(n) SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM counter);\nCOMMIT;\n';
export const SQLITE_INCREMENT = '.timeout 10000\nBEGIN IMMEDIATE;\nUPDATE counter SET n = n + 1 RETURNING n;\nCOMMIT;\n';

/** The counter now (for the runner's outcome and tests). */
export async function readCounter(db: string): Promise<number> {
  const r = await sqlite3(db, '.timeout 10000\nSELECT n FROM counter;\n');
  const n = Number(r.stdout.trim());
  if (r.code !== 0 || !Number.isSafeInteger(n)) throw new Error(`sqlite3 ${db}: ${r.code} ${r.stderr.trim()}`);
  return n;
}

async function main(): Promise<void> {
  const arg = process.argv[2];
  if (!arg) {
    process.stderr.write("usage: sqlite-worker '<json {id, runDir, host, db, maxOps?}>'\n");
    process.exit(2);
  }
  const spec = JSON.parse(arg) as SqliteWorkerSpec;
  const key = spec.key ?? SQLITE_KEY;
  fs.mkdirSync(path.join(spec.runDir, 'hist'), { recursive: true });
  const h = new HistoryWriter(path.join(spec.runDir, 'hist', `${spec.id}.jsonl`), spec.id);
  let stopping = false;
  process.on('SIGTERM', () => {
    stopping = true;
  });
  h.log({ op: 0, ev: 'start', path: 'sqlite', host: spec.host, pid: process.pid });

  const init = await sqlite3(spec.db, SQLITE_INIT);
  if (init.code !== 0) {
    h.log({ op: 0, ev: 'error', err: `init ${init.code ?? init.signal} ${init.stderr.trim()}` });
    h.log({ op: 0, ev: 'exit', holding: [] });
    process.exit(3);
  }

  for (let done = 0; !stopping && (spec.maxOps === undefined || done < spec.maxOps); done++) {
    const op = h.nextOp();
    h.log({ op, ev: 'invoke', key, mode: 'write', wait: 'timeout:10000' });
    const r = await sqlite3(spec.db, SQLITE_INCREMENT);
    const n = Number(r.stdout.trim());
    if (r.code === 0 && r.stdout.trim() !== '' && Number.isSafeInteger(n)) {
      h.log({ op, ev: 'write', key, value: n });
    } else if (r.code !== null && r.code !== 0 && SQLITE_ERROR.test(r.stderr) && !LOST_SERVICE.test(r.stderr)) {
      // sqlite3 itself reported the failure (SQLITE_BUSY after the
      // timeout, ENOLCK from the shim as "disk I/O error", ...) and -bail
      // stopped it there: the transaction did not commit.
      h.log({ op, ev: 'error', key, err: `status ${r.code} ${r.stderr.trim().slice(0, 300)}` });
    } else {
      // Indeterminate: killed by a signal (not ours: SIGTERM waits for it),
      // or ended by the shim ("unable to connect to distributed lock
      // service": the lost connection may come at the unlock after the
      // commit). It may have committed, so no outcome is logged: this
      // incarnation ends as a killed client would (no `exit`), and the
      // checker counts the invoke among those without an outcome.
      process.stderr.write(`sqlite-worker ${spec.id}: op ${op}: indeterminate (${r.code ?? r.signal}) ${r.stderr.trim()}\n`);
      h.close();
      process.exit(3);
    }
  }
  h.log({ op: 0, ev: 'exit', holding: [] });
  h.close();
  process.exit(0);
}

if (process.argv[1] && path.resolve(process.argv[1]) === path.resolve(new URL(import.meta.url).pathname)) void main();
