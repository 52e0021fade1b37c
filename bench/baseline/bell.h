/* What the doorbell and mailbox baselines share: the clock, CPU pinning,
 * and eventfd doorbells with famez Client's busy-polling rule (after a
 * doorbell, rung or ringing, a side reads its nonblocking eventfd for up to
 * busy_us microseconds before it sleeps in epoll). Define BELL_NAME (the
 * program's name, for its messages) before including it. */
#ifndef FAMEZ_BENCH_BELL_H
#define FAMEZ_BENCH_BELL_H

#include <errno.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

static double now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static long busy_us = 0;
/* When this side last rang or was rung (busy polling's window start). */
static double last_bell = 0;

static void pin(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  if (sched_setaffinity(0, sizeof set, &set) != 0) {
    fprintf(stderr, BELL_NAME ": sched_setaffinity(CPU %d): %s\n", cpu, strerror(errno));
    exit(1);
  }
}

static void wait_on(int ep, int fd) {
  uint64_t v;
  if (busy_us > 0) {
    /* Busy polling: the nonblocking eventfd, read until the window ends. */
    double until = last_bell + busy_us;
    do {
      if (read(fd, &v, 8) == 8) {
        last_bell = now_us();
        return;
      }
    } while (now_us() < until);
  }
  struct epoll_event ev;
  for (;;) {
    int n = epoll_wait(ep, &ev, 1, 10000);
    if (n < 0) continue;
    if (n == 0) { fprintf(stderr, BELL_NAME ": no answer in 10 s\n"); exit(1); }
    if (read(fd, &v, 8) == 8) {
      if (busy_us > 0) last_bell = now_us();
      return;
    }
  }
}

static void ring(int fd) {
  uint64_t one = 1;
  if (write(fd, &one, 8) != 8) { perror(BELL_NAME ": write"); exit(1); }
  if (busy_us > 0) last_bell = now_us();
}

static int watcher(int fd) {
  int ep = epoll_create1(EPOLL_CLOEXEC);
  struct epoll_event ev = { .events = EPOLLIN, .data.fd = fd };
  epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
  return ep;
}

#endif
