// Idle peers for doorbell-rtt-peers-N: Clients of one server that join and
// then only sleep (no timers, no polling: their loop waits in epoll), in a
// process of their own, so that the pair being timed holds N peers' fds
// and nothing else keeps a CPU awake.
//
//   node --import=tsx bench/js/idle.ts SOCKET
//
// Commands (stdin lines): `peers K` -> connects until it holds K Clients
// (one vector each) -> {"peers":K}. The process exits when stdin closes.
import * as readline from 'node:readline';

import { Client } from '../../ts/client/client.js';

const [sock] = process.argv.slice(2);
const fail = (msg: string): never => {
  process.stderr.write(`bench idle peers: ${msg}\n`);
  process.exit(1);
};
setTimeout(() => fail('ran for over 20 minutes'), 1_200_000).unref();

const clients: Client[] = [];
const rl = readline.createInterface({ input: process.stdin });
rl.on('close', () => process.exit(0));
rl.on('line', (l) => {
  const [cmd, k] = l.trim().split(/\s+/);
  if (cmd !== 'peers') fail(`unknown command '${l}'`);
  void (async () => {
    while (clients.length < Number(k)) clients.push(await Client.connect(sock, { vectors: 1, timeoutMs: 30_000 }));
    process.stdout.write(`${JSON.stringify({ peers: clients.length })}\n`);
  })().catch((e: Error) => fail(e.message));
});
