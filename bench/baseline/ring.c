/* C baseline: one-way message throughput through a single-producer /
 * single-consumer ring in a shared memfd mapping, between two processes.
 *
 *   ring SIZE COUNT REPS [--cpus A,B]
 *
 * Fixed-size records (a u32 length + payload, padded to 8 bytes) in a
 * 4 MiB byte ring; head and tail are 64-bit counters on their own cache
 * lines, published with release stores and read with acquire loads. The
 * producer stamps each message's first 8 bytes with its sequence number and
 * copies it in, publishing head after each; the consumer takes everything
 * up to head, copying each message out and checking its length and
 * sequence number in the copy, then publishes tail. A full or empty ring
 * makes a side yield (no doorbells: the ring's own cost). As in the Rust
 * example, the first COUNT / 10 messages (1000 to 200,000) of the first rep
 * are not timed: its clock starts when the consumer has them, with the
 * producer in flight and the ring's pages faulted in.
 * Prints one JSON line; each sample is messages per second of one rep.
 * --cpus A,B pins the parent (the consumer) to CPU A and the child (the
 * producer) to CPU B with sched_setaffinity. */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define CAP (4u << 20)

struct hdr {
  _Alignas(64) uint64_t head; /* written by the producer */
  _Alignas(64) uint64_t tail; /* written by the consumer */
  _Alignas(64) uint64_t go;   /* rep number the producer may start */
};

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void pin(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  if (sched_setaffinity(0, sizeof set, &set) != 0) { perror("ring: sched_setaffinity"); exit(1); }
}

int main(int argc, char **argv) {
  int cpu_a = -1, cpu_b = -1;
  if (argc >= 3 && !strcmp(argv[argc - 2], "--cpus")) {
    if (sscanf(argv[argc - 1], "%d,%d", &cpu_a, &cpu_b) != 2) { fprintf(stderr, "ring: --cpus A,B\n"); return 2; }
    argc -= 2;
  }
  size_t size = argc > 1 ? strtoul(argv[1], 0, 10) : 64;
  long count = argc > 2 ? atol(argv[2]) : 1000000;
  long reps = argc > 3 ? atol(argv[3]) : 5;
  if (size < 8) { fprintf(stderr, "ring: SIZE at least 8 (the sequence number)\n"); return 2; }
  long warmup = count / 10 < 1000 ? 1000 : count / 10 > 200000 ? 200000 : count / 10;
  size_t rec = (4 + size + 7) & ~(size_t)7;
  int fd = memfd_create("famez-bench-ring", MFD_CLOEXEC);
  if (fd < 0 || ftruncate(fd, 4096 + CAP) != 0) { perror("memfd"); return 1; }
  uint8_t *base = mmap(NULL, 4096 + CAP, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (base == MAP_FAILED) { perror("mmap"); return 1; }
  struct hdr *h = (struct hdr *)base;
  uint8_t *data = base + 4096;
  uint8_t *msg = malloc(size), *out = malloc(size);
  memset(msg, 0x5a, size);
  pid_t parent = getpid();
  if (cpu_a >= 0) pin(cpu_a);
  pid_t pid = fork();
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(1);
    if (cpu_b >= 0) pin(cpu_b);
    uint64_t head = 0, seq = 0;
    for (long r = 1; r <= reps; r++) {
      while (__atomic_load_n(&h->go, __ATOMIC_ACQUIRE) < (uint64_t)r) sched_yield();
      for (long i = 0; i < count + (r == 1 ? warmup : 0); i++) {
        while (head + rec - __atomic_load_n(&h->tail, __ATOMIC_ACQUIRE) > CAP) sched_yield();
        size_t off = head % CAP;
        if (off + rec > CAP) { /* never split a record: pad to the end */
          size_t pad = CAP - off;
          while (head + pad + rec - __atomic_load_n(&h->tail, __ATOMIC_ACQUIRE) > CAP) sched_yield();
          *(uint32_t *)(data + off) = 0xffffffffu;
          head += pad;
          off = 0;
        }
        *(uint32_t *)(data + off) = (uint32_t)size;
        /* The sequence number, then the rest of the payload (a store into
         * msg followed by a wide copy out of it would stall on store
         * forwarding). */
        memcpy(data + off + 4, &seq, 8);
        memcpy(data + off + 12, msg + 8, size - 8);
        seq++;
        head += rec;
        __atomic_store_n(&h->head, head, __ATOMIC_RELEASE);
      }
    }
    _exit(0);
  }
  uint64_t tail = 0, seq = 0;
  long bytes = 0;
  printf("{\"scenario\":\"ring-throughput-%zu\",\"impl\":\"c\",\"unit\":\"msg/s\",\"samples\":[", size);
  for (long r = 1; r <= reps; r++) {
    double t0 = now_s();
    __atomic_store_n(&h->go, (uint64_t)r, __ATOMIC_RELEASE);
    long n = count + (r == 1 ? warmup : 0);
    for (long i = 0; i < n;) {
      uint64_t head = __atomic_load_n(&h->head, __ATOMIC_ACQUIRE);
      if (head == tail) { sched_yield(); continue; }
      while (tail < head) {
        size_t off = tail % CAP;
        uint32_t len = *(uint32_t *)(data + off);
        if (len == 0xffffffffu) { tail += CAP - off; continue; }
        memcpy(out, data + off + 4, len);
        uint64_t got;
        memcpy(&got, out, 8);
        if (len != size || got != seq) { fprintf(stderr, "ring: message %llu: %u bytes, sequence %llu\n", (unsigned long long)seq, len, (unsigned long long)got); return 1; }
        seq++;
        bytes += len;
        tail += (4 + len + 7) & ~(size_t)7;
        if (++i == warmup && r == 1) t0 = now_s();
      }
      __atomic_store_n(&h->tail, tail, __ATOMIC_RELEASE);
    }
    printf("%s%.0f", r > 1 ? "," : "", count / (now_s() - t0));
  }
  printf("]}\n");
  fflush(stdout);
  waitpid(pid, NULL, 0);
  return bytes == 0;
}
