// handover.ts - direct mode of the broker: it opens a preloaded process's
// server connection, shakes hands on its behalf, and hands the connected
// socket over to the process (SCM_RIGHTS, native/addon/fdpass.cc).
//
// Why: through the broker a request crosses two extra processes each way
// (shim -> broker -> lock server -> broker -> shim); handed over, it goes
// straight to the lock server. An fcntl lock+unlock pair on a jlock file
// went from ~4.4 to ~2 echo round trips (docs/benchmarks.md, "The shim").
// The process's death still closes the connection at once (the kernel
// closes its descriptors) and the server releases its locks; the broker is
// not needed for the locks to stay held. Resilience (SERVER2) needs the
// broker's JdlsClient in the path, so it is not handed over (session.ts).
//
// Owns: the handshake for another process, and the hand-over. Does not own:
// the conversation after it (the shim: shim/shim_broker.c).
import net from 'node:net';
import { JdlsError } from '../errors.js';
import { encode, FrameReader } from '../protocol/codec.js';
import type { HelloFrame, ServerFrame } from '../protocol/frames.js';
import { ClientHandshake } from '../client/handshake.js';
import { native } from '../native.js';
import { connectError } from '../client/errors.js';
import { hostText, type JdlsServer } from '../client/jdls-env.js';

interface WithFd {
  _handle?: { fd?: unknown } | null;
}

/** The socket's descriptor, or -1 (Node's handle keeps it as `fd`; undocumented, so checked). */
export function socketFd(sock: net.Socket): number {
  const fd = (sock as unknown as WithFd)._handle?.fd;
  return typeof fd === 'number' && fd >= 0 ? fd : -1;
}

/**
 * Connect to `server` as the process that sent `hello` (its pid, port,
 * program, host and JDLS options; keep-alive 0: it will not ping, the
 * server watches the connection with TCP keep-alive), and resolve with the
 * socket (paused, nothing read past WELCOME) and the WELCOME frame's bytes.
 * With `key` (JDLS SECRET, read by the broker) the broker authenticates for
 * the process (CHALLENGE, AUTH, AUTH_OK): the socket handed over is already
 * authenticated, so the shim needs no crypto. Only the WELCOME goes to the
 * process. TLS is never handed over (a TLS session cannot move to another
 * process): session.ts serves such a process through the broker.
 */
export function connectFor(server: JdlsServer, hello: HelloFrame, timeoutMs: number, key?: Buffer): Promise<{ sock: net.Socket; welcome: Buffer }> {
  const label = `${hostText(server.host)}:${server.port}`;
  return new Promise((resolve, reject) => {
    const sock = net.connect({ host: server.host, port: server.port });
    const reader = FrameReader.forClient();
    // TOKENS only if the process asked: the WELCOME (and every GRANTED after it) goes to the process itself.
    const hs = new ClientHandshake(label, {
      port: hello.port, pid: hello.pid, keepaliveMs: 0, host: hello.host, program: hello.program, options: hello.options,
      ...(hello.tokens ? { tokens: true as const } : {}),
      // INFO as the process offered it: its WELCOME says whether the server takes INFO.
      ...(hello.info ? { info: true as const } : {}),
    }, key);
    let settled = false;
    const finish = (e: JdlsError | undefined, welcome?: Buffer): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      sock.removeAllListeners('data');
      if (e || !welcome) {
        sock.destroy();
        reject(e ?? new JdlsError('PROTOCOL', `lock server ${label}: no WELCOME`));
        return;
      }
      sock.pause();
      resolve({ sock, welcome });
    };
    const timer = setTimeout(() => finish(new JdlsError('SERVER_DEAD', `lock server ${label}: no WELCOME within ${timeoutMs} ms`)), timeoutMs);
    sock.on('error', (e) => finish(connectError(server.host, server.port, e)));
    sock.on('close', () => finish(new JdlsError('SERVER_CLOSED', `lock server ${label} closed the connection during the handshake`)));
    sock.once('connect', () => {
      sock.setNoDelay(true);
      sock.setKeepAlive(true, 10_000);
      sock.write(hs.hello);
    });
    sock.on('data', (chunk: Buffer) => {
      let frames: ServerFrame[];
      try {
        frames = reader.push(chunk);
      } catch (e) {
        finish(new JdlsError('PROTOCOL', `lock server ${label}: ${(e as Error).message}`));
        return;
      }
      const out = hs.onFrames(frames, (b) => sock.write(b));
      if (!out) return;
      if ('error' in out) return finish(out.error);
      if (out.after) return finish(new JdlsError('PROTOCOL', `lock server ${label}: expected WELCOME alone, got ${frames.map((x) => x.type).join(', ')}`));
      finish(undefined, encode(out.welcome, out.welcome.version));
    });
  });
}

/** An older server's answer to a HELLO flag it does not know (INFO): ERROR PROTOCOL "HELLO: unknown flags 0x…" (as src/client/connection.ts tells it). */
export function flagsRefused(e: unknown): boolean {
  return e instanceof JdlsError && e.code === 'PROTOCOL' && /HELLO: unknown flags 0x[0-9a-f]+$/.test(e.message);
}

/** Send the WELCOME bytes with the server socket's descriptor over the shim's socket; 0 or -errno. */
export function handOver(shim: net.Socket, server: net.Socket, welcome: Buffer): number {
  const to = socketFd(shim);
  const fd = socketFd(server);
  if (to < 0 || fd < 0) return -9; // EBADF: no descriptor to pass (see socketFd)
  return native.fdpass.sendFd(to, fd, welcome);
}
