// netns-service.ts - the lock service on a "server host" and clients on
// others (network namespaces, test/helpers/netns.ts): `jdls -ib` runs in the
// server namespace bound to its veth address; remote clients (the real
// JdlsClient, test/fixtures/jdls-client-locker.ts) run in either namespace;
// local direct processes run in the root namespace (the shm table is
// host-wide: namespaces only change networking). Everything started here is
// killed at teardown.
import type { ExecutionContext } from 'ava';
import { ServerEnv } from './server-env.js';
import { Proc, nodeFixture, withTimeout } from './table-env.js';
import { JDLS } from './cli-env.js';
import { NetnsPair } from './netns.js';

export interface Hosts {
  pair: NetnsPair;
  env: ServerEnv;
  jdls: string;
  /** a JdlsClient process on a host */
  remote(ns: string, args: string[]): Proc;
  /** jdls-locker (C, the table directly) on this host */
  local(args: string[]): Proc;
  /** node-locker (LockTable, the table directly) on this host */
  direct(args: string[]): Proc;
}

/** Two hosts, the lock service (jdls -ib) on the server host bound to its veth address. */
export async function hosts(t: ExecutionContext, settings: Record<string, unknown> = {}): Promise<Hosts> {
  // The pair first: its teardown (kill what runs inside, delete the
  // namespaces) then runs after ServerEnv's (last in, first out).
  const pair = new NetnsPair(t);
  const env = new ServerEnv(t, { bind: pair.serverAddr, ...settings });
  const procs: Proc[] = [];
  t.teardown(async () => {
    for (const p of procs) if (p.running) try { process.kill(p.pid, 'SIGKILL'); } catch { /* gone */ }
    await Promise.all(procs.map((p) => withTimeout(p.exited, 5000, p.label).catch(() => undefined)));
  });
  const start = pair.spawn(pair.server, 'jdls -ib', process.execPath, [JDLS, '-ib'], env.env);
  const exit = await withTimeout(start.exited, 30_000, 'jdls -ib in the server namespace');
  if (exit.code !== 0) throw new Error(`jdls -ib in ${pair.server} failed (${exit.code}): ${start.stderr}\n${env.logs()}`);
  const jdls = `SERVER=${pair.serverAddr},${env.port}`;
  return {
    pair, env, jdls,
    remote(ns, args) {
      const p = pair.spawn(ns, `jdls-client-locker ${args.join(' ')}`, process.execPath, [nodeFixture('jdls-client-locker'), ...args], { ...env.env, JDLS: jdls });
      procs.push(p);
      return p;
    },
    local(args) {
      const p = env.locker(args);
      procs.push(p);
      return p;
    },
    direct(args) {
      const p = env.nodeLocker(args);
      procs.push(p);
      return p;
    },
  };
}
