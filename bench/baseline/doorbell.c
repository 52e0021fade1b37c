/* C baseline: doorbell round trip between two processes.
 *
 *   doorbell ROUNDS BATCHES [--busy-poll US] [--cpus A,B] [--warmup N]
 *
 * Two eventfds, a fork: the parent signals "ping" and waits (epoll) for
 * "pong"; the child waits (epoll) for "ping" and signals "pong". Prints one
 * JSON line; each sample is the mean round trip (microseconds) of a batch
 * of ROUNDS round trips.
 *
 * --busy-poll US: famez Client's busyPollUs. After a doorbell (rung or
 * ringing) a side keeps reading its nonblocking eventfd for up to US
 * microseconds before it sleeps in epoll; the scenario is then
 * doorbell-rtt-busy-poll.
 *
 * --cpus A,B: the parent pins itself to CPU A and the child to CPU B
 * (sched_setaffinity); A == B puts both on one CPU. */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

#define BELL_NAME "doorbell"
#include "bell.h"

int main(int argc, char **argv) {
  long pos[2] = { 10000, 10 };
  int npos = 0, cpu_a = -1, cpu_b = -1;
  long warmup = -1;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--busy-poll") && i + 1 < argc) busy_us = atol(argv[++i]);
    else if (!strcmp(argv[i], "--warmup") && i + 1 < argc) warmup = atol(argv[++i]);
    else if (!strcmp(argv[i], "--cpus") && i + 1 < argc) {
      if (sscanf(argv[++i], "%d,%d", &cpu_a, &cpu_b) != 2) { fprintf(stderr, "doorbell: --cpus A,B\n"); return 2; }
    } else if (npos < 2 && argv[i][0] != '-') pos[npos++] = atol(argv[i]);
    else { fprintf(stderr, "usage: doorbell ROUNDS BATCHES [--busy-poll US] [--cpus A,B] [--warmup N]\n"); return 2; }
  }
  long rounds = pos[0], batches = pos[1];
  if (warmup < 0) warmup = rounds / 10 + 1;
  int ping = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  int pong = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  long total = rounds * batches + warmup;
  pid_t parent = getpid();
  if (cpu_a >= 0) pin(cpu_a);
  pid_t pid = fork();
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(1);
    if (cpu_b >= 0) pin(cpu_b);
    int ep = watcher(ping);
    for (long i = 0; i < total; i++) {
      wait_on(ep, ping);
      ring(pong);
    }
    _exit(0);
  }
  int ep = watcher(pong);
  for (long i = 0; i < warmup; i++) {
    ring(ping);
    wait_on(ep, pong);
  }
  printf("{\"scenario\":\"doorbell-rtt%s\",\"impl\":\"c\",\"unit\":\"us\",\"samples\":[", busy_us > 0 ? "-busy-poll" : "");
  for (long b = 0; b < batches; b++) {
    double t0 = now_us();
    for (long i = 0; i < rounds; i++) {
      ring(ping);
      wait_on(ep, pong);
    }
    printf("%s%.3f", b ? "," : "", (now_us() - t0) / rounds);
  }
  printf("]}\n");
  fflush(stdout);
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : 1;
}
