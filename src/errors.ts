// errors.ts - jdls' one error class. Errors are values with a string code
// (stable, for programs) and a message (for people). Pure: no native import,
// so pure modules (src/locks/ranges.ts) load without the addon; native result codes
// are mapped in src/native.ts (errorFromRc).
import type { ClientErrorCode } from './client/codes.js';

export type JdlsErrorCode =
  | 'TABLE_FULL' | 'KEY_TOO_LONG' | 'BAD_ARGUMENT' | 'NO_TABLE' | 'BAD_TABLE' | 'SYSTEM'
  | 'NO_PROCESS_SLOT' | 'EXISTS' | 'NOT_RECOVERABLE' | 'RETIRED' | 'UNTRUSTED' | 'TIMEOUT' | 'ABORTED' | 'CLOSED'
  | 'ATTACHED' | 'USAGE' | 'NOT_RUNNING' | 'RUNNING'
  // the wait would close a cycle of waiters (deadlock detection: docs/deadlocks.md)
  | 'DEADLOCK'
  // the table cannot enter service while processes lock records as OS file locks (native/common/jdls_service.c)
  | 'OS_ROUTE_IN_USE'
  // a file or directory jdls must not trust: wrong owner, writable by others, a planted link (src/safefile.ts, src/installation.ts)
  | 'UNTRUSTED'
  // OS file locks (src/locks/ofd.ts)
  | 'BAD_LOCK_DIR' | 'BAD_PATH' | 'PERMISSION' | 'TOO_MANY_FILES' | 'NO_LOCKS'
  // binary locks (src/locks/binary.ts)
  | 'NOT_SUPPORTED'
  // the client (src/client/codes.ts)
  | ClientErrorCode
  | `JDLS_UNKNOWN_${number}`;

export class JdlsError extends Error {
  readonly code: JdlsErrorCode;
  /** jBASE's error number where there is one (37: lock table full). */
  readonly jbaseError?: number;
  constructor(code: JdlsErrorCode, message: string, options?: { cause?: unknown; jbaseError?: number }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'JdlsError';
    this.code = code;
    if (options?.jbaseError !== undefined) this.jbaseError = options.jbaseError;
  }
}
