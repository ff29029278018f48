// wire-client.ts - a minimal protocol client for the server tests, built on
// the codec only (the real client library, src/client/, is separate).
//
// Owns: one TCP connection, HELLO/WELCOME, request ids, matching final
// answers to requests and collecting interim WAITING frames. Does not own:
// retries, keep-alive pings (tests send PING themselves), failover.
import net from 'node:net';
import { encode, FrameReader } from '../../src/protocol/codec.js';
import { PROTO } from '../../src/protocol/constants.js';
import type { ClientFrame, ServerFrame, WelcomeFrame, WaitingFrame, ErrorFrame, HelloFrame, WireMode } from '../../src/protocol/frames.js';

/** jdls-locker's default file (test/fixtures/locker.c). */
export const FILE = { inode: 4242n, dev: 7n };

type Req = ClientFrame extends infer F ? (F extends { requestId: number } ? F : never) : never;
/** A request without its id (the client assigns it). */
export type RequestBody = Req extends infer F ? (F extends ClientFrame ? Omit<F, 'requestId'> : never) : never;

interface Pending {
  resolve: (f: ServerFrame) => void;
  reject: (e: Error) => void;
  onInterim?: (f: WaitingFrame) => void;
}

export interface LockOpts {
  nowait?: boolean;
  noInterim?: boolean;
  tid?: number;
  file?: { inode: bigint; dev: bigint };
  onInterim?: (f: WaitingFrame) => void;
  /** the request id to use (default: the next one) */
  requestId?: number;
  /** flag BREAK_DEADLOCK */
  breakDeadlock?: boolean;
  /** flag FENCE with this token */
  fence?: bigint;
  /** flag MIRROR (SERVER2: repeats the primary's grant) */
  mirror?: boolean;
}

export class WireClient {
  readonly sock: net.Socket;
  welcome!: WelcomeFrame;
  /** a connection-level ERROR (request id 0) the server sent, if any */
  connectionError: ErrorFrame | undefined;
  readonly closed: Promise<void>;
  #reader = FrameReader.forClient();
  #pending = new Map<number, Pending>();
  #next = 1;
  #welcomeWaiter: Pending | undefined;
  #isClosed = false;

  private constructor(sock: net.Socket) {
    this.sock = sock;
    this.closed = new Promise((resolve) => sock.on('close', () => {
      this.#isClosed = true;
      const err = new Error(`connection closed${this.connectionError ? `: ${this.connectionError.code} ${this.connectionError.text}` : ''}`);
      for (const p of this.#pending.values()) p.reject(err);
      this.#pending.clear();
      this.#welcomeWaiter?.reject(err);
      resolve();
    }));
    sock.on('error', () => {});
    sock.on('data', (chunk: Buffer) => {
      let frames: ServerFrame[];
      try {
        frames = this.#reader.push(chunk);
      } catch (e) {
        sock.destroy(e as Error);
        return;
      }
      for (const f of frames) this.#onFrame(f);
    });
  }

  get isClosed(): boolean {
    return this.#isClosed;
  }

  /** Connect without HELLO (for protocol tests). */
  static async raw(port: number, host = '127.0.0.1', localAddress?: string): Promise<WireClient> {
    const sock = net.connect({ port, host, ...(localAddress ? { localAddress } : {}) });
    await new Promise<void>((resolve, reject) => {
      sock.once('connect', resolve);
      sock.once('error', reject);
    });
    sock.setNoDelay(true);
    return new WireClient(sock);
  }

  /** Connect and say HELLO; resolves after WELCOME, rejects on ERROR or close. */
  static async connect(port: number, hello: Partial<Omit<HelloFrame, 'type' | 'requestId'>> = {}, host = '127.0.0.1', localAddress?: string): Promise<WireClient> {
    const c = await WireClient.raw(port, host, localAddress);
    await c.hello(hello);
    return c;
  }

  hello(h: Partial<Omit<HelloFrame, 'type' | 'requestId'>> = {}): Promise<WelcomeFrame> {
    const p = new Promise<ServerFrame>((resolve, reject) => (this.#welcomeWaiter = { resolve, reject }));
    this.sendFrame({
      type: 'HELLO', requestId: 0, minVersion: h.minVersion ?? PROTO.MIN_VERSION, maxVersion: h.maxVersion ?? PROTO.VERSION,
      port: h.port ?? 77, pid: h.pid ?? process.pid, keepaliveMs: h.keepaliveMs ?? 0, host: h.host ?? 'testhost',
      program: h.program ?? 'wire-client', options: h.options ?? '', ...(h.tokens ? { tokens: true as const } : {}), ...(h.info ? { info: true as const } : {}),
      ...(h.pair ? { pair: true as const } : {}),
    });
    return p.then((f) => {
      if (f.type !== 'WELCOME') throw new Error(`expected WELCOME, got ${f.type}${f.type === 'ERROR' ? ` ${f.code} ${f.text}` : ''}`);
      this.welcome = f;
      return f;
    });
  }

  #onFrame(f: ServerFrame): void {
    if (f.type === 'WELCOME' || (f.requestId === 0 && this.#welcomeWaiter)) {
      const w = this.#welcomeWaiter;
      this.#welcomeWaiter = undefined;
      if (f.type === 'ERROR') this.connectionError = f;
      w?.resolve(f);
      return;
    }
    if (f.type === 'ERROR' && f.requestId === 0) {
      this.connectionError = f;
      return;
    }
    const p = this.#pending.get(f.requestId);
    if (!p) return;
    if (f.type === 'WAITING') {
      p.onInterim?.(f);
      return;
    }
    this.#pending.delete(f.requestId);
    p.resolve(f);
  }

  sendFrame(f: ClientFrame): void {
    this.sock.write(encode(f));
  }

  sendBytes(b: Buffer): void {
    this.sock.write(b);
  }

  nextId(): number {
    return this.#next++;
  }

  /** Send a request; resolves with its final answer. */
  request(body: RequestBody, opts: { requestId?: number; onInterim?: (f: WaitingFrame) => void } = {}): Promise<ServerFrame> {
    const requestId = opts.requestId ?? this.nextId();
    if (this.#isClosed) return Promise.reject(new Error('connection closed'));
    const p = new Promise<ServerFrame>((resolve, reject) => {
      this.#pending.set(requestId, { resolve, reject, ...(opts.onInterim ? { onInterim: opts.onInterim } : {}) });
    });
    this.sendFrame({ ...body, requestId } as ClientFrame);
    return p;
  }

  lock(key: string | Buffer, mode: WireMode = 'write', o: LockOpts = {}): Promise<ServerFrame> {
    return this.request(
      {
        type: 'LOCK', nowait: o.nowait ?? false, noInterim: o.noInterim ?? false, osLocks: false, mode, tid: o.tid ?? 1, file: o.file ?? FILE, key: Buffer.from(key),
        ...(o.breakDeadlock ? { breakDeadlock: true as const } : {}), ...(o.fence === undefined ? {} : { fence: o.fence }),
        ...(o.mirror ? { mirror: true as const } : {}),
      },
      { ...(o.requestId !== undefined ? { requestId: o.requestId } : {}), ...(o.onInterim ? { onInterim: o.onInterim } : {}) },
    );
  }

  unlock(key: string | Buffer, o: { tid?: number; file?: { inode: bigint; dev: bigint } } = {}): Promise<ServerFrame> {
    return this.request({ type: 'UNLOCK', tid: o.tid ?? 1, file: o.file ?? FILE, key: Buffer.from(key) });
  }

  status(key: string | Buffer, tid = 1): Promise<ServerFrame> {
    return this.request({ type: 'STATUS', tid, file: FILE, key: Buffer.from(key) });
  }

  ping(): Promise<ServerFrame> {
    return this.request({ type: 'PING' });
  }

  close(): void {
    this.sock.destroy();
  }
}

/** The final answer's type, or throws with the frame if it is not `want`. */
export function expectType<T extends ServerFrame['type']>(f: ServerFrame, want: T): Extract<ServerFrame, { type: T }> {
  if (f.type !== want) throw new Error(`expected ${want}, got ${JSON.stringify(f, (_k, v: unknown) => (typeof v === 'bigint' ? String(v) : v))}`);
  return f as Extract<ServerFrame, { type: T }>;
}

/**
 * Every frame the server sends on `c` from now on, in order, decoded by a
 * second reader on the same bytes (WireClient's own consumes them too).
 */
export function recordFrames(c: WireClient): ServerFrame[] {
  const seen: ServerFrame[] = [];
  const r = FrameReader.forClient();
  c.sock.on('data', (d: Buffer) => {
    try { seen.push(...r.push(d)); } catch { /* the test asserts on what arrived */ }
  });
  return seen;
}
