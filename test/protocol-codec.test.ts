// protocol-codec.test.ts - src/protocol/codec.ts against the test vectors and
// against every kind of malformed input docs/protocol.md calls a protocol error.
import test, { type ExecutionContext } from 'ava';
import { encode, decodeBody, FrameReader, ProtocolError } from '../src/protocol/codec.js';
import { PROTO, FrameType, FrameFlag } from '../src/protocol/constants.js';
import type { Frame } from '../src/protocol/frames.js';
import { loadVectors, loadAuthExample, rawFrame, type Vector } from './helpers/proto-vectors.js';
import { clientMac, serverMac } from '../src/secret.js';

const vectors = loadVectors();
const readerFor = (v: Pick<Vector, 'direction'>): FrameReader<Frame> =>
  v.direction === 'to-server' ? FrameReader.forServer() : FrameReader.forClient();

test('the vectors cover every frame type and the required edge cases', (t) => {
  const types = new Set(vectors.map((v) => v.frame.type));
  t.deepEqual([...types].sort(), Object.keys(FrameType).sort());
  const has = (p: (v: Vector) => boolean, what: string): void => { t.true(vectors.some(p), what); };
  const f = (v: Vector): Record<string, unknown> => v.frame as unknown as Record<string, unknown>;
  has((v) => (f(v)['key'] as Buffer | undefined)?.length === 0, 'empty key');
  has((v) => (f(v)['key'] as Buffer | undefined)?.length === PROTO.MAX_KEY, '512-byte key');
  has((v) => v.frame.type === 'STATUS_RESULT' && v.frame.code < 0 && (v.frame.holder?.addr.includes(':') ?? false), 'negative STATUS code with an IPv6 holder');
  has((v) => (f(v)['file'] as { dev: bigint } | undefined)?.dev === -1n, 'dev -1');
  has((v) => (f(v)['file'] as { inode: bigint } | undefined)?.inode === 2n ** 64n - 1n, 'inode 2^64-1');
  has((v) => v.frame.type === 'HELLO' && Buffer.byteLength(v.frame.host) === PROTO.MAX_STR, 'max-length HELLO string');
  has((v) => v.frame.type === 'TEST' && Buffer.byteLength(v.frame.text) === PROTO.MAX_STR, 'max-length TEST string');
  // fencing tokens and deadlocks: both forms of GRANTED and STATUS_RESULT, the handshake flags, FENCE, DEADLOCK
  has((v) => v.frame.type === 'GRANTED' && v.frame.token === undefined, 'GRANTED without a token');
  has((v) => v.frame.type === 'GRANTED' && (v.frame.token ?? 0n) > 0n, 'GRANTED with a token');
  has((v) => v.frame.type === 'GRANTED' && v.frame.token === 0n, 'GRANTED with token 0 (none)');
  has((v) => v.frame.type === 'STATUS_RESULT' && v.frame.code > 0 && (v.frame.token ?? 0n) > 0n, 'STATUS_RESULT 1/2 with a token');
  has((v) => v.frame.type === 'STATUS_RESULT' && v.frame.code < 0 && v.frame.token !== undefined, 'STATUS_RESULT with a holder and a token');
  has((v) => v.frame.type === 'HELLO' && v.frame.tokens === true, 'HELLO with TOKENS');
  has((v) => v.frame.type === 'WELCOME' && v.frame.tokens === true, 'WELCOME with TOKENS');
  has((v) => v.frame.type === 'LOCK' && v.frame.fence !== undefined, 'LOCK with FENCE');
  has((v) => v.frame.type === 'LOCK' && v.frame.breakDeadlock === true, 'LOCK with BREAK_DEADLOCK');
  has((v) => v.frame.type === 'ERROR' && v.frame.code === 'DEADLOCK', 'ERROR DEADLOCK');
  // info records: the WELCOME flag, INFO's UTF-8 and dev -1, no filter, a chunk with MORE cut inside a character, an empty last chunk
  has((v) => v.frame.type === 'WELCOME' && v.frame.info === true && v.frame.tokens === true, 'WELCOME with INFO and TOKENS');
  has((v) => v.frame.type === 'HELLO' && v.frame.info === true && v.frame.tokens === true, 'HELLO with INFO and TOKENS');
  has((v) => v.frame.type === 'INFO' && 'info' in v.frame && v.frame.info.files.some((x) => x.dev === '-1' && x.name === undefined), 'INFO with a nameless file, dev -1');
  has((v) => v.frame.type === 'INFO_QUERY' && Object.keys(v.frame.filter).length === 0, 'INFO_QUERY without a filter');
  has((v) => v.frame.type === 'INFO_RESULT' && v.frame.more && Buffer.isBuffer(v.frame.chunk) && !Buffer.from(v.frame.chunk.toString('utf8')).equals(v.frame.chunk), 'INFO_RESULT with MORE, cut inside a UTF-8 character');
  has((v) => v.frame.type === 'INFO_RESULT' && !v.frame.more && v.frame.chunk.length === 0, 'an empty last INFO_RESULT');
});

test('the auth example: both MACs of src/secret.ts equal the vectors file\'s (computed independently), over the hello-auth frame', (t) => {
  const a = loadAuthExample();
  const hello = vectors.find((v) => v.name === a.hello);
  if (!hello) return t.fail(`vector ${a.hello} missing`);
  t.is(clientMac(a.key, a.serverNonce, a.clientNonce, hello.bytes).toString('hex'), a.clientMac.toString('hex'));
  t.is(serverMac(a.key, a.serverNonce, a.clientNonce, hello.bytes).toString('hex'), a.serverMac.toString('hex'));
  const auth = vectors.find((v) => v.name === 'auth')?.frame;
  const ok = vectors.find((v) => v.name === 'auth-ok')?.frame;
  t.true(auth?.type === 'AUTH' && auth.mac.equals(a.clientMac) && auth.nonce.equals(a.clientNonce), 'vector auth carries the example');
  t.true(ok?.type === 'AUTH_OK' && ok.mac.equals(a.serverMac), 'vector auth-ok carries the example');
  // a different HELLO (one byte) gives a different proof: the HELLO is bound to the key
  const other = Buffer.from(hello.bytes);
  other.writeUInt8((other.readUInt8(other.length - 1) ^ 1), other.length - 1);
  t.not(clientMac(a.key, a.serverNonce, a.clientNonce, other).toString('hex'), a.clientMac.toString('hex'));
});

test('typed -> bytes: encode() gives exactly each vector\'s hex', (t) => {
  for (const v of vectors) t.is(encode(v.frame).toString('hex'), v.hex, v.name);
});

test('bytes -> typed: decodeBody() and the reader give exactly each vector\'s value', (t) => {
  for (const v of vectors) {
    t.deepEqual(decodeBody(v.bytes.subarray(4)), v.frame, v.name);
    const r = readerFor(v);
    t.deepEqual(r.push(v.bytes), [v.frame], v.name);
    t.is(r.buffered, 0);
  }
});

test('decoded frames do not alias the pushed chunk', (t) => {
  const v = vectors.find((x) => x.name === 'lock-read');
  if (!v || v.frame.type !== 'LOCK') return t.fail('vector lock-read missing');
  const chunk = Buffer.from(v.bytes);
  const [f] = FrameReader.forServer().push(chunk);
  chunk.fill(0);
  t.deepEqual(f, v.frame);
});

test('streaming: every vector split at every byte boundary', (t) => {
  for (const v of vectors) {
    for (let i = 0; i <= v.bytes.length; i++) {
      const r = readerFor(v);
      const got = [...r.push(v.bytes.subarray(0, i)), ...r.push(v.bytes.subarray(i))];
      if (got.length !== 1) return t.fail(`${v.name} split at ${i}: ${got.length} frames`);
      t.deepEqual(got[0], v.frame, `${v.name} split at ${i}`);
      t.is(r.buffered, 0);
    }
  }
});

test('streaming: all frames of a direction coalesced, then byte by byte, then in odd chunks', (t) => {
  for (const direction of ['to-server', 'to-client'] as const) {
    const vs = vectors.filter((v) => v.direction === direction);
    const all = Buffer.concat(vs.map((v) => v.bytes));
    const want = vs.map((v) => v.frame);
    t.deepEqual(readerFor({ direction }).push(all), want, `${direction} in one chunk`);
    const byByte = readerFor({ direction });
    const got: Frame[] = [];
    for (let i = 0; i < all.length; i++) got.push(...byByte.push(all.subarray(i, i + 1)));
    t.deepEqual(got, want, `${direction} byte by byte`);
    for (const size of [2, 3, 5, 7, 13, 100, 4099]) {
      const r = readerFor({ direction });
      const out: Frame[] = [];
      for (let i = 0; i < all.length; i += size) out.push(...r.push(all.subarray(i, i + size)));
      t.deepEqual(out, want, `${direction} in chunks of ${size}`);
      t.is(r.buffered, 0);
    }
  }
});

// ---- malformed input ------------------------------------------------------

const T = FrameType;
const u8 = (...b: number[]): Buffer => Buffer.from(b);
const u16 = (n: number): Buffer => { const b = Buffer.alloc(2); b.writeUInt16BE(n); return b; };
const u32 = (n: number): Buffer => { const b = Buffer.alloc(4); b.writeUInt32BE(n); return b; };
const u64 = (n: bigint): Buffer => { const b = Buffer.alloc(8); b.writeBigUInt64BE(n); return b; };
const file = Buffer.alloc(16, 1);
const str = (b: Buffer): Buffer => Buffer.concat([u16(b.length), b]);
const holder = (mode: number, fam: number, addr: Buffer): Buffer => Buffer.concat([u8(mode), u32(1), u32(2), u32(3), u32(4), u8(fam), addr]);
const helloBody = (magic = 'JDLS'): Buffer => Buffer.concat([Buffer.from(magic, 'latin1'), u8(1, 1), u32(1), u32(2), u32(0), str(Buffer.from('h')), str(Buffer.from('p')), str(Buffer.alloc(0))]);
const lockBody = (mode = 1, keyLen = 3): Buffer => Buffer.concat([u8(mode), u32(1), file, u16(keyLen), Buffer.alloc(keyLen, 0x41)]);

interface Bad {
  name: string;
  bytes: Buffer;
  side: 'server' | 'client';
  reason: RegExp;
  code?: 'PROTOCOL' | 'VERSION';
}

const bad: Bad[] = [
  { name: 'length < 8', side: 'server', bytes: Buffer.concat([u32(7), Buffer.alloc(7)]), reason: /frame length 7 is outside 8\.\.65536/ },
  { name: 'length 0', side: 'client', bytes: u32(0), reason: /frame length 0 is outside/ },
  { name: 'length > 65536', side: 'server', bytes: u32(65537), reason: /frame length 65537 is outside 8\.\.65536/ },
  { name: 'length 2^32-1', side: 'client', bytes: u32(0xffffffff), reason: /frame length 4294967295 is outside/ },
  { name: 'unknown version 2', side: 'server', bytes: rawFrame({ version: 2, type: T.PING }), reason: /protocol version 2 is not spoken here \(versions 1\.\.1\)/, code: 'VERSION' },
  { name: 'unknown version 0', side: 'client', bytes: rawFrame({ version: 0, type: T.PONG }), reason: /protocol version 0/, code: 'VERSION' },
  { name: 'unknown type', side: 'server', bytes: rawFrame({ type: 0x55 }), reason: /unknown frame type 0x55/ },
  { name: 'unknown type 0x00', side: 'client', bytes: rawFrame({ type: 0x00 }), reason: /unknown frame type 0x00/ },
  { name: 'client frame sent to a client', side: 'client', bytes: rawFrame({ type: T.PING, requestId: 1 }), reason: /a PING frame is not sent to a client/ },
  { name: 'LOCK sent to a client', side: 'client', bytes: rawFrame({ type: T.LOCK, requestId: 1, body: lockBody() }), reason: /a LOCK frame is not sent to a client/ },
  { name: 'server frame sent to a server', side: 'server', bytes: rawFrame({ type: T.GRANTED, requestId: 1 }), reason: /a GRANTED frame is not sent to a server/ },
  { name: 'unknown LOCK flag bit', side: 'server', bytes: rawFrame({ type: T.LOCK, flags: 0x0080, body: lockBody() }), reason: /LOCK: unknown flags 0x80/ },
  { name: 'high flag bit', side: 'server', bytes: rawFrame({ type: T.LOCK, flags: 0x8001, body: lockBody() }), reason: /LOCK: unknown flags 0x8001/ },
  { name: 'flag on PING', side: 'server', bytes: rawFrame({ type: T.PING, flags: 1 }), reason: /PING: unknown flags 0x1/ },
  { name: 'UNLOCK_ALL flag 2', side: 'server', bytes: rawFrame({ type: T.UNLOCK_ALL, flags: 2, body: u32(1) }), reason: /UNLOCK_ALL: unknown flags 0x2/ },
  { name: 'flag on GRANTED', side: 'client', bytes: rawFrame({ type: T.GRANTED, flags: 4 }), reason: /GRANTED: unknown flags 0x4/ },
  { name: 'truncated LOCK body', side: 'server', bytes: rawFrame({ type: T.LOCK, body: lockBody().subarray(0, 10) }), reason: /truncated body: inode needs 8 bytes, 5 left/ },
  { name: 'truncated key', side: 'server', bytes: rawFrame({ type: T.UNLOCK, body: Buffer.concat([u32(1), file, u16(10), Buffer.alloc(3)]) }), reason: /truncated body: key needs 10 bytes, 3 left/ },
  { name: 'truncated RELEASED', side: 'client', bytes: rawFrame({ type: T.RELEASED, body: u8(0, 0, 1) }), reason: /truncated body: count/ },
  { name: 'trailing bytes after PING', side: 'server', bytes: rawFrame({ type: T.PING, body: u8(0) }), reason: /PING: 1 bytes after the end of the body/ },
  { name: 'trailing bytes after LOCK', side: 'server', bytes: rawFrame({ type: T.LOCK, body: Buffer.concat([lockBody(), u8(1, 2)]) }), reason: /LOCK: 2 bytes after the end of the body/ },
  { name: 'key > 512', side: 'server', bytes: rawFrame({ type: T.LOCK, body: lockBody(1, 513) }), reason: /key of 513 bytes exceeds 512/ },
  { name: 'key length 65535', side: 'server', bytes: rawFrame({ type: T.STATUS, body: Buffer.concat([u32(1), file, u16(0xffff)]) }), reason: /key of 65535 bytes exceeds 512/ },
  { name: 'mode 0', side: 'server', bytes: rawFrame({ type: T.LOCK, body: lockBody(0) }), reason: /mode 0 is not 1 \(READ\) or 2 \(WRITE\)/ },
  { name: 'mode 3', side: 'server', bytes: rawFrame({ type: T.LOCK, body: lockBody(3) }), reason: /mode 3 is not 1 \(READ\) or 2 \(WRITE\)/ },
  { name: 'holder mode 7', side: 'client', bytes: rawFrame({ type: T.WAITING, body: holder(7, 4, Buffer.alloc(4)) }), reason: /mode 7 is not/ },
  { name: 'address family 5', side: 'client', bytes: rawFrame({ type: T.LOCKED, body: holder(1, 5, Buffer.alloc(4)) }), reason: /holder address: address family 5 is not 4 or 6/ },
  { name: 'address family 0 in WELCOME', side: 'client', bytes: rawFrame({ type: T.WELCOME, body: Buffer.concat([u8(1, 1), u32(1), u32(1), u32(1), u32(1), u8(0), str(Buffer.alloc(0))]) }), reason: /client address: address family 0 is not 4 or 6/ },
  { name: 'bad mechanism', side: 'client', bytes: rawFrame({ type: T.WELCOME, body: Buffer.concat([u8(1, 3), u32(1), u32(1), u32(1), u32(1), u8(4), Buffer.alloc(4), str(Buffer.alloc(0))]) }), reason: /WELCOME: mechanism 3 is not 1 or 2/ },
  { name: 'string > 1024', side: 'server', bytes: rawFrame({ type: T.TEST, body: str(Buffer.alloc(1025, 0x61)) }), reason: /text: string of 1025 bytes exceeds 1024/ },
  { name: 'HELLO string > 1024', side: 'server', bytes: rawFrame({ type: T.HELLO, body: Buffer.concat([helloBody().subarray(0, 18), str(Buffer.alloc(1025, 0x61))]) }), reason: /host: string of 1025 bytes exceeds 1024/ },
  { name: 'invalid UTF-8: 0xff', side: 'server', bytes: rawFrame({ type: T.TEST, body: str(u8(0x61, 0xff)) }), reason: /text: not valid UTF-8/ },
  { name: 'invalid UTF-8: overlong NUL', side: 'client', bytes: rawFrame({ type: T.TEST_RESULT, body: str(u8(0xc0, 0x80)) }), reason: /text: not valid UTF-8/ },
  { name: 'invalid UTF-8: surrogate', side: 'client', bytes: rawFrame({ type: T.ERROR, body: Buffer.concat([u16(1), str(u8(0xed, 0xa0, 0x80))]) }), reason: /text: not valid UTF-8/ },
  { name: 'invalid UTF-8: cut sequence', side: 'server', bytes: rawFrame({ type: T.TEST, body: str(u8(0xe2, 0x82)) }), reason: /text: not valid UTF-8/ },
  { name: 'bad HELLO magic', side: 'server', bytes: rawFrame({ type: T.HELLO, body: helloBody('JDLX') }), reason: /HELLO: bad magic "JDLX"/ },
  { name: 'HELLO with nonzero request id', side: 'server', bytes: rawFrame({ type: T.HELLO, requestId: 5, body: helloBody() }), reason: /HELLO: request id must be 0/ },
  { name: 'WELCOME with nonzero request id', side: 'client', bytes: rawFrame({ type: T.WELCOME, requestId: 5, body: Buffer.concat([u8(1, 1), u32(1), u32(1), u32(1), u32(1), u8(4), Buffer.alloc(4), str(Buffer.alloc(0))]) }), reason: /WELCOME: request id must be 0/ },
  { name: 'STATUS_RESULT code 4', side: 'client', bytes: rawFrame({ type: T.STATUS_RESULT, body: u8(4) }), reason: /STATUS_RESULT: code 4 is not -3\.\.3/ },
  { name: 'STATUS_RESULT code -4', side: 'client', bytes: rawFrame({ type: T.STATUS_RESULT, body: Buffer.concat([u8(0xfc), holder(1, 4, Buffer.alloc(4))]) }), reason: /STATUS_RESULT: code -4 is not -3\.\.3/ },
  { name: 'STATUS_RESULT -1 without holder', side: 'client', bytes: rawFrame({ type: T.STATUS_RESULT, body: u8(0xff) }), reason: /truncated body: mode/ },
  { name: 'STATUS_RESULT 0 with a holder', side: 'client', bytes: rawFrame({ type: T.STATUS_RESULT, body: Buffer.concat([u8(0), holder(1, 4, Buffer.alloc(4))]) }), reason: /STATUS_RESULT: 22 bytes after the end/ },
  { name: 'unknown ERROR code 14', side: 'client', bytes: rawFrame({ type: T.ERROR, body: Buffer.concat([u16(14), str(Buffer.from('x'))]) }), reason: /ERROR: unknown error code 14/ },
  // the shared-secret handshake (docs/protocol.md, "Authentication")
  { name: 'HELLO flag 0x10', side: 'server', bytes: rawFrame({ type: T.HELLO, flags: 0x0010, body: Buffer.alloc(20) }), reason: /HELLO: unknown flags 0x10/ },
  { name: 'AUTH short mac', side: 'server', bytes: rawFrame({ type: T.AUTH, body: Buffer.alloc(63) }), reason: /truncated body: mac needs 32 bytes, 31 left/ },
  { name: 'AUTH too long', side: 'server', bytes: rawFrame({ type: T.AUTH, body: Buffer.alloc(65) }), reason: /AUTH: 1 bytes after the end/ },
  { name: 'AUTH request id 1', side: 'server', bytes: rawFrame({ type: T.AUTH, requestId: 1, body: Buffer.alloc(64) }), reason: /AUTH: request id must be 0/ },
  { name: 'AUTH to a client', side: 'client', bytes: rawFrame({ type: T.AUTH, body: Buffer.alloc(64) }), reason: /a AUTH frame is not sent to a client/ },
  { name: 'CHALLENGE method 2', side: 'client', bytes: rawFrame({ type: T.CHALLENGE, body: Buffer.concat([Buffer.from([2]), Buffer.alloc(32)]) }), reason: /CHALLENGE: method 2 is not 1/ },
  { name: 'CHALLENGE short nonce', side: 'client', bytes: rawFrame({ type: T.CHALLENGE, body: Buffer.concat([Buffer.from([1]), Buffer.alloc(31)]) }), reason: /nonce needs 32 bytes/ },
  { name: 'AUTH_OK request id 7', side: 'client', bytes: rawFrame({ type: T.AUTH_OK, requestId: 7, body: Buffer.alloc(32) }), reason: /AUTH_OK: request id must be 0/ },
  { name: 'AUTH_OK to a server', side: 'server', bytes: rawFrame({ type: T.AUTH_OK, body: Buffer.alloc(32) }), reason: /AUTH_OK frame is not sent to a server/ },
  { name: 'RANGE_LOCK with EXEC and FILELOCK', side: 'server', bytes: rawFrame({ type: T.RANGE_LOCK, flags: 0x0006, body: Buffer.alloc(37) }), reason: /RANGE_LOCK: flags EXEC and FILELOCK together/ },
  { name: 'RANGE_TEST with an unknown flag', side: 'server', bytes: rawFrame({ type: T.RANGE_TEST, flags: 0x0008, body: Buffer.alloc(37) }), reason: /RANGE_TEST: unknown flags 0x8/ },
  // fencing tokens and deadlocks (docs/protocol.md, "Fencing tokens", "Deadlocks")
  { name: 'GRANTED body of 7 bytes', side: 'client', bytes: rawFrame({ type: T.GRANTED, requestId: 1, body: Buffer.alloc(7) }), reason: /GRANTED: 7 bytes after the end of the body/ },
  { name: 'GRANTED body of 9 bytes', side: 'client', bytes: rawFrame({ type: T.GRANTED, requestId: 1, body: Buffer.alloc(9) }), reason: /GRANTED: 9 bytes after the end of the body/ },
  { name: 'GRANTED token 2^63', side: 'client', bytes: rawFrame({ type: T.GRANTED, requestId: 1, body: u64(1n << 63n) }), reason: /token 9223372036854775808 is not in 0\.\.2\^63-1/ },
  { name: 'STATUS_RESULT 2 with 4 trailing bytes', side: 'client', bytes: rawFrame({ type: T.STATUS_RESULT, body: Buffer.concat([u8(2), u32(0)]) }), reason: /STATUS_RESULT: 4 bytes after the end/ },
  { name: 'STATUS_RESULT -1 with holder and 9 trailing bytes', side: 'client', bytes: rawFrame({ type: T.STATUS_RESULT, body: Buffer.concat([u8(0xff), holder(1, 4, Buffer.alloc(4)), Buffer.alloc(9)]) }), reason: /STATUS_RESULT: 9 bytes after the end/ },
  { name: 'LOCK FENCE without the token', side: 'server', bytes: rawFrame({ type: T.LOCK, flags: 0x0010, body: lockBody() }), reason: /truncated body: fence token needs 8 bytes, 0 left/ },
  { name: 'LOCK FENCE with a short token', side: 'server', bytes: rawFrame({ type: T.LOCK, flags: 0x0010, body: Buffer.concat([lockBody(), Buffer.alloc(4)]) }), reason: /truncated body: fence token needs 8 bytes, 4 left/ },
  { name: 'LOCK token without FENCE', side: 'server', bytes: rawFrame({ type: T.LOCK, body: Buffer.concat([lockBody(), u64(5n)]) }), reason: /LOCK: 8 bytes after the end of the body/ },
  { name: 'LOCK FENCE with the highest epoch', side: 'server', bytes: rawFrame({ type: T.LOCK, flags: 0x0010, body: Buffer.concat([lockBody(), u64(((1n << 19n) - 1n) << 44n)]) }), reason: /FENCE token \d+ has the highest epoch \(524287\)/ },
  { name: 'LOCK FENCE token 2^64-1', side: 'server', bytes: rawFrame({ type: T.LOCK, flags: 0x0010, body: Buffer.concat([lockBody(), u64(2n ** 64n - 1n)]) }), reason: /token 18446744073709551615 is not in 0\.\.2\^63-1/ },
  { name: 'WELCOME flag 0x1', side: 'client', bytes: rawFrame({ type: T.WELCOME, flags: 0x0001, body: Buffer.concat([u8(1, 1), u32(1), u32(1), u32(1), u32(1), u8(4), Buffer.alloc(4), str(Buffer.alloc(0))]) }), reason: /WELCOME: unknown flags 0x1/ },
  { name: 'unknown ERROR code 0', side: 'client', bytes: rawFrame({ type: T.ERROR, body: Buffer.concat([u16(0), str(Buffer.alloc(0))]) }), reason: /ERROR: unknown error code 0/ },
];

function expectFault(t: ExecutionContext, fn: () => unknown, b: Pick<Bad, 'name' | 'reason' | 'code'>): void {
  const e = t.throws(fn, { instanceOf: ProtocolError }, b.name);
  if (!e) return;
  t.regex(e.message, b.reason, b.name);
  t.is(e.fault.reason, e.message);
  t.is(e.fault.code, b.code ?? 'PROTOCOL', b.name);
}

test('every malformed frame is a ProtocolError whose reason names the problem', (t) => {
  for (const b of bad) {
    const r = b.side === 'server' ? FrameReader.forServer() : FrameReader.forClient();
    expectFault(t, () => r.push(b.bytes), b);
  }
});

test('malformed frames split byte by byte fail the same way, and not before the bad byte arrives', (t) => {
  for (const b of bad) {
    const r: FrameReader<Frame> = b.side === 'server' ? FrameReader.forServer() : FrameReader.forClient();
    // The length field decides at 4 bytes; everything else needs the whole frame.
    const failAt = b.bytes.length === 4 || b.bytes.readUInt32BE(0) < PROTO.MIN_LENGTH ? 4 : b.bytes.length;
    for (let i = 0; i < failAt - 1; i++) t.deepEqual(r.push(b.bytes.subarray(i, i + 1)), [], `${b.name} byte ${i}`);
    expectFault(t, () => r.push(b.bytes.subarray(failAt - 1)), b);
  }
});

test('a bad frame after good ones in the same stream still fails, good ones before it in earlier pushes were delivered', (t) => {
  const ping = encode({ type: 'PING', requestId: 1 });
  const r = FrameReader.forServer();
  t.deepEqual(r.push(ping), [{ type: 'PING', requestId: 1 }]);
  expectFault(t, () => r.push(Buffer.concat([ping, rawFrame({ type: T.PING, flags: 1 })])), { name: 'second', reason: /unknown flags/ });
});

// ---- the lock server's reader: answer bad values, close on broken frames ---------

test('the lock server\'s reader: a bad value in a sound request is a RefusedRequest (answered), never a ProtocolError', (t) => {
  const rid = (b: Buffer, id: number): Buffer => { const c = Buffer.from(b); c.writeUInt32BE(id, 8); return c; };
  const cases: { name: string; bytes: Buffer; request: string; code: 'KEY_TOO_LONG' | 'BAD_ARGUMENT'; text: RegExp }[] = [
    { name: 'key > 512', bytes: rawFrame({ type: T.LOCK, body: lockBody(1, 513) }), request: 'LOCK', code: 'KEY_TOO_LONG', text: /^LOCK: key of 513 bytes exceeds 512$/ },
    { name: 'key of 60000 bytes', bytes: rawFrame({ type: T.STATUS, body: Buffer.concat([u32(1), file, u16(60000), Buffer.alloc(60000)]) }), request: 'STATUS', code: 'KEY_TOO_LONG', text: /60000 bytes/ },
    { name: 'mode 0', bytes: rawFrame({ type: T.LOCK, body: lockBody(0) }), request: 'LOCK', code: 'BAD_ARGUMENT', text: /mode 0 is not 1 \(READ\) or 2 \(WRITE\)/ },
    { name: 'mode 3 in an EXEC range', bytes: rawFrame({ type: T.RANGE_LOCK, flags: FrameFlag.EXEC, body: Buffer.concat([u8(3), u32(1), file, Buffer.alloc(16)]) }), request: 'RANGE_LOCK', code: 'BAD_ARGUMENT', text: /mode 3/ },
    { name: 'unknown flag', bytes: rawFrame({ type: T.PING, flags: 0x10 }), request: 'PING', code: 'BAD_ARGUMENT', text: /^PING: unknown flags 0x10$/ },
    { name: 'EXEC and FILELOCK', bytes: rawFrame({ type: T.RANGE_TEST, flags: FrameFlag.EXEC | FrameFlag.FILELOCK, body: Buffer.concat([u8(2), u32(1), file, Buffer.alloc(16)]) }), request: 'RANGE_TEST', code: 'BAD_ARGUMENT', text: /EXEC and FILELOCK together/ },
    { name: 'both probes', bytes: rawFrame({ type: T.STATUS, flags: FrameFlag.PROBE_READ | FrameFlag.PROBE_WRITE, body: Buffer.concat([u32(1), file, u16(0)]) }), request: 'STATUS', code: 'BAD_ARGUMENT', text: /PROBE_READ and PROBE_WRITE together/ },
    { name: 'TEST string of 1025 bytes', bytes: rawFrame({ type: T.TEST, body: str(Buffer.alloc(1025, 0x61)) }), request: 'TEST', code: 'BAD_ARGUMENT', text: /1025 bytes exceeds 1024/ },
    { name: 'TEST string not UTF-8', bytes: rawFrame({ type: T.TEST, body: str(u8(0xff)) }), request: 'TEST', code: 'BAD_ARGUMENT', text: /not valid UTF-8/ },
  ];
  for (const [i, k] of cases.entries()) {
    const r = FrameReader.forLockServer();
    const [f, ...rest] = r.push(rid(k.bytes, 100 + i));
    t.is(rest.length, 0, k.name);
    if (f?.type !== 'REFUSED') { t.fail(`${k.name}: ${JSON.stringify(f)}`); continue; }
    t.is(f.requestId, 100 + i, k.name);
    t.is(f.request, k.request as typeof f.request, k.name);
    t.is(f.code, k.code, k.name);
    t.regex(f.text, k.text, k.name);
    // The same bytes are a protocol error for the strict reader (what a client's reader and the broker use).
    t.throws(() => FrameReader.forServer().push(rid(k.bytes, 1)), { instanceOf: ProtocolError }, k.name);
    // And the stream goes on: the next frame decodes.
    t.deepEqual(r.push(encode({ type: 'PING', requestId: 5 })), [{ type: 'PING', requestId: 5 }], k.name);
  }
});

test('the lock server\'s reader: broken frames still throw; handshake values too; the frames before the bad one ride on the error', (t) => {
  // Each malformed client frame of the table above: answered (a value in a sound request) or closing (everything else).
  const answered = new Set(['unknown LOCK flag bit', 'high flag bit', 'flag on PING', 'UNLOCK_ALL flag 2', 'key > 512', 'mode 0', 'mode 3',
    'string > 1024', 'invalid UTF-8: 0xff', 'invalid UTF-8: cut sequence', 'RANGE_LOCK with EXEC and FILELOCK', 'RANGE_TEST with an unknown flag',
    'LOCK FENCE with the highest epoch', 'LOCK FENCE token 2^64-1']);
  const seen = new Set<string>();
  for (const b of bad.filter((x) => x.side === 'server')) {
    const r = FrameReader.forLockServer();
    const pings = Buffer.concat([encode({ type: 'PING', requestId: 1 }), encode({ type: 'PING', requestId: 2 })]);
    try {
      const out = r.push(Buffer.concat([pings, b.bytes]));
      t.is(out.length, 3, b.name);
      if (out[2]?.type === 'REFUSED') seen.add(b.name);
      else t.fail(`${b.name}: decoded as ${JSON.stringify(out[2])}`);
    } catch (e) {
      if (!(e instanceof ProtocolError)) throw e;
      t.false(answered.has(b.name), `${b.name} should be answered, not closed on: ${e.message}`);
      t.deepEqual(e.before, [{ type: 'PING', requestId: 1 }, { type: 'PING', requestId: 2 }], b.name);
    }
  }
  t.deepEqual([...seen].sort(), [...answered].sort());
  // HELLO is not a request: a bad value in it closes.
  const hello = rawFrame({ type: T.HELLO, body: Buffer.concat([Buffer.from('JDLS'), u8(1, 1), u32(1), u32(2), u32(0), str(Buffer.alloc(1025, 0x61)), str(Buffer.from('p')), str(Buffer.alloc(0))]) });
  t.throws(() => FrameReader.forLockServer().push(hello), { instanceOf: ProtocolError, message: /string of 1025 bytes/ });
  // A key length that runs past the body is structure, not a value.
  t.throws(() => FrameReader.forLockServer().push(rawFrame({ type: T.LOCK, body: Buffer.concat([u8(1), u32(1), file, u16(600), Buffer.alloc(10)]) })), { instanceOf: ProtocolError, message: /truncated body/ });
});

test('the reader refuses further use after an error', (t) => {
  for (const b of bad.slice(0, 6)) {
    const r = b.side === 'server' ? FrameReader.forServer() : FrameReader.forClient();
    t.throws(() => r.push(b.bytes), { instanceOf: ProtocolError });
    t.is(r.buffered, 0, 'nothing kept after the error');
    const good = encode(b.side === 'server' ? { type: 'PING', requestId: 1 } : { type: 'PONG', requestId: 1 });
    expectFault(t, () => r.push(good), { name: `${b.name}: then a good frame`, reason: /frame reader used after a protocol error/ });
    expectFault(t, () => r.push(Buffer.alloc(0)), { name: `${b.name}: then nothing`, reason: /used after a protocol error/ });
  }
});

test('decodeBody alone: short and oversized bodies', (t) => {
  expectFault(t, () => decodeBody(Buffer.alloc(7)), { name: 'short', reason: /frame of 7 bytes is shorter than its header/ });
  expectFault(t, () => decodeBody(Buffer.alloc(PROTO.MAX_FRAME + 1)), { name: 'long', reason: /frame of 65537 bytes exceeds 65536/ });
});

// ---- buffering bounds -------------------------------------------------------

test('never buffers more than one frame: a chunk of many frames and a partial keeps only the partial', (t) => {
  const ping = encode({ type: 'PING', requestId: 7 });
  const v = vectors.find((x) => x.name === 'hello-max-strings');
  if (!v) return t.fail('vector missing');
  const r = FrameReader.forServer();
  const tail = v.bytes.subarray(0, 1000);
  const frames = r.push(Buffer.concat([...Array<Buffer>(500).fill(ping), tail]));
  t.is(frames.length, 500);
  t.is(r.buffered, tail.length);
  t.deepEqual(r.push(v.bytes.subarray(1000)), [v.frame]);
  t.is(r.buffered, 0);
});

test('a frame of the maximum length dribbled a byte at a time: bounded buffer, error only when complete', (t) => {
  const big = rawFrame({ type: T.TEST, body: Buffer.concat([str(Buffer.from('x')), Buffer.alloc(PROTO.MAX_FRAME - 8 - 3)]) });
  t.is(big.readUInt32BE(0), PROTO.MAX_FRAME);
  const r = FrameReader.forServer();
  let max = 0;
  for (let i = 0; i < big.length - 1; i++) {
    if (r.push(big.subarray(i, i + 1)).length) return t.fail('no frame expected yet');
    max = Math.max(max, r.buffered);
  }
  t.is(max, 4 + PROTO.MAX_FRAME - 1);
  expectFault(t, () => r.push(big.subarray(big.length - 1)), { name: 'complete', reason: /TEST: 65525 bytes after the end of the body/ });
});

// ---- the encoder refuses what the wire cannot carry -----------------------

test('encode throws RangeError (never ProtocolError) for values the protocol cannot carry', (t) => {
  const file = { inode: 1n, dev: -1n };
  const cases: Array<[string, Frame]> = [
    ['key > 512', { type: 'LOCK', requestId: 1, nowait: false, noInterim: false, osLocks: false, mode: 'read', tid: 1, file, key: Buffer.alloc(513) }],
    ['string > 1024', { type: 'TEST', requestId: 1, text: 'é'.repeat(513) }],
    ['negative u32', { type: 'RELEASED', requestId: 1, count: -1 }],
    ['u32 2^32', { type: 'CANCEL', requestId: 1, target: 2 ** 32 }],
    ['fraction', { type: 'UNLOCK_ALL', requestId: 1, allThreads: false, tid: 1.5 }],
    ['request id 2^32', { type: 'PING', requestId: 2 ** 32 }],
    ['NaN', { type: 'PONG', requestId: Number.NaN }],
    ['inode < 0', { type: 'UNLOCK_FILE', requestId: 1, tid: 1, file: { inode: -1n, dev: 0n } }],
    ['inode 2^64', { type: 'UNLOCK_FILE', requestId: 1, tid: 1, file: { inode: 2n ** 64n, dev: 0n } }],
    ['dev 2^63', { type: 'UNLOCK_FILE', requestId: 1, tid: 1, file: { inode: 1n, dev: 2n ** 63n } }],
    ['bad address', { type: 'LOCKED', requestId: 1, holder: { mode: 'read', port: 1, pid: 1, ownerPid: 1, ownerTid: 1, addr: 'localhost' } }],
    ['bad mode', { type: 'LOCKED', requestId: 1, holder: { mode: 'exclusive' as 'read', port: 1, pid: 1, ownerPid: 1, ownerTid: 1, addr: '::1' } }],
    ['STATUS_RESULT code 4', { type: 'STATUS_RESULT', requestId: 1, code: 4 }],
    ['STATUS_RESULT -1 without holder', { type: 'STATUS_RESULT', requestId: 1, code: -1 }],
    ['HELLO request id', { type: 'HELLO', requestId: 3 as 0, minVersion: 1, maxVersion: 1, port: 1, pid: 1, keepaliveMs: 0, host: '', program: '', options: '' }],
    ['WELCOME request id', { type: 'WELCOME', requestId: 3 as 0, version: 1, mechanism: 'shm', serverPid: 1, session: 1, interimMs: 1, keepaliveMs: 1, clientAddr: '::1', server: '' }],
    ['WELCOME mechanism', { type: 'WELCOME', requestId: 0, version: 1, mechanism: 'nfs' as 'os', serverPid: 1, session: 1, interimMs: 1, keepaliveMs: 1, clientAddr: '::1', server: '' }],
    ['unknown ERROR code', { type: 'ERROR', requestId: 1, code: 'toString' as 'LIMIT', text: '' }],
    ['unknown type', { type: 'NOPE', requestId: 1 } as unknown as Frame],
  ];
  for (const [name, f] of cases) t.throws(() => encode(f), { instanceOf: RangeError }, name);
});

test('addresses: IPv4-mapped, zone ids and upper case come back in one canonical text', (t) => {
  const back = (addr: string): string => {
    const [f] = FrameReader.forClient().push(encode({ type: 'LOCKED', requestId: 1, holder: { mode: 'read', port: 0, pid: 0, ownerPid: 0, ownerTid: 0, addr } }));
    return f?.type === 'LOCKED' ? f.holder.addr : '';
  };
  t.is(back('::ffff:127.0.0.1'), '::ffff:127.0.0.1');
  t.is(back('::FFFF:7F00:1'), '::ffff:127.0.0.1');
  t.is(back('FE80::1%eth0'), 'fe80::1');
  t.is(back('2001:DB8:0:0:0:0:0:1'), '2001:db8::1');
  t.is(back('1::'), '1::');
  t.is(back('0.0.0.0'), '0.0.0.0');
});

test('STATUS probe (F_GETLK): PROBE_WRITE / PROBE_READ flags round-trip; both at once is a ProtocolError', (t) => {
  const file = { inode: 9n, dev: -1n };
  const key = Buffer.from('K');
  for (const probe of ['read', 'write'] as const) {
    const bytes = encode({ type: 'STATUS', requestId: 7, tid: 3, file, key, probe });
    t.is(bytes.readUInt16BE(6), probe === 'write' ? 0x0004 : 0x0002, 'the flag word');
    t.like(decodeBody(bytes.subarray(4)), { type: 'STATUS', requestId: 7, tid: 3, probe });
  }
  const plain = decodeBody(encode({ type: 'STATUS', requestId: 8, tid: 3, file, key }).subarray(4));
  t.false('probe' in plain, 'RECORDLOCKED: no probe');
  const both = encode({ type: 'STATUS', requestId: 9, tid: 3, file, key, probe: 'write' });
  both.writeUInt16BE(0x0006, 6);
  const e = t.throws(() => decodeBody(both.subarray(4)), { instanceOf: ProtocolError });
  t.regex(e?.message ?? '', /PROBE_READ and PROBE_WRITE together/);
});

// ---- fencing tokens, deadlocks (docs/protocol.md) ---------------------------

test('TOKENS, BREAK_DEADLOCK, FENCE and the tokens of GRANTED / STATUS_RESULT round-trip; absent fields stay absent', (t) => {
  const tok = (3n << 44n) | 42n;
  const frames: Frame[] = [
    { type: 'HELLO', requestId: 0, minVersion: 1, maxVersion: 1, port: 1, pid: 2, keepaliveMs: 0, host: 'h', program: 'p', options: '', tokens: true },
    { type: 'HELLO', requestId: 0, minVersion: 1, maxVersion: 1, port: 1, pid: 2, keepaliveMs: 0, host: 'h', program: 'p', options: '', auth: true, tokens: true },
    { type: 'WELCOME', requestId: 0, version: 1, mechanism: 'os', serverPid: 1, session: 2, interimMs: 3, keepaliveMs: 4, clientAddr: '::1', server: 's', tokens: true },
    { type: 'LOCK', requestId: 3, nowait: false, noInterim: false, osLocks: false, breakDeadlock: true, mode: 'read', tid: 0, file: { inode: 1n, dev: 2n }, key: Buffer.from('K') },
    { type: 'LOCK', requestId: 3, nowait: true, noInterim: true, osLocks: true, breakDeadlock: true, fence: tok, mode: 'write', tid: 0, file: { inode: 1n, dev: 2n }, key: Buffer.alloc(0) },
    { type: 'LOCK', requestId: 3, nowait: false, noInterim: false, osLocks: false, fence: 0n, mode: 'write', tid: 0, file: { inode: 1n, dev: 2n }, key: Buffer.from('K') },
    { type: 'LOCK', requestId: 3, nowait: false, noInterim: false, osLocks: false, fence: ((1n << 19n) - 2n) << 44n | ((1n << 44n) - 1n), mode: 'write', tid: 0, file: { inode: 1n, dev: 2n }, key: Buffer.from('K') },
    { type: 'GRANTED', requestId: 9, token: 0n },
    { type: 'GRANTED', requestId: 9, token: (1n << 63n) - 1n },
    { type: 'STATUS_RESULT', requestId: 9, code: 0, token: 0n },
    { type: 'STATUS_RESULT', requestId: 9, code: 1, token: tok },
    { type: 'STATUS_RESULT', requestId: 9, code: -3, holder: { mode: 'write', port: 1, pid: 2, ownerPid: 3, ownerTid: 4, addr: '2001:db8::1' }, token: 0n },
    { type: 'ERROR', requestId: 9, code: 'DEADLOCK', text: 'cycle' },
  ];
  for (const f of frames) {
    const b = encode(f);
    t.deepEqual(decodeBody(b.subarray(4)), f, f.type);
    const r = f.type === 'HELLO' || f.type === 'LOCK' ? FrameReader.forLockServer() : FrameReader.forClient();
    t.deepEqual(r.push(b), [f], `${f.type} through a reader`);
  }
  // Without the new flags and fields: exactly the old bytes (old peers are unchanged).
  t.is(encode({ type: 'GRANTED', requestId: 1 }).toString('hex'), '000000080190000000000001');
  t.is(encode({ type: 'STATUS_RESULT', requestId: 11, code: 2 }).toString('hex'), '00000009019400000000000b02');
  t.deepEqual(decodeBody(encode({ type: 'GRANTED', requestId: 1 }).subarray(4)), { type: 'GRANTED', requestId: 1 });
  t.is(FrameFlag.TOKENS, 0x0002);
});

test('encode refuses tokens the protocol does not carry: >= 2^63, negative, a FENCE of the highest epoch', (t) => {
  const lock = (fence: bigint): Frame => ({ type: 'LOCK', requestId: 1, nowait: false, noInterim: false, osLocks: false, fence, mode: 'read', tid: 0, file: { inode: 1n, dev: 1n }, key: Buffer.alloc(0) });
  t.throws(() => encode({ type: 'GRANTED', requestId: 1, token: 1n << 63n }), { instanceOf: RangeError, message: /not in 0\.\.2\^63-1/ });
  t.throws(() => encode({ type: 'STATUS_RESULT', requestId: 1, code: 1, token: -1n }), { instanceOf: RangeError });
  t.throws(() => encode(lock(((1n << 19n) - 1n) << 44n)), { instanceOf: RangeError, message: /highest epoch/ });
  t.throws(() => encode(lock(1n << 63n)), { instanceOf: RangeError });
  // GRANTED's token may have the highest epoch (a server that reached it still says so); only FENCE may not.
  t.notThrows(() => encode({ type: 'GRANTED', requestId: 1, token: ((1n << 19n) - 1n) << 44n }));
});

test('the lock server\'s reader answers a bad FENCE token with BAD_ARGUMENT and reads on', (t) => {
  const r = FrameReader.forLockServer();
  const body = Buffer.concat([lockBody(), u64(((1n << 19n) - 1n) << 44n)]);
  const [f] = r.push(rawFrame({ type: T.LOCK, flags: FrameFlag.FENCE | FrameFlag.BREAK_DEADLOCK, requestId: 7, body }));
  if (f?.type !== 'REFUSED') return t.fail(JSON.stringify(f));
  t.is(f.code, 'BAD_ARGUMENT');
  t.is(f.requestId, 7);
  t.regex(f.text, /^LOCK: FENCE token \d+ has the highest epoch/);
  t.deepEqual(r.push(encode({ type: 'PING', requestId: 8 })), [{ type: 'PING', requestId: 8 }]);
});
