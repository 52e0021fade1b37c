// A hostile fabric peer in its own process, for tests:
//
//   node --import=tsx __test__/helpers/flooder.ts SOCKET ping|doorbell MS
//
// ping: posts `ping` to the switch whenever its own slot is free (as fast
// as the switch takes them) and never reads an answer. doorbell: rings the
// switch's vector as fast as it can, with no message. Prints
// {"event":"ready","id":N}, floods for MS milliseconds (bounded), prints
// {"event":"done","count":N} and stays connected until killed.
import { Client } from '../../ts/client/client.js';
import { Slots } from '../../ts/fabric/slots.js';

async function main(): Promise<void> {
  const [socket, mode, msArg] = process.argv.slice(2);
  const client = await Client.connect(socket, { timeoutMs: 15_000 });
  const memory = client.memory;
  const nClients = Number(new BigUint64Array(memory, 0, 3)[2]);
  const me = client.id;
  const sw = nClients + 1;
  const slots = new Slots(memory, sw);
  const ping = Buffer.from('ping');
  process.stdout.write(`${JSON.stringify({ event: 'ready', id: me })}\n`);
  const until = Date.now() + Number(msArg);
  let count = 0;
  await new Promise<void>((resolve) => {
    const turn = () => {
      for (let i = 0; i < 1000; i++) {
        if (mode === 'ping') {
          if (!slots.post(me, sw, ping)) continue;
        }
        client.ring(sw, me);
        count++;
      }
      if (Date.now() < until) setImmediate(turn);
      else resolve();
    };
    turn();
  });
  process.stdout.write(`${JSON.stringify({ event: 'done', count })}\n`);
  setInterval(() => undefined, 60_000);
}

main().catch((e) => {
  process.stderr.write(`${(e as Error).stack}\n`);
  process.exit(1);
});
