// A peer's socket backlog (ts/server/backlog.ts) with a fake clock: runs,
// order, and when a peer is too slow.
import test from 'ava';

import { Backlog, HARD_QUEUE_FACTOR } from '../ts/server/backlog.js';

const vec = (value: number, peer: number, vector: number) => ({ value, fd: { kind: 'vector' as const, peer, vector } });

test('a group is one run and comes out in order, one vector after the other', (t) => {
  const b = new Backlog(0, 0);
  t.true(b.empty);
  t.is(b.front(), null);
  for (let v = 0; v < 4; v++) b.push(vec(7, 7, v));
  b.push({ value: 9, fd: null });
  b.push(vec(7, 7, 4)); // after another message: a new run, still in order
  t.is(b.waiting, 6);
  const out: string[] = [];
  for (let q = b.front(); q !== null; q = b.front()) {
    out.push(q.fd?.kind === 'vector' ? `${q.value}:${q.fd.vector}` : `${q.value}`);
    b.shift(1);
  }
  t.deepEqual(out, ['7:0', '7:1', '7:2', '7:3', '9', '7:4']);
  t.true(b.empty);
  t.is(b.waiting, 0);
});

test('runs do not merge across peers, values or gaps', (t) => {
  const b = new Backlog(0, 0);
  b.push(vec(1, 1, 0));
  b.push(vec(1, 2, 1)); // another peer's fd
  b.push(vec(2, 2, 2)); // another value
  b.push(vec(2, 2, 4)); // a gap
  const out: string[] = [];
  for (let q = b.front(); q !== null; q = b.front()) {
    out.push(`${q.value}/${q.fd?.kind === 'vector' ? `${q.fd.peer}.${q.fd.vector}` : '-'}`);
    b.shift(0);
  }
  t.deepEqual(out, ['1/1.0', '1/2.1', '2/2.2', '2/2.4']);
});

test('over maxQueued a peer is too slow only once it has taken nothing for stallMs; its welcome never counts', (t) => {
  const welcome = 10;
  const b = new Backlog(1000, welcome);
  for (let i = 0; i < welcome + 5; i++) b.push({ value: i, fd: null });
  t.is(b.tooSlow(1000 + 10_000, 5, 100), null, 'at the bound (welcome + maxQueued): not slow, however long');
  b.push({ value: 99, fd: null });
  t.is(b.tooSlow(1100, 5, 100), null, 'over the bound but idle only 100 ms');
  t.regex(b.tooSlow(1101, 5, 100) ?? '', /too slow: 16 messages waiting .*limit 5.*none taken for 101 ms/);
  b.shift(1101); // it took one: progress, and back at the bound
  t.is(b.tooSlow(5000, 5, 100), null);
  b.push({ value: 100, fd: null });
  t.is(b.tooSlow(1150, 5, 100), null, 'idle counts from the last message taken');
  t.truthy(b.tooSlow(1202, 5, 100));
});

test('a peer that reads but falls far behind is too slow past HARD_QUEUE_FACTOR times the bound', (t) => {
  const b = new Backlog(0, 0);
  const max = 2;
  for (let i = 0; i < max * HARD_QUEUE_FACTOR; i++) b.push({ value: i, fd: null });
  t.is(b.tooSlow(0, max, 1000), null);
  b.push({ value: -1, fd: null });
  t.regex(b.tooSlow(0, max, 1000) ?? '', new RegExp(`a peer that reads may have ${max * HARD_QUEUE_FACTOR}`));
});

test('a long backlog is compacted as it drains and keeps its order', (t) => {
  const b = new Backlog(0, 0);
  for (let i = 0; i < 5000; i++) b.push({ value: i, fd: null });
  for (let i = 0; i < 3000; i++) {
    t.is(b.front()?.value, i);
    b.shift(0);
  }
  for (let i = 5000; i < 6000; i++) b.push({ value: i, fd: null });
  let next = 3000;
  for (let q = b.front(); q !== null; q = b.front(), next++) {
    if (q.value !== next) return t.fail(`got ${q.value}, expected ${next}`);
    b.shift(0);
  }
  t.is(next, 6000);
});
