// Who is present, for peers without join and leave messages (guests):
// presence.ts's pure reading of the present words, and a real `famez serve`
// fabric keeping them — a connection number while connected, 0 after —
// bumping the membership count and ringing vector 0 of the peers that asked
// for it (FEATURE_MEMBERSHIP_BELL), and of no other peer; and a departed
// peer's incoming rings emptied, so its ID's next holder reads nothing of
// its predecessor's.
import * as path from 'node:path';

import anyTest, { type TestFn } from 'ava';

import { Client } from '../ts/client/client.js';
import { FabricClient } from '../ts/fabric/client.js';
import { FEATURE_MEMBERSHIP_BELL, FEATURE_SWITCH_RING, readFeatures, writeFeatures } from '../ts/fabric/features.js';
import { RingReader, ringOffset } from '../ts/fabric/ring.js';
import { Mailbox } from '../ts/native.js';
import { presenceChanges, readMembership, readPresence, writePresent } from '../ts/fabric/presence.js';
import { GLOBAL_N_CLIENTS, SLOT_SIZE } from '../ts/layout.generated.js';
import { Scratch } from './helpers/serve.js';
import { waitFor } from './helpers/wait.js';

const test = anyTest as TestFn<Scratch>;
const WAIT_MS = 20_000;

test.beforeEach((t) => {
  t.context = new Scratch();
});
test.afterEach.always(async (t) => {
  await t.context.cleanup();
});

const m = (entries: Array<[number, bigint]>) => new Map(entries);

test('presenceChanges: a new word is a join, a zeroed one a leave, a changed one both', (t) => {
  t.deepEqual(presenceChanges(m([]), m([[3, 1n]])), { leave: [], join: [3] });
  t.deepEqual(presenceChanges(m([[3, 1n]]), m([])), { leave: [3], join: [] });
  t.deepEqual(presenceChanges(m([[3, 1n]]), m([[3, 1n]])), { leave: [], join: [] });
  t.deepEqual(presenceChanges(m([[3, 1n]]), m([[3, 7n]])), { leave: [3], join: [3] }, 'reconnected between two looks');
  t.deepEqual(presenceChanges(m([[5, 2n], [1, 1n]]), m([[2, 3n], [4, 4n]])), { leave: [1, 5], join: [2, 4] }, 'ascending');
});

test('readPresence reads slots 1..nClients+1 and clamps an nClients that does not fit the object', (t) => {
  const mem = new ArrayBuffer(6 * SLOT_SIZE);
  new BigUint64Array(mem, GLOBAL_N_CLIENTS, 1)[0] = 3n;
  writePresent(mem, 1, 5n);
  writePresent(mem, 4, 1n);
  t.deepEqual([...readPresence(mem)], [[1, 5n], [4, 1n]]);
  writePresent(mem, 5, 9n);
  t.deepEqual([...readPresence(mem)], [[1, 5n], [4, 1n]], 'slot 5 is past nClients + 1');
  new BigUint64Array(mem, GLOBAL_N_CLIENTS, 1)[0] = 1000n;
  t.deepEqual([...readPresence(mem)], [[1, 5n], [4, 1n], [5, 9n]], 'a hostile nClients reads only the slots that exist');
  t.throws(() => writePresent(mem, 6, 1n), { instanceOf: RangeError });
});

async function fabric(t: { context: Scratch }): Promise<string> {
  const sock = path.join(t.context.dir(), 'sock');
  await t.context.serve(['-S', sock, '--memfd', '--max-peers', '4']);
  return sock;
}

test('the switch writes each peer present while connected and 0 after, and counts every change', async (t) => {
  const sock = await fabric(t);
  const a = t.context.track(await Client.connect(sock));
  const mem = a.memory;
  const nClients = Number(new BigUint64Array(mem, GLOBAL_N_CLIENTS, 1)[0]);
  const serverId = nClients + 1;
  await waitFor(() => readPresence(mem).has(a.id), 'own present word', WAIT_MS);
  const first = readPresence(mem);
  t.true(first.has(serverId), 'the switch is present');
  const before = readMembership(mem);
  const b = await Client.connect(sock);
  await waitFor(() => readPresence(mem).has(b.id), "the newcomer's present word", WAIT_MS);
  const joined = readPresence(mem).get(b.id)!;
  t.true(joined > first.get(a.id)!, 'connection numbers grow');
  t.true(readMembership(mem) > before);
  const mid = readMembership(mem);
  b.close();
  await waitFor(() => !readPresence(mem).has(b.id), 'the present word zeroed after the leave', WAIT_MS);
  t.true(readMembership(mem) > mid);
  t.deepEqual([...readPresence(mem).keys()], [a.id, serverId]);
});

test('vector 0 rings the peers that set FEATURE_MEMBERSHIP_BELL on every join and leave, and no other peer', async (t) => {
  const sock = await fabric(t);
  const belled = t.context.track(await Client.connect(sock));
  const plain = t.context.track(await FabricClient.connect(sock, { nodename: 'plain' }));
  writeFeatures(belled.memory, belled.id, FEATURE_MEMBERSHIP_BELL);
  t.is(readFeatures(belled.memory, belled.id), FEATURE_MEMBERSHIP_BELL);
  let bells = 0;
  belled.on('interrupt', ({ vector }) => {
    if (vector === 0) bells += 1;
  });
  let plainBells = 0;
  plain.transport.on('interrupt', ({ vector }) => {
    if (vector === 0) plainBells += 1;
  });
  const c = await Client.connect(sock);
  await waitFor(() => bells >= 1, 'a vector-0 interrupt on the join', WAIT_MS);
  c.close();
  await waitFor(() => bells >= 2, 'a vector-0 interrupt on the leave', WAIT_MS);
  // The switch rings every peer it rings in the same turn: once the plain
  // peer has had a whole exchange with the switch since, a ring on its
  // vector 0 would have been seen.
  const pong = await plain.request('switch', 'ping', { timeoutMs: WAIT_MS });
  t.is(pong.text, 'pong');
  t.is(plainBells, 0, 'a peer without the bit (a FAME-Z driver) never sees vector 0');
});

test("a departed peer's rings are emptied: the next peer with its ID reads nothing meant for its predecessor", async (t) => {
  const sock = await fabric(t);
  const watcher = t.context.track(await Client.connect(sock));
  const a = await Client.connect(sock);
  const nClients = Number(new BigUint64Array(a.memory, GLOBAL_N_CLIENTS, 1)[0]);
  const serverId = nClients + 1;
  // Peer a asks for the switch's ring, pings the switch and never reads the pong.
  writeFeatures(a.memory, a.id, FEATURE_SWITCH_RING);
  const mb = new Mailbox(a.sharedMemory, nClients);
  const layout = mb.ringLayout!;
  t.truthy(layout, 'the fabric has ring channels');
  t.true(mb.post(a.id, serverId, Buffer.from('ping')));
  mb.close();
  a.ring(serverId, a.id);
  const ring = new RingReader(watcher.memory, ringOffset(layout, serverId, a.id), layout.capacity);
  await waitFor(() => !ring.isEmpty, "the switch's pong in its ring to a", WAIT_MS);
  const gone = a.id;
  a.close();
  await waitFor(() => !readPresence(watcher.memory).has(gone), 'the switch to see a leave', WAIT_MS);
  t.true(ring.isEmpty, 'the unread pong is gone with its reader');
  const next = t.context.track(await FabricClient.connect(sock, { nodename: 'next' }));
  t.is(next.id, gone, 'the ID comes back (lowest free)');
  const stale: string[] = [];
  next.on('message', (m) => stale.push(m.text));
  t.is((await next.request('switch', 'ping', { timeoutMs: WAIT_MS })).text, 'pong');
  t.false(stale.slice(0, -1).includes('pong'), 'no pong but the one it asked for');
});
