// `famez serve --link-listen / --link`: real famez processes joined by
// libfabric (tcp, 127.0.0.1), real peers on each; GET /system on one shows
// the link and the other switch's peers by GCID, checked against
// schemas/system.json. Without libfabric, --link is one line naming the
// fix; bad addresses are usage errors. The link tests skip, saying why,
// where libfabric is not installed.
import * as fs from 'node:fs';
import * as path from 'node:path';

import anyTest, { type TestFn } from 'ava';
import { Ajv } from 'ajv';

import { FabricClient } from '../ts/fabric/client.js';
import { Link, libfabricAvailable } from '../ts/link/ofi.js';
import { pieces } from '../ts/link/carry.js';
import { encode as encodeFrame } from '../ts/link/frame.js';
import type { SystemView } from '../ts/observe/api-types.js';
import { Scratch, type, type FamezProcess } from './helpers/serve.js';
import { LineProcess, spawnChild, waitFor } from './helpers/wait.js';
import { formatGcid } from '../ts/fabric/remote.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const test = anyTest as TestFn<Scratch>;
const WAIT_MS = 20_000;
const SINK = path.join(__dirname, 'helpers', 'ring-sink.ts');
const probe = libfabricAvailable();
const linkTest = probe.available ? test : test.skip;
const skipped = probe.available ? '' : ` (skipped: ${probe.error ?? 'libfabric is not available'})`;

test.beforeEach((t) => {
  t.context = new Scratch();
});
test.afterEach.always(async (t) => {
  await t.context.cleanup();
});

const ajv = new Ajv({ allErrors: true, strict: true, validateFormats: false });
const SCHEMA_DIR = path.join(__dirname, '..', 'schemas');
for (const f of fs.readdirSync(SCHEMA_DIR)) ajv.addSchema(JSON.parse(fs.readFileSync(path.join(SCHEMA_DIR, f), 'utf8')) as object);

interface Switch {
  sock: string;
  url: string;
  proc: FamezProcess;
  /** The --link-listen address it bound, when it listens. */
  linkAddress: string | null;
}

/** Heartbeats for the tests that are not about a link's failure: every
 * test of this file runs at once, some thirty processes on two CPUs, and a
 * loop late by 300 ms would take a sound link for dead (the default, 100
 * ms, is for a host that answers in time: the failure tests keep it). */
const CALM_HEARTBEAT = ['--link-heartbeat', '1000'];
const FAILURE_HEARTBEAT = ['--link-heartbeat', '100'];

async function serve(t: { context: Scratch }, args: string[]): Promise<Switch> {
  const sock = path.join(t.context.dir(), 'sock');
  const linked = args.includes('--link') || args.includes('--link-listen');
  const heartbeat = linked && !args.includes('--link-heartbeat') ? CALM_HEARTBEAT : [];
  const proc = await t.context.serve(['-S', sock, '--memfd', '--max-peers', '4', '--http', '127.0.0.1:0', ...heartbeat, ...args]);
  const url = (await proc.waitFor(/web view and API at (http:\/\/127\.0\.0\.1:\d+\/)/, WAIT_MS))[1];
  const listening = args.includes('--link-listen') ? (await proc.waitFor(/listening on (127\.0\.0\.1:\d+)/, WAIT_MS))[1] : null;
  return { sock, url, proc, linkAddress: listening };
}

async function system(s: Switch): Promise<SystemView> {
  const get = async () => (await (await fetch(`${s.url}system`, { signal: AbortSignal.timeout(WAIT_MS) })).json()) as SystemView;
  try {
    return await get();
  } catch (e) {
    // A kept-alive connection the server closed as idle (after 5 s) while
    // this loaded process was late to drop it: the GET goes again on a new
    // one. Anything else (the server gone: ECONNREFUSED) fails the test.
    const code = ((e as Error).cause as { code?: string } | undefined)?.code;
    if (code !== 'UND_ERR_SOCKET' && code !== 'ECONNRESET') throw new Error(`GET ${s.url}system: ${(e as Error).message} (${code ?? String((e as Error).cause)})`, { cause: e });
    return get();
  }
}

linkTest(`two famez serve joined by a link: /system on each lists the link and the other's peers by GCID${skipped}`, async (t) => {
  const a = await serve(t, ['--sid', '1', '--link-listen', '127.0.0.1:0']);
  const b = await serve(t, ['--sid', '2', '--link', a.linkAddress!]);
  const alpha = t.context.track(await FabricClient.connect(a.sock, { nodename: 'alpha' }));
  t.context.track(await FabricClient.connect(b.sock, { nodename: 'beta' }));
  const seen = await waitFor(async () => {
    const s = await system(b);
    return s.remoteNodes?.some((n) => n.nodename === 'alpha') ? s : null;
  }, 'b lists alpha', WAIT_MS);
  const v = ajv.getSchema('system.json')!;
  t.true(v(seen), ajv.errorsText(v.errors));
  t.is(seen.sid, 2);
  t.deepEqual(
    seen.remoteNodes!.map((n) => [n.gcid, n.nodename, n.cclass, n.hops, n.via]),
    [
      [`1:${alpha.id * 100}`, 'alpha', 'Debugger', 1, 1],
      ['1:500', 'Z-switch', 'FabricSwitch', 1, 1],
    ],
  );
  t.like(seen.switchLinks![0], { name: `out:${a.linkAddress!}`, direction: 'out', state: 'up', neighbour: 1, badFrames: 0 });
  const other = await waitFor(async () => {
    const s = await system(a);
    return s.remoteNodes?.some((n) => n.nodename === 'beta') ? s : null;
  }, 'a lists beta', WAIT_MS);
  t.like(other.switchLinks![0], { direction: 'in', state: 'up', neighbour: 2 });
  t.true(v(other), ajv.errorsText(v.errors));
  // alpha leaves: b hears of it.
  alpha.close();
  await waitFor(async () => !(await system(b)).remoteNodes?.some((n) => n.nodename === 'alpha'), 'alpha gone from b', WAIT_MS);
  t.pass();
});

linkTest(`a peer on one switch pings, messages and streams ring messages to a peer on another by SID:CID (one switch busy-polling)${skipped}`, async (t) => {
  const a = await serve(t, ['--sid', '1', '--link-listen', '127.0.0.1:0']);
  const b = await serve(t, ['--sid', '2', '--link', a.linkAddress!, '--busy-poll', '200']);
  const alpha = t.context.track(await FabricClient.connect(a.sock, { nodename: 'alpha' }));
  const beta = t.context.track(await FabricClient.connect(b.sock, { nodename: 'beta' }));
  t.is(alpha.gcid, 0x1000 + alpha.id * 100);
  const to = `2:${beta.id * 100}`;
  await waitFor(async () => (await system(a)).remoteNodes?.some((n) => n.nodename === 'beta'), 'a knows beta', WAIT_MS);
  // ping -> pong across, the reply matched by its GCID.
  const pong = await alpha.request(to, 'ping', { replyTimeoutMs: WAIT_MS });
  t.is(pong.gcid, beta.gcid);
  t.is(pong.from, alpha.serverId, 'delivered by the local switch');
  t.is(pong.message?.kind, 'pong');
  // A plain message, seen at the other end with the sender's GCID.
  const got = new Promise<{ gcid?: number; text: string }>((resolve) => beta.once('message', resolve));
  await alpha.send(to, 'hello across');
  const m = await got;
  t.deepEqual([m.gcid, m.text], [alpha.gcid, 'hello across']);
  // Ring messages of several sizes, in order, none lost or duplicated.
  const N = 2000;
  const seen: number[] = [];
  beta.on('data', ({ gcid, messages }) => {
    for (const b of messages) {
      if (gcid !== alpha.gcid) throw new Error(`ring message from ${String(gcid)}`);
      if (b.length !== 8 + ((b.readUInt32LE(0) * 37) % 1500)) throw new Error(`message ${b.readUInt32LE(0)} is ${b.length} bytes`);
      seen.push(b.readUInt32LE(0));
    }
  });
  const msgs = Array.from({ length: N }, (_, i) => {
    const b = Buffer.alloc(8 + ((i * 37) % 1500), i & 0xff);
    b.writeUInt32LE(i, 0);
    return b;
  });
  const out = async () => ((await (await fetch(`${b.url}api/v1/peers/${beta.id}`, { signal: AbortSignal.timeout(WAIT_MS) })).json()) as { counters: { messagesOut: number } }).counters.messagesOut;
  const before = await out();
  await alpha.sendRing(to, msgs, { timeoutMs: WAIT_MS });
  await waitFor(() => seen.length >= N, `${N} ring messages across (${seen.length} so far)`, 60_000);
  t.deepEqual(seen, msgs.map((_, i) => i));
  // Each reached beta's ring as one record, its pieces end to end (up to
  // four pieces each: piece by piece it would be some 2.6 N records).
  const records = (await out()) - before;
  t.true(records >= N && records <= N + 20, `${records} ring records for ${N} messages`);
});

linkTest(`famez client on one switch: who lists the other switch's peers, ping and send reach them by SID:CID and nodename@SID${skipped}`, async (t) => {
  const a = await serve(t, ['--sid', '1', '--link-listen', '127.0.0.1:0']);
  const b = await serve(t, ['--sid', '2', '--link', a.linkAddress!]);
  const alpha = t.context.track(await FabricClient.connect(a.sock, { nodename: 'alpha' }));
  // Its C-Class comes after its name (attributes follow the join).
  let last: SystemView['remoteNodes'];
  await waitFor(
    async () => (last = (await system(b)).remoteNodes)?.some((n) => n.nodename === 'alpha' && n.cclass === 'Debugger'),
    () => `b knows alpha, a Debugger: b knows ${JSON.stringify(last)}; a said:\n${a.proc.stdout.slice(-3000)}\nb said:\n${b.proc.stdout.slice(-3000)}`,
    WAIT_MS,
  );
  const c = t.context.client(['-S', b.sock, '--nodename', 'cli']);
  await c.waitFor(/fabric of 4 peers/, WAIT_MS);
  const heard = new Promise<{ gcid?: number; text: string }>((resolve) => alpha.on('message', (m) => m.text.startsWith('hi') && resolve(m)));
  type(c, 'who');
  await c.waitFor(new RegExp(`^1:${alpha.id * 100} alpha \\(Debugger, SID 1, 1 hop\\)$`, 'm'), WAIT_MS);
  type(c, `ping 1:${alpha.id * 100}`);
  await c.waitFor(new RegExp(`from 1:${alpha.id * 100}: pong`), WAIT_MS);
  type(c, 'send alpha@1 hi there');
  await c.waitFor(/sent to alpha@1: hi there/, WAIT_MS);
  const m = await heard;
  t.is(m.text, 'hi there');
  t.is(m.gcid! >> 12, 2);
  type(c, 'who --json');
  const line = await c.waitFor(/^\{"id".*"remote".*$/m, WAIT_MS);
  const who = JSON.parse(line[0]) as { remote: Array<{ gcid: string; nodename: string }> };
  t.true(who.remote.some((r) => r.gcid === `1:${alpha.id * 100}` && r.nodename === 'alpha'));
  type(c, 'ping nobody@1');
  await c.waitFor(/error: no peer named 'nobody' on SID 1/, WAIT_MS);
});

linkTest(`three switches in a line: the ends exchange messages through the middle${skipped}`, async (t) => {
  const a = await serve(t, ['--sid', '1', '--link-listen', '127.0.0.1:0']);
  const b = await serve(t, ['--sid', '2', '--link-listen', '127.0.0.1:0', '--link', a.linkAddress!]);
  const c = await serve(t, ['--sid', '3', '--link', b.linkAddress!]);
  const alpha = t.context.track(await FabricClient.connect(a.sock, { nodename: 'alpha' }));
  const gamma = t.context.track(await FabricClient.connect(c.sock, { nodename: 'gamma' }));
  const seen = await waitFor(async () => {
    const s = await system(a);
    return s.remoteNodes?.some((n) => n.nodename === 'gamma') ? s : null;
  }, 'a knows gamma', WAIT_MS);
  t.like(seen.remoteNodes!.find((n) => n.nodename === 'gamma'), { sid: 3, hops: 2, via: 2 });
  const pong = await alpha.request('gamma@3', 'ping', { replyTimeoutMs: WAIT_MS });
  t.deepEqual([pong.gcid, pong.message?.kind], [gamma.gcid, 'pong']);
  const N = 500;
  const got: number[] = [];
  alpha.on('data', ({ gcid, messages }) => {
    if (gcid === gamma.gcid) for (const m of messages) got.push(m.readUInt32LE(0));
  });
  const messages = Array.from({ length: N }, (_, i) => {
    const m = Buffer.alloc(600, i & 0xff);
    m.writeUInt32LE(i, 0);
    return m;
  });
  await gamma.sendRing(`1:${alpha.id * 100}`, messages, { timeoutMs: WAIT_MS });
  await waitFor(() => got.length >= N, `${N} ring messages 3 -> 1 (${got.length})`, 60_000);
  t.deepEqual(got, Array.from({ length: N }, (_, i) => i));
});

linkTest(`100,000 ring messages across to a consumer stopped mid-stream: none lost, duplicated or reordered, and another stream flows meanwhile${skipped}`, async (t) => {
  const a = await serve(t, ['--sid', '1', '--link-listen', '127.0.0.1:0']);
  const b = await serve(t, ['--sid', '2', '--link', a.linkAddress!]);
  const alpha = t.context.track(await FabricClient.connect(a.sock, { nodename: 'alpha' }));
  const other = t.context.track(await FabricClient.connect(a.sock, { nodename: 'other' }));
  const N = 100_000;
  const sink = (name: string, from: number, count: number) => {
    const p = new LineProcess(spawnChild(process.execPath, ['--import=tsx', SINK, b.sock, name, String(from), String(count)], { pdeathsig: true }), `ring-sink ${name}`);
    t.context.procs.push(p);
    return p;
  };
  const slow = sink('slow', alpha.gcid, N);
  const fast = sink('fast', other.gcid, 2000);
  const slowGcid = Number(JSON.parse((await slow.waitFor(/^\{"ready":\d+\}$/m, WAIT_MS))[0]).ready);
  const fastGcid = Number(JSON.parse((await fast.waitFor(/^\{"ready":\d+\}$/m, WAIT_MS))[0]).ready);
  await waitFor(async () => ((await system(a)).remoteNodes?.filter((n) => n.nodename === 'slow' || n.nodename === 'fast').length ?? 0) === 2, 'a knows both sinks', WAIT_MS);
  const message = (i: number) => {
    const m = Buffer.alloc(64, i & 0xff);
    m.writeUInt32LE(i, 0);
    return m;
  };
  const sending = alpha.sendRing(formatGcid(slowGcid), Array.from({ length: N }, (_, i) => message(i)), { timeoutMs: 60_000 });
  await slow.waitFor(/^\{"got":10000\}$/m, 60_000);
  process.kill(slow.child.pid!, 'SIGSTOP');
  try {
    // While it is stopped its own stream backs up; another peer's stream to
    // another consumer on the same switches and link goes through.
    await other.sendRing(formatGcid(fastGcid), Array.from({ length: 2000 }, (_, i) => message(i)), { timeoutMs: WAIT_MS });
    await fast.waitFor(/^\{"done":2000\}$/m, WAIT_MS);
    t.pass('the other stream went through while the consumer was stopped');
  } finally {
    process.kill(slow.child.pid!, 'SIGCONT');
  }
  await sending;
  await slow.waitFor(new RegExp(`^\\{"done":${N}\\}$`, 'm'), 120_000);
  const sys = await system(b);
  t.is(sys.switchLinks![0].badFrames, 0);
});

linkTest(`a switch SIGSTOPped past the heartbeats: the link goes down and comes back, and the stream across resumes exactly once, in order${skipped}`, async (t) => {
  const a = await serve(t, [...FAILURE_HEARTBEAT, '--sid', '1', '--link-listen', '127.0.0.1:0']);
  const b = await serve(t, [...FAILURE_HEARTBEAT, '--sid', '2', '--link', a.linkAddress!]);
  const alpha = t.context.track(await FabricClient.connect(a.sock, { nodename: 'alpha' }));
  const N = 50_000;
  const sink = new LineProcess(spawnChild(process.execPath, ['--import=tsx', SINK, b.sock, 'sink', String(alpha.gcid), String(N)], { pdeathsig: true }), 'ring-sink');
  t.context.procs.push(sink);
  const to = Number(JSON.parse((await sink.waitFor(/^\{"ready":\d+\}$/m, WAIT_MS))[0]).ready);
  await waitFor(async () => (await system(a)).remoteNodes?.some((n) => n.nodename === 'sink'), 'a knows the sink', WAIT_MS);
  const sending = alpha.sendRing(formatGcid(to), Array.from({ length: N }, (_, i) => {
    const m = Buffer.alloc(64, i & 0xff);
    m.writeUInt32LE(i, 0);
    return m;
  }), { timeoutMs: 60_000 });
  await sink.waitFor(/^\{"got":10000\}$/m, 60_000);
  process.kill(b.proc.child.pid!, 'SIGSTOP');
  try {
    // Nothing heard for 3 heartbeats (290 ms: 300 less the timers' allowance): a takes the link down.
    await a.proc.waitFor(/link in:\d+ down/, WAIT_MS);
  } finally {
    process.kill(b.proc.child.pid!, 'SIGCONT');
  }
  await a.proc.waitFor(/link in:\d+: its other end is back; its streams go on/, WAIT_MS);
  await sending;
  await sink.waitFor(new RegExp(`^\\{"done":${N}\\}$`, 'm'), 120_000);
  t.true((await system(b)).switchLinks![0].downs >= 1);
});

linkTest(`garbage, corrupted and forged frames on a link are dropped, counted and logged; the switch and its other links go on${skipped}`, async (t) => {
  const a = await serve(t, ['--sid', '1', '--link-listen', '127.0.0.1:0']);
  const b = await serve(t, ['--sid', '2', '--link', a.linkAddress!]);
  const alpha = t.context.track(await FabricClient.connect(a.sock, { nodename: 'alpha' }));
  const beta = t.context.track(await FabricClient.connect(b.sock, { nodename: 'beta' }));
  await waitFor(async () => (await system(a)).remoteNodes?.some((n) => n.nodename === 'beta'), 'a knows beta', WAIT_MS);
  const rogue = t.context.track(Link.connect(a.linkAddress!));
  // The switch may drop it (it sends no heartbeats) while its last sends are on the way.
  rogue.on('error', () => undefined);
  await rogue.ready({ signal: AbortSignal.timeout(WAIT_MS) });
  // Bytes that are no frame; a hello; then a data frame whose packet's ECRC
  // is wrong (its HCRC made right), and an ack of what was never sent.
  rogue.send(Buffer.from('not a frame at all, just bytes'));
  rogue.send(encodeFrame({ type: 'hello', instance: 7, window: 8, seen: false }));
  const packet = pieces('mailbox', 0x2000 + 100, 0x1000 + alpha.id * 100, Buffer.from('forged'), 0)[0];
  const data = encodeFrame({ type: 'data', source: 0x2064, destination: 0x1000 + alpha.id * 100, seq: 0, packet });
  data[data.length - 2] ^= 0x40;
  rogue.send(data);
  rogue.send(encodeFrame({ type: 'ack', source: 0x1064, destination: 0x2064, ack: 1000, credit: 1064 }));
  let heard = false;
  alpha.on('message', (m) => {
    if (m.text === 'forged') heard = true;
  });
  const line = await a.proc.waitFor(/link in:\d+: \d+ frame\(s\) dropped \(\d+ bad, \d+ refused in all/, WAIT_MS);
  t.truthy(line);
  const sys = await waitFor(async () => {
    const s = await system(a);
    return s.switchLinks?.find((l) => l.direction === 'in' && l.badFrames >= 2) ? s : null;
  }, 'the rogue link counts its bad frames', WAIT_MS);
  t.true(sys.switchLinks!.some((l) => l.neighbour === 2 && l.state === 'up'), 'the real link is still up');
  const pong = await alpha.request(`2:${beta.id * 100}`, 'ping', { replyTimeoutMs: WAIT_MS });
  t.is(pong.gcid, beta.gcid);
  t.false(heard, 'the corrupted packet was never delivered');
});

linkTest(`a peer reads and writes another switch's fabric-attached memory; out of range and without the R-Key it is refused${skipped}`, async (t) => {
  const dir = t.context.dir();
  const file = path.join(dir, 'fam');
  fs.writeFileSync(file, Buffer.alloc(0));
  fs.truncateSync(file, 1 << 20);
  const a = await serve(t, ['--sid', '1', '--link-listen', '127.0.0.1:0', '--fam', file, '--fam-key', '4242']);
  await a.proc.waitFor(/fabric-attached memory .* \(1M\) at 1:500, R-Key required/, WAIT_MS);
  const b = await serve(t, ['--sid', '2', '--link', a.linkAddress!]);
  const beta = t.context.track(await FabricClient.connect(b.sock, { nodename: 'beta' }));
  await waitFor(async () => (await system(b)).remoteNodes?.some((n) => n.sid === 1), 'b reaches SID 1', WAIT_MS);
  // Each request waits for its answer as long as the test does (the
  // default 5 s is a deadline a loaded machine can miss).
  // One hop, tcp has RMA: a offers b its memory as a window, and b reads and writes it itself.
  await b.proc.waitFor(/SID 1 offers its memory \(1:500, 1048576 bytes\) by RMA/, WAIT_MS);
  const data = Buffer.alloc(1000).map((_, i) => (i * 7) & 0xff);
  await beta.write('1:500', 4096, data, { key: 4242, timeoutMs: WAIT_MS });
  t.deepEqual(fs.readFileSync(file).subarray(4096, 5096), data, 'in the owner\'s file');
  t.deepEqual(await beta.read('1:500', 4096, 1000, { key: 4242, timeoutMs: WAIT_MS }), data);
  fs.writeFileSync(file, Buffer.from('written by the owner'), { flag: 'r+' });
  t.is((await beta.read('1:500', 0, 20, { key: 4242, timeoutMs: WAIT_MS })).toString(), 'written by the owner');
  await t.throwsAsync(beta.read('1:500', (1 << 20) - 4, 8, { key: 4242, timeoutMs: WAIT_MS }), { code: 'EFAM', message: /refused: InvAccPerm/ });
  await t.throwsAsync(beta.write('1:500', 0, Buffer.from('x'), { timeoutMs: WAIT_MS }), { code: 'EFAM', message: /refused: InvAccKey/ });
  await t.throwsAsync(beta.read('2:500', 0, 8, { timeoutMs: WAIT_MS }), { code: 'EFAM', message: /refused: UnsupportedReq/ }, 'its own switch has no memory');
  await t.throwsAsync(beta.read('9:500', 0, 8, { timeoutMs: WAIT_MS }), { code: 'EUNREACHABLE', message: /no route to SID 9/ }, 'no route: the switch refuses and says so');
  const rma = (await system(b)).switchLinks!.reduce((n, l) => ({ reads: n.reads + l.rmaReads, writes: n.writes + l.rmaWrites }), { reads: 0, writes: 0 });
  t.true(rma.writes >= 4 && rma.reads >= 5, `b served its peer's requests by RMA: ${JSON.stringify(rma)}`);
  // The local switch's own memory, from a peer of its own.
  const alpha = t.context.track(await FabricClient.connect(a.sock, { nodename: 'alpha' }));
  t.is((await alpha.read('switch', 0, 20, { key: 4242, timeoutMs: WAIT_MS })).toString(), 'written by the owner');
  // famez client's read and write.
  const c = t.context.client(['-S', b.sock]);
  await c.waitFor(/fabric of 4 peers/, WAIT_MS);
  type(c, 'write 1:500 100 hi there');
  await c.waitFor(/error: 1:500 refused: InvAccKey/, WAIT_MS);
});

linkTest(`two hops from the memory (a line of three switches): reads and writes go to the owner as packets, and are the same${skipped}`, async (t) => {
  const dir = t.context.dir();
  const file = path.join(dir, 'fam');
  fs.writeFileSync(file, Buffer.alloc(0));
  fs.truncateSync(file, 1 << 16);
  const a = await serve(t, ['--sid', '1', '--link-listen', '127.0.0.1:0', '--fam', file]);
  const b = await serve(t, ['--sid', '2', '--link-listen', '127.0.0.1:0', '--link', a.linkAddress!]);
  const c = await serve(t, ['--sid', '3', '--link', b.linkAddress!]);
  const gamma = t.context.track(await FabricClient.connect(c.sock, { nodename: 'gamma' }));
  await waitFor(async () => (await system(c)).remoteNodes?.some((n) => n.sid === 1), 'c reaches SID 1', WAIT_MS);
  const data = Buffer.alloc(3000).map((_, i) => (i * 13) & 0xff);
  await gamma.write('1:500', 100, data, { timeoutMs: WAIT_MS });
  t.deepEqual(fs.readFileSync(file).subarray(100, 3100), data);
  t.deepEqual(await gamma.read('1:500', 100, 3000, { timeoutMs: WAIT_MS }), data);
  await t.throwsAsync(gamma.read('1:500', (1 << 16) - 1, 2, { timeoutMs: WAIT_MS }), { code: 'EFAM', message: /refused: InvAccPerm/ });
  for (const s of [b, c]) t.true((await system(s)).switchLinks!.every((l) => l.rmaReads === 0 && l.rmaWrites === 0), 'no RMA but on the owner\'s own links');
});

linkTest(`atomics on another switch's memory: concurrent fetch-adds from two peers lose nothing, one compare-and-swap of two wins, refusals say why${skipped}`, async (t) => {
  const dir = t.context.dir();
  const file = path.join(dir, 'fam');
  fs.writeFileSync(file, Buffer.alloc(0));
  fs.truncateSync(file, 1 << 16);
  const a = await serve(t, ['--sid', '1', '--link-listen', '127.0.0.1:0', '--fam', file, '--fam-key', '77']);
  const b = await serve(t, ['--sid', '2', '--link', a.linkAddress!]);
  const one = t.context.track(await FabricClient.connect(b.sock, { nodename: 'one' }));
  const two = t.context.track(await FabricClient.connect(b.sock, { nodename: 'two' }));
  await waitFor(async () => (await system(b)).remoteNodes?.some((n) => n.sid === 1), 'b reaches SID 1', WAIT_MS);
  const o = { key: 77, timeoutMs: WAIT_MS };
  // N fetch-adds from each peer, all in flight at once: every old value is
  // seen exactly once, and the word ends at 2N, in the owner's file too.
  const N = 300;
  const adds = (c: FabricClient, size: 4 | 8, offset: number) => Array.from({ length: N }, () => c.atomic('1:500', offset, { op: 'fetch-add', value: 1n, size }, o));
  const olds = await Promise.all([...adds(one, 8, 64), ...adds(two, 8, 64), ...adds(one, 4, 128), ...adds(two, 4, 128)]);
  const sorted = (xs: bigint[]) => xs.map(Number).sort((x, y) => x - y);
  t.deepEqual(sorted(olds.slice(0, 2 * N)), Array.from({ length: 2 * N }, (_, i) => i));
  t.deepEqual(sorted(olds.slice(2 * N)), Array.from({ length: 2 * N }, (_, i) => i));
  const disk = fs.readFileSync(file);
  t.is(disk.readBigUInt64LE(64), BigInt(2 * N));
  t.is(disk.readUInt32LE(128), 2 * N);
  t.is(disk.readUInt32LE(132), 0);
  t.is(await one.read('1:500', 64, 8, o).then((d) => d.readBigUInt64LE(0)), BigInt(2 * N));
  // Compare-and-swap races: for each word, both try 0 -> their own mark at
  // once; exactly one sees 0 (it won), and the word holds its mark.
  for (let round = 0; round < 20; round++) {
    const at = 1024 + round * 8;
    const [x, y] = await Promise.all([
      one.atomic('1:500', at, { op: 'compare-and-swap', expect: 0n, value: 0x1111n }, o),
      two.atomic('1:500', at, { op: 'compare-and-swap', expect: 0n, value: 0x2222n }, o),
    ]);
    t.true((x === 0n) !== (y === 0n), `round ${round}: exactly one wins (${x}, ${y})`);
    const winner = x === 0n ? 0x1111n : 0x2222n;
    t.is(x === 0n ? y : x, winner, 'the loser saw the winner\'s mark');
    t.is(fs.readFileSync(file).readBigUInt64LE(at), winner);
  }
  t.is(await one.atomic('1:500', 2048, { op: 'swap', value: -1n }, o), 0n);
  t.is(fs.readFileSync(file).readBigUInt64LE(2048), 2n ** 64n - 1n);
  // Refusals: by the owner, with the Reason; by the client, before sending.
  await t.throwsAsync(one.atomic('1:500', 1 << 16, { op: 'fetch-add', value: 1n }, o), { code: 'EFAM', message: /refused: InvAccPerm/ });
  await t.throwsAsync(one.atomic('1:500', 64, { op: 'fetch-add', value: 1n }, { timeoutMs: WAIT_MS }), { code: 'EFAM', message: /refused: InvAccKey/ });
  await t.throwsAsync(one.atomic('2:500', 64, { op: 'fetch-add', value: 1n }, { timeoutMs: WAIT_MS }), { code: 'EFAM', message: /refused: UnsupportedReq/ });
  await t.throwsAsync(one.atomic('1:500', 4, { op: 'fetch-add', value: 1n }, o), { code: 'EINVAL', message: /multiple of 8/ });
  await t.throwsAsync(one.atomic('1:500', 0, { op: 'fetch-add', value: 1n << 32n, size: 4 }, o), { code: 'EINVAL' });
  t.is(fs.readFileSync(file).readBigUInt64LE(64), BigInt(2 * N), 'nothing refused was done');
  // The local switch's own memory, from a peer of its own.
  const alpha = t.context.track(await FabricClient.connect(a.sock, { nodename: 'alpha' }));
  t.is(await alpha.atomic('switch', 64, { op: 'fetch-add', value: 10n }, o), BigInt(2 * N));
  // famez client's atomic.
  const c = t.context.client(['-S', b.sock]);
  await c.waitFor(/fabric of 4 peers/, WAIT_MS);
  type(c, 'atomic 1:500 3000 add 5');
  await c.waitFor(/error: 1:500 refused: InvAccKey/, WAIT_MS);
  type(c, 'atomic 1:500 3000 cas 1 2 --size 4');
  await c.waitFor(/error: 1:500 refused: InvAccKey/, WAIT_MS);
  type(c, 'atomic 1:500 3000 add 5 --key 77');
  await c.waitFor(/atomic add at 3000 of 1:500 \(8 bytes\): old value 0 \(0x0\)$/m, WAIT_MS);
  type(c, 'atomic 1:500 3000 cas 5 0x10 --key 77 --size 4');
  await c.waitFor(/atomic cas at 3000 of 1:500 \(4 bytes\): old value 5 \(0x5\): swapped$/m, WAIT_MS);
  type(c, 'atomic 1:500 3000 cas 5 6 --key 77 --size 4');
  await c.waitFor(/old value 16 \(0x10\): not swapped$/m, WAIT_MS);
  t.is(fs.readFileSync(file).readBigUInt64LE(3000), 16n);
  type(c, 'atomic 1:500 3000 mul 5');
  await c.waitFor(/usage: atomic OWNER OFFSET add N/, WAIT_MS);
});

linkTest(`a switch SIGKILLed: requests waiting on its peers fail with EUNREACHABLE, its peers go from the list, and come back with a new switch${skipped}`, async (t) => {
  const a = await serve(t, [...FAILURE_HEARTBEAT, '--sid', '1', '--link-listen', '127.0.0.1:0']);
  const b = await serve(t, [...FAILURE_HEARTBEAT, '--sid', '2', '--link', a.linkAddress!]);
  const alpha = t.context.track(await FabricClient.connect(a.sock, { nodename: 'alpha' }));
  t.context.track(await FabricClient.connect(b.sock, { nodename: 'beta' }));
  await waitFor(async () => (await alpha.remotePeers({ timeoutMs: WAIT_MS })).some((p) => p.nodename === 'beta'), 'alpha sees beta', WAIT_MS);
  // Peer 4 of switch 2 is not there: nothing answers this.
  const pending = alpha.request('2:400', 'anyone?', { replyTimeoutMs: 60_000 });
  const reading = alpha.read('2:500', 0, 8, { timeoutMs: 60_000 });
  const started = Date.now();
  process.kill(b.proc.child.pid!, 'SIGKILL');
  await t.throwsAsync(pending, { code: 'EUNREACHABLE', message: /no route to SID 2/ });
  await t.throwsAsync(reading, { code: 'EUNREACHABLE' });
  t.log(`failed ${Date.now() - started} ms after the SIGKILL`);
  // Its messages for SID 2 wait for the route (up to 5 s); what it asks of
  // its own switch meanwhile is still answered, before that (an answer
  // queued behind the held request would come after the 5 s). When the 5 s
  // pass with no route, the switch refuses the read and says so: it fails
  // then, not at its own timeout.
  let heldSettled = false;
  const asked = Date.now();
  const held = alpha.read('2:500', 0, 8, { timeoutMs: 40_000 }).finally(() => (heldSettled = true));
  held.catch(() => undefined);
  t.deepEqual(await alpha.remotePeers({ timeoutMs: WAIT_MS }), []);
  t.false(heldSettled, "the switch answered while alpha's read for SID 2 still waited for a route");
  await t.throwsAsync(held, { code: 'EUNREACHABLE', message: /no route to SID 2/ });
  t.log(`a read held for SID 2 failed ${Date.now() - asked} ms after it was asked`);
  await t.throwsAsync(alpha.request('2:100', 'still there?', { replyTimeoutMs: 40_000 }), { code: 'EUNREACHABLE' }, 'refused at once now');
  // A new switch 2 (on the same socket path's directory, a new socket).
  const b2 = await serve(t, [...FAILURE_HEARTBEAT, '--sid', '2', '--link', a.linkAddress!]);
  const beta2 = t.context.track(await FabricClient.connect(b2.sock, { nodename: 'beta2' }));
  await waitFor(async () => (await alpha.remotePeers({ timeoutMs: WAIT_MS })).some((p) => p.nodename === 'beta2'), 'alpha sees beta2', WAIT_MS);
  const pong = await alpha.request(formatGcid(beta2.gcid), 'ping', { replyTimeoutMs: WAIT_MS });
  t.is(pong.gcid, beta2.gcid);
});

test('--link without libfabric: exit 1, one line naming the fix, nothing left behind', async (t) => {
  const dir = t.context.dir();
  const sock = path.join(dir, 'sock');
  const p = t.context.famez(['serve', '-S', sock, '--memfd', '--no-http', '--link', '127.0.0.1:7000'], { env: { FAMEZ_LIBFABRIC: '/nonexistent.so' } });
  const exit = await p.wait(60_000);
  t.is(exit.code, 1);
  const lines = p.stderr.trim().split('\n');
  t.is(lines.length, 1, p.stderr);
  t.regex(lines[0], /^famez serve: --link: libfabric is not installed: apt-get install libfabric1 /);
  t.false(fs.existsSync(sock), 'the socket is removed');
});

test('bad link addresses and link flags without links are usage errors (exit 2)', async (t) => {
  for (const [args, re] of [
    [['--link', '7000'], /--link needs HOST:PORT/],
    [['--link', '127.0.0.1:0'], /--link port must be between 1 and 65535/],
    [['--link-listen', 'x:99999'], /--link-listen port must be between 0 and 65535/],
    [['--link-provider', 'verbs'], /--link-provider applies to links/],
    [['--silent', '--link', 'h:1'], /--link applies to the fabric/],
    [['--max-peers', '41', '--link', 'h:1'], /--link needs Gen-Z CIDs/],
  ] as const) {
    const p = await t.context.run(['serve', '-S', path.join(t.context.dir(), 's'), '--memfd', ...args]);
    t.is(p.exitInfo.code, 2, `${args.join(' ')}: ${p.stderr}`);
    t.regex(p.stderr, re);
  }
});

linkTest(`a secondary fabric manager takes over when the primary's switch is SIGKILLed, and peers are told; the old primary, back, yields to the higher epoch${skipped}`, async (t) => {
  const a = await serve(t, [...FAILURE_HEARTBEAT, '--sid', '1', '--link-listen', '127.0.0.1:0', '--fm', 'primary']);
  const b = await serve(t, [...FAILURE_HEARTBEAT, '--sid', '2', '--link-listen', '127.0.0.1:0', '--link', a.linkAddress!, '--fm', 'secondary']);
  const c = await serve(t, [...FAILURE_HEARTBEAT, '--sid', '3', '--link', a.linkAddress!, '--link', b.linkAddress!, '--fm', 'none']);
  await waitFor(async () => (await system(c)).fm?.manager?.sid === 1 && (await system(b)).fm?.manager?.sid === 1, 'b and c see SID 1 in charge', WAIT_MS);
  t.like((await system(b)).fm, { role: 'secondary', epoch: 0, manager: { sid: 1, cid: 500, gcid: '1:500', epoch: 1, self: false } });
  const gamma = t.context.track(await FabricClient.connect(c.sock, { nodename: 'gamma' }));
  const info = await gamma.linkUp({ timeoutMs: WAIT_MS });
  t.like(info, { PFMSID: 1, PFMCID: 500, SID0: 3, CID0: 100 }, 'configured on SID 3 for the manager on SID 1');
  const told = new Promise<number>((resolve) => gamma.on('configured', (i) => i.PFMSID === 2 && resolve(Date.now())));
  const seenB = b.proc.lines.length;
  const killed = Date.now();
  process.kill(a.proc.child.pid!, 'SIGKILL');
  const at = await Promise.race([told, sleep(WAIT_MS).then(() => null)]);
  t.truthy(at, 'gamma is told the new fabric manager');
  t.log(`SIGKILL -> gamma configured for the manager on SID 2: ${at! - killed} ms`);
  t.like(gamma.attributes, { PFMSID: 2, PFMCID: 500, SID0: 3, CID0: 100 });
  t.like((await system(b)).fm, { role: 'secondary', epoch: 2, manager: { sid: 2, gcid: '2:500', epoch: 2, self: true } });
  t.like((await system(c)).fm, { role: 'none', epoch: 0, manager: { sid: 2, epoch: 2, self: false } });
  t.true(b.proc.lines.slice(seenB).some((l) => /takes over as fabric manager \(epoch 2\): the manager in charge, SID 1 \(epoch 1\), is gone/.test(l)));
  // The old primary starts again where it was: it claims epoch 1, hears epoch 2, and yields.
  const again = await serve(t, [...FAILURE_HEARTBEAT, '--sid', '1', '--link-listen', a.linkAddress!, '--fm', 'primary']);
  await again.proc.waitFor(/SID 2 manages the fabric \(epoch 2\), ahead of this switch: it yields/, WAIT_MS);
  await waitFor(async () => (await system(again)).fm?.manager?.sid === 2, 'the old primary sees SID 2 in charge', WAIT_MS);
  t.like((await system(again)).fm, { role: 'primary', epoch: 0, manager: { sid: 2, epoch: 2, self: false } });
  const alpha = t.context.track(await FabricClient.connect(again.sock, { nodename: 'alpha' }));
  t.like(await alpha.linkUp({ timeoutMs: WAIT_MS }), { PFMSID: 2, PFMCID: 500, SID0: 1 }, "the old primary's new peer is configured for the manager in charge");
  await sleep(500);
  t.like((await system(b)).fm, { epoch: 2, manager: { sid: 2, self: true } }, 'no fight: SID 2 stays in charge');
  t.is(gamma.attributes.PFMSID, 2);
});
