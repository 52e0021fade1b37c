// The link frame codec (ts/link/frame.ts, docs/multi-host.md "The link
// frame"): the header byte by byte as the doc gives it (built here by hand
// with DataView, independently of the encoder), every refusal, and
// properties: arbitrary bytes never make decode throw anything but a
// FrameError, and encode(decode(x)) is x.
import test from 'ava';
import * as fs from 'node:fs';
import * as path from 'node:path';
import fc from 'fast-check';

import * as genz from '../ts/genz/index.js';
import { decode, decodeTrain, encode, encodeTrain, FrameError, packetFault, unitFault, HEADER_BYTES, type Frame } from '../ts/link/frame.js';

/** A real packet from the project's codec: 24 bytes (Core64 Write, 4 payload bytes). */
const PACKET = genz.encode({ class: 'Core64.Write', DCID: 3, SCID: 5, Tag: 7, Addr: 0x1000n, payload: new Uint8Array([1, 2, 3, 4]) });
const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');
/** A unit of two packets end to end (a message's pieces in one data frame). */
const TWO = new Uint8Array(Buffer.concat([PACKET, PACKET]));

/** The header as docs/multi-host.md lays it out. */
function header(type: number, flags: number, length: number, source: number, destination: number, seq: number, ack: number, credit: number): Uint8Array {
  const b = new Uint8Array(HEADER_BYTES);
  const v = new DataView(b.buffer);
  b[0] = 0x46; // 'F'
  b[1] = 0x5a; // 'Z'
  b[2] = 3;
  b[3] = type;
  b[4] = flags;
  v.setUint16(6, length, true);
  v.setUint32(8, source, true);
  v.setUint32(12, destination, true);
  v.setUint32(16, seq, true);
  v.setUint32(20, ack, true);
  v.setUint32(24, credit, true);
  const crc = genz.ecrc(b.subarray(0, 29));
  b[29] = crc & 0xff;
  b[30] = (crc >> 8) & 0xff;
  b[31] = crc >> 16;
  return b;
}

const concat = (a: Uint8Array, b: Uint8Array) => new Uint8Array([...a, ...b]);

const VECTORS: [string, Frame, Uint8Array][] = [
  ['hello', { type: 'hello', instance: 0xdeadbeef, window: 64, seen: false, source: 0 }, header(1, 0, 0, 0, 0, 0xdeadbeef, 0, 64)],
  ['hello, seen', { type: 'hello', instance: 7, window: 1, seen: true, source: 0x2064 }, header(1, 1, 0, 0x2064, 0, 7, 0, 1)],
  ['heartbeat', { type: 'heartbeat' }, header(2, 0, 0, 0, 0, 0, 0, 0)],
  [
    'data',
    { type: 'data', source: 0x0001005, destination: 0x0002003, seq: 0xfffffffe, packet: PACKET },
    concat(header(3, 0, PACKET.length, 0x0001005, 0x0002003, 0xfffffffe, 0, 0), PACKET),
  ],
  [
    'data, a unit of two packets',
    { type: 'data', source: 0x0001005, destination: 0x0002003, seq: 3, packet: TWO },
    concat(header(3, 0, TWO.length, 0x0001005, 0x0002003, 3, 0, 0), TWO),
  ],
  [
    'data with the reverse stream ack',
    { type: 'data', source: 0x0001005, destination: 0x0002003, seq: 1, packet: PACKET, reverse: { ack: 17, credit: 81 } },
    concat(header(3, 1, PACKET.length, 0x0001005, 0x0002003, 1, 17, 81), PACKET),
  ],
  ['ack', { type: 'ack', source: 0xfffffff, destination: 0, ack: 12, credit: 76 }, header(4, 0, 0, 0xfffffff, 0, 0, 12, 76)],
  ['probe', { type: 'probe', source: 1, destination: 2, seq: 99 }, header(5, 0, 0, 1, 2, 99, 0, 0)],
];

for (const [name, frame, bytes] of VECTORS) {
  test(`vector: ${name} encodes to the documented bytes and decodes back`, (t) => {
    t.is(hex(encode(frame)), hex(bytes));
    t.deepEqual(decode(bytes), frame);
  });
}

test('pinned bytes, so the format cannot drift unnoticed', (t) => {
  t.is(hex(encode({ type: 'heartbeat' })), '465a030200000000000000000000000000000000000000000000000000e11145');
  t.is(hex(encode({ type: 'ack', source: 0x1005, destination: 0x2003, ack: 3, credit: 67 })), '465a030400000000051000000320000000000000030000004300000000c255eb');
  t.is(
    hex(encode({ type: 'data', source: 0x1005, destination: 0x2003, seq: 2, packet: PACKET })),
    '465a030300001c00051000000320000002000000000000000000000000f995da' + hex(PACKET),
  );
  t.is(
    hex(encode({ type: 'data', source: 0x1005, destination: 0x2003, seq: 2, packet: TWO })),
    '465a0303000038000510000003200000020000000000000000000000008e071c' + hex(TWO),
  );
});

function code(f: () => unknown): string {
  try {
    f();
  } catch (e) {
    if (e instanceof FrameError) return e.code;
    throw e;
  }
  return 'ok';
}

/** A header with one byte changed and the CRC made right again (a forged frame). */
function forged(b: Uint8Array, at: number, value: number): Uint8Array {
  const c = b.slice();
  c[at] = value;
  const crc = genz.ecrc(c.subarray(0, 29));
  c[29] = crc & 0xff;
  c[30] = (crc >> 8) & 0xff;
  c[31] = crc >> 16;
  return c;
}

test('decode refuses, with its code, every way a frame can be wrong', (t) => {
  const ack = header(4, 0, 0, 1, 2, 0, 3, 4);
  const data = concat(header(3, 0, PACKET.length, 1, 2, 0, 0, 0), PACKET);
  t.is(code(() => decode('x' as unknown as Uint8Array)), 'EINPUT');
  t.is(code(() => decode(new Uint8Array(31))), 'ETRUNC');
  t.is(code(() => decode(new Uint8Array(32))), 'EMAGIC');
  t.is(code(() => decode(forged(ack, 2, 1))), 'EVERSION'); // version 1: one frame per link message, no trains
  t.is(code(() => decode(forged(ack, 2, 2))), 'EVERSION'); // version 2: one packet per data frame
  t.is(code(() => decode(forged(ack, 2, 4))), 'EVERSION');
  const flipped = ack.slice();
  flipped[20] ^= 0x10;
  t.is(code(() => decode(flipped)), 'ECRC');
  t.is(code(() => decode(data.subarray(0, data.length - 1))), 'ETRUNC');
  t.is(code(() => decode(concat(ack, new Uint8Array(1)))), 'ETRAILING');
  t.is(code(() => decode(forged(ack, 3, 9))), 'ETYPE');
  t.is(code(() => decode(forged(ack, 3, 0))), 'ETYPE');
  t.is(code(() => decode(forged(ack, 4, 1))), 'EFIELD'); // flags on an ack
  t.is(code(() => decode(forged(ack, 5, 1))), 'EFIELD'); // reserved
  t.is(code(() => decode(forged(ack, 28, 1))), 'EFIELD'); // reserved
  t.is(code(() => decode(forged(ack, 16, 1))), 'EFIELD'); // seq on an ack
  t.is(code(() => decode(forged(ack, 11, 0x10))), 'EFIELD'); // a 29-bit GCID
  t.is(code(() => decode(header(1, 2, 0, 0, 0, 1, 0, 64))), 'EFIELD'); // unknown hello flag
  t.is(code(() => decode(header(1, 0, 0, 0, 0, 1, 0, 0))), 'EFIELD'); // window 0
  t.is(code(() => decode(header(1, 0, 0, 0, 5, 1, 0, 64))), 'EFIELD'); // a hello names no destination
  t.is(code(() => decode(header(1, 0, 0, 2 ** 28, 0, 1, 0, 64))), 'EFIELD'); // a 29-bit source
  t.is(code(() => decode(header(1, 0, 0, 0, 0, 1, 0, 2 ** 31))), 'EFIELD');
  t.is(code(() => decode(header(2, 0, 0, 0, 0, 1, 0, 0))), 'EFIELD'); // heartbeat with a seq
  t.is(code(() => decode(header(3, 0, 0, 1, 2, 0, 0, 0))), 'EPACKET'); // data without a packet
  t.is(code(() => decode(concat(header(3, 2, PACKET.length, 1, 2, 0, 0, 0), PACKET))), 'EFIELD'); // unknown data flag
  t.is(code(() => decode(concat(header(3, 0, PACKET.length, 1, 2, 0, 5, 0), PACKET))), 'EFIELD'); // an ack without the flag
  const badPacket = PACKET.slice();
  badPacket[10] ^= 1; // ECRC no longer matches
  t.is(code(() => decode(concat(header(3, 0, badPacket.length, 1, 2, 0, 0, 0), badPacket))), 'EPACKET');
  t.is(code(() => decode(concat(header(3, 0, 20, 1, 2, 0, 0, 0), PACKET.subarray(0, 20)))), 'EPACKET'); // LEN says 24
  // Units: the second packet's ECRC, bytes after the last packet, a unit over MAX_UNIT_BYTES.
  const badSecond = TWO.slice();
  badSecond[PACKET.length + 10] ^= 1;
  t.throws(() => decode(concat(header(3, 0, badSecond.length, 1, 2, 0, 0, 0), badSecond)), { instanceOf: FrameError, code: 'EPACKET', message: /packet 2 of the unit: ECRC/ });
  const tail = concat(TWO, new Uint8Array(4));
  t.throws(() => decode(concat(header(3, 0, tail.length, 1, 2, 0, 0, 0), tail)), { instanceOf: FrameError, code: 'EPACKET', message: new RegExp(`the bytes at ${TWO.length} are no whole packet`) });
  const most = Math.floor(8192 / PACKET.length);
  const big = new Uint8Array(Buffer.concat(Array.from({ length: most + 1 }, () => PACKET)));
  t.true(big.length > 8192);
  t.is(code(() => decode(concat(header(3, 0, big.length, 1, 2, 0, 0, 0), big))), 'EPACKET');
  t.is(unitFault(big.subarray(0, most * PACKET.length)), null, `a unit of ${most} packets, ${most * PACKET.length} bytes, is sound`);
  t.is(code(() => encode({ type: 'data', source: 1, destination: 2, seq: 0, packet: big })), 'EPACKET');
  t.is(code(() => decode(concat(header(4, 0, PACKET.length, 1, 2, 0, 0, 0), PACKET))), 'EFIELD'); // an ack with a payload
});

test('a decoded packet is a copy, a plain Uint8Array, even from a Buffer', (t) => {
  const buf = Buffer.from(encode({ type: 'data', source: 1, destination: 2, seq: 0, packet: PACKET }));
  const f = decode(buf) as { packet: Uint8Array };
  t.false(Buffer.isBuffer(f.packet));
  buf.fill(0);
  t.is(hex(f.packet), hex(PACKET));
});

test('encode refuses fields out of range and unsound packets', (t) => {
  t.is(code(() => encode(null as unknown as Frame)), 'EINPUT');
  t.is(code(() => encode({ type: 'nope' } as unknown as Frame)), 'EINPUT');
  t.is(code(() => encode({ type: 'ack', source: 2 ** 28, destination: 0, ack: 0, credit: 0 })), 'EFIELD');
  t.is(code(() => encode({ type: 'ack', source: 0, destination: 0, ack: -1, credit: 0 })), 'EFIELD');
  t.is(code(() => encode({ type: 'probe', source: 0, destination: 0, seq: 2 ** 32 })), 'EFIELD');
  t.is(code(() => encode({ type: 'hello', instance: 1.5, window: 1, seen: false })), 'EFIELD');
  t.is(code(() => encode({ type: 'hello', instance: 1, window: 0, seen: false })), 'EFIELD');
  t.is(code(() => encode({ type: 'hello', instance: 1, window: 1, seen: false, source: 2 ** 28 })), 'EFIELD');
  t.is(code(() => encode({ type: 'data', source: 0, destination: 0, seq: 0, packet: new Uint8Array(16) })), 'EPACKET');
  t.is(code(() => encode({ type: 'data', source: 0, destination: 0, seq: 0, packet: [1] as unknown as Uint8Array })), 'EINPUT');
});

test('packetFault accepts every packet of the published Gen-Z vectors and refuses a flipped bit anywhere', (t) => {
  const file = path.join(__dirname, 'fixtures', 'genz-vectors.json');
  const vectors = (JSON.parse(fs.readFileSync(file, 'utf8')) as { hex: string }[]).map((v) => new Uint8Array(Buffer.from(v.hex, 'hex')));
  t.true(vectors.length > 0);
  for (const p of vectors) {
    t.is(packetFault(p), null);
    for (let bit = 0; bit < p.length * 8; bit++) {
      const q = p.slice();
      q[bit >> 3] ^= 1 << (bit & 7);
      t.not(packetFault(q), null, `bit ${bit}`);
    }
  }
});

test('every single-bit error in a header is caught (CRC-24)', (t) => {
  for (const [, , bytes] of VECTORS) {
    for (let bit = 0; bit < HEADER_BYTES * 8; bit++) {
      const b = bytes.slice();
      b[bit >> 3] ^= 1 << (bit & 7);
      t.not(code(() => decode(b)), 'ok', `bit ${bit}`);
    }
  }
});

const u32 = fc.nat({ max: 2 ** 32 - 1 });
const gcid = fc.nat({ max: 2 ** 28 - 1 });
const packetArb = fc.uint8Array({ maxLength: 400 }).map((payload) => genz.encode({ class: 'Core64.Write', DCID: 1, SCID: 2, payload }));
const frameArb: fc.Arbitrary<Frame> = fc.oneof(
  fc.record({ type: fc.constant('hello' as const), instance: u32, window: fc.integer({ min: 1, max: 2 ** 31 - 1 }), seen: fc.boolean(), source: fc.integer({ min: 0, max: 2 ** 28 - 1 }) }),
  fc.constant({ type: 'heartbeat' as const }),
  fc.record({ type: fc.constant('data' as const), source: gcid, destination: gcid, seq: u32, packet: packetArb }),
  fc.record({ type: fc.constant('data' as const), source: gcid, destination: gcid, seq: u32, packet: packetArb, reverse: fc.record({ ack: u32, credit: u32 }) }),
  fc.record({ type: fc.constant('ack' as const), source: gcid, destination: gcid, ack: u32, credit: u32 }),
  fc.record({ type: fc.constant('probe' as const), source: gcid, destination: gcid, seq: u32 }),
);

test('property: decode(encode(f)) is f and encode(decode(x)) is x', (t) => {
  fc.assert(
    fc.property(frameArb, (f) => {
      const bytes = encode(f);
      t.deepEqual(decode(bytes), f);
      t.is(hex(encode(decode(bytes))), hex(bytes));
    }),
    { numRuns: 2000 },
  );
});

/** decode, telling whether it refused with a FrameError; anything else thrown fails the test. */
function tryDecode(bytes: Uint8Array): Frame | null {
  try {
    return decode(bytes);
  } catch (e) {
    if (e instanceof FrameError) return null;
    throw e;
  }
}

test('property: arbitrary bytes never make decode throw anything but a FrameError; whatever decodes re-encodes to the same bytes', (t) => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 600 }), (bytes) => {
      const f = tryDecode(bytes);
      if (f) t.is(hex(encode(f)), hex(bytes));
    }),
    { numRuns: 3000 },
  );
  t.pass();
});

test('property: a valid frame with bytes mutated (the CRC kept right or not) decodes to a FrameError or to a frame that re-encodes exactly', (t) => {
  fc.assert(
    fc.property(frameArb, fc.array(fc.tuple(fc.nat(), fc.nat({ max: 255 })), { minLength: 1, maxLength: 4 }), fc.boolean(), fc.integer({ min: -3, max: 3 }), (f, edits, fixCrc, resize) => {
      let b = encode(f);
      for (const [at, v] of edits) b[at % b.length] = v;
      if (fixCrc) b = forged(b, 0, b[0]!);
      if (resize < 0) b = b.subarray(0, Math.max(0, b.length + resize));
      else if (resize > 0) b = concat(b, new Uint8Array(resize));
      // Decode must read only `b`: hand it a view into a larger buffer whose
      // bytes around it are poison, and a copy; both must agree.
      const big = new Uint8Array(b.length + 64).fill(0xa5);
      big.set(b, 32);
      const view = big.subarray(32, 32 + b.length);
      const x = tryDecode(view);
      const y = tryDecode(b.slice());
      t.deepEqual(x, y);
      if (x) t.is(hex(encode(x)), hex(b));
    }),
    { numRuns: 3000 },
  );
  t.pass();
});

test('a train is frames end to end: encodeTrain is their encodings laid one after another, decodeTrain gives them back', (t) => {
  const frames: Frame[] = [
    { type: 'hello', instance: 9, window: 256, seen: true, source: 0x1000 },
    { type: 'data', source: 0x1005, destination: 0x2003, seq: 2, packet: PACKET },
    { type: 'data', source: 0x1005, destination: 0x2003, seq: 3, packet: PACKET, reverse: { ack: 4, credit: 260 } },
    { type: 'ack', source: 0x2003, destination: 0x1005, ack: 7, credit: 300 },
  ];
  const train = encodeTrain(frames);
  t.is(hex(train), frames.map((f) => hex(encode(f))).join(''));
  t.deepEqual(decodeTrain(train), { frames, error: null });
  t.deepEqual(decodeTrain(encode({ type: 'heartbeat' })), { frames: [{ type: 'heartbeat' }], error: null }, 'one frame is a train of one');
  t.throws(() => decode(train), { instanceOf: FrameError, code: 'ETRAILING' }, 'decode takes one frame, no more');
});

test('decodeTrain is strict: the frames before the first that does not decode, and its error; an empty message is ETRUNC', (t) => {
  const ack = encode({ type: 'ack', source: 1, destination: 2, ack: 3, credit: 4 });
  const two = encodeTrain([{ type: 'heartbeat' }, { type: 'ack', source: 1, destination: 2, ack: 3, credit: 4 }]);
  t.is(decodeTrain(new Uint8Array(0)).error?.code, 'ETRUNC');
  const cut = decodeTrain(two.subarray(0, two.length - 1));
  t.deepEqual(cut.frames, [{ type: 'heartbeat' }]);
  t.is(cut.error?.code, 'ETRUNC');
  t.regex(cut.error!.message, /^frame 2 of a train: /);
  const tail = decodeTrain(concat(two, new Uint8Array(5)));
  t.is(tail.frames.length, 2);
  t.is(tail.error?.code, 'ETRUNC');
  const old = decodeTrain(concat(ack, forged(ack, 2, 1)));
  t.is(old.frames.length, 1);
  t.is(old.error?.code, 'EVERSION');
  t.is(decodeTrain('x' as unknown as Uint8Array).error?.code, 'EINPUT');
});

test('property: arbitrary bytes and mutated trains never make decodeTrain throw; what it decodes encodes back to the bytes it took', (t) => {
  const good = encodeTrain([{ type: 'heartbeat' }, { type: 'data', source: 1, destination: 2, seq: 5, packet: PACKET }, { type: 'data', source: 1, destination: 2, seq: 6, packet: TWO }, { type: 'probe', source: 1, destination: 2, seq: 7 }]);
  fc.assert(
    fc.property(fc.oneof(fc.uint8Array({ maxLength: 300 }), fc.tuple(fc.nat(good.length * 8 - 1), fc.nat(good.length)).map(([bit, cut]) => {
      const b = good.slice(0, cut || good.length);
      b[(bit >> 3) % b.length] ^= 1 << (bit & 7);
      return b;
    })), (bytes) => {
      const { frames, error } = decodeTrain(bytes);
      const back = encodeTrain(frames);
      t.is(hex(back), hex(bytes.subarray(0, back.length)));
      if (error === null) t.is(back.length, bytes.length);
      else t.true(error instanceof FrameError);
    }),
    { numRuns: 2000 },
  );
});
