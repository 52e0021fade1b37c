// Fabric-attached memory served by its switch to any peer of the fabric
// (docs/multi-host.md, "Remote fabric-attached memory"), as Gen-Z's own
// requests and responses with global addressing: a Core64 Read (Addr the
// offset, RDSize the bytes, 1..256) is answered by a Core64 ReadResponse
// carrying them, a Core64 Write by a Core64 StandaloneAck; anything the
// owner will not do by a StandaloneAck whose Reason says why
// (UnsupportedReq: no memory here, or an operation it does not serve;
// MalformedPkt: a length out of range; InvAccPerm: outside the memory;
// InvAccKey: the memory has an R-Key and the request did not carry it).
// Atomics (famez's own Atomic1 layouts, genz/layouts.ts): an Add, Swap or
// CAS of 4 or 8 bytes at an address aligned to its size is carried out at
// once and answered by an AtomicResultsResponse with the old value; a bad
// Size or a misaligned address is MalformedPkt.
// Every response has the request's Tag and goes back to its SSID:SCID.
// Pure: the memory is a Uint8Array; no I/O.
import { Atomic1OpCode, Core64OpCode, OpClass, Reason } from '../genz/codes.js';
import { decode, encode, type Atomic1Add, type Atomic1CAS, type Atomic1Swap, type Core64Read, type Core64Write, type Packet } from '../genz/packets.js';

/** The most bytes one Core64 Read asks for. */
export const MAX_READ = 256;
/** The most bytes one Core64 Write carries here (what fits one packet with global addressing). */
export const MAX_WRITE = 256;

export interface FamStore {
  bytes: Uint8Array;
  /** The R-Key every request must carry, or null for none. */
  key: number | null;
  /** An open descriptor of the memory's file: links whose provider has RMA
   * register it as a window their neighbours read and write directly. */
  fd?: number;
}

/** The sizes, in bytes, of the atomic operations served. */
export const ATOMIC_SIZES: readonly number[] = [4, 8];

const split = (g: number) => ({ sid: Math.floor(g / 0x1000), cid: g % 0x1000 });

/** `OCL << 5 | OpCode` of every class of fabric-attached memory traffic. */
const FAM_CODES = new Set(
  [
    [OpClass.Core64, Core64OpCode.StandaloneAck],
    [OpClass.Core64, Core64OpCode.ReadResponse],
    [OpClass.Core64, Core64OpCode.Write],
    [OpClass.Core64, Core64OpCode.Read],
    [OpClass.Atomic1, Atomic1OpCode.AtomicResultsResponse],
    [OpClass.Atomic1, Atomic1OpCode.Add],
    [OpClass.Atomic1, Atomic1OpCode.Swap],
    [OpClass.Atomic1, Atomic1OpCode.CAS],
  ].map(([ocl, op]) => (ocl << 5) | op),
);

/** Whether a packet's OpClass and OpCode (read from its header without
 * decoding it) are those of fabric-attached memory traffic. A Core64 Write
 * may still be a piece of a message (see isFamPacket). */
export function isFamCode(ocl: number, opcode: number): boolean {
  return FAM_CODES.has((ocl << 5) | opcode);
}

/** Whether a decoded packet is fabric-attached memory traffic (a request or
 * a response with global addressing, outside famez's message window). */
export function isFamPacket(p: Packet): boolean {
  if (p.GC !== 1) return false;
  if (p.class === 'Core64.Write') return (p as Core64Write).Addr >> 48n !== 0xfa3en;
  return p.class === 'Core64.Read' || p.class === 'Core64.ReadResponse' || p.class === 'Core64.StandaloneAck' || p.class.startsWith('Atomic1.');
}

type AtomicRequest = Atomic1Add | Atomic1Swap | Atomic1CAS;
const isAtomicRequest = (p: Packet): p is AtomicRequest => p.class === 'Atomic1.Add' || p.class === 'Atomic1.Swap' || p.class === 'Atomic1.CAS';

export function isFamRequest(p: Packet): boolean {
  return isFamPacket(p) && (p.class === 'Core64.Read' || p.class === 'Core64.Write' || isAtomicRequest(p));
}

/** The owner `self`'s StandaloneAck of `req` with `reason`. */
export function answerAck(req: Packet, self: number, reason: number): Uint8Array {
  const me = split(self);
  return encode({ class: 'Core64.StandaloneAck', GC: 1, DSID: req.SSID!, DCID: req.SCID, SSID: me.sid, SCID: me.cid, Tag: req.Tag, Reason: reason });
}

/** Why the owner of `size` bytes with R-Key `key` (null: none) refuses the
 * Core64 Read or Write `r` (a Reason), or null when it does it. */
export function refusal(r: Core64Read | Core64Write, size: number, key: number | null): number | null {
  if (key !== null && (r.RK !== 1 || r.RKey !== key)) return Reason.InvAccKey;
  const length = r.class === 'Core64.Read' ? r.RDSize : r.payload.length;
  if (length < 1 || length > (r.class === 'Core64.Read' ? MAX_READ : MAX_WRITE)) return Reason.MalformedPkt;
  if (r.Addr + BigInt(length) > BigInt(size)) return Reason.InvAccPerm;
  return null;
}

/** The owner `self`'s ReadResponse to `req` carrying `data`. */
export function answerRead(req: Packet, self: number, data: Uint8Array): Uint8Array {
  const me = split(self);
  return encode({ class: 'Core64.ReadResponse', GC: 1, DSID: req.SSID!, DCID: req.SCID, SSID: me.sid, SCID: me.cid, Tag: req.Tag, payload: data });
}

/** The owner's answer to request `req` (decoded, GC = 1) against `store`
 * (null: no memory here); `self` is the owner's GCID. */
export function serve(req: Packet, store: FamStore | null, self: number): Uint8Array {
  if (store && isAtomicRequest(req)) return serveAtomic(req, store, self);
  if (!store || (req.class !== 'Core64.Read' && req.class !== 'Core64.Write')) return answerAck(req, self, Reason.UnsupportedReq);
  const r = req as Core64Read | Core64Write;
  const why = refusal(r, store.bytes.length, store.key);
  if (why !== null) return answerAck(req, self, why);
  const length = r.class === 'Core64.Read' ? r.RDSize : r.payload.length;
  const at = Number(r.Addr);
  if (r.class === 'Core64.Write') {
    store.bytes.set(r.payload, at);
    return answerAck(req, self, Reason.NoError);
  }
  return answerRead(req, self, store.bytes.slice(at, at + length));
}

/** Uint32Array and BigUint64Array views of a memory, for Atomics: null where
 * the memory's start is not aligned for them in its buffer, or the host is
 * big-endian (the words are little-endian, as on the wire). */
interface Words {
  u32: Uint32Array | null;
  u64: BigUint64Array | null;
}
const LITTLE_ENDIAN = new Uint8Array(Uint32Array.of(1).buffer)[0] === 1;
const words = new WeakMap<Uint8Array, Words>();

function wordsOf(bytes: Uint8Array): Words {
  let w = words.get(bytes);
  if (!w) {
    const aligned = (n: number) => LITTLE_ENDIAN && bytes.byteOffset % n === 0;
    w = {
      u32: aligned(4) ? new Uint32Array(bytes.buffer, bytes.byteOffset, Math.floor(bytes.byteLength / 4)) : null,
      u64: aligned(8) ? new BigUint64Array(bytes.buffer, bytes.byteOffset, Math.floor(bytes.byteLength / 8)) : null,
    };
    words.set(bytes, w);
  }
  return w;
}

const u64 = (lo: number, hi: number) => (BigInt(hi) << 32n) | BigInt(lo);

/** Carries out `r` on the `size` bytes at `at` (aligned, in range) and
 * gives the old value. With Atomics on the memory's own words (V8 makes them
 * the CPU's atomic instructions), so it is atomic also against a VM or
 * process mapping the same file that uses atomic instructions on the same
 * aligned word; without a view, a plain read-modify-write, atomic only
 * against other fabric requests (the switch is one JavaScript thread). */
function execute(bytes: Uint8Array, at: number, size: number, r: AtomicRequest): bigint {
  const w = wordsOf(bytes);
  const [a, b] = r.class === 'Atomic1.Add' ? [u64(r.AddendLo, r.AddendHi), 0n] : r.class === 'Atomic1.Swap' ? [u64(r.SwapLo, r.SwapHi), 0n] : [u64(r.CompareLo, r.CompareHi), u64(r.SwapLo, r.SwapHi)];
  if (size === 8 && w.u64) {
    const i = at / 8;
    if (r.class === 'Atomic1.Add') return Atomics.add(w.u64, i, a);
    if (r.class === 'Atomic1.Swap') return Atomics.exchange(w.u64, i, a);
    return Atomics.compareExchange(w.u64, i, a, b);
  }
  if (size === 4 && w.u32) {
    const i = at / 4;
    const [x, y] = [Number(BigInt.asUintN(32, a)), Number(BigInt.asUintN(32, b))];
    if (r.class === 'Atomic1.Add') return BigInt(Atomics.add(w.u32, i, x));
    if (r.class === 'Atomic1.Swap') return BigInt(Atomics.exchange(w.u32, i, x));
    return BigInt(Atomics.compareExchange(w.u32, i, x, y));
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset + at, size);
  const bits = size * 8;
  const old = size === 8 ? view.getBigUint64(0, true) : BigInt(view.getUint32(0, true));
  const next = r.class === 'Atomic1.Add' ? old + a : r.class === 'Atomic1.Swap' ? a : old === BigInt.asUintN(bits, a) ? b : old;
  if (size === 8) view.setBigUint64(0, BigInt.asUintN(64, next), true);
  else view.setUint32(0, Number(BigInt.asUintN(32, next)), true);
  return old;
}

function serveAtomic(r: AtomicRequest, store: FamStore, self: number): Uint8Array {
  if (store.key !== null && (r.RK !== 1 || r.RKey !== store.key)) return answerAck(r, self, Reason.InvAccKey);
  const size = r.Size;
  if (!ATOMIC_SIZES.includes(size) || r.Addr % BigInt(size) !== 0n) return answerAck(r, self, Reason.MalformedPkt);
  if (r.Addr + BigInt(size) > BigInt(store.bytes.length)) return answerAck(r, self, Reason.InvAccPerm);
  const old = execute(store.bytes, Number(r.Addr), size, r);
  const me = split(self);
  return encode({
    class: 'Atomic1.AtomicResultsResponse',
    GC: 1,
    DSID: r.SSID!,
    DCID: r.SCID,
    SSID: me.sid,
    SCID: me.cid,
    Tag: r.Tag,
    Size: size,
    ResultLo: Number(old & 0xffffffffn),
    ResultHi: Number(old >> 32n),
  });
}

interface RequestBase {
  from: number;
  to: number;
  tag: number;
  offset: number;
  key?: number;
}

function head(o: RequestBase) {
  const f = split(o.from);
  const t = split(o.to);
  return { GC: 1, DSID: t.sid, DCID: t.cid, SSID: f.sid, SCID: f.cid, Tag: o.tag, Addr: BigInt(o.offset), ...(o.key === undefined ? {} : { RK: 1, RKey: o.key }) };
}

export function readRequest(o: RequestBase & { length: number }): Uint8Array {
  return encode({ class: 'Core64.Read', ...head(o), RDSize: o.length });
}

export function writeRequest(o: RequestBase & { data: Uint8Array }): Uint8Array {
  return encode({ class: 'Core64.Write', ...head(o), payload: o.data });
}

/** An atomic operation on a 4- or 8-byte word; values are taken mod 2^64
 * (and by the owner mod 2^32 for 4 bytes), so -1n adds minus one. */
export type AtomicOperation =
  | { op: 'fetch-add'; value: bigint }
  | { op: 'swap'; value: bigint }
  | { op: 'compare-and-swap'; expect: bigint; value: bigint };

const lohi = (name: string, v: bigint) => {
  const u = BigInt.asUintN(64, v);
  return { [`${name}Lo`]: Number(u & 0xffffffffn), [`${name}Hi`]: Number(u >> 32n) };
};

/** An Atomic1 request; `size` (4 or 8 to be served) is sent as given. */
export function atomicRequest(o: RequestBase & { size: number; operation: AtomicOperation }): Uint8Array {
  const base = { ...head(o), Size: o.size };
  const x = o.operation;
  if (x.op === 'fetch-add') return encode({ class: 'Atomic1.Add', ...base, ...lohi('Addend', x.value) });
  if (x.op === 'swap') return encode({ class: 'Atomic1.Swap', ...base, ...lohi('Swap', x.value) });
  return encode({ class: 'Atomic1.CAS', ...base, ...lohi('Compare', x.expect), ...lohi('Swap', x.value) });
}

/** `data` is null for an acknowledged write, the bytes read, or (an
 * atomic's answer) the old value as eight bytes, little-endian. */
export type FamResponse = { tag: number; source: number; ok: true; data: Uint8Array | null } | { tag: number; source: number; ok: false; reason: number };

/** A response as the requester sees it, or null when `bytes` is none. */
export function parseResponse(bytes: Uint8Array): FamResponse | null {
  let p: Packet;
  try {
    p = decode(bytes);
  } catch {
    return null;
  }
  if (p.GC !== 1) return null;
  const source = p.SSID! * 0x1000 + p.SCID;
  if (p.class === 'Core64.ReadResponse') return { tag: p.Tag, source, ok: true, data: p.payload };
  if (p.class === 'Atomic1.AtomicResultsResponse') {
    const data = new Uint8Array(8);
    new DataView(data.buffer).setBigUint64(0, u64(p.ResultLo, p.ResultHi), true);
    return { tag: p.Tag, source, ok: true, data };
  }
  if (p.class === 'Core64.StandaloneAck') return p.Reason === Reason.NoError ? { tag: p.Tag, source, ok: true, data: null } : { tag: p.Tag, source, ok: false, reason: p.Reason };
  return null;
}

/** A Reason's name ('InvAccPerm'), or its number in hex. */
export function reasonName(reason: number): string {
  for (const [k, v] of Object.entries(Reason)) if (v === reason) return k;
  return `0x${reason.toString(16)}`;
}

/** A switch's offer of its memory as an RMA window to a neighbour (a
 * famez control message on the link, docs/multi-host.md "Remote memory by
 * RMA"): the neighbour's switch checks its peers' requests as the owner
 * would (`refusal`) and reads and writes the window itself. Size 0
 * withdraws an offer. */
export interface WindowOffer {
  /** The owner's GCID (its switch). */
  owner: number;
  addr: bigint;
  key: bigint;
  size: number;
  /** The R-Key requests must carry, or null. */
  rkey: number | null;
}

/** The first byte of a window offer (the topology's adverts have 1). */
export const WINDOW_OFFER = 2;
const OFFER_BYTES = 40;

export function encodeOffer(o: WindowOffer): Uint8Array {
  const out = new Uint8Array(OFFER_BYTES);
  const v = new DataView(out.buffer);
  v.setUint8(0, WINDOW_OFFER);
  v.setUint8(1, 1);
  v.setUint32(4, o.owner, true);
  v.setBigUint64(8, o.addr, true);
  v.setBigUint64(16, o.key, true);
  v.setBigUint64(24, BigInt(o.size), true);
  v.setUint8(32, o.rkey === null ? 0 : 1);
  v.setUint32(36, o.rkey ?? 0, true);
  return out;
}

/** The offer in `bytes`, or null when they are none (wrong length, type,
 * version, a reserved byte set, a GCID over 28 bits, a size over 2^53). */
export function decodeOffer(bytes: Uint8Array): WindowOffer | null {
  if (bytes.length !== OFFER_BYTES || bytes[0] !== WINDOW_OFFER || bytes[1] !== 1) return null;
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
  if (v.getUint16(2, true) !== 0 || v.getUint8(33) !== 0 || v.getUint16(34, true) !== 0 || v.getUint8(32) > 1) return null;
  const owner = v.getUint32(4, true);
  const size = v.getBigUint64(24, true);
  if (owner >= 2 ** 28 || size > BigInt(Number.MAX_SAFE_INTEGER)) return null;
  const rkey = v.getUint8(32) === 1 ? v.getUint32(36, true) : null;
  if (rkey === null && v.getUint32(36, true) !== 0) return null;
  return { owner, addr: v.getBigUint64(8, true), key: v.getBigUint64(16, true), size: Number(size), rkey };
}
