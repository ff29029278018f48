// args.ts - the jdls command line, parsed into a typed command.
//
// Owns: turning argv into one Command or one UsageError. It never touches the
// table, the file system or another process: parse, then execute (jdls.ts).
// Flags combine as in the jBASE guide: `-ibs13000,50`, `-ibPT -t2`, `-dvL`,
// `-Ko`; a value (-s, -t) is the rest of its token or the next argument.
import nodeNet from 'node:net';
import { native } from '../native.js';

/** -s nn,mm */
export interface Size {
  locks: number;
  perGroup: number;
}

/** -i[b][A|D][P][T] [-snn,mm] [-tnn] [--port N] [--bind ADDR]: create the table, run the monitor and/or the listener. */
export interface StartCommand {
  kind: 'start';
  background: boolean;
  /** -A: arbiter (monitor) only */
  arbiterOnly: boolean;
  /** -D: distributed listener only */
  listenerOnly: boolean;
  /** --port, as typed (checked: an integer 0..65535) */
  port?: string;
  /** --bind, as typed (checked: an IP address) */
  bind?: string;
  portLocks: boolean;
  timestamps: boolean;
  /** undefined: not given (the table's default 3020,20 applies) */
  size?: Size;
  tidyMinutes: number;
  tidyGiven: boolean;
}

/** Internal: the background monitor process that `-ib` spawns. */
export interface MonitorChildCommand {
  kind: 'monitor-child';
  tidyMinutes: number;
}

/** -k[A|D]: stop the monitor and/or the listener. */
export interface StopCommand {
  kind: 'stop';
  arbiterOnly: boolean;
  listenerOnly: boolean;
}

/** Internal: the listener process that `-ib`/`-ibD`/`-i` start. */
export interface ListenerChildCommand {
  kind: 'listener-child';
}

/** Internal: a lock-server process forked by the listener. */
export interface LockServerChildCommand {
  kind: 'lock-server-child';
  mechanism: 'shm' | 'os';
}

/** -K[o]: remove the table. */
export interface RemoveCommand {
  kind: 'remove';
  force: boolean;
}

/** -d[v][L] [--json]: show the table. */
export interface DisplayCommand {
  kind: 'display';
  verbose: boolean;
  locks: boolean;
  json: boolean;
}

export interface HelpCommand {
  kind: 'help';
}

/** -Cteststring: the client connection test with $JDLS (src/cli/client-test.ts). */
export interface ClientTestCommand {
  kind: 'client-test';
  text: string;
}

/** --shim-path: print the absolute path of libjdlsshim.so (docs/shim.md). */
export interface ShimPathCommand {
  kind: 'shim-path';
}

/** --sessions [--json]: list the client sessions of the lock-server processes (admin socket). */
export interface SessionsCommand {
  kind: 'sessions';
  json: boolean;
}

/** --drop-session PID/CONN | --drop-session --port N [--addr A] [--json]: close one client session (admin socket). */
export interface DropSessionCommand {
  kind: 'drop-session';
  json: boolean;
  lockServer?: number;
  conn?: number;
  port?: number;
  addr?: string;
}

/** --broker: run the broker for preloaded processes (docs/broker.md). */
export interface BrokerCommand {
  kind: 'broker';
}

export type Command =
  | StartCommand | MonitorChildCommand | StopCommand | RemoveCommand | DisplayCommand | HelpCommand
  | ListenerChildCommand | LockServerChildCommand | ClientTestCommand | ShimPathCommand | BrokerCommand
  | SessionsCommand | DropSessionCommand;

export interface UsageError {
  message: string;
}

export type ParseResult = { ok: true; command: Command } | { ok: false; error: UsageError };

export const DEFAULT_TIDY_MINUTES = 5;
/** A year: the header keeps minutes in 32 bits; nobody tidies less often. */
// The header keeps the period in ms as a uint32: 28 days is the most it holds.
export const MAX_TIDY_MINUTES = 40320;
/** 60 ms: below this the monitor would do little but wake up. */
export const MIN_TIDY_MINUTES = 0.001;

/** The internal flag of the background monitor process (not in -h). */
export const MONITOR_CHILD_FLAG = '--monitor-child';
/** The internal flags of the listener and lock-server processes (src/server/listener.ts). */
export const LISTENER_CHILD_FLAG = '--listener';
export const LOCK_SERVER_CHILD_FLAG = '--lock-server';

const ACTIONS = 'ikKd';
const MODIFIERS = 'bAPTDCovL';
const VALUED = 'st';
/** Which modifiers each action accepts (-s and -t count as modifiers). */
const ALLOWED: Record<string, string> = { i: 'bAPTDst', k: 'AD', K: 'o', d: 'vL' };


function fail(message: string): ParseResult {
  return { ok: false, error: { message } };
}

export function parseSize(text: string): Size | string {
  const m = /^(\d+),(\d+)$/.exec(text);
  if (!m) return `-s needs nn,mm (record locks, locks per group), e.g. -s13000,50; got '${text}'`;
  const locks = Number(m[1]);
  const perGroup = Number(m[2]);
  const max = native.constants;
  if (locks < 1 || locks > max.MAX_LOCKS) return `-s: number of locks must be 1..${max.MAX_LOCKS}; got ${m[1]}`;
  const maxPer = Math.min(max.MAX_PER_GROUP, locks);
  if (perGroup < 1 || perGroup > maxPer) return `-s: locks per group must be 1..${maxPer}; got ${m[2]}`;
  return { locks, perGroup };
}

export function parseMinutes(text: string): number | string {
  // Decimals are a jdls extension (jBASE takes whole minutes), so that tests
  // and impatient operators can use short periods: -t0.02 is 1.2 s.
  if (!/^(\d+(\.\d*)?|\.\d+)$/.test(text)) return `-t needs a number of minutes, e.g. -t5 or -t0.5; got '${text}'`;
  const n = Number(text);
  if (!(n >= MIN_TIDY_MINUTES && n <= MAX_TIDY_MINUTES))
    return `-t: minutes must be ${MIN_TIDY_MINUTES}..${MAX_TIDY_MINUTES}; got ${text}`;
  return n;
}

/** `-Cteststring` (or `-C teststring`) alone: the rest of the token is the text, whatever its letters. */
function parseClientTest(argv: readonly string[]): ParseResult | undefined {
  const first = argv[0];
  if (first === undefined || !first.startsWith('-C')) return undefined;
  if (first === '-C' && argv.length === 2) return { ok: true, command: { kind: 'client-test', text: argv[1] ?? '' } };
  if (argv.length > 1) return fail('-C takes its test string and no other options: jdls -Cteststring');
  return { ok: true, command: { kind: 'client-test', text: first.slice(2) } };
}

/** `--drop-session PID/CONN` or `--drop-session --port N [--addr A]`, with --json. */
function parseDropSession(argv: readonly string[]): ParseResult {
  const cmd: DropSessionCommand = { kind: 'drop-session', json: false };
  for (let i = 0; i < argv.length; i++) {
    const tok = argv[i] ?? '';
    if (tok === '--json') cmd.json = true;
    else if (tok === '--port' || tok === '--addr') {
      const v = argv[++i];
      if (v === undefined) return fail(`option ${tok} needs a value`);
      if (tok === '--port') {
        if (!/^\d+$/.test(v) || Number(v) > 0xffffffff) return fail(`--drop-session --port needs a jBASE port number; got '${v}'`);
        cmd.port = Number(v);
      } else {
        if (nodeNet.isIP(v) === 0) return fail(`--addr needs an IP address; got '${v}'`);
        cmd.addr = v;
      }
    } else {
      const m = /^(\d+)\/(\d+)$/.exec(tok);
      if (!m || cmd.lockServer !== undefined) return fail(`--drop-session needs LOCKSERVERPID/CONN (as jdls -dvL shows them) or --port N [--addr A]; got '${tok}'`);
      cmd.lockServer = Number(m[1]);
      cmd.conn = Number(m[2]);
    }
  }
  if (cmd.lockServer === undefined && cmd.port === undefined) return fail('--drop-session needs LOCKSERVERPID/CONN or --port N');
  if (cmd.lockServer !== undefined && (cmd.port !== undefined || cmd.addr !== undefined)) return fail('--drop-session: give LOCKSERVERPID/CONN or --port, not both');
  if (cmd.addr !== undefined && cmd.port === undefined) return fail('--addr goes with --port');
  return { ok: true, command: cmd };
}

/**
 * The dashes a document or word processor puts where `-` was typed: the
 * guide itself prints `jDLS –ibs13000,50` with an en dash (U+2013), and a
 * command copied from it must work as typed. Em dash (U+2014) and the minus
 * sign (U+2212) come from the same kind of copying.
 */
const DASHES = /^[\u2013\u2014\u2212]/;

/** One token with its leading typographic dashes (at most two: `––port`) made `-`; the rest of the token as typed. */
export function normaliseDash(tok: string): string {
  let out = tok;
  if (DASHES.test(out)) out = `-${out.slice(1)}`;
  if (out.startsWith('-') && DASHES.test(out.slice(1))) out = `--${out.slice(2)}`;
  return out;
}

export function parseArgs(typed: readonly string[]): ParseResult {
  // Option tokens only: -C's test string given as the next argument is data,
  // sent to the server exactly as typed.
  const argv = typed.map(normaliseDash);
  if (argv[0] === '-C' && argv.length === 2) argv[1] = typed[1] ?? '';
  if (argv[0] === '--shim-path') {
    return argv.length === 1 ? { ok: true, command: { kind: 'shim-path' } } : fail('--shim-path takes no other options');
  }
  if (argv[0] === '--broker') {
    return argv.length === 1 ? { ok: true, command: { kind: 'broker' } } : fail('--broker takes no other options');
  }
  if (argv[0] === '--sessions') {
    const rest = argv.slice(1);
    if (rest.some((a) => a !== '--json')) return fail('--sessions takes only --json');
    return { ok: true, command: { kind: 'sessions', json: rest.length > 0 } };
  }
  if (argv[0] === '--drop-session') return parseDropSession(argv.slice(1));
  const clientTest = parseClientTest(argv);
  if (clientTest) return clientTest;
  const letters = new Set<string>();
  let json = false;
  let help = false;
  let child = false;
  let sizeText: string | undefined;
  let tidyText: string | undefined;
  let listenerChild = false;
  let lockServerKind: string | undefined;
  const net: { port?: string; bind?: string } = {};

  for (let i = 0; i < argv.length; i++) {
    const tok = argv[i] ?? '';
    if (tok === '--json') json = true;
    else if (tok === '--help') help = true;
    else if (tok === MONITOR_CHILD_FLAG) child = true;
    else if (tok === LISTENER_CHILD_FLAG) listenerChild = true;
    else if (tok === LOCK_SERVER_CHILD_FLAG) {
      lockServerKind = argv[i + 1] ?? '';
      i++;
    } else if (/^--(port|bind)(=|$)/.test(tok)) {
      const name = tok.startsWith('--port') ? 'port' : 'bind';
      let value = tok.includes('=') ? tok.slice(tok.indexOf('=') + 1) : argv[++i];
      if (value === undefined || value === '') return fail(`option --${name} needs a value (${name === 'port' ? 'e.g. --port 50002' : 'e.g. --bind 127.0.0.1'})`);
      if (net[name] !== undefined) return fail(`option --${name} given twice`);
      net[name] = value;
    } else if (tok.startsWith('--')) return fail(`unknown option '${tok}'`);
    else if (tok.startsWith('-') && tok.length > 1) {
      for (let j = 1; j < tok.length; j++) {
        const c = tok[j] ?? '';
        if (VALUED.includes(c)) {
          let value = tok.slice(j + 1);
          if (value === '') {
            const next = argv[i + 1];
            if (next === undefined || (next.startsWith('-') && next.length > 1))
              return fail(c === 's' ? `option -s needs a value nn,mm (e.g. -s13000,50)` : `option -t needs a value in minutes (e.g. -t5)`);
            value = next;
            i++;
          }
          if (c === 's') {
            if (sizeText !== undefined) return fail('option -s given twice');
            sizeText = value;
          } else {
            if (tidyText !== undefined) return fail('option -t given twice');
            tidyText = value;
          }
          break; // the value took the rest of the token
        }
        if (c === 'h') help = true;
        else if (ACTIONS.includes(c) || MODIFIERS.includes(c)) letters.add(c);
        else return fail(`unknown option '-${c}'${tok.length > 2 ? ` in '${tok}'` : ''}`);
      }
    } else return fail(`unexpected argument '${tok}'`);
  }

  // Malformed values first: they are errors whatever the action.
  let size: Size | undefined;
  if (sizeText !== undefined) {
    const s = parseSize(sizeText);
    if (typeof s === 'string') return fail(s);
    size = s;
  }
  let tidyMinutes = DEFAULT_TIDY_MINUTES;
  if (tidyText !== undefined) {
    const t = parseMinutes(tidyText);
    if (typeof t === 'string') return fail(t);
    tidyMinutes = t;
  }

  if (net.port !== undefined && !(/^\d+$/.test(net.port) && Number(net.port) <= 65535))
    return fail(`--port needs a TCP port number 0..65535; got '${net.port}'`);
  if (net.bind !== undefined && nodeNet.isIP(net.bind) === 0)
    return fail(`--bind needs an IP address (e.g. 0.0.0.0, 127.0.0.1, ::); got '${net.bind}'`);

  if (help) return { ok: true, command: { kind: 'help' } };

  if (listenerChild || lockServerKind !== undefined) {
    if (letters.size || sizeText !== undefined || tidyText !== undefined || json || child || (listenerChild && lockServerKind !== undefined))
      return fail('internal server process flags take no other options');
    if (listenerChild) return { ok: true, command: { kind: 'listener-child' } };
    if (lockServerKind !== 'shm' && lockServerKind !== 'os') return fail(`${LOCK_SERVER_CHILD_FLAG} needs shm or os`);
    return { ok: true, command: { kind: 'lock-server-child', mechanism: lockServerKind } };
  }

  if (child) {
    if (letters.size || sizeText !== undefined || json) return fail(`${MONITOR_CHILD_FLAG} takes only -t`);
    return { ok: true, command: { kind: 'monitor-child', tidyMinutes } };
  }

  // -C was taken above when well formed (parseClientTest); here it came with
  // other options.
  if (letters.has('C')) return fail('-C takes its test string and no other options: jdls -Cteststring');
  if (letters.has('A') && letters.has('D')) return fail('options -A (monitor only) and -D (listener only) exclude each other');

  const explicitD = letters.has('d');
  // In jBASE 5.x -L implies -d; --json is a way of displaying too.
  if ((letters.has('L') || json) && !letters.has('i') && !letters.has('k') && !letters.has('K')) letters.add('d');
  const actions = [...ACTIONS].filter((a) => letters.has(a));
  if (actions.length === 0) return fail('no action given: one of -i, -k, -K, -d (or -h)');
  if (actions.length > 1) return fail(`conflicting actions ${actions.map((a) => `-${a}`).join(' and ')}`);
  const action = actions[0] ?? 'd';
  const allowed = ALLOWED[action] ?? '';
  for (const c of letters) {
    if (ACTIONS.includes(c)) continue;
    if (!allowed.includes(c)) return fail(`option -${c} does not apply to -${action}`);
  }
  if (sizeText !== undefined && !allowed.includes('s')) return fail(`option -s does not apply to -${action}`);
  if (tidyText !== undefined && !allowed.includes('t')) return fail(`option -t does not apply to -${action}`);
  if (json && action !== 'd') return fail(`option --json does not apply to -${action}`);
  for (const name of ['port', 'bind'] as const) {
    if (net[name] === undefined) continue;
    if (action !== 'i') return fail(`option --${name} does not apply to -${action}`);
    if (letters.has('A')) return fail(`option --${name} does not apply to -iA (no listener)`);
  }

  switch (action) {
    case 'i': {
      const start: StartCommand = {
        kind: 'start',
        background: letters.has('b'),
        arbiterOnly: letters.has('A'),
        listenerOnly: letters.has('D'),
        portLocks: letters.has('P'),
        timestamps: letters.has('T'),
        tidyMinutes,
        tidyGiven: tidyText !== undefined,
      };
      if (size) start.size = size;
      if (net.port !== undefined) start.port = net.port;
      if (net.bind !== undefined) start.bind = net.bind;
      return { ok: true, command: start };
    }
    case 'k':
      return { ok: true, command: { kind: 'stop', arbiterOnly: letters.has('A'), listenerOnly: letters.has('D') } };
    case 'K':
      return { ok: true, command: { kind: 'remove', force: letters.has('o') } };
    default: {
      // `--json` alone means everything, as -dvL --json.
      const bare = json && !explicitD && !letters.has('v') && !letters.has('L');
      return {
        ok: true,
        command: { kind: 'display', verbose: bare || letters.has('v'), locks: bare || letters.has('L'), json },
      };
    }
  }
}
