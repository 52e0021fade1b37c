// The fabric-manager election (ts/link/manager.ts), pure: one Election per
// switch, fed what the switches it reaches claim and the time. A primary
// claims at once, a secondary after the grace with nobody in charge, a
// returning old primary yields to the higher epoch; and over random
// partitions and merges of four switches, every part that can have a
// manager settles on exactly one, which all its switches agree on, and
// then nothing moves (no fight).
import test from 'ava';
import fc from 'fast-check';

import { Election, inCharge, type ManagerClaim } from '../ts/link/manager.js';
import type { FmRole } from '../ts/link/topology.js';

const kinds = (e: Election) => {
  const out: string[] = [];
  for (let ev = e.pollEvent(); ev; ev = e.pollEvent()) out.push(ev.kind === 'claim' ? `claim ${ev.epoch}${ev.took ? ` from ${ev.took.sid}` : ''}` : ev.kind === 'yield' ? `yield to ${ev.to.sid}` : `manager ${ev.manager ? `${ev.manager.sid}@${ev.manager.epoch}` : 'none'}`);
  return out;
};

test('inCharge: the highest epoch, the lower SID on a tie, nobody without a claim', (t) => {
  const c = (sid: number, epoch: number): ManagerClaim => ({ sid, role: 'primary', cid: 500, epoch });
  t.is(inCharge([]), null);
  t.is(inCharge([c(1, 0), c(2, 0)]), null);
  t.is(inCharge([c(1, 1), c(2, 2)])?.sid, 2);
  t.is(inCharge([c(3, 2), c(2, 2), c(4, 1)])?.sid, 2);
});

test('a primary alone manages at once (epoch 1); a secondary alone after the grace; none never', (t) => {
  const p = new Election({ sid: 1, cid: 500, role: 'primary' });
  p.update([], 0);
  t.deepEqual(kinds(p), ['claim 1', 'manager 1@1']);
  t.is(p.own.epoch, 1);
  t.is(p.pollTimeout(), null);
  const s = new Election({ sid: 2, cid: 500, role: 'secondary', graceMs: 500 });
  s.update([], 1000);
  t.deepEqual(kinds(s), []);
  t.is(s.manager, null);
  t.is(s.pollTimeout(), 1500);
  s.update([], 1499);
  t.deepEqual(kinds(s), []);
  s.update([], 1500);
  t.deepEqual(kinds(s), ['claim 1', 'manager 2@1']);
  const n = new Election({ sid: 3, cid: 500, role: 'none' });
  n.update([], 0);
  n.update([], 1e9);
  t.deepEqual(kinds(n), []);
  t.is(n.pollTimeout(), null);
  n.update([{ sid: 2, role: 'secondary', cid: 500, epoch: 1 }], 1e9);
  t.deepEqual(kinds(n), ['manager 2@1']);
});

test('the primary gone, the secondary takes over with a higher epoch; the old primary back (a new run) yields to it instead of fighting', (t) => {
  const a = { sid: 1, role: 'primary' as FmRole, cid: 500, epoch: 1 };
  const b = new Election({ sid: 2, cid: 500, role: 'secondary', graceMs: 500 });
  b.update([a], 0);
  t.deepEqual(kinds(b), ['manager 1@1']);
  t.is(b.own.epoch, 0);
  b.update([], 100); // a's switch is gone
  t.deepEqual(kinds(b), ['manager none']);
  t.is(b.pollTimeout(), 600);
  b.update([], 600);
  t.deepEqual(kinds(b), ['claim 2 from 1', 'manager 2@2']);
  // a starts again, knowing nothing: it claims epoch 1 at once, until it hears b.
  const again = new Election({ sid: 1, cid: 500, role: 'primary' });
  again.update([], 700);
  t.deepEqual(kinds(again), ['claim 1', 'manager 1@1']);
  again.update([b.own], 800);
  t.deepEqual(kinds(again), ['yield to 2', 'manager 2@2']);
  b.update([again.own], 800);
  t.deepEqual(kinds(b), [], 'b stays in charge');
  // Later b goes: the old primary, which saw a manager, waits the grace like a secondary.
  again.update([], 900);
  t.deepEqual(kinds(again), ['manager none']);
  again.update([], 1400);
  t.deepEqual(kinds(again), ['claim 3 from 2', 'manager 1@3']);
});

test('two claims of one epoch (a partition healed): the higher SID yields', (t) => {
  const x = new Election({ sid: 4, cid: 100, role: 'secondary', graceMs: 0 });
  x.update([], 0);
  kinds(x);
  x.update([{ sid: 3, role: 'secondary', cid: 100, epoch: 1 }], 10);
  t.deepEqual(kinds(x), ['yield to 3', 'manager 3@1']);
});

const roleArb = fc.constantFrom<FmRole>('primary', 'secondary', 'none');

test('property: over random partitions, merges and restarts of four switches, each part settles on one manager all of it agrees on (when any switch there may manage), and then nothing changes', (t) => {
  fc.assert(
    fc.property(
      fc.array(roleArb, { minLength: 4, maxLength: 4 }),
      fc.array(fc.record({ parts: fc.array(fc.nat({ max: 3 }), { minLength: 4, maxLength: 4 }), restart: fc.option(fc.nat({ max: 3 }), { nil: undefined }) }), { minLength: 1, maxLength: 12 }),
      (roles, phases) => {
        const make = (i: number) => new Election({ sid: i + 1, cid: 500, role: roles[i]!, graceMs: 300 });
        const es = roles.map((_, i) => make(i));
        let now = 0;
        for (const phase of phases) {
          if (phase.restart !== undefined) es[phase.restart] = make(phase.restart);
          const members = (i: number) => es.filter((_, j) => j !== i && phase.parts[j] === phase.parts[i]);
          // Rounds of advertisements (each switch sees the others' claims of the last round) until quiet.
          let quiet = 0;
          for (let round = 0; round < 60 && quiet < 10; round++) {
            now += 100;
            const claims = es.map((e) => e.own);
            let moved = false;
            es.forEach((e, i) => {
              e.update(members(i).map((m) => claims[es.indexOf(m)]!), now);
              if (kinds(e).length) moved = true;
            });
            quiet = moved ? 0 : quiet + 1;
          }
          t.true(quiet >= 10, 'settled');
          for (const part of new Set(phase.parts)) {
            const inPart = es.filter((_, i) => phase.parts[i] === part);
            const claiming = inPart.filter((e) => e.own.epoch > 0);
            const mayManage = inPart.some((e) => e.config.role !== 'none');
            t.is(claiming.length, mayManage ? 1 : 0, `part ${part}: ${claiming.length} claim`);
            const seen = new Set(inPart.map((e) => (e.manager ? `${e.manager.sid}@${e.manager.epoch}` : 'none')));
            t.is(seen.size, 1, `part ${part} agrees: ${[...seen].join(', ')}`);
          }
        }
      },
    ),
    { numRuns: 300 },
  );
});
