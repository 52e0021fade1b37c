// Requests waiting for replies, with a fake clock: matching, deadlines,
// departures.
import test from 'ava';

import { Replies, type Waiter } from '../ts/fabric/replies.js';

interface Msg {
  from: number;
  text: string;
}
const waiter = (from: number, match: (m: Msg) => boolean = () => true): Waiter<Msg> => ({ from, match, deadline: Infinity });

test('a reply answers the oldest matching waiter for its sender only', (t) => {
  const r = new Replies<Msg>();
  const a = waiter(2, (m) => m.text === 'pong');
  const b = waiter(2);
  const c = waiter(3);
  for (const w of [a, b, c]) r.add(w);
  t.is(r.answer({ from: 2, text: 'ping' }), b, 'a does not match a ping');
  t.is(r.answer({ from: 2, text: 'pong' }), a);
  t.is(r.answer({ from: 2, text: 'pong' }), null);
  t.is(r.answer({ from: 3, text: 'x' }), c);
  t.is(r.size, 0);
});

test('deadlines count from the post, not the request; nextDeadline is the earliest set one', (t) => {
  const r = new Replies<Msg>();
  const a = waiter(1);
  const b = waiter(1);
  r.add(a);
  r.add(b);
  t.is(r.nextDeadline(), null, 'nothing posted yet: no deadline');
  r.posted(a, 1000, 500);
  r.posted(b, 1200, 100);
  t.is(r.nextDeadline(), 1300);
  t.deepEqual(r.late(1299), []);
  t.deepEqual(r.late(1300), [b]);
  t.is(r.nextDeadline(), 1500);
  t.deepEqual(r.late(10_000), [a]);
  t.is(r.nextDeadline(), null);
});

test('a departed peer takes its waiters with it; clear takes the rest', (t) => {
  const r = new Replies<Msg>();
  const a = waiter(1);
  const b = waiter(2);
  r.add(a);
  r.add(b);
  t.deepEqual(r.from(1), [a]);
  t.false(r.has(a));
  t.deepEqual(r.clear(), [b]);
  t.is(r.size, 0);
});
