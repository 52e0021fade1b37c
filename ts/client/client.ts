// The host client: joins an ivshmem server as a peer. It folds the server's
// messages with `protocol.receive`, owns the fds it is given, rings other
// peers' eventfds and reports its own as 'interrupt' events.
import '../dispose.js';
import { EventEmitter } from 'node:events';
import * as fs from 'node:fs';

import { checkSignal, sleep, whenAborted } from '../abort.js';
import { FamezError } from '../errors.js';
import { silentLogger, type Logger } from '../log.js';
import { EventFd, SharedMemory, UnixStream, closeFd, signalFd } from '../native.js';
import type { PeerTransport, TransportEvents } from '../transport.js';
import { initialClientState, receive, welcomeProgress, type ClientState } from '../protocol.js';

export interface PeerView {
  id: number;
  /** Number of this peer's vectors (eventfds) this client can ring. */
  vectors: number;
}

/** The host Client's events are the transport's (join carries a PeerView). */
export type ClientEvents = TransportEvents;

export interface ConnectOptions {
  /** Vectors the server gives each peer. Without it the client learns the
   * count from the other peers' groups (see protocol.welcomeProgress); a
   * lone peer is welcomed at its first own vector and gets the rest as they
   * come. */
  vectors?: number;
  /** Keep retrying (every `retryMs`) while the server is not there yet. */
  retry?: boolean;
  retryMs?: number;
  /** Give up after this long (default 10 s): retries, the welcome and
   * the wait for this process's other clients together. */
  timeoutMs?: number;
  /** Gives up when it aborts: connect rejects with the signal's reason
   * (an AbortError unless it was given another) and closes what it had
   * opened; an already-aborted signal rejects at once. */
  signal?: AbortSignal;
  /** Busy-poll window, in microseconds (default 0: off). After this peer
   * rings another or is rung, the event loop keeps polling for this long
   * instead of sleeping, so an answer is seen without a wake-up (like
   * SO_BUSY_POLL): lower latency for request/answer traffic, for one CPU
   * kept busy during the window. Each own doorbell also spins natively
   * after a wake-up (EventFd.spin: at most 2 ms before the loop gets its
   * turn), so the answer to a ring is read without going back to sleep. */
  busyPollUs?: number;
  /** Where the client's events go (default: nowhere): its welcome and
   * departure at info, other peers' joins and leaves at debug. */
  logger?: Logger;
}

/** The connected Clients of this process, by shared object (its device
 * and inode): a newcomer's connect waits until it and every other Client
 * here on the same server see each other (see Client.connect). */
const neighbours = new Map<string, Set<Client>>();

export class ClientError extends FamezError<'ECONNECT' | 'EREFUSED' | 'EPROTO' | 'ETIMEDOUT' | 'ECLOSED'> {
  override name = 'ClientError';
}

/** The host transport of a fabric peer (see ts/fabric/transport.ts). */
export class Client extends EventEmitter<ClientEvents> implements PeerTransport {
  private readonly state: ClientState<number> = initialClientState();
  private readonly peerBells = new Map<number, EventFd[]>();
  private readonly ownBells: EventFd[] = [];
  /** The fd numbers of peerBells / ownBells, for signalFd on the hot path. */
  private readonly peerFds = new Map<number, number[]>();
  private readonly ownFds: number[] = [];
  private shm: SharedMemory | null = null;
  private closedReason: string | null = null;
  /** Vectors per peer, once known (every peer of a server has the same). */
  private groupSize: number | null = null;
  /** Busy polling: the window (ms), until when (performance.now()), whether
   * a doorbell rang since the chain last looked at the clock, and the
   * immediate that keeps the loop from sleeping. */
  private busyPollMs = 0;
  private busyUntil = 0;
  private rang = false;
  private busy: NodeJS.Immediate | null = null;
  /** While an 'interrupt' event's listeners run: the fd an `answer()` asked
   * for (-1: none), rung by the watch when they have returned. */
  private answerFd = -1;
  private inInterrupt = false;
  /** The shared object's identity (dev:ino), the key of `neighbours`. */
  private shmKey: string | null = null;
  /** Called after every change of who this client knows, and at close. */
  private readonly watchers = new Set<() => void>();

  private constructor(
    readonly socketPath: string,
    private readonly stream: UnixStream,
  ) {
    super();
  }

  /** Connects and resolves once the server's welcome (ID, shared memory,
   * the other peers and this peer's own vectors) has arrived, and every
   * other Client of this process on the same server has this peer among
   * its peers (and this one them): right after `await Client.connect()`,
   * the clients of one process can ring each other. (A peer in another
   * process learns of it when it reads its socket: wait for its `join`.) */
  static async connect(socketPath: string, options: ConnectOptions = {}): Promise<Client> {
    const signal = checkSignal(options.signal);
    const busyPollUs = options.busyPollUs ?? 0;
    if (!(busyPollUs >= 0 && busyPollUs <= 1_000_000)) throw new RangeError(`busyPollUs is 0..1000000 microseconds, not ${busyPollUs}`);
    signal?.throwIfAborted();
    const timeoutMs = options.timeoutMs ?? 10_000;
    const retryMs = options.retryMs ?? 1000;
    const deadline = Date.now() + timeoutMs;
    let stream: UnixStream;
    for (;;) {
      try {
        stream = UnixStream.connect(socketPath);
        break;
      } catch (e) {
        const msg = (e as Error).message;
        if (!options.retry || Date.now() + retryMs > deadline) {
          throw new ClientError('ECONNECT', `cannot connect to ${socketPath}: ${msg}`);
        }
        await sleep(retryMs, signal);
      }
    }
    const client = new Client(socketPath, stream);
    client.groupSize = options.vectors ?? null;
    client.busyPoll = busyPollUs;
    await client.welcome(deadline, signal);
    await client.meetNeighbours(deadline, signal);
    const log = (options.logger ?? silentLogger).child({ component: 'client' });
    log.info({ event: 'welcome', peer: client.id, vectors: client.vectors, peers: client.peerIds().length }, `joined ${socketPath} as peer ${client.id} (${client.vectors} vectors)`);
    client.on('join', ({ id }) => log.debug({ event: 'join', peer: id }, `peer ${id} joined`));
    client.on('leave', ({ id }) => log.debug({ event: 'leave', peer: id }, `peer ${id} left`));
    client.on('close', ({ reason }) => log.info({ event: 'close', peer: client.id, reason }, `left ${socketPath}: ${reason}`));
    return client;
  }

  /** Whether this client holds all of `other`'s vectors. */
  private knows(other: Client): boolean {
    return (this.peerFds.get(other.id)?.length ?? 0) >= other.vectors;
  }

  /** After the welcome: joins `neighbours` and waits until this client and
   * every other open Client of this process on the same shared object know
   * each other (the server has announced each to the other, and both have
   * read it: they read on this same loop), or one of them closed. */
  private meetNeighbours(deadline: number, signal: AbortSignal | undefined): Promise<void> {
    const key = this.shmKey;
    if (key === null) return Promise.resolve();
    let group = neighbours.get(key);
    if (!group) neighbours.set(key, (group = new Set()));
    const others = [...group].filter((c) => !c.closed);
    group.add(this);
    const pending = () => others.filter((c) => !c.closed && !(c.knows(this) && this.knows(c)));
    if (pending().length === 0) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      const watched = [this, ...others];
      const done = (err: unknown) => {
        clearTimeout(timer);
        stopAbort();
        for (const c of watched) c.watchers.delete(check);
        if (err === null) resolve();
        else {
          this.shutdown(`connect failed: ${err instanceof Error ? err.message : String(err)}`);
          reject(err);
        }
      };
      const check = () => {
        if (this.closed) done(new ClientError('ECLOSED', `${this.socketPath}: the connection closed right after the welcome (${this.closedReason})`));
        else if (pending().length === 0) done(null);
      };
      const timer = setTimeout(() => {
        const late = pending().map((c) => c.id);
        done(new ClientError('ETIMEDOUT', `${this.socketPath}: peer ${this.id} and this process's peer(s) ${late.join(', ')} did not learn of each other in time`));
      }, Math.max(0, deadline - Date.now()));
      const stopAbort = whenAborted(signal, (reason) => done(reason));
      for (const c of watched) c.watchers.add(check);
    });
  }

  private notifyWatchers(): void {
    for (const w of [...this.watchers]) w();
  }

  private welcome(deadline: number, signal: AbortSignal | undefined): Promise<Client> {
    return new Promise((resolve, reject) => {
      let settled = false;
      let endOfRead: NodeJS.Immediate | null = null;
      const fail = (err: unknown, why: string) => {
        settled = true;
        clearTimeout(timer);
        stopAbort();
        if (endOfRead) clearImmediate(endOfRead);
        this.shutdown(why);
        reject(err);
      };
      const timer = setTimeout(() => {
        const { stage } = welcomeProgress(this.state, this.groupSize);
        fail(new ClientError('ETIMEDOUT', `${this.socketPath}: the server stopped in the middle of its welcome, ${stage}`), 'no welcome from the server');
      }, Math.max(0, deadline - Date.now()));
      // An abort closes the half-open connection: the server sees it leave.
      const stopAbort = whenAborted(signal, (reason) => {
        if (!settled) fail(reason, 'connect aborted');
      });
      const settle = () => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        stopAbort();
        // Known from the option or the others' groups; a lone peer of a
        // server nobody described learns it when the next peer's comes.
        this.groupSize ??= this.peerBells.size > 0 ? Math.max(...[...this.peerBells.values()].map((b) => b.length)) : null;
        resolve(this);
      };
      this.stream.watch((value, fd, reason) => {
        if (value === null) {
          if (!settled) {
            const err = new ClientError('ECLOSED', `${this.socketPath}: the server closed the connection during the welcome`);
            fail(err, err.message);
          } else this.shutdown(reason === 'closed' ? 'server closed the connection' : reason ?? 'closed');
          return;
        }
        for (const ev of receive(this.state, { value, fd: fd < 0 ? null : fd })) {
          switch (ev.type) {
            case 'welcome':
              this.shm = SharedMemory.fromFd(ev.shm);
              this.shmKey = shmIdentity(this.shm.fd);
              break;
            case 'own-vector': {
              const bell = EventFd.adopt(ev.fd);
              const vector = ev.vector;
              bell.watch((count) => {
                // The listeners first: an answer they ring goes out before
                // the busy-poll bookkeeping.
                this.inInterrupt = true;
                try {
                  this.emit('interrupt', { vector, count });
                } catch (e) {
                  // What was answered before the throw still goes.
                  this.flushAnswer();
                  throw e;
                } finally {
                  this.inInterrupt = false;
                }
                if (this.busyPollMs > 0) this.keepPolling();
                // The watch rings it (see EventFd.watch).
                const fd = this.answerFd;
                this.answerFd = -1;
                return fd;
              });
              bell.spin(Math.round(this.busyPollMs * 1000));
              this.ownBells.push(bell);
              this.ownFds.push(bell.fd);
              this.notifyWatchers();
              // The own group ends the welcome (protocol.welcomeProgress).
              // A lone peer whose group size nobody knows takes the rest of
              // this read first (the server sends the group in one go).
              if (!settled && welcomeProgress(this.state, this.groupSize).done) {
                if (this.groupSize !== null || this.peerBells.size > 0) settle();
                else endOfRead ??= setImmediate(settle);
              }
              break;
            }
            case 'peer-vector': {
              let bells = this.peerBells.get(ev.peer);
              if (!bells) {
                this.peerBells.set(ev.peer, (bells = []));
                this.peerFds.set(ev.peer, []);
              }
              const bell = EventFd.adopt(ev.fd);
              bells.push(bell);
              this.peerFds.get(ev.peer)!.push(bell.fd);
              // A newcomer is announced once, when its whole group is here.
              // A lone peer's own group was all sent before any newcomer's.
              if (settled && this.groupSize === null) this.groupSize = this.ownBells.length;
              if (settled && bells.length === this.groupSize) this.emit('join', { id: ev.peer, vectors: bells.length });
              this.notifyWatchers();
              break;
            }
            case 'peer-left':
              for (const b of this.peerBells.get(ev.peer) ?? []) b.close();
              this.peerBells.delete(ev.peer);
              this.peerFds.delete(ev.peer);
              if (settled) this.emit('leave', { id: ev.peer });
              this.notifyWatchers();
              break;
            case 'discard':
              closeFd(ev.fd);
              break;
            case 'refused':
              if (!settled) {
                const err = new ClientError('EREFUSED', `${this.socketPath}: the server refused this peer (version ${ev.version}; it may be full)`);
                fail(err, err.message);
              }
              return;
            case 'error':
              if (!settled) {
                const err = new ClientError('EPROTO', `${this.socketPath}: ${ev.message}`);
                fail(err, err.message);
              } else this.shutdown(`protocol error: ${ev.message}`);
              return;
          }
        }
      });
    });
  }

  get id(): number {
    return this.state.id;
  }

  /** Number of this peer's own vectors. */
  get vectors(): number {
    return this.ownBells.length;
  }

  /** Where this client is attached: the server's socket. */
  get where(): string {
    return this.socketPath;
  }

  /** The other peers' IDs, ascending. */
  peerIds(): number[] {
    return [...this.peerBells.keys()].sort((a, b) => a - b);
  }

  /** The other peers, by ID. */
  get peers(): Map<number, PeerView> {
    const out = new Map<number, PeerView>();
    for (const id of [...this.peerBells.keys()].sort((a, b) => a - b)) {
      out.set(id, { id, vectors: this.peerBells.get(id)!.length });
    }
    return out;
  }

  /** The shared memory, mapped: the same ArrayBuffer every time. */
  get memory(): ArrayBuffer {
    if (!this.shm) throw new ClientError('ECLOSED', 'the client is closed');
    return this.shm.buffer as ArrayBuffer;
  }

  /** The shared object itself, for native views over it (the fabric's
   * Mailbox and Ring). */
  get sharedMemory(): SharedMemory {
    if (!this.shm) throw new ClientError('ECLOSED', 'the client is closed');
    return this.shm;
  }

  get closed(): boolean {
    return this.closedReason !== null;
  }

  /** The busy-poll window in microseconds (0: off); see ConnectOptions. */
  get busyPoll(): number {
    return this.busyPollMs * 1000;
  }
  set busyPoll(us: number) {
    if (!(us >= 0 && us <= 1_000_000)) throw new RangeError(`busyPollUs is 0..1000000 microseconds, not ${us}`);
    this.busyPollMs = us / 1000;
    // Each of its own doorbells also spins natively after a wake-up (the
    // answer to a ring is then read without a sleep in between); the
    // immediates below keep the rest of the loop polling too.
    for (const b of this.ownBells) b.spin(Math.round(us));
  }

  /** Keeps the loop polling (a chain of immediates: libuv then polls with
   * a zero timeout) until the window after this doorbell has passed. No
   * clock here (a doorbell's hot path): the chain's next turn, at most one
   * turn of the loop later, starts the window from its own reading. */
  private keepPolling(): void {
    this.rang = true;
    this.busy ??= setImmediate(this.spin);
  }

  private readonly spin = (): void => {
    const now = performance.now();
    if (this.rang) {
      this.rang = false;
      this.busyUntil = now + this.busyPollMs;
    }
    this.busy = this.closedReason === null && now < this.busyUntil ? setImmediate(this.spin) : null;
  };

  /** Rings `peer` on `vector`, or on all of its vectors. */
  ring(peer: number, vector: number | 'all' = 0): void {
    const fds = this.fdsOf(peer);
    if (vector === 'all') {
      for (const fd of fds) signalFd(fd);
    } else {
      signalFd(this.fdOf(fds, peer, vector));
    }
    // After the ring, not before: the answer's wait starts with it.
    if (this.busyPollMs > 0) this.keepPolling();
  }

  /** Rings `peer` on `vector` as the answer to the interrupt being handled:
   * from an 'interrupt' listener, the ring goes out as soon as the
   * listeners have returned (the doorbell's watch makes it, saving a call
   * into the binding: about 0.1 us a ring); anywhere else, and for a
   * second answer in one interrupt (the first then goes at once), the
   * same as `ring()`. A listener that waits, in the same call, for what
   * its answer brings must `ring()` instead. Errors as `ring()`'s, at once. */
  answer(peer: number, vector = 0): void {
    if (!this.inInterrupt) return this.ring(peer, vector);
    const fd = this.fdOf(this.fdsOf(peer), peer, vector);
    this.flushAnswer();
    this.answerFd = fd;
    if (this.busyPollMs > 0) this.keepPolling();
  }

  private fdsOf(peer: number): number[] {
    if (this.closedReason !== null) throw new ClientError('ECLOSED', `the client is closed (${this.closedReason})`);
    const fds = this.peerFds.get(peer) ?? (peer === this.id ? this.ownFds : undefined);
    if (!fds) throw new ClientError('EPROTO', `peer ${peer} is not connected (peers: ${[...this.peerBells.keys()].join(', ') || 'none'})`);
    return fds;
  }

  private fdOf(fds: number[], peer: number, vector: number): number {
    const fd = fds[vector];
    if (fd === undefined) throw new ClientError('EPROTO', `peer ${peer} has vectors 0..${fds.length - 1}, not ${vector}`);
    return fd;
  }

  /** Rings an answer not yet rung (before its fd may close). */
  private flushAnswer(): void {
    const fd = this.answerFd;
    this.answerFd = -1;
    if (fd >= 0) signalFd(fd);
  }

  private shutdown(reason: string): void {
    if (this.closedReason !== null) return;
    this.closedReason = reason;
    // An answer made before the close still goes (its fd closes below).
    this.flushAnswer();
    if (this.busy) clearImmediate(this.busy);
    this.busy = null;
    this.stream.close();
    for (const b of this.ownBells) b.close();
    for (const bells of this.peerBells.values()) for (const b of bells) b.close();
    this.peerBells.clear();
    // The numbers may be reused by any fd opened from now on.
    this.peerFds.clear();
    this.ownFds.length = 0;
    this.shm?.close();
    if (this.shmKey !== null) {
      const group = neighbours.get(this.shmKey);
      group?.delete(this);
      if (group?.size === 0) neighbours.delete(this.shmKey);
    }
    this.notifyWatchers();
    this.emit('close', { reason });
  }

  /** Leaves the fabric: closes the socket, every fd and the mapping. */
  close(): void {
    this.shutdown('closed by the client');
  }

  /** close(), for `using client = await Client.connect(...)`. */
  [Symbol.dispose](): void {
    this.close();
  }
}

/** Which shared object `fd` is (the same for every peer of one server). */
function shmIdentity(fd: number): string | null {
  try {
    const st = fs.fstatSync(fd);
    return `${st.dev}:${st.ino}`;
  } catch {
    return null;
  }
}
