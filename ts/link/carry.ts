// Whole messages over a link as Gen-Z packets (docs/multi-host.md, "Messages
// as packets"). A message (a mailbox message, a ring message, or a switch's
// own control message to the switch at the other end) travels as one or
// more Core64 Write packets with global addressing (GC = 1: DSID:DCID is the
// destination's GCID, SSID:SCID the source's), each writing the next piece
// of the message into a famez message window at the destination:
//
//   Addr bits 63..48  0xfa3e, the window
//   Addr bits 47..40  the kind: 0 mailbox, 1 ring, 2 control
//   Addr bit  39      last piece
//   Addr bits 31..0   byte offset of this piece in the message
//   Tag               the message's number in its stream, mod 4096
//
// The link's streams are exactly once and in order per (source, destination),
// so a receiver rebuilds a message by appending pieces; anything out of
// shape (a piece whose offset is not the length so far, another tag or kind
// in the middle of a message, a message over the limit, a packet that is not
// such a write) is refused with CarryError, and the partial message dropped:
// the next piece at offset 0 starts afresh. Pure: no I/O, no state beyond
// the reassembly buffers.
import { FamezError } from '../errors.js';
import { decode, encode, GenZPacketError, MAX_LEN, type Core64Write } from '../genz/packets.js';
import { NATIVE_CRC_BYTES, packetFault } from './frame.js';
import { genzSeal } from '../native.js';
import { ecrcRange, pcrc } from '../genz/crc.js';

export type CarryErrorCode = 'EPACKET' | 'EWINDOW' | 'EORDER' | 'ETOOBIG' | 'EFIELD';

export class CarryError extends FamezError<CarryErrorCode> {
  override name = 'CarryError';
}

export const MessageKind = { mailbox: 0, ring: 1, control: 2 } as const;
export type MessageKindName = keyof typeof MessageKind;
const KIND_NAME: readonly MessageKindName[] = ['mailbox', 'ring', 'control'];

const WINDOW = 0xfa3en;
const LAST = 1n << 39n;
/** GCID 0 names "the switch at the other end of this link" (control messages); never routed. */
export const LINK_LOCAL = 0;
const GCID_LIMIT = 2 ** 28;

/** Bytes of a piece's packet besides its payload (a Core64 Write with GC = 1). */
export const HEADER_BYTES = encode({ class: 'Core64.Write', GC: 1, DSID: 0, SSID: 0, Addr: 0n, payload: new Uint8Array(0) }).length;
/** Payload bytes one piece carries at most: what LEN leaves. */
export const PIECE_BYTES = MAX_LEN * 4 - HEADER_BYTES;

/** The length in bytes of the packet at `at` (LEN x 4, from dword 0: LEN[2:0]
 * in bits 7:5, LEN[6:3] in bits 15:12); 0 past the end. */
export function packetBytes(bytes: Uint8Array, at: number): number {
  if (at + 2 > bytes.length) return 0;
  return ((bytes[at] >>> 5) | ((bytes[at + 1] >>> 4) << 3)) * 4;
}

/** Packets laid end to end (a message of pieces in one ring message), cut
 * apart by their LEN; null when they do not tile `bytes` exactly. */
export function splitPackets(bytes: Uint8Array): Uint8Array[] | null {
  const out: Uint8Array[] = [];
  for (let at = 0; at < bytes.length; ) {
    const n = packetBytes(bytes, at);
    if (n === 0 || at + n > bytes.length) return null;
    out.push(bytes.subarray(at, at + n));
    at += n;
  }
  return out;
}

/** `pieces` end to end, as few runs as fit in `max` bytes each, in order
 * (what `splitPackets` takes apart again); a piece over `max` stays alone.
 * One piece is passed through as it is, not copied. */
export function endToEnd(pieces: readonly Uint8Array[], max: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (let i = 0; i < pieces.length; ) {
    let n = pieces[i]!.length;
    let j = i + 1;
    while (j < pieces.length && n + pieces[j]!.length <= max) n += pieces[j++]!.length;
    if (j === i + 1) out.push(pieces[i]!);
    else {
      const run = new Uint8Array(n);
      for (let at = 0; i < j; i++) {
        run.set(pieces[i]!, at);
        at += pieces[i]!.length;
      }
      out.push(run);
    }
    i = j;
  }
  return out;
}

/** Pieces end to end (one or more, as `endToEnd` lays them) as pieces of
 * at most `maxPacket` bytes each (`splitPiece`), in order: what a slot
 * takes of a ring's record. Throws CarryError for bytes that are no
 * pieces end to end. */
export function slotPieces(bytes: Uint8Array, maxPacket: number): Uint8Array[] {
  const packets = splitPackets(bytes);
  if (!packets) throw new CarryError('EPACKET', 'the bytes are not packets end to end (LEN)');
  return packets.flatMap((p) => splitPiece(p, maxPacket));
}

/** The header fields the switches route by, read straight from the packet's
 * dwords (genz-packets.md, "Explicit header") without checking its CRCs or
 * decoding it: for telling kinds of packet apart on the hot path. What is
 * delivered is still decoded (and checked) where it arrives. */
export interface Peek {
  /** Bytes (LEN x 4). */
  length: number;
  ocl: number;
  opcode: number;
  gc: boolean;
  tag: number;
  /** GCIDs (only with gc). */
  source: number;
  destination: number;
  /** A Core64 Write into famez's message window (a piece)... */
  piece: boolean;
  /** ...its kind (Addr bits 47..40), and whether Addr bits 38..32 are 0 as they must be. */
  kind: number;
  windowOk: boolean;
}

/** Peek at the packet at the start of `bytes`; null when too short for its header. */
export function peek(bytes: Uint8Array): Peek | null {
  if (bytes.length < 16) return null;
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
  const d0 = v.getUint32(0, true);
  const d1 = v.getUint32(4, true);
  const d2 = v.getUint32(8, true);
  const length = packetBytes(bytes, 0);
  const dcid = (d0 & 0x1f) | (((d0 >>> 8) & 0xf) << 5) | (((d0 >>> 16) & 0x7) << 9);
  const opcode = ((d0 >>> 24) & 0x3) | ((d1 & 0x7) << 2);
  const ocl = (d1 >>> 3) & 0x1f;
  const tag = (d1 >>> 8) & 0xfff;
  const scid = d1 >>> 20;
  const gc = ((d2 >>> 17) & 1) === 1;
  let source = 0;
  let destination = 0;
  let piece = false;
  let kind = 0;
  let windowOk = false;
  if (gc && bytes.length >= 16) {
    const d3 = v.getUint32(12, true);
    destination = (d3 & 0xffff) * 0x1000 + dcid;
    source = (d3 >>> 16) * 0x1000 + scid;
    // Core64 (OCL 0) Write (OpCode 4) without RK (dword 2 bit 22) or NH (bit 18): Addr's high dword next.
    if (ocl === 0 && opcode === 4 && ((d2 >>> 22) & 1) === 0 && ((d2 >>> 18) & 1) === 0 && bytes.length >= 24) {
      const hi = v.getUint32(16, true);
      piece = hi >>> 16 === 0xfa3e;
      kind = (hi >>> 8) & 0xff;
      windowOk = (hi & 0x7f) === 0 && kind < KIND_NAME.length;
    }
  }
  return { length, ocl, opcode, gc, tag, source, destination, piece, kind, windowOk };
}

/** Whether `bytes` starts with a sound Gen-Z packet with global addressing
 * (GC = 1): what a peer hands its switch for another component (a piece
 * of a message, a fabric-attached memory request). */
export function looksGlobal(bytes: Uint8Array): boolean {
  const p = peek(bytes);
  // The CRCs tell a packet from text that happens to have the GC bit set.
  return p !== null && p.gc && p.length >= 16 && p.length <= bytes.length && packetFault(bytes.subarray(0, p.length)) === null;
}

/** Whether `bytes` starts like a piece: a Core64 Write (OpClass Core64,
 * OpCode Write) with GC = 1 whose Addr is in the message window. A quick
 * look for telling pieces from other messages, not a check: push() checks. */
export function looksCarried(bytes: Uint8Array): boolean {
  // The window's magic, the class and GC: no text looks like that; push() checks the rest.
  const p = peek(bytes);
  return p !== null && p.piece && p.length >= HEADER_BYTES && p.length <= bytes.length;
}

/** The largest message a stream carries, unless the receiver says less. */
export const MAX_CARRIED = 2 ** 31;

export interface Carried {
  kind: MessageKindName;
  /** GCIDs: SID << 12 | CID. */
  source: number;
  destination: number;
  message: Uint8Array;
}

function checkGcid(name: string, v: number): void {
  if (!Number.isInteger(v) || v < 0 || v >= GCID_LIMIT) throw new CarryError('EFIELD', `${name} ${String(v)} is not a GCID (0..2^28-1)`);
}

/** The packets that carry `message` from `source` to `destination` as
 * message number `number` of its stream (its Tag is that mod 4096), each at
 * most `maxPacket` bytes (default: the largest packet). An empty message is
 * one empty piece. They are views into one buffer (packedPieces). */
export function pieces(kind: MessageKindName, source: number, destination: number, message: Uint8Array, number: number, maxPacket = MAX_LEN * 4): Uint8Array[] {
  const packed = packedPieces(kind, source, destination, message, number, maxPacket);
  return splitPackets(packed)!;
}

/** The pieces of `message` (as `pieces` makes them) end to end in one
 * buffer, what a ring message to the switch holds. Each piece is a
 * template's copy, the codec's own encoding of a piece of its length and
 * addresses, with Tag, Addr, payload and ECRC written in: byte for byte
 * what the codec makes piece by piece (tested), for one encode per kind of
 * piece instead of one per piece. */
export function packedPieces(kind: MessageKindName, source: number, destination: number, message: Uint8Array, number: number, maxPacket = MAX_LEN * 4): Uint8Array {
  checkGcid('source', source);
  checkGcid('destination', destination);
  if (!(kind in MessageKind)) throw new CarryError('EFIELD', `unknown message kind ${String(kind)}`);
  if (message.length > MAX_CARRIED) throw new CarryError('ETOOBIG', `a message of ${message.length} bytes is over the ${MAX_CARRIED}-byte limit`);
  const room = Math.min(PIECE_BYTES, Math.floor((maxPacket - HEADER_BYTES) / 4) * 4);
  if (room < 4) throw new CarryError('EFIELD', `a piece of at most ${maxPacket} bytes carries nothing`);
  const k = MessageKind[kind];
  const count = message.length === 0 ? 1 : Math.ceil(message.length / room);
  const lastLen = message.length - (count - 1) * room;
  const tail = template(k, source, destination, lastLen);
  const full = count > 1 ? template(k, source, destination, room) : tail;
  const out = new Uint8Array((count - 1) * full.length + tail.length);
  const v = new DataView(out.buffer, out.byteOffset, out.length);
  const hi = (WINDOW_HI | (k << 8)) >>> 0;
  const tag = (number % 4096) << 8;
  const native = out.length >= NATIVE_CRC_BYTES;
  for (let i = 0, at = 0; i < count; i++) {
    const last = i === count - 1;
    const t = last ? tail : full;
    const n = t.length;
    const from = i * room;
    out.set(t, at);
    v.setUint32(at + 4, ((v.getUint32(at + 4, true) & ~TAG_MASK) | tag) >>> 0, true);
    v.setUint32(at + ADDR_HI, last ? (hi | LAST_HI) >>> 0 : hi, true);
    v.setUint32(at + ADDR_LO, from, true);
    out.set(message.subarray(from, from + (last ? lastLen : room)), at + PAYLOAD_AT);
    if (!native) {
      const sum = ecrcRange(out, at, at + n - 3);
      out[at + n - 3] = sum & 0xff;
      out[at + n - 2] = (sum >>> 8) & 0xff;
      out[at + n - 1] = sum >>> 16;
    }
    at += n;
  }
  // Every ECRC in one call.
  if (native) genzSeal(out);
  return out;
}

/** Tag in dword 1 (bits 19..8). */
const TAG_MASK = 0xfff << 8;
/** The window in the high dword of Addr (bits 63..48). */
const WINDOW_HI = Number(WINDOW) << 16;
/** LAST in the high dword of Addr. */
const LAST_HI = Number(LAST >> 32n);
/** Where a piece's Addr (high dword, then low) and payload are: after the
 * four dwords of a Core64 Write's explicit header with GC = 1. */
const ADDR_HI = 16;
const ADDR_LO = 20;
const PAYLOAD_AT = 24;

/** Encoded pieces with Tag 0, Addr 0 and a zero payload, by kind,
 * addresses and payload length (a few streams and sizes at a time). */
const templates = new Map<string, Uint8Array>();
const MAX_TEMPLATES = 256;

function template(kind: number, source: number, destination: number, length: number): Uint8Array {
  const key = `${kind}:${source}:${destination}:${length}`;
  let t = templates.get(key);
  if (t) return t;
  t = encode({
    class: 'Core64.Write',
    GC: 1,
    DSID: Math.floor(destination / 0x1000),
    DCID: destination % 0x1000,
    SSID: Math.floor(source / 0x1000),
    SCID: source % 0x1000,
    Tag: 0,
    Addr: 0n,
    payload: new Uint8Array(length),
  });
  if (templates.size >= MAX_TEMPLATES) templates.clear();
  templates.set(key, t);
  return t;
}

/** One piece cut into pieces of at most `maxPacket` bytes carrying the same
 * bytes at the same offsets (the last flag on the final one only, when the
 * piece had it), for a destination whose slot takes less than the link
 * carried; `[piece]` when it fits. Throws CarryError for no sound piece. */
export function splitPiece(piece: Uint8Array, maxPacket: number): Uint8Array[] {
  if (piece.length <= maxPacket) return [piece];
  let p;
  try {
    p = decode(piece);
  } catch (e) {
    if (e instanceof GenZPacketError) throw new CarryError('EPACKET', `not a Gen-Z packet: ${e.message}`);
    throw e;
  }
  if (p.class !== 'Core64.Write' || p.GC !== 1 || (p as Core64Write).Addr >> 48n !== WINDOW) throw new CarryError('EPACKET', 'not a piece');
  const w = p as Core64Write;
  const room = Math.min(PIECE_BYTES, Math.floor((maxPacket - HEADER_BYTES) / 4) * 4);
  if (room < 4) throw new CarryError('EFIELD', `a piece of at most ${maxPacket} bytes carries nothing`);
  const last = (w.Addr & LAST) !== 0n;
  const base = w.Addr & ~(LAST | 0xffff_ffffn);
  const offset = Number(w.Addr & 0xffff_ffffn);
  const head = { class: 'Core64.Write' as const, GC: 1, DSID: w.DSID, DCID: w.DCID, SSID: w.SSID, SCID: w.SCID, Tag: w.Tag };
  const out: Uint8Array[] = [];
  for (let at = 0; at < w.payload.length || out.length === 0; at += room) {
    const end = Math.min(w.payload.length, at + room);
    const final = end === w.payload.length;
    out.push(encode({ ...head, Addr: base | BigInt(offset + at) | (final && last ? LAST : 0n), payload: w.payload.subarray(at, end) }));
    if (final) break;
  }
  return out;
}

/** Where a piece goes: its source and destination GCIDs, or why it is no
 * piece (one line). Checks the packet whole (CRCs, LEN; not when
 * `checked`: its caller did, genzCheck over the whole message) and its window. */
export function pieceRoute(packet: Uint8Array, checked = false): { source: number; destination: number } | string {
  const fault = checked ? null : packetFault(packet);
  if (fault !== null) return `not a Gen-Z packet: ${fault}`;
  const p = peek(packet)!;
  if (!p.gc) return 'a packet without global addressing carries no message';
  if (!p.piece || !p.windowOk) return 'a packet outside famez\'s message window carries no message';
  if (p.kind === MessageKind.control) return 'a control message is the switches\' own';
  return { source: p.source, destination: p.destination };
}

interface Partial {
  kind: number;
  tag: number;
  parts: Uint8Array[];
  length: number;
  /** Whether its bytes are kept (Reassembler's bytesOf). */
  bytes: boolean;
}

const EMPTY = new Uint8Array(0);

/** What the reassembly needs of a piece's packet. */
export interface PieceFields {
  source: number;
  destination: number;
  /** Addr's high dword, and its low one (the offset). */
  hi: number;
  offset: number;
  tag: number;
  /** A view into the packet. */
  payload: Uint8Array;
}

/** A Core64 Write with GC = 1 and neither RK nor NH (the shape of every
 * piece), read straight from its dwords: what `decode` gives for it, with
 * the payload a view, not a copy. Null for any other packet, or one that
 * does not check out (CRCs, unless `ecrcChecked`; LEN; PadCNT): the codec
 * then says why. */
function fastPiece(bytes: Uint8Array, ecrcChecked: boolean): PieceFields | null {
  const n = bytes.length;
  if (n < HEADER_BYTES || n > MAX_LEN * 4 || n % 4 !== 0) return null;
  const v = new DataView(bytes.buffer, bytes.byteOffset, n);
  const d0 = v.getUint32(0, true);
  const d1 = v.getUint32(4, true);
  const d2 = v.getUint32(8, true);
  const LEN = ((d0 >>> 5) & 0x7) | (((d0 >>> 12) & 0xf) << 3);
  if (LEN * 4 !== n) return null;
  const opcode = ((d0 >>> 24) & 0x3) | ((d1 & 0x7) << 2);
  const ocl = (d1 >>> 3) & 0x1f;
  // Core64 (OCL 0) Write (OpCode 4), GC, and no RK (bit 22) or NH (bit 18).
  if (ocl !== 0 || opcode !== 4 || ((d2 >>> 17) & 1) !== 1 || ((d2 >>> 22) & 1) !== 0 || ((d2 >>> 18) & 1) !== 0) return null;
  if (ecrcChecked ? (d0 >>> 26) !== pcrc((d0 >>> 19) & 0x1f, LEN) : packetFault(bytes) !== null) return null;
  const length = n - HEADER_BYTES - (d2 >>> 30);
  if (length < 0) return null;
  const d3 = v.getUint32(12, true);
  const dcid = (d0 & 0x1f) | (((d0 >>> 8) & 0xf) << 5) | (((d0 >>> 16) & 0x7) << 9);
  return {
    source: (d3 >>> 16) * 0x1000 + (d1 >>> 20),
    destination: (d3 & 0xffff) * 0x1000 + dcid,
    hi: v.getUint32(ADDR_HI, true),
    offset: v.getUint32(ADDR_LO, true),
    tag: (d1 >>> 8) & 0xfff,
    payload: bytes.subarray(PAYLOAD_AT, PAYLOAD_AT + length),
  };
}

/** A piece's fields: straight from its dwords when it has a piece's
 * shape, else by the codec (which says why a packet is no piece:
 * CarryError EPACKET). */
export function readPiece(packet: Uint8Array, ecrcChecked = false): PieceFields {
  return fastPiece(packet, ecrcChecked) ?? readPieceByCodec(packet, ecrcChecked);
}

/** The same by the codec alone (the reference readPiece is tested against). */
export function readPieceByCodec(packet: Uint8Array, ecrcChecked: boolean): PieceFields {
  let p;
  try {
    p = decode(packet, { ecrcChecked });
  } catch (e) {
    if (e instanceof GenZPacketError) throw new CarryError('EPACKET', `not a Gen-Z packet: ${e.message}`);
    throw e;
  }
  if (p.class !== 'Core64.Write' || p.GC !== 1) throw new CarryError('EPACKET', `a ${p.class}${p.GC === 1 ? '' : ' without global addressing'} carries no message`);
  const w = p as Core64Write;
  return {
    source: w.SSID! * 0x1000 + w.SCID,
    destination: w.DSID! * 0x1000 + w.DCID,
    hi: Number(w.Addr >> 32n),
    offset: Number(w.Addr & 0xffff_ffffn),
    tag: w.Tag,
    payload: w.payload,
  };
}

/** Rebuilds the messages of any number of streams from their pieces, in
 * the order the link delivers them. */
export class Reassembler {
  private readonly partial = new Map<number, Partial>();

  /** Partial messages dropped because a new one began in their stream. */
  abandoned = 0;

  private held = 0;

  /** `maxMessage`: one message's limit; `maxHeld`: all partial messages'
   * together; `bytesOf`: the kinds of message whose bytes are wanted (a
   * switch forwards the pieces of the others as they came, and only counts
   * their bytes): the others finish with an empty `message`. */
  constructor(
    private readonly maxMessage = MAX_CARRIED,
    private readonly maxHeld = Infinity,
    private readonly bytesOf: (kind: MessageKindName) => boolean = () => true,
  ) {}

  /** Messages begun and not finished (streams with a partial message). */
  get pending(): number {
    return this.partial.size;
  }

  /** Bytes held in partial messages. */
  get heldBytes(): number {
    return this.held;
  }

  /** One piece: the whole message when it was the last, else null. Throws
   * CarryError for a packet that is not a sound piece (the stream's partial
   * message is dropped then). `ecrcChecked`: the packet's ECRC was checked
   * on its receipt (a link frame), not computed again. */
  push(packet: Uint8Array, ecrcChecked = false): Carried | null {
    const f = readPiece(packet, ecrcChecked);
    const { source, destination, hi, tag } = f;
    const key = source * GCID_LIMIT + destination;
    if (hi >>> 16 !== Number(WINDOW) || (hi & 0x7f) !== 0) {
      this.drop(key);
      throw new CarryError('EWINDOW', `a write to 0x${(BigInt(hi) * 2n ** 32n + BigInt(f.offset)).toString(16)} is outside famez's message window`);
    }
    const kind = (hi >>> 8) & 0xff;
    if (kind >= KIND_NAME.length) {
      this.drop(key);
      throw new CarryError('EWINDOW', `message kind ${kind} is unknown`);
    }
    const offset = f.offset;
    const last = (hi & LAST_HI) !== 0;
    let cur = this.partial.get(key);
    if (offset === 0) {
      // A new message. One left unfinished is dropped and counted: a sound
      // sender never leaves one (its stream is exactly once, in order).
      if (cur) {
        this.abandoned++;
        this.drop(key);
      }
      cur = { kind, tag, parts: [], length: 0, bytes: this.bytesOf(KIND_NAME[kind]!) };
      this.partial.set(key, cur);
    } else if (!cur || cur.length !== offset || cur.kind !== kind || cur.tag !== tag) {
      this.drop(key);
      throw new CarryError('EORDER', `a piece at offset ${offset} from ${fmt(source)} to ${fmt(destination)} continues no message${cur ? ` (${cur.length} bytes so far, tag ${cur.tag})` : ''}`);
    }
    this.append(key, cur, f.payload);
    return last ? this.finish(key, cur, source, destination) : null;
  }

  private append(key: number, cur: Partial, payload: Uint8Array): void {
    if (cur.length + payload.length > this.maxMessage) {
      this.drop(key);
      throw new CarryError('ETOOBIG', `a message over ${this.maxMessage} bytes; dropped`);
    }
    if (this.held + payload.length > this.maxHeld) {
      this.drop(key);
      throw new CarryError('ETOOBIG', `partial messages over ${this.maxHeld} bytes in all; this one dropped`);
    }
    if (cur.bytes) cur.parts.push(payload);
    cur.length += payload.length;
    this.held += payload.length;
  }

  private drop(key: number): void {
    const p = this.partial.get(key);
    if (!p) return;
    this.held -= p.length;
    this.partial.delete(key);
  }

  private finish(key: number, cur: Partial, source: number, destination: number): Carried {
    this.drop(key);
    // The payloads are views into the packets (which may be a ring's, soon
    // overwritten): the message is a copy.
    const message = !cur.bytes ? EMPTY : cur.parts.length === 1 ? new Uint8Array(cur.parts[0]!) : Buffer.concat(cur.parts, cur.length);
    return { kind: KIND_NAME[cur.kind]!, source, destination, message: new Uint8Array(message.buffer, message.byteOffset, message.length) };
  }

  /** Forgets the partial messages of every stream (a peer restarted). */
  reset(): void {
    this.partial.clear();
    this.held = 0;
  }
}

/** A GCID as SID:CID. */
export function fmt(g: number): string {
  return `${Math.floor(g / 0x1000)}:${g % 0x1000}`;
}
