// The benchmark runner's children: every process it starts is bounded in
// time, killed on the way out (exit, SIGINT, SIGTERM), and can be pinned
// to a CPU, every thread of it (taskset -a, util-linux).
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import * as path from 'node:path';
import * as readline from 'node:readline';

import type { Vm } from '../../ts/vm/vm.js';

export const ROOT = path.resolve(__dirname, '..', '..');

export const children = new Set<ChildProcess>();
/** The guest group's VMs (QEMU also dies with this process through
 * setpriv's parent-death signal, where util-linux has it). */
export const vms = new Set<Vm>();
export function killAll(): void {
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
export class Child {
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

  /** Pins every thread of the process to `cpu`. */
  pin(cpu: number, what: string): void {
    pinProcess(this.proc.pid, cpu, what);
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
export async function runBounded(cmd: string, args: string[], ms: number, what: string): Promise<string> {
  const c = new Child(cmd, args);
  c.proc.stdin!.end();
  const t = setTimeout(() => c.proc.kill('SIGKILL'), ms);
  const code = await c.exited;
  clearTimeout(t);
  if (code !== 0) throw new Error(`${what} ${code === null ? `killed after ${ms} ms` : `exited ${code}`}: ${c.stderr.trim().slice(-400)}`);
  return c.stdout;
}

/** Pins every thread of process `pid` to `cpu` (`taskset -a -p -c`);
 * threads it starts later inherit it. */
export function pinProcess(pid: number | undefined, cpu: number, what: string): void {
  if (pid === undefined) throw new Error(`${what}: no process to pin`);
  const r = spawnSync('taskset', ['-a', '-p', '-c', String(cpu), String(pid)], { encoding: 'utf8', timeout: 10_000 });
  if (r.error || r.status !== 0) throw new Error(`taskset -a -p -c ${cpu} ${pid} (${what}): ${r.error?.message ?? r.stderr.trim()}`);
}
