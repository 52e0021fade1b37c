// famez against real QEMU ivshmem-doorbell devices. Each QEMU is a paused TCG machine driven over
// qtest (see helpers/qemu.ts); interrupts delivered to it are observed as MSI-X pending bits.
// These tests need qemu-system-x86_64 and fail without it, unless FAMEZ_SKIP_QEMU=1.
import { lineLogger } from '../ts/log.js';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

import anyTest, { type ExecutionContext, type TestFn } from 'ava';

import { Client } from '../ts/client/client.js';
import { Server } from '../ts/server/server.js';
import { QtestMachine, killAll, qemuBinary } from './helpers/qemu.js';
import { LineProcess, waitFor, waitedFor, within } from './helpers/wait.js';

const ROOT = resolve(__dirname, '..');
const SKIP = process.env.FAMEZ_SKIP_QEMU === '1';
const VECTORS = 4;
const SIZE = 1 << 20; // a power of two: QEMU maps it as BAR2
// Every wait is bounded; the bounds are generous for a loaded 2-core machine.
const WAIT_MS = 20_000;
// How long one ring is given to land before it is repeated (a ring can race a peer's set-up).
const RING_RETRY_MS = 1000;

interface Context {
  dir: string;
  cleanups: Array<() => unknown>;
  notes: string[];
}

const test = anyTest as TestFn<Context>;
const qtest = SKIP ? test.serial.skip : test.serial;

test.before(() => {
  if (!SKIP && !qemuBinary()) {
    throw new Error(
      'qemu-system-x86_64 not found in PATH: these tests need a real QEMU (apt-get install -y qemu-system-x86); ' +
        'set FAMEZ_SKIP_QEMU=1 to skip them deliberately',
    );
  }
});

test.beforeEach((t) => {
  t.context.dir = mkdtempSync(join(tmpdir(), 'famez-qemu-'));
  t.context.cleanups = [];
  t.context.notes = [];
});

test.afterEach.always(async (t) => {
  const { cleanups, notes, dir } = t.context;
  // Newest first: QEMUs and clients go before the server that they are connected to.
  for (const cleanup of (cleanups ?? []).reverse()) {
    try {
      await cleanup();
    } catch (err) {
      t.log(`cleanup failed: ${(err as Error).message}`);
    }
  }
  if (!t.passed && notes?.length) t.log(notes.join('\n'));
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test.after.always(async () => {
  await killAll();
});

// ---- helpers -------------------------------------------------------------------------------

function note(t: ExecutionContext<Context>, line: string): void {
  t.context.notes.push(line);
  if (t.context.notes.length > 400) t.context.notes.shift();
}

function startServer(t: ExecutionContext<Context>, opts: { log?: string[] } = {}): Server {
  const server = Server.start({
    socket: join(t.context.dir, 'famez.sock'),
    shm: { kind: 'memfd', name: 'famez-qemu-test' },
    size: SIZE,
    vectors: VECTORS,
    logger: lineLogger((line) => {
      opts.log?.push(line);
      note(t, `server: ${line}`);
    }),
  });
  t.context.cleanups.push(() => server.close());
  return server;
}

async function startQemu(t: ExecutionContext<Context>, socket: string): Promise<QtestMachine> {
  const qemu = await QtestMachine.start({ socket, vectors: VECTORS, log: (line) => note(t, line) });
  t.context.cleanups.push(() => qemu.kill());
  return qemu;
}

async function connectClient(t: ExecutionContext<Context>, socket: string): Promise<Client> {
  const client = await Client.connect(socket, { timeoutMs: WAIT_MS });
  t.context.cleanups.push(() => client.close());
  return client;
}

function record<T>(client: Client, event: 'interrupt' | 'join' | 'leave'): { events: T[] } {
  const events: T[] = [];
  client.on(event, (e: unknown) => events.push(e as T));
  return { events };
}

/** Waits until `client` knows `peer` with all of its vectors (so it can ring them). */
async function waitForPeer(client: Client, peer: number): Promise<void> {
  await waitFor(() => client.peers.get(peer)?.vectors === VECTORS, `client ${client.id} to learn peer ${peer}'s ${VECTORS} vectors`, WAIT_MS);
}

/** Rings until `landed` reports the interrupt, since a ring can race the receiver's set-up. */
async function ringUntil(
  what: string,
  ring: () => Promise<void> | void,
  landed: (waitMs: number) => Promise<boolean>,
  state?: () => Promise<string> | string,
): Promise<number> {
  const deadline = Date.now() + WAIT_MS;
  for (let rings = 1; ; rings++) {
    await ring();
    if (await landed(RING_RETRY_MS)) return rings;
    if (Date.now() >= deadline) {
      throw new Error(`${what}: no interrupt after ${rings} rings over ${WAIT_MS} ms${state ? ` (${await state()})` : ''}`);
    }
  }
}

async function pendingVectors(qemu: QtestMachine): Promise<number[]> {
  const out: number[] = [];
  for (let v = 0; v < VECTORS; v++) if (await qemu.pending(v)) out.push(v);
  return out;
}

/**
 * Tracks one direction of doorbells into one receiver. A ring that had to be repeated may still
 * land late, during a later step, so only such vectors are excused from the "no other vector"
 * checks; when every ring lands at once, those checks are exact.
 */
class Doorbells {
  readonly retried = new Set<number>();
  allowed(vector: number): Set<number> {
    return new Set([vector, ...this.retried]);
  }
  note(vector: number, rings: number): void {
    if (rings > 1) this.retried.add(vector);
  }
}

/** QEMU rings the client on `vector` until the client reports an interrupt on it. */
async function qemuRingsClient(
  t: ExecutionContext<Context>,
  qemu: QtestMachine,
  client: Client,
  vector: number,
  bells: Doorbells,
  interrupts: Array<{ vector: number; count: number }>,
): Promise<void> {
  const before = interrupts.length;
  const rings = await ringUntil(
    `QEMU ringing client ${client.id} on vector ${vector}`,
    () => qemu.ring(client.id, vector),
    (ms) => waitedFor(() => interrupts.slice(before).some((i) => i.vector === vector), `vector ${vector}`, ms, 10),
    () => `last interrupts seen: ${JSON.stringify(interrupts.slice(before).slice(-8))}`,
  );
  const allowed = bells.allowed(vector);
  bells.note(vector, rings);
  const seen = interrupts.slice(before);
  t.true(seen.every((i) => allowed.has(i.vector) && i.count >= 1), `interrupts seen while ringing vector ${vector}: ${JSON.stringify(seen)}`);
}

/** The client rings QEMU on `vector` until QEMU has it pending; no other vector may be. */
async function clientRingsQemu(t: ExecutionContext<Context>, client: Client, qemu: QtestMachine, qemuId: number, vector: number, bells: Doorbells): Promise<void> {
  await qemu.clearPending();
  const stray = (await pendingVectors(qemu)).filter((v) => !bells.retried.has(v));
  t.deepEqual(stray, [], 'nothing pending before the ring');
  const allowed = bells.allowed(vector);
  const rings = await ringUntil(
    `client ringing QEMU ${qemuId} on vector ${vector}`,
    () => client.ring(qemuId, vector),
    (ms) => qemu.waitPending(vector, ms),
    async () => `pending vectors: [${(await pendingVectors(qemu)).join(', ')}]`,
  );
  bells.note(vector, rings);
  const pending = await pendingVectors(qemu);
  t.true(pending.includes(vector));
  t.deepEqual(pending.filter((v) => !allowed.has(v)), [], `only vector ${vector} is pending (pending: ${pending.join(', ')})`);
}

// ---- tests ---------------------------------------------------------------------------------

qtest('QEMU gets the ID famez assigned: IVPosition matches the connect event and the peer list', async (t) => {
  const server = startServer(t);
  const connects: Array<{ id: number; peers: number }> = [];
  server.on('connect', (e) => connects.push(e));
  // Two clients first, so QEMU's ID is not 0 (a device that always read 0 would pass otherwise).
  const a = await connectClient(t, server.socketPath);
  const b = await connectClient(t, server.socketPath);
  const joins = record<{ id: number; vectors: number }>(a, 'join').events;

  const qemu = await startQemu(t, server.socketPath);
  await waitFor(() => connects.length === 3, 'the server to report three peers', WAIT_MS);
  const qemuId = connects[2].id;
  t.false([a.id, b.id].includes(qemuId));
  t.is(await qemu.ivPosition(), qemuId, 'IVPosition reads the ID famez gave QEMU');
  t.deepEqual(server.peerIds, [a.id, b.id, qemuId].sort((x, y) => x - y));
  t.is(qemu.bar2Size, SIZE, 'BAR2 is the shared memory, sized as served');
  await waitFor(() => joins.some((j) => j.id === qemuId), 'client to hear QEMU join', WAIT_MS);
  t.deepEqual(joins.find((j) => j.id === qemuId), { id: qemuId, vectors: VECTORS });

  // A second QEMU gets a different ID, and again reads exactly that one.
  const qemu2 = await startQemu(t, server.socketPath);
  await waitFor(() => connects.length === 4, 'the server to report four peers', WAIT_MS);
  t.not(connects[3].id, qemuId);
  t.is(await qemu2.ivPosition(), connects[3].id);
  t.is(await qemu.ivPosition(), qemuId, 'the first QEMU keeps its ID');
});

qtest('a doorbell write from QEMU reaches the famez client on the rung vector', async (t) => {
  const server = startServer(t);
  const client = await connectClient(t, server.socketPath);
  const qemu = await startQemu(t, server.socketPath);
  const qemuId = await qemu.ivPosition();
  await waitForPeer(client, qemuId);

  const interrupts = record<{ vector: number; count: number }>(client, 'interrupt').events;
  const bells = new Doorbells();
  for (const vector of [2, 3, 1]) await qemuRingsClient(t, qemu, client, vector, bells, interrupts);
  t.false(interrupts.some((i) => i.vector === 0), 'vector 0 was never rung and never fired');
});

qtest("a client's ring sets QEMU's MSI-X pending bit for that vector only", async (t) => {
  const server = startServer(t);
  const client = await connectClient(t, server.socketPath);
  const qemu = await startQemu(t, server.socketPath);
  const qemuId = await qemu.ivPosition();
  await waitForPeer(client, qemuId);

  const bells = new Doorbells();
  for (const vector of [3, 2, 0]) await clientRingsQemu(t, client, qemu, qemuId, vector, bells);
  await qemu.clearPending();
  t.false(await qemu.pending(1), 'vector 1 was never rung and never became pending');
});

qtest("BAR2 and the client's memory are the same bytes, both ways", async (t) => {
  const server = startServer(t);
  const client = await connectClient(t, server.socketPath);
  const qemu = await startQemu(t, server.socketPath);
  const mem = new Uint8Array(client.memory);
  t.is(mem.byteLength, SIZE);

  for (const offset of [0, 0x1234, SIZE - 64]) {
    const fromQemu = randomBytes(64);
    await qemu.writeShm(offset, fromQemu);
    t.deepEqual(Buffer.from(mem.subarray(offset, offset + 64)), fromQemu, `QEMU's BAR2 write at ${offset} is in client memory`);

    const fromClient = randomBytes(64);
    mem.set(fromClient, offset);
    t.deepEqual(await qemu.readShm(offset, 64), fromClient, `client's write at ${offset} reads back through BAR2`);
  }

  // A larger block through several qtest chunks.
  const big = randomBytes(0x30000);
  mem.set(big, 0x40000);
  t.true((await qemu.readShm(0x40000, big.length)).equals(big));
});

qtest('two QEMUs ring each other through famez', async (t) => {
  const server = startServer(t);
  const a = await startQemu(t, server.socketPath);
  const b = await startQemu(t, server.socketPath);
  const idA = await a.ivPosition();
  const idB = await b.ivPosition();
  t.not(idA, idB);
  t.deepEqual(server.peerIds, [idA, idB].sort((x, y) => x - y));

  const bellsTo = new Map([[a, new Doorbells()], [b, new Doorbells()]]);
  for (const [from, to, toId, vector] of [[a, b, idB, 1], [b, a, idA, 2], [a, b, idB, 3], [b, a, idA, 0]] as const) {
    const bells = bellsTo.get(to)!;
    await to.clearPending();
    t.deepEqual((await pendingVectors(to)).filter((v) => !bells.retried.has(v)), [], 'nothing pending before the ring');
    const allowed = bells.allowed(vector);
    const rings = await ringUntil(
      `QEMU ${from.pid} ringing peer ${toId} on vector ${vector}`,
      () => from.ring(toId, vector),
      (ms) => to.waitPending(vector, ms),
      async () => `pending vectors: [${(await pendingVectors(to)).join(', ')}]`,
    );
    bells.note(vector, rings);
    const pending = await pendingVectors(to);
    t.true(pending.includes(vector));
    t.deepEqual(pending.filter((v) => !allowed.has(v)), [], `only vector ${vector} is pending on peer ${toId} (pending: ${pending.join(', ')})`);
  }
});

qtest('a SIGKILLed QEMU is announced: the client gets a leave and the server logs the disconnect', async (t) => {
  const log: string[] = [];
  const server = startServer(t, { log });
  const disconnects: Array<{ id: number; reason: string }> = [];
  server.on('disconnect', (e) => disconnects.push(e));
  const client = await connectClient(t, server.socketPath);
  const leaves = record<{ id: number }>(client, 'leave').events;
  const qemu = await startQemu(t, server.socketPath);
  const survivor = await startQemu(t, server.socketPath);
  const qemuId = await qemu.ivPosition();
  const survivorId = await survivor.ivPosition();
  await waitForPeer(client, qemuId);
  await waitForPeer(client, survivorId);
  t.deepEqual(leaves, []);

  await qemu.kill('SIGKILL');
  t.is((await within(qemu.exited, `QEMU ${qemu.pid} to exit`, WAIT_MS)).signal, 'SIGKILL');
  await waitFor(() => leaves.length > 0, `client to hear peer ${qemuId} leave`, WAIT_MS);
  t.deepEqual(leaves, [{ id: qemuId }]);
  t.false(client.peers.has(qemuId));
  t.true(client.peers.has(survivorId));
  await waitFor(() => log.some((l) => l.includes(`peer ${qemuId} disconnected`)), 'the server to log the disconnect', WAIT_MS);
  t.deepEqual(disconnects.map((d) => d.id), [qemuId]);
  t.deepEqual(server.peerIds, [client.id, survivorId].sort((x, y) => x - y));

  // The fabric still works for those left.
  await clientRingsQemu(t, client, survivor, survivorId, 1, new Doorbells());
  t.throws(() => client.ring(qemuId, 1), { message: /not connected/ });
});

// ---- the CLI server, as users run it ---------------------------------------------------------

/** The server as a LineProcess, and its stdout and stderr lines together, as they came. */
interface CliServer { proc: LineProcess; lines: string[] }

async function startCliServer(t: ExecutionContext<Context>, args: string[]): Promise<CliServer> {
  const lines: string[] = [];
  // pdeathsig ties the server's life to this test process, should it die before the cleanup runs.
  const proc = LineProcess.spawn(
    process.execPath,
    ['--import=tsx', join(ROOT, 'ts/cli/main.ts'), 'serve', '--silent', ...args],
    { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'], pdeathsig: true },
    {
      what: `famez serve ${args.join(' ')}`,
      onLine: (line) => {
        lines.push(line);
        note(t, `famez serve: ${line}`);
      },
    },
  );
  let exitedNow = false;
  void proc.exited.then(() => (exitedNow = true));
  t.context.cleanups.push(() => proc.stop('SIGTERM', 5000));
  await waitFor(
    () => {
      if (exitedNow) throw new Error(`famez serve exited before it was ready:\n${lines.join('\n')}`);
      return lines.some((l) => l.includes('serving on'));
    },
    'famez serve to print "serving on"',
    WAIT_MS,
  );
  return { proc, lines };
}

qtest('famez serve (the CLI) with a QEMU and a client, end to end', async (t) => {
  const socket = join(t.context.dir, 'cli.sock');
  const cli = await startCliServer(t, ['-S', socket, '-n', String(VECTORS), '-l', '1M', '--memfd']);
  t.true(cli.lines.some((l) => l.includes(socket)), 'the banner names the socket');

  const client = await connectClient(t, socket);
  const qemu = await startQemu(t, socket);
  const qemuId = await qemu.ivPosition();
  t.not(qemuId, client.id);
  t.is(qemu.bar2Size, SIZE);
  await waitFor(() => cli.lines.some((l) => l.includes(`peer ${qemuId} connected`)), `the CLI to log peer ${qemuId} connecting`, WAIT_MS);
  await waitForPeer(client, qemuId);

  const interrupts = record<{ vector: number; count: number }>(client, 'interrupt').events;
  await qemuRingsClient(t, qemu, client, 2, new Doorbells(), interrupts);
  await clientRingsQemu(t, client, qemu, qemuId, 3, new Doorbells());

  const bytes = randomBytes(32);
  await qemu.writeShm(0x100, bytes);
  t.deepEqual(Buffer.from(new Uint8Array(client.memory, 0x100, 32)), bytes);

  const leaves = record<{ id: number }>(client, 'leave').events;
  await qemu.kill('SIGKILL');
  await waitFor(() => leaves.some((l) => l.id === qemuId), `client to hear peer ${qemuId} leave`, WAIT_MS);
  await waitFor(
    () => cli.lines.some((l) => l.includes(`peer ${qemuId} disconnected`)),
    `the CLI to log peer ${qemuId} disconnecting`,
    WAIT_MS,
  );

  // SIGTERM: a clean exit that removes the socket.
  client.close();
  cli.proc.kill('SIGTERM');
  const exit = await cli.proc.wait(WAIT_MS).catch(() => null);
  t.truthy(exit, 'famez serve exits on SIGTERM');
  t.is(exit?.code, 0);
});
