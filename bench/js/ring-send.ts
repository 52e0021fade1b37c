// The ring-throughput producer of both JS benchmarks (host peers in
// bench/js/peer.ts, guests in bench/guest/agent.ts): messages written in
// place through a RingWriter: reserve, copy the payload in, stamp the
// sequence number; one commit (and at most one doorbell) per ring-full; a
// full ring yields to the loop until there is room.
import type { RingWriter } from '../../ts/fabric/ring.js';

/** Sends `count` messages of `size` bytes; `full(sent)` is called each time
 * the ring is full (a watchdog's progress, a deadline). */
export async function sendInPlace(w: RingWriter, size: number, count: number, full: (sent: number) => void = () => undefined): Promise<void> {
  const payload = Buffer.alloc(size, 0x5a);
  const words = new Uint32Array(w.bytes.buffer, w.bytes.byteOffset, w.capacity >>> 2);
  for (let i = 0; i < count; ) {
    for (; i < count; i++) {
      const at = w.reserve(size);
      if (at < 0) break;
      w.bytes.set(payload, at);
      words[at >>> 2] = i;
    }
    w.commit();
    if (i < count) {
      full(i);
      await new Promise((r) => setImmediate(r));
    }
  }
}
