// One end of a link as a pure state machine (sans-I/O, in the shape of
// quinn-proto's handle_timeout(now) / poll_transmit(now), like
// ts/fabric/delivery.ts): fed the packets to send, the frames that arrived,
// what the destinations consumed and the current time, it says which frames
// to send and which packets to deliver. No fds, no clock, no timer: time is
// only ever the `now` argument (ms). docs/multi-host.md, "The link frame".
//
// The rules:
// - A stream is (source GCID, destination GCID), one direction. What it
//   carries are units: one Gen-Z packet, or several end to end (the pieces
//   of one message), one data frame each; "packet" below means a unit. Its
//   sender numbers its units 0, 1, 2, ... and keeps each until it is
//   acknowledged; its receiver delivers them exactly once and in order.
// - Credits per stream: the receiver grants `consumed + window` (the first
//   sequence number the sender may not send yet); submit() refuses a
//   packet beyond it (a 'stalled' event; 'ready' when credit comes). That
//   stream waits, no other one, and nothing is dropped: the refused packet
//   stays with the caller. So a stream's buffered packets never exceed its
//   window, on either end.
// - Cumulative acks; duplicates and out-of-window frames are discarded (and
//   acked again); frames after a gap are kept (within the credit) until it
//   fills. Unacknowledged packets are resent, all of them, when the oldest
//   has waited rtoMs (doubling up to maxRtoMs) and at every reconnect.
// - A sender without credit and nothing in flight probes, so a lost grant
//   never stalls a stream for good.
// - linkUp: each end sends a hello (its instance and window) until the
//   peer shows it saw it; nothing else is sent or accepted before the
//   peer's hello on this connection. Stream state survives linkDown /
//   linkUp. A peer whose instance changed lost its state (it restarted):
//   the streams start again from 0 and its unacknowledged packets are sent
//   again — at least once across a peer's restart, exactly once otherwise.
// - Heartbeats: a frame at least every heartbeatMs; nothing received for
//   missedHeartbeats × heartbeatMs (less lateMs, the caller's timer
//   allowance): the link is dead (event, then down).
// - Paths: one LinkEnd is this switch's end of everything it exchanges with
//   one neighbour switch, over any number of connections ("paths", numbered
//   by the caller; 0 when there is one). Each path has its own hello,
//   heartbeats and death; the streams are shared. Data goes out on whichever
//   path polls first; when a path goes down while another is up, every
//   unacknowledged packet is sent again on the others and the receiver
//   discards what it already had — nothing lost, nothing twice.
import { decodeTrain, encode, encodeTrain, FrameError, GCID_LIMIT, HEADER_BYTES, MAX_PACKET_BYTES, MAX_UNIT_BYTES, unitFault, type Data, type Frame } from './frame.js';

export interface Stream {
  /** Source GCID. */
  source: number;
  /** Destination GCID. */
  destination: number;
}

export interface LinkEndConfig {
  /** This end's incarnation (u32): a new value at each start of the process. */
  instance: number;
  /** This switch's GCID, carried in its hellos (default 0). */
  source?: number;
  /** Units of one stream this end buffers as a receiver: the credit it grants (default 64). */
  window?: number;
  /** The most bytes a unit may have (default MAX_UNIT_BYTES, at most that):
   * submit() refuses a larger one, and pollTrain() wants room for one. */
  maxUnit?: number;
  /** A frame at least this often (default 100 ms). */
  heartbeatMs?: number;
  /** Dead after this many heartbeat intervals with nothing received (default 3). */
  missedHeartbeats?: number;
  /** Judge a path dead this much before missedHeartbeats intervals of
   * silence have passed (default 0), so that a caller whose timers run
   * late by up to this much still has it down within those intervals
   * (0 <= lateMs < one heartbeat). */
  lateMs?: number;
  /** First retransmission timeout (default 200 ms). */
  rtoMs?: number;
  /** The timeout doubles up to this (default 1600 ms). */
  maxRtoMs?: number;
  /** Streams the peer may open toward this end; frames of more are rejected (default 65536). */
  maxStreams?: number;
  /** An ack that is not urgent waits up to this long (default 0: none
   * waits) for a frame to ride with: data of its reverse stream, or any
   * frame going out anyway. Urgent ones go at once: after a reconnect, for
   * a probe or a duplicate, and a grant when the sender has less than half
   * its window left of the credit last told. */
  ackDelayMs?: number;
}

export type LinkEvent =
  /** The peer's hello arrived on this connection (path). */
  | { kind: 'up'; instance: number; path: number }
  /** Nothing arrived on `path` for missedHeartbeats intervals (less
   * lateMs): it is down
   * now; close its transport, connect anew, then linkUp. */
  | { kind: 'dead'; path: number }
  /** The peer restarted (new instance): its streams start over; `resent`
   * unacknowledged packets are sent again and may arrive twice. */
  | { kind: 'restarted'; instance: number; resent: number }
  /** submit() refused a packet of this stream: no credit. */
  | { kind: 'stalled'; stream: Stream }
  /** A stalled stream has credit again: submit. */
  | { kind: 'ready'; stream: Stream };

export interface Delivered {
  stream: Stream;
  packet: Uint8Array;
}

export interface LinkEndStats {
  framesSent: number;
  framesReceived: number;
  /** Frames that did not decode (FrameError): dropped. */
  badFrames: number;
  /** Decoded but not acceptable here (an ack beyond what was sent, a frame before the hello). */
  rejectedFrames: number;
  /** Data frames already received. */
  duplicates: number;
  /** Data frames beyond the credit granted. */
  outOfWindow: number;
  /** Data frames sent again. */
  retransmits: number;
  /** The last bad frame's error, for a log line. */
  lastBadFrame: string | null;
}

const SEQ = 2 ** 32;

const newStats = (): LinkEndStats => ({ framesSent: 0, framesReceived: 0, badFrames: 0, rejectedFrames: 0, duplicates: 0, outOfWindow: 0, retransmits: 0, lastBadFrame: null });

/** One connection to the neighbour. */
interface Path {
  up: boolean;
  /** The peer's hello arrived on this connection. */
  helloSeen: boolean;
  /** The peer showed it saw ours. */
  helloConfirmed: boolean;
  helloDue: number;
  lastRx: number;
  lastTx: number;
  /** Its own frame counts. */
  stats: LinkEndStats;
}

/** The sequence number congruent to `wire` (mod 2^32) nearest `near`. */
export function unwrapSeq(near: number, wire: number): number {
  let d = (wire - (near % SEQ)) % SEQ;
  if (d < 0) d += SEQ;
  if (d >= SEQ / 2) d -= SEQ;
  return near + d;
}

interface Tx {
  stream: Stream;
  /** Every packet before `acked` is acknowledged. */
  acked: number;
  /** Packets acked..next-1, for sending and resending. */
  buf: Uint8Array[];
  /** Every packet before `sent` went out at least once on this connection. */
  sent: number;
  /** The first sequence number that may not be sent; -1 until the peer's window is known. */
  limit: number;
  stalled: boolean;
  rto: number;
  /** When the oldest frame in flight times out. */
  rtoAt: number;
  /** A stalled stream with nothing in flight probes at this time (NaN: not scheduled). */
  probeAt: number;
}

interface Rx {
  stream: Stream;
  /** The next sequence number to deliver. */
  expected: number;
  /** Frames after a gap, by sequence number. */
  held: Map<number, Uint8Array>;
  /** Delivered to the caller by pollDeliver (relative to the same numbering). */
  handed: number;
  consumed: number;
  /** The credit granted so far (never shrinks). */
  granted: number;
  /** The credit the last ack of it said. */
  told: number;
}

function keyOf(s: Stream): number {
  return s.source * GCID_LIMIT + s.destination;
}

function checkStream(s: Stream): void {
  for (const v of [s.source, s.destination]) {
    if (!Number.isInteger(v) || v < 0 || v >= GCID_LIMIT) throw new FrameError('EFIELD', `a GCID is 28 bits, not ${String(v)}`);
  }
}

export class LinkEnd {
  private readonly instance: number;
  private readonly source: number;
  private readonly window: number;
  private readonly heartbeatMs: number;
  private readonly deadMs: number;
  private readonly rtoMs: number;
  private readonly maxRtoMs: number;
  private readonly maxStreams: number;
  private readonly ackDelayMs: number;
  private readonly maxUnit: number;

  private readonly paths = new Map<number, Path>();
  private peerInstance: number | null = null;
  private peerWindow = -1;

  private readonly tx = new Map<number, Tx>();
  private readonly txOrder: Tx[] = [];
  private rr = 0;
  private readonly rx = new Map<number, Rx>();
  private readonly ackOwed = new Set<number>();
  /** Some owed ack is urgent: all go now. */
  private ackUrgent = false;
  /** When the owed acks go at the latest (NaN: at the next `now` seen plus ackDelayMs). */
  private ackDueAt = Infinity;
  private readonly probeOwed = new Set<number>();
  private readonly deliveries: Delivered[] = [];
  private deliverHead = 0;
  private readonly events: LinkEvent[] = [];
  private readonly counts: LinkEndStats = newStats();

  constructor(config: LinkEndConfig) {
    this.instance = config.instance;
    this.source = config.source ?? 0;
    this.window = config.window ?? 64;
    this.heartbeatMs = config.heartbeatMs ?? 100;
    const lateMs = config.lateMs ?? 0;
    if (!(lateMs >= 0 && lateMs < this.heartbeatMs)) throw new RangeError('0 <= lateMs < heartbeatMs');
    this.deadMs = this.heartbeatMs * (config.missedHeartbeats ?? 3) - lateMs;
    this.rtoMs = config.rtoMs ?? 200;
    this.maxRtoMs = config.maxRtoMs ?? 1600;
    this.maxStreams = config.maxStreams ?? 65536;
    this.ackDelayMs = config.ackDelayMs ?? 0;
    this.maxUnit = config.maxUnit ?? MAX_UNIT_BYTES;
    if (!Number.isInteger(this.maxUnit) || this.maxUnit < MAX_PACKET_BYTES || this.maxUnit > MAX_UNIT_BYTES) throw new RangeError(`maxUnit must be ${MAX_PACKET_BYTES}..${MAX_UNIT_BYTES}`);
    if (!Number.isInteger(this.instance) || this.instance < 0 || this.instance >= SEQ) throw new RangeError('instance must be a u32');
    if (!Number.isInteger(this.window) || this.window < 1 || this.window >= 2 ** 30) throw new RangeError('window must be 1..2^30-1');
    if (!(this.heartbeatMs > 0) || !(this.deadMs > this.heartbeatMs)) throw new RangeError('heartbeatMs > 0 and missedHeartbeats > 1');
    if (!(this.rtoMs > 0) || !(this.maxRtoMs >= this.rtoMs)) throw new RangeError('0 < rtoMs <= maxRtoMs');
    if (!(this.ackDelayMs >= 0) || !(this.ackDelayMs < this.rtoMs)) throw new RangeError('0 <= ackDelayMs < rtoMs');
  }

  // ---- inputs ---------------------------------------------------------------

  /** Queues one unit on `stream`: a Gen-Z packet, or several end to end
   * (MAX_UNIT_BYTES at most). False when the stream has no credit: the
   * unit was not taken (keep it; a 'ready' event follows). `checked`: the
   * caller checked it whole already (unitFault), so it is not checked again. */
  submit(stream: Stream, packet: Uint8Array, checked = false): boolean {
    checkStream(stream);
    const fault = checked ? null : unitFault(packet);
    if (fault !== null) throw new FrameError('EPACKET', `submit: ${fault}`);
    if (packet.length > this.maxUnit) throw new FrameError('EPACKET', `submit: a unit of ${packet.length} bytes, more than this end's ${this.maxUnit}`);
    const t = this.txOf(stream);
    if (t.acked + t.buf.length >= t.limit) {
      if (!t.stalled) {
        t.stalled = true;
        t.probeAt = NaN;
        this.events.push({ kind: 'stalled', stream: t.stream });
      }
      return false;
    }
    t.buf.push(packet);
    return true;
  }

  /** The destination of `stream` took `n` more of the packets pollDeliver gave. */
  consumed(stream: Stream, n: number): void {
    const r = this.rx.get(keyOf(stream));
    if (!Number.isInteger(n) || n < 0 || !r || r.consumed + n > r.handed) {
      throw new RangeError(`consumed(${stream.source}->${stream.destination}, ${n}): more than was delivered`);
    }
    r.consumed += n;
    this.grant(r);
  }

  /** The transport of `path` is connected (again). */
  linkUp(now: number, path = 0): void {
    const old = this.paths.get(path);
    const others = this.isUp;
    this.paths.set(path, { up: true, helloSeen: false, helloConfirmed: false, helloDue: now, lastRx: now, lastTx: -Infinity, stats: old?.stats ?? newStats() });
    // What was in flight died with the old connection (unless another path carries it).
    if (!others) for (const t of this.txOrder) this.rewind(t, now);
    for (const key of this.rx.keys()) this.owe(key, true);
  }

  /** The transport of `path` went down (closed, shut down by the peer, failed). */
  linkDown(path = 0): void {
    const p = this.paths.get(path);
    if (!p?.up) return;
    p.up = false;
    this.failover();
  }

  /** One link message arrived on `path`: a train of one or more frames,
   * taken in order. A frame that does not decode is dropped and counted
   * (badFrames), and with it the rest of its train (whose frames cannot be
   * told apart after it); the frames before it count. */
  receive(bytes: Uint8Array, now: number, path = 0): void {
    const p = this.paths.get(path);
    if (!p?.up) return;
    const { frames, error } = decodeTrain(bytes);
    for (const f of frames) {
      this.counts.framesReceived++;
      p.stats.framesReceived++;
      p.lastRx = now;
      this.take(p, path, f, now);
    }
    // Acks owed for what came wait from now at most.
    this.ackDue(now);
    if (error) {
      this.counts.badFrames++;
      this.counts.lastBadFrame = error.message;
      p.stats.badFrames++;
      p.stats.lastBadFrame = error.message;
    }
  }

  private take(p: Path, path: number, f: Frame, now: number): void {
    if (f.type === 'hello') return this.onHello(p, path, f.instance, f.window, f.seen, now);
    if (f.type === 'heartbeat') return;
    if (!p.helloSeen) {
      this.reject(p);
      return;
    }
    if (f.type === 'data') {
      if (f.reverse) this.onAck(p, { source: f.destination, destination: f.source, ...f.reverse }, now);
      return this.onData(p, { source: f.source, destination: f.destination }, f.seq, f.packet);
    }
    if (f.type === 'probe') {
      if (this.rxOf({ source: f.source, destination: f.destination })) this.owe(keyOf(f), true);
      else this.reject(p);
      return;
    }
    this.onAck(p, f, now);
  }

  /** Deadlines: a dead path, retransmissions, probes. */
  handleTimeout(now: number): void {
    let died = false;
    for (const [path, p] of this.paths) {
      if (p.up && now - p.lastRx >= this.deadMs) {
        p.up = false;
        died = true;
        this.events.push({ kind: 'dead', path });
      }
    }
    if (died) this.failover();
    if (!this.isUp) return;
    for (const t of this.txOrder) {
      if (t.sent > t.acked) {
        if (now >= t.rtoAt) {
          this.counts.retransmits += t.sent - t.acked;
          t.sent = t.acked;
          t.rto = Math.min(this.maxRtoMs, t.rto * 2);
          t.rtoAt = now + t.rto;
        }
      } else if (this.needsProbe(t)) {
        // No credit, nothing in flight: the grant may have been lost.
        if (Number.isNaN(t.probeAt)) t.probeAt = now + t.rto;
        else if (now >= t.probeAt) {
          this.probeOwed.add(keyOf(t.stream));
          t.rto = Math.min(this.maxRtoMs, t.rto * 2);
          t.probeAt = now + t.rto;
        }
      }
    }
  }

  // ---- outputs --------------------------------------------------------------

  /** The next frame to send now on `path`, or null. */
  pollTransmit(now: number, path = 0): Uint8Array | null {
    const p = this.paths.get(path);
    if (!p?.up) return null;
    const f = this.nextFrame(p, now);
    if (!f) return null;
    p.lastTx = now;
    this.counts.framesSent++;
    p.stats.framesSent++;
    return encode(f);
  }

  /** The frames to send now on `path` as one link message of at most
   * `maxBytes` (a train: data first, each with the reverse stream's ack
   * when one is owed, then the acks and probes left, every ack cumulative
   * and one per stream), or null when there is nothing to send. */
  pollTrain(now: number, path = 0, maxBytes = 65536): Uint8Array | null {
    const p = this.paths.get(path);
    if (!p?.up) return null;
    if (maxBytes < HEADER_BYTES + this.maxUnit) throw new RangeError(`a train of at most ${maxBytes} bytes cannot hold every frame`);
    const frames: Frame[] = [];
    let size = 0;
    while (size + HEADER_BYTES <= maxBytes) {
      const f = this.nextFrame(p, now, frames.length > 0, maxBytes - size);
      if (!f) break;
      // A frame with every other on its way: no heartbeat is due behind it.
      p.lastTx = now;
      frames.push(f);
      size += HEADER_BYTES + (f.type === 'data' ? f.packet.length : 0);
    }
    if (!frames.length) return null;
    this.counts.framesSent += frames.length;
    p.stats.framesSent += frames.length;
    // Every packet was checked by submit().
    return encodeTrain(frames, true);
  }

  /** When to call handleTimeout(t) next (then pollTransmit(t) on every
   * path until null), or null while every path is down. `now` when there is
   * something to send already. */
  pollTimeout(now: number): number | null {
    let at = Infinity;
    let any = false;
    for (const p of this.paths.values()) {
      if (!p.up) continue;
      any = true;
      at = Math.min(at, p.lastRx + this.deadMs, p.lastTx + this.heartbeatMs, p.helloDue);
    }
    if (!any) return null;
    if (this.isUp) {
      if (this.probeOwed.size > 0 || (this.ackOwed.size > 0 && this.ackUrgent)) return now;
      if (this.ackOwed.size > 0) at = Math.min(at, this.ackDue(now));
      for (const t of this.txOrder) {
        if (this.sendable(t)) return now;
        if (t.sent > t.acked) at = Math.min(at, t.rtoAt);
        else if (this.needsProbe(t)) at = Math.min(at, Number.isNaN(t.probeAt) ? now : t.probeAt);
      }
    }
    return Math.max(now, at);
  }

  /** The next packet for a local destination, in order per stream, or null. */
  pollDeliver(): Delivered | null {
    if (this.deliverHead === this.deliveries.length) return null;
    const d = this.deliveries[this.deliverHead++]!;
    if (this.deliverHead === this.deliveries.length) {
      this.deliveries.length = 0;
      this.deliverHead = 0;
    }
    this.rx.get(keyOf(d.stream))!.handed++;
    return d;
  }

  pollEvent(): LinkEvent | null {
    return this.events.shift() ?? null;
  }

  /** Some path is up and has heard the peer's hello. */
  get isUp(): boolean {
    for (const p of this.paths.values()) if (p.up && p.helloSeen) return true;
    return false;
  }

  /** Whether `path` is up and has heard the peer's hello. */
  pathUp(path = 0): boolean {
    const p = this.paths.get(path);
    return p !== undefined && p.up && p.helloSeen;
  }

  /** The paths that are up (connected, hello or not), in the order they were first seen. */
  get upPaths(): number[] {
    return [...this.paths].filter(([, p]) => p.up).map(([n]) => n);
  }

  /** Forgets a path that is down for good (its counts go with it). */
  dropPath(path: number): void {
    if (!this.paths.get(path)?.up) this.paths.delete(path);
  }

  /** When `path` last received a frame (-Infinity for none). */
  /** The silence after which a path is dead (ms). */
  get deadAfterMs(): number {
    return this.deadMs;
  }

  heardAt(path = 0): number {
    return this.paths.get(path)?.lastRx ?? -Infinity;
  }

  /** The peer's instance, once a hello arrived. */
  get peer(): number | null {
    return this.peerInstance;
  }

  /** Every count, over all paths. */
  get stats(): LinkEndStats {
    return { ...this.counts };
  }

  /** The counts of one path: its frames sent, received, bad and refused
   * (duplicates, outOfWindow and retransmits are the streams', over all paths). */
  pathStats(path = 0): LinkEndStats {
    const p = this.paths.get(path)?.stats ?? newStats();
    return { ...this.counts, framesSent: p.framesSent, framesReceived: p.framesReceived, badFrames: p.badFrames, rejectedFrames: p.rejectedFrames, lastBadFrame: p.lastBadFrame };
  }

  /** Frames of `path` dropped as bad or refused (pathStats' badFrames +
   * rejectedFrames), without making the stats object. */
  pathBad(path = 0): number {
    const p = this.paths.get(path)?.stats;
    return p ? p.badFrames + p.rejectedFrames : 0;
  }

  /** Packets of `stream` this end holds as its sender (unacknowledged or unsent). */
  sendBuffered(stream: Stream): number {
    return this.tx.get(keyOf(stream))?.buf.length ?? 0;
  }

  /** Packets of `stream` this end holds as its receiver (after a gap, or not yet polled). */
  receiveBuffered(stream: Stream): number {
    const r = this.rx.get(keyOf(stream));
    return r ? r.held.size + (r.expected - r.handed) : 0;
  }

  /** Packets `stream` may still submit now. */
  credit(stream: Stream): number {
    const t = this.tx.get(keyOf(stream));
    if (!t) return this.peerWindow < 0 ? 0 : this.peerWindow;
    return Math.max(0, t.limit - t.acked - t.buf.length);
  }

  // ---- inside -----------------------------------------------------------------

  private txOf(stream: Stream): Tx {
    const key = keyOf(stream);
    let t = this.tx.get(key);
    if (!t) {
      t = {
        stream: { source: stream.source, destination: stream.destination },
        acked: 0,
        buf: [],
        sent: 0,
        limit: this.peerWindow,
        stalled: false,
        rto: this.rtoMs,
        rtoAt: Infinity,
        probeAt: NaN,
      };
      this.tx.set(key, t);
      this.txOrder.push(t);
    }
    return t;
  }

  private rxOf(stream: Stream): Rx | null {
    const key = keyOf(stream);
    let r = this.rx.get(key);
    if (!r) {
      if (this.rx.size >= this.maxStreams) return null;
      r = { stream: { source: stream.source, destination: stream.destination }, expected: 0, held: new Map(), handed: 0, consumed: 0, granted: this.window, told: this.window };
      this.rx.set(key, r);
    }
    return r;
  }

  private reject(p: Path): void {
    this.counts.rejectedFrames++;
    p.stats.rejectedFrames++;
  }

  /** A path went down: while another is up, what was in flight goes again on it. */
  private failover(): void {
    if (!this.isUp) return;
    for (const t of this.txOrder) {
      if (t.sent > t.acked) this.counts.retransmits += t.sent - t.acked;
      t.sent = t.acked;
    }
  }

  private rewind(t: Tx, now: number): void {
    t.sent = t.acked;
    t.rto = this.rtoMs;
    t.rtoAt = now + t.rto;
  }

  private grant(r: Rx): void {
    const g = r.consumed + this.window;
    if (g > r.granted) r.granted = g;
    // Urgent when the sender may be running out of what it was told.
    this.owe(keyOf(r.stream), r.told - r.expected < this.window / 2);
  }

  private setCredit(t: Tx, limit: number): void {
    if (limit > t.limit) t.limit = limit;
    if (t.stalled && t.acked + t.buf.length < t.limit) {
      t.stalled = false;
      t.probeAt = NaN;
      t.rto = this.rtoMs;
      this.events.push({ kind: 'ready', stream: t.stream });
    }
  }

  private onHello(p: Path, path: number, instance: number, window: number, seen: boolean, now: number): void {
    if (this.peerInstance !== null && this.peerInstance !== instance) this.restart(instance, window, now);
    this.peerInstance = instance;
    this.peerWindow = window;
    for (const t of this.txOrder) if (t.limit < 0) this.setCredit(t, window);
    if (!p.helloSeen) {
      p.helloSeen = true;
      this.events.push({ kind: 'up', instance, path });
    }
    if (seen) {
      p.helloConfirmed = true;
      p.helloDue = Infinity;
    } else p.helloDue = now; // answer: we saw it
  }

  /** The peer lost its state: every stream starts again from 0. */
  private restart(instance: number, window: number, now: number): void {
    let resent = 0;
    for (const t of this.txOrder) {
      resent += t.buf.length;
      t.acked = 0;
      t.limit = window;
      this.rewind(t, now);
      this.setCredit(t, window);
    }
    for (const r of this.rx.values()) {
      // Packets delivered but not consumed yet still count against the credit.
      const e = r.expected;
      r.expected = 0;
      r.handed -= e;
      r.consumed -= e;
      r.held.clear();
      r.granted = this.window;
      // What the old instance was told is nothing to the new one: the grant is urgent.
      r.told = 0;
      this.grant(r);
    }
    // Deliveries not polled yet keep their place (they arrived in order).
    this.events.push({ kind: 'restarted', instance, resent });
  }

  private onData(p: Path, stream: Stream, wire: number, packet: Uint8Array): void {
    const r = this.rxOf(stream);
    if (!r) {
      this.reject(p);
      return;
    }
    const key = keyOf(stream);
    const seq = unwrapSeq(r.expected, wire);
    if (seq < r.expected || r.held.has(seq)) {
      // The sender is sending again: it has not heard the ack.
      this.owe(key, true);
      this.counts.duplicates++;
      return;
    }
    if (seq >= r.granted) {
      this.owe(key, true);
      this.counts.outOfWindow++;
      return;
    }
    this.owe(key, false);
    if (seq > r.expected) {
      r.held.set(seq, packet);
      return;
    }
    this.deliveries.push({ stream: r.stream, packet });
    r.expected++;
    for (let p = r.held.get(r.expected); p !== undefined; p = r.held.get(r.expected)) {
      r.held.delete(r.expected);
      this.deliveries.push({ stream: r.stream, packet: p });
      r.expected++;
    }
  }

  private onAck(p: Path, f: { source: number; destination: number; ack: number; credit: number }, now: number): void {
    const t = this.tx.get(keyOf(f));
    if (!t) {
      this.reject(p);
      return;
    }
    const ack = unwrapSeq(t.acked, f.ack);
    const credit = unwrapSeq(ack, f.credit);
    const next = t.acked + t.buf.length;
    // An honest receiver never acks what was not sent, and grants at most
    // its window beyond what it acks (consumed + window, consumed <= ack).
    if (ack > next || credit < ack || credit - ack > this.peerWindow) {
      this.reject(p);
      return;
    }
    if (ack > t.acked) {
      t.buf.splice(0, ack - t.acked);
      if (t.sent < ack) t.sent = ack;
      t.acked = ack;
      t.rto = this.rtoMs;
      t.rtoAt = now + t.rto;
    }
    this.setCredit(t, credit);
  }

  /** Wants to send (a refused submit or unsent packets) but may not, and has nothing in flight. */
  private needsProbe(t: Tx): boolean {
    return t.sent === t.acked && t.limit >= 0 && !this.sendable(t) && (t.stalled || t.buf.length > 0);
  }

  private sendable(t: Tx): boolean {
    return t.sent < t.acked + t.buf.length && t.sent < t.limit;
  }

  private ackOf(r: Rx): { ack: number; credit: number } {
    r.told = r.granted;
    return { ack: r.expected % SEQ, credit: r.granted % SEQ };
  }

  /** An ack of stream `key` is owed; `urgent`: it goes at once. */
  private owe(key: number, urgent: boolean): void {
    if (urgent || this.ackDelayMs === 0) this.ackUrgent = true;
    else if (this.ackOwed.size === 0 || this.ackDueAt === Infinity) this.ackDueAt = NaN;
    this.ackOwed.add(key);
  }

  /** When the owed acks are due (they are not urgent). */
  private ackDue(now: number): number {
    if (Number.isNaN(this.ackDueAt)) this.ackDueAt = now + this.ackDelayMs;
    return this.ackDueAt;
  }

  private ackSent(key: number): void {
    this.ackOwed.delete(key);
    if (this.ackOwed.size === 0) {
      this.ackUrgent = false;
      this.ackDueAt = Infinity;
    }
  }

  /** `riding`: the train holds a frame already (an ack may ride along);
   * `room`: the bytes it has left (a data frame that does not fit waits for
   * the next train; every other frame is a header). */
  private nextFrame(p: Path, now: number, riding = false, room = Infinity): Frame | null {
    if (now >= p.helloDue) {
      p.helloDue = p.helloConfirmed ? Infinity : now + this.heartbeatMs;
      return { type: 'hello', instance: this.instance, window: this.window, seen: p.helloSeen, source: this.source };
    }
    if (p.helloSeen) {
      // Data first: an ack owed for its reverse stream rides along.
      const n = this.txOrder.length;
      for (let i = 0; i < n; i++) {
        const t = this.txOrder[(this.rr + i) % n]!;
        if (!this.sendable(t) || HEADER_BYTES + t.buf[t.sent - t.acked]!.length > room) continue;
        this.rr = (this.rr + i + 1) % n;
        if (t.sent === t.acked) t.rtoAt = now + t.rto;
        const seq = t.sent++;
        const data: Data = { type: 'data', ...t.stream, seq: seq % SEQ, packet: t.buf[seq - t.acked]! };
        const reverse = keyOf({ source: t.stream.destination, destination: t.stream.source });
        if (this.ackOwed.has(reverse)) {
          this.ackSent(reverse);
          data.reverse = this.ackOf(this.rx.get(reverse)!);
        }
        return data;
      }
      // The acks left: urgent ones, due ones, or riding with other frames
      // (a heartbeat due is one).
      if (this.ackOwed.size > 0 && (riding || this.ackUrgent || now >= this.ackDue(now) || now - p.lastTx >= this.heartbeatMs)) {
        for (const key of this.ackOwed) {
          this.ackSent(key);
          const r = this.rx.get(key)!;
          return { type: 'ack', ...r.stream, ...this.ackOf(r) };
        }
      }
      for (const key of this.probeOwed) {
        this.probeOwed.delete(key);
        const t = this.tx.get(key)!;
        return { type: 'probe', ...t.stream, seq: (t.acked + t.buf.length) % SEQ };
      }
    }
    if (now - p.lastTx >= this.heartbeatMs) return { type: 'heartbeat' };
    return null;
  }
}
