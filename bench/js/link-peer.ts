// The links group's JS peer: one FabricClient of one switch, driven by the
// runner (bench/run.ts) through stdin lines, one JSON line per command.
//
//   node --import=tsx bench/js/link-peer.ts SOCKET NODENAME BUSY_POLL_US
//
// Commands:
//   gcid                         -> {"gcid":N}
//   wait GCID                    until the switch knows GCID's switch -> {"ok":true}
//   echo                         from now on, sends every ring message back
//                                to the peer (of another switch) it came from
//   rtt GCID SIZE ROUNDS BATCHES WARMUP
//                                ring message round trips to an echoing GCID
//                                -> {"samples":[us per round trip, per batch]}
//   read GCID SIZE ROUNDS BATCHES WARMUP
//                                FabricClient.read of SIZE bytes of GCID's memory
//                                -> {"samples":[us per read]}
//   sink FROM COUNT              expect COUNT ring messages from FROM (first
//                                u32 their number: checked) -> {"end":"NS"}
//                                once all arrived (process.hrtime)
//   send GCID SIZE COUNT         sends COUNT numbered messages of SIZE
//                                bytes -> {"start":"NS"} as it starts, then
//                                {"sent":COUNT}
//   quit
// Every wait is bounded; the process exits when stdin closes.
import * as readline from 'node:readline';

import { FabricClient } from '../../ts/fabric/client.js';
import { formatGcid } from '../../ts/fabric/remote.js';

const [sock, nodename, busyArg] = process.argv.slice(2);
const out = (o: unknown) => process.stdout.write(`${JSON.stringify(o)}\n`);
const fail = (msg: string): never => {
  process.stderr.write(`bench link peer: ${msg}\n`);
  process.exit(1);
};
setTimeout(() => fail('ran for over 20 minutes'), 1_200_000).unref();

async function main(): Promise<void> {
  const f = await FabricClient.connect(sock!, { nodename, busyPollUs: Number(busyArg) || 0, requestTimeoutMs: 30_000 });
  // One 'data' listener: what each command wants of ring messages.
  let onData: ((gcid: number | undefined, messages: Buffer[]) => void) | null = null;
  f.on('data', ({ gcid, messages }) => onData?.(gcid, messages));
  const rl = readline.createInterface({ input: process.stdin });
  rl.on('close', () => process.exit(0));
  for await (const line of rl) {
    const [cmd, ...a] = line.trim().split(/\s+/);
    const n = a.map(Number);
    switch (cmd) {
      case 'gcid':
        out({ gcid: f.gcid });
        break;
      case 'wait': {
        const sid = Math.floor(n[0] / 0x1000);
        const until = Date.now() + 30_000;
        while (!(await f.remotePeers()).some((p) => p.sid === sid)) {
          if (Date.now() > until) fail(`the switch knows no SID ${sid} after 30 s`);
          await new Promise((r) => setTimeout(r, 50));
        }
        out({ ok: true });
        break;
      }
      case 'echo':
        onData = (gcid, messages) => {
          if (gcid !== undefined) void f.sendRing(formatGcid(gcid), messages, { timeoutMs: 30_000 }).catch((e: Error) => fail(`echo: ${e.message}`));
        };
        out({ ok: true });
        break;
      case 'rtt': {
        const [to, size, rounds, batches, warmup] = n;
        const dest = formatGcid(to);
        const msg = Buffer.alloc(size, 0x5a);
        let answered: (() => void) | null = null;
        onData = (gcid) => {
          if (gcid === to && answered) {
            const r = answered;
            answered = null;
            r();
          }
        };
        const once = () =>
          new Promise<void>((resolve, reject) => {
            const t = setTimeout(() => reject(new Error('no echo within 10 s')), 10_000);
            answered = () => {
              clearTimeout(t);
              resolve();
            };
            f.sendRing(dest, [msg], { timeoutMs: 10_000 }).catch(reject);
          });
        for (let i = 0; i < warmup; i++) await once();
        const samples: number[] = [];
        for (let b = 0; b < batches; b++) {
          const t0 = process.hrtime.bigint();
          for (let i = 0; i < rounds; i++) await once();
          samples.push(Number(process.hrtime.bigint() - t0) / 1e3 / rounds);
        }
        onData = null;
        out({ samples });
        break;
      }
      case 'read': {
        const [owner, size, rounds, batches, warmup] = n;
        const dest = formatGcid(owner);
        for (let i = 0; i < warmup; i++) await f.read(dest, 0, size);
        const samples: number[] = [];
        for (let b = 0; b < batches; b++) {
          const t0 = process.hrtime.bigint();
          for (let i = 0; i < rounds; i++) await f.read(dest, 0, size);
          samples.push(Number(process.hrtime.bigint() - t0) / 1e3 / rounds);
        }
        out({ samples });
        break;
      }
      case 'sink': {
        const [from, count] = n;
        let next = 0;
        onData = (gcid, messages) => {
          if (gcid !== from) return;
          for (const m of messages) {
            const k = m.readUInt32LE(0);
            if (k !== next) fail(`sink: message ${k} where ${next} was due`);
            next++;
          }
          if (next === count) {
            onData = null;
            out({ end: String(process.hrtime.bigint()) });
          }
        };
        break;
      }
      case 'send': {
        const [to, size, count] = n;
        const msgs = Array.from({ length: count }, (_, i) => {
          const m = Buffer.alloc(size, 0x5a);
          m.writeUInt32LE(i, 0);
          return m;
        });
        out({ start: String(process.hrtime.bigint()) });
        await f.sendRing(formatGcid(to), msgs, { timeoutMs: 60_000 });
        out({ sent: count });
        break;
      }
      case 'quit':
        process.exit(0);
        break;
      default:
        fail(`unknown command '${line}'`);
    }
  }
}

main().catch((e: Error) => fail(e.stack ?? e.message));
