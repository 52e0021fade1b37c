// Fabric-attached memory served by its switch to any peer of the fabric
// (docs/multi-host.md, "Remote fabric-attached memory"), as Gen-Z's own
// requests and responses with global addressing: a Core64 Read (Addr the
// offset, RDSize the bytes, 1..256) is answered by a Core64 ReadResponse
// carrying them, a Core64 Write by a Core64 StandaloneAck; anything the
// owner will not do by a StandaloneAck whose Reason says why
// (UnsupportedReq: no memory here, or an operation it does not serve;
// MalformedPkt: a length out of range; InvAccPerm: outside the memory;
// InvAccKey: the memory has an R-Key and the request did not carry it).
// Every response has the request's Tag and goes back to its SSID:SCID.
// Pure: the memory is a Uint8Array; no I/O.
import { Reason } from '../genz/codes.js';
import { decode, encode, type Core64Read, type Core64Write, type Packet } from '../genz/packets.js';

/** The most bytes one Core64 Read asks for. */
export const MAX_READ = 256;
/** The most bytes one Core64 Write carries here (what fits one packet with global addressing). */
export const MAX_WRITE = 256;

export interface FamStore {
  bytes: Uint8Array;
  /** The R-Key every request must carry, or null for none. */
  key: number | null;
}

const split = (g: number) => ({ sid: Math.floor(g / 0x1000), cid: g % 0x1000 });

/** Whether a decoded packet is fabric-attached memory traffic (a request or
 * a response with global addressing, outside famez's message window). */
export function isFamPacket(p: Packet): boolean {
  if (p.GC !== 1) return false;
  if (p.class === 'Core64.Write') return (p as Core64Write).Addr >> 48n !== 0xfa3en;
  return p.class === 'Core64.Read' || p.class === 'Core64.ReadResponse' || p.class === 'Core64.StandaloneAck';
}

export function isFamRequest(p: Packet): boolean {
  return isFamPacket(p) && (p.class === 'Core64.Read' || p.class === 'Core64.Write');
}

function ack(req: Packet, self: number, reason: number): Uint8Array {
  const to = { sid: req.SSID!, cid: req.SCID };
  const me = split(self);
  return encode({ class: 'Core64.StandaloneAck', GC: 1, DSID: to.sid, DCID: to.cid, SSID: me.sid, SCID: me.cid, Tag: req.Tag, Reason: reason });
}

/** The owner's answer to request `req` (decoded, GC = 1) against `store`
 * (null: no memory here); `self` is the owner's GCID. */
export function serve(req: Packet, store: FamStore | null, self: number): Uint8Array {
  if (!store || (req.class !== 'Core64.Read' && req.class !== 'Core64.Write')) return ack(req, self, Reason.UnsupportedReq);
  const r = req as Core64Read | Core64Write;
  if (store.key !== null && (r.RK !== 1 || r.RKey !== store.key)) return ack(req, self, Reason.InvAccKey);
  const length = r.class === 'Core64.Read' ? r.RDSize : r.payload.length;
  if (length < 1 || length > (r.class === 'Core64.Read' ? MAX_READ : MAX_WRITE)) return ack(req, self, Reason.MalformedPkt);
  if (r.Addr + BigInt(length) > BigInt(store.bytes.length)) return ack(req, self, Reason.InvAccPerm);
  const at = Number(r.Addr);
  if (r.class === 'Core64.Write') {
    store.bytes.set(r.payload, at);
    return ack(req, self, Reason.NoError);
  }
  const me = split(self);
  return encode({ class: 'Core64.ReadResponse', GC: 1, DSID: req.SSID!, DCID: req.SCID, SSID: me.sid, SCID: me.cid, Tag: req.Tag, payload: store.bytes.slice(at, at + length) });
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
  if (p.class === 'Core64.StandaloneAck') return p.Reason === Reason.NoError ? { tag: p.Tag, source, ok: true, data: null } : { tag: p.Tag, source, ok: false, reason: p.Reason };
  return null;
}

/** A Reason's name ('InvAccPerm'), or its number in hex. */
export function reasonName(reason: number): string {
  for (const [k, v] of Object.entries(Reason)) if (v === reason) return k;
  return `0x${reason.toString(16)}`;
}
