// proclocks.test.ts - reading the kernel's view of file locks: the parser,
// and a real python3 process holding a classic and an OFD lock, whose pid
// /proc/locks gives for one and only fdinfo reveals for the other.
import test from 'ava';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { parseLockLine, readProcLocks, ofdHolders, lockSignature } from '../src/locks/proclocks.js';
import { testDir } from './helpers/installations.js';

test('parses /proc/locks lines, waiters and EOF ranges included', (t) => {
  t.like(parseLockLine('1: POSIX  ADVISORY  WRITE 22188 fe:00:2146461 100 100'), {
    id: 1, kind: 'POSIX', mode: 'write', pid: 22188, major: 0xfe, minor: 0, inode: 2146461n, start: 100n, end: 100n, blocked: false,
  });
  t.like(parseLockLine('7: -> OFDLCK ADVISORY  READ -1 08:01:99 1073741826 EOF'), {
    id: 7, kind: 'OFDLCK', mode: 'read', pid: -1, major: 8, minor: 1, inode: 99n, start: 1073741826n, end: null, blocked: true,
  });
  t.like(parseLockLine('3: FLOCK  ADVISORY  WRITE 999 00:1a:5555 0 EOF'), { kind: 'FLOCK', minor: 0x1a });
  t.is(parseLockLine('garbage'), undefined);
  t.is(readProcLocks('1: POSIX  ADVISORY  WRITE 1 00:01:2 0 0\nnot a lock\n').length, 1);
});

test('a classic lock shows its pid; an OFD lock shows -1 and fdinfo names its holder', async (t) => {
  const dir = testDir('proclocks');
  const file = path.join(dir, 'f');
  fs.writeFileSync(file, '');
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  // F_OFD_SETLK is 37 on Linux; struct flock packed as python's fcntl wants it.
  const script = `
import fcntl, os, struct, sys
f = open(sys.argv[1], 'r+')
fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 100)
fd = os.open(sys.argv[1], os.O_RDWR)
fcntl.fcntl(fd, 37, struct.pack('hhqqi', fcntl.F_RDLCK, 0, 200, 5, 0))
print('READY', flush=True)
sys.stdin.read()
`;
  const py = spawn('python3', ['-c', script, file], { stdio: ['pipe', 'pipe', 'inherit'] });
  t.teardown(() => { if (py.exitCode === null) py.kill('SIGKILL'); });
  const [chunk] = (await once(py.stdout, 'data')) as [Buffer];
  t.is(chunk.toString().trim(), 'READY');
  const ino = BigInt(fs.statSync(file).ino);
  const mine = readProcLocks().filter((l) => l.inode === ino);
  const classic = mine.find((l) => l.kind === 'POSIX');
  const ofd = mine.find((l) => l.kind === 'OFDLCK');
  t.like(classic, { pid: py.pid, mode: 'write', start: 100n, end: 100n });
  t.like(ofd, { pid: -1, mode: 'read', start: 200n, end: 204n });
  if (!ofd) return;
  t.deepEqual(ofdHolders(new Set([ino])).get(lockSignature(ofd)), [py.pid]);
  py.stdin.end();
  await once(py, 'exit');
  t.is(readProcLocks().filter((l) => l.inode === ino).length, 0, 'the kernel released both at exit');
});
