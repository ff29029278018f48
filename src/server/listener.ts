// listener.ts - the distributed lock listener: accepts TCP connections and
// hands each to a lock-server process.
//
// Owns: the listening socket (port, bind address), the pool of lock-server
// processes it started (at most clientsPerProcess clients each, a spare kept
// ready, idle ones retired), the listener-wide connection limit, and
// publishing itself (state.ts). Does not own: any lock or any protocol
// conversation (the listener never reads a byte from a client: the server is
// pauseOnConnect and the socket goes to the lock-server process untouched;
// only a refusal for maxConnections is written here).
//
// Life of a listener:
//   start   choose the mechanism (shm if the monitor runs, else OS file
//           locks) and check it opens here; listen; publish pid/port/addr;
//           start the spare lock-server process(es).
//   accept  pick a process with room (or fork one); send it the socket.
//   stop    SIGTERM/SIGINT: stop listening, withdraw the pid file/header,
//           disconnect from the lock-server processes - they keep serving
//           their clients and exit when the last one leaves - and exit 0.
import { FAULT_ENV, serverFaults } from './fault-injection.js';
import net from 'node:net';
import { sendConnection } from './passing.js';
import { fork, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { encode } from '../protocol/codec.js';
import type { Logger } from '../log.js';
import type { MechanismKind } from '../locks/mechanism.js';
import { chooseMechanism, probeMechanism } from './mechanism.js';
import { CONFIG_ENV, configToEnv, type ServerConfig } from './config.js';
import { claimListener, publishListener, withdrawListener, writeHeader, type ListenerInfo } from './state.js';
import { native } from '../native.js';
import type { FromLockServer, ToLockServer } from './lockserver.js';
import { LOCK_SERVER_CHILD_FLAG } from '../cli/args.js';
import { Tally, connectionsPerAddress } from './quota.js';
import { RateLog } from './ratelog.js';
import { AllowList, admitConnection } from './auth.js';
import { beginOsEpoch, beginTermEpoch, localEpoch } from './token-epoch.js';
import { Witness, type WitnessState } from './witness.js';
import type { LeadershipWord } from './leadership.js';
import { removeWitnessRecord, writeWitnessRecord } from './witness-state.js';
import { PROMOTE_CAP_MS } from './pair-rules.js';
import { startAdminServer, type AdminServer, type AdminWorker } from './admin.js';
import type { AdminWorkerReply, AdminWorkerRequest } from './admin-types.js';


/**
 * V8 flags of a lock-server process. A young generation of 16 MiB from the
 * start (V8 starts it at 1 MiB and grows it slowly): a lock server
 * allocates ~2 KB per request, so a small one is scavenged every few
 * hundred requests, and each scavenge (~0.5 ms) holds up the requests and
 * hand-offs in flight - the tail of the hand-off latency (docs/benchmarks.md).
 * Costs ~30 MiB of RSS per lock-server process once used.
 */
export const LOCK_SERVER_NODE_FLAGS: readonly string[] = ['--min-semi-space-size=16', '--max-semi-space-size=16'];

export const LISTENER_TITLE = 'jdls -ib (listener)';

/** How often the listener looks for idle processes and re-checks the header. */
const HOUSEKEEPING_MS = 1_000;
/** Housekeeping ticks between checks that the table header names this listener. */
const HEADER_EVERY = 5;
/**
 * A connection handed to a lock-server process that does not say it arrived
 * in this time is counted as gone. Why: a process out of descriptors
 * (EMFILE) cannot receive it - Node drops it, the client sees a reset, and
 * nobody would ever give the listener its place back.
 */
const HANDOFF_ACK_MS = 5_000;
/** A lock-server process that is not ready in this time is killed. */
const READY_MS = 15_000;

interface Worker {
  child: ChildProcess;
  pid: number;
  ready: boolean;
  /** connections handed to it (sent or queued) and not yet reported closed */
  clients: number;
  /** connections handed to it per client address (as remoteAddress says) */
  addrs: Tally;
  /** hand-offs not yet acknowledged ('adopted'): id -> address and timer */
  unacked: Map<number, { addr: string; timer: NodeJS.Timeout }>;
  /** hand-offs given up on (no 'adopted' in time): id -> address, in case they arrive after all */
  lost: Map<number, string>;
  /** sockets waiting for it to be ready */
  queue: net.Socket[];
  idleSince: number;
  startedMs: number;
  /** admin requests asked of it (admin.ts), id -> settle */
  asks: Map<number, { resolve: (r: AdminWorkerReply) => void; reject: (e: Error) => void; timer: NodeJS.Timeout }>;
}

export interface ListenerOptions {
  releaseDir: string;
  cfg: ServerConfig;
  log: Logger;
  /** default: chooseMechanism(releaseDir) */
  mechanism?: MechanismKind;
}

const isFromLockServer = (m: unknown): m is FromLockServer =>
  typeof m === 'object' && m !== null && ['ready', 'closed', 'adopted', 'admin', 'promote'].includes(String((m as { type?: unknown }).type));

/** Run the listener until a signal; resolves with the exit code. */
export async function runListener(opts: ListenerOptions): Promise<number> {
  const { releaseDir: dir, cfg, log } = opts;
  process.title = LISTENER_TITLE;
  const kind = opts.mechanism ?? chooseMechanism(dir);
  try {
    probeMechanism(kind, dir, cfg.lockDir);
  } catch (e) {
    log.error({ mechanism: kind }, `lock listener cannot start: ${(e as Error).message}`);
    return 1;
  }

  try {
    const other = claimListener(dir);
    if (other) {
      log.error({ other: other.pid }, `lock listener already running at pid ${other.pid} (${other.addr} port ${other.port})`);
      return 1;
    }
  } catch (e) {
    log.error({ err: e }, `lock listener cannot record itself in ${dir}: ${(e as Error).message}`);
    return 1;
  }
  const unclaim = (): void => withdrawListener(dir, { pid: process.pid, start: native.pidStart(process.pid), port: 0, addr: '', mechanism: kind, startedMs: 0 });
  // Fencing tokens of OS file locks start a new epoch with every listener
  // (the counter's value is not durable, the epoch record is: token-epoch.ts).
  try {
    const epoch = beginOsEpoch(dir);
    log.info({ epoch: Number(epoch) }, `fencing tokens of OS file locks start at epoch ${epoch}`);
  } catch (e) {
    log.error({ err: e }, `OS file-lock fencing tokens may not outrank those before this start: ${(e as Error).message}`);
  }

  const workers = new Set<Worker>();
  // The operator's controls (admin.ts): every lock-server process of this
  // listener is asked over its IPC channel, with a bounded wait. Made
  // before the port is listened on: once `jdls -ib` returns the socket is
  // there, and no await comes between listening and taking connections.
  let asks = 0;
  const askWorker = (w: Worker, req: AdminWorkerRequest, ms: number): Promise<AdminWorkerReply> =>
    new Promise<AdminWorkerReply>((resolve, reject) => {
      if (!w.ready || !w.child.connected) return reject(new Error(w.ready ? 'its IPC channel is closed' : 'not ready yet'));
      const id = (asks = (asks % 0x7fffffff) + 1);
      const timer = setTimeout(() => {
        w.asks.delete(id);
        reject(new Error(`did not answer within ${ms} ms`));
      }, ms);
      w.asks.set(id, { resolve, reject, timer });
      const msg: ToLockServer = { type: 'admin', id, req };
      try {
        w.child.send(msg, undefined, {}, (err) => {
          if (!err) return;
          clearTimeout(timer);
          w.asks.delete(id);
          reject(new Error(`could not be asked: ${err.message}`));
        });
      } catch (e) {
        clearTimeout(timer);
        w.asks.delete(id);
        reject(new Error(`could not be asked: ${(e as Error).message}`));
      }
    });
  const admin: AdminServer | undefined = await startAdminServer({
    releaseDir: dir, log, mechanism: kind,
    // A process not yet ready serves nobody yet (its queued sockets are not sessions).
    workers: (): AdminWorker[] => [...workers].filter((w) => w.ready).map((w) => ({ pid: w.pid, ask: (req, ms) => askWorker(w, req, ms) })),
  });

  const server = net.createServer({ pauseOnConnect: true });
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen({ port: cfg.port, host: cfg.bind, backlog: 511 }, () => {
        server.off('error', reject);
        resolve();
      });
    });
  } catch (e) {
    log.error({ port: cfg.port, bind: cfg.bind }, `lock listener cannot listen on ${cfg.bind} port ${cfg.port}: ${(e as Error).message}`);
    admin?.close();
    unclaim();
    return 1;
  }
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : cfg.port;
  let me: ListenerInfo;
  try {
    me = publishListener(dir, { port, addr: cfg.bind, mechanism: kind, startedMs: Date.now() });
  } catch (e) {
    log.error({ err: e }, `lock listener cannot record itself in ${dir}: ${(e as Error).message}`);
    server.close();
    admin?.close();
    unclaim();
    return 1;
  }

  // The pair's witness (jdls.yaml witness:): leadership under an etcd lease,
  // passed on to every lock-server process as "leader until <monotonic ns>".
  let word: LeadershipWord = { role: 'follower', term: 0, leader: null };
  const tellLeadership = (w: Worker): void => {
    if (!w.child.connected) return;
    try {
      const m: ToLockServer = { type: 'leadership', word };
      w.child.send(m, undefined, {}, () => {});
    } catch {
      /* gone: it stops at its last deadline by itself */
    }
  };
  const witness = cfg.witness ? new Witness(cfg.witness, port, {
    log: log.child({ witness: cfg.witness.prefix }),
    localEpoch: () => Number(localEpoch(dir)),
    becomeLeader: (term) => beginTermEpoch(dir, BigInt(term)),
    onState: (s: WitnessState) => {
      word = s.role === 'leader'
        ? { role: 'leader', term: s.term, untilNs: s.untilNs.toString(), leader: s.leader }
        : { role: 'follower', term: s.term, leader: s.leader ?? null };
      for (const w of workers) if (w.ready) tellLeadership(w);
      try {
        const leftMs = s.role === 'leader' ? Number((s.untilNs - process.hrtime.bigint()) / 1_000_000n) : 0;
        writeWitnessRecord(dir, {
          pid: process.pid, endpoints: cfg.witness?.endpoints ?? [], endpoint: witness?.endpoint ?? '', prefix: cfg.witness?.prefix ?? '',
          name: witness?.name ?? '', leaseMs: cfg.witness?.leaseMs ?? 0, role: s.role, term: s.term, leader: s.leader ?? null,
          untilMs: s.role === 'leader' ? Date.now() + leftMs : null, updatedMs: Date.now(),
        });
      } catch (e) {
        log.debug({ err: e }, 'could not write the witness record');
      }
    },
  }) : undefined;

  const script = fileURLToPath(new URL('../cli/jdls.js', import.meta.url));
  const childEnv: NodeJS.ProcessEnv = { ...process.env, JBCRELEASEDIR: dir, [CONFIG_ENV]: configToEnv(cfg) };
  let stopping = false;

  const total = (): number => [...workers].reduce((n, w) => n + w.clients, 0);
  const perAddress = connectionsPerAddress(cfg);
  // Refusals are logged at most logLinesPerSecond a second: a connection flood must not become a log flood.
  const refusals = new RateLog(() => log, cfg.logLinesPerSecond);
  const ofAddress = (addr: string): number => [...workers].reduce((n, w) => n + w.addrs.get(addr), 0);
  const gone = (w: Worker, addr: string | undefined): void => {
    w.clients = Math.max(0, w.clients - 1);
    if (addr !== undefined) w.addrs.add(addr, -1);
    if (w.clients === 0) w.idleSince = Date.now();
  };

  let handoffs = 0;
  const hand = (w: Worker, sock: net.Socket): void => {
    const addr = sock.remoteAddress ?? '';
    const id = (handoffs = (handoffs % 0x7fffffff) + 1);
    const msg: ToLockServer = { type: 'conn', addr, id };
    try {
      sendConnection(w.child, msg, sock, (err) => {
        if (!err) {
          const timer = setTimeout(() => {
            w.unacked.delete(id);
            log.warn({ pid: w.pid, client: addr }, 'a connection handed to a lock server did not arrive there; its place is given back');
            if (w.lost.size < 10_000) w.lost.set(id, addr);
            gone(w, addr);
          }, HANDOFF_ACK_MS);
          timer.unref();
          w.unacked.set(id, { addr, timer });
          return;
        }
        log.warn({ err, pid: w.pid }, 'could not hand a connection to a lock server');
        sock.destroy();
        gone(w, addr);
      });
    } catch (e) {
      log.warn({ err: e, pid: w.pid }, 'could not hand a connection to a lock server');
      sock.destroy();
      gone(w, addr);
    }
  };

  const spawnWorker = (): Worker => {
    // detached: its own process group and session, so that a signal to the
    // listener's group (a terminal's ^C, a kill of the group) does not
    // reach it; the lock-server process ignores the IPC channel closing.
    const child = fork(script, [LOCK_SERVER_CHILD_FLAG, kind], {
      detached: true,
      execArgv: [...process.execArgv, ...LOCK_SERVER_NODE_FLAGS],
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      env: childEnv,
    });
    const w: Worker = { child, pid: child.pid ?? 0, ready: false, clients: 0, addrs: new Tally(), unacked: new Map(), lost: new Map(), queue: [], idleSince: Date.now(), startedMs: Date.now(), asks: new Map() };
    workers.add(w);
    child.on('message', (m: unknown) => {
      if (!isFromLockServer(m)) return;
      if (m.type === 'ready') {
        w.ready = true;
        // The leadership first: the IPC channel keeps order, so no client reaches it before it knows.
        if (witness) tellLeadership(w);
        for (const s of w.queue.splice(0)) hand(w, s);
      } else if (m.type === 'promote') {
        const waitMs = Math.min(Math.max(0, m.waitMs), PROMOTE_CAP_MS);
        const answer = (term: number | null): void => {
          try {
            const r: ToLockServer = { type: 'promoted', id: m.id, term };
            w.child.send(r, undefined, {}, () => {});
          } catch {
            /* the lock server went away */
          }
        };
        if (!witness) answer(0);
        else witness.promote(waitMs).then((t) => answer(t ?? null), () => answer(null));
      } else if (m.type === 'admin') {
        const a = w.asks.get(m.id);
        if (a) {
          clearTimeout(a.timer);
          w.asks.delete(m.id);
          a.resolve(m.reply);
        }
      } else if (m.type === 'adopted') {
        const u = w.unacked.get(m.id);
        if (u) {
          clearTimeout(u.timer);
          w.unacked.delete(m.id);
        } else {
          // Arrived after it was given up on: it is served, count it again.
          const addr = w.lost.get(m.id);
          if (addr !== undefined) {
            w.lost.delete(m.id);
            w.clients++;
            w.addrs.add(addr, 1);
          }
        }
      } else {
        gone(w, m.addr);
      }
    });
    child.on('error', (e) => log.warn({ err: e, pid: w.pid }, 'lock server process error'));
    child.on('exit', (code, sig) => {
      workers.delete(w);
      for (const u of w.unacked.values()) clearTimeout(u.timer);
      for (const a of w.asks.values()) {
        clearTimeout(a.timer);
        a.reject(new Error(`lock-server process ${w.pid} ended (code ${code ?? '-'}, signal ${sig ?? '-'}) before it answered`));
      }
      w.asks.clear();
      const lost = w.queue.splice(0);
      for (const s of lost) {
        w.addrs.add(s.remoteAddress ?? '', -1);
        refuse(s, 'SYSTEM', 'the lock server process for this connection failed to start');
      }
      if (!stopping && (code !== 0 || w.clients > 0))
        log.warn({ pid: w.pid, code, signal: sig, clients: w.clients, ready: w.ready }, 'lock server process ended');
    });
    log.debug({ pid: w.pid }, 'lock server process started');
    return w;
  };

  const hasRoom = (w: Worker): boolean => w.clients < cfg.clientsPerProcess;
  const ensureSpare = (): void => {
    if (stopping) return;
    let room = 0;
    for (const w of workers) if (hasRoom(w)) room++;
    for (; room < cfg.spareProcesses; room++) spawnWorker();
  };

  // A refusal is sent at once, before the client's HELLO is read (the
  // listener never parses a client's bytes): docs/protocol.md says a client
  // takes it as the answer to its HELLO. The trap: closing a socket with
  // unread input makes the kernel send RST instead of FIN, and a client whose
  // HELLO crossed the ERROR may then get ECONNRESET before it reads the
  // ERROR. So the input is read and dropped (resume) until the client closes
  // or a second has passed.
  const refuse = (sock: net.Socket, code: 'LIMIT' | 'SYSTEM' | 'SHUTDOWN', text: string): void => {
    try {
      sock.resume();
      sock.once('end', () => sock.destroy());
      sock.end(encode({ type: 'ERROR', requestId: 0, code, text }));
      setTimeout(() => sock.destroy(), 1000).unref();
    } catch {
      sock.destroy();
    }
  };

  const allow = AllowList.from(cfg, log);
  server.on('connection', (sock) => {
    sock.on('error', () => {}); // a reset before the hand-off: nothing to do
    if (!admitConnection(allow, sock)) return; // jdls.yaml allow: closed unanswered, logged (auth.ts)
    if (stopping) return refuse(sock, 'SHUTDOWN', 'the lock listener is stopping');
    if (total() >= cfg.maxConnections) {
      refusals.write('warn', { max: cfg.maxConnections, client: sock.remoteAddress }, 'connection refused: maxConnections reached');
      return refuse(sock, 'LIMIT', `too many connections: the lock server accepts at most ${cfg.maxConnections} (maxConnections)`);
    }
    const addr = sock.remoteAddress ?? '';
    if (ofAddress(addr) >= perAddress) {
      refusals.write('warn', { max: perAddress, client: addr }, 'connection refused: maxConnectionsPerAddress reached');
      return refuse(sock, 'LIMIT', `too many connections from ${addr}: the lock server accepts at most ${perAddress} from one address (maxConnectionsPerAddress)`);
    }
    // A process that already serves this address (its lock quota is counted
    // per process: quota.ts), else the fullest process with room: processes
    // fill up, and idle ones can retire.
    let best: Worker | undefined;
    for (const w of workers) {
      if (!hasRoom(w)) continue;
      const mine = w.addrs.get(addr) > 0;
      const bestMine = best !== undefined && best.addrs.get(addr) > 0;
      if (!best || (mine && !bestMine) || (mine === bestMine && w.clients > best.clients)) best = w;
    }
    const w = best ?? spawnWorker();
    w.clients++;
    w.addrs.add(addr, 1);
    if (w.ready) hand(w, sock);
    else w.queue.push(sock);
    ensureSpare();
  });
  server.on('error', (e) => log.error({ err: e }, 'listener socket error'));

  ensureSpare();

  witness?.start();
  if (witness) log.info({ endpoints: cfg.witness?.endpoints, prefix: cfg.witness?.prefix, leaseMs: cfg.witness?.leaseMs, name: witness.name }, 'witness: campaigning for the pair\'s leadership');

  for (const fault of serverFaults()) log.error({ fault }, `FAULT INJECTION (${FAULT_ENV}=${fault}): this service breaks a safety promise on purpose - for the chaos suite's tests only`);
  log.info({ port, bind: cfg.bind, mechanism: kind, clientsPerProcess: cfg.clientsPerProcess, releaseDir: dir }, `lock listener started on ${cfg.bind} port ${port}`);

  return new Promise<number>((resolve) => {
    let ticks = 0;
    const housekeeping = setInterval(() => {
      const now = Date.now();
      // Retire idle processes beyond the spares.
      let spare = 0;
      for (const w of [...workers].sort((a, b) => b.startedMs - a.startedMs)) {
        if (w.clients > 0 || !w.ready) {
          if (!w.ready && now - w.startedMs > READY_MS) {
            log.error({ pid: w.pid }, 'lock server process not ready in time; killing it');
            w.child.kill('SIGKILL');
          }
          continue;
        }
        if (spare < cfg.spareProcesses) {
          spare++;
          continue;
        }
        if (now - w.idleSince >= cfg.idleProcessMs) retire(w);
      }
      // A table created (or re-created) after the listener started learns
      // of it. (The table is opened and closed each time: a listener that
      // kept it mapped would count as "in use" for jdls -K.)
      if (++ticks % HEADER_EVERY === 0) {
        try {
          writeHeader(dir, me);
        } catch {
          /* a broken table is the monitor's business */
        }
      }
    }, HOUSEKEEPING_MS);
    housekeeping.unref();

    const retire = (w: Worker): void => {
      workers.delete(w);
      try {
        const m: ToLockServer = { type: 'retire' };
        w.child.send(m, undefined, {}, () => w.child.disconnect());
      } catch {
        /* gone */
      }
    };

    const finish = (sig: NodeJS.Signals): void => {
      if (stopping) return;
      stopping = true;
      clearInterval(housekeeping);
      // Not revoked: the lock-server processes that stay for their clients
      // obey their last deadline; the lease runs out after it (witness.ts).
      witness?.stop();
      removeWitnessRecord(dir, process.pid);
      server.close();
      admin?.close();
      try {
        withdrawListener(dir, me);
      } catch (e) {
        log.error({ err: e }, 'could not withdraw the listener pid file/header');
      }
      const idleGone: Promise<void>[] = [];
      for (const w of workers) {
        for (const s of w.queue.splice(0)) refuse(s, 'SHUTDOWN', 'the lock listener is stopping');
        // Processes with clients stay for them; idle ones see the channel
        // close and leave. The listener waits (bounded) for the idle ones,
        // so that right after `jdls -k` nothing idle still maps the table
        // (`jdls -K` would call it in use).
        if (w.clients === 0 && w.child.exitCode === null && w.child.signalCode === null)
          idleGone.push(new Promise<void>((r) => w.child.once('exit', () => r())));
        try {
          w.child.disconnect();
        } catch {
          /* gone */
        }
        w.child.unref();
      }
      const clients = total();
      void Promise.race([Promise.all(idleGone), new Promise((r) => setTimeout(r, 2000))]).then(() => {
        log.info({ clients }, `lock listener stopped: ${sig} received; ${clients} connected client${clients === 1 ? ' stays' : 's stay'} with their lock servers`);
        resolve(0);
      });
    };
    process.on('SIGTERM', finish);
    process.on('SIGINT', finish);
    process.on('SIGHUP', () => log.info('SIGHUP ignored'));
  });
}
