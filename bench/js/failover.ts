// The links' failure times (issue 13, item 8): famez serve in network
// namespaces joined by veth pairs (as netns-links.test.ts does), FabricClients
// in this process over the switches' UNIX sockets. Each run measures, in ms:
//   detect  a stream's link cut (ip link set down) -> both switches have it down
//   resume  the same cut, a second link to the same switch up -> the stream going again
//   fail    the only link cut -> a request waiting on a peer of the other switch rejected
//   fm      the primary fabric manager's switch SIGKILLed -> a peer told the secondary's
// Used by bench/run.ts (the links group); needs root, ip netns and libfabric.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { Netns } from '../../__test__/helpers/netns.js';
import { FabricClient } from '../../ts/fabric/client.js';
import { formatGcid } from '../../ts/fabric/remote.js';
import { Child } from '../lib/child.js';

export interface FailoverTimes {
  detect: number[];
  resume: number[];
  fail: number[];
  fm: number[];
}

const PORT = 7300;
const WAIT_MS = 20_000;

/** The epoch ms of the first log line of `c` (its stdout) after index `from` matching `re`. */
function logTime(c: Child, from: number, re: RegExp): number | undefined {
  for (const line of c.stdout.split('\n').slice(from)) {
    const m = /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z) /.exec(line);
    if (m && re.test(line)) return Date.parse(m[1]);
  }
  return undefined;
}

const lineCount = (c: Child) => c.stdout.split('\n').length - 1;

async function until(what: string, ok: () => boolean | Promise<boolean>, ms = WAIT_MS): Promise<void> {
  const end = Date.now() + ms;
  while (!(await ok())) {
    if (Date.now() > end) throw new Error(`failover bench: not within ${ms} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

class World {
  readonly net = new Netns();
  readonly dir = fs.mkdtempSync(path.join(os.tmpdir(), 'famez-failover-'));
  private readonly procs: Child[] = [];
  private readonly clients: FabricClient[] = [];
  private n = 0;

  async serve(ns: string, args: string[]): Promise<{ sock: string; proc: Child }> {
    const sock = path.join(this.dir, `s${++this.n}`);
    const cmd = [...this.net.exec(ns), process.execPath, '--import=tsx', 'ts/cli/main.ts', 'serve', '-S', sock, '--memfd', '--max-peers', '4', '--no-http', ...args];
    const proc = new Child(cmd[0]!, cmd.slice(1));
    this.procs.push(proc);
    await proc.waitFor(/serving on /, 60_000, `famez serve ${args.join(' ')}`, true);
    return { sock, proc };
  }

  async client(sock: string, nodename: string): Promise<FabricClient> {
    const c = await FabricClient.connect(sock, { nodename });
    this.clients.push(c);
    return c;
  }

  /** Switches A (SID 1, listening) and B (SID 2, linking) in two
   * namespaces joined by `links` veth pairs; `extraA`/`extraB` added to
   * their command lines. */
  async pair(links: number, extraA: string[] = [], extraB: string[] = []) {
    const nsA = this.net.add('a');
    const nsB = this.net.add('b');
    const veths = Array.from({ length: links }, (_, i) => this.net.veth(nsA, nsB, i + 1)[0]);
    const a = await this.serve(nsA, ['--sid', '1', ...veths.flatMap((v) => ['--link-listen', `${v.ip}:${PORT}`]), ...extraA]);
    const b = await this.serve(nsB, ['--sid', '2', ...veths.flatMap((v) => ['--link', `${v.ip}:${PORT}`]), ...extraB]);
    return { a, b, veths };
  }

  async close(): Promise<void> {
    for (const c of this.clients) c.close();
    await Promise.all(this.procs.map((p) => p.stop()));
    this.net.cleanup();
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

/** Two switches joined by two veth pairs; a ring stream A -> B; the link
 * carrying it cut for good: [detect, resume]. */
async function cutOneOfTwo(): Promise<[number, number]> {
  const w = new World();
  try {
    const { a, b, veths } = await w.pair(2);
    const l1 = veths[0]!;
    await until('both links up', () => (b.proc.stdout.match(/link out:\S+ up/g) ?? []).length >= 2);
    const alpha = await w.client(a.sock, 'alpha');
    const beta = await w.client(b.sock, 'beta');
    await until('alpha knows beta', async () => (await alpha.remotePeers()).some((p) => p.nodename === 'beta'));
    const arrivals: number[] = [];
    beta.on('data', ({ messages }) => {
      const now = Date.now();
      for (let i = 0; i < messages.length; i++) arrivals.push(now);
    });
    let sending = true;
    const to = formatGcid(beta.gcid);
    const sender = (async () => {
      const batch = Array.from({ length: 64 }, () => Buffer.alloc(64));
      while (sending) await alpha.sendRing(to, batch, { timeoutMs: 30_000 });
    })();
    await until('the stream flowing', () => arrivals.length > 5000);
    const [fromA, fromB] = [lineCount(a.proc), lineCount(b.proc)];
    w.net.set(l1, 'down');
    const cut = Date.now();
    await until('both sides have the cut link down', () => logTime(a.proc, fromA, /link in:\d+ down/) !== undefined && logTime(b.proc, fromB, /link out:\S+ down/) !== undefined);
    await until('the stream going on after the cut', () => arrivals.length > 0 && arrivals[arrivals.length - 1]! > cut + 50);
    sending = false;
    await sender;
    const detect = Math.max(logTime(a.proc, fromA, /link in:\d+ down/)!, logTime(b.proc, fromB, /link out:\S+ down/)!) - cut;
    // The stream stood still from its last message before the cut to its first after the longest pause.
    let last = cut;
    let resume = 0;
    for (const t of arrivals) {
      if (t < cut) {
        last = t;
        continue;
      }
      if (t - last > resume) resume = t - last;
      last = t;
    }
    return [detect, resume];
  } finally {
    await w.close();
  }
}

/** The only link cut: a request waiting on the other switch fails: ms. */
async function cutTheOnly(): Promise<number> {
  const w = new World();
  try {
    const { a, b, veths } = await w.pair(1);
    const l1 = veths[0]!;
    const alpha = await w.client(a.sock, 'alpha');
    await w.client(b.sock, 'beta');
    await until('alpha knows beta', async () => (await alpha.remotePeers()).some((p) => p.nodename === 'beta'));
    // Peer 4 of switch 2 is not there: nothing answers; the request waits.
    const pending = alpha.request('2:400', 'anyone?', { replyTimeoutMs: 30_000 }).then(
      () => NaN,
      () => Date.now(),
    );
    await new Promise((r) => setTimeout(r, 50));
    w.net.set(l1, 'down');
    const cut = Date.now();
    const failed = await pending;
    if (Number.isNaN(failed)) throw new Error('failover bench: the request was answered');
    return failed - cut;
  } finally {
    await w.close();
  }
}

/** A primary and a secondary fabric manager; the primary's switch SIGKILLed: ms until a peer is told the new one. */
async function managerGone(): Promise<number> {
  const w = new World();
  try {
    const { a, b } = await w.pair(1, ['--fm', 'primary'], ['--fm', 'secondary']);
    await until('b sees the primary', () => /fabric manager in charge: SID 1/.test(b.proc.stdout));
    const beta = await w.client(b.sock, 'beta');
    const info = await beta.linkUp({ timeoutMs: WAIT_MS });
    if (info.PFMSID !== 1) throw new Error(`failover bench: configured for SID ${info.PFMSID}, not the primary`);
    const told = new Promise<number>((resolve) => beta.on('configured', (i) => i.PFMSID === 2 && resolve(Date.now())));
    const killed = Date.now();
    a.proc.proc.kill('SIGKILL');
    const at = await Promise.race([told, new Promise<number>((_, reject) => setTimeout(() => reject(new Error('failover bench: the secondary did not take over')), WAIT_MS))]);
    return at - killed;
  } finally {
    await w.close();
  }
}

export async function failover(reps: number, log: (s: string) => void = () => undefined): Promise<FailoverTimes> {
  const t: FailoverTimes = { detect: [], resume: [], fail: [], fm: [] };
  for (let i = 0; i < reps; i++) {
    const [d, r] = await cutOneOfTwo();
    t.detect.push(d);
    t.resume.push(r);
    t.fail.push(await cutTheOnly());
    t.fm.push(await managerGone());
    log(`  failover ${i + 1}/${reps}: detect ${d} ms, resume ${r} ms, fail ${t.fail[i]} ms, fm ${t.fm[i]} ms`);
  }
  return t;
}
