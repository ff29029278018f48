// errors.ts (client) - what goes wrong between a client and a lock server, as
// JdlsError values: the server's ERROR codes, connection failures, and the
// system's words for them (the guide prints "error Connection refused").
// Does not own: when an error ends the connection (connection.ts).
import { JdlsError, type JdlsErrorCode } from '../errors.js';
import type { ProtoErrorName } from '../protocol/constants.js';

/** One JdlsError code per wire ERROR code (docs/protocol.md). */
const WIRE_CODES: Record<ProtoErrorName, JdlsErrorCode> = {
  PROTOCOL: 'PROTOCOL',
  VERSION: 'VERSION',
  LIMIT: 'LIMIT',
  TABLE_FULL: 'TABLE_FULL',
  KEY_TOO_LONG: 'KEY_TOO_LONG',
  CANCELLED: 'CANCELLED',
  BAD_ARGUMENT: 'BAD_ARGUMENT',
  SYSTEM: 'SYSTEM',
  SHUTDOWN: 'SHUTDOWN',
  NOT_SUPPORTED: 'NOT_SUPPORTED',
  AUTH: 'AUTH',
  // LOCK with BREAK_DEADLOCK: waiting would have closed a cycle of waiters (nothing is held for it)
  DEADLOCK: 'DEADLOCK',
  // a witnessed server that is not the pair's leader (docs/protocol.md, "Pairs and the witness")
  NOT_LEADER: 'NOT_LEADER',
};

/** The JdlsError for an ERROR frame from the server. */
export function errorFromWire(code: ProtoErrorName, text: string, server: string): JdlsError {
  const message = `lock server ${server}: ${text || code}`;
  // jBASE Error 37: the key's lock group is full.
  return code === 'TABLE_FULL'
    ? new JdlsError('TABLE_FULL', message, { jbaseError: 37 })
    : new JdlsError(WIRE_CODES[code], message);
}

// Node gives the errno name (ECONNREFUSED); the guide prints strerror's text.
// Node 20 has no getSystemErrorMessage, hence the table (glibc's wording).
const SYSTEM_TEXT: Record<string, string> = {
  ECONNREFUSED: 'Connection refused',
  ECONNRESET: 'Connection reset by peer',
  ETIMEDOUT: 'Connection timed out',
  EHOSTUNREACH: 'No route to host',
  ENETUNREACH: 'Network is unreachable',
  EADDRNOTAVAIL: 'Cannot assign requested address',
  EPIPE: 'Broken pipe',
  EMFILE: 'Too many open files',
  ENFILE: 'Too many open files in system',
  EACCES: 'Permission denied',
  ENOTFOUND: 'Name or service not known',
  EAI_AGAIN: 'Temporary failure in name resolution',
};

/** Errors that mean the socket could not even be created (the guide's "Unable to allocate socket"). */
const NO_SOCKET = new Set(['EMFILE', 'ENFILE', 'ENOBUFS', 'ENOMEM', 'EAFNOSUPPORT']);

/** strerror-like text for a Node system error (or its message). */
export function systemErrorText(e: unknown): string {
  const code = (e as NodeJS.ErrnoException | undefined)?.code;
  if (code && SYSTEM_TEXT[code]) return SYSTEM_TEXT[code];
  return e instanceof Error ? e.message : String(e);
}

/** Whether a connect error means no socket could be allocated. */
export function isSocketAllocationError(e: unknown): boolean {
  const code = (e as NodeJS.ErrnoException | undefined)?.code;
  return code !== undefined && NO_SOCKET.has(code);
}

/** CONNECT_FAILED for host/port; `cause` is Node's error (its code, e.g. ECONNREFUSED). */
export function connectError(host: string, port: number, cause: unknown): JdlsError {
  return new JdlsError('CONNECT_FAILED', `connection failed for host '${host}', service '${port}', error ${systemErrorText(cause)}`, { cause });
}
