// The fabric client (ts/fabric/client.ts) against a real `famez serve`
// fabric: the FAME-Z exchange with the switch through the library API, two
// clients messaging each other (send, request, message events, DEST forms),
// a busy slot that is never overwritten, 100,000-message bursts through the
// slots and through a ring channel, and `famez client`'s FAME-Z commands.
import * as fs from 'node:fs';
import * as path from 'node:path';

import anyTest, { type TestFn } from 'ava';

import { Client } from '../ts/client/client.js';
import { FabricClient, FabricClientError, mailboxProblem, type FabricClientOptions, type FabricMessage } from '../ts/fabric/client.js';
import { Mailbox } from '../ts/native.js';
import { message as burstMessage, mismatch } from './helpers/messages.js';
import { FamezProcess, Scratch, type } from './helpers/serve.js';
import { waitFor, within } from './helpers/wait.js';

const test = anyTest as TestFn<Scratch>;
const WAIT_MS = 20_000;
const BURST = 100_000;
const BURST_MS = 120_000;

test.beforeEach((t) => {
  t.context = new Scratch();
});
test.afterEach.always(async (t) => {
  await t.context.cleanup();
});

/** A fabric of `peers` peers on a fresh socket; returns the socket path. */
async function fabric(t: { context: Scratch }, peers = 4, extra: string[] = []): Promise<{ sock: string; server: FamezProcess }> {
  const sock = path.join(t.context.dir(), 'sock');
  const server = await t.context.serve(['-S', sock, '--memfd', '--max-peers', String(peers), ...extra]);
  return { sock, server };
}

async function join(t: { context: Scratch }, sock: string, nodename: string, options: FabricClientOptions = {}): Promise<FabricClient> {
  return t.context.track(await FabricClient.connect(sock, { nodename, ...options }));
}

/** Every message in and out of `c`, as `< text` / `> text`, per peer. */
function transcript(c: FabricClient, peer: number): string[] {
  const lines: string[] = [];
  c.on('message', (m) => {
    if (m.from === peer) lines.push(`< ${m.text}`);
  });
  c.on('sent', ({ to, text }) => {
    if (to === peer) lines.push(`> ${text}`);
  });
  return lines;
}

async function rejectsWith(t: { is: (a: unknown, b: unknown, m?: string) => void; fail: (m: string) => void }, p: Promise<unknown>, code: string): Promise<FabricClientError | null> {
  try {
    await p;
  } catch (e) {
    if (!(e instanceof FabricClientError)) {
      t.fail(`expected a FabricClientError ${code}, got ${String(e)}`);
      return null;
    }
    t.is(e.code, code, e.message);
    return e;
  }
  t.fail(`expected a rejection with ${code}`);
  return null;
}

test('the whole FAME-Z exchange between the switch and the fabric client, through the library API', async (t) => {
  const { sock, server } = await fabric(t, 4);
  const c = await join(t, sock, 'libZ');
  t.is(c.id, 1);
  t.is(c.serverId, 5);
  t.is(c.nClients, 4);
  t.is(c.nodename, 'libZ');
  const log = transcript(c, c.serverId);
  t.deepEqual(c.attributes, { cclass: 'Debugger', SID0: 0, CID0: 0, link: 'up', PFMSID: null, PFMCID: null });
  t.deepEqual(
    c.peers.map((p) => [p.id, p.nodename, p.isSwitch]),
    [[5, 'Z-switch', true]],
  );

  // The switch asks every newcomer; the client answers on its own.
  await waitFor(() => log.length >= 2, 'the switch to ask Peer-Attribute and the client to answer', WAIT_MS);
  const pong = await c.request('switch', 'ping', { timeoutMs: WAIT_MS });
  t.is(pong.from, 5);
  t.deepEqual(pong.message, { kind: 'pong' });
  const ack = await c.request('server', { kind: 'link-ctl-peer-attribute' }, { timeoutMs: WAIT_MS });
  t.deepEqual(ack.message, { kind: 'link-ctl-ack', attributes: { 'C-Class': 'FabricSwitch', SID0: '27', CID0: '500' } });
  t.deepEqual(c.peers[0].attributes, { cclass: 'FabricSwitch', SID0: 27, CID0: 500, all: { 'C-Class': 'FabricSwitch', SID0: '27', CID0: '500' } });

  const link = await c.linkUp();
  t.deepEqual(link, { SID0: 27, CID0: c.id * 100, PFMSID: 27, PFMCID: 500, from: 5, Tag: link.Tag });
  t.deepEqual(c.attributes, { cclass: 'Debugger', SID0: 27, CID0: 100, link: 'configured', PFMSID: 27, PFMCID: 500 });
  // The switch follows the acknowledgment with Peer-Attribute, answered with the new IDs.
  await waitFor(() => log.length >= 11, 'the follow-up Peer-Attribute and its answer', WAIT_MS);
  t.deepEqual(log, [
    '< Link CTL Peer-Attribute',
    '> Link CTL ACK C-Class=Debugger,SID0=0,CID0=0',
    '> ping',
    '< pong',
    '> Link CTL Peer-Attribute',
    '< Link CTL ACK C-Class=FabricSwitch,SID0=27,CID0=500',
    '> Link RFC TTC=27us',
    `< CTL-Write Space=0,PFMSID=27,PFMCID=500,SID=27,CID=100,Tag=${link.Tag}`,
    `> Standalone Acknowledgment Tag=${link.Tag},Reason=OK`,
    '< Link CTL Peer-Attribute',
    '> Link CTL ACK C-Class=Debugger,SID0=27,CID0=100',
  ]);
  await server.waitFor(/switch: peer 1: C-Class=Debugger,SID0=0,CID0=0/);
  await server.waitFor(/switch: peer 1: configured SID0=27,CID0=100/);
  await server.waitFor(/switch: peer 1: C-Class=Debugger,SID0=27,CID0=100/);
  // The configuration is in the client's slot for all to see.
  const view = t.context.track(new Mailbox(c.transport.sharedMemory));
  t.like(view.slot(1), { nodename: 'libZ', peerSid: 27, peerCid: 100, buflen: 0 });

  c.close();
  t.true(c.closed);
  await server.waitFor(/peer 1 disconnected/);
  await rejectsWith(t, c.send('switch', 'ping'), 'ECLOSED');
});

test('a peer that starts reading only after the switch withdrew its Peer-Attribute is asked again, and the switch learns its C-Class', async (t) => {
  const { sock, server } = await fabric(t, 4);
  // Joined, but nothing reads its slots yet (a host busy starting it).
  const raw = t.context.track(await Client.connect(sock));
  await server.waitFor(new RegExp(`a message to peer ${raw.id} was not taken within \\d+ ms: withdrawn`), WAIT_MS);
  const c = t.context.track(FabricClient.attach(raw, { nodename: 'late' }));
  const log = transcript(c, c.serverId);
  await server.waitFor(new RegExp(`switch: peer ${raw.id}: C-Class=Debugger,SID0=0,CID0=0`), WAIT_MS);
  await waitFor(() => log.length >= 2, 'the Peer-Attribute and its answer in the client', WAIT_MS);
  t.deepEqual(log.slice(0, 2), ['< Link CTL Peer-Attribute', '> Link CTL ACK C-Class=Debugger,SID0=0,CID0=0']);
  t.is(log.filter((l) => l === '< Link CTL Peer-Attribute').length, 1, 'asked once: the withdrawn question, not a copy');
});

test("a request to nodename@SID waits for the switch's look-up as long as its replyTimeoutMs, not the client's default", async (t) => {
  const { sock } = await fabric(t, 4);
  // A default no answer could meet: only the request's own timeout may govern.
  const c = await join(t, sock, 'asker', { requestTimeoutMs: 0 });
  // No links here: the switch refuses the directory question, so the name is unknown (not a timeout).
  await rejectsWith(t, c.request('nobody@3', 'ping', { replyTimeoutMs: WAIT_MS, timeoutMs: WAIT_MS }), 'ENOPEER');
});

test('a --silent server is refused with ENOTFABRIC and the connection is closed', async (t) => {
  const sock = path.join(t.context.dir(), 'sock');
  const server = await t.context.serve(['--silent', '-S', sock, '--memfd', '-n', '3']);
  const e = await rejectsWith(t, FabricClient.connect(sock), 'ENOTFABRIC');
  t.regex(e?.message ?? '', /no FAME-Z mailbox .*--silent/);
  await server.waitFor(/peer 0 disconnected/);
});

test('mailboxProblem names the globals found and why they describe no mailbox: all zero (stock or wiped), a zeroed nClients, too small an object', (t) => {
  const good = { slotsize: 512, bufOffset: 128, nClients: 14, nEvents: 16, serverId: 15 };
  t.is(mailboxProblem(good, 1 << 20), null);
  t.is(
    mailboxProblem({ slotsize: 0, bufOffset: 0, nClients: 0, nEvents: 0, serverId: 0 }, 1 << 20),
    'globals slotsize=0, buf_offset=0, nClients=0, nEvents=0, server_id=0, all zero: a famez serve --silent or a stock ivshmem server, or a fabric whose mailbox a peer wiped',
  );
  t.is(
    mailboxProblem({ ...good, nClients: 0 }, 1 << 20),
    "globals slotsize=512, buf_offset=128, nClients=0, nEvents=16, server_id=15: nClients is below 1 (a damaged mailbox, or not FAME-Z's)",
  );
  t.regex(mailboxProblem({ ...good, nEvents: 0 }, 1 << 20) ?? '', /: nEvents is not nClients \+ 2 /);
  t.regex(mailboxProblem({ ...good, slotsize: 0 }, 1 << 20) ?? '', /: slotsize is not 512 /);
  t.regex(mailboxProblem(good, 4096) ?? '', /: 16 slots do not fit in 4096 bytes /);
});

test('linkUp without a fabric manager (--no-pfm) is refused with ENAK; without room for rings the slots work alone', async (t) => {
  const sock = path.join(t.context.dir(), 'sock');
  // 60 peers: 3,660 rings of even 1 KiB do not fit in the default 4 MiB.
  const server = await t.context.serve(['-S', sock, '--memfd', '--max-peers', '60', '--no-pfm']);
  await server.waitFor(/no ring channels: 3660 rings of 1 KiB need \d+ bytes of shared memory, there are 4194304/);
  const a = await join(t, sock, 'alpha');
  const b = await join(t, sock, 'beta');
  t.is(a.serverId, 61);
  t.is(a.rings, null);
  const e = await rejectsWith(t, a.linkUp(), 'ENAK');
  t.regex(e?.message ?? '', /Link CTL NAK Reason=no fabric manager here/);
  t.is(a.attributes.link, 'up');
  await waitFor(() => a.peers.some((p) => p.id === b.id), 'alpha to see beta', WAIT_MS);
  await rejectsWith(t, a.sendRing(b.id, Buffer.from('x')), 'ENORINGS');
  t.is((await b.request('alpha', 'ping')).text, 'pong');
});

test('two fabric clients: DEST forms, send, request, message events, and a busy slot is never overwritten', async (t) => {
  const { sock } = await fabric(t, 4);
  const a = await join(t, sock, 'alpha');
  const b = await join(t, sock, 'beta');
  await waitFor(() => a.peers.some((p) => p.id === b.id) && b.peers.some((p) => p.id === a.id), 'the clients to see each other', WAIT_MS);
  const S = a.serverId;

  // DEST: an ID, a nodename, server/switch, all, others.
  t.deepEqual(a.resolve(b.id), [b.id]);
  t.deepEqual(a.resolve(String(b.id)), [b.id]);
  t.deepEqual(a.resolve('beta'), [b.id]);
  t.deepEqual(a.resolve('alpha'), [a.id]);
  t.deepEqual(a.resolve('switch'), [S]);
  t.deepEqual(a.resolve('server'), [S]);
  t.deepEqual(a.resolve('all'), [b.id, S]);
  t.deepEqual(a.resolve('others'), [b.id]);
  t.throws(() => a.resolve('nobody'), { instanceOf: FabricClientError, message: /no connected peer is named 'nobody'/ });
  t.throws(() => a.resolve(4), { instanceOf: FabricClientError, message: /peer 4 is not connected/ });
  t.throws(() => a.resolve(99), { instanceOf: FabricClientError, message: /outside the fabric/ });
  t.throws(() => a.resolveOne('all'), { instanceOf: FabricClientError, message: /names 2 peers/ });

  // send: text as is, and typed FAME-Z messages formatted.
  const atB: FabricMessage[] = [];
  b.on('message', (m) => {
    if (m.from === a.id) atB.push(m);
  });
  await a.send('beta', 'hello beta');
  await a.send(b.id, { kind: 'link-ctl-nak', details: 'Reason=just testing' });
  await waitFor(() => atB.length >= 2, 'beta to get two messages', WAIT_MS);
  t.like(atB[0], { from: a.id, nodename: 'alpha', text: 'hello beta', message: { kind: 'text', text: 'hello beta' } });
  t.like(atB[1], { from: a.id, text: 'Link CTL NAK Reason=just testing', message: { kind: 'link-ctl-nak', details: 'Reason=just testing' } });

  // request: a peer answers ping and Peer-Attribute on its own.
  const pong = await b.request('alpha', 'ping');
  t.like(pong, { from: a.id, nodename: 'alpha', text: 'pong', message: { kind: 'pong' } });
  const ack = await a.request('beta', 'Link CTL Peer-Attribute');
  t.deepEqual(ack.message, { kind: 'link-ctl-ack', attributes: { 'C-Class': 'Debugger', SID0: '0', CID0: '0' } });
  t.like(a.peers.find((p) => p.id === b.id), { nodename: 'beta', isSwitch: false, attributes: { cclass: 'Debugger', SID0: 0, CID0: 0 } });

  // all: one message each, one after the other through the one slot.
  const pongs = new Set<number>();
  a.on('message', (m) => {
    if (m.message?.kind === 'pong') pongs.add(m.from);
  });
  // (The slot to each waits as long as the test: a loaded switch may take
  // over the default second to read it.)
  await a.send('all', 'ping', { timeoutMs: WAIT_MS });
  await waitFor(() => pongs.has(b.id) && pongs.has(S), 'pongs from beta and the switch', WAIT_MS);

  // Limits and failures are typed.
  await rejectsWith(t, a.send(b.id, 'x'.repeat(384)), 'EMSGSIZE');
  await rejectsWith(t, a.request(b.id, 'no answer to this', { replyTimeoutMs: 200 }), 'ETIMEDOUT');
  // One shared reply timer: a short request after a long one still times
  // out at its own deadline, and the long one still gets its answer.
  let longDone = false;
  const long = a.request(b.id, 'answer me later', { replyTimeoutMs: 20_000 }).finally(() => (longDone = true));
  await rejectsWith(t, a.request(b.id, 'no answer to this either', { replyTimeoutMs: 150 }), 'ETIMEDOUT');
  t.false(longDone, 'the long request is still waiting');
  await b.send(a.id, 'the late answer');
  t.is((await long).text, 'the late answer');
  await rejectsWith(t, a.send('nobody', 'x'), 'ENOPEER');

  // A peer that never reads (a stock host client): the second message
  // waits, times out with EBUSY, and the first is still there, intact.
  const raw = t.context.track(await Client.connect(sock));
  await waitFor(() => a.peers.some((p) => p.id === raw.id), 'alpha to see the raw peer', WAIT_MS);
  const rawBox = t.context.track(new Mailbox(raw.sharedMemory));
  await a.send(raw.id, 'first');
  const busy = await rejectsWith(t, a.send(raw.id, 'second', { timeoutMs: 200 }), 'EBUSY');
  t.regex(busy?.message ?? '', new RegExp(`still holds the message to peer ${raw.id}.*not overwritten`));
  t.is(rawBox.take(a.id)?.toString(), 'first', 'the unread message was not overwritten');
  await a.send(raw.id, 'third');
  t.is(rawBox.take(a.id)?.toString(), 'third');
  await a.send(raw.id, 'fourth');
  t.is(a.withdraw(), raw.id, 'withdraw() says whom the unread message was for');
  t.is(rawBox.take(a.id), null);
  t.is(a.withdraw(), null);
  // The slot works on: beta still gets alpha's messages.
  const before = atB.length;
  await a.send('beta', 'still here');
  await waitFor(() => atB.length > before, 'beta to get the next message', WAIT_MS);
  t.is(atB[atB.length - 1].text, 'still here');
});

test('spoofing: spoof(DEST, SRC, text) makes DEST see a message from SRC', async (t) => {
  const { sock } = await fabric(t, 4);
  const a = await join(t, sock, 'alpha');
  const b = await join(t, sock, 'beta');
  await waitFor(() => a.peers.some((p) => p.id === b.id), 'alpha to see beta', WAIT_MS);
  // The switch takes "ping" from beta's slot and answers beta, who never asked.
  const pong = new Promise<FabricMessage>((resolve) =>
    b.on('message', (m) => {
      if (m.from === b.serverId && m.message?.kind === 'pong') resolve(m);
    }),
  );
  await a.spoof('switch', b.id, 'ping');
  t.like(await within(pong, 'the pong at beta', WAIT_MS), { from: b.serverId, text: 'pong' });
  // Alpha rings itself as beta.
  const self = new Promise<FabricMessage>((resolve) =>
    a.on('message', (m) => {
      if (m.from === b.id && m.text === 'hello from nobody') resolve(m);
    }),
  );
  await a.spoof(a.id, b.id, 'hello from nobody');
  t.like(await within(self, 'the spoofed message at alpha', WAIT_MS), { from: b.id, nodename: 'beta' });
  // Spoofing goes through the same slot sender as send(): a slot that
  // still holds an unread message is waited for, then EBUSY, never
  // overwritten; spoofs through one slot keep their order.
  const raw = t.context.track(await Client.connect(sock));
  await waitFor(() => a.peers.some((p) => p.id === raw.id), 'alpha to see the raw peer', WAIT_MS);
  const rawBox = t.context.track(new Mailbox(raw.sharedMemory));
  await a.spoof(raw.id, b.id, 'first as beta');
  await rejectsWith(t, a.spoof(raw.id, b.id, 'second as beta', { timeoutMs: 200 }), 'EBUSY');
  t.is(rawBox.take(b.id)?.toString(), 'first as beta', 'the unread spoofed message was not overwritten');
  const both = Promise.all([a.spoof(raw.id, b.id, 'one'), a.spoof(raw.id, b.id, 'two')]);
  await waitFor(() => rawBox.busy(b.id), 'the first of two spoofs', WAIT_MS);
  t.is(rawBox.take(b.id)?.toString(), 'one');
  await waitFor(() => rawBox.busy(b.id), 'the second of two spoofs', WAIT_MS);
  t.is(rawBox.take(b.id)?.toString(), 'two');
  await within(both, 'both spoofs posted', WAIT_MS);
});

test('a burst of 100,000 messages between two fabric clients through their slots: none lost, duplicated or reordered', async (t) => {
  const { sock } = await fabric(t, 4);
  // A generous bound per message: the receiver shares this busy event loop.
  const a = await join(t, sock, 'sender', { sendTimeoutMs: 10_000 });
  const b = await join(t, sock, 'receiver');
  await waitFor(() => a.peers.some((p) => p.id === b.id), 'the sender to see the receiver', WAIT_MS);
  const text = (i: number) => `seq ${i} ${'x'.repeat(i % 370)}`;
  let got = 0;
  let bad: string | null = null;
  b.on('message', (m) => {
    if (m.from !== a.id || bad) return;
    if (m.text !== text(got)) bad = `message ${got}: got ${JSON.stringify(m.text.slice(0, 40))}`;
    got++;
  });
  const run = async () => {
    for (let i = 0; i < BURST; i++) {
      await a.send(b.id, text(i));
      if (bad) break;
    }
    await waitFor(() => got >= BURST || bad, 'the receiver to take every message', WAIT_MS);
  };
  await within(run(), `${BURST} messages through the slot`, BURST_MS);
  t.is(bad, null);
  t.is(got, BURST);
  t.is(a.withdraw(), null, 'the last message was taken');
});

test('a burst of 100,000 messages between two fabric clients through a ring channel: none lost, duplicated or reordered', async (t) => {
  const { sock, server } = await fabric(t, 4);
  await server.waitFor(/ring channels: 20 rings of 16 KiB/);
  const a = await join(t, sock, 'producer', { sendTimeoutMs: 10_000 });
  const b = await join(t, sock, 'consumer');
  await waitFor(() => a.peers.some((p) => p.id === b.id), 'the producer to see the consumer', WAIT_MS);
  t.like(a.rings, { nClients: 4, capacity: 16 * 1024, count: 20, maxMessage: 8184 });
  await rejectsWith(t, a.sendRing(b.id, Buffer.alloc(8185)), 'EMSGSIZE');
  const max = 4096;
  let got = 0;
  let wakeups = 0;
  let bad: string | null = null;
  b.on('data', ({ from, messages }) => {
    if (from !== a.id || bad) return;
    wakeups++;
    for (const m of messages) {
      bad = mismatch(m, got, max);
      if (bad) return;
      got++;
    }
  });
  const run = async () => {
    const BATCH = 256;
    for (let i = 0; i < BURST && !bad; i += BATCH) {
      const batch: Buffer[] = [];
      for (let j = i; j < Math.min(i + BATCH, BURST); j++) batch.push(burstMessage(j, max));
      await a.sendRing(b.id, batch);
    }
    await waitFor(() => got >= BURST || bad, 'the consumer to pop every message', WAIT_MS);
  };
  await within(run(), `${BURST} messages through the ring`, BURST_MS);
  t.is(bad, null);
  t.is(got, BURST);
  t.true(wakeups >= 1 && wakeups <= BURST, `${wakeups} wake-ups`);
});

test('in place: ringWriter() writes 100,000 messages straight into the ring, onRing() reads them without a copy', async (t) => {
  const { sock, server } = await fabric(t, 4);
  await server.waitFor(/ring channels: 20 rings of 16 KiB/);
  const a = await join(t, sock, 'producer');
  const b = await join(t, sock, 'consumer');
  await waitFor(() => a.peers.some((p) => p.id === b.id), 'the producer to see the consumer', WAIT_MS);
  const max = 4096;
  let got = 0;
  let bad: string | null = null;
  b.on('data', () => {
    bad ??= 'a data event while onRing() is set';
  });
  b.onRing((from, bytes, start, length) => {
    if (from !== a.id || bad) return;
    bad = mismatch(bytes.subarray(start, start + length), got, max);
    got++;
  });
  const w = a.ringWriter(b.id);
  t.is(w.capacity, 16 * 1024);
  t.throws(() => w.reserve(8185), { message: /EMSGSIZE/ });
  const run = async () => {
    for (let i = 0; i < BURST && !bad; ) {
      // Write each message in place until the ring is full, then yield.
      for (; i < BURST; i++) {
        const m = burstMessage(i, max);
        const at = w.reserve(m.length);
        if (at < 0) break;
        m.copy(w.bytes, at);
      }
      w.commit();
      await new Promise((r) => setImmediate(r));
    }
    await waitFor(() => got >= BURST || bad, 'the consumer to read every message', WAIT_MS);
  };
  await within(run(), `${BURST} messages through the ring in place`, BURST_MS);
  t.is(bad, null);
  t.is(got, BURST);
  // Back to copies: data events again.
  b.onRing(null);
  b.removeAllListeners('data');
  const seen: Buffer[] = [];
  b.on('data', ({ messages }) => seen.push(...messages));
  await a.sendRing(b.id, [Buffer.from('after')]);
  await waitFor(() => seen.length === 1, 'the data event', WAIT_MS);
  t.is(seen[0].toString(), 'after');
});

test('one doorbell for more messages than a loop turn reads: the rest are read on the next turns, without another doorbell', async (t) => {
  const { sock } = await fabric(t, 2, ['-l', '8M', '--ring-capacity', '1M']);
  const a = await join(t, sock, 'producer');
  const b = await join(t, sock, 'consumer');
  await waitFor(() => a.peers.some((p) => p.id === b.id), 'the producer to see the consumer', WAIT_MS);
  let got = 0;
  let last = -1;
  b.onRing((_from, bytes, start) => {
    if (bytes[start] !== (got & 0xff)) last = got;
    got++;
  });
  // 60,000 one-byte messages (16-byte records: 960,000 bytes) written in
  // one synchronous run: the first part rings the doorbell, the rest goes
  // into a ring that is not empty. A loop turn reads at most 16,384.
  let bellsRung = 0;
  b.transport.on('interrupt', ({ vector }) => {
    if (vector === a.id) bellsRung++;
  });
  const w = a.ringWriter(b.id);
  for (let i = 0; i < 60_000; i++) w.bytes[w.reserve(1)] = i & 0xff;
  w.commit();
  await waitFor(() => got >= 60_000, 'every message', WAIT_MS);
  t.is(got, 60_000);
  t.is(bellsRung, 1, 'one doorbell');
  t.is(last, -1, 'in order');
});

test('famez client speaks FAME-Z to a fabric: who, ping, send, int, rfc, link, dump, quit', async (t) => {
  const { sock, server } = await fabric(t, 4);
  const c = t.context.client(['-S', sock, '-N', 'cliZ']);
  await c.waitFor(/connected to .* as peer 1 \(6 vector\(s\)\); peers: 5/);
  await c.waitFor(/fabric of 4 peers: this is peer 1 'cliZ', the switch is peer 5/);
  await c.waitFor(/from 5 \(Z-switch\): Link CTL Peer-Attribute/);
  await server.waitFor(/switch: peer 1: C-Class=Debugger,SID0=0,CID0=0/);
  const lib = await join(t, sock, 'libZ');
  t.is(lib.id, 2);
  const atLib: FabricMessage[] = [];
  lib.on('message', (m) => atLib.push(m));
  await c.waitFor(/peer 2 joined/);

  type(c, 'who');
  await c.waitFor(/^1 cliZ \(me\)\n2 libZ\n5 Z-switch \(switch\)$/m);

  type(c, 'ping switch');
  await c.waitFor(/sent to 5 \(Z-switch\): ping\n(?:.*\n)*?from 5 \(Z-switch\): pong/);

  type(c, 'send libZ hello from the  command line');
  await c.waitFor(/sent to 2 \(libZ\): hello from the {2}command line/);
  await waitFor(() => atLib.find((m) => m.from === 1 && m.text === 'hello from the  command line'), 'the library peer to get the text', WAIT_MS);

  // int DEST SRC TEXT: the switch answers libZ a ping libZ never sent.
  type(c, 'int switch 2 ping');
  await c.waitFor(/sent to 5 \(Z-switch\) as 2 \(libZ\): ping/);
  await waitFor(() => atLib.find((m) => m.from === 5 && m.text === 'pong'), 'libZ to get the pong', WAIT_MS);
  // ...and the client rings itself as libZ.
  type(c, 'int 1 2 spoofed hello');
  await c.waitFor(/from 2 \(libZ\): spoofed hello/);

  // The library peer pings the command line, which answers on its own.
  t.is((await lib.request(1, 'ping')).text, 'pong');
  await c.waitFor(/from 2 \(libZ\): ping/);

  type(c, 'rfc');
  await c.waitFor(/from 5 \(Z-switch\): CTL-Write Space=0,PFMSID=27,PFMCID=500,SID=27,CID=100,Tag=\d+/);
  await c.waitFor(/configured by 5 \(Z-switch\): SID0=27,CID0=100/);
  await server.waitFor(/switch: peer 1: configured SID0=27,CID0=100/);
  await server.waitFor(/switch: peer 1: C-Class=Debugger,SID0=27,CID0=100/);

  type(c, 'link CTL Peer-Attribute');
  await c.waitFor(/sent to 5 \(Z-switch\): Link CTL Peer-Attribute\n(?:.*\n)*?from 5 \(Z-switch\): Link CTL ACK C-Class=FabricSwitch,SID0=27,CID0=500/);
  t.is((await lib.request(1, 'Link CTL Peer-Attribute')).text, 'Link CTL ACK C-Class=Debugger,SID0=27,CID0=100');

  type(c, 'dump');
  await c.waitFor(/peer 1 'cliZ': C-Class=Debugger,SID0=27,CID0=100; link configured/);
  await c.waitFor(/peer 5 'Z-switch' \(switch\): C-Class=FabricSwitch,SID0=27,CID0=500/);
  await c.waitFor(/peer 2 'libZ': attributes unknown/);

  // The JSON forms, one line each, for scripts.
  type(c, 'who --json');
  const who = JSON.parse((await c.waitFor(/^\{"id":1,.*\}$/m))[0]) as unknown;
  t.deepEqual(who, {
    id: 1,
    nodename: 'cliZ',
    peers: [
      { id: 2, nodename: 'libZ', switch: false },
      { id: 5, nodename: 'Z-switch', switch: true },
    ],
    // The peers of other switches: none, this switch has no links.
    remote: [],
  });
  type(c, 'dump --json');
  const dump = JSON.parse((await c.waitFor(/^\{"id":1,"nodename":"cliZ","attributes".*\}$/m))[0]) as {
    attributes: unknown;
    fabric: unknown;
    peers: Array<{ id: number; attributes: Record<string, string> | null }>;
  };
  t.like(dump.attributes, { cclass: 'Debugger', SID0: 27, CID0: 100, link: 'configured', PFMSID: 27, PFMCID: 500 });
  t.like(dump.fabric, { nClients: 4, switch: 5, vectors: 6 });
  t.deepEqual(
    dump.peers.map((p) => [p.id, p.attributes]),
    [
      [2, null],
      [5, { 'C-Class': 'FabricSwitch', SID0: '27', CID0: '500' }],
    ],
  );
  type(c, 'who --yaml');
  await c.waitFor(/usage: who \[--json\]/);

  type(c, 'send nobody hi');
  await c.waitFor(/error: no connected peer is named 'nobody'/);
  type(c, 'int 2');
  await c.waitFor(/usage: int DEST SRC TEXT/);
  type(c, 'help');
  await c.waitFor(/int DEST SRC TEXT +send TEXT as peer SRC/);

  type(c, 'send libZ last words');
  type(c, 'quit');
  t.is((await c.wait()).code, 0);
  t.regex(c.stdout, /sent to 2 \(libZ\): last words/, 'quit waits for the commands before it');
  await server.waitFor(/peer 1 disconnected/);
  t.is(c.stderr, '');
});

test('--ring-capacity: 64 KiB messages through a ring; a capacity the size cannot hold is refused with exit 2', async (t) => {
  const sock = path.join(t.context.dir(), 'sock');
  const server = await t.context.serve(['-S', sock, '--memfd', '--max-peers', '2', '-l', '4M', '--ring-capacity', '256K']);
  await server.waitFor(/ring channels: 6 rings of 256 KiB \(messages up to 131064 bytes\)/);
  const a = await join(t, sock, 'big-producer');
  const b = await join(t, sock, 'big-consumer');
  await waitFor(() => a.peers.some((p) => p.id === b.id), 'the producer to see the consumer', WAIT_MS);
  const sizes = [65536, 1, 131064, 4096, 65536];
  const got: Buffer[] = [];
  b.on('data', ({ from, messages }) => {
    if (from === a.id) for (const m of messages) got.push(Buffer.from(m));
  });
  const sent = sizes.map((n, i) => Buffer.alloc(n, i + 1));
  for (const m of sent) await a.sendRing(b.id, [m]);
  await waitFor(() => got.length === sent.length, 'every big message', WAIT_MS);
  t.deepEqual(got.map((m) => m.length), sizes);
  t.true(got.every((m, i) => m.equals(sent[i])), 'the bytes arrive intact');

  const dir = t.context.dir();
  const refused = await t.context.run(['serve', '-S', path.join(dir, 'sock'), '--memfd', '-l', '1M', '--ring-capacity', '1M']);
  t.is(refused.exitInfo.code, 2);
  t.regex(refused.stderr, /rings of 1024 KiB for 14 peers need \d+ bytes of shared memory; -l gives 1048576: raise -l or lower --ring-capacity/);
  t.deepEqual(fs.readdirSync(dir), [], 'the socket was removed');
});
