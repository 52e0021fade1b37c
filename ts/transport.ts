// What a fabric peer needs from below, and nothing else: its ID, who else
// is connected (with join and leave events), a doorbell to any peer's
// vector, interrupts on its own vectors, the shared object mapped, and a
// way to leave. The fabric layer (FabricClient) is written against this
// alone, so it runs the same over the host transport — the ivshmem
// server's socket hands out the eventfds and the shared-memory fd; that is
// ts/client/client.ts's Client — and over a guest's (a VFIO device: MSI-X
// eventfds in, a BAR0 doorbell store out, BAR2 mapped).
import type { EventEmitter } from 'node:events';

import type { SharedMemory } from './native.js';

export interface TransportEvents {
  /** Vector `vector` of this peer was rung `count` times (coalesced). */
  interrupt: [{ vector: number; count: number }];
  /** A peer joined, with all of its vectors ringable. */
  join: [{ id: number; vectors: number }];
  leave: [{ id: number }];
  /** The transport is gone (closed here or by the other side). */
  close: [{ reason: string }];
}

export interface PeerTransport {
  /** This peer's ID. */
  readonly id: number;
  /** How many vectors this peer has (the interrupts it can get). */
  readonly vectors: number;
  /** Where it is attached, for messages (a socket path, a PCI address). */
  readonly where: string;
  /** Feature bits (features.ts) the fabric peer must add to its slot's
   * feature word for this transport to work: a guest's
   * FEATURE_MEMBERSHIP_BELL. */
  readonly features?: number;
  /** The other connected peers' IDs, ascending. */
  peerIds(): number[];
  /** Rings `peer`'s vector `vector` (throws when there is no such peer or vector). */
  ring(peer: number, vector: number): void;
  /** The shared object as one ArrayBuffer (throws when it is too big for one). */
  readonly memory: ArrayBuffer;
  /** The shared object, for native views over it (past the ArrayBuffer limit). */
  readonly sharedMemory: SharedMemory;
  on: EventEmitter<TransportEvents>['on'];
  off: EventEmitter<TransportEvents>['off'];
  close(): void;
}
