/*
 * jdls_proto.h - the wire protocol's numbers: frame types, flags, error
 * codes, limits. The one definition; docs/protocol.md explains each, and
 * src/protocol/constants.ts mirrors them (test/protocol-constants.test.ts
 * compares the two through the addon's `proto` export).
 *
 * Frame header (big-endian): u32 length (bytes after this field), u8 version,
 * u8 type, u16 flags, u32 request_id, then the body.
 */
#ifndef JDLS_PROTO_H
#define JDLS_PROTO_H

#define JDLS_PROTO_VERSION        1   /* the highest version this build speaks */
#define JDLS_PROTO_MIN_VERSION    1
#define JDLS_PROTO_HEADER         12  /* length field + 8 bytes of header */
#define JDLS_PROTO_MIN_LENGTH     8   /* a frame with an empty body */
#define JDLS_PROTO_MAX_FRAME      65536
#define JDLS_PROTO_MAX_KEY        512
#define JDLS_PROTO_MAX_STR        1024
#define JDLS_PROTO_DEFAULT_PORT   50002

/* client -> server */
#define JDLS_FT_HELLO        0x01
#define JDLS_FT_AUTH         0x02  /* answer to CHALLENGE: client nonce + HMAC (shared secret) */
#define JDLS_FT_LOCK         0x10
#define JDLS_FT_UNLOCK       0x11
#define JDLS_FT_UNLOCK_FILE  0x12
#define JDLS_FT_UNLOCK_ALL   0x13
#define JDLS_FT_STATUS       0x14
#define JDLS_FT_CANCEL       0x15
#define JDLS_FT_TEST         0x16
#define JDLS_FT_PING         0x17
#define JDLS_FT_RANGE_LOCK   0x18  /* binary (byte-range) locks: BINARY */
#define JDLS_FT_RANGE_UNLOCK 0x19
#define JDLS_FT_RANGE_TEST   0x1A
#define JDLS_FT_INFO         0x1B  /* the client's own information for its info record (files by name, user,
                                        statistics): u32 length + UTF-8 JSON ClientInfo (docs/info-records.md);
                                        request id 0, never answered; bad JSON in a sound frame is ignored with a
                                        warning, not a protocol error */
#define JDLS_FT_INFO_QUERY   0x1C  /* the info records of the server's host: u32 length + JSON filter
                                        {"port"?,"file"?,"key"?} (0 bytes = none; a bad one: ERROR BAD_ARGUMENT);
                                        answered by INFO_RESULT frames */
#define JDLS_FT_PROMOTE      0x1D  /* SERVER2 with a witness: u32 wait_ms; "the primary is gone: become the
                                        primary" - answered PROMOTED once this server holds the pair's
                                        leadership key, ERROR NOT_LEADER when it could not within wait_ms; a
                                        server without a witness answers PROMOTED term 0 at once */
/* server -> client */
#define JDLS_FT_WELCOME      0x81
#define JDLS_FT_CHALLENGE    0x82  /* answer to HELLO with AUTH when a secret is configured: server nonce */
#define JDLS_FT_AUTH_OK      0x83  /* the server's HMAC, just before WELCOME */
#define JDLS_FT_GRANTED      0x90
#define JDLS_FT_LOCKED       0x91
#define JDLS_FT_WAITING      0x92
#define JDLS_FT_RELEASED     0x93
#define JDLS_FT_STATUS_RESULT 0x94
#define JDLS_FT_TEST_RESULT  0x95
#define JDLS_FT_PONG         0x96
#define JDLS_FT_RANGE_RESULT 0x97
#define JDLS_FT_INFO_RESULT  0x98  /* u32 length + a chunk of JSON text (an InfoAnswer; join the bytes, then
                                        decode: a chunk may end inside a UTF-8 character); flag MORE on every
                                        chunk but the last; at most MAX_FRAME - 12 bytes a chunk */
#define JDLS_FT_PROMOTED     0x99  /* u32 term: the leadership term this server now grants in (0: no witness) */
#define JDLS_FT_ERROR        0xE0

/* flags */
#define JDLS_FF_AUTH         0x0001  /* HELLO: the client holds a shared secret and will authenticate */
#define JDLS_FF_NOWAIT       0x0001  /* LOCK, RANGE_LOCK: never wait (LOCKED clause) */
#define JDLS_FF_NO_INTERIM   0x0002  /* LOCK: no WAITING frames (JDLS WAIT) */
#define JDLS_FF_OSLOCKS      0x0004  /* LOCK: as an OS file lock */
#define JDLS_FF_ALL_THREADS  0x0001  /* UNLOCK_ALL: every thread of the connection */
#define JDLS_FF_EXEC         0x0002  /* RANGE_LOCK/UNLOCK/TEST: execution locks (LOCK n: start = n) */
#define JDLS_FF_FILELOCK     0x0004  /* RANGE_LOCK/UNLOCK/TEST: FILELOCK of the file (its record locks) */
#define JDLS_FF_PROBE_READ   0x0002  /* STATUS: F_GETLK for a READ: another owner's lock that blocks it */
#define JDLS_FF_PROBE_WRITE  0x0004  /* STATUS: F_GETLK for a WRITE: another owner's lock that blocks it */
#define JDLS_FF_STATUS_OSLOCKS 0x0008 /* STATUS: about the OS record locks (what LOCK with OSLOCKS takes) */
#define JDLS_FF_TOKENS       0x0002  /* HELLO: send fencing tokens; WELCOME: they will be sent (GRANTED and
                                        STATUS_RESULT then carry a u64 token: docs/protocol.md) */
#define JDLS_FF_BREAK_DEADLOCK 0x0008 /* LOCK: refuse (ERROR DEADLOCK) rather than wait in a cycle of waiters */
#define JDLS_FF_FENCE        0x0010  /* LOCK: a u64 token follows the key: the primary's token for this grant
                                        (SERVER2 mirroring); the server's later tokens outrank its epoch */
#define JDLS_FF_OFFSET       0x0020  /* LOCK, UNLOCK, STATUS: the key is the lowercase hex of a byte offset the
                                        program itself locked in the jlock file (the shim's fcntl/lockf
                                        emulation): OS record locks take exactly that byte, not the key's hash;
                                        the table ignores it (docs/protocol.md, "Byte-offset keys") */

#define JDLS_FF_INFO         0x0004  /* HELLO: this client knows INFO (it reads WELCOME's flag INFO; set by the
                                        jdls client, which says HELLO again without it to a server that refuses
                                        it); WELCOME: this server takes INFO and INFO_QUERY - set only when HELLO
                                        had it (an older client refuses an unknown WELCOME flag). Without it the
                                        client sends neither: an older server closes on an unknown frame type */
#define JDLS_FF_MORE         0x0001  /* INFO_RESULT: more chunks of this answer follow */
#define JDLS_FF_PAIR         0x0008  /* HELLO: a SERVER2 client that knows WELCOME's flag WITNESS, LOCK's flag
                                        MIRROR, PROMOTE and ERROR NOT_LEADER (docs/protocol.md, "Pairs") */
#define JDLS_FF_WITNESS      0x0008  /* WELCOME: this server runs with a witness (set only when HELLO had PAIR):
                                        u8 role (JDLS_ROLE_*) and u32 term follow the server name */
#define JDLS_FF_MIRROR       0x0040  /* LOCK, RANGE_LOCK: the request repeats a grant the client's primary made
                                        (SERVER2 duplication): a witnessed follower grants only these */

/* witness roles (WELCOME with WITNESS) */
#define JDLS_ROLE_LEADER     1   /* holds the pair's leadership key under a valid lease: grants */
#define JDLS_ROLE_FOLLOWER   2   /* does not: grants only MIRROR locks */

/* mechanisms (WELCOME) */
#define JDLS_MECH_SHM        1
#define JDLS_MECH_OS         2

/* ERROR codes */
#define JDLS_PE_PROTOCOL     1
#define JDLS_PE_VERSION      2
#define JDLS_PE_LIMIT        3
#define JDLS_PE_TABLE_FULL   4
#define JDLS_PE_KEY_TOO_LONG 5
#define JDLS_PE_CANCELLED    6
#define JDLS_PE_BAD_ARGUMENT 7
#define JDLS_PE_SYSTEM       8
#define JDLS_PE_SHUTDOWN     9
#define JDLS_PE_NOT_SUPPORTED 10
#define JDLS_PE_AUTH         11  /* authentication required or failed; the connection closes */
#define JDLS_PE_DEADLOCK     12  /* LOCK with BREAK_DEADLOCK: waiting would close a cycle of waiters */
#define JDLS_PE_NOT_LEADER   13  /* a witnessed server that is not the pair's leader: a LOCK without MIRROR,
                                    a PROMOTE it could not honour in time; request id 0: it lost its
                                    leadership and closes the connection */

/* the shared-secret handshake (docs/protocol.md, "Authentication") */
#define JDLS_AUTH_NONCE      32  /* bytes of each side's nonce */
#define JDLS_AUTH_MAC        32  /* bytes of an HMAC-SHA256 */
#define JDLS_AUTH_HMAC_SHA256 1  /* CHALLENGE method: HMAC-SHA256, labels "jdls-auth-v1 client|server" */

#endif /* JDLS_PROTO_H */
