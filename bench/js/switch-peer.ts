// switch-ping: FabricClients of one fabric server in this process, each
// asking the switch `ping` back to back; driven by the runner (bench/run.ts)
// through stdin lines, one JSON line per command.
//
//   node --import=tsx bench/js/switch-peer.ts SOCKET slot|ring
//
// slot: the clients set switchRing false, so the switch answers through its
// one FAME-Z slot (the handshake bench/baseline/switch.c does); ring: the
// default, the switch answers through its ring channel to each client.
//
// Commands:
//   connect K                  have K FabricClients (connects the missing
//                              ones) -> {"clients":K}
//   sping START WINDOW BATCHES every client loops `await
//                              request('switch', 'ping')` from now until
//                              START + WINDOW x BATCHES (ns, process.hrtime:
//                              CLOCK_MONOTONIC, the runner's clock too) and
//                              counts the answers that arrive in each of
//                              the BATCHES windows from START
//                              -> {"counts":[per window, all clients]}
//   quit
// Every wait is bounded; the process exits when stdin closes.
import * as readline from 'node:readline';

import { FabricClient } from '../../ts/fabric/client.js';

const [sock, route] = process.argv.slice(2);
if (route !== 'slot' && route !== 'ring') throw new Error(`switch-peer.ts SOCKET slot|ring, not '${route}'`);
const out = (o: unknown) => process.stdout.write(`${JSON.stringify(o)}\n`);
const fail = (msg: string): never => {
  process.stderr.write(`bench switch peer: ${msg}\n`);
  process.exit(1);
};
setTimeout(() => fail('ran for over 20 minutes'), 1_200_000).unref();

const clients: FabricClient[] = [];

async function sping(start: bigint, window: bigint, batches: number): Promise<number[]> {
  const end = start + window * BigInt(batches);
  const counts = new Array<number>(batches).fill(0);
  const loop = async (f: FabricClient) => {
    for (;;) {
      const pong = await f.request('switch', 'ping', { replyTimeoutMs: 10_000 });
      if (pong.text !== 'pong') fail(`the switch answered '${pong.text}'`);
      const t = process.hrtime.bigint();
      if (t >= end) return;
      if (t >= start) counts[Number((t - start) / window)]++;
    }
  };
  await Promise.all(clients.map(loop));
  return counts;
}

async function main(): Promise<void> {
  const rl = readline.createInterface({ input: process.stdin });
  rl.on('close', () => process.exit(0));
  for await (const line of rl) {
    const [cmd, ...a] = line.trim().split(/\s+/);
    switch (cmd) {
      case 'connect': {
        const k = Number(a[0]);
        while (clients.length < k) clients.push(await FabricClient.connect(sock, { switchRing: route === 'ring', nodename: `sping-${process.pid}-${clients.length}`.slice(0, 31), timeoutMs: 30_000 }));
        out({ clients: clients.length });
        break;
      }
      case 'sping':
        out({ counts: await sping(BigInt(a[0]), BigInt(a[1]), Number(a[2])) });
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
