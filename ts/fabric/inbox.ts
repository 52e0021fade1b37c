// What a fabric peer does with what arrives for it: takes a message from a
// sender's slot (only when it is for this peer), reads it as FAME-Z text or
// else as a binary Gen-Z packet (a --codec genz switch), emits `message`,
// and applies the peer's own reactions (reactions.ts decides: pong,
// Peer-Attribute ACK, CTL-Write -> configured + Standalone Acknowledgment),
// answering in the encoding the request came in.
import { GenZTextError, parse, toBytes, type TextMessage } from '../genz/text.js';
import { GenZCodec } from './genz-codec.js';
import { textOf } from './peer-text.js';
import type { FabricClientEvents, FabricMessage, OwnAttributes, PeerAttributes } from './peer-types.js';
import { reactTo } from './reactions.js';
import { RemoteInbox, UNREACHABLE, formatGcid } from './remote.js';
import type { SlotPort } from './ring-ends.js';

export interface InboxHost {
  readonly id: number;
  readonly serverId: number;
  readonly slots: SlotPort;
  /** This peer's attributes; a CTL-Write changes them. */
  readonly own: OwnAttributes;
  /** The attributes other peers reported (their Link CTL ACKs). */
  readonly peerAttrs: Map<number, PeerAttributes>;
  closed(): boolean;
  /** A CTL-Write set this peer's SID0/CID0 (`own` holds them already). */
  configured(): void;
  /** Posts an answer (to a local peer's ID, or a remote peer's SID:CID). */
  send(to: number | string, bytes: Uint8Array): Promise<void>;
  emit<E extends keyof FabricClientEvents>(event: E, ...args: FabricClientEvents[E]): boolean;
  /** Every message, after its `message` event: a reply someone waits for? */
  answer(m: FabricMessage): void;
  /** An answer to a fabric-attached memory request (from the switch). */
  famAnswer(bytes: Uint8Array): boolean;
  /** The switch says no route leads to these SIDs any more. */
  unreachable(sids: number[]): void;
}

export class Inbox {
  /** Remembers the tags and CIDs of binary packets in flight. */
  private readonly codec = new GenZCodec();
  /** Messages from peers of other switches, rebuilt from the switch's pieces. */
  private readonly remote = new RemoteInbox();

  constructor(private readonly host: InboxHost) {}

  /** Takes the message in `from`'s slot if it is for this peer.
   * `doorbell`: `from` rang (else a sweep, which takes only what names
   * this peer). One slot serves all of a sender's receivers: a message
   * that names another receiver is left to it; one that names nobody (a
   * sender that never sets last_responder) is taken, as FAME-Z does. */
  slot(from: number, doorbell: boolean): void {
    const { slots, id, serverId } = this.host;
    if (!slots.busy(from)) return;
    const target = slots.lastResponder(from);
    if (target !== id && (!doorbell || (target >= 1 && target <= serverId))) return;
    let bytes: Buffer | null;
    try {
      bytes = slots.take(from);
    } catch (e) {
      this.host.emit('warning', `slot ${from}: ${(e as Error).message}`);
      return;
    }
    if (bytes !== null) this.dispatch(from, bytes);
  }

  /** Messages from `from` that came another way (the switch's ring). */
  all(from: number, messages: Buffer[]): void {
    for (const bytes of messages) {
      if (this.host.closed()) return;
      this.dispatch(from, bytes);
    }
  }

  private dispatch(from: number, bytes: Buffer): void {
    if (from === this.host.serverId && RemoteInbox.carries(bytes)) return this.fromAfar(bytes);
    if (from === this.host.serverId && this.host.famAnswer(bytes)) return;
    this.deliver(from, bytes, undefined);
  }

  /** Pieces from the switch: whole messages of other switches' peers. */
  private fromAfar(bytes: Buffer): void {
    const { messages, warning } = this.remote.push(bytes);
    if (warning) this.host.emit('warning', warning);
    for (const m of messages) {
      const b = Buffer.from(m.message.buffer, m.message.byteOffset, m.message.length);
      if (m.kind === 'ring') this.host.emit('data', { from: this.host.serverId, messages: [b], gcid: m.source });
      else this.deliver(this.host.serverId, b, m.source);
    }
  }

  private deliver(from: number, bytes: Buffer, gcid: number | undefined): void {
    let message: TextMessage | null = null;
    let binary = false;
    try {
      message = parse(bytes);
    } catch (e) {
      if (!(e instanceof GenZTextError)) throw e;
      if (e.code === 'ENOTTEXT') {
        try {
          message = this.codec.decode(bytes, from);
          binary = true;
        } catch {
          message = null;
        }
      }
    }
    // A plain text's payload is the message's text (decoded once).
    const text = binary ? '' : message !== null && message.kind === 'text' && message.tracker === undefined ? message.text : textOf(bytes);
    if (from === this.host.serverId && gcid === undefined && text.startsWith(UNREACHABLE)) {
      const sids = text.slice(UNREACHABLE.length).split(',').map(Number).filter((n) => Number.isInteger(n) && n >= 0 && n <= 0xffff);
      this.host.unreachable(sids);
    }
    const m: FabricMessage = gcid === undefined ? { from, nodename: this.host.slots.nodename(from), text, message, bytes } : { from, gcid, nodename: '', text, message, bytes };
    this.host.emit('message', m);
    this.react(m, binary);
    this.host.answer(m);
  }

  private react(m: FabricMessage, binary: boolean): void {
    if (!m.message) return;
    const h = this.host;
    // A peer of another switch is answered at its GCID; it configures nobody here.
    if (m.gcid !== undefined && m.message.kind === 'ctl-write') return;
    const r = reactTo(m.from, m.message, h.own);
    if (r.warning) h.emit('warning', r.warning);
    if (r.attributes) h.peerAttrs.set(m.from, r.attributes);
    if (r.configure) {
      Object.assign(h.own, r.configure.own);
      h.configured();
    }
    if (!r.reply) return;
    let bytes: Uint8Array;
    try {
      bytes = binary ? this.codec.encode(r.reply, m.from) : toBytes(r.reply);
    } catch (e) {
      h.emit('warning', `could not answer peer ${m.from}: ${(e as Error).message}`);
      return;
    }
    const info = r.configure?.info;
    h.send(m.gcid === undefined ? m.from : formatGcid(m.gcid), bytes).then(
      () => {
        if (info) h.emit('configured', info);
      },
      (e: Error) => h.emit('warning', `could not answer peer ${m.from}: ${e.message}`),
    );
  }
}
