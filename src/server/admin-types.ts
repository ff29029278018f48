// admin-types.ts - the shapes the administrator's requests use: the admin
// socket's JSON lines (admin.ts), the listener <-> lock-server IPC messages
// for them (lockserver.ts), and the session's answers (session.ts).
//
// Pure types and checks: no native import, so the CLI side can load it.
// inode, dev and tokens are decimal strings (u64; JSON and the IPC channel
// carry no bigint). A key is the latin1 text of its bytes (one char per
// byte), with keyHex beside it where it is shown.

/** A lock as the administrator sees it. kind: 'record' the server's mechanism, 'os' an OSLOCKS request's OS lock. */
export interface SessionLock {
  tid: number;
  inode: string;
  dev: string;
  key: string;
  keyHex: string;
  mode: 'read' | 'write';
  kind: 'record' | 'os';
  token?: string;
}

export interface SessionWait extends SessionLock {
  sinceMs: number;
}

/** One client session of a lock-server process. */
export interface SessionView {
  lockServer: number;
  /** the connection's number within its lock-server process */
  conn: number;
  /** the client's address and TCP port as the server sees them */
  addr: string;
  remotePort: number;
  /** jBASE port and pid from the client's HELLO (null before HELLO) */
  clientPort: number | null;
  clientPid: number | null;
  host: string;
  program: string;
  connectedMs: number;
  /** the lock server's record-lock mechanism */
  mechanism: 'shm' | 'os';
  /** locks held, in all */
  lockCount: number;
  /** the first SESSION_LOCKS_LISTED of them (a session may hold thousands: the answer stays bounded) */
  locks: SessionLock[];
  /** byte-range (BINARY) lock files held or waited in */
  ranges: number;
  rangeWaits: number;
  waiting: SessionWait[];
}

/** Locks of one session a sessions answer lists (lockCount says how many it holds). */
export const SESSION_LOCKS_LISTED = 1000;

/** What a release matches: every given part must match. */
export interface ReleaseTarget {
  /** jBASE port number of the owner */
  port?: number;
  /** file identities (a name is resolved to these first) */
  files?: { inode: string; dev: string }[];
  /** the key's latin1 text */
  key?: string;
  /** who asked, for the logs: "uid 0 (root)" */
  by: string;
}

export interface ReleasedOwner {
  /** local: a process locking directly in the table; remote: a client session of a lock-server process */
  kind: 'local' | 'remote';
  pid: number;
  port: number;
  tid: number;
  addr: string;
  lockServer?: number;
  conn?: number;
  remotePort?: number;
  host?: string;
  program?: string;
  /** remote, but its lock-server process is not one of this listener's (released in the table directly) */
  unreachable?: boolean;
}

export interface ReleasedLock {
  owner: ReleasedOwner;
  inode: string;
  dev: string;
  /** the file's name, when the info records know it */
  file?: string;
  key: string;
  keyHex: string;
  mode: 'read' | 'write';
  kind: 'record' | 'os';
  token?: string;
}

/** listener -> lock-server process */
export type AdminWorkerRequest =
  | { cmd: 'sessions' }
  | { cmd: 'drop'; conn: number; by: string }
  | { cmd: 'release'; target: ReleaseTarget };

/** lock-server process -> listener */
export type AdminWorkerReply =
  | { cmd: 'sessions'; sessions: SessionView[] }
  | { cmd: 'drop'; dropped: SessionView | null }
  | { cmd: 'release'; released: ReleasedLock[] }
  | { cmd: 'error'; error: string };

/** A request on the admin socket (one JSON line). */
export type AdminRequest =
  | { cmd: 'sessions' }
  | { cmd: 'drop'; lockServer?: number; conn?: number; port?: number; addr?: string }
  | { cmd: 'release'; port?: number; inode?: string; dev?: string; file?: string; key?: string };

/** A lock-server process that did not answer in time (or whose channel failed). */
export interface SilentLockServer {
  lockServer: number;
  why: string;
}

export interface SessionsAnswer {
  ok: true;
  cmd: 'sessions';
  sessions: SessionView[];
  silent: SilentLockServer[];
}

export interface DropAnswer {
  ok: true;
  cmd: 'drop';
  dropped: SessionView[];
  silent: SilentLockServer[];
}

export interface ReleaseAnswer {
  ok: true;
  cmd: 'release';
  /** the file identities the request resolved to (a name: through the info records or a path on this host) */
  files: { inode: string; dev: string; name?: string }[] | null;
  released: ReleasedLock[];
  silent: SilentLockServer[];
  /** why some matching locks were not released (e.g. the OS mechanism's local locks) */
  notes: string[];
}

export interface ErrorAnswer {
  ok: false;
  error: string;
}

export type AdminAnswer = SessionsAnswer | DropAnswer | ReleaseAnswer | ErrorAnswer;

const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const isU32 = (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v) && v >= 0 && v <= 0xffffffff;
const isDec = (v: unknown): v is string => typeof v === 'string' && /^(-?\d{1,20})$/.test(v);

/** Checks a parsed admin-socket request; the request, or why it is not one. */
export function checkAdminRequest(v: unknown): AdminRequest | string {
  if (!isObj(v)) return 'a request is one JSON object per line';
  switch (v['cmd']) {
    case 'sessions':
      return { cmd: 'sessions' };
    case 'drop': {
      const r: AdminRequest = { cmd: 'drop' };
      if (v['lockServer'] !== undefined || v['conn'] !== undefined) {
        if (!isU32(v['lockServer']) || !isU32(v['conn'])) return 'drop: lockServer and conn are numbers, given together';
        r.lockServer = v['lockServer'];
        r.conn = v['conn'];
      } else if (v['port'] !== undefined) {
        if (!isU32(v['port'])) return 'drop: port is a number';
        r.port = v['port'];
        if (v['addr'] !== undefined) {
          if (typeof v['addr'] !== 'string') return 'drop: addr is text';
          r.addr = v['addr'];
        }
      } else return 'drop: give lockServer and conn, or port (and addr)';
      return r;
    }
    case 'release': {
      const r: AdminRequest = { cmd: 'release' };
      if (v['port'] !== undefined) {
        if (!isU32(v['port'])) return 'release: port is a number';
        r.port = v['port'];
      }
      if (v['inode'] !== undefined || v['dev'] !== undefined) {
        if (!isDec(v['inode']) || !isDec(v['dev'])) return 'release: inode and dev are decimal strings, given together';
        r.inode = v['inode'];
        r.dev = v['dev'];
      }
      if (v['file'] !== undefined) {
        if (typeof v['file'] !== 'string' || v['file'] === '') return 'release: file is a name';
        if (r.inode !== undefined) return 'release: give file or inode/dev, not both';
        r.file = v['file'];
      }
      if (v['key'] !== undefined) {
        if (typeof v['key'] !== 'string') return 'release: key is text';
        if (r.file === undefined && r.inode === undefined) return 'release: a key needs its file (file, or inode and dev)';
        r.key = v['key'];
      }
      if (r.port === undefined && r.file === undefined && r.inode === undefined) return 'release: give port, file (or inode and dev), or both';
      return r;
    }
    default:
      return `unknown cmd ${JSON.stringify(v['cmd'])}: sessions, drop or release`;
  }
}
