// Test harness: a paused TCG QEMU with an ivshmem-doorbell device, driven over the qtest text
// protocol on stdio. No guest runs; the harness programs PCI config, BARs and MSI-X itself and
// observes interrupts as MSI-X Pending Bit Array bits (kept pending by the MSI-X function mask).
import { LineProcess, waitedFor, which, within } from './wait.js';

const START_TIMEOUT_MS = 20_000;
const COMMAND_TIMEOUT_MS = 10_000;
const IVSHMEM_ID = 0x11101af4;
// Addresses outside q35's RAM, MMCONFIG, IOAPIC/HPET/LAPIC windows; BAR2 is 64-bit.
const BAR0_ADDR = 0xfe000000n;
const BAR1_ADDR = 0xfe100000n;
const BAR2_MIN_ADDR = 0x800000000n;
// Guest RAM is never touched with -S, so MSI messages released by clearPending() land here harmlessly.
const MSI_SCRATCH = 0x10000n;
// Bounds one qtest line (hex doubles the size) so each chunk gets its own command timeout.
const SHM_CHUNK = 0x10000;

export interface MachineOptions { socket: string; vectors: number; extraArgs?: string[]; log?: (line: string) => void }
export interface ExitInfo { code: number | null; signal: string | null }

// Machines not yet exited, for killAll(). QEMU ignores EOF on its qtest stdin: LineProcess's
// 'exit' hook kills what is left when the test process exits.
const machines = new Set<QtestMachine>();

export function qemuBinary(): string | null { return which('qemu-system-x86_64'); }

export async function killAll(): Promise<void> {
  await Promise.all([...machines].map((m) => m.kill()));
}

const hex = (n: bigint | number): string => `0x${n.toString(16)}`;

function parseNumber(answer: string, what: string): number {
  const value = Number(answer);
  if (!Number.isInteger(value)) throw new Error(`qtest: cannot parse answer '${answer}' to ${what}`);
  return value >>> 0;
}

function checkIndex(what: string, value: number, limit: number): void {
  if (!Number.isInteger(value) || value < 0 || value >= limit) throw new RangeError(`${what} ${value} not in 0..${limit - 1}`);
}

interface Waiter { line: string; resolve(answer: string): void; reject(err: Error): void }

export class QtestMachine {
  readonly pid: number;
  readonly exited: Promise<ExitInfo>;
  private readonly proc: LineProcess;
  private readonly log: (line: string) => void;
  private exitInfo: ExitInfo | null = null;
  private queue: Promise<unknown> = Promise.resolve();
  private waiter: Waiter | null = null;
  // Answers still owed to timed-out commands: QEMU answers in order, so they are dropped on arrival.
  private stale = 0;
  // Found by setup(): PCI slot, BAR2 base and size, PBA address, MSI-X capability offset, its
  // enabled-and-masked control dword, and the MSI-X table size.
  private readonly hw = { dev: -1, bar2: 0n, shmSize: 0, pba: 0n, msixCap: 0, msixCtl: 0, vectors: 0 };

  private constructor(binary: string, opts: MachineOptions) {
    this.log = opts.log ?? (() => undefined);
    const args = ['-M', 'q35', '-S', '-accel', 'tcg', '-qtest', 'stdio', '-qtest-log', '/dev/null', '-display', 'none',
      '-nodefaults', '-chardev', `socket,path=${opts.socket},id=ch`,
      '-device', `ivshmem-doorbell,chardev=ch,vectors=${opts.vectors}`, ...(opts.extraArgs ?? [])];
    // pdeathsig ties QEMU's life to the spawning thread (see ProcOptions); stdin's EPIPE on a
    // dead QEMU is swallowed by LineProcess, and the exit reports it.
    this.proc = LineProcess.spawn(binary, args, { pdeathsig: true }, {
      what: `qemu ${opts.socket}`,
      onLine: (line, from) => {
        if (from === 'stdout') this.onLine(line.trimEnd());
        else if (line) this.log(`qemu ${this.pid}: ${line}`);
      },
    });
    this.pid = this.proc.child.pid ?? -1;
    machines.add(this);
    // A forgotten machine must not keep the test process alive; the 'exit' hook then kills it.
    // Pending commands and kill() hold their own timers, which keep the loop alive while needed.
    const { child } = this.proc;
    child.unref();
    for (const stream of [child.stdin, child.stdout, child.stderr]) (stream as unknown as { unref?: () => void } | null)?.unref?.();
    // LineProcess's exited comes after 'close' too: by then stderr is drained, so errors quote
    // QEMU's last words.
    this.exited = this.proc.exited.then((info) => {
      this.exitInfo = info;
      machines.delete(this);
      this.log(`qemu ${this.pid} exited: code ${info.code} signal ${info.signal}`);
      const waiter = this.waiter;
      if (waiter) waiter.reject(this.exitError(`while waiting for '${waiter.line}'`));
      return info;
    });
  }

  static async start(opts: MachineOptions): Promise<QtestMachine> {
    const binary = qemuBinary();
    if (!binary) throw new Error('qemu-system-x86_64 not found in PATH');
    if (!Number.isInteger(opts.vectors) || opts.vectors < 1) throw new Error(`bad vectors: ${opts.vectors}`);
    const machine = new QtestMachine(binary, opts);
    try {
      await machine.setup();
      return machine;
    } catch (err) {
      await machine.kill();
      const msg = err instanceof Error ? err.message : String(err);
      throw new Error(`QEMU failed to start: ${msg}${msg.includes('QEMU stderr:') ? '' : machine.stderrText()}`, { cause: err });
    }
  }

  /** Size of the shared memory as BAR2 sizing reported it. */
  get bar2Size(): number { return this.hw.shmSize; }

  command(line: string): Promise<string> {
    return this.enqueue(line, COMMAND_TIMEOUT_MS);
  }

  async ivPosition(): Promise<number> {
    return parseNumber(await this.command(`readl ${hex(BAR0_ADDR + 8n)}`), 'IVPosition');
  }

  async ring(peer: number, vector: number): Promise<void> {
    checkIndex('peer', peer, 0x10000);
    checkIndex('vector', vector, 0x10000);
    await this.command(`writel ${hex(BAR0_ADDR + 12n)} ${hex(((peer << 16) | vector) >>> 0)}`);
  }

  async pending(vector: number): Promise<boolean> {
    checkIndex('vector', vector, this.hw.vectors);
    const word = parseNumber(await this.command(`readl ${hex(this.hw.pba + BigInt(4 * (vector >> 5)))}`), 'PBA');
    return ((word >>> (vector & 31)) & 1) === 1;
  }

  // QEMU reads eventfds from its main loop, so a bit appears some time after the ring.
  async waitPending(vector: number, timeoutMs = 3000): Promise<boolean> {
    return waitedFor(() => this.pending(vector), `vector ${vector} pending`, timeoutMs, 10);
  }

  // Lifting the function mask makes QEMU deliver every pending vector (an MSI write into
  // MSI_SCRATCH) and clear its PBA bit; masking again restores observation. An interrupt that
  // arrives between the two config writes is delivered rather than left pending.
  async clearPending(): Promise<void> {
    await this.configWrite(this.hw.msixCap, (this.hw.msixCtl & ~(1 << 30)) >>> 0);
    await this.configWrite(this.hw.msixCap, this.hw.msixCtl);
  }

  async readShm(offset: number, length: number): Promise<Buffer> {
    this.checkShm(offset, length);
    const parts: Buffer[] = [];
    // qtest asserts (and QEMU aborts) on a zero-length read.
    for (let done = 0; done < length; done += SHM_CHUNK) {
      const len = Math.min(SHM_CHUNK, length - done);
      const answer = await this.command(`read ${hex(this.hw.bar2 + BigInt(offset + done))} ${len}`);
      const part = Buffer.from(answer.replace(/^0x/, ''), 'hex');
      if (part.length !== len) throw new Error(`qtest read returned ${part.length} bytes, wanted ${len}`);
      parts.push(part);
    }
    return Buffer.concat(parts, length);
  }

  async writeShm(offset: number, data: Buffer): Promise<void> {
    this.checkShm(offset, data.length);
    for (let done = 0; done < data.length; done += SHM_CHUNK) {
      const part = data.subarray(done, done + SHM_CHUNK);
      await this.command(`write ${hex(this.hw.bar2 + BigInt(offset + done))} ${part.length} 0x${part.toString('hex')}`);
    }
  }

  async kill(signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    if (this.exitInfo) return;
    // A gentler signal may be ignored or slow: SIGKILL after 5 s; every wait is bounded.
    await this.proc.stop(signal, 5000);
    await within(this.exited, `qemu ${this.pid} to exit`, 5000).catch(() => undefined);
  }

  private async setup(): Promise<void> {
    // QEMU answers nothing until the server has sent version, ID and shm, so this carries the start-up bound.
    await this.enqueue('outl 0xcf8 0x80000000', START_TIMEOUT_MS);
    for (let dev = 0; dev < 32 && this.hw.dev < 0; dev++) {
      await this.command(`outl 0xcf8 ${hex((0x80000000 | (dev << 11)) >>> 0)}`);
      if (parseNumber(await this.command('inl 0xcfc'), 'PCI ID') === IVSHMEM_ID) this.hw.dev = dev;
    }
    if (this.hw.dev < 0) throw new Error('no ivshmem device (1af4:1110) on PCI bus 0');

    // BAR sizing: write all ones, read back the writable mask. BAR1 must fit below the next window.
    await this.configWrite(0x14, 0xffffffff);
    if ((~((await this.configRead(0x14)) & ~0xf) >>> 0) >= 0x100000) throw new Error('BAR1 larger than 1 MiB');
    if (((await this.configRead(0x18)) & 0x6) !== 0x4) throw new Error('BAR2 is not a 64-bit memory BAR');
    await this.configWrite(0x18, 0xffffffff);
    await this.configWrite(0x1c, 0xffffffff);
    const mask = (BigInt(await this.configRead(0x1c)) << 32n) | BigInt(((await this.configRead(0x18)) & ~0xf) >>> 0);
    const size = ((~mask) & 0xffffffffffffffffn) + 1n;
    this.hw.shmSize = Number(size);
    this.hw.bar2 = size > BAR2_MIN_ADDR ? size : BAR2_MIN_ADDR; // BARs must be naturally aligned
    await this.configWrite(0x10, Number(BAR0_ADDR));
    await this.configWrite(0x14, Number(BAR1_ADDR));
    await this.configWrite(0x18, Number(this.hw.bar2 & 0xffffffffn));
    await this.configWrite(0x1c, Number(this.hw.bar2 >> 32n));
    await this.configWrite(0x04, 0x6);

    let ptr = (await this.configRead(0x34)) & 0xfc;
    for (let hops = 0; ptr !== 0 && hops < 48 && !this.hw.msixCap; hops++) {
      const header = await this.configRead(ptr);
      if ((header & 0xff) === 0x11) this.hw.msixCap = ptr;
      else ptr = (header >>> 8) & 0xfc;
    }
    if (!this.hw.msixCap) throw new Error('ivshmem device has no MSI-X capability');
    const header = await this.configRead(this.hw.msixCap);
    this.hw.vectors = ((header >>> 16) & 0x7ff) + 1;
    const locate = (reg: number): bigint => {
      const base = [BAR0_ADDR, BAR1_ADDR, this.hw.bar2][reg & 7];
      if (base === undefined) throw new Error(`MSI-X structure in unexpected BAR ${reg & 7}`);
      return base + BigInt((reg & ~7) >>> 0);
    };
    const tableAddr = locate(await this.configRead(this.hw.msixCap + 4));
    this.hw.pba = locate(await this.configRead(this.hw.msixCap + 8));
    // Enable + function mask: incoming interrupts now stay pending in the PBA.
    this.hw.msixCtl = (header | (0xc000 << 16)) >>> 0;
    await this.configWrite(this.hw.msixCap, this.hw.msixCtl);
    // Unmask each entry and aim it at scratch RAM, so clearPending() only needs the function mask.
    // Entry layout: address low/high, data, vector control (0 = unmasked); data tags the vector.
    for (let v = 0; v < this.hw.vectors; v++) {
      const entry = Buffer.alloc(16);
      entry.writeUInt32LE(Number(MSI_SCRATCH) + 4 * v, 0);
      entry.writeUInt32LE(0xfa0e0000 + v, 8);
      await this.command(`write ${hex(tableAddr + BigInt(16 * v))} 16 0x${entry.toString('hex')}`);
    }
  }

  private async configRead(offset: number): Promise<number> {
    await this.command(`outl 0xcf8 ${hex((0x80000000 | (this.hw.dev << 11) | (offset & 0xfc)) >>> 0)}`);
    return parseNumber(await this.command('inl 0xcfc'), `config ${hex(offset)}`);
  }

  private async configWrite(offset: number, value: number): Promise<void> {
    await this.command(`outl 0xcf8 ${hex((0x80000000 | (this.hw.dev << 11) | (offset & 0xfc)) >>> 0)}`);
    await this.command(`outl 0xcfc ${hex(value >>> 0)}`);
  }

  private checkShm(offset: number, length: number): void {
    if (!Number.isInteger(offset) || !Number.isInteger(length) || offset < 0 || length < 0 || offset + length > this.bar2Size) {
      throw new RangeError(`shm range ${offset}+${length} outside BAR2 (${this.bar2Size} bytes)`);
    }
  }

  private enqueue(line: string, timeoutMs: number): Promise<string> {
    const run = (): Promise<string> => this.exchange(line, timeoutMs);
    const result = this.queue.then(run, run);
    this.queue = result.catch(() => undefined);
    return result;
  }

  private exchange(line: string, timeoutMs: number): Promise<string> {
    if (line.includes('\n')) return Promise.reject(new Error('qtest command must be a single line'));
    if (this.exitInfo) return Promise.reject(this.exitError(`before '${line}'`));
    return new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiter = null;
        this.stale++;
        reject(new Error(`QEMU ${this.pid} gave no answer to '${line}' within ${timeoutMs} ms${this.stderrText()}`));
      }, timeoutMs);
      this.waiter = {
        line,
        resolve: (answer) => {
          clearTimeout(timer);
          this.waiter = null;
          if (answer === 'OK') resolve('');
          else if (answer.startsWith('OK ')) resolve(answer.slice(3));
          else reject(new Error(`qtest '${line}' failed: ${answer}`));
        },
        reject: (err) => { clearTimeout(timer); this.waiter = null; reject(err); },
      };
      this.proc.child.stdin!.write(`${line}\n`);
    });
  }

  private onLine(line: string): void {
    if (line.startsWith('IRQ')) return; // asynchronous, not an answer
    if (this.stale > 0) { this.stale--; return; }
    if (this.waiter) this.waiter.resolve(line);
    else this.log(`qemu ${this.pid}: unexpected qtest line '${line}'`);
  }

  private exitError(when: string): Error {
    const { code, signal } = this.exitInfo ?? { code: null, signal: null };
    return new Error(`QEMU ${this.pid} exited (code ${code}, signal ${signal}) ${when}${this.stderrText()}`);
  }

  private stderrText(): string {
    const text = this.proc.stderr.slice(-4096).trim();
    return text ? `\nQEMU stderr:\n${text}` : '';
  }
}
