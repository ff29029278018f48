// passing.ts - how an accepted connection travels from the listener to a
// lock-server process, and becomes a socket there.
//
// Owns: the choice of what goes over the IPC channel and how the lock server
// reads. Does not own: the conversation (session.ts) or choosing the process
// (listener.ts).
//
// Why not simply child.send(msg, socket): the receiving side then gets a
// net.Socket that reads through the Readable stream machinery (a Buffer per
// read, push, 'data', a nextTick per read), which was a visible part of a
// lock server's time per request (docs/benchmarks.md, "32 connections").
// A net.Socket made with `onread` reads into one buffer and hands the bytes
// straight to a callback, but `onread` can only be given when the Socket is
// made. So the listener sends the socket's underlying TCP handle (Node's
// 'net.Native' handle type) and the lock server makes the Socket itself.
// Trap: that uses `socket._handle` and the `handle` option of net.Socket,
// which Node uses itself but does not document; both are feature-checked,
// and without them the plain socket is sent and read through 'data'.
import type { ChildProcess } from 'node:child_process';
import net from 'node:net';

interface WithHandle {
  _handle?: unknown;
}

/** What the lock server gets: the socket, and whether bytes come through `route` (onread) or 'data'. */
export interface Adopted {
  sock: net.Socket;
  /** set `route.to` to receive the bytes when `viaRoute`; otherwise listen to 'data' */
  route: { to: ((chunk: Buffer) => void) | undefined };
  viaRoute: boolean;
}

/** The one read buffer of this process's connections: a read is decoded synchronously and the frame reader copies what it keeps. */
const READ_BUFFER = Buffer.allocUnsafe(64 * 1024);

/**
 * Listener side: send `sock` to `child` with `msg`. `done(err)` once the
 * send finished; the listener's own copy of the connection is closed then
 * (the child has its own descriptor).
 */
export function sendConnection(child: ChildProcess, msg: object, sock: net.Socket, done: (err: Error | null) => void): void {
  const handle = (sock as unknown as WithHandle)._handle;
  if (typeof handle !== 'object' || handle === null) {
    child.send(msg, sock, {}, done);
    return;
  }
  // A raw handle has no postSend that closes the sender's copy: close it
  // once sent (the socket was never read: pauseOnConnect).
  child.send(msg, handle as net.Socket, {}, (err) => {
    sock.destroy();
    done(err);
  });
}

/** Lock-server side: the socket for what arrived with a 'conn' message, or undefined if nothing usable did. */
export function adoptConnection(handle: unknown, opts: { plain?: boolean } = {}): Adopted | undefined {
  const route: Adopted['route'] = { to: undefined };
  if (handle instanceof net.Socket) return { sock: handle, route, viaRoute: false };
  if (typeof handle !== 'object' || handle === null) return undefined;
  // plain: a socket read through 'data' - what a TLS layer on top needs
  // (lockserver.ts); onread would hand the encrypted bytes past it.
  if (opts.plain) return { sock: new net.Socket({ handle, readable: true, writable: true } as net.SocketConstructorOpts), route, viaRoute: false };
  const sock = new net.Socket({
    handle,
    readable: true,
    writable: true,
    onread: {
      buffer: READ_BUFFER,
      callback: (n: number, buf: Uint8Array): boolean => {
        route.to?.(Buffer.from(buf.buffer, buf.byteOffset, n));
        return true; // false would pause the socket
      },
    },
  } as net.SocketConstructorOpts);
  return { sock, route, viaRoute: true };
}
