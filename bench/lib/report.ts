// The benchmark's rows, their statistics, the table and the chart
// (bench/results/latest.svg).
import * as os from 'node:os';

export type Impl = 'c' | 'rust' | 'js';
/** cross-cpu: the two sides of a scenario pinned to two CPUs, so every
 * wake-up crosses CPUs (through the hypervisor in a VM); same-cpu: both
 * pinned to one CPU, so a wake-up is a local context switch and the figure
 * is software cost; unpinned: the scheduler places everything (the meshes
 * of many processes, the guest VMs). */
export type Regime = 'cross-cpu' | 'same-cpu' | 'unpinned';

export interface Run {
  scenario: string;
  impl: Impl;
  regime: Regime;
  unit: string;
  /** Over every sample of every round. */
  median: number | null;
  p99: number | null;
  samples: number[];
  /** The median of each round; the implementations' rounds interleave. */
  rounds: number[];
  /** The lowest and highest of `rounds`. */
  spread: { min: number; max: number } | null;
  /** impl / C for the baseline scenario in the same regime and run. */
  baselineRatio: number | null;
  /** Why there is no number. */
  skipped?: string;
  note?: string;
}

export function quantile(xs: number[], q: number): number | null {
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
export const higherIsBetter = (unit: string) => unit.endsWith('/s');

const round6 = (x: number) => +x.toPrecision(6);

/** A row from the samples of each round. */
export function makeRun(scenario: string, impl: Impl, regime: Regime, unit: string, rounds: number[][], note?: string): Run {
  const samples = rounds.flat();
  const medians = rounds.filter((r) => r.length > 0).map((r) => quantile(r, 0.5)!);
  const r: Run = {
    scenario,
    impl,
    regime,
    unit,
    median: quantile(samples, 0.5),
    p99: quantile(samples, higherIsBetter(unit) ? 0.01 : 0.99),
    samples: samples.map(round6),
    rounds: medians.map(round6),
    spread: medians.length > 0 ? { min: round6(Math.min(...medians)), max: round6(Math.max(...medians)) } : null,
    baselineRatio: null,
  };
  if (note) r.note = note;
  return r;
}

export function skippedRun(scenario: string, impl: Impl, regime: Regime, unit: string, reason: string): Run {
  return { scenario, impl, regime, unit, median: null, p99: null, samples: [], rounds: [], spread: null, baselineRatio: null, skipped: reason };
}

/** The C row a row is compared with, in the same regime: the same
 * scenario (the mailbox rows too: bench/baseline/mailbox.c does the same
 * slot handshake), or for the peer curve the C doorbell round trip, for
 * switch-ping-N-ring the C switch-ping-N. */
export function baselineOf(scenario: string): string {
  if (scenario.startsWith('guest-mailbox-rtt')) return 'guest-doorbell-rtt-host';
  if (scenario.startsWith('doorbell-rtt-peers-')) return 'doorbell-rtt';
  if (scenario === 'link-read-64') return 'link-rtt-64';
  if (scenario === 'link-read-64-busy-poll') return 'link-rtt-64-busy-poll';
  const ring = /^(switch-ping-\d+)-ring$/.exec(scenario);
  if (ring) return ring[1];
  return scenario;
}

export function ratios(runs: Run[]): void {
  for (const r of runs) {
    if (r.median === null) continue;
    const base = baselineOf(r.scenario);
    const c = runs.find((x) => x.scenario === base && x.regime === r.regime && x.impl === 'c' && x.median !== null);
    r.baselineRatio = c && r !== c ? +(r.median / c.median!).toPrecision(4) : r === c ? 1 : null;
  }
}

export function fmt(x: number | null): string {
  if (x === null) return '-';
  if (x >= 1e6) return `${(x / 1e6).toFixed(2)}M`;
  if (x >= 1e4) return `${(x / 1e3).toFixed(1)}k`;
  return x >= 100 ? x.toFixed(0) : x.toPrecision(3);
}

export function table(runs: Run[]): string {
  const rows = [['scenario', 'impl', 'regime', 'unit', 'median', 'p99', 'rounds (min-max)', 'ratio (impl/c)']];
  for (const r of runs) {
    rows.push([
      r.scenario,
      r.impl,
      r.regime,
      r.unit,
      r.skipped ? 'skipped' : fmt(r.median),
      fmt(r.p99),
      r.spread ? `${r.rounds.length}: ${fmt(r.spread.min)}-${fmt(r.spread.max)}` : '-',
      r.baselineRatio === null ? '-' : r.baselineRatio.toFixed(3),
    ]);
  }
  const w = rows[0].map((_, i) => Math.max(...rows.map((row) => row[i].length)));
  const line = (row: string[]) => `| ${row.map((c, i) => c.padEnd(w[i])).join(' | ')} |`;
  return [line(rows[0]), `|${w.map((n) => '-'.repeat(n + 2)).join('|')}|`, ...rows.slice(1).map(line)].join('\n');
}

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;');
const COLORS: Record<string, string> = { c: '#555555', rust: '#d9622b', js: '#2b7bd9', jsring: '#2bb37b' };
const REGIME_TITLE: Record<Regime, string> = {
  'same-cpu': 'same-cpu: both sides on one CPU (a wake-up is a context switch: software cost)',
  'cross-cpu': 'cross-cpu: the sides on two CPUs (a wake-up crosses CPUs: the hypervisor in a VM)',
  unpinned: 'unpinned (meshes of many processes, guest VMs)',
};

interface Series {
  label: string;
  impl: string;
  dashed: boolean;
  pts: [number, number][];
}

/** The chart: impl/C ratios per regime, ring throughput by size, the
 * doorbell round trip by peers connected and switch pings by peers asking. */
export function svg(runs: Run[], mode: string, peerCurve: number[], sizes: number[], switchPeers: number[]): string {
  const W = 900;
  const parts: string[] = [];
  let y = 20;
  parts.push(`<text x="20" y="${y + 10}" font-size="16" font-weight="bold">famez bench (${esc(mode)}) — ${esc(os.cpus()[0]?.model ?? '')}, ${os.cpus().length} CPUs</text>`);
  y += 40;
  // 1. ratios, one block per regime
  const withRatio = runs.filter((r) => r.baselineRatio !== null && r.impl !== 'c');
  parts.push(`<text x="20" y="${y}" font-size="14" font-weight="bold">impl / C baseline, same regime, same run (times: lower is better; throughput: higher is better)</text>`);
  parts.push(`<text x="20" y="${y + 14}" font-size="11">bar: median / C median; whisker: the lowest and highest round median / C median</text>`);
  y += 14;
  y += 10;
  const maxR = Math.max(2, ...withRatio.map((r) => r.baselineRatio!));
  const bx = 300;
  const bw = W - bx - 80;
  const scale = (v: number) => (Math.log10(v * 1000) / Math.log10(maxR * 1000)) * bw; // log scale, 0.001 at the left
  for (const regime of ['same-cpu', 'cross-cpu', 'unpinned'] as const) {
    const rows = withRatio.filter((r) => r.regime === regime);
    if (rows.length === 0) continue;
    y += 18;
    parts.push(`<text x="20" y="${y}" font-size="12" font-weight="bold">${esc(REGIME_TITLE[regime])}</text>`);
    y += 4;
    const top = y;
    for (const r of rows) {
      const v = Math.max(0.001, r.baselineRatio!);
      parts.push(`<text x="${bx - 6}" y="${y + 12}" font-size="11" text-anchor="end">${esc(`${r.scenario} ${r.impl}`)}</text>`);
      parts.push(`<rect x="${bx}" y="${y + 2}" width="${scale(v).toFixed(1)}" height="13" fill="${COLORS[r.impl]}"/>`);
      // The rounds' spread against the C median: a whisker.
      const c = runs.find((x) => x.scenario === baselineOf(r.scenario) && x.regime === r.regime && x.impl === 'c' && x.median !== null);
      let end = scale(v);
      if (c && r.spread) {
        const lo = scale(Math.max(0.001, r.spread.min / c.median!));
        const hi = scale(Math.max(0.001, r.spread.max / c.median!));
        parts.push(`<line x1="${(bx + lo).toFixed(1)}" y1="${y + 8.5}" x2="${(bx + hi).toFixed(1)}" y2="${y + 8.5}" stroke="black" stroke-width="1.5"/>`);
        end = Math.max(end, hi);
      }
      parts.push(`<text x="${bx + end + 4}" y="${y + 12}" font-size="11">${r.baselineRatio!.toPrecision(3)}</text>`);
      y += 17;
    }
    parts.push(`<line x1="${bx + scale(1)}" y1="${top}" x2="${bx + scale(1)}" y2="${y}" stroke="black" stroke-dasharray="4 3"/>`);
  }
  parts.push(`<text x="${bx + scale(1) + 3}" y="${y + 12}" font-size="10">1.0 (log scale)</text>`);
  y += 30;
  parts.push(`<text x="20" y="${y}" font-size="11">curves by peers: solid same-cpu, dashed cross-cpu</text>`);
  y += 30;
  // 2. curves, two per row
  const curve = (cx: number, title: string, xs: number[], xLabel: (x: number) => string, series: Series[], unit: string, logY: boolean) => {
    const h = 200;
    const x0 = 70;
    const cw = W / 2 - 30 - x0 - 80;
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
    let k = 0;
    for (const s of series) {
      const pts = s.pts.filter((p) => p[1] > 0).map(([x, v]) => [fx(xs.indexOf(x)), fy(v)] as [number, number]);
      if (pts.length === 0) continue;
      const dash = s.dashed ? ' stroke-dasharray="5 3"' : '';
      parts.push(`<polyline points="${pts.map(([a, b]) => `${a.toFixed(1)},${b.toFixed(1)}`).join(' ')}" fill="none" stroke="${COLORS[s.impl]}" stroke-width="2"${dash}/>`);
      for (const [a, b] of pts) parts.push(`<circle cx="${a.toFixed(1)}" cy="${b.toFixed(1)}" r="3" fill="${COLORS[s.impl]}"/>`);
      parts.push(`<text x="${cx + x0 + cw + 6}" y="${y + 30 + k++ * 13}" font-size="10" fill="${COLORS[s.impl]}">${esc(s.label)}</text>`);
    }
  };
  const get = (scenario: string, impl: string, regime: Regime) => runs.find((r) => r.scenario === scenario && r.impl === impl && r.regime === regime)?.median ?? 0;
  const both = ['same-cpu', 'cross-cpu'] as const;
  const label = (impl: string, regime: Regime) => `${impl} ${regime === 'same-cpu' ? 'same' : 'cross'}`;
  curve(
    20,
    'ring throughput by message size (cross-cpu)',
    sizes,
    (s) => (s >= 1024 ? `${s / 1024}K` : `${s}`),
    ['c', 'rust', 'js'].map((impl) => ({ label: impl, impl, dashed: false, pts: sizes.map((s) => [s, get(`ring-throughput-${s}`, impl, 'cross-cpu')] as [number, number]) })),
    'msg/s',
    true,
  );
  const peersScenario = (p: number) => (p === 2 ? 'doorbell-rtt' : `doorbell-rtt-peers-${p}`);
  curve(
    W / 2 + 10,
    'doorbell round trip by peers connected',
    peerCurve,
    (p) => `${p} peers`,
    both.flatMap((regime) => [
      { label: `${label('c', regime)} (2)`, impl: 'c', dashed: regime === 'cross-cpu', pts: peerCurve.map((p) => [p, get('doorbell-rtt', 'c', regime)] as [number, number]) },
      ...['rust', 'js'].map((impl) => ({ label: label(impl, regime), impl, dashed: regime === 'cross-cpu', pts: peerCurve.map((p) => [p, get(peersScenario(p), impl, regime)] as [number, number]) })),
    ]),
    'us',
    true,
  );
  y += 270;
  curve(
    20,
    'switch ping round trips by peers asking',
    switchPeers,
    (n) => `${n}`,
    both.flatMap((regime) => [
      ...['c', 'js'].map((impl) => ({ label: label(impl, regime), impl, dashed: regime === 'cross-cpu', pts: switchPeers.map((n) => [n, get(`switch-ping-${n}`, impl, regime)] as [number, number]) })),
      { label: `${label('js', regime)} ring`, impl: 'jsring', dashed: regime === 'cross-cpu', pts: switchPeers.map((n) => [n, get(`switch-ping-${n}-ring`, 'js', regime)] as [number, number]) },
    ]),
    'ping/s',
    true,
  );
  y += 270;
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${y}" viewBox="0 0 ${W} ${y}" font-family="sans-serif">\n<rect width="100%" height="100%" fill="white"/>\n${parts.join('\n')}\n</svg>\n`;
}
