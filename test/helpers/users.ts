// users.ts - throw-away unprivileged users for the trust-boundary tests
// (names start with the test's prefix; useradd --no-create-home, nologin),
// removed at teardown whatever happens, and running a command as one.
import type { ExecutionContext } from 'ava';
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export interface User { name: string; uid: number; gid: number }

const pause = (ms: number): void => void Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);

/**
 * A throw-away user runs node on the checkout's dist/ and preloads its
 * build/ libjdlsshim.so: every directory above the checkout must let others
 * through (o+x). A checkout in a 0700 directory (mktemp -d, a private home)
 * otherwise fails those tests with errors that name the program, not the
 * cause - so say the cause. (.ci/run opens the path on its own machine.)
 */
function checkoutReachable(): void {
  let dir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
  for (;;) {
    const mode = fs.statSync(dir).mode;
    if ((mode & 0o001) === 0) {
      throw new Error(`the tests that run as a throw-away user need every directory above the checkout to let others through: ${dir} is mode 0${(mode & 0o777).toString(8)} (chmod o+x it, or clone elsewhere)`);
    }
    const up = path.dirname(dir);
    if (up === dir) return;
    dir = up;
  }
}

/**
 * useradd NAME (no home, nologin, its own group); a leftover of a killed run
 * is removed first. useradd fails while another process holds /etc/passwd's
 * lock (test files run in parallel and several make users): retried,
 * bounded, then the last error.
 */
export function createUser(name: string): User {
  checkoutReachable();
  spawnSync('userdel', [name], { stdio: 'ignore' });
  for (let attempt = 0; ; attempt++) {
    const r = spawnSync('useradd', ['--no-create-home', '--shell', '/usr/sbin/nologin', '-U', name], { encoding: 'utf8' });
    if (r.status === 0) break;
    if (attempt >= 50) throw new Error(`useradd ${name}: ${r.stderr}`);
    pause(100);
  }
  const id = (flag: string): number => Number(execFileSync('id', [flag, name], { encoding: 'utf8' }).trim());
  return { name, uid: id('-u'), gid: id('-g') };
}

/** userdel NAME (and its group); retried while the passwd lock is taken, bounded. */
export function removeUser(name: string): void {
  // 0 removed, 6 no such user; anything else (the passwd lock) is retried
  for (let attempt = 0; attempt < 50; attempt++) {
    const st = spawnSync('userdel', [name], { stdio: 'ignore' }).status;
    if (st === 0 || st === 6) break;
    pause(100);
  }
  spawnSync('groupdel', [name], { stdio: 'ignore' }); // if userdel left it
}

/** A throw-away unprivileged user, removed at teardown whatever happens. */
export function makeUser(t: ExecutionContext, name: string): User {
  const u = createUser(name);
  t.teardown(() => removeUser(name));
  return u;
}

/** Run a command as `u` (setpriv, no supplementary groups); its result. */
export function asUser(u: User, cmd: string[]): { code: number | null; out: string } {
  const r = spawnSync('setpriv', [`--reuid=${u.uid}`, `--regid=${u.gid}`, '--clear-groups', ...cmd], { encoding: 'utf8', timeout: 30_000 });
  return { code: r.status, out: `${r.stdout}${r.stderr}` };
}

