// `--codec genz`: what the switch (and any peer that wants to) puts in the
// mailbox when the fabric speaks binary Gen-Z. Pure and I/O free: it maps the
// switch's typed messages (genz/text.ts's TextMessage, the switch's own
// vocabulary) to mailbox bytes and back.
//
// The mapping (genz-packets.md, "How the text control language maps onto
// real packets"):
//
//   CTL-Write Space=0,PFMSID,PFMCID,SID,CID,Tag   <->  Control.Write
//     Addr     = 0xb0 (Core structure), payload = the 24 bytes of the three
//                Core-structure registers at 0xb0, 0xb8 and 0xc0:
//                  0xb0  PMCID (11:0) = 0, PWRMGRCID (23:12) = 0,
//                        PFMCID (35:24), PFMSID (51:36), SFMCID (63:52) = 0
//                  0xb8  SID0 (15:0) = SID, the rest (DRReqDeadline...) 0
//                  0xc0  CV (7:0) = 1 (bit 0: CID0 valid), CID0 (19:8) = CID,
//                        CID1..CID3, BufferTC = 0
//                The fields FAME-Z's CTL-Write does not carry are written as
//                0 ("none"): in a FAME-Z fabric the switch is the only
//                manager, and one whole-register write keeps the exchange one
//                request and one acknowledgment, as in FAME-Z.
//     DCID     = CID (the component being configured, by the CID it is
//                given), SCID = PFMCID (the fabric manager), GC = 0 (one
//                subnet, SID 27), MGRUUID nil, everything else 0.
//     Tag      = the switch's tag mod 4096 (Tag is 12 bits; the switch counts
//                up without wrapping). The codec remembers which full tag it
//                sent to which peer and lifts the acknowledgment's 12-bit tag
//                back, so the switch sees the tag it issued.
//     Space    must be 0 (a Control Write is control space).
//
//   Standalone Acknowledgment Tag,Reason  <->  Control.StandaloneAck
//     Tag as above; Reason 0 (NoError) <-> "OK"; FAME-Z's switch's
//     "UNSUPPORTED" -> UnsupportedReq (2); other reasons by their codes.ts
//     name (decoded as that name, or 0xNN when it has none). DCID/SCID are the
//     request's SCID/DCID swapped when the codec decoded the request it
//     acknowledges, else the receiver's CID (FAME-Z: ID x 100) and this
//     codec's own CID.
//
//   Everything else stays FAME-Z text, byte for byte as with --codec text:
//   ping/pong and dump are FAME-Z's, not Gen-Z's; the wire formats of Link
//   CTL (Peer-Attribute, ACK, NAK) and Link RFC are not public
//   (genz-packets.md), so famez keeps them in their text form rather than
//   invent a binary one. Peers may therefore send either form in genz mode.
//
// Telling binary from text in a slot: the bytes are tried as one whole Gen-Z
// packet first (PCRC, LEN = the message length, ECRC: ~30 bits of checks a
// text message passes only by accident), then as FAME-Z text. A valid
// Control.Write of the configuration shape or a Control.StandaloneAck is
// mapped as above; any other valid packet is refused with EUNSUPPORTED;
// bytes that are neither a packet nor text are refused with ENEITHER (naming
// both reasons); text that does not parse keeps its GenZTextError. The
// switch answers every refusal with a Link CTL NAK and a log line, as it does
// in text mode, and never throws.
//
// CIDs: Gen-Z CIDs are 12 bits, FAME-Z's are ID x 100, so peer 41 (CID 4100)
// and beyond cannot be addressed. famez refuses `--codec genz` with more than
// MAX_GENZ_PEERS peers (the switch, peer N+1, needs (N+1) x 100 <= 4095)
// rather than truncate CIDs or change FAME-Z's numbering.
import { FamezError } from '../errors.js';
import { MAX_CID, MAX_GENZ_PEERS, Reason } from '../genz/codes.js';
import { GenZPacketError, decode as decodePacket, encode as encodePacket, type ControlStandaloneAck, type ControlWrite, type Packet } from '../genz/packets.js';
import { GenZTextError, parse, toBytes, type CtlWrite, type StandaloneAcknowledgment, type TextMessage } from '../genz/text.js';

/** Core-structure offsets (bytes) of the fields a configuring write sets. */
export const CORE = Object.freeze({
  /** PMCID (11:0), PWRMGRCID (23:12), PFMCID (35:24), PFMSID (51:36), SFMCID (63:52). */
  PFM: 0xb0,
  /** SID0 (15:0). */
  SID0: 0xb8,
  /** CV (7:0), CID0 (19:8). */
  CID0: 0xc0,
} as const);

/** The configuring Control Write: its Addr and payload length. */
export const CONFIGURE_ADDR = BigInt(CORE.PFM);
export const CONFIGURE_BYTES = CORE.CID0 + 8 - CORE.PFM;

export { MAX_CID, MAX_GENZ_PEERS };
const MAX_SID = 0xffff;
const TAG_MASK = 0xfff;
/** Bound on remembered tags (outstanding requests) per map. */
const MAX_REMEMBERED = 4096;

export type GenZCodecErrorCode =
  /** A valid Gen-Z packet the fabric does not serve (a Read, a Write
   * elsewhere in the Core structure, a Core64 packet...). */
  | 'EUNSUPPORTED'
  /** Bytes that are neither a valid Gen-Z packet nor text. */
  | 'ENEITHER'
  /** encode: a CID or SID that does not fit its Gen-Z field. */
  | 'ECID'
  /** encode: a CTL-Write with Space other than 0. */
  | 'ESPACE'
  /** encode: a Reason with no Gen-Z code. */
  | 'EREASON';

export class GenZCodecError extends FamezError<GenZCodecErrorCode> {
  override name = 'GenZCodecError';

  /** "CODE: message", as the switch logs and NAKs errors it does not know. */
  override toString(): string {
    return `${this.code}: ${this.message}`;
  }
}

export interface ConfigureFields {
  PFMCID: number;
  PFMSID: number;
  SID0: number;
  CID0: number;
}

function checkRange(what: string, value: number, max: number, code: GenZCodecErrorCode): number {
  if (!Number.isSafeInteger(value) || value < 0 || value > max) {
    throw new GenZCodecError(code, `${what} ${String(value)} does not fit Gen-Z's ${max === MAX_CID ? 12 : 16}-bit field (0..${max})`);
  }
  return value;
}

/** The 24 payload bytes of the configuring write (Core 0xb0..0xc7). */
export function configurePayload(f: ConfigureFields): Uint8Array {
  const bytes = new Uint8Array(CONFIGURE_BYTES);
  const view = new DataView(bytes.buffer);
  const pfmcid = BigInt(checkRange('PFMCID', f.PFMCID, MAX_CID, 'ECID'));
  const pfmsid = BigInt(checkRange('PFMSID', f.PFMSID, MAX_SID, 'ECID'));
  view.setBigUint64(CORE.PFM - CORE.PFM, (pfmcid << 24n) | (pfmsid << 36n), true);
  view.setBigUint64(CORE.SID0 - CORE.PFM, BigInt(checkRange('SID0', f.SID0, MAX_SID, 'ECID')), true);
  view.setBigUint64(CORE.CID0 - CORE.PFM, 1n | (BigInt(checkRange('CID0', f.CID0, MAX_CID, 'ECID')) << 8n), true);
  return bytes;
}

/** The fields of a configuring write's payload, or null when the payload is
 * not one (wrong length, CV without CID0 valid). */
export function readConfigurePayload(payload: Uint8Array): (ConfigureFields & { CV: number }) | null {
  if (payload.length !== CONFIGURE_BYTES) return null;
  const view = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
  const pfm = view.getBigUint64(CORE.PFM - CORE.PFM, true);
  const cv = view.getBigUint64(CORE.CID0 - CORE.PFM, true);
  const CV = Number(cv & 0xffn);
  if ((CV & 1) === 0) return null;
  return {
    PFMCID: Number((pfm >> 24n) & 0xfffn),
    PFMSID: Number((pfm >> 36n) & 0xffffn),
    SID0: Number(view.getBigUint64(CORE.SID0 - CORE.PFM, true) & 0xffffn),
    CID0: Number((cv >> 8n) & 0xfffn),
    CV,
  };
}

/** Whether a decoded packet is the configuring Control Write. */
export function isConfigureWrite(p: Packet): p is ControlWrite {
  return p.class === 'Control.Write' && p.Addr === CONFIGURE_ADDR && readConfigurePayload(p.payload) !== null;
}

const REASON_NAMES = new Map<number, string>(Object.entries(Reason).map(([name, code]) => [code, name]));

/** The text Reason of a StandaloneAck's Reason code. */
export function reasonText(code: number): string {
  if (code === Reason.NoError) return 'OK';
  return REASON_NAMES.get(code) ?? `0x${code.toString(16).padStart(2, '0')}`;
}

/** The Reason code of a text Reason: OK, UNSUPPORTED (FAME-Z's switch's
 * word), a codes.ts name (any case), or a number 0..63 (decimal or 0x). */
export function reasonCode(reason: string): number {
  const r = reason.trim();
  if (r.toUpperCase() === 'OK') return Reason.NoError;
  if (r.toUpperCase() === 'UNSUPPORTED') return Reason.UnsupportedReq;
  for (const [name, code] of Object.entries(Reason)) if (name.toLowerCase() === r.toLowerCase()) return code;
  if (/^(0x[0-9a-f]+|[0-9]+)$/i.test(r)) {
    const n = Number(r);
    if (n < 64) return n;
  }
  throw new GenZCodecError('EREASON', `Reason "${reason}" has no Gen-Z code (OK, UNSUPPORTED, ${Object.keys(Reason).join(', ')} or 0..63)`);
}

export interface GenZCodecOptions {
  /** This side's CID: the SCID of acknowledgments it sends for requests it
   * did not decode (the switch: its own CID). Default 0. */
  cid?: number;
  /** The CID of peer `id`, for the DCID of such acknowledgments. Default
   * FAME-Z's ID x 100. */
  peerCid?: (id: number) => number;
}

/** Sets `key` in a bounded map, evicting the oldest entry when full. */
function remember<V>(map: Map<string, V>, key: string, value: V): void {
  map.delete(key);
  map.set(key, value);
  if (map.size > MAX_REMEMBERED) map.delete(map.keys().next().value!);
}

/**
 * The genz codec of one mailbox user (the switch, or a peer). Its only state
 * is the tags in flight: which full tag went to which peer under which 12-bit
 * wire tag, and the CIDs of requests it decoded so their acknowledgments are
 * addressed back to the requester.
 */
export class GenZCodec {
  /** `${to}:${wireTag}` -> the full tag of a CTL-Write this codec sent. */
  private readonly sent = new Map<string, number>();
  /** `${from}:${Tag}` -> the CIDs of a request this codec decoded. */
  private readonly requests = new Map<string, { SCID: number; DCID: number }>();

  constructor(readonly options: GenZCodecOptions = {}) {}

  /** The mailbox bytes of `message` for peer `to`. */
  encode(message: TextMessage, to = 0): Uint8Array {
    switch (message.kind) {
      case 'ctl-write':
        return this.encodeWrite(message, to);
      case 'standalone-ack':
        return this.encodeAck(message, to);
      default:
        return toBytes(message);
    }
  }

  /** The message in the bytes peer `from` left. Throws GenZCodecError or
   * GenZTextError (never anything else) when they are not one. */
  decode(bytes: Uint8Array, from = 0): TextMessage {
    let packet: Packet;
    try {
      packet = decodePacket(bytes);
    } catch (pe) {
      if (!(pe instanceof GenZPacketError)) throw pe;
      try {
        return parse(bytes);
      } catch (te) {
        if (te instanceof GenZTextError && te.code === 'ENOTTEXT') {
          throw new GenZCodecError('ENEITHER', `neither a Gen-Z packet (${pe.code}: ${pe.message}) nor text (${te.message})`);
        }
        throw te;
      }
    }
    if (isConfigureWrite(packet)) {
      const f = readConfigurePayload(packet.payload)!;
      remember(this.requests, `${from}:${packet.Tag}`, { SCID: packet.SCID, DCID: packet.DCID });
      return { kind: 'ctl-write', Space: 0, PFMSID: f.PFMSID, PFMCID: f.PFMCID, SID: f.SID0, CID: f.CID0, Tag: packet.Tag };
    }
    if (packet.class === 'Control.StandaloneAck') {
      const key = `${from}:${packet.Tag}`;
      const Tag = this.sent.get(key) ?? packet.Tag;
      this.sent.delete(key);
      return { kind: 'standalone-ack', Tag, Reason: reasonText(packet.Reason) };
    }
    const where = 'Addr' in packet ? ` at 0x${packet.Addr.toString(16)}` : '';
    const size = 'payload' in packet ? ` of ${packet.payload.length.toString()} bytes` : '';
    throw new GenZCodecError(
      'EUNSUPPORTED',
      `${packet.class}${size}${where} (Tag ${packet.Tag.toString()}) is not served here: the fabric speaks Control Write of the Core structure at 0x${CORE.PFM.toString(16)} (${CONFIGURE_BYTES.toString()} bytes) and Control StandaloneAck`,
    );
  }

  private encodeWrite(m: CtlWrite, to: number): Uint8Array {
    if (m.Space !== 0) throw new GenZCodecError('ESPACE', `CTL-Write Space=${String(m.Space)}: a Control Write addresses control space, Space 0`);
    const payload = configurePayload({ PFMCID: m.PFMCID, PFMSID: m.PFMSID, SID0: m.SID, CID0: m.CID });
    const wire = m.Tag & TAG_MASK;
    const bytes = encodePacket({
      class: 'Control.Write',
      DCID: m.CID,
      SCID: m.PFMCID,
      Tag: wire,
      Addr: CONFIGURE_ADDR,
      payload,
    });
    remember(this.sent, `${to}:${wire}`, m.Tag);
    return bytes;
  }

  private encodeAck(m: StandaloneAcknowledgment, to: number): Uint8Array {
    const Reason = reasonCode(m.Reason);
    const wire = m.Tag & TAG_MASK;
    const key = `${to}:${m.Tag}`;
    const request = this.requests.get(key);
    this.requests.delete(key);
    const DCID = request ? request.SCID : checkRange(`the CID of peer ${to}`, (this.options.peerCid ?? ((id: number) => id * 100))(to), MAX_CID, 'ECID');
    const SCID = request ? request.DCID : checkRange('this codec\'s CID', this.options.cid ?? 0, MAX_CID, 'ECID');
    return encodePacket({ class: 'Control.StandaloneAck', DCID, SCID, Tag: wire, Reason });
  }
}

/** The acknowledgment a peer owes for a configuring write it applied:
 * same Tag, addressed back to the writer (DCID = the write's SCID). */
export function ackFor(write: ControlWrite, reason: number = Reason.NoError): ControlStandaloneAck {
  return decodePacket(encodePacket({ class: 'Control.StandaloneAck', DCID: write.SCID, SCID: write.DCID, Tag: write.Tag, Reason: reason })) as ControlStandaloneAck;
}

/** The hooks `famez serve --codec genz` gives the fabric: the switch's
 * codec, its CID being FAME-Z's (nClients + 1) x 100. */
export function genzFabricHooks(config: { nClients: number }): {
  encode: (m: TextMessage, to: number) => Uint8Array;
  decode: (bytes: Uint8Array, from: number) => TextMessage;
} {
  if (config.nClients > MAX_GENZ_PEERS) {
    throw new RangeError(`--codec genz supports at most ${MAX_GENZ_PEERS.toString()} peers: Gen-Z CIDs are 12 bits and FAME-Z's are ID x 100`);
  }
  const codec = new GenZCodec({ cid: (config.nClients + 1) * 100 });
  return { encode: (m, to) => codec.encode(m, to), decode: (bytes, from) => codec.decode(bytes, from) };
}
