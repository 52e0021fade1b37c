// The fabric client's public vocabulary: its errors, what it says about
// messages, peers and its own link, its events and options. (ts/fabric/
// client.ts re-exports all of it.)
import type { ConnectOptions } from '../client/client.js';
import type { TextMessage } from '../genz/text.js';
import { FamezError } from '../errors.js';

import { MAX_SLOT_PAYLOAD, NODENAME_SIZE } from '../layout.generated.js';

/** The largest message payload a slot holds (its buffer keeps a NUL after it). */
export const MAX_SLOT_MESSAGE = MAX_SLOT_PAYLOAD;
/** The longest nodename: the field keeps a NUL after it. */
export const MAX_NODENAME = NODENAME_SIZE - 1;

export type FabricClientErrorCode =
  /** The server's shared memory holds no FAME-Z mailbox (a --silent server). */
  | 'ENOTFABRIC'
  /** The own slot stayed busy (the last receiver did not take its message),
   * or a ring stayed full, for the whole timeout. */
  | 'EBUSY'
  /** No reply (request), no configuration (linkUp) in time. */
  | 'ETIMEDOUT'
  /** DEST names no connected peer. */
  | 'ENOPEER'
  /** DEST is ambiguous or not allowed here (several peers for request). */
  | 'EINVAL'
  /** A message over 383 bytes (slots) or over the ring's maxMessage. */
  | 'EMSGSIZE'
  /** The ring's counters make no sense (the other side wrote garbage). */
  | 'EBADMSG'
  /** No route to the destination's SID (the switch said so: its link went down, or it has none). */
  | 'EUNREACHABLE'
  /** The owner of fabric-attached memory refused a read or write (its Gen-Z Reason in the message). */
  | 'EFAM'
  /** The switch refused (Link CTL NAK) what linkUp asked. */
  | 'ENAK'
  /** The server set up no ring channels. */
  | 'ENORINGS'
  /** The client is closed (or the server went away). */
  | 'ECLOSED';

export class FabricClientError extends FamezError<FabricClientErrorCode> {
  override name = 'FabricClientError';
}

/** A DEST: an ID, a nodename, `server`/`switch`, `all` (every other
 * connected peer, the switch included) or `others` (every other peer but
 * the switch). Numeric strings are IDs. */
export type Dest = number | string;

/** One message taken from a slot. */
export interface FabricMessage {
  /** The local peer it came from (the switch, for a peer of another switch). */
  from: number;
  /** The sender's global ID (SID << 12 | CID) when it is a peer of another
   * switch (`from` is then the switch that delivered it); see formatGcid. */
  gcid?: number;
  /** The sender's nodename, as its slot says now. */
  nodename: string;
  /** The message as text (trailing NULs dropped, bad UTF-8 replaced). */
  text: string;
  /** The parsed FAME-Z message, or null when it is not FAME-Z text. */
  message: TextMessage | null;
  bytes: Buffer;
}

/** A peer of another switch, as the local switch's links know it. */
export interface RemotePeer {
  /** SID << 12 | CID. */
  gcid: number;
  sid: number;
  cid: number;
  nodename: string;
  cclass: string;
  /** Switch-to-switch links on the way. */
  hops: number;
}

/** What a peer said of itself in a Link CTL ACK. */
export interface PeerAttributes {
  cclass?: string;
  SID0?: number;
  CID0?: number;
  /** Every attribute, as sent. */
  all: Record<string, string>;
}

export interface FabricPeer {
  id: number;
  nodename: string;
  isSwitch: boolean;
  /** From the last Link CTL ACK this peer sent us; null before one. */
  attributes: PeerAttributes | null;
}

export type LinkState = 'up' | 'configured';

/** This client's own attributes: what it answers to Peer-Attribute. */
export interface OwnAttributes {
  cclass: string;
  SID0: number;
  CID0: number;
  link: LinkState;
  /** The fabric manager that configured this peer (from the CTL-Write). */
  PFMSID: number | null;
  PFMCID: number | null;
}

export interface LinkInfo {
  SID0: number;
  CID0: number;
  PFMSID: number;
  PFMCID: number;
  /** Who sent the CTL-Write (the switch). */
  from: number;
  Tag: number;
}

export interface FabricClientEvents {
  message: [FabricMessage];
  /** A message posted into this client's slot (after its doorbell rang). */
  sent: [{ to: number; text: string }];
  /** Ring-channel messages from `from`, in order, one event per wake-up. */
  /** Ring messages; `gcid` says which peer of another switch sent them (through the switch, `from`). */
  data: [{ from: number; messages: Buffer[]; gcid?: number }];
  /** A CTL-Write configured this peer and its acknowledgment was posted. */
  configured: [LinkInfo];
  join: [{ id: number }];
  leave: [{ id: number }];
  /** The ring from `from` broke the protocol (also a `warning`): the good
   * messages before the bad record were delivered, the rest dropped, and
   * the ring flows again. */
  'ring-error': [RingErrorInfo];
  /** Peer `to` found this client's ring to it corrupt and dropped its
   * contents, `count` more time(s) (also a `warning`). */
  'ring-rejected': [{ to: number; count: number }];
  /** Something went wrong that is nobody's call (an automatic answer that
   * could not be sent, a malformed slot or ring): the client goes on. */
  warning: [string];
  close: [{ reason: string }];
}

/** A corrupt ring found by its consumer (this client). */
export interface RingErrorInfo {
  /** The ring's owner: the producing peer, who wrote the bad bytes. */
  from: number;
  /** The failed check, e.g. `corrupt ring: unknown flags 7 at 48`. */
  reason: string;
  /** Good messages delivered from the ring in this drain, before the bad record. */
  delivered: number;
  /** Bytes dropped to resynchronise (the bad record and all after it). */
  discarded: number;
}

export interface FabricClientOptions extends ConnectOptions {
  /** This peer's nodename (default `<short hostname>-<ID>`, at most 31 bytes). */
  nodename?: string;
  /** The C-Class this peer answers to Peer-Attribute (default `Debugger`). */
  cclass?: string;
  /** How long send() waits for the own slot to be free (default 1000 ms). */
  sendTimeoutMs?: number;
  /** Default timeout of request() and linkUp() (default 5000 ms). */
  requestTimeoutMs?: number;
  /** Ask the switch to send through its ring channel to this peer, where
   * its messages never wait for its one slot (default true when the
   * server set up rings; false: the FAME-Z slot only, as a guest driver). */
  switchRing?: boolean;
}

export interface SendOptions {
  /** How long to wait for the own slot (or the ring) to be free. */
  timeoutMs?: number;
  /** Gives up waiting when it aborts: the call rejects with the signal's
   * reason and what was not posted yet is withdrawn from the queue (never
   * posted later); what was posted stays posted. An already-aborted
   * signal rejects at once, posting nothing. */
  signal?: AbortSignal;
}

export interface LinkUpOptions {
  /** How long to wait for the switch's CTL-Write (default the client's requestTimeoutMs). */
  timeoutMs?: number;
  /** The Link RFC's TTC (default 27us). */
  TTC?: string;
  /** Gives up waiting when it aborts (rejects with the signal's reason);
   * an already-aborted signal rejects at once and sends nothing. */
  signal?: AbortSignal;
}

/** `signal` (SendOptions) covers the whole request: the wait for the own
 * slot and the wait for the reply. A reply that comes after the abort is
 * an ordinary `message`, as one after ETIMEDOUT is. */
export interface RequestOptions extends SendOptions {
  /** How long to wait for the reply (after the request is posted), and
   * for a DEST `nodename@SID`, for the switch's answer naming it first. */
  replyTimeoutMs?: number;
  /** Which message from DEST is the reply. Default: any but the requests
   * a peer sends on its own (ping, Link CTL Peer-Attribute, dump). */
  match?: (m: FabricMessage) => boolean;
}

