// admin.ts - the operator's controls: the listener's admin socket
// JBCRELEASEDIR/jdls-admin.sock, and the client the CLI uses to reach it.
//
// Owns: the socket (made safely, 0600, removed at exit), who may use it
// (the kernel's SO_PEERCRED: root or the installation's owner, nobody
// else), the JSON-lines requests (sessions, drop, release: admin-types.ts)
// and their answers, asking every lock-server process of the listener over
// its IPC channel (bounded wait; a silent one is named), releasing the
// locks of local direct processes in the table, resolving a file name
// through the info records, and the warn-level log line of every drop and
// release (who, what, how many). Does not own: the sessions themselves
// (session.ts adminView/adminRelease/adminDrop), the IPC channel
// (listener.ts, lockserver.ts) or the display (src/cli/display.ts).
//
// Fencing: a release frees the entry like an unlock; tokens come from one
// counter per table (and one per installation for OS locks) that only
// rises, so the key's next grant carries a higher token than the released
// holder's - a fenced resource refuses the old holder's writes
// (docs/fencing.md, test/admin.test.ts).
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { native } from '../native.js';
import { socketFd } from '../broker/handover.js';
import { describeUid } from '../safefile.js';
import { JdlsError } from '../errors.js';
import type { Logger } from '../log.js';
import type { MechanismKind } from '../locks/mechanism.js';
import { LockTable, fileId, makeOwner, type LockRow } from '../locks/table.js';
import { C } from '../native.js';
import { readInfoDir } from '../info/reader.js';
import { RateLog } from './ratelog.js';
import {
  checkAdminRequest, type AdminAnswer, type AdminRequest, type AdminWorkerReply, type AdminWorkerRequest,
  type ReleaseAnswer, type ReleasedLock, type ReleaseTarget, type SessionView, type SilentLockServer,
} from './admin-types.js';

export const ADMIN_SOCKET = 'jdls-admin.sock';
export const adminSocketPath = (releaseDir: string): string => path.join(releaseDir, ADMIN_SOCKET);
/** How long the listener waits for a lock-server process's answer before naming it silent. */
export const ADMIN_ASK_MS = 3_000;
/** A request line longer than this is not one (the connection is closed). */
const MAX_LINE = 64 * 1024;
/** An admin connection idle this long is closed. */
const IDLE_MS = 60_000;
const REFUSALS_PER_SECOND = 10;

/** One lock-server process, as the listener lets the admin socket ask it. */
export interface AdminWorker {
  pid: number;
  /** resolves with the answer; rejects (Error with the reason) when it does not answer in time */
  ask(req: AdminWorkerRequest, timeoutMs: number): Promise<AdminWorkerReply>;
}

export interface AdminServerOptions {
  releaseDir: string;
  log: Logger;
  /** the listener's record-lock mechanism */
  mechanism: MechanismKind;
  workers: () => AdminWorker[];
  /** default: the owner of releaseDir */
  ownerUid?: number;
  askMs?: number;
}

export interface AdminServer {
  path: string;
  /** stop serving and remove the socket (only if it is still ours) */
  close(): void;
}

/** Who may use the socket: root and the installation's owner. */
export function adminAllowed(uid: number, ownerUid: number): boolean {
  return uid === 0 || uid === ownerUid;
}

/**
 * Make way for the socket: nothing there, or a socket nobody answers on (a
 * dead listener's) which is removed. Anything else - a planted link, a
 * file, a live socket - is left alone and refused (the reason returned).
 */
async function clearWay(p: string): Promise<string | undefined> {
  let st: fs.Stats;
  try {
    st = fs.lstatSync(p);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    return `cannot look at ${p}: ${(e as Error).message}`;
  }
  if (!st.isSocket()) return `${p} exists and is not a socket (${st.isSymbolicLink() ? 'a symbolic link' : 'a file'}): left alone`;
  const live = await new Promise<boolean>((resolve) => {
    const c = net.connect(p);
    c.once('connect', () => {
      c.destroy();
      resolve(true);
    });
    c.once('error', () => resolve(false));
  });
  if (live) return `another process serves ${p}`;
  try {
    fs.unlinkSync(p);
  } catch (e) {
    return `cannot remove the stale socket ${p}: ${(e as Error).message}`;
  }
  return undefined;
}

/** Start the admin socket; undefined (logged) when it cannot be made - the listener serves on without it. */
export async function startAdminServer(opts: AdminServerOptions): Promise<AdminServer | undefined> {
  const { releaseDir, log } = opts;
  const p = adminSocketPath(releaseDir);
  const ownerUid = opts.ownerUid ?? fs.statSync(releaseDir).uid;
  const why = await clearWay(p);
  if (why) {
    log.error({ socket: p }, `no admin socket (jdls -dvL cannot list client sessions; drop and release are unavailable): ${why}`);
    return undefined;
  }
  // Refusals at most REFUSALS_PER_SECOND log lines a second: a local user
  // hammering the socket (were its mode opened) must not flood the log.
  const refusals = new RateLog(() => log, REFUSALS_PER_SECOND);
  const server = net.createServer((sock) => serveConnection(sock, { ...opts, ownerUid, refusals }));
  // 0600 from the start: the umask while it binds, then chmod. (The peer
  // check is the guard; the mode keeps others from even connecting.)
  const old = process.umask(0o177);
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(p, () => {
        server.off('error', reject);
        resolve();
      });
    });
  } catch (e) {
    log.error({ socket: p, err: e }, `no admin socket: ${(e as Error).message}`);
    return undefined;
  } finally {
    process.umask(old);
  }
  let ino = 0;
  try {
    fs.chmodSync(p, 0o600);
    ino = fs.lstatSync(p).ino;
  } catch {
    /* the mode is a second guard */
  }
  server.on('error', (e) => log.warn({ err: e }, 'admin socket error'));
  server.unref();
  return {
    path: p,
    close: () => {
      server.close();
      try {
        if (fs.lstatSync(p).ino === ino) fs.unlinkSync(p);
      } catch {
        /* gone already */
      }
    },
  };
}

function serveConnection(sock: net.Socket, opts: AdminServerOptions & { ownerUid: number; refusals: RateLog }): void {
  const { log } = opts;
  sock.on('error', () => undefined);
  const uid = native.fdpass.peerUid(socketFd(sock));
  if (uid < 0 || !adminAllowed(uid, opts.ownerUid)) {
    const who = uid < 0 ? 'a peer whose uid could not be read' : describeUid(uid);
    opts.refusals.write('warn', { peerUid: uid }, `admin socket: ${who} refused (only root and the installation's owner, ${describeUid(opts.ownerUid)}, may use it)`);
    sock.end(`${JSON.stringify({ ok: false, error: `refused: only root and the installation's owner (${describeUid(opts.ownerUid)}) may use the admin socket; you are ${who}` })}\n`);
    return;
  }
  const by = describeUid(uid);
  sock.setTimeout(IDLE_MS, () => sock.destroy());
  let buf = '';
  let busy: Promise<void> = Promise.resolve();
  sock.setEncoding('utf8');
  sock.on('data', (chunk: string) => {
    buf += chunk;
    if (buf.length > MAX_LINE && !buf.includes('\n')) {
      sock.end(`${JSON.stringify({ ok: false, error: `a request line longer than ${MAX_LINE} bytes` })}\n`);
      buf = '';
      return;
    }
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const text = buf.slice(0, nl).trim();
      buf = buf.slice(nl + 1);
      if (!text) continue;
      // One request, one answer, in order.
      busy = busy.then(async () => {
        const answer = await handleLine(text, by, opts);
        if (!sock.destroyed) sock.write(`${JSON.stringify(answer)}\n`);
      });
    }
  });
}

async function handleLine(text: string, by: string, opts: AdminServerOptions & { ownerUid: number }): Promise<AdminAnswer> {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    return { ok: false, error: `not JSON: ${(e as Error).message}` };
  }
  const req = checkAdminRequest(v);
  if (typeof req === 'string') return { ok: false, error: req };
  try {
    return await handleRequest(req, by, opts);
  } catch (e) {
    opts.log.error({ err: e, cmd: req.cmd }, 'admin request failed');
    return { ok: false, error: (e as Error).message };
  }
}

/** Ask every lock-server process; answers and the silent ones. */
async function askAll(opts: AdminServerOptions, req: AdminWorkerRequest, only?: number): Promise<{ replies: { pid: number; reply: AdminWorkerReply }[]; silent: SilentLockServer[] }> {
  const ws = opts.workers().filter((w) => only === undefined || w.pid === only);
  const ms = opts.askMs ?? ADMIN_ASK_MS;
  const settled = await Promise.allSettled(ws.map((w) => w.ask(req, ms)));
  const replies: { pid: number; reply: AdminWorkerReply }[] = [];
  const silent: SilentLockServer[] = [];
  settled.forEach((s, i) => {
    const pid = ws[i]?.pid ?? 0;
    if (s.status === 'fulfilled') {
      if (s.value.cmd === 'error') silent.push({ lockServer: pid, why: `failed: ${s.value.error}` });
      else replies.push({ pid, reply: s.value });
    } else silent.push({ lockServer: pid, why: (s.reason as Error).message });
  });
  return { replies, silent };
}

const bySession = (a: SessionView, b: SessionView): number => a.lockServer - b.lockServer || a.conn - b.conn;

async function sessionsOf(opts: AdminServerOptions): Promise<{ sessions: SessionView[]; silent: SilentLockServer[] }> {
  const { replies, silent } = await askAll(opts, { cmd: 'sessions' });
  const sessions = replies.flatMap((r) => (r.reply.cmd === 'sessions' ? r.reply.sessions : [])).sort(bySession);
  return { sessions, silent };
}

async function handleRequest(req: AdminRequest, by: string, opts: AdminServerOptions): Promise<AdminAnswer> {
  const { log } = opts;
  switch (req.cmd) {
    case 'sessions': {
      const { sessions, silent } = await sessionsOf(opts);
      return { ok: true, cmd: 'sessions', sessions, silent };
    }
    case 'drop': {
      let targets: { lockServer: number; conn: number }[];
      let silent: SilentLockServer[] = [];
      if (req.lockServer !== undefined && req.conn !== undefined) {
        if (!opts.workers().some((w) => w.pid === req.lockServer))
          return { ok: false, error: `pid ${req.lockServer} is not a lock-server process of this listener (jdls -dvL lists them)` };
        targets = [{ lockServer: req.lockServer, conn: req.conn }];
      } else {
        const all = await sessionsOf(opts);
        silent = all.silent;
        const hits = all.sessions.filter((s) => s.clientPort === req.port && (req.addr === undefined || s.addr === req.addr));
        if (hits.length === 0) return { ok: false, error: `no client session with port ${req.port}${req.addr !== undefined ? ` from ${req.addr}` : ''}` };
        if (hits.length > 1 && req.addr === undefined)
          return { ok: false, error: `port ${req.port} names ${hits.length} client sessions (${hits.map((s) => `${s.addr} ${s.lockServer}/${s.conn}`).join(', ')}): give the address too, or lockServer/conn` };
        targets = hits.map((s) => ({ lockServer: s.lockServer, conn: s.conn }));
      }
      const dropped: SessionView[] = [];
      for (const t of targets) {
        const r = await askAll(opts, { cmd: 'drop', conn: t.conn, by }, t.lockServer);
        silent.push(...r.silent);
        for (const x of r.replies) if (x.reply.cmd === 'drop' && x.reply.dropped) dropped.push(x.reply.dropped);
      }
      if (dropped.length === 0 && silent.length === 0) return { ok: false, error: `no client session ${targets.map((t) => `${t.lockServer}/${t.conn}`).join(', ')} (it may have ended)` };
      for (const d of dropped) {
        log.warn({ by, lockServer: d.lockServer, conn: d.conn, client: `${d.addr}:${d.remotePort}`, clientPort: d.clientPort, clientPid: d.clientPid, locks: d.lockCount },
          `client session ${d.lockServer}/${d.conn} (${d.addr} port ${d.clientPort ?? '-'} pid ${d.clientPid ?? '-'}) dropped by an administrator, ${by}: ${d.lockCount} lock${d.lockCount === 1 ? '' : 's'} released`);
      }
      return { ok: true, cmd: 'drop', dropped, silent };
    }
    case 'release':
      return release(req, by, opts);
  }
}

const baseName = (f: string): string => f.split('/').pop() ?? f;
const nameMatches = (want: string, name: string | undefined): boolean =>
  name !== undefined && (name === want || baseName(name) === baseName(want));

/**
 * A file name as file identities: every lock, wait and open file of that
 * name in the info records (the application's names, from any host), and
 * the path itself when it exists on this host.
 */
export function resolveFile(releaseDir: string, name: string): { inode: string; dev: string; name: string }[] {
  const out = new Map<string, { inode: string; dev: string; name: string }>();
  const add = (inode: string, dev: string, n: string): void => {
    if (!out.has(`${inode}:${dev}`)) out.set(`${inode}:${dev}`, { inode, dev, name: n });
  };
  try {
    for (const r of readInfoDir(releaseDir).records) {
      for (const l of [...r.record.locks, ...(r.record.waiting ? [r.record.waiting] : [])]) if (nameMatches(name, l.file)) add(l.inode, l.dev, l.file ?? name);
      for (const f of r.record.files) if (nameMatches(name, f.name)) add(f.inode, f.dev, f.name ?? name);
    }
  } catch {
    /* no readable info directory: the path alone */
  }
  try {
    const st = fs.statSync(name, { bigint: true });
    add(st.ino.toString(), st.dev.toString(), name);
  } catch {
    /* not a path here */
  }
  return [...out.values()];
}

async function release(req: Extract<AdminRequest, { cmd: 'release' }>, by: string, opts: AdminServerOptions): Promise<ReleaseAnswer | AdminAnswer> {
  const { releaseDir, log } = opts;
  let files: { inode: string; dev: string; name?: string }[] | null = null;
  if (req.inode !== undefined && req.dev !== undefined) files = [{ inode: req.inode, dev: req.dev }];
  else if (req.file !== undefined) {
    files = resolveFile(releaseDir, req.file);
    if (files.length === 0)
      return { ok: false, error: `no file named ${req.file} in the info records of ${releaseDir} (proc/info), and no such path on this host` };
  }
  const target: ReleaseTarget = { by };
  if (req.port !== undefined) target.port = req.port;
  if (files) target.files = files.map((f) => ({ inode: f.inode, dev: f.dev }));
  if (req.key !== undefined) target.key = req.key;

  // What the table holds now, chosen before anything is released: a
  // release hands the lock to a waiter at once, and that fresh grant is not
  // the stuck lock.
  const inTable = tableSnapshot(releaseDir, target);
  // Remote sessions first, by their own lock-server processes: their
  // bookkeeping stays right.
  const { replies, silent } = await askAll(opts, { cmd: 'release', target });
  const released: ReleasedLock[] = replies.flatMap((r) => (r.reply.cmd === 'release' ? r.reply.released : []));
  const notes: string[] = [];
  // Then the table: local direct processes, and entries of lock-server
  // processes this listener cannot ask (a previous listener's).
  const ours = new Set(opts.workers().map((w) => w.pid));
  const silentPids = new Set(silent.map((s) => s.lockServer));
  released.push(...releaseInTable(releaseDir, inTable, ours, silentPids, notes));
  if (opts.mechanism === 'os')
    notes.push('record locks are OS file locks here: the locks of local processes are theirs in the kernel and cannot be released by another process (end the process, or drop its session)');

  const names = new Map((files ?? []).filter((f) => f.name !== undefined).map((f) => [`${f.inode}:${f.dev}`, f.name as string]));
  for (const r of released) {
    const n = names.get(`${r.inode}:${r.dev}`);
    if (n !== undefined) r.file = n;
  }
  const what = [req.port !== undefined ? `port ${req.port}` : '', req.file !== undefined ? `file ${req.file}` : req.inode !== undefined ? `file ${req.inode}/${req.dev}` : '', req.key !== undefined ? `key ${JSON.stringify(req.key)}` : ''].filter(Boolean).join(', ');
  log.warn({ by, request: req, released: released.map((r) => ({ owner: r.owner, inode: r.inode, dev: r.dev, key: r.key, token: r.token })), silent },
    `admin release of ${what} by ${by}: ${released.length} lock${released.length === 1 ? '' : 's'} released${silent.length ? `; ${silent.length} lock-server process(es) did not answer` : ''}`);
  return { ok: true, cmd: 'release', files, released, silent, notes };
}

const rowMatches = (r: LockRow, t: ReleaseTarget, files: Set<string> | undefined): boolean =>
  r.state === 'held' &&
  (t.port === undefined || r.port === t.port) &&
  (files === undefined || files.has(`${r.inode}:${r.dev}`)) &&
  (t.key === undefined || r.key.toString('latin1') === t.key);

/** The table's held entries that match, or [] without a table in service. */
function tableSnapshot(releaseDir: string, t: ReleaseTarget): LockRow[] {
  let table: LockTable;
  try {
    table = LockTable.open({ releaseDir });
  } catch (e) {
    if (e instanceof JdlsError && e.code === 'NO_TABLE') return [];
    throw e;
  }
  try {
    if (table.header().service !== C.SERVICE_ON) return [];
    const files = t.files ? new Set(t.files.map((f) => `${f.inode}:${f.dev}`)) : undefined;
    const hits: LockRow[] = [];
    for (const batch of table.rows()) for (const r of batch) if (rowMatches(r, t, files)) hits.push(r);
    return hits;
  } finally {
    table.close();
  }
}

/** Release the chosen entries that no lock-server process of ours owns (local direct processes, a previous listener's lock servers). */
function releaseInTable(releaseDir: string, hits: LockRow[], ours: Set<number>, silent: Set<number>, notes: string[]): ReleasedLock[] {
  if (hits.length === 0) return [];
  const table = LockTable.open({ releaseDir });
  const out: ReleasedLock[] = [];
  try {
    for (const r of hits) {
      const remote = r.conn !== 0;
      if (remote && ours.has(r.pid)) {
        // A session of a lock-server process that answered released its own;
        // one that did not answer is left alone (it may be busy, not gone).
        if (silent.has(r.pid)) notes.push(`lock-server process ${r.pid} did not answer: its client's lock on ${r.inode}/${r.dev} key ${JSON.stringify(r.key.toString('latin1'))} is not released`);
        continue;
      }
      const owner = makeOwner({ pid: r.pid, ownerPid: r.ownerPid, ownerTid: r.ownerTid, port: r.port, ip: r.ip, conn: r.conn });
      let ok: boolean;
      try {
        ok = table.unlock(owner, fileId(r.inode, r.dev), r.key);
      } catch (e) {
        notes.push(`lock on ${r.inode}/${r.dev} of pid ${r.pid}: ${(e as Error).message}`);
        continue;
      }
      if (!ok) {
        notes.push(`lock on ${r.inode}/${r.dev} key ${JSON.stringify(r.key.toString('latin1'))} of pid ${r.pid} was gone (released, or its process ended: the tidy-up frees it)`);
        continue;
      }
      out.push({
        owner: {
          kind: remote ? 'remote' : 'local', pid: r.ownerPid, port: r.port, tid: r.ownerTid, addr: r.ip,
          ...(remote ? { lockServer: r.pid, conn: r.conn, unreachable: true } : {}),
        },
        inode: r.inode.toString(), dev: r.dev.toString(), key: r.key.toString('latin1'), keyHex: r.key.toString('hex'),
        mode: r.mode, kind: 'record', ...(r.token ? { token: r.token.toString() } : {}),
      });
    }
  } finally {
    table.close();
  }
  return out;
}

// ===== the client side (the CLI) ============================================

/** Why the admin socket cannot be used, as the CLI says it. */
export class AdminUnavailable extends Error {}

/**
 * One request to the listener's admin socket; its answer. Throws
 * AdminUnavailable (no listener, no socket, not allowed to connect).
 */
export function adminCall(releaseDir: string, req: AdminRequest, timeoutMs = 15_000): Promise<AdminAnswer> {
  const p = adminSocketPath(releaseDir);
  return new Promise<AdminAnswer>((resolve, reject) => {
    const sock = net.connect(p);
    let buf = '';
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new AdminUnavailable(`the listener did not answer on ${p} within ${timeoutMs} ms`));
    }, timeoutMs);
    sock.setEncoding('utf8');
    sock.on('connect', () => sock.write(`${JSON.stringify(req)}\n`));
    sock.on('data', (d: string) => {
      buf += d;
      const nl = buf.indexOf('\n');
      if (nl < 0) return;
      clearTimeout(timer);
      sock.destroy();
      try {
        resolve(JSON.parse(buf.slice(0, nl)) as AdminAnswer);
      } catch (e) {
        reject(new AdminUnavailable(`unreadable answer from ${p}: ${(e as Error).message}`));
      }
    });
    sock.on('error', (e: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      const why = e.code === 'ENOENT' || e.code === 'ECONNREFUSED' ? `no lock listener serves ${p} (is it running? jdls -ib)`
        : e.code === 'EACCES' ? `${p} is not open to you: only root and the installation's owner may use it`
          : `${p}: ${e.message}`;
      reject(new AdminUnavailable(why));
    });
    sock.on('end', () => {
      clearTimeout(timer);
      if (buf.indexOf('\n') < 0) reject(new AdminUnavailable(`the listener closed ${p} without an answer`));
    });
  });
}
