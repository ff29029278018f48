/*
 * shim_classify.c - record or binary: is a descriptor open on a record-lock
 * file?
 *
 * A jBASE runtime in OS-lock mode takes a record lock as a POSIX lock on one
 * byte of <lockdir>/jlock_<inode 8 hex>_<device 8 hex> (jdls_oslock.h). Those
 * are RECORD locks; every other POSIX lock (hashed-file groups, whole files,
 * execution-lock pseudo files, any program's own lock files) is BINARY.
 *
 * The lock directory: $JDLS_LOCKDIR, else /tmp/jbase (the guide's default),
 * read once per process and resolved with realpath() when it exists, because
 * the descriptor's path comes from /proc/self/fd, which is always canonical.
 * Owns: the lock directory and the name test. Does not own: routing.
 */
#undef _FILE_OFFSET_BITS
#define _GNU_SOURCE
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "jdls.h"
#include "shim.h"
#include "../native/common/jdls_oslock.h"

static pthread_once_t once = PTHREAD_ONCE_INIT;
static char lockdir[PATH_MAX];

static void init_lockdir(void) {
  const char *d = getenv("JDLS_LOCKDIR");
  if (!d || !*d) d = JDLS_OSL_DEFAULT_DIR;
  if (!realpath(d, lockdir)) {
    /* Not there (yet): compare with the name as given. */
    snprintf(lockdir, sizeof lockdir, "%s", d);
  }
  size_t n = strlen(lockdir);
  while (n > 1 && lockdir[n - 1] == '/') lockdir[--n] = 0;
}

const char *shim_lockdir(void) {
  pthread_once(&once, init_lockdir);
  return lockdir;
}

static int hex8(const char *s, uint32_t *out) {
  uint32_t v = 0;
  for (int i = 0; i < 8; i++) {
    char c = s[i];
    int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
    if (d < 0) return 0;
    v = v << 4 | (uint32_t)d;
  }
  *out = v;
  return 1;
}

SHIM_EXPORT int jdls_shim_classify_path(const char *path, uint64_t *inode, int64_t *dev) {
  const char *dir = shim_lockdir();
  size_t dl = strlen(dir);
  if (strncmp(path, dir, dl) != 0 || path[dl] != '/') return 0;
  const char *name = path + dl + 1;
  uint32_t ino, dv;
  /* exactly "jlock_" 8 hex "_" 8 hex, nothing after */
  if (strlen(name) != 23 || strncmp(name, "jlock_", 6) != 0 || name[14] != '_') return 0;
  if (!hex8(name + 6, &ino) || !hex8(name + 15, &dv)) return 0;
  if (inode) *inode = ino;
  if (dev) *dev = dv == 0xffffffffU ? -1 : (int64_t)dv;
  return 1;
}

int shim_classify_fd(int fd, uint64_t *inode, int64_t *dev) {
  char link[64], path[PATH_MAX];
  snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
  ssize_t n = readlink(link, path, sizeof path - 1);
  if (n <= 0) return 0;
  path[n] = 0;
  return jdls_shim_classify_path(path, inode, dev);
}
