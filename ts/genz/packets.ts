// Binary explicit Gen-Z packets (genz-packets.md): `encode` turns a plain
// object named by its class ('Control.Write') into wire bytes, filling LEN,
// OpCode, OCL, PadCNT, PCRC and ECRC; `decode` does the reverse and checks
// everything the wire can get wrong. No I/O; the only state is a cache of
// compiled layouts.
import { FamezError } from '../errors.js';
import { opClassName } from './codes.js';
import { ecrcTo, pcrc } from './crc.js';
import { LAYOUTS, fieldWidths, fixedDwords, partsOf, type Layout } from './layouts.js';

import type { Packet, PacketInput } from './packet-types.js';

export type {
  Atomic1Add,
  Atomic1AtomicResultsResponse,
  Atomic1CAS,
  Atomic1Swap,
  ControlRead,
  ControlReadResponse,
  ControlStandaloneAck,
  ControlUnsolicitedEvent,
  ControlWrite,
  Core64Read,
  Core64ReadResponse,
  Core64StandaloneAck,
  Core64Write,
  ExplicitHeader,
  Packet,
  PacketInput,
  PacketOf,
} from './packet-types.js';
export type { PacketClass } from './layouts.js';

export type GenZPacketErrorCode =
  /** Fewer bytes than LEN says (or than one dword). */
  | 'ETRUNC'
  /** More bytes than LEN says. */
  | 'ETRAILING'
  /** LEN impossible for the class and its GC/RK/NH flags, PadCNT larger than
   * the payload, or a packet too long for LEN's 7 bits. */
  | 'ELEN'
  | 'EPCRC'
  | 'EECRC'
  /** An OpClass this codec does not decode. */
  | 'EOPCLASS'
  /** An OpCode this codec does not decode within a known OpClass. */
  | 'EOPCODE'
  /** encode: a class name this codec does not know. */
  | 'ECLASS'
  /** encode: a field out of range, of the wrong type, unknown to the class,
   * or contradicting what encode computes. */
  | 'EFIELD'
  /** The argument is not a Uint8Array (decode) or an object (encode). */
  | 'EINPUT';

export class GenZPacketError extends FamezError<GenZPacketErrorCode> {
  override name = 'GenZPacketError';
}

/** Gen-Z: a packet is a request when its OpCode is 4 or more. */
export function isRequest(packet: { OpCode: number }): boolean {
  return packet.OpCode >= 4;
}

/** Global component ID: SID (16 bits) above CID (12 bits). */
export function gcid(SID: number, CID: number): number {
  return SID * 0x1000 + CID;
}

/** Largest LEN (7 bits), in dwords. */
export const MAX_LEN = 127;

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const DECODED_OPCLASSES = new Set(LAYOUTS.map((l) => l.OCL));
const NEXT_HDR = ['NextHdr0', 'NextHdr1', 'NextHdr2', 'NextHdr3'] as const;

// Every packet on the multi-host path is encoded about twice and decoded
// about seven times, so both run from a Shape compiled once per (layout, GC,
// RK, NH) out of the layouts' parts: values in an array by index, dwords as
// lists of (value, bit, mask, shift) to loop over, and a generated object
// literal for a decoded packet, instead of parts, Maps, names and BigInt
// shifts per call. A shape keeps the field order of fieldWidths, which is the
// order fields are checked in and so which error a bad packet gets, and the
// wire order of first appearance, which is the order of a decoded packet's
// keys. __test__/genz-fast.test.ts holds both to the codec they replaced.

/** Bits at bit `bit` of a dword, as many as `mask` has, carrying bits
 * `shift` upward of the value at index `value` of a shape's values (its
 * fields, then Addr's low and high 32 bits). */
interface Piece {
  readonly value: number;
  readonly bit: number;
  /** `(1 << width) - 1`, as a signed 32-bit number for width 32. */
  readonly mask: number;
  readonly shift: number;
  /** `2 ** shift`. */
  readonly scale: number;
}

/** A dword of fields: its byte offset as though the payload were empty, plus
 * the payload's bytes when `late` (it comes after the payload). */
interface Dword {
  readonly at: number;
  readonly late: boolean;
  readonly pieces: readonly Piece[];
}

/** A decoded packet's keys after 'class', in wire order. */
type Key =
  | { readonly t: 'field'; readonly name: string; readonly value: number }
  | { readonly t: 'Addr' }
  | { readonly t: 'payload' }
  | { readonly t: 'uuid' };

interface Shape {
  readonly layout: Layout;
  /** Dwords of everything but the payload. */
  readonly fixed: number;
  /** Numeric fields (Addr aside), in fieldWidths order; value i is names[i]. */
  readonly names: readonly string[];
  /** `2 ** width` of each, its bound (a variable power is slow per call). */
  readonly limits: readonly number[];
  /** Index of each field encode computes or sets, -1 where the shape has none. */
  readonly LEN: number;
  readonly OpCode: number;
  readonly OCL: number;
  readonly PadCNT: number;
  readonly PCRC: number;
  readonly VC: number;
  readonly GC: number;
  readonly NH: number;
  readonly RK: number;
  /** Values indices of Addr's low and high 32 bits. */
  readonly addrLo: number;
  readonly addrHi: number;
  readonly dwords: readonly Dword[];
  /** Byte offset of the payload, or -1. */
  readonly payloadAt: number;
  /** Byte offset of the MGR-UUID as though the payload were empty, or -1. */
  readonly uuidAt: number;
  readonly uuidLate: boolean;
  readonly keys: readonly Key[];
  /** Makes a decoded packet of this shape from its values. */
  readonly build: Build;
}

/** A decoded packet from its numeric values (in Shape order), Addr, payload
 * and MGR-UUID. */
type Build = (values: readonly number[], Addr: bigint, payload: Uint8Array | undefined, MGRUUID: string | undefined) => Packet;

const IDENTIFIER = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** A Build that is one object literal with this shape's keys in wire order.
 * Generated, because a decoded packet has some 30 keys and V8 makes them
 * slowly one at a time when the name is not in the code (`out[name] = v`, a
 * megamorphic keyed store each, some 15 ns, and past a dozen such keys the
 * object turns into a slow dictionary for every reader of the packet too); a
 * literal makes the whole object, fast, in one go. The names come from
 * layouts.ts, never from a packet, and are checked to be plain identifiers. */
function builderOf(l: Layout, keys: readonly Key[]): Build {
  const props = [`class: ${JSON.stringify(l.class)}`];
  for (const key of keys) {
    if (key.t === 'field') {
      if (!IDENTIFIER.test(key.name)) throw new Error(`layouts.ts: field name ${JSON.stringify(key.name)} is not an identifier`);
      props.push(`${key.name}: values[${key.value.toString()}]`);
    } else {
      props.push(key.t === 'Addr' ? 'Addr' : key.t === 'payload' ? 'payload' : 'MGRUUID');
    }
  }
  try {
    return new Function('values', 'Addr', 'payload', 'MGRUUID', `'use strict'; return { ${props.join(', ')} };`) as Build;
  } catch {
    // Code from strings is disallowed (node
    // --disallow-code-generation-from-strings): the same packet, key by key.
    return (values, Addr, payload, MGRUUID) => {
      const out: Record<string, unknown> = { class: l.class };
      for (const key of keys) {
        if (key.t === 'field') out[key.name] = values[key.value];
        else if (key.t === 'Addr') out['Addr'] = Addr;
        else if (key.t === 'payload') out['payload'] = payload;
        else out['MGRUUID'] = MGRUUID;
      }
      return out as unknown as Packet;
    };
  }
}

function compile(l: Layout, GC: boolean, RK: boolean, NH: boolean): Shape {
  const parts = partsOf(l, GC, RK, NH);
  const widths = fieldWidths(parts);
  const names = [...widths.keys()];
  const index = new Map(names.map((name, i) => [name, i]));
  const addrLo = names.length;
  const addrHi = names.length + 1;
  const dwords: Dword[] = [];
  const keys: Key[] = [];
  const seen = new Set<string>();
  let at = 0;
  let late = false;
  let payloadAt = -1;
  let uuidAt = -1;
  let uuidLate = false;
  for (const part of parts) {
    if (part.t === 'payload') {
      payloadAt = at;
      late = true;
      keys.push({ t: 'payload' });
      continue;
    }
    if (part.t === 'uuid') {
      uuidAt = at;
      uuidLate = late;
      keys.push({ t: 'uuid' });
      at += 16;
      continue;
    }
    const pieces: Piece[] = [];
    let bit = 0;
    for (const piece of part.pieces) {
      const mask = piece.width === 32 ? -1 : (1 << piece.width) - 1;
      if (piece.name === 'Addr') {
        // Addr's pieces never straddle bit 32 (genz-packets.md), so each is
        // a piece of its low or its high dword.
        const high = piece.shift >= 32;
        const shift = high ? piece.shift - 32 : piece.shift;
        pieces.push({ value: high ? addrHi : addrLo, bit, mask, shift, scale: 2 ** shift });
        if (!seen.has('Addr')) keys.push({ t: 'Addr' });
      } else {
        const value = index.get(piece.name)!;
        pieces.push({ value, bit, mask, shift: piece.shift, scale: 2 ** piece.shift });
        if (!seen.has(piece.name)) keys.push({ t: 'field', name: piece.name, value });
      }
      seen.add(piece.name);
      bit += piece.width;
    }
    dwords.push({ at, late, pieces });
    at += 4;
  }
  const indexOf = (name: string) => index.get(name) ?? -1;
  return {
    layout: l,
    fixed: fixedDwords(parts),
    names,
    limits: [...widths.values()].map((width) => 2 ** width),
    LEN: indexOf('LEN'),
    OpCode: indexOf('OpCode'),
    OCL: indexOf('OCL'),
    PadCNT: indexOf('PadCNT'),
    PCRC: indexOf('PCRC'),
    VC: indexOf('VC'),
    GC: indexOf('GC'),
    NH: indexOf('NH'),
    RK: indexOf('RK'),
    addrLo,
    addrHi,
    dwords,
    payloadAt,
    uuidAt,
    uuidLate,
    keys,
    build: builderOf(l, keys),
  };
}

/** Per layout: its shapes by GC | RK << 1 | NH << 2, compiled on first use,
 * the keys encode accepts, and the limit of Addr. */
interface Compiled {
  readonly layout: Layout;
  readonly shapes: (Shape | undefined)[];
  /** Every key a packet of this layout may carry, whatever its flags. */
  readonly keys: ReadonlySet<string>;
  /** 2 ** addrBits, or 0n. */
  readonly addrLimit: bigint;
}

function shapeOf(c: Compiled, GC: boolean, RK: boolean, NH: boolean): Shape {
  const i = (GC ? 1 : 0) | (RK ? 2 : 0) | (NH ? 4 : 0);
  return (c.shapes[i] ??= compile(c.layout, GC, RK, NH));
}

function compiled(l: Layout): Compiled {
  const keys = new Set(['class', ...fieldWidths(partsOf(l, true, l.rk, true)).keys()]);
  if (l.addrBits) keys.add('Addr');
  if (l.payload) keys.add('payload');
  if (l.uuid) keys.add('MGRUUID');
  return { layout: l, shapes: [], keys, addrLimit: l.addrBits ? 1n << BigInt(l.addrBits) : 0n };
}

const BY_CLASS: ReadonlyMap<string, Compiled> = new Map(LAYOUTS.map((l) => [l.class, compiled(l)]));
/** By `OCL << 5 | OpCode`, the 10 bits a packet names its layout with. */
const BY_CODE: readonly (Compiled | undefined)[] = (() => {
  const table = new Array<Compiled | undefined>(1 << 10).fill(undefined);
  for (const c of BY_CLASS.values()) table[(c.layout.OCL << 5) | c.layout.OpCode] = c;
  return table;
})();

/** Eight bytes to split a bigint Addr into two u32s, and join them, without
 * BigInt shifts and masks. Safe to share: nothing runs between a write to it
 * and the reads that follow. */
const ADDR = new DataView(new ArrayBuffer(8));

function u32(bytes: Uint8Array, at: number): number {
  return (bytes[at]! | (bytes[at + 1]! << 8) | (bytes[at + 2]! << 16) | (bytes[at + 3]! << 24)) >>> 0;
}

function put32(bytes: Uint8Array, at: number, word: number): void {
  bytes[at] = word;
  bytes[at + 1] = word >>> 8;
  bytes[at + 2] = word >>> 16;
  bytes[at + 3] = word >>> 24;
}

/** Two lowercase hex digits of each byte. */
const HEX = Array.from({ length: 256 }, (_, n) => n.toString(16).padStart(2, '0'));

function hex(n: number, digits = 2): string {
  return `0x${n.toString(16).padStart(digits, '0')}`;
}

function fieldError(cls: string, message: string): GenZPacketError {
  return new GenZPacketError('EFIELD', `${cls}: ${message}`);
}

/** A flag: given (0 or 1), else 1 when any field it enables is given. */
function flagOf(input: Record<string, unknown>, cls: string, flag: string, enables: readonly string[]): boolean {
  let given = false;
  for (const name of enables) if (input[name] !== undefined) given = true;
  const value = input[flag];
  if (value === undefined) return given;
  if (value !== 0 && value !== 1) throw fieldError(cls, `${flag} must be 0 or 1, not ${String(value)}`);
  if (value === 0 && given) throw fieldError(cls, `${enables.filter((name) => input[name] !== undefined).join(', ')} given but ${flag} is 0`);
  return value === 1;
}

const GC_ENABLES = ['DSID', 'SSID'] as const;
const RK_ENABLES = ['RKey'] as const;
const EMPTY = new Uint8Array(0);

/** Throws when a field encode computes is given otherwise. */
function agree(shape: Shape, input: Record<string, unknown>, at: number, value: number): void {
  if (at < 0) return;
  const field = shape.names[at]!;
  const given = input[field];
  if (given !== undefined && given !== value) {
    const code = field === 'LEN' ? 'ELEN' : field === 'PCRC' ? 'EPCRC' : 'EFIELD';
    throw new GenZPacketError(code, `${shape.layout.class}: ${field} is ${String(given)} but the packet's ${field} is ${value.toString()}; omit it to have it computed`);
  }
}

export function encode(packet: PacketInput): Uint8Array {
  if (typeof packet !== 'object' || packet === null) throw new GenZPacketError('EINPUT', 'encode takes a packet object');
  const input = packet as unknown as Record<string, unknown>;
  const cls = input['class'];
  const c = typeof cls === 'string' ? BY_CLASS.get(cls) : undefined;
  if (!c) {
    const known = [...BY_CLASS.keys()].join(', ');
    throw new GenZPacketError('ECLASS', `unknown packet class ${JSON.stringify(cls)}; known: ${known}`);
  }
  const l = c.layout;
  const name = l.class;
  for (const key of Object.keys(input)) {
    if (!c.keys.has(key) && input[key] !== undefined) throw fieldError(name, `unknown field ${key}`);
  }

  const GC = flagOf(input, name, 'GC', GC_ENABLES);
  const RK = l.rk && flagOf(input, name, 'RK', RK_ENABLES);
  const NH = flagOf(input, name, 'NH', NEXT_HDR);
  const shape = shapeOf(c, GC, RK, NH);

  let payload: Uint8Array = EMPTY;
  if (l.payload && input['payload'] !== undefined) {
    if (!(input['payload'] instanceof Uint8Array)) throw fieldError(name, 'payload must be a Uint8Array');
    payload = input['payload'];
  }
  const payDwords = Math.ceil(payload.length / 4);
  const LEN = shape.fixed + payDwords;
  if (LEN > MAX_LEN) {
    throw new GenZPacketError('ELEN', `${name}: ${payload.length.toString()} payload bytes make ${LEN.toString()} dwords; LEN holds at most ${MAX_LEN.toString()}`);
  }

  const { names, limits } = shape;
  const values = new Array<number>(names.length + 2);
  for (let i = 0; i < names.length; i++) {
    const field = names[i]!;
    const value = input[field] ?? 0;
    if (typeof value !== 'number' || !Number.isInteger(value) || value < 0 || value >= limits[i]!) {
      throw fieldError(name, `${field} must be an integer in 0..${(limits[i]! - 1).toString()}, not ${String(value)}`);
    }
    values[i] = value;
  }
  // In the order the checks have always run: LEN, OpCode, OCL, PadCNT, PCRC.
  const PCRC = pcrc(values[shape.VC]!, LEN);
  agree(shape, input, shape.LEN, LEN);
  agree(shape, input, shape.OpCode, l.OpCode);
  agree(shape, input, shape.OCL, l.OCL);
  const PadCNT = (4 - (payload.length % 4)) % 4;
  agree(shape, input, shape.PadCNT, PadCNT);
  agree(shape, input, shape.PCRC, PCRC);
  values[shape.LEN] = LEN;
  values[shape.OpCode] = l.OpCode;
  values[shape.OCL] = l.OCL;
  if (shape.PadCNT >= 0) values[shape.PadCNT] = PadCNT;
  values[shape.PCRC] = PCRC;
  values[shape.GC] = GC ? 1 : 0;
  values[shape.NH] = NH ? 1 : 0;
  if (shape.RK >= 0) values[shape.RK] = RK ? 1 : 0;

  values[shape.addrLo] = 0;
  values[shape.addrHi] = 0;
  if (l.addrBits) {
    const given = input['Addr'] ?? 0n;
    if (typeof given !== 'bigint' || given < 0n || given >= c.addrLimit) {
      throw fieldError(name, `Addr must be a bigint in 0..2^${l.addrBits.toString()}-1, not ${String(given)}`);
    }
    ADDR.setBigUint64(0, given, true);
    values[shape.addrLo] = ADDR.getUint32(0, true);
    values[shape.addrHi] = ADDR.getUint32(4, true);
  }
  let uuid: string | undefined;
  if (l.uuid && input['MGRUUID'] !== undefined) {
    const given = input['MGRUUID'];
    if (typeof given !== 'string' || !UUID_RE.test(given)) throw fieldError(name, `MGRUUID must be a UUID string, not ${String(given)}`);
    uuid = given;
  }

  const bytes = new Uint8Array(LEN * 4);
  const payBytes = payDwords * 4;
  for (const dword of shape.dwords) {
    let word = 0;
    for (const piece of dword.pieces) word |= ((values[piece.value]! >>> piece.shift) & piece.mask) << piece.bit;
    put32(bytes, dword.at + (dword.late ? payBytes : 0), word);
  }
  if (shape.payloadAt >= 0) bytes.set(payload, shape.payloadAt);
  if (uuid !== undefined) {
    // UUID_RE let through only hex digits and dashes; left out, the MGR-UUID
    // is the nil UUID, the zeros already there.
    const at = shape.uuidAt + (shape.uuidLate ? payBytes : 0);
    const digits = uuid.replace(/-/g, '');
    for (let i = 0; i < 16; i++) bytes[at + i] = parseInt(digits.slice(i * 2, i * 2 + 2), 16);
  }

  const last = bytes.length - 4;
  const sum = ecrcTo(bytes, bytes.length - 3);
  if (input['ECRC'] !== undefined && input['ECRC'] !== sum) {
    throw new GenZPacketError('EECRC', `${name}: ECRC is ${String(input['ECRC'])} but the packet's ECRC is ${sum.toString()}; omit it to have it computed`);
  }
  put32(bytes, last, (bytes[last]! | (sum << 8)) >>> 0);
  return bytes;
}

/** Decodes one explicit packet, checking it whole. `options.ecrcChecked`:
 * the caller checked this very packet's ECRC already (a link frame's
 * packetFault on receipt), so it is not computed again; every other check
 * runs. */
export function decode(bytes: Uint8Array, options?: { ecrcChecked?: boolean }): Packet {
  if (!(bytes instanceof Uint8Array)) throw new GenZPacketError('EINPUT', 'decode takes a Uint8Array');
  const n = bytes.length;
  if (n < 4) {
    throw new GenZPacketError('ETRUNC', `${n.toString()} bytes: too short for the first dword of a packet`);
  }
  const d0 = u32(bytes, 0);
  const LEN = ((d0 >>> 5) & 0x7) | (((d0 >>> 12) & 0xf) << 3);
  const VC = (d0 >>> 19) & 0x1f;
  const PCRC = d0 >>> 26;
  const expectedPcrc = pcrc(VC, LEN);
  if (PCRC !== expectedPcrc) {
    throw new GenZPacketError('EPCRC', `PCRC ${hex(PCRC)} does not match VC ${VC.toString()}, LEN ${LEN.toString()} (expected ${hex(expectedPcrc)})`);
  }
  if (LEN < 4) throw new GenZPacketError('ELEN', `LEN ${LEN.toString()} is shorter than any explicit packet (4 dwords)`);
  if (n < LEN * 4) {
    throw new GenZPacketError('ETRUNC', `LEN ${LEN.toString()} needs ${(LEN * 4).toString()} bytes, got ${n.toString()}`);
  }
  if (n > LEN * 4) {
    throw new GenZPacketError('ETRAILING', `${(n - LEN * 4).toString()} bytes after the ${(LEN * 4).toString()} that LEN ${LEN.toString()} covers`);
  }
  const ECRC = u32(bytes, n - 4) >>> 8;
  const expectedEcrc = options?.ecrcChecked === true ? ECRC : ecrcTo(bytes, n - 3);
  if (ECRC !== expectedEcrc) {
    throw new GenZPacketError('EECRC', `ECRC ${hex(ECRC, 6)} does not match the packet (expected ${hex(expectedEcrc, 6)})`);
  }

  const d1 = u32(bytes, 4);
  const d2 = u32(bytes, 8);
  const OCL = (d1 >>> 3) & 0x1f;
  const OpCode = ((d0 >>> 24) & 0x3) | ((d1 & 0x7) << 2);
  const c = BY_CODE[(OCL << 5) | OpCode];
  if (!c) {
    const oclName = opClassName(OCL) ?? 'reserved';
    if (!DECODED_OPCLASSES.has(OCL)) {
      throw new GenZPacketError('EOPCLASS', `OpClass ${oclName} (${hex(OCL)}) is not one this codec decodes (Core64, Control, Atomic1)`);
    }
    throw new GenZPacketError('EOPCODE', `OpCode ${hex(OpCode)} of OpClass ${oclName} is not one this codec decodes`);
  }
  const l = c.layout;
  const GC = ((d2 >>> 17) & 1) === 1;
  const NH = ((d2 >>> 18) & 1) === 1;
  const RK = l.rkBit >= 0 && ((d2 >>> l.rkBit) & 1) === 1;
  const shape = shapeOf(c, GC, RK, NH);
  const payDwords = LEN - shape.fixed;
  if (payDwords < 0 || (!l.payload && payDwords !== 0)) {
    const flags = `GC ${GC ? 1 : 0}${l.rk ? `, RK ${RK ? 1 : 0}` : ''}, NH ${NH ? 1 : 0}`;
    const want = l.payload ? `at least ${shape.fixed.toString()}` : shape.fixed.toString();
    throw new GenZPacketError('ELEN', `${l.class} with ${flags} is ${want} dwords, but LEN is ${LEN.toString()}`);
  }

  const payBytes = payDwords * 4;
  const values = new Array<number>(shape.names.length + 2).fill(0);
  for (const dword of shape.dwords) {
    const word = u32(bytes, dword.at + (dword.late ? payBytes : 0));
    // A piece is at most 32 bits; >>> 0 keeps one of 32 unsigned.
    for (const piece of dword.pieces) values[piece.value]! += (((word >>> piece.bit) & piece.mask) >>> 0) * piece.scale;
  }

  let Addr = 0n;
  if (l.addrBits) {
    ADDR.setUint32(0, values[shape.addrLo]!, true);
    ADDR.setUint32(4, values[shape.addrHi]!, true);
    Addr = ADDR.getBigUint64(0, true);
  }
  let MGRUUID: string | undefined;
  if (l.uuid) {
    const at = shape.uuidAt + (shape.uuidLate ? payBytes : 0);
    let h = '';
    for (let i = 0; i < 16; i++) h += HEX[bytes[at + i]!]!;
    MGRUUID = `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
  }
  let payload: Uint8Array | undefined;
  if (l.payload) {
    const PadCNT = values[shape.PadCNT]!;
    const length = payBytes - PadCNT;
    if (length < 0) {
      throw new GenZPacketError('ELEN', `${l.class}: PadCNT ${PadCNT.toString()} is more than the ${payBytes.toString()} payload bytes`);
    }
    payload = new Uint8Array(length);
    payload.set(bytes.subarray(shape.payloadAt, shape.payloadAt + length));
  }
  return shape.build(values, Addr, payload, MGRUUID);
}
