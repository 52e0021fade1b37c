// The fabric client: a peer of a FAME-Z fabric (`famez serve`, whose
// switch is peer nClients + 1) over any PeerTransport (the host's socket
// today, a guest's VFIO device next). This class is the facade: it checks
// arguments, holds the peer's state (who is connected, attributes,
// nodename) and hands the work to its parts, one concept each:
//
//   attach.ts      is the shared memory a fabric this peer can join?
//   inbox.ts       what arrives: slot taken, text or Gen-Z read, `message`
//                  emitted, reactions.ts's answers sent back
//   slot-sender.ts send() and spoof(): one message in flight per slot,
//                  never overwritten, EBUSY after the timeout
//   requests.ts    request(): replies matched (replies.ts), one timer
//   link-up.ts     linkUp(): Link RFC -> CTL-Write -> Standalone ACK
//   channels.ts    the ring channels: sendRing/ringWriter out, `data` /
//                  onRing in, corruption reported and recovered
//   destinations.ts what a DEST names
//
// An interrupt on vector S means peer S has something: its ring to this
// peer is drained, then its slot. It runs to about 430 lines because the
// public API's documentation lives here, on the methods users call.
import '../dispose.js';
import { EventEmitter } from 'node:events';

import { checkSignal, whenAborted } from '../abort.js';
import { Client } from '../client/client.js';
import { silentLogger } from '../log.js';
import type { PeerTransport } from '../transport.js';
import type { TextMessage } from '../genz/text.js';
import { Inbox } from './inbox.js';
import { Requests } from './requests.js';
import { openFabricMailbox } from './attach.js';
import { linkUp } from './link-up.js';
import { resolveDest, type FabricView } from './destinations.js';
import type { RingLayoutInfo } from '../native.js';
import type { Mailbox } from '../native.js';
import type { RingWriter } from './ring.js';
import { RingChannels } from './channels.js';
import { SlotSender, nextTurn } from './slot-sender.js';
import { FEATURE_SWITCH_RING, writeFeatures } from './features.js';
import { Slots } from './slots.js';
import { nativeSlots, type RingBatchHandler, type SlotPort } from './ring-ends.js';
import { defaultNodename, encodeMessage, fitNodename, textOf } from './peer-text.js';
import { PACK_BYTES, formatGcid, isNamedAfar, outgoing, packed, parseGcid, type Gcid } from './remote.js';
import { ask as askDirectory, parsePage } from '../link/directory.js';
import { MAX_READ, MAX_WRITE, atomicRequest, parseResponse, readRequest, reasonName, writeRequest, type AtomicOperation, type FamResponse } from '../link/fam.js';
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
  type RemotePeer,
  type LinkUpOptions,
  type RequestOptions,
  type SendOptions,
} from './peer-types.js';

export * from './peer-types.js';

/** Options of FabricClient.read/write. */
export interface FamOptions {
  /** The owner's R-Key, when its memory has one (--fam-key). */
  key?: number;
  /** Each request's answer within this (default: the client's requestTimeoutMs). */
  timeoutMs?: number;
  signal?: AbortSignal;
}

/** An atomic operation of FabricClient.atomic: `fetch-add` adds `value`,
 * `swap` writes it, `compare-and-swap` writes `value` only where the word
 * is `expect`; each gives the word's old value. `size`: 8 bytes (default)
 * or 4; the offset must be a multiple of it. */
export type AtomicOp = AtomicOperation & { size?: 4 | 8 };

function checkRange(name: string, v: number): void {
  if (!Number.isSafeInteger(v) || v < 0) throw new FabricClientError('EINVAL', `${name} must be a whole number >= 0, not ${String(v)}`);
}
export { mailboxProblem } from './peer-text.js';



export class FabricClient extends EventEmitter<FabricClientEvents> {
  readonly nClients: number;
  readonly serverId: number;
  private readonly mailbox: Mailbox;
  private readonly slots: SlotPort;
  private readonly connected = new Set<number>();
  private readonly peerAttrs = new Map<number, PeerAttributes>();
  private readonly own: OwnAttributes;
  /** What arrives: messages taken, read, reacted to (inbox.ts). */
  private readonly inbox: Inbox;
  /** This peer's slot, one message in flight (slot-sender.ts). */
  private readonly sender: SlotSender;
  /** spoof()'s senders, through other peers' slots. */
  private readonly spoofers = new Map<number, SlotSender>();
  private readonly requests = new Requests();
  /** Who is connected, for resolveDest. */
  private readonly view: FabricView;
  /** The ring channels (channels.ts). */
  private readonly channels: RingChannels;
  private readonly layout: RingLayoutInfo | null;
  private readonly sendTimeoutMs: number;
  private readonly requestTimeoutMs: number;
  private closedReason: string | null = null;
  /** Messages sent to peers of other switches (their Tag). */
  private afar = 0;
  /** Memory requests waiting for their answers, by owner GCID and tag. */
  private readonly famPending = new Map<string, { answer: (r: FamResponse & { ok: boolean }) => void; fail: (e: Error) => void }>();
  private famTag = 0;
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
    this.sender = this.senderFor(transport.id);
    this.inbox = new Inbox({
      id: transport.id,
      serverId: this.serverId,
      slots: this.slots,
      own: this.own,
      peerAttrs: this.peerAttrs,
      closed: () => this.closedReason !== null,
      configured: () => {
        this.mailbox.setPeerSid(this.id, this.own.SID0);
        this.mailbox.setPeerCid(this.id, this.own.CID0);
      },
      send: (to, bytes) => this.send(to, bytes),
      emit: (event, ...args) => (this.emit as (e: string, ...a: unknown[]) => boolean)(event, ...args),
      answer: (m) => this.requests.answer(m),
      famAnswer: (bytes) => this.famAnswer(bytes),
      unreachable: (sids) => this.unreachable(sids),
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
        dispatch: (from, messages) => this.inbox.all(from, messages),
        nextTurn,
      },
      this.layout,
    );
    this.setNodename(options.nodename ?? defaultNodename(transport.id));
    // Tell the switch to send to us through its ring to us: its one slot
    // is then never what our answers wait for (features.ts).
    // A transport's own bits (a guest's membership bell) go in as well.
    const bits = (this.layout && options.switchRing !== false ? FEATURE_SWITCH_RING : 0) | (transport.features ?? 0);
    if (mem && (this.layout || bits !== 0)) writeFeatures(mem, transport.id, bits);
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
   * is not a FAME-Z fabric (e.g. `--silent`). `signal` aborts the connect
   * (Client.connect); it has no say once connected. */
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
    const { mailbox, nClients } = openFabricMailbox(transport);
    try {
      const client = new FabricClient(transport, mailbox, nClients, options);
      const log = (options.logger ?? silentLogger).child({ component: 'fabric-client' });
      client.on('join', ({ id }) => log.debug({ event: 'join', peer: id, nodename: client.nodenameOf(id) }, `peer ${id} joined the fabric`));
      client.on('leave', ({ id }) => log.debug({ event: 'leave', peer: id }, `peer ${id} left the fabric`));
      client.on('close', ({ reason }) => log.info({ event: 'close', reason }, `left the fabric: ${reason}`));
      return client;
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
   * EBUSY: a message is never overwritten. `signal` stops the waiting
   * (see SendOptions): to several receivers, those not posted yet are
   * withdrawn. */
  send(dest: Dest, message: string | TextMessage | Uint8Array, options: SendOptions = {}): Promise<void> {
    if (isNamedAfar(dest)) return this.lookUp(dest, options).then((g) => this.send(formatGcid(g), message, options));
    let ids: number[];
    let bytes: Uint8Array;
    let signal: AbortSignal | undefined;
    let afar: Gcid | null;
    try {
      signal = checkSignal(options.signal);
      bytes = this.checkSize(encodeMessage(message));
      afar = parseGcid(dest);
      ids = afar ? [] : this.resolve(dest);
    } catch (e) {
      return Promise.reject(e);
    }
    const timeoutMs = options.timeoutMs ?? this.sendTimeoutMs;
    if (afar) return this.sendAfar('mailbox', afar, [bytes], timeoutMs, signal);
    if (ids.length === 1) return this.sender.enqueue(ids[0], bytes, timeoutMs, signal);
    return Promise.all(ids.map((to) => this.sender.enqueue(to, bytes, timeoutMs, signal))).then(() => undefined);
  }

  /** Posts `message` from `src`'s slot to `dest` and rings dest's vector
   * `src`: dest sees a message from src. FAME-Z's `int DEST SRC TEXT`, for
   * testing drivers; waits (bounded) while src's slot is busy. */
  async spoof(dest: Dest, src: number, message: string | TextMessage | Uint8Array, options: SendOptions = {}): Promise<void> {
    this.check();
    const signal = checkSignal(options.signal);
    if (!Number.isSafeInteger(src) || src < 1 || src > this.serverId) {
      throw new FabricClientError('ENOPEER', `sender ${src} is outside the fabric's IDs 1..${this.serverId}`);
    }
    const bytes = this.checkSize(encodeMessage(message));
    const timeoutMs = options.timeoutMs ?? this.sendTimeoutMs;
    const sender = this.senderFor(src);
    for (const to of this.resolve(dest)) await sender.enqueue(to, bytes, timeoutMs, signal);
  }

  /** Sends `message` to one peer and resolves with its reply: the next
   * message from it that `match` accepts (see RequestOptions). `signal`
   * stops both waits: for the slot and for the reply. */
  request(dest: Dest, message: string | TextMessage | Uint8Array, options: RequestOptions = {}): Promise<FabricMessage> {
    if (isNamedAfar(dest)) return this.lookUp(dest, options).then((g) => this.request(formatGcid(g), message, options));
    let to: number;
    try {
      checkSignal(options.signal);
      const afar = parseGcid(dest);
      if (afar && afar.sid !== this.localSid()) return this.requests.wait(this.serverId, () => this.send(dest, message, options), options, this.requestTimeoutMs, afar.gcid);
      to = afar ? this.localId(afar) : this.resolveOne(dest);
    } catch (e) {
      return Promise.reject(e);
    }
    return this.requests.wait(to, () => this.send(to, message, options), options, this.requestTimeoutMs);
  }

  /** FAME-Z's link-up: sends `Link RFC TTC=27us` to the switch and resolves
   * once its CTL-Write configured this peer and the Standalone
   * Acknowledgment was posted. ENAK when the switch refuses (no fabric
   * manager), ETIMEDOUT when nothing comes, the signal's reason when
   * `signal` aborts. */
  linkUp(options: LinkUpOptions = {}): Promise<LinkInfo> {
    let signal: AbortSignal | undefined;
    try {
      signal = checkSignal(options.signal);
    } catch (e) {
      return Promise.reject(e);
    }
    return linkUp(this, options.timeoutMs ?? this.requestTimeoutMs, options.TTC ?? '27us', signal);
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
   * progress, then EBUSY). Calls to one dest run one after the other.
   * `signal` stops the waiting (see SendOptions): the messages pushed
   * before the abort stay in the ring. */
  sendRing(dest: Dest, messages: Uint8Array | Uint8Array[], options: SendOptions = {}): Promise<void> {
    if (isNamedAfar(dest)) return this.lookUp(dest, options).then((g) => this.sendRing(formatGcid(g), messages, options));
    let to: number;
    let signal: AbortSignal | undefined;
    try {
      signal = checkSignal(options.signal);
      const afar = parseGcid(dest);
      if (afar) return this.sendAfar('ring', afar, Array.isArray(messages) ? messages : [messages], options.timeoutMs ?? this.sendTimeoutMs, signal);
      to = this.resolveOne(dest);
    } catch (e) {
      return Promise.reject(e);
    }
    return this.channels.send(to, Array.isArray(messages) ? messages : [messages], options.timeoutMs ?? this.sendTimeoutMs, signal);
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
    if (handler) this.channels.batchHandler = null;
  }

  /** Takes ring-channel messages in place, many a call, instead of `data`
   * events or onRing(): `handler(from, bytes, at, len, count)` gets
   * `count` (1..1024) messages from peer `from`, message i being
   * `bytes[at[i] .. at[i] + len[i])` of the shared memory; the bytes and
   * the two arrays are valid only during the call (copy what must outlive
   * it). A handler that throws has consumed its whole batch. null goes
   * back to `data` (or to the onRing handler set before). */
  onRingBatch(handler: RingBatchHandler | null): void {
    this.channels.batchHandler = handler;
  }

  /** Reads `length` bytes at `offset` of the fabric-attached memory that
   * `dest` serves (a switch's GCID, `SID:CID`, or 'switch' for the local
   * one), by Core64 Reads of at most 256 bytes. Rejects with EFAM (the
   * owner's Gen-Z Reason: InvAccPerm outside the memory, InvAccKey without
   * its R-Key, UnsupportedReq where there is none) or ETIMEDOUT. */
  async read(dest: Dest, offset: number, length: number, options: FamOptions = {}): Promise<Buffer> {
    checkSignal(options.signal);
    const to = this.famDest(dest);
    checkRange('offset', offset);
    checkRange('length', length);
    const parts: Promise<Buffer>[] = [];
    for (let at = 0; at < length; at += MAX_READ) {
      const n = Math.min(MAX_READ, length - at);
      parts.push(this.famRequest(to, (tag) => readRequest({ from: this.gcid, to, tag, offset: offset + at, length: n, key: options.key }), options).then((d) => Buffer.from(d ?? [])));
    }
    return Buffer.concat(await Promise.all(parts));
  }

  /** Writes `data` at `offset` of the fabric-attached memory `dest` serves
   * (see read), by Core64 Writes of at most 256 bytes, each acknowledged. */
  async write(dest: Dest, offset: number, data: Uint8Array, options: FamOptions = {}): Promise<void> {
    checkSignal(options.signal);
    const to = this.famDest(dest);
    checkRange('offset', offset);
    const parts: Promise<unknown>[] = [];
    for (let at = 0; at < data.length; at += MAX_WRITE) {
      const chunk = data.subarray(at, Math.min(data.length, at + MAX_WRITE));
      parts.push(this.famRequest(to, (tag) => writeRequest({ from: this.gcid, to, tag, offset: offset + at, data: chunk, key: options.key }), options));
    }
    await Promise.all(parts);
  }

  /** Carries out `op` on the word at `offset` of the fabric-attached memory
   * `dest` serves (see read), at the owner, atomically with respect to every
   * other request it serves (and, on its memory's own aligned words, to
   * CPU atomics of VMs mapping the same file), by one Atomic1 request.
   * Resolves with the word's old value (unsigned); for compare-and-swap it
   * was swapped exactly when that equals `expect`. A value may be negative
   * (two's complement: fetch-add -1n subtracts one). Rejects with EINVAL (a
   * size other than 4 or 8, an offset not a multiple of it, a value that
   * does not fit), EFAM (the owner's Reason, as read) or ETIMEDOUT. */
  async atomic(dest: Dest, offset: number, op: AtomicOp, options: FamOptions = {}): Promise<bigint> {
    checkSignal(options.signal);
    const to = this.famDest(dest);
    checkRange('offset', offset);
    const size = op.size ?? 8;
    if (size !== 4 && size !== 8) throw new FabricClientError('EINVAL', `an atomic's size is 4 or 8 bytes, not ${String(size)}`);
    if (offset % size !== 0) throw new FabricClientError('EINVAL', `an atomic of ${size} bytes needs an offset that is a multiple of ${size}, not ${offset}`);
    const bits = BigInt(size * 8);
    const values: [string, unknown][] = op.op === 'compare-and-swap' ? [['expect', op.expect], ['value', op.value]] : [['value', op.value]];
    for (const [name, v] of values) {
      if (typeof v !== 'bigint' || v < -(1n << (bits - 1n)) || v >= 1n << bits) {
        throw new FabricClientError('EINVAL', `${name} must be a bigint that fits ${size} bytes, not ${String(v)}`);
      }
    }
    const old = await this.famRequest(to, (tag) => atomicRequest({ from: this.gcid, to, tag, offset, key: options.key, size, operation: op }), options);
    if (!old || old.length !== 8) throw new FabricClientError('EFAM', `${formatGcid(to)} answered the atomic without its old value`);
    return BigInt.asUintN(size * 8, Buffer.from(old.buffer, old.byteOffset, 8).readBigUInt64LE(0));
  }

  /** The GCID of a memory owner: SID:CID, or 'switch' (the local one). */
  private famDest(dest: Dest): number {
    this.check();
    if (typeof dest === 'string' && ['switch', 'server'].includes(dest.trim().toLowerCase())) return this.localSid() * 0x1000 + this.serverId * 100;
    const g = parseGcid(dest);
    if (!g) throw new FabricClientError('EINVAL', `${String(dest)} is no GCID (SID:CID) of a memory owner`);
    return g.gcid;
  }

  /** Sends one memory request to the switch and waits for its answer (by tag). */
  private famRequest(to: number, build: (tag: number) => Uint8Array, options: FamOptions): Promise<Uint8Array | null> {
    return new Promise<Uint8Array | null>((resolve, reject) => {
      let tag = this.famTag;
      for (let i = 0; this.famPending.has(`${to}:${tag}`); i++) {
        if (i >= 4096) return reject(new FabricClientError('EBUSY', 'all 4096 Gen-Z tags are in flight to this owner'));
        tag = (tag + 1) % 4096;
      }
      this.famTag = (tag + 1) % 4096;
      const key = `${to}:${tag}`;
      const ms = options.timeoutMs ?? this.requestTimeoutMs;
      const done = (f: () => void) => {
        clearTimeout(timer);
        this.famPending.delete(key);
        stop?.();
        f();
      };
      const timer = setTimeout(() => done(() => reject(new FabricClientError('ETIMEDOUT', `no answer from ${formatGcid(to)} within ${ms} ms`))), ms);
      const stop = options.signal ? whenAborted(options.signal, (reason) => done(() => reject(reason))) : null;
      this.famPending.set(key, {
        answer: (r) => done(() => (r.ok ? resolve(r.data) : reject(new FabricClientError('EFAM', `${formatGcid(to)} refused: ${reasonName(r.reason)}`)))),
        fail: (e) => done(() => reject(e)),
      });
      const bytes = build(tag);
      this.toSwitch(bytes, ms, options.signal).catch((e: Error) => this.famPending.get(key)?.fail(e));
    });
  }

  /** No route to `sids` any more: what waits for their peers fails now. */
  private unreachable(sids: number[]): void {
    for (const sid of sids) {
      this.requests.unreachable(sid);
      for (const [key, p] of [...this.famPending]) {
        if (Math.floor(Number(key.slice(0, key.indexOf(':'))) / 0x1000) === sid) p.fail(new FabricClientError('EUNREACHABLE', `no route to SID ${sid} (the switch says so)`));
      }
    }
  }

  /** An answer from the switch to a memory request: true when it was one. */
  private famAnswer(bytes: Uint8Array): boolean {
    const r = parseResponse(bytes);
    if (!r) return false;
    this.famPending.get(`${r.source}:${r.tag}`)?.answer(r);
    return true;
  }

  /** The peers of the other switches the local switch reaches through its
   * links, asked of the switch (`famez-nodes?`, page by page). [] when the
   * switch has no links (it refuses the question). */
  async remotePeers(options: { signal?: AbortSignal; timeoutMs?: number } = {}): Promise<RemotePeer[]> {
    const out: RemotePeer[] = [];
    for (let page: number | null = 0, n = 0; page !== null; n++) {
      if (n >= 10_000) throw new FabricClientError('EBADMSG', 'the switch keeps naming a next page of remote peers');
      const p: number = page;
      const reply = await this.request('switch', askDirectory(p), {
        signal: options.signal,
        replyTimeoutMs: options.timeoutMs,
        match: (m) => m.message?.kind === 'link-ctl-nak' || parsePage(m.text, p) !== null,
      });
      const parsed = parsePage(reply.text, p);
      if (!parsed) return [];
      for (const [g, nodename, cclass, hops] of parsed.entries) {
        const [sid, cid] = g.split(':').map(Number);
        out.push({ gcid: sid * 0x1000 + cid, sid, cid, nodename, cclass, hops });
      }
      page = parsed.next;
    }
    return out;
  }

  /** The GCID of `name@SID`. */
  /** The GCID of `nodename@SID`, asked of the switch; a request's look-up
   * waits for the switch's answer as long as the request would for its reply. */
  private async lookUp(dest: string, options: RequestOptions): Promise<number> {
    const at = dest.lastIndexOf('@');
    const name = dest.slice(0, at).trim();
    const sid = Number(dest.slice(at + 1));
    const found = (await this.remotePeers({ signal: options.signal, timeoutMs: options.replyTimeoutMs })).filter((p) => p.sid === sid && p.nodename === name);
    if (found.length === 0) throw new FabricClientError('ENOPEER', `no peer named '${name}' on SID ${sid} is known to the switch`);
    if (found.length > 1) throw new FabricClientError('EINVAL', `'${name}' names several peers of SID ${sid} (${found.map((p) => formatGcid(p.gcid)).join(', ')}); use SID:CID`);
    return found[0].gcid;
  }

  /** This peer's global ID (SID << 12 | CID): the SID the switch
   * configured (or, before that, the one its slot shows), the CID FAME-Z
   * gives it (ID x 100). */
  get gcid(): number {
    return this.localSid() * 0x1000 + this.id * 100;
  }

  /** Leaves the fabric. Pending sends and requests reject with ECLOSED. */
  close(): void {
    this.shutdown('closed by the client');
  }

  /** close(), for `using peer = await FabricClient.connect(...)`. */
  [Symbol.dispose](): void {
    this.close();
  }

  // ---------------------------------------------------------------- inside

  /** The sender through slot `slot`: this peer's own, or (spoof) another's. */
  private senderFor(slot: number): SlotSender {
    if (slot === this.transport.id && this.sender) return this.sender;
    let sender = this.spoofers.get(slot);
    if (!sender) {
      const own = slot === this.transport.id;
      sender = new SlotSender({
        id: slot,
        slots: this.slots,
        transport: this.transport,
        // Anyone connected, and this peer itself (a message to self).
        isConnected: (id) => this.connected.has(id) || id === this.transport.id,
        closedReason: () => this.closedReason,
        sent: (to, bytes) => {
          if (own && this.listenerCount('sent') > 0) this.emit('sent', { to, text: textOf(bytes) });
        },
      });
      if (!own) this.spoofers.set(slot, sender);
    }
    return sender;
  }

  /** The fabric's SID: as configured, else as the switch's slot says. */
  private localSid(): number {
    // The slot read over the mapping: the native mailbox's slot() makes an
    // object of every field, and this runs on every message to afar.
    return this.own.SID0 || (this.closed ? 0 : this.slots.peerSid(this.serverId));
  }

  /** The local peer a GCID of this subnet names (CID = ID x 100). */
  private localId(g: Gcid): number {
    const id = g.cid / 100;
    if (!Number.isInteger(id) || id < 1 || id > this.serverId) throw new FabricClientError('ENOPEER', `${g.sid}:${g.cid} names no peer of this fabric (CIDs are ID x 100)`);
    return this.resolve(id)[0];
  }

  /** Messages to `to` (a GCID): to a peer of another switch they go to the
   * local switch as the packets that carry them (its ring when there is
   * one, else its slot, one piece each), which forwards them; to this
   * subnet, straight to the peer. */
  private sendAfar(kind: 'mailbox' | 'ring', to: Gcid, messages: Uint8Array[], timeoutMs: number, signal: AbortSignal | undefined): Promise<void> {
    try {
      this.check();
      if (to.sid === this.localSid()) {
        const id = this.localId(to);
        return kind === 'ring' ? this.channels.send(id, messages, timeoutMs, signal) : this.sender.enqueue(id, messages[0], timeoutMs, signal);
      }
      if (!this.connected.has(this.serverId)) throw new FabricClientError('ENOPEER', `the switch (peer ${this.serverId}) is not connected: no way to ${formatGcid(to.gcid)}`);
      const from = this.gcid;
      let chain = Promise.resolve();
      if (!this.toSwitchByRing()) {
        // Through the slot, one piece a slot message.
        for (const m of messages) {
          for (const p of outgoing(kind, from, to.gcid, m, this.afar++, MAX_SLOT_MESSAGE)) chain = chain.then(() => this.sender.enqueue(this.serverId, p, timeoutMs, signal));
        }
        return chain;
      }
      // Through the ring, each message's pieces end to end as one ring
      // message, a batch of them to a push; each batch packed only when
      // the one before it is in the ring (a long stream is not copied whole
      // at once), and a failure stops what follows it.
      const first = this.afar;
      this.afar += messages.length;
      for (let i = 0; i < messages.length; ) {
        let j = i + 1;
        for (let bytes = messages[i]!.length; j < messages.length && bytes + messages[j]!.length <= PACK_BYTES; j++) bytes += messages[j]!.length;
        const [a, b] = [i, j];
        chain = chain.then(() => {
          const batch: Uint8Array[] = [];
          for (let x = a; x < b; x++) batch.push(packed(kind, from, to.gcid, messages[x]!, first + x));
          return this.channels.send(this.serverId, batch, timeoutMs, signal);
        });
        i = j;
      }
      return chain;
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /** Whether what this peer hands its switch goes through its ring to it (else its slot). */
  private toSwitchByRing(): boolean {
    return this.layout !== null && this.memoryOrNull() !== null;
  }


  /** Hands `bytes` (whole packets) to the local switch, by ring or slot. */
  private toSwitch(bytes: Uint8Array, timeoutMs: number, signal: AbortSignal | undefined): Promise<void> {
    return this.toSwitchByRing() ? this.channels.send(this.serverId, [bytes], timeoutMs, signal) : this.sender.enqueue(this.serverId, bytes, timeoutMs, signal);
  }

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
    this.inbox.slot(from, doorbell);
  }

  private peerLeft(id: number): void {
    this.connected.delete(id);
    this.peerAttrs.delete(id);
    this.requests.peerLeft(id);
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
    for (const s of this.spoofers.values()) s.close(err);
    this.requests.close(err);
    for (const p of [...this.famPending.values()]) p.fail(err());
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
