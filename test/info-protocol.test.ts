// info-protocol.test.ts - the INFO, INFO_QUERY and INFO_RESULT frames in the
// codec (src/protocol/codec.ts) beyond the vectors: what is a framing fault
// (closes) and what is only a bad payload (INFO: handed on for a warning;
// INFO_QUERY: answered BAD_ARGUMENT), the size bound, and that every decoded
// frame encodes back to its own bytes (non-canonical JSON included).
import test from 'ava';
import { encode, decodeBody, FrameReader, ProtocolError } from '../src/protocol/codec.js';
import { PROTO, FrameType, FrameFlag } from '../src/protocol/constants.js';
import type { ClientInfo } from '../src/info/format.js';
import { rawFrame } from './helpers/proto-vectors.js';

const u32 = (n: number): Buffer => { const b = Buffer.alloc(4); b.writeUInt32BE(n); return b; };
const json32 = (text: string | Buffer): Buffer => { const b = Buffer.isBuffer(text) ? text : Buffer.from(text, 'utf8'); return Buffer.concat([u32(b.length), b]); };
const INFO: ClientInfo = { user: 'u', program: 'p', files: [{ name: 'F', inode: '1', dev: '-1' }], stats: { locks: 1, waits: 0, waitMs: 0, retries: 0 }, moment: 'change' };

test('INFO round-trips; request id must be 0 (a protocol error otherwise, never a refusal)', (t) => {
  const b = encode({ type: 'INFO', requestId: 0, info: INFO });
  t.deepEqual(decodeBody(b.subarray(4)), { type: 'INFO', requestId: 0, info: INFO });
  t.deepEqual(FrameReader.forLockServer().push(b), [{ type: 'INFO', requestId: 0, info: INFO }]);
  const bad = rawFrame({ type: FrameType.INFO, requestId: 3, body: json32(JSON.stringify(INFO)) });
  t.throws(() => FrameReader.forLockServer().push(bad), { instanceOf: ProtocolError, message: /INFO: request id must be 0/ });
});

test('INFO with a bad payload is a sound frame: decoded as `bad` with the raw bytes, in both server readers', (t) => {
  const cases: [Buffer, RegExp][] = [
    [Buffer.from('{not json'), /not JSON/],
    [Buffer.from([0x7b, 0xff, 0x7d]), /not valid UTF-8/],
    [Buffer.from('[]'), /not a JSON object/],
    [Buffer.from(JSON.stringify({ ...INFO, moment: 'later' })), /moment "later"/],
    [Buffer.from(JSON.stringify({ ...INFO, files: [{ inode: 'x', dev: '1' }] })), /files\[0\] is not valid/],
    [Buffer.from(JSON.stringify({ ...INFO, files: Array.from({ length: 501 }, () => ({ inode: '1', dev: '1' })) })), /501 files, more than 500/],
    [Buffer.alloc(0), /not JSON/],
  ];
  for (const [payload, why] of cases) {
    const b = rawFrame({ type: FrameType.INFO, body: json32(payload) });
    for (const r of [FrameReader.forServer(), FrameReader.forLockServer()]) {
      const [f] = r.push(b);
      if (f?.type !== 'INFO' || !('bad' in f)) { t.fail(`${why.source}: ${JSON.stringify(f)}`); continue; }
      t.regex(f.bad, why);
      t.true(f.raw.equals(payload));
      t.true(encode(f).equals(b), 'encodes back to its bytes');
    }
  }
});

test('INFO framing faults close: the u32 length longer or shorter than the body, a short length field', (t) => {
  const text = Buffer.from(JSON.stringify(INFO));
  const longer = rawFrame({ type: FrameType.INFO, body: Buffer.concat([u32(text.length + 1), text]) });
  t.throws(() => FrameReader.forLockServer().push(longer), { instanceOf: ProtocolError, message: /truncated body: info needs/ });
  const shorter = rawFrame({ type: FrameType.INFO, body: Buffer.concat([u32(text.length - 1), text]) });
  t.throws(() => FrameReader.forLockServer().push(shorter), { instanceOf: ProtocolError, message: /INFO: 1 bytes after the end of the body/ });
  t.throws(() => FrameReader.forLockServer().push(rawFrame({ type: FrameType.INFO, body: Buffer.alloc(3) })), { instanceOf: ProtocolError, message: /truncated body: info length/ });
  t.throws(() => FrameReader.forLockServer().push(rawFrame({ type: FrameType.INFO, flags: 1, body: json32('{}') })), { instanceOf: ProtocolError, message: /INFO: unknown flags 0x1/ });
  t.throws(() => FrameReader.forClient().push(encode({ type: 'INFO', requestId: 0, info: INFO })), { instanceOf: ProtocolError, message: /INFO frame is not sent to a client/ });
});

test('non-canonical JSON (spacing, number forms, "{}" for no filter) decodes to the value and encodes back to its own bytes', (t) => {
  const spaced = Buffer.from(JSON.stringify(INFO, null, 2).replace('"locks": 1', '"locks": 1e0'));
  const b = rawFrame({ type: FrameType.INFO, body: json32(spaced) });
  const [f] = FrameReader.forLockServer().push(b);
  t.true(f?.type === 'INFO' && 'info' in f && f.info.stats.locks === 1);
  t.true(encode(f as never).equals(b));
  const q = rawFrame({ type: FrameType.INFO_QUERY, requestId: 5, body: json32('{}') });
  const [g] = FrameReader.forLockServer().push(q);
  t.like(g, { type: 'INFO_QUERY', requestId: 5, filter: {} });
  t.true(encode(g as never).equals(q));
  // the canonical forms carry no raw bytes
  t.deepEqual(decodeBody(encode({ type: 'INFO_QUERY', requestId: 5, filter: { port: 3 } }).subarray(4)), { type: 'INFO_QUERY', requestId: 5, filter: { port: 3 } });
  t.is(encode({ type: 'INFO_QUERY', requestId: 5, filter: {} }).length, 16, 'no filter: 0 bytes');
});

test('INFO_QUERY: a bad filter in a sound frame is a refusal (BAD_ARGUMENT) for the lock server, a protocol error for a strict reader', (t) => {
  const cases: [string, RegExp][] = [
    ['{', /the filter is not JSON/],
    ['[1]', /not a JSON object/],
    ['{"port":-1}', /filter port is not a port number/],
    ['{"port":4294967296}', /filter port is not a port number/],
    ['{"port":"12"}', /filter port/],
    ['{"file":3}', /filter file is not text/],
    ['{"key":null}', /filter key is not text/],
    ['{"user":"x"}', /filter field "user" is unknown/],
  ];
  for (const [text, why] of cases) {
    const b = rawFrame({ type: FrameType.INFO_QUERY, requestId: 9, body: json32(text) });
    const [f] = FrameReader.forLockServer().push(b);
    t.like(f, { type: 'REFUSED', requestId: 9, request: 'INFO_QUERY', code: 'BAD_ARGUMENT' }, text);
    if (f?.type === 'REFUSED') t.regex(f.text, why);
    t.throws(() => FrameReader.forServer().push(b), { instanceOf: ProtocolError, message: why });
  }
  t.like(FrameReader.forLockServer().push(rawFrame({ type: FrameType.INFO_QUERY, requestId: 9, body: json32('{"port":12,"file":"A","key":"K"}') }))[0], { type: 'INFO_QUERY', filter: { port: 12, file: 'A', key: 'K' } });
});

test('INFO_RESULT: MORE round-trips, a chunk is bytes (a cut UTF-8 character is fine), the payload bound is the frame\'s', (t) => {
  const max = PROTO.MAX_FRAME - PROTO.MIN_LENGTH - 4;
  const big = Buffer.alloc(max, 0x61);
  const b = encode({ type: 'INFO_RESULT', requestId: 2, more: true, chunk: big });
  t.is(b.length, 4 + PROTO.MAX_FRAME);
  t.is(b.readUInt16BE(6), FrameFlag.MORE);
  const [f] = FrameReader.forClient().push(b);
  t.true(f?.type === 'INFO_RESULT' && f.more && Buffer.isBuffer(f.chunk) && f.chunk.equals(big));
  t.throws(() => encode({ type: 'INFO_RESULT', requestId: 2, more: false, chunk: Buffer.alloc(max + 1) }), { instanceOf: RangeError });
  t.throws(() => encode({ type: 'INFO', requestId: 0, info: { ...INFO, user: 'x'.repeat(max) } }), { instanceOf: RangeError });
  const cut = Buffer.from('é').subarray(0, 1);
  t.deepEqual(decodeBody(encode({ type: 'INFO_RESULT', requestId: 2, more: true, chunk: cut }).subarray(4)), { type: 'INFO_RESULT', requestId: 2, more: true, chunk: cut });
  t.deepEqual(decodeBody(encode({ type: 'INFO_RESULT', requestId: 2, more: false, chunk: 'ü' }).subarray(4)), { type: 'INFO_RESULT', requestId: 2, more: false, chunk: Buffer.from('ü') });
  t.throws(() => FrameReader.forClient().push(rawFrame({ type: FrameType.INFO_RESULT, requestId: 2, flags: 2, body: json32('') })), { instanceOf: ProtocolError, message: /INFO_RESULT: unknown flags 0x2/ });
  t.throws(() => FrameReader.forServer().push(b), { instanceOf: ProtocolError, message: /INFO_RESULT frame is not sent to a server/ });
});

test('WELCOME flag INFO round-trips alone and with TOKENS; a server without it sends none', (t) => {
  const w = { type: 'WELCOME' as const, requestId: 0 as const, version: 1, mechanism: 'shm' as const, serverPid: 1, session: 1, interimMs: 1, keepaliveMs: 1, clientAddr: '127.0.0.1', server: 's' };
  for (const extra of [{}, { info: true as const }, { info: true as const, tokens: true as const }]) {
    const b = encode({ ...w, ...extra });
    t.deepEqual(decodeBody(b.subarray(4)), { ...w, ...extra });
  }
  t.is(encode({ ...w, info: true }).readUInt16BE(6), FrameFlag.INFO);
});
