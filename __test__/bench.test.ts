// `npm run bench -- --smoke`: every scenario produced a number (or, for a
// Rust scenario whose example does not exist or failed, an explicit skip
// reason), and the JSON has the documented shape. No timing thresholds.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import test from 'ava';

import { LineProcess } from './helpers/wait.js';

const ROOT = path.resolve(__dirname, '..');

const SCENARIOS: [string, string][] = [
  ['doorbell-rtt', 'c'],
  ['doorbell-rtt', 'rust'],
  ['doorbell-rtt', 'js'],
  ['doorbell-rtt-busy-poll', 'js'],
  ['doorbell-rtt-peers-16', 'js'],
  ['doorbell-rtt-peers-64', 'js'],
  ['mailbox-rtt', 'rust'],
  ['mailbox-rtt', 'js'],
  ['mailbox-rtt-busy-poll', 'js'],
  ['connect-mesh-256', 'js'],
  ['connect-mesh-fabric-62', 'js'],
  ...[64, 256, 1024, 4096, 16384, 65536].flatMap((s) => [
    [`ring-throughput-${s}`, 'c'] as [string, string],
    [`ring-throughput-${s}`, 'js'] as [string, string],
    [`ring-throughput-${s}`, 'rust'] as [string, string],
  ]),
];

test('npm run bench -- --smoke: every scenario has a number and the JSON is well formed', async (t) => {
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
    t.regex(stdout, /\| scenario +\| impl/);

    const doc = JSON.parse(fs.readFileSync(out, 'utf8')) as {
      machine: { cpus: number; node: string; rustc: string | null; kernel: string };
      runs: { scenario: string; impl: string; unit: string; median: number | null; p99: number | null; samples: number[]; baselineRatio: number | null; skipped?: string }[];
    };
    t.true(Number.isInteger(doc.machine.cpus) && doc.machine.cpus > 0);
    t.is(typeof doc.machine.node, 'string');
    t.true(doc.machine.rustc === null || typeof doc.machine.rustc === 'string');
    t.is(typeof doc.machine.kernel, 'string');
    t.true(Array.isArray(doc.runs));
    for (const r of doc.runs) {
      t.deepEqual(Object.keys(r).filter((k) => ['scenario', 'impl', 'unit', 'median', 'p99', 'samples', 'baselineRatio'].includes(k)).sort(), ['baselineRatio', 'impl', 'median', 'p99', 'samples', 'scenario', 'unit']);
      t.true(['c', 'rust', 'js'].includes(r.impl), r.impl);
      t.true(Array.isArray(r.samples));
      if (r.skipped !== undefined) {
        t.is(r.median, null);
        t.is(typeof r.skipped, 'string');
        t.true(r.skipped.length > 0);
        continue;
      }
      t.true(typeof r.median === 'number' && Number.isFinite(r.median) && r.median > 0, `${r.scenario} ${r.impl}: median ${r.median}`);
      t.true(typeof r.p99 === 'number' && Number.isFinite(r.p99));
      t.true(r.samples.length > 0 && r.samples.every((x) => Number.isFinite(x)));
      t.true(r.baselineRatio === null || (Number.isFinite(r.baselineRatio) && r.baselineRatio > 0));
    }
    for (const [scenario, impl] of SCENARIOS) {
      const r = doc.runs.find((x) => x.scenario === scenario && x.impl === impl);
      t.truthy(r, `no run for ${scenario} ${impl}`);
      if (!r) continue;
      // Only Rust scenarios may be skipped (their examples come separately).
      if (impl === 'rust' && r.skipped) continue;
      t.is(r.skipped, undefined, `${scenario} ${impl} skipped: ${r.skipped}`);
      t.true(typeof r.median === 'number', `${scenario} ${impl} has no number`);
      if (impl === 'c') t.is(r.baselineRatio, 1);
      else if (doc.runs.some((x) => x.impl === 'c' && x.median !== null && x.scenario === (scenario.startsWith('mailbox-rtt') || scenario.startsWith('doorbell-rtt') ? 'doorbell-rtt' : scenario))) t.is(typeof r.baselineRatio, 'number', `${scenario} ${impl} has no ratio`);
    }
    t.true(fs.readFileSync(out.replace(/\.json$/, '.svg'), 'utf8').startsWith('<svg'));
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

test('npm run bench -- --only picks scenario groups; an unknown group is exit 2 with the list', async (t) => {
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
    const ok = await run(['--smoke', '--only', 'c', '--json', out]);
    t.is(ok.code, 0, ok.stderr);
    const doc = JSON.parse(fs.readFileSync(out, 'utf8')) as { runs: { impl: string }[] };
    t.true(doc.runs.length > 0);
    t.deepEqual([...new Set(doc.runs.map((r) => r.impl))], ['c']);
    const bad = await run(['--only', 'c,bogus']);
    t.is(bad.code, 2);
    t.regex(bad.stderr, /--only takes .*c, rust, js-doorbell, js-fabric, mesh, mesh-fabric, guest; not 'bogus'/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
