// The FAME-Z fabric, the default of `famez serve`: the switch is a peer,
// the shared object starts with FAME-Z's mailbox, and the link-up exchange
// runs with (a) a peer written in Python from the documented byte layout
// only, and (b) real QEMU devices writing the mailbox through BAR2.
import * as path from 'node:path';

import anyTest, { type TestFn } from 'ava';

import { QtestMachine, killAll, qemuBinary } from './helpers/qemu.js';
import { ROOT, Scratch, type } from './helpers/serve.js';
import { LineProcess, waitFor } from './helpers/wait.js';

const test = anyTest as TestFn<Scratch>;
const SKIP_QEMU = process.env.FAMEZ_SKIP_QEMU === '1';
const qtest = SKIP_QEMU ? test.serial.skip : test.serial;
const SLOT = 512;
const WAIT_MS = 20_000;

test.before(() => {
  if (!SKIP_QEMU && !qemuBinary()) throw new Error('qemu-system-x86_64 not found: apt-get install -y qemu-system-x86 (or FAMEZ_SKIP_QEMU=1)');
});
test.beforeEach((t) => {
  t.context = new Scratch();
});
test.afterEach.always(async (t) => {
  await killAll();
  await t.context.cleanup();
});

async function pythonPeer(socket: string, name: string): Promise<{ code: number | null; steps: Array<Record<string, unknown>>; stderr: string }> {
  const p = LineProcess.spawn('python3', [path.join(ROOT, '__test__/helpers/fame_z_peer.py'), socket, name], { stdio: ['ignore', 'pipe', 'pipe'] });
  // Bounded: killed if it has not finished in 30 s.
  const exit = await p.wait(30_000).catch(async () => {
    await p.stop('SIGKILL');
    return p.exit ?? { code: null, signal: null };
  });
  if (p.stderr.startsWith('spawn error:')) throw new Error(p.stderr);
  return { code: exit.code, steps: p.lines.filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>), stderr: p.stderr };
}

test('famez serve with no fabric flags runs the fabric and prints the matching stanza', async (t) => {
  const sock = path.join(t.context.dir(), 'sock');
  const s = await t.context.serve(['-S', sock, '--memfd']);
  await s.waitFor(/fabric of 14 peers \(IDs 1\.\.14\); the switch is peer 15, the fabric manager \(SID 27\); recycle on/);
  // The stanza may come after the fabric line: wait for it, bounded.
  await s.waitFor(/ivshmem-doorbell,chardev=famez0,vectors=16/);
  t.pass();
});

test('a peer written from the documented layout only runs the whole FAME-Z exchange with the switch', async (t) => {
  const sock = path.join(t.context.dir(), 'sock');
  const s = await t.context.serve(['-S', sock, '--memfd', '--max-peers', '4']);
  const run = await pythonPeer(sock, 'pyZ');
  t.is(run.code, 0, run.stderr);
  const texts = run.steps.filter((x) => x.step === 'sent' || x.step === 'received').map((x) => `${x.step === 'sent' ? '>' : '<'} ${x.text}`);
  t.deepEqual(run.steps[0], { step: 'globals', id: 1, slotsize: 512, buf_offset: 128, nClients: 4, nEvents: 6, server_id: 5 });
  t.deepEqual(run.steps[1], { step: 'welcome', peers: [5], vectors: 6 });
  t.deepEqual(texts, [
    '< Link CTL Peer-Attribute',
    '> Link CTL ACK C-Class=Python,SID0=0,CID0=0',
    '> ping',
    '< pong',
    '> Link CTL Peer-Attribute',
    '< Link CTL ACK C-Class=FabricSwitch,SID0=27,CID0=500',
    '> Link RFC TTC=27us',
    '< CTL-Write Space=0,PFMSID=27,PFMCID=500,SID=27,CID=100,Tag=1',
    '> Standalone Acknowledgment Tag=1,Reason=OK',
    '< Link CTL Peer-Attribute',
    '> Link CTL ACK C-Class=Python,SID0=27,CID0=100',
    '> ping',
    '< pong',
    '< Link CTL NAK Reason=malformed (ENOTTEXT: message bytes are not UTF-8 text)',
    '> ping',
    '< pong',
  ]);
  t.true(run.steps.some((x) => x.step === 'bad-buflen' && x.freed === true), 'the over-long buflen was cleared');
  await s.waitFor(/switch: peer 1: configured SID0=27,CID0=100/);
  await s.waitFor(/switch: peer 1: EBADMSG: slot 1 has buflen 999, over the limit of 383/);
  await s.waitFor(/switch: peer 1: malformed message rejected: ENOTTEXT/);
  await s.waitFor(/switch: message from peer 2, which is not connected: ignored/);
});

/** Reads the switch's message to `qemu` through BAR2 and frees the slot. */
async function takeFromSwitch(qemu: QtestMachine, serverId: number): Promise<string> {
  const base = serverId * SLOT;
  const len = Number((await qemu.readShm(base + 32, 8)).readBigUInt64LE());
  const text = (await qemu.readShm(base + 128, len)).toString('utf8');
  await qemu.writeShm(base + 32, Buffer.alloc(8));
  return text;
}

/** Posts `text` from `id`'s slot through BAR2 and rings the switch. */
async function postToSwitch(qemu: QtestMachine, id: number, serverId: number, text: string): Promise<void> {
  const base = id * SLOT;
  await qemu.writeShm(base + 128, Buffer.from(`${text}\0`));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(text.length));
  await qemu.writeShm(base + 32, len);
  await qemu.ring(serverId, id);
}

qtest('QEMU in fabric mode: its ID, the mailbox globals through BAR2, and ping -> pong through BAR2', async (t) => {
  const sock = path.join(t.context.dir(), 'sock');
  const s = await t.context.serve(['-S', sock, '--memfd', '--max-peers', '6', '-l', '1M']);
  const qemu = await QtestMachine.start({ socket: sock, vectors: 8 });
  const id = await qemu.ivPosition();
  t.is(id, 1, 'the first peer of a fabric is ID 1');
  await s.waitFor(/peer 1 connected/);
  const globals = await qemu.readShm(0, 40);
  t.deepEqual([0, 8, 16, 24, 32].map((o) => Number(globals.readBigUInt64LE(o))), [512, 128, 6, 8, 7]);
  t.is((await qemu.readShm(7 * SLOT, 8)).toString('latin1'), 'Z-switch');
  // The switch asks every newcomer for its attributes. Its doorbell came
  // before the harness enabled MSI-X (QEMU drops those), so look in the slot.
  await waitFor(async () => Number((await qemu.readShm(7 * SLOT + 32, 8)).readBigUInt64LE()) > 0, 'the switch to post to QEMU', WAIT_MS);
  t.is(Number((await qemu.readShm(7 * SLOT + 48, 8)).readBigUInt64LE()), id, 'last_responder is QEMU');
  t.is(await takeFromSwitch(qemu, 7), 'Link CTL Peer-Attribute');
  await qemu.clearPending();
  await postToSwitch(qemu, id, 7, 'ping');
  t.true(await qemu.waitPending(7, WAIT_MS), 'the answer rang QEMU');
  t.is(await takeFromSwitch(qemu, 7), 'pong');
  await waitFor(async () => Number((await qemu.readShm(id * SLOT + 32, 8)).readBigUInt64LE()) === 0, 'the switch to take the ping', WAIT_MS);
});

qtest('recycle: a QEMU that restarts gets its ID back and its neighbour still reaches it', async (t) => {
  const sock = path.join(t.context.dir(), 'sock');
  const s = await t.context.serve(['-S', sock, '--memfd', '--max-peers', '4', '-l', '1M']);
  const a = await QtestMachine.start({ socket: sock, vectors: 6 });
  const b = await QtestMachine.start({ socket: sock, vectors: 6 });
  t.is(await a.ivPosition(), 1);
  t.is(await b.ivPosition(), 2);
  await b.kill('SIGKILL');
  await s.waitFor(/peer 2 disconnected/);
  const b2 = await QtestMachine.start({ socket: sock, vectors: 6 });
  t.is(await b2.ivPosition(), 2, 'the restarted QEMU gets its ID back');
  await s.waitFor(/peer 2 connected \(recycled\)/);
  // A never heard that 2 left, and still rings 2 with the fds it had: they are b2's now.
  let reached = false;
  for (let i = 0; i < 10 && !reached; i++) {
    await a.ring(2, 1);
    reached = await b2.waitPending(1, 1000);
  }
  t.true(reached, 'A reaches the restarted neighbour on vector 1');
  let back = false;
  for (let i = 0; i < 10 && !back; i++) {
    await b2.ring(1, 2);
    back = await a.waitPending(2, 1000);
  }
  t.true(back, 'the restarted neighbour reaches A on vector 2');
});

test('the server console: help, dump (the switch and its ports), quit', async (t) => {
  const dir = t.context.dir();
  const sock = path.join(dir, 'sock');
  // Stopped at cleanup (Scratch) if the test ends before it quits.
  const server = t.context.famez(['serve', '-S', sock, '--memfd', '--max-peers', '3', '--console'], { stdin: true });
  await waitFor(() => server.stdout.includes('serving on'), 'the server', WAIT_MS);
  const peer = await pythonPeer(sock, 'z01');
  t.is(peer.code, 0, peer.stderr);
  // Its exit reaches the server's loop a moment later.
  await waitFor(() => /peer 1 disconnected/.test(server.stdout), 'the server to see the Python peer leave', WAIT_MS);
  type(server, 'help');
  await waitFor(() => server.stdout.includes('commands: help, dump'), 'help', WAIT_MS);
  type(server, 'dump');
  await waitFor(() => /Z-switch \(ID 4, C-Class FabricSwitch, SID 27, CID 400\)/.test(server.stdout), 'the picture', WAIT_MS);
  for (const port of [1, 2, 3]) t.regex(server.stdout, new RegExp(`\\|\\s+${port}  \\|-- `), `port ${port} is drawn`);
  t.regex(server.stdout, /connected: none/, 'the Python peer has left');
  type(server, 'bogus');
  await waitFor(() => server.stdout.includes("unknown command 'bogus'"), 'the refusal', WAIT_MS);
  type(server, 'quit');
  t.is((await server.wait(WAIT_MS)).code, 0);
  t.regex(server.stdout, /quit: closing/);
});
