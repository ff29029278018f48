// witness.ts - the split-brain guard of a SERVER2 pair: leadership held as
// an etcd key under a lease (docs/server.md, "The witness";
// /work/notes/pair-contract.md).
//
// Owns: campaigning for `<prefix>/leader`, renewing its lease, the term
// counter `<prefix>/term`, and the one number every lock-server process of
// this host obeys: "leader until <CLOCK_MONOTONIC ns>" (or follower). Does
// not own: the HTTP calls (etcd.ts), raising the token floors (the
// becomeLeader hook: token-epoch.ts beginTermEpoch), telling the lock-server
// processes (listener.ts) or refusing locks (leadership.ts, session.ts).
//
// The lease-safety arithmetic. etcd deletes the leader key TTL seconds
// after it last processed a grant or keepalive of its lease - never before
// the moment we SENT that request. So this server may act as leader until
//   sent + min(leaseMs, TTL) - margin,   margin = max(leaseMs / 5, 500 ms)
// where `sent` is our CLOCK_MONOTONIC reading before the request left. The
// margin covers a difference in clock rate between this host and etcd's
// and the time a lock-server process takes to notice (its timer may run
// late; it also checks the clock at every grant). The other server can only
// take the key after etcd deleted it, i.e. after our deadline: two leaders
// never grant at the same time. process.hrtime.bigint() is CLOCK_MONOTONIC,
// one clock for every process of the host, so the listener can hand the
// deadline to its lock-server processes as a number.
//
// Failure of etcd never ends the process: a failed call is logged (once per
// change), retried, and the leader simply stops being one at its deadline.
import os from 'node:os';
import type { Logger } from '../log.js';
import { JdlsError } from '../errors.js';
import { EtcdClient } from './etcd.js';

export interface WitnessConfig {
  /** etcd client URLs, e.g. http://10.0.0.1:2379 */
  endpoints: string[];
  /** key prefix of this pair, e.g. /jdls/pair-a */
  prefix: string;
  /** lease of the leader key (ms) */
  leaseMs: number;
  /** this server's name in the leader key ('' = hostname:port) */
  name: string;
}

export type WitnessState =
  | { role: 'leader'; term: number; untilNs: bigint; leader: string }
  | { role: 'follower'; term: number; leader: string | undefined };

export interface WitnessHooks {
  log: Logger;
  /** the highest token epoch this host has reached (token-epoch.ts localEpoch) */
  localEpoch(): number;
  /** about to lead for `term`: raise the token floors; a throw means "must not lead" */
  becomeLeader(term: number): void;
  /** every change, and every renewal of the deadline */
  onState(s: WitnessState): void;
}

export const marginMs = (leaseMs: number): number => Math.max(Math.floor(leaseMs / 5), 500);
const MS = 1_000_000n;
const nowNs = (): bigint => process.hrtime.bigint();

export class Witness {
  readonly cfg: WitnessConfig;
  readonly name: string;
  readonly #etcd: EtcdClient;
  readonly #hooks: WitnessHooks;
  readonly #leaderKey: string;
  readonly #termKey: string;
  #state: WitnessState = { role: 'follower', term: 0, leader: undefined };
  #lease: string | undefined;
  #timer: NodeJS.Timeout | undefined;
  #stopped = false;
  #busy = false;
  /** etcd answered the last call (for logging a change only, not each failure) */
  #etcdOk = true;
  /** PROMOTE asked: try often until this (ms since the epoch) */
  #urgentUntil = 0;
  #waiters = new Set<(term: number | undefined) => void>();
  /** fires at the leader's deadline: the loss is declared even if an etcd call hangs */
  #lapseTimer: NodeJS.Timeout | undefined;

  constructor(cfg: WitnessConfig, port: number, hooks: WitnessHooks) {
    this.cfg = cfg;
    this.name = cfg.name || `${os.hostname()}:${port}`;
    this.#etcd = new EtcdClient(cfg.endpoints);
    this.#hooks = hooks;
    const p = cfg.prefix.replace(/\/+$/, '');
    this.#leaderKey = `${p}/leader`;
    this.#termKey = `${p}/term`;
  }

  get state(): WitnessState {
    return this.#state;
  }

  /** Leader now, by the clock (not only by the last word). */
  get leading(): boolean {
    return this.#state.role === 'leader' && nowNs() < this.#state.untilNs;
  }

  get endpoint(): string {
    return this.#etcd.current;
  }

  start(): void {
    this.#hooks.onState(this.#state); // the lock servers and -dvL know there is a witness (follower until it leads)
    this.#schedule(0);
  }

  /**
   * Stop campaigning and renewing. The lease is NOT revoked: the lock-server
   * processes keep serving their clients after the listener stops and obey
   * their last deadline; revoking would let the other server lead while
   * they still may grant. etcd drops the key when the lease runs out.
   */
  stop(): void {
    this.#stopped = true;
    if (this.#timer) clearTimeout(this.#timer);
    if (this.#lapseTimer) clearTimeout(this.#lapseTimer);
    for (const w of [...this.#waiters]) w(undefined);
    this.#waiters.clear();
  }

  /**
   * A client asks this server to lead (PROMOTE): the term when it leads
   * within waitMs (at once when it does already), else undefined.
   */
  promote(waitMs: number): Promise<number | undefined> {
    if (this.leading) return Promise.resolve(this.#state.term);
    if (this.#stopped) return Promise.resolve(undefined);
    return new Promise((resolve) => {
      const done = (term: number | undefined): void => {
        clearTimeout(t);
        this.#waiters.delete(done);
        resolve(term);
      };
      const t = setTimeout(() => done(undefined), waitMs);
      this.#waiters.add(done);
      this.#urgentUntil = Math.max(this.#urgentUntil, Date.now() + waitMs);
      this.#hooks.log.info({ waitMs, leader: this.#state.leader }, 'PROMOTE: a client asks this server to lead; trying at once');
      if (!this.#busy) this.#schedule(0);
    });
  }

  // ---- the loop -----------------------------------------------------------

  #schedule(ms: number): void {
    if (this.#stopped) return;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = setTimeout(() => void this.#step(), ms);
  }

  /** How long a follower waits between looks at the key. */
  #pollMs(): number {
    if (Date.now() < this.#urgentUntil) return 100;
    return Math.max(100, Math.min(1000, Math.floor(this.cfg.leaseMs / 5)));
  }

  async #step(): Promise<void> {
    if (this.#stopped || this.#busy) return;
    this.#busy = true;
    let next: number;
    try {
      next = this.#state.role === 'leader' ? await this.#renew() : await this.#campaign();
    } catch (e) {
      // Never here by design (each step catches its own); the loop must not stop.
      this.#hooks.log.error({ err: e }, 'witness: unexpected failure; retrying');
      next = this.#pollMs();
    } finally {
      this.#busy = false;
    }
    this.#schedule(next);
  }

  #etcdFailed(e: unknown, what: string): void {
    if (this.#etcdOk) this.#hooks.log.warn({ err: (e as Error).message, endpoints: this.cfg.endpoints }, `witness: etcd ${what} failed; retrying (${(e as Error).message})`);
    this.#etcdOk = false;
  }

  #etcdAnswered(): void {
    if (!this.#etcdOk) this.#hooks.log.info({ endpoint: this.#etcd.current }, 'witness: etcd answers again');
    this.#etcdOk = true;
  }

  #set(s: WitnessState, why?: string): void {
    const before = this.#state;
    this.#state = s;
    const changed = before.role !== s.role || before.term !== s.term || before.leader !== s.leader;
    // A follower's unchanged look at the key is no news (the lock servers and the record are not told each poll).
    if (!changed && s.role === 'follower') return;
    if (changed) {
      if (s.role === 'leader') this.#hooks.log.warn({ term: s.term, name: this.name }, `witness: this server is now the pair's LEADER, term ${s.term}`);
      else if (before.role === 'leader') this.#hooks.log.error({ term: s.term, leader: s.leader }, `witness: leadership LOST (${why ?? 'unknown'}); lock servers stop granting and close their connections`);
      else this.#hooks.log.info({ term: s.term, leader: s.leader }, `witness: follower; the leader is ${s.leader ?? 'nobody (yet)'}, term ${s.term}`);
    }
    try {
      this.#hooks.onState(s);
    } catch (e) {
      this.#hooks.log.error({ err: e }, 'witness: could not pass on the state');
    }
    if (this.#lapseTimer) clearTimeout(this.#lapseTimer);
    this.#lapseTimer = undefined;
    if (s.role === 'leader') {
      // Belt and braces: the renewal loop declares the loss when a call
      // fails, but a call that hangs must not keep this listener calling
      // itself leader (the lock servers stop by their own clock anyway).
      const ms = Number((s.untilNs - nowNs()) / MS) + 1;
      this.#lapseTimer = setTimeout(() => {
        this.#lapseTimer = undefined;
        if (this.#state === s && nowNs() >= s.untilNs) this.#lose('the lease was not renewed in time (etcd unreachable or too slow)');
      }, Math.max(0, ms));
    }
    if (s.role === 'leader' && nowNs() < s.untilNs) for (const w of [...this.#waiters]) w(s.term);
  }

  /** A budget for one call: a follower's is its poll period, at least 1 s. */
  #budget(): number {
    return Math.max(1000, Math.floor(this.cfg.leaseMs / 2));
  }

  /** One attempt to take the key. Returns ms until the next step. */
  async #campaign(): Promise<number> {
    let leader, term;
    try {
      [leader, term] = await this.#etcd.read([this.#leaderKey, this.#termKey], this.#budget());
      this.#etcdAnswered();
    } catch (e) {
      this.#etcdFailed(e, 'read');
      return this.#pollMs();
    }
    const termNow = parseTerm(term?.value);
    if (leader) {
      this.#set({ role: 'follower', term: termNow, leader: leader.value });
      return this.#pollMs();
    }
    const ttlS = Math.ceil(this.cfg.leaseMs / 1000);
    let lease: { id: string; ttlS: number };
    const sent = nowNs(); // before the grant leaves: etcd's clock for the lease starts later
    try {
      lease = await this.#etcd.grant(ttlS, this.#budget());
    } catch (e) {
      this.#etcdFailed(e, 'lease grant');
      return this.#pollMs();
    }
    let local = 0;
    try {
      local = this.#hooks.localEpoch();
    } catch (e) {
      this.#hooks.log.error({ err: e }, 'witness: cannot read the local token epoch; not campaigning');
      void this.#revoke(lease.id);
      return this.#pollMs();
    }
    const next = Math.max(termNow, local) + 1;
    let r;
    try {
      r = await this.#etcd.txn(
        [{ key: this.#leaderKey, target: 'CREATE', createRevision: 0n }, { key: this.#termKey, target: 'MOD', modRevision: term?.modRevision ?? 0n }],
        [{ put: { key: this.#leaderKey, value: this.name, lease: lease.id } }, { put: { key: this.#termKey, value: String(next) } }],
        [{ range: { key: this.#leaderKey } }, { range: { key: this.#termKey } }],
        this.#budget(),
      );
      this.#etcdAnswered();
    } catch (e) {
      // Unknown whether it applied: if it did, the key is ours under this
      // lease, and keeping the lease alive would make us a leader that does
      // not know it. Revoke it: the key goes, and the next round decides.
      this.#etcdFailed(e, 'campaign txn');
      void this.#revoke(lease.id);
      return this.#pollMs();
    }
    if (!r.succeeded) {
      void this.#revoke(lease.id);
      this.#set({ role: 'follower', term: parseTerm(r.ranges[1]?.value), leader: r.ranges[0]?.value });
      return this.#pollMs();
    }
    const untilNs = sent + BigInt(Math.min(this.cfg.leaseMs, lease.ttlS * 1000) - marginMs(this.cfg.leaseMs)) * MS;
    try {
      this.#hooks.becomeLeader(next);
    } catch (e) {
      this.#hooks.log.error({ err: e, term: next }, `witness: took the leadership key but cannot raise the token floor to term ${next}: giving it up (${(e as Error).message})`);
      await this.#revoke(lease.id);
      return this.#pollMs() * 5;
    }
    if (nowNs() >= untilNs) {
      // etcd was so slow that by our arithmetic the lease may be gone
      // already: never lead on it. Give the key back; the next round decides.
      this.#hooks.log.warn({ term: next }, 'witness: took the leadership key too slowly to use it (etcd slow); giving it back');
      await this.#revoke(lease.id);
      return this.#pollMs();
    }
    this.#lease = lease.id;
    this.#set({ role: 'leader', term: next, untilNs, leader: this.name });
    return this.#renewEvery();
  }

  #renewEvery(): number {
    return Math.max(50, Math.floor(this.cfg.leaseMs / 3));
  }

  /** The leader renews. Returns ms until the next step. */
  async #renew(): Promise<number> {
    const s = this.#state;
    const lease = this.#lease;
    if (s.role !== 'leader' || !lease) return 0;
    const left = Number((s.untilNs - nowNs()) / MS);
    if (left <= 0) return this.#lose('the lease was not renewed in time (etcd unreachable or too slow)');
    const sent = nowNs();
    let ttlS: number;
    try {
      // No later than the deadline: an answer after it is no use.
      ttlS = await this.#etcd.keepalive(lease, left);
      this.#etcdAnswered();
      // Lost meanwhile (the lapse timer): that lease was given up.
      if (this.#lease !== lease) return this.#pollMs();
    } catch (e) {
      if (this.#lease !== lease) return this.#pollMs();
      this.#etcdFailed(e, 'lease keepalive');
      const stillLeft = Number((s.untilNs - nowNs()) / MS);
      if (stillLeft <= 0) return this.#lose('the lease was not renewed in time (etcd unreachable or too slow)');
      return Math.min(200, stillLeft);
    }
    this.#hooks.log.debug({ ttlS, tookMs: Number((nowNs() - sent) / MS) }, 'witness: lease renewed');
    if (ttlS <= 0) return this.#lose('etcd no longer has the lease (it expired)');
    const untilNs = sent + BigInt(Math.min(this.cfg.leaseMs, ttlS * 1000) - marginMs(this.cfg.leaseMs)) * MS;
    // Never move the deadline back (a slow answer to an older send).
    this.#set({ role: 'leader', term: s.term, untilNs: untilNs > s.untilNs ? untilNs : s.untilNs, leader: this.name });
    return this.#renewEvery();
  }

  #lose(why: string): number {
    const lease = this.#lease;
    this.#lease = undefined;
    this.#set({ role: 'follower', term: this.#state.term, leader: undefined }, why);
    // Past our deadline no lock server of ours grants (leadership.ts checks
    // the clock), so giving the key back early only speeds up the other side.
    if (lease) void this.#revoke(lease);
    return this.#pollMs();
  }

  async #revoke(id: string): Promise<void> {
    try {
      await this.#etcd.revoke(id, 1000);
    } catch {
      /* it expires by itself */
    }
  }
}

function parseTerm(v: string | undefined): number {
  if (v === undefined) return 0;
  const n = Number(v.trim());
  if (!Number.isSafeInteger(n) || n < 0) throw new JdlsError('SYSTEM', `witness: the term key holds ${JSON.stringify(v.slice(0, 40))}, not a term`);
  return n;
}
