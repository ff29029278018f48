// protocol-doc.test.ts - docs/protocol.md's worked hex examples against the
// test vectors, and the document's frame tables (as test/helpers/frame-schema.ts
// reads them) against every vector's bytes and typed value.
//
// Together with test/protocol-codec.test.ts (vectors <-> codec) this closes
// the loop document <-> vectors <-> codec: a drift in any one fails a test.
import fs from 'node:fs';
import test from 'ava';
import { FrameType, FrameFlag } from '../src/protocol/constants.js';
import { SCHEMA, SchemaError, encodeFrame, jsonOf, parseFrame, specOf } from './helpers/frame-schema.js';
import { EXAMPLES, FRAMING_EXAMPLE, REGENERATE, docBlocks, docPath, generatedBlocks, readVectors, updateDoc } from './helpers/frame-examples.js';

const doc = fs.readFileSync(docPath, 'utf8');
const vectors = readVectors();

test(`docs/protocol.md holds exactly the examples the vectors give (else: ${REGENERATE})`, (t) => {
  const have = docBlocks(doc);
  const want = generatedBlocks();
  t.deepEqual([...have.keys()].sort(), [...want.keys()].sort(), `generated blocks missing or unknown in docs/protocol.md: run ${REGENERATE}`);
  for (const [id, text] of want) t.is(have.get(id), text, `docs/protocol.md block "${id}" differs from the vectors: run ${REGENERATE} (edit the vectors, not the document)`);
  t.is(updateDoc(doc), doc, `docs/protocol.md is not what ${REGENERATE} writes`);
});

test('every frame type has one example, in the appendix, from a vector of that type', (t) => {
  t.deepEqual(EXAMPLES.map((e) => e.type).sort(), Object.keys(FrameType).sort(), 'EXAMPLES names each FrameType once');
  for (const e of EXAMPLES) t.is(vectors.find((v) => v.name === e.vector)?.frame.type, e.type, `example vector ${e.vector}`);
  t.is(vectors.find((v) => v.name === FRAMING_EXAMPLE)?.frame.type, 'LOCK');
  // what the reader sees: one caption per type in the appendix block
  const appendix = docBlocks(doc).get('frame-examples') ?? '';
  const captions = [...appendix.matchAll(/^\*\*`([A-Z_]+)`\*\* \(0x/gm)].map((m) => m[1]);
  t.deepEqual([...captions].sort(), Object.keys(FrameType).sort(), 'the appendix shows each frame type once');
});

test('the schema\'s type codes and flag bits are the ones of src/protocol/constants.ts', (t) => {
  t.deepEqual(SCHEMA.map((s) => s.name).sort(), Object.keys(FrameType).sort());
  for (const s of SCHEMA) {
    t.is(s.code, FrameType[s.name as keyof typeof FrameType], s.name);
    t.is(s.direction === 'to-server', s.code < 0x80, `${s.name} direction`);
    for (const fl of s.flags) t.is(fl.bit, FrameFlag[fl.name as keyof typeof FrameFlag], `${s.name} flag ${fl.name}`);
  }
});

/** The value at a dotted path of a typed JSON value. */
const valueAt = (o: Record<string, unknown>, at: string): unknown =>
  at.split('.').reduce<unknown>((x, k) => (x !== null && typeof x === 'object' ? (x as Record<string, unknown>)[k] : undefined), o);

/** Every leaf of a typed JSON value, by dotted path. */
function leaves(o: Record<string, unknown>, at = ''): Map<string, unknown> {
  const out = new Map<string, unknown>();
  for (const [k, v] of Object.entries(o)) {
    const p = at ? `${at}.${k}` : k;
    if (v !== null && typeof v === 'object' && !Array.isArray(v)) for (const [q, w] of leaves(v as Record<string, unknown>, p)) out.set(q, w);
    else out.set(p, v);
  }
  return out;
}

test('the schema reads every vector: all its bytes, and each field agrees with the typed value', (t) => {
  t.true(vectors.length > 0);
  for (const v of vectors) {
    const bytes = Buffer.from(v.hex, 'hex');
    let p;
    try { p = parseFrame(bytes); } catch (e) { t.fail(`${v.name}: ${(e as Error).message}`); continue; }
    const frame = v.frame as unknown as Record<string, unknown>;
    const want = leaves(frame);
    const checked = new Set(['type', 'requestId']);
    t.is(p.spec.name, v.frame.type, `${v.name}: type`);
    t.is<string, string>(p.spec.direction, v.direction, `${v.name}: direction`);
    t.deepEqual([...p.flags].sort(), [...v.flags].sort(), `${v.name}: flags`);
    t.is<unknown, unknown>(p.requestId, frame['requestId'], `${v.name}: request id`);
    for (const [k, value] of Object.entries(p.spec.flagJson?.(new Set(p.flags)) ?? {})) {
      t.is(want.get(k), value, `${v.name}: ${k} (from the flags)`);
      checked.add(k);
    }
    for (const fld of p.fields) {
      const path = fld.spec?.json;
      if (!path) continue;
      // A JSON payload (INFO, INFO_QUERY) is a whole object of the typed value: compared whole, its leaves all checked.
      t.deepEqual(jsonOf(fld), want.has(path) ? want.get(path) : valueAt(frame, path), `${v.name}: ${fld.name} (${path})`);
      checked.add(path);
      for (const k of want.keys()) if (k.startsWith(`${path}.`)) checked.add(k);
    }
    // the other way round: nothing in the typed value that no field of the bytes carries
    t.deepEqual([...want.keys()].filter((k) => !checked.has(k)), [], `${v.name}: typed fields without bytes`);
    const values = Object.fromEntries(p.fields.map((x) => [x.name, x.value]));
    t.is(encodeFrame(p.spec.name, p.flags, p.requestId, values).toString('hex'), v.hex, `${v.name}: the schema's encoder`);
  }
});

test('the schema consumes exactly the frame: a byte more, a byte less, an unknown flag or a bad field value fail', (t) => {
  const lock = vectors.find((v) => v.name === 'lock-read');
  if (!lock) return t.fail('vector lock-read missing');
  const b = Buffer.from(lock.hex, 'hex');
  const relength = (x: Buffer): Buffer => { const c = Buffer.from(x); c.writeUInt32BE(c.length - 4, 0); return c; };
  const refused = (x: Buffer, msg: RegExp): void => { t.throws(() => parseFrame(x), { instanceOf: SchemaError, message: msg }); };
  refused(relength(Buffer.concat([b, Buffer.of(0)])), /1 bytes left over/);
  refused(relength(b.subarray(0, b.length - 1)), /key: needs 9 bytes/);
  refused(Buffer.concat([b, Buffer.of(0)]), /length field 40, but 41 bytes follow/);
  const flag = Buffer.from(b); flag.writeUInt16BE(0x0080, 6);
  refused(flag, /bits not defined for LOCK/);
  const mode = Buffer.from(b); mode.writeUInt8(3, 12);
  refused(mode, /mode: value 3 is not one of 1, 2/);
  t.true(specOf('RANGE_TEST')?.flags.some((f) => f.name === 'EXEC'), 'RANGE_TEST takes the space flags');
  t.throws(() => parseFrame(Buffer.from(encodeFrame('RANGE_TEST', ['EXEC', 'FILELOCK'], 1, { mode: 2, tid: 1, inode: 0n, dev: -1n, start: 0n, length: 0n }))), { message: /EXEC and FILELOCK together/ });
});
