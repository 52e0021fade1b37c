// Pure unit tests of the sans-I/O protocol: what the server owes a newcomer
// and the others, the ID pool policies, and the client-side fold.
import test from 'ava';
import fc from 'fast-check';

import {
  ID_POLICIES,
  IdPool,
  MAX_PEER_ID,
  Membership,
  QEMU_REUSE_BUG,
  welcomeProgress,
  PROTOCOL_VERSION,
  SHM_MESSAGE,
  initialClientState,
  joinMessages,
  leaveMessages,
  receive,
  refusalMessages,
  type ClientEvent,
  type ClientState,
  type FdRef,
  type Send,
} from '../ts/protocol.js';

const vec = (to: number, peer: number, vector: number): Send => ({ to, value: peer, fd: { kind: 'vector', peer, vector } });

// ---- constants ------------------------------------------------------------

test('protocol constants match the ivshmem spec', (t) => {
  t.is(PROTOCOL_VERSION, 0);
  t.is(SHM_MESSAGE, -1);
  t.is(MAX_PEER_ID, 65535);
  t.deepEqual([...ID_POLICIES], ['lowest', 'monotonic', 'random']);
});

// ---- joinMessages ---------------------------------------------------------

test('joinMessages: a lone newcomer gets version, ID, shm, then its own vectors', (t) => {
  t.deepEqual(joinMessages({ newcomer: 7, others: [], vectors: 3 }), [
    { to: 7, value: 0, fd: null },
    { to: 7, value: 7, fd: null },
    { to: 7, value: -1, fd: { kind: 'shm' } },
    vec(7, 7, 0),
    vec(7, 7, 1),
    vec(7, 7, 2),
  ]);
});

test('joinMessages: exact order with other peers (others in the given order, vectors ascending, then the newcomer to each other)', (t) => {
  t.deepEqual(joinMessages({ newcomer: 2, others: [5, 0], vectors: 2 }), [
    { to: 2, value: 0, fd: null },
    { to: 2, value: 2, fd: null },
    { to: 2, value: -1, fd: { kind: 'shm' } },
    vec(2, 5, 0),
    vec(2, 5, 1),
    vec(2, 0, 0),
    vec(2, 0, 1),
    vec(2, 2, 0),
    vec(2, 2, 1),
    vec(5, 2, 0),
    vec(5, 2, 1),
    vec(0, 2, 0),
    vec(0, 2, 1),
  ]);
});

test('joinMessages: advertised peers come after the others and just before the own group, and only to the newcomer', (t) => {
  t.deepEqual(joinMessages({ newcomer: 1, others: [0], vectors: 1, advertised: [9000, 42] }), [
    { to: 1, value: 0, fd: null },
    { to: 1, value: 1, fd: null },
    { to: 1, value: -1, fd: { kind: 'shm' } },
    vec(1, 0, 0),
    vec(1, 9000, 0),
    vec(1, 42, 0),
    vec(1, 1, 0),
    vec(0, 1, 0),
  ]);
});

test('joinMessages: version and ID never carry an fd; only -1 carries the shm fd', (t) => {
  const msgs = joinMessages({ newcomer: 3, others: [0, 1, 2], vectors: 4 });
  t.is(msgs[0].fd, null);
  t.is(msgs[1].fd, null);
  t.deepEqual(msgs[2].fd, { kind: 'shm' });
  t.is(msgs.filter((m) => m.fd?.kind === 'shm').length, 1);
  t.true(msgs.slice(3).every((m) => m.fd?.kind === 'vector' && m.fd.peer === m.value));
  t.is(msgs.length, 3 + 3 * 4 + 4 + 3 * 4);
});

test('joinMessages: property — message count, recipients and vector numbering', (t) => {
  fc.assert(
    fc.property(
      fc.uniqueArray(fc.integer({ min: 0, max: MAX_PEER_ID }), { minLength: 1, maxLength: 12 }),
      fc.integer({ min: 1, max: 8 }),
      (ids, vectors) => {
        const [newcomer, ...others] = ids;
        const msgs = joinMessages({ newcomer, others, vectors });
        const toNewcomer = msgs.filter((m) => m.to === newcomer);
        if (msgs.length !== 3 + vectors * (2 * others.length + 1)) return false;
        if (toNewcomer.length !== 3 + vectors * (others.length + 1)) return false;
        // The newcomer's messages all come before any message to another peer.
        const firstOther = msgs.findIndex((m) => m.to !== newcomer);
        if (firstOther !== -1 && firstOther !== toNewcomer.length) return false;
        // The last group addressed to the newcomer is its own.
        const own = toNewcomer.slice(-vectors);
        if (!own.every((m, i) => m.value === newcomer && m.fd?.kind === 'vector' && m.fd.vector === i)) return false;
        // Each other peer gets exactly the newcomer's group, in vector order.
        for (const o of others) {
          const got = msgs.filter((m) => m.to === o);
          if (got.length !== vectors) return false;
          if (!got.every((m, i) => m.value === newcomer && m.fd?.kind === 'vector' && m.fd.peer === newcomer && m.fd.vector === i)) return false;
        }
        return true;
      },
    ),
  );
  t.pass();
});

// ---- leaveMessages / refusalMessages --------------------------------------

test('leaveMessages: the leaver ID without an fd to every other peer, in order, never to the leaver', (t) => {
  t.deepEqual(leaveMessages(4, [0, 4, 9, 2]), [
    { to: 0, value: 4, fd: null },
    { to: 9, value: 4, fd: null },
    { to: 2, value: 4, fd: null },
  ]);
  t.deepEqual(leaveMessages(4, []), []);
  t.deepEqual(leaveMessages(4, [4]), []);
});

test('refusalMessages: one unacceptable version (-1) without an fd', (t) => {
  t.deepEqual(refusalMessages(3), [{ to: 3, value: -1, fd: null }]);
  const [m] = refusalMessages(-1);
  t.not(m.value, PROTOCOL_VERSION);
  // A refusal fed to a fresh client is a refusal, not a protocol error.
  t.deepEqual(receive(initialClientState<string>(), { value: m.value, fd: null }), [{ type: 'refused', version: -1 }]);
});

// ---- IdPool ---------------------------------------------------------------

test('IdPool lowest: hands out ascending IDs and reuses the lowest free one', (t) => {
  const p = new IdPool('lowest');
  t.deepEqual([p.allocate(), p.allocate(), p.allocate(), p.allocate()], [0, 1, 2, 3]);
  p.release(2);
  p.release(1);
  t.is(p.size, 2);
  t.false(p.has(1));
  t.is(p.allocate(), 1);
  t.is(p.allocate(), 2);
  t.is(p.allocate(), 4);
  p.release(0);
  t.is(p.allocate(), 0);
  t.true(p.has(0));
});

test('IdPool defaults to lowest over 0..65535', (t) => {
  const p = new IdPool();
  t.is(p.policy, 'lowest');
  t.is(p.min, 0);
  t.is(p.max, MAX_PEER_ID);
});

test('IdPool monotonic: IDs only go up, wrap at max, and skip IDs still in use', (t) => {
  const p = new IdPool('monotonic', 0, 4);
  t.deepEqual([p.allocate(), p.allocate()], [0, 1]);
  p.release(0);
  t.is(p.allocate(), 2, 'a freed lower ID is not reused before the wrap');
  t.is(p.allocate(), 3);
  p.release(1);
  t.is(p.allocate(), 4);
  t.is(p.allocate(), 0, 'wraps to the lowest free after max');
  t.is(p.allocate(), 1, '1 was released');
  t.is(p.allocate(), null, 'all of 0..4 in use');
  p.release(3);
  t.is(p.allocate(), 3, 'the only free ID, found past the wrap');
});

test('IdPool monotonic: the first ID is min, and a freed ID is reused only after a full cycle', (t) => {
  const p = new IdPool('monotonic', 10, 13);
  t.is(p.allocate(), 10);
  p.release(10);
  t.deepEqual([p.allocate(), p.allocate(), p.allocate(), p.allocate()], [11, 12, 13, 10]);
});

test('IdPool random: uses the injected rng to pick among free IDs in ascending order', (t) => {
  const draws = [0.5, 0.5, 0, 0.99];
  const p = new IdPool('random', 0, 3, () => draws.shift()!);
  t.is(p.allocate(), 2, 'free [0,1,2,3], k = floor(0.5*4) = 2');
  t.is(p.allocate(), 1, 'free [0,1,3], k = floor(0.5*3) = 1');
  t.is(p.allocate(), 0, 'free [0,3], k = 0');
  t.is(p.allocate(), 3, 'free [3]');
  t.is(p.allocate(), null, 'full: the rng is not consulted');
  t.is(draws.length, 0);
});

test('IdPool random: an rng returning 1 (outside [0,1)) still yields a free ID in range', (t) => {
  const p = new IdPool('random', 5, 7, () => 1);
  t.deepEqual([p.allocate(), p.allocate(), p.allocate(), p.allocate()], [7, 6, 5, null]);
});

test('IdPool random: property — distinct, in range, null exactly when full', (t) => {
  fc.assert(
    fc.property(
      fc.integer({ min: 0, max: 1000 }),
      fc.integer({ min: 0, max: 40 }),
      fc.array(fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }), { minLength: 1, maxLength: 64 }),
      (min, extra, rolls) => {
        const max = min + extra;
        let i = 0;
        const p = new IdPool('random', min, max, () => rolls[i++ % rolls.length]);
        const got = new Set<number>();
        for (let n = 0; n <= extra; n++) {
          const id = p.allocate();
          if (id === null || id < min || id > max || got.has(id)) return false;
          got.add(id);
        }
        return p.allocate() === null && p.size === extra + 1;
      },
    ),
  );
  t.pass();
});

for (const policy of ID_POLICIES) {
  test(`IdPool ${policy}: respects [min, max], returns null when full and recovers after a release`, (t) => {
    const p = new IdPool(policy, 100, 102, () => 0.3);
    const ids = [p.allocate(), p.allocate(), p.allocate()];
    t.deepEqual([...ids].sort(), [100, 101, 102]);
    t.is(p.allocate(), null);
    t.is(p.size, 3);
    p.release(101);
    t.is(p.allocate(), 101);
    t.is(p.allocate(), null);
    p.release(999); // not in the pool: harmless
    t.is(p.size, 3);
  });

  test(`IdPool ${policy}: property — allocate/release sequences never hand out an ID in use`, (t) => {
    fc.assert(
      fc.property(fc.array(fc.oneof(fc.constant<'a'>('a'), fc.nat({ max: 9 })), { maxLength: 200 }), fc.double({ min: 0, max: 0.999, noNaN: true }), (ops, r) => {
        const p = new IdPool(policy, 0, 7, () => r);
        const live = new Set<number>();
        for (const op of ops) {
          if (op === 'a') {
            const id = p.allocate();
            if (live.size === 8) {
              if (id !== null) return false;
            } else {
              if (id === null || id < 0 || id > 7 || live.has(id)) return false;
              if (policy === 'lowest' && [...Array(id).keys()].some((x) => !live.has(x))) return false;
              live.add(id);
            }
          } else {
            p.release(op);
            live.delete(op);
          }
          if (p.size !== live.size) return false;
        }
        return true;
      }),
    );
    t.pass();
  });
}

// ---- the client fold -------------------------------------------------------

type Fd = string;
const feed = (state: ClientState<Fd>, msgs: Array<[number, Fd | null]>): ClientEvent<Fd>[] =>
  msgs.flatMap(([value, fd]) => receive(state, { value, fd }));

function welcomed(id = 3): ClientState<Fd> {
  const s = initialClientState<Fd>();
  feed(s, [
    [0, null],
    [id, null],
    [-1, 'shm'],
  ]);
  return s;
}

test('receive: a whole welcome with two peers and own vectors', (t) => {
  const s = initialClientState<Fd>();
  t.deepEqual(s, { phase: 'version', id: -1, own: [], peers: new Map() });
  t.deepEqual(receive(s, { value: 0, fd: null }), []);
  t.is(s.phase, 'id');
  t.deepEqual(receive(s, { value: 3, fd: null }), []);
  t.is(s.phase, 'shm');
  t.is(s.id, 3);
  t.deepEqual(receive(s, { value: -1, fd: 'shm' }), [{ type: 'welcome', id: 3, shm: 'shm' }]);
  t.is(s.phase, 'running');
  t.deepEqual(
    feed(s, [
      [1, 'p1v0'],
      [1, 'p1v1'],
      [5, 'p5v0'],
      [5, 'p5v1'],
      [3, 'o0'],
      [3, 'o1'],
    ]),
    [
      { type: 'peer-vector', peer: 1, vector: 0, fd: 'p1v0' },
      { type: 'peer-vector', peer: 1, vector: 1, fd: 'p1v1' },
      { type: 'peer-vector', peer: 5, vector: 0, fd: 'p5v0' },
      { type: 'peer-vector', peer: 5, vector: 1, fd: 'p5v1' },
      { type: 'own-vector', vector: 0, fd: 'o0' },
      { type: 'own-vector', vector: 1, fd: 'o1' },
    ],
  );
  t.deepEqual(s.own, ['o0', 'o1']);
  t.deepEqual(
    s.peers,
    new Map([
      [1, ['p1v0', 'p1v1']],
      [5, ['p5v0', 'p5v1']],
    ]),
  );
});

test('receive: ID 0 and ID 65535 are valid', (t) => {
  for (const id of [0, MAX_PEER_ID]) {
    const s = welcomed(id);
    t.is(s.phase, 'running');
    t.is(s.id, id);
  }
});

test('receive: a version other than 0 is a refusal (any fd is discarded)', (t) => {
  for (const version of [-1, 1, 2, 65536]) {
    const s = initialClientState<Fd>();
    t.deepEqual(receive(s, { value: version, fd: null }), [{ type: 'refused', version }]);
    t.is(s.phase, 'failed');
  }
  const s = initialClientState<Fd>();
  t.deepEqual(receive(s, { value: 1, fd: 'x' }), [
    { type: 'refused', version: 1 },
    { type: 'discard', fd: 'x' },
  ]);
  t.is(s.phase, 'failed');
});

test('receive: version 0 with an fd is a protocol error and the fd is discarded', (t) => {
  const s = initialClientState<Fd>();
  const ev = receive(s, { value: 0, fd: 'x' });
  t.is(ev.length, 2);
  t.is(ev[0].type, 'error');
  t.regex((ev[0] as { message: string }).message, /version/);
  t.deepEqual(ev[1], { type: 'discard', fd: 'x' });
  t.is(s.phase, 'failed');
});

test('receive: the ID message with an fd is an error (fd discarded)', (t) => {
  const s = initialClientState<Fd>();
  receive(s, { value: 0, fd: null });
  const ev = receive(s, { value: 4, fd: 'x' });
  t.is(ev[0].type, 'error');
  t.regex((ev[0] as { message: string }).message, /ID message/);
  t.deepEqual(ev[1], { type: 'discard', fd: 'x' });
  t.is(s.phase, 'failed');
  t.is(s.id, -1);
});

test('receive: an ID outside 0..65535 (or not an integer) is an error', (t) => {
  for (const bad of [-1, -2, 65536, 1e12, 1.5, Number.NaN]) {
    const s = initialClientState<Fd>();
    receive(s, { value: 0, fd: null });
    const ev = receive(s, { value: bad, fd: null });
    t.is(ev.length, 1, `ID ${bad}`);
    t.is(ev[0].type, 'error', `ID ${bad}`);
    t.regex((ev[0] as { message: string }).message, /invalid peer ID/);
    t.is(s.phase, 'failed');
  }
});

test('receive: the shm message must be -1 with an fd', (t) => {
  // -1 without an fd
  let s = initialClientState<Fd>();
  feed(s, [
    [0, null],
    [2, null],
  ]);
  let ev = receive(s, { value: -1, fd: null });
  t.is(ev.length, 1);
  t.is(ev[0].type, 'error');
  t.regex((ev[0] as { message: string }).message, /without an fd/);
  t.is(s.phase, 'failed');
  // a peer group where the shm should be: error, the fd is discarded
  s = initialClientState<Fd>();
  feed(s, [
    [0, null],
    [2, null],
  ]);
  ev = receive(s, { value: 2, fd: 'v' });
  t.is(ev[0].type, 'error');
  t.deepEqual(ev[1], { type: 'discard', fd: 'v' });
  t.is(s.phase, 'failed');
});

test('receive: later values below -1 or above 65535 are errors (fd discarded); so is a second shm (-1)', (t) => {
  for (const [value, fd] of [
    [-2, null],
    [-2, 'f'],
    [65536, 'f'],
    [2 ** 40, null],
    [-1, 'shm2'],
    [-1, null],
    [0.5, 'f'],
  ] as Array<[number, Fd | null]>) {
    const s = welcomed();
    const ev = receive(s, { value, fd });
    t.is(ev[0].type, 'error', `value ${value}`);
    t.regex((ev[0] as { message: string }).message, /invalid message/);
    t.deepEqual(ev.slice(1), fd === null ? [] : [{ type: 'discard', fd }], `value ${value}`);
    t.is(s.phase, 'failed');
  }
});

test('receive: the server announcing our own departure is an error', (t) => {
  const s = welcomed(3);
  receive(s, { value: 3, fd: 'o0' });
  const ev = receive(s, { value: 3, fd: null });
  t.is(ev.length, 1);
  t.is(ev[0].type, 'error');
  t.regex((ev[0] as { message: string }).message, /own departure/);
  t.is(s.phase, 'failed');
});

test('receive: after a failure every fd is discarded and nothing else happens', (t) => {
  const s = initialClientState<Fd>();
  receive(s, { value: 7, fd: null }); // refused
  t.is(s.phase, 'failed');
  t.deepEqual(receive(s, { value: 0, fd: null }), []);
  t.deepEqual(receive(s, { value: 3, fd: null }), []);
  t.deepEqual(receive(s, { value: -1, fd: 'shm' }), [{ type: 'discard', fd: 'shm' }]);
  t.deepEqual(receive(s, { value: 3, fd: 'v' }), [{ type: 'discard', fd: 'v' }]);
  t.deepEqual(receive(s, { value: -99, fd: 'w' }), [{ type: 'discard', fd: 'w' }]);
  t.is(s.phase, 'failed');
  t.deepEqual(s.own, []);
  t.is(s.peers.size, 0);
});

test('receive: peer-left hands back all of that peer\'s fds; an unknown departure is ignored', (t) => {
  const s = welcomed(0);
  feed(s, [
    [4, 'a'],
    [4, 'b'],
    [4, 'c'],
    [6, 'd'],
    [0, 'o'],
  ]);
  t.deepEqual(receive(s, { value: 4, fd: null }), [{ type: 'peer-left', peer: 4, fds: ['a', 'b', 'c'] }]);
  t.false(s.peers.has(4));
  t.deepEqual(receive(s, { value: 4, fd: null }), [], 'a second departure is a no-op');
  t.deepEqual(receive(s, { value: 99, fd: null }), [], 'never-seen peer');
  t.is(s.phase, 'running');
  // The same ID joining again starts over at vector 0.
  t.deepEqual(receive(s, { value: 4, fd: 'e' }), [{ type: 'peer-vector', peer: 4, vector: 0, fd: 'e' }]);
  t.deepEqual(s.peers.get(6), ['d']);
});

test('receive: a peer joining after the welcome is folded the same way', (t) => {
  const s = welcomed(1);
  receive(s, { value: 1, fd: 'o0' });
  t.deepEqual(
    feed(s, [
      [2, 'x0'],
      [2, 'x1'],
    ]),
    [
      { type: 'peer-vector', peer: 2, vector: 0, fd: 'x0' },
      { type: 'peer-vector', peer: 2, vector: 1, fd: 'x1' },
    ],
  );
});

// ---- the server's messages folded by the client: round trips ------------

const fdName = (ref: FdRef): string => (ref.kind === 'shm' ? 'shm' : `${ref.peer}/${ref.vector}`);

test('property: folding joinMessages for a newcomer yields exactly the peers and vectors sent', (t) => {
  fc.assert(
    fc.property(
      fc.uniqueArray(fc.integer({ min: 0, max: MAX_PEER_ID }), { minLength: 1, maxLength: 10 }),
      fc.uniqueArray(fc.integer({ min: 0, max: MAX_PEER_ID }), { maxLength: 3 }),
      fc.integer({ min: 1, max: 6 }),
      (ids, adv, vectors) => {
        const [newcomer, ...others] = ids;
        const advertised = adv.filter((a) => !ids.includes(a));
        const s = initialClientState<string>();
        const events: ClientEvent<string>[] = [];
        for (const m of joinMessages({ newcomer, others, vectors, advertised })) {
          if (m.to !== newcomer) continue;
          events.push(...receive(s, { value: m.value, fd: m.fd && fdName(m.fd) }));
        }
        if (s.phase !== 'running' || s.id !== newcomer) return false;
        if (events.some((e) => e.type === 'error' || e.type === 'discard' || e.type === 'refused')) return false;
        if (events.filter((e) => e.type === 'welcome').length !== 1) return false;
        const range = [...Array(vectors).keys()];
        const want = new Map([...others, ...advertised].map((p) => [p, range.map((v) => `${p}/${v}`)]));
        if (JSON.stringify([...s.peers]) !== JSON.stringify([...want])) return false;
        if (JSON.stringify(s.own) !== JSON.stringify(range.map((v) => `${newcomer}/${v}`))) return false;
        // The own group is the last thing in the welcome.
        return events.slice(-vectors).every((e, i) => e.type === 'own-vector' && e.vector === i);
      },
    ),
  );
  t.pass();
});

test('property: the others fold the newcomer in, and fold it out again on leave', (t) => {
  fc.assert(
    fc.property(
      fc.uniqueArray(fc.integer({ min: 0, max: MAX_PEER_ID }), { minLength: 2, maxLength: 8 }),
      fc.integer({ min: 1, max: 5 }),
      (ids, vectors) => {
        const [newcomer, ...others] = ids;
        for (const o of others) {
          const s = welcomed(o) as unknown as ClientState<string>;
          const msgs = joinMessages({ newcomer, others, vectors }).filter((m) => m.to === o);
          const ev = msgs.flatMap((m) => receive(s, { value: m.value, fd: m.fd && fdName(m.fd) }));
          const fds = [...Array(vectors).keys()].map((v) => `${newcomer}/${v}`);
          if (JSON.stringify(ev) !== JSON.stringify(fds.map((fd, vector) => ({ type: 'peer-vector', peer: newcomer, vector, fd })))) return false;
          const left = leaveMessages(newcomer, [...others, newcomer]).filter((m) => m.to === o);
          if (left.length !== 1) return false;
          const out = receive(s, { value: left[0].value, fd: null });
          if (JSON.stringify(out) !== JSON.stringify([{ type: 'peer-left', peer: newcomer, fds }])) return false;
          if (s.peers.size !== 0 || s.phase !== 'running') return false;
        }
        return true;
      },
    ),
  );
  t.pass();
});

test('joinMessages with announce false (a recycled ID) tells the others nothing', (t) => {
  const sends = joinMessages({ newcomer: 3, others: [1, 2], vectors: 2, advertised: [15], announce: false });
  t.true(sends.every((s) => s.to === 3), 'every message goes to the newcomer');
  t.deepEqual(
    sends.slice(3).map((s) => s.value),
    [1, 1, 2, 2, 15, 15, 3, 3],
    'the welcome still carries the others, the advertised member, then the own group',
  );
});

// ---- Membership -------------------------------------------------------------

/** A fleet of simulated peers that fold everything a Membership sends with
 * the client-side `receive`, the way a QEMU or famez client would, and
 * record what would hurt QEMU 7.2: an ID announced again after its
 * departure was told (a write into a freed array). */
class Fleet {
  readonly clients = new Map<number, { state: ClientState<string>; departed: Set<number> }>();
  readonly reuseAfterDeparture: string[] = [];
  readonly departuresOfStrangers: string[] = [];
  constructor(readonly m: Membership) {}
  apply(sends: Send[]): void {
    for (const s of sends) {
      const c = this.clients.get(s.to);
      if (!c) continue;
      const fd = s.fd === null ? null : s.fd.kind === 'shm' ? 'shm' : `${s.fd.peer}/${s.fd.vector}`;
      if (s.fd === null && c.state.phase === 'running' && !c.state.peers.has(s.value)) this.departuresOfStrangers.push(`${s.to} told ${s.value} left`);
      if (s.fd !== null && c.departed.has(s.value)) this.reuseAfterDeparture.push(`${s.to} got ${s.value} again`);
      for (const ev of receive(c.state, { value: s.value, fd })) {
        if (ev.type === 'peer-left') c.departed.add(ev.peer);
        if (ev.type === 'error') throw new Error(`peer ${s.to}: ${ev.message}`);
      }
    }
  }
  join(): number | null {
    const d = this.m.join();
    if (d.kind === 'refuse') return null;
    this.clients.set(d.id, { state: initialClientState<string>(), departed: new Set() });
    this.apply(d.sends);
    return d.id;
  }
  leave(id: number): void {
    this.clients.delete(id);
    this.apply(this.m.leave(id));
  }
  /** Each live peer's view: the IDs it holds all `vectors` fds of. */
  views(vectors: number): Map<number, number[]> {
    const out = new Map<number, number[]>();
    for (const [id, c] of this.clients) {
      out.set(id, [...c.state.peers].filter(([, fds]) => fds.length === vectors).map(([p]) => p).sort((a, b) => a - b));
    }
    return out;
  }
}

test('Membership recycle: a peer that joined after an ID left is told about that ID when it comes back (every live peer knows every other)', (t) => {
  const fleet = new Fleet(new Membership({ vectors: 2, min: 1, max: 4, recycle: true }));
  t.deepEqual([fleet.join(), fleet.join()], [1, 2]);
  fleet.leave(1);
  fleet.leave(2);
  t.is(fleet.join(), 1, 'the recycled ID 1');
  t.is(fleet.join(), 2, 'the recycled ID 2');
  t.deepEqual(fleet.views(2).get(1), [2], 'peer 1 holds peer 2\'s eventfds');
  t.deepEqual(fleet.views(2).get(2), [1]);
});

test('Membership recycle: a returning ID is not announced again to a peer that still holds its eventfds', (t) => {
  const m = new Membership({ vectors: 3, min: 1, max: 4, recycle: true });
  const a = m.join();
  const b = m.join();
  t.true(a.kind === 'admit' && b.kind === 'admit');
  t.deepEqual(m.leave(2), [], 'a recycled departure is told to nobody');
  const again = m.join();
  if (again.kind !== 'admit') return t.fail();
  t.is(again.id, 2);
  t.true(again.recycled);
  t.deepEqual(again.announced, [], 'peer 1 still holds 2\'s eventfds');
  t.false(again.sends.some((s) => s.to === 1));
});

for (const policy of ID_POLICIES) {
  test(`Membership without recycling (${policy}): an ID whose departure a live peer was told is never given out while that peer is connected`, (t) => {
    const fleet = new Fleet(new Membership({ vectors: 1, idPolicy: policy, min: 0, max: 3, random: () => 0.5 }));
    const witness = fleet.join()!;
    for (let i = 0; i < 10; i++) {
      const id = fleet.join();
      if (id === null) break;
      fleet.leave(id);
    }
    t.deepEqual(fleet.reuseAfterDeparture, []);
    t.deepEqual(fleet.m.blocked.length, 3, 'every other ID was told departed to the witness');
    const refused = fleet.m.join();
    t.is(refused.kind, 'refuse');
    if (refused.kind === 'refuse') t.true(refused.reason.includes(QEMU_REUSE_BUG), refused.reason);
    fleet.leave(witness);
    t.deepEqual(fleet.m.blocked, [], 'the witness left: its departures no longer matter');
    t.not(fleet.join(), null);
  });
}

test('Membership: the limit refusal names the limit; a departure is told only to peers that hold the departed peer', (t) => {
  const m = new Membership({ vectors: 1, maxPeers: 2 });
  m.join();
  m.join();
  const r = m.join();
  t.deepEqual(r, { kind: 'refuse', reason: '2 peers connected, the limit is 2' });
  t.deepEqual(m.leave(0), [{ to: 1, value: 0, fd: null }]);
  t.deepEqual(m.leave(7), [], 'an unknown ID');
});

test('Membership abort: an admission whose eventfds could not be made leaves no trace', (t) => {
  const m = new Membership({ vectors: 1, min: 1, max: 3 });
  m.join();
  const d = m.join();
  if (d.kind !== 'admit') return t.fail();
  m.abort(d);
  t.deepEqual(m.live, [1]);
  t.deepEqual(m.heldBy(1), [1]);
  t.deepEqual(m.blocked, []);
  const again = m.join();
  t.true(again.kind === 'admit' && again.id === 2);
});

test('Membership: property — in every mode, every live peer holds every other live peer (and the advertised; others only if recycled), no ID is announced again after a told departure, and no stranger\'s departure is told', (t) => {
  fc.assert(
    fc.property(
      fc.constantFrom(...ID_POLICIES),
      fc.boolean(),
      fc.integer({ min: 1, max: 6 }),
      fc.array(fc.integer({ min: 0, max: 9 }), { maxLength: 80 }),
      (policy, recycle, span, script) => {
        const vectors = 2;
        const fleet = new Fleet(new Membership({ vectors, idPolicy: policy, min: 1, max: span, recycle, advertised: [99], random: () => 0.7 }));
        for (const step of script) {
          const live = [...fleet.clients.keys()];
          if (step < 5 || live.length === 0) fleet.join();
          else fleet.leave(live[step % live.length]);
          const views = fleet.views(vectors);
          for (const [id, view] of views) {
            const expect = [...fleet.clients.keys(), 99].filter((x) => x !== id).sort((a, b) => a - b);
            // Recycling keeps a departed peer's eventfds with those who hold them.
            const extra = view.filter((x) => !expect.includes(x));
            if (!expect.every((x) => view.includes(x))) return false;
            if (extra.some((x) => !recycle || !fleet.m.isKept(x))) return false;
          }
        }
        return fleet.reuseAfterDeparture.length === 0 && fleet.departuresOfStrangers.length === 0;
      },
    ),
    { numRuns: 400 },
  );
  t.pass();
});

// ---- welcomeProgress ----------------------------------------------------------

test('welcomeProgress: each stage of the welcome, done only when the own group is complete', (t) => {
  const st = initialClientState<string>();
  const feed = (value: number, fd: string | null = null) => receive(st, { value, fd });
  t.like(welcomeProgress(st), { done: false, stage: 'before the protocol version' });
  feed(0);
  t.like(welcomeProgress(st), { done: false, stage: 'after the protocol version, before the peer ID' });
  feed(3);
  t.like(welcomeProgress(st), { done: false, stage: 'after the peer ID (3), before the shared memory' });
  feed(-1, 'shm');
  feed(7, 'a');
  feed(7, 'b');
  feed(7, 'c');
  t.false(welcomeProgress(st).done, 'the others\' groups, no own vector yet');
  feed(3, 'x');
  feed(3, 'y');
  t.deepEqual(welcomeProgress(st), { done: false, stage: "during the peers' eventfds (1 other peer, 2 of 3 own vectors)" });
  feed(3, 'z');
  t.true(welcomeProgress(st).done, 'the group size comes from the others\' groups');
});

test('welcomeProgress: an expected group size wins; a lone peer nobody described is done at its first own vector', (t) => {
  const lone = initialClientState<string>();
  for (const [v, fd] of [[0, null], [0, null], [-1, 'shm'], [0, 'a']] as const) receive(lone, { value: v, fd });
  t.true(welcomeProgress(lone).done);
  t.false(welcomeProgress(lone, 2).done);
  receive(lone, { value: 0, fd: 'b' });
  t.true(welcomeProgress(lone, 2).done);
});
