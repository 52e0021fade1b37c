// The switch's outgoing messages as a pure state machine (sans-I/O, in the
// shape of quinn-proto's handle_timeout(now) / poll_transmit()): fed what
// the switch wants to send, what the I/O layer saw (the slot was taken, a
// ring was full, a peer rang) and the current time, it says what to do
// next. Nothing here touches memory, fds or clocks, so every rule is
// tested with a fake clock (__test__/delivery.test.ts).
//
// The rules:
// - Every destination has its own bounded queue. A destination over its
//   bound loses its own oldest messages (counted, logged at most once a
//   second per peer), never anyone else's.
// - A peer that reads the switch's ring channel to it (it says so in its
//   slot, see features.ts) gets its messages there: they never wait for the
//   switch's one slot. A full ring holds back only that peer's queue.
// - Everyone else shares the switch's one FAME-Z slot, round-robin between
//   destinations, one message at a time. A message the receiver has not
//   taken by its deadline is withdrawn (logged, counted); its receiver is
//   then "silent": its messages wait, except one probe now and then
//   (exponential backoff, or within a second when it rings the switch)
//   with a short deadline, and only when no other peer waits for the slot.
//   Only taking a message makes a silent peer a reader again: ringing the
//   switch does not (a peer that floods pings and reads nothing rings all
//   the time).
// - A message enqueued with `keep` (one forwarded from another switch,
//   which the link's credits bound and which must not be lost; the
//   switch's Peer-Attribute question to a newcomer, which a peer slow to
//   start would otherwise never hear, so its C-Class stays unknown) is never
//   dropped by the queue bound, and when it is withdrawn untaken it goes
//   back first in its queue, to be offered again by the same rules.
//   slotTaken() and leave() hand such messages back, so the caller can
//   give their credit back.

export type Route = 'slot' | 'ring';

export interface DeliveryConfig {
  /** Messages one destination may have waiting (default 64). */
  perPeerLimit?: number;
  /** How long a message may sit untaken in the slot (default 1000 ms). */
  takeTimeoutMs?: number;
  /** Deadline of a probe to a silent peer (default 100 ms). */
  probeTimeoutMs?: number;
  /** First wait before probing a silent peer; doubles up to 60 s (default 1000 ms). */
  probeBackoffMs?: number;
  /** How often to look at the slot while others wait for it (default 2 ms). */
  slotPollMs?: number;
  /** How soon to try a full ring again (default 5 ms). */
  ringRetryMs?: number;
}

export type Transmit =
  /** Write `bytes` into the switch's slot for `to`, then ring it. */
  | { kind: 'post'; to: number; bytes: Uint8Array }
  /** Push `bytes` into the switch's ring to `to` (ring it when it was
   * empty); report a full ring with ringFull(). */
  | { kind: 'push'; to: number; bytes: Uint8Array }
  /** Clear the switch's slot: the message to `to` was not taken. */
  | { kind: 'withdraw'; to: number };

export interface DeliveryStats {
  /** Messages waiting now, all destinations. */
  queued: number;
  /** Messages handed to the I/O layer (posted or pushed). */
  sent: number;
  /** Messages lost to a full per-peer queue. */
  dropped: number;
  /** Messages withdrawn from the slot untaken. */
  undelivered: number;
}

export type Liveness = 'new' | 'responsive' | 'silent';

/** One destination's figures since it connected. */
export interface DestinationStats {
  route: Route;
  liveness: Liveness;
  /** Messages waiting for it now. */
  queued: number;
  /** Messages lost to its full queue. */
  dropped: number;
  /** Messages withdrawn from the slot untaken. */
  undelivered: number;
}

/** Something worth a log line: what happened, to whom, in words. */
export interface DeliveryNote {
  event: 'drop' | 'undelivered';
  /** The destination. */
  peer: number;
  /** How many messages it concerns. */
  count: number;
  text: string;
}

interface Dest {
  id: number;
  route: Route;
  liveness: Liveness;
  /** Waiting messages, oldest first, from `head`. */
  queue: Uint8Array[];
  head: number;
  /** Messages dropped since the last log line about it. */
  dropped: number;
  droppedLoggedAt: number;
  /** Since it connected. */
  droppedTotal: number;
  undelivered: number;
  /** A silent peer's next probe is not before this. */
  probeAt: number;
  probedAt: number;
  probeBackoff: number;
  /** The ring was full: not before this. */
  ringRetryAt: number;
}

interface Holding {
  to: number;
  deadline: number;
  probe: boolean;
  bytes: Uint8Array;
}

const MAX_BACKOFF_MS = 60_000;
/** A silent peer that rings is probed at most this often. */
const PROBE_EVERY_MS = 1000;

export class Delivery {
  private readonly limit: number;
  private readonly takeTimeoutMs: number;
  private readonly probeTimeoutMs: number;
  private readonly probeBackoffMs: number;
  private readonly slotPollMs: number;
  private readonly ringRetryMs: number;
  private readonly dests = new Map<number, Dest>();
  /** Slot-routed destinations with something waiting, in serving order. */
  private readonly turn: number[] = [];
  private holding: Holding | null = null;
  private withdrawal: number | null = null;
  private readonly notes: DeliveryNote[] = [];
  private readonly counts = { sent: 0, dropped: 0, undelivered: 0 };
  /** Messages enqueued with `keep`. */
  private readonly kept = new WeakSet<Uint8Array>();

  constructor(config: DeliveryConfig = {}) {
    this.limit = config.perPeerLimit ?? 64;
    this.takeTimeoutMs = config.takeTimeoutMs ?? 1000;
    this.probeTimeoutMs = config.probeTimeoutMs ?? 100;
    this.probeBackoffMs = config.probeBackoffMs ?? 1000;
    this.slotPollMs = config.slotPollMs ?? 2;
    this.ringRetryMs = config.ringRetryMs ?? 5;
    if (!(this.limit >= 1)) throw new RangeError('perPeerLimit must be at least 1');
  }

  // ---- events -------------------------------------------------------------

  /** A peer joined: its messages go through the slot until setRoute. */
  connect(id: number): void {
    this.dests.set(id, {
      id,
      route: 'slot',
      liveness: 'new',
      queue: [],
      head: 0,
      dropped: 0,
      droppedLoggedAt: -Infinity,
      droppedTotal: 0,
      undelivered: 0,
      probeAt: 0,
      probedAt: -Infinity,
      probeBackoff: this.probeBackoffMs,
      ringRetryAt: 0,
    });
  }

  /** A peer left: its queue goes, and a message of its in the slot is
   * withdrawn. Returns the kept messages that went with it. */
  leave(id: number): Uint8Array[] {
    const d = this.dests.get(id);
    if (!d) return [];
    const gone = d.queue.slice(d.head).filter((b) => this.kept.has(b));
    if (this.holding?.to === id && this.kept.has(this.holding.bytes)) gone.unshift(this.holding.bytes);
    if (d.dropped > 0) this.note('drop', id, d.dropped, `peer ${id}: ${d.dropped} more message(s) dropped before it left`);
    this.dests.delete(id);
    this.unturn(id);
    if (this.holding?.to === id) {
      this.holding = null;
      this.withdrawal = id;
    }
    return gone;
  }

  /** Where `id`'s messages go from now on. */
  setRoute(id: number, route: Route): void {
    const d = this.dests.get(id);
    if (!d || d.route === route) return;
    d.route = route;
    if (route === 'ring') this.unturn(id);
    else if (this.waiting(d) > 0) this.enturn(id);
  }

  routeOf(id: number): Route | null {
    return this.dests.get(id)?.route ?? null;
  }

  /** `id` rang the switch: it runs, and may read again. A silent peer is
   * probed soon (within a second of its last probe), not trusted. */
  rang(id: number, now: number): void {
    const d = this.dests.get(id);
    if (!d || d.liveness !== 'silent') return;
    d.probeBackoff = this.probeBackoffMs;
    d.probeAt = Math.min(d.probeAt, Math.max(now, d.probedAt + PROBE_EVERY_MS));
  }

  /** Queues `bytes` for `to`; a full queue loses its oldest message that
   * is not kept. `keep`: never drop this one (see the module comment).
   * False when `to` is not connected. */
  enqueue(to: number, bytes: Uint8Array, now: number, keep = false): boolean {
    const d = this.dests.get(to);
    if (!d) return false;
    if (keep) this.kept.add(bytes);
    if (this.waiting(d) >= this.limit && this.dropOldest(d)) {
      d.dropped++;
      d.droppedTotal++;
      this.counts.dropped++;
      if (now - d.droppedLoggedAt >= 1000) {
        this.note('drop', to, d.dropped, `peer ${to}: ${d.dropped} message(s) dropped: it leaves them unread and its queue holds ${this.limit}`);
        d.dropped = 0;
        d.droppedLoggedAt = now;
      }
    }
    d.queue.push(bytes);
    this.compact(d);
    if (d.route === 'slot') this.enturn(to);
    return true;
  }

  /** Replaces each message queued for `to` by what `f` makes of it (in
   * its place, in order; kept ones stay kept): for messages that no longer
   * fit where they go (a ring that broke leaves a peer the slot). */
  reshape(to: number, f: (bytes: Uint8Array) => Uint8Array[]): void {
    const d = this.dests.get(to);
    if (!d) return;
    const out: Uint8Array[] = [];
    for (const b of d.queue.slice(d.head)) {
      const parts = f(b);
      if (this.kept.has(b)) for (const x of parts) this.kept.add(x);
      out.push(...parts);
    }
    d.queue = out;
    d.head = 0;
  }

  /** The I/O layer saw the switch's slot free again: its message was taken,
   * so its receiver reads. Returns that message when it was a kept one. */
  slotTaken(): Uint8Array | null {
    const h = this.holding;
    if (!h) return null;
    this.holding = null;
    const d = this.dests.get(h.to);
    if (d) {
      d.liveness = 'responsive';
      d.probeBackoff = this.probeBackoffMs;
    }
    return this.kept.has(h.bytes) ? h.bytes : null;
  }

  /** Whether `bytes` was enqueued with `keep`. */
  isKept(bytes: Uint8Array): boolean {
    return this.kept.has(bytes);
  }

  /** The slot holds what the switch did not write (another peer wrote into
   * it): the switch's message is lost; clear it and go on. */
  slotTampered(detail: string): void {
    const h = this.holding;
    if (!h) return;
    this.holding = null;
    this.withdrawal = h.to;
    this.counts.undelivered++;
    const d = this.dests.get(h.to);
    if (d) {
      d.undelivered++;
      this.requeueKept(d, h.bytes);
    }
    this.note('undelivered', h.to, 1, `the switch's slot was overwritten while it held a message for peer ${h.to} (${detail}); withdrawn${this.kept.has(h.bytes) ? ' (to be offered again)' : ''}`);
  }

  /** A push to `to`'s ring found it full: `bytes` goes back first in line. */
  ringFull(to: number, bytes: Uint8Array, now: number): void {
    const d = this.dests.get(to);
    if (!d) return;
    this.counts.sent--;
    if (d.head > 0) d.queue[--d.head] = bytes;
    else d.queue.unshift(bytes);
    d.ringRetryAt = now + this.ringRetryMs;
    if (this.waiting(d) > this.limit && this.dropNewest(d)) {
      d.dropped++;
      d.droppedTotal++;
      this.counts.dropped++;
    }
    // Rerouted to the slot meanwhile (its ring broke): it waits its turn there.
    if (d.route === 'slot') this.enturn(to);
  }

  /** Deadlines: an untaken message past its deadline is withdrawn. */
  handleTimeout(now: number): void {
    const h = this.holding;
    if (!h || now < h.deadline) return;
    this.holding = null;
    this.withdrawal = h.to;
    this.counts.undelivered++;
    const d = this.dests.get(h.to);
    if (d) {
      d.undelivered++;
      this.requeueKept(d, h.bytes);
      if (d.liveness !== 'silent') {
        this.note(
          'undelivered',
          h.to,
          1,
          `a message to peer ${h.to} was not taken within ${h.probe ? this.probeTimeoutMs : this.takeTimeoutMs} ms: withdrawn as undelivered${this.kept.has(h.bytes) ? ' (to be offered again)' : ''}; its messages wait until it rings the switch`,
        );
      }
      d.liveness = 'silent';
      d.probeAt = now + d.probeBackoff;
      d.probeBackoff = Math.min(MAX_BACKOFF_MS, d.probeBackoff * 2);
    }
  }

  // ---- what to do ---------------------------------------------------------

  /** The next thing to do now, or null. */
  pollTransmit(now: number): Transmit | null {
    if (this.withdrawal !== null) {
      const to = this.withdrawal;
      this.withdrawal = null;
      return { kind: 'withdraw', to };
    }
    for (const d of this.dests.values()) {
      if (d.route !== 'ring' || this.waiting(d) === 0 || now < d.ringRetryAt) continue;
      this.counts.sent++;
      return { kind: 'push', to: d.id, bytes: this.shift(d) };
    }
    if (this.holding) return null;
    const d = this.nextForSlot(now);
    if (!d) return null;
    const probe = d.liveness === 'silent';
    if (probe) {
      d.probedAt = now;
      d.probeAt = now + d.probeBackoff;
    }
    this.counts.sent++;
    const bytes = this.shift(d);
    this.holding = { to: d.id, deadline: now + (probe ? this.probeTimeoutMs : this.takeTimeoutMs), probe, bytes };
    this.unturn(d.id);
    if (this.waiting(d) > 0) this.turn.push(d.id);
    return { kind: 'post', to: d.id, bytes };
  }

  /** When to call handleTimeout / pollTransmit again (a time, ms), or null
   * when nothing is pending. */
  pollTimeout(now: number): number | null {
    let at = Infinity;
    if (this.withdrawal !== null) return now;
    if (this.holding) {
      at = this.holding.deadline;
      // Someone waits for the slot: look often whether it was taken.
      if (this.turn.length > 0) at = Math.min(at, now + this.slotPollMs);
    } else {
      for (const id of this.turn) {
        const d = this.dests.get(id)!;
        at = Math.min(at, d.liveness === 'silent' ? d.probeAt : now);
      }
    }
    for (const d of this.dests.values()) {
      if (d.route === 'ring' && this.waiting(d) > 0) at = Math.min(at, Math.max(now, d.ringRetryAt));
    }
    return at === Infinity ? null : at;
  }

  /** Whether the slot holds a message of the switch (for `to`, when given). */
  holds(to?: number): boolean {
    return this.holding !== null && (to === undefined || this.holding.to === to);
  }

  /** What is worth logging since the last call (drainNotes or drainLogs). */
  drainNotes(): DeliveryNote[] {
    return this.notes.splice(0);
  }

  /** The same, as lines. */
  drainLogs(): string[] {
    return this.drainNotes().map((n) => n.text);
  }

  /** `id`'s figures, or null when it is not connected. */
  destination(id: number): DestinationStats | null {
    const d = this.dests.get(id);
    if (!d) return null;
    return { route: d.route, liveness: d.liveness, queued: this.waiting(d), dropped: d.droppedTotal, undelivered: d.undelivered };
  }

  /** Messages waiting for `id`. */
  queued(id: number): number {
    const d = this.dests.get(id);
    return d ? this.waiting(d) : 0;
  }

  get stats(): DeliveryStats {
    let queued = 0;
    for (const d of this.dests.values()) queued += this.waiting(d);
    return { queued, ...this.counts };
  }

  // ---- inside ---------------------------------------------------------------

  private note(event: DeliveryNote['event'], peer: number, count: number, text: string): void {
    this.notes.push({ event, peer, count, text });
  }

  /** A withdrawn kept message goes back first in line (and into the turn). */
  private requeueKept(d: Dest, bytes: Uint8Array): void {
    if (!this.kept.has(bytes)) return;
    if (d.head > 0) d.queue[--d.head] = bytes;
    else d.queue.unshift(bytes);
    if (d.route === 'slot') this.enturn(d.id);
  }

  /** Drops the oldest message that is not kept; false when all are kept. */
  private dropOldest(d: Dest): boolean {
    if (!this.kept.has(d.queue[d.head])) {
      d.head++;
      return true;
    }
    for (let i = d.head + 1; i < d.queue.length; i++) {
      if (!this.kept.has(d.queue[i])) {
        d.queue.splice(i, 1);
        return true;
      }
    }
    return false;
  }

  /** Drops the newest message that is not kept; false when all are kept. */
  private dropNewest(d: Dest): boolean {
    for (let i = d.queue.length - 1; i >= d.head; i--) {
      if (!this.kept.has(d.queue[i])) {
        d.queue.splice(i, 1);
        return true;
      }
    }
    return false;
  }

  private waiting(d: Dest): number {
    return d.queue.length - d.head;
  }

  private shift(d: Dest): Uint8Array {
    const bytes = d.queue[d.head++];
    this.compact(d);
    return bytes;
  }

  private compact(d: Dest): void {
    if (d.head === d.queue.length) {
      d.queue = [];
      d.head = 0;
    } else if (d.head >= 32 && d.head * 2 >= d.queue.length) {
      d.queue = d.queue.slice(d.head);
      d.head = 0;
    }
  }

  private enturn(id: number): void {
    if (!this.turn.includes(id)) this.turn.push(id);
  }

  private unturn(id: number): void {
    const i = this.turn.indexOf(id);
    if (i >= 0) this.turn.splice(i, 1);
  }

  /** Round-robin over slot destinations: the first that may be served now;
   * a silent one only when its probe is due and no one else waits. */
  private nextForSlot(now: number): Dest | null {
    let probe: Dest | null = null;
    for (const id of this.turn) {
      const d = this.dests.get(id)!;
      if (this.waiting(d) === 0) continue;
      if (d.liveness !== 'silent') return d;
      if (probe === null && now >= d.probeAt) probe = d;
    }
    return probe;
  }
}
