// Where every field of every supported explicit packet lives, as data: a
// packet is a list of parts (dwords of bit pieces, the payload, the MGR-UUID)
// that packets.ts walks to encode and decode. Facts from genz-packets.md; the
// place of the NH dwords (just before the last dword) from genz-utils.
//
// The Atomic1 layouts (Add, Swap, CAS, AtomicResultsResponse) are famez's
// own, not Gen-Z's: only their OpClass and OpCodes are public (genz-utils'
// opcode tables). Beyond the explicit header they are shaped like Core64
// Read: dword 2 bits 31:20 LP, TA, RK, Size (bytes: 4 or 8), R0 (5);
// [GC]; [RKey]; Addr[63:32]; Addr[31:0]; each 64-bit operand as two dwords,
// its low half first (so its eight bytes are little-endian); last dword R1
// (8), ECRC. The response carries Size and the old value (Result) the same
// way. docs/multi-host.md, "Remote fabric-attached memory", says so too.
import { Atomic1OpCode, ControlOpCode, Core64OpCode, OpClass } from './codes.js';

/** `width` bits of the logical field `name`, starting at bit `shift` of its
 * value. Pieces of a dword are listed from bit 0 upward and fill 32 bits. */
export interface Piece {
  readonly name: string;
  readonly width: number;
  readonly shift: number;
}

export type Part =
  | { readonly t: 'dword'; readonly pieces: readonly Piece[] }
  | { readonly t: 'payload' }
  | { readonly t: 'uuid' };

export type PacketClass =
  | 'Core64.Read'
  | 'Core64.Write'
  | 'Core64.ReadResponse'
  | 'Core64.StandaloneAck'
  | 'Control.Read'
  | 'Control.Write'
  | 'Control.ReadResponse'
  | 'Control.StandaloneAck'
  | 'Control.UnsolicitedEvent'
  | 'Atomic1.Add'
  | 'Atomic1.Swap'
  | 'Atomic1.CAS'
  | 'Atomic1.AtomicResultsResponse';

export interface Layout {
  readonly class: PacketClass;
  readonly OCL: number;
  readonly OpCode: number;
  /** Dword 2, bits 31:20. */
  readonly os1: readonly Piece[];
  /** Has RK, and so an optional RKey dword after the GC dword. */
  readonly rk: boolean;
  /** Bit of RK in dword 2, or -1. */
  readonly rkBit: number;
  /** Parts between the optional GC/RKey dwords and the optional NH dwords. */
  readonly body: readonly Part[];
  /** Low byte of the last dword (ECRC fills the rest). */
  readonly last: readonly Piece[];
  readonly payload: boolean;
  readonly uuid: boolean;
  /** Width of Addr in bits; 0 when the packet has none. */
  readonly addrBits: 0 | 52 | 64;
}

const p = (name: string, width: number, shift = 0): Piece => ({ name, width, shift });
const dword = (...pieces: Piece[]): Part => ({ t: 'dword', pieces });

export const HEADER_DWORD0 = [p('DCID', 5), p('LEN', 3), p('DCID', 4, 5), p('LEN', 4, 3), p('DCID', 3, 9), p('VC', 5), p('OpCode', 2), p('PCRC', 6)];
export const HEADER_DWORD1 = [p('OpCode', 3, 2), p('OCL', 5), p('Tag', 12), p('SCID', 12)];
export const HEADER_DWORD2 = [p('AKey', 6), p('Deadline', 10), p('ECN', 1), p('GC', 1), p('NH', 1), p('PM', 1)];
export const GC_DWORD = [p('DSID', 16), p('SSID', 16)];
export const RKEY_DWORD = [p('RKey', 32)];
export const NH_DWORDS = [[p('NextHdr0', 32)], [p('NextHdr1', 32)], [p('NextHdr2', 32)], [p('NextHdr3', 32)]];
export const ECRC_PIECE = p('ECRC', 24);

const core64Addr = [dword(p('Addr', 32, 32)), dword(p('Addr', 32, 0))];
const controlAddr = [dword(p('DRIface', 12), p('Addr', 20, 32)), dword(p('Addr', 32, 0))];
const payload: Part = { t: 'payload' };
const uuid: Part = { t: 'uuid' };

function layout(
  cls: PacketClass,
  OpCode: number,
  os1: Piece[],
  body: Part[],
  last: Piece[],
  addrBits: 0 | 52 | 64 = 0,
): Layout {
  const OCL = cls.startsWith('Core64.') ? OpClass.Core64 : cls.startsWith('Atomic1.') ? OpClass.Atomic1 : OpClass.Control;
  const rk = os1.findIndex((piece) => piece.name === 'RK');
  return {
    class: cls,
    OCL,
    OpCode,
    os1,
    rk: rk >= 0,
    rkBit: rk < 0 ? -1 : 20 + os1.slice(0, rk).reduce((bit, piece) => bit + piece.width, 0),
    body,
    last,
    payload: body.some((part) => part.t === 'payload'),
    uuid: body.some((part) => part.t === 'uuid'),
    addrBits,
  };
}

const readResponse = (cls: PacketClass, OpCode: number) =>
  layout(cls, OpCode, [p('LP', 1), p('R0', 3), p('PadCNT', 2), p('MS', 2), p('RRSPReason', 4)], [payload], [p('R1', 8)]);
const standaloneAck = (cls: PacketClass, OpCode: number) =>
  layout(cls, OpCode, [p('RNR_QD', 3), p('RS', 3), p('Reason', 6)], [], [p('RS', 8, 3)]);

/** famez's Atomic1 request (see the top of this file): `operands` are the
 * names of its 64-bit operands, each two dwords, low half first. */
const atomic = (cls: PacketClass, OpCode: number, operands: string[]) =>
  layout(
    cls,
    OpCode,
    [p('LP', 1), p('TA', 1), p('RK', 1), p('Size', 4), p('R0', 5)],
    [...core64Addr, ...operands.flatMap((name) => [dword(p(`${name}Lo`, 32)), dword(p(`${name}Hi`, 32))])],
    [p('R1', 8)],
    64,
  );

export const LAYOUTS: readonly Layout[] = [
  layout(
    'Core64.Read',
    Core64OpCode.Read,
    [p('LP', 1), p('TA', 1), p('RK', 1), p('RDSize', 9)],
    core64Addr,
    [p('R0', 5), p('PD', 1), p('FPS', 2)],
    64,
  ),
  layout(
    'Core64.Write',
    Core64OpCode.Write,
    [p('LP', 1), p('TA', 1), p('RK', 1), p('TC', 1), p('NS', 1), p('UN', 1), p('PU', 1), p('RC', 1), p('MS', 2), p('PadCNT', 2)],
    [...core64Addr, payload],
    [p('R0', 5), p('PD', 1), p('FPS', 2)],
    64,
  ),
  readResponse('Core64.ReadResponse', Core64OpCode.ReadResponse),
  standaloneAck('Core64.StandaloneAck', Core64OpCode.StandaloneAck),
  layout(
    'Control.Read',
    ControlOpCode.Read,
    [p('R0', 2), p('RK', 1), p('DR', 1), p('RDSize', 8)],
    [...controlAddr, uuid],
    [p('R1', 6), p('FPS', 2)],
    52,
  ),
  layout(
    'Control.Write',
    ControlOpCode.Write,
    [p('R0', 2), p('RK', 1), p('DR', 1), p('R1', 8)],
    [...controlAddr, payload, uuid],
    [p('PadCNT', 2), p('R2', 4), p('FPS', 2)],
    52,
  ),
  readResponse('Control.ReadResponse', ControlOpCode.ReadResponse),
  standaloneAck('Control.StandaloneAck', ControlOpCode.StandaloneAck),
  layout(
    'Control.UnsolicitedEvent',
    ControlOpCode.UnsolicitedEvent,
    [p('CV', 1), p('SV', 1), p('IV', 1), p('Event', 8), p('R1', 1)],
    [
      dword(p('RCCID', 12), p('IfaceID', 12), p('RCSID', 8)),
      dword(p('RCSID', 8, 8), p('R2', 8), p('EventID', 16)),
      dword(p('ES', 32)),
    ],
    [p('R3', 8)],
  ),
  atomic('Atomic1.Add', Atomic1OpCode.Add, ['Addend']),
  atomic('Atomic1.Swap', Atomic1OpCode.Swap, ['Swap']),
  atomic('Atomic1.CAS', Atomic1OpCode.CAS, ['Compare', 'Swap']),
  layout(
    'Atomic1.AtomicResultsResponse',
    Atomic1OpCode.AtomicResultsResponse,
    [p('Size', 4), p('R0', 8)],
    [dword(p('ResultLo', 32)), dword(p('ResultHi', 32))],
    [p('R1', 8)],
  ),
];

export const LAYOUT_BY_CLASS: ReadonlyMap<string, Layout> = new Map(LAYOUTS.map((l) => [l.class, l]));
export const LAYOUT_BY_CODE: ReadonlyMap<number, Layout> = new Map(LAYOUTS.map((l) => [(l.OCL << 5) | l.OpCode, l]));

/** The parts of one packet of this layout, in wire order. */
export function partsOf(l: Layout, GC: boolean, RK: boolean, NH: boolean): Part[] {
  const parts: Part[] = [dword(...HEADER_DWORD0), dword(...HEADER_DWORD1), dword(...HEADER_DWORD2, ...l.os1)];
  if (GC) parts.push(dword(...GC_DWORD));
  if (RK) parts.push(dword(...RKEY_DWORD));
  parts.push(...l.body);
  if (NH) for (const nh of NH_DWORDS) parts.push(dword(...nh));
  parts.push(dword(...l.last, ECRC_PIECE));
  return parts;
}

/** Dwords of everything but the payload. */
export function fixedDwords(parts: readonly Part[]): number {
  let n = 0;
  for (const part of parts) n += part.t === 'dword' ? 1 : part.t === 'uuid' ? 4 : 0;
  return n;
}

/** Total width of every numeric field a packet of these parts carries. */
export function fieldWidths(parts: readonly Part[]): Map<string, number> {
  const widths = new Map<string, number>();
  for (const part of parts) {
    if (part.t !== 'dword') continue;
    for (const piece of part.pieces) {
      if (piece.name === 'Addr') continue;
      widths.set(piece.name, (widths.get(piece.name) ?? 0) + piece.width);
    }
  }
  return widths;
}
