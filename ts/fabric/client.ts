// The fabric client: a host peer of a FAME-Z fabric (`famez serve`, whose
// switch is peer nClients + 1). Built on the ivshmem host Client, it reads
// the mailbox globals, writes its nodename into its slot, and speaks the
// FAME-Z text language through the slots:
//
// - an interrupt on vector S is a message from peer S: take slot S, emit a
//   `message` event, and answer as FAME-Z's client does (ping -> pong,
//   Link CTL Peer-Attribute -> Link CTL ACK C-Class=Debugger,..., CTL-Write
//   -> configured + Standalone Acknowledgment; a Link CTL ACK is recorded as
//   the sender's attributes);
// - send(dest, message) posts into its own slot, waiting asynchronously
//   (bounded) while the previous receiver has not taken the previous
//   message: a message is never overwritten;
// - request() resolves with the reply, linkUp() runs Link RFC -> CTL-Write
//   -> Standalone Acknowledgment with the switch;
// - famez's ring channels (when the server set them up) carry batches of
//   bytes per pair: sendRing() and the `data` event, or, without a copy or
//   an allocation per message, ringWriter() and onRing(). Their doorbell is
//   the same vector (the sender's ID), so one interrupt drains both. A
//   corrupt ring is reported at once (`ring-error`, after the good messages
//   before the bad record), dropped so it flows again, and counted in the
//   ring for its producer (`ring-rejected` there). The
//   rings are driven from TypeScript over the mapped memory (ring.ts); the
//   native Ring is the fallback when the object is too big for an
//   ArrayBuffer (over 4 GiB on Node 20).
import { EventEmitter } from 'node:events';

import { Client } from '../client/client.js';
import type { PeerTransport } from '../transport.js';
import { GenZTextError, parse, toBytes, type TextMessage } from '../genz/text.js';
import { GenZCodec } from './genz-codec.js';
import { reactTo } from './reactions.js';
import { Replies } from './replies.js';
import { resolveDest, type FabricView } from './destinations.js';
import type { RingLayoutInfo } from '../native.js';
import { Mailbox } from '../native.js';
import type { RingWriter } from './ring.js';
import { RingChannels } from './channels.js';
import { SlotSender, nextTurn } from './slot-sender.js';
import { FEATURE_SWITCH_RING, writeFeatures } from './features.js';
import { Slots } from './slots.js';
import { nativeSlots, type SlotPort } from './ring-ends.js';
import { defaultNodename, encodeMessage, fitNodename, mailboxProblem, textOf } from './peer-text.js';
import {
  FabricClientError,
  MAX_SLOT_MESSAGE,
  type Dest,
  type FabricClientEvents,
  type FabricClientOptions,
  type FabricMessage,
  type FabricPeer,
  type LinkInfo,
  type OwnAttributes,
  type PeerAttributes,
  type RequestOptions,
  type SendOptions,
} from './peer-types.js';

export * from './peer-types.js';
export { mailboxProblem } from './peer-text.js';


interface Waiter {
  from: number;
  match: (m: FabricMessage) => boolean;
  resolve: (m: FabricMessage) => void;
  reject: (e: Error) => void;
  /** When the reply is late (Date.now()), once the request is posted;
   * Infinity before. One shared timer serves every waiter. */
  deadline: number;
  /** The ETIMEDOUT message. */
  late: string;
}

const UNSOLICITED = new Set<TextMessage['kind']>(['ping', 'link-ctl-peer-attribute', 'dump']);
const defaultMatch = (m: FabricMessage) => m.message === null || !UNSOLICITED.has(m.message.kind);


export class FabricClient extends EventEmitter<FabricClientEvents> {
  readonly nClients: number;
  readonly serverId: number;
  private readonly mailbox: Mailbox;
  private readonly slots: SlotPort;
  private readonly connected = new Set<number>();
  private readonly peerAttrs = new Map<number, PeerAttributes>();
  private readonly own: OwnAttributes;
  /** Decodes binary Gen-Z packets (a --codec genz switch) and encodes the
   * answers to them; remembers the tags and CIDs in flight. */
  private readonly codec = new GenZCodec();
  /** This peer's slot, one message in flight (slot-sender.ts). */
  private readonly sender: SlotSender;
  private readonly replies = new Replies<FabricMessage, Waiter>();
  /** Who is connected, for resolveDest. */
  private readonly view: FabricView;
  private replyTimer: NodeJS.Timeout | null = null;
  private replyTimerAt = Infinity;
  /** The ring channels (channels.ts). */
  private readonly channels: RingChannels;
  private readonly layout: RingLayoutInfo | null;
  private readonly sendTimeoutMs: number;
  private readonly requestTimeoutMs: number;
  private closedReason: string | null = null;
  private sweepHandle: NodeJS.Immediate | null = null;
  private readonly onInterrupt = ({ vector }: { vector: number }) => this.drain(vector, true);
  private readonly onJoin = ({ id }: { id: number }) => {
    this.connected.add(id);
    this.emit('join', { id });
  };
  private readonly onLeave = ({ id }: { id: number }) => this.peerLeft(id);
  private readonly onClose = ({ reason }: { reason: string }) => this.shutdown(reason);

  private constructor(
    readonly transport: PeerTransport,
    mailbox: Mailbox,
    nClients: number,
    options: FabricClientOptions,
  ) {
    super();
    this.mailbox = mailbox;
    const mem = this.memoryOrNull();
    this.slots = mem ? new Slots(mem, nClients + 1) : nativeSlots(mailbox);
    this.nClients = nClients;
    this.serverId = nClients + 1;
    this.view = { self: transport.id, serverId: this.serverId, connected: this.connected, nodename: (id) => this.mailbox.nodename(id) };
    this.sendTimeoutMs = options.sendTimeoutMs ?? 1000;
    this.requestTimeoutMs = options.requestTimeoutMs ?? 5000;
    this.own = { cclass: options.cclass ?? 'Debugger', SID0: 0, CID0: 0, link: 'up', PFMSID: null, PFMCID: null };
    for (const id of transport.peerIds()) if (id >= 1 && id <= this.serverId) this.connected.add(id);
    this.layout = mailbox.ringLayout;
    this.sender = new SlotSender({
      id: transport.id,
      slots: this.slots,
      transport,
      connected: this.connected,
      closedReason: () => this.closedReason,
      sent: (to, bytes) => {
        if (this.listenerCount('sent') > 0) this.emit('sent', { to, text: textOf(bytes) });
      },
    });
    this.channels = new RingChannels(
      {
        id: transport.id,
        serverId: this.serverId,
        transport,
        connected: this.connected,
        memory: () => this.memoryOrNull(),
        nodename: (id) => this.mailbox.nodename(id),
        closed: () => this.closedReason !== null,
        check: () => this.check(),
        emit: (event, ...args) => (this.emit as (e: string, ...a: unknown[]) => boolean)(event, ...args),
        dispatch: (from, messages) => this.dispatchAll(from, messages),
        nextTurn,
      },
      this.layout,
    );
    this.setNodename(options.nodename ?? defaultNodename(transport.id));
    // Tell the switch to send to us through its ring to us: its one slot
    // is then never what our answers wait for (features.ts).
    if (mem && this.layout) writeFeatures(mem, transport.id, options.switchRing === false ? 0 : FEATURE_SWITCH_RING);
    transport.on('interrupt', this.onInterrupt);
    transport.on('join', this.onJoin);
    transport.on('leave', this.onLeave);
    transport.on('close', this.onClose);
    // Messages (the switch's Peer-Attribute, say) may have arrived before
    // this listener: look at every slot and ring once, after the caller's
    // own listeners are in place.
    this.sweepHandle = setImmediate(() => {
      this.sweepHandle = null;
      for (let from = 1; from <= this.serverId; from++) this.drain(from, false);
    });
  }

  /** Joins the fabric server at `socketPath` over the host transport (the
   * server's socket). Rejects with ENOTFABRIC (and leaves) when the server
   * is not a FAME-Z fabric (e.g. `--silent`). */
  static async connect(socketPath: string, options: FabricClientOptions = {}): Promise<FabricClient> {
    const client = await Client.connect(socketPath, options);
    try {
      return FabricClient.attach(client, options);
    } catch (e) {
      client.close();
      throw e;
    }
  }

  /** Makes a peer on any transport (the host Client, a guest's device) a
   * fabric peer. Throws ENOTFABRIC (the transport stays open) when its
   * shared memory holds no FAME-Z mailbox. */
  static attach(transport: PeerTransport, options: FabricClientOptions = {}): FabricClient {
    const shm = transport.sharedMemory;
    const where = transport.where;
    let probe: Mailbox;
    try {
      probe = new Mailbox(shm);
    } catch (e) {
      throw new FabricClientError('ENOTFABRIC', `${where}: the shared memory holds no FAME-Z mailbox (${(e as Error).message})`);
    }
    let g;
    try {
      g = probe.globals;
    } finally {
      probe.close();
    }
    const problem = mailboxProblem(g, shm.size);
    if (problem !== null) throw new FabricClientError('ENOTFABRIC', `${where}: the shared memory holds no FAME-Z mailbox (${problem})`);
    if (transport.id < 1 || transport.id > g.nClients) {
      throw new FabricClientError('ENOTFABRIC', `${where}: this peer got ID ${transport.id}, outside the fabric's 1..${g.nClients}`);
    }
    if (transport.vectors < g.nEvents) {
      throw new FabricClientError('ENOTFABRIC', `${where}: this peer has ${transport.vectors} vector(s); a fabric of ${g.nClients} peers gives ${g.nEvents}`);
    }
    if (!transport.peerIds().includes(g.serverId)) {
      throw new FabricClientError('ENOTFABRIC', `${where}: the server did not advertise its switch (peer ${g.serverId})`);
    }
    const mailbox = new Mailbox(shm, g.nClients);
    try {
      try {
        void mailbox.ringLayout;
      } catch (e) {
        throw new FabricClientError('ENOTFABRIC', `${where}: slot 0 describes ring channels that cannot be (${(e as Error).message})`);
      }
      return new FabricClient(transport, mailbox, g.nClients, options);
    } catch (e) {
      mailbox.close();
      throw e;
    }
  }

  get id(): number {
    return this.transport.id;
  }

  get closed(): boolean {
    return this.closedReason !== null;
  }

  /** This peer's nodename, as its slot says. */
  get nodename(): string {
    return this.closed ? '' : this.mailbox.nodename(this.id);
  }

  /** Writes this peer's nodename into its slot (cut to 31 bytes). */
  setNodename(name: string): void {
    this.check();
    this.mailbox.setNodename(this.id, fitNodename(name));
  }

  /** Own C-Class, SID0, CID0 and link state. */
  get attributes(): OwnAttributes {
    return { ...this.own };
  }

  /** The ring channels' layout, or null when the server set up none. */
  get rings(): RingLayoutInfo | null {
    return this.layout;
  }

  /** The other connected peers (the switch included), by ID. */
  get peers(): FabricPeer[] {
    if (this.closed) return [];
    return [...this.connected]
      .filter((id) => id !== this.id)
      .sort((a, b) => a - b)
      .map((id) => {
        const a = this.peerAttrs.get(id);
        return { id, nodename: this.mailbox.nodename(id), isSwitch: id === this.serverId, attributes: a ? { ...a, all: { ...a.all } } : null };
      });
  }

  /** The nodename in `id`'s slot. */
  nodenameOf(id: number): string {
    return this.closed || id < 1 || id > this.serverId ? '' : this.mailbox.nodename(id);
  }

  /** The IDs a DEST names (see Dest); throws ENOPEER / EINVAL. `all` and
   * `others` may name nobody (an empty list). */
  resolve(dest: Dest): number[] {
    this.check();
    return resolveDest(dest, this.view);
  }

  /** The one peer a DEST names (request, sendRing). */
  resolveOne(dest: Dest): number {
    const ids = this.resolve(dest);
    if (ids.length !== 1) throw new FabricClientError('EINVAL', `${String(dest)} names ${ids.length} peers; this needs exactly one`);
    return ids[0];
  }

  /** Posts `message` (text as is, a FAME-Z message formatted, or raw bytes;
   * 1..383 bytes) to every peer DEST names, in order, through this peer's
   * slot, ringing each receiver's vector = this peer's ID. Resolves when
   * posted. While the slot still holds the previous message it waits (for
   * `timeoutMs`, default the client's sendTimeoutMs) and then rejects with
   * EBUSY: a message is never overwritten. */
  send(dest: Dest, message: string | TextMessage | Uint8Array, options: SendOptions = {}): Promise<void> {
    let ids: number[];
    let bytes: Uint8Array;
    try {
      ids = this.resolve(dest);
      bytes = this.checkSize(encodeMessage(message));
    } catch (e) {
      return Promise.reject(e);
    }
    const timeoutMs = options.timeoutMs ?? this.sendTimeoutMs;
    if (ids.length === 1) return this.sender.enqueue(ids[0], bytes, timeoutMs);
    return Promise.all(ids.map((to) => this.sender.enqueue(to, bytes, timeoutMs))).then(() => undefined);
  }

  /** Posts `message` from `src`'s slot to `dest` and rings dest's vector
   * `src`: dest sees a message from src. FAME-Z's `int DEST SRC TEXT`, for
   * testing drivers; waits (bounded) while src's slot is busy. */
  async spoof(dest: Dest, src: number, message: string | TextMessage | Uint8Array, options: SendOptions = {}): Promise<void> {
    this.check();
    if (!Number.isSafeInteger(src) || src < 1 || src > this.serverId) {
      throw new FabricClientError('ENOPEER', `sender ${src} is outside the fabric's IDs 1..${this.serverId}`);
    }
    const bytes = this.checkSize(encodeMessage(message));
    const timeoutMs = options.timeoutMs ?? this.sendTimeoutMs;
    for (const to of this.resolve(dest)) {
      const since = Date.now();
      while (!this.mailbox.post(src, to, bytes)) {
        if (Date.now() - since > timeoutMs) {
          throw new FabricClientError('EBUSY', `slot ${src} still held a message for peer ${this.mailbox.slot(src).lastResponder} after ${timeoutMs} ms`);
        }
        await nextTurn(since);
        this.check();
      }
      this.transport.ring(to, src);
    }
  }

  /** Sends `message` to one peer and resolves with its reply: the next
   * message from it that `match` accepts (see RequestOptions). */
  request(dest: Dest, message: string | TextMessage | Uint8Array, options: RequestOptions = {}): Promise<FabricMessage> {
    let to: number;
    try {
      to = this.resolveOne(dest);
    } catch (e) {
      return Promise.reject(e);
    }
    const replyTimeoutMs = options.replyTimeoutMs ?? this.requestTimeoutMs;
    return new Promise<FabricMessage>((resolve, reject) => {
      const waiter: Waiter = {
        from: to,
        match: options.match ?? defaultMatch,
        resolve,
        reject,
        deadline: Infinity,
        late: `no reply from peer ${to} within ${replyTimeoutMs} ms`,
      };
      // Registered before the request goes out: a fast reply is not missed.
      this.replies.add(waiter);
      this.send(to, message, options).then(
        () => {
          if (!this.replies.has(waiter)) return;
          this.replies.posted(waiter, Date.now(), replyTimeoutMs);
          this.armReplyTimer(waiter.deadline);
        },
        (e: Error) => {
          this.dropWaiter(waiter);
          reject(e);
        },
      );
    });
  }

  /** One timer for every reply: armed for the earliest deadline. A request
   * answered in time costs no timer of its own. */
  private armReplyTimer(deadline: number): void {
    if (this.replyTimer && this.replyTimerAt <= deadline) return;
    if (this.replyTimer) clearTimeout(this.replyTimer);
    this.replyTimerAt = deadline;
    this.replyTimer = setTimeout(() => {
      this.replyTimer = null;
      for (const w of this.replies.late(Date.now())) w.reject(new FabricClientError('ETIMEDOUT', w.late));
      const next = this.replies.nextDeadline();
      if (next !== null) this.armReplyTimer(next);
    }, Math.max(0, deadline - Date.now()));
  }

  /** FAME-Z's link-up: sends `Link RFC TTC=27us` to the switch and resolves
   * once its CTL-Write configured this peer and the Standalone
   * Acknowledgment was posted. ENAK when the switch refuses (no fabric
   * manager), ETIMEDOUT when nothing comes. */
  linkUp(options: { timeoutMs?: number; TTC?: string } = {}): Promise<LinkInfo> {
    const timeoutMs = options.timeoutMs ?? this.requestTimeoutMs;
    return new Promise<LinkInfo>((resolve, reject) => {
      const done = () => {
        clearTimeout(timer);
        this.off('configured', onConfigured);
        this.off('message', onMessage);
        this.off('close', onClose);
      };
      const onConfigured = (info: LinkInfo) => {
        if (info.from !== this.serverId) return;
        done();
        resolve(info);
      };
      const onMessage = (m: FabricMessage) => {
        if (m.from !== this.serverId || m.message?.kind !== 'link-ctl-nak') return;
        done();
        reject(new FabricClientError('ENAK', `the switch refused the link-up: ${m.text}`));
      };
      const onClose = ({ reason }: { reason: string }) => {
        done();
        reject(new FabricClientError('ECLOSED', `closed during the link-up: ${reason}`));
      };
      const timer = setTimeout(() => {
        done();
        reject(new FabricClientError('ETIMEDOUT', `the switch did not configure this peer within ${timeoutMs} ms`));
      }, timeoutMs);
      this.on('configured', onConfigured);
      this.on('message', onMessage);
      this.on('close', onClose);
      this.send(this.serverId, { kind: 'link-rfc', TTC: options.TTC ?? '27us' }).catch((e: Error) => {
        done();
        reject(e);
      });
    });
  }

  /** Withdraws the message still unread in this peer's slot (its receiver
   * left or never reads); returns the ID it was for, or null when the slot
   * was free. */
  withdraw(): number | null {
    this.check();
    if (!this.mailbox.busy(this.id)) return null;
    const to = this.mailbox.slot(this.id).lastResponder;
    this.mailbox.clear(this.id);
    this.sender.pump();
    return to;
  }

  /** Pushes `messages` into the ring channel to `dest`, in order, ringing
   * dest's vector (this peer's ID) whenever a push found the ring empty.
   * While the ring is full it waits (backpressure; `timeoutMs` without
   * progress, then EBUSY). Calls to one dest run one after the other. */
  sendRing(dest: Dest, messages: Uint8Array | Uint8Array[], options: SendOptions = {}): Promise<void> {
    let to: number;
    try {
      to = this.resolveOne(dest);
    } catch (e) {
      return Promise.reject(e);
    }
    return this.channels.send(to, Array.isArray(messages) ? messages : [messages], options.timeoutMs ?? this.sendTimeoutMs);
  }

  /** The producing end of the ring to `dest`, for writing messages in
   * place: `reserve(len)` gives the position in `bytes` for a payload (-1
   * while the ring is full), `commit()` publishes what was reserved and
   * rings dest's doorbell when the ring was empty. Do not mix with a
   * pending sendRing() to the same peer. Throws ENORINGS when the rings
   * are not reachable from JavaScript (see the module comment). */
  ringWriter(dest: Dest): RingWriter {
    return this.channels.writer(this.resolveOne(dest));
  }

  /** Takes ring-channel messages in place instead of `data` events:
   * `handler(from, bytes, start, length)` gets each message as
   * `bytes[start .. start + length)` of the shared memory, valid only
   * during the call (copy what must outlive it). null goes back to `data`. */
  onRing(handler: ((from: number, bytes: Buffer, start: number, length: number) => void) | null): void {
    this.channels.handler = handler;
  }

  /** Leaves the fabric. Pending sends and requests reject with ECLOSED. */
  close(): void {
    this.shutdown('closed by the client');
  }

  // ---------------------------------------------------------------- inside

  private check(): void {
    if (this.closedReason !== null) throw new FabricClientError('ECLOSED', `the fabric client is closed (${this.closedReason})`);
  }

  private checkSize(bytes: Uint8Array): Uint8Array {
    if (bytes.length < 1 || bytes.length > MAX_SLOT_MESSAGE) {
      throw new FabricClientError('EMSGSIZE', `a slot message is 1..${MAX_SLOT_MESSAGE} bytes, not ${bytes.length}`);
    }
    return bytes;
  }

  /** The shared object as an ArrayBuffer, or null when it is too big. */
  private memoryOrNull(): ArrayBuffer | null {
    try {
      return this.transport.memory;
    } catch {
      return null;
    }
  }

  /** Everything peer `from` has for this peer: its ring, then its slot.
   * `doorbell`: an interrupt on vector `from` (else the start-up sweep). */
  private drain(from: number, doorbell: boolean): void {
    if (this.closedReason !== null || from < 1 || from > this.serverId) return;
    this.channels.drain(from);
    this.drainSlot(from, doorbell);
  }

  private dispatchAll(from: number, messages: Buffer[]): void {
    for (const bytes of messages) {
      if (this.closedReason !== null) return;
      this.dispatch(from, bytes);
    }
  }

  private drainSlot(from: number, doorbell: boolean): void {
    const mb = this.slots;
    if (!mb.busy(from)) return;
    // One slot serves all of a sender's receivers: leave a message that
    // says it is for another peer to that peer. (A sender that never sets
    // last_responder leaves it 0: take it, as FAME-Z does.)
    const target = mb.lastResponder(from);
    if (target !== this.id && (!doorbell || (target >= 1 && target <= this.serverId))) return;
    let bytes: Buffer | null;
    try {
      bytes = mb.take(from);
    } catch (e) {
      this.emit('warning', `slot ${from}: ${(e as Error).message}`);
      return;
    }
    if (bytes === null) return;
    this.dispatch(from, bytes);
  }

  /** A message from `from` (through a slot or the switch's ring). */
  private dispatch(from: number, bytes: Buffer): void {
    const mb = this.slots;
    let message: TextMessage | null = null;
    let binary = false;
    try {
      message = parse(bytes);
    } catch (e) {
      if (!(e instanceof GenZTextError)) throw e;
      // Not text: a binary Gen-Z packet (a --codec genz switch), or nothing.
      if (e.code === 'ENOTTEXT') {
        try {
          message = this.codec.decode(bytes, from);
          binary = true;
        } catch {
          message = null;
        }
      }
    }
    const m: FabricMessage = { from, nodename: mb.nodename(from), text: binary ? '' : textOf(bytes), message, bytes };
    this.emit('message', m);
    this.react(m, binary);
    this.replies.answer(m)?.resolve(m);
  }

  /** FAME-Z's client: the answers it gives on its own (reactions.ts),
   * encoded the way the request came. */
  private react(m: FabricMessage, binary: boolean): void {
    if (!m.message) return;
    const r = reactTo(m.from, m.message, this.own);
    if (r.warning) this.emit('warning', r.warning);
    if (r.attributes) this.peerAttrs.set(m.from, r.attributes);
    if (r.configure) {
      Object.assign(this.own, r.configure.own);
      this.mailbox.setPeerSid(this.id, this.own.SID0);
      this.mailbox.setPeerCid(this.id, this.own.CID0);
    }
    if (!r.reply) return;
    let bytes: Uint8Array;
    try {
      bytes = binary ? this.codec.encode(r.reply, m.from) : toBytes(r.reply);
    } catch (e) {
      this.emit('warning', `could not answer peer ${m.from}: ${(e as Error).message}`);
      return;
    }
    const info = r.configure?.info;
    this.send(m.from, bytes).then(
      () => {
        if (info) this.emit('configured', info);
      },
      (e: Error) => this.emit('warning', `could not answer peer ${m.from}: ${e.message}`),
    );
  }

  private dropWaiter(w: Waiter): void {
    this.replies.remove(w);
    if (this.replies.size === 0 && this.replyTimer) {
      clearTimeout(this.replyTimer);
      this.replyTimer = null;
    }
  }

  private peerLeft(id: number): void {
    this.connected.delete(id);
    this.peerAttrs.delete(id);
    for (const w of this.replies.from(id)) {
      this.dropWaiter(w);
      w.reject(new FabricClientError('ENOPEER', `peer ${id} left before replying`));
    }
    this.channels.peerLeft(id);
    // A message left for the departed peer would block this slot for good.
    if (this.closedReason === null && this.mailbox.busy(this.id) && this.mailbox.slot(this.id).lastResponder === id) {
      this.mailbox.clear(this.id);
      this.sender.pump();
    }
    this.emit('leave', { id });
  }

  private shutdown(reason: string): void {
    if (this.closedReason !== null) return;
    this.closedReason = reason;
    if (this.sweepHandle) clearImmediate(this.sweepHandle);
    const err = () => new FabricClientError('ECLOSED', `the fabric client closed (${reason})`);
    this.sender.close(err);
    if (this.replyTimer) clearTimeout(this.replyTimer);
    this.replyTimer = null;
    for (const w of this.replies.clear()) w.reject(err());
    this.transport.off('interrupt', this.onInterrupt);
    this.transport.off('join', this.onJoin);
    this.transport.off('leave', this.onLeave);
    this.transport.off('close', this.onClose);
    this.channels.close();
    this.mailbox.close();
    this.transport.close();
    this.emit('close', { reason });
  }
}
