// The links group's C baselines (bench/run.ts, docs/performance.md): plain
// TCP over 127.0.0.1 between a parent and its forked child, what a famez
// link carries its frames over with libfabric's tcp provider.
//
//   tcp pingpong SIZE ROUNDS BATCHES [--busy-poll US] --cpus A,B
//     SIZE-byte messages back and forth, TCP_NODELAY; per batch the mean
//     round trip in us. Sleeping: each side blocks in poll(2) for the next
//     message; --busy-poll US: it first reads its nonblocking socket for up
//     to US microseconds.
//   tcp stream SIZE COUNT REPS --cpus A,B
//     COUNT messages of SIZE bytes one way, per rep messages/s from the
//     first send to the last byte received (the receiver reports its end
//     time through a pipe).
// The parent (the timing side) runs on CPU A, the child on B. One JSON line:
// {"samples":[...]}.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "process.h"

static long busy_us = 0;

// Reads exactly n bytes: spinning on the nonblocking socket for up to
// busy_us after each call that found nothing, then sleeping in poll.
static void read_all(int fd, char *buf, size_t n) {
  size_t got = 0;
  while (got < n) {
    ssize_t r = recv(fd, buf + got, n - got, MSG_DONTWAIT);
    if (r > 0) {
      got += (size_t)r;
      continue;
    }
    if (r == 0) {
      fprintf(stderr, "tcp: the other side closed\n");
      exit(1);
    }
    if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) die("recv");
    if (busy_us > 0) {
      uint64_t until = now_ns() + (uint64_t)busy_us * 1000u;
      int found = 0;
      while (now_ns() < until) {
        r = recv(fd, buf + got, n - got, MSG_DONTWAIT);
        if (r > 0) {
          got += (size_t)r;
          found = 1;
          break;
        }
        if (r == 0) {
          fprintf(stderr, "tcp: the other side closed\n");
          exit(1);
        }
      }
      if (found) continue;
    }
    struct pollfd p = {fd, POLLIN, 0};
    if (poll(&p, 1, 60000) <= 0) die("poll");
  }
}

static void write_all(int fd, const char *buf, size_t n) {
  size_t put = 0;
  while (put < n) {
    ssize_t w = send(fd, buf + put, n - put, MSG_NOSIGNAL);
    if (w > 0) {
      put += (size_t)w;
      continue;
    }
    if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
      struct pollfd p = {fd, POLLOUT, 0};
      if (poll(&p, 1, 60000) <= 0) die("poll out");
      continue;
    }
    die("send");
  }
}

static void nodelay(int fd) {
  int one = 1;
  if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0) die("TCP_NODELAY");
}

int main(int argc, char **argv) {
  if (argc < 5) {
    fprintf(stderr, "usage: tcp pingpong SIZE ROUNDS BATCHES [--busy-poll US] --cpus A,B | tcp stream SIZE COUNT REPS --cpus A,B\n");
    return 2;
  }
  const int stream = strcmp(argv[1], "stream") == 0;
  const size_t size = (size_t)atol(argv[2]);
  const long rounds = atol(argv[3]);
  const long batches = atol(argv[4]);
  int cpu_a = 0, cpu_b = 0;
  for (int i = 5; i < argc; i++) {
    if (strcmp(argv[i], "--busy-poll") == 0 && i + 1 < argc) busy_us = atol(argv[++i]);
    else if (strcmp(argv[i], "--cpus") == 0 && i + 1 < argc && sscanf(argv[++i], "%d,%d", &cpu_a, &cpu_b) == 2) {
    } else {
      fprintf(stderr, "tcp: unknown argument %s\n", argv[i]);
      return 2;
    }
  }
  if (size < 1 || size > (1 << 20) || rounds < 1 || batches < 1) {
    fprintf(stderr, "tcp: SIZE 1..1M, ROUNDS and BATCHES >= 1\n");
    return 2;
  }

  int lfd = socket(AF_INET, SOCK_STREAM, 0);
  if (lfd < 0) die("socket");
  struct sockaddr_in a = {0};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(lfd, (struct sockaddr *)&a, sizeof a) != 0 || listen(lfd, 1) != 0) die("bind/listen");
  socklen_t al = sizeof a;
  if (getsockname(lfd, (struct sockaddr *)&a, &al) != 0) die("getsockname");
  int ends[2];
  if (pipe(ends) != 0) die("pipe");

  char *buf = calloc(1, size);
  if (!buf) die("calloc");
  pid_t child = fork();
  if (child < 0) die("fork");
  if (child == 0) {
    // The other side: echoes (pingpong) or swallows (stream).
    pin(cpu_b);
    int fd = accept(lfd, NULL, NULL);
    if (fd < 0) die("accept");
    nodelay(fd);
    if (stream) {
      for (long r = 0; r < batches; r++) {
        for (long i = 0; i < rounds; i++) read_all(fd, buf, size);
        uint64_t t = now_ns();
        if (write(ends[1], &t, sizeof t) != sizeof t) die("pipe write");
      }
    } else {
      for (long i = 0; i < rounds * batches + 1; i++) {
        read_all(fd, buf, size);
        write_all(fd, buf, size);
      }
    }
    _exit(0);
  }
  pin(cpu_a);
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) != 0) die("connect");
  nodelay(fd);
  printf("{\"samples\":[");
  if (stream) {
    for (long r = 0; r < batches; r++) {
      uint64_t t0 = now_ns();
      for (long i = 0; i < rounds; i++) {
        ((uint32_t *)buf)[0] = (uint32_t)i;
        write_all(fd, buf, size);
      }
      uint64_t t1;
      if (read(ends[0], &t1, sizeof t1) != sizeof t1) die("pipe read");
      printf("%s%.1f", r ? "," : "", (double)rounds / ((double)(t1 - t0) / 1e9));
    }
  } else {
    // One untimed round trip: the connection is warm.
    write_all(fd, buf, size);
    read_all(fd, buf, size);
    for (long b = 0; b < batches; b++) {
      uint64_t t0 = now_ns();
      for (long i = 0; i < rounds; i++) {
        write_all(fd, buf, size);
        read_all(fd, buf, size);
      }
      printf("%s%.3f", b ? "," : "", (double)(now_ns() - t0) / 1e3 / (double)rounds);
    }
  }
  printf("]}\n");
  fflush(stdout);
  close(fd);
  int st;
  waitpid(child, &st, 0);
  return 0;
}
