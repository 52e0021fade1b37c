// FAME-Z's mailbox slots in TypeScript, straight over the mapped shared
// memory: the hot half of crates/famez-core/src/mailbox.rs (post, take,
// busy, last_responder, nodename), byte-compatible with it, for the
// fabric client's message path (one doorbell, one message) without a
// native call per step. Formatting and the rest stay native.
//
// Slot i (1..server_id) starts at i x 512: nodename char[32] at 0, buflen
// u64 at 32, last_responder u64 at 48, buf at 128 (383 bytes and a NUL);
// the numbers come from ../layout.generated.ts (famez-core's layout.rs).
// The handshake is the native one: a sender posts only into a free slot
// (buflen 0), writes buf and last_responder, then publishes buflen; the
// receiver reads buflen, copies buf, then clears buflen. buflen is read
// and written as its two u32 halves with Atomics (sequentially
// consistent: release on the publishing store, acquire on the load): a
// valid length is below 2^32, so its high half is always 0, and a slot is
// free only when both halves are. Little-endian hosts only, as ring.ts.
import { endianness } from 'node:os';

import { FamezError } from '../errors.js';

import * as layout from '../layout.generated.js';

// Module-local copies of the layout's numbers, read on every message (see
// ring.ts: an imported binding can cost a getter call each time).
const MAX_SLOT_PAYLOAD = layout.MAX_SLOT_PAYLOAD;
const NODENAME_SIZE = layout.NODENAME_SIZE;
const BUF = layout.SLOT_BUF;
const BUFLEN = layout.SLOT_BUFLEN;
const LAST_RESPONDER = layout.SLOT_LAST_RESPONDER;
const PEER_SID = layout.SLOT_PEER_SID;
const SLOT_NODENAME = layout.SLOT_NODENAME;
const SLOT = layout.SLOT_SIZE;

/** The largest message a slot carries (a NUL follows it). */
export { MAX_SLOT_PAYLOAD };

if (endianness() !== 'LE') throw new Error('famez mailbox slots need a little-endian host');

/** A slot's buflen makes no sense (over 383): the slot was freed. */
export class SlotCorrupt extends FamezError<'EBADMSG'> {
  override name = 'SlotCorrupt';
  constructor(message: string) {
    super('EBADMSG', message);
  }
}

/** The nodename field as 32-bit words, to tell whether it changed. */
const NAME_WORDS = NODENAME_SIZE >>> 2;

export class Slots {
  private readonly words: Uint32Array;
  private readonly bytes: Buffer;
  /** Per slot: the nodename's bytes (as words) when last decoded, and it. */
  private readonly names: Array<{ words: Uint32Array; name: string } | undefined> = [];

  /** The slots 1..lastSlot of the mailbox at the start of `memory`. */
  constructor(
    memory: ArrayBuffer,
    readonly lastSlot: number,
  ) {
    const need = (lastSlot + 1) * SLOT;
    if (!Number.isInteger(lastSlot) || lastSlot < 1 || need > memory.byteLength) {
      throw new RangeError(`a mailbox of ${lastSlot} slots needs ${need} bytes; the shared object has ${memory.byteLength}`);
    }
    this.words = new Uint32Array(memory, 0, need / 4);
    this.bytes = Buffer.from(memory, 0, need);
  }

  private base(slot: number): number {
    if (!(slot >= 1 && slot <= this.lastSlot) || !Number.isInteger(slot)) throw new RangeError(`slot ${slot} is outside 1..${this.lastSlot}`);
    return slot * SLOT;
  }

  /** Whether the slot holds a message nobody has taken. */
  busy(slot: number): boolean {
    const w = (this.base(slot) + BUFLEN) >>> 2;
    return (Atomics.load(this.words, w) | Atomics.load(this.words, w + 1)) !== 0;
  }

  /** The slot's buflen: 0 when free (a length no message has, over 383,
   * as it is: take() frees such a slot). */
  length(slot: number): number {
    const w = (this.base(slot) + BUFLEN) >>> 2;
    return Atomics.load(this.words, w) + Atomics.load(this.words, w + 1) * 2 ** 32;
  }

  /** Whom the slot's last message was for. */
  lastResponder(slot: number): number {
    const w = (this.base(slot) + LAST_RESPONDER) >>> 2;
    return this.words[w] + this.words[w + 1] * 2 ** 32;
  }

  /** The slot's peer_SID (the switch's slot: the fabric's SID once a
   * manager configured it; 0 before). */
  peerSid(slot: number): number {
    const w = (this.base(slot) + PEER_SID) >>> 2;
    return this.words[w] + this.words[w + 1] * 2 ** 32;
  }

  /** The slot's nodename, up to its NUL (invalid UTF-8 replaced). Read
   * on every message: decoded again only when its bytes changed. */
  nodename(slot: number): string {
    const b = this.base(slot) + SLOT_NODENAME;
    const w = this.words;
    const at = b >>> 2;
    const seen = this.names[slot];
    if (seen !== undefined) {
      let same = true;
      for (let i = 0; i < NAME_WORDS; i++) {
        if (w[at + i] !== seen.words[i]) {
          same = false;
          break;
        }
      }
      if (same) return seen.name;
    }
    // Decode the words as they are now, once copied: the peer may be
    // writing its name meanwhile, and a name decoded before the copy was
    // taken would be cached beside words it does not match, and returned
    // for good (the name it then wrote never seen).
    const words = w.slice(at, at + NAME_WORDS);
    const bytes = Buffer.from(words.buffer, 0, NODENAME_SIZE);
    let end = 0;
    while (end < NODENAME_SIZE - 1 && bytes[end] !== 0) end++;
    const name = bytes.toString('utf8', 0, end);
    this.names[slot] = { words, name };
    return name;
  }

  /** Posts `msg` (1..383 bytes) from `sender`'s slot to `receiver`: false
   * while the slot still holds an unread message (never overwritten). */
  post(sender: number, receiver: number, msg: Uint8Array): boolean {
    const b = this.base(sender);
    this.base(receiver);
    if (msg.length < 1 || msg.length > MAX_SLOT_PAYLOAD) throw new RangeError(`EMSGSIZE: a slot message is 1..${MAX_SLOT_PAYLOAD} bytes, not ${msg.length}`);
    const w = this.words;
    const len = (b + BUFLEN) >>> 2;
    // Acquire: the receiver's copy of the last message is done.
    if ((Atomics.load(w, len) | Atomics.load(w, len + 1)) !== 0) return false;
    this.bytes.set(msg, b + BUF);
    this.bytes[b + BUF + msg.length] = 0;
    w[(b + LAST_RESPONDER) >>> 2] = receiver;
    w[((b + LAST_RESPONDER) >>> 2) + 1] = 0;
    // Release: whoever sees the length sees buf and last_responder.
    Atomics.store(w, len, msg.length);
    return true;
  }

  /** Takes the slot's message as a copy and frees the slot; null when it is
   * empty. A length over 383 frees the slot and throws SlotCorrupt. */
  take(slot: number): Buffer | null {
    const b = this.base(slot);
    const w = this.words;
    const len = (b + BUFLEN) >>> 2;
    const lo = Atomics.load(w, len);
    const hi = Atomics.load(w, len + 1);
    if ((lo | hi) === 0) return null;
    if (hi !== 0 || lo > MAX_SLOT_PAYLOAD) {
      Atomics.store(w, len + 1, 0);
      Atomics.store(w, len, 0);
      throw new SlotCorrupt(`slot ${slot} has buflen ${hi * 2 ** 32 + lo}, over the limit of ${MAX_SLOT_PAYLOAD}; freed`);
    }
    const out = Buffer.allocUnsafe(lo);
    this.bytes.copy(out, 0, b + BUF, b + BUF + lo);
    // Release: the copy is done before the sender reuses buf.
    Atomics.store(w, len, 0);
    return out;
  }
}
