// cli.test.ts - the `jdls` command, as real processes: parsing, starting and
// stopping the monitor, -dvL and --json listings of locks held by other
// processes, -K/-Ko, tidy-up of a killed owner, isolation of installations.
// Serial: each test starts several Node processes, and the machine has 2 cores.
import test from 'ava';
import fs from 'node:fs';
import { spawn } from 'node:child_process';
import { CliEnv, JDLS, activeMonitorPid, lockRows, sleep } from './helpers/cli-env.js';
import { parseArgs } from '../src/cli/args.js';
import { OsLocks } from '../src/locks/oslock.js';
import { makeOwner, fileId } from '../src/locks/table.js';
import path from 'node:path';

interface JsonLock {
  group: number;
  value: string;
  state: 'held' | 'waiting';
  type: 'READ' | 'WRITE';
  pid: number;
  port: number;
  inode: string;
  dev: string;
  queued: number;
  ip: string;
  key: string;
  keyHex: string;
}
interface JsonDisplay {
  monitor: { pid: number | null; active: boolean; tidyOps: number };
  header: { tidyOps: number; ngroups: number; perGroup: number };
  geometry: { locks: number; groups: number; perGroup: number };
  locks?: JsonLock[];
  memory: { used: number; free: number };
  summary: { inUse: number; queued: number; maxInOneGroup: number; locksMaximum: number };
}

test('combined flags parse as in the guide', (t) => {
  const ok = (argv: string[]): unknown => {
    const r = parseArgs(argv);
    if (!r.ok) throw new Error(r.error.message);
    return r.command;
  };
  t.like(ok(['-ibs13000,50']), { kind: 'start', background: true, size: { locks: 13000, perGroup: 50 }, tidyMinutes: 5, tidyGiven: false });
  t.like(ok(['-ibPT', '-t2']), { kind: 'start', background: true, portLocks: true, timestamps: true, tidyMinutes: 2, tidyGiven: true });
  t.like(ok(['-i', '-s', '13000,50', '-t', '0.02']), { kind: 'start', background: false, size: { locks: 13000, perGroup: 50 }, tidyMinutes: 0.02 });
  t.like(ok(['-iAb']), { kind: 'start', arbiterOnly: true, background: true });
  t.deepEqual(ok(['-dvL']), { kind: 'display', verbose: true, locks: true, json: false });
  t.deepEqual(ok(['-L']), { kind: 'display', verbose: false, locks: true, json: false });
  t.deepEqual(ok(['-d', '--json']), { kind: 'display', verbose: false, locks: false, json: true });
  t.deepEqual(ok(['--json']), { kind: 'display', verbose: true, locks: true, json: true });
  t.deepEqual(ok(['-Ko']), { kind: 'remove', force: true });
  t.deepEqual(ok(['-K']), { kind: 'remove', force: false });
  t.deepEqual(ok(['-kA']), { kind: 'stop', arbiterOnly: true, listenerOnly: false });
  t.deepEqual(ok(['-h']), { kind: 'help' });
  t.deepEqual(ok(['-kD']), { kind: 'stop', arbiterOnly: false, listenerOnly: true });
  t.like(ok(['-ibD', '--port', '50010', '--bind=127.0.0.1']), { kind: 'start', listenerOnly: true, arbiterOnly: false, port: '50010', bind: '127.0.0.1' });
  t.like(ok(['-Chello']), { kind: 'client-test', text: 'hello' });
  const bad = parseArgs(['-s13000']);
  t.true(!bad.ok && /-s/.test(bad.error.message));
});

test.serial('-h lists every option and exits 0', async (t) => {
  const env = new CliEnv(t);
  for (const flag of ['-h', '--help']) {
    const r = await env.run([flag]);
    t.is(r.code, 0);
    for (const opt of ['-i', '-b', '-A', '-D', '--port', '--bind', '-P', '-T', '-snn,mm', '-tnn', '-k', '-K', '-o', '-d', '-v', '-L', '--json', '-h', '-C'])
      t.regex(r.stdout, new RegExp(`^\\s+${opt.replace(/[-]/g, '\\-')}\\s`, 'm'), `${opt} listed`);
    t.regex(r.stdout, /jdls -i \{-bPTAD\}/);
    t.regex(r.stdout, /jdls -Cteststring/);
  }
  t.false(fs.existsSync(env.shm));
});

test.serial('unknown or malformed options exit 2, name the problem, and create nothing', async (t) => {
  const env = new CliEnv(t);
  const cases: [string[], RegExp][] = [
    [['-x'], /unknown option '-x'/],
    [['-ibx'], /unknown option '-x' in '-ibx'/],
    [['-s13000'], /-s needs nn,mm/],
    [['-i', '-s13000'], /-s needs nn,mm/],
    [['-i', '-s0,5'], /number of locks must be/],
    [['-i', '-s100,0'], /locks per group must be/],
    [['-i', '-sabc'], /got 'abc'/],
    [['-i', '-s'], /-s needs a value/],
    [['-i', '-t-1'], /got '-1'/],
    [['-i', '-t0'], /minutes must be/],
    [['-ik'], /conflicting actions -i and -k/],
    [['-dK'], /conflicting actions -K and -d/],
    [[], /no action given/],
    [['-v'], /no action given/],
    [['-ko'], /-o does not apply to -k/],
    [['-ib', '--json'], /--json does not apply to -i/],
    [['--bogus'], /unknown option '--bogus'/],
    [['-ib', 'extra'], /unexpected argument 'extra'/],
    [['-C', 'a', 'b'], /-C takes its test string/],
    [['-ibAD'], /-A .* and -D .* exclude each other/],
    [['-ib', '--port', 'x'], /--port needs a TCP port number 0\.\.65535; got 'x'/],
    [['-ib', '--port=70000'], /--port needs a TCP port number/],
    [['-ib', '--bind', 'nohost'], /--bind needs an IP address/],
    [['-ib', '--port'], /--port needs a value/],
    [['-ibA', '--port', '1'], /--port does not apply to -iA/],
    [['-k', '--bind', '::'], /--bind does not apply to -k/],
  ];
  for (const [args, re] of cases) {
    const r = await env.run(args);
    t.is(r.code, 2, `jdls ${args.join(' ')}: exit code`);
    t.regex(r.stderr, re, `jdls ${args.join(' ')}: message`);
    t.regex(r.stderr, /try jdls -h/);
    t.is(r.stdout, '');
    t.false(fs.existsSync(env.shm), `jdls ${args.join(' ')}: no table`);
  }
  t.false(fs.existsSync(`${env.dir}/jdls-monitor.log`));
});

test.serial('-ibAs13000,50 starts a background monitor; -dvL shows it; a second -ib refuses; -k stops it', async (t) => {
  const env = new CliEnv(t);
  const { pid } = await env.startBackground(['-ibAs13000,50']);
  // Ready means: the header names it and it runs.
  t.true(env.isAlive(pid));
  const d = await env.run(['-dvL']);
  t.is(d.code, 0, d.stderr);
  t.is(activeMonitorPid(d.stdout), pid);
  t.regex(d.stdout, /^Lock listener at pid:\s+Not running$/m);
  t.regex(d.stdout, /^Record locks:\s+13150 locks maximum in 263 groups of 50 locks\/group$/m);
  t.regex(d.stdout, /^\s+0 locks currently in use$/m);
  t.regex(d.stdout, /^Program started:\s+\w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4}$/m);
  t.regex(d.stdout, /^Tidy-up time:\s+5 minutes$/m);
  t.regex(d.stdout, /^Locking mechanism:\s+Shared memory lock table, robust mutexes, locks based on THREAD id$/m);
  t.regex(d.stdout, /^Memory:\s+\d+ bytes used , \d+ bytes free$/m);
  t.true(fs.existsSync(`${env.dir}/jdls-monitor.log`));

  const again = await env.run(['-ib']);
  t.is(again.code, 1);
  t.regex(again.stderr, new RegExp(`jdls: lock monitor already running at pid ${pid}`));

  const k = await env.run(['-k']);
  t.is(k.code, 0, k.stderr);
  t.regex(k.stdout, new RegExp(`stopped`));
  t.false(env.isAlive(pid));
  t.true(fs.existsSync(env.shm), 'the table stays');
  const d2 = await env.run(['-d']);
  t.regex(d2.stdout, /^Lock monitor at pid:\s+Not running$/m);
  const k2 = await env.run(['-kA']);
  t.is(k2.code, 0);
  t.regex(k2.stdout, /not running/);
});

test.serial('-i -s on an existing table warns and keeps the geometry; -P/-T differences warn', async (t) => {
  const env = new CliEnv(t);
  await env.startBackground(['-ibs13000,50']);
  t.is((await env.run(['-k'])).code, 0);
  const { pid, result } = await env.startBackground(['-ibP', '-s', '3020,20']);
  t.regex(result.stderr, /warning: the lock table exists already \(13150 locks in 263 groups of 50 locks\/group\); new sizing -s3020,20 ignored/);
  t.regex(result.stderr, /warning: the existing lock table uses THREAD id based locks; -P ignored/);
  const d = await env.run(['-dv']);
  t.is(activeMonitorPid(d.stdout), pid);
  t.regex(d.stdout, /13150 locks maximum in 263 groups of 50 locks\/group/);
  t.regex(d.stdout, /locks based on THREAD id$/m);
});

test.serial('locks held and queued by other processes appear in -dvL and --json', async (t) => {
  const env = new CliEnv(t);
  await env.startBackground(['-ibs13000,50', '-T']);
  const a = await env.locker([
    { key: '33537', mode: 'write', inode: 1483651, dev: -1 },
    { key: 'USD163170001', mode: 'read', inode: 42, dev: 7 },
    { key: Buffer.from([0x41, 0x01, 0xff, 0x5c]), mode: 'write' },
  ]);
  const b = await env.locker([{ key: '33537', mode: 'write', wait: true }]);
  const c = await env.locker([{ key: 'USD163170001', mode: 'read', inode: 42, dev: 7 }]);

  const d = await env.run(['-dvL']);
  t.is(d.code, 0, d.stderr);
  t.regex(d.stdout, /^Locking mechanism:.*THREAD id, time stamped$/m);
  t.regex(d.stdout, /^Group value {6}pid {5}type  port i-node {3}dev queued ipaddr {6}time {16}key$/m);
  const rows = lockRows(d.stdout);
  // -T: the time column holds date and time (two fields) before the key.
  const byKey = new Map(rows.map((r) => [r[r.length - 1] ?? '', r]));
  t.is(rows.length, 4, d.stdout);
  const w = byKey.get('33537');
  t.truthy(w);
  t.deepEqual(w?.slice(2, 9), [String(a.pid), 'WRITE', '0', '01483651', '-1', '1', '0.0.0.0']);
  t.regex(w?.[1] ?? '', /^0x[0-9a-f]{8}$/);
  const reads = rows.filter((r) => r[r.length - 1] === 'USD163170001');
  t.deepEqual(reads.map((r) => r[2]).sort(), [String(a.pid), String(c.pid)].sort());
  for (const r of reads) t.deepEqual(r.slice(3, 8), ['READ', '0', '00000042', '7', 'None']);
  t.truthy(byKey.get('A\\x01\\xff\\\\'), 'non-printable key bytes escaped');
  t.false(rows.some((r) => r[2] === String(b.pid)), 'a queued request is not a row');
  t.regex(d.stdout, /^\s+4 locks currently in use$/m);
  t.regex(d.stdout, /^\s+1 lock requests queued$/m);

  const j = await env.run(['-dvL', '--json']);
  t.is(j.code, 0, j.stderr);
  const doc = JSON.parse(j.stdout) as JsonDisplay;
  t.true(doc.monitor.active);
  t.is(doc.geometry.locks, 13150);
  t.is(doc.summary.inUse, 4);
  t.is(doc.summary.queued, 1);
  const locks = doc.locks ?? [];
  t.is(locks.length, 5);
  const held = locks.find((l) => l.key === '33537' && l.state === 'held');
  t.like(held, { pid: a.pid, type: 'WRITE', queued: 1, inode: '1483651', dev: '-1', ip: '0.0.0.0', keyHex: Buffer.from('33537').toString('hex') });
  const waiting = locks.find((l) => l.state === 'waiting');
  t.like(waiting, { pid: b.pid, type: 'WRITE', key: '33537' });
  t.truthy(locks.find((l) => l.keyHex === '4101ff5c'));
  t.is(doc.memory.free, (13150 - 5) * 624, 'five entries in use: four held, one queued');

  // --json alone is the whole display; -d --json leaves the locks out.
  const all = JSON.parse((await env.run(['--json'])).stdout) as JsonDisplay;
  t.is(all.locks?.length, 5);
  const brief = JSON.parse((await env.run(['-d', '--json'])).stdout) as JsonDisplay;
  t.is(brief.locks, undefined);
  t.is(brief.summary.inUse, 4);

  // The holder releases and exits: the waiter is granted, the listing follows.
  a.child.stdin?.end();
  await b.waitFor(/^granted /);
  const d2 = await env.run(['-dL']);
  const rows2 = lockRows(d2.stdout);
  t.deepEqual(rows2.map((r) => r[2]).sort(), [String(b.pid), String(c.pid)].sort());
});

test.serial('-k stops the monitor and leaves the table and its locks alone', async (t) => {
  const env = new CliEnv(t);
  const { pid } = await env.startBackground(['-ib']);
  const a = await env.locker([{ key: 'K1', mode: 'write' }]);
  const k = await env.run(['-k']);
  t.is(k.code, 0, k.stderr);
  t.regex(k.stdout, new RegExp(`lock monitor at pid ${pid} stopped`));
  t.false(env.isAlive(pid));
  t.true(fs.existsSync(env.shm));
  const d = await env.run(['-dL']);
  t.regex(d.stdout, /^Lock monitor at pid:\s+Not running$/m);
  t.deepEqual(lockRows(d.stdout).map((r) => [r[2], r[r.length - 1]]), [[String(a.pid), 'K1']]);
});

test.serial('-K refuses while processes have the table, naming them; -Ko removes it', async (t) => {
  const env = new CliEnv(t);
  const { pid } = await env.startBackground(['-ib']);
  const a = await env.locker([{ key: 'K', mode: 'read' }]);
  const r = await env.run(['-K']);
  t.is(r.code, 1);
  t.regex(r.stderr, new RegExp(`^  ${a.pid} .*node`, 'm'));
  t.regex(r.stderr, new RegExp(`^  ${pid} .*jdls`, 'm'), 'the monitor counts as attached');
  t.regex(r.stderr, /jdls -Ko/);
  t.true(fs.existsSync(env.shm));

  const f = await env.run(['-Ko']);
  t.is(f.code, 0, f.stderr);
  t.false(fs.existsSync(env.shm));
  t.false(env.isAlive(pid), 'the monitor was stopped first');
  t.regex(f.stderr, new RegExp(`^  ${a.pid} `, 'm'), 'still-attached processes are named');

  const again = await env.run(['-K']);
  t.is(again.code, 1);
  t.regex(again.stderr, /no lock table for JBCRELEASEDIR=/);
});

test.serial('-K also refuses while a live process holds locks without the table mapped', async (t) => {
  const env = new CliEnv(t);
  await env.startBackground(['-ib']);
  t.is((await env.run(['-k'])).code, 0);
  const a = await env.locker([{ key: 'held', mode: 'write' }], { closeTable: true });
  const r = await env.run(['-K']);
  t.is(r.code, 1);
  t.regex(r.stderr, new RegExp(`^  ${a.pid} .*\\(holds locks; table not mapped\\)$`, 'm'));
  t.true(fs.existsSync(env.shm));
  a.child.kill('SIGKILL');
  await env.until(() => !env.isAlive(a.pid));
  const r2 = await env.run(['-K']);
  t.is(r2.code, 0, r2.stderr);
  t.false(fs.existsSync(env.shm));
});

test.serial('-K removes a table nobody has attached', async (t) => {
  const env = new CliEnv(t);
  await env.startBackground(['-ib']);
  t.is((await env.run(['-k'])).code, 0);
  const r = await env.run(['-K']);
  t.is(r.code, 0, r.stderr);
  t.false(fs.existsSync(env.shm));
});

test.serial('commands without a table: -dvL shows the OS file-lock mechanism and its locks', async (t) => {
  const env = new CliEnv(t);
  const lockDir = path.join(env.dir, 'jbase');
  const empty = await env.run(['-dvL']);
  t.is(empty.code, 0, empty.stderr);
  t.regex(empty.stdout, /^Lock monitor at pid:\s+Not running$/m);
  t.regex(empty.stdout, new RegExp(`^Locking mechanism:\\s+OS file locks in ${lockDir} \\(no shared memory lock table\\)$`, 'm'));
  t.regex(empty.stdout, /^OS record locks:\s+0 locks in 0 lock files$/m);
  // A record lock taken as an OS file lock (no monitor: the routing rule)
  // shows with this process's pid, its mode and the record's file identity.
  const os = OsLocks.open({ lockDir });
  t.teardown(() => os.close());
  t.true(os.tryLock(makeOwner(), fileId(1483651, -1), '33537', 'write').granted);
  const d = await env.run(['-dvL']);
  t.is(d.code, 0, d.stderr);
  t.regex(d.stdout, /^OS record locks:\s+1 locks in 1 lock files$/m);
  t.regex(d.stdout, new RegExp(`^${process.pid}\\s+OFD\\s+WRITE 01483651 -1\\s+0x[0-9a-f]+\\s+jlock_0016a383_ffffffff$`, 'm'));
  const j = JSON.parse((await env.run(['-dvL', '--json'])).stdout) as { mechanism: { kind: string }; osLocks: { pid: number; mode: string; inode: number; dev: number }[] };
  t.is(j.mechanism.kind, 'os');
  t.like(j.osLocks[0], { pid: process.pid, mode: 'write', inode: 1483651, dev: -1 });
  const k = await env.run(['-k']);
  t.is(k.code, 0);
  t.regex(k.stdout, /not running/);
  t.false(fs.existsSync(env.shm));
});

test.serial('the monitor tidies up the lock of a killed process every -t minutes', async (t) => {
  const env = new CliEnv(t);
  const { pid } = await env.startBackground(['-ib', '-t0.01']); // 0.6 s
  const a = await env.locker([{ key: 'orphan', mode: 'write' }]);
  const before = JSON.parse((await env.run(['--json'])).stdout) as JsonDisplay;
  t.is(before.summary.inUse, 1);
  const ops0 = before.header.tidyOps;
  a.child.kill('SIGKILL');
  // Nobody conflicts with the dead owner's lock: only the monitor frees it.
  let last: JsonDisplay | undefined;
  const freed = await env.until(async () => {
    last = JSON.parse((await env.run(['--json'])).stdout) as JsonDisplay;
    return last.summary.inUse === 0;
  }, 15_000, 200);
  t.true(freed, 'the orphaned lock was freed');
  t.true((last?.header.tidyOps ?? 0) >= ops0 + 1);
  const d = await env.run(['-dvL']);
  t.is(activeMonitorPid(d.stdout), pid);
  const ops = /^Tidy-up operations:\s+(\d+)$/m.exec(d.stdout);
  t.true(Number(ops?.[1]) >= 1, d.stdout);
  t.regex(d.stdout, /^Tidy-up time:\s+0.6 seconds$/m); // -t0.01, shown exactly
  t.deepEqual(lockRows(d.stdout), []);
  const log = fs.readFileSync(`${env.dir}/jdls-monitor.log`, 'utf8');
  t.regex(log, /tidy-up freed 1 orphaned lock"/);
});

test.serial('two JBCRELEASEDIRs have independent tables and monitors', async (t) => {
  const one = new CliEnv(t);
  const two = new CliEnv(t);
  t.not(one.shm, two.shm);
  const m1 = await one.startBackground(['-ib']);
  const m2 = await two.startBackground(['-ibs100,10']);
  t.not(m1.pid, m2.pid);
  const a = await one.locker([{ key: 'only-in-one', mode: 'write' }]);
  const j1 = JSON.parse((await one.run(['--json'])).stdout) as JsonDisplay;
  const j2 = JSON.parse((await two.run(['--json'])).stdout) as JsonDisplay;
  t.deepEqual(j1.locks?.map((l) => [l.pid, l.key]), [[a.pid, 'only-in-one']]);
  t.deepEqual(j2.locks, []);
  t.is(j1.monitor.pid, m1.pid);
  t.is(j2.monitor.pid, m2.pid);
  t.is(j2.geometry.groups, 11);
  t.is((await two.run(['-k'])).code, 0);
  t.true(one.isAlive(m1.pid), 'stopping one installation leaves the other');
});

test.serial('foreground -i runs until SIGTERM, logs to stderr, and leaves the table', async (t) => {
  const env = new CliEnv(t);
  const child = env.spawn(['-iT', '-t0.005']);
  let stderr = '';
  let stdout = '';
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  child.stdout?.on('data', (d: Buffer) => (stdout += d.toString()));
  const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
  t.true(await env.until(() => stderr.includes('lock monitor started') && stderr.includes('lock listener started')), stderr);
  const d = await env.run(['-dv']);
  t.is(activeMonitorPid(d.stdout), child.pid);
  t.regex(d.stdout, /^Lock listener at pid:\s+\d+ - Active$/m);
  t.regex(d.stdout, /time stamped$/m);
  // Two tidy-ups (every 0.3 s here): awaited, not slept for (a loaded
  // machine runs fewer of them in a fixed time).
  t.true(await env.until(() => (stderr.match(/tidy-up freed/g) ?? []).length >= 2, 20_000), stderr);
  child.kill('SIGTERM');
  t.is(await exited, 0);
  const all = stderr.trim().split('\n').map((l) => JSON.parse(l) as { msg: string; name: string; level: number });
  // The foreground service: the monitor here, the listener as its child, both on stderr.
  const lines = all.filter((l) => l.name === 'jdls-monitor');
  t.true(all.every((l) => ['jdls-monitor', 'jdls-listener', 'jdls-lockserver'].includes(l.name)));
  t.true(all.some((l) => l.name === 'jdls-listener' && /lock listener started/.test(l.msg)), stderr);
  t.true(all.some((l) => l.name === 'jdls-listener' && /lock listener stopped/.test(l.msg)), stderr);
  t.true(lines.filter((l) => l.msg.startsWith('tidy-up freed')).length >= 2, stderr);
  t.regex(lines[lines.length - 1]?.msg ?? '', /stopped: SIGTERM received/);
  t.is(stdout, '');
  t.true(fs.existsSync(env.shm));
  const after = await env.run(['-d']);
  t.regex(after.stdout, /^Lock monitor at pid:\s+Not running$/m);
});

test.serial('-dvL stops quietly when its reader goes away', async (t) => {
  const env = new CliEnv(t);
  await env.startBackground(['-ibs20000,20']);
  // 5000 locks make a listing far bigger than a pipe's buffer.
  await env.locker([{ key: '', bulk: { prefix: 'K', count: 5000 }, mode: 'write' }]);
  const child = spawn(process.execPath, [JDLS, '-dvL'], { env: env.env, stdio: ['ignore', 'pipe', 'pipe'] });
  if (child.pid) env.track(child.pid);
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  child.stdout.once('data', () => child.stdout.destroy());
  const code = await new Promise<number | null>((r) => child.on('exit', (c) => r(c)));
  t.is(code, 0);
  t.is(stderr, '');
});

test.serial('two -ib at once leave exactly one monitor', async (t) => {
  const env = new CliEnv(t);
  const results = await Promise.all([env.run(['-ib', '-t0.01']), env.run(['-ib', '-t0.01'])]);
  const started = results.flatMap((r) => {
    const m = /started at pid (\d+)/.exec(r.stdout);
    return m ? [Number(m[1])] : [];
  });
  for (const pid of started) env.track(pid);
  t.true(started.length >= 1, JSON.stringify(results));
  for (const r of results) if (r.code !== 0) t.regex(r.stderr, /already running|failed to start/);
  // A monitor that lost the race steps aside within one wake (0.6 s here).
  t.true(await env.until(() => started.filter((p) => env.isAlive(p)).length === 1, 10_000), 'one monitor left');
  const j = JSON.parse((await env.run(['--json'])).stdout) as JsonDisplay;
  t.true(j.monitor.active);
  t.true(started.includes(j.monitor.pid ?? 0));
  t.true(env.isAlive(j.monitor.pid ?? 0));
});
