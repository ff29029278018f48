// native.ts - the only module that loads the addon (build/Release/jdls.node).
//
// It types the addon's surface and mirrors the constants of
// native/common/jdls_table.h. The numbers themselves come from the addon at
// run time; test/native-constants.test.ts checks that the mirror and the
// header agree, so the two cannot drift silently.
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import { JdlsError, type JdlsErrorCode } from './errors.js';
import type { NativeOsLock } from './locks/ofd.js';

/** The package root (two levels above dist/src/native.js). */
export const packageRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

/** Where node-gyp puts the native artefacts. */
export const buildDir = path.join(packageRoot, 'build', 'Release');

/**
 * An owner or a file identity packed into native memory (a napi external):
 * opaque to TypeScript, cheap for the addon to read back on every call.
 */
declare const handleBrand: unique symbol;
export interface NativeHandle<K extends 'owner' | 'file'> {
  readonly [handleBrand]: K;
}
export type OwnerHandle = NativeHandle<'owner'>;
export type FileHandle = NativeHandle<'file'>;

export interface NativeHolder {
  pid: number;
  ownerPid: number;
  ownerTid: number;
  port: number;
  mode: number;
  ip: string;
}

export interface NativeRow {
  group: number;
  slot: number;
  state: number;
  queued: number;
  mode: number;
  hash: number;
  pid: number;
  ownerPid: number;
  ownerTid: number;
  /** the owner's connection within the holding process (a lock server's client), 0 for a local process */
  conn: number;
  port: number;
  inode: bigint;
  dev: bigint;
  seq: number;
  stampMs: number;
  /** fencing token of a HELD entry, else 0n */
  token: bigint;
  /** arrival order of a wait (the youngest of a cycle has the largest), else 0 */
  waitNo: number;
  ip: string;
  key: Buffer;
}

/** One member of a reported deadlock cycle: an owner and the lock it waits for. */
export interface NativeReportMember {
  pid: number;
  ownerPid: number;
  ownerTid: number;
  port: number;
  conn: number;
  mode: number;
  ip: string;
  inode: bigint;
  dev: bigint;
  waitNo: number;
  /** the key's full length (key holds at most 64 bytes of it) */
  keyLength: number;
  key: Buffer;
}

/** A deadlock cycle found by the table (jdls_deadlock_report). */
export interface NativeReport {
  number: number;
  timeMs: number;
  /** owners in the cycle (m lists the first 8) */
  members: number;
  /** index in m of the refused wait, -1 if the cycle was only reported */
  victim: number;
  m: NativeReportMember[];
}

export interface NativeHeader {
  version: number;
  ngroups: number;
  perGroup: number;
  flags: number;
  totalSize: number;
  entrySize: number;
  requestedLocks: number;
  tidyMs: number;
  monitorPid: number;
  monitorStart: number;
  listenerPid: number;
  listenerStart: number;
  listenerPort: number;
  listenerAddr: string;
  createdMs: number;
  startedMs: number;
  lastRanMs: number;
  lastTidyMs: number;
  tidyOps: number;
  lockRetries: number;
  /** C.SERVICE_*: whether the table is the installation's record-lock mechanism (a STARTING table whose starter died reads RETIRED) */
  service: number;
  starterPid: number;
  /** the group hash's key (random per table): a key's group is hash(file, key, hashSeed) % ngroups */
  hashSeed: bigint;
  /** C.DEADLOCK_* */
  deadlockPolicy: number;
  deadlocksFound: number;
  deadlocksBroken: number;
  /** reports ever written (report n is readReport(n) while among the last 16) */
  deadlockReports: number;
  /** the next fencing token the table will give */
  nextToken: bigint;
}

export type HeaderField =
  | 'monitorPid' | 'monitorStart' | 'listenerPid' | 'listenerStart' | 'listenerPort'
  | 'startedMs' | 'lastRanMs' | 'lastTidyMs' | 'tidyMs' | 'lockRetries';

export type NativeTryLock =
  | number
  | { rc: 1; holder: NativeHolder }
  | { rc: 2; group: number; slot: number; seq: number; holder?: NativeHolder };

export interface NativeTable {
  readonly existed: boolean;
  /** flags: C.REQ_* (on rc OK the grant's token is in the token sink) */
  tryLock(owner: OwnerHandle, file: FileHandle, key: Buffer | string, mode: number, flags: number): NativeTryLock;
  /** where tryLock, lockBlocking and cancel put a grant's token */
  setTokenSink(sink: BigUint64Array): void;
  /** the token of the owner's lock on the key, 0n if none */
  tokenOf(owner: OwnerHandle, file: FileHandle, key: Buffer | string): bigint;
  /** every later token >= floor */
  tokenFloor(floor: bigint): void;
  /** the next token the table would give */
  tokenPeek(): bigint;
  /** C.DEADLOCK_*: C.RC_OK or a negative rc */
  setDeadlockPolicy(policy: number): number;
  /** report n (1-based), undefined if overwritten or being written */
  readReport(n: number): NativeReport | undefined;
  /** queue a wait with the waiter thread; onLook() says "some wait may be settled: call takeGranted()" */
  waitAsync(group: number, slot: number, seq: number, id: number, onLook: () => void): void;
  cancel(group: number, slot: number, seq: number): number;
  /** this process's waits settled now, as [id, rc, token, id, rc, token, ...], taken off the list: the one way a wait settles */
  takeGranted(): (number | bigint)[] | undefined;
  ref(): void;
  unref(): void;
  lockBlocking(owner: OwnerHandle, file: FileHandle, key: Buffer | string, mode: number, timeoutMs: number, flags?: number): number;
  unlock(owner: OwnerHandle, file: FileHandle, key: Buffer | string): number;
  unlockAll(owner: OwnerHandle, file: FileHandle | null): number;
  status(owner: OwnerHandle, file: FileHandle, key: Buffer | string): { code: number; holder?: NativeHolder };
  conflict(owner: OwnerHandle, file: FileHandle, key: Buffer | string, mode: number): NativeHolder | null | number;
  tidy(): number;
  list(firstGroup: number, groupCount: number): { rows: NativeRow[]; next: number } | number;
  check(): number;
  usage(): { held: number; waiting: number; maxInGroup: number; highWater: number };
  countLockRetry(): void;
  claimMonitor(pid: number, pidStart: number): number;
  header(): NativeHeader;
  setHeader(field: HeaderField, value: number): void;
  setHeader(field: 'listenerAddr', value: string): void;
  /** put the table in service: C.RC_OK, or C.RC_CONFLICT while OS-route processes live (native/common/jdls_service.c) */
  enterService(): number;
  /** take it out of service (before removing it) */
  retire(): void;
  debugHoldGroup(group: number): number;
  close(): void;
}

export interface RcInfo { value: number; text: string }

export interface NativeConstants {
  MAGIC: number;
  LAYOUT_VERSION: number;
  MAX_KEY: number;
  PROC_SLOTS: number;
  DEFAULT_LOCKS: number;
  DEFAULT_PER_GROUP: number;
  MAX_LOCKS: number;
  MAX_PER_GROUP: number;
  LIVENESS_TICK_MS: number;
  FLAG_PORT_LOCKS: number;
  FLAG_TIMESTAMPS: number;
  MODE_READ: number;
  MODE_WRITE: number;
  STATE_FREE: number;
  STATE_HELD: number;
  STATE_WAITING: number;
  STATE_REFUSED: number;
  REQ_NOWAIT: number;
  REQ_BREAK_DEADLOCK: number;
  DEADLOCK_OFF: number;
  DEADLOCK_REPORT: number;
  DEADLOCK_BREAK: number;
  TOKEN_EPOCH_SHIFT: number;
  TOKEN_MAX_EPOCH: bigint;
  ENTRY_SIZE: number;
  GROUP_HEADER_SIZE: number;
  HEADER_SIZE: number;
  PROC_SLOT_SIZE: number;
  RL_FILELOCK: number;
  RL_WRITE: number;
  RL_READ: number;
  RL_FREE: number;
  RC: Record<string, RcInfo>;
}

/** An opaque mapped token counter (native/addon/tokens.cc). */
export type TokenCounterHandle = { readonly __tokenCounter: unique symbol };

export interface NativeAddon {
  /** releaseDir: the installation directory, whose owner and group say who may own the table (native/common/jdls_table.h, jdls_trust) */
  Table: new (path: string, create: boolean, nlocks: number, perGroup: number, flags: number, releaseDir: string) => NativeTable;
  releaseDir(): string | null;
  tablePath(releaseDir: string): string | null;
  /** the 30-bit lock hash under a table's hashSeed (0n when omitted) */
  hash(file: FileHandle, key: Buffer | string, seed?: bigint): number;
  nextPrime(n: number): number;
  pidStart(pid: number): number;
  pidAlive(pid: number, start: number): boolean;
  gettid(): number;
  makeOwner(pid: number, ownerPid: number, ownerTid: number, port: number, pidStart: number, ip: Buffer, conn: number): OwnerHandle;
  makeFile(inode: bigint | number, dev: bigint | number): FileHandle;
  /** hold the installation's OS-route marker read lock for the rest of this process's life: the descriptor, or -errno */
  registerOsRoute(tablePath: string, releaseDir?: string): number;
  /** why this thread's last table open/create or marker registration was refused (jdls_detail), or '' */
  lastDetail(): string;
  constants: NativeConstants;
  /** OS file locks: open file descriptions and their waits (native/addon/oslock.cc, typed in src/locks/ofd.ts) */
  oslock: NativeOsLock;
  /** every #define of native/common/jdls_proto.h, by its full name */
  proto: Record<string, number>;
  /** the OS mechanism's fencing-token counter file (native/addon/tokens.cc) */
  tokenCounter: {
    /** map the counter file (created 0600 if missing, checked like the table): a handle, or -errno */
    open(path: string, releaseDir: string): TokenCounterHandle | number;
    /** the next token (one atomic add) */
    next(c: TokenCounterHandle): bigint;
    /** every later token >= floor */
    floor(c: TokenCounterHandle, floor: bigint): void;
    /** the next token (no change) */
    peek(c: TokenCounterHandle): bigint;
  };
  /** descriptor passing over a Unix-domain socket (native/addon/fdpass.cc) */
  fdpass: {
    /** sendmsg of `bytes` with `fd` attached (SCM_RIGHTS): 0, or -errno */
    sendFd(unixFd: number, fd: number | number[], bytes: Buffer): number;
    /** the connected peer's uid (SO_PEERCRED), or -errno */
    peerUid(unixFd: number): number;
  };
}

const require = createRequire(import.meta.url);

export const native: NativeAddon = require(path.join(buildDir, 'jdls.node')) as NativeAddon;

/**
 * The mirror of the header's constants that TypeScript code uses by name.
 * Values are checked against the addon (test/native-constants.test.ts).
 */
export const C = {
  MAX_KEY: 512,
  DEFAULT_LOCKS: 3020,
  DEFAULT_PER_GROUP: 20,
  MODE_READ: 1,
  MODE_WRITE: 2,
  STATE_HELD: 1,
  STATE_WAITING: 2,
  STATE_REFUSED: 3,
  REQ_NOWAIT: 0x1,
  REQ_BREAK_DEADLOCK: 0x2,
  DEADLOCK_OFF: 0,
  DEADLOCK_REPORT: 1,
  DEADLOCK_BREAK: 2,
  TOKEN_EPOCH_SHIFT: 44,
  SERVICE_STARTING: 0,
  SERVICE_ON: 1,
  SERVICE_RETIRED: 2,
  FLAG_PORT_LOCKS: 0x1,
  FLAG_TIMESTAMPS: 0x2,
  RL_FILELOCK: 3,
  RL_WRITE: 2,
  RL_READ: 1,
  RL_FREE: 0,
  RC_OK: 0,
  RC_CONFLICT: 1,
  RC_QUEUED: 2,
  RC_TIMEOUT: 3,
  RC_NOT_HELD: 4,
  RC_DEADLOCK: 5,
} as const;

const byValue = new Map<number, { name: string; text: string }>();
for (const [name, info] of Object.entries(native.constants.RC)) byValue.set(info.value, { name, text: info.text });

/** The error for a native result code (< 0), through the addon's one table. */
export function errorFromRc(rc: number, context?: string): JdlsError {
  const known = byValue.get(rc);
  const code = (known ? known.name : `JDLS_UNKNOWN_${rc}`) as JdlsErrorCode;
  const text = known ? known.text : `unknown native result ${rc}`;
  return new JdlsError(code, context ? `${context}: ${text}` : text, rc === -37 ? { jbaseError: 37 } : undefined);
}
