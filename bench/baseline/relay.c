/* The links group's floor (bench/run.ts, docs/performance.md): the path a
 * famez link message takes, peer -> switch A -> TCP -> switch B -> peer,
 * done by four C processes with nothing famez adds (no Gen-Z packets, no
 * CRCs, no link frames, no credits), so that what the processes, their
 * wake-ups and their copies cost on this machine is measured apart from
 * famez's own work.
 *
 *   relay pingpong SIZE ROUNDS BATCHES [--busy-poll US [--yield]] --cpus A,B
 *     SIZE-byte messages from peer P to peer Q and back; per batch the
 *     mean round trip in us.
 *   relay stream SIZE COUNT REPS [--busy-poll US [--yield]] --cpus A,B
 *     COUNT messages of SIZE bytes P -> Q; per rep messages/s from P's
 *     first push to Q's last pop (Q's clock, through a pipe).
 *
 * P and switch A run on CPU A, switch B and Q on CPU B (give A = B for the
 * same-cpu regime). A peer and its switch share two single-producer /
 * single-consumer rings in a memfd mapping (one each way: u32 length
 * records padded to 8 bytes, a record never wraps), each with an eventfd
 * doorbell its producer rings only when the ring was empty before its push
 * (famez's rule: producer head, fence, tail; consumer tail, fence, head).
 * The switches are joined by one TCP connection over 127.0.0.1 with
 * TCP_NODELAY carrying u32 length + payload; a switch sends all its peer's
 * ring holds in one send(2) and pushes all of a recv(2)'s whole messages
 * into its peer's ring. Sleeping, every process blocks in epoll_wait;
 * --busy-poll US: it first polls its inputs for up to US microseconds;
 * --yield: with sched_yield(2) between two looks, so that the other
 * process on its CPU runs meanwhile (two of the four share each CPU here).
 * One JSON line: {"samples":[...]}. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
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
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define CAP (4u << 20)
#define WRAP 0xffffffffu
#define BUF (256u << 10)

struct ring {
  _Alignas(128) uint64_t head; /* the producer's */
  _Alignas(128) uint64_t tail; /* the consumer's */
  _Alignas(128) uint8_t data[CAP];
};

struct chan {
  struct ring *r;
  int bell; /* the consumer's doorbell */
};

#include "process.h"

static long busy_us = 0;
static int yield_between = 0;

/* Pushes one message; 0 when it does not fit now. */
static int push(struct chan *c, const void *msg, uint32_t len) {
  struct ring *r = c->r;
  uint64_t head = r->head, old = head;
  uint64_t tail = __atomic_load_n(&r->tail, __ATOMIC_ACQUIRE);
  size_t rec = (4 + (size_t)len + 7) & ~(size_t)7;
  size_t off = head % CAP;
  size_t pad = off + rec > CAP ? CAP - off : 0;
  if (head + pad + rec - tail > CAP) return 0;
  if (pad) {
    *(uint32_t *)(r->data + off) = WRAP;
    head += pad;
    off = 0;
  }
  *(uint32_t *)(r->data + off) = len;
  memcpy(r->data + off + 4, msg, len);
  __atomic_store_n(&r->head, head + rec, __ATOMIC_RELEASE);
  __atomic_thread_fence(__ATOMIC_SEQ_CST);
  if (__atomic_load_n(&r->tail, __ATOMIC_ACQUIRE) == old) {
    uint64_t one = 1;
    if (write(c->bell, &one, 8) != 8) die("doorbell");
  }
  return 1;
}

/* Pops one message into out (at most max bytes); its length, or -1 when the ring is empty. */
static long pop(struct chan *c, void *out, size_t max) {
  struct ring *r = c->r;
  for (;;) {
    uint64_t tail = r->tail;
    if (__atomic_load_n(&r->head, __ATOMIC_ACQUIRE) == tail) return -1;
    size_t off = tail % CAP;
    uint32_t len = *(uint32_t *)(r->data + off);
    if (len == WRAP) {
      __atomic_store_n(&r->tail, tail + (CAP - off), __ATOMIC_RELEASE);
      continue;
    }
    if (len > max) {
      fprintf(stderr, "relay: a record of %u bytes\n", len);
      exit(1);
    }
    memcpy(out, r->data + off + 4, len);
    __atomic_store_n(&r->tail, tail + ((4 + (size_t)len + 7) & ~(size_t)7), __ATOMIC_RELEASE);
    return len;
  }
}

/* True when the ring is empty after the consumer's fence: it may sleep. */
static int drained(struct chan *c) {
  __atomic_thread_fence(__ATOMIC_SEQ_CST);
  return __atomic_load_n(&c->r->head, __ATOMIC_ACQUIRE) == c->r->tail;
}

static int watch(int ep, int fd) {
  struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};
  return epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
}

/* Waits until `in` may hold something, or until `sock` (if >= 0) is readable. */
static void await(int ep, struct chan *in, int sock) {
  if (busy_us > 0) {
    uint64_t until = now_ns() + (uint64_t)busy_us * 1000u;
    char b;
    do {
      if (!drained(in)) return;
      if (sock >= 0 && recv(sock, &b, 1, MSG_PEEK | MSG_DONTWAIT) > 0) return;
      if (yield_between) sched_yield();
    } while (now_ns() < until);
  }
  if (!drained(in)) return;
  struct epoll_event ev[2];
  int n = epoll_wait(ep, ev, 2, 30000);
  if (n == 0) {
    fprintf(stderr, "relay: nothing for 30 s\n");
    exit(1);
  }
  uint64_t v;
  if (read(in->bell, &v, 8) < 0 && errno != EAGAIN) die("doorbell read");
}

/* A switch: its peer's ring `in` to the socket, the socket to its peer's ring `out`. */
static void relay(struct chan *in, struct chan *out, int sock) {
  int ep = epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0 || watch(ep, in->bell) || watch(ep, sock)) die("epoll");
  uint8_t *tx = malloc(BUF), *rx = malloc(BUF);
  size_t have = 0;
  for (;;) {
    size_t n = 0;
    long len;
    while (n + 4 + 65536 <= BUF && (len = pop(in, tx + n + 4, 65536)) >= 0) {
      memcpy(tx + n, &(uint32_t){(uint32_t)len}, 4);
      n += 4 + (size_t)len;
    }
    for (size_t put = 0; put < n;) {
      ssize_t w = send(sock, tx + put, n - put, MSG_NOSIGNAL);
      if (w > 0) put += (size_t)w;
      else if (w < 0 && errno != EAGAIN && errno != EINTR) _exit(0);
    }
    ssize_t r = recv(sock, rx + have, BUF - have, MSG_DONTWAIT);
    if (r == 0) _exit(0);
    if (r > 0) {
      have += (size_t)r;
      size_t at = 0;
      for (;;) {
        uint32_t l;
        if (have - at < 4) break;
        memcpy(&l, rx + at, 4);
        if (have - at < 4 + (size_t)l) break;
        while (!push(out, rx + at + 4, l)) sched_yield();
        at += 4 + l;
      }
      memmove(rx, rx + at, have - at);
      have -= at;
      continue;
    }
    if (n == 0) await(ep, in, sock);
  }
}

int main(int argc, char **argv) {
  if (argc < 5) {
    fprintf(stderr, "usage: relay pingpong|stream SIZE ROUNDS|COUNT BATCHES|REPS [--busy-poll US [--yield]] --cpus A,B\n");
    return 2;
  }
  const int stream = strcmp(argv[1], "stream") == 0;
  if (!stream && strcmp(argv[1], "pingpong") != 0) {
    fprintf(stderr, "relay: pingpong or stream, not %s\n", argv[1]);
    return 2;
  }
  const size_t size = (size_t)atol(argv[2]);
  const long rounds = atol(argv[3]), batches = atol(argv[4]);
  int cpu_a = 0, cpu_b = 0;
  for (int i = 5; i < argc; i++) {
    if (strcmp(argv[i], "--busy-poll") == 0 && i + 1 < argc) busy_us = atol(argv[++i]);
    else if (strcmp(argv[i], "--yield") == 0) yield_between = 1;
    else if (strcmp(argv[i], "--cpus") == 0 && i + 1 < argc && sscanf(argv[++i], "%d,%d", &cpu_a, &cpu_b) == 2) {
    } else {
      fprintf(stderr, "relay: unknown argument %s\n", argv[i]);
      return 2;
    }
  }
  if (size < 4 || size > 65536 || rounds < 1 || batches < 1) {
    fprintf(stderr, "relay: SIZE 4..65536, ROUNDS and BATCHES >= 1\n");
    return 2;
  }
  /* Four rings: P -> A, A -> P, B -> Q, Q -> B. */
  int mfd = memfd_create("famez-bench-relay", MFD_CLOEXEC);
  if (mfd < 0 || ftruncate(mfd, 4 * (off_t)sizeof(struct ring)) != 0) die("memfd");
  struct ring *rings = mmap(NULL, 4 * sizeof(struct ring), PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
  if (rings == MAP_FAILED) die("mmap");
  struct chan ch[4];
  for (int i = 0; i < 4; i++) {
    ch[i].r = &rings[i];
    ch[i].bell = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (ch[i].bell < 0) die("eventfd");
  }
  struct chan *pa = &ch[0], *ap = &ch[1], *bq = &ch[2], *qb = &ch[3];
  int lfd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t al = sizeof a;
  if (lfd < 0 || bind(lfd, (struct sockaddr *)&a, sizeof a) || listen(lfd, 1) || getsockname(lfd, (struct sockaddr *)&a, &al)) die("listen");
  int ends[2];
  if (pipe(ends) != 0) die("pipe");
  pid_t parent = getpid(), kids[3];
  uint8_t *buf = calloc(1, 65536);
  for (int k = 0; k < 3; k++) {
    kids[k] = fork();
    if (kids[k] < 0) die("fork");
    if (kids[k]) continue;
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(1);
    int one = 1;
    if (k == 0) { /* switch A */
      pin(cpu_a);
      int s = socket(AF_INET, SOCK_STREAM, 0);
      if (s < 0 || connect(s, (struct sockaddr *)&a, sizeof a) || setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one)) die("connect");
      relay(pa, ap, s);
    } else if (k == 1) { /* switch B */
      pin(cpu_b);
      int s = accept(lfd, NULL, NULL);
      if (s < 0 || setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one)) die("accept");
      relay(qb, bq, s);
    } else { /* peer Q: echoes, or swallows and checks */
      pin(cpu_b);
      int ep = epoll_create1(EPOLL_CLOEXEC);
      if (ep < 0 || watch(ep, bq->bell)) die("epoll");
      for (long r = 0, want = stream ? rounds : rounds * batches + 1; r < (stream ? batches : 1); r++) {
        for (long i = 0; i < want;) {
          long len = pop(bq, buf, 65536);
          if (len < 0) {
            await(ep, bq, -1);
            continue;
          }
          uint32_t seq;
          memcpy(&seq, buf, 4);
          if ((size_t)len != size || (stream && seq != (uint32_t)i)) {
            fprintf(stderr, "relay: message %ld: %ld bytes, number %u\n", i, len, seq);
            exit(1);
          }
          if (!stream)
            while (!push(qb, buf, (uint32_t)len)) sched_yield();
          i++;
        }
        uint64_t t = now_ns();
        if (stream && write(ends[1], &t, sizeof t) != sizeof t) die("pipe write");
      }
      _exit(0);
    }
  }
  /* Peer P, the timing side. */
  pin(cpu_a);
  int ep = epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0 || watch(ep, ap->bell)) die("epoll");
  printf("{\"samples\":[");
  if (stream) {
    for (long r = 0; r < batches; r++) {
      uint64_t t0 = now_ns();
      for (long i = 0; i < rounds; i++) {
        memcpy(buf, &(uint32_t){(uint32_t)i}, 4);
        while (!push(pa, buf, (uint32_t)size)) sched_yield();
      }
      uint64_t t1;
      if (read(ends[0], &t1, sizeof t1) != sizeof t1) die("pipe read");
      printf("%s%.1f", r ? "," : "", (double)rounds / ((double)(t1 - t0) / 1e9));
    }
  } else {
    for (long b = -1; b < batches; b++) { /* batch -1: one untimed round trip */
      uint64_t t0 = now_ns();
      long n = b < 0 ? 1 : rounds;
      for (long i = 0; i < n; i++) {
        while (!push(pa, buf, (uint32_t)size)) sched_yield();
        while (pop(ap, buf, 65536) < 0) await(ep, ap, -1);
      }
      if (b >= 0) printf("%s%.3f", b ? "," : "", (double)(now_ns() - t0) / 1e3 / (double)rounds);
    }
  }
  printf("]}\n");
  fflush(stdout);
  for (int k = 0; k < 3; k++) kill(kids[k], SIGKILL), waitpid(kids[k], NULL, 0);
  return 0;
}
