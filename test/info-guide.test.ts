// info-guide.test.ts - the guide's SHOW-ITEM-LOCKS example, for real: three
// clients hold locks on one file - a local process locking directly in the
// table (0.0.0.0), a remote library client on another host (its address),
// a local library client through loopback (127.0.0.1) - and show-item-locks
// names all three with their ports and pids, on the lock server's host (the
// info directory) and from the client's host (the protocol). A waiter
// appears in the last column; a direct process killed with -9 leaves a stale
// record, shown as stale, that the monitor's tidy-up removes.
//
// Two hosts are two network namespaces (test/helpers/netns.ts); the lock
// server's host is also the root namespace's table (the shm table is
// host-wide), where the direct process runs. The listener binds 0.0.0.0
// inside the server namespace (no other interface there), so the loopback
// client reaches it at 127.0.0.1 and the remote one at the veth address.
//
// Skipped, with the reason, when not root or namespaces cannot be made.
import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { ServerEnv } from './helpers/server-env.js';
import { NetnsPair, netnsUnavailable } from './helpers/netns.js';
import { JDLS, runToEnd } from './helpers/cli-env.js';
import { Proc, nodeFixture, withTimeout, waitUntil } from './helpers/table-env.js';
import { testDir, recordPid } from './helpers/installations.js';
import { infoDir } from '../src/info/format.js';
import { readInfoDir } from '../src/info/reader.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const SHOW = path.resolve(here, '..', 'src', 'cli', 'show-item-locks.js');

interface Row {
  ipaddr: string;
  port: number;
  pid: number;
  key: string;
  lock: string;
  waiters: string[];
  stale?: string;
}

const why = netnsUnavailable();
if (why) console.warn(`info-guide.test: SKIPPED: ${why}`);
const nsTest = why ? test.serial.skip : test.serial;

nsTest('the guide example: three clients on one file, shown locally and from the client host; a waiter; a stale record tidied', async (t) => {
  const pair = new NetnsPair(t);
  const srv = new ServerEnv(t, { bind: '0.0.0.0' });
  const procs: Proc[] = [];
  t.teardown(async () => {
    for (const p of procs) if (p.running) try { process.kill(p.pid, 'SIGKILL'); } catch { /* gone */ }
    await Promise.all(procs.map((p) => withTimeout(p.exited, 5000, p.label).catch(() => undefined)));
  });
  const start = pair.spawn(pair.server, 'jdls -ib', process.execPath, [JDLS, '-ib'], srv.env);
  const exit = await withTimeout(start.exited, 30_000, 'jdls -ib in the server namespace');
  t.is(exit.code, 0, `${start.stderr}\n${srv.logs()}`);
  const port = srv.port;

  // Port 2: a local process locking directly in the table (root namespace: the same host's table).
  const direct = new Proc(spawn(process.execPath, [nodeFixture('node-locker'), 'wait', '32549', 'write'], { env: { ...srv.env, JBCPORTNO: '2', NODE_LOCKER_INFO: '1' }, stdio: ['pipe', 'pipe', 'pipe'] }), 'direct port 2');
  recordPid(srv.dir, direct.pid);
  procs.push(direct);
  // Port 1000: a remote client on the client host.
  const remoteEnv = (p: number): NodeJS.ProcessEnv => ({ ...srv.env, JDLS: `SERVER=${pair.serverAddr},${port}`, JBCPORTNO: String(p) });
  const remote = pair.spawn(pair.client, 'remote port 1000', process.execPath, [nodeFixture('jdls-client-locker'), 'hold', '33537', 'write'], remoteEnv(1000));
  procs.push(remote);
  // Port 4: a local client through loopback (the server host's namespace, JDLS at 127.0.0.1).
  const loop = pair.spawn(pair.server, 'loopback port 4', process.execPath, [nodeFixture('jdls-client-locker'), 'hold', 'USD163170001', 'write'], { ...srv.env, JDLS: `SERVER=127.0.0.1,${port}`, JBCPORTNO: '4' });
  procs.push(loop);
  await direct.expect('GRANTED', 20_000);
  await remote.expect('GRANTED', 20_000);
  await loop.expect('GRANTED', 20_000);
  // Port 7: a remote client waiting for port 1000's lock.
  const waiter = pair.spawn(pair.client, 'remote waiter port 7', process.execPath, [nodeFixture('jdls-client-locker'), 'wait', '33537', 'write'], remoteEnv(7));
  procs.push(waiter);
  await waiter.expect('CONNECTED', 20_000);

  const appDir = testDir('info');
  t.teardown(() => fs.rmSync(appDir, { recursive: true, force: true }));
  const local = async (): Promise<Row[]> => {
    const env = { ...srv.env };
    delete env['JDLS'];
    const r = await runToEnd(process.execPath, [SHOW, '--json'], env, 30_000);
    if (r.code !== 0) throw new Error(`show-item-locks: ${r.code} ${r.stderr}`);
    return (JSON.parse(r.stdout) as { rows: Row[] }).rows;
  };
  const fromClient = async (args: string[]): Promise<{ code: number | null; out: string }> => {
    const p = pair.spawn(pair.client, 'show-item-locks', process.execPath, [SHOW, ...args], { ...srv.env, JBCRELEASEDIR: appDir, JDLS: `SERVER=${pair.serverAddr},${port}` });
    procs.push(p);
    const lines: string[] = [];
    for (;;) {
      try {
        lines.push(await p.line(30_000));
      } catch {
        break; // output ended
      }
    }
    const e = await withTimeout(p.exited, 30_000, 'show-item-locks in the client namespace');
    return { code: e.code, out: `${lines.join('\n')}\n${p.stderr}` };
  };
  const want = (rows: Row[]): string[] => rows.map((r) => `${r.ipaddr} ${r.port} ${r.pid} ${r.key} ${r.waiters.join(',') || '---'}${r.stale ? ' stale' : ''}`).sort();
  const expected = [
    `0.0.0.0 2 ${direct.pid} 32549 ---`,
    `${pair.clientAddr} 1000 ${remote.pid} 33537 7`,
    `127.0.0.1 4 ${loop.pid} USD163170001 ---`,
  ].sort();

  // Records are written within ~2 x INFO_FLUSH_MS of a change, and the waiter's as it blocks: poll, bounded.
  let rows: Row[] = [];
  const deadline = Date.now() + 15_000;
  while (Date.now() < deadline) {
    rows = await local();
    if (want(rows).join('|') === expected.join('|')) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  const infoFiles = (): string => { try { return fs.readdirSync(infoDir(srv.dir)).join(' '); } catch (e) { return String(e); } };
  t.deepEqual(want(rows), expected, `${JSON.stringify(rows)}\ninfo directory: ${infoFiles()}\ndirect: ${direct.stderr}\nlogs (info):\n${srv.logs().split('\n').filter((l) => /info|record/i.test(l)).slice(-20).join('\n')}`);
  t.true(rows.every((r) => r.lock.endsWith(',W')));

  // From the client host, over the protocol: the same three, the same waiter.
  const c = await fromClient([]);
  t.is(c.code, 0, c.out);
  const text = c.out.split('\n');
  t.regex(text[0] ?? '', /^show-item-locks information retrieved from process information entries generated in JBCRELEASEDIR\/proc\/info directory on host /);
  t.true(text.some((l) => new RegExp(`^0\\.0\\.0\\.0 +2 +${direct.pid} .* 32549 +\\S+,W +---$`).test(l)), c.out);
  t.true(text.some((l) => new RegExp(`^${pair.clientAddr.replace(/\./g, '\\.')} +1000 +${remote.pid} .* 33537 +\\S+,W +7$`).test(l)), c.out);
  t.true(text.some((l) => new RegExp(`^127\\.0\\.0\\.1 +4 +${loop.pid} .* USD163170001 +\\S+,W +---$`).test(l)), c.out);

  // The direct process killed with -9: its record stays, stale; the monitor's
  // tidy-up (at its start) removes it. The monitor is stopped first: its
  // periodic tidy-up could remove the record before it is looked at.
  t.is((await srv.jdls(['-kA'])).code, 0);
  await direct.kill9();
  const afterKill = await local();
  const dead = afterKill.find((r) => r.port === 2);
  t.truthy(dead?.stale, JSON.stringify(afterKill));
  t.regex(dead?.stale ?? '', new RegExp(`process ${direct.pid} is dead`));
  const again = await srv.jdls(['-ibA']);
  t.is(again.code, 0, again.stderr);
  await waitUntil(() => !readInfoDir(srv.dir).records.some((r) => r.record.port === 2), 15_000, 'the stale record to be tidied');
  t.false(fs.readdirSync(infoDir(srv.dir)).some((f) => f.startsWith('2.')));

  // Releasing port 1000's lock: the waiter gets it.
  remote.release();
  // The waiter prints the server's interim WAITING frames while it waits (one
  // every interim period: a loaded run takes long enough to see some).
  let line = await waiter.line(20_000);
  while (line.startsWith('WAITING ')) line = await waiter.line(20_000);
  t.regex(line, /^GRANTED /, 'the waiter is granted once port 1000 releases');
});
