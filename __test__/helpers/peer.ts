// A famez peer in its own process, driven over stdin/stdout with JSON lines.
//
//   node --import=tsx __test__/helpers/peer.ts SOCKET [VECTORS]
//
// Connects with the library Client and prints
//   {"event":"ready","id":..,"vectors":..,"vectorsAtConnect":..,"peers":[{id,vectors}],"size":..}
// then one line per client event: interrupt {vector,count}, join {id,vectors},
// leave {id}, close {reason}. With VECTORS it waits (bounded) until all its
// own vectors are in before saying ready, since Client.connect may resolve
// before the end of its own group.
//
// Commands (one JSON object a line, answered by {"reply":seq,"ok":true,...}
// or {"reply":seq,"ok":false,"error":...}):
//   {"seq":1,"cmd":"ring","peer":0,"vector":1}      vector may be "all"
//   {"seq":2,"cmd":"write","offset":4096,"hex":"6869"}
//   {"seq":3,"cmd":"read","offset":4096,"length":2}   -> {"hex":"6869"}
//   {"seq":4,"cmd":"info"}                            -> {"id","vectors","peers"}
//   {"seq":5,"cmd":"close"}                           closes the client, then exits
import { createInterface } from 'node:readline';

import { Client } from '../../ts/client/client.js';
import { waitFor } from './wait.js';

const out = (o: Record<string, unknown>): void => {
  process.stdout.write(`${JSON.stringify(o)}\n`);
};

async function main(): Promise<void> {
  const [socket, vectorsArg] = process.argv.slice(2);
  const client = await Client.connect(socket, { timeoutMs: 15_000 });
  const vectorsAtConnect = client.vectors;
  if (vectorsArg) {
    const want = Number(vectorsArg);
    // Bounded; on time-out it says ready with what it has (the test sees vectors).
    await waitFor(() => client.vectors >= want, 'all own vectors', 10_000).catch(() => undefined);
  }
  const peers = () => [...client.peers.values()].map((p) => ({ id: p.id, vectors: p.vectors }));
  client.on('interrupt', ({ vector, count }) => out({ event: 'interrupt', vector, count }));
  client.on('join', (p) => out({ event: 'join', id: p.id, vectors: p.vectors }));
  client.on('leave', ({ id }) => out({ event: 'leave', id }));
  client.on('close', ({ reason }) => {
    out({ event: 'close', reason });
    process.exitCode = 0;
    rl.close();
    process.stdin.destroy();
  });
  const rl = createInterface({ input: process.stdin });
  out({ event: 'ready', id: client.id, vectors: client.vectors, vectorsAtConnect, peers: peers(), size: client.memory.byteLength });

  rl.on('line', (line) => {
    if (!line.trim()) return;
    let msg: { seq: number; cmd: string; [k: string]: unknown };
    try {
      msg = JSON.parse(line);
    } catch (e) {
      out({ reply: null, ok: false, error: `bad JSON: ${(e as Error).message}` });
      return;
    }
    const reply = (extra: Record<string, unknown> = {}) => out({ reply: msg.seq, ok: true, ...extra });
    try {
      switch (msg.cmd) {
        case 'ring':
          client.ring(msg.peer as number, msg.vector as number | 'all');
          reply();
          break;
        case 'write': {
          const bytes = Buffer.from(msg.hex as string, 'hex');
          new Uint8Array(client.memory).set(bytes, msg.offset as number);
          reply();
          break;
        }
        case 'read': {
          const view = new Uint8Array(client.memory, msg.offset as number, msg.length as number);
          reply({ hex: Buffer.from(view).toString('hex') });
          break;
        }
        case 'info':
          reply({ id: client.id, vectors: client.vectors, peers: peers(), closed: client.closed });
          break;
        case 'close':
          reply();
          client.close();
          break;
        default:
          out({ reply: msg.seq, ok: false, error: `unknown command ${msg.cmd}` });
      }
    } catch (e) {
      out({ reply: msg.seq, ok: false, error: (e as Error).message });
    }
  });
  // stdin closing (the test going away) ends the peer.
  rl.on('close', () => {
    if (!client.closed) client.close();
  });
}

main().catch((e: unknown) => {
  out({ event: 'error', message: e instanceof Error ? e.message : String(e) });
  process.exitCode = 1;
});
