// A ring that holds a corrupt record after good ones (issue 7, item 9):
// the reader reports it at once, after delivering the good records, the
// corruption is dropped so the ring flows again, the consumer's
// FabricClient reports it (warning + 'ring-error' naming the producer) and
// the producer's FabricClient hears of it ('ring-rejected'). The same for
// the TypeScript reader, the native Ring, and FabricClient over either.
import * as path from 'node:path';
import { createRequire } from 'node:module';

import anyTest, { type ExecutionContext, type TestFn } from 'ava';
import fc from 'fast-check';

import type * as Binding from '../index.js';
import { Client } from '../ts/client/client.js';
import { FabricClient, type RingErrorInfo } from '../ts/fabric/client.js';
import { RingCorrupt, RingReader, RingWriter, ringOffset, RING_HEADER } from '../ts/fabric/ring.js';
import { Scratch } from './helpers/serve.js';
import { waitFor } from './helpers/wait.js';

const binding = createRequire(path.resolve('index.js'))('./index.js') as typeof Binding;
const { Mailbox, Ring, SharedMemory } = binding;

const test = anyTest as TestFn<Scratch>;
const WAIT_MS = 20_000;

test.beforeEach((t) => {
  t.context = new Scratch();
});
test.afterEach.always(async (t) => {
  await t.context.cleanup();
});

const text = (b: Uint8Array) => Buffer.from(b).toString();

/** A memfd with rings for 2 peers; the ring 1 -> 2 seen from TypeScript and
 * natively, holding good-0, good-1, good-2, then a record with unknown
 * flags, then one more good record (lost with the corruption). */
function corruptRing(t: ExecutionContext<Scratch>) {
  const shm = SharedMemory.create({ kind: 'memfd', name: 'ring-corrupt', size: 1 << 20 });
  const mb = new Mailbox(shm);
  mb.format(2);
  const layout = mb.setupRings(1024);
  const native = new Ring(shm, 1, 2);
  t.context.track({ close: () => (native.close(), mb.close(), shm.close()) });
  const mem = shm.buffer as ArrayBuffer;
  const off = ringOffset(layout, 1, 2);
  const writer = new RingWriter(mem, off, 1024);
  const msgs = ['good-0', 'good-1', 'good-2', 'bad', 'after'].map((s) => Buffer.from(s));
  t.is(writer.pushBatch(msgs), 5);
  // Every record takes 16 bytes: the fourth's flags word is at 3 x 16 + 4.
  new Uint32Array(mem, off + RING_HEADER + 3 * 16 + 4, 1)[0] = 7;
  return { mem, off, writer, native, reader: new RingReader(mem, off, 1024) };
}

test('RingReader: a corrupt record after good ones is reported at once, the good ones delivered; discardCorrupt() lets the ring flow and tells the producer', (t) => {
  const { writer, reader, native } = corruptRing(t);
  const got: string[] = [];
  const e = t.throws(() => reader.read((b, s, l) => got.push(b.toString('utf8', s, s + l))), { instanceOf: RingCorrupt, message: /unknown flags 0x7 at 48/ });
  t.is(e?.delivered, 3);
  t.deepEqual(got, ['good-0', 'good-1', 'good-2']);
  t.is(reader.usedBytes, 32, 'the good records are given back, the bad one stays');
  t.is(writer.errors, 0);
  t.is(reader.discardCorrupt(), 32);
  t.is(writer.errors, 1, 'the producer sees the count');
  t.is(native.errors, 1, 'the native view too');
  t.is(writer.push(Buffer.from('again')), 1);
  t.is(text(reader.pop() ?? new Uint8Array()), 'again');
  t.is(reader.pop(), null);
});

test('native Ring.popBatch: a corrupt record after good ones throws EBADMSG carrying the good ones; discardCorrupt() lets the ring flow', (t) => {
  const { native, writer } = corruptRing(t);
  const e = t.throws(() => native.popBatch(), { code: 'EBADMSG', message: /^EBADMSG: corrupt ring: unknown flags 0x7 at 48/ }) as (Error & { messages?: Buffer[] }) | undefined;
  t.deepEqual(e?.messages?.map(text), ['good-0', 'good-1', 'good-2']);
  t.is(native.usedBytes, 32, 'the good records are consumed, the bad one stays');
  t.throws(() => native.popBatch(), { code: 'EBADMSG', message: /^EBADMSG/ });
  t.is(native.discardCorrupt(), 32);
  t.is(writer.errors, 1);
  t.is(writer.push(Buffer.from('again')), 1);
  t.deepEqual(native.popBatch().map(text), ['again']);
});

test('RingReader.take: the good records before a corrupt one are handed out, the next take throws RingCorrupt; discardCorrupt() lets the ring flow', (t) => {
  const { writer, reader } = corruptRing(t);
  const at = new Int32Array(16);
  const len = new Int32Array(16);
  t.is(reader.take(at, len), 3);
  t.deepEqual([0, 1, 2].map((i) => reader.bytes.toString('utf8', at[i], at[i] + len[i])), ['good-0', 'good-1', 'good-2']);
  const e = t.throws(() => reader.take(at, len), { instanceOf: RingCorrupt, message: /unknown flags 0x7 at 48/ });
  t.is(e?.delivered, 0, 'none in the throwing take');
  t.is(reader.usedBytes, 32, 'the good records given back, the bad one stays');
  t.throws(() => reader.take(at, len), { instanceOf: RingCorrupt }, 'still there until discarded');
  t.is(reader.discardCorrupt(), 32);
  t.is(writer.errors, 1);
  t.is(writer.push(Buffer.from('again')), 1);
  t.is(reader.take(at, len), 1);
  t.is(reader.bytes.toString('utf8', at[0], at[0] + len[0]), 'again');
  t.is(reader.take(at, len), 0);
});

test('RingReader.take and read: whatever a hostile producer writes into the ring and its counters is caught by a check, never followed', (t) => {
  const at = new Int32Array(8);
  const len = new Int32Array(8);
  const cases: [string, (c: BigUint64Array, w: Uint32Array) => void, RegExp][] = [
    ['head past a whole ring ahead', (c) => (c[0] = c[16] + 1025n), /corrupt ring: head/],
    ['head behind tail', (c) => (c[16] = c[0] + 8n), /corrupt ring: head/],
    ['tail not 8-aligned', (c) => (c[16] += 4n), /corrupt ring: head/],
    ['a length over the largest message', (_c, w) => (w[0] = 513), /record of 513 bytes/],
    ['a length past head', (_c, w) => (w[0] = 200), /record of 200 bytes at 0, 80 available/],
    ['a WRAP record at 0 passing head', (_c, w) => ((w[0] = 0), (w[1] = 1)), /wrap at 0 passes head/],
    ['a counter past 2^53', (c) => ((c[0] = 1n << 60n), (c[16] = (1n << 60n) - 16n)), /past 2\^53/],
  ];
  for (const [what, spoil, message] of cases) {
    const { mem, off, reader, native } = corruptRing(t);
    native.discard();
    const counters = new BigUint64Array(mem, off, 32);
    const words = new Uint32Array(mem, off + RING_HEADER, 256);
    // Five 16-byte records at 0 (the ring was emptied at 80).
    counters[0] = counters[16] = 0n;
    const w = new RingWriter(mem, off, 1024);
    t.is(w.pushBatch(['a', 'b', 'c', 'd', 'e'].map((x) => Buffer.from(x))), 5);
    spoil(counters, words);
    t.throws(() => reader.take(at, len), { instanceOf: RingCorrupt, message }, `take: ${what}`);
    t.throws(() => reader.read(() => t.fail(`read visited a message: ${what}`)), { instanceOf: RingCorrupt, message }, `read: ${what}`);
  }
});

test('RingReader.take and read over random ring contents and counters: every message handed out lies inside the data area and below head, or the read throws RingCorrupt', (t) => {
  const { mem, off, reader } = corruptRing(t);
  const counters = new BigUint64Array(mem, off, 32);
  const words = new Uint32Array(mem, off + RING_HEADER, 256);
  const at = new Int32Array(8);
  const len = new Int32Array(8);
  // Records of random lengths and flags (mostly small, sometimes valid).
  const word = fc.oneof(fc.integer({ min: 0, max: 600 }), fc.constantFrom(0, 1, 2), fc.nat({ max: 0xffffffff }));
  fc.assert(
    fc.property(fc.array(word, { minLength: 256, maxLength: 256 }), fc.bigInt({ min: 0n, max: 1n << 54n }), fc.integer({ min: -16, max: 1100 }), fc.boolean(), (ws, base, used, useTake) => {
      words.set(ws);
      const tail = base;
      const head = base + BigInt(used);
      counters[16] = tail;
      counters[0] = head < 0n ? 0n : head;
      const seen: [number, number][] = [];
      try {
        if (useTake) {
          for (let k; (k = reader.take(at, len)) > 0; ) for (let i = 0; i < k; i++) seen.push([at[i], len[i]]);
        } else {
          while (reader.read((_b, s, l) => seen.push([s, l])) > 0);
        }
      } catch (e) {
        if (!(e instanceof RingCorrupt)) throw e;
      }
      reader.discard();
      let bytes = 0;
      for (const [s, l] of seen) {
        if (s < 8 || (s - 8) % 8 !== 0 || s + l > 1024 || l > 504) return false;
        bytes += 8 + Math.ceil(l / 8) * 8;
      }
      return bytes <= Math.max(0, used);
    }),
    { numRuns: 2000 },
  );
  t.pass();
});

type Mode = 'data' | 'onRing' | 'onRingBatch' | 'native' | 'native-batch';

/** A fabric of two FabricClients; A (1) writes one good record and one
 * corrupt record into its ring to B (2) in one publish, then sends 5,000
 * good messages through the ring (over 4 rings' worth) and one through the
 * slot. B reads the ring with `data` events, with onRing(), with
 * onRingBatch(), or through the native fallback (`data` or onRingBatch). */
async function corruptThenFlow(t: ExecutionContext<Scratch>, mode: Mode): Promise<void> {
  const sock = path.join(t.context.dir(), 'sock');
  await t.context.serve(['-S', sock, '--memfd', '--max-peers', '2', '--ring-capacity', '16K']);
  const a = t.context.track(await FabricClient.connect(sock, { nodename: 'producer' }));
  let b: FabricClient;
  if (mode === 'native' || mode === 'native-batch') {
    // The fallback for an object too big for an ArrayBuffer (over 4 GiB).
    const raw = await Client.connect(sock);
    Object.defineProperty(raw, 'memory', {
      get() {
        throw new RangeError('too big for an ArrayBuffer');
      },
    });
    b = t.context.track(FabricClient.attach(raw, { nodename: 'consumer' }));
  } else {
    b = t.context.track(await FabricClient.connect(sock, { nodename: 'consumer' }));
  }
  t.is(a.id, 1);
  t.is(b.id, 2);
  await waitFor(() => a.peers.some((p) => p.id === 2), 'A to see B', WAIT_MS);

  const got: string[] = [];
  const errors: RingErrorInfo[] = [];
  const warnings: string[] = [];
  const rejected: { to: number; count: number }[] = [];
  b.on('ring-error', (e) => errors.push(e));
  b.on('warning', (w) => warnings.push(w));
  a.on('ring-rejected', (r) => rejected.push(r));
  const slot: string[] = [];
  b.on('message', (m) => m.from === 1 && slot.push(m.text));
  const batches: number[] = [];
  if (mode === 'onRing') b.onRing((from, bytes, start, length) => from === 1 && got.push(bytes.toString('utf8', start, start + length)));
  else if (mode === 'onRingBatch' || mode === 'native-batch') {
    b.onRingBatch((from, bytes, at, len, count) => {
      if (from !== 1) return;
      batches.push(count);
      for (let i = 0; i < count; i++) got.push(bytes.toString('utf8', at[i], at[i] + len[i]));
    });
  } else b.on('data', ({ from, messages }) => from === 1 && got.push(...messages.map(text)));

  const w = a.ringWriter(2);
  const put = (s: string) => {
    const at = w.reserve(s.length);
    w.bytes.write(s, at);
    return at;
  };
  put('good-0');
  const bad = put('bad');
  put('after');
  // The bad record's flags word, just before its payload.
  w.bytes.writeUInt32LE(7, bad - 4);
  w.commit(); // rings B's doorbell: the ring was empty

  await waitFor(() => errors.length > 0, 'a ring-error at B', WAIT_MS);
  t.deepEqual(got, ['good-0'], 'the good record before the corrupt one is delivered');
  t.is(errors.length, 1);
  t.like(errors[0], { from: 1, delivered: 1, discarded: 32 });
  t.regex(errors[0].reason, /corrupt ring: unknown flags 0x7 at 16/);
  t.true(
    warnings.some((x) => /^ring from peer 1 "producer": corrupt ring: unknown flags 0x7 at 16; 1 message\(s\) before it delivered, 32 byte\(s\) discarded$/.test(x)),
    warnings.join('\n'),
  );
  await waitFor(() => rejected.length > 0, 'A to hear that B rejected its ring', WAIT_MS);
  t.deepEqual(rejected, [{ to: 2, count: 1 }]);

  // The ring flows again: more than it holds at once, none lost.
  const more = Array.from({ length: 5000 }, (_, i) => Buffer.from(`m-${i}`));
  await a.sendRing(2, more, { timeoutMs: WAIT_MS });
  await a.send(2, 'through the slot');
  await waitFor(() => got.length >= 5001 && slot.length >= 1, 'B to get the 5,000 ring messages and the slot message', WAIT_MS);
  t.deepEqual(got.slice(1), more.map(text));
  t.deepEqual(slot, ['through the slot']);
  t.is(errors.length, 1, 'nothing else was corrupt');
  if (batches.length > 0) t.true(batches.every((n) => n >= 1 && n <= 1024), `batches of ${Math.min(...batches)}..${Math.max(...batches)}`);
}

test('FabricClient (data events): a corrupt ring record after a good one is reported at once, the good one delivered, the producer told, and the ring flows again', (t) => corruptThenFlow(t, 'data'));
test('FabricClient (onRing): a corrupt ring record after a good one is reported at once, the good one delivered, the producer told, and the ring flows again', (t) => corruptThenFlow(t, 'onRing'));
test('FabricClient (onRingBatch): a corrupt ring record after a good one is reported at once, the good one delivered, the producer told, and the ring flows again', (t) => corruptThenFlow(t, 'onRingBatch'));
test('FabricClient (native ring fallback, onRingBatch): a corrupt ring record after a good one is reported at once, the good one delivered, the producer told, and the ring flows again', (t) => corruptThenFlow(t, 'native-batch'));
test('FabricClient (native ring fallback): a corrupt ring record after a good one is reported at once, the good one delivered, the producer told, and the ring flows again', (t) => corruptThenFlow(t, 'native'));
