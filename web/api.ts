// The answers the page reads, as schemas/peers.json and schemas/event.json
// define them. Written out here because the page is built for the browser
// (ts/observe/monitor.ts, where the server's types live, is Node code);
// __test__/web.test.ts checks at compile time that the server's types fit.
export type { EventText as ApiEvent } from '../ts/observe/format.js';

export type PeerKind = 'switch' | 'qemu' | 'client';

export interface ApiCounters {
  messagesIn: number;
  bytesIn: number;
  messagesOut: number;
  bytesOut: number;
  doorbells: number;
  drops: number;
  undelivered: number;
  rejected: number;
  queued: number;
}

export interface ApiRings {
  capacity: number;
  inUsed: number;
  inMax: number;
  outUsed: number;
  outMax: number;
  inBytes: number;
  outBytes: number;
}

export interface ApiPeer {
  id: number;
  nodename: string;
  cclass: string;
  sid: number | null;
  cid: number | null;
  link: 'up' | 'configuring' | 'configured' | null;
  kind: PeerKind;
  hardware: string;
  process: { pid: number; command: string | null } | null;
  connectedSince: string;
  vectors: number;
  counters: ApiCounters;
  rings: ApiRings | null;
}

export interface ApiPeers {
  peers: ApiPeer[];
  totals: { connects: number; disconnects: number; refusals: number };
  server: { socket: string; version: string; startedAt: string; fabric: boolean; sharedMemory: number };
}
