// The ring and slot ends the fabric client drives: the TypeScript views
// over the mapping (ring.ts, slots.ts) or, for an object too big for an
// ArrayBuffer, the native Ring and Mailbox adapted to the same shape.
import { errorCode, errorText, type Mailbox, type Ring } from '../native.js';
import { RingCorrupt, type RingVisitor } from './ring.js';

/** The ring ends FabricClient drives: the TypeScript views (ring.ts) or,
 * for an object too big for an ArrayBuffer, the native Ring adapted. */
export interface TxRing {
  pushBatch(msgs: readonly Uint8Array[], from: number): number;
  /** The consumer's count of corrupt discards of this ring. */
  readonly errors: number;
  close?(): void;
}
export interface RxRing {
  /** Throws RingCorrupt (after visiting the good messages before it). */
  read(visit: RingVisitor, max: number): number;
  discardCorrupt(): number;
  close?(): void;
}

export function nativeTx(ring: Ring, bell: () => void): TxRing {
  return {
    pushBatch(msgs, from) {
      const n = ring.pushBatch(from === 0 ? (msgs as Uint8Array[]) : msgs.slice(from));
      if (n > 0 && ring.wasEmpty) bell();
      return n;
    },
    get errors() {
      return ring.errors;
    },
    close: () => ring.close(),
  };
}

export function nativeRx(ring: Ring): RxRing {
  return {
    read(visit, max) {
      let got: Buffer[];
      try {
        got = ring.popBatch(max);
      } catch (e) {
        // EBADMSG carries the good messages before the bad record: visit
        // them, then report the corruption as the TypeScript reader does.
        // Any other error (a Buffer that could not be made) carries them
        // too, and leaves the rest in the ring: visit them and rethrow.
        const good = (e as { messages?: Buffer[] }).messages;
        if (Array.isArray(good)) for (const m of good) visit(m, 0, m.length);
        if (errorCode(e) !== 'EBADMSG') throw e;
        throw new RingCorrupt(errorText(e), good?.length ?? 0);
      }
      for (const m of got) visit(m, 0, m.length);
      return got.length;
    },
    discardCorrupt: () => ring.discardCorrupt(),
    close: () => ring.close(),
  };
}

/** The slot operations of the message path: TypeScript over the mapping
 * (slots.ts) or, for an object too big for an ArrayBuffer, native. */
export interface SlotPort {
  busy(slot: number): boolean;
  lastResponder(slot: number): number;
  nodename(slot: number): string;
  post(sender: number, receiver: number, msg: Uint8Array): boolean;
  take(slot: number): Buffer | null;
}

export function nativeSlots(mb: Mailbox): SlotPort {
  return {
    busy: (slot) => mb.busy(slot),
    lastResponder: (slot) => mb.slot(slot).lastResponder,
    nodename: (slot) => mb.nodename(slot),
    post: (sender, receiver, msg) => mb.post(sender, receiver, msg),
    take: (slot) => mb.take(slot),
  };
}

/** Messages read from one ring per loop turn before yielding. */
export const RING_BUDGET = 16384;

/** Reads up to RING_BUDGET messages of `ring` as copies into `into`. */
export function readCopies(ring: RxRing, into: Buffer[]): number {
  return ring.read((bytes, start, length) => {
    const m = Buffer.allocUnsafe(length);
    bytes.copy(m, 0, start, start + length);
    into.push(m);
  }, RING_BUDGET);
}

