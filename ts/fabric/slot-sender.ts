// A fabric peer's sending through its own FAME-Z slot: one message in
// flight for all receivers, posted in order, never overwriting an unread
// one. While the slot still holds the last message it retries on the next
// loop turn for a few milliseconds (a receiver in this process takes in
// the poll phase), then every millisecond, and after the message's timeout
// rejects it with EBUSY. A client sends through its own slot with one of
// these, and spoof() through another peer's slot with another. (The
// switch's sending, whose rules differ — it withdraws what is not taken
// and holds back silent receivers, since it serves everyone — is
// delivery.ts.)
import { whenAborted } from '../abort.js';
import type { PeerTransport } from '../transport.js';
import { FabricClientError } from './peer-types.js';
import type { SlotPort } from './ring-ends.js';

/** While a slot or ring stays busy, retry on the next loop turn for this
 * long, then every millisecond. */
const SPIN_MS = 5;

/** Waits a loop turn, or a millisecond once `since` is SPIN_MS ago; an
 * abort of `signal` ends the wait at once (the caller checks the signal). */
export function nextTurn(since: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const stop = whenAborted(signal, () => {
      if (immediate) clearImmediate(immediate);
      if (timer) clearTimeout(timer);
      resolve();
    });
    const done = () => {
      stop();
      resolve();
    };
    const immediate = Date.now() - since < SPIN_MS ? setImmediate(done) : null;
    const timer = immediate ? null : setTimeout(done, 1);
  });
}

interface Outgoing {
  to: number;
  bytes: Uint8Array;
  timeoutMs: number;
  /** When this message first found the slot busy. */
  busySince: number | null;
  resolve: () => void;
  reject: (e: Error) => void;
}

export interface SenderHost {
  /** This peer's ID: its slot, and the vector its receivers are rung on. */
  id: number;
  slots: SlotPort;
  transport: PeerTransport;
  /** Whether `id` can be sent to now. */
  isConnected(id: number): boolean;
  /** Why the client closed, or null while it runs. */
  closedReason(): string | null;
  /** A message was posted and its receiver rung. */
  sent(to: number, bytes: Uint8Array): void;
}

export class SlotSender {
  private readonly queue: Outgoing[] = [];
  private retry: { kind: 'immediate'; handle: NodeJS.Immediate } | { kind: 'timeout'; handle: NodeJS.Timeout } | null = null;

  constructor(private readonly host: SenderHost) {}

  /** Resolves once `bytes` is posted to `to` (and `to` rung). An abort of
   * `signal` takes it out of the queue and rejects with the reason. */
  enqueue(to: number, bytes: Uint8Array, timeoutMs: number, signal?: AbortSignal): Promise<void> {
    return new Promise((resolve, reject) => {
      const closed = this.host.closedReason();
      if (closed !== null) {
        reject(new FabricClientError('ECLOSED', `the fabric client is closed (${closed})`));
        return;
      }
      if (signal?.aborted) {
        reject(signal.reason);
        return;
      }
      const o: Outgoing = { to, bytes, timeoutMs, busySince: null, resolve, reject };
      if (signal) {
        const stop = whenAborted(signal, (reason) => this.withdraw(o, reason));
        o.resolve = () => {
          stop();
          resolve();
        };
        o.reject = (e) => {
          stop();
          reject(e);
        };
      }
      this.queue.push(o);
      this.pump();
    });
  }

  /** Takes `o` out of the queue (an abort); the retry goes with the last. */
  private withdraw(o: Outgoing, reason: unknown): void {
    const i = this.queue.indexOf(o);
    if (i < 0) return;
    this.queue.splice(i, 1);
    if (this.queue.length === 0) this.stopRetry();
    o.reject(reason as Error);
  }

  private stopRetry(): void {
    if (this.retry?.kind === 'immediate') clearImmediate(this.retry.handle);
    else if (this.retry?.kind === 'timeout') clearTimeout(this.retry.handle);
    this.retry = null;
  }

  /** Posts queued messages in order through the one slot. */
  pump(): void {
    const h = this.host;
    if (this.retry || h.closedReason() !== null) return;
    const me = h.id;
    while (this.queue.length > 0) {
      const head = this.queue[0];
      if (!h.isConnected(head.to)) {
        this.queue.shift();
        head.reject(new FabricClientError('ENOPEER', `peer ${head.to} is not connected`));
        continue;
      }
      let posted: boolean;
      try {
        posted = h.slots.post(me, head.to, head.bytes);
      } catch (e) {
        this.queue.shift();
        head.reject(e as Error);
        continue;
      }
      if (posted) {
        this.queue.shift();
        try {
          h.transport.ring(head.to, me);
        } catch (e) {
          head.reject(new FabricClientError('ENOPEER', (e as Error).message));
          continue;
        }
        h.sent(head.to, head.bytes);
        head.resolve();
        continue;
      }
      const now = Date.now();
      head.busySince ??= now;
      if (now - head.busySince > head.timeoutMs) {
        this.queue.shift();
        const holder = h.slots.lastResponder(me);
        head.reject(
          new FabricClientError('EBUSY', `slot ${me} still holds the message to peer ${holder}, unread after ${head.timeoutMs} ms; not overwritten (withdraw() clears it)`),
        );
        continue;
      }
      const again = () => {
        this.retry = null;
        this.pump();
      };
      this.retry =
        now - head.busySince < SPIN_MS ? { kind: 'immediate', handle: setImmediate(again) } : { kind: 'timeout', handle: setTimeout(again, 1) };
      return;
    }
  }

  /** Rejects everything queued (with `err()`) and stops retrying. */
  close(err: () => Error): void {
    this.stopRetry();
    for (const o of this.queue.splice(0)) o.reject(err());
  }
}
