// The ivshmem server: listens on a UNIX socket, gives each peer an ID and
// its eventfds, and tells everyone about joins and departures. What to send
// is decided by `protocol` (pure); this module only executes it with the
// native binding and keeps the peer table.
// (About 450 lines: start() turns every way setting up can fail into an
// error a person can act on, and that belongs beside what it sets up.)
import '../dispose.js';
import { EventEmitter } from 'node:events';
import * as fs from 'node:fs';
import * as path from 'node:path';

import { FamezError } from '../errors.js';
import { silentLogger, type Logger } from '../log.js';
import { EventFd, SharedMemory, UnixListener, UnixStream, closeFd, errorCode, errorText, socketState } from '../native.js';
import { Membership, refusalMessages, type FdRef, type IdPolicy, type Send } from '../protocol.js';
import { MAX_SOCKET_PATH, type ShmKind } from './options.js';
import { Backlog } from './backlog.js';
import { describeFdLimit, identity, openReserve, unlinkIfOurs, type FileIdentity } from './files.js';

export interface ServerConfig {
  socket: string;
  shm: { kind: ShmKind; name: string };
  size: number;
  vectors: number;
  maxPeers?: number;
  idPolicy?: IdPolicy;
  /** Leave the shared memory in place when the server closes. */
  keepShm?: boolean;
  /** Permission bits for the shared memory and the socket (default 0600:
   * the socket hands out the shared memory, so it gets the same mode). */
  mode?: number | null;
  gid?: number | null;
  /** Messages a peer may leave unread beyond its socket buffer and its
   * welcome; past that it is disconnected as too slow once it has taken
   * nothing for stallMs (a peer that is reading is never dropped, up to
   * 64 times this bound). */
  maxQueued?: number;
  /** How long a peer over maxQueued may take nothing (default 5000 ms). */
  stallMs?: number;
  /** Where events go (default: nowhere). Connects, disconnects and
   * refusals are info/warn; every message sent is debug. */
  logger?: Logger;
  /** The IDs peers may get (default 0..65535). */
  ids?: { min: number; max: number };
  /** A peer that is not a connection (the fabric switch): advertised to
   * every newcomer just before its own group, with these eventfds. */
  member?: { id: number; vectors: EventFd[] };
  /** Keep a departed peer's eventfds for the next peer given its ID and
   * tell nobody it left, so the surviving QEMUs keep working. */
  recycle?: boolean;
}

export type ServerErrorCode =
  | 'EADDRINUSE'
  | 'ENOENT'
  | 'ENOTSOCK'
  | 'ESHM'
  | 'ELISTEN'
  | 'ENAMETOOLONG'
  | 'ENOMEM'
  | 'EGROUP'
  | 'EUNKNOWN';

/** Why a peer whose socket broke is dropped: "send failed: Broken pipe"
 * (the binding's "EPIPE: send: Broken pipe" in words). */
function sendFailure(e: unknown): string {
  return `send failed: ${errorText(e).replace(/^send: /, '')}`;
}

export class ServerError extends FamezError<ServerErrorCode> {
  override name = 'ServerError';

  /** A command-line error (a path, size or group that cannot work), as
   * opposed to something found in use. */
  get usage(): boolean {
    return this.code === 'ENOENT' || this.code === 'ENAMETOOLONG' || this.code === 'ENOMEM' || this.code === 'EGROUP';
  }
}


/** A binding error as [its code, its message without the code]. */
function nativeCode(e: unknown): [string, string] {
  return [errorCode(e), errorText(e)];
}

export interface PeerEvent {
  id: number;
  peers: number;
}

export interface ServerEvents {
  connect: [PeerEvent];
  disconnect: [PeerEvent & { reason: string }];
  refuse: [{ reason: string }];
  close: [];
}

interface Peer {
  id: number;
  stream: UnixStream;
  vectors: EventFd[];
  /** What its socket had no room for yet (backlog.ts). */
  backlog: Backlog;
  /** When it connected (ms since the epoch). */
  since: number;
  /** Its eventfds came from a predecessor with its ID (recycle). */
  recycled: boolean;
}

/** What the server knows of a connected peer. */
export interface PeerInfo {
  id: number;
  /** When it connected (ms since the epoch). */
  since: number;
  vectors: number;
  recycled: boolean;
  /** Messages waiting for room in its socket. */
  queued: number;
}

export const DEFAULT_MAX_QUEUED = 4096;


/** One message of the protocol in words, for the debug log: `step` is its
 * place among the fd-less messages of a welcome (0 the version, 1 the
 * ID), -1 elsewhere. */
function describeSend(s: Send, step: number): string {
  if (s.fd?.kind === 'shm') return 'the shared memory (fd)';
  if (s.fd?.kind === 'vector') return s.fd.peer === s.to ? `its own vector ${s.fd.vector} (eventfd)` : `peer ${s.fd.peer}'s vector ${s.fd.vector} (eventfd)`;
  if (step === 0) return `protocol version ${s.value}`;
  if (step === 1) return `its ID ${s.value}`;
  if (s.value === -1) return 'a refusal (-1)';
  return `that peer ${s.value} left`;
}

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}

export class Server extends EventEmitter<ServerEvents> {
  private readonly peers = new Map<number, Peer>();
  /** Eventfds of departed peers, by ID, kept for their successors (recycle). */
  private readonly recycled = new Map<number, EventFd[]>();
  /** Who holds whose eventfds; which ID a newcomer gets (pure). */
  private readonly members: Membership;
  private readonly log: Logger;
  /** What the fabric knows of a peer (its nodename), added to its events. */
  describePeer: ((id: number) => { nodename?: string }) | null = null;
  private closed = false;
  /** The socket file this server bound (removed at close only if the path still is it). */
  private socketId: FileIdentity | null = null;
  /** An fd held in reserve (/dev/null): given up for a moment when the
   * process is out of fds, so a pending peer can still be refused. */
  private reserveFd: number | null = openReserve();
  /** Accepting is paused until this timer fires. */
  private acceptRetry: NodeJS.Timeout | null = null;

  private constructor(
    readonly config: Required<Omit<ServerConfig, 'logger' | 'mode' | 'gid' | 'member'>> & Pick<ServerConfig, 'mode' | 'gid' | 'member'>,
    private readonly listener: UnixListener,
    private readonly shm: SharedMemory,
    log: Logger,
  ) {
    super();
    this.log = log;
    this.members = new Membership({
      vectors: config.vectors,
      idPolicy: config.idPolicy,
      min: config.ids.min,
      max: config.ids.max,
      maxPeers: config.maxPeers,
      recycle: config.recycle,
      advertised: config.member ? [config.member.id] : [],
    });
    listener.watch(() => this.acceptAll());
  }

  /** Creates the shared memory, then binds the socket. Throws ServerError
   * (leaving nothing behind) when either cannot be done. */
  static start(config: ServerConfig): Server {
    const log = (config.logger ?? silentLogger).child({ component: 'server' });
    const full = {
      maxPeers: 65536,
      idPolicy: 'lowest' as IdPolicy,
      keepShm: false,
      maxQueued: DEFAULT_MAX_QUEUED,
      stallMs: 5000,
      ids: { min: 0, max: 65535 },
      recycle: false,
      // An option given as undefined means "the default", not "none".
      ...(Object.fromEntries(Object.entries(config).filter(([, v]) => v !== undefined)) as ServerConfig),
    };
    const socketPath = path.resolve(config.socket);
    const bytes = Buffer.byteLength(socketPath);
    if (bytes > MAX_SOCKET_PATH) {
      throw new ServerError('ENAMETOOLONG', `socket path ${socketPath} has ${bytes} bytes, a UNIX socket path at most ${MAX_SOCKET_PATH}; choose a shorter one with -S`);
    }
    const dir = path.dirname(socketPath);
    if (!fs.existsSync(dir)) throw new ServerError('ENOENT', `socket directory ${dir} does not exist`);
    // Decided by connecting: a socket that takes a connection is live,
    // whatever its path looks like in the kernel's tables.
    const state = socketState(socketPath);
    if (state.state === 'live') {
      const who = state.pid === undefined ? 'a running server' : `a running server (pid ${state.pid})`;
      throw new ServerError('EADDRINUSE', `socket ${socketPath} is held by ${who}; stop it or choose another path with -S`);
    }
    if (state.state === 'not-a-socket') {
      throw new ServerError('ENOTSOCK', `${socketPath} exists and is not a socket; remove it or choose another path with -S`);
    }
    if (state.state === 'unknown') {
      throw new ServerError(
        'EUNKNOWN',
        `cannot tell whether socket ${socketPath} is in use: connecting to it failed (${state.reason}); famez replaces only a socket that refuses connections: remove it or choose another path with -S`,
      );
    }
    if (config.shm.kind === 'file' && !fs.existsSync(path.dirname(config.shm.name))) {
      throw new ServerError('ENOENT', `shared-memory directory ${path.dirname(config.shm.name)} does not exist`);
    }
    const mode = config.mode ?? 0o600;
    const what = config.shm.kind === 'posix' ? `/dev/shm/${config.shm.name}` : config.shm.name;
    let shm: SharedMemory;
    try {
      shm = SharedMemory.create({ kind: config.shm.kind, name: config.shm.name, size: config.size, mode, gid: config.gid ?? undefined });
    } catch (e) {
      const [code, text] = nativeCode(e);
      // A refusal is a sentence naming the object (and who holds it).
      if (code === 'EADDRINUSE' || code === 'EEXIST' || code === 'EACCES') throw new ServerError('ESHM', text);
      if (code === 'ENOMEM') throw new ServerError('ENOMEM', `cannot create ${config.size} bytes of shared memory ${what}: ${text}; choose a smaller -l`);
      if (code === 'EPERM' && config.gid != null) throw new ServerError('EGROUP', `cannot give shared memory ${what} group ${config.gid}: ${text}`);
      throw new ServerError('ESHM', `cannot create shared memory ${config.shm.name}: ${(e as Error).message}`);
    }
    const dropShm = () => {
      try {
        shm.unlink();
      } catch {
        // already gone
      }
      shm.close();
    };
    if (shm.replacedStale) log.warn({ event: 'replaced-stale', shm: what }, `replaced stale shared memory ${what} (no process held it)`);
    try {
      shm.probeMap();
    } catch (e) {
      dropShm();
      const [code] = nativeCode(e);
      if (code === 'ENOMEM') {
        throw new ServerError('ENOMEM', `cannot map ${config.size} bytes of shared memory (mmap: ENOMEM): this machine or its limits (ulimit -v) do not allow that much; choose a smaller -l`);
      }
      throw new ServerError('ESHM', `cannot map shared memory ${what}: ${(e as Error).message}`);
    }
    let listener: UnixListener | undefined;
    let socketId: FileIdentity | null = null;
    try {
      if (state.state === 'stale') {
        fs.rmSync(socketPath, { force: true });
        log.warn({ event: 'replaced-stale', socket: socketPath }, `replaced stale socket ${socketPath}`);
      }
      // Created with the shared memory's mode (the umask is set to its
      // complement for the bind): nothing is changed through the path.
      listener = UnixListener.listen(socketPath, mode);
      socketId = identity(socketPath);
      // lchown: a symlink planted at the path is not followed.
      if (config.gid != null) fs.lchownSync(socketPath, -1, config.gid);
    } catch (e) {
      listener?.close();
      unlinkIfOurs(socketPath, socketId);
      dropShm();
      const err = e as NodeJS.ErrnoException;
      if (err.code === 'EPERM' && config.gid != null && listener) {
        throw new ServerError('EGROUP', `cannot give socket ${socketPath} group ${config.gid}: ${err.message}`);
      }
      throw new ServerError('ELISTEN', `cannot listen on ${socketPath}: ${err.message}`);
    }
    delete full.logger;
    const server = new Server({ ...full, socket: socketPath }, listener, shm, log);
    server.socketId = socketId;
    return server;
  }

  /** IDs of the connected peers, ascending. */
  get peerIds(): number[] {
    return [...this.peers.keys()].sort((a, b) => a - b);
  }

  /** Rings connected peer `id` on `vector` (the fabric switch's doorbell);
   * false when no such peer or vector. */
  ring(id: number, vector: number): boolean {
    const bell = this.peers.get(id)?.vectors[vector];
    if (!bell) return false;
    bell.signal(1);
    return true;
  }

  /** Disconnects peer `id` (an operator's decision, `reason` logged);
   * false when it is not connected. */
  kick(id: number, reason: string): boolean {
    if (!this.peers.has(id)) return false;
    this.drop(id, reason);
    return true;
  }

  /** The pid of the process on connected peer `id`'s socket (SO_PEERCRED); null when unknown. */
  peerPid(id: number): number | null {
    return this.peers.get(id)?.stream.peerPid ?? null;
  }

  /** What the server knows of connected peer `id`; null when none. */
  peerInfo(id: number): PeerInfo | null {
    const p = this.peers.get(id);
    if (!p) return null;
    return { id, since: p.since, vectors: p.vectors.length, recycled: p.recycled, queued: p.backlog.waiting };
  }

  /** The shared object (for the fabric layer's mailboxes). */
  get sharedMemory(): SharedMemory {
    return this.shm;
  }

  get socketPath(): string {
    return this.config.socket;
  }

  private acceptAll(): void {
    for (;;) {
      let stream: UnixStream | null;
      try {
        stream = this.listener.accept();
      } catch (e) {
        if (this.acceptFailed(e as Error)) continue;
        return;
      }
      if (!stream) return;
      this.admit(stream);
    }
  }

  /** accept() failed. Out of fds (EMFILE, ENFILE), the reserve fd is let go
   * for a moment so the pending peer can be accepted and refused (version
   * -1, then close) rather than left hanging: true, go on accepting.
   * Otherwise, or with no reserve to let go, accepting pauses (readiness is
   * level-triggered: no spinning) and resumes on a timer that keeps the
   * process alive, so the server never exits on its own: false. */
  private acceptFailed(e: Error): boolean {
    const code = errorCode(e);
    if ((code === 'EMFILE' || code === 'ENFILE') && this.reserveFd !== null) {
      fs.closeSync(this.reserveFd);
      this.reserveFd = null;
      let stream: UnixStream | null = null;
      try {
        stream = this.listener.accept();
      } catch {
        // taken by something else meanwhile: pause below
      }
      if (stream) this.refuse(stream, `out of file descriptors (${describeFdLimit()}); raise the limit (ulimit -n) or serve fewer peers`);
      this.reserveFd = openReserve();
      if (stream) return true;
    }
    this.log.error({ event: 'accept-failed', reason: e.message }, `cannot accept a peer: ${e.message}; retrying in 1 s`);
    this.listener.unwatch();
    this.acceptRetry ??= setTimeout(() => {
      this.acceptRetry = null;
      if (this.closed) return;
      this.reserveFd ??= openReserve();
      this.listener.watch(() => this.acceptAll());
    }, 1000);
    return false;
  }

  private admit(stream: UnixStream): void {
    const decision = this.members.join();
    if (decision.kind === 'refuse') {
      this.refuse(stream, decision.reason);
      return;
    }
    const { id, sends } = decision;
    const inherited = this.recycled.get(id);
    this.recycled.delete(id);
    const vectors: EventFd[] = inherited ? [...inherited] : [];
    try {
      while (vectors.length < this.config.vectors) vectors.push(new EventFd());
    } catch (e) {
      for (const v of vectors.slice(inherited?.length ?? 0)) v.close();
      if (inherited) this.recycled.set(id, inherited);
      // Nobody was sent anything yet; the ID goes back as if never given.
      this.members.abort(decision);
      this.refuse(stream, `cannot create its eventfds: ${(e as Error).message}`);
      return;
    }
    const peer: Peer = {
      id,
      stream,
      vectors,
      backlog: new Backlog(Date.now(), sends.filter((s) => s.to === id).length),
      since: Date.now(),
      recycled: inherited !== undefined,
    };
    this.peers.set(id, peer);
    stream.onDrain(() => this.pump(peer));
    // One-way: any byte from the peer, even part of a message, ends it at once.
    stream.watch((value, fd, reason) => {
      if (fd >= 0) closeFd(fd);
      this.drop(id, value === null ? (reason === 'closed' ? 'disconnected' : reason ?? 'disconnected') : 'sent data; ivshmem peers never write to the server');
    }, true);
    this.log.info({ event: 'connect', peer: id, peers: this.peers.size, recycled: inherited !== undefined }, `peer ${id} connected${inherited ? ' (recycled)' : ''} (${plural(this.peers.size, 'peer')})`);
    this.deliver(sends, id);
    if (this.peers.has(id)) this.emit('connect', { id, peers: this.peers.size });
  }

  private refuse(stream: UnixStream, why: string): void {
    const reason = `refused a peer: ${why}`;
    try {
      for (const m of refusalMessages(-1)) stream.send(m.value);
    } catch {
      // it left already
    }
    stream.close();
    this.log.warn({ event: 'refuse', reason: why }, reason);
    this.emit('refuse', { reason });
  }

  private fdOf(ref: FdRef): number {
    if (ref.kind === 'shm') return this.shm.fd;
    const member = this.config.member;
    const vectors = member && ref.peer === member.id ? member.vectors : this.peers.get(ref.peer)?.vectors;
    return vectors?.[ref.vector]?.fd ?? -1;
  }

  /** Executes sends in order; what a peer's socket has no room for waits
   * in its backlog (pump() goes on when the socket drains). A peer whose
   * socket fails, or that is over maxQueued and has taken nothing for
   * stallMs (or is far over it), is disconnected (never silently skipped). */
  private deliver(sends: Send[], newcomer: number | null = null): void {
    let welcome = 0;
    const failed = new Map<number, string>();
    const now = Date.now();
    for (const s of sends) {
      const peer = this.peers.get(s.to);
      if (!peer || failed.has(s.to)) continue;
      const step = s.to === newcomer && s.fd === null ? welcome++ : -1;
      try {
        if (peer.backlog.empty && this.sendNow(peer, s.value, s.fd, step)) continue;
      } catch (e) {
        failed.set(s.to, sendFailure(e));
        continue;
      }
      peer.backlog.push(s);
      this.log.debug({ event: 'wait', peer: s.to, value: s.value }, `${describeSend(s, step)} for peer ${s.to} waits for room in its socket (${peer.backlog.waiting} waiting)`);
      const slow = peer.backlog.tooSlow(now, this.config.maxQueued, this.config.stallMs);
      if (slow !== null) failed.set(s.to, slow);
    }
    for (const [id, reason] of failed) this.drop(id, reason);
  }

  /** Sends one message if the socket has room: false when it has none.
   * A message whose fd's owner has left is dropped (true). Throws when the
   * socket is broken. */
  private sendNow(peer: Peer, value: number, ref: FdRef | null, step = -1): boolean {
    const fd = ref === null ? -1 : this.fdOf(ref);
    if (ref !== null && fd < 0) return true;
    if (!peer.stream.trySend(value, fd < 0 ? undefined : fd)) return false;
    this.log.debug({ event: 'send', peer: peer.id, value, fd: ref !== null }, `sent peer ${peer.id} ${describeSend({ to: peer.id, value, fd: ref }, step)}`);
    return true;
  }

  /** The peer's socket has room again: send its backlog, in order. */
  private pump(peer: Peer): void {
    if (this.peers.get(peer.id) !== peer) return;
    try {
      for (let q = peer.backlog.front(); q !== null; q = peer.backlog.front()) {
        if (!this.sendNow(peer, q.value, q.fd)) break;
        peer.backlog.shift(Date.now());
      }
    } catch (e) {
      this.drop(peer.id, sendFailure(e));
    }
  }

  private drop(id: number, reason: string): void {
    const peer = this.peers.get(id);
    if (!peer) return;
    this.peers.delete(id);
    peer.stream.close();
    const sends = this.members.leave(id);
    const recycle = this.config.recycle && !this.closed;
    if (recycle) this.recycled.set(id, peer.vectors);
    else for (const v of peer.vectors) v.close();
    const normal = reason === 'disconnected' || reason === 'server shutting down';
    const fields = { event: 'disconnect', peer: id, ...this.describePeer?.(id), reason, peers: this.peers.size };
    this.log[normal ? 'info' : 'warn'](fields, `peer ${id} disconnected: ${reason} (${plural(this.peers.size, 'peer')})`);
    this.emit('disconnect', { id, peers: this.peers.size, reason });
    if (!this.closed) this.deliver(sends);
  }

  /** Closes every client, removes the socket and (unless keepShm) the
   * shared memory. Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.listener.close();
    if (this.acceptRetry) clearTimeout(this.acceptRetry);
    if (this.reserveFd !== null) fs.closeSync(this.reserveFd);
    this.reserveFd = null;
    if (!unlinkIfOurs(this.config.socket, this.socketId) && fs.existsSync(this.config.socket)) {
      this.log.warn({ event: 'left-alone', socket: this.config.socket }, `left ${this.config.socket} alone: it is no longer this server's socket`);
    }
    for (const id of this.peerIds) this.drop(id, 'server shutting down');
    for (const vectors of this.recycled.values()) for (const v of vectors) v.close();
    this.recycled.clear();
    this.members.clearKept();
    if (!this.config.keepShm && this.config.shm.kind !== 'memfd') {
      try {
        if (!this.shm.unlink()) this.log.warn({ event: 'left-alone', shm: this.config.shm.name }, `left shared memory ${this.config.shm.name} alone: the name is no longer this server's object`);
      } catch {
        // already gone
      }
    }
    this.shm.close();
    this.emit('close');
  }

  /** close(), for `using server = Server.start(...)`. */
  [Symbol.dispose](): void {
    this.close();
  }
}
