// The answers the page reads (schemas/peers.json, schemas/event.json):
// the server's own types, from a module free of Node (ts/observe/api-types.ts).
export type { ApiEvent, PeerCounters as ApiCounters, PeerKind, PeerRings as ApiRings, PeerView as ApiPeer, PeersAnswer as ApiPeers } from '../ts/observe/api-types.js';
