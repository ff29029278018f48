// server-config.test.ts - the listener's settings: defaults, jdls.yaml,
// command-line overrides (the command line wins), errors naming the key,
// and the jdls command refusing a bad file before starting anything.
import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { loadConfig, DEFAULTS, configFromEnv, configToEnv, CONFIG_ENV } from '../src/server/config.js';
import { ServerEnv } from './helpers/server-env.js';
import { testDir } from './helpers/installations.js';

function tempDir(t: { teardown: (f: () => void) => void }, yaml?: string): string {
  const dir = testDir('cfg');
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  if (yaml !== undefined) fs.writeFileSync(path.join(dir, 'jdls.yaml'), yaml);
  return dir;
}

test('defaults without a file', (t) => {
  const cfg = loadConfig(tempDir(t));
  t.deepEqual(cfg, { ...DEFAULTS });
  t.is(cfg.port, 50002);
  t.is(cfg.bind, '0.0.0.0');
  t.is(cfg.clientsPerProcess, 500);
  t.is(cfg.interimMs, 5000);
  t.is(cfg.keepaliveMs, 30000);
});

test('the file sets values; the command line wins', (t) => {
  const dir = tempDir(t, 'port: 50010\nbind: 10.0.0.1\nclientsPerProcess: 1\ninterimMs: 250\nmaxConnections: 10\n');
  t.like(loadConfig(dir), { port: 50010, bind: '10.0.0.1', clientsPerProcess: 1, interimMs: 250, maxConnections: 10 });
  t.like(loadConfig(dir, { port: '50020', bind: '::' }), { port: 50020, bind: '::', clientsPerProcess: 1 });
  t.is(loadConfig(tempDir(t, '')).port, 50002, 'an empty file is all defaults');
  t.is(loadConfig(tempDir(t, '# only a comment\n')).port, 50002);
});

test('unknown keys and bad values are errors naming the key', (t) => {
  const cases: [string, RegExp][] = [
    ['prot: 1\n', /unknown setting 'prot' \(known: port, bind,/],
    ['port: 70000\n', /jdls\.yaml: port must be an integer 0\.\.65535/],
    ['port: abc\n', /port must be an integer .* got "abc"/],
    ['bind: localhost\n', /bind must be an IP address/],
    ['clientsPerProcess: 0\n', /clientsPerProcess must be an integer 1\.\./],
    ['interimMs: 1.5\n', /interimMs must be an integer/],
    ['keepaliveMs: -5\n', /keepaliveMs must be an integer/],
    ['- a\n- b\n', /must be a mapping/],
    ['port: [1\n', /not valid YAML/],
    ['lockDir: relative/dir\n', /lockDir must be an absolute path/],
    ['secretFile: jdls.key\n', /secretFile must be an absolute path \(key file of the shared secret\)/],
    ['tlsCert: 5\n', /tlsCert must be an absolute path/],
    ['allow: [10.0.0.0/33]\n', /allow must be a list of networks/],
    ['allow: [example.com/8]\n', /allow must be a list of networks/],
    ['allow: {a: 1}\n', /allow must be a list of networks/],
  ];
  for (const [yaml, re] of cases) {
    const e = t.throws(() => loadConfig(tempDir(t, yaml)));
    t.regex(e?.message ?? '', re, yaml);
    t.is((e as { code?: string }).code, 'BAD_ARGUMENT');
  }
  t.throws(() => loadConfig(tempDir(t), { port: '99999' }), { message: /--port must be an integer 0\.\.65535/ });
});

test('who may connect: secretFile, TLS files and allow (a list, or one network) are read and travel to child processes', (t) => {
  const cfg = loadConfig(tempDir(t, 'secretFile: /etc/jdls/key\ntlsCert: /etc/jdls/c.pem\ntlsKey: /etc/jdls/k.pem\nallow: [10.0.0.0/8, 127.0.0.1, "::1/128"]\n'));
  t.like(cfg, { secretFile: '/etc/jdls/key', tlsCert: '/etc/jdls/c.pem', tlsKey: '/etc/jdls/k.pem', tlsCA: '' });
  t.deepEqual(cfg.allow, ['10.0.0.0/8', '127.0.0.1', '::1/128']);
  t.deepEqual(configFromEnv({ [CONFIG_ENV]: configToEnv(cfg) }), cfg);
  t.deepEqual(loadConfig(tempDir(t, 'allow: 192.0.2.0/24\n')).allow, ['192.0.2.0/24']);
  t.deepEqual(DEFAULTS.allow, [], 'no allow-list by default: everyone');
  t.is(DEFAULTS.secretFile, '', 'no secret by default');
});

test('settings travel to child processes through the environment', (t) => {
  const cfg = { ...DEFAULTS, port: 1234, interimMs: 77 };
  t.deepEqual(configFromEnv({ [CONFIG_ENV]: configToEnv(cfg) }), cfg);
  t.is(configFromEnv({}), undefined);
});

test.serial('jdls -ib refuses a bad jdls.yaml before starting anything', async (t) => {
  const env = new ServerEnv(t);
  env.writeConfig({ maxConnections: 'many' });
  const r = await env.jdls(['-ib']);
  t.is(r.code, 1);
  t.regex(r.stderr, /jdls\.yaml: maxConnections must be an integer/);
  t.false(fs.existsSync(env.shm), 'no table');
  t.false(fs.existsSync(env.file('jdls-monitor.log')));
  // --port on the command line wins over the file.
  env.writeConfig({});
  const ok = await env.jdls(['-ib', '--port', '0', '--bind', '127.0.0.1']);
  t.is(ok.code, 0, ok.stderr);
  t.regex(ok.stdout, /lock listener started at pid \d+ on 127\.0\.0\.1 port [1-9]\d*/);
  const again = await env.jdls(['-ibD']);
  t.is(again.code, 1);
  t.regex(again.stderr, /lock listener already running at pid \d+/);
  const k = await env.jdls(['-k']);
  t.is(k.code, 0, k.stderr);
  t.regex(k.stdout, /lock listener at pid \d+ stopped\njdls: lock monitor at pid \d+ stopped/);
  t.false(fs.existsSync(env.file('jdls-listener.json')), 'pid file removed');
});

test.serial('-ibD without a monitor serves OS file locks: jlock_* files in the lock directory, conflicts between clients', async (t) => {
  const env = new ServerEnv(t);
  const r = await env.start(['-ibD']);
  t.regex(r.stdout, /lock listener started at pid \d+ on 127\.0\.0\.1 port \d+, OS file locks/);
  t.false(fs.existsSync(env.shm), 'no shared-memory table');
  const a = await env.client({ pid: 5001 });
  const b = await env.client({ pid: 5002 });
  t.is((await a.lock('OSKEY', 'write')).type, 'GRANTED');
  const files = fs.readdirSync(env.lockDir);
  t.deepEqual(files, ['jlock_00001092_00000007'], 'the lock file of inode 4242, dev 7');
  const locked = await b.lock('OSKEY', 'write', { nowait: true });
  t.is(locked.type, 'LOCKED');
  t.is((await b.lock('OTHER', 'write', { nowait: true })).type, 'GRANTED');
  t.is((await a.unlock('OSKEY')).type, 'RELEASED');
  t.is((await b.lock('OSKEY', 'write', { nowait: true })).type, 'GRANTED');
});

test('witness: a mapping of endpoints, prefix, leaseMs and name; checked with errors naming it; travels to child processes', (t) => {
  t.is(loadConfig(tempDir(t)).witness, null, 'none by default');
  const cfg = loadConfig(tempDir(t, 'witness:\n  endpoints: [http://10.0.0.1:2379, "http://[::1]:2379"]\n  prefix: /jdls/pair-a\n  name: a\n'));
  t.deepEqual(cfg.witness, { endpoints: ['http://10.0.0.1:2379', 'http://[::1]:2379'], prefix: '/jdls/pair-a', leaseMs: 5000, name: 'a' });
  t.deepEqual(configFromEnv({ [CONFIG_ENV]: configToEnv(cfg) })?.witness, cfg.witness);
  t.is(loadConfig(tempDir(t, 'witness: { endpoints: http://e:2379, prefix: /p, leaseMs: 2000 }\n')).witness?.name, '', 'name defaults (hostname:port, made by the listener)');
  for (const [yaml, msg] of [
    ['witness: yes\n', /witness: must be a mapping/],
    ['witness: { prefix: /p }\n', /endpoints must be a list of etcd client URLs/],
    ['witness: { endpoints: [https://e:2379], prefix: /p }\n', /is not an etcd client URL http:\/\/host:port/],
    ['witness: { endpoints: [http://e:2379/v3], prefix: /p }\n', /not an etcd client URL/],
    ['witness: { endpoints: [http://e:2379], prefix: jdls }\n', /prefix must be a key path/],
    ['witness: { endpoints: [http://e:2379], prefix: /p/ }\n', /prefix must be a key path/],
    ['witness: { endpoints: [http://e:2379], prefix: /p, leaseMs: 10 }\n', /leaseMs must be an integer 1000\.\.600000/],
    ['witness: { endpoints: [http://e:2379], prefix: /p, lease: 10 }\n', /unknown key 'lease'/],
  ] as const) {
    const e = t.throws(() => loadConfig(tempDir(t, yaml)));
    t.regex(e?.message ?? '', msg, yaml);
    t.regex(e?.message ?? '', /jdls\.yaml: witness/, yaml);
  }
});
