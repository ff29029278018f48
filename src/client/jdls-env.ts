// jdls-env.ts - the JDLS environment variable, parsed into a typed config.
//
// Owns: the syntax of JDLS (guide, "Client Distributed Lock Deployment") and
// its defaults. Pure: no sockets, no files. Any malformed value is a
// JdlsError 'BAD_JDLS' naming the bad part, and the caller must not start
// locking: a silent fall-back to local locks would let two application
// servers take the same record lock.
//
// The rules (docs/client.md has examples):
// - Items are separated by commas; white space around an item is ignored.
//   Option words (SERVER, WAIT, LOCK=all, ...) are case-insensitive; host
//   names and the TRACE file keep their case.
// - Trap: `SERVER=host,port` puts a comma inside a value. An item that is
//   only digits is the port of the item just before it, which must be a
//   SERVER= or SERVER2= without a port yet; anywhere else it is an error.
// - An IPv6 address is written in brackets: SERVER=[fd00::1],50002.
// - JDLS set but empty (or only blanks) means SERVER=localhost,50002.
// - Every option at most once; SERVER2 needs SERVER; an empty item (`,,`, a
//   trailing comma) is an error rather than a guess.
// - jdls extensions (docs/client.md): SECRET=keyfile (the shared secret),
//   TLS, TLSCA=file. SECRET= and TLSCA= need an absolute path: the broker
//   reads them for a preloaded program, in another working directory.
import net from 'node:net';
import { JdlsError } from '../errors.js';

export const DEFAULT_JDLS_PORT = 50002;
export const DEFAULT_JDLS_HOST = 'localhost';
export const DEFAULT_TIMEOUT_SECONDS = 30;
/** A day. Far beyond any sensible acknowledgement period, and well inside setTimeout's range. */
export const MAX_TIMEOUT_SECONDS = 86400;

export type JdlsLockScope = 'ALL' | 'INTERNAL' | 'EXTERNAL';

export interface JdlsServer {
  /** host name or IP address; an IPv6 address without its brackets */
  host: string;
  port: number;
}

export interface JdlsConfig {
  /** [primary] or [primary, secondary (SERVER2)] */
  servers: JdlsServer[];
  /** WAIT: no interim messages; the acknowledgement timeout does not apply to waiting locks */
  wait: boolean;
  /** TIMEOUT in ms: the longest silence allowed from the server while an answer is due */
  timeoutMs: number;
  /** BINARY: binary (non-record) locks go to the server too */
  binary: boolean;
  /** OSLOCKS: the server takes record locks as OS file locks */
  osLocks: boolean;
  /** LOCK=: which lock handlers are intercepted */
  lock: JdlsLockScope;
  /** VERBOSE: trace to stderr */
  verbose: boolean;
  /** TRACE=file: trace to this file (overrides VERBOSE) */
  trace?: string;
  /** SECRET=file (jdls extension): the installation's key file; the handshake authenticates both sides */
  secret?: string;
  /** TLS (jdls extension): the connection is TLS; the server's certificate is checked against the system's CAs, or TLSCA */
  tls: boolean;
  /** TLSCA=file (jdls extension, implies TLS): the CA (PEM) that signed the server's certificate */
  tlsCA?: string;
  /** the JDLS value as given */
  raw: string;
}

const FLAGS = ['WAIT', 'BINARY', 'OSLOCKS', 'VERBOSE', 'TLS'] as const;
const VALUED = ['SERVER', 'SERVER2', 'TIMEOUT', 'LOCK', 'TRACE', 'SECRET', 'TLSCA'] as const;
type Word = (typeof FLAGS)[number] | (typeof VALUED)[number];

const HOSTNAME = /^[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?$/;

function bad(raw: string, what: string): never {
  throw new JdlsError('BAD_JDLS', `JDLS='${raw}': ${what}`);
}

function parseHost(raw: string, word: string, text: string): string {
  if (text === '') bad(raw, `${word}= needs a host name, e.g. ${word}=10.44.1.56,50002`);
  if (text.startsWith('[')) {
    const inner = text.endsWith(']') ? text.slice(1, -1) : '';
    if (!net.isIPv6(inner)) bad(raw, `${word}: '${text}' is not an IPv6 address in brackets, e.g. ${word}=[fd00::1],50002`);
    return inner;
  }
  if (text.includes(':'))
    bad(raw, `${word}: '${text}' is not a host name: write the port after a comma (${word}=host,50002) and an IPv6 address in brackets (${word}=[::1])`);
  if (!HOSTNAME.test(text)) bad(raw, `${word}: '${text}' is not a host name or IP address`);
  return text;
}

function parsePort(raw: string, word: string, text: string): number {
  if (!/^\d+$/.test(text)) bad(raw, `${word}: port '${text}' is not a number 1..65535`);
  const n = Number(text);
  if (n < 1 || n > 65535) bad(raw, `${word}: port ${text} is out of range 1..65535`);
  return n;
}

function parseTimeout(raw: string, text: string): number {
  if (!/^(\d+(\.\d*)?|\.\d+)$/.test(text)) bad(raw, `TIMEOUT: '${text}' is not a number of seconds, e.g. TIMEOUT=60`);
  const s = Number(text);
  if (!(s > 0)) bad(raw, `TIMEOUT: ${text} seconds is not positive`);
  if (s > MAX_TIMEOUT_SECONDS) bad(raw, `TIMEOUT: ${text} seconds exceeds ${MAX_TIMEOUT_SECONDS}`);
  // Decimals are a jdls extension (jBASE takes whole seconds): tests use short timeouts.
  return Math.max(1, Math.round(s * 1000));
}

/** Parse a JDLS value. Throws JdlsError 'BAD_JDLS' naming the bad part. */
export function parseJdls(raw: string): JdlsConfig {
  const cfg: JdlsConfig = {
    servers: [],
    wait: false,
    timeoutMs: DEFAULT_TIMEOUT_SECONDS * 1000,
    binary: false,
    osLocks: false,
    lock: 'ALL',
    verbose: false,
    tls: false,
    raw,
  };
  const seen = new Set<Word>();
  let primary: JdlsServer | undefined;
  let secondary: JdlsServer | undefined;
  // the SERVER/SERVER2 item just before this one, while it may still take a port
  let portFor: { word: 'SERVER' | 'SERVER2'; server: JdlsServer } | undefined;

  const items = raw.trim() === '' ? [] : raw.split(',');
  items.forEach((item0, index) => {
    const item = item0.trim();
    const last = portFor;
    portFor = undefined;
    if (item === '') bad(raw, `item ${index + 1} is empty (two commas in a row, or a comma at the start or end)`);
    if (/^\d+$/.test(item) || /^[+-]\d/.test(item)) {
      if (!last) bad(raw, `'${item}' is not an option: a port number must follow SERVER=host or SERVER2=host`);
      last.server.port = parsePort(raw, last.word, item);
      return;
    }
    const eq = item.indexOf('=');
    const name = (eq < 0 ? item : item.slice(0, eq)).trim().toUpperCase();
    const value = eq < 0 ? undefined : item.slice(eq + 1).trim();
    const word = ([...FLAGS, ...VALUED] as string[]).includes(name) ? (name as Word) : undefined;
    if (!word) {
      const hint = last && /^\d/.test(item) ? ` (a port after ${last.word}= must be a number 1..65535)` : '';
      bad(raw, `unknown option '${item}'${hint}; options are SERVER=host{,port}, SERVER2=host{,port}, WAIT, TIMEOUT=seconds, BINARY, OSLOCKS, LOCK=EXTERNAL|INTERNAL|ALL, VERBOSE, TRACE=file, SECRET=keyfile, TLS, TLSCA=file`);
    }
    if (seen.has(word)) bad(raw, `${word} is given twice`);
    seen.add(word);
    if ((FLAGS as readonly string[]).includes(word)) {
      if (value !== undefined) bad(raw, `${word} takes no value ('${item}')`);
      if (word === 'WAIT') cfg.wait = true;
      else if (word === 'BINARY') cfg.binary = true;
      else if (word === 'OSLOCKS') cfg.osLocks = true;
      else if (word === 'TLS') cfg.tls = true;
      else cfg.verbose = true;
      return;
    }
    if (value === undefined) bad(raw, `${word} needs a value (${word}=...)`);
    switch (word) {
      case 'SERVER':
      case 'SERVER2': {
        const server = { host: parseHost(raw, word, value), port: DEFAULT_JDLS_PORT };
        if (word === 'SERVER') primary = server;
        else secondary = server;
        portFor = { word, server };
        return;
      }
      case 'TIMEOUT':
        cfg.timeoutMs = parseTimeout(raw, value);
        return;
      case 'LOCK': {
        const v = value.toUpperCase();
        if (v !== 'ALL' && v !== 'INTERNAL' && v !== 'EXTERNAL') bad(raw, `LOCK='${value}' is not EXTERNAL, INTERNAL or ALL`);
        cfg.lock = v;
        return;
      }
      case 'SECRET':
      case 'TLSCA':
        // Absolute: the broker reads it for a preloaded program, in another
        // working directory.
        if (!value.startsWith('/')) bad(raw, `${word}= needs an absolute file name, e.g. ${word}=/etc/jdls/${word === 'SECRET' ? 'key' : 'ca.pem'}`);
        if (word === 'SECRET') cfg.secret = value;
        else {
          cfg.tlsCA = value;
          cfg.tls = true;
        }
        return;
      default: // TRACE
        if (value === '') bad(raw, 'TRACE= needs a file name');
        cfg.trace = value;
    }
  });

  if (secondary && !primary) bad(raw, 'SERVER2 has no meaning without SERVER');
  cfg.servers = [primary ?? { host: DEFAULT_JDLS_HOST, port: DEFAULT_JDLS_PORT }];
  if (secondary) {
    const p = cfg.servers[0];
    if (p && p.host.toLowerCase() === secondary.host.toLowerCase() && p.port === secondary.port)
      bad(raw, `SERVER2 names the same server as SERVER (${p.host}, port ${p.port})`);
    cfg.servers.push(secondary);
  }
  return cfg;
}

/**
 * The JDLS configuration of an environment: undefined when JDLS is unset
 * (locks are local), else the parsed value (throws 'BAD_JDLS').
 */
export function jdlsFromEnv(env: NodeJS.ProcessEnv = process.env): JdlsConfig | undefined {
  const raw = env['JDLS'];
  return raw === undefined ? undefined : parseJdls(raw);
}

/** host text as written in JDLS and in messages: an IPv6 address in brackets. */
export function hostText(host: string): string {
  return net.isIPv6(host) ? `[${host}]` : host;
}
