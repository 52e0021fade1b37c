// BusyPoll (ts/busy-poll.ts, famez serve --busy-poll): after a kick the
// loop keeps turning through immediates for the window, then stops; 0 never
// polls; close() stops it for good. The turns are followed through
// async_hooks, as the Client's busy-polling test does.
import { createHook } from 'node:async_hooks';

import test from 'ava';

import { BusyPoll } from '../ts/busy-poll.js';
import { yieldCpu } from '../ts/native.js';
import { waitFor } from './helpers/wait.js';

/** Immediates made while `f` runs and by immediates of that chain. */
async function chainOf(f: () => void, settle: () => boolean): Promise<{ made: number; ran: number; lastRun: number }> {
  const chain = new Set<number>();
  let ran = 0;
  let lastRun = 0;
  let inside = false;
  const hook = createHook({
    init(id, type, trigger) {
      if (type === 'Immediate' && (inside || chain.has(trigger))) chain.add(id);
    },
    before(id) {
      if (chain.has(id)) lastRun = performance.now();
    },
    destroy(id) {
      if (chain.has(id)) ran++;
    },
  }).enable();
  try {
    inside = true;
    try {
      f();
    } finally {
      inside = false;
    }
    await waitFor(settle, 'the busy poll to end', 15_000);
    // The last immediate's destroy comes after its callback.
    await new Promise((r) => setImmediate(r));
    return { made: chain.size, ran, lastRun };
  } finally {
    hook.disable();
  }
}

test('BusyPoll: a kick keeps the loop turning for the window, then it stops', async (t) => {
  const bp = new BusyPoll(50_000);
  t.false(bp.polling);
  const kicked = performance.now();
  const { made, ran, lastRun } = await chainOf(() => bp.kick(), () => !bp.polling);
  // However slow the loop (a loaded machine), the chain's last turn comes
  // once the window is over, and it ends there by itself.
  t.true(made >= 1, `${made} turns of the loop`);
  t.true(lastRun - kicked >= 50, `the last turn ${(lastRun - kicked).toFixed(1)} ms after the kick (window 50 ms)`);
  t.is(ran, made, 'every turn ran and none is left');
  t.false(bp.polling);
  // A kick while polling starts the window again without a second chain.
  bp.kick();
  bp.kick();
  t.true(bp.polling);
  bp.close();
  t.false(bp.polling);
  bp.kick();
  t.false(bp.polling, 'closed: a kick does nothing');
});

test('BusyPoll: 0 is off (a kick schedules nothing); the window is 0..1000000 us', async (t) => {
  const bp = new BusyPoll(0);
  const { made } = await chainOf(() => bp.kick(), () => true);
  t.is(made, 0);
  t.false(bp.polling);
  for (const bad of [-1, 1_000_001, 1.5, Number.NaN]) t.throws(() => new BusyPoll(bad), { instanceOf: RangeError });
  t.notThrows(() => yieldCpu());
});
