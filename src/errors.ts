// errors.ts - jdls' one error class. Errors are values with a string code
// (stable, for programs) and a message (for people).
import { native } from './native.js';

export type JdlsErrorCode =
  | 'TABLE_FULL' | 'KEY_TOO_LONG' | 'BAD_ARGUMENT' | 'NO_TABLE' | 'BAD_TABLE' | 'SYSTEM'
  | 'NO_PROCESS_SLOT' | 'EXISTS' | 'NOT_RECOVERABLE' | 'TIMEOUT' | 'ABORTED' | 'CLOSED'
  | 'ATTACHED' | 'USAGE' | 'NOT_RUNNING' | 'RUNNING'
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

const byValue = new Map<number, { name: string; text: string }>();
for (const [name, info] of Object.entries(native.constants.RC)) byValue.set(info.value, { name, text: info.text });

/** The error for a native result code (< 0), through the addon's one table. */
export function errorFromRc(rc: number, context?: string): JdlsError {
  const known = byValue.get(rc);
  const code = (known ? known.name : `JDLS_UNKNOWN_${rc}`) as JdlsErrorCode;
  const text = known ? known.text : `unknown native result ${rc}`;
  return new JdlsError(code, context ? `${context}: ${text}` : text, rc === -37 ? { jbaseError: 37 } : undefined);
}
