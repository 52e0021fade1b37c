// A fabric peer's side of messages to and from peers of other switches
// (docs/multi-host.md, "Messages across switches"): what a global ID names,
// the packets a message to one becomes (handed to the local switch, which
// forwards them over its links), and the messages rebuilt from the pieces
// the switch writes. Pure: no I/O.
import { Reassembler, looksCarried, packedPieces, pieces, splitPackets, type Carried, type MessageKindName } from '../link/carry.js';
import { FabricClientError } from './peer-types.js';
import { genzCheck } from '../native.js';

/** What the switch tells its peers when SIDs lose their route: this, then the SIDs, comma-separated. */
export const UNREACHABLE = 'famez-unreachable ';

/** A global component ID, SID:CID. */
export interface Gcid {
  sid: number;
  cid: number;
  /** SID << 12 | CID. */
  gcid: number;
}

const GCID_RE = /^\s*(\d{1,5}):(\d{1,4})\s*$/;

/** The GCID a DEST names when it is `SID:CID`; null for any other DEST. Throws
 * ENOPEER for numbers out of range. */
export function parseGcid(dest: number | string): Gcid | null {
  if (typeof dest !== 'string') return null;
  const m = GCID_RE.exec(dest);
  if (!m) return null;
  const sid = Number(m[1]);
  const cid = Number(m[2]);
  if (sid > 0xffff || cid > 0xfff) throw new FabricClientError('ENOPEER', `${dest.trim()} is no GCID: SID is 0..65535, CID 0..4095`);
  return { sid, cid, gcid: sid * 0x1000 + cid };
}

/** Whether DEST is `nodename@SID` (a peer of another switch by name). */
export function isNamedAfar(dest: number | string): dest is string {
  return typeof dest === 'string' && /^.+@\d{1,5}$/.test(dest.trim());
}

export function formatGcid(gcid: number): string {
  return `${Math.floor(gcid / 0x1000)}:${gcid % 0x1000}`;
}

/** The bytes to hand the local switch for a message to `to`: one ring
 * message holding every piece (`maxPacket` = the largest packet), or, for
 * the slot, one slot message per piece (`maxPacket` = 383). */
export function outgoing(kind: Extract<MessageKindName, 'mailbox' | 'ring'>, from: number, to: number, message: Uint8Array, number: number, maxPacket?: number): Uint8Array[] {
  return pieces(kind, from, to, message, number, maxPacket);
}

/** A message to `to` as one ring message for the local switch: its pieces end to end. */
export function packed(kind: Extract<MessageKindName, 'mailbox' | 'ring'>, from: number, to: number, message: Uint8Array, number: number): Uint8Array {
  return packedPieces(kind, from, to, message, number);
}

/** Bytes of messages a peer packs at a time for its ring to the switch. */
export const PACK_BYTES = 1 << 20;

/** Rebuilds what the switch writes for messages from other switches. */
export class RemoteInbox {
  private readonly reasm = new Reassembler(1 << 26);

  /** Whether `bytes` (one slot or ring message from the switch) are pieces. */
  static carries(bytes: Uint8Array): boolean {
    return looksCarried(bytes);
  }

  /** The whole messages `bytes` completes, and a warning for anything out of shape. */
  push(bytes: Uint8Array): { messages: Carried[]; warning: string | null } {
    const packets = splitPackets(bytes);
    if (!packets) return { messages: [], warning: 'a message from the switch for another switch\'s peer does not add up (LEN); dropped' };
    const messages: Carried[] = [];
    let warning: string | null = null;
    // Every CRC in one native call; piece by piece only to say what is wrong.
    const checked = genzCheck(bytes) === -1;
    for (const p of packets) {
      try {
        const m = this.reasm.push(p, checked);
        if (m) messages.push(m);
      } catch (e) {
        warning = `a message from another switch dropped: ${(e as Error).message}`;
      }
    }
    return { messages, warning };
  }
}
