// adversary.ts - the hostile clients of the chaos suite (issue 13): floods of
// connections, malformed frames, a client presenting another's pid and
// thread id, lock-table exhaustion, and pid reuse. The runner calls one at a
// time during a run; each is bounded by its own timers, records its faults
// (faults.jsonl, through cluster.recordFault) and returns them with the
// violations it saw itself (the checker judges the workload's histories).
//
// Owns: the attacks and their immediate checks. Does not own: the workload,
// the nemesis's faults (kills, pauses, cuts), or the histories' checks.
//
// Where each runs: the network attacks from a client host's namespace (the
// runner's root namespace has no route to the servers), through
// chaos/fixtures/adv-proc.ts; the table attacks against the server host's
// shared memory, which is host-wide (namespaces here are network
// namespaces only): the impersonation's table reads and the pid-reuse entry
// in this process, the table exhaustion in a process of its own (a hang is
// killed by pid, the runner goes on).
//
// Pid reuse: real reuse is possible here (a pid namespace may lower its own
// pid_max: `unshare --pid --fork --mount-proc`, pid_max 1000, pids wrap
// after ~1000 forks - tried on kernel 6.18), but not faithful: a process in
// a pid namespace records its namespace's pid in the table, and the
// monitor, the lock servers and every other process judge an owner's
// liveness by that number in the root namespace, where it names another
// process. So it is SIMULATED: an entry whose owner is a live, unrelated
// process's pid with another start time (what a dead owner whose pid was
// recycled looks like to the table).
import { LockTable, makeOwner, fileId, type Owner, type LockRow } from '../src/locks/table.js';
import { native } from '../src/native.js';
import { ipBytes } from '../src/ip.js';
import type { ChaosCluster, ClientHandle, ConfigName, ServerHandle } from './cluster-types.js';
import type { FaultRecord } from './faults.js';
import { AdvProc, othersFaults, pickHosts, pidAlive, sleep, snapshot, abnormalLockServerDeaths, targetServer, withTimeout, type Answer } from './adv-util.js';

export type Property = 'double-grant' | 'lost-update' | 'tokens' | 'liveness' | 'cleanup';
export interface Violation { property: Property; message: string }
export interface AdversaryResult { faults: FaultRecord[]; violations: Violation[] }
export type Adversary = (cluster: ChaosCluster, rng: () => number) => Promise<AdversaryResult>;

/** The workload's record file (chaos/history.ts: family `rec`). */
const REC_FILE = { inode: 4242n, dev: 7n };
/** A file identity of the adversaries' own (table exhaustion), never the workload's. */
const FILL_INODE = 0xad7e11n;
/** How long a well-behaved client may take to be served after an attack. */
const PROBE_MS = 10_000;
/** The table exhaustion process must finish within this (fill + hold + release). */
const FILL_BOUND_MS = 30_000;

let probeSeq = 0;

/** Env for a network fixture: nothing of an installation (it is a remote client). */
function clientEnv(): NodeJS.ProcessEnv {
  const env = { ...process.env };
  delete env['JBCRELEASEDIR'];
  delete env['LD_PRELOAD'];
  return env;
}

function record(cluster: ChaosCluster, f: FaultRecord, into: FaultRecord[]): void {
  cluster.recordFault(f);
  into.push(f);
}

/**
 * The probe: a well-behaved client from `host` must connect, HELLO, LOCK a
 * cold key of its own and UNLOCK it within PROBE_MS. A failure is a liveness
 * violation, unless another fault overlapped (a cut link, a killed
 * listener): then it is only noted.
 */
async function probe(cluster: ChaosCluster, server: ServerHandle, host: string, kind: string, from: bigint, mine: FaultRecord[], out: Violation[], notes: string[]): Promise<number | undefined> {
  const p = await AdvProc.start(cluster, host, `adv-probe ${kind}`, clientEnv());
  try {
    const key = `ADV${kind}${process.pid}-${++probeSeq}`;
    const a = await p.call({ op: 'probe', host: cluster.serverAddr(server.name, host), port: server.port, key, timeoutMs: PROBE_MS }, PROBE_MS + 5000)
      .catch((e: Error): Answer => ({ id: 0, ok: false, err: e.message }));
    if (a['ok'] === true) return Number(a['ms']);
    const why = `a well-behaved client on ${host} was not served within ${PROBE_MS} ms after ${kind} (${String(a['err'])})`;
    const others = othersFaults(cluster, from, mine);
    if (others.length) notes.push(`${why}; not counted: other faults overlapped (${others.map((f) => f.kind).join(', ')})`);
    else out.push({ property: 'liveness', message: why });
    return undefined;
  } finally {
    await p.stop();
  }
}

/** The listener and the lock servers of `before` must still run (unless another fault overlapped). */
function serversSurvived(cluster: ChaosCluster, server: ServerHandle, before: ReturnType<typeof snapshot>, kind: string, from: bigint, mine: FaultRecord[], out: Violation[], notes: string[]): void {
  const dead: string[] = [];
  if (before.listener !== undefined && !pidAlive(before.listener)) dead.push(`listener ${before.listener}`);
  for (const d of abnormalLockServerDeaths(server, before)) dead.push(`lock server ${d.pid} (${d.line})`);
  if (!dead.length) return;
  const others = othersFaults(cluster, from, mine);
  const why = `${kind}: ${server.name}'s ${dead.join(', ')} died`;
  if (others.length) notes.push(`${why}; not counted: other faults overlapped (${others.map((f) => f.kind).join(', ')})`);
  else out.push({ property: 'liveness', message: why });
}

// ---- 1. connection flood -------------------------------------------------------

const connectionFlood: Adversary = async (cluster, rng) => {
  const faults: FaultRecord[] = [];
  const violations: Violation[] = [];
  const notes: string[] = [];
  const server = targetServer(cluster);
  if (!server) return { faults, violations };
  const { attacker, other, distinct } = pickHosts(cluster, rng);
  const ms = 1000 + Math.floor(rng() * 2000);
  const before = snapshot(server);
  const flooder = await AdvProc.start(cluster, attacker, 'adv-flood', clientEnv());
  const start = cluster.now();
  const f: FaultRecord = { kind: 'connection-flood', target: `${attacker} -> ${server.name}:${server.port}`, start: start.toString(), affects: [] };
  try {
    const flood = flooder.call({ op: 'flood', host: cluster.serverAddr(server.name, attacker), port: server.port, ms, max: 5000 }, ms + 15_000);
    // During: another host must still be served (the per-address limit keeps
    // one address from taking every connection). With one client host there
    // is no other: its own address is at its limit, refusals are right.
    await sleep(Math.min(500, ms / 2));
    const during = distinct ? probe(cluster, server, other, 'flood-during', start, faults, violations, notes) : Promise.resolve(undefined);
    const a = await flood.catch((e: Error): Answer => ({ id: 0, err: e.message }));
    f.end = cluster.now().toString();
    f.note = `${ms} ms from ${attacker}: ${JSON.stringify(a)}${distinct ? '' : ' (one client host: probes from the same host)'}`;
    await during;
    const after = await probe(cluster, server, other, 'flood-after', start, faults, violations, notes);
    if (after !== undefined) f.recoveryMs = after;
  } finally {
    await flooder.stop();
    f.end ??= cluster.now().toString();
    serversSurvived(cluster, server, before, 'connection-flood', start, faults, violations, notes);
    if (notes.length) f.note = `${f.note ?? ''}; ${notes.join('; ')}`;
    record(cluster, f, faults);
  }
  return { faults, violations };
};

// ---- 2. malformed frames -------------------------------------------------------

const malformedFrames: Adversary = async (cluster, rng) => {
  const faults: FaultRecord[] = [];
  const violations: Violation[] = [];
  const notes: string[] = [];
  const server = targetServer(cluster);
  if (!server) return { faults, violations };
  const { attacker, other } = pickHosts(cluster, rng);
  const conns = 20 + Math.floor(rng() * 40);
  const seed = Math.floor(rng() * 2 ** 31);
  const before = snapshot(server);
  const fuzzer = await AdvProc.start(cluster, attacker, 'adv-fuzz', clientEnv());
  const start = cluster.now();
  const f: FaultRecord = { kind: 'malformed-frames', target: `${attacker} -> ${server.name}:${server.port}`, start: start.toString(), affects: [] };
  try {
    const a = await fuzzer.call({ op: 'fuzz', host: cluster.serverAddr(server.name, attacker), port: server.port, conns, seed }, 60_000)
      .catch((e: Error): Answer => ({ id: 0, err: e.message }));
    f.end = cluster.now().toString();
    f.note = `${conns} connections, fuzz seed ${seed}: ${JSON.stringify(a)}`;
    const after = await probe(cluster, server, other, 'malformed-after', start, faults, violations, notes);
    if (after !== undefined) f.recoveryMs = after;
  } finally {
    await fuzzer.stop();
    f.end ??= cluster.now().toString();
    serversSurvived(cluster, server, before, 'malformed-frames', start, faults, violations, notes);
    if (notes.length) f.note = `${f.note ?? ''}; ${notes.join('; ')}`;
    record(cluster, f, faults);
  }
  return { faults, violations };
};

// ---- 3. impersonation ------------------------------------------------------------

function heldRows(table: LockTable): LockRow[] {
  const out: LockRow[] = [];
  for (const batch of table.rows()) for (const r of batch) if (r.state === 'held') out.push(r);
  return out;
}

function heldOrWaitingRows(table: LockTable): LockRow[] {
  const out: LockRow[] = [];
  for (const batch of table.rows()) out.push(...batch);
  return out;
}

const sameRow = (a: LockRow, b: LockRow): boolean =>
  a.pid === b.pid && a.ownerPid === b.ownerPid && a.ownerTid === b.ownerTid && a.conn === b.conn && a.token === b.token &&
  a.inode === b.inode && a.dev === b.dev && a.key.equals(b.key);

const showKey = (r: LockRow): string => `${r.key.toString('latin1')} (file ${r.inode}/${r.dev})`;

/** A held row of a live workload client (remote: the row's ownerPid is its pid; direct: its pid). */
function victimRow(table: LockTable, clients: ClientHandle[], remote: boolean, rng: () => number): { row: LockRow; client: ClientHandle } | undefined {
  const byPid = new Map<number, ClientHandle>();
  for (const c of clients) if (c.alive() && c.remote === remote) byPid.set(c.pid, c);
  const found: { row: LockRow; client: ClientHandle }[] = [];
  for (const r of heldRows(table)) {
    if (r.inode !== REC_FILE.inode) continue; // the workload's record locks
    // A remote client's row is its lock server's (pid), naming the client
    // (ownerPid); a direct client's row is its own process's.
    const c = remote ? (r.pid !== r.ownerPid ? byPid.get(r.ownerPid) : undefined) : (r.conn === 0 ? byPid.get(r.pid) : undefined);
    if (c) found.push({ row: r, client: c });
  }
  return found.length ? found[Math.floor(rng() * found.length)] : undefined;
}

const impersonation: Adversary = async (cluster, rng) => {
  const faults: FaultRecord[] = [];
  const violations: Violation[] = [];
  const server = targetServer(cluster, true);
  if (!server) return { faults, violations };
  const start = cluster.now();
  const f: FaultRecord = { kind: 'impersonation', target: `${server.name}`, start: start.toString(), affects: [] };
  const table = LockTable.open({ releaseDir: server.dir });
  const portLocks = table.header().portLocks;
  const tries = { remote: 0, remoteHits: 0, direct: 0, directHits: 0 };
  const affected: string[] = [];
  const notes: string[] = [];
  let impostor: AdvProc | undefined;
  let impostorHost = '';
  try {
    const deadline = Date.now() + 6000;
    // Over the network: another connection with the victim's pid, port and tid.
    while (Date.now() < deadline && tries.remoteHits < 3 && tries.remote < 40) {
      const v = victimRow(table, cluster.clients(), true, rng);
      if (!v) {
        await sleep(20);
        continue;
      }
      // Same host (same address) is the hardest case - except on a -P
      // server, where every connection from the victim's address that says
      // its port owns the port's locks by design (docs/security.md): there
      // the impostor comes from another host.
      // And on -P not from a host where a workload client holds locks as
      // that port: there the impostor would be that client's co-owner, by
      // design. (A client there that takes its first lock as that port while
      // the impostor is connected shares it too: such clients are in the
      // fault's `affects`.)
      let host = v.client.host;
      if (portLocks) {
        const byPid = new Map(cluster.clients().map((c) => [c.pid, c.host] as const));
        const busy = new Set(heldOrWaitingRows(table).filter((r) => r.port === v.row.port).map((r) => byPid.get(r.ownerPid) ?? byPid.get(r.pid)));
        const others = cluster.clientHosts.filter((h) => h !== v.client.host && !busy.has(h));
        const pick = others[Math.floor(rng() * others.length)];
        if (!pick) {
          tries.remote++;
          await sleep(20);
          continue;
        }
        host = pick;
        for (const c of cluster.clients()) if (c.host === host && !affected.includes(c.id)) affected.push(c.id);
      }
      if (!impostor || impostorHost !== host) {
        await impostor?.stop();
        impostor = await AdvProc.start(cluster, host, 'adv-impostor', clientEnv());
        impostorHost = host;
      }
      const c = await impostor.call({ op: 'imp-connect', host: cluster.serverAddr(server.name, host), port: server.port, pid: v.row.ownerPid, portNo: v.row.port }, 8000);
      if (c['ok'] !== true) {
        await sleep(50);
        tries.remote++;
        continue;
      }
      const k = { key: v.row.key.toString('base64'), tid: v.row.ownerTid, inode: String(v.row.inode), dev: String(v.row.dev) };
      const a = await impostor.call({ op: 'imp-try', ...k }, 30_000);
      tries.remote++;
      if (a['ok'] !== true) continue;
      const still = heldRows(table).some((r) => sameRow(r, v.row));
      if (still) tries.remoteHits++;
      const who = `impostor on ${host} as pid ${v.row.ownerPid} tid ${v.row.ownerTid} port ${v.row.port} against ${v.client.id}'s ${showKey(v.row)}`;
      for (const op of ['unlock', 'unlockFile', 'unlockAll'] as const) {
        const r = a[op] as { type: string; count?: number } | undefined;
        if (r?.type === 'RELEASED' && (r.count ?? 0) > 0)
          violations.push({ property: 'double-grant', message: `${who}: ${op} released ${r.count} lock(s) it never took` });
      }
      const st = a['status'] as { type: string; code?: number } | undefined;
      if (still && st?.type === 'STATUS_RESULT' && (st.code === 1 || st.code === 2))
        violations.push({ property: 'double-grant', message: `${who}: STATUS says the impostor holds it (${st.code})` });
      const lk = a['lock'] as { type: string } | undefined;
      if (lk?.type === 'GRANTED') {
        if (still) violations.push({ property: 'double-grant', message: `${who}: a write LOCK was GRANTED while the victim held the key` });
        await impostor.call({ op: 'imp-unlock', ...k }, 8000).catch(() => undefined);
      }
    }
    await impostor?.stop();
    impostor = undefined;
    // Directly in the table: an owner made with the victim's pid (another
    // thread id; a remote victim's lock server pid with another connection).
    const ddeadline = Date.now() + 3000;
    const spare = 0x0adadad0 + Math.floor(rng() * 1000); // a port no workload client announces
    while (Date.now() < ddeadline && tries.directHits < 3 && tries.direct < 40) {
      const v = victimRow(table, cluster.clients(), rng() < 0.5, rng) ?? victimRow(table, cluster.clients(), true, rng) ?? victimRow(table, cluster.clients(), false, rng);
      if (!v) {
        await sleep(20);
        continue;
      }
      tries.direct++;
      const r = v.row;
      const owner: Owner = makeOwner({
        pid: r.pid,
        ownerPid: r.ownerPid,
        // A direct victim: same process, another thread (ours). A remote one:
        // its pid and tid through another connection of its lock server.
        ownerTid: r.conn === 0 ? native.gettid() : r.ownerTid,
        port: portLocks ? spare : r.port,
        ip: r.ip,
        // (a connection number its lock server will not reach)
        conn: r.conn === 0 ? 0 : (r.conn + 0x40000000) >>> 0,
      });
      const file = fileId(r.inode, r.dev);
      const who = `direct owner with ${v.client.id}'s pid ${r.pid} (owner pid ${r.ownerPid}) against ${showKey(r)}`;
      let freed = false;
      try {
        freed = table.unlock(owner, file, r.key);
      } catch (e) {
        violations.push({ property: 'liveness', message: `${who}: unlock threw ${(e as Error).message}` });
      }
      let granted = false;
      try {
        granted = table.tryLock(owner, file, r.key, 'write').granted;
      } catch {
        /* TABLE_FULL and the like: nothing taken */
      }
      const still = heldRows(table).some((x) => sameRow(x, r));
      if (still) tries.directHits++;
      if (freed) violations.push({ property: 'double-grant', message: `${who}: unlock released the victim's lock` });
      if (granted) {
        if (still) violations.push({ property: 'double-grant', message: `${who}: a write tryLock was granted while the victim held the key` });
        table.unlock(owner, file, r.key);
      }
    }
  } catch (e) {
    // The adversary's own machinery failed (a table gone under a nemesis's
    // jdls -kA, a fixture that died): said in the note, no violation.
    notes.push(`aborted: ${(e as Error).message}`);
  } finally {
    await impostor?.stop();
    table.close();
    f.end = cluster.now().toString();
    f.affects = affected;
    f.note = `tries ${JSON.stringify(tries)} (hits: the victim still held the key after the attempt)${portLocks ? '; -P: network impostor from another host' : ''}${notes.length ? `; ${notes.join('; ')}` : ''}`;
    record(cluster, f, faults);
  }
  return { faults, violations };
};

// ---- 4. table exhaustion -----------------------------------------------------------

const tableExhaustion: Adversary = async (cluster, rng) => {
  const faults: FaultRecord[] = [];
  const violations: Violation[] = [];
  const notes: string[] = [];
  const server = targetServer(cluster, true);
  if (!server) return { faults, violations };
  const holdMs = 1000 + Math.floor(rng() * 1000);
  const start = cluster.now();
  const f: FaultRecord = { kind: 'table-exhaustion', target: `${server.name}'s table`, start: start.toString(), affects: [] };
  const filler = await AdvProc.start(cluster, server.ns, 'adv-fill', { ...server.env });
  let table: LockTable | undefined;
  try {
    const a = await filler.call({ op: 'fill', inode: String(FILL_INODE), dev: '7', max: 1_000_000, holdMs }, FILL_BOUND_MS)
      .catch((e: Error): Answer => ({ id: 0, hang: true, err: e.message }));
    f.note = JSON.stringify(a);
    if (a['hang'] === true) violations.push({ property: 'liveness', message: `table exhaustion on ${server.name}: the filling process did not finish within ${FILL_BOUND_MS} ms (${String(a['err'])})` });
    else if (typeof a['otherCode'] === 'string' && a['otherCode']) violations.push({ property: 'liveness', message: `table exhaustion on ${server.name}: refused with ${a['otherCode']}, not TABLE_FULL` });
    else if (a['ok'] === false) notes.push(`the filler failed: ${String(a['err'])}`);
  } finally {
    await filler.stop();
    f.end = cluster.now().toString();
    // Its locks are gone with it (it released them; were it killed, its dead
    // entries must not block anyone: tidy is the monitor's, checked by the
    // checker's cleanup).
    try {
      table = LockTable.open({ releaseDir: server.dir });
      const left = heldRows(table).filter((r) => r.inode === FILL_INODE && r.pid === filler.pid && pidAlive(r.pid)).length;
      if (left) violations.push({ property: 'cleanup', message: `table exhaustion: ${left} lock(s) of the (live) filler left` });
    } catch (e) {
      notes.push(`table not readable afterwards: ${(e as Error).message}`);
    } finally {
      table?.close();
    }
  }
  const { other } = pickHosts(cluster, rng);
  const after = await probe(cluster, server, other, 'exhaustion-after', start, faults, violations, notes);
  if (after !== undefined) f.recoveryMs = after;
  if (notes.length) f.note = `${f.note ?? ''}; ${notes.join('; ')}`;
  record(cluster, f, faults);
  return { faults, violations };
};

// ---- 5. pid reuse (simulated: see the head comment) ----------------------------------

const pidReuse: Adversary = async (cluster, rng) => {
  const faults: FaultRecord[] = [];
  const violations: Violation[] = [];
  const server = targetServer(cluster, true);
  if (!server) return { faults, violations };
  const start = cluster.now();
  const f: FaultRecord = { kind: 'pid-reuse', target: `${server.name}'s table`, start: start.toString(), affects: [], note: 'simulated: a live unrelated pid with a forged start time' };
  const sleeper = cluster.spawnIn(server.ns, 'adv-pid-reuse sleeper', 'sleep', ['60'], { ...process.env });
  const table = LockTable.open({ releaseDir: server.dir });
  const notes: string[] = [];
  try {
    const pid = sleeper.pid;
    if (!pid) throw new Error('the sleeper did not start');
    // `ip netns exec` execs: the pid is the sleeper's, its start time fixed
    // from the fork; wait until it runs (not a zombie of a failed exec).
    const t0 = Date.now();
    while (!pidAlive(pid) && Date.now() - t0 < 2000) await sleep(10);
    const realStart = native.pidStart(pid);
    if (!realStart) throw new Error(`no start time for the sleeper ${pid}`);
    const forgedStart = realStart > 100_000 ? realStart - 77_777 : realStart + 77_777;
    const portLocks = table.header().portLocks;
    const port = 0x0adad000 + Math.floor(rng() * 1000); // no workload client's port
    const ip = '0.0.0.0';
    const dead: Owner = { pid, ownerPid: pid, ownerTid: pid, port, ip, conn: 0, packed: native.makeOwner(pid, pid, pid, port, forgedStart, ipBytes(ip), 0) };
    const live = makeOwner({ pid, ownerPid: pid, ownerTid: pid, port, ip, conn: 0 }); // the real (pid, start)
    const file = fileId(REC_FILE.inode, REC_FILE.dev);
    const hot = [0, 1, 2].sort(() => rng() - 0.5).map((i) => `HOT${i}`);
    let key: string | undefined;
    for (const k of hot) {
      try {
        if (table.tryLock(dead, file, k, 'write').granted) { key = k; break; }
        await table.lock(dead, file, k, 'write', { timeoutMs: 2000 });
        key = k;
        break;
      } catch {
        /* busy, or the forged wait was reaped as dead meanwhile: the next key */
      }
    }
    f.target = `${server.name}: rec:${key ?? 'HOT*'} held by live pid ${pid} with a forged start (${forgedStart} vs ${realStart})`;
    if (!key) {
      notes.push('no hot key could be taken within the bound (nothing planted)');
      return { faults, violations };
    }
    const planted = cluster.now();
    const mine = (r: LockRow): boolean => r.pid === pid && r.ownerTid === pid && r.port === port && r.key.toString() === key && r.inode === REC_FILE.inode;
    // The live process with that pid must not act as the entry's owner (on
    // a -P table the owner is the port: the check does not apply).
    if (!portLocks) {
      const st = table.status(live, file, key);
      const present = heldRows(table).some(mine);
      if (present && (st.code === 1 || st.code === 2)) violations.push({ property: 'double-grant', message: `pid reuse: the live process ${pid} is told it holds rec:${key}, an entry of a dead process with its pid` });
      const freed = table.unlock(live, file, key);
      if (freed) violations.push({ property: 'double-grant', message: `pid reuse: the live process ${pid} released rec:${key}, an entry of a dead process with its pid` });
    }
    // The table must treat the entry as dead-owned: a NOWAIT request of the
    // workload reaps it at its next conflict; waiters are handed the key
    // then, or at the monitor's tidy-up. Bounded: after 5 s we tidy (the
    // monitor's own call) and it must go then.
    let how = '';
    const deadline = Date.now() + 5000;
    while (Date.now() < deadline) {
      if (!heldRows(table).some(mine)) { how = 'reaped by a request'; break; }
      await sleep(50);
    }
    if (!how) {
      const n = table.tidy();
      how = `tidy-up (freed ${n})`;
      if (heldRows(table).some(mine)) violations.push({ property: 'cleanup', message: `pid reuse: rec:${key} held by pid ${pid} with a start time not its own survived a tidy-up` });
    }
    f.recoveryMs = Number((cluster.now() - planted) / 1_000_000n);
    notes.push(`gone: ${how}`);
    // And whoever queued behind it is handed the key: a waiter left queued
    // on a key nobody holds is stranded (a wait is re-examined only when a
    // blocker goes). Hand-offs are atomic under the group's mutex, so
    // "waiting, none held" seen for 3 s is no passing state.
    const onKey = (): { waiting: number; held: number } => {
      let waiting = 0;
      let held = 0;
      for (const r of heldOrWaitingRows(table)) {
        if (r.inode !== REC_FILE.inode || r.dev !== REC_FILE.dev || r.key.toString() !== key) continue;
        if (r.state === 'waiting') waiting++;
        else if (r.state === 'held') held++;
      }
      return { waiting, held };
    };
    const wdeadline = Date.now() + 3000;
    let k = onKey();
    while (k.waiting > 0 && k.held === 0 && Date.now() < wdeadline) {
      await sleep(50);
      k = onKey();
    }
    if (k.waiting > 0 && k.held === 0) violations.push({ property: 'liveness', message: `pid reuse: ${k.waiting} waiter(s) for rec:${key} stranded after the dead-owned entry went (${how})` });
  } catch (e) {
    notes.push(`aborted: ${(e as Error).message}`);
  } finally {
    table.close();
    if (sleeper.pid) {
      try { process.kill(sleeper.pid, 'SIGKILL'); } catch { /* gone */ }
    }
    f.end = cluster.now().toString();
    f.note = `${f.note}; ${notes.join('; ')}`;
    record(cluster, f, faults);
  }
  return { faults, violations };
};

const TABLE_CONFIGS: ConfigName[] = ['table', 'port', 'pair'];
const ALL_CONFIGS: ConfigName[] = ['table', 'port', 'oslock', 'pair'];

/** Longest any adversary may take (each is far shorter; its own timers bound every step). */
export const ADVERSARY_BOUND_MS = 120_000;

/**
 * Bounded, and never throws: an attack stuck past the bound is a liveness
 * finding (every step has its own timeout, so only the service can hold it
 * up); an error of the adversary's own machinery (a fixture that did not
 * start, a table removed under it by the nemesis) is recorded as an aborted
 * fault, not a violation.
 */
function guarded(kind: string, a: Adversary): Adversary {
  return async (cluster, rng) => {
    const start = cluster.now();
    try {
      return await withTimeout(a(cluster, rng), ADVERSARY_BOUND_MS, `adversary ${kind}`);
    } catch (e) {
      const msg = (e as Error).message;
      const f: FaultRecord = { kind, target: 'aborted', start: start.toString(), end: cluster.now().toString(), affects: [], note: `aborted: ${msg}` };
      cluster.recordFault(f);
      const hung = /no answer within/.test(msg) && msg.startsWith(`adversary ${kind}`);
      return { faults: [f], violations: hung ? [{ property: 'liveness', message: `adversary ${kind} did not finish within ${ADVERSARY_BOUND_MS} ms` }] : [] };
    }
  };
}

/** Every adversary, with the configurations it applies to. */
export const ADVERSARIES: Record<string, { configs: ConfigName[]; run: Adversary }> = {
  'connection-flood': { configs: ALL_CONFIGS, run: guarded('connection-flood', connectionFlood) },
  'malformed-frames': { configs: ALL_CONFIGS, run: guarded('malformed-frames', malformedFrames) },
  // Reads the victim's locks from the table; the OS mechanism (-ibD) keeps
  // the same per-connection owners, tested by test/server-owner.test.ts.
  impersonation: { configs: TABLE_CONFIGS, run: guarded('impersonation', impersonation) },
  'table-exhaustion': { configs: TABLE_CONFIGS, run: guarded('table-exhaustion', tableExhaustion) },
  'pid-reuse': { configs: TABLE_CONFIGS, run: guarded('pid-reuse', pidReuse) },
};
