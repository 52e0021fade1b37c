// famez's ring channels in TypeScript, straight over the mapped shared
// memory: the same byte protocol as crates/famez-core/src/ring.rs
// (docs/ring-channels.md), without a native call per message or per batch.
//
// A producer writes records into the data area through typed arrays and
// publishes `head` once per batch (reserve() a record at a time, or
// reserveRun() many of one size); a consumer walks the records in place,
// handing each payload to a callback as (bytes, start, length) over the
// mapping (read()), or their positions and lengths in two Int32Arrays
// (take()), and publishes `tail` once. Nothing is allocated per message,
// and the per-record work is small-integer arithmetic (positions and byte
// counts below 2^31; the 64-bit counters are touched once a batch).
//
// Ordering: `head` and `tail` are 64-bit counters read and written with
// Atomics on a BigUint64Array (sequentially consistent, so each publish is
// also the full barrier the doorbell rule needs: producer head -> barrier
// -> tail, consumer tail -> barrier -> head). Record headers and payloads
// are plain typed-array accesses ordered by those atomics. Counters are
// kept as Numbers: a ring would need 2^53 bytes (9 PB) of traffic to pass
// that, so a larger value is treated as corruption. Little-endian hosts
// only (the layout is little-endian; typed arrays use the host's order).
// The layout's numbers come from ../layout.generated.ts (famez-core's
// layout.rs).
import { endianness } from 'node:os';

import { FamezError } from '../errors.js';

import type { RingLayoutInfo } from '../native.js';
import * as layout from '../layout.generated.js';

// Module-local copies of the layout's numbers: the hot loops below read
// them on every record, and an imported binding can cost a property load
// (or, as bundlers and tsx emit ES modules, a getter call) each time.
const FLAG_WRAP = layout.FLAG_WRAP;
const RECORD_HEADER = layout.RECORD_HEADER;
const RING_HEADER = layout.RING_HEADER;
const RING_ALIGN = layout.RING_ALIGN;
const MIN_CAPACITY = layout.RING_MIN_CAPACITY;
const MAX_CAPACITY = layout.RING_MAX_CAPACITY;
const { RING_ERRORS, RING_HEAD, RING_TAIL } = layout;
export { FLAG_WRAP, RECORD_HEADER, RING_HEADER };
// Indices of head and tail in a BigUint64Array over the header.
const HEAD = RING_HEAD / 8;
const TAIL = RING_TAIL / 8;
/** The consumer's error count (beside tail): how many times it dropped
 * the ring's contents as corrupt (docs/ring-channels.md). */
const ERRORS = RING_ERRORS / 8;
// The same counters as u32 halves (the low half first: little-endian).
const HEAD_LO = RING_HEAD / 4;
const TAIL_LO = RING_TAIL / 4;
/** A producer publishes `head`, a consumer `tail`, at least every this many
 * bytes (or a quarter of the ring): the other side never waits for the end
 * of a long batch. (A producer whose publish found the ring empty waits
 * twice as long for the next, up to a quarter of the ring: a consumer
 * that keeps up is rung O(log) times plus once a quarter ring, not once
 * every 64 KiB.) */
const PUBLISH_EVERY = 64 * 1024;

/** The first value of the fields that hold counters (Numbers up to 2^53):
 * not a small integer, so that V8 gives them a double representation at
 * once instead of changing it, and deoptimising the code that uses them,
 * when a counter passes 2^31. Never used as a counter. */
const COUNTER_FIELD = -0.5;

if (endianness() !== 'LE') throw new Error('famez ring channels need a little-endian host');

/** The ring holds something no correct producer writes (or its counters
 * make no sense). Nothing at or after the bad record was consumed; a read
 * has handed the `delivered` good messages before it to its visitor (and
 * given their space back). `discardCorrupt()` resynchronises. */
export class RingCorrupt extends FamezError<'EBADMSG'> {
  override name = 'RingCorrupt';
  constructor(
    message: string,
    /** Messages handed to the visitor, in this read, before the bad record. */
    readonly delivered = 0,
  ) {
    super('EBADMSG', message);
  }
}

/** Size of the record that carries `len` payload bytes. */
export function recordSize(len: number): number {
  return RECORD_HEADER + Math.ceil(len / 8) * 8;
}

/** Byte offset of the ring from `sender` to `receiver` (IDs 1..nClients+1,
 * the switch last) in the shared object. */
export function ringOffset(layout: RingLayoutInfo, sender: number, receiver: number): number {
  const e = layout.nClients + 1;
  const ok = (x: number) => Number.isInteger(x) && x >= 1 && x <= e;
  if (!ok(sender) || !ok(receiver) || sender === receiver) throw new RangeError(`there is no ring from ${sender} to ${receiver}`);
  return layout.base + ((sender - 1) * (e - 1) + (receiver - 1) - (receiver > sender ? 1 : 0)) * layout.stride;
}

abstract class RingView {
  /** The ring's data area; payload positions index into it. */
  readonly bytes: Buffer;
  readonly capacity: number;
  /** The largest message: capacity / 2 - 8 bytes. */
  readonly maxMessage: number;
  protected readonly words: Uint32Array;
  /** The data area as doubles (8-byte stores of record headers). */
  protected readonly doubles: Float64Array;
  /** One record header, as two words and as the double with its bits. */
  protected readonly header = new Uint32Array(2);
  protected readonly headerDouble = new Float64Array(this.header.buffer);
  protected readonly counters: BigUint64Array;
  protected readonly mask: number;
  /** Bytes after which a long batch publishes its counter on the way. */
  protected readonly publishEvery: number;

  constructor(memory: ArrayBuffer, offset: number, capacity: number) {
    if (!Number.isInteger(capacity) || capacity < MIN_CAPACITY || capacity > MAX_CAPACITY || (capacity & (capacity - 1)) !== 0) {
      throw new RangeError(`ring capacity ${capacity} is not a power of two between ${MIN_CAPACITY} and ${MAX_CAPACITY}`);
    }
    if (!Number.isInteger(offset) || offset < 0 || offset % RING_ALIGN !== 0 || offset + RING_HEADER + capacity > memory.byteLength) {
      throw new RangeError(`a ring of ${capacity} bytes at ${offset} does not fit a shared object of ${memory.byteLength} bytes (or is not ${RING_ALIGN}-aligned)`);
    }
    this.capacity = capacity;
    this.maxMessage = capacity / 2 - RECORD_HEADER;
    this.mask = capacity - 1;
    this.publishEvery = Math.min(capacity / 4, PUBLISH_EVERY);
    this.counters = new BigUint64Array(memory, offset, RING_HEADER / 8);
    this.bytes = Buffer.from(memory, offset + RING_HEADER, capacity);
    this.words = new Uint32Array(memory, offset + RING_HEADER, capacity / 4);
    this.doubles = new Float64Array(memory, offset + RING_HEADER, capacity / 8);
  }

  protected load(index: number): number {
    const v = Number(Atomics.load(this.counters, index));
    if (v > Number.MAX_SAFE_INTEGER) throw new RingCorrupt(`corrupt ring: counter ${v} past 2^53`);
    return v;
  }

  protected store(index: number, value: number): void {
    Atomics.store(this.counters, index, BigInt(value));
  }

  /** Bytes in use now (records and padding). */
  get usedBytes(): number {
    return this.load(HEAD) - this.load(TAIL);
  }

  get isEmpty(): boolean {
    return this.usedBytes === 0;
  }

  /** How many times the consumer dropped this ring's contents as corrupt
   * (a count that only grows: compare with an earlier value). */
  get errors(): number {
    return Number(Atomics.load(this.counters, ERRORS));
  }
}

/** The producing end of one ring (only the sender pushes). Views hold no
 * state between batches: the counters live in the shared memory. */
export class RingWriter extends RingView {
  /** `doorbell`, when given, is called by every commit that found the
   * ring empty (so callers need not look at the result). */
  constructor(
    memory: ArrayBuffer,
    offset: number,
    capacity: number,
    private readonly doorbell?: () => void,
  ) {
    super(memory, offset, capacity);
  }

  /** Whether the last batch that pushed anything found the ring empty:
   * then the receiver's doorbell must be rung. */
  wasEmpty = false;
  /** Where the payload of the first record of the last reserveRun() is in
   * `bytes` (-1 after a run of none); the next ones follow every
   * recordSize(len) bytes. */
  runAt = -1;
  // An open batch. The hot paths work on small integers: the bytes
  // reserved since the batch began and the bytes still free as of the
  // last look at `tail`; the counters themselves (Numbers up to 2^53) are
  // touched once a batch.
  private open = false;
  /** Since the last commit(): something was published, and some publish
   * on the way found the ring empty. */
  private published = false;
  private foundEmpty = false;
  /** `head` when the batch began (what the consumer can see). */
  private start = COUNTER_FIELD;
  /** Bytes reserved since then (records and padding). */
  private off = 0;
  /** Bytes free after them, as of the last look at `tail`. */
  private free = 0;
  /** `tail` as last read. */
  private tail = COUNTER_FIELD;
  /** The data position of the next record. */
  private pos = 0;
  /** Bytes after which this batch publishes on the way: publishEvery at
   * first, twice as many after each publish that found the ring empty (a
   * doorbell), up to a quarter of the ring. */
  private interval = this.publishEvery;

  private begin(): void {
    const head = this.load(HEAD);
    this.atTail(head, this.load(TAIL));
  }

  /** A batch begins at `head` with the consumer at `tail`. */
  private atTail(head: number, tail: number): void {
    if (head - tail > this.capacity || head < tail) throw new RingCorrupt(`corrupt ring: head ${head}, tail ${tail}`);
    this.open = true;
    this.start = head;
    this.off = 0;
    this.tail = tail;
    this.free = this.capacity - (head - tail);
    // Bitwise: the low 32 bits of the counter, of which C takes fewer.
    this.pos = head & this.mask;
  }

  /** Looks at `tail` again: the consumer may have taken some since the
   * batch began. It can only have moved forward, up to `start`. */
  private refresh(): void {
    const tail = this.load(TAIL);
    if (tail < this.tail || tail > this.start) throw new RingCorrupt(`corrupt ring: tail went from ${this.tail} to ${tail} (head ${this.start})`);
    this.tail = tail;
    this.free = this.capacity - (this.start - tail) - this.off;
  }

  /** A long batch is published as it goes, so the consumer works in
   * parallel instead of waiting for the end of it. Whether that found the
   * ring empty is remembered for commit() to report. */
  private publishOnTheWay(): void {
    const head = this.start + this.off;
    this.store(HEAD, head);
    this.published = true;
    const tail = this.load(TAIL);
    if (tail === this.start) {
      // The consumer had caught up and may sleep: wake it, and let it
      // wait for more next time (fewer doorbells for a fast consumer).
      this.foundEmpty = true;
      this.interval = Math.min(this.interval * 2, this.capacity / 4);
      this.doorbell?.();
    }
    if (tail < this.tail || tail > head) throw new RingCorrupt(`corrupt ring: tail went from ${this.tail} to ${tail} (head ${head})`);
    this.atTail(head, tail);
  }

  /** Room for a payload of `len` bytes: its position in `bytes`, or -1
   * when the ring is full (backpressure). The payload is the caller's to
   * write there before the next reserve() or commit(): a long batch is
   * published on the way (after 64 KiB or a quarter of the ring, then
   * further apart while the consumer keeps up: see PUBLISH_EVERY). Throws
   * RangeError unless `len` is an integer 0..maxMessage. */
  reserve(len: number): number {
    if (!(len >= 0 && len <= this.maxMessage && (len | 0) === len)) throw new RangeError(`EMSGSIZE: a ring message is 0..${this.maxMessage} bytes, not ${len}`);
    if (!this.open) this.begin();
    else if (this.off >= this.interval) this.publishOnTheWay();
    const rec = (len + 15) & -8;
    let pos = this.pos;
    const room = this.capacity - pos;
    const pad = rec <= room ? 0 : room;
    const need = pad + rec;
    if (need > this.free) {
      this.refresh();
      if (need > this.free) return -1;
    }
    const w = this.words;
    if (pad !== 0) {
      w[pos >>> 2] = 0;
      w[(pos >>> 2) + 1] = FLAG_WRAP;
      pos = 0;
    }
    w[pos >>> 2] = len;
    w[(pos >>> 2) + 1] = 0;
    this.free -= need;
    this.off += need;
    this.pos = (pos + rec) & this.mask;
    return pos + RECORD_HEADER;
  }

  /** Reserves up to `max` records of `len` payload bytes each, one after
   * the other in `bytes`: the first payload at `runAt`, the next every
   * recordSize(len) bytes. Returns how many, 0 when the ring is full
   * (backpressure). A run is the same as that many reserve(len) calls and
   * the payloads are the caller's to write before the next reserve*() or
   * commit(); it is shorter than `max` (but at least one record, when
   * there is room for one) where the data area ends (the next run goes on
   * at position 0), where the free space ends, and where a long batch is
   * published on the way. Throws RangeError unless `len` is an integer
   * 0..maxMessage and `max` one of at least 0 (or Infinity). */
  reserveRun(len: number, max: number): number {
    if (!(len >= 0 && len <= this.maxMessage && (len | 0) === len)) throw new RangeError(`EMSGSIZE: a ring message is 0..${this.maxMessage} bytes, not ${len}`);
    if (!(max >= 0 && Math.floor(max) === max)) throw new RangeError(`reserveRun: max is a count, not ${max}`);
    this.runAt = -1;
    if (max === 0) return 0;
    if (!this.open) this.begin();
    else if (this.off >= this.interval) this.publishOnTheWay();
    const rec = (len + 15) & -8;
    const w = this.words;
    let pos = this.pos;
    let room = this.capacity - pos;
    if (rec > room) {
      // The first record does not fit before the end: pad to it.
      if (room + rec > this.free) {
        this.refresh();
        if (room + rec > this.free) return 0;
      }
      w[pos >>> 2] = 0;
      w[(pos >>> 2) + 1] = FLAG_WRAP;
      this.free -= room;
      this.off += room;
      pos = 0;
      room = this.capacity;
    }
    // Records up to the end of the data area, of the free space (look at
    // tail again if that is what stops the run short) and of the publish
    // interval (at least one).
    let fit = Math.min(room, this.free);
    if (fit < rec * max && this.free < room) {
      this.refresh();
      fit = Math.min(room, this.free);
    }
    const k = Math.min(Math.floor(fit / rec), max, Math.max(1, Math.ceil((this.interval - this.off) / rec)));
    if (k === 0) return 0;
    // One 8-byte store a header: the header's bits as a double (len
    // below 2^32 and flags 0: a subnormal number, which every engine
    // stores exactly; only NaNs may change their bits).
    const hdr = this.header;
    hdr[0] = len;
    hdr[1] = 0;
    const h = this.headerDouble[0];
    const d = this.doubles;
    const step = rec >>> 3;
    for (let i = 0, p = pos >>> 3; i < k; i++, p += step) d[p] = h;
    const bytes = k * rec;
    this.free -= bytes;
    this.off += bytes;
    this.pos = (pos + bytes) & this.mask;
    this.runAt = pos + RECORD_HEADER;
    return k;
  }

  /** Publishes every record reserved since the last commit (one counter
   * store, which is also the doorbell rule's barrier). Returns whether the
   * ring was empty before them (or before a part published on the way):
   * ring the receiver's doorbell then, unless the writer has a doorbell
   * callback, which has been called already. */
  commit(): boolean {
    const empty = this.publish() || this.foundEmpty;
    this.foundEmpty = false;
    this.interval = this.publishEvery;
    if (empty) this.wasEmpty = true;
    else if (this.published) this.wasEmpty = false;
    this.published = false;
    return empty;
  }

  /** Publishes the open batch; true when it found the ring empty (the
   * doorbell callback, if any, has been called then). */
  private publish(): boolean {
    if (!this.open) return false;
    this.open = false;
    if (this.off === 0) return false;
    this.store(HEAD, this.start + this.off);
    this.published = true;
    const empty = this.load(TAIL) === this.start;
    if (empty && this.doorbell) this.doorbell();
    return empty;
  }

  /** Pushes one message: 1 = pushed into an empty ring (ring the doorbell),
   * 0 = pushed, -1 = full. */
  push(msg: Uint8Array): number {
    const at = this.reserve(msg.length);
    if (at < 0) {
      this.commit();
      return -1;
    }
    this.bytes.set(msg, at);
    return this.commit() ? 1 : 0;
  }

  /** Pushes `msgs[from..to)` as far as they fit, published together (a
   * long batch on the way, see reserve()); returns how many (the rest are
   * the caller's to retry). Without a doorbell callback, `wasEmpty` then
   * says whether to ring the doorbell (of a long batch: whether its first
   * part found the ring empty). A message over maxMessage
   * throws before anything is published. */
  pushBatch(msgs: readonly Uint8Array[], from = 0, to = msgs.length): number {
    for (let i = from; i < to; i++) {
      if (msgs[i].length > this.maxMessage) throw new RangeError(`EMSGSIZE: message ${i} of ${msgs[i].length} bytes is over the ring's limit of ${this.maxMessage} bytes`);
    }
    const bytes = this.bytes;
    let i = from;
    for (; i < to; i++) {
      const m = msgs[i];
      const at = this.reserve(m.length);
      if (at < 0) break;
      bytes.set(m, at);
    }
    this.commit();
    return i - from;
  }
}

/** Called with each message in place: `bytes[start .. start + length)`.
 * The bytes are valid only during the call (copy what must outlive it). */
export type RingVisitor = (bytes: Buffer, start: number, length: number) => void;

/** FabricClient.onRingBatch's handler: `count` messages from peer `from`
 * (a take()), message i being `bytes[at[i] .. at[i] + len[i])`; the bytes
 * and the arrays (reused for the next batch) are valid only during the
 * call. */
export type RingBatchHandler = (from: number, bytes: Buffer, at: Int32Array, len: Int32Array, count: number) => void;

/** The consuming end of one ring (only the receiver reads). */
export class RingReader extends RingView {
  /** head and tail as u32 halves (low half at HEAD_LO, TAIL_LO). */
  private readonly halves = new Uint32Array(this.counters.buffer, this.counters.byteOffset, RING_HEADER / 4);
  /** Whether the last take() handed out messages not yet given back, and
   * the tail past them. */
  private holding = false;
  private heldTail = COUNTER_FIELD;

  /** Nothing published for this reader at some recent instant: equal
   * halves (a stale "empty" is safe: the producer rings whenever it finds
   * the ring empty after publishing). The common wake-up for someone
   * else's message. */
  private seemsEmpty(): boolean {
    const c = this.halves;
    return Atomics.load(c, HEAD_LO) === Atomics.load(c, TAIL_LO) && Atomics.load(c, HEAD_LO + 1) === Atomics.load(c, TAIL_LO + 1);
  }

  /** Hands up to `max` messages to `visit`, in order, in place, then
   * publishes the tail once. Returns how many; fewer than `max` means the
   * ring was seen empty (after the doorbell rule's barrier): wait for the
   * doorbell. A corrupt record throws RingCorrupt at once, after the good
   * messages before it were visited and their space given back (its
   * `delivered` says how many); `discardCorrupt()` then drops the rest. A
   * message whose visit throws counts as consumed. Gives back what a
   * take() handed out first. */
  read(visit: RingVisitor, max = Infinity): number {
    if (this.holding) this.release();
    else if (this.seemsEmpty()) return 0;
    const tail0 = this.load(TAIL);
    let head = this.load(HEAD);
    const cap = this.capacity;
    const maxMessage = this.maxMessage;
    const w = this.words;
    const bytes = this.bytes;
    // Small integers in the loop: `used` bytes consumed since tail0 of the
    // `avail` published after it; `pos` the data position of tail0 + used.
    let avail = head - tail0;
    let used = 0;
    let published = 0;
    let pos = tail0 & this.mask;
    let n = 0;
    try {
      if (avail > cap || avail < 0 || (pos & 7) !== 0) throw new RingCorrupt(`corrupt ring: head ${head}, tail ${tail0}`, 0);
      while (n < max) {
        const left = avail - used;
        if (left === 0) {
          // Seen empty: publish, barrier, look again (module doc).
          if (used !== published) {
            this.store(TAIL, tail0 + used);
            published = used;
          }
          const fresh = this.load(HEAD);
          if (fresh === head) break;
          head = fresh;
          avail = head - tail0;
          if (avail - used > cap || avail < used) throw new RingCorrupt(`corrupt ring: head ${head}, tail ${tail0 + used}`, n);
          continue;
        }
        if (left < RECORD_HEADER) throw new RingCorrupt(`corrupt ring: head ${head}, tail ${tail0 + used}`, n);
        const len = w[pos >>> 2];
        const flags = w[(pos >>> 2) + 1];
        if (flags === FLAG_WRAP) {
          const skip = cap - pos;
          if (skip > left) throw new RingCorrupt(`corrupt ring: wrap at ${pos} passes head`, n);
          used += skip;
          pos = 0;
          continue;
        }
        // A small integer (an oversized length fails before it is used).
        const rec = (len + 15) & -8;
        if (flags !== 0 || len > maxMessage || rec > left || pos + rec > cap) {
          throw new RingCorrupt(flags !== 0 ? `corrupt ring: unknown flags 0x${flags.toString(16)} at ${pos}` : `corrupt ring: record of ${len} bytes at ${pos}, ${left} available`, n);
        }
        const at = pos + RECORD_HEADER;
        used += rec;
        pos += rec;
        if (pos === cap) pos = 0;
        n++;
        visit(bytes, at, len);
        if (used - published >= this.publishEvery) {
          // Give the space back on the way (module doc: after the visits).
          this.store(TAIL, tail0 + used);
          published = used;
        }
      }
    } catch (e) {
      // A counter past 2^53 met on the way (load()) is reported like a bad
      // record: after the n messages visited.
      if (e instanceof RingCorrupt && e.delivered !== n) throw new RingCorrupt(e.message, n);
      throw e;
    } finally {
      // Every visit above is over: the producer may reuse the space.
      if (used !== published) this.store(TAIL, tail0 + used);
    }
    return n;
  }

  /** Takes up to `max` messages (at most the arrays' length) in place,
   * without a call per message: message i is `bytes[at[i] .. at[i] +
   * len[i])`, for i below the count returned. They stay the reader's (the
   * producer does not reuse their space) until the next take(), read(),
   * release(), pop() or discard*(), which gives their space back first.
   * Returns how many; 0 means the ring was seen empty (after giving back
   * and the doorbell rule's barrier): wait for the doorbell. Any other
   * count, even below `max`, says nothing about what is left: take again.
   * A corrupt record ends a take before it: the next take() throws
   * RingCorrupt (with `delivered` 0) when the bad record is the first, and
   * `discardCorrupt()` then drops it and the rest. */
  take(at: Int32Array, len: Int32Array, max: number = at.length): number {
    if (!(max >= 1 && max <= at.length && max <= len.length)) throw new RangeError(`take: max ${max} is not 1..${Math.min(at.length, len.length)} (the arrays' length)`);
    let tail: number;
    if (this.holding) {
      // Give back the last take (the store is also the barrier).
      this.holding = false;
      tail = this.heldTail;
      this.store(TAIL, tail);
    } else {
      if (this.seemsEmpty()) return 0;
      tail = this.load(TAIL);
    }
    let head = this.load(HEAD);
    const cap = this.capacity;
    const maxMessage = this.maxMessage;
    const w = this.words;
    for (;;) {
      const avail = head - tail;
      let pos = tail & this.mask;
      if (avail > cap || avail < 0 || (pos & 7) !== 0) throw new RingCorrupt(`corrupt ring: head ${head}, tail ${tail}`, 0);
      let used = 0;
      let n = 0;
      let bad: string | null = null;
      while (n < max && used < avail) {
        const left = avail - used;
        if (left < RECORD_HEADER) {
          bad = `corrupt ring: head ${head}, tail ${tail + used}`;
          break;
        }
        const l = w[pos >>> 2];
        const flags = w[(pos >>> 2) + 1];
        if (flags === FLAG_WRAP) {
          const skip = cap - pos;
          if (skip > left) {
            bad = `corrupt ring: wrap at ${pos} passes head`;
            break;
          }
          used += skip;
          pos = 0;
          continue;
        }
        const rec = (l + 15) & -8;
        if (flags !== 0 || l > maxMessage || rec > left || pos + rec > cap) {
          bad = flags !== 0 ? `corrupt ring: unknown flags 0x${flags.toString(16)} at ${pos}` : `corrupt ring: record of ${l} bytes at ${pos}, ${left} available`;
          break;
        }
        at[n] = pos + RECORD_HEADER;
        len[n] = l;
        n++;
        used += rec;
        pos += rec;
        if (pos === cap) pos = 0;
      }
      if (n > 0) {
        // What came before a bad record is handed out; the next take
        // meets the bad record first and throws.
        this.holding = true;
        this.heldTail = tail + used;
        return n;
      }
      if (used > 0) {
        // Only padding before a bad record or the head: give it back.
        tail += used;
        this.store(TAIL, tail);
      }
      if (bad !== null) throw new RingCorrupt(bad, 0);
      const fresh = this.load(HEAD);
      if (fresh === head) return 0;
      head = fresh;
    }
  }

  /** Gives back the messages the last take() handed out (the next take()
   * does that too). */
  release(): void {
    if (!this.holding) return;
    this.holding = false;
    this.store(TAIL, this.heldTail);
  }

  /** Pops one message as a copy; null when the ring is empty. */
  pop(): Uint8Array | null {
    let out: Uint8Array | null = null;
    this.read((b, s, l) => {
      out = b.slice(s, s + l);
    }, 1);
    return out;
  }

  /** Drops everything in the ring (tail = head). Returns the bytes
   * dropped. */
  discard(): number {
    this.holding = false;
    const head = Atomics.load(this.counters, HEAD);
    const tail = Atomics.load(this.counters, TAIL);
    Atomics.store(this.counters, TAIL, head);
    return Number(head - tail);
  }

  /** discard() after a RingCorrupt, the way out of a corrupt ring, counted
   * in the ring's error word for the producer to see (`errors`). Returns
   * the bytes dropped. */
  discardCorrupt(): number {
    const dropped = this.discard();
    // Only the consumer writes this word: no read-modify-write race.
    Atomics.store(this.counters, ERRORS, Atomics.load(this.counters, ERRORS) + 1n);
    return dropped;
  }
}
