// witness-state.ts - what `jdls -dvL` shows of the witness: the listener
// writes `$JBCRELEASEDIR/jdls-witness.json` at every change and renewal
// (witness.ts onState), -dvL reads it while that listener runs.
//
// Owns: the file's format. The lease's end travels as wall-clock ms (the
// monotonic deadline means nothing to another process reading it later):
// only for display, never for a decision.
import fs from 'node:fs';
import path from 'node:path';
import { readTrusted, replaceFile, trustedOwners } from '../safefile.js';

export const WITNESS_FILE = 'jdls-witness.json';

export interface WitnessRecord {
  /** the listener that writes it */
  pid: number;
  endpoints: string[];
  /** the endpoint that answered last */
  endpoint: string;
  prefix: string;
  name: string;
  leaseMs: number;
  role: 'leader' | 'follower';
  term: number;
  /** the leader's name as the key says (follower), or this server's */
  leader: string | null;
  /** leader: until when it may grant (wall-clock ms, for display) */
  untilMs: number | null;
  updatedMs: number;
}

export const witnessFilePath = (dir: string): string => path.join(dir, WITNESS_FILE);

export function writeWitnessRecord(dir: string, r: WitnessRecord): void {
  replaceFile(witnessFilePath(dir), `${JSON.stringify(r)}\n`);
}

export function removeWitnessRecord(dir: string, pid: number): void {
  if (readWitnessRecord(dir)?.pid === pid) fs.rmSync(witnessFilePath(dir), { force: true });
}

/** The record, or undefined (none, unreadable, not of a trusted owner). */
export function readWitnessRecord(dir: string): WitnessRecord | undefined {
  try {
    const text = readTrusted(witnessFilePath(dir), trustedOwners(fs.statSync(dir, { throwIfNoEntry: false })?.uid));
    if (text === undefined) return undefined;
    const o = JSON.parse(text) as Partial<WitnessRecord>;
    if (typeof o.pid !== 'number' || (o.role !== 'leader' && o.role !== 'follower') || typeof o.term !== 'number' || !Array.isArray(o.endpoints)) return undefined;
    return o as WitnessRecord;
  } catch {
    return undefined;
  }
}

/** One line per fact, for -dvL's text. */
export function witnessText(r: WitnessRecord, now = Date.now()): string {
  const pad = (s: string): string => s.padEnd(26);
  let t = `${pad('Witness (etcd):')}${r.endpoints.join(', ')} prefix ${r.prefix}\n`;
  if (r.role === 'leader') {
    const left = Math.max(0, (r.untilMs ?? 0) - now);
    t += `${pad('Witness role:')}LEADER (${r.name}) term ${r.term}, lease left ${(left / 1000).toFixed(1)} s\n`;
  } else t += `${pad('Witness role:')}follower (${r.name}) of ${r.leader ?? 'nobody'}, term ${r.term}\n`;
  return t;
}
