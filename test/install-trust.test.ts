// install-trust.test.ts - the installation directory as a trust boundary
// (issue 10, docs/security.md "The installation directory"): an unprivileged
// local user who controls the directory, or plants files in it, must not make
// root's jdls append to a file of the user's choosing (logs followed through
// symbolic links), signal a process of the user's choosing (a planted pid
// file), or run with the user's settings (a planted jdls.yaml).
//
// Real programs: `jdls` as root (the test) and as unprivileged users made
// here with useradd (deleted in t.teardown). Every process a test starts is
// killed by pid at teardown. Serial: users are added and removed one test at
// a time, and each test starts several Node processes.
import test, { type ExecutionContext } from 'ava';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { JDLS, runToEnd, sleep, type RunResult } from './helpers/cli-env.js';
import { testDir, recordPid } from './helpers/installations.js';
import { installationProcesses, markerPath, tablePath } from '../src/installation.js';
import { native } from '../src/native.js';
import { LockTable } from '../src/locks/table.js';
import { ShimEnv, SHIM_API } from './helpers/shim-env.js';
import { makeUser, type User } from './helpers/users.js';
import { processAlive } from './helpers/procscan.js';

/** A fresh unprivileged user (userdel at teardown, even if the test fails). */
const addUser = makeUser;

/** Run a command as `u` (setpriv: real and effective ids, no supplementary groups). */
function asUser(u: User, cmd: string, args: string[], env: NodeJS.ProcessEnv = { PATH: process.env['PATH'] ?? '/usr/bin:/bin' }): string {
  return execFileSync('setpriv', [`--reuid=${u.uid}`, `--regid=${u.gid}`, '--clear-groups', cmd, ...args], { encoding: 'utf8', env, timeout: 30_000 });
}

/** What one test started: processes (by pid and start time) and installations whose processes and tables go at teardown. */
class Started {
  readonly pids = new Map<number, number>();
  readonly dirs = new Set<string>();
  readonly paths = new Set<string>();
  constructor(t: ExecutionContext) {
    t.teardown(() => this.cleanup());
  }

  track(pid: number, dir?: string): void {
    if (this.pids.has(pid)) return;
    this.pids.set(pid, native.pidStart(pid));
    if (dir && fs.existsSync(dir)) {
      try {
        recordPid(dir, pid);
      } catch {
        /* a directory the test may not write: the teardown has the pid */
      }
    }
  }

  /** `jdls ARGS` with `env` (as `user` when given), to completion (bounded). */
  run(args: string[], env: NodeJS.ProcessEnv, user?: User, timeoutMs = 30_000): Promise<RunResult> {
    const dir = env['JBCRELEASEDIR'];
    if (dir) this.dirs.add(dir);
    const cmd = user ? 'setpriv' : process.execPath;
    const argv = user ? [`--reuid=${user.uid}`, `--regid=${user.gid}`, '--clear-groups', process.execPath, JDLS, ...args] : [JDLS, ...args];
    return runToEnd(cmd, argv, env, timeoutMs, (pid) => this.track(pid)).then((r) => {
      for (const m of r.stdout.matchAll(/started at pid (\d+)/g)) this.track(Number(m[1]));
      return r;
    });
  }

  /** A process we own and end at teardown (e.g. the "unrelated root process"). */
  spawn(cmd: string, args: string[], env: NodeJS.ProcessEnv = process.env): ChildProcess {
    const c = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env });
    if (c.pid) this.track(c.pid);
    return c;
  }

  alive(pid: number): boolean {
    return processAlive(pid);
  }


  async cleanup(): Promise<void> {
    for (const d of this.dirs) for (const pid of installationProcesses(d)) this.track(pid);
    const mine = [...this.pids].filter(([pid, start]) => this.alive(pid) && native.pidStart(pid) === start);
    for (const [pid] of mine) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
    const deadline = Date.now() + 5_000;
    while (mine.some(([p, st]) => this.alive(p) && native.pidStart(p) === st) && Date.now() < deadline) await sleep(20);
    for (const d of this.dirs) {
      const shm = tablePath(d);
      fs.rmSync(shm, { force: true });
      fs.rmSync(markerPath(shm), { force: true });
    }
    for (const p of this.paths) fs.rmSync(p, { recursive: true, force: true });
  }
}

const PRECIOUS = 'precious: nobody appends here\n';

/** A root-owned file nobody else may write, in a root-only directory: what the attacker aims the links at. */
function rootTarget(base: string): string {
  const d = path.join(base, 'root-only');
  fs.mkdirSync(d, { mode: 0o700 });
  const f = path.join(d, 'precious.txt');
  fs.writeFileSync(f, PRECIOUS, { mode: 0o600 });
  return f;
}

/**
 * A base directory in /tmp that unprivileged users can traverse (0711), so
 * that the attacker plants files as itself (the run root of `npm test` is
 * 0700). Removed at teardown.
 */
function traversableBase(s: Started): string {
  const base = fs.mkdtempSync('/tmp/jdlstest-trust-');
  fs.chmodSync(base, 0o711);
  s.paths.add(base);
  return base;
}

const listenerYaml = (dir: string): string => `port: 0\nbind: 127.0.0.1\nlockDir: ${path.join(dir, 'jbase')}\n`;
const rootEnv = (dir: string): NodeJS.ProcessEnv => {
  const env: NodeJS.ProcessEnv = { ...process.env, JBCRELEASEDIR: dir, JDLS_SERVICE_WAIT_MS: '2000' };
  delete env['JDLS_LOG_LEVEL'];
  delete env['JDLS_SERVER_CONFIG'];
  return env;
};

/** A root process that has nothing to do with jdls (`sleep 60`), and its start time. */
async function unrelated(s: Started): Promise<{ pid: number; start: number }> {
  const c = s.spawn('sleep', ['60']);
  const pid = c.pid ?? 0;
  for (let i = 0; i < 200 && !fs.existsSync(`/proc/${pid}`); i++) await sleep(5);
  return { pid, start: native.pidStart(pid) };
}

const refusal = /installation directory .* refused/;

test.serial('an installation directory owned by another user is refused: root appends to none of its planted logs', async (t) => {
  const s = new Started(t);
  const evil = addUser(t, 'jdlsb1a');
  const base = traversableBase(s);
  const target = rootTarget(base);
  const dir = path.join(base, 'inst');
  fs.mkdirSync(dir, { mode: 0o755 });
  fs.chownSync(dir, evil.uid, evil.gid);
  // The attacker, as itself: aims every log at root's file, and writes a config.
  for (const log of ['jdls-monitor.log', 'jdls-listener.log']) asUser(evil, 'ln', ['-s', target, path.join(dir, log)]);
  asUser(evil, 'sh', ['-c', `printf '${listenerYaml(dir).replace(/\n/g, '\\n')}' > ${dir}/jdls.yaml`]);

  const r = await s.run(['-ib'], rootEnv(dir));
  t.is(fs.readFileSync(target, 'utf8'), PRECIOUS, 'root appended to the file the attacker chose');
  t.not(r.code, 0, r.stdout);
  t.regex(r.stderr, refusal);
  t.true(r.stderr.includes(dir) && r.stderr.includes(`uid ${evil.uid}`) && /mode 0?755/.test(r.stderr), r.stderr);
  // The other entry points refuse it too.
  for (const args of [['-k'], ['-dv'], ['-K']]) {
    const o = await s.run(args, rootEnv(dir));
    t.not(o.code, 0, `jdls ${args.join(' ')}: ${o.stdout}`);
    t.regex(o.stderr, refusal, `jdls ${args.join(' ')}`);
  }
  t.is(fs.readFileSync(target, 'utf8'), PRECIOUS);
});

test.serial('a directory writable by others is refused, even owned by root', async (t) => {
  const s = new Started(t);
  const base = traversableBase(s);
  const dir = path.join(base, 'inst');
  fs.mkdirSync(dir);
  fs.chmodSync(dir, 0o1777);
  fs.writeFileSync(path.join(dir, 'jdls.yaml'), listenerYaml(dir));
  const r = await s.run(['-ibD'], rootEnv(dir));
  t.not(r.code, 0, r.stdout);
  t.regex(r.stderr, refusal);
  t.regex(r.stderr, /writable by others/);
  t.regex(r.stderr, /mode 1777/);
});

test.serial('a planted pid file in a directory the attacker owns: jdls -kD and -k signal nothing', async (t) => {
  const s = new Started(t);
  const evil = addUser(t, 'jdlsb2a');
  const base = traversableBase(s);
  const dir = path.join(base, 'inst');
  fs.mkdirSync(dir, { mode: 0o755 });
  fs.chownSync(dir, evil.uid, evil.gid);
  const victim = await unrelated(s);
  // Everything in it is public: /proc/<pid>/stat gives the start time.
  const rec = JSON.stringify({ pid: victim.pid, start: victim.start, port: 1, addr: '127.0.0.1', mechanism: 'os', startedMs: 0 });
  asUser(evil, 'sh', ['-c', `printf '%s\\n' '${rec}' > ${dir}/jdls-listener.json`]);
  for (const args of [['-kD'], ['-k']]) {
    const r = await s.run(args, rootEnv(dir));
    t.true(s.alive(victim.pid) && native.pidStart(victim.pid) === victim.start, `jdls ${args.join(' ')} signalled pid ${victim.pid}: ${r.stdout}`);
    t.not(r.code, 0, `jdls ${args.join(' ')}: ${r.stdout}`);
    t.regex(r.stderr, refusal);
  }
});

test.serial('a pid file or header naming a process that is not jdls: -kD, -k and -Ko signal nothing', async (t) => {
  const s = new Started(t);
  const dir = testDir('trust');
  s.paths.add(dir);
  s.dirs.add(dir);
  const victim = await unrelated(s);
  // In a trusted directory (root's, 0700): a stale pid file whose pid the
  // kernel gave to an unrelated process. Its start time even matches (the
  // attacker's best case, or a pid file copied between hosts).
  fs.writeFileSync(
    path.join(dir, 'jdls-listener.json'),
    `${JSON.stringify({ pid: victim.pid, start: victim.start, port: 1, addr: '127.0.0.1', mechanism: 'os', startedMs: 0 })}\n`,
    { mode: 0o640 },
  );
  for (const args of [['-kD'], ['-k']]) {
    const r = await s.run(args, rootEnv(dir));
    t.true(s.alive(victim.pid) && native.pidStart(victim.pid) === victim.start, `jdls ${args.join(' ')} signalled pid ${victim.pid}: ${r.stdout}`);
    t.is(r.code, 0, r.stderr);
    t.regex(r.stdout, /lock listener not running/);
  }
  // The table header names the monitor: the same check.
  const table = LockTable.create({ releaseDir: dir });
  table.setHeader('monitorStart', victim.start);
  table.setHeader('monitorPid', victim.pid);
  table.close();
  for (const args of [['-kA'], ['-Ko']]) {
    const r = await s.run(args, rootEnv(dir));
    t.true(s.alive(victim.pid) && native.pidStart(victim.pid) === victim.start, `jdls ${args.join(' ')} signalled pid ${victim.pid}: ${r.stdout} ${r.stderr}`);
  }
});

test.serial('planted symbolic links in a group-writable installation directory are not followed (logs, broker pid file)', async (t) => {
  const s = new Started(t);
  const evil = addUser(t, 'jdlsb3a');
  const base = traversableBase(s);
  const target = rootTarget(base);
  // Root's installation, shared with the attacker's group (allowed: the
  // jdls group is the directory's group): the attacker may create files.
  const dir = path.join(base, 'inst');
  fs.mkdirSync(dir);
  fs.chownSync(dir, 0, evil.gid);
  fs.chmodSync(dir, 0o770);
  fs.writeFileSync(path.join(dir, 'jdls.yaml'), listenerYaml(dir), { mode: 0o640 });
  for (const log of ['jdls-monitor.log', 'jdls-listener.log']) asUser(evil, 'ln', ['-s', target, path.join(dir, log)]);
  const r = await s.run(['-ib'], rootEnv(dir));
  t.is(fs.readFileSync(target, 'utf8'), PRECIOUS, 'root appended to the file the attacker chose');
  t.not(r.code, 0, r.stdout);
  t.regex(r.stderr, /symbolic link/);
  // Only the listener's log is planted: the monitor starts, the listener does not.
  fs.rmSync(path.join(dir, 'jdls-monitor.log'));
  const r2 = await s.run(['-ib'], rootEnv(dir));
  t.is(fs.readFileSync(target, 'utf8'), PRECIOUS, 'root appended to the file the attacker chose');
  t.not(r2.code, 0, r2.stdout);
  t.regex(r2.stderr, /listener log\b.*symbolic link/);
  t.is((fs.statSync(path.join(dir, 'jdls-monitor.log')).mode & 0o777).toString(8), '640');
  await s.run(['-k'], rootEnv(dir));

  // The broker's pid file (<socket>.pid), with the socket named by
  // JDLS_BROKER in a directory the group may write (the default socket's
  // per-user directory is 0700 and refused when someone else made it:
  // broker-trust.test.ts).
  asUser(evil, 'mkdir', ['-m', '0770', path.join(dir, 'tmp')]);
  asUser(evil, 'ln', ['-s', target, path.join(dir, 'tmp', 'jdls-broker.sock.pid')]);
  const broker = s.spawn(process.execPath, [JDLS, '--broker'], {
    ...rootEnv(dir), JDLS_BROKER_IDLE_MS: '60000', JDLS_BROKER: path.join(dir, 'tmp', 'jdls-broker.sock'),
  });
  let err = '';
  broker.stderr?.on('data', (d: Buffer) => (err += d.toString()));
  let exited = false;
  broker.on('exit', () => (exited = true));
  const deadline = Date.now() + 10_000;
  while (!/broker listening|broker cannot|refus/.test(err) && !exited && Date.now() < deadline) await sleep(25);
  t.is(fs.readFileSync(target, 'utf8'), PRECIOUS, `the broker wrote its pid into the file the attacker chose: ${err}`);
  t.regex(err, /broker listening/);
  t.false(fs.lstatSync(path.join(dir, 'tmp', 'jdls-broker.sock.pid')).isSymbolicLink(), 'the planted link was replaced');
  if (broker.pid && !exited) process.kill(broker.pid, 'SIGTERM');
});

test.serial('jdls.yaml is honoured only if root or the service user owns it, no one else may write it, and it is no symbolic link', async (t) => {
  const s = new Started(t);
  const evil = addUser(t, 'jdlsb4a');
  const dir = testDir('trust');
  s.paths.add(dir);
  s.dirs.add(dir);
  const yaml = path.join(dir, 'jdls.yaml');
  const theirs = path.join(dir, 'theirs.yaml');
  fs.writeFileSync(theirs, listenerYaml(dir));
  fs.chownSync(theirs, evil.uid, evil.gid);
  const cases: [string, () => void, RegExp][] = [
    ['a symbolic link', () => fs.symlinkSync(theirs, yaml), /symbolic link/],
    ['owned by another user', () => { fs.copyFileSync(theirs, yaml); fs.chownSync(yaml, evil.uid, evil.gid); }, new RegExp(`owned by uid ${evil.uid}`)],
    ['writable by others', () => { fs.writeFileSync(yaml, listenerYaml(dir)); fs.chmodSync(yaml, 0o666); }, /writable by others/],
  ];
  for (const [what, plant, why] of cases) {
    fs.rmSync(yaml, { force: true });
    plant();
    const r = await s.run(['-ibD'], rootEnv(dir));
    t.not(r.code, 0, `${what}: ${r.stdout}`);
    t.regex(r.stderr, why, what);
    t.true(r.stderr.includes(yaml), what);
    await s.run(['-kD'], rootEnv(dir));
  }
});

test.serial('HOME unset: a /tmp/jdls-<uid> made by another user is refused; one jdls makes is 0750 with 0640 files', async (t) => {
  const s = new Started(t);
  const evil = addUser(t, 'jdlsb5a');
  const user = addUser(t, 'jdlsb5v');
  const dflt = `/tmp/jdls-${user.uid}`;
  fs.rmSync(dflt, { recursive: true, force: true });
  s.paths.add(dflt);
  t.teardown(() => {
    for (const f of fs.readdirSync('/dev/shm')) if (f.startsWith(`jdls-${user.uid}-`)) fs.rmSync(`/dev/shm/${f}`, { force: true });
  });
  // The user's own file, which the attacker wants the user's monitor to append to.
  const base = traversableBase(s);
  const mine = path.join(base, 'mine');
  fs.mkdirSync(mine, { mode: 0o700 });
  fs.chownSync(mine, user.uid, user.gid);
  const target = path.join(mine, 'notes.txt');
  fs.writeFileSync(target, PRECIOUS, { mode: 0o600 });
  fs.chownSync(target, user.uid, user.gid);

  asUser(evil, 'mkdir', ['-m', '0755', dflt]);
  asUser(evil, 'ln', ['-s', target, path.join(dflt, 'jdls-monitor.log')]);
  const env: NodeJS.ProcessEnv = { PATH: process.env['PATH'] ?? '/usr/bin:/bin', JDLS_SERVICE_WAIT_MS: '2000' };
  s.dirs.add(dflt);
  const r = await s.run(['-ibA'], env, user);
  t.is(fs.readFileSync(target, 'utf8'), PRECIOUS, "the user's monitor appended to the file the attacker chose");
  t.not(r.code, 0, r.stdout);
  t.regex(r.stderr, refusal);
  t.true(r.stderr.includes(dflt) && r.stderr.includes(`uid ${evil.uid}`), r.stderr);
  await s.run(['-k'], { ...env, JBCRELEASEDIR: dflt }, user);

  // Not there: jdls makes it, 0750, and its log 0640.
  fs.rmSync(dflt, { recursive: true, force: true });
  const ok = await s.run(['-ibA'], env, user);
  t.is(ok.code, 0, ok.stderr);
  const st = fs.lstatSync(dflt);
  t.is(st.uid, user.uid);
  t.is((st.mode & 0o7777).toString(8), '750');
  t.is((fs.statSync(path.join(dflt, 'jdls-monitor.log')).mode & 0o777).toString(8), '640');
  const k = await s.run(['-k'], env, user);
  t.is(k.code, 0, k.stderr);
});

test.serial('the files jdls makes in the installation directory are 0640', async (t) => {
  const s = new Started(t);
  const dir = testDir('trust');
  s.paths.add(dir);
  s.dirs.add(dir);
  fs.writeFileSync(path.join(dir, 'jdls.yaml'), listenerYaml(dir), { mode: 0o640 });
  const r = await s.run(['-ib'], rootEnv(dir));
  t.is(r.code, 0, r.stderr);
  for (const f of ['jdls-monitor.log', 'jdls-listener.log', 'jdls-listener.json'])
    t.is((fs.lstatSync(path.join(dir, f)).mode & 0o777).toString(8), '640', f);
  const k = await s.run(['-k'], rootEnv(dir));
  t.is(k.code, 0, k.stderr);
});

test.serial("the shim does not follow a link planted at the broker's log (<socket>.log)", async (t) => {
  const s = new ShimEnv(t);
  const target = rootTarget(s.cli.dir);
  const JDLS = await s.startServer();
  fs.mkdirSync(path.dirname(s.brokerSocket), { recursive: true, mode: 0o700 }); // the per-user directory's mode
  fs.symlinkSync(target, `${s.brokerSocket}.log`);
  const r = await s.run(SHIM_API, ['4242', '7', 'x:K1', 'u:K1'], { env: { JDLS } });
  t.is(r.code, 0, r.stderr);
  t.deepEqual(r.stdout.trim().split('\n'), ['ok', 'ok']);
  t.truthy(s.brokerPid(), 'the shim started a broker');
  t.is(fs.readFileSync(target, 'utf8'), PRECIOUS, 'the broker logged into the file the link names');
});

test.serial('the way to the directory counts too: a parent owned by another user, a link made by another user', async (t) => {
  const s = new Started(t);
  const evil = addUser(t, 'jdlsb6a');
  const base = traversableBase(s);
  // Root's directory inside the attacker's: the attacker can rename it away and put their own in its place.
  const theirs = path.join(base, 'theirs');
  fs.mkdirSync(theirs, { mode: 0o755 });
  fs.chownSync(theirs, evil.uid, evil.gid);
  const inner = path.join(theirs, 'inst');
  fs.mkdirSync(inner, { mode: 0o750 });
  const r = await s.run(['-dv'], rootEnv(inner));
  t.not(r.code, 0);
  t.regex(r.stderr, refusal);
  t.true(r.stderr.includes(`${theirs} is a directory above it owned by another user`), r.stderr);
  // A link the attacker made (in a sticky directory anyone may write) to root's own directory.
  const mine = testDir('trust');
  s.paths.add(mine);
  const pub = path.join(base, 'pub');
  fs.mkdirSync(pub);
  fs.chmodSync(pub, 0o1777);
  const link = path.join(pub, 'link');
  asUser(evil, 'ln', ['-s', mine, link]);
  const l = await s.run(['-dv'], rootEnv(link));
  t.not(l.code, 0);
  t.regex(l.stderr, /symbolic link owned by another user/);
  // Root's own link to root's own directory is fine.
  fs.rmSync(link);
  fs.symlinkSync(mine, link);
  const ok = await s.run(['-dv'], rootEnv(link));
  t.notRegex(ok.stderr, refusal);
});
