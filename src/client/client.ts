// client.ts - JdlsClient: the remote lock API a Node-hosted runtime (and,
// later, the shim's broker) uses: connect per JDLS, lock / unlock / status /
// test, typed errors.
//
// Owns: turning calls into requests and answers into results, the JDLS
// options that shape requests (WAIT, OSLOCKS, TIMEOUT), cancellation, and the
// client's life: it is usable until close() or until its last server fails
// ('dead' event; every later call rejects with that failure). Does not own:
// the socket, request ids, keep-alive and the TIMEOUT clock (connection.ts),
// nor SERVER2 duplication and failover (resilient.ts).
import { EventEmitter } from 'node:events';
import fs from 'node:fs';
import os from 'node:os';
import type tls from 'node:tls';
import path from 'node:path';
import { threadId } from 'node:worker_threads';
import type { Logger } from 'pino';
import { JdlsError } from '../errors.js';
import type { WireHolder, WireMode, WaitingFrame, RangeSpace } from '../protocol/frames.js';
import { parseJdls, type JdlsConfig, type JdlsServer } from './jdls-env.js';
import { createClientLogger } from './logging.js';
import { clientKeyRule, readKeyFile } from '../secret.js';
import type { ServerConnection, ConnectionOptions, FinalFrame, RequestFrame, RequestOptions } from './connection.js';
import { SingleRouter, type Router, type Call } from './router.js';
import { ResilientRouter } from './resilient.js';
import type { InfoAnswer, InfoFilter } from '../info/reader.js';
import { INFO_FLUSH_MS, MAX_CLIENT_FILES, type ClientInfo, type InfoFile, type InfoMoment } from '../info/format.js';
import { infoEnabled } from '../info/writer.js';

/** File identity on a lock server: inode, and dev (-1 for files reached through a lock server: the default). */
export interface RemoteFile {
  inode: bigint | number;
  dev?: bigint | number;
}

export type RemoteKey = Buffer | string;

export interface ConnectOptions {
  /** jBASE port number of this process (JBCPORTNO); default: $JBCPORTNO if it is one number, else 0 */
  port?: number;
  /** program name shown by the server; default: the script's base name */
  program?: string;
  /** process id sent in HELLO; default process.pid */
  pid?: number;
  /** host name sent in HELLO; default os.hostname() */
  hostname?: string;
  /** overrides JDLS TIMEOUT (ms) */
  timeoutMs?: number;
  /** bound on connect + handshake (ms); default: the TIMEOUT */
  connectTimeoutMs?: number;
  /** how often to PING when idle (ms); default 10 000, and at most a third of the server's keepalive */
  pingIntervalMs?: number;
  /** a logger instead of the one JDLS VERBOSE/TRACE asks for */
  logger?: Logger;
  /** jbase_error_trace path, or false for none; default <JBCRELEASEDIR>/tmp/jbase_error_trace */
  errorTrace?: string | false;
  /** the installation's key file (as JDLS SECRET=file; overrides it); the key file rule applies (docs/client.md) */
  secretFile?: string;
  /** the key itself (bytes), instead of a file */
  secret?: Buffer;
  /** the user shown in this client's info records (default: the login name) */
  user?: string;
  /** false: send no INFO (no info record of this client on the servers); default true unless JDLS_INFO=0 */
  info?: boolean;
  /** TLS to the server (as JDLS TLS / TLSCA=file): true, or tls.connect options (ca, cert, key for a client certificate) */
  tls?: boolean | Pick<tls.ConnectionOptions, 'ca' | 'cert' | 'key' | 'rejectUnauthorized' | 'checkServerIdentity'>;
}

/** The key and TLS options of a connection, from the JDLS value and the options (options win). */
function credentials(config: JdlsConfig, opts: ConnectOptions): { key: Buffer | undefined; tls: tls.ConnectionOptions | undefined } {
  let key = opts.secret;
  const file = opts.secretFile ?? config.secret;
  if (!key && file) key = readKeyFile(file, clientKeyRule(opts.secretFile ? 'secretFile' : 'JDLS SECRET'));
  let t: tls.ConnectionOptions | undefined;
  if (opts.tls !== undefined && opts.tls !== false) t = opts.tls === true ? {} : { ...opts.tls };
  else if (opts.tls === undefined && config.tls) t = {};
  if (t && config.tlsCA && t.ca === undefined) {
    try {
      t.ca = fs.readFileSync(config.tlsCA);
    } catch (e) {
      throw new JdlsError('TLS', `JDLS TLSCA: cannot read ${config.tlsCA}: ${(e as Error).message}`);
    }
  }
  return { key, tls: t };
}

export interface RemoteLockOptions {
  /** the LOCKED clause: never wait; a conflict resolves { granted: false, holder } */
  nowait?: boolean;
  /** thread id of the owner; default: this worker thread's id (0 on the main thread) */
  tid?: number;
  /** withdraw a waiting request (CANCEL); rejects with ABORTED unless the grant won the race */
  signal?: AbortSignal;
  /** called on each interim WAITING frame (every interim period, unless WAIT) */
  onWaiting?: (info: WaitingInfo) => void;
  /**
   * Refuse rather than wait in a cycle of waiters: the lock rejects with
   * JdlsError DEADLOCK (nothing is held for it) when waiting would close one
   * (LOCK flag BREAK_DEADLOCK; docs/protocol.md, "Deadlocks"). Default false:
   * wait, as jBASE does; a cycle is then only reported by the server.
   */
  breakDeadlock?: boolean;
  /**
   * For a relay (the broker passing on a preloaded process's LOCK): the
   * token another server gave for this same grant (flag FENCE). The server
   * raises its token floor past it before locking. Not for applications:
   * SERVER2 mirroring sets it by itself.
   */
  fence?: bigint;
  /**
   * For a relay (the broker passing on a preloaded program's fcntl/lockf on
   * a jlock file): the key is the lowercase hex of the byte offset the
   * program locked (flag OFFSET); an OS-lock server locks that byte. Not
   * for applications: their keys are record keys.
   */
  offset?: boolean;
}

/**
 * A granted lock carries its fencing token when the server's mechanism gives
 * one (docs/protocol.md, "Fencing tokens"): it strictly increases per key,
 * so a resource guarded by the lock can refuse a writer with an older one.
 */
export type RemoteLockResult = { granted: true; token?: bigint } | { granted: false; holder: WireHolder };

/** A conflicting binary lock: its holder and range (length 0 = to infinity). */
export interface RangeConflict {
  holder: WireHolder;
  start: bigint;
  length: bigint;
}

export interface RemoteStatus {
  /** RECORDLOCKED: 3/2/1 this owner holds FILELOCK/WRITE/READ, 0 free, -1/-2/-3 another owner */
  code: number;
  holder?: WireHolder;
  /** code 1/2: the fencing token of this owner's lock, when the server's mechanism gives one */
  token?: bigint;
}

export interface WaitingInfo {
  file: { inode: bigint; dev: bigint };
  key: Buffer;
  mode: WireMode;
  holder: WireHolder;
  /** ms since the request was sent */
  waitedMs: number;
}

/** What the server said about itself in WELCOME. */
export interface ServerInfo {
  host: string;
  port: number;
  /** the lock-server process serving this client */
  pid: number;
  mechanism: 'shm' | 'os';
  session: number;
  interimMs: number;
  keepaliveMs: number;
  /** this client's address as the server sees it */
  clientAddr: string;
  /** the server's host name */
  name: string;
  /** the server sends fencing tokens (it answered HELLO's TOKENS) */
  tokens: boolean;
  /** the server takes INFO and INFO_QUERY (WELCOME flag INFO): queryInfo() works, and this client's info record is written there */
  info: boolean;
}

export interface JdlsClientEvents {
  waiting: [WaitingInfo];
  /** the last server failed: the client is unusable */
  dead: [JdlsError];
  /** resilience: a server failed and the client carries on without it */
  failover: [{ failed: JdlsServer; error: JdlsError; now: JdlsServer }];
  /** resilience: primary and secondary answered differently */
  mismatch: [{ request: string; primary: string; secondary: string }];
}

const DEFAULT_PING_MS = 10_000;

function defaultPort(): number {
  const p = process.env['JBCPORTNO'];
  return p !== undefined && /^\d+$/.test(p) ? Number(p) : 0;
}

const U64_MAX = 0xffffffffffffffffn;
const I64_MIN = -(1n << 63n);
const I64_MAX = (1n << 63n) - 1n;

/**
 * One-entry caches of the last file identity and key converted: a lock and
 * its release name the same ones, and BigInt conversion and range checks,
 * or UTF-8 encoding, allocate on every call (a remote request's allocation
 * is what sets the pace of its GC pauses: docs/benchmarks.md, hand-off).
 */
let lastFileIn: { inode: number | bigint; dev: number | bigint | undefined } = { inode: -1, dev: undefined };
let lastFileOut: { inode: bigint; dev: bigint } = { inode: 0n, dev: 0n };
let lastKeyIn = '';
let lastKeyOut: Buffer = Buffer.alloc(0);

function toFile(f: RemoteFile): { inode: bigint; dev: bigint } {
  if (f.inode === lastFileIn.inode && f.dev === lastFileIn.dev) return lastFileOut;
  const inode = BigInt(f.inode);
  const dev = BigInt(f.dev ?? -1);
  if (inode < 0n || inode > U64_MAX) throw new JdlsError('BAD_ARGUMENT', `inode ${inode} is not a u64`);
  if (dev < I64_MIN || dev > I64_MAX) throw new JdlsError('BAD_ARGUMENT', `dev ${dev} is not an i64`);
  lastFileIn = { inode: f.inode, dev: f.dev };
  lastFileOut = { inode, dev };
  return lastFileOut;
}

function toKey(k: RemoteKey): Buffer {
  if (typeof k === 'string' && k === lastKeyIn) return lastKeyOut;
  const key = typeof k === 'string' ? Buffer.from(k, 'utf8') : k;
  if (key.length > 512) throw new JdlsError('KEY_TOO_LONG', `key of ${key.length} bytes exceeds 512`);
  if (typeof k === 'string') {
    lastKeyIn = k;
    lastKeyOut = key;
  }
  return key;
}

function toTid(tid: number | undefined): number {
  const t = tid ?? threadId;
  if (!Number.isInteger(t) || t < 0 || t > 0xffffffff) throw new JdlsError('BAD_ARGUMENT', `tid ${t} is not a u32`);
  return t;
}

function abortError(): JdlsError {
  return new JdlsError('ABORTED', 'lock request aborted');
}

export class JdlsClient extends EventEmitter<JdlsClientEvents> {
  readonly config: JdlsConfig;
  readonly log: Logger;
  readonly #router: Router;
  #dead: JdlsError | undefined;
  #closing = false;
  /** INFO: what this client tells servers with flag INFO for its info record; undefined when off */
  #info: ClientInfoState | undefined;

  private constructor(config: JdlsConfig, log: Logger, router: Router, info: { user: string; program: string } | undefined) {
    super();
    this.config = config;
    this.log = log;
    this.#router = router;
    if (info) {
      this.#info = new ClientInfoState(info.user, info.program, (ci) => this.#sendInfo(ci));
      this.#info.moment('start');
    }
  }

  /**
   * Connect per a JDLS value (text or parsed). Rejects with BAD_JDLS,
   * CONNECT_FAILED, VERSION, LIMIT, PROTOCOL, SERVER_CLOSED or SERVER_DEAD.
   * With SERVER2 both servers must be reachable at the start (resilient mode);
   * see docs/client.md.
   */
  static async connect(jdls: JdlsConfig | string, opts: ConnectOptions = {}): Promise<JdlsClient> {
    const config = typeof jdls === 'string' ? parseJdls(jdls) : jdls;
    const log = opts.logger ?? createClientLogger(config, opts.errorTrace === undefined ? {} : { errorTrace: opts.errorTrace });
    const timeoutMs = opts.timeoutMs ?? config.timeoutMs;
    if (!(timeoutMs > 0)) throw new JdlsError('BAD_ARGUMENT', `timeoutMs must be positive; got ${timeoutMs}`);
    let client: JdlsClient | undefined;
    const cred = credentials(config, opts);
    const connOpts = (): ConnectionOptions => ({
      timeoutMs,
      key: cred.key,
      tls: cred.tls,
      ...(opts.connectTimeoutMs === undefined ? {} : { connectTimeoutMs: opts.connectTimeoutMs }),
      pingIntervalMs: opts.pingIntervalMs ?? DEFAULT_PING_MS,
      logger: log,
      hello: {
        port: opts.port ?? defaultPort(),
        pid: opts.pid ?? process.pid,
        host: opts.hostname ?? os.hostname(),
        program: opts.program ?? path.basename(process.argv[1] ?? process.argv0 ?? 'node'),
        options: config.raw,
      },
    });
    const events = {
      dead: (e: JdlsError): void => {
        if (client) client.#onDead(e);
      },
      failover: (info: JdlsClientEvents['failover'][0]): void => void client?.emit('failover', info),
      mismatch: (info: JdlsClientEvents['mismatch'][0]): void => void client?.emit('mismatch', info),
    };
    const primary = config.servers[0];
    if (!primary) throw new JdlsError('BAD_JDLS', 'no server configured');
    log.debug({ servers: config.servers, jdls: config.raw }, 'connecting');
    const router = config.servers.length > 1
      ? await ResilientRouter.open(config.servers, connOpts, log, events)
      : await SingleRouter.open(primary, connOpts, events);
    const program = opts.program ?? path.basename(process.argv[1] ?? process.argv0 ?? 'node');
    const info = opts.info ?? infoEnabled() ? { user: opts.user ?? loginName(), program } : undefined;
    client = new JdlsClient(config, log, router, info);
    return client;
  }

  /** The server now serving this client (the secondary after a failover). */
  get server(): ServerInfo {
    const c: ServerConnection = this.#router.primary;
    const w = c.welcome;
    return {
      host: c.server.host, port: c.server.port, pid: w.serverPid, mechanism: w.mechanism, session: w.session,
      interimMs: w.interimMs, keepaliveMs: w.keepaliveMs, clientAddr: w.clientAddr, name: w.server, tokens: c.tokens, info: c.info,
    };
  }

  /** Whether requests are still duplicated to a secondary. */
  get resilient(): boolean {
    return this.#router.resilient;
  }

  /** undefined while usable; the reason once closed or dead. */
  get failure(): JdlsError | undefined {
    return this.#dead;
  }

  /**
   * READU (write) / READL (read) on a server. Waits until granted unless
   * nowait; a waiting request resolves { granted: true, token? } when
   * granted (token: the grant's fencing token, when the server gives one).
   */
  lock(file: RemoteFile, key: RemoteKey, mode: WireMode, opts: RemoteLockOptions = {}): Promise<RemoteLockResult> {
    // Not an async function: its saved frame and the await's promises were
    // a fifth of a request's allocation (docs/benchmarks.md, hand-off).
    // Every failure is still a rejection, never a synchronous throw.
    let call: Call;
    const signal = opts.signal;
    try {
      if (mode !== 'read' && mode !== 'write') throw new JdlsError('BAD_ARGUMENT', `mode must be 'read' or 'write'; got ${String(mode)}`);
      const frame = {
        type: 'LOCK' as const, nowait: opts.nowait ?? false, noInterim: this.config.wait, osLocks: this.config.osLocks,
        mode, tid: toTid(opts.tid), file: toFile(file), key: toKey(key), ...(opts.breakDeadlock ? { breakDeadlock: true as const } : {}),
        ...(opts.fence === undefined ? {} : { fence: opts.fence }), ...(opts.offset ? { offset: true as const } : {}),
      };
      if (signal?.aborted) throw abortError();
      // Under WAIT no interim frames come: the TIMEOUT rule does not apply to a
      // waiting lock (guide: "the default acknowledgement timeout period is not used").
      const timed = frame.nowait || !this.config.wait;
      // Info on: the first WAITING is the "about to block" moment, a grant after it "unblocked" (a WAIT client gets no WAITING: its records show no wait).
      const info = this.#info;
      const track = info ? { sent: Date.now(), waited: false } : undefined;
      let onInterim: ((w: WaitingFrame) => void) | undefined;
      if (!this.config.wait) {
        const started = Date.now();
        onInterim = (w: WaitingFrame): void => {
          if (info && track) {
            if (track.waited) info.retried();
            else {
              track.waited = true;
              info.blocking();
            }
          }
          const wi: WaitingInfo = { file: { ...frame.file }, key: Buffer.from(frame.key), mode, holder: w.holder, waitedMs: Date.now() - started };
          opts.onWaiting?.(wi);
          this.emit('waiting', wi);
        };
      }
      call = this.#send(frame, { timed, onInterim });
      if (info && track) {
        const inner = call;
        call = {
          cancel: () => inner.cancel(),
          answer: inner.answer.then((f) => {
            info.settled(f.type === 'GRANTED', track.waited, Date.now() - track.sent);
            return f;
          }, (e: unknown) => {
            info.settled(false, track.waited, Date.now() - track.sent);
            throw e;
          }),
        };
      }
    } catch (e) {
      return Promise.reject(e instanceof Error ? e : new Error(String(e)));
    }
    if (!signal) return call.answer.then(lockResult);
    return lockWithSignal(call, signal);
  }

  /**
   * Name a file this process has open, for its info record on the servers
   * (LIST-OPEN-FILES; SHOW-ITEM-LOCKS shows lock files by it). The most
   * recent MAX_CLIENT_FILES are kept. Coalesced: sent within INFO_FLUSH_MS.
   * No-op against servers without flag INFO, or with info off.
   */
  declareFile(name: string, file: RemoteFile): void {
    const f = toFile(file);
    this.#info?.declare({ name, inode: f.inode.toString(), dev: f.dev.toString() });
  }

  /** The runtime is idle (waiting for input): the servers' records say so now. */
  idle(): void {
    this.#info?.moment('idle');
  }

  /** RELEASE f,key: resolves the number of locks freed (0 if none was held). */
  unlock(file: RemoteFile, key: RemoteKey, opts: { tid?: number; offset?: boolean } = {}): Promise<number> {
    return this.#count(() => ({ type: 'UNLOCK', tid: toTid(opts.tid), file: toFile(file), key: toKey(key), ...(opts.offset ? { offset: true as const } : {}) }));
  }

  /** RELEASE f: all locks of this owner on the file. */
  unlockFile(file: RemoteFile, opts: { tid?: number } = {}): Promise<number> {
    return this.#count(() => ({ type: 'UNLOCK_FILE', tid: toTid(opts.tid), file: toFile(file) }));
  }

  /** RELEASE: all locks of this owner (thread), or of every thread of this client with allThreads. */
  unlockAll(opts: { tid?: number; allThreads?: boolean } = {}): Promise<number> {
    return this.#count(() => ({ type: 'UNLOCK_ALL', tid: toTid(opts.tid), allThreads: opts.allThreads ?? false }));
  }

  /** RECORDLOCKED(f, key), with the holder when another owner holds it. With `probe` (F_GETLK): instead, the first lock of ANOTHER owner that blocks that mode (code -1/-2 with its holder, or 0), past this owner's own. */
  async status(file: RemoteFile, key: RemoteKey, opts: { tid?: number; probe?: WireMode; offset?: boolean } = {}): Promise<RemoteStatus> {
    // OSLOCKS: ask about the OS record locks, where this client's LOCKs go.
    const frame = {
      type: 'STATUS' as const, tid: toTid(opts.tid), file: toFile(file), key: toKey(key), ...(this.config.osLocks ? { osLocks: true } : {}),
      ...(opts.offset ? { offset: true as const } : {}),
    };
    const f = await this.#send(opts.probe ? { ...frame, probe: opts.probe } : frame, { timed: true }).answer;
    if (f.type !== 'STATUS_RESULT') throw unexpected(f);
    const st: RemoteStatus = f.holder ? { code: f.code, holder: f.holder } : { code: f.code };
    // 0 on the wire is "none" (no token from this mechanism, or not this owner's lock)
    if (f.token) st.token = f.token;
    return st;
  }

  /**
   * A binary (byte-range) lock on a server, POSIX semantics per owner (tid):
   * [start, start+length), length 0 = to infinity; a lock over part of a
   * held range converts that part. Resolves like lock(); no interim frames.
   * `space` 'exec' is jBASE LOCK n (start = n, length 1), 'file' FILELOCK
   * (start 0, length 0); see docs/protocol.md.
   */
  async rangeLock(file: RemoteFile, start: bigint, length: bigint, mode: WireMode, opts: Omit<RemoteLockOptions, 'onWaiting'> & { space?: RangeSpace } = {}): Promise<RemoteLockResult> {
    if (mode !== 'read' && mode !== 'write') throw new JdlsError('BAD_ARGUMENT', `mode must be 'read' or 'write'; got ${String(mode)}`);
    const frame = { type: 'RANGE_LOCK' as const, nowait: opts.nowait ?? false, space: opts.space ?? 'range', mode, tid: toTid(opts.tid), file: toFile(file), start, length };
    const signal = opts.signal;
    if (signal?.aborted) throw abortError();
    // A waiting range lock gets no interim frames: the TIMEOUT rule cannot apply to it.
    const call = this.#send(frame, { timed: frame.nowait });
    let aborted = false;
    const onAbort = (): void => {
      aborted = true;
      call.cancel();
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    try {
      const f = await call.answer;
      if (f.type === 'GRANTED') return { granted: true };
      if (f.type === 'LOCKED') return { granted: false, holder: f.holder };
      throw unexpected(f);
    } catch (e) {
      if (aborted && e instanceof JdlsError && e.code === 'CANCELLED') throw abortError();
      throw e;
    } finally {
      signal?.removeEventListener('abort', onAbort);
    }
  }

  /** POSIX unlock of [start, start+length) (0 = to infinity): resolves 1 if the owner held something there, else 0. */
  rangeUnlock(file: RemoteFile, start: bigint, length: bigint, opts: { tid?: number; space?: RangeSpace } = {}): Promise<number> {
    return this.#count(() => ({ type: 'RANGE_UNLOCK', space: opts.space ?? 'range', tid: toTid(opts.tid), file: toFile(file), start, length }));
  }

  /** F_GETLK on a server: the first lock of another owner that would block `mode` on the range, or undefined. */
  async rangeTest(file: RemoteFile, start: bigint, length: bigint, mode: WireMode, opts: { tid?: number } = {}): Promise<RangeConflict | undefined> {
    const f = await this.#send({ type: 'RANGE_TEST', mode, tid: toTid(opts.tid), file: toFile(file), start, length }, { timed: true }).answer;
    if (f.type !== 'RANGE_RESULT') throw unexpected(f);
    return f.conflict;
  }

  /** The `jdls -C` echo: the server sends the text back (primary only). */
  async test(text: string): Promise<string> {
    const f = await this.#send({ type: 'TEST', text }, { timed: true }, true).answer;
    if (f.type !== 'TEST_RESULT') throw unexpected(f);
    return f.text;
  }

  /** One PING/PONG round trip with the primary (keep-alive runs by itself; this is for checks). */
  async ping(): Promise<void> {
    await this.#send({ type: 'PING' }, { timed: true }, true).answer;
  }

  /**
   * The info records of the server's host (the primary's, with SERVER2):
   * what show-item-locks and list-open-files show there, filtered by port,
   * file or key (INFO_QUERY; docs/info-records.md). Rejects NOT_SUPPORTED
   * against a server older than info records (no flag INFO in WELCOME: it
   * would close the connection on the query), BAD_ARGUMENT for a filter the
   * server refuses.
   */
  async queryInfo(filter: InfoFilter = {}): Promise<InfoAnswer> {
    if (this.#dead) throw this.#dead;
    const c = this.#router.primary;
    if (!c.info) throw new JdlsError('NOT_SUPPORTED', `lock server ${c.label} does not answer info queries (it predates info records: no flag INFO in its WELCOME); run show-item-locks or list-open-files on its host instead`);
    const f = await this.#send({ type: 'INFO_QUERY', filter }, { timed: true }, true).answer;
    if (f.type !== 'INFO_RESULT') throw unexpected(f);
    return parseInfoAnswer(f.chunk, c.label);
  }

  /** Close the connection(s): the servers release this client's locks. Outstanding requests reject with CLOSED. */
  async close(): Promise<void> {
    this.#info?.stop();
    if (!this.#dead) this.#dead = new JdlsError('CLOSED', 'the JDLS client is closed');
    this.#closing = true;
    await this.#router.close();
  }

  // ---- internals ----------------------------------------------------------

  /** A release: `build` makes the frame (its argument errors become rejections, as everywhere). */
  #count(build: () => RequestFrame): Promise<number> {
    let call: Call;
    try {
      call = this.#send(build(), TIMED);
    } catch (e) {
      return Promise.reject(e instanceof Error ? e : new Error(String(e)));
    }
    return call.answer.then(releasedCount);
  }

  /** Send through the router, unless the client is closed or dead (then its reason). */
  #send(frame: RequestFrame, opts: RequestOptions, primaryOnly = false): Call {
    if (this.#dead) throw this.#dead;
    return primaryOnly ? this.#router.sendPrimaryOnly(frame, opts) : this.#router.send(frame, opts);
  }

  /** INFO to every connection whose server takes it (each writes its own record of this client). */
  #sendInfo(ci: ClientInfo): void {
    if (this.#dead) return;
    for (const c of this.#router.all) {
      try {
        c.sendInfo(ci);
      } catch (e) {
        // Too big for one frame: only the file list can be (names up to 1 KiB each); keep the newest half.
        if (ci.files.length > 1) this.#sendInfo({ ...ci, files: ci.files.slice(Math.floor(ci.files.length / 2)) });
        else this.log.debug({ err: e }, 'INFO not sent');
        return;
      }
    }
  }

  #onDead(e: JdlsError): void {
    if (this.#dead || this.#closing) return;
    this.#dead = e;
    this.log.error({ code: e.code }, `distributed lock client is dead: ${e.message}`);
    if (this.listenerCount('dead') > 0) this.emit('dead', e);
  }
}

const TIMED: RequestOptions = Object.freeze({ timed: true });

function loginName(): string {
  try {
    return os.userInfo().username;
  } catch {
    return process.env['USER'] ?? '';
  }
}

/**
 * What a remote client tells its servers in INFO: user, program, files it
 * declared, its statistics; and when (the guide's moments at once, other
 * changes coalesced to INFO_FLUSH_MS by one unref'd timer).
 */
class ClientInfoState {
  readonly #user: string;
  readonly #program: string;
  readonly #send: (ci: ClientInfo) => void;
  /** inode:dev -> file, oldest first (a re-declared file moves to the end) */
  #files = new Map<string, InfoFile>();
  #stats = { locks: 0, waits: 0, waitMs: 0, retries: 0 };
  #timer: NodeJS.Timeout | undefined;
  #last = 0;
  #stopped = false;

  constructor(user: string, program: string, send: (ci: ClientInfo) => void) {
    this.#user = user;
    this.#program = program;
    this.#send = send;
  }

  declare(f: InfoFile): void {
    const k = `${f.inode}:${f.dev}`;
    this.#files.delete(k);
    this.#files.set(k, f);
    if (this.#files.size > MAX_CLIENT_FILES) this.#files.delete(this.#files.keys().next().value as string);
    this.change();
  }

  blocking(): void {
    this.#stats.retries++;
    this.moment('block');
  }

  retried(): void {
    this.#stats.retries++;
    this.change();
  }

  settled(granted: boolean, waited: boolean, ms: number): void {
    if (granted) this.#stats.locks++;
    if (!waited) return this.change();
    this.#stats.waits++;
    this.#stats.waitMs += ms;
    this.moment('unblock');
  }

  change(): void {
    if (this.#stopped || this.#timer) return;
    const wait = this.#last + INFO_FLUSH_MS - Date.now();
    if (wait <= 0) return this.moment('change');
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.moment('change');
    }, wait);
    this.#timer.unref();
  }

  moment(m: InfoMoment): void {
    if (this.#stopped) return;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#last = Date.now();
    this.#send({ user: this.#user, program: this.#program, files: [...this.#files.values()], stats: { ...this.#stats }, moment: m });
  }

  stop(): void {
    this.#stopped = true;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
  }
}

function releasedCount(f: FinalFrame): number {
  if (f.type !== 'RELEASED') throw unexpected(f);
  return f.count;
}

/** A lock whose caller may abort it: CANCEL on abort; the server's CANCELLED is then the caller's ABORTED (as LockTable.lock). */
async function lockWithSignal(call: Call, signal: AbortSignal): Promise<RemoteLockResult> {
  let aborted = false;
  const onAbort = (): void => {
    aborted = true;
    call.cancel();
  };
  signal.addEventListener('abort', onAbort, { once: true });
  try {
    return lockResult(await call.answer);
  } catch (e) {
    if (aborted && e instanceof JdlsError && e.code === 'CANCELLED') throw abortError();
    throw e;
  } finally {
    signal.removeEventListener('abort', onAbort);
  }
}

function lockResult(f: FinalFrame): RemoteLockResult {
  // token 0 on the wire: the mechanism gives none (OS locks)
  if (f.type === 'GRANTED') return f.token ? { granted: true, token: f.token } : GRANTED;
  if (f.type === 'LOCKED') return { granted: false, holder: f.holder };
  throw unexpected(f);
}

const GRANTED: RemoteLockResult = Object.freeze({ granted: true });

/** INFO_RESULT's joined text as an InfoAnswer (its records were checked by the server's reader; the outline is checked here). */
function parseInfoAnswer(chunk: Buffer | string, label: string): InfoAnswer {
  let v: unknown;
  try {
    v = JSON.parse(Buffer.isBuffer(chunk) ? chunk.toString('utf8') : chunk);
  } catch (e) {
    throw new JdlsError('PROTOCOL', `lock server ${label}: INFO_RESULT is not JSON: ${(e as Error).message}`);
  }
  const o = v as Partial<Record<keyof InfoAnswer, unknown>> | null;
  if (!o || typeof o !== 'object' || typeof o.host !== 'string' || typeof o.dir !== 'string' || !Array.isArray(o.records) || !Array.isArray(o.skipped) || !Array.isArray(o.duplicates))
    throw new JdlsError('PROTOCOL', `lock server ${label}: INFO_RESULT is not an info answer (host, dir, records, skipped, duplicates)`);
  return o as InfoAnswer;
}

function unexpected(f: FinalFrame): JdlsError {
  return new JdlsError('PROTOCOL', `unexpected answer ${f.type}`);
}
