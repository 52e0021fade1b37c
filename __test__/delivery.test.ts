// The switch's delivery state machine with a fake clock: per-peer bounds,
// round-robin through the one slot, deadlines and withdrawal, silent peers,
// the ring route and its backpressure.
import test from 'ava';
import fc from 'fast-check';

import { Delivery, type Transmit } from '../ts/fabric/delivery.js';

const msg = (text: string) => Buffer.from(text);
const text = (t: Transmit | null) => (t && t.kind !== 'withdraw' ? `${t.kind}:${t.to}:${Buffer.from(t.bytes).toString()}` : t ? `withdraw:${t.to}` : null);

/** Everything pollTransmit gives at `now`, as text. */
function all(d: Delivery, now: number): string[] {
  const out: string[] = [];
  for (let t = d.pollTransmit(now); t; t = d.pollTransmit(now)) out.push(text(t)!);
  return out;
}

test('a peer over its bound loses its own oldest messages, counted and logged once a second, and nobody else loses any', (t) => {
  const d = new Delivery({ perPeerLimit: 4 });
  d.connect(1);
  d.connect(2);
  d.setRoute(1, 'ring');
  d.setRoute(2, 'ring');
  for (let i = 0; i < 10; i++) d.enqueue(1, msg(`a${i}`), 0);
  d.enqueue(2, msg('b0'), 0);
  t.is(d.queued(1), 4);
  t.is(d.queued(2), 1);
  t.is(d.stats.dropped, 6);
  const logs = d.drainLogs();
  t.is(logs.length, 1, logs.join('\n'));
  t.regex(logs[0], /peer 1: 1 message\(s\) dropped/);
  for (let i = 10; i < 20; i++) d.enqueue(1, msg(`a${i}`), 1500);
  // The 5 not logged at 0 and the first at 1500; the 9 after it wait for
  // the next line (or the peer's departure).
  t.deepEqual(d.drainLogs(), ['peer 1: 6 message(s) dropped: it leaves them unread and its queue holds 4']);
  t.is(d.stats.dropped, 16);
  t.deepEqual(all(d, 1500), ['push:1:a16', 'push:1:a17', 'push:1:a18', 'push:1:a19', 'push:2:b0']);
});

test('the slot serves destinations round-robin, one message at a time, each after the last was taken', (t) => {
  const d = new Delivery();
  for (const id of [1, 2, 3]) d.connect(id);
  for (let i = 0; i < 3; i++) for (const id of [1, 2, 3]) d.enqueue(id, msg(`${id}.${i}`), 0);
  const order: string[] = [];
  for (let i = 0; i < 9; i++) {
    const got = all(d, i);
    t.is(got.length, 1, 'one message in the slot at a time');
    order.push(got[0]);
    t.deepEqual(all(d, i), [], 'nothing more until it is taken');
    d.slotTaken();
  }
  t.deepEqual(order, ['post:1:1.0', 'post:2:2.0', 'post:3:3.0', 'post:1:1.1', 'post:2:2.1', 'post:3:3.1', 'post:1:1.2', 'post:2:2.2', 'post:3:3.2']);
});

test('a message not taken by its deadline is withdrawn, and its silent receiver no longer holds the slot for others', (t) => {
  const d = new Delivery({ takeTimeoutMs: 1000, probeTimeoutMs: 100, probeBackoffMs: 1000 });
  d.connect(1); // never reads
  d.connect(2);
  d.enqueue(1, msg('welcome'), 0);
  t.deepEqual(all(d, 0), ['post:1:welcome']);
  d.enqueue(2, msg('pong'), 10);
  t.deepEqual(all(d, 10), [], 'the slot is held');
  t.is(d.pollTimeout(10), 12, 'polls the slot while someone waits');
  d.handleTimeout(999);
  t.deepEqual(all(d, 999), []);
  d.handleTimeout(1000);
  t.deepEqual(all(d, 1000), ['withdraw:1', 'post:2:pong']);
  t.is(d.stats.undelivered, 1);
  t.regex(d.drainLogs()[0], /a message to peer 1 was not taken within 1000 ms: withdrawn as undelivered/);
  d.slotTaken();
  // Peer 1 is silent: its messages wait while anyone else waits.
  d.enqueue(1, msg('x'), 1001);
  d.enqueue(2, msg('pong2'), 1001);
  t.deepEqual(all(d, 1001), ['post:2:pong2']);
  d.slotTaken();
  t.deepEqual(all(d, 1500), [], 'no probe before its backoff');
  t.is(d.pollTimeout(1500), 2000);
  // The probe has a short deadline, so it costs the others little.
  t.deepEqual(all(d, 2000), ['post:1:x']);
  d.enqueue(2, msg('pong3'), 2001);
  d.handleTimeout(2100);
  t.deepEqual(all(d, 2100), ['withdraw:1', 'post:2:pong3']);
  t.deepEqual(d.drainLogs(), [], 'a silent peer is logged once, not per probe');
});

test('a silent peer that rings the switch is probed within a second, and one that takes the probe is served again', (t) => {
  const d = new Delivery({ takeTimeoutMs: 10, probeTimeoutMs: 5, probeBackoffMs: 30_000 });
  d.connect(1);
  d.enqueue(1, msg('a'), 0);
  all(d, 0);
  d.handleTimeout(10);
  t.deepEqual(all(d, 10), ['withdraw:1']);
  d.enqueue(1, msg('b'), 11);
  t.deepEqual(all(d, 11), [], 'silent: waits for its probe (30 s)');
  d.rang(1, 12);
  t.deepEqual(all(d, 12), ['post:1:b'], 'never probed: probed at once');
  d.handleTimeout(17);
  t.deepEqual(all(d, 17), ['withdraw:1'], 'ringing did not make it a reader: the probe had the short deadline');
  d.enqueue(1, msg('c'), 20);
  d.rang(1, 20);
  t.deepEqual(all(d, 20), [], 'probed 8 ms ago: not again within a second');
  t.is(d.pollTimeout(20), 1012);
  t.deepEqual(all(d, 1012), ['post:1:c']);
  d.slotTaken();
  d.enqueue(1, msg('d'), 1013);
  t.deepEqual(all(d, 1013), ['post:1:d'], 'it took the probe: a reader again');
});

test('a peer on the ring route is served while the slot is held, and a full ring holds back only that peer', (t) => {
  const d = new Delivery({ ringRetryMs: 5 });
  d.connect(1);
  d.connect(2);
  d.connect(3);
  d.setRoute(2, 'ring');
  d.enqueue(1, msg('to1'), 0);
  t.deepEqual(all(d, 0), ['post:1:to1']);
  d.enqueue(2, msg('r1'), 1);
  d.enqueue(2, msg('r2'), 1);
  const first = d.pollTransmit(1)!;
  t.is(text(first), 'push:2:r1', 'not behind the slot');
  d.ringFull(2, (first as { bytes: Uint8Array }).bytes, 1);
  d.enqueue(3, msg('to3'), 1);
  t.deepEqual(all(d, 1), [], 'the ring waits for its retry, the slot for its taker');
  t.is(d.pollTimeout(1), 3, 'slot poll (2 ms) before the ring retry (6)');
  d.slotTaken();
  t.deepEqual(all(d, 3), ['post:3:to3']);
  t.deepEqual(all(d, 6), ['push:2:r1', 'push:2:r2'], 'the ring retried in order');
  t.is(d.stats.sent, 4);
});

test('a departing peer loses its queue, and its message in the slot is withdrawn', (t) => {
  const d = new Delivery();
  d.connect(1);
  d.connect(2);
  d.enqueue(1, msg('a'), 0);
  d.enqueue(1, msg('b'), 0);
  d.enqueue(2, msg('c'), 0);
  t.deepEqual(all(d, 0), ['post:1:a']);
  d.leave(1);
  t.deepEqual(all(d, 1), ['withdraw:1', 'post:2:c']);
  d.enqueue(1, msg('late'), 2);
  t.is(d.queued(1), 0, 'nothing is queued for a peer that is not connected');
});

test('a slot overwritten by another peer is withdrawn, logged, and the slot goes on', (t) => {
  const d = new Delivery();
  d.connect(1);
  d.connect(2);
  d.enqueue(1, msg('a'), 0);
  d.enqueue(2, msg('b'), 0);
  all(d, 0);
  d.slotTampered('buflen 5, last_responder 9');
  t.deepEqual(all(d, 1), ['withdraw:1', 'post:2:b']);
  t.regex(d.drainLogs()[0], /overwritten while it held a message for peer 1 \(buflen 5, last_responder 9\)/);
});

test('pollTimeout: null when idle, the deadline while the slot holds a message nobody waits behind', (t) => {
  const d = new Delivery({ takeTimeoutMs: 1000 });
  t.is(d.pollTimeout(0), null);
  d.connect(1);
  d.enqueue(1, msg('a'), 0);
  t.is(d.pollTimeout(0), 0);
  all(d, 0);
  t.is(d.pollTimeout(5), 1000);
  d.slotTaken();
  t.is(d.pollTimeout(6), null);
});

test('property: queues stay within their bound, one message at most is in the slot, nothing goes to a peer that is not connected, and everything queued goes out once receivers read', (t) => {
  fc.assert(
    fc.property(
      fc.array(
        fc.record({
          op: fc.constantFrom('connect', 'leave', 'enqueue', 'taken', 'tick', 'ring', 'slot', 'full', 'rang'),
          id: fc.integer({ min: 1, max: 4 }),
          dt: fc.integer({ min: 0, max: 700 }),
        }),
        { minLength: 20, maxLength: 300, size: 'large' },
      ),
      (script) => {
        const limit = 3;
        const d = new Delivery({ perPeerLimit: limit, takeTimeoutMs: 500, probeTimeoutMs: 50, probeBackoffMs: 200 });
        const live = new Set<number>();
        let now = 0;
        let inSlot: number | null = null;
        let lastPush: { to: number; bytes: Uint8Array } | null = null;
        for (const s of script) {
          now += s.dt;
          switch (s.op) {
            case 'connect':
              if (!live.has(s.id)) {
                live.add(s.id);
                d.connect(s.id);
              }
              break;
            case 'leave':
              live.delete(s.id);
              d.leave(s.id);
              break;
            case 'enqueue':
              d.enqueue(s.id, msg(`m${now}`), now);
              break;
            case 'taken':
              d.slotTaken();
              inSlot = null;
              break;
            case 'ring':
              d.setRoute(s.id, 'ring');
              break;
            case 'slot':
              d.setRoute(s.id, 'slot');
              break;
            case 'full':
              if (lastPush && live.has(lastPush.to)) d.ringFull(lastPush.to, lastPush.bytes, now);
              lastPush = null;
              break;
            case 'rang':
              d.rang(s.id, now);
              break;
          }
          d.handleTimeout(now);
          for (let x = d.pollTransmit(now); x; x = d.pollTransmit(now)) {
            if (x.kind === 'withdraw') {
              inSlot = null;
              continue;
            }
            if (!live.has(x.to)) return false;
            if (x.kind === 'post') {
              if (inSlot !== null) return false;
              inSlot = x.to;
            } else lastPush = x;
          }
          for (const id of live) if (d.queued(id) > limit) return false;
          const at = d.pollTimeout(now);
          if (at !== null && at < now) return false;
        }
        // Liveness: once every receiver takes what it is sent and the time
        // passes, everything queued goes out.
        for (let step = 0; step < 64 && d.stats.queued > 0; step++) {
          now += 61_000;
          d.slotTaken();
          d.handleTimeout(now);
          for (let x = d.pollTransmit(now); x; x = d.pollTransmit(now)) if (x.kind === 'post') d.slotTaken();
        }
        return d.stats.queued === 0;
      },
    ),
    { numRuns: 1000 },
  );
  t.pass();
});

test('a message handed back by a full ring after its peer was rerouted to the slot goes out through the slot', (t) => {
  const d = new Delivery();
  d.connect(1);
  d.setRoute(1, 'ring');
  d.enqueue(1, msg('a'), 0);
  const push = d.pollTransmit(0)!;
  t.is(text(push), 'push:1:a');
  d.setRoute(1, 'slot'); // its ring turned out corrupt
  d.ringFull(1, (push as { bytes: Uint8Array }).bytes, 0);
  t.deepEqual(all(d, 0), ['post:1:a']);
});

test('a kept message (forwarded from another switch) is never dropped by a full queue; the others around it are', (t) => {
  const d = new Delivery({ perPeerLimit: 3 });
  d.connect(1);
  d.setRoute(1, 'ring');
  const kept = msg('remote');
  d.enqueue(1, kept, 0, true);
  for (let i = 0; i < 5; i++) d.enqueue(1, msg(`own${i}`), 0);
  t.is(d.stats.dropped, 3);
  t.deepEqual(all(d, 0), ['push:1:remote', 'push:1:own3', 'push:1:own4']);
  // All kept: the bound gives way rather than lose one.
  for (let i = 0; i < 5; i++) d.enqueue(1, msg(`r${i}`), 0, true);
  t.is(d.queued(1), 5);
  t.is(d.stats.dropped, 3);
});

test('a kept message withdrawn untaken is offered again, and slotTaken hands it back once taken', (t) => {
  const d = new Delivery({ takeTimeoutMs: 100, probeTimeoutMs: 50, probeBackoffMs: 200 });
  d.connect(1);
  const kept = msg('remote');
  d.enqueue(1, kept, 0, true);
  t.deepEqual(all(d, 0), ['post:1:remote']);
  d.handleTimeout(100);
  t.deepEqual(all(d, 100), ['withdraw:1']);
  t.is(d.queued(1), 1, 'back in its queue');
  // Its silent receiver is probed later with it, and takes it.
  t.deepEqual(all(d, 300), ['post:1:remote']);
  t.is(d.slotTaken(), kept);
  t.is(d.queued(1), 0);
  d.enqueue(1, msg('own'), 400);
  t.deepEqual(all(d, 400), ['post:1:own']);
  t.is(d.slotTaken(), null, 'an own message is not handed back');
});

test('leave hands back the kept messages that go with the peer, the one in the slot too', (t) => {
  const d = new Delivery();
  d.connect(1);
  const a = msg('a');
  const b = msg('b');
  d.enqueue(1, a, 0, true);
  d.enqueue(1, msg('own'), 0);
  d.enqueue(1, b, 0, true);
  t.deepEqual(all(d, 0), ['post:1:a']);
  t.deepEqual(d.leave(1), [a, b]);
  t.deepEqual(d.leave(1), []);
});

test('reshape replaces each queued message in its place by its parts, in order; the parts of a kept one are kept (never dropped)', (t) => {
  const d = new Delivery({ perPeerLimit: 4 });
  d.connect(1);
  d.setRoute(1, 'ring');
  d.enqueue(1, msg('ab'), 0, true);
  d.enqueue(1, msg('c'), 0);
  d.enqueue(1, msg('de'), 0, true);
  d.setRoute(1, 'slot');
  d.reshape(1, (b) => [...Buffer.from(b).toString()].map((ch) => msg(ch)));
  t.is(d.queued(1), 5);
  // Over the bound: only the one that was not kept may go.
  d.enqueue(1, msg('f'), 0);
  const order: string[] = [];
  for (let i = 0; i < 5; i++) {
    order.push(...all(d, i));
    d.slotTaken();
  }
  t.deepEqual(order, ['post:1:a', 'post:1:b', 'post:1:d', 'post:1:e', 'post:1:f']);
  t.is(d.stats.dropped, 1);
});
