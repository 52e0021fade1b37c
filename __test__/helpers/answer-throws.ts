// Client.answer() from an 'interrupt' listener that then throws, in its own
// process (the throw is an uncaught exception, which a test worker would
// take for its own failure):
//
//   node --import=tsx __test__/helpers/answer-throws.ts DIR
//
// Two clients of a server of its own on DIR/sock: b's listener answers a on
// vector 2, then throws. Prints {"heard":[vectors a heard],"caught":[uncaught
// messages]} once a heard something or 5 s passed, and exits.
import * as path from 'node:path';

import { Client } from '../../ts/client/client.js';
import { Server } from '../../ts/server/server.js';

async function main(): Promise<void> {
  const socket = path.join(process.argv[2]!, 'sock');
  const server = Server.start({ socket, shm: { kind: 'memfd', name: 'answer-throws' }, size: 1 << 20, vectors: 3 });
  const caught: string[] = [];
  process.on('uncaughtException', (e) => caught.push(e.message));
  const a = await Client.connect(socket, { vectors: 3, timeoutMs: 15_000 });
  const b = await Client.connect(socket, { vectors: 3, timeoutMs: 15_000 });
  const until = Date.now() + 10_000;
  while (!(a.peers.has(b.id) && b.peers.has(a.id)) && Date.now() < until) await new Promise((r) => setTimeout(r, 10));
  const heard: number[] = [];
  a.on('interrupt', ({ vector }) => heard.push(vector));
  b.on('interrupt', () => {
    b.answer(a.id, 2);
    throw new Error('the listener fails after its answer');
  });
  a.ring(b.id, 0);
  const end = Date.now() + 5000;
  while (heard.length === 0 && Date.now() < end) await new Promise((r) => setTimeout(r, 10));
  // A little longer: a second ring (one answer rung twice) would show too.
  await new Promise((r) => setTimeout(r, 100));
  process.stdout.write(`${JSON.stringify({ heard, caught })}\n`);
  a.close();
  b.close();
  server.close();
}

main().then(
  () => process.exit(0),
  (e: Error) => {
    process.stderr.write(`answer-throws: ${e.stack ?? e.message}\n`);
    process.exit(1);
  },
);
