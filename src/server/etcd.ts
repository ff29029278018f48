// etcd.ts - the five etcd v3 calls the witness needs, over etcd's own JSON
// gateway (HTTP POST /v3/..., keys and values base64, 64-bit integers as
// decimal strings; checked against etcd 3.4.23).
//
// Owns: the HTTP calls, trying the configured endpoints in turn, and a
// per-call time budget. Does not own: what the calls mean (witness.ts).
//
// Why not the etcd3 npm client: every operation the witness needs (lease
// grant, lease keepalive, lease revoke, one txn, one range) is one POST, and
// the lease-safety arithmetic (witness.ts) needs to know exactly when a
// request was sent and to give up on it at a time of our choosing -
// AbortSignal.timeout per call does that, with Node's built-in fetch. The
// etcd3 client would bring gRPC and protobuf (and its own retry and
// keepalive timers, which would hide the send times) for the same five
// calls. The gateway is on by default on etcd's client port (3.4: /v3/).
import { JdlsError } from '../errors.js';

/** One key-value as the gateway gives it (decoded). */
export interface EtcdKv {
  key: string;
  value: string;
  createRevision: bigint;
  modRevision: bigint;
  lease: string;
}

export type EtcdCompare =
  | { key: string; target: 'CREATE'; createRevision: bigint }
  | { key: string; target: 'MOD'; modRevision: bigint };

export type EtcdOp = { put: { key: string; value: string; lease?: string } } | { range: { key: string } };

export interface EtcdTxnResult {
  succeeded: boolean;
  /** the ranges of the branch that ran, in order (puts give none) */
  ranges: (EtcdKv | undefined)[];
}

const b64 = (s: string): string => Buffer.from(s, 'utf8').toString('base64');
const unb64 = (s: unknown): string => (typeof s === 'string' ? Buffer.from(s, 'base64').toString('utf8') : '');
const big = (v: unknown): bigint => (typeof v === 'string' && /^\d+$/.test(v) ? BigInt(v) : typeof v === 'number' ? BigInt(Math.trunc(v)) : 0n);

type Json = Record<string, unknown>;
const obj = (v: unknown): Json => (typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Json) : {});

function kvOf(v: unknown): EtcdKv {
  const o = obj(v);
  return {
    key: unb64(o['key']), value: unb64(o['value']), createRevision: big(o['create_revision']),
    modRevision: big(o['mod_revision']), lease: typeof o['lease'] === 'string' ? o['lease'] : '',
  };
}

function opJson(op: EtcdOp): Json {
  if ('put' in op) return { request_put: { key: b64(op.put.key), value: b64(op.put.value), ...(op.put.lease ? { lease: op.put.lease } : {}) } };
  return { request_range: { key: b64(op.range.key) } };
}

function compareJson(c: EtcdCompare): Json {
  return c.target === 'CREATE'
    ? { key: b64(c.key), target: 'CREATE', result: 'EQUAL', create_revision: c.createRevision.toString() }
    : { key: b64(c.key), target: 'MOD', result: 'EQUAL', mod_revision: c.modRevision.toString() };
}

export class EtcdClient {
  readonly endpoints: readonly string[];
  /** the endpoint that answered last: tried first next time */
  #preferred = 0;

  constructor(endpoints: readonly string[]) {
    if (endpoints.length === 0) throw new JdlsError('BAD_ARGUMENT', 'etcd: no endpoints');
    this.endpoints = endpoints.map((e) => e.replace(/\/+$/, ''));
  }

  /** the endpoint tried first now (for -dvL and logs) */
  get current(): string {
    return this.endpoints[this.#preferred] ?? '';
  }

  /**
   * One POST, the endpoints in turn (the last good one first), within
   * `budgetMs` in all: each try gets what is left, at most its share. Rejects
   * with JdlsError SYSTEM naming every endpoint's failure.
   */
  async #post(path: string, body: Json, budgetMs: number): Promise<Json> {
    const end = Date.now() + budgetMs;
    const n = this.endpoints.length;
    const share = Math.max(200, Math.floor(budgetMs / n));
    const why: string[] = [];
    for (let i = 0; i < n; i++) {
      const idx = (this.#preferred + i) % n;
      const ep = this.endpoints[idx] as string;
      const left = end - Date.now();
      if (left <= 0) {
        why.push(`${ep}: no time left`);
        break;
      }
      // Trap: not AbortSignal.timeout(). Node holds that signal only weakly
      // (its timer closes over a WeakRef), and fetch keeps no strong
      // reference either, so a GC can collect it and the call then never
      // times out: a leader whose etcd was SIGSTOPped kept waiting on its
      // keepalive for ever (witness-pair "etcd silent", 1 run in ~5). Our
      // own controller and timer, held here until the call ends.
      const ac = new AbortController();
      const timer = setTimeout(() => ac.abort(new DOMException('no answer in time', 'TimeoutError')), Math.min(left, share));
      try {
        const res = await fetch(`${ep}${path}`, {
          method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body), signal: ac.signal,
        });
        const text = await res.text();
        // keepalive is a stream call: the gateway answers one JSON line per request message.
        const first = text.split('\n').find((l) => l.trim() !== '') ?? '{}';
        const j = obj(JSON.parse(first));
        if (!res.ok || typeof j['error'] === 'string') {
          const msg = typeof j['message'] === 'string' ? j['message'] : typeof j['error'] === 'string' ? j['error'] : `HTTP ${res.status}`;
          // An answer from etcd itself (not a transport failure): the cluster spoke; no other endpoint would say otherwise.
          this.#preferred = idx;
          throw new EtcdAnswer(msg);
        }
        this.#preferred = idx;
        return j;
      } catch (e) {
        if (e instanceof EtcdAnswer) throw new JdlsError('SYSTEM', `etcd ${ep}${path}: ${e.message}`);
        why.push(`${ep}: ${ac.signal.aborted ? 'no answer in time' : (e as Error).message}`);
      } finally {
        clearTimeout(timer);
      }
    }
    throw new JdlsError('SYSTEM', `etcd ${path}: ${why.join('; ')}`);
  }

  /** A lease of `ttlS` seconds; its id (decimal) and the TTL etcd gave (it may round up). */
  async grant(ttlS: number, budgetMs: number): Promise<{ id: string; ttlS: number }> {
    const j = await this.#post('/v3/lease/grant', { TTL: ttlS }, budgetMs);
    const id = typeof j['ID'] === 'string' ? j['ID'] : '';
    if (!/^\d+$/.test(id) || id === '0') throw new JdlsError('SYSTEM', `etcd lease grant: no lease id in the answer (${typeof j['error'] === 'string' ? j['error'] : 'none'})`);
    return { id, ttlS: Number(big(j['TTL'])) };
  }

  /** Renew a lease: its TTL now, 0 when etcd no longer has it (expired or revoked). */
  async keepalive(id: string, budgetMs: number): Promise<number> {
    const j = await this.#post('/v3/lease/keepalive', { ID: id }, budgetMs);
    // The gateway wraps stream answers in "result"; an unknown lease comes back without TTL.
    return Number(big(obj(j['result'])['TTL']));
  }

  async revoke(id: string, budgetMs: number): Promise<void> {
    try {
      await this.#post('/v3/lease/revoke', { ID: id }, budgetMs);
    } catch (e) {
      // Already gone is what we wanted.
      if (!(e instanceof JdlsError && /lease not found/.test(e.message))) throw e;
    }
  }

  async txn(compare: EtcdCompare[], success: EtcdOp[], failure: EtcdOp[], budgetMs: number): Promise<EtcdTxnResult> {
    const j = await this.#post('/v3/kv/txn', { compare: compare.map(compareJson), success: success.map(opJson), failure: failure.map(opJson) }, budgetMs);
    const responses = Array.isArray(j['responses']) ? j['responses'] : [];
    const ranges = responses.map((r) => obj(r)['response_range']).filter((r) => r !== undefined).map((r) => {
      const kvs = obj(r)['kvs'];
      return Array.isArray(kvs) && kvs.length > 0 ? kvOf(kvs[0]) : undefined;
    });
    return { succeeded: j['succeeded'] === true, ranges };
  }

  /** Read keys in one round trip (a txn without compares). */
  async read(keys: string[], budgetMs: number): Promise<(EtcdKv | undefined)[]> {
    return (await this.txn([], keys.map((key) => ({ range: { key } })), [], budgetMs)).ranges;
  }
}

/** etcd answered with an error (as opposed to not answering). */
class EtcdAnswer extends Error {}
