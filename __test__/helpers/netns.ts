// Network namespaces joined by veth pairs, for tests that run famez serve as
// on separate hosts (netns-links.test.ts): each test makes its own uniquely
// named namespaces (fz<pid><n><tag>) and veth pairs with 10.x addresses, and
// removes them all at cleanup, after killing whatever still runs inside.
// netnsSupport() says whether this machine permits it (root, iproute2,
// `ip netns add` succeeding), and why not.
import { execFileSync, spawnSync } from 'node:child_process';

import { which } from './wait.js';

const IP_TIMEOUT_MS = 10_000;
/** iproute2's ip, found on PATH or in the sbin dirs a non-login PATH may lack. */
const IP = which('ip') ?? which('ip', '/usr/sbin:/sbin', true) ?? 'ip';

let counter = 0;
const live = new Set<string>();

// Namespaces a test process leaves behind when it dies without its cleanup
// (an ava timeout, an uncaught error): removed on the way out.
process.on('exit', () => {
  for (const ns of live) removeNamespace(ns);
});

function ip(args: string[]): string {
  try {
    return execFileSync(IP, args, { encoding: 'utf8', timeout: IP_TIMEOUT_MS, stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (e) {
    const err = e as Error & { stderr?: string };
    throw new Error(`ip ${args.join(' ')}: ${(err.stderr ?? '').trim() || err.message}`, { cause: e });
  }
}

/** The pids of the processes inside namespace `ns` ([] when it is gone). */
export function namespacePids(ns: string): number[] {
  const r = spawnSync(IP, ['netns', 'pids', ns], { encoding: 'utf8', timeout: IP_TIMEOUT_MS });
  if (r.status !== 0) return [];
  return r.stdout.split(/\s+/).filter(Boolean).map(Number);
}

/** Kills what runs in `ns` (the test started it all), deletes its links and
 * the namespace; synchronous, so the exit hook can use it. */
function removeNamespace(ns: string): void {
  for (const pid of namespacePids(ns)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone
    }
  }
  // Its veths go with it; deleting them first frees their names at once.
  const links = spawnSync(IP, ['-n', ns, '-o', 'link', 'show', 'type', 'veth'], { encoding: 'utf8', timeout: IP_TIMEOUT_MS });
  for (const m of (links.stdout ?? '').matchAll(/^\d+: ([^@:\s]+)/gm)) spawnSync(IP, ['-n', ns, 'link', 'del', m[1]], { timeout: IP_TIMEOUT_MS });
  spawnSync(IP, ['netns', 'del', ns], { timeout: IP_TIMEOUT_MS });
  live.delete(ns);
}

/** Whether this machine lets the tests make network namespaces and veth
 * pairs; `reason` says why not. */
export function netnsSupport(): { ok: boolean; reason: string } {
  if (process.platform !== 'linux') return { ok: false, reason: 'network namespaces are Linux only' };
  if (process.getuid?.() !== 0) return { ok: false, reason: 'not root: ip netns needs CAP_SYS_ADMIN' };
  if (IP === 'ip') return { ok: false, reason: 'ip (iproute2) is not installed' };
  const ns = `fz${process.pid}probe`;
  const add = spawnSync(IP, ['netns', 'add', ns], { encoding: 'utf8', timeout: IP_TIMEOUT_MS });
  if (add.status !== 0) return { ok: false, reason: `ip netns add failed: ${(add.stderr || add.error?.message || '').trim()}` };
  try {
    const veth = spawnSync(IP, ['-n', ns, 'link', 'add', `${ns}0`, 'type', 'veth', 'peer', 'name', `${ns}1`], { encoding: 'utf8', timeout: IP_TIMEOUT_MS });
    if (veth.status !== 0) return { ok: false, reason: `ip link add type veth failed: ${(veth.stderr || '').trim()}` };
    return { ok: true, reason: '' };
  } finally {
    removeNamespace(ns);
  }
}

export interface VethEnd {
  ns: string;
  dev: string;
  /** Its IPv4 address (a /30 with the other end). */
  ip: string;
}

/** One test's namespaces and veth pairs. */
export class Netns {
  readonly namespaces: string[] = [];

  /** A new namespace with `lo` up; its name ends in `tag`. */
  add(tag: string): string {
    counter += 1;
    const ns = `fz${process.pid}${counter}${tag}`;
    ip(['netns', 'add', ns]);
    live.add(ns);
    this.namespaces.push(ns);
    ip(['-n', ns, 'link', 'set', 'lo', 'up']);
    return ns;
  }

  /** A veth pair between namespaces `a` and `b`, both ends up, addressed
   * 10.77.`subnet`.1 (in a) and .2 (in b). */
  veth(a: string, b: string, subnet: number): [VethEnd, VethEnd] {
    counter += 1;
    const ends: [VethEnd, VethEnd] = [
      { ns: a, dev: `fzv${process.pid}${counter}a`, ip: `10.77.${subnet}.1` },
      { ns: b, dev: `fzv${process.pid}${counter}b`, ip: `10.77.${subnet}.2` },
    ];
    for (const e of ends) if (e.dev.length > 15) throw new Error(`veth name ${e.dev} is over 15 characters`);
    ip(['link', 'add', ends[0].dev, 'netns', a, 'type', 'veth', 'peer', 'name', ends[1].dev, 'netns', b]);
    for (const e of ends) {
      ip(['-n', e.ns, 'addr', 'add', `${e.ip}/30`, 'dev', e.dev]);
      ip(['-n', e.ns, 'link', 'set', e.dev, 'up']);
    }
    return ends;
  }

  /** `ip link set DEV up|down` inside the end's namespace. */
  set(end: VethEnd, state: 'up' | 'down'): void {
    ip(['-n', end.ns, 'link', 'set', end.dev, state]);
  }

  /** The wrapper that runs a command inside `ns`, tied to the test process
   * (setpriv's pdeathsig survives ip's exec; neither forks, so the pid is
   * the command's own). */
  exec(ns: string): string[] {
    const setpriv = which('setpriv');
    return [...(setpriv ? [setpriv, '--pdeathsig', 'KILL'] : []), IP, 'netns', 'exec', ns];
  }

  /** Removes every namespace (and, with them, the veths), killing what still runs inside. */
  cleanup(): void {
    for (const ns of this.namespaces.splice(0)) removeNamespace(ns);
  }
}
