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
// not needed for the locks to stay held. A resilient pair (SERVER2, a shim
// whose HELLO says PAIR) gets BOTH connections, the primary's first, in one
// message: the shim keeps the pair's rules itself (docs/broker.md "Pairs").
//
// Owns: the handshake for another process, and the hand-over. Does not own:
// the conversation after it (the shim: shim/shim_broker.c).
import net from 'node:net';
import { JdlsError } from '../errors.js';
import { encode, FrameReader } from '../protocol/codec.js';
import type { HelloFrame, ServerFrame, WelcomeFrame } from '../protocol/frames.js';
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
export function connectFor(server: JdlsServer, hello: HelloFrame, timeoutMs: number, key?: Buffer): Promise<{ sock: net.Socket; welcome: Buffer; frame: WelcomeFrame }> {
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
      // PAIR as the process said (its SERVER2): the servers' WELCOMEs then say WITNESS and the role.
      ...(hello.pair ? { pair: true as const } : {}),
    }, key);
    let settled = false;
    const finish = (e: JdlsError | undefined, welcome?: Buffer, frame?: WelcomeFrame): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      sock.removeAllListeners('data');
      if (e || !welcome || !frame) {
        sock.destroy();
        reject(e ?? new JdlsError('PROTOCOL', `lock server ${label}: no WELCOME`));
        return;
      }
      sock.pause();
      resolve({ sock, welcome, frame });
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
      finish(undefined, encode(out.welcome, out.welcome.version), out.welcome);
    });
  });
}

/** An older server's answer to a HELLO flag it does not know (INFO): ERROR PROTOCOL "HELLO: unknown flags 0x…" (as src/client/connection.ts tells it). */
export function flagsRefused(e: unknown): boolean {
  return e instanceof JdlsError && e.code === 'PROTOCOL' && /HELLO: unknown flags 0x[0-9a-f]+$/.test(e.message);
}

/**
 * Send the WELCOME bytes with the server sockets' descriptors over the
 * shim's socket; 0 or -errno. One server: its WELCOME and descriptor. A pair:
 * both descriptors (primary, secondary) in one SCM_RIGHTS message on the
 * first WELCOME's bytes, the secondary's WELCOME right after it in the same
 * write - the shim reads the count of descriptors, then the second frame.
 */
export function handOver(shim: net.Socket, servers: net.Socket[], welcomes: Buffer[]): number {
  const to = socketFd(shim);
  const fds = servers.map(socketFd);
  if (to < 0 || fds.length < 1 || fds.length > 2 || fds.length !== welcomes.length || fds.some((fd) => fd < 0)) return -9; // EBADF: no descriptor to pass (see socketFd)
  return native.fdpass.sendFd(to, fds.length === 1 ? (fds[0] as number) : fds, Buffer.concat(welcomes));
}

/**
 * PROMOTE on a handed-over-to-be connection (paused after connectFor): the
 * answer, PROMOTED or ERROR (NOT_LEADER), within waitMs + 1 s. Nothing else
 * is outstanding on it, so the next frame is the answer.
 */
export function promoteOn(sock: net.Socket, label: string, waitMs: number): Promise<ServerFrame> {
  return new Promise((resolve, reject) => {
    const reader = FrameReader.forClient();
    let settled = false;
    const done = (e: Error | undefined, f?: ServerFrame): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      sock.removeListener('data', onData);
      sock.removeListener('close', onClose);
      sock.pause();
      if (e || !f) reject(e ?? new JdlsError('PROTOCOL', `lock server ${label}: no answer to PROMOTE`));
      else resolve(f);
    };
    const onData = (chunk: Buffer): void => {
      try {
        const frames = reader.push(chunk);
        const f = frames.find((x) => x.requestId === 1 && x.type !== 'WAITING');
        if (f) done(undefined, f);
      } catch (e) {
        done(new JdlsError('PROTOCOL', `lock server ${label}: ${(e as Error).message}`));
      }
    };
    const onClose = (): void => done(new JdlsError('SERVER_CLOSED', `lock server ${label} closed the connection before answering PROMOTE`));
    const timer = setTimeout(() => done(new JdlsError('SERVER_DEAD', `lock server ${label}: no answer to PROMOTE within ${waitMs + 1000} ms`)), waitMs + 1000);
    sock.on('data', onData);
    sock.on('close', onClose);
    sock.write(encode({ type: 'PROMOTE', requestId: 1, waitMs }));
    sock.resume();
  });
}
