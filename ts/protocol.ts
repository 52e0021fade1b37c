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

  /** The next ID by policy, or null when none is free. `usable` excludes
   * more IDs than those in use (see Membership: IDs QEMU must not be told
   * about again). */
  allocate(usable?: (id: number) => boolean): number | null {
    const span = this.max - this.min + 1;
    if (this.used.size >= span) return null;
    const ok = (c: number) => !this.used.has(c) && (usable === undefined || usable(c));
    let id: number | null = null;
    if (this.policy === 'lowest') {
      for (let c = this.min; c <= this.max && id === null; c++) if (ok(c)) id = c;
    } else if (this.policy === 'monotonic') {
      for (let i = 1; i <= span && id === null; i++) {
        const c = this.min + ((this.last - this.min + i) % span + span) % span;
        if (ok(c)) id = c;
      }
    } else {
      let free = span - this.used.size;
      if (usable !== undefined) {
        free = 0;
        for (let c = this.min; c <= this.max; c++) if (ok(c)) free++;
      }
      if (free === 0) return null;
      let k = Math.min(free - 1, Math.floor(this.random() * free));
      for (let c = this.min; c <= this.max && id === null; c++) {
        if (ok(c) && k-- === 0) id = c;
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

// ---- membership -------------------------------------------------------------

/** Why QEMU must not be told about a reused ID: QEMU (7.2, Debian 12's, at
 * least) frees a departed peer's eventfd array on the departure message
 * without resetting its pointer, and writes into the freed array when a
 * peer with the same ID is announced again ("double free or corruption"). */
export const QEMU_REUSE_BUG =
  'QEMU (7.2 at least) frees a departed peer\'s eventfd array without resetting it and corrupts its heap when that ID is announced again';

export interface MembershipConfig {
  vectors: number;
  idPolicy?: IdPolicy;
  /** IDs peers may get. */
  min?: number;
  max?: number;
  maxPeers?: number;
  /** Keep a departed peer's eventfds for the next peer given its ID and
   * tell nobody it left. */
  recycle?: boolean;
  /** Peers that are not connections (the fabric switch): announced to
   * every newcomer, never leaving. */
  advertised?: readonly number[];
  random?: () => number;
}

export type JoinDecision =
  | {
      kind: 'admit';
      id: number;
      /** The ID's eventfds are its predecessor's (recycle mode). */
      recycled: boolean;
      sends: Send[];
      /** The live peers this join announces the newcomer to. */
      announced: number[];
    }
  | { kind: 'refuse'; reason: string };

/** Who is connected and who holds whose eventfds, as pure state: the
 * server asks it for every join and departure and executes the answer.
 *
 * Rules it keeps (each tested in protocol.test.ts):
 * - every live peer holds every other live peer's eventfds (and the
 *   advertised ones), whatever the order of joins and recycled IDs;
 * - a peer is told about a departure only if it held the departed peer's
 *   eventfds, and a recycled departure is told to nobody;
 * - an ID whose departure a still-connected peer was told is not given out
 *   again while that peer is connected (QEMU_REUSE_BUG); when that leaves
 *   no ID, the newcomer is refused with a reason that says so. */
export class Membership {
  private readonly pool: IdPool;
  private readonly vectors: number;
  private readonly maxPeers: number;
  private readonly recycle: boolean;
  private readonly advertised: readonly number[];
  /** Live peers and the IDs whose eventfds each holds. */
  private readonly holds = new Map<number, Set<number>>();
  /** IDs announced as departed, and the live peers that were told. */
  private readonly witnesses = new Map<number, Set<number>>();
  /** IDs whose departed peer's eventfds are kept (recycle mode). */
  private readonly kept = new Set<number>();

  constructor(config: MembershipConfig) {
    this.vectors = config.vectors;
    this.pool = new IdPool(config.idPolicy ?? 'lowest', config.min ?? 0, config.max ?? MAX_PEER_ID, config.random);
    this.maxPeers = config.maxPeers ?? Infinity;
    this.recycle = config.recycle ?? false;
    this.advertised = config.advertised ?? [];
  }

  /** Connected IDs, ascending. */
  get live(): number[] {
    return [...this.holds.keys()].sort((a, b) => a - b);
  }

  get size(): number {
    return this.holds.size;
  }

  /** IDs the peer `id` holds eventfds of (itself included); empty when it
   * is not connected. */
  heldBy(id: number): number[] {
    return [...(this.holds.get(id) ?? [])].sort((a, b) => a - b);
  }

  /** IDs that may not be given out now because a live peer was told they
   * departed. */
  get blocked(): number[] {
    return [...this.witnesses.keys()].filter((id) => !this.holds.has(id)).sort((a, b) => a - b);
  }

  /** Whether `id`'s departed eventfds are kept for its next peer. */
  isKept(id: number): boolean {
    return this.kept.has(id);
  }

  /** A newcomer: its ID and everything the join costs, or a refusal. */
  join(): JoinDecision {
    if (this.holds.size >= this.maxPeers) {
      const n = this.holds.size;
      return { kind: 'refuse', reason: `${n} peer${n === 1 ? '' : 's'} connected, the limit is ${this.maxPeers}` };
    }
    const id = this.pool.allocate((c) => !this.witnesses.has(c));
    if (id === null) {
      const blocked = this.blocked.length;
      if (blocked === 0) return { kind: 'refuse', reason: `every peer ID (${this.pool.min}..${this.pool.max}) is in use` };
      return {
        kind: 'refuse',
        reason:
          `the ${blocked} free ID${blocked === 1 ? ' was' : 's were'} announced as departed to peers still connected, ` +
          `and ${QEMU_REUSE_BUG}; use recycle mode (the fabric default), --id-policy monotonic, or more IDs`,
      };
    }
    const others = this.live;
    const recycled = this.kept.delete(id);
    const sends = joinMessages({ newcomer: id, others, vectors: this.vectors, advertised: this.advertised, announce: false });
    const announced: number[] = [];
    for (const other of others) {
      const held = this.holds.get(other)!;
      if (held.has(id)) continue; // a recycled ID it still holds
      for (let vector = 0; vector < this.vectors; vector++) sends.push({ to: other, value: id, fd: { kind: 'vector', peer: id, vector } });
      held.add(id);
      announced.push(other);
    }
    this.holds.set(id, new Set([id, ...others, ...this.advertised]));
    return { kind: 'admit', id, recycled, sends, announced };
  }

  /** Undoes an admission none of whose messages were sent (the server
   * could not create the newcomer's eventfds). */
  abort(decision: Extract<JoinDecision, { kind: 'admit' }>): void {
    const { id } = decision;
    if (!this.holds.delete(id)) return;
    for (const other of decision.announced) this.holds.get(other)?.delete(id);
    this.pool.release(id);
    if (decision.recycled) this.kept.add(id);
  }

  /** A departure: the messages it costs (none when recycled). */
  leave(id: number): Send[] {
    if (!this.holds.delete(id)) return [];
    this.pool.release(id);
    // A departed witness can no longer be hurt by what it was told.
    for (const [gone, told] of this.witnesses) {
      told.delete(id);
      if (told.size === 0) this.witnesses.delete(gone);
    }
    if (this.recycle) {
      this.kept.add(id);
      return [];
    }
    const sends: Send[] = [];
    const told = new Set<number>();
    for (const other of this.live) {
      const held = this.holds.get(other)!;
      if (!held.delete(id)) continue;
      sends.push({ to: other, value: id, fd: null });
      told.add(other);
    }
    if (told.size > 0) this.witnesses.set(id, told);
    return sends;
  }

  /** Forgets every kept ID (their eventfds are closed). */
  clearKept(): void {
    this.kept.clear();
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

/** Where a client is in the server's welcome, by the protocol alone (no
 * timer): `done` once its own group is complete. The group's size is
 * `expected` when the caller knows it, else that of the other peers' groups
 * (the server sends them first, and every peer has the same vectors; in a
 * fabric the switch is always one of them). A lone peer of a server whose
 * vector count nobody said has no way to know it: its welcome is done at
 * its first own vector, and later ones join its group as they come. */
export function welcomeProgress<F>(state: ClientState<F>, expected: number | null = null): { done: boolean; stage: string } {
  switch (state.phase) {
    case 'version':
      return { done: false, stage: 'before the protocol version' };
    case 'id':
      return { done: false, stage: 'after the protocol version, before the peer ID' };
    case 'shm':
      return { done: false, stage: `after the peer ID (${state.id}), before the shared memory` };
    case 'failed':
      return { done: false, stage: 'after a protocol error' };
    case 'running': {
      let size = expected;
      if (size === null) for (const fds of state.peers.values()) size = Math.max(size ?? 0, fds.length);
      const own = state.own.length;
      const stage = `during the peers' eventfds (${state.peers.size} other peer${state.peers.size === 1 ? '' : 's'}, ${own}${size === null ? '' : ` of ${size}`} own vector${(size ?? own) === 1 ? '' : 's'})`;
      return { done: size === null ? own >= 1 : own >= size, stage };
    }
  }
}
