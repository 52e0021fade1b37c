// The fabric's mailbox: FAME-Z's slot layout over the server's shared
// object, from the native core (post/take with acquire/release on buflen).
import { Mailbox, type SharedMemory } from '../native.js';
import type { MailboxPort } from './fabric.js';

/** Formats the mailbox of `nClients` peers (globals in slot 0, each slot's
 * peer_id) at the start of `shm` and returns it. */
export function openMailbox(shm: SharedMemory, nClients: number): MailboxPort {
  const mailbox = new Mailbox(shm, nClients);
  mailbox.format(nClients);
  return mailbox;
}
