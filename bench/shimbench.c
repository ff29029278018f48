/*
 * shimbench.c - jdls-shimbench: the C side of bench/shim.ts, run with or
 * without LD_PRELOAD=libjdlsshim.so. Prints one JSON line {"nsPer": x}.
 *
 *   jdls-shimbench api N          C-API record lock+unlock pairs (jdls.h via
 *                                 dlsym), file (4242, -1), one key, WAIT
 *   jdls-shimbench fcntl FILE N   F_SETLK write + unlock pairs on byte 0 of FILE
 *   jdls-shimbench getfl FILE N   F_GETFL calls (a non-lock fcntl)
 *   jdls-shimbench echo PORT N    40-byte round trips with a TCP echo server
 *                                 on 127.0.0.1 (the floor of a remote request)
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include "../shim/jdls.h"

static double now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static int setlk(int fd, short type) {
  struct flock fl = {.l_type = type, .l_whence = SEEK_SET, .l_start = 0, .l_len = 1};
  return fcntl(fd, F_SETLK, &fl);
}

int main(int argc, char **argv) {
  if (argc < 3) return 2;
  const char *mode = argv[1];
  long n = atol(argv[argc - 1]);
  if (n <= 0) return 2;
  double t0, t1;
  if (!strcmp(mode, "api")) {
    __typeof__(jdls_record_lock) *lock = (__typeof__(jdls_record_lock) *)dlsym(RTLD_DEFAULT, "jdls_record_lock");
    __typeof__(jdls_record_unlock) *unlock = (__typeof__(jdls_record_unlock) *)dlsym(RTLD_DEFAULT, "jdls_record_unlock");
    if (!lock || !unlock) return 3;
    for (long i = 0; i < n / 10 + 1; i++) { /* warm up (and decide the route) */
      lock(4242, -1, "BENCH*KEY", 9, JDLS_EXCLUSIVE, JDLS_WAIT, JDLS_ORIGIN_INTERNAL, NULL);
      unlock(4242, -1, "BENCH*KEY", 9, JDLS_ORIGIN_INTERNAL);
    }
    t0 = now_ns();
    for (long i = 0; i < n; i++) {
      if (lock(4242, -1, "BENCH*KEY", 9, JDLS_EXCLUSIVE, JDLS_WAIT, JDLS_ORIGIN_INTERNAL, NULL) != 0) return 4;
      unlock(4242, -1, "BENCH*KEY", 9, JDLS_ORIGIN_INTERNAL);
    }
    t1 = now_ns();
  } else if (!strcmp(mode, "fcntl") || !strcmp(mode, "getfl")) {
    int fd = open(argv[2], O_RDWR | O_CREAT, 0666);
    if (fd < 0) return 5;
    int lockpair = !strcmp(mode, "fcntl");
    for (long i = 0; i < n / 10 + 1; i++) {
      if (lockpair) {
        setlk(fd, F_WRLCK);
        setlk(fd, F_UNLCK);
      } else if (fcntl(fd, F_GETFL) < 0) return 6;
    }
    t0 = now_ns();
    for (long i = 0; i < n; i++) {
      if (lockpair) {
        if (setlk(fd, F_WRLCK) != 0) return 4;
        setlk(fd, F_UNLCK);
      } else if (fcntl(fd, F_GETFL) < 0) return 6;
    }
    t1 = now_ns();
  } else if (!strcmp(mode, "echo")) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[2])),
                             .sin_addr.s_addr = htonl(0x7f000001)};
    if (s < 0 || connect(s, (struct sockaddr *)&sa, sizeof sa) != 0) return 5;
    int one = 1;
    setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    char buf[40];
    memset(buf, 7, sizeof buf);
    t0 = 0;
    for (long i = -(n / 10 + 1); i < n; i++) {
      if (i == 0) t0 = now_ns();
      if (write(s, buf, sizeof buf) != (ssize_t)sizeof buf) return 6;
      size_t got = 0;
      while (got < sizeof buf) {
        ssize_t r = read(s, buf + got, sizeof buf - got);
        if (r <= 0) return 7;
        got += (size_t)r;
      }
    }
    t1 = now_ns();
  } else {
    return 2;
  }
  printf("{\"nsPer\": %.1f}\n", (t1 - t0) / (double)n);
  return 0;
}
