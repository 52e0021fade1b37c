// famez's ring channels as the fabric client drives them: one producing
// end per peer it sends to and one consuming end per peer that sends to it
// (ring.ts over the mapping, or the native Ring past Node's ArrayBuffer
// limit), read at most RING_BUDGET messages a loop turn, corruption
// reported at once (the good messages before it delivered, the producer
// told through the ring's error word), and the switch's ring to this peer
// handed to the message path like a slot.
import type { RingLayoutInfo } from '../native.js';
import { raceAbort } from '../abort.js';
import { Ring, errorCode } from '../native.js';
import type { FabricClientEvents } from './peer-types.js';
import { FabricClientError, type RingErrorInfo } from './peer-types.js';
import { printable } from './peer-text.js';
import { RingCorrupt, RingReader, RingWriter, ringOffset } from './ring.js';
import { RING_BATCH, RING_BUDGET, nativeRx, nativeTx, readCopies, type RingBatchHandler, type RxRing, type TxRing } from './ring-ends.js';
import type { PeerTransport } from '../transport.js';

/** What the channels need of the fabric client. */
export interface ChannelHost {
  readonly id: number;
  readonly serverId: number;
  readonly transport: PeerTransport;
  readonly connected: ReadonlySet<number>;
  /** The mapping as an ArrayBuffer, or null when it is too big for one. */
  memory(): ArrayBuffer | null;
  nodename(id: number): string;
  closed(): boolean;
  /** Throws ECLOSED once closed. */
  check(): void;
  emit<E extends keyof FabricClientEvents>(event: E, ...args: FabricClientEvents[E]): boolean;
  /** Messages from the switch's ring: the message path's. */
  dispatch(from: number, messages: Buffer[]): void;
  /** Waits a loop turn (or a millisecond, past a few ms of waiting). */
  nextTurn(since: number, signal?: AbortSignal): Promise<void>;
}

export class RingChannels {
  /** The in-place reader (onRing), or null for `data` events. */
  handler: ((from: number, bytes: Buffer, start: number, length: number) => void) | null = null;
  /** The in-place reader of many messages a call (onRingBatch). */
  batchHandler: RingBatchHandler | null = null;
  /** Where a batch's positions and lengths go (RING_BATCH of each). */
  private readonly at = new Int32Array(RING_BATCH);
  private readonly len = new Int32Array(RING_BATCH);
  private readonly txRings = new Map<number, TxRing>();
  /** The error count of each ring we produce, as last seen. */
  private readonly txErrors = new Map<number, number>();
  private readonly rxRings = new Map<number, RxRing>();
  /** Rings whose last read stopped at its budget: read again next turn. */
  private readonly rxPending = new Set<number>();
  private rxImmediate: NodeJS.Immediate | null = null;
  private readonly chains = new Map<number, Promise<void>>();

  constructor(
    private readonly host: ChannelHost,
    readonly layout: RingLayoutInfo | null,
  ) {}

  /** Everything in the ring from `from` (a doorbell on its vector). */
  drain(from: number): void {
    if (!this.layout || from === this.host.id) return;
    if (from === this.host.serverId) this.drainSwitchRing();
    else this.drainRing(from);
    if (this.txRings.size > 0) this.checkTxErrors(from);
  }

  /** `id` left: its rings are forgotten. */
  peerLeft(id: number): void {
    this.txRings.get(id)?.close?.();
    this.txRings.delete(id);
    this.txErrors.delete(id);
    this.rxRings.get(id)?.close?.();
    this.rxRings.delete(id);
    this.rxPending.delete(id);
  }

  close(): void {
    if (this.rxImmediate) clearImmediate(this.rxImmediate);
    this.rxImmediate = null;
    this.rxPending.clear();
    for (const r of [...this.txRings.values(), ...this.rxRings.values()]) r.close?.();
    this.txRings.clear();
    this.rxRings.clear();
  }

  /** Pushes `messages` into the ring channel to `dest`, in order, ringing
   * dest's vector (this peer's ID) whenever a push found the ring empty.
   * While the ring is full it waits (backpressure; `timeoutMs` without
   * progress, then EBUSY). Calls to one dest run one after the other. An
   * abort of `signal` rejects at once with its reason, whether this call
   * is pushing or still waiting for an earlier one: what was pushed stays,
   * the rest is never pushed. */
  send(to: number, list: Uint8Array[], timeoutMs: number, signal?: AbortSignal): Promise<void> {
    let ring: TxRing;
    try {
      signal?.throwIfAborted();
      ring = this.txRing(to);
    } catch (e) {
      return Promise.reject(e);
    }
    const run = async () => {
      let off = 0;
      let stalled: number | null = null;
      while (off < list.length) {
        signal?.throwIfAborted();
        this.host.check();
        let n: number;
        try {
          n = ring.pushBatch(list, off);
        } catch (e) {
          const msg = (e as Error).message;
          const code = errorCode(e) === 'EMSGSIZE' || (e instanceof RangeError && msg.startsWith('EMSGSIZE')) ? 'EMSGSIZE' : e instanceof RingCorrupt ? 'EBADMSG' : 'ECLOSED';
          throw new FabricClientError(code, msg);
        }
        if (n > 0) {
          off += n;
          stalled = null;
          continue;
        }
        stalled ??= Date.now();
        if (Date.now() - stalled > timeoutMs) {
          throw new FabricClientError('EBUSY', `the ring to peer ${to} stayed full for ${timeoutMs} ms (${off} of ${list.length} message(s) pushed)`);
        }
        await this.host.nextTurn(stalled, signal);
      }
    };
    const prev = this.chains.get(to) ?? Promise.resolve();
    const ran = prev.then(run, run);
    const mine = raceAbort(ran, signal);
    const tail = ran.then(
      () => undefined,
      () => undefined,
    );
    this.chains.set(to, tail);
    void tail.then(() => {
      if (this.chains.get(to) === tail) this.chains.delete(to);
    });
    return mine;
  }

  /** The producing end of the ring to `to`, for writing in place. */
  writer(to: number): RingWriter {
    const ring = this.txRing(to);
    if (!(ring instanceof RingWriter)) throw new FabricClientError('ENORINGS', 'the shared object is too big for an ArrayBuffer here: use sendRing()');
    return ring;
  }

  private txRing(to: number): TxRing {
    this.host.check();
    if (!this.layout) throw new FabricClientError('ENORINGS', 'the server set up no ring channels (the shared memory is too small for them)');
    if (to === this.host.id) throw new FabricClientError('EINVAL', 'there is no ring from a peer to itself');
    let ring = this.txRings.get(to);
    if (!ring) {
      const bell = () => this.host.transport.ring(to, this.host.id);
      const mem = this.host.memory();
      ring = mem ? new RingWriter(mem, ringOffset(this.layout, this.host.id, to), this.layout.capacity, bell) : nativeTx(new Ring(this.host.transport.sharedMemory, this.host.id, to), bell);
      this.txRings.set(to, ring);
      this.txErrors.set(to, ring.errors);
    }
    return ring;
  }

  private rxRing(from: number): RxRing {
    let ring = this.rxRings.get(from);
    if (!ring) {
      const mem = this.host.memory();
      ring = mem ? new RingReader(mem, ringOffset(this.layout!, from, this.host.id), this.layout!.capacity) : nativeRx(new Ring(this.host.transport.sharedMemory, from, this.host.id));
      this.rxRings.set(from, ring);
    }
    return ring;
  }

  /** Whether peer `to` has reported our ring to it corrupt since we last
   * looked (it counts in the ring's error word and rings our vector `to`). */
  private checkTxErrors(to: number): void {
    const ring = this.txRings.get(to);
    if (!ring) return;
    const errors = ring.errors;
    const seen = this.txErrors.get(to) ?? errors;
    if (errors === seen) return;
    this.txErrors.set(to, errors);
    const count = errors - seen;
    this.host.emit('warning', `ring to peer ${to} ${printable(this.host.nodename(to))}: the peer found it corrupt and dropped its contents (${count} time(s)); messages sent on it may be lost`);
    this.host.emit('ring-rejected', { to, count });
  }

  /** Reads the ring from `from`, at most RING_BUDGET messages per turn:
   * past that it goes on in a later turn (setImmediate: the producer rings
   * only an empty ring, so no doorbell would come), and the loop serves
   * everything else in between. */
  private drainRing(from: number): void {
    if (this.batchHandler) {
      this.drainRingBatches(from, this.batchHandler);
      return;
    }
    const ring = this.rxRing(from);
    const handler = this.handler;
    let n: number;
    let messages: Buffer[] | null = null;
    // Corruption and exceptions are handled off the good path, in catch.
    try {
      if (handler) {
        n = ring.read((bytes, start, length) => handler(from, bytes, start, length), RING_BUDGET);
      } else {
        n = readCopies(ring, (messages = []));
      }
    } catch (e) {
      // Whatever was read before is delivered, and the ring is read again
      // next turn: the producer rings only an empty ring, so no doorbell
      // would come for what is left in it.
      this.readAgain(from);
      if (!(e instanceof RingCorrupt)) {
        // An onRing handler threw: the message it had is consumed.
        if (messages !== null && messages.length > 0) this.host.emit('data', { from, messages });
        throw e;
      }
      this.ringCorrupt(from, ring, e, messages);
      return;
    }
    if (n >= RING_BUDGET) this.readAgain(from);
    if (messages !== null && messages.length > 0) this.host.emit('data', { from, messages });
  }

  /** drainRing for onRingBatch: take() up to RING_BATCH messages at a
   * time, each batch handed to `handler` in place, RING_BUDGET a turn. */
  private drainRingBatches(from: number, handler: RingBatchHandler): void {
    const ring = this.rxRing(from);
    const { at, len } = this;
    let n = 0;
    try {
      for (;;) {
        const k = ring.take(at, len, Math.min(RING_BATCH, RING_BUDGET - n));
        if (k === 0) return;
        n += k;
        handler(from, ring.bytes, at, len, k);
        // A handler that set another one (or none) gets no more: the
        // rest is read the new way, next turn.
        if (n >= RING_BUDGET || this.batchHandler !== handler) {
          ring.release();
          this.readAgain(from);
          return;
        }
      }
    } catch (e) {
      // A handler that throws consumed its batch; a corrupt record is
      // reported with the messages handed out before it in this drain.
      ring.release();
      this.readAgain(from);
      if (!(e instanceof RingCorrupt)) throw e;
      this.ringCorrupt(from, ring, new RingCorrupt(e.message, n), null);
    }
  }

  /** The ring from `from` holds a bad record: drop it and what follows so
   * the ring flows again, deliver the good messages read before it, report
   * it, and tell the producer (the ring's error word and a doorbell on its
   * vector `this.host.id`). */
  private ringCorrupt(from: number, ring: RxRing, e: RingCorrupt, messages: Buffer[] | null): void {
    const discarded = ring.discardCorrupt();
    try {
      if (messages !== null && messages.length > 0) this.host.emit('data', { from, messages });
    } finally {
      const info: RingErrorInfo = { from, reason: e.message, delivered: e.delivered, discarded };
      this.host.emit('warning', `ring from peer ${from} ${printable(this.host.nodename(from))}: ${e.message}; ${e.delivered} message(s) before it delivered, ${discarded} byte(s) discarded`);
      this.host.emit('ring-error', info);
      try {
        if (!this.host.closed() && this.host.connected.has(from)) this.host.transport.ring(from, this.host.id);
      } catch {
        // The producer left: nobody to tell.
      }
    }
  }

  /** Reads the ring from `from` again on the next loop turn. */
  private readAgain(from: number): void {
    this.rxPending.add(from);
    this.rxImmediate ??= setImmediate(() => {
      this.rxImmediate = null;
      const pending = [...this.rxPending];
      this.rxPending.clear();
      for (const f of pending) {
        if (this.host.closed() || !this.host.connected.has(f)) continue;
        if (f === this.host.serverId) this.drainSwitchRing();
        else this.drainRing(f);
      }
    });
  }

  /** The switch's ring to this peer carries the switch's messages (the
   * same as through its slot): each is handled as a slot message. */
  private drainSwitchRing(): void {
    const from = this.host.serverId;
    const ring = this.rxRing(from);
    const got: Buffer[] = [];
    let n: number;
    try {
      n = readCopies(ring, got);
    } catch (e) {
      this.readAgain(from);
      if (!(e instanceof RingCorrupt)) throw e;
      this.host.dispatch(from, got);
      this.ringCorrupt(from, ring, e, null);
      return;
    }
    if (n >= RING_BUDGET) this.readAgain(from);
    this.host.dispatch(from, got);
  }

}
