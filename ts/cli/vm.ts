// `famez vm`: a fabric server (unless --socket) and N test VMs on it, each
// running one command; their consoles prefixed 'vmN| ', the first failing
// status as the exit status, everything it made removed at the end or on
// SIGINT/SIGTERM.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { UsageError } from '../args.js';
import { lineLogger, silentLogger } from '../log.js';
import { ServerError, type Server } from '../server/server.js';
import { DEFAULTS, DEFAULT_FABRIC_PEERS, formatSize, parseServeArgs } from '../server/options.js';
import { guestFiles, type GuestFiles } from '../vm/cache.js';
import { VmSetupError } from '../vm/errors.js';
import { findKernel, findQemu, findStaticBusybox, thisFamez } from '../vm/host.js';
import { DEFAULT_FAM_SIZE, VM_HELP, parseVmArgs, type VmCliOptions } from '../vm/options.js';
import { buildQemuArgs, formatCommand, guestEnv, guestScript, type Accel, type FamDevice } from '../vm/qemu-args.js';
import { bootVm, type Vm, type VmExit } from '../vm/vm.js';
import { FabricSetupError, startServe } from './start.js';

/** How long a VM's QEMU may take to connect to the server (it does so
 * before the guest runs), and the KVM probe to reach /init. */
const CONNECT_MS = 20_000;
/** KVM reaches /init in well under a second where it works; TCG in 2-5 s. */
const KVM_BOOT_MS = 10_000;

const say = (line: string) => process.stderr.write(`famez vm: ${line}\n`);
const seconds = (ms: number | null) => (ms === null ? '-' : `${(ms / 1000).toFixed(1)} s`);

/** The --fam file, created sparse at its size when missing (or grown to a
 * larger SIZE); its size, which QEMU maps as BAR2, must be a power of two. */
function famDevice(fam: NonNullable<VmCliOptions['fam']>): FamDevice {
  const file = path.resolve(fam.path);
  let size = fam.size;
  const st = fs.statSync(file, { throwIfNoEntry: false });
  if (!st) {
    size ??= DEFAULT_FAM_SIZE;
    fs.writeFileSync(file, '');
    fs.truncateSync(file, size);
  } else {
    if (!st.isFile()) throw new UsageError(`--fam ${fam.path} is not a regular file`);
    if (size === null) size = st.size;
    else if (st.size < size) fs.truncateSync(file, size);
    if (size === 0 || (size & (size - 1)) !== 0) throw new UsageError(`--fam ${fam.path} has ${size} bytes, not a power of two: give the size, e.g. --fam ${fam.path}:64M`);
  }
  return { path: file, size };
}

/** `--accel auto`: one VM with KVM and no devices must run `true`;
 * anything else (a KVM internal error, no /init in time) means TCG. The
 * verdict is kept beside the cached guest files, for this kernel, QEMU and
 * host kernel: only the first run pays for the probe. */
async function probeKvm(files: GuestFiles, qemu: string, dir: string, track: (vm: Vm) => void): Promise<{ accel: Accel; why: string }> {
  if (!fs.existsSync('/dev/kvm')) return { accel: 'tcg', why: 'no /dev/kvm' };
  const verdictFile = path.join(files.dir, 'kvm-probe.json');
  let key = '';
  try {
    const stamp = (f: string) => {
      const st = fs.statSync(f);
      return `${f}:${st.mtimeMs}:${st.size}`;
    };
    key = [stamp(files.kernel), stamp(qemu), os.release()].join('|');
    const saved = JSON.parse(fs.readFileSync(verdictFile, 'utf8')) as { key: string; accel: Accel; why: string };
    if (saved.key === key && (saved.accel === 'kvm' || saved.accel === 'tcg')) return { accel: saved.accel, why: `${saved.why} (remembered from an earlier run)` };
  } catch {
    // no verdict yet, or an unreadable one: probe
  }
  const vm = bootVm({ name: 'kvm-probe', kernel: files.kernel, initrd: files.initrd, socket: null, vectors: 1, command: ['true'], accel: 'kvm', qemu, scriptDir: dir, bootTimeoutMs: KVM_BOOT_MS });
  track(vm);
  const exit = await vm.exited;
  const verdict: { accel: Accel; why: string } =
    exit.status === 0 ? { accel: 'kvm', why: `a probe VM booted in ${seconds(vm.bootMs)}` } : { accel: 'tcg', why: `KVM did not boot a probe VM (${exit.reason ?? `status ${exit.status}`})` };
  if (key) {
    try {
      const tmp = `${verdictFile}.${process.pid}`;
      fs.writeFileSync(tmp, JSON.stringify({ key, ...verdict }));
      fs.renameSync(tmp, verdictFile);
    } catch {
      // a read-only cache: probe again next time
    }
  }
  return verdict;
}

const OWNER = 'owner.pid';

/** Removes the temporary folders of `famez vm` runs that were SIGKILLed
 * (their QEMUs died with them): those whose owner.pid names no process. */
function sweepStale(base: string): void {
  let names: string[];
  try {
    names = fs.readdirSync(base).filter((n) => n.startsWith('famez-vm-'));
  } catch {
    return;
  }
  for (const n of names) {
    const dir = path.join(base, n);
    try {
      const pid = Number(fs.readFileSync(path.join(dir, OWNER), 'utf8'));
      if (!Number.isInteger(pid) || pid <= 0) continue;
      try {
        process.kill(pid, 0);
        continue; // alive (or not ours to signal: EPERM)
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ESRCH') continue;
      }
      fs.rmSync(dir, { recursive: true, force: true });
    } catch {
      // no owner file (a library Vm's folder) or not ours: leave it
    }
  }
}

export async function runVm(argv: string[]): Promise<number> {
  let o: VmCliOptions;
  let qemu: string;
  let fam: FamDevice | null = null;
  try {
    o = parseVmArgs(argv, thisFamez());
    if (o.help) {
      process.stdout.write(VM_HELP);
      return 0;
    }
    qemu = findQemu(o.qemu);
    if (o.fam) fam = famDevice(o.fam);
  } catch (e) {
    if (e instanceof UsageError || e instanceof VmSetupError) {
      process.stderr.write(`famez vm: ${e.message}\n`);
      return 2;
    }
    throw e;
  }

  // Everything temporary in one folder (socket, VM scripts, the guest
  // files if the cache cannot be written); its path goes on the kernel
  // command line, so it must have no spaces.
  const tmpBase = /\s/.test(os.tmpdir()) ? '/tmp' : os.tmpdir();
  sweepStale(tmpBase);
  const dir = fs.mkdtempSync(path.join(tmpBase, 'famez-vm-'));
  fs.writeFileSync(path.join(dir, OWNER), String(process.pid));
  const vms: Vm[] = [];
  let server: Server | null = null;
  let stopping: NodeJS.Signals | null = null;
  const cleanup = async () => {
    await Promise.all(vms.map((vm) => vm.kill()));
    server?.close();
    server = null;
    fs.rmSync(dir, { recursive: true, force: true });
  };
  let wake: () => void = () => undefined;
  const onSignal = (signal: NodeJS.Signals) => {
    if (stopping) return;
    stopping = signal;
    say(`${signal}: powering off ${vms.filter((v) => !v.exit).length} VM(s)`);
    for (const vm of vms) void vm.kill();
    wake();
  };
  process.on('SIGINT', onSignal).on('SIGTERM', onSignal);
  try {
    let files: GuestFiles;
    try {
      const kernel = findKernel({ image: o.kernel, modules: o.modules });
      const busybox = findStaticBusybox();
      const t0 = Date.now();
      files = guestFiles(kernel, busybox, dir);
      say(`guest kernel ${kernel.version} (${kernel.image}); ${files.built ? `built in ${seconds(Date.now() - t0)}` : 'cached'} in ${files.dir}`);
      if (files.note) say(files.note);
    } catch (e) {
      if (e instanceof VmSetupError) {
        say(e.message);
        return 2;
      }
      throw e;
    }

    const socket = o.socket ? path.resolve(o.socket) : path.join(dir, 'fabric.sock');
    let vectors = o.vectors ?? DEFAULT_FABRIC_PEERS + 2;
    const command = (name: string, accel: Accel, sock = socket, script = path.join(dir, `${name}.sh`)) =>
      formatCommand(qemu, buildQemuArgs({ name, kernel: files.kernel, initrd: files.initrd, accel, memory: o.memory, smp: o.smp, socket: sock, vectors, fam, script, cwd: process.cwd() }));
    const names = Array.from({ length: o.count }, (_, i) => `vm${i + 1}`);

    if (o.print) {
      // A dry run: nothing is started, so the lines name the default socket
      // (famez serve's) and scripts a user saves where the comments say.
      const printSocket = o.socket ? socket : DEFAULTS.socket;
      if (!o.socket) process.stdout.write(`# start the fabric first: famez serve -S ${printSocket} --max-peers ${o.maxPeers ?? Math.max(DEFAULT_FABRIC_PEERS, o.count)}\n`);
      for (const name of names) {
        const script = path.join(tmpBase, `famez-${name}.sh`);
        const text = guestScript({ name, argv: o.command, cwd: process.cwd(), env: guestEnv(name, process.env, o.env) });
        process.stdout.write(`# ${name}'s command, read by its /init over 9p: save as ${script}\n${text.replace(/^/gm, '#   ').trimEnd()}\n`);
        process.stdout.write(`${command(name, o.accel === 'kvm' ? 'kvm' : 'tcg', printSocket, script)}\n`);
      }
      return 0;
    }

    let accel: Accel = o.accel === 'kvm' ? 'kvm' : 'tcg';
    if (o.accel === 'auto') {
      const probe = await probeKvm(files, qemu, dir, (vm) => vms.push(vm));
      accel = probe.accel;
      say(`accelerator ${accel}: ${probe.why}`);
    } else say(`accelerator ${accel}${accel === 'tcg' ? ' (--accel kvm or auto to try KVM)' : ''}`);
    if (stopping) return 128 + os.constants.signals[stopping as NodeJS.Signals];

    if (!o.socket) {
      const peers = o.maxPeers ?? Math.max(DEFAULT_FABRIC_PEERS, o.count);
      const so = parseServeArgs(['-S', socket, '--memfd', '-l', String(o.size), '--max-peers', String(peers)]);
      try {
        server = startServe(so, { logger: o.verbose ? lineLogger((l) => process.stderr.write(`serve| ${l}\n`), 'debug') : silentLogger }).server;
      } catch (e) {
        if (e instanceof ServerError || e instanceof FabricSetupError) {
          say(e.message);
          return 2;
        }
        throw e;
      }
      vectors = so.vectors;
      say(`fabric on ${socket} (shared memory memfd ${formatSize(so.size)}, ${peers} peers, ${vectors} vectors)`);
    } else say(`fabric on ${socket} (a running server; ${vectors} vectors)`);

    const exits: Array<Promise<VmExit>> = [];
    for (const name of names) {
      if (stopping) break;
      if (o.verbose) process.stderr.write(`${command(name, accel)}\n`);
      const joined = server ? new Promise<number | null>((resolve) => server!.once('connect', (p) => resolve(p.id))) : null;
      const vm = bootVm({ name, kernel: files.kernel, initrd: files.initrd, socket, vectors, fam, command: o.command, env: o.env, memory: o.memory, smp: o.smp, accel, qemu, scriptDir: dir, bootTimeoutMs: accel === 'kvm' ? KVM_BOOT_MS : undefined });
      vms.push(vm);
      vm.on('line', (l) => process.stdout.write(`${name}| ${l}\n`));
      vm.on('qemu', (l) => process.stderr.write(`${name}| qemu: ${l}\n`));
      if (o.verbose) {
        vm.on('console', (l) => l.kind === 'noise' && l.text && process.stderr.write(`${name}| (${l.text})\n`));
        vm.on('init', (ms) => say(`${name}: /init after ${seconds(ms)}`));
      }
      const exited = vm.exited.then((e) => {
        const how = e.status !== null ? `exited ${e.status}` : stopping ? `powered off (${stopping})` : `failed: ${e.reason}`;
        say(`${name} ${how} (boot ${seconds(vm.bootMs)}, total ${seconds(vm.uptimeMs)})`);
        return e;
      });
      exits.push(exited);
      // One at a time, so that the IDs follow the names.
      if (joined) {
        let timer: NodeJS.Timeout | undefined;
        const id = await Promise.race([
          joined,
          exited.then(() => null),
          new Promise<null>((resolve) => {
            timer = setTimeout(() => resolve(null), CONNECT_MS);
            wake = () => resolve(null);
          }),
        ]);
        clearTimeout(timer);
        if (id !== null) say(`${name} is peer ${id}`);
        else if (!stopping && !vm.exit) say(`${name} has not joined the fabric after ${seconds(CONNECT_MS)}`);
      }
    }
    // A signal kills the VMs, so their exits settle either way.
    const results = await Promise.all(exits);
    if (stopping) return 128 + os.constants.signals[stopping as NodeJS.Signals];
    const failed = results.find((e) => e.status !== 0);
    return failed === undefined ? 0 : (failed.status ?? 1);
  } finally {
    process.off('SIGINT', onSignal).off('SIGTERM', onSignal);
    await cleanup();
  }
}
