// Whether a transport's shared memory is a FAME-Z fabric this peer can
// join: a mailbox whose globals make sense for the object's size, an ID
// and enough vectors for it, and the switch advertised. Each refusal is
// ENOTFABRIC with what was wrong.
import { Mailbox } from '../native.js';
import type { PeerTransport } from '../transport.js';
import { mailboxProblem } from './peer-text.js';
import { FabricClientError } from './peer-types.js';

/** Opens the fabric's mailbox over `transport`'s shared memory, or throws
 * ENOTFABRIC (the transport is left as it was). */
export function openFabricMailbox(transport: PeerTransport): { mailbox: Mailbox; nClients: number } {
  const shm = transport.sharedMemory;
  const refuse = (why: string) => new FabricClientError('ENOTFABRIC', `${transport.where}: ${why}`);
  let g;
  try {
    const probe = new Mailbox(shm);
    try {
      g = probe.globals;
    } finally {
      probe.close();
    }
  } catch (e) {
    throw refuse(`the shared memory holds no FAME-Z mailbox (${(e as Error).message})`);
  }
  const problem = mailboxProblem(g, shm.size);
  if (problem !== null) throw refuse(`the shared memory holds no FAME-Z mailbox (${problem})`);
  if (transport.id < 1 || transport.id > g.nClients) throw refuse(`this peer got ID ${transport.id}, outside the fabric's 1..${g.nClients}`);
  if (transport.vectors < g.nEvents) throw refuse(`this peer has ${transport.vectors} vector(s); a fabric of ${g.nClients} peers gives ${g.nEvents}`);
  if (!transport.peerIds().includes(g.serverId)) throw refuse(`the server did not advertise its switch (peer ${g.serverId})`);
  const mailbox = new Mailbox(shm, g.nClients);
  try {
    void mailbox.ringLayout;
  } catch (e) {
    mailbox.close();
    throw refuse(`slot 0 describes ring channels that cannot be (${(e as Error).message})`);
  }
  return { mailbox, nClients: g.nClients };
}
