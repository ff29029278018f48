// paths.ts - where an installation's broker lives and its settings: the
// Unix socket, its pid file (<socket>.pid, JSON {pid, start}) and the idle time after which it
// exits ($JDLS_BROKER_IDLE_MS).
//
// The socket is one per user and installation (docs/broker.md, "Where the
// broker listens"), so that no other user can listen where our programs look:
//   1. $JDLS_BROKER when set (made absolute against the working directory);
//   2. $XDG_RUNTIME_DIR/jdls/<table name>.sock when XDG_RUNTIME_DIR is an
//      absolute path to a directory of our euid that nobody else may write
//      to (<table name>: the installation's lock table's file name in
//      /dev/shm, one per installation directory);
//   3. else $JBCRELEASEDIR/tmp/broker-<euid>/jdls-broker.sock.
// In 2 and 3 the name carries the network namespace (".net<inode>" before
// ".sock"): a socket's path is seen from every network namespace sharing
// the file system, but the broker connects from its own - one broker for
// two namespaces would lock one's programs at another network's address
// (no route, or another lock server there: one lock granted twice).
// The directory of 2 and 3 is made 0700 if missing and then must be a
// directory (not a symlink) of our euid, mode 0700 (no group or other
// bits): anything else is refused (brokerDirProblem). The shim keeps the
// same rule in C (shim/shim_broker.c, sock_path); a test compares the two.
import fs from 'node:fs';
import path from 'node:path';
import { releaseDir, tablePath } from '../installation.js';

export const DEFAULT_IDLE_MS = 300_000;
/** The default socket's name in the per-uid directory, before the namespace tag and ".sock". */
export const SOCKET_BASE = 'jdls-broker';

const euid = (): number => process.geteuid?.() ?? 0;

/** ".net<inode of /proc/self/ns/net>", or "" where /proc cannot say (shim/shim_broker.c, netns_tag). */
export function netnsTag(): string {
  try {
    return `.net${fs.statSync('/proc/self/ns/net', { bigint: true }).ino}`;
  } catch {
    return '';
  }
}

/** `name.sock` as `name<netns tag>.sock`. */
const tagged = (name: string): string => `${name}${netnsTag()}.sock`;

/** Is XDG_RUNTIME_DIR usable for our socket: absolute, a directory (not a link) of our euid, no write for group or others. */
function xdgDir(env: NodeJS.ProcessEnv): string | undefined {
  const x = env['XDG_RUNTIME_DIR'];
  if (!x || !x.startsWith('/')) return undefined;
  try {
    const st = fs.lstatSync(x);
    if (!st.isDirectory() || st.uid !== euid() || (st.mode & 0o022) !== 0) return undefined;
  } catch {
    return undefined;
  }
  return x;
}

export function brokerSocketPath(env: NodeJS.ProcessEnv = process.env): string {
  const set = env['JDLS_BROKER'];
  if (set) return path.resolve(set);
  const x = xdgDir(env);
  if (x) return path.join(x, 'jdls', tagged(path.basename(tablePath(releaseDir(env)))));
  return path.join(releaseDir(env), 'tmp', `broker-${euid()}`, tagged(SOCKET_BASE));
}

/** Is `socket` a default path (rule 2 or 3), whose directory must be private? */
export function isDefaultSocket(socket: string, env: NodeJS.ProcessEnv = process.env): boolean {
  const { JDLS_BROKER: _, ...rest } = env;
  return path.resolve(socket) === brokerSocketPath(rest);
}

/**
 * Make the private directory of a default socket (0700; its parent
 * `<installation>/tmp` 01777 when we make it) and check it. undefined when
 * it is fit, else why not (a sentence naming the path, owner and mode).
 */
export function brokerDirProblem(socket: string): string | undefined {
  const dir = path.dirname(socket);
  const parent = path.dirname(dir);
  try {
    if (!dir.startsWith(`${releaseDir()}${path.sep}`) || fs.existsSync(parent)) {
      /* XDG_RUNTIME_DIR/jdls, or <installation>/tmp there already */
    } else {
      // <installation>/tmp is shared by the installation's users: sticky,
      // so nobody removes another's broker directory. The installation
      // directory itself, if missing, as any directory (0755).
      fs.mkdirSync(path.dirname(parent), { recursive: true, mode: 0o755 });
      try {
        fs.mkdirSync(parent, { mode: 0o1777 });
        fs.chmodSync(parent, 0o1777);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      }
    }
    fs.mkdirSync(dir, { mode: 0o700 });
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code !== 'EEXIST') return `cannot make the broker directory ${dir} (${code ?? String(e)})`;
  }
  let st: fs.Stats;
  try {
    st = fs.lstatSync(dir);
  } catch (e) {
    return `cannot examine the broker directory ${dir} (${(e as NodeJS.ErrnoException).code ?? String(e)})`;
  }
  if (!st.isDirectory() || st.uid !== euid() || (st.mode & 0o077) !== 0) {
    return `the broker directory ${dir} is ${st.isSymbolicLink() ? 'a symbolic link' : st.isDirectory() ? 'a directory' : 'not a directory'} of uid ${st.uid}, mode 0${(st.mode & 0o7777).toString(8)}: it must be a directory of uid ${euid()} with mode 0700 (another user may have made it to listen where your programs look for their broker): refused`;
  }
  return undefined;
}

/** The broker's pid file: JSON {pid, start} (safefile.writePidRecord); read it with safefile.readPidRecord and signal only if isOurProcess. */
export function brokerPidPath(socket: string): string {
  return `${socket}.pid`;
}

/** The idle time (ms) before a broker without clients exits; a bad value is the default. */
export function brokerIdleMs(env: NodeJS.ProcessEnv = process.env): number {
  const v = env['JDLS_BROKER_IDLE_MS'];
  if (v === undefined || !/^\d+$/.test(v)) return DEFAULT_IDLE_MS;
  return Number(v);
}
