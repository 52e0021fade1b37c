// A rogue "switch" for netns-links.test.ts, run inside a network namespace:
//   rogue-link.ts HOST:PORT DEST-GCID
// connects a libfabric link to the switch listening at HOST:PORT and sends
// bytes that are no frame, a hello, a data frame whose packet's ECRC is
// wrong (its header CRC made right, so only the packet's check catches it),
// and an ack of what was never sent; prints {"sent":4} and stays connected
// (sending nothing more) until killed or 60 s pass.
import { Link } from '../../ts/link/ofi.js';
import { pieces } from '../../ts/link/carry.js';
import { encode } from '../../ts/link/frame.js';

const [addr, destArg] = process.argv.slice(2);
const dest = Number(destArg);
setTimeout(() => process.exit(0), 60_000).unref();
const link = Link.connect(addr!);
// The switch may drop it (it sends no heartbeats) while its last sends are on the way.
link.on('error', () => undefined);
void link.ready({ signal: AbortSignal.timeout(20_000) }).then(() => {
  link.send(Buffer.from('not a frame at all, just bytes'));
  link.send(encode({ type: 'hello', instance: 7, window: 8, seen: false, source: 0x9000 + 1500 }));
  const packet = pieces('mailbox', 0x9000 + 100, dest, Buffer.from('forged'), 0)[0]!;
  const data = encode({ type: 'data', source: 0x9000 + 100, destination: dest, seq: 0, packet });
  data[data.length - 2] ^= 0x40;
  link.send(data);
  link.send(encode({ type: 'ack', source: dest, destination: 0x9000 + 100, ack: 1000, credit: 1064 }));
  process.stdout.write(`${JSON.stringify({ sent: 4 })}\n`);
});
