#!/usr/bin/env node
// jdls.ts - the `jdls` command: parse the arguments (args.ts), then run the
// one command they name. Nothing is created or started before the whole
// command line has parsed; a usage error exits 2.
import { parseArgs, type Command } from './args.js';
import { helpText } from './help.js';
import { display, writeFd, PipeClosed } from './display.js';
import { stop, remove } from './control.js';
import { start, monitorChild, listenerChild } from './start.js';
import { releaseDir, checkReleaseDir } from '../installation.js';
import { clientTest } from './client-test.js';
import { runLockServer } from '../server/lockserver.js';
import { configFromEnv, loadConfig } from '../server/config.js';
import { shimPath } from '../shim.js';
import { runBroker } from '../broker/broker.js';
import { brokerSocketPath } from '../broker/paths.js';
import { listSessions, dropSession } from './admin-cli.js';
import type { AdminRequest } from '../server/admin-types.js';

type DropRequest = Extract<AdminRequest, { cmd: 'drop' }>;
const io = { out: (s: string): void => writeFd(1, s), err: (s: string): void => writeFd(2, `jdls: ${s}`) };

/** Commands that neither read nor write the installation directory (nor the table named after it). */
const OUTSIDE = new Set<Command['kind']>(['help', 'client-test', 'shim-path']);
/** Does the command make the directory when it is missing (mode 0750)? -i starts daemons that write there; a broker only if its socket is in it. */
const creates = (cmd: Command, dir: string): boolean =>
  cmd.kind === 'start' || (cmd.kind === 'broker' && brokerSocketPath().startsWith(`${dir}/`));

async function run(cmd: Command): Promise<number> {
  const dir = releaseDir();
  // Every jdls process goes through here (the daemons are this script with
  // an internal flag): one check, before anything is read from or written to
  // the directory (docs/security.md, "The installation directory").
  if (!OUTSIDE.has(cmd.kind)) checkReleaseDir(dir, { create: creates(cmd, dir) });
  switch (cmd.kind) {
    case 'help':
      writeFd(1, helpText());
      return 0;
    case 'display':
      return display(cmd, dir);
    case 'sessions':
      return listSessions(dir, cmd.json, io);
    case 'drop-session': {
      const req: DropRequest = { cmd: 'drop' };
      if (cmd.lockServer !== undefined && cmd.conn !== undefined) {
        req.lockServer = cmd.lockServer;
        req.conn = cmd.conn;
      }
      if (cmd.port !== undefined) req.port = cmd.port;
      if (cmd.addr !== undefined) req.addr = cmd.addr;
      return dropSession(dir, req, cmd.json, io);
    }
    case 'stop':
      return stop(dir, { monitor: !cmd.listenerOnly, listener: !cmd.arbiterOnly });
    case 'remove':
      return remove(dir, cmd.force);
    case 'start':
      return start(cmd, dir);
    case 'monitor-child':
      return monitorChild(cmd.tidyMinutes, dir);
    case 'client-test':
      return clientTest(cmd.text, { out: (l) => writeFd(1, `${l}\n`), err: (l) => writeFd(2, `${l}\n`) });
    case 'listener-child':
      return listenerChild(dir);
    case 'shim-path':
      writeFd(1, `${shimPath()}\n`);
      return 0;
    case 'broker':
      return runBroker();
    case 'lock-server-child':
      return runLockServer({ kind: cmd.mechanism, releaseDir: dir, cfg: configFromEnv() ?? loadConfig(dir) });
  }
}

async function main(argv: string[]): Promise<number> {
  const parsed = parseArgs(argv);
  if (!parsed.ok) {
    writeFd(2, `jdls: ${parsed.error.message}\ntry jdls -h\n`);
    return 2;
  }
  try {
    return await run(parsed.command);
  } catch (e) {
    if (e instanceof PipeClosed) return 0;
    try {
      writeFd(2, `jdls: ${(e as Error).message}\n`);
    } catch {
      /* stderr gone too */
    }
    return 1;
  }
}

// process.exit, not exitCode: output is written synchronously, and an exit
// here does not wait for anything the addon or a timer might still hold.
main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  () => process.exit(1),
);
