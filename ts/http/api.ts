// famez's HTTP side (docs/http-api.md) on node:http: FAME-Z's /system, the
// REST API, a Server-Sent Events stream, Prometheus /metrics, the admin
// actions behind a bearer token, and the web view's files. A dozen routes
// need no framework, and node:http starts in no time (fastify alone took
// 0.4 s of CPU to load, paid by every server start). Every answer has its
// JSON schema in schemas/ (the tests validate each answer against it);
// every bad request is a 400 with a sentence.
import '../dispose.js';
import { timingSafeEqual } from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as path from 'node:path';

import type { SwitchMessage } from '../fabric/fabric.js';
import { silentLogger, type Logger } from '../log.js';
import type { FabricEvent, Monitor } from '../observe/monitor.js';
import type { Metrics } from './metrics.js';

export interface HttpConfig {
  host: string;
  port: number;
  /** The port was asked for: when it is taken, fail instead of taking any free one. */
  explicit?: boolean;
  /** The admin bearer token; null: admin actions are refused (403). */
  token?: string | null;
  logger?: Logger;
  version: string;
}

export interface HttpService {
  /** e.g. http://127.0.0.1:1991/ */
  readonly url: string;
  readonly port: number;
  /** It took another port than the one asked for (that one was in use). */
  readonly movedFrom: number | null;
  close(): Promise<void>;
  /** close(), for `await using`. */
  [Symbol.asyncDispose](): Promise<void>;
}

export class HttpError extends Error {
  override name = 'HttpError';
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/** The schemas/ folder (beside dist/ in the package, and in a checkout). */
export const SCHEMA_DIR = path.resolve(__dirname, '..', '..', 'schemas');

/** The web view's files: dist/web in the package; in a checkout run by
 * tsx, the built dist/web beside ts/. */
function webDir(): string | null {
  for (const dir of [path.resolve(__dirname, '..', 'web'), path.resolve(__dirname, '..', '..', 'dist', 'web')]) {
    if (fs.existsSync(path.join(dir, 'index.html')) && fs.existsSync(path.join(dir, 'app.js'))) return dir;
  }
  return null;
}

const WEB_FILES: Record<string, string> = {
  '/': 'index.html',
  '/index.html': 'index.html',
  '/app.js': 'app.js',
  '/app.css': 'app.css',
};
const TYPES: Record<string, string> = { '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8', '.css': 'text/css; charset=utf-8' };

/** Message events a stream gets per second at most; the rest are counted
 * into one `skipped` event a second. */
const MESSAGES_PER_SECOND = 100;
/** Bytes a stream may have unsent before it misses events (a reader that
 * does not read never holds the server back). */
const STREAM_HIGH_WATER = 256 * 1024;
const MAX_BODY = 16 * 1024;
const STATUS_NAMES: Record<number, string> = {
  400: 'Bad Request',
  403: 'Forbidden',
  404: 'Not Found',
  405: 'Method Not Allowed',
  413: 'Payload Too Large',
  415: 'Unsupported Media Type',
  500: 'Internal Server Error',
};

/** A request that gets a 4xx: thrown by a handler, answered with error.json. */
class Refusal extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

interface Request {
  method: string;
  path: string;
  query: URLSearchParams;
  headers: http.IncomingHttpHeaders;
  /** The route's :id. */
  id: number;
  body: () => Promise<unknown>;
  raw: http.IncomingMessage;
  res: http.ServerResponse;
}

/** What a handler gives back: a JSON value, or 'handled' when it wrote
 * the answer itself (the event stream, /metrics). */
type Answer = unknown;
type Handler = (req: Request) => Answer | Promise<Answer>;

interface Route {
  method: 'GET' | 'POST';
  /** The path, with :id for a peer ID. */
  pattern: string;
  handler: Handler;
  /** GET /system: FAME-Z dashboards load it from another origin. */
  cors?: boolean;
}

const HANDLED = Symbol('handled');

export async function startHttp(monitor: Monitor, config: HttpConfig, metrics: Promise<Metrics>): Promise<HttpService> {
  const log = (config.logger ?? silentLogger).child({ component: 'http' });
  const routes = apiRoutes(monitor, config, log, metrics);
  const web = webDir();
  const streams = new Set<http.ServerResponse>();
  const server = http.createServer((raw, res) => {
    void serve(raw, res, routes, web, log).then(() => undefined);
  });
  server.on('clientError', (_e, socket) => socket.destroy());
  // Event streams stay open: closing the server ends them.
  server.on('request', (_req, res) => {
    streams.add(res);
    res.on('close', () => streams.delete(res));
  });
  const listen = (port: number) =>
    new Promise<void>((resolve, reject) => {
      const onError = (e: Error) => reject(e);
      server.once('error', onError);
      server.listen({ host: config.host, port }, () => {
        server.off('error', onError);
        resolve();
      });
    });
  let movedFrom: number | null = null;
  try {
    await listen(config.port);
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    if (err.code !== 'EADDRINUSE' || config.explicit || config.port === 0) throw new HttpError(err.code ?? 'EUNKNOWN', httpFailure(config, err));
    // The default port is taken (another famez, say): any free one, said so.
    movedFrom = config.port;
    await listen(0);
  }
  server.on('error', (e) => log.error({ event: 'http-error', reason: e.message }, `HTTP server: ${e.message}`));
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : config.port;
  const host = config.host.includes(':') ? `[${config.host}]` : config.host;
  const close = () =>
    new Promise<void>((resolve) => {
      for (const res of streams) res.destroy();
      server.close(() => resolve());
      server.closeAllConnections();
    });
  return { url: `http://${host}:${port}/`, port, movedFrom, close, [Symbol.asyncDispose]: close };
}

function httpFailure(config: HttpConfig, e: NodeJS.ErrnoException): string {
  const where = `${config.host}:${config.port}`;
  switch (e.code) {
    case 'EADDRINUSE':
      return `cannot serve HTTP on ${where}: the port is in use; choose another with --http PORT or turn it off with --no-http`;
    case 'EACCES':
      return `cannot serve HTTP on ${where}: ports below 1024 need privilege; choose another with --http PORT`;
    case 'EADDRNOTAVAIL':
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return `cannot serve HTTP on ${where}: this machine has no such address; use 127.0.0.1 or an address of this machine`;
    default:
      return `cannot serve HTTP on ${where}: ${e.message}`;
  }
}

async function serve(raw: http.IncomingMessage, res: http.ServerResponse, routes: Route[], web: string | null, log: Logger): Promise<void> {
  const url = new URL(raw.url ?? '/', 'http://famez');
  const method = raw.method ?? 'GET';
  const done = (status: number) => log.debug({ event: 'http', method, url: raw.url, status }, `${method} ${raw.url} ${status}`);
  try {
    const found = match(routes, method, url.pathname);
    if (found === null && (method === 'GET' || method === 'HEAD') && WEB_FILES[url.pathname] !== undefined) {
      if (!web) throw new Refusal(404, 'the web view is not built: run npm run build');
      const file = WEB_FILES[url.pathname];
      const body = await fs.promises.readFile(path.join(web, file));
      res.writeHead(200, { 'content-type': TYPES[path.extname(file)], 'cache-control': 'no-cache', 'content-length': body.length });
      res.end(method === 'HEAD' ? undefined : body);
      return done(200);
    }
    if (found === null) throw new Refusal(404, `no ${method} ${url.pathname} here; see /api/v1/peers, /system, /metrics, /api/v1/events`);
    if (found === 'method') throw new Refusal(405, `${url.pathname} does not take ${method}`);
    const { route, id } = found;
    if (route.cors && method === 'OPTIONS') {
      res.writeHead(204, { 'access-control-allow-origin': '*', 'access-control-allow-methods': 'GET', 'access-control-allow-headers': 'Apiversion, Content-Type' });
      res.end();
      return done(204);
    }
    const req: Request = { method, path: url.pathname, query: url.searchParams, headers: raw.headers, id, body: () => readJson(raw), raw, res };
    const answer = await route.handler(req);
    if (answer === HANDLED) return done(res.statusCode);
    const body = JSON.stringify(answer);
    res.writeHead(200, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(body), ...(route.cors ? { 'access-control-allow-origin': '*' } : {}) });
    res.end(body);
    done(200);
  } catch (e) {
    const status = e instanceof Refusal ? e.status : 500;
    if (status === 500) log.error({ event: 'http-error', reason: (e as Error).message }, `HTTP ${method} ${raw.url} failed: ${(e as Error).message}`);
    if (res.headersSent) {
      res.destroy();
      return;
    }
    const message = status === 500 ? 'the server could not answer this request' : (e as Error).message;
    const body = JSON.stringify({ statusCode: status, error: STATUS_NAMES[status] ?? 'Error', message });
    res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(body) });
    res.end(body);
    done(status);
  }
}

/** The route for `method path` (with its :id), 'method' when the path
 * exists under another method, or null. */
function match(routes: Route[], method: string, pathname: string): { route: Route; id: number } | 'method' | null {
  let other = false;
  for (const route of routes) {
    const p = route.pattern.split('/');
    const q = pathname.split('/');
    if (p.length !== q.length) continue;
    let id = -1;
    let ok = true;
    for (let i = 0; i < p.length && ok; i++) {
      if (p[i] === ':id') id = parseId(q[i]);
      else ok = p[i] === q[i];
    }
    if (!ok) continue;
    if (route.method === method || (route.method === 'GET' && method === 'HEAD') || (route.cors && method === 'OPTIONS')) return { route, id };
    other = true;
  }
  return other ? 'method' : null;
}

/** A peer ID in a path: 0..65535, in decimal. */
function parseId(text: string): number {
  if (!/^\d{1,5}$/.test(text) || Number(text) > 65535) throw new Refusal(400, `'${decodeURIComponent(text).slice(0, 40)}' is no peer ID: an ID is a whole number from 0 to 65535`);
  return Number(text);
}

async function readJson(raw: http.IncomingMessage): Promise<unknown> {
  const type = raw.headers['content-type'] ?? '';
  if (!/^application\/json\b/i.test(type)) throw new Refusal(415, 'send the body as JSON (Content-Type: application/json)');
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of raw as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_BODY) throw new Refusal(413, `the body is over ${MAX_BODY} bytes`);
    chunks.push(chunk);
  }
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf8')) as unknown;
  } catch (e) {
    throw new Refusal(400, `the body is not JSON: ${(e as Error).message}`);
  }
}

/** A boolean query parameter: absent, 1/true/yes, 0/false/no. */
function flag(q: URLSearchParams, name: string): boolean {
  const v = q.get(name);
  if (v === null) return false;
  if (/^(1|true|yes|)$/i.test(v)) return true;
  if (/^(0|false|no)$/i.test(v)) return false;
  throw new Refusal(400, `?${name} takes 1 or 0 (true or false), got '${v.slice(0, 40)}'`);
}

function onlyParams(q: URLSearchParams, allowed: string[]): void {
  for (const k of q.keys()) if (!allowed.includes(k)) throw new Refusal(400, `unknown query parameter '${k.slice(0, 40)}'${allowed.length ? ` (this takes ${allowed.map((a) => `?${a}`).join(', ')})` : ''}`);
}

function apiRoutes(monitor: Monitor, config: HttpConfig, log: Logger, metrics: Promise<Metrics>): Route[] {
  const admin = (req: Request): void => {
    if (!config.token) throw new Refusal(403, 'admin actions are off: start the server with --http-token or --http-token-file');
    const given = /^Bearer (.+)$/i.exec(req.headers.authorization ?? '')?.[1] ?? '';
    const a = Buffer.from(given);
    const b = Buffer.from(config.token);
    if (a.length !== b.length || !timingSafeEqual(a, b)) {
      log.warn({ event: 'http-refused', url: req.path }, `refused an admin request to ${req.path}: ${given ? 'wrong' : 'no'} bearer token`);
      throw new Refusal(403, given ? 'wrong bearer token' : 'admin actions need Authorization: Bearer TOKEN');
    }
  };
  const noQuery = (req: Request) => onlyParams(req.query, []);
  return [
    {
      method: 'GET',
      pattern: '/system',
      cors: true,
      handler: (req) => (noQuery(req), monitor.system()),
    },
    {
      method: 'GET',
      pattern: '/api/v1/peers',
      handler: (req) => {
        noQuery(req);
        return {
          peers: monitor.peers(),
          totals: { connects: monitor.totals.connects, disconnects: monitor.totals.disconnects, refusals: monitor.totals.refusals },
          server: {
            socket: monitor.server.socketPath,
            version: config.version,
            startedAt: new Date(monitor.startedAt).toISOString(),
            fabric: monitor.fabric !== null,
            sharedMemory: monitor.server.config.size,
          },
        };
      },
    },
    {
      method: 'GET',
      pattern: '/api/v1/peers/:id',
      handler: (req) => {
        noQuery(req);
        const v = monitor.peer(req.id);
        if (!v) throw new Refusal(404, `no peer ${req.id} is connected`);
        return v;
      },
    },
    {
      method: 'GET',
      pattern: '/api/v1/events',
      handler: (req) => {
        onlyParams(req.query, ['content', 'since']);
        const content = flag(req.query, 'content');
        const s = req.query.get('since');
        if (s !== null && !/^\d{1,15}$/.test(s)) throw new Refusal(400, `?since takes an event's seq (a whole number), got '${s.slice(0, 40)}'`);
        const lastId = Number(req.headers['last-event-id']);
        const since = s !== null ? Number(s) : Number.isInteger(lastId) && lastId >= 0 ? lastId : null;
        stream(monitor, req.res, content, since, log);
        return HANDLED;
      },
    },
    {
      method: 'GET',
      pattern: '/metrics',
      handler: async (req) => {
        noQuery(req);
        const m = await metrics;
        const text = await m.text();
        req.res.writeHead(200, { 'content-type': m.contentType, 'content-length': Buffer.byteLength(text) });
        req.res.end(req.method === 'HEAD' ? undefined : text);
        return HANDLED;
      },
    },
    {
      method: 'POST',
      pattern: '/api/v1/peers/:id/disconnect',
      handler: (req) => {
        admin(req);
        if (!monitor.server.kick(req.id, 'disconnected by the HTTP API')) throw new Refusal(404, `no peer ${req.id} is connected`);
        return { ok: true, peer: req.id };
      },
    },
    {
      method: 'POST',
      pattern: '/api/v1/messages',
      handler: async (req) => {
        admin(req);
        const body = await req.body();
        const m = body as { to?: unknown; text?: unknown };
        if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new Refusal(400, 'the body must be a JSON object {"to": ID, "text": "..."}');
        const extra = Object.keys(m).filter((k) => k !== 'to' && k !== 'text');
        if (extra.length) throw new Refusal(400, `unknown field '${extra[0].slice(0, 40)}': the body takes "to" and "text"`);
        if (!Number.isInteger(m.to) || (m.to as number) < 1 || (m.to as number) > 65535) throw new Refusal(400, '"to" must be a peer ID (a whole number from 1 to 65535)');
        if (typeof m.text !== 'string' || m.text.length === 0) throw new Refusal(400, '"text" must be a non-empty string');
        if (Buffer.byteLength(m.text) > 383) throw new Refusal(400, `"text" has ${Buffer.byteLength(m.text)} bytes; a mailbox slot holds 383`);
        const f = monitor.fabric;
        if (!f) throw new Refusal(404, 'there is no switch to send as (the server runs --silent)');
        if (!f.say(m.to as number, m.text)) throw new Refusal(404, `no peer ${m.to as number} is connected to the switch`);
        return { ok: true, peer: m.to };
      },
    },
  ];
}

/** One SSE subscriber: recent events after `since` (or Last-Event-ID),
 * then live ones; at most MESSAGES_PER_SECOND message events a second
 * and nothing while the client has STREAM_HIGH_WATER bytes unread (both
 * counted into a `skipped` event). A comment every 15 s keeps proxies
 * from closing it. */
function stream(monitor: Monitor, res: http.ServerResponse, content: boolean, since: number | null, log: Logger): void {
  res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache', connection: 'keep-alive', 'access-control-allow-origin': '*' });
  let skipped = 0;
  let window = Math.floor(Date.now() / 1000);
  let inWindow = 0;
  const full = () => res.writableLength > STREAM_HIGH_WATER;
  const send = (data: object, type: string, seq: number) => res.write(`id: ${seq}\nevent: ${type}\ndata: ${JSON.stringify(data)}\n\n`);
  const flushSkipped = () => {
    if (skipped === 0 || full()) return;
    send({ seq: monitor.lastSeq, time: new Date().toISOString(), type: 'skipped', count: skipped }, 'skipped', monitor.lastSeq);
    skipped = 0;
  };
  const onEvent = (e: FabricEvent, m: SwitchMessage | null) => {
    if (full()) {
      skipped++;
      return;
    }
    if (e.type === 'message') {
      const now = Math.floor(Date.now() / 1000);
      if (now !== window) {
        window = now;
        inWindow = 0;
        flushSkipped();
      }
      if (++inWindow > MESSAGES_PER_SECOND) {
        skipped++;
        return;
      }
    }
    const data = content && m ? { ...e, text: messageText(m.payload) } : e;
    send(data, e.type, e.seq);
  };
  res.write(': famez event stream\n\n');
  if (since !== null) for (const e of monitor.recent(since)) send(e, e.type, e.seq);
  monitor.on('event', onEvent);
  const beat = setInterval(() => {
    flushSkipped();
    if (!full()) res.write(': keep-alive\n\n');
  }, 15_000);
  const skipTimer = setInterval(flushSkipped, 1000);
  beat.unref();
  skipTimer.unref();
  const end = () => {
    clearInterval(beat);
    clearInterval(skipTimer);
    monitor.off('event', onEvent);
  };
  res.on('close', end);
  res.on('error', end);
  log.debug({ event: 'http-stream' }, 'an event stream opened');
}

/** A message's first 400 bytes as text (NULs and bad UTF-8 as FAME-Z text reads them). */
function messageText(payload: Uint8Array): string {
  return Buffer.from(payload.buffer, payload.byteOffset, Math.min(payload.length, 400))
    .toString('utf8')
    .replace(/\0+$/, '');
}
