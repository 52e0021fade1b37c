// The HTTP API (ts/http/api.ts) with real requests against a real `famez
// serve` and real peers: every answer validated against its schema in
// schemas/, the 400/403/404 paths, the SSE stream seeing a join, /metrics
// parsed as Prometheus text with the counters checked after known traffic,
// and the admin actions.
import * as fs from 'node:fs';
import * as path from 'node:path';

import anyTest, { type ExecutionContext, type TestFn } from 'ava';
import { Ajv, type ValidateFunction } from 'ajv';
import parsePrometheusTextFormat from 'parse-prometheus-text-format';

import { FabricClient } from '../ts/fabric/client.js';
import { FamezProcess, Scratch } from './helpers/serve.js';
import { waitFor, within } from './helpers/wait.js';

const test = anyTest as TestFn<Scratch>;
const WAIT_MS = 20_000;
const TOKEN = 'test-token-0123456789';

test.beforeEach((t) => {
  t.context = new Scratch();
});
test.afterEach.always(async (t) => {
  await t.context.cleanup();
});

const SCHEMA_DIR = path.join(__dirname, '..', 'schemas');
const ajv = new Ajv({ allErrors: true, strict: true, validateFormats: false });
for (const f of fs.readdirSync(SCHEMA_DIR)) ajv.addSchema(JSON.parse(fs.readFileSync(path.join(SCHEMA_DIR, f), 'utf8')) as object);
const schema = (id: string): ValidateFunction => ajv.getSchema(id)!;

function valid(t: ExecutionContext, id: string, value: unknown): void {
  const v = schema(id);
  t.true(v(value), `${id}: ${ajv.errorsText(v.errors)}\n${JSON.stringify(value).slice(0, 2000)}`);
}

interface Fabric {
  sock: string;
  url: string;
  server: FamezProcess;
}

async function fabric(t: { context: Scratch }, extra: string[] = []): Promise<Fabric> {
  const sock = path.join(t.context.dir(), 'sock');
  const server = await t.context.serve(['-S', sock, '--memfd', '--max-peers', '4', '--http', '127.0.0.1:0', ...extra]);
  const m = await server.waitFor(/web view and API at (http:\/\/127\.0\.0\.1:\d+\/)/, WAIT_MS);
  return { sock, url: m[1], server };
}

async function join(t: { context: Scratch }, sock: string, nodename: string): Promise<FabricClient> {
  return t.context.track(await FabricClient.connect(sock, { nodename }));
}

async function get(url: string, init: RequestInit = {}): Promise<{ status: number; body: unknown; headers: Headers }> {
  const res = await fetch(url, { ...init, signal: AbortSignal.timeout(WAIT_MS) });
  const text = await res.text();
  let body: unknown = text;
  if ((res.headers.get('content-type') ?? '').startsWith('application/json')) body = JSON.parse(text);
  return { status: res.status, body, headers: res.headers };
}

interface Peer {
  id: number;
  nodename: string;
  cclass: string;
  counters: Record<string, number>;
}

const peer = async (f: Fabric, id: number) => (await get(`${f.url}api/v1/peers/${id}`)).body as Peer;

test('GET /system has FAME-Z shape, with CORS: the switch and each peer by nodename, every peer linked to the switch', async (t) => {
  const f = await fabric(t);
  const a = await join(t, f.sock, 'alpha');
  const b = await join(t, f.sock, 'beta');
  await waitFor(async () => ((await get(`${f.url}system`)).body as { nodes: unknown[] }).nodes.length === 3, 'both peers on /system', WAIT_MS);
  const r = await get(`${f.url}system`);
  t.is(r.status, 200);
  t.is(r.headers.get('access-control-allow-origin'), '*');
  valid(t, 'system.json', r.body);
  const sys = r.body as { nClients: number; server_ivshmsg_id: number; nodes: Array<{ ivshmsg_id: number; id: string; hardware: string; group: string }>; links: unknown[] };
  t.is(sys.nClients, 4);
  t.is(sys.server_ivshmsg_id, 5);
  t.deepEqual(
    sys.nodes.map((n) => [n.ivshmsg_id, n.id, n.group]),
    [
      [a.id, 'alpha', `port_${a.id}`],
      [b.id, 'beta', `port_${b.id}`],
      [5, 'Z-switch', 'port_5'],
    ],
  );
  t.is(sys.nodes[2].hardware, 'switch');
  t.deepEqual(sys.links, [
    { source: 'alpha', target: 'Z-switch' },
    { source: 'beta', target: 'Z-switch' },
  ]);
  const pre = await fetch(`${f.url}system`, { method: 'OPTIONS', signal: AbortSignal.timeout(WAIT_MS) });
  t.is(pre.status, 204);
  t.is(pre.headers.get('access-control-allow-origin'), '*');
});

test('GET /api/v1/peers and /api/v1/peers/:id: schema-valid, with the nodename, C-Class, process and the counters of known traffic', async (t) => {
  const f = await fabric(t);
  const c = await join(t, f.sock, 'pinger');
  // The switch asks every newcomer for its attributes; the client answers:
  // one message each way, then quiet.
  await waitFor(async () => {
    const p = await peer(f, c.id);
    return p.counters.messagesIn === 1 && p.counters.messagesOut === 1 && p.cclass === 'Debugger' && p.nodename === 'pinger';
  }, 'the Peer-Attribute exchange and the name in the slot', WAIT_MS);
  const N = 25;
  for (let i = 0; i < N; i++) await c.request('switch', 'ping', { timeoutMs: WAIT_MS });
  const list = await get(`${f.url}api/v1/peers`);
  t.is(list.status, 200);
  valid(t, 'peers.json', list.body);
  const body = list.body as { peers: Peer[]; totals: { connects: number }; server: { socket: string; fabric: boolean } };
  t.deepEqual(
    body.peers.map((p) => p.id),
    [c.id, 5],
  );
  t.is(body.totals.connects, 1);
  t.is(body.server.socket, f.sock);
  t.true(body.server.fabric);
  const p = await peer(f, c.id);
  valid(t, 'peer.json', p);
  t.like(p, { id: c.id, nodename: 'pinger', cclass: 'Debugger', kind: 'client', link: 'up', vectors: 6 });
  t.like((p as unknown as { process: { pid: number } }).process, { pid: process.pid });
  // 1 ACK + N pings in, 1 Peer-Attribute + N pongs out, each rung.
  t.like(p.counters, { messagesIn: 1 + N, messagesOut: 1 + N, doorbells: 1 + N, drops: 0, rejected: 0, queued: 0 });
  t.is(p.counters.bytesIn, (await peer(f, c.id)).counters.bytesIn);
  t.true(p.counters.bytesIn >= N * 'ping'.length);
  const sw = await peer(f, 5);
  valid(t, 'peer.json', sw);
  t.like(sw, { id: 5, nodename: 'Z-switch', kind: 'switch', cclass: 'FabricSwitch', sid: 27, cid: 500 });
});

test('bad requests are 400 with a sentence, unknown things 404, wrong methods 405: all error.json', async (t) => {
  const f = await fabric(t);
  const cases: Array<[string, RequestInit, number, RegExp]> = [
    ['api/v1/peers/abc', {}, 400, /'abc' is no peer ID/],
    ['api/v1/peers/70000', {}, 400, /from 0 to 65535/],
    ['api/v1/peers/-1', {}, 400, /no peer ID/],
    ['api/v1/peers/3', {}, 404, /no peer 3 is connected/],
    ['api/v1/peers?limit=3', {}, 400, /unknown query parameter 'limit'/],
    ['api/v1/events?since=x', {}, 400, /\?since takes/],
    ['api/v1/events?content=maybe', {}, 400, /\?content takes 1 or 0/],
    ['api/v2/peers', {}, 404, /no GET \/api\/v2\/peers here/],
    ['system', { method: 'DELETE' }, 405, /does not take DELETE/],
    ['api/v1/messages', { method: 'POST', headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'text/plain' }, body: 'hi' }, 403, /admin actions are off/],
  ];
  for (const [p, init, status, message] of cases) {
    const r = await get(`${f.url}${p}`, init);
    t.is(r.status, status, p);
    valid(t, 'error.json', r.body);
    t.regex((r.body as { message: string }).message, message, p);
  }
});

test('the admin actions need the bearer token: 403 without it or with a wrong one; with it, a message as the switch and a disconnect', async (t) => {
  const f = await fabric(t, ['--http-token', TOKEN]);
  const c = await join(t, f.sock, 'target');
  const got: string[] = [];
  c.on('message', (m) => {
    if (m.from === 5) got.push(m.text);
  });
  const post = (p: string, body: unknown, token: string | null) =>
    get(`${f.url}${p}`, { method: 'POST', headers: { 'content-type': 'application/json', ...(token === null ? {} : { authorization: `Bearer ${token}` }) }, body: JSON.stringify(body) });
  for (const token of [null, 'wrong-token-0123456789', TOKEN.slice(1)]) {
    const r = await post('api/v1/messages', { to: c.id, text: 'hello' }, token);
    t.is(r.status, 403, String(token));
    valid(t, 'error.json', r.body);
    t.is((await post(`api/v1/peers/${c.id}/disconnect`, {}, token)).status, 403);
  }
  t.regex(f.server.stdout, /refused an admin request to \/api\/v1\/messages: no bearer token/);
  for (const [body, message] of [
    [{ to: c.id }, /"text" must be a non-empty string/],
    [{ to: 'x', text: 'a' }, /"to" must be a peer ID/],
    [{ to: c.id, text: 'a', from: 1 }, /unknown field 'from'/],
    [{ to: c.id, text: 'x'.repeat(384) }, /384 bytes; a mailbox slot holds 383/],
    [[1], /must be a JSON object/],
  ] as const) {
    const r = await post('api/v1/messages', body, TOKEN);
    t.is(r.status, 400, JSON.stringify(body));
    t.regex((r.body as { message: string }).message, message);
  }
  t.is((await post('api/v1/messages', { to: 4, text: 'x' }, TOKEN)).status, 404);
  const ok = await post('api/v1/messages', { to: c.id, text: 'hello from the operator' }, TOKEN);
  t.is(ok.status, 200);
  valid(t, 'admin.json#/definitions/done', ok.body);
  await waitFor(() => got.includes('hello from the operator'), 'the message as the switch', WAIT_MS);
  const closed = new Promise<void>((resolve) => c.once('close', () => resolve()));
  t.is((await post(`api/v1/peers/${c.id}/disconnect`, {}, TOKEN)).status, 200);
  await within(closed, 'the client to see the server drop it', WAIT_MS);
  await f.server.waitFor(new RegExp(`peer ${c.id} disconnected: disconnected by the HTTP API`), WAIT_MS);
  t.is((await post(`api/v1/peers/${c.id}/disconnect`, {}, TOKEN)).status, 404);
});

/** Reads SSE events from `url` into `events` until aborted. */
function subscribe(url: string, events: Array<{ id: string; event: string; data: Record<string, unknown> }>, abort: AbortController): Promise<void> {
  return (async () => {
    const res = await fetch(url, { signal: abort.signal });
    const decoder = new TextDecoder();
    let buf = '';
    try {
      for await (const chunk of res.body as AsyncIterable<Uint8Array>) {
        buf += decoder.decode(chunk, { stream: true });
        for (let i = buf.indexOf('\n\n'); i >= 0; i = buf.indexOf('\n\n')) {
          const block = buf.slice(0, i);
          buf = buf.slice(i + 2);
          const fields: Record<string, string> = {};
          for (const line of block.split('\n')) {
            if (line.startsWith(':')) continue;
            const c = line.indexOf(': ');
            if (c > 0) fields[line.slice(0, c)] = line.slice(c + 2);
          }
          if (fields.data) events.push({ id: fields.id, event: fields.event, data: JSON.parse(fields.data) as Record<string, unknown> });
        }
      }
    } catch (e) {
      if ((e as Error).name !== 'AbortError') throw e;
    }
  })();
}

test('GET /api/v1/events streams joins, link-ups, messages (metadata; text with ?content=1) and leaves as they happen', async (t) => {
  const f = await fabric(t);
  const meta: Array<{ id: string; event: string; data: Record<string, unknown> }> = [];
  const full: typeof meta = [];
  const abort = new AbortController();
  // ?since=0: what happened before the stream opened comes first (no race).
  const streams = [subscribe(`${f.url}api/v1/events?since=0`, meta, abort), subscribe(`${f.url}api/v1/events?content=1&since=0`, full, abort)];
  try {
    const c = await join(t, f.sock, 'watched');
    await waitFor(() => meta.some((e) => e.event === 'join' && e.data.peer === c.id), 'the join on the stream', WAIT_MS);
    await c.linkUp({ timeoutMs: WAIT_MS });
    await c.request('switch', 'ping', { timeoutMs: WAIT_MS });
    await waitFor(() => meta.some((e) => e.event === 'link' && e.data.link === 'configured' && e.data.peer === c.id), 'the link-up', WAIT_MS);
    await waitFor(() => meta.some((e) => e.event === 'message' && e.data.kind === 'pong'), 'the pong', WAIT_MS);
    c.close();
    await waitFor(() => meta.some((e) => e.event === 'leave' && e.data.peer === c.id), 'the leave', WAIT_MS);
    await waitFor(() => full.some((e) => e.event === 'leave'), 'the leave on the content stream', WAIT_MS);
    for (const e of [...meta, ...full]) {
      valid(t, 'event.json', e.data);
      t.is(e.event, e.data.type as string);
      t.is(e.id, String(e.data.seq));
    }
    const ping = meta.find((e) => e.event === 'message' && e.data.kind === 'ping');
    t.like(ping?.data, { direction: 'in', peer: c.id, nodename: 'watched', bytes: 4 });
    t.false('text' in (ping?.data ?? {}), 'metadata only by default');
    t.like(full.find((e) => e.event === 'message' && e.data.kind === 'ping')?.data, { text: 'ping' });
    // Seqs increase; a late subscriber asking ?since=0 gets the same history.
    const seqs = meta.map((e) => Number(e.id));
    t.deepEqual(seqs, [...seqs].sort((a, b) => a - b));
    const late: typeof meta = [];
    const lateAbort = new AbortController();
    const lateStream = subscribe(`${f.url}api/v1/events?since=0`, late, lateAbort);
    await waitFor(() => late.some((e) => e.event === 'leave'), 'the history', WAIT_MS);
    lateAbort.abort();
    await lateStream;
    t.deepEqual(
      late.filter((e) => e.event === 'join' || e.event === 'leave').map((e) => e.event),
      ['join', 'leave'],
    );
  } finally {
    abort.abort();
    await Promise.all(streams);
  }
});

type Family = { name: string; type: string; metrics: Array<{ value?: string; labels?: Record<string, string> }> };

async function scrape(f: Fabric): Promise<Map<string, Family>> {
  const r = await fetch(`${f.url}metrics`, { signal: AbortSignal.timeout(WAIT_MS) });
  if (r.status !== 200) throw new Error(`/metrics: ${r.status}`);
  if (!(r.headers.get('content-type') ?? '').startsWith('text/plain')) throw new Error(`/metrics content type ${r.headers.get('content-type')}`);
  const families = parsePrometheusTextFormat(await r.text()) as Family[];
  return new Map(families.map((fam) => [fam.name, fam]));
}

function value(m: Map<string, Family>, name: string, labels: Record<string, string> = {}): number | undefined {
  const fam = m.get(name);
  const s = fam?.metrics.find((x) => Object.entries(labels).every(([k, v]) => x.labels?.[k] === v));
  return s?.value === undefined ? undefined : Number(s.value);
}

test('/metrics is Prometheus text: peers, connects, disconnects, refusals, per-peer messages, doorbells, queue depths, ring fill, event-loop lag', async (t) => {
  const f = await fabric(t, ['--max-peers', '2']);
  const a = await join(t, f.sock, 'm-a');
  const b = await join(t, f.sock, 'm-b');
  // A third peer is refused (--max-peers 2).
  const refused = await FabricClient.connect(f.sock, { nodename: 'm-c' }).then(
    (c) => (c.close(), false),
    () => true,
  );
  t.true(refused);
  await waitFor(async () => (await peer(f, a.id)).counters.messagesOut === 1 && (await peer(f, a.id)).counters.messagesIn === 1, 'the attribute exchange', WAIT_MS);
  const N = 10;
  for (let i = 0; i < N; i++) await a.request('switch', 'ping', { timeoutMs: WAIT_MS });
  // Peer-to-peer ring traffic the switch never sees: counted from the ring's own counters.
  await a.sendRing(b.id, Buffer.from('x'.repeat(100)));
  b.close();
  await f.server.waitFor(/disconnected: disconnected \(1 peer\)/, WAIT_MS);
  const m = await scrape(f);
  t.is(m.get('famez_peers')?.type, 'GAUGE');
  t.is(value(m, 'famez_peers'), 1);
  t.is(value(m, 'famez_connects_total'), 2);
  t.is(value(m, 'famez_refusals_total'), 1);
  t.is(value(m, 'famez_disconnects_total', { reason: 'disconnected' }), 1);
  t.is(m.get('famez_connects_total')?.type, 'COUNTER');
  const peerLabels = { peer: String(a.id), nodename: 'm-a' };
  t.is(value(m, 'famez_peer_messages_total', { ...peerLabels, direction: 'in' }), 1 + N);
  t.is(value(m, 'famez_peer_messages_total', { ...peerLabels, direction: 'out' }), 1 + N);
  t.is(value(m, 'famez_peer_doorbells_total', peerLabels), 1 + N);
  t.is(value(m, 'famez_peer_drops_total', peerLabels), 0);
  t.is(value(m, 'famez_switch_queue_depth', peerLabels), 0);
  t.true((value(m, 'famez_peer_bytes_total', { ...peerLabels, direction: 'in' }) ?? 0) >= N * 4);
  t.true((value(m, 'famez_ring_capacity_bytes') ?? 0) > 0);
  // The ring record a wrote b: counted by the ring's own counter; b's
  // departure emptied its rings, so nothing waits in them.
  t.true((value(m, 'famez_peer_ring_bytes_total', { ...peerLabels, direction: 'out' }) ?? 0) >= 100);
  t.is(value(m, 'famez_ring_used_bytes', { ...peerLabels, direction: 'out' }), 0);
  t.not(value(m, 'nodejs_eventloop_lag_seconds'), undefined);
  t.is(value(m, 'famez_info', { fabric: 'true' }), 1);
});

test('an SSE client that never reads does not hold the server back: peers keep being served and another stream keeps its events', async (t) => {
  const f = await fabric(t);
  // A raw connection that asks for the stream and never reads a byte.
  const net = await import('node:net');
  const u = new URL(f.url);
  const stuck = net.connect(Number(u.port), u.hostname);
  t.context.track({ close: () => stuck.destroy() });
  stuck.pause();
  await new Promise<void>((resolve) => stuck.once('connect', () => resolve()));
  stuck.write('GET /api/v1/events?content=1 HTTP/1.1\r\nHost: x\r\n\r\n');
  const c = await join(t, f.sock, 'busy');
  const N = 2000;
  for (let i = 0; i < N; i++) await c.request('switch', 'ping', { timeoutMs: WAIT_MS });
  const p = await peer(f, c.id);
  t.true(p.counters.messagesIn >= N);
  const events: Array<{ id: string; event: string; data: Record<string, unknown> }> = [];
  const abort = new AbortController();
  const s = subscribe(`${f.url}api/v1/events?since=0`, events, abort);
  try {
    c.close();
    await waitFor(() => events.some((e) => e.event === 'leave'), 'the leave on a second stream', WAIT_MS);
  } finally {
    abort.abort();
    await s;
  }
  t.pass();
});

test('Client and FabricClient log their welcome, joins and close to the logger they are given (the library logs nowhere without one)', async (t) => {
  const f = await fabric(t);
  const { functionLogger } = await import('../ts/log.js');
  const events: Array<{ level: string; message: string; fields: Record<string, unknown> }> = [];
  const c = await FabricClient.connect(f.sock, { nodename: 'logged', logger: functionLogger((e) => events.push(e), 'debug') });
  const id = c.id;
  const other = await join(t, f.sock, 'other');
  await waitFor(() => events.some((e) => e.fields.event === 'join' && e.fields.peer === other.id), 'the join logged', WAIT_MS);
  c.close();
  t.like(events.find((e) => e.fields.event === 'welcome'), { level: 'info', fields: { component: 'client', peer: id } });
  t.like(events.find((e) => e.fields.event === 'close' && e.fields.component === 'fabric-client'), { level: 'info' });
});
