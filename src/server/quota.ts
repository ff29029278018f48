// quota.ts - the limits that keep one client from taking what the others
// need: locks per connection and per client address, waits per connection,
// native wait threads per lock-server process, range lock files.
//
// Owns: the formulas (docs/server.md "Limits") and the per-process counters.
// Does not own: refusing (the session answers ERROR LIMIT) or the locks.
//
// Per address: counted in each lock-server process; the listener places a
// new connection in a process that already serves its address when that one
// has room (listener.ts), so an address's connections normally meet in one
// process and its quota holds estate-wide. An address spread over N processes
// (its process was full) can hold up to N times its share: stated in
// docs/server.md.
import fs from 'node:fs';
import type { ServerConfig } from './config.js';

export interface Limits {
  /** locks (records, OSLOCKS, range files) one connection may hold */
  perConnection: number;
  /** locks the connections of one address may hold together, in this process */
  perAddress: number;
  /** waits holding a native thread, per connection */
  blockingPerConnection: number;
}

/**
 * With a table of `capacity` entries: a connection may hold
 * min(maxLocksPerClient, floor(capacity x connectionSharePct / 100)), an
 * address min(maxLocksPerAddress, floor(capacity x addressSharePct / 100));
 * without a table (OS locks) the absolute settings alone.
 */
export function limitsFor(cfg: ServerConfig, capacity: number | undefined): Limits {
  const share = (pct: number): number => (capacity === undefined ? Infinity : Math.max(1, Math.floor((capacity * pct) / 100)));
  return {
    perConnection: Math.min(cfg.maxLocksPerClient, share(cfg.connectionSharePct)),
    perAddress: Math.min(cfg.maxLocksPerAddress, share(cfg.addressSharePct)),
    blockingPerConnection: Math.max(1, Math.floor(cfg.maxBlockingWaits / 4)),
  };
}

/** The connections-per-address cap of the listener: the setting, or half of maxConnections. */
export function connectionsPerAddress(cfg: ServerConfig): number {
  return cfg.maxConnectionsPerAddress > 0 ? cfg.maxConnectionsPerAddress : Math.ceil(cfg.maxConnections / 2);
}

/** A count per key (address), dropped at zero. */
export class Tally {
  #m = new Map<string, number>();

  get(k: string): number {
    return this.#m.get(k) ?? 0;
  }

  add(k: string, n: number): void {
    const v = (this.#m.get(k) ?? 0) + n;
    if (v > 0) this.#m.set(k, v);
    else this.#m.delete(k);
  }
}

/** Locks held per client address in this process (every session adds its own). */
export const addressLocks = new Tally();

/**
 * Native threads for waits (an OS record lock or a range that waits blocks
 * in F_OFD_SETLKW on a thread of its own: ofd.ts). Per process: one
 * connection's 600 waits made 600 threads.
 */
export class ThreadBudget {
  #used = 0;
  max = 1024;

  get used(): number {
    return this.#used;
  }

  take(): boolean {
    if (this.#used >= this.max) return false;
    this.#used++;
    return true;
  }

  give(): void {
    if (this.#used > 0) this.#used--;
  }
}

export const blockingWaits = new ThreadBudget();

/**
 * Range lock files (jrange_*): one per distinct file identity a client
 * names, and nothing removes them (removing one while another process has
 * it open could split a lock). So their number is capped: a range on a file
 * whose lock file does not exist yet is refused once the directory holds
 * maxRangeFiles entries. The count is read from the directory at first use
 * and after each refusal (at most once a second), and counted up as this
 * process creates files.
 */
export class RangeFileBudget {
  #count: number | undefined;
  #readMs = 0;
  constructor(readonly dir: string, readonly max: number) {}

  #read(): number {
    try {
      this.#count = fs.readdirSync(this.dir).length;
    } catch {
      this.#count = 0;
    }
    this.#readMs = Date.now();
    return this.#count;
  }

  /** May `file` (a path in dir) be used? True if it exists or there is room (then it is counted). */
  admit(file: string): boolean {
    if (fs.existsSync(file)) return true;
    let n = this.#count ?? this.#read();
    if (n >= this.max && Date.now() - this.#readMs >= 1000) n = this.#read();
    if (n >= this.max) return false;
    this.#count = n + 1;
    return true;
  }
}

/**
 * Descriptors this process may spend on locks: half its RLIMIT_NOFILE soft
 * limit (the rest is for connections, the table, logs). Each OS record lock
 * file and range lock file an owner holds or waits in is a descriptor: one
 * client's 20,000 ranges on distinct files drove a lock server to EMFILE,
 * after which it could not even receive new connections. Read from
 * /proc/self/limits at most once a second (an operator may raise it with
 * prlimit).
 */
export class DescriptorBudget {
  #max = 512;
  #readMs = 0;

  get max(): number {
    const now = Date.now();
    if (now - this.#readMs >= 1000) {
      this.#readMs = now;
      try {
        const line = fs.readFileSync('/proc/self/limits', 'utf8').split('\n').find((l) => l.startsWith('Max open files'));
        const soft = line?.slice('Max open files'.length).trim().split(/\s+/)[0];
        const n = soft === 'unlimited' ? 1 << 20 : Number(soft);
        if (Number.isFinite(n) && n > 0) this.#max = Math.max(16, Math.floor(n / 2));
      } catch {
        /* keep the last value */
      }
    }
    return this.#max;
  }
}

export const lockDescriptors = new DescriptorBudget();
