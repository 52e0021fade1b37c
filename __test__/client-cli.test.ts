// `famez client` as a process: it waits for a server, reconnects unless
// --no-reconnect, takes the stock ivshmem-client's stdin commands, and on
// a terminal (a real pty) shows a `cmd> ` prompt that Ctrl-C leaves.
import * as path from 'node:path';

import anyTest, { type TestFn } from 'ava';

import { Scratch, type } from './helpers/serve.js';
import { waitFor } from './helpers/wait.js';

const test = anyTest as TestFn<Scratch>;

test.beforeEach((t) => {
  t.context = new Scratch();
});

test.afterEach.always(async (t) => {
  await t.context.cleanup();
});

test('a client started before the server waits, then connects when the server appears', async (t) => {
  const dir = t.context.dir();
  const sock = path.join(dir, 'sock');
  const c = t.context.client(['-S', sock]);
  await c.waitFor(/waiting for a server on .*retrying every second/);
  const s = await t.context.serve(['--silent', '-S', sock, '--memfd', '-n', '2']);
  // A lone peer cannot know how many vectors are coming (the protocol says
  // no count): it is connected at its first; the second may come later
  // (the fresh-clone test run saw "1 vector(s)" here under load). dump shows both.
  await c.waitFor(/connected to .* as peer 0 \([12] vector\(s\)\); peers: none/);
  type(c, 'dump');
  await c.waitFor(/peer 0: 2 vector\(s\), shared memory 4194304 bytes/);
  type(c, 'quit');
  t.is((await c.wait()).code, 0);
  await s.waitFor(/peer 0 disconnected/);
});

test('a client rejoins a restarted server by default (--reconnect too); with --no-reconnect it exits 1', async (t) => {
  const dir = t.context.dir();
  const sock = path.join(dir, 'sock');
  const s = await t.context.serve(['--silent', '-S', sock, '--memfd']);
  const keeper = t.context.client(['-S', sock]);
  const asked = t.context.client(['-S', sock, '--reconnect']);
  const quitter = t.context.client(['-S', sock, '--no-reconnect']);
  for (const c of [keeper, asked, quitter]) await c.waitFor(/connected to/);
  await s.stop('SIGTERM');
  t.is(s.exitInfo?.code, 0);
  t.is((await quitter.wait()).code, 1);
  t.regex(quitter.stdout, /disconnected: server closed the connection/);
  t.notRegex(quitter.stdout, /waiting for the server/);
  for (const c of [keeper, asked]) await c.waitFor(/disconnected: server closed the connection\n.*waiting for the server on .* to come back; retrying every second/);
  await t.context.serve(['--silent', '-S', sock, '--memfd']);
  for (const c of [keeper, asked]) await c.waitFor(/connected to [^\n]*\n(?:.*\n)*?.*connected to/);
  // Each sees the other: at its welcome, or as a join.
  for (const c of [keeper, asked]) {
    const sinceRejoin = () => c.stdout.slice(c.stdout.lastIndexOf('connected to'));
    await waitFor(() => /peers: \d|peer \d joined/.test(sinceRejoin()), 'the other client in its peers', 20_000);
  }
  for (const c of [keeper, asked]) {
    type(c, 'dump');
    await c.waitFor(/peer \d: 1 vector\(s\)/);
    type(c, 'dump --json');
    const json = JSON.parse((await c.waitFor(/^\{"id":\d.*\}$/m))[0]) as { id: number; vectors: number; memory: number; peers: unknown[] };
    t.like(json, { vectors: 1, memory: 4194304 });
    t.is(json.peers.length, 1);
  }
  for (const c of [keeper, asked]) {
    type(c, 'quit');
    t.is((await c.wait()).code, 0);
  }
});

test("on a terminal (a pty) famez client shows a 'cmd> ' prompt, keeps it under what it prints, and Ctrl-C leaves at the first press", async (t) => {
  const dir = t.context.dir();
  const sock = path.join(dir, 'sock');
  await t.context.serve(['--silent', '-S', sock, '--memfd', '-n', '2']);
  const c = t.context.famezVia(['python3', path.join(__dirname, 'helpers', 'pty-run.py')], ['client', '-S', sock], { stdin: true });
  await c.waitFor(/connected to .* as peer 0/);
  // eslint-disable-next-line no-control-regex
  await waitFor(() => /cmd> (\x1b\[\d+G)?$/.test(c.stdout), () => `the prompt in ${JSON.stringify(c.stdout.slice(-200))}`, 20_000);
  c.child.stdin!.write('dump\r');
  await c.waitFor(/peer 0: 2 vector\(s\), shared memory 4194304 bytes/);
  // Half a line typed, then another peer joins: the line about it clears
  // the prompt, and the prompt comes back with what was typed.
  c.child.stdin!.write('du');
  // eslint-disable-next-line no-control-regex
  await waitFor(() => /cmd> (\x1b\[\d+G)?du$/.test(c.stdout), 'the typed text echoed', 20_000);
  const other = t.context.client(['-S', sock]);
  await other.waitFor(/as peer 1/);
  // eslint-disable-next-line no-control-regex
  await waitFor(() => /\x1b\[2K\x1b\[1Gpeer 1 joined \(2 vector\(s\)\)\r?\n(\x1b\[1G)?(\x1b\[0J)?cmd> (\x1b\[\d+G)?du/.test(c.stdout), () => `the join line and the redrawn prompt in ${JSON.stringify(c.stdout.slice(-300))}`, 20_000);
  c.child.stdin!.write('\x03');
  const exit = await c.wait(20_000);
  t.is(exit.code, 0, c.transcript);
  await other.waitFor(/peer 0 left/);
});

test('int PEER VECTOR, int PEER all and int all ring the other client; bad commands get usage', async (t) => {
  const dir = t.context.dir();
  const sock = path.join(dir, 'sock');
  await t.context.serve(['--silent', '-S', sock, '--memfd', '-n', '3']);
  const a = t.context.client(['-S', sock]);
  await a.waitFor(/as peer 0/);
  const b = t.context.client(['-S', sock]);
  await b.waitFor(/as peer 1 \(3 vector\(s\)\); peers: 0/);
  await a.waitFor(/peer 1 joined \(3 vector\(s\)\)/);

  type(a, 'int 1 2');
  await a.waitFor(/rang peer 1 vector 2/);
  await b.waitFor(/interrupt on vector 2 \(count 1\)/);
  t.notRegex(b.stdout, /interrupt on vector [01]/);

  type(a, 'int 1 all');
  await b.waitFor(/interrupt on vector 0 \(count 1\)/);
  await b.waitFor(/interrupt on vector 1 \(count 1\)/);

  type(b, 'int all');
  await b.waitFor(/rang every vector of 1 peer\(s\)/);
  await a.waitFor(/interrupt on vector 0[^\n]*\n(?:.*\n)*?.*interrupt on vector 1[^\n]*\n(?:.*\n)*?.*interrupt on vector 2/);

  type(a, 'int 7 0');
  await a.waitFor(/error: peer 7 is not connected/);
  type(a, 'int 1 9');
  await a.waitFor(/error: peer 1 has vectors 0\.\.2, not 9/);
  type(a, 'int x');
  await a.waitFor(/usage: int PEER VECTOR \| int PEER all \| int all/);
  type(a, 'frobnicate');
  await a.waitFor(/unknown command 'frobnicate'/);
  type(a, 'help');
  await a.waitFor(/commands: dump \[--json\], int PEER VECTOR/);

  b.child.stdin!.end();
  t.is((await b.wait()).code, 0, 'end of input quits');
  await a.waitFor(/peer 1 left/);
});

test('famez client --help prints usage; an unknown flag exits 2', async (t) => {
  const help = await t.context.run(['client', '--help']);
  t.is(help.exitInfo.code, 0);
  t.regex(help.stdout, /Usage: famez client/);
  t.regex(help.stdout, /--no-reconnect/);
  const bad = await t.context.run(['client', '--bogus']);
  t.is(bad.exitInfo.code, 2);
  t.regex(bad.stderr, /unknown option '--bogus'/);
});

test('against a server with no FAME-Z mailbox (--silent: zero globals), famez client says so in one line, naming the globals, and runs as a plain ivshmem peer', async (t) => {
  const sock = path.join(t.context.dir(), 'sock');
  await t.context.serve(['--silent', '-S', sock, '--memfd', '-n', '2']);
  const c = t.context.client(['-S', sock]);
  await c.waitFor(/connected to .* as peer 0/);
  await c.waitFor(
    /^not a FAME-Z fabric: .*: the shared memory holds no FAME-Z mailbox \(globals slotsize=0, buf_offset=0, nClients=0, nEvents=0, server_id=0, all zero: [^\n]*\); running as a plain ivshmem peer \(stock commands\)$/m,
  );
  type(c, 'dump');
  await c.waitFor(/peer 0: 2 vector\(s\), shared memory 4194304 bytes/);
  type(c, 'quit');
  t.is((await c.wait()).code, 0);
  t.is(c.stdout.match(/not a FAME-Z fabric/g)?.length, 1, 'said once');
});
