// Which IDs peers get and who is told about whom, with real peers against
// a server configured from `famez serve` arguments (helpers/churn.ts):
//
// - recycle (the fabric default): every live peer holds every other live
//   peer's eventfds, also when both got recycled IDs (issue 7, item 8);
// - without recycling (--silent with --id-policy lowest, fabric
//   --no-recycle): an ID whose departure was told to a peer still connected
//   is never given out again while that peer stays, since QEMU 7.2 corrupts
//   its heap when it is; when no ID is left the newcomer is refused with one
//   log line naming the QEMU bug (issue 7, item 7).
import * as path from 'node:path';

import anyTest, { type ExecutionContext, type TestFn } from 'ava';

import { Client, ClientError } from '../ts/client/client.js';
import { ProbePeer, serveInProcess, type Served } from './helpers/churn.js';
import { RawPeer } from './helpers/raw-peer.js';
import { removeDir, tempDir, waitFor, within } from './helpers/wait.js';

interface Ctx {
  dir: string;
  served: Served | null;
  closers: Array<() => void>;
  probes: ProbePeer[];
  log: string[];
}
const test = anyTest as TestFn<Ctx>;
const WAIT_MS = 15_000;

test.beforeEach((t) => {
  t.context = { dir: tempDir('famez-ids-'), served: null, closers: [], probes: [], log: [] };
});

test.afterEach.always(async (t) => {
  await Promise.all(t.context.probes.map((p) => p.kill()));
  for (const c of t.context.closers.reverse()) {
    try {
      c();
    } catch {
      // already closed
    }
  }
  t.context.served?.server.close();
  t.context.served?.fabric?.close();
  if (!t.passed) t.log(t.context.log.slice(-40).join('\n'));
  removeDir(t.context.dir);
});

function serve(t: ExecutionContext<Ctx>, argv: string[], overrides = {}): Served {
  t.context.served = serveInProcess(argv, path.join(t.context.dir, 'sock'), (l) => t.context.log.push(l), overrides);
  return t.context.served;
}

async function join(t: ExecutionContext<Ctx>, served: Served): Promise<Client> {
  const c = await Client.connect(served.socket, { vectors: served.options.vectors, timeoutMs: WAIT_MS });
  t.context.closers.push(() => c.close());
  return c;
}

const interrupted = (c: Client, vector: number): Promise<void> =>
  new Promise((resolve) => c.on('interrupt', (e) => e.vector === vector && resolve()));

test('recycle: with IDs 1 and 2 both free, the peer that gets 1 and the one that then gets 2 hold each other\'s eventfds and ring each other', async (t) => {
  const served = serve(t, []);
  const vectors = served.options.vectors;
  // IDs 1 and 2 are used once and freed: their eventfds are kept, nobody is told.
  const x = await join(t, served);
  const y = await join(t, served);
  t.deepEqual([x.id, y.id], [1, 2]);
  x.close();
  y.close();
  await waitFor(() => served.server.peerIds.length === 0, 'both to be gone', WAIT_MS);

  const a = await join(t, served);
  t.is(a.id, 1);
  const b = await join(t, served);
  t.is(b.id, 2);
  t.deepEqual(b.peers.get(1), { id: 1, vectors }, 'B was given A in its welcome');
  await waitFor(() => a.peers.get(2)?.vectors === vectors, "A to hold B's eventfds", 5000).catch(() => undefined);
  t.deepEqual(a.peers.get(2), { id: 2, vectors }, 'A was told about B, whose ID was recycled');
  if (!a.peers.has(2)) return;

  const bRung = interrupted(b, 1);
  a.ring(2, 1);
  await within(bRung, "B to see A's ring", WAIT_MS);
  const aRung = interrupted(a, 2);
  b.ring(1, 2);
  await within(aRung, "A to see B's ring", WAIT_MS);
  t.pass();
});

type Seen = { type: 'join' | 'leave'; id: number };

/** A witness that stays while newcomers join and leave, one at a time
 * (clean close and SIGKILLed probe processes, in turn), until one is
 * refused or `maxCycles` pass. Returns the IDs the newcomers got and what
 * the witness was told, in order. */
async function witnessChurn(t: ExecutionContext<Ctx>, served: Served, maxCycles: number): Promise<{ witness: Client; ids: number[]; seen: Seen[]; refusedAt: number }> {
  const witness = await join(t, served);
  const seen: Seen[] = [];
  witness.on('join', (p) => seen.push({ type: 'join', id: p.id }));
  witness.on('leave', ({ id }) => seen.push({ type: 'leave', id }));
  const ids: number[] = [];
  let refusedAt = -1;
  for (let cycle = 0; cycle < maxCycles && refusedAt < 0; cycle++) {
    let id: number;
    if (cycle % 2 === 0) {
      let c: Client;
      try {
        c = await join(t, served);
      } catch (e) {
        if (e instanceof ClientError && e.code === 'EREFUSED') {
          refusedAt = cycle;
          break;
        }
        throw e;
      }
      id = c.id;
      await waitFor(() => witness.peers.get(id)?.vectors === served.options.vectors, `the witness to hear of peer ${id}`, WAIT_MS);
      c.close();
    } else {
      const probe = ProbePeer.spawn(served.socket);
      t.context.probes.push(probe);
      try {
        await probe.ready(served.options.vectors);
      } catch (e) {
        if (/closed by the server/.test((e as Error).message) && probe.proc.lines.some((l) => /"index": 0, .*"value": -1/.test(l))) {
          refusedAt = cycle;
          await probe.kill();
          break;
        }
        throw e;
      }
      id = probe.id;
      await waitFor(() => witness.peers.get(id)?.vectors === served.options.vectors, `the witness to hear of peer ${id}`, WAIT_MS);
      await probe.kill();
    }
    ids.push(id);
    await waitFor(() => !served.server.peerIds.includes(id), `peer ${id} to be gone`, WAIT_MS);
    await waitFor(() => !witness.peers.has(id), `the witness to be told peer ${id} left`, WAIT_MS);
  }
  return { witness, ids, seen, refusedAt };
}

/** Joins the witness was told about for an ID it had been told departed. */
function reannounced(seen: Seen[]): number[] {
  const departed = new Set<number>();
  const bad: number[] = [];
  for (const e of seen) {
    if (e.type === 'leave') departed.add(e.id);
    else if (departed.has(e.id)) bad.push(e.id);
  }
  return bad;
}

/** A raw newcomer that must be refused: -1 and the connection closed. */
async function refusedRaw(t: ExecutionContext<Ctx>, served: Served): Promise<void> {
  const raw = new RawPeer(served.socket);
  t.context.closers.push(() => raw.close());
  await waitFor(() => raw.ended !== null, 'the server to close the refused connection', WAIT_MS);
  t.deepEqual(raw.msgs, [{ value: -1, fd: false }], 'a refusal is -1 and nothing else');
}

async function noReuse(t: ExecutionContext<Ctx>, argv: string[], overrides: object, span: number[], again: number): Promise<void> {
  const served = serve(t, argv, overrides);
  const { witness, ids, seen, refusedAt } = await witnessChurn(t, served, 2 * span.length + 2);
  const usable = span.filter((id) => id !== witness.id);
  t.deepEqual(reannounced(seen), [], `the witness (peer ${witness.id}) was never told again of an ID it was told departed; newcomers got ${ids.join(', ')}`);
  t.deepEqual([...ids].sort((a, b) => a - b), usable, 'each free ID was given out once');
  t.is(refusedAt, usable.length, 'the newcomer after the last free ID was refused');
  const refusals = () => t.context.log.filter((l) => /refused a peer/.test(l));
  t.is(refusals().length, 1, 'one log line for the refusal');
  t.regex(refusals()[0] ?? '', /QEMU/, 'the refusal names the QEMU bug');
  // A raw newcomer sees the refusal on the wire; one more line is logged.
  await refusedRaw(t, served);
  t.is(refusals().length, 2);
  t.true(refusals().every((l) => /QEMU/.test(l) && !l.includes('\n')), refusals().join(' | '));
  // The IDs are blocked only while the witness stays.
  witness.close();
  await waitFor(() => served.server.peerIds.length === 0, 'the witness to be gone', WAIT_MS);
  const next = await join(t, served);
  t.is(next.id, again, 'with the witness gone every ID is free again');
}

test('--silent --id-policy lowest: a peer that stays is never told again of an ID it was told departed; when none is left the newcomer is refused with a line naming QEMU', async (t) => {
  // Eight IDs instead of 65,536, so that running out is reachable here.
  await noReuse(t, ['--silent', '--id-policy', 'lowest'], { ids: { min: 0, max: 7 } }, [0, 1, 2, 3, 4, 5, 6, 7], 0);
});

test('fabric --no-recycle: a peer that stays is never told again of an ID it was told departed; when none is left the newcomer is refused with a line naming QEMU', async (t) => {
  await noReuse(t, ['--no-recycle', '--max-peers', '5'], {}, [1, 2, 3, 4, 5], 1);
});
