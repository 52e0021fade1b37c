// The web view (web/, served at / by `famez serve`) in a real browser:
// Debian's chromium driven by playwright-core, against a real server with
// real peers. A peer joins and shows in the graph and the table with its
// nodename, its ping shows in the log, its counters and a ring's fill match
// the API, it leaves and goes; the page reconnects to a restarted server.
// A screenshot is saved under __test__/output/web/ for people to look at.
import * as fs from 'node:fs';
import * as path from 'node:path';

import anyTest, { type ExecutionContext, type TestFn } from 'ava';
import { chromium, type Browser, type BrowserServer, type Page } from 'playwright-core';

import { Client } from '../ts/client/client.js';
import { FabricClient } from '../ts/fabric/client.js';
import type { FabricEvent, PeerView } from '../ts/observe/monitor.js';
import type { ApiEvent, ApiPeer, ApiPeers } from '../web/api.js';
import { ROOT, Scratch, type FamezProcess } from './helpers/serve.js';
import { waitFor } from './helpers/wait.js';

// The page reads the server's own types (web/api.ts re-exports them):
// a server event is one the page can show, checked when this compiles.
const sameShapes = [(p: PeerView): ApiPeer => p, (e: FabricEvent): ApiEvent => e];
void sameShapes;

const CHROMIUM = process.env.FAMEZ_CHROMIUM ?? '/usr/bin/chromium';
const OUTPUT = path.join(ROOT, '__test__', 'output', 'web');
const WAIT_MS = 20_000;

interface Context {
  scratch: Scratch;
  /** The chromium process (launchServer, so that it can be killed by its
   * pid whatever state it is in) and the connection to it. */
  chromium: BrowserServer | null;
  browser: Browser | null;
  /** Errors the page threw, and requests it made, for the assertions. */
  pageErrors: string[];
  requests: string[];
}

const test = anyTest as TestFn<Context>;

test.beforeEach((t) => {
  t.context = { scratch: new Scratch(), chromium: null, browser: null, pageErrors: [], requests: [] };
});

test.afterEach.always(async (t) => {
  const { browser, chromium: server } = t.context;
  t.context.browser = null;
  t.context.chromium = null;
  const bounded = (p: Promise<unknown>) => Promise.race([p.catch(() => undefined), new Promise((r) => setTimeout(r, 10_000).unref())]);
  try {
    if (browser) await bounded(browser.close());
    if (server) await bounded(server.close());
  } finally {
    // A wedged chromium goes by its pid.
    const pid = server?.process().pid;
    if (pid !== undefined && server?.process().exitCode === null) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone
      }
    }
    await t.context.scratch.cleanup();
  }
});

/** chromium, or null when it is missing and the test may be skipped (not in CI). */
function haveChromium(t: ExecutionContext<Context>): boolean {
  if (fs.existsSync(CHROMIUM)) return true;
  const why = `${CHROMIUM} is not installed: the web view test needs Debian's chromium (apt-get install -y chromium; .ci/run installs it), or FAMEZ_CHROMIUM=/path/to/chromium`;
  if (process.env.CI) {
    t.fail(why);
    return false;
  }
  t.log(`skipped: ${why}`);
  t.pass();
  return false;
}

async function serveWithHttp(t: ExecutionContext<Context>, extra: string[] = []): Promise<{ sock: string; server: FamezProcess; url: string }> {
  if (!fs.existsSync(path.join(ROOT, 'dist', 'web', 'app.js'))) throw new Error('dist/web/app.js is missing: build the web view first (npm run build)');
  const sock = path.join(t.context.scratch.dir(), 'sock');
  const server = await t.context.scratch.serve(['-S', sock, '--memfd', '--max-peers', '4', '--http', '0', ...extra]);
  const m = await server.waitFor(/web view and API at (http:\/\/[^\s;]+\/)/);
  return { sock, server, url: m[1] };
}

async function openPage(t: ExecutionContext<Context>, url: string): Promise<Page> {
  const server = await chromium.launchServer({ executablePath: CHROMIUM, args: ['--no-sandbox'], timeout: WAIT_MS });
  t.context.chromium = server;
  const browser = await chromium.connect(server.wsEndpoint(), { timeout: WAIT_MS });
  t.context.browser = browser;
  const page = await browser.newPage({ viewport: { width: 1440, height: 900 } });
  page.setDefaultTimeout(WAIT_MS);
  page.on('pageerror', (e) => t.context.pageErrors.push(e.message));
  page.on('request', (r) => t.context.requests.push(r.url()));
  await page.goto(url);
  return page;
}

async function api(url: string): Promise<ApiPeers> {
  const res = await fetch(new URL('api/v1/peers', url), { signal: AbortSignal.timeout(WAIT_MS) });
  return (await res.json()) as ApiPeers;
}

/** Text of one element, '' when there is none. */
function text(page: Page, selector: string): Promise<string> {
  return page.evaluate((s) => document.querySelector(s)?.textContent ?? '', selector);
}

/** Waits until the page has an element matching `selector` whose text
 * matches `re` (or, with `gone`, has none). */
async function waitText(page: Page, selector: string, re: RegExp, what: string, gone = false): Promise<void> {
  try {
    await page.waitForFunction(
      ([s, source, flags, g]) => {
        const r = new RegExp(source as string, flags as string);
        const found = Array.from(document.querySelectorAll(s as string)).some((e) => r.test(e.textContent ?? ''));
        return g ? !found : found;
      },
      [selector, re.source, re.flags, gone] as const,
      { timeout: WAIT_MS, polling: 50 },
    );
  } catch (e) {
    const seen = await page.evaluate((s) => Array.from(document.querySelectorAll(s)).map((x) => x.textContent), selector).catch(() => []);
    throw new Error(`${what}: ${(e as Error).message.split('\n')[0]}; ${selector} has ${JSON.stringify(seen)}`, { cause: e });
  }
}

test('the web view shows a peer joining (graph and table, with its nodename), its ping in the log, its counters and ring fill, and its leaving', async (t) => {
  if (!haveChromium(t)) return;
  const { sock, url } = await serveWithHttp(t);
  const page = await openPage(t, url);
  await page.waitForSelector('#status[data-state="live"]');
  t.regex(await text(page, '#server-socket'), new RegExp(sock.replace(/[/.]/g, '\\$&')));
  // The switch is there from the start, in the middle of the graph.
  await waitText(page, '[data-graph-node="5"]', /Z-switch/, 'the switch in the graph');
  await waitText(page, 'tr[data-peer-id="5"]', /Z-switch/, 'the switch in the table');
  t.true(await page.locator('#no-peers').isVisible(), 'the table says no peer is connected');

  const c = t.context.scratch.track(await FabricClient.connect(sock, { nodename: 'webpeer' }));
  t.is(c.id, 1);
  await waitText(page, '[data-graph-node="1"]', /webpeer/, 'the new peer in the graph');
  await waitText(page, 'tr[data-peer-id="1"]', /webpeer/, 'the new peer in the table');
  t.false(await page.locator('#no-peers').isVisible(), 'no more "no peer"');
  await waitText(page, '#log li[data-type="join"][data-peer="1"]', /joined/, 'the join in the log');
  // Until it answers the switch's Peer-Attribute its C-Class is the
  // switch's default, 'Driverless QEMU'; then it is a host client.
  await waitText(page, 'tr[data-peer-id="1"] [data-col="cclass"]', /^Debugger$/, 'its C-Class');
  await waitText(page, 'tr[data-peer-id="1"] [data-col="kind"]', /^client$/, 'its kind');
  t.regex(await text(page, '[data-graph-node="1"]'), /ID 1/);

  // It pings the switch: the ping and the pong show in the log, text and all.
  const pong = await c.request('switch', 'ping');
  t.deepEqual(pong.message, { kind: 'pong' });
  await waitText(page, '#log li[data-type="message"][data-peer="1"]', /webpeer \(1\) → switch ping.*“ping”/, 'the ping in the log');
  await waitText(page, '#log li[data-type="message"][data-peer="1"]', /switch → webpeer \(1\) pong/, 'the pong in the log');

  // A second peer that never reads: what webpeer writes into its ring waits there.
  const idle = t.context.scratch.track(await Client.connect(sock));
  await waitFor(() => c.peers.some((p) => p.id === idle.id), 'webpeer to hear of the idle peer', WAIT_MS);
  const chunk = new Uint8Array(1000).fill(0x41);
  await c.sendRing(idle.id, [chunk, chunk, chunk]);
  await waitText(page, 'tr[data-peer-id="2"]', /QEMU|client/, 'the idle peer in the table');

  // The counters and the ring's fill are what the API says (the traffic
  // has stopped, so the API's answer now is the one the page will show).
  const now = await api(url);
  const mine = now.peers.find((p) => p.id === 1)!;
  const idleView = now.peers.find((p) => p.id === 2)!;
  t.true(mine.counters.messagesIn >= 2, JSON.stringify(mine.counters));
  t.true(idleView.rings!.inUsed >= 3000, JSON.stringify(idleView.rings));
  await waitText(page, 'tr[data-peer-id="1"] [data-col="messagesIn"]', new RegExp(`^${mine.counters.messagesIn.toLocaleString('en-US')}$`), 'messages in as the API counts them');
  await waitText(page, 'tr[data-peer-id="1"] [data-col="doorbells"]', new RegExp(`^${mine.counters.doorbells.toLocaleString('en-US')}$`), 'doorbells as the API counts them');
  await page.waitForSelector(`[data-ring-peer="2"] .bar[data-dir="in"][data-used="${idleView.rings!.inUsed}"]`);
  await page.waitForSelector(`[data-ring-peer="1"] .bar[data-dir="out"][data-used="${mine.rings!.outUsed}"]`);
  t.regex(await text(page, '#memmap-legend'), /4 MiB in all.*ring channels \(20 × 16 KiB\)/);

  fs.mkdirSync(OUTPUT, { recursive: true });
  const shot = path.join(OUTPUT, 'web-view.png');
  await page.screenshot({ path: shot, fullPage: true });
  t.log(`screenshot: ${shot}`);

  // webpeer leaves: gone from the graph and the table, its leave in the log.
  c.close();
  await waitText(page, '#log li[data-type="leave"][data-peer="1"]', /webpeer \(1\) left|peer 1 left/, 'the leave in the log');
  await waitText(page, '[data-graph-node="1"]', /./, 'the peer gone from the graph', true);
  await waitText(page, 'tr[data-peer-id="1"]', /./, 'the peer gone from the table', true);
  t.is(await page.locator('tr[data-peer-id="2"]').count(), 1, 'the other peer stays');

  // Everything came from the server itself: nothing from elsewhere.
  const origin = new URL(url).origin;
  t.deepEqual(
    t.context.requests.filter((r) => !r.startsWith(origin) && !r.startsWith('data:')),
    [],
  );
  t.deepEqual(t.context.pageErrors, []);
});

test('the web view says it is reconnecting while the server is away, and picks up a restarted one', async (t) => {
  if (!haveChromium(t)) return;
  const first = await serveWithHttp(t);
  const port = new URL(first.url).port;
  const page = await openPage(t, first.url);
  await page.waitForSelector('#status[data-state="live"]');
  const c = t.context.scratch.track(await FabricClient.connect(first.sock, { nodename: 'before' }));
  await waitText(page, 'tr[data-peer-id="1"]', /before/, 'the first server\'s peer');

  await first.server.stop('SIGTERM');
  c.close();
  await page.waitForSelector('#status[data-state="reconnecting"]');
  t.regex(await text(page, '#status-text'), /reconnecting/);

  // A new server on the same port: the page finds it by itself.
  const sock = path.join(t.context.scratch.dir(), 'sock');
  await t.context.scratch.serve(['-S', sock, '--memfd', '--max-peers', '4', '--http', `127.0.0.1:${port}`]);
  await page.waitForSelector('#status[data-state="live"]');
  await waitText(page, '#log li[data-type="note"]', /the server restarted/, 'the restart noted in the log');
  await waitText(page, 'tr[data-peer-id="1"]', /./, 'the old server\'s peer gone', true);
  t.context.scratch.track(await FabricClient.connect(sock, { nodename: 'after' }));
  await waitText(page, 'tr[data-peer-id="1"]', /after/, 'the new server\'s peer');
  await waitText(page, '#log li[data-type="note"] ~ li[data-type="join"][data-peer="1"]', /joined/, 'the new server\'s events');
  await waitFor(async () => (await text(page, '#server-socket')) === sock, 'the new socket in the status line', WAIT_MS);
  t.deepEqual(t.context.pageErrors, []);
});
