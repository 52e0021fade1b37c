// `npm run bench -- --smoke`: every scenario x implementation x regime has
// a row with a number (a cross-cpu row may instead be skipped, with the
// reason, on a machine that lets the run use only one CPU), with its
// regime and its rounds' spread, and the JSON has the documented shape. No
// timing thresholds.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import test from 'ava';

import type { Regime, Run as Row } from '../bench/lib/report.js';

import { LineProcess } from './helpers/wait.js';

const ROOT = path.resolve(__dirname, '..');

const BOTH: Regime[] = ['cross-cpu', 'same-cpu'];
const CROSS: Regime[] = ['cross-cpu'];
const rows = (scenarios: string[], impls: string[], regimes: Regime[]): [string, string, Regime][] =>
  scenarios.flatMap((s) => impls.flatMap((i) => regimes.map((g) => [s, i, g] as [string, string, Regime])));

/** Every row the smoke run must have (the guest group's rows are checked
 * for shape only: they are skipped where QEMU is missing). */
const EXPECTED: [string, string, Regime][] = [
  ...rows(['doorbell-rtt'], ['c', 'rust', 'js'], BOTH),
  ...rows(['doorbell-rtt-busy-poll'], ['c', 'rust', 'js'], CROSS),
  ...rows(['doorbell-rtt-peers-16', 'doorbell-rtt-peers-64'], ['rust', 'js'], BOTH),
  ...rows(['mailbox-rtt'], ['c', 'rust', 'js'], BOTH),
  ...rows(['mailbox-rtt-busy-poll'], ['c', 'rust', 'js'], CROSS),
  ...rows(
    [64, 256, 1024, 4096, 16384, 65536].map((s) => `ring-throughput-${s}`),
    ['c', 'rust', 'js'],
    CROSS,
  ),
  ...rows(['switch-ping-1', 'switch-ping-4', 'switch-ping-14'], ['c', 'js'], BOTH),
  ...rows(['switch-ping-1-ring', 'switch-ping-4-ring', 'switch-ping-14-ring'], ['js'], BOTH),
  ...rows(['link-rtt-64'], ['c', 'js'], BOTH),
  ...rows(['link-rtt-64-fi_pingpong'], ['c'], CROSS),
  ...rows(['link-read-64'], ['js'], BOTH),
  ...rows(['link-rtt-64-busy-poll'], ['c', 'js'], CROSS),
  ...rows(['link-read-64-busy-poll'], ['js'], CROSS),
  ...rows(['link-stream-4096'], ['c', 'js'], CROSS),
  ...rows(['link-failover-detect', 'link-failover-resume', 'link-failover-fail', 'link-failover-fm'], ['js'], ['unpinned']),
  ...rows(['connect-mesh-256', 'connect-mesh-fabric-62'], ['js'], ['unpinned']),
];

/** The C row a row's ratio is against (bench/lib/report.ts baselineOf). */
const baselineOf = (s: string) =>
  s.startsWith('guest-mailbox-rtt')
    ? 'guest-doorbell-rtt-host'
    : s.startsWith('doorbell-rtt-peers-')
      ? 'doorbell-rtt'
      : s === 'link-read-64'
        ? 'link-rtt-64'
        : s === 'link-read-64-busy-poll'
          ? 'link-rtt-64-busy-poll'
          : s.replace(/^(switch-ping-\d+)-ring$/, '$1');


test('npm run bench -- --smoke: every scenario, implementation and regime has a row, and the JSON is well formed', async (t) => {
  // Bounds, not timings: the smoke run boots two VMs for its guest group.
  t.timeout(250_000);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'famez-bench-test-'));
  const out = path.join(dir, 'b.json');
  try {
    // Detached: npm's children (the runner, its scenarios) are its process group, killed with it.
    const bench = LineProcess.spawn('npm', ['run', '-s', 'bench', '--', '--smoke', '--json', out], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    t.teardown(() => bench.stop('SIGKILL'));
    const code = await bench.wait(240_000).then(
      (e) => e.code,
      async () => {
        await bench.stop('SIGKILL');
        return null;
      },
    );
    const { stdout, stderr } = bench;
    t.is(code, 0, `bench exited ${code}\n${stderr.slice(-2000)}`);
    t.regex(stdout, /\| scenario +\| impl +\| regime/);

    const doc = JSON.parse(fs.readFileSync(out, 'utf8')) as {
      machine: { cpus: number; allowedCpus: number[]; node: string; rustc: string | null; kernel: string };
      roundsPerRegime: number;
      runs: Row[];
    };
    t.true(Number.isInteger(doc.machine.cpus) && doc.machine.cpus > 0);
    t.true(Array.isArray(doc.machine.allowedCpus) && doc.machine.allowedCpus.length > 0);
    t.is(typeof doc.machine.node, 'string');
    t.true(doc.machine.rustc === null || typeof doc.machine.rustc === 'string');
    t.is(typeof doc.machine.kernel, 'string');
    t.true(Number.isInteger(doc.roundsPerRegime) && doc.roundsPerRegime >= 2, `${doc.roundsPerRegime} rounds`);
    t.true(Array.isArray(doc.runs));
    const oneCpu = doc.machine.allowedCpus.length < 2;
    for (const r of doc.runs) {
      const what = `${r.scenario} ${r.impl} ${r.regime}`;
      t.deepEqual(
        Object.keys(r)
          .filter((k) => ['scenario', 'impl', 'regime', 'unit', 'median', 'p99', 'samples', 'rounds', 'spread', 'baselineRatio'].includes(k))
          .sort(),
        ['baselineRatio', 'impl', 'median', 'p99', 'regime', 'rounds', 'samples', 'scenario', 'spread', 'unit'],
        what,
      );
      t.true(['c', 'rust', 'js'].includes(r.impl), what);
      t.true(['cross-cpu', 'same-cpu', 'unpinned'].includes(r.regime), what);
      t.true(Array.isArray(r.samples) && Array.isArray(r.rounds), what);
      t.is(doc.runs.filter((x) => x.scenario === r.scenario && x.impl === r.impl && x.regime === r.regime).length, 1, `one row for ${what}`);
      if (r.skipped !== undefined) {
        t.is(r.median, null, what);
        t.is(r.spread, null, what);
        t.is(typeof r.skipped, 'string', what);
        t.true(r.skipped.length > 0, what);
        continue;
      }
      // A rate's windows may count nothing (below): its median may be 0 on
      // a loaded machine, but some window counted something; a time is never 0.
      const rated = r.unit.endsWith('/s');
      t.true(typeof r.median === 'number' && Number.isFinite(r.median) && (r.median > 0 || (rated && r.median === 0)), `${what}: median ${r.median}`);
      if (rated) t.true(r.samples.some((x) => x > 0), `${what}: no window counted anything: ${JSON.stringify(r.samples)}`);
      t.true(typeof r.p99 === 'number' && Number.isFinite(r.p99), what);
      t.true(r.samples.length > 0 && r.samples.every((x) => Number.isFinite(x)), what);
      // The spread: one median per round, its lowest and highest.
      // A rate's window may count nothing (a time slice the shared machine
      // gave elsewhere: seen in the switch rows' 50 ms smoke windows); a
      // time is never 0.
      t.true(r.rounds.length > 0 && r.rounds.every((x) => Number.isFinite(x) && (x > 0 || (rated && x === 0))), `${what}: rounds ${JSON.stringify(r.rounds)}`);
      if (r.regime !== 'unpinned') t.is(r.rounds.length, doc.roundsPerRegime, `${what}: one median per round`);
      t.truthy(r.spread, what);
      t.is(r.spread!.min, Math.min(...r.rounds), what);
      t.is(r.spread!.max, Math.max(...r.rounds), what);
      t.true(r.baselineRatio === null || (Number.isFinite(r.baselineRatio) && (r.baselineRatio > 0 || (rated && r.median === 0))), what);
      if (r.impl === 'c') t.is(r.baselineRatio, 1, `${what}: a C row's ratio`);
      const base = doc.runs.find((x) => x.impl === 'c' && x.median !== null && x.regime === r.regime && x.scenario === baselineOf(r.scenario));
      if (base) t.is(typeof r.baselineRatio, 'number', `${what} has no ratio against C`);
    }
    for (const [scenario, impl, regime] of EXPECTED) {
      const what = `${scenario} ${impl} ${regime}`;
      const r = doc.runs.find((x) => x.scenario === scenario && x.impl === impl && x.regime === regime);
      t.truthy(r, `no row for ${what}`);
      if (!r) continue;
      if (regime === 'cross-cpu' && oneCpu) {
        t.regex(r.skipped ?? '', /two CPUs/, `${what} on one CPU: skipped with the reason`);
        continue;
      }
      t.is(r.skipped, undefined, `${what} skipped: ${r.skipped}`);
      t.true(typeof r.median === 'number', `${what} has no number`);
    }
    const chart = fs.readFileSync(out.replace(/\.json$/, '.svg'), 'utf8');
    t.true(chart.startsWith('<svg'));
    t.regex(chart, /same-cpu/);
    t.regex(chart, /cross-cpu/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('famez bench --help goes to the runner', async (t) => {
  const help = LineProcess.spawn(process.execPath, ['--import=tsx', 'ts/cli/main.ts', 'bench', '--help'], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  t.teardown(() => help.stop('SIGKILL'));
  const code = await help.wait(30_000).then(
    (e) => e.code,
    () => null,
  );
  t.is(code, 0);
  t.regex(help.stdout, /npm run bench -- \[--quick \| --smoke\] \[--json FILE\]/);
});

test('npm run bench -- --only picks groups, implementations and regimes; an unknown word is exit 2 with the list', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'famez-bench-only-'));
  try {
    const out = path.join(dir, 'only.json');
    const run = async (args: string[]): Promise<{ code: number | null; stderr: string }> => {
      const p = LineProcess.spawn(process.execPath, ['--import=tsx', 'bench/run.ts', ...args], { cwd: ROOT, stdio: ['ignore', 'ignore', 'pipe'] });
      t.teardown(() => p.stop('SIGKILL'));
      const code = await p.wait(120_000).then(
        (e) => e.code,
        () => null,
      );
      return { code, stderr: p.stderr };
    };
    const ok = await run(['--smoke', '--only', 'doorbell,c,same-cpu', '--json', out]);
    t.is(ok.code, 0, ok.stderr);
    const doc = JSON.parse(fs.readFileSync(out, 'utf8')) as { runs: { scenario: string; impl: string; regime: string }[] };
    t.deepEqual(
      doc.runs.map((r) => `${r.scenario} ${r.impl} ${r.regime}`),
      ['doorbell-rtt c same-cpu'],
    );
    const bad = await run(['--only', 'c,bogus']);
    t.is(bad.code, 2);
    t.regex(bad.stderr, /--only takes .*doorbell, mailbox, ring, switch, links, mesh, mesh-fabric, guest.*c, rust, js.*cross-cpu, same-cpu.*; not 'bogus'/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
