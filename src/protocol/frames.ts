// frames.ts - the protocol's frames as typed values: what the codec
// (src/protocol/codec.ts) encodes and decodes, and the only shape the server
// and the client see. docs/protocol.md is the reference for every field.
import type { ProtoErrorName } from './constants.js';
import type { ClientInfo, InfoQueryFilter } from '../info/format.js';

export type WireMode = 'read' | 'write';

/** A file identity on the wire: dev is -1 for files reached through a lock server. */
export interface WireFile {
  inode: bigint;
  dev: bigint;
}

/** The holder of a conflicting lock (LOCKED, WAITING, STATUS_RESULT). */
export interface WireHolder {
  mode: WireMode;
  port: number;
  /** the holding process on the server (a lock-server process for remote owners) */
  pid: number;
  ownerPid: number;
  ownerTid: number;
  /** dotted IPv4 or IPv6 text */
  addr: string;
}

// ---- client -> server ----------------------------------------------------

export interface HelloFrame {
  type: 'HELLO';
  requestId: 0;
  minVersion: number;
  maxVersion: number;
  port: number;
  pid: number;
  keepaliveMs: number;
  host: string;
  program: string;
  options: string;
  /** header flag AUTH: the client holds the installation's shared secret and will answer a CHALLENGE (absent = false) */
  auth?: true;
  /** header flag TOKENS: the client wants fencing tokens in GRANTED and STATUS_RESULT (absent = false) */
  tokens?: true;
  /** header flag INFO: the client knows INFO / INFO_QUERY and WELCOME's flag INFO (absent: the server must not set it - an older client refuses an unknown WELCOME flag) */
  info?: true;
  /** header flag PAIR: a SERVER2 client that knows WELCOME's flag WITNESS, MIRROR, PROMOTE and ERROR NOT_LEADER (absent: the server must not set WITNESS) */
  pair?: true;
}

/** The client's answer to CHALLENGE: its nonce and its proof (docs/protocol.md, "Authentication"). */
export interface AuthFrame {
  type: 'AUTH';
  requestId: 0;
  /** JDLS_AUTH_NONCE bytes */
  nonce: Buffer;
  /** JDLS_AUTH_MAC bytes: HMAC-SHA256(key, "jdls-auth-v1 client" || server nonce || client nonce || HELLO frame) */
  mac: Buffer;
}

export interface LockFrame {
  type: 'LOCK';
  requestId: number;
  nowait: boolean;
  noInterim: boolean;
  osLocks: boolean;
  /** flag BREAK_DEADLOCK: answer ERROR DEADLOCK rather than wait in a cycle of waiters (absent = wait) */
  breakDeadlock?: true;
  /**
   * flag FENCE: the token the client's primary gave for this same grant
   * (SERVER2 mirroring); the server's later tokens outrank its epoch. On the
   * wire a u64 after the key.
   */
  fence?: bigint;
  /**
   * flag OFFSET: the key is the lowercase hex of a byte offset the program
   * itself locked in the jlock file (a preloaded program's fcntl/lockf,
   * through the shim). OS record locks then take exactly that byte, not the
   * key's hash, so they exclude a local program locking that byte in the
   * kernel; the shm table ignores the flag (the key is its name there).
   */
  offset?: true;
  /** flag MIRROR: this request repeats a grant the client's primary made (SERVER2); a witnessed follower grants only these */
  mirror?: true;
  mode: WireMode;
  tid: number;
  file: WireFile;
  key: Buffer;
}

export interface UnlockFrame {
  type: 'UNLOCK';
  requestId: number;
  tid: number;
  file: WireFile;
  key: Buffer;
  /** flag OFFSET: the key names a byte offset (as LockFrame.offset) */
  offset?: true;
}

export interface UnlockFileFrame {
  type: 'UNLOCK_FILE';
  requestId: number;
  tid: number;
  file: WireFile;
}

export interface UnlockAllFrame {
  type: 'UNLOCK_ALL';
  requestId: number;
  allThreads: boolean;
  tid: number;
}

export interface StatusFrame {
  type: 'STATUS';
  requestId: number;
  tid: number;
  file: WireFile;
  key: Buffer;
  /** about the OS record locks (flag STATUS_OSLOCKS: a client that locks with OSLOCKS); absent = the server's mechanism */
  osLocks?: boolean;
  /**
   * F_GETLK: instead of RECORDLOCKED (which reports the caller's own lock
   * first), the first lock of ANOTHER owner that blocks this mode; the
   * answer's code is then -1/-2 (that lock's mode) or 0.
   */
  probe?: WireMode | undefined;
  /** flag OFFSET: the key names a byte offset (as LockFrame.offset) */
  offset?: true;
}

export interface CancelFrame {
  type: 'CANCEL';
  requestId: number;
  target: number;
}

export interface TestFrame {
  type: 'TEST';
  requestId: number;
  text: string;
}

export interface PingFrame {
  type: 'PING';
  requestId: number;
}

/**
 * A binary (byte-range) lock with POSIX semantics: [start, start+length),
 * length 0 = to infinity. The owner is (connection, tid): tid is an owner tag
 * the client picks (the shim: the pid for classic POSIX locks, a tag per open
 * file description for flock).
 */
/**
 * What a RANGE_LOCK / RANGE_UNLOCK locks (header flags): 'range' the file's
 * bytes; 'exec' execution locks (jBASE LOCK n: start = n, length 1; an
 * unlock of length 0 is the bare UNLOCK; file ignored); 'file' FILELOCK of
 * the file (start 0, length 0).
 */
export type RangeSpace = 'range' | 'exec' | 'file';

export interface RangeLockFrame {
  type: 'RANGE_LOCK';
  requestId: number;
  nowait: boolean;
  /** flag MIRROR: as LockFrame.mirror */
  mirror?: true;
  space: RangeSpace;
  mode: WireMode;
  tid: number;
  file: WireFile;
  start: bigint;
  length: bigint;
}

export interface RangeUnlockFrame {
  type: 'RANGE_UNLOCK';
  requestId: number;
  space: RangeSpace;
  tid: number;
  file: WireFile;
  start: bigint;
  length: bigint;
}

/** F_GETLK: the first lock of another owner that would block `mode` on the range. */
export interface RangeTestFrame {
  type: 'RANGE_TEST';
  requestId: number;
  /** which lock space is tested (flags EXEC / FILELOCK); absent = byte ranges */
  space?: RangeSpace;
  mode: WireMode;
  tid: number;
  file: WireFile;
  start: bigint;
  length: bigint;
}

/**
 * The client's own information for its info record (docs/info-records.md):
 * request id 0, never answered. Sent only to a server whose WELCOME has flag
 * INFO. The payload is u32 length + UTF-8 JSON; JSON that does not parse or
 * is not a ClientInfo is NOT a framing fault (the frame is sound): the
 * decoder gives it as `bad` + the raw `text`, the server warns (rate-limited)
 * and goes on.
 */
export type InfoFrame =
  | { type: 'INFO'; requestId: 0; info: ClientInfo; /** decoded: the payload's bytes, only when they are not JSON.stringify(info) (see InfoQueryFrame.raw) */ raw?: Buffer }
  | { type: 'INFO'; requestId: 0; /** why the payload is not a ClientInfo */ bad: string; /** the payload's bytes */ raw: Buffer };

/** The info records of the server's host, filtered (an empty filter = all; on the wire then 0 bytes). */
export interface InfoQueryFrame {
  type: 'INFO_QUERY';
  requestId: number;
  filter: InfoQueryFilter;
  /**
   * Decoded: the payload's bytes, only when they are not what encode()
   * writes for `filter` (other spacing, number forms, "{}" for no filter):
   * kept so that every frame encodes back to its own bytes. Encode writes
   * them when present.
   */
  raw?: Buffer;
}

/**
 * SERVER2 with a witness: "my primary is gone: become the primary". Answered
 * PROMOTED once this server holds the pair's leadership key, ERROR
 * NOT_LEADER when it could not within `waitMs` (docs/protocol.md, "Pairs and
 * the witness"); a server without a witness answers PROMOTED term 0 at once.
 */
export interface PromoteFrame {
  type: 'PROMOTE';
  requestId: number;
  /** how long the client waits for the verdict (its TIMEOUT), ms */
  waitMs: number;
}

export type ClientFrame =
  | HelloFrame | AuthFrame | LockFrame | UnlockFrame | UnlockFileFrame | UnlockAllFrame
  | StatusFrame | CancelFrame | TestFrame | PingFrame
  | RangeLockFrame | RangeUnlockFrame | RangeTestFrame | InfoFrame | InfoQueryFrame | PromoteFrame;

// ---- server -> client ----------------------------------------------------

export interface WelcomeFrame {
  type: 'WELCOME';
  requestId: 0;
  version: number;
  mechanism: 'shm' | 'os';
  serverPid: number;
  session: number;
  interimMs: number;
  keepaliveMs: number;
  clientAddr: string;
  server: string;
  /** header flag TOKENS: the client asked and GRANTED / STATUS_RESULT carry a token on this connection */
  tokens?: true;
  /** header flag INFO: HELLO had it and the server takes INFO and INFO_QUERY (absent: send neither - an older server closes on them) */
  info?: true;
  /**
   * header flag WITNESS (only when HELLO had PAIR): the server runs with a
   * witness; on the wire u8 role + u32 term after `server`. `term`: the
   * leadership term it grants in (leader) or the last it saw (follower; 0 none).
   */
  witness?: { role: 'leader' | 'follower'; term: number };
}

/** A server with a shared secret answers HELLO (flag AUTH) with this, not WELCOME. */
export interface ChallengeFrame {
  type: 'CHALLENGE';
  requestId: 0;
  /** JDLS_AUTH_HMAC_SHA256 (1), the only method so far */
  method: number;
  /** JDLS_AUTH_NONCE bytes */
  nonce: Buffer;
}

/** The server's proof, just before WELCOME. */
export interface AuthOkFrame {
  type: 'AUTH_OK';
  requestId: 0;
  /** HMAC-SHA256(key, "jdls-auth-v1 server" || server nonce || client nonce || HELLO frame) */
  mac: Buffer;
}

export interface GrantedFrame {
  type: 'GRANTED';
  requestId: number;
  /**
   * The grant's fencing token: present exactly when the connection
   * negotiated TOKENS (then 0n = the mechanism gives none).
   */
  token?: bigint;
}

export interface LockedFrame {
  type: 'LOCKED';
  requestId: number;
  holder: WireHolder;
}

export interface WaitingFrame {
  type: 'WAITING';
  requestId: number;
  holder: WireHolder;
}

export interface ReleasedFrame {
  type: 'RELEASED';
  requestId: number;
  count: number;
}

export interface StatusResultFrame {
  type: 'STATUS_RESULT';
  requestId: number;
  code: number;
  holder?: WireHolder;
  /** TOKENS negotiated: the caller's own lock's token for code 1/2, else 0n; absent otherwise */
  token?: bigint;
}

export interface TestResultFrame {
  type: 'TEST_RESULT';
  requestId: number;
  text: string;
}

export interface PongFrame {
  type: 'PONG';
  requestId: number;
}

export interface ErrorFrame {
  type: 'ERROR';
  requestId: number;
  code: ProtoErrorName;
  text: string;
}

/** RANGE_TEST's answer: the conflicting lock (its holder and range), or none. */
export interface RangeResultFrame {
  type: 'RANGE_RESULT';
  requestId: number;
  conflict?: { holder: WireHolder; start: bigint; length: bigint };
}

/**
 * One chunk of INFO_QUERY's answer: the JSON text of an InfoAnswer cut into
 * pieces that fit a frame (a cut may fall inside a UTF-8 character: join the
 * bytes, then decode). `more` (flag MORE) on every chunk but the last.
 */
export interface InfoResultFrame {
  type: 'INFO_RESULT';
  requestId: number;
  more: boolean;
  /** decoded: always a Buffer; to encode: a Buffer or text (UTF-8) */
  chunk: Buffer | string;
}

/** PROMOTE's answer: this server now holds the pair's leadership key, in `term` (0: it has no witness). */
export interface PromotedFrame {
  type: 'PROMOTED';
  requestId: number;
  term: number;
}

export type ServerFrame =
  | WelcomeFrame | ChallengeFrame | AuthOkFrame | GrantedFrame | LockedFrame | WaitingFrame | ReleasedFrame
  | StatusResultFrame | TestResultFrame | PongFrame | ErrorFrame | RangeResultFrame | InfoResultFrame | PromotedFrame;

export type Frame = ClientFrame | ServerFrame;

/** Why a byte stream is not a valid frame sequence: the connection closes. */
export interface ProtocolFault {
  code: 'PROTOCOL' | 'VERSION';
  reason: string;
}

/**
 * A request whose frame is sound (framing, version, type, body length all
 * right) but one of whose values is not: a key over 512 bytes, a mode other
 * than 1 or 2, unknown flag bits, two flags that exclude each other, a bad
 * TEST string. The lock server answers it with ERROR (`code`) under its
 * request id and keeps the connection (docs/protocol.md, "Errors"). It is
 * what the server's reader makes of such a frame, never a frame on the wire.
 */
export interface RefusedRequest {
  type: 'REFUSED';
  requestId: number;
  /** the request's frame type */
  request: ClientFrame['type'];
  code: 'KEY_TOO_LONG' | 'BAD_ARGUMENT';
  text: string;
}
