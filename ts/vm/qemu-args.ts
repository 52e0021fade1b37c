// The QEMU command line of one test VM, and the per-VM script its /init
// runs. Pure: every choice here is unit-tested, and `famez vm --print`
// shows the same lines for reuse with real disk images.
import { qemuArgs as doorbellArgs, plainQemuArgs, shellQuote } from '../stanza.js';

export type Accel = 'tcg' | 'kvm';

export interface FamDevice {
  /** The backing file (FAME's plain ivshmem setup: BAR2 = this file). */
  path: string;
  size: number;
}

export interface QemuConfig {
  name: string;
  /** The uncompressed kernel ELF (booted through PVH) or a bzImage. */
  kernel: string;
  initrd: string;
  accel: Accel;
  /** QEMU's -m, e.g. "512M". */
  memory: string;
  smp: number;
  /** The famez server's socket; null: no doorbell device. */
  socket: string | null;
  vectors: number;
  fam: FamDevice | null;
  /** The per-VM script on the host (see guestScript), named on the kernel command line. */
  script: string | null;
  /** Where the command runs (its folder is bound in when under /tmp or /run). */
  cwd?: string;
  /** Extra words for the kernel command line. */
  append?: readonly string[];
  /** The host folder the guest mounts as its root (default /). */
  hostRoot?: string;
  /** Extra QEMU arguments, last. */
  extra?: readonly string[];
}

/** The kernel command line: serial console, no reboot on panic (with
 * -no-reboot QEMU exits), the IOMMU VFIO needs, and the VM's name and script. */
export function kernelCommandLine(c: Pick<QemuConfig, 'name' | 'script' | 'append' | 'cwd'>): string {
  // no_timer_check: on a loaded host a TCG guest can miss the kernel's
  // early check that the IO-APIC timer ticks, and panic in its first second.
  const words = ['console=ttyS0', 'panic=-1', 'no_timer_check', 'intel_iommu=on', 'quiet', `famez_name=${c.name}`];
  if (c.script !== null) words.push(`famez_script=${c.script}`);
  // The command's folder, which /init binds in when it is under the guest's
  // own /tmp or /run (a path with spaces cannot go on the command line).
  if (c.cwd && !/[\s"']/.test(c.cwd)) words.push(`famez_cwd=${c.cwd}`);
  return [...words, ...(c.append ?? [])].join(' ');
}

/** The arguments after qemu-system-x86_64. The emulated IOMMU
 * (intel-iommu, intremap) is there so the guest can bind the ivshmem device
 * to vfio-pci; with KVM it needs kernel-irqchip=split. */
export function buildQemuArgs(c: QemuConfig): string[] {
  for (const [what, value] of [['name', c.name], ['script path', c.script ?? '']]) {
    if (/[\s"']/.test(value)) throw new Error(`the VM's ${what} '${value}' must not contain spaces or quotes (it goes on the kernel command line)`);
  }
  const args = [
    '-name', c.name,
    '-machine', c.accel === 'kvm' ? 'q35,kernel-irqchip=split' : 'q35',
    '-accel', c.accel,
    // TCG keeps QEMU's default CPU (qemu64): -cpu max doubles Node.js's
    // start-up in the guest (V8 picks code paths TCG emulates slowly).
    ...(c.accel === 'kvm' ? ['-cpu', 'host'] : []),
    '-device', 'intel-iommu,intremap=on',
    '-m', c.memory,
    // maxcpus 2 even for one vCPU: TCG compiles guest code for parallel
    // execution only when the machine may have more than one CPU, and
    // otherwise drops the guest's memory barriers, which two VMs sharing
    // BAR2 (two host processes) need: a ring's doorbell rule then loses
    // wake-ups (docs/performance.md, the guest group).
    '-smp', `${c.smp},maxcpus=${Math.max(2, c.smp)}`,
    '-nographic', '-no-reboot', '-nic', 'none',
    '-kernel', c.kernel,
    '-initrd', c.initrd,
    '-append', kernelCommandLine(c),
    '-virtfs', `local,path=${c.hostRoot ?? '/'},mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap`,
  ];
  if (c.socket !== null) args.push(...doorbellArgs({ socket: c.socket, vectors: c.vectors, id: 'fz' }));
  if (c.fam) {
    // The very arguments `famez stanza --plain` prints.
    args.push(...plainQemuArgs({ path: c.fam.path, size: c.fam.size, id: 'fam' }));
  }
  args.push(...(c.extra ?? []));
  return args;
}

/** A command line a shell can run again, one option per line. */
export function formatCommand(binary: string, args: readonly string[]): string {
  const words: string[] = [shellQuote(binary)];
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    const next = args[i + 1];
    if (a.startsWith('-') && next !== undefined && !next.startsWith('-')) {
      words.push(`${a} ${shellQuote(next)}`);
      i++;
    } else words.push(shellQuote(a));
  }
  return words.join(' \\\n    ');
}

/** Host variables a guest command gets (everything else starts empty). */
export const PASSED_ENV = ['PATH', 'HOME', 'USER', 'LOGNAME', 'LANG', 'LC_ALL', 'TZ', 'TERM'] as const;

export interface GuestCommand {
  name: string;
  argv: readonly string[];
  /** The host's working directory: the command runs there in the guest. */
  cwd: string;
  env: Readonly<Record<string, string>>;
}

/** The script /init copies from the host and runs in the chroot with the
 * host's /bin/sh: into the working directory (or / if the guest has no
 * such folder: /tmp is the guest's own), then the command with only `env`. */
export function guestScript(c: GuestCommand): string {
  if (c.argv.length === 0) throw new Error('a VM needs a command to run');
  const q = shellQuote;
  const env = Object.entries(c.env).map(([k, v]) => q(`${k}=${v}`));
  return [
    `# famez vm: the command of ${c.name}, run by its /init in a chroot of the host`,
    `cd ${q(c.cwd)} 2>/dev/null || { echo ${q(`famez-vm: ${c.cwd} is not in the guest; running in /`)}; cd /; }`,
    `exec /usr/bin/env -i ${[...env, ...c.argv.map(q)].join(' ')}`,
    '',
  ].join('\n');
}

/** The guest environment: the host's PASSED_ENV variables, then FAMEZ_VM
 * (the VM's name) and `extra` (--env). */
export function guestEnv(name: string, host: NodeJS.ProcessEnv, extra: Readonly<Record<string, string>> = {}): Record<string, string> {
  const env: Record<string, string> = {};
  for (const k of PASSED_ENV) if (host[k] !== undefined) env[k] = host[k]!;
  env.PATH ??= '/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin';
  env.FAMEZ_VM = name;
  return { ...env, ...extra };
}
