// binary-paths.ts - where binary locks live: the pseudo files of the binary
// lock directory and the record-lock file a FILELOCK covers.
//
// Owns: the names only (pure, no I/O). Does not own: creating the directory
// or opening files (src/locks/binary.ts), the record-lock file's name rule itself
// (lockFileName in src/locks/oslock.ts; the suffix here follows the same rule and
// a test checks that they agree).
import path from 'node:path';

/** The default binary lock directory (the guide's). */
export const DEFAULT_BINARY_DIR = '/tmp/jbase_lock';

/** Execution locks (jBASE LOCK n): byte n of this one pseudo file. */
export const EXEC_FILE = 'jexec';

const hex8 = (v: bigint): string => BigInt.asUintN(32, v).toString(16).padStart(8, '0');

/**
 * `%08x_%08x` of a file identity: the low 32 bits of the inode and of the
 * device. Why asUintN and not a plain toString: a device of -1 (a file
 * reached through a lock server) must give ffffffff, as in the record-lock
 * file name, so that every application server names the same file alike.
 */
export function identitySuffix(file: { inode: bigint; dev: bigint }): string {
  return `${hex8(file.inode)}_${hex8(file.dev)}`;
}

/** Group locks of a file: <binaryDir>/jgroup_%08x_%08x, byte = group number. */
export function groupFileName(binaryDir: string, file: { inode: bigint; dev: bigint }): string {
  return path.join(binaryDir, `jgroup_${identitySuffix(file)}`);
}

/** General byte ranges of a file reached by identity: <binaryDir>/jrange_%08x_%08x. */
export function rangeFileName(binaryDir: string, file: { inode: bigint; dev: bigint }): string {
  return path.join(binaryDir, `jrange_${identitySuffix(file)}`);
}

/** Execution locks: <binaryDir>/jexec. */
export function execFileName(binaryDir: string): string {
  return path.join(binaryDir, EXEC_FILE);
}
