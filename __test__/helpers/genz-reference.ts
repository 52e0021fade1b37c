// The Gen-Z packet codec and CRCs as they were before the fast paths of
// ts/genz/packets.ts and ts/genz/crc.ts (commit f9dea2c), kept verbatim as
// the reference those must match byte for byte, error for error
// (__test__/genz-fast.test.ts); since then only the list of OpClasses in
// EOPCLASS's message grew (Atomic1, famez's own layouts: layouts.ts). Not for
// use outside the tests.
import { opClassName } from '../../ts/genz/codes.js';
import { GenZPacketError } from '../../ts/genz/packets.js';
import {
  LAYOUTS,
  LAYOUT_BY_CLASS,
  LAYOUT_BY_CODE,
  fieldWidths,
  fixedDwords,
  partsOf,
  type Layout,
  type Part,
} from '../../ts/genz/layouts.js';
import type { Packet, PacketInput } from '../../ts/genz/packet-types.js';

/** PCRC nibble table: reflected CRC-6, polynomial 0x2f (0x3d reflected). */
const PCRC_TABLE = [0x00, 0x16, 0x2c, 0x3a, 0x23, 0x35, 0x0f, 0x19, 0x3d, 0x2b, 0x11, 0x07, 0x1e, 0x08, 0x32, 0x24];

/** The 6-bit PCRC of the 12-bit value `VC << 7 | LEN`, four bits at a time,
 * lowest nibble first; initial value and final XOR 0x3f. */
export function referencePcrc(VC: number, LEN: number): number {
  const data = ((VC & 0x1f) << 7) | (LEN & 0x7f);
  let crc = 0x3f;
  for (let shift = 0; shift < 12; shift += 4) {
    crc = PCRC_TABLE[(crc ^ (data >>> shift)) & 0x0f]! ^ (crc >>> 4);
  }
  return (crc ^ 0x3f) & 0x3f;
}

/** 0x5bc4f5 with its 24 bits reversed, for the right-shifting form. */
const ECRC_POLY_REFLECTED = reflect24(0x5bc4f5);

function reflect24(value: number): number {
  let out = 0;
  for (let bit = 0; bit < 24; bit++) if (value & (1 << bit)) out |= 1 << (23 - bit);
  return out;
}

const ECRC_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let crc = n;
    for (let k = 0; k < 8; k++) crc = crc & 1 ? (crc >>> 1) ^ ECRC_POLY_REFLECTED : crc >>> 1;
    table[n] = crc;
  }
  return table;
})();

/** The 24-bit ECRC of `bytes`: reflected CRC-24, polynomial 0x5bc4f5,
 * initial value and final XOR 0xffffff. For a packet, pass every byte but
 * the top three of its last dword. */
export function referenceEcrc(bytes: Uint8Array): number {
  let crc = 0xffffff;
  for (let i = 0; i < bytes.length; i++) crc = ECRC_TABLE[(crc ^ bytes[i]!) & 0xff]! ^ (crc >>> 8);
  return (crc ^ 0xffffff) & 0xffffff;
}

/** Largest LEN (7 bits), in dwords. */
const MAX_LEN = 127;

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const NIL_UUID = '00000000-0000-0000-0000-000000000000';
const DECODED_OPCLASSES = new Set(LAYOUTS.map((l) => l.OCL));
const NEXT_HDR = ['NextHdr0', 'NextHdr1', 'NextHdr2', 'NextHdr3'] as const;

interface Shape {
  parts: Part[];
  fixed: number;
  widths: Map<string, number>;
}

/** Parts and widths per (layout, GC, RK, NH), built once. */
const shapes = new Map<string, Shape>();
function shapeOf(l: Layout, GC: boolean, RK: boolean, NH: boolean): Shape {
  const key = `${l.class}/${GC ? 1 : 0}${RK ? 1 : 0}${NH ? 1 : 0}`;
  let shape = shapes.get(key);
  if (!shape) {
    const parts = partsOf(l, GC, RK, NH);
    shape = { parts, fixed: fixedDwords(parts), widths: fieldWidths(parts) };
    shapes.set(key, shape);
  }
  return shape;
}

/** Every key a packet of this layout may carry, whatever its flags. */
const allowedKeys = new Map<Layout, Set<string>>();
function keysOf(l: Layout): Set<string> {
  let keys = allowedKeys.get(l);
  if (!keys) {
    keys = new Set(['class', ...shapeOf(l, true, l.rk, true).widths.keys()]);
    if (l.addrBits) keys.add('Addr');
    if (l.payload) keys.add('payload');
    if (l.uuid) keys.add('MGRUUID');
    allowedKeys.set(l, keys);
  }
  return keys;
}

function hex(n: number, digits = 2): string {
  return `0x${n.toString(16).padStart(digits, '0')}`;
}

function fieldError(cls: string, message: string): GenZPacketError {
  return new GenZPacketError('EFIELD', `${cls}: ${message}`);
}

/** A flag: given (0 or 1), else 1 when any field it enables is given. */
function flagOf(input: Record<string, unknown>, cls: string, flag: string, enables: readonly string[]): boolean {
  const given = enables.filter((name) => input[name] !== undefined);
  const value = input[flag];
  if (value === undefined) return given.length > 0;
  if (value !== 0 && value !== 1) throw fieldError(cls, `${flag} must be 0 or 1, not ${String(value)}`);
  if (value === 0 && given.length > 0) throw fieldError(cls, `${given.join(', ')} given but ${flag} is 0`);
  return value === 1;
}

export function referenceEncode(packet: PacketInput): Uint8Array {
  if (typeof packet !== 'object' || packet === null) throw new GenZPacketError('EINPUT', 'encode takes a packet object');
  const input = packet as unknown as Record<string, unknown>;
  const cls = input['class'];
  const l = typeof cls === 'string' ? LAYOUT_BY_CLASS.get(cls) : undefined;
  if (!l) {
    const known = [...LAYOUT_BY_CLASS.keys()].join(', ');
    throw new GenZPacketError('ECLASS', `unknown packet class ${JSON.stringify(cls)}; known: ${known}`);
  }
  const name = l.class;
  const keys = keysOf(l);
  for (const key of Object.keys(input)) {
    if (!keys.has(key) && input[key] !== undefined) throw fieldError(name, `unknown field ${key}`);
  }

  const GC = flagOf(input, name, 'GC', ['DSID', 'SSID']);
  const RK = l.rk && flagOf(input, name, 'RK', ['RKey']);
  const NH = flagOf(input, name, 'NH', NEXT_HDR);
  const shape = shapeOf(l, GC, RK, NH);

  let payload: Uint8Array = new Uint8Array(0);
  if (l.payload && input['payload'] !== undefined) {
    if (!(input['payload'] instanceof Uint8Array)) throw fieldError(name, 'payload must be a Uint8Array');
    payload = input['payload'];
  }
  const payDwords = Math.ceil(payload.length / 4);
  const LEN = shape.fixed + payDwords;
  if (LEN > MAX_LEN) {
    throw new GenZPacketError('ELEN', `${name}: ${payload.length.toString()} payload bytes make ${LEN.toString()} dwords; LEN holds at most ${MAX_LEN.toString()}`);
  }

  const values = new Map<string, number>();
  for (const [field, width] of shape.widths) {
    const value = input[field] ?? 0;
    if (typeof value !== 'number' || !Number.isInteger(value) || value < 0 || value >= 2 ** width) {
      throw fieldError(name, `${field} must be an integer in 0..${(2 ** width - 1).toString()}, not ${String(value)}`);
    }
    values.set(field, value);
  }
  const computed: Record<string, number> = {
    LEN,
    OpCode: l.OpCode,
    OCL: l.OCL,
    PadCNT: (4 - (payload.length % 4)) % 4,
    PCRC: referencePcrc(values.get('VC')!, LEN),
  };
  for (const [field, value] of Object.entries(computed)) {
    if (!shape.widths.has(field)) continue;
    const given = input[field];
    if (given !== undefined && given !== value) {
      const code = field === 'LEN' ? 'ELEN' : field === 'PCRC' ? 'EPCRC' : 'EFIELD';
      throw new GenZPacketError(code, `${name}: ${field} is ${String(given)} but the packet's ${field} is ${value.toString()}; omit it to have it computed`);
    }
    values.set(field, value);
  }
  values.set('GC', GC ? 1 : 0);
  values.set('NH', NH ? 1 : 0);
  if (l.rk) values.set('RK', RK ? 1 : 0);

  let Addr = 0n;
  if (l.addrBits) {
    const given = input['Addr'] ?? 0n;
    if (typeof given !== 'bigint' || given < 0n || given >= 1n << BigInt(l.addrBits)) {
      throw fieldError(name, `Addr must be a bigint in 0..2^${l.addrBits.toString()}-1, not ${String(given)}`);
    }
    Addr = given;
  }
  let uuid = NIL_UUID;
  if (l.uuid && input['MGRUUID'] !== undefined) {
    const given = input['MGRUUID'];
    if (typeof given !== 'string' || !UUID_RE.test(given)) throw fieldError(name, `MGRUUID must be a UUID string, not ${String(given)}`);
    uuid = given;
  }

  const bytes = new Uint8Array(LEN * 4);
  const view = new DataView(bytes.buffer);
  let offset = 0;
  for (const part of shape.parts) {
    if (part.t === 'payload') {
      bytes.set(payload, offset);
      offset += payDwords * 4;
    } else if (part.t === 'uuid') {
      const hexDigits = uuid.replace(/-/g, '');
      for (let i = 0; i < 16; i++) bytes[offset + i] = parseInt(hexDigits.slice(i * 2, i * 2 + 2), 16);
      offset += 16;
    } else {
      let word = 0;
      let bit = 0;
      for (const piece of part.pieces) {
        const mask = piece.width === 32 ? 0xffffffff : (1 << piece.width) - 1;
        const bits =
          piece.name === 'Addr'
            ? Number((Addr >> BigInt(piece.shift)) & BigInt(mask))
            : (values.get(piece.name)! >>> piece.shift) & mask;
        word |= bits << bit;
        bit += piece.width;
      }
      view.setUint32(offset, word >>> 0, true);
      offset += 4;
    }
  }

  const sum = referenceEcrc(bytes.subarray(0, bytes.length - 3));
  if (input['ECRC'] !== undefined && input['ECRC'] !== sum) {
    throw new GenZPacketError('EECRC', `${name}: ECRC is ${String(input['ECRC'])} but the packet's ECRC is ${sum.toString()}; omit it to have it computed`);
  }
  const last = bytes.length - 4;
  view.setUint32(last, ((view.getUint32(last, true) & 0xff) | (sum << 8)) >>> 0, true);
  return bytes;
}

function field(word: number, from: number, width: number): number {
  return width === 32 ? word >>> 0 : (word >>> from) & ((1 << width) - 1);
}

export function referenceDecode(bytes: Uint8Array): Packet {
  if (!(bytes instanceof Uint8Array)) throw new GenZPacketError('EINPUT', 'decode takes a Uint8Array');
  if (bytes.length < 4) {
    throw new GenZPacketError('ETRUNC', `${bytes.length.toString()} bytes: too short for the first dword of a packet`);
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const d0 = view.getUint32(0, true);
  const LEN = field(d0, 5, 3) | (field(d0, 12, 4) << 3);
  const VC = field(d0, 19, 5);
  const PCRC = field(d0, 26, 6);
  const expectedPcrc = referencePcrc(VC, LEN);
  if (PCRC !== expectedPcrc) {
    throw new GenZPacketError('EPCRC', `PCRC ${hex(PCRC)} does not match VC ${VC.toString()}, LEN ${LEN.toString()} (expected ${hex(expectedPcrc)})`);
  }
  if (LEN < 4) throw new GenZPacketError('ELEN', `LEN ${LEN.toString()} is shorter than any explicit packet (4 dwords)`);
  if (bytes.length < LEN * 4) {
    throw new GenZPacketError('ETRUNC', `LEN ${LEN.toString()} needs ${(LEN * 4).toString()} bytes, got ${bytes.length.toString()}`);
  }
  if (bytes.length > LEN * 4) {
    throw new GenZPacketError('ETRAILING', `${(bytes.length - LEN * 4).toString()} bytes after the ${(LEN * 4).toString()} that LEN ${LEN.toString()} covers`);
  }
  const last = view.getUint32(bytes.length - 4, true);
  const ECRC = last >>> 8;
  const expectedEcrc = referenceEcrc(bytes.subarray(0, bytes.length - 3));
  if (ECRC !== expectedEcrc) {
    throw new GenZPacketError('EECRC', `ECRC ${hex(ECRC, 6)} does not match the packet (expected ${hex(expectedEcrc, 6)})`);
  }

  const d1 = view.getUint32(4, true);
  const d2 = view.getUint32(8, true);
  const OCL = field(d1, 3, 5);
  const OpCode = field(d0, 24, 2) | (field(d1, 0, 3) << 2);
  const l = LAYOUT_BY_CODE.get((OCL << 5) | OpCode);
  if (!l) {
    const oclName = opClassName(OCL) ?? 'reserved';
    if (!DECODED_OPCLASSES.has(OCL)) {
      throw new GenZPacketError('EOPCLASS', `OpClass ${oclName} (${hex(OCL)}) is not one this codec decodes (Core64, Control, Atomic1)`);
    }
    throw new GenZPacketError('EOPCODE', `OpCode ${hex(OpCode)} of OpClass ${oclName} is not one this codec decodes`);
  }
  const GC = field(d2, 17, 1) === 1;
  const NH = field(d2, 18, 1) === 1;
  const RK = l.rkBit >= 0 && field(d2, l.rkBit, 1) === 1;
  const shape = shapeOf(l, GC, RK, NH);
  const payDwords = LEN - shape.fixed;
  if (payDwords < 0 || (!l.payload && payDwords !== 0)) {
    const flags = `GC ${GC ? 1 : 0}${l.rk ? `, RK ${RK ? 1 : 0}` : ''}, NH ${NH ? 1 : 0}`;
    const want = l.payload ? `at least ${shape.fixed.toString()}` : shape.fixed.toString();
    throw new GenZPacketError('ELEN', `${l.class} with ${flags} is ${want} dwords, but LEN is ${LEN.toString()}`);
  }

  const out: Record<string, unknown> = { class: l.class };
  let Addr = 0n;
  let payloadAt = -1;
  let offset = 0;
  for (const part of shape.parts) {
    if (part.t === 'payload') {
      payloadAt = offset;
      offset += payDwords * 4;
      out['payload'] = undefined; // keep the wire order of keys
    } else if (part.t === 'uuid') {
      let h = '';
      for (let i = 0; i < 16; i++) h += bytes[offset + i]!.toString(16).padStart(2, '0');
      out['MGRUUID'] = `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
      offset += 16;
    } else {
      const word = view.getUint32(offset, true);
      let bit = 0;
      for (const piece of part.pieces) {
        const bits = field(word, bit, piece.width);
        bit += piece.width;
        if (piece.name === 'Addr') {
          Addr |= BigInt(bits) << BigInt(piece.shift);
          out['Addr'] = Addr;
        } else {
          out[piece.name] = (((out[piece.name] as number | undefined) ?? 0) + bits * 2 ** piece.shift);
        }
      }
      offset += 4;
    }
  }
  if (l.payload) {
    const PadCNT = out['PadCNT'] as number;
    const length = payDwords * 4 - PadCNT;
    if (length < 0) {
      throw new GenZPacketError('ELEN', `${l.class}: PadCNT ${PadCNT.toString()} is more than the ${(payDwords * 4).toString()} payload bytes`);
    }
    const payload = new Uint8Array(length);
    payload.set(bytes.subarray(payloadAt, payloadAt + length));
    out['payload'] = payload;
  }
  return out as unknown as Packet;
}
