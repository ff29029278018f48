// os-tokens.test.ts - fencing tokens of the OS file-lock mechanism
// (native/addon/tokens.cc, src/locks/token-counter.ts): a lock server
// without a table (`jdls -ibD`) and OSLOCKS requests on a table server give
// tokens from the installation's counter; they rise per key under
// contention, and across a restart of the listener (a new epoch, recorded
// before it serves).
import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { ServerEnv } from './helpers/server-env.js';
import { JdlsClient } from '../src/client/client.js';
import { tokenEpoch } from '../src/locks/table.js';

const FILE = { inode: 4242n, dev: 7n };

/** Two clients take turns on one key (each waits for the other): the tokens in grant order. */
async function contend(jdls: string, rounds: number): Promise<bigint[]> {
  const [a, b] = await Promise.all([0, 1].map(() => JdlsClient.connect(jdls, { errorTrace: false })));
  if (!a || !b) throw new Error('no clients');
  const tokens: bigint[] = [];
  try {
    for (let i = 0; i < rounds; i++) {
      const first = i % 2 ? a : b;
      const second = i % 2 ? b : a;
      const g1 = await first.lock(FILE, 'OK', 'write');
      const waiting = second.lock(FILE, 'OK', 'write');
      if (!g1.granted || g1.token === undefined) throw new Error('no token');
      tokens.push(g1.token);
      await first.unlock(FILE, 'OK');
      const g2 = await waiting;
      if (!g2.granted || g2.token === undefined) throw new Error('no token for the waiter');
      tokens.push(g2.token);
      await second.unlock(FILE, 'OK');
    }
  } finally {
    await Promise.all([a.close(), b.close()]);
  }
  return tokens;
}

const rising = (xs: bigint[]): boolean => xs.every((v, i) => i === 0 || v > (xs[i - 1] ?? 0n));

test.serial('jdls -ibD (OS file locks): every grant has a token, rising per key; a restarted listener starts a higher epoch', async (t) => {
  const env = new ServerEnv(t);
  await env.start(['-ibD']);
  const before = await contend(`SERVER=127.0.0.1,${env.port}`, 10);
  t.true(rising(before), before.join(' '));
  const epoch1 = tokenEpoch(before[0] ?? 0n);
  t.true(epoch1 >= 1n);
  t.is(fs.readFileSync(path.join(env.dir, 'token-epoch'), 'utf8').trim(), String(epoch1));
  t.is((await env.jdls(['-kD'])).code, 0);
  await env.start(['-ibD']);
  const after = await contend(`SERVER=127.0.0.1,${env.port}`, 3);
  t.true(rising([...before, ...after]));
  t.is(tokenEpoch(after[0] ?? 0n), epoch1 + 1n);
});

test.serial('OSLOCKS on a table server: the OS record locks have tokens too', async (t) => {
  const env = new ServerEnv(t);
  await env.start(['-ib']);
  const tokens = await contend(`SERVER=127.0.0.1,${env.port},OSLOCKS`, 5);
  t.true(rising(tokens), tokens.join(' '));
  t.true((tokens[0] ?? 0n) > 0n);
});
