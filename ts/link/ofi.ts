// A link between two famez switches on libfabric (docs/multi-host.md): the
// native OfiListener / OfiLink / OfiWindow, typed, with promises for
// connecting and for RMA, and LinkError for every failure. libfabric is
// loaded only when a link or listener is opened; without it they throw
// LinkError ELIBACC whose message is one line naming the fix
// ("libfabric is not installed: apt-get install libfabric1 (...)").
//
// Completions and connection events arrive on Node's loop through the
// libfabric queues' wait fds (no thread, no timer).
import '../dispose.js';
import { EventEmitter } from 'node:events';

import { checkSignal, raceAbort } from '../abort.js';
import { FamezError } from '../errors.js';
import {
  OfiLink,
  OfiListener,
  errorCode,
  errorText,
  libfabricAvailable as probe,
  type LibfabricProbe,
  type LinkOptions as NativeLinkOptions,
  type OfiWindow,
  type RemoteWindowInfo,
} from '../native.js';

export type { LibfabricProbe, OfiWindow, RemoteWindowInfo };

/** How a link or listener is opened. */
export interface LinkOptions {
  /** libfabric provider with connected endpoints (FI_EP_MSG): 'tcp' (the
   * default, any IP network), 'verbs' (RDMA hardware). */
  provider?: string;
  /** Receives kept posted and sends in flight (default 32). */
  depth?: number;
  /** The largest message in bytes (default 65536); both ends must agree. */
  maxMessage?: number;
  /** The library to dlopen (default $FAMEZ_LIBFABRIC, else libfabric.so.1). */
  library?: string;
}

/** A link's failure: `code` is an errno-style name ('ELIBACC' for a
 * missing libfabric, 'ECONNREFUSED', 'EMSGSIZE', 'ENOTCONN', 'EBADF',
 * 'ERANGE', libfabric's own 'FI_E...'), the message one line for a person. */
export class LinkError extends FamezError<string> {
  override name = 'LinkError';
}

function linkError(e: unknown): LinkError {
  return new LinkError(errorCode(e) || 'EIO', errorText(e), { cause: e });
}

function native<T>(f: () => T): T {
  try {
    return f();
  } catch (e) {
    throw linkError(e);
  }
}

function nativeOptions(o: LinkOptions | undefined): NativeLinkOptions | undefined {
  return o && { provider: o.provider, depth: o.depth, maxMessage: o.maxMessage, library: o.library };
}

/** Whether libfabric can be loaded (and its version), without opening anything. */
export function libfabricAvailable(library?: string): LibfabricProbe {
  return probe(library);
}

// The native callback's kinds (crates/famez-node/src/ofi.rs LINK_*).
const MESSAGE = 0;
const READ = 1;
const WRITTEN = 2;
const RMA_FAILED = 3;
const SEND_FAILED = 4;
const CONNECTED = 5;
const SHUTDOWN = 6;
const ERROR = 7;
const RECEIVE_FAILED = 8;

export interface LinkEvents {
  /** A message, in the order the peer sent them. */
  message: [data: Buffer];
  connected: [];
  /** The link went down: the peer shut it down (error null), or connecting
   * or the link failed. Pending reads and writes have been rejected; a link
   * never comes back up: close() it (until then it keeps the process alive)
   * and connect anew. */
  down: [error: LinkError | null];
  /** A send failed (the link is failing; 'down' usually follows), or a
   * message longer than this side's maxMessage arrived (FI_ETRUNC: the
   * peers disagree on it; the message is dropped, and the tcp provider then
   * ends the connection: 'down' follows). */
  error: [error: LinkError];
}

interface Pending {
  resolve: (data: Buffer | null) => void;
  reject: (e: LinkError) => void;
}

export type LinkState = 'connecting' | 'connected' | 'down' | 'closed';

/** One side of a link. */
export class Link extends EventEmitter<LinkEvents> {
  readonly #native: OfiLink;
  readonly #pending = new Map<number, Pending>();
  #down: LinkError | null = null;

  /** Starts connecting to `addr` (HOST:PORT); `ready()` waits for it.
   * Messages sent meanwhile go out once connected. */
  static connect(addr: string, options?: LinkOptions): Link {
    return new Link(native(() => OfiLink.connect(addr, nativeOptions(options))));
  }

  /** @internal Wraps a native link (from connect or a listener's accept) and watches it. */
  constructor(link: OfiLink) {
    super();
    this.#native = link;
    link.watch((kind, id, data, code, message) => this.#on(kind, id, data, code, message));
  }

  #on(kind: number, id: number, data: Buffer | null, code: string | null, message: string | null): void {
    const err = (): LinkError => new LinkError(code ?? 'EIO', message !== null && code !== null && message.startsWith(`${code}: `) ? message.slice(code.length + 2) : (message ?? 'link failure'));
    switch (kind) {
      case MESSAGE:
        this.emit('message', data as Buffer);
        return;
      case READ:
      case WRITTEN: {
        const p = this.#pending.get(id);
        this.#pending.delete(id);
        p?.resolve(data);
        return;
      }
      case RMA_FAILED: {
        const p = this.#pending.get(id);
        this.#pending.delete(id);
        p?.reject(err());
        return;
      }
      case SEND_FAILED:
      case RECEIVE_FAILED:
        this.emit('error', err());
        return;
      case CONNECTED:
        this.emit('connected');
        return;
      case SHUTDOWN:
        this.#goDown(new LinkError('ENOTCONN', 'the peer shut the link down'), null);
        return;
      case ERROR: {
        const e = err();
        this.#goDown(e, e);
        return;
      }
    }
  }

  #goDown(reason: LinkError, reported: LinkError | null): void {
    this.#down = reason;
    this.#rejectPending(reason);
    this.emit('down', reported);
  }

  #rejectPending(e: LinkError): void {
    const pending = [...this.#pending.values()];
    this.#pending.clear();
    for (const p of pending) p.reject(e);
  }

  get state(): LinkState {
    return this.#native.state;
  }

  /** The provider serving the link ('tcp'). */
  get provider(): string {
    return this.#native.provider;
  }

  /** Whether the provider grants RMA (read, write, createWindow). */
  get rma(): boolean {
    return this.#native.rma;
  }

  /** The local HOST:PORT. */
  get address(): string {
    return native(() => this.#native.localAddress);
  }

  /** Messages and RMA operations waiting to be handed to libfabric. */
  get queued(): number {
    return this.#native.queued;
  }

  /** Resolves once connected; rejects with the reason the link went down
   * first (ECONNREFUSED when nobody listens), or on `signal`. */
  ready(options: { signal?: AbortSignal } = {}): Promise<void> {
    const signal = checkSignal(options.signal);
    const state = this.state;
    if (state === 'connected') return Promise.resolve();
    if (state !== 'connecting') return Promise.reject(this.#down ?? new LinkError('EBADF', 'the link is closed'));
    let undo = (): void => undefined;
    const p = new Promise<void>((resolve, reject) => {
      const up = (): void => {
        undo();
        resolve();
      };
      const down = (e: LinkError | null): void => {
        undo();
        reject(e ?? this.#down ?? new LinkError('ENOTCONN', 'the link went down'));
      };
      this.on('connected', up);
      this.on('down', down);
      undo = () => {
        this.off('connected', up);
        this.off('down', down);
      };
    });
    return raceAbort(p, signal, undo);
  }

  /** Sends a copy of `data` (at most maxMessage bytes); messages arrive in order. */
  send(data: Uint8Array): void {
    native(() => this.#native.send(data));
  }

  /** Reads `len` bytes at `offset` of the peer's window (RMA). */
  read(window: RemoteWindowInfo, offset: number, len: number): Promise<Buffer> {
    return this.#rma(() => this.#native.read(window, offset, len)) as Promise<Buffer>;
  }

  /** Writes `data` at `offset` of the peer's window (RMA). */
  async write(window: RemoteWindowInfo, offset: number, data: Uint8Array): Promise<void> {
    await this.#rma(() => this.#native.write(window, offset, data));
  }

  #rma(start: () => number): Promise<Buffer | null> {
    let id: number;
    try {
      id = start();
    } catch (e) {
      return Promise.reject(linkError(e));
    }
    return new Promise((resolve, reject) => this.#pending.set(id, { resolve, reject }));
  }

  /** A zeroed window of `size` bytes in this link's domain that the peer
   * may read and write; send it `window.remote`. Close it when done. */
  createWindow(size: number): OfiWindow {
    return native(() => this.#native.createWindow(size));
  }

  /** A window over the first `size` bytes of the open file `fd` (mapped
   * shared on its own: what the peer writes lands in the file; it outlives
   * `fd`), registered with `key` when given — a provider that picks its
   * own keys (FI_MR_PROV_KEY) may not take it: see `window.remote.key`. */
  createFileWindow(fd: number, size: number, key?: bigint): OfiWindow {
    return native(() => this.#native.createFileWindow(fd, size, key));
  }

  /** Whether the link keeps the process alive (default true). */
  ref(keep = true): this {
    this.#native.ref(keep);
    return this;
  }

  /** Shuts the link down (the peer sees 'down') and closes it; pending
   * reads and writes are rejected with EBADF. Idempotent. */
  close(): void {
    this.#native.close();
    this.#rejectPending(new LinkError('EBADF', 'the link is closed'));
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

export interface LinkListenerEvents {
  /** A new link, watched and connecting ('connected' follows). */
  link: [link: Link];
  error: [error: LinkError];
}

/** Listens on HOST:PORT for links. */
export class LinkListener extends EventEmitter<LinkListenerEvents> {
  readonly #native: OfiListener;

  /** Listens on `addr` (HOST:PORT; port 0 picks a free one, see `address`). */
  static listen(addr: string, options?: LinkOptions): LinkListener {
    return new LinkListener(native(() => OfiListener.listen(addr, nativeOptions(options))));
  }

  private constructor(l: OfiListener) {
    super();
    this.#native = l;
    l.watch(() => this.#accept());
  }

  #accept(): void {
    for (;;) {
      let link: OfiLink | null;
      try {
        link = this.#native.accept();
      } catch (e) {
        // A request that could not be served (it was refused): the listener
        // goes on, and the fd brings the loop back for any other.
        this.emit('error', linkError(e));
        return;
      }
      if (link === null) return;
      this.emit('link', new Link(link));
    }
  }

  /** The bound HOST:PORT. */
  get address(): string {
    return native(() => this.#native.address);
  }

  /** The bound port. */
  get port(): number {
    return Number(this.address.slice(this.address.lastIndexOf(':') + 1));
  }

  ref(keep = true): this {
    this.#native.ref(keep);
    return this;
  }

  /** Stops listening; accepted links stay open. Idempotent. */
  close(): void {
    this.#native.close();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
