// `famez top [URL]`: the web view's data as text, for a terminal: every
// second a table of the peers from GET /api/v1/peers and the last events
// from GET /api/v1/events (Server-Sent Events, parsed here), redrawn like
// top; `--once` prints one snapshot and exits. Node's fetch, no
// dependencies.
import { UsageError, parseFlags } from '../args.js';
import type { PeersAnswer, PeerView } from '../observe/api-types.js';
import { describeEvent, fillPercent, formatBytes, formatClock, formatDuration, peerCategory, Nodenames, type EventText } from '../observe/format.js';

export const DEFAULT_URL = 'http://127.0.0.1:1991/';

const HELP = `Usage: famez top [URL] [--once]

A live view of a famez server in the terminal, over its HTTP API (the
web view's data, as text): every second a table of the peers and the
switch (ID, nodename, kind, C-Class, SID/CID, link state, messages and
bytes in and out of the switch, doorbells, drops, queued messages, ring
fill) and the last events. q or Ctrl-C quits.

URL is where famez serve's API is (default ${DEFAULT_URL}; famez serve
prints it: "web view and API at ..."): a URL, HOST:PORT or a PORT.

  --once       print one snapshot (the peers and the recent events) and exit
  -h, --help   this text
  --version    famez's version
`;


/** Request timeout: a server that accepts but never answers is reported. */
const REQUEST_MS = 5000;
/** --once: the history a stream starts with is read until it pauses this long. */
const HISTORY_QUIET_MS = 300;
const HISTORY_MAX_MS = 3000;
const REDRAW_MS = 1000;
/** Events kept for the view. */
const KEEP_EVENTS = 200;

// ---- the command line --------------------------------------------------------

export interface TopOptions {
  url: string;
  once: boolean;
  help: boolean;
}

/** A URL, HOST:PORT or PORT as the API's base URL (ending in /). */
export function normalizeUrl(text: string): string {
  let t = text.trim();
  if (/^\d{1,5}$/.test(t)) t = `127.0.0.1:${t}`;
  if (!/^[a-z][a-z0-9+.-]*:\/\//i.test(t)) t = `http://${t}`;
  let u: URL;
  try {
    u = new URL(t);
  } catch {
    throw new UsageError(`'${text}' is not a URL: give famez serve's address, e.g. ${DEFAULT_URL}`);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new UsageError(`'${text}': famez top speaks http:// or https://, not ${u.protocol}`);
  u.search = '';
  u.hash = '';
  if (!u.pathname.endsWith('/')) u.pathname += '/';
  return u.toString();
}

export function parseTopArgs(argv: readonly string[]): TopOptions {
  const positional = argv.filter((a) => !a.startsWith('-') || a === '-');
  const flags = argv.filter((a) => a.startsWith('-') && a !== '-');
  if (positional.length > 1) throw new UsageError(`famez top takes one URL, got ${positional.length}: ${positional.join(' ')}`);
  const o: TopOptions = { url: DEFAULT_URL, once: false, help: false };
  for (const { name } of parseFlags(flags, { once: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } })) {
    if (name === 'once') o.once = true;
    if (name === 'help') o.help = true;
  }
  if (positional.length === 1) o.url = normalizeUrl(positional[0]);
  return o;
}

// ---- talking to the server ---------------------------------------------------

/** What went wrong reaching the server, as one line naming the URL. */
export class TopError extends Error {
  override name = 'TopError';
}

function reachFailure(base: string, e: unknown): TopError {
  const err = e as Error & { cause?: { code?: string; message?: string } };
  if (err.name === 'TimeoutError' || err.name === 'AbortError') return new TopError(`${base} did not answer within ${REQUEST_MS / 1000} s; is famez serve running there?`);
  const code = err.cause?.code ?? '';
  const why: Record<string, string> = {
    ECONNREFUSED: 'connection refused',
    ENOTFOUND: 'no such host',
    EAI_AGAIN: 'the host name cannot be resolved now',
    EHOSTUNREACH: 'no route to the host',
    ENETUNREACH: 'the network is unreachable',
    ECONNRESET: 'the connection was reset',
  };
  // fetch refuses the ports browsers block (6000, 6667, ...): say so.
  const reason = why[code] ?? (err.cause?.message === 'bad port' ? `fetch refuses port ${new URL(base).port}, one that browsers block: serve the API on another port with famez serve --http PORT` : (err.cause?.message ?? err.message));
  return new TopError(`cannot reach ${base} (${reason}); is a server running there? Start one with 'famez serve' (it prints "web view and API at URL")`);
}

export async function fetchPeers(base: string): Promise<PeersAnswer> {
  const url = new URL('api/v1/peers', base).toString();
  let res: Response;
  try {
    res = await fetch(url, { signal: AbortSignal.timeout(REQUEST_MS), headers: { accept: 'application/json' } });
  } catch (e) {
    throw reachFailure(base, e);
  }
  let body: unknown;
  try {
    body = await res.json();
  } catch {
    body = null;
  }
  if (!res.ok) {
    const message = (body as { message?: unknown } | null)?.message;
    throw new TopError(`${url} answered ${res.status}${typeof message === 'string' ? `: ${message}` : ''}; is that famez serve's API?`);
  }
  const a = body as Partial<PeersAnswer> | null;
  if (!a || !Array.isArray(a.peers) || typeof a.server !== 'object' || a.server === null) throw new TopError(`${url} did not answer with famez's list of peers; is that famez serve's API?`);
  return a as PeersAnswer;
}

/** One Server-Sent Event: its type (event:), data and id. */
export interface SseMessage {
  event: string;
  data: string;
  id: string | null;
}

/** The text/event-stream format, incrementally: feed it chunks as they
 * come, get the complete events. Comments and retry: are ignored. */
export class SseParser {
  private buffer = '';
  private event = '';
  private data: string[] = [];
  private id: string | null = null;

  push(chunk: string): SseMessage[] {
    this.buffer += chunk;
    const out: SseMessage[] = [];
    for (;;) {
      const m = /\r\n|\r|\n/.exec(this.buffer);
      // A lone \r at the end may be the first half of \r\n: wait for more.
      if (!m || (m[0] === '\r' && m.index === this.buffer.length - 1)) break;
      const line = this.buffer.slice(0, m.index);
      this.buffer = this.buffer.slice(m.index + m[0].length);
      if (line === '') {
        if (this.data.length) out.push({ event: this.event || 'message', data: this.data.join('\n'), id: this.id });
        this.event = '';
        this.data = [];
        continue;
      }
      if (line.startsWith(':')) continue;
      const colon = line.indexOf(':');
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? '' : line.slice(colon + 1);
      if (value.startsWith(' ')) value = value.slice(1);
      if (field === 'event') this.event = value;
      else if (field === 'data') this.data.push(value);
      else if (field === 'id') this.id = value;
    }
    return out;
  }
}

/** Reads the event stream from `since` on, handing each event to `onEvent`,
 * until `signal` aborts or the stream ends. Rejects with a TopError when
 * the server cannot be reached or refuses. */
export async function readEvents(base: string, since: number, signal: AbortSignal, onEvent: (e: EventText) => void, onOpen: () => void = () => undefined): Promise<void> {
  const url = new URL(`api/v1/events?since=${since}&content=1`, base).toString();
  let res: Response;
  try {
    res = await fetch(url, { signal, headers: { accept: 'text/event-stream' } });
  } catch (e) {
    if (signal.aborted) return;
    throw reachFailure(base, e);
  }
  if (!res.ok || !res.body) throw new TopError(`${url} answered ${res.status}`);
  onOpen();
  const parser = new SseParser();
  const decoder = new TextDecoder();
  try {
    for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
      for (const m of parser.push(decoder.decode(chunk, { stream: true }))) {
        try {
          onEvent(JSON.parse(m.data) as EventText);
        } catch {
          // not an event of ours: skipped
        }
      }
    }
  } catch (e) {
    if (signal.aborted) return;
    throw reachFailure(base, e);
  }
}

/** --once: the events the stream starts with (the server's recent history). */
async function recentEvents(base: string): Promise<EventText[]> {
  const events: EventText[] = [];
  const ctl = new AbortController();
  let quiet: NodeJS.Timeout | undefined;
  const settle = () => {
    clearTimeout(quiet);
    quiet = setTimeout(() => ctl.abort(), HISTORY_QUIET_MS);
  };
  const cap = setTimeout(() => ctl.abort(), HISTORY_MAX_MS);
  try {
    settle();
    await readEvents(base, 0, ctl.signal, (e) => {
      events.push(e);
      settle();
    });
  } finally {
    clearTimeout(quiet);
    clearTimeout(cap);
    ctl.abort();
  }
  return events;
}

// ---- the text ------------------------------------------------------------------

/** 1536 -> "1.5K", 1234567 -> "1.2M"; exact below 1024. */
function shortBytes(n: number): string {
  return formatBytes(n).replace(/ (K|M|G|T|P)iB$/, '$1').replace(/ B$/, '');
}

function shortCount(n: number): string {
  if (n < 100_000) return String(n);
  if (n < 100_000_000) return `${Math.round(n / 1000)}k`;
  return `${Math.round(n / 1_000_000)}M`;
}

function clip(s: string, n: number): string {
  return s.length <= n ? s : `${s.slice(0, n - 1)}…`;
}

interface Column {
  title: string;
  right?: boolean;
  value: (p: PeerView) => string;
  max?: number;
}

const COLUMNS: Column[] = [
  { title: 'ID', right: true, value: (p) => String(p.id) },
  { title: 'NODE', value: (p) => p.nodename || '-', max: 16 },
  { title: 'KIND', value: (p) => peerCategory(p) },
  { title: 'C-CLASS', value: (p) => p.cclass || '-', max: 16 },
  { title: 'SID/CID', value: (p) => (p.sid === null && p.cid === null ? '-' : `${p.sid ?? '?'}/${p.cid ?? '?'}`) },
  { title: 'LINK', value: (p) => p.link ?? '-' },
  { title: 'MSGS-IN', right: true, value: (p) => shortCount(p.counters.messagesIn) },
  { title: 'MSGS-OUT', right: true, value: (p) => shortCount(p.counters.messagesOut) },
  { title: 'BYTES-IN', right: true, value: (p) => shortBytes(p.counters.bytesIn) },
  { title: 'BYTES-OUT', right: true, value: (p) => shortBytes(p.counters.bytesOut) },
  { title: 'BELLS', right: true, value: (p) => shortCount(p.counters.doorbells) },
  { title: 'DROPS', right: true, value: (p) => shortCount(p.counters.drops) },
  { title: 'QUEUED', right: true, value: (p) => shortCount(p.counters.queued) },
  { title: 'RING-IN', right: true, value: (p) => (p.rings ? `${fillPercent(p.rings.inMax, p.rings.capacity)}%` : '-') },
  { title: 'RING-OUT', right: true, value: (p) => (p.rings ? `${fillPercent(p.rings.outMax, p.rings.capacity)}%` : '-') },
];

/** The peers as a table, the switch last; one string per line. */
export function peerTable(peers: PeerView[]): string[] {
  const sorted = [...peers].sort((a, b) => (a.kind === 'switch' ? 1 : 0) - (b.kind === 'switch' ? 1 : 0) || a.id - b.id);
  const cells = sorted.map((p) => COLUMNS.map((c) => clip(c.value(p), c.max ?? 64)));
  const widths = COLUMNS.map((c, i) => Math.max(c.title.length, ...cells.map((r) => r[i].length)));
  const line = (row: string[]) =>
    row
      .map((v, i) => (COLUMNS[i].right ? v.padStart(widths[i]) : v.padEnd(widths[i])))
      .join('  ')
      .trimEnd();
  return [line(COLUMNS.map((c) => c.title)), ...cells.map(line)];
}

export function eventLine(e: EventText): string {
  return `${formatClock(e.time)}  ${e.type.padEnd(11)} ${describeEvent(e)}`;
}

export interface ViewState {
  url: string;
  peers: PeersAnswer | null;
  /** The server's events, and the view's own notes (type 'note'). */
  events: EventText[];
  /** What is wrong now, shown at the top ('' when all is well). */
  problem: string;
  stream: 'live' | 'reconnecting' | 'snapshot';
}

/** The whole screen: a header, the table, the last events that fit in
 * `rows` lines (all of them when rows is null). Lines are cut at `columns`. */
export function renderView(s: ViewState, columns: number | null, rows: number | null): string[] {
  const out: string[] = [];
  const a = s.peers;
  if (a) {
    const sw = a.peers.find((p) => p.kind === 'switch');
    const n = a.peers.filter((p) => p.kind !== 'switch').length;
    const up = formatDuration(Date.now() - Date.parse(a.server.startedAt));
    out.push(`famez top  ${s.url}  famez ${a.server.version}  up ${up}  events ${s.stream}`);
    out.push(
      `socket ${a.server.socket}  shared memory ${formatBytes(a.server.sharedMemory)}${a.server.fabric ? '' : ' (--silent)'}  peers ${n}${sw ? ` of ${sw.id - 1}` : ''}  joins ${a.totals.connects}  leaves ${a.totals.disconnects}  refusals ${a.totals.refusals}`,
    );
  } else {
    out.push(`famez top  ${s.url}`);
  }
  if (s.problem) out.push(`!! ${s.problem}`);
  out.push('');
  if (a) out.push(...peerTable(a.peers));
  out.push('');
  out.push('EVENTS (newest last)');
  let events = s.events;
  if (rows !== null) events = events.slice(-Math.max(1, rows - out.length));
  if (events.length === 0) out.push('  (none yet)');
  for (const e of events) out.push(eventLine(e));
  return columns === null ? out : out.map((l) => (l.length > columns ? l.slice(0, columns) : l));
}

// ---- running -------------------------------------------------------------------

export async function runTop(argv: string[]): Promise<number> {
  let o: TopOptions;
  try {
    o = parseTopArgs(argv);
  } catch (e) {
    if (e instanceof UsageError) {
      process.stderr.write(`famez top: ${e.message}\n`);
      return 2;
    }
    throw e;
  }
  if (o.help) {
    process.stdout.write(HELP);
    return 0;
  }
  let first: PeersAnswer;
  try {
    first = await fetchPeers(o.url);
  } catch (e) {
    if (!(e instanceof TopError)) throw e;
    process.stderr.write(`famez top: ${e.message}\n`);
    return 1;
  }
  if (o.once) {
    let problem = '';
    let events: EventText[] = [];
    try {
      const names = new Nodenames();
      events = (await recentEvents(o.url)).map((e) => names.fill(e));
    } catch (e) {
      problem = `events: ${(e as Error).message}`;
    }
    const lines = renderView({ url: o.url, peers: first, events: events.slice(-20), problem, stream: 'snapshot' }, null, null);
    process.stdout.write(`${lines.join('\n')}\n`);
    return 0;
  }
  return live(o.url, first);
}

/** The live view until q, Ctrl-C or a signal. */
function live(base: string, first: PeersAnswer): Promise<number> {
  const tty = process.stdout.isTTY === true;
  const state: ViewState = { url: base, peers: first, events: [], problem: '', stream: 'reconnecting' };
  let startedAt = first.server.startedAt;
  let lastSeq = 0;
  let stopped = false;
  let streamCtl = new AbortController();
  let streamTimer: NodeJS.Timeout | undefined;
  const names = new Nodenames();
  for (const p of first.peers) names.note(p.id, p.nodename);

  const draw = () => {
    if (stopped) return;
    const lines = renderView(state, tty ? (process.stdout.columns ?? 120) : null, tty ? (process.stdout.rows ?? 40) : 30);
    // Home, the lines each clearing the rest of its row, then the rest of the screen.
    if (tty) process.stdout.write(`\x1b[H${lines.map((l) => `${l}\x1b[K`).join('\n')}\x1b[J`);
    else process.stdout.write(`${lines.join('\n')}\n\n`);
  };

  const stream = () => {
    if (stopped) return;
    streamCtl = new AbortController();
    const ctl = streamCtl;
    readEvents(
      base,
      lastSeq,
      ctl.signal,
      (e) => {
        if (e.type !== 'skipped' && e.seq <= lastSeq) return;
        lastSeq = Math.max(lastSeq, e.seq);
        state.events.push(names.fill(e));
        if (state.events.length > KEEP_EVENTS) state.events.splice(0, state.events.length - KEEP_EVENTS);
      },
      () => {
        state.stream = 'live';
        draw();
      },
    )
      .catch(() => undefined)
      .finally(() => {
        if (stopped || ctl !== streamCtl) return;
        state.stream = 'reconnecting';
        streamTimer = setTimeout(stream, REDRAW_MS);
      });
  };

  const poll = async () => {
    try {
      const a = await fetchPeers(base);
      if (a.server.startedAt !== startedAt) {
        // Another server there now: its events start again at 1.
        startedAt = a.server.startedAt;
        lastSeq = 0;
        state.events.push({ seq: 0, time: new Date().toISOString(), type: 'note', reason: 'the server restarted' });
        streamCtl.abort();
      }
      for (const p of a.peers) names.note(p.id, p.nodename);
      state.peers = a;
      state.problem = '';
    } catch (e) {
      state.problem = `${(e as Error).message} (retrying)`;
    }
    draw();
  };

  return new Promise<number>((resolve) => {
    const timer = setInterval(() => void poll(), REDRAW_MS);
    const onKey = (key: Buffer) => {
      const k = key.toString('latin1');
      if (k === 'q' || k === 'Q' || k.includes('\x03') || k.includes('\x04')) stop();
    };
    const restore = () => {
      if (tty) process.stdout.write('\x1b[?25h\x1b[?1049l');
    };
    const stop = () => {
      if (stopped) return;
      stopped = true;
      clearInterval(timer);
      clearTimeout(streamTimer);
      streamCtl.abort();
      process.stdin.off('data', onKey);
      if (process.stdin.isTTY) process.stdin.setRawMode(false);
      process.stdin.pause();
      process.off('SIGINT', stop).off('SIGTERM', stop).off('SIGHUP', stop).off('exit', restore);
      process.stdout.off('resize', draw);
      restore();
      resolve(0);
    };
    if (tty) process.stdout.write('\x1b[?1049h\x1b[?25l');
    process.on('exit', restore);
    process.on('SIGINT', stop).on('SIGTERM', stop).on('SIGHUP', stop);
    process.stdout.on('resize', draw);
    if (process.stdin.isTTY) {
      process.stdin.setRawMode(true);
      process.stdin.on('data', onKey);
      process.stdin.resume();
    }
    stream();
    draw();
  });
}
