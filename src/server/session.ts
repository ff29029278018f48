// session.ts - one client connection in a lock-server process: the protocol
// conversation (docs/protocol.md) mapped onto a record-lock mechanism.
//
// Owns: the connection's state (HELLO, owners per thread id, the locks it
// holds, its waiting requests), exactly one final answer per request,
// interim WAITING messages, the keep-alive bound, limits per connection, and
// releasing everything the moment the connection fails. Does not own: the
// byte layout (src/protocol/codec.ts), the locks themselves (RecordLocks), or
// which process serves the connection (lockserver.ts, listener.ts).
//
// Failure containment: every byte a client sends is handled inside this
// object; a bad frame closes this connection (logged), an exception in a
// request becomes an ERROR answer to that request. Nothing a client sends
// can end the process or touch another connection's locks.
import { FAULT_ENV, serverFaults } from './fault-injection.js';
import type net from 'node:net';
import os from 'node:os';
import { FrameReader, ProtocolError, byteOffsetOfKey, encode } from '../protocol/codec.js';
import { offsetKey } from '../locks/oslock.js';
import { PROTO, type ProtoErrorName } from '../protocol/constants.js';
import type {
  ClientFrame, HelloFrame, LockFrame, ServerFrame, UnlockFrame, UnlockFileFrame, UnlockAllFrame, StatusFrame,
  CancelFrame, WireHolder, RefusedRequest, InfoFrame, InfoQueryFrame, PromoteFrame,
} from '../protocol/frames.js';
import { readInfoDir, type InfoAnswer } from '../info/reader.js';
import type { ClientInfo } from '../info/format.js';
import { makeOwner, fileId, LockTable, type Owner, type FileId, type Holder } from '../locks/table.js';
import { InfoWriter, infoEnabled } from '../info/writer.js';
import { native } from '../native.js';
import { INFO_VERSION, MAX_RECORD_LOCKS, noStats, type InfoRecord, type InfoLock, type InfoWait, type InfoFile } from '../info/format.js';
import { JdlsError } from '../errors.js';
import { startWait, type RecordLocks } from '../locks/mechanism.js';
import type { Logger } from '../log.js';
import type { ServerConfig } from './config.js';
import type { ServerStats } from './stats.js';
import { HeldLocks, FileMap, fileKey } from './held.js';
import { RangeSession } from './range-session.js';
import { addressLocks, blockingWaits, lockDescriptors, type Limits } from './quota.js';
import { RateLog } from './ratelog.js';
import { AUTH_FAILED, AUTH_REQUIRED, ServerHandshake, logAuthRefusal } from './auth.js';
import { PROMOTE_CAP_MS, type PairDeps } from './pair-rules.js';
import { SESSION_LOCKS_LISTED, type ReleaseTarget, type ReleasedLock, type SessionLock, type SessionView, type SessionWait } from './admin-types.js';

/** The table's lock number as -dvL shows it ("value"): 0x%08x. */
const lockNo = (hash: number): string => `0x${(hash >>> 0).toString(16).padStart(8, '0')}`;

let startTicks: number | undefined;
/** This process's start time (the writer's identity in the record: a reused pid is not taken for it). */
const selfStart = (): number => (startTicks ??= native.pidStart(process.pid));

/** Deliberate faults for the chaos suite's teeth tests (fault-injection.ts); empty in service. */
const INJECTED = serverFaults();

export interface SessionDeps {
  /** the process's mechanism (shm table or OS locks) */
  mech: RecordLocks;
  /** the OS file-lock mechanism, for LOCK with the OSLOCKS flag (may throw: not in this build) */
  osLocks: () => RecordLocks;
  cfg: ServerConfig;
  /** the quotas (quota.ts limitsFor) */
  limits: Limits;
  /** descriptors this process spends on locks now (OS record locks, ranges): bounded by lockDescriptors */
  descriptors: () => number;
  log: Logger;
  stats: ServerStats;
  /** connection number within the process */
  id: number;
  /** where the socket's bytes arrive when it reads with `onread` (passing.ts); else 'data' events */
  route?: { to: ((chunk: Buffer) => void) | undefined } | undefined;
  /** called once, when the connection is gone and its locks are released */
  onClose: (s: Session) => void;
  /** the installation's shared secret: clients must authenticate (auth.ts); undefined = no secret */
  key?: Buffer | undefined;
  /**
   * The installation (JBCRELEASEDIR): its proc/info holds the info records
   * (docs/info-records.md). Given: WELCOME has flag INFO, INFO_QUERY is
   * answered from it and INFO is taken. Absent: neither (an embedded test
   * session), and a client sends neither.
   */
  releaseDir?: string | undefined;
  /** the pair's leadership and PROMOTE (pair-rules.ts); absent = no witness (every LOCK may be granted, PROMOTE answered term 0) */
  pair?: PairDeps | undefined;
}

/** INFO_RESULT chunk: the most a frame carries after its header and the chunk's u32 length. */
export const INFO_CHUNK = PROTO.MAX_FRAME - PROTO.MIN_LENGTH - 4;

interface Wait {
  /** withdraw it from the mechanism (startWait) */
  cancel: () => void;
  timer: NodeJS.Timeout | undefined;
  /** a CANCEL asked for it */
  cancelled: boolean;
  outcome: 'granted' | 'cancelled' | 'failed' | undefined;
  /** run once its final answer was sent (a CANCEL's own answer) */
  after: (() => void) | undefined;
  /** what it waits for, for the administrator's view (admin.ts) */
  target: { tid: number; inode: bigint; dev: bigint; keyText: string; mode: 'read' | 'write'; os: boolean; sinceMs: number } | undefined;
}

/** Owners kept per connection before those holding nothing are forgotten. */
const MAX_IDLE_OWNERS = 4096;
/** File identities cached per connection (they are cheap to remake). */
const MAX_FILES = 1024;

const SERVER_HOST = os.hostname();
const noop = (): void => undefined;

/** Locks chosen for an administrator's release (Session.adminSelect). */
export type AdminSelection = { tid: number; file: string; key: string; mech: RecordLocks }[];

/** The address as stored in the table: IPv4-mapped IPv6 as dotted IPv4. */
export function clientAddress(sock: net.Socket): string | undefined {
  const a = sock.remoteAddress;
  if (!a) return undefined;
  const m = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(a);
  return m?.[1] ?? a;
}

// Trap: the OS mechanism names a holder it only knows from the kernel with
// pid -1 (an OFD lock taken through another lock-server process, or a
// FILELOCK): -1 cannot travel as a u32 and LOCKED would fail to encode
// (ERROR SYSTEM instead of LOCKED). It travels as 0, "unknown".
const u32 = (n: number): number => (n >= 0 && n <= 0xffffffff ? n : 0);
const wireHolder = (h: Holder): WireHolder => ({ mode: h.mode, port: u32(h.port), pid: u32(h.pid), ownerPid: u32(h.ownerPid), ownerTid: u32(h.ownerTid), addr: h.ip || '0.0.0.0' });

/**
 * Refusals a client can cause at will (its own request is refused, the
 * service is fine): logged without a stack, rate-limited (ratelog.ts).
 */
const EXPECTED = new Set(['TABLE_FULL', 'KEY_TOO_LONG', 'BAD_ARGUMENT', 'LIMIT', 'NOT_SUPPORTED', 'ABORTED', 'CLOSED', 'TIMEOUT', 'CANCELLED', 'DEADLOCK']);

/** The wait options of a LOCK with BREAK_DEADLOCK (one object: a wait is on the hot path). */
const BREAK_DEADLOCK = Object.freeze({ breakDeadlock: true });
const NO_WAIT_OPTIONS = Object.freeze({});

/** A JdlsError (or anything) as a wire error code and text. */
/**
 * Before the held text of a key the OS locks took as a byte (flag OFFSET):
 * no latin1 text of a key's bytes has this character, so it never meets a
 * record key's text (the table's "1a" and the OS locks' byte 0x1a are
 * different locks under OSLOCKS).
 */
const OFFSET_TEXT = '\u0100';

/**
 * The key a request gives its mechanism, and its text in HeldLocks. Flag
 * OFFSET (a preloaded program's fcntl/lockf: the key is hex(X)) on the OS
 * locks: the byte X itself (offsetKey), so that a local program locking X
 * in the kernel is excluded - a hash of the text locked another byte. The
 * table ignores the flag: the text is the lock's name there, as the shim's
 * own table route names it. (The codec refused a key that is not hex.)
 */
function lockKeyOf(f: { key: Buffer; offset?: true }, mech: RecordLocks): [Buffer, string] {
  const text = f.key.toString('latin1');
  if (!f.offset || mech.kind !== 'os') return [f.key, text];
  const off = byteOffsetOfKey(f.key);
  if (off === undefined) throw new JdlsError('BAD_ARGUMENT', `flag OFFSET needs a key that is a byte offset in lowercase hex; got ${JSON.stringify(text.slice(0, 40))}`);
  return [offsetKey(off), OFFSET_TEXT + text];
}

/** fileKey's text back to (inode, dev). */
function splitFileKey(k: string): { inode: bigint; dev: bigint } {
  const i = k.indexOf(':');
  return { inode: BigInt(k.slice(0, i)), dev: BigInt(k.slice(i + 1)) };
}

/** The key bytes a HeldLocks text stands for (lockKeyOf in reverse). */
function heldKeyBytes(text: string): Buffer {
  if (!text.startsWith(OFFSET_TEXT)) return Buffer.from(text, 'latin1');
  const off = byteOffsetOfKey(Buffer.from(text.slice(OFFSET_TEXT.length), 'latin1'));
  return off === undefined ? Buffer.from(text, 'latin1') : offsetKey(off);
}

function wireError(e: unknown): { code: ProtoErrorName; text: string } {
  const text = e instanceof Error ? e.message : String(e);
  if (!(e instanceof JdlsError)) return { code: 'SYSTEM', text };
  switch (e.code) {
    case 'TABLE_FULL': return { code: 'TABLE_FULL', text };
    case 'KEY_TOO_LONG': return { code: 'KEY_TOO_LONG', text };
    case 'BAD_ARGUMENT': return { code: 'BAD_ARGUMENT', text };
    case 'ABORTED': return { code: 'CANCELLED', text };
    case 'CLOSED': return { code: 'SHUTDOWN', text };
    case 'NOT_SUPPORTED': return { code: 'NOT_SUPPORTED', text };
    case 'DEADLOCK': return { code: 'DEADLOCK', text };
    default: return { code: 'SYSTEM', text: `${e.code}: ${text}` };
  }
}

export class Session {
  readonly id: number;
  readonly sock: net.Socket;
  readonly ip: string;
  /** the owner identity's connection part: the session id as a u32, never 0 (0 is a local process) */
  readonly #conn: number;
  #deps: SessionDeps;
  #log: Logger;
  #reader = FrameReader.forLockServer();
  #hello: HelloFrame | undefined;
  /** a CHALLENGE was sent; the client's AUTH is due (auth.ts) */
  #challenge: { hs: ServerHandshake; hello: HelloFrame; version: number } | undefined;
  #version: number = PROTO.VERSION;
  /**
   * HELLO asked for fencing tokens (flag TOKENS; WELCOME said yes): every
   * GRANTED and STATUS_RESULT on this connection carries one (0 = none).
   * Without it, exactly the old empty GRANTED: an old client's strict
   * reader would refuse 8 more bytes.
   */
  #tokens = false;
  #owners = new Map<number, Owner>();
  /** file identities with their HeldLocks key, made once per file */
  #files = new FileMap<{ id: FileId; key: string }>();
  #held = new HeldLocks();
  /** mechanisms this connection has locked through (the main one, and OS locks if asked) */
  #used = new Set<RecordLocks>();
  #waits = new Map<number, Wait>();
  /** CANCELs whose answer waits for their target's final answer (outstanding request ids too) */
  #cancels = new Set<number>();
  /** binary (byte-range) locks: created by the first range frame */
  #ranges: RangeSession | undefined;
  #closed = false;
  #lastRx = Date.now();
  #silenceMs: number;
  /** this connection's WAITING interval: the server's interimMs, or well inside the client's TIMEOUT (interimFor) */
  #interimMs: number;
  #keepTimer: NodeJS.Timeout | undefined;
  #helloTimer: NodeJS.Timeout | undefined;
  #rate: RateLog;
  /** locks (and range files) counted for this connection in addressLocks */
  #counted = 0;
  /** waits of this connection that hold a native thread (blockingWaits) */
  #threads = 0;
  /** INFO_QUERY answers still being sent (their request ids are outstanding) */
  #infoQueries = new Set<number>();
  /** PROMOTEs waiting for the witness's verdict (their request ids are outstanding) */
  #promotes = new Set<number>();
  /** RANGE_LOCKs without MIRROR not yet answered: a grant of one after the leadership lapsed is never answered GRANTED */
  #rangeNeedsLeader = new Set<number>();

  /** when the lock-server process took the connection (ms since the epoch) */
  readonly connectedMs = Date.now();

  constructor(sock: net.Socket, deps: SessionDeps) {
    this.id = deps.id;
    this.#conn = ((deps.id - 1) % 0xffffffff) + 1;
    this.sock = sock;
    this.#deps = deps;
    this.ip = clientAddress(sock) ?? '0.0.0.0';
    this.#log = deps.log.child({ session: deps.id, client: `${this.ip}:${sock.remotePort ?? 0}` });
    this.#silenceMs = deps.cfg.keepaliveMs;
    this.#interimMs = deps.cfg.interimMs;
    this.#used.add(deps.mech);
    sock.setNoDelay(true);
    // TCP keep-alive as well: it also catches a dead host of a client that
    // announced it never pings (keepalive 0 in HELLO).
    sock.setKeepAlive(true, deps.cfg.keepaliveMs);
    if (deps.route) deps.route.to = (chunk: Buffer): void => this.#onData(chunk); // onread (passing.ts)
    else sock.on('data', (chunk: Buffer) => this.#onData(chunk));
    sock.on('end', () => this.close('EOF from client'));
    sock.on('error', (e) => this.close(`socket error: ${e.message}`));
    sock.on('close', () => this.close('connection closed'));
    this.#rate = new RateLog(() => this.#log, deps.cfg.logLinesPerSecond);
    this.#armKeepalive(this.#silenceMs);
    // An idle slot: a connection that never says HELLO holds a place for ever otherwise.
    this.#helloTimer = setTimeout(() => {
      if (!this.#hello) this.#protocolClose('PROTOCOL', `no HELLO within ${deps.cfg.helloTimeoutMs} ms (helloTimeoutMs)`);
    }, deps.cfg.helloTimeoutMs);
    this.#helloTimer.unref();
    if (!clientAddress(sock)) setImmediate(() => this.close('connection gone before it was served'));
    sock.resume();
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Locks this connection holds (as far as this process knows). */
  get lockCount(): number {
    return this.#held.count;
  }

  // ===== input ==============================================================

  #onData(chunk: Buffer): void {
    if (this.#closed) return;
    let frames: (ClientFrame | RefusedRequest)[];
    try {
      frames = this.#reader.push(chunk);
    } catch (e) {
      if (!(e instanceof ProtocolError)) return this.#protocolClose('PROTOCOL', `unreadable input: ${(e as Error).message}`);
      // The requests read before the bad frame are served and answered
      // first: a request the server has read always gets its final answer.
      // The lock server's reader (forLockServer) yields only client frames and refusals.
      this.#serve(e.before as (ClientFrame | RefusedRequest)[]);
      return this.#protocolClose(e.fault.code, e.fault.reason);
    }
    this.#serve(frames);
  }

  #serve(frames: (ClientFrame | RefusedRequest)[]): void {
    // Only a whole frame is a sign of life: one byte of a frame now and then
    // held a connection for ever.
    if (frames.length > 0) this.#lastRx = Date.now();
    if (this.#info) {
      this.#infoStats.requests += frames.length;
      // One flag per batch of frames: a lock or an unlock costs the record nothing more (writer.ts coalesces).
      this.#info.change();
    }
    for (const f of frames) {
      if (this.#closed) return;
      try {
        this.#dispatch(f);
      } catch (e) {
        // A refusal the client caused (e.g. TABLE_FULL): no stack, and at
        // most logLinesPerSecond lines. A bug or an unexpected mechanism
        // failure: that request fails, the connection and the process carry on.
        if (e instanceof JdlsError && EXPECTED.has(e.code))
          this.#rate.write('info', { type: f.type, requestId: f.requestId, code: e.code, reason: e.message }, 'request refused');
        else this.#rate.write('error', { err: e, type: f.type, requestId: f.requestId }, 'request failed');
        this.#answerError(f.requestId, e);
      }
    }
  }

  #dispatch(f: ClientFrame | RefusedRequest): void {
    const type = f.type === 'REFUSED' ? f.request : f.type;
    if (!this.#hello) {
      if (this.#challenge) return f.type === 'REFUSED' ? this.#protocolClose('PROTOCOL', `${type} instead of AUTH`) : this.#onAuth(f);
      if (f.type !== 'HELLO') return this.#protocolClose('PROTOCOL', `${type} before HELLO`);
      return this.#onHello(f);
    }
    if (f.type === 'HELLO') return this.#protocolClose('PROTOCOL', 'HELLO sent twice');
    if (f.type === 'AUTH') return this.#protocolClose('PROTOCOL', 'AUTH without a CHALLENGE');
    // INFO is never answered and has request id 0 (its own rule, before the requests').
    if (f.type === 'INFO') return this.#onInfo(f);
    // Request ids: 0 is the connection's own (handshake frames and
    // connection-level ERRORs), and an id must not be reused while its
    // request waits for its final answer - either way an answer could not
    // be told apart, so the stream cannot be trusted any more.
    const rid = f.requestId;
    if (rid === 0) return this.#protocolClose('PROTOCOL', `${type}: request id 0 is reserved for the connection (handshake and connection-level errors)`);
    if (this.#outstanding(rid)) return this.#protocolClose('PROTOCOL', `${type}: request id ${rid} is already outstanding`);
    switch (f.type) {
      case 'REFUSED':
        this.#rate.write('info', { type: f.request, requestId: rid, code: f.code, reason: f.text }, 'request refused');
        return this.#error(rid, f.code, f.text);
      case 'LOCK': return this.#onLock(f);
      case 'UNLOCK': return this.#onUnlock(f);
      case 'UNLOCK_FILE': return this.#onUnlockFile(f);
      case 'UNLOCK_ALL': return this.#onUnlockAll(f);
      case 'STATUS': return this.#onStatus(f);
      case 'CANCEL': return this.#onCancel(f);
      case 'TEST': return this.#send({ type: 'TEST_RESULT', requestId: f.requestId, text: f.text });
      case 'PING': return this.#send({ type: 'PONG', requestId: f.requestId });
      case 'RANGE_LOCK':
        if (!f.mirror) {
          if (!this.#mayGrant()) return this.#error(rid, 'NOT_LEADER', this.#notLeaderText());
          this.#rangeNeedsLeader.add(rid);
        } else this.#rangeNeedsLeader.delete(rid); // an id answered by an error path before may be reused
        return this.#rangeSession().onFrame(f);
      case 'RANGE_UNLOCK': case 'RANGE_TEST': return this.#rangeSession().onFrame(f);
      case 'INFO_QUERY': return this.#onInfoQuery(f);
      case 'PROMOTE': return this.#onPromote(f);
    }
  }

  #rangeSession(): RangeSession {
    this.#ranges ??= new RangeSession({
      lockDir: this.#deps.cfg.lockDir,
      mech: this.#deps.mech,
      client: () => ({ pid: this.#hello?.pid ?? 0, port: this.#hello?.port ?? 0, ip: this.ip, conn: this.#conn }),
      send: (f) => this.#sendRange(f),
      answerError: (rid, e) => this.#answerError(rid, e),
      log: this.#log,
      maxRangeFiles: this.#deps.cfg.maxRangeFiles,
      admitLock: (waiting, descriptor) => (waiting ? this.#waitLimit(descriptor) : this.#lockLimit(descriptor)),
      takeThread: () => this.#takeThread(),
      giveThread: () => this.#giveThread(),
    });
    return this.#ranges;
  }

  // ===== the pair's leadership (witness: leadership.ts) ====================

  /** A LOCK / RANGE_LOCK without MIRROR may be granted now (always, without a witness). */
  #mayGrant(): boolean {
    return this.#deps.pair?.leadership.mayGrant() ?? true;
  }

  #notLeaderText(): string {
    const l = this.#deps.pair?.leadership;
    return `this lock server is not the pair's leader (term ${l?.term ?? 0}): it grants only mirrored locks (MIRROR); ask the leader, or PROMOTE this one`;
  }

  /**
   * A grant the mechanism made after the leadership lapsed (a release
   * handed the lock to a wait here before this process's lapse timer ran):
   * never answered GRANTED. The request gets NOT_LEADER, and the session
   * closes as every session does at the lapse - which releases that lock.
   */
  #grantedAfterLapse(rid: number): void {
    this.#error(rid, 'NOT_LEADER', this.#notLeaderText());
    this.close('leadership lapsed before a wait was granted', { type: 'ERROR', requestId: 0, code: 'NOT_LEADER', text: 'this lock server is no longer the pair\'s leader' });
  }

  /** The range session's answers: a RANGE_LOCK without MIRROR granted after the lapse is not answered GRANTED. */
  #sendRange(f: ServerFrame): void {
    if ('requestId' in f && this.#rangeNeedsLeader.delete(f.requestId) && f.type === 'GRANTED' && !this.#mayGrant()) return this.#grantedAfterLapse(f.requestId);
    this.#send(f);
  }

  /**
   * PROMOTE: without a witness the client's word is enough (the guide's
   * rule): PROMOTED term 0 at once. With one, the listener's witness tries
   * to take the key at once; PROMOTED once this process may grant as the
   * leader, else NOT_LEADER after min(wait_ms, PROMOTE_CAP_MS).
   */
  #onPromote(f: PromoteFrame): void {
    const rid = f.requestId;
    const pair = this.#deps.pair;
    if (!pair || !pair.leadership.witnessed) return this.#send({ type: 'PROMOTED', requestId: rid, term: 0 });
    this.#promotes.add(rid);
    this.#log.warn({ requestId: rid, waitMs: f.waitMs }, 'PROMOTE: the client lost its primary and asks this server to lead');
    const answer = (term: number | undefined): void => {
      if (!this.#promotes.delete(rid) || this.#closed) return;
      // The listener's leadership word precedes its answer on the IPC channel: the clock decides here.
      if (term !== undefined && pair.leadership.mayGrant()) this.#send({ type: 'PROMOTED', requestId: rid, term: pair.leadership.term });
      else this.#error(rid, 'NOT_LEADER', `the witness did not make this lock server the pair's leader within ${Math.min(f.waitMs, PROMOTE_CAP_MS)} ms (another server holds the leadership, or etcd is unreachable)`);
    };
    pair.promote(Math.min(f.waitMs, PROMOTE_CAP_MS)).then(answer, () => answer(undefined));
  }

  #onHello(f: HelloFrame): void {
    const lo = Math.max(f.minVersion, PROTO.MIN_VERSION);
    const hi = Math.min(f.maxVersion, PROTO.VERSION);
    if (lo > hi) {
      const theirs = f.minVersion === f.maxVersion ? `version ${f.minVersion}` : `versions ${f.minVersion}..${f.maxVersion}`;
      const ours = PROTO.MIN_VERSION === PROTO.VERSION ? `version ${PROTO.VERSION}` : `versions ${PROTO.MIN_VERSION}..${PROTO.VERSION}`;
      return this.#protocolClose('VERSION', `no common protocol version: the client speaks ${theirs}, this server speaks ${ours}`);
    }
    // The silence bound goes in WELCOME as a u32 (2 x the ping interval).
    if (f.keepaliveMs > this.#deps.cfg.maxClientKeepaliveMs)
      return this.#refuseHello(`keep-alive: a ping interval of ${f.keepaliveMs} ms is longer than this server allows (${this.#deps.cfg.maxClientKeepaliveMs} ms, maxClientKeepaliveMs)`);
    const key = this.#deps.key;
    if (key) {
      // A client without the key learns nothing: not the mechanism, not the
      // server's pid, and no request is served (auth.ts).
      if (!f.auth) return this.#authClose('HELLO without the AUTH flag', AUTH_REQUIRED, f);
      const hs = new ServerHandshake(key, f);
      this.#challenge = { hs, hello: f, version: hi };
      return this.#send(hs.challenge());
    }
    this.#welcome(f, hi);
  }

  #onAuth(f: ClientFrame): void {
    const c = this.#challenge;
    if (!c) return;
    this.#challenge = undefined;
    if (f.type !== 'AUTH') return this.#authClose(`${f.type} instead of AUTH`, AUTH_REQUIRED, c.hello);
    const ok = c.hs.verify(f);
    if (!ok) return this.#authClose('wrong key (the client\'s proof does not match)', AUTH_FAILED, c.hello);
    this.#send(ok);
    this.#welcome(c.hello, c.version);
  }

  #authClose(why: string, text: string, f: HelloFrame): void {
    logAuthRefusal(this.#log, { clientPid: f.pid, clientHost: f.host, clientProgram: f.program }, `client refused: ${why}`);
    this.close(`authentication: ${why}`, { type: 'ERROR', requestId: 0, code: 'AUTH', text });
  }

  #welcome(f: HelloFrame, hi: number): void {
    this.#hello = f;
    if (this.#helloTimer) clearTimeout(this.#helloTimer);
    this.#version = hi;
    // The silence bound: ours, or twice the client's ping interval if that
    // is longer. A client that never pings (0) is left to TCP keep-alive:
    // a preloaded program's connection (the broker hands it over with
    // keepalive 0) cannot ping, and it ends the program when it is lost. A
    // live client that holds such connections idle is bounded by the
    // connections-per-address cap (listener.ts), not by silence.
    this.#silenceMs = f.keepaliveMs === 0 ? 0 : Math.max(this.#deps.cfg.keepaliveMs, 2 * f.keepaliveMs);
    // A client's TIMEOUT below our interim period would take an ordinary
    // lock wait for a dead server: its JDLS options (HELLO) name it, and this
    // connection's WAITING frames come at a third of it (issue 14).
    this.#interimMs = interimFor(this.#deps.cfg.interimMs, f.options);
    // The client's claims under names of their own: its pid must never
    // replace the server's `pid` in a log line.
    this.#log = this.#log.child({ clientPid: f.pid, clientPort: f.port, clientHost: f.host, clientProgram: f.program });
    this.#log.info({ options: f.options, version: hi }, 'client connected');
    this.#tokens = f.tokens === true;
    this.#infoOffered = this.#deps.releaseDir !== undefined && f.info === true;
    this.#send({
      type: 'WELCOME', requestId: 0, version: hi, mechanism: this.#deps.mech.kind, serverPid: process.pid,
      session: this.id, interimMs: this.#interimMs, keepaliveMs: this.#silenceMs, clientAddr: this.ip,
      server: SERVER_HOST.slice(0, PROTO.MAX_STR), ...(this.#tokens ? { tokens: true as const } : {}),
      // Only to a client that said it knows the flag: an older one refuses an unknown WELCOME flag.
      ...(this.#infoOffered ? { info: true as const } : {}),
      // Only to a PAIR client, and only with a witness (docs/protocol.md, "Pairs and the witness").
      ...(f.pair && this.#deps.pair?.leadership.witnessed ? { witness: { role: this.#deps.pair.leadership.role, term: this.#deps.pair.leadership.term } } : {}),
    });
    this.#infoStart(f);
  }

  #refuseHello(reason: string): void {
    this.#log.warn({ reason }, 'HELLO refused: closing the connection');
    this.close(`HELLO refused: ${reason}`, { type: 'ERROR', requestId: 0, code: 'BAD_ARGUMENT', text: reason.slice(0, PROTO.MAX_STR) });
  }

  // ===== limits (quota.ts) ==================================================

  /**
   * Locks this connection holds or waits for, in all: records and OSLOCKS
   * (a waiting LOCK is an entry in the table too), range lock files (held
   * or waited in).
   */
  #units(): number {
    return this.#held.count + this.#waits.size + (this.#ranges?.units ?? 0);
  }

  /** Keep this connection's part of its address's count current (after every change; cheap when nothing changed). */
  #syncCount(): void {
    const n = this.#closed ? 0 : this.#units();
    if (n !== this.#counted) {
      addressLocks.add(this.ip, n - this.#counted);
      this.#counted = n;
    }
  }

  /** Why one more held lock is refused, or undefined. `descriptor`: it may cost this process a descriptor (OS locks, ranges). */
  #lockLimit(descriptor = false): string | undefined {
    this.#syncCount();
    const l = this.#deps.limits;
    if (this.#counted >= l.perConnection)
      return `this connection holds ${this.#counted} locks, the most allowed (maxLocksPerClient, connectionSharePct of the table)`;
    const a = addressLocks.get(this.ip);
    if (a >= l.perAddress)
      return `the connections from ${this.ip} hold ${a} locks, the most allowed for one address (maxLocksPerAddress, addressSharePct of the table)`;
    if (descriptor) {
      const d = this.#deps.descriptors();
      if (d >= lockDescriptors.max)
        return `this lock server has ${d} lock files open, the most it allows (half its open-files limit)`;
    }
    return undefined;
  }

  /** Why one more waiting request is refused, or undefined. */
  #waitLimit(descriptor = false): string | undefined {
    const n = this.#waits.size + (this.#ranges?.waiting ?? 0);
    if (n >= this.#deps.cfg.maxOutstanding)
      return `this connection has ${n} lock requests waiting, the most allowed (maxOutstanding)`;
    return this.#lockLimit(descriptor);
  }

  #takeThread(): string | undefined {
    if (this.#threads >= this.#deps.limits.blockingPerConnection)
      return `this connection has ${this.#threads} waits that each hold a thread, the most allowed (a quarter of maxBlockingWaits)`;
    if (!blockingWaits.take())
      return `this lock server has ${blockingWaits.used} waits that each hold a thread, the most allowed (maxBlockingWaits)`;
    this.#threads++;
    return undefined;
  }

  #giveThread(): void {
    if (this.#threads > 0) {
      this.#threads--;
      blockingWaits.give();
    }
  }

  // ===== owners and files ===================================================

  #owner(tid: number, create: boolean): Owner | undefined {
    let o = this.#owners.get(tid);
    if (o || !create) return o;
    const h = this.#hello;
    if (!h) throw new JdlsError('BAD_ARGUMENT', 'no HELLO');
    if (this.#owners.size >= MAX_IDLE_OWNERS) this.#forgetIdleOwners();
    // The lock-server process holds the entries (pid: its liveness decides
    // whether they are orphaned); the client's pid, thread, port and address
    // name the owner - what -dvL shows - and this connection is part of it:
    // pid and tid are only what the client says, so without the connection
    // any program that reaches the server could present another client's
    // and release or re-take its locks, and closing one of two connections
    // that present the same ones would release the other's.
    o = makeOwner({ pid: process.pid, ownerPid: h.pid, ownerTid: tid, port: h.port, ip: this.ip, conn: this.#conn });
    this.#owners.set(tid, o);
    return o;
  }

  /** An owner for a request that needs one but must not create state (STATUS). */
  #ownerFor(tid: number): Owner {
    const o = this.#owner(tid, false);
    if (o) return o;
    const h = this.#hello;
    if (!h) throw new JdlsError('BAD_ARGUMENT', 'no HELLO');
    return makeOwner({ pid: process.pid, ownerPid: h.pid, ownerTid: tid, port: h.port, ip: this.ip, conn: this.#conn });
  }

  #forgetIdleOwners(): void {
    const waiting = new Set<number>();
    for (const w of this.#waitTids.values()) waiting.add(w);
    for (const tid of this.#owners.keys()) {
      if (this.#held.idle(tid) && !waiting.has(tid)) {
        this.#owners.delete(tid);
        this.#held.forget(tid);
      }
    }
  }

  /** request id -> tid of waiting lock requests */
  #waitTids = new Map<number, number>();

  #file(inode: bigint, dev: bigint): { id: FileId; key: string } {
    let f = this.#files.get(inode, dev);
    if (f) return f;
    f = { id: fileId(inode, dev), key: fileKey(inode, dev) };
    if (this.#files.size >= MAX_FILES) this.#files.clear();
    this.#files.set(inode, dev, f);
    return f;
  }


  // ===== requests ===========================================================

  /** Whether a request with this id still waits for its final answer. */
  #outstanding(rid: number): boolean {
    return this.#waits.has(rid) || this.#cancels.has(rid) || this.#infoQueries.has(rid) || this.#promotes.has(rid) || (this.#ranges?.isWaiting(rid) ?? false);
  }

  #onLock(f: LockFrame): void {
    const rid = f.requestId;
    // A witnessed follower grants only mirrors of its leader's grants.
    if (!f.mirror && !this.#mayGrant()) return this.#error(rid, 'NOT_LEADER', this.#notLeaderText());
    // latin1: one char per byte, the cheapest exact text of the key bytes.
    const file = this.#file(f.file.inode, f.file.dev);
    const fk = file.key;
    let mech = this.#deps.mech;
    if (f.osLocks && mech.kind !== 'os') {
      try {
        mech = this.#deps.osLocks();
      } catch (e) {
        // Not an error of this server (e.g. OS locks not in this build): the client is told.
        return this.#answerError(rid, e);
      }
    }
    const [key, keyText] = lockKeyOf(f, mech);
    const renew = this.#held.has(f.tid, fk, keyText);
    if (!renew) {
      const why = this.#lockLimit(mech.kind === 'os');
      if (why) return this.#error(rid, 'LIMIT', why);
    }
    if (mech !== this.#deps.mech) this.#used.add(mech);
    // OS locks: the kernel keeps a file's locks in one list that every
    // request on that file walks (20,000 keys of one client made the others'
    // pairs 13x slower): a cap per connection and file.
    if (mech.kind === 'os' && !renew && this.#held.osInFile(fk) >= this.#deps.cfg.maxOsLocksPerFile)
      return this.#error(rid, 'LIMIT', `this connection holds ${this.#held.osInFile(fk)} OS locks in this file, the most allowed (maxOsLocksPerFile)`);
    const owner = this.#owner(f.tid, true);
    if (!owner) throw new JdlsError('BAD_ARGUMENT', 'no owner');

    // SERVER2 mirroring: the primary's token for this grant. Raised before
    // the lock is taken, so that this grant's own token (and every later
    // one) outranks the primary's epoch: after a failover the promoted
    // secondary's tokens are higher than any the old primary gave.
    if (f.fence !== undefined && mech.raiseTokenFloor?.(f.fence))
      this.#log.warn({ fence: f.fence.toString() }, `FENCE raised this server's token epoch above ${f.fence >> 44n} (a SERVER2 client mirroring its primary's grant)`);
    const r = mech.tryLock(owner, file.id, key, f.mode);
    if (r.granted) {
      this.#held.add(f.tid, fk, keyText, mech);
      if (this.#info) this.#infoGranted(f.tid, fk, keyText, f.mode, r.token);
      return this.#granted(rid, r.token);
    }
    if (f.nowait) return this.#send({ type: 'LOCKED', requestId: rid, holder: wireHolder(r.holder) });
    const why = this.#waitLimit(mech.kind === 'os');
    if (why) return this.#error(rid, 'LIMIT', why);
    // An OS record lock waits on a native thread of its own (ofd.ts); the table's waits share one.
    const thread = mech.kind === 'os';
    if (thread) {
      const no = this.#takeThread();
      if (no) return this.#error(rid, 'LIMIT', no);
    }
    this.#wait(f, mech, owner, file.id, fk, key, keyText, thread);
  }

  /**
   * A lock request that waits: queued in the mechanism, answered when it
   * settles. With the shm table it settles synchronously inside the release
   * that hands it the lock (LockTable.wait), so the new holder's GRANTED is
   * written before the releaser's RELEASED.
   */
  #wait(f: LockFrame, mech: RecordLocks, owner: Owner, file: FileId, fk: string, key: Buffer, keyText: string, thread: boolean): void {
    const rid = f.requestId;
    const w: Wait = {
      cancel: noop, timer: undefined, cancelled: false, outcome: undefined, after: undefined,
      // The key's text, made already for HeldLocks: no new allocation per wait.
      target: { tid: f.tid, inode: f.file.inode, dev: f.file.dev, keyText, mode: f.mode, os: mech.kind === 'os' && mech !== this.#deps.mech, sinceMs: Date.now() },
    };
    // In the maps first: the mechanism may settle it before startWait returns.
    this.#waits.set(rid, w);
    this.#waitTids.set(rid, f.tid);
    const settle = (err?: Error, token?: bigint): void => {
      if (w.timer) clearInterval(w.timer);
      if (this.#info) this.#infoUnblock(rid);
      this.#waits.delete(rid);
      this.#waitTids.delete(rid);
      if (thread) this.#giveThread();
      if (!err) {
        w.outcome = 'granted';
        if (this.#closed) {
          // Granted in the race with the disconnect: nobody wants it.
          try { mech.unlock(owner, file, key); } catch { /* closed mechanism */ }
        } else if (!f.mirror && !this.#mayGrant()) {
          this.#held.add(f.tid, fk, keyText, mech); // released by the close
          this.#grantedAfterLapse(rid);
        } else {
          this.#held.add(f.tid, fk, keyText, mech);
          if (this.#info) this.#infoGranted(f.tid, fk, keyText, f.mode, token);
          this.#granted(rid, token);
        }
      } else if (err instanceof JdlsError && err.code === 'ABORTED') {
        w.outcome = 'cancelled';
        this.#error(rid, 'CANCELLED', w.cancelled ? 'lock request withdrawn (CANCEL)' : 'lock request withdrawn');
      } else {
        w.outcome = 'failed';
        // DEADLOCK (BREAK_DEADLOCK): this request was the cycle's victim and
        // holds nothing for it; the client's other locks and the connection
        // stay. Answered before the log line (a synchronous write): the
        // client waits for the answer, not for the log.
        this.#answerError(rid, err);
        if (err instanceof JdlsError && err.code === 'DEADLOCK')
          this.#rate.write('info', { requestId: rid, code: err.code, reason: err.message }, 'lock request refused: deadlock');
      }
      w.after?.();
    };
    w.cancel = startWait(mech, owner, file, key, f.mode, settle, f.breakDeadlock ? BREAK_DEADLOCK : NO_WAIT_OPTIONS);
    if (w.outcome === undefined && this.#info) this.#infoBlock(rid, f, mech, file);
    if (w.outcome !== undefined || f.noInterim) return;
    // "Distributed lock retries": tell the client who it is waiting for,
    // every interim period, and count them in the header - once per the
    // server's interimMs, so that a short-TIMEOUT client's more frequent
    // frames do not inflate the retry figure.
    const perRetry = Math.max(1, Math.round(this.#deps.cfg.interimMs / this.#interimMs));
    let sent = 0;
    w.timer = setInterval(() => {
      try {
        const s = mech.status(owner, file, key);
        if (s.code >= 0 || !s.holder) return; // granted meanwhile: the answer is on its way
        if (++sent % perRetry === 0) {
          this.#deps.stats.lockRetry();
          this.#infoStats.retries++;
        }
        this.#send({ type: 'WAITING', requestId: rid, holder: wireHolder(s.holder) });
      } catch (e) {
        this.#log.warn({ err: e, requestId: rid }, 'interim status failed');
      }
    }, this.#interimMs);
    w.timer.unref();
  }

  #onCancel(f: CancelFrame): void {
    const w = this.#waits.get(f.target);
    const rid = f.requestId;
    const ranged = w ? undefined : this.#ranges?.cancel(f.target);
    if (ranged) {
      this.#cancels.add(rid);
      void ranged.then((count) => {
        this.#cancels.delete(rid);
        this.#send({ type: 'RELEASED', requestId: rid, count });
      });
      return;
    }
    if (!w) return this.#send({ type: 'RELEASED', requestId: rid, count: 0 });
    // The lock's own final answer goes first, then the CANCEL's: 1 if it
    // withdrew the wait, 0 if the grant won the race.
    const first = !w.cancelled;
    this.#cancels.add(rid);
    const answer = (): void => {
      this.#cancels.delete(rid);
      this.#send({ type: 'RELEASED', requestId: rid, count: first && w.outcome === 'cancelled' ? 1 : 0 });
    };
    const prev = w.after;
    w.after = prev ? () => { prev(); answer(); } : answer;
    if (w.cancelled) return; // a second CANCEL: answered with the first
    w.cancelled = true;
    w.cancel(); // settles now (shm) or soon (OS locks); then `after` runs
  }

  #onUnlock(f: UnlockFrame): void {
    const owner = this.#owner(f.tid, false);
    if (!owner) return this.#send({ type: 'RELEASED', requestId: f.requestId, count: 0 });
    const file = this.#file(f.file.inode, f.file.dev);
    // Only a connection that used OSLOCKS has locks in two mechanisms. (An
    // OFFSET key the OS locks hold is remembered under its own text: lockKeyOf.)
    const text = f.key.toString('latin1');
    const mech = this.#used.size === 1 ? this.#deps.mech
      : (f.offset ? this.#held.get(f.tid, file.key, OFFSET_TEXT + text) : undefined) ?? this.#held.get(f.tid, file.key, text) ?? this.#deps.mech;
    const [key, keyText] = lockKeyOf(f, mech);
    const ok = mech.unlock(owner, file.id, key);
    this.#held.delete(f.tid, file.key, keyText);
    this.#send({ type: 'RELEASED', requestId: f.requestId, count: ok ? 1 : 0 });
  }

  #onUnlockFile(f: UnlockFileFrame): void {
    const owner = this.#owner(f.tid, false);
    if (!owner) return this.#send({ type: 'RELEASED', requestId: f.requestId, count: 0 });
    const file = this.#file(f.file.inode, f.file.dev);
    let n = 0;
    for (const m of this.#used) n += m.unlockAll(owner, file.id);
    this.#held.deleteFile(f.tid, file.key);
    this.#send({ type: 'RELEASED', requestId: f.requestId, count: n });
  }

  #onUnlockAll(f: UnlockAllFrame): void {
    let n = 0;
    const tids = f.allThreads ? [...this.#owners.keys()] : [f.tid];
    for (const tid of tids) {
      const owner = this.#owner(tid, false);
      if (!owner) continue;
      for (const m of this.#used) n += m.unlockAll(owner);
      this.#held.deleteTid(tid);
    }
    this.#send({ type: 'RELEASED', requestId: f.requestId, count: n });
  }

  #onStatus(f: StatusFrame): void {
    // The mechanism the request names: the OS record locks with the flag
    // STATUS_OSLOCKS (a client that locks with OSLOCKS), else the server's.
    // Not guessed from what the connection used: a connection that had
    // taken one OSLOCKS lock was once told "free" about every key it held
    // in the table.
    let mech = this.#deps.mech;
    if (f.osLocks && mech.kind !== 'os') mech = this.#deps.osLocks();
    const owner = this.#ownerFor(f.tid);
    const file = this.#file(f.file.inode, f.file.dev).id;
    if (f.probe) {
      // F_GETLK: another owner's lock that blocks the probe's mode.
      // No token: a probe reports another owner's lock (#send adds 0 under TOKENS).
      const h = mech.conflict(owner, file, lockKeyOf(f, mech)[0], f.probe);
      if (!h) return this.#send({ type: 'STATUS_RESULT', requestId: f.requestId, code: 0 });
      return this.#send({ type: 'STATUS_RESULT', requestId: f.requestId, code: h.mode === 'write' ? -2 : -1, holder: wireHolder(h) });
    }
    const [key] = lockKeyOf(f, mech);
    const s = mech.status(owner, file, key);
    if (s.code < 0) {
      const holder: WireHolder = s.holder
        ? wireHolder(s.holder)
        : { mode: s.code === -2 ? 'write' : 'read', port: 0, pid: 0, ownerPid: 0, ownerTid: 0, addr: '0.0.0.0' };
      return this.#send({ type: 'STATUS_RESULT', requestId: f.requestId, code: Math.max(-3, s.code), holder });
    }
    const code = Math.min(3, s.code);
    // The caller's own lock's token (code 1/2), for a client that checks it still holds what it fenced with.
    if (this.#tokens && (code === 1 || code === 2)) return this.#send({ type: 'STATUS_RESULT', requestId: f.requestId, code, token: s.token ?? 0n });
    this.#send({ type: 'STATUS_RESULT', requestId: f.requestId, code });
  }

  /** GRANTED, with the grant's token when the connection negotiated TOKENS (0 = the mechanism gave none). */
  #granted(requestId: number, token: bigint | undefined): void {
    this.#send(this.#tokens ? { type: 'GRANTED', requestId, token: token ?? 0n } : { type: 'GRANTED', requestId });
  }

  // ===== info records (INFO, INFO_QUERY: docs/info-records.md) =============

  /** A client's INFO: what it says about itself for its info record. */
  #onInfo(f: InfoFrame): void {
    if (!this.#infoOffered) return this.#protocolClose('PROTOCOL', 'INFO, but WELCOME did not offer INFO (the client\'s HELLO did not have the flag)');
    if ('bad' in f) {
      // A sound frame with a bad payload: the client's bug, not the stream's. Warn (rate-limited), go on.
      this.#rate.write('warn', { reason: f.bad, text: f.raw.subarray(0, 200).toString('utf8') }, 'INFO ignored: its JSON is not a client info');
      return;
    }
    this.#clientInfo = f.info;
    const m = f.info.moment;
    if (m === 'change') this.#info?.change();
    else this.#info?.moment(m);
  }

  /** What the client said in its last valid INFO (its record's user, program, files, stats). */
  #clientInfo: ClientInfo | undefined;

  // The session's info record (docs/info-records.md): written by this
  // lock-server process for its client from the session's own state (locks,
  // wait: authoritative) and the client's INFO (user, files, statistics).
  // Every hook is behind `if (this.#info)`: with records off (JDLS_INFO=0,
  // or no release dir) a request pays one property test.

  #info: InfoWriter | undefined;
  /** WELCOME had flag INFO: the client may send INFO */
  #infoOffered = false;
  #connectedMs = Date.now();
  /** the server's own count for this client (the record's session.stats) */
  #infoStats = { locks: 0, waits: 0, waitMs: 0, retries: 0, requests: 0 };
  /** HeldLocks id -> what the record shows of a lock besides its presence (entries of released locks are pruned at write time) */
  #infoMeta = new Map<string, { mode: 'read' | 'write'; sinceMs: number; token: bigint | undefined }>();
  /** waiting LOCK request id -> what the record shows as `waiting` */
  #infoWaits = new Map<number, InfoWait>();

  #infoStart(h: HelloFrame): void {
    const dir = this.#deps.releaseDir;
    if (dir === undefined || !infoEnabled()) return;
    // Loopback clients show 127.0.0.1 however they came (::1, 127.0.0.2): the guide's "through loopback".
    const ipaddr = /^(127\.|::1$)/.test(this.ip) ? '127.0.0.1' : this.ip;
    this.#info = new InfoWriter({
      releaseDir: dir, port: h.port, ipaddr, pid: h.pid, build: () => this.#infoRecord(ipaddr),
      onSkip: (why) => this.#log.debug({ why }, 'no info record for this client'),
    });
    this.#info.moment('start');
  }

  #infoGranted(tid: number, fk: string, keyText: string, mode: 'read' | 'write', token: bigint | undefined): void {
    this.#infoStats.locks++;
    this.#infoMeta.set(`${tid}|${fk}|${keyText}`, { mode, sinceMs: Date.now(), token });
  }

  #infoBlock(rid: number, f: LockFrame, mech: RecordLocks, file: FileId): void {
    const w: InfoWait = { inode: String(f.file.inode), dev: String(f.file.dev), key: f.key.toString('latin1'), mode: f.mode, kind: mech.kind === 'os' ? 'os' : 'record', sinceMs: Date.now() };
    if (mech instanceof LockTable) w.lockNo = lockNo(mech.keyHash(file, f.key));
    this.#infoWaits.set(rid, w);
    this.#infoStats.waits++;
    this.#info?.moment('block');
  }

  #infoUnblock(rid: number): void {
    const w = this.#infoWaits.get(rid);
    if (!w) return;
    this.#infoWaits.delete(rid);
    this.#infoStats.waitMs += Date.now() - w.sinceMs;
    if (!this.#closed) this.#info?.moment('unblock');
  }

  #infoRecord(ipaddr: string): InfoRecord {
    const h = this.#hello as HelloFrame;
    const ci = this.#clientInfo;
    const files: InfoFile[] = ci?.files ?? [];
    const names = new Map<string, string>();
    for (const f of files) if (f.name !== undefined) names.set(`${f.inode}:${f.dev}`, f.name);
    const locks: InfoLock[] = [];
    const meta = new Map<string, { mode: 'read' | 'write'; sinceMs: number; token: bigint | undefined }>();
    let omitted = 0;
    for (const e of this.#held.entries()) {
      const m = this.#infoMeta.get(e.id);
      if (m) meta.set(e.id, m);
      if (locks.length >= MAX_RECORD_LOCKS) {
        omitted++;
        continue;
      }
      const [inode = '0', dev = '0'] = e.file.split(':');
      const offset = e.key.startsWith(OFFSET_TEXT);
      const key = offset ? e.key.slice(1) : e.key;
      const l: InfoLock = { inode, dev, key, mode: m?.mode ?? 'write', kind: e.mech.kind === 'os' ? 'os' : 'record', sinceMs: m?.sinceMs ?? this.#connectedMs };
      const name = names.get(e.file);
      if (name !== undefined) l.file = name;
      if (m?.token) l.token = m.token.toString();
      if (e.mech instanceof LockTable) l.lockNo = lockNo(e.mech.keyHash(fileId(BigInt(inode), BigInt(dev)), Buffer.from(key, 'latin1')));
      if (e.tid !== 0) l.tid = e.tid;
      locks.push(l);
    }
    this.#infoMeta = meta;
    let waiting: InfoWait | undefined;
    for (const w of this.#infoWaits.values()) if (!waiting || w.sinceMs < waiting.sinceMs) waiting = w;
    if (waiting) {
      const name = names.get(`${waiting.inode}:${waiting.dev}`);
      if (name !== undefined) waiting = { ...waiting, file: name };
    }
    const r: InfoRecord = {
      version: INFO_VERSION, port: h.port, pid: h.pid, ipaddr, host: h.host, user: ci?.user ?? '', program: h.program,
      startedMs: this.#connectedMs, updatedMs: 0, writer: { kind: 'lockserver', pid: process.pid, start: selfStart() },
      session: { pid: process.pid, conn: this.#conn, remote: `${this.ip}:${this.sock.remotePort ?? 0}`, connectedMs: this.#connectedMs, stats: { ...this.#infoStats } },
      files, locks, stats: ci?.stats ?? noStats(),
    };
    if (waiting) r.waiting = waiting;
    if (omitted > 0) r.locksOmitted = omitted;
    return r;
  }

  /**
   * INFO_QUERY: the host's info records (reader.ts), filtered, as the JSON
   * of an InfoAnswer in INFO_RESULT chunks. Sent as the socket drains: a
   * big answer must not trip maxSendBacklog (that would close the
   * connection of the client that asked).
   */
  #onInfoQuery(f: InfoQueryFrame): void {
    const dir = this.#deps.releaseDir;
    if (dir === undefined) throw new JdlsError('NOT_SUPPORTED', 'this lock server keeps no info records');
    const listing = readInfoDir(dir, { filter: f.filter });
    const answer: InfoAnswer = { ...listing, host: SERVER_HOST };
    const text = Buffer.from(JSON.stringify(answer), 'utf8');
    const rid = f.requestId;
    let off = 0;
    this.#infoQueries.add(rid);
    const pump = (): void => {
      while (!this.#closed) {
        const end = Math.min(off + INFO_CHUNK, text.length);
        const more = end < text.length;
        this.#send({ type: 'INFO_RESULT', requestId: rid, more, chunk: text.subarray(off, end) });
        off = end;
        if (!more) break;
        if (this.sock.writableLength >= this.#deps.cfg.maxSendBacklog / 2) {
          this.sock.once('drain', pump);
          return;
        }
      }
      this.#infoQueries.delete(rid);
    };
    pump();
  }

  // ===== output =============================================================

  #send(frame: ServerFrame): void {
    if (this.#closed) return;
    let f = frame;
    // The token's presence is the connection's, not the caller's: under
    // TOKENS every GRANTED and STATUS_RESULT has one (range locks, probes and
    // other owners' locks give 0), without it none (an old client refuses it).
    if ((f.type === 'GRANTED' || f.type === 'STATUS_RESULT') && (f.token !== undefined) !== this.#tokens) {
      if (this.#tokens) f = { ...f, token: 0n };
      else { const { token: _drop, ...rest } = f; f = rest; }
    }
    this.#syncCount();
    let buf: Buffer;
    try {
      buf = encode(f, this.#version);
    } catch (e) {
      // A value the protocol cannot carry (e.g. a holder address that is
      // not IP): that request fails, the connection stays.
      this.#log.error({ err: e, type: f.type }, 'cannot encode an answer');
      if (f.type !== 'ERROR') this.#error(f.requestId, 'SYSTEM', `answer could not be encoded: ${(e as Error).message}`);
      return;
    }
    this.sock.write(buf);
    if (this.sock.writableLength > this.#deps.cfg.maxSendBacklog)
      this.close(`client does not read: ${this.sock.writableLength} bytes queued (maxSendBacklog)`);
  }

  #error(requestId: number, code: ProtoErrorName, text: string): void {
    this.#send({ type: 'ERROR', requestId, code, text: text.slice(0, PROTO.MAX_STR) });
  }

  #answerError(requestId: number, e: unknown): void {
    const w = wireError(e);
    this.#error(requestId, w.code, w.text);
  }

  /** A protocol fault: log, tell the client where possible, close. */
  #protocolClose(code: 'PROTOCOL' | 'VERSION', reason: string): void {
    this.#log.warn({ code, reason }, 'protocol error: closing the connection');
    this.close(`protocol error: ${reason}`, { type: 'ERROR', requestId: 0, code, text: reason.slice(0, PROTO.MAX_STR) });
  }

  // ===== keep-alive =========================================================

  #armKeepalive(ms: number): void {
    if (this.#keepTimer) clearTimeout(this.#keepTimer);
    this.#keepTimer = undefined;
    if (ms <= 0 || this.#closed) return;
    this.#keepTimer = setTimeout(() => this.#checkKeepalive(), ms);
    this.#keepTimer.unref();
  }

  #checkKeepalive(): void {
    if (this.#closed) return;
    if (this.#silenceMs === 0) return; // the client announced it never pings
    const silent = Date.now() - this.#lastRx;
    if (silent >= this.#silenceMs) {
      const why = `keep-alive: no complete frame from the client for ${silent} ms (limit ${this.#silenceMs} ms)`;
      this.close(why, { type: 'ERROR', requestId: 0, code: 'LIMIT', text: why });
      return;
    }
    this.#armKeepalive(this.#silenceMs - silent);
  }

  // ===== the administrator (admin.ts) =======================================
  // Separate from the conversation: the listener asks, over the IPC channel,
  // what this connection holds and waits for, and may release its locks or
  // drop it (docs/operations.md#stuck-locks-and-client-sessions).

  /** The connection as `jdls -dvL` and `{"cmd":"sessions"}` show it. */
  adminView(): SessionView {
    const h = this.#hello;
    const locks: SessionLock[] = [];
    for (const e of this.#held.entries()) {
      if (locks.length >= SESSION_LOCKS_LISTED) break;
      const { inode, dev } = splitFileKey(e.file);
      const raw = e.key.startsWith(OFFSET_TEXT) ? e.key.slice(OFFSET_TEXT.length) : e.key;
      const lock: SessionLock = {
        tid: e.tid, inode: inode.toString(), dev: dev.toString(), key: raw, keyHex: Buffer.from(raw, 'latin1').toString('hex'),
        mode: 'write', kind: e.mech === this.#deps.mech ? 'record' : 'os',
      };
      const owner = this.#owners.get(e.tid);
      if (owner) {
        try {
          const st = e.mech.status(owner, fileId(inode, dev), heldKeyBytes(e.key));
          lock.mode = st.code === 1 ? 'read' : 'write';
          if (st.token) lock.token = st.token.toString();
        } catch {
          /* shown without its mode and token */
        }
      }
      locks.push(lock);
    }
    const waiting: SessionWait[] = [];
    for (const w of this.#waits.values()) {
      const t = w.target;
      if (!t) continue;
      const key = t.keyText.startsWith(OFFSET_TEXT) ? t.keyText.slice(OFFSET_TEXT.length) : t.keyText;
      waiting.push({ tid: t.tid, inode: t.inode.toString(), dev: t.dev.toString(), key, keyHex: Buffer.from(key, 'latin1').toString('hex'), mode: t.mode, kind: t.os ? 'os' : 'record', sinceMs: t.sinceMs });
    }
    return {
      lockServer: process.pid, conn: this.id, addr: this.ip, remotePort: this.sock.remotePort ?? 0,
      clientPort: h ? h.port : null, clientPid: h ? h.pid : null, host: h?.host ?? '', program: h?.program ?? '',
      connectedMs: this.connectedMs, mechanism: this.#deps.mech.kind, lockCount: this.#held.count, locks, ranges: this.#ranges?.units ?? 0,
      rangeWaits: this.#ranges?.waiting ?? 0, waiting,
    };
  }

  /**
   * Release this connection's locks that match `t` (an administrator's
   * release of a stuck lock). The connection stays; its bookkeeping drops
   * them, so the client's later UNLOCK of one answers as for a lock not
   * held (count 0). The table's and the installation's token counters only
   * rise, so the key's next grant carries a higher token (docs/fencing.md).
   */
  /**
   * The locks adminRelease would release, chosen before any is: a release
   * hands the lock to a waiter at once (perhaps another session of this
   * process, or this one's other thread), and that fresh grant must not be
   * released too. The lock server selects in every session, then releases.
   */
  adminSelect(t: ReleaseTarget): AdminSelection {
    const h = this.#hello;
    if (!h || this.#closed) return [];
    if (t.port !== undefined && h.port !== t.port) return [];
    const files = t.files ? new Set(t.files.map((f) => `${f.inode}:${f.dev}`)) : undefined;
    const out: AdminSelection = [];
    for (const e of this.#held.entries()) {
      if (files && !files.has(e.file)) continue;
      const raw = e.key.startsWith(OFFSET_TEXT) ? e.key.slice(OFFSET_TEXT.length) : e.key;
      if (t.key !== undefined && raw !== t.key) continue;
      out.push(e);
    }
    return out;
  }

  adminRelease(t: ReleaseTarget, selected: AdminSelection = this.adminSelect(t)): ReleasedLock[] {
    const h = this.#hello;
    if (!h || this.#closed) return [];
    const out: ReleasedLock[] = [];
    for (const e of selected) {
      if (this.#held.get(e.tid, e.file, e.key) !== e.mech) continue; // released meanwhile
      const raw = e.key.startsWith(OFFSET_TEXT) ? e.key.slice(OFFSET_TEXT.length) : e.key;
      const owner = this.#owners.get(e.tid);
      if (!owner) continue;
      const { inode, dev } = splitFileKey(e.file);
      const file = fileId(inode, dev);
      const key = heldKeyBytes(e.key);
      let mode: 'read' | 'write' = 'write';
      let token: bigint | undefined;
      try {
        const st = e.mech.status(owner, file, key);
        mode = st.code === 1 ? 'read' : 'write';
        token = st.token;
      } catch {
        /* released without its mode and token */
      }
      let ok = false;
      try {
        ok = e.mech.unlock(owner, file, key);
      } catch (err) {
        this.#log.error({ err }, 'administrator release failed');
      }
      this.#held.delete(e.tid, e.file, e.key);
      if (!ok) continue;
      out.push({
        owner: { kind: 'remote', lockServer: process.pid, conn: this.id, addr: this.ip, remotePort: this.sock.remotePort ?? 0, port: h.port, pid: h.pid, tid: e.tid, host: h.host, program: h.program },
        inode: inode.toString(), dev: dev.toString(), key: raw, keyHex: Buffer.from(raw, 'latin1').toString('hex'), mode,
        kind: e.mech === this.#deps.mech ? 'record' : 'os', ...(token ? { token: token.toString() } : {}),
      });
    }
    if (out.length > 0) {
      this.#syncCount();
      this.#log.warn({ released: out.length, by: t.by }, `${out.length} lock${out.length === 1 ? '' : 's'} of this connection released by an administrator (${t.by})`);
    }
    return out;
  }

  /** Drop this one connection (an administrator's request): its locks are released as on any disconnect. */
  adminDrop(by: string): void {
    const why = `dropped by an administrator (${by})`;
    this.close(why, { type: 'ERROR', requestId: 0, code: 'SHUTDOWN', text: `the lock server closed this session: ${why}`.slice(0, PROTO.MAX_STR) });
  }

  // ===== the end ============================================================

  /**
   * Close the connection and release everything it holds at once: waiting
   * requests are withdrawn first (a grant racing the withdrawal is then held
   * and released by unlockAll), then every owner's locks in every mechanism
   * the connection used. Idempotent.
   */
  close(reason: string, last?: ServerFrame): void {
    if (this.#closed) return;
    if (last) {
      // "Exactly one final answer per request": while the connection can
      // still carry it, every request that waits gets its own final answer
      // before the connection-level ERROR (SHUTDOWN for SHUTDOWN, else
      // CANCELLED: the wait is withdrawn because the connection closes), and
      // a CANCEL that waited for its target is answered after it. Their
      // mechanisms settle later, into a closed session, which sends nothing.
      // NOT_LEADER: a SERVER2 client sends such a request again to its new primary (resilient.ts).
      const code: ProtoErrorName = last.type === 'ERROR' && (last.code === 'SHUTDOWN' || last.code === 'NOT_LEADER') ? last.code : 'CANCELLED';
      const text = code === 'CANCELLED' ? `lock request withdrawn: the connection is closing (${reason})` : `lock request ended: ${reason}`;
      for (const rid of [...this.#waits.keys(), ...(this.#ranges?.waitingIds() ?? [])]) this.#error(rid, code, text);
      for (const rid of this.#cancels) this.#send({ type: 'RELEASED', requestId: rid, count: 1 });
      for (const rid of this.#promotes) this.#error(rid, 'NOT_LEADER', `promotion not decided: the connection is closing (${reason})`);
      this.#promotes.clear();
      this.#cancels.clear();
      // Sent before #closed is set; then the socket ends after flushing it.
      try {
        this.sock.end(encode(last, this.#version));
      } catch {
        /* socket gone */
      }
    }
    this.#closed = true;
    if (this.#keepTimer) clearTimeout(this.#keepTimer);
    if (this.#helloTimer) clearTimeout(this.#helloTimer);
    const waiting = this.#waits.size;
    for (const w of [...this.#waits.values()]) {
      if (w.timer) clearInterval(w.timer);
      w.cancel();
    }
    let released = 0;
    if (INJECTED.has('keep-locks-on-disconnect')) {
      this.#log.error({ fault: 'keep-locks-on-disconnect' }, `FAULT INJECTION (${FAULT_ENV}): the closed connection's locks are NOT released`);
      this.#owners.clear();
    }
    for (const owner of this.#owners.values()) {
      for (const m of this.#used) {
        try {
          released += m.unlockAll(owner);
        } catch (e) {
          this.#log.error({ err: e }, 'could not release a closed connection\'s locks');
        }
      }
    }
    released += this.#ranges?.close() ?? 0;
    this.#info?.remove(); // any end: disconnect, drop, shutdown (a killed lock server leaves it stale: the monitor tidies)
    this.#held.clear();
    this.#owners.clear();
    this.#syncCount(); // closed: gives back the address's count
    this.#rate.flush();
    if (!last) this.sock.destroy();
    else setTimeout(() => this.sock.destroy(), 1000).unref();
    this.#log.info({ reason, released, waiting }, `connection closed (${reason}): ${released} lock${released === 1 ? '' : 's'} released`);
    try {
      this.#deps.onClose(this);
    } catch (e) {
      this.#log.error({ err: e }, 'session close callback failed');
    }
  }
}

/** The shortest WAITING interval a client's TIMEOUT can ask for (ms): below it the frames would be most of the traffic. */
export const MIN_INTERIM_MS = 10;

/**
 * The WAITING interval for a client whose HELLO options (its JDLS value)
 * are `options`: the server's `interimMs`, or a third of the client's
 * TIMEOUT if that is shorter, so that an ordinary lock wait is never taken
 * for a silent server (the client declares a server dead after TIMEOUT of
 * silence with an answer due). Options that do not parse leave the server's
 * period; TIMEOUT is read as the client reads it (src/client/jdls-env.ts:
 * seconds, decimals allowed).
 */
export function interimFor(interimMs: number, options: string): number {
  const m = /(?:^|,)\s*TIMEOUT\s*=\s*(\d+(?:\.\d*)?|\.\d+)\s*(?:,|$)/i.exec(options);
  if (!m) return interimMs;
  const timeoutMs = Number(m[1]) * 1000;
  if (!(timeoutMs > 0)) return interimMs;
  return Math.max(MIN_INTERIM_MS, Math.min(interimMs, Math.floor(timeoutMs / 3)));
}
