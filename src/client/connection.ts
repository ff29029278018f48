// connection.ts - one TCP connection from a client to one lock server.
//
// Owns: connecting, the HELLO/WELCOME handshake, request ids, the rule that
// every request gets exactly one final answer of the right type, interim
// WAITING frames, keep-alive PINGs, and the TIMEOUT rule that declares a
// silent server dead. When the connection fails (dead, closed, protocol
// error) every outstanding request rejects with that one error and the
// connection is never used again. Does not own: what a request means to the
// caller (client.ts) or what to do about a failure (client.ts, resilient.ts).
//
// The TIMEOUT rule (guide, "TIMEOUT=Seconds", "WAIT"): while an answer is due,
// the server may be silent for at most timeoutMs; any frame counts as speech
// (interim WAITING, PONG, an answer to another request). Silence is measured
// from the later of "the server last spoke" and "the oldest due request was
// sent", so a client idle for an hour does not time out its first request.
// With WAIT the server sends no interim frames, so a waiting lock is not
// "due" (it may wait for hours); the keep-alive PINGs, which are due, still
// catch a dead server.
import net from 'node:net';
import tls from 'node:tls';
import type { Logger } from 'pino';
import { JdlsError } from '../errors.js';
import { encode, FrameReader, ProtocolError } from '../protocol/codec.js';
import { PROTO } from '../protocol/constants.js';
import type { ClientFrame, ServerFrame, WelcomeFrame, WaitingFrame, HelloFrame, AuthFrame, InfoFrame } from '../protocol/frames.js';
import type { ClientInfo } from '../info/format.js';
import { connectError, errorFromWire } from './errors.js';
import { hostText, type JdlsServer } from './jdls-env.js';
import { ClientHandshake } from './handshake.js';

/** A request as the caller gives it: the connection picks the request id (INFO is no request: sendInfo). */
export type RequestFrame = Exclude<ClientFrame, HelloFrame | AuthFrame | InfoFrame> extends infer F
  ? F extends { requestId: number } ? Omit<F, 'requestId'> : never
  : never;

/** The final answers a request type accepts (ERROR is always accepted). */
const FINALS: Record<RequestFrame['type'], readonly ServerFrame['type'][]> = {
  LOCK: ['GRANTED', 'LOCKED'],
  UNLOCK: ['RELEASED'],
  UNLOCK_FILE: ['RELEASED'],
  UNLOCK_ALL: ['RELEASED'],
  STATUS: ['STATUS_RESULT'],
  CANCEL: ['RELEASED'],
  TEST: ['TEST_RESULT'],
  PING: ['PONG'],
  RANGE_LOCK: ['GRANTED', 'LOCKED'],
  RANGE_UNLOCK: ['RELEASED'],
  RANGE_TEST: ['RANGE_RESULT'],
  INFO_QUERY: ['INFO_RESULT'],
  PROMOTE: ['PROMOTED'],
};

/** An INFO_QUERY answer bigger than this is refused (a runaway server cannot make a client buffer without bound). */
export const MAX_INFO_ANSWER = 64 << 20;

export type FinalFrame = Exclude<ServerFrame, WelcomeFrame | WaitingFrame>;

export interface HelloInfo {
  /** jBASE port number of the client process */
  port: number;
  pid: number;
  host: string;
  program: string;
  /** the JDLS value as given */
  options: string;
}

export interface ConnectionOptions {
  /** TIMEOUT: the longest silence allowed while an answer is due */
  timeoutMs: number;
  /** bound on connect + handshake; default timeoutMs */
  connectTimeoutMs?: number;
  /** how often to PING when nothing else was sent (also capped at a third of the server's keepalive) */
  pingIntervalMs: number;
  hello: HelloInfo;
  logger: Logger;
  /** called once when the connection fails (not when close() ends it) */
  onFail?: (err: JdlsError) => void;
  /** the installation's shared secret (JDLS SECRET): authenticate, and insist that the server does */
  key?: Buffer | undefined;
  /** TLS to the server (JDLS TLS, TLSCA): options for tls.connect (ca, cert, key); the server name is the SERVER host */
  tls?: tls.ConnectionOptions | undefined;
  /** HELLO flag PAIR: this is one connection of a SERVER2 client (resilient.ts) */
  pair?: boolean;
}

export interface RequestOptions {
  /** whether the TIMEOUT rule applies while this request is outstanding (false: a waiting lock under WAIT) */
  timed: boolean;
  onInterim?: (f: WaitingFrame) => void;
}

interface Pending {
  type: RequestFrame['type'];
  nowait: boolean;
  timed: boolean;
  sentAt: number;
  onInterim: ((f: WaitingFrame) => void) | undefined;
  resolve: (f: FinalFrame) => void;
  reject: (e: JdlsError) => void;
  /** INFO_QUERY: the chunks of INFO_RESULT frames with MORE so far (the last one completes the answer) */
  chunks?: Buffer[];
  chunkBytes?: number;
}

export interface RequestHandle {
  id: number;
  /** the final answer (ERROR frames reject with their JdlsError) */
  answer: Promise<FinalFrame>;
}

type State = 'open' | 'failed' | 'closed';

/** See ServerConnection.#pending. Never timed, never settled. */
const PLACEHOLDER: Pending = {
  type: 'PING', nowait: false, timed: false, sentAt: 0, onInterim: undefined, resolve: () => undefined, reject: () => undefined,
};

/** The one read buffer of this process's connections (see ServerConnection.open). */
const READ_BUFFER = Buffer.allocUnsafe(64 * 1024);
/** Who takes a socket's bytes now: the handshake, then the connection, then nobody. */
interface ReadRoute {
  to: ((chunk: Buffer) => void) | undefined;
}

export class ServerConnection {
  readonly server: JdlsServer;
  readonly welcome: WelcomeFrame;
  /** WELCOME said TOKENS: every GRANTED and STATUS_RESULT carries a fencing token (0 = none) */
  readonly tokens: boolean;
  /** WELCOME said INFO: the server takes INFO and INFO_QUERY (an older one closes on either) */
  readonly info: boolean;
  /** HELLO had PAIR and the server took it: it knows MIRROR, PROMOTE and NOT_LEADER */
  readonly pair: boolean;
  /** WELCOME said WITNESS: the server runs with the pair's witness; its role and term at connect */
  readonly witness: { role: 'leader' | 'follower'; term: number } | undefined;
  /** 'host:port' (IPv6 in brackets), for messages */
  readonly label: string;
  readonly #socket: net.Socket;
  readonly #reader: FrameReader<ServerFrame>;
  readonly #opts: ConnectionOptions;
  readonly #log: Logger;
  /**
   * Outstanding requests by id, in send order. Id 0 (HELLO's, never a
   * request's) holds PLACEHOLDER for the life of the connection. Trap: V8
   * shrinks a Map whose entries fall below half its buckets, so a Map going
   * from 1 entry to 0 reallocated its table on every answer (~300 bytes per
   * request, the client's GC pace); it never drops below 1 now.
   */
  readonly #pending = new Map<number, Pending>([[0, PLACEHOLDER]]);
  readonly #pingEvery: number;
  readonly #tick: NodeJS.Timeout;
  #nextId = 1;
  #lastHeard: number;
  #lastSent: number;
  #state: State = 'open';
  #failure: JdlsError | undefined;
  readonly #closed: Promise<void>;

  private constructor(server: JdlsServer, socket: net.Socket, route: ReadRoute, reader: FrameReader<ServerFrame>, welcome: WelcomeFrame, opts: ConnectionOptions, pair: boolean) {
    this.server = server;
    this.label = `${hostText(server.host)}:${server.port}`;
    this.#socket = socket;
    this.#reader = reader;
    this.welcome = welcome;
    this.tokens = welcome.tokens === true;
    this.info = welcome.info === true;
    this.pair = pair;
    this.witness = welcome.witness;
    this.#opts = opts;
    this.#log = opts.logger;
    this.#lastHeard = this.#lastSent = Date.now();
    // The server drops a client silent for longer than its keepalive: PING
    // well inside it (a third leaves room for a late timer and a slow link).
    const serverBound = welcome.keepaliveMs > 0 ? welcome.keepaliveMs / 3 : Infinity;
    this.#pingEvery = Math.max(10, Math.min(opts.pingIntervalMs, serverBound));
    const tickMs = Math.min(1000, Math.max(5, Math.min(this.#pingEvery, opts.timeoutMs) / 4));
    this.#tick = setInterval(() => this.#onTick(), tickMs);
    this.#tick.unref(); // the socket keeps the process alive while open, not the timer
    this.#closed = new Promise((resolve) => socket.once('close', () => resolve()));
    route.to = (chunk: Buffer): void => this.#onData(chunk);
    socket.on('error', (e) => this.#fail(new JdlsError('SERVER_CLOSED', `lock server ${this.label}: connection lost: ${e.message}`, { cause: e })));
    socket.on('close', () => this.#fail(new JdlsError('SERVER_CLOSED', `lock server ${this.label} closed the connection`)));
  }

  /**
   * Connect and shake hands. Rejects with CONNECT_FAILED, VERSION, LIMIT,
   * PROTOCOL, SERVER_CLOSED, SERVER_DEAD, AUTH or TLS.
   *
   * HELLO asks for fencing tokens and offers INFO (info records). Trap: a
   * server older than a flag refuses an unknown HELLO flag as a protocol
   * error and closes; such a server is asked again without INFO, then
   * without TOKENS as well (then no tokens / no info on this connection),
   * so that a newer client still works with it.
   */
  static async open(server: JdlsServer, opts: ConnectionOptions): Promise<ServerConnection> {
    const label = `${hostText(server.host)}:${server.port}`;
    if (opts.pair) {
      try {
        return await ServerConnection.#openOnce(server, opts, { tokens: true, info: true, pair: true });
      } catch (e) {
        if (!flagsRefused(e)) throw e;
        opts.logger.warn({ server: label }, 'lock server older than pairs with a witness (HELLO PAIR refused): connected again without PAIR (no witness, no MIRROR)');
      }
    }
    try {
      return await ServerConnection.#openOnce(server, opts, { tokens: true, info: true });
    } catch (e) {
      if (!flagsRefused(e)) throw e;
    }
    try {
      const c = await ServerConnection.#openOnce(server, opts, { tokens: true, info: false });
      opts.logger.warn({ server: label }, 'lock server older than info records: connected again without offering INFO');
      return c;
    } catch (e) {
      if (!flagsRefused(e)) throw e;
      opts.logger.warn({ server: label }, 'lock server older than fencing tokens: connected again without them');
      return ServerConnection.#openOnce(server, opts, { tokens: false, info: false });
    }
  }

  static #openOnce(server: JdlsServer, opts: ConnectionOptions, offer: { tokens: boolean; info: boolean; pair?: boolean }): Promise<ServerConnection> {
    const tokens = offer.tokens || offer.info || offer.pair === true; // a HELLO flag an older server may refuse
    const label = `${hostText(server.host)}:${server.port}`;
    const log = opts.logger;
    return new Promise((resolve, reject) => {
      let connected = false;
      let settled = false;
      const reader = FrameReader.forClient();
      const h = opts.hello;
      let hs: ClientHandshake;
      try {
        hs = new ClientHandshake(label, {
          port: h.port, pid: h.pid, keepaliveMs: Math.round(opts.pingIntervalMs), host: h.host, program: h.program, options: h.options,
          // WELCOME says whether this server sends them (ServerConnection.tokens); see open() for older servers.
          ...(offer.tokens ? { tokens: true as const } : {}),
          // WELCOME says whether this server takes INFO (ServerConnection.info).
          ...(offer.info ? { info: true as const } : {}),
          // WELCOME says whether this server has a witness (ServerConnection.witness).
          ...(offer.pair ? { pair: true as const } : {}),
        }, opts.key);
      } catch (e) {
        reject(new JdlsError('BAD_ARGUMENT', `HELLO cannot be sent: ${(e as Error).message}`, { cause: e }));
        return;
      }
      // `onread`: reads land in one shared buffer and go straight to the
      // frame reader, without a Buffer allocated per read and the Readable
      // stream's push/'data' machinery - a third of a request's user time
      // on a busy client (docs/benchmarks.md). Safe to share: a read is
      // decoded synchronously and FrameReader copies what it keeps.
      const route: ReadRoute = { to: undefined };
      const onread = { buffer: READ_BUFFER, callback: (n: number, buf: Uint8Array): boolean => {
        route.to?.(Buffer.from(buf.buffer, buf.byteOffset, n));
        return true; // false would pause the socket
      } };
      // TLS: the bytes come decrypted through 'data' (a TLSSocket has no onread).
      const socket: net.Socket = opts.tls
        ? tls.connect({ ...opts.tls, host: server.host, port: server.port, ...(net.isIP(server.host) ? {} : { servername: server.host }) })
        : net.connect({ host: server.host, port: server.port, onread });
      if (opts.tls) socket.on('data', (chunk: Buffer) => route.to?.(chunk));
      const finish = (e: JdlsError | undefined, conn?: ServerConnection): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        if (e) route.to = undefined; // on success the connection took the route over
        socket.removeListener('error', onError);
        socket.removeListener('close', onClose);
        if (e) {
          socket.destroy();
          // An older server's refusal of TOKENS is not an error: open() asks again.
          if (!(tokens && flagsRefused(e))) log.error({ server: label, code: e.code }, e.message);
          reject(e);
        } else if (conn) resolve(conn);
      };
      const limit = opts.connectTimeoutMs ?? opts.timeoutMs;
      const timer = setTimeout(() => finish(connected
        ? new JdlsError('SERVER_DEAD', `lock server ${label}: no WELCOME within ${limit} ms`)
        : connectError(server.host, server.port, Object.assign(new Error('connect timed out'), { code: 'ETIMEDOUT' }))), limit);
      let tcpUp = false; // TLS: the TCP connection is up, the TLS handshake is not done
      socket.once('connect', () => { tcpUp = true; });
      const onError = (e: Error): void => finish(connected
        ? new JdlsError('SERVER_CLOSED', `lock server ${label}: connection lost during the handshake: ${e.message}`, { cause: e })
        : opts.tls && tcpUp
          ? new JdlsError('TLS', `lock server ${label}: TLS handshake failed: ${e.message}`, { cause: e })
          : connectError(server.host, server.port, e));
      const onClose = (): void => finish(new JdlsError('SERVER_CLOSED', `lock server ${label} closed the connection during the handshake`));
      const onData = (chunk: Buffer): void => {
        let frames: ServerFrame[];
        try {
          frames = reader.push(chunk);
        } catch (e) {
          finish(protocolError(label, e));
          return;
        }
        const out = hs.onFrames(frames, (b) => socket.write(b));
        if (!out) return;
        if ('error' in out) return finish(out.error);
        // Nothing may follow WELCOME before the client asked for something.
        if (out.after) return finish(new JdlsError('PROTOCOL', `lock server ${label}: ${out.after.type} frame before any request`));
        log.debug({ server: label, welcome: out.welcome }, 'connected');
        if (out.welcome.witness && !offer.pair) return finish(new JdlsError('PROTOCOL', `lock server ${label}: WELCOME with WITNESS, which HELLO (no PAIR) did not offer`));
        finish(undefined, new ServerConnection(server, socket, route, reader, out.welcome, opts, offer.pair === true));
      };
      socket.on('error', onError);
      socket.on('close', onClose);
      route.to = onData;
      socket.once(opts.tls ? 'secureConnect' : 'connect', () => {
        connected = true;
        socket.setNoDelay(true); // one small frame per request: Nagle would add 40 ms
        socket.write(hs.hello);
      });
    });
  }

  get state(): State {
    return this.#state;
  }

  /** why the connection failed, if it did */
  get failure(): JdlsError | undefined {
    return this.#failure;
  }

  get outstanding(): number {
    return this.#pending.size - 1; // the placeholder
  }

  /** Send one request. Throws (synchronously) CLOSED / the failure when the connection is not open. */
  request(frame: RequestFrame, opts: RequestOptions): RequestHandle {
    if (this.#state !== 'open') throw this.#failure ?? new JdlsError('CLOSED', `connection to lock server ${this.label} is closed`);
    const id = this.#allocId();
    let bytes: Buffer;
    try {
      // The id is given to the encoder: no copy of the frame per request.
      bytes = encode(frame as ClientFrame, PROTO.VERSION, id);
    } catch (e) {
      throw new JdlsError('BAD_ARGUMENT', `${frame.type}: ${(e as Error).message}`, { cause: e });
    }
    let resolve!: (f: FinalFrame) => void;
    let reject!: (e: JdlsError) => void;
    const answer = new Promise<FinalFrame>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    this.#pending.set(id, {
      type: frame.type, nowait: (frame.type === 'LOCK' || frame.type === 'RANGE_LOCK') && frame.nowait, timed: opts.timed,
      sentAt: Date.now(), onInterim: opts.onInterim, resolve, reject,
    });
    this.#write(bytes);
    if (this.#log.isLevelEnabled('debug')) this.#log.debug({ server: this.label, id, request: describe(frame) }, 'request');
    return { id, answer };
  }

  /**
   * Send INFO (never answered). Only to a server whose WELCOME said INFO:
   * false (nothing sent) otherwise, or when the connection is not open.
   * Throws BAD_ARGUMENT when the JSON cannot fit one frame (the caller
   * trims its file list).
   */
  sendInfo(info: ClientInfo): boolean {
    if (this.#state !== 'open' || !this.info) return false;
    let bytes: Buffer;
    try {
      bytes = encode({ type: 'INFO', requestId: 0, info });
    } catch (e) {
      throw new JdlsError('BAD_ARGUMENT', `INFO: ${(e as Error).message}`, { cause: e });
    }
    this.#write(bytes);
    return true;
  }

  /** Withdraw a waiting LOCK (sends CANCEL); its own answer arrives on the LOCK. No-op if already answered. */
  cancel(id: number): void {
    const p = this.#pending.get(id);
    if (!p || (p.type !== 'LOCK' && p.type !== 'RANGE_LOCK') || this.#state !== 'open') return;
    // The CANCEL's own answer (RELEASED 0/1) says only whether a wait was withdrawn; the LOCK gets its final answer.
    this.request({ type: 'CANCEL', target: id }, { timed: true }).answer.catch(() => undefined);
  }

  /** End the connection (the server releases this connection's locks); outstanding requests reject with CLOSED. */
  close(): Promise<void> {
    if (this.#state === 'open') {
      this.#state = 'closed';
      this.#failure = new JdlsError('CLOSED', `connection to lock server ${this.label} closed by the client`);
      clearInterval(this.#tick);
      this.#rejectAll(this.#failure);
      this.#socket.end(() => this.#socket.destroy());
      // bounded: a server that never answers our FIN does not hold close() up
      setTimeout(() => this.#socket.destroy(), 1000).unref();
    }
    return this.#closed;
  }

  // ---- internals ----------------------------------------------------------

  #allocId(): number {
    // Ids are unique among outstanding requests; wrap past 2^32-1, skip 0 (HELLO's).
    for (;;) {
      const id = this.#nextId;
      this.#nextId = id >= 0xffffffff ? 1 : id + 1;
      if (!this.#pending.has(id)) return id;
    }
  }

  #write(bytes: Buffer): void {
    this.#lastSent = Date.now();
    this.#socket.write(bytes);
  }

  /** When the oldest request the TIMEOUT rule applies to was sent (Infinity: none). */
  #oldestDue(): number {
    // Map order is send order: the first timed one is the oldest.
    for (const p of this.#pending.values()) if (p.timed) return p.sentAt;
    return Infinity;
  }

  #onTick(): void {
    if (this.#state !== 'open') return;
    const now = Date.now();
    const oldestDue = this.#oldestDue();
    if (oldestDue !== Infinity && now - Math.max(this.#lastHeard, oldestDue) > this.#opts.timeoutMs) {
      // Trap: after the event loop was blocked (a long synchronous job, GC,
      // an overloaded host), timers run before pending socket reads, so the
      // answer may already be waiting in the socket. Decide after the poll
      // phase (setImmediate), once any such data has been read.
      setImmediate(() => {
        if (this.#state !== 'open') return;
        const due = this.#oldestDue();
        if (due !== Infinity && Date.now() - Math.max(this.#lastHeard, due) > this.#opts.timeoutMs)
          this.#fail(new JdlsError('SERVER_DEAD', `lock server ${this.label} silent for more than ${this.#opts.timeoutMs} ms with an answer due; declared dead`));
      });
      return;
    }
    if (now - this.#lastSent >= this.#pingEvery) {
      this.request({ type: 'PING' }, { timed: true }).answer.catch(() => undefined);
    }
  }

  #onData(chunk: Buffer): void {
    if (this.#state !== 'open') return;
    this.#lastHeard = Date.now();
    let frames: ServerFrame[];
    try {
      frames = this.#reader.push(chunk);
    } catch (e) {
      this.#fail(protocolError(this.label, e));
      return;
    }
    for (const f of frames) {
      if (this.#state !== 'open') return;
      this.#onFrame(f);
    }
  }

  #onFrame(f: ServerFrame): void {
    if (f.type === 'WELCOME') return this.#fail(new JdlsError('PROTOCOL', `lock server ${this.label}: a second WELCOME`));
    if (f.type === 'ERROR' && f.requestId === 0) {
      // A connection-level error (PROTOCOL, SHUTDOWN, ...): the server closes.
      return this.#fail(errorFromWire(f.code, f.text, this.label));
    }
    const p = this.#pending.get(f.requestId);
    if (!p || p === PLACEHOLDER) return this.#fail(new JdlsError('PROTOCOL', `lock server ${this.label}: ${f.type} for request ${f.requestId}, which is not outstanding`));
    if (f.type === 'WAITING') {
      if (p.type !== 'LOCK' || p.nowait)
        return this.#fail(new JdlsError('PROTOCOL', `lock server ${this.label}: WAITING for a ${p.nowait ? 'NOWAIT LOCK' : p.type} request`));
      // WAITING on a NO_INTERIM (WAIT) request is tolerated: it is only news.
      this.#log.debug({ server: this.label, id: f.requestId, holder: f.holder }, 'waiting');
      p.onInterim?.(f);
      return;
    }
    if (f.type === 'INFO_RESULT' && p.type === 'INFO_QUERY') {
      // Chunks are joined as bytes: a cut may fall inside a UTF-8 character.
      const size = (p.chunkBytes ?? 0) + f.chunk.length;
      p.chunkBytes = size;
      if (size <= MAX_INFO_ANSWER) (p.chunks ??= []).push(f.chunk as Buffer);
      if (f.more) return; // more to come: the request stays outstanding (and the TIMEOUT rule sees the server speak)
      this.#pending.delete(f.requestId);
      if (size > MAX_INFO_ANSWER) return p.reject(new JdlsError('LIMIT', `lock server ${this.label}: INFO_RESULT of ${size} bytes exceeds ${MAX_INFO_ANSWER}`));
      p.resolve({ type: 'INFO_RESULT', requestId: f.requestId, more: false, chunk: Buffer.concat(p.chunks ?? []) });
      return;
    }
    this.#pending.delete(f.requestId);
    if (f.type === 'ERROR') {
      const e = errorFromWire(f.code, f.text, this.label);
      this.#log.debug({ server: this.label, id: f.requestId, code: f.code, text: f.text }, 'error answer');
      p.reject(e);
      if (f.code === 'PROTOCOL') this.#fail(e); // the server closes after a protocol error
      // A witnessed server that refuses as not the leader is, for a SERVER2
      // client, a failed primary (resilient.ts): never asked again.
      else if (f.code === 'NOT_LEADER' && this.witness) this.#fail(e);
      return;
    }
    if (!FINALS[p.type].includes(f.type) || (f.type === 'LOCKED' && !p.nowait)) {
      const e = new JdlsError('PROTOCOL', `lock server ${this.label}: ${f.type} is not an answer to ${p.type}${p.nowait ? ' NOWAIT' : ''}`);
      p.reject(e);
      return this.#fail(e);
    }
    // The codec reads the token by the body's length; whether one is due is the connection's (TOKENS in WELCOME).
    if ((f.type === 'GRANTED' || f.type === 'STATUS_RESULT') && (f.token !== undefined) !== this.tokens) {
      const e = new JdlsError('PROTOCOL', `lock server ${this.label}: ${f.type} ${this.tokens ? 'without a token, though WELCOME said TOKENS' : 'with a token, though TOKENS was not negotiated'}`);
      p.reject(e);
      return this.#fail(e);
    }
    if (this.#log.isLevelEnabled('debug')) this.#log.debug({ server: this.label, id: f.requestId, answer: f }, 'answer');
    p.resolve(f);
  }

  #rejectAll(e: JdlsError): void {
    const all = [...this.#pending.values()];
    this.#pending.clear();
    this.#pending.set(0, PLACEHOLDER);
    for (const p of all) if (p !== PLACEHOLDER) p.reject(e);
  }

  #fail(e: JdlsError): void {
    if (this.#state !== 'open') return;
    this.#state = 'failed';
    this.#failure = e;
    clearInterval(this.#tick);
    this.#socket.destroy();
    this.#log.error({ server: this.label, code: e.code, outstanding: this.#pending.size }, e.message);
    this.#rejectAll(e);
    this.#opts.onFail?.(e);
  }
}

function protocolError(label: string, e: unknown): JdlsError {
  if (e instanceof ProtocolError)
    return new JdlsError(e.fault.code === 'VERSION' ? 'VERSION' : 'PROTOCOL', `lock server ${label}: ${e.message}`, { cause: e });
  return new JdlsError('PROTOCOL', `lock server ${label}: ${(e as Error).message}`, { cause: e });
}

/** A request for the trace: keys as hex (they are bytes), bigints as text. */
function describe(f: RequestFrame): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(f)) {
    if (Buffer.isBuffer(v)) out[k] = v.toString('hex');
    else if (k === 'file' && v && typeof v === 'object') out[k] = { inode: String((v as { inode: bigint }).inode), dev: String((v as { dev: bigint }).dev) };
    else out[k] = v;
  }
  return out;
}

/** An older server's answer to a HELLO flag it does not know (TOKENS, INFO): ERROR PROTOCOL "HELLO: unknown flags 0x6" (the whole flags word). */
function flagsRefused(e: unknown): boolean {
  return e instanceof JdlsError && e.code === 'PROTOCOL' && /HELLO: unknown flags 0x[0-9a-f]+$/.test(e.message);
}
