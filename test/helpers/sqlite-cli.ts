// sqlite-cli.ts - the sqlite3 command-line shell for the fencing tests
// (test/fencing*.test.ts and their fixture): a script on stdin, its exit
// status and output back. jdls depends on no SQLite driver; CI installs the
// CLI (.ci/run), as the shim pass-through tests need it too.
import { spawn } from 'node:child_process';
import { sqliteFencedScript, SQLITE_FENCE_SCHEMA } from '../../src/fencing.js';

export interface SqliteRun {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Run `sqlite3 db` with `script` on stdin (bounded: killed after timeoutMs, then code null). */
export function sqlite(db: string, script: string, timeoutMs = 30_000): Promise<SqliteRun> {
  return new Promise((resolve, reject) => {
    const child = spawn('sqlite3', [db], { stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.stdin.on('error', () => {}); // it may exit (bail) before reading everything
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
    child.stdin.end(script);
  });
}

/** The fence schema and a data table `ledger(id TEXT PRIMARY KEY, value TEXT, token INTEGER)`, in WAL mode. */
export async function createLedger(db: string): Promise<void> {
  const r = await sqlite(db, `PRAGMA journal_mode=WAL;\n${SQLITE_FENCE_SCHEMA}CREATE TABLE IF NOT EXISTS ledger(id TEXT PRIMARY KEY, value TEXT NOT NULL, token INTEGER NOT NULL);\n`);
  if (r.code !== 0) throw new Error(`sqlite3 schema: ${r.stderr}`);
}

/** The guarded write of ledger row `id` = value (recording the token it was written with). */
export function ledgerWrite(db: string, lock: string, token: bigint, id: string, value: string): Promise<SqliteRun> {
  const q = (s: string): string => `'${s.replaceAll("'", "''")}'`;
  const data = `INSERT INTO ledger(id, value, token) VALUES (${q(id)}, ${q(value)}, ${token}) ON CONFLICT(id) DO UPDATE SET value = excluded.value, token = excluded.token;`;
  return sqlite(db, sqliteFencedScript(lock, token, data));
}

/** One query's output lines (`|`-separated columns), or an error. */
export async function query(db: string, sql: string): Promise<string[]> {
  const r = await sqlite(db, `.timeout 10000\n${sql}\n`);
  if (r.code !== 0) throw new Error(`sqlite3 ${sql}: ${r.stderr}`);
  return r.stdout.split('\n').filter((l) => l.length > 0);
}
