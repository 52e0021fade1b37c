// One test VM: a QEMU process booting the famez guest kernel and initramfs,
// running one command in a chroot of the host and powering off. Its console
// is read line by line (see console.ts); `exited` resolves with the
// command's exit status as /init reported it.
import '../dispose.js';
import { spawn, type ChildProcess } from 'node:child_process';
import { EventEmitter } from 'node:events';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { createInterface } from 'node:readline';

import { classify, type ConsoleLine } from './console.js';
import { findExecutable, QEMU_BINARY } from './host.js';
import { buildQemuArgs, guestEnv, guestScript, type Accel, type FamDevice } from './qemu-args.js';

export interface VmOptions {
  name: string;
  /** The guest kernel (ELF or bzImage) and initramfs, see guestFiles(). */
  kernel: string;
  initrd: string;
  /** A famez server's socket for the ivshmem-doorbell device; null: none. */
  socket: string | null;
  vectors: number;
  fam?: FamDevice | null;
  /** argv of the command run in the guest. */
  command: readonly string[];
  /** Where it runs (default: this process's cwd). */
  cwd?: string;
  /** Variables besides the passed-through ones (see guestEnv). */
  env?: Readonly<Record<string, string>>;
  memory?: string;
  smp?: number;
  accel?: Accel;
  /** A folder for the VM's command script (default: a temp folder of its own, removed at exit). */
  scriptDir?: string;
  /** Powers the VM off when /init has not started by then (a KVM that
   * cannot run the guest spins for a minute before it says so). */
  bootTimeoutMs?: number;
  qemu?: string;
  extraArgs?: readonly string[];
}

export interface VmExit {
  /** The command's exit status; null when the guest never reported one. */
  status: number | null;
  qemu: { code: number | null; signal: NodeJS.Signals | null };
  /** Why there is no status, for a message. */
  reason: string | null;
}

export interface VmEvents {
  /** A line of the guest's output (the command's, or the kernel's). */
  line: [text: string];
  /** Every console line, classified. */
  console: [line: ConsoleLine];
  /** A line QEMU wrote to its stderr. */
  qemu: [text: string];
  /** /init has started. */
  init: [ms: number];
}

/** Where a VM's QEMU dies with this process, even on SIGKILL: setpriv's
 * parent-death signal (util-linux), when it is there. */
let setpriv: string | null | undefined;
const findSetpriv = () => (setpriv === undefined ? (setpriv = findExecutable('setpriv')) : setpriv);

export class Vm extends EventEmitter<VmEvents> {
  readonly name: string;
  readonly args: string[];
  readonly binary: string;
  readonly accel: Accel;
  /** The guest's output lines so far. */
  readonly lines: string[] = [];
  /** QEMU's stderr lines. */
  readonly qemuLines: string[] = [];
  readonly exited: Promise<VmExit>;
  /** ms from spawn to /init's first line; null until then. */
  bootMs: number | null = null;
  exit: VmExit | null = null;
  private readonly child: ChildProcess;
  private readonly started = Date.now();
  private status: number | null = null;
  private failure: string | null = null;
  private killed = false;
  /** What /init said (setup failures, a missing working directory). */
  readonly notes: string[] = [];
  private ownDir: string | null = null;

  constructor(o: VmOptions) {
    super();
    this.name = o.name;
    let dir = o.scriptDir;
    if (!dir) {
      dir = this.ownDir = fs.mkdtempSync(path.join(os.tmpdir(), 'famez-vm-'));
      // Also when this process exits first (its QEMU dies with it, see findSetpriv).
      process.once('exit', this.removeOwnDir);
    }
    const script = path.join(dir, `${o.name}.sh`);
    fs.writeFileSync(script, guestScript({ name: o.name, argv: o.command, cwd: o.cwd ?? process.cwd(), env: guestEnv(o.name, process.env, o.env) }));
    this.binary = o.qemu ?? QEMU_BINARY;
    this.accel = o.accel ?? 'tcg';
    this.args = buildQemuArgs({
      name: o.name,
      kernel: o.kernel,
      initrd: o.initrd,
      accel: this.accel,
      memory: o.memory ?? '512M',
      smp: o.smp ?? 1,
      socket: o.socket,
      vectors: o.vectors,
      fam: o.fam ?? null,
      script,
      cwd: o.cwd ?? process.cwd(),
      extra: o.extraArgs,
    });
    const tie = findSetpriv();
    const [cmd, argv] = tie ? [tie, ['--pdeathsig', 'SIGKILL', '--', this.binary, ...this.args]] : [this.binary, this.args];
    // Its own process group: a Ctrl-C at the terminal reaches this process,
    // which powers the VM off, not QEMU behind its back.
    this.child = spawn(cmd, argv, { stdio: ['pipe', 'pipe', 'pipe'], detached: true });
    // Typing into a VM that has just powered off: nothing to tell.
    this.child.stdin!.on('error', () => undefined);
    createInterface({ input: this.child.stdout! }).on('line', (raw) => this.onConsole(classify(raw)));
    createInterface({ input: this.child.stderr! }).on('line', (l) => {
      this.qemuLines.push(l);
      // Its answer to kill(): expected, not news.
      if (this.killed && /terminating on signal/.test(l)) return;
      this.emit('qemu', l);
      // QEMU stops the VM and waits (forever) after a KVM internal error:
      // the nested KVM here cannot run stock kernels. Nothing more will come.
      if (/^KVM internal error/.test(l) && this.failure === null) {
        this.failure = `KVM cannot run this guest (${l}); use --accel tcg`;
        this.child.kill('SIGKILL');
      }
    });
    if (o.bootTimeoutMs !== undefined) {
      const timer = setTimeout(() => {
        if (this.bootMs !== null || this.exit) return;
        this.failure = `the guest did not reach /init within ${(o.bootTimeoutMs! / 1000).toFixed(0)} s (${this.accel})`;
        this.child.kill('SIGKILL');
      }, o.bootTimeoutMs);
      this.once('init', () => clearTimeout(timer));
      this.child.once('exit', () => clearTimeout(timer));
    }
    this.exited = new Promise((resolve) => {
      let closed = false;
      let exitArgs: [number | null, NodeJS.Signals | null] | null = null;
      const finish = () => {
        if (!closed || !exitArgs || this.exit) return;
        this.exit = this.verdict(exitArgs[0], exitArgs[1]);
        this.removeOwnDir();
        process.off('exit', this.removeOwnDir);
        resolve(this.exit);
      };
      this.child.once('exit', (code, signal) => {
        exitArgs = [code, signal];
        finish();
        // A grandchild holding the pipes must not keep the verdict back.
        setTimeout(() => ((closed = true), finish()), 2_000).unref();
      });
      this.child.once('close', () => ((closed = true), finish()));
      this.child.once('error', (e) => {
        this.qemuLines.push(`cannot start ${this.binary}: ${e.message}`);
        exitArgs = [null, null];
        closed = true;
        finish();
      });
    });
  }

  private readonly removeOwnDir = () => {
    if (this.ownDir) fs.rmSync(this.ownDir, { recursive: true, force: true });
  };

  /** Types `text` into the VM's serial console: its command's stdin (a
   * terminal in the guest, which echoes unless the command turns that off). */
  write(text: string): void {
    if (!this.exit) this.child.stdin?.write(text);
  }

  /** QEMU's pid (setpriv execs it: the same process). */
  get pid(): number | undefined {
    return this.child.pid;
  }

  /** ms since the VM was started. */
  get uptimeMs(): number {
    return Date.now() - this.started;
  }

  private onConsole(line: ConsoleLine): void {
    this.emit('console', line);
    switch (line.kind) {
      case 'init':
        if (line.text) this.output(line.text);
        this.bootMs = Date.now() - this.started;
        this.emit('init', this.bootMs);
        break;
      case 'exit':
        if (line.text) this.output(line.text);
        this.status = line.status;
        break;
      case 'note':
        this.notes.push(line.text);
        this.output(`famez-vm: ${line.text}`);
        break;
      case 'output':
        // Blank lines before /init are the firmware's.
        if (line.text || this.bootMs !== null) this.output(line.text);
        break;
      case 'noise':
        break;
    }
  }

  private output(text: string): void {
    this.lines.push(text);
    this.emit('line', text);
  }

  private verdict(code: number | null, signal: NodeJS.Signals | null): VmExit {
    const qemu = { code, signal };
    if (this.status !== null) return { status: this.status, qemu, reason: null };
    if (this.failure !== null) return { status: null, qemu, reason: this.failure };
    if (this.killed) return { status: null, qemu, reason: 'powered off before its command finished' };
    const last = this.qemuLines.at(-1) ?? this.lines.at(-1) ?? '';
    const how = signal ? `was killed (${signal})` : `exited with status ${code}`;
    return { status: null, qemu, reason: `QEMU ${how} before the guest's command finished${last ? `: ${last}` : ''}` };
  }

  /** Powers the VM off: SIGTERM to QEMU, SIGKILL if it is still there
   * after `graceMs`. Resolves when it has exited. */
  async kill(graceMs = 2_000): Promise<VmExit> {
    if (!this.exit) {
      this.killed = true;
      this.child.kill('SIGTERM');
      const timer = setTimeout(() => this.child.kill('SIGKILL'), graceMs);
      await this.exited;
      clearTimeout(timer);
    }
    return this.exit!;
  }

  /** kill(), for `await using vm = bootVm(...)`. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.kill();
  }
}

/** Starts a VM (see VmOptions); it runs until its command ends or kill(). */
export function bootVm(o: VmOptions): Vm {
  return new Vm(o);
}
