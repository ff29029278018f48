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
// - With a witness (both WELCOMEs say WITNESS: docs/server.md, "The
//   witness"), the contract of /work/notes/pair-contract.md: the LEADER is
//   the primary whatever the JDLS order; if neither leads, SERVER is asked
//   to (PROMOTE, wait = TIMEOUT) and connecting fails if it does not. Mirrors
//   carry MIRROR (a follower grants nothing else). The primary fails
//   (connection lost, NOT_LEADER): the secondary is asked to PROMOTE within
//   TIMEOUT; PROMOTED makes it the primary and the unanswered requests are
//   sent again; otherwise the client is dead (SPLIT_REFUSED) - it never
//   locks on a server the witness has not made the leader, so two clients
//   cut off from different halves of the pair cannot both hold one lock.
// Trap: the connection rejects its outstanding requests *before* calling
// onFail, but promise continuations run later, so by the time a rejected
// send() loop looks at #conns the failed server is already gone from it.
import type { Logger } from 'pino';
import { JdlsError } from '../errors.js';
import type { JdlsServer } from './jdls-env.js';
import { ServerConnection, type ConnectionOptions, type FinalFrame, type RequestFrame, type RequestOptions } from './connection.js';
import type { Call, Router, RouterEvents } from './router.js';

function isUnlock(frame: RequestFrame): boolean {
  return frame.type === 'UNLOCK' || frame.type === 'UNLOCK_FILE' || frame.type === 'UNLOCK_ALL' || frame.type === 'RANGE_UNLOCK';
}

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
function fenced(frame: RequestFrame, answer: FinalFrame, mirror: boolean): RequestFrame {
  if (frame.type === 'RANGE_LOCK') return mirror ? { ...frame, mirror: true } : frame;
  if (frame.type !== 'LOCK' || answer.type !== 'GRANTED') return frame;
  if (!answer.token && !frame.breakDeadlock && !mirror) return frame;
  const { breakDeadlock: _primaryOnly, ...rest } = frame;
  // MIRROR only to a server that took HELLO's PAIR (an older one refuses the flag).
  const m = mirror ? { mirror: true as const } : {};
  return answer.token ? { ...rest, ...m, fence: answer.token } : { ...rest, ...m };
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
  /** the pair runs a witness (the primary's WELCOME said WITNESS): failover needs PROMOTE */
  readonly #witnessed: boolean;
  /** TIMEOUT: how long a PROMOTE may take */
  readonly #timeoutMs: number;
  /** a failover in progress: requests wait for it before using the primary */
  #promoting: { target: ServerConnection; done: Promise<void> } | undefined;

  private constructor(conns: ServerConnection[], log: Logger, events: RouterEvents, timeoutMs: number) {
    this.#conns = conns;
    this.#log = log;
    this.#events = events;
    this.#timeoutMs = timeoutMs;
    this.#witnessed = conns[0]?.witness !== undefined;
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
    const timeoutMs = connOpts().timeoutMs;
    const [pr, sr] = await Promise.allSettled([
      ServerConnection.open(p, { ...connOpts(), pair: true, onFail: onFail(0) }),
      ServerConnection.open(s, { ...connOpts(), pair: true, onFail: onFail(1) }),
    ]);
    if (pr.status === 'rejected') {
      // With a witness, a SERVER2 that LEADS is the pair's primary for
      // everyone: starting on it alone splits nobody (the guide's rule,
      // "the primary must answer", is about falling over by one's own word).
      if (sr.status === 'fulfilled' && sr.value.witness?.role === 'leader' && sr.value.state === 'open') {
        const e = pr.reason as JdlsError;
        log.error({ server: `${p.host}:${p.port}`, code: e.code }, `lock server ${p.host}:${p.port} (SERVER) unavailable at start; ${sr.value.label} (SERVER2) leads the pair: starting on it, not resilient: ${e.message}`);
        held[1] = sr.value;
        router = new ResilientRouter([sr.value], log, events, timeoutMs);
        return router;
      }
      if (sr.status === 'fulfilled') await sr.value.close();
      throw pr.reason;
    }
    held[0] = pr.value;
    if (sr.status === 'fulfilled') held[1] = sr.value;
    else {
      const e = sr.reason as JdlsError;
      log.error({ server: `${s.host}:${s.port}`, code: e.code }, `secondary lock server unavailable at start, not resilient: ${e.message}`);
    }
    let conns = held.filter((c): c is ServerConnection => c !== undefined);
    try {
      conns = await leaderFirst(conns, timeoutMs, log);
    } catch (e) {
      await Promise.all(conns.map((c) => c.close()));
      throw e;
    }
    router = new ResilientRouter(conns, log, events, timeoutMs);
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
        // A witnessed failover: nothing goes to the new primary before the witness made it one.
        if (this.#promoting) await this.#failoverDone(); // no await (and no allocation) on the usual path
        const p = this.primary; // throws once no server is left
        const h = p.request(frame, opts);
        current = { conn: p, id: h.id };
        // A witnessed pair's unlocks go to both at once (the contract allows
        // it: an unlock cannot make two holders): one round trip, not two.
        const early = this.#witnessed && isUnlock(frame) && this.#conns[0] === p ? this.#sendEarly(this.#conns[1], frame, opts) : undefined;
        let first: FinalFrame;
        try {
          first = await h.answer;
        } catch (e) {
          // The primary failed before answering: send again to the promoted
          // secondary, unless the caller withdrew the request meanwhile.
          if (e === p.failure && p.state === 'failed' && (this.#promoting !== undefined || (this.#conns.length > 0 && this.#conns[0] !== p))) {
            if (cancelled) throw new JdlsError('CANCELLED', 'lock request withdrawn during failover');
            if (early) {
              // The new primary had this unlock already (sent at once): its answer is the answer.
              await this.#failoverDone();
              if (this.#conns[0] === early.conn) return await early.answer;
            }
            this.#log.error({ request: requestText(frame) }, `request sent again to the new primary ${this.#conns[0]?.label}`);
            continue;
          }
          // The witnessed failover failed: the client's death is the answer.
          if (e === p.failure && this.#last?.code === 'SPLIT_REFUSED') throw this.#last;
          throw e;
        }
        current = undefined;
        const s = this.#conns[0] === p ? this.#conns[1] : undefined;
        if (!s || !mirrored(frame, first)) return first;
        if (early && early.conn === s) {
          // An unlock sent to both at once: the primary's answer is the
          // caller's, and the secondary's is compared when it comes. Waiting
          // for it would add the secondary's turn to every unlock (on a host
          // running both servers, a whole round trip) and buys no safety: an
          // unlock cannot make two holders, and the secondary reads this
          // connection's frames in order, so the caller's next lock reaches
          // it after this unlock.
          early.answer.then(
            (second) => this.#compare(frame, first, second, s),
            (e: unknown) => { if (s.state !== 'failed') this.#compare(frame, first, e instanceof JdlsError ? e : new JdlsError('PROTOCOL', String(e)), s); },
          );
          return first;
        }
        let second: FinalFrame | JdlsError;
        try {
          second = early && early.conn === s ? await early.answer : await s.request(fenced(frame, first, s.pair), { timed: opts.timed }).answer;
        } catch (e) {
          if (s.state === 'failed') return first; // #onFail logged it; no longer resilient
          second = e instanceof JdlsError ? e : new JdlsError('PROTOCOL', String(e));
        }
        this.#compare(frame, first, second, s);
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

  /** The primary's and the secondary's answers to one request: a difference is logged (jbase_error_trace) and emitted. */
  #compare(frame: RequestFrame, first: FinalFrame, second: FinalFrame | JdlsError, s: ServerConnection): void {
    const a = answerText(first);
    const b = answerText(second);
    if (a === b) return;
    const info = { request: requestText(frame), primary: a, secondary: b };
    this.#log.error({ ...info, secondaryServer: s.label }, 'primary and secondary lock servers answered differently');
    this.#events.mismatch(info);
  }

  /** A witnessed failover in progress has ended (either way). */
  async #failoverDone(): Promise<void> {
    while (this.#promoting) await this.#promoting.done;
  }

  /** The secondary's copy of an unlock, sent with the primary's (its rejection is handled where it is awaited, or dropped). */
  #sendEarly(s: ServerConnection | undefined, frame: RequestFrame, opts: RequestOptions): { conn: ServerConnection; answer: Promise<FinalFrame> } | undefined {
    if (!s || s.state !== 'open') return undefined;
    try {
      const answer = s.request(frame, { timed: opts.timed }).answer;
      answer.catch(() => undefined);
      return { conn: s, answer };
    } catch {
      return undefined;
    }
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
    // The server being promoted failed too: #promote words the client's death.
    if (this.#promoting?.target === conn) return;
    const next = this.#conns[0];
    if (i === 0 && next && this.#witnessed) {
      this.#log.error({ failed: conn.label, next: next.label, code: e.code }, `primary lock server failed (${e.message}); asking the witness to make ${next.label} the primary (PROMOTE, within ${this.#timeoutMs} ms)`);
      const target = next;
      this.#promoting = { target, done: this.#promote(conn, target) };
      return;
    }
    if (!next) {
      this.#log.error({ server: conn.label, code: e.code }, 'last lock server failed: distributed locking is lost');
      this.#events.dead(e);
      return;
    }
    if (i === 0) this.#log.error({ failed: conn.label, now: next.label, code: e.code }, `primary lock server failed (${e.message}); secondary ${next.label} promoted to primary, no longer resilient`);
    else this.#log.error({ failed: conn.label, now: next.label, code: e.code }, `secondary lock server failed (${e.message}); continuing with ${next.label} alone, no longer resilient`);
    this.#events.failover({ failed: conn.server, error: e, now: next.server });
  }

  /** Witnessed failover: PROMOTE the secondary within TIMEOUT, or die (SPLIT_REFUSED). */
  async #promote(failed: ServerConnection, target: ServerConnection): Promise<void> {
    let term: number | undefined;
    let why = '';
    try {
      term = await promoteWithin(target, this.#timeoutMs);
    } catch (e) {
      why = (e as Error).message;
    }
    this.#promoting = undefined;
    if (term !== undefined && target.state === 'open') {
      this.#log.error({ failed: failed.label, now: target.label, term }, `primary lock server ${failed.label} failed; the witness made ${target.label} the primary (term ${term}), no longer resilient`);
      this.#events.failover({ failed: failed.server, error: failed.failure ?? new JdlsError('SERVER_CLOSED', 'connection lost'), now: target.server });
      return;
    }
    const dead = new JdlsError('SPLIT_REFUSED', `the primary lock server ${failed.label} is unreachable and the witness did not make ${target.label} the primary within ${this.#timeoutMs} ms (TIMEOUT): exiting rather than risk two holders of one lock${why ? ` (${why})` : ''}`);
    // A server that was not made the primary is never contacted again.
    this.#conns = [];
    this.#last = dead;
    void target.close();
    this.#log.error({ failed: failed.label, secondary: target.label, code: dead.code }, dead.message);
    this.#events.dead(dead);
  }
}

/**
 * PROMOTE with wait = TIMEOUT: the term, or a rejection (NOT_LEADER, the
 * connection failing, no verdict in time). Not timed by the TIMEOUT rule:
 * the server is silent on purpose while it tries; the keep-alive PINGs
 * still catch a dead one. A verdict later than TIMEOUT + 2 s is not waited for.
 */
async function promoteWithin(c: ServerConnection, timeoutMs: number): Promise<number> {
  const h = c.request({ type: 'PROMOTE', waitMs: timeoutMs }, { timed: false });
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new JdlsError('SERVER_DEAD', `lock server ${c.label} gave no verdict on PROMOTE within ${timeoutMs + 2000} ms`)), timeoutMs + 2000);
  });
  try {
    const f = await Promise.race([h.answer, late]);
    if (f.type !== 'PROMOTED') throw new JdlsError('PROTOCOL', `lock server ${c.label}: ${f.type} is not an answer to PROMOTE`);
    return f.term;
  } finally {
    clearTimeout(timer);
  }
}

/**
 * The order of a witnessed pair at connect: the LEADER first, whatever the
 * JDLS order. Neither leads: SERVER (the first) is asked to PROMOTE within
 * TIMEOUT, and connecting fails (NOT_LEADER) if it is not made the leader.
 * Without a witness the JDLS order stands (the guide).
 */
async function leaderFirst(conns: ServerConnection[], timeoutMs: number, log: Logger): Promise<ServerConnection[]> {
  const open = conns.filter((c) => c.state === 'open');
  if (!open.some((c) => c.witness !== undefined)) return conns;
  const leader = open.find((c) => c.witness?.role === 'leader');
  if (leader) return [leader, ...conns.filter((c) => c !== leader)];
  const first = open[0];
  if (!first) return conns;
  const roles = open.map((c) => `${c.label} ${c.witness ? `${c.witness.role} (term ${c.witness.term})` : 'without a witness'}`).join(', ');
  log.warn({ servers: roles }, `neither lock server of the pair leads; asking ${first.label} to (PROMOTE)`);
  try {
    const term = await promoteWithin(first, timeoutMs);
    log.warn({ server: first.label, term }, `the witness made ${first.label} the leader (term ${term})`);
    return [first, ...conns.filter((c) => c !== first)];
  } catch (e) {
    throw new JdlsError('NOT_LEADER', `neither lock server of the pair is the leader (${roles}) and the witness did not make ${first.label} the leader within ${timeoutMs} ms: not connecting (${(e as Error).message})`);
  }
}
