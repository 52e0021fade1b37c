// The TypeScript ring ends (ts/fabric/ring.ts) against the native core's
// Ring over the same memfd: byte-compatible both ways, checked against a
// model of the counters (padding and wrap included), with counters past
// 2^32, and with corrupt rings.
import * as path from 'node:path';
import { createRequire } from 'node:module';

import anyTest, { type ExecutionContext, type TestFn } from 'ava';
import fc from 'fast-check';

import type * as Binding from '../index.js';
import { RingCorrupt, RingReader, RingWriter, recordSize, ringOffset, RING_HEADER } from '../ts/fabric/ring.js';

const binding = createRequire(path.resolve('index.js'))('./index.js') as typeof Binding;
const { Mailbox, Ring, SharedMemory, ringLayout } = binding;

interface Context {
  cleanups: Array<() => void>;
}
const test = anyTest as TestFn<Context>;
type Ctx = ExecutionContext<Context>;

test.beforeEach((t) => {
  t.context.cleanups = [];
});
test.afterEach.always((t) => {
  for (const c of t.context.cleanups.reverse()) c();
});

/** A memfd with a mailbox for 2 peers and rings of `capacity`; the JS ends
 * and the native ends of the ring 1 -> 2 over it. */
function setup(t: Ctx, capacity: number) {
  const shm = SharedMemory.create({ kind: 'memfd', name: 'ring-js', size: 1 << 22 });
  const mb = new Mailbox(shm);
  t.context.cleanups.push(() => shm.close(), () => mb.close());
  mb.format(2);
  const layout = mb.setupRings(capacity);
  const mem = shm.buffer as ArrayBuffer;
  const off = ringOffset(layout, 1, 2);
  const native = new Ring(shm, 1, 2);
  t.context.cleanups.push(() => native.close());
  const bells = { count: 0 };
  const writer = new RingWriter(mem, off, capacity, () => bells.count++);
  return { shm, layout, mem, off, native, bells, writer, reader: new RingReader(mem, off, capacity) };
}

const payload = (seq: number, len: number) => {
  const b = new Uint8Array(len);
  for (let i = 0; i < len; i++) b[i] = (seq * 131 + i) & 0xff;
  return b;
};

test('ringOffset agrees with the native layout for every pair', (t) => {
  for (const n of [1, 2, 5, 14]) {
    const layout = ringLayout(n, 1024);
    const seen = new Set<number>();
    for (let s = 1; s <= n + 1; s++) {
      for (let r = 1; r <= n + 1; r++) {
        if (s === r) {
          t.throws(() => ringOffset(layout, s, r), { instanceOf: RangeError });
          continue;
        }
        const off = ringOffset(layout, s, r);
        t.true(off >= layout.base && off + layout.stride <= layout.end);
        seen.add(off);
      }
    }
    t.is(seen.size, layout.count);
  }
  t.throws(() => ringOffset(ringLayout(2, 1024), 0, 1), { instanceOf: RangeError });
  t.throws(() => ringOffset(ringLayout(2, 1024), 1, 4), { instanceOf: RangeError });
});

test('the ring views refuse capacities and offsets that do not fit', (t) => {
  const mem = new ArrayBuffer(4096);
  t.throws(() => new RingWriter(mem, 0, 1000), { instanceOf: RangeError });
  t.throws(() => new RingWriter(mem, 64, 256), { instanceOf: RangeError });
  t.throws(() => new RingReader(mem, 0, 4096), { instanceOf: RangeError });
  t.notThrows(() => new RingReader(mem, 0, 2048));
});

type Op =
  | { kind: 'push'; by: 'js' | 'native'; sizes: number[] }
  | { kind: 'run'; len: number; count: number; max: number }
  | { kind: 'pop'; by: 'js' | 'take' | 'native'; max: number };

const CAP = 1024;
const opArb: fc.Arbitrary<Op> = fc.oneof(
  fc.record({
    kind: fc.constant('push' as const),
    by: fc.constantFrom('js' as const, 'native' as const),
    sizes: fc.array(fc.oneof(fc.integer({ min: 0, max: 40 }), fc.integer({ min: 0, max: CAP / 2 - 8 })), { minLength: 1, maxLength: 6 }),
  }),
  // reserveRun: `count` messages of one length, asked for `max` at a time.
  fc.record({
    kind: fc.constant('run' as const),
    len: fc.oneof(fc.integer({ min: 0, max: 40 }), fc.integer({ min: 0, max: CAP / 2 - 8 })),
    count: fc.integer({ min: 1, max: 40 }),
    max: fc.integer({ min: 1, max: 50 }),
  }),
  fc.record({ kind: fc.constant('pop' as const), by: fc.constantFrom('js' as const, 'take' as const, 'native' as const), max: fc.integer({ min: 1, max: 8 }) }),
);

/** Pushes `count` messages of `len` bytes (payload(seq + i, len)) through
 * reserveRun, `max` at a time, until one run gets none; commits. Returns
 * how many went in. */
function pushRuns(w: RingWriter, len: number, count: number, max: number, seq: number): number {
  let n = 0;
  while (n < count) {
    const k = w.reserveRun(len, Math.min(max, count - n));
    if (k === 0) break;
    for (let j = 0, at = w.runAt; j < k; j++, at += recordSize(len)) w.bytes.set(payload(seq + n + j, len), at);
    n += k;
  }
  w.commit();
  return n;
}

test('JS and native ends interoperate on one ring: same bytes, same order, same counters as the model', (t) => {
  const { mem, off, native, writer, reader, bells } = setup(t, CAP);
  const counters = new BigUint64Array(mem, off, 32);
  fc.assert(
    fc.property(fc.array(opArb, { maxLength: 60 }), (ops) => {
      native.discard();
      // The model: counters and the FIFO of (seq, len, pad).
      let head = Number(counters[0]);
      let tail = head;
      const fifo: { seq: number; len: number; pad: number }[] = [];
      let seq = 0;
      for (const op of ops) {
        if (op.kind === 'push' || op.kind === 'run') {
          const sizes = op.kind === 'push' ? op.sizes : Array.from({ length: op.count }, () => op.len);
          const msgs = sizes.map((len, i) => payload(seq + i, len));
          // What the model accepts: records in order until one does not fit.
          let h = head;
          let accepted = 0;
          const pads: number[] = [];
          for (const m of msgs) {
            const rec = recordSize(m.length);
            const pos = h % CAP;
            const pad = rec <= CAP - pos ? 0 : CAP - pos;
            if (h - tail + pad + rec > CAP) break;
            pads.push(pad);
            h += pad + rec;
            accepted++;
          }
          const wasEmpty = head === tail;
          let n: number;
          let bell: boolean;
          if (op.kind === 'run' || op.by === 'js') {
            // Long batches publish on the way: one doorbell at most, for
            // the first part, exactly when the ring was empty.
            const before = bells.count;
            n = op.kind === 'run' ? pushRuns(writer, op.len, op.count, op.max, seq) : writer.pushBatch(msgs);
            bell = bells.count - before === 1;
            if (bells.count - before > 1) return false;
          } else {
            n = native.pushBatch(msgs);
            bell = native.wasEmpty;
          }
          if (n !== accepted) return false;
          if (n > 0 && bell !== wasEmpty) return false;
          for (let i = 0; i < n; i++) fifo.push({ seq: seq + i, len: msgs[i].length, pad: pads[i] });
          seq += msgs.length;
          head = h;
        } else {
          const got: Uint8Array[] = [];
          if (op.by === 'js') reader.read((b, s, l) => got.push(b.slice(s, s + l)), op.max);
          else if (op.by === 'take') {
            // take() hands out what it can see (at most max), in place;
            // release() gives the space back.
            const at = new Int32Array(op.max);
            const len = new Int32Array(op.max);
            while (got.length < op.max) {
              const k = reader.take(at, len, op.max - got.length);
              if (k === 0) break;
              for (let i = 0; i < k; i++) got.push(reader.bytes.slice(at[i], at[i] + len[i]));
            }
            reader.release();
          } else got.push(...native.popBatch(op.max));
          if (got.length !== Math.min(op.max, fifo.length)) return false;
          for (const m of got) {
            const want = fifo.shift()!;
            if (m.length !== want.len) return false;
            if (Buffer.compare(Buffer.from(m), Buffer.from(payload(want.seq, want.len))) !== 0) return false;
            tail += want.pad + recordSize(want.len);
          }
        }
        if (native.usedBytes !== head - tail || writer.usedBytes !== head - tail) return false;
      }
      return true;
    }),
    { numRuns: 300 },
  );
  t.pass();
});

test('counters past 2^32 (and well past 2^40) work the same from JS and native', (t) => {
  const { mem, off, native, writer, reader } = setup(t, 256);
  const counters = new BigUint64Array(mem, off, 32);
  for (const base of [2 ** 32 - 24, 2 ** 40 + 8, 2 ** 52 - 64]) {
    counters[0] = BigInt(base);
    counters[16] = BigInt(base);
    let sent = 0;
    let got = 0;
    for (let round = 0; round < 50; round++) {
      // JS pushes, native pops; then native pushes, JS pops.
      const m = payload(sent, (round * 37) % 100);
      t.not(writer.push(m), -1);
      sent++;
      t.deepEqual(Buffer.from(native.pop()!), Buffer.from(m));
      got++;
      const m2 = payload(sent, (round * 53) % 120);
      t.not(native.push(m2), -1);
      sent++;
      const seen: Buffer[] = [];
      t.is(
        reader.read((b, s, l) => seen.push(Buffer.from(b.subarray(s, s + l)))),
        1,
      );
      t.deepEqual(seen[0], Buffer.from(m2));
      got++;
    }
    t.is(got, 100);
    t.is(native.usedBytes, 0);
    t.true(Number(counters[0]) > base);
  }
});

test('a full ring is backpressure from JS: -1, nothing overwritten, room again after a pop', (t) => {
  const { native, writer, reader } = setup(t, 256);
  const m = payload(1, 100); // 112-byte records: two fit in 256
  t.is(writer.push(m), 1, 'into an empty ring: ring the doorbell');
  t.is(writer.push(m), 0);
  t.is(writer.push(m), -1);
  t.is(writer.pushBatch([m, m]), 0);
  t.throws(() => writer.push(new Uint8Array(121)), { instanceOf: RangeError, message: /EMSGSIZE/ });
  t.is(native.popBatch(1).length, 1);
  t.is(writer.push(m), 0, 'not empty: no doorbell');
  const seen: number[] = [];
  t.is(reader.read((_b, _s, l) => seen.push(l)), 2);
  t.deepEqual(seen, [100, 100]);
});

test('reserve/commit: a producer writes its payload in place', (t) => {
  const { native, writer } = setup(t, 1024);
  const a = writer.reserve(5);
  writer.bytes.set([1, 2, 3, 4, 5], a);
  const b = writer.reserve(0);
  t.true(b > a);
  t.true(writer.commit());
  t.false(writer.commit(), 'nothing left to publish');
  t.deepEqual(native.popBatch().map((x) => [...x]), [[1, 2, 3, 4, 5], []]);
});

test('a long batch is published on the way (every 64 KiB), so the consumer need not wait for its end', (t) => {
  const { native, writer, reader, bells } = setup(t, 1 << 19);
  for (let i = 0; i < 100; i++) {
    const at = writer.reserve(1000);
    writer.bytes.fill(i, at, at + 1000);
  }
  const early = native.usedBytes;
  t.true(early >= 64 * 1024 && early < 100 * 1008, `${early} bytes published before commit()`);
  t.is(bells.count, 1, 'the first part rang the doorbell');
  const seen: number[] = [];
  reader.read((b, s) => seen.push(b[s]));
  t.is(seen.length * 1008, early);
  t.deepEqual(seen, [...seen.keys()]);
  writer.commit();
  t.is(bells.count, 2, 'the rest went into a ring the reader had emptied');
  t.is(native.popBatch().length, 100 - seen.length);
});

test('without a doorbell callback, a long batch still reports that its first part found the ring empty', (t) => {
  const { mem, off, native } = setup(t, 1 << 19);
  const w = new RingWriter(mem, off, 1 << 19);
  const msgs = Array.from({ length: 100 }, (_, i) => payload(i, 1000));
  t.is(w.pushBatch(msgs), 100);
  t.true(w.wasEmpty, 'ring the doorbell');
  t.is(w.pushBatch(msgs), 100);
  t.false(w.wasEmpty, 'the ring was not empty');
  // reserve/commit: the same through commit()'s result.
  native.discard();
  for (let i = 0; i < 100; i++) w.reserve(1000);
  t.true(w.commit());
  t.false(w.commit());
});

test('a corrupt ring throws RingCorrupt from the JS reader and discard() resynchronises', (t) => {
  const { mem, off, native, reader, writer } = setup(t, 256);
  native.push(payload(0, 10));
  // Unknown flags in the first record's header.
  new Uint32Array(mem, off + RING_HEADER, 2)[1] = 7;
  t.throws(() => reader.read(() => t.fail()), { instanceOf: RingCorrupt, message: /unknown flags/ });
  t.true(reader.discard() > 0);
  t.is(reader.read(() => t.fail()), 0);
  // A tail ahead of the head.
  const counters = new BigUint64Array(mem, off, 32);
  counters[16] = counters[0] + 8n;
  t.throws(() => reader.read(() => t.fail()), { instanceOf: RingCorrupt });
  t.throws(() => writer.push(payload(0, 1)), { instanceOf: RingCorrupt });
  reader.discard();
  t.is(writer.push(payload(0, 1)), 1);
});

test('a visitor that throws consumes its message and no other', (t) => {
  const { native, reader } = setup(t, 1024);
  for (let i = 0; i < 3; i++) native.push(payload(i, 8));
  let calls = 0;
  t.throws(
    () =>
      reader.read(() => {
        calls++;
        throw new Error('boom');
      }),
    { message: 'boom' },
  );
  t.is(calls, 1);
  t.is(native.popBatch().length, 2);
});

test('reserveRun: a run stops where the data area ends and the next goes on at 0 after a WRAP record; the native reader sees every message in order', (t) => {
  const cap = 1 << 16;
  const { mem, off, native, writer, bells } = setup(t, cap);
  const counters = new BigUint64Array(mem, off, 32);
  // Both counters 224 bytes before the end (room for 4 records of 48).
  counters[0] = counters[16] = BigInt(cap * 5 + cap - 224);
  const k1 = writer.reserveRun(40, 10);
  t.is(k1, 4, 'four 48-byte records fit before the end');
  t.is(writer.runAt, cap - 224 + 8);
  for (let j = 0; j < k1; j++) writer.bytes.set(payload(j, 40), writer.runAt + j * 48);
  const k2 = writer.reserveRun(40, 6);
  t.is(k2, 6);
  t.is(writer.runAt, 8, 'after the padding, at position 0');
  for (let j = 0; j < k2; j++) writer.bytes.set(payload(k1 + j, 40), writer.runAt + j * 48);
  t.true(writer.commit());
  t.is(bells.count, 1);
  t.is(native.usedBytes, 4 * 48 + 32 + 6 * 48, 'the 32 bytes of padding count as used');
  const got = native.popBatch();
  t.is(got.length, 10);
  for (let i = 0; i < 10; i++) t.deepEqual(Buffer.from(got[i]), Buffer.from(payload(i, 40)));
});

test('reserveRun: 0 when full, as many as fit otherwise, the same space as reserve(), no further than the publish interval; bad arguments throw', (t) => {
  const { native, writer } = setup(t, 256);
  // A 256-byte ring publishes every 64 bytes: one 112-byte record a run.
  t.is(writer.reserveRun(100, 5), 1);
  t.is(native.usedBytes, 0, 'not published yet');
  t.is(writer.reserveRun(100, 5), 1, 'the first published on the way');
  t.is(native.usedBytes, 112);
  t.is(writer.reserveRun(100, 5), 0, 'full');
  t.is(writer.reserveRun(0, 0), 0);
  writer.commit();
  t.is(native.popBatch(1).length, 1);
  t.is(writer.reserve(100), 8, '32 bytes of padding to the end, then at 0: just fits');
  t.is(writer.reserveRun(0, 10), 0, 'full: 256 bytes in use');
  writer.commit();
  t.is(native.usedBytes, 256);
  t.deepEqual(native.popBatch().map((m) => m.length), [100, 100]);
  t.is(writer.reserveRun(16, 10), 3, 'three 24-byte records: up to the one that reaches 64 bytes');
  writer.commit();
  t.is(native.popBatch().length, 3);
  for (const bad of [-1, 121, 1.5, NaN]) {
    t.throws(() => writer.reserveRun(bad, 1), { instanceOf: RangeError, message: /EMSGSIZE/ });
    t.throws(() => writer.reserve(bad), { instanceOf: RangeError, message: /EMSGSIZE/ });
  }
  for (const bad of [-1, 1.5, NaN]) t.throws(() => writer.reserveRun(8, bad), { instanceOf: RangeError });
  writer.commit();
  t.is(native.usedBytes, 0, 'nothing reserved by the failed calls');
  // Many in one run where the interval allows.
  const big = setup(t, 1 << 16).writer;
  t.is(big.reserveRun(40, 100), 100);
  t.is(big.reserveRun(40, 1000), Math.ceil(16384 / 48) - 100, 'up to the record that reaches 16 KiB (a quarter of the ring)');
});

test('take(): positions and lengths of many messages in place; their space is given back by the next take() or release(); 0 only when the ring was seen empty', (t) => {
  const { native, writer, reader } = setup(t, 1024);
  for (let i = 0; i < 5; i++) native.push(payload(i, 10 + i));
  const at = new Int32Array(3);
  const len = new Int32Array(3);
  t.is(reader.take(at, len), 3);
  t.deepEqual([...len], [10, 11, 12]);
  for (let i = 0; i < 3; i++) t.deepEqual(Buffer.from(reader.bytes.subarray(at[i], at[i] + len[i])), Buffer.from(payload(i, 10 + i)));
  t.is(native.usedBytes, 24 * 5, 'the three taken are still held by the reader');
  t.is(reader.take(at, len, 3), 2, 'the rest; the first three given back');
  t.deepEqual([...len.subarray(0, 2)], [13, 14]);
  t.is(native.usedBytes, 24 * 2);
  reader.release();
  t.is(native.usedBytes, 0);
  reader.release();
  t.is(reader.take(at, len), 0, 'empty');
  t.is(writer.push(payload(9, 1)), 1, 'the producer found it empty: a doorbell');
  t.is(reader.take(at, len, 1), 1);
  t.is(reader.take(at, len), 0, 'empty once the last take is given back');
  t.is(native.usedBytes, 0);
  // read() and discard() give back what a take() holds, too.
  for (let i = 0; i < 4; i++) native.push(payload(i, 8));
  t.is(reader.take(at, len, 2), 2);
  const seen: number[] = [];
  t.is(
    reader.read((_b, _s, l) => seen.push(l)),
    2,
  );
  t.is(native.usedBytes, 0);
  native.push(payload(0, 8));
  t.is(reader.take(at, len), 1);
  reader.discard();
  t.is(reader.take(at, len), 0, 'a discard does not let the next take store an old tail');
  t.is(native.usedBytes, 0);
  t.throws(() => reader.take(at, len, 0), { instanceOf: RangeError });
  t.throws(() => reader.take(at, len, 4), { instanceOf: RangeError });
  t.throws(() => reader.take(at, new Int32Array(1), 2), { instanceOf: RangeError });
});

test('take(): WRAP padding alone is given back and the next record found at 0', (t) => {
  const { mem, off, native, reader } = setup(t, 256);
  const counters = new BigUint64Array(mem, off, 32);
  counters[0] = counters[16] = 200n;
  t.not(native.push(payload(7, 60)), -1, 'a 72-byte record: padding to 256, then at 0');
  const at = new Int32Array(4);
  const len = new Int32Array(4);
  t.is(reader.take(at, len), 1);
  t.is(at[0], 8);
  t.deepEqual(Buffer.from(reader.bytes.subarray(8, 68)), Buffer.from(payload(7, 60)));
  t.is(reader.take(at, len), 0);
  t.is(Number(counters[16]), 200 + 56 + 72);
});

test('a hostile consumer moving tail backwards, or past head, during a batch stops the writer with RingCorrupt', (t) => {
  for (const move of [-8n, 1n << 20n]) {
    const { mem, off, native, writer } = setup(t, 1024);
    const counters = new BigUint64Array(mem, off, 32);
    // Fill the ring in one batch; the consumer takes some of it meanwhile.
    let k = 0;
    while (writer.reserveRun(100, 1) === 1) k++;
    t.true(k >= 8);
    native.popBatch(2);
    t.is(writer.reserveRun(100, 1), 1, 'room again: the writer looked at tail');
    t.is(writer.reserveRun(100, 1), 1);
    t.is(writer.reserveRun(100, 1), 0);
    counters[16] += move;
    t.throws(() => writer.reserveRun(100, 1), { instanceOf: RingCorrupt, message: /tail went from/ });
    t.throws(() => writer.reserve(100), { instanceOf: RingCorrupt, message: /tail went from/ });
  }
});

test('a batch to a consumer that keeps up publishes on the way every 64 KiB at first, then twice as far each time it found the ring empty, up to a quarter of the ring', (t) => {
  const shm = SharedMemory.create({ kind: 'memfd', name: 'ring-js', size: 1 << 25 });
  const mb = new Mailbox(shm);
  t.context.cleanups.push(() => shm.close(), () => mb.close());
  mb.format(2);
  const cap = 1 << 22;
  const layout = mb.setupRings(cap);
  const mem = shm.buffer as ArrayBuffer;
  const native = new Ring(shm, 1, 2);
  t.context.cleanups.push(() => native.close());
  // The doorbell drains the ring, as a consumer that keeps up would.
  const published: number[] = [];
  let got = 0;
  const writer = new RingWriter(mem, ringOffset(layout, 1, 2), cap, () => {
    const msgs = native.popBatch();
    for (const m of msgs) if (Buffer.from(m).readUInt32LE(0) !== got++) t.fail(`message ${got - 1} out of order`);
    published.push(msgs.length);
  });
  const send = (count: number, from: number) => {
    for (let n = 0; n < count; ) {
      const k = writer.reserveRun(1016, count - n);
      t.true(k > 0);
      for (let j = 0; j < k; j++) writer.bytes.writeUInt32LE(from + n + j, writer.runAt + j * 1024);
      n += k;
    }
    writer.commit();
  };
  // 1024-byte records: 64 per 64 KiB; 3 MiB in all.
  send(3072, 0);
  t.is(got, 3072);
  t.deepEqual(published, [64, 128, 256, 512, 1024, 1024, 64], 'publishes at 64 KiB, 128, 256, 512, then every 1 MiB (a quarter of 4 MiB); the rest at commit()');
  published.length = 0;
  send(200, 3072);
  t.deepEqual(published, [64, 128, 8], 'a new batch starts at 64 KiB again');
});
