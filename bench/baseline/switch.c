/* C baseline: FAME-Z switch ping round trips, PEERS peers asking at once.
 *
 *   switch PEERS WINDOW_MS BATCHES [--warmup-ms MS] [--cpus A,B]
 *
 * A memfd laid out as FAME-Z's mailbox for 14 clients (famez serve's
 * default: peers 1..14, the switch is 15; slot i at i x 512: buflen u64 at
 * 32, last_responder u64 at 48, buf at 128), one eventfd per vector used
 * (the switch's vectors 1..PEERS, each peer's vector 15), epoll, fork: one
 * switch process and PEERS peer processes.
 *
 * A peer loops: write "ping" into its own slot's buf, last_responder = 15,
 * publish buflen (release), ring the switch's vector numbered by its own
 * ID; sleep in epoll on its vector 15; read the switch's slot (acquire),
 * check "pong", free it (buflen = 0). The switch sleeps in epoll on its
 * vectors; on vector i it takes slot i's message (copy, buflen = 0) and
 * queues "pong" for peer i; its one slot serialises the answers (FIFO: one
 * outstanding ping per peer, so round-robin): it posts the next answer
 * once the last one has been taken, polling the slot (epoll with no
 * timeout, then sched_yield) while answers wait and it is busy, as a
 * FAME-Z sender must (a receiver does not ring back when it takes).
 *
 * The parent counts: after --warmup-ms (default 200) it reads the peers'
 * counters at the start and end of BATCHES windows of WINDOW_MS each;
 * each sample is round trips per second, all peers together. Prints one
 * JSON line. --cpus A,B: the parent and the peers on CPU A, the switch on
 * CPU B (sched_setaffinity); A == B puts everyone on one CPU. */
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

#define N_CLIENTS 14
#define SERVER_ID (N_CLIENTS + 1)
#define SLOT 512
#define BUFLEN 32
#define LAST_RESPONDER 48
#define BUF 128
#define MAX_PAYLOAD 383

static uint8_t *mb;
static int sw_bell[SERVER_ID + 1];  /* the switch's vector i: rung by peer i */
static int peer_bell[SERVER_ID + 1]; /* peer i's vector 15: rung by the switch */
static int stop_bell;                /* the parent tells the switch to exit */

struct ctl {
  _Alignas(64) volatile int stop;
  struct { _Alignas(64) uint64_t n; } count[SERVER_ID + 1];
};
static struct ctl *ctl;

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void pin(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  if (sched_setaffinity(0, sizeof set, &set) != 0) {
    fprintf(stderr, "switch: sched_setaffinity(CPU %d): %s\n", cpu, strerror(errno));
    exit(1);
  }
}

static uint64_t *word(int slot, int off) { return (uint64_t *)(mb + slot * SLOT + off); }

static void post(int from, int to, const char *text) {
  size_t n = strlen(text);
  memcpy(mb + from * SLOT + BUF, text, n + 1);
  *word(from, LAST_RESPONDER) = (uint64_t)to;
  __atomic_store_n(word(from, BUFLEN), (uint64_t)n, __ATOMIC_RELEASE);
}

/* Takes slot `from`'s message into out (NUL-terminated); its length, 0 if none. */
static size_t take(int from, char *out) {
  uint64_t n = __atomic_load_n(word(from, BUFLEN), __ATOMIC_ACQUIRE);
  if (n == 0) return 0;
  if (n > MAX_PAYLOAD) n = MAX_PAYLOAD;
  memcpy(out, mb + from * SLOT + BUF, n);
  out[n] = 0;
  __atomic_store_n(word(from, BUFLEN), 0, __ATOMIC_RELEASE);
  return n;
}

static void ring(int fd) {
  uint64_t one = 1;
  if (write(fd, &one, 8) != 8) { perror("switch: write"); exit(1); }
}

static int drain(int fd) {
  uint64_t v;
  return read(fd, &v, 8) == 8;
}

static void peer(int id) {
  int ep = epoll_create1(EPOLL_CLOEXEC);
  struct epoll_event ev = { .events = EPOLLIN, .data.fd = peer_bell[id] };
  epoll_ctl(ep, EPOLL_CTL_ADD, peer_bell[id], &ev);
  char in[MAX_PAYLOAD + 1];
  while (!ctl->stop) {
    /* The switch has taken the last ping before it answered: the slot is free. */
    if (__atomic_load_n(word(id, BUFLEN), __ATOMIC_ACQUIRE) != 0) { fprintf(stderr, "switch: peer %d's slot still busy\n", id); _exit(1); }
    post(id, SERVER_ID, "ping");
    ring(sw_bell[id]);
    for (;;) {
      int n = epoll_wait(ep, &ev, 1, 10000);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) { fprintf(stderr, "switch: peer %d: no answer in 10 s\n", id); _exit(1); }
      drain(peer_bell[id]);
      if (__atomic_load_n(word(SERVER_ID, LAST_RESPONDER), __ATOMIC_RELAXED) != (uint64_t)id) continue;
      if (take(SERVER_ID, in) > 0) break;
    }
    if (strcmp(in, "pong") != 0) { fprintf(stderr, "switch: peer %d got '%s'\n", id, in); _exit(1); }
    __atomic_store_n(&ctl->count[id].n, ctl->count[id].n + 1, __ATOMIC_RELAXED);
  }
  _exit(0);
}

static void the_switch(int peers) {
  int ep = epoll_create1(EPOLL_CLOEXEC);
  for (int i = 1; i <= peers; i++) {
    struct epoll_event ev = { .events = EPOLLIN, .data.u32 = (uint32_t)i };
    epoll_ctl(ep, EPOLL_CTL_ADD, sw_bell[i], &ev);
  }
  struct epoll_event sev = { .events = EPOLLIN, .data.u32 = 0 };
  epoll_ctl(ep, EPOLL_CTL_ADD, stop_bell, &sev);
  int queue[SERVER_ID + 1], qhead = 0, qlen = 0;
  struct epoll_event evs[SERVER_ID + 1];
  char in[MAX_PAYLOAD + 1];
  for (;;) {
    /* Answers waiting for a busy slot: look again at once (poll). */
    int n = epoll_wait(ep, evs, SERVER_ID + 1, qlen > 0 ? 0 : 10000);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) { perror("switch: epoll_wait"); _exit(1); }
    if (n == 0 && qlen == 0) { fprintf(stderr, "switch: no doorbell in 10 s\n"); _exit(1); }
    for (int k = 0; k < n; k++) {
      int i = (int)evs[k].data.u32;
      if (i == 0) _exit(0);
      drain(sw_bell[i]);
      if (take(i, in) == 0) continue;
      if (strcmp(in, "ping") != 0) { fprintf(stderr, "switch: peer %d sent '%s'\n", i, in); _exit(1); }
      queue[(qhead + qlen++) % (SERVER_ID + 1)] = i;
    }
    while (qlen > 0 && __atomic_load_n(word(SERVER_ID, BUFLEN), __ATOMIC_ACQUIRE) == 0) {
      int to = queue[qhead];
      qhead = (qhead + 1) % (SERVER_ID + 1);
      qlen--;
      post(SERVER_ID, to, "pong");
      ring(peer_bell[to]);
    }
    if (qlen > 0) sched_yield();
  }
}

int main(int argc, char **argv) {
  long pos[3] = { 1, 200, 5 };
  int npos = 0, cpu_a = -1, cpu_b = -1;
  long warmup_ms = 200;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--warmup-ms") && i + 1 < argc) warmup_ms = atol(argv[++i]);
    else if (!strcmp(argv[i], "--cpus") && i + 1 < argc) {
      if (sscanf(argv[++i], "%d,%d", &cpu_a, &cpu_b) != 2) { fprintf(stderr, "switch: --cpus A,B\n"); return 2; }
    } else if (npos < 3 && argv[i][0] != '-') pos[npos++] = atol(argv[i]);
    else { fprintf(stderr, "usage: switch PEERS WINDOW_MS BATCHES [--warmup-ms MS] [--cpus A,B]\n"); return 2; }
  }
  int peers = (int)pos[0];
  long window_ms = pos[1], batches = pos[2];
  if (peers < 1 || peers > N_CLIENTS) { fprintf(stderr, "switch: PEERS is 1..%d\n", N_CLIENTS); return 2; }

  int fd = memfd_create("famez-bench-switch", MFD_CLOEXEC);
  size_t size = 16 * SLOT; /* (nClients + 2) slots: a power of two */
  if (fd < 0 || ftruncate(fd, (off_t)size) != 0) { perror("switch: memfd"); return 1; }
  mb = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  ctl = mmap(NULL, sizeof *ctl, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (mb == MAP_FAILED || ctl == MAP_FAILED) { perror("switch: mmap"); return 1; }
  /* The globals: slotsize, buf_offset, nClients, nEvents, server_id. */
  uint64_t globals[5] = { SLOT, BUF, N_CLIENTS, N_CLIENTS + 2, SERVER_ID };
  memcpy(mb, globals, sizeof globals);
  for (int i = 1; i <= SERVER_ID; i++) *word(i, 40) = (uint64_t)i; /* peer_id */
  strcpy((char *)mb + SERVER_ID * SLOT, "Z-switch");
  for (int i = 1; i <= peers; i++) {
    sw_bell[i] = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    peer_bell[i] = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  }
  stop_bell = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);

  pid_t parent = getpid();
  pid_t pids[SERVER_ID + 1];
  if (cpu_a >= 0) pin(cpu_a);
  for (int i = 0; i <= peers; i++) { /* 0: the switch */
    pid_t pid = fork();
    if (pid < 0) { perror("switch: fork"); return 1; }
    if (pid == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (getppid() != parent) _exit(1);
      if (i == 0) {
        if (cpu_b >= 0) pin(cpu_b);
        the_switch(peers);
      }
      peer(i);
    }
    pids[i] = pid;
  }
  struct timespec w = { warmup_ms / 1000, (warmup_ms % 1000) * 1000000 };
  nanosleep(&w, NULL);
  printf("{\"scenario\":\"switch-ping-%d\",\"impl\":\"c\",\"unit\":\"ping/s\",\"samples\":[", peers);
  struct timespec win = { window_ms / 1000, (window_ms % 1000) * 1000000 };
  for (long b = 0; b < batches; b++) {
    uint64_t c0 = 0, c1 = 0;
    for (int i = 1; i <= peers; i++) c0 += __atomic_load_n(&ctl->count[i].n, __ATOMIC_RELAXED);
    double t0 = now_s();
    nanosleep(&win, NULL);
    for (int i = 1; i <= peers; i++) c1 += __atomic_load_n(&ctl->count[i].n, __ATOMIC_RELAXED);
    double t1 = now_s();
    printf("%s%.0f", b ? "," : "", (double)(c1 - c0) / (t1 - t0));
  }
  printf("]}\n");
  fflush(stdout);
  ctl->stop = 1;
  int failed = 0;
  for (int i = 1; i <= peers; i++) {
    int status = 0;
    waitpid(pids[i], &status, 0);
    failed |= !(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  }
  ring(stop_bell);
  int status = 0;
  waitpid(pids[0], &status, 0);
  failed |= !(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  return failed;
}
