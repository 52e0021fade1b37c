// `famez vm` command line: parsing and validation without I/O.
import { UsageError, parseFlags } from '../args.js';
import { DEFAULTS, DEFAULT_FABRIC_PEERS, MAX_FABRIC_PEERS, MAX_VECTORS, formatSize, parseSize } from '../server/options.js';

/** The famez command a VM runs when no command follows `--`: `famez guest`
 * joins the fabric from inside the guest. Change it here. */
export const DEFAULT_GUEST_COMMAND: readonly string[] = ['guest', '--ping-peers'];

export const DEFAULT_FAM_SIZE = 64 * 2 ** 20;

export type AccelChoice = 'tcg' | 'kvm' | 'auto';

export interface VmCliOptions {
  count: number;
  /** A running server's socket; null: start one on a temporary socket. */
  socket: string | null;
  /** Vectors of each doorbell device; null: the started server's (or, with
   * --socket, a default fabric's). */
  vectors: number | null;
  /** The started server's shared-memory size and fabric size. */
  size: number;
  maxPeers: number | null;
  kernel: string | null;
  modules: string | null;
  fam: { path: string; size: number | null } | null;
  memory: string;
  smp: number;
  accel: AccelChoice;
  print: boolean;
  verbose: boolean;
  env: Record<string, string>;
  help: boolean;
  /** The QEMU program (default qemu-system-x86_64 on PATH). */
  qemu: string;
  command: string[];
}

function integer(flag: string, v: string, min: number, max: number): number {
  if (!/^\d+$/.test(v) || Number(v) < min || Number(v) > max) throw new UsageError(`${flag} must be between ${min} and ${max}, got '${v}'`);
  return Number(v);
}

/** `FILE` or `FILE:SIZE` (the size a power of two, as QEMU maps it as a BAR). */
export function parseFam(v: string): { path: string; size: number | null } {
  const m = /^(.+?)(?::(\d+[bBkKmMgGtT]?))?$/.exec(v);
  if (!m || !m[1]) throw new UsageError(`--fam needs FILE or FILE:SIZE, got '${v}'`);
  return { path: m[1], size: m[2] === undefined ? null : parseSize(m[2]) };
}

/** `famez` is the argv prefix of the default command (the CLI passes thisFamez()). */
export function parseVmArgs(argv: readonly string[], famez: readonly string[] = ['famez']): VmCliOptions {
  const dash = argv.indexOf('--');
  let flags = dash < 0 ? argv : argv.slice(0, dash);
  // `famez vm 2`: the count may come first, without -n.
  const count = flags.length > 0 && /^\d+$/.test(flags[0]) ? integer('the VM count', flags[0], 1, MAX_FABRIC_PEERS) : null;
  if (count !== null) flags = flags.slice(1);
  const o: VmCliOptions = {
    count: count ?? 1,
    socket: null,
    vectors: null,
    size: DEFAULTS.size,
    maxPeers: null,
    kernel: null,
    modules: null,
    fam: null,
    memory: '512M',
    smp: 1,
    accel: 'auto',
    print: false,
    verbose: false,
    env: {},
    help: false,
    qemu: 'qemu-system-x86_64',
    command: dash < 0 ? [...famez, ...DEFAULT_GUEST_COMMAND] : argv.slice(dash + 1),
  };
  for (const { name, value } of parseFlags(flags, {
    count: { type: 'string', short: 'n' },
    socket: { type: 'string', short: 'S' },
    vectors: { type: 'string' },
    size: { type: 'string', short: 'l' },
    'max-peers': { type: 'string' },
    kernel: { type: 'string' },
    modules: { type: 'string' },
    fam: { type: 'string' },
    memory: { type: 'string', short: 'm' },
    smp: { type: 'string' },
    accel: { type: 'string' },
    env: { type: 'string', short: 'e' },
    print: { type: 'boolean' },
    verbose: { type: 'boolean', short: 'v' },
    qemu: { type: 'string' },
    help: { type: 'boolean', short: 'h' },
  })) {
    const v = value ?? '';
    switch (name) {
      case 'count':
        o.count = integer('-n/--count', v, 1, MAX_FABRIC_PEERS);
        break;
      case 'socket':
        if (!v) throw new UsageError('--socket needs a path');
        o.socket = v;
        break;
      case 'vectors':
        o.vectors = integer('--vectors', v, 1, MAX_VECTORS);
        break;
      case 'size':
        o.size = parseSize(v);
        break;
      case 'max-peers':
        o.maxPeers = integer('--max-peers', v, 1, MAX_FABRIC_PEERS);
        break;
      case 'kernel':
        o.kernel = v;
        break;
      case 'modules':
        o.modules = v;
        break;
      case 'fam':
        o.fam = parseFam(v);
        break;
      case 'memory':
        if (!/^\d+[MG]?$/i.test(v)) throw new UsageError(`--memory takes a size like 512M or 2G, got '${v}'`);
        o.memory = v.toUpperCase();
        break;
      case 'smp':
        o.smp = integer('--smp', v, 1, 64);
        break;
      case 'accel':
        if (v !== 'tcg' && v !== 'kvm' && v !== 'auto') throw new UsageError(`--accel must be tcg, kvm or auto, got '${v}'`);
        o.accel = v;
        break;
      case 'env': {
        const eq = v.indexOf('=');
        if (eq <= 0 || !/^[A-Za-z_]\w*$/.test(v.slice(0, eq))) throw new UsageError(`--env needs NAME=VALUE, got '${v}'`);
        o.env[v.slice(0, eq)] = v.slice(eq + 1);
        break;
      }
      case 'qemu':
        if (!v) throw new UsageError('--qemu needs a program');
        o.qemu = v;
        break;
      case 'print':
        o.print = true;
        break;
      case 'verbose':
        o.verbose = true;
        break;
      case 'help':
        o.help = true;
        break;
    }
  }
  if (o.command.length === 0) throw new UsageError("nothing to run after '--'");
  if (o.socket !== null && o.maxPeers !== null) throw new UsageError('--max-peers sizes the server famez vm starts; with --socket the running server decides');
  if (o.socket === null && o.vectors !== null) throw new UsageError('--vectors is for --socket: the server famez vm starts decides the vectors');
  const peers = o.maxPeers ?? Math.max(DEFAULT_FABRIC_PEERS, o.count);
  if (o.socket === null && o.count > peers) throw new UsageError(`-n ${o.count} VMs do not fit a fabric of --max-peers ${peers}`);
  return o;
}

export const VM_HELP = `Usage: famez vm [N] [options] [-- COMMAND [ARG...]]

Boots N small test VMs on a famez fabric, each running COMMAND (default:
famez ${DEFAULT_GUEST_COMMAND.join(' ')}, with this famez) as root in the host's own file system (mounted read-only
over 9p, with a fresh /tmp, /dev and /proc) in the current directory, then
powers them off. No disk image: the guest is the host's kernel (or the
newest /boot/vmlinuz-* with modules), booted directly, and a small
initramfs, both built once and cached in ~/.cache/famez/vm.

Each VM's console comes out prefixed 'vmN| '; famez vm's own lines go to
stderr. The exit status is 0 when every command exited 0, else the first
non-zero one (by VM), 2 for a usage or setup error.

The fabric:
  -n, --count N          boot N VMs, vm1..vmN (default 1); they join in order,
                         so vmK gets peer ID K on a fresh server
  -S, --socket PATH      use the famez server running on PATH instead of
                         starting one on a temporary socket
      --vectors N        the doorbell device's vectors with --socket (default
                         ${DEFAULT_FABRIC_PEERS + 2}, a default fabric's: max-peers + 2)
  -l, --size SIZE        shared memory of the started server (default ${formatSize(DEFAULTS.size)})
      --max-peers N      fabric size of the started server (default max(${DEFAULT_FABRIC_PEERS}, N))
      --fam FILE[:SIZE]  add FAME's plain ivshmem device (ivshmem-plain) backed
                         by FILE, shared by every VM; created sparse with SIZE
                         if missing (default ${formatSize(DEFAULT_FAM_SIZE)}), else its own size

The VMs:
      --kernel PATH      the guest kernel (bzImage or vmlinux); its modules are
                         /lib/modules/VER from the name vmlinuz-VER
      --modules DIR      the kernel's modules folder
  -m, --memory SIZE      guest RAM (default 512M)
      --smp N            guest CPUs (default 1)
      --accel A          auto (the default: KVM when a probe VM boots with it,
                         remembered per kernel and QEMU, else TCG), tcg or kvm.
                         Nested KVM without VT-x cannot run stock kernels;
                         famez vm stops such a VM and says so
      --qemu PROGRAM     the QEMU to run (default qemu-system-x86_64 on PATH)
  -e, --env NAME=VALUE   set a variable for COMMAND (besides PATH, HOME, USER,
                         LANG, LC_ALL, TZ, TERM from here, and FAMEZ_VM=vmN)

Output:
      --print            print each VM's QEMU command line and exit
  -v, --verbose          print them at start too, the server's log, QEMU's
                         stderr, firmware lines and boot times
  -h, --help             show this help
      --version          famez's version

Signals: SIGINT and SIGTERM power every VM off, stop the server famez vm
started and remove its temporary files.
`;
