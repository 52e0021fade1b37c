// `famez top` (ts/cli/top.ts) against a real `famez serve` with real
// peers: --once prints the peers' table and the recent events; the live
// view redraws in a terminal (a pty from script(1)) and q restores it; a
// pipe gets snapshot after snapshot until SIGTERM; an unreachable URL is
// one line and exit 1. Its SSE parser and its text, directly.
import * as net from 'node:net';
import * as path from 'node:path';

import anyTest, { type TestFn } from 'ava';

import { FabricClient } from '../ts/fabric/client.js';
import { SseParser, normalizeUrl, parseTopArgs, peerTable, renderView } from '../ts/cli/top.js';
import type { PeerView } from '../ts/observe/monitor.js';
import { LineProcess, waitFor, which } from './helpers/wait.js';
import { MAIN, ROOT, Scratch, type FamezProcess } from './helpers/serve.js';

const test = anyTest as TestFn<Scratch>;
const WAIT_MS = 20_000;

test.beforeEach((t) => {
  t.context = new Scratch();
});
test.afterEach.always(async (t) => {
  await t.context.cleanup();
});

async function serve(t: { context: Scratch }): Promise<{ sock: string; url: string; server: FamezProcess }> {
  const sock = path.join(t.context.dir(), 'sock');
  const server = await t.context.serve(['-S', sock, '--memfd', '--max-peers', '4', '--http', '0']);
  const m = await server.waitFor(/web view and API at (http:\/\/[^\s;]+\/)/);
  return { sock, url: m[1], server };
}

/** A port nothing listens on: one the kernel just gave out and took back. */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

test('famez top --once shows a real peer in the table, the switch, and the recent events', async (t) => {
  const { sock, url, server } = await serve(t);
  const client = t.context.client(['-S', sock, '-N', 'topnode']);
  await client.waitFor(/fabric of 4 peers: this is peer 1 'topnode'/, WAIT_MS);
  const c = t.context.track(await FabricClient.connect(sock, { nodename: 'second' }));
  await c.request('switch', 'ping');
  // Both have told the switch their C-Class.
  await server.waitFor(/switch: peer 1: C-Class=Debugger/, WAIT_MS);
  await server.waitFor(/switch: peer 2: C-Class=Debugger/, WAIT_MS);

  const p = await t.context.run(['top', '--once', url]);
  t.deepEqual(p.exitInfo, { code: 0, signal: null }, p.stderr);
  t.is(p.stderr, '');
  const out = p.stdout;
  t.regex(out, new RegExp(`^famez top {2}${url.replace(/[.]/g, '\\.')} {2}famez \\d+\\.\\d+\\.\\d+`, 'm'));
  t.regex(out, new RegExp(`socket ${sock.replace(/[/.]/g, '\\$&')}.*peers 2 of 4`));
  t.regex(out, /^ID +NODE +KIND +C-CLASS +SID\/CID +LINK +MSGS-IN +MSGS-OUT +BYTES-IN +BYTES-OUT +BELLS +DROPS +QUEUED +RING-IN +RING-OUT$/m);
  t.regex(out, /^ +1 +topnode +client +Debugger +0\/0 +up +\d+ +\d+ /m);
  t.regex(out, /^ +2 +second +client +Debugger +/m);
  t.regex(out, /^ +5 +Z-switch +switch +FabricSwitch +27\/500 +configured /m);
  // The switch's row comes last, after the peers.
  t.true(out.indexOf(' topnode ') < out.indexOf(' Z-switch '));
  t.regex(out, /^EVENTS \(newest last\)$/m);
  t.regex(out, /^\d\d:\d\d:\d\d\.\d{3} {2}join +peer 1 joined \(1 connected\)$/m);
  t.regex(out, /^\d\d:\d\d:\d\d\.\d{3} {2}link +topnode \(1\) link up, Debugger/m);
  t.regex(out, /second \(2\) → switch ping, 4 B by slot/);
});

test('famez top in a terminal redraws in place, and q quits and gives the terminal back', async (t) => {
  const script = which('script');
  if (!script) return t.fail('script(1) (util-linux) is needed to give famez top a terminal');
  const { sock, url } = await serve(t);
  t.context.track(await FabricClient.connect(sock, { nodename: 'ttypeer' }));
  // The built famez when it is current, as the other commands' tests run it
  // (under tsx a cold start compiles the sources first).
  const command = [process.execPath, ...MAIN, 'top', url].map((a) => `'${a}'`).join(' ');
  const p = LineProcess.spawn(script, ['-qfec', `stty cols 160 rows 30; exec ${command}`, '/dev/null'], { cwd: ROOT });
  t.context.procs.push(p);
  // The alternate screen, then two redraws, each from its top-left corner.
  const ESC = '\x1b';
  await waitFor(() => p.stdout.includes(`${ESC}[?1049h`) && p.stdout.split(`${ESC}[H`).filter((s) => s.includes('ttypeer')).length >= 2, () => `two redraws with the peer (${p.stdout.split(`${ESC}[H`).length - 1} redraws; stdout ends ${JSON.stringify(p.stdout.slice(-400))}; stderr ${JSON.stringify(p.stderr.slice(-400))})`, WAIT_MS);
  await p.waitFor(/events live/, WAIT_MS);
  p.child.stdin!.write('q');
  t.deepEqual(await p.wait(WAIT_MS), { code: 0, signal: null }, p.transcript);
  // The cursor is shown again and the screen the user had comes back.
  t.true(p.stdout.trimEnd().endsWith(`${ESC}[?25h${ESC}[?1049l`), JSON.stringify(p.stdout.slice(-80)));
});

test('famez top into a pipe prints one snapshot after another until SIGTERM, then exits 0', async (t) => {
  const { sock, url } = await serve(t);
  t.context.track(await FabricClient.connect(sock, { nodename: 'piped' }));
  const p = t.context.famez(['top', url]);
  await p.waitFor(/(famez top [^\n]*\n[\s\S]*piped[\s\S]*){2}/, WAIT_MS);
  t.false(p.stdout.includes('\x1b'), 'no terminal codes into a pipe');
  p.kill('SIGTERM');
  t.deepEqual(await p.wait(WAIT_MS), { code: 0, signal: null }, p.stderr);
});

test('famez top --once on a URL where nothing listens: one line naming the URL and famez serve, exit 1', async (t) => {
  const port = await freePort();
  const url = `http://127.0.0.1:${port}/`;
  const p = await t.context.run(['top', '--once', url]);
  t.deepEqual(p.exitInfo, { code: 1, signal: null });
  t.is(p.stdout, '');
  const lines = p.stderr.split('\n').filter((l) => l);
  t.is(lines.length, 1, p.stderr);
  t.regex(lines[0], new RegExp(`^famez top: cannot reach ${url.replace(/[.]/g, '\\.')} \\(connection refused\\).*famez serve`));
  // Without --once too: it does not start a view of nothing.
  const live = await t.context.run(['top', String(port)]);
  t.deepEqual(live.exitInfo, { code: 1, signal: null });
  t.regex(live.stderr, /^famez top: cannot reach http:\/\/127\.0\.0\.1:\d+\/ \(connection refused\)/);
});

test('famez top: bad command lines exit 2 with one line; --help; famez --help lists it', async (t) => {
  for (const [args, re] of [
    [['top', '--bogus'], /^famez top: unknown option '--bogus'/],
    [['top', 'a', 'b'], /^famez top: famez top takes one URL, got 2/],
    [['top', 'ftp://x/'], /^famez top: 'ftp:\/\/x\/': famez top speaks http:\/\/ or https:\/\//],
  ] as const) {
    const p = await t.context.run([...args]);
    t.deepEqual(p.exitInfo, { code: 2, signal: null }, args.join(' '));
    t.regex(p.stderr, re);
    t.is(p.stderr.trimEnd().split('\n').length, 1, p.stderr);
  }
  const help = await t.context.run(['top', '--help']);
  t.is(help.exitInfo.code, 0);
  t.regex(help.stdout, /^Usage: famez top \[URL\] \[--once\]/);
  const main = await t.context.run(['--help']);
  t.regex(main.stdout, /^ {2}top +a live text view/m);
});

test('top: URLs, HOST:PORT and PORT; the options', (t) => {
  t.is(normalizeUrl('http://127.0.0.1:1991'), 'http://127.0.0.1:1991/');
  t.is(normalizeUrl('localhost:8080'), 'http://localhost:8080/');
  t.is(normalizeUrl('8080'), 'http://127.0.0.1:8080/');
  t.is(normalizeUrl('https://fabric.example/famez?x=1'), 'https://fabric.example/famez/');
  t.deepEqual(parseTopArgs([]), { url: 'http://127.0.0.1:1991/', once: false, help: false });
  t.deepEqual(parseTopArgs(['--once', '9000']), { url: 'http://127.0.0.1:9000/', once: true, help: false });
});

test('top: the SSE parser takes events split anywhere, CRLF and CR, comments and multi-line data', (t) => {
  const stream = ': famez event stream\r\n\r\nid: 1\r\nevent: join\r\ndata: {"a":1}\r\n\r\nid: 2\nevent: leave\ndata: x\ndata: y\n\n:keep-alive\n\rdata:no-space\r\r\n';
  const whole = new SseParser().push(stream);
  const expected = [
    { event: 'join', data: '{"a":1}', id: '1' },
    { event: 'leave', data: 'x\ny', id: '2' },
    { event: 'message', data: 'no-space', id: '2' },
  ];
  t.deepEqual(whole, expected);
  // Every split point: the same events.
  for (let i = 1; i < stream.length; i++) {
    const p = new SseParser();
    t.deepEqual([...p.push(stream.slice(0, i)), ...p.push(stream.slice(i))], expected, `split at ${i}`);
  }
});

test('top: the table lines up its columns, puts the switch last, and the view fits the terminal', (t) => {
  const peer = (id: number, over: Partial<PeerView>): PeerView => ({
    id,
    nodename: '',
    cclass: 'Debugger',
    sid: 0,
    cid: 0,
    link: 'up',
    kind: 'client',
    hardware: 'debugger',
    process: null,
    connectedSince: new Date(0).toISOString(),
    vectors: 6,
    counters: { messagesIn: 0, bytesIn: 0, messagesOut: 0, bytesOut: 0, doorbells: 0, drops: 0, undelivered: 0, rejected: 0, queued: 0 },
    rings: { capacity: 16384, inUsed: 0, inMax: 0, outUsed: 0, outMax: 0, inBytes: 0, outBytes: 0 },
    ...over,
  });
  const peers = [
    peer(5, { nodename: 'Z-switch', kind: 'switch', hardware: 'switch', cclass: 'FabricSwitch', sid: 27, cid: 500, link: 'configured' }),
    peer(2, { nodename: 'a-very-long-nodename-indeed', cclass: 'Driverless QEMU', hardware: 'qemu', sid: null, cid: null, rings: { capacity: 16384, inUsed: 12288, inMax: 8192, outUsed: 0, outMax: 0, inBytes: 0, outBytes: 0 } }),
    peer(1, { nodename: 'one', counters: { messagesIn: 123456, bytesIn: 1536, messagesOut: 1, bytesOut: 3 * 2 ** 20, doorbells: 7, drops: 2, undelivered: 0, rejected: 0, queued: 1 } }),
  ];
  const lines = peerTable(peers);
  t.deepEqual(
    lines.map((l) => l.split(/ {2,}/)),
    [
      ['ID', 'NODE', 'KIND', 'C-CLASS', 'SID/CID', 'LINK', 'MSGS-IN', 'MSGS-OUT', 'BYTES-IN', 'BYTES-OUT', 'BELLS', 'DROPS', 'QUEUED', 'RING-IN', 'RING-OUT'],
      [' 1', 'one', 'client', 'Debugger', '0/0', 'up', '123k', '1', '1.5K', '3M', '7', '2', '1', '0%', '0%'],
      [' 2', 'a-very-long-nod…', 'qemu', 'Driverless QEMU', '-', 'up', '0', '0', '0', '0', '0', '0', '0', '50%', '0%'],
      [' 5', 'Z-switch', 'switch', 'FabricSwitch', '27/500', 'configured', '0', '0', '0', '0', '0', '0', '0', '0%', '0%'],
    ],
  );
  const events = Array.from({ length: 50 }, (_, i) => ({ seq: i + 1, time: new Date(0).toISOString(), type: 'join' as const, peer: 1, peers: 1 }));
  const answer = { peers, totals: { connects: 3, disconnects: 0, refusals: 0 }, server: { socket: '/tmp/s', version: '0.1.0', startedAt: new Date().toISOString(), fabric: true, sharedMemory: 4 << 20 } };
  const view = renderView({ url: 'http://127.0.0.1:1991/', peers: answer, events, problem: '', stream: 'live' }, 60, 20);
  t.is(view.length, 20);
  t.true(view.every((l) => l.length <= 60));
  t.regex(view[1], /peers 2 of 4 {2}joins 3/);
});
