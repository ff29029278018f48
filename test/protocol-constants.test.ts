// protocol-constants.test.ts - one definition of the wire protocol's numbers.
//
// jdls_proto.h is the definition. The addon's `proto` export (proto.cc) is
// compiled from it; src/protocol/constants.ts mirrors it by hand. Here: the
// header's #define set equals the addon's key set, every mirror constant equals
// its header counterpart and every header constant has exactly one mirror
// entry; and the C program jdls-protovectors, which reads frame headers with
// the header's own #defines, agrees with the bytes of every test vector.
import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { native, packageRoot, buildDir } from '../src/native.js';
import { PROTO, FrameType, FrameFlag, Mechanism, ProtoError, Auth, Role } from '../src/protocol/constants.js';
import { loadVectors, type Vector } from './helpers/proto-vectors.js';

const addonProto = (native as unknown as { proto: Record<string, number> }).proto;

/** The header's #defines with a value: name -> number. */
function headerDefines(): Map<string, number> {
  const text = fs.readFileSync(path.join(packageRoot, 'native', 'common', 'jdls_proto.h'), 'utf8');
  const out = new Map<string, number>();
  for (const m of text.matchAll(/^\s*#\s*define\s+(JDLS_\w+)[ \t]+([^\s/]+)/gm)) {
    const value = Number(m[2]);
    if (!Number.isInteger(value)) throw new Error(`jdls_proto.h: ${m[1]} = ${m[2]} is not a plain integer`);
    out.set(m[1] as string, value);
  }
  return out;
}

/** Every mirror constant with the header name it mirrors. */
function mirror(): Array<[string, number]> {
  const groups: Array<[string, Record<string, number>]> = [
    ['JDLS_PROTO_', PROTO], ['JDLS_FT_', FrameType], ['JDLS_FF_', FrameFlag], ['JDLS_MECH_', Mechanism], ['JDLS_ROLE_', Role], ['JDLS_PE_', ProtoError], ['JDLS_AUTH_', Auth],
  ];
  return groups.flatMap(([prefix, g]) => Object.entries(g).map(([k, v]): [string, number] => [prefix + k, v]));
}

test('the addon exports exactly the constants jdls_proto.h defines, with their values', (t) => {
  const header = headerDefines();
  t.true(header.size >= 40, `parsed ${header.size} #defines`);
  t.deepEqual(Object.keys(addonProto).sort(), [...header.keys()].sort());
  for (const [name, value] of header) t.is(addonProto[name], value, name);
});

test('the TypeScript mirror equals the header, constant by constant, and covers all of it', (t) => {
  const m = mirror();
  for (const [name, value] of m) {
    t.true(name in addonProto, `${name} exists in jdls_proto.h`);
    t.is(addonProto[name], value, name);
  }
  t.deepEqual(m.map(([n]) => n).sort(), Object.keys(addonProto).sort(), 'one mirror entry per header constant');
});

test('frame type codes are distinct and split by direction at 0x80', (t) => {
  const codes = Object.values(FrameType);
  t.is(new Set(codes).size, codes.length);
  const client = ['HELLO', 'AUTH', 'LOCK', 'UNLOCK', 'UNLOCK_FILE', 'UNLOCK_ALL', 'STATUS', 'CANCEL', 'TEST', 'PING', 'RANGE_LOCK', 'RANGE_UNLOCK', 'RANGE_TEST', 'INFO', 'INFO_QUERY', 'PROMOTE'];
  for (const [name, code] of Object.entries(FrameType)) t.is(code < 0x80, client.includes(name), name);
  t.is(new Set(Object.values(ProtoError)).size, Object.keys(ProtoError).length);
});

const protovectors = path.join(buildDir, 'jdls-protovectors');
const line = (v: Vector): string =>
  `${v.name} ${v.frame.type} ${v.flags.length ? v.flags.join('|') : '-'} ${v.frame.requestId} ${v.hex}\n`;

test('jdls-protovectors (C, jdls_proto.h) agrees with the header of every vector', (t) => {
  const vectors = loadVectors();
  const r = spawnSync(protovectors, { input: vectors.map(line).join(''), encoding: 'utf8', timeout: 10_000 });
  t.is(r.error, undefined);
  t.is(r.status, 0, r.stdout);
  t.true(r.stdout.includes(`checked ${vectors.length}, failed 0`), r.stdout);
});

test('jdls-protovectors can fail: wrong type, flags, length, version and request id are caught', (t) => {
  const v = loadVectors().find((x) => x.name === 'lock-write-all-flags');
  if (!v) return t.fail('vector lock-write-all-flags missing');
  const edit = (name: string, f: (b: Buffer) => void, over: Partial<{ type: string; flags: string; rid: string }> = {}): string => {
    const b = Buffer.from(v.bytes);
    f(b);
    return `${name} ${over.type ?? v.frame.type} ${over.flags ?? v.flags.join('|')} ${over.rid ?? v.frame.requestId} ${b.toString('hex')}\n`;
  };
  const input = [
    edit('type-byte', (b) => b.writeUInt8(0x11, 5)),
    edit('type-name', () => {}, { type: 'UNLOCK' }),
    edit('flags-byte', (b) => b.writeUInt16BE(3, 6)),
    edit('flags-unknown', (b) => b.writeUInt16BE(0x0027, 6), { flags: 'NOWAIT|NO_INTERIM|OSLOCKS' }),
    edit('length', (b) => b.writeUInt32BE(b.length, 0)),
    edit('version', (b) => b.writeUInt8(2, 4)),
    edit('request-id', (b) => b.writeUInt32BE(1, 8)),
  ].join('');
  const r = spawnSync(protovectors, { input, encoding: 'utf8', timeout: 10_000 });
  t.is(r.status, 1);
  t.true(r.stdout.includes('checked 7, failed 7'), r.stdout);
  t.regex(r.stdout, /FAIL type-byte: type byte 0x11, header says LOCK is 0x10/);
  t.regex(r.stdout, /FAIL length: length field/);
  t.regex(r.stdout, /FAIL version: version 2/);
});
