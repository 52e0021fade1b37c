// `famez serve` as a real process: command-line refusals, defaults, sizes,
// peer limits, ID policies, hundreds of peers, slow peers, stale and live
// sockets, signals, logging, permissions, daemon mode, and `famez stanza`.
import anyTest, { type TestFn } from 'ava';
import * as fs from 'node:fs';
import { constants as bufferConstants } from 'node:buffer';
import * as path from 'node:path';

import { Client, ClientError } from '../ts/client/client.js';
import { UnixListener, UnixStream, closeFd, fdSize } from '../ts/native.js';
import { DEFAULTS, parseServeArgs } from '../ts/server/options.js';
import { RawPeer, type Msg } from './helpers/raw-peer.js';
import { Scratch, once, pidAlive } from './helpers/serve.js';
import { waitFor } from './helpers/wait.js';

const test = anyTest as TestFn<Scratch>;

test.beforeEach((t) => {
  t.context = new Scratch();
});

test.afterEach.always(async (t) => {
  await t.context.cleanup();
});

const MiB = 2 ** 20;
const GiB = 2 ** 30;

async function connect(sc: Scratch, sock: string): Promise<Client> {
  return sc.track(await Client.connect(sock, { timeoutMs: 20_000 }));
}

function count(text: string, re: RegExp): number {
  return text.split('\n').filter((l) => re.test(l)).length;
}

// ---- 1. refusals ------------------------------------------------------------

const badCommandLines: Array<[string, (dir: string) => string[], RegExp]> = [
  ['an unknown flag', () => ['--bogus-flag'], /unknown option '--bogus-flag'/],
  ['an unknown short flag', () => ['-Z'], /unknown option '-Z'/],
  ['a size that is not a power of two', () => ['-l', '3M'], /3M.*not a power of two.*\b2M\b.*\b4M\b/],
  ['-n 0', () => ['-n', '0'], /-n\/--vectors.*\b0\b/],
  ['-n 100000', () => ['-n', '100000'], /-n\/--vectors.*\b100000\b/],
  ['a socket in a missing directory', (dir) => ['-S', path.join(dir, 'missing', 'sock')], /missing.*does not exist/],
  ['--id-policy bogus', () => ['--id-policy', 'bogus'], /--id-policy.*'bogus'/],
  ['--group 99999999999', () => ['--group', '99999999999'], /--group 99999999999 is not a group id/],
  ['an unknown group name', () => ['--group', 'no-such-group-famez'], /unknown group 'no-such-group-famez'/],
  ['-M /', () => ['-M', '/'], /invalid shm name '\/'/],
  ['a socket path longer than sun_path', (dir) => ['-S', path.join(dir, 'x'.repeat(120))], /socket path .* has \d+ bytes, a UNIX socket path at most 107/],
  ['-l 4096T (more than this machine can ever map)', () => ['-l', '4096T'], /size 4096T can never be mapped on this machine/],
  ['--mode with a setgid bit', () => ['--mode', '2770'], /--mode takes permission bits only/],
];

for (const [what, extra, message] of badCommandLines) {
  test(`serve refuses ${what} with one line on stderr and exit code 2, creating nothing`, async (t) => {
    const dir = t.context.dir();
    const shm = t.context.shmName();
    const p = await t.context.run(['serve', '--silent', '-S', path.join(dir, 'sock'), '-M', shm, ...extra(dir)]);
    t.deepEqual(p.exitInfo, { code: 2, signal: null }, p.stderr);
    t.regex(p.stderr, /^famez serve: [^\n]+\n$/, 'exactly one line on stderr');
    t.regex(p.stderr, message);
    t.is(p.stdout, '');
    t.deepEqual(fs.readdirSync(dir), [], 'no socket was created');
    t.false(fs.existsSync(`/dev/shm/${shm}`), 'no shared memory was created');
  });
}

// ---- 2. help ------------------------------------------------------------------

for (const flag of ['-h', '--help']) {
  test(`serve ${flag} prints the usage and exits 0`, async (t) => {
    const dir = t.context.dir();
    const p = await t.context.run(['serve', '--silent', flag, '-S', path.join(dir, 'sock')]);
    t.deepEqual(p.exitInfo, { code: 0, signal: null }, p.stderr);
    t.regex(p.stdout, /^Usage: famez serve/);
    for (const f of ['--socket', '--shm-name', '--size', '--vectors', '--max-peers', '--id-policy', '--max-queued', '--daemon']) {
      t.true(p.stdout.includes(f), `the help mentions ${f}`);
    }
    t.is(p.stderr, '');
    t.deepEqual(fs.readdirSync(dir), [], 'help serves nothing');
  });
}

// ---- 3. defaults --------------------------------------------------------------

test('parseServeArgs([\'--silent\']) reports the stock ivshmem-server defaults', (t) => {
  const o = parseServeArgs(['--silent']);
  t.is(o.socket, '/tmp/ivshmem_socket');
  t.deepEqual(o.shm, { kind: 'posix', name: 'ivshmem' });
  t.is(o.size, 4194304);
  t.is(o.vectors, 1);
  t.is(o.daemon, false);
  t.is(DEFAULTS.socket, '/tmp/ivshmem_socket');
});

test('with --silent, -S and -M it serves 4 MiB and 1 vector and prints the QEMU stanza', async (t) => {
  const dir = t.context.dir();
  const sock = path.join(dir, 'sock');
  const shm = t.context.shmName();
  const s = await t.context.serve(['--silent', '-S', sock, '-M', shm]);
  await s.waitFor(/<\/qemu:commandline>/);
  t.regex(s.stdout, /serving on .*\(shared memory \/dev\/shm\/famez-test-[^,]+, 4M, 1 vector; pid \d+\)/);
  t.true(s.stdout.includes(`-chardev socket,path=${sock},id=famez0 -device ivshmem-doorbell,chardev=famez0,vectors=1`), s.stdout);
  t.true(s.stdout.includes("<qemu:arg value='ivshmem-doorbell,chardev=famez0,vectors=1'/>"), s.stdout);
  t.is(fs.statSync(`/dev/shm/${shm}`).size, 4 * MiB);
  const c = await connect(t.context, sock);
  t.is(c.memory.byteLength, 4 * MiB);
  t.is(c.vectors, 1);
  t.is(c.id, 0);
});

// ---- 4. sizes -----------------------------------------------------------------

test('sizes take K, M and G suffixes', async (t) => {
  const dir = t.context.dir();
  const cases: Array<[string, number, string]> = [
    ['64K', 64 * 1024, '64K'],
    ['2M', 2 * MiB, '2M'],
    ['1G', GiB, '1G'],
    ['65536', 65536, '64K'],
    ['1024k', MiB, '1M'],
  ];
  const servers = await Promise.all(
    cases.map(([size], i) => t.context.serve(['--silent', '-S', path.join(dir, `sock${i}`), '--memfd', '-l', size])),
  );
  for (const [i, [size, bytes, label]] of cases.entries()) {
    const c = await connect(t.context, path.join(dir, `sock${i}`));
    t.is(c.memory.byteLength, bytes, `-l ${size}`);
    t.true(servers[i].stdout.includes(`memfd, ${label}, 1 vector`), servers[i].stdout);
  }
});

test('a size past 4 GiB works (-l 8G backed by a sparse file)', async (t) => {
  const dir = t.context.dir();
  const sock = path.join(dir, 'sock');
  const shmDir = path.join(dir, 'shm');
  fs.mkdirSync(shmDir);
  const s = await t.context.serve(['--silent', '-S', sock, '-m', shmDir, '-M', 'big', '-l', '8G']);
  t.regex(s.stdout, /serving on .*big, 8G, 1 vector/);
  t.is(fs.statSync(path.join(shmDir, 'big')).size, 8 * GiB);

  // What QEMU sizes BAR2 by: the fstat size of the fd a peer receives.
  const raw = t.context.track(UnixStream.connect(sock));
  const welcome: Array<{ value: number; size: number | null }> = [];
  await waitFor(
    () => {
      for (let m = raw.recv(); m; m = raw.recv()) {
        welcome.push({ value: m.value, size: m.fd >= 0 ? fdSize(m.fd) : null });
        if (m.fd >= 0) closeFd(m.fd);
      }
      return welcome.length >= 3;
    },
    'the version, ID and shm messages',
    20_000,
  );
  t.deepEqual(welcome.slice(0, 3), [
    { value: 0, size: null },
    { value: 0, size: null },
    { value: -1, size: 8 * GiB },
  ]);

  // The library client joins; it can map the whole object only where the
  // runtime allows an ArrayBuffer that large (Node 20 stops at 4 GiB).
  const c = await connect(t.context, sock);
  t.is(c.id, 1);
  if (bufferConstants.MAX_LENGTH >= 8 * GiB) {
    t.is(c.memory.byteLength, 8 * GiB);
    const tail = new Uint8Array(c.memory, 8 * GiB - 4096, 4096);
    tail[4095] = 0xa5;
    const fd = fs.openSync(path.join(shmDir, 'big'), 'r');
    try {
      const buf = Buffer.alloc(1);
      fs.readSync(fd, buf, 0, 1, 8 * GiB - 1);
      t.is(buf[0], 0xa5, 'the far end of the mapping is the file');
    } finally {
      fs.closeSync(fd);
    }
  } else {
    t.throws(() => c.memory, { message: /refused an external ArrayBuffer of 8589934592 bytes|larger than/ });
    t.false(c.closed, 'the refusal does not break the client');
  }
});

test('long and short size flags are equivalent (--size 1M, -l 1M, -l1M, --size=1M)', async (t) => {
  const dir = t.context.dir();
  const spellings = [['--size', '1M'], ['-l', '1M'], ['-l1M'], ['--size=1M']];
  for (const s of spellings) t.is(parseServeArgs(s).size, MiB, s.join(' '));
  const servers = await Promise.all(
    spellings.map((s, i) => t.context.serve(['--silent', '-S', path.join(dir, `sock${i}`), '--memfd', ...s])),
  );
  for (const [i, s] of spellings.entries()) {
    t.regex(servers[i].stdout, /serving on .*memfd, 1M, 1 vector/, s.join(' '));
    const c = await connect(t.context, path.join(dir, `sock${i}`));
    t.is(c.memory.byteLength, MiB, s.join(' '));
  }
});

// ---- 5. --max-peers -------------------------------------------------------------

test('--max-peers 2 refuses a third peer and the first two keep working', async (t) => {
  const dir = t.context.dir();
  const sock = path.join(dir, 'sock');
  const s = await t.context.serve(['--silent', '-S', sock, '--memfd', '--max-peers', '2']);
  const a = await connect(t.context, sock);
  const b = await connect(t.context, sock);
  const err = await t.throwsAsync(Client.connect(sock, { timeoutMs: 20_000 }), { instanceOf: ClientError });
  t.is((err as ClientError).code, 'EREFUSED');
  await s.waitFor(/refused a peer: 2 peers connected, the limit is 2/);

  // A raw peer sees the refusal on the wire: -1, then EOF.
  const raw = t.context.track(new RawPeer(sock));
  await waitFor(() => raw.ended, 'the refused raw peer to be closed', 20_000);
  t.deepEqual(raw.msgs, [{ value: -1, fd: false }]);
  t.is(raw.ended, 'closed');
  await waitFor(() => count(s.stdout, /refused a peer/) === 2, 'the second refusal to be logged', 20_000);

  // The two admitted peers still ring each other.
  await waitFor(() => a.peers.has(b.id) && b.peers.has(a.id), 'a and b to know each other', 20_000);
  t.deepEqual([...a.peers.keys()], [b.id]);
  t.deepEqual([...b.peers.keys()], [a.id]);
  const atB = once<{ vector: number }>(b, 'interrupt', 20_000, 'b to be rung');
  a.ring(b.id, 0);
  t.is((await atB).vector, 0);
  const atA = once<{ vector: number }>(a, 'interrupt', 20_000, 'a to be rung');
  b.ring(a.id, 0);
  t.is((await atA).vector, 0);
  t.false(a.closed);
  t.false(b.closed);
});

// ---- 6. --id-policy ---------------------------------------------------------------

async function leave(s: Awaited<ReturnType<Scratch['serve']>>, c: Client): Promise<void> {
  const id = c.id;
  c.close();
  await s.waitFor(new RegExp(`peer ${id} disconnected`));
}

test('--id-policy lowest reuses the lowest freed ID once no connected peer was told it left', async (t) => {
  const dir = t.context.dir();
  const sock = path.join(dir, 'sock');
  const s = await t.context.serve(['--silent', '-S', sock, '--memfd', '--id-policy', 'lowest']);
  const c = [await connect(t.context, sock), await connect(t.context, sock), await connect(t.context, sock)];
  t.deepEqual(c.map((x) => x.id), [0, 1, 2]);
  await leave(s, c[2]);
  await leave(s, c[0]);
  // Peer 1 was told 0 and 2 left: announcing either again would make a
  // QEMU write into the array it freed for them.
  const d = await connect(t.context, sock);
  t.is(d.id, 3);
  await leave(s, c[1]);
  await leave(s, d);
  t.is((await connect(t.context, sock)).id, 0);
  t.is((await connect(t.context, sock)).id, 1);
});

test('--id-policy monotonic gives the next ID after a departure', async (t) => {
  const dir = t.context.dir();
  const sock = path.join(dir, 'sock');
  const s = await t.context.serve(['--silent', '-S', sock, '--memfd', '--id-policy', 'monotonic']);
  const c = [await connect(t.context, sock), await connect(t.context, sock), await connect(t.context, sock)];
  t.deepEqual(c.map((x) => x.id), [0, 1, 2]);
  await leave(s, c[1]);
  t.is((await connect(t.context, sock)).id, 3);
  await leave(s, c[0]);
  t.is((await connect(t.context, sock)).id, 4);
});

test('--id-policy random gives distinct IDs in range', async (t) => {
  const dir = t.context.dir();
  const sock = path.join(dir, 'sock');
  await t.context.serve(['--silent', '-S', sock, '--memfd', '--id-policy', 'random']);
  const ids: number[] = [];
  for (let i = 0; i < 8; i++) ids.push((await connect(t.context, sock)).id);
  t.is(new Set(ids).size, ids.length, `distinct: ${ids}`);
  for (const id of ids) t.true(Number.isInteger(id) && id >= 0 && id <= 65535, `in range: ${id}`);
  t.notDeepEqual(ids, [0, 1, 2, 3, 4, 5, 6, 7], 'not the sequential IDs of the other policies');
});

// ---- 7. hundreds of peers -----------------------------------------------------------

test.serial('600 peers, past select()\'s 1024-fd limit, each get a distinct ID and the whole peer list', async (t) => {
  const N = 600;
  const dir = t.context.dir();
  const sock = path.join(dir, 'sock');
  const s = await t.context.serve(['--silent', '-S', sock, '--memfd', '-n', '1']);
  const peers: RawPeer[] = [];
  for (let i = 0; i < N; i++) {
    const p = t.context.track(new RawPeer(sock));
    peers.push(p);
    await p.welcome(1);
    if (p.ended) t.fail(`peer ${i} was closed during its welcome: ${p.ended}`);
  }
  await s.waitFor(new RegExp(`peer \\d+ connected \\(${N} peers\\)`));
  const fds = fs.readdirSync(`/proc/${s.pid}/fd`).length;
  t.true(fds > 1024, `the server holds ${fds} fds`);

  const ids = peers.map((p) => p.id);
  t.is(new Set(ids).size, N, 'distinct IDs');
  t.deepEqual([...ids].sort((a, b) => a - b), Array.from({ length: N }, (_, i) => i));
  const last = peers[N - 1];
  const announced = new Set(last.msgs.slice(3).filter((m) => m.fd && m.value !== last.id).map((m) => m.value));
  t.is(announced.size, N - 1, 'the last peer was told about every other peer');
  t.is(last.msgs.slice(3).filter((m) => m.fd && m.value !== last.id).length, N - 1);
  // Every earlier peer heard of every later one: wait for the tail of the joins.
  await waitFor(() => peers[0].msgs.length >= 3 + N, 'the first peer to hear of all the others', 60_000);
  t.is(new Set(peers[0].msgs.slice(3).map((m) => m.value)).size, N);
  t.false(peers.some((p) => p.ended !== null), 'no peer was disconnected');
});

// ---- 8. a full socket buffer ---------------------------------------------------------

/** Splits a message list (after the version, ID and shm messages) into
 * contiguous runs of the same value. */
function runs(msgs: Msg[]): Array<{ value: number; fd: boolean; n: number }> {
  const out: Array<{ value: number; fd: boolean; n: number }> = [];
  for (const m of msgs) {
    const last = out[out.length - 1];
    if (last && last.value === m.value && last.fd === m.fd) last.n += 1;
    else out.push({ ...m, n: 1 });
  }
  return out;
}

test.serial('peers that have not read yet cost the server no extra fds: their backlog names fds, it does not hold copies', async (t) => {
  const V = 64;
  const N = 30;
  const dir = t.context.dir();
  const sock = path.join(dir, 'sock');
  const s = await t.context.serve(['--silent', '-S', sock, '--memfd', '-n', String(V), '--max-peers', String(N)]);
  const fdsOf = (pid: number) => fs.readdirSync(`/proc/${pid}/fd`).length;
  const base = fdsOf(s.pid);
  // N peers that read nothing while all of them join: each is owed
  // 3 + V x N messages, most of them with an fd, far past its socket buffer.
  const peers: RawPeer[] = [];
  for (let i = 0; i < N; i++) {
    peers.push(t.context.track(new RawPeer(sock, false)));
    await s.waitFor(new RegExp(`\\(${i + 1} peers?\\)`));
  }
  const held = fdsOf(s.pid) - base;
  // Its own: V eventfds and a socket per peer. A copy per queued fd would be
  // thousands more (and EMFILE under a 20,000-fd limit with 62 fabric peers).
  t.true(held <= N * (V + 1) + 16, `the server holds ${held} more fds for ${N} peers`);
  // Now they read: every message arrives, in the protocol's order.
  const counts = peers.map(() => 0);
  peers.forEach((p, i) =>
    p.stream.watch((value, fd) => {
      if (fd >= 0) closeFd(fd);
      if (value !== null) counts[i]++;
    }),
  );
  await waitFor(() => counts.every((c) => c >= 3 + V * N), `every peer's ${3 + V * N} messages (${counts.join(',')})`, 30_000);
  // An absence (no message more than the protocol's): nothing to wait on,
  // so a short bounded look.
  await new Promise((r) => setTimeout(r, 200));
  t.deepEqual(counts, peers.map(() => 3 + V * N));
  t.false(/disconnected/.test(s.stdout), s.stdout);
});

test.serial('peers that keep reading are not dropped as too slow during a join burst, however much they are owed', async (t) => {
  // 48 peers connect at once with 128 vectors each: the first is owed
  // 47 x 128 = 6,016 messages in the server's first turns, past the
  // default --max-queued (4096) on top of its welcome. It reads all along,
  // so it is slow only for a moment, not stuck.
  const V = 128;
  const N = 48;
  const dir = t.context.dir();
  const sock = path.join(dir, 'sock');
  const s = await t.context.serve(['--silent', '-S', sock, '--memfd', '-n', String(V), '--max-peers', String(N)]);
  const peers: RawPeer[] = [];
  for (let i = 0; i < N; i++) peers.push(t.context.track(new RawPeer(sock)));
  const owed = (_p: RawPeer) => 3 + V * N; // its welcome and every later group, whatever its place
  await waitFor(() => /too slow/.test(s.stdout) || peers.every((p) => p.msgs.length >= owed(p) || p.ended !== null), 'every peer to get every group', 60_000);
  t.deepEqual(peers.filter((p) => p.ended !== null).map((p) => p.id), [], s.lines.filter((l) => /too slow/.test(l)).join('\n'));
  t.false(/too slow/.test(s.stdout), s.stdout.split('\n').filter((l) => /too slow/.test(l)).slice(0, 3).join('\n'));
  t.deepEqual(peers.map((p) => p.msgs.length), peers.map(owed));
});

test.serial('a peer that never reads is disconnected as too slow; peers that read get every message', async (t) => {
  const V = 64;
  const dir = t.context.dir();
  const sock = path.join(dir, 'sock');
  const s = await t.context.serve(['--silent', '-S', sock, '--memfd', '-n', String(V), '--max-queued', '16', '--id-policy', 'monotonic']);
  const slow = t.context.track(new RawPeer(sock, false));
  await s.waitFor(/peer 0 connected \(1 peer\)/);

  const readers: RawPeer[] = [];
  const join = async () => {
    const r = t.context.track(new RawPeer(sock));
    readers.push(r);
    await r.welcome(V);
    t.is(r.ended, null, `reader ${r.id} was closed:\n${s.lines.filter((l) => /connected|too slow/.test(l)).join('\n')}`);
  };
  for (let i = 0; i < 40 && !/too slow/.test(s.stdout); i++) await join();
  const dropped = await s.waitFor(/peer 0 disconnected: too slow[^\n]*\n/);
  t.regex(dropped[0], /limit 16/);
  // Two more peers after the drop: they never hear of the slow peer.
  await join();
  await join();

  // The server's log orders the drop among the connects.
  const lines = s.lines;
  const dropAt = lines.findIndex((l) => /peer 0 disconnected/.test(l));
  const connectAt = (id: number) => lines.findIndex((l) => l.includes(`peer ${id} connected`));
  const readerIds = readers.map((r) => r.id);
  t.is(new Set(readerIds).size, readers.length);
  t.false(readerIds.includes(0));

  for (const r of readers) {
    const sawSlow = connectAt(r.id) < dropAt;
    const expected = 3 + V * readers.length + (sawSlow ? V + 1 : 0);
    await waitFor(() => r.msgs.length >= expected, `reader ${r.id} to get ${expected} messages (has ${r.msgs.length})`, 30_000);
  }
  for (const r of readers) {
    const sawSlow = connectAt(r.id) < dropAt;
    const expected = 3 + V * readers.length + (sawSlow ? V + 1 : 0);
    t.is(r.msgs.length, expected, `reader ${r.id}: every message, no more`);
    t.deepEqual(r.msgs.slice(0, 3), [{ value: 0, fd: false }, { value: r.id, fd: false }, { value: -1, fd: true }]);
    const groups = runs(r.msgs.slice(3));
    // Every peer (the slow one included, while it was there) is announced
    // exactly once with all of its vectors, contiguously.
    const withFd = groups.filter((g) => g.fd);
    t.deepEqual(withFd.map((g) => g.n), withFd.map(() => V), `reader ${r.id}: whole groups`);
    t.deepEqual(
      withFd.map((g) => g.value).sort((a, b) => a - b),
      [...(sawSlow ? [0] : []), ...readerIds].sort((a, b) => a - b),
      `reader ${r.id}: every peer once`,
    );
    t.deepEqual(groups.filter((g) => !g.fd), sawSlow ? [{ value: 0, fd: false, n: 1 }] : [], `reader ${r.id}: the slow peer's departure`);
    t.is(r.ended, null);
  }
  t.true(connectAt(readers[0].id) < dropAt, 'the first reader joined while the slow peer was there');

  // The slow peer was closed, not silently skipped: what it can still read
  // is an unbroken prefix of its messages, then EOF.
  t.true(await slow.drainToEof(), 'the slow peer sees EOF');
  const got = slow.msgs;
  t.deepEqual(got.slice(0, 3), [{ value: 0, fd: false }, { value: 0, fd: false }, { value: -1, fd: true }]);
  const sg = runs(got.slice(3));
  t.true(sg.every((g) => g.fd), 'only connect messages');
  t.deepEqual(sg.map((g) => g.value), [0, ...readerIds.slice(0, sg.length - 1)], 'in join order');
  t.true(sg.slice(0, -1).every((g) => g.n === V), 'no gaps before the end');
  t.true(sg[sg.length - 1].n <= V);
  t.true(got.length < 3 + V * (1 + readers.length), 'it did not get everything');
});

test.serial('a newcomer is never too slow for its own welcome, however large (-n 256 --max-queued 0)', async (t) => {
  const V = 256;
  const dir = t.context.dir();
  const sock = path.join(dir, 'sock');
  const s = await t.context.serve(['--silent', '-S', sock, '--memfd', '-n', String(V), '--max-queued', '0']);
  const peers: RawPeer[] = [];
  for (let i = 0; i < 6; i++) {
    // The welcome (3 + 256 * (i + 1) messages) is far past a socket buffer.
    const p = t.context.track(new RawPeer(sock));
    peers.push(p);
    await p.welcome(V);
    t.is(p.ended, null, `peer ${i} was closed during its welcome:\n${s.stdout}`);
  }
  for (const [i, p] of peers.entries()) {
    const expected = 3 + V * peers.length;
    await waitFor(() => p.msgs.length >= expected, `peer ${i} to get ${expected} messages (has ${p.msgs.length})`, 30_000);
    t.is(p.msgs.length, expected);
  }
  t.false(/too slow/.test(s.stdout), s.stdout);
});

// ---- 9. stale and live sockets ----------------------------------------------------------

test('a stale socket (no listener) is replaced', async (t) => {
  const dir = t.context.dir();
  const sock = path.join(dir, 'sock');
  UnixListener.listen(sock).close(); // leaves the socket file behind
  t.true(fs.statSync(sock).isSocket());
  const s = await t.context.serve(['--silent', '-S', sock, '--memfd']);
  t.regex(s.stdout, new RegExp(`replaced stale socket ${sock}`));
  const c = await connect(t.context, sock);
  t.is(c.id, 0);
});

test('a live socket is refused with exit code 1, naming the path and the pid; the first server keeps working', async (t) => {
  const dir = t.context.dir();
  const sock = path.join(dir, 'sock');
  const first = await t.context.serve(['--silent', '-S', sock, '--memfd']);
  const shm = t.context.shmName();
  const second = await t.context.run(['serve', '--silent', '-S', sock, '-M', shm]);
  t.deepEqual(second.exitInfo, { code: 1, signal: null }, second.stderr);
  t.regex(second.stderr, /^famez serve: [^\n]+\n$/);
  t.true(second.stderr.includes(sock), second.stderr);
  t.true(second.stderr.includes(`pid ${first.pid}`), second.stderr);
  t.false(fs.existsSync(`/dev/shm/${shm}`), 'the refused server left no shared memory');
  t.true(first.running);
  t.true(fs.statSync(sock).isSocket());
  const a = await connect(t.context, sock);
  const b = await connect(t.context, sock);
  // The second server's probe connection may have used up an ID (it is a
  // peer that left before its welcome): the IDs are consecutive, not 0 and 1.
  t.is(b.id, a.id + 1);
  await waitFor(() => a.peers.has(b.id), 'a to know b', 20_000);
});

// ---- 10. signals ------------------------------------------------------------------------

for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  test(`${signal} closes the clients, removes the socket and the shm, and exits 0`, async (t) => {
    const dir = t.context.dir();
    const sock = path.join(dir, 'sock');
    const shm = t.context.shmName();
    const s = await t.context.serve(['--silent', '-S', sock, '-M', shm]);
    const a = await connect(t.context, sock);
    const b = await connect(t.context, sock);
    t.true(fs.existsSync(`/dev/shm/${shm}`));
    const closes = [once(a, 'close', 20_000, 'a to close'), once(b, 'close', 20_000, 'b to close')];
    s.child.kill(signal);
    t.deepEqual(await s.wait(), { code: 0, signal: null }, s.stderr);
    await Promise.all(closes);
    t.true(a.closed && b.closed);
    t.regex(s.stdout, new RegExp(`${signal}: closing 2 peer\\(s\\) and exiting`));
    t.false(fs.existsSync(sock), 'the socket is removed');
    t.false(fs.existsSync(`/dev/shm/${shm}`), 'the shared memory is unlinked');
  });
}

test('--keep-shm leaves the shared memory in place at exit', async (t) => {
  const dir = t.context.dir();
  const sock = path.join(dir, 'sock');
  const shm = t.context.shmName();
  const s = await t.context.serve(['--silent', '-S', sock, '-M', shm, '-l', '1M', '--keep-shm']);
  const a = await connect(t.context, sock);
  new Uint8Array(a.memory)[7] = 42;
  const closed = once(a, 'close', 20_000, 'the client to close');
  s.child.kill('SIGTERM');
  t.deepEqual(await s.wait(), { code: 0, signal: null });
  await closed;
  t.false(fs.existsSync(sock));
  t.is(fs.statSync(`/dev/shm/${shm}`).size, MiB, 'the shared memory stays');
  t.is(fs.readFileSync(`/dev/shm/${shm}`)[7], 42, 'with its contents');
});

// ---- 11. logging -----------------------------------------------------------------------

test('one log line per connect and per disconnect, with the ID and the peer count', async (t) => {
  const dir = t.context.dir();
  const sock = path.join(dir, 'sock');
  const s = await t.context.serve(['--silent', '-S', sock, '--memfd']);
  const a = await connect(t.context, sock);
  const b = await connect(t.context, sock);
  await s.waitFor(/peer 1 connected/);
  a.close();
  await s.waitFor(/peer 0 disconnected/);
  b.close();
  await s.waitFor(/peer 1 disconnected/);
  t.is(count(s.stdout, /(?:INFO|WARN) +peer 0 connected \(1 peer\)$/), 1);
  t.is(count(s.stdout, /(?:INFO|WARN) +peer 1 connected \(2 peers\)$/), 1);
  t.is(count(s.stdout, /(?:INFO|WARN) +peer 0 disconnected: .* \(1 peer\)$/), 1);
  t.is(count(s.stdout, /(?:INFO|WARN) +peer 1 disconnected: .* \(0 peers\)$/), 1);
  t.is(count(s.stdout, /\bpeer [01]\b/), 4, 'nothing else about these peers');
});

// ---- 12. permissions --------------------------------------------------------------------

function pickGroup(): { name: string; gid: number } {
  const groups = fs
    .readFileSync('/etc/group', 'utf8')
    .split('\n')
    .map((l) => l.split(':'))
    .filter((f) => f.length >= 3 && /^\d+$/.test(f[2]))
    .map((f) => ({ name: f[0], gid: Number(f[2]) }));
  const mine = new Set(process.getgroups?.() ?? []);
  const primary = process.getgid!();
  // Prefer a group other than the primary one, so the chown is observable.
  const other = groups.find((g) => g.gid !== primary && (process.getuid!() === 0 || mine.has(g.gid)));
  return other ?? groups.find((g) => g.gid === primary) ?? { name: String(primary), gid: primary };
}

test('--mode 0660 --group G sets the permission bits and group of the socket and the shm', async (t) => {
  const dir = t.context.dir();
  const sock = path.join(dir, 'sock');
  const shm = t.context.shmName();
  const group = pickGroup();
  await t.context.serve(['--silent', '-S', sock, '-M', shm, '--mode', '0660', '--group', group.name]);
  for (const p of [sock, `/dev/shm/${shm}`]) {
    const st = fs.statSync(p);
    t.is(st.mode & 0o7777, 0o660, `${p} mode ${(st.mode & 0o7777).toString(8)}`);
    t.is(st.gid, group.gid, `${p} group`);
  }
  const c = await connect(t.context, sock);
  t.is(c.id, 0);
});

// ---- 13. daemon mode --------------------------------------------------------------------

test('--daemon -p PIDFILE detaches, writes the pid file and serves until SIGTERM', async (t) => {
  const dir = t.context.dir();
  const sock = path.join(dir, 'sock');
  const pidfile = path.join(dir, 'pidfile');
  const shm = t.context.shmName();
  const p = await t.context.run(['serve', '--silent', '--daemon', '-p', pidfile, '-S', sock, '-M', shm]);
  const text = fs.existsSync(pidfile) ? fs.readFileSync(pidfile, 'utf8') : '';
  const pid = Number(text.trim());
  if (pid > 0) t.context.pids.push(pid);
  t.deepEqual(p.exitInfo, { code: 0, signal: null }, p.stderr);
  t.regex(text, /^\d+\n$/);
  t.not(pid, p.pid, 'the pid file names the background server, not the launcher');
  t.true(pidAlive(pid));
  t.regex(p.stdout, new RegExp(`running in the background \\(pid ${pid}\\)`));
  const c = await connect(t.context, sock);
  t.is(c.id, 0);
  const closed = once(c, 'close', 20_000, 'the client to close');
  process.kill(pid, 'SIGTERM');
  await closed;
  await waitFor(() => !pidAlive(pid), 'the daemon to exit', 20_000);
  t.false(fs.existsSync(sock), 'the socket is removed');
  t.false(fs.existsSync(pidfile), 'the pid file is removed');
  t.false(fs.existsSync(`/dev/shm/${shm}`), 'the shared memory is removed');
});

// ---- 14. famez stanza -------------------------------------------------------------------

test('famez stanza -S x -n 3 prints vectors=3 and the libvirt block', async (t) => {
  const p = await t.context.run(['stanza', '--silent', '-S', 'x', '-n', '3']);
  t.deepEqual(p.exitInfo, { code: 0, signal: null }, p.stderr);
  t.true(p.stdout.includes('-chardev socket,path=x,id=famez0 -device ivshmem-doorbell,chardev=famez0,vectors=3'), p.stdout);
  t.true(p.stdout.includes('<qemu:commandline>'));
  t.true(p.stdout.includes("<qemu:arg value='socket,path=x,id=famez0'/>"));
  t.true(p.stdout.includes("<qemu:arg value='ivshmem-doorbell,chardev=famez0,vectors=3'/>"));
  t.true(p.stdout.includes('</qemu:commandline>'));
  t.is(p.stderr, '');
});

for (const bad of ['0', '300', 'x']) {
  test(`famez stanza -n ${bad} exits 2 with one line on stderr`, async (t) => {
    const p = await t.context.run(['stanza', '-S', 'x', '-n', bad]);
    t.deepEqual(p.exitInfo, { code: 2, signal: null });
    t.regex(p.stderr, /^famez stanza: [^\n]*-n\/--vectors[^\n]*\n$/);
    t.is(p.stdout, '');
  });
}
