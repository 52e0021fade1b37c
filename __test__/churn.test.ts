// Churn: 2,000 join/leave cycles against one server, mixing library
// clients that close cleanly, peer processes SIGKILLed while they hold
// their eventfds, and half-handshakes (raw sockets closed before or while
// the welcome is read), in both modes of `famez serve`: --silent (the stock
// server, monotonic IDs) and the fabric (IDs 1..14, recycle on). Afterwards
// the server holds exactly the fds it held before, has no peer left, and a
// fresh peer gets the ID the mode's rules give.
//
// The server runs in this process (configured from the CLI's arguments, see
// helpers/churn.ts) so that its peer table is visible; every loop is bounded
// in count, every wait in time.
import * as fs from 'node:fs';
import * as path from 'node:path';

import anyTest, { type ExecutionContext, type TestFn } from 'ava';

import { Client } from '../ts/client/client.js';
import { ProbePeer, serveInProcess, type Served } from './helpers/churn.js';
import { RawPeer } from './helpers/raw-peer.js';
import { LineProcess, fdDiff, fdTargets, removeDir, tempDir, waitFor, within } from './helpers/wait.js';

interface Ctx {
  dir: string;
  served: Served | null;
  clients: Client[];
  raws: RawPeer[];
  procs: LineProcess[];
  probes: ProbePeer[];
  log: string[];
}
// fd counts are per process: these tests must not overlap.
const test = anyTest.serial as TestFn<Ctx>;

const CYCLES = 2000;
/** Peer processes SIGKILLed after connecting: mostly python probes (cheap
 * to start), a few famez library clients (helpers/peer.ts, Node + tsx). */
const PROBES = 54;
const NODE_PEERS = 6;
const CHILDREN_AT_ONCE = 3;
/** In-process connections per round, closed before the next round. */
const ROUND = 5;
/** The fabric's default peer limit; both modes keep within it so that no
 * newcomer is refused and every connection is one ID. */
const MAX_LIVE = 14;
const SETTLE_MS = 30_000;

test.beforeEach((t) => {
  t.context = { dir: tempDir('famez-churn-'), served: null, clients: [], raws: [], procs: [], probes: [], log: [] };
});

test.afterEach.always(async (t) => {
  const c = t.context;
  await Promise.all(c.probes.map((p) => p.kill()));
  await Promise.all(c.procs.map((p) => p.stop()));
  for (const x of [...c.clients, ...c.raws]) {
    try {
      x.close();
    } catch {
      // already closed
    }
  }
  c.served?.server.close();
  c.served?.fabric?.close();
  if (!t.passed) t.log(c.log.slice(-30).join('\n'));
  removeDir(c.dir);
});

/** What each fd of this process points at. */
/** The fds famez opens (sockets, eventfds, memfds); tsx opens and closes
 * its cache files on its own schedule, so those are not counted. */
const KINDS = /^(socket:|anon_inode:\[eventfd\]|\/memfd:)/;
const famezFds = (): number => fdTargets().filter((x) => KINDS.test(x)).length;

const mappings = (): number => fs.readFileSync('/proc/self/maps', 'utf8').split('\n').filter((l) => l.includes('/memfd:famez ')).length;

const tick = () => new Promise<void>((resolve) => setImmediate(resolve));

interface Tally {
  connections: number;
  clean: number;
  killed: number;
  half: number;
}

/** Peer processes, CHILDREN_AT_ONCE at a time: each connects, then is
 * SIGKILLed, half of them once their whole welcome is in (they die holding
 * every eventfd), half as soon as they are connected (mid-welcome). */
async function childTrack(t: ExecutionContext<Ctx>, socket: string, vectors: number, tally: Tally): Promise<void> {
  let next = 0;
  const one = async (n: number): Promise<void> => {
    if (n % Math.round((PROBES + NODE_PEERS) / NODE_PEERS) === 0) {
      const proc = LineProcess.spawn(process.execPath, ['--import=tsx', path.resolve('__test__/helpers/peer.ts'), socket, String(vectors)]);
      t.context.procs.push(proc);
      const at = await proc.waitLine((l) => l.includes('"ready"') || l.includes('"error"'), 'a peer process to be ready', 0, 30_000);
      if (!proc.lines[at].includes('"ready"')) throw new Error(`peer process failed: ${proc.lines[at]}`);
      tally.connections++;
      proc.child.kill('SIGKILL');
      await within(proc.exited, 'the killed peer process to exit', 10_000);
    } else {
      const probe = ProbePeer.spawn(socket);
      t.context.probes.push(probe);
      await probe.ready(n % 2 === 0 ? vectors : 0);
      tally.connections++;
      await probe.kill();
    }
    tally.killed++;
  };
  const worker = async (): Promise<void> => {
    while (next < PROBES + NODE_PEERS) await one(next++);
  };
  await Promise.all(Array.from({ length: CHILDREN_AT_ONCE }, worker));
}

/** In-process peers, ROUND at a time until `count` cycles are done: library
 * clients that ring each other and close; raw sockets closed at once, after
 * the server had a turn without reading a byte, or after the first messages
 * of their welcome. Before each round, waits for the server to have room
 * for it and the peer processes (never over MAX_LIVE). */
async function inProcessTrack(t: ExecutionContext<Ctx>, served: Served, count: number, tally: Tally): Promise<void> {
  const { server, socket, options } = served;
  for (let done = 0, round = 0; done < count; round++) {
    await waitFor(() => server.peerIds.length + ROUND + CHILDREN_AT_ONCE <= MAX_LIVE, 'room for a round', SETTLE_MS, 1);
    const n = Math.min(ROUND, count - done);
    const kinds = Array.from({ length: n }, (_, i) => (round * ROUND + i) % 5);
    const clients = await Promise.all(
      kinds.filter((k) => k < 2).map(() => Client.connect(socket, { vectors: options.vectors, timeoutMs: 15_000 })),
    );
    t.context.clients.push(...clients);
    tally.connections += clients.length;
    const raws: RawPeer[] = [];
    const never: RawPeer[] = [];
    const early: RawPeer[] = [];
    for (const k of kinds) {
      if (k === 2) early.push(new RawPeer(socket, true));
      if (k === 3) never.push(new RawPeer(socket, false));
      if (k === 4) raws.push(new RawPeer(socket, true));
    }
    t.context.raws.push(...early, ...never, ...raws);
    tally.connections += early.length + never.length + raws.length;
    // Closed before the server could even accept it.
    for (const r of early) r.close();
    // Some rings between the live clients (their eventfds work).
    if (round % 4 === 0) for (const c of clients) for (const id of c.peers.keys()) if (id !== c.id && clients.some((o) => o.id === id)) c.ring(id, 0);
    // Closed mid-welcome, once the version and ID are in.
    await waitFor(() => raws.every((r) => r.msgs.length >= 2 || r.ended !== null), 'raw peers to get their ID', SETTLE_MS, 1);
    for (const r of raws) r.close();
    await tick();
    // Closed after the server wrote a welcome nobody read.
    for (const r of never) r.close();
    for (const c of clients) c.close();
    tally.clean += clients.length;
    tally.half += early.length + never.length + raws.length;
    done += n;
    t.context.clients.length = 0;
    t.context.raws.length = 0;
  }
}

/** Runs CYCLES cycles in `argv`'s mode and checks the server is back to its
 * baseline; returns the server for the mode's ID checks. */
async function churn(t: ExecutionContext<Ctx>, argv: string[]): Promise<Served> {
  const served = (t.context.served = serveInProcess(argv, path.join(t.context.dir, 'sock'), (l) => {
    t.context.log.push(l);
    if (t.context.log.length > 2000) t.context.log.splice(0, 1000);
  }));
  const { server, socket, options } = served;
  let refused = 0;
  let gone = 0;
  server.on('refuse', () => refused++);
  server.on('disconnect', () => gone++);
  // Warm-up: MAX_LIVE peers at once and gone again. With recycle on, every
  // ID's eventfds are now kept for its next peer (bounded: 14 x 16), so the
  // baseline already holds them; without, this warms up a first connection.
  const warm = await Promise.all(Array.from({ length: MAX_LIVE }, () => Client.connect(socket, { vectors: options.vectors, timeoutMs: 15_000 })));
  for (const c of warm) c.close();
  await waitFor(() => gone === MAX_LIVE && server.peerIds.length === 0, 'the warm-up peers to be gone', SETTLE_MS);
  await tick();
  const base = famezFds();
  const baseTargets = fdTargets();
  const baseMaps = mappings();

  const tally: Tally = { connections: MAX_LIVE, clean: 0, killed: 0, half: 0 };
  await Promise.all([childTrack(t, socket, options.vectors, tally), inProcessTrack(t, served, CYCLES - PROBES - NODE_PEERS, tally)]);
  t.is(tally.clean + tally.killed + tally.half, CYCLES);
  t.log(`${CYCLES} cycles: ${tally.clean} clean closes, ${tally.killed} SIGKILLed processes, ${tally.half} half-handshakes`);

  await waitFor(() => gone === tally.connections && server.peerIds.length === 0, `the server to see all ${tally.connections} peers go`, SETTLE_MS).catch(() => undefined);
  t.is(refused, 0, 'no newcomer was refused');
  t.is(gone, tally.connections, 'every connection was admitted and then seen to go');
  t.deepEqual(server.peerIds, [], 'no peer is left');
  await waitFor(() => famezFds() === base, `the fd count to return to ${base}`, SETTLE_MS).catch(() => undefined);
  t.is(famezFds(), base, `fd leak: ${fdDiff(baseTargets, fdTargets())}`);
  t.is(mappings(), baseMaps, 'every mapping of the shared memory by a client is gone');
  (served as Served & { connections: number }).connections = tally.connections;
  return served;
}

test('churn --silent: 2,000 cycles of clean closes, SIGKILLed peer processes and half-handshakes; fds back to baseline, and the next peer gets the next monotonic ID', async (t) => {
  const served = (await churn(t, ['--silent'])) as Served & { connections: number };
  // Stock IDs: every connection took the next ID (0, 1, ...), none reused.
  const fresh = await Client.connect(served.socket, { vectors: served.options.vectors, timeoutMs: 15_000 });
  t.context.clients.push(fresh);
  t.is(fresh.id, served.connections, `the ${served.connections} connections took IDs 0..${served.connections - 1}`);
  t.deepEqual(served.server.peerIds, [fresh.id]);
});

test('churn in the fabric (recycle): 2,000 cycles of clean closes, SIGKILLed peer processes and half-handshakes; fds back to baseline, and fresh peers get IDs 1 and 2 and reach each other', async (t) => {
  const served = await churn(t, []);
  const a = await Client.connect(served.socket, { vectors: served.options.vectors, timeoutMs: 15_000 });
  t.context.clients.push(a);
  t.is(a.id, 1, 'the lowest ID, free again');
  const b = await Client.connect(served.socket, { vectors: served.options.vectors, timeoutMs: 15_000 });
  t.context.clients.push(b);
  t.is(b.id, 2);
  // Both IDs were recycled: each must hold the other's eventfds.
  await waitFor(() => a.peers.get(2)?.vectors === served.options.vectors, 'peer 1 to hold all of peer 2\'s eventfds', 10_000).catch(() => undefined);
  t.deepEqual(a.peers.get(2), { id: 2, vectors: served.options.vectors }, 'peer 1 knows peer 2');
  t.deepEqual(b.peers.get(1), { id: 1, vectors: served.options.vectors }, 'peer 2 knows peer 1');
  t.deepEqual(served.server.peerIds, [1, 2]);
  const heard = (c: Client, vector: number) => new Promise<void>((resolve) => c.on('interrupt', (e) => e.vector === vector && resolve()));
  const bHeard = heard(b, 1);
  a.ring(2, 1);
  await within(bHeard, 'peer 2 to see peer 1\'s ring', 10_000);
  const aHeard = heard(a, 2);
  b.ring(1, 2);
  await within(aHeard, 'peer 1 to see peer 2\'s ring', 10_000);
  t.pass('the fresh peers ring each other');
});
