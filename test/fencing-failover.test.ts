// fencing-failover.test.ts - fencing tokens across SERVER2 failover, with two
// real services (two installations, each `jdls -ib` on loopback) and the
// real client library: the secondary, told the primary's token with every
// mirrored grant (FENCE), gives tokens of a higher epoch; after the primary
// is killed with -9, the next grant of the same key outranks every token the
// primary gave - and the secondary's monitor records its raised epoch, so a
// restart of the secondary keeps it.
import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { ServerEnv, processesOf, until } from './helpers/server-env.js';
import { JdlsClient } from '../src/client/client.js';
import { tokenEpoch } from '../src/locks/table.js';

const FILE = { inode: 4242n, dev: 7n };

function killAll(dir: string): void {
  for (const pid of processesOf(dir)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
}

test.serial('tokens keep rising across failover: the secondary outranks every token of the primary', async (t) => {
  const primary = new ServerEnv(t);
  const secondary = new ServerEnv(t);
  await primary.start();
  await secondary.start();
  const c = await JdlsClient.connect(`SERVER=127.0.0.1,${primary.port},SERVER2=127.0.0.1,${secondary.port}`, { errorTrace: false });
  t.teardown(() => c.close().catch(() => undefined));
  const before: bigint[] = [];
  for (let i = 0; i < 5; i++) {
    const g = await c.lock(FILE, 'FK', 'write');
    if (!g.granted || g.token === undefined) return t.fail('no token from the primary');
    before.push(g.token);
    await c.unlock(FILE, 'FK');
  }
  t.true(before.every((v, i) => i === 0 || v > (before[i - 1] ?? 0n)));
  const primaryEpoch = tokenEpoch(before[before.length - 1] ?? 0n);
  // The secondary's own epoch is now above the primary's (FENCE), and its
  // monitor writes it down within a second.
  await until(() => BigInt(fs.readFileSync(path.join(secondary.dir, 'token-epoch'), 'utf8').trim()) > primaryEpoch, 10_000, "the secondary's raised epoch recorded");
  killAll(primary.dir);
  await until(() => processesOf(primary.dir).length === 0, 10_000, 'the primary gone');
  const after = await c.lock(FILE, 'FK', 'write');
  if (!after.granted || after.token === undefined) return t.fail('no token after failover');
  const highest = before[before.length - 1] ?? 0n;
  t.true(after.token > highest, `after failover ${after.token} > ${highest}`);
  t.true(tokenEpoch(after.token) > primaryEpoch);
  await c.unlock(FILE, 'FK');
});
