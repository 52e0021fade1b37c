// ring-sink.ts with times, for netns-links.test.ts (a link cut mid-stream):
//   timed-sink.ts SOCKET NODENAME FROM-GCID COUNT GAP-MS
// prints {"ready":GCID} once joined, {"got":N,"at":EPOCH-MS} every 10,000,
// {"gap":MS,"at":EPOCH-MS,"next":N} when message N came GAP-MS or more after
// the one before it (the stream stood still that long), {"done":N} when
// COUNT arrived in order (each message's first u32 its number), or
// {"error":...} at the first message out of order or twice; exits after
// 120 s in any case.
import { FabricClient } from '../../ts/fabric/client.js';

const [sock, nodename, fromArg, countArg, gapArg] = process.argv.slice(2);
const from = Number(fromArg);
const count = Number(countArg);
const gapMs = Number(gapArg ?? 200);
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
    if (next > 0 && now - last >= gapMs) out({ gap: now - last, at: now, next });
    last = now;
    for (const m of messages) {
      const n = m.readUInt32LE(0);
      if (n !== next) {
        out({ error: `message ${n} where ${next} was due` });
        process.exit(1);
      }
      next++;
      if (next % 10_000 === 0) out({ got: next, at: now });
      if (next === count) {
        out({ done: next });
        peer.close();
        process.exit(0);
      }
    }
  });
  out({ ready: peer.gcid });
});
