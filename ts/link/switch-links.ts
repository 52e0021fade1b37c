// A switch's links to other switches, as I/O (docs/multi-host.md, "Links
// in famez serve"): libfabric connections (ts/link/ofi.ts) made with
// `--link HOST:PORT` (reconnected with backoff) and accepted on
// `--link-listen ADDR:PORT`, each driven by a LinkEnd (the frame protocol:
// hello, heartbeats, sequence, acks, credits), the switch's advertisements
// carried over them as control messages (ts/link/carry.ts) and fed to the
// Topology (ts/link/topology.ts), which says who is where. This module
// owns the fds, the timers and the backoff; the decisions are the pure
// modules'.
import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';

import type { BusyPoll } from '../busy-poll.js';
import { silentLogger, type Logger } from '../log.js';
import type { SwitchLinkView } from '../observe/api-types.js';
import { CarryError, LINK_LOCAL, Reassembler, endToEnd, fmt, packetBytes, peek, pieceRoute, pieces, splitPackets } from './carry.js';
import { Link, LinkError, LinkListener, libfabricAvailable, type OfiWindow } from './ofi.js';
import { MAX_UNIT_BYTES, decodeTrain, encode as encodeFrame, packetFault } from './frame.js';
import { WINDOW_OFFER, answerAck, answerRead, decodeOffer, encodeOffer, isFamCode, isFamPacket, isFamRequest, refusal, serve, type FamStore, type WindowOffer } from './fam.js';
import { Reason } from '../genz/codes.js';
import type { Core64Read, Core64Write } from '../genz/packets.js';
import { decode as decodePacket } from '../genz/packets.js';
import type { Stream } from './streams.js';
import { NativeLinkEnd } from './native-streams.js';
import { Topology, type FmRole, type NodeEntry, type RemoteNode, type Route } from './topology.js';
import { Election, type ManagerClaim } from './manager.js';
import type { Refusal } from '../fabric/fabric.js';

export interface SwitchLinksConfig {
  /** This switch's SID. */
  sid: number;
  /** The switch's own CID (FAME-Z: its ID x 100). */
  cid: number;
  /** Addresses to listen on for other switches' links (ADDR:PORT). */
  listen?: readonly string[];
  /** Switches to connect to (HOST:PORT), each kept up. */
  connect?: readonly string[];
  /** libfabric provider (default tcp). */
  provider?: string;
  logger?: Logger;
  /** LinkEnd heartbeat interval (default 100 ms). */
  heartbeatMs?: number;
  /** First reconnect delay (default 100 ms), doubling up to maxBackoffMs (default 5 s). */
  backoffMs?: number;
  maxBackoffMs?: number;
  /** Delivers a message from another switch to local peer `peer` (the
   * pieces to write, each one slot or ring message); `taken` once the
   * last is taken. False when there is no such peer. */
  deliver?: (peer: number, messages: Uint8Array[], taken: () => void) => boolean;
  /** Local peer `peer`'s messages held for credit may go now (Fabric.resume). */
  resume?: (peer: number) => void;
  /** Busy polling (famez serve --busy-poll): kicked by every link message. */
  busyPoll?: BusyPoll;
  /** The switch's fabric-attached memory (--fam), served to every peer of the fabric. */
  fam?: FamStore | null;
  /** This switch's incarnation for routing, larger at each start (default: seconds since the epoch). */
  instance?: number;
  /** Its fabric-manager role (default none): ts/link/manager.ts. */
  fm?: FmRole;
  /** How long a switch that may manage waits with no manager in charge before it claims (default 500 ms). */
  fmGraceMs?: number;
}

/** The fabric-manager election as `/system` shows it. */
export interface ManagerStatus {
  /** This switch's role. */
  role: FmRole;
  /** This switch's claim (0: none). */
  epoch: number;
  /** The manager in charge, or null. */
  manager: { sid: number; cid: number; gcid: string; epoch: number; self: boolean } | null;
}

/** One link as `/system` shows it. */
export type LinkStatus = SwitchLinkView;

export interface SwitchLinksEvents {
  /** Something in the links or the remote nodes changed. */
  change: [];
  /** SIDs no route leads to any more (a link down, a switch gone). */
  unreachable: [sids: number[]];
  /** The fabric manager in charge changed (null: none now). */
  manager: [manager: ManagerClaim | null];
}

/** One connection to another switch (a path of its Neighbour, once the
 * other end's hello said which switch it is). */
interface Conn {
  name: string;
  direction: 'out' | 'in';
  address: string;
  link: Link | null;
  /** Its path number in its neighbour's LinkEnd (unique in this SwitchLinks). */
  id: number;
  /** The neighbour its hello named (kept after it went down, for its counts). */
  nb: Neighbour | null;
  /** On its neighbour's paths now. */
  attached: boolean;
  /** Frames before its hello: the ones that did not decode, or were no hello. */
  early: { framesReceived: number; badFrames: number; rejectedFrames: number; lastBadFrame: string | null };
  /** Closes a connection that says no hello in time. */
  helloTimer: NodeJS.Timeout | null;
  retry: NodeJS.Timeout | null;
  backoff: number;
  downs: number;
  closed: boolean;
  /** The link connected() last ran for (it runs once per link). */
  upFor: Link | null;
  /** Up (the hellos exchanged) since it last went down. */
  wasUp: boolean;
  /** Bad and rejected frames already logged, and when last. */
  badLogged: number;
  badLoggedAt: number;
  /** An accepted connection that went down is listed (as down) until this timer. */
  listTimer: NodeJS.Timeout | null;
  /** The switch's memory (--fam) registered on this connection for the neighbour's RMA. */
  window: OfiWindow | null;
  /** Peers' memory requests this switch served by RMA on this connection. */
  rmaReads: number;
  rmaWrites: number;
}

/** Everything exchanged with one other switch (by its SID), over however
 * many connections lead to it: one LinkEnd, so its streams go on over any
 * of them and move to another when one fails. */
interface Neighbour {
  sid: number;
  /** Its name as the Topology knows it: one link of the topology. */
  name: string;
  end: NativeLinkEnd;
  reasm: Reassembler;
  /** Its connections, in the order they were attached: the first that is up carries the data. */
  paths: Conn[];
  /** The Topology has it as an up link. */
  up: boolean;
  /** The control stream to it. */
  control: Stream;
  /** Control messages sent on it so far (their tag). */
  messages: number;
  /** Pieces waiting for credit, in order. */
  waiting: Uint8Array[];
  timer: NodeJS.Timeout | null;
  timerAt: number;
  /** Data units waiting for credit, per stream, in order; `done` once submitted. */
  pending: Map<number, { stream: Stream; items: Array<{ packet: Uint8Array; done?: () => void }> }>;
  /** Local senders to resume when a stream's pending packets are all submitted. */
  resumers: Map<number, Set<number>>;
  /** Per incoming stream: units delivered since its last whole message. */
  pieceParts: Map<number, Uint8Array[]>;
  /** With no connection up: its packets waiting for credit are given up after PARK_MS. */
  parkTimer: NodeJS.Timeout | null;
  /** This switch's memory as offered to it for RMA, once. */
  offered: WindowOffer | null;
  /** Its memory as it offered it: its window, read and written here by RMA. */
  window: WindowOffer | null;
}

/** How long a neighbour with no connection up keeps the packets waiting
 * for its credit, and an accepted connection that went down is listed. */
const PARK_MS = 60_000;
/** Accepted connections that went down listed at most (the latest). */
const MAX_LISTED_DOWN = 32;
/** The credit each new stream toward this switch starts with, in units (a
 * message of up to MAX_UNIT_BYTES of pieces is one; a 4 KiB message's nine
 * pieces are): 128 such messages, 0.5 MiB, in flight, 1 MiB at most held
 * for one stream. A window is what a stream moves per round trip of its
 * credit: on a machine whose link round trips took about a millisecond,
 * 28 4 KiB messages held their stream to 5-6k msg/s in the probe, 110 let
 * it reach 7.5-8.7k, and 220 or 440 did no better. */
const WINDOW = 128;
/** The allowance for the loop's lateness in judging a link dead (see lateMs). */
const LATE_MS = 10;
/** A new connection says its hello within this long (or three heartbeats, if longer), or is closed. */
const HELLO_MS = 1000;
/** An ack waits this long for a frame to ride with (an answer's data, the
 * next train), unless urgent (LinkEnd's ackDelayMs). */
const ACK_DELAY_MS = 2;
/** The largest train (one link message): the links' maxMessage (ts/link/ofi.ts's default). */
const TRAIN_BYTES = 65536;
/** How long traffic for a SID that lost its route waits for a route again
 * (a link reconnecting) before it is refused. */
export const HOLD_MS = 5000;
const streamKey = (s: Stream) => s.source * 2 ** 28 + s.destination;

const instanceNow = () => Math.floor(Date.now() / 1000) >>> 0;

export class SwitchLinks extends EventEmitter<SwitchLinksEvents> {
  readonly topology: Topology;
  private readonly log: Logger;
  /** Every connection that is up or being made (accepted ones only while up). */
  private readonly conns = new Map<string, Conn>();
  /** Accepted connections that went down, listed a while. */
  private readonly downIn = new Set<Conn>();
  /** By SID. */
  private readonly neighbours = new Map<number, Neighbour>();
  private readonly byName = new Map<string, Neighbour>();
  private readonly linkListeners: LinkListener[] = [];
  private readonly instance: number;
  /** This process's incarnation in every hello: a neighbour that sees a new
   * one knows this switch lost its streams' state. */
  private readonly linkInstance = randomBytes(4).readUInt32LE(0);
  private accepted = 0;
  private nextPath = 0;
  /** The SIDs routes led to at the last change. */
  private reachable = new Set<number>();
  /** When each SID last lost its route. */
  private readonly lostAt = new Map<number, number>();
  /** Traffic waiting for a route to a SID: local senders to resume, and
   * packets passing through (not yet consumed on the link they came by). */
  private readonly waitingRoute = new Map<number, { senders: Set<number>; transit: Array<{ from: Neighbour; stream: Stream; packet: Uint8Array }> }>();
  private routeTimer: NodeJS.Timeout | null = null;
  /** Neighbours whose pump is running (a consume inside it needs no other turn). */
  private readonly pumping = new Set<Neighbour>();
  /** Neighbours to pump on the next turn (pumpSoon). */
  private readonly soon = new Set<Neighbour>();
  private isClosed = false;
  private readonly election: Election;
  /** The key this switch's memory window has on every connection. */
  private readonly famKey = (1n << 40n) + BigInt(randomBytes(4).readUInt32LE(0));
  private electionTimer: NodeJS.Timeout | null = null;

  constructor(readonly config: SwitchLinksConfig) {
    super();
    this.log = (config.logger ?? silentLogger).child({ component: 'links' });
    this.instance = config.instance ?? instanceNow();
    this.topology = new Topology({ sid: config.sid, instance: this.instance });
    this.election = new Election({ sid: config.sid, cid: config.cid, role: config.fm ?? 'none', graceMs: config.fmGraceMs });
    this.topology.setManager({ role: config.fm ?? 'none', cid: config.cid, epoch: 0 });
  }

  /** The fabric manager in charge as this switch sees it, or null. */
  get manager(): ManagerClaim | null {
    return this.election.manager;
  }

  managerStatus(): ManagerStatus {
    const m = this.election.manager;
    return {
      role: this.config.fm ?? 'none',
      epoch: this.election.own.epoch,
      manager: m ? { sid: m.sid, cid: m.cid, gcid: fmt(m.sid * 0x1000 + m.cid), epoch: m.epoch, self: m.sid === this.config.sid } : null,
    };
  }

  /** Runs the election on what the reachable switches advertise now. */
  private elect(): void {
    if (this.isClosed) return;
    this.election.update(this.topology.managers(), Date.now());
    let claim = false;
    for (let ev = this.election.pollEvent(); ev; ev = this.election.pollEvent()) {
      switch (ev.kind) {
        case 'claim':
          claim = true;
          this.log.warn(
            { event: 'fm-claim', epoch: ev.epoch },
            ev.took ? `this switch takes over as fabric manager (epoch ${ev.epoch}): the manager in charge, SID ${ev.took.sid} (epoch ${ev.took.epoch}), is gone` : `this switch manages the fabric (epoch ${ev.epoch})`,
          );
          break;
        case 'yield':
          claim = true;
          this.log.warn({ event: 'fm-yield', to: ev.to.sid, epoch: ev.to.epoch }, `SID ${ev.to.sid} manages the fabric (epoch ${ev.to.epoch}), ahead of this switch: it yields`);
          break;
        case 'manager':
          if (ev.manager) this.log.info({ event: 'fm', sid: ev.manager.sid, epoch: ev.manager.epoch }, `fabric manager in charge: SID ${ev.manager.sid} (${fmt(ev.manager.sid * 0x1000 + ev.manager.cid)}, epoch ${ev.manager.epoch})`);
          else this.log.warn({ event: 'fm', sid: null }, 'no fabric manager in charge');
          this.emit('manager', ev.manager);
          break;
      }
    }
    if (claim) {
      this.topology.setManager({ role: this.config.fm ?? 'none', cid: this.config.cid, epoch: this.election.own.epoch });
      this.flush();
    }
    const at = this.election.pollTimeout();
    if (this.electionTimer) clearTimeout(this.electionTimer);
    this.electionTimer = at === null ? null : setTimeout(() => this.elect(), Math.max(0, at - Date.now()) + 1);
  }

  /** The switch's GCID. */
  get gcid(): number {
    return this.config.sid * 0x1000 + this.config.cid;
  }

  private get heartbeatMs(): number {
    return this.config.heartbeatMs ?? 100;
  }

  /** A link is dead after three heartbeats of silence less this: a timer
   * on a busy loop fires a few ms late, and a cut is then still down
   * within three heartbeats of its last frame. */
  private get lateMs(): number {
    return Math.min(LATE_MS, this.heartbeatMs / 10);
  }

  /** Opens the listeners and starts the outgoing links. Throws LinkError
   * (ELIBACC without libfabric, EADDRINUSE, ...) before anything is kept. */
  start(): void {
    if (!this.config.listen?.length && !this.config.connect?.length) return;
    // Only a link made later would find it missing: say it now, once.
    const probe = libfabricAvailable();
    if (!probe.available) throw new LinkError(probe.code ?? 'ELIBACC', probe.error ?? 'libfabric is not available');
    try {
      for (const addr of this.config.listen ?? []) {
        const l = LinkListener.listen(addr, { provider: this.config.provider });
        l.on('link', (link) => this.adopt(link));
        l.on('error', (e) => this.log.warn({ event: 'link-listen-error', address: addr, reason: e.message }, `link listener on ${addr}: ${e.message}`));
        this.linkListeners.push(l);
        this.log.info({ event: 'link-listen', address: l.address }, `listening for links on ${l.address}`);
      }
    } catch (e) {
      this.close();
      throw e;
    }
    for (const addr of this.config.connect ?? []) this.dial(this.conn(`out:${addr}`, 'out', addr));
    this.elect();
  }

  /** The addresses the listeners are bound to (port 0 picks one). */
  get listening(): string[] {
    return this.linkListeners.map((l) => l.address);
  }

  /** The switch's own peers now (the switch among them). */
  setNodes(nodes: readonly NodeEntry[]): void {
    this.topology.setNodes(nodes);
    this.flush();
  }

  /** Every connection, an accepted one that went down too for a while (state 'down'). */
  links(): LinkStatus[] {
    return [...this.conns.values(), ...this.downIn].map((c) => {
      const nb = c.nb;
      const s = nb ? nb.end.pathStats(c.id) : null;
      const up = c.attached && nb !== null && nb.end.pathUp(c.id);
      const state = c.link === null || c.link.state === 'down' || c.link.state === 'closed' ? (c.direction === 'out' && !c.closed ? 'connecting' : 'down') : c.link.state === 'connecting' ? 'connecting' : up ? 'up' : 'hello';
      return {
        name: c.name,
        direction: c.direction,
        address: c.address,
        state,
        neighbour: up ? this.topology.neighbour(nb.name) : null,
        framesSent: s?.framesSent ?? 0,
        framesReceived: (s?.framesReceived ?? 0) + c.early.framesReceived,
        badFrames: (s?.badFrames ?? 0) + c.early.badFrames,
        retransmits: s?.retransmits ?? 0,
        downs: c.downs,
        rmaReads: c.rmaReads,
        rmaWrites: c.rmaWrites,
      };
    });
  }

  remoteNodes(): RemoteNode[] {
    return this.topology.remoteNodes();
  }

  routes(): Route[] {
    return [...this.topology.routes().values()].sort((a, b) => a.sid - b.sid);
  }

  private conn(name: string, direction: 'out' | 'in', address: string): Conn {
    const c: Conn = {
      name,
      direction,
      address,
      link: null,
      id: this.nextPath++,
      nb: null,
      attached: false,
      early: { framesReceived: 0, badFrames: 0, rejectedFrames: 0, lastBadFrame: null },
      helloTimer: null,
      retry: null,
      backoff: this.config.backoffMs ?? 100,
      downs: 0,
      closed: false,
      upFor: null,
      wasUp: false,
      badLogged: 0,
      badLoggedAt: -Infinity,
      listTimer: null,
      window: null,
      rmaReads: 0,
      rmaWrites: 0,
    };
    this.conns.set(name, c);
    return c;
  }

  private neighbour(sid: number): Neighbour {
    let nb = this.neighbours.get(sid);
    if (!nb) {
      nb = {
        sid,
        name: `sid:${sid}`,
        // The native core's link end (crates/famez-core/src/link/streams.rs); ts/link/streams.ts is its reference.
        end: new NativeLinkEnd({ instance: this.linkInstance, source: this.gcid, window: WINDOW, heartbeatMs: this.config.heartbeatMs, lateMs: this.lateMs, ackDelayMs: ACK_DELAY_MS }),
        // A message across is at most 1 MiB; a neighbour holds at most 64 MiB of partial ones.
        // Only control messages are read here; the others go on as the pieces they came in.
        reasm: new Reassembler(1 << 20, 64 << 20, (kind) => kind === 'control'),
        paths: [],
        up: false,
        control: { source: this.gcid, destination: LINK_LOCAL },
        messages: 0,
        waiting: [],
        timer: null,
        timerAt: Infinity,
        pending: new Map(),
        resumers: new Map(),
        pieceParts: new Map(),
        parkTimer: null,
        offered: null,
        window: null,
      };
      this.neighbours.set(sid, nb);
      this.byName.set(nb.name, nb);
    }
    return nb;
  }

  private dial(c: Conn): void {
    c.retry = null;
    if (this.isClosed || c.closed) return;
    let link: Link;
    try {
      link = Link.connect(c.address, { provider: this.config.provider });
    } catch (e) {
      this.log.warn({ event: 'link-error', link: c.name, reason: (e as Error).message }, `link ${c.name}: ${(e as Error).message}`);
      this.redial(c);
      return;
    }
    this.attach(c, link);
  }

  private redial(c: Conn): void {
    if (this.isClosed || c.closed || c.retry) return;
    const delay = c.backoff;
    c.backoff = Math.min(c.backoff * 2, this.config.maxBackoffMs ?? 5000);
    c.retry = setTimeout(() => this.dial(c), delay);
  }

  /** An accepted connection: its hello will say which switch it leads to. */
  private adopt(link: Link): void {
    if (this.isClosed) return link.close();
    const c = this.conn(`in:${++this.accepted}`, 'in', link.address);
    this.attach(c, link);
    this.connected(c);
  }

  private attach(c: Conn, link: Link): void {
    c.link = link;
    link.on('connected', () => this.connected(c));
    link.on('message', (m) => this.arrived(c, m));
    link.on('error', (e) => this.log.debug({ event: 'link-error', link: c.name, reason: e.message }, `link ${c.name}: ${e.message}`));
    link.on('down', (e) => this.down(c, link, e));
  }

  /** Connected: this switch says who it is, and waits for the other end's hello. */
  private connected(c: Conn): void {
    if (c.upFor === c.link || c.link === null) return;
    c.upFor = c.link;
    this.log.info({ event: 'link-connected', link: c.name, address: c.address }, `link ${c.name} connected (${c.address})`);
    this.registerWindow(c);
    c.link.send(encodeFrame({ type: 'hello', instance: this.linkInstance, window: WINDOW, seen: false, source: this.gcid }));
    const link = c.link;
    // A connection is not a link until its hello: no heartbeats are owed
    // yet, so it gets longer than three of them (at least HELLO_MS) to say
    // who it is, time for a switch on a loaded host to get its first write out.
    const wait = Math.max(3 * this.heartbeatMs, HELLO_MS);
    c.helloTimer = setTimeout(() => {
      c.helloTimer = null;
      if (c.link === link && !c.attached) this.down(c, link, null, `no hello in ${wait} ms`);
    }, wait);
  }

  /** With --fam and a provider with RMA: the memory registered on this
   * connection before its hello goes out, so that by the time the other
   * end sees it up (and may read and write it) it is there. Only where its
   * coordinates are the same on every connection (address 0, the key
   * famez asks for): the neighbour may use any of them. */
  private registerWindow(c: Conn): void {
    const fam = this.config.fam;
    const link = c.link;
    if (!fam || fam.fd === undefined || !link || !link.rma || c.window || fam.bytes.length === 0) return;
    let w: OfiWindow;
    try {
      w = link.createFileWindow(fam.fd, fam.bytes.length, this.famKey);
    } catch (e) {
      this.log.debug({ event: 'fam-window', link: c.name, reason: (e as Error).message }, `link ${c.name}: no RMA window (${(e as Error).message}); memory requests go as packets`);
      return;
    }
    const r = w.remote;
    if (r.addr !== 0n || r.key !== this.famKey) {
      w.close();
      this.log.debug({ event: 'fam-window', link: c.name }, `link ${c.name}: the provider places windows itself; memory requests go as packets`);
      return;
    }
    c.window = w;
  }

  /** The memory offered to a neighbour that just came up, when its first connection has a window. */
  private offerWindow(nb: Neighbour, c: Conn): void {
    const fam = this.config.fam;
    if (!fam || !c.window || nb.offered) return;
    const r = c.window.remote;
    nb.offered = { owner: this.gcid, addr: r.addr, key: r.key, size: Number(r.size), rkey: fam.key };
    nb.waiting.push(...pieces('control', this.gcid, LINK_LOCAL, encodeOffer(nb.offered), nb.messages++));
  }

  private arrived(c: Conn, m: Buffer): void {
    this.config.busyPoll?.kick();
    const nb = c.nb;
    if (c.attached && nb) {
      nb.end.receive(m, Date.now(), c.id);
      this.noteBad(c);
      this.pump(nb);
      return;
    }
    // Its first message is its hello (alone: it is sent on connecting).
    const { frames, error } = decodeTrain(m);
    const f = frames[0];
    if (!f) {
      c.early.badFrames++;
      c.early.lastBadFrame = error!.message;
      this.noteBad(c);
      return;
    }
    c.early.framesReceived++;
    if (f.type !== 'hello') {
      // Nothing counts before the hello says who is there.
      c.early.rejectedFrames++;
      this.noteBad(c);
      return;
    }
    this.join(c, Math.floor((f.source ?? 0) / 0x1000), f.instance, m);
  }

  /** The other end's hello named switch `sid`: the connection becomes one
   * of its paths, unless another switch with that SID is linked already. */
  private join(c: Conn, sid: number, instance: number, hello: Buffer): void {
    const link = c.link!;
    const nb = this.neighbour(sid);
    if (nb.end.isUp && nb.end.peer !== null && nb.end.peer !== instance) {
      this.log.error({ event: 'link-conflict', link: c.name, sid }, `link ${c.name}: SID ${sid} is linked already, to another switch (or its older run, still up); this connection is refused`);
      this.down(c, link, null, `SID ${sid} is linked already to another switch`);
      return;
    }
    if (c.helloTimer) clearTimeout(c.helloTimer);
    c.helloTimer = null;
    if (nb.end.peer === instance && !nb.end.isUp) this.log.info({ event: 'link-resumed', link: c.name, sid }, `link ${c.name}: its other end is back; its streams go on (SID ${sid})`);
    if (c.nb && c.nb !== nb) c.nb.end.dropPath(c.id);
    c.nb = nb;
    c.attached = true;
    nb.paths.push(c);
    if (nb.parkTimer) clearTimeout(nb.parkTimer);
    nb.parkTimer = null;
    const now = Date.now();
    nb.end.linkUp(now, c.id);
    nb.end.receive(hello, now, c.id);
    this.pump(nb);
  }

  private down(c: Conn, link: Link, e: LinkError | null, reason?: string): void {
    if (c.link !== link) return;
    c.link = null;
    link.close();
    if (c.helloTimer) clearTimeout(c.helloTimer);
    c.helloTimer = null;
    c.window?.close();
    c.window = null;
    const wasUp = c.wasUp;
    c.wasUp = false;
    if (wasUp) c.downs++;
    const nb = c.nb;
    if (c.attached && nb) {
      c.attached = false;
      nb.paths.splice(nb.paths.indexOf(c), 1);
      nb.end.linkDown(c.id);
    }
    const why = reason ?? (e ? e.message : 'closed by the other end');
    const others = nb?.end.isUp ? ` (SID ${nb.sid} is still reached by ${nb.paths.filter((p) => nb.end.pathUp(p.id)).map((p) => p.name).join(', ')}: its streams go on there)` : '';
    if (wasUp || c.direction === 'in') this.log.warn({ event: 'link-down', link: c.name, reason: why }, `link ${c.name} down: ${why}${others}`);
    else this.log.debug({ event: 'link-down', link: c.name, reason: why }, `link ${c.name}: ${why}`);
    if (nb) this.settle(nb);
    if (c.direction === 'in') {
      this.conns.delete(c.name);
      if (!this.isClosed && nb) {
        this.downIn.add(c);
        c.listTimer = setTimeout(() => this.unlist(c), PARK_MS).unref();
        // A peer that connects and goes over and over lists only its last few.
        for (const old of this.downIn) {
          if (this.downIn.size <= MAX_LISTED_DOWN) break;
          if (old.listTimer) clearTimeout(old.listTimer);
          this.unlist(old);
        }
      } else nb?.end.dropPath(c.id);
    } else this.redial(c);
    if (nb?.end.isUp) this.pumpSoon(nb);
    this.flush();
    this.changed();
  }

  /** A neighbour's connections changed: the Topology hears when the first
   * came up or the last went down. */
  private settle(nb: Neighbour): void {
    const up = nb.end.isUp;
    if (up === nb.up) return;
    nb.up = up;
    if (up) {
      if (nb.parkTimer) clearTimeout(nb.parkTimer);
      nb.parkTimer = null;
      this.topology.linkUp(nb.name);
      return;
    }
    this.topology.linkDown(nb.name);
    nb.waiting.length = 0;
    nb.offered = null;
    nb.window = null;
    if (nb.timer) clearTimeout(nb.timer);
    nb.timer = null;
    nb.timerAt = Infinity;
    if (!this.isClosed) nb.parkTimer = setTimeout(() => this.park(nb), PARK_MS).unref();
  }

  /** An accepted connection that went down a while ago: no longer listed. */
  private unlist(c: Conn): void {
    c.listTimer = null;
    this.downIn.delete(c);
    if (!c.attached) c.nb?.end.dropPath(c.id);
  }

  /** A neighbour no connection reached for PARK_MS: local senders waiting
   * for its credit go on (their held messages then meet no route). Its
   * streams' state is kept, so that it can come back. */
  private park(nb: Neighbour): void {
    nb.parkTimer = null;
    const waiting = [...nb.resumers.values()].flatMap((s) => [...s]);
    nb.resumers.clear();
    nb.pending.clear();
    if (waiting.length) setImmediate(() => {
      for (const peer of waiting) this.config.resume?.(peer);
    });
  }

  /** 'change', and 'unreachable' for the SIDs that lost their route. */
  private changed(): void {
    const now = new Set(this.topology.routes().keys());
    const lost = [...this.reachable].filter((sid) => !now.has(sid));
    this.reachable = now;
    const t = Date.now();
    for (const sid of lost) this.lostAt.set(sid, t);
    this.retryRoutes();
    this.elect();
    this.emit('change');
    if (lost.length) {
      this.log.warn({ event: 'unreachable', sids: lost }, `no route to SID ${lost.join(', ')} any more`);
      this.emit('unreachable', lost);
    }
  }

  /** Whether traffic for `sid`, which has no up link now, should wait for
   * one: the SID had a route within HOLD_MS (its link is reconnecting). */
  private holdFor(sid: number): boolean {
    const at = this.lostAt.get(sid);
    return !this.isClosed && at !== undefined && Date.now() - at < HOLD_MS;
  }

  private waitRoute(sid: number): { senders: Set<number>; transit: Array<{ from: Neighbour; stream: Stream; packet: Uint8Array }> } {
    let w = this.waitingRoute.get(sid);
    if (!w) {
      this.waitingRoute.set(sid, (w = { senders: new Set(), transit: [] }));
      this.routeTimer ??= setInterval(() => this.retryRoutes(), 100);
    }
    return w;
  }

  /** What waits for a route goes on where one is up again, and is refused
   * (senders resumed into a refusal, packets dropped) where HOLD_MS passed. */
  private retryRoutes(): void {
    for (const [sid, w] of [...this.waitingRoute]) {
      const up = this.upLinkTo(sid);
      if (!up && this.holdFor(sid)) continue;
      this.waitingRoute.delete(sid);
      for (const item of w.transit) {
        if (up && up !== item.from) {
          this.sendData(up, item.stream, item.packet, () => this.consume(item.from, item.stream, 1));
        } else {
          this.consume(item.from, item.stream, 1);
          this.log.warn({ event: 'undelivered', destination: fmt(item.stream.destination) }, `a packet for ${fmt(item.stream.destination)}: no route on to SID ${sid} for ${HOLD_MS} ms; dropped`);
        }
      }
      if (up) this.pumpSoon(up);
      const senders = [...w.senders];
      if (senders.length) setImmediate(() => {
        for (const peer of senders) this.config.resume?.(peer);
      });
    }
    if (this.waitingRoute.size === 0 && this.routeTimer) {
      clearInterval(this.routeTimer);
      this.routeTimer = null;
    }
  }

  /** The neighbour on the way to `sid`, when a connection to it is up; else undefined. */
  private upLinkTo(sid: number, not?: Neighbour): Neighbour | undefined {
    return this.topology.linksTo(sid).map((n) => this.byName.get(n)).find((x): x is Neighbour => x !== undefined && x !== not && x.end.isUp);
  }

  /** Logs frames dropped as bad (CRC, packet) or refused, at most once a second a connection. */
  private noteBad(c: Conn): void {
    // Called for every train: the counts alone first, the stats only when they moved.
    if ((c.nb ? c.nb.end.pathBad(c.id) : 0) + c.early.badFrames + c.early.rejectedFrames === c.badLogged) return;
    const s = c.nb ? c.nb.end.pathStats(c.id) : null;
    const badFrames = (s?.badFrames ?? 0) + c.early.badFrames;
    const rejectedFrames = (s?.rejectedFrames ?? 0) + c.early.rejectedFrames;
    const bad = badFrames + rejectedFrames;
    if (bad === c.badLogged) return;
    const now = Date.now();
    if (now - c.badLoggedAt < 1000) return;
    const last = s?.lastBadFrame ?? c.early.lastBadFrame;
    this.log.warn(
      { event: 'link-bad-frames', link: c.name, badFrames, rejectedFrames, reason: last },
      `link ${c.name}: ${bad - c.badLogged} frame(s) dropped (${badFrames} bad, ${rejectedFrames} refused in all${last ? `; last: ${last}` : ''}); never delivered`,
    );
    c.badLogged = bad;
    c.badLoggedAt = now;
  }

  /** Queues what the topology has to send on its neighbours, and sends. */
  private flush(): void {
    this.queueAdverts();
    for (let ev = this.topology.pollEvent(); ev; ev = this.topology.pollEvent()) {
      this.log.error({ event: 'link-conflict', link: ev.link }, ev.text);
    }
    for (const nb of this.neighbours.values()) if (nb.end.isUp) this.pump(nb);
  }

  private queueAdverts(): void {
    for (let m = this.topology.pollSend(); m; m = this.topology.pollSend()) {
      const nb = this.byName.get(m.link);
      if (nb) nb.waiting.push(...pieces('control', this.gcid, LINK_LOCAL, m.bytes, nb.messages++));
    }
  }

  private pump(nb: Neighbour): void {
    if (this.isClosed) return;
    this.pumping.add(nb);
    try {
      this.pumpOnce(nb);
    } finally {
      this.pumping.delete(nb);
    }
  }

  /** Pumps `nb` on the next turn of the loop, once however often asked
   * meanwhile: what this turn consumed and queued goes out together. */
  private pumpSoon(nb: Neighbour): void {
    if (this.soon.has(nb)) return;
    this.soon.add(nb);
    if (this.soon.size === 1) setImmediate(() => {
      const due = [...this.soon];
      this.soon.clear();
      for (const x of due) this.pump(x);
    });
  }

  private pathConn(nb: Neighbour, id: number): Conn | undefined {
    return nb.paths.find((c) => c.id === id);
  }

  private pumpOnce(nb: Neighbour): void {
    const now = Date.now();
    const end = nb.end;
    end.handleTimeout(now);
    let changed = false;
    for (let ev = end.pollEvent(); ev; ev = end.pollEvent()) {
      switch (ev.kind) {
        case 'up': {
          const c = this.pathConn(nb, ev.path);
          if (!c) break;
          c.wasUp = true;
          c.backoff = this.config.backoffMs ?? 100;
          const second = nb.up ? ` (another path to SID ${nb.sid})` : '';
          this.log.info({ event: 'link-up', link: c.name, sid: nb.sid }, `link ${c.name} up${second}`);
          if (!nb.up) changed = true;
          this.settle(nb);
          this.offerWindow(nb, c);
          break;
        }
        case 'dead': {
          const c = this.pathConn(nb, ev.path);
          const why = `nothing heard for ${nb.end.deadAfterMs} ms`;
          if (c?.link) {
            this.log.warn({ event: 'link-dead', link: c.name }, `link ${c.name}: ${why}; reconnecting`);
            this.down(c, c.link, null, why);
          }
          break;
        }
        case 'restarted':
          nb.reasm.reset();
          break;
        case 'stalled':
          break;
        case 'ready':
          this.drainPending(nb, ev.stream);
          break;
      }
    }
    if (changed) this.queueAdverts();
    if (end.isUp) {
      while (nb.waiting.length && end.submit(nb.control, nb.waiting[0])) nb.waiting.shift();
    }
    let learned = false;
    for (let d = end.pollDeliver(); d; d = end.pollDeliver()) {
      const dest = d.stream.destination;
      if (dest !== LINK_LOCAL && Math.floor(dest / 0x1000) !== this.config.sid) {
        this.transit(nb, d.stream, d.packet);
        continue;
      }
      // A unit: one packet, or a message's pieces end to end (its frame's
      // decode checked that they tile it, and every CRC).
      const unit = d.packet;
      const single = packetBytes(unit, 0) === unit.length;
      if (single && dest !== LINK_LOCAL && this.famArrived(nb, d.stream, unit)) continue;
      const key = streamKey(d.stream);
      let parts = nb.pieceParts.get(key);
      if (!parts) nb.pieceParts.set(key, (parts = []));
      parts.push(unit);
      const count = parts.length;
      let m;
      try {
        // Its ECRCs were checked as its frame arrived (LinkEnd.receive).
        if (single) m = nb.reasm.push(unit, true);
        else {
          const ps = splitPackets(unit)!;
          for (let i = 0; i < ps.length; i++) {
            m = nb.reasm.push(ps[i]!, true);
            if (m && i < ps.length - 1) throw new CarryError('EORDER', `a message ends at piece ${i + 1} of a unit of ${ps.length}`);
          }
        }
      } catch (e) {
        if (!(e instanceof CarryError)) throw e;
        // The partial message is dropped: its pieces are consumed.
        nb.pieceParts.delete(key);
        this.consume(nb, d.stream, count);
        this.log.warn({ event: 'link-reject', link: nb.name, reason: e.message }, `link to SID ${nb.sid}: ${e.message}`);
        continue;
      }
      if (!m) continue;
      nb.pieceParts.delete(key);
      if (m.kind === 'control') {
        this.consume(nb, d.stream, count);
        if (m.destination === LINK_LOCAL && m.message[0] === WINDOW_OFFER) {
          const o = decodeOffer(m.message);
          // Only a neighbour's own memory, offered by the neighbour itself.
          if (o && Math.floor(o.owner / 0x1000) === nb.sid && m.source === o.owner) {
            nb.window = o.size > 0 ? o : null;
            this.log.info({ event: 'fam-window', sid: nb.sid, size: o.size }, `SID ${nb.sid} offers its memory (${fmt(o.owner)}, ${o.size} bytes) by RMA: this switch reads and writes it for its peers`);
          } else this.log.warn({ event: 'link-reject', link: nb.name }, `link to SID ${nb.sid}: a memory window offer that is not its own; ignored`);
        } else if (m.destination === LINK_LOCAL) {
          this.topology.receive(nb.name, Math.floor(m.source / 0x1000), m.message);
          learned = true;
        }
        continue;
      }
      const cid = m.destination % 0x1000;
      const peer = cid / 100;
      const stream = d.stream;
      // The pieces as they came when each fits a slot, else cut again.
      // The pieces as they came: the Fabric cuts them again for a slot (deliverRemote).
      const messages = !(Number.isInteger(peer) && peer >= 1) ? [] : parts;
      const ok = messages.length > 0 && (this.config.deliver?.(peer, messages, () => this.consume(nb, stream, count)) ?? false);
      if (!ok) {
        this.consume(nb, stream, count);
        this.log.warn({ event: 'undelivered', link: nb.name, source: fmt(m.source), destination: fmt(m.destination) }, `a ${m.kind} message from ${fmt(m.source)} to ${fmt(m.destination)}: no such peer here; dropped`);
      }
    }
    // The first connection that is up carries the data (the first that heard
    // from the other end lately: one gone quiet may be cut, and what it
    // carried goes again at its timeout on the next); every one its hellos
    // and heartbeats.
    const lively = (c: Conn) => now - end.heardAt(c.id) < 1.5 * this.heartbeatMs;
    const order = nb.paths.length > 1 && !lively(nb.paths[0]!) ? [...nb.paths.filter(lively), ...nb.paths.filter((c) => !lively(c))] : nb.paths;
    for (const c of order) {
      const link = c.link;
      if (!link || link.state !== 'connected') continue;
      for (let f = end.pollTrain(now, c.id, TRAIN_BYTES); f; f = end.pollTrain(now, c.id, TRAIN_BYTES)) link.send(f);
    }
    const at = end.pollTimeout(now);
    if (at !== null && (nb.timer === null || at < nb.timerAt)) {
      if (nb.timer) clearTimeout(nb.timer);
      nb.timerAt = at;
      nb.timer = setTimeout(() => {
        nb.timer = null;
        nb.timerAt = Infinity;
        this.pump(nb);
      }, Math.max(0, at - now));
    }
    if (learned || changed) {
      this.flush();
      this.changed();
    }
  }

  /** A local peer's message for another switch (Fabric's Forwarder):
   * every packet checked (a piece, from this peer's own GCID, for a SID
   * this switch reaches), then queued on the link toward it. */
  forward(sender: number, packets: Uint8Array[], checked = false): 'accepted' | 'wait' | Refusal {
    const own = this.config.sid * 0x1000 + sender * 100;
    if (packets.length === 1) {
      const fam = this.famFrom(sender, own, packets[0]);
      if (fam !== null) return fam;
    }
    let destination: number | null = null;
    for (const packet of packets) {
      const r = pieceRoute(packet, checked);
      if (typeof r === 'string') return { refused: r };
      if (r.source !== own) return { refused: `its source is ${fmt(r.source)}, not its own GCID ${fmt(own)}` };
      if (Math.floor(r.destination / 0x1000) === this.config.sid) return { refused: `${fmt(r.destination)} is in this switch's own subnet: send to its peer ID` };
      if (destination !== null && destination !== r.destination) return { refused: 'one message, one destination' };
      destination = r.destination;
    }
    if (destination === null) return { refused: 'an empty message' };
    return this.sendToward(sender, { source: own, destination }, packets);
  }

  /** Queues a local sender's packets on the stream toward its destination's
   * SID: 'wait' while the stream has packets waiting for credit or the SID's
   * route is coming back (the sender is resumed then), refused without a route. */
  private sendToward(sender: number, stream: Stream, packets: Uint8Array[]): 'accepted' | 'wait' | Refusal {
    const sid = Math.floor(stream.destination / 0x1000);
    const link = this.upLinkTo(sid);
    if (!link) {
      if (!this.holdFor(sid)) return { refused: `no route to SID ${sid}`, unreachable: sid };
      this.waitRoute(sid).senders.add(sender);
      return 'wait';
    }
    const key = streamKey(stream);
    if (link.pending.has(key)) {
      let set = link.resumers.get(key);
      if (!set) link.resumers.set(key, (set = new Set()));
      set.add(sender);
      return 'wait';
    }
    // A message's pieces as units of up to MAX_UNIT_BYTES each, one data frame each.
    for (const unit of packets.length === 1 ? packets : endToEnd(packets, MAX_UNIT_BYTES)) this.sendData(link, stream, unit);
    // On the next turn: the messages a ring read hands over in one pass go
    // out together, in trains, not a link send each.
    this.pumpSoon(link);
    return 'accepted';
  }

  /** A fabric-attached memory request of local peer `sender`: served
   * here when it is for this switch, else queued toward its SID; null when
   * `packet` is no such request. */
  private famFrom(sender: number, own: number, packet: Uint8Array): 'accepted' | 'wait' | Refusal | null {
    const h = peek(packet);
    if (!h || !h.gc || h.piece || !isFamCode(h.ocl, h.opcode)) return null;
    const fault = packetFault(packet);
    if (fault !== null) return { refused: `not a Gen-Z packet: ${fault}` };
    if (h.opcode < 4) return { refused: 'an answer from a peer answers nothing it was asked' };
    if (h.source !== own) return { refused: `its source is ${fmt(h.source)}, not its own GCID ${fmt(own)}` };
    const destination = h.destination;
    const sid = Math.floor(destination / 0x1000);
    if (destination === this.gcid) {
      let p;
      try {
        p = decodePacket(packet);
      } catch (e) {
        return { refused: (e as Error).message };
      }
      const answer = serve(p, this.config.fam ?? null, this.gcid);
      if (!this.config.deliver?.(sender, [answer], () => undefined)) this.log.warn({ event: 'undelivered', peer: sender }, `the answer to peer ${sender}'s memory request: no such peer; dropped`);
      return 'accepted';
    }
    if (sid === this.config.sid) return { refused: `${fmt(destination)} serves no memory: fabric-attached memory is the switch's (${fmt(this.gcid)})` };
    const nb = this.neighbours.get(sid);
    if (nb?.window && nb.window.owner === destination && h.ocl === 0 && (h.opcode === 0x1b || h.opcode === 0x04) && this.byRma(sender, nb, nb.window, packet)) return 'accepted';
    return this.sendToward(sender, { source: own, destination }, [packet]);
  }

  /** A local peer's Core64 Read or Write of a neighbour's memory, done here
   * by RMA on its window: checked as its owner checks them (R-Key, length,
   * range; a refusal answered as the owner would), then read or written,
   * and answered for the owner. False when no connection can do it now. If
   * the RMA fails, the request goes to the owner as a packet after all. */
  private byRma(sender: number, nb: Neighbour, o: WindowOffer, packet: Uint8Array): boolean {
    const c = nb.paths.find((x) => nb.end.pathUp(x.id) && x.link?.state === 'connected' && x.link.rma);
    if (!c) return false;
    let p;
    try {
      p = decodePacket(packet) as Core64Read | Core64Write;
    } catch {
      return false;
    }
    const answer = (bytes: Uint8Array) => {
      if (!this.config.deliver?.(sender, [bytes], () => undefined)) this.log.warn({ event: 'undelivered', peer: sender }, `the answer to peer ${sender}'s memory request: no such peer; dropped`);
    };
    const why = refusal(p, o.size, o.rkey);
    if (why !== null) {
      answer(answerAck(p, o.owner, why));
      return true;
    }
    const link = c.link!;
    const remote = { addr: o.addr, key: o.key, size: o.size };
    const at = Number(p.Addr);
    const done =
      p.class === 'Core64.Read'
        ? link.read(remote, at, p.RDSize).then((data) => {
            c.rmaReads++;
            answer(answerRead(p, o.owner, data));
          })
        : link.write(remote, at, p.payload).then(() => {
            c.rmaWrites++;
            answer(answerAck(p, o.owner, Reason.NoError));
          });
    done.catch((e: Error) => {
      if (this.isClosed) return;
      // The connection failed under it: the owner's switch does it instead (a read or a write again is harmless).
      this.log.warn({ event: 'fam-rma', link: c.name, reason: e.message }, `link ${c.name}: RMA for peer ${sender} failed (${e.message}); sent to ${fmt(o.owner)} as a packet`);
      const to = this.upLinkTo(nb.sid);
      if (to) {
        this.sendData(to, { source: this.config.sid * 0x1000 + sender * 100, destination: o.owner }, packet);
        this.pump(to);
      } else this.log.warn({ event: 'undelivered', destination: fmt(o.owner) }, `peer ${sender}'s memory request for ${fmt(o.owner)}: no route; dropped`);
    });
    return true;
  }

  /** A memory request for this switch from afar: served, the answer sent
   * back toward the requester; or a memory answer for a local peer. */
  private famArrived(c: Neighbour, stream: Stream, packet: Uint8Array): boolean {
    const h = peek(packet);
    if (!h || h.piece || !isFamCode(h.ocl, h.opcode)) return false;
    let p;
    try {
      p = decodePacket(packet, { ecrcChecked: true });
    } catch {
      return false;
    }
    if (!isFamPacket(p)) return false;
    if (isFamRequest(p)) {
      this.consume(c, stream, 1);
      if (stream.destination !== this.gcid) {
        this.log.warn({ event: 'undelivered', link: c.name, destination: fmt(stream.destination) }, `a memory request for ${fmt(stream.destination)}: only the switch (${fmt(this.gcid)}) serves memory here; dropped`);
        return true;
      }
      const answer = serve(p, this.config.fam ?? null, this.gcid);
      const back = { source: this.gcid, destination: stream.source };
      const link = this.upLinkTo(Math.floor(stream.source / 0x1000));
      if (!link) {
        this.log.warn({ event: 'undelivered', destination: fmt(stream.source) }, `the answer to ${fmt(stream.source)}'s memory request: no route back; dropped`);
        return true;
      }
      this.sendData(link, back, answer);
      if (link !== c) this.pumpSoon(link);
      return true;
    }
    const peer = (stream.destination % 0x1000) / 100;
    const ok = Number.isInteger(peer) && peer >= 1 && (this.config.deliver?.(peer, [packet], () => this.consume(c, stream, 1)) ?? false);
    if (!ok) this.consume(c, stream, 1);
    return true;
  }

  /** A packet for a SID beyond this switch: on toward it, consumed here once
   * the next link took it (credit passes back hop by hop). */
  private transit(from: Neighbour, stream: Stream, packet: Uint8Array): void {
    const sid = Math.floor(stream.destination / 0x1000);
    const waiting = this.waitingRoute.get(sid);
    const next = waiting ? undefined : this.upLinkTo(sid, from);
    if (!next && (waiting || this.holdFor(sid))) {
      // Its route is coming back: it waits, in order, unconsumed here.
      this.waitRoute(sid).transit.push({ from, stream, packet });
      return;
    }
    if (!next) {
      this.consume(from, stream, 1);
      this.log.warn({ event: 'undelivered', link: from.name, destination: fmt(stream.destination) }, `a packet for ${fmt(stream.destination)} arrived on link ${from.name}: no route on to SID ${sid}; dropped`);
      return;
    }
    this.sendData(next, stream, packet, () => this.consume(from, stream, 1));
    if (next !== from) this.pumpSoon(next);
  }

  /** Submits `packet` on `stream` of `c`, or queues it behind the ones already waiting for credit. */
  private sendData(c: Neighbour, stream: Stream, packet: Uint8Array, done?: () => void): void {
    const key = streamKey(stream);
    const p = c.pending.get(key);
    if (p) {
      p.items.push({ packet, done });
      return;
    }
    // Every packet here was checked whole: a local peer's by forward() or
    // famFrom(), one passing through as its frame arrived, an answer made here.
    if (c.end.submit(stream, packet, true)) {
      done?.();
      return;
    }
    c.pending.set(key, { stream, items: [{ packet, done }] });
  }

  private drainPending(c: Neighbour, stream: Stream): void {
    const key = streamKey(stream);
    const p = c.pending.get(key);
    if (!p) return;
    while (p.items.length && c.end.submit(stream, p.items[0].packet, true)) p.items.shift()!.done?.();
    if (p.items.length) return;
    c.pending.delete(key);
    const waiting = c.resumers.get(key);
    c.resumers.delete(key);
    if (waiting) setImmediate(() => {
      for (const peer of waiting) this.config.resume?.(peer);
    });
  }

  /** The destination took `n` packets of `stream` (its credit goes back). */
  private consume(c: Neighbour, stream: Stream, n: number): void {
    if (this.isClosed) return;
    try {
      c.end.consumed(stream, n);
    } catch {
      // The peer restarted meanwhile: its streams began again.
      return;
    }
    if (!this.pumping.has(c)) this.pumpSoon(c);
  }

  get closed(): boolean {
    return this.isClosed;
  }

  close(): void {
    if (this.isClosed) return;
    this.isClosed = true;
    for (const l of this.linkListeners) l.close();
    this.linkListeners.length = 0;
    for (const c of [...this.conns.values(), ...this.downIn]) {
      c.closed = true;
      c.window?.close();
      c.window = null;
      for (const t of [c.helloTimer, c.retry, c.listTimer]) if (t) clearTimeout(t);
      c.link?.close();
      c.link = null;
    }
    this.conns.clear();
    this.downIn.clear();
    for (const nb of this.neighbours.values()) for (const t of [nb.timer, nb.parkTimer]) if (t) clearTimeout(t);
    if (this.routeTimer) clearInterval(this.routeTimer);
    this.routeTimer = null;
    this.waitingRoute.clear();
    if (this.electionTimer) clearTimeout(this.electionTimer);
    this.electionTimer = null;
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
