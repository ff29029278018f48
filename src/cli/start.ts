// start.ts - `jdls -i[b][A|D][P][T] [-snn,mm] [-tnn] [--port N] [--bind A]`:
// create the lock table and run the monitor and/or the distributed listener,
// in the foreground or as background processes.
//
// Owns: the checks before a start (a live monitor or listener refuses, an
// existing table warns that new sizing is ignored, the listener's settings
// resolve), spawning the background monitor and listener with their log
// files, waiting until they are ready, and, in the foreground, running the
// monitor here with the listener as a supervised child. Does not own: the
// monitor loop (monitor.ts), the listener (src/server/listener.ts) or the
// table (table.ts).
//
//   -ib   monitor, then listener (two background processes, as the guide's
//         ps -ef); the listener finds the monitor alive and uses shm.
//   -ibA  monitor only.   -ibD  listener only (OS file locks unless a
//         monitor already runs).
//   -i    foreground: monitor in this process, listener as a child process;
//         both log to stderr (systemd).
//
// The parent creates the table, so sizing warnings reach the operator's
// terminal; the background child only opens it. Ready means the child has
// published its pid in the header (the last thing monitor.ts does before its
// loop) and is alive.
import fs from 'node:fs';
import path from 'node:path';
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { LockTable, type TableHeader } from '../locks/table.js';
import { createLogger } from '../log.js';
import { MONITOR_CHILD_FLAG, LISTENER_CHILD_FLAG, type StartCommand } from './args.js';
import { loadServerSecrets } from '../server/auth.js';
import { loadConfig, configFromEnv, configToEnv, CONFIG_ENV, type ServerConfig, type DeadlockPolicy } from '../server/config.js';
import { beginEpoch } from '../server/token-epoch.js';
import { C } from '../native.js';

const DEADLOCK_POLICY: Readonly<Record<DeadlockPolicy, number>> = { off: C.DEADLOCK_OFF, report: C.DEADLOCK_REPORT, break: C.DEADLOCK_BREAK };
import { findListener, LISTENER_LOG } from '../server/state.js';
import { runListener } from '../server/listener.js';
import type { Logger } from '../log.js';
import { runMonitor } from './monitor.js';
import { isRunning, waitGone } from './procs.js';
import { osRouteProcesses } from '../installation.js';
import { writeFd } from './display.js';
import { openLog, readTrusted } from '../safefile.js';
import { JdlsError } from '../errors.js';
import { ensureInfoDir } from '../info/tidy.js';

/** How long `jdls -ib` waits for the background monitor to be ready. */
export const READY_WAIT_MS = 10_000;

export const LOG_FILE = 'jdls-monitor.log';

const say = (text: string): void => writeFd(1, `${text}\n`);
const complain = (text: string): void => writeFd(2, `${text}\n`);

const geometry = (h: TableHeader): string => `${h.capacity} locks in ${h.ngroups} groups of ${h.perGroup} locks/group`;
const basis = (port: boolean): string => (port ? 'PORT number based locks (-P)' : 'THREAD id based locks');

function warnExisting(cmd: StartCommand, h: TableHeader): void {
  // The guide: an allocated table's group structure cannot change; lock
  // configuration options on the command line are ignored.
  if (cmd.size)
    complain(`jdls: warning: the lock table exists already (${geometry(h)}); new sizing -s${cmd.size.locks},${cmd.size.perGroup} ignored`);
  if (cmd.portLocks !== h.portLocks)
    complain(`jdls: warning: the existing lock table uses ${basis(h.portLocks)}${cmd.portLocks ? '; -P ignored' : ', which it keeps'}`);
  if (cmd.timestamps !== h.timestamps)
    complain(h.timestamps
      ? 'jdls: warning: the existing lock table time-stamps its locks (-T), which it keeps'
      : 'jdls: warning: the existing lock table has no time stamps; -T ignored');
}

/** Create (or open) the table; refuse if a live monitor runs. undefined: reported, exit 1. */
function prepare(cmd: StartCommand, dir: string, cfg: ServerConfig | undefined): LockTable | undefined {
  let table: LockTable;
  let deadlock: DeadlockPolicy;
  try {
    deadlock = (cfg ?? loadConfig(dir)).deadlock;
  } catch (e) {
    complain(`jdls: ${(e as Error).message}`);
    return undefined;
  }
  try {
    table = LockTable.create({
      releaseDir: dir,
      ...(cmd.size ? { locks: cmd.size.locks, perGroup: cmd.size.perGroup } : {}),
      portLocks: cmd.portLocks,
      timestamps: cmd.timestamps,
      inService: false,
    });
  } catch (e) {
    complain(`jdls: cannot create the lock table for JBCRELEASEDIR=${dir}: ${(e as Error).message}`);
    return undefined;
  }
  const h = table.header();
  if (isRunning(h.monitorPid, h.monitorStart)) {
    table.close();
    complain(`jdls: lock monitor already running at pid ${h.monitorPid}`);
    return undefined;
  }
  if (table.existed) warnExisting(cmd, h);
  try {
    // Before the table is in service, so no grant of the new table has an
    // old epoch (docs/fencing.md).
    if (!table.existed) beginEpoch(table, dir);
    table.setDeadlockPolicy(DEADLOCK_POLICY[deadlock]);
  } catch (e) {
    complain(`jdls: cannot prepare the lock table: ${(e as Error).message}`);
    if (!table.existed) table.remove();
    else table.close();
    return undefined;
  }
  if (!enterService(table)) return undefined;
  return table;
}

/** How long `jdls -ib` waits for processes that lock records as OS file locks to end. */
export const SERVICE_WAIT_MS = 10_000;

/**
 * Make the table the installation's record-lock mechanism. Processes that
 * took record locks as OS file locks (no table was in service when they
 * started locking) keep it from entering service while they live: a table
 * beside their locks would grant the same records again. Wait a while for
 * them, naming them; then give up (a table this call made is removed).
 */
function enterService(table: LockTable): boolean {
  const until = Date.now() + (Number(process.env['JDLS_SERVICE_WAIT_MS']) || SERVICE_WAIT_MS);
  let told = false;
  for (;;) {
    if (table.enterService()) return true;
    const users = osRouteProcesses(table.path);
    if (Date.now() >= until) {
      const list = users.map((p) => `  ${p.pid} ${p.command.slice(0, 120)}`).join('\n');
      complain(
        `jdls: the lock table cannot be put in service: ${users.length || 'some'} process${users.length === 1 ? '' : 'es'} of this installation lock records as OS file locks` +
          ` (they started locking before a table was in service); stop them and start again${list ? `:\n${list}` : ''}`,
      );
      if (!table.existed) table.remove();
      else table.close();
      return false;
    }
    if (!told) {
      complain(`jdls: waiting for ${users.length || 'some'} process${users.length === 1 ? '' : 'es'} that lock records as OS file locks to end (${users.map((p) => p.pid).join(', ')})`);
      told = true;
    }
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 50);
  }
}

export const MONITOR_TITLE = 'jdls -ib (lock monitor)';

export async function start(cmd: StartCommand, dir: string): Promise<number> {
  const wantListener = !cmd.arbiterOnly;
  // The info directory (docs/info-records.md): made by whichever part starts; writers that find none write nothing.
  try {
    ensureInfoDir(dir);
  } catch (e) {
    complain(`jdls: warning: no info records: cannot make ${path.join(dir, 'proc', 'info')}: ${(e as Error).message}`);
  }
  let cfg: ServerConfig | undefined;
  if (wantListener) {
    try {
      cfg = loadConfig(dir, { ...(cmd.port !== undefined ? { port: cmd.port } : {}), ...(cmd.bind !== undefined ? { bind: cmd.bind } : {}) });
      loadServerSecrets(cfg, dir); // a bad key or TLS file fails here, on the operator's terminal
    } catch (e) {
      complain(`jdls: ${(e as Error).message}`);
      return 1;
    }
    const l = findListener(dir);
    if (l) {
      complain(`jdls: lock listener already running at pid ${l.pid} (${l.addr} port ${l.port})`);
      return 1;
    }
  }
  if (cmd.listenerOnly && cfg) {
    if (cmd.size || cmd.tidyGiven || cmd.portLocks || cmd.timestamps)
      complain('jdls: warning: -s, -t, -P and -T configure the lock monitor and its table; ignored with -D');
    if (cmd.background) return startListenerBackground(dir, cfg);
    return runListener({ releaseDir: dir, cfg, log: createLogger({ name: 'listener' }) });
  }
  const table = prepare(cmd, dir, cfg);
  if (!table) return 1;
  if (!cmd.background) return foreground(cmd, dir, table, cfg);
  let rc: number;
  try {
    rc = await startBackground(cmd, dir, table);
  } catch (e) {
    table.close();
    throw e;
  }
  if (rc !== 0 || !cfg) {
    table.close();
    return rc;
  }
  // -ib is all or nothing (issue 14): a listener that cannot start (its port
  // taken, its address not local, ...) takes the monitor just started down
  // with it, and a table this command made, so nothing is left that looks
  // like a running service.
  const listenerRc = await startListenerBackground(dir, cfg);
  if (listenerRc !== 0) await undoMonitor(dir, table);
  else table.close();
  return listenerRc;
}

/**
 * Undo the monitor half of a failed -ib: stop the monitor this command
 * started (SIGTERM, as -k; SIGKILL if it does not go), then remove the table
 * if this command created it; a table that existed before is left as it was
 * (in service, without a monitor, as before: prepare() refused a live one).
 * Closes `table`.
 */
async function undoMonitor(dir: string, table: LockTable): Promise<void> {
  const h = table.header();
  const pid = h.monitorPid;
  let stopped = true;
  if (pid > 0 && isRunning(pid, h.monitorStart)) {
    try {
      process.kill(pid, 'SIGTERM');
    } catch {
      /* gone */
    }
    stopped = await waitGone(pid, h.monitorStart, STOP_MONITOR_MS);
    if (!stopped) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* gone meanwhile */
      }
      stopped = await waitGone(pid, h.monitorStart, 2_000);
    }
  }
  if (!stopped) {
    table.close();
    complain(`jdls: the lock monitor at pid ${pid} did not stop; stop it with jdls -k`);
    return;
  }
  if (table.existed) {
    table.close();
    complain(`jdls: lock monitor at pid ${pid} stopped again: nothing of the service was started (the existing lock table is left as it was)`);
  } else {
    table.remove();
    complain(`jdls: lock monitor at pid ${pid} stopped again and the new lock table removed: nothing of the service was started`);
  }
}

/** How long undoing a failed -ib waits for its monitor after SIGTERM. */
const STOP_MONITOR_MS = 5_000;

/** The internal `--listener` process: run the listener with the settings its parent resolved. */
export async function listenerChild(dir: string): Promise<number> {
  const log = createLogger({ name: 'listener' });
  let cfg: ServerConfig;
  try {
    cfg = configFromEnv() ?? loadConfig(dir);
  } catch (e) {
    log.error({ err: e }, `lock listener cannot start: ${(e as Error).message}`);
    return 1;
  }
  return runListener({ releaseDir: dir, cfg, log });
}

/**
 * `jdls -i` (foreground): the monitor runs here, the listener as a child
 * process whose stderr is ours. A listener that dies (not one stopped with
 * jdls -kD, which exits 0) is restarted after a second, a few times.
 */
async function foreground(cmd: StartCommand, dir: string, table: LockTable, cfg: ServerConfig | undefined): Promise<number> {
  const log = createLogger({ name: 'monitor' });
  const monitor = runMonitor({ table, tidyMinutes: cmd.tidyMinutes, log });
  if (!cfg || !claimedMonitor(dir)) return monitor;
  const sup = superviseListener(dir, cfg, log);
  const code = await monitor;
  await sup.stop();
  return code;
}

function claimedMonitor(dir: string): boolean {
  try {
    const t = LockTable.open({ releaseDir: dir });
    try {
      return t.header().monitorPid === process.pid;
    } finally {
      t.close();
    }
  } catch {
    return false;
  }
}

/** Restarts allowed per minute before the supervisor gives up on the listener. */
const MAX_RESTARTS = 5;

function superviseListener(dir: string, cfg: ServerConfig, log: Logger): { stop: () => Promise<void> } {
  const script = fileURLToPath(new URL('./jdls.js', import.meta.url));
  let child: ChildProcess | undefined;
  let stopping = false;
  let restarts: number[] = [];
  let timer: NodeJS.Timeout | undefined;
  const run = (): void => {
    const c = spawn(process.execPath, [script, LISTENER_CHILD_FLAG], {
      stdio: ['ignore', 'inherit', 'inherit'],
      env: { ...process.env, JBCRELEASEDIR: dir, [CONFIG_ENV]: configToEnv(cfg) },
    });
    child = c;
    c.on('error', (e) => log.error({ err: e }, 'could not run the lock listener'));
    c.on('exit', (code, sig) => {
      child = undefined;
      if (stopping) return;
      if (code === 0) {
        log.info('lock listener stopped (jdls -kD); start it again with jdls -ibD');
        return;
      }
      const now = Date.now();
      restarts = restarts.filter((t) => now - t < 60_000);
      if (restarts.length >= MAX_RESTARTS) {
        log.error({ code, signal: sig }, `lock listener ended (${sig ?? code}) ${MAX_RESTARTS} times in a minute; not restarting it`);
        return;
      }
      restarts.push(now);
      log.error({ code, signal: sig }, `lock listener ended (${sig ?? `exit code ${code}`}); restarting it in 1 s`);
      timer = setTimeout(() => {
        timer = undefined;
        if (!stopping && !findListener(dir)) run();
      }, 1000);
    });
  };
  run();
  return {
    stop: async () => {
      stopping = true;
      if (timer) clearTimeout(timer);
      const c = child;
      if (!c || c.exitCode !== null || c.signalCode !== null) return;
      const gone = new Promise<void>((r) => c.once('exit', () => r()));
      c.kill('SIGTERM');
      const t = setTimeout(() => c.kill('SIGKILL'), 5000);
      await gone;
      clearTimeout(t);
    },
  };
}

interface Daemon {
  /** 'monitor' or 'listener', for messages */
  what: string;
  logPath: string;
  args: string[];
  env: NodeJS.ProcessEnv;
  /** The line to print once the child is ready, or undefined while it is not. */
  ready(pid: number): string | undefined;
}

/**
 * Start a background process (the monitor or the listener): detached, in its
 * own session so the terminal's SIGHUP/SIGINT do not reach it, stdout and
 * stderr (pino) to its log file. Returns 0 once `ready` says so; otherwise
 * kills it (ours, by pid: never left half-started), prints why and its log.
 */
async function startDaemon(d: Daemon): Promise<number> {
  let fd: number;
  let logStart: number;
  try {
    // No mkdir: the installation directory was checked (and made) before
    // any command ran (jdls.ts). openLog: O_NOFOLLOW, 0640, our own file.
    fd = openLog(d.logPath);
    logStart = fs.fstatSync(fd).size;
  } catch (e) {
    // An UNTRUSTED error names the file itself.
    complain(`jdls: cannot open the ${d.what} log${e instanceof JdlsError ? '' : ` ${d.logPath}`}: ${(e as Error).message}`);
    return 1;
  }
  const script = fileURLToPath(new URL('./jdls.js', import.meta.url));
  let exited: string | undefined;
  const child = spawn(process.execPath, [script, ...d.args], { detached: true, stdio: ['ignore', fd, fd], env: d.env });
  fs.closeSync(fd);
  child.on('error', (e) => (exited = `could not be run: ${e.message}`));
  child.on('exit', (code, sig) => (exited = sig ? `was killed by ${sig}` : `exited with code ${code}`));
  child.unref();
  const deadline = Date.now() + READY_WAIT_MS;
  while (Date.now() < deadline && exited === undefined) {
    const line = child.pid ? d.ready(child.pid) : undefined;
    if (line) {
      say(line);
      return 0;
    }
    await new Promise((r) => setTimeout(r, 25));
  }
  if (exited === undefined) {
    exited = `was not ready within ${READY_WAIT_MS / 1000} s`;
    if (child.pid) {
      try {
        process.kill(child.pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
  }
  complain(`jdls: the lock ${d.what} failed to start: it ${exited}`);
  for (const l of logTail(d.logPath, logStart, child.pid)) complain(`  ${l}`);
  return 1;
}

/** `-ib`/`-ibD`: the listener as a background process; ready when its pid file names it. */
function startListenerBackground(dir: string, cfg: ServerConfig): Promise<number> {
  const logPath = path.join(dir, LISTENER_LOG);
  return startDaemon({
    what: 'listener',
    logPath,
    args: [LISTENER_CHILD_FLAG],
    env: { ...process.env, JBCRELEASEDIR: dir, [CONFIG_ENV]: configToEnv(cfg) },
    ready: (pid) => {
      const l = findListener(dir);
      return l?.pid === pid && l.port !== 0
        ? `jdls: lock listener started at pid ${l.pid} on ${l.addr} port ${l.port}, ${l.mechanism === 'shm' ? 'shared memory locks' : 'OS file locks'} (log: ${logPath})`
        : undefined;
    },
  });
}

/** The internal `--monitor-child` process: open the table its parent made, run. */
export async function monitorChild(tidyMinutes: number, dir: string): Promise<number> {
  process.title = MONITOR_TITLE;
  const log = createLogger({ name: 'monitor' });
  let table: LockTable;
  try {
    table = LockTable.open({ releaseDir: dir });
  } catch (e) {
    log.error({ err: e }, `cannot open the lock table: ${(e as Error).message}`);
    return 1;
  }
  return runMonitor({ table, tidyMinutes, log });
}

/** `-ib`/`-ibA`: the monitor as a background process; ready when the header names it. */
function startBackground(cmd: StartCommand, dir: string, table: LockTable): Promise<number> {
  const logPath = path.join(dir, LOG_FILE);
  return startDaemon({
    what: 'monitor',
    logPath,
    args: [MONITOR_CHILD_FLAG, `-t${cmd.tidyMinutes}`],
    env: { ...process.env, JBCRELEASEDIR: dir },
    ready: (pid) => {
      const h = table.header();
      return h.monitorPid === pid && isRunning(pid, h.monitorStart) ? `jdls: lock monitor started at pid ${pid} (log: ${logPath})` : undefined;
    },
  });
}

/**
 * What the child logged since `from`: its pino messages, or raw lines (a
 * crash). The log file is shared, so other monitors' lines are skipped.
 */
function logTail(file: string, from: number, pid: number | undefined): string[] {
  let text: string;
  try {
    text = Buffer.from(readTrusted(file) ?? '').subarray(from).toString('utf8');
  } catch {
    return [];
  }
  return text
    .split('\n')
    .filter(Boolean)
    .flatMap((l) => {
      try {
        const o = JSON.parse(l) as { msg?: unknown; pid?: unknown };
        if (o.pid !== pid) return [];
        return [typeof o.msg === 'string' ? o.msg : l];
      } catch {
        return [l];
      }
    })
    .slice(-10);
}
