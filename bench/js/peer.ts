// A benchmark peer in its own Node process, driven by the runner
// (bench/run.ts) through stdin lines; answers one JSON line per command.
//
//   node --import=tsx bench/js/peer.ts client|fabric|host SOCKET
//
// (host: a plain Client of a fabric server, for the guest group's host
// peer: it learns the vector count from the server, and uses only vping.)
//
// Commands (one per line):
//   id                          -> {"id":N}
//   echo                        doorbell echo: ring back whoever rang (its
//                               ID is read from shared memory word 0)
//   ping PEER ROUNDS BATCHES [WARMUP]
//                               doorbell round trips with PEER
//                               -> {"samples":[us per round trip, ...]}
//   vping PEER ROUNDS BATCHES [WARMUP]
//                               doorbell round trips with PEER the fabric
//                               way: ring PEER's vector ID (this peer's),
//                               count only interrupts on vector PEER (a
//                               guest rings back that way; the shared
//                               memory is not written)
//                               -> {"samples":[us per round trip, ...]}
//   mecho                       mailbox echo: answer every slot message
//                               with the same bytes
//   mping PEER ROUNDS BATCHES [WARMUP]
//                               64-byte requests to PEER, each sent when
//                               the last answer arrives
//                               -> {"samples":[us per round trip, ...]}
//   rrecv COUNT [batch]         expect COUNT ring messages (read in place,
//                               sequence-checked; onRing, or with `batch`
//                               onRingBatch) -> {"armed":1},
//                               then {"end":HRTIME_NS,"count":COUNT}
//   rsend PEER SIZE COUNT       write COUNT SIZE-byte messages in place into
//                               the ring channel to PEER
//                               -> {"sent":COUNT,"start":HRTIME_NS}
//   poll US                     busy-poll window of the client (0: off)
//                               -> {"ok":1}
//   quit
// Every wait is bounded; the process exits when stdin closes.
import * as readline from 'node:readline';

import { Client } from '../../ts/client/client.js';
import { FabricClient } from '../../ts/fabric/client.js';
import { sendInPlace } from './ring-send.js';

const [kind, sock] = process.argv.slice(2);
const out = (o: unknown) => process.stdout.write(`${JSON.stringify(o)}\n`);
const fail = (msg: string): never => {
  process.stderr.write(`bench peer: ${msg}\n`);
  process.exit(1);
};
setTimeout(() => fail('ran for over 10 minutes'), 600_000).unref();

/** Round trips in callback style, as the echo side and the C loop run
 * them: `go()` starts one, `answered()` (called on each answer) starts the
 * next until the batch is done. One promise per batch and one watchdog
 * for the run (no answer for 10 s fails it): a promise or a timer per
 * round trip would be the benchmark's own cost. */
function roundTrips(what: string, go: () => void) {
  let left = 0;
  let done: () => void = () => {};
  let answers = 0;
  const batch = (k: number) =>
    new Promise<void>((r) => {
      left = k;
      done = r;
      go();
    });
  return {
    answered: () => {
      answers++;
      if (--left > 0) go();
      else done();
    },
    /** us per round trip for each of `batches` batches, after an untimed
     * warm-up (the JIT). */
    async run(rounds: number, batches: number, warmup: number): Promise<number[]> {
      let seen = -1;
      const watchdog = setInterval(() => {
        if (answers === seen) fail(`no ${what} answer in 10 s`);
        seen = answers;
      }, 10_000);
      await batch(Math.max(1, warmup || Math.floor(rounds / 10)));
      const samples: number[] = [];
      for (let b = 0; b < batches; b++) {
        const t0 = process.hrtime.bigint();
        await batch(rounds);
        samples.push(Number(process.hrtime.bigint() - t0) / 1e3 / rounds);
      }
      clearInterval(watchdog);
      return samples;
    },
  };
}

/** The rrecv consumer: counts and checks messages until `count`. */
const rx = {
  count: 0,
  got: 0,
  timer: null as NodeJS.Timeout | null,
  words: null as Uint32Array | null,
  fabric: null as FabricClient | null,
  done(): void {
    clearTimeout(rx.timer!);
    rx.fabric!.onRing(null);
    rx.fabric!.onRingBatch(null);
    out({ end: String(process.hrtime.bigint()), count: rx.got });
  },
  batch(_from: number, bytes: Buffer, at: Int32Array, _len: Int32Array, k: number): void {
    // Records are 8-aligned: the sequence number is one u32 load.
    if (rx.words?.buffer !== bytes.buffer || rx.words.byteOffset !== bytes.byteOffset) rx.words = new Uint32Array(bytes.buffer, bytes.byteOffset, bytes.length >>> 2);
    const words = rx.words;
    let got = rx.got;
    for (let i = 0; i < k; i++, got++) {
      if (words[at[i] >>> 2] !== got >>> 0) fail(`ring: message ${got} carries sequence ${words[at[i] >>> 2]}`);
    }
    rx.got = got;
    if (got >= rx.count) rx.done();
  },
  each(_from: number, bytes: Buffer, start: number): void {
    const words = (rx.words ??= new Uint32Array(bytes.buffer, bytes.byteOffset, bytes.length >>> 2));
    if (words[start >>> 2] !== rx.got >>> 0) fail(`ring: message ${rx.got} carries sequence ${words[start >>> 2]}`);
    if (++rx.got === rx.count) rx.done();
  },
};

async function main(): Promise<void> {
  const fabric = kind === 'fabric' ? await FabricClient.connect(sock, { nodename: `bench-${process.pid}`.slice(0, 31) }) : null;
  // A FabricClient wraps a Client; reach it for the raw doorbell paths.
  const client: Client = fabric ? (fabric.transport as Client) : await Client.connect(sock, kind === 'host' ? {} : { vectors: 1 });
  rx.fabric = fabric;
  const word = new Uint32Array(client.memory, 0, 1);
  const rl = readline.createInterface({ input: process.stdin });
  rl.on('close', () => process.exit(0));
  for await (const line of rl) {
    const [cmd, ...a] = line.trim().split(/\s+/);
    const n = a.map(Number);
    switch (cmd) {
      case 'id':
        out({ id: client.id });
        break;
      case 'echo': {
        let target = -1;
        client.on('interrupt', () => {
          if (target < 0) target = Atomics.load(word, 0);
          client.answer(target, 0);
        });
        out({ ok: 1 });
        break;
      }
      case 'ping': {
        const [peer, rounds, batches, warmup] = n;
        Atomics.store(word, 0, client.id);
        // answer(): from the interrupt listener (every ring but a batch's
        // first), rung by the watch when the listener returns.
        const rt = roundTrips('doorbell', () => client.answer(peer, 0));
        client.on('interrupt', rt.answered);
        const samples = await rt.run(rounds, batches, warmup);
        client.removeAllListeners('interrupt');
        out({ samples });
        break;
      }
      case 'vping': {
        const [peer, rounds, batches, warmup] = n;
        const rt = roundTrips('doorbell', () => client.answer(peer, client.id));
        const onInterrupt = ({ vector }: { vector: number }) => {
          if (vector === peer) rt.answered();
        };
        client.on('interrupt', onInterrupt);
        const samples = await rt.run(rounds, batches, warmup);
        client.off('interrupt', onInterrupt);
        out({ samples });
        break;
      }
      case 'mecho':
        fabric!.on('message', (m) => {
          if (m.bytes.length === 64) void fabric!.send(m.from, m.bytes).catch((e: Error) => fail(e.message));
        });
        out({ ok: 1 });
        break;
      case 'mping': {
        // Each 64-byte answer sends the next request (send() posts at once:
        // the slot is free by then).
        const [peer, rounds, batches, warmup] = n;
        const req = new Uint8Array(64).fill(0x61);
        const f = fabric!;
        const onError = (e: Error) => fail(e.message);
        const rt = roundTrips('mailbox', () => void f.send(peer, req).catch(onError));
        const onMessage = (m: { from: number; bytes: Uint8Array }) => {
          if (m.from === peer && m.bytes.length === 64) rt.answered();
        };
        f.on('message', onMessage);
        const samples = await rt.run(rounds, batches, warmup);
        f.off('message', onMessage);
        out({ samples });
        break;
      }
      case 'rrecv': {
        // In place: each message's sequence number (its first 4 bytes) is
        // checked where it lies in the ring; nothing is copied. `batch`:
        // onRingBatch (many messages a call), else onRing (a call each).
        // One handler of each kind for the process (a new closure per rep
        // would cost the JIT a deoptimisation in each first rep).
        rx.count = n[0];
        rx.got = 0;
        rx.timer = setTimeout(() => fail(`ring: ${rx.got} of ${rx.count} messages after 60 s`), 60_000);
        if (a[1] === 'batch') fabric!.onRingBatch(rx.batch);
        else fabric!.onRing(rx.each);
        out({ armed: 1 });
        break;
      }
      case 'rsend': {
        // bench/js/ring-send.ts, bounded: a ring still full after 60 s fails.
        const [peer, size, count] = n;
        const deadline = Date.now() + 60_000;
        const start = String(process.hrtime.bigint());
        await sendInPlace(fabric!.ringWriter(peer), size, count, (i) => {
          if (Date.now() > deadline) fail(`ring: still full at message ${i} after 60 s`);
        });
        out({ sent: count, start });
        break;
      }
      case 'poll':
        client.busyPoll = n[0];
        out({ ok: 1 });
        break;
      case 'quit':
        process.exit(0);
        break;
      default:
        fail(`unknown command '${line}'`);
    }
  }
}

main().catch((e: Error) => fail(e.stack ?? e.message));
