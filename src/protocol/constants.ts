// constants.ts - the wire protocol's numbers, mirrored from
// native/common/jdls_proto.h (the one definition; docs/protocol.md explains
// each). test/protocol-constants.test.ts compares this mirror with the header.

export const PROTO = {
  VERSION: 1,
  MIN_VERSION: 1,
  HEADER: 12,
  MIN_LENGTH: 8,
  MAX_FRAME: 65536,
  MAX_KEY: 512,
  MAX_STR: 1024,
  DEFAULT_PORT: 50002,
} as const;

export const FrameType = {
  HELLO: 0x01,
  AUTH: 0x02,
  LOCK: 0x10,
  UNLOCK: 0x11,
  UNLOCK_FILE: 0x12,
  UNLOCK_ALL: 0x13,
  STATUS: 0x14,
  CANCEL: 0x15,
  TEST: 0x16,
  PING: 0x17,
  RANGE_LOCK: 0x18,
  RANGE_UNLOCK: 0x19,
  RANGE_TEST: 0x1a,
  INFO: 0x1b,
  INFO_QUERY: 0x1c,
  PROMOTE: 0x1d,
  WELCOME: 0x81,
  CHALLENGE: 0x82,
  AUTH_OK: 0x83,
  GRANTED: 0x90,
  LOCKED: 0x91,
  WAITING: 0x92,
  RELEASED: 0x93,
  STATUS_RESULT: 0x94,
  TEST_RESULT: 0x95,
  PONG: 0x96,
  RANGE_RESULT: 0x97,
  INFO_RESULT: 0x98,
  PROMOTED: 0x99,
  ERROR: 0xe0,
} as const;
export type FrameTypeName = keyof typeof FrameType;

export const FrameFlag = {
  AUTH: 0x0001,
  NOWAIT: 0x0001,
  NO_INTERIM: 0x0002,
  OSLOCKS: 0x0004,
  ALL_THREADS: 0x0001,
  EXEC: 0x0002,
  FILELOCK: 0x0004,
  PROBE_READ: 0x0002,
  PROBE_WRITE: 0x0004,
  STATUS_OSLOCKS: 0x0008,
  TOKENS: 0x0002,
  BREAK_DEADLOCK: 0x0008,
  FENCE: 0x0010,
  OFFSET: 0x0020,
  INFO: 0x0004,
  MORE: 0x0001,
  PAIR: 0x0008,
  WITNESS: 0x0008,
  MIRROR: 0x0040,
} as const;

export const Mechanism = { SHM: 1, OS: 2 } as const;

/** A witnessed server's role (WELCOME with WITNESS; docs/protocol.md, "Pairs and the witness"). */
export const Role = { LEADER: 1, FOLLOWER: 2 } as const;

export const ProtoError = {
  PROTOCOL: 1,
  VERSION: 2,
  LIMIT: 3,
  TABLE_FULL: 4,
  KEY_TOO_LONG: 5,
  CANCELLED: 6,
  BAD_ARGUMENT: 7,
  SYSTEM: 8,
  SHUTDOWN: 9,
  NOT_SUPPORTED: 10,
  AUTH: 11,
  DEADLOCK: 12,
  NOT_LEADER: 13,
} as const;
export type ProtoErrorName = keyof typeof ProtoError;

/**
 * Fencing tokens (docs/protocol.md, "Fencing tokens"): a u64 below 2^63,
 * mirrored from jdls_table.h (JDLS_TOKEN_*; test/native-constants.test.ts
 * compares them),
 * bits 62..44 the epoch, 43..0 a counter. A FENCE token with the highest
 * epoch is refused: the server could not give a later epoch.
 */
export const Token = {
  EPOCH_SHIFT: 44n,
  EPOCH_MAX: (1n << 19n) - 1n,
  LIMIT: 1n << 63n,
} as const;

/** The shared-secret handshake (docs/protocol.md, "Authentication"). */
export const Auth = {
  NONCE: 32,
  MAC: 32,
  HMAC_SHA256: 1,
} as const;
