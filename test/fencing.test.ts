// fencing.test.ts - the resource side of fencing tokens (src/fencing.ts):
// FenceKeeper's rule and input checks, the record lock name, and the SQLite
// recipe through the real sqlite3 CLI: a lower token refused with the data
// unchanged, equal and higher admitted, the driver statement as exported,
// several concurrent sqlite3 writers never letting a lower token
// overwrite a higher one, and docs/fencing.md's shell example (run, its
// output compared) and schema (the exported one).
import test, { type ExecutionContext } from 'ava';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { FenceKeeper, checkFencingToken, recordLockName, sqliteFencedScript, SQLITE_FENCE_ADMIT, SQLITE_FENCE_REFUSED, SQLITE_FENCE_SCHEMA } from '../src/fencing.js';
import * as api from '../src/index.js';
import { JdlsError } from '../src/errors.js';
import { testDir } from './helpers/installations.js';
import { createLedger, ledgerWrite, query, sqlite } from './helpers/sqlite-cli.js';

// Tokens as jdls makes them: epoch in bits 62..44. Epoch 1000 puts them above
// 2^53, where neighbours are equal as doubles: every comparison must be exact.
const EPOCH = 1000n << 44n;
const T = (n: number): bigint => EPOCH + BigInt(n);

function badArgument(t: ExecutionContext, f: () => unknown, re?: RegExp): void {
  const e = t.throws(f, { instanceOf: JdlsError });
  t.is(e?.code, 'BAD_ARGUMENT');
  if (re) t.regex(e?.message ?? '', re);
}

/** A fresh database with the fence schema and the ledger table; removed at teardown. */
async function ledger(t: ExecutionContext): Promise<string> {
  const dir = testDir('fence');
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const db = path.join(dir, 'resource.db');
  await createLedger(db);
  return db;
}

// ---- FenceKeeper ------------------------------------------------------------

test('FenceKeeper: the first token is admitted; lower refused, equal and higher admitted; highest follows', (t) => {
  const k = new FenceKeeper();
  t.is(k.highest('L'), undefined);
  t.true(k.admit('L', T(5)));
  t.is(k.highest('L'), T(5));
  t.false(k.admit('L', T(4)), 'a lower token is refused');
  t.is(k.highest('L'), T(5), 'a refusal changes nothing');
  t.true(k.admit('L', T(5)), 'equal: the same holder writing again');
  t.true(k.admit('L', T(6)));
  t.is(k.highest('L'), T(6));
  t.false(k.admit('L', T(5)), 'the old holder, after the new one wrote');
  // neighbours above 2^53 are told apart
  t.true(T(6) > 2n ** 53n);
  t.false(k.admit('L', T(6) - 1n));
});

test('FenceKeeper: locks are independent', (t) => {
  const k = new FenceKeeper();
  t.true(k.admit('A', T(10)));
  t.true(k.admit('B', T(3)), 'a lower token on another lock is its own business');
  t.false(k.admit('B', T(2)));
  t.is(k.highest('A'), T(10));
  t.is(k.highest('B'), T(3));
  t.deepEqual(new Map(k.entries()), new Map([['A', T(10)], ['B', T(3)]]));
});

test('FenceKeeper: seeded from persisted highs, it refuses what they outrank', (t) => {
  const first = new FenceKeeper();
  first.admit('L', T(7));
  const restarted = new FenceKeeper(first.entries());
  t.is(restarted.highest('L'), T(7));
  t.false(restarted.admit('L', T(6)));
  t.true(restarted.admit('L', T(8)));
  t.throws(() => new FenceKeeper([['L', 0n]]), { instanceOf: JdlsError });
});

test('FenceKeeper: input checks are BAD_ARGUMENT (0 and undefined mean "no token": not fenceable)', (t) => {
  const k = new FenceKeeper();
  badArgument(t, () => k.admit('L', 0n), /no fencing token/);
  badArgument(t, () => k.admit('L', undefined as unknown as bigint), /no fencing token/);
  badArgument(t, () => k.admit('L', 5 as unknown as bigint), /bigint/);
  badArgument(t, () => k.admit('L', '5' as unknown as bigint), /bigint/);
  badArgument(t, () => k.admit('L', -1n), /outside/);
  badArgument(t, () => k.admit('L', 1n << 63n), /outside/);
  t.true(k.admit('L', (1n << 63n) - 1n), 'the largest token');
  t.true(k.admit('M', 1n), 'the smallest token');
  badArgument(t, () => k.admit('', 1n));
  badArgument(t, () => k.admit('a\0b', 1n));
  badArgument(t, () => k.admit(7 as unknown as string, 1n));
  badArgument(t, () => k.highest(''));
  t.is(k.highest('L'), (1n << 63n) - 1n, 'failed calls changed nothing');
  t.deepEqual(k.entries().map(([l]) => l).sort(), ['L', 'M']);
});

test('the package exports the fencing helpers', (t) => {
  t.is(api.FenceKeeper, FenceKeeper);
  t.is(api.recordLockName, recordLockName);
  t.is(api.sqliteFencedScript, sqliteFencedScript);
  t.is(api.SQLITE_FENCE_SCHEMA, SQLITE_FENCE_SCHEMA);
  t.is(api.SQLITE_FENCE_ADMIT, SQLITE_FENCE_ADMIT);
  t.is(api.checkFencingToken, checkFencingToken);
  t.is(checkFencingToken(T(1)), T(1));
});

// ---- the record lock name -----------------------------------------------

test('recordLockName: record:<inode>:<dev>:<key>, dev -1 by default, key bytes escaped once', (t) => {
  t.is(recordLockName({ inode: 1483651n }, 'CUSTOMER*1001'), 'record:1483651:-1:CUSTOMER*1001');
  t.is(recordLockName({ inode: 4242, dev: 7 }, 'K'), 'record:4242:7:K');
  t.is(recordLockName({ inode: 1n, dev: -1n }, Buffer.from('K')), recordLockName({ inode: 1 }, 'K'), 'a string key is its UTF-8 bytes');
  t.is(recordLockName({ inode: 1 }, 'a b%c:d'), 'record:1:-1:a%20b%25c:d');
  t.is(recordLockName({ inode: 1 }, Buffer.from([0, 0xff, 0x41, 0x7f])), 'record:1:-1:%00%FFA%7F');
  t.is(recordLockName({ inode: 1 }, 'é'), 'record:1:-1:%C3%A9');
  t.is(recordLockName({ inode: 1 }, `O'BRIEN*"1"\\`), 'record:1:-1:O%27BRIEN*"1"\\', "' is escaped (names go inside '...'), nothing else printable");
  t.is(recordLockName({ inode: 1 }, ''), 'record:1:-1:');
  t.is(recordLockName({ inode: (1n << 64n) - 1n, dev: -(1n << 63n) }, 'K'), `record:${(1n << 64n) - 1n}:${-(1n << 63n)}:K`);
  // distinct identities, distinct names
  const names = new Set([
    recordLockName({ inode: 1 }, 'K'), recordLockName({ inode: 1, dev: 0 }, 'K'), recordLockName({ inode: 11 }, 'K'),
    recordLockName({ inode: 1 }, 'K '), recordLockName({ inode: 1 }, 'K%20'), recordLockName({ inode: 1 }, Buffer.from('K\0')),
  ]);
  t.is(names.size, 6);
  badArgument(t, () => recordLockName({ inode: -1 }, 'K'));
  badArgument(t, () => recordLockName({ inode: 1n << 64n }, 'K'));
  badArgument(t, () => recordLockName({ inode: 1, dev: 1n << 63n }, 'K'));
  badArgument(t, () => recordLockName({ inode: 1.5 }, 'K'));
  const long = t.throws(() => recordLockName({ inode: 1 }, 'x'.repeat(513)), { instanceOf: JdlsError });
  t.is(long?.code, 'KEY_TOO_LONG');
  t.notThrows(() => recordLockName({ inode: 1 }, 'x'.repeat(512)));
});

// ---- the SQLite recipe, through the sqlite3 CLI ----------------------------

test('sqlite: lower refused (exit status, message, data and fence unchanged); equal and higher admitted', async (t) => {
  const db = await ledger(t);
  const L = recordLockName({ inode: 1483651n }, 'ACCOUNT*42');
  const w1 = await ledgerWrite(db, L, T(20), 'acct', 'from holder 20');
  t.is(w1.code, 0, w1.stderr);
  t.deepEqual(await query(db, 'SELECT value, token FROM ledger;'), [`from holder 20|${T(20)}`]);

  const late = await ledgerWrite(db, L, T(19), 'acct', 'LATE from holder 19');
  t.not(late.code, 0, 'the late writer is refused');
  t.true(late.stderr.includes(SQLITE_FENCE_REFUSED), late.stderr);
  t.deepEqual(await query(db, 'SELECT value, token FROM ledger;'), [`from holder 20|${T(20)}`], 'the data row is unchanged');
  t.deepEqual(await query(db, 'SELECT lock, token FROM jdls_fence;'), [`${L}|${T(20)}`], 'the fence is unchanged');

  const again = await ledgerWrite(db, L, T(20), 'acct', 'holder 20 again');
  t.is(again.code, 0, `equal is admitted: ${again.stderr}`);
  const next = await ledgerWrite(db, L, T(21), 'acct', 'from holder 21');
  t.is(next.code, 0, `higher is admitted: ${next.stderr}`);
  t.deepEqual(await query(db, 'SELECT value, token FROM ledger;'), [`from holder 21|${T(21)}`]);
  t.deepEqual(await query(db, 'SELECT token, typeof(token) FROM jdls_fence;'), [`${T(21)}|integer`]);
  // one lower by one, above 2^53: refused (a double would call it equal)
  t.not((await ledgerWrite(db, L, T(21) - 1n, 'acct', 'LATE')).code, 0);
  // another lock's fence is separate
  const other = await ledgerWrite(db, recordLockName({ inode: 1483651n }, 'ACCOUNT*43'), 1n, 'acct43', 'low token, other lock');
  t.is(other.code, 0, other.stderr);
  t.deepEqual(await query(db, 'SELECT id, value FROM ledger ORDER BY id;'), ['acct|from holder 21', 'acct43|low token, other lock']);
});

test('sqlite: a refusal rolls back what the transaction wrote before it; a lock name with quotes is quoted', async (t) => {
  const db = await ledger(t);
  const L = "record:1:-1:O'BRIEN";
  t.is((await ledgerWrite(db, L, T(2), 'x', 'v2')).code, 0);
  // a script that writes data BEFORE the fence statement (not the recipe's
  // order): the refusal still takes the whole transaction with it
  const script = sqliteFencedScript(L, T(1), "UPDATE ledger SET value = 'LATE' WHERE id = 'x';")
    .replace('BEGIN IMMEDIATE;', "BEGIN IMMEDIATE;\nUPDATE ledger SET value = 'EARLY' WHERE id = 'x';");
  const r = await sqlite(db, script);
  t.not(r.code, 0);
  t.true(r.stderr.includes(SQLITE_FENCE_REFUSED), r.stderr);
  t.deepEqual(await query(db, 'SELECT value FROM ledger;'), ['v2']);
  t.deepEqual(await query(db, 'SELECT lock FROM jdls_fence;'), [L]);
});

test('sqlite: the driver statement (SQLITE_FENCE_ADMIT, bound ?1 ?2) under the trigger; REAL tokens refused', async (t) => {
  const db = await ledger(t);
  const bind = (token: bigint): string => `.param set ?1 "'L'"\n.param set ?2 ${token}\n`;
  const admit = (token: bigint): Promise<{ code: number | null; stderr: string }> =>
    sqlite(db, `.bail on\n${bind(token)}BEGIN IMMEDIATE;\n${SQLITE_FENCE_ADMIT}\nCOMMIT;\n`);
  t.is((await admit(T(9))).code, 0);
  const low = await admit(T(8));
  t.not(low.code, 0);
  t.true(low.stderr.includes(SQLITE_FENCE_REFUSED), low.stderr);
  t.is((await admit(T(9))).code, 0);
  t.is((await admit((1n << 63n) - 1n)).code, 0, 'the largest token is stored exactly');
  t.deepEqual(await query(db, 'SELECT token, typeof(token) FROM jdls_fence;'), [`${(1n << 63n) - 1n}|integer`]);
  // what is not a token is refused by the CHECK (an integral double is not
  // caught: SQLite stores it as an integer; hence "bind a bigint")
  for (const v of ['1.5', "'abc'", '0', '-3', 'NULL']) {
    const bad = await sqlite(db, `.bail on\nINSERT INTO jdls_fence(lock, token) VALUES ('M', ${v});\n`);
    t.not(bad.code, 0, v);
    t.regex(bad.stderr, /constraint failed/i, v);
  }
  t.deepEqual(await query(db, "SELECT count(*) FROM jdls_fence WHERE lock = 'M';"), ['0']);
  // the schema is idempotent
  t.is((await sqlite(db, SQLITE_FENCE_SCHEMA)).code, 0);
});

test('sqliteFencedScript: input checks', (t) => {
  badArgument(t, () => sqliteFencedScript('L', 0n, 'SELECT 1;'), /no fencing token/);
  badArgument(t, () => sqliteFencedScript('', 1n, 'SELECT 1;'));
  badArgument(t, () => sqliteFencedScript('L', 1n, 'SELECT 1;', -1));
  const s = sqliteFencedScript('L', T(1), 'SELECT 1');
  t.true(s.startsWith('.bail on\n'), 'bail: a refusal must stop the script');
  t.true(s.includes('BEGIN IMMEDIATE;'));
  t.true(s.trimEnd().endsWith('COMMIT;'));
});

test.serial('sqlite: concurrent writers (several sqlite3 processes) never let a lower token overwrite a higher one', async (t) => {
  const db = await ledger(t);
  const extra = await sqlite(db, 'CREATE TABLE history(seq INTEGER PRIMARY KEY AUTOINCREMENT, writer INTEGER, token INTEGER NOT NULL);\n');
  t.is(extra.code, 0, extra.stderr);
  const L = recordLockName({ inode: 7 }, 'SHARED');
  const WRITERS = 4;
  const EACH = 20;
  // Tokens 1..WRITERS*EACH: in round i the writers get i*WRITERS+1 ..
  // (i+1)*WRITERS in a shuffled order, so each writer's own tokens increase
  // (as a client's do) while the writers race with tokens both above and
  // below what the fence holds.
  const tokens: bigint[] = [];
  for (let i = 0; i < EACH; i++) {
    const round = Array.from({ length: WRITERS }, (_, w) => i * WRITERS + w + 1);
    for (let a = round.length - 1; a > 0; a--) {
      const b = Math.floor(Math.random() * (a + 1));
      [round[a], round[b]] = [round[b]!, round[a]!];
    }
    round.forEach((n, w) => (tokens[w * EACH + i] = T(n)));
  }
  const admitted: bigint[] = [];
  let refused = 0;
  await Promise.all(Array.from({ length: WRITERS }, async (_, w) => {
    for (let i = 0; i < EACH; i++) {
      const token = tokens[w * EACH + i]!;
      const data = `INSERT INTO history(writer, token) VALUES (${w}, ${token});\n` +
        `INSERT INTO ledger(id, value, token) VALUES ('row', 'writer ${w}', ${token}) ON CONFLICT(id) DO UPDATE SET value = excluded.value, token = excluded.token;`;
      const r = await sqlite(db, sqliteFencedScript(L, token, data, 30_000));
      if (r.code === 0) admitted.push(token);
      else {
        // the only failure allowed is the fence's refusal (never SQLITE_BUSY)
        t.true(r.stderr.includes(SQLITE_FENCE_REFUSED), r.stderr);
        refused++;
      }
    }
  }));
  t.is(admitted.length + refused, WRITERS * EACH);
  // commit order (history.seq) is non-decreasing in token: no lower token
  // ever committed after a higher one
  const history = (await query(db, 'SELECT token FROM history ORDER BY seq;')).map((l) => BigInt(l));
  t.is(history.length, admitted.length, 'every admitted write committed its data; no refused one did');
  for (let i = 1; i < history.length; i++) t.true(history[i]! >= history[i - 1]!, `history[${i}] ${history[i]} after ${history[i - 1]}`);
  // the highest token ever tried is always admitted, and it is what the fence and the row hold
  const max = T(WRITERS * EACH);
  t.true(admitted.includes(max));
  t.deepEqual(await query(db, 'SELECT token FROM jdls_fence;'), [String(max)]);
  t.deepEqual(await query(db, 'SELECT token FROM ledger;'), [String(max)]);
  t.log(`${admitted.length} admitted, ${refused} refused`);
});

// ---- docs/fencing.md --------------------------------------------------------

const DOC = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'docs', 'fencing.md');

test('docs/fencing.md: the shell example runs and prints what the document says', (t) => {
  const doc = fs.readFileSync(DOC, 'utf8');
  const m = /<!-- fencing-example:[^\n]*-->\n```sh\n([\s\S]*?)```\n\s*prints\s*\n```text\n([\s\S]*?)```/.exec(doc);
  t.truthy(m, 'the marked sh block and its "prints" block');
  if (!m) return;
  const dir = testDir('fence-doc');
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const r = spawnSync('bash', ['-c', m[1]!], { cwd: dir, encoding: 'utf8', timeout: 60_000 });
  t.is(r.status, 0, r.stderr);
  t.is(r.stdout, m[2]!);
});

test('docs/fencing.md: the schema shown is SQLITE_FENCE_SCHEMA, the admit statement is SQLITE_FENCE_ADMIT', (t) => {
  const doc = fs.readFileSync(DOC, 'utf8');
  const sql = [...doc.matchAll(/```sql\n([\s\S]*?)```/g)].map((x) => x[1]!);
  t.is(sql[0], SQLITE_FENCE_SCHEMA);
  const flat = (s: string): string => s.replace(/\s+/g, ' ').trim();
  t.true(flat(sql[1] ?? '').includes(flat(SQLITE_FENCE_ADMIT)), sql[1]);
});
