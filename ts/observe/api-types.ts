// The shapes of famez serve's HTTP API answers (schemas/*.json), as
// TypeScript. Pure types and free of Node and of the DOM: the server
// (ts/observe/monitor.ts), `famez top` and the web page (web/, built for
// the browser) all read them from here.

/** Who a peer is, as far as the server can tell. */
export type PeerKind = 'switch' | 'qemu' | 'client';

export interface PeerCounters {
  messagesIn: number;
  bytesIn: number;
  messagesOut: number;
  bytesOut: number;
  doorbells: number;
  drops: number;
  undelivered: number;
  rejected: number;
  /** The switch's messages waiting for it now. */
  queued: number;
}

/** The ring channels into and out of one peer (docs/ring-channels.md). */
export interface PeerRings {
  /** Bytes per ring. */
  capacity: number;
  /** Bytes waiting now in the rings others write to it, all senders. */
  inUsed: number;
  /** The fullest of those rings, in bytes. */
  inMax: number;
  /** Bytes waiting now in the rings it writes to others. */
  outUsed: number;
  outMax: number;
  /** Bytes ever written into its incoming rings / its outgoing rings
   * (the producers' counters: peer-to-peer traffic the switch never sees). */
  inBytes: number;
  outBytes: number;
}

export interface PeerView {
  id: number;
  nodename: string;
  cclass: string;
  sid: number | null;
  cid: number | null;
  link: 'up' | 'configuring' | 'configured' | null;
  kind: PeerKind;
  /** FAME-Z's word for it (qemu, debugger, switch, ...). */
  hardware: string;
  process: { pid: number; command: string | null } | null;
  connectedSince: string;
  vectors: number;
  counters: PeerCounters;
  rings: PeerRings | null;
}

/** FAME-Z's `GET /system`, for its D3 dashboard. */
/** One of the switch's links to another switch (GET /system). */
export interface SwitchLinkView {
  /** The link's name: `out:HOST:PORT` or `in:N`. */
  name: string;
  direction: 'out' | 'in';
  /** The peer's address (for `out`, the one configured). */
  address: string;
  state: 'connecting' | 'hello' | 'up' | 'down';
  /** The SID at the other end, once known. */
  neighbour: number | null;
  framesSent: number;
  framesReceived: number;
  badFrames: number;
  retransmits: number;
  /** Times the link went down. */
  downs: number;
  /** Local peers' reads and writes of the other switch's memory done by RMA on this link. */
  rmaReads: number;
  rmaWrites: number;
}

export interface SystemView {
  nClients: number;
  server_ivshmsg_id: number | null;
  nodes: Array<{ ivshmsg_id: number; id: string; cclass: string; hardware: string; group: string }>;
  links: Array<{ source: string; target: string }>;
  /** With links to other switches (--link, --link-listen): this switch's SID. */
  sid?: number;
  /** Its links: state, the SID at the other end, frame counts. */
  switchLinks?: SwitchLinkView[];
  /** The nodes of the other switches it reaches, by GCID (SID:CID). */
  remoteNodes?: Array<{ gcid: string; sid: number; cid: number; nodename: string; cclass: string; hops: number; via: number | null }>;
  /** With links: the fabric-manager election. */
  fm?: { role: 'primary' | 'secondary' | 'none'; epoch: number; manager: { sid: number; cid: number; gcid: string; epoch: number; self: boolean } | null };
}

export type FabricEventType = 'join' | 'leave' | 'refuse' | 'link' | 'message' | 'drop' | 'undelivered' | 'reject';

export interface FabricEvent {
  /** Increasing from 1: the SSE event id. */
  seq: number;
  time: string;
  type: FabricEventType;
  peer?: number;
  nodename?: string;
  reason?: string;
  /** message: in (to the switch) or out (from it), its kind, size, route. */
  direction?: 'in' | 'out';
  kind?: string;
  bytes?: number;
  route?: 'slot' | 'ring';
  /** link: the port's state and attributes. */
  link?: string;
  cclass?: string;
  sid?: number | null;
  cid?: number | null;
  count?: number;
  peers?: number;
}

/** An event as the API's readers see it: the stream's (with `text` when
 * asked for, ?content=1), its `skipped` notice (a reader too slow for the
 * stream's rate), or a `note` a reader makes for itself (connection lost). */
export interface ApiEvent extends Omit<FabricEvent, 'type'> {
  type: FabricEventType | 'skipped' | 'note';
  text?: string;
}

/** GET /api/v1/peers. */
export interface PeersAnswer {
  peers: PeerView[];
  totals: { connects: number; disconnects: number; refusals: number };
  server: { socket: string; version: string; startedAt: string; fabric: boolean; sharedMemory: number };
}
