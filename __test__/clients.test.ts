// Two famez client PROCESSES (library Client in __test__/helpers/peer.ts)
// against one Server: interrupts on specific vectors, join and leave
// notices, and shared-memory writes seen both ways. Then the library Client
// against a scripted server, for the welcome/join boundaries.
import { createHook } from 'node:async_hooks';
import * as path from 'node:path';

import anyTest, { type ExecutionContext, type TestFn } from 'ava';

import { Client } from '../ts/client/client.js';
import { EventFd, SharedMemory, UnixListener, type UnixStream } from '../ts/native.js';
import { Server } from '../ts/server/server.js';
import { LineProcess, removeDir, tempDir, waitFor, within } from './helpers/wait.js';

interface Ctx {
  dir: string;
  server?: Server;
  procs: LineProcess[];
  closers: Array<() => void>;
}
const test = anyTest as TestFn<Ctx>;
const VECTORS = 3;
const SIZE = 1 << 20;

test.beforeEach((t) => {
  t.context.dir = tempDir('famez-clients-');
  t.context.procs = [];
  t.context.closers = [];
});

test.afterEach.always(async (t) => {
  await Promise.all(t.context.procs.map((p) => p.stop()));
  for (const c of t.context.closers.reverse()) {
    try {
      c();
    } catch {
      // best effort
    }
  }
  t.context.server?.close();
  removeDir(t.context.dir);
});

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

class Peer {
  private seq = 0;
  ready!: Json;

  constructor(readonly proc: LineProcess) {}

  static async start(t: ExecutionContext<Ctx>, socket: string): Promise<Peer> {
    const proc = LineProcess.spawn(process.execPath, ['--import=tsx', path.resolve('__test__/helpers/peer.ts'), socket, String(VECTORS)]);
    t.context.procs.push(proc);
    const p = new Peer(proc);
    const at = await proc.waitLine((l) => l.includes('"ready"') || l.includes('"error"'), 'the peer to be ready', 0, 30_000);
    p.ready = JSON.parse(proc.lines[at]);
    if (p.ready.event !== 'ready') throw new Error(`peer failed: ${proc.lines[at]}`);
    return p;
  }

  get id(): number {
    return this.ready.id;
  }

  private parsed(): Json[] {
    return this.proc.lines.map((l) => JSON.parse(l));
  }

  events(type?: string): Json[] {
    return this.parsed().filter((e) => e.event !== undefined && e.event !== 'ready' && (type === undefined || e.event === type));
  }

  async waitEvent(pred: (e: Json) => boolean, what: string): Promise<Json> {
    return waitFor(() => this.events().find(pred), `${what} (events so far: ${JSON.stringify(this.events())}; stderr: ${this.proc.stderr.slice(-300)})`);
  }

  async cmd(cmd: string, args: Json = {}): Promise<Json> {
    const seq = ++this.seq;
    const from = this.proc.lines.length;
    this.proc.child.stdin!.write(`${JSON.stringify({ seq, cmd, ...args })}\n`);
    const at = await this.proc.waitLine((l) => l.startsWith('{"reply":') && JSON.parse(l).reply === seq, `reply to ${cmd} #${seq}`, from);
    return JSON.parse(this.proc.lines[at]);
  }

  async ok(cmd: string, args: Json = {}): Promise<Json> {
    const r = await this.cmd(cmd, args);
    if (!r.ok) throw new Error(`${cmd} ${JSON.stringify(args)} failed: ${r.error}`);
    return r;
  }

  /** Sum of interrupt counts per vector. */
  interrupts(): number[] {
    const sums = Array(VECTORS).fill(0);
    for (const e of this.events('interrupt')) sums[e.vector] += e.count;
    return sums;
  }
}

function startServer(t: ExecutionContext<Ctx>): string {
  const socket = path.join(t.context.dir, 'sock');
  t.context.server = Server.start({ socket, shm: { kind: 'memfd', name: 'clients' }, size: SIZE, vectors: VECTORS });
  return socket;
}

const hex = (s: string): string => Buffer.from(s).toString('hex');

test('two peer processes see each other join, ring each other on specific vectors, and leave', async (t) => {
  const socket = startServer(t);
  const a = await Peer.start(t, socket);
  t.like(a.ready, { id: 0, vectors: VECTORS, peers: [], size: SIZE });
  const b = await Peer.start(t, socket);
  t.like(b.ready, { id: 1, vectors: VECTORS, peers: [{ id: 0, vectors: VECTORS }], size: SIZE });

  // A hears of B with all of B's vectors.
  await a.waitEvent((e) => e.event === 'join' && e.id === 1 && e.vectors === VECTORS, 'A: join of B');
  t.deepEqual((await a.ok('info')).peers, [{ id: 1, vectors: VECTORS }]);
  t.deepEqual(b.events('join'), [], 'B was told of A in its welcome, not by a join event');

  // A rings B's vector 2 only.
  await a.ok('ring', { peer: 1, vector: 2 });
  await b.waitEvent((e) => e.event === 'interrupt' && e.vector === 2, 'B: interrupt on vector 2');
  // B rings A's vector 0, then A's vector 1.
  await b.ok('ring', { peer: 0, vector: 0 });
  await a.waitEvent((e) => e.event === 'interrupt' && e.vector === 0, 'A: interrupt on vector 0');
  await b.ok('ring', { peer: 0, vector: 1 });
  await a.waitEvent((e) => e.event === 'interrupt' && e.vector === 1, 'A: interrupt on vector 1');
  // A rings B's vector 0: this arrives after the vector-2 ring, so B's
  // tally now shows whether any other vector was hit.
  await a.ok('ring', { peer: 1, vector: 0 });
  await b.waitEvent((e) => e.event === 'interrupt' && e.vector === 0, 'B: interrupt on vector 0');
  t.deepEqual(b.interrupts(), [1, 0, 1], 'B: exactly vectors 0 and 2, once each');
  t.deepEqual(a.interrupts(), [1, 1, 0], 'A: exactly vectors 0 and 1, once each');

  // Five rings of one vector add up (an eventfd counts; it may coalesce them).
  for (let i = 0; i < 5; i++) await a.ok('ring', { peer: 1, vector: 1 });
  await waitFor(() => b.interrupts()[1] === 5, "B's vector 1 to count 5 rings");
  // 'all' rings every vector once.
  await b.ok('ring', { peer: 0, vector: 'all' });
  await waitFor(() => a.interrupts()[2] === 1, "A's vector 2");
  await waitFor(() => a.interrupts().join() === '2,2,1', 'A: every vector rung once more');
  t.deepEqual(a.interrupts(), [2, 2, 1]);
  t.deepEqual(b.interrupts(), [1, 5, 1]);

  // Bad rings are refused, not sent.
  const bad = await a.cmd('ring', { peer: 1, vector: VECTORS });
  t.false(bad.ok);
  t.regex(bad.error, /vectors 0\.\.2, not 3/);
  const nobody = await a.cmd('ring', { peer: 9, vector: 0 });
  t.false(nobody.ok);
  t.regex(nobody.error, /peer 9 is not connected/);

  // B leaves cleanly: A is told, and can no longer ring it.
  await b.ok('close');
  await within(b.proc.exited, 'B to exit after close');
  t.deepEqual(b.proc.exit, { code: 0, signal: null }, b.proc.stderr);
  await a.waitEvent((e) => e.event === 'leave' && e.id === 1, 'A: leave of B');
  t.deepEqual((await a.ok('info')).peers, []);
  const gone = await a.cmd('ring', { peer: 1, vector: 0 });
  t.false(gone.ok);

  // A new peer gets ID 2, not 1: A was told 1 left, and a QEMU in A's
  // place would write into the array it freed for 1. A hears of it.
  const c = await Peer.start(t, socket);
  t.like(c.ready, { id: 2, peers: [{ id: 0, vectors: VECTORS }] });
  await waitFor(() => a.events('join').filter((e) => e.id === 2 && e.vectors === VECTORS).length === 1, 'A: join of the new peer 2');
  await c.ok('ring', { peer: 0, vector: 2 });
  await waitFor(() => a.interrupts()[2] === 2, 'A: ring from the new peer');

  // A is killed outright: the server notices and tells C.
  a.proc.child.kill('SIGKILL');
  await c.waitEvent((e) => e.event === 'leave' && e.id === 0, 'C: leave of the killed A');
  t.deepEqual(t.context.server!.peerIds, [2]);
  t.deepEqual((await c.ok('info')).peers, []);
});

test('writes to memory are seen by the other process, both ways, and by an in-process client', async (t) => {
  const socket = startServer(t);
  const a = await Peer.start(t, socket);
  const b = await Peer.start(t, socket);

  await a.ok('write', { offset: 4096, hex: hex('hello from A') });
  t.is((await b.ok('read', { offset: 4096, length: 12 })).hex, hex('hello from A'));

  await b.ok('write', { offset: SIZE - 8, hex: '0102030405060708' });
  t.is((await a.ok('read', { offset: SIZE - 8, length: 8 })).hex, '0102030405060708');

  // Overwrites are seen too (not a copy taken once).
  await b.ok('write', { offset: 4096, hex: hex('HELLO') });
  t.is((await a.ok('read', { offset: 4096, length: 12 })).hex, hex('HELLO from A'));

  // A third, in-process client maps the same memory.
  const c = await Client.connect(socket, { timeoutMs: 10_000 });
  t.context.closers.push(() => c.close());
  const view = new Uint8Array(c.memory);
  t.is(view.byteLength, SIZE);
  t.is(Buffer.from(view.subarray(4096, 4108)).toString(), 'HELLO from A');
  view.set(Buffer.from('from C'), 0);
  t.is((await a.ok('read', { offset: 0, length: 6 })).hex, hex('from C'));
  t.is((await b.ok('read', { offset: 0, length: 6 })).hex, hex('from C'));

  // Write-then-ring: the data is there when the interrupt arrives.
  await a.ok('write', { offset: 8192, hex: hex('ping') });
  await a.ok('ring', { peer: b.id, vector: 1 });
  await b.waitEvent((e) => e.event === 'interrupt' && e.vector === 1, 'B: interrupt');
  t.is((await b.ok('read', { offset: 8192, length: 4 })).hex, hex('ping'));

  // Out-of-range accesses are errors in the peer, not crashes.
  const bad = await a.cmd('read', { offset: SIZE - 2, length: 4 });
  t.false(bad.ok);
  t.is((await a.ok('info')).closed, false);
});

test('a server shutdown closes every peer process cleanly', async (t) => {
  const socket = startServer(t);
  const a = await Peer.start(t, socket);
  const b = await Peer.start(t, socket);
  t.context.server!.close();
  await a.waitEvent((e) => e.event === 'close', 'A: close');
  await b.waitEvent((e) => e.event === 'close', 'B: close');
  await within(Promise.all([a.proc.exited, b.proc.exited]), 'both peers to exit');
  t.deepEqual(a.proc.exit, { code: 0, signal: null }, a.proc.stderr);
  t.deepEqual(b.proc.exit, { code: 0, signal: null }, b.proc.stderr);
  // Neither saw the other "leave": the server says nothing while closing.
  t.deepEqual(a.events('leave'), []);
  t.deepEqual(b.events('leave'), []);
});

// ---- the library Client against a scripted server ---------------------------
//
// A listener driven by hand sends the welcome and later groups in two parts,
// pausing at a chosen point, to pin down when connect resolves and when
// 'join' is emitted.

interface Scripted {
  stream: UnixStream;
  shm: SharedMemory;
  bells: EventFd[];
  send(value: number, fd?: number): void;
}

async function scripted(t: ExecutionContext<Ctx>): Promise<{ socket: string; accept: () => Promise<Scripted> }> {
  const socket = path.join(t.context.dir, 'scripted');
  const listener = UnixListener.listen(socket);
  t.context.closers.push(() => listener.close());
  const shm = SharedMemory.create({ kind: 'memfd', name: 'scripted', size: 4096 });
  t.context.closers.push(() => shm.close());
  return {
    socket,
    accept: async () => {
      const stream = await waitFor(() => listener.accept(), 'a connection to the scripted server');
      t.context.closers.push(() => stream.close());
      const bells: EventFd[] = [];
      for (let i = 0; i < 8; i++) {
        const e = new EventFd();
        bells.push(e);
        t.context.closers.push(() => e.close());
      }
      return { stream, shm, bells, send: (value, fd) => void stream.send(value, fd) };
    },
  };
}

const turns = async (n: number): Promise<void> => {
  for (let i = 0; i < n; i++) await new Promise((r) => setImmediate(r));
};

test('scripted server: the library client reads a complete welcome and later joins and leaves', async (t) => {
  const { socket, accept } = await scripted(t);
  const connecting = Client.connect(socket, { timeoutMs: 10_000 });
  const s = await accept();
  s.send(0);
  s.send(4);
  s.send(-1, s.shm.fd);
  s.send(9, s.bells[0].fd);
  s.send(9, s.bells[1].fd);
  s.send(4, s.bells[2].fd);
  s.send(4, s.bells[3].fd);
  const c = await within(connecting, 'connect');
  t.context.closers.push(() => c.close());
  t.is(c.id, 4);
  t.is(c.vectors, 2);
  t.deepEqual([...c.peers.values()], [{ id: 9, vectors: 2 }]);
  // Rings go to the right eventfds.
  c.ring(9, 1);
  t.is(s.bells[1].drain(), 1);
  t.is(s.bells[0].drain(), 0);
  const irq: Array<{ vector: number; count: number }> = [];
  c.on('interrupt', (e) => irq.push(e));
  s.bells[3].signal(2);
  await waitFor(() => irq.length === 1, 'the interrupt');
  t.deepEqual(irq, [{ vector: 1, count: 2 }]);
  // A join in one burst is one 'join'; a departure is one 'leave'.
  const joins: unknown[] = [];
  const leaves: unknown[] = [];
  c.on('join', (p) => joins.push(p));
  c.on('leave', (p) => leaves.push(p));
  s.send(2, s.bells[4].fd);
  s.send(2, s.bells[5].fd);
  await waitFor(() => joins.length === 1, 'the join');
  t.deepEqual(joins, [{ id: 2, vectors: 2 }]);
  s.send(9);
  await waitFor(() => leaves.length === 1, 'the leave');
  t.deepEqual(leaves, [{ id: 9 }]);
  t.deepEqual([...c.peers.keys()], [2]);
  // Our own departure announced by the server is a protocol error: the client closes.
  const closed = new Promise<{ reason: string }>((r) => c.once('close', r));
  s.send(4);
  t.regex((await within(closed, 'the close')).reason, /own departure/);
  t.true(c.closed);
});

// The own group can be split across reads (the server is another process
// and the client may read while it is still sending): connect must wait for
// the whole group, whose size the other peers' groups tell.
test('scripted server: connect resolves only after the whole own group', async (t) => {
  const { socket, accept } = await scripted(t);
  let resolvedWith = -1;
  const connecting = Client.connect(socket, { timeoutMs: 10_000 }).then((c) => {
    resolvedWith = c.vectors;
    t.context.closers.push(() => c.close());
    return c;
  });
  const s = await accept();
  s.send(0);
  s.send(1);
  s.send(-1, s.shm.fd);
  s.send(5, s.bells[0].fd);
  s.send(5, s.bells[1].fd);
  s.send(1, s.bells[2].fd); // first half of the own group
  // Give the client every chance to read the first half (bounded).
  await waitFor(async () => {
    await turns(5);
    return resolvedWith !== -1 || null;
  }, 'the client to resolve early', 300).catch(() => undefined);
  s.send(1, s.bells[3].fd);
  await within(connecting, 'connect');
  t.is(resolvedWith, 2, 'connect resolved with both own vectors (the peers have 2 each)');
});

// The welcome ends when the protocol says so: a server that stops in the
// middle of it is an error that says where it stopped (no quiet timer
// decides that the welcome is over).
test('scripted server: a server that stops mid-welcome is an error naming where it stopped', async (t) => {
  const { socket, accept } = await scripted(t);
  const connecting = Client.connect(socket, { timeoutMs: 1_500 });
  const s = await accept();
  s.send(0);
  s.send(1);
  s.send(-1, s.shm.fd);
  s.send(5, s.bells[0].fd);
  s.send(5, s.bells[1].fd);
  s.send(1, s.bells[2].fd); // one of its two own vectors, then nothing
  const err = await t.throwsAsync(connecting);
  t.is((err as { code?: string }).code, 'ETIMEDOUT');
  t.regex(err!.message, /stopped in the middle of its welcome, during the peers' eventfds \(1 other peer, 1 of 2 own vectors\)/);
});

// A newcomer's group split across reads is still one 'join', sent when all
// of its vectors are there.
test('scripted server: a split join is announced once, with all its vectors', async (t) => {
  const { socket, accept } = await scripted(t);
  const connecting = Client.connect(socket, { timeoutMs: 10_000 });
  const s = await accept();
  s.send(0);
  s.send(0);
  s.send(-1, s.shm.fd);
  s.send(0, s.bells[0].fd);
  s.send(0, s.bells[1].fd);
  s.send(0, s.bells[2].fd);
  const c = await within(connecting, 'connect');
  t.context.closers.push(() => c.close());
  const joins: unknown[] = [];
  c.on('join', (p) => joins.push(p));
  s.send(7, s.bells[3].fd);
  await waitFor(async () => {
    await turns(5);
    return joins.length > 0 || null;
  }, 'an early join', 300).catch(() => undefined);
  s.send(7, s.bells[4].fd);
  s.send(7, s.bells[5].fd);
  await waitFor(() => c.peers.get(7)?.vectors === 3, 'all of peer 7');
  await turns(10);
  t.deepEqual(joins, [{ id: 7, vectors: 3 }]);
});

test('answer(): from an interrupt listener the ring goes when the listeners return, a second answer and one made before close() go too; outside a listener it is ring(); bad peers throw at once', async (t) => {
  const socket = startServer(t);
  const a = await Client.connect(socket, { vectors: VECTORS });
  t.context.closers.push(() => a.close());
  const b = await Client.connect(socket, { vectors: VECTORS });
  t.context.closers.push(() => b.close());
  await waitFor(() => a.peers.has(b.id) && b.peers.has(a.id), 'a and b to see each other');
  const heard: number[] = [];
  a.on('interrupt', ({ vector }) => heard.push(vector));
  const errors: string[] = [];
  let mode = 'one';
  b.on('interrupt', () => {
    try {
      b.answer(a.id + 1000, 0);
    } catch (e) {
      errors.push((e as { code: string }).code);
    }
    t.throws(() => b.answer(a.id, VECTORS), { code: 'EPROTO' });
    if (mode === 'one') b.answer(a.id, 0);
    if (mode === 'two') {
      b.answer(a.id, 1);
      b.answer(a.id, 2);
    }
    if (mode === 'close') {
      b.answer(a.id, 1);
      b.close();
    }
  });
  a.ring(b.id, 0);
  await waitFor(() => heard.length === 1, 'the answer');
  t.deepEqual(heard, [0]);
  mode = 'two';
  a.ring(b.id, 0);
  await waitFor(() => heard.length === 3, 'both answers');
  t.deepEqual(heard.slice(1).sort(), [1, 2]);
  // Outside a listener: rung at once, as ring() does.
  b.answer(a.id, 2);
  await waitFor(() => heard.length === 4, 'the ring');
  t.is(heard[3], 2);
  mode = 'close';
  a.ring(b.id, 0);
  await waitFor(() => heard.length === 5, 'the answer made before close');
  t.is(heard[4], 1);
  t.true(b.closed);
  t.deepEqual(errors, ['EPROTO', 'EPROTO', 'EPROTO']);
  t.throws(() => b.answer(a.id, 0), { code: 'ECLOSED' });
});

test('answer(): an answer made before the listener throws is still rung, once (in its own process: the throw is an uncaught exception)', async (t) => {
  const helper = path.join(__dirname, 'helpers', 'answer-throws.ts');
  const p = LineProcess.spawn(process.execPath, ['--import=tsx', helper, t.context.dir]);
  t.context.procs.push(p);
  const exit = await within(p.exited, 'the answer-throws helper', 30_000);
  t.is(exit.code, 0, p.stderr);
  const out = JSON.parse(p.lines.find((l) => l.startsWith('{')) ?? '{}') as { heard?: number[]; caught?: string[] };
  t.deepEqual(out.heard, [2], 'a heard the answer once');
  t.deepEqual(out.caught, ['the listener fails after its answer']);
});

test.serial('busyPollUs: after a doorbell the loop keeps polling for the window instead of sleeping; 0 turns it off', async (t) => {
  const socket = startServer(t);
  // A long window, so the loop's first turn after the ring falls inside it
  // on a loaded machine too.
  const a = await Client.connect(socket, { vectors: VECTORS, busyPollUs: 300_000 });
  t.context.closers.push(() => a.close());
  const b = await Client.connect(socket, { vectors: VECTORS });
  t.context.closers.push(() => b.close());
  await waitFor(() => a.peers.has(b.id), 'a to see b');
  t.is(a.busyPoll, 300_000);
  t.throws(() => (a.busyPoll = -1), { instanceOf: RangeError });
  await t.throwsAsync(Client.connect(socket, { busyPollUs: 2e6 }), { instanceOf: RangeError });
  // Busy polling is a chain of immediates (each turn of the loop schedules
  // the next, so libuv polls with a zero timeout instead of sleeping). The
  // chain is followed through async_hooks: an immediate created inside
  // a.ring() starts it, one created by a chained immediate continues it.
  const chain = new Set<number>();
  let ran = 0;
  let inRing = false;
  const hook = createHook({
    init(id, type, trigger) {
      if (type === 'Immediate' && (inRing || chain.has(trigger))) chain.add(id);
    },
    destroy(id) {
      if (chain.has(id)) ran++;
    },
  }).enable();
  try {
    const ring = () => {
      chain.clear();
      ran = 0;
      inRing = true;
      try {
        a.ring(b.id, 0);
      } finally {
        inRing = false;
      }
      return chain.size;
    };
    t.is(ring(), 1, 'the ring starts the window');
    // The loop keeps turning without waiting for anything...
    await waitFor(() => chain.size > 2, 'the loop to keep polling after the ring');
    // ...and stops when the window has passed.
    await waitFor(() => ran === chain.size, 'the busy-poll window to end', 15_000);
    t.log(`busy-polling: ${chain.size} turns of the loop in the window`);
    a.busyPoll = 0;
    t.is(ring(), 0, 'with busyPoll 0 a ring leaves the loop free to sleep');
  } finally {
    hook.disable();
  }
});

test('ring after close is ECLOSED, and never rings an fd that reused a closed doorbell number', async (t) => {
  const socket = startServer(t);
  const a = await Client.connect(socket, { vectors: VECTORS });
  const b = await Client.connect(socket, { vectors: VECTORS });
  t.context.closers.push(() => b.close());
  await waitFor(() => a.peers.has(b.id), 'a to see b');
  a.close();
  // New eventfds now likely get the numbers a's doorbells had.
  const fresh = Array.from({ length: 3 * VECTORS }, () => new EventFd());
  t.context.closers.push(() => fresh.forEach((e) => e.close()));
  t.throws(() => a.ring(b.id, 0), { message: /closed/ });
  t.throws(() => a.ring(a.id, 'all'), { message: /closed/ });
  t.deepEqual(
    fresh.map((e) => e.drain()),
    fresh.map(() => 0),
  );
});
