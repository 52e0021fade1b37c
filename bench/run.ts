// famez benchmark runner: `npm run bench` / `famez bench`.
//
//   node --import=tsx bench/run.ts [--quick | --smoke] [--json FILE] [--only LIST]
//
// Every scenario is measured by its implementations in interleaved rounds
// (C, Rust, JS, C, Rust, JS, ...) so that a change of conditions on the
// shared machine hits all of them alike, and every latency scenario in two
// regimes: cross-cpu (the two sides pinned to two CPUs) and same-cpu (both
// pinned to one CPU). The C baselines (bench/baseline/, compiled here with
// the system cc) and the Rust examples (crates/famez-core/examples/bench_*,
// built once, run from target/release/examples) pin themselves
// (`--cpus A,B`, sched_setaffinity); famez's JS peers (bench/js/, each in
// its own Node process, kept across rounds) are pinned with `taskset -a`.
// The guest group boots two TCG VMs on an in-process fabric server
// (famez's JS API against bench/baseline/guest.c inside them). Prints a
// table and writes bench/results/latest.json (or FILE) and
// bench/results/latest.svg. Every child is bounded in time and killed on
// the way out. (bench/lib: the children, the rows, the table and chart.)
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { UsageError, parseFlags } from '../ts/args.js';
import { startServe } from '../ts/cli/start.js';
import { lineLogger } from '../ts/log.js';
import { parseServeArgs } from '../ts/server/options.js';
import { guestFiles } from '../ts/vm/cache.js';
import { findKernel, findQemu, findStaticBusybox } from '../ts/vm/host.js';
import { bootVm, type Vm } from '../ts/vm/vm.js';
import { Child, ROOT, killAll, runBounded, vms } from './lib/child.js';
import { fmt, makeRun, ratios, skippedRun, svg, table, type Impl, type Regime, type Run } from './lib/report.js';

export type { Run } from './lib/report.js';

const RESULTS = path.join(ROOT, 'bench', 'results');
const BUILD = path.join(RESULTS, '.build');
const TSX = ['--import=tsx'];

type Mode = 'smoke' | 'quick' | 'full';

// ---------------------------------------------------------------- options

const GROUPS = ['doorbell', 'mailbox', 'ring', 'switch', 'links', 'mesh', 'mesh-fabric', 'guest'] as const;
type Group = (typeof GROUPS)[number];
const IMPLS = ['c', 'rust', 'js'] as const;
const PINNED = ['cross-cpu', 'same-cpu'] as const;
type Pinned = (typeof PINNED)[number];
const ONLY_WORDS: readonly string[] = [...GROUPS, ...IMPLS, ...PINNED];
const ONLY_HELP = `groups (${GROUPS.join(', ')}), implementations (${IMPLS.join(', ')}) and regimes (${PINNED.join(', ')})`;

function parseBenchArgs(argv: string[]): { mode: Mode; json: string; only: Set<string> } {
  let mode: Mode = 'full';
  let json = path.join(RESULTS, 'latest.json');
  const only = new Set<string>();
  try {
    for (const flag of parseFlags(argv, {
      quick: { type: 'boolean' },
      smoke: { type: 'boolean' },
      json: { type: 'string' },
      only: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    })) {
      if (flag.name === 'quick') mode = 'quick';
      else if (flag.name === 'smoke') mode = 'smoke';
      else if (flag.name === 'json') json = path.resolve(flag.value);
      else if (flag.name === 'only') {
        for (const g of flag.value.split(',')) {
          if (!ONLY_WORDS.includes(g)) throw new UsageError(`--only takes a comma-separated list of ${ONLY_HELP}; not '${g}'`);
          only.add(g);
        }
      } else {
        process.stdout.write(
          [
            `Usage: npm run bench -- [--quick | --smoke] [--json FILE] [--only LIST]`,
            '',
            '  --quick      short counts: about two minutes, plus the guest VMs',
            '  --smoke      tiny counts, seconds (npm test runs it)',
            '  --json FILE  the JSON to FILE (default bench/results/latest.json), the chart beside it (.svg)',
            `  --only LIST  a comma-separated list of ${ONLY_HELP};`,
            '               each kind given restricts that kind: --only doorbell,switch,same-cpu',
            '               (a regime named leaves out the unpinned groups: mesh, mesh-fabric, guest)',
            '',
            'Latency scenarios run in two regimes, cross-cpu (the two sides pinned to two CPUs) and',
            'same-cpu (both pinned to one CPU); throughput and busy polling run cross-cpu only.',
            '',
          ].join('\n'),
        );
        process.exit(0);
      }
    }
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    process.stderr.write(`bench: ${e.message}\n`);
    process.exit(2);
  }
  return { mode, json, only };
}

const { mode, json: JSON_OUT, only: ONLY } = parseBenchArgs(process.argv.slice(2));
const restricts = (words: readonly string[]) => words.some((w) => ONLY.has(w));
/** The groups whose rows are `unpinned`: naming a regime leaves them out
 * unless they are named too. */
const UNPINNED_GROUPS: readonly Group[] = ['mesh', 'mesh-fabric', 'guest'];
const wantedGroup = (g: Group) => ONLY.has(g) || (!restricts(GROUPS) && !(UNPINNED_GROUPS.includes(g) && restricts(PINNED)));
const wantedImpl = (i: Impl) => !restricts(IMPLS) || ONLY.has(i);
const wantedRegime = (r: Pinned) => !restricts(PINNED) || ONLY.has(r);
const pick = <T>(smoke: T, quick: T, full: T): T => (mode === 'smoke' ? smoke : mode === 'quick' ? quick : full);

// ---------------------------------------------------------------- CPUs

/** The CPUs this process may run on (its affinity), lowest first. */
function allowedCpus(): number[] {
  try {
    const m = fs.readFileSync('/proc/self/status', 'utf8').match(/^Cpus_allowed_list:\s*(\S+)/m);
    if (m) {
      const cpus = m[1].split(',').flatMap((part) => {
        const [a, b] = part.split('-').map(Number);
        return Array.from({ length: (b ?? a) - a + 1 }, (_, i) => a + i);
      });
      if (cpus.length > 0 && cpus.every(Number.isInteger)) return cpus;
    }
  } catch {
    // not Linux's /proc: every CPU os knows
  }
  return os.cpus().map((_, i) => i);
}
const CPUS = allowedCpus();
const CPU_A = CPUS[0] ?? 0;
/** Each regime's CPUs for the two sides: [A, B]. */
const PIN: Record<Pinned, [number, number] | null> = {
  'cross-cpu': CPUS.length >= 2 ? [CPU_A, CPUS[1]] : null,
  'same-cpu': [CPU_A, CPU_A],
};
const NO_CROSS = `cross-cpu needs two CPUs; this process may use only CPU ${CPUS.join(',')}`;
const LATENCY: Pinned[] = ['cross-cpu', 'same-cpu'];
const CROSS: Pinned[] = ['cross-cpu'];

// ---------------------------------------------------------------- sizes

/** Interleaved rounds per scenario and regime. */
const ROUNDS = pick(2, 3, 5);
const SIZES = [64, 256, 1024, 4096, 16384, 65536];
const PEER_CURVE = [2, 16, 64];
const SWITCH_PEERS = [1, 4, 14];
/** Per round: batches of round trips (one sample per batch). */
const C_RTT = { rounds: pick(200, 1000, 2500), batches: pick(2, 4, 6) };
const JS_RTT = { rounds: pick(100, 1000, 2500), batches: pick(2, 4, 6) };
const MB_RTT = { rounds: pick(50, 500, 1000), batches: pick(2, 4, 6) };
/** Untimed JS round trips before the first round (the JIT settles over a
 * few thousand) and before each later one. */
const RTT_WARMUP = pick(20, 3000, 5000);
const RTT_REWARM = pick(10, 300, 500);
/** Messages per ring rep for a size: a byte budget, at least a floor. */
const cCount = (size: number) => Math.max(pick(2000, 20_000, 50_000), Math.floor(pick(8e6, 1e9, 4e9) / size));
const jsCount = (size: number) => Math.max(pick(200, 2000, 5000), Math.floor(pick(256e3, 128e6, 512e6) / size));
/** The -busy-poll rows: Client's busyPollUs, and the same window in C and Rust. */
const BUSY_POLL_US = 200;
/** The ring rows' consumers spin this long after the ring runs dry before
 * they sleep: the Rust example's --spin-us default, the JS Client's
 * busy-poll window. */
const RING_SPIN_US = 50;
/** Every ring's data area: the C baseline's CAP (bench/baseline/ring.c),
 * so that C, Rust and JS stream through rings of one size. */
const RING_CAPACITY = 4 << 20;
/** switch-ping: per round a warm-up, then windows (one sample each). */
const SWITCH = { warmupMs: pick(100, 300, 500), windowMs: pick(50, 100, 200), windows: pick(2, 4, 5) };
/** The JS switch peers: FabricClients spread over at most this many processes. */
const SWITCH_PROCS = 4;
const MESH = { peers: pick(16, 256, 256), procs: pick(2, 4, 4), reps: pick(1, 3, 5) };
// A fabric peer holds every other peer's 64 eventfds (~4,000 fds): 4 per process.
const MESH_FABRIC = { peers: pick(8, 62, 62), procs: pick(2, 16, 16), reps: pick(1, 3, 5) };
const RUN_MS = pick(30_000, 120_000, 300_000);
/** links: round trips per batch, batches per round, untimed ones first; stream counts. */
const LINK_RTT = { rounds: pick(30, 300, 1000), batches: pick(2, 4, 6), warmup: pick(20, 300, 1000) };
const LINK_STREAM = { c: pick(5000, 100_000, 400_000), js: pick(1000, 20_000, 100_000) };

// ---------------------------------------------------------------- rows

const runs: Run[] = [];
function record(scenario: string, impl: Impl, regime: Regime, unit: string, rounds: number[][], note?: string): void {
  const r = makeRun(scenario, impl, regime, unit, rounds, note);
  runs.push(r);
  log(`  ${scenario} ${impl} ${regime}: ${fmt(r.median)} ${unit}${r.spread ? ` (rounds ${fmt(r.spread.min)}-${fmt(r.spread.max)})` : ''}`);
}
function skip(scenario: string, impl: Impl, regime: Regime, unit: string, reason: string): void {
  runs.push(skippedRun(scenario, impl, regime, unit, reason));
  log(`  ${scenario} ${impl} ${regime}: skipped (${reason})`);
}
const has = (scenario: string, impl: Impl, regime: Regime) => runs.some((r) => r.scenario === scenario && r.impl === impl && r.regime === regime);
const why = (e: unknown) => `failed: ${((e as Error).message ?? String(e)).split('\n')[0].slice(0, 300)}`;
/** Runs one scenario group; a failure skips the rows it did not record. */
async function attempt(what: string, expected: [string, Impl, Regime, string][], body: () => Promise<void>): Promise<void> {
  // Nothing of it is wanted (--only): not even its set-up runs.
  if (!expected.some(([, i, g]) => wantedImpl(i) && (g === 'unpinned' || wantedRegime(g)))) return;
  log(`${what}...`);
  const t0 = Date.now();
  try {
    await body();
  } catch (e) {
    for (const [s, i, g, u] of expected) if (!has(s, i, g)) skip(s, i, g, u, why(e));
  }
  log(`  (${what}: ${((Date.now() - t0) / 1000).toFixed(1)} s)`);
}
function log(s: string): void {
  process.stderr.write(`${s}\n`);
}

// ---------------------------------------------------------------- rounds

/** One implementation of a scenario. */
interface Side {
  impl: Impl;
  /** The row's scenario, when this side is a variant measured in the same
   * rounds under a name of its own. */
  scenario?: string;
  /** Why it cannot run (every row skipped with it), or null. */
  unavailable: string | null;
  /** Before a regime's rounds (pins the JS processes). */
  enter?: (cpus: [number, number]) => Promise<void>;
  /** One round: its samples. `index` counts this side's rounds in this
   * scenario over every regime (the JS warm-up is in its first). */
  round: (cpus: [number, number], index: number) => Promise<number[]>;
  note?: (regime: Pinned) => string;
}

/** Runs a scenario in each regime: ROUNDS rounds, each side once per round
 * in turn; one row per side and regime. A side that fails is skipped (with
 * why) for the rest of the regime. */
async function interleave(scenario: string, unit: string, regimes: Pinned[], sides: Side[]): Promise<void> {
  const mine = sides.filter((s) => wantedImpl(s.impl));
  const count = new Map<Side, number>();
  for (const regime of regimes.filter(wantedRegime)) {
    const cpus = PIN[regime];
    const rounds = new Map<Side, number[][]>();
    const failed = new Map<Side, string>();
    for (const s of mine) {
      if (!cpus) failed.set(s, NO_CROSS);
      else if (s.unavailable !== null) failed.set(s, s.unavailable);
      else {
        try {
          await s.enter?.(cpus);
          rounds.set(s, []);
        } catch (e) {
          failed.set(s, why(e));
        }
      }
    }
    if (cpus) {
      for (let r = 0; r < ROUNDS; r++) {
        for (const s of mine) {
          const got = rounds.get(s);
          if (!got) continue;
          try {
            const n = count.get(s) ?? 0;
            count.set(s, n + 1);
            got.push(await s.round(cpus, n));
          } catch (e) {
            failed.set(s, why(e));
            rounds.delete(s);
          }
        }
      }
    }
    for (const s of mine) {
      const got = rounds.get(s);
      if (got) record(s.scenario ?? scenario, s.impl, regime, unit, got, s.note?.(regime));
      else skip(s.scenario ?? scenario, s.impl, regime, unit, failed.get(s)!);
    }
  }
}

const cpuArg = (cpus: [number, number]) => ['--cpus', `${cpus[0]},${cpus[1]}`];
const regimeNote = (regime: Pinned, a: string, b: string) => (regime === 'same-cpu' ? `${a} and ${b} both on CPU ${CPU_A}` : `${a} on CPU ${PIN[regime]![0]}, ${b} on CPU ${PIN[regime]![1]}`);

/** Runs a benchmark program; the samples of its JSON line. */
async function samplesOf(cmd: string, args: string[], what: string): Promise<number[]> {
  const stdout = await runBounded(cmd, args, RUN_MS, what);
  for (const l of stdout.trim().split('\n').reverse()) {
    if (!l.startsWith('{')) continue;
    const o = JSON.parse(l) as { samples?: unknown };
    if (Array.isArray(o.samples) && o.samples.length > 0 && o.samples.every((x) => typeof x === 'number' && Number.isFinite(x))) return o.samples as number[];
  }
  throw new Error(`${what}: no samples in its output: ${stdout.trim().slice(-200)}`);
}

// ---------------------------------------------------------------- builds

/** The C baselines, compiled once: why not, or null. */
let cError: string | null = 'not built';
function buildC(): void {
  try {
    fs.mkdirSync(BUILD, { recursive: true });
    for (const name of ['doorbell', 'mailbox', 'ring', 'switch', 'tcp', 'relay']) {
      // Built aside and renamed into place: another run may be using the
      // binary right now.
      const tmp = path.join(BUILD, `${name}.${process.pid}.tmp`);
      const cc = spawnSync('cc', ['-O2', '-o', tmp, path.join(ROOT, 'bench', 'baseline', `${name}.c`)], { encoding: 'utf8', timeout: 60_000 });
      if (cc.error || cc.status !== 0) {
        fs.rmSync(tmp, { force: true });
        throw new Error(`cc ${name}.c: ${cc.error?.message ?? cc.stderr.trim()}`);
      }
      fs.renameSync(tmp, path.join(BUILD, name));
    }
    cError = null;
  } catch (e) {
    cError = why(e);
  }
}
const cBin = (name: string) => path.join(BUILD, name);

/** The Rust examples, built once: why not, or null. */
let rustError: string | null = 'not built';
const EXAMPLES = path.join(process.env.CARGO_TARGET_DIR ? path.resolve(ROOT, process.env.CARGO_TARGET_DIR) : path.join(ROOT, 'target'), 'release', 'examples');
async function buildRust(): Promise<void> {
  log('cargo build --release -p famez-core --examples...');
  try {
    await runBounded('cargo', ['build', '--release', '-q', '-p', 'famez-core', '--examples'], pick(120_000, 600_000, 600_000), 'cargo build --examples');
    rustError = null;
  } catch (e) {
    rustError = why(e);
  }
}
/** Why example `name` cannot run, or null. */
const rustWhy = (name: string) => rustError ?? (fs.existsSync(path.join(EXAMPLES, name)) ? null : `no Rust example ${name} in ${EXAMPLES}`);

function cSide(name: string, args: (cpus: [number, number]) => string[], note?: (regime: Pinned) => string): Side {
  return { impl: 'c', unavailable: cError, round: (cpus) => samplesOf(cBin(name), [...args(cpus), ...cpuArg(cpus)], `C ${name}`), note };
}
function rustSide(name: string, args: string[], note?: (regime: Pinned) => string): Side {
  return { impl: 'rust', unavailable: rustWhy(name), round: (cpus) => samplesOf(path.join(EXAMPLES, name), [...args, ...cpuArg(cpus)], `example ${name}`), note };
}

// ---------------------------------------------------------------- JS processes

let scratch = '';
let serial = 0;
/** Starts `famez serve ARGS` on a fresh socket; resolves once it serves. */
async function serve(args: string[]): Promise<{ sock: string; server: Child }> {
  scratch ||= fs.mkdtempSync(path.join(os.tmpdir(), 'famez-bench-'));
  const sock = path.join(scratch, `s${++serial}`);
  const server = new Child(process.execPath, [...TSX, 'ts/cli/main.ts', 'serve', '-S', sock, '--memfd', ...args]);
  await server.waitFor(/serving on /, 30_000, `famez serve ${args.join(' ')}`, true);
  return { sock, server };
}

const peer = (kind: 'client' | 'fabric', sock: string) => new Child(process.execPath, [...TSX, 'bench/js/peer.ts', kind, sock]);

/** Pins JS processes: each to its CPU. */
function pinAll(pins: [Child, number, string][]): void {
  for (const [c, cpu, what] of pins) c.pin(cpu, what);
}

// ---------------------------------------------------------------- doorbell

const DOORBELL_C = 'two eventfds, epoll, fork (bench/baseline/doorbell.c)';
const DOORBELL_RUST = "famez-core's EventFd, epoll (bench_doorbell_rtt)";
const DOORBELL_JS = 'two Node processes (bench/js/peer.ts), each a Client of famez serve --silent: ring, interrupt event, ring back';

async function groupDoorbell(): Promise<void> {
  const busyScenario = 'doorbell-rtt-busy-poll';
  const expected: [string, Impl, Regime, string][] = [];
  for (const g of LATENCY) for (const i of IMPLS) expected.push(['doorbell-rtt', i, g, 'us']);
  for (const i of IMPLS) expected.push([busyScenario, i, 'cross-cpu', 'us']);
  for (const p of PEER_CURVE.slice(1)) for (const g of LATENCY) for (const i of ['rust', 'js'] as const) expected.push([`doorbell-rtt-peers-${p}`, i, g, 'us']);
  const procs: Child[] = [];
  await attempt('doorbell round trips', expected, async () => {
    // JS: the pair, and the idle peers in a process of their own that
    // only sleeps.
    let js: { echo: Child; ping: Child; idle: Child; server: Child; echoId: number } | null = null;
    let jsError: string | null = null;
    if (wantedImpl('js')) {
      try {
        const s = await serve(['--silent', '-n', '1', '--max-peers', String(Math.max(...PEER_CURVE) + 2)]);
        const echo = peer('client', s.sock);
        const ping = peer('client', s.sock);
        const idle = new Child(process.execPath, [...TSX, 'bench/js/idle.ts', s.sock]);
        procs.push(s.server, echo, ping, idle);
        const { id: echoId } = await echo.ask<{ id: number }>('id', 30_000);
        await ping.ask('id', 30_000);
        await echo.ask('echo', 10_000);
        js = { echo, ping, idle, server: s.server, echoId };
      } catch (e) {
        jsError = why(e);
      }
    }
    const jsSide = (pollUs: number, note: (regime: Pinned) => string): Side => ({
      impl: 'js',
      unavailable: jsError,
      enter: async ([a, b]) => {
        const j = js!;
        pinAll([
          [j.ping, a, 'JS ping peer'],
          [j.server, a, 'famez serve'],
          [j.idle, a, 'JS idle peers'],
          [j.echo, b, 'JS echo peer'],
        ]);
        for (const p of [j.echo, j.ping]) await p.ask(`poll ${pollUs}`, 10_000);
      },
      round: async (_cpus, n) => {
        const j = js!;
        const warm = n === 0 ? RTT_WARMUP : RTT_REWARM;
        return (await j.ping.ask<{ samples: number[] }>(`ping ${j.echoId} ${JS_RTT.rounds} ${JS_RTT.batches} ${warm}`, RUN_MS)).samples;
      },
      note,
    });
    const cArgs = () => [String(C_RTT.rounds), String(C_RTT.batches)];
    const rustArgs = ['--count', String(C_RTT.rounds * C_RTT.batches), '--batches', String(C_RTT.batches)];
    const sleeping = (what: string) => (regime: Pinned) => `${what}; both sides sleep in epoll between doorbells; ${regimeNote(regime, 'pinger', 'echo')}`;
    await interleave('doorbell-rtt', 'us', LATENCY, [cSide('doorbell', cArgs, sleeping(DOORBELL_C)), rustSide('bench_doorbell_rtt', rustArgs, sleeping(DOORBELL_RUST)), jsSide(0, sleeping(DOORBELL_JS))]);
    // Busy polling keeps a CPU spinning: on one CPU it would starve the
    // other side, so cross-cpu only.
    const polling = (what: string) => (regime: Pinned) =>
      `${what}; busy polling ${BUSY_POLL_US} us (Client's busyPollUs: after a doorbell each side reads its nonblocking eventfd that long before it sleeps); cross-cpu only: a spinning side on one CPU would starve the other; ${regimeNote(regime, 'pinger', 'echo')}`;
    await interleave(busyScenario, 'us', CROSS, [
      cSide('doorbell', () => [...cArgs(), '--busy-poll', String(BUSY_POLL_US)], polling(DOORBELL_C)),
      rustSide('bench_doorbell_rtt', [...rustArgs, '--busy-poll', String(BUSY_POLL_US)], polling(DOORBELL_RUST)),
      jsSide(BUSY_POLL_US, polling(DOORBELL_JS)),
    ]);
    for (const peers of PEER_CURVE.slice(1)) {
      if (js) {
        try {
          await js.idle.ask(`peers ${peers - 2}`, 60_000);
          // Let the joins' messages settle in every peer.
          await new Promise((r) => setTimeout(r, pick(100, 300, 500)));
        } catch (e) {
          jsError = why(e);
        }
      }
      const curve = (what: string) => (regime: Pinned) => `${peers} peers connected (${what}); ${regimeNote(regime, 'pinger', 'echo')}`;
      await interleave(`doorbell-rtt-peers-${peers}`, 'us', LATENCY, [
        rustSide('bench_doorbell_rtt', [...rustArgs, '--peers', String(peers)], curve(`${peers - 2} idle eventfds in each epoll set`)),
        jsSide(0, curve(`${peers - 2} idle Clients in a separate Node process that only sleeps`)),
      ]);
    }
  });
  await Promise.all(procs.map((p) => p.stop()));
}

// ---------------------------------------------------------------- mailbox and ring

/** Two FabricClient processes of one fabric server with rings, for the
 * mailbox and ring groups: a answers mailbox requests and produces ring
 * messages, b asks and consumes. */
interface FabricPair {
  server: Child;
  a: Child;
  b: Child;
  aId: number;
  bId: number;
}
let fabricPair: Promise<FabricPair> | null = null;
const fabricProcs: Child[] = [];
function jsFabric(): Promise<FabricPair> {
  fabricPair ??= (async () => {
    // 2 peers and the switch: 6 rings of RING_CAPACITY in 32 MiB.
    const s = await serve(['--max-peers', '2', '-l', '32M', '--ring-capacity', String(RING_CAPACITY)]);
    const a = peer('fabric', s.sock);
    const b = peer('fabric', s.sock);
    fabricProcs.push(s.server, a, b);
    const { id: aId } = await a.ask<{ id: number }>('id', 30_000);
    const { id: bId } = await b.ask<{ id: number }>('id', 30_000);
    await a.ask('mecho', 10_000);
    return { server: s.server, a, b, aId, bId };
  })();
  return fabricPair;
}
async function jsFabricOr(): Promise<{ pair: FabricPair | null; error: string | null }> {
  if (!wantedImpl('js')) return { pair: null, error: 'not wanted' };
  try {
    return { pair: await jsFabric(), error: null };
  } catch (e) {
    return { pair: null, error: why(e) };
  }
}

async function groupMailbox(): Promise<void> {
  const expected: [string, Impl, Regime, string][] = [];
  for (const g of LATENCY) for (const i of IMPLS) expected.push(['mailbox-rtt', i, g, 'us']);
  for (const i of IMPLS) expected.push(['mailbox-rtt-busy-poll', i, 'cross-cpu', 'us']);
  await attempt('mailbox round trips', expected, async () => {
    const { pair, error } = await jsFabricOr();
    const jsSide = (pollUs: number, note: (regime: Pinned) => string): Side => ({
      impl: 'js',
      unavailable: error,
      enter: async ([a, b]) => {
        const p = pair!;
        pinAll([
          [p.b, a, 'JS requesting peer'],
          [p.server, a, 'famez serve'],
          [p.a, b, 'JS answering peer'],
        ]);
        for (const c of [p.a, p.b]) await c.ask(`poll ${pollUs}`, 10_000);
      },
      round: async (_cpus, n) => {
        const p = pair!;
        const warm = n === 0 ? RTT_WARMUP : RTT_REWARM;
        return (await p.b.ask<{ samples: number[] }>(`mping ${p.aId} ${MB_RTT.rounds} ${MB_RTT.batches} ${warm}`, RUN_MS)).samples;
      },
      note,
    });
    const rustArgs = ['--count', String(MB_RTT.rounds * MB_RTT.batches), '--batches', String(MB_RTT.batches)];
    const cArgs = [String(MB_RTT.rounds), String(MB_RTT.batches)];
    const JS = "two FabricClients of famez serve: send() / 'message' and send() back";
    const RUST = "famez-core's Mailbox post / take_into, EventFd doorbells (bench_mailbox_rtt)";
    const C = 'the same slot handshake in C over a memfd, eventfds, epoll, fork (bench/baseline/mailbox.c)';
    // The ratio is against the C mailbox-rtt of the same regime (the same
    // handshake); docs/performance.md also compares these rows with the C
    // doorbell-rtt, which issue 11's JS mailbox target is defined against.
    const note = (what: string, extra = '') => (regime: Pinned) => `64-byte request and answer through the FAME-Z slots, ${what}${extra}; ratio against the C ${extra ? 'mailbox-rtt-busy-poll' : 'mailbox-rtt'} of the regime; ${regimeNote(regime, 'requester', 'answerer')}`;
    await interleave('mailbox-rtt', 'us', LATENCY, [cSide('mailbox', () => cArgs, note(C)), rustSide('bench_mailbox_rtt', rustArgs, note(RUST)), jsSide(0, note(JS))]);
    const busy = `; busy polling ${BUSY_POLL_US} us, cross-cpu only`;
    await interleave('mailbox-rtt-busy-poll', 'us', CROSS, [
      cSide('mailbox', () => [...cArgs, '--busy-poll', String(BUSY_POLL_US)], note(C, busy)),
      rustSide('bench_mailbox_rtt', [...rustArgs, '--busy-poll', String(BUSY_POLL_US)], note(RUST, busy)),
      jsSide(BUSY_POLL_US, note(JS, busy)),
    ]);
    if (pair) for (const c of [pair.a, pair.b]) await c.ask('poll 0', 10_000);
  });
}

async function groupRing(): Promise<void> {
  const expected: [string, Impl, Regime, string][] = SIZES.flatMap((s) => IMPLS.map((i) => [`ring-throughput-${s}`, i, 'cross-cpu', 'msg/s'] as [string, Impl, Regime, string]));
  await attempt('ring throughput (cross-cpu)', expected, async () => {
    const { pair, error } = await jsFabricOr();
    for (const size of SIZES) {
      const where = (regime: Pinned) => regimeNote(regime, 'consumer', 'producer');
      const js: Side = {
        impl: 'js',
        unavailable: error,
        enter: async ([a, b]) => {
          const p = pair!;
          pinAll([
            [p.b, a, 'JS consumer'],
            [p.server, a, 'famez serve'],
            [p.a, b, 'JS producer'],
          ]);
          // The consumer spins RING_SPIN_US on its doorbell after each
          // wake-up before it sleeps, as the Rust consumer does on its ring.
          await p.b.ask(`poll ${RING_SPIN_US}`, 10_000);
        },
        round: async (_cpus, n) => {
          const p = pair!;
          const count = jsCount(size);
          const rep = async () => {
            await p.b.ask(`rrecv ${count} batch`, 10_000);
            p.a.send(`rsend ${p.bId} ${size} ${count}`);
            const got = await p.b.next<{ end: string; count: number }>(90_000, `ring ${size}`);
            const sent = await p.a.next<{ start: string }>(30_000, 'rsend done');
            // Both stamps are process.hrtime (CLOCK_MONOTONIC, one clock for
            // every process of the machine): first push to last message taken.
            return got.count / (Number(BigInt(got.end) - BigInt(sent.start)) / 1e9);
          };
          // The first rep of a size warms the JIT and the ring's pages up.
          if (n === 0) await rep();
          return [await rep()];
        },
        note: (regime) => `FabricClient.ringWriter() (reserveRun, copy in, stamp, commit) -> onRingBatch() (sequence checked in place; busy poll ${RING_SPIN_US} us), ${jsCount(size)} messages a rep; ${where(regime)}`,
      };
      await interleave(`ring-throughput-${size}`, 'msg/s', CROSS, [
        cSide('ring', () => [String(size), String(cCount(size)), '1'], (regime) => `SPSC byte ring in a memfd, copy in, copy out, no doorbells (bench/baseline/ring.c), ${cCount(size)} messages a rep; ${where(regime)}`),
        rustSide('bench_ring_throughput', ['--size', String(size), '--count', String(cCount(size)), '--batches', '1', '--capacity', String(RING_CAPACITY)], (regime) => `famez-core Ring Writer (stamp, copy in, publish every 256 KiB) -> Reader (copy out, length and sequence checked), doorbell when empty, ${cCount(size)} messages a rep; ${where(regime)}`),
        js,
      ]);
    }
    if (pair) await pair.b.ask('poll 0', 10_000);
  });
}

// ---------------------------------------------------------------- switch

/** `n` split into `procs` near-equal shares, larger first. */
const shares = (n: number, procs: number) => Array.from({ length: procs }, (_, i) => Math.floor(n / procs) + (i < n % procs ? 1 : 0));

async function groupSwitch(): Promise<void> {
  const expected: [string, Impl, Regime, string][] = SWITCH_PEERS.flatMap((n) =>
    LATENCY.flatMap((g) => [
      ...(['c', 'js'] as const).map((i) => [`switch-ping-${n}`, i, g, 'ping/s'] as [string, Impl, Regime, string]),
      [`switch-ping-${n}-ring`, 'js', g, 'ping/s'] as [string, Impl, Regime, string],
    ]),
  );
  const procs: Child[] = [];
  await attempt('switch pings', expected, async () => {
    // Two fabrics, one per route of the switch's answers (slot: as C; ring:
    // famez's default), each famez serve's default fabric (14 peers, the
    // switch is 15), each with its peer processes.
    type Fabric = { server: Child; peers: Child[] };
    const fabrics: Partial<Record<'slot' | 'ring', Fabric>> = {};
    let jsError: string | null = null;
    if (wantedImpl('js')) {
      try {
        for (const route of ['slot', 'ring'] as const) {
          const s = await serve([]);
          const peers = Array.from({ length: SWITCH_PROCS }, () => new Child(process.execPath, [...TSX, 'bench/js/switch-peer.ts', s.sock, route]));
          procs.push(s.server, ...peers);
          fabrics[route] = { server: s.server, peers };
        }
      } catch (e) {
        jsError = why(e);
      }
    }
    const { warmupMs, windowMs, windows } = SWITCH;
    for (const n of SWITCH_PEERS) {
      const share = shares(n, Math.min(n, SWITCH_PROCS));
      if (!jsError) {
        try {
          for (const f of Object.values(fabrics)) await Promise.all(share.map((k, i) => f.peers[i].ask(`connect ${k}`, 60_000)));
        } catch (e) {
          jsError = why(e);
        }
      }
      const where = (regime: Pinned) => regimeNote(regime, 'the peers', 'the switch');
      const clients = `${n} FabricClient${n > 1 ? 's' : ''} in ${share.length} Node process${share.length > 1 ? 'es' : ''} (bench/js/switch-peer.ts), each awaiting request('switch', 'ping') back to back, through famez serve's switch (default fabric, 14 peers)`;
      const jsSide = (route: 'slot' | 'ring'): Side => ({
        impl: 'js',
        scenario: route === 'ring' ? `switch-ping-${n}-ring` : undefined,
        unavailable: jsError,
        enter: async ([a, b]) => {
          const f = fabrics[route]!;
          pinAll([[f.server, b, 'famez serve (the switch)'], ...f.peers.map((p, i) => [p, a, `JS switch peers ${i}`] as [Child, number, string])]);
        },
        round: async () => {
          const f = fabrics[route]!;
          const window = BigInt(windowMs) * 1_000_000n;
          const start = process.hrtime.bigint() + BigInt(warmupMs) * 1_000_000n;
          const answers = await Promise.all(share.map((_, i) => f.peers[i].ask<{ counts: number[] }>(`sping ${start} ${window} ${windows}`, warmupMs + windowMs * windows + 30_000)));
          return Array.from({ length: windows }, (_, w) => answers.reduce((sum, x) => sum + x.counts[w], 0) / (windowMs / 1000));
        },
        note: (regime) =>
          route === 'slot'
            ? `${clients}; switchRing false: the answers take the switch's one slot, as in C; ${where(regime)}`
            : `${clients}; switchRing true (FabricClient's default): the answers come through the switch's ring channel to each client, never waiting for its slot; ratio against the C switch-ping-${n} (its slot); ${where(regime)}`,
      });
      await interleave(`switch-ping-${n}`, 'ping/s', LATENCY, [
        cSide('switch', () => [String(n), String(windowMs), String(windows), '--warmup-ms', String(warmupMs)], (regime) => `a C switch and ${n} C peer process${n > 1 ? 'es' : ''} over a memfd laid out as the FAME-Z mailbox (14 clients), eventfds, epoll; the switch's one slot serialises the answers (bench/baseline/switch.c); ${where(regime)}`),
        jsSide('slot'),
        jsSide('ring'),
      ]);
    }
  });
  await Promise.all(procs.map((p) => p.stop()));
}

// ---------------------------------------------------------------- links

/** The links group (issue 13, item 8): two famez serve joined by a
 * libfabric link (tcp, 127.0.0.1), a JS peer on each, against plain TCP
 * between two C processes and libfabric's own fi_pingpong. */
async function groupLinks(): Promise<void> {
  const rtt = 'link-rtt-64';
  const busy = 'link-rtt-64-busy-poll';
  const expected: [string, Impl, Regime, string][] = [
    ...LATENCY.flatMap((g) => [[rtt, 'c', g, 'us'], [`${rtt}-relay`, 'c', g, 'us'], [rtt, 'js', g, 'us'], ['link-read-64', 'js', g, 'us']] as [string, Impl, Regime, string][]),
    ['link-rtt-64-fi_pingpong', 'c', 'cross-cpu', 'us'],
    [busy, 'c', 'cross-cpu', 'us'],
    [`${busy}-relay`, 'c', 'cross-cpu', 'us'],
    [busy, 'js', 'cross-cpu', 'us'],
    ['link-read-64-busy-poll', 'js', 'cross-cpu', 'us'],
    ['link-stream-4096', 'c', 'cross-cpu', 'msg/s'],
    ['link-stream-4096-relay', 'c', 'cross-cpu', 'msg/s'],
    ['link-stream-4096', 'js', 'cross-cpu', 'msg/s'],
  ];
  const procs: Child[] = [];
  await attempt('links', expected, async () => {
    const { libfabricAvailable } = await import('../ts/link/ofi.js');
    const probe = libfabricAvailable();
    let jsError: string | null = probe.available ? null : `libfabric is not available: ${probe.error ?? ''}`;
    type Side2 = { sw: Child; peer: Child; busySw: Child; busy: Child };
    let a: Side2 | null = null;
    let b: Side2 | null = null;
    let gcids = { pb: 0, pbBusy: 0, owner: 0x1000 + 500 };
    if (!jsError && wantedImpl('js')) {
      try {
        const fam = path.join((scratch ||= fs.mkdtempSync(path.join(os.tmpdir(), 'famez-bench-'))), 'fam');
        fs.writeFileSync(fam, Buffer.alloc(1 << 16));
        // Rings of 256 KiB (the default is up to 16 KiB): a 4 KiB stream would otherwise
        // fill the far peer's ring and wait out the switch's 5 ms ring retry.
        const big = ['-l', '16M', '--ring-capacity', '256K'];
        const sa = await serve(['--sid', '1', '--max-peers', '4', ...big, '--no-http', '--link-listen', '127.0.0.1:0', '--fam', fam]);
        const addr = /listening on (127\.0\.0\.1:\d+)/.exec(await sa.server.waitFor(/listening on 127\.0\.0\.1:\d+/, 30_000, 'the link listener', true))![1];
        const sb = await serve(['--sid', '2', '--max-peers', '4', ...big, '--no-http', '--link', addr]);
        // The busy-polling rows: a pair of their own with --busy-poll, and
        // peers that sleep (on two CPUs a peer spinning beside its switch
        // takes the CPU the switch needs: slower, not faster).
        const busySw = ['--busy-poll', String(BUSY_POLL_US)];
        const sa2 = await serve(['--sid', '1', '--max-peers', '4', ...big, ...busySw, '--no-http', '--link-listen', '127.0.0.1:0', '--fam', fam]);
        const addr2 = /listening on (127\.0\.0\.1:\d+)/.exec(await sa2.server.waitFor(/listening on 127\.0\.0\.1:\d+/, 30_000, 'the busy link listener', true))![1];
        const sb2 = await serve(['--sid', '2', '--max-peers', '4', ...big, ...busySw, '--no-http', '--link', addr2]);
        const linkPeer = (sock: string, name: string) => new Child(process.execPath, [...TSX, 'bench/js/link-peer.ts', sock, name, '0']);
        a = { sw: sa.server, peer: linkPeer(sa.sock, 'la'), busySw: sa2.server, busy: linkPeer(sa2.sock, 'la-busy') };
        b = { sw: sb.server, peer: linkPeer(sb.sock, 'lb'), busySw: sb2.server, busy: linkPeer(sb2.sock, 'lb-busy') };
        procs.push(a.sw, a.peer, a.busySw, a.busy, b.sw, b.peer, b.busySw, b.busy);
        const g = async (c: Child) => (await c.ask<{ gcid: number }>('gcid', 30_000)).gcid;
        gcids = { pb: await g(b.peer), pbBusy: await g(b.busy), owner: 0x1000 + 500 };
        await a.peer.ask(`wait ${gcids.pb}`, 40_000);
        await a.busy.ask(`wait ${gcids.pbBusy}`, 40_000);
        await b.peer.ask(`wait ${gcids.owner}`, 40_000);
        await b.busy.ask(`wait ${gcids.owner}`, 40_000);
        await b.peer.ask('echo', 10_000);
        await b.busy.ask('echo', 10_000);
      } catch (e) {
        jsError = why(e);
      }
    }
    const pinSides = ([x, y]: [number, number]) => {
      pinAll([
        [a!.sw, x, 'switch A'],
        [a!.peer, x, 'peer on A'],
        [a!.busySw, x, 'busy-polling switch A'],
        [a!.busy, x, 'peer on the busy-polling A'],
        [b!.sw, y, 'switch B'],
        [b!.peer, y, 'peer on B'],
        [b!.busySw, y, 'busy-polling switch B'],
        [b!.busy, y, 'peer on the busy-polling B'],
      ]);
    };
    const where = (regime: Pinned) => regimeNote(regime, 'switch A and its peer', 'switch B and its peer');
    /** A JS row: `by` (the peer that times it) asks `ask()`. */
    const js = (scenario: string | undefined, by: () => Child, ask: () => string, what: string): Side => ({
      impl: 'js',
      scenario,
      unavailable: jsError,
      enter: async (cpus) => pinSides(cpus),
      round: async (_cpus, index) => {
        const line = ask().replace('WARMUP', String(index === 0 ? LINK_RTT.warmup : Math.ceil(LINK_RTT.warmup / 10)));
        return (await by().ask<{ samples: number[] }>(line, RUN_MS)).samples;
      },
      note: (regime) => `${what}; ${where(regime)}`,
    });
    const { rounds, batches } = LINK_RTT;
    const FI = '/usr/bin/fi_pingpong';
    const fiSide: Side = {
      impl: 'c',
      scenario: 'link-rtt-64-fi_pingpong',
      unavailable: fs.existsSync(FI) ? null : 'fi_pingpong is not installed (apt-get install libfabric-bin)',
      round: async ([x, y]) => {
        const port = String(40000 + ((process.pid + serial++) % 20000));
        const server = new Child('taskset', ['-c', String(y), FI, '-p', 'tcp', '-e', 'msg', '-B', port, '-I', String(rounds * batches), '-S', '64']);
        procs.push(server);
        // The client may come before the server listens: it tries again (bounded).
        let stdout: string;
        for (let attempt = 0; ; attempt++) {
          await new Promise((r) => setTimeout(r, 200));
          try {
            stdout = await runBounded('taskset', ['-c', String(x), FI, '-p', 'tcp', '-e', 'msg', '-P', port, '-I', String(rounds * batches), '-S', '64', '127.0.0.1'], RUN_MS, 'fi_pingpong');
            break;
          } catch (e) {
            if (attempt >= 25 || !server.running || !/Connection refused/.test((e as Error).message)) throw e;
          }
        }
        await server.exited;
        const m = /^64\s+\S+\s+\S+\s+\S+\s+\S+\s+\S+\s+([\d.]+)/m.exec(stdout);
        if (!m) throw new Error(`fi_pingpong: no result in ${stdout.trim().slice(-200)}`);
        // usec/xfer is one way (each round trip is two transfers).
        return [2 * Number(m[1])];
      },
      note: (regime) => `libfabric's fi_pingpong -p tcp -e msg -S 64, ${rounds * batches} iterations, one sample: 2 x its usec/xfer; ${regimeNote(regime, 'the client', 'the server')}`,
    };
    const tcpNote = (regime: Pinned, extra = '') => `two C processes, TCP over 127.0.0.1, TCP_NODELAY, 64 B each way${extra} (bench/baseline/tcp.c); ${regimeNote(regime, 'the parent', 'the child')}`;
    // The floor: famez's four-process path in C with nothing of famez's own (bench/baseline/relay.c).
    const relay = (scenario: string, args: () => string[], what: string): Side => ({
      ...cSide('relay', args, (regime) => `${what}: peer -> switch -> TCP (127.0.0.1) -> switch -> peer as four C processes, peer and switch joined by shared-memory rings with eventfd doorbells, no Gen-Z packets, CRCs, link frames or credits (bench/baseline/relay.c); ${regimeNote(regime, 'peer P and switch A', 'switch B and peer Q')}`),
      scenario,
    });
    await interleave(rtt, 'us', LATENCY, [
      cSide('tcp', () => ['pingpong', '64', String(rounds), String(batches)], (regime) => tcpNote(regime)),
      relay(`${rtt}-relay`, () => ['pingpong', '64', String(rounds), String(batches)], '64 B there and back, every process sleeping in epoll_wait'),
      js(undefined, () => a!.peer, () => `rtt ${gcids.pb} 64 ${rounds} ${batches} WARMUP`, 'a 64-byte ring message from a FabricClient on switch A to one on switch B (SID:CID) and back: peer -> switch A -> link (libfabric tcp) -> switch B -> peer and back'),
      js('link-read-64', () => b!.peer, () => `read ${gcids.owner} 64 ${rounds} ${batches} WARMUP`, 'FabricClient.read of 64 bytes of switch A\'s --fam memory from a peer on switch B: Core64 Read -> ReadResponse across the link; ratio against the C link-rtt-64'),
    ]);
    await interleave(busy, 'us', CROSS, [
      cSide('tcp', () => ['pingpong', '64', String(rounds), String(batches), '--busy-poll', String(BUSY_POLL_US)], (regime) => tcpNote(regime, `, each side reading its nonblocking socket for up to ${BUSY_POLL_US} us before it sleeps`)),
      relay(`${busy}-relay`, () => ['pingpong', '64', String(rounds), String(batches), '--busy-poll', String(BUSY_POLL_US), '--yield'], `64 B there and back, every process polling its inputs for up to ${BUSY_POLL_US} us with sched_yield between looks before it sleeps`),
      // fi_pingpong spins on its completion queue: cross-cpu only, beside the busy-polling rows.
      fiSide,
      js(undefined, () => a!.busy, () => `rtt ${gcids.pbBusy} 64 ${rounds} ${batches} WARMUP`, `as link-rtt-64, across two switches of their own with --busy-poll ${BUSY_POLL_US} (the peers sleep)`),
      js('link-read-64-busy-poll', () => b!.busy, () => `read ${gcids.owner} 64 ${rounds} ${batches} WARMUP`, `as link-read-64, the switches with --busy-poll ${BUSY_POLL_US} (the peer sleeps); ratio against the C link-rtt-64-busy-poll`),
    ]);
    await interleave('link-stream-4096', 'msg/s', CROSS, [
      cSide('tcp', () => ['stream', '4096', String(LINK_STREAM.c), '1'], (regime) => `${LINK_STREAM.c} messages of 4 KiB one way over TCP on 127.0.0.1 (bench/baseline/tcp.c stream), first send to last byte; ${regimeNote(regime, 'the sender', 'the receiver')}`),
      relay('link-stream-4096-relay', () => ['stream', '4096', String(LINK_STREAM.c), '1'], `${LINK_STREAM.c} messages of 4 KiB P -> Q, first push to last pop, each switch sending all its ring holds in one send(2)`),
      {
        impl: 'js',
        unavailable: jsError,
        enter: async (cpus) => pinSides(cpus),
        round: async () => {
          const count = LINK_STREAM.js;
          const from = (await a!.peer.ask<{ gcid: number }>('gcid', 10_000)).gcid;
          // The echo is off for the stream: the sink takes the messages.
          b!.peer.send(`sink ${from} ${count}`);
          const { start } = await a!.peer.ask<{ start: string }>(`send ${gcids.pb} 4096 ${count}`, RUN_MS);
          await a!.peer.next(RUN_MS, 'send');
          const { end } = await b!.peer.next<{ end: string }>(RUN_MS, 'sink');
          await b!.peer.ask('echo', 10_000);
          return [count / (Number(BigInt(end) - BigInt(start)) / 1e9)];
        },
        note: (regime) => `${LINK_STREAM.js} ring messages of 4 KiB from a FabricClient on switch A to one on switch B (sendRing to SID:CID), first push to last message, every one checked in order; ${where(regime)}`,
      },
    ]);
  });
  await Promise.all(procs.map((p) => p.stop()));
}

// ---------------------------------------------------------------- mesh

function openFileLimit(): string {
  const r = spawnSync('sh', ['-c', 'ulimit -n; ulimit -Hn'], { encoding: 'utf8' });
  const [soft, hard] = r.stdout.trim().split('\n');
  return `open-file limit ${soft} (hard ${hard})`;
}

async function benchMesh(scenario: string, kind: 'client' | 'fabric', cfg: { peers: number; procs: number; reps: number }): Promise<void> {
  if (!wantedImpl('js')) return;
  let server: Child | null = null;
  const note = `${cfg.peers} peers in ${cfg.procs} processes, unpinned; ${openFileLimit()}`;
  await attempt(`${scenario} (${cfg.peers} peers)`, [[scenario, 'js', 'unpinned', 'ms']], async () => {
    const args = kind === 'client' ? ['--silent', '-n', '1', '--max-peers', String(cfg.peers)] : ['--max-peers', String(cfg.peers)];
    // A fabric's switch is a peer too: each client also knows the server.
    const expect = kind === 'client' ? cfg.peers - 1 : cfg.peers;
    const reps: number[][] = [];
    for (let r = 0; r < cfg.reps; r++) {
      // A fresh server per rep: no rep waits on the last one's leaves.
      await (server as Child | null)?.stop();
      const s = await serve(args);
      server = s.server;
      const procs = shares(cfg.peers, cfg.procs).map((n) => new Child(process.execPath, [...TSX, 'bench/js/mesh.ts', kind, s.sock, String(n), String(expect)]));
      try {
        await Promise.all(procs.map((p) => p.next(30_000, 'mesh process start')));
        const t0 = Date.now();
        for (const p of procs) p.send('go');
        const done = await Promise.all(procs.map((p) => p.next<{ done: number }>(90_000, 'mesh')));
        reps.push([Math.max(...done.map((d) => d.done)) - t0]);
      } finally {
        await Promise.all(procs.map((p) => p.stop()));
      }
    }
    record(scenario, 'js', 'unpinned', 'ms', reps, note);
  });
  await (server as Child | null)?.stop();
}

// ---------------------------------------------------------------- link failover

/** Each failover measurement this many times (in fresh namespaces and switches). */
const FAILOVER_REPS = pick(1, 3, 5);

/** The links' failure times (bench/js/failover.ts): unpinned, in network namespaces. */
async function linkFailover(): Promise<void> {
  const rows: [string, Impl, Regime, string][] = ['detect', 'resume', 'fail', 'fm'].map((k) => [`link-failover-${k}`, 'js', 'unpinned', 'ms']);
  await attempt('links: failover', rows, async () => {
    const { libfabricAvailable } = await import('../ts/link/ofi.js');
    const probe = libfabricAvailable();
    if (!probe.available) throw new Error(`libfabric is not available: ${probe.error ?? ''}`);
    const { netnsSupport } = await import('../__test__/helpers/netns.js');
    const ns = netnsSupport();
    if (!ns.ok) throw new Error(`network namespaces: ${ns.reason}`);
    const { failover } = await import('./js/failover.js');
    const t = await failover(FAILOVER_REPS, log);
    const veth = 'two famez serve in two network namespaces joined by veth pairs (tcp), FabricClients over their UNIX sockets, heartbeats every 100 ms';
    record('link-failover-detect', 'js', 'unpinned', 'ms', [t.detect], `${veth}; a ring stream's link cut (ip link set down): ms until both switches had it down (the later of the two log lines); target <= 300`);
    record('link-failover-resume', 'js', 'unpinned', 'ms', [t.resume], `${veth}, two links between them; the one carrying a ring stream cut for good: the longest the stream stood still (its last message before the cut to its next); target <= 500`);
    record('link-failover-fail', 'js', 'unpinned', 'ms', [t.fail], `${veth}, one link; a request to a peer of the other switch that nobody answers, the link cut: ms until it failed (EUNREACHABLE); target <= 1000`);
    record('link-failover-fm', 'js', 'unpinned', 'ms', [t.fm], `${veth}, --fm primary on one, secondary on the other; the primary's switch SIGKILLed: ms until a configured peer of the secondary's switch got the CTL-Write naming it; target <= 2000`);
  });
}

// ---------------------------------------------------------------- guest

/** The guest group: two famez VMs on one in-process fabric server. */
const GUEST_SIZES = [64, 4096];
const GUEST_RTT = { rounds: pick(100, 500, 1000), batches: pick(3, 10, 20), warmup: pick(20, 500, 1000) };
const GUEST_MB = { rounds: pick(50, 200, 500), batches: pick(3, 10, 20), warmup: pick(10, 200, 500) };
const guestCount = (size: number) => Math.max(pick(2000, 20_000, 50_000), Math.floor(pick(256e3, 32e6, 128e6) / size));
const GUEST_STEP_MS = pick(60_000, 180_000, 300_000);
/** Alternating js / c phases. */
const GUEST_PHASES = pick(1, 2, 3);
const GUEST_WAKE = pick(2000, 20_000, 50_000);
/** Ring reps per phase. */
const REPS = pick(1, 3, 5);

/** A VM's console as a stream of lines: what it printed since the last
 * expected line. A {"error":...} line or a powered-off VM fails the wait. */
class GuestConsole {
  private at = 0;
  constructor(readonly vm: Vm) {}

  say(line: string): void {
    this.vm.write(`${line}\n`);
  }

  async expect(re: RegExp, ms: number, what: string): Promise<string> {
    const deadline = Date.now() + ms;
    const tail = () => this.vm.lines.slice(-6).join(' | ');
    for (;;) {
      while (this.at < this.vm.lines.length) {
        const l = this.vm.lines[this.at++];
        if (l.startsWith('{"error"')) throw new Error(`${this.vm.name}, ${what}: ${l}`);
        if (re.test(l)) return l;
      }
      if (this.vm.exit) throw new Error(`${this.vm.name}, ${what}: the VM powered off (${this.vm.exit.reason ?? `status ${this.vm.exit.status}`}): ${tail()}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`${this.vm.name}, ${what}: timed out after ${ms} ms: ${tail()}`);
      await new Promise<void>((r) => {
        const done = () => {
          clearTimeout(t);
          this.vm.off('line', done);
          r();
        };
        const t = setTimeout(done, Math.min(left, 250));
        this.vm.on('line', done);
      });
    }
  }

  async json<T>(key: string, ms: number, what: string): Promise<T> {
    return JSON.parse(await this.expect(new RegExp(`^\\{"${key}"`), ms, what)) as T;
  }
}

async function benchGuest(): Promise<void> {
  const impls = (['js', 'c'] as const).filter(wantedImpl);
  if (impls.length === 0) return;
  const rows = (
    [
      ['guest-doorbell-rtt-host', 'c', 'us'],
      ['guest-doorbell-rtt-host', 'js', 'us'],
      ['guest-doorbell-rtt-guest', 'c', 'us'],
      ['guest-doorbell-rtt-guest', 'js', 'us'],
      ['guest-mailbox-rtt-switch', 'js', 'us'],
      ['guest-loop-wakeup', 'c', 'us'],
      ['guest-loop-wakeup', 'js', 'us'],
      ['guest-doorbell-write', 'c', 'us'],
      ['guest-doorbell-write', 'js', 'us'],
      ['guest-copy-4096', 'c', 'us'],
      ['guest-copy-4096', 'js', 'us'],
      ...GUEST_SIZES.flatMap((s) => (['c', 'js'] as const).map((i) => [`guest-ring-throughput-${s}`, i, 'msg/s'] as [string, Impl, string])),
    ] as [string, Impl, string][]
  )
    .filter(([, i]) => wantedImpl(i))
    .map(([s, i, u]) => [s, i, 'unpinned', u] as [string, Impl, Regime, string]);
  let missing: string | null = null;
  try {
    findQemu();
    findKernel();
    findStaticBusybox();
  } catch (e) {
    missing = (e as Error).message;
  }
  const esbuild = path.join(ROOT, 'node_modules', '.bin', 'esbuild');
  if (!missing && !fs.existsSync(path.join(ROOT, 'dist', 'index.js'))) missing = 'dist/ is not built (npm run build): the guests run the compiled famez';
  if (!missing && !fs.existsSync(esbuild)) missing = 'no esbuild in node_modules (npm install) to compile bench/guest/agent.ts';
  if (missing) {
    log('guest VMs...');
    for (const [s, i, g, u] of rows) skip(s, i, g, u, `no VMs here: ${missing}`);
    return;
  }
  const accel = 'tcg' as const;
  const note = (what: string) =>
    `${what}; unpinned; accel ${accel} (this machine's nested KVM cannot boot stock kernels), 1 vCPU and 512M per VM, 2-core host shared with other work; host peer: famez's JS Client (bench/js/peer.ts vping)`;
  let served: ReturnType<typeof startServe> | null = null;
  let hostPeer: Child | null = null;
  const booted: Vm[] = [];
  await attempt(`guest VMs (${accel})`, rows, () =>
    guestScenarios().catch((e: Error) => {
      // What each VM said last: the other side's error is often the cause.
      for (const vm of booted) log(`  ${vm.name} said last: ${vm.lines.slice(-4).join(' | ')}`);
      throw e;
    }),
  );
  async function guestScenarios(): Promise<void> {
    fs.mkdirSync(BUILD, { recursive: true });
    const cBin = path.join(BUILD, 'guest');
    const agentJs = path.join(BUILD, 'guest-agent.js');
    const tmpC = `${cBin}.${process.pid}.tmp`;
    const cc = spawnSync('cc', ['-O2', '-o', tmpC, path.join(ROOT, 'bench', 'baseline', 'guest.c')], { encoding: 'utf8', timeout: 60_000 });
    if (cc.error || cc.status !== 0) throw new Error(`cc guest.c: ${cc.error?.message ?? cc.stderr.trim()}`);
    fs.renameSync(tmpC, cBin);
    const tmpJs = `${agentJs}.${process.pid}.tmp`;
    const eb = spawnSync(esbuild, [path.join(ROOT, 'bench', 'guest', 'agent.ts'), '--bundle', '--platform=node', '--format=cjs', '--target=node18', `--outfile=${tmpJs}`, '--log-level=error'], { encoding: 'utf8', timeout: 60_000 });
    if (eb.error || eb.status !== 0) throw new Error(`esbuild agent.ts: ${eb.error?.message ?? eb.stderr.trim()}`);
    fs.renameSync(tmpJs, agentJs);

    scratch ||= fs.mkdtempSync(path.join(os.tmpdir(), 'famez-bench-'));
    const dir = fs.mkdtempSync(path.join(scratch, 'guest-'));
    const sock = path.join(dir, 'fabric.sock');
    // vmA, vmB, the host peer and the switch: 12 rings of RING_CAPACITY.
    const opts = parseServeArgs(['-S', sock, '--memfd', '--max-peers', '3', '-l', '64M', '--ring-capacity', String(RING_CAPACITY)]);
    const serverLog: string[] = [];
    served = startServe(opts, { logger: lineLogger((l) => serverLog.push(l)) });
    const files = guestFiles(findKernel(), findStaticBusybox(), dir);
    const main = path.join(ROOT, 'dist', 'cli', 'main.js');
    // The agent: famez guest once (binds the device to vfio-pci), then a
    // shell running each line typed into the console.
    const agentShell = [
      'stty -echo 2>/dev/null',
      `${process.execPath} ${main} guest --no-link </dev/null || echo 'famez-bench: famez guest failed'`,
      "echo 'famez-bench: shell'",
      'while read -r l; do eval "$l"; echo "famez-bench: done $?"; done',
    ].join('; ');
    const boot = (name: string) => {
      const vm = bootVm({ name, kernel: files.kernel, initrd: files.initrd, socket: sock, vectors: opts.vectors, command: ['sh', '-c', agentShell], cwd: ROOT, scriptDir: dir, accel });
      vms.add(vm);
      booted.push(vm);
      void vm.exited.then(() => vms.delete(vm));
      return new GuestConsole(vm);
    };
    const A = boot('vmA');
    const B = boot('vmB');
    hostPeer = new Child(process.execPath, [...TSX, 'bench/js/peer.ts', 'host', sock]);
    const { id: hostId } = await hostPeer.ask<{ id: number }>('id', 30_000);
    await Promise.all([A, B].map((g) => g.expect(/^famez-bench: shell$/, GUEST_STEP_MS, 'boot and famez guest')));
    const host = hostPeer as Child;
    const { rounds, batches, warmup } = GUEST_RTT;
    // Phases alternate (js, c, js, c...) so that a change in the shared
    // machine's load hits both; each phase is one agent process per VM
    // (the device is one process's at a time).
    // Each phase is a round of the row.
    const acc = new Map<string, { scenario: string; impl: Impl; unit: string; rounds: number[][]; note: string }>();
    const add = (scenario: string, impl: Impl, unit: string, samples: number[], what: string) => {
      const k = `${scenario} ${impl}`;
      if (!acc.has(k)) acc.set(k, { scenario, impl, unit, rounds: [], note: note(what) });
      acc.get(k)!.rounds.push(samples);
    };
    for (let phase = 0; phase < GUEST_PHASES; phase++) {
      for (const impl of impls) {
        log(`  phase ${phase + 1}/${GUEST_PHASES}: ${impl}`);
        const start = impl === 'js' ? `${process.execPath} ${agentJs} ${ROOT}` : cBin;
        for (const g of [A, B]) g.say(start);
        const [{ id: aId }, { id: bId }] = await Promise.all([A, B].map((g) => g.json<{ id: number }>('agent', GUEST_STEP_MS, `the ${impl} agent to start`)));
        // 1. host -> vmA -> host
        A.say(`echo ${hostId}`);
        await A.expect(/^ready$/, GUEST_STEP_MS, 'echo');
        const h = await host.ask<{ samples: number[] }>(`vping ${aId} ${rounds} ${batches} ${warmup}`, GUEST_STEP_MS);
        A.say('end');
        await A.json('echoed', GUEST_STEP_MS, 'echo to end');
        add('guest-doorbell-rtt-host', impl, 'us', h.samples, `host peer rings vmA, vmA's ${impl} agent rings back; timed on the host`);
        // 2. vmA -> vmB -> vmA
        B.say(`echo ${aId}`);
        await B.expect(/^ready$/, GUEST_STEP_MS, 'echo');
        A.say(`ping ${bId} ${rounds} ${batches} ${warmup}`);
        const g = await A.json<{ samples: number[] }>('samples', GUEST_STEP_MS, 'ping');
        B.say('end');
        await B.json('echoed', GUEST_STEP_MS, 'echo to end');
        add('guest-doorbell-rtt-guest', impl, 'us', g.samples, `vmA rings vmB, vmB rings back, both ${impl}; timed in vmA`);
        // What a round trip is made of, in vmA: the loop's cost per event
        // and one doorbell store.
        A.say(`wake ${GUEST_WAKE}`);
        add('guest-loop-wakeup', impl, 'us', (await A.json<{ samples: number[] }>('samples', GUEST_STEP_MS, 'wake')).samples, `${impl === 'js' ? "a famez EventFd watched on Node's loop" : 'an eventfd in epoll'} signalled again from its own wake-up, ${GUEST_WAKE} times, in vmA (no device)`);
        A.say(`bell ${hostId} ${GUEST_WAKE}`);
        add('guest-doorbell-write', impl, 'us', (await A.json<{ samples: number[] }>('samples', GUEST_STEP_MS, 'bell')).samples, `${impl === 'js' ? 'GuestTransport.ring()' : 'one 32-bit store to BAR0 + 12'} to the host peer's vector 0, ${GUEST_WAKE} times, in vmA`);
        A.say(`copy 4096 ${GUEST_WAKE}`);
        add('guest-copy-4096', impl, 'us', (await A.json<{ samples: number[] }>('samples', GUEST_STEP_MS, 'copy')).samples, `${impl === 'js' ? 'Buffer.set' : 'memcpy'} of 4096 bytes (the payload copy of a 4 KiB ring message), ${GUEST_WAKE} times, in vmA`);
        // 3. vmA -> switch -> vmA (JS only: famez's mailbox)
        if (impl === 'js') {
          A.say(`mping ${GUEST_MB.rounds} ${GUEST_MB.batches} ${GUEST_MB.warmup}`);
          const m = await A.json<{ samples: number[] }>('samples', GUEST_STEP_MS, 'mping');
          add('guest-mailbox-rtt-switch', 'js', 'us', m.samples, "FabricClient.request('switch', 'ping') in vmA, awaited one after the other; ratio against the C guest-doorbell-rtt-host");
        }
        // 4. ring channel vmA -> vmB
        for (const size of GUEST_SIZES) {
          const count = guestCount(size);
          const rates: number[] = [];
          // Rep -1 warms up (the JIT, the ring's pages) and is not recorded.
          for (let r = -1; r < REPS; r++) {
            B.say(`rrecv ${aId} ${count}`);
            await B.expect(/^ready$/, GUEST_STEP_MS, 'rrecv');
            A.say(`rsend ${bId} ${size} ${count}`);
            await A.json('sent', GUEST_STEP_MS, 'rsend');
            const got = await B.json<{ count: number; samples: number[] }>('count', GUEST_STEP_MS, 'rrecv');
            if (r >= 0) rates.push(got.samples[0]);
          }
          add(`guest-ring-throughput-${size}`, impl, 'msg/s', rates, `${count} messages of ${size} B vmA -> vmB through famez's ring channel (${RING_CAPACITY >> 20} MiB) in BAR2, ${impl} on both ends; timed in vmB, first to last message`);
        }
        for (const c of [A, B]) c.say('quit');
        await Promise.all([A, B].map((c) => c.expect(/^famez-bench: done/, GUEST_STEP_MS, `the ${impl} agent to quit`)));
      }
    }
    for (const impl of ['c', 'js'] as const) for (const r of acc.values()) if (r.impl === impl) record(r.scenario, r.impl, 'unpinned', r.unit, r.rounds, r.note);
    for (const c of [A, B]) c.say('exit 0');
    await Promise.race([Promise.all(booted.map((vm) => vm.exited)), new Promise((r) => setTimeout(r, 20_000))]);
  }
  await Promise.all(booted.map((vm) => vm.kill()));
  await (hostPeer as Child | null)?.stop();
  const s = served as ReturnType<typeof startServe> | null;
  s?.server.close();
  s?.fabric?.close();
}


// ---------------------------------------------------------------- output

function machine(): { cpus: number; allowedCpus: number[]; node: string; rustc: string | null; kernel: string; cpuModel: string; loadavg: number[] } {
  const rustc = spawnSync('rustc', ['--version'], { encoding: 'utf8', timeout: 10_000 });
  return {
    cpus: os.cpus().length,
    allowedCpus: CPUS,
    node: process.version,
    rustc: rustc.status === 0 ? rustc.stdout.trim() : null,
    kernel: `${os.type()} ${os.release()}`,
    cpuModel: os.cpus()[0]?.model ?? 'unknown',
    loadavg: os.loadavg().map((x) => +x.toFixed(2)),
  };
}

// ---------------------------------------------------------------- main

async function main(): Promise<void> {
  const started = Date.now();
  const load = os.loadavg().map((x) => +x.toFixed(2));
  log(`famez bench (${mode}); CPUs ${CPUS.join(',')}; load ${load.join(' ')}; ${ROUNDS} rounds; ${openFileLimit()}`);
  const pinnedGroups = (['doorbell', 'mailbox', 'ring', 'switch'] as const).filter(wantedGroup);
  if (pinnedGroups.length > 0 && wantedImpl('c')) buildC();
  if (pinnedGroups.length > 0 && wantedImpl('rust') && pinnedGroups.some((g) => g !== 'switch')) await buildRust();
  if (wantedGroup('doorbell')) await groupDoorbell();
  if (wantedGroup('mailbox')) await groupMailbox();
  if (wantedGroup('ring')) await groupRing();
  await Promise.all(fabricProcs.map((p) => p.stop()));
  if (wantedGroup('switch')) await groupSwitch();
  if (wantedGroup('links')) {
    if (cError === 'not built' && wantedImpl('c')) buildC();
    await groupLinks();
    await linkFailover();
  }
  if (wantedGroup('mesh')) await benchMesh('connect-mesh-256', 'client', MESH);
  if (wantedGroup('mesh-fabric')) await benchMesh('connect-mesh-fabric-62', 'fabric', MESH_FABRIC);
  if (wantedGroup('guest')) await benchGuest();
  ratios(runs);
  const out = { machine: { ...machine(), loadavgAtStart: load }, mode, roundsPerRegime: ROUNDS, seconds: Math.round((Date.now() - started) / 100) / 10, runs };
  fs.mkdirSync(path.dirname(JSON_OUT), { recursive: true });
  fs.writeFileSync(JSON_OUT, `${JSON.stringify(out, null, 2)}\n`);
  const svgPath = JSON_OUT.replace(/(\.json)?$/, '.svg');
  fs.writeFileSync(svgPath, svg(runs, mode, PEER_CURVE, SIZES, SWITCH_PEERS));
  process.stdout.write(`${table(runs)}\n\nmachine: ${JSON.stringify(out.machine)}\nwrote ${JSON_OUT} and ${svgPath} in ${out.seconds} s\n`);
  if (scratch) fs.rmSync(scratch, { recursive: true, force: true });
}

main().then(
  () => {
    killAll();
    process.exit(0);
  },
  (e: Error) => {
    killAll();
    process.stderr.write(`bench: ${e.stack ?? e.message}\n`);
    process.exit(1);
  },
);
