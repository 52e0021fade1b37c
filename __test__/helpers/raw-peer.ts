// A protocol-level peer for tests: a raw UNIX stream that records every
// message the server sends (value, and whether it carried an fd) and closes
// every received fd at once, so hundreds of peers do not exhaust fds.
import { UnixStream, closeFd } from '../../ts/native.js';
import { waitFor, waitedFor } from './wait.js';

export interface Msg {
  value: number;
  fd: boolean;
}

export class RawPeer {
  readonly stream: UnixStream;
  readonly msgs: Msg[] = [];
  /** Why the connection ended ("closed" for EOF), null while open. */
  ended: string | null = null;
  /** Own-ID messages carrying an fd (the peer's own vectors) seen so far. */
  ownVectors = 0;

  /** Connects; with `read: false` nothing is ever read (a stuck peer). */
  constructor(socket: string, read = true) {
    this.stream = UnixStream.connect(socket);
    if (read) {
      this.stream.watch((value, fd, reason) => {
        if (fd >= 0) closeFd(fd);
        if (value === null) {
          this.ended = reason ?? 'closed';
          return;
        }
        this.record({ value, fd: fd >= 0 });
      });
    }
  }

  private record(m: Msg): void {
    this.msgs.push(m);
    if (this.msgs.length > 3 && m.fd && m.value === this.id) this.ownVectors += 1;
  }

  /** The ID the server gave (the second message), -1 before it arrives. */
  get id(): number {
    return this.msgs.length >= 2 ? this.msgs[1].value : -1;
  }

  /** Waits until the peer's own `vectors` eventfds (the end of the welcome)
   * have arrived, or the connection ended. */
  async welcome(vectors: number, ms = 20_000): Promise<void> {
    await waitFor(() => this.ownVectors >= vectors || this.ended !== null, `the welcome of a raw peer (${this.msgs.length} messages so far)`, ms);
  }

  /** For a peer that never read: reads everything now buffered until EOF
   * (bounded), returning true when the server had closed the connection. */
  async drainToEof(ms = 20_000): Promise<boolean> {
    /** Reads what is buffered now; true at EOF. */
    const drain = (): boolean => {
      for (;;) {
        let m;
        try {
          m = this.stream.recv();
        } catch (e) {
          if (/EOF|closed/i.test((e as Error).message)) {
            this.ended = 'closed';
            return true;
          }
          throw e;
        }
        if (!m) return false;
        if (m.fd >= 0) closeFd(m.fd);
        this.record({ value: m.value, fd: m.fd >= 0 });
      }
    };
    return waitedFor(drain, 'the end of the connection', ms, 20);
  }

  close(): void {
    this.stream.close();
  }
}
