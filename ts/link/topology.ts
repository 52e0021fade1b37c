// Who is where across switches, and which link leads there (docs/multi-host.md,
// "Addressing and routing"). Link state, as IS-IS and OSPF do it, small:
// every switch describes itself in one advertisement (its SID, its
// neighbouring SIDs, its peers: CID, nodename, C-Class), numbered by
// (instance, seq) so that a newer one replaces an older one; each switch
// floods every advertisement it has not seen to its other links, so all of
// them hold the same set; each computes shortest paths over it (breadth
// first, ties to the lower SID) and sends traffic for a SID to the
// neighbour on its path. Identical sets and one tie rule give every switch
// the same tree, so routes have no loops once the advertisements have
// spread (a line, a ring, any graph). A neighbour counts only when both
// sides name each other.
//
// Pure: fed link ups and downs, its own peers and the advertisements that
// arrive (bytes, with the link and the neighbour's SID), it says what to
// send on which link (pollSend) and answers route and node queries. No I/O.
import { FamezError } from '../errors.js';

export type TopologyErrorCode = 'EDECODE' | 'ESID' | 'ELIMIT';

export class TopologyError extends FamezError<TopologyErrorCode> {
  override name = 'TopologyError';
}

export interface NodeEntry {
  /** Its CID in its subnet (12 bits; FAME-Z gives peer N the CID N x 100). */
  cid: number;
  nodename: string;
  cclass: string;
}

/** A switch's part in managing the fabric (ts/link/manager.ts): its
 * role, its CID, and the epoch of its claim to be the manager in charge (0:
 * it claims nothing). */
export interface FmAdvert {
  role: FmRole;
  cid: number;
  epoch: number;
}

export type FmRole = 'primary' | 'secondary' | 'none';
const FM_ROLES: readonly FmRole[] = ['none', 'primary', 'secondary'];

/** One switch's advertisement of itself. */
export interface Advert {
  sid: number;
  /** The switch's incarnation: a later start has a larger one. */
  instance: number;
  /** Counts up with each change within an instance. */
  seq: number;
  /** SIDs of the switches it has an up link to, ascending. */
  neighbours: number[];
  /** Its peers (the switch itself among them), by ascending CID. */
  nodes: NodeEntry[];
  /** Its fabric-manager role and claim (default: none, CID 0, epoch 0). */
  fm?: FmAdvert;
}

const TYPE_ADVERT = 1;
const VERSION = 2;
const HEADER = 24;
const NO_FM: FmAdvert = { role: 'none', cid: 0, epoch: 0 };
const MAX_TEXT = 64;
/** An advertisement names at most this many neighbours and nodes. */
export const MAX_NEIGHBOURS = 256;
export const MAX_NODES = 4096;
const UTF8 = new TextEncoder();
const FROM_UTF8 = new TextDecoder('utf-8', { fatal: true });

function text(s: string, what: string): Uint8Array {
  const b = UTF8.encode(s);
  if (b.length > MAX_TEXT) throw new TopologyError('ELIMIT', `${what} ${JSON.stringify(s)} is over ${MAX_TEXT} bytes`);
  return b;
}

export function encodeAdvert(a: Advert): Uint8Array {
  const check = (v: number, max: number, what: string) => {
    if (!Number.isInteger(v) || v < 0 || v > max) throw new TopologyError('ELIMIT', `${what} ${String(v)} is not in 0..${max}`);
  };
  check(a.sid, 0xffff, 'SID');
  check(a.instance, 0xffff_ffff, 'instance');
  check(a.seq, 0xffff_ffff, 'seq');
  if (a.neighbours.length > MAX_NEIGHBOURS || a.nodes.length > MAX_NODES) throw new TopologyError('ELIMIT', `too many neighbours or nodes`);
  const texts = a.nodes.map((n) => {
    check(n.cid, 0xfff, 'CID');
    return [text(n.nodename, 'nodename'), text(n.cclass, 'C-Class')];
  });
  const fm = a.fm ?? NO_FM;
  check(fm.cid, 0xfff, 'fabric manager CID');
  check(fm.epoch, 0xffff_ffff, 'fabric manager epoch');
  if (!FM_ROLES.includes(fm.role)) throw new TopologyError('ELIMIT', `fabric manager role ${String(fm.role)} is not one of ${FM_ROLES.join(', ')}`);
  const size = HEADER + 2 * a.neighbours.length + texts.reduce((s, [n, c]) => s + 4 + n.length + c.length, 0);
  const out = new Uint8Array(size);
  const v = new DataView(out.buffer);
  v.setUint8(0, TYPE_ADVERT);
  v.setUint8(1, VERSION);
  v.setUint16(2, a.sid, true);
  v.setUint32(4, a.instance, true);
  v.setUint32(8, a.seq, true);
  v.setUint16(12, a.neighbours.length, true);
  v.setUint16(14, a.nodes.length, true);
  v.setUint8(16, FM_ROLES.indexOf(fm.role));
  v.setUint16(18, fm.cid, true);
  v.setUint32(20, fm.epoch, true);
  let at = HEADER;
  for (const n of a.neighbours) {
    check(n, 0xffff, 'neighbour SID');
    v.setUint16(at, n, true);
    at += 2;
  }
  a.nodes.forEach((n, i) => {
    const [name, cclass] = texts[i];
    v.setUint16(at, n.cid, true);
    v.setUint8(at + 2, name.length);
    v.setUint8(at + 3, cclass.length);
    out.set(name, at + 4);
    out.set(cclass, at + 4 + name.length);
    at += 4 + name.length + cclass.length;
  });
  return out;
}

/** Decodes and checks an advertisement: neighbours strictly ascending and
 * not the sender, CIDs strictly ascending, text UTF-8, nothing left over. */
export function decodeAdvert(bytes: Uint8Array): Advert {
  const bad = (why: string): never => {
    throw new TopologyError('EDECODE', `bad advertisement: ${why}`);
  };
  if (bytes.length < HEADER) bad(`${bytes.length} bytes`);
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
  if (v.getUint8(0) !== TYPE_ADVERT) bad(`type ${v.getUint8(0)}`);
  if (v.getUint8(1) !== VERSION) bad(`version ${v.getUint8(1)}`);
  const sid = v.getUint16(2, true);
  const nNeighbours = v.getUint16(12, true);
  const nNodes = v.getUint16(14, true);
  if (nNeighbours > MAX_NEIGHBOURS || nNodes > MAX_NODES) bad(`${nNeighbours} neighbours, ${nNodes} nodes`);
  const role = FM_ROLES[v.getUint8(16)];
  if (role === undefined) bad(`fabric manager role ${v.getUint8(16)}`);
  if (v.getUint8(17) !== 0) bad('a reserved byte is not zero');
  const fm: FmAdvert = { role: role!, cid: v.getUint16(18, true), epoch: v.getUint32(20, true) };
  if (fm.cid > 0xfff) bad(`fabric manager CID ${fm.cid} over 12 bits`);
  let at = HEADER;
  const neighbours: number[] = [];
  if (at + 2 * nNeighbours > bytes.length) bad('truncated');
  for (let i = 0; i < nNeighbours; i++, at += 2) {
    const n = v.getUint16(at, true);
    if (n === sid || (i > 0 && n <= neighbours[i - 1])) bad(`neighbour ${n} out of order or itself`);
    neighbours.push(n);
  }
  const nodes: NodeEntry[] = [];
  for (let i = 0; i < nNodes; i++) {
    if (at + 4 > bytes.length) bad('truncated');
    const cid = v.getUint16(at, true);
    const nl = v.getUint8(at + 2);
    const cl = v.getUint8(at + 3);
    if (cid > 0xfff || (i > 0 && cid <= nodes[i - 1].cid)) bad(`CID ${cid} out of order or over 12 bits`);
    if (nl > MAX_TEXT || cl > MAX_TEXT || at + 4 + nl + cl > bytes.length) bad('truncated text');
    let nodename = '';
    let cclass = '';
    try {
      nodename = FROM_UTF8.decode(bytes.subarray(at + 4, at + 4 + nl));
      cclass = FROM_UTF8.decode(bytes.subarray(at + 4 + nl, at + 4 + nl + cl));
    } catch {
      bad('text not UTF-8');
    }
    nodes.push({ cid, nodename, cclass });
    at += 4 + nl + cl;
  }
  if (at !== bytes.length) bad(`${bytes.length - at} bytes left over`);
  return { sid, instance: v.getUint32(4, true), seq: v.getUint32(8, true), neighbours, nodes, fm };
}

/** Bytes in a total order: -1, 0 or 1. */
function compareBytes(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return a[i]! < b[i]! ? -1 : 1;
  return a.length === b.length ? 0 : a.length < b.length ? -1 : 1;
}

/** How many times a switch goes past another advert of its own SID with its
 * own instance and number (a run of its own in the same second) before it
 * takes it for another switch with its SID and stops. */
const MAX_PASSES = 8;

/** Whether `a` is newer than `b`: a later instance, or the same and a later seq. */
export function newer(a: Advert, b: Advert): boolean {
  return a.instance !== b.instance ? a.instance > b.instance : a.seq > b.seq;
}

export interface Route {
  sid: number;
  /** The neighbour on the way (the first hop). */
  via: number;
  hops: number;
}

export interface RemoteNode extends NodeEntry {
  sid: number;
  /** SID << 12 | CID. */
  gcid: number;
  hops: number;
}

export interface TopologyEvent {
  kind: 'conflict';
  link: string;
  text: string;
}

export interface TopologyConfig {
  sid: number;
  instance: number;
  /** Advertisements kept at most (switches in the fabric; default 1024). */
  maxSwitches?: number;
}

interface LinkState {
  neighbour: number | null;
}

export class Topology {
  readonly sid: number;
  private readonly instance: number;
  private seq = 0;
  private nodes: NodeEntry[] = [];
  private fm: FmAdvert = NO_FM;
  /** Times this switch went past an advert of its SID that was its number but not its content. */
  private passes = 0;
  private readonly adverts = new Map<number, Advert>();
  private readonly encoded = new Map<number, Uint8Array>();
  private readonly links = new Map<string, LinkState>();
  private readonly outbox: Array<{ link: string; bytes: Uint8Array }> = [];
  private readonly events: TopologyEvent[] = [];
  private readonly maxSwitches: number;
  private routing: Map<number, Route> | null = null;
  /** Advertisements refused (bad bytes, over the limit). */
  refused = 0;

  constructor(config: TopologyConfig) {
    this.sid = config.sid;
    this.instance = config.instance;
    this.maxSwitches = config.maxSwitches ?? 1024;
    this.originate();
  }

  /** The switch's own peers changed (the switch itself among them). */
  setNodes(nodes: readonly NodeEntry[]): void {
    const sorted = [...nodes].sort((a, b) => a.cid - b.cid);
    if (JSON.stringify(sorted) === JSON.stringify(this.nodes)) return;
    this.nodes = sorted;
    this.originate();
  }

  /** The switch's own fabric-manager role and claim changed. */
  setManager(fm: FmAdvert): void {
    if (fm.role === this.fm.role && fm.cid === this.fm.cid && fm.epoch === this.fm.epoch) return;
    this.fm = { ...fm };
    this.originate();
  }

  /** The fabric-manager part of every switch routes reach, and this one's. */
  managers(): Array<FmAdvert & { sid: number }> {
    const out = [{ sid: this.sid, ...this.fm }];
    for (const sid of this.routes().keys()) {
      const fm = this.adverts.get(sid)?.fm;
      if (fm) out.push({ sid, ...fm });
    }
    return out.sort((a, b) => a.sid - b.sid);
  }

  /** A link came up; its neighbour is known once something arrives on it. */
  linkUp(link: string): void {
    this.links.set(link, { neighbour: null });
    // Everything known goes to the new neighbour, own advertisement first.
    this.queue(link, this.sid);
    for (const sid of this.adverts.keys()) if (sid !== this.sid) this.queue(link, sid);
  }

  linkDown(link: string): void {
    const l = this.links.get(link);
    if (!l) return;
    this.links.delete(link);
    for (let i = this.outbox.length - 1; i >= 0; i--) if (this.outbox[i].link === link) this.outbox.splice(i, 1);
    if (l.neighbour !== null) this.originateIfChanged();
  }

  /** An advertisement arrived on `link` from the switch `from` (the SID of
   * its control stream's source). */
  receive(link: string, from: number, bytes: Uint8Array): void {
    const l = this.links.get(link);
    if (!l) return;
    if (from === this.sid) {
      this.events.push({ kind: 'conflict', link, text: `the switch at the other end of link ${link} has this switch's SID ${this.sid}; the link carries nothing until one of them changes its --sid` });
      return;
    }
    if (l.neighbour === null) {
      l.neighbour = from;
      this.originateIfChanged();
    } else if (l.neighbour !== from) {
      this.events.push({ kind: 'conflict', link, text: `link ${link} led to SID ${l.neighbour} and now to ${from}` });
      l.neighbour = from;
      this.originateIfChanged();
    }
    let a: Advert;
    try {
      a = decodeAdvert(bytes);
    } catch {
      this.refused++;
      return;
    }
    if (a.sid === this.sid) {
      // Ours, from an earlier run with the same instance (a restart within
      // the same second), or another switch with this SID: ahead of ours,
      // or as far but not what we say now — ours goes past it.
      const same = a.instance === this.instance && a.seq === this.seq && compareBytes(bytes, this.encoded.get(this.sid)!) !== 0;
      if (a.instance === this.instance && (a.seq > this.seq || (same && this.passes < MAX_PASSES))) {
        if (same) this.passes++;
        this.seq = a.seq;
        this.originate();
      }
      return;
    }
    const have = this.adverts.get(a.sid);
    if (have && !newer(a, have)) {
      // The sender is behind: it gets ours. Or it has another advert of the
      // same number (its switch restarted within its instance's second):
      // the greater bytes win everywhere (no two switches trade them
      // forever), and the switch itself, hearing of the other, goes past both.
      const order = newer(have, a) ? 1 : compareBytes(this.encoded.get(a.sid)!, bytes);
      if (order > 0) {
        this.queue(link, a.sid);
        return;
      }
      if (order === 0 || newer(have, a)) return;
    }
    if (!have && this.adverts.size >= this.maxSwitches) {
      this.refused++;
      return;
    }
    this.adverts.set(a.sid, a);
    this.encoded.set(a.sid, bytes.slice());
    this.routing = null;
    for (const other of this.links.keys()) if (other !== link) this.queue(other, a.sid);
  }

  /** The next advertisement to send, and on which link. */
  pollSend(): { link: string; bytes: Uint8Array } | null {
    return this.outbox.shift() ?? null;
  }

  pollEvent(): TopologyEvent | null {
    return this.events.shift() ?? null;
  }

  /** The neighbour at the other end of `link`, once known. */
  neighbour(link: string): number | null {
    return this.links.get(link)?.neighbour ?? null;
  }

  /** The links that lead to `sid` (its path's first hop), in name order; [] when unreachable. */
  linksTo(sid: number): string[] {
    const r = this.routes().get(sid);
    if (!r) return [];
    return [...this.links].filter(([, s]) => s.neighbour === r.via).map(([name]) => name).sort();
  }

  /** Shortest paths to every reachable SID but this one. */
  routes(): Map<number, Route> {
    if (this.routing) return this.routing;
    const routes = new Map<number, Route>();
    const adjacent = (a: number, b: number) => this.adverts.get(b)?.neighbours.includes(a) ?? false;
    let frontier: Route[] = [...this.ownNeighbours()].sort((a, b) => a - b).filter((n) => adjacent(this.sid, n)).map((n) => ({ sid: n, via: n, hops: 1 }));
    for (const r of frontier) routes.set(r.sid, r);
    while (frontier.length) {
      const next: Route[] = [];
      for (const r of frontier) {
        for (const n of this.adverts.get(r.sid)?.neighbours ?? []) {
          if (n === this.sid || routes.has(n) || !adjacent(r.sid, n)) continue;
          const route = { sid: n, via: r.via, hops: r.hops + 1 };
          routes.set(n, route);
          next.push(route);
        }
      }
      frontier = next.sort((a, b) => a.sid - b.sid);
    }
    this.routing = routes;
    return routes;
  }

  /** Every node of every reachable switch, by GCID. */
  remoteNodes(): RemoteNode[] {
    const out: RemoteNode[] = [];
    for (const [sid, r] of [...this.routes()].sort((a, b) => a[0] - b[0])) {
      for (const n of this.adverts.get(sid)?.nodes ?? []) out.push({ ...n, sid, gcid: sid * 0x1000 + n.cid, hops: r.hops });
    }
    return out;
  }

  /** The newest advertisement of `sid` this switch holds. */
  advert(sid: number): Advert | null {
    return this.adverts.get(sid) ?? null;
  }

  /** The switch's own advertisement as it stands. */
  get own(): Advert {
    return this.adverts.get(this.sid)!;
  }

  private ownNeighbours(): Set<number> {
    const s = new Set<number>();
    for (const l of this.links.values()) if (l.neighbour !== null) s.add(l.neighbour);
    return s;
  }

  private originateIfChanged(): void {
    const now = [...this.ownNeighbours()].sort((a, b) => a - b);
    if (JSON.stringify(now) !== JSON.stringify(this.adverts.get(this.sid)?.neighbours)) this.originate();
  }

  private originate(): void {
    const a: Advert = { sid: this.sid, instance: this.instance, seq: ++this.seq, neighbours: [...this.ownNeighbours()].sort((x, y) => x - y), nodes: this.nodes, fm: this.fm };
    this.adverts.set(this.sid, a);
    this.encoded.set(this.sid, encodeAdvert(a));
    this.routing = null;
    for (const link of this.links.keys()) this.queue(link, this.sid);
  }

  /** Queues `sid`'s advertisement for `link`, replacing an older one still queued. */
  private queue(link: string, sid: number): void {
    const bytes = this.encoded.get(sid)!;
    for (let i = 0; i < this.outbox.length; i++) {
      const o = this.outbox[i];
      if (o.link === link && o.bytes[2] === bytes[2] && o.bytes[3] === bytes[3]) {
        this.outbox[i] = { link, bytes };
        return;
      }
    }
    this.outbox.push({ link, bytes });
  }
}
