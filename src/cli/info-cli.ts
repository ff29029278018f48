// info-cli.ts - what show-item-locks and list-open-files share: their
// options, where the information comes from, and running one of them.
//
// Owns: parsing the utilities' command lines, the source rule (guide,
// "SHOW-ITEM-LOCKS": the info directory when the service is deemed active on
// this host, the lock server over the protocol when JDLS is set), fetching
// the InfoAnswer, the error messages and exit codes. Does not own: the rows
// and their text (src/info/view.ts), reading the directory (reader.ts), the
// wire (JdlsClient.queryInfo).
//
// Source rule, in order: --local or --server if given; JDLS set -> the
// server it names (SERVER, then SERVER2 on failure; its TIMEOUT, SECRET and
// TLS, exactly as any library client); else the info directory of
// JBCRELEASEDIR when the service is deemed active here (a live listener or
// monitor, as `jdls -dvL` decides) or the directory exists; else an error.
//
// Why JDLS wins over a local service: the guide's port 4 - a process on the
// server's own host with JDLS set - takes its locks through the server, and
// the server's answer is the whole picture (the same directory, read by the
// lock-server process, which the service's group may not be needed for).
//
// Not checkReleaseDir: that check is for jdls processes that write into the
// installation (owned by root or by the user running jdls). These utilities
// only read, and are run by the service's group members, who do not own the
// directory; the reader opens no link and no special file (reader.ts).
import fs from 'node:fs';
import os from 'node:os';
import { JdlsError } from '../errors.js';
import { releaseDir } from '../installation.js';
import { infoDir } from '../info/format.js';
import { readInfoDir, type InfoAnswer, type InfoFilter, type SkippedFile } from '../info/reader.js';
import { parseJdls, hostText, type JdlsConfig } from '../client/jdls-env.js';
import { JdlsClient } from '../client/client.js';
import { findListener } from '../server/state.js';
import { LockTable } from '../locks/table.js';
import { isRunning } from './procs.js';
import { describeUid } from '../safefile.js';
import { writeFd, PipeClosed } from './display.js';
import { duplicateWarning, type DuplicateView } from '../info/view.js';

// ===== options ===============================================================

export interface InfoOptions {
  filter: InfoFilter;
  json: boolean;
  /** --local / --server: force the source */
  force?: 'local' | 'server';
  help: boolean;
}

/** What a utility accepts: list-open-files has no -k (files have no keys). */
export interface UtilitySpec {
  name: string;
  keyFilter: boolean;
}

/** A usage error (exit 2, as jdls: nothing was done). */
export class UsageError extends Error {}

/**
 * Parse the command line. Options: -p/--port N, -f/--file NAME, -k/--key KEY
 * (value attached, -p5, or next, -p 5, or --port=5), --json, --local,
 * --server, -h/--help. An en dash (U+2013), as copied from the guide,
 * counts as '-'.
 */
export function parseInfoArgs(spec: UtilitySpec, argv: readonly string[]): InfoOptions {
  const o: InfoOptions = { filter: {}, json: false, help: false };
  const args = argv.map((a) => a.replace(/^\u2013\u2013?/, (m) => '-'.repeat(m.length)));
  const setForce = (f: 'local' | 'server'): void => {
    if (o.force && o.force !== f) throw new UsageError('--local and --server exclude each other');
    o.force = f;
  };
  for (let i = 0; i < args.length; i++) {
    const a = args[i] ?? '';
    const value = (long: string): string => {
      const eq = a.indexOf('=');
      if (a.startsWith('--') && eq > 0) return a.slice(eq + 1);
      if (!a.startsWith('--') && a.length > 2) return a.slice(2);
      const v = args[++i];
      if (v === undefined) throw new UsageError(`${long} needs a value`);
      return v;
    };
    const name = a.startsWith('--') ? a.split('=')[0] : a.slice(0, 2);
    switch (name) {
      case '-h':
      case '--help':
        o.help = true;
        break;
      case '--json':
        o.json = true;
        break;
      case '--local':
        setForce('local');
        break;
      case '--server':
        setForce('server');
        break;
      case '-p':
      case '--port': {
        const v = value('--port');
        if (!/^\d{1,9}$/.test(v)) throw new UsageError(`--port: '${v}' is not a port number`);
        o.filter.port = Number(v);
        break;
      }
      case '-f':
      case '--file': {
        const v = value('--file');
        if (v === '') throw new UsageError('--file needs a file name');
        o.filter.file = v;
        break;
      }
      case '-k':
      case '--key':
        if (!spec.keyFilter) throw new UsageError(`${name} is not an option of ${spec.name} (files have no keys)`);
        o.filter.key = value('--key');
        break;
      default:
        throw new UsageError(`unknown option '${a}'`);
    }
  }
  return o;
}

// ===== the source ============================================================

export type InfoSource = { kind: 'local'; dir: string } | { kind: 'server'; config: JdlsConfig };

/** Is the service deemed active on this host: a live listener (pid file or header) or a live monitor (table header)? As `jdls -dvL` decides. */
export function serviceActive(dir: string): boolean {
  if (findListener(dir)) return true;
  let table: LockTable;
  try {
    table = LockTable.open({ releaseDir: dir });
  } catch {
    return false; // no table, or not ours to open
  }
  try {
    const h = table.header();
    return isRunning(h.monitorPid, h.monitorStart);
  } finally {
    table.close();
  }
}

const exists = (p: string): boolean => {
  try {
    fs.statSync(p);
    return true;
  } catch (e) {
    // A directory we may not search exists: the read then says who may.
    return (e as NodeJS.ErrnoException).code === 'EACCES';
  }
};

/** Where the information comes from (the rule in the file header). Throws JdlsError NOT_RUNNING when there is nowhere to ask. */
export function chooseSource(force: 'local' | 'server' | undefined, env: NodeJS.ProcessEnv = process.env): InfoSource {
  const raw = env['JDLS'];
  if (force === 'server' || (force === undefined && raw !== undefined)) {
    if (raw === undefined) throw new JdlsError('USAGE', '--server: JDLS is not set (e.g. JDLS=SERVER=10.44.1.56,50002)');
    return { kind: 'server', config: parseJdls(raw) };
  }
  const dir = releaseDir(env);
  // The directory first: no need to map the table when it is there.
  if (exists(infoDir(dir)) || serviceActive(dir)) return { kind: 'local', dir };
  throw new JdlsError(
    'NOT_RUNNING',
    force === 'local'
      ? `no jdls service on this host: ${infoDir(dir)} does not exist and no monitor or listener runs for ${dir} (JBCRELEASEDIR)`
      : `no jdls service on this host and JDLS is not set (the info directory ${infoDir(dir)} does not exist; set JDLS=SERVER=host,port to ask a lock server)`,
  );
}

function groupName(gid: number): string {
  try {
    for (const l of fs.readFileSync('/etc/group', 'utf8').split('\n')) {
      const f = l.split(':');
      if (f[2] === String(gid) && f[0]) return `gid ${gid} (${f[0]})`;
    }
  } catch {
    /* no group file: the number alone */
  }
  return `gid ${gid}`;
}

/** "cannot read ...: permission denied; only root, the owner and the group may read it", naming them from the nearest path we may stat. */
function permissionError(dir: string, releaseDirPath: string, e: Error): JdlsError {
  let who = '';
  for (const p of [dir, releaseDirPath]) {
    try {
      const st = fs.statSync(p);
      who = `; only root, the installation's owner (${describeUid(st.uid)}) and members of its group (${groupName(st.gid)}) may read it`;
      break;
    } catch {
      /* try the next */
    }
  }
  return new JdlsError('PERMISSION', `cannot read ${dir}: permission denied${who} (or set JDLS to ask the lock server)`, { cause: e });
}

/** The info directory read here, with this host's name. */
export function localAnswer(dir: string): InfoAnswer {
  try {
    // The whole directory, unfiltered: the view filters rows, and the waiter column needs every record.
    return { ...readInfoDir(dir), host: os.hostname() };
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'EACCES' || code === 'EPERM') throw permissionError(infoDir(dir), dir, e as Error);
    throw e;
  }
}

/** What the lock server answers, and which server it was. */
export interface ServerAnswer {
  answer: InfoAnswer;
  server: string;
  serverPid: number;
}


/**
 * Ask the lock server JDLS names. Only the key filter goes on the wire: the
 * server then sends the records that hold or wait for that key - waiters
 * included - while port and file are applied to rows here (a port filter on
 * the wire would drop the other ports' waiters from the waiter column).
 */
export async function serverAnswer(config: JdlsConfig, program: string, filter: InfoFilter): Promise<ServerAnswer> {
  let client: JdlsClient;
  try {
    client = await JdlsClient.connect(config, { program });
  } catch (e) {
    const s = config.servers.map((x) => `${hostText(x.host)},${x.port}`).join(' or ');
    throw new JdlsError('CONNECT_FAILED', `cannot reach the lock server at ${s} (JDLS=${config.raw}): ${(e as Error).message}`, { cause: e });
  }
  try {
    const where = `${hostText(client.server.host)},${client.server.port}`;
    const wire: InfoFilter = filter.key === undefined ? {} : { key: filter.key };
    let answer: InfoAnswer;
    try {
      answer = await client.queryInfo(wire);
    } catch (e) {
      throw new JdlsError(e instanceof JdlsError ? e.code : 'SYSTEM', `the lock server at ${where} did not answer the info query: ${(e as Error).message}`, { cause: e });
    }
    return { answer, server: where, serverPid: client.server.pid };
  } finally {
    await client.close();
  }
}

// ===== running a utility =====================================================

export type Fetched = { source: 'local'; answer: InfoAnswer } | { source: 'server'; answer: InfoAnswer; server: string; serverPid: number };

/** What both utilities add to their view: where the answer came from, the duplicate-port warnings and the skipped-file notes (for stderr). */
export function answerContext(f: Fetched, v: { dir: string; duplicates: DuplicateView[]; skipped: SkippedFile[] }): { source: object; warnings: string[]; stderr: string[] } {
  const source = f.source === 'local' ? { kind: 'local' } : { kind: 'server', server: f.server, serverPid: f.serverPid };
  const warnings = v.duplicates.map(duplicateWarning);
  const notes = v.skipped.map((s) => `note: ${v.dir}/${s.file} skipped: ${s.why}`);
  return { source, warnings, stderr: [...warnings, ...notes] };
}

export interface Utility extends UtilitySpec {
  help(): string;
  /** the text and JSON of the answer under the options, and the warnings for stderr */
  render(f: Fetched, o: InfoOptions): { text: string; json: unknown; warnings: string[] };
}

/** Run a utility: its exit code (0 shown, 1 failed, 2 usage error). Writes stdout/stderr synchronously. */
export async function runUtility(u: Utility, argv: readonly string[], env: NodeJS.ProcessEnv = process.env): Promise<number> {
  let o: InfoOptions;
  try {
    o = parseInfoArgs(u, argv);
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    writeFd(2, `${u.name}: ${e.message}\ntry ${u.name} -h\n`);
    return 2;
  }
  try {
    if (o.help) {
      writeFd(1, u.help());
      return 0;
    }
    const src = chooseSource(o.force, env);
    const f: Fetched =
      src.kind === 'local'
        ? { source: 'local', answer: localAnswer(src.dir) }
        : { source: 'server', ...(await serverAnswer(src.config, u.name, o.filter)) };
    const out = u.render(f, o);
    writeFd(1, o.json ? `${JSON.stringify(out.json, null, 2)}\n` : out.text);
    for (const w of out.warnings) writeFd(2, `${u.name}: ${w}\n`);
    return 0;
  } catch (e) {
    if (e instanceof PipeClosed) return 0;
    try {
      writeFd(2, `${u.name}: ${(e as Error).message}\n`);
    } catch {
      /* stderr gone too */
    }
    return 1;
  }
}

/** The entry point's tail: exit with the code once output is written (as jdls.ts). */
export function main(u: Utility): void {
  runUtility(u, process.argv.slice(2)).then(
    (code) => process.exit(code),
    () => process.exit(1),
  );
}
