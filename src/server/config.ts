// config.ts - the distributed listener's settings: defaults, the YAML file
// $JBCRELEASEDIR/jdls.yaml, command-line overrides, and validation.
//
// Owns: the one list of server settings (name, default, range), reading and
// checking the file (unknown keys and bad values are errors naming the key),
// and handing the resolved settings to child processes. Does not own: what
// the settings do (listener.ts, session.ts) or parsing argv (src/cli/args.ts).
//
// Resolution order: defaults < jdls.yaml < command line (--port, --bind).
// The command the operator ran resolves and checks everything, so errors
// reach the terminal; the listener and its lock-server processes receive the
// result through the environment (JDLS_SERVER_CONFIG) and never re-read the
// file: every process of one service runs with the same settings.
import { DEFAULT_LOCK_DIR } from '../locks/oslock.js';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { parse as parseYaml } from 'yaml';
import { PROTO } from '../protocol/constants.js';
import { JdlsError } from '../errors.js';
import { readTrusted, trustedOwners } from '../safefile.js';
import type { WitnessConfig } from './witness.js';

export const CONFIG_FILE = 'jdls.yaml';
/** The environment variable that carries resolved settings to the listener and lock servers. */
export const CONFIG_ENV = 'JDLS_SERVER_CONFIG';

export interface ServerConfig {
  /** directory of the OS record-lock files jlock_* (OS file-lock mechanism, OSLOCKS) */
  lockDir: string;
  /** TCP port the listener accepts on; 0 = any free port (tests) */
  port: number;
  /** address the listener binds; '0.0.0.0' = every IPv4 interface, '::' = every interface */
  bind: string;
  /** clients served by one lock-server process (1 = the guide's one process per client) */
  clientsPerProcess: number;
  /** lock-server processes kept ready beyond those in use */
  spareProcesses: number;
  /** a lock-server process with no clients for this long exits (unless it is a spare) */
  idleProcessMs: number;
  /** interval of WAITING interim frames (distributed lock retries) */
  interimMs: number;
  /** the longest silence allowed from a client before its connection is declared dead */
  keepaliveMs: number;
  /** connections the listener hands out at once (over all lock-server processes) */
  maxConnections: number;
  /** locks one connection may hold */
  maxLocksPerClient: number;
  /** waiting lock requests one connection may have outstanding */
  maxOutstanding: number;
  /** bytes queued for a client that does not read before it is disconnected */
  maxSendBacklog: number;
  /** with the shm table: percent of the table's capacity one connection may hold (quota.ts) */
  connectionSharePct: number;
  /** with the shm table: percent of the table's capacity the connections of one client address may hold together */
  addressSharePct: number;
  /** locks the connections of one client address may hold together (any mechanism) */
  maxLocksPerAddress: number;
  /** connections one client address may have at once; 0 = half of maxConnections (rounded up) */
  maxConnectionsPerAddress: number;
  /** waits that each hold a native thread (OS record locks, ranges) in one lock-server process */
  maxBlockingWaits: number;
  /** OS record locks one connection may hold in one file (OS mechanism and OSLOCKS) */
  maxOsLocksPerFile: number;
  /** range lock files (jrange_*) in the binary lock directory beyond which a range on a new file is refused */
  maxRangeFiles: number;
  /** ms a new connection has to send HELLO */
  helloTimeoutMs: number;
  /** the longest ping interval a client may announce in HELLO */
  maxClientKeepaliveMs: number;
  /** log lines about one connection's refused or failed requests per second, beyond which they are counted and summarised */
  logLinesPerSecond: number;
  // --- who may connect (src/server/auth.ts, docs/security.md) ---
  /** key file of the installation's shared secret ('' = none: clients are not authenticated) */
  secretFile: string;
  /** TLS certificate chain, PEM ('' = no TLS) */
  tlsCert: string;
  /** TLS private key, PEM (the key-file rule applies) */
  tlsKey: string;
  /** CA whose certificates clients must present ('' = no client certificates) */
  tlsCA: string;
  /** client networks admitted (CIDR); empty = everyone */
  allow: string[];
  /** deadlock detection in the lock table (docs/deadlocks.md): off, report (log cycles), break (also refuse waits that asked) */
  deadlock: DeadlockPolicy;
  /** the etcd witness of a SERVER2 pair (witness.ts, docs/server.md "The witness"); null = none */
  witness: WitnessConfig | null;
}

export type DeadlockPolicy = 'off' | 'report' | 'break';
export const DEADLOCK_POLICIES: readonly DeadlockPolicy[] = ['off', 'report', 'break'];

interface Setting {
  kind: 'int' | 'addr' | 'path' | 'optpath' | 'cidrs' | 'enum' | 'witness';
  values?: readonly string[];
  min?: number;
  max?: number;
  text: string;
}

export const DEFAULTS: Readonly<ServerConfig> = Object.freeze({
  lockDir: DEFAULT_LOCK_DIR,
  port: PROTO.DEFAULT_PORT,
  bind: '0.0.0.0',
  clientsPerProcess: 500,
  spareProcesses: 1,
  idleProcessMs: 60_000,
  interimMs: 5_000,
  keepaliveMs: 30_000,
  maxConnections: 4096,
  maxLocksPerClient: 100_000,
  maxOutstanding: 1024,
  maxSendBacklog: 1 << 20,
  connectionSharePct: 10,
  addressSharePct: 50,
  maxLocksPerAddress: 1_000_000,
  maxConnectionsPerAddress: 0,
  maxBlockingWaits: 1024,
  maxOsLocksPerFile: 1000,
  maxRangeFiles: 65_536,
  helloTimeoutMs: 10_000,
  maxClientKeepaliveMs: 600_000,
  logLinesPerSecond: 10,
  secretFile: '',
  tlsCert: '',
  tlsKey: '',
  tlsCA: '',
  allow: [],
  deadlock: 'break',
  witness: null,
});

const U32 = 0xffffffff;

export const SETTINGS: Readonly<Record<keyof ServerConfig, Setting>> = {
  port: { kind: 'int', min: 0, max: 65535, text: 'TCP port (0 = any free port)' },
  bind: { kind: 'addr', text: 'IP address to listen on' },
  clientsPerProcess: { kind: 'int', min: 1, max: 100_000, text: 'clients per lock-server process' },
  spareProcesses: { kind: 'int', min: 0, max: 64, text: 'idle lock-server processes kept ready' },
  idleProcessMs: { kind: 'int', min: 0, max: U32, text: 'ms before an idle lock-server process exits' },
  interimMs: { kind: 'int', min: 10, max: U32, text: 'ms between WAITING interim messages' },
  keepaliveMs: { kind: 'int', min: 100, max: U32, text: 'ms of client silence before the connection is dropped' },
  maxConnections: { kind: 'int', min: 1, max: 10_000_000, text: 'connections at once' },
  maxLocksPerClient: { kind: 'int', min: 1, max: U32, text: 'locks held by one connection' },
  maxOutstanding: { kind: 'int', min: 1, max: 1_000_000, text: 'waiting lock requests of one connection' },
  maxSendBacklog: { kind: 'int', min: 65_536, max: U32, text: 'bytes queued for a slow client' },
  lockDir: { kind: 'path', text: 'directory of the OS record-lock files' },
  connectionSharePct: { kind: 'int', min: 1, max: 100, text: 'percent of the lock table one connection may hold' },
  addressSharePct: { kind: 'int', min: 1, max: 100, text: 'percent of the lock table one client address may hold' },
  maxLocksPerAddress: { kind: 'int', min: 1, max: U32, text: 'locks held by the connections of one client address' },
  maxConnectionsPerAddress: { kind: 'int', min: 0, max: 10_000_000, text: 'connections of one client address (0 = half of maxConnections)' },
  maxBlockingWaits: { kind: 'int', min: 4, max: 100_000, text: 'waits holding a native thread per lock-server process' },
  maxOsLocksPerFile: { kind: 'int', min: 1, max: U32, text: 'OS record locks of one connection in one file' },
  maxRangeFiles: { kind: 'int', min: 1, max: U32, text: 'range lock files in the binary lock directory' },
  helloTimeoutMs: { kind: 'int', min: 100, max: 3_600_000, text: 'ms a new connection has to send HELLO' },
  // Why at most U32/2: WELCOME carries 2 x this as a u32.
  maxClientKeepaliveMs: { kind: 'int', min: 100, max: Math.floor(U32 / 2), text: 'longest ping interval a client may announce' },
  logLinesPerSecond: { kind: 'int', min: 1, max: 1_000_000, text: 'log lines per second about one connection\'s refused requests' },
  secretFile: { kind: 'optpath', text: 'key file of the shared secret' },
  tlsCert: { kind: 'optpath', text: 'TLS certificate (PEM)' },
  tlsKey: { kind: 'optpath', text: 'TLS private key (PEM)' },
  tlsCA: { kind: 'optpath', text: 'CA of client certificates (PEM)' },
  allow: { kind: 'cidrs', text: 'client networks admitted, e.g. [10.0.0.0/8, 127.0.0.1/32, ::1/128]' },
  witness: { kind: 'witness', text: 'the etcd witness of a SERVER2 pair: { endpoints: [http://host:2379, ...], prefix: /jdls/<pair>, leaseMs: 5000, name: <this server> }' },
  deadlock: { kind: 'enum', values: DEADLOCK_POLICIES, text: 'deadlock detection: off, report (log every cycle) or break (also refuse the youngest wait that asked: POSIX F_SETLKW, and library calls with breakDeadlock)' },
};

/** '10.0.0.0/8', '::1/128' or a bare address; the prefix within the family's bits. */
function isCidr(text: string): boolean {
  const m = /^([^/\s]+)(?:\/(\d{1,3}))?$/.exec(text.trim());
  if (!m?.[1]) return false;
  const kind = net.isIP(m[1]);
  return kind !== 0 && (m[2] === undefined || Number(m[2]) <= (kind === 4 ? 32 : 128));
}

const KEYS = Object.keys(SETTINGS) as (keyof ServerConfig)[];

/** One setting's value, checked; a string is the error text (naming the key). */
function check(key: keyof ServerConfig, value: unknown, where: string): number | string | string[] | WitnessConfig | null | JdlsError {
  const s = SETTINGS[key];
  if (s.kind === 'witness') return checkWitness(value, `${where}: ${key}`);
  if (s.kind === 'optpath') {
    if (value === '' || value === null) return '';
    if (typeof value !== 'string' || !path.isAbsolute(value))
      return new JdlsError('BAD_ARGUMENT', `${where}: ${key} must be an absolute path (${s.text}), got ${JSON.stringify(value)}`);
    return value;
  }
  if (s.kind === 'cidrs') {
    const list = typeof value === 'string' ? [value] : value;
    if (!Array.isArray(list) || !list.every((c) => typeof c === 'string' && isCidr(c)))
      return new JdlsError('BAD_ARGUMENT', `${where}: ${key} must be a list of networks (${s.text}), got ${JSON.stringify(value)}`);
    return list as string[];
  }
  if (s.kind === 'enum') {
    if (typeof value !== 'string' || !(s.values ?? []).includes(value))
      return new JdlsError('BAD_ARGUMENT', `${where}: ${key} must be one of ${(s.values ?? []).join(', ')} (${s.text}), got ${JSON.stringify(value)}`);
    return value;
  }
  if (s.kind === 'path') {
    if (typeof value !== 'string' || !path.isAbsolute(value))
      return new JdlsError('BAD_ARGUMENT', `${where}: ${key} must be an absolute path, got ${JSON.stringify(value)}`);
    return value;
  }
  if (s.kind === 'addr') {
    if (typeof value !== 'string' || net.isIP(value) === 0)
      return new JdlsError('BAD_ARGUMENT', `${where}: ${key} must be an IP address (e.g. 0.0.0.0, 127.0.0.1, ::), got ${JSON.stringify(value)}`);
    return value;
  }
  const n = typeof value === 'string' && /^\d+$/.test(value) ? Number(value) : value;
  if (typeof n !== 'number' || !Number.isInteger(n) || n < (s.min ?? 0) || n > (s.max ?? U32))
    return new JdlsError('BAD_ARGUMENT', `${where}: ${key} must be an integer ${s.min ?? 0}..${s.max ?? U32} (${s.text}), got ${JSON.stringify(value)}`);
  return n;
}

/** The witness leases at least this long: etcd's own minimum lease TTL is about 2 s with its default timings. */
export const WITNESS_MIN_LEASE_MS = 1000;
const WITNESS_KEYS = ['endpoints', 'prefix', 'leaseMs', 'name'];

/** `witness:` - a mapping; null/absent = no witness. */
export function checkWitness(value: unknown, where: string): WitnessConfig | null | JdlsError {
  if (value === null || value === undefined) return null;
  const bad = (what: string): JdlsError => new JdlsError('BAD_ARGUMENT', `${where}: ${what} (${SETTINGS.witness.text})`);
  if (typeof value !== 'object' || Array.isArray(value)) return bad(`must be a mapping, got ${JSON.stringify(value)}`);
  const o = value as Record<string, unknown>;
  for (const k of Object.keys(o)) if (!WITNESS_KEYS.includes(k)) return bad(`unknown key '${k}' (known: ${WITNESS_KEYS.join(', ')})`);
  const eps = typeof o['endpoints'] === 'string' ? [o['endpoints']] : o['endpoints'];
  if (!Array.isArray(eps) || eps.length === 0) return bad('endpoints must be a list of etcd client URLs, e.g. [http://10.0.0.1:2379]');
  for (const e of eps) {
    let u: URL | undefined;
    try {
      u = typeof e === 'string' ? new URL(e) : undefined;
    } catch {
      u = undefined;
    }
    if (!u || u.protocol !== 'http:' || (u.pathname !== '/' && u.pathname !== '') || u.search || u.username)
      return bad(`endpoints: ${JSON.stringify(e)} is not an etcd client URL http://host:port (https is not supported yet)`);
  }
  const prefix = o['prefix'];
  if (typeof prefix !== 'string' || !/^\/[\x21-\x7e]*[^/]$/.test(prefix))
    return bad(`prefix must be a key path such as /jdls/pair-a (starts with /, no trailing /, printable ASCII), got ${JSON.stringify(prefix)}`);
  const lease = o['leaseMs'] ?? 5000;
  const leaseMs = typeof lease === 'string' && /^\d+$/.test(lease) ? Number(lease) : lease;
  if (typeof leaseMs !== 'number' || !Number.isInteger(leaseMs) || leaseMs < WITNESS_MIN_LEASE_MS || leaseMs > 600_000)
    return bad(`leaseMs must be an integer ${WITNESS_MIN_LEASE_MS}..600000, got ${JSON.stringify(lease)}`);
  const name = o['name'] ?? '';
  if (typeof name !== 'string' || name.length > 200 || /[\x00-\x1f]/.test(name)) return bad(`name must be a short text, got ${JSON.stringify(name)}`);
  return { endpoints: eps as string[], prefix, leaseMs, name };
}

function apply(into: ServerConfig, values: Record<string, unknown>, where: string): void {
  for (const [k, v] of Object.entries(values)) {
    if (!(KEYS as string[]).includes(k))
      throw new JdlsError('BAD_ARGUMENT', `${where}: unknown setting '${k}' (known: ${KEYS.join(', ')})`);
    const key = k as keyof ServerConfig;
    const r = check(key, v, where);
    if (r instanceof JdlsError) throw r;
    (into as unknown as Record<string, unknown>)[key] = r;
  }
}

/** Command-line settings (--port, --bind); strings as typed. */
export type ConfigOverrides = Partial<Record<'port' | 'bind', string>>;

/**
 * The settings of the installation `dir`: defaults, then jdls.yaml if it
 * exists, then the overrides. Throws JdlsError BAD_ARGUMENT naming the file
 * and key (or the option) on any bad value.
 */
export function loadConfig(dir: string, overrides: ConfigOverrides = {}): ServerConfig {
  const cfg: ServerConfig = { ...DEFAULTS };
  const file = path.join(dir, CONFIG_FILE);
  let text: string | undefined;
  try {
    // The settings decide where the service listens and which directory it
    // locks in: only a file of root or of the installation's owner, which
    // nobody else may write, and no symbolic link (safefile.readTrusted).
    text = readTrusted(file, trustedOwners(fs.statSync(dir, { throwIfNoEntry: false })?.uid));
  } catch (e) {
    if (e instanceof JdlsError) throw e;
    throw new JdlsError('BAD_ARGUMENT', `${file}: cannot read: ${(e as Error).message}`);
  }
  if (text !== undefined) {
    let doc: unknown;
    try {
      doc = parseYaml(text);
    } catch (e) {
      throw new JdlsError('BAD_ARGUMENT', `${file}: not valid YAML: ${(e as Error).message.split('\n')[0]}`);
    }
    if (doc !== null && doc !== undefined) {
      if (typeof doc !== 'object' || Array.isArray(doc))
        throw new JdlsError('BAD_ARGUMENT', `${file}: must be a mapping of settings (key: value)`);
      apply(cfg, doc as Record<string, unknown>, file);
    }
  }
  for (const [k, v] of Object.entries(overrides)) {
    if (v === undefined) continue;
    const r = check(k as keyof ServerConfig, v, `--${k}`);
    if (r instanceof JdlsError) throw new JdlsError('BAD_ARGUMENT', r.message.replace(`--${k}: ${k} must`, `--${k} must`));
    (cfg as unknown as Record<string, unknown>)[k] = r;
  }
  return cfg;
}

/** Settings for a child process's environment. */
export function configToEnv(cfg: ServerConfig): string {
  return JSON.stringify(cfg);
}

/** Settings from the environment (a child of the listener), or undefined. */
export function configFromEnv(env: NodeJS.ProcessEnv = process.env): ServerConfig | undefined {
  const text = env[CONFIG_ENV];
  if (!text) return undefined;
  const cfg: ServerConfig = { ...DEFAULTS };
  apply(cfg, JSON.parse(text) as Record<string, unknown>, CONFIG_ENV);
  return cfg;
}
