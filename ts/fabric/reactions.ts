// The peer side of the FAME-Z exchange as a pure function: what a fabric
// peer answers on its own and what it learns, for a message in either
// codec (FAME-Z text, or a binary Gen-Z packet decoded to the same
// TextMessage). The fabric client executes the result: it posts the reply
// (encoded the way the request came), records attributes, applies a
// configuration.
import { peerAttributes, type TextMessage } from '../genz/text.js';
import type { LinkInfo, OwnAttributes, PeerAttributes } from './peer-types.js';

export interface PeerReaction {
  /** What to answer the sender, if anything. */
  reply: TextMessage | null;
  /** The sender's attributes, from its Link CTL ACK. */
  attributes?: PeerAttributes;
  /** A CTL-Write configured this peer: its new own attributes, and what to
   * report once the acknowledgment is posted. */
  configure?: { own: OwnAttributes; info: LinkInfo };
  /** Something to warn about (the message is still handled). */
  warning?: string;
}

/** FAME-Z's peer: ping -> pong, Peer-Attribute -> ACK of its own
 * attributes, a Link CTL ACK recorded, a CTL-Write of space 0 applied and
 * acknowledged OK (any other space: UNSUPPORTED). Everything else: nothing. */
export function reactTo(from: number, msg: TextMessage, own: OwnAttributes): PeerReaction {
  switch (msg.kind) {
    case 'ping':
      return { reply: { kind: 'pong' } };
    case 'link-ctl-peer-attribute':
      return { reply: { kind: 'link-ctl-ack', attributes: { 'C-Class': own.cclass, SID0: String(own.SID0), CID0: String(own.CID0) } } };
    case 'link-ctl-ack': {
      const record: PeerAttributes = { all: { ...msg.attributes } };
      try {
        const a = peerAttributes(msg);
        if (a.cclass !== undefined) record.cclass = a.cclass;
        if (a.SID0 !== undefined) record.SID0 = a.SID0;
        if (a.CID0 !== undefined) record.CID0 = a.CID0;
        return { reply: null, attributes: record };
      } catch (e) {
        record.cclass = msg.attributes['C-Class'];
        return { reply: null, attributes: record, warning: `peer ${from}: ${(e as Error).message}` };
      }
    }
    case 'ctl-write': {
      if (msg.Space !== 0) return { reply: { kind: 'standalone-ack', Tag: msg.Tag, Reason: 'UNSUPPORTED' } };
      const next: OwnAttributes = { ...own, SID0: msg.SID, CID0: msg.CID, PFMSID: msg.PFMSID, PFMCID: msg.PFMCID, link: 'configured' };
      const info: LinkInfo = { SID0: msg.SID, CID0: msg.CID, PFMSID: msg.PFMSID, PFMCID: msg.PFMCID, from, Tag: msg.Tag };
      return { reply: { kind: 'standalone-ack', Tag: msg.Tag, Reason: 'OK' }, configure: { own: next, info } };
    }
    default:
      return { reply: null };
  }
}
