// A fabric under hostile peers: a ping flooder that never reads its
// answers, a doorbell flooder, never-reading newcomers and a peer that
// overwrites the switch's slot, beside good peers whose pings must keep
// being answered — one reading the switch's ring, one on FAME-Z's slot
// only. The server runs in this process so its queues can be checked;
// the flooders are child processes. Every loop is bounded in count.
import { lineLogger } from '../ts/log.js';
import * as path from 'node:path';

import anyTest, { type TestFn } from 'ava';

import { Client } from '../ts/client/client.js';
import { FabricClient } from '../ts/fabric/client.js';
import { Fabric } from '../ts/fabric/fabric.js';
import { openMailbox } from '../ts/fabric/mailbox.js';
import { Server } from '../ts/server/server.js';
import { LineProcess, removeDir, tempDir, waitFor } from './helpers/wait.js';

interface Ctx {
  dir: string;
  server: Server | null;
  closers: Array<() => void>;
  procs: LineProcess[];
}
const test = anyTest as TestFn<Ctx>;

const N = 14;
const LIMIT = 64;

test.beforeEach((t) => {
  t.context = { dir: tempDir('famez-hostile-'), server: null, closers: [], procs: [] };
});
test.afterEach.always(async (t) => {
  for (const p of t.context.procs) await p.stop();
  for (const c of t.context.closers.reverse()) {
    try {
      c();
    } catch {
      // already closed
    }
  }
  t.context.server?.close();
  removeDir(t.context.dir);
});

function startFabric(t: { context: Ctx }, log: string[]): { server: Server; fabric: Fabric; sock: string } {
  const sock = path.join(t.context.dir, 'sock');
  const fabric = new Fabric({ nClients: N, pfm: true, sid: 27, perPeerLimit: LIMIT, logger: lineLogger((l) => log.push(l)) });
  const server = Server.start({
    socket: sock,
    shm: { kind: 'memfd', name: 'famez' },
    size: 4 * 2 ** 20,
    vectors: N + 2,
    maxPeers: N,
    ids: { min: 1, max: N },
    member: fabric.member,
    recycle: true,
    logger: lineLogger((l) => log.push(l)),
  });
  t.context.server = server;
  fabric.attach(server, openMailbox(server.sharedMemory, N));
  return { server, fabric, sock };
}

function flooder(t: { context: Ctx }, sock: string, mode: 'ping' | 'doorbell', ms: number): LineProcess {
  const p = LineProcess.spawn(process.execPath, ['--import=tsx', path.join(__dirname, 'helpers', 'flooder.ts'), sock, mode, String(ms)], {
    cwd: path.join(__dirname, '..'),
  });
  t.context.procs.push(p);
  return p;
}

async function join(t: { context: Ctx }, sock: string, switchRing = true): Promise<FabricClient> {
  const c = await FabricClient.connect(sock, { switchRing, requestTimeoutMs: 15_000 });
  t.context.closers.push(() => c.close());
  return c;
}

/** `count` pings to the switch, one after another; every one must be answered. */
async function pings(c: FabricClient, count: number): Promise<string[]> {
  const out: string[] = [];
  for (let i = 0; i < count; i++) out.push((await c.request('switch', 'ping', { replyTimeoutMs: 15_000, timeoutMs: 15_000 })).text);
  return out;
}

test.serial('a ping flooder and never-reading newcomers beside good peers: every good ping is answered during and after, the flooder loses only its own answers', async (t) => {
  const log: string[] = [];
  const { fabric, sock, server } = startFabric(t, log);
  const ringPeer = await join(t, sock, true);
  const slotPeer = await join(t, sock, false);
  t.deepEqual(await pings(ringPeer, 3), ['pong', 'pong', 'pong']);

  const flood = flooder(t, sock, 'ping', 4000);
  await flood.waitLine((l) => l.includes('"ready"'), 'the flooder to join');
  // Sample the switch's queues while everything runs.
  let maxQueued = 0;
  const sampler = setInterval(() => (maxQueued = Math.max(maxQueued, fabric.stats.queued)), 20);
  t.context.closers.push(() => clearInterval(sampler));
  // Newcomers that read nothing from the mailbox: each is sent the
  // switch's Peer-Attribute, which it never takes.
  const newcomers = (async () => {
    for (let i = 0; i < 6; i++) {
      const c = await Client.connect(sock, { timeoutMs: 15_000 });
      t.context.closers.push(() => c.close());
      await new Promise((r) => setTimeout(r, 300));
      c.close();
    }
  })();
  const [duringRing, duringSlot] = await Promise.all([pings(ringPeer, 30), pings(slotPeer, 10), newcomers]);
  t.deepEqual(duringRing, Array(30).fill('pong'));
  t.deepEqual(duringSlot, Array(10).fill('pong'));
  await flood.waitLine((l) => l.includes('"done"'), 'the flood to end', 0, 30_000);
  const posted = JSON.parse(flood.lines.find((l) => l.includes('"done"'))!).count as number;
  t.true(posted > LIMIT, `the flooder posted ${posted} pings`);
  clearInterval(sampler);
  t.log(`the flooder posted ${posted} pings; the switch: ${JSON.stringify(fabric.stats)}, at most ${maxQueued} queued`);

  // The flooder lost its own answers, and the switch kept no more than its bound.
  t.true(fabric.stats.dropped > 0, JSON.stringify(fabric.stats));
  t.true(maxQueued <= LIMIT * N, `at most ${LIMIT} queued per peer: ${maxQueued}`);
  t.true(log.some((l) => /peer \d+: \d+ message\(s\) dropped/.test(l)), 'the drops were logged');
  t.true(log.some((l) => /was not taken within \d+ ms: withdrawn as undelivered/.test(l)), 'the untaken welcome was logged');

  // The flooder leaves: the server is idle again at once and welcomes a new peer.
  await flood.stop();
  await waitFor(() => server.peerIds.length === 2, 'the flooder to be gone', 20_000);
  t.deepEqual(await pings(slotPeer, 5), Array(5).fill('pong'));
  const fresh = await join(t, sock, false);
  await waitFor(() => fabric.switch.port(fresh.id)?.cclass === 'Debugger', "the newcomer's answer to the switch's Peer-Attribute", 20_000);
  t.deepEqual(await pings(fresh, 3), ['pong', 'pong', 'pong']);
  t.true(fabric.stats.queued <= 1, JSON.stringify(fabric.stats));
});

test.serial('a doorbell flooder beside a good peer: every good ping is answered', async (t) => {
  const log: string[] = [];
  const { fabric, sock } = startFabric(t, log);
  const good = await join(t, sock, false);
  const flood = flooder(t, sock, 'doorbell', 3000);
  await flood.waitLine((l) => l.includes('"ready"'), 'the flooder to join');
  t.deepEqual(await pings(good, 20), Array(20).fill('pong'));
  await flood.waitLine((l) => l.includes('"done"'), 'the flood to end', 0, 30_000);
  t.deepEqual(await pings(good, 3), Array(3).fill('pong'));
  t.true(fabric.stats.queued <= 1);
});

test.serial("a peer that keeps writing the switch's slot does not stop a ring-reading peer's answers, and is logged", async (t) => {
  const log: string[] = [];
  const { sock } = startFabric(t, log);
  const good = await join(t, sock, true);
  const jammer = await Client.connect(sock, { timeoutMs: 15_000 });
  t.context.closers.push(() => jammer.close());
  const words = new Uint32Array(jammer.memory, (N + 1) * 512 + 32, 2);
  const jam = setInterval(() => Atomics.store(words, 0, 5), 1);
  t.context.closers.push(() => clearInterval(jam));
  // A message to a slot-only peer sits in the slot; the jammer keeps it "busy".
  const slotOnly = await join(t, sock, false);
  t.deepEqual(await pings(good, 20), Array(20).fill('pong'));
  clearInterval(jam);
  t.deepEqual(await pings(slotOnly, 2), ['pong', 'pong']);
  t.true(
    log.some((l) => /slot (was overwritten|held bytes it did not write)/.test(l)),
    log.filter((l) => /switch/.test(l)).slice(-5).join('\n'),
  );
});

test.serial('zeroed mailbox globals are restored by the server, logged, and a newcomer still joins the fabric', async (t) => {
  const log: string[] = [];
  const { sock } = startFabric(t, log);
  const vandal = await Client.connect(sock, { timeoutMs: 15_000 });
  t.context.closers.push(() => vandal.close());
  const slot0 = new BigUint64Array(vandal.memory, 0, 9);
  const before = [...slot0];
  slot0.fill(0n); // nClients, nEvents, server_id, the ring magic...
  const newcomer = await join(t, sock);
  t.is(newcomer.nClients, N);
  t.not(newcomer.rings, null, 'the ring magic is back too');
  t.deepEqual([...slot0], before);
  const line = log.find((l) => /mailbox globals were overwritten/.test(l));
  t.truthy(line, log.join('\n'));
  t.regex(line!, /nClients 0 \(was 14\)/);
  t.regex(line!, /restored/);
  t.regex(line!, new RegExp(`connected are [^\\n]*\\b${vandal.id}\\b`));
});

test.serial("a message whose slot names another receiver is not acted on by the switch when the switch's vector is rung, and the mismatch is logged", async (t) => {
  const log: string[] = [];
  const { fabric, sock } = startFabric(t, log);
  const victim = await join(t, sock, false);
  const other = await join(t, sock, false);
  const spoofer = await Client.connect(sock, { timeoutMs: 15_000 });
  t.context.closers.push(() => spoofer.close());
  await pings(victim, 1);
  // The spoofer writes a Link RFC into the victim's slot, addressed to
  // `other`, and rings the switch's vector of the victim.
  const { Slots } = await import('../ts/fabric/slots.js');
  const slots = new Slots(spoofer.memory, N + 1);
  t.true(slots.post(victim.id, other.id, Buffer.from('Link RFC TTC=27us')));
  spoofer.ring(N + 1, victim.id);
  await waitFor(() => log.some((l) => /slot holds a message for peer/.test(l)), 'the mismatch log line', 20_000);
  t.regex(log.find((l) => /slot holds a message for peer/.test(l))!, new RegExp(`peer ${victim.id}'s slot holds a message for peer ${other.id}, but the switch's vector ${victim.id} was rung`));
  t.is(fabric.switch.port(victim.id)?.link, 'up', 'the switch did not configure the victim');
});

test.serial("a peer that corrupts the switch's ring to a ring reader: the switch logs it and answers that reader through its slot", async (t) => {
  const log: string[] = [];
  const { sock } = startFabric(t, log);
  const good = await join(t, sock, true);
  t.deepEqual(await pings(good, 2), ['pong', 'pong']);
  const vandal = await Client.connect(sock, { timeoutMs: 15_000 });
  t.context.closers.push(() => vandal.close());
  const { ringOffset } = await import('../ts/fabric/ring.js');
  const layout = good.rings!;
  // The consumer's tail counter (at +128) far past the producer's head.
  new BigUint64Array(vandal.memory, ringOffset(layout, N + 1, good.id) + 128, 1)[0] = 1n << 40n;
  t.deepEqual(await pings(good, 3), ['pong', 'pong', 'pong']);
  t.true(log.some((l) => new RegExp(`ring to peer ${good.id}: .*corrupt.*using the slot`).test(l)), log.filter((l) => /switch/.test(l)).join('\n'));
});

test.serial("a newcomer that never reads the switch's welcome gets it withdrawn at the deadline with a log line, even when nothing else is sent", async (t) => {
  const log: string[] = [];
  const { sock } = startFabric(t, log);
  const quiet = await Client.connect(sock, { timeoutMs: 15_000 });
  t.context.closers.push(() => quiet.close());
  await waitFor(() => log.some((l) => l.includes(`a message to peer ${quiet.id} was not taken within 1000 ms: withdrawn as undelivered`)), 'the undelivered log line', 20_000);
  t.is(new Uint32Array(quiet.memory, (N + 1) * 512 + 32, 1)[0], 0, "the switch's slot is free again");
});

test.serial("the switch reads its ring channels too: pings pushed into a peer's ring to the switch are answered (through the switch's ring to it)", async (t) => {
  const log: string[] = [];
  const { sock } = startFabric(t, log);
  const c = await join(t, sock, true);
  const pongs: string[] = [];
  c.on('message', (m) => {
    if (m.from === N + 1 && m.text === 'pong') pongs.push(m.text);
  });
  await c.sendRing('switch', Array.from({ length: 300 }, () => Buffer.from('ping')));
  await waitFor(() => pongs.length >= 300 || null, '300 pongs', 20_000).catch(() => undefined);
  // The switch keeps at most its per-peer bound queued; a ring reader takes
  // them as fast as they come, so every one arrives.
  t.is(pongs.length, 300);
});
