// A fabric peer in its own process that counts ring messages from one
// peer of another switch, for serve-links.test.ts and netns-links.test.ts
// (which SIGSTOP it to make a slow consumer, or cut its link):
//   ring-sink.ts SOCKET NODENAME FROM-GCID COUNT [GAP-MS]
// prints {"ready":GCID} once joined, {"got":N} every 10,000, then
// {"done":N} when COUNT arrived in order (each message's first u32 its
// number), or {"error":...} at the first message out of order or twice;
// exits after 120 s in any case. With GAP-MS the lines carry times too:
// {"got":N,"at":EPOCH-MS}, and {"gap":MS,"at":EPOCH-MS,"next":N} when
// message N came GAP-MS or more after the one before it (the stream stood
// still that long).
import { FabricClient } from '../../ts/fabric/client.js';

const [sock, nodename, fromArg, countArg, gapArg] = process.argv.slice(2);
const from = Number(fromArg);
const count = Number(countArg);
const gapMs = gapArg === undefined ? null : Number(gapArg);
const out = (o: unknown) => process.stdout.write(`${JSON.stringify(o)}\n`);
setTimeout(() => {
  out({ error: 'still running after 120 s' });
  process.exit(1);
}, 120_000).unref();

void FabricClient.connect(sock!, { nodename }).then((peer) => {
  let next = 0;
  let last = 0;
  peer.on('data', ({ gcid, messages }) => {
    if (gcid !== from) return;
    const now = Date.now();
    if (gapMs !== null && next > 0 && now - last >= gapMs) out({ gap: now - last, at: now, next });
    last = now;
    for (const m of messages) {
      const n = m.readUInt32LE(0);
      if (n !== next) {
        out({ error: `message ${n} where ${next} was due` });
        process.exit(1);
      }
      next++;
      if (next % 10_000 === 0) out(gapMs === null ? { got: next } : { got: next, at: now });
      if (next === count) {
        out({ done: next });
        peer.close();
        process.exit(0);
      }
    }
  });
  out({ ready: peer.gcid });
});
