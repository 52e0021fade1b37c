// Messages as Gen-Z packets (ts/link/carry.ts): pieces() cuts a message into
// Core64 Writes with global addressing into famez's message window, the
// Reassembler puts them back together; everything out of shape is refused.
import test from 'ava';
import fc from 'fast-check';

import * as genz from '../ts/genz/index.js';
import { CarryError, HEADER_BYTES, PIECE_BYTES, Reassembler, endToEnd, looksCarried, packedPieces, pieces, readPiece, readPieceByCodec, slotPieces, splitPackets, splitPiece, type Carried } from '../ts/link/carry.js';
import { ecrc, pcrc } from '../ts/genz/crc.js';
import { packetFault } from '../ts/link/frame.js';

const A = 0x1b064; // SID 27, CID 100
const B = 0x1c0c8; // SID 28, CID 200

function deliverAll(r: Reassembler, packets: Uint8Array[]): Carried[] {
  const out: Carried[] = [];
  for (const p of packets) {
    const m = r.push(p);
    if (m) out.push(m);
  }
  return out;
}

test('a message travels as Core64 Writes with SSID:SCID and DSID:DCID, and comes back whole', (t) => {
  const message = Buffer.from('hello from SID 27');
  const ps = pieces('mailbox', A, B, message, 5);
  t.is(ps.length, 1);
  const p = genz.decode(ps[0]) as genz.Core64Write;
  t.is(p.class, 'Core64.Write');
  t.is(p.GC, 1);
  t.deepEqual([p.SSID, p.SCID, p.DSID, p.DCID, p.Tag], [27, 100, 28, 200, 5]);
  t.is(p.Addr >> 48n, 0xfa3en);
  t.is(packetFault(ps[0]), null, 'each piece is a packet the link frame accepts');
  const got = deliverAll(new Reassembler(), ps);
  t.deepEqual(got.map((m) => ({ ...m, message: Buffer.from(m.message).toString() })), [{ kind: 'mailbox', source: A, destination: B, message: 'hello from SID 27' }]);
});

test('messages of any size round-trip, cut into pieces of at most PIECE_BYTES', (t) => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: PIECE_BYTES * 5 + 3 }), fc.constantFrom('mailbox', 'ring', 'control' as const), fc.nat(10_000), (bytes, kind, n) => {
      const ps = pieces(kind, A, B, bytes, n);
      t.is(ps.length, Math.max(1, Math.ceil(bytes.length / PIECE_BYTES)));
      for (const p of ps) t.true(p.length <= 508);
      const got = deliverAll(new Reassembler(), ps);
      t.is(got.length, 1);
      t.is(got[0].kind, kind);
      t.deepEqual(Buffer.from(got[0].message), Buffer.from(bytes));
    }),
    { numRuns: 200 },
  );
});

test('pieces() makes exactly the packets the codec makes piece by piece (its full pieces are refilled, not encoded)', (t) => {
  const WINDOW = 0xfa3en << 48n;
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: PIECE_BYTES * 6 + 5 }), fc.constantFrom('mailbox', 'ring', 'control' as const), fc.nat(100_000), fc.integer({ min: 40, max: 508 }), (bytes, kind, n, maxPacket) => {
      const room = Math.min(PIECE_BYTES, Math.floor((maxPacket - HEADER_BYTES) / 4) * 4);
      const want: string[] = [];
      for (let at = 0; ; at += room) {
        const end = Math.min(bytes.length, at + room);
        const last = end === bytes.length;
        const k = { mailbox: 0n, ring: 1n, control: 2n }[kind];
        const Addr = WINDOW | (k << 40n) | BigInt(at) | (last ? 1n << 39n : 0n);
        want.push(Buffer.from(genz.encode({ class: 'Core64.Write', GC: 1, DSID: 28, DCID: 200, SSID: 27, SCID: 100, Tag: n % 4096, Addr, payload: bytes.subarray(at, end) })).toString('hex'));
        if (last) break;
      }
      t.deepEqual(pieces(kind, A, B, bytes, n, maxPacket).map((p) => Buffer.from(p).toString('hex')), want);
    }),
    { numRuns: 200 },
  );
});

test('splitPiece cuts a piece into slot-sized ones at the same offsets, the last flag on the final one; a message of them reassembles whole', (t) => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: PIECE_BYTES * 4 }), fc.integer({ min: 40, max: 508 }), (bytes, maxPacket) => {
      const ps = pieces('ring', A, B, bytes, 9);
      const cut = ps.flatMap((p) => splitPiece(p, maxPacket));
      for (const p of cut) {
        t.true(p.length <= maxPacket);
        t.is(packetFault(p), null);
      }
      t.is(cut.length, ps.reduce((n, p) => n + (p.length <= maxPacket ? 1 : Math.max(1, Math.ceil((p.length - HEADER_BYTES) / (Math.floor((maxPacket - HEADER_BYTES) / 4) * 4)))), 0));
      const got = deliverAll(new Reassembler(), cut);
      t.is(got.length, 1);
      t.deepEqual(Buffer.from(got[0].message), Buffer.from(bytes));
    }),
    { numRuns: 200 },
  );
  const short = pieces('mailbox', A, B, new Uint8Array(10), 1)[0];
  t.is(splitPiece(short, 383)[0], short, 'a piece that fits is itself');
  t.throws(() => splitPiece(genz.encode({ class: 'Core64.Write', GC: 1, DSID: 1, SSID: 1, Addr: 0n, payload: new Uint8Array(400) }), 383), { instanceOf: CarryError });
});

test('streams reassemble independently when their pieces interleave', (t) => {
  const m1 = new Uint8Array(PIECE_BYTES * 2 + 1).fill(1);
  const m2 = new Uint8Array(PIECE_BYTES + 7).fill(2);
  const p1 = pieces('ring', A, B, m1, 0);
  const p2 = pieces('ring', B, A, m2, 0);
  const r = new Reassembler();
  const got = deliverAll(r, [p1[0], p2[0], p1[1], p2[1], p1[2]]);
  t.deepEqual(got.map((m) => [m.source, m.message.length]), [[B, m2.length], [A, m1.length]]);
  t.is(r.pending, 0);
});

test('a piece that continues no message, or another tag mid-message, is refused and the partial one dropped', (t) => {
  const long = new Uint8Array(PIECE_BYTES * 3).fill(7);
  const ps = pieces('mailbox', A, B, long, 1);
  const r = new Reassembler();
  t.is(r.push(ps[0]), null);
  t.is(r.heldBytes, PIECE_BYTES);
  t.throws(() => r.push(ps[2]), { instanceOf: CarryError, code: 'EORDER' });
  t.is(r.pending, 0, 'the partial message is gone');
  t.throws(() => r.push(ps[1]), { instanceOf: CarryError, code: 'EORDER' });
  // Another message's second piece after this one's first.
  const other = pieces('mailbox', A, B, long, 2);
  r.push(ps[0]);
  t.throws(() => r.push(other[1]), { instanceOf: CarryError, code: 'EORDER' });
  // A fresh message at offset 0 after an unfinished one: the old one counted as abandoned.
  r.push(ps[0]);
  const got = deliverAll(r, other);
  t.is(got.length, 1);
  t.is(r.abandoned, 1);
});

test('packets that are no piece are refused: other classes, no GC, outside the window, bad CRC', (t) => {
  const r = new Reassembler();
  const read = genz.encode({ class: 'Core64.Read', GC: 1, DSID: 1, SSID: 2, Addr: 0n, RDSize: 8 });
  t.throws(() => r.push(read), { instanceOf: CarryError, code: 'EPACKET' });
  const local = genz.encode({ class: 'Core64.Write', Addr: 0xfa3e_0000_0000_0000n | (1n << 39n), payload: new Uint8Array(4) });
  t.throws(() => r.push(local), { instanceOf: CarryError, code: 'EPACKET' });
  const elsewhere = genz.encode({ class: 'Core64.Write', GC: 1, DSID: 1, SSID: 2, Addr: 0x1000n, payload: new Uint8Array(4) });
  t.throws(() => r.push(elsewhere), { instanceOf: CarryError, code: 'EWINDOW' });
  const kind9 = genz.encode({ class: 'Core64.Write', GC: 1, DSID: 1, SSID: 2, Addr: (0xfa3en << 48n) | (9n << 40n) | (1n << 39n), payload: new Uint8Array(4) });
  t.throws(() => r.push(kind9), { instanceOf: CarryError, code: 'EWINDOW' });
  const good = pieces('mailbox', A, B, Buffer.from('x'), 0)[0];
  const bad = good.slice();
  bad[bad.length - 8] ^= 1;
  t.throws(() => r.push(bad), { instanceOf: CarryError, code: 'EPACKET' });
  t.throws(() => r.push(new Uint8Array(3)), { instanceOf: CarryError, code: 'EPACKET' });
});

test('a message over the receiver limit is refused, piece by piece, holding at most the limit', (t) => {
  const r = new Reassembler(1000);
  const ps = pieces('ring', A, B, new Uint8Array(3000), 0);
  let refused = 0;
  for (const p of ps) {
    try {
      r.push(p);
    } catch (e) {
      t.true(e instanceof CarryError);
      refused++;
    }
    t.true(r.heldBytes <= 1000);
  }
  t.true(refused >= 1);
  t.is(r.pending, 0);
  t.throws(() => pieces('ring', 2 ** 28, B, new Uint8Array(1), 0), { instanceOf: CarryError, code: 'EFIELD' });
});

test('arbitrary bytes and mutated pieces never make push throw anything but CarryError', (t) => {
  const base = pieces('ring', A, B, new Uint8Array(PIECE_BYTES + 10).fill(3), 0);
  fc.assert(
    fc.property(fc.array(fc.oneof(fc.uint8Array({ maxLength: 600 }), fc.tuple(fc.constantFrom(...base), fc.nat(599), fc.nat(255)).map(([p, i, b]) => {
      const c = p.slice();
      c[i % c.length] = b;
      return c;
    })), { maxLength: 20 }), (inputs) => {
      const r = new Reassembler(4096);
      for (const i of inputs) {
        try {
          r.push(i);
        } catch (e) {
          if (!(e instanceof CarryError)) throw e;
        }
      }
      t.true(r.heldBytes <= 4096);
    }),
    { numRuns: 300 },
  );
});

/** `p` with its PCRC and ECRC made right again (its LEN as it says). */
function reseal(p: Uint8Array): Uint8Array {
  const c = p.slice();
  const LEN = ((c[0]! >>> 5) & 0x7) | ((c[1]! >>> 4) << 3);
  const VC = ((c[2]! >>> 3) & 0x1f);
  c[3] = (c[3]! & 0x03) | (pcrc(VC, LEN) << 2);
  const n = c.length;
  if (n >= 4) {
    const sum = ecrc(c.subarray(0, n - 3));
    c[n - 3] = sum & 0xff;
    c[n - 2] = (sum >>> 8) & 0xff;
    c[n - 1] = sum >>> 16;
  }
  return c;
}

function outcome(f: () => unknown): unknown {
  try {
    const r = f() as { payload: Uint8Array };
    return { ...r, payload: Buffer.from(r.payload).toString('hex') };
  } catch (e) {
    if (!(e instanceof CarryError)) throw e;
    return { code: e.code, message: e.message };
  }
}

test("readPiece reads a piece's fields straight from its dwords exactly as the codec does, for any packet: sound, mutated, mutated and resealed", (t) => {
  const base = [...pieces('ring', A, B, new Uint8Array(PIECE_BYTES + 10).map((_, i) => i), 77), ...pieces('control', B, A, new Uint8Array(5).fill(9), 4095)];
  const mutated = fc.tuple(fc.constantFrom(...base), fc.array(fc.tuple(fc.nat(599), fc.nat(255)), { minLength: 1, maxLength: 3 }), fc.boolean()).map(([p, edits, seal]) => {
    const c = p.slice();
    for (const [i, b] of edits) c[i % c.length] = b;
    return seal ? reseal(c) : c;
  });
  fc.assert(
    fc.property(fc.oneof(fc.constantFrom(...base), mutated, fc.uint8Array({ maxLength: 600 })), fc.boolean(), (packet, checked) => {
      t.deepEqual(outcome(() => readPiece(packet, checked)), outcome(() => readPieceByCodec(packet, checked)));
    }),
    { numRuns: 2000 },
  );
});

test('packedPieces is the pieces end to end, byte for byte', (t) => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: PIECE_BYTES * 4 + 7 }), fc.nat(10_000), fc.integer({ min: 40, max: 508 }), (bytes, n, maxPacket) => {
      t.deepEqual(Buffer.from(packedPieces('ring', A, B, bytes, n, maxPacket)), Buffer.concat(pieces('ring', A, B, bytes, n, maxPacket)));
    }),
    { numRuns: 100 },
  );
});

test("a Reassembler that keeps only control messages' bytes finishes the others empty, their length still bounded", (t) => {
  const r = new Reassembler(4096, Infinity, (kind) => kind === 'control');
  const ring = deliverAll(r, pieces('ring', A, B, new Uint8Array(2000).fill(1), 1));
  t.deepEqual(ring.map((m) => [m.kind, m.message.length]), [['ring', 0]]);
  const control = deliverAll(r, pieces('control', A, B, new Uint8Array(700).fill(2), 2));
  t.deepEqual(control.map((m) => [m.kind, Buffer.from(m.message).equals(Buffer.alloc(700, 2))]), [['control', true]]);
  t.throws(() => deliverAll(r, pieces('ring', A, B, new Uint8Array(5000), 3)), { instanceOf: CarryError, code: 'ETOOBIG' });
});

test('pieces can be cut smaller (a slot holds 383 bytes), laid end to end and split apart again', (t) => {
  const m = new Uint8Array(1000).map((_, i) => i);
  const ps = pieces('mailbox', A, B, m, 3, 383);
  for (const p of ps) t.true(p.length <= 383);
  t.true(looksCarried(ps[0]));
  t.false(looksCarried(Buffer.from('ping')));
  t.false(looksCarried(genz.encode({ class: 'Core64.Write', GC: 1, DSID: 1, SSID: 2, Addr: 0x1000n, payload: new Uint8Array(4) })));
  const joined = Buffer.concat(ps);
  const split = splitPackets(joined)!;
  t.is(split.length, ps.length);
  t.deepEqual(Buffer.from(deliverAll(new Reassembler(), split)[0].message), Buffer.from(m));
  t.is(splitPackets(joined.subarray(0, joined.length - 1)), null);
  t.throws(() => pieces('mailbox', A, B, m, 0, HEADER_BYTES + 3), { instanceOf: CarryError, code: 'EFIELD' });
});

test('endToEnd lays a message\'s pieces end to end in runs of at most max bytes, in order, each of whole pieces (a switch gives a ring reader one record per message)', (t) => {
  const m = new Uint8Array(4096).map((_, i) => i * 7);
  const ps = pieces('ring', A, B, m, 9);
  const total = ps.reduce((n, p) => n + p.length, 0);
  t.is(ps.length, 9);
  // One run when it all fits; as many as needed, in order, when not.
  for (const max of [total, total + 100, 1500, 1024, ps[0].length, 16]) {
    const runs = endToEnd(ps, max);
    t.deepEqual(Buffer.concat(runs), Buffer.concat(ps), `max ${max}`);
    for (const r of runs) t.true(r.length <= Math.max(max, ps[0].length), `max ${max}: a run of ${r.length}`);
    const split = runs.flatMap((r) => splitPackets(r)!);
    t.is(split.length, ps.length);
    t.deepEqual(Buffer.from(deliverAll(new Reassembler(), split)[0].message), Buffer.from(m));
  }
  t.is(endToEnd(ps, total).length, 1);
  t.is(endToEnd(ps, 16).length, ps.length);
  // A lone piece is passed through, not copied.
  t.is(endToEnd([ps[0]], 1 << 20)[0], ps[0]);
  t.deepEqual(endToEnd([], 100), []);
});

test('slotPieces cuts pieces end to end (a ring record a broken ring leaves queued) into slot-sized pieces that reassemble whole; anything else is refused', (t) => {
  const m = new Uint8Array(3000).map((_, i) => i * 3);
  const [record] = endToEnd(pieces('ring', A, B, m, 5), 1 << 20);
  const slot = slotPieces(record, 383);
  t.true(slot.length > 7);
  for (const p of slot) t.true(p.length <= 383);
  t.deepEqual(Buffer.from(deliverAll(new Reassembler(), slot)[0].message), Buffer.from(m));
  t.throws(() => slotPieces(record.subarray(0, record.length - 4), 383), { instanceOf: CarryError, code: 'EPACKET' });
  t.throws(() => slotPieces(Buffer.from('not pieces at all'), 383), { instanceOf: CarryError });
});

test('partial messages are bounded in all, not only one by one', (t) => {
  const r = new Reassembler(10_000, 3000);
  const streams = [0x1001, 0x1002, 0x1003, 0x1004, 0x1005, 0x1006, 0x1007, 0x1008];
  let refused = 0;
  for (const s of streams) {
    try {
      r.push(pieces('ring', s, B, new Uint8Array(5000), 0)[0]);
    } catch (e) {
      t.true(e instanceof CarryError && e.code === 'ETOOBIG');
      refused++;
    }
    t.true(r.heldBytes <= 3000);
  }
  t.true(refused > 0);
  // A finished message gives its bytes back.
  const r2 = new Reassembler(10_000, 3000);
  for (let i = 0; i < 20; i++) deliverAll(r2, pieces('ring', A, B, new Uint8Array(2000), i));
  t.is(r2.heldBytes, 0);
});
