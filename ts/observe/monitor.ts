// What the HTTP API, /metrics, the web view and `famez top` show: one
// model of the running server and its switch, fed by their events and
// read from the shared memory on demand (ring fill levels), never by
// polling the peers. Totals live here; per-peer figures come from the
// server (connection), the switch (its record of the port) and the fabric
// (what passed through the switch).
import '../dispose.js';
import { EventEmitter } from 'node:events';

import type { Fabric, FabricEvents, SwitchMessage } from '../fabric/fabric.js';
import { ringOffset } from '../fabric/ring.js';
import { RING_HEAD, RING_TAIL } from '../layout.generated.js';
import type { SwitchLinks } from '../link/switch-links.js';
import type { Server } from '../server/server.js';
import type { FabricEvent, PeerKind, PeerRings, PeerView, SystemView } from './api-types.js';

export type { FabricEvent, FabricEventType, PeerCounters, PeerKind, PeerRings, PeerView, SystemView } from './api-types.js';

export interface Totals {
  connects: number;
  disconnects: number;
  refusals: number;
  /** By reason class: 'disconnected', 'protocol', 'slow', 'shutdown', 'other'. */
  disconnectsBy: Record<string, number>;
}

export interface MonitorEvents {
  event: [FabricEvent, SwitchMessage | null];
}

/** FAME-Z's cclass_to_hardware_type: the first of its words the C-Class holds. */
export function fameHardware(cclass: string): string {
  const lower = cclass.toLowerCase();
  for (const hw of ['qemu', 'debugger', 'adapter', 'switch']) if (lower.includes(hw)) return hw;
  return lower;
}

function reasonClass(reason: string): string {
  if (reason === 'disconnected') return 'disconnected';
  if (reason === 'server shutting down') return 'shutdown';
  if (reason.startsWith('protocol error') || reason.startsWith('sent data')) return 'protocol';
  if (reason.startsWith('too slow')) return 'slow';
  return 'other';
}

const RECENT = 500;

type FabricEventsOf<E extends keyof FabricEvents> = FabricEvents[E][0];

export class Monitor extends EventEmitter<MonitorEvents> {
  readonly startedAt = Date.now();
  readonly totals: Totals = { connects: 0, disconnects: 0, refusals: 0, disconnectsBy: {} };
  private seq = 0;
  private readonly recentEvents: FabricEvent[] = [];
  private timeAt = -1;
  private timeIso = '';
  /** Per peer: its pid and command, looked up once at connect. */
  private readonly processes = new Map<number, { pid: number; command: string | null } | null>();
  /** What close() undoes: the listeners on the server and the fabric. */
  private readonly detach: Array<() => void> = [];

  constructor(
    readonly server: Server,
    readonly fabric: Fabric | null,
    private readonly lookupProcess: (id: number) => { pid: number; command: string | null } | null = () => null,
    /** The switch's links to other switches, when it has them. */
    readonly links: SwitchLinks | null = null,
  ) {
    super();
    const onConnect = ({ id, peers }: { id: number; peers: number }) => {
      this.totals.connects++;
      this.processes.set(id, this.lookupProcess(id));
      this.record({ type: 'join', peer: id, peers }, null);
    };
    const onDisconnect = ({ id, peers, reason }: { id: number; peers: number; reason: string }) => {
      this.totals.disconnects++;
      const c = reasonClass(reason);
      this.totals.disconnectsBy[c] = (this.totals.disconnectsBy[c] ?? 0) + 1;
      this.processes.delete(id);
      this.record({ type: 'leave', peer: id, reason, peers }, null);
    };
    const onRefuse = ({ reason }: { reason: string }) => {
      this.totals.refusals++;
      this.record({ type: 'refuse', reason }, null);
    };
    server.on('connect', onConnect);
    server.on('disconnect', onDisconnect);
    server.on('refuse', onRefuse);
    this.detach.push(() => {
      server.off('connect', onConnect);
      server.off('disconnect', onDisconnect);
      server.off('refuse', onRefuse);
    });
    if (fabric) {
      const onMessage = (m: SwitchMessage) =>
        this.record({ type: 'message', peer: m.peer, nodename: m.nodename || undefined, direction: m.direction, kind: m.kind, bytes: m.bytes, route: m.route }, m);
      const onPort = (p: FabricEventsOf<'port'>) => this.record({ type: 'link', peer: p.id, nodename: p.nodename || undefined, link: p.link, cclass: p.cclass, sid: p.SID0, cid: p.CID0 }, null);
      const onDrop = ({ peer, count, reason }: FabricEventsOf<'drop'>) => this.record({ type: 'drop', peer, count, reason }, null);
      const onUndelivered = ({ peer, reason }: FabricEventsOf<'undelivered'>) => this.record({ type: 'undelivered', peer, reason }, null);
      const onReject = ({ peer, reason }: FabricEventsOf<'reject'>) => this.record({ type: 'reject', peer, reason }, null);
      fabric.on('message', onMessage);
      fabric.on('port', onPort);
      fabric.on('drop', onDrop);
      fabric.on('undelivered', onUndelivered);
      fabric.on('reject', onReject);
      this.detach.push(() => {
        fabric.off('message', onMessage);
        fabric.off('port', onPort);
        fabric.off('drop', onDrop);
        fabric.off('undelivered', onUndelivered);
        fabric.off('reject', onReject);
      });
    }
  }

  /** Stops watching the server and the fabric (both stay as they are):
   * no more events are recorded or emitted. Idempotent. */
  close(): void {
    for (const d of this.detach.splice(0)) d();
  }

  /** close(), for `using`. */
  [Symbol.dispose](): void {
    this.close();
  }

  /** The last events (at most 500), oldest first, with seq above `after`. */
  recent(after = 0): FabricEvent[] {
    const from = Math.max(0, this.recentEvents.length - RECENT);
    const out: FabricEvent[] = [];
    for (let i = from; i < this.recentEvents.length; i++) if (this.recentEvents[i]!.seq > after) out.push(this.recentEvents[i]!);
    return out;
  }

  get lastSeq(): number {
    return this.seq;
  }

  private record(e: Omit<FabricEvent, 'seq' | 'time'>, message: SwitchMessage | null): void {
    // One ISO string per millisecond: a busy switch records many events in one.
    const now = Date.now();
    if (now !== this.timeAt) {
      this.timeAt = now;
      this.timeIso = new Date(now).toISOString();
    }
    const event: FabricEvent = { seq: ++this.seq, time: this.timeIso, ...e };
    if (event.peer !== undefined && event.nodename === undefined && this.fabric) {
      const nodename = this.fabric.nodename(event.peer);
      if (nodename) event.nodename = nodename;
    }
    this.recentEvents.push(event);
    // Trimmed now and then, not at every event (recent() looks at the last RECENT).
    if (this.recentEvents.length >= 2 * RECENT) this.recentEvents.splice(0, this.recentEvents.length - RECENT);
    this.emit('event', event, message);
  }

  /** The connected peers and the switch, by ID. */
  peers(): PeerView[] {
    const views: PeerView[] = [];
    for (const id of this.server.peerIds) {
      const v = this.peer(id);
      if (v) views.push(v);
    }
    const sw = this.switchView();
    if (sw) views.push(sw);
    return views;
  }

  /** Connected peer `id` (or the switch); null when there is none. */
  peer(id: number): PeerView | null {
    const f = this.fabric;
    if (f && id === f.switch.serverId) return this.switchView();
    const info = this.server.peerInfo(id);
    if (!info) return null;
    const port = f?.switch.port(id);
    const c = f?.portCounters(id);
    const d = f?.destination(id);
    const proc = this.processes.get(id) ?? null;
    const kind: PeerKind = proc?.command?.startsWith('qemu') ? 'qemu' : 'client';
    const cclass = port?.cclass ?? '';
    return {
      id,
      nodename: f?.nodename(id) ?? '',
      cclass,
      sid: port?.SID0 ?? null,
      cid: port?.CID0 ?? null,
      link: port?.link ?? null,
      kind,
      hardware: kind === 'qemu' ? 'qemu' : fameHardware(cclass),
      process: proc,
      connectedSince: new Date(info.since).toISOString(),
      vectors: info.vectors,
      counters: {
        messagesIn: c?.messagesIn ?? 0,
        bytesIn: c?.bytesIn ?? 0,
        messagesOut: c?.messagesOut ?? 0,
        bytesOut: c?.bytesOut ?? 0,
        doorbells: c?.doorbells ?? 0,
        drops: d?.dropped ?? 0,
        undelivered: d?.undelivered ?? 0,
        rejected: c?.rejected ?? 0,
        queued: d?.queued ?? 0,
      },
      rings: this.rings(id),
    };
  }

  private switchView(): PeerView | null {
    const f = this.fabric;
    if (!f) return null;
    const sw = f.switch;
    const a = sw.attributes();
    let messagesIn = 0;
    let bytesIn = 0;
    let messagesOut = 0;
    let bytesOut = 0;
    let doorbells = 0;
    let rejected = 0;
    for (const id of this.server.peerIds) {
      const c = f.portCounters(id);
      if (!c) continue;
      // The switch's own view: what it received is what peers sent it.
      messagesIn += c.messagesIn;
      bytesIn += c.bytesIn;
      messagesOut += c.messagesOut;
      bytesOut += c.bytesOut;
      doorbells += c.doorbells;
      rejected += c.rejected;
    }
    const s = f.stats;
    return {
      id: sw.serverId,
      nodename: f.nodename(sw.serverId) || 'Z-switch',
      cclass: a['C-Class'],
      sid: sw.config.sid,
      cid: sw.cid,
      link: 'configured',
      kind: 'switch',
      hardware: 'switch',
      process: { pid: process.pid, command: 'famez' },
      connectedSince: new Date(this.startedAt).toISOString(),
      vectors: f.vectors.length,
      counters: { messagesIn, bytesIn, messagesOut, bytesOut, doorbells, drops: s.dropped, undelivered: s.undelivered, rejected, queued: s.queued },
      rings: this.rings(sw.serverId),
    };
  }

  /** Fill levels of `id`'s rings, read from the shared memory now. A
   * peer may have written anything there: values are clamped, never
   * trusted. */
  private rings(id: number): PeerRings | null {
    const f = this.fabric;
    const layout = f?.ringLayout;
    const memory = f?.sharedBuffer;
    if (!f || !layout || !memory) return null;
    const last = f.switch.serverId;
    const r: PeerRings = { capacity: layout.capacity, inUsed: 0, inMax: 0, outUsed: 0, outMax: 0, inBytes: 0, outBytes: 0 };
    const read = (from: number, to: number): [number, number] => {
      const words = new BigUint64Array(memory, ringOffset(layout, from, to), RING_TAIL / 8 + 1);
      const head = Atomics.load(words, RING_HEAD / 8);
      const tail = Atomics.load(words, RING_TAIL / 8);
      const used = head >= tail && head - tail <= BigInt(layout.capacity) ? Number(head - tail) : layout.capacity;
      return [used, Number(head)];
    };
    for (let other = 1; other <= last; other++) {
      if (other === id) continue;
      const [inUsed, inHead] = read(other, id);
      const [outUsed, outHead] = read(id, other);
      r.inUsed += inUsed;
      r.inMax = Math.max(r.inMax, inUsed);
      r.inBytes += inHead;
      r.outUsed += outUsed;
      r.outMax = Math.max(r.outMax, outUsed);
      r.outBytes += outHead;
    }
    return r;
  }

  /** FAME-Z's shape: every connected peer and the switch as nodes, each
   * linked to the switch. A node's `id` is its nodename (D3 keys nodes by
   * it), `peerN` for a peer without one, with `#N` added to a name
   * another node already has. */
  system(): SystemView {
    const f = this.fabric;
    const views = this.peers();
    const seen = new Set<string>();
    const nodes = views.map((v) => {
      let name = v.nodename || `peer${v.id}`;
      if (seen.has(name)) name = `${name}#${v.id}`;
      seen.add(name);
      return { ivshmsg_id: v.id, id: name, cclass: v.cclass, hardware: v.hardware, group: `port_${v.id}` };
    });
    const switchNode = f ? nodes.find((n) => n.ivshmsg_id === f.switch.serverId) : undefined;
    const links = switchNode ? nodes.filter((n) => n !== switchNode).map((n) => ({ source: n.id, target: switchNode.id })) : [];
    const view: SystemView = {
      nClients: f ? f.switch.config.nClients : this.server.config.maxPeers,
      server_ivshmsg_id: f ? f.switch.serverId : null,
      nodes,
      links,
    };
    const l = this.links;
    if (f && l) {
      const routes = new Map(l.routes().map((r) => [r.sid, r]));
      view.sid = f.switch.config.sid;
      view.switchLinks = l.links();
      view.remoteNodes = l.remoteNodes().map((n) => ({ gcid: `${n.sid}:${n.cid}`, sid: n.sid, cid: n.cid, nodename: n.nodename, cclass: n.cclass, hops: n.hops, via: routes.get(n.sid)?.via ?? null }));
      if (l.config.listen?.length || l.config.connect?.length) view.fm = l.managerStatus();
    }
    return view;
  }
}
