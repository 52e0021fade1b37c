// The fabric's mailbox: FAME-Z's slot layout over the server's shared
// object. The native core formats it and sets up the rings; the switch's
// hot path (a doorbell: busy, last_responder, take; its answer: post) runs
// on slots.ts over the same memory, byte-compatible with the native
// mailbox and with the same acquire/release on buflen, without a native
// call (each costs 0.5-1.7 us: measured) per step.
import type { RingLayoutInfo } from '../native.js';
import { Mailbox, type SharedMemory } from '../native.js';
import type { MailboxPort } from './fabric.js';
import { setupFabricRings } from './rings.js';
import { SlotCorrupt, Slots } from './slots.js';

class SwitchMailbox implements MailboxPort {
  constructor(
    private readonly native: Mailbox,
    private readonly slots: Slots,
  ) {}

  post(sender: number, receiver: number, message: Uint8Array): boolean {
    return this.slots.post(sender, receiver, message);
  }

  take(sender: number): Uint8Array | null {
    try {
      return this.slots.take(sender);
    } catch (e) {
      // The native mailbox's words, which the switch logs.
      if (e instanceof SlotCorrupt) throw new SlotCorrupt(`EBADMSG: ${e.message}`);
      throw e;
    }
  }

  busy(slot: number): boolean {
    return this.slots.busy(slot);
  }

  slot(slot: number): { buflen: number; lastResponder: number } {
    return { buflen: this.slots.length(slot), lastResponder: this.slots.lastResponder(slot) };
  }

  nodename(slot: number): string {
    return this.slots.nodename(slot);
  }

  setNodename(slot: number, name: string): void {
    this.native.setNodename(slot, name);
  }

  clear(slot: number): void {
    this.native.clear(slot);
  }

  setPeerIds(slot: number, sid: number, cid: number): void {
    this.native.setPeerSid(slot, sid);
    this.native.setPeerCid(slot, cid);
  }

  get ringLayout(): RingLayoutInfo | null {
    return this.native.ringLayout ?? null;
  }

  close(): void {
    this.native.close();
  }
}

/** Formats the mailbox of `nClients` peers (globals in slot 0, each slot's
 * peer_id) at the start of `shm`, sets up the ring channels when they fit
 * (see rings.ts), and returns it. */
export function openMailbox(shm: SharedMemory, nClients: number, log?: (line: string) => void, ringCapacity: number | null = null): MailboxPort {
  const mailbox = new Mailbox(shm, nClients);
  try {
    mailbox.format(nClients);
    setupFabricRings(mailbox, shm.size, nClients, log, ringCapacity);
  } catch (e) {
    mailbox.close();
    throw e;
  }
  return new SwitchMailbox(mailbox, new Slots(shm.buffer as ArrayBuffer, nClients + 1));
}
