// auth.ts - who may talk to the lock server: the shared-secret handshake on
// the server's side, TLS, and the allow-list of client networks
// (docs/security.md, "Authentication and network exposure").
//
// Owns: loading the installation's key and TLS files for a server process,
// one connection's challenge and its check (ServerHandshake), the server's
// TLS context, and the allow-list test the listener runs at accept (with its
// rate-limited log). Does not own: the frames (src/protocol/codec.ts), the
// MAC formula and the key-file rule (src/secret.ts), or the conversation
// after WELCOME (session.ts).
import fs from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';
import { Auth } from '../protocol/constants.js';
import type { AuthFrame, AuthOkFrame, ChallengeFrame, HelloFrame } from '../protocol/frames.js';
import { encode } from '../protocol/codec.js';
import { JdlsError } from '../errors.js';
import { clientMac, macEquals, newNonce, readKeyFile, serverMac, type KeyFileRule } from '../secret.js';
import type { Logger } from '../log.js';
import type { ServerConfig } from './config.js';

/** What a client without the key is told (and nothing else). */
export const AUTH_REQUIRED = 'the server requires authentication: set SECRET=<key file> in JDLS (docs/client.md) with the installation\'s key';
export const AUTH_FAILED = 'authentication failed';

/** The owners a server trusts with its key and TLS private key: root, itself, the installation's owner (the service's user). */
export function serverKeyRule(releaseDir: string, what: string): KeyFileRule {
  const uids = [0, process.geteuid?.() ?? 0];
  try {
    uids.push(fs.statSync(releaseDir).uid);
  } catch {
    /* the installation check elsewhere names a missing directory */
  }
  return { trustedUids: uids, what };
}

/** What a lock-server process needs to admit clients: the key (if a secret is configured) and the TLS context (if TLS is). */
export interface ServerSecrets {
  key: Buffer | undefined;
  /** the PEM material (cert, key, ca) for a tls.Server, checked once by createSecureContext */
  tls: tls.SecureContextOptions | undefined;
  /** tlsCA given: clients must present a certificate signed by it */
  requestCert: boolean;
}

/**
 * Read the key and TLS files named in `cfg`. Throws JdlsError (AUTH for the
 * key file, TLS for the certificates) naming the file: the operator's
 * command calls this to fail at start, each lock-server process to load.
 */
export function loadServerSecrets(cfg: ServerConfig, releaseDir: string): ServerSecrets {
  const key = cfg.secretFile ? readKeyFile(cfg.secretFile, serverKeyRule(releaseDir, 'secretFile')) : undefined;
  if (!cfg.tlsCert !== !cfg.tlsKey) throw new JdlsError('TLS', 'tlsCert and tlsKey go together: give both (PEM files) or neither');
  if (cfg.tlsCA && !cfg.tlsCert) throw new JdlsError('TLS', 'tlsCA (client certificates) needs tlsCert and tlsKey');
  let context: tls.SecureContextOptions | undefined;
  if (cfg.tlsCert && cfg.tlsKey) {
    // The private key obeys the key-file rule; the certificates are public.
    const pkey = readKeyFile(cfg.tlsKey, { ...serverKeyRule(releaseDir, 'tlsKey') });
    const read = (file: string, what: string): Buffer => {
      try {
        return fs.readFileSync(file);
      } catch (e) {
        throw new JdlsError('TLS', `${what}: cannot read ${file}: ${(e as Error).message}`);
      }
    };
    context = {
      cert: read(cfg.tlsCert, 'tlsCert'), key: pkey, minVersion: 'TLSv1.2',
      ...(cfg.tlsCA ? { ca: read(cfg.tlsCA, 'tlsCA') } : {}),
    };
    try {
      tls.createSecureContext(context); // a bad PEM, or a key that does not match the certificate, fails here, at start
    } catch (e) {
      if (e instanceof JdlsError) throw e;
      throw new JdlsError('TLS', `tlsCert/tlsKey (${cfg.tlsCert}, ${cfg.tlsKey}): ${(e as Error).message}`);
    }
  }
  return { key, tls: context, requestCert: Boolean(cfg.tlsCA) };
}

/**
 * The server side of one TLS connection over a socket the listener handed
 * over (the listener never reads a byte, so the ClientHello is still in the
 * socket): `secure` gets the TLS socket once the handshake is done and, with
 * tlsCA, the client's certificate verified; `fail` gets why not (once).
 *
 * Trap: a bare `new tls.TLSSocket(sock, { isServer: true, requestCert,
 * rejectUnauthorized })` does not enforce rejectUnauthorized: OpenSSL's
 * verify callback in Node accepts every certificate and it is tls.Server
 * that checks the result on 'secure' - with a bare socket `authorized` stays
 * false even for a good certificate, and a bad one is served. So the socket
 * is injected into a tls.Server that never listens (emitting 'connection',
 * as the tls documentation allows), which does the checks and bounds the
 * handshake (handshakeTimeout). One server per connection, because the
 * server is what ties the outcome to this connection; it builds its secure
 * context from the PEM material each time (tls.Server ignores a prebuilt
 * `secureContext` option), a cost paid once per connection, next to the TLS
 * handshake itself.
 */
export function acceptTls(sock: net.Socket, s: ServerSecrets, timeoutMs: number, secure: (t: tls.TLSSocket) => void, fail: (why: string) => void): void {
  if (!s.tls) throw new JdlsError('TLS', 'no TLS context');
  let settled = false;
  const failOnce = (why: string): void => {
    if (settled) return;
    settled = true;
    sock.destroy();
    fail(why);
  };
  const server = new tls.Server({ ...s.tls, requestCert: s.requestCert, rejectUnauthorized: s.requestCert, handshakeTimeout: timeoutMs });
  server.on('secureConnection', (t: tls.TLSSocket) => {
    if (settled) return void t.destroy();
    settled = true;
    secure(t);
  });
  server.on('tlsClientError', (e: Error) => failOnce(`TLS handshake failed: ${e.message}`));
  sock.once('close', () => failOnce('closed during the TLS handshake'));
  server.emit('connection', sock);
}

/**
 * One connection's challenge. Made when a HELLO with the AUTH flag reaches
 * a server with a key; the client's AUTH is checked against it once.
 */
export class ServerHandshake {
  readonly #key: Buffer;
  readonly #hello: Buffer;
  readonly #nonce = newNonce();

  constructor(key: Buffer, hello: HelloFrame) {
    this.#key = key;
    // The HELLO as the client sent it: the codec's encoding is canonical
    // (every frame decodes to a value that encodes back to its own bytes,
    // test/protocol-codec.test.ts), and HELLO always travels as version 1.
    this.#hello = encode(hello, 1);
  }

  challenge(): ChallengeFrame {
    return { type: 'CHALLENGE', requestId: 0, method: Auth.HMAC_SHA256, nonce: this.#nonce };
  }

  /** The server's proof if the client's is right, else undefined. */
  verify(f: AuthFrame): AuthOkFrame | undefined {
    const want = clientMac(this.#key, this.#nonce, f.nonce, this.#hello);
    if (!macEquals(f.mac, want)) return undefined;
    return { type: 'AUTH_OK', requestId: 0, mac: serverMac(this.#key, this.#nonce, f.nonce, this.#hello) };
  }
}

// ===== allow-list ========================================================

/** A CIDR as text: '10.0.0.0/8', '::1/128', or a bare address (a /32 or /128). */
export function parseCidr(text: string): { addr: string; prefix: number; family: 'ipv4' | 'ipv6' } | undefined {
  const m = /^([^/]+)(?:\/(\d{1,3}))?$/.exec(text.trim());
  if (!m?.[1]) return undefined;
  const kind = net.isIP(m[1]);
  if (kind === 0) return undefined;
  const max = kind === 4 ? 32 : 128;
  const prefix = m[2] === undefined ? max : Number(m[2]);
  if (prefix > max) return undefined;
  return { addr: m[1], prefix, family: kind === 4 ? 'ipv4' : 'ipv6' };
}

/** How often a refused address is logged: once per this interval, with the count since. */
const REFUSAL_LOG_MS = 10_000;

/**
 * The allow-list: undefined (no `allow` setting) admits everyone. A client
 * whose address is in none of the networks is refused at accept. Trap: a
 * dual-stack listener sees an IPv4 client as '::ffff:a.b.c.d'; that is
 * judged as the IPv4 address, so '10.0.0.0/8' admits it and '::ffff:0:0/96'
 * is not needed.
 */
export class AllowList {
  readonly #list = new net.BlockList();
  readonly #log: Logger;
  #lastLog = 0;
  #suppressed = 0;

  constructor(cidrs: readonly string[], log: Logger) {
    this.#log = log;
    for (const c of cidrs) {
      const p = parseCidr(c);
      if (!p) throw new JdlsError('BAD_ARGUMENT', `allow: '${c}' is not a network (e.g. 10.0.0.0/8, 127.0.0.1/32, ::1/128)`);
      this.#list.addSubnet(p.addr, p.prefix, p.family);
    }
  }

  static from(cfg: ServerConfig, log: Logger): AllowList | undefined {
    return cfg.allow.length ? new AllowList(cfg.allow, log) : undefined;
  }

  /** Whether `address` (a socket's remoteAddress) may connect. */
  admits(address: string | undefined): boolean {
    if (!address) return false;
    const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
    const a = mapped?.[1] ?? address;
    const family = net.isIP(a) === 4 ? 'ipv4' : 'ipv6';
    return this.#list.check(a, family);
  }

  /** Log a refusal: at most one line per REFUSAL_LOG_MS, counting the ones not logged. */
  refused(address: string | undefined): void {
    const now = Date.now();
    if (now - this.#lastLog < REFUSAL_LOG_MS) {
      this.#suppressed++;
      return;
    }
    this.#log.warn({ client: address, alsoRefused: this.#suppressed }, `connection from ${address ?? 'an unknown address'} refused: not in the allow-list (jdls.yaml allow)`);
    this.#lastLog = now;
    this.#suppressed = 0;
  }
}

/**
 * The listener's hook (listener.ts): true if the connection may go on; if
 * not, it is closed at once - without a byte written (a refused client
 * learns nothing, not even that this is a jdls server) - and logged.
 */
export function admitConnection(allow: AllowList | undefined, sock: net.Socket): boolean {
  if (!allow || allow.admits(sock.remoteAddress)) return true;
  allow.refused(sock.remoteAddress);
  sock.destroy();
  return false;
}

// ===== failed authentications, logged ======================================

let lastAuthLog = 0;
let authSuppressed = 0;

/** Log a refused handshake: at most one line per REFUSAL_LOG_MS per process, counting the others. */
export function logAuthRefusal(log: Logger, fields: Record<string, unknown>, why: string): void {
  const now = Date.now();
  if (now - lastAuthLog < REFUSAL_LOG_MS) {
    authSuppressed++;
    return;
  }
  log.warn({ ...fields, alsoRefused: authSuppressed }, why);
  lastAuthLog = now;
  authSuppressed = 0;
}
