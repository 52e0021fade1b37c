// The link frame (docs/multi-host.md, "The link frame"): what one switch
// sends another over a link, one or more frames end to end per link
// message (a train: decodeTrain / encodeTrain). A 32-byte header
// (stream key, sequence, acknowledgement, credit, guarded by its own CRC)
// and, in data frames, a unit: one explicit Gen-Z packet from the project's
// codec, or several end to end (the pieces of one message), whose PCRCs and
// ECRCs are checked here too. Pure: no I/O, no state.
import { FamezError } from '../errors.js';
import { ecrc, pcrc } from '../genz/crc.js';
import { genzCheck, genzEcrc } from '../native.js';

export type FrameErrorCode =
  /** The argument is not a Uint8Array (decode) or not a frame object (encode). */
  | 'EINPUT'
  /** Fewer bytes than a header, or than its payload length says. */
  | 'ETRUNC'
  /** More bytes than the header's payload length says. */
  | 'ETRAILING'
  /** Not a famez link frame (bytes 0..1 are not "FZ"). */
  | 'EMAGIC'
  /** A frame version this famez does not speak. */
  | 'EVERSION'
  /** The header CRC does not match the header. */
  | 'ECRC'
  /** A frame type this famez does not know. */
  | 'ETYPE'
  /** A field out of range, a flag or reserved bit set, or a field that its
   * frame type does not use not zero. */
  | 'EFIELD'
  /** A data frame's payload is not a sound unit: one or more explicit
   * Gen-Z packets end to end (each one's length, LEN, PCRC and ECRC), at
   * most MAX_UNIT_BYTES. */
  | 'EPACKET';

export class FrameError extends FamezError<FrameErrorCode> {
  override name = 'FrameError';
}

/** "FZ" in bytes 0 and 1. */
export const MAGIC = 0x5a46;
/** 3: a data frame carries a unit of one or more packets, and sequence
 * numbers and credits count units (2: one packet a data frame; 1: one
 * frame a link message, no trains). */
export const VERSION = 3;
export const HEADER_BYTES = 32;
/** The largest explicit Gen-Z packet: LEN is 7 bits of dwords. */
export const MAX_PACKET_BYTES = 127 * 4;
/** The smallest: LEN 4. */
export const MIN_PACKET_BYTES = 16;
/** The most bytes of packets one data frame carries (its unit): a 4 KiB
 * message's nine pieces fit in one. A receiver holds at most its window of
 * units of a stream, so this bounds what a stream may make it buffer. */
export const MAX_UNIT_BYTES = 8192;
/** GCIDs are SID (16 bits) above CID (12 bits). */
export const GCID_LIMIT = 2 ** 28;

export const FrameType = { hello: 1, heartbeat: 2, data: 3, ack: 4, probe: 5 } as const;
export type FrameTypeName = keyof typeof FrameType;
const TYPE_NAME = new Map<number, FrameTypeName>(Object.entries(FrameType).map(([k, v]) => [v, k as FrameTypeName]));

/** Flag bit of a hello: its sender has seen the receiver's hello on this connection. */
const FLAG_SEEN = 0x01;
/** Flag bit of a data frame: ack and credit carry the reverse stream's ack. */
const FLAG_ACK = 0x01;

/** "I am `instance`; each new stream to me may start with `window` packets." */
export interface Hello {
  type: 'hello';
  /** The sender's incarnation (u32): a new one means it lost its streams' state. */
  instance: number;
  /** The credit a new stream toward the sender starts with (1..2^31-1). */
  window: number;
  /** The sender has seen the receiver's hello on this connection. */
  seen: boolean;
  /** The sending switch's GCID (SID << 12 | CID): which neighbour this
   * connection leads to, so that two connections to one switch share its
   * streams. 0 when omitted. */
  source?: number;
}

export interface Heartbeat {
  type: 'heartbeat';
}

/** Unit number `seq` of stream (source, destination). */
export interface Data {
  type: 'data';
  source: number;
  destination: number;
  /** u32; the stream's sequence number modulo 2^32. */
  seq: number;
  /** The unit: one explicit Gen-Z packet as the codec encodes it, or
   * several end to end (as their LEN lays them), MAX_UNIT_BYTES at most. */
  packet: Uint8Array;
  /** The ack of the reverse stream (destination -> source) riding along
   * (flag ACK): as an ack frame of that stream would say. */
  reverse?: { ack: number; credit: number };
}

/** The receiver of stream (source, destination): every packet before `ack`
 * arrived; the sender may send every packet before `credit`. */
export interface Ack {
  type: 'ack';
  source: number;
  destination: number;
  /** u32: the next sequence number the receiver expects. */
  ack: number;
  /** u32: the first sequence number the sender may not send yet. */
  credit: number;
}

/** The sender of stream (source, destination) has no credit and nothing in
 * flight: it asks for an ack (which carries the credit). */
export interface Probe {
  type: 'probe';
  source: number;
  destination: number;
  /** u32: the sender's next sequence number. */
  seq: number;
}

export type Frame = Hello | Heartbeat | Data | Ack | Probe;

/** Why `bytes` is not a sound explicit Gen-Z packet, or null when it is:
 * its length is a whole number of dwords, 16..508, equal to LEN's, and its
 * PCRC and ECRC match (genz-packets.md, "CRCs"). Cheaper than a decode. */
export function packetFault(bytes: Uint8Array): string | null {
  const n = bytes.length;
  if (n < MIN_PACKET_BYTES || n > MAX_PACKET_BYTES || n % 4 !== 0) return `${n} bytes is not a packet length (16..508, whole dwords)`;
  const d0 = (bytes[0]! | (bytes[1]! << 8) | (bytes[2]! << 16) | (bytes[3]! << 24)) >>> 0;
  const LEN = ((d0 >>> 5) & 0x7) | (((d0 >>> 12) & 0xf) << 3);
  const VC = (d0 >>> 19) & 0x1f;
  const PCRC = d0 >>> 26;
  if (PCRC !== pcrc(VC, LEN)) return `PCRC 0x${PCRC.toString(16)} does not match VC ${VC}, LEN ${LEN}`;
  if (LEN * 4 !== n) return `LEN ${LEN} is ${LEN * 4} bytes, the payload ${n}`;
  const sum = bytes[n - 3]! | (bytes[n - 2]! << 8) | (bytes[n - 1]! << 16);
  const covered = bytes.subarray(0, n - 3);
  if (sum !== (n >= NATIVE_CRC_BYTES ? genzEcrc(covered) : ecrc(covered))) return `ECRC 0x${sum.toString(16)} does not match the packet`;
  return null;
}

/** Why `bytes` is not a sound unit, or null when it is: one or more
 * explicit Gen-Z packets end to end, tiling it exactly by their LEN, each
 * as packetFault wants it, MAX_UNIT_BYTES at most. */
export function unitFault(bytes: Uint8Array): string | null {
  const n = bytes.length;
  if (n <= MAX_PACKET_BYTES && n >= 2 && lenBytes(bytes, 0) === n) return packetFault(bytes);
  if (n > MAX_UNIT_BYTES) return `${n} bytes of packets is more than a unit (${MAX_UNIT_BYTES})`;
  if (n < MIN_PACKET_BYTES) return packetFault(bytes);
  // Every CRC in one native call; the piece by piece check names the fault.
  if (n >= NATIVE_CRC_BYTES && genzCheck(bytes) === -1) return null;
  let k = 0;
  for (let at = 0; at < n; k++) {
    const len = lenBytes(bytes, at);
    if (len === 0 || at + len > n) return `the bytes at ${at} are no whole packet (LEN ${len / 4}, ${n - at} bytes left)`;
    const fault = packetFault(bytes.subarray(at, at + len));
    if (fault !== null) return `packet ${k + 1} of the unit: ${fault}`;
    at += len;
  }
  return null;
}

/** LEN x 4 of the packet at `at` (LEN[2:0] in bits 7:5 of byte 0, LEN[6:3] in bits 7:4 of byte 1); 0 past the end. */
function lenBytes(bytes: Uint8Array, at: number): number {
  if (at + 2 > bytes.length) return 0;
  return ((bytes[at]! >>> 5) | ((bytes[at + 1]! >>> 4) << 3)) * 4;
}

/** From this many bytes a CRC is cheaper in the native core than in
 * JavaScript, the call's cost included (some 6 us for 4 KiB in JavaScript
 * on the machine measured). */
export const NATIVE_CRC_BYTES = 256;

function u32(bytes: Uint8Array, at: number): number {
  return (bytes[at]! | (bytes[at + 1]! << 8) | (bytes[at + 2]! << 16) | (bytes[at + 3]! << 24)) >>> 0;
}

function put32(bytes: Uint8Array, at: number, v: number): void {
  bytes[at] = v & 0xff;
  bytes[at + 1] = (v >>> 8) & 0xff;
  bytes[at + 2] = (v >>> 16) & 0xff;
  bytes[at + 3] = (v >>> 24) & 0xff;
}

/** The header CRC: the Gen-Z ECRC function (reflected CRC-24, polynomial
 * 0x5bc4f5) over header bytes 0..28, stored in bytes 29..31 (the top three
 * bytes of the last header dword, as Gen-Z stores a packet's ECRC). */
function headerCrc(bytes: Uint8Array): number {
  return ecrc(bytes.subarray(0, HEADER_BYTES - 3));
}

function bad(code: FrameErrorCode, message: string): FrameError {
  return new FrameError(code, message);
}

/** Decodes one frame. Throws only FrameError, reads only `bytes`. */
export function decode(bytes: Uint8Array): Frame {
  return decodeFrame(bytes, false);
}

/** `view`: a data frame's packet is a view of `bytes`, not a copy. */
function decodeFrame(bytes: Uint8Array, view: boolean): Frame {
  if (!(bytes instanceof Uint8Array)) throw bad('EINPUT', 'decode takes a Uint8Array');
  if (bytes.length < HEADER_BYTES) throw bad('ETRUNC', `${bytes.length} bytes: a link frame's header is ${HEADER_BYTES}`);
  if ((bytes[0]! | (bytes[1]! << 8)) !== MAGIC) throw bad('EMAGIC', 'not a famez link frame (bytes 0..1 are not "FZ")');
  if (bytes[2] !== VERSION) throw bad('EVERSION', `link frame version ${bytes[2]}; this famez speaks ${VERSION}`);
  const crc = bytes[29]! | (bytes[30]! << 8) | (bytes[31]! << 16);
  if (crc !== headerCrc(bytes)) throw bad('ECRC', 'the link frame header CRC does not match the header');
  const length = bytes[6]! | (bytes[7]! << 8);
  if (bytes.length < HEADER_BYTES + length) throw bad('ETRUNC', `the header says ${length} payload bytes, ${bytes.length - HEADER_BYTES} came`);
  if (bytes.length > HEADER_BYTES + length) throw bad('ETRAILING', `${bytes.length - HEADER_BYTES - length} bytes after the ${length} payload bytes`);
  const type = TYPE_NAME.get(bytes[3]!);
  if (!type) throw bad('ETYPE', `link frame type ${bytes[3]} is unknown`);
  const flags = bytes[4]!;
  if (bytes[5] !== 0 || bytes[28] !== 0) throw bad('EFIELD', 'a reserved header byte is not zero');
  const source = u32(bytes, 8);
  const destination = u32(bytes, 12);
  const seq = u32(bytes, 16);
  const ack = u32(bytes, 20);
  const credit = u32(bytes, 24);
  switch (type) {
    case 'hello':
      if ((flags & ~FLAG_SEEN) !== 0) throw bad('EFIELD', `unknown hello flags 0x${flags.toString(16)}`);
      zero(type, { length, destination, ack });
      key(source, destination);
      if (credit === 0 || credit >= 2 ** 31) throw bad('EFIELD', `a hello's window must be 1..2^31-1, not ${credit}`);
      return { type, instance: seq, window: credit, seen: (flags & FLAG_SEEN) !== 0, source };
    case 'heartbeat':
      zero(type, { flags, length, source, destination, seq, ack, credit });
      return { type };
    case 'data': {
      if ((flags & ~FLAG_ACK) !== 0) throw bad('EFIELD', `unknown data flags 0x${flags.toString(16)}`);
      if (!(flags & FLAG_ACK) && (ack | credit) !== 0) zero(type, { ack, credit });
      key(source, destination);
      // A plain Uint8Array even from a Buffer: a copy, or (trains) a view.
      const packet = view ? new Uint8Array(bytes.buffer, bytes.byteOffset + HEADER_BYTES, length) : new Uint8Array(bytes.subarray(HEADER_BYTES));
      const fault = unitFault(packet);
      if (fault !== null) throw bad('EPACKET', `data frame ${seq} of ${source}->${destination}: ${fault}`);
      return flags & FLAG_ACK ? { type, source, destination, seq, packet, reverse: { ack, credit } } : { type, source, destination, seq, packet };
    }
    case 'ack':
      zero(type, { flags, length, seq });
      key(source, destination);
      return { type, source, destination, ack, credit };
    case 'probe':
      zero(type, { flags, length, ack, credit });
      key(source, destination);
      return { type, source, destination, seq };
  }
}

/** The fields a frame of `type` does not use must be 0. */
function zero(type: FrameTypeName, names: Record<string, number>): void {
  for (const [name, v] of Object.entries(names)) if (v !== 0) throw bad('EFIELD', `a ${type} frame's ${name} must be 0, not ${v}`);
}

/** A stream key's GCIDs are 28 bits. */
function key(source: number, destination: number): void {
  if (source >= GCID_LIMIT || destination >= GCID_LIMIT) throw bad('EFIELD', `GCIDs are 28 bits: source 0x${source.toString(16)}, destination 0x${destination.toString(16)}`);
}

function checkU32(frame: string, name: string, v: unknown, limit = 2 ** 32): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v >= limit) {
    throw bad('EFIELD', `${frame}: ${name} must be an integer in 0..${limit - 1}, not ${String(v)}`);
  }
  return v;
}

/** Encodes one frame; throws FrameError for a field out of range or a data
 * frame whose unit is not sound (the codec's packets always are). */
export function encode(frame: Frame): Uint8Array {
  const bytes = new Uint8Array(frameBytes(frame));
  encodeInto(frame, bytes, 0, true);
  return bytes;
}

/** The bytes `frame` encodes to (its packet's length, if any, plus the header). */
export function frameBytes(frame: Frame): number {
  return HEADER_BYTES + (typeof frame === 'object' && frame !== null && frame.type === 'data' && frame.packet instanceof Uint8Array ? frame.packet.length : 0);
}

/** Frames end to end, one link message (a train): each encoded as encode()
 * does. `checked`: the data frames' units were checked already (unitFault
 * is not run again). */
export function encodeTrain(frames: readonly Frame[], checked = false): Uint8Array {
  let n = 0;
  for (const f of frames) n += frameBytes(f);
  const bytes = new Uint8Array(n);
  let at = 0;
  for (const f of frames) at = encodeInto(f, bytes, at, !checked);
  return bytes;
}

/** Splits a link message into its frames and decodes each (data packets
 * are views of `bytes`). Stops at the first frame that does not decode
 * (what follows it cannot be trusted to be where its header says): the
 * frames before it, and that error; a train whose every frame decodes and
 * which they tile exactly has error null. An empty message is ETRUNC. */
export function decodeTrain(bytes: Uint8Array): { frames: Frame[]; error: FrameError | null } {
  const frames: Frame[] = [];
  if (!(bytes instanceof Uint8Array)) return { frames, error: bad('EINPUT', 'decodeTrain takes a Uint8Array') };
  if (bytes.length === 0) return { frames, error: bad('ETRUNC', 'an empty link message') };
  let at = 0;
  while (at < bytes.length) {
    // The length is trusted only once decode checked the header CRC: a
    // corrupt one makes this frame ECRC (or ETRUNC), never a wrong cut.
    const len = at + 8 <= bytes.length ? bytes[at + 6]! | (bytes[at + 7]! << 8) : 0;
    const end = Math.min(bytes.length, at + HEADER_BYTES + len);
    try {
      frames.push(decodeFrame(bytes.subarray(at, end), true));
    } catch (e) {
      if (!(e instanceof FrameError)) throw e;
      return { frames, error: frames.length ? new FrameError(e.code, `frame ${frames.length + 1} of a train: ${e.message}`) : e };
    }
    at = end;
  }
  return { frames, error: null };
}

function encodeInto(frame: Frame, bytes: Uint8Array, at: number, check: boolean): number {
  if (typeof frame !== 'object' || frame === null || !TYPE_NAME.has(FrameType[frame.type as FrameTypeName])) {
    throw bad('EINPUT', 'encode takes a frame object with a known type');
  }
  const t = frame.type;
  let flags = 0;
  let source = 0;
  let destination = 0;
  let seq = 0;
  let ack = 0;
  let credit = 0;
  let payload: Uint8Array | null = null;
  switch (frame.type) {
    case 'hello':
      seq = checkU32(t, 'instance', frame.instance);
      credit = checkU32(t, 'window', frame.window, 2 ** 31);
      if (credit === 0) throw bad('EFIELD', 'hello: window must be at least 1');
      flags = frame.seen ? FLAG_SEEN : 0;
      source = checkU32(t, 'source', frame.source ?? 0, GCID_LIMIT);
      break;
    case 'heartbeat':
      break;
    case 'data':
      seq = checkU32(t, 'seq', frame.seq);
      if (!(frame.packet instanceof Uint8Array)) throw bad('EINPUT', 'data: packet must be a Uint8Array');
      if (check) {
        const fault = unitFault(frame.packet);
        if (fault !== null) throw bad('EPACKET', `data: ${fault}`);
      }
      payload = frame.packet;
      if (frame.reverse !== undefined) {
        flags = FLAG_ACK;
        ack = checkU32(t, 'reverse.ack', frame.reverse.ack);
        credit = checkU32(t, 'reverse.credit', frame.reverse.credit);
      }
      break;
    case 'ack':
      ack = checkU32(t, 'ack', frame.ack);
      credit = checkU32(t, 'credit', frame.credit);
      break;
    case 'probe':
      seq = checkU32(t, 'seq', frame.seq);
      break;
  }
  if (frame.type === 'data' || frame.type === 'ack' || frame.type === 'probe') {
    source = checkU32(t, 'source', frame.source, GCID_LIMIT);
    destination = checkU32(t, 'destination', frame.destination, GCID_LIMIT);
  }
  const length = payload?.length ?? 0;
  if (at + HEADER_BYTES + length > bytes.length) throw bad('EINPUT', 'encode: no room for the frame');
  const h = at === 0 && bytes.length === HEADER_BYTES + length ? bytes : bytes.subarray(at, at + HEADER_BYTES);
  h[0] = MAGIC & 0xff;
  h[1] = MAGIC >>> 8;
  h[2] = VERSION;
  h[3] = FrameType[t];
  h[4] = flags;
  h[5] = 0;
  h[6] = length & 0xff;
  h[7] = length >>> 8;
  put32(h, 8, source);
  put32(h, 12, destination);
  put32(h, 16, seq);
  put32(h, 20, ack);
  put32(h, 24, credit);
  h[28] = 0;
  const crc = headerCrc(h);
  h[29] = crc & 0xff;
  h[30] = (crc >>> 8) & 0xff;
  h[31] = crc >>> 16;
  if (payload) bytes.set(payload, at + HEADER_BYTES);
  return at + HEADER_BYTES + length;
}
