/* C baseline: doorbell round trip between two processes.
 *
 *   doorbell ROUNDS BATCHES
 *
 * Two eventfds, a fork: the parent signals "ping" and waits (epoll) for
 * "pong"; the child waits (epoll) for "ping" and signals "pong". Prints one
 * JSON line; each sample is the mean round trip (microseconds) of a batch
 * of ROUNDS round trips. */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static void wait_on(int ep, int fd) {
  struct epoll_event ev;
  for (;;) {
    int n = epoll_wait(ep, &ev, 1, 10000);
    if (n < 0) continue;
    if (n == 0) { fprintf(stderr, "doorbell: no answer in 10 s\n"); exit(1); }
    uint64_t v;
    if (read(fd, &v, 8) == 8) return;
  }
}

static int watcher(int fd) {
  int ep = epoll_create1(EPOLL_CLOEXEC);
  struct epoll_event ev = { .events = EPOLLIN, .data.fd = fd };
  epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
  return ep;
}

int main(int argc, char **argv) {
  long rounds = argc > 1 ? atol(argv[1]) : 10000;
  long batches = argc > 2 ? atol(argv[2]) : 10;
  int ping = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  int pong = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  uint64_t one = 1;
  long total = rounds * batches + rounds / 10 + 1;
  pid_t pid = fork();
  if (pid == 0) {
    int ep = watcher(ping);
    for (long i = 0; i < total; i++) {
      wait_on(ep, ping);
      if (write(pong, &one, 8) != 8) _exit(1);
    }
    _exit(0);
  }
  int ep = watcher(pong);
  /* warm-up */
  for (long i = 0; i < rounds / 10 + 1; i++) {
    if (write(ping, &one, 8) != 8) return 1;
    wait_on(ep, pong);
  }
  printf("{\"scenario\":\"doorbell-rtt\",\"impl\":\"c\",\"unit\":\"us\",\"samples\":[");
  for (long b = 0; b < batches; b++) {
    double t0 = now_us();
    for (long i = 0; i < rounds; i++) {
      if (write(ping, &one, 8) != 8) return 1;
      wait_on(ep, pong);
    }
    printf("%s%.3f", b ? "," : "", (now_us() - t0) / rounds);
  }
  printf("]}\n");
  fflush(stdout);
  waitpid(pid, NULL, 0);
  return 0;
}
