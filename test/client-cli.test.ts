// client-cli.test.ts - `jdls -Cteststring` (src/cli/client-test.ts) as a real
// process: success against the fake server, each failure message against a
// real closed port, a mute server and a wrong echo, JDLS unset or malformed,
// SERVER2, VERBOSE, and the jbase_error_trace file.
import test, { type ExecutionContext } from 'ava';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { JDLS } from './helpers/cli-env.js';
import { FakeServer, type FakeServerOptions } from './helpers/fake-server.js';
import { parseArgs } from '../src/cli/args.js';
import { testDir } from './helpers/installations.js';

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

interface Env {
  dir: string;
  run(args: string[], jdls: string | undefined): Promise<Run>;
  fake(opts?: FakeServerOptions): Promise<FakeServer>;
}

function setup(t: ExecutionContext): Env {
  const dir = testDir('ctest');
  const servers: FakeServer[] = [];
  const children: number[] = [];
  t.teardown(async () => {
    for (const pid of children) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* already gone */
      }
    }
    for (const s of servers) await s.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  return {
    dir,
    run(args, jdls) {
      const env: NodeJS.ProcessEnv = { ...process.env, JBCRELEASEDIR: dir };
      delete env['JDLS'];
      if (jdls !== undefined) env['JDLS'] = jdls;
      return new Promise((resolve, reject) => {
        const child = spawn(process.execPath, [JDLS, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
        if (child.pid) children.push(child.pid);
        let stdout = '';
        let stderr = '';
        child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
        child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
        const timer = setTimeout(() => child.kill('SIGKILL'), 20000);
        child.on('error', reject);
        child.on('close', (code) => {
          clearTimeout(timer);
          resolve({ code, stdout, stderr });
        });
      });
    },
    async fake(opts = {}) {
      const s = await FakeServer.start(opts);
      servers.push(s);
      return s;
    },
  };
}

async function closedPort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

test('-C parses into the client-test command', (t) => {
  t.deepEqual(parseArgs(['-Cteststring']), { ok: true, command: { kind: 'client-test', text: 'teststring' } });
  t.deepEqual(parseArgs(['-C', 'two words']), { ok: true, command: { kind: 'client-test', text: 'two words' } });
  t.deepEqual(parseArgs(['-C']), { ok: true, command: { kind: 'client-test', text: '' } });
  t.deepEqual(parseArgs(['-Cikd']), { ok: true, command: { kind: 'client-test', text: 'ikd' } });
  t.false(parseArgs(['-Cx', '-d']).ok);
  t.false(parseArgs(['-dC']).ok);
});

test('success: the guide\'s lines, exit 0', async (t) => {
  const env = setup(t);
  const s = await env.fake({ welcome: { serverPid: 4321, mechanism: 'shm' } });
  const r = await env.run(['-Cteststring'], `SERVER=localhost,${s.port}`);
  t.is(r.code, 0, r.stderr);
  t.is(r.stdout, `Client: Using host 'localhost', service '${s.port}'\nClient: test string 'teststring' echoed by lock server pid 4321 (mechanism shm)\n`);
  t.is(r.stderr, '');
  t.like(s.conns[0]?.hello, { program: 'jdls -C', options: `SERVER=localhost,${s.port}` });
  t.deepEqual(s.received('TEST').map((f) => (f as { text: string }).text), ['teststring']);
  const os2 = await env.fake({ welcome: { serverPid: 99, mechanism: 'os' } });
  const r2 = await env.run(['-C', 'hello world'], `SERVER=127.0.0.1,${os2.port},TIMEOUT=5`);
  t.is(r2.code, 0, r2.stderr);
  t.regex(r2.stdout, /^Client: test string 'hello world' echoed by lock server pid 99 \(mechanism os\)$/m);
  t.false(fs.existsSync(path.join(env.dir, 'tmp', 'jbase_error_trace')));
});

test('connection refused: the guide\'s failure lines, exit 1, jbase_error_trace written', async (t) => {
  const env = setup(t);
  const port = await closedPort();
  const r = await env.run(['-Cteststring'], `SERVER=localhost,${port}`);
  t.is(r.code, 1);
  t.is(r.stdout, `Client: Using host 'localhost', service '${port}'\n`);
  t.is(r.stderr, `Client: unable to connect to distributed lock service, locks not enabled\nClient: connection failed for host 'localhost', service '${port}', error Connection refused\n`, 'the guide\'s order');
  const trace = fs.readFileSync(path.join(env.dir, 'tmp', 'jbase_error_trace'), 'utf8');
  t.regex(trace, /connection failed for host 'localhost', service '\d+', error Connection refused/);
  t.notThrows(() => trace.trim().split('\n').map((l) => JSON.parse(l) as unknown));
});

test('jbase_error_trace: a link planted at its name (tmp/ is writable by every user) is not followed; the file is made 0640', async (t) => {
  const env = setup(t);
  const port = await closedPort();
  const tmp = path.join(env.dir, 'tmp');
  fs.mkdirSync(tmp, { recursive: true });
  const victim = path.join(env.dir, 'victim');
  fs.writeFileSync(victim, 'precious\n');
  fs.symlinkSync(victim, path.join(tmp, 'jbase_error_trace'));
  const r = await env.run(['-Cteststring'], `SERVER=localhost,${port}`);
  t.is(r.code, 1, 'the failure itself is reported as before');
  t.is(fs.readFileSync(victim, 'utf8'), 'precious\n', 'the trace was appended to the file the link names');
  fs.rmSync(path.join(tmp, 'jbase_error_trace'));
  await env.run(['-Cteststring'], `SERVER=localhost,${port}`);
  t.is(fs.statSync(path.join(tmp, 'jbase_error_trace')).mode & 0o777, 0o640);
});

test('a server that never says WELCOME: failure within TIMEOUT, exit 1', async (t) => {
  const env = setup(t);
  const s = await env.fake({ onHello: () => true });
  const r = await env.run(['-Cx'], `SERVER=127.0.0.1,${s.port},TIMEOUT=0.3`);
  t.is(r.code, 1);
  t.regex(r.stderr, new RegExp(`^Client: unable to connect to distributed lock service, locks not enabled\nClient: connection failed for host '127.0.0.1', service '${s.port}', error .*no WELCOME within 300 ms\n$`));
});

test('a wrong echo, and a refused protocol version: exit 1', async (t) => {
  const env = setup(t);
  const s = await env.fake();
  s.script = (f, conn) => {
    if (f.type !== 'TEST') return false;
    conn.send({ type: 'TEST_RESULT', requestId: f.requestId, text: 'garbled' });
    return true;
  };
  const r = await env.run(['-Cteststring'], `SERVER=127.0.0.1,${s.port}`);
  t.is(r.code, 1);
  t.regex(r.stderr, /test string 'teststring' came back from lock server pid \d+ as 'garbled'/);
  const v = await env.fake({ onHello: (_h, conn) => { conn.send({ type: 'ERROR', requestId: 0, code: 'VERSION', text: 'this server speaks version 7 only' }); return true; } });
  const r2 = await env.run(['-Cx'], `SERVER=127.0.0.1,${v.port}`);
  t.is(r2.code, 1);
  t.regex(r2.stderr, /^Client: unable to connect to distributed lock service, locks not enabled\nClient: connection failed .*error lock server 127\.0\.0\.1:\d+: this server speaks version 7 only\n$/);
});

test('JDLS unset: exit 1 saying so; malformed: the parse error, exit 2', async (t) => {
  const env = setup(t);
  const r = await env.run(['-Cteststring'], undefined);
  t.is(r.code, 1);
  t.regex(r.stderr, /JDLS is not set/);
  t.is(r.stdout, '');
  for (const [jdls, re] of [['SERVER2=x', /SERVER2 has no meaning without SERVER/], ['SERVER=h,70000', /port 70000 is out of range/], ['WAIT,BOGUS', /unknown option 'BOGUS'/], ['TIMEOUT=0', /TIMEOUT: 0 seconds/]] as const) {
    const b = await env.run(['-Cteststring'], jdls);
    t.is(b.code, 2, jdls);
    t.regex(b.stderr, re);
    t.regex(b.stderr, /^jdls: JDLS='/);
    t.is(b.stdout, '', 'nothing was tried');
  }
});

test('SERVER2: each configured server is tested; one failing makes exit 1', async (t) => {
  const env = setup(t);
  const a = await env.fake({ welcome: { serverPid: 1111 } });
  const b = await env.fake({ welcome: { serverPid: 2222 } });
  const ok = await env.run(['-Cts'], `SERVER=127.0.0.1,${a.port},SERVER2=localhost,${b.port}`);
  t.is(ok.code, 0, ok.stderr);
  t.is(ok.stdout, [
    `Client: Using host '127.0.0.1', service '${a.port}'`,
    `Client: test string 'ts' echoed by lock server pid 1111 (mechanism shm)`,
    `Client: Using host 'localhost', service '${b.port}'`,
    `Client: test string 'ts' echoed by lock server pid 2222 (mechanism shm)`,
    '',
  ].join('\n'));
  const port = await closedPort();
  const bad = await env.run(['-Cts'], `SERVER=127.0.0.1,${a.port},SERVER2=127.0.0.1,${port}`);
  t.is(bad.code, 1);
  t.regex(bad.stdout, /echoed by lock server pid 1111/);
  t.regex(bad.stderr, new RegExp(`connection failed for host '127.0.0.1', service '${port}', error Connection refused`));
});

test('VERBOSE traces to stderr; TRACE=file to the file instead', async (t) => {
  const env = setup(t);
  const s = await env.fake();
  const r = await env.run(['-Cv'], `SERVER=127.0.0.1,${s.port},VERBOSE`);
  t.is(r.code, 0);
  t.regex(r.stderr, /"msg":"connected"/);
  const trace = path.join(env.dir, 'c.trace');
  const r2 = await env.run(['-Cv'], `SERVER=127.0.0.1,${s.port},VERBOSE,TRACE=${trace}`);
  t.is(r2.code, 0);
  t.is(r2.stderr, '');
  t.regex(fs.readFileSync(trace, 'utf8'), /"msg":"connected"/);
});
