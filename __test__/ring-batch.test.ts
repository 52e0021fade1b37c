// The batched ring paths of FabricClient: ringWriter().reserveRun() on the
// producer (many records of one size a call) and onRingBatch() on the
// consumer (many messages a call, positions and lengths in Int32Arrays),
// between two fabric clients of one server: nothing lost, duplicated or
// reordered, one doorbell for a long synchronous run (read over several
// loop turns), and switching between onRing, onRingBatch and `data`.
import * as path from 'node:path';

import anyTest, { type TestFn } from 'ava';

import { FabricClient } from '../ts/fabric/client.js';
import { recordSize } from '../ts/fabric/ring.js';
import { Scratch } from './helpers/serve.js';
import { waitFor } from './helpers/wait.js';

const test = anyTest as TestFn<Scratch>;
const WAIT_MS = 20_000;

test.beforeEach((t) => {
  t.context = new Scratch();
});
test.afterEach.always(async (t) => {
  await t.context.cleanup();
});

async function pair(t: { context: Scratch }, extra: string[] = []): Promise<{ a: FabricClient; b: FabricClient }> {
  const sock = path.join(t.context.dir(), 'sock');
  await t.context.serve(['-S', sock, '--memfd', '--max-peers', '2', ...extra]);
  const a = t.context.track(await FabricClient.connect(sock, { nodename: 'producer' }));
  const b = t.context.track(await FabricClient.connect(sock, { nodename: 'consumer' }));
  await waitFor(() => a.peers.some((p) => p.id === b.id), 'the producer to see the consumer', WAIT_MS);
  return { a, b };
}

test('reserveRun() -> onRingBatch(): 40,000 sequence-numbered messages written in one synchronous run, read in batches of at most 1,024 in order after one doorbell (more than a loop turn reads: the rest on the next turns)', async (t) => {
  const { a, b } = await pair(t, ['-l', '8M', '--ring-capacity', '1M']);
  let got = 0;
  let bad: string | null = null;
  const batches: number[] = [];
  b.on('data', () => {
    bad ??= 'a data event while onRingBatch() is set';
  });
  b.onRingBatch((from, bytes, at, len, count) => {
    if (from !== a.id || bad) return;
    batches.push(count);
    for (let i = 0; i < count; i++) {
      if (len[i] !== 12 || bytes.readUInt32LE(at[i]) !== got || bytes.readUInt32LE(at[i] + 8) !== 0xfeedbeef) {
        bad = `message ${got}: ${len[i]} bytes, sequence ${bytes.readUInt32LE(at[i])}`;
        return;
      }
      got++;
    }
  });
  let bellsRung = 0;
  b.transport.on('interrupt', ({ vector }) => {
    if (vector === a.id) bellsRung++;
  });
  const w = a.ringWriter(b.id);
  const stride = recordSize(12);
  for (let n = 0; n < 40_000; ) {
    const k = w.reserveRun(12, 40_000 - n);
    t.true(k > 0, 'a 1 MiB ring holds 40,000 records of 24 bytes');
    for (let j = 0, p = w.runAt; j < k; j++, p += stride) {
      w.bytes.writeUInt32LE(n + j, p);
      w.bytes.writeUInt32LE(0, p + 4);
      w.bytes.writeUInt32LE(0xfeedbeef, p + 8);
    }
    n += k;
  }
  w.commit();
  await waitFor(() => got >= 40_000 || bad !== null, 'every message', WAIT_MS);
  t.is(bad, null);
  t.is(got, 40_000);
  t.is(bellsRung, 1, 'one doorbell');
  t.true(
    batches.every((n) => n >= 1 && n <= 1024),
    `batches of ${Math.min(...batches)}..${Math.max(...batches)}`,
  );

  // onRing() replaces the batch handler; null goes back to data events.
  const each: string[] = [];
  b.onRing((_from, bytes, start, length) => each.push(bytes.toString('utf8', start, start + length)));
  await a.sendRing(b.id, [Buffer.from('one'), Buffer.from('two')]);
  await waitFor(() => each.length === 2, 'the onRing handler', WAIT_MS);
  t.deepEqual(each, ['one', 'two']);
  b.onRing(null);
  b.removeAllListeners('data');
  const copies: string[] = [];
  b.on('data', ({ messages }) => copies.push(...messages.map((m) => Buffer.from(m).toString())));
  await a.sendRing(b.id, [Buffer.from('three')]);
  await waitFor(() => copies.length === 1, 'the data event', WAIT_MS);
  t.deepEqual(copies, ['three']);
  t.is(got, 40_000, 'nothing more through the batch handler');
});

test('sendRing() -> onRingBatch(): 20,000 messages of mixed sizes through a 16 KiB ring (many ring-fulls), none lost, duplicated or reordered', async (t) => {
  const { a, b } = await pair(t, ['--ring-capacity', '16K']);
  const msgs = Array.from({ length: 20_000 }, (_, i) => {
    const m = Buffer.alloc(4 + ((i * 37) % 300), i & 0xff);
    m.writeUInt32LE(i, 0);
    return m;
  });
  let got = 0;
  let bad: string | null = null;
  b.onRingBatch((from, bytes, at, len, count) => {
    if (from !== a.id || bad) return;
    for (let i = 0; i < count; i++) {
      const want = msgs[got];
      if (len[i] !== want.length || !bytes.subarray(at[i], at[i] + len[i]).equals(want)) {
        bad = `message ${got}: ${len[i]} bytes, wanted ${want.length}`;
        return;
      }
      got++;
    }
  });
  await a.sendRing(b.id, msgs, { timeoutMs: WAIT_MS });
  await waitFor(() => got >= msgs.length || bad !== null, 'every message', WAIT_MS);
  t.is(bad, null);
  t.is(got, msgs.length);
});

test('an onRingBatch handler that sets onRing() gets no more batches: the rest of the same doorbell goes to the new handler, in order', async (t) => {
  const { a, b } = await pair(t, ['-l', '8M', '--ring-capacity', '1M']);
  const seen: [string, number][] = [];
  b.onRingBatch((_from, bytes, at, _len, count) => {
    for (let i = 0; i < count; i++) seen.push(['batch', bytes.readUInt32LE(at[i])]);
    b.onRing((_f, bytes2, start) => seen.push(['each', bytes2.readUInt32LE(start)]));
  });
  const w = a.ringWriter(b.id);
  for (let i = 0; i < 3000; i++) w.bytes.writeUInt32LE(i, w.reserve(4));
  w.commit();
  await waitFor(() => seen.length >= 3000, 'every message', WAIT_MS);
  t.is(seen.length, 3000);
  t.deepEqual(
    seen.map(([, n]) => n),
    [...Array(3000).keys()],
  );
  const batch = seen.filter(([how]) => how === 'batch').length;
  t.true(batch >= 1 && batch <= 1024, `${batch} through the batch handler`);
  t.true(seen.slice(batch).every(([how]) => how === 'each'));
});
