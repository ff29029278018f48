// store-client.ts - a chaos client's connection to the guarded-value store
// (store-protocol.ts): one request at a time, answered in order.
import net from 'node:net';
import path from 'node:path';
import { STORE_SOCKET } from './store-protocol.js';

export type StoreAnswer = { ok: true; value: number } | { ok: false; max: bigint };

export class StoreClient {
  #sock: net.Socket;
  #buf = '';
  #waiting: ((line: string) => void)[] = [];

  private constructor(sock: net.Socket, readonly client: string) {
    this.#sock = sock;
    sock.setEncoding('utf8');
    sock.on('data', (chunk: string) => {
      this.#buf += chunk;
      let nl: number;
      while ((nl = this.#buf.indexOf('\n')) >= 0) {
        const line = this.#buf.slice(0, nl);
        this.#buf = this.#buf.slice(nl + 1);
        this.#waiting.shift()?.(line);
      }
    });
  }

  static connect(runDir: string, client: string): Promise<StoreClient> {
    return new Promise((resolve, reject) => {
      const s = net.createConnection(path.join(runDir, STORE_SOCKET));
      s.once('connect', () => resolve(new StoreClient(s, client)));
      s.once('error', reject);
    });
  }

  #ask(line: string): Promise<string> {
    return new Promise((resolve, reject) => {
      this.#waiting.push(resolve);
      this.#sock.write(`${line}\n`, (e) => e && reject(e));
    });
  }

  static #answer(line: string): StoreAnswer {
    const [kind, arg = ''] = line.split(' ');
    if (kind === 'V') return { ok: true, value: Number(arg) };
    if (kind === 'OK') return { ok: true, value: 0 };
    if (kind === 'X') return { ok: false, max: BigInt(arg) };
    throw new Error(`store: ${line}`);
  }

  async read(key: string, token: bigint): Promise<StoreAnswer> {
    return StoreClient.#answer(await this.#ask(`R ${this.client} ${key} ${token}`));
  }

  async write(key: string, token: bigint, value: number): Promise<StoreAnswer> {
    return StoreClient.#answer(await this.#ask(`W ${this.client} ${key} ${token} ${value}`));
  }

  close(): void {
    this.#sock.end();
  }
}
