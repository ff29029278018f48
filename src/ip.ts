// ip.ts - IP addresses as text and as bytes: the one place that converts
// them (owners in the lock table carry 4 or 16 address bytes; the protocol
// carries them on the wire).
import net from 'node:net';
import { JdlsError } from './errors.js';

/** 16 bytes of an IPv6 address: '::' expanded, a trailing dotted quad and brackets or a %zone accepted. */
export function ipv6Bytes(a: string): Buffer {
  let text = a.replace(/^\[|\]$/g, '');
  const pct = text.indexOf('%');
  if (pct >= 0) text = text.slice(0, pct);
  const dotted = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (dotted?.[1]) {
    const q = dotted[1].split('.').map(Number);
    text = `${text.slice(0, -dotted[1].length)}${(((q[0] ?? 0) << 8) | (q[1] ?? 0)).toString(16)}:${(((q[2] ?? 0) << 8) | (q[3] ?? 0)).toString(16)}`;
  }
  const [headText = '', tailText] = text.split('::');
  const head = headText ? headText.split(':') : [];
  const tail = tailText ? tailText.split(':') : [];
  const words = tailText === undefined ? head : [...head, ...Array<string>(8 - head.length - tail.length).fill('0'), ...tail];
  const b = Buffer.alloc(16);
  words.forEach((w, i) => b.writeUInt16BE(parseInt(w, 16), i * 2));
  return b;
}

/**
 * RFC 5952 text: lower case, the longest run of two or more zero words as
 * '::', and an IPv4-mapped address (::ffff:0:0/96) with its IPv4 part dotted
 * (RFC 5952 section 5). The last rule is not cosmetic: a dual-stack Node
 * server sees an IPv4 client as '::ffff:127.0.0.1' (socket.remoteAddress),
 * and that text must come back out of a frame exactly as it went in.
 */
export function ipv6Text(b: Buffer): string {
  if (b.readUInt32BE(0) === 0 && b.readUInt32BE(4) === 0 && b.readUInt32BE(8) === 0xffff)
    return `::ffff:${b[12]}.${b[13]}.${b[14]}.${b[15]}`;
  const words: number[] = [];
  for (let i = 0; i < 16; i += 2) words.push(b.readUInt16BE(i));
  let best = -1, bestLen = 1;
  for (let i = 0; i < 8;) {
    if (words[i] !== 0) { i++; continue; }
    let j = i;
    while (j < 8 && words[j] === 0) j++;
    if (j - i > bestLen) { best = i; bestLen = j - i; }
    i = j;
  }
  const hex = (ws: number[]): string => ws.map((w) => w.toString(16)).join(':');
  if (best < 0) return hex(words);
  return `${hex(words.slice(0, best))}::${hex(words.slice(best + bestLen))}`;
}

/** 4 bytes for an IPv4 address, 16 for IPv6; BAD_ARGUMENT otherwise. */
export function ipBytes(ip: string): Buffer {
  const kind = net.isIP(ip);
  if (kind === 4) return Buffer.from(ip.split('.').map(Number));
  if (kind === 6) return ipv6Bytes(ip);
  throw new JdlsError('BAD_ARGUMENT', `not an IP address: ${ip}`);
}
