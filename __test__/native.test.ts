// The native binding against the real kernel: eventfds, shared memory,
// UNIX sockets with fd passing, and socket path inspection.
import * as fs from 'node:fs';
import * as path from 'node:path';

import anyTest, { type ExecutionContext, type TestFn } from 'ava';

import { EventFd, PidFile, SharedMemory, UnixListener, UnixStream, closeFd, errorCode, errorText, fdSize, groupId, signalFd, socketState } from '../ts/native.js';
import { LineProcess, removeDir, tempDir, waitFor, within } from './helpers/wait.js';

interface Context {
  cleanups: Array<() => void | Promise<void>>;
  dir: string;
}
const test = anyTest as TestFn<Context>;

test.beforeEach((t) => {
  t.context.cleanups = [];
  t.context.dir = tempDir('famez-native-');
});

test.afterEach.always(async (t) => {
  for (const c of t.context.cleanups.reverse()) {
    try {
      await c();
    } catch {
      // best effort
    }
  }
  removeDir(t.context.dir);
});

type Ctx = ExecutionContext<Context>;
function own<T extends { close(): void }>(t: Ctx, x: T): T {
  t.context.cleanups.push(() => x.close());
  return x;
}

// ava runs test files with the project root as the working directory.
const INDEX = path.resolve('index.js');

function fdinfo(fd: number): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of fs.readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8').split('\n')) {
    const m = /^([\w-]+):\s*(.*)$/.exec(line);
    if (m) out[m[1]] = m[2].trim();
  }
  return out;
}
/** eventfd-id of every eventfd this process has open (one entry per fd). */
function eventfdIds(): string[] {
  const out: string[] = [];
  for (const fd of fs.readdirSync('/proc/self/fd')) {
    try {
      const id = /eventfd-id:\s*(\d+)/.exec(fs.readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'))?.[1];
      if (id) out.push(id);
    } catch {
      // closed meanwhile
    }
  }
  return out;
}
function fdTargets(): string[] {
  const out: string[] = [];
  for (const fd of fs.readdirSync('/proc/self/fd')) {
    try {
      out.push(fs.readlinkSync(`/proc/self/fd/${fd}`));
    } catch {
      // closed meanwhile
    }
  }
  return out;
}
const O_CLOEXEC = 0o2000000;
const O_NONBLOCK = 0o4000;
const isOpen = (fd: number): boolean => fs.existsSync(`/proc/self/fd/${fd}`);
const mapsOf = (label: string): number => fs.readFileSync('/proc/self/maps', 'utf8').split('\n').filter((l) => l.includes(`/memfd:${label} `)).length;
const unique = (p: string): string => `${p}-${process.pid}-${Math.random().toString(36).slice(2, 10)}`;

/** A connected (server-side, client-side) pair through a real listener. */
function pair(t: Ctx): { listener: UnixListener; server: UnixStream; client: UnixStream; path: string } {
  const p = path.join(t.context.dir, unique('s'));
  const listener = own(t, UnixListener.listen(p));
  const client = own(t, UnixStream.connect(p));
  const server = listener.accept();
  if (!server) throw new Error('accept returned null right after connect');
  own(t, server);
  return { listener, server, client, path: p };
}

// ---- EventFd ---------------------------------------------------------------

test('EventFd: signal adds, drain returns the sum and resets to 0', (t) => {
  const e = own(t, new EventFd());
  t.true(e.fd >= 0);
  t.false(e.closed);
  t.is(fs.readlinkSync(`/proc/self/fd/${e.fd}`), 'anon_inode:[eventfd]');
  const flags = parseInt(fdinfo(e.fd).flags, 8);
  t.truthy(flags & O_CLOEXEC, 'close-on-exec');
  t.truthy(flags & O_NONBLOCK, 'nonblocking');
  t.is(e.drain(), 0);
  e.signal();
  e.signal(1);
  e.signal(5);
  t.is(e.drain(), 7);
  t.is(e.drain(), 0);
  e.signal(0); // counts as one ring
  t.is(e.drain(), 1);
  e.signal(2 ** 40);
  t.is(e.drain(), 2 ** 40);
});

test('EventFd: close is idempotent and makes every use an EBADF error', (t) => {
  const e = new EventFd();
  const id = fdinfo(e.fd)['eventfd-id'];
  e.close();
  t.true(e.closed);
  t.is(e.fd, -1);
  if (id !== undefined) t.false(eventfdIds().includes(id), 'the eventfd is closed');
  t.notThrows(() => e.close());
  t.throws(() => e.signal(), { code: 'EBADF', message: /EBADF/ });
  t.throws(() => e.drain(), { code: 'EBADF', message: /EBADF/ });
  t.throws(() => e.watch(() => undefined), { code: 'EBADF', message: /EBADF/ });
  t.throws(() => EventFd.adopt(-1), { code: 'EBADF', message: /EBADF/ });
});

test('EventFd.watch: counts arrive on the loop (not synchronously) and a burst coalesces into one call', async (t) => {
  const e = own(t, new EventFd());
  const counts: number[] = [];
  e.watch((c) => counts.push(c));
  e.signal();
  t.deepEqual(counts, [], 'not called synchronously');
  await waitFor(() => counts.length === 1, 'the first callback');
  t.deepEqual(counts, [1]);
  for (let i = 0; i < 100; i++) e.signal();
  e.signal(23);
  await waitFor(() => counts.length >= 2, 'the burst callback');
  t.deepEqual(counts, [1, 123], 'all signals made in one turn arrive as one summed count');
  t.is(e.drain(), 0, 'the watch drained the counter');
});

test('EventFd.watch: a new watch replaces the old; unwatch leaves the count for drain', async (t) => {
  const e = own(t, new EventFd());
  const sentinel = own(t, new EventFd());
  const a: number[] = [];
  const b: number[] = [];
  const s: number[] = [];
  sentinel.watch((c) => s.push(c));
  e.watch((c) => a.push(c));
  e.watch((c) => b.push(c));
  e.signal(2);
  await waitFor(() => b.length === 1, 'the replacement callback');
  t.deepEqual(a, []);
  t.deepEqual(b, [2]);
  e.unwatch();
  e.signal(3);
  sentinel.signal();
  await waitFor(() => s.length === 1, 'the sentinel, signalled after the unwatched fd');
  t.deepEqual(b, [2], 'no callback after unwatch');
  t.is(e.drain(), 3, 'the count is still there');
  // Watching again works.
  e.watch((c) => b.push(c));
  e.signal(4);
  await waitFor(() => b.length === 2, 'the callback after re-watching');
  t.deepEqual(b, [2, 4]);
});

test('EventFd: closing inside its own callback stops further callbacks', async (t) => {
  const e = own(t, new EventFd());
  const sentinel = own(t, new EventFd());
  const got: number[] = [];
  e.watch((c) => {
    got.push(c);
    e.close();
  });
  e.signal();
  await waitFor(() => got.length === 1, 'the callback');
  t.true(e.closed);
  const s: number[] = [];
  sentinel.watch((c) => s.push(c));
  sentinel.signal();
  await waitFor(() => s.length === 1, 'a later loop turn');
  t.deepEqual(got, [1]);
});

test('EventFd.watch: a callback that returns an open EventFd\'s number rings it once when it has returned, before its ticks; any other number rings nothing', async (t) => {
  const e = own(t, new EventFd());
  const other = own(t, new EventFd());
  const file = path.join(t.context.dir, 'not-an-eventfd');
  const fd = fs.openSync(file, 'w');
  t.context.cleanups.push(() => fs.closeSync(fd));
  const gone = new EventFd();
  const goneFd = gone.fd;
  gone.close();
  const seen: string[] = [];
  let answer: number | undefined = other.fd;
  e.watch(() => {
    seen.push(`during: ${other.drain()}`);
    // A tick queued by the callback runs after the answer is rung.
    process.nextTick(() => seen.push(`tick: ${other.drain()}`));
    return answer;
  });
  e.signal();
  await waitFor(() => seen.length === 2, 'the callback and its tick');
  t.deepEqual(seen, ['during: 0', 'tick: 1'], 'rung once, after the callback, before its tick');
  // Not an EventFd (a file), a closed one, a negative number, no number: nothing is written.
  for (const a of [fd, goneFd === fd ? 1_000_000 : goneFd, -1, undefined]) {
    answer = a;
    seen.length = 0;
    e.signal();
    await waitFor(() => seen.length === 2, 'the callback and its tick');
    t.deepEqual(seen, ['during: 0', 'tick: 0'], `returning ${a} rings nothing`);
  }
  t.is(fs.statSync(file).size, 0, 'nothing written to the file');
});

test('EventFd.spin: a ring that comes within the window is delivered before the loop goes on; without spin, after', async (t) => {
  const order = async (spinUs: number): Promise<string[]> => {
    const e = own(t, new EventFd());
    e.spin(spinUs);
    const seen: string[] = [];
    e.watch(() => {
      seen.push(`ring ${seen.filter((x) => x.startsWith('ring')).length + 1}`);
      if (seen.length === 1) {
        // What the loop runs next (the check phase), and a second ring: an
        // answer that comes while the first is handled.
        setImmediate(() => seen.push('immediate'));
        e.signal();
      }
    });
    e.signal();
    await waitFor(() => seen.length === 3, 'both rings and the immediate');
    e.close();
    return seen;
  };
  t.deepEqual(await order(0), ['ring 1', 'immediate', 'ring 2'], 'without spin the loop turns between the rings');
  t.deepEqual(await order(1_000_000), ['ring 1', 'ring 2', 'immediate'], 'spinning, the second ring is read at once');
});

test('EventFd.spin: a doorbell that never stops ringing still lets the loop run (the spin is bounded), and unwatch inside the callback ends it', async (t) => {
  const e = own(t, new EventFd());
  e.spin(1_000_000);
  let rings = 0;
  let immediates = 0;
  let timer = false;
  setTimeout(() => (timer = true), 1);
  e.watch(() => {
    rings++;
    if (rings === 1) setImmediate(() => immediates++);
    // Ring itself again, for ever, until the loop has run a timer.
    if (!timer && rings < 50_000_000) e.signal();
    else e.unwatch();
  });
  e.signal();
  await waitFor(() => timer, 'the timer, while the doorbell keeps ringing');
  const atStop = rings;
  const sentinel = own(t, new EventFd());
  let s = 0;
  sentinel.watch(() => s++);
  sentinel.signal();
  await waitFor(() => s === 1, 'a later loop turn');
  t.true(immediates === 1, 'the immediate ran too');
  t.true(rings <= atStop + 1, `no ring delivered after unwatch (${rings} after ${atStop})`);
  t.true(rings < 50_000_000, 'the loop got its turn long before the ring count ran out');
});

// Serial: with nothing else on the loop, a watch sleeps for its next ring
// itself after a callback; what the loop has to do must still wake it.
test.serial('EventFd.watch: a watch sleeping for its next ring still lets the loop run a timer, a watch started in the callback and another fd that becomes ready', async (t) => {
  const e = own(t, new EventFd());
  const other = own(t, new EventFd());
  const started = performance.now();
  const at: Record<string, number> = {};
  const mark = (what: string) => (at[what] ??= performance.now() - started);
  other.watch(() => mark('other fd'));
  const { Worker } = await import('node:worker_threads');
  // Rings `other` from another thread 1 s after it is told to, while e's
  // watch sleeps (nothing rings e again): long after the timer and the new
  // watch are due, so nothing else wakes the loop for them.
  const worker = new Worker(
    `const { parentPort } = require('node:worker_threads');
     const fs = require('node:fs');
     parentPort.once('message', (fd) => setTimeout(() => {
       const one = Buffer.alloc(8); one.writeBigUInt64LE(1n); fs.writeSync(fd, one);
     }, 1000));`,
    { eval: true },
  );
  t.context.cleanups.push(async () => void (await worker.terminate()));
  await new Promise((r) => worker.once('online', r));
  e.watch(() => {
    mark('ring');
    setTimeout(() => mark('timer'), 20);
    // Not yet in libuv's epoll set when the callback returns.
    const fresh = own(t, new EventFd());
    fresh.watch(() => mark('new watch'));
    fresh.signal();
    worker.postMessage(other.fd);
  });
  e.signal();
  await waitFor(() => Object.keys(at).length === 4, 'the ring, the new watch, the timer and the other fd', 5000);
  t.log(at);
  t.true(at['new watch'] - at.ring < 500, `a watch started in the callback runs at once (${at['new watch'] - at.ring} ms)`);
  t.true(at.timer - at.ring >= 19 && at.timer - at.ring < 500, `the 20 ms timer fires on time (${at.timer - at.ring} ms)`);
  t.true(at['other fd'] - at.ring >= 990 && at['other fd'] - at.ring < 2000, `a ring from another thread is seen when it comes (${at['other fd'] - at.ring} ms)`);
});

test.serial('EventFd.watch: round trips with another thread are each delivered, and timers still run meanwhile', async (t) => {
  // The worker echoes on its own EventFd (its own loop); this thread's
  // watch takes each answer, mostly while sleeping for it itself.
  const ping = own(t, new EventFd());
  const worker = new (await import('node:worker_threads')).Worker(
    `const { parentPort } = require('node:worker_threads');
     const fs = require('node:fs');
     const b = require(${JSON.stringify(INDEX)});
     const one = Buffer.alloc(8); one.writeBigUInt64LE(1n);
     const echo = new b.EventFd();
     parentPort.once('message', (ping) => {
       echo.watch(() => fs.writeSync(ping, one));
       parentPort.once('message', () => { echo.close(); parentPort.close(); });
       parentPort.postMessage(echo.fd);
     });`,
    { eval: true },
  );
  t.context.cleanups.push(async () => void (await worker.terminate()));
  worker.postMessage(ping.fd);
  const echoFd = await new Promise<number>((r) => worker.once('message', r));
  const one = Buffer.alloc(8);
  one.writeBigUInt64LE(1n);
  const N = 2000;
  let rings = 0;
  let ticks = 0;
  const timer = setInterval(() => ticks++, 1);
  t.context.cleanups.push(() => clearInterval(timer));
  const done = new Promise<void>((resolve) => {
    ping.watch(() => {
      if (++rings < N) fs.writeSync(echoFd, one);
      else resolve();
    });
  });
  fs.writeSync(echoFd, one);
  await within(done, 'the round trips', 20_000);
  clearInterval(timer);
  worker.postMessage('stop');
  t.is(rings, N);
  t.true(ticks > 0, `the 1 ms interval ran meanwhile (${ticks} times)`);
});

test('EventFd.watch: a watched eventfd nobody references is not collected (the watch keeps it alive)', async (t) => {
  // Without a strong reference from the watch, gc() would finalize the
  // object, close the fd and end the watch silently mid-stream.
  const script = `
    const b = require(${JSON.stringify(INDEX)});
    const fs = require('fs');
    let got = 0;
    const fd = (() => { const e = new b.EventFd(); e.watch((c) => { got += c; }); return e.fd; })();
    const one = Buffer.alloc(8);
    one.writeBigUInt64LE(1n);
    // Twenty rings, a collection before each; each ring waits (bounded)
    // until the watch has delivered the one before.
    const deadline = Date.now() + 10000;
    let i = 0;
    const step = () => {
      if (got < i && Date.now() < deadline) return setTimeout(step, 1);
      global.gc();
      if (got === i && i < 20) {
        i++;
        fs.writeSync(fd, one);
        setTimeout(step, 1);
      } else {
        console.log(JSON.stringify({ got }));
        process.exit(0);
      }
    };
    step();
  `;
  const p = LineProcess.spawn(process.execPath, ['--expose-gc', '-e', script]);
  t.context.cleanups.push(() => p.stop());
  await within(p.exited, 'the child to exit');
  t.deepEqual(p.exit, { code: 0, signal: null }, p.stderr);
  t.deepEqual(p.lines.map((l) => JSON.parse(l)), [{ got: 20 }]);
});

test('signalFd rings an open EventFd by number and refuses any other fd (closed, reused, not an EventFd)', (t) => {
  const e = own(t, new EventFd());
  signalFd(e.fd);
  signalFd(e.fd, 4);
  t.is(e.drain(), 5);
  const fd = e.fd;
  e.close();
  t.throws(() => signalFd(fd), { code: 'EBADF', message: /^EBADF: .* is not an open EventFd/ });
  // The number reused by something else is still refused.
  const other = fs.openSync(path.join(t.context.dir, 'victim'), 'w');
  try {
    t.throws(() => signalFd(other), { code: 'EBADF', message: /^EBADF/ });
    t.is(fs.fstatSync(other).size, 0, 'nothing written to the file');
  } finally {
    fs.closeSync(other);
  }
  t.throws(() => signalFd(0), { code: 'EBADF', message: /^EBADF/ });
  t.throws(() => (signalFd as (x?: unknown) => void)('x'), { code: 'EBADF', message: /^EBADF/ });
  // An adopted eventfd (a number received over a socket) is rung the same way.
  const { server, client } = pair(t);
  const a = own(t, new EventFd());
  server.send(1, a.fd);
  const m = client.recv()!;
  const b = own(t, EventFd.adopt(m.fd));
  signalFd(b.fd, 2);
  t.is(a.drain(), 2);
});

test('groupId looks a group up in the system group database: its id, or null when there is none', (t) => {
  // The primary group of this process, by the name the database gives it.
  const primary = process.getgid!();
  const line = fs
    .readFileSync('/etc/group', 'utf8')
    .split('\n')
    .map((l) => l.split(':'))
    .find((f) => f.length >= 3 && Number(f[2]) === primary);
  if (line) t.is(groupId(line[0]), primary);
  t.is(groupId('no-such-group-famez'), null);
  t.is(groupId(''), null);
});

test('binding errors carry their code in err.code; errorCode and errorText read it', (t) => {
  const e = new EventFd();
  e.close();
  const err = t.throws(() => e.signal(), { code: 'EBADF' });
  t.is(errorCode(err), 'EBADF');
  t.is(errorText(err), 'eventfd is closed');
  t.is(err?.message, 'EBADF: eventfd is closed', 'the message keeps the code in front, as Node\'s fs errors do');
  t.is(errorCode(new Error('EBADF: not from the binding')), '');
  t.is(errorText(new Error('plain')), 'plain');
});

test("native errors read as sentences: the OS's words without Rust's '(os error N)'", (t) => {
  const missing = path.join(t.context.dir, 'no-such-dir');
  const cases: Array<[string, () => unknown, string, RegExp]> = [
    ['connect', () => UnixStream.connect(path.join(missing, 'sock')), 'ENOENT', /^ENOENT: connect .*no-such-dir\/sock: No such file or directory$/],
    ['listen', () => UnixListener.listen(path.join(missing, 'sock')), 'ENOENT', /^ENOENT: listen on .*: No such file or directory$/],
    ['shared memory', () => SharedMemory.create({ kind: 'file', name: path.join(missing, 'shm'), size: 4096 }), 'ENOENT', /^ENOENT: .*No such file or directory$/],
    ['pid file', () => PidFile.create(path.join(missing, 'pid')), 'ENOENT', /^ENOENT: .*No such file or directory$/],
    ['bad fd', () => EventFd.adopt(999_999), 'EBADF', /^EBADF: .*Bad file descriptor$/],
  ];
  for (const [what, call, code, text] of cases) {
    const err = t.throws(call, undefined, what);
    t.is(errorCode(err), code, what);
    t.regex(err?.message ?? '', text, what);
    t.notRegex(err?.message ?? '', /os error/, what);
  }
  // A send on a socket whose other end is gone.
  const sock = path.join(t.context.dir, 'sock');
  const listener = own(t, UnixListener.listen(sock));
  const a = own(t, UnixStream.connect(sock));
  const b = listener.accept();
  t.truthy(b);
  b?.close();
  const err = t.throws(() => {
    for (let i = 0; i < 100; i++) a.trySend(i);
  });
  t.is(errorCode(err), 'EPIPE');
  t.is(err?.message, 'EPIPE: send: Broken pipe');
});

test('EventFd.watch: a throwing callback surfaces as uncaughtException and the watch keeps working', async (t) => {
  const script = `
    const b = require(${JSON.stringify(INDEX)});
    const e = new b.EventFd();
    let caught = 0;
    process.on('uncaughtException', (err) => {
      console.log(JSON.stringify({ caught: err.message }));
      if (++caught === 1) e.signal(2); else e.close();
    });
    e.watch((c) => { console.log(JSON.stringify({ count: c })); throw new Error('boom' + c); });
    e.signal(3);
  `;
  const p = LineProcess.spawn(process.execPath, ['-e', script]);
  t.context.cleanups.push(() => p.stop());
  await within(p.exited, 'the child to exit');
  t.deepEqual(p.exit, { code: 0, signal: null }, p.stderr);
  t.deepEqual(
    p.lines.map((l) => JSON.parse(l)),
    [{ count: 3 }, { caught: 'boom3' }, { count: 2 }, { caught: 'boom2' }],
  );
});

test('EventFd.spin: a callback that throws while busy polling surfaces as uncaughtException and the watch keeps working', async (t) => {
  // The second ring is read in the spin (the first callback rings it).
  const script = `
    const b = require(${JSON.stringify(INDEX)});
    const e = new b.EventFd();
    e.spin(1000000);
    let caught = 0;
    process.on('uncaughtException', (err) => {
      console.log(JSON.stringify({ caught: err.message }));
      if (++caught === 1) e.signal(5); else e.close();
    });
    e.watch((c) => {
      console.log(JSON.stringify({ count: c }));
      if (c === 3) e.signal(2);
      else throw new Error('boom' + c);
    });
    e.signal(3);
  `;
  const p = LineProcess.spawn(process.execPath, ['-e', script]);
  t.context.cleanups.push(() => p.stop());
  await within(p.exited, 'the child to exit');
  t.deepEqual(p.exit, { code: 0, signal: null }, p.stderr);
  t.deepEqual(
    p.lines.map((l) => JSON.parse(l)),
    [{ count: 3 }, { count: 2 }, { caught: 'boom2' }, { count: 5 }, { caught: 'boom5' }],
  );
});

test('EventFd.spin: promise jobs and nextTick callbacks of a callback run before the next ring is delivered, as after any callback, in the same async context', async (t) => {
  const { executionAsyncId } = await import('node:async_hooks');
  const e = own(t, new EventFd());
  e.spin(1_000_000);
  const seen: string[] = [];
  const ids: number[] = [];
  let rings = 0;
  e.watch(() => {
    ids.push(executionAsyncId());
    const n = ++rings;
    seen.push(`ring ${n}`);
    void Promise.resolve().then(() => seen.push(`job ${n}`));
    process.nextTick(() => seen.push(`tick ${n}`));
    if (n < 3) e.signal();
  });
  e.signal();
  await waitFor(() => seen.length === 9, 'three rings with their jobs and ticks');
  for (const n of [1, 2]) {
    const next = seen.indexOf(`ring ${n + 1}`);
    t.true(seen.indexOf(`job ${n}`) < next && seen.indexOf(`tick ${n}`) < next, seen.join(', '));
  }
  t.true(ids[0] > 0 && ids.every((id) => id === ids[0]), `one async context for every call: ${ids.join(', ')}`);
});

test('EventFd.watch: without a handler a throwing callback exits the process like any uncaught error (no abort)', async (t) => {
  const script = `
    const b = require(${JSON.stringify(INDEX)});
    const e = new b.EventFd();
    e.watch(() => { throw new Error('kaboom-from-watch'); });
    e.signal();
  `;
  const p = LineProcess.spawn(process.execPath, ['-e', script]);
  t.context.cleanups.push(() => p.stop());
  await within(p.exited, 'the child to exit');
  t.is(p.exit?.signal, null, `no signal (not an abort): ${p.stderr}`);
  t.is(p.exit?.code, 1);
  t.regex(p.stderr, /kaboom-from-watch/);
});

test('EventFd.ref(false): an unref\'d watch does not keep the process alive; a ref\'d one does', async (t) => {
  const unref = LineProcess.spawn(process.execPath, [
    '-e',
    `const b = require(${JSON.stringify(INDEX)}); const e = new b.EventFd(); e.watch(() => {}); e.ref(false); console.log('armed');`,
  ]);
  t.context.cleanups.push(() => unref.stop());
  await within(unref.exited, 'the unref\'d process to exit by itself');
  t.deepEqual(unref.exit, { code: 0, signal: null });
  // The ref'd watch must outlive an unref'd timer that rings it.
  const kept = LineProcess.spawn(process.execPath, [
    '-e',
    `const b = require(${JSON.stringify(INDEX)}); const e = new b.EventFd();
     e.watch((c) => { console.log('rang ' + c); e.close(); });
     setTimeout(() => e.signal(), 50).unref();`,
  ]);
  t.context.cleanups.push(() => kept.stop());
  await within(kept.exited, 'the ref\'d process to exit after its ring');
  t.deepEqual(kept.lines, ['rang 1'], kept.stderr);
});

test('teardown: a process exiting with live unref\'d watches on every kind of handle exits cleanly (no crash in env cleanup)', async (t) => {
  const sock = path.join(t.context.dir, 'teardown');
  const script = `
    const b = require(${JSON.stringify(INDEX)});
    const l = b.UnixListener.listen(${JSON.stringify(sock)}); l.watch(() => {}); l.ref(false);
    const c = b.UnixStream.connect(${JSON.stringify(sock)}); c.watch(() => {}); c.ref(false);
    const s = l.accept(); s.watch(() => {}); s.ref(false);
    const e = new b.EventFd(); e.watch(() => {}); e.ref(false);
    console.log('armed');
  `;
  const p = LineProcess.spawn(process.execPath, ['-e', script]);
  t.context.cleanups.push(() => p.stop());
  await within(p.exited, 'the child to exit');
  t.deepEqual(p.exit, { code: 0, signal: null }, p.stderr);
  t.deepEqual(p.lines, ['armed']);
});

test('teardown: terminating a worker thread with live watches exits cleanly', async (t) => {
  const script = `
    const { Worker } = require('node:worker_threads');
    const w = new Worker(\`
      const b = require(${JSON.stringify(INDEX)});
      const e = new b.EventFd(); e.watch(() => {});
      const f = new b.EventFd(); f.watch(() => {}); f.signal();
      require('node:worker_threads').parentPort.postMessage('armed');
    \`, { eval: true });
    w.on('message', (m) => { console.log(m); w.terminate().then(() => console.log('terminated')); });
  `;
  const p = LineProcess.spawn(process.execPath, ['-e', script]);
  t.context.cleanups.push(() => p.stop());
  await within(p.exited, 'the child to exit');
  t.deepEqual(p.exit, { code: 0, signal: null }, p.stderr);
  t.deepEqual(p.lines, ['armed', 'terminated']);
});

// ---- SharedMemory ----------------------------------------------------------

test('SharedMemory memfd: size, fd, one ArrayBuffer, mapped once', (t) => {
  const label = unique('m');
  const s = own(t, SharedMemory.create({ kind: 'memfd', name: label, size: 1 << 16 }));
  t.true(s.fd >= 0);
  t.is(s.size, 1 << 16);
  t.is(fdSize(s.fd), 1 << 16);
  t.true(fs.readlinkSync(`/proc/self/fd/${s.fd}`).startsWith(`/memfd:${label}`));
  t.truthy(parseInt(fdinfo(s.fd).flags, 8) & O_CLOEXEC);
  t.is(mapsOf(label), 0, 'not mapped before first use');
  const buf = s.buffer as ArrayBuffer;
  t.true(buf instanceof ArrayBuffer);
  t.is(buf.byteLength, 1 << 16);
  t.is(s.buffer, buf, 'the same ArrayBuffer every time');
  t.is(s.buffer, buf);
  t.is(mapsOf(label), 1, 'one mapping');
  t.true(new Uint8Array(buf).every((b) => b === 0), 'a new object is zeroed');
});

test('SharedMemory posix: /dev/shm file with the exact mode (umask ignored) and size; unlink removes the name only', (t) => {
  const name = unique('famez-native');
  const file = `/dev/shm/${name}`;
  t.context.cleanups.push(() => fs.rmSync(file, { force: true }));
  const old = process.umask(0o077);
  let s: SharedMemory;
  try {
    s = own(t, SharedMemory.create({ kind: 'posix', name, size: 8192, mode: 0o664 }));
  } finally {
    process.umask(old);
  }
  const st = fs.statSync(file);
  t.is(st.mode & 0o7777, 0o664);
  t.is(st.size, 8192);
  t.is(s.size, 8192);
  const v = new Uint8Array(s.buffer as ArrayBuffer);
  v[10] = 0x5a;
  t.is(fs.readFileSync(file)[10], 0x5a, 'the mapping is the /dev/shm object');
  s.unlink();
  t.false(fs.existsSync(file));
  v[11] = 1;
  t.is(v[11], 1, 'the mapping stays valid after unlink');
  t.throws(() => s.unlink(), { code: 'ENOENT', message: /ENOENT/ });
});

test('SharedMemory posix: default mode 0600; a leading slash in the name is accepted; an existing object in use is refused, never resized, and replaced once stale', (t) => {
  const name = unique('famez-native');
  const file = `/dev/shm/${name}`;
  t.context.cleanups.push(() => fs.rmSync(file, { force: true }));
  const a = SharedMemory.create({ kind: 'posix', name: `/${name}`, size: 4096 });
  t.context.cleanups.push(() => a.close());
  t.is(fs.statSync(file).mode & 0o7777, 0o600);
  const va = new Uint8Array(a.buffer as ArrayBuffer);
  va[0] = 9;
  t.throws(() => SharedMemory.create({ kind: 'posix', name, size: 16384, mode: 0o640 }), {
    code: 'EADDRINUSE',
    message: new RegExp(`^EADDRINUSE: shared memory ${file} is in use by a running famez server \\(pid ${process.pid}\\)`),
  });
  t.is(fs.statSync(file).size, 4096, 'not resized');
  t.is(fs.statSync(file).mode & 0o7777, 0o600, 'not chmod-ed');
  // Closed (as by a server that died): a leftover, replaced by a new object.
  a.close();
  const b = own(t, SharedMemory.create({ kind: 'posix', name, size: 16384, mode: 0o640 }));
  t.true(b.replacedStale);
  t.is(fs.statSync(file).size, 16384);
  t.is(fs.statSync(file).mode & 0o7777, 0o640);
  t.is(new Uint8Array(b.buffer as ArrayBuffer)[0], 0, 'a new object');
});

test('SharedMemory file: created with mode and size in a directory; a missing directory is ENOENT', (t) => {
  const file = path.join(t.context.dir, 'shm');
  const s = own(t, SharedMemory.create({ kind: 'file', name: file, size: 1 << 20, mode: 0o640 }));
  const st = fs.statSync(file);
  t.is(st.mode & 0o7777, 0o640);
  t.is(st.size, 1 << 20);
  new Uint8Array(s.buffer as ArrayBuffer).set([1, 2, 3], 100);
  t.deepEqual([...fs.readFileSync(file).subarray(100, 103)], [1, 2, 3]);
  s.unlink();
  t.false(fs.existsSync(file));
  t.throws(() => SharedMemory.create({ kind: 'file', name: path.join(t.context.dir, 'nope', 'x'), size: 4096 }), { code: 'ENOENT', message: /ENOENT/ });
});

test('SharedMemory: invalid kinds and sizes are refused; a 0-byte object cannot be mapped', (t) => {
  t.throws(() => SharedMemory.create({ kind: 'bogus', name: 'x', size: 4096 }), { code: 'EINVAL', message: /unknown shared-memory kind/ });
  t.throws(() => SharedMemory.create({ kind: 'memfd', name: 'x', size: -1 }), { code: 'EINVAL', message: /invalid size/ });
  t.throws(() => SharedMemory.create({ kind: 'memfd', name: 'x', size: 1.5 }), { code: 'EINVAL', message: /invalid size/ });
  t.throws(() => SharedMemory.create({ kind: 'memfd', name: 'x', size: Number.NaN }), { code: 'EINVAL', message: /invalid size/ });
  const z = own(t, SharedMemory.create({ kind: 'memfd', name: 'zero', size: 0 }));
  t.throws(() => z.buffer, { message: /cannot map 0 bytes/ });
  t.throws(() => SharedMemory.fromFd(-1), { code: 'EBADF', message: /EBADF/ });
});

test('SharedMemory: writes through one mapping are visible through another (reopened fd), both ways', (t) => {
  const label = unique('x');
  const a = own(t, SharedMemory.create({ kind: 'memfd', name: label, size: 1 << 16 }));
  const fd2 = fs.openSync(`/proc/self/fd/${a.fd}`, 'r+');
  const b = own(t, SharedMemory.fromFd(fd2));
  t.is(b.fd, fd2);
  t.is(b.size, 1 << 16);
  const va = new Uint8Array(a.buffer as ArrayBuffer);
  const vb = new Uint8Array(b.buffer as ArrayBuffer);
  t.not(a.buffer, b.buffer, 'two mappings, two buffers');
  t.is(mapsOf(label), 2);
  va.set([1, 2, 3, 4], 4096);
  t.deepEqual([...vb.subarray(4096, 4100)], [1, 2, 3, 4]);
  new DataView(b.buffer as ArrayBuffer).setBigUint64(65528, 0x0123456789abcdefn, true);
  t.is(new DataView(a.buffer as ArrayBuffer).getBigUint64(65528, true), 0x0123456789abcdefn);
  // Closing one mapping leaves the other (and the data) intact.
  a.close();
  t.is(vb[4097], 2);
  t.is(mapsOf(label), 1);
});

test('SharedMemory: the fd sent over a UNIX socket maps the same memory (fromFd)', (t) => {
  const a = own(t, SharedMemory.create({ kind: 'memfd', name: unique('sent'), size: 1 << 20 }));
  const { server, client } = pair(t);
  t.is(server.send(-1, a.fd), 0);
  t.true(isOpen(a.fd), 'the sender keeps its fd');
  const m = client.recv();
  t.truthy(m);
  t.is(m!.value, -1);
  t.true(m!.fd >= 0 && m!.fd !== a.fd);
  t.is(fdSize(m!.fd), 1 << 20);
  const b = own(t, SharedMemory.fromFd(m!.fd));
  t.is(b.size, 1 << 20);
  new Uint8Array(a.buffer as ArrayBuffer)[12345] = 77;
  t.is(new Uint8Array(b.buffer as ArrayBuffer)[12345], 77);
  new Uint8Array(b.buffer as ArrayBuffer)[(1 << 20) - 1] = 88;
  t.is(new Uint8Array(a.buffer as ArrayBuffer)[(1 << 20) - 1], 88);
});

test('SharedMemory.close detaches the buffer (byteLength 0), unmaps, closes the fd, and is idempotent', (t) => {
  const label = unique('c');
  const s = SharedMemory.create({ kind: 'memfd', name: label, size: 1 << 16 });
  const buf = s.buffer as ArrayBuffer;
  const view = new Uint8Array(buf);
  const dv = new DataView(buf);
  view[0] = 1;
  t.is(mapsOf(label), 1);
  s.close();
  t.is(buf.byteLength, 0);
  t.is(view.length, 0);
  t.is(view[0] as number | undefined, undefined);
  t.throws(() => dv.getUint8(0));
  t.is(mapsOf(label), 0, 'unmapped at once, not at GC');
  t.false(fdTargets().some((l) => l.startsWith(`/memfd:${label} `)), 'fd closed');
  t.is(s.fd, -1);
  t.is(s.size, 0);
  t.notThrows(() => s.close());
  t.throws(() => s.buffer, { code: 'EBADF', message: /EBADF/ });
  t.throws(() => s.unlink(), { code: 'EBADF', message: /EBADF/ });
  // Closing an object that was never mapped is fine too.
  const u = SharedMemory.create({ kind: 'memfd', name: label, size: 4096 });
  u.close();
  u.close();
  t.is(u.fd, -1);
});

test('SharedMemory: 4 GiB maps; past what the runtime allows as one ArrayBuffer is an error, not a crash', (t) => {
  const label = unique('big');
  const big = own(t, SharedMemory.create({ kind: 'memfd', name: label, size: 2 ** 32 }));
  const buf = big.buffer as ArrayBuffer;
  t.is(buf.byteLength, 2 ** 32);
  new Uint8Array(buf)[2 ** 32 - 1] = 3;
  t.is(new Uint8Array(buf)[2 ** 32 - 1], 3);
  big.close();
  const huge = own(t, SharedMemory.create({ kind: 'memfd', name: label, size: 2 ** 33 }));
  t.is(huge.size, 2 ** 33);
  let err: unknown = null;
  try {
    const b = huge.buffer as ArrayBuffer;
    t.is(b.byteLength, 2 ** 33, 'a runtime that allows 8 GiB buffers maps it whole');
  } catch (e) {
    err = e;
  }
  if (err) t.regex(String(err), /larger than|ArrayBuffer/);
  huge.close();
  t.is(mapsOf(label), 0, 'nothing left mapped');
});

// ---- UnixListener / UnixStream ---------------------------------------------

test('UnixStream: values round-trip without fds; recv is null when empty', (t) => {
  const { listener, server, client } = pair(t);
  t.is(listener.accept(), null, 'no second pending connection');
  t.is(client.recv(), null);
  t.is(server.recv(), null);
  const values = [0, 1, -1, 65535, 65536, -2, 2 ** 40, -(2 ** 40), Number.MAX_SAFE_INTEGER, Number.MIN_SAFE_INTEGER];
  for (const v of values) t.is(server.send(v), 0);
  t.is(server.queued, 0);
  for (const v of values) t.deepEqual(client.recv(), { value: v, fd: -1 });
  t.is(client.recv(), null);
  // Either direction works.
  client.send(42);
  t.deepEqual(server.recv(), { value: 42, fd: -1 });
});

test('UnixStream: an fd sent with a message arrives as a new, close-on-exec fd for the same eventfd', (t) => {
  const { server, client } = pair(t);
  const e = own(t, new EventFd());
  server.send(7, e.fd);
  server.send(8);
  server.send(9, e.fd);
  const m1 = client.recv()!;
  const m2 = client.recv()!;
  const m3 = client.recv()!;
  t.is(m1.value, 7);
  t.true(m1.fd >= 0 && m1.fd !== e.fd);
  t.deepEqual(m2, { value: 8, fd: -1 });
  t.is(m3.value, 9);
  t.true(m3.fd >= 0 && m3.fd !== m1.fd);
  for (const fd of [m1.fd, m3.fd]) {
    t.is(fs.readlinkSync(`/proc/self/fd/${fd}`), 'anon_inode:[eventfd]');
    t.truthy(parseInt(fdinfo(fd).flags, 8) & O_CLOEXEC, 'received with MSG_CMSG_CLOEXEC');
    if (fdinfo(e.fd)['eventfd-id'] !== undefined) t.is(fdinfo(fd)['eventfd-id'], fdinfo(e.fd)['eventfd-id'], 'the same eventfd');
  }
  // Adopt one and ring it: the original sees the count; and back.
  const r = own(t, EventFd.adopt(m1.fd));
  r.signal(5);
  t.is(e.drain(), 5);
  e.signal(2);
  t.is(r.drain(), 2);
  const id = fdinfo(e.fd)['eventfd-id'];
  const before = eventfdIds().filter((x) => x === id).length;
  closeFd(m3.fd);
  if (id !== undefined) t.is(eventfdIds().filter((x) => x === id).length, before - 1, 'closeFd closed the received fd');
  t.notThrows(() => closeFd(-1));
});

test('UnixStream: EOF is reported by recv (throws) and by watch (null, -1, "closed")', async (t) => {
  const a = pair(t);
  a.server.send(1);
  a.server.close();
  t.true(a.server.closed);
  t.is(a.server.fd, -1);
  t.deepEqual(a.client.recv(), { value: 1, fd: -1 }, 'data sent before the close is still read');
  t.throws(() => a.client.recv(), { code: 'EOF', message: /EOF/ });

  const b = pair(t);
  const e = own(t, new EventFd());
  const got: Array<[number | null, number, string | undefined]> = [];
  b.client.watch((value, fd, reason) => got.push([value, fd, reason]));
  b.server.send(1);
  b.server.send(2, e.fd);
  b.server.close();
  await waitFor(() => got.some((g) => g[0] === null), 'the end of the connection');
  t.is(got.length, 3);
  t.deepEqual(got[0], [1, -1, undefined]);
  t.is(got[1][0], 2);
  t.true(got[1][1] >= 0);
  closeFd(got[1][1]);
  t.deepEqual(got[2], [null, -1, 'closed']);
});

test('UnixStream: send after close is EBADF; send to a closed peer fails (EPIPE) without killing the process', (t) => {
  const { server, client } = pair(t);
  client.close();
  t.notThrows(() => client.close());
  t.throws(() => client.send(1), { code: 'EBADF', message: /EBADF/ });
  t.throws(() => client.recv(), { code: 'EBADF', message: /EBADF/ });
  t.throws(() => server.send(1), { message: /EPIPE|ECONNRESET/ });
});

test('UnixStream: a full socket buffer queues messages (with dup\'d fds) and flushes them in order', async (t) => {
  const { server, client } = pair(t);
  const e = own(t, new EventFd());
  let sent = 0;
  let queued = 0;
  while (queued === 0 && sent < 1_000_000) queued = server.send(sent++);
  t.true(queued > 0, 'the buffer filled up');
  t.is(server.queued, 1);
  // Ten more with an fd, which must survive even if the sender closes its copy.
  const tmp = new EventFd();
  for (let i = 0; i < 10; i++) {
    queued = server.send(sent++, tmp.fd);
    t.is(queued, i + 2);
  }
  tmp.close();
  server.send(sent++);
  t.is(server.queued, 12);
  const values: number[] = [];
  const fds: number[] = [];
  let end: string | undefined;
  client.watch((v, fd, reason) => {
    if (v === null) end = reason;
    else {
      values.push(v);
      if (fd >= 0) fds.push(fd);
    }
  });
  await waitFor(() => values.length === sent, `all ${sent} messages`, 30_000);
  t.is(end, undefined);
  t.true(values.every((v, i) => v === i), 'in order, none lost or duplicated');
  t.is(fds.length, 10);
  // The queued fds are live eventfds (the dup, not the closed original).
  const r = EventFd.adopt(fds[0]);
  r.signal();
  t.is(r.drain(), 1);
  r.close();
  for (const fd of fds.slice(1)) closeFd(fd);
  await waitFor(() => server.queued === 0, 'the outbox to drain');
  void e;
});

test('UnixStream.trySend: false on a full socket, nothing queued, no fd duplicated; onDrain says when to go on', async (t) => {
  const { server, client } = pair(t);
  const e = own(t, new EventFd());
  const fdsBefore = fs.readdirSync('/proc/self/fd').length;
  let sent = 0;
  let drains = 0;
  server.onDrain(() => drains++);
  // Fill the socket with fd-carrying messages until it refuses one.
  while (sent < 1_000_000 && server.trySend(sent, e.fd)) sent++;
  t.true(sent > 0 && sent < 1_000_000, `${sent} sent before the socket filled up`);
  t.is(server.queued, 0, 'nothing queued natively');
  t.false(server.trySend(sent, e.fd), 'still full');
  t.is(fs.readdirSync('/proc/self/fd').length, fdsBefore, 'no fd duplicated by the sender');
  // The reader takes everything; the writer goes on at each drain.
  const values: number[] = [];
  client.watch((v, fd) => {
    if (v !== null) values.push(v);
    if (fd >= 0) closeFd(fd);
  });
  const total = sent + 5000;
  const pump = () => {
    while (sent < total && server.trySend(sent, sent % 2 ? e.fd : undefined)) sent++;
  };
  server.onDrain(() => {
    drains++;
    pump();
  });
  await waitFor(() => values.length === total, `all ${total} messages`, 30_000);
  t.true(drains >= 1, `${drains} drains`);
  t.true(values.every((v, i) => v === i), 'in order, none lost or duplicated');
  server.onDrain(null);
  t.throws(() => server.onDrain(42 as unknown as () => void), { code: 'EINVAL', message: /function or null/ });
  client.close();
  t.throws(() => server.trySend(0), { message: /EPIPE|ECONNRESET/ });
});

test('UnixListener: watch fires when a connection is pending; connect errors are reported', async (t) => {
  const p = path.join(t.context.dir, 'l');
  const l = own(t, UnixListener.listen(p));
  t.true(l.fd >= 0);
  let fired = 0;
  const accepted: UnixStream[] = [];
  l.watch(() => {
    fired++;
    for (let s = l.accept(); s; s = l.accept()) accepted.push(own(t, s));
  });
  const c1 = own(t, UnixStream.connect(p));
  const c2 = own(t, UnixStream.connect(p));
  await waitFor(() => accepted.length === 2, 'two accepted connections');
  t.true(fired >= 1);
  accepted[0].send(11);
  accepted[1].send(22);
  t.deepEqual([c1.recv()?.value, c2.recv()?.value].sort(), [11, 22]);
  t.throws(() => UnixListener.listen(p), { code: 'EADDRINUSE', message: /EADDRINUSE/ });
  t.throws(() => UnixStream.connect(path.join(t.context.dir, 'missing')), { code: 'ENOENT', message: /ENOENT/ });
  l.close();
  t.notThrows(() => l.close());
  t.is(l.fd, -1);
  t.throws(() => l.accept(), { code: 'EBADF', message: /EBADF/ });
  t.throws(() => UnixStream.connect(p), { code: 'ECONNREFUSED', message: /ECONNREFUSED/ }, 'the socket file remains, nobody listens');
});

test('socketState: free, live (this pid), stale after close, not-a-socket', (t) => {
  const p = path.join(t.context.dir, 'state');
  t.deepEqual({ ...socketState(p) }, { state: 'free' });
  const l = UnixListener.listen(p);
  const live = socketState(p);
  t.is(live.state, 'live');
  t.is(live.pid, process.pid);
  t.is(socketState(path.relative(process.cwd(), p)).state, 'live', 'a relative path works too');
  l.close();
  t.is(socketState(p).state, 'stale');
  t.is(socketState(p).pid, undefined);
  fs.unlinkSync(p);
  t.is(socketState(p).state, 'free');
  fs.writeFileSync(p, 'x');
  t.is(socketState(p).state, 'not-a-socket');
  t.is(socketState(t.context.dir).state, 'not-a-socket');
  fs.unlinkSync(p);
  fs.symlinkSync('/nonexistent-target', p);
  t.is(socketState(p).state, 'not-a-socket', 'a dangling symlink is not a socket to replace');
});

test('socketState: live with the pid of another process that listens; stale when it dies', async (t) => {
  const p = path.join(t.context.dir, 'py');
  const py = LineProcess.spawn('python3', [
    '-c',
    'import socket,sys\ns=socket.socket(socket.AF_UNIX)\ns.bind(sys.argv[1])\ns.listen()\nprint("ok",flush=True)\nsys.stdin.read()',
    p,
  ]);
  t.context.cleanups.push(() => py.stop());
  await py.waitLine((l) => l === 'ok', 'python to listen');
  t.deepEqual({ ...socketState(p) }, { state: 'live', pid: py.pid });
  py.child.kill('SIGKILL');
  await within(py.exited, 'python to die');
  await waitFor(() => socketState(p).state === 'stale', 'the socket to become stale');
  t.pass();
});
