// server-auth.test.ts - who may talk to a live lock service (issue 10,
// "Authenticated clients"; docs/security.md): the shared secret (secretFile
// in jdls.yaml, JDLS SECRET= / the secretFile option for clients), what a
// client without the key learns (nothing: one ERROR AUTH, then the
// connection closes), the key-file rule, a preloaded program through the
// broker with the key (hand-over and proxied), TLS (tlsCert/tlsKey, JDLS
// TLSCA=), and the allow-list of client networks.
// Serial: each test runs a daemon and several processes; 2 cores.
import test from 'ava';
import { spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { ShimEnv, SHIM_API } from './helpers/shim-env.js';
import { JdlsClient } from '../src/client/client.js';
import { JdlsError } from '../src/errors.js';
import { encode, FrameReader } from '../src/protocol/codec.js';
import type { ClientFrame, HelloFrame, ServerFrame } from '../src/protocol/frames.js';
import { clientMac } from '../src/secret.js';
import { packageRoot } from '../src/native.js';
import pino from 'pino';
import { AllowList } from '../src/server/auth.js';

const LOCKF_RANGES = path.join(packageRoot, 'test', 'fixtures', 'lockf-ranges.py');

const GUIDE = /^Client: unable to connect to distributed lock service, locks not enabled$/m;
const FILE = { inode: 4242n, dev: -1n };

function writeKey(dir: string, name: string, mode = 0o600, bytes = crypto.randomBytes(32).toString('base64') + '\n'): string {
  const file = path.join(dir, name);
  fs.writeFileSync(file, bytes, { mode });
  fs.chmodSync(file, mode);
  return file;
}

/** A service with a secret: returns the JDLS SERVER part and the key file. */
async function secured(s: ShimEnv, extra: Record<string, string> = {}): Promise<{ JDLS: string; key: string }> {
  const key = writeKey(s.cli.dir, 'jdls.key');
  const JDLS = await s.startServer({ secretFile: key, ...extra });
  return { JDLS, key };
}

const HELLO: HelloFrame = { type: 'HELLO', requestId: 0, minVersion: 1, maxVersion: 1, port: 5, pid: process.pid, keepaliveMs: 0, host: 'probe', program: 'server-auth.test', options: '' };

/**
 * Raw conversation: connect, send `first`, and for each server frame let
 * `then` answer; resolves with every frame the server sent once it closed
 * the connection (bounded).
 */
function converse(port: number, first: ClientFrame[], then: (f: ServerFrame) => ClientFrame[] = () => []): Promise<{ frames: ServerFrame[]; bytes: number }> {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ host: '127.0.0.1', port });
    const reader = FrameReader.forClient();
    const frames: ServerFrame[] = [];
    let bytes = 0;
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error(`the server did not close the connection; frames: ${frames.map((f) => f.type).join(', ')}`));
    }, 10_000);
    sock.on('connect', () => sock.write(Buffer.concat(first.map((f) => encode(f)))));
    sock.on('data', (d: Buffer) => {
      bytes += d.length;
      for (const f of reader.push(d)) {
        frames.push(f);
        for (const a of then(f)) sock.write(encode(a));
      }
    });
    sock.on('error', () => undefined);
    sock.on('close', () => {
      clearTimeout(timer);
      resolve({ frames, bytes });
    });
  });
}

/** Kill the broker (the next preloaded program starts one with its own environment) and wait until it is gone. */
async function stopBroker(t: import('ava').ExecutionContext, s: ShimEnv): Promise<void> {
  const pid = s.brokerPid();
  s.killBroker();
  if (pid !== undefined) t.true(await s.cli.until(() => !s.cli.isAlive(pid), 10_000), 'the broker is gone');
}

const rejectsWith = async (t: import('ava').ExecutionContext, p: Promise<unknown>, code: string, re: RegExp): Promise<void> => {
  const e = await t.throwsAsync(p);
  t.true(e instanceof JdlsError && e.code === code, `${(e as JdlsError | undefined)?.code}: ${e?.message}`);
  t.regex(e?.message ?? '', re);
};

test.serial('with the key: the client authenticates and locks; the server proved itself too (one CHALLENGE round trip, then requests as usual)', async (t) => {
  const s = new ShimEnv(t);
  const { JDLS, key } = await secured(s);
  const c = await JdlsClient.connect(`${JDLS},SECRET=${key}`, { errorTrace: false });
  t.teardown(() => c.close());
  t.true((await c.lock(FILE, 'CUST*1', 'write')).granted);
  t.is((await c.status(FILE, 'CUST*1')).code, 2);
  // the secretFile option does the same without JDLS SECRET
  const d = await JdlsClient.connect(JDLS, { secretFile: key, errorTrace: false });
  t.teardown(() => d.close());
  t.like(await d.lock(FILE, 'CUST*1', 'write', { nowait: true }), { granted: false });
});

test.serial('wrong key: ERROR AUTH "authentication failed"; no key: ERROR AUTH "the server requires authentication"; nothing else crosses', async (t) => {
  const s = new ShimEnv(t);
  const { JDLS } = await secured(s);
  const wrong = writeKey(s.cli.dir, 'wrong.key');
  await rejectsWith(t, JdlsClient.connect(`${JDLS},SECRET=${wrong}`, { errorTrace: false }), 'AUTH', /authentication failed/);
  await rejectsWith(t, JdlsClient.connect(JDLS, { errorTrace: false }), 'AUTH', /the server requires authentication/);
  const port = Number(/,(\d+)$/.exec(JDLS)?.[1]);
  // A plain HELLO: one ERROR AUTH, then the server closes - no WELCOME (no mechanism, no pid).
  const plain = await converse(port, [HELLO]);
  t.deepEqual(plain.frames.map((f) => f.type), ['ERROR']);
  t.like(plain.frames[0], { code: 'AUTH' });
  // A wrong proof: CHALLENGE, then ERROR AUTH "authentication failed" and close.
  const bad = await converse(port, [{ ...HELLO, auth: true }], (f) => (f.type === 'CHALLENGE'
    ? [{ type: 'AUTH', requestId: 0, nonce: crypto.randomBytes(32), mac: clientMac(Buffer.from('not the key at all!!'), f.nonce, crypto.randomBytes(32), encode({ ...HELLO, auth: true })) }]
    : []));
  t.deepEqual(bad.frames.map((f) => f.type), ['CHALLENGE', 'ERROR']);
  t.like(bad.frames[1], { code: 'AUTH', text: 'authentication failed' });
});

test.serial('STATUS before authentication is refused: after HELLO, and after the CHALLENGE; a held lock is not revealed', async (t) => {
  const s = new ShimEnv(t);
  const { JDLS, key } = await secured(s);
  const c = await JdlsClient.connect(`${JDLS},SECRET=${key}`, { errorTrace: false });
  t.teardown(() => c.close());
  t.true((await c.lock(FILE, 'SECRET*1', 'write')).granted);
  const port = c.server.port;
  const status: ClientFrame = { type: 'STATUS', requestId: 1, tid: 0, file: FILE, key: Buffer.from('SECRET*1') };
  const r1 = await converse(port, [HELLO, status]);
  t.deepEqual(r1.frames.map((f) => f.type), ['ERROR'], 'STATUS right after a plain HELLO');
  const r2 = await converse(port, [{ ...HELLO, auth: true }], (f) => (f.type === 'CHALLENGE' ? [status] : []));
  t.deepEqual(r2.frames.map((f) => f.type), ['CHALLENGE', 'ERROR'], 'STATUS instead of AUTH');
  t.like(r2.frames[1], { code: 'AUTH', requestId: 0 });
  const r3 = await converse(port, [status]);
  t.deepEqual(r3.frames.map((f) => [f.type, (f as { code?: string }).code]), [['ERROR', 'PROTOCOL']], 'STATUS before HELLO');
});

test.serial('no secret configured: works as before for a client without a key; a client WITH a key refuses the server (it cannot prove it holds the key)', async (t) => {
  const s = new ShimEnv(t);
  const JDLS = await s.startServer();
  const c = await JdlsClient.connect(JDLS, { errorTrace: false });
  t.teardown(() => c.close());
  t.true((await c.lock(FILE, 'K', 'write')).granted);
  const key = writeKey(s.cli.dir, 'client.key');
  await rejectsWith(t, JdlsClient.connect(`${JDLS},SECRET=${key}`, { errorTrace: false }), 'AUTH', /did not authenticate itself/);
});

test.serial('the key-file rule: a key readable by others is refused by jdls -ib and by the client, naming the path, owner and mode', async (t) => {
  const s = new ShimEnv(t);
  const open = writeKey(s.cli.dir, 'open.key', 0o644);
  fs.appendFileSync(path.join(s.cli.dir, 'jdls.yaml'), `secretFile: ${open}\n`);
  const r = await s.cli.run(['-ib']);
  t.not(r.code, 0);
  t.regex(r.stderr, new RegExp(`refusing the key file ${open}: owned by uid 0, mode 0644; others must have no access`));
  await rejectsWith(t, (async () => JdlsClient.connect(`SERVER=127.0.0.1,1,SECRET=${open}`, { errorTrace: false }))(), 'AUTH', /mode 0644/);
  const short = writeKey(s.cli.dir, 'short.key', 0o600, 'abc\n');
  await rejectsWith(t, (async () => JdlsClient.connect(`SERVER=127.0.0.1,1,SECRET=${short}`, { errorTrace: false }))(), 'AUTH', /holds 3 bytes; a key needs at least 16/);
});

test.serial('a preloaded program through the broker with JDLS SECRET: hand-over (direct) and proxied; without it the program exits with the guide\'s message and the reason', async (t) => {
  const s = new ShimEnv(t);
  const { JDLS, key } = await secured(s);
  const withKey = `${JDLS},SECRET=${key}`;
  const a = await s.run(SHIM_API, ['4242', '7', 'x:CUST*1', 'st:CUST*1'], { env: { JDLS: withKey } });
  t.is(a.code, 0, a.stderr);
  t.deepEqual(a.stdout.trim().split('\n'), ['ok', 'status 2 port=0']);
  await stopBroker(t, s);
  const b = await s.run(SHIM_API, ['4242', '7', 'x:CUST*1', 'st:CUST*1'], { env: { JDLS: withKey, JDLS_BROKER_HANDOVER: '0' } });
  t.is(b.code, 0, b.stderr);
  t.deepEqual(b.stdout.trim().split('\n'), ['ok', 'status 2 port=0']);
  const c = await s.run(SHIM_API, ['4242', '7', 'x:CUST*1'], { env: { JDLS } });
  t.not(c.code, 0);
  t.regex(c.stderr, GUIDE);
  t.regex(c.stderr, /the server requires authentication/);
});

test.serial('python3 fcntl.lockf under LD_PRELOAD with JDLS BINARY,SECRET=: answers as the kernel does, through an authenticated server', async (t) => {
  const s = new ShimEnv(t);
  const { JDLS, key } = await secured(s, { clientsPerProcess: '1' });
  const f = path.join(s.cli.dir, 'ranges.dat');
  fs.writeFileSync(f, '');
  const kernel = await s.run('python3', [LOCKF_RANGES, f], { preload: false });
  t.is(kernel.code, 0, kernel.stderr);
  const shim = await s.run('python3', [LOCKF_RANGES, f], { env: { JDLS: `${JDLS},BINARY,SECRET=${key}` }, timeoutMs: 30_000 });
  t.is(shim.code, 0, shim.stderr);
  t.is(shim.stdout.trim(), kernel.stdout.trim());
  const ino = fs.statSync(f).ino.toString(16).padStart(8, '0');
  t.true(fs.existsSync(path.join(s.cli.dir, 'jbase_lock', `jrange_${ino}_ffffffff`)), 'the locks went to the server');
  await stopBroker(t, s);
  const refused = await s.run('python3', [LOCKF_RANGES, f], { env: { JDLS: `${JDLS},BINARY` }, timeoutMs: 30_000 });
  t.not(refused.code, 0);
  t.regex(refused.stderr, /the server requires authentication/);
});

function makeCert(dir: string, name: string, cn: string): { cert: string; key: string } {
  const cert = path.join(dir, `${name}.crt`);
  const key = path.join(dir, `${name}.pem`);
  const r = spawnSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '2',
    '-subj', `/CN=${cn}`, '-addext', 'subjectAltName=IP:127.0.0.1', '-keyout', key, '-out', cert], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`openssl: ${r.stderr}`);
  fs.chmodSync(key, 0o600);
  return { cert, key };
}

test.serial('TLS: a client with TLSCA (and the key) locks; a plain client gets nothing; a wrong CA is a TLS error; a preloaded program works through the broker (proxied)', async (t) => {
  const s = new ShimEnv(t);
  const srv = makeCert(s.cli.dir, 'server', 'jdls-test');
  const other = makeCert(s.cli.dir, 'other', 'someone-else');
  const { JDLS, key } = await secured(s, { tlsCert: srv.cert, tlsKey: srv.key });
  const c = await JdlsClient.connect(`${JDLS},SECRET=${key},TLSCA=${srv.cert}`, { errorTrace: false });
  t.teardown(() => c.close());
  t.true((await c.lock(FILE, 'TLS*1', 'write')).granted);
  t.is((await c.status(FILE, 'TLS*1')).code, 2);
  // plain TCP to a TLS server: no frame comes back
  const port = c.server.port;
  await t.throwsAsync(JdlsClient.connect(`${JDLS},SECRET=${key},TIMEOUT=3`, { errorTrace: false }));
  const plain = await converse(port, [{ ...HELLO, auth: true }]);
  t.is(plain.frames.length, 0, 'no frame in clear');
  await rejectsWith(t, JdlsClient.connect(`${JDLS},SECRET=${key},TLSCA=${other.cert}`, { errorTrace: false }), 'TLS', /TLS handshake failed/);
  const p = await s.run(SHIM_API, ['4242', '7', 'x:TLS*2', 'st:TLS*2', 'x:TLS*1'], { env: { JDLS: `${JDLS},SECRET=${key},TLSCA=${srv.cert}` } });
  t.is(p.code, 0, p.stderr);
  t.deepEqual(p.stdout.trim().split('\n'), ['ok', 'status 2 port=0', 'locked port=0']);
});

test.serial('TLS with tlsCA: a client without a certificate signed by that CA is refused; with one (the tls option: cert, key) it locks', async (t) => {
  const s = new ShimEnv(t);
  const srv = makeCert(s.cli.dir, 'server', 'jdls-test');
  const cli = makeCert(s.cli.dir, 'client', 'jdls-client');
  const stranger = makeCert(s.cli.dir, 'stranger', 'jdls-client');
  const JDLS = await s.startServer({ tlsCert: srv.cert, tlsKey: srv.key, tlsCA: cli.cert });
  const ca = fs.readFileSync(srv.cert);
  const c = await JdlsClient.connect(JDLS, { errorTrace: false, tls: { ca, cert: fs.readFileSync(cli.cert), key: fs.readFileSync(cli.key) } });
  t.teardown(() => c.close());
  t.true((await c.lock(FILE, 'CERT*1', 'write')).granted);
  for (const opts of [{ ca }, { ca, cert: fs.readFileSync(stranger.cert), key: fs.readFileSync(stranger.key) }]) {
    // TLS 1.3: the server judges the client's certificate after the client's
    // side of the handshake is done, so the refusal is a TLS alert or a close.
    const e = await t.throwsAsync(JdlsClient.connect(`${JDLS},TIMEOUT=5`, { errorTrace: false, tls: opts }));
    t.true(e instanceof JdlsError && ['TLS', 'SERVER_CLOSED'].includes(e.code), `${(e as JdlsError).code}: ${e?.message}`);
  }
});

test('AllowList: networks of both families; an IPv4-mapped address is judged as IPv4; refusals logged at most once per interval', (t) => {
  const lines: string[] = [];
  const log = pino({ level: 'warn' }, { write: (l: string) => void lines.push(l) });
  const a = new AllowList(['10.0.0.0/8', '127.0.0.1', '::1/128', 'fd00::/8'], log);
  for (const ok of ['10.1.2.3', '::ffff:10.9.9.9', '127.0.0.1', '::ffff:127.0.0.1', '::1', 'fd12::5']) t.true(a.admits(ok), ok);
  for (const no of ['11.0.0.1', '127.0.0.2', '::ffff:192.0.2.1', '::2', 'fe80::1', undefined]) t.false(a.admits(no), String(no));
  for (let i = 0; i < 50; i++) a.refused('192.0.2.1');
  t.is(lines.length, 1, 'one line for 50 refusals in a burst');
});

test.serial('allow-list: a client outside the networks is closed at accept without a byte and logged; inside, served', async (t) => {
  const s = new ShimEnv(t);
  const JDLS = await s.startServer({ allow: '[192.0.2.0/24, "::1/128"]' });
  const port = Number(/,(\d+)$/.exec(JDLS)?.[1]);
  const r = await converse(port, [HELLO]);
  t.is(r.bytes, 0, 'nothing sent to a refused client');
  await t.throwsAsync(JdlsClient.connect(`${JDLS},TIMEOUT=3`, { errorTrace: false }));
  const log = path.join(s.cli.dir, 'jdls-listener.log');
  t.true(await s.cli.until(() => fs.existsSync(log) && /not in the allow-list/.test(fs.readFileSync(log, 'utf8')), 10_000), 'the refusal is logged');
  // loopback admitted: the same service with 127.0.0.0/8 in its list
  const s2 = new ShimEnv(t);
  const JDLS2 = await s2.startServer({ allow: '[192.0.2.0/24, 127.0.0.0/8]' });
  const c = await JdlsClient.connect(JDLS2, { errorTrace: false });
  t.teardown(() => c.close());
  t.true((await c.lock(FILE, 'K', 'write')).granted);
});
