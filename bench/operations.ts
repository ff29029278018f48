// operations.ts - the figures behind docs/operations.md: what one lock-server
// process per client (clientsPerProcess: 1, the guide's model) costs against
// the default (up to 500 clients per process), measured on the real service
// (`jdls -ib` in a temp installation, port 0 on loopback) with the real
// client library.
//
//   node dist/bench/operations.js [--max1 N] [--json]     (about 2 minutes)
//
// For each setting: memory of the listener and of the lock-server processes
// (VmRSS, PSS, RssAnon from /proc) with 1, 100 and 500 clients connected
// (clientsPerProcess: 1 stops at --max1 clients, default 50: a process each;
// clientsPerProcess: 50 is shown as the middle way),
// each client holding 10 locks; the connect time (connect + HELLO..WELCOME)
// of a new client while the others stay connected; and how many connected
// clients one kill -9 of a lock-server process drops.
import fs from 'node:fs';
import { Service, cmdline } from './remote.js';
import { JdlsClient } from '../src/client/client.js';
import { disposeAll, median, machine } from './lib.js';

const FILE = { inode: 4242n, dev: 7n };

function kb(file: string, field: string): number {
  try {
    const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(fs.readFileSync(file, 'utf8'));
    return Number(m?.[1] ?? 0);
  } catch {
    return 0;
  }
}

interface ProcMem {
  pid: number;
  rssKiB: number;
  pssKiB: number;
  anonKiB: number;
}

const mem = (pid: number): ProcMem => ({
  pid,
  rssKiB: kb(`/proc/${pid}/status`, 'VmRSS'),
  pssKiB: kb(`/proc/${pid}/smaps_rollup`, 'Pss'),
  anonKiB: kb(`/proc/${pid}/status`, 'RssAnon'),
});

function processes(svc: Service): { listener: ProcMem[]; lockServers: ProcMem[] } {
  const pids = svc.pids();
  return {
    listener: pids.filter((p) => cmdline(p).includes('(listener)')).map(mem),
    lockServers: pids.filter((p) => cmdline(p).includes('(lock server)')).map(mem),
  };
}

const sum = (xs: ProcMem[], k: keyof Omit<ProcMem, 'pid'>): number => xs.reduce((a, m) => a + m[k], 0);
const mb = (kib: number): number => Math.round((kib / 1024) * 10) / 10;
const pct = (xs: number[], q: number): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))] ?? NaN;
};

interface Step {
  clients: number;
  lockServers: number;
  /** the lock servers' memory, summed (MB) */
  rssMB: number;
  pssMB: number;
  anonMB: number;
  /** per client (MB) */
  pssPerClientMB: number;
  listenerRssMB: number;
  /** connect times of the clients added in this step (ms) */
  connectMedianMs: number;
  connectP95Ms: number;
}

interface SettingResult {
  clientsPerProcess: number;
  idle: { listenerRssMB: number; listenerPssMB: number; spareRssMB: number; sparePssMB: number; spareAnonMB: number };
  steps: Step[];
  /** clients connected when one lock-server process was killed, and how many of them died */
  crash: { connected: number; dropped: number; survivorsAnswer: boolean };
}

async function settle(ms: number): Promise<void> {
  await new Promise((r) => setTimeout(r, ms));
}

async function runSetting(clientsPerProcess: number, steps: number[]): Promise<SettingResult> {
  // All clients come from this one address: the table (13150 locks) may be
  // theirs (addressSharePct 100) for 500 x 10 locks.
  const svc = new Service(`ops-${clientsPerProcess}`, { clientsPerProcess, spareProcesses: 1, idleProcessMs: 600_000, addressSharePct: 100 }, '13000,50');
  const clients: JdlsClient[] = [];
  const dead = new Set<JdlsClient>();
  try {
    await settle(1500); // the spare lock server starts after the listener
    const p0 = processes(svc);
    const idle = {
      listenerRssMB: mb(sum(p0.listener, 'rssKiB')),
      listenerPssMB: mb(sum(p0.listener, 'pssKiB')),
      spareRssMB: mb(sum(p0.lockServers, 'rssKiB')),
      sparePssMB: mb(sum(p0.lockServers, 'pssKiB')),
      spareAnonMB: mb(sum(p0.lockServers, 'anonKiB')),
    };
    const out: Step[] = [];
    for (const target of steps) {
      const times: number[] = [];
      while (clients.length < target) {
        const i = clients.length;
        const t0 = process.hrtime.bigint();
        const c = await JdlsClient.connect(`SERVER=127.0.0.1,${svc.port}`, { errorTrace: false, program: 'bench-ops', pid: 100_000 + i, connectTimeoutMs: 60_000 });
        times.push(Number(process.hrtime.bigint() - t0) / 1e6);
        c.on('dead', () => dead.add(c));
        clients.push(c);
        await Promise.all(Array.from({ length: 10 }, (_, k) => c.lock(FILE, `C${i}K${k}`, 'write', { nowait: true })));
      }
      await settle(1000); // the spare that the last connect used is replaced
      const p = processes(svc);
      const servers = p.lockServers;
      out.push({
        clients: target,
        lockServers: servers.length,
        rssMB: mb(sum(servers, 'rssKiB')),
        pssMB: mb(sum(servers, 'pssKiB')),
        anonMB: mb(sum(servers, 'anonKiB')),
        pssPerClientMB: Math.round((sum(servers, 'pssKiB') / 1024 / target) * 100) / 100,
        listenerRssMB: mb(sum(p.listener, 'rssKiB')),
        connectMedianMs: Math.round(median(times) * 100) / 100,
        connectP95Ms: Math.round(pct(times, 0.95) * 100) / 100,
      });
      process.stderr.write(`clientsPerProcess ${clientsPerProcess}: ${JSON.stringify(out.at(-1))}\n`);
    }
    // One crash: kill -9 the lock server of client 0; count who died.
    const victim = clients[0]?.server.pid ?? 0;
    process.kill(victim, 'SIGKILL');
    const deadline = Date.now() + 10_000;
    const expected = clients.filter((c) => c.server.pid === victim).length;
    while (dead.size < expected && Date.now() < deadline) await settle(20);
    await settle(500); // anyone else who would die
    const survivors = clients.filter((c) => !dead.has(c));
    const answers = await Promise.all(survivors.slice(0, 50).map((c) => c.ping().then(() => true, () => false)));
    return { clientsPerProcess, idle, steps: out, crash: { connected: clients.length, dropped: dead.size, survivorsAnswer: answers.every(Boolean) } };
  } finally {
    await Promise.all(clients.map((c) => c.close().catch(() => undefined)));
    svc.stop();
  }
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const i = args.indexOf('--max1');
  const max1 = i >= 0 ? Number(args[i + 1]) : 50;
  const shared = await runSetting(500, [1, 100, 500]);
  const middle = await runSetting(50, [1, 100, 500]);
  const single = await runSetting(1, [1, 10, max1].filter((n, k, a) => a.indexOf(n) === k && n <= max1));
  const result = { machine: machine(), shared, middle, single };
  if (args.includes('--json')) process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
  else {
    process.stdout.write(`${JSON.stringify(result.machine)}\n`);
    for (const r of [shared, middle, single]) {
      process.stdout.write(`\nclientsPerProcess: ${r.clientsPerProcess}\n`);
      process.stdout.write(`  idle: listener RSS ${r.idle.listenerRssMB} MB (PSS ${r.idle.listenerPssMB}), spare lock server RSS ${r.idle.spareRssMB} MB (PSS ${r.idle.sparePssMB}, anon ${r.idle.spareAnonMB})\n`);
      process.stdout.write('  clients  lock servers  RSS MB  PSS MB  anon MB  PSS/client MB  listener RSS MB  connect ms (median, p95)\n');
      for (const s of r.steps)
        process.stdout.write(`  ${String(s.clients).padStart(7)}  ${String(s.lockServers).padStart(12)}  ${String(s.rssMB).padStart(6)}  ${String(s.pssMB).padStart(6)}  ${String(s.anonMB).padStart(7)}  ${String(s.pssPerClientMB).padStart(13)}  ${String(s.listenerRssMB).padStart(15)}  ${s.connectMedianMs}, ${s.connectP95Ms}\n`);
      process.stdout.write(`  kill -9 of one lock server with ${r.crash.connected} clients connected: ${r.crash.dropped} dropped; the others answer: ${r.crash.survivorsAnswer}\n`);
    }
  }
}

main().then(
  () => {
    disposeAll();
    process.exit(0);
  },
  (e: unknown) => {
    process.stderr.write(`${(e as Error).stack ?? String(e)}\n`);
    disposeAll();
    process.exit(1);
  },
);
