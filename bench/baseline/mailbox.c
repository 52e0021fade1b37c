/* C baseline: FAME-Z mailbox round trip between two processes, the same
 * slot handshake as famez-core's Mailbox::post / take_into
 * (bench_mailbox_rtt), with eventfd doorbells as in doorbell.c.
 *
 *   mailbox ROUNDS BATCHES [--size S] [--busy-poll US] [--cpus A,B] [--warmup N]
 *
 * A 4096-byte memfd mapped shared in both processes holds the slots (512
 * bytes each: buflen at 32, last_responder at 48, buf at 128; slot 1 the
 * parent's, slot 2 the child's). To post, a side checks its slot's buflen
 * is 0 (acquire), copies the message and a NUL into buf, stores
 * last_responder, publishes buflen (release) and rings the other's
 * eventfd. To take, a side woken by its eventfd loads the sender's buflen
 * (acquire), checks it against the limit (383), copies the message out and
 * clears buflen (release). The parent posts a SIZE-byte request (its first
 * 8 bytes a sequence number); the child takes it, adds one to byte 8 and
 * posts it back; the parent takes the answer and checks it against the
 * request. Prints one JSON line; each sample is the mean round trip
 * (microseconds) of a batch of ROUNDS round trips. The first N round trips
 * (default: a tenth of all, 100 to 20,000, as bench_mailbox_rtt) are not
 * timed.
 *
 * --busy-poll US: after a doorbell (rung or ringing) a side keeps reading
 * its nonblocking eventfd for up to US microseconds before it sleeps in
 * epoll, as in doorbell.c; the scenario is then mailbox-rtt-busy-poll.
 * --cpus A,B: the parent on CPU A, the child on CPU B. */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define BELL_NAME "mailbox"
#include "bell.h"

#define SLOT_SIZE 512
#define BUFLEN 32
#define LAST_RESPONDER 48
#define BUF 128
#define MAX_PAYLOAD (SLOT_SIZE - BUF - 1)
#define CLIENT 1
#define SERVER 2

static uint8_t *mb;

static uint64_t *word(uint64_t slot, size_t field) { return (uint64_t *)(mb + slot * SLOT_SIZE + field); }

static void post(uint64_t sender, uint64_t receiver, const uint8_t *msg, size_t len) {
  if (__atomic_load_n(word(sender, BUFLEN), __ATOMIC_ACQUIRE) != 0) {
    fprintf(stderr, "mailbox: slot %llu still busy\n", (unsigned long long)sender);
    exit(1);
  }
  uint8_t *buf = mb + sender * SLOT_SIZE + BUF;
  memcpy(buf, msg, len);
  buf[len] = 0;
  __atomic_store_n(word(sender, LAST_RESPONDER), receiver, __ATOMIC_RELAXED);
  __atomic_store_n(word(sender, BUFLEN), (uint64_t)len, __ATOMIC_RELEASE);
}

/* The message in sender's slot into out: its length, 0 if none. */
static size_t take(uint64_t sender, uint8_t *out) {
  uint64_t len = __atomic_load_n(word(sender, BUFLEN), __ATOMIC_ACQUIRE);
  if (len == 0) return 0;
  if (len > MAX_PAYLOAD) {
    __atomic_store_n(word(sender, BUFLEN), 0, __ATOMIC_RELEASE);
    fprintf(stderr, "mailbox: slot %llu has buflen %llu\n", (unsigned long long)sender, (unsigned long long)len);
    exit(1);
  }
  memcpy(out, mb + sender * SLOT_SIZE + BUF, len);
  __atomic_store_n(word(sender, BUFLEN), 0, __ATOMIC_RELEASE);
  return len;
}

int main(int argc, char **argv) {
  long pos[2] = { 10000, 10 };
  int npos = 0, cpu_a = -1, cpu_b = -1;
  long warmup = -1;
  size_t size = 64;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--busy-poll") && i + 1 < argc) busy_us = atol(argv[++i]);
    else if (!strcmp(argv[i], "--warmup") && i + 1 < argc) warmup = atol(argv[++i]);
    else if (!strcmp(argv[i], "--size") && i + 1 < argc) size = strtoul(argv[++i], 0, 10);
    else if (!strcmp(argv[i], "--cpus") && i + 1 < argc) {
      if (sscanf(argv[++i], "%d,%d", &cpu_a, &cpu_b) != 2) { fprintf(stderr, "mailbox: --cpus A,B\n"); return 2; }
    } else if (npos < 2 && argv[i][0] != '-') pos[npos++] = atol(argv[i]);
    else { fprintf(stderr, "usage: mailbox ROUNDS BATCHES [--size S] [--busy-poll US] [--cpus A,B] [--warmup N]\n"); return 2; }
  }
  if (size < 9 || size > MAX_PAYLOAD) { fprintf(stderr, "mailbox: --size 9 ..= %d\n", MAX_PAYLOAD); return 2; }
  long rounds = pos[0], batches = pos[1];
  if (warmup < 0) {
    warmup = rounds * batches / 10;
    warmup = warmup < 100 ? 100 : warmup > 20000 ? 20000 : warmup;
  }
  int fd = memfd_create("famez-bench-mailbox", MFD_CLOEXEC);
  if (fd < 0 || ftruncate(fd, 4096) != 0) { perror("mailbox: memfd"); return 1; }
  mb = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (mb == MAP_FAILED) { perror("mailbox: mmap"); return 1; }
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
    /* Its own mapping of the object, as the Rust child maps its own. */
    mb = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (mb == MAP_FAILED) { perror("mailbox: mmap"); _exit(1); }
    int ep = watcher(ping);
    uint8_t buf[MAX_PAYLOAD];
    for (long done = 0; done < total;) {
      wait_on(ep, ping);
      size_t n = take(CLIENT, buf);
      if (n) {
        buf[8]++; /* the answer differs from the request */
        post(SERVER, CLIENT, buf, n);
        ring(pong);
        done++;
      }
    }
    _exit(0);
  }
  int ep = watcher(pong);
  uint8_t *req = malloc(size), ans[MAX_PAYLOAD];
  memset(req, 0xa5, size);
  uint64_t seq = 0;
  printf("{\"scenario\":\"mailbox-rtt%s\",\"impl\":\"c\",\"unit\":\"us\",\"samples\":[", busy_us > 0 ? "-busy-poll" : "");
  double t0 = 0;
  for (long i = 0, b = 0; i < total; i++) {
    if (i >= warmup && (i - warmup) % rounds == 0) t0 = now_us();
    memcpy(req, &seq, 8);
    post(CLIENT, SERVER, req, size);
    ring(ping);
    for (;;) {
      wait_on(ep, pong);
      size_t n = take(SERVER, ans);
      if (n) {
        if (n != size || memcmp(ans, req, 8) || ans[8] != (uint8_t)(req[8] + 1) || memcmp(ans + 9, req + 9, size - 9)) {
          fprintf(stderr, "mailbox: answer %llu does not match its request\n", (unsigned long long)seq);
          return 1;
        }
        seq++;
        break;
      }
    }
    if (i >= warmup && (i - warmup) % rounds == rounds - 1) printf("%s%.3f", b++ ? "," : "", (now_us() - t0) / rounds);
  }
  printf("]}\n");
  fflush(stdout);
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : 1;
}
