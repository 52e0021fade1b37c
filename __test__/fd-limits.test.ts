// fds and limits: every fd a peer sends the server is closed, whatever it
// sent; any byte a peer writes ends it at once (the ivshmem protocol is
// one-way); a server out of fds refuses the peers it cannot take, never
// hangs them and never exits on its own; a fabric too big for the fd limit
// is refused at start with one line, leaving nothing behind.
import { lineLogger } from '../ts/log.js';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';

import anyTest, { type TestFn } from 'ava';

import { UnixStream } from '../ts/native.js';
import { Server } from '../ts/server/server.js';
import { RawPeer } from './helpers/raw-peer.js';
import { FamezProcess, Scratch, pidAlive } from './helpers/serve.js';
import { LineProcess, fdCount, waitFor } from './helpers/wait.js';

// Fd counts are per process and the limits tests are heavy: one at a time.
const test = anyTest.serial as TestFn<Scratch>;

test.beforeEach((t) => {
  t.context = new Scratch();
});

test.afterEach.always(async (t) => {
  await t.context.cleanup();
});

const WAIT_MS = 20_000;

/** Fds of this process that are open on `file`. */
function fdsOn(file: string): number {
  let n = 0;
  for (const fd of fs.readdirSync('/proc/self/fd')) {
    try {
      if (fs.readlinkSync(`/proc/self/fd/${fd}`) === file) n++;
    } catch {
      // closed meanwhile (readdir's own fd)
    }
  }
  return n;
}

/** An in-process server with its log lines kept. */
function startServer(t: { context: Scratch }, vectors = 1): { server: Server; socket: string; log: string[] } {
  const dir = t.context.dir();
  const socket = path.join(dir, 'sock');
  const log: string[] = [];
  const server = t.context.track(Server.start({ socket, shm: { kind: 'memfd', name: 'fd-limits' }, size: 1 << 20, vectors, logger: lineLogger((l) => log.push(l)) }));
  return { server, socket, log };
}

/** A Python peer (no famez code) that connects, sends one message of
 * `bytes` bytes carrying `copies` fds of `file` in one sendmsg, then reads
 * until the server closes the connection. */
const SENDER = `
import os, socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
fd = os.open(sys.argv[2], os.O_RDONLY)
socket.send_fds(s, [b'\\x05' * int(sys.argv[4])], [fd] * int(sys.argv[3]))
os.close(fd)
s.settimeout(30)
while s.recv(65536):
    pass
print('eof', flush=True)
`;

// ---- 5. every fd that arrives is closed ------------------------------------------

for (const [copies, bytes] of [
  [3, 8],
  [253, 8],
  [4, 3],
] as const) {
  test(`a peer that sends ${copies} fds with ${bytes} bytes is dropped and the server keeps none of them (5 connections)`, async (t) => {
    const { server, socket, log } = startServer(t);
    const marker = path.join(t.context.dir(), 'marker');
    fs.writeFileSync(marker, 'x');
    const drops: string[] = [];
    server.on('disconnect', (e) => drops.push(e.reason));
    for (let i = 0; i < 5; i++) {
      const py = LineProcess.spawn('python3', ['-c', SENDER, socket, marker, String(copies), String(bytes)], { stdio: ['ignore', 'pipe', 'pipe'] });
      t.context.procs.push(py);
      await py.waitLine((l) => l === 'eof', 'the server to close the sending peer', 0, WAIT_MS);
      await py.wait(WAIT_MS);
    }
    await waitFor(() => drops.length === 5, 'five disconnects', WAIT_MS);
    t.is(fdsOn(marker), 0, `the server still holds fds the peers sent; log:\n${log.join('\n')}`);
    for (const r of drops) t.regex(r, /^protocol error/);
    t.deepEqual(server.peerIds, []);
  });
}

// ---- 6. any byte from a peer ends it at once -------------------------------------

for (let k = 1; k <= 8; k++) {
  test(`a peer that writes ${k} byte${k === 1 ? '' : 's'} to the server is dropped at once as a protocol error`, async (t) => {
    const { server, socket, log } = startServer(t);
    const dropped = new Promise<string>((resolve) => server.on('disconnect', (e) => resolve(e.reason)));
    const sock = net.connect({ path: socket });
    t.context.closers.push(() => sock.destroy());
    const closed = new Promise<void>((resolve) => sock.on('close', () => resolve()));
    sock.on('error', () => undefined);
    sock.resume();
    await new Promise<void>((resolve, reject) => {
      sock.once('connect', resolve);
      sock.once('error', reject);
    });
    await waitFor(() => server.peerIds.length === 1, 'the peer to be admitted', WAIT_MS);
    sock.write(Buffer.alloc(k, 7));
    let timer: NodeJS.Timeout | undefined;
    const reason = await Promise.race([
      dropped,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`the server never noticed ${k} bytes from the peer`)), WAIT_MS);
      }),
    ]).finally(() => clearTimeout(timer));
    t.regex(reason, new RegExp(`^protocol error: it wrote to the server, which an ivshmem peer never does \\(${k} bytes?\\)$`));
    t.true(log.some((l) => l.includes(`disconnected: protocol error`)), log.join('\n'));
    await closed;
    t.deepEqual(server.peerIds, []);
  });
}

test('a peer that connects and closes without writing is a plain disconnect, not a protocol error', async (t) => {
  const { server, socket } = startServer(t);
  const dropped = new Promise<string>((resolve) => server.on('disconnect', (e) => resolve(e.reason)));
  const s = UnixStream.connect(socket);
  await waitFor(() => server.peerIds.length === 1, 'the peer to be admitted', WAIT_MS);
  s.close();
  // EOF, or a reset when it leaves its welcome unread: either way no protocol error.
  t.regex(await dropped, /^(disconnected|Connection reset by peer.*)$/);
});

test('a client still reassembles a message that comes in pieces (only the server side is one-way)', async (t) => {
  const dir = t.context.dir();
  const socket = path.join(dir, 'pieces');
  let peer: net.Socket | undefined;
  const srv = net.createServer((c) => {
    peer = c;
    const bytes = Buffer.alloc(8);
    bytes.writeBigInt64LE(-5n);
    c.write(bytes.subarray(0, 3));
    setTimeout(() => c.write(bytes.subarray(3)), 50);
  });
  t.context.closers.push(() => {
    peer?.destroy();
    srv.close();
  });
  await new Promise<void>((resolve) => srv.listen(socket, resolve));
  const s = t.context.track(UnixStream.connect(socket));
  const got: Array<number | null> = [];
  s.watch((value) => got.push(value));
  await waitFor(() => got.length > 0, 'the message', WAIT_MS);
  t.deepEqual(got, [-5]);
});

// ---- 3. out of fds: refuse, never hang, never exit --------------------------------

function hasPrlimit(): boolean {
  return ['/usr/bin/prlimit', '/bin/prlimit'].some((p) => fs.existsSync(p));
}

/** `famez serve <args>` under an fd limit of soft:hard (prlimit execs it, so
 * the pid is the server's). */
function serveLimited(t: { context: Scratch }, soft: number, hard: number, args: string[]): FamezProcess {
  return t.context.famezVia(['prlimit', `--nofile=${soft}:${hard}`], ['serve', ...args]);
}

/** Serves under `limit` fds, connects raw peers until `refusals` have been
 * refused (each must be welcomed or refused, never left hanging), lets the
 * admitted ones leave, and checks that the server is still up and admits a
 * new peer. Returns the server's output. */
async function outOfFds(t: { context: Scratch; is: (a: unknown, b: unknown, m?: string) => void; true: (v: boolean, m?: string) => void; deepEqual: (a: unknown, b: unknown, m?: string) => void; false: (v: boolean, m?: string) => void }, dir: string, limit: number, name: string): Promise<string> {
  const sock = path.join(dir, name);
  const s = serveLimited(t, limit, limit, ['--silent', '-S', sock, '--memfd', '--max-peers', '1000']);
  await s.waitFor(/serving on /, WAIT_MS);
  t.true(/(?:INFO|WARN) +the fd limit \([\d,]+\) is enough for about [\d,]+ peers?, fewer than --max-peers \(1,000\): each holds 2 fds/m.test(s.stdout), s.stdout);
  const admitted: RawPeer[] = [];
  const refused: RawPeer[] = [];
  for (let i = 0; i < 40 && refused.length < 4; i++) {
    const p = t.context.track(new RawPeer(sock));
    await waitFor(() => p.ownVectors >= 1 || p.ended !== null, `peer ${i} to be welcomed or refused (never left hanging); server: ${s.stdout.slice(-400)}`, WAIT_MS);
    if (p.ended !== null && p.msgs[0]?.value === -1) refused.push(p);
    else admitted.push(p);
  }
  t.true(admitted.length > 0, 'some peers fit');
  t.is(refused.length, 4, `peers beyond the limit are refused; server: ${s.stdout}`);
  for (const p of refused) t.deepEqual(p.msgs, [{ value: -1, fd: false }]);

  // The admitted peers leave: the server is still there, and takes a new one.
  for (const p of admitted) p.close();
  await s.waitFor(/peer \d+ disconnected: .* \(0 peers\)/, WAIT_MS);
  const again = t.context.track(new RawPeer(sock));
  await waitFor(() => again.ownVectors >= 1 || again.ended !== null || !s.running, 'a peer after the others left', WAIT_MS);
  t.true(s.running, `the server exited on its own: ${JSON.stringify(s.exitInfo)}\n${s.stdout}`);
  t.is(again.ended, null, 'the new peer is admitted');
  t.true(fs.existsSync(sock));
  again.close();
  await s.stop('SIGTERM');
  t.deepEqual(s.exitInfo, { code: 0, signal: null });
  t.false(fs.existsSync(sock));
  return s.stdout;
}

test('--silent out of fds: peers beyond the limit are refused, the server stays up and admits again once fds are free', async (t) => {
  if (!hasPrlimit()) return t.pass('prlimit (util-linux) is not installed');
  const dir = t.context.dir();
  // What the server itself holds, measured on an unlimited one.
  const probe = await t.context.serve(['--silent', '-S', path.join(dir, 'probe'), '--memfd']);
  const base = fdCount(probe.pid);
  await probe.stop();
  // A peer holds 2 fds (its socket and 1 eventfd): of two limits one apart,
  // one runs out at accept() (no fd for the socket: the reserve fd makes
  // the refusal possible), the other at the eventfd.
  const out = [await outOfFds(t, dir, base + 16, 'even'), await outOfFds(t, dir, base + 17, 'odd')];
  t.true(
    out.some((o) => /refused a peer: out of file descriptors \(the limit is \d+ fds\); raise the limit \(ulimit -n\)/.test(o)),
    `a peer was refused at accept()\n${out.join('\n---\n')}`,
  );
  t.true(out.some((o) => /refused a peer: cannot create its eventfds: EMFILE/.test(o)));
});

// ---- 4a. a fabric too big for the fd limit is refused at start ---------------------

test('famez serve --max-peers 253 under a low fd limit is refused with exit 2, one line, and nothing left behind', async (t) => {
  if (!hasPrlimit()) return t.pass('prlimit (util-linux) is not installed');
  const dir = t.context.dir();
  const sock = path.join(dir, 'sock');
  const shm = t.context.shmName();
  const pidfile = path.join(dir, 'pid');
  const s = serveLimited(t, 4096, 4096, ['--max-peers', '253', '-S', sock, '-M', shm, '-p', pidfile]);
  await s.wait(WAIT_MS);
  t.deepEqual(s.exitInfo, { code: 2, signal: null }, s.stderr);
  const lines = s.stderr.split('\n').filter((l) => l);
  t.is(lines.length, 1, s.stderr);
  t.regex(lines[0], /^famez serve: a fabric of 253 peers needs about [\d,]+ file descriptors .* but the fd limit is 4,096 \(hard limit 4,096\); raise it \(ulimit -n \d+\) or use --max-peers \d+ or fewer$/);
  t.is(s.stdout, '');
  t.deepEqual(fs.readdirSync(dir), [], 'no socket, no pid file');
  t.false(fs.existsSync(`/dev/shm/${shm}`));
});

test('famez serve with a fabric that fits the fd limit starts (253 peers when the hard limit can be raised, 20 peers under 2048)', async (t) => {
  if (!hasPrlimit()) return t.pass('prlimit (util-linux) is not installed');
  const dir = t.context.dir();
  const small = serveLimited(t, 2048, 2048, ['--max-peers', '20', '-S', path.join(dir, 'small'), '--memfd']);
  await small.waitFor(/serving on /, WAIT_MS);
  await small.stop();
  // A soft limit below the need and a hard one above it: the server raises it.
  const raised = serveLimited(t, 256, 2048, ['--max-peers', '20', '-S', path.join(dir, 'raised'), '--memfd']);
  await raised.waitFor(/serving on /, WAIT_MS);
  t.regex(fs.readFileSync(`/proc/${raised.pid}/limits`, 'utf8'), /Max open files\s+2048\s+2048/);
  await raised.stop();
  // 253 peers need about 65,000: only a privileged user can raise the hard limit that far.
  const need = 70_000;
  const big = serveLimited(t, need, need, ['--max-peers', '253', '-S', path.join(dir, 'big'), '--memfd']);
  const exit = await Promise.race([big.waitFor(/serving on /, WAIT_MS).then(() => null), big.exited]);
  if (exit !== null && /prlimit/.test(big.stderr)) {
    t.log(`cannot raise the hard fd limit to ${need} here: ${big.stderr.trim()}`);
  } else {
    t.is(exit, null, big.stderr);
    t.true(pidAlive(big.pid));
  }
  await big.stop();
});
