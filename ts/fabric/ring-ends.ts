// The ring and slot ends the fabric client drives: the TypeScript views
// over the mapping (ring.ts, slots.ts) or, for an object too big for an
// ArrayBuffer, the native Ring and Mailbox adapted to the same shape.
import { errorCode, errorText, type Mailbox, type Ring } from '../native.js';
import { RingCorrupt, type RingVisitor } from './ring.js';
export type { RingBatchHandler } from './ring.js';

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
  /** RingReader.take: positions into `bytes`, valid until the next take()
   * or release(); a corrupt record ends a take before it, and the next
   * take throws RingCorrupt. */
  take(at: Int32Array, len: Int32Array, max: number): number;
  release(): void;
  /** What take()'s positions index. */
  readonly bytes: Buffer;
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
  // take(): the copies popBatch makes, laid out one after the other in a
  // scratch buffer; a corruption met after good messages is thrown by the
  // next take, as RingReader does.
  let scratch = Buffer.alloc(0);
  let pending: unknown = null;
  return {
    take(at, len, max) {
      if (pending !== null) {
        const e = pending;
        pending = null;
        throw e;
      }
      let got: Buffer[];
      try {
        got = ring.popBatch(max);
      } catch (e) {
        // EBADMSG (and any other error) carries the good messages before
        // it: hand them out now, throw at the next take.
        const good = (e as { messages?: Buffer[] }).messages;
        const err = errorCode(e) === 'EBADMSG' ? new RingCorrupt(errorText(e), 0) : e;
        if (!Array.isArray(good) || good.length === 0) throw err;
        pending = err;
        got = good;
      }
      let total = 0;
      for (const m of got) total += m.length;
      if (scratch.length < total) scratch = Buffer.alloc(Math.max(total, scratch.length * 2));
      let off = 0;
      for (let i = 0; i < got.length; i++) {
        got[i].copy(scratch, off);
        at[i] = off;
        len[i] = got[i].length;
        off += got[i].length;
      }
      return got.length;
    },
    release() {},
    get bytes() {
      return scratch;
    },
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
  peerSid(slot: number): number;
  nodename(slot: number): string;
  post(sender: number, receiver: number, msg: Uint8Array): boolean;
  take(slot: number): Buffer | null;
}

export function nativeSlots(mb: Mailbox): SlotPort {
  return {
    busy: (slot) => mb.busy(slot),
    lastResponder: (slot) => mb.slot(slot).lastResponder,
    peerSid: (slot) => mb.slot(slot).peerSid,
    nodename: (slot) => mb.nodename(slot),
    post: (sender, receiver, msg) => mb.post(sender, receiver, msg),
    take: (slot) => mb.take(slot),
  };
}

/** Messages read from one ring per loop turn before yielding. */
export const RING_BUDGET = 16384;
/** Messages handed to an onRingBatch handler a call, at most. */
export const RING_BATCH = 1024;

/** Reads up to RING_BUDGET messages of `ring` as copies into `into`. */
export function readCopies(ring: RxRing, into: Buffer[]): number {
  return ring.read((bytes, start, length) => {
    const m = Buffer.allocUnsafe(length);
    bytes.copy(m, 0, start, start + length);
    into.push(m);
  }, RING_BUDGET);
}

