// broker-trust.test.ts - issue 10, "Trust boundaries on the host": the broker
// socket. With a shared JBCRELEASEDIR another local user (made here with
// useradd) can listen where preloaded programs look for their broker: an
// impostor that answers GRANTED to everything (test/fixtures/fake-broker.ts)
// must not be believed by root's programs, whether found at the default path
// or named by JDLS_BROKER; and a broker serves only its own uid. Real
// processes: jdls-shimapi under the shim, `jdls --broker`, a `jdls -ib`
// server. Serial: several processes each; users are global state.
import test, { type ExecutionContext } from 'ava';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { TEST_PREFIX } from './helpers/installations.js';
import { Proc, withTimeout, nodeFixture } from './helpers/table-env.js';
import { ShimEnv, SHIM_API, SHIM } from './helpers/shim-env.js';
import { makeUser, type User } from './helpers/users.js';
import { brokerSocketPath } from '../src/broker/paths.js';
import { isOurProcess, readPidRecord } from '../src/safefile.js';

const GUIDE = /^Client: unable to connect to distributed lock service, locks not enabled$/m;

/** Start a process as `u` (setpriv), killed at teardown. */
function startAs(t: ExecutionContext, u: User, label: string, cmd: string, args: string[], env: NodeJS.ProcessEnv = process.env): Proc {
  const p = new Proc(spawn('setpriv', [`--reuid=${u.uid}`, `--regid=${u.gid}`, '--clear-groups', cmd, ...args], { env, stdio: ['pipe', 'pipe', 'pipe'] }), label);
  t.teardown(async () => {
    if (p.running) {
      try { process.kill(p.pid, 'SIGKILL'); } catch { /* gone meanwhile */ }
    }
    await withTimeout(p.exited, 5000, `${label} to die`).catch(() => undefined);
  });
  return p;
}

/**
 * An installation directory another user can reach: directly in os.tmpdir()
 * (the run root is 0700), 0755, its tmp/ 01777 (as a shared JBCRELEASEDIR
 * is). Programs run with it as JBCRELEASEDIR; the server stays the
 * ShimEnv's. Removed at teardown.
 */
function sharedInstallation(t: ExecutionContext): { dir: string; tmp: string } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `${TEST_PREFIX}brokerinst-`));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  fs.chmodSync(dir, 0o755);
  const tmp = path.join(dir, 'tmp');
  fs.mkdirSync(tmp);
  fs.chmodSync(tmp, 0o1777);
  return { dir, tmp };
}

test.serial('an impostor broker of another user at the default socket path: root\'s preloaded program refuses it (exit 1, the guide\'s message) and takes no lock from it', async (t) => {
  const u = makeUser(t, 'jdlsc3');
  const s = new ShimEnv(t);
  const JDLS = await s.startServer();
  const { dir: inst, tmp } = sharedInstallation(t);
  // Where root's program looks today, and where it will look (the per-uid
  // directory, which the impostor makes first, as theirs).
  const paths = [path.join(tmp, 'jdls-broker.sock'), brokerSocketPath({ ...s.env, JDLS, JBCRELEASEDIR: inst })];
  const fakes: Proc[] = [];
  for (const p of [...new Set(paths)]) {
    if (!p.startsWith(tmp)) continue; // XDG_RUNTIME_DIR: not reachable by the user at all
    const dir = path.dirname(p);
    if (dir !== tmp) {
      fs.rmSync(dir, { recursive: true, force: true });
      fs.mkdirSync(dir, { mode: 0o777 });
      fs.chmodSync(dir, 0o777);
      fs.chownSync(dir, u.uid, u.gid);
    }
    const f = startAs(t, u, `fake broker ${p}`, process.execPath, [nodeFixture('fake-broker'), p]);
    t.is(await f.line(), 'LISTENING', f.stderr);
    fakes.push(f);
  }
  const r = await s.run(SHIM_API, ['4242', '7', 'x:K'], { env: { JDLS, JBCRELEASEDIR: inst } });
  t.deepEqual(r.stdout.trim() === '' ? [] : r.stdout.trim().split('\n'), [], 'the program believed the impostor');
  t.is(r.code, 1, r.stderr);
  t.regex(r.stderr, GUIDE);
  t.log(r.stderr.trim());
  for (const f of fakes) {
    f.release();
    await withTimeout(f.exited, 5000, 'fake broker');
    t.is(await f.line(500).catch(() => undefined), undefined, 'the impostor granted a lock');
  }
});

test.serial('JDLS_BROKER naming an impostor of another user: refused by the peer check (SO_PEERCRED)', async (t) => {
  const u = makeUser(t, 'jdlsc4');
  const s = new ShimEnv(t);
  const JDLS = await s.startServer();
  const { tmp } = sharedInstallation(t);
  const sock = path.join(tmp, 'elsewhere.sock');
  const f = startAs(t, u, 'fake broker', process.execPath, [nodeFixture('fake-broker'), sock]);
  t.is(await f.line(), 'LISTENING', f.stderr);
  const r = await s.run(SHIM_API, ['4242', '7', 'x:K'], { env: { JDLS, JDLS_BROKER: sock } });
  t.is(r.code, 1, `the program believed the impostor: ${r.stdout}`);
  t.regex(r.stderr, GUIDE);
  t.regex(r.stderr, new RegExp(`uid ${u.uid}`));
  f.release();
  await withTimeout(f.exited, 5000, 'fake broker');
  t.is(await f.line(500).catch(() => undefined), undefined, 'the impostor granted a lock');
});

test.serial('a broker serves its own uid only: root\'s broker refuses another user\'s program (which ends with the guide\'s message)', async (t) => {
  const u = makeUser(t, 'jdlsc5');
  const s = new ShimEnv(t);
  const JDLS = await s.startServer();
  const { tmp } = sharedInstallation(t);
  const sock = path.join(tmp, 'roots.sock');
  // root's broker, by hand, on a socket everyone may connect to
  const env: NodeJS.ProcessEnv = { ...s.env, JDLS, JDLS_BROKER: sock };
  delete env['LD_PRELOAD'];
  const broker = new Proc(spawn(process.execPath, [path.resolve(SHIM, '../../../dist/src/cli/jdls.js'), '--broker'], { env, stdio: ['ignore', 'pipe', 'pipe'] }), 'root broker');
  t.teardown(async () => {
    if (broker.running) process.kill(broker.pid, 'SIGTERM');
    await withTimeout(broker.exited, 5000, 'broker').catch(() => undefined);
  });
  for (const end = Date.now() + 10_000; !fs.existsSync(`${sock}.pid`);) {
    if (Date.now() > end) throw new Error(`broker did not start: ${broker.stderr}`);
    await new Promise((r) => setTimeout(r, 20));
  }
  fs.chmodSync(sock, 0o777);
  // root's own program is served
  const mine = await s.run(SHIM_API, ['4242', '7', 'x:K', 'u:K'], { env: { JDLS, JDLS_BROKER: sock } });
  t.deepEqual(mine.stdout.trim().split('\n'), ['ok', 'ok'], mine.stderr);
  // another user's program is not
  const theirs = startAs(t, u, 'user program', SHIM_API, ['4242', '7', 'x:K'], { ...s.env, JDLS, JDLS_BROKER: sock, LD_PRELOAD: SHIM });
  const exit = await withTimeout(theirs.exited, 15_000, 'user program');
  t.is(await theirs.line(500).catch(() => undefined), undefined, 'root\'s broker served another user');
  t.is(exit.code, 1, theirs.stderr);
  t.regex(theirs.stderr, GUIDE);
});

test.serial('one rule in C and TypeScript: the broker a preloaded program starts listens where src/broker/paths.ts says - the per-uid directory, and under XDG_RUNTIME_DIR', async (t) => {
  const s = new ShimEnv(t);
  const JDLS = await s.startServer();
  const r = await s.run(SHIM_API, ['4242', '7', 'x:K'], { env: { JDLS } });
  t.deepEqual(r.stdout.trim().split('\n'), ['ok'], r.stderr);
  t.is(path.dirname(s.brokerSocket), path.join(s.cli.dir, 'tmp', `broker-${process.geteuid?.() ?? 0}`));
  t.truthy(s.brokerPid(), 'a broker at the TypeScript rule\'s path');
  t.is(fs.statSync(path.dirname(s.brokerSocket)).mode & 0o7777, 0o700);

  const xdg = path.join(s.cli.dir, 'run');
  fs.mkdirSync(xdg, { mode: 0o700 });
  const env = { ...s.env, JDLS, XDG_RUNTIME_DIR: xdg };
  const sock = brokerSocketPath(env);
  t.true(sock.startsWith(`${xdg}/jdls/`), sock);
  const r2 = await s.run(SHIM_API, ['4242', '7', 'x:K'], { env: { JDLS, XDG_RUNTIME_DIR: xdg } });
  t.deepEqual(r2.stdout.trim().split('\n'), ['ok'], r2.stderr);
  t.true(fs.existsSync(`${sock}.pid`), `no broker at ${sock}: ${fs.readdirSync(path.join(xdg, 'jdls')).join(' ')}`);
  const rec = readPidRecord(`${sock}.pid`);
  if (!rec || !isOurProcess(rec.pid, rec.start)) throw new Error(`the pid file ${sock}.pid names no broker of ours`);
  process.kill(rec.pid, 'SIGTERM');
  for (const end = Date.now() + 10_000; fs.existsSync(`${sock}.pid`);) {
    if (Date.now() > end) throw new Error('the XDG broker did not stop');
    await new Promise((res) => setTimeout(res, 20));
  }
});
