// The link end's state machine (ts/link/streams.ts) driven through a
// simulated link: two real LinkEnds joined by an in-memory wire that loses,
// duplicates, reorders, delays and corrupts frames, and drops and
// reconnects the link, every choice made by fast-check (seeded, shrinkable).
// The wire and the destinations are the test's environment; the state
// machine is the real one. Properties, for thousands of runs: every
// submitted packet is delivered exactly once and in order per stream; a
// stream whose destination never consumes holds back only itself; nothing
// is dropped; both ends' buffers per stream stay within the window; time is
// only the `now` argument (the same inputs give the same frames).
import test from 'ava';
import * as fs from 'node:fs';
import * as path from 'node:path';
import fc from 'fast-check';

import * as genz from '../ts/genz/index.js';
import { decode, decodeTrain, encode, FrameError } from '../ts/link/frame.js';
import { LinkEnd, unwrapSeq, type LinkEndConfig, type Stream } from '../ts/link/streams.js';
import { NativeLinkEnd } from '../ts/link/native-streams.js';

/** Either implementation of a link end: the TypeScript one, or the native core's. */
type End = LinkEnd | NativeLinkEnd;
type Make = (c: LinkEndConfig) => End;
const JS: Make = (c) => new LinkEnd(c);
const NATIVE: Make = (c) => new NativeLinkEnd(c);

// ---- the environment -----------------------------------------------------------

/** The streams of a run: three from end 0 (A) to end 1 (B), one back. */
const STREAMS: { from: 0 | 1; stream: Stream }[] = [
  { from: 0, stream: { source: 0x1001, destination: 0x2001 } },
  { from: 0, stream: { source: 0x1002, destination: 0x2001 } },
  { from: 0, stream: { source: 0x1001, destination: 0x2002 } },
  { from: 1, stream: { source: 0x2001, destination: 0x1001 } },
];

const packets = new Map<string, Uint8Array>();
/** The `i` of a packet made by packet(s, i), or of a unit made by unit(s, i). */
function indexOf(p: Uint8Array): number {
  return p[p.length - 7]! | (p[p.length - 6]! << 8);
}

/** Packet `i` of stream `s`: a real Core64 Write whose payload names both. */
function packet(s: number, i: number): Uint8Array {
  const key = `${s}/${i}`;
  let p = packets.get(key);
  if (!p) {
    p = genz.encode({ class: 'Core64.Write', DCID: 1, SCID: 2, Tag: i & 0xfff, payload: new Uint8Array([s, i & 0xff, i >> 8, 0xee]) });
    packets.set(key, p);
  }
  return p;
}

const units = new Map<string, Uint8Array>();
/** Unit `i` of stream `s` (what the simulated streams carry): packet(s, i)
 * once, twice or three times end to end, a unit of one to three packets. */
function unit(s: number, i: number): Uint8Array {
  const key = `${s}/${i}`;
  let u = units.get(key);
  if (!u) {
    const one = packet(s, i);
    u = new Uint8Array(Buffer.concat(Array.from({ length: 1 + (i % 3) }, () => one)));
    units.set(key, u);
  }
  return u;
}

interface Flight {
  bytes: Uint8Array;
}

interface StreamState {
  /** Packets to send in all. */
  total: number;
  /** Submitted (accepted) so far. */
  submitted: number;
  /** A submit was refused: wait for 'ready'. */
  waiting: boolean;
  /** Delivered at the receiver (in order, checked as they come). */
  delivered: number;
  consumed: number;
  /** Its destination never consumes. */
  stuck: boolean;
  /** Its receiving end restarted: the next delivery may repeat packets the old one delivered. */
  rebase: boolean;
}

type Action =
  | { t: 'tick'; ms: number }
  | { t: 'pump'; end: 0 | 1; max: number; path?: number }
  | { t: 'deliver'; dir: 0 | 1; pick: number; fate: 'ok' | 'lose' | 'dup' | 'corrupt'; bit: number; path?: number }
  | { t: 'submit'; s: number; n: number }
  | { t: 'consume'; s: number; n: number }
  | { t: 'drop'; path?: number }
  /** End 1 restarts (only where the scenario allows it). */
  | { t: 'restart' }
  /** One end alone sees its transport go and a new one come (the other end never noticed). */
  | { t: 'bounce'; end: 0 | 1; path?: number }
  | { t: 'connect'; path?: number };

class Sim {
  now = 0;
  readonly ends: [End, End];
  readonly config: [Partial<LinkEndConfig>, Partial<LinkEndConfig>];
  /** Restarts of end 1 allowed (the 'restart' action), and seen. */
  restarts = 0;
  restartsSeen = 0;
  /** Per path (connection), per direction: the frames on the way. */
  readonly wires: [Flight[], Flight[]][];
  readonly connected: boolean[];
  readonly st: StreamState[];
  /** Every frame either end sent, in order, as hex (the determinism check). */
  readonly trace: string[] = [];
  readonly windows: [number, number];
  /** The largest unit the ends take (room for one in every train). */
  readonly maxUnit: number | undefined;
  failures: string[] = [];

  constructor(
    config: [Partial<LinkEndConfig>, Partial<LinkEndConfig>],
    totals: number[],
    stuck: boolean[],
    readonly paths = 1,
    /** Trains of at most this many bytes (pollTrain); 0: a frame per message (pollTransmit). */
    readonly train = 0,
    readonly make: Make = JS,
  ) {
    this.config = config;
    this.wires = Array.from({ length: paths }, (): [Flight[], Flight[]] => [[], []]);
    this.connected = Array.from({ length: paths }, () => false);
    // A train must have room for the largest unit.
    this.maxUnit = train > 0 ? Math.min(train - 32, 8192) : undefined;
    this.ends = [make({ instance: 0xa, maxUnit: this.maxUnit, ...config[0] }), make({ instance: 0xb, maxUnit: this.maxUnit, ...config[1] })];
    this.windows = [config[0].window ?? 64, config[1].window ?? 64];
    this.st = STREAMS.map((_, s) => ({ total: totals[s] ?? 0, submitted: 0, waiting: false, delivered: 0, consumed: 0, stuck: stuck[s] ?? false, rebase: false }));
  }

  fail(why: string): never {
    throw new Error(`t=${this.now}: ${why}`);
  }

  /** Paths gone for good: never connected again. */
  readonly gone = new Set<number>();

  connect(path = 0): void {
    if (this.connected[path] || this.gone.has(path)) return;
    this.connected[path] = true;
    for (const e of this.ends) e.linkUp(this.now, path);
  }

  /** The transport broke (or was closed after a 'dead'): both ends see it, what was in flight is gone. */
  drop(path = 0): void {
    this.connected[path] = false;
    for (const e of this.ends) e.linkDown(path);
    this.wires[path]![0].length = 0;
    this.wires[path]![1].length = 0;
  }

  pump(end: 0 | 1, max: number, path = 0): number {
    let n = 0;
    if (!this.connected[path]) {
      if (this.ends[end].pollTransmit(this.now, path) !== null || this.ends[end].pollTrain(this.now, path) !== null) this.fail(`end ${end} transmits on path ${path} while it is down`);
      return 0;
    }
    for (; n < max; n++) {
      const b = this.train > 0 ? this.ends[end].pollTrain(this.now, path, this.train) : this.ends[end].pollTransmit(this.now, path);
      if (!b) break;
      this.trace.push(`${end}@${this.now}/${path}:${Buffer.from(b).toString('hex')}`);
      this.wires[path]![end].push({ bytes: b });
    }
    return n;
  }

  /** Frame `pick` of the wire from `dir` on `path` arrives (reordering: not only the first). */
  deliver(dir: 0 | 1, pick: number, fate: 'ok' | 'lose' | 'dup' | 'corrupt', bit: number, path = 0): boolean {
    const w = this.wires[path]![dir];
    if (w.length === 0) return false;
    const i = pick % w.length;
    const f = w[i]!;
    if (fate !== 'dup') w.splice(i, 1);
    if (fate === 'lose') return true;
    let bytes = f.bytes;
    if (fate === 'corrupt') {
      bytes = bytes.slice();
      bytes[(bit >> 3) % bytes.length] ^= 1 << (bit & 7);
    }
    const to = dir === 0 ? 1 : 0;
    const before = this.ends[to].stats.badFrames;
    this.ends[to].receive(bytes, this.now, path);
    // A single flipped bit is always caught (the header's CRC-24 or the packet's ECRC).
    if (fate === 'corrupt' && this.ends[to].stats.badFrames !== before + 1) this.fail('a corrupted frame was accepted');
    this.collect(to);
    return true;
  }

  /** What end `e` delivers: each packet must be the next of its stream. */
  collect(e: 0 | 1): void {
    for (let d = this.ends[e].pollDeliver(); d; d = this.ends[e].pollDeliver()) {
      const s = STREAMS.findIndex((x) => x.stream.source === d!.stream.source && x.stream.destination === d!.stream.destination);
      if (s < 0 || STREAMS[s]!.from === e) this.fail(`end ${e} delivered a packet of an unknown stream`);
      const st = this.st[s]!;
      if (st.rebase) {
        // At least once across a restart: the new end starts at a packet the old one had, or the next; never after a gap.
        const k = indexOf(d.packet);
        if (k > st.delivered) this.fail(`stream ${s}: after the restart delivery starts at ${k}, but only ${st.delivered} were delivered (lost)`);
        st.delivered = st.consumed = k;
        st.rebase = false;
      }
      if (st.delivered >= st.submitted) this.fail(`stream ${s}: packet ${st.delivered} delivered but only ${st.submitted} submitted (a duplicate)`);
      const want = unit(s, st.delivered);
      if (Buffer.compare(Buffer.from(d.packet), Buffer.from(want)) !== 0) this.fail(`stream ${s}: delivery ${st.delivered} is not unit ${st.delivered} (lost, duplicated, reordered or cut)`);
      st.delivered++;
    }
  }

  submit(s: number, n: number): number {
    const st = this.st[s]!;
    const end = this.ends[STREAMS[s]!.from];
    let k = 0;
    while (k < n && !st.waiting && st.submitted < st.total) {
      if (end.submit(STREAMS[s]!.stream, unit(s, st.submitted))) {
        st.submitted++;
        k++;
      } else st.waiting = true;
    }
    this.events();
    return k;
  }

  consume(s: number, n: number): number {
    const st = this.st[s]!;
    if (st.stuck) return 0;
    const k = Math.min(n, st.delivered - st.consumed);
    if (k > 0) {
      this.ends[1 - STREAMS[s]!.from]!.consumed(STREAMS[s]!.stream, k);
      st.consumed += k;
    }
    return k;
  }

  tick(ms: number): void {
    this.now += ms;
    for (const e of this.ends) e.handleTimeout(this.now);
    this.events();
  }

  events(): void {
    for (const e of [0, 1] as const) {
      for (let ev = this.ends[e].pollEvent(); ev; ev = this.ends[e].pollEvent()) {
        if (ev.kind === 'dead') this.drop(ev.path); // the I/O layer closes the transport
        else if (ev.kind === 'ready' || ev.kind === 'stalled') {
          const stream = ev.stream;
          const s = STREAMS.findIndex((x) => x.from === e && x.stream.source === stream.source && x.stream.destination === stream.destination);
          if (s < 0) this.fail(`end ${e}: ${ev.kind} for a stream it does not send`);
          const st = this.st[s]!;
          if (ev.kind === 'stalled' && !st.waiting) this.fail(`stream ${s}: stalled but no submit was refused`);
          if (ev.kind === 'ready') {
            if (!st.waiting) this.fail(`stream ${s}: ready but it was not stalled`);
            st.waiting = false;
          }
        } else if (ev.kind === 'restarted') {
          if (e !== 0 || this.restartsSeen >= this.restarts) this.fail('a restart nobody made');
          this.restartsSeen++;
        }
      }
    }
  }

  /** Bounded memory: per stream, neither end holds more than the receiver's window. */
  checkBounds(): void {
    for (const [s, { from, stream }] of STREAMS.entries()) {
      const w = this.windows[1 - from]!;
      const sent = this.ends[from].sendBuffered(stream);
      const held = this.ends[1 - from]!.receiveBuffered(stream);
      if (sent > w) this.fail(`stream ${s}: the sender holds ${sent} packets, over the window ${w}`);
      if (held > w) this.fail(`stream ${s}: the receiver holds ${held} packets, over the window ${w}`);
      const st = this.st[s]!;
      if (st.delivered - st.consumed > w) this.fail(`stream ${s}: ${st.delivered - st.consumed} delivered and not consumed, over the window ${w}`);
    }
  }

  run(a: Action): void {
    switch (a.t) {
      case 'tick':
        this.tick(a.ms);
        break;
      case 'pump':
        this.pump(a.end, a.max, a.path);
        break;
      case 'deliver':
        this.deliver(a.dir, a.pick, a.fate, a.bit, a.path);
        break;
      case 'submit':
        this.submit(a.s, a.n);
        break;
      case 'consume':
        this.consume(a.s, a.n);
        break;
      case 'drop':
        this.drop(a.path);
        break;
      case 'connect':
        this.connect(a.path);
        break;
      case 'restart':
        // End 1's process dies and starts again: a new instance, no state; its destinations' packets went with it.
        if (this.restarts < 3) {
          for (let p = 0; p < this.paths; p++) this.drop(p);
          this.restarts++;
          this.ends[1] = this.make({ maxUnit: this.maxUnit, ...this.config[1], instance: 0xb + this.restarts });
          for (const [i, x] of STREAMS.entries()) {
            if (x.from !== 0) continue;
            const st = this.st[i]!;
            st.consumed = st.delivered;
            st.rebase = true;
          }
        }
        break;
      case 'bounce': {
        const p = a.path ?? 0;
        if (this.connected[p]) {
          this.wires[p]![0].length = 0;
          this.wires[p]![1].length = 0;
          this.ends[a.end].linkDown(p);
          this.ends[a.end].linkUp(this.now, p);
        }
        break;
      }
    }
    this.events();
    this.checkBounds();
  }

  /** A clean link from now on: run until every stream with a consuming
   * destination has delivered everything (bounded in steps). */
  heal(maxSteps = 3000): void {
    for (let step = 0; step < maxSteps; step++) {
      for (let p = 0; p < this.paths; p++) this.connect(p);
      let moved = 0;
      for (let s = 0; s < STREAMS.length; s++) moved += this.submit(s, Infinity) + this.consume(s, Infinity);
      for (const e of [0, 1] as const) {
        this.ends[e].handleTimeout(this.now);
        this.events();
        for (let p = 0; p < this.paths; p++) moved += this.pump(e, Infinity, p);
      }
      for (let p = 0; p < this.paths; p++) for (const dir of [0, 1] as const) while (this.deliver(dir, 0, 'ok', 0, p)) moved++;
      this.events();
      this.checkBounds();
      if (this.done()) return;
      if (moved === 0) {
        const next = Math.min(...this.ends.map((e) => e.pollTimeout(this.now) ?? Infinity));
        if (!(next > this.now) || next === Infinity) this.fail(`nothing to do and no timeout (${next})`);
        this.tick(next - this.now);
      }
    }
    this.fail(`not done after ${maxSteps} steps: ${JSON.stringify(this.st)}`);
  }

  done(): boolean {
    return this.st.every((st, s) => (st.stuck ? st.delivered === Math.min(st.total, this.windows[1 - STREAMS[s]!.from]!) : st.consumed === st.total));
  }
}

/** The actions of a run over `paths` connections between the two ends. */
function actionsOver(paths: number): fc.Arbitrary<Action> {
  // One path: no path field at all (the default, path 0).
  const path = paths === 1 ? fc.constant(undefined) : fc.nat({ max: paths - 1 });
  const withPath = (a: fc.Arbitrary<Action>): fc.Arbitrary<Action> => fc.tuple(a, path).map(([x, p]): Action => (p === undefined ? x : ({ ...x, path: p } as Action)));
  return fc.oneof(
    { weight: 3, arbitrary: fc.record({ t: fc.constant('tick' as const), ms: fc.oneof(fc.integer({ min: 0, max: 20 }), fc.integer({ min: 0, max: 400 })) }) },
    { weight: 6, arbitrary: withPath(fc.record({ t: fc.constant('pump' as const), end: fc.constantFrom(0 as const, 1 as const), max: fc.integer({ min: 1, max: 8 }) })) },
    {
      weight: 10,
      arbitrary: withPath(
        fc.record({
          t: fc.constant('deliver' as const),
          dir: fc.constantFrom(0 as const, 1 as const),
          pick: fc.oneof(fc.constant(0), fc.nat({ max: 20 })),
          fate: fc.oneof({ weight: 12, arbitrary: fc.constant('ok' as const) }, { weight: 2, arbitrary: fc.constant('lose' as const) }, { weight: 2, arbitrary: fc.constant('dup' as const) }, { weight: 1, arbitrary: fc.constant('corrupt' as const) }),
          bit: fc.nat({ max: 8 * 600 }),
        }),
      ),
    },
    { weight: 4, arbitrary: fc.record({ t: fc.constant('submit' as const), s: fc.nat({ max: STREAMS.length - 1 }), n: fc.integer({ min: 1, max: 6 }) }) },
    { weight: 4, arbitrary: fc.record({ t: fc.constant('consume' as const), s: fc.nat({ max: STREAMS.length - 1 }), n: fc.integer({ min: 1, max: 6 }) }) },
    { weight: 1, arbitrary: withPath(fc.record({ t: fc.constant('drop' as const) })) },
    { weight: 1, arbitrary: withPath(fc.record({ t: fc.constant('bounce' as const), end: fc.constantFrom(0 as const, 1 as const) })) },
    { weight: 2, arbitrary: withPath(fc.record({ t: fc.constant('connect' as const) })) },
  );
}
const actionArb = actionsOver(1);

const configArb = fc.record({
  window: fc.integer({ min: 1, max: 6 }),
  heartbeatMs: fc.constantFrom(20, 100),
  rtoMs: fc.constantFrom(10, 50, 200),
  // Acks that wait for a frame to ride with (below every rtoMs here).
  ackDelayMs: fc.constantFrom(0, 0, 1, 5),
});

const scenarioArb: fc.Arbitrary<Scenario> = fc.record({
  configs: fc.tuple(configArb, configArb),
  totals: fc.array(fc.nat({ max: 30 }), { minLength: STREAMS.length, maxLength: STREAMS.length }),
  stuck: fc.array(fc.boolean(), { minLength: STREAMS.length, maxLength: STREAMS.length }),
  actions: fc.array(actionArb, { minLength: 10, maxLength: 200, size: 'max' }),
  // A frame per link message, or trains (540: one data frame and an ack at most; 65536: the switches').
  train: fc.constantFrom(0, 0, 540, 1200, 65536),
});

interface Scenario {
  configs: [Partial<LinkEndConfig>, Partial<LinkEndConfig>];
  totals: number[];
  stuck: boolean[];
  actions: Action[];
  train?: number;
}

function simulate(sc: Scenario, paths = 1, make: Make = JS): Sim {
  const sim = new Sim(sc.configs, sc.totals, sc.stuck, paths, sc.train ?? 0, make);
  for (const a of sc.actions) sim.run(a);
  sim.heal();
  return sim;
}

// ---- the properties ---------------------------------------------------------------

test('property: over a link that loses, duplicates, reorders, corrupts and drops, every packet is delivered exactly once and in order, a stuck destination holds back only its own stream, and buffers stay within the window', (t) => {
  fc.assert(
    fc.property(scenarioArb, (sc) => {
      const sim = simulate(sc);
      if (process.env['SIM_STATS']) {
        const x = sim.ends.map((e) => e.stats);
        console.log(JSON.stringify({ now: sim.now, frames: sim.trace.length, delivered: sim.st.map((s) => s.delivered), a: x[0], b: x[1] }));
      }
      for (const [s, st] of sim.st.entries()) {
        const w = sim.windows[1 - STREAMS[s]!.from]!;
        if (st.stuck) {
          // It got what its window allows and no more, and it waits, refused, holding nothing back.
          t.is(st.delivered, Math.min(st.total, w), `stream ${s}`);
          if (st.total > w) t.true(st.waiting || st.submitted < st.total);
        } else {
          t.is(st.delivered, st.total, `stream ${s}`);
          t.is(st.submitted, st.total);
        }
      }
    }),
    { numRuns: 1500 },
  );
});

test('property: two connections between the same two ends, each losing, duplicating, reordering, corrupting and dropping on its own: every packet is delivered exactly once and in order', (t) => {
  fc.assert(
    fc.property(scenarioArb, fc.array(actionsOver(2), { minLength: 10, maxLength: 200, size: 'max' }), (sc, actions) => {
      const sim = simulate({ ...sc, actions }, 2);
      for (const [s, st] of sim.st.entries()) {
        const w = sim.windows[1 - STREAMS[s]!.from]!;
        t.is(st.delivered, st.stuck ? Math.min(st.total, w) : st.total, `stream ${s}`);
      }
    }),
    { numRuns: 1000 },
  );
});

test('property: one of two connections goes for good at any moment: the streams go on over the other, every packet exactly once and in order, and it is never connected again', (t) => {
  fc.assert(
    fc.property(scenarioArb, fc.array(actionsOver(2), { minLength: 10, maxLength: 200, size: 'max' }), fc.nat({ max: 200 }), (sc, actions, at) => {
      const sim = new Sim(sc.configs, sc.totals, sc.stuck, 2, sc.train ?? 0);
      sim.connect(0);
      sim.connect(1);
      actions.forEach((a, i) => {
        if (i === at) {
          sim.drop(0);
          sim.gone.add(0);
        }
        sim.run(a);
      });
      sim.drop(0);
      sim.gone.add(0);
      sim.heal();
      t.false(sim.connected[0]);
      for (const [s, st] of sim.st.entries()) {
        const w = sim.windows[1 - STREAMS[s]!.from]!;
        t.is(st.delivered, st.stuck ? Math.min(st.total, w) : st.total, `stream ${s}`);
      }
    }),
    { numRuns: 1000 },
  );
});

test('a connection dies with packets in flight while another is up: they go again on the other at once, none twice, none lost', (t) => {
  const a = new LinkEnd({ instance: 1, source: 0x1000 });
  const b = new LinkEnd({ instance: 2, source: 0x2000 });
  const S1: Stream = { source: 0x1001, destination: 0x2001 };
  const hop = (from: LinkEnd, to: LinkEnd, path: number, now: number, keep = (_i: number) => true) => {
    let i = 0;
    for (let f = from.pollTransmit(now, path); f; f = from.pollTransmit(now, path)) if (keep(i++)) to.receive(f, now, path);
  };
  for (const p of [0, 1]) {
    a.linkUp(0, p);
    b.linkUp(0, p);
  }
  for (let k = 0; k < 3; k++) for (const p of [0, 1]) {
    hop(a, b, p, 0);
    hop(b, a, p, 0);
  }
  t.true(a.pathUp(0) && a.pathUp(1) && b.pathUp(0) && b.pathUp(1));
  t.deepEqual(events(a), ['up', 'up']);
  for (let i = 0; i < 10; i++) t.true(a.submit(S1, packet(0, i)));
  // Path 0 carries all ten; the first four arrive, the rest die with it, and no ack comes back.
  hop(a, b, 0, 1, (i) => i < 4);
  const got: number[] = [];
  for (let d = b.pollDeliver(); d; d = b.pollDeliver()) got.push(indexOf(d.packet));
  t.deepEqual(got, [0, 1, 2, 3]);
  a.linkDown(0);
  b.linkDown(0);
  t.true(a.isUp, 'still up over path 1');
  t.is(a.pollTransmit(1, 0), null, 'nothing on the dead path');
  hop(a, b, 1, 1);
  for (let d = b.pollDeliver(); d; d = b.pollDeliver()) got.push(indexOf(d.packet));
  t.deepEqual(got, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
  t.is(b.stats.duplicates, 4, 'the four that had arrived came again and were discarded');
  hop(b, a, 1, 2);
  t.is(a.sendBuffered(S1), 0, 'all acknowledged over path 1');
  t.is(a.pathStats(0).framesSent + a.pathStats(1).framesSent, a.stats.framesSent);
});

test('property: a link that never drops (no reconnect to resend or re-grant): losses are repaired by retransmission and lost grants by probes alone', (t) => {
  const steady = (c: Partial<LinkEndConfig>) => ({ ...c, missedHeartbeats: 1e9 });
  fc.assert(
    fc.property(scenarioArb, (sc) => {
      const sim = simulate({ ...sc, configs: [steady(sc.configs[0]), steady(sc.configs[1])], actions: sc.actions.filter((a) => a.t !== 'drop' && a.t !== 'bounce') });
      for (const [s, st] of sim.st.entries()) if (!st.stuck) t.is(st.delivered, st.total, `stream ${s}`);
    }),
    { numRuns: 1000 },
  );
});

test('property: an end that restarts (a new instance, its state gone) gets every stream again in order, at least once: nothing lost, repeats only of what the old instance had', (t) => {
  const restartArb = fc.oneof({ weight: 20, arbitrary: actionArb }, { weight: 1, arbitrary: fc.constant({ t: 'restart' as const }) });
  fc.assert(
    fc.property(scenarioArb, fc.array(restartArb, { minLength: 10, maxLength: 200, size: 'max' }), (sc, actions) => {
      // Only streams into the end that restarts: the one from it would start over with new packets.
      const totals = sc.totals.map((n, s) => (STREAMS[s]!.from === 0 ? n : 0));
      const sim = simulate({ ...sc, totals, stuck: sc.stuck.map(() => false), actions });
      t.true(sim.restartsSeen <= sim.restarts);
      if (process.env['SIM_STATS']) console.log(JSON.stringify({ restarts: sim.restarts, seen: sim.restartsSeen }));
      for (const [s, st] of sim.st.entries()) t.is(st.delivered, st.total, `stream ${s}`);
    }),
    { numRuns: 500 },
  );
});

test('property: no stuck destination and a clean heal: everything arrives, the same inputs give the same frames (time is only `now`)', (t) => {
  fc.assert(
    fc.property(scenarioArb.map((sc) => ({ ...sc, stuck: sc.stuck.map(() => false) })), (sc) => {
      const a = simulate(sc);
      const b = simulate(sc);
      t.deepEqual(a.trace, b.trace);
      for (const st of a.st) t.is(st.consumed, st.total);
    }),
    { numRuns: 500 },
  );
});

test('property: the native core\'s link end (crates/famez-core/src/link) makes the same frames as the TypeScript one, delivers the same and counts the same, over one or two lossy connections and restarts', (t) => {
  const restartArb = fc.oneof({ weight: 20, arbitrary: actionsOver(2) }, { weight: 1, arbitrary: fc.constant({ t: 'restart' as const }) });
  fc.assert(
    fc.property(scenarioArb, fc.array(restartArb, { minLength: 10, maxLength: 200, size: 'max' }), fc.constantFrom(1, 2), (sc, actions, paths) => {
      const ours = { ...sc, actions: paths === 1 ? actions.filter((a) => !('path' in a) || a.path === undefined || a.path === 0) : actions };
      // Run as far as each goes: a scenario the Sim finds fault with (a
      // stream out of the restarting end starts over) must fail alike.
      const run = (make: Make) => {
        const sim = new Sim(ours.configs, ours.totals, ours.stuck, paths, ours.train ?? 0, make);
        try {
          for (const a of ours.actions) sim.run(a);
          sim.heal();
          return { sim, error: null };
        } catch (e) {
          return { sim, error: (e as Error).message };
        }
      };
      const [{ sim: js, error: jsError }, { sim: native, error: nativeError }] = [run(JS), run(NATIVE)];
      t.is(nativeError, jsError);
      t.deepEqual(native.failures, js.failures);
      t.deepEqual(native.trace, js.trace);
      t.deepEqual(native.st, js.st);
      t.deepEqual(native.ends.map((e) => e.stats), js.ends.map((e) => e.stats));
      const pathView = (e: End) => [e.isUp, e.upPaths, e.peer, e.deadAfterMs, e.pathBad(0), e.pathBad(1), e.pathStats(0).badFrames + e.pathStats(0).rejectedFrames];
      t.deepEqual(native.ends.map(pathView), js.ends.map(pathView));
      for (const e of [...native.ends, ...js.ends]) t.is(e.pathBad(0), e.pathStats(0).badFrames + e.pathStats(0).rejectedFrames);
      t.deepEqual(native.ends.map((e) => STREAMS.map(({ stream }) => [e.sendBuffered(stream), e.receiveBuffered(stream), e.credit(stream)])), js.ends.map((e) => STREAMS.map(({ stream }) => [e.sendBuffered(stream), e.receiveBuffered(stream), e.credit(stream)])));
    }),
    { numRuns: 600 },
  );
});

test('property: the native core\'s link end keeps the guarantees: every packet exactly once and in order, a stuck destination holding back only its own stream', (t) => {
  fc.assert(
    fc.property(scenarioArb, (sc) => {
      const sim = simulate(sc, 1, NATIVE);
      for (const [s, st] of sim.st.entries()) {
        const w = sim.windows[1 - STREAMS[s]!.from]!;
        t.is(st.delivered, st.stuck ? Math.min(st.total, w) : st.total, `stream ${s}`);
      }
    }),
    { numRuns: 500 },
  );
});

// ---- the rules one by one, by hand ------------------------------------------------

const S: Stream = { source: 0x1001, destination: 0x2001 };
const T: Stream = { source: 0x1002, destination: 0x2002 };
const P = (i: number) => packet(0, i);

/** Sends everything both ends have to send at `now` over a perfect wire, until both are quiet. */
function exchange(a: LinkEnd, b: LinkEnd, now: number, drop?: (from: 'a' | 'b', bytes: Uint8Array) => boolean): void {
  for (let moved = true, rounds = 0; moved && rounds < 1000; rounds++) {
    moved = false;
    for (const [from, to, name] of [[a, b, 'a'], [b, a, 'b']] as const) {
      for (let f = from.pollTransmit(now); f; f = from.pollTransmit(now)) {
        moved = true;
        if (!drop?.(name, f)) to.receive(f, now);
      }
    }
  }
}

function connected(ca: Partial<LinkEndConfig> = {}, cb: Partial<LinkEndConfig> = {}): [LinkEnd, LinkEnd] {
  const a = new LinkEnd({ instance: 1, ...ca });
  const b = new LinkEnd({ instance: 2, ...cb });
  a.linkUp(0);
  b.linkUp(0);
  exchange(a, b, 0);
  return [a, b];
}

function events(e: LinkEnd): string[] {
  const out: string[] = [];
  for (let ev = e.pollEvent(); ev; ev = e.pollEvent()) out.push(ev.kind === 'ready' || ev.kind === 'stalled' ? `${ev.kind} ${ev.stream.source.toString(16)}` : ev.kind === 'restarted' ? `restarted ${ev.instance} ${ev.resent}` : ev.kind);
  return out;
}

function delivered(e: LinkEnd): string[] {
  const out: string[] = [];
  for (let d = e.pollDeliver(); d; d = e.pollDeliver()) out.push(`${d.stream.source.toString(16)}:${d.packet[d.packet.length - 7]}`);
  return out;
}

test('the module reads no clock and sets no timer: time is only the `now` argument', (t) => {
  for (const file of ['streams.ts', 'frame.ts']) {
    const text = fs.readFileSync(path.join(__dirname, '..', 'ts', 'link', file), 'utf8').replace(/\/\/.*$/gm, '');
    t.notRegex(text, /\b(Date|setTimeout|setInterval|setImmediate|performance|hrtime|Math\.random|queueMicrotask)\b/, file);
    t.notRegex(text, /from 'node:/, file);
  }
});

test('unwrapSeq: the 32-bit wire sequence nearest the expected one', (t) => {
  t.is(unwrapSeq(0, 0), 0);
  t.is(unwrapSeq(0, 0xffffffff), -1);
  t.is(unwrapSeq(2 ** 32 - 2, 1), 2 ** 32 + 1);
  t.is(unwrapSeq(2 ** 32 + 5, 3), 2 ** 32 + 3);
  t.is(unwrapSeq(5 * 2 ** 32 + 7, 0x80000007), 5 * 2 ** 32 + 7 - 2 ** 31);
  t.is(unwrapSeq(5 * 2 ** 32 + 7, 0x80000006), 5 * 2 ** 32 + 7 + 2 ** 31 - 1);
  t.is(unwrapSeq(10, 10 + 2 ** 31 - 1), 10 + 2 ** 31 - 1);
});

test('hello both ways, then a heartbeat every 100 ms; nothing received for 300 ms: dead, down, silent', (t) => {
  const a = new LinkEnd({ instance: 7, window: 5, source: 0x1aa });
  const b = new LinkEnd({ instance: 8 });
  a.linkUp(0);
  b.linkUp(0);
  const h = a.pollTransmit(0)!;
  t.deepEqual(decode(h), { type: 'hello', instance: 7, window: 5, seen: false, source: 0x1aa });
  t.is(a.pollTransmit(0), null);
  t.false(b.isUp);
  b.receive(h, 0);
  t.true(b.isUp);
  t.deepEqual(events(b), ['up']);
  const hb = b.pollTransmit(0)!;
  t.deepEqual(decode(hb), { type: 'hello', instance: 8, window: 64, seen: true, source: 0 });
  a.receive(hb, 1);
  t.true(a.isUp);
  t.is(a.pollTransmit(1), null); // b showed it saw a's hello: no more hellos
  t.is(a.credit(S), 64);
  t.is(a.pollTimeout(1), 100);
  t.is(a.pollTransmit(99), null);
  t.deepEqual(decode(a.pollTransmit(100)!), { type: 'heartbeat' });
  t.is(a.pollTimeout(100), 200);
  a.handleTimeout(200);
  t.deepEqual(decode(a.pollTransmit(200)!), { type: 'heartbeat' });
  a.handleTimeout(300);
  t.true(a.isUp);
  t.is(a.pollTimeout(250), 300); // 300 ms after the last frame from b (at 1)
  a.handleTimeout(301);
  t.deepEqual(events(a), ['up', 'dead']);
  t.false(a.isUp);
  t.is(a.pollTransmit(301), null);
  t.is(a.pollTimeout(301), null);
});

test('configurable heartbeat: 10 ms and 5 missed is dead after 50 ms; any frame counts as alive', (t) => {
  const [a, b] = connected({ heartbeatMs: 10, missedHeartbeats: 5 });
  events(a);
  a.handleTimeout(40);
  b.handleTimeout(40);
  exchange(a, b, 40); // b's heartbeat (its default is 100 ms: nothing yet) — a sends its own
  a.handleTimeout(49);
  t.deepEqual(events(a), []);
  a.handleTimeout(50);
  t.deepEqual(events(a), ['dead']);
});

test('lateMs: a path is dead that much before three heartbeats of silence, so a late timer still has it down within them; out of range it is refused', (t) => {
  const [a] = connected({ lateMs: 10 });
  events(a);
  t.is(a.deadAfterMs, 290);
  // Connected at 0: the deadline is the last frame heard plus 290.
  const deadline = a.heardAt() + 290;
  a.handleTimeout(deadline - 1);
  t.deepEqual(events(a), []);
  a.handleTimeout(deadline);
  t.deepEqual(events(a), ['dead']);
  t.is(new LinkEnd({ instance: 1 }).deadAfterMs, 300, 'none by default');
  t.throws(() => new LinkEnd({ instance: 1, lateMs: 100 }), { instanceOf: RangeError });
  t.throws(() => new LinkEnd({ instance: 1, lateMs: -1 }), { instanceOf: RangeError });
});

test('a hello lost is sent again each heartbeat until the peer shows it saw it', (t) => {
  const a = new LinkEnd({ instance: 1 });
  const b = new LinkEnd({ instance: 2 });
  a.linkUp(0);
  b.linkUp(0);
  a.pollTransmit(0); // lost
  b.pollTransmit(0); // lost
  t.is(a.pollTimeout(0), 100);
  exchange(a, b, 100);
  t.true(a.isUp && b.isUp);
  t.is(a.pollTimeout(100), 200); // a heartbeat, no hello
});

test('frames before the peer hello on this connection are rejected; so are acks beyond what was sent', (t) => {
  const b = new LinkEnd({ instance: 2 });
  b.linkUp(0);
  b.receive(encode({ type: 'data', ...S, seq: 0, packet: P(0) }), 0);
  t.is(b.stats.rejectedFrames, 1);
  t.is(b.pollDeliver(), null);
  const [a2, b2] = connected();
  t.true(a2.submit(S, P(0)));
  a2.receive(encode({ type: 'ack', ...S, ack: 5, credit: 100 }), 1);
  t.is(a2.stats.rejectedFrames, 1);
  t.is(a2.sendBuffered(S), 1);
  t.is(a2.credit(S), 63); // the bogus credit was not taken either
  a2.receive(encode({ type: 'ack', ...S, ack: 0, credit: 65 }), 1); // more than b2's window beyond the ack
  t.is(a2.stats.rejectedFrames, 2);
  a2.receive(encode({ type: 'ack', ...S, ack: 1, credit: 0 }), 1); // credit behind the ack
  t.is(a2.stats.rejectedFrames, 3);
  t.is(a2.sendBuffered(S), 1);
  a2.receive(encode({ type: 'ack', ...S, ack: 1, credit: 65 }), 1);
  t.is(a2.sendBuffered(S), 0);
  t.is(a2.credit(S), 64);
  b2.receive(encode({ type: 'ack', ...T, ack: 0, credit: 9 }), 1); // a stream b2 does not send
  t.is(b2.stats.rejectedFrames, 1);
});

test('a peer opens at most maxStreams streams toward an end', (t) => {
  const [a, b] = connected({}, { maxStreams: 2 });
  for (let src = 1; src <= 3; src++) a.submit({ source: src, destination: 9 }, P(0));
  exchange(a, b, 1);
  t.deepEqual(delivered(b), ['1:0', '2:0']);
  t.true(b.stats.rejectedFrames >= 1);
  b.receive(encode({ type: 'probe', source: 4, destination: 9, seq: 0 }), 2);
  t.is(b.pollTransmit(2), null); // no ack for a stream it does not keep
});

test('data beyond the credit granted is discarded (and acked); a duplicate is discarded; frames after a gap wait for it', (t) => {
  const [a, b] = connected({}, { window: 3 });
  b.receive(encode({ type: 'data', ...S, seq: 3, packet: P(3) }), 1);
  t.is(b.stats.outOfWindow, 1);
  b.receive(encode({ type: 'data', ...S, seq: 2, packet: P(2) }), 1);
  b.receive(encode({ type: 'data', ...S, seq: 1, packet: P(1) }), 1);
  b.receive(encode({ type: 'data', ...S, seq: 1, packet: P(1) }), 1);
  t.is(b.stats.duplicates, 1);
  t.deepEqual(delivered(b), []);
  t.is(b.receiveBuffered(S), 2);
  b.receive(encode({ type: 'data', ...S, seq: 0, packet: P(0) }), 1);
  b.receive(encode({ type: 'data', ...S, seq: 0, packet: P(0) }), 1);
  t.is(b.stats.duplicates, 2);
  t.deepEqual(delivered(b), ['1001:0', '1001:1', '1001:2']);
  t.deepEqual(decode(b.pollTransmit(2)!), { type: 'ack', ...S, ack: 3, credit: 3 });
  b.consumed(S, 2);
  t.deepEqual(decode(b.pollTransmit(2)!), { type: 'ack', ...S, ack: 3, credit: 5 });
  t.is(a.pollTransmit(2), null);
});

test('a stream without credit is refused and stalled alone: another stream, to the same switch, flows; credit comes back as the destination consumes', (t) => {
  const [a, b] = connected({}, { window: 2 });
  t.true(a.submit(S, P(0)));
  t.true(a.submit(S, P(1)));
  t.false(a.submit(S, P(2)));
  t.false(a.submit(S, P(2)));
  t.deepEqual(events(a), ['up', 'stalled 1001']);
  t.is(a.credit(S), 0);
  exchange(a, b, 1);
  t.deepEqual(delivered(b), ['1001:0', '1001:1']);
  // S's destination does not consume; T goes on, 20 packets through a window of 2.
  let sent = 0;
  const got: string[] = [];
  for (let step = 0; step < 100 && got.length < 20; step++) {
    while (sent < 20 && a.submit(T, P(sent))) sent++;
    exchange(a, b, 2 + step);
    const d = delivered(b);
    got.push(...d);
    if (d.length) b.consumed(T, d.length);
    events(a);
  }
  t.deepEqual(got, Array.from({ length: 20 }, (_, i) => `1002:${i}`));
  t.is(a.sendBuffered(S), 0);
  t.deepEqual(events(a), []);
  b.consumed(S, 1);
  exchange(a, b, 200);
  t.deepEqual(events(a), ['ready 1001']);
  t.true(a.submit(S, P(2)));
  t.false(a.submit(S, P(3)));
});

test('a lost grant: the stalled sender probes after its timeout and the answer carries the credit', (t) => {
  const [a, b] = connected({ rtoMs: 50 }, { window: 1 });
  events(a);
  t.true(a.submit(S, P(0)));
  t.false(a.submit(S, P(1)));
  exchange(a, b, 1);
  t.deepEqual(delivered(b), ['1001:0']);
  b.consumed(S, 1);
  exchange(a, b, 2, (from) => from === 'b'); // the grant is lost
  t.deepEqual(events(a), ['stalled 1001']);
  a.handleTimeout(3);
  t.is(a.pollTimeout(3), 53);
  a.handleTimeout(53);
  t.deepEqual(decode(a.pollTransmit(53)!), { type: 'probe', ...S, seq: 1 });
  b.receive(encode({ type: 'probe', ...S, seq: 1 }), 53);
  a.receive(b.pollTransmit(53)!, 53);
  t.deepEqual(events(a), ['ready 1001']);
});

test('unacknowledged packets go again after the timeout (doubling) and at reconnect; the receiver discards what it had', (t) => {
  const [a, b] = connected({ rtoMs: 20 });
  for (let i = 0; i < 3; i++) a.submit(S, P(i));
  const lost = [a.pollTransmit(1)!, a.pollTransmit(1)!, a.pollTransmit(1)!];
  b.receive(lost[0]!, 1); // only the first arrives; its ack is lost
  b.pollTransmit(1);
  t.is(a.pollTimeout(1), 21);
  a.handleTimeout(21);
  t.is(a.stats.retransmits, 3);
  t.is(a.pollTimeout(21), 21); // to send now
  for (let i = 0; i < 3; i++) a.pollTransmit(21); // lost again
  t.is(a.pollTimeout(21), 61); // the timeout doubled
  a.handleTimeout(61);
  t.is(a.stats.retransmits, 6);
  exchange(a, b, 61, (from, f) => from === 'a' && decode(f).type === 'data' && (decode(f) as { seq: number }).seq === 1);
  t.deepEqual(delivered(b), ['1001:0']);
  t.is(b.receiveBuffered(S), 1); // packet 2 waits for 1
  t.is(b.stats.duplicates, 1);
  t.is(a.pollTimeout(61), 81); // the ack of 0 was progress: back to 20 ms
  // The link drops and comes back before that: everything unacknowledged goes at once.
  a.linkDown();
  b.linkDown();
  a.linkUp(70);
  b.linkUp(70);
  exchange(a, b, 70);
  t.deepEqual(delivered(b), ['1001:1', '1001:2']);
  t.is(a.sendBuffered(S), 0);
});

test('a peer that restarted (new instance) gets its streams from 0: unacknowledged packets go again, at least once', (t) => {
  const [a, b] = connected();
  for (let i = 0; i < 3; i++) a.submit(S, P(i));
  exchange(a, b, 1, (from, f) => from === 'b' || (decode(f).type === 'data' && (decode(f) as { seq: number }).seq === 2));
  t.deepEqual(delivered(b), ['1001:0', '1001:1']); // and then b dies before acking
  a.linkDown();
  const b2 = new LinkEnd({ instance: 3 });
  a.linkUp(10);
  b2.linkUp(10);
  exchange(a, b2, 10);
  t.deepEqual(events(a), ['up', 'restarted 3 3', 'up']);
  t.deepEqual(delivered(b2), ['1001:0', '1001:1', '1001:2']);
});

test('submit and consumed refuse what cannot be', (t) => {
  const [a, b] = connected();
  t.throws(() => a.submit(S, new Uint8Array(16)), { instanceOf: FrameError, code: 'EPACKET' } as never);
  t.throws(() => a.submit({ source: 2 ** 28, destination: 1 }, P(0)), { instanceOf: FrameError, code: 'EFIELD' } as never);
  t.throws(() => b.consumed(S, 1), { instanceOf: RangeError });
  a.submit(S, P(0));
  exchange(a, b, 1);
  t.throws(() => b.consumed(S, 1), { instanceOf: RangeError }); // delivered to the end, not yet polled
  delivered(b);
  b.consumed(S, 1);
  t.throws(() => b.consumed(S, 1), { instanceOf: RangeError });
  t.throws(() => new LinkEnd({ instance: -1 }), { instanceOf: RangeError });
  t.throws(() => new LinkEnd({ instance: 1, window: 0 }), { instanceOf: RangeError });
  t.throws(() => new LinkEnd({ instance: 1, missedHeartbeats: 1 }), { instanceOf: RangeError });
});

test('before the first hello a new stream has no credit: refused, then ready when the peer says its window', (t) => {
  const a = new LinkEnd({ instance: 1 });
  const b = new LinkEnd({ instance: 2, window: 4 });
  t.false(a.submit(S, P(0)));
  t.deepEqual(events(a), ['stalled 1001']);
  a.linkUp(0);
  b.linkUp(0);
  exchange(a, b, 0);
  t.deepEqual(events(a), ['ready 1001', 'up']);
  t.is(a.credit(S), 4);
});

test('a sender that restarted: its new packets are delivered from its 0 again, and what the destination still holds of the old ones can still be consumed', (t) => {
  const U: Stream = { source: 0x2001, destination: 0x1001 };
  const [a, b] = connected({ window: 2 });
  t.true(b.submit(U, P(0)));
  t.true(b.submit(U, P(1)));
  exchange(a, b, 1);
  t.deepEqual(delivered(a), ['2001:0', '2001:1']);
  a.consumed(U, 1); // one still held by the destination
  const b2 = new LinkEnd({ instance: 9 });
  a.linkDown();
  a.linkUp(10);
  b2.linkUp(10);
  exchange(a, b2, 10);
  t.deepEqual(events(a), ['up', 'restarted 9 0', 'up']);
  t.true(b2.submit(U, P(5)));
  exchange(a, b2, 11);
  t.deepEqual(delivered(a), ['2001:5']);
  a.consumed(U, 2); // the old one and the new one
  t.throws(() => a.consumed(U, 1), { instanceOf: RangeError });
  exchange(a, b2, 12);
  // Granted: 1 consumed of the new numbering + the window of 2 = 3; 1 acked: 2 to go.
  t.is(b2.credit(U), 2);
});

test('a data frame corrupted on the way is dropped, counted, never delivered, and arrives whole when resent', (t) => {
  const [a, b] = connected({ rtoMs: 10 });
  a.submit(S, P(0));
  const f = a.pollTransmit(1)!;
  const bad = f.slice();
  bad[40] ^= 0x04; // inside the packet: its ECRC no longer matches
  b.receive(bad, 1);
  t.is(b.stats.badFrames, 1);
  t.regex(b.stats.lastBadFrame!, /ECRC/);
  t.is(b.pollDeliver(), null);
  t.is(b.pollTransmit(1), null); // nothing to ack
  a.handleTimeout(11);
  exchange(a, b, 11);
  t.deepEqual(delivered(b), ['1001:0']);
  t.is(a.sendBuffered(S), 0);
});

test('request and response: the ack of each stream rides on the data of its reverse, no ack frames of their own', (t) => {
  const R: Stream = { source: S.destination, destination: S.source };
  const [a, b] = connected();
  const frames: string[] = [];
  for (let i = 0; i < 5; i++) {
    a.submit(S, P(i));
    const req = a.pollTransmit(1 + i)!;
    const q = decode(req);
    frames.push(q.type);
    if (i > 0) t.like(q, { reverse: { ack: i, credit: 64 + i } });
    b.receive(req, 1 + i);
    t.deepEqual(delivered(b), [`1001:${i}`]);
    b.consumed(S, 1);
    b.submit(R, P(i));
    const res = b.pollTransmit(1 + i)!;
    const d = decode(res);
    t.like(d, { type: 'data', reverse: { ack: i + 1, credit: 64 + i + 1 } });
    t.is(b.pollTransmit(1 + i), null);
    a.receive(res, 1 + i);
    t.deepEqual(delivered(a), [`2001:${i}`]);
    a.consumed(R, 1);
  }
  t.is(a.sendBuffered(S), 0); // every request acked by a response
  t.is(b.sendBuffered(R), 1); // each request acked the response before it; the last one's ack is still owed
  t.deepEqual(decode(a.pollTransmit(6)!), { type: 'ack', ...R, ack: 5, credit: 69 });
  t.deepEqual(frames, ['data', 'data', 'data', 'data', 'data']);
});

/** The frames of one link message, as their types (and data seq). */
const kinds = (train: Uint8Array) => decodeTrain(train).frames.map((f) => (f.type === 'data' ? `data ${f.seq}${f.reverse ? '+ack' : ''}` : f.type));

test('a train: every frame due in one link message, data first, then one cumulative ack per stream; 20 data frames are acked by one ack', (t) => {
  const [a, b] = connected();
  for (let i = 0; i < 20; i++) t.true(a.submit(S, P(i)));
  const train = a.pollTrain(1)!;
  t.deepEqual(kinds(train), Array.from({ length: 20 }, (_, i) => `data ${i}`));
  t.is(a.pollTrain(1), null);
  t.is(a.stats.framesSent, 1 + 20, 'a hello, then the data');
  b.receive(train, 1);
  t.is(delivered(b).length, 20);
  b.consumed(S, 20);
  const back = b.pollTrain(1)!;
  t.deepEqual(decodeTrain(back).frames, [{ type: 'ack', ...S, ack: 20, credit: 84 }]);
  a.receive(back, 1);
  t.is(a.sendBuffered(S), 0);
});

test('a train holds at most maxBytes: the rest goes in the next ones; it must have room for the largest unit', (t) => {
  const [a, b] = connected();
  // Units of 15 packets end to end (360 bytes), 392 bytes a frame.
  const U = (i: number) => new Uint8Array(Buffer.concat(Array.from({ length: 15 }, () => P(i))));
  for (let i = 0; i < 60; i++) a.submit(S, U(i));
  const size = 32 + U(0).length;
  const max = 32 + 8192 + 100; // the largest unit's frame, and a little
  const trains: Uint8Array[] = [];
  for (let f = a.pollTrain(1, 0, max); f; f = a.pollTrain(1, 0, max)) trains.push(f);
  const each = Math.floor(max / size);
  t.deepEqual(
    trains.map((x) => decodeTrain(x).frames.length),
    [each, each, each, 60 - 3 * each],
  );
  t.true(trains.every((x) => x.length <= max));
  for (const x of trains) b.receive(x, 1);
  t.deepEqual(delivered(b), Array.from({ length: 60 }, (_, i) => `1001:${i}`));
  t.throws(() => a.pollTrain(1, 0, 32 + 8191), { instanceOf: RangeError });
  const small = new LinkEnd({ instance: 3, maxUnit: 508 });
  small.linkUp(0);
  t.is(small.pollTrain(0, 0, 540)?.length, 32, 'a hello, in a train with room for one packet');
  t.throws(() => small.submit(S, new Uint8Array(Buffer.concat([U(0), U(1)]))), { instanceOf: FrameError, code: 'EPACKET' }, 'a unit (720 bytes) over its maxUnit');
});

test('a corrupt frame in a train: the frames before it count, it and the rest are dropped (one bad frame), and what they carried arrives when resent', (t) => {
  const [a, b] = connected({ rtoMs: 10 });
  for (let i = 0; i < 5; i++) a.submit(S, P(i));
  const train = a.pollTrain(1)!.slice();
  const size = 32 + P(0).length;
  train[2 * size + 40] ^= 0x04; // in frame 3's packet
  b.receive(train, 1);
  t.deepEqual(delivered(b), ['1001:0', '1001:1']);
  t.is(b.stats.badFrames, 1);
  t.is(b.stats.framesReceived, 1 + 2, 'a hello, then two data frames');
  t.regex(b.stats.lastBadFrame!, /^frame 3 of a train: /);
  b.consumed(S, 2);
  exchange(a, b, 1);
  a.handleTimeout(12);
  exchange(a, b, 12);
  t.deepEqual(delivered(b), ['1001:2', '1001:3', '1001:4']);
});

test('delayed acks (ackDelayMs): an ack waits for data of its reverse stream to ride on, or its delay; a duplicate or a sender low on credit is acked at once', (t) => {
  const R: Stream = { source: S.destination, destination: S.source };
  const [a, b] = connected({}, { ackDelayMs: 5, window: 8 });
  a.submit(S, P(0));
  b.receive(a.pollTrain(1)!, 1);
  b.consumed(S, delivered(b).length);
  t.is(b.pollTrain(1), null, 'the ack waits');
  t.is(b.pollTimeout(1), 6, 'until its delay');
  b.submit(R, P(0));
  t.deepEqual(kinds(b.pollTrain(2)!), ['data 0+ack'], 'it rides on the reverse data');
  // Its delay passes: it goes alone.
  a.submit(S, P(1));
  b.receive(a.pollTrain(3)!, 3);
  b.consumed(S, delivered(b).length);
  t.is(b.pollTrain(7), null);
  t.deepEqual(kinds(b.pollTrain(8)!), ['ack']);
  // A duplicate: at once (the sender did not hear).
  a.submit(S, P(2));
  const f = a.pollTrain(9)!;
  b.receive(f, 9);
  b.consumed(S, delivered(b).length);
  t.is(b.pollTrain(9), null);
  b.receive(f, 9);
  t.is(b.stats.duplicates, 1);
  t.deepEqual(kinds(b.pollTrain(9)!), ['ack']);
  // Five of the eight in flight unconsumed: the grant that follows is urgent.
  for (let i = 3; i < 8; i++) a.submit(S, P(i));
  b.receive(a.pollTrain(10)!, 10);
  t.is(delivered(b).length, 5);
  t.is(b.pollTrain(10), null, 'acks of data alone wait');
  b.consumed(S, 5);
  t.deepEqual(decodeTrain(b.pollTrain(10)!).frames, [{ type: 'ack', ...S, ack: 8, credit: 16 }]);
});
