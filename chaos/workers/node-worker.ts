// node-worker.ts - the chaos suite's Node workload client: one process that
// locks keys through the jdls library (the shm table directly, or a lock
// server through JdlsClient), read-modify-writes the guarded value of each
// key in the store under its lock, and writes its ordered history.
//
//   node dist/chaos/workers/node-worker.js '<json NodeWorkerSpec>'
//
// Owns: the seeded choice of operations (kind, key, wait style, hold time),
// the history of one process incarnation (<runDir>/hist/<id>.jsonl), and
// how the process reacts to its signals (SIGUSR2: stop itself in the next
// hold; SIGTERM: finish the op and exit). Does not own: the meaning of the
// history (checker.ts), restarting it (the runner), faults (nemesis).
//
// Environment: remote paths connect per JDLS (SERVER=, SERVER2= for
// lib-pair, OSLOCKS for lib-oslocks); lib-direct opens the table of
// spec.releaseDir. All lock the record file (inode 4242, dev 7) with the
// key's name (HOT0, COLD3, ...); history and store keys are
// "<family>:<name>". lib-direct needs a table (not the oslock config).
//
// Exit codes: 0 normal end (SIGTERM, maxOps, or a seeded "exit holding"),
// 2 bad spec, 3 the lock connection (or the direct table) is gone, or the
// first connect failed - the runner starts a new incarnation, 4 the store
// failed, 5 a bug, 6 like 3 but the client refused to split (SPLIT_REFUSED:
// a witnessed pair's client lost its primary and the witness did not make
// the secondary the primary - the runner records it and starts a new one). Every exit but 3 after a lost connection logs 'exit'.
//
// Waits that may close a cycle (an upgrade; the second key of a pair) ask
// for breakDeadlock where the mechanism detects cycles (the shm table), and
// are bounded (timeout:2000) where it does not (OS file locks), so that no
// cycle hangs the workload.
import fs from 'node:fs';
import path from 'node:path';
import { JdlsError } from '../../src/errors.js';
import { LockTable, fileId, makeOwner, type FileId, type Owner } from '../../src/locks/table.js';
import { JdlsClient } from '../../src/client/client.js';
import { jdlsFromEnv } from '../../src/client/jdls-env.js';
import { HistoryWriter, type LockModeName } from '../history.js';
import { StoreClient, type StoreAnswer } from '../store-client.js';

export interface NodeWorkerSpec {
  /** client id for the history (HistoryEvent.c), unique per incarnation */
  id: string;
  path: 'lib-direct' | 'lib-remote' | 'lib-pair' | 'lib-oslocks';
  /** history goes to <runDir>/hist/<id>.jsonl; the store's socket is in runDir */
  runDir: string;
  /** for the start event */
  host: string;
  /** deterministic op choices: the same seed gives the same sequence of choices */
  seed: number;
  /** key family for history/store keys */
  family: 'rec' | 'os';
  /** hot keys HOT0.., cold keys COLD0.. */
  hot: number;
  cold: number;
  /** lib-direct: the installation whose table to lock in */
  releaseDir?: string;
  /** jBASE port number of this owner (-P configs) */
  port?: number;
  /** stop after this many ops (default: until SIGTERM) */
  maxOps?: number;
  /** remote: ConnectOptions.pingIntervalMs */
  pingMs?: number;
  /** chance (0..1) that a write op exits holding its lock; default 0.01 (tests that pause or stop a worker set 0) */
  exitHolding?: number;
  /** prefix of the names in history/store keys ("r3." -> "rec:r3.HOT0"): each chaos round has fresh installations, so its keys must not share the store's fencing bounds with another round's */
  keyPrefix?: string;
}

/** The record-lock file identity every chaos library client locks in (direct and remote meet in the server's table). */
const FILE_INODE = 4242;
const FILE_DEV = 7;
/**
 * A wait that holds another lock meanwhile (an upgrade, the second key of a
 * pair) can be part of a cycle. Where the mechanism detects cycles it asks
 * for breakDeadlock; where it does not (OS file locks) such a wait is
 * bounded instead, so that a cycle ends in timeouts rather than a hang.
 */
const UNDETECTED_CYCLE_BOUND_MS = 2000;
/** After SIGTERM, a wait that has not ended by then is withdrawn (logged 'cancelled'), so that the process ends in a few seconds even behind a paused holder. */
const STOP_GRACE_MS = 3000;
/** The store is a local process on a Unix socket: an answer later than this means it is gone. */
const STORE_BOUND_MS = 10_000;
const STORE_TICK_MS = 500;

type WaitStyle = { kind: 'wait' } | { kind: 'nowait' } | { kind: 'timeout'; ms: number } | { kind: 'cancel'; ms: number };

function styleText(s: WaitStyle): string {
  return s.kind === 'timeout' || s.kind === 'cancel' ? `${s.kind}:${s.ms}` : s.kind;
}

/** The outcome of one invoke, as far as the op needs it (the event is logged already). */
type Outcome = { granted: true; token: bigint } | { granted: false };

/** xorshift32: tiny, seedable, the same sequence on every run. */
class Rng {
  #s: number;
  constructor(seed: number) {
    let s = Math.floor(Math.abs(seed)) % 0x100000000 >>> 0;
    s = (s ^ 0x9e3779b9) >>> 0 || 0x2545f491;
    this.#s = s;
    for (let i = 0; i < 8; i++) this.next(); // spread small seeds
  }
  /** uniform in [0, 1) */
  next(): number {
    let x = this.#s;
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    this.#s = x;
    return x / 0x100000000;
  }
  int(lo: number, hi: number, r: number): number {
    return lo + Math.floor(r * (hi - lo + 1));
  }
}

/** What a lock path must do; both paths reject with JdlsError codes (TIMEOUT, ABORTED, DEADLOCK, ...). */
interface LockBackend {
  /** the mechanism finds wait-for cycles (breakDeadlock works) */
  readonly detectsDeadlocks: boolean;
  tryLock(key: string, mode: LockModeName): Promise<{ granted: true; token: bigint } | { granted: false }>;
  lock(key: string, mode: LockModeName, opts: { timeoutMs?: number; signal: AbortSignal; breakDeadlock: boolean }): Promise<bigint>;
  unlock(key: string): Promise<void>;
  close(): Promise<void>;
}

class DirectBackend implements LockBackend {
  readonly detectsDeadlocks = true;
  readonly #table: LockTable;
  readonly #owner: Owner;
  readonly #file: FileId;
  constructor(releaseDir: string | undefined, port: number | undefined) {
    this.#table = LockTable.open(releaseDir === undefined ? {} : { releaseDir });
    this.#owner = makeOwner(port === undefined ? {} : { port });
    this.#file = fileId(FILE_INODE, FILE_DEV);
  }
  tryLock(key: string, mode: LockModeName): Promise<{ granted: true; token: bigint } | { granted: false }> {
    try {
      const r = this.#table.tryLock(this.#owner, this.#file, key, mode);
      return Promise.resolve(r.granted ? { granted: true, token: r.token ?? 0n } : { granted: false });
    } catch (e) {
      return Promise.reject(e instanceof Error ? e : new Error(String(e)));
    }
  }
  async lock(key: string, mode: LockModeName, opts: { timeoutMs?: number; signal: AbortSignal; breakDeadlock: boolean }): Promise<bigint> {
    const g = await this.#table.lock(this.#owner, this.#file, key, mode, {
      signal: opts.signal,
      ...(opts.timeoutMs === undefined ? {} : { timeoutMs: opts.timeoutMs }),
      ...(opts.breakDeadlock ? { breakDeadlock: true } : {}),
    });
    return g.token ?? 0n;
  }
  unlock(key: string): Promise<void> {
    try {
      this.#table.unlock(this.#owner, this.#file, key);
      return Promise.resolve();
    } catch (e) {
      return Promise.reject(e instanceof Error ? e : new Error(String(e)));
    }
  }
  close(): Promise<void> {
    try {
      this.#table.unlockAll(this.#owner);
    } catch {
      /* the table may be gone (jdls -kA): nothing to free then */
    }
    this.#table.close();
    return Promise.resolve();
  }
}

class RemoteBackend implements LockBackend {
  readonly #file = { inode: FILE_INODE, dev: FILE_DEV };
  private constructor(readonly client: JdlsClient) {}
  static async open(spec: NodeWorkerSpec): Promise<RemoteBackend> {
    const jdls = jdlsFromEnv();
    if (!jdls) throw new Error(`${spec.path} needs JDLS in the environment`);
    const client = await JdlsClient.connect(jdls, {
      errorTrace: false,
      program: `node-worker ${spec.id}`,
      ...(spec.port === undefined ? {} : { port: spec.port }),
      ...(spec.pingMs === undefined ? {} : { pingIntervalMs: spec.pingMs }),
    });
    return new RemoteBackend(client);
  }
  get detectsDeadlocks(): boolean {
    // OSLOCKS, or a server whose mechanism is OS file locks (-ibD): no cycle detection
    return this.client.server.mechanism === 'shm' && !this.client.config.osLocks;
  }
  async tryLock(key: string, mode: LockModeName): Promise<{ granted: true; token: bigint } | { granted: false }> {
    const r = await this.client.lock(this.#file, key, mode, { nowait: true });
    return r.granted ? { granted: true, token: r.token ?? 0n } : { granted: false };
  }
  async lock(key: string, mode: LockModeName, opts: { timeoutMs?: number; signal: AbortSignal; breakDeadlock: boolean }): Promise<bigint> {
    // The client has no timeout option for a waiting lock (TIMEOUT is the
    // server's silence bound): our own timer withdraws the request (CANCEL).
    let signal = opts.signal;
    let timer: NodeJS.Timeout | undefined;
    if (opts.timeoutMs !== undefined) {
      const ctl = new AbortController();
      timer = setTimeout(() => ctl.abort(), opts.timeoutMs);
      signal = AbortSignal.any([opts.signal, ctl.signal]);
    }
    try {
      const r = await this.client.lock(this.#file, key, mode, { signal, ...(opts.breakDeadlock ? { breakDeadlock: true } : {}) });
      if (!r.granted) throw new Error('a waiting lock answered LOCKED');
      return r.token ?? 0n;
    } finally {
      if (timer) clearTimeout(timer);
    }
  }
  async unlock(key: string): Promise<void> {
    await this.client.unlock(this.#file, key);
  }
  close(): Promise<void> {
    return this.client.close();
  }
}

/** Codes after which a direct client's table (and so every lock it held) is gone. */
const TABLE_GONE = new Set(['RETIRED', 'NO_TABLE', 'BAD_TABLE', 'NOT_RECOVERABLE']);
/** Codes after which a remote client's connection is gone. */
const CONNECTION_GONE = new Set(['SERVER_DEAD', 'SERVER_CLOSED', 'CLOSED', 'SHUTDOWN', 'CONNECT_FAILED', 'PROTOCOL', 'SPLIT_REFUSED']);
/** The exit code of a client that refused to split (SPLIT_REFUSED); chaos/cluster.ts EXIT_SPLIT_REFUSED. */
const EXIT_SPLIT_REFUSED = 6;

function errText(e: unknown): string {
  if (e instanceof JdlsError) return `${e.code} ${e.message}`;
  if (e instanceof Error) return `${(e as NodeJS.ErrnoException).code ?? 'ERROR'} ${e.message}`;
  return `ERROR ${String(e)}`;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

class Worker {
  readonly #spec: NodeWorkerSpec;
  readonly #hist: HistoryWriter;
  readonly #rng: Rng;
  #backend!: LockBackend;
  #store!: StoreClient;
  /** history key -> mode of the locks this process believes it holds */
  readonly #held = new Map<string, LockModeName>();
  /** the invoke that has no outcome yet */
  #pending: { op: number; key: string } | undefined;
  #op = 0;
  #pauseNext = false;
  #stopping = false;
  /** aborts every wait once the SIGTERM grace has passed */
  readonly #stopCtl = new AbortController();
  #dying = false;

  constructor(spec: NodeWorkerSpec) {
    this.#spec = spec;
    const dir = path.join(spec.runDir, 'hist');
    fs.mkdirSync(dir, { recursive: true });
    this.#hist = new HistoryWriter(path.join(dir, `${spec.id}.jsonl`), spec.id);
    this.#rng = new Rng(spec.seed);
  }

  async main(): Promise<never> {
    const s = this.#spec;
    this.#hist.log({ op: 0, ev: 'start', path: s.path, host: s.host, pid: process.pid });
    process.on('SIGUSR2', () => {
      this.#pauseNext = true;
    });
    // The store socket's errors (the store died) have no listener in StoreClient: they end up here.
    process.on('uncaughtException', (e) => this.#fatal((e as NodeJS.ErrnoException).syscall ? 4 : 5, `uncaught: ${e.stack ?? e.message}`));
    process.on('SIGTERM', () => {
      if (this.#stopping) return;
      this.#stopping = true;
      setTimeout(() => this.#stopCtl.abort(), STOP_GRACE_MS).unref();
    });
    try {
      this.#store = await StoreClient.connect(s.runDir, s.id);
    } catch (e) {
      return this.#fatal(4, `store: ${errText(e)}`);
    }
    try {
      if (s.path === 'lib-direct') {
        this.#backend = new DirectBackend(s.releaseDir, s.port);
      } else {
        const b = await RemoteBackend.open(s);
        b.client.on('dead', (e) => this.#die(e));
        b.client.on('failover', (f) => process.stderr.write(`${s.id}: failover from ${f.failed.host}:${f.failed.port}: ${errText(f.error)}\n`));
        this.#backend = b;
      }
    } catch (e) {
      // No invoke is outstanding: the runner sees exit code 3 and starts a new incarnation.
      return this.#fatal(3, `cannot start locking: ${errText(e)}`);
    }
    while (!this.#stopping && (s.maxOps === undefined || this.#op < s.maxOps)) {
      try {
        await this.#runOp();
      } catch (e) {
        if (e instanceof StoreFailure) return this.#fatal(4, `store: ${e.message}`);
        return this.#fatal(5, `bug: ${e instanceof Error ? e.stack ?? e.message : String(e)}`);
      }
    }
    this.#hist.log({ op: 0, ev: 'exit', holding: [...this.#held.keys()] });
    this.#store.close();
    try {
      await Promise.race([this.#backend.close(), sleep(3000)]);
    } catch {
      /* closing a dead connection */
    }
    process.exit(0);
  }

  /** Leave now (store failure, a bug): log exit with whatever is held, so the history stays honest. */
  #fatal(code: number, msg: string): never {
    process.stderr.write(`${this.#spec.id}: ${msg}\n`);
    if (this.#pending) this.#hist.log({ op: this.#pending.op, ev: 'error', key: this.#pending.key, err: msg });
    this.#hist.log({ op: 0, ev: 'exit', holding: [...this.#held.keys()] });
    process.exit(code);
  }

  /** The lock connection (or table) is gone: the pending invoke failed, every held lock is lost; exit 3. */
  #die(e: unknown): never {
    const split = (e instanceof JdlsError && e.code === 'SPLIT_REFUSED') || (this.#backend instanceof RemoteBackend && this.#backend.client.failure?.code === 'SPLIT_REFUSED');
    if (!this.#dying) {
      this.#dying = true;
      const err = errText(e);
      process.stderr.write(`${this.#spec.id}: lock connection lost: ${err}\n`);
      if (this.#pending) this.#hist.log({ op: this.#pending.op, ev: 'error', key: this.#pending.key, err });
      this.#pending = undefined;
      for (const key of this.#held.keys()) this.#hist.log({ op: this.#op, ev: 'lost', key });
      this.#held.clear();
    }
    process.exit(split ? EXIT_SPLIT_REFUSED : 3);
  }

  #isGone(e: unknown): boolean {
    if (this.#backend instanceof RemoteBackend) {
      if (this.#backend.client.failure) return true;
      return e instanceof JdlsError && CONNECTION_GONE.has(e.code);
    }
    return e instanceof JdlsError && TABLE_GONE.has(e.code);
  }

  #key(name: string): string {
    return `${this.#spec.family}:${this.#spec.keyPrefix ?? ''}${name}`;
  }

  /** Lock key in the table / on the server: the name; the family only separates mechanisms (rec: the table, os: OSLOCKS). */
  static #lockName(key: string): string {
    return key.slice(key.indexOf(':') + 1);
  }

  #style(r: number, rMs: number): WaitStyle {
    if (r < 0.65) return { kind: 'wait' };
    if (r < 0.8) return { kind: 'nowait' };
    if (r < 0.9) return { kind: 'timeout', ms: this.#rng.int(5, 200, rMs) };
    return { kind: 'cancel', ms: this.#rng.int(0, 100, rMs) };
  }

  /**
   * Ask for one lock and log its invoke and its one outcome. `cycle`:
   * 'holding' - this wait holds another lock meanwhile (an upgrade, a pair's
   * second key), so it may close a cycle; 'ask' - ask for breakDeadlock
   * anyway (a pair's first key: the workload's contract says both ask).
   */
  async #invoke(op: number, key: string, mode: LockModeName, style: WaitStyle, cycle: 'none' | 'ask' | 'holding'): Promise<Outcome> {
    const b = this.#backend;
    let breakDeadlock = false;
    if (cycle !== 'none' && style.kind !== 'nowait') {
      if (b.detectsDeadlocks) breakDeadlock = true;
      else if (cycle === 'holding' && (style.kind === 'wait' || style.ms > UNDETECTED_CYCLE_BOUND_MS)) style = { kind: 'timeout', ms: UNDETECTED_CYCLE_BOUND_MS };
    }
    this.#hist.log({ op, ev: 'invoke', key, mode, wait: styleText(style) });
    this.#pending = { op, key };
    const name = Worker.#lockName(key);
    let token: bigint;
    let cancelTimer: NodeJS.Timeout | undefined;
    try {
      if (style.kind === 'nowait') {
        const r = await b.tryLock(name, mode);
        if (!r.granted) {
          this.#pending = undefined;
          this.#hist.log({ op, ev: 'locked', key, mode });
          return { granted: false };
        }
        token = r.token;
      } else {
        let signal = this.#stopCtl.signal;
        if (style.kind === 'cancel') {
          const ctl = new AbortController();
          cancelTimer = setTimeout(() => ctl.abort(), style.ms);
          signal = AbortSignal.any([signal, ctl.signal]);
        }
        token = await b.lock(name, mode, { signal, breakDeadlock, ...(style.kind === 'timeout' ? { timeoutMs: style.ms } : {}) });
      }
    } catch (e) {
      if (cancelTimer) clearTimeout(cancelTimer);
      if (this.#isGone(e)) this.#die(e);
      this.#pending = undefined;
      const code = e instanceof JdlsError ? e.code : undefined;
      if (code === 'DEADLOCK') this.#hist.log({ op, ev: 'deadlock', key, mode });
      else if (code === 'TIMEOUT' && style.kind === 'timeout') this.#hist.log({ op, ev: 'timeout', key, mode });
      else if (code === 'ABORTED' && style.kind === 'timeout' && !this.#stopCtl.signal.aborted) this.#hist.log({ op, ev: 'timeout', key, mode });
      else if (code === 'ABORTED') this.#hist.log({ op, ev: 'cancelled', key, mode });
      else this.#hist.log({ op, ev: 'error', key, mode, err: errText(e) });
      return { granted: false };
    }
    if (cancelTimer) clearTimeout(cancelTimer);
    this.#pending = undefined;
    this.#held.set(key, mode);
    this.#hist.log({ op, ev: 'grant', key, mode, token: token.toString() });
    return { granted: true, token };
  }

  async #release(op: number, key: string): Promise<void> {
    // logged before the unlock: the logged hold lies inside the real one (history.ts)
    this.#hist.log({ op, ev: 'release', key });
    this.#held.delete(key);
    try {
      await this.#backend.unlock(Worker.#lockName(key));
    } catch (e) {
      if (this.#isGone(e)) this.#die(e);
      // The lock is still believed freed (nothing else could be done); say why there is no 'released'.
      process.stderr.write(`${this.#spec.id}: op ${op}: unlock ${key}: ${errText(e)}\n`);
      return;
    }
    this.#hist.log({ op, ev: 'released', key });
  }

  /**
   * One store request, bounded: a store that stopped answering ends the run
   * (StoreFailure), never a hang. The bound counts ticks of the event loop,
   * not wall time: a worker the nemesis SIGSTOPs for longer than the bound
   * while a request is out must not blame the store when it resumes (one
   * interval tick fires after a pause, however long).
   */
  async #ask(what: string, req: () => Promise<StoreAnswer>): Promise<StoreAnswer> {
    let ticker: NodeJS.Timeout | undefined;
    try {
      return await Promise.race([
        req(),
        new Promise<never>((_, reject) => {
          let ticks = 0;
          ticker = setInterval(() => {
            if (++ticks * STORE_TICK_MS >= STORE_BOUND_MS) reject(new Error(`no answer to ${what} within ${STORE_BOUND_MS} ms`));
          }, STORE_TICK_MS);
        }),
      ]);
    } catch (e) {
      throw new StoreFailure(errText(e));
    } finally {
      clearInterval(ticker);
    }
  }

  #storeRead(key: string, token: bigint): Promise<StoreAnswer> {
    return this.#ask(`R ${key}`, () => this.#store.read(key, token));
  }

  /** Read-modify-write of the key's guarded value under the write lock whose token this is. Returns the value written, or undefined. */
  async #rmw(op: number, key: string, token: bigint, holdMs: number): Promise<number | undefined> {
    const tok = token.toString();
    const r = await this.#storeRead(key, token);
    if (!r.ok) {
      this.#hist.log({ op, ev: 'refused', key, token: tok });
      return undefined;
    }
    this.#hist.log({ op, ev: 'read', key, token: tok, value: r.value });
    if (this.#pauseNext) {
      // The nemesis asked (SIGUSR2) for a paused holder: stop right here,
      // holding the lock; it sends SIGCONT. The write then goes at once,
      // with no hold: a hold would give the event loop a turn in which the
      // connection's end (the server dropped the silent client) is seen
      // first and the op ends as 'lost' - a holder that checks before it
      // writes, which is not the paused holder fencing exists for (the
      // store teeth test saw 4 of 5 pauses end so under load).
      this.#pauseNext = false;
      process.kill(process.pid, 'SIGSTOP');
    } else await this.#hold(holdMs);
    const w = await this.#ask(`W ${key}`, () => this.#store.write(key, token, r.value + 1));
    if (!w.ok) {
      this.#hist.log({ op, ev: 'refused', key, token: tok, value: r.value + 1 });
      return undefined;
    }
    this.#hist.log({ op, ev: 'write', key, token: tok, value: r.value + 1 });
    return r.value + 1;
  }

  /** A shared read: token 0 (a reader needs no fencing, and must not raise the store's bound). */
  async #sharedRead(op: number, key: string, holdMs: number): Promise<void> {
    const r = await this.#storeRead(key, 0n);
    if (r.ok) this.#hist.log({ op, ev: 'read', key, token: '0', value: r.value });
    else this.#hist.log({ op, ev: 'refused', key, token: '0' });
    await this.#hold(holdMs);
  }

  #hold(ms: number): Promise<void> {
    return ms > 0 ? sleep(ms) : Promise.resolve();
  }

  async #releaseAll(op: number): Promise<void> {
    for (const key of [...this.#held.keys()].reverse()) await this.#release(op, key);
  }

  async #runOp(): Promise<void> {
    const s = this.#spec;
    // Every op draws the same number of values, whatever happens: the
    // sequence of choices depends on the seed alone, not on outcomes.
    const g = this.#rng;
    const rKind = g.next(), rHot = g.next(), rKey = g.next(), rKey2 = g.next(), rWait = g.next(), rWaitMs = g.next();
    const rWait2 = g.next(), rWait2Ms = g.next(), rHold = g.next(), rHold2 = g.next(), rExit = g.next(), rOrder = g.next();
    const op = this.#hist.nextOp();
    this.#op = op;
    const hotName = (r: number): string => `HOT${Math.min(s.hot - 1, Math.floor(r * s.hot))}`;
    const name = s.hot > 0 && (rHot < 0.7 || s.cold <= 0) ? hotName(rKey) : `COLD${Math.min(s.cold - 1, Math.floor(rKey * s.cold))}`;
    const key = this.#key(name);
    const style = this.#style(rWait, rWaitMs);
    const style2 = this.#style(rWait2, rWait2Ms);
    const hold = g.int(0, 5, rHold);
    const hold2 = g.int(0, 5, rHold2);
    let kind: 'write' | 'read' | 'upgrade' | 'downgrade' | 'pair';
    if (rKind < 0.6) kind = 'write';
    else if (rKind < 0.75) kind = 'read';
    else if (rKind < 0.85) kind = 'upgrade';
    else if (rKind < 0.9) kind = 'downgrade';
    else kind = s.hot >= 2 ? 'pair' : 'write';

    switch (kind) {
      case 'write': {
        const o = await this.#invoke(op, key, 'write', style, 'none');
        if (!o.granted) return;
        const v = await this.#rmw(op, key, o.token, hold);
        if (v !== undefined && rExit < (s.exitHolding ?? 0.01)) {
          // Exit holding: the server (remote) or the next contender / the monitor (direct) must free it.
          this.#hist.log({ op, ev: 'exit', holding: [...this.#held.keys()] });
          process.exit(0);
        }
        await this.#releaseAll(op);
        return;
      }
      case 'read': {
        const o = await this.#invoke(op, key, 'read', style, 'none');
        if (!o.granted) return;
        await this.#sharedRead(op, key, hold);
        await this.#releaseAll(op);
        return;
      }
      case 'upgrade': {
        const o = await this.#invoke(op, key, 'read', style, 'none');
        if (!o.granted) return;
        await this.#sharedRead(op, key, hold);
        const u = await this.#invoke(op, key, 'write', style2, 'holding');
        if (u.granted) await this.#rmw(op, key, u.token, hold2);
        await this.#releaseAll(op);
        return;
      }
      case 'downgrade': {
        const o = await this.#invoke(op, key, 'write', style, 'none');
        if (!o.granted) return;
        await this.#rmw(op, key, o.token, hold);
        // READ over one's own WRITE converts at once: never a wait
        const d = await this.#invoke(op, key, 'read', { kind: 'wait' }, 'none');
        if (d.granted) await this.#sharedRead(op, key, hold2);
        await this.#releaseAll(op);
        return;
      }
      case 'pair': {
        const a = Math.min(s.hot - 1, Math.floor(rKey * s.hot));
        let b = Math.min(s.hot - 2, Math.floor(rKey2 * (s.hot - 1)));
        if (b >= a) b++;
        const names = rOrder < 0.5 ? [a, b] : [b, a];
        const keys = names.map((i) => this.#key(`HOT${i}`));
        const tokens: bigint[] = [];
        const styles = [style, style2];
        for (let i = 0; i < keys.length; i++) {
          const o = await this.#invoke(op, keys[i]!, 'write', styles[i]!, i > 0 ? 'holding' : 'ask');
          if (!o.granted) break;
          tokens.push(o.token);
        }
        if (tokens.length === keys.length) {
          await this.#rmw(op, keys[0]!, tokens[0]!, hold);
          await this.#rmw(op, keys[1]!, tokens[1]!, hold2);
        }
        await this.#releaseAll(op);
        return;
      }
    }
  }
}

class StoreFailure extends Error {}

function parseSpec(text: string | undefined): NodeWorkerSpec {
  if (!text) throw new Error('usage: node-worker \'<json spec>\'');
  const s = JSON.parse(text) as Partial<NodeWorkerSpec>;
  const paths = ['lib-direct', 'lib-remote', 'lib-pair', 'lib-oslocks'];
  if (typeof s.id !== 'string' || !/^[A-Za-z0-9_.:-]+$/.test(s.id)) throw new Error('spec.id: a non-empty id of [A-Za-z0-9_.:-]');
  if (typeof s.path !== 'string' || !paths.includes(s.path)) throw new Error(`spec.path: one of ${paths.join(', ')}`);
  if (typeof s.runDir !== 'string' || !s.runDir) throw new Error('spec.runDir: a directory');
  if (typeof s.host !== 'string') throw new Error('spec.host: a string');
  if (typeof s.seed !== 'number' || !Number.isFinite(s.seed)) throw new Error('spec.seed: a number');
  if (s.family !== 'rec' && s.family !== 'os') throw new Error('spec.family: rec or os');
  if (s.keyPrefix !== undefined && (typeof s.keyPrefix !== 'string' || !/^[A-Za-z0-9_.-]*$/.test(s.keyPrefix))) throw new Error('spec.keyPrefix: [A-Za-z0-9_.-]*');
  if (!Number.isInteger(s.hot) || !Number.isInteger(s.cold) || (s.hot ?? 0) < 0 || (s.cold ?? 0) < 0 || (s.hot ?? 0) + (s.cold ?? 0) === 0) {
    throw new Error('spec.hot, spec.cold: non-negative integers, not both 0');
  }
  if (s.exitHolding !== undefined && !(typeof s.exitHolding === 'number' && s.exitHolding >= 0 && s.exitHolding <= 1)) throw new Error('spec.exitHolding: a number 0..1');
  if (s.maxOps !== undefined && !(Number.isInteger(s.maxOps) && s.maxOps >= 0)) throw new Error('spec.maxOps: a non-negative integer');
  return s as NodeWorkerSpec;
}

let spec: NodeWorkerSpec;
try {
  spec = parseSpec(process.argv[2]);
} catch (e) {
  process.stderr.write(`node-worker: bad spec: ${(e as Error).message}\n`);
  process.exit(2);
}
void new Worker(spec).main();
