// router.ts - which server(s) a client request goes to. The Router interface
// is what client.ts talks to; SingleRouter is the plain case (one SERVER),
// ResilientRouter (resilient.ts) the SERVER2 case. Does not own: sockets
// and the TIMEOUT clock (connection.ts), results (client.ts).
import type { JdlsError } from '../errors.js';
import type { JdlsServer } from './jdls-env.js';
import { ServerConnection, type ConnectionOptions, type FinalFrame, type RequestFrame, type RequestHandle, type RequestOptions } from './connection.js';

/** One request in flight, however many servers it visits. */
export interface Call {
  answer: Promise<FinalFrame>;
  /** withdraw a waiting LOCK (CANCEL); no-op once answered */
  cancel(): void;
}

export interface RouterEvents {
  /** the last server failed */
  dead(e: JdlsError): void;
  failover(info: { failed: JdlsServer; error: JdlsError; now: JdlsServer }): void;
  mismatch(info: { request: string; primary: string; secondary: string }): void;
}

export interface Router {
  /** the connection answering requests now */
  readonly primary: ServerConnection;
  /** every live connection, primary first (INFO goes to each: each server writes its own record of this client) */
  readonly all: readonly ServerConnection[];
  /** whether requests are duplicated to a secondary */
  readonly resilient: boolean;
  /** a request that changes or reads lock state (duplicated in resilient mode) */
  send(frame: RequestFrame, opts: RequestOptions): Call;
  /** a request for the primary alone (TEST, PING) */
  sendPrimaryOnly(frame: RequestFrame, opts: RequestOptions): Call;
  close(): Promise<void>;
}

/** A request to one connection (a class, not a closure per request: the client's allocation sets its GC pace). */
class SingleCall implements Call {
  readonly answer: Promise<FinalFrame>;
  readonly #conn: ServerConnection;
  readonly #id: number;

  constructor(conn: ServerConnection, h: RequestHandle) {
    this.answer = h.answer;
    this.#conn = conn;
    this.#id = h.id;
  }

  cancel(): void {
    this.#conn.cancel(this.#id);
  }
}

/** One server: every request goes to it; its failure is the client's death. */
export class SingleRouter implements Router {
  readonly primary: ServerConnection;
  readonly resilient = false;

  private constructor(conn: ServerConnection) {
    this.primary = conn;
  }

  get all(): readonly ServerConnection[] {
    return this.primary.state === 'open' ? [this.primary] : [];
  }

  static async open(server: JdlsServer, connOpts: () => ConnectionOptions, events: Pick<RouterEvents, 'dead'>): Promise<SingleRouter> {
    const conn = await ServerConnection.open(server, { ...connOpts(), onFail: (e) => events.dead(e) });
    return new SingleRouter(conn);
  }

  send(frame: RequestFrame, opts: RequestOptions): Call {
    return new SingleCall(this.primary, this.primary.request(frame, opts));
  }

  sendPrimaryOnly(frame: RequestFrame, opts: RequestOptions): Call {
    return this.send(frame, opts);
  }

  close(): Promise<void> {
    return this.primary.close();
  }
}
