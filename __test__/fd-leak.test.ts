// Fd and mapping leaks: a thousand clients join and leave (library clients
// and raw sockets that never read), and every fd count must come back to
// its baseline exactly — in-process (server and clients share the process)
// and for a separate `famez serve` process.
import * as fs from 'node:fs';
import * as path from 'node:path';

import anyTest, { type TestFn } from 'ava';

import { Client } from '../ts/client/client.js';
import { UnixStream } from '../ts/native.js';
import { Server } from '../ts/server/server.js';
import { LineProcess, fdCount, fdDiff, fdTargets, removeDir, tempDir, waitFor } from './helpers/wait.js';

// fd counts are per process, so these tests must not overlap.
const test = anyTest.serial as TestFn<{ dir: string; server?: Server; proc?: LineProcess; clients: Client[]; streams: UnixStream[] }>;

const ROUNDS = 1000;
const BATCH = 8;
const SETTLE_MS = 30_000;

test.beforeEach((t) => {
  t.context.dir = tempDir('famez-leak-');
  t.context.clients = [];
  t.context.streams = [];
});

test.afterEach.always(async (t) => {
  for (const c of t.context.clients) c.close();
  for (const s of t.context.streams) s.close();
  t.context.server?.close();
  await t.context.proc?.stop();
  removeDir(t.context.dir);
});

/** What each fd of a process points at, for a readable failure message. */
/** The fds famez itself opens: sockets, eventfds and memfds. (Counting
 * every fd would also count tsx's cache files, which it opens and closes
 * asynchronously on its own schedule.) */
const KINDS = /^(socket:|anon_inode:\[eventfd\]|\/memfd:)/;
function famezFds(pid: number | 'self' = 'self'): number {
  return fdTargets(pid).filter((x) => KINDS.test(x)).length;
}

const mapsOf = (label: string, pid: number | 'self' = 'self'): number =>
  fs.readFileSync(`/proc/${pid}/maps`, 'utf8').split('\n').filter((l) => l.includes(`/memfd:${label} `)).length;

const tick = () => new Promise<void>((resolve) => setImmediate(resolve));

/** ROUNDS library clients, BATCH at a time (so they see each other join and
 * leave); every other batch maps the shared memory and rings a peer. */
async function churnClients(socket: string, live: Client[]): Promise<void> {
  for (let done = 0; done < ROUNDS; done += BATCH) {
    const batch = await Promise.all(Array.from({ length: Math.min(BATCH, ROUNDS - done) }, () => Client.connect(socket, { timeoutMs: 15_000 })));
    live.push(...batch);
    if ((done / BATCH) % 2 === 0) {
      for (const c of batch) {
        new Uint8Array(c.memory)[c.id % 4096] = 1;
        for (const id of c.peers.keys()) c.ring(id, 'all');
      }
    }
    for (const c of batch) c.close();
    live.length = 0;
  }
}

/** ROUNDS raw connections closed without reading a byte. */
async function churnRaw(socket: string, live: UnixStream[]): Promise<void> {
  for (let done = 0; done < ROUNDS; done += 50) {
    for (let i = 0; i < 50 && done + i < ROUNDS; i++) live.push(UnixStream.connect(socket));
    // Half are closed at once, half after the server has had a turn to
    // answer them (their unread welcome, fds included, dies with them).
    for (const s of live.splice(0, 25)) s.close();
    await tick();
    await tick();
    for (const s of live.splice(0)) s.close();
  }
}

test('in-process server: 1,000 library clients join and leave; fds and mappings return to baseline exactly', async (t) => {
  const socket = path.join(t.context.dir, 'sock');
  const server = (t.context.server = Server.start({ socket, shm: { kind: 'memfd', name: 't' }, size: 1 << 20, vectors: 2 }));
  let connects = 0;
  let disconnects = 0;
  server.on('connect', () => connects++);
  server.on('disconnect', () => disconnects++);
  await tick();
  const base = famezFds();
  const baseTargets = fdTargets();
  const baseMaps = mapsOf('t');

  await churnClients(socket, t.context.clients);

  await waitFor(() => server.peerIds.length === 0 && disconnects === ROUNDS, `the server to drop all ${ROUNDS} peers`, SETTLE_MS).catch((e) => {
    t.fail(`${(e as Error).message}; peers left: ${server.peerIds.length}, disconnects ${disconnects}`);
  });
  await waitFor(() => famezFds() === base, `the fd count to return to ${base}`, SETTLE_MS).catch(() => undefined);
  t.is(famezFds(), base, `fd leak: ${fdDiff(baseTargets, fdTargets())}`);
  t.is(mapsOf('t'), baseMaps, 'every client mapping is unmapped');
  t.is(connects, ROUNDS);
});

test('in-process server: 1,000 raw connections closed without reading; fds return to baseline exactly', async (t) => {
  const socket = path.join(t.context.dir, 'sock');
  const server = (t.context.server = Server.start({ socket, shm: { kind: 'memfd', name: 'r' }, size: 1 << 20, vectors: 2 }));
  let gone = 0;
  server.on('disconnect', () => gone++);
  await tick();
  const base = famezFds();
  const baseTargets = fdTargets();

  await churnRaw(socket, t.context.streams);

  await waitFor(() => gone === ROUNDS && server.peerIds.length === 0, `all ${ROUNDS} raw peers dropped`, SETTLE_MS).catch(() => undefined);
  t.is(gone, ROUNDS, 'the server saw every connection go');
  t.deepEqual(server.peerIds, []);
  await waitFor(() => famezFds() === base, `the fd count to return to ${base}`, SETTLE_MS).catch(() => undefined);
  t.is(famezFds(), base, `fd leak: ${fdDiff(baseTargets, fdTargets())}`);
  // The server still works afterwards.
  const c = await Client.connect(socket, { timeoutMs: 10_000 });
  t.context.clients.push(c);
  t.is(c.id, 0, 'the lowest ID is free again');
  await waitFor(() => c.vectors === 2, 'both own vectors', 10_000).catch(() => undefined);
  t.is(c.vectors, 2);
});

async function startServerProcess(t: { context: { dir: string; proc?: LineProcess } }): Promise<{ socket: string; pid: number }> {
  const socket = path.join(t.context.dir, 'sock');
  const proc = (t.context.proc = LineProcess.spawn(process.execPath, ['--import=tsx', 'ts/cli/main.ts', 'serve', '--silent', '-S', socket, '--memfd', '-n', '2'], {
    cwd: path.resolve('.'),
  }));
  await proc.waitLine((l) => l.includes('serving on'), 'the server to start', 0, 30_000);
  await waitFor(() => fs.existsSync(socket), 'the socket to exist');
  return { socket, pid: proc.pid };
}

/** Peers the server process has logged as gone. */
const disconnects = (proc: LineProcess): number => proc.lines.filter((l) => /(?:INFO|WARN) +peer \d+ disconnected/.test(l)).length;

/** Diagnostics for a failure: stop the server and return what it said. */
async function serverPeersAtExit(proc: LineProcess): Promise<string> {
  await proc.stop();
  return `server output tail: ${proc.lines.slice(-3).join(' | ')}; stderr: ${proc.stderr.slice(-300)}`;
}

/** The server process's fd count once it has settled. Node and tsx finish
 * starting on their own threads after the server prints its banner (a
 * late event loop: epoll, pipe, eventfd, /dev/null), so first one client
 * joins and leaves (warming up whatever a first connection initialises),
 * then the count must hold still across ten reads 50 ms apart. (That is a
 * wait for an absence, of further change: there is no event that says
 * Node has finished starting.) */
async function settledCount(pid: number, socket: string): Promise<number> {
  const warm = await Client.connect(socket, { timeoutMs: 15_000 });
  warm.close();
  const seen: number[] = [];
  return waitFor(
    () => {
      seen.push(fdCount(pid));
      const last = seen.slice(-10);
      return last.length === 10 && last.every((n) => n === last[0]) ? last[0] : 0;
    },
    () => `the server process fd count to settle (last counts: ${seen.slice(-10).join(', ')})`,
    30_000,
    50,
  );
}

test('server process: 1,000 library clients; the server\'s and this process\'s fd counts return to baseline exactly', async (t) => {
  const { socket, pid } = await startServerProcess(t);
  const base = await settledCount(pid, socket);
  const baseTargets = fdTargets(pid);
  const selfBase = famezFds();
  const selfTargets = fdTargets();

  await churnClients(socket, t.context.clients);

  await waitFor(() => disconnects(t.context.proc!) === ROUNDS + 1, `the server to log ${ROUNDS + 1} disconnects`, SETTLE_MS).catch(() => undefined);
  t.is(disconnects(t.context.proc!), ROUNDS + 1, 'the server saw every connection (and the warm-up) go');
  await waitFor(() => fdCount(pid) === base, `the server's fd count to return to ${base}`, SETTLE_MS).catch(() => undefined);
  const final = fdCount(pid);
  const leaked = fdDiff(baseTargets, fdTargets(pid));
  if (final !== base) t.log(await serverPeersAtExit(t.context.proc!));
  t.is(final, base, `server fd leak: ${leaked}`);
  await waitFor(() => famezFds() === selfBase, `this process's fd count to return to ${selfBase}`, SETTLE_MS).catch(() => undefined);
  t.is(famezFds(), selfBase, `client-side fd leak: ${fdDiff(selfTargets, fdTargets())}`);
  t.is(t.context.proc!.exit, null, 'the server is still running');
});

test('server process: 1,000 raw connections closed without reading; the server\'s fd count returns to baseline exactly', async (t) => {
  const { socket, pid } = await startServerProcess(t);
  const base = await settledCount(pid, socket);
  const baseTargets = fdTargets(pid);
  const selfBase = famezFds();

  await churnRaw(socket, t.context.streams);

  await waitFor(() => disconnects(t.context.proc!) === ROUNDS + 1, `the server to log ${ROUNDS + 1} disconnects`, SETTLE_MS).catch(() => undefined);
  t.is(disconnects(t.context.proc!), ROUNDS + 1, 'the server saw every connection (and the warm-up) go');
  await waitFor(() => fdCount(pid) === base, `the server's fd count to return to ${base}`, SETTLE_MS).catch(() => undefined);
  const final = fdCount(pid);
  const leaked = fdDiff(baseTargets, fdTargets(pid));
  if (final !== base) {
    t.log(await serverPeersAtExit(t.context.proc!));
    t.fail(`server fd leak: ${final} fds, baseline ${base}: ${leaked}`);
    return;
  }
  t.is(famezFds(), selfBase);
  // Still serving, with the next ID (stock monotonic IDs: the warm-up and
  // the 1,000 took 0..1000).
  const c = await Client.connect(socket, { timeoutMs: 10_000 });
  t.context.clients.push(c);
  t.is(c.id, ROUNDS + 1);
  // Client.connect can resolve before its whole own group has been read
  // (see clients.test.ts, 'connect resolves only after the whole own group');
  // the rest arrives right after.
  await waitFor(() => c.vectors === 2, 'both own vectors', 10_000).catch(() => undefined);
  t.is(c.vectors, 2);
  t.is(t.context.proc!.exit, null, 'the server is still running');
});
