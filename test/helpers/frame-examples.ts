// frame-examples.ts - the worked hex examples of docs/protocol.md, rendered
// from the test vectors through the document's own field schema.
//
// Owns: which vector shows each frame type (EXAMPLES), the text of an
// example, and replacing the generated blocks between their marker comments
// in docs/protocol.md (updateDoc). scripts/protocol-doc.mjs writes the result
// (`npm run docs:protocol`); test/protocol-doc.test.ts fails when the
// document differs from it, so the examples cannot drift from the vectors -
// and the vectors are checked against the codec by test/protocol-codec.test.ts.
// Does not own: the field split (test/helpers/frame-schema.ts) or the bytes
// (test/fixtures/protocol-vectors.json).
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseFrame, type ParsedField } from './frame-schema.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
export const docPath = path.join(root, 'docs', 'protocol.md');
const vectorsPath = path.join(root, 'test', 'fixtures', 'protocol-vectors.json');

export const REGENERATE = 'npm run docs:protocol';

/**
 * The vector that shows each frame type: ordinary values, a flag set where
 * the type has flags, short strings (a 512-byte key shows nothing more).
 */
export const EXAMPLES: readonly { type: string; vector: string }[] = [
  { type: 'HELLO', vector: 'hello-auth' },
  { type: 'AUTH', vector: 'auth' },
  { type: 'LOCK', vector: 'lock-write-nowait' },
  { type: 'UNLOCK', vector: 'unlock' },
  { type: 'UNLOCK_FILE', vector: 'unlock-file' },
  { type: 'UNLOCK_ALL', vector: 'unlock-all-threads' },
  { type: 'STATUS', vector: 'status-probe-write' },
  { type: 'CANCEL', vector: 'cancel' },
  { type: 'TEST', vector: 'test-utf8' },
  { type: 'PING', vector: 'ping' },
  { type: 'RANGE_LOCK', vector: 'range-lock-write-nowait' },
  { type: 'RANGE_UNLOCK', vector: 'range-unlock-filelock' },
  { type: 'RANGE_TEST', vector: 'range-test-exec' },
  { type: 'INFO', vector: 'info-start' },
  { type: 'INFO_QUERY', vector: 'info-query-port-file-key' },
  { type: 'PROMOTE', vector: 'promote' },
  { type: 'WELCOME', vector: 'welcome-ipv4' },
  { type: 'CHALLENGE', vector: 'challenge' },
  { type: 'AUTH_OK', vector: 'auth-ok' },
  { type: 'GRANTED', vector: 'granted-token' },
  { type: 'LOCKED', vector: 'locked-ipv4' },
  { type: 'WAITING', vector: 'waiting-ipv4' },
  { type: 'RELEASED', vector: 'released-0' },
  { type: 'STATUS_RESULT', vector: 'status-result-minus-2-ipv6' },
  { type: 'TEST_RESULT', vector: 'test-result' },
  { type: 'PONG', vector: 'pong' },
  { type: 'RANGE_RESULT', vector: 'range-result-conflict' },
  { type: 'INFO_RESULT', vector: 'info-result-last' },
  { type: 'PROMOTED', vector: 'promoted' },
  { type: 'ERROR', vector: 'error-system' },
];

/** The example in "Framing", near the top of the document. */
export const FRAMING_EXAMPLE = 'lock-read';

/** One vector as the file holds it (the typed value in its JSON convention). */
export interface RawVector { name: string; direction: string; flags: string[]; hex: string; note?: string; frame: { type: string } }

export function readVectors(): RawVector[] {
  return (JSON.parse(fs.readFileSync(vectorsPath, 'utf8')) as { vectors: RawVector[] }).vectors;
}

/** Bytes per line: a longer field (a 32-byte nonce, a long string) continues on the next lines. */
const WRAP = 16;

function rows(fields: readonly ParsedField[]): string[] {
  const width = Math.min(WRAP * 2, Math.max(...fields.map((f) => f.bytes.length * 2)));
  const nameWidth = Math.max(...fields.map((f) => f.name.length));
  const out: string[] = [];
  for (const f of fields) {
    const hex = f.bytes.toString('hex');
    for (let i = 0; i === 0 || i < hex.length; i += WRAP * 2) {
      const chunk = hex.slice(i, i + WRAP * 2);
      const off = String(f.offset + i / 2).padStart(4);
      out.push(i === 0 ? `${off}  ${chunk.padEnd(width)}  ${f.name.padEnd(nameWidth)}  ${f.shown}` : `${off}  ${chunk}`);
    }
  }
  return out.map((l) => l.trimEnd());
}

const ARROW: Record<string, string> = { 'to-server': 'client → server', 'to-client': 'server → client' };

/** One example: a caption naming the type, the vector and the header, then the fields one per line. */
export function renderExample(v: RawVector): string {
  const bytes = Buffer.from(v.hex, 'hex');
  const p = parseFrame(bytes);
  const code = `0x${p.spec.code.toString(16).toUpperCase().padStart(2, '0')}`;
  const flags = p.flags.length ? `flags ${p.flags.join(' | ')}` : 'no flags';
  const note = v.note ? ` — ${v.note}` : '';
  return [
    `**\`${p.spec.name}\`** (${code}, ${ARROW[v.direction] ?? v.direction}): request id ${p.requestId}, ${flags}, ${bytes.length} bytes; vector \`${v.name}\`${note}.`,
    '',
    '```',
    ...rows(p.fields),
    '```',
  ].join('\n');
}

/** The generated blocks of docs/protocol.md, by marker id. */
export function generatedBlocks(): Map<string, string> {
  const vectors = readVectors();
  const byName = (n: string): RawVector => {
    const v = vectors.find((x) => x.name === n);
    if (!v) throw new Error(`docs/protocol.md examples: no vector ${n} in ${vectorsPath}`);
    return v;
  };
  return new Map([
    [`frame-example ${FRAMING_EXAMPLE}`, `Example — ${renderExample(byName(FRAMING_EXAMPLE))}`],
    ['frame-examples', EXAMPLES.map((e) => renderExample(byName(e.vector))).join('\n\n')],
  ]);
}

const begin = (id: string): string => `<!-- ${id}: begin (generated by ${REGENERATE} from test/fixtures/protocol-vectors.json; do not edit) -->`;
const end = (id: string): string => `<!-- ${id}: end -->`;

/** The text between each pair of markers in a document, by marker id. */
export function docBlocks(doc: string): Map<string, string> {
  const out = new Map<string, string>();
  const re = /<!-- ([a-z][a-z0-9 -]*): begin \(generated[^>]*-->\n(?:([\s\S]*?)\n)?<!-- \1: end -->/g;
  for (const m of doc.matchAll(re)) out.set(m[1] ?? '', m[2] ?? '');
  return out;
}

/** The document with every generated block replaced (markers rewritten too); throws if a block's markers are missing. */
export function updateDoc(doc: string): string {
  let out = doc;
  for (const [id, text] of generatedBlocks()) {
    const re = new RegExp(`<!-- ${id}: begin \\(generated[^>]*-->\\n(?:[\\s\\S]*?\\n)?<!-- ${id}: end -->`);
    if (!re.test(out)) throw new Error(`docs/protocol.md has no block "${begin(id)}" ... "${end(id)}"`);
    out = out.replace(re, () => `${begin(id)}\n${text}\n${end(id)}`);
  }
  return out;
}
