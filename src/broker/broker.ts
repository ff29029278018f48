// broker.ts - `jdls --broker`: the per-host, per-installation process that
// preloaded programs reach over a Unix-domain socket (docs/broker.md).
//
// Owns: the socket and its pid file, the one-broker rule, the idle exit, and
// the broker's half of "who may talk to whom": it serves its own uid only
// (SO_PEERCRED; the shim checks the other half). Where the socket is:
// src/broker/paths.ts.
// - Started on first use by the shim (shim/shim_broker.c), or by hand.
// - One broker per socket: listen() on an existing path fails; if a broker
//   answers there this one exits quietly (status 0: the race of two shims
//   starting one each is normal). If nothing answers, the file is a stale
//   socket of a broker that died (kill -9): it is removed and listen() tried
//   once more. Trap: two brokers that both found the same stale file can
//   both get here; the later one's socket replaces the earlier's, whose
//   clients (if any came in between) keep being served by it - sessions
//   share no state, so two brokers are harmless, and the orphan exits idle.
// - Idle: with no clients for JDLS_BROKER_IDLE_MS (default 5 minutes) it
//   removes its socket and pid file and exits; SIGTERM/SIGINT likewise (the
//   sessions close, the servers release their locks).
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import pino, { type Logger } from 'pino';
import { BrokerSession } from './session.js';
import { brokerDirProblem, brokerIdleMs, brokerPidPath, brokerSocketPath, isDefaultSocket } from './paths.js';
import { socketFd } from './handover.js';
import { native } from '../native.js';
import { encode } from '../protocol/codec.js';
import { readPidRecord, writePidRecord } from '../safefile.js';

export interface BrokerOptions {
  socket?: string;
  idleMs?: number;
  log?: Logger;
}

function probe(socket: string): Promise<boolean> {
  return new Promise((resolve) => {
    const c = net.connect(socket);
    c.once('connect', () => {
      c.destroy();
      resolve(true);
    });
    c.once('error', () => resolve(false));
  });
}

function listen(server: net.Server, socket: string): Promise<NodeJS.ErrnoException | undefined> {
  return new Promise((resolve) => {
    const onError = (e: NodeJS.ErrnoException): void => resolve(e);
    server.once('error', onError);
    server.listen(socket, () => {
      server.off('error', onError);
      resolve(undefined);
    });
  });
}

/** Run a broker until idle or signalled; resolves the exit code. */
export async function runBroker(opts: BrokerOptions = {}): Promise<number> {
  const socket = opts.socket ?? brokerSocketPath();
  const idleMs = opts.idleMs ?? brokerIdleMs();
  const log = opts.log ?? pino({ name: 'jdls-broker', level: process.env['JDLS_LOG_LEVEL'] ?? 'info' }, pino.destination(2));
  if (isDefaultSocket(socket)) {
    // The per-user directory (paths.ts): never listen in one another user made.
    const problem = brokerDirProblem(socket);
    if (problem) {
      log.error({ socket }, problem);
      return 1;
    }
  } else {
    fs.mkdirSync(path.dirname(socket), { recursive: true, mode: 0o750 });
  }
  const me = process.geteuid?.() ?? 0;

  let clients = 0;
  let idleTimer: NodeJS.Timeout | undefined;
  let finish: (code: number) => void = () => undefined;
  const finished = new Promise<number>((r) => (finish = r));
  const server = net.createServer((sock) => {
    // Who may talk to whom: a broker acts with its user's rights (it opens
    // server connections as that user and hands them over), so it serves
    // its own uid only - root's broker serves root only. The kernel's
    // SO_PEERCRED, not anything the client says; a client we cannot check
    // is refused. The ERROR's text is what the shim prints.
    const peer = native.fdpass.peerUid(socketFd(sock));
    if (peer !== me) {
      log.warn({ socket, peerUid: peer }, 'a client of another user: refused');
      const text = `the broker at ${socket} serves uid ${me} only; this program runs as uid ${peer}`;
      sock.end(encode({ type: 'ERROR', requestId: 0, code: 'PROTOCOL', text }));
      sock.on('error', () => undefined);
      return;
    }
    clients++;
    if (idleTimer) clearTimeout(idleTimer);
    idleTimer = undefined;
    new BrokerSession(sock, {
      log,
      onEnd: () => {
        clients--;
        if (clients === 0) armIdle();
      },
    });
  });
  const armIdle = (): void => {
    if (idleTimer) clearTimeout(idleTimer);
    idleTimer = setTimeout(() => {
      log.info({ idleMs }, 'no clients: broker exits');
      stop(0);
    }, idleMs);
  };

  let err = await listen(server, socket);
  if (err?.code === 'EADDRINUSE') {
    if (await probe(socket)) {
      log.info({ socket }, 'a broker already listens here: this one exits');
      return 0;
    }
    fs.rmSync(socket, { force: true }); // stale: its broker died
    err = await listen(server, socket);
  }
  if (err) {
    if (err.code === 'EADDRINUSE' && (await probe(socket))) return 0; // lost the race after all
    log.error({ socket, code: err.code }, `broker cannot listen: ${err.message}`);
    return 1;
  }
  const pidFile = brokerPidPath(socket);
  // JSON {pid, start}: whoever signals the broker by it checks that the pid
  // is still this process (safefile.isOurProcess). Written to a temporary
  // file and renamed: a link planted at the name is replaced, not followed.
  const mine = writePidRecord(pidFile);
  log.info({ socket, pid: process.pid, idleMs }, 'broker listening');

  let stopping = false;
  const stop = (code: number): void => {
    if (stopping) return;
    stopping = true;
    // Remove only what is ours: a later broker may have replaced the files.
    try {
      const rec = readPidRecord(pidFile);
      if (rec?.pid === mine.pid && rec.start === mine.start) {
        fs.rmSync(pidFile, { force: true });
        fs.rmSync(socket, { force: true });
      }
    } catch {
      /* gone */
    }
    server.close();
    finish(code);
  };
  process.once('SIGTERM', () => stop(0));
  process.once('SIGINT', () => stop(0));
  armIdle();
  return finished;
}
