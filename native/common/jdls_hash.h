/*
 * jdls_hash.h - the one key hash of jdls' native code: the table's group
 * hash (jdls_table.c) and the OS lock byte of a key (jdls_oslock.c) are both
 * built from it.
 *
 * One multiply-xorshift round per 8 bytes, then splitmix64's finaliser. An
 * earlier byte-at-a-time FNV-1a cost one serial multiply per byte and was the
 * largest single item of a lock+unlock pair (perf, bench/pair.ts). Host-local:
 * neither hash ever leaves the machine, so native byte order is fine.
 */
#ifndef JDLS_HASH_H
#define JDLS_HASH_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

static inline uint64_t jdls_hash_mix(uint64_t h, uint64_t v) {
  h ^= v;
  h *= 0x9e3779b97f4a7c15ull;
  return h ^ (h >> 32);
}

/* Mix `len` bytes into h; the length goes in too, so "a" and "a\0" differ. */
static inline uint64_t jdls_hash_bytes(uint64_t h, const uint8_t *p, size_t len) {
  size_t i = 0;
  for (; i + 8 <= len; i += 8) {
    uint64_t v;
    memcpy(&v, p + i, 8);
    h = jdls_hash_mix(h, v);
  }
  uint64_t tail = (uint64_t)len << 56;
  if (i < len) {
    uint64_t v = 0;
    memcpy(&v, p + i, len - i);
    tail ^= v;
  }
  return jdls_hash_mix(h, tail);
}

/* splitmix64's finaliser: every output bit depends on every input bit. */
static inline uint64_t jdls_hash_final(uint64_t h) {
  h ^= h >> 30;
  h *= 0xbf58476d1ce4e5b9ull;
  h ^= h >> 27;
  h *= 0x94d049bb133111ebull;
  return h ^ (h >> 31);
}

#endif /* JDLS_HASH_H */
