// operator-cli.test.ts - the guide's commands as an operator types them
// (issue 14, "The operator's view of the guide"): `jDLS` and en-dash options,
// `jdls -Cteststring`'s failure lines in the guide's order, and `jdls -ib`
// starting the whole service or nothing of it.
import test from 'ava';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs, normaliseDash } from '../src/cli/args.js';
import { CliEnv, runToEnd, processesOf, JDLS } from './helpers/cli-env.js';
import { PID_FILE } from '../src/server/state.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

test('an en dash, em dash or minus sign typed before options works as -', (t) => {
  const plain = parseArgs(['-ibs13000,50']);
  t.true(plain.ok);
  t.deepEqual(parseArgs(['\u2013ibs13000,50']), plain, 'the guide\'s jDLS –ibs13000,50');
  t.deepEqual(parseArgs(['\u2014ibs13000,50']), plain);
  t.deepEqual(parseArgs(['\u2212ibs13000,50']), plain);
  t.deepEqual(parseArgs(['\u2013dvL']), parseArgs(['-dvL']));
  t.deepEqual(parseArgs(['\u2013i', '\u2013\u2013port', '50010']), parseArgs(['-i', '--port', '50010']));
  t.deepEqual(parseArgs(['\u2013ib', '\u2013s', '13000,50']), parseArgs(['-ib', '-s', '13000,50']));
  t.deepEqual(parseArgs(['\u2013Cteststring']), { ok: true, command: { kind: 'client-test', text: 'teststring' } });
  // Only the start of a token: the test string as the next argument is data.
  t.deepEqual(parseArgs(['\u2013C', '\u2013x']), { ok: true, command: { kind: 'client-test', text: '\u2013x' } });
  t.is(normaliseDash('a\u2013b'), 'a\u2013b');
  t.is(normaliseDash('\u2013'), '-');
});

test('jDLS is a bin of the package, linked in a checkout, and runs the guide\'s en-dash command', async (t) => {
  const pkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')) as { bin: Record<string, string> };
  t.is(pkg.bin['jDLS'], pkg.bin['jdls']);
  const link = path.join(root, 'node_modules', '.bin', 'jDLS');
  t.is(fs.realpathSync(link), fs.realpathSync(JDLS));
  const env = new CliEnv(t);
  const started = await runToEnd(link, ['\u2013ibs13000,50'], env.env, 30_000, (pid) => env.track(pid));
  for (const m of started.stdout.matchAll(/started at pid (\d+)/g)) env.track(Number(m[1]));
  t.is(started.code, 0, started.stderr);
  const shown = await runToEnd(link, ['\u2013dv'], env.env, 30_000, (pid) => env.track(pid));
  t.is(shown.code, 0, shown.stderr);
  t.regex(shown.stdout, /13150/, 'the size typed with the en dash was used');
  t.is((await env.run(['\u2013k'])).code, 0);
});

/** A port nobody listens on (bound, then closed). */
async function closedPort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise((r) => s.close(r));
  return port;
}

test('jdls -C: the guide\'s failure lines in the guide\'s order (consequence, then cause)', async (t) => {
  const port = await closedPort();
  const env = new CliEnv(t);
  const r = await runToEnd(process.execPath, [JDLS, '\u2013Cteststring'], { ...env.env, JDLS: `SERVER=127.0.0.1,${port}`, HOME: env.dir }, 30_000);
  t.is(r.code, 1);
  t.is(r.stdout, `Client: Using host '127.0.0.1', service '${port}'\n`);
  t.is(r.stderr,
    'Client: unable to connect to distributed lock service, locks not enabled\n' +
    `Client: connection failed for host '127.0.0.1', service '${port}', error Connection refused\n`);
});

/** Occupy a TCP port on loopback for the test's lifetime. */
async function occupy(t: { teardown(fn: () => void | Promise<void>): void }): Promise<number> {
  const s = net.createServer((c) => c.destroy());
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => s.close(() => r())));
  return (s.address() as net.AddressInfo).port;
}

test('jdls -ib with the listener\'s port taken: exit 1, and no monitor, listener or table is left', async (t) => {
  const env = new CliEnv(t);
  const port = await occupy(t);
  const r = await env.run(['-ib', '--port', String(port)]);
  for (const m of r.stdout.matchAll(/started at pid (\d+)/g)) env.track(Number(m[1]));
  t.is(r.code, 1, r.stdout + r.stderr);
  t.regex(r.stderr, /the lock listener failed to start/);
  t.regex(r.stderr, /EADDRINUSE|address already in use/i, 'the reason is shown');
  t.regex(r.stderr, /nothing of the service was started/);
  t.true(await env.until(() => processesOf(env.dir).length === 0, 10_000), `left running: ${processesOf(env.dir).join(' ')}`);
  t.false(fs.existsSync(env.shm), 'the table this start made is removed');
  t.false(fs.existsSync(path.join(env.dir, PID_FILE)));
  const d = await env.run(['-d']);
  t.regex(d.stdout, /Lock monitor at pid:\s+Not running/);
  t.regex(d.stdout, /no shared memory lock table/);
});

test('jdls -ib with the port taken and a table already there: the table stays as it was, no monitor left', async (t) => {
  const env = new CliEnv(t);
  const first = await env.startBackground(['-ibA', '-s100,10']);
  t.is((await env.run(['-kA'])).code, 0);
  t.true(await env.until(() => !env.isAlive(first.pid)));
  const port = await occupy(t);
  const r = await env.run(['-ib', '--port', String(port)]);
  for (const m of r.stdout.matchAll(/started at pid (\d+)/g)) env.track(Number(m[1]));
  t.is(r.code, 1, r.stdout + r.stderr);
  t.regex(r.stderr, /existing lock table is left as it was/);
  t.true(await env.until(() => processesOf(env.dir).length === 0, 10_000), `left running: ${processesOf(env.dir).join(' ')}`);
  t.true(fs.existsSync(env.shm));
  const d = await env.run(['-dv']);
  t.is(d.code, 0, d.stderr);
  t.notRegex(d.stdout, /Lock monitor at pid:\s+\d+ - Active/);
  t.regex(d.stdout, /110 locks maximum in 11 groups/, "its size is the one it had");
});
