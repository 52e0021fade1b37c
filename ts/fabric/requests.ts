// request()'s waiting for replies, over the pure Replies (replies.ts): a
// request registers its waiter before it goes out (a fast reply is not
// missed), its deadline counts from the post, and one timer, armed for the
// earliest deadline, serves every waiter: a request answered in time costs
// no timer of its own.
import { whenAborted } from '../abort.js';
import { FabricClientError, type FabricMessage, type RequestOptions } from './peer-types.js';
import { Replies } from './replies.js';
import { formatGcid } from './remote.js';
import type { TextMessage } from '../genz/text.js';

interface Waiter {
  from: number;
  gcid?: number;
  match: (m: FabricMessage) => boolean;
  resolve: (m: FabricMessage) => void;
  reject: (e: Error) => void;
  /** When the reply is late (Date.now()), once the request is posted;
   * Infinity before. */
  deadline: number;
  /** The ETIMEDOUT message. */
  late: string;
}

const UNSOLICITED = new Set<TextMessage['kind']>(['ping', 'link-ctl-peer-attribute', 'dump']);
/** A reply is any message but the requests a peer sends on its own. */
const defaultMatch = (m: FabricMessage) => m.message === null || !UNSOLICITED.has(m.message.kind);

export class Requests {
  private readonly replies = new Replies<FabricMessage, Waiter>();
  private timer: NodeJS.Timeout | null = null;
  private timerAt = Infinity;

  /** `post(to)` sends the request and resolves once it is posted. An
   * abort of `options.signal` stops the wait for the reply (and `post`
   * is given the same signal by the caller). */
  wait(to: number, post: () => Promise<void>, options: RequestOptions, defaultTimeoutMs: number, gcid?: number): Promise<FabricMessage> {
    const replyTimeoutMs = options.replyTimeoutMs ?? defaultTimeoutMs;
    const signal = options.signal;
    if (signal?.aborted) return Promise.reject(signal.reason);
    return new Promise<FabricMessage>((resolve, reject) => {
      const waiter: Waiter = {
        from: to,
        gcid,
        match: options.match ?? defaultMatch,
        resolve,
        reject,
        deadline: Infinity,
        late: `no reply from ${gcid === undefined ? `peer ${to}` : formatGcid(gcid)} within ${replyTimeoutMs} ms`,
      };
      if (signal) {
        const stop = whenAborted(signal, (reason) => {
          if (!this.replies.has(waiter)) return;
          this.drop(waiter);
          reject(reason);
        });
        waiter.resolve = (m) => {
          stop();
          resolve(m);
        };
        waiter.reject = (e) => {
          stop();
          reject(e);
        };
      }
      this.replies.add(waiter);
      post().then(
        () => {
          if (!this.replies.has(waiter)) return;
          this.replies.posted(waiter, Date.now(), replyTimeoutMs);
          this.arm(waiter.deadline);
        },
        (e: Error) => {
          this.drop(waiter);
          waiter.reject(e);
        },
      );
    });
  }

  /** A message arrived: it resolves the oldest request it answers. */
  answer(m: FabricMessage): void {
    const w = this.replies.answer(m);
    if (w) {
      this.disarmIfIdle();
      w.resolve(m);
    }
  }

  /** Peer `id` left: its requests reject with ENOPEER. */
  peerLeft(id: number): void {
    for (const w of this.replies.from(id)) w.reject(new FabricClientError('ENOPEER', `peer ${id} left before replying`));
    this.disarmIfIdle();
  }

  /** No route to SID `sid` any more: requests to its peers reject with EUNREACHABLE. */
  unreachable(sid: number): void {
    for (const w of this.replies.fromSid(sid)) w.reject(new FabricClientError('EUNREACHABLE', `no route to SID ${sid} (the switch says so): ${formatGcid(w.gcid!)} cannot answer`));
    this.disarmIfIdle();
  }

  /** Every request rejects with `err()`. */
  close(err: () => Error): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    for (const w of this.replies.clear()) w.reject(err());
  }

  private arm(deadline: number): void {
    if (this.timer && this.timerAt <= deadline) return;
    if (this.timer) clearTimeout(this.timer);
    this.timerAt = deadline;
    this.timer = setTimeout(() => {
      this.timer = null;
      for (const w of this.replies.late(Date.now())) w.reject(new FabricClientError('ETIMEDOUT', w.late));
      const next = this.replies.nextDeadline();
      if (next !== null) this.arm(next);
    }, Math.max(0, deadline - Date.now()));
  }

  private drop(w: Waiter): void {
    this.replies.remove(w);
    this.disarmIfIdle();
  }

  private disarmIfIdle(): void {
    if (this.replies.size === 0 && this.timer) {
      clearTimeout(this.timer);
      this.timer = null;
    }
  }
}
