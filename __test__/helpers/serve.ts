// Runs `famez serve` (and other famez commands) as real processes for tests:
// spawn, wait for output lines with bounded waits, and clean up everything a
// test created (processes, temp dirs, POSIX shm names) in afterEach.always.
import { type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { newerThanSources } from '../../ts/vm/host.js';
import { LineProcess, spawnChild, type Exit } from './wait.js';

export const ROOT = path.resolve(__dirname, '..', '..');
/** How tests run famez: the built CLI when it is newer than every source
 * (`npm test` builds first), else the sources under tsx. The built one
 * starts in a third of the time, which matters when a test file starts
 * forty servers at once on two cores. */
export const MAIN = newerThanSources(path.join(ROOT, 'dist', 'cli', 'main.js'), path.join(ROOT, 'ts')) ? ['dist/cli/main.js'] : ['--import=tsx', 'ts/cli/main.ts'];

let counter = 0;
/** A name unique to this process and call, for -M and temp dirs. */
export function uniqueName(prefix = 'famez-test'): string {
  counter += 1;
  return `${prefix}-${process.pid}-${counter}-${Math.random().toString(36).slice(2, 8)}`;
}

/** Resolves when `emitter` emits `event`, rejects after `ms`. */
export function once<T = unknown>(emitter: NodeJS.EventEmitter, event: string, ms: number, what = event): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      emitter.off(event, on);
      reject(new Error(`timed out after ${ms} ms waiting for ${what}`));
    }, ms);
    const on = (arg: T) => {
      clearTimeout(timer);
      resolve(arg);
    };
    emitter.once(event, on);
  });
}

export type { Exit };

/** A famez command run by Scratch: a LineProcess that knows its famez
 * arguments and when it has exited with its output read (exitInfo). */
export class FamezProcess extends LineProcess {
  /** Set once the process has exited and its output has been read. */
  exitInfo: Exit | null = null;

  constructor(
    child: ChildProcess,
    readonly args: string[],
  ) {
    super(child, `famez ${args.join(' ')}`);
    void this.exited.then((e) => (this.exitInfo = e));
  }

  get running(): boolean {
    return this.exitInfo === null && this.child.exitCode === null && this.child.signalCode === null;
  }
}

/** Everything one test created, cleaned up by `cleanup()`. */
export class Scratch {
  /** Stopped (SIGTERM, then SIGKILL) at cleanup: the famez commands and any
   * other LineProcess a test hands over. */
  readonly procs: LineProcess[] = [];
  readonly pids: number[] = [];
  readonly shmNames: string[] = [];
  readonly dirs: string[] = [];
  readonly closers: Array<() => void> = [];

  /** A fresh temp dir, removed at cleanup. */
  dir(): string {
    const d = fs.mkdtempSync(path.join(os.tmpdir(), 'famez-serve-cli-'));
    this.dirs.push(d);
    return d;
  }

  /** A unique POSIX shm name, unlinked at cleanup. */
  shmName(): string {
    const n = uniqueName();
    this.shmNames.push(n);
    return n;
  }

  /** Spawns `famez <args>` from the package root; with `stdin`, its stdin
   * is a pipe for commands (see type()); `env` is added to this process's
   * environment (an undefined value removes a variable). */
  famez(args: string[], opts: { stdin?: boolean; env?: NodeJS.ProcessEnv } = {}): FamezProcess {
    const env = opts.env ? { ...process.env, ...opts.env } : undefined;
    const child = spawnChild(process.execPath, [...MAIN, ...args], { cwd: ROOT, env, stdio: [opts.stdin ? 'pipe' : 'ignore', 'pipe', 'pipe'] });
    const p = new FamezProcess(child, args);
    this.procs.push(p);
    return p;
  }

  /** Spawns `famez <args>` run by `wrapper` (e.g. `['prlimit', '--as=N', '--']`
   * or `['sh', '-c', 'umask 000 && exec "$0" "$@"']`; [] for none), which
   * execs node with `nodeArgs` before famez's own; with `stdin`, its stdin
   * is a pipe (see type()); with `built`, the built dist/cli/main.js runs
   * instead of the sources under tsx. */
  famezVia(wrapper: string[], args: string[], opts: { stdin?: boolean; nodeArgs?: string[]; built?: boolean } = {}): FamezProcess {
    const cmd = [...wrapper, process.execPath, ...(opts.nodeArgs ?? []), ...(opts.built ? ['dist/cli/main.js'] : MAIN), ...args];
    const child = spawnChild(cmd[0], cmd.slice(1), { cwd: ROOT, stdio: [opts.stdin ? 'pipe' : 'ignore', 'pipe', 'pipe'] });
    const p = new FamezProcess(child, args);
    this.procs.push(p);
    return p;
  }

  /** Spawns `famez client <args>` with a stdin pipe for commands (see type()). */
  client(args: string[]): FamezProcess {
    return this.famez(['client', ...args], { stdin: true });
  }

  /** Spawns `famez serve <args>` and waits until it is serving. */
  async serve(args: string[], ms = 60_000): Promise<FamezProcess> {
    const p = this.famez(['serve', ...args]);
    await p.waitFor(/serving on /, ms);
    return p;
  }

  /** Runs `famez <args>` to completion (bounded: a loaded CI machine
   * starting 40 of these at once took 14 s each, and one went past 30 s). */
  async run(args: string[], ms = 120_000): Promise<FamezProcess & { exitInfo: Exit }> {
    const p = this.famez(args);
    await p.wait(ms);
    return p as FamezProcess & { exitInfo: Exit };
  }

  /** Registers a close function (a client, a socket) run first at cleanup. */
  track<T extends { close(): void }>(x: T): T {
    this.closers.push(() => x.close());
    return x;
  }

  async cleanup(): Promise<void> {
    for (const c of this.closers.splice(0)) {
      try {
        c();
      } catch {
        // already closed
      }
    }
    await Promise.all(this.procs.map((p) => p.stop('SIGTERM')));
    for (const pid of this.pids) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone
      }
    }
    for (const n of this.shmNames) fs.rmSync(`/dev/shm/${n}`, { force: true });
    for (const d of this.dirs) fs.rmSync(d, { recursive: true, force: true });
  }
}

/** Types one command line into a process started by Scratch.client(). */
export function type(p: FamezProcess, line: string): void {
  p.child.stdin!.write(`${line}\n`);
}

export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}
