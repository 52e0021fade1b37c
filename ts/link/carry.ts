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
import { packetFault } from './frame.js';
import { ecrcTo } from '../genz/crc.js';

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
 * one empty piece. */
export function pieces(kind: MessageKindName, source: number, destination: number, message: Uint8Array, number: number, maxPacket = MAX_LEN * 4): Uint8Array[] {
  checkGcid('source', source);
  checkGcid('destination', destination);
  if (!(kind in MessageKind)) throw new CarryError('EFIELD', `unknown message kind ${String(kind)}`);
  if (message.length > MAX_CARRIED) throw new CarryError('ETOOBIG', `a message of ${message.length} bytes is over the ${MAX_CARRIED}-byte limit`);
  const room = Math.min(PIECE_BYTES, Math.floor((maxPacket - HEADER_BYTES) / 4) * 4);
  if (room < 4) throw new CarryError('EFIELD', `a piece of at most ${maxPacket} bytes carries nothing`);
  const base = (WINDOW << 48n) | (BigInt(MessageKind[kind]) << 40n);
  const out: Uint8Array[] = [];
  const head = {
    class: 'Core64.Write' as const,
    GC: 1,
    DSID: Math.floor(destination / 0x1000),
    DCID: destination % 0x1000,
    SSID: Math.floor(source / 0x1000),
    SCID: source % 0x1000,
    Tag: number % 4096,
  };
  // The full pieces differ only in Addr, payload and ECRC: the first is
  // encoded, the others are it with those three written anew.
  let full: Uint8Array | null = null;
  const hi = Number(base >> 32n);
  for (let at = 0; ; at += room) {
    const end = Math.min(message.length, at + room);
    const last = end === message.length;
    if (full !== null && end - at === room) out.push(refill(full, last ? hi | LAST_HI : hi, at, message, at));
    else {
      const p = encode({ ...head, Addr: base | BigInt(at) | (last ? LAST : 0n), payload: message.subarray(at, end) });
      if (end - at === room) full = p;
      out.push(p);
    }
    if (last) return out;
  }
}

/** LAST in the high dword of Addr. */
const LAST_HI = Number(LAST >> 32n);
/** Where a piece's Addr (high dword, then low) and payload are: after the
 * four dwords of a Core64 Write's explicit header with GC = 1. */
const ADDR_HI = 16;
const ADDR_LO = 20;
const PAYLOAD_AT = 24;

/** A piece like `like` (same header, payload length) with Addr `hi`:`lo` and
 * the payload `message[from..]`, its ECRC computed anew. */
function refill(like: Uint8Array, hi: number, lo: number, message: Uint8Array, from: number): Uint8Array {
  const n = like.length;
  const p = new Uint8Array(n);
  p.set(like.subarray(0, PAYLOAD_AT));
  const v = new DataView(p.buffer);
  v.setUint32(ADDR_HI, hi, true);
  v.setUint32(ADDR_LO, lo, true);
  p.set(message.subarray(from, from + n - PAYLOAD_AT - 4), PAYLOAD_AT);
  p[n - 4] = like[n - 4]!;
  const sum = ecrcTo(p, n - 3);
  p[n - 3] = sum & 0xff;
  p[n - 2] = (sum >>> 8) & 0xff;
  p[n - 1] = sum >>> 16;
  return p;
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
 * piece (one line). Checks the packet whole (CRCs, LEN) and its window. */
export function pieceRoute(packet: Uint8Array): { source: number; destination: number } | string {
  const fault = packetFault(packet);
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
}

/** Rebuilds the messages of any number of streams from their pieces, in
 * the order the link delivers them. */
export class Reassembler {
  private readonly partial = new Map<number, Partial>();

  /** Partial messages dropped because a new one began in their stream. */
  abandoned = 0;

  private held = 0;

  /** `maxMessage`: one message's limit; `maxHeld`: all partial messages' together. */
  constructor(
    private readonly maxMessage = MAX_CARRIED,
    private readonly maxHeld = Infinity,
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
    let p;
    try {
      p = decode(packet, { ecrcChecked });
    } catch (e) {
      if (e instanceof GenZPacketError) throw new CarryError('EPACKET', `not a Gen-Z packet: ${e.message}`);
      throw e;
    }
    if (p.class !== 'Core64.Write' || p.GC !== 1) throw new CarryError('EPACKET', `a ${p.class}${p.GC === 1 ? '' : ' without global addressing'} carries no message`);
    const w = p as Core64Write;
    const source = w.SSID! * 0x1000 + w.SCID;
    const destination = w.DSID! * 0x1000 + w.DCID;
    const key = source * GCID_LIMIT + destination;
    const addr = w.Addr;
    if (addr >> 48n !== WINDOW || (addr & 0x7f_0000_0000n) !== 0n) {
      this.drop(key);
      throw new CarryError('EWINDOW', `a write to 0x${addr.toString(16)} is outside famez's message window`);
    }
    const kind = Number((addr >> 40n) & 0xffn);
    if (kind >= KIND_NAME.length) {
      this.drop(key);
      throw new CarryError('EWINDOW', `message kind ${kind} is unknown`);
    }
    const offset = Number(addr & 0xffff_ffffn);
    const last = (addr & LAST) !== 0n;
    let cur = this.partial.get(key);
    if (offset === 0) {
      // A new message. One left unfinished is dropped and counted: a sound
      // sender never leaves one (its stream is exactly once, in order).
      if (cur) {
        this.abandoned++;
        this.drop(key);
      }
      cur = { kind, tag: w.Tag, parts: [], length: 0 };
      this.partial.set(key, cur);
    } else if (!cur || cur.length !== offset || cur.kind !== kind || cur.tag !== w.Tag) {
      this.drop(key);
      throw new CarryError('EORDER', `a piece at offset ${offset} from ${fmt(source)} to ${fmt(destination)} continues no message${cur ? ` (${cur.length} bytes so far, tag ${cur.tag})` : ''}`);
    }
    this.append(key, cur, w.payload);
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
    cur.parts.push(payload);
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
    const message = cur.parts.length === 1 ? cur.parts[0] : Buffer.concat(cur.parts, cur.length);
    return { kind: KIND_NAME[cur.kind], source, destination, message: new Uint8Array(message.buffer, message.byteOffset, message.length) };
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
