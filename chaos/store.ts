// store.ts - the guarded-value store (a process of its own): the "database"
// the chaos clients read-modify-write under their locks, recording every
// request with who made it, when and with which fencing token
// (store-protocol.ts). Its own process so that the runner's synchronous
// work (ip, kill, spawning) never holds a request back: requests are
// handled in the order they arrive.
//
//   node store.js <run dir> <fenced|ignore>
// Prints "READY" when it listens; exits at SIGTERM after flushing.
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { STORE_LOG, STORE_SOCKET, type StoreMode, type StoreRecord } from './store-protocol.js';

function main(): void {
  const [dir, modeArg] = process.argv.slice(2);
  if (!dir || (modeArg !== 'fenced' && modeArg !== 'ignore')) {
    process.stderr.write('usage: store <run dir> <fenced|ignore>\n');
    process.exit(2);
  }
  const mode: StoreMode = modeArg;
  const values = new Map<string, number>();
  const maxToken = new Map<string, bigint>();
  const log = fs.openSync(path.join(dir, STORE_LOG), 'a');
  const sock = path.join(dir, STORE_SOCKET);
  fs.rmSync(sock, { force: true });

  const handle = (line: string): string => {
    const [op, c = '?', key = '?', tokenText = '0', valueText] = line.split(' ');
    let token: bigint;
    try {
      token = BigInt(tokenText);
    } catch {
      return 'E bad token';
    }
    if (op !== 'R' && op !== 'W') return 'E bad op';
    const max = maxToken.get(key) ?? 0n;
    const stale = token !== 0n && token < max;
    const ok = mode === 'ignore' || !stale;
    let value = values.get(key) ?? 0;
    if (op === 'W') {
      const v = Number(valueText);
      if (!Number.isSafeInteger(v)) return 'E bad value';
      value = v;
      if (ok) values.set(key, v);
    }
    if (ok && token > max) maxToken.set(key, token);
    const rec: StoreRecord = { t: process.hrtime.bigint().toString(), c, key, op, token: token.toString(), value, ok, max: max.toString() };
    fs.writeSync(log, `${JSON.stringify(rec)}\n`);
    if (!ok) return `X ${max}`;
    return op === 'R' ? `V ${value}` : 'OK';
  };

  const server = net.createServer((s) => {
    let buf = '';
    s.setEncoding('utf8');
    s.on('data', (chunk: string) => {
      buf += chunk;
      let nl: number;
      let out = '';
      while ((nl = buf.indexOf('\n')) >= 0) {
        out += `${handle(buf.slice(0, nl))}\n`;
        buf = buf.slice(nl + 1);
      }
      if (out) s.write(out);
    });
    s.on('error', () => s.destroy());
  });
  server.listen(sock, () => {
    fs.chmodSync(sock, 0o666);
    process.stdout.write('READY\n');
  });
  process.on('SIGTERM', () => {
    fs.fsyncSync(log);
    process.exit(0);
  });
}

main();
