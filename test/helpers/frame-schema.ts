// frame-schema.ts - a second, independent reading of docs/protocol.md's frame
// tables: per frame type its code, its header flags and its body fields, and
// a parser and an encoder driven by nothing else.
//
// Owns: the field schema, parseFrame() (bytes -> named fields, each with its
// offset, bytes and value) and encodeFrame() (named values -> bytes).
// Does not own: the typed frames of src/protocol/frames.ts, and on purpose
// it imports nothing from src/protocol/: it is written from the document, so
// that test/protocol-doc.test.ts can hold the document's tables, the vectors
// file and the codec against each other. The worked examples of the
// document's appendix (test/helpers/frame-examples.ts) are rendered from it.

// ---- the schema ------------------------------------------------------------

/** The wire encodings of docs/protocol.md "Framing". */
export type Kind =
  | 'u8' | 'u16' | 'u32' | 'u64' | 'i8' | 'i64'
  | 'magic' // 4 bytes, HELLO's "JDLS"
  | 'bytes32' // the fixed 32-byte nonce and mac of the handshake
  | 'key' // u16 length + 0..512 raw bytes
  | 'str16' // u16 length + 0..1024 bytes of UTF-8
  | 'addr' // u8 family (4/6) + 4 or 16 bytes
  | 'json32' // u32 length + that many bytes of UTF-8 JSON (INFO, INFO_QUERY; 0 bytes = none)
  | 'chunk32'; // u32 length + that many bytes: a piece of UTF-8 JSON text, cut anywhere (INFO_RESULT)

export interface FieldSpec {
  /** the name in the document's table */
  name: string;
  kind: Kind;
  /** the path of the same value in a vector's typed JSON value ("file.inode", "holder.mode") */
  json?: string;
  /** names of a number's values ("1" -> READ); also the JSON value of each, when it is a name */
  names?: Readonly<Record<number, { doc: string; json?: string | number }>>;
  /** what 0 means, where the document gives it a meaning of its own (a range length 0 = to infinity) */
  zero?: string;
}

/**
 * Fields present only when something says so: an earlier field's value
 * (STATUS_RESULT's holder, RANGE_RESULT's conflict: `after` + `when`), a
 * header flag (LOCK's fence: `flag`), or the bytes left (the token of
 * GRANTED and STATUS_RESULT: `rest`, present iff exactly that many remain).
 */
export type OptionalPart = {
  because: string;
  fields: readonly FieldSpec[];
} & (
  | { after: string; when: (value: number) => boolean }
  | { flag: string }
  | { rest: number }
);

export type BodyItem = FieldSpec | OptionalPart;

export interface FlagSpec { name: string; bit: number }

export interface TypeSpec {
  name: string;
  code: number;
  direction: 'to-server' | 'to-client';
  flags: readonly FlagSpec[];
  /** flag pairs the document forbids together */
  exclusive?: readonly [string, string][];
  body: readonly BodyItem[];
  /** the keys of the typed JSON value that the header flags decide, and their values */
  flagJson?: (set: ReadonlySet<string>) => Record<string, unknown>;
}

const MODE = { 1: { doc: 'READ', json: 'read' }, 2: { doc: 'WRITE', json: 'write' } } as const;

const f = (name: string, kind: Kind, json?: string, names?: FieldSpec['names'], zero?: string): FieldSpec =>
  ({ name, kind, ...(json !== undefined ? { json } : {}), ...(names ? { names } : {}), ...(zero ? { zero } : {}) });

const TO_INFINITY = 'to infinity';

/** tid, inode, dev: the file fields of every record and range request */
const fileFields = (): FieldSpec[] => [f('tid', 'u32', 'tid'), f('inode', 'u64', 'file.inode'), f('dev', 'i64', 'file.dev')];

/** "the holder as in LOCKED": mode, port, pid, owner_pid, owner_tid, addr */
const holder = (at: string): FieldSpec[] => [
  f('holder mode', 'u8', `${at}.mode`, MODE), f('holder port', 'u32', `${at}.port`), f('holder pid', 'u32', `${at}.pid`),
  f('holder owner_pid', 'u32', `${at}.ownerPid`), f('holder owner_tid', 'u32', `${at}.ownerTid`), f('holder addr', 'addr', `${at}.addr`),
];

const rangeFields = (withMode: boolean): FieldSpec[] => [
  ...(withMode ? [f('mode', 'u8', 'mode', MODE)] : []), ...fileFields(), f('start', 'u64', 'start'), f('length', 'u64', 'length', undefined, TO_INFINITY),
];

/** the space flags of RANGE_LOCK/RANGE_UNLOCK/RANGE_TEST: EXEC 0x0002, FILELOCK 0x0004, at most one */
const SPACE: FlagSpec[] = [{ name: 'EXEC', bit: 0x0002 }, { name: 'FILELOCK', bit: 0x0004 }];
const space = (s: ReadonlySet<string>): string => (s.has('EXEC') ? 'exec' : s.has('FILELOCK') ? 'file' : 'range');

const ERROR_CODES = ['PROTOCOL', 'VERSION', 'LIMIT', 'TABLE_FULL', 'KEY_TOO_LONG', 'CANCELLED', 'BAD_ARGUMENT', 'SYSTEM', 'SHUTDOWN', 'NOT_SUPPORTED', 'AUTH', 'DEADLOCK', 'NOT_LEADER'];

/** "Fencing tokens": on a connection that negotiated TOKENS, GRANTED and STATUS_RESULT end with a u64 token (0 = none). */
const TOKEN: OptionalPart = { rest: 8, because: 'TOKENS negotiated: the token follows', fields: [f('token', 'u64', 'token', undefined, 'none')] };

const STATUS_CODES: FieldSpec['names'] = {
  3: { doc: 'this owner holds FILELOCK' }, 2: { doc: 'this owner holds WRITE' }, 1: { doc: 'this owner holds READ' }, 0: { doc: 'free' },
  [-1]: { doc: 'another owner holds READ' }, [-2]: { doc: 'another owner holds WRITE' }, [-3]: { doc: 'another owner holds FILELOCK' },
};

/** Every frame type of docs/protocol.md, in the document's order. */
export const SCHEMA: readonly TypeSpec[] = [
  {
    name: 'HELLO', code: 0x01, direction: 'to-server', flags: [{ name: 'AUTH', bit: 0x0001 }, { name: 'TOKENS', bit: 0x0002 }, { name: 'INFO', bit: 0x0004 }, { name: 'PAIR', bit: 0x0008 }],
    body: [f('magic', 'magic'), f('min_version', 'u8', 'minVersion'), f('max_version', 'u8', 'maxVersion'), f('port', 'u32', 'port'),
      f('pid', 'u32', 'pid'), f('keepalive_ms', 'u32', 'keepaliveMs'), f('host', 'str16', 'host'), f('program', 'str16', 'program'),
      f('options', 'str16', 'options')],
    flagJson: (s) => ({ auth: s.has('AUTH') ? true : undefined, tokens: s.has('TOKENS') ? true : undefined, info: s.has('INFO') ? true : undefined, pair: s.has('PAIR') ? true : undefined }),
  },
  { name: 'AUTH', code: 0x02, direction: 'to-server', flags: [], body: [f('nonce', 'bytes32', 'nonce'), f('mac', 'bytes32', 'mac')] },
  {
    name: 'LOCK', code: 0x10, direction: 'to-server',
    flags: [{ name: 'NOWAIT', bit: 0x0001 }, { name: 'NO_INTERIM', bit: 0x0002 }, { name: 'OSLOCKS', bit: 0x0004 },
      { name: 'BREAK_DEADLOCK', bit: 0x0008 }, { name: 'FENCE', bit: 0x0010 }, { name: 'OFFSET', bit: 0x0020 }, { name: 'MIRROR', bit: 0x0040 }],
    body: [f('mode', 'u8', 'mode', MODE), ...fileFields(), f('key', 'key', 'key'),
      { flag: 'FENCE', because: 'flag FENCE: the primary\'s token follows', fields: [f('fence', 'u64', 'fence')] }],
    flagJson: (s) => ({ nowait: s.has('NOWAIT'), noInterim: s.has('NO_INTERIM'), osLocks: s.has('OSLOCKS'), breakDeadlock: s.has('BREAK_DEADLOCK') ? true : undefined, offset: s.has('OFFSET') ? true : undefined, mirror: s.has('MIRROR') ? true : undefined }),
  },
  {
    name: 'UNLOCK', code: 0x11, direction: 'to-server', flags: [{ name: 'OFFSET', bit: 0x0020 }], body: [...fileFields(), f('key', 'key', 'key')],
    flagJson: (s) => ({ offset: s.has('OFFSET') ? true : undefined }),
  },
  { name: 'UNLOCK_FILE', code: 0x12, direction: 'to-server', flags: [], body: fileFields() },
  {
    name: 'UNLOCK_ALL', code: 0x13, direction: 'to-server', flags: [{ name: 'ALL_THREADS', bit: 0x0001 }],
    body: [f('tid', 'u32', 'tid')], flagJson: (s) => ({ allThreads: s.has('ALL_THREADS') }),
  },
  {
    name: 'STATUS', code: 0x14, direction: 'to-server', flags: [{ name: 'PROBE_READ', bit: 0x0002 }, { name: 'PROBE_WRITE', bit: 0x0004 }, { name: 'STATUS_OSLOCKS', bit: 0x0008 }, { name: 'OFFSET', bit: 0x0020 }],
    exclusive: [['PROBE_READ', 'PROBE_WRITE']], body: [...fileFields(), f('key', 'key', 'key')],
    flagJson: (s) => ({ probe: s.has('PROBE_READ') ? 'read' : s.has('PROBE_WRITE') ? 'write' : undefined, osLocks: s.has('STATUS_OSLOCKS') ? true : undefined, offset: s.has('OFFSET') ? true : undefined }),
  },
  { name: 'CANCEL', code: 0x15, direction: 'to-server', flags: [], body: [f('target', 'u32', 'target')] },
  { name: 'TEST', code: 0x16, direction: 'to-server', flags: [], body: [f('text', 'str16', 'text')] },
  { name: 'PING', code: 0x17, direction: 'to-server', flags: [], body: [] },
  {
    name: 'RANGE_LOCK', code: 0x18, direction: 'to-server', flags: [{ name: 'NOWAIT', bit: 0x0001 }, ...SPACE, { name: 'MIRROR', bit: 0x0040 }],
    exclusive: [['EXEC', 'FILELOCK']], body: rangeFields(true), flagJson: (s) => ({ nowait: s.has('NOWAIT'), space: space(s), mirror: s.has('MIRROR') ? true : undefined }),
  },
  {
    name: 'RANGE_UNLOCK', code: 0x19, direction: 'to-server', flags: SPACE,
    exclusive: [['EXEC', 'FILELOCK']], body: rangeFields(false), flagJson: (s) => ({ space: space(s) }),
  },
  {
    // the typed value names a space only when a flag is set
    name: 'RANGE_TEST', code: 0x1a, direction: 'to-server', flags: SPACE,
    exclusive: [['EXEC', 'FILELOCK']], body: rangeFields(true), flagJson: (s) => ({ space: s.size ? space(s) : undefined }),
  },
  { name: 'INFO', code: 0x1b, direction: 'to-server', flags: [], body: [f('info', 'json32', 'info')] },
  { name: 'INFO_QUERY', code: 0x1c, direction: 'to-server', flags: [], body: [f('filter', 'json32', 'filter')] },
  { name: 'PROMOTE', code: 0x1d, direction: 'to-server', flags: [], body: [f('wait_ms', 'u32', 'waitMs')] },
  {
    name: 'WELCOME', code: 0x81, direction: 'to-client', flags: [{ name: 'TOKENS', bit: 0x0002 }, { name: 'INFO', bit: 0x0004 }, { name: 'WITNESS', bit: 0x0008 }],
    flagJson: (s) => ({ tokens: s.has('TOKENS') ? true : undefined, info: s.has('INFO') ? true : undefined }),
    body: [f('version', 'u8', 'version'), f('mechanism', 'u8', 'mechanism', { 1: { doc: 'shared-memory table', json: 'shm' }, 2: { doc: 'OS file locks', json: 'os' } }),
      f('server_pid', 'u32', 'serverPid'), f('session', 'u32', 'session'), f('interim_ms', 'u32', 'interimMs'),
      f('keepalive_ms', 'u32', 'keepaliveMs'), f('client_addr', 'addr', 'clientAddr'), f('server', 'str16', 'server'),
      { flag: 'WITNESS', because: 'flag WITNESS: the server\'s role and term follow', fields: [
        f('role', 'u8', 'witness.role', { 1: { doc: 'LEADER', json: 'leader' }, 2: { doc: 'FOLLOWER', json: 'follower' } }), f('term', 'u32', 'witness.term')] }],
  },
  {
    name: 'CHALLENGE', code: 0x82, direction: 'to-client', flags: [],
    body: [f('method', 'u8', 'method', { 1: { doc: 'HMAC-SHA256', json: 1 } }), f('nonce', 'bytes32', 'nonce')],
  },
  { name: 'AUTH_OK', code: 0x83, direction: 'to-client', flags: [], body: [f('mac', 'bytes32', 'mac')] },
  { name: 'GRANTED', code: 0x90, direction: 'to-client', flags: [], body: [TOKEN] },
  { name: 'LOCKED', code: 0x91, direction: 'to-client', flags: [], body: holder('holder') },
  { name: 'WAITING', code: 0x92, direction: 'to-client', flags: [], body: holder('holder') },
  { name: 'RELEASED', code: 0x93, direction: 'to-client', flags: [], body: [f('count', 'u32', 'count')] },
  {
    name: 'STATUS_RESULT', code: 0x94, direction: 'to-client', flags: [],
    body: [f('code', 'i8', 'code', STATUS_CODES),
      { after: 'code', when: (c) => c < 0, because: 'code < 0: the holder follows', fields: holder('holder') }, TOKEN],
  },
  { name: 'TEST_RESULT', code: 0x95, direction: 'to-client', flags: [], body: [f('text', 'str16', 'text')] },
  { name: 'PONG', code: 0x96, direction: 'to-client', flags: [], body: [] },
  {
    name: 'RANGE_RESULT', code: 0x97, direction: 'to-client', flags: [],
    body: [f('found', 'u8', undefined, { 0: { doc: 'no conflicting lock' }, 1: { doc: 'a conflicting lock follows' } }),
      { after: 'found', when: (v) => v === 1, because: 'found = 1: the conflicting lock follows',
        fields: [...holder('conflict.holder'), f('start', 'u64', 'conflict.start'), f('length', 'u64', 'conflict.length', undefined, TO_INFINITY)] }],
  },
  {
    name: 'INFO_RESULT', code: 0x98, direction: 'to-client', flags: [{ name: 'MORE', bit: 0x0001 }],
    body: [f('chunk', 'chunk32', 'chunk')], flagJson: (s) => ({ more: s.has('MORE') }),
  },
  { name: 'PROMOTED', code: 0x99, direction: 'to-client', flags: [], body: [f('term', 'u32', 'term')] },
  {
    name: 'ERROR', code: 0xe0, direction: 'to-client', flags: [],
    body: [f('code', 'u16', 'code', Object.fromEntries(ERROR_CODES.map((n, i) => [i + 1, { doc: n, json: n }]))), f('text', 'str16', 'text')],
  },
];

export const specOf = (name: string): TypeSpec | undefined => SCHEMA.find((s) => s.name === name);
const specByCode = (code: number): TypeSpec | undefined => SCHEMA.find((s) => s.code === code);

/** docs/protocol.md "Limits" */
const MAX_KEY = 512;
const MAX_STR = 1024;
const MAX_FRAME = 65536;

// ---- parsing ---------------------------------------------------------------

export type Value = number | bigint | string | Buffer;

/** One field as it lies in the frame: a str16 or key is two of these (its length, then its bytes). */
export interface ParsedField {
  name: string;
  kind: Kind | 'length';
  offset: number;
  bytes: Buffer;
  value: Value;
  /** the value as the document reads it ("1 READ", "CUST*1001") */
  shown: string;
  spec?: FieldSpec;
}

export interface ParsedFrame {
  spec: TypeSpec;
  flags: string[];
  requestId: number;
  fields: ParsedField[];
}

export class SchemaError extends Error {
  constructor(message: string) { super(message); this.name = 'SchemaError'; }
}

const hex = (b: Buffer): string => b.toString('hex');
const withHex = (n: number | bigint, digits: number): string => `${n} (0x${n.toString(16).padStart(digits, '0')})`;

/** A number as a client writer wants it: decimal, and hex too where the bits matter more than the size. */
function showNumber(n: number | bigint, bytes: number): string {
  const big = BigInt(n);
  return big >= 2n ** 31n ? withHex(n, bytes * 2) : String(n);
}

/** Printable ASCII keys read as text; anything else as its bytes. */
function showKey(b: Buffer): string {
  if (b.length === 0) return '(empty)';
  return [...b].every((c) => c >= 0x20 && c <= 0x7e) ? JSON.stringify(b.toString('latin1')) : `bytes ${hex(b)}`;
}

/** RFC 5952 text of an IPv6 address: the longest run (first of equals) of two or more zero groups is "::"; ::ffff:a.b.c.d for IPv4-mapped. */
export function ipv6Text(b: Buffer): string {
  if (b.subarray(0, 10).every((x) => x === 0) && b.readUInt16BE(10) === 0xffff) return `::ffff:${[...b.subarray(12)].join('.')}`;
  const g = Array.from({ length: 8 }, (_, i) => b.readUInt16BE(2 * i));
  let best = -1;
  let bestLen = 1; // a single zero group stays "0"
  for (let i = 0; i < 8;) {
    if (g[i] !== 0) { i++; continue; }
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen) { best = i; bestLen = j - i; }
    i = j;
  }
  const part = (a: number[]): string => a.map((x) => x.toString(16)).join(':');
  return best < 0 ? part(g) : `${part(g.slice(0, best))}::${part(g.slice(best + bestLen))}`;
}

class Reader {
  off = 0;
  readonly fields: ParsedField[] = [];
  constructor(readonly b: Buffer) {}

  take(n: number, what: string): Buffer {
    if (this.off + n > this.b.length) throw new SchemaError(`${what}: needs ${n} bytes at offset ${this.off}, the frame has ${this.b.length - this.off} left`);
    const out = this.b.subarray(this.off, this.off + n);
    this.off += n;
    return out;
  }

  push(name: string, kind: ParsedField['kind'], offset: number, value: Value, shown: string, spec?: FieldSpec): ParsedField {
    const p: ParsedField = { name, kind, offset, bytes: this.b.subarray(offset, this.off), value, shown, ...(spec ? { spec } : {}) };
    this.fields.push(p);
    return p;
  }

  field(s: FieldSpec): ParsedField {
    const at = this.off;
    const named = (n: number, plain: string): string => {
      if (!s.names) return plain;
      const x = s.names[n];
      if (!x) throw new SchemaError(`${s.name}: value ${n} is not one of ${Object.keys(s.names).join(', ')}`);
      // a one-word name reads as the value's name (2 WRITE), a phrase as an explanation
      return /\s/.test(x.doc) ? `${n} (${x.doc})` : `${n} ${x.doc}`;
    };
    switch (s.kind) {
      case 'u8': { const v = this.take(1, s.name).readUInt8(0); return this.push(s.name, s.kind, at, v, named(v, String(v)), s); }
      case 'i8': { const v = this.take(1, s.name).readInt8(0); return this.push(s.name, s.kind, at, v, named(v, String(v)), s); }
      case 'u16': { const v = this.take(2, s.name).readUInt16BE(0); return this.push(s.name, s.kind, at, v, named(v, String(v)), s); }
      case 'u32': { const v = this.take(4, s.name).readUInt32BE(0); return this.push(s.name, s.kind, at, v, named(v, showNumber(v, 4)), s); }
      case 'u64': { const v = this.take(8, s.name).readBigUInt64BE(0); return this.push(s.name, s.kind, at, v, v === 0n && s.zero ? `0 (${s.zero})` : showNumber(v, 8), s); }
      case 'i64': { const v = this.take(8, s.name).readBigInt64BE(0); return this.push(s.name, s.kind, at, v, String(v), s); }
      case 'magic': {
        const v = this.take(4, s.name).toString('latin1');
        if (v !== 'JDLS') throw new SchemaError(`${s.name}: ${JSON.stringify(v)} is not "JDLS"`);
        return this.push(s.name, s.kind, at, v, JSON.stringify(v), s);
      }
      case 'bytes32': { const v = Buffer.from(this.take(32, s.name)); return this.push(s.name, s.kind, at, v, '32 bytes', s); }
      case 'json32':
      case 'chunk32': {
        const n = this.take(4, `${s.name} length`).readUInt32BE(0);
        this.push(`${s.name} length`, 'length', at, n, n === 0 && s.kind === 'json32' ? '0 (none)' : String(n));
        const from = this.off;
        const raw = Buffer.from(this.take(n, s.name));
        // A chunk may end inside a character: shown as far as it decodes, never refused.
        if (s.kind === 'chunk32') return this.push(s.name, s.kind, from, raw, JSON.stringify(raw.toString('utf8')), s);
        let text: string;
        try { text = new TextDecoder('utf-8', { fatal: true }).decode(raw); } catch { throw new SchemaError(`${s.name}: not valid UTF-8`); }
        if (n > 0) { try { JSON.parse(text); } catch { throw new SchemaError(`${s.name}: not JSON`); } }
        return this.push(s.name, s.kind, from, text, text, s);
      }
      case 'key':
      case 'str16': {
        const n = this.take(2, `${s.name} length`).readUInt16BE(0);
        const max = s.kind === 'key' ? MAX_KEY : MAX_STR;
        if (n > max) throw new SchemaError(`${s.name}: ${n} bytes, more than ${max}`);
        this.push(`${s.name} length`, 'length', at, n, String(n));
        const from = this.off;
        const raw = Buffer.from(this.take(n, s.name));
        if (s.kind === 'key') return this.push(s.name, s.kind, from, raw, showKey(raw), s);
        let text: string;
        try { text = new TextDecoder('utf-8', { fatal: true }).decode(raw); } catch { throw new SchemaError(`${s.name}: not valid UTF-8`); }
        return this.push(s.name, s.kind, from, text, JSON.stringify(text), s);
      }
      case 'addr': {
        const fam = this.take(1, `${s.name} family`).readUInt8(0);
        if (fam !== 4 && fam !== 6) throw new SchemaError(`${s.name}: family ${fam} is not 4 or 6`);
        this.push(`${s.name} family`, 'length', at, fam, fam === 4 ? '4 (IPv4, 4 bytes follow)' : '6 (IPv6, 16 bytes follow)');
        const from = this.off;
        const a = this.take(fam === 4 ? 4 : 16, s.name);
        const text = fam === 4 ? [...a].join('.') : ipv6Text(a);
        return this.push(s.name, s.kind, from, text, text, s);
      }
    }
  }
}

/** Bytes of one whole frame (length field included) -> its named fields; throws SchemaError unless it consumes exactly all bytes. */
export function parseFrame(bytes: Buffer): ParsedFrame {
  const r = new Reader(bytes);
  const length = r.take(4, 'length').readUInt32BE(0);
  if (length !== bytes.length - 4) throw new SchemaError(`length field ${length}, but ${bytes.length - 4} bytes follow it`);
  if (length < 8 || length > MAX_FRAME) throw new SchemaError(`length ${length} outside 8..${MAX_FRAME}`);
  r.push('length', 'u32', 0, length, `${length} (bytes after this field)`);
  const version = r.take(1, 'version').readUInt8(0);
  if (version !== 1) throw new SchemaError(`version ${version} is not 1`);
  r.push('version', 'u8', 4, version, String(version));
  const code = r.take(1, 'type').readUInt8(0);
  const spec = specByCode(code);
  if (!spec) throw new SchemaError(`unknown frame type 0x${code.toString(16)}`);
  r.push('type', 'u8', 5, code, `0x${code.toString(16).toUpperCase().padStart(2, '0')} ${spec.name}`);
  const bits = r.take(2, 'flags').readUInt16BE(0);
  const flags = spec.flags.filter((x) => (bits & x.bit) !== 0).map((x) => x.name);
  const known = spec.flags.reduce((m, x) => m | x.bit, 0);
  if (bits & ~known) throw new SchemaError(`flags 0x${bits.toString(16).padStart(4, '0')}: bits not defined for ${spec.name}`);
  for (const [a, b] of spec.exclusive ?? []) if (flags.includes(a) && flags.includes(b)) throw new SchemaError(`${spec.name}: flags ${a} and ${b} together`);
  r.push('flags', 'u16', 6, bits, `0x${bits.toString(16).padStart(4, '0')} ${flags.length ? flags.join(' | ') : '(none)'}`);
  const requestId = r.take(4, 'request_id').readUInt32BE(0);
  if ((spec.name === 'HELLO' || spec.name === 'WELCOME' || spec.name === 'INFO') && requestId !== 0) throw new SchemaError(`${spec.name}: request id ${requestId}, must be 0`);
  r.push('request_id', 'u32', 8, requestId, showNumber(requestId, 4));

  const walk = (items: readonly BodyItem[]): void => {
    for (const it of items) {
      if ('kind' in it) { r.field(it); continue; }
      if ('flag' in it) { if (flags.includes(it.flag)) walk(it.fields); continue; }
      // a trailing part: there or not, by the bytes left (any other count is "left over" below)
      if ('rest' in it) { if (bytes.length - r.off === it.rest) walk(it.fields); continue; }
      const dep = [...r.fields].reverse().find((p) => p.name === it.after);
      if (!dep || typeof dep.value !== 'number') throw new SchemaError(`${spec.name}: optional part after unknown field ${it.after}`);
      if (it.when(dep.value)) walk(it.fields);
    }
  };
  walk(spec.body);
  if (r.off !== bytes.length) throw new SchemaError(`${spec.name}: ${bytes.length - r.off} bytes left over after the last field`);
  return { spec, flags, requestId, fields: r.fields };
}

// ---- encoding --------------------------------------------------------------

/** Field name -> value for encodeFrame: numbers, bigints (u64/i64), strings (str16, addr text), Buffers (key, nonce, mac). */
export type FieldValues = Record<string, Value>;

function ipv4Bytes(t: string): Buffer {
  const p = t.split('.').map(Number);
  if (p.length !== 4 || p.some((x) => !Number.isInteger(x) || x < 0 || x > 255)) throw new SchemaError(`not an IPv4 address: ${t}`);
  return Buffer.from(p);
}

function ipv6Bytes(t: string): Buffer {
  let s = t;
  if (s.includes('.')) { // a trailing dotted IPv4 part (::ffff:127.0.0.1) is two groups
    const at = s.lastIndexOf(':') + 1;
    const v4 = ipv4Bytes(s.slice(at));
    s = `${s.slice(0, at)}${v4.readUInt16BE(0).toString(16)}:${v4.readUInt16BE(2).toString(16)}`;
  }
  const halves = s.split('::');
  if (halves.length > 2) throw new SchemaError(`not an IPv6 address: ${t}`);
  const groups = (h: string | undefined): number[] => (h ? h.split(':').map((x) => (/^[0-9a-f]{1,4}$/i.test(x) ? parseInt(x, 16) : NaN)) : []);
  const head = groups(halves[0]);
  const tail = groups(halves[1]);
  const all = halves.length === 2 ? [...head, ...Array<number>(Math.max(0, 8 - head.length - tail.length)).fill(0), ...tail] : head;
  if (all.length !== 8 || all.some((x) => Number.isNaN(x))) throw new SchemaError(`not an IPv6 address: ${t}`);
  const b = Buffer.alloc(16);
  all.forEach((x, i) => b.writeUInt16BE(x, 2 * i));
  return b;
}

/** Named values -> the whole frame, length field included; the inverse of parseFrame. */
export function encodeFrame(type: string, flags: readonly string[], requestId: number, values: FieldValues): Buffer {
  const spec = specOf(type);
  if (!spec) throw new SchemaError(`unknown frame type ${type}`);
  const parts: Buffer[] = [];
  const num = (name: string): number => { const v = values[name]; if (typeof v !== 'number') throw new SchemaError(`${type}: ${name} must be a number`); return v; };
  const put = (n: number, write: (b: Buffer) => void): void => { const b = Buffer.alloc(n); write(b); parts.push(b); };
  const field = (s: FieldSpec): void => {
    const v = values[s.name];
    switch (s.kind) {
      case 'u8': put(1, (b) => b.writeUInt8(num(s.name))); return;
      case 'i8': put(1, (b) => b.writeInt8(num(s.name))); return;
      case 'u16': put(2, (b) => b.writeUInt16BE(num(s.name))); return;
      case 'u32': put(4, (b) => b.writeUInt32BE(num(s.name))); return;
      case 'u64': put(8, (b) => b.writeBigUInt64BE(BigInt(v as bigint))); return;
      case 'i64': put(8, (b) => b.writeBigInt64BE(BigInt(v as bigint))); return;
      case 'magic': parts.push(Buffer.from('JDLS', 'latin1')); return;
      case 'bytes32': if (!Buffer.isBuffer(v) || v.length !== 32) throw new SchemaError(`${s.name}: 32 bytes`); parts.push(v); return;
      case 'key':
      case 'str16': {
        const raw = Buffer.isBuffer(v) ? v : Buffer.from(String(v), 'utf8');
        put(2, (b) => b.writeUInt16BE(raw.length));
        parts.push(raw);
        return;
      }
      case 'json32':
      case 'chunk32': {
        const raw = Buffer.isBuffer(v) ? v : Buffer.from(String(v), 'utf8');
        put(4, (b) => b.writeUInt32BE(raw.length));
        parts.push(raw);
        return;
      }
      case 'addr': {
        const t = String(v);
        const b = t.includes(':') ? ipv6Bytes(t) : ipv4Bytes(t);
        put(1, (x) => x.writeUInt8(b.length === 4 ? 4 : 6));
        parts.push(b);
      }
    }
  };
  const walk = (items: readonly BodyItem[]): void => {
    for (const it of items) {
      if ('kind' in it) field(it);
      else if ('flag' in it) { if (flags.includes(it.flag)) walk(it.fields); }
      else if ('rest' in it) { if (it.fields.every((x) => values[x.name] !== undefined)) walk(it.fields); }
      else if (it.when(num(it.after))) walk(it.fields);
    }
  };
  walk(spec.body);
  const body = Buffer.concat(parts);
  const head = Buffer.alloc(12);
  head.writeUInt32BE(8 + body.length, 0);
  head.writeUInt8(1, 4);
  head.writeUInt8(spec.code, 5);
  let bits = 0;
  for (const name of flags) {
    const fl = spec.flags.find((x) => x.name === name);
    if (!fl) throw new SchemaError(`${type} has no flag ${name}`);
    bits |= fl.bit;
  }
  head.writeUInt16BE(bits, 6);
  head.writeUInt32BE(requestId, 8);
  return Buffer.concat([head, body]);
}

// ---- the typed value -------------------------------------------------------

/** A field's value as the vectors file's JSON writes it (u64/i64 decimal strings, bytes lower-case hex, names for enums). */
export function jsonOf(p: ParsedField): unknown {
  const s = p.spec;
  // JSON payloads are the typed value's object itself (0 bytes: an empty filter)
  if (p.kind === 'json32' && typeof p.value === 'string') return p.value === '' ? {} : JSON.parse(p.value) as unknown;
  if (s?.names && typeof p.value === 'number') {
    const j = s.names[p.value]?.json;
    return j ?? p.value;
  }
  if (typeof p.value === 'bigint') return p.value.toString();
  if (Buffer.isBuffer(p.value)) return hex(p.value);
  return p.value;
}
