// The fabric as I/O: the switch is a peer of the server (ID nClients + 1)
// with its own eventfds, the shared object starts with FAME-Z's mailbox, and
// messages move through the switch's single slot. Decisions are the pure
// Switch's; this module waits on doorbells, takes and posts mailbox
// messages, and rings peers.
import { EventFd } from '../native.js';
import { toBytes, type TextMessage } from '../genz/text.js';
import type { Server } from '../server/server.js';
import { Switch, type SwitchConfig } from './switch.js';

/** What the fabric needs of a mailbox (the native FAME-Z slot layout). */
export interface MailboxPort {
  post(sender: number, receiver: number, message: Uint8Array): boolean;
  take(sender: number): Uint8Array | null;
  nodename(slot: number): string;
  setNodename(slot: number, name: string): void;
  clear(slot: number): void;
  close(): void;
}

export interface FabricConfig extends SwitchConfig {
  log: (line: string) => void;
  /** How long a peer may leave the switch's message unread before it is
   * withdrawn as undelivered (default 1 s). */
  takeTimeoutMs?: number;
  /** What the switch writes: FAME-Z text (default) or binary Gen-Z. */
  encode?: (m: TextMessage, to: number) => Uint8Array;
}

interface Pending {
  to: number;
  bytes: Uint8Array;
  since: number;
}

export class Fabric {
  readonly switch: Switch;
  /** The switch's eventfds: vector S is rung by peer S. */
  readonly vectors: EventFd[] = [];
  private readonly outbox: Pending[] = [];
  private retry: NodeJS.Timeout | null = null;
  private server: Server | null = null;
  private mailbox: MailboxPort | null = null;
  private closed = false;

  /** Creates the switch's eventfds, so the server can advertise them. */
  constructor(readonly config: FabricConfig) {
    this.switch = new Switch(config);
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

  /** Joins the server: the mailbox over its shared memory (globals already
   * written), and the server's connects and departures. */
  attach(server: Server, mailbox: MailboxPort): void {
    this.server = server;
    this.mailbox = mailbox;
    mailbox.setNodename(this.switch.serverId, 'Z-switch');
    server.on('connect', ({ id }) => this.apply(this.switch.connect(id)));
    server.on('disconnect', ({ id }) => {
      this.switch.disconnect(id);
      // FAME-Z clears a departed peer's slot; an unread message to it is moot.
      mailbox.setNodename(id, '');
      mailbox.clear(id);
    });
    server.on('close', () => this.close());
  }

  private onDoorbell(sender: number): void {
    const mailbox = this.mailbox;
    if (!mailbox) return;
    let bytes: Uint8Array | null;
    try {
      bytes = mailbox.take(sender);
    } catch (e) {
      this.config.log(`famez: switch: peer ${sender}: ${(e as Error).message}; rejected`);
      return;
    }
    if (bytes === null) return; // a doorbell without a message (or one already taken)
    this.apply(this.switch.receive(sender, bytes, mailbox.nodename(sender)));
  }

  private apply(reaction: { send: Array<{ to: number; message: TextMessage }>; log: string[] }): void {
    for (const line of reaction.log) this.config.log(`famez: switch: ${line}`);
    const encode = this.config.encode ?? toBytes;
    for (const { to, message } of reaction.send) this.outbox.push({ to, bytes: encode(message, to), since: Date.now() });
    this.pump();
  }

  /** Sends queued messages in order through the switch's one slot. */
  private pump(): void {
    const mailbox = this.mailbox;
    if (this.retry || this.closed || !mailbox) return;
    const me = this.switch.serverId;
    const timeout = this.config.takeTimeoutMs ?? 1000;
    while (this.outbox.length > 0) {
      const head = this.outbox[0];
      if (!this.switch.port(head.to)) {
        this.outbox.shift(); // the peer left
        continue;
      }
      if (mailbox.post(me, head.to, head.bytes)) {
        this.outbox.shift();
        this.server?.ring(head.to, me);
        const next = this.outbox[0];
        if (next) next.since = Date.now();
        continue;
      }
      if (Date.now() - head.since > timeout) {
        // The previous recipient never took its message (a QEMU without a
        // guest driver, say): withdraw it, say so, and go on.
        mailbox.clear(me);
        this.config.log(`famez: switch: a message was not taken within ${timeout} ms; withdrawn as undelivered`);
        head.since = Date.now();
        continue;
      }
      this.retry = setTimeout(() => {
        this.retry = null;
        this.pump();
      }, 2);
      return;
    }
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.retry) clearTimeout(this.retry);
    for (const v of this.vectors) v.close();
    this.mailbox?.close();
  }
}
