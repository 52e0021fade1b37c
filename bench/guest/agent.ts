// The JavaScript side of the `guest` benchmark group, run inside a famez
// VM (bench/run.ts types its commands into the VM's console): famez's own
// API on the guest transport, the same roles as bench/baseline/guest.c.
//
//   node guest-agent.js FAMEZ_ROOT     (compiled by the runner with esbuild;
//                                       famez itself is FAMEZ_ROOT/dist)
//
// Opens GuestTransport (VFIO), prints {"agent":"js","id":ID,"vectors":V},
// then one command a line from stdin:
//
//   echo PEER        "ready"; on every 'interrupt' on vector PEER rings
//                    PEER (vector ID) back, until the next input line
//                    -> {"echoed":N}
//   ping PEER ROUNDS BATCHES WARMUP
//                    doorbell round trips with PEER -> {"samples":[us...]}
//   mping ROUNDS BATCHES WARMUP
//                    FabricClient.request('switch', 'ping') after
//                    request -> {"samples":[us...]}
//   rrecv PEER COUNT "ready"; FabricClient.onRing: COUNT messages from
//                    PEER, sequence number checked in place
//                    -> {"count":N,"samples":[msg/s first to last message]}
//   rsend PEER SIZE COUNT
//                    FabricClient.ringWriter(PEER): reserve, copy the
//                    payload in, stamp the sequence number, commit; a full
//                    ring yields to the loop -> {"sent":N}
//   wake COUNT       a famez EventFd watched on Node's loop, signalled
//                    again (signalFd) from each of its own callbacks, COUNT
//                    times: the loop's cost per event -> {"samples":[us]}
//   bell PEER COUNT  COUNT transport.ring(PEER, 0) (a vector the host peer
//                    ignores) -> {"samples":[us per ring]}
//   copy SIZE COUNT  COUNT Buffer.set of SIZE bytes (what rsend does per
//                    message) -> {"samples":[us per copy]}
//   quit
// The doorbell roles use the transport alone; the FabricClient is attached
// on the first mailbox or ring command (it then also sees every interrupt).
// Every wait is bounded: 10 s without progress prints {"error":...}, exit 1.
import * as path from 'node:path';
import * as readline from 'node:readline';

import { sendInPlace } from '../js/ring-send.js';

type Famez = typeof import('../../ts/index.js');
type FabricClient = import('../../ts/fabric/client.js').FabricClient;

const WAIT_MS = 10_000;
const out = (o: unknown) => process.stdout.write(`${JSON.stringify(o)}\n`);
const fail = (msg: string): never => {
  out({ error: msg });
  process.exit(1);
};

async function main(): Promise<void> {
  const root = process.argv[2];
  if (!root) fail('usage: guest-agent.js FAMEZ_ROOT');
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const famez = require(path.join(root, 'dist', 'index.js')) as Famez;
  const transport = famez.GuestTransport.open({ mode: 'vfio' });
  const id = transport.id;
  let fabric: FabricClient | null = null;
  const fab = () => (fabric ??= famez.FabricClient.attach(transport, { nodename: `bench-${process.env.FAMEZ_VM ?? id}` }));
  out({ agent: 'js', id, vectors: transport.vectors });

  const rl = readline.createInterface({ input: process.stdin });
  const lines: string[] = [];
  let wake: (() => void) | null = null;
  rl.on('line', (l) => {
    lines.push(l);
    wake?.();
  });
  rl.on('close', () => process.exit(0));
  const nextLine = async (): Promise<string> => {
    while (lines.length === 0) await new Promise<void>((r) => (wake = r));
    wake = null;
    return lines.shift()!;
  };

  /** A watchdog: fails when `progress()` has not changed for WAIT_MS. */
  const watch = (what: string, progress: () => number) => {
    let seen = -1;
    const t = setInterval(() => {
      const now = progress();
      if (now === seen) fail(`no ${what} progress in ${WAIT_MS} ms (at ${now})`);
      seen = now;
    }, WAIT_MS);
    return () => clearInterval(t);
  };

  for (;;) {
    const line = await nextLine();
    const [cmd, ...a] = line.trim().split(/\s+/);
    const n = a.map(Number);
    switch (cmd) {
      case '':
        break;
      case 'echo': {
        const [peer] = n;
        let echoed = 0;
        const onInterrupt = ({ vector }: { vector: number }) => {
          if (vector !== peer) return;
          transport.ring(peer, id);
          echoed++;
        };
        transport.on('interrupt', onInterrupt);
        process.stdout.write('ready\n');
        await nextLine();
        transport.off('interrupt', onInterrupt);
        out({ echoed });
        break;
      }
      case 'ping': {
        // Callback style, as the C loop: each answer rings the next.
        const [peer, rounds, batches, warmup] = n;
        let left = 0;
        let answers = 0;
        let done: () => void = () => {};
        const onInterrupt = ({ vector }: { vector: number }) => {
          if (vector !== peer) return;
          answers++;
          if (--left > 0) transport.ring(peer, id);
          else done();
        };
        const batch = (k: number) =>
          new Promise<void>((r) => {
            left = k;
            done = r;
            transport.ring(peer, id);
          });
        transport.on('interrupt', onInterrupt);
        const stop = watch('doorbell', () => answers);
        await batch(Math.max(1, warmup || Math.floor(rounds / 10)));
        const samples: number[] = [];
        for (let b = 0; b < batches; b++) {
          const t0 = process.hrtime.bigint();
          await batch(rounds);
          samples.push(Number(process.hrtime.bigint() - t0) / 1e3 / rounds);
        }
        stop();
        transport.off('interrupt', onInterrupt);
        out({ samples });
        break;
      }
      case 'mping': {
        const [rounds, batches, warmup] = n;
        const f = fab();
        let answers = 0;
        const stop = watch('mailbox', () => answers);
        const one = async () => {
          const r = await f.request('switch', 'ping', { timeoutMs: WAIT_MS });
          if (r.text !== 'pong') fail(`the switch answered '${r.text}'`);
          answers++;
        };
        for (let i = 0; i < Math.max(1, warmup || Math.floor(rounds / 10)); i++) await one();
        const samples: number[] = [];
        for (let b = 0; b < batches; b++) {
          const t0 = process.hrtime.bigint();
          for (let i = 0; i < rounds; i++) await one();
          samples.push(Number(process.hrtime.bigint() - t0) / 1e3 / rounds);
        }
        stop();
        out({ samples });
        break;
      }
      case 'rrecv': {
        const [peer, count] = n;
        const f = fab();
        let got = 0;
        let first = 0n;
        let words: Uint32Array | null = null;
        const finished = new Promise<bigint>((resolve) => {
          f.onRing((from, bytes, start) => {
            if (from !== peer) return;
            // Records are 8-aligned: the sequence number is one u32 load.
            words ??= new Uint32Array(bytes.buffer, bytes.byteOffset, bytes.length >>> 2);
            if (words[start >>> 2] !== got >>> 0) fail(`ring: message ${got} carries sequence ${words[start >>> 2]}`);
            if (got === 0) first = process.hrtime.bigint();
            if (++got === count) resolve(process.hrtime.bigint());
          });
        });
        const stop = watch('ring', () => got);
        process.stdout.write('ready\n');
        const end = await finished;
        stop();
        f.onRing(null);
        out({ count: got, samples: [count > 1 ? Math.round((count - 1) / (Number(end - first) / 1e9)) : 0] });
        break;
      }
      case 'rsend': {
        // bench/js/ring-send.ts, watched: no progress for WAIT_MS fails.
        const [peer, size, count] = n;
        let sent = 0;
        const stop = watch('ring send', () => sent);
        await sendInPlace(fab().ringWriter(peer), size, count, (i) => (sent = i));
        stop();
        out({ sent: count });
        break;
      }
      case 'wake': {
        const [count] = n;
        const e = new famez.native.EventFd();
        const { signalFd } = famez.native;
        let k = 0;
        const t0 = process.hrtime.bigint();
        const t1 = await new Promise<bigint>((resolve) => {
          e.watch(() => {
            if (++k < count) signalFd(e.fd);
            else resolve(process.hrtime.bigint());
          });
          signalFd(e.fd);
        });
        e.close();
        out({ samples: [Number(t1 - t0) / 1e3 / count] });
        break;
      }
      case 'bell': {
        const [peer, count] = n;
        const t0 = process.hrtime.bigint();
        for (let i = 0; i < count; i++) transport.ring(peer, 0);
        out({ samples: [Number(process.hrtime.bigint() - t0) / 1e3 / count] });
        break;
      }
      case 'copy': {
        const [size, count] = n;
        const src = Buffer.alloc(size, 0x5a);
        const dst = Buffer.alloc(size);
        const t0 = process.hrtime.bigint();
        for (let i = 0; i < count; i++) dst.set(src, 0);
        out({ samples: [Number(process.hrtime.bigint() - t0) / 1e3 / count] });
        break;
      }
      case 'quit':
        (fabric as FabricClient | null)?.close();
        transport.close();
        process.exit(0);
        break;
      default:
        out({ error: `unknown command '${line}'` });
    }
  }
}

main().catch((e: Error) => fail(e.stack ?? e.message));
