/* C baseline inside a famez VM: the guest side of the `guest` benchmark
 * group (bench/run.ts), the same roles as bench/guest/agent.ts runs with
 * famez's JavaScript API.
 *
 *   guest            (as root, in a VM whose ivshmem-doorbell device is
 *                     bound to vfio-pci: `famez guest` once does that)
 *
 * Opens the device as famez-core's vfio.rs does, with linux/vfio.h's
 * ioctls: container, group, VFIO_GROUP_SET_CONTAINER, VFIO_SET_IOMMU
 * (type1v2, or no-IOMMU), VFIO_GROUP_GET_DEVICE_FD, region info of BAR0,
 * BAR2 and the config space, BAR0 and BAR2 mapped, VFIO_DEVICE_SET_IRQS
 * with one eventfd per MSI-X vector, bus mastering on. All eventfds are in
 * one epoll set. Prints {"agent":"c","id":ID,"vectors":V}, then reads one
 * command a line from stdin (the VM's console) and answers:
 *
 *   echo PEER        "ready"; rings PEER (vector ID) back on every interrupt
 *                    on vector PEER until the next input line
 *                    -> {"echoed":N}
 *   ping PEER ROUNDS BATCHES WARMUP
 *                    doorbell round trips with PEER -> {"samples":[us...]}
 *   rrecv PEER COUNT "ready"; takes COUNT messages from PEER's famez ring
 *                    channel to this peer (docs/ring-channels.md), each
 *                    one's sequence number checked in place, sleeping on
 *                    vector PEER when empty
 *                    -> {"count":N,"samples":[msg/s first to last message]}
 *   rsend PEER SIZE COUNT
 *                    writes COUNT SIZE-byte messages into the ring to PEER
 *                    (published every 64 KiB, doorbell when it was empty,
 *                    sched_yield while full) -> {"sent":N}
 *   wake COUNT       an eventfd signalled again from each of its own
 *                    wake-ups (epoll_wait, read, write), COUNT times: the
 *                    loop's cost per event, no device -> {"samples":[us]}
 *   bell PEER COUNT  COUNT doorbell stores to PEER's vector 0 (a vector
 *                    the host peer ignores) -> {"samples":[us per store]}
 *   copy SIZE COUNT  COUNT memcpy of SIZE bytes between two buffers
 *                    -> {"samples":[us per copy]}
 *   quit
 * Every wait is bounded (10 s without progress: {"error":...}, exit 1). */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/vfio.h>
#include <sched.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define MAX_VECTORS 64
#define WAIT_MS 10000
#define RING_MAGIC 0x3130474E49525A46ull /* "FZRING01" */
#define PUBLISH_EVERY 65536u

static volatile uint32_t *bar0;
static uint8_t *bar2;
static uint64_t bar2_size;
static int efd[MAX_VECTORS], nvec, ep, myid;

static void die(const char *fmt, ...) {
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  printf("{\"error\":\"%s%s%s\"}\n", msg, errno ? ": " : "", errno ? strerror(errno) : "");
  fflush(stdout);
  exit(1);
}

static double now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

/* ------------------------------------------------------------ the device */

static int sysfs_is(const char *dir, const char *file, const char *want) {
  char p[PATH_MAX], buf[64] = {0};
  snprintf(p, sizeof p, "%s/%s", dir, file);
  FILE *f = fopen(p, "r");
  if (!f) return 0;
  int ok = fgets(buf, sizeof buf, f) && strncmp(buf, want, strlen(want)) == 0;
  fclose(f);
  return ok;
}

/* The ivshmem-doorbell device (1af4:1110) bound to vfio-pci. */
static void find_device(char *bdf, size_t n, char *group, size_t gn) {
  DIR *d = opendir("/sys/bus/pci/devices");
  if (!d) die("no /sys/bus/pci/devices");
  struct dirent *e;
  while ((e = readdir(d))) {
    char dir[PATH_MAX], link[PATH_MAX];
    snprintf(dir, sizeof dir, "/sys/bus/pci/devices/%s", e->d_name);
    if (!sysfs_is(dir, "vendor", "0x1af4") || !sysfs_is(dir, "device", "0x1110")) continue;
    char p[PATH_MAX + 16];
    snprintf(p, sizeof p, "%s/driver", dir);
    ssize_t k = readlink(p, link, sizeof link - 1);
    if (k < 0) continue;
    link[k] = 0;
    if (strcmp(strrchr(link, '/') + 1, "vfio-pci") != 0) continue;
    snprintf(p, sizeof p, "%s/iommu_group", dir);
    k = readlink(p, link, sizeof link - 1);
    if (k < 0) die("%s has no IOMMU group", e->d_name);
    link[k] = 0;
    snprintf(bdf, n, "%s", e->d_name);
    snprintf(group, gn, "%s", strrchr(link, '/') + 1);
    closedir(d);
    return;
  }
  errno = 0;
  die("no ivshmem device bound to vfio-pci (run famez guest once)");
}

static struct vfio_region_info region(int dev, unsigned index) {
  struct vfio_region_info r = { .argsz = sizeof r, .index = index };
  if (ioctl(dev, VFIO_DEVICE_GET_REGION_INFO, &r) < 0) die("VFIO_DEVICE_GET_REGION_INFO %u", index);
  return r;
}

static void open_device(void) {
  char bdf[64], group[64], path[128];
  find_device(bdf, sizeof bdf, group, sizeof group);
  int container = open("/dev/vfio/vfio", O_RDWR | O_CLOEXEC);
  if (container < 0) die("open /dev/vfio/vfio");
  if (ioctl(container, VFIO_GET_API_VERSION) != VFIO_API_VERSION) die("VFIO API version");
  int type = VFIO_TYPE1v2_IOMMU;
  snprintf(path, sizeof path, "/dev/vfio/%s", group);
  int g = open(path, O_RDWR | O_CLOEXEC);
  if (g < 0 && errno == ENOENT) {
    snprintf(path, sizeof path, "/dev/vfio/noiommu-%s", group);
    g = open(path, O_RDWR | O_CLOEXEC);
    type = VFIO_NOIOMMU_IOMMU;
  }
  if (g < 0) die("open %s", path);
  if (ioctl(container, VFIO_CHECK_EXTENSION, type) != 1) die("no IOMMU type %d", type);
  struct vfio_group_status st = { .argsz = sizeof st };
  if (ioctl(g, VFIO_GROUP_GET_STATUS, &st) < 0) die("VFIO_GROUP_GET_STATUS");
  if (!(st.flags & VFIO_GROUP_FLAGS_VIABLE)) { errno = 0; die("IOMMU group %s is not viable", group); }
  if (ioctl(g, VFIO_GROUP_SET_CONTAINER, &container) < 0) die("VFIO_GROUP_SET_CONTAINER");
  if (ioctl(container, VFIO_SET_IOMMU, type) < 0) die("VFIO_SET_IOMMU");
  int dev = ioctl(g, VFIO_GROUP_GET_DEVICE_FD, bdf);
  if (dev < 0) die("VFIO_GROUP_GET_DEVICE_FD %s", bdf);
  struct vfio_region_info r0 = region(dev, VFIO_PCI_BAR0_REGION_INDEX);
  struct vfio_region_info r2 = region(dev, VFIO_PCI_BAR2_REGION_INDEX);
  struct vfio_region_info cfg = region(dev, VFIO_PCI_CONFIG_REGION_INDEX);
  if (!(r0.flags & VFIO_REGION_INFO_FLAG_MMAP) || !(r2.flags & VFIO_REGION_INFO_FLAG_MMAP)) { errno = 0; die("BAR0/BAR2 cannot be mapped"); }
  bar0 = mmap(NULL, r0.size, PROT_READ | PROT_WRITE, MAP_SHARED, dev, r0.offset);
  if (bar0 == MAP_FAILED) die("mmap BAR0");
  bar2 = mmap(NULL, r2.size, PROT_READ | PROT_WRITE, MAP_SHARED, dev, r2.offset);
  if (bar2 == MAP_FAILED) die("mmap BAR2");
  bar2_size = r2.size;
  struct vfio_irq_info irq = { .argsz = sizeof irq, .index = VFIO_PCI_MSIX_IRQ_INDEX };
  if (ioctl(dev, VFIO_DEVICE_GET_IRQ_INFO, &irq) < 0) die("VFIO_DEVICE_GET_IRQ_INFO");
  nvec = irq.count > MAX_VECTORS ? MAX_VECTORS : (int)irq.count;
  size_t sz = sizeof(struct vfio_irq_set) + sizeof(int32_t) * nvec;
  struct vfio_irq_set *set = calloc(1, sz);
  set->argsz = sz;
  set->flags = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER;
  set->index = VFIO_PCI_MSIX_IRQ_INDEX;
  set->start = 0;
  set->count = nvec;
  ep = epoll_create1(EPOLL_CLOEXEC);
  for (int v = 0; v < nvec; v++) {
    efd[v] = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    ((int32_t *)set->data)[v] = efd[v];
    struct epoll_event ev = { .events = EPOLLIN, .data.u32 = v };
    epoll_ctl(ep, EPOLL_CTL_ADD, efd[v], &ev);
  }
  if (ioctl(dev, VFIO_DEVICE_SET_IRQS, set) < 0) die("VFIO_DEVICE_SET_IRQS (MSI-X)");
  free(set);
  uint16_t cmd;
  if (pread(dev, &cmd, 2, cfg.offset + 4) != 2) die("read the command register");
  if (!(cmd & 4)) {
    cmd |= 4; /* bus master: without it no MSI-X message is sent */
    if (pwrite(dev, &cmd, 2, cfg.offset + 4) != 2) die("enable bus mastering");
  }
  myid = bar0[2]; /* IVPosition */
}

static inline void ring_bell(int peer, int vector) { bar0[3] = (uint32_t)peer << 16 | (uint32_t)vector; }

/* ------------------------------------------------------------ input */

static char inbuf[4096];
static size_t inlen;

/* A whole line waiting in inbuf (or read now when block): its length, else -1. */
static int next_line(char *out, size_t n, int block) {
  for (;;) {
    char *nl = memchr(inbuf, '\n', inlen);
    if (nl) {
      size_t k = nl - inbuf;
      size_t c = k < n - 1 ? k : n - 1;
      memcpy(out, inbuf, c);
      out[c] = 0;
      memmove(inbuf, nl + 1, inlen - k - 1);
      inlen -= k + 1;
      return (int)c;
    }
    if (!block) return -1;
    ssize_t r = read(0, inbuf + inlen, sizeof inbuf - inlen - 1);
    if (r <= 0) return -2;
    inlen += r;
  }
}

/* Waits for an interrupt on `vector` (others are drained and ignored) or,
 * when stdin_too, a line on stdin (returns 1 then). 0 after the interrupt. */
static int stdin_watched;
static int wait_vector(int vector, int stdin_too) {
  if (stdin_too && !stdin_watched) {
    struct epoll_event ev = { .events = EPOLLIN, .data.u32 = 1000 };
    epoll_ctl(ep, EPOLL_CTL_ADD, 0, &ev);
    stdin_watched = 1;
  }
  for (;;) {
    struct epoll_event evs[8];
    int n = epoll_wait(ep, evs, 8, stdin_too ? -1 : WAIT_MS);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) { errno = 0; die("no interrupt on vector %d in %d ms", vector, WAIT_MS); }
    int hit = 0;
    for (int i = 0; i < n; i++) {
      uint32_t v = evs[i].data.u32;
      if (v == 1000) {
        ssize_t r = read(0, inbuf + inlen, sizeof inbuf - inlen - 1);
        if (r > 0) inlen += r;
        if (memchr(inbuf, '\n', inlen) || r <= 0) return 1;
        continue;
      }
      uint64_t c;
      if (read(efd[v], &c, 8) == 8 && (int)v == vector) hit = 1;
    }
    if (hit) return 0;
  }
}

/* ------------------------------------------------------------ roles */

static void echo(int peer) {
  long n = 0;
  printf("ready\n");
  fflush(stdout);
  while (wait_vector(peer, 1) == 0) {
    ring_bell(peer, myid);
    n++;
  }
  char end[256];
  next_line(end, sizeof end, 0); /* the line that ended it */
  printf("{\"echoed\":%ld}\n", n);
}

static void ping(int peer, long rounds, long batches, long warmup) {
  if (warmup <= 0) warmup = rounds / 10 + 1;
  for (long i = 0; i < warmup; i++) {
    ring_bell(peer, myid);
    wait_vector(peer, 0);
  }
  printf("{\"samples\":[");
  for (long b = 0; b < batches; b++) {
    double t0 = now_us();
    for (long i = 0; i < rounds; i++) {
      ring_bell(peer, myid);
      wait_vector(peer, 0);
    }
    printf("%s%.3f", b ? "," : "", (now_us() - t0) / rounds);
  }
  printf("]}\n");
}

struct ring {
  volatile uint64_t *head, *tail;
  uint8_t *data;
  uint64_t cap;
};

/* The famez ring channel from s to r (docs/ring-channels.md). */
static struct ring ring_of(int s, int r) {
  uint64_t *g = (uint64_t *)bar2;
  if (__atomic_load_n(&g[5], __ATOMIC_ACQUIRE) != RING_MAGIC) { errno = 0; die("the shared object has no ring channels"); }
  uint64_t n = g[2], base = g[6], cap = g[7], e = n + 1;
  uint64_t k = (s - 1) * (e - 1) + (r - 1) - (r > s ? 1 : 0);
  uint64_t at = base + k * (256 + cap);
  if (at + 256 + cap > bar2_size) { errno = 0; die("ring %d->%d past BAR2", s, r); }
  uint8_t *p = bar2 + at;
  return (struct ring){ (uint64_t *)p, (uint64_t *)(p + 128), p + 256, cap };
}

static void rsend(int peer, size_t size, long count) {
  struct ring rg = ring_of(myid, peer);
  uint64_t cap = rg.cap, h = *rg.head, published = h;
  size_t rec = 8 + ((size + 7) & ~(size_t)7);
  if (size < 4 || rec > cap / 2) { errno = 0; die("size %zu", size); }
  uint8_t *payload = malloc(size);
  memset(payload, 0x5a, size);
  double last = now_us();
  /* publishes head; rings the peer when the ring was empty before it */
  #define PUBLISH() do { \
    uint64_t old = published; \
    __atomic_store_n(rg.head, h, __ATOMIC_RELEASE); \
    __atomic_thread_fence(__ATOMIC_SEQ_CST); \
    if (__atomic_load_n(rg.tail, __ATOMIC_ACQUIRE) == old) ring_bell(peer, myid); \
    published = h; \
  } while (0)
  for (long i = 0; i < count;) {
    uint64_t t = __atomic_load_n(rg.tail, __ATOMIC_ACQUIRE);
    uint64_t pos = h & (cap - 1);
    uint64_t pad = rec <= cap - pos ? 0 : cap - pos;
    if (h - t + pad + rec > cap) {
      if (h != published) PUBLISH();
      if (now_us() - last > WAIT_MS * 1e3) { errno = 0; die("ring: still full at message %ld", i); }
      sched_yield();
      continue;
    }
    if (pad) {
      *(uint64_t *)(rg.data + pos) = 1ull << 32;
      h += pad;
      pos = 0;
    }
    *(uint64_t *)(rg.data + pos) = size;
    memcpy(rg.data + pos + 8, payload, size); /* as the JS writer copies its payload in */
    *(uint32_t *)(rg.data + pos + 8) = (uint32_t)i;
    h += rec;
    i++;
    last = now_us();
    if (h - published >= PUBLISH_EVERY) PUBLISH();
  }
  if (h != published) PUBLISH();
  free(payload);
  printf("{\"sent\":%ld}\n", count);
}

static void rrecv(int peer, long count) {
  struct ring rg = ring_of(peer, myid);
  uint64_t cap = rg.cap, t = *rg.tail, given = t;
  long got = 0;
  double first = 0, end = 0;
  printf("ready\n");
  fflush(stdout);
  while (got < count) {
    uint64_t h = __atomic_load_n(rg.head, __ATOMIC_ACQUIRE);
    while (t != h && got < count) {
      uint64_t pos = t & (cap - 1), used = h - t;
      if (used < 8 || used > cap) { errno = 0; die("ring corrupt: %llu bytes in use", (unsigned long long)used); }
      uint64_t hdr = *(uint64_t *)(rg.data + pos);
      uint32_t len = (uint32_t)hdr, flags = hdr >> 32;
      if (flags == 1) { t += cap - pos; continue; }
      uint64_t rec = 8 + ((len + 7ull) & ~7ull);
      if (flags != 0 || len > cap / 2 - 8 || rec > used || pos + rec > cap) { errno = 0; die("ring corrupt at %llu", (unsigned long long)t); }
      uint32_t seq = *(uint32_t *)(rg.data + pos + 8);
      if (seq != (uint32_t)got) { errno = 0; die("ring: message %ld carries sequence %u", got, seq); }
      if (got == 0) first = now_us();
      t += rec;
      got++;
      if (t - given >= PUBLISH_EVERY) {
        __atomic_store_n(rg.tail, t, __ATOMIC_RELEASE);
        given = t;
      }
    }
    if (got == count) end = now_us();
    __atomic_store_n(rg.tail, t, __ATOMIC_RELEASE);
    given = t;
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    if (got < count && __atomic_load_n(rg.head, __ATOMIC_ACQUIRE) == t) wait_vector(peer, 0);
  }
  printf("{\"count\":%ld,\"samples\":[%.0f]}\n", got, count > 1 ? (count - 1) / ((end - first) / 1e6) : 0);
}

static void wake(long count) {
  int e = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC), w = epoll_create1(EPOLL_CLOEXEC);
  struct epoll_event ev = { .events = EPOLLIN, .data.fd = e };
  epoll_ctl(w, EPOLL_CTL_ADD, e, &ev);
  uint64_t one = 1, c;
  double t0 = now_us();
  if (write(e, &one, 8) != 8) die("eventfd write");
  for (long i = 0; i < count; i++) {
    if (epoll_wait(w, &ev, 1, WAIT_MS) != 1) die("epoll_wait");
    if (read(e, &c, 8) != 8) die("eventfd read");
    if (write(e, &one, 8) != 8) die("eventfd write");
  }
  printf("{\"samples\":[%.3f]}\n", (now_us() - t0) / count);
  close(w);
  close(e);
}

static void bell(int peer, long count) {
  double t0 = now_us();
  for (long i = 0; i < count; i++) ring_bell(peer, 0);
  printf("{\"samples\":[%.3f]}\n", (now_us() - t0) / count);
}

static void *(*volatile copy_fn)(void *, const void *, size_t) = memcpy;
static void copy(size_t size, long count) {
  uint8_t *src = malloc(size), *dst = malloc(size);
  memset(src, 0x5a, size);
  memset(dst, 0, size);
  double t0 = now_us();
  for (long i = 0; i < count; i++) copy_fn(dst, src, size);
  printf("{\"samples\":[%.3f]}\n", (now_us() - t0) / count);
  free(src);
  free(dst);
}

int main(void) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  open_device();
  printf("{\"agent\":\"c\",\"id\":%d,\"vectors\":%d}\n", myid, nvec);
  char line[256];
  for (;;) {
    int k = next_line(line, sizeof line, 1);
    if (k == -2) return 0;
    char cmd[16] = {0};
    long a[4] = {0};
    int n = sscanf(line, "%15s %ld %ld %ld %ld", cmd, &a[0], &a[1], &a[2], &a[3]);
    if (n < 1) continue;
    errno = 0;
    if (!strcmp(cmd, "echo") && n >= 2) echo((int)a[0]);
    else if (!strcmp(cmd, "ping") && n >= 4) ping((int)a[0], a[1], a[2], n >= 5 ? a[3] : 0);
    else if (!strcmp(cmd, "rrecv") && n >= 3) rrecv((int)a[0], a[1]);
    else if (!strcmp(cmd, "rsend") && n >= 4) rsend((int)a[0], (size_t)a[1], a[2]);
    else if (!strcmp(cmd, "wake") && n >= 2) wake(a[0]);
    else if (!strcmp(cmd, "bell") && n >= 3) bell((int)a[0], a[1]);
    else if (!strcmp(cmd, "copy") && n >= 3) copy((size_t)a[0], a[1]);
    else if (!strcmp(cmd, "quit")) return 0;
    else printf("{\"error\":\"unknown command '%s'\"}\n", line);
    fflush(stdout);
  }
}
