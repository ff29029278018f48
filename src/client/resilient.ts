// resilient.ts - SERVER2: client lock resilience (guide, "Client Lock Resilience").
//
// Owns: duplicating requests to the secondary, comparing answers, and
// failover. The rules:
// - A request goes to the primary. Only once the primary acknowledged it as
//   successful (LOCK: GRANTED; UNLOCK*: RELEASED) does the same request go to
//   the secondary; the caller's answer waits for both. A different secondary
//   answer is logged (error, so jbase_error_trace has it) and emitted as
//   'mismatch'; the primary's answer stands. NOWAIT conflicts (LOCKED),
//   errors, STATUS, TEST and PING are not duplicated. A LOCK mirrored after
//   a GRANTED with a fencing token carries it (flag FENCE): the secondary
//   raises its token floor past that epoch, so once promoted its tokens
//   outrank every token the old primary gave (docs/protocol.md, "Fencing tokens").
// - The primary fails: logged; the secondary is promoted and duplication
//   stops. Requests the old primary had not answered are sent again to the
//   new primary (it never saw them); requests already at the secondary just
//   finish there.
// - The secondary fails: logged; the client carries on with the primary alone.
// - A failed server is never contacted again by this client ("lock confusion").
// - The last server fails: the client is dead (RouterEvents.dead).
// - At connect, the primary must answer (falling over to the secondary before
//   ever locking would split this client from the others); an unreachable
//   secondary is logged and the client starts without resilience.
// Trap: the connection rejects its outstanding requests *before* calling
// onFail, but promise continuations run later, so by the time a rejected
// send() loop looks at #conns the failed server is already gone from it.
import type { Logger } from 'pino';
import { JdlsError } from '../errors.js';
import type { JdlsServer } from './jdls-env.js';
import { ServerConnection, type ConnectionOptions, type FinalFrame, type RequestFrame, type RequestOptions } from './connection.js';
import type { Call, Router, RouterEvents } from './router.js';

function mirrored(frame: RequestFrame, answer: FinalFrame): boolean {
  if (frame.type === 'LOCK' || frame.type === 'RANGE_LOCK') return answer.type === 'GRANTED';
  if (frame.type === 'UNLOCK' || frame.type === 'UNLOCK_FILE' || frame.type === 'UNLOCK_ALL' || frame.type === 'RANGE_UNLOCK') return answer.type === 'RELEASED';
  return false;
}

/**
 * The request as the secondary gets it: a LOCK with the primary's token
 * (FENCE), when the primary gave one, and without BREAK_DEADLOCK: the
 * primary granted it, so the mirror must follow, not be refused as a
 * cycle's victim (the secondary's waiters mirror the primary's, so a cycle
 * there is one the primary already broke or never had).
 */
function fenced(frame: RequestFrame, answer: FinalFrame): RequestFrame {
  if (frame.type !== 'LOCK' || answer.type !== 'GRANTED') return frame;
  if (!answer.token && !frame.breakDeadlock) return frame;
  const { breakDeadlock: _primaryOnly, ...rest } = frame;
  return answer.token ? { ...rest, fence: answer.token } : rest;
}

function answerText(f: FinalFrame | JdlsError): string {
  if (f instanceof JdlsError) return `error ${f.code}`;
  if (f.type === 'RELEASED') return `RELEASED ${f.count}`;
  if (f.type === 'LOCKED') return `LOCKED by port ${f.holder.port} pid ${f.holder.ownerPid}`;
  return f.type;
}

function requestText(f: RequestFrame): string {
  if (f.type === 'LOCK') return `LOCK ${f.mode}${f.nowait ? ' NOWAIT' : ''} inode ${f.file.inode} key ${JSON.stringify(f.key.toString('latin1'))}`;
  if (f.type === 'UNLOCK') return `UNLOCK inode ${f.file.inode} key ${JSON.stringify(f.key.toString('latin1'))}`;
  if (f.type === 'UNLOCK_FILE') return `UNLOCK_FILE inode ${f.file.inode}`;
  return f.type;
}

export class ResilientRouter implements Router {
  /** live connections, primary first; a failed one is removed for good */
  #conns: ServerConnection[];
  readonly #log: Logger;
  readonly #events: RouterEvents;
  #last: JdlsError | undefined;

  private constructor(conns: ServerConnection[], log: Logger, events: RouterEvents) {
    this.#conns = conns;
    this.#log = log;
    this.#events = events;
  }

  static async open(servers: JdlsServer[], connOpts: () => ConnectionOptions, log: Logger, events: RouterEvents): Promise<ResilientRouter> {
    let router: ResilientRouter | undefined;
    const held: (ServerConnection | undefined)[] = [undefined, undefined];
    // A failure before the router exists is found below by its state.
    const onFail = (i: number) => (e: JdlsError): void => {
      const c = held[i];
      if (router && c) router.#onFail(c, e);
    };
    const [p, s] = servers;
    if (!p || !s) throw new JdlsError('BAD_JDLS', 'resilient mode needs SERVER and SERVER2');
    const [pr, sr] = await Promise.allSettled([
      ServerConnection.open(p, { ...connOpts(), onFail: onFail(0) }),
      ServerConnection.open(s, { ...connOpts(), onFail: onFail(1) }),
    ]);
    if (pr.status === 'rejected') {
      if (sr.status === 'fulfilled') await sr.value.close();
      throw pr.reason;
    }
    held[0] = pr.value;
    if (sr.status === 'fulfilled') held[1] = sr.value;
    else {
      const e = sr.reason as JdlsError;
      log.error({ server: `${s.host}:${s.port}`, code: e.code }, `secondary lock server unavailable at start, not resilient: ${e.message}`);
    }
    const conns = held.filter((c): c is ServerConnection => c !== undefined);
    router = new ResilientRouter(conns, log, events);
    for (const c of conns) if (c.state === 'failed') router.#onFail(c, c.failure ?? new JdlsError('SERVER_CLOSED', 'connection lost'));
    if (router.#conns.length === 0) throw router.#last ?? new JdlsError('SERVER_CLOSED', 'connection lost');
    return router;
  }

  get primary(): ServerConnection {
    const c = this.#conns[0];
    if (!c) throw this.#last ?? new JdlsError('CLOSED', 'no lock server left');
    return c;
  }

  get resilient(): boolean {
    return this.#conns.length > 1;
  }

  get all(): readonly ServerConnection[] {
    return this.#conns;
  }

  send(frame: RequestFrame, opts: RequestOptions): Call {
    let current: { conn: ServerConnection; id: number } | undefined;
    let cancelled = false;
    const run = async (): Promise<FinalFrame> => {
      for (;;) {
        const p = this.primary; // throws once no server is left
        const h = p.request(frame, opts);
        current = { conn: p, id: h.id };
        let first: FinalFrame;
        try {
          first = await h.answer;
        } catch (e) {
          // The primary failed before answering: send again to the promoted
          // secondary, unless the caller withdrew the request meanwhile.
          if (e === p.failure && p.state === 'failed' && this.#conns.length > 0 && this.#conns[0] !== p) {
            if (cancelled) throw new JdlsError('CANCELLED', 'lock request withdrawn during failover');
            this.#log.error({ request: requestText(frame) }, `request sent again to the new primary ${this.#conns[0]?.label}`);
            continue;
          }
          throw e;
        }
        current = undefined;
        const s = this.#conns[0] === p ? this.#conns[1] : undefined;
        if (!s || !mirrored(frame, first)) return first;
        let second: FinalFrame | JdlsError;
        try {
          second = await s.request(fenced(frame, first), { timed: opts.timed }).answer;
        } catch (e) {
          if (s.state === 'failed') return first; // #onFail logged it; no longer resilient
          second = e instanceof JdlsError ? e : new JdlsError('PROTOCOL', String(e));
        }
        const a = answerText(first);
        const b = answerText(second);
        if (a !== b) {
          const info = { request: requestText(frame), primary: a, secondary: b };
          this.#log.error({ ...info, secondaryServer: s.label }, 'primary and secondary lock servers answered differently');
          this.#events.mismatch(info);
        }
        return first;
      }
    };
    return {
      answer: run(),
      cancel: () => {
        cancelled = true;
        if (current) current.conn.cancel(current.id);
      },
    };
  }

  sendPrimaryOnly(frame: RequestFrame, opts: RequestOptions): Call {
    const p = this.primary;
    const h = p.request(frame, opts);
    return { answer: h.answer, cancel: () => p.cancel(h.id) };
  }

  async close(): Promise<void> {
    const all = this.#conns;
    this.#conns = [];
    this.#last = new JdlsError('CLOSED', 'the JDLS client is closed');
    await Promise.all(all.map((c) => c.close()));
  }

  #onFail(conn: ServerConnection, e: JdlsError): void {
    const i = this.#conns.indexOf(conn);
    if (i < 0) return;
    this.#conns = this.#conns.filter((c) => c !== conn);
    this.#last = e;
    const next = this.#conns[0];
    if (!next) {
      this.#log.error({ server: conn.label, code: e.code }, 'last lock server failed: distributed locking is lost');
      this.#events.dead(e);
      return;
    }
    if (i === 0) this.#log.error({ failed: conn.label, now: next.label, code: e.code }, `primary lock server failed (${e.message}); secondary ${next.label} promoted to primary, no longer resilient`);
    else this.#log.error({ failed: conn.label, now: next.label, code: e.code }, `secondary lock server failed (${e.message}); continuing with ${next.label} alone, no longer resilient`);
    this.#events.failover({ failed: conn.server, error: e, now: next.server });
  }
}
