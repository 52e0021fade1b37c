// Bounded waiting for tests: every wait has a deadline and says what it was
// waiting for when it gives up.
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';

export const DEFAULT_WAIT_MS = 15_000;

/** What waitFor throws at its deadline (an error thrown by the check
 * itself goes through as it is). */
export class WaitTimeout extends Error {
  override name = 'WaitTimeout';
}

/** The one poll-until helper of the tests: polls `check` (sync or async)
 * every `stepMs` until it returns a truthy value, which it resolves with, or
 * the deadline passes, then throws a WaitTimeout naming `what` (and the last
 * value seen). `what` may be a function, called only then, for a message
 * that describes the state at the deadline. */
export async function waitFor<T>(
  check: () => T | Promise<T>,
  what: string | (() => string),
  timeoutMs = DEFAULT_WAIT_MS,
  stepMs = 5,
): Promise<NonNullable<Awaited<T>>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const last = await check();
    if (last) return last as NonNullable<Awaited<T>>;
    if (Date.now() > deadline) {
      throw new WaitTimeout(`timed out after ${timeoutMs} ms waiting for ${typeof what === 'function' ? what() : what} (last: ${describe(last)})`);
    }
    await sleep(stepMs);
  }
}

/** waitFor as a yes or no: false at the deadline instead of a WaitTimeout
 * (an error from `check` still rejects). */
export function waitedFor(check: () => unknown, what: string, timeoutMs = DEFAULT_WAIT_MS, stepMs = 5): Promise<boolean> {
  return waitFor(check, what, timeoutMs, stepMs).then(
    () => true,
    (e: unknown) => {
      if (e instanceof WaitTimeout) return false;
      throw e;
    },
  );
}

function describe(v: unknown): string {
  try {
    return JSON.stringify(v) ?? String(v);
  } catch {
    return String(v);
  }
}

/** Rejects when `p` has not settled within `timeoutMs`. */
export function within<T>(p: Promise<T>, what: string | (() => string), timeoutMs = DEFAULT_WAIT_MS): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([
    p.finally(() => clearTimeout(timer)),
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new WaitTimeout(`timed out after ${timeoutMs} ms waiting for ${typeof what === 'function' ? what() : what}`)), timeoutMs);
    }),
  ]);
}

/** A fresh private directory under the system temp dir. */
export function tempDir(prefix = 'famez-test-'): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

export function removeDir(dir: string | undefined): void {
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
}

/** Number of open fds of a process (readdir's own fd included for 'self'). */
export function fdCount(pid: number | 'self' = 'self'): number {
  return fs.readdirSync(`/proc/${pid}/fd`).length;
}

/** What each fd of a process points at (socket:[], anon_inode:[eventfd],
 * a path...), inode numbers dropped, sorted: to compare before and after. */
export function fdTargets(pid: number | 'self' = 'self'): string[] {
  const out: string[] = [];
  for (const fd of fs.readdirSync(`/proc/${pid}/fd`)) {
    try {
      out.push(fs.readlinkSync(`/proc/${pid}/fd/${fd}`).replace(/\[\d+\]$/, '[]'));
    } catch {
      // closed meanwhile (readdir's own fd)
    }
  }
  return out.sort();
}

/** The difference of two fdTargets lists by kind, as "+2 socket:[], -1 ...". */
export function fdDiff(before: string[], after: string[]): string {
  const count = (xs: string[]) => xs.reduce((m, x) => m.set(x, (m.get(x) ?? 0) + 1), new Map<string, number>());
  const a = count(before);
  const b = count(after);
  const lines: string[] = [];
  for (const k of new Set([...a.keys(), ...b.keys()])) {
    const d = (b.get(k) ?? 0) - (a.get(k) ?? 0);
    if (d) lines.push(`${d > 0 ? '+' : ''}${d} ${k}`);
  }
  return lines.join(', ') || '(no difference by kind)';
}

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** Where `name` is: on `pathValue` (default PATH), else (unless `onlyPath`)
 * in /usr/bin or /usr/local/bin; null if nowhere. */
export function which(name: string, pathValue = process.env.PATH ?? '', onlyPath = false): string | null {
  for (const dir of [...pathValue.split(path.delimiter), ...(onlyPath ? [] : ['/usr/bin', '/usr/local/bin'])]) {
    if (!dir) continue;
    const candidate = path.join(dir, name);
    try {
      fs.accessSync(candidate, fs.constants.X_OK);
      return candidate;
    } catch {
      // keep looking
    }
  }
  return null;
}

export interface ProcOptions extends SpawnOptions {
  /** Runs the command under `setpriv --pdeathsig KILL` (it execs, so the
   * pid stays the command's), tying its life to the spawning thread: this
   * covers what the 'exit' hook below cannot, a worker.terminate() (ava
   * timeouts) or a SIGKILLed test process. Plain spawn without setpriv. */
  pdeathsig?: boolean;
}

/** The one place the tests spawn a child process (LineProcess.spawn and the
 * helpers that subclass LineProcess come through here): stdio all piped
 * unless told. */
export function spawnChild(cmd: string, args: string[], options: ProcOptions = {}): ChildProcess {
  const { pdeathsig, ...opts } = options;
  const setpriv = pdeathsig ? which('setpriv') : null;
  const [file, argv] = setpriv ? [setpriv, ['--pdeathsig', 'KILL', cmd, ...args]] : [cmd, args];
  return spawn(file, argv, { stdio: ['pipe', 'pipe', 'pipe'], ...opts });
}

export interface LineHooks {
  /** Called with every line of stdout and of stderr as it arrives. */
  onLine?: (line: string, from: 'stdout' | 'stderr') => void;
}

// Children still running when the test process exits are SIGKILLed (or their
// group, when detached): a child that ignores EOF on its stdin (QEMU under
// qtest) or a forgotten one would otherwise outlive the test process.
const live = new Set<LineProcess>();
process.on('exit', () => {
  for (const p of live) p.kill('SIGKILL');
});

/** The one child-process helper of the tests: a child whose stdout is kept
 * as text and as lines, and stderr as text, for assertions; bounded waits
 * for output and for its exit; stop() escalates to SIGKILL; a child spawned
 * `detached` is signalled as its whole process group. Other process helpers
 * (FamezProcess, ProbePeer, QtestMachine, ...) are built on it. */
export class LineProcess {
  readonly lines: string[] = [];
  stdout = '';
  stderr = '';
  /** Set at 'exit' (stdout may still be arriving; `exited` waits for it). */
  exit: Exit | null = null;
  /** Resolves once the child has exited and its output has been read. */
  readonly exited: Promise<Exit>;
  /** What the child is, for messages: its command line unless told. */
  readonly what: string;
  /** Signals go to the child's process group (it was spawned detached,
   * so it leads one): its own children are stopped with it. */
  readonly group: boolean;

  constructor(
    readonly child: ChildProcess,
    what?: string,
    hooks: LineHooks & { group?: boolean } = {},
  ) {
    this.what = what ?? child.spawnargs.join(' ');
    this.group = hooks.group ?? false;
    const { onLine } = hooks;
    if (child.pid !== undefined) live.add(this);
    // A dead child makes stdin writes fail with EPIPE; its exit reports that.
    child.stdin?.on('error', () => undefined);
    child.stdout?.setEncoding('utf8');
    child.stdout?.on('data', (d: string) => (this.stdout += d));
    if (child.stdout) {
      createInterface({ input: child.stdout }).on('line', (l) => {
        this.lines.push(l);
        onLine?.(l, 'stdout');
      });
    }
    child.stderr?.setEncoding('utf8');
    child.stderr?.on('data', (d: string) => (this.stderr += d));
    if (child.stderr && onLine) createInterface({ input: child.stderr }).on('line', (l) => onLine(l, 'stderr'));
    this.exited = new Promise((resolve) => {
      // 'exit' can come before the last of stdout has been read; wait for
      // 'close' (all stdio ended) too, but not forever: a daemonised
      // grandchild may hold the pipes open.
      let closed = false;
      const done = () => resolve(this.exit!);
      child.once('close', () => {
        closed = true;
        if (this.exit) done();
      });
      child.once('exit', (code, signal) => {
        this.exit = { code, signal };
        if (!this.group) live.delete(this);
        if (closed) done();
        else setTimeout(done, 2_000).unref();
      });
      child.once('error', (e) => {
        this.stderr += `spawn error: ${e.message}\n`;
        this.exit = { code: -1, signal: null };
        live.delete(this);
        done();
      });
    });
  }

  /** Spawns `cmd args` (see spawnChild; `detached: true` makes it a group
   * leader, signalled as a group). */
  static spawn(cmd: string, args: string[], options: ProcOptions = {}, hooks: LineHooks & { what?: string } = {}): LineProcess {
    return new LineProcess(spawnChild(cmd, args, options), hooks.what, { ...hooks, group: options.detached === true });
  }

  get pid(): number {
    return this.child.pid!;
  }

  /** Its output so far, for failure messages. */
  get transcript(): string {
    return `${this.what}\n--- stdout\n${this.stdout}--- stderr\n${this.stderr}`;
  }

  /** Waits for a line matching `pred` at index >= `from`; returns its index. */
  async waitLine(pred: (line: string) => boolean, what: string, from = 0, timeoutMs = DEFAULT_WAIT_MS): Promise<number> {
    return waitFor(
      () => {
        for (let i = from; i < this.lines.length; i++) if (pred(this.lines[i])) return i + 1;
        if (this.exit) throw new Error(`process exited (${describe(this.exit)}) while waiting for ${what}; stderr: ${this.stderr}`);
        return 0;
      },
      () => `${what} (stderr so far: ${this.stderr.slice(-500)})`,
      timeoutMs,
    ).then((i) => i - 1);
  }

  /** Waits until stdout (as text, partial lines too) matches `re`; fails
   * when the process exits first. */
  async waitFor(re: RegExp, timeoutMs = DEFAULT_WAIT_MS): Promise<RegExpMatchArray> {
    let exited = false;
    void this.exited.then(() => (exited = true));
    return waitFor(
      () => {
        const m = re.exec(this.stdout);
        if (m) return m;
        if (exited) throw new Error(`${this.what}: exited (${describe(this.exit)}) before printing ${re}\n${this.transcript}`);
        return null;
      },
      () => `${re} from ${this.transcript}`,
      timeoutMs,
      20,
    );
  }

  /** Waits for the process to exit (and its output to be read), failing
   * after `timeoutMs`. */
  async wait(timeoutMs = DEFAULT_WAIT_MS): Promise<Exit> {
    return within(this.exited, () => `${this.what} to exit\n${this.transcript}`, timeoutMs);
  }

  /** Sends `signal` to the child by its pid, or to its process group (a
   * group outlives its leader, so it is signalled after the leader's exit
   * too); false when there was nothing to signal. */
  kill(signal: NodeJS.Signals = 'SIGTERM'): boolean {
    if (this.child.pid === undefined) return false;
    if (this.group) {
      try {
        process.kill(-this.child.pid, signal);
        return true;
      } catch {
        live.delete(this); // the whole group is gone
        return false;
      }
    }
    return this.exit === null && this.child.kill(signal);
  }

  /** Sends `signal`, then SIGKILL if it has not exited in time; bounded.
   * A group is sent SIGKILL at the end whatever its leader did. */
  async stop(signal: NodeJS.Signals = 'SIGTERM', timeoutMs = 5_000): Promise<void> {
    if (this.exit) {
      if (this.group) this.kill('SIGKILL');
      return;
    }
    // within() clears its timer: a stopped child leaves nothing keeping the loop alive.
    const settled = (ms: number) => within(this.exited, this.what, ms).then(() => true, () => false);
    this.kill(signal);
    if (!(await settled(timeoutMs)) && !this.exit) {
      this.kill('SIGKILL');
      await settled(timeoutMs);
    }
    if (this.group) this.kill('SIGKILL');
  }
}
