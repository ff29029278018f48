// server-fuzz.test.ts - throw random and mutated frames (seeded, bounded) at
// a live lock server from several connections at once, while well-behaved
// clients keep a shared counter under a lock; afterwards the well-behaved
// clients still lock correctly, no server process died, the fuzzers' locks
// are all gone, and the table is consistent (check() === 0).
// Reproduce a failure with JDLS_FUZZ_SEED=<seed printed by the test>.
import test from 'ava';
import fs from 'node:fs';
import net from 'node:net';
import { ServerEnv, until, sleep, alive } from './helpers/server-env.js';
import { expectType, FILE } from './helpers/wire-client.js';
import { encode } from '../src/protocol/codec.js';
import { PROTO } from '../src/protocol/constants.js';
import type { ClientFrame } from '../src/protocol/frames.js';

/** mulberry32: a small seeded PRNG. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let x = a;
    x = Math.imul(x ^ (x >>> 15), x | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

const KEYS = ['F0', 'F1', 'F2', 'COUNT', '', 'x'.repeat(512)];

function randomFrame(r: () => number, ids: number[]): ClientFrame {
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(r() * xs.length)] as T;
  const id = r() < 0.1 ? pick([0, 1, 0xffffffff]) : Math.floor(r() * 50) + 1;
  ids.push(id);
  const tid = pick([0, 1, 2, 0xffffffff]);
  const file = r() < 0.8 ? FILE : { inode: BigInt(Math.floor(r() * 2 ** 32)) * 7n, dev: pick([-1n, 0n, 7n, -(2n ** 63n)]) };
  const key = Buffer.from(pick(KEYS));
  switch (Math.floor(r() * 9)) {
    case 0: return { type: 'LOCK', requestId: id, nowait: r() < 0.5, noInterim: r() < 0.5, osLocks: r() < 0.1, mode: r() < 0.5 ? 'read' : 'write', tid, file, key };
    case 1: return { type: 'UNLOCK', requestId: id, tid, file, key };
    case 2: return { type: 'UNLOCK_FILE', requestId: id, tid, file };
    case 3: return { type: 'UNLOCK_ALL', requestId: id, tid, allThreads: r() < 0.5 };
    case 4: return { type: 'STATUS', requestId: id, tid, file, key };
    case 5: return { type: 'CANCEL', requestId: id, target: Math.floor(r() * 50) };
    case 6: return { type: 'TEST', requestId: id, text: 'é'.repeat(Math.floor(r() * 100)) };
    case 7: return { type: 'PING', requestId: id };
    default: return { type: 'HELLO', requestId: 0, minVersion: pick([0, 1, 2]), maxVersion: pick([0, 1, 255]), port: 1, pid: 1, keepaliveMs: 0, host: 'h', program: 'fuzz', options: '' };
  }
}

/** One frame's bytes, possibly damaged. */
function mutate(r: () => number, b: Buffer): Buffer {
  const out = Buffer.from(b);
  switch (Math.floor(r() * 8)) {
    case 0: { // flip a few bytes
      for (let i = 0, n = 1 + Math.floor(r() * 4); i < n; i++) {
        const at = Math.floor(r() * out.length);
        out[at] = Math.floor(r() * 256);
      }
      return out;
    }
    case 1: return out.subarray(0, Math.floor(r() * out.length)); // truncated
    case 2: { // a lying length
      out.writeUInt32BE(Math.floor(r() * (PROTO.MAX_FRAME + 100)), 0);
      return out;
    }
    case 3: return Buffer.concat([out, Buffer.from([Math.floor(r() * 256)])]); // one byte too many (next frame damaged)
    case 4: { // pure noise
      const n = Math.floor(r() * 64);
      const noise = Buffer.alloc(n);
      for (let i = 0; i < n; i++) noise[i] = Math.floor(r() * 256);
      return noise;
    }
    default: return out; // most frames intact
  }
}

const HELLO = encode({ type: 'HELLO', requestId: 0, minVersion: 1, maxVersion: 1, port: 99, pid: 0, keepaliveMs: 0, host: 'fuzz', program: 'fuzz', options: '' });

async function fuzzConnection(port: number, r: () => number, fuzzPid: number): Promise<string> {
  const sock = net.connect({ port, host: '127.0.0.1' });
  sock.on('error', () => {});
  sock.on('data', () => {}); // read (and drop) the answers
  const closed = new Promise<void>((resolve) => sock.on('close', () => resolve()));
  await new Promise<void>((resolve) => {
    sock.once('connect', resolve);
    sock.once('close', resolve);
  });
  if (r() < 0.9) {
    const h = Buffer.from(HELLO);
    h.writeUInt32BE(fuzzPid, 12 + 4 + 2 + 4); // a distinct client pid per connection
    sock.write(r() < 0.1 ? mutate(r, h) : h);
  }
  const ids: number[] = [];
  const n = 1 + Math.floor(r() * 25);
  for (let i = 0; i < n && !sock.destroyed; i++) {
    const f = randomFrame(r, ids);
    sock.write(r() < 0.3 ? mutate(r, encode(f)) : encode(f));
    if (r() < 0.2) await sleep(Math.floor(r() * 5));
  }
  const how = r();
  if (how < 0.4) sock.destroy(); // reset-ish
  else if (how < 0.8) sock.end(); // EOF
  else await sleep(20); // let the server decide (it may close on a fault)
  sock.destroy();
  await closed;
  return 'done';
}

test.serial('live-server fuzz: random and mutated frames from several connections; good clients unaffected; table consistent', async (t) => {
  const seed = Number(process.env['JDLS_FUZZ_SEED'] ?? 20240611);
  t.log(`fuzz seed ${seed}`);
  const env = new ServerEnv(t, { clientsPerProcess: 4, interimMs: 50, keepaliveMs: 2000 });
  await env.start();
  const listener = env.listenerPid() ?? 0;

  // Well-behaved clients keep a counter under COUNT (a key fuzzers lock too).
  const counter = env.file('counter');
  fs.writeFileSync(counter, '0');
  const good = [await env.client({ pid: 50_001 }), await env.client({ pid: 50_002 })];
  const goodServers = good.map((c) => c.welcome.serverPid);
  let goodCount = 0;
  let stop = false;
  const goodLoops = good.map(async (c) => {
    while (!stop) {
      expectType(await c.lock('COUNT', 'write', { noInterim: false }), 'GRANTED');
      fs.writeFileSync(counter, String(Number(fs.readFileSync(counter, 'utf8')) + 1));
      goodCount++;
      t.is(expectType(await c.unlock('COUNT'), 'RELEASED').count, 1);
      await c.ping();
    }
  });

  const r = rng(seed);
  const WORKERS = 6;
  const PER_WORKER = 40;
  let fuzzPid = 60_000;
  const workers = Array.from({ length: WORKERS }, async (_v, w) => {
    const wr = rng(seed + w + 1);
    for (let i = 0; i < PER_WORKER; i++) await fuzzConnection(env.port, wr, fuzzPid++);
  });
  void r;
  await Promise.all(workers);
  stop = true;
  await Promise.all(goodLoops);

  t.true(goodCount > 0);
  t.is(fs.readFileSync(counter, 'utf8'), String(goodCount));
  t.true(alive(listener), 'the listener survived');
  for (const pid of goodServers) t.true(alive(pid), `lock server ${pid} survived`);
  // Every fuzz connection is gone, and with it every lock and wait it had.
  await until(() => env.table.usage().held === 0 && env.table.usage().waiting === 0, 10_000, 'the fuzzers\' locks to go');
  t.is(env.table.check(), 0);
  // The good clients still lock correctly, against each other and a new client.
  expectType(await good[0]!.lock('AFTER'), 'GRANTED');
  expectType(await good[1]!.lock('AFTER', 'write', { nowait: true }), 'LOCKED');
  const fresh = await env.client({ pid: 50_003 });
  expectType(await fresh.lock('AFTER', 'read', { nowait: true }), 'LOCKED');
  expectType(await good[0]!.unlock('AFTER'), 'RELEASED');
  expectType(await fresh.lock('AFTER', 'read', { nowait: true }), 'GRANTED');
  const log = env.logs();
  const msgs = new Map<string, number>();
  for (const l of log.split('\n')) {
    const m = /"msg":"([^":]*)/.exec(l);
    if (m?.[1]) msgs.set(m[1], (msgs.get(m[1]) ?? 0) + 1);
  }
  t.log([...msgs].map(([m, n]) => `${n} x ${m}`).join('; '));
  t.regex(log, /protocol error/);
  t.notRegex(log, /"level":60/, 'nothing fatal logged');
});
