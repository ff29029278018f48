#!/usr/bin/env node
// list-open-files.ts - the `list-open-files` command: per port (port, pid,
// address, user, program) the files it has open, from the info directory on
// the lock server's host or from the lock server over the protocol (JDLS
// set): info-cli.ts decides which.
import { main, answerContext, type Fetched, type InfoOptions, type Utility } from './info-cli.js';
import { openFilesView, openFilesText } from '../info/view.js';
import { INFO_SUBDIR } from '../info/format.js';

export function listOpenFilesHelp(): string {
  return `list-open-files - the files every port has open

Usage:
  list-open-files {-p port} {-f file} {--json} {--local | --server}
  list-open-files -h

Prints the guide's header line (the host and the info directory the records
come from), then per port a line "Port N, pid P, ipaddr A, user U, program X"
and its files, indented, in columns FILENAME INODE DEV (FILENAME - when the process did not
name the file; DEV -1 when defaulted, as for files reached through a lock
server). A port whose process is gone (its info record is stale) is marked
"(stale: why)". A WARNING line names every port that two live processes
claim (also on stderr).

Options:
  -p, --port N      only port N
  -f, --file NAME   only the ports that have the file NAME open (its full
                    name or last path component), with that file only
  --json            one JSON document: ports with their files, duplicate
                    ports, skipped files
  --local           read $JBCRELEASEDIR/${INFO_SUBDIR} on this host
  --server          ask the lock server JDLS names
  -h, --help        this help

Where the information comes from: as show-item-locks - with JDLS set, the
lock server it names; else $JBCRELEASEDIR/${INFO_SUBDIR} on this host when
the jdls service runs here (or that directory exists).

Exit codes: 0 shown; 1 failed (no service on this host and JDLS not set,
permission denied, server unreachable); 2 usage error.
`;
}

export const listOpenFiles: Utility = {
  name: 'list-open-files',
  keyFilter: false,
  help: listOpenFilesHelp,
  render(f: Fetched, o: InfoOptions) {
    const v = openFilesView(f.answer, o.filter);
    const { source, warnings, stderr } = answerContext(f, v);
    return { text: openFilesText(v), json: { tool: 'list-open-files', source, ...v, warnings }, warnings: stderr };
  },
};

main(listOpenFiles);
