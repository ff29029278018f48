// codec.ts - frames to bytes and bytes to frames (docs/protocol.md).
//
// Owns: the byte layout of every frame, length and body checks, and the
// streaming reader that cuts a TCP byte stream into frames. Does not own:
// which frame may come when (src/server/session.ts, src/client/client.ts) or
// what a request does. Parse, then execute: the reader returns typed frames
// or throws a ProtocolError, and never touches a lock.
import net from 'node:net';
import { ipv6Bytes, ipv6Text } from '../ip.js';
import { PROTO, FrameType, FrameFlag, Mechanism, ProtoError, Auth, Token, Role, type ProtoErrorName } from './constants.js';
import type {
  Frame, ClientFrame, ServerFrame, WireFile, WireHolder, WireMode, ProtocolFault, RangeSpace, RefusedRequest,
} from './frames.js';
import { checkClientInfo, checkInfoFilter } from '../info/format.js';

/** A byte stream that is not a valid frame sequence; the connection must close. */
export class ProtocolError extends Error {
  readonly fault: ProtocolFault;
  /**
   * FrameReader.push: the whole frames of the same push that came before
   * the bad one. The server answers them before it closes (every request it
   * read gets its final answer); a client may ignore them.
   */
  before: (Frame | RefusedRequest)[] = [];
  constructor(fault: ProtocolFault) {
    super(fault.reason);
    this.name = 'ProtocolError';
    this.fault = fault;
  }
}

/**
 * A value fault in a request whose frame is otherwise sound (Reader in
 * refusing mode): the request is answered with ERROR `code`, the connection
 * stays. Only thrown and caught inside this module.
 */
class ValueFault extends Error {
  readonly code: RefusedRequest['code'];
  constructor(code: RefusedRequest['code'], reason: string) {
    super(reason);
    this.code = code;
  }
}

const fail = (reason: string, code: ProtocolFault['code'] = 'PROTOCOL'): never => {
  throw new ProtocolError({ code, reason });
};

const typeName = new Map<number, keyof typeof FrameType>(
  Object.entries(FrameType).map(([k, v]) => [v, k as keyof typeof FrameType]),
);
const typeCode = new Map<string, number>(Object.entries(FrameType));
const errorName = new Map<number, ProtoErrorName>(
  Object.entries(ProtoError).map(([k, v]) => [v, k as ProtoErrorName]),
);
// A Map, not ProtoError[name]: an unchecked name would index Object.prototype.
const errorCode = new Map<string, number>(Object.entries(ProtoError));

// ===== writing ============================================================

/** An integer the field can carry, or a RangeError: a wrapped or truncated value would be a silent lie on the wire. */
function checkInt(v: number, min: number, max: number, what: string): number {
  if (!Number.isInteger(v) || v < min || v > max) throw new RangeError(`${what} ${v} is not an integer in ${min}..${max}`);
  return v;
}

/** The last file identity encoded / decoded, with its 16 bytes (see Writer.file, Reader.file). */
let lastEncoded: { inode: bigint; dev: bigint; bytes: Buffer } = { inode: -1n, dev: 0n, bytes: Buffer.alloc(16) };
let lastDecoded: WireFile & { bytes: Buffer } = { inode: 0n, dev: 0n, bytes: Buffer.alloc(16) };

class Writer {
  #buf = Buffer.allocUnsafe(1024);
  #len = 0;
  /** Start a frame (the writer is reused: see SCRATCH). */
  reset(): void { this.#len = 0; }
  #ensure(n: number): void {
    if (this.#len + n <= this.#buf.length) return;
    const next = Buffer.allocUnsafe(Math.max(this.#buf.length * 2, this.#len + n));
    this.#buf.copy(next, 0, 0, this.#len);
    this.#buf = next;
  }
  u8(v: number, what = 'u8'): this { checkInt(v, 0, 0xff, what); this.#ensure(1); this.#buf.writeUInt8(v, this.#len); this.#len += 1; return this; }
  u16(v: number, what = 'u16'): this { checkInt(v, 0, 0xffff, what); this.#ensure(2); this.#buf.writeUInt16BE(v, this.#len); this.#len += 2; return this; }
  u32(v: number, what = 'u32'): this { checkInt(v, 0, 0xffffffff, what); this.#ensure(4); this.#buf.writeUInt32BE(v, this.#len); this.#len += 4; return this; }
  i8(v: number, what = 'i8'): this { checkInt(v, -0x80, 0x7f, what); this.#ensure(1); this.#buf.writeInt8(v, this.#len); this.#len += 1; return this; }
  u64(v: bigint): this { this.#ensure(8); this.#buf.writeBigUInt64BE(v, this.#len); this.#len += 8; return this; }
  i64(v: bigint): this { this.#ensure(8); this.#buf.writeBigInt64BE(v, this.#len); this.#len += 8; return this; }
  bytes(b: Buffer): this { this.#ensure(b.length); b.copy(this.#buf, this.#len); this.#len += b.length; return this; }
  str16(s: string): this {
    const b = Buffer.from(s, 'utf8');
    if (b.length > PROTO.MAX_STR) throw new RangeError(`string of ${b.length} bytes exceeds ${PROTO.MAX_STR}`);
    return this.u16(b.length).bytes(b);
  }
  /** u32 length + bytes (INFO's JSON, INFO_QUERY's filter, INFO_RESULT's chunk): the frame's size limit bounds it. */
  text32(t: Buffer | string): this {
    const b = Buffer.isBuffer(t) ? t : Buffer.from(t, 'utf8');
    if (b.length > PROTO.MAX_FRAME - PROTO.MIN_LENGTH - 4) throw new RangeError(`payload of ${b.length} bytes exceeds a frame`);
    return this.u32(b.length).bytes(b);
  }
  /** Exactly n bytes (a nonce, a MAC). */
  fixed(b: Buffer, n: number, what: string): this {
    if (!Buffer.isBuffer(b) || b.length !== n) throw new RangeError(`${what} must be ${n} bytes`);
    return this.bytes(b);
  }
  key(k: Buffer): this {
    if (k.length > PROTO.MAX_KEY) throw new RangeError(`key of ${k.length} bytes exceeds ${PROTO.MAX_KEY}`);
    return this.u16(k.length).bytes(k);
  }
  addr(a: string): this {
    if (net.isIPv4(a)) return this.u8(4).bytes(Buffer.from(a.split('.').map(Number)));
    if (net.isIPv6(a)) return this.u8(6).bytes(ipv6Bytes(a));
    throw new RangeError(`not an IP address: ${a}`);
  }
  file(f: WireFile): this {
    // One-entry cache: most requests name the file of the one before, and
    // writeBig*Int64BE allocates BigInts on every call (a tenth of a remote
    // client's allocation per request).
    if (f.inode !== lastEncoded.inode || f.dev !== lastEncoded.dev) {
      const b = Buffer.allocUnsafe(16);
      b.writeBigUInt64BE(f.inode, 0);
      b.writeBigInt64BE(f.dev, 8);
      lastEncoded = { inode: f.inode, dev: f.dev, bytes: b };
    }
    return this.bytes(lastEncoded.bytes);
  }
  mode(m: WireMode): this {
    if (m !== 'read' && m !== 'write') throw new RangeError(`mode ${String(m)} is not 'read' or 'write'`);
    return this.u8(m === 'write' ? 2 : 1);
  }
  holder(h: WireHolder): this {
    return this.mode(h.mode).u32(h.port, 'port').u32(h.pid, 'pid').u32(h.ownerPid, 'owner pid').u32(h.ownerTid, 'owner tid').addr(h.addr);
  }
  /** The frame, copied out: the scratch buffer is written again by the next encode. */
  take(): Buffer {
    const n = this.#len;
    const out = Buffer.allocUnsafe(n);
    // A request or an answer is a few dozen bytes: a loop is cheaper than
    // Buffer#copy, which makes a view of the source for a partial copy.
    if (n <= 128) for (let i = 0; i < n; i++) out[i] = this.#buf[i] as number;
    else this.#buf.copy(out, 0, 0, n);
    return out;
  }
}

/** The one Writer of encode(): encode is synchronous and never re-entered, so one scratch buffer serves every frame (a Writer and two Buffer views per frame were a visible part of a client's allocation). */
const SCRATCH = new Writer();

function flagsOf(f: Frame): number {
  switch (f.type) {
    case 'HELLO':
      return (f.auth ? FrameFlag.AUTH : 0) | (f.tokens ? FrameFlag.TOKENS : 0) | (f.info ? FrameFlag.INFO : 0) | (f.pair ? FrameFlag.PAIR : 0);
    case 'WELCOME':
      return (f.tokens ? FrameFlag.TOKENS : 0) | (f.info ? FrameFlag.INFO : 0) | (f.witness ? FrameFlag.WITNESS : 0);
    case 'INFO_RESULT':
      return f.more ? FrameFlag.MORE : 0;
    case 'LOCK':
      return (f.nowait ? FrameFlag.NOWAIT : 0) | (f.noInterim ? FrameFlag.NO_INTERIM : 0) | (f.osLocks ? FrameFlag.OSLOCKS : 0)
        | (f.breakDeadlock ? FrameFlag.BREAK_DEADLOCK : 0) | (f.fence === undefined ? 0 : FrameFlag.FENCE) | (f.offset ? FrameFlag.OFFSET : 0)
        | (f.mirror ? FrameFlag.MIRROR : 0);
    case 'UNLOCK':
      return f.offset ? FrameFlag.OFFSET : 0;
    case 'UNLOCK_ALL':
      return f.allThreads ? FrameFlag.ALL_THREADS : 0;
    case 'RANGE_LOCK':
      return (f.nowait ? FrameFlag.NOWAIT : 0) | spaceFlag(f.space) | (f.mirror ? FrameFlag.MIRROR : 0);
    case 'RANGE_UNLOCK':
      return spaceFlag(f.space);
    case 'RANGE_TEST':
      return f.space === undefined ? 0 : spaceFlag(f.space);
    case 'STATUS':
      return (f.probe === undefined ? 0 : f.probe === 'write' ? FrameFlag.PROBE_WRITE : f.probe === 'read' ? FrameFlag.PROBE_READ : badProbe(f.probe))
        | (f.osLocks ? FrameFlag.STATUS_OSLOCKS : 0) | (f.offset ? FrameFlag.OFFSET : 0);
    default:
      return 0;
  }
}

/**
 * Why a fencing token is not one (docs/protocol.md, "Fencing tokens"), or
 * undefined. A FENCE token also may not have the highest epoch: no later
 * epoch exists for the server's own tokens to outrank it.
 */
function tokenFault(t: bigint, fence: boolean): string | undefined {
  if (typeof t !== 'bigint' || t < 0n || t >= Token.LIMIT) return `token ${String(t)} is not in 0..2^63-1`;
  if (fence && t >> Token.EPOCH_SHIFT === Token.EPOCH_MAX) return `FENCE token ${t} has the highest epoch (${Token.EPOCH_MAX})`;
  return undefined;
}

function checkToken(t: bigint, fence: boolean): bigint {
  const why = tokenFault(t, fence);
  if (why) throw new RangeError(why);
  return t;
}

function roleCode(role: 'leader' | 'follower'): number {
  if (role === 'leader') return Role.LEADER;
  if (role === 'follower') return Role.FOLLOWER;
  throw new RangeError(`witness role ${String(role)} is not 'leader' or 'follower'`);
}

function badProbe(p: unknown): never {
  throw new RangeError(`STATUS probe ${String(p)} is not 'read' or 'write'`);
}

function spaceFlag(s: RangeSpace): number {
  if (s === 'range') return 0;
  if (s === 'exec') return FrameFlag.EXEC;
  if (s === 'file') return FrameFlag.FILELOCK;
  throw new RangeError(`range space ${String(s)} is not 'range', 'exec' or 'file'`);
}

function spaceOf(r: Reader, type: string, flags: number): RangeSpace {
  const exec = (flags & FrameFlag.EXEC) !== 0;
  const file = (flags & FrameFlag.FILELOCK) !== 0;
  if (exec && file) return r.value('BAD_ARGUMENT', `${type}: flags EXEC and FILELOCK together`, 'range');
  return exec ? 'exec' : file ? 'file' : 'range';
}

function body(w: Writer, f: Frame): void {
  switch (f.type) {
    case 'HELLO':
      w.bytes(Buffer.from('JDLS')).u8(f.minVersion, 'min version').u8(f.maxVersion, 'max version').u32(f.port, 'port')
        .u32(f.pid, 'pid').u32(f.keepaliveMs, 'keepalive').str16(f.host).str16(f.program).str16(f.options);
      return;
    case 'AUTH': w.fixed(f.nonce, Auth.NONCE, 'AUTH nonce').fixed(f.mac, Auth.MAC, 'AUTH mac'); return;
    case 'CHALLENGE': w.u8(f.method, 'method').fixed(f.nonce, Auth.NONCE, 'CHALLENGE nonce'); return;
    case 'AUTH_OK': w.fixed(f.mac, Auth.MAC, 'AUTH_OK mac'); return;
    case 'LOCK':
      w.mode(f.mode).u32(f.tid, 'tid').file(f.file).key(f.key);
      if (f.fence !== undefined) w.u64(checkToken(f.fence, true));
      return;
    case 'UNLOCK': w.u32(f.tid, 'tid').file(f.file).key(f.key); return;
    case 'UNLOCK_FILE': w.u32(f.tid, 'tid').file(f.file); return;
    case 'UNLOCK_ALL': w.u32(f.tid, 'tid'); return;
    case 'STATUS': w.u32(f.tid, 'tid').file(f.file).key(f.key); return;
    case 'CANCEL': w.u32(f.target, 'target'); return;
    case 'TEST': w.str16(f.text); return;
    case 'PING': return;
    case 'RANGE_LOCK': w.mode(f.mode).u32(f.tid, 'tid').file(f.file).u64(f.start).u64(f.length); return;
    case 'RANGE_UNLOCK': w.u32(f.tid, 'tid').file(f.file).u64(f.start).u64(f.length); return;
    case 'RANGE_TEST': w.mode(f.mode).u32(f.tid, 'tid').file(f.file).u64(f.start).u64(f.length); return;
    case 'RANGE_RESULT':
      if (!f.conflict) { w.u8(0); return; }
      w.u8(1).holder(f.conflict.holder).u64(f.conflict.start).u64(f.conflict.length);
      return;
    case 'WELCOME':
      if (f.mechanism !== 'shm' && f.mechanism !== 'os') throw new RangeError(`mechanism ${String(f.mechanism)} is not 'shm' or 'os'`);
      w.u8(f.version, 'version').u8(f.mechanism === 'os' ? Mechanism.OS : Mechanism.SHM).u32(f.serverPid, 'server pid')
        .u32(f.session, 'session').u32(f.interimMs, 'interim').u32(f.keepaliveMs, 'keepalive').addr(f.clientAddr).str16(f.server);
      if (f.witness) w.u8(roleCode(f.witness.role)).u32(f.witness.term, 'term');
      return;
    case 'PROMOTE': w.u32(f.waitMs, 'wait'); return;
    case 'PROMOTED': w.u32(f.term, 'term'); return;
    case 'GRANTED':
      // The token only on a connection that negotiated TOKENS (the session decides; absent = the old empty body).
      if (f.token !== undefined) w.u64(checkToken(f.token, false));
      return;
    case 'LOCKED': w.holder(f.holder); return;
    case 'WAITING': w.holder(f.holder); return;
    case 'RELEASED': w.u32(f.count, 'count'); return;
    case 'STATUS_RESULT':
      // A holder given with a code >= 0 is not written (the code says "no other owner").
      w.i8(checkInt(f.code, -3, 3, 'STATUS_RESULT code'));
      if (f.code < 0) {
        if (!f.holder) throw new RangeError('STATUS_RESULT with a negative code needs the holder');
        w.holder(f.holder);
      }
      if (f.token !== undefined) w.u64(checkToken(f.token, false));
      return;
    case 'TEST_RESULT': w.str16(f.text); return;
    case 'PONG': return;
    case 'INFO': w.text32(f.raw ?? ('bad' in f ? '' : JSON.stringify(f.info))); return;
    case 'INFO_QUERY': w.text32(f.raw ?? filterText(f.filter)); return;
    case 'INFO_RESULT': w.text32(f.chunk); return;
    case 'ERROR': {
      const code = errorCode.get(f.code);
      if (code === undefined) throw new RangeError(`ERROR code ${String(f.code)} is not one of ${[...errorCode.keys()].join(', ')}`);
      w.u16(code).str16(f.text);
      return;
    }
  }
}

/**
 * One frame as bytes (length prefix included). Throws RangeError on values
 * the protocol cannot carry. `requestId` overrides the frame's (a client
 * numbers a request when it sends it, without copying the frame).
 */
export function encode(f: Frame, version: number = PROTO.VERSION, requestId: number = f.requestId): Buffer {
  const code = typeCode.get(f.type);
  if (code === undefined) throw new RangeError(`frame type ${String(f.type)} is unknown`);
  // The decoder refuses these, so writing them would only move the error to the peer.
  if (HANDSHAKE.has(f.type) && requestId !== 0) throw new RangeError(`${f.type}: request id must be 0`);
  const w = SCRATCH;
  w.reset();
  w.u32(0).u8(version, 'version').u8(code).u16(flagsOf(f)).u32(requestId, 'request id');
  body(w, f);
  const out = w.take();
  const length = out.length - 4;
  if (length > PROTO.MAX_FRAME) throw new RangeError(`frame of ${length} bytes exceeds ${PROTO.MAX_FRAME}`);
  out.writeUInt32BE(length, 0);
  return out;
}

// ===== reading ============================================================

class Reader {
  // Offsets into the frame itself (no subarray view per frame).
  #b: Buffer;
  #o: number;
  #end: number;
  /** a request: a bad value is recorded (the first one) and reading goes on; else it is a protocol error */
  readonly #refusing: boolean;
  /** the first value fault of a request (refusing mode) */
  fault: ValueFault | undefined;
  constructor(b: Buffer, start: number, end: number, refusing: boolean) { this.#b = b; this.#o = start; this.#end = end; this.#refusing = refusing; }
  /**
   * A field value out of its range. In a request (refusing mode) it is
   * recorded and `stand` is used so that the rest of the body is still read
   * and checked: only a sound frame is answered rather than closed on.
   */
  value<T>(code: RefusedRequest['code'], reason: string, stand: T): T {
    if (!this.#refusing) return fail(reason);
    this.fault ??= new ValueFault(code, reason);
    return stand;
  }
  #need(n: number, what: string): void {
    if (this.#o + n > this.#end) fail(`truncated body: ${what} needs ${n} bytes, ${this.#end - this.#o} left`);
  }
  u8(what: string): number { this.#need(1, what); const v = this.#b.readUInt8(this.#o); this.#o += 1; return v; }
  i8(what: string): number { this.#need(1, what); const v = this.#b.readInt8(this.#o); this.#o += 1; return v; }
  u16(what: string): number { this.#need(2, what); const v = this.#b.readUInt16BE(this.#o); this.#o += 2; return v; }
  u32(what: string): number { this.#need(4, what); const v = this.#b.readUInt32BE(this.#o); this.#o += 4; return v; }
  u64(what: string): bigint { this.#need(8, what); const v = this.#b.readBigUInt64BE(this.#o); this.#o += 8; return v; }
  i64(what: string): bigint { this.#need(8, what); const v = this.#b.readBigInt64BE(this.#o); this.#o += 8; return v; }
  bytes(n: number, what: string): Buffer {
    this.#need(n, what);
    const v = Buffer.from(this.#b.subarray(this.#o, this.#o + n)); // a copy: the stream buffer is reused
    this.#o += n;
    return v;
  }
  str16(what: string): string {
    const n = this.u16(what);
    // Strict: fail on the length at once. A request: read the bytes first,
    // so that only a frame whose body is sound is answered (not closed on).
    if (n > PROTO.MAX_STR && !this.#refusing) fail(`${what}: string of ${n} bytes exceeds ${PROTO.MAX_STR}`);
    const b = this.bytes(n, what);
    if (n > PROTO.MAX_STR) return this.value('BAD_ARGUMENT', `${what}: string of ${n} bytes exceeds ${PROTO.MAX_STR}`, '');
    const s = b.toString('utf8');
    if (!Buffer.from(s, 'utf8').equals(b)) return this.value('BAD_ARGUMENT', `${what}: not valid UTF-8`, '');
    return s;
  }
  key(): Buffer {
    const n = this.u16('key length');
    if (n > PROTO.MAX_KEY && !this.#refusing) fail(`key of ${n} bytes exceeds ${PROTO.MAX_KEY}`);
    const b = this.bytes(n, 'key');
    if (n > PROTO.MAX_KEY) return this.value('KEY_TOO_LONG', `key of ${n} bytes exceeds ${PROTO.MAX_KEY}`, b);
    return b;
  }
  addr(what: string): string {
    const fam = this.u8(`${what} family`);
    if (fam === 4) return [...this.bytes(4, what)].join('.');
    if (fam === 6) {
      const b = this.bytes(16, what);
      return ipv6Text(b);
    }
    return fail(`${what}: address family ${fam} is not 4 or 6`);
  }
  file(): WireFile {
    // The same file as the frame before (the usual case) reuses its BigInts:
    // readBig*Int64BE allocates several per call.
    if (this.#end - this.#o < 16) return { inode: this.u64('inode'), dev: this.i64('dev') }; // fails, naming the field
    const o = this.#o;
    if (this.#b.compare(lastDecoded.bytes, 0, 16, o, o + 16) !== 0) {
      const bytes = Buffer.from(this.#b.subarray(o, o + 16));
      lastDecoded = { inode: bytes.readBigUInt64BE(0), dev: bytes.readBigInt64BE(8), bytes };
    }
    this.#o += 16;
    return { inode: lastDecoded.inode, dev: lastDecoded.dev };
  }
  mode(): WireMode {
    const m = this.u8('mode');
    if (m === 1) return 'read';
    if (m === 2) return 'write';
    return this.value('BAD_ARGUMENT', `mode ${m} is not 1 (READ) or 2 (WRITE)`, 'write');
  }

  holder(): WireHolder {
    return { mode: this.mode(), port: this.u32('port'), pid: this.u32('pid'), ownerPid: this.u32('owner pid'), ownerTid: this.u32('owner tid'), addr: this.addr('holder address') };
  }
  /** u32 length + that many bytes (the length is checked against the body: a longer one is a truncated body). */
  bytes32(what: string): Buffer {
    const n = this.u32(`${what} length`);
    return this.bytes(n, what);
  }
  /** Bytes of the body not read yet. */
  left(): number { return this.#end - this.#o; }
  /**
   * The trailing token of GRANTED / STATUS_RESULT: present iff exactly 8
   * bytes are left (any other count is refused by end()). Decided from the
   * length, not from the connection's TOKENS: both forms are unambiguous
   * (docs/protocol.md, "Fencing tokens").
   */
  token(): bigint | undefined {
    if (this.left() !== 8) return undefined;
    const t = this.u64('token');
    const why = tokenFault(t, false);
    return why ? fail(why) : t;
  }
  end(type: string): void {
    if (this.#o !== this.#end) fail(`${type}: ${this.#end - this.#o} bytes after the end of the body`);
  }
}

/**
 * The byte a key names under flag OFFSET, or undefined when it names none:
 * the key must be the offset's lowercase hex exactly as the shim writes it
 * ("%llx": 1 to 16 digits, no leading zero but for "0" itself), at most
 * 2^63-1 (an fcntl offset). One text per byte: the table (which ignores the
 * flag and keys by the text) and the OS locks (which lock the byte) then
 * agree on which requests are the same lock.
 */
export function byteOffsetOfKey(key: Buffer): bigint | undefined {
  const n = key.length;
  if (n < 1 || n > 16 || (n > 1 && key[0] === 0x30)) return undefined;
  let v = 0n;
  for (let i = 0; i < n; i++) {
    const c = key[i] as number;
    const d = c >= 0x30 && c <= 0x39 ? c - 0x30 : c >= 0x61 && c <= 0x66 ? c - 0x61 + 10 : -1;
    if (d < 0) return undefined;
    v = (v << 4n) | BigInt(d);
  }
  return v < 1n << 63n ? v : undefined;
}

/** Why a key with flag OFFSET names no byte, or undefined. */
function offsetFault(type: string, key: Buffer): string | undefined {
  return byteOffsetOfKey(key) === undefined ? `${type}: flag OFFSET needs a key that is a byte offset in lowercase hex ("%llx", below 2^63); got ${JSON.stringify(key.toString('latin1').slice(0, 40))}` : undefined;
}

/** Frames of the handshake: request id 0, header version 1 in every protocol version. */
const HANDSHAKE = new Set(['HELLO', 'AUTH', 'CHALLENGE', 'AUTH_OK', 'WELCOME']);
/** Client frames that are requests (answered under their request id): a bad value in one is answered, not closed on. */
const REQUESTS = new Set(['LOCK', 'UNLOCK', 'UNLOCK_FILE', 'UNLOCK_ALL', 'STATUS', 'CANCEL', 'TEST', 'PING', 'RANGE_LOCK', 'RANGE_UNLOCK', 'RANGE_TEST', 'INFO_QUERY', 'PROMOTE']);

const CLIENT_TYPES = new Set(['HELLO', 'AUTH', 'LOCK', 'UNLOCK', 'UNLOCK_FILE', 'UNLOCK_ALL', 'STATUS', 'CANCEL', 'TEST', 'PING', 'RANGE_LOCK', 'RANGE_UNLOCK', 'RANGE_TEST', 'INFO', 'INFO_QUERY', 'PROMOTE']);

/** INFO_QUERY's filter as written: no filter is 0 bytes (docs/protocol.md), the common query costs nothing to parse. */
const filterText = (f: object): string => (Object.keys(f).length === 0 ? '' : JSON.stringify(f));

/** Strict UTF-8 (no replacement characters): JSON payloads must be text. */
const UTF8 = new TextDecoder('utf-8', { fatal: true });

/** The JSON of a u32-length payload, or why it is none. */
function parseJson(b: Buffer): { value: unknown } | { why: string } {
  let text: string;
  try {
    text = UTF8.decode(b);
  } catch {
    return { why: 'not valid UTF-8' };
  }
  try {
    return { value: JSON.parse(text) as unknown };
  } catch (e) {
    return { why: `not JSON (${(e as Error).message})` };
  }
}

function allowedFlags(type: string): number {
  if (type === 'HELLO') return FrameFlag.AUTH | FrameFlag.TOKENS | FrameFlag.INFO | FrameFlag.PAIR;
  if (type === 'WELCOME') return FrameFlag.TOKENS | FrameFlag.INFO | FrameFlag.WITNESS;
  if (type === 'INFO_RESULT') return FrameFlag.MORE;
  if (type === 'LOCK') return FrameFlag.NOWAIT | FrameFlag.NO_INTERIM | FrameFlag.OSLOCKS | FrameFlag.BREAK_DEADLOCK | FrameFlag.FENCE | FrameFlag.OFFSET | FrameFlag.MIRROR;
  if (type === 'UNLOCK') return FrameFlag.OFFSET;
  if (type === 'UNLOCK_ALL') return FrameFlag.ALL_THREADS;
  if (type === 'RANGE_LOCK') return FrameFlag.NOWAIT | FrameFlag.EXEC | FrameFlag.FILELOCK | FrameFlag.MIRROR;
  if (type === 'RANGE_UNLOCK' || type === 'RANGE_TEST') return FrameFlag.EXEC | FrameFlag.FILELOCK;
  if (type === 'STATUS') return FrameFlag.PROBE_READ | FrameFlag.PROBE_WRITE | FrameFlag.STATUS_OSLOCKS | FrameFlag.OFFSET;
  return 0;
}

/** Decode one frame from its bytes after the length field (every bad value is a ProtocolError). */
export function decodeBody(frame: Buffer): Frame {
  return decodeAt(frame, 0, frame.length, false) as Frame;
}

/**
 * decodeBody of buf[start, end) - no view per frame (FrameReader).
 * `refusing`: a request with a bad value in a sound frame decodes to a
 * RefusedRequest (the lock server answers it) instead of a ProtocolError.
 */
function decodeAt(buf: Buffer, start: number, end: number, refusing: boolean): Frame | RefusedRequest {
  const length = end - start;
  if (length < PROTO.MIN_LENGTH) fail(`frame of ${length} bytes is shorter than its header`);
  if (length > PROTO.MAX_FRAME) fail(`frame of ${length} bytes exceeds ${PROTO.MAX_FRAME}`);
  const version = buf.readUInt8(start);
  if (version < PROTO.MIN_VERSION || version > PROTO.VERSION)
    fail(`protocol version ${version} is not spoken here (versions ${PROTO.MIN_VERSION}..${PROTO.VERSION})`, 'VERSION');
  const code = buf.readUInt8(start + 1);
  const type = typeName.get(code) ?? fail(`unknown frame type 0x${code.toString(16).padStart(2, '0')}`);
  let flags = buf.readUInt16BE(start + 2);
  const requestId = buf.readUInt32BE(start + 4);
  const r = new Reader(buf, start + 8, end, refusing && REQUESTS.has(type));
  if (flags & ~allowedFlags(type)) {
    r.value('BAD_ARGUMENT', `${type}: unknown flags 0x${flags.toString(16)}`, 0);
    flags &= allowedFlags(type);
  }
  let f: Frame;
  switch (type) {
    case 'HELLO': {
      const magic = r.bytes(4, 'magic').toString('latin1');
      if (magic !== 'JDLS') fail(`HELLO: bad magic ${JSON.stringify(magic)}`);
      f = { type, requestId: 0, minVersion: r.u8('min version'), maxVersion: r.u8('max version'), port: r.u32('port'), pid: r.u32('pid'), keepaliveMs: r.u32('keepalive'), host: r.str16('host'), program: r.str16('program'), options: r.str16('options') };
      if (flags & FrameFlag.AUTH) f.auth = true;
      if (flags & FrameFlag.TOKENS) f.tokens = true;
      if (flags & FrameFlag.INFO) f.info = true;
      if (flags & FrameFlag.PAIR) f.pair = true;
      if (requestId !== 0) fail('HELLO: request id must be 0');
      break;
    }
    case 'AUTH':
      f = { type, requestId: 0, nonce: r.bytes(Auth.NONCE, 'nonce'), mac: r.bytes(Auth.MAC, 'mac') };
      if (requestId !== 0) fail('AUTH: request id must be 0');
      break;
    case 'CHALLENGE': {
      const method = r.u8('method');
      if (method !== Auth.HMAC_SHA256) fail(`CHALLENGE: method ${method} is not ${Auth.HMAC_SHA256} (HMAC-SHA256)`);
      f = { type, requestId: 0, method, nonce: r.bytes(Auth.NONCE, 'nonce') };
      if (requestId !== 0) fail('CHALLENGE: request id must be 0');
      break;
    }
    case 'AUTH_OK':
      f = { type, requestId: 0, mac: r.bytes(Auth.MAC, 'mac') };
      if (requestId !== 0) fail('AUTH_OK: request id must be 0');
      break;
    case 'LOCK':
      f = { type, requestId, nowait: (flags & FrameFlag.NOWAIT) !== 0, noInterim: (flags & FrameFlag.NO_INTERIM) !== 0, osLocks: (flags & FrameFlag.OSLOCKS) !== 0, mode: r.mode(), tid: r.u32('tid'), file: r.file(), key: r.key() };
      if (flags & FrameFlag.BREAK_DEADLOCK) f.breakDeadlock = true;
      if (flags & FrameFlag.MIRROR) f.mirror = true;
      if (flags & FrameFlag.FENCE) {
        const t = r.u64('fence token');
        const why = tokenFault(t, true);
        f.fence = why ? r.value('BAD_ARGUMENT', why, t) : t;
      }
      if (flags & FrameFlag.OFFSET) {
        const why = offsetFault(type, f.key);
        if (why) r.value('BAD_ARGUMENT', why, 0);
        f.offset = true;
      }
      break;
    case 'UNLOCK':
      f = { type, requestId, tid: r.u32('tid'), file: r.file(), key: r.key() };
      if (flags & FrameFlag.OFFSET) {
        const why = offsetFault(type, f.key);
        if (why) r.value('BAD_ARGUMENT', why, 0);
        f.offset = true;
      }
      break;
    case 'UNLOCK_FILE': f = { type, requestId, tid: r.u32('tid'), file: r.file() }; break;
    case 'UNLOCK_ALL': f = { type, requestId, allThreads: (flags & FrameFlag.ALL_THREADS) !== 0, tid: r.u32('tid') }; break;
    case 'STATUS': {
      if ((flags & FrameFlag.PROBE_READ) && (flags & FrameFlag.PROBE_WRITE)) r.value('BAD_ARGUMENT', 'STATUS: PROBE_READ and PROBE_WRITE together', 0);
      const probe = flags & FrameFlag.PROBE_WRITE ? 'write' : flags & FrameFlag.PROBE_READ ? 'read' : undefined;
      f = probe ? { type, requestId, tid: r.u32('tid'), file: r.file(), key: r.key(), probe } : { type, requestId, tid: r.u32('tid'), file: r.file(), key: r.key() };
      if (flags & FrameFlag.STATUS_OSLOCKS) f.osLocks = true;
      if (flags & FrameFlag.OFFSET) {
        const why = offsetFault(type, f.key);
        if (why) r.value('BAD_ARGUMENT', why, 0);
        f.offset = true;
      }
      break;
    }
    case 'CANCEL': f = { type, requestId, target: r.u32('target') }; break;
    case 'TEST': f = { type, requestId, text: r.str16('text') }; break;
    case 'PING': f = { type, requestId }; break;
    case 'RANGE_LOCK': {
      const space = spaceOf(r, type, flags);
      f = { type, requestId, nowait: (flags & FrameFlag.NOWAIT) !== 0, space, mode: r.mode(), tid: r.u32('tid'), file: r.file(), start: r.u64('start'), length: r.u64('length') };
      if (flags & FrameFlag.MIRROR) f.mirror = true;
      break;
    }
    case 'RANGE_UNLOCK': f = { type, requestId, space: spaceOf(r, type, flags), tid: r.u32('tid'), file: r.file(), start: r.u64('start'), length: r.u64('length') }; break;
    case 'RANGE_TEST': {
      const space = spaceOf(r, type, flags);
      f = { type, requestId, mode: r.mode(), tid: r.u32('tid'), file: r.file(), start: r.u64('start'), length: r.u64('length') };
      if (space !== 'range') f.space = space;
      break;
    }
    case 'RANGE_RESULT': {
      const found = r.u8('found');
      if (found > 1) fail(`RANGE_RESULT: found ${found} is not 0 or 1`);
      f = found ? { type, requestId, conflict: { holder: r.holder(), start: r.u64('start'), length: r.u64('length') } } : { type, requestId };
      break;
    }
    case 'WELCOME': {
      const version = r.u8('version');
      const mech = r.u8('mechanism');
      if (mech !== Mechanism.SHM && mech !== Mechanism.OS) fail(`WELCOME: mechanism ${mech} is not 1 or 2`);
      f = { type, requestId: 0, version, mechanism: mech === Mechanism.OS ? 'os' : 'shm', serverPid: r.u32('server pid'), session: r.u32('session'), interimMs: r.u32('interim'), keepaliveMs: r.u32('keepalive'), clientAddr: r.addr('client address'), server: r.str16('server') };
      if (flags & FrameFlag.TOKENS) f.tokens = true;
      if (flags & FrameFlag.INFO) f.info = true;
      if (flags & FrameFlag.WITNESS) {
        const role = r.u8('role');
        if (role !== Role.LEADER && role !== Role.FOLLOWER) fail(`WELCOME: witness role ${role} is not 1 or 2`);
        f.witness = { role: role === Role.LEADER ? 'leader' : 'follower', term: r.u32('term') };
      }
      // Checked, not just set to 0: a frame must decode to a value that encodes back to its own bytes.
      if (requestId !== 0) fail('WELCOME: request id must be 0');
      break;
    }
    case 'GRANTED': {
      const token = r.token();
      f = token === undefined ? { type, requestId } : { type, requestId, token };
      break;
    }
    case 'LOCKED': f = { type, requestId, holder: r.holder() }; break;
    case 'WAITING': f = { type, requestId, holder: r.holder() }; break;
    case 'RELEASED': f = { type, requestId, count: r.u32('count') }; break;
    case 'STATUS_RESULT': {
      const c = r.i8('code');
      if (c < -3 || c > 3) fail(`STATUS_RESULT: code ${c} is not -3..3`);
      f = c < 0 ? { type, requestId, code: c, holder: r.holder() } : { type, requestId, code: c };
      const token = r.token();
      if (token !== undefined) f.token = token;
      break;
    }
    case 'TEST_RESULT': f = { type, requestId, text: r.str16('text') }; break;
    case 'PONG': f = { type, requestId }; break;
    case 'PROMOTE': f = { type, requestId, waitMs: r.u32('wait') }; break;
    case 'PROMOTED': f = { type, requestId, term: r.u32('term') }; break;
    case 'ERROR': {
      const c = r.u16('error code');
      f = { type, requestId, code: errorName.get(c) ?? fail(`ERROR: unknown error code ${c}`), text: r.str16('text') };
      break;
    }
    case 'INFO': {
      // Framing is checked (the length, the request id); the JSON is not a
      // framing matter: a bad payload is handed on for a warning.
      if (requestId !== 0) fail('INFO: request id must be 0');
      const raw = r.bytes32('info');
      const got = parseJson(raw);
      const info = 'why' in got ? got.why : checkClientInfo(got.value);
      if (typeof info === 'string') f = { type, requestId: 0, bad: info, raw };
      else f = Buffer.from(JSON.stringify(info), 'utf8').equals(raw) ? { type, requestId: 0, info } : { type, requestId: 0, info, raw };
      break;
    }
    case 'INFO_QUERY': {
      const raw = r.bytes32('filter');
      let filter = {};
      if (raw.length > 0) {
        const got = parseJson(raw);
        const checked = 'why' in got ? `the filter is ${got.why}` : checkInfoFilter(got.value);
        filter = typeof checked === 'string' ? r.value('BAD_ARGUMENT', `INFO_QUERY: ${checked}`, {}) : checked;
      }
      f = Buffer.from(filterText(filter), 'utf8').equals(raw) || r.fault ? { type, requestId, filter } : { type, requestId, filter, raw };
      break;
    }
    case 'INFO_RESULT': f = { type, requestId, more: (flags & FrameFlag.MORE) !== 0, chunk: r.bytes32('chunk') }; break;
  }
  r.end(type);
  if (r.fault) return { type: 'REFUSED', requestId, request: type as ClientFrame['type'], code: r.fault.code, text: `${type}: ${r.fault.message.replace(`${type}: `, '')}` };
  return f;
}

/**
 * Cuts a byte stream into frames. push() returns the frames completed by the
 * chunk; it throws ProtocolError on the first bad frame (the reader is then
 * dead: close the connection). The whole frames of the same chunk that came
 * before the bad one ride on the error (`before`): a server answers them
 * before it closes, so that every request it read gets its final answer.
 *
 * Memory: besides the caller's chunk, the reader keeps at most one partial
 * frame, in a buffer sized once its length field is known (at most
 * 4 + MAX_FRAME bytes). The trap this dodges: concatenating the pending bytes
 * with every chunk copies a partial frame again on each push, so a peer that
 * dribbles a 64 KiB frame a byte at a time would cost ~2 GB of copying.
 * Whole frames inside a chunk are decoded in place (the decoder copies what
 * it keeps, so no frame aliases the caller's chunk).
 */
export class FrameReader<F extends Frame | RefusedRequest> {
  /** The partial frame: 4 bytes while its length is unknown, then exactly 4 + length. */
  #partial: Buffer | null = null;
  #have = 0;
  #dead = false;
  readonly #accept: (f: Frame | RefusedRequest) => boolean;
  readonly #side: string;
  readonly #refusing: boolean;

  private constructor(side: string, accept: (f: Frame | RefusedRequest) => boolean, refusing = false) {
    this.#side = side;
    this.#accept = accept;
    this.#refusing = refusing;
  }

  /** What a server reads: client frames only; any bad value is a protocol error. */
  static forServer(): FrameReader<ClientFrame> {
    return new FrameReader<ClientFrame>('server', (f) => CLIENT_TYPES.has(f.type));
  }

  /**
   * What the lock server reads: client frames, and a request with a bad
   * value in a sound frame as a RefusedRequest to answer (docs/protocol.md,
   * "Errors": answer what a client can reasonably get wrong, close on what
   * makes the stream unreadable).
   */
  static forLockServer(): FrameReader<ClientFrame | RefusedRequest> {
    return new FrameReader<ClientFrame | RefusedRequest>('server', (f) => f.type === 'REFUSED' || CLIENT_TYPES.has(f.type), true);
  }

  /** What a client reads: server frames only. */
  static forClient(): FrameReader<ServerFrame> {
    return new FrameReader<ServerFrame>('client', (f) => f.type !== 'REFUSED' && !CLIENT_TYPES.has(f.type));
  }

  /** Bytes received but not yet a whole frame. */
  get buffered(): number {
    return this.#have;
  }

  push(chunk: Buffer): F[] {
    if (this.#dead) fail('frame reader used after a protocol error');
    const out: F[] = [];
    try {
      let off = 0;
      if (this.#partial) {
        off = this.#fill(chunk, 0);
        if (!this.#partial || this.#have < this.#partial.length) return out;
        const whole = this.#partial;
        this.#partial = null;
        this.#have = 0;
        out.push(this.#decode(whole, 4, whole.length));
      }
      while (chunk.length - off >= 4) {
        const length = checkLength(chunk.readUInt32BE(off));
        if (chunk.length - off - 4 < length) break;
        out.push(this.#decode(chunk, off + 4, off + 4 + length));
        off += 4 + length;
      }
      if (off < chunk.length) {
        const rest = chunk.length - off;
        // rest >= 4 means the loop above already checked this length.
        this.#partial = Buffer.allocUnsafe(rest >= 4 ? 4 + chunk.readUInt32BE(off) : 4);
        this.#have = chunk.copy(this.#partial, 0, off);
      }
    } catch (e) {
      this.#dead = true;
      this.#partial = null;
      this.#have = 0;
      if (e instanceof ProtocolError) e.before = out;
      throw e;
    }
    return out;
  }

  /** Adds chunk bytes from off to the partial frame; returns the new offset. */
  #fill(chunk: Buffer, off: number): number {
    let partial = this.#partial as Buffer;
    if (this.#have < 4) {
      const n = chunk.copy(partial, this.#have, off, off + 4 - this.#have);
      this.#have += n;
      off += n;
      if (this.#have < 4) return off;
      const sized = Buffer.allocUnsafe(4 + checkLength(partial.readUInt32BE(0)));
      partial.copy(sized, 0, 0, 4);
      partial = this.#partial = sized;
    }
    const n = chunk.copy(partial, this.#have, off, off + partial.length - this.#have);
    this.#have += n;
    return off + n;
  }

  #decode(buf: Buffer, start: number, end: number): F {
    const f = decodeAt(buf, start, end, this.#refusing);
    if (!this.#accept(f)) fail(`a ${f.type} frame is not sent to a ${this.#side}`);
    return f as F; // #accept checked the direction
  }
}

function checkLength(length: number): number {
  if (length < PROTO.MIN_LENGTH || length > PROTO.MAX_FRAME)
    fail(`frame length ${length} is outside ${PROTO.MIN_LENGTH}..${PROTO.MAX_FRAME}`);
  return length;
}
