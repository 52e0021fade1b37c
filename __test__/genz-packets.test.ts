// Binary explicit Gen-Z packets: the published vectors byte for byte, every
// way decode refuses bytes and encode refuses fields, and properties over
// random packets of every class. Field widths and fixed lengths below are
// written out from genz-packets.md, independently of ts/genz/layouts.ts.
import test from 'ava';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import fc from 'fast-check';

import * as genz from '../ts/genz/index.js';
import { LAYOUTS, partsOf } from '../ts/genz/layouts.js';

// The published vectors: a copy of shared/genz/vectors.json kept in the
// repository (__test__/fixtures/genz-vectors.json), so every vector test runs
// wherever the repository is checked out; the copy is compared with the
// shared file wherever that is present (below).
interface Vector {
  class: genz.PacketClass;
  /** Every field; Addr as a 0x string (a 64-bit value), MGRUUID as a UUID string. */
  fields: Record<string, number | string>;
  hex: string;
  /** The payload as hex, for the classes that carry one. */
  payload?: string;
}

const FIXTURE = path.join(__dirname, 'fixtures', 'genz-vectors.json');
const VECTORS_TEXT = fs.readFileSync(FIXTURE, 'utf8');
const VECTORS = JSON.parse(VECTORS_TEXT) as Vector[];
/** The vector of class `cls` (the tests below use one of each). */
function vector(cls: genz.PacketClass): Vector {
  const v = VECTORS.find((x) => x.class === cls);
  if (!v) throw new Error(`${FIXTURE} has no ${cls} vector`);
  return v;
}

const fromHex = (hex: string) => new Uint8Array(Buffer.from(hex, 'hex'));
const toHex = (bytes: Uint8Array) => Buffer.from(bytes).toString('hex');

/** The packet a vector describes, in the codec's shape. */
function packetOf(v: Vector): genz.Packet {
  const p: Record<string, unknown> = { class: v.class, ...v.fields };
  if (v.fields['Addr'] !== undefined) p['Addr'] = BigInt(v.fields['Addr']);
  if (v.payload !== undefined) p['payload'] = fromHex(v.payload);
  return p as unknown as genz.Packet;
}

const COMPUTED = ['LEN', 'OpCode', 'OCL', 'PadCNT', 'PCRC', 'ECRC'];
function withoutComputed(p: object): genz.PacketInput {
  return Object.fromEntries(Object.entries(p).filter(([k]) => !COMPUTED.includes(k))) as unknown as genz.PacketInput;
}

function codeOf(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    if (e instanceof genz.GenZPacketError) {
      assert.ok(e.message.length > 0, 'the error says what went wrong');
      return e.code;
    }
    throw e;
  }
  return 'no error';
}

/** Recompute PCRC and ECRC after editing a packet's bytes. */
function reseal(bytes: Uint8Array): Uint8Array {
  const out = Uint8Array.from(bytes);
  const view = new DataView(out.buffer);
  const d0 = view.getUint32(0, true);
  const LEN = ((d0 >>> 5) & 7) | (((d0 >>> 12) & 0xf) << 3);
  const VC = (d0 >>> 19) & 0x1f;
  view.setUint32(0, ((d0 & 0x03ffffff) | (genz.pcrc(VC, LEN) << 26)) >>> 0, true);
  const last = out.length - 4;
  view.setUint32(last, ((view.getUint32(last, true) & 0xff) | (genz.ecrc(out.subarray(0, out.length - 3)) << 8)) >>> 0, true);
  return out;
}

/** Set `width` bits at bit `at` of dword `n`. */
function setBits(bytes: Uint8Array, n: number, at: number, width: number, value: number): Uint8Array {
  const out = Uint8Array.from(bytes);
  const view = new DataView(out.buffer);
  const mask = ((1 << width) - 1) << at;
  view.setUint32(n * 4, ((view.getUint32(n * 4, true) & ~mask) | ((value << at) & mask)) >>> 0, true);
  return out;
}

function setLEN(bytes: Uint8Array, LEN: number): Uint8Array {
  return setBits(setBits(bytes, 0, 5, 3, LEN & 7), 0, 12, 4, LEN >> 3);
}

test('the repository carries the five published vectors, one of each class', (t) => {
  t.deepEqual(
    VECTORS.map((v) => v.class),
    ['Core64.Read', 'Control.Read', 'Control.Write', 'Control.StandaloneAck', 'Control.UnsolicitedEvent'],
  );
});

// The copy is checked against shared/genz/vectors.json where a checkout has
// shared/ beside it; elsewhere there is nothing to compare with, and no test
// is registered that would claim to have compared.
const SHARED = path.resolve(__dirname, '..', '..', 'shared', 'genz', 'vectors.json');
if (fs.existsSync(SHARED)) {
  test('the repository copy of the vectors is the shared file', (t) => {
    t.deepEqual(JSON.parse(fs.readFileSync(SHARED, 'utf8')), JSON.parse(VECTORS_TEXT));
  });
}

test('the CRCs give the check values of genz-packets.md', (t) => {
  t.is(genz.pcrc(0, 4), 0x07);
  t.is(genz.pcrc(0, 7), 0x2a);
  t.is(genz.pcrc(1, 13), 0x39);
  t.is(genz.ecrc(new TextEncoder().encode('123456789')), 0xd90980);
  t.is(genz.ecrc(new Uint8Array(0)), 0x000000);
});

test('every dword of every layout is 32 bits of fields', (t) => {
  for (const l of LAYOUTS) {
    for (const flags of [0, 1, 2, 3, 4, 5, 6, 7]) {
      for (const part of partsOf(l, (flags & 1) > 0, l.rk && (flags & 2) > 0, (flags & 4) > 0)) {
        if (part.t !== 'dword') continue;
        t.is(part.pieces.reduce((n, piece) => n + piece.width, 0), 32, `${l.class}: ${part.pieces.map((piece) => piece.name).join(',')}`);
      }
    }
  }
});

for (const v of VECTORS) {
  test(`${v.class}: encode reproduces the vector from every field`, (t) => {
    t.is(toHex(genz.encode(packetOf(v) as genz.PacketInput)), v.hex);
  });

  test(`${v.class}: encode computes LEN, OpCode, OCL, PadCNT, PCRC and ECRC`, (t) => {
    t.is(toHex(genz.encode(withoutComputed(packetOf(v)))), v.hex);
  });

  test(`${v.class}: decode gives every field of the vector`, (t) => {
    const decoded = genz.decode(fromHex(v.hex));
    t.deepEqual(decoded, packetOf(v));
    t.deepEqual(Object.keys(decoded).sort(), Object.keys(packetOf(v)).sort(), 'no field more, none less');
  });
}

test('decode takes a Buffer and answers with a plain Uint8Array payload', (t) => {
  const v = vector('Control.Write');
  const decoded = genz.decode(Buffer.from(v.hex, 'hex'));
  t.is(decoded.class, 'Control.Write');
  if (decoded.class !== 'Control.Write') return;
  t.is(Object.getPrototypeOf(decoded.payload), Uint8Array.prototype);
  t.is(new TextDecoder().decode(decoded.payload), 'Hello World');
});

test('decode reads a packet that sits inside a larger buffer', (t) => {
  const v = vector('Core64.Read');
  const big = new Uint8Array(64);
  big.set(fromHex(v.hex), 7);
  t.deepEqual(genz.decode(big.subarray(7, 7 + v.hex.length / 2)), packetOf(v));
});

test('a packet cut anywhere is refused as truncated', (t) => {
  for (const v of VECTORS) {
    const bytes = fromHex(v.hex);
    for (let n = 0; n < bytes.length; n++) t.is(codeOf(() => genz.decode(bytes.subarray(0, n))), 'ETRUNC', `${v.class} cut to ${n.toString()} bytes`);
  }
});

test('bytes past LEN are refused', (t) => {
  for (const v of VECTORS) {
    t.is(codeOf(() => genz.decode(new Uint8Array([...fromHex(v.hex), 0, 0, 0, 0]))), 'ETRAILING', v.class);
    t.is(codeOf(() => genz.decode(new Uint8Array([...fromHex(v.hex), 0]))), 'ETRAILING', v.class);
  }
});

test('any flipped bit of VC, LEN or PCRC is a PCRC error', (t) => {
  for (const v of VECTORS) {
    const bytes = fromHex(v.hex);
    for (const bit of [5, 6, 7, 12, 13, 14, 15, 19, 20, 21, 22, 23, 26, 27, 28, 29, 30, 31]) {
      const bad = Uint8Array.from(bytes);
      bad[bit >> 3]! ^= 1 << (bit & 7);
      t.is(codeOf(() => genz.decode(bad)), 'EPCRC', `${v.class} bit ${bit.toString()}`);
    }
  }
});

test('any other flipped bit is an ECRC error', (t) => {
  const pcrcBits = new Set([5, 6, 7, 12, 13, 14, 15, 19, 20, 21, 22, 23, 26, 27, 28, 29, 30, 31]);
  for (const v of VECTORS) {
    const bytes = fromHex(v.hex);
    for (let bit = 0; bit < bytes.length * 8; bit++) {
      if (pcrcBits.has(bit)) continue;
      const bad = Uint8Array.from(bytes);
      bad[bit >> 3]! ^= 1 << (bit & 7);
      t.is(codeOf(() => genz.decode(bad)), 'EECRC', `${v.class} bit ${bit.toString()}`);
    }
  }
});

test('OpClasses other than Core64, Control and Atomic1 are refused by name', (t) => {
  const ack = fromHex(vector('Control.StandaloneAck').hex);
  for (const [ocl, name] of [[0x03, 'LDM1'], [0x05, 'Adv2'], [0x06, 'reserved'], [0x14, 'DR'], [0x16, 'Multicast'], [0x1f, 'Vendor7']] as const) {
    const bytes = reseal(setBits(ack, 1, 3, 5, ocl));
    const e = t.throws(() => genz.decode(bytes), { instanceOf: genz.GenZPacketError });
    t.is(e?.code, 'EOPCLASS');
    t.true(e?.message.includes(name), e?.message);
  }
});

test('OpCodes the codec does not speak are refused within a known OpClass', (t) => {
  const ack = fromHex(vector('Control.StandaloneAck').hex);
  const withOpCode = (bytes: Uint8Array, op: number) => reseal(setBits(setBits(bytes, 0, 24, 2, op & 3), 1, 0, 3, op >> 2));
  t.is(codeOf(() => genz.decode(withOpCode(ack, genz.ControlOpCode.Interrupt))), 'EOPCODE');
  t.is(codeOf(() => genz.decode(withOpCode(ack, genz.ControlOpCode.WriteMSG))), 'EOPCODE');
  const core64 = reseal(setBits(ack, 1, 3, 5, genz.OpClass.Core64));
  t.is(genz.decode(core64).class, 'Core64.StandaloneAck');
  t.is(codeOf(() => genz.decode(withOpCode(core64, genz.ControlOpCode.UnsolicitedEvent))), 'EOPCODE');
  // Atomic1: famez lays out Add, Swap, CAS and AtomicResultsResponse only.
  const atomic = reseal(setBits(ack, 1, 3, 5, genz.OpClass.Atomic1));
  for (const op of [genz.Atomic1OpCode.AtomicResponse, genz.Atomic1OpCode.Sum, 0x08, genz.ControlOpCode.Read]) {
    const e = t.throws(() => genz.decode(withOpCode(atomic, op)), { instanceOf: genz.GenZPacketError });
    t.is(e?.code, 'EOPCODE');
    t.true(e?.message.includes('Atomic1'), e?.message);
  }
});

test('a LEN that does not fit the class and its flags is refused', (t) => {
  // LEN below any explicit packet, with a valid PCRC.
  t.is(codeOf(() => genz.decode(reseal(setLEN(fromHex(vector('Control.StandaloneAck').hex), 3)).subarray(0, 12))), 'ELEN');
  // Core64 Read claiming no RKey (RK = 0) while LEN counts one.
  t.is(codeOf(() => genz.decode(reseal(setBits(fromHex(vector('Core64.Read').hex), 2, 22, 1, 0)))), 'ELEN');
  // Control Read claiming GC = 0 and so one dword too many.
  t.is(codeOf(() => genz.decode(reseal(setBits(fromHex(vector('Control.Read').hex), 2, 17, 1, 0)))), 'ELEN');
  // A StandaloneAck one dword long.
  const ack = fromHex(vector('Control.StandaloneAck').hex);
  const longer = new Uint8Array([...ack.subarray(0, 12), 0, 0, 0, 0, ...ack.subarray(12)]);
  t.is(codeOf(() => genz.decode(reseal(setLEN(longer, 5)))), 'ELEN');
  // An UnsolicitedEvent claiming NH = 1 without the four dwords.
  t.is(codeOf(() => genz.decode(reseal(setBits(fromHex(vector('Control.UnsolicitedEvent').hex), 2, 18, 1, 1)))), 'ELEN');
  // A Control Write with no payload but PadCNT 3.
  const empty = genz.encode({ class: 'Control.Write', Addr: 0xc0n });
  const last = empty.length / 4 - 1;
  t.is(codeOf(() => genz.decode(reseal(setBits(empty, last, 0, 2, 3)))), 'ELEN');
});

test('decode refuses what is not bytes, encode what is not a packet', (t) => {
  t.is(codeOf(() => genz.decode('8500001c' as unknown as Uint8Array)), 'EINPUT');
  t.is(codeOf(() => genz.decode([0x85, 0, 0, 0x1c] as unknown as Uint8Array)), 'EINPUT');
  t.is(codeOf(() => genz.encode(null as unknown as genz.PacketInput)), 'EINPUT');
  t.is(codeOf(() => genz.encode({ class: 'Atomic1.Sum' } as unknown as genz.PacketInput)), 'ECLASS');
  t.is(codeOf(() => genz.encode({} as unknown as genz.PacketInput)), 'ECLASS');
});

test('encode refuses fields out of range, of the wrong type, or unknown', (t) => {
  const bad = (p: Record<string, unknown>) => codeOf(() => genz.encode(p as unknown as genz.PacketInput));
  const ack = { class: 'Control.StandaloneAck' };
  t.is(bad({ ...ack, DCID: 4096 }), 'EFIELD');
  t.is(bad({ ...ack, Tag: -1 }), 'EFIELD');
  t.is(bad({ ...ack, VC: 1.5 }), 'EFIELD');
  t.is(bad({ ...ack, RS: 2048 }), 'EFIELD');
  t.is(bad({ ...ack, Reason: '6' }), 'EFIELD');
  t.is(bad({ ...ack, Reson: 6 }), 'EFIELD', 'a misspelt field is not ignored');
  t.is(bad({ ...ack, payload: new Uint8Array(4) }), 'EFIELD', 'no payload in a StandaloneAck');
  t.is(bad({ ...ack, RKey: 1 }), 'EFIELD', 'no RKey in a StandaloneAck');
  t.is(bad({ ...ack, GC: 0, DSID: 1 }), 'EFIELD', 'DSID needs GC');
  t.is(bad({ ...ack, GC: 2 }), 'EFIELD');
  t.is(bad({ ...ack, OpCode: 4 }), 'EFIELD');
  t.is(bad({ ...ack, OCL: 0 }), 'EFIELD');
  t.is(bad({ class: 'Core64.Read', RK: 0, RKey: 5 }), 'EFIELD', 'RKey needs RK');
  t.is(bad({ class: 'Core64.Read', Addr: 5 }), 'EFIELD', 'Addr is a bigint');
  t.is(bad({ class: 'Core64.Read', Addr: 1n << 64n }), 'EFIELD');
  t.is(bad({ class: 'Control.Read', Addr: 1n << 52n }), 'EFIELD', 'a Control address has 52 bits');
  t.is(bad({ class: 'Control.Read', MGRUUID: 'not-a-uuid' }), 'EFIELD');
  t.is(bad({ class: 'Control.Write', payload: [1, 2, 3] }), 'EFIELD');
  t.is(bad({ class: 'Control.Write', payload: new Uint8Array(3), PadCNT: 0 }), 'EFIELD');
});

test('encode refuses a LEN, PCRC or ECRC that contradicts the packet', (t) => {
  const v = packetOf(vector('Control.StandaloneAck'));
  t.is(codeOf(() => genz.encode({ ...v, LEN: 5 })), 'ELEN');
  t.is(codeOf(() => genz.encode({ ...v, PCRC: v.PCRC ^ 1 })), 'EPCRC');
  t.is(codeOf(() => genz.encode({ ...v, ECRC: v.ECRC ^ 1 })), 'EECRC');
  t.is(codeOf(() => genz.encode({ ...v, Tag: 9 })), 'EECRC', 'an edited packet with a stale ECRC');
  t.is(toHex(genz.encode({ ...v, ECRC: undefined })), vector('Control.StandaloneAck').hex);
});

test('encode refuses a payload too long for LEN', (t) => {
  // Control Write: 10 fixed dwords + 117 = 127, the most LEN holds.
  t.is(genz.encode({ class: 'Control.Write', payload: new Uint8Array(117 * 4) }).length, 127 * 4);
  t.is(codeOf(() => genz.encode({ class: 'Control.Write', payload: new Uint8Array(117 * 4 + 1) })), 'ELEN');
});

test('GC, RK and NH follow the fields they enable', (t) => {
  const p = genz.decode(genz.encode({ class: 'Core64.Read', DSID: 1, RKey: 2, NextHdr2: 3 }));
  t.like(p, { GC: 1, DSID: 1, SSID: 0, RK: 1, RKey: 2, NH: 1, NextHdr0: 0, NextHdr2: 3, LEN: 6 + 1 + 1 + 4 });
  const q = genz.decode(genz.encode({ class: 'Core64.Read', GC: 1, RK: 1, NH: 1 }));
  t.like(q, { DSID: 0, SSID: 0, RKey: 0, NextHdr3: 0, LEN: 12 });
});

test('a request is an OpCode of 4 or more; a GCID is SID above CID', (t) => {
  t.true(genz.isRequest(genz.decode(fromHex(vector('Control.Write').hex))));
  t.false(genz.isRequest(genz.decode(fromHex(vector('Control.StandaloneAck').hex))));
  t.is(genz.gcid(27, 0x123), (27 << 12) | 0x123);
  t.is(genz.gcid(0xffff, 0xfff), 0xfffffff);
});

// Where each field lands, from genz-packets.md: [dword, low bit, width] for
// each piece, with GC, RK and NH 0 and no payload. Setting one field to all
// ones must set exactly these bits (CRC bits aside).
type Where = [dword: number, bit: number, width: number][];
const HEADER_AT: Record<string, Where> = {
  DCID: [[0, 0, 5], [0, 8, 4], [0, 16, 3]],
  Tag: [[1, 8, 12]],
  SCID: [[1, 20, 12]],
  AKey: [[2, 0, 6]],
  Deadline: [[2, 6, 10]],
  ECN: [[2, 16, 1]],
  PM: [[2, 19, 1]],
};
const FIELD_AT: Record<genz.PacketClass, Record<string, Where>> = {
  'Core64.Read': {
    LP: [[2, 20, 1]], TA: [[2, 21, 1]], RDSize: [[2, 23, 9]],
    Addr: [[3, 0, 32], [4, 0, 32]],
    R0: [[5, 0, 5]], PD: [[5, 5, 1]], FPS: [[5, 6, 2]],
  },
  'Core64.Write': {
    LP: [[2, 20, 1]], TA: [[2, 21, 1]], TC: [[2, 23, 1]], NS: [[2, 24, 1]], UN: [[2, 25, 1]], PU: [[2, 26, 1]], RC: [[2, 27, 1]], MS: [[2, 28, 2]],
    Addr: [[3, 0, 32], [4, 0, 32]],
    R0: [[5, 0, 5]], PD: [[5, 5, 1]], FPS: [[5, 6, 2]],
  },
  'Core64.ReadResponse': { LP: [[2, 20, 1]], R0: [[2, 21, 3]], MS: [[2, 26, 2]], RRSPReason: [[2, 28, 4]], R1: [[3, 0, 8]] },
  'Core64.StandaloneAck': { RNR_QD: [[2, 20, 3]], RS: [[2, 23, 3], [3, 0, 8]], Reason: [[2, 26, 6]] },
  'Control.Read': {
    R0: [[2, 20, 2]], DR: [[2, 23, 1]], RDSize: [[2, 24, 8]],
    DRIface: [[3, 0, 12]], Addr: [[3, 12, 20], [4, 0, 32]],
    MGRUUID: [[5, 0, 32], [6, 0, 32], [7, 0, 32], [8, 0, 32]],
    R1: [[9, 0, 6]], FPS: [[9, 6, 2]],
  },
  'Control.Write': {
    R0: [[2, 20, 2]], DR: [[2, 23, 1]], R1: [[2, 24, 8]],
    DRIface: [[3, 0, 12]], Addr: [[3, 12, 20], [4, 0, 32]],
    MGRUUID: [[5, 0, 32], [6, 0, 32], [7, 0, 32], [8, 0, 32]],
    R2: [[9, 2, 4]], FPS: [[9, 6, 2]],
  },
  'Control.ReadResponse': { LP: [[2, 20, 1]], R0: [[2, 21, 3]], MS: [[2, 26, 2]], RRSPReason: [[2, 28, 4]], R1: [[3, 0, 8]] },
  'Control.StandaloneAck': { RNR_QD: [[2, 20, 3]], RS: [[2, 23, 3], [3, 0, 8]], Reason: [[2, 26, 6]] },
  'Control.UnsolicitedEvent': {
    CV: [[2, 20, 1]], SV: [[2, 21, 1]], IV: [[2, 22, 1]], Event: [[2, 23, 8]], R1: [[2, 31, 1]],
    RCCID: [[3, 0, 12]], IfaceID: [[3, 12, 12]], RCSID: [[3, 24, 8], [4, 0, 8]],
    R2: [[4, 8, 8]], EventID: [[4, 16, 16]], ES: [[5, 0, 32]], R3: [[6, 0, 8]],
  },
  // famez's own Atomic1 layouts (layouts.ts), not from genz-packets.md.
  'Atomic1.Add': {
    LP: [[2, 20, 1]], TA: [[2, 21, 1]], Size: [[2, 23, 4]], R0: [[2, 27, 5]],
    Addr: [[3, 0, 32], [4, 0, 32]], AddendLo: [[5, 0, 32]], AddendHi: [[6, 0, 32]], R1: [[7, 0, 8]],
  },
  'Atomic1.Swap': {
    LP: [[2, 20, 1]], TA: [[2, 21, 1]], Size: [[2, 23, 4]], R0: [[2, 27, 5]],
    Addr: [[3, 0, 32], [4, 0, 32]], SwapLo: [[5, 0, 32]], SwapHi: [[6, 0, 32]], R1: [[7, 0, 8]],
  },
  'Atomic1.CAS': {
    LP: [[2, 20, 1]], TA: [[2, 21, 1]], Size: [[2, 23, 4]], R0: [[2, 27, 5]],
    Addr: [[3, 0, 32], [4, 0, 32]], CompareLo: [[5, 0, 32]], CompareHi: [[6, 0, 32]], SwapLo: [[7, 0, 32]], SwapHi: [[8, 0, 32]], R1: [[9, 0, 8]],
  },
  'Atomic1.AtomicResultsResponse': { Size: [[2, 20, 4]], R0: [[2, 24, 8]], ResultLo: [[3, 0, 32]], ResultHi: [[4, 0, 32]], R1: [[5, 0, 8]] },
};

test('every field sits at the bits genz-packets.md gives it', (t) => {
  for (const [cls, fields] of Object.entries(FIELD_AT) as [genz.PacketClass, Record<string, Where>][]) {
    const base = genz.encode({ class: cls } as genz.PacketInput);
    const dwords = base.length / 4;
    for (const [name, where] of Object.entries({ ...HEADER_AT, ...fields })) {
      const width = where.reduce((n, [, , w]) => n + w, 0);
      const value = name === 'Addr' ? (1n << BigInt(width)) - 1n : name === 'MGRUUID' ? 'ffffffff-ffff-ffff-ffff-ffffffffffff' : 2 ** width - 1;
      const bytes = genz.encode({ class: cls, [name]: value } as unknown as genz.PacketInput);
      t.is(bytes.length, base.length, `${cls} ${name} leaves LEN alone`);
      const got: string[] = [];
      const want: string[] = [];
      for (let d = 0; d < dwords; d++) {
        let diff = (new DataView(bytes.buffer).getUint32(d * 4, true) ^ new DataView(base.buffer).getUint32(d * 4, true)) >>> 0;
        if (d === 0) diff &= 0x03ffffff; // PCRC
        if (d === dwords - 1) diff &= 0xff; // ECRC
        for (let b = 0; b < 32; b++) if ((diff >>> b) & 1) got.push(`${d.toString()}.${b.toString()}`);
      }
      for (const [d, at, w] of where) for (let b = at; b < at + w; b++) want.push(`${d.toString()}.${b.toString()}`);
      t.deepEqual(got, want.sort((a, b) => Number(a.split('.')[0]) - Number(b.split('.')[0]) || Number(a.split('.')[1]) - Number(b.split('.')[1])), `${cls} ${name}`);
    }
  }
});

test('the optional dwords sit where genz-packets.md puts them', (t) => {
  // GC right after dword 2, then RKey, and (from genz-utils) NH's four just
  // before the last dword.
  const bytes = genz.encode({ class: 'Core64.Read', DSID: 0x1111, SSID: 0x2222, RKey: 0x33333333, NextHdr0: 0x44, NextHdr3: 0x77, Addr: 0x5555555566666666n });
  const view = new DataView(bytes.buffer);
  const dw = (n: number) => view.getUint32(n * 4, true);
  t.is(bytes.length / 4, 12);
  t.is(dw(3), 0x22221111);
  t.is(dw(4), 0x33333333);
  t.is(dw(5), 0x55555555);
  t.is(dw(6), 0x66666666);
  t.deepEqual([dw(7), dw(8), dw(9), dw(10)], [0x44, 0, 0, 0x77]);
  const write = genz.encode({ class: 'Control.Write', payload: new Uint8Array([1, 2, 3, 4, 5]), NextHdr1: 9, MGRUUID: '00010203-0405-0607-0809-0a0b0c0d0e0f' });
  // 10 fixed + 2 payload + 4 NH: payload after Addr, then MGR-UUID, NH, last.
  t.is(write.length / 4, 16);
  t.deepEqual([...write.subarray(20, 28)], [1, 2, 3, 4, 5, 0, 0, 0]);
  t.deepEqual([...write.subarray(28, 44)], [...Array(16).keys()]);
  t.is(new DataView(write.buffer).getUint32(48, true), 9);
  t.is(write[60]! & 3, 3, 'PadCNT 3');
});

test('an Atomic1 request: Addr high dword first, then each 64-bit operand little-endian; GC and RKey before them', (t) => {
  const bytes = genz.encode({
    class: 'Atomic1.CAS', DSID: 1, SSID: 2, RKey: 0x33333333, Size: 8, Addr: 0x0000000100000008n,
    CompareLo: 0x44332211, CompareHi: 0x88776655, SwapLo: 0xccbbaa99, SwapHi: 0x00ffeedd,
  });
  const view = new DataView(bytes.buffer);
  t.is(bytes.length / 4, 10 + 2);
  t.is((view.getUint32(4, true) >>> 3) & 0x1f, genz.OpClass.Atomic1);
  t.is((view.getUint32(8, true) >>> 23) & 0xf, 8, 'Size');
  t.is(view.getUint32(12, true), 0x00020001);
  t.is(view.getUint32(16, true), 0x33333333);
  t.deepEqual([view.getUint32(20, true), view.getUint32(24, true)], [1, 8]);
  t.is(view.getBigUint64(28, true), 0x8877665544332211n);
  t.is(view.getBigUint64(36, true), 0x00ffeeddccbbaa99n);
  t.like(genz.decode(bytes), { class: 'Atomic1.CAS', OCL: 2, OpCode: 7, LEN: 12, RK: 1, RKey: 0x33333333, Size: 8, Addr: 0x100000008n, CompareHi: 0x88776655, SwapLo: 0xccbbaa99 });
  const answer = genz.decode(genz.encode({ class: 'Atomic1.AtomicResultsResponse', GC: 1, Size: 4, ResultLo: 0xffffffff }));
  t.like(answer, { OCL: 2, OpCode: 1, LEN: 7, Size: 4, ResultLo: 0xffffffff, ResultHi: 0 });
});

// ---- properties over random packets -------------------------------------

const HEADER = { DCID: 12, VC: 5, Tag: 12, SCID: 12, AKey: 6, Deadline: 10, ECN: 1, PM: 1 };
const READ_RESPONSE = { LP: 1, R0: 3, MS: 2, RRSPReason: 4, R1: 8 };
const STANDALONE_ACK = { RNR_QD: 3, RS: 11, Reason: 6 };
const ATOMIC_REQUEST = { LP: 1, TA: 1, Size: 4, R0: 5, R1: 8 };

interface Spec {
  OCL: number;
  OpCode: number;
  /** LEN without GC, RKey, NH and payload dwords. */
  fixed: number;
  fields: Record<string, number>;
  rk?: boolean;
  addr?: 52 | 64;
  payload?: boolean;
  uuid?: boolean;
}

const SPECS: Record<genz.PacketClass, Spec> = {
  'Core64.Read': { OCL: 0, OpCode: 0x1b, fixed: 6, rk: true, addr: 64, fields: { LP: 1, TA: 1, RDSize: 9, R0: 5, PD: 1, FPS: 2 } },
  'Core64.Write': {
    OCL: 0,
    OpCode: 0x04,
    fixed: 6,
    rk: true,
    addr: 64,
    payload: true,
    fields: { LP: 1, TA: 1, TC: 1, NS: 1, UN: 1, PU: 1, RC: 1, MS: 2, R0: 5, PD: 1, FPS: 2 },
  },
  'Core64.ReadResponse': { OCL: 0, OpCode: 0x01, fixed: 4, payload: true, fields: READ_RESPONSE },
  'Core64.StandaloneAck': { OCL: 0, OpCode: 0x00, fixed: 4, fields: STANDALONE_ACK },
  'Control.Read': { OCL: 1, OpCode: 0x1b, fixed: 10, rk: true, addr: 52, uuid: true, fields: { R0: 2, DR: 1, RDSize: 8, DRIface: 12, R1: 6, FPS: 2 } },
  'Control.Write': {
    OCL: 1,
    OpCode: 0x04,
    fixed: 10,
    rk: true,
    addr: 52,
    payload: true,
    uuid: true,
    fields: { R0: 2, DR: 1, R1: 8, DRIface: 12, R2: 4, FPS: 2 },
  },
  'Control.ReadResponse': { OCL: 1, OpCode: 0x01, fixed: 4, payload: true, fields: READ_RESPONSE },
  'Control.StandaloneAck': { OCL: 1, OpCode: 0x00, fixed: 4, fields: STANDALONE_ACK },
  'Control.UnsolicitedEvent': {
    OCL: 1,
    OpCode: 0x0a,
    fixed: 7,
    fields: { CV: 1, SV: 1, IV: 1, Event: 8, R1: 1, RCCID: 12, IfaceID: 12, RCSID: 16, R2: 8, EventID: 16, ES: 32, R3: 8 },
  },
  'Atomic1.Add': { OCL: 2, OpCode: 0x04, fixed: 8, rk: true, addr: 64, fields: { ...ATOMIC_REQUEST, AddendLo: 32, AddendHi: 32 } },
  'Atomic1.Swap': { OCL: 2, OpCode: 0x06, fixed: 8, rk: true, addr: 64, fields: { ...ATOMIC_REQUEST, SwapLo: 32, SwapHi: 32 } },
  'Atomic1.CAS': { OCL: 2, OpCode: 0x07, fixed: 10, rk: true, addr: 64, fields: { ...ATOMIC_REQUEST, CompareLo: 32, CompareHi: 32, SwapLo: 32, SwapHi: 32 } },
  'Atomic1.AtomicResultsResponse': { OCL: 2, OpCode: 0x01, fixed: 6, fields: { Size: 4, R0: 8, ResultLo: 32, ResultHi: 32, R1: 8 } },
};

const bits = (width: number) => fc.integer({ min: 0, max: 2 ** width - 1 });
const record = (widths: Record<string, number>) =>
  fc.record(Object.fromEntries(Object.entries(widths).map(([k, w]) => [k, bits(w)])) as Record<string, fc.Arbitrary<number>>);

/** A random packet of class `cls` without the computed fields. */
function packetInput(cls: genz.PacketClass): fc.Arbitrary<Record<string, unknown>> {
  const spec = SPECS[cls];
  return fc
    .record({
      header: record(HEADER),
      fields: record(spec.fields),
      gc: fc.option(record({ DSID: 16, SSID: 16 }), { nil: undefined }),
      rkey: spec.rk ? fc.option(bits(32), { nil: undefined }) : fc.constant(undefined),
      nh: fc.option(record({ NextHdr0: 32, NextHdr1: 32, NextHdr2: 32, NextHdr3: 32 }), { nil: undefined }),
      addr: spec.addr ? fc.bigInt({ min: 0n, max: (1n << BigInt(spec.addr)) - 1n }) : fc.constant(undefined),
      uuid: spec.uuid ? fc.uuid() : fc.constant(undefined),
      payload: spec.payload ? fc.uint8Array({ maxLength: 256 }) : fc.constant(undefined),
    })
    .map(({ header, fields, gc, rkey, nh, addr, uuid, payload }) => {
      const p: Record<string, unknown> = { class: cls, ...header, ...fields, GC: gc ? 1 : 0, NH: nh ? 1 : 0, ...gc, ...nh };
      if (spec.rk) p['RK'] = rkey === undefined ? 0 : 1;
      if (rkey !== undefined) p['RKey'] = rkey;
      if (addr !== undefined) p['Addr'] = addr;
      if (uuid !== undefined) p['MGRUUID'] = uuid;
      if (payload !== undefined) p['payload'] = payload;
      return p;
    });
}

/** The whole packet: `p` and what the wire adds, computed from the spec. */
function complete(p: Record<string, unknown>, bytes: Uint8Array): Record<string, unknown> {
  const spec = SPECS[p['class'] as genz.PacketClass];
  const payload = (p['payload'] as Uint8Array | undefined) ?? new Uint8Array(0);
  const LEN = spec.fixed + (p['GC'] as number) + (p['RKey'] === undefined ? 0 : 1) + 4 * (p['NH'] as number) + Math.ceil(payload.length / 4);
  const full: Record<string, unknown> = { ...p, LEN, OpCode: spec.OpCode, OCL: spec.OCL, PCRC: genz.pcrc(p['VC'] as number, LEN) };
  if (spec.payload) full['PadCNT'] = (4 - (payload.length % 4)) % 4;
  full['ECRC'] = genz.ecrc(bytes.subarray(0, LEN * 4 - 3));
  return full;
}

const CLASSES = Object.keys(SPECS) as genz.PacketClass[];
const anyPacket = fc.constantFrom(...CLASSES).chain(packetInput);

for (const cls of CLASSES) {
  test(`${cls}: decode(encode(p)) is p, for random packets`, (t) => {
    fc.assert(
      fc.property(packetInput(cls), (p) => {
        const bytes = genz.encode(p as unknown as genz.PacketInput);
        const full = complete(p, bytes);
        assert.equal(bytes.length, (full['LEN'] as number) * 4);
        assert.deepStrictEqual(genz.decode(bytes), full);
        // The whole packet, computed fields included, goes through unchanged.
        assert.deepStrictEqual(genz.decode(genz.encode(full as unknown as genz.PacketInput)), full);
        assert.deepStrictEqual(genz.encode(full as unknown as genz.PacketInput), bytes);
      }),
      { numRuns: 300 },
    );
    t.pass();
  });
}

test('one flipped bit anywhere in a random packet is caught by a CRC', (t) => {
  fc.assert(
    fc.property(anyPacket, fc.nat(), (p, n) => {
      const bytes = genz.encode(p as unknown as genz.PacketInput);
      const bit = n % (bytes.length * 8);
      bytes[bit >> 3]! ^= 1 << (bit & 7);
      assert.ok(['EPCRC', 'EECRC'].includes(codeOf(() => genz.decode(bytes))));
    }),
    { numRuns: 1000 },
  );
  t.pass();
});

test('a random packet cut short is refused as truncated', (t) => {
  fc.assert(
    fc.property(anyPacket, fc.nat(), (p, n) => {
      const bytes = genz.encode(p as unknown as genz.PacketInput);
      assert.equal(codeOf(() => genz.decode(bytes.subarray(0, n % bytes.length))), 'ETRUNC');
    }),
    { numRuns: 500 },
  );
  t.pass();
});
