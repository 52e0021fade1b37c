// A producer in its own process, for the cross-process burst tests:
//
//   node --import=tsx __test__/helpers/mailbox-peer.ts slots|rings|jsrings COUNT
//
// fd 3 is the shared object (a memfd, opened again through /proc/self/fd/3,
// so this process has its own mapping); fd 4 is the receiver's doorbell.
// Sends COUNT messages (helpers/messages.ts) from ID 1 to ID 2, ringing the
// doorbell as the protocol says (slots: after every post; rings: only when
// the ring was empty; rings through the native Ring, jsrings through the
// TypeScript RingWriter over this process's own mapping), prints {"done":COUNT,"bells":N} and exits. Waiting
// for space (a busy slot, a full ring) is a bounded spin: this process has
// nothing else to do.
import * as fs from 'node:fs';
import { createRequire } from 'node:module';
import * as path from 'node:path';

import type * as Binding from '../../index.js';
import { RingWriter, ringOffset } from '../../ts/fabric/ring.js';
import { message } from './messages.js';

const INDEX = path.resolve(path.dirname(process.argv[1]), '../../index.js');
const binding = createRequire(INDEX)(INDEX) as typeof Binding;

function main(): void {
  const [mode, countArg] = process.argv.slice(2);
  const count = Number(countArg);
  const deadline = Date.now() + 60_000;
  const shm = binding.SharedMemory.fromFd(fs.openSync('/proc/self/fd/3', 'r+'));
  const bell = binding.EventFd.adopt(4);
  let bells = 0;
  /** The burst in batches of 64, ringing when a push found the ring empty;
   * a full ring is a bounded spin. */
  const pushAll = (maxMessage: number, push: (batch: Buffer[], off: number) => number, wasEmpty: () => boolean) => {
    const max = Math.min(maxMessage, 4096);
    const BATCH = 64;
    for (let i = 0; i < count; ) {
      const batch: Buffer[] = [];
      for (let j = i; j < Math.min(i + BATCH, count); j++) batch.push(message(j, max));
      let off = 0;
      while (off < batch.length) {
        const n = push(batch, off);
        if (n > 0 && wasEmpty()) {
          bell.signal(1);
          bells++;
        }
        off += n;
        if (n === 0 && Date.now() > deadline) throw new Error(`ring still full at message ${i + off}`);
      }
      i += batch.length;
    }
  };
  if (mode === 'slots') {
    const mb = new binding.Mailbox(shm);
    for (let i = 0; i < count; i++) {
      const m = message(i, 383);
      while (!mb.post(1, 2, m)) {
        if (Date.now() > deadline) throw new Error(`slot still busy at message ${i}`);
      }
      bell.signal(1);
      bells++;
    }
  } else if (mode === 'jsrings') {
    const layout = new binding.Mailbox(shm).ringLayout;
    if (!layout) throw new Error('no rings in the mailbox');
    const ring = new RingWriter(shm.buffer as ArrayBuffer, ringOffset(layout, 1, 2), layout.capacity);
    pushAll(ring.maxMessage, (batch, off) => ring.pushBatch(batch, off), () => ring.wasEmpty);
  } else {
    const ring = new binding.Ring(shm, 1, 2);
    pushAll(ring.maxMessage, (batch, off) => ring.pushBatch(off === 0 ? batch : batch.slice(off)), () => ring.wasEmpty);
  }
  process.stdout.write(`${JSON.stringify({ done: count, bells })}\n`);
  bell.close();
  shm.close();
}

main();
