// handshake.ts - the client's side of HELLO .. WELCOME, with or without the
// shared secret (docs/protocol.md, "The conversation", "Authentication").
//
// Owns: which server frame may come at each step of the handshake, the
// client's proof (AUTH) and the check of the server's (AUTH_OK). Pure: it
// takes frames and says what to send or how it ended; the socket belongs to
// the caller (connection.ts for the client library, broker/handover.ts for
// a preloaded program's connection).
//
// A client with a key insists on the server proving it holds the same key:
// a server that answers WELCOME straight away (no secret configured, or not
// a jdls server of this installation) is refused, so a program never runs
// its locks through a server that could be anyone's.
import { JdlsError } from '../errors.js';
import { encode } from '../protocol/codec.js';
import { PROTO } from '../protocol/constants.js';
import type { HelloFrame, ServerFrame, WelcomeFrame } from '../protocol/frames.js';
import { clientMac, macEquals, newNonce, serverMac } from '../secret.js';
import { errorFromWire } from './errors.js';

export type HelloFields = Omit<HelloFrame, 'type' | 'requestId' | 'minVersion' | 'maxVersion' | 'auth'>;

/** What the caller does after a frame: send bytes, finish with WELCOME, or fail. */
export type Step = { send: Buffer } | { welcome: WelcomeFrame } | { error: JdlsError } | undefined;

export class ClientHandshake {
  /** the HELLO frame's bytes: sent first, and covered by both proofs */
  readonly hello: Buffer;
  readonly #key: Buffer | undefined;
  readonly #label: string;
  #state: 'challenge' | 'auth_ok' | 'welcome';
  /** HELLO asked for fencing tokens (flag TOKENS) */
  readonly #tokens: boolean;
  /** HELLO said the client knows INFO (flag INFO) */
  readonly #info: boolean;
  #serverNonce: Buffer | undefined;
  #clientNonce: Buffer | undefined;

  constructor(label: string, fields: HelloFields, key: Buffer | undefined) {
    this.#label = label;
    this.#key = key;
    const hello: HelloFrame = { type: 'HELLO', requestId: 0, minVersion: PROTO.MIN_VERSION, maxVersion: PROTO.VERSION, ...fields };
    if (key) hello.auth = true;
    this.#tokens = hello.tokens === true;
    this.#info = hello.info === true;
    this.hello = encode(hello, 1);
    this.#state = key ? 'challenge' : 'welcome';
  }

  /** One server frame of the handshake. */
  onFrame(f: ServerFrame): Step {
    const who = `lock server ${this.#label}`;
    if (f.type === 'ERROR') return { error: errorFromWire(f.code, f.text, this.#label) };
    switch (this.#state) {
      case 'challenge': {
        if (f.type === 'WELCOME')
          return { error: new JdlsError('AUTH', `${who} did not authenticate itself (it has no secretFile in its jdls.yaml, or it is not this installation's server); JDLS SECRET requires a server that proves it holds the key`) };
        if (f.type !== 'CHALLENGE') return { error: new JdlsError('PROTOCOL', `${who}: expected CHALLENGE, got ${f.type}`) };
        const key = this.#key as Buffer;
        this.#serverNonce = f.nonce;
        this.#clientNonce = newNonce();
        this.#state = 'auth_ok';
        return { send: encode({ type: 'AUTH', requestId: 0, nonce: this.#clientNonce, mac: clientMac(key, f.nonce, this.#clientNonce, this.hello) }, 1) };
      }
      case 'auth_ok': {
        if (f.type !== 'AUTH_OK') return { error: new JdlsError('PROTOCOL', `${who}: expected AUTH_OK, got ${f.type}`) };
        const want = serverMac(this.#key as Buffer, this.#serverNonce as Buffer, this.#clientNonce as Buffer, this.hello);
        if (!macEquals(f.mac, want))
          return { error: new JdlsError('AUTH', `${who} failed to prove it holds the key (its proof does not match JDLS SECRET's key): not this installation's server`) };
        this.#state = 'welcome';
        return undefined;
      }
      case 'welcome':
        if (f.type !== 'WELCOME') return { error: new JdlsError('PROTOCOL', `${who}: expected WELCOME, got ${f.type}`) };
        if (f.version < PROTO.MIN_VERSION || f.version > PROTO.VERSION)
          return { error: new JdlsError('VERSION', `${who} chose protocol version ${f.version}; this client speaks ${PROTO.MIN_VERSION}..${PROTO.VERSION}`) };
        // A server may decline tokens (an older one does not know the flag), never offer them unasked.
        if (f.tokens && !this.#tokens) return { error: new JdlsError('PROTOCOL', `${who}: WELCOME with TOKENS, which HELLO did not ask for`) };
        if (f.info && !this.#info) return { error: new JdlsError('PROTOCOL', `${who}: WELCOME with INFO, which HELLO did not offer`) };
        return { welcome: f };
    }
  }

  /**
   * The frames of one read: each step's bytes go to `write`; the outcome is
   * WELCOME (with the frame that followed it, if any: the caller words that
   * protocol error), an error, or undefined (more frames to come).
   */
  onFrames(frames: ServerFrame[], write: (b: Buffer) => void): { welcome: WelcomeFrame; after: ServerFrame | undefined } | { error: JdlsError } | undefined {
    for (let i = 0; i < frames.length; i++) {
      const step = this.onFrame(frames[i] as ServerFrame);
      if (!step) continue;
      if ('error' in step) return step;
      if ('send' in step) {
        write(step.send);
        continue;
      }
      return { welcome: step.welcome, after: frames[i + 1] };
    }
    return undefined;
  }
}
