// native-constants.test.ts - the TypeScript mirror `C` (src/native.ts) and the
// error table must agree with what the addon compiled from jdls_table.h.
import test from 'ava';
import { native, C, errorFromRc } from '../src/native.js';
import { JdlsError } from '../src/errors.js';

const rc = native.constants.RC;

test('every constant of the mirror equals its counterpart in the addon', (t) => {
  const k = native.constants as unknown as Record<string, unknown>;
  let compared = 0;
  for (const [name, value] of Object.entries(C)) {
    if (name.startsWith('RC_')) {
      const info = rc[name.slice(3)];
      t.truthy(info, `RC ${name.slice(3)} is known to the addon`);
      t.is(info?.value, value, name);
    } else {
      t.true(name in k, `${name} is exported by the addon`);
      t.is(k[name], value, name);
    }
    compared++;
  }
  t.is(compared, Object.keys(C).length);
});

test('result codes: names and values as in jdls_table.h', (t) => {
  const expected: Record<string, number> = {
    OK: 0, CONFLICT: 1, QUEUED: 2, TIMEOUT: 3, NOT_HELD: 4, DEADLOCK: 5,
    TABLE_FULL: -37, KEY_TOO_LONG: -12, BAD_ARGUMENT: -13, NO_TABLE: -14, BAD_TABLE: -15,
    SYSTEM: -16, NO_PROCESS_SLOT: -17, EXISTS: -18, NOT_RECOVERABLE: -19, RETIRED: -20,
    UNTRUSTED: -21,
  };
  t.deepEqual(Object.fromEntries(Object.entries(rc).map(([n, i]) => [n, i.value])), expected);
  for (const info of Object.values(rc)) t.true(info.text.length > 0);
  t.regex(rc['TABLE_FULL']?.text ?? '', /Error 37/);
});

test('layout sizes and fixed numbers', (t) => {
  const k = native.constants;
  t.is(k.ENTRY_SIZE, 624);
  t.is(k.GROUP_HEADER_SIZE, 64);
  t.is(k.HEADER_SIZE, 17152);
  t.is(k.PROC_SLOT_SIZE, 16);
  t.is(k.MAX_KEY, 512);
  t.is(k.MAGIC, 0x534c444a);
  t.is(k.DEFAULT_LOCKS, 3020);
  t.is(k.DEFAULT_PER_GROUP, 20);
  t.is(k.MODE_READ, 1);
  t.is(k.MODE_WRITE, 2);
  t.deepEqual([k.STATE_FREE, k.STATE_HELD, k.STATE_WAITING], [0, 1, 2]);
  t.deepEqual([k.RL_FILELOCK, k.RL_WRITE, k.RL_READ, k.RL_FREE], [3, 2, 1, 0]);
});

test('errorFromRc names every native error by its code, 37 carries jbaseError', (t) => {
  for (const [name, info] of Object.entries(rc)) {
    if (info.value >= 0) continue;
    const e = errorFromRc(info.value, 'ctx');
    t.true(e instanceof JdlsError);
    t.is(e.code, name as JdlsError['code']);
    t.true(e.message.startsWith('ctx: '));
  }
  t.is(errorFromRc(-37).jbaseError, 37);
  t.is(errorFromRc(-2).jbaseError, undefined);
  t.is(errorFromRc(-99).code, 'JDLS_UNKNOWN_-99');
});

test('nextPrime and the hash are the C ones', (t) => {
  t.is(native.nextPrime(260), 263);
  t.is(native.nextPrime(151), 151);
  t.is(native.nextPrime(2), 2);
  t.is(native.nextPrime(1), 2);
  const f = native.makeFile(1n, 2n);
  const h = native.hash(f, 'KEY');
  t.true(h >= 0 && h < 2 ** 30);
  t.is(native.hash(f, Buffer.from('KEY')), h, 'string and Buffer keys hash alike');
});
