// nemesis.ts - the faults of the service's own processes, the clients and
// the network (the adversaries - floods, malformed frames, impersonation,
// table exhaustion, pid reuse - are in adversary.ts): kill -9 and restart,
// SIGSTOP/SIGCONT past the keep-alive bound, `jdls -kA`/`-ibA` and
// `-kD`/`-ibD` mid-run, cutting and healing links, failover of a pair.
//
// Each fault is bounded in time, heals what it broke, and records itself
// (faults.jsonl) with `affects`: whose locks it may legitimately take away.
// A fault that cannot take anybody's lock (stopping the monitor, stopping
// the listener while its lock servers serve on, a pair's failover) affects
// nobody, so the checker holds the service to full exclusion through it.
//
// Unfenced clients. A client whose path gives no fencing token (the shim's
// fcntl route, sqlite3, OS-lock servers) cannot be protected by the store
// if its lock is taken away while it still runs: a late write would be
// accepted, and no lock service can prevent that - that is what fencing is
// for. So before a fault that may take away remote locks, the nemesis kills
// the unfenced remote clients it would hit (recorded as kill-client: the
// guide's clients exit when their server fails), and pauses and cuts only
// ever hit fenced clients.
//
// The witnessed pair (wpair, issue 15) has faults of its own - kill -9 of
// the leader or follower service, a client host cut off from the leader,
// the leader cut off from the witness, the witness paused past its lease -
// all on by default there, since with a witness they must be safe; see
// killWitnessed, cutLeaderLink and the faults cut-witness-link and
// pause-witness for what each may take away (`affects`) and why.
import type { ClientHandle } from './cluster-types.js';
import type { Cluster } from './cluster.js';
import { EXIT_SPLIT_REFUSED, running, sleep, stopped } from './cluster.js';

export type Rng = () => number;

export interface Fault {
  name: string;
  /** 0: not applicable to this cluster now */
  weight(c: Cluster): number;
  run(c: Cluster, rng: Rng): Promise<void>;
}

const pick = <T>(rng: Rng, xs: readonly T[]): T | undefined => xs[Math.floor(rng() * xs.length)];
const between = (rng: Rng, lo: number, hi: number): number => Math.round(lo + rng() * (hi - lo));
const ns = (c: Cluster): string => c.now().toString();

function kill(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    /* gone */
  }
}

async function killClient(c: Cluster, cl: ClientHandle, why: string): Promise<void> {
  c.recordFault({ kind: 'kill-client', target: `client ${cl.id} (pid ${cl.pid})`, start: ns(c), affects: [cl.id], note: why });
  kill(cl.pid, 'SIGKILL');
  for (let i = 0; i < 100 && running(cl.pid); i++) await sleep(20);
}

/** Kill the unfenced remote clients a fault on these servers (and hosts) would hit. */
async function clearUnfenced(c: Cluster, servers: ('primary' | 'secondary')[], host?: string): Promise<void> {
  for (const cl of c.clients()) {
    if (!cl.remote || cl.fenced) continue;
    if (host !== undefined && cl.host !== host) continue;
    if (!cl.servers.some((s) => servers.includes(s))) continue;
    await killClient(c, cl, 'unfenced, before a fault that may take its locks');
  }
}

/** ids of the clients whose locks a fault of these servers may take (pair: failover keeps them). */
function remoteOf(c: Cluster): string[] | 'remote' {
  return pairWhole(c) ? [] : 'remote';
}

/** A pair with both servers up: a client that loses one keeps its locks on the other. */
function pairWhole(c: Cluster): boolean {
  return c.config === 'pair' && c.servers.every((s) => s.up);
}

const keepalive = (c: Cluster): number => c.opts.keepaliveMs;
/** Either pair (with or without a witness). */
const isPair = (c: Cluster): boolean => c.config === 'pair' || c.config === 'wpair';
/** The clients' TIMEOUT (ms): how long a witnessed client waits for a silent primary, and again for PROMOTE's verdict. */
const timeoutMs = (c: Cluster): number => c.opts.clientTimeoutS * 1000;
const other = (s: 'primary' | 'secondary'): 'primary' | 'secondary' => (s === 'primary' ? 'secondary' : 'primary');

/**
 * wpair: the server that leads now (per etcd) and the other; undefined
 * when nobody leads or a server is down (a failover not yet over: the
 * witnessed faults wait for a whole pair).
 */
async function roles(c: Cluster): Promise<{ leader: 'primary' | 'secondary'; follower: 'primary' | 'secondary' } | undefined> {
  if (!c.servers.every((s) => s.up)) return undefined;
  const leader = await c.leader();
  return leader ? { leader, follower: other(leader) } : undefined;
}

/** wpair: the witnessed pair is whole (both servers up): its faults apply. */
const wpairWhole = (c: Cluster): boolean => c.config === 'wpair' && c.servers.every((s) => s.up) && c.witnessPid !== undefined;

/**
 * A pair without a witness (issue 15) stays whole only while every client
 * has the same primary. A fault that makes SOME clients lose the primary
 * while the others keep it (a cut link, one lock server killed) leaves
 * clients on two primaries: exclusion still holds while the secondary
 * mirrors everybody, but fencing tokens go down (the secondary's epoch
 * outranks the primary's, and the guide's recovery brings clients back to
 * the primary) - the known limit of SERVER2 without a witness, shown by
 * the opt-in fault `cut-primary-link` and documented in docs/reliability.md.
 * So in a pair, partial faults hit the secondary side, or the primary once
 * the secondary is gone (every client then has the primary alone).
 */
function partialOk(c: Cluster, server: 'primary' | 'secondary'): boolean {
  if (c.config !== 'pair' || server === 'secondary') return true;
  return c.servers.some((s) => s.name === 'secondary' && !s.up);
}

export const FAULTS: Fault[] = [
  {
    name: 'kill-client',
    weight: (c) => (c.clients().length > 0 ? 4 : 0),
    async run(c, rng) {
      const cl = pick(rng, c.clients());
      if (cl) await killClient(c, cl, 'kill -9');
    },
  },
  {
    name: 'pause-client',
    weight: (c) => (c.clients().some((x) => x.fenced && x.remote) ? 2 : 0),
    async run(c, rng) {
      const cl = pick(rng, c.clients().filter((x) => x.fenced && x.remote));
      if (!cl) return;
      const ms = between(rng, keepalive(c) * 1.5, keepalive(c) * 3);
      c.paused.add(cl.pid);
      const start = ns(c);
      kill(cl.pid, 'SIGSTOP');
      await sleep(ms);
      kill(cl.pid, 'SIGCONT');
      c.paused.delete(cl.pid);
      c.recordFault({ kind: 'pause-client', target: `client ${cl.id} (pid ${cl.pid}) for ${ms} ms`, start, end: ns(c), affects: [cl.id] });
    },
  },
  {
    name: 'pause-holder',
    weight: (c) => (c.clients().some((x) => x.fenced && x.pauseNextHold) ? 3 : 0),
    async run(c, rng) {
      // The holder stops itself between its read and its write, so the
      // pause falls inside a hold for sure: its write after SIGCONT must be
      // refused by the store once another holder has read.
      const cl = pick(rng, c.clients().filter((x) => x.fenced && x.pauseNextHold));
      if (!cl?.pauseNextHold) return;
      c.paused.add(cl.pid);
      cl.pauseNextHold();
      let start: string | undefined;
      for (let i = 0; i < 250 && running(cl.pid); i++) {
        if (stopped(cl.pid)) {
          start = ns(c);
          break;
        }
        await sleep(20);
      }
      if (start === undefined) {
        // It did not reach a hold in time: it may still stop itself later;
        // the cluster's stray watcher then records and resumes it.
        c.paused.delete(cl.pid);
        return;
      }
      const ms = cl.remote ? between(rng, keepalive(c) * 2, keepalive(c) * 3) : between(rng, 200, 800);
      await sleep(ms);
      kill(cl.pid, 'SIGCONT');
      c.paused.delete(cl.pid);
      c.recordFault({ kind: 'pause-holder', target: `client ${cl.id} (pid ${cl.pid}) paused inside a hold for ${ms} ms`, start, end: ns(c), affects: [cl.id] });
    },
  },
  {
    name: 'cut-link',
    weight: (c) => (c.clientHosts.length > 0 && (c.config !== 'wpair' || wpairWhole(c)) ? 2 : 0),
    async run(c, rng) {
      const host = pick(rng, c.clientHosts);
      if (!host) return;
      if (c.config === 'wpair') {
        // A witnessed pair: the follower's side (the leader's side is
        // cut-primary-link). A client that loses its secondary goes on with
        // its primary alone: its locks stay, so this affects nobody.
        const r = await roles(c);
        if (!r) return;
        const hit = c.clients().filter((x) => x.host === host && x.remote);
        const ms = between(rng, keepalive(c) * 1.5, keepalive(c) * 3);
        const start = ns(c);
        c.setLink(host, r.follower, false);
        await sleep(ms);
        c.setLink(host, r.follower, true);
        c.recordFault({ kind: 'cut-link', target: `link ${host.split('-').pop()}<->${r.follower} (the follower) for ${ms} ms (${hit.length} clients)`, start, end: ns(c), affects: [] });
        return;
      }
      const server: 'primary' | 'secondary' = c.config === 'pair' && partialOk(c, 'secondary') && !partialOk(c, 'primary') ? 'secondary' : c.config === 'pair' && rng() < 0.5 ? 'secondary' : 'primary';
      if (!partialOk(c, server) || !c.servers.some((s) => s.name === server && s.up)) return;
      const release = c.holdUnfenced(host);
      try {
        await clearUnfenced(c, [server], host);
        const hit = c.clients().filter((x) => x.host === host && x.remote && x.servers.includes(server));
        const ms = between(rng, keepalive(c) * 1.5, keepalive(c) * 3);
        const start = ns(c);
        c.setLink(host, server, false);
        await sleep(ms);
        c.setLink(host, server, true);
        const where = `${host.split('-').pop()}<->${server}`;
        // A pair's client that lost one server goes on with the other: its
        // locks there stay, so exclusion must hold (affects nobody). A client
        // of a single server (or of a pair that lost the other) is dropped
        // after the keep-alive bound.
        c.recordFault({ kind: 'cut-link', target: `link ${where} for ${ms} ms (${hit.length} clients)`, start, end: ns(c), affects: pairWhole(c) ? [] : hit.map((x) => x.id) });
        if (c.config === 'pair') {
          // The guide's recovery: a client that lost a server exits and
          // reconnects, so that no client is left on one server alone while
          // others use the other (issue 15 covers doing better).
          for (const cl of hit) if (running(cl.pid)) await killClient(c, cl, 'pair: reconnect after losing a server (the guide\'s recovery)');
        }
      } finally {
        release();
      }
    },
  },
  {
    name: 'kill-lockserver',
    // Not in wpair: a killed lock-server process of the leader frees its
    // clients' locks while they wait for PROMOTE's verdict (a known,
    // fencing-only case, like cut-primary-link below but without a bound on
    // which clients it hits) - left out rather than excused wholesale.
    weight: (c) => (c.config !== 'wpair' && c.servers.some((s) => s.up && partialOk(c, s.name) && s.lockServerPids().length > 0) ? 2 : 0),
    async run(c, rng) {
      const s = pick(rng, c.servers.filter((x) => x.up && partialOk(c, x.name) && x.lockServerPids().length > 0));
      const pid = s && pick(rng, s.lockServerPids());
      if (!s || !pid) return;
      const release = c.holdUnfenced();
      await clearUnfenced(c, [s.name]);
      const start = ns(c);
      kill(pid, 'SIGKILL');
      for (let i = 0; i < 100 && running(pid); i++) await sleep(20);
      release();
      c.recordFault({ kind: 'kill-lockserver', target: `lock server ${pid} of ${s.name}`, start, affects: remoteOf(c) });
      if (c.config === 'pair') for (const cl of c.clients()) if (cl.remote) await killClient(c, cl, 'pair: reconnect after losing a server (the guide\'s recovery)');
    },
  },
  {
    name: 'pause-lockserver',
    weight: (c) => (!isPair(c) && c.servers.some((s) => s.up && s.lockServerPids().length > 0) ? 1 : 0),
    async run(c, rng) {
      const s = pick(rng, c.servers.filter((x) => x.up && x.lockServerPids().length > 0));
      const pid = s && pick(rng, s.lockServerPids());
      if (!s || !pid) return;
      const release = c.holdUnfenced();
      await clearUnfenced(c, [s.name]);
      const ms = between(rng, 500, c.opts.clientTimeoutS * 1500);
      const start = ns(c);
      kill(pid, 'SIGSTOP');
      await sleep(ms);
      kill(pid, 'SIGCONT');
      release();
      c.recordFault({ kind: 'pause-lockserver', target: `lock server ${pid} of ${s.name} for ${ms} ms`, start, end: ns(c), affects: 'remote' });
    },
  },
  {
    name: 'kill-listener',
    weight: (c) => (!isPair(c) && c.servers.some((s) => s.up && s.listenerPid()) ? 1 : 0),
    async run(c, rng) {
      const s = pick(rng, c.servers.filter((x) => x.up && x.listenerPid()));
      const pid = s?.listenerPid();
      if (!s || !pid) return;
      const release = c.holdUnfenced();
      await clearUnfenced(c, [s.name]);
      const start = ns(c);
      kill(pid, 'SIGKILL');
      for (let i = 0; i < 100 && running(pid); i++) await sleep(20);
      const r = await s.jdls(['-ibD']);
      release();
      c.recordFault({ kind: 'kill-listener', target: `listener ${pid} of ${s.name}, restarted (jdls -ibD: ${r.code})`, start, end: ns(c), affects: 'remote', note: r.code === 0 ? undefined : `${r.stdout}${r.stderr}`.trim().slice(0, 300) });
    },
  },
  {
    name: 'stop-listener',
    weight: (c) => (!isPair(c) && c.servers.some((s) => s.up && s.hasTable && s.listenerPid()) ? 1 : 0),
    async run(c, rng) {
      // jdls -kD: the listener stops accepting; connected clients stay with
      // their lock servers, so nobody loses a lock.
      const s = pick(rng, c.servers.filter((x) => x.up && x.hasTable && x.listenerPid()));
      if (!s) return;
      const start = ns(c);
      const k = await s.jdls(['-kD']);
      await sleep(between(rng, 200, 1500));
      const b = await s.jdls(['-ibD']);
      c.recordFault({ kind: 'stop-listener', target: `jdls -kD (${k.code}) / -ibD (${b.code}) on ${s.name}`, start, end: ns(c), affects: [], note: b.code === 0 ? undefined : `${b.stdout}${b.stderr}`.trim().slice(0, 300) });
    },
  },
  {
    name: 'kill-monitor',
    weight: (c) => (c.servers.some((s) => s.up && s.monitorPid()) ? 1 : 0),
    async run(c, rng) {
      // The table stays in service without its monitor (only tidy-ups
      // stop): no lock may be lost or doubled.
      const s = pick(rng, c.servers.filter((x) => x.up && x.monitorPid()));
      const pid = s?.monitorPid();
      if (!s || !pid) return;
      const start = ns(c);
      kill(pid, 'SIGKILL');
      for (let i = 0; i < 100 && running(pid); i++) await sleep(20);
      await sleep(between(rng, 100, 1000));
      const r = await s.jdls(['-ibA', '-t0.05']);
      c.recordFault({ kind: 'kill-monitor', target: `monitor ${pid} of ${s.name}, restarted (jdls -ibA: ${r.code})`, start, end: ns(c), affects: [], note: r.code === 0 ? undefined : `${r.stdout}${r.stderr}`.trim().slice(0, 300) });
    },
  },
  {
    name: 'stop-monitor',
    weight: (c) => (c.servers.some((s) => s.up && s.monitorPid()) ? 1 : 0),
    async run(c, rng) {
      const s = pick(rng, c.servers.filter((x) => x.up && x.monitorPid()));
      if (!s) return;
      const start = ns(c);
      const k = await s.jdls(['-kA']);
      await sleep(between(rng, 200, 1500));
      const b = await s.jdls(['-ibA', '-t0.05']);
      c.recordFault({ kind: 'stop-monitor', target: `jdls -kA (${k.code}) / -ibA (${b.code}) on ${s.name}`, start, end: ns(c), affects: [], note: b.code === 0 ? undefined : `${b.stdout}${b.stderr}`.trim().slice(0, 300) });
    },
  },
  {
    name: 'kill-server',
    // A pair loses one server for good (the guide's clients never go back
    // to a failed server): at most one per round.
    weight: (c) => (c.config === 'pair' && c.servers.every((s) => s.up) ? 1 : wpairWhole(c) ? 2 : 0),
    async run(c, rng) {
      if (c.config === 'wpair') return killWitnessed(c, rng);
      const s = rng() < 0.6 ? c.server('primary') : c.server('secondary');
      const start = ns(c);
      s.up = false;
      const { processesOf } = await import('./cluster.js');
      for (const pid of processesOf(s.dir)) kill(pid, 'SIGKILL');
      c.recordFault({ kind: `kill-${s.name}`, target: `every process of the ${s.name} service (kill -9)`, start, affects: [] });
    },
  },
  {
    // Opt-in only (--faults cut-primary-link): the partial failure a pair
    // without a witness cannot survive whole (see partialOk). One client
    // host loses the primary while the others keep it.
    name: 'cut-primary-link',
    // With a witness it must be safe: on by default in wpair.
    weight: (c) => (wpairWhole(c) ? 2 : 0),
    async run(c, rng) {
      if (c.config === 'wpair') return cutLeaderLink(c, rng);
      if (c.config !== 'pair') return;
      const host = pick(rng, c.clientHosts);
      if (!host) return;
      const hit = c.clients().filter((x) => x.host === host && x.remote);
      const ms = between(rng, keepalive(c) * 1.5, keepalive(c) * 3);
      const start = ns(c);
      c.setLink(host, 'primary', false);
      await sleep(ms);
      c.setLink(host, 'primary', true);
      c.recordFault({ kind: 'cut-primary-link', target: `link ${host.split('-').pop()}<->primary for ${ms} ms (${hit.length} clients)`, start, end: ns(c), affects: [] });
      for (const cl of hit) if (running(cl.pid)) await killClient(c, cl, 'pair: reconnect after losing a server (the guide\'s recovery)');
    },
  },
  {
    // wpair: the leader cut off from the witness. It stops granting at its
    // lease's deadline and closes every connection (NOT_LEADER); the
    // clients PROMOTE the follower, which takes the key once etcd dropped
    // the leader's lease - their mirrored locks there go on, so this
    // affects nobody. The cut lasts past lease + TIMEOUT, so the leader
    // cannot come back before every client had its verdict.
    name: 'cut-witness-link',
    weight: (c) => (wpairWhole(c) ? 2 : 0),
    async run(c, rng) {
      const r = await roles(c);
      if (!r) return;
      const ms = between(rng, c.witnessLeaseMs + timeoutMs(c) + 2000, c.witnessLeaseMs + timeoutMs(c) + 4000);
      const start = ns(c);
      c.setWitnessLink(r.leader, false);
      await sleep(ms);
      c.setWitnessLink(r.leader, true);
      const now = await c.leader();
      c.recordFault({ kind: 'cut-witness-link', target: `link ${r.leader} (the leader)<->witness for ${ms} ms; leader after: ${now ?? 'none'}`, start, end: ns(c), affects: [] });
    },
  },
  {
    // wpair: the witness paused (SIGSTOP) past the lease, then SIGCONT. The
    // leader cannot renew: it stops at its deadline and closes every
    // connection (its locks freed there). Its clients ask the follower to
    // PROMOTE, which cannot reach etcd either: when etcd resumes, either
    // server may take the key - if the old leader does, it grants again
    // while a client of before the pause still waits for the follower's
    // verdict, holding in its own mind a lock the new term gave away (it
    // then exits SPLIT_REFUSED). Only fencing protects such a holder's late
    // write, so the pause affects every client that was running when it
    // began (not those started during it: they connect to a leader).
    name: 'pause-witness',
    weight: (c) => (wpairWhole(c) ? 1 : 0),
    async run(c, rng) {
      const pid = c.witnessPid;
      if (!pid || !(await roles(c))) return;
      const ms = between(rng, c.witnessLeaseMs * 1.5, c.witnessLeaseMs * 3);
      const hit = c.clients().filter((x) => x.remote).map((x) => x.id);
      const start = ns(c);
      kill(pid, 'SIGSTOP');
      await sleep(ms);
      kill(pid, 'SIGCONT');
      const end = ns(c);
      // Let the pair settle (a leader again) before the next fault.
      let now: string | undefined;
      for (let i = 0; i < 40 && !(now = await c.leader()); i++) await sleep(250);
      c.recordFault({ kind: 'pause-witness', target: `etcd (pid ${pid}) stopped for ${ms} ms; leader after: ${now ?? 'none'}`, start, end, affects: hit });
    },
  },
];

/**
 * wpair, kill-server: kill -9 of every process of the leader (60 %) or the
 * follower service. Nobody loses a lock: a leader's clients PROMOTE the
 * follower (their mirrors there go on), a follower's clients go on with the
 * leader alone. The killed server is started again once the failover is
 * over (lease + TIMEOUT + 1 s): it comes back as a follower, and new client
 * incarnations use both again (the running ones never go back to it).
 */
async function killWitnessed(c: Cluster, rng: Rng): Promise<void> {
  const r = await roles(c);
  if (!r) return;
  const name = rng() < 0.6 ? r.leader : r.follower;
  const s = c.server(name);
  const role = name === r.leader ? 'leader' : 'follower';
  const start = ns(c);
  s.up = false;
  for (const pid of c.serverPids(s)) kill(pid, 'SIGKILL');
  for (let i = 0; i < 100 && c.serverPids(s).some(running); i++) await sleep(20);
  await sleep(c.witnessLeaseMs + timeoutMs(c) + 1000);
  const leaderBetween = await c.leader();
  const b = await c.restartServer(s);
  c.recordFault({
    kind: `kill-${role}`,
    target: `every process of ${name} (the ${role}) kill -9; leader then: ${leaderBetween ?? 'none'}; restarted (jdls ${s.startArgs.join(' ')}: ${b.code})`,
    start, end: ns(c), affects: [],
    note: b.code === 0 ? undefined : `${b.stdout}${b.stderr}`.trim().slice(0, 300),
  });
}

/**
 * wpair, cut-primary-link: one client host loses the leader while the
 * others keep it. The hit clients must not split: each waits TIMEOUT for
 * its silent primary, asks the follower to PROMOTE (refused: the leader
 * still holds the key) and exits SPLIT_REFUSED (the cluster records and
 * restarts it). Meanwhile the leader drops them after its keep-alive bound
 * and their locks there are free for the others: the hit clients' holds are
 * taken away (affects them; fencing refuses a late write), nobody else's.
 * The cut lasts past 2 x TIMEOUT + 2 s so that they do reach their verdict.
 *
 * Recorded WITHOUT an end on purpose: what may be taken away is only what
 * the hit clients held (or had asked for) when the link went down. A hold
 * they ask for during the cut must never be granted while the leader holds
 * the key - if one were (a client that split: promoted the follower on its
 * own), it stays trusted and the checker sees the double grant.
 */
async function cutLeaderLink(c: Cluster, rng: Rng): Promise<void> {
  const r = await roles(c);
  // A host whose clients have had time to connect (a cut before that hits
  // nobody: the new clients just fail to connect and are restarted).
  const hosts = c.clientHosts.filter((h) => c.clients().some((x) => x.host === h && x.remote && (x.startedAt ?? 0) < Date.now() - 3000));
  const host = pick(rng, hosts);
  if (!r || !host) return;
  const hit = c.clients().filter((x) => x.host === host && x.remote);
  const ms = between(rng, 2 * timeoutMs(c) + 3000, 2 * timeoutMs(c) + 5000);
  c.setLink(host, r.leader, false);
  // Stamped once `ip link set down` returned, not before: with no end, a
  // grant after the stamp is trusted, and under load the ip command takes
  // 100 ms and more - a request that got through meanwhile was then judged
  // granted during the cut (79 false double grants in one run).
  const start = ns(c);
  await sleep(ms);
  c.setLink(host, r.leader, true);
  // How the hit clients ended: SPLIT_REFUSED is the expected verdict; 3 is a
  // client that had not connected yet when the link went down; one still
  // running never noticed its primary's silence (said so, for people).
  const ends = hit.map((x) => (x.alive() ? 'running' : c.exitCodes.get(x.id) === EXIT_SPLIT_REFUSED ? 'SPLIT_REFUSED' : `exit ${c.exitCodes.get(x.id) ?? 'by signal'}`));
  const tally = [...new Set(ends)].map((e) => `${ends.filter((x) => x === e).length} ${e}`).join(', ');
  c.recordFault({
    kind: 'cut-primary-link',
    target: `link ${host.split('-').pop()}<->${r.leader} (the leader) for ${ms} ms (${hit.length} clients${tally ? `: ${tally}` : ''})`,
    start, affects: hit.map((x) => x.id),
  });
}

/** Pick the next fault (weighted, among those that apply now). */
export function nextFault(c: Cluster, rng: Rng, only?: Set<string>): Fault | undefined {
  // A fault of weight 0 everywhere (opt-in) runs only when named in --faults.
  const able = FAULTS.map((f) => ({ f, w: only && !only.has(f.name) ? 0 : f.weight(c) || (only?.has(f.name) && f.name === 'cut-primary-link' && c.config === 'pair' ? 1 : 0) })).filter((x) => x.w > 0);
  const total = able.reduce((s, x) => s + x.w, 0);
  let r = rng() * total;
  for (const x of able) {
    r -= x.w;
    if (r <= 0) return x.f;
  }
  return able[able.length - 1]?.f;
}
