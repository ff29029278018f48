// client-jdls-env.test.ts - the JDLS parser (src/client/jdls-env.ts): every
// valid form, including the guide's own examples, and every malformed one
// rejected with BAD_JDLS and a message naming the bad part.
import test from 'ava';
import { parseJdls, jdlsFromEnv, type JdlsConfig } from '../src/client/jdls-env.js';
import { JdlsError } from '../src/errors.js';

const base = { wait: false, timeoutMs: 30000, binary: false, osLocks: false, lock: 'ALL', verbose: false, tls: false };
const local = [{ host: 'localhost', port: 50002 }];

const valid: [string, Partial<JdlsConfig>][] = [
  // JDLS set but empty: localhost, 50002
  ['', { servers: local }],
  ['   ', { servers: local }],
  // the guide: JDLS={SERVER=Hostname{, Port}}{,SERVER2=Hostname{, Port}}
  ['SERVER=10.44.1.56', { servers: [{ host: '10.44.1.56', port: 50002 }] }],
  ['SERVER=10.44.1.56,50002', { servers: [{ host: '10.44.1.56', port: 50002 }] }],
  ['SERVER=10.44.1.56, 50002', { servers: [{ host: '10.44.1.56', port: 50002 }] }],
  ['SERVER=Hostname, 1234,SERVER2=Other, 4321', { servers: [{ host: 'Hostname', port: 1234 }, { host: 'Other', port: 4321 }] }],
  ['SERVER=10.44.1.56,50002,SERVER2=10.44.1.57,BINARY', { servers: [{ host: '10.44.1.56', port: 50002 }, { host: '10.44.1.57', port: 50002 }], binary: true }],
  ['SERVER=a.example.com,SERVER2=b.example.com,50010', { servers: [{ host: 'a.example.com', port: 50002 }, { host: 'b.example.com', port: 50010 }] }],
  ['SERVER2=b,SERVER=a', { servers: [{ host: 'a', port: 50002 }, { host: 'b', port: 50002 }] }],
  ['SERVER=app-server_1,1', { servers: [{ host: 'app-server_1', port: 1 }] }],
  ['SERVER=h,65535', { servers: [{ host: 'h', port: 65535 }] }],
  ['SERVER=h,050002', { servers: [{ host: 'h', port: 50002 }] }],
  // IPv6 in brackets
  ['SERVER=[::1]', { servers: [{ host: '::1', port: 50002 }] }],
  ['SERVER=[fd00::1],50003,SERVER2=[fd00::2]', { servers: [{ host: 'fd00::1', port: 50003 }, { host: 'fd00::2', port: 50002 }] }],
  // options, each alone and combined; words case-insensitive
  ['WAIT', { servers: local, wait: true }],
  ['TIMEOUT=60', { servers: local, timeoutMs: 60000 }],
  ['TIMEOUT=0.25', { servers: local, timeoutMs: 250 }],
  ['TIMEOUT=86400', { servers: local, timeoutMs: 86400000 }],
  ['BINARY', { servers: local, binary: true }],
  ['OSLOCKS', { servers: local, osLocks: true }],
  ['LOCK=EXTERNAL', { servers: local, lock: 'EXTERNAL' }],
  ['LOCK=INTERNAL', { servers: local, lock: 'INTERNAL' }],
  ['LOCK=ALL', { servers: local, lock: 'ALL' }],
  ['lock=internal', { servers: local, lock: 'INTERNAL' }],
  ['VERBOSE', { servers: local, verbose: true }],
  ['TRACE=/tmp/Jdls Trace.log', { servers: local, trace: '/tmp/Jdls Trace.log' }],
  ['VERBOSE,TRACE=trace.out', { servers: local, verbose: true, trace: 'trace.out' }],
  [' SERVER = h , 7 , WAIT , TIMEOUT = 5 ', { servers: [{ host: 'h', port: 7 }], wait: true, timeoutMs: 5000 }],
  ['server=h,wait,binary,oslocks,verbose', { servers: [{ host: 'h', port: 50002 }], wait: true, binary: true, osLocks: true, verbose: true }],
  ['SERVER=10.44.1.56,50002,SERVER2=10.44.1.57,50002,WAIT,TIMEOUT=120,BINARY,OSLOCKS,LOCK=INTERNAL,VERBOSE,TRACE=/var/tmp/jdls.trc', {
    servers: [{ host: '10.44.1.56', port: 50002 }, { host: '10.44.1.57', port: 50002 }],
    wait: true, timeoutMs: 120000, binary: true, osLocks: true, lock: 'INTERNAL', verbose: true, trace: '/var/tmp/jdls.trc',
  }],
];

for (const [raw, want] of valid) {
  test(`valid JDLS=${JSON.stringify(raw)}`, (t) => {
    const cfg = parseJdls(raw);
    t.deepEqual(cfg, { ...base, ...want, raw } as JdlsConfig);
  });
}

// [JDLS, a regex the message must match (naming the bad part)]
const invalid: [string, RegExp][] = [
  ['BOGUS', /unknown option 'BOGUS'/],
  ['SERVER=h,WAITT', /unknown option 'WAITT'/],
  ['SERVERS=h', /unknown option 'SERVERS=h'/],
  ['SERVER3=h', /unknown option 'SERVER3=h'/],
  ['SERVER=h,5000x', /unknown option '5000x'.*port after SERVER= must be a number/],
  ['SERVER=h,0', /SERVER: port 0 is out of range 1..65535/],
  ['SERVER=h,65536', /SERVER: port 65536 is out of range/],
  ['SERVER=h,99999999999', /port 99999999999 is out of range/],
  ['SERVER=h,-1', /SERVER: port '-1' is not a number/],
  ['SERVER=h,+5', /SERVER: port '\+5' is not a number/],
  ['SERVER2=h,0', /SERVER2: port 0 is out of range/],
  ['SERVER=a,SERVER2=b,70000', /SERVER2: port 70000 is out of range/],
  ['50002', /'50002' is not an option: a port number must follow SERVER=host/],
  ['WAIT,50002', /'50002' is not an option/],
  ['SERVER=h,50002,50003', /'50003' is not an option/],
  ['SERVER=h,WAIT,50002', /'50002' is not an option/],
  ['SERVER2=h', /SERVER2 has no meaning without SERVER/],
  ['SERVER2=h,50002,WAIT', /SERVER2 has no meaning without SERVER/],
  ['SERVER=', /SERVER= needs a host name/],
  ['SERVER', /SERVER needs a value/],
  ['SERVER2=', /SERVER2= needs a host name/],
  ['SERVER=h:50002', /'h:50002' is not a host name.*after a comma/],
  ['SERVER=::1', /'::1' is not a host name.*brackets/],
  ['SERVER=[::1', /'\[::1' is not an IPv6 address in brackets/],
  ['SERVER=[1.2.3.4]', /'\[1.2.3.4\]' is not an IPv6 address/],
  ['SERVER=[zz::1]', /not an IPv6 address/],
  ['SERVER=bad host', /'bad host' is not a host name/],
  ['SERVER=h!', /'h!' is not a host name/],
  ['SERVER=-h', /'-h' is not a host name/],
  ['SERVER=a,SERVER=b', /SERVER is given twice/],
  ['SERVER=a,SERVER2=b,SERVER2=c', /SERVER2 is given twice/],
  ['SERVER=a,SERVER2=a', /SERVER2 names the same server as SERVER/],
  ['SERVER=a,1,SERVER2=A,1', /SERVER2 names the same server as SERVER/],
  ['WAIT,WAIT', /WAIT is given twice/],
  ['wait,WAIT', /WAIT is given twice/],
  ['BINARY,binary', /BINARY is given twice/],
  ['TIMEOUT=1,TIMEOUT=2', /TIMEOUT is given twice/],
  ['TRACE=a,TRACE=b', /TRACE is given twice/],
  ['LOCK=ALL,LOCK=ALL', /LOCK is given twice/],
  ['VERBOSE,VERBOSE', /VERBOSE is given twice/],
  ['TIMEOUT', /TIMEOUT needs a value/],
  ['TIMEOUT=', /TIMEOUT: '' is not a number of seconds/],
  ['TIMEOUT=abc', /TIMEOUT: 'abc' is not a number/],
  ['TIMEOUT=0', /TIMEOUT: 0 seconds is not positive/],
  ['TIMEOUT=0.0', /TIMEOUT: 0.0 seconds is not positive/],
  ['TIMEOUT=-5', /TIMEOUT: '-5' is not a number/],
  ['TIMEOUT=1e3', /TIMEOUT: '1e3' is not a number/],
  ['TIMEOUT=30s', /TIMEOUT: '30s' is not a number/],
  ['TIMEOUT=86401', /TIMEOUT: 86401 seconds exceeds 86400/],
  ['LOCK=', /LOCK='' is not EXTERNAL, INTERNAL or ALL/],
  ['LOCK=SOME', /LOCK='SOME' is not EXTERNAL, INTERNAL or ALL/],
  ['LOCK', /LOCK needs a value/],
  ['TRACE', /TRACE needs a value/],
  ['TRACE=', /TRACE= needs a file name/],
  ['TRACE=  ', /TRACE= needs a file name/],
  ['WAIT=1', /WAIT takes no value/],
  ['BINARY=yes', /BINARY takes no value/],
  ['OSLOCKS=', /OSLOCKS takes no value/],
  ['VERBOSE=2', /VERBOSE takes no value/],
  [',WAIT', /item 1 is empty/],
  ['WAIT,', /item 2 is empty/],
  ['WAIT,,BINARY', /item 2 is empty/],
  ['SERVER=h,', /item 2 is empty/],
  ['SERVER=h, ,50002', /item 2 is empty/],
  [',', /item 1 is empty/],
];

for (const [raw, re] of invalid) {
  test(`malformed JDLS=${JSON.stringify(raw)}`, (t) => {
    const e = t.throws(() => parseJdls(raw), { instanceOf: JdlsError });
    t.is((e as JdlsError).code, 'BAD_JDLS');
    t.regex(e?.message ?? '', re);
    t.true(e?.message.includes(`JDLS='${raw}'`), 'the message quotes the whole value');
  });
}

test('jdlsFromEnv: unset is undefined (local locks), set is parsed, malformed throws', (t) => {
  t.is(jdlsFromEnv({}), undefined);
  t.deepEqual(jdlsFromEnv({ JDLS: '' })?.servers, local);
  t.deepEqual(jdlsFromEnv({ JDLS: 'SERVER=x,9' })?.servers, [{ host: 'x', port: 9 }]);
  t.throws(() => jdlsFromEnv({ JDLS: 'SERVER2=x' }), { instanceOf: JdlsError, message: /SERVER2 has no meaning/ });
});
