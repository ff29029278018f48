// fake-server.ts - a small lock server for client tests, built on the codec,
// running in the test's own process.
//
// Owns: a TCP listener on 127.0.0.1 (a free port), the HELLO/WELCOME
// handshake, and a toy lock model (exclusive WRITE, shared READ, FIFO waiters,
// WAITING interim frames every interimMs unless NO_INTERIM, release on
// disconnect) so that lock/unlock/status behave plausibly. Each test scripts
// deviations: `script` sees every request first and may answer it itself
// (return true), `silent` stops all answers (a hung server), `sendRaw` writes
// garbage, `closeAll` drops every connection. Everything is closed by
// close(), which tests register with t.teardown.
import net from 'node:net';
import { encode, FrameReader } from '../../src/protocol/codec.js';
import type { ClientFrame, ServerFrame, HelloFrame, LockFrame, WireHolder, WelcomeFrame } from '../../src/protocol/frames.js';

export interface FakeLock {
  conn: FakeConn;
  tid: number;
  mode: 'read' | 'write';
}

interface Waiter {
  conn: FakeConn;
  frame: LockFrame;
  timer: NodeJS.Timeout | undefined;
}

export class FakeConn {
  readonly socket: net.Socket;
  hello: HelloFrame | undefined;
  /** every request received, in order */
  readonly frames: ClientFrame[] = [];
  readonly #server: FakeServer;

  constructor(server: FakeServer, socket: net.Socket) {
    this.#server = server;
    this.socket = socket;
  }

  send(f: ServerFrame): void {
    if (!this.socket.destroyed) this.socket.write(encode(f));
  }

  sendRaw(b: Buffer): void {
    if (!this.socket.destroyed) this.socket.write(b);
  }

  get addr(): string {
    return (this.socket.remoteAddress ?? '127.0.0.1').replace(/^::ffff:/, '');
  }

  holder(tid: number, mode: 'read' | 'write'): WireHolder {
    return { mode, port: this.hello?.port ?? 0, pid: process.pid, ownerPid: this.hello?.pid ?? 0, ownerTid: tid, addr: this.addr };
  }

  get server(): FakeServer {
    return this.#server;
  }
}

export interface FakeServerOptions {
  welcome?: Partial<Omit<WelcomeFrame, 'type' | 'requestId'>>;
  /** answer HELLO yourself (return true) instead of WELCOME */
  onHello?: (hello: HelloFrame, conn: FakeConn) => boolean;
}

const keyOf = (f: { file: { inode: bigint; dev: bigint }; key: Buffer }): string => `${f.file.inode}/${f.file.dev}/${f.key.toString('hex')}`;

export class FakeServer {
  readonly #srv: net.Server;
  readonly conns: FakeConn[] = [];
  readonly locks = new Map<string, FakeLock[]>();
  readonly #waiters = new Map<string, Waiter[]>();
  readonly #opts: FakeServerOptions;
  /** sees every request first; return true if it answered (or deliberately ignored) it */
  script: ((f: ClientFrame, conn: FakeConn) => boolean) | undefined;
  /** a hung server: nothing is answered, not even PING */
  silent = false;
  port = 0;
  #connWaiters: ((c: FakeConn) => void)[] = [];

  private constructor(opts: FakeServerOptions) {
    this.#opts = opts;
    this.#srv = net.createServer((s) => this.#accept(s));
  }

  static async start(opts: FakeServerOptions = {}): Promise<FakeServer> {
    const fs = new FakeServer(opts);
    await new Promise<void>((resolve, reject) => {
      fs.#srv.once('error', reject);
      fs.#srv.listen(0, '127.0.0.1', () => resolve());
    });
    fs.port = (fs.#srv.address() as net.AddressInfo).port;
    return fs;
  }

  get jdls(): string {
    return `SERVER=127.0.0.1,${this.port}`;
  }

  /** resolves with the next connection that completes HELLO (or the n-th overall) */
  nextConn(timeoutMs = 3000): Promise<FakeConn> {
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error('no connection')), timeoutMs);
      this.#connWaiters.push((c) => {
        clearTimeout(t);
        resolve(c);
      });
    });
  }

  /** the requests of one type all connections received */
  received(type: ClientFrame['type']): ClientFrame[] {
    return this.conns.flatMap((c) => c.frames.filter((f) => f.type === type));
  }

  /** Wait (bounded) until pred holds; polls every 5 ms. */
  async until(pred: () => boolean, timeoutMs = 3000, what = 'condition'): Promise<void> {
    const end = Date.now() + timeoutMs;
    while (!pred()) {
      if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 5));
    }
  }

  closeAll(): void {
    for (const c of this.conns) c.socket.destroy();
  }

  async close(): Promise<void> {
    for (const ws of this.#waiters.values()) for (const w of ws) clearInterval(w.timer);
    this.#waiters.clear();
    this.closeAll();
    await new Promise<void>((resolve) => this.#srv.close(() => resolve()));
  }

  // ---- the toy lock model --------------------------------------------------

  #holders(k: string): FakeLock[] {
    return this.locks.get(k) ?? [];
  }

  #conflict(k: string, conn: FakeConn, tid: number, mode: 'read' | 'write'): FakeLock | undefined {
    return this.#holders(k).find((l) => !(l.conn === conn && l.tid === tid) && (mode === 'write' || l.mode === 'write'));
  }

  #take(k: string, conn: FakeConn, tid: number, mode: 'read' | 'write'): void {
    const hs = this.#holders(k).filter((l) => !(l.conn === conn && l.tid === tid));
    hs.push({ conn, tid, mode });
    this.locks.set(k, hs);
  }

  #release(pred: (k: string, l: FakeLock) => boolean): number {
    let n = 0;
    const touched: string[] = [];
    for (const [k, hs] of this.locks) {
      const keep = hs.filter((l) => !pred(k, l));
      n += hs.length - keep.length;
      if (keep.length !== hs.length) touched.push(k);
      if (keep.length) this.locks.set(k, keep);
      else this.locks.delete(k);
    }
    for (const k of touched) this.#grantWaiters(k);
    return n;
  }

  #grantWaiters(k: string): void {
    const ws = this.#waiters.get(k) ?? [];
    while (ws.length) {
      const w = ws[0];
      if (!w || this.#conflict(k, w.conn, w.frame.tid, w.frame.mode)) break;
      ws.shift();
      clearInterval(w.timer);
      this.#take(k, w.conn, w.frame.tid, w.frame.mode);
      w.conn.send({ type: 'GRANTED', requestId: w.frame.requestId });
    }
    if (!ws.length) this.#waiters.delete(k);
  }

  #removeWaiter(pred: (w: Waiter) => boolean): Waiter[] {
    const out: Waiter[] = [];
    for (const [k, ws] of this.#waiters) {
      const keep = ws.filter((w) => !pred(w));
      for (const w of ws) if (pred(w)) {
        clearInterval(w.timer);
        out.push(w);
      }
      if (keep.length) this.#waiters.set(k, keep);
      else this.#waiters.delete(k);
    }
    return out;
  }

  #interimMs(): number {
    return this.#opts.welcome?.interimMs ?? 5000;
  }

  #handle(f: ClientFrame, conn: FakeConn): void {
    switch (f.type) {
      case 'HELLO':
        return;
      case 'LOCK': {
        const k = keyOf(f);
        const c = this.#conflict(k, conn, f.tid, f.mode);
        if (!c) {
          this.#take(k, conn, f.tid, f.mode);
          conn.send({ type: 'GRANTED', requestId: f.requestId });
        } else if (f.nowait) {
          conn.send({ type: 'LOCKED', requestId: f.requestId, holder: c.conn.holder(c.tid, c.mode) });
        } else {
          const w: Waiter = { conn, frame: f, timer: undefined };
          if (!f.noInterim) {
            w.timer = setInterval(() => {
              const h = this.#conflict(k, conn, f.tid, f.mode);
              if (h) conn.send({ type: 'WAITING', requestId: f.requestId, holder: h.conn.holder(h.tid, h.mode) });
            }, this.#interimMs());
          }
          const ws = this.#waiters.get(k) ?? [];
          ws.push(w);
          this.#waiters.set(k, ws);
        }
        return;
      }
      case 'UNLOCK': {
        const k = keyOf(f);
        conn.send({ type: 'RELEASED', requestId: f.requestId, count: this.#release((kk, l) => kk === k && l.conn === conn && l.tid === f.tid) });
        return;
      }
      case 'UNLOCK_FILE': {
        const prefix = `${f.file.inode}/${f.file.dev}/`;
        conn.send({ type: 'RELEASED', requestId: f.requestId, count: this.#release((kk, l) => kk.startsWith(prefix) && l.conn === conn && l.tid === f.tid) });
        return;
      }
      case 'UNLOCK_ALL':
        conn.send({ type: 'RELEASED', requestId: f.requestId, count: this.#release((_k, l) => l.conn === conn && (f.allThreads || l.tid === f.tid)) });
        return;
      case 'STATUS': {
        const hs = this.#holders(keyOf(f));
        const mine = hs.find((l) => l.conn === conn && l.tid === f.tid);
        const other = hs.find((l) => l !== mine);
        if (mine) conn.send({ type: 'STATUS_RESULT', requestId: f.requestId, code: mine.mode === 'write' ? 2 : 1 });
        else if (other) conn.send({ type: 'STATUS_RESULT', requestId: f.requestId, code: other.mode === 'write' ? -2 : -1, holder: other.conn.holder(other.tid, other.mode) });
        else conn.send({ type: 'STATUS_RESULT', requestId: f.requestId, code: 0 });
        return;
      }
      case 'CANCEL': {
        const gone = this.#removeWaiter((w) => w.conn === conn && w.frame.requestId === f.target);
        for (const w of gone) conn.send({ type: 'ERROR', requestId: w.frame.requestId, code: 'CANCELLED', text: 'lock request withdrawn' });
        conn.send({ type: 'RELEASED', requestId: f.requestId, count: gone.length });
        return;
      }
      case 'TEST':
        conn.send({ type: 'TEST_RESULT', requestId: f.requestId, text: f.text });
        return;
      case 'PING':
        conn.send({ type: 'PONG', requestId: f.requestId });
        return;
    }
  }

  #accept(socket: net.Socket): void {
    socket.setNoDelay(true);
    const conn = new FakeConn(this, socket);
    this.conns.push(conn);
    const reader = FrameReader.forServer();
    socket.on('error', () => undefined);
    socket.on('close', () => {
      this.#removeWaiter((w) => w.conn === conn);
      this.#release((_k, l) => l.conn === conn);
    });
    socket.on('data', (chunk: Buffer) => {
      let frames: ClientFrame[];
      try {
        frames = reader.push(chunk);
      } catch (e) {
        conn.send({ type: 'ERROR', requestId: 0, code: 'PROTOCOL', text: (e as Error).message });
        socket.destroy();
        return;
      }
      for (const f of frames) {
        if (f.type === 'HELLO') {
          conn.hello = f;
          if (this.#opts.onHello?.(f, conn)) continue;
          const w = this.#opts.welcome ?? {};
          conn.send({
            type: 'WELCOME', requestId: 0, version: w.version ?? 1, mechanism: w.mechanism ?? 'shm', serverPid: w.serverPid ?? process.pid,
            session: w.session ?? this.conns.length, interimMs: w.interimMs ?? 5000, keepaliveMs: w.keepaliveMs ?? 60000,
            clientAddr: w.clientAddr ?? conn.addr, server: w.server ?? 'fake',
            // WITNESS only to a HELLO with PAIR, as a real server (docs/protocol.md "Pairs")
            ...(w.witness && f.pair ? { witness: w.witness } : {}),
          });
          const waiters = this.#connWaiters;
          this.#connWaiters = [];
          for (const cb of waiters) cb(conn);
          continue;
        }
        conn.frames.push(f);
        if (this.silent) continue;
        if (this.script?.(f, conn)) continue;
        this.#handle(f, conn);
      }
    });
  }
}
