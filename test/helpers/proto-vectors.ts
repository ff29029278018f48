// proto-vectors.ts - test/fixtures/protocol-vectors.json as typed frames.
//
// Owns: loading the vectors and reviving the JSON convention stated in the
// file's $comment (file.inode/file.dev, token, fence are decimal strings -> bigint, key is
// hex -> Buffer, so is INFO_RESULT's chunk), plus building raw frames byte by byte for malformed cases.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Frame } from '../../src/protocol/frames.js';

/** The package root: this file runs as dist/test/helpers/proto-vectors.js. */
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
export const vectorsPath = path.join(root, 'test', 'fixtures', 'protocol-vectors.json');

export interface Vector {
  name: string;
  direction: 'to-server' | 'to-client';
  /** header flag names (jdls_proto.h JDLS_FF_*) */
  flags: string[];
  frame: Frame;
  bytes: Buffer;
  hex: string;
}

interface RawVector {
  name: string;
  direction: 'to-server' | 'to-client';
  flags: string[];
  frame: Record<string, unknown>;
  hex: string;
}

function revive(raw: Record<string, unknown>): Frame {
  const out: Record<string, unknown> = { ...raw };
  const file = raw['file'] as { inode: string; dev: string } | undefined;
  if (file) out['file'] = { inode: BigInt(file.inode), dev: BigInt(file.dev) };
  for (const k of ['key', 'nonce', 'mac', 'chunk']) if (typeof raw[k] === 'string') out[k] = Buffer.from(raw[k], 'hex');
  for (const k of ['start', 'length', 'token', 'fence']) if (typeof raw[k] === 'string') out[k] = BigInt(raw[k]);
  const c = raw['conflict'] as { holder: unknown; start: string; length: string } | undefined;
  if (c) out['conflict'] = { holder: c.holder, start: BigInt(c.start), length: BigInt(c.length) };
  return out as unknown as Frame; // shape checked by the round-trip tests against the codec
}

export function loadVectors(): Vector[] {
  const doc = JSON.parse(fs.readFileSync(vectorsPath, 'utf8')) as { vectors: RawVector[] };
  return doc.vectors.map((v) => ({
    name: v.name, direction: v.direction, flags: v.flags, hex: v.hex,
    frame: revive(v.frame), bytes: Buffer.from(v.hex, 'hex'),
  }));
}

/** A frame from raw parts; length defaults to the true length of the rest. */
export function rawFrame(p: { version?: number; type: number; flags?: number; requestId?: number; body?: Buffer; length?: number }): Buffer {
  const body = p.body ?? Buffer.alloc(0);
  const b = Buffer.alloc(12 + body.length);
  b.writeUInt32BE(p.length ?? 8 + body.length, 0);
  b.writeUInt8(p.version ?? 1, 4);
  b.writeUInt8(p.type, 5);
  b.writeUInt16BE(p.flags ?? 0, 6);
  b.writeUInt32BE(p.requestId ?? 0, 8);
  body.copy(b, 12);
  return b;
}

/** The shared-secret handshake example of the vectors file (docs/protocol.md, "Authentication"). */
export interface AuthExample {
  key: Buffer;
  /** the name of the HELLO vector the MACs cover */
  hello: string;
  serverNonce: Buffer;
  clientNonce: Buffer;
  clientMac: Buffer;
  serverMac: Buffer;
}

export function loadAuthExample(): AuthExample {
  const doc = JSON.parse(fs.readFileSync(vectorsPath, 'utf8')) as { authExample: Record<string, string> };
  const a = doc.authExample;
  const hex = (k: string): Buffer => Buffer.from(a[k] ?? '', 'hex');
  return { key: hex('key'), hello: a['hello'] ?? '', serverNonce: hex('serverNonce'), clientNonce: hex('clientNonce'), clientMac: hex('clientMac'), serverMac: hex('serverMac') };
}
