// The fabric as I/O: the switch is a peer of the server (ID nClients + 1)
// with its own eventfds, the shared object starts with FAME-Z's mailbox, and
// the switch's messages go out through its slot or, to a peer that reads
// it, its ring channel to that peer. Decisions are pure: the Switch's (what
// to answer) and the Delivery's (what goes out when, through which door);
// this module waits on doorbells, reads and writes the shared memory, rings
// peers and keeps one timer.
import '../dispose.js';
import { EventEmitter } from 'node:events';

import { silentLogger, type Logger } from '../log.js';
import type { RingLayoutInfo } from '../native.js';
import { EventFd, genzCheck } from '../native.js';
import { toBytes, type TextMessage } from '../genz/text.js';
import type { Server } from '../server/server.js';
import { Delivery, type DeliveryConfig, type DeliveryStats, type DestinationStats, type Transmit } from './delivery.js';
import {
  GLOBALS_END,
  GLOBAL_BUF_OFFSET,
  GLOBAL_N_CLIENTS,
  GLOBAL_N_EVENTS,
  GLOBAL_RING_BASE,
  GLOBAL_RING_CAPACITY,
  GLOBAL_RING_COUNT,
  GLOBAL_RING_MAGIC,
  GLOBAL_SERVER_ID,
  GLOBAL_SLOTSIZE,
  MAX_SLOT_PAYLOAD,
} from '../layout.generated.js';
import type { BusyPoll } from '../busy-poll.js';
import { FEATURE_MEMBERSHIP_BELL, FEATURE_SWITCH_RING, clearFeatures, readFeatures } from './features.js';
import { bumpMembership, writePresent } from './presence.js';
import { RingCorrupt, RingReader, RingWriter, ringOffset } from './ring.js';
import { endToEnd, looksCarried, looksGlobal, slotPieces, splitPackets } from '../link/carry.js';
import { UNREACHABLE } from './remote.js';
import { HOLD_RFC_MS, Switch, type PortRecord, type Reaction, type SwitchConfig } from './switch.js';

/** What the fabric needs of a mailbox (the native FAME-Z slot layout). */
export interface MailboxPort {
  post(sender: number, receiver: number, message: Uint8Array): boolean;
  take(sender: number): Uint8Array | null;
  busy(slot: number): boolean;
  slot(slot: number): { buflen: number; lastResponder: number };
  nodename(slot: number): string;
  setNodename(slot: number, name: string): void;
  clear(slot: number): void;
  /** Writes a slot's peer_SID and peer_CID (the switch's own: where peers read the fabric's SID). */
  setPeerIds?(slot: number, sid: number, cid: number): void;
  /** The ring channels, when the server set them up. */
  readonly ringLayout?: RingLayoutInfo | null;
  close(): void;
}

/** Where a switch's messages for other switches go (its links, ts/link/switch-links.ts). */
export interface Forwarder {
  /** A message from local peer `sender`, as the packets that carry it
   * (ts/link/carry.ts), for a peer of another switch: 'accepted', 'wait'
   * (its stream has no credit now: the switch holds it, reads nothing
   * more of `sender`'s, and offers it again after resume(sender)), or why
   * it is refused (one line). `checked`: every packet's CRCs were
   * checked already. */
  forward(sender: number, packets: Uint8Array[], checked?: boolean): 'accepted' | 'wait' | Refusal;
}

/** Why a message for another switch is refused; `unreachable`: the SID it
 * has no route to (the sender is told, so that what waits on it fails). */
export interface Refusal {
  refused: string;
  unreachable?: number;
}

export interface FabricConfig extends SwitchConfig, DeliveryConfig {
  /** Where the switch's events go (default: nowhere). */
  logger?: Logger;
  /** What the switch writes: FAME-Z text (default) or binary Gen-Z. */
  encode?: (m: TextMessage, to: number) => Uint8Array;
  /** How often to check the mailbox globals besides every connect and
   * doorbell (default 1000 ms). */
  globalsCheckMs?: number;
}

/** What passed between the switch and one peer since it connected. */
export interface PortCounters {
  /** Messages and bytes the peer sent the switch (malformed ones too). */
  messagesIn: number;
  bytesIn: number;
  /** Messages and bytes the switch wrote into its slot or ring for the peer. */
  messagesOut: number;
  bytesOut: number;
  /** Times the peer rang the switch. */
  doorbells: number;
  /** Its messages the switch could not parse. */
  rejected: number;
}

/** One message through the switch, as its events and the log describe it. */
export interface SwitchMessage {
  direction: 'in' | 'out';
  peer: number;
  nodename: string;
  /** The message's kind ('ping', 'link-rfc', ...; 'malformed' when it is none). */
  kind: string;
  bytes: number;
  route: 'slot' | 'ring';
  /** The message itself (not a copy: read it before the listener returns). */
  payload: Uint8Array;
}

export interface FabricEvents {
  message: [SwitchMessage];
  /** The switch's record of a port changed (attributes, link state, nodename). */
  port: [PortRecord];
  drop: [{ peer: number; count: number; reason: string }];
  undelivered: [{ peer: number; reason: string }];
  reject: [{ peer: number; reason: string }];
}

const newCounters = (): PortCounters => ({ messagesIn: 0, bytesIn: 0, messagesOut: 0, bytesOut: 0, doorbells: 0, rejected: 0 });

/** Messages the switch reads from one peer's ring per doorbell (or turn). */
const RING_READ_BUDGET = 256;

/** Slot 0's words the server owns: FAME-Z's five globals and famez's four
 * ring words (docs/ring-channels.md), by u64 index. */
const GLOBAL_WORDS = GLOBALS_END / 8;
const GLOBAL_NAMES: Readonly<Record<number, string>> = {
  [GLOBAL_SLOTSIZE / 8]: 'slotsize',
  [GLOBAL_BUF_OFFSET / 8]: 'buf_offset',
  [GLOBAL_N_CLIENTS / 8]: 'nClients',
  [GLOBAL_N_EVENTS / 8]: 'nEvents',
  [GLOBAL_SERVER_ID / 8]: 'server_id',
  [GLOBAL_RING_MAGIC / 8]: 'ring_magic',
  [GLOBAL_RING_BASE / 8]: 'ring_base',
  [GLOBAL_RING_CAPACITY / 8]: 'ring_capacity',
  [GLOBAL_RING_COUNT / 8]: 'ring_count',
};
/** The ring magic's word, restored last. */
const RING_MAGIC_WORD = GLOBAL_RING_MAGIC / 8;

export class Fabric extends EventEmitter<FabricEvents> {
  readonly switch: Switch;
  private readonly log: Logger;
  private readonly counters = new Map<number, PortCounters>();
  /** The kind of each message the switch queued, until it goes out. */
  private readonly kinds = new WeakMap<Uint8Array, string>();
  /** The switch's eventfds: vector S is rung by peer S. */
  readonly vectors: EventFd[] = [];
  private readonly delivery: Delivery;
  private timer: NodeJS.Timeout | null = null;
  private timerAt = Infinity;
  /** Timers of Link RFCs the switch holds for a fabric manager (Switch.release). */
  private readonly holds = new Set<NodeJS.Timeout>();
  /** A pumpSoon() is queued. */
  private pumpQueued = false;
  private globalsTimer: NodeJS.Timeout | null = null;
  private server: Server | null = null;
  /** Removes the listeners attach() put on the server. */
  private detach: (() => void) | null = null;
  private mailbox: MailboxPort | null = null;
  /** The shared object as an ArrayBuffer (null past Node's limit: then
   * everything goes through the slot and the globals are not watched). */
  private memory: ArrayBuffer | null = null;
  private layout: RingLayoutInfo | null = null;
  private readonly rings = new Map<number, RingWriter>();
  /** The switch's ends of the rings peers write to it. */
  private readonly readers = new Map<number, RingReader>();
  /** The length of the message the switch last posted into its slot. */
  private postedLength = 0;
  /** Peers whose ring from the switch was found corrupt: slot only. */
  private readonly brokenRings = new Set<number>();
  /** The globals as the server wrote them, and a view to compare. */
  private globals: BigUint64Array | null = null;
  private expected: bigint[] = [];
  /** Per sender: when a mismatch was last logged (rate limit). */
  private readonly mismatchLoggedAt = new Map<number, number>();
  /** The last connection number written into a present word. */
  private connections = 0n;
  private isClosed = false;
  /** The links, when the switch has them. */
  forwarder: Forwarder | null = null;
  /** Busy polling (famez serve --busy-poll): kicked by every doorbell. */
  busyPoll: BusyPoll | null = null;
  /** Per local sender: its messages for other switches that wait for credit, in order. */
  private readonly held = new Map<number, Uint8Array[]>();
  /** Forwarded messages queued for local peers: called once each is taken (or its peer left). */
  private readonly onTaken = new WeakMap<Uint8Array, () => void>();
  /** Peers whose ring a push of this pump found empty: rung once at its end. */
  private readonly bells = new Set<number>();

  /** Creates the switch's eventfds, so the server can advertise them. */
  constructor(readonly config: FabricConfig) {
    super();
    this.log = (config.logger ?? silentLogger).child({ component: 'switch' });
    this.switch = new Switch(config);
    this.delivery = new Delivery(config);
    for (let v = 0; v < config.nClients + 2; v++) this.vectors.push(new EventFd());
    // Vector 0 is nobody (IDs start at 1) and the last is the switch itself.
    for (let sender = 1; sender <= config.nClients; sender++) {
      this.vectors[sender].watch(() => this.onDoorbell(sender));
    }
  }

  /** The server member record: the switch is advertised to every newcomer. */
  get member(): { id: number; vectors: EventFd[] } {
    return { id: this.switch.serverId, vectors: this.vectors };
  }

  /** What the switch has sent, dropped and withdrawn, and what waits. */
  get stats(): DeliveryStats {
    return this.delivery.stats;
  }

  /** What passed between the switch and connected peer `id`. */
  portCounters(id: number): PortCounters | null {
    return this.counters.get(id) ?? null;
  }

  /** The switch's delivery figures for connected peer `id`. */
  destination(id: number): DestinationStats | null {
    return this.delivery.destination(id);
  }

  /** Its nodename as its slot says now ('' when none or unknown). */
  nodename(id: number): string {
    try {
      return this.mailbox?.nodename(id) ?? '';
    } catch {
      return '';
    }
  }

  /** The shared object's ring layout, when the server set rings up. */
  get ringLayout(): RingLayoutInfo | null {
    return this.layout;
  }

  /** The shared object, when it is mapped as an ArrayBuffer. */
  get sharedBuffer(): ArrayBuffer | null {
    return this.memory;
  }

  /** The switch sends `text` to connected peer `to` (its slot or ring,
   * under the usual delivery rules); false when `to` is not connected. */
  say(to: number, text: string): boolean {
    if (this.closed || !this.switch.port(to)) return false;
    this.log.info({ event: 'say', ...this.who(to) }, `sending peer ${to} a message as the switch (${Buffer.byteLength(text)} bytes)`);
    this.apply({ send: [{ to, message: { kind: 'text', text } }], log: [] });
    return true;
  }

  /** The switch sends `text` to every connected peer (one log line). */
  broadcast(text: string): void {
    if (this.closed) return;
    const peers = (this.server?.peerIds ?? []).filter((id) => this.switch.port(id));
    if (peers.length === 0) return;
    this.log.info({ event: 'say', peers }, `telling ${peers.length} peer(s): ${text}`);
    this.apply({ send: peers.map((to) => ({ to, message: { kind: 'text', text } })), log: [] });
  }

  /** `{ nodename }` for log events, when it has one. */
  private who(id: number): { peer: number; nodename?: string } {
    const nodename = this.nodename(id);
    return nodename ? { peer: id, nodename } : { peer: id };
  }

  /** Joins the server: the mailbox over its shared memory (globals already
   * written), and the server's connects and departures. */
  attach(server: Server, mailbox: MailboxPort): void {
    this.server = server;
    this.mailbox = mailbox;
    try {
      this.memory = server.sharedMemory.buffer as ArrayBuffer;
    } catch {
      this.memory = null;
    }
    this.layout = this.memory ? (mailbox.ringLayout ?? null) : null;
    if (this.memory) {
      this.globals = new BigUint64Array(this.memory, 0, GLOBAL_WORDS);
      this.expected = [...this.globals];
      const every = this.config.globalsCheckMs ?? 1000;
      this.globalsTimer = setInterval(() => this.checkGlobals('a periodic check'), every);
      this.globalsTimer.unref();
    }
    mailbox.setNodename(this.switch.serverId, 'Z-switch');
    // Peers learn the fabric's SID (their GCIDs' upper part) from here.
    mailbox.setPeerIds?.(this.switch.serverId, this.config.sid, this.switch.serverId * 100);
    server.describePeer = (id) => {
      const nodename = this.nodename(id);
      return nodename ? { nodename } : {};
    };
    this.announce(this.switch.serverId, true);
    const onConnect = ({ id }: { id: number }) => {
      this.counters.set(id, newCounters());
      this.checkGlobals(`peer ${id} connecting`);
      this.announce(id, true);
      this.delivery.connect(id);
      this.apply(this.switch.connect(id));
    };
    const onDisconnect = ({ id }: { id: number }) => {
      this.counters.delete(id);
      this.switch.disconnect(id);
      for (const b of this.delivery.leave(id)) this.taken(b);
      this.held.delete(id);
      this.rings.delete(id);
      this.readers.delete(id);
      this.brokenRings.delete(id);
      this.mismatchLoggedAt.delete(id);
      // FAME-Z clears a departed peer's slot; an unread message to it is moot.
      mailbox.setNodename(id, '');
      mailbox.clear(id);
      if (this.memory) clearFeatures(this.memory, id);
      this.emptyRingsTo(id);
      this.announce(id, false);
      this.pump();
    };
    const onClose = () => this.close();
    server.on('connect', onConnect);
    server.on('disconnect', onDisconnect);
    server.on('close', onClose);
    // Closed before its server (a `using` block closes in reverse order),
    // it lets go of the server: the server's later departures and close
    // find nothing of the closed switch to update.
    this.detach = () => {
      server.off('connect', onConnect);
      server.off('disconnect', onDisconnect);
      server.off('close', onClose);
      server.describePeer = null;
    };
  }

  /** A departed peer's incoming rings are emptied (it was their only
   * consumer): whoever gets its ID next reads nothing meant for its
   * predecessor. A producer that pushes before it hears of the leave can
   * still leave a message there (docs/ring-channels.md). */
  private emptyRingsTo(id: number): void {
    const layout = this.layout;
    if (!this.memory || !layout) return;
    for (let from = 1; from <= this.switch.serverId; from++) {
      if (from !== id) new RingReader(this.memory, ringOffset(layout, from, id), layout.capacity).discard();
    }
  }

  /** Writes `id`'s present word (presence.ts) and rings vector 0 of the
   * other peers that asked for it. Without the ArrayBuffer (an object past
   * Node's limit) there are no present words: guests cannot join then. */
  private announce(id: number, present: boolean): void {
    const memory = this.memory;
    if (!memory) return;
    writePresent(memory, id, present ? ++this.connections : 0n);
    bumpMembership(memory);
    for (const peer of this.server?.peerIds ?? []) {
      if (peer !== id && (readFeatures(memory, peer) & FEATURE_MEMBERSHIP_BELL) !== 0) this.server!.ring(peer, 0);
    }
  }

  private onDoorbell(sender: number): void {
    const mailbox = this.mailbox;
    if (!mailbox || this.closed) return;
    this.busyPoll?.kick();
    this.checkGlobals(`a doorbell from peer ${sender}`);
    const c = this.counters.get(sender);
    if (c) c.doorbells++;
    this.log.trace({ event: 'doorbell', peer: sender }, `peer ${sender} rang the switch`);
    this.delivery.rang(sender, Date.now());
    this.route(sender);
    this.service(sender);
    this.pump();
  }

  /** Whether `sender` has as many messages for other switches held (waiting
   * for credit or a route) as the switch keeps: then it reads nothing more
   * of its (its ring fills, its slot stays busy). Below that its messages to
   * the switch itself are still read and answered. */
  private holdsFull(sender: number): boolean {
    return (this.held.get(sender)?.length ?? 0) >= RING_READ_BUDGET;
  }

  /** Reads `sender`'s ring and slot, unless it holds all it may (holdsFull). */
  private service(sender: number): void {
    const mailbox = this.mailbox;
    if (!mailbox || this.holdsFull(sender)) return;
    this.readRing(sender);
    if (!this.holdsFull(sender) && mailbox.busy(sender)) {
      const target = mailbox.slot(sender).lastResponder;
      const me = this.switch.serverId;
      // A slot says whom its message is for. One for another peer is left
      // for that peer (whoever rang this vector); 0 is FAME-Z's "unset".
      if (target !== me && target !== 0 && target >= 1 && target <= me) {
        this.mismatch(sender, `peer ${sender}'s slot holds a message for peer ${target}, but the switch's vector ${sender} was rung: left for peer ${target}`);
      } else {
        if (target !== me && target !== 0) this.mismatch(sender, `peer ${sender}'s slot names receiver ${target}, which is no peer: taken by the switch`);
        let bytes: Uint8Array | null = null;
        try {
          bytes = mailbox.take(sender);
        } catch (e) {
          const reason = (e as Error).message;
          this.log.warn({ event: 'reject', ...this.who(sender), reason }, `peer ${sender}: ${reason}; rejected`);
          this.emit('reject', { peer: sender, reason });
        }
        if (bytes !== null) this.received(sender, bytes, 'slot');
      }
    }
  }

  /** The switch's real ring channel from `sender`: each message in it is
   * handled like one in its slot. At most RING_READ_BUDGET a doorbell; the
   * rest on the next loop turn (the producer rings only an empty ring). A
   * corrupt ring is reported and cleared, the good messages before it kept. */
  private readRing(sender: number): void {
    if (!this.memory || !this.layout) return;
    let ring = this.readers.get(sender);
    if (!ring) {
      ring = new RingReader(this.memory, ringOffset(this.layout, sender, this.switch.serverId), this.layout.capacity);
      this.readers.set(sender, ring);
    }
    const got: Uint8Array[] = [];
    const copy = (bytes: Buffer, start: number, length: number) => got.push(Uint8Array.prototype.slice.call(bytes, start, start + length));
    let n = 0;
    try {
      n = ring.read(copy, RING_READ_BUDGET);
    } catch (e) {
      if (!(e instanceof RingCorrupt)) throw e;
      const dropped = ring.discardCorrupt();
      this.mismatch(sender, `ring from peer ${sender}: ${e.message}; ${e.delivered} message(s) before it handled, ${dropped} byte(s) discarded`);
    }
    for (const bytes of got) this.received(sender, bytes, 'ring');
    if (n >= RING_READ_BUDGET) setImmediate(() => {
      if (!this.closed && this.switch.port(sender) && !this.holdsFull(sender)) {
        this.readRing(sender);
        this.pump();
      }
    });
  }

  /** Logs a mismatch between a slot and the vector it was rung on, at most
   * once a second per sender. */
  private mismatch(sender: number, line: string): void {
    const now = Date.now();
    if (now - (this.mismatchLoggedAt.get(sender) ?? -Infinity) < 1000) return;
    this.mismatchLoggedAt.set(sender, now);
    this.log.warn({ event: 'reject', ...this.who(sender) }, line);
  }

  /** The server owns slot 0: anything else written there is put back. */
  private checkGlobals(when: string): void {
    const g = this.globals;
    if (!g || this.closed) return;
    let changed: string[] | null = null;
    for (let i = 0; i < GLOBAL_WORDS; i++) {
      const v = g[i];
      if (v !== this.expected[i]) (changed ??= []).push(`${GLOBAL_NAMES[i]} ${v} (was ${this.expected[i]})`);
    }
    if (!changed) return;
    // The ring magic last, as at start-up: a reader that sees it sees the rest.
    for (let i = 0; i < GLOBAL_WORDS; i++) if (i !== RING_MAGIC_WORD) g[i] = this.expected[i];
    Atomics.store(g, RING_MAGIC_WORD, this.expected[RING_MAGIC_WORD]);
    const peers = this.server?.peerIds ?? [];
    this.log.warn(
      { event: 'globals-overwritten', connected: peers },
      `the mailbox globals were overwritten (${changed.join(', ')}), noticed on ${when}; restored. A peer wrote them: connected are ${peers.length ? peers.join(', ') : 'none'}`,
    );
  }

  /** Where the switch's messages to `id` go: its ring when it says it reads it. */
  private route(id: number): void {
    if (!this.memory || !this.layout || !this.switch.port(id)) return;
    const ring = !this.brokenRings.has(id) && (readFeatures(this.memory, id) & FEATURE_SWITCH_RING) !== 0;
    this.delivery.setRoute(id, ring ? 'ring' : 'slot');
  }

  /** A message from `sender` (its slot's or ring's bytes): counted,
   * handed to the switch, its reaction applied. */
  private received(sender: number, bytes: Uint8Array, route: 'slot' | 'ring'): void {
    if (this.forwarder && looksGlobal(bytes)) {
      const c = this.counters.get(sender);
      if (c) {
        c.messagesIn++;
        c.bytesIn += bytes.length;
      }
      const waiting = this.held.get(sender);
      if (waiting) waiting.push(bytes);
      else this.forward(sender, bytes);
      return;
    }
    const nodename = this.nodename(sender);
    const reaction = this.switch.receive(sender, bytes, nodename);
    const c = this.counters.get(sender);
    if (c) {
      c.messagesIn++;
      c.bytesIn += bytes.length;
      if (reaction.rejected !== undefined) c.rejected++;
    }
    const kind = reaction.received ?? 'malformed';
    const m: SwitchMessage = { direction: 'in', peer: sender, nodename, kind, bytes: bytes.length, route, payload: bytes };
    this.log.debug({ event: 'message', direction: 'in', peer: sender, nodename, kind, bytes: bytes.length, route }, `peer ${sender} -> switch: ${kind} (${bytes.length} bytes, ${route})`);
    this.emit('message', m);
    if (reaction.rejected !== undefined) this.emit('reject', { peer: sender, reason: reaction.rejected });
    this.apply(reaction, sender);
  }

  /** Hands one of `sender`'s messages for another switch to the links;
   * false when it must wait for credit (it is held then). */
  private forward(sender: number, bytes: Uint8Array): boolean {
    const packets = splitPackets(bytes);
    // All the message's CRCs in one native call (the piece by piece checks
    // name the fault of a message that fails it).
    const r = packets ? this.forwarder!.forward(sender, packets, genzCheck(bytes) === -1) : { refused: 'its packets do not add up to the message (LEN)' };
    if (r === 'accepted') return true;
    if (r === 'wait') {
      const waiting = this.held.get(sender);
      if (waiting) waiting.unshift(bytes);
      else this.held.set(sender, [bytes]);
      return false;
    }
    const c = this.counters.get(sender);
    if (c) c.rejected++;
    this.log.warn({ event: 'reject', ...this.who(sender), reason: r.refused }, `peer ${sender}: a message for another switch refused: ${r.refused}`);
    this.emit('reject', { peer: sender, reason: r.refused });
    // Its request would otherwise wait out its own timeout for an answer
    // that cannot come (a route lost before, or held for HOLD_MS in vain).
    if (r.unreachable !== undefined) this.apply({ send: [{ to: sender, message: { kind: 'text', text: `${UNREACHABLE}${r.unreachable}` } }], log: [] });
    return true;
  }

  /** The links have credit again for `sender`'s held messages: they go, in
   * order, and its ring and slot are read again once all have. */
  resume(sender: number): void {
    const waiting = this.held.get(sender);
    if (!waiting || this.closed) return;
    this.held.delete(sender);
    while (waiting.length) {
      const bytes = waiting.shift()!;
      if (!this.forward(sender, bytes)) {
        // Held again: what followed it stays behind it.
        this.held.get(sender)!.push(...waiting);
        return;
      }
    }
    this.service(sender);
    this.pump();
  }

  /** A message from another switch for local peer `to` (`messages`: the
   * pieces to write, each one slot or ring message; ts/link/carry.ts),
   * queued by the switch's usual rules but never dropped; `taken` is
   * called once the last piece is taken (or `to` left). False when `to` is
   * not connected. */
  deliverRemote(to: number, messages: Uint8Array[], taken: () => void): boolean {
    if (this.closed || !this.switch.port(to) || messages.length === 0) return false;
    this.route(to);
    // A ring takes the pieces end to end, as many to a ring message as it
    // holds (one record, one pop for the peer, per message of up to about
    // half the ring); the slot, pieces of its size.
    if (this.delivery.routeOf(to) !== 'ring') messages = messages.flatMap((m) => this.forSlot(m));
    else if (messages.length > 1) messages = endToEnd(messages, this.ringTo(to).maxMessage);
    const now = Date.now();
    for (const m of messages) this.delivery.enqueue(to, m, now, true);
    this.onTaken.set(messages[messages.length - 1], taken);
    this.pumpSoon();
    return true;
  }

  /** A pump once the current task is done: the messages of one link train
   * go into their rings together, with one doorbell each, not one per
   * message (each doorbell wakes a reader that may take the CPU then). */
  private pumpSoon(): void {
    if (this.pumpQueued) return;
    this.pumpQueued = true;
    queueMicrotask(() => {
      this.pumpQueued = false;
      this.pump();
    });
  }

  /** A message as the slot takes it: pieces end to end (deliverRemote's
   * for a ring) one to a slot message, and a piece longer than a slot
   * message cut into pieces that fit (its taken() callback moves to the last). */
  private forSlot(bytes: Uint8Array): Uint8Array[] {
    if (bytes.length <= MAX_SLOT_PAYLOAD || !looksCarried(bytes)) return [bytes];
    let parts: Uint8Array[];
    try {
      parts = slotPieces(bytes, MAX_SLOT_PAYLOAD);
    } catch {
      return [bytes];
    }
    const f = this.onTaken.get(bytes);
    if (f) {
      this.onTaken.delete(bytes);
      this.onTaken.set(parts[parts.length - 1], f);
    }
    return parts;
  }

  private taken(bytes: Uint8Array): void {
    const f = this.onTaken.get(bytes);
    if (!f) return;
    this.onTaken.delete(bytes);
    f();
  }

  /** The fabric manager in charge changed (Switch.manager): every configured peer is told. */
  managerChanged(): void {
    if (this.closed) return;
    this.apply(this.switch.reconfigure());
  }

  private apply(reaction: Reaction, from?: number): void {
    for (const line of reaction.log) {
      if (reaction.rejected !== undefined) this.log.warn({ event: 'reject', ...this.who(from!), reason: reaction.rejected }, line);
      else this.log.info({ event: 'switch', ...(from === undefined ? {} : this.who(from)) }, line);
    }
    if (from !== undefined && (reaction.received === 'link-ctl-ack' || reaction.received === 'standalone-ack' || reaction.received === 'link-rfc')) {
      const port = this.switch.port(from);
      if (port) this.emit('port', { ...port });
    }
    if (reaction.held !== undefined) {
      const id = reaction.held;
      const timer = setTimeout(() => {
        this.holds.delete(timer);
        if (!this.closed) this.apply(this.switch.release(id));
      }, HOLD_RFC_MS);
      this.holds.add(timer);
    }
    const encode = this.config.encode ?? toBytes;
    const now = Date.now();
    for (const { to, message, keep } of reaction.send) {
      this.route(to);
      const bytes = encode(message, to);
      this.kinds.set(bytes, message.kind);
      this.delivery.enqueue(to, bytes, now, keep);
    }
    this.pump();
  }

  /** A message of the switch's went out to `to` (slot or ring). */
  private sent(to: number, bytes: Uint8Array, route: 'slot' | 'ring'): void {
    const c = this.counters.get(to);
    if (c) {
      c.messagesOut++;
      c.bytesOut += bytes.length;
    }
    if (this.listenerCount('message') === 0 && !this.log.isLevelEnabled?.('debug')) return;
    const nodename = this.nodename(to);
    const m: SwitchMessage = { direction: 'out', peer: to, nodename, kind: this.kinds.get(bytes) ?? 'message', bytes: bytes.length, route, payload: bytes };
    this.log.debug({ event: 'message', direction: 'out', peer: to, nodename, kind: m.kind, bytes: bytes.length, route }, `switch -> peer ${to}: ${m.kind} (${bytes.length} bytes, ${route})`);
    this.emit('message', m);
  }

  /** Does what the delivery says, then sleeps until it next has something. */
  private pump(): void {
    const mailbox = this.mailbox;
    if (this.closed || !mailbox) return;
    const me = this.switch.serverId;
    const now = Date.now();
    const d = this.delivery;
    if (d.holds()) {
      const s = mailbox.slot(me);
      if (s.buflen === 0) {
        const kept = d.slotTaken();
        if (kept) this.taken(kept);
      }
      else if (!d.holds(s.lastResponder) || s.buflen !== this.postedLength) d.slotTampered(`buflen ${s.buflen}, last_responder ${s.lastResponder}`);
    }
    d.handleTimeout(now);
    for (let t = d.pollTransmit(now); t !== null; t = d.pollTransmit(now)) this.execute(t, now);
    // One doorbell per ring that some push of this batch found empty.
    for (const to of this.bells) this.server?.ring(to, me);
    this.bells.clear();
    for (const n of d.drainNotes()) {
      this.log.warn({ event: n.event, ...this.who(n.peer), count: n.count }, n.text);
      if (n.event === 'drop') this.emit('drop', { peer: n.peer, count: n.count, reason: n.text });
      else this.emit('undelivered', { peer: n.peer, reason: n.text });
    }
    const at = d.pollTimeout(now);
    if (at === null) return;
    if (this.timer && at >= this.timerAt) return;
    if (this.timer) clearTimeout(this.timer);
    this.timerAt = at;
    this.timer = setTimeout(() => {
      this.timer = null;
      this.timerAt = Infinity;
      this.pump();
    }, Math.max(0, at - now));
  }

  private execute(t: Transmit, now: number): void {
    const mailbox = this.mailbox!;
    const me = this.switch.serverId;
    switch (t.kind) {
      case 'withdraw':
        mailbox.clear(me);
        // A peer slow to start may have said since that it reads its ring:
        // what is kept for it goes there, not back to the slot.
        this.route(t.to);
        return;
      case 'post':
        if (!mailbox.post(me, t.to, t.bytes)) {
          // The switch's own slot is never busy when the delivery posts:
          // another peer wrote into it. Take the slot back.
          const s = mailbox.slot(me);
          this.log.warn({ event: 'slot-tampered', buflen: s.buflen, lastResponder: s.lastResponder }, `its slot held bytes it did not write (buflen ${s.buflen}, last_responder ${s.lastResponder}); overwritten`);
          mailbox.clear(me);
          mailbox.post(me, t.to, t.bytes);
        }
        this.postedLength = t.bytes.length;
        this.server?.ring(t.to, me);
        this.sent(t.to, t.bytes, 'slot');
        return;
      case 'push': {
        let pushed: number;
        try {
          pushed = this.ringTo(t.to).push(t.bytes);
        } catch (e) {
          if (!(e instanceof RingCorrupt) && !(e instanceof RangeError)) throw e;
          // A peer wrote garbage into the ring's counters, or the message
          // does not fit: this peer gets the slot from now on.
          this.rings.delete(t.to);
          this.brokenRings.add(t.to);
          this.log.warn({ event: 'reject', ...this.who(t.to), reason: e.message }, `ring to peer ${t.to}: ${e.message}; using the slot for it until it reconnects`);
          this.delivery.setRoute(t.to, 'slot');
          this.delivery.ringFull(t.to, t.bytes, now);
          this.delivery.reshape(t.to, (b) => this.forSlot(b));
          return;
        }
        if (pushed < 0) this.delivery.ringFull(t.to, t.bytes, now);
        else {
          this.sent(t.to, t.bytes, 'ring');
          this.taken(t.bytes);
        }
        return;
      }
    }
  }

  private ringTo(to: number): RingWriter {
    let ring = this.rings.get(to);
    if (!ring) {
      const me = this.switch.serverId;
      ring = new RingWriter(this.memory!, ringOffset(this.layout!, me, to), this.layout!.capacity, () => this.bells.add(to));
      this.rings.set(to, ring);
    }
    return ring;
  }

  /** Whether close() ran (itself, or the server's close). */
  get closed(): boolean {
    return this.isClosed;
  }

  close(): void {
    if (this.isClosed) return;
    this.isClosed = true;
    this.detach?.();
    this.detach = null;
    if (this.timer) clearTimeout(this.timer);
    for (const h of this.holds) clearTimeout(h);
    this.holds.clear();
    if (this.globalsTimer) clearInterval(this.globalsTimer);
    this.timer = this.globalsTimer = null;
    this.rings.clear();
    this.globals = null;
    for (const v of this.vectors) v.close();
    this.mailbox?.close();
  }

  /** close(), for `using`. */
  [Symbol.dispose](): void {
    this.close();
  }
}
