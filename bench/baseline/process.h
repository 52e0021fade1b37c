/* What the TCP and relay baselines share: dying with errno's message, a
 * monotonic clock in nanoseconds, and pinning the calling process to one
 * CPU. Include after the system headers (sched.h with _GNU_SOURCE). */
#ifndef FAMEZ_BENCH_PROCESS_H
#define FAMEZ_BENCH_PROCESS_H

#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static void die(const char *what) {
  perror(what);
  exit(1);
}

static uint64_t now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static void pin(int cpu) {
  cpu_set_t s;
  CPU_ZERO(&s);
  CPU_SET(cpu, &s);
  if (sched_setaffinity(0, sizeof s, &s) != 0) die("sched_setaffinity");
}

#endif
