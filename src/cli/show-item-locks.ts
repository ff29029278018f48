#!/usr/bin/env node
// show-item-locks.ts - the `show-item-locks` command (guide, "SHOW-ITEM-LOCKS"):
// every record lock the ports hold, with the port's IP address, who waits for
// each lock, from the info directory on the lock server's host or from the
// lock server over the protocol (JDLS set): info-cli.ts decides which.
import { main, answerContext, type Fetched, type InfoOptions, type Utility } from './info-cli.js';
import { itemLocksView, itemLocksText, ITEM_LOCKS_COLUMNS } from '../info/view.js';
import { INFO_SUBDIR } from '../info/format.js';

export function showItemLocksHelp(): string {
  return `show-item-locks - the record locks every port holds, and who waits for them

Usage:
  show-item-locks {-p port} {-f file} {-k key} {--json} {--local | --server}
  show-item-locks -h

Prints the guide's header line (the host and the info directory the records
come from), a blank line, then one line per lock held:
  ${ITEM_LOCKS_COLUMNS.join('  ')}
  IPADDR     0.0.0.0 for a process locking directly on this host, 127.0.0.1
             for a client through loopback, else the client host's address
  FILENAME   the file's name, or inode:dev when the process did not name it
  LOCK#      the lock table's number and R (read) or W (write); -,W when
             the locking mechanism gives no number
  PORT/-PID  the ports waiting for this lock (-pid for a waiter without a
             port), comma separated; --- when nobody waits
A lock of a process that is gone (its info record is stale) ends with
"(stale: why)"; the monitor's tidy-up removes such records. Waits for locks
that no info record shows held follow the table; a WARNING line names every
port that two live processes claim (also on stderr).

Options:
  -p, --port N      only the locks of port N
  -f, --file NAME   only locks on the file NAME (its full name or last
                    path component)
  -k, --key KEY     only locks on record key KEY
  --json            one JSON document: rows (every column and more: mode,
                    inode, dev, since, token, user, program), waits, stale
                    records, duplicate ports, skipped files
  --local           read $JBCRELEASEDIR/${INFO_SUBDIR} on this host
  --server          ask the lock server JDLS names
  -h, --help        this help

Where the information comes from: with JDLS set, the lock server it names
(SERVER, SERVER2 on failure; TIMEOUT, SECRET, TLS as every client), so this
works from any application server; else $JBCRELEASEDIR/${INFO_SUBDIR} on this
host when the jdls service runs here (or that directory exists). Reading it
locally needs membership of the installation's group.

Exit codes: 0 shown (also when no lock is held); 1 failed (no service on this
host and JDLS not set, permission denied, server unreachable); 2 usage error.
`;
}

export const showItemLocks: Utility = {
  name: 'show-item-locks',
  keyFilter: true,
  help: showItemLocksHelp,
  render(f: Fetched, o: InfoOptions) {
    const v = itemLocksView(f.answer, o.filter);
    const { source, warnings, stderr } = answerContext(f, v);
    return { text: itemLocksText(v), json: { tool: 'show-item-locks', source, ...v, warnings }, warnings: stderr };
  },
};

main(showItemLocks);
