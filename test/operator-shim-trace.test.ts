// operator-shim-trace.test.ts - preloaded programs honour JDLS VERBOSE and
// TRACE=file and write their communication errors to jbase_error_trace, as
// the library does (issue 14; shim/shim_log.c, docs/shim.md "Trace and
// errors"): the guide's problem-analysis route for the programs a site runs.
// Serial: each test runs a lock service, a broker and preloaded programs.
import test from 'ava';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { ShimEnv, SHIM_API, SHIM_LOCKER } from './helpers/shim-env.js';
import { processesOf } from './helpers/cli-env.js';
import { JdlsClient } from '../src/client/client.js';

interface Line {
  level: number;
  time: number;
  pid: number;
  hostname: string;
  name: string;
  msg: string;
  server?: string;
  id?: number;
  request?: { type: string; mode?: string; file?: { inode: string; dev: string }; key?: string };
  answer?: { type: string; count?: number };
  holder?: { port: number; pid: number; ownerPid: number };
  jdls?: string;
}

const parse = (text: string): Line[] => text.split('\n').filter((l) => l.trim().startsWith('{')).map((l) => JSON.parse(l) as Line);

async function closedPort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise((r) => s.close(r));
  return port;
}

test.serial('TRACE=file: a preloaded fcntl program appends its trace (connecting, connected, each lock and unlock with its answer) in the library\'s layout and words', async (t) => {
  const s = new ShimEnv(t);
  const JDLS = await s.startServer();
  const f = s.jlock(0x1092, 0x801);
  fs.writeFileSync(f, '');
  const trace = path.join(s.cli.dir, 'shim.trace');
  const r = await s.run(SHIM_LOCKER, [f, 'w:5', 'u:5'], { env: { JDLS: `${JDLS},TRACE=${trace}` } });
  t.is(r.code, 0, r.stderr);
  t.deepEqual(r.stdout.trim().split('\n'), ['ok', 'ok']);
  t.is(r.stderr, '', 'TRACE: nothing on stderr');
  const lines = parse(fs.readFileSync(trace, 'utf8'));
  t.deepEqual(lines.map((l) => l.msg), ['connecting', 'connected', 'request', 'answer', 'request', 'answer']);
  for (const l of lines) t.like(l, { level: 20, name: 'jdls-shim' });
  t.true(lines.every((l) => typeof l.time === 'number' && typeof l.hostname === 'string'));
  t.is(lines[0]?.jdls, `${JDLS},TRACE=${trace}`);
  const [, connected, lock, granted, unlock, released] = lines;
  t.regex(connected?.server ?? '', /^127\.0\.0\.1:\d+$/, 'direct mode: the server\'s address');
  t.like(lock, { request: { type: 'LOCK', mode: 'write', file: { inode: '4242', dev: '-1' } } });
  t.like(granted, { id: lock?.id, answer: { type: 'GRANTED' } });
  t.like(unlock, { request: { type: 'UNLOCK' } });
  t.like(released, { id: unlock?.id, answer: { type: 'RELEASED', count: 1 } });

  // The library's trace of the same conversation has the same words.
  const libTrace = path.join(s.cli.dir, 'lib.trace');
  const c = await JdlsClient.connect(`${JDLS},TRACE=${libTrace}`, { errorTrace: false });
  await c.lock({ inode: 4242n, dev: -1n }, '5', 'write');
  await c.unlock({ inode: 4242n, dev: -1n }, '5');
  await c.close();
  const lib = parse(fs.readFileSync(libTrace, 'utf8'));
  t.deepEqual(lib.slice(0, 6).map((l) => l.msg), lines.map((l) => l.msg));
  t.deepEqual(lib.filter((l) => l.request).map((l) => l.request?.type), ['LOCK', 'UNLOCK']);
});

test.serial('VERBOSE: the trace on stderr; with TRACE too, TRACE wins; a waiting lock traces its WAITING frames', async (t) => {
  const s = new ShimEnv(t);
  const JDLS = await s.startServer({ interimMs: 100 });
  const a = s.start(SHIM_API, ['4242', '7', 'x:K1', 'hold'], { env: { JDLS } });
  await a.waitFor(/^holding$/, 15_000);
  const b = s.start(SHIM_API, ['4242', '7', 'X:K1'], { env: { JDLS: `${JDLS},VERBOSE` } });
  t.true(await s.cli.until(() => parse(b.stderr()).some((l) => l.msg === 'waiting'), 10_000), `b traces its wait: ${b.stderr()}`);
  t.is(await a.finish(), 0);
  t.is(await b.finish(), 0);
  const lines = parse(b.stderr());
  t.deepEqual(lines.slice(0, 3).map((l) => l.msg), ['connecting', 'connected', 'request']);
  t.like(lines.find((l) => l.msg === 'waiting'), { holder: { ownerPid: a.pid } }, 'names the holder, as the library\'s WAITING line');
  t.like(lines.at(-1), { msg: 'answer', answer: { type: 'GRANTED' } });
  t.true(b.stderr().split('\n').filter(Boolean).every((l) => l.startsWith('{')), 'only trace lines');

  const trace = path.join(s.cli.dir, 'both.trace');
  const c = await s.run(SHIM_API, ['4242', '7', 'x:K2', 'u:K2'], { env: { JDLS: `${JDLS},VERBOSE,TRACE=${trace}` } });
  t.is(c.code, 0, c.stderr);
  t.is(c.stderr, '', 'TRACE overrides VERBOSE');
  t.true(parse(fs.readFileSync(trace, 'utf8')).some((l) => l.request?.type === 'LOCK'));
});

test.serial('an unreachable server: the guide\'s lines on stderr, and the reason appended to jbase_error_trace (always; 0640)', async (t) => {
  const s = new ShimEnv(t);
  const port = await closedPort();
  const r = await s.run(SHIM_API, ['4242', '7', 'x:K1'], { env: { JDLS: `SERVER=127.0.0.1,${port}` } });
  t.is(r.code, 1);
  t.regex(r.stderr, /^Client: unable to connect to distributed lock service, locks not enabled$/m);
  t.notRegex(r.stderr, /^\{/m, 'no trace without VERBOSE');
  const file = path.join(s.cli.dir, 'tmp', 'jbase_error_trace');
  const lines = parse(fs.readFileSync(file, 'utf8'));
  const mine = lines.filter((l) => l.name === 'jdls-shim');
  t.is(mine.length, 1, fs.readFileSync(file, 'utf8'));
  t.like(mine[0], { level: 50, name: 'jdls-shim' });
  t.regex(mine[0]?.msg ?? '', new RegExp(`connection failed for host '127\\.0\\.0\\.1', service '${port}', error Connection refused`));
  t.is(fs.statSync(file).mode & 0o777, 0o640);
});

test.serial('TIMEOUT declares a stopped server dead: the error lands in jbase_error_trace and, with VERBOSE, on stderr', async (t) => {
  const s = new ShimEnv(t);
  const JDLS = `${await s.startServer()},TIMEOUT=1,VERBOSE`;
  const a = s.start(SHIM_API, ['4242', '7', 'x:K1', 'hold', 'x:K2'], { env: { JDLS } });
  await a.waitFor(/^holding$/, 15_000);
  const servers = processesOf(s.cli.dir).filter((pid) => {
    try {
      return /\(lock server\)/.test(fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8'));
    } catch {
      return false;
    }
  });
  t.true(servers.length >= 1);
  for (const pid of servers) process.kill(pid, 'SIGSTOP');
  t.teardown(() => {
    for (const pid of servers) {
      try {
        process.kill(pid, 'SIGCONT');
      } catch {
        /* gone */
      }
    }
  });
  t.is(await a.finish(), 1);
  for (const pid of servers) process.kill(pid, 'SIGCONT');
  const err = parse(a.stderr()).filter((l) => l.level === 50);
  t.is(err.length, 1, a.stderr());
  t.regex(err[0]?.msg ?? '', /^lock server 127\.0\.0\.1:\d+ silent for more than 1000 ms with an answer due; declared dead \(JDLS TIMEOUT\)$/);
  const file = parse(fs.readFileSync(path.join(s.cli.dir, 'tmp', 'jbase_error_trace'), 'utf8')).filter((l) => l.name === 'jdls-shim');
  t.deepEqual(file.map((l) => l.msg), err.map((l) => l.msg));
  t.is(file[0]?.pid, a.pid);
});
