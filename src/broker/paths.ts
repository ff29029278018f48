// paths.ts - where an installation's broker lives and its settings: the
// Unix socket ($JDLS_BROKER, else $JBCRELEASEDIR/tmp/jdls-broker.sock), its
// pid file (<socket>.pid, JSON {pid, start}) and the idle time after which it exits
// ($JDLS_BROKER_IDLE_MS). The shim computes the socket path the same way
// (shim/shim_broker.c sock_path); docs/broker.md states the rule.
import path from 'node:path';
import { releaseDir } from '../installation.js';

export const DEFAULT_IDLE_MS = 300_000;

export function brokerSocketPath(env: NodeJS.ProcessEnv = process.env): string {
  const set = env['JDLS_BROKER'];
  if (set) return path.resolve(set);
  return path.join(releaseDir(env), 'tmp', 'jdls-broker.sock');
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
