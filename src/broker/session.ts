// session.ts (broker) - one preloaded process's connection to the broker.
//
// Owns: the conversation with one shim (docs/broker.md): its HELLO names its
// JDLS value, pid, program and port; the broker opens THIS process's own
// server connection(s) and hands them over (direct mode, #tryHandOver: one
// server, or a SERVER2 pair to a shim that says PAIR); otherwise (TLS, an
// older shim's pair, JDLS_BROKER_HANDOVER=0) it connects with JdlsClient
// (SERVER2 resilience, TIMEOUT, WAIT, OSLOCKS all come with it), answers
// WELCOME, then forwards each request and
// sends back the server's answer under the shim's request id. CANCEL
// withdraws a waiting LOCK (the shim's interrupted F_SETLKW). When the shim's
// socket closes (the process exited or died) the server connection is closed
// at once, so the server releases the process's locks. When the server
// connection dies, the shim's socket is closed: the shim then ends its
// process with the guide's message rather than run on without locks.
import net from 'node:net';
import { JdlsError } from '../errors.js';
import { encode, FrameReader, ProtocolError } from '../protocol/codec.js';
import type { ProtoErrorName } from '../protocol/constants.js';
import type { ClientFrame, ServerFrame, HelloFrame, LockFrame, RangeLockFrame, WelcomeFrame } from '../protocol/frames.js';
import { JdlsClient } from '../client/client.js';
import { parseJdls, type JdlsConfig, type JdlsServer } from '../client/jdls-env.js';
import { connectFor, handOver, flagsRefused, promoteOn } from './handover.js';
import { clientKeyRule, readKeyFile } from '../secret.js';
import type { Logger } from 'pino';

/** The wire ERROR code for a client-side failure of one request. */
function wireCode(e: unknown): ProtoErrorName {
  const code = e instanceof JdlsError ? e.code : 'SYSTEM';
  switch (code) {
    case 'TABLE_FULL': case 'KEY_TOO_LONG': case 'LIMIT': case 'CANCELLED': case 'BAD_ARGUMENT': case 'SHUTDOWN': case 'PROTOCOL': case 'NOT_SUPPORTED':
    case 'DEADLOCK':
      return code;
    case 'ABORTED':
      return 'CANCELLED';
    default:
      return 'SYSTEM';
  }
}

export interface SessionEnd {
  /** called once when the session is over (both sides closed) */
  onEnd: () => void;
  log: Logger;
  /** connect options for tests (e.g. errorTrace) */
  errorTrace?: string | false;
}

export class BrokerSession {
  readonly #sock: net.Socket;
  readonly #reader = FrameReader.forServer();
  readonly #opts: SessionEnd;
  #client: JdlsClient | undefined;
  #connecting: Promise<void> | undefined;
  #ended = false;
  /** waiting LOCK requests by the shim's request id */
  readonly #waiting = new Map<number, AbortController>();
  /** frames that arrived while the server connection was being made */
  #queue: ClientFrame[] = [];
  #hello: HelloFrame | undefined;
  /** the server connection went to the process (direct mode): nothing more to do here */
  #handedOver = false;

  constructor(sock: net.Socket, opts: SessionEnd) {
    this.#sock = sock;
    this.#opts = opts;
    sock.on('data', (d: Buffer) => this.#onData(d));
    sock.on('error', () => this.#end());
    sock.on('close', () => this.#end());
  }

  #send(frame: ServerFrame): void {
    if (this.#ended || this.#sock.destroyed) return;
    let f = frame;
    // As the lock server does (src/server/session.ts): the shim's HELLO
    // decides whether GRANTED and STATUS_RESULT carry a token (0 = none),
    // whatever the server behind the broker gave.
    if ((f.type === 'GRANTED' || f.type === 'STATUS_RESULT') && (f.token !== undefined) !== this.#tokens) {
      if (this.#tokens) f = { ...f, token: 0n };
      else { const { token: _drop, ...rest } = f; f = rest; }
    }
    this.#sock.write(encode(f));
  }

  /** The shim's HELLO asked for fencing tokens (flag TOKENS). */
  get #tokens(): boolean {
    return this.#hello?.tokens === true;
  }

  #onData(d: Buffer): void {
    let frames: ClientFrame[];
    try {
      frames = this.#reader.push(d);
    } catch (e) {
      const reason = e instanceof ProtocolError ? e.fault.reason : String(e);
      this.#opts.log.error({ reason }, 'protocol error from a preloaded process');
      this.#send({ type: 'ERROR', requestId: 0, code: 'PROTOCOL', text: reason });
      this.#end();
      return;
    }
    for (const f of frames) this.#onFrame(f);
  }

  #onFrame(f: ClientFrame): void {
    if (this.#handedOver) return; // the process talks to the server itself now
    if (!this.#hello) {
      if (f.type !== 'HELLO') {
        this.#send({ type: 'ERROR', requestId: 0, code: 'PROTOCOL', text: `${f.type} before HELLO` });
        this.#end();
        return;
      }
      this.#hello = f;
      this.#connecting = this.#connect(f);
      return;
    }
    if (!this.#client) {
      this.#queue.push(f);
      return;
    }
    this.#dispatch(this.#client, f);
  }

  async #connect(h: HelloFrame): Promise<void> {
    if (await this.#tryHandOver(h)) return;
    let client: JdlsClient;
    try {
      client = await JdlsClient.connect(h.options, {
        pid: h.pid, port: h.port, program: h.program, hostname: h.host,
        ...(this.#opts.errorTrace === undefined ? {} : { errorTrace: this.#opts.errorTrace }),
      });
    } catch (e) {
      this.#refuse(h, e);
      return;
    }
    if (this.#ended) {
      await client.close();
      return;
    }
    this.#client = client;
    client.on('dead', (e) => {
      this.#opts.log.error({ pid: h.pid, code: e.code }, `server connection of pid ${h.pid} lost: ${e.message}`);
      this.#end();
    });
    const s = client.server;
    this.#send({
      type: 'WELCOME', requestId: 0, version: 1, mechanism: s.mechanism, serverPid: s.pid, session: s.session,
      interimMs: s.interimMs, keepaliveMs: 0, clientAddr: s.clientAddr, server: s.name, ...(this.#tokens ? { tokens: true as const } : {}),
      // INFO: the process's INFO frames are passed on (#dispatch) when it
      // offered them and the server takes them.
      ...(h.info && s.info ? { info: true as const } : {}),
    });
    this.#opts.log.info({ pid: h.pid, program: h.program, server: `${s.host}:${s.port}` }, 'preloaded process connected');
    const q = this.#queue;
    this.#queue = [];
    for (const f of q) this.#dispatch(client, f);
  }

  /**
   * Direct mode (handover.ts): no TLS and JDLS_BROKER_HANDOVER not 0 ->
   * connect for the process and hand it the connection - or, for SERVER2
   * and a shim whose HELLO says PAIR, both connections (primary first; the
   * shim keeps the pair's rules: docs/broker.md "Pairs"). True when done (or
   * when the failure was answered); false to serve it through the broker.
   */
  async #tryHandOver(h: HelloFrame): Promise<boolean> {
    if (process.env['JDLS_BROKER_HANDOVER'] === '0') return false;
    let config: JdlsConfig;
    try {
      config = parseJdls(h.options);
    } catch {
      return false; // JdlsClient.connect says what is wrong with it
    }
    const server = config.servers[0];
    if (!server) return false;
    // TLS: the session's keys live in this process and cannot be handed over;
    // JdlsClient carries it and the broker proxies (docs/broker.md).
    if (config.tls) return false;
    // SERVER2: handed over only to a shim that says PAIR (it keeps the
    // pair's rules itself); an older shim's pair stays behind JdlsClient.
    if (config.servers.length === 2 && !h.pair) return false;
    if (config.servers.length > 2) return false;
    let conns: { sock: net.Socket; welcome: Buffer; frame: WelcomeFrame }[];
    try {
      // JDLS SECRET: the broker (the process's own user) reads the key file
      // and answers the server's challenge for the process.
      const key = config.secret ? readKeyFile(config.secret, clientKeyRule('JDLS SECRET')) : undefined;
      const open = async (s: JdlsServer): Promise<{ sock: net.Socket; welcome: Buffer; frame: WelcomeFrame }> => {
        try {
          return await connectFor(s, h, config.timeoutMs, key);
        } catch (e) {
          // A server older than info records refuses HELLO's flag INFO: asked
          // again without it (the process then sends no INFO: its WELCOME
          // does not say INFO), as the jdls client does (connection.ts).
          if (!h.info || !flagsRefused(e)) throw e;
          const { info: _drop, ...older } = h;
          return await connectFor(s, older, config.timeoutMs, key);
        }
      };
      conns = config.servers.length === 1 ? [await open(server)] : await this.#openPair(h, config, open);
    } catch (e) {
      this.#refuse(h, e);
      return true;
    }
    if (this.#ended) {
      for (const c of conns) c.sock.destroy();
      return true;
    }
    const rc = handOver(this.#sock, conns.map((c) => c.sock), conns.map((c) => c.welcome));
    // Our copies of the connections go; the process holds them now (closing
    // a copy sends nothing to the server).
    for (const c of conns) c.sock.destroy();
    if (rc !== 0) {
      this.#opts.log.warn({ pid: h.pid, errno: -rc }, 'could not hand the server connection(s) over; serving through the broker');
      return false;
    }
    this.#handedOver = true;
    const where = conns.map((c) => c.frame.server).join(', ');
    this.#opts.log.info({ pid: h.pid, program: h.program, servers: where }, `preloaded process connected: ${conns.length} server connection(s) handed over`);
    return true;
  }

  /**
   * A resilient pair for a shim (HELLO PAIR): both connections, the primary
   * first. The pair's order is decided HERE, before the hand-over, not in
   * the shim: with a witness the primary is the server whose WELCOME says
   * LEADER whatever the JDLS order, and when neither leads, SERVER is asked
   * to take the leadership (PROMOTE, wait = TIMEOUT) first. That is a
   * round trip or a wait before the process holds any lock - the same for
   * the broker as for the shim - and the broker already has both WELCOMEs
   * decoded (the shim would need the WELCOME's role/term fields and a
   * PROMOTE path at connect in C, where an error is an exit). So the shim
   * takes descriptor 0 as the primary; it PROMOTEs only on a failure later.
   * Without a witness: JDLS order, as src/client/resilient.ts. SERVER (or,
   * with a witness, the leader) must answer; an unreachable secondary is
   * logged and the process starts with one server (not resilient).
   */
  async #openPair(h: HelloFrame, config: JdlsConfig, open: (s: JdlsServer) => Promise<{ sock: net.Socket; welcome: Buffer; frame: WelcomeFrame }>): Promise<{ sock: net.Socket; welcome: Buffer; frame: WelcomeFrame }[]> {
    const [p, s] = config.servers as [JdlsServer, JdlsServer];
    const [pr, sr] = await Promise.allSettled([open(p), open(s)]);
    const label = (x: JdlsServer): string => `${x.host}:${x.port}`;
    if (pr.status === 'rejected') {
      // With a witness a leader SERVER2 is the primary anyway.
      if (sr.status === 'fulfilled' && sr.value.frame.witness?.role === 'leader') {
        this.#opts.log.error({ pid: h.pid, server: label(p) }, `primary lock server unavailable at start; ${label(s)} leads the pair: not resilient: ${(pr.reason as Error).message}`);
        return [sr.value];
      }
      if (sr.status === 'fulfilled') sr.value.sock.destroy();
      throw pr.reason;
    }
    if (sr.status === 'rejected') {
      this.#opts.log.error({ pid: h.pid, server: label(s) }, `secondary lock server unavailable at start, not resilient: ${(sr.reason as Error).message}`);
      return [pr.value];
    }
    const a = pr.value;
    const b = sr.value;
    if (!a.frame.witness || !b.frame.witness) return [a, b];
    if (b.frame.witness.role === 'leader' && a.frame.witness.role !== 'leader') return [b, a];
    if (a.frame.witness.role === 'leader') return [a, b];
    // Neither leads (a lease lapsed, no campaign won yet): ask SERVER.
    let verdict: ServerFrame;
    try {
      verdict = await promoteOn(a.sock, label(p), config.timeoutMs);
    } catch (e) {
      a.sock.destroy();
      b.sock.destroy();
      throw e;
    }
    if (verdict.type !== 'PROMOTED') {
      a.sock.destroy();
      b.sock.destroy();
      throw new JdlsError('SERVER_DEAD', `neither lock server ${label(p)} nor ${label(s)} leads the pair and ${label(p)} could not take the leadership within TIMEOUT (${verdict.type === 'ERROR' ? `${verdict.code}: ${verdict.text}` : verdict.type})`);
    }
    this.#opts.log.info({ pid: h.pid, server: label(p), term: verdict.term }, 'neither server led the pair: SERVER took the leadership (PROMOTE)');
    return [a, b];
  }

  /** The handshake failed: the shim prints the guide's message and this text, then exits. */
  #refuse(h: HelloFrame, e: unknown): void {
    const code = e instanceof JdlsError ? e.code : 'SYSTEM';
    const text = (code === 'BAD_JDLS' ? (e as Error).message : `JDLS='${h.options}': ${(e as Error).message}`).slice(0, 1000);
    this.#opts.log.error({ pid: h.pid, program: h.program, code }, text);
    this.#send({ type: 'ERROR', requestId: 0, code: 'SYSTEM', text });
    this.#end();
  }

  #dispatch(c: JdlsClient, f: ClientFrame): void {
    const id = f.requestId;
    const fail = (e: unknown): void => {
      if (c.failure && !(e instanceof JdlsError && e.code === 'ABORTED')) {
        // The server connection is gone: end the shim's socket (it exits).
        this.#end();
        return;
      }
      this.#send({ type: 'ERROR', requestId: id, code: wireCode(e), text: (e as Error).message.slice(0, 1000) });
    };
    switch (f.type) {
      case 'LOCK':
        this.#lock(c, f).catch(fail);
        return;
      case 'UNLOCK':
        c.unlock(f.file, f.key, f.offset ? { tid: f.tid, offset: true } : { tid: f.tid }).then((count) => this.#send({ type: 'RELEASED', requestId: id, count }), fail);
        return;
      case 'UNLOCK_FILE':
        c.unlockFile(f.file, { tid: f.tid }).then((count) => this.#send({ type: 'RELEASED', requestId: id, count }), fail);
        return;
      case 'UNLOCK_ALL':
        c.unlockAll({ tid: f.tid, allThreads: f.allThreads }).then((count) => this.#send({ type: 'RELEASED', requestId: id, count }), fail);
        return;
      case 'STATUS':
        c.status(f.file, f.key, { tid: f.tid, ...(f.probe ? { probe: f.probe } : {}), ...(f.offset ? { offset: true } : {}) }).then(
          (st) => this.#send({
            type: 'STATUS_RESULT', requestId: id, code: st.code, ...(st.holder ? { holder: st.holder } : {}), ...(this.#tokens ? { token: st.token ?? 0n } : {}),
          }),
          fail,
        );
        return;
      case 'CANCEL': {
        const w = this.#waiting.get(f.target);
        if (w) w.abort();
        this.#send({ type: 'RELEASED', requestId: id, count: w ? 1 : 0 });
        return;
      }
      case 'TEST':
        c.test(f.text).then((text) => this.#send({ type: 'TEST_RESULT', requestId: id, text }), fail);
        return;
      case 'PING':
        this.#send({ type: 'PONG', requestId: id });
        return;
      case 'RANGE_LOCK':
        this.#rangeLock(c, f).catch(fail);
        return;
      case 'RANGE_UNLOCK':
        c.rangeUnlock(f.file, f.start, f.length, { tid: f.tid, space: f.space }).then((count) => this.#send({ type: 'RELEASED', requestId: id, count }), fail);
        return;
      case 'RANGE_TEST':
        c.rangeTest(f.file, f.start, f.length, f.mode, { tid: f.tid }).then(
          (conflict) => this.#send(conflict ? { type: 'RANGE_RESULT', requestId: id, conflict } : { type: 'RANGE_RESULT', requestId: id }),
          fail,
        );
        return;
      case 'INFO':
        // The process's file names and its idle moment go to its client,
        // which sends them on, coalesced, to every server that takes INFO
        // (the servers keep their own view of its locks and waits and their
        // own statistics). A payload that is not a ClientInfo is ignored.
        if ('info' in f) {
          for (const file of f.info.files) if (file.name !== undefined) c.declareFile(file.name, { inode: BigInt(file.inode), dev: BigInt(file.dev) });
          if (f.info.moment === 'idle') c.idle();
        }
        return;
      case 'INFO_QUERY':
        this.#send({ type: 'ERROR', requestId: id, code: 'NOT_SUPPORTED', text: 'INFO_QUERY through the broker' });
        return;
      case 'PROMOTE':
        // Promotion is the broker's client's own business (src/client/resilient.ts), never the process's.
        this.#send({ type: 'ERROR', requestId: id, code: 'NOT_SUPPORTED', text: 'PROMOTE through the broker' });
        return;
      case 'HELLO':
      case 'AUTH':
        this.#send({ type: 'ERROR', requestId: 0, code: 'PROTOCOL', text: `a ${f.type === 'HELLO' ? 'second HELLO' : 'AUTH frame (the broker authenticates for the process)'}` });
        this.#end();
    }
  }

  async #lock(c: JdlsClient, f: LockFrame): Promise<void> {
    const ac = new AbortController();
    this.#waiting.set(f.requestId, ac);
    try {
      const r = await c.lock(f.file, f.key, f.mode, {
        nowait: f.nowait, tid: f.tid, signal: ac.signal,
        onWaiting: (w) => this.#send({ type: 'WAITING', requestId: f.requestId, holder: w.holder }),
        ...(f.breakDeadlock ? { breakDeadlock: true } : {}), ...(f.fence === undefined ? {} : { fence: f.fence }),
        ...(f.offset ? { offset: true } : {}),
      });
      if (!r.granted) return this.#send({ type: 'LOCKED', requestId: f.requestId, holder: r.holder });
      this.#send(this.#tokens ? { type: 'GRANTED', requestId: f.requestId, token: r.token ?? 0n } : { type: 'GRANTED', requestId: f.requestId });
    } finally {
      this.#waiting.delete(f.requestId);
    }
  }

  async #rangeLock(c: JdlsClient, f: RangeLockFrame): Promise<void> {
    const ac = new AbortController();
    this.#waiting.set(f.requestId, ac);
    try {
      const r = await c.rangeLock(f.file, f.start, f.length, f.mode, { nowait: f.nowait, tid: f.tid, signal: ac.signal, space: f.space });
      this.#send(r.granted ? { type: 'GRANTED', requestId: f.requestId } : { type: 'LOCKED', requestId: f.requestId, holder: r.holder });
    } finally {
      this.#waiting.delete(f.requestId);
    }
  }

  /** Close both sides (idempotent): the server releases this process's locks. */
  #end(): void {
    if (this.#ended) return;
    this.#ended = true;
    for (const ac of this.#waiting.values()) ac.abort();
    // end(), not destroy(): a last ERROR frame must still reach the shim (it
    // prints its text). A peer that never reads is cut off after a second.
    this.#sock.end();
    setTimeout(() => this.#sock.destroy(), 1000).unref();
    const c = this.#client;
    const done = async (): Promise<void> => {
      await this.#connecting?.catch(() => undefined);
      await (c ?? this.#client)?.close();
    };
    done().catch(() => undefined).finally(() => this.#opts.onEnd());
  }
}
