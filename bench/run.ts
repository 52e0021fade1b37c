// famez benchmark runner: `npm run bench` / `famez bench`.
//
//   node --import=tsx bench/run.ts [--quick | --smoke] [--json FILE]
//
// Runs the C baseline (bench/baseline/, compiled here with the system cc),
// the Rust examples (crates/famez-core/examples/bench_*.rs, when they exist)
// the JavaScript scenarios (bench/js/, famez's own API, each peer in
// its own Node process) and the guest group (two TCG VMs on an in-process
// fabric server, famez's JS API against bench/baseline/guest.c inside
// them), then prints a table and writes
// bench/results/latest.json (or FILE) and bench/results/latest.svg.
// Every child is bounded in time and killed on the way out.
// (About 900 lines: each scenario's parameters, its children and its table
// row sit together here; what runs inside the children is in bench/js,
// bench/guest and bench/baseline.)
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as readline from 'node:readline';

import { UsageError, parseFlags } from '../ts/args.js';
import { startServe } from '../ts/cli/start.js';
import { lineLogger } from '../ts/log.js';
import { Client } from '../ts/client/client.js';
import { parseServeArgs } from '../ts/server/options.js';
import { guestFiles } from '../ts/vm/cache.js';
import { findKernel, findQemu, findStaticBusybox } from '../ts/vm/host.js';
import { bootVm, type Vm } from '../ts/vm/vm.js';

const ROOT = path.resolve(__dirname, '..');
const RESULTS = path.join(ROOT, 'bench', 'results');
const BUILD = path.join(RESULTS, '.build');
const TSX = ['--import=tsx'];

type Mode = 'smoke' | 'quick' | 'full';

export interface Run {
  scenario: string;
  impl: 'c' | 'rust' | 'js';
  unit: string;
  median: number | null;
  p99: number | null;
  samples: number[];
  baselineRatio: number | null;
  /** Why there is no number (a Rust example that does not exist yet...). */
  skipped?: string;
  note?: string;
}

// ---------------------------------------------------------------- options

const GROUPS = ['c', 'rust', 'js-doorbell', 'js-fabric', 'mesh', 'mesh-fabric', 'guest'] as const;
type Group = (typeof GROUPS)[number];

function parseBenchArgs(argv: string[]): { mode: Mode; json: string; only: Set<Group> } {
  let mode: Mode = 'full';
  let json = path.join(RESULTS, 'latest.json');
  const only = new Set<Group>();
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
          if (!(GROUPS as readonly string[]).includes(g)) throw new UsageError(`--only takes a comma-separated list of ${GROUPS.join(', ')}; not '${g}'`);
          only.add(g as Group);
        }
      } else {
        process.stdout.write(`Usage: npm run bench -- [--quick | --smoke] [--json FILE] [--only ${GROUPS.join(',')}]\n`);
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
const wanted = (g: Group) => ONLY.size === 0 || ONLY.has(g);
const pick = <T>(smoke: T, quick: T, full: T): T => (mode === 'smoke' ? smoke : mode === 'quick' ? quick : full);

const SIZES = [64, 256, 1024, 4096, 16384, 65536];
const PEER_CURVE = [2, 16, 64];
const C_RTT = { rounds: pick(200, 2000, 5000), batches: pick(3, 10, 20) };
const JS_RTT = { rounds: pick(100, 1000, 3000), batches: pick(3, 10, 20) };
const MB_RTT = { rounds: pick(50, 1000, 2000), batches: pick(3, 10, 20) };
/** Untimed JS round trips first: the JIT settles over a few thousand. */
const RTT_WARMUP = pick(20, 3000, 5000);
/** Messages per rep for a size: a byte budget, at least a floor. */
const cCount = (size: number) => Math.max(pick(2000, 20_000, 50_000), Math.floor(pick(8e6, 256e6, 1e9) / size));
const jsCount = (size: number) => Math.max(pick(200, 2000, 5000), Math.floor(pick(256e3, 128e6, 512e6) / size));
const REPS = pick(1, 3, 5);
/** The -busy-poll rows: the JS round trips again with this busy-poll
 * window (Client's busyPollUs). */
const BUSY_POLL_US = 200;
/** Every ring's data area: the C baseline's CAP (bench/baseline/ring.c),
 * so that C, Rust and JS stream through rings of one size. */
const RING_CAPACITY = 4 << 20;
const MESH = { peers: pick(16, 256, 256), procs: pick(2, 4, 4), reps: pick(1, 3, 5) };
// A fabric peer holds every other peer's 64 eventfds (~4,000 fds): 4 per process.
const MESH_FABRIC = { peers: pick(8, 62, 62), procs: pick(2, 16, 16), reps: pick(1, 3, 5) };

// ---------------------------------------------------------------- children

const children = new Set<ChildProcess>();
/** The guest group's VMs (QEMU also dies with this process through
 * setpriv's parent-death signal, where util-linux has it). */
const vms = new Set<Vm>();
function killAll(): void {
  for (const vm of vms) {
    if (!vm.exit && vm.pid !== undefined) {
      try {
        process.kill(vm.pid, 'SIGKILL');
      } catch {
        // gone
      }
    }
  }
  for (const c of children) {
    if (c.exitCode === null && c.signalCode === null) {
      try {
        c.kill('SIGKILL');
      } catch {
        // gone
      }
    }
  }
}
process.on('exit', killAll);
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.on(sig, () => {
    killAll();
    process.exit(130);
  });
}

/** A child speaking JSON lines on stdout. */
class Child {
  readonly proc: ChildProcess;
  private lines: string[] = [];
  private waiters: (() => void)[] = [];
  stderr = '';
  stdout = '';
  readonly exited: Promise<number | null>;

  constructor(cmd: string, args: string[], opts: { cwd?: string } = {}) {
    this.proc = spawn(cmd, args, { cwd: opts.cwd ?? ROOT, stdio: ['pipe', 'pipe', 'pipe'] });
    children.add(this.proc);
    this.proc.stderr!.setEncoding('utf8').on('data', (c: string) => {
      this.stderr += c;
      this.wake();
    });
    this.proc.stdout!.setEncoding('utf8');
    readline.createInterface({ input: this.proc.stdout! }).on('line', (l) => {
      this.stdout += `${l}\n`;
      this.lines.push(l);
      this.wake();
    });
    this.exited = new Promise((r) =>
      this.proc.on('close', (code) => {
        children.delete(this.proc);
        r(code);
        this.wake();
      }),
    );
    this.proc.stdin!.on('error', () => {});
  }

  private wake(): void {
    for (const w of this.waiters.splice(0)) w();
  }

  get running(): boolean {
    return this.proc.exitCode === null && this.proc.signalCode === null;
  }

  /** Waits (at most ms) for an output line (stdout, or stderr too) matching re. */
  async waitFor(re: RegExp, ms: number, what: string, stderrToo = false): Promise<string> {
    const deadline = Date.now() + ms;
    for (;;) {
      const hay = stderrToo ? this.stdout + this.stderr : this.stdout;
      const m = hay.match(re);
      if (m) return m[0];
      if (!this.running) throw new Error(`${what}: the process exited (${this.proc.exitCode ?? this.proc.signalCode}): ${this.stderr.trim().slice(-400)}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`${what}: timed out after ${ms} ms ${this.stderr.trim().slice(-300)}`);
      await new Promise<void>((r) => {
        const t = setTimeout(r, Math.min(left, 250));
        this.waiters.push(() => {
          clearTimeout(t);
          r();
        });
      });
    }
  }

  /** The next JSON line on stdout (at most ms). */
  async next<T = Record<string, unknown>>(ms: number, what: string): Promise<T> {
    const deadline = Date.now() + ms;
    for (;;) {
      const l = this.lines.shift();
      if (l !== undefined) {
        if (l.startsWith('{')) return JSON.parse(l) as T;
        continue;
      }
      if (!this.running) throw new Error(`${what}: the process exited (${this.proc.exitCode ?? this.proc.signalCode}): ${this.stderr.trim().slice(-400)}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`${what}: timed out after ${ms} ms`);
      await new Promise<void>((r) => {
        const t = setTimeout(r, Math.min(left, 250));
        this.waiters.push(() => {
          clearTimeout(t);
          r();
        });
      });
    }
  }

  send(line: string): void {
    this.proc.stdin!.write(`${line}\n`);
  }

  async ask<T = Record<string, unknown>>(line: string, ms: number): Promise<T> {
    this.send(line);
    return this.next<T>(ms, line);
  }

  async stop(): Promise<void> {
    if (!this.running) return;
    this.proc.stdin!.end();
    this.proc.kill('SIGTERM');
    const t = setTimeout(() => this.proc.kill('SIGKILL'), 3000);
    await this.exited;
    clearTimeout(t);
  }
}

/** Runs a command to completion, bounded; resolves with its stdout. */
async function runBounded(cmd: string, args: string[], ms: number, what: string): Promise<string> {
  const c = new Child(cmd, args);
  c.proc.stdin!.end();
  const t = setTimeout(() => c.proc.kill('SIGKILL'), ms);
  const code = await c.exited;
  clearTimeout(t);
  if (code !== 0) throw new Error(`${what} ${code === null ? `killed after ${ms} ms` : `exited ${code}`}: ${c.stderr.trim().slice(-400)}`);
  return c.stdout;
}

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

// ---------------------------------------------------------------- stats

function quantile(xs: number[], q: number): number | null {
  if (xs.length === 0) return null;
  const s = [...xs].sort((a, b) => a - b);
  if (q === 0.5) {
    const m = s.length >> 1;
    return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
  }
  return s[Math.min(s.length - 1, Math.ceil(q * s.length) - 1)];
}

// Throughput "p99" is the sample that 99% of samples reach or exceed
// (the slow tail); for times it is the 99th percentile.
const higherIsBetter = (unit: string) => unit.endsWith('/s');

const runs: Run[] = [];
function record(scenario: string, impl: Run['impl'], unit: string, samples: number[], note?: string): void {
  const r: Run = {
    scenario,
    impl,
    unit,
    median: quantile(samples, 0.5),
    p99: quantile(samples, higherIsBetter(unit) ? 0.01 : 0.99),
    samples: samples.map((x) => +x.toPrecision(6)),
    baselineRatio: null,
  };
  if (note) r.note = note;
  runs.push(r);
  log(`  ${scenario} ${impl}: ${fmt(r.median)} ${unit}`);
}
function skip(scenario: string, impl: Run['impl'], unit: string, reason: string): void {
  runs.push({ scenario, impl, unit, median: null, p99: null, samples: [], baselineRatio: null, skipped: reason });
  log(`  ${scenario} ${impl}: skipped (${reason})`);
}
/** Runs one scenario group; a failure skips what it did not record. */
async function attempt(what: string, expected: [string, Run['impl'], string][], body: () => Promise<void>): Promise<void> {
  log(`${what}...`);
  try {
    await body();
  } catch (e) {
    const reason = `failed: ${(e as Error).message.split('\n')[0].slice(0, 300)}`;
    for (const [s, i, u] of expected) if (!runs.some((r) => r.scenario === s && r.impl === i)) skip(s, i, u, reason);
  }
}

function fmt(x: number | null): string {
  if (x === null) return '-';
  if (x >= 1e6) return `${(x / 1e6).toFixed(2)}M`;
  if (x >= 1e4) return `${(x / 1e3).toFixed(1)}k`;
  return x >= 100 ? x.toFixed(0) : x.toPrecision(3);
}
function log(s: string): void {
  process.stderr.write(`${s}\n`);
}

// ---------------------------------------------------------------- C

async function benchC(): Promise<void> {
  const expected: [string, Run['impl'], string][] = [['doorbell-rtt', 'c', 'us'], ...SIZES.map((s) => [`ring-throughput-${s}`, 'c', 'msg/s'] as [string, Run['impl'], string])];
  await attempt('C baseline', expected, async () => {
    fs.mkdirSync(BUILD, { recursive: true });
    for (const name of ['doorbell', 'ring']) {
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
    const take = (stdout: string) => JSON.parse(stdout.trim().split('\n').pop()!) as { scenario: string; unit: string; samples: number[] };
    const d = take(await runBounded(path.join(BUILD, 'doorbell'), [String(C_RTT.rounds), String(C_RTT.batches)], 60_000, 'C doorbell'));
    record(d.scenario, 'c', d.unit, d.samples);
    for (const size of SIZES) {
      const r = take(await runBounded(path.join(BUILD, 'ring'), [String(size), String(cCount(size)), String(REPS)], 60_000, `C ring ${size}`));
      record(r.scenario, 'c', r.unit, r.samples);
    }
  });
}

// ---------------------------------------------------------------- Rust

const RUST_SCENARIOS: [string, string][] = [
  ['doorbell-rtt', 'us'],
  ['mailbox-rtt', 'us'],
  ['ring-throughput-64', 'msg/s'],
  ['ring-throughput-4096', 'msg/s'],
];

async function benchRust(): Promise<void> {
  log('Rust examples...');
  const dir = path.join(ROOT, 'crates', 'famez-core', 'examples');
  const examples = fs.existsSync(dir) ? fs.readdirSync(dir).filter((f) => /^bench_.*\.rs$/.test(f)).map((f) => f.slice(0, -3)).sort() : [];
  const failures: string[] = [];
  if (examples.length > 0) {
    try {
      await runBounded('cargo', ['build', '--release', '-q', '-p', 'famez-core', '--examples'], pick(120_000, 600_000, 600_000), 'cargo build --examples');
    } catch (e) {
      failures.push((e as Error).message.split('\n')[0].slice(0, 200));
    }
  }
  if (failures.length === 0) {
    // Known examples get arguments sized for the mode; any other bench_*
    // example runs with none (not in --smoke: its cost is unknown). Each
    // prints JSON lines {scenario, impl:"rust", unit, samples}.
    const jobs: { ex: string; args: string[] }[] = [];
    for (const ex of examples) {
      if (ex === 'bench_doorbell_rtt') {
        const base = ['--count', String(C_RTT.rounds * C_RTT.batches), '--batches', String(C_RTT.batches)];
        jobs.push({ ex, args: base });
        for (const p of PEER_CURVE.slice(1)) jobs.push({ ex, args: [...base, '--peers', String(p)] });
      } else if (ex === 'bench_ring_throughput') {
        for (const size of SIZES) jobs.push({ ex, args: ['--size', String(size), '--count', String(cCount(size) * REPS), '--batches', String(Math.max(2, REPS)), '--capacity', String(RING_CAPACITY)] });
      } else if (mode !== 'smoke') {
        jobs.push({ ex, args: [] });
      } else {
        failures.push(`${ex}: arguments unknown to the runner, not run with --smoke`);
      }
    }
    for (const { ex, args } of jobs) {
      try {
        const stdout = await runBounded('cargo', ['run', '--release', '-q', '-p', 'famez-core', '--example', ex, '--', ...args], pick(30_000, 180_000, 600_000), `example ${ex} ${args.join(' ')}`);
        for (const l of stdout.split('\n')) {
          if (!l.startsWith('{')) continue;
          const o = JSON.parse(l) as { scenario?: string; impl?: string; unit?: string; samples?: number[] };
          if (typeof o.scenario !== 'string' || !Array.isArray(o.samples) || o.samples.length === 0 || typeof o.unit !== 'string') continue;
          if (runs.some((r) => r.scenario === o.scenario && r.impl === 'rust')) continue;
          record(o.scenario, 'rust', o.unit, o.samples.map(Number));
        }
      } catch (e) {
        failures.push(`${ex}: ${(e as Error).message.split('\n')[0].slice(0, 200)}`);
      }
    }
  }
  for (const [s, u] of RUST_SCENARIOS) {
    if (runs.some((r) => r.scenario === s && r.impl === 'rust')) continue;
    skip(
      s,
      'rust',
      u,
      examples.length === 0
        ? 'no Rust benchmark example yet (crates/famez-core/examples/bench_*.rs)'
        : failures.length > 0
          ? `no Rust example produced it (${failures.join('; ')})`
          : `no Rust example produced it (examples: ${examples.join(', ')})`,
    );
  }
}

// ---------------------------------------------------------------- JS

async function benchDoorbellJs(): Promise<void> {
  const expected: [string, Run['impl'], string][] = [['doorbell-rtt', 'js', 'us'], ['doorbell-rtt-busy-poll', 'js', 'us'], ...PEER_CURVE.slice(1).map((p) => [`doorbell-rtt-peers-${p}`, 'js', 'us'] as [string, Run['impl'], string])];
  const idle: Client[] = [];
  let server: Child | null = null;
  const pair: Child[] = [];
  await attempt('JS doorbell round trip', expected, async () => {
    const s = await serve(['--silent', '-n', '1', '--max-peers', String(Math.max(...PEER_CURVE) + 2)]);
    server = s.server;
    const echo = peer('client', s.sock);
    const ping = peer('client', s.sock);
    pair.push(echo, ping);
    const { id: echoId } = await echo.ask<{ id: number }>('id', 30_000);
    await ping.ask('id', 30_000);
    await echo.ask('echo', 10_000);
    const rtt = async (pollUs: number) => {
      for (const p of [echo, ping]) await p.ask(`poll ${pollUs}`, 10_000);
      return (await ping.ask<{ samples: number[] }>(`ping ${echoId} ${JS_RTT.rounds} ${JS_RTT.batches} ${RTT_WARMUP}`, 120_000)).samples;
    };
    for (const peers of PEER_CURVE) {
      // Idle peers, connected from this process: every pair peer now holds
      // and watches their fds, and every join/leave goes through its loop.
      while (idle.length + 2 < peers) idle.push(await Client.connect(s.sock, { vectors: 1, timeoutMs: 10_000 }));
      await new Promise((r) => setTimeout(r, pick(100, 300, 500)));
      record(peers === 2 ? 'doorbell-rtt' : `doorbell-rtt-peers-${peers}`, 'js', 'us', await rtt(0), `${peers} peers connected; both sides sleep in epoll between doorbells, as the C baseline does`);
      if (peers === 2) {
        record('doorbell-rtt-busy-poll', 'js', 'us', await rtt(BUSY_POLL_US), `busyPollUs ${BUSY_POLL_US}: each side keeps polling after a doorbell instead of sleeping`);
      }
    }
  });
  for (const c of idle) c.close();
  await Promise.all(pair.map((p) => p.stop()));
  await (server as Child | null)?.stop();
}

async function benchFabricJs(): Promise<void> {
  const expected: [string, Run['impl'], string][] = [['mailbox-rtt', 'js', 'us'], ['mailbox-rtt-busy-poll', 'js', 'us'], ...SIZES.map((s) => [`ring-throughput-${s}`, 'js', 'msg/s'] as [string, Run['impl'], string])];
  let server: Child | null = null;
  const pair: Child[] = [];
  await attempt('JS fabric (mailbox round trip, ring throughput)', expected, async () => {
    // 2 peers and the switch: 6 rings of RING_CAPACITY in 32 MiB.
    const s = await serve(['--max-peers', '2', '-l', '32M', '--ring-capacity', String(RING_CAPACITY)]);
    server = s.server;
    const a = peer('fabric', s.sock);
    const b = peer('fabric', s.sock);
    pair.push(a, b);
    const { id: aId } = await a.ask<{ id: number }>('id', 30_000);
    const { id: bId } = await b.ask<{ id: number }>('id', 30_000);
    await a.ask('mecho', 10_000);
    const mrtt = async (pollUs: number) => {
      for (const p of [a, b]) await p.ask(`poll ${pollUs}`, 10_000);
      return (await b.ask<{ samples: number[] }>(`mping ${aId} ${MB_RTT.rounds} ${MB_RTT.batches} ${RTT_WARMUP}`, 120_000)).samples;
    };
    record('mailbox-rtt', 'js', 'us', await mrtt(0), '64-byte request and answer through the slots; ratio against the C doorbell round trip');
    record('mailbox-rtt-busy-poll', 'js', 'us', await mrtt(BUSY_POLL_US), `the same with busyPollUs ${BUSY_POLL_US}`);
    for (const p of [a, b]) await p.ask('poll 0', 10_000);
    for (const size of SIZES) {
      const count = jsCount(size);
      const rates: number[] = [];
      // Rep -1 warms the JIT up and is not recorded.
      for (let r = -1; r < REPS; r++) {
        await b.ask(`rrecv ${count}`, 10_000);
        a.send(`rsend ${bId} ${size} ${count}`);
        const got = await b.next<{ end: string; count: number }>(90_000, `ring ${size}`);
        const sent = await a.next<{ start: string }>(30_000, 'rsend done');
        // Both stamps are process.hrtime (CLOCK_MONOTONIC, one clock for
        // every process of the machine): first push to last message taken.
        if (r >= 0) rates.push(got.count / (Number(BigInt(got.end) - BigInt(sent.start)) / 1e9));
      }
      record(`ring-throughput-${size}`, 'js', 'msg/s', rates);
    }
  });
  await Promise.all(pair.map((p) => p.stop()));
  await (server as Child | null)?.stop();
}

/** Raises the soft open-file limit of this process tree, if it can. */
function openFileLimit(): string {
  const r = spawnSync('sh', ['-c', 'ulimit -n; ulimit -Hn'], { encoding: 'utf8' });
  const [soft, hard] = r.stdout.trim().split('\n');
  return `open-file limit ${soft} (hard ${hard})`;
}

async function benchMesh(scenario: string, kind: 'client' | 'fabric', cfg: { peers: number; procs: number; reps: number }): Promise<void> {
  let server: Child | null = null;
  const note = `${cfg.peers} peers in ${cfg.procs} processes; ${openFileLimit()}`;
  await attempt(`${scenario} (${cfg.peers} peers)`, [[scenario, 'js', 'ms']], async () => {
    const args = kind === 'client' ? ['--silent', '-n', '1', '--max-peers', String(cfg.peers)] : ['--max-peers', String(cfg.peers)];
    // A fabric's switch is a peer too: each client also knows the server.
    const expect = kind === 'client' ? cfg.peers - 1 : cfg.peers;
    const samples: number[] = [];
    for (let r = 0; r < cfg.reps; r++) {
      // A fresh server per rep: no rep waits on the last one's leaves.
      await (server as Child | null)?.stop();
      const s = await serve(args);
      server = s.server;
      const share = Array.from({ length: cfg.procs }, (_, i) => Math.floor(cfg.peers / cfg.procs) + (i < cfg.peers % cfg.procs ? 1 : 0));
      const procs = share.map((n) => new Child(process.execPath, [...TSX, 'bench/js/mesh.ts', kind, s.sock, String(n), String(expect)]));
      try {
        await Promise.all(procs.map((p) => p.next(30_000, 'mesh process start')));
        const t0 = Date.now();
        for (const p of procs) p.send('go');
        const done = await Promise.all(procs.map((p) => p.next<{ done: number }>(90_000, 'mesh')));
        samples.push(Math.max(...done.map((d) => d.done)) - t0);
      } finally {
        await Promise.all(procs.map((p) => p.stop()));
      }
    }
    record(scenario, 'js', 'ms', samples, note);
  });
  await (server as Child | null)?.stop();
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
  const rows: [string, Run['impl'], string][] = [
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
    ...GUEST_SIZES.flatMap((s) => (['c', 'js'] as const).map((i) => [`guest-ring-throughput-${s}`, i, 'msg/s'] as [string, Run['impl'], string])),
  ];
  let why: string | null = null;
  try {
    findQemu();
    findKernel();
    findStaticBusybox();
  } catch (e) {
    why = (e as Error).message;
  }
  const esbuild = path.join(ROOT, 'node_modules', '.bin', 'esbuild');
  if (!why && !fs.existsSync(path.join(ROOT, 'dist', 'index.js'))) why = 'dist/ is not built (npm run build): the guests run the compiled famez';
  if (!why && !fs.existsSync(esbuild)) why = 'no esbuild in node_modules (npm install) to compile bench/guest/agent.ts';
  if (why) {
    log('guest VMs...');
    for (const [s, i, u] of rows) skip(s, i, u, `no VMs here: ${why}`);
    return;
  }
  const accel = 'tcg' as const;
  const note = (what: string) =>
    `${what}; accel ${accel} (this machine's nested KVM cannot boot stock kernels), 1 vCPU and 512M per VM, 2-core host shared with other work; host peer: famez's JS Client (bench/js/peer.ts vping)`;
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
    const acc = new Map<string, { scenario: string; impl: Run['impl']; unit: string; samples: number[]; note: string }>();
    const add = (scenario: string, impl: Run['impl'], unit: string, samples: number[], what: string) => {
      const k = `${scenario} ${impl}`;
      if (!acc.has(k)) acc.set(k, { scenario, impl, unit, samples: [], note: note(what) });
      acc.get(k)!.samples.push(...samples);
    };
    for (let phase = 0; phase < GUEST_PHASES; phase++) {
      for (const impl of ['js', 'c'] as const) {
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
    for (const impl of ['c', 'js'] as const) for (const r of acc.values()) if (r.impl === impl) record(r.scenario, r.impl, r.unit, r.samples, r.note);
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

function ratios(): void {
  for (const r of runs) {
    if (r.median === null) continue;
    const base = r.scenario.startsWith('guest-mailbox-rtt')
      ? 'guest-doorbell-rtt-host'
      : r.scenario.startsWith('mailbox-rtt') || r.scenario.startsWith('doorbell-rtt')
        ? 'doorbell-rtt'
        : r.scenario;
    const c = runs.find((x) => x.scenario === base && x.impl === 'c' && x.median !== null);
    r.baselineRatio = c && r !== c ? +(r.median / c.median!).toPrecision(4) : r === c ? 1 : null;
  }
}

function table(): string {
  const rows = [['scenario', 'impl', 'unit', 'median', 'p99', 'ratio (impl/c)']];
  for (const r of runs) rows.push([r.scenario, r.impl, r.unit, r.skipped ? 'skipped' : fmt(r.median), fmt(r.p99), r.baselineRatio === null ? '-' : r.baselineRatio.toFixed(3)]);
  const w = rows[0].map((_, i) => Math.max(...rows.map((row) => row[i].length)));
  const line = (row: string[]) => `| ${row.map((c, i) => c.padEnd(w[i])).join(' | ')} |`;
  return [line(rows[0]), `|${w.map((n) => '-'.repeat(n + 2)).join('|')}|`, ...rows.slice(1).map(line)].join('\n');
}

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;');
const COLORS: Record<string, string> = { c: '#555555', rust: '#d9622b', js: '#2b7bd9' };

function svg(): string {
  const W = 900;
  const parts: string[] = [];
  let y = 20;
  parts.push(`<text x="20" y="${y + 10}" font-size="16" font-weight="bold">famez bench (${mode}) — ${esc(os.cpus()[0]?.model ?? '')}, ${os.cpus().length} CPUs</text>`);
  y += 40;
  // 1. ratios
  const withRatio = runs.filter((r) => r.baselineRatio !== null && r.impl !== 'c');
  parts.push(`<text x="20" y="${y}" font-size="14" font-weight="bold">impl / C baseline (same run; times: lower is better, throughput: higher is better)</text>`);
  y += 15;
  const maxR = Math.max(2, ...withRatio.map((r) => r.baselineRatio!));
  const bx = 260;
  const bw = W - bx - 80;
  const scale = (v: number) => (Math.log10(v * 1000) / Math.log10(maxR * 1000)) * bw; // log scale, 0.001 at the left
  for (const r of withRatio) {
    const v = Math.max(0.001, r.baselineRatio!);
    parts.push(`<text x="${bx - 6}" y="${y + 12}" font-size="11" text-anchor="end">${esc(`${r.scenario} ${r.impl}`)}</text>`);
    parts.push(`<rect x="${bx}" y="${y + 2}" width="${scale(v).toFixed(1)}" height="13" fill="${COLORS[r.impl]}"/>`);
    parts.push(`<text x="${bx + scale(v) + 4}" y="${y + 12}" font-size="11">${r.baselineRatio!.toPrecision(3)}</text>`);
    y += 17;
  }
  parts.push(`<line x1="${bx + scale(1)}" y1="${y - withRatio.length * 17}" x2="${bx + scale(1)}" y2="${y}" stroke="black" stroke-dasharray="4 3"/>`);
  parts.push(`<text x="${bx + scale(1) + 3}" y="${y + 12}" font-size="10">1.0 (log scale)</text>`);
  y += 40;
  // 2 and 3: curves
  const curve = (title: string, xs: number[], xLabel: (x: number) => string, series: { impl: string; pts: [number, number][] }[], unit: string, logY: boolean) => {
    const h = 220;
    const x0 = 80;
    const cw = W / 2 - 120;
    parts.push(`<text x="${cx}" y="${y}" font-size="14" font-weight="bold">${esc(title)}</text>`);
    const all = series.flatMap((s) => s.pts.map((p) => p[1])).filter((v) => v > 0);
    if (all.length === 0) {
      parts.push(`<text x="${cx}" y="${y + 30}" font-size="12">no data</text>`);
      return;
    }
    let lo = Math.min(...all);
    let hi = Math.max(...all);
    if (!logY) lo = 0;
    if (hi === lo) hi = lo * 2 || 1;
    const fy = (v: number) => (logY ? y + 20 + h - ((Math.log10(v) - Math.log10(lo)) / (Math.log10(hi) - Math.log10(lo))) * h : y + 20 + h - ((v - lo) / (hi - lo)) * h);
    const fx = (i: number) => cx + x0 + (xs.length === 1 ? 0 : (i / (xs.length - 1)) * cw);
    parts.push(`<line x1="${cx + x0}" y1="${y + 20 + h}" x2="${cx + x0 + cw}" y2="${y + 20 + h}" stroke="black"/>`);
    parts.push(`<line x1="${cx + x0}" y1="${y + 20}" x2="${cx + x0}" y2="${y + 20 + h}" stroke="black"/>`);
    for (const v of [lo, hi]) parts.push(`<text x="${cx + x0 - 4}" y="${fy(v) + 4}" font-size="10" text-anchor="end">${fmt(v)} ${esc(unit)}</text>`);
    xs.forEach((x, i) => parts.push(`<text x="${fx(i)}" y="${y + 36 + h}" font-size="10" text-anchor="middle">${esc(xLabel(x))}</text>`));
    series.forEach((s, k) => {
      const pts = s.pts.filter((p) => p[1] > 0).map(([x, v]) => `${fx(xs.indexOf(x)).toFixed(1)},${fy(v).toFixed(1)}`);
      if (pts.length === 0) return;
      parts.push(`<polyline points="${pts.join(' ')}" fill="none" stroke="${COLORS[s.impl]}" stroke-width="2"/>`);
      for (const p of pts) parts.push(`<circle cx="${p.split(',')[0]}" cy="${p.split(',')[1]}" r="3" fill="${COLORS[s.impl]}"/>`);
      parts.push(`<text x="${cx + x0 + cw - 30}" y="${y + 30 + k * 14}" font-size="11" fill="${COLORS[s.impl]}">${s.impl}</text>`);
    });
  };
  let cx = 20;
  const get = (scenario: string, impl: string) => runs.find((r) => r.scenario === scenario && r.impl === impl)?.median ?? 0;
  curve(
    'ring throughput by message size',
    SIZES,
    (s) => (s >= 1024 ? `${s / 1024}K` : `${s}`),
    ['c', 'rust', 'js'].map((impl) => ({ impl, pts: SIZES.map((s) => [s, get(`ring-throughput-${s}`, impl)] as [number, number]) })),
    'msg/s',
    true,
  );
  cx = W / 2 + 10;
  const peersScenario = (p: number) => (p === 2 ? 'doorbell-rtt' : `doorbell-rtt-peers-${p}`);
  curve(
    'doorbell round trip by peers connected',
    PEER_CURVE,
    (p) => `${p} peers`,
    [
      { impl: 'c', pts: PEER_CURVE.map((p) => [p, get('doorbell-rtt', 'c')] as [number, number]) },
      { impl: 'rust', pts: PEER_CURVE.map((p) => [p, get(peersScenario(p), 'rust')] as [number, number]) },
      { impl: 'js', pts: PEER_CURVE.map((p) => [p, get(peersScenario(p), 'js')] as [number, number]) },
    ],
    'us',
    false,
  );
  y += 280;
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${y}" viewBox="0 0 ${W} ${y}" font-family="sans-serif">\n<rect width="100%" height="100%" fill="white"/>\n${parts.join('\n')}\n</svg>\n`;
}

function machine(): { cpus: number; node: string; rustc: string | null; kernel: string; cpuModel: string } {
  const rustc = spawnSync('rustc', ['--version'], { encoding: 'utf8', timeout: 10_000 });
  return {
    cpus: os.cpus().length,
    node: process.version,
    rustc: rustc.status === 0 ? rustc.stdout.trim() : null,
    kernel: `${os.type()} ${os.release()}`,
    cpuModel: os.cpus()[0]?.model ?? 'unknown',
  };
}

// ---------------------------------------------------------------- main

async function main(): Promise<void> {
  const started = Date.now();
  log(`famez bench (${mode}); ${openFileLimit()}`);
  if (wanted('c')) await benchC();
  if (wanted('rust')) await benchRust();
  if (wanted('js-doorbell')) await benchDoorbellJs();
  if (wanted('js-fabric')) await benchFabricJs();
  if (wanted('mesh')) await benchMesh('connect-mesh-256', 'client', MESH);
  if (wanted('mesh-fabric')) await benchMesh('connect-mesh-fabric-62', 'fabric', MESH_FABRIC);
  if (wanted('guest')) await benchGuest();
  ratios();
  const out = { machine: machine(), mode, seconds: Math.round((Date.now() - started) / 100) / 10, runs };
  fs.mkdirSync(path.dirname(JSON_OUT), { recursive: true });
  fs.writeFileSync(JSON_OUT, `${JSON.stringify(out, null, 2)}\n`);
  const svgPath = JSON_OUT.replace(/(\.json)?$/, '.svg');
  fs.writeFileSync(svgPath, svg());
  process.stdout.write(`${table()}\n\nmachine: ${JSON.stringify(out.machine)}\nwrote ${JSON_OUT} and ${svgPath} in ${out.seconds} s\n`);
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
