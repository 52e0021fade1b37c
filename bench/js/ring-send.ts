// The ring-throughput producer of both JS benchmarks (host peers in
// bench/js/peer.ts, guests in bench/guest/agent.ts): messages written in
// place through a RingWriter, a run of records at a time (reserveRun: one
// call reserves as many records of SIZE bytes as fit, their headers
// written), each payload copied in from a private buffer and its sequence
// number stamped over its first 4 bytes; one commit (and at most one
// doorbell) per ring-full, the batch published on the way; a full ring
// yields to the loop until there is room.
//
// The copy: payloads under 256 bytes are copied 8 bytes at a time through
// Float64Array views (8 loads and stores for 64 bytes: about 4 ns, against
// about 11 for Buffer.prototype.set, whose call costs more than its
// memmove at that size; the payload here is 0x5a bytes, a plain double:
// an engine may change a NaN's bits, so this is no way to copy arbitrary
// bytes), a 64-byte one in straight-line code two messages a turn (the
// loop's own compares and branches were ~1.5 of its ~8 ns); larger ones
// with Buffer.prototype.set (memmove).
import { recordSize, type RingWriter } from '../../ts/fabric/ring.js';

/** Payloads shorter than this are copied by 8-byte words. */
const WORD_COPY_BELOW = 256;

/** One sender's views: the ring's data area as words, the payload. */
interface Views {
  w: RingWriter;
  size: number;
  stride: number;
  f64: Float64Array;
  words: Uint32Array;
  payload: Float64Array;
  src: Buffer;
}

/** Writes messages `i..count` while they fit; returns how far it got.
 * The hot loop, in a plain function of its own: the async caller's rare
 * paths (a full ring, the await) stay out of its optimised code. */
function fill(v: Views, i: number, count: number): number {
  const { w, size, stride, f64, words, payload, src } = v;
  const bytes = w.bytes;
  const n8 = size >>> 3;
  const small = size < WORD_COPY_BELOW;
  while (i < count) {
    const k = w.reserveRun(size, count - i);
    if (k === 0) break;
    let at = w.runAt;
    if (n8 === 8) {
      // One 64-byte block: straight-line copies, two messages a turn (an
      // odd last one leaves by the break: no code there that the JIT has
      // not seen run).
      for (let j = 0; j < k; j += 2, at += 2 * stride) {
        let d = at >>> 3;
        f64[d] = payload[0];
        f64[d + 1] = payload[1];
        f64[d + 2] = payload[2];
        f64[d + 3] = payload[3];
        f64[d + 4] = payload[4];
        f64[d + 5] = payload[5];
        f64[d + 6] = payload[6];
        f64[d + 7] = payload[7];
        words[at >>> 2] = i + j;
        if (j + 1 === k) break;
        d = (at + stride) >>> 3;
        f64[d] = payload[0];
        f64[d + 1] = payload[1];
        f64[d + 2] = payload[2];
        f64[d + 3] = payload[3];
        f64[d + 4] = payload[4];
        f64[d + 5] = payload[5];
        f64[d + 6] = payload[6];
        f64[d + 7] = payload[7];
        words[(at + stride) >>> 2] = i + j + 1;
      }
    } else if (small) {
      for (let j = 0; j < k; j++, at += stride) {
        // Records (and so payloads) are 8-aligned.
        let d = at >>> 3;
        let q = 0;
        for (; q + 8 <= n8; q += 8, d += 8) {
          f64[d] = payload[q];
          f64[d + 1] = payload[q + 1];
          f64[d + 2] = payload[q + 2];
          f64[d + 3] = payload[q + 3];
          f64[d + 4] = payload[q + 4];
          f64[d + 5] = payload[q + 5];
          f64[d + 6] = payload[q + 6];
          f64[d + 7] = payload[q + 7];
        }
        for (; q < n8; q++, d++) f64[d] = payload[q];
        words[at >>> 2] = i + j;
      }
    } else {
      for (let j = 0; j < k; j++, at += stride) {
        bytes.set(src, at);
        words[at >>> 2] = i + j;
      }
    }
    i += k;
  }
  return i;
}

/** Sends `count` messages of `size` bytes (a multiple of 8, at least 8);
 * `full(sent)` is called each time the ring is full (a watchdog's
 * progress, a deadline). */
export async function sendInPlace(w: RingWriter, size: number, count: number, full: (sent: number) => void = () => undefined): Promise<void> {
  if (size < 8 || size % 8 !== 0) throw new RangeError(`ring-send: a size of ${size} is not a multiple of 8`);
  const payload = new Float64Array(size / 8);
  new Uint8Array(payload.buffer).fill(0x5a);
  const bytes = w.bytes;
  const v: Views = {
    w,
    size,
    stride: recordSize(size),
    f64: new Float64Array(bytes.buffer, bytes.byteOffset, w.capacity >>> 3),
    words: new Uint32Array(bytes.buffer, bytes.byteOffset, w.capacity >>> 2),
    payload,
    src: Buffer.from(payload.buffer),
  };
  for (let i = 0; ; ) {
    i = fill(v, i, count);
    w.commit();
    if (i >= count) return;
    full(i);
    await new Promise((r) => setImmediate(r));
  }
}
