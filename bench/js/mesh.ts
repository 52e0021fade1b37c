// connect-mesh: COUNT peers of one server in this process; each waits until
// it knows EXPECT other peers.
//
//   node --import=tsx bench/js/mesh.ts client|fabric SOCKET COUNT EXPECT
//
// Prints {"ready":1} once loaded; on the line "go" it connects its peers one
// after the other (as fast as the server answers) and prints
// {"done":EPOCH_MS} (Date.now()) when every one of them knows EXPECT others,
// then waits for stdin to close (the runner closes it after all the mesh
// processes are done, so no peer leaves before the others have counted it).
import * as readline from 'node:readline';

import { Client } from '../../ts/client/client.js';

const [kind, sock, countArg, expectArg] = process.argv.slice(2);
const count = Number(countArg);
const expect = Number(expectArg);
const fail = (msg: string): never => {
  process.stderr.write(`bench mesh: ${msg}\n`);
  process.exit(1);
};
setTimeout(() => fail('ran for over 2 minutes'), 120_000).unref();

async function go(): Promise<void> {
  const clients: Client[] = [];
  for (let i = 0; i < count; i++) clients.push(await Client.connect(sock, { vectors: kind === 'fabric' ? undefined : 1, timeoutMs: 30_000 }));
  const deadline = Date.now() + 60_000;
  while (!clients.every((c) => c.peers.size >= expect)) {
    if (Date.now() > deadline) fail(`mesh incomplete: ${clients.map((c) => c.peers.size).join(',')} of ${expect}`);
    await new Promise((r) => setImmediate(r));
  }
  process.stdout.write(`${JSON.stringify({ done: Date.now() })}\n`);
}

const rl = readline.createInterface({ input: process.stdin });
rl.on('line', (l) => {
  if (l.trim() === 'go') go().catch((e: Error) => fail(e.message));
});
rl.on('close', () => process.exit(0));
process.stdout.write(`${JSON.stringify({ ready: 1 })}\n`);
