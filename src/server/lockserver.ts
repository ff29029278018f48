// lockserver.ts - a lock-server process: takes locks on behalf of the remote
// clients the listener hands it (up to clientsPerProcess of them).
//
// Owns: the process's life - receiving connections over the IPC channel,
// one Session each, telling the listener when one ends, and exiting when it
// has no clients and nobody can give it more (retired, or the listener is
// gone). Does not own: the conversation (session.ts) or choosing the process
// for a connection (listener.ts).
//
// Independence (the guide's "Server Lock Resilience"): the listener forks
// this process detached (its own session and process group), so a signal to
// the listener's group does not reach it, and this process ignores the IPC
// channel closing: kill -9 of the listener leaves its clients connected and
// locking. A kill -9 of this process affects only its own clients: their
// sockets close (the kernel), and their shm entries name this dead pid, so
// the table's dead-owner rules free them on the next conflict (and the
// monitor's tidy-up at the latest).
import { createLogger, type Logger } from '../log.js';
import type { MechanismKind, RecordLocks } from '../locks/mechanism.js';
import { openMechanism, openOsLocks } from './mechanism.js';
import { TokenCounter } from '../locks/token-counter.js';
import { statsFor } from './stats.js';
import { Session } from './session.js';
import { rangeDescriptors } from './range-session.js';
import { OsLocks } from '../locks/oslock.js';
import { adoptConnection, type Adopted } from './passing.js';
import type { ServerConfig } from './config.js';
import { blockingWaits, limitsFor } from './quota.js';
import { LockTable } from '../locks/table.js';
import { acceptTls, loadServerSecrets, logAuthRefusal, type ServerSecrets } from './auth.js';
import type net from 'node:net';
import type { AdminWorkerReply, AdminWorkerRequest } from './admin-types.js';
import { Leadership, isLeadershipWord, type LeadershipWord } from './leadership.js';
import { PROMOTE_CAP_MS } from './pair-rules.js';

export const LOCK_SERVER_TITLE = 'jdls -ib (lock server)';

/** Messages between the listener and a lock-server process (IPC, JSON). */
export type ToLockServer = { type: 'conn'; addr?: string; id?: number } | { type: 'retire' } | { type: 'admin'; id: number; req: AdminWorkerRequest }
  /** the pair's leadership (witness.ts): every change and renewal */
  | { type: 'leadership'; word: LeadershipWord }
  /** the answer to a 'promote': the term led, or null (not within the wait) */
  | { type: 'promoted'; id: number; term: number | null };
/**
 * adopted: a 'conn' message arrived (with or without its socket; `id` as
 * the listener sent it); closed: that connection is gone. `addr` as the
 * listener sent it, for its per-address count.
 */
export type FromLockServer =
  | { type: 'ready'; pid: number } | { type: 'adopted'; id: number } | { type: 'closed'; session: number; addr?: string }
  /** the answer to an 'admin' message (admin.ts), same id */
  | { type: 'admin'; id: number; reply: AdminWorkerReply }
  /** a client's PROMOTE, passed on to the listener's witness */
  | { type: 'promote'; id: number; waitMs: number };

function isToLockServer(m: unknown): m is ToLockServer {
  if (typeof m !== 'object' || m === null) return false;
  const t = (m as { type?: unknown }).type;
  if (t === 'admin') return typeof (m as { id?: unknown }).id === 'number' && typeof (m as { req?: unknown }).req === 'object';
  if (t === 'leadership') return isLeadershipWord((m as { word?: unknown }).word);
  if (t === 'promoted') {
    const term = (m as { term?: unknown }).term;
    return typeof (m as { id?: unknown }).id === 'number' && (term === null || typeof term === 'number');
  }
  return t === 'conn' || t === 'retire';
}

export interface LockServerOptions {
  kind: MechanismKind;
  releaseDir: string;
  cfg: ServerConfig;
  log?: Logger;
}

/** Run until there is nothing left to serve; resolves with the exit code. */
export function runLockServer(opts: LockServerOptions): Promise<number> {
  process.title = LOCK_SERVER_TITLE;
  const log = opts.log ?? createLogger({ name: 'lockserver' });
  // Fencing tokens of OS file locks (this mechanism's, and OSLOCKS'): the
  // installation's counter. Without it OS grants carry no token - said
  // here, once, not hidden.
  let tokens: TokenCounter | undefined;
  try {
    tokens = TokenCounter.open(opts.releaseDir);
  } catch (e) {
    log.error({ err: e }, `OS file locks will carry no fencing token: ${(e as Error).message}`);
  }
  let mech: RecordLocks;
  try {
    mech = openMechanism(opts.kind, opts.releaseDir, opts.cfg.lockDir, tokens);
  } catch (e) {
    log.error({ err: e, mechanism: opts.kind }, `cannot open the lock mechanism: ${(e as Error).message}`);
    return Promise.resolve(1);
  }
  // The key and the TLS files are read once, here, as the process starts:
  // never passed through the environment (JDLS_SERVER_CONFIG names them).
  let secrets: ServerSecrets;
  try {
    secrets = loadServerSecrets(opts.cfg, opts.releaseDir);
  } catch (e) {
    log.error({ err: e }, `lock server cannot load its secrets: ${(e as Error).message}`);
    mech.close();
    return Promise.resolve(1);
  }
  let os: RecordLocks | undefined;
  const osLocks = (): RecordLocks => (os ??= opts.kind === 'os' ? mech : openOsLocks(opts.cfg.lockDir, tokens));
  const stats = statsFor(mech);
  // Quotas sized from the table (quota.ts): no one client can fill it.
  const limits = limitsFor(opts.cfg, mech instanceof LockTable ? mech.header().capacity : undefined);
  blockingWaits.max = opts.cfg.maxBlockingWaits;
  const descriptors = (): number => {
    const o = os ?? (mech instanceof OsLocks ? mech : undefined);
    const f = o instanceof OsLocks ? o.openFiles() : undefined;
    return (f ? f.owners + f.probes : 0) + rangeDescriptors();
  };
  const sessions = new Set<Session>();
  let nextId = 1;
  let retired = false;
  let orphan = !process.connected;

  const tell = (m: FromLockServer): void => {
    if (!process.connected || !process.send) return;
    try {
      process.send(m, undefined, {}, () => {}); // errors (channel closed meanwhile) are not ours to handle
    } catch {
      /* the listener went away */
    }
  };

  // The pair's leadership (witness.ts in the listener, leadership.ts here):
  // losing it closes every connection with ERROR NOT_LEADER (id 0), which
  // releases their locks and ends their waits.
  const leadership = new Leadership(opts.cfg.witness !== null, log, (why) => {
    for (const s of [...sessions]) s.close(`leadership lost: ${why}`, { type: 'ERROR', requestId: 0, code: 'NOT_LEADER', text: `this lock server is no longer the pair's leader: ${why}`.slice(0, 255) });
  });
  // PROMOTE: asked of the listener's witness; the answer comes back as 'promoted'.
  let promotes = 0;
  const promoteWaits = new Map<number, (term: number | undefined) => void>();
  const promote = (waitMs: number): Promise<number | undefined> => new Promise((resolve) => {
    if (!leadership.witnessed) return resolve(0); // the guide's rule: the client's word is enough
    if (leadership.mayGrant()) return resolve(leadership.term);
    if (!process.connected) return resolve(undefined); // no listener, no witness to ask
    const id = (promotes = (promotes % 0x7fffffff) + 1);
    const settle = (term: number | undefined): void => {
      clearTimeout(timer);
      promoteWaits.delete(id);
      resolve(term);
    };
    // The listener answers within the wait; this bound is for a listener that died meanwhile.
    const timer = setTimeout(() => settle(undefined), Math.min(waitMs, PROMOTE_CAP_MS) + 2000);
    promoteWaits.set(id, settle);
    tell({ type: 'promote', id, waitMs });
  });

  return new Promise<number>((resolve) => {
    let done = false;
    const finish = (code: number, why: string): void => {
      if (done) return;
      done = true;
      process.off('message', onMessage);
      leadership.close();
      for (const settle of [...promoteWaits.values()]) settle(undefined);
      for (const s of [...sessions]) s.close(why, { type: 'ERROR', requestId: 0, code: 'SHUTDOWN', text: `lock server stopping: ${why}` });
      try {
        mech.close();
        os?.close();
      } catch {
        /* closing is best effort */
      }
      log.info({ code }, `lock server exits: ${why}`);
      resolve(code);
    };
    const maybeExit = (): void => {
      if (sessions.size === 0 && (retired || orphan)) finish(0, retired ? 'retired by the listener' : 'no clients and no listener');
    };

    // The administrator's requests (admin.ts), asked by the listener: a
    // failure here answers the request, it never ends the process.
    const answerAdmin = (req: AdminWorkerRequest): AdminWorkerReply => {
      try {
        switch (req.cmd) {
          case 'sessions':
            return { cmd: 'sessions', sessions: [...sessions].filter((s) => !s.closed).map((s) => s.adminView()) };
          case 'drop': {
            const s = [...sessions].find((x) => x.id === req.conn && !x.closed);
            if (!s) return { cmd: 'drop', dropped: null };
            const view = s.adminView();
            log.warn({ conn: s.id, by: req.by }, `client session ${s.id} dropped by an administrator (${req.by})`);
            s.adminDrop(req.by);
            return { cmd: 'drop', dropped: view };
          }
          case 'release': {
            // Chosen in every session first: a release hands the lock to a
            // waiter at once, perhaps in another session here, and that
            // fresh grant is not the stuck lock.
            const chosen = [...sessions].map((s) => [s, s.adminSelect(req.target)] as const);
            return { cmd: 'release', released: chosen.flatMap(([s, sel]) => s.adminRelease(req.target, sel)) };
          }
        }
      } catch (e) {
        log.error({ err: e, cmd: (req as { cmd?: unknown }).cmd }, 'administrator request failed');
        return { cmd: 'error', error: (e as Error).message };
      }
      return { cmd: 'error', error: 'unknown request' };
    };

    const onMessage = (m: unknown, handle: unknown): void => {
      if (!isToLockServer(m)) return;
      if (m.type === 'admin') {
        tell({ type: 'admin', id: m.id, reply: answerAdmin(m.req) });
        return;
      }
      if (m.type === 'retire') {
        retired = true;
        maybeExit();
        return;
      }
      if (m.type === 'leadership') {
        leadership.update(m.word);
        return;
      }
      if (m.type === 'promoted') {
        promoteWaits.get(m.id)?.(m.term ?? undefined);
        return;
      }
      const addr = typeof m.addr === 'string' ? m.addr : undefined;
      if (typeof m.id === 'number') tell({ type: 'adopted', id: m.id });
      const id = nextId++;
      // TLS: the socket is read through the stream machinery (the TLS layer
      // sits on it), not onread (passing.ts).
      const adopted = adoptConnection(handle, { plain: secrets.tls !== undefined });
      if (!adopted) {
        // The descriptor did not arrive (e.g. EMFILE: the kernel drops it
        // and the client sees a reset). The listener counted the connection:
        // give its place back, or every such hand-off leaks a slot for ever.
        log.warn('connection message without a socket');
        tell({ type: 'closed', session: id, ...(addr !== undefined ? { addr } : {}) });
        return;
      }
      const closedMsg = { type: 'closed' as const, session: id, ...(addr !== undefined ? { addr } : {}) };
      const serve = (sock: net.Socket, route: Adopted['route'] | undefined): void => {
        try {
          const s = new Session(sock, {
            mech, osLocks, cfg: opts.cfg, limits, descriptors, log, stats, id, key: secrets.key, route, releaseDir: opts.releaseDir,
            pair: { leadership, promote },
            onClose: (closed) => {
              sessions.delete(closed);
              tell(closedMsg);
              maybeExit();
            },
          });
          if (!s.closed) sessions.add(s);
        } catch (e) {
          log.error({ err: e }, 'could not serve a connection');
          sock.destroy();
          tell(closedMsg);
        }
      };
      if (!secrets.tls) {
        serve(adopted.sock, adopted.viaRoute ? adopted.route : undefined);
        return;
      }
      // TLS: the Session starts once the handshake is done (and, with
      // tlsCA, the client's certificate verified: auth.ts acceptTls).
      const client = adopted.sock.remoteAddress;
      acceptTls(adopted.sock, secrets, opts.cfg.keepaliveMs, (t) => serve(t, undefined), (why) => {
        logAuthRefusal(log, { client }, `TLS connection refused: ${why}`);
        tell(closedMsg);
        maybeExit();
      });
    };
    process.on('message', onMessage);
    // Trap: without a 'disconnect' listener nothing happens either, but the
    // intent is explicit - losing the listener is not a reason to drop the
    // clients; only once they are gone does this process leave.
    process.on('disconnect', () => {
      orphan = true;
      log.info({ clients: sessions.size }, 'the listener is gone; serving the connected clients until they leave');
      maybeExit();
    });
    const onSignal = (sig: NodeJS.Signals): void => finish(0, `${sig} received`);
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
    // Detached: no terminal, but an operator's kill -HUP must not end it.
    process.on('SIGHUP', () => log.info('SIGHUP ignored'));
    tell({ type: 'ready', pid: process.pid });
    log.debug({ mechanism: mech.kind }, 'lock server ready');
    maybeExit();
  });
}
