// The live web view `famez serve` serves at / (docs/http-api.md): the
// switch and its ports as a graph, per-port counters, ring and shared
// memory fill, and the event log. It reads GET /api/v1/peers every second
// (and soon after every event) and GET /api/v1/events as Server-Sent
// Events. Plain DOM and cytoscape, bundled by scripts/build-web.mjs;
// nothing is fetched from anywhere but the server that served it.
import cytoscape from 'cytoscape';

import { RING_HEADER, SLOT_SIZE } from '../ts/layout.generated.js';
import { describeEvent, fillPercent, formatAddress, formatBytes, formatClock, formatCount, formatDuration, peerCategory, Nodenames, type PeerCategory } from '../ts/observe/format.js';
import type { ApiEvent, ApiPeer, ApiPeers } from './api.js';

const POLL_MS = 1000;
/** Soonest a second refresh after an event may follow the last one. */
const EVENT_REFRESH_MS = 150;
const MAX_LOG = 400;
const ENTER_MS = 450;
const LEAVE_MS = 600;
const EVENT_TYPES = ['join', 'leave', 'refuse', 'link', 'message', 'drop', 'undelivered', 'reject', 'skipped'];

type Category = PeerCategory;
const category = peerCategory;

const CATEGORY_TEXT: Record<Category, string> = { switch: 'switch', qemu: 'QEMU guest', client: 'host client' };
const CATEGORY_SHORT: Record<Category, string> = { switch: 'switch', qemu: 'QEMU', client: 'client' };

function byId<T extends HTMLElement = HTMLElement>(id: string): T {
  const el = document.getElementById(id);
  if (!el) throw new Error(`the page has no #${id}`);
  return el as T;
}

function el<K extends keyof HTMLElementTagNameMap>(tag: K, attrs: Record<string, string> = {}, text?: string): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

function setText(e: Element, text: string): boolean {
  if (e.textContent === text) return false;
  e.textContent = text;
  return true;
}

/** Restarts a CSS animation class on `e` (a counter that changed). */
function flash(e: Element, cls = 'changed'): void {
  e.classList.remove(cls);
  void (e as HTMLElement).offsetWidth;
  e.classList.add(cls);
}

// ---- state -----------------------------------------------------------------

let startedAt: string | null = null;
let lastSeq = 0;
let latest: ApiPeers | null = null;
let source: EventSource | null = null;
let streamState: 'connecting' | 'live' | 'reconnecting' = 'connecting';
let pollFailing = false;
let reconnectDelay = 1000;
let reconnectTimer: number | undefined;
const names = new Nodenames();

// ---- the graph ---------------------------------------------------------------

const cy = cytoscape({
  container: byId('graph'),
  autoungrabify: true,
  userZoomingEnabled: false,
  userPanningEnabled: false,
  boxSelectionEnabled: false,
  style: [
    {
      selector: 'node',
      style: {
        label: 'data(label)',
        'text-wrap': 'wrap',
        'text-valign': 'bottom',
        'text-halign': 'center',
        'text-margin-y': 6,
        'font-size': 13,
        'font-family': 'system-ui, -apple-system, "Segoe UI", Roboto, sans-serif',
        color: '#1f2937',
        'text-background-color': '#ffffff',
        'text-background-opacity': 0.85,
        'text-background-padding': '2px',
        'text-background-shape': 'roundrectangle',
        width: 44,
        height: 44,
        'border-width': 2,
        'border-color': '#ffffff',
      },
    },
    { selector: 'node.switch', style: { shape: 'round-hexagon', width: 68, height: 62, 'background-color': '#4338ca', 'font-weight': 'bold' } },
    { selector: 'node.qemu', style: { shape: 'round-rectangle', 'background-color': '#d97706' } },
    { selector: 'node.client', style: { shape: 'ellipse', 'background-color': '#0f766e' } },
    { selector: 'node.busy', style: { 'border-color': '#dc2626', 'border-width': 4 } },
    {
      selector: 'edge',
      style: { width: 2, 'curve-style': 'straight', 'line-color': '#9ca3af', 'line-style': 'dotted', opacity: 0.9 },
    },
    { selector: 'edge.configured', style: { 'line-color': '#16a34a', 'line-style': 'solid' } },
    { selector: 'edge.up', style: { 'line-color': '#6b7280', 'line-style': 'solid' } },
    { selector: 'edge.configuring', style: { 'line-color': '#d97706', 'line-style': 'dashed' } },
    { selector: 'edge.active', style: { width: 5, 'line-color': '#2563eb' } },
  ],
});

function nodeId(id: number): string {
  return `p${id}`;
}

function nodeLabel(p: ApiPeer): string {
  const lines = [p.nodename || `peer ${p.id}`, `ID ${p.id} · ${p.cclass || CATEGORY_TEXT[category(p)]}`];
  const address = formatAddress(p.sid, p.cid);
  if (address) lines.push(address);
  return lines.join('\n');
}

/** Where each node goes: the switch in the middle, the others evenly on a
 * circle by ID (the switch's ID, one past the others, is left out). */
function positions(peers: ApiPeer[]): Map<number, { x: number; y: number }> {
  const others = peers.filter((p) => p.kind !== 'switch').sort((a, b) => a.id - b.id);
  const radius = Math.max(170, others.length * 26);
  const at = new Map<number, { x: number; y: number }>();
  for (const p of peers) if (p.kind === 'switch') at.set(p.id, { x: 0, y: 0 });
  others.forEach((p, i) => {
    const angle = -Math.PI / 2 + (2 * Math.PI * i) / Math.max(others.length, 1);
    at.set(p.id, { x: radius * Math.cos(angle), y: radius * Math.sin(angle) });
  });
  return at;
}

function fit(): void {
  const live = cy.nodes().not('.leaving');
  if (live.length === 0) return;
  cy.fit(live, 24);
  if (cy.zoom() > 1.4) {
    cy.zoom(1.4);
    cy.center(live);
  }
}

function updateGraph(peers: ApiPeer[]): void {
  const at = positions(peers);
  const sw = peers.find((p) => p.kind === 'switch');
  const present = new Set<string>();
  let added = false;
  for (const p of peers) {
    const id = nodeId(p.id);
    present.add(id);
    const cat = category(p);
    let node = cy.getElementById(id);
    // The same ID with a later connection: a new peer in a recycled slot.
    if (node.nonempty() && node.data('since') !== p.connectedSince && !node.hasClass('leaving')) {
      cy.remove(node);
      node = cy.collection();
    }
    if (node.nonempty() && node.hasClass('leaving')) {
      node.stop(true, false);
      node.removeClass('leaving');
      node.removeStyle();
      node.connectedEdges().removeStyle();
    }
    const pos = at.get(p.id) ?? { x: 0, y: 0 };
    if (node.empty()) {
      node = cy.add({ group: 'nodes', data: { id, peer: p.id, since: p.connectedSince, label: nodeLabel(p), nodename: p.nodename }, position: { ...pos }, classes: cat });
      node.style({ opacity: 0, width: 6, height: 6 });
      const size = cat === 'switch' ? { width: 68, height: 62 } : { width: 44, height: 44 };
      node.animate({ style: { opacity: 1, ...size } }, { duration: ENTER_MS, easing: 'ease-out-cubic', complete: () => node.removeStyle() });
      added = true;
    } else {
      node.data({ label: nodeLabel(p), nodename: p.nodename });
      node.classes(cat);
      const cur = node.position();
      if (Math.abs(cur.x - pos.x) > 0.5 || Math.abs(cur.y - pos.y) > 0.5) node.animate({ position: pos }, { duration: ENTER_MS, easing: 'ease-in-out-cubic' });
    }
    node.toggleClass('busy', p.counters.queued > 0 || (p.rings !== null && p.rings.inMax >= p.rings.capacity / 2));
  }
  // Edges once every node is there (the switch comes last).
  for (const p of peers) {
    const id = nodeId(p.id);
    if (sw && p.kind !== 'switch') {
      const eid = `l${p.id}`;
      let edge = cy.getElementById(eid);
      if (edge.empty()) {
        edge = cy.add({ group: 'edges', data: { id: eid, source: id, target: nodeId(sw.id) } });
        edge.style({ opacity: 0 });
        edge.animate({ style: { opacity: 0.9 } }, { duration: ENTER_MS, complete: () => edge.removeStyle() });
      }
      edge.classes(p.link ?? '');
    }
  }
  for (const node of cy.nodes().toArray()) {
    if (present.has(node.id()) || node.hasClass('leaving')) continue;
    node.addClass('leaving');
    node.connectedEdges().animate({ style: { opacity: 0 } }, { duration: LEAVE_MS });
    node.animate({ style: { opacity: 0, width: 6, height: 6 } }, { duration: LEAVE_MS, easing: 'ease-in-cubic', complete: () => {
      if (node.hasClass('leaving')) cy.remove(node);
      describeGraph();
    } });
  }
  if (added || cy.nodes().length !== present.size) fit();
  describeGraph();
}

/** The graph's nodes in words (a canvas has none): what cytoscape holds now. */
function describeGraph(): void {
  const list = byId('graph-nodes');
  const items = cy
    .nodes()
    .not('.leaving')
    .toArray()
    .sort((a, b) => (a.data('peer') as number) - (b.data('peer') as number))
    .map((n) => {
      const li = el('li', { 'data-graph-node': String(n.data('peer')) }, (n.data('label') as string).replace(/\n/g, ', '));
      return li;
    });
  list.replaceChildren(...items);
}

/** An edge lights up for a moment when a message passes on it. */
function pulse(peer: number | undefined): void {
  if (peer === undefined) return;
  const edge = cy.getElementById(`l${peer}`);
  if (edge.empty()) return;
  edge.addClass('active');
  window.setTimeout(() => edge.removeClass('active'), 250);
}

// ---- the table -------------------------------------------------------------

const COLUMNS: Array<{ key: string; num?: boolean; value: (p: ApiPeer) => string; flash?: boolean }> = [
  { key: 'id', num: true, value: (p) => String(p.id) },
  { key: 'nodename', value: (p) => p.nodename || '—' },
  { key: 'kind', value: (p) => CATEGORY_SHORT[category(p)] },
  { key: 'cclass', value: (p) => p.cclass || '—' },
  { key: 'address', value: (p) => (p.sid === null && p.cid === null ? '—' : `${p.sid ?? '?'} / ${p.cid ?? '?'}`) },
  { key: 'link', value: (p) => p.link ?? '—' },
  { key: 'messagesIn', num: true, flash: true, value: (p) => formatCount(p.counters.messagesIn) },
  { key: 'messagesOut', num: true, flash: true, value: (p) => formatCount(p.counters.messagesOut) },
  { key: 'bytesIn', num: true, flash: true, value: (p) => formatBytes(p.counters.bytesIn) },
  { key: 'bytesOut', num: true, flash: true, value: (p) => formatBytes(p.counters.bytesOut) },
  { key: 'doorbells', num: true, flash: true, value: (p) => formatCount(p.counters.doorbells) },
  { key: 'drops', num: true, flash: true, value: (p) => formatCount(p.counters.drops) },
  { key: 'queued', num: true, value: (p) => formatCount(p.counters.queued) },
];

function updateTable(peers: ApiPeer[]): void {
  const body = byId('peer-rows');
  const rows = new Map<string, HTMLTableRowElement>();
  for (const r of Array.from(body.querySelectorAll<HTMLTableRowElement>('tr[data-peer-id]'))) {
    if (r.classList.contains('leaving')) continue;
    rows.set(r.dataset.peerId ?? '', r);
  }
  const sorted = [...peers].sort((a, b) => (a.kind === 'switch' ? 1 : 0) - (b.kind === 'switch' ? 1 : 0) || a.id - b.id);
  let before: ChildNode | null = body.firstChild;
  for (const p of sorted) {
    const key = String(p.id);
    let row = rows.get(key);
    if (row && row.dataset.since !== p.connectedSince) {
      leaveRow(row);
      row = undefined;
    }
    rows.delete(key);
    const fresh = !row;
    if (!row) {
      row = el('tr', { 'data-peer-id': key, 'data-since': p.connectedSince, class: 'joining' });
      for (const c of COLUMNS) row.append(el(c.key === 'id' ? 'th' : 'td', { 'data-col': c.key, ...(c.key === 'id' ? { scope: 'row' } : {}), class: c.num ? 'num' : '' }));
    }
    row.dataset.kind = category(p);
    row.dataset.nodename = p.nodename;
    row.classList.toggle('queued', p.counters.queued > 0);
    row.classList.toggle('dropping', p.counters.drops > 0);
    COLUMNS.forEach((c, i) => {
      const cell = row.children[i];
      if (setText(cell, c.value(p)) && c.flash && !fresh) flash(cell);
    });
    const cell = row.children[2];
    if (!cell.querySelector('.swatch')) cell.prepend(el('span', { class: `swatch ${category(p)}`, 'aria-hidden': 'true' }));
    // In order, leaving rows where they are.
    while (before && before !== row && (before as HTMLElement).classList?.contains('leaving')) before = before.nextSibling;
    if (before !== row) body.insertBefore(row, before);
    before = row.nextSibling;
  }
  for (const row of rows.values()) leaveRow(row);
  byId('no-peers').hidden = peers.some((p) => p.kind !== 'switch');
}

function leaveRow(row: HTMLTableRowElement): void {
  row.classList.remove('joining');
  row.classList.add('leaving');
  row.removeAttribute('data-peer-id');
  window.setTimeout(() => row.remove(), LEAVE_MS);
}

// ---- shared memory and rings ---------------------------------------------

function updateMemory(answer: ApiPeers): void {
  const size = answer.server.sharedMemory;
  const sw = answer.peers.find((p) => p.kind === 'switch');
  const withRings = answer.peers.find((p) => p.rings !== null);
  const segments: Array<{ name: string; bytes: number; cls: string }> = [];
  if (answer.server.fabric && sw) {
    // The server's layout (README, "The fabric"): the mailbox's slots, the
    // ring channels from the next page, the rest is fabric-attached memory.
    const nClients = sw.id - 1;
    const mailbox = SLOT_SIZE * (nClients + 2);
    segments.push({ name: 'mailbox slots', bytes: mailbox, cls: 'seg-mailbox' });
    let used = mailbox;
    if (withRings?.rings) {
      const base = Math.ceil(mailbox / 4096) * 4096;
      const count = (nClients + 1) * nClients;
      const rings = count * (RING_HEADER + withRings.rings.capacity);
      segments.push({ name: `ring channels (${count} × ${formatBytes(withRings.rings.capacity)})`, bytes: base - mailbox + rings, cls: 'seg-rings' });
      used = base + rings;
    }
    segments.push({ name: 'fabric-attached memory', bytes: Math.max(0, size - used), cls: 'seg-fam' });
  } else {
    segments.push({ name: 'shared memory (no fabric: --silent)', bytes: size, cls: 'seg-fam' });
  }
  const map = byId('memmap');
  map.setAttribute('role', 'img');
  map.setAttribute('aria-label', `shared memory of ${formatBytes(size)}`);
  map.replaceChildren(
    ...segments.map((s) => {
      const part = el('span', { class: `seg ${s.cls}`, title: `${s.name}: ${formatBytes(s.bytes)}` });
      // Tiny parts stay visible.
      part.style.flexGrow = String(Math.max(s.bytes / size, 0.015));
      return part;
    }),
  );
  const legend = byId('memmap-legend');
  legend.replaceChildren(
    el('li', { class: 'total' }, `${formatBytes(size)} in all`),
    ...segments.map((s) => {
      const li = el('li', {}, `${s.name}: ${formatBytes(s.bytes)}`);
      li.prepend(el('span', { class: `swatch-box ${s.cls}`, 'aria-hidden': 'true' }));
      return li;
    }),
  );

  const rings = byId('rings');
  const peers = [...answer.peers].sort((a, b) => (a.kind === 'switch' ? 1 : 0) - (b.kind === 'switch' ? 1 : 0) || a.id - b.id);
  const rows = peers.map((p) => {
    const row = el('div', { class: 'ring-row', 'data-ring-peer': String(p.id) });
    row.append(el('span', { class: 'ring-name' }, p.nodename || `peer ${p.id}`));
    if (!p.rings) {
      row.append(el('span', { class: 'ring-none' }, 'no ring channels'));
      return row;
    }
    const r = p.rings;
    for (const [dir, max, used, total] of [
      ['in', r.inMax, r.inUsed, r.inBytes],
      ['out', r.outMax, r.outUsed, r.outBytes],
    ] as const) {
      const pct = fillPercent(max, r.capacity);
      const name = p.nodename || `peer ${p.id}`;
      const detail = `${name} ${dir}: the fullest ring is ${pct}% of ${formatBytes(r.capacity)}; ${formatBytes(used)} waiting in all; ${formatBytes(total)} written ever`;
      const bar = el('span', { class: 'bar', role: 'meter', 'aria-valuemin': '0', 'aria-valuemax': '100', 'aria-valuenow': String(pct), 'aria-label': detail, title: detail, 'data-dir': dir, 'data-used': String(used) });
      const fill = el('span', { class: `fill${pct >= 75 ? ' high' : pct >= 25 ? ' mid' : ''}` });
      fill.style.width = `${max > 0 ? Math.max(pct, 1) : 0}%`;
      bar.append(fill);
      row.append(el('span', { class: 'ring-dir' }, dir), bar, el('span', { class: 'ring-text', title: detail }, `${pct}% · ${formatBytes(used)}`));
    }
    return row;
  });
  rings.replaceChildren(...rows);
}

// ---- status and server -----------------------------------------------------

function updateStatus(): void {
  const status = byId('status');
  let state: string = streamState;
  let text: string;
  if (pollFailing && streamState !== 'live') state = 'reconnecting';
  switch (state) {
    case 'live':
      text = pollFailing ? 'connected, but the server is not answering GET /api/v1/peers' : 'connected: live';
      break;
    case 'reconnecting':
      text = 'reconnecting… (the server does not answer)';
      break;
    default:
      text = 'connecting…';
  }
  status.dataset.state = state;
  setText(byId('status-text'), text);
}

function updateServer(answer: ApiPeers): void {
  const s = answer.server;
  setText(byId('server-socket'), s.socket);
  setText(byId('server-version'), `famez ${s.version}${s.fabric ? '' : ' (--silent)'}`);
  setText(byId('server-uptime'), formatDuration(Date.now() - Date.parse(s.startedAt)));
  const sw = answer.peers.find((p) => p.kind === 'switch');
  const n = answer.peers.filter((p) => p.kind !== 'switch').length;
  setText(byId('server-peers'), sw ? `${n} of ${sw.id - 1}` : String(n));
  const t = answer.totals;
  setText(byId('server-totals'), `${t.connects} · ${t.disconnects} · ${t.refusals}`);
  document.title = `famez: ${n} peer${n === 1 ? '' : 's'}`;
}

// ---- the log ---------------------------------------------------------------

function logLine(e: ApiEvent): void {
  const list = byId('log');
  const stick = list.scrollHeight - list.scrollTop - list.clientHeight < 30;
  const li = el('li', { 'data-seq': String(e.seq), 'data-type': e.type, class: `ev ${e.type}${e.direction ? ` ${e.direction}` : ''}` });
  if (e.peer !== undefined) li.dataset.peer = String(e.peer);
  li.append(el('time', { datetime: e.time }, formatClock(e.time)), el('span', { class: 'type' }, e.type), el('span', { class: 'what' }, describeEvent(e)));
  list.append(li);
  while (list.children.length > MAX_LOG) list.firstElementChild?.remove();
  setText(byId('log-count'), `(last ${list.children.length})`);
  if (stick) list.scrollTop = list.scrollHeight;
}

function logNote(text: string): void {
  const list = byId('log');
  const li = el('li', { class: 'ev note', 'data-type': 'note' });
  li.append(el('time', { datetime: new Date().toISOString() }, formatClock(new Date().toISOString())), el('span', { class: 'type' }, 'note'), el('span', { class: 'what' }, text));
  list.append(li);
  list.scrollTop = list.scrollHeight;
}

// ---- reading the API ---------------------------------------------------------

let refreshing = false;
let again = false;
let lastRefresh = 0;
let refreshTimer: number | undefined;

async function refresh(): Promise<void> {
  if (refreshing) {
    again = true;
    return;
  }
  refreshing = true;
  lastRefresh = Date.now();
  let answer: ApiPeers | null = null;
  try {
    const res = await fetch('api/v1/peers', { cache: 'no-store' });
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    answer = (await res.json()) as ApiPeers;
    pollFailing = false;
  } catch {
    pollFailing = true;
  }
  try {
    if (answer) {
      if (startedAt !== null && answer.server.startedAt !== startedAt) {
        // Another server now (a restart): its events start again at 1.
        logNote('the server restarted');
        lastSeq = 0;
        startedAt = answer.server.startedAt;
        if (streamState === 'live') openStream();
      }
      startedAt = answer.server.startedAt;
      latest = answer;
      for (const p of answer.peers) names.note(p.id, p.nodename);
      render(answer);
    }
  } finally {
    refreshing = false;
    updateStatus();
    if (again) {
      again = false;
      soon();
    }
  }
}

function render(answer: ApiPeers): void {
  updateServer(answer);
  updateGraph(answer.peers);
  updateTable(answer.peers);
  updateMemory(answer);
}

/** A refresh soon after an event, at most one per EVENT_REFRESH_MS. */
function soon(): void {
  if (refreshTimer !== undefined) return;
  const wait = Math.max(0, lastRefresh + EVENT_REFRESH_MS - Date.now());
  refreshTimer = window.setTimeout(() => {
    refreshTimer = undefined;
    void refresh();
  }, wait);
}

/** The event stream from the last event seen on: the recent history the
 * first time (since=0), only what is new after a reconnect. EventSource's
 * own retry would ask with the first URL again, so the page reconnects
 * itself, checking first whether the server is still the same one. */
function openStream(): void {
  source?.close();
  window.clearTimeout(reconnectTimer);
  const es = new EventSource(`api/v1/events?since=${lastSeq}&content=1`);
  source = es;
  es.onopen = () => {
    streamState = 'live';
    reconnectDelay = 1000;
    updateStatus();
    soon();
  };
  es.onerror = () => {
    if (source !== es) return;
    es.close();
    streamState = 'reconnecting';
    updateStatus();
    reconnectTimer = window.setTimeout(reconnect, reconnectDelay);
    reconnectDelay = Math.min(reconnectDelay * 2, 5000);
  };
  for (const type of EVENT_TYPES) es.addEventListener(type, (m) => onEvent(m as MessageEvent<string>));
}

async function reconnect(): Promise<void> {
  await refresh();
  if (pollFailing) {
    reconnectTimer = window.setTimeout(reconnect, reconnectDelay);
    reconnectDelay = Math.min(reconnectDelay * 2, 5000);
    return;
  }
  openStream();
}

function onEvent(m: MessageEvent<string>): void {
  let e: ApiEvent;
  try {
    e = JSON.parse(m.data) as ApiEvent;
  } catch {
    return;
  }
  if (e.type !== 'skipped' && e.seq <= lastSeq) return;
  lastSeq = Math.max(lastSeq, e.seq);
  logLine(names.fill(e));
  if (e.type === 'message') pulse(e.peer);
  soon();
}

// ---- start -------------------------------------------------------------------

window.addEventListener('resize', () => fit());
window.setInterval(() => void refresh(), POLL_MS);
window.setInterval(() => {
  if (latest) setText(byId('server-uptime'), formatDuration(Date.now() - Date.parse(latest.server.startedAt)));
}, 1000);
updateStatus();
void refresh().finally(() => openStream());
