#!/usr/bin/env node
// release-item-locks.ts - the `release-item-locks` command: an
// administrator's release of stuck record locks, by port, by file, or by
// file and key (admin-cli.ts; the listener does it: src/server/admin.ts).
import { releaseItemLocks, notAllowed } from './admin-cli.js';
import { writeFd } from './display.js';
import { releaseDir, checkReleaseDir } from '../installation.js';

async function main(argv: string[]): Promise<number> {
  const io = { out: (s: string) => writeFd(1, s), err: (s: string) => writeFd(2, s) };
  if (argv.some((a) => a === '-h' || a === '--help')) return releaseItemLocks('', argv, io);
  const dir = releaseDir();
  // Said first and plainly: another user learns nothing more from us.
  const refused = notAllowed(dir);
  if (refused) {
    io.err(`release-item-locks: refused: ${refused}\n`);
    return 1;
  }
  try {
    checkReleaseDir(dir, { create: false });
  } catch (e) {
    io.err(`release-item-locks: ${(e as Error).message}\n`);
    return 1;
  }
  return releaseItemLocks(dir, argv, io);
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (e: unknown) => {
    try {
      writeFd(2, `release-item-locks: ${(e as Error).message}\n`);
    } catch {
      /* stderr gone */
    }
    process.exit(1);
  },
);
