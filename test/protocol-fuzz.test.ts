// protocol-fuzz.test.ts - codec-level fuzzing with a seeded PRNG.
//
// Random byte strings and mutated valid frames (bit flips, truncations,
// length-field edits, splices, inserted/deleted bytes, header byte edits) are
// pushed into both readers in random chunk sizes. The only outcomes allowed:
// frames that re-encode to exactly the bytes they came from, or a
// ProtocolError. Any other exception fails the test; the loops are bounded
// (no hang) and the reader's buffer never exceeds one frame (memory bounded).
// A failure prints the seed and case number, so it replays exactly.
import test, { type ExecutionContext } from 'ava';
import { encode, decodeBody, FrameReader, ProtocolError } from '../src/protocol/codec.js';
import { PROTO, FrameType } from '../src/protocol/constants.js';
import type { Frame } from '../src/protocol/frames.js';
import { loadVectors, rawFrame } from './helpers/proto-vectors.js';

/** mulberry32: small, fast, and the same sequence for the same seed everywhere. */
function prng(seed: number): { u32: () => number; int: (n: number) => number; pick: <T>(a: readonly T[]) => T } {
  let s = seed >>> 0;
  const u32 = (): number => {
    s = (s + 0x6d2b79f5) >>> 0;
    let x = s;
    x = Math.imul(x ^ (x >>> 15), x | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return (x ^ (x >>> 14)) >>> 0;
  };
  const int = (n: number): number => (n <= 0 ? 0 : u32() % n);
  return { u32, int, pick: (a) => a[int(a.length)] as (typeof a)[number] };
}
type Rng = ReturnType<typeof prng>;

const vectors = loadVectors();
const valid = vectors.map((v) => v.bytes);
const typeCodes = Object.values(FrameType);
const CHUNK_MAX = 300;

function randomBytes(r: Rng, n: number): Buffer {
  const b = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i++) b[i] = r.int(256);
  return b;
}

/** A random body behind a plausible header, so the decoder (not just the length check) is exercised. */
function randomFrame(r: Rng): Buffer {
  return rawFrame({ type: r.pick(typeCodes), flags: r.int(4) === 0 ? r.int(8) : 0, requestId: r.int(3) === 0 ? 0 : r.u32(), body: randomBytes(r, r.int(64)) });
}

function mutate(r: Rng, input: Buffer): Buffer {
  let b = Buffer.from(input);
  const rounds = 1 + r.int(3);
  for (let k = 0; k < rounds; k++) {
    switch (r.int(8)) {
      case 0: { // bit flips
        const n = 1 + r.int(8);
        for (let i = 0; i < n && b.length; i++) { const at = r.int(b.length); b[at] = (b[at] ?? 0) ^ (1 << r.int(8)); }
        break;
      }
      case 1: // truncation
        b = b.subarray(0, r.int(b.length + 1));
        break;
      case 2: { // length field edit
        if (b.length < 4) break;
        const cur = b.readUInt32BE(0);
        const choices = [0, 7, 8, 9, PROTO.MAX_FRAME, PROTO.MAX_FRAME + 1, 0xffffffff, cur + 1, Math.max(0, cur - 1), cur + 1 + r.int(40), Math.max(0, cur - 1 - r.int(40)), r.u32()];
        b.writeUInt32BE(r.pick(choices) >>> 0, 0);
        break;
      }
      case 3: { // splice: a prefix of this with a suffix of another valid frame
        const other = r.pick(valid);
        b = Buffer.concat([b.subarray(0, r.int(b.length + 1)), other.subarray(r.int(other.length + 1))]);
        break;
      }
      case 4: { // insert random bytes
        const at = r.int(b.length + 1);
        b = Buffer.concat([b.subarray(0, at), randomBytes(r, 1 + r.int(4)), b.subarray(at)]);
        break;
      }
      case 5: { // delete bytes
        const at = r.int(b.length + 1);
        b = Buffer.concat([b.subarray(0, at), b.subarray(at + 1 + r.int(4))]);
        break;
      }
      case 6: // header byte edits: version, type, flags
        if (b.length >= 8) {
          const field = r.int(3);
          if (field === 0) b[4] = r.pick([0, 1, 1, 2, 255]);
          else if (field === 1) b[5] = r.int(2) ? r.pick(typeCodes) : r.int(256);
          else b.writeUInt16BE(r.int(2) ? 1 << r.int(16) : r.int(8), 6);
        }
        break;
      default: // overwrite one body byte with an edge value
        if (b.length > 12) b[12 + r.int(b.length - 12)] = r.pick([0, 1, 2, 3, 4, 6, 0x7f, 0x80, 0xfc, 0xfd, 0xff]);
    }
  }
  return b;
}

interface Tally { frames: number; errors: number; clean: number }

/**
 * Pushes input in random chunks; checks that the frames returned re-encode to
 * the input's leading bytes and that anything thrown is a ProtocolError.
 */
function run(t: ExecutionContext, r: Rng, input: Buffer, side: 'server' | 'client', label: string, tally: Tally): boolean {
  const reader: FrameReader<Frame> = side === 'server' ? FrameReader.forServer() : FrameReader.forClient();
  const frames: Frame[] = [];
  let failed: unknown;
  for (let off = 0; off < input.length && failed === undefined;) {
    const n = 1 + r.int(r.int(4) === 0 ? CHUNK_MAX : 16);
    try {
      frames.push(...reader.push(input.subarray(off, off + n)));
    } catch (e) {
      failed = e;
    }
    off += n;
    if (reader.buffered > 4 + PROTO.MAX_FRAME) { t.fail(`${label}: ${reader.buffered} bytes buffered`); return false; }
  }
  if (failed !== undefined && !(failed instanceof ProtocolError)) {
    t.fail(`${label}: threw ${String(failed)}`);
    return false;
  }
  let reencoded: Buffer;
  try {
    reencoded = Buffer.concat(frames.map((f) => encode(f)));
  } catch (e) {
    t.fail(`${label}: a decoded frame does not encode: ${String(e)}`);
    return false;
  }
  if (!reencoded.equals(input.subarray(0, reencoded.length))) {
    t.fail(`${label}: decoded frames re-encode to other bytes`);
    return false;
  }
  if (failed === undefined && reencoded.length + reader.buffered !== input.length) {
    t.fail(`${label}: ${input.length} bytes in, ${reencoded.length} decoded + ${reader.buffered} buffered`);
    return false;
  }
  tally.frames += frames.length;
  if (failed) tally.errors++;
  else tally.clean++;
  return true;
}

const SEEDS = [0x5eed0001, 0x5eed0002, 0x0badf00d];

for (const seed of SEEDS) {
  test(`fuzz seed 0x${seed.toString(16)}: random bytes, random frames and mutated valid frames`, (t) => {
    const r = prng(seed);
    const tally: Tally = { frames: 0, errors: 0, clean: 0 };
    const side = (): 'server' | 'client' => (r.int(2) ? 'server' : 'client');
    for (let i = 0; i < 1000; i++) {
      if (!run(t, r, randomBytes(r, 1 + r.int(200)), side(), `seed ${seed} random bytes #${i}`, tally)) return;
    }
    for (let i = 0; i < 1000; i++) {
      const input = Buffer.concat(Array.from({ length: 1 + r.int(3) }, () => randomFrame(r)));
      if (!run(t, r, input, side(), `seed ${seed} random frame #${i}`, tally)) return;
    }
    for (let i = 0; i < 6000; i++) {
      // A run of valid frames of one direction, one of them mutated (or the whole run).
      const dir = r.int(2) ? 'to-server' : 'to-client';
      const pool = vectors.filter((v) => v.direction === dir).map((v) => v.bytes);
      const run1 = Array.from({ length: 1 + r.int(4) }, () => r.pick(pool));
      const at = r.int(run1.length);
      run1[at] = mutate(r, run1[at] as Buffer);
      const input = r.int(5) === 0 ? mutate(r, Buffer.concat(run1)) : Buffer.concat(run1);
      if (!run(t, r, input, dir === 'to-server' ? 'server' : 'client', `seed ${seed} mutation #${i}`, tally)) return;
    }
    t.log(`seed 0x${seed.toString(16)}: ${tally.frames} frames decoded, ${tally.errors} protocol errors, ${tally.clean} clean streams`);
    // The fuzz must reach both outcomes, or it is not testing anything.
    t.true(tally.frames > 1000);
    t.true(tally.errors > 1000);
    t.true(tally.clean > 100);
  });
}

test('fuzz decodeBody directly: every type with random bodies of every short length', (t) => {
  const r = prng(0xdec0de);
  let decoded = 0;
  for (const type of typeCodes) {
    for (let len = 0; len <= 48; len++) {
      for (let k = 0; k < 20; k++) {
        const body = randomBytes(r, len);
        const frame = rawFrame({ type, flags: r.int(3) === 0 ? r.int(8) : 0, requestId: r.int(2) ? 0 : r.u32(), body });
        let f: Frame;
        try {
          f = decodeBody(frame.subarray(4));
        } catch (e) {
          if (!(e instanceof ProtocolError)) return t.fail(`type 0x${type.toString(16)} len ${len}: threw ${String(e)}`);
          continue;
        }
        decoded++;
        if (!encode(f).equals(frame)) return t.fail(`type 0x${type.toString(16)} len ${len}: re-encodes to other bytes`);
      }
    }
  }
  t.log(`${decoded} random bodies decoded`);
  t.true(decoded > 100);
});
