// A quick look at the links' stream (not part of the bench's rows): two
// famez serve joined by a link, a link peer on each, COUNT messages of SIZE
// bytes A -> B; prints msg/s. PROF=dir runs both switches with --cpu-prof
// into dir. Pinned A to CPU 0, B to CPU 1 like the bench's cross-cpu.
//   node --import=tsx bench/js/link-stream-probe.ts [COUNT] [SIZE] [REPS]
// RTT=1: COUNT round trips of SIZE bytes per batch, REPS batches, instead;
// READ=1: COUNT remote reads of SIZE bytes of A's memory from B's peer.
// SAME=1: all four on CPU 0 (the bench's same-cpu).
// BUSY=US: both switches with --busy-poll US and both peers with busyPollUs
// US (PEERBUSY=US sets the peers' apart). DIST=1: the switches run the
// built famez (dist/cli/main.js, after npm run build:ts), not the sources
// under tsx.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { Child } from '../lib/child.js';

const [count = 5000, size = 4096, reps = 3] = process.argv.slice(2).map(Number);
const prof = process.env.PROF;
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'famez-probe-'));
const fam = path.join(dir, 'fam');
fs.writeFileSync(fam, Buffer.alloc(1 << 20));
const node = (args: string[]) => new Child(process.execPath, [...(prof ? ['--cpu-prof', `--cpu-prof-dir=${prof}`] : []), ...(args[0]!.endsWith('.js') ? [] : ['--import=tsx']), ...args]);
// DIST=1: the switches run the built famez (dist/cli/main.js, npm run build:ts), as users run it.
const MAIN = process.env.DIST ? 'dist/cli/main.js' : 'ts/cli/main.ts';
const busy = process.env.BUSY ?? '0';
const peerBusy = process.env.PEERBUSY ?? busy;
const big = ['-l', '16M', '--ring-capacity', '256K', ...(busy !== '0' ? ['--busy-poll', busy] : [])];

async function main(): Promise<void> {
  const sa = node([MAIN, 'serve', '-S', `${dir}/a`, '--memfd', '--sid', '1', '--max-peers', '4', ...big, '--no-http', '--link-listen', '127.0.0.1:0', '--fam', fam]);
  const addr = /listening on (127\.0\.0\.1:\d+)/.exec(await sa.waitFor(/listening on 127\.0\.0\.1:\d+/, 30_000, 'listener', true))![1];
  const sb = node([MAIN, 'serve', '-S', `${dir}/b`, '--memfd', '--sid', '2', '--max-peers', '4', ...big, '--no-http', '--link', addr]);
  await sb.waitFor(/serving on /, 30_000, 'b', true);
  const pa = node(['bench/js/link-peer.ts', `${dir}/a`, 'la', peerBusy]);
  const pb = node(['bench/js/link-peer.ts', `${dir}/b`, 'lb', peerBusy]);
  sa.pin(0, 'a');
  pa.pin(0, 'pa');
  sb.pin(process.env.SAME ? 0 : 1, 'b');
  pb.pin(process.env.SAME ? 0 : 1, 'pb');
  const gb = (await pb.ask<{ gcid: number }>('gcid', 30_000)).gcid;
  const ga = (await pa.ask<{ gcid: number }>('gcid', 30_000)).gcid;
  await pa.ask(`wait ${gb}`, 40_000);
  if (process.env.READ) {
    // COUNT remote Core64 Reads of SIZE bytes of A's memory per batch from B's peer, REPS batches.
    await pb.ask(`wait ${0x1000 + 500}`, 40_000);
    const { samples } = await pb.ask<{ samples: number[] }>(`read ${0x1000 + 500} ${size} ${count} ${reps} 200`, 600_000);
    console.log(JSON.stringify({ readUs: samples.map((x) => Math.round(x)) }));
  }
  if (process.env.RTT) {
    // Round trips of SIZE-byte ring messages instead (COUNT per batch, REPS batches).
    await pb.ask('echo', 10_000);
    const { samples } = await pa.ask<{ samples: number[] }>(`rtt ${gb} ${size} ${count} ${reps} 200`, 600_000);
    console.log(JSON.stringify({ rttUs: samples.map((x) => Math.round(x)) }));
  }
  const out: number[] = [];
  for (let r = 0; r < (process.env.RTT || process.env.READ ? 0 : reps); r++) {
    pb.send(`sink ${ga} ${count}`);
    const { start } = await pa.ask<{ start: string }>(`send ${gb} ${size} ${count}`, 600_000);
    await pa.next(600_000, 'send');
    const { end } = await pb.next<{ end: string }>(600_000, 'sink');
    await pb.ask('echo', 10_000);
    out.push(count / (Number(BigInt(end) - BigInt(start)) / 1e9));
  }
  if (out.length) console.log(JSON.stringify({ count, size, msgPerS: out.map((x) => Math.round(x)) }));
  for (const c of [pa, pb]) {
    c.send('quit');
    await c.exited;
  }
  for (const c of [sa, sb]) {
    c.proc.kill('SIGINT');
    await c.exited;
  }
  fs.rmSync(dir, { recursive: true, force: true });
}
main().then(() => process.exit(0), (e: unknown) => {
  console.error(e);
  process.exit(1);
});
