// Requests waiting for their reply, as pure state: which message answers
// which request, and which requests are late at a given time. The fabric
// client keeps one timer for all of them, armed for nextDeadline().
// (Unit-tested with a fake clock in __test__/replies.test.ts.)

export interface Waiter<M> {
  /** The peer the reply must come from. */
  from: number;
  /** The GCID it must come from, for a peer of another switch. */
  gcid?: number;
  /** Whether a message from it is the reply. */
  match: (m: M) => boolean;
  /** When it is late; Infinity until the request was posted. */
  deadline: number;
}

export class Replies<M extends { from: number; gcid?: number }, W extends Waiter<M> = Waiter<M>> {
  private readonly waiting: W[] = [];

  get size(): number {
    return this.waiting.length;
  }

  has(w: W): boolean {
    return this.waiting.includes(w);
  }

  /** Waits for a reply (before the request goes out, so a fast one is not missed). */
  add(w: W): void {
    this.waiting.push(w);
  }

  /** The request was posted at `now`: its reply is due within `timeoutMs`. */
  posted(w: W, now: number, timeoutMs: number): void {
    w.deadline = now + timeoutMs;
  }

  /** The oldest waiter that `m` answers, removed; null when none. */
  answer(m: M): W | null {
    const i = this.waiting.findIndex((w) => w.from === m.from && w.gcid === m.gcid && w.match(m));
    return i < 0 ? null : this.waiting.splice(i, 1)[0];
  }

  /** Removes and returns the waiters late at `now`. */
  late(now: number): W[] {
    return this.take((w) => w.deadline <= now);
  }

  /** Removes and returns the waiters for replies from `id` (it left). */
  from(id: number): W[] {
    return this.take((w) => w.from === id);
  }

  /** Removes and returns the waiters for replies from peers of SID `sid` (by GCID). */
  fromSid(sid: number): W[] {
    return this.take((w) => w.gcid !== undefined && Math.floor(w.gcid / 0x1000) === sid);
  }

  remove(w: W): void {
    const i = this.waiting.indexOf(w);
    if (i >= 0) this.waiting.splice(i, 1);
  }

  /** Removes and returns everything. */
  clear(): W[] {
    return this.waiting.splice(0);
  }

  /** The earliest deadline, or null when none is set. */
  nextDeadline(): number | null {
    let at = Infinity;
    for (const w of this.waiting) at = Math.min(at, w.deadline);
    return Number.isFinite(at) ? at : null;
  }

  private take(pred: (w: W) => boolean): W[] {
    const out = this.waiting.filter(pred);
    for (const w of out) this.remove(w);
    return out;
  }
}
