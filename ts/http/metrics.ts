// GET /metrics: Prometheus's text format through prom-client, in a
// registry of its own (never the global one: a program embedding famez
// keeps its metrics apart). Every famez metric is read from the Monitor at
// scrape time; Node's own (event-loop lag among them) are prom-client's
// defaults.
import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';

import type { Monitor, PeerView } from '../observe/monitor.js';

export interface Metrics {
  contentType: string;
  text(): Promise<string>;
}

type PeerLabels = 'peer' | 'nodename';

export function createMetrics(monitor: Monitor, version: string): Metrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, eventLoopMonitoringPrecision: 10 });
  // One snapshot of the peers per scrape, shared by every collect().
  let snapshot: PeerView[] | null = null;
  const peers = (): PeerView[] => (snapshot ??= monitor.peers().filter((p) => p.kind !== 'switch'));
  const labels = (p: PeerView) => ({ peer: String(p.id), nodename: p.nodename });

  const perPeer = (name: string, help: string, value: (p: PeerView) => number, extra?: { label: string; values: Array<[string, (p: PeerView) => number]> }) => {
    const labelNames: string[] = ['peer', 'nodename', ...(extra ? [extra.label] : [])];
    new Counter({
      name,
      help,
      labelNames,
      registers: [registry],
      collect() {
        this.reset();
        for (const p of peers()) {
          if (extra) for (const [v, f] of extra.values) this.inc({ ...labels(p), [extra.label]: v }, f(p));
          else this.inc(labels(p), value(p));
        }
      },
    });
  };

  new Gauge({
    name: 'famez_info',
    help: 'famez version and mode (always 1)',
    labelNames: ['version', 'fabric'],
    registers: [registry],
    collect() {
      this.reset();
      this.set({ version, fabric: String(monitor.fabric !== null) }, 1);
    },
  });
  new Gauge({
    name: 'famez_peers',
    help: 'Peers connected now (the switch not counted)',
    registers: [registry],
    collect() {
      this.set(monitor.server.peerIds.length);
    },
  });
  new Counter({
    name: 'famez_connects_total',
    help: 'Peers that connected and were given an ID',
    registers: [registry],
    collect() {
      this.reset();
      this.inc(monitor.totals.connects);
    },
  });
  new Counter({
    name: 'famez_disconnects_total',
    help: 'Peers that left or were disconnected, by reason (disconnected, protocol, slow, shutdown, other)',
    labelNames: ['reason'],
    registers: [registry],
    collect() {
      this.reset();
      for (const [reason, n] of Object.entries(monitor.totals.disconnectsBy)) this.inc({ reason }, n);
    },
  });
  new Counter({
    name: 'famez_refusals_total',
    help: 'Connections refused (full, out of IDs or fds)',
    registers: [registry],
    collect() {
      this.reset();
      this.inc(monitor.totals.refusals);
    },
  });

  perPeer('famez_peer_messages_total', 'Messages between a peer and the switch, by direction (in: to the switch)', () => 0, {
    label: 'direction',
    values: [
      ['in', (p) => p.counters.messagesIn],
      ['out', (p) => p.counters.messagesOut],
    ],
  });
  perPeer('famez_peer_bytes_total', 'Message bytes between a peer and the switch, by direction', () => 0, {
    label: 'direction',
    values: [
      ['in', (p) => p.counters.bytesIn],
      ['out', (p) => p.counters.bytesOut],
    ],
  });
  perPeer('famez_peer_ring_bytes_total', "Bytes written into a peer's ring channels (in) and by it into others' (out): peer-to-peer traffic the switch does not see", () => 0, {
    label: 'direction',
    values: [
      ['in', (p) => p.rings?.inBytes ?? 0],
      ['out', (p) => p.rings?.outBytes ?? 0],
    ],
  });
  perPeer('famez_peer_doorbells_total', 'Times a peer rang the switch', (p) => p.counters.doorbells);
  perPeer('famez_peer_drops_total', "The switch's messages to a peer lost to its full queue", (p) => p.counters.drops);
  perPeer('famez_peer_undelivered_total', "The switch's messages to a peer withdrawn untaken", (p) => p.counters.undelivered);
  perPeer('famez_peer_rejected_total', "A peer's messages the switch could not parse", (p) => p.counters.rejected);

  const gauge = (name: string, help: string, labelNames: string[], fill: (g: Gauge<string>) => void) =>
    new Gauge({
      name,
      help,
      labelNames,
      registers: [registry],
      collect() {
        this.reset();
        fill(this);
      },
    });
  gauge('famez_switch_queue_depth', "The switch's messages waiting for a peer", ['peer', 'nodename'] satisfies PeerLabels[], (g) => {
    for (const p of peers()) g.set(labels(p), p.counters.queued);
  });
  gauge('famez_ring_used_bytes', "Bytes waiting in a peer's ring channels: into it (in) or out of it (out)", ['peer', 'nodename', 'direction'], (g) => {
    for (const p of peers()) {
      if (!p.rings) continue;
      g.set({ ...labels(p), direction: 'in' }, p.rings.inUsed);
      g.set({ ...labels(p), direction: 'out' }, p.rings.outUsed);
    }
  });
  gauge('famez_ring_max_used_bytes', "The fullest of a peer's ring channels, by direction", ['peer', 'nodename', 'direction'], (g) => {
    for (const p of peers()) {
      if (!p.rings) continue;
      g.set({ ...labels(p), direction: 'in' }, p.rings.inMax);
      g.set({ ...labels(p), direction: 'out' }, p.rings.outMax);
    }
  });
  gauge('famez_ring_capacity_bytes', 'Bytes per ring channel (0: no rings)', [], (g) => {
    g.set(monitor.fabric?.ringLayout?.capacity ?? 0);
  });
  new Counter({
    name: 'famez_switch_dropped_total',
    help: "The switch's messages lost to full per-peer queues, all peers since start",
    registers: [registry],
    collect() {
      this.reset();
      this.inc(monitor.fabric?.stats.dropped ?? 0);
    },
  });
  new Counter({
    name: 'famez_switch_undelivered_total',
    help: "The switch's messages withdrawn untaken, all peers since start",
    registers: [registry],
    collect() {
      this.reset();
      this.inc(monitor.fabric?.stats.undelivered ?? 0);
    },
  });

  return {
    contentType: registry.contentType,
    async text() {
      snapshot = null;
      try {
        return await registry.metrics();
      } finally {
        snapshot = null;
      }
    },
  };
}
