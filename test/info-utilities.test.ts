// info-utilities.test.ts - show-item-locks and list-open-files: their rows
// and text from synthetic info records (columns as the guide's example, the
// waiter column, the stale mark, duplicate ports, filters, --json, -h), their
// options, and where they read from (the local info directory, a running
// service, JDLS) as real processes.
import test from 'ava';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { testDir } from './helpers/installations.js';
import { CliEnv, runToEnd, type RunResult } from './helpers/cli-env.js';
import { ServerEnv } from './helpers/server-env.js';
import { makeUser, asUser } from './helpers/users.js';
import { native } from '../src/native.js';
import { infoDir, recordFileName, type InfoLock, type InfoRecord, type InfoWait } from '../src/info/format.js';
import { duplicatePorts, type InfoAnswer, type ReadRecord } from '../src/info/reader.js';
import { itemLocksView, itemLocksText, openFilesView, openFilesText, keyText, headerLine } from '../src/info/view.js';
import { parseInfoArgs, UsageError } from '../src/cli/info-cli.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const SHOW = path.resolve(here, '..', 'src', 'cli', 'show-item-locks.js');
const LIST = path.resolve(here, '..', 'src', 'cli', 'list-open-files.js');

// ===== synthetic records ====================================================

const FILE = 'ac/FBNK.ACCOUNT';
const me = { kind: 'local' as const, pid: process.pid, start: native.pidStart(process.pid) };

function lock(key: string, lockNo: string | undefined, more: Partial<InfoLock> = {}): InfoLock {
  const l: InfoLock = { file: FILE, inode: '1483651', dev: '-1', key, mode: 'write', kind: 'record', sinceMs: 1_700_000_000_000, ...more };
  if (lockNo !== undefined) l.lockNo = lockNo;
  return l;
}

function wait(key: string, more: Partial<InfoWait> = {}): InfoWait {
  return { file: FILE, inode: '1483651', dev: '-1', key, mode: 'write', kind: 'record', sinceMs: 1_700_000_000_000, ...more };
}

function rec(port: number, ipaddr: string, pid: number, locks: InfoLock[], more: Partial<InfoRecord> = {}): InfoRecord {
  return {
    version: 1, port, pid, ipaddr, host: 'appserver', user: 'jbase', program: 'jsh', startedMs: 1, updatedMs: 2, writer: me,
    files: [{ name: FILE, inode: '1483651', dev: '-1' }], locks, stats: { locks: locks.length, waits: 0, waitMs: 0, retries: 0 }, ...more,
  };
}

const rr = (record: InfoRecord, stale?: string): ReadRecord =>
  stale ? { file: recordFileName(record.port, record.ipaddr, record.pid), record, stale } : { file: recordFileName(record.port, record.ipaddr, record.pid), record };

function answer(records: ReadRecord[]): InfoAnswer {
  return { dir: '/opt/jbase/proc/info', host: 'lockhost', records, skipped: [], duplicates: duplicatePorts(records) };
}

/** The guide's three locks (SHOW-ITEM-LOCKS example). */
const guide = (): ReadRecord[] => [
  rr(rec(2, '0.0.0.0', 15071, [lock('32549', '0x58ba67d8')])),
  rr(rec(1000, '10.44.1.55', 15031, [lock('33537', '0x0df361bc')])),
  rr(rec(4, '127.0.0.1', 15112, [lock('USD163170001', '0x6bc61286')])),
];

/** The table lines of a show-item-locks text (after the column header, up to the first blank line). */
function tableLines(text: string): string[] {
  const lines = text.split('\n');
  const start = lines.findIndex((l) => l.startsWith('IPADDR'));
  const out: string[] = [];
  for (const l of lines.slice(start + 1)) {
    if (l === '') break;
    out.push(l);
  }
  return out;
}

// ===== views =================================================================

test('show-item-locks: the guide header line, a blank line, the guide columns aligned', (t) => {
  const text = itemLocksText(itemLocksView(answer(guide())));
  const lines = text.split('\n');
  t.is(lines[0], 'show-item-locks information retrieved from process information entries generated in JBCRELEASEDIR/proc/info directory on host lockhost (/opt/jbase/proc/info)');
  t.is(lines[1], '');
  const head = lines[2] ?? '';
  t.regex(head, /^IPADDR +PORT +PID +FILENAME +RECORD KEY +LOCK# +PORT\/-PID$/);
  const rows = tableLines(text);
  // Sorted as the records come (the reader sorts by port): 2, 4, 1000.
  t.deepEqual(
    rows.map((r) => r.split(/ +/)),
    [
      ['0.0.0.0', '2', '15071', FILE, '32549', '0x58ba67d8,W', '---'],
      ['10.44.1.55', '1000', '15031', FILE, '33537', '0x0df361bc,W', '---'],
      ['127.0.0.1', '4', '15112', FILE, 'USD163170001', '0x6bc61286,W', '---'],
    ],
  );
  // Every column starts where its header does.
  for (const name of ['PORT ', 'PID ', 'FILENAME', 'RECORD KEY', 'LOCK#', 'PORT/-PID']) {
    const at = head.indexOf(name);
    for (const r of rows) {
      t.is(r[at - 1], ' ', `${name} in ${r}`);
      t.not(r[at], ' ', `${name} in ${r}`);
    }
  }
});

test('show-item-locks: the waiter column names the ports (or -pid) waiting for each lock, live waiters only', (t) => {
  const records = [
    ...guide(),
    rr(rec(0, '0.0.0.0', 20002, [], { waiting: wait('33537', { sinceMs: 1_700_000_000_500 }) })), // no port: -pid
    rr(rec(7, '127.0.0.1', 20001, [], { waiting: wait('33537') })), // waiting longer: first
    rr(rec(9, '10.44.1.57', 20003, [], { waiting: wait('33537') }), 'process 20003 is dead'), // stale: waits for nothing
    rr(rec(8, '0.0.0.0', 20004, [], { waiting: wait('33537', { mode: 'read', kind: 'binary' }) })), // another kind: another target
    rr(rec(5, '0.0.0.0', 20005, [lock('32549', '0x58ba67d8', { mode: 'read' })], { waiting: wait('32549') })), // an upgrade: not its own waiter
  ];
  const v = itemLocksView(answer(records));
  const by = (port: number): string[] => v.rows.filter((r) => r.port === port).flatMap((r) => r.waiters);
  t.deepEqual(by(1000), ['7', '-20002']);
  t.deepEqual(by(2), ['5']);
  t.deepEqual(by(5), []);
  t.deepEqual(by(4), []);
  const text = itemLocksText(v);
  t.true(tableLines(text).some((l) => /^10\.44\.1\.55 +1000 .* 0x0df361bc,W +7,-20002$/.test(l)), text);
  // port 8 waits for a binary lock nobody is shown holding: listed after the table
  t.deepEqual(v.waits.map((w) => w.port), [8]);
  t.regex(text, /\nport 8 \(pid 20004, 0\.0\.0\.0\) waits since \d\d:\d\d:\d\d for ac\/FBNK\.ACCOUNT key 33537 \(R\), held by no process with an info record\n/);
});

test('show-item-locks: a stale record is shown, marked with why; duplicate ports are warned after the table', (t) => {
  const records = [
    ...guide(),
    rr(rec(3, '10.44.1.58', 4242, [lock('K1', undefined)]), 'lock-server process 4000 is dead'),
    rr(rec(4, '10.44.1.59', 777, [lock('K2', undefined, { mode: 'read' })])),
  ];
  const v = itemLocksView(answer(records));
  const text = itemLocksText(v);
  const rows = tableLines(text);
  t.true(rows.some((l) => /^10\.44\.1\.58 +3 +4242 .*K1 +-,W +---  \(stale: lock-server process 4000 is dead\)$/.test(l)), text);
  t.true(rows.some((l) => /^10\.44\.1\.59 +4 +777 .*K2 +-,R +---$/.test(l)), text);
  t.deepEqual(v.stale.map((s) => [s.port, s.why]), [[3, 'lock-server process 4000 is dead']]);
  t.is(v.duplicates.length, 1);
  const warn = text.split('\n').filter((l) => l.startsWith('WARNING: '));
  t.is(warn.length, 1);
  t.regex(warn[0] ?? '', /^WARNING: port 4 is claimed by 2 live processes: pid (777|15112) at .* and pid (777|15112) at .*JBCPORTNO/);
  t.is(text.indexOf('WARNING') > text.indexOf('K2'), true);
});

test('show-item-locks: filters by port, file and key keep the waiter column whole', (t) => {
  const records = [
    ...guide(),
    rr(rec(7, '127.0.0.1', 20001, [lock('A', '0x00000001', { file: 'ac/OTHER', inode: '55' })], { waiting: wait('33537') })),
  ];
  const a = answer(records);
  const keys = (f: Parameters<typeof itemLocksView>[1]): string[] => itemLocksView(a, f).rows.map((r) => `${r.port}:${r.key}:${r.waiters.join(',')}`);
  t.deepEqual(keys({ port: 1000 }), ['1000:33537:7']);
  t.deepEqual(keys({ file: 'FBNK.ACCOUNT' }), ['2:32549:', '1000:33537:7', '4:USD163170001:']);
  t.deepEqual(keys({ file: FILE }), ['2:32549:', '1000:33537:7', '4:USD163170001:']);
  t.deepEqual(keys({ file: 'OTHER' }), ['7:A:']);
  t.deepEqual(keys({ key: 'USD163170001' }), ['4:USD163170001:']);
  t.deepEqual(keys({ port: 2, key: '33537' }), []);
  t.regex(itemLocksText(itemLocksView(a, { port: 99 })), /\nNo item locks found\n$/);
});

test('show-item-locks: FILENAME falls back to an open file of the same identity, then inode:dev; keys are escaped', (t) => {
  const named = rec(2, '0.0.0.0', 1, [lock('a b', undefined, { file: undefined })]);
  const unnamed = rec(3, '0.0.0.0', 2, [lock('x\u0001\\', undefined, { file: undefined, inode: '99', dev: '2049' })]);
  const v = itemLocksView(answer([rr(named), rr(unnamed)]));
  t.deepEqual(v.rows.map((r) => r.filename), [FILE, '99:2049']);
  t.is(keyText('x\u0001\\\u00e9'), 'x\\x01\\\\\\xe9');
  t.true(itemLocksText(v).includes(' x\\x01\\\\ '));
  // -f finds a lock by the name of the open file it resolved to
  t.is(itemLocksView(answer([rr(named), rr(unnamed)]), { file: 'FBNK.ACCOUNT' }).rows.length, 1);
});

test('list-open-files: per port its files; -f keeps the ports with that file, with it only; stale marked', (t) => {
  const two = rec(2, '0.0.0.0', 15071, [], {
    files: [
      { name: FILE, inode: '1483651', dev: '-1' },
      { name: 'ac/F.CUSTOMER', inode: '1483700', dev: '-1' },
      { inode: '42', dev: '2049' },
    ],
  });
  const gone = rec(1000, '10.44.1.55', 15031, [], { files: [] });
  const a = answer([rr(two), rr(gone, 'lock-server process 15031 is dead')]);
  const text = openFilesText(openFilesView(a));
  const lines = text.split('\n');
  t.is(lines[0], headerLine('list-open-files', 'lockhost', '/opt/jbase/proc/info'));
  t.true(lines.includes('Port 2, pid 15071, ipaddr 0.0.0.0, user jbase, program jsh'), text);
  t.true(lines.includes('Port 1000, pid 15031, ipaddr 10.44.1.55, user jbase, program jsh  (stale: lock-server process 15031 is dead)'), text);
  t.true(lines.includes('    (no files open)'));
  const fileRows = lines.filter((l) => l.startsWith('    ') && !l.includes('FILENAME') && !l.includes('(no files')).map((l) => l.trim().split(/ +/));
  t.deepEqual(fileRows, [[FILE, '1483651', '-1'], ['ac/F.CUSTOMER', '1483700', '-1'], ['-', '42', '2049']]);
  const f = openFilesView(a, { file: 'F.CUSTOMER' });
  t.deepEqual(f.ports.map((p) => [p.port, p.files.map((x) => x.name)]), [[2, ['ac/F.CUSTOMER']]]);
  t.deepEqual(openFilesView(a, { port: 1000 }).ports.map((p) => p.port), [1000]);
  t.regex(openFilesText(openFilesView(a, { port: 5 })), /\nNo open files found\n$/);
});

// ===== options ===============================================================

test('options: -p/-f/-k in every spelling, --json, --local/--server, -h, the guide\'s en dash; errors', (t) => {
  const show = { name: 'show-item-locks', keyFilter: true };
  t.deepEqual(parseInfoArgs(show, ['-p', '4', '-fFBNK.ACCOUNT', '--key=USD1', '--json']), { filter: { port: 4, file: 'FBNK.ACCOUNT', key: 'USD1' }, json: true, help: false });
  t.deepEqual(parseInfoArgs(show, ['--port=7', '--file', 'X', '-k', 'a b', '--local']), { filter: { port: 7, file: 'X', key: 'a b' }, json: false, help: false, force: 'local' });
  t.deepEqual(parseInfoArgs(show, ['\u2013p4', '\u2013\u2013server', '-h']), { filter: { port: 4 }, json: false, help: true, force: 'server' });
  const bad = (argv: string[], re: RegExp, spec = show): void => {
    const e = t.throws(() => parseInfoArgs(spec, argv), { instanceOf: UsageError });
    t.regex(e?.message ?? '', re);
  };
  bad(['-p', 'x'], /not a port number/);
  bad(['-p'], /needs a value/);
  bad(['--local', '--server'], /exclude each other/);
  bad(['-z'], /unknown option '-z'/);
  bad(['-k', 'a'], /not an option of list-open-files/, { name: 'list-open-files', keyFilter: false });
});

// ===== the commands, as processes ============================================

const envFor = (dir: string, more: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv => {
  const env: NodeJS.ProcessEnv = { ...process.env, JBCRELEASEDIR: dir, ...more };
  if (!('JDLS' in more)) delete env['JDLS'];
  delete env['JBCPORTNO'];
  return env;
};
const run = (cmd: string, args: string[], env: NodeJS.ProcessEnv): Promise<RunResult> => runToEnd(process.execPath, [cmd, ...args], env, 30_000);

/** An installation directory with an info directory holding `records` (written as a writer would: whole files). */
function installation(t: { teardown(fn: () => void): void }, records: InfoRecord[]): string {
  const dir = testDir('info');
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  fs.mkdirSync(infoDir(dir), { recursive: true, mode: 0o3770 });
  for (const r of records) fs.writeFileSync(path.join(infoDir(dir), recordFileName(r.port, r.ipaddr, r.pid)), JSON.stringify(r), { mode: 0o640 });
  return dir;
}

test('the commands read the local info directory: text, --json, a stale writer, duplicates on stderr, list-open-files', async (t) => {
  const dead = { kind: 'local' as const, pid: me.pid, start: me.start + 1 }; // this pid, another start: a reused pid
  const dir = installation(t, [
    rec(2, '0.0.0.0', 15071, [lock('32549', '0x58ba67d8')]),
    rec(1000, '10.44.1.55', 15031, [lock('33537', '0x0df361bc')], { writer: { ...me, kind: 'lockserver' } }),
    rec(4, '127.0.0.1', 15112, [lock('USD163170001', '0x6bc61286')]),
    rec(4, '10.44.1.60', 15200, [], { waiting: wait('33537') }),
    rec(6, '10.44.1.61', 15300, [lock('OLD', undefined)], { writer: dead }),
  ]);
  fs.writeFileSync(path.join(infoDir(dir), '.tmp-half'), '{"vers'); // a writer's temporary file: ignored
  fs.writeFileSync(path.join(infoDir(dir), 'junk.json'), '{"version":1'); // not a record: skipped, said on stderr
  const env = envFor(dir);
  const r = await run(SHOW, [], env);
  t.is(r.code, 0, r.stderr);
  const lines = r.stdout.split('\n');
  t.is(lines[0], headerLine('show-item-locks', os.hostname(), infoDir(dir)));
  const rows = tableLines(r.stdout);
  t.is(rows.length, 4, r.stdout);
  t.regex(rows[0] ?? '', /^0\.0\.0\.0 +2 +15071 +ac\/FBNK\.ACCOUNT +32549 +0x58ba67d8,W +---$/);
  t.regex(rows[1] ?? '', /^127\.0\.0\.1 +4 +15112 .* 0x6bc61286,W +---$/);
  t.regex(rows[2] ?? '', /^10\.44\.1\.61 +6 +15300 .* OLD +-,W +---  \(stale: process \d+ is dead \(its pid now belongs to another process\)\)$/);
  t.regex(rows[3] ?? '', /^10\.44\.1\.55 +1000 +15031 .* 0x0df361bc,W +4$/);
  t.regex(r.stdout, /\nWARNING: port 4 is claimed by 2 live processes/);
  t.regex(r.stderr, /^show-item-locks: WARNING: port 4 is claimed by 2 live processes/m);
  t.regex(r.stderr, /^show-item-locks: note: .*\/junk\.json skipped: /m);
  t.notRegex(r.stderr + r.stdout, /tmp-half/);

  const j = await run(SHOW, ['--json', '-k', '33537'], env);
  t.is(j.code, 0, j.stderr);
  const doc = JSON.parse(j.stdout) as { tool: string; source: { kind: string }; host: string; dir: string; rows: { port: number; waiters: string[]; lock: string; stale?: string }[]; duplicates: unknown[]; warnings: string[] };
  t.is(doc.tool, 'show-item-locks');
  t.deepEqual(doc.source, { kind: 'local' });
  t.is(doc.dir, infoDir(dir));
  t.deepEqual(doc.rows.map((x) => [x.port, x.lock, x.waiters]), [[1000, '0x0df361bc,W', ['4']]]);
  t.is(doc.warnings.length, 1);

  const l = await run(LIST, ['-p', '2'], env);
  t.is(l.code, 0, l.stderr);
  t.regex(l.stdout, /\nPort 2, pid 15071, ipaddr 0\.0\.0\.0, user jbase, program jsh\n +FILENAME +INODE +DEV\n +ac\/FBNK\.ACCOUNT +1483651 +-1\n/);
  t.notRegex(l.stdout, /Port 4/);
  const lj = await run(LIST, ['--json'], env);
  t.is(lj.code, 0, lj.stderr);
  const ldoc = JSON.parse(lj.stdout) as { ports: { port: number; stale?: string }[] };
  t.deepEqual(ldoc.ports.map((p) => [p.port, p.stale !== undefined]), [[2, false], [4, false], [4, false], [6, true], [1000, false]]);
});

test('-h prints the help and exits 0; a usage error exits 2', async (t) => {
  const env = envFor('/nonexistent-jdls-info-test');
  const h = await run(SHOW, ['-h'], env);
  t.is(h.code, 0);
  t.regex(h.stdout, /^show-item-locks - /);
  t.regex(h.stdout, /IPADDR +PORT +PID +FILENAME +RECORD KEY +LOCK# +PORT\/-PID/);
  const lh = await run(LIST, ['--help'], env);
  t.is(lh.code, 0);
  t.regex(lh.stdout, /^list-open-files - /);
  const u = await run(SHOW, ['--bogus'], env);
  t.is(u.code, 2);
  t.regex(u.stderr, /unknown option '--bogus'\ntry show-item-locks -h/);
});

test('no service here and JDLS unset: exit 1 with the reason; JDLS set: the server is asked (and its failure said), --local reads here', async (t) => {
  const nothing = testDir('info');
  t.teardown(() => fs.rmSync(nothing, { recursive: true, force: true }));
  for (const cmd of [SHOW, LIST]) {
    const r = await run(cmd, [], envFor(nothing));
    t.is(r.code, 1);
    t.regex(r.stderr, /: no jdls service on this host and JDLS is not set/);
    t.is(r.stdout, '');
  }
  const dir = installation(t, [rec(2, '0.0.0.0', 15071, [lock('32549', '0x58ba67d8')])]);
  // Port 1 on loopback: nobody listens, the connection is refused at once.
  const env = envFor(dir, { JDLS: 'SERVER=127.0.0.1,1,TIMEOUT=5' });
  const r = await run(SHOW, [], env);
  t.is(r.code, 1);
  t.regex(r.stderr, /cannot reach the lock server at 127\.0\.0\.1,1/);
  const l = await run(SHOW, ['--local'], env);
  t.is(l.code, 0, l.stderr);
  t.is(tableLines(l.stdout).length, 1);
  const s = await run(SHOW, ['--server'], envFor(dir));
  t.is(s.code, 1);
  t.regex(s.stderr, /--server: JDLS is not set/);
});

test('a running service is read locally even before any record exists; after -k with no info directory there is nothing to read', async (t) => {
  const cli = new CliEnv(t);
  await cli.startBackground(['-ib']);
  // The rule under test is "service active": take the directory away if -ib made it.
  fs.rmSync(infoDir(cli.dir), { recursive: true, force: true });
  const r = await run(SHOW, [], envFor(cli.dir));
  t.is(r.code, 0, r.stderr);
  t.regex(r.stdout, /\nNo item locks found\n$/);
  const l = await run(LIST, [], envFor(cli.dir));
  t.is(l.code, 0, l.stderr);
  const k = await cli.run(['-k']);
  t.is(k.code, 0, k.stderr);
  const after = await run(SHOW, [], envFor(cli.dir));
  t.is(after.code, 1);
  t.regex(after.stderr, /no jdls service on this host/);
});

test('permission denied: says who may read the info directory', async (t) => {
  const dir = installation(t, [rec(2, '0.0.0.0', 15071, [lock('32549', '0x58ba67d8')])]);
  fs.chmodSync(dir, 0o755); // the installation is searchable; its info directory (03770, root's group) is not
  fs.chmodSync(infoDir(dir), 0o3770);
  const u = makeUser(t, 'jdlsinfob1');
  const r = asUser(u, ['env', '-u', 'JDLS', `JBCRELEASEDIR=${dir}`, process.execPath, SHOW]);
  t.is(r.code, 1, r.out);
  t.regex(r.out, /cannot read .*proc\/info: permission denied; only root, the installation's owner \(uid 0 \(root\)\) and members of its group \(gid 0 \(root\)\) may read it/);
});

// ===== from another application server: JDLS set ==============================

test('JDLS set: the lock server answers with its records - text, filters (waiters kept), --json, list-open-files', async (t) => {
  const srv = new ServerEnv(t);
  await srv.start(['-ib']);
  // The monitor removes stale records at every wake (docs/info-records.md):
  // port 9's below is stale on purpose, to be shown as such, so the monitor
  // is stopped first (a full run once lost it so); the listener answers alone.
  t.is((await srv.jdls(['-kA'])).code, 0);
  const dir = infoDir(srv.dir);
  fs.mkdirSync(dir, { recursive: true });
  const dead = { kind: 'lockserver' as const, pid: me.pid, start: me.start + 1 };
  for (const r of [
    rec(2, '0.0.0.0', 15071, [lock('32549', '0x58ba67d8')]),
    rec(1000, '10.44.1.55', 15031, [lock('33537', '0x0df361bc')], { writer: { ...me, kind: 'lockserver' } }),
    rec(4, '127.0.0.1', 15112, [lock('USD163170001', '0x6bc61286')]),
    rec(7, '127.0.0.1', 15140, [], { waiting: wait('33537') }),
    rec(9, '10.44.1.56', 15177, [lock('41000', undefined)], { writer: dead }),
  ]) fs.writeFileSync(path.join(dir, recordFileName(r.port, r.ipaddr, r.pid)), JSON.stringify(r), { mode: 0o640 });
  // The application server: an installation of its own with no service and no info directory.
  const app = testDir('info');
  t.teardown(() => fs.rmSync(app, { recursive: true, force: true }));
  const env = envFor(app, { JDLS: `SERVER=127.0.0.1,${srv.port}` });

  const r = await run(SHOW, [], env);
  t.is(r.code, 0, `${r.stderr}\n${srv.logs()}`);
  t.is(r.stdout.split('\n')[0], headerLine('show-item-locks', os.hostname(), dir));
  const rows = tableLines(r.stdout).map((l) => l.split(/ +/));
  t.deepEqual(rows.map((x) => [x[0], x[1], x[2], x[4], x[5], x[6]]), [
    ['0.0.0.0', '2', '15071', '32549', '0x58ba67d8,W', '---'],
    ['127.0.0.1', '4', '15112', 'USD163170001', '0x6bc61286,W', '---'],
    ['10.44.1.56', '9', '15177', '41000', '-,W', '---'],
    ['10.44.1.55', '1000', '15031', '33537', '0x0df361bc,W', '7'],
  ]);
  t.regex(r.stdout, /41000 +-,W +---  \(stale: lock-server process \d+ is dead/);

  const p = await run(SHOW, ['-p', '1000'], env);
  t.is(p.code, 0, p.stderr);
  t.deepEqual(tableLines(p.stdout).map((l) => l.split(/ +/).slice(1, 3).concat(l.split(/ +/).slice(-1))), [['1000', '15031', '7']]);
  const k = await run(SHOW, ['-k', '33537', '--json'], env);
  t.is(k.code, 0, k.stderr);
  const doc = JSON.parse(k.stdout) as { source: { kind: string; server: string; serverPid: number }; dir: string; rows: { port: number; waiters: string[] }[] };
  t.is(doc.source.kind, 'server');
  t.is(doc.source.server, `127.0.0.1,${srv.port}`);
  t.true(srv.lockServers().includes(doc.source.serverPid));
  t.is(doc.dir, dir);
  t.deepEqual(doc.rows.map((x) => [x.port, x.waiters]), [[1000, ['7']]]);

  const l = await run(LIST, ['-f', 'FBNK.ACCOUNT'], env);
  t.is(l.code, 0, l.stderr);
  t.deepEqual([...l.stdout.matchAll(/^Port (\d+), pid (\d+), ipaddr ([\d.]+)/gm)].map((m) => m.slice(1).join(' ')), [
    '2 15071 0.0.0.0', '4 15112 127.0.0.1', '7 15140 127.0.0.1', '9 15177 10.44.1.56', '1000 15031 10.44.1.55',
  ]);
  // --local on the application server: nothing here.
  const loc = await run(SHOW, ['--local'], env);
  t.is(loc.code, 1);
  t.regex(loc.stderr, /no jdls service on this host/);
});
