// admin.test.ts - the operator's controls (src/server/admin.ts, the admin
// socket; src/cli/admin-cli.ts): client sessions listed with their fields,
// one session dropped without touching the others or the lock-server
// process, an administrator's release of a stuck lock (by file name from the
// info records, by file and key, by port - remote and local owners), the
// waiter granted with a higher fencing token than the released holder's
// (a FenceKeeper refuses the old holder), who did it in the listener log,
// refusal for another user, and the OS locks of OSLOCKS requests in -dvL
// while the monitor runs.
// Serial: each test runs a monitor, a listener and lock servers.
import test, { type ExecutionContext } from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { execFileSync, spawnSync } from 'node:child_process';
import { ServerEnv, sleep } from './helpers/server-env.js';
import { FILE, expectType, type WireClient } from './helpers/wire-client.js';
import { runToEnd } from './helpers/cli-env.js';
import { createUser, removeUser, type User } from './helpers/users.js';
import { testRoot } from './helpers/installations.js';
import { FenceKeeper } from '../src/fencing.js';
import { makeOwner, fileId } from '../src/locks/table.js';
import { infoDir, recordFileName, type InfoRecord } from '../src/info/format.js';
import { adminSocketPath } from '../src/server/admin.js';
import type { DropAnswer, ReleaseAnswer, SessionsAnswer } from '../src/server/admin-types.js';
import { native } from '../src/native.js';

const RELEASE = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..', 'src', 'cli', 'release-item-locks.js');

/** Poll until `f` is true (bounded): never assume an order the code does not promise. */
async function until(t: ExecutionContext, what: string, f: () => boolean | Promise<boolean>, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await f())) {
    if (Date.now() > end) {
      t.fail(`timed out waiting for: ${what}`);
      throw new Error(`timed out: ${what}`);
    }
    await sleep(25);
  }
}

async function sessions(t: ExecutionContext, env: ServerEnv): Promise<SessionsAnswer> {
  const r = await env.jdls(['--sessions', '--json']);
  t.is(r.code, 0, r.stderr);
  return JSON.parse(r.stdout) as SessionsAnswer;
}

function release(env: ServerEnv, args: string[]): ReturnType<typeof runToEnd> {
  return runToEnd(process.execPath, [RELEASE, ...args], env.env, 30_000);
}

const listenerLog = (env: ServerEnv): string => {
  try {
    return fs.readFileSync(path.join(env.dir, 'jdls-listener.log'), 'utf8');
  } catch {
    return '';
  }
};

/** A synthetic info record naming FILE (4242/7) CUSTOMERS, as a writer would (src/info/format.ts). */
function writeRecord(env: ServerEnv, port: number, pid: number): void {
  const dir = infoDir(env.dir);
  fs.mkdirSync(dir, { recursive: true });
  const rec: InfoRecord = {
    version: 1, port, pid, ipaddr: '127.0.0.1', host: 'testhost', user: 'tester', program: 'wire-client',
    startedMs: Date.now(), updatedMs: Date.now(),
    writer: { kind: 'local', pid: process.pid, start: native.pidStart(process.pid) },
    files: [{ name: '/data/app/CUSTOMERS', inode: FILE.inode.toString(), dev: FILE.dev.toString() }],
    locks: [], stats: { locks: 0, waits: 0, waitMs: 0, retries: 0 },
  };
  fs.writeFileSync(path.join(dir, recordFileName(port, '127.0.0.1', pid)), JSON.stringify(rec));
}

test.serial('sessions list both clients of one lock-server process with their fields; dropping one releases its locks and leaves the other and the process alone', async (t) => {
  const env = new ServerEnv(t);
  await env.start();
  const a = await env.client({ pid: 8101, port: 11, host: 'hostA', program: 'progA', tokens: true });
  const b = await env.client({ pid: 8102, port: 12, host: 'hostB', program: 'progB' });
  t.is(a.welcome.serverPid, b.welcome.serverPid, 'one lock-server process serves both');
  const ls = a.welcome.serverPid;
  const ga = expectType(await a.lock('A1'), 'GRANTED');
  expectType(await a.lock('A2', 'read'), 'GRANTED');
  expectType(await b.lock('B1'), 'GRANTED');
  const waitB = b.lock('A1'); // waits for A's lock
  let s = await sessions(t, env);
  await until(t, 'B shown waiting', async () => {
    s = await sessions(t, env);
    return s.sessions.find((x) => x.clientPid === 8102)?.waiting.length === 1;
  });
  t.deepEqual(s.silent, []);
  t.is(s.sessions.length, 2);
  const sa = s.sessions.find((x) => x.clientPid === 8101);
  const sb = s.sessions.find((x) => x.clientPid === 8102);
  if (!sa || !sb) return t.fail('both sessions listed');
  t.is(sa.lockServer, ls);
  t.is(sb.lockServer, ls);
  t.not(sa.conn, sb.conn);
  t.is(sa.addr, '127.0.0.1');
  t.is(sa.remotePort, a.sock.localPort ?? -1, 'the client address:port as the server sees it');
  t.is(sa.clientPort, 11);
  t.is(sa.host, 'hostA');
  t.is(sa.program, 'progA');
  t.true(Math.abs(sa.connectedMs - Date.now()) < 60_000);
  t.is(sa.lockCount, 2);
  const locksA = [...sa.locks].sort((x, y) => x.key.localeCompare(y.key));
  t.is(locksA.length, 2);
  t.like(locksA[0], { key: 'A1', mode: 'write', kind: 'record', inode: FILE.inode.toString(), dev: FILE.dev.toString() });
  t.like(locksA[1], { key: 'A2', mode: 'read', kind: 'record' });
  t.is(locksA[0]?.token, ga.token?.toString(), 'the held lock\'s fencing token');
  t.like(sb.waiting[0], { key: 'A1', mode: 'write', kind: 'record' });
  t.deepEqual(sb.locks.map((l) => l.key), ['B1']);

  // -dvL shows them, one line per client.
  const d = await env.jdls(['-dvL']);
  t.is(d.code, 0, d.stderr);
  t.regex(d.stdout, /Client sessions \(2;/);
  t.regex(d.stdout, new RegExp(`^${ls}/${sa.conn} +127\\.0\\.0\\.1:${sa.remotePort} +11 +8101 .* 2 +-$`, 'm'));
  t.regex(d.stdout, new RegExp(`^${ls}/${sb.conn} +127\\.0\\.0\\.1:${sb.remotePort} +12 +8102 .* 1 +WRITE 4242/7 A1`, 'm'));

  // Drop A: its locks go (B is granted A1), B and the process stay.
  const r = await env.jdls(['--drop-session', `${ls}/${sa.conn}`, '--json']);
  t.is(r.code, 0, r.stderr);
  const dropped = JSON.parse(r.stdout) as DropAnswer;
  t.is(dropped.dropped.length, 1);
  t.is(dropped.dropped[0]?.clientPid, 8101);
  await a.closed;
  t.is(a.connectionError?.code, 'SHUTDOWN');
  expectType(await waitB, 'GRANTED');
  expectType(await b.ping(), 'PONG');
  t.true(env.lockServers().includes(ls), 'the lock-server process lives on');
  s = await sessions(t, env);
  t.deepEqual(s.sessions.map((x) => x.clientPid), [8102]);
  t.deepEqual(s.sessions[0]?.locks.map((l) => l.key).sort(), ['A1', 'B1']);
  // The log is written asynchronously (pino): awaited, not read at once.
  await until(t, 'the drop logged', () => /client session \d+\/\d+ \(127\.0\.0\.1 port 11 pid 8101\) dropped by an administrator, uid 0 \(root\): 2 locks released/.test(listenerLog(env)));

  // A session that is gone: exit 1, said.
  const again = await env.jdls(['--drop-session', `${ls}/${sa.conn}`]);
  t.is(again.code, 1);
  t.regex(again.stderr, /no client session/);
});

test.serial('release by file name (info records) and key: the stuck lock is freed, the waiter granted with a higher token, the old holder fenced off and told "not held", the log names the uid', async (t) => {
  const env = new ServerEnv(t);
  await env.start();
  const a = await env.client({ pid: 8201, port: 21, tokens: true });
  const b = await env.client({ pid: 8202, port: 22, tokens: true });
  // Another port's record names the file (the lock server writes port 21's own record, from what the wire client told it: no names).
  writeRecord(env, 9921, 9921);
  const ga = expectType(await a.lock('K'), 'GRANTED');
  expectType(await a.lock('OTHER'), 'GRANTED');
  const keeper = new FenceKeeper();
  t.true(keeper.admit('CUSTOMERS K', ga.token ?? 0n), 'the holder writes');
  const waitB = b.lock('K', 'write', { noInterim: true });
  await until(t, 'B waits', async () => (await sessions(t, env)).sessions.some((x) => x.clientPid === 8202 && x.waiting.length === 1));

  const r = await release(env, ['-f', 'CUSTOMERS', '-k', 'K', '--json']);
  t.is(r.code, 0, r.stderr);
  const ans = JSON.parse(r.stdout) as ReleaseAnswer;
  t.deepEqual(ans.files?.map((f) => [f.inode, f.dev, f.name]), [[FILE.inode.toString(), FILE.dev.toString(), '/data/app/CUSTOMERS']]);
  t.is(ans.released.length, 1, JSON.stringify(ans.released));
  t.like(ans.released[0], { key: 'K', mode: 'write', kind: 'record', token: ga.token?.toString(), file: '/data/app/CUSTOMERS' });
  t.like(ans.released[0]?.owner, { kind: 'remote', pid: 8201, port: 21, addr: '127.0.0.1' });

  const gb = expectType(await waitB, 'GRANTED');
  t.true((gb.token ?? 0n) > (ga.token ?? 0n), `the next grant's token ${gb.token} outranks the released holder's ${ga.token}`);
  t.true(keeper.admit('CUSTOMERS K', gb.token ?? 0n), 'the new holder writes');
  t.false(keeper.admit('CUSTOMERS K', ga.token ?? 0n), 'the released holder is fenced off');
  // The old holder's session: K is not held any more (count 0), OTHER still is.
  t.like(expectType(await a.unlock('K'), 'RELEASED'), { count: 0 });
  t.is(expectType(await a.status('OTHER'), 'STATUS_RESULT').code, 2);
  // (JSON escapes the quotes)
  await until(t, 'the release logged', () => /admin release of file CUSTOMERS, key \\"K\\" by uid 0 \(root\): 1 lock released/.test(listenerLog(env)));

  // The human form, nothing left to release: exit 1.
  const none = await release(env, ['-f', 'CUSTOMERS', '-k', 'NOPE']);
  t.is(none.code, 1);
  t.regex(none.stdout, /^0 locks released/);
  // A name nobody knows.
  const unknown = await release(env, ['-f', 'NOSUCHFILE']);
  t.is(unknown.code, 1);
  t.regex(unknown.stderr, /no file named NOSUCHFILE/);
});

test.serial('release by port frees the locks of a remote client and of a local direct process on that port, no others; by inode,dev with a key', async (t) => {
  const env = new ServerEnv(t);
  await env.start();
  const remote = await env.client({ pid: 8301, port: 55 });
  const other = await env.client({ pid: 8302, port: 56 });
  expectType(await remote.lock('R1'), 'GRANTED');
  expectType(await other.lock('O1'), 'GRANTED');
  // This test process as a local direct process on port 55 (the table, conn 0).
  const local = makeOwner({ port: 55 });
  const localFile = fileId(999n, 7n);
  t.true(env.table.tryLock(local, localFile, 'L1', 'write').granted);
  t.true(env.table.tryLock(makeOwner({ port: 57 }), localFile, 'L2', 'write').granted);

  const r = await release(env, ['-p', '55', '--json']);
  t.is(r.code, 0, r.stderr);
  const ans = JSON.parse(r.stdout) as ReleaseAnswer;
  const got = ans.released.map((x) => `${x.owner.kind}:${x.owner.pid}:${x.key}`).sort();
  t.deepEqual(got, [`local:${process.pid}:L1`, 'remote:8301:R1']);
  t.is(env.table.status(makeOwner({ port: 58, ownerPid: 1, ownerTid: 1 }), localFile, 'L1').code, 0, 'the local lock is free');
  t.is(env.table.status(makeOwner({ port: 58, ownerPid: 1, ownerTid: 1 }), localFile, 'L2').code, -2, 'port 57 keeps its lock');
  t.is(expectType(await other.status('O1'), 'STATUS_RESULT').code, 2, 'port 56 keeps its lock');
  t.like(expectType(await remote.unlock('R1'), 'RELEASED'), { count: 0 });

  // By identity and key: the human output names the owner.
  const byId = await release(env, ['-i', '999,7', '-k', 'L2']);
  t.is(byId.code, 0, byId.stderr);
  t.regex(byId.stdout, /^1 lock released\n/);
  t.regex(byId.stdout, new RegExp(`local pid ${process.pid} port 57 +WRITE +00000999 7 `));
  await until(t, 'the release logged', () => /admin release of port 55 by uid 0 \(root\): 2 locks released/.test(listenerLog(env)));
  // A session found by its client's port.
  const drop = await env.jdls(['--drop-session', '--port', '56']);
  t.is(drop.code, 0, drop.stderr);
  t.regex(drop.stdout, /^dropped client session \d+\/\d+: 127\.0\.0\.1:\d+ port 56 pid 8302 \(wire-client on testhost\), 1 lock released$/m);
  await other.closed;
  expectType(await remote.ping(), 'PONG');
  // Usage errors exit 2.
  t.is((await release(env, ['-k', 'X'])).code, 2);
});

test.serial('a release chooses what to release first: the waiter a released lock is handed to keeps it (a remote waiter in the same lock-server process, a local waiter in the table)', async (t) => {
  const env = new ServerEnv(t);
  await env.start();
  const a = await env.client({ pid: 8601, port: 61, tokens: true });
  const b = await env.client({ pid: 8602, port: 62, tokens: true });
  expectType(await a.lock('K1'), 'GRANTED');
  const waitB = b.lock('K1', 'write', { noInterim: true });
  // K2: held by A, waited for by this process as a local direct one.
  expectType(await a.lock('K2'), 'GRANTED');
  const local = makeOwner({ port: 63 });
  const file = fileId(FILE.inode, FILE.dev);
  const waitLocal = env.table.lock(local, file, 'K2', 'write');
  await until(t, 'both wait', async () => (await sessions(t, env)).sessions.some((x) => x.clientPid === 8602 && x.waiting.length === 1)
    && [...env.table.rows()].flat().some((r) => r.state === 'waiting' && r.key.toString() === 'K2'));
  const r = await release(env, ['-i', `${FILE.inode},${FILE.dev}`, '--json']);
  t.is(r.code, 0, r.stderr);
  const ans = JSON.parse(r.stdout) as ReleaseAnswer;
  t.deepEqual(ans.released.map((x) => `${x.owner.pid}:${x.key}`).sort(), ['8601:K1', '8601:K2'], 'only the holder chosen before the release');
  expectType(await waitB, 'GRANTED');
  await waitLocal;
  t.is(expectType(await b.status('K1'), 'STATUS_RESULT').code, 2, 'the remote waiter keeps its grant');
  t.is(env.table.status(local, file, 'K2').code, 2, 'the local waiter keeps its grant');
  env.table.unlock(local, file, 'K2');
});

test.serial('the admin socket: a dead listener\'s socket is replaced, removed at stop; a planted link is left alone (no admin socket, said)', async (t) => {
  const env = new ServerEnv(t);
  const sock = adminSocketPath(env.dir);
  // A socket nobody answers on: its process was killed before it could remove it.
  spawnSync(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(sock)}, () => process.kill(process.pid, 'SIGKILL'))`]);
  t.true(fs.lstatSync(sock).isSocket(), 'a stale socket is there');
  await env.start();
  t.is(fs.statSync(sock).mode & 0o777, 0o600);
  t.is((await sessions(t, env)).sessions.length, 0);
  t.is((await env.jdls(['-k'])).code, 0);
  t.false(fs.existsSync(sock), 'removed when the listener stops');

  const env2 = new ServerEnv(t);
  const target = path.join(env2.dir, 'precious');
  fs.writeFileSync(target, 'keep');
  fs.symlinkSync(target, adminSocketPath(env2.dir));
  await env2.start();
  await until(t, 'the reason logged', () => /no admin socket .*is not a socket \(a symbolic link\): left alone/.test(listenerLog(env2)));
  t.is(fs.readFileSync(target, 'utf8'), 'keep');
  t.true(fs.lstatSync(adminSocketPath(env2.dir)).isSymbolicLink());
  const r = await env2.jdls(['--sessions']);
  t.is(r.code, 1);
  t.regex(r.stderr, /jdls: .*jdls-admin\.sock/);
  // The listener serves on without it.
  const c = await env2.client({ pid: 8701 });
  expectType(await c.lock('X'), 'GRANTED');
});

test.serial('under OS file locks (-ibD, no table): sessions listed, a remote client\'s stuck lock released by its lock server, the waiter granted with a higher token, the local-process limit said', async (t) => {
  const env = new ServerEnv(t);
  await env.start(['-ibD']);
  const a = await env.client({ pid: 8801, port: 81, tokens: true });
  const b = await env.client({ pid: 8802, port: 82, tokens: true });
  t.is(a.welcome.mechanism, 'os');
  const ga = expectType(await a.lock('K'), 'GRANTED');
  const waitB = b.lock('K', 'write', { noInterim: true });
  await until(t, 'B waits', async () => (await sessions(t, env)).sessions.some((x) => x.clientPid === 8802 && x.waiting.length === 1));
  const s = await sessions(t, env);
  t.like(s.sessions.find((x) => x.clientPid === 8801), { mechanism: 'os', clientPort: 81 });
  const r = await release(env, ['-i', `${FILE.inode},${FILE.dev}`, '-k', 'K', '--json']);
  t.is(r.code, 0, r.stderr);
  const ans = JSON.parse(r.stdout) as ReleaseAnswer;
  t.deepEqual(ans.released.map((x) => `${x.owner.pid}:${x.key}`), ['8801:K']);
  t.true(ans.notes.some((n) => /cannot be released by another process/.test(n)));
  const gb = expectType(await waitB, 'GRANTED');
  t.true((gb.token ?? 0n) > (ga.token ?? 0n), `OS lock tokens rise too: ${gb.token} > ${ga.token}`);
  t.like(expectType(await a.unlock('K'), 'RELEASED'), { count: 0 });
  const d = await env.jdls(['-dvL']);
  t.regex(d.stdout, /Client sessions \(2;/);
});

test.serial('clientsPerProcess 1 (the guide\'s one process per client): the sessions of every lock-server process are listed, each named by its own process', async (t) => {
  const env = new ServerEnv(t, { clientsPerProcess: 1 });
  await env.start();
  const a = await env.client({ pid: 8901, port: 91 });
  const b = await env.client({ pid: 8902, port: 92 });
  t.not(a.welcome.serverPid, b.welcome.serverPid);
  expectType(await a.lock('A'), 'GRANTED');
  expectType(await b.lock('B'), 'GRANTED');
  const s = await sessions(t, env);
  t.deepEqual(s.sessions.map((x) => [x.lockServer, x.clientPid, x.locks.map((l) => l.key)]).sort((x, y) => Number(x[1]) - Number(y[1])),
    [[a.welcome.serverPid, 8901, ['A']], [b.welcome.serverPid, 8902, ['B']]]);
  const r = await env.jdls(['--drop-session', `${b.welcome.serverPid}/${b.welcome.session}`]);
  t.is(r.code, 0, r.stderr);
  await b.closed;
  expectType(await a.ping(), 'PONG');
  t.deepEqual((await sessions(t, env)).sessions.map((x) => x.clientPid), [8901]);
});

/** A user made for this test (removed at teardown), and the paths it must traverse. */
function throwawayUser(t: ExecutionContext): User {
  const root = testRoot();
  const mode = fs.statSync(root).mode & 0o7777;
  if ((mode & 0o001) === 0) {
    fs.chmodSync(root, mode | 0o001);
    t.teardown(() => fs.chmodSync(root, mode));
  }
  const name = `jdlsadm${process.pid % 100000}`;
  const u = createUser(name);
  t.teardown(() => removeUser(name));
  return u;
}

const as = (u: User): string[] => [`--reuid=${u.uid}`, `--regid=${u.gid}`, '--clear-groups'];

test.serial('another user is refused: the commands say so (exit 1), and the listener refuses and logs a peer that reaches the socket', async (t) => {
  const env = new ServerEnv(t);
  await env.start();
  const c = await env.client({ pid: 8401, port: 41 });
  expectType(await c.lock('S'), 'GRANTED');
  const u = throwawayUser(t);
  const sock = adminSocketPath(env.dir);
  t.is(fs.statSync(sock).mode & 0o777, 0o600, 'the socket is 0600');
  const dirMode = fs.statSync(env.dir).mode & 0o7777;
  fs.chmodSync(env.dir, dirMode | 0o001);
  t.teardown(() => fs.chmodSync(env.dir, dirMode));

  const r = spawnSync('setpriv', [...as(u), process.execPath, RELEASE, '-p', '41'], { env: env.env, encoding: 'utf8' });
  t.is(r.status, 1, r.stderr);
  t.regex(r.stderr, /refused: only root and the installation's owner \(uid 0 \(root\)\) may do this; you are uid \d+/);
  const d = spawnSync('setpriv', [...as(u), process.execPath, path.resolve(RELEASE, '..', 'jdls.js'), '--drop-session', '1/1'], { env: env.env, encoding: 'utf8' });
  t.is(d.status, 1);
  t.regex(d.stderr, /refused: only root/);

  // Past the mode (opened for this test): the peer's uid is checked.
  fs.chmodSync(sock, 0o666);
  const script = `const s=require('net').connect(${JSON.stringify(sock)});s.on('connect',()=>s.write('{"cmd":"release","port":41}\\n'));s.on('data',d=>process.stdout.write(d));s.on('error',e=>{console.error(e.message);process.exit(3)})`;
  const out = execFileSync('setpriv', [...as(u), process.execPath, '-e', script], { encoding: 'utf8', timeout: 10_000 });
  const ans = JSON.parse(out.trim()) as { ok: boolean; error: string };
  t.false(ans.ok);
  t.regex(ans.error, /refused/);
  await until(t, 'the refusal logged', () => new RegExp(`admin socket: uid ${u.uid} \\(${u.name}\\) refused`).test(listenerLog(env)));
  t.is(expectType(await c.status('S'), 'STATUS_RESULT').code, 2, 'nothing released');
});

test.serial('-dvL shows the OS locks of OSLOCKS requests while the monitor runs, in the client session and in its own section', async (t) => {
  const env = new ServerEnv(t);
  await env.start();
  const c: WireClient = await env.client({ pid: 8501, port: 51 });
  expectType(await c.request({ type: 'LOCK', nowait: true, noInterim: false, osLocks: true, mode: 'write', tid: 1, file: FILE, key: Buffer.from('OSK') }), 'GRANTED');
  expectType(await c.lock('TBL'), 'GRANTED');
  const d = await env.jdls(['-dvL']);
  t.is(d.code, 0, d.stderr);
  t.regex(d.stdout, /Lock monitor at pid: +\d+ - Active/);
  t.regex(d.stdout, /OS locks for OSLOCKS requests \(OS file locks in /);
  t.regex(d.stdout, new RegExp(`^${c.welcome.serverPid} +OFD +WRITE +00004242 `, 'm'));
  t.regex(d.stdout, /^ {4}WRITE +OSLOCKS +00004242 7 .*OSK$/m);
  t.regex(d.stdout, /^ {4}WRITE +record +00004242 7 +token \d+ +TBL$/m);
  const j = await env.jdls(['-dvL', '--json']);
  const doc = JSON.parse(j.stdout) as { osLocks: unknown[]; clientSessions: { listed: boolean; sessions: { locks: { kind: string }[] }[] } };
  t.is(doc.osLocks.length, 1);
  t.true(doc.clientSessions.listed);
  t.deepEqual(doc.clientSessions.sessions[0]?.locks.map((l) => l.kind).sort(), ['os', 'record']);
});
