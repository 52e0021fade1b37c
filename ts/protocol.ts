// The ivshmem server protocol, version 0, without I/O (sans-I/O): what a
// server owes a newcomer and the other peers, and a client-side fold of
// incoming messages into a peer table. Pure functions over plain values;
// the server and client layers execute the results on real sockets.

export const PROTOCOL_VERSION = 0;
/** The value that carries the shared-memory fd. */
export const SHM_MESSAGE = -1;
/** Largest peer ID QEMU accepts. */
export const MAX_PEER_ID = 65535;

/** Which fd a message carries, named by meaning rather than by number. */
export type FdRef = { kind: 'shm' } | { kind: 'vector'; peer: number; vector: number };

/** One message to send: `value` to peer `to`, with an fd or none. */
export interface Send {
  to: number;
  value: number;
  fd: FdRef | null;
}

function group(to: number, peer: number, vectors: number): Send[] {
  const out: Send[] = [];
  for (let vector = 0; vector < vectors; vector++) out.push({ to, value: peer, fd: { kind: 'vector', peer, vector } });
  return out;
}

export interface Join {
  newcomer: number;
  /** IDs of the peers already connected, in the order to announce them. */
  others: readonly number[];
  vectors: number;
  /** Peers announced to the newcomer only, after the others and just before
   * its own group (the fabric switch advertises itself this way). */
  advertised?: readonly number[];
  /** False when the others already hold the newcomer's eventfds: a recycled
   * ID reuses its predecessor's, so announcing them again would give QEMU
   * surplus vectors. */
  announce?: boolean;
}

/** Everything a join costs, in send order: the newcomer's welcome (version,
 * its ID, the shm fd, every other peer's eventfds, then its own), followed
 * by the newcomer's eventfds for each of the others. */
export function joinMessages({ newcomer, others, vectors, advertised = [], announce = true }: Join): Send[] {
  const out: Send[] = [
    { to: newcomer, value: PROTOCOL_VERSION, fd: null },
    { to: newcomer, value: newcomer, fd: null },
    { to: newcomer, value: SHM_MESSAGE, fd: { kind: 'shm' } },
  ];
  for (const other of others) out.push(...group(newcomer, other, vectors));
  for (const extra of advertised) out.push(...group(newcomer, extra, vectors));
  out.push(...group(newcomer, newcomer, vectors));
  if (announce) for (const other of others) out.push(...group(other, newcomer, vectors));
  return out;
}

/** A departed peer is announced to every other peer as its ID without an fd. */
export function leaveMessages(leaver: number, others: readonly number[]): Send[] {
  return others.filter((o) => o !== leaver).map((to) => ({ to, value: leaver, fd: null }));
}

/** Refusing a client: a version it cannot accept (then the server closes). */
export function refusalMessages(to: number): Send[] {
  return [{ to, value: -1, fd: null }];
}

export type IdPolicy = 'lowest' | 'monotonic' | 'random';
export const ID_POLICIES: readonly IdPolicy[] = ['lowest', 'monotonic', 'random'];

/** Hands out peer IDs in [min, max] by policy: the lowest free ID, the next
 * one after the last given (wrapping, skipping IDs in use), or a random free
 * one. Returns null when every ID is taken. */
export class IdPool {
  private readonly used = new Set<number>();
  private last: number;

  constructor(
    readonly policy: IdPolicy = 'lowest',
    readonly min = 0,
    readonly max = MAX_PEER_ID,
    private readonly random: () => number = Math.random,
  ) {
    this.last = min - 1;
  }

  get size(): number {
    return this.used.size;
  }

  has(id: number): boolean {
    return this.used.has(id);
  }

  allocate(): number | null {
    const span = this.max - this.min + 1;
    if (this.used.size >= span) return null;
    let id: number | null = null;
    if (this.policy === 'lowest') {
      for (let c = this.min; c <= this.max && id === null; c++) if (!this.used.has(c)) id = c;
    } else if (this.policy === 'monotonic') {
      for (let i = 1; i <= span && id === null; i++) {
        const c = this.min + ((this.last - this.min + i) % span + span) % span;
        if (!this.used.has(c)) id = c;
      }
    } else {
      const free = span - this.used.size;
      let k = Math.min(free - 1, Math.floor(this.random() * free));
      for (let c = this.min; c <= this.max && id === null; c++) {
        if (!this.used.has(c) && k-- === 0) id = c;
      }
    }
    if (id === null) return null;
    this.used.add(id);
    this.last = id;
    return id;
  }

  release(id: number): void {
    this.used.delete(id);
  }
}

// ---- client side ----------------------------------------------------------

/** One received message; `fd` is an opaque handle owned by the caller. */
export interface Incoming<F> {
  value: number;
  fd: F | null;
}

export type ClientEvent<F> =
  | { type: 'welcome'; id: number; shm: F }
  | { type: 'own-vector'; vector: number; fd: F }
  | { type: 'peer-vector'; peer: number; vector: number; fd: F }
  | { type: 'peer-left'; peer: number; fds: F[] }
  /** An fd the client has no use for (to be closed). */
  | { type: 'discard'; fd: F }
  | { type: 'refused'; version: number }
  | { type: 'error'; message: string };

export interface ClientState<F> {
  phase: 'version' | 'id' | 'shm' | 'running' | 'failed';
  id: number;
  own: F[];
  peers: Map<number, F[]>;
}

export function initialClientState<F>(): ClientState<F> {
  return { phase: 'version', id: -1, own: [], peers: new Map() };
}

/** Folds one message into the client state (mutated in place) and returns
 * what happened. After 'refused' or 'error' the state is failed and every
 * further message only discards its fd. */
export function receive<F>(state: ClientState<F>, msg: Incoming<F>): ClientEvent<F>[] {
  const fail = (message: string): ClientEvent<F>[] => {
    state.phase = 'failed';
    return msg.fd === null ? [{ type: 'error', message }] : [{ type: 'error', message }, { type: 'discard', fd: msg.fd }];
  };
  switch (state.phase) {
    case 'failed':
      return msg.fd === null ? [] : [{ type: 'discard', fd: msg.fd }];
    case 'version':
      if (msg.value !== PROTOCOL_VERSION) {
        state.phase = 'failed';
        const ev: ClientEvent<F>[] = [{ type: 'refused', version: msg.value }];
        return msg.fd === null ? ev : [...ev, { type: 'discard', fd: msg.fd }];
      }
      if (msg.fd !== null) return fail('the version message carried an fd');
      state.phase = 'id';
      return [];
    case 'id':
      if (msg.fd !== null) return fail('the ID message carried an fd');
      if (!Number.isInteger(msg.value) || msg.value < 0 || msg.value > MAX_PEER_ID) {
        return fail(`the server gave an invalid peer ID ${msg.value}`);
      }
      state.id = msg.value;
      state.phase = 'shm';
      return [];
    case 'shm':
      if (msg.value !== SHM_MESSAGE || msg.fd === null) {
        return fail(`expected the shared-memory fd (-1 with an fd), got ${msg.value}${msg.fd === null ? ' without an fd' : ''}`);
      }
      state.phase = 'running';
      return [{ type: 'welcome', id: state.id, shm: msg.fd }];
    case 'running': {
      const peer = msg.value;
      if (!Number.isInteger(peer) || peer < 0 || peer > MAX_PEER_ID) {
        return fail(`invalid message ${peer} from the server`);
      }
      if (msg.fd === null) {
        if (peer === state.id) return fail('the server announced our own departure');
        const fds = state.peers.get(peer);
        if (!fds) return [];
        state.peers.delete(peer);
        return [{ type: 'peer-left', peer, fds }];
      }
      if (peer === state.id) {
        state.own.push(msg.fd);
        return [{ type: 'own-vector', vector: state.own.length - 1, fd: msg.fd }];
      }
      let fds = state.peers.get(peer);
      if (!fds) state.peers.set(peer, (fds = []));
      fds.push(msg.fd);
      return [{ type: 'peer-vector', peer, vector: fds.length - 1, fd: msg.fd }];
    }
  }
}
