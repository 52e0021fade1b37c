// The server's wire protocol, byte by byte, read by a Python script that
// shares no code with famez (recvmsg of 8 bytes, SCM_RIGHTS, fstat).
import * as fs from 'node:fs';
import * as path from 'node:path';

import anyTest, { type ExecutionContext, type TestFn } from 'ava';

import { LineProcess, removeDir, tempDir, waitFor } from './helpers/wait.js';

interface Rec {
  index: number;
  nbytes: number;
  value?: number;
  raw?: string;
  hasFd: boolean;
  nfds: number;
  ctrunc: boolean;
  fdKind?: string;
  size?: number;
  eventfdId?: number;
  cloexec?: boolean;
  target?: string;
}

const test = anyTest as TestFn<{ dir: string; procs: LineProcess[] }>;
const PROBE = path.resolve('__test__/helpers/ivshmem_probe.py');
const MiB = 1 << 20;

test.beforeEach((t) => {
  t.context.dir = tempDir('famez-bytes-');
  t.context.procs = [];
});

test.afterEach.always(async (t) => {
  await Promise.all(t.context.procs.map((p) => p.stop()));
  removeDir(t.context.dir);
});

class Probe {
  constructor(readonly proc: LineProcess) {}

  static async start(t: ExecutionContext<{ procs: LineProcess[] }>, socket: string): Promise<Probe> {
    const proc = LineProcess.spawn('python3', [PROBE, socket]);
    t.context.procs.push(proc);
    await proc.waitLine((l) => l.includes('"connected"'), 'the probe to connect');
    return new Probe(proc);
  }

  private parsed(): Array<Rec & { event?: string; count?: number }> {
    return this.proc.lines.map((l) => JSON.parse(l));
  }

  /** Protocol messages received so far. */
  get messages(): Rec[] {
    return this.parsed().filter((r) => r.event === undefined) as Rec[];
  }

  get eof(): boolean {
    return this.parsed().some((r) => r.event === 'eof');
  }

  async waitMessages(n: number, what: string): Promise<Rec[]> {
    await waitFor(() => this.messages.length >= n || this.proc.exit !== null, `${n} messages: ${what}`);
    return this.messages;
  }

  async waitEof(): Promise<void> {
    await waitFor(() => this.eof, 'EOF from the server');
  }

  send(cmd: string): void {
    this.proc.child.stdin!.write(`${cmd}\n`);
  }

  async drain(index: number): Promise<number> {
    const from = this.proc.lines.length;
    this.send(`drain ${index}`);
    const at = await this.proc.waitLine((l) => l.includes('"drained"') && JSON.parse(l).index === index, `drain ${index}`, from);
    return JSON.parse(this.proc.lines[at]).count;
  }

  async signal(index: number): Promise<void> {
    const from = this.proc.lines.length;
    this.send(`signal ${index}`);
    await this.proc.waitLine((l) => l.includes('"signalled"') && JSON.parse(l).index === index, `signal ${index}`, from);
  }

  async quit(): Promise<void> {
    this.proc.child.stdin!.end('quit\n');
    await this.proc.exited;
  }
}

async function startServer(t: ExecutionContext<{ dir: string; procs: LineProcess[] }>, extra: string[] = []): Promise<string> {
  const socket = path.join(t.context.dir, 'sock');
  const proc = LineProcess.spawn(process.execPath, ['--import=tsx', 'ts/cli/main.ts', 'serve', '--silent', '-S', socket, '-n', '3', '-l', '1M', '--memfd', ...extra]);
  t.context.procs.push(proc);
  await proc.waitLine((l) => l.includes('serving on'), 'the famez server to start', 0, 30_000);
  await waitFor(() => fs.existsSync(socket), 'the socket');
  return socket;
}

/** Every message is one whole 8-byte recvmsg with at most one fd. */
function wellFramed(t: ExecutionContext<unknown>, recs: Rec[], who: string): void {
  for (const r of recs) {
    t.is(r.nbytes, 8, `${who} message ${r.index}: exactly 8 bytes in one recvmsg`);
    t.false(r.ctrunc, `${who} message ${r.index}: no truncated control data`);
    t.true(r.nfds <= 1, `${who} message ${r.index}: at most one fd`);
    if (r.hasFd) t.true(r.cloexec, 'received with MSG_CMSG_CLOEXEC');
  }
}

function checkWelcome(t: ExecutionContext<unknown>, recs: Rec[], id: number, who: string): void {
  t.like(recs[0], { value: 0, hasFd: false }, `${who}: version 0 without an fd`);
  t.like(recs[1], { value: id, hasFd: false }, `${who}: its ID without an fd`);
  t.like(recs[2], { value: -1, hasFd: true, fdKind: 'memfd', size: MiB }, `${who}: -1 with the 1 MiB shm fd`);
}

/** The N messages of a group: all `id`, each with an eventfd; returns the eventfd ids. */
function group(t: ExecutionContext<unknown>, recs: Rec[], id: number, who: string): number[] {
  t.is(recs.length, 3, `${who}: a group of 3`);
  for (const r of recs) t.like(r, { value: id, hasFd: true, fdKind: 'eventfd' }, `${who}: ID ${id} with an eventfd`);
  // Linux shows an eventfd's identity as 'eventfd-id' in fdinfo; without it
  // (older kernels) the identity checks below compare empty lists.
  if (recs.some((r) => r.eventfdId === undefined)) {
    t.log(`${who}: no eventfd-id in fdinfo on this kernel; eventfd identity not checked`);
    return [];
  }
  const ids = recs.map((r) => r.eventfdId!);
  t.is(new Set(ids).size, 3, `${who}: three distinct eventfds`);
  return ids;
}

test('welcome, joins and leaves on the wire, read by recvmsg(8) in Python', async (t) => {
  const socket = await startServer(t);

  // A alone: 0, its ID, -1 + shm, then its own 3 vectors.
  const a = await Probe.start(t, socket);
  let am = await a.waitMessages(6, 'A welcome');
  checkWelcome(t, am, 0, 'A');
  const aOwn = group(t, am.slice(3, 6), 0, 'A own');

  // B joins: sees A's group (the same eventfds A waits on, in vector order), then its own.
  const b = await Probe.start(t, socket);
  const bm = await b.waitMessages(9, 'B welcome');
  checkWelcome(t, bm, 1, 'B');
  t.deepEqual(group(t, bm.slice(3, 6), 0, 'B sees A'), aOwn, "B's fds for A are A's own eventfds, vector 0..2 in order");
  const bOwn = group(t, bm.slice(6, 9), 1, 'B own');
  // A is told about B: exactly B's group, B's eventfds in order.
  am = await a.waitMessages(9, 'A told of B');
  t.deepEqual(group(t, am.slice(6, 9), 1, 'A sees B'), bOwn);

  // The fds really connect: B rings A's vector 1, A's vector 1 (only) counts it.
  await b.signal(4);
  t.is(await a.drain(4), 1, "A's own vector 1");
  t.is(await a.drain(3), 0, "A's own vector 0 untouched");
  t.is(await a.drain(5), 0, "A's own vector 2 untouched");
  await a.signal(8); // A rings B's vector 2
  t.is(await b.drain(8), 1);
  t.is(await b.drain(6), 0);

  // C joins: peers are announced in ascending ID order, A then B.
  const c = await Probe.start(t, socket);
  const cm = await c.waitMessages(12, 'C welcome');
  checkWelcome(t, cm, 2, 'C');
  t.deepEqual(group(t, cm.slice(3, 6), 0, 'C sees A'), aOwn);
  t.deepEqual(group(t, cm.slice(6, 9), 1, 'C sees B'), bOwn);
  const cOwn = group(t, cm.slice(9, 12), 2, 'C own');
  am = await a.waitMessages(12, 'A told of C');
  t.deepEqual(group(t, am.slice(9, 12), 2, 'A sees C'), cOwn);
  const bm2 = await b.waitMessages(12, 'B told of C');
  t.deepEqual(group(t, bm2.slice(9, 12), 2, 'B sees C'), cOwn);

  // B leaves: A and C each get B's ID once, without an fd.
  await b.quit();
  am = await a.waitMessages(13, 'A told B left');
  t.like(am[12], { value: 1, hasFd: false });
  const cm2 = await c.waitMessages(13, 'C told B left');
  t.like(cm2[12], { value: 1, hasFd: false });

  // D takes the next ID (3), as the stock server does (--silent gives
  // monotonic IDs), and sees A and C only.
  const d = await Probe.start(t, socket);
  const dm = await d.waitMessages(12, 'D welcome');
  checkWelcome(t, dm, 3, 'D');
  t.deepEqual(group(t, dm.slice(3, 6), 0, 'D sees A'), aOwn);
  t.deepEqual(group(t, dm.slice(6, 9), 2, 'D sees C'), cOwn);
  const dOwn = group(t, dm.slice(9, 12), 3, 'D own');
  am = await a.waitMessages(16, 'A told of D');
  t.deepEqual(group(t, am.slice(13, 16), 3, 'A sees D'), dOwn);
  // C reads in its own process: wait for its copy too before counting.
  const cm3 = await c.waitMessages(16, 'C told of D');
  t.deepEqual(group(t, cm3.slice(13, 16), 3, 'C sees D'), dOwn);

  // Nothing unexpected arrived anywhere, and every message was framed right.
  t.is(a.messages.length, 16);
  t.is(c.messages.length, 16);
  t.is(d.messages.length, 12);
  wellFramed(t, a.messages, 'A');
  wellFramed(t, b.messages, 'B');
  wellFramed(t, c.messages, 'C');
  wellFramed(t, d.messages, 'D');
  t.is(b.messages.length, 12);
});

test('a peer beyond --max-peers gets -1 without an fd, then EOF', async (t) => {
  const socket = await startServer(t, ['--max-peers', '1']);
  const a = await Probe.start(t, socket);
  await a.waitMessages(6, 'A welcome');
  const b = await Probe.start(t, socket);
  await b.waitEof();
  t.deepEqual(
    b.messages.map((r) => ({ nbytes: r.nbytes, value: r.value, hasFd: r.hasFd })),
    [{ nbytes: 8, value: -1, hasFd: false }],
  );
  // A was not told anything about the refused peer.
  t.is(a.messages.length, 6);
  // After A leaves there is room again.
  await a.quit();
  const c = await Probe.start(t, socket);
  const cm = await c.waitMessages(6, 'C welcome');
  checkWelcome(t, cm, 1, 'C');
  group(t, cm.slice(3, 6), 1, 'C own');
});

test('the server closing (SIGTERM) is EOF for every peer, after nothing but their welcomes', async (t) => {
  const socket = await startServer(t);
  const a = await Probe.start(t, socket);
  await a.waitMessages(6, 'A welcome');
  const server = t.context.procs[0];
  server.child.kill('SIGTERM');
  await a.waitEof();
  await server.exited;
  t.deepEqual(server.exit, { code: 0, signal: null });
  t.is(a.messages.length, 6);
  t.false(fs.existsSync(socket), 'the socket is removed');
});
