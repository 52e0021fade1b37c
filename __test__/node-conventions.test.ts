// Node's conventions on the library, against real servers (in this process
// and `famez serve` processes) and the real kernel: an AbortSignal on every
// call that waits (rejects with the signal's reason, undoes the wait: no
// socket, listener or timer left, the object still usable), `using` and
// `await using` on everything that closes, and Client.connect resolving
// only once the clients of this process on one server know each other.
import { getEventListeners } from 'node:events';
import * as fs from 'node:fs';
import * as path from 'node:path';

import anyTest, { type ExecutionContext, type TestFn } from 'ava';

import { Client } from '../ts/client/client.js';
import { FabricClient, type FabricMessage } from '../ts/fabric/client.js';
import type { Fabric } from '../ts/fabric/fabric.js';
import { RingReader, ringOffset } from '../ts/fabric/ring.js';
import { startHttp } from '../ts/http/api.js';
import { createMetrics } from '../ts/http/metrics.js';
import { Monitor, type FabricEvent } from '../ts/observe/monitor.js';
import { Server } from '../ts/server/server.js';
import { serveInProcess } from './helpers/churn.js';
import { Scratch, uniqueName, type FamezProcess } from './helpers/serve.js';
import { fdDiff, fdTargets, waitFor, within } from './helpers/wait.js';

const test = anyTest as TestFn<Scratch>;

test.beforeEach((t) => {
  t.context = new Scratch();
});
test.afterEach.always(async (t) => {
  await t.context.cleanup();
});

/** A `famez serve` fabric process of `peers` peers; its socket. */
async function fabric(t: ExecutionContext<Scratch>, peers = 4, extra: string[] = []): Promise<{ sock: string; server: FamezProcess }> {
  const sock = path.join(t.context.dir(), 'sock');
  const server = await t.context.serve(['-S', sock, '--memfd', '--max-peers', String(peers), '--no-http', ...extra]);
  return { sock, server };
}

/** An in-process server like the README's (no fabric), on a fresh socket. */
function plainServer(t: ExecutionContext<Scratch>, vectors = 2): Server {
  const server = Server.start({ socket: path.join(t.context.dir(), 'sock'), shm: { kind: 'memfd', name: uniqueName() }, size: 1 << 20, vectors });
  t.context.track(server);
  return server;
}

/** SIGSTOPs a server process until the returned function (also run at
 * teardown) SIGCONTs it: the kernel still accepts connections and
 * eventfds still count, but the server sends and answers nothing. */
function pause(t: ExecutionContext<Scratch>, p: FamezProcess): () => void {
  const pid = p.child.pid!;
  process.kill(pid, 'SIGSTOP');
  let stopped = true;
  const resume = () => {
    if (stopped) process.kill(pid, 'SIGCONT');
    stopped = false;
  };
  t.teardown(resume);
  return resume;
}

/** What `p` rejected with (fails the test when it resolved). */
async function rejection(t: ExecutionContext<Scratch>, p: Promise<unknown>, what: string): Promise<unknown> {
  try {
    await within(p, what);
  } catch (e) {
    return e;
  }
  t.fail(`${what} resolved instead of rejecting`);
  return undefined;
}

/** Timers and immediates of this process (a call that leaves none adds none). */
const timers = () => process.getActiveResourcesInfo().filter((r) => r === 'Timeout' || r === 'Immediate').length;
const sockets = () => fdTargets().filter((f) => f.startsWith('socket:')).length;
const abortListeners = (s: AbortSignal) => getEventListeners(s, 'abort').length;

/** Waits until the switch's greeting (Peer-Attribute and the answer) is
 * over for `c`: its ping comes back after it, so nothing is pending. */
async function settled(c: FabricClient): Promise<FabricClient> {
  await within(c.request('switch', 'ping'), `peer ${c.id}'s ping`);
  return c;
}

/** Every message `c` gets from `from`, as text. */
function inbox(c: FabricClient, from: number): string[] {
  const texts: string[] = [];
  c.on('message', (m: FabricMessage) => {
    if (m.from === from) texts.push(m.text);
  });
  return texts;
}

// ------------------------------------------------------------ Client.connect

test.serial('Client.connect with an already-aborted signal rejects at once with its reason and opens no socket', async (t) => {
  const server = plainServer(t);
  const before = fdTargets();
  const reason = new Error('not today');
  const e = await rejection(t, Client.connect(server.socketPath, { signal: AbortSignal.abort(reason) }), 'the connect');
  t.is(e, reason);
  const plain = await rejection(t, Client.connect(server.socketPath, { signal: AbortSignal.abort() }), 'the connect');
  t.is((plain as Error).name, 'AbortError');
  t.is(fdDiff(before, fdTargets()), '(no difference by kind)');
  t.deepEqual(server.peerIds, []);
});

test('Client.connect refuses a signal that is not an AbortSignal with a TypeError', async (t) => {
  const server = plainServer(t);
  const e = await rejection(t, Client.connect(server.socketPath, { signal: 'stop' as unknown as AbortSignal }), 'the connect');
  t.true(e instanceof TypeError);
  t.regex((e as Error).message, /options\.signal must be an AbortSignal/);
});

test.serial('aborting Client.connect while it retries for a server that is not there rejects with the reason at once and leaves no timer', async (t) => {
  const sock = path.join(t.context.dir(), 'nobody-here');
  const timersBefore = timers();
  const ac = new AbortController();
  // Retries an hour apart: only the abort can end this.
  const connecting = Client.connect(sock, { retry: true, retryMs: 3_600_000, timeoutMs: 7_200_000, signal: ac.signal });
  await new Promise((r) => setImmediate(r));
  ac.abort();
  const e = await rejection(t, connecting, 'the aborted connect');
  t.is(e, ac.signal.reason);
  t.is((e as Error).name, 'AbortError');
  t.is(abortListeners(ac.signal), 0);
  t.true(timers() <= timersBefore, 'the retry timer is gone');
});

test.serial('aborting Client.connect during the welcome closes the half-open socket; the server forgets it and the next connect works', async (t) => {
  const { sock, server } = await fabric(t, 4);
  const socketsBefore = sockets();
  const timersBefore = timers();
  const resume = pause(t, server);
  const ac = new AbortController();
  const connecting = Client.connect(sock, { timeoutMs: 3_600_000, signal: ac.signal });
  // Connected (the kernel queued it) and waiting for a welcome that the
  // stopped server does not send.
  await waitFor(() => sockets() > socketsBefore, 'the half-open socket');
  ac.abort(new Error('changed my mind'));
  const e = await rejection(t, connecting, 'the aborted connect');
  t.is((e as Error).message, 'changed my mind');
  t.is(sockets(), socketsBefore, 'the half-open socket is closed');
  t.is(abortListeners(ac.signal), 0);
  t.true(timers() <= timersBefore, 'the welcome timer is gone');
  resume();
  const c = t.context.track(await Client.connect(sock));
  // The aborted connection may be welcomed and announced before the
  // server reads its end: it goes, and only the switch stays.
  await waitFor(() => c.peerIds().join() === '5', () => `only the switch among the peers (${c.peerIds().join()})`);
});

// The README's example: the second client's connect resolves only once the
// first, in this process, has read the server's announcement of it.
test('after Client.connect the clients of this process on one server can ring each other at once (the README example)', async (t) => {
  const server = plainServer(t, 2);
  const clients: Client[] = [];
  for (let i = 0; i < 6; i++) {
    const c = t.context.track(await Client.connect(server.socketPath));
    // Right away: every earlier client rings the newcomer and the newcomer every earlier one.
    for (const other of clients) {
      other.ring(c.id, 1);
      c.ring(other.id, 0);
    }
    clients.push(c);
  }
  const last = clients.at(-1)!;
  const got: number[] = [];
  last.on('interrupt', ({ vector, count }) => got.push(vector * 1000 + count));
  clients[0].ring(last.id, 1);
  await waitFor(() => got.length > 0, 'the interrupt');
  t.deepEqual(
    clients.map((c) => c.peerIds().length),
    clients.map(() => clients.length - 1),
  );
});

test('clients connected at once in this process all know each other when every connect has resolved, with the server in another process', async (t) => {
  const sock = path.join(t.context.dir(), 'sock');
  await t.context.serve(['--silent', '-S', sock, '--memfd', '-n', '2']);
  const clients = await Promise.all([0, 1, 2, 3, 4].map(() => Client.connect(sock)));
  for (const c of clients) t.context.track(c);
  for (const c of clients) {
    t.deepEqual(
      c.peerIds(),
      clients
        .filter((o) => o !== c)
        .map((o) => o.id)
        .sort((a, b) => a - b),
      `peer ${c.id} knows every other client`,
    );
    for (const o of clients) if (o !== c) c.ring(o.id, 1);
  }
});

test('in recycle mode (the fabric default) a newcomer that reuses an ID is ringable at once, though nobody is told it joined', async (t) => {
  const { sock, server } = await fabric(t, 4);
  const a = t.context.track(await FabricClient.connect(sock, { nodename: 'a' }));
  const b1 = await FabricClient.connect(sock, { nodename: 'b1' });
  const id = b1.id;
  b1.close();
  await server.waitFor(new RegExp(`peer ${id} disconnected`));
  // a is never told b1 left (recycling): the next peer gets its ID and eventfds.
  const b2 = t.context.track(await FabricClient.connect(sock, { nodename: 'b2' }));
  t.is(b2.id, id);
  const texts = inbox(b2, a.id);
  await a.send(b2.id, 'hello b2');
  await waitFor(() => texts.length > 0, 'b2 to get the message');
  t.deepEqual(texts, ['hello b2']);
});

// ------------------------------------------------------------ FabricClient

test.serial('request: an abort while waiting for the reply rejects with the reason, leaves no listener or timer, and the next request is answered', async (t) => {
  const { sock } = await fabric(t, 4);
  const a = await settled(t.context.track(await FabricClient.connect(sock, { nodename: 'a' })));
  const b = await settled(t.context.track(await FabricClient.connect(sock, { nodename: 'b' })));
  const atB = inbox(b, a.id);
  const timersBefore = timers();
  const ac = new AbortController();
  // b does not answer plain text: only the abort ends this wait.
  const asking = a.request(b.id, 'anyone there?', { replyTimeoutMs: 3_600_000, signal: ac.signal });
  await waitFor(() => atB.length === 1, 'b to get the request');
  ac.abort();
  const e = await rejection(t, asking, 'the aborted request');
  t.is(e, ac.signal.reason);
  t.is(abortListeners(ac.signal), 0);
  t.true(timers() <= timersBefore, 'the reply timer is gone');
  const pong = await within(a.request(b.id, 'ping'), 'the next request');
  t.deepEqual(pong.message, { kind: 'pong' });
  t.deepEqual(atB, ['anyone there?', 'ping']);
});

test('request with an already-aborted signal rejects at once and sends nothing; AbortSignal.timeout rejects with its TimeoutError', async (t) => {
  const { sock } = await fabric(t, 4);
  const a = t.context.track(await FabricClient.connect(sock, { nodename: 'a' }));
  const b = t.context.track(await FabricClient.connect(sock, { nodename: 'b' }));
  const atB = inbox(b, a.id);
  const reason = new Error('already over');
  t.is(await rejection(t, a.request(b.id, 'never sent', { signal: AbortSignal.abort(reason) }), 'the request'), reason);
  const late = await rejection(t, a.request(b.id, 'unanswered', { replyTimeoutMs: 3_600_000, signal: AbortSignal.timeout(50) }), 'the request');
  t.is((late as Error).name, 'TimeoutError');
  await within(a.request(b.id, 'ping'), 'a ping');
  // The slot is one queue: anything not withdrawn would have come before the ping.
  t.deepEqual(atB, ['unanswered', 'ping']);
});

test('send: an abort while the slot is busy withdraws the message (never posted later) and the slot serves the next send', async (t) => {
  const { sock } = await fabric(t, 4);
  const a = t.context.track(await FabricClient.connect(sock, { nodename: 'a' }));
  const b = t.context.track(await FabricClient.connect(sock, { nodename: 'b' }));
  // A plain ivshmem peer on the fabric: it never takes what is posted to it.
  const mute = t.context.track(await Client.connect(sock));
  const atB = inbox(b, a.id);
  await a.send(mute.id, 'first'); // posted; the slot stays busy
  const ac = new AbortController();
  const sending = a.send(b.id, 'second', { timeoutMs: 3_600_000, signal: ac.signal });
  await new Promise((r) => setImmediate(r));
  ac.abort();
  t.is(await rejection(t, sending, 'the aborted send'), ac.signal.reason);
  t.is(abortListeners(ac.signal), 0);
  t.is(a.withdraw(), mute.id, "the mute peer's message is withdrawn");
  await a.send(b.id, 'third');
  await waitFor(() => atB.length > 0, 'b to get a message');
  await within(a.request(b.id, 'ping'), 'a ping');
  t.deepEqual(atB, ['third', 'ping']);
  // An already-aborted signal posts nothing.
  t.is(await rejection(t, a.send(b.id, 'never', { signal: AbortSignal.abort('no') }), 'the send'), 'no');
});

test.serial('linkUp: an abort while the switch has not answered rejects with the reason and removes its listeners and timer; linkUp then works', async (t) => {
  const { sock, server } = await fabric(t, 4);
  const a = await settled(t.context.track(await FabricClient.connect(sock, { nodename: 'a' })));
  const events = ['configured', 'message', 'close'] as const;
  const listeners = () => events.map((e) => a.listenerCount(e));
  const before = listeners();
  const timersBefore = timers();
  const resume = pause(t, server);
  const ac = new AbortController();
  const linking = a.linkUp({ timeoutMs: 3_600_000, signal: ac.signal });
  t.deepEqual(
    listeners(),
    before.map((n) => n + 1),
  );
  await new Promise((r) => setImmediate(r));
  ac.abort();
  t.is(await rejection(t, linking, 'the aborted link-up'), ac.signal.reason);
  t.deepEqual(listeners(), before);
  t.is(abortListeners(ac.signal), 0);
  t.true(timers() <= timersBefore, 'the link-up timer is gone');
  t.is(await rejection(t, a.linkUp({ signal: AbortSignal.abort('no') }), 'the link-up'), 'no');
  resume();
  const link = await within(a.linkUp(), 'the link-up');
  t.is(link.CID0, a.id * 100);
  t.is(a.attributes.link, 'configured');
});

test('sendRing: an abort while the ring is full rejects with the reason; what was pushed stays, the rest is never pushed, and the ring then flows', async (t) => {
  const { sock } = await fabric(t, 4);
  const a = t.context.track(await FabricClient.connect(sock, { nodename: 'a' }));
  // A plain peer: it never reads the ring a -> mute.
  const mute = t.context.track(await Client.connect(sock));
  const layout = a.rings!;
  const reader = new RingReader(mute.memory, ringOffset(layout, a.id, mute.id), layout.capacity);
  const size = 1000;
  const count = Math.ceil((2 * layout.capacity) / size); // twice what the ring holds
  const messages = Array.from({ length: count }, (_, i) => new Uint8Array(size).fill(i & 0xff));
  const ac = new AbortController();
  const sending = a.sendRing(mute.id, messages, { timeoutMs: 3_600_000, signal: ac.signal });
  await waitFor(() => layout.capacity - reader.usedBytes < size + 16, 'the ring to fill');
  const queued = a.sendRing(mute.id, [new Uint8Array([1])], { timeoutMs: 3_600_000, signal: ac.signal });
  ac.abort();
  t.is(await rejection(t, sending, 'the aborted sendRing'), ac.signal.reason);
  t.is(await rejection(t, queued, 'the sendRing queued behind it'), ac.signal.reason, 'a call waiting for an earlier one rejects too');
  t.is(abortListeners(ac.signal), 0);
  let pushed = 0;
  for (let m = reader.pop(); m !== null && pushed <= count; m = reader.pop()) {
    t.is(m[0], pushed & 0xff, `message ${pushed} in order`);
    pushed++;
  }
  t.true(pushed > 0 && pushed < count, `${pushed} of ${count} pushed before the abort`);
  // Room again: nothing of the aborted calls follows, a new call goes through.
  await within(a.sendRing(mute.id, [new Uint8Array([7, 7])]), 'a sendRing after the abort');
  const next = reader.pop();
  t.deepEqual(next && [...next], [7, 7]);
  t.is(reader.pop(), null);
});

test.serial('FabricClient.connect passes its signal to the connect: an already-aborted one rejects with its reason', async (t) => {
  const { sock } = await fabric(t, 4);
  const before = fdTargets();
  const reason = new Error('no fabric today');
  t.is(await rejection(t, FabricClient.connect(sock, { signal: AbortSignal.abort(reason) }), 'the connect'), reason);
  t.is(fdDiff(before, fdTargets()), '(no difference by kind)');
});

test('a signal that never aborts is let go when each call succeeds: connect, send, request, linkUp and sendRing leave no listener on it', async (t) => {
  const { sock } = await fabric(t, 4);
  // One controller for every call, as a caller with one "stop everything" switch has.
  const ac = new AbortController();
  const { signal } = ac;
  const a = t.context.track(await FabricClient.connect(sock, { nodename: 'a', signal }));
  const b = t.context.track(await FabricClient.connect(sock, { nodename: 'b', signal }));
  t.is(abortListeners(signal), 0, 'after the connects');
  const atB = inbox(b, a.id);
  for (let i = 0; i < 20; i++) await a.send(b.id, `m${i}`, { signal });
  t.is(abortListeners(signal), 0, 'after the sends');
  const pong = await a.request(b.id, 'ping', { signal });
  t.deepEqual(pong.message, { kind: 'pong' });
  t.is(abortListeners(signal), 0, 'after the request');
  await a.linkUp({ signal });
  t.is(abortListeners(signal), 0, 'after the link-up');
  await a.sendRing(b.id, [new Uint8Array([1]), new Uint8Array([2])], { signal });
  t.is(abortListeners(signal), 0, 'after the sendRing');
  await waitFor(() => atB.length === 21, 'b to get every message');
  t.deepEqual(atB, [...Array.from({ length: 20 }, (_, i) => `m${i}`), 'ping']);
  // The calls are over: aborting now changes nothing.
  ac.abort();
  t.false(a.closed);
  await within(a.request(b.id, 'ping'), 'a ping after the abort');
});

// ------------------------------------------------------------ using

test('Symbol.dispose and Symbol.asyncDispose exist, as Node defines them', (t) => {
  t.is(typeof Symbol.dispose, 'symbol');
  t.is(typeof Symbol.asyncDispose, 'symbol');
});

test('using closes a Server, its Fabric, Monitor, Clients and FabricClients at the end of the block, and await using the HTTP service', async (t) => {
  const sock = path.join(t.context.dir(), 'sock');
  const events: FabricEvent[] = [];
  let kept: { client: Client; peer: FabricClient; fabric: Fabric; url: string } | undefined;
  {
    const served = serveInProcess(['--max-peers', '4'], sock, () => undefined);
    using server = served.server;
    using fabric = served.fabric!;
    using monitor = new Monitor(server, fabric);
    monitor.on('event', (e) => events.push(e));
    await using http = await startHttp(monitor, { host: '127.0.0.1', port: 0, version: 'test' }, Promise.resolve(createMetrics(monitor, 'test')));
    using client = await Client.connect(sock);
    using peer = await FabricClient.connect(sock, { nodename: 'p' });
    t.deepEqual(await within(peer.request('switch', 'ping'), 'a ping').then((m) => m.message), { kind: 'pong' });
    t.is((await fetch(new URL('api/v1/peers', http.url))).status, 200);
    kept = { client, peer, fabric, url: http.url };
    t.false(fabric.closed);
  }
  if (!kept) return t.fail('the block did not run to its end');
  t.true(kept.client.closed);
  t.true(kept.peer.closed);
  t.true(kept.fabric.closed);
  t.false(fs.existsSync(sock), 'the server removed its socket');
  await t.throwsAsync(fetch(new URL('api/v1/peers', kept.url)), undefined, 'the HTTP service is closed');
  t.true(events.some((e) => e.type === 'join'));
});

test('a Monitor closed by using records nothing more from a server that goes on', async (t) => {
  const server = plainServer(t, 1);
  const events: FabricEvent[] = [];
  {
    using monitor = new Monitor(server, null);
    monitor.on('event', (e) => events.push(e));
    t.context.track(await Client.connect(server.socketPath));
    await waitFor(() => events.length === 1, 'the join event');
  }
  t.context.track(await Client.connect(server.socketPath));
  t.is(server.peerIds.length, 2);
  t.deepEqual(
    events.map((e) => e.type),
    ['join'],
  );
});
