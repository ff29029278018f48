// lockdir.ts - the trust rule of lock directories and lock files, as
// messages: which directory was refused and why (owner, mode), which lock
// file was refused (type, links, mode: refusedLockFile in ofd.ts).
//
// Owns: opening a lock directory for a mechanism (create if missing, check,
// say what is wrong) and the words of a refusal. Does not own: the rule
// itself, which lives in C (jdls_osl_check_dir, jdls_osl_open_lock in
// native/common/jdls_oslock.c) because the shim and C processes keep it too:
// this module only asks the addon and, when it refuses, looks at the path to
// say why. docs/security.md (## Lock directories) states the rule for people.
import fs from 'node:fs';
import { osn, osError, OsLockError } from './ofd.js';
import { releaseDir } from '../installation.js';

const EPERM = -1;

export const octal = (mode: number): string => `0${(mode & 0o7777).toString(8)}`;

function userName(uid: number): string {
  try {
    const line = fs.readFileSync('/etc/passwd', 'utf8').split('\n').find((l) => l.split(':')[2] === String(uid));
    if (line) return ` (${line.split(':')[0]})`;
  } catch {
    /* the number alone */
  }
  return '';
}

/** The uid of the service's user (the installation directory's owner), or undefined. */
export function serviceUid(): number | undefined {
  try {
    return fs.statSync(releaseDir()).uid;
  } catch {
    return undefined;
  }
}

function who(): string {
  const me = process.geteuid?.() ?? 0;
  const svc = serviceUid();
  return `root, the service's user${svc === undefined ? '' : ` (uid ${svc}${userName(svc)})`} or you (uid ${me}${userName(me)})`;
}

/** Why `dir` was refused (jdls_osl_check_dir said EPERM): owner and mode, from lstat/stat now. */
export function untrustedDir(dir: string, what: string): OsLockError {
  let why: string;
  try {
    const l = fs.lstatSync(dir);
    if (l.isSymbolicLink()) {
      why = `is a symbolic link owned by uid ${l.uid}${userName(l.uid)}: a link is followed only when root, the service's user or you made it`;
    } else {
      why = `is owned by uid ${l.uid}${userName(l.uid)}, mode ${octal(l.mode)}: its owner must be ${who()}, and others may write to it only when it is sticky (jBASE's shared mode is 01777, owned by root)`;
    }
  } catch (e) {
    why = `could not be examined (${(e as NodeJS.ErrnoException).code ?? String(e)})`;
  }
  return new OsLockError('BAD_LOCK_DIR', `${what} ${dir} ${why}: refused (whoever owns a lock directory can delete its lock files and split their locks; see docs/security.md)`, 'EPERM', dir);
}

/**
 * A lock directory for a mechanism: created (01777) if missing, then
 * checked. Throws OsLockError: BAD_LOCK_DIR (missing parent, not a
 * directory, not trusted: the message says owner and mode), PERMISSION
 * (we may not create files in it).
 */
export function openLockDir(dir: string, what: string): void {
  const rc = osn.ensureDir(dir);
  if (rc === EPERM) throw untrustedDir(dir, what);
  if (rc < 0) {
    const e = osError(rc, what, dir);
    throw new OsLockError(e.osCode === 'BAD_PATH' ? 'BAD_LOCK_DIR' : e.osCode, e.message, e.errno, dir);
  }
  try {
    fs.accessSync(dir, fs.constants.W_OK | fs.constants.X_OK);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code ?? '';
    throw new OsLockError('PERMISSION', `${what} ${dir}: no permission to create lock files (${code})`, code, dir);
  }
}

/** Is an existing lock directory trusted? undefined when it is (or is missing), else the refusal. For listings (jdls -dvL). */
export function checkLockDir(dir: string, what: string): OsLockError | undefined {
  const rc = osn.checkDir(dir);
  if (rc === 0 || rc === -2 /* ENOENT: nothing to list */) return undefined;
  if (rc === EPERM) return untrustedDir(dir, what);
  return osError(rc, what, dir);
}
