// A real QEMU ivshmem-doorbell device beside join/leave churn of other
// peers, in every mode of `famez serve`: --silent (monotonic IDs),
// --silent --id-policy lowest, the fabric (recycle on) and the fabric with
// --no-recycle. QEMU 7.2 (Debian 12's) frees a departed peer's eventfd array
// without resetting it and writes into it when that ID is announced again
// (heap corruption, "double free or corruption"); famez must never do that
// to a live QEMU. After 24 cycles (clean closes and SIGKILLed peer
// processes, some two at a time) QEMU must still run, answer qtest, and
// exchange doorbells both ways with a fresh peer.
//
// One QEMU per mode (a paused TCG machine driven over qtest, see
// helpers/qemu.ts). These tests need qemu-system-x86_64 and fail without
// it, unless FAMEZ_SKIP_QEMU=1.
import * as path from 'node:path';

import anyTest, { type ExecutionContext, type TestFn } from 'ava';

import { Client } from '../ts/client/client.js';
import { ProbePeer } from './helpers/churn.js';
import { QtestMachine, killAll, qemuBinary } from './helpers/qemu.js';
import { Scratch, type FamezProcess } from './helpers/serve.js';
import { waitFor, waitedFor } from './helpers/wait.js';

interface Ctx {
  scratch: Scratch;
  probes: ProbePeer[];
  notes: string[];
}
const test = anyTest as TestFn<Ctx>;
const SKIP = process.env.FAMEZ_SKIP_QEMU === '1';
const qtest = SKIP ? test.serial.skip : test.serial;
const WAIT_MS = 20_000;
const CYCLES = 24;

test.before(() => {
  if (!SKIP && !qemuBinary()) {
    throw new Error('qemu-system-x86_64 not found in PATH: apt-get install -y qemu-system-x86 (or FAMEZ_SKIP_QEMU=1 to skip deliberately)');
  }
});
test.beforeEach((t) => {
  t.context = { scratch: new Scratch(), probes: [], notes: [] };
});
test.afterEach.always(async (t) => {
  await Promise.all(t.context.probes.map((p) => p.kill()));
  await killAll();
  if (!t.passed) t.log([...t.context.notes.slice(-40), ...t.context.scratch.procs.map((p) => `famez serve output tail:\n${p.lines.slice(-20).join('\n')}`)].join('\n'));
  await t.context.scratch.cleanup();
});
test.after.always(async () => {
  await killAll();
});

const disconnects = (s: FamezProcess): number => s.lines.filter((l) => /(?:INFO|WARN) +peer \d+ disconnected/.test(l)).length;

/** One newcomer: it joins (a library client, or a probe process that keeps
 * its eventfds), then leaves (clean close, or SIGKILL). */
async function newcomer(t: ExecutionContext<Ctx>, socket: string, vectors: number, kill: boolean): Promise<{ id: number; leave: () => Promise<void> }> {
  if (kill) {
    const probe = ProbePeer.spawn(socket);
    t.context.probes.push(probe);
    await probe.ready(vectors);
    return { id: probe.id, leave: () => probe.kill() };
  }
  const c = await Client.connect(socket, { vectors, timeoutMs: WAIT_MS });
  t.context.scratch.track(c);
  return { id: c.id, leave: async () => c.close() };
}

/** Rings until `landed` (bounded): a ring may race the receiver learning
 * about the ringer. */
async function ringUntil(what: string, ring: () => unknown, landed: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + WAIT_MS;
  for (;;) {
    await ring();
    if (await landed()) return;
    if (Date.now() > deadline) throw new Error(`${what}: no interrupt within ${WAIT_MS} ms`);
  }
}

interface Mode {
  args: string[];
  vectors: number;
  /** The ID a fresh peer gets after the churn (QEMU joined first). */
  fresh: number;
}

async function qemuBesideChurn(t: ExecutionContext<Ctx>, mode: Mode): Promise<void> {
  const socket = path.join(t.context.scratch.dir(), 'sock');
  const serve = await t.context.scratch.serve(['-S', socket, '--memfd', ...mode.args]);
  const qemu = await QtestMachine.start({ socket, vectors: mode.vectors, log: (l) => t.context.notes.push(l) });
  const state = { died: null as string | null };
  void qemu.exited.then((e) => (state.died = `QEMU exited (code ${e.code}, signal ${e.signal}): ${t.context.notes.filter((n) => n.startsWith(`qemu ${qemu.pid}:`)).slice(-5).join(' | ')}`));
  const qemuId = await qemu.ivPosition();

  const ids: number[] = [];
  let gone = 0;
  for (let cycle = 0; cycle < CYCLES; ) {
    // Mostly one newcomer at a time, every fourth round two at once.
    const n = cycle % 8 === 6 ? 2 : 1;
    const peers = [];
    for (let i = 0; i < n; i++) peers.push(await newcomer(t, socket, mode.vectors, (cycle + i) % 2 === 1));
    for (const p of peers) {
      ids.push(p.id);
      await p.leave();
    }
    cycle += n;
    gone += n;
    await waitFor(() => disconnects(serve) >= gone || state.died !== null, `famez serve to see ${gone} newcomers go`, WAIT_MS);
    if (state.died) break;
    // Let QEMU read each announcement before the next round (a qtest
    // answer is a turn of its main loop, which also reads the chardev).
    await qemu.ivPosition().catch(() => undefined);
  }
  t.log(`QEMU is peer ${qemuId}; the ${ids.length} newcomers got IDs ${ids.join(', ')}`);
  t.is(state.died, null, 'QEMU survived the churn');
  if (state.died) return;

  // A fresh peer, after all of that.
  const fresh = await Client.connect(socket, { vectors: mode.vectors, timeoutMs: WAIT_MS });
  t.context.scratch.track(fresh);
  t.is(fresh.id, mode.fresh, 'the fresh peer gets the ID the mode gives');
  await waitFor(() => fresh.peers.get(qemuId)?.vectors === mode.vectors, "the fresh peer to hold QEMU's eventfds", WAIT_MS);
  await qemu.clearPending();
  await ringUntil('the fresh peer ringing QEMU', () => fresh.ring(qemuId, 1), () => qemu.waitPending(1, 1000));
  const rung: number[] = [];
  fresh.on('interrupt', (e) => rung.push(e.vector));
  await ringUntil(
    'QEMU ringing the fresh peer',
    () => qemu.ring(fresh.id, 2),
    () => waitedFor(() => rung.includes(2), 'the ring on vector 2', 1000, 20),
  );
  t.is(await qemu.ivPosition(), qemuId, 'qtest still answers, and QEMU keeps its ID');
  t.is(state.died, null, 'QEMU is still running');
  t.true(serve.running, 'famez serve is still running');
}

qtest('a QEMU survives 24 join/leave cycles of other peers beside it: --silent (monotonic IDs, the stock server)', async (t) => {
  await qemuBesideChurn(t, { args: ['--silent', '-n', '4'], vectors: 4, fresh: CYCLES + 1 });
});

qtest('a QEMU survives 24 join/leave cycles of other peers beside it: --silent --id-policy lowest (no departed ID is reused while QEMU stays)', async (t) => {
  await qemuBesideChurn(t, { args: ['--silent', '--id-policy', 'lowest', '-n', '4'], vectors: 4, fresh: CYCLES + 1 });
});

qtest('a QEMU survives 24 join/leave cycles of other peers beside it: the fabric (recycle on, the default)', async (t) => {
  await qemuBesideChurn(t, { args: [], vectors: 16, fresh: 2 });
});

qtest('a QEMU survives 24 join/leave cycles of other peers beside it: the fabric with --no-recycle (no departed ID is reused while QEMU stays)', async (t) => {
  // 30 IDs, so that 24 newcomers and a fresh peer all find one that QEMU
  // was never told departed.
  await qemuBesideChurn(t, { args: ['--no-recycle', '--max-peers', '30'], vectors: 32, fresh: CYCLES + 2 });
});
