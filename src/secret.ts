// secret.ts - the installation's shared secret: reading a key file, and the
// two proofs of the handshake (docs/protocol.md, "Authentication").
//
// Owns: the key-file rule (who may own it, who may read it, its size) and
// the MAC formula, for both sides: the server (src/server/auth.ts) and the
// client library / broker (src/client/connection.ts, src/broker/handover.ts).
// Does not own: the frames (src/protocol/codec.ts) or when they are sent.
//
// The proofs: each side sends a fresh random nonce (the server's in
// CHALLENGE, the client's in AUTH), and each proves it holds the key with
//   HMAC-SHA256(key, label || serverNonce || clientNonce || HELLO frame)
// where label is "jdls-auth-v1 client" or "jdls-auth-v1 server". Why each
// part: the other side's nonce makes a recorded proof useless on a new
// connection (a replay meets a new nonce); the label keeps a proof from
// being reflected back as the other role's; the HELLO frame (its bytes as
// sent, header included) binds what the client announced (pid, port - which
// a -P server trusts - and its JDLS options) to the key.
import crypto from 'node:crypto';
import fs from 'node:fs';
import { Auth } from './protocol/constants.js';
import { JdlsError } from './errors.js';

/** Shortest key accepted: 16 bytes (128 bits) of a random file; a passphrase shorter than that is refused. */
export const MIN_KEY = 16;
/** Longest key file read: a key is not a document. */
export const MAX_KEY = 4096;

const CLIENT_LABEL = Buffer.from('jdls-auth-v1 client', 'latin1');
const SERVER_LABEL = Buffer.from('jdls-auth-v1 server', 'latin1');

export interface KeyFileRule {
  /** owners trusted with the key (root, this process's user, the service's user) */
  trustedUids: readonly number[];
  /** who reads it, for messages: 'the lock server', 'JDLS SECRET', ... */
  what: string;
}

/**
 * The key in `file`: its bytes without trailing CR/LF (so `openssl rand
 * -base64 32 > key` works). Refused with JdlsError AUTH naming the path, its
 * owner and mode: a file owned by an untrusted user (who could replace the
 * key, or already knows it), readable or writable by others, writable by its
 * group, not a regular file, or shorter than MIN_KEY bytes.
 *
 * Trap: the checks are made on the opened descriptor (fstat), not on the
 * path, so a file swapped between the check and the read is still the file
 * that was checked. Symlinks are followed on purpose (a secret mounted by a
 * container runtime is one); the target is what is checked.
 */
export function readKeyFile(file: string, rule: KeyFileRule): Buffer {
  let fd: number;
  try {
    fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NOCTTY);
  } catch (e) {
    throw new JdlsError('AUTH', `${rule.what}: cannot open the key file ${file}: ${(e as Error).message}`);
  }
  try {
    const st = fs.fstatSync(fd);
    const mode = (st.mode & 0o7777).toString(8).padStart(4, '0');
    if (!st.isFile()) throw new JdlsError('AUTH', `${rule.what}: the key file ${file} is not a regular file`);
    if (!rule.trustedUids.includes(st.uid))
      throw new JdlsError('AUTH', `${rule.what}: refusing the key file ${file}: owned by uid ${st.uid}, mode ${mode}; it must be owned by ${uidList(rule.trustedUids)}`);
    if (st.mode & 0o027)
      throw new JdlsError('AUTH', `${rule.what}: refusing the key file ${file}: owned by uid ${st.uid}, mode ${mode}; others must have no access and the group no write (chmod 0600 or 0640)`);
    if (st.size > MAX_KEY) throw new JdlsError('AUTH', `${rule.what}: the key file ${file} has ${st.size} bytes; a key has at most ${MAX_KEY}`);
    const raw = Buffer.alloc(MAX_KEY + 1);
    let n = 0;
    for (let got = -1; got !== 0 && n < raw.length; n += got) got = fs.readSync(fd, raw, n, raw.length - n, null);
    let end = Math.min(n, MAX_KEY);
    while (end > 0 && (raw[end - 1] === 0x0a || raw[end - 1] === 0x0d)) end--;
    if (end < MIN_KEY) throw new JdlsError('AUTH', `${rule.what}: the key file ${file} holds ${end} bytes; a key needs at least ${MIN_KEY} (e.g. openssl rand -base64 32 > ${file})`);
    return Buffer.from(raw.subarray(0, end));
  } finally {
    fs.closeSync(fd);
  }
}

function uidList(uids: readonly number[]): string {
  const names = [...new Set(uids)].map((u) => (u === 0 ? 'root (uid 0)' : `uid ${u}`));
  return names.length > 1 ? `${names.slice(0, -1).join(', ')} or ${names[names.length - 1]}` : names[0] ?? 'nobody';
}

/** The owners a client (or the broker) trusts with its key file: root and itself. */
export function clientKeyRule(what: string): KeyFileRule {
  const euid = process.geteuid?.() ?? 0;
  return { trustedUids: [0, euid], what };
}

/** A fresh nonce. */
export function newNonce(): Buffer {
  return crypto.randomBytes(Auth.NONCE);
}

function mac(label: Buffer, key: Buffer, serverNonce: Buffer, clientNonce: Buffer, hello: Buffer): Buffer {
  return crypto.createHmac('sha256', key).update(label).update(serverNonce).update(clientNonce).update(hello).digest();
}

/** The client's proof (AUTH). `hello` is the whole HELLO frame as sent, length field included. */
export function clientMac(key: Buffer, serverNonce: Buffer, clientNonce: Buffer, hello: Buffer): Buffer {
  return mac(CLIENT_LABEL, key, serverNonce, clientNonce, hello);
}

/** The server's proof (AUTH_OK). */
export function serverMac(key: Buffer, serverNonce: Buffer, clientNonce: Buffer, hello: Buffer): Buffer {
  return mac(SERVER_LABEL, key, serverNonce, clientNonce, hello);
}

/** Constant-time comparison of a received MAC with the expected one. */
export function macEquals(got: Buffer, want: Buffer): boolean {
  return got.length === want.length && crypto.timingSafeEqual(got, want);
}
