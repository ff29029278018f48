// leadership.ts - a lock-server process's view of its pair's leadership
// (witness.ts runs in the listener and tells every lock-server process).
//
// Owns: the one question session.ts asks before granting a LOCK or
// RANGE_LOCK without MIRROR - "may this process grant now?" - answered from
// the listener's last word AND the clock: a leader may grant only while
// CLOCK_MONOTONIC < until. Also the moment leadership lapses: a timer at
// `until` that, unless a renewal moved it, calls onLost (the lock server
// then closes EVERY client connection with ERROR NOT_LEADER, which releases
// their locks and ends their waits: no wait is granted by a server that is
// no longer the leader).
//
// Trap: the timer may fire late (a busy event loop); that is why mayGrant
// reads the clock itself and does not trust the timer to have run. And if
// the listener dies nobody renews: this process stops at `until` by itself.
import type { Logger } from '../log.js';

/** The listener's word to its lock-server processes (IPC: JSON, so the deadline is a decimal string of ns). */
export type LeadershipWord =
  | { role: 'leader'; term: number; untilNs: string; leader: string }
  | { role: 'follower'; term: number; leader: string | null };

export function isLeadershipWord(v: unknown): v is LeadershipWord {
  if (typeof v !== 'object' || v === null) return false;
  const o = v as Record<string, unknown>;
  if (typeof o['term'] !== 'number') return false;
  if (o['role'] === 'leader') return typeof o['untilNs'] === 'string' && /^\d+$/.test(o['untilNs']);
  return o['role'] === 'follower';
}

export class Leadership {
  /** jdls.yaml has a witness: grants need the leadership */
  readonly witnessed: boolean;
  #leader = false;
  #term = 0;
  #untilNs = 0n;
  #timer: NodeJS.Timeout | undefined;
  readonly #onLost: (why: string) => void;
  readonly #log: Logger;

  constructor(witnessed: boolean, log: Logger, onLost: (why: string) => void) {
    this.witnessed = witnessed;
    this.#log = log;
    this.#onLost = onLost;
  }

  /** A LOCK / RANGE_LOCK without MIRROR may be granted now. */
  mayGrant(): boolean {
    return !this.witnessed || (this.#leader && process.hrtime.bigint() < this.#untilNs);
  }

  /** For WELCOME: leader only while it may grant. */
  get role(): 'leader' | 'follower' {
    return this.mayGrant() ? 'leader' : 'follower';
  }

  get term(): number {
    return this.#term;
  }

  update(w: LeadershipWord): void {
    if (!this.witnessed) return;
    const was = this.mayGrant();
    this.#term = w.term;
    if (w.role === 'leader') {
      const until = BigInt(w.untilNs);
      const renewed = !this.#leader || until > this.#untilNs;
      this.#leader = true;
      if (until > this.#untilNs) this.#untilNs = until;
      if (!was && this.mayGrant()) this.#log.info({ term: w.term }, `this lock server grants as the pair's leader, term ${w.term}`);
      if (renewed) this.#arm();
      return;
    }
    this.#leader = false;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
    if (was) this.#lost(`the witness says this server is no longer the leader (leader now: ${w.leader ?? 'none'})`);
  }

  close(): void {
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  #arm(): void {
    if (this.#timer) clearTimeout(this.#timer);
    const ms = Number((this.#untilNs - process.hrtime.bigint()) / 1_000_000n);
    // +1: fire at or after `until`, never a hair before it (then it would re-arm for nothing).
    this.#timer = setTimeout(() => this.#expire(), Math.max(0, ms + 1));
    this.#timer.unref(); // the clients keep the process alive, not this
  }

  #expire(): void {
    this.#timer = undefined;
    if (!this.#leader) return;
    if (process.hrtime.bigint() < this.#untilNs) return this.#arm();
    this.#leader = false;
    this.#lost('its leadership lease was not renewed in time (the listener or etcd is gone or too slow)');
  }

  #lost(why: string): void {
    this.#log.error({ term: this.#term }, `leadership lost: ${why}; closing every client connection with NOT_LEADER`);
    try {
      this.#onLost(why);
    } catch (e) {
      this.#log.error({ err: e }, 'could not close the connections after losing the leadership');
    }
  }
}
