// The fabric's mailbox: FAME-Z's slot layout over the server's shared
// object, from the native core (post/take with acquire/release on buflen).
import { Mailbox, type SharedMemory } from '../native.js';
import type { MailboxPort } from './fabric.js';
import { setupFabricRings } from './rings.js';

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
  return mailbox;
}
