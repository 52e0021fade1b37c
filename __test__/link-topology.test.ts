// Routing by SID (ts/link/topology.ts): switches joined by simulated links
// (each a reliable in-order pipe, as the link's streams make it), their
// advertisements flooded, routes computed. A line and a ring of three by
// hand, then fast-check: any graph of up to 6 switches, links going up and
// down in any order; once quiet, every switch reaches exactly its connected
// component, every route followed hop by hop arrives without a loop, and
// every switch lists every reachable peer.
import test from 'ava';
import fc from 'fast-check';

import { Topology, TopologyError, decodeAdvert, encodeAdvert, type Advert } from '../ts/link/topology.js';

class Net {
  readonly tops = new Map<number, Topology>();
  /** Up links by name: [sidA, sidB]. */
  readonly up = new Map<string, [number, number]>();

  add(sid: number, instance = 1): Topology {
    const t = new Topology({ sid, instance });
    t.setNodes([{ cid: 100, nodename: `peer-of-${sid}`, cclass: 'Driverless QEMU' }, { cid: 1500, nodename: 'Z-switch', cclass: 'FabricSwitch' }]);
    this.tops.set(sid, t);
    return t;
  }

  /** Both ends' names of a link: `${name}@${sid}`. */
  connect(name: string, a: number, b: number): void {
    this.up.set(name, [a, b]);
    this.tops.get(a)!.linkUp(name);
    this.tops.get(b)!.linkUp(name);
  }

  cut(name: string): void {
    const ends = this.up.get(name);
    if (!ends) return;
    this.up.delete(name);
    for (const s of ends) this.tops.get(s)!.linkDown(name);
  }

  /** Delivers everything queued until nothing moves; returns the messages moved. */
  settle(limit = 100_000): number {
    let moved = 0;
    for (let busy = true; busy; ) {
      busy = false;
      for (const [sid, t] of this.tops) {
        for (let m = t.pollSend(); m; m = t.pollSend()) {
          const ends = this.up.get(m.link);
          if (!ends) continue;
          const other = ends[0] === sid ? ends[1] : ends[0];
          this.tops.get(other)!.receive(m.link, sid, m.bytes);
          busy = true;
          if (++moved > limit) throw new Error('no quiet after 100,000 messages');
        }
      }
    }
    return moved;
  }

  /** Follows next hops from `from` to `to`: the path of SIDs, or null. */
  path(from: number, to: number): number[] | null {
    const path = [from];
    let at = from;
    while (at !== to) {
      const links = this.tops.get(at)!.linksTo(to);
      if (!links.length) return null;
      const [a, b] = this.up.get(links[0])!;
      at = a === at ? b : a;
      if (path.includes(at)) throw new Error(`loop: ${[...path, at].join(' -> ')}`);
      path.push(at);
    }
    return path;
  }
}

function component(net: Net, from: number): Set<number> {
  const seen = new Set([from]);
  for (let grew = true; grew; ) {
    grew = false;
    for (const [a, b] of net.up.values()) {
      if (seen.has(a) !== seen.has(b)) {
        seen.add(a);
        seen.add(b);
        grew = true;
      }
    }
  }
  return seen;
}

test('a line of three: the ends route through the middle and see each other\'s peers', (t) => {
  const net = new Net();
  const [a, b, c] = [net.add(1), net.add(2), net.add(3)];
  net.connect('ab', 1, 2);
  net.connect('bc', 2, 3);
  net.settle();
  t.deepEqual(net.path(1, 3), [1, 2, 3]);
  t.deepEqual(net.path(3, 1), [3, 2, 1]);
  t.deepEqual(a.routes().get(3), { sid: 3, via: 2, hops: 2 });
  t.deepEqual(b.linksTo(1), ['ab']);
  t.deepEqual(
    a.remoteNodes().map((n) => [n.gcid.toString(16), n.nodename, n.hops]),
    [['2064', 'peer-of-2', 1], ['25dc', 'Z-switch', 1], ['3064', 'peer-of-3', 2], ['35dc', 'Z-switch', 2]],
  );
  t.deepEqual(c.own.neighbours, [2]);
  // The middle goes: the ends lose each other.
  net.cut('bc');
  net.settle();
  t.is(net.path(1, 3), null);
  t.deepEqual(a.remoteNodes().map((n) => n.sid), [2, 2]);
  t.deepEqual(c.remoteNodes(), []);
});

test('a ring of three routes the short way, and around when a link is cut', (t) => {
  const net = new Net();
  for (const s of [1, 2, 3]) net.add(s);
  net.connect('ab', 1, 2);
  net.connect('bc', 2, 3);
  net.connect('ca', 3, 1);
  net.settle();
  t.deepEqual(net.path(1, 3), [1, 3]);
  t.deepEqual(net.path(2, 1), [2, 1]);
  net.cut('ca');
  net.settle();
  t.deepEqual(net.path(1, 3), [1, 2, 3]);
  net.connect('ca2', 3, 1);
  net.settle();
  t.deepEqual(net.path(1, 3), [1, 3]);
});

test('two links to one neighbour: both lead there; one cut leaves the other', (t) => {
  const net = new Net();
  const a = net.add(1);
  net.add(2);
  net.connect('x', 1, 2);
  net.connect('y', 1, 2);
  net.settle();
  t.deepEqual(a.linksTo(2), ['x', 'y']);
  net.cut('x');
  net.settle();
  t.deepEqual(a.linksTo(2), ['y']);
});

test('a peer joining on one switch is seen on the others', (t) => {
  const net = new Net();
  const a = net.add(1);
  const c = net.add(3);
  net.add(2);
  net.connect('ab', 1, 2);
  net.connect('bc', 2, 3);
  net.settle();
  a.setNodes([{ cid: 100, nodename: 'peer-of-1', cclass: 'Driverless QEMU' }, { cid: 200, nodename: 'newcomer', cclass: 'Driverless QEMU' }]);
  net.settle();
  t.true(c.remoteNodes().some((n) => n.gcid === 0x10c8 && n.nodename === 'newcomer'));
  t.false(c.remoteNodes().some((n) => n.nodename === 'Z-switch' && n.sid === 1), 'the old list is replaced');
});

test('a restarted switch (a larger instance) replaces what the others knew of it', (t) => {
  const net = new Net();
  const a = net.add(1);
  net.add(2, 1);
  net.connect('ab', 1, 2);
  net.settle();
  net.cut('ab');
  const b2 = new Topology({ sid: 2, instance: 2 });
  b2.setNodes([{ cid: 300, nodename: 'after-restart', cclass: 'Driverless QEMU' }]);
  net.tops.set(2, b2);
  net.connect('ab2', 1, 2);
  net.settle();
  t.deepEqual(a.remoteNodes().map((n) => n.nodename), ['after-restart']);
  // One restarted within the same instance number (the same second): its
  // old advertisement's larger seq makes it count past it.
  const b3 = new Topology({ sid: 2, instance: 2 });
  const known = a.advert(2)!.seq;
  net.cut('ab2');
  net.tops.set(2, b3);
  net.connect('ab3', 1, 2);
  net.settle();
  t.true(b3.own.seq > known);
  t.is(a.advert(2)!.seq, b3.own.seq);
  t.deepEqual(a.remoteNodes(), []);
  t.deepEqual(a.routes().get(2)?.hops, 1);
});

test('a switch restarted within the same second that reaches the same seq before its neighbour hears it (another advert of the same number): it is believed, on both sides of a line, and nothing trades them forever', (t) => {
  const net = new Net();
  const a = net.add(1);
  const b = net.add(2, 5);
  net.add(3);
  net.connect('ab', 1, 2);
  net.connect('ac', 1, 3);
  net.settle();
  const seq = b.own.seq;
  net.cut('ab');
  net.settle();
  // The new run of SID 2: the same instance, its peers changed as often as
  // the old one's; learning its neighbour on the new link brings it to the
  // same seq as the advert the others hold, with other peers.
  const again = new Topology({ sid: 2, instance: 5 });
  while (again.own.seq < seq - 1) again.setNodes([{ cid: 100 + again.own.seq * 100, nodename: `run2-${again.own.seq}`, cclass: 'Driverless QEMU' }]);
  t.is(again.own.seq, seq - 1);
  net.tops.set(2, again);
  net.connect('ab2', 1, 2);
  const moved = net.settle();
  t.true(moved < 100, `${moved} messages to settle`);
  const name = again.own.nodes[0]!.nodename;
  for (const sid of [1, 3]) t.deepEqual(net.tops.get(sid)!.remoteNodes().filter((n) => n.sid === 2).map((n) => n.nodename), [name], `SID ${sid} believes the new run`);
  t.true(again.own.seq > seq);
  t.is(a.advert(2)!.seq, again.own.seq);
});

test('a neighbour with this switch\'s own SID is a conflict, and carries nothing', (t) => {
  const net = new Net();
  const a = net.add(1);
  const twin = new Topology({ sid: 1, instance: 9 });
  a.linkUp('l');
  twin.linkUp('l');
  for (let m = twin.pollSend(); m; m = twin.pollSend()) a.receive('l', 1, m.bytes);
  t.deepEqual(a.pollEvent()?.kind, 'conflict');
  t.is(a.routes().size, 0);
  t.is(a.neighbour('l'), null);
});

test('advertisements round-trip, and the decoder refuses every malformed one with TopologyError', (t) => {
  const advert = fc.record({
    sid: fc.integer({ min: 0, max: 0xffff }),
    instance: fc.nat(),
    seq: fc.nat(),
    neighbours: fc.uniqueArray(fc.integer({ min: 0, max: 0xffff }), { maxLength: 8 }),
    nodes: fc.uniqueArray(fc.record({ cid: fc.integer({ min: 0, max: 0xfff }), nodename: fc.string({ maxLength: 20 }), cclass: fc.string({ maxLength: 20 }) }), { selector: (n) => n.cid, maxLength: 8 }),
    fm: fc.record({ role: fc.constantFrom('none' as const, 'primary' as const, 'secondary' as const), cid: fc.integer({ min: 0, max: 0xfff }), epoch: fc.nat() }),
  }).map((a): Advert => ({ ...a, neighbours: a.neighbours.filter((n) => n !== a.sid).sort((x, y) => x - y), nodes: a.nodes.sort((x, y) => x.cid - y.cid) }));
  fc.assert(
    fc.property(advert, fc.nat(), fc.nat(255), (a, i, b) => {
      const bytes = encodeAdvert(a);
      t.deepEqual(decodeAdvert(bytes), a);
      const bad = bytes.slice();
      bad[i % bad.length] = b;
      try {
        const d = decodeAdvert(bad);
        t.deepEqual(encodeAdvert(d), bad, 'whatever decodes re-encodes to the same bytes');
      } catch (e) {
        if (!(e instanceof TopologyError)) throw e;
      }
      for (const cut of [0, 15, bytes.length - 1]) if (cut < bytes.length) t.throws(() => decodeAdvert(bytes.subarray(0, cut)), { instanceOf: TopologyError });
    }),
    { numRuns: 300 },
  );
  t.throws(() => encodeAdvert({ sid: 1, instance: 1, seq: 1, neighbours: [], nodes: [{ cid: 1, nodename: 'x'.repeat(65), cclass: '' }] }), { instanceOf: TopologyError, code: 'ELIMIT' });
});

test('any graph, links up and down in any order: once quiet, routes reach exactly the component, without loops', (t) => {
  const ops = fc.array(fc.oneof(fc.tuple(fc.constant('up' as const), fc.nat(5), fc.nat(5)), fc.tuple(fc.constant('down' as const), fc.nat(20), fc.constant(0))), { maxLength: 30 });
  fc.assert(
    fc.property(fc.integer({ min: 2, max: 6 }), ops, fc.boolean(), (n, steps, settleEach) => {
      const net = new Net();
      for (let s = 1; s <= n; s++) net.add(s * 10);
      let made = 0;
      for (const [op, x, y] of steps) {
        if (op === 'up') {
          const a = ((x % n) + 1) * 10;
          const b = ((y % n) + 1) * 10;
          if (a !== b) net.connect(`l${made++}`, a, b);
        } else {
          const names = [...net.up.keys()];
          if (names.length) net.cut(names[x % names.length]);
        }
        if (settleEach) net.settle();
      }
      net.settle();
      for (const from of net.tops.keys()) {
        const comp = component(net, from);
        const top = net.tops.get(from)!;
        t.deepEqual([...top.routes().keys()].sort((a, b) => a - b), [...comp].filter((s) => s !== from).sort((a, b) => a - b));
        for (const to of net.tops.keys()) {
          if (to === from) continue;
          const p = net.path(from, to);
          if (comp.has(to)) t.truthy(p, `${from} reaches ${to}`);
          else t.is(p, null);
          if (p) t.is(p.length - 1, top.routes().get(to)!.hops, 'the path is as long as the route says');
        }
        t.is(top.remoteNodes().length, 2 * (comp.size - 1));
      }
    }),
    { numRuns: 300 },
  );
});
