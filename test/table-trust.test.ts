// table-trust.test.ts - who may use an installation's lock table, and what a
// writer of the table can do to the processes that map it (issue 10, "Trust
// boundaries on the host": the lock table). The table's /dev/shm name is
// predictable; the rule (docs/lock-table.md, "Who may use it"): the table is
// owned by root or the installation's owner, mode 0660, group = the
// installation directory's group, one link, a regular file; anything else at
// that name is refused, never used and never a reason to lock elsewhere.
// Its geometry is copied into each process once, validated, and every offset
// comes from that copy: a writer of the header cannot steer another
// process's address arithmetic.
//
// Unprivileged users are made here (prefix jdlsa) and removed in teardown.
// Serial: each test runs several processes and the machine has 2 cores.
import test, { type ExecutionContext } from 'ava';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { CliEnv } from './helpers/cli-env.js';
import { ShimEnv, SHIM_LOCKER } from './helpers/shim-env.js';
import { testDir, testRoot } from './helpers/installations.js';
import { createUser, removeUser, type User } from './helpers/users.js';
import { markerPath, tablePath } from '../src/installation.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const INDEX = path.resolve(here, '..', 'src', 'index.js');

let serial = 0;

/**
 * The run's root (scripts/test.mjs makes it 0700) must be searchable by the
 * users made here: they look at installation directories inside it. Search
 * only (o+x, no listing), put back at teardown.
 */
function searchableRoot(t: ExecutionContext): void {
  const root = testRoot();
  const mode = fs.statSync(root).mode & 0o7777;
  if ((mode & 0o001) !== 0) return;
  fs.chmodSync(root, mode | 0o001);
  t.teardown(() => fs.chmodSync(root, mode));
}

/** A user (and its own group) made for this test; removed at teardown, even when the test fails. */
function tableUser(t: ExecutionContext, tag: string): User {
  searchableRoot(t);
  const name = `jdlsa${tag}${process.pid % 100000}x${serial++}`;
  const { uid, gid } = createUser(name);
  t.teardown(() => {
    // Whatever the user's programs left in /dev/shm (a table, a marker).
    for (const n of fs.readdirSync('/dev/shm')) {
      const f = path.join('/dev/shm', n);
      try {
        if (fs.lstatSync(f).uid === uid) fs.rmSync(f, { force: true });
      } catch {
        /* gone */
      }
    }
    removeUser(name);
  });
  return { name, uid, gid };
}

/** argv prefix that runs a program as `u` (no supplementary groups). */
function as(u: User): string[] {
  return [`--reuid=${u.uid}`, `--regid=${u.gid}`, '--clear-groups'];
}

/** A lock directory anyone may use, with one jlock file in it (mode 0666). */
function sharedLockDir(t: ExecutionContext): { dir: string; file: string } {
  const dir = testDir('trustlk');
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  fs.chmodSync(dir, 0o777);
  const file = path.join(dir, 'jlock_00005e41_00000802');
  fs.writeFileSync(file, '');
  fs.chmodSync(file, 0o666);
  return { dir, file };
}

// Header offsets (jdls_table.h: _Static_assert'ed there).
const H_GROUP_SIZE = 16;
const H_NGROUPS = 20;
const H_GROUPS_OFFSET = 32;
const H_TOTAL_SIZE = 40;

test.serial('a table planted at the installation\'s name (a hard link to a user\'s own table) is refused by jdls -ib, which says to remove it', async (t) => {
  const cli = new CliEnv(t);
  const att = tableUser(t, 'p');
  // The attacker's own installation and table, made as the attacker.
  const own = testDir('trustatt');
  fs.chownSync(own, att.uid, att.gid);
  t.teardown(() => {
    fs.rmSync(own, { recursive: true, force: true });
    fs.rmSync(tablePath(own), { force: true });
    fs.rmSync(markerPath(tablePath(own)), { force: true });
  });
  execFileSync('setpriv', [...as(att), process.execPath, '--input-type=module', '-e',
    `import { LockTable } from ${JSON.stringify(INDEX)}; const t = LockTable.create({ releaseDir: ${JSON.stringify(own)} }); t.close();`],
  { env: { ...cli.env, JBCRELEASEDIR: own }, stdio: 'ignore' });
  // Its table: the one file the attacker has in /dev/shm (not the marker).
  const ownTable = fs.readdirSync('/dev/shm').map((n) => path.join('/dev/shm', n))
    .find((f) => !f.endsWith('.os') && fs.lstatSync(f).uid === att.uid) ?? tablePath(own);
  t.is(fs.statSync(ownTable).uid, att.uid);
  // ... linked where root's installation looks for its table (the name is
  // predictable: /dev/shm/jdls-<uid>-<hash of the path>).
  execFileSync('setpriv', [...as(att), 'ln', ownTable, cli.shm]);
  const r = await cli.run(['-ibA']);
  for (const m of r.stdout.matchAll(/started at pid (\d+)/g)) cli.track(Number(m[1]));
  // Before the fix root started on the attacker's table (exit 0), and the
  // attacker read root's locks through its own link: every key and owner.
  t.not(r.code, 0, `jdls -ibA must refuse the planted table: ${r.stdout}`);
  t.log(r.stderr.trim());
  t.true(r.stderr.includes(cli.shm), r.stderr);
  t.regex(r.stderr, new RegExp(`owned by uid ${att.uid}`));
  t.regex(r.stderr, /remove it/);
  t.is(fs.statSync(cli.shm).uid, att.uid, 'the planted file is left alone (the operator removes it)');
});

test.serial('a table file of the right owner but writable by others, or with two links, is refused', async (t) => {
  const cli = new CliEnv(t);
  await cli.startBackground(['-ibA']);
  const k = await cli.run(['-kA']);
  t.is(k.code, 0, k.stderr);
  fs.chmodSync(cli.shm, 0o666);
  let r = await cli.run(['-dvL']);
  t.not(r.code, 0);
  t.regex(r.stderr, /writable by others/);
  t.regex(r.stderr, /mode 0666/);
  fs.chmodSync(cli.shm, 0o660);
  const link = `${cli.shm}-second-link`;
  fs.linkSync(cli.shm, link);
  t.teardown(() => fs.rmSync(link, { force: true }));
  r = await cli.run(['-dvL']);
  t.not(r.code, 0);
  t.regex(r.stderr, /2 links/);
  fs.rmSync(link);
  r = await cli.run(['-dvL']);
  t.is(r.code, 0, r.stderr);
});

test.serial('a header whose geometry was rewritten (wrapping offsets) does not crash jdls -dvL: the table is refused as not a valid table', async (t) => {
  const cli = new CliEnv(t);
  await cli.startBackground(['-ibA']);
  // A writer of the table (its owner, a group member) rewrites the geometry
  // so that the sums still match the file's size modulo 2^64.
  const fd = fs.openSync(cli.shm, 'r+');
  try {
    const h = Buffer.alloc(48);
    fs.readSync(fd, h, 0, 48, 0);
    const groupSize = BigInt(h.readUInt32LE(H_GROUP_SIZE));
    const total = h.readBigUInt64LE(H_TOTAL_SIZE);
    const ngroups = BigInt(h.readUInt32LE(H_NGROUPS)) + 100_000n;
    const offset = (total - ngroups * groupSize) & 0xffff_ffff_ffff_ffffn;
    const w = Buffer.alloc(4);
    w.writeUInt32LE(Number(ngroups));
    fs.writeSync(fd, w, 0, 4, H_NGROUPS);
    const o = Buffer.alloc(8);
    o.writeBigUInt64LE(offset);
    fs.writeSync(fd, o, 0, 8, H_GROUPS_OFFSET);
  } finally {
    fs.closeSync(fd);
  }
  const r = await cli.run(['-dvL']);
  // Before the fix: killed by SIGSEGV (group 0 computed below the mapping).
  t.is(r.signal, null, `jdls -dvL died of ${r.signal}`);
  t.not(r.code, 0);
  t.regex(r.stderr, /not a valid lock table|geometry/);
  t.log(r.stderr.trim());
});

test.serial('a process that mapped the table keeps its own copy of the geometry: rewriting the header\'s group count does not crash it', async (t) => {
  const s = new ShimEnv(t);
  await s.startMonitor();
  const f = s.jlock(0x5e41, 0x802);
  fs.writeFileSync(f, '');
  const p = s.start(SHIM_LOCKER, [f, 'w:1', 'wait', 'w:2', 'w:3', 'hold']);
  await p.waitFor(/^waiting$/);
  t.is(p.lines[0], 'ok');
  const fd = fs.openSync(s.cli.shm, 'r+');
  const w = Buffer.alloc(4);
  w.writeUInt32LE(0xffffffff);
  fs.writeSync(fd, w, 0, 4, H_NGROUPS);
  fs.closeSync(fd);
  const died = new Promise<NodeJS.Signals | null>((r) => p.child.on('exit', (_c, sig) => r(sig)));
  p.child.stdin?.write('go\n');
  const ended = await Promise.race([p.waitFor(/^holding$/).then(() => 'holding' as const), died]);
  // Before the fix the next lock computed its group from the rewritten
  // count and the process died of SIGSEGV.
  t.is(ended, 'holding', `the locker died of ${String(ended)}: ${p.stderr()}`);
  t.deepEqual(p.lines.slice(1, 5), ['waiting', 'going', 'ok', 'ok']);
  t.is(await p.finish(), 0);
});

test.serial('a user outside the installation\'s group gets ENOLCK and one line on stderr, never an OS lock beside the table; a member locks in the table', async (t) => {
  const s = new ShimEnv(t);
  const member = tableUser(t, 'm');
  const outsider = tableUser(t, 'o');
  // The operator's setting: the installation directory's group is the jdls group.
  fs.chownSync(s.cli.dir, 0, member.gid);
  fs.chmodSync(s.cli.dir, 0o750);
  const lk = sharedLockDir(t);
  const env = { JDLS_LOCKDIR: lk.dir };
  await s.startMonitor();
  const holder = s.start(SHIM_LOCKER, [lk.file, 'w:5', 'hold'], { env });
  await holder.waitFor(/^holding$/);
  t.is(holder.lines[0], 'ok');
  // Before the fix the outsider's program locked the record as an OS file
  // lock ("ok") while root's holder had it in the table: two holders.
  const o = await s.run('setpriv', [...as(outsider), SHIM_LOCKER, lk.file, 'w:5', 'w:6'], { env });
  t.is(o.stdout.trim().split('\n').join(','), 'ENOLCK,ENOLCK', o.stderr);
  const lines = o.stderr.split('\n').filter((l) => l.includes('jdls'));
  t.is(lines.length, 1, o.stderr);
  t.log(o.stderr.trim());
  t.true(lines[0]?.includes(s.cli.shm), o.stderr);
  // A member of the group shares the table: it sees root's lock.
  const m = await s.run('setpriv', [...as(member), SHIM_LOCKER, lk.file, 'w:5', 'w:6'], { env });
  t.is(m.stdout.trim().split('\n').join(','), 'EAGAIN,ok', m.stderr);
  t.is(fs.statSync(s.cli.shm).gid, member.gid, 'the table belongs to the installation directory\'s group');
  t.is(fs.statSync(s.cli.shm).mode & 0o777, 0o660);
  t.is(await holder.finish(), 0);
});

test.serial('an OS-route marker planted by another user (owned by them, writable by others) is refused by jdls -ib', async (t) => {
  const cli = new CliEnv(t);
  const att = tableUser(t, 'k');
  const marker = markerPath(cli.shm);
  t.teardown(() => fs.rmSync(marker, { force: true }));
  execFileSync('setpriv', [...as(att), 'sh', '-c', `umask 0; : > '${marker}'`]);
  t.is(fs.statSync(marker).uid, att.uid);
  const r = await cli.run(['-ibA']);
  for (const m of r.stdout.matchAll(/started at pid (\d+)/g)) cli.track(Number(m[1]));
  // Before the fix root used it: the attacker, holding a read lock on it,
  // could keep every table out of service.
  t.not(r.code, 0, r.stdout);
  t.true(r.stderr.includes(marker), r.stderr);
  t.regex(r.stderr, new RegExp(`uid ${att.uid}`));
  t.log(r.stderr.trim());
});

/** Offsets of the entries (in a table file) in state `state` held by `pid`. */
function entriesOf(shm: string, pid: number, state: number): number[] {
  const b = fs.readFileSync(shm);
  const groupSize = b.readUInt32LE(H_GROUP_SIZE);
  const ngroups = b.readUInt32LE(H_NGROUPS);
  const perGroup = b.readUInt32LE(24);
  const groupsOffset = Number(b.readBigUInt64LE(H_GROUPS_OFFSET));
  const out: number[] = [];
  for (let g = 0; g < ngroups; g++)
    for (let i = 0; i < perGroup; i++) {
      const off = groupsOffset + g * groupSize + 64 + i * 624;
      if (b.readUInt32LE(off) === state && b.readUInt32LE(off + 12) === pid) out.push(off);
    }
  return out;
}

test.serial('an entry whose key length was rewritten cannot overrun the releaser\'s buffer: the holder releases, the waiter is granted, nobody crashes', async (t) => {
  const s = new ShimEnv(t);
  await s.startMonitor();
  const f = s.jlock(0x5e41, 0x802);
  fs.writeFileSync(f, '');
  const holder = s.start(SHIM_LOCKER, [f, 'w:5', 'wait', 'close1', 'hold']);
  await holder.waitFor(/^waiting$/);
  t.is(holder.lines[0], 'ok');
  const waiter = s.start(SHIM_LOCKER, [f, 'W:5', 'hold']);
  t.true(await s.cli.until(() => entriesOf(s.cli.shm, waiter.pid, 2).length === 1), 'the waiter queues');
  const [held] = entriesOf(s.cli.shm, holder.pid, 1);
  t.truthy(held);
  // The holder's entry claims a 65535-byte key (the key field has 512).
  const fd = fs.openSync(s.cli.shm, 'r+');
  const w = Buffer.alloc(2);
  w.writeUInt16LE(0xffff);
  fs.writeSync(fd, w, 0, 2, (held ?? 0) + 6);
  fs.closeSync(fd);
  const died = new Promise<string>((r) => holder.child.on('exit', (code, sig) => r(`exit ${code} ${sig}`)));
  holder.child.stdin?.write('go\n');
  // close1 releases the file's locks and hands the key over: before the
  // fix the hand-off copied the entry's key into a 512-byte stack buffer
  // using the rewritten length, and the holder died.
  const ended = await Promise.race([holder.waitFor(/^holding$/).then(() => 'holding'), died]);
  t.is(ended, 'holding', holder.stderr());
  await waiter.waitFor(/^holding$/);
  t.is(waiter.lines[0], 'ok', 'the waiter is granted (at its next liveness tick)');
  t.is(await holder.finish(), 0);
  t.is(await waiter.finish(), 0);
});

test.serial('a symbolic link planted at the table\'s name is refused, not followed', async (t) => {
  const cli = new CliEnv(t);
  const att = tableUser(t, 's');
  const baitDir = testDir('trustsym');
  t.teardown(() => fs.rmSync(baitDir, { recursive: true, force: true }));
  const target = path.join(baitDir, 'bait');
  fs.writeFileSync(target, '');
  execFileSync('setpriv', [...as(att), 'ln', '-s', target, cli.shm]);
  t.teardown(() => fs.rmSync(cli.shm, { force: true }));
  const r = await cli.run(['-ibA']);
  for (const m of r.stdout.matchAll(/started at pid (\d+)/g)) cli.track(Number(m[1]));
  t.not(r.code, 0, r.stdout);
  t.regex(r.stderr, /symbolic link/);
  t.is(fs.statSync(target).size, 0, 'the link\'s target was not written');
  t.log(r.stderr.trim());
});

test.serial('without a table, a user outside the installation\'s group cannot use the members\' OS-route marker: ENOLCK, not an exit and not an unregistered OS lock', async (t) => {
  const s = new ShimEnv(t);
  const member = tableUser(t, 'n');
  const outsider = tableUser(t, 'q');
  fs.chownSync(s.cli.dir, 0, member.gid);
  fs.chmodSync(s.cli.dir, 0o750);
  const lk = sharedLockDir(t);
  const env = { JDLS_LOCKDIR: lk.dir };
  const m = await s.run('setpriv', [...as(member), SHIM_LOCKER, lk.file, 'w:5'], { env });
  t.is(m.stdout.trim(), 'ok', m.stderr);
  t.is(fs.statSync(markerPath(s.cli.shm)).gid, member.gid, 'the marker has the installation\'s group');
  const o = await s.run('setpriv', [...as(outsider), SHIM_LOCKER, lk.file, 'w:5'], { env });
  t.is(o.code, 0, o.stderr);
  t.is(o.stdout.trim(), 'ENOLCK', o.stderr);
  t.regex(o.stderr, /OS-route marker .* permission denied/);
  t.log(o.stderr.trim());
});
