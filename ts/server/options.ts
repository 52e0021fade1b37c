// `famez serve` command line: parsing and validation without I/O, so every
// flag and every refusal is unit-tested. The stock ivshmem-server's flags
// keep their stock meaning; long forms and famez's extensions sit beside them.
import { UsageError, parseFlags, type FlagSpecs } from '../args.js';
import { MAX_GENZ_PEERS } from '../genz/codes.js';
import { LOG_LEVELS, type LogLevel } from '../log.js';
import { SLOT_SIZE } from '../layout.generated.js';
import { ID_POLICIES, type IdPolicy } from '../protocol.js';

export { UsageError };

export const DEFAULTS = {
  socket: '/tmp/ivshmem_socket',
  shmName: 'ivshmem',
  size: 4 * 1024 * 1024,
  vectors: 1,
  daemonPidfile: '/var/run/ivshmem-server.pid',
  /** FAME-Z's REST port. */
  httpPort: 1991,
} as const;

/** A guest can only ring vectors 0..255 (QEMU masks the doorbell's vector). */
export const MAX_VECTORS = 256;
/** Peer IDs are 16 bits. */
export const MAX_PEERS = 65536;
/** Fabric mode: peers 1..N and the switch N+1 must all be ringable by a
 * guest, whose vectors stop at 255, and every peer has N+2 vectors. */
export const MAX_FABRIC_PEERS = 253;
export const DEFAULT_FABRIC_PEERS = 14;
/** Milliseconds between a link's heartbeats (--link-heartbeat). */
export const DEFAULT_LINK_HEARTBEAT_MS = 100;
/** FAME-Z's mailbox slot size: a fabric needs (N+2) slots. */
export { SLOT_SIZE };

export interface FabricOptions {
  /** Peers get IDs 1..nClients; the switch is nClients + 1. */
  nClients: number;
  recycle: boolean;
  pfm: boolean;
  /** Its fabric-manager role across switches (--fm; --no-pfm is none). */
  fm: 'primary' | 'secondary' | 'none';
  sid: number;
  codec: 'text' | 'genz';
  console: boolean | null;
  /** Bytes per ring channel (a power of two); null: the largest up to
   * 16 KiB that fits the shared memory. */
  ringCapacity: number | null;
  /** Links to other switches (docs/multi-host.md); null: none. */
  links: SwitchLinkOptions | null;
  /** Fabric-attached memory the switch serves (--fam FILE); null: none. */
  fam: { file: string; key: number | null } | null;
  /** --busy-poll: microseconds the switch's loop keeps polling after a
   * doorbell or a link message instead of sleeping (0: off). */
  busyPollUs: number;
}

export interface SwitchLinkOptions {
  /** --link-listen ADDR:PORT, each. */
  listen: string[];
  /** --link HOST:PORT, each. */
  connect: string[];
  /** --link-provider (default tcp). */
  provider: string;
  /** --link-heartbeat: milliseconds between heartbeats (default 100); a
   * link is down after three of them unheard. */
  heartbeatMs: number;
}

/** Links as they are before any link flag: none, tcp, 100 ms heartbeats. */
export function linkDefaults(): SwitchLinkOptions {
  return { listen: [], connect: [], provider: 'tcp', heartbeatMs: DEFAULT_LINK_HEARTBEAT_MS };
}

export type ShmKind = 'posix' | 'file' | 'memfd';

export interface HttpOptions {
  host: string;
  port: number;
  /** Given with --http: a port in use is an error, not a reason to pick another. */
  explicit: boolean;
  /** The admin token, or the file that holds it (read at start). */
  token: string | null;
  tokenFile: string | null;
}

export interface LogOptions {
  level: LogLevel | 'silent';
  format: 'pretty' | 'json';
  /** Append to this file instead of stdout (reopened on SIGHUP). */
  file: string | null;
}

export interface ServeOptions {
  socket: string;
  shm: { kind: ShmKind; name: string };
  size: number;
  vectors: number;
  maxPeers: number;
  /** Messages a slow peer may leave queued before it is disconnected (null: the server's default). */
  maxQueued: number | null;
  idPolicy: IdPolicy;
  pidfile: string | null;
  daemon: boolean;
  log: LogOptions;
  /** The HTTP API and web view; null when off. */
  http: HttpOptions | null;
  keepShm: boolean;
  mode: number | null;
  group: string | null;
  help: boolean;
  /** The FAME-Z fabric (the default); null with --silent (the stock server). */
  fabric: FabricOptions | null;
}

const UNITS: Record<string, number> = { '': 1, B: 1, K: 2 ** 10, M: 2 ** 20, G: 2 ** 30, T: 2 ** 40 };

/** 4194304 -> "4M": the largest whole unit. */
export function formatSize(n: number): string {
  for (const [u, f] of [['T', 2 ** 40], ['G', 2 ** 30], ['M', 2 ** 20], ['K', 2 ** 10]] as const) {
    if (n >= f && n % f === 0) return `${n / f}${u}`;
  }
  return String(n);
}

/** Parses "4M", "1G", "65536" (K/M/G/T are powers of 1024) and requires a
 * power of two, since QEMU maps the object as a PCI BAR. */
export function parseSize(text: string): number {
  const m = /^(\d+)\s*([bBkKmMgGtT]?)i?[bB]?$/.exec(text.trim());
  if (!m) throw new UsageError(`invalid size '${text}': use a number with an optional K, M, G or T suffix, e.g. 4M`);
  const n = Number(m[1]) * UNITS[m[2].toUpperCase()];
  if (!Number.isSafeInteger(n) || n <= 0) throw new UsageError(`invalid size '${text}': it must be between 1 and 8P`);
  const big = BigInt(n);
  if ((big & (big - 1n)) !== 0n) {
    const lower = 2 ** (big.toString(2).length - 1);
    throw new UsageError(
      `size ${text} is not a power of two (QEMU maps it as a PCI BAR); the nearest valid sizes are ${formatSize(lower)} and ${formatSize(lower * 2)}`,
    );
  }
  return n;
}

function parseInteger(flag: string, text: string, min: number, max: number, why = ''): number {
  if (!/^\d+$/.test(text)) throw new UsageError(`${flag} needs a whole number, got '${text}'`);
  const n = Number(text);
  if (n < min || n > max) throw new UsageError(`${flag} must be between ${min} and ${max}${why}, got ${n}`);
  return n;
}

/** `[HOST:]PORT` (an IPv6 host in brackets); the host defaults to 127.0.0.1. */
export function parseHostPort(text: string): { host: string; port: number } {
  const m = /^(?:(\[[0-9a-fA-F:.]+\]|[^:[\]]+):)?(\d+)$/.exec(text.trim());
  if (!m) throw new UsageError(`--http needs [HOST:]PORT, like 1991 or 127.0.0.1:1991 or [::1]:1991, got '${text}'`);
  const port = parseInteger('--http port', m[2], 0, 65535);
  const host = m[1] === undefined ? '127.0.0.1' : m[1].replace(/^\[|\]$/g, '');
  return { host, port };
}

/** A link's HOST:PORT (an IPv6 host in brackets): the host is required. */
function parseLinkAddress(flag: string, text: string, minPort: number): string {
  const m = /^(\[[0-9a-fA-F:.]+\]|[^:[\]\s]+):(\d+)$/.exec(text.trim());
  if (!m) throw new UsageError(`${flag} needs HOST:PORT, like 192.0.2.7:7000 or [::1]:7000, got '${text}'`);
  parseInteger(`${flag} port`, m[2], minPort, 65535);
  return `${m[1]}:${m[2]}`;
}

function parseMode(text: string): number {
  if (!/^0?[0-7]{3,4}$/.test(text)) throw new UsageError(`--mode needs octal permission bits like 0660, got '${text}'`);
  const mode = parseInt(text, 8);
  if (mode & 0o7000) {
    throw new UsageError(`--mode takes permission bits only, like 0660: setuid, setgid and sticky bits are refused, got '${text}'`);
  }
  return mode;
}

/** The most bytes a UNIX socket path may have (sun_path is 108 bytes with
 * its terminating NUL). */
export const MAX_SOCKET_PATH = 107;

/** The largest gid: (gid_t)-1 means "no change" to chown. */
export const MAX_GID = 2 ** 32 - 2;

/** The largest power of two one mapping can ever have on `arch`: half the
 * user address space (x64: 47 bits, arm64: 48 bits; 32-bit: 3 GiB). */
export function maxMappableSize(arch: string = process.arch): number {
  switch (arch) {
    case 'x64':
      return 2 ** 46;
    case 'arm64':
    case 'riscv64':
    case 'ppc64':
    case 's390x':
    case 'loong64':
      return 2 ** 47;
    default:
      return 2 ** 31;
  }
}

/** A POSIX shm name as given to -M (a leading slash allowed). */
function parseShmName(v: string): string {
  const name = v.replace(/^\//, '');
  if (!name || name.includes('/') || name === '.' || name === '..' || name.includes('\0')) {
    throw new UsageError(`invalid shm name '${v}': a name like 'ivshmem', without slashes`);
  }
  if (Buffer.byteLength(name) > 255) throw new UsageError(`invalid shm name: it has ${Buffer.byteLength(name)} bytes, at most 255 are allowed`);
  return name;
}

const FLAGS = {
  socket: { type: 'string', short: 'S' },
  'shm-name': { type: 'string', short: 'M' },
  'shm-dir': { type: 'string', short: 'm' },
  size: { type: 'string', short: 'l' },
  vectors: { type: 'string', short: 'n' },
  pidfile: { type: 'string', short: 'p' },
  verbose: { type: 'boolean', short: 'v' },
  foreground: { type: 'boolean', short: 'F' },
  help: { type: 'boolean', short: 'h' },
  daemon: { type: 'boolean' },
  'log-level': { type: 'string' },
  'log-format': { type: 'string' },
  'log-file': { type: 'string' },
  http: { type: 'string' },
  'no-http': { type: 'boolean' },
  'http-token': { type: 'string' },
  'http-token-file': { type: 'string' },
  'max-peers': { type: 'string' },
  'max-queued': { type: 'string' },
  'id-policy': { type: 'string' },
  'keep-shm': { type: 'boolean' },
  memfd: { type: 'boolean' },
  mode: { type: 'string' },
  group: { type: 'string' },
  silent: { type: 'boolean' },
  nClients: { type: 'string' },
  'no-recycle': { type: 'boolean' },
  'no-pfm': { type: 'boolean' },
  fm: { type: 'string' },
  sid: { type: 'string' },
  codec: { type: 'string' },
  console: { type: 'boolean' },
  'ring-capacity': { type: 'string' },
  'busy-poll': { type: 'string' },
  link: { type: 'string' },
  'link-listen': { type: 'string' },
  'link-provider': { type: 'string' },
  'link-heartbeat': { type: 'string' },
  fam: { type: 'string' },
  'fam-key': { type: 'string' },
} as const satisfies FlagSpecs;

export function parseServeArgs(argv: readonly string[]): ServeOptions {
  const o: ServeOptions = {
    socket: DEFAULTS.socket,
    shm: { kind: 'posix', name: DEFAULTS.shmName },
    size: DEFAULTS.size,
    vectors: DEFAULTS.vectors,
    maxPeers: MAX_PEERS,
    maxQueued: null,
    idPolicy: 'lowest',
    pidfile: null,
    daemon: false,
    log: { level: 'info', format: 'pretty', file: null },
    http: null,
    keepShm: false,
    mode: null,
    group: null,
    help: false,
    fabric: null,
  };
  const fabric: FabricOptions = { nClients: DEFAULT_FABRIC_PEERS, recycle: true, pfm: true, fm: 'primary', sid: 27, codec: 'text', console: null, ringCapacity: null, links: null, fam: null, busyPollUs: 0 };
  let famKey: number | null = null;
  const links = linkDefaults();
  let linkProvider = false;
  let linkHeartbeat = false;
  let silent = false;
  let idPolicy: IdPolicy | null = null;
  let maxPeers: string | null = null;
  let vectors: number | null = null;
  const fabricOnly: string[] = [];
  let fmGiven = false;
  let shmName: string | null = null;
  let shmDir: string | null = null;
  let memfd = false;
  let verbosity = 0;
  let level: LogLevel | 'silent' | null = null;
  let http: { host: string; port: number } | null = null;
  let noHttp = false;
  let token: string | null = null;
  let tokenFile: string | null = null;
  for (const { name, value } of parseFlags(argv, FLAGS)) {
    const v = value ?? '';
    switch (name) {
      case 'socket':
        if (!v) throw new UsageError('--socket needs a path');
        o.socket = v;
        break;
      case 'shm-name':
        shmName = parseShmName(v);
        break;
      case 'shm-dir':
        if (!v) throw new UsageError('--shm-dir needs a directory');
        shmDir = v;
        break;
      case 'size': {
        o.size = parseSize(v);
        const max = maxMappableSize();
        if (o.size > max) {
          throw new UsageError(`size ${v} can never be mapped on this machine (${process.arch}): at most ${formatSize(max)}`);
        }
        break;
      }
      case 'vectors':
        vectors = parseInteger('-n/--vectors', v, 1, MAX_VECTORS, ' (a guest can only ring vectors 0..255)');
        break;
      case 'pidfile':
        o.pidfile = v;
        break;
      case 'verbose':
        verbosity++;
        break;
      case 'log-level':
        if (v !== 'silent' && !LOG_LEVELS.includes(v as LogLevel)) throw new UsageError(`--log-level must be one of ${LOG_LEVELS.join(', ')} or silent, got '${v}'`);
        level = v as LogLevel | 'silent';
        break;
      case 'log-format':
        if (v !== 'pretty' && v !== 'json') throw new UsageError(`--log-format must be pretty or json, got '${v}'`);
        o.log.format = v;
        break;
      case 'log-file':
        if (!v) throw new UsageError('--log-file needs a path');
        o.log.file = v;
        break;
      case 'http':
        http = parseHostPort(v);
        break;
      case 'no-http':
        noHttp = true;
        break;
      case 'http-token':
        if (v.length < 16) throw new UsageError('--http-token needs at least 16 characters (it guards the admin actions)');
        token = v;
        break;
      case 'http-token-file':
        if (!v) throw new UsageError('--http-token-file needs a path');
        tokenFile = v;
        break;
      case 'foreground':
        o.daemon = false;
        break;
      case 'help':
        o.help = true;
        break;
      case 'daemon':
        o.daemon = true;
        break;
      case 'max-peers':
      case 'nClients':
        maxPeers = v;
        break;
      case 'silent':
        silent = true;
        break;
      case 'no-recycle':
        fabric.recycle = false;
        fabricOnly.push('--no-recycle');
        break;
      case 'no-pfm':
        if (fmGiven && fabric.fm !== 'none') throw new UsageError(`--no-pfm and --fm ${fabric.fm} contradict each other`);
        fabric.pfm = false;
        fabric.fm = 'none';
        fmGiven = true;
        fabricOnly.push('--no-pfm');
        break;
      case 'fm':
        if (v !== 'primary' && v !== 'secondary' && v !== 'none') throw new UsageError(`--fm needs primary, secondary or none, got '${v}'`);
        if (fmGiven && fabric.fm !== v) throw new UsageError(`--fm ${v} contradicts ${fabric.pfm ? `--fm ${fabric.fm}` : '--no-pfm'}`);
        fabric.fm = v;
        fabric.pfm = v !== 'none';
        fmGiven = true;
        fabricOnly.push('--fm');
        break;
      case 'sid':
        fabric.sid = parseInteger('--sid', v, 0, 65535, ' (a Gen-Z SID is 16 bits)');
        fabricOnly.push('--sid');
        break;
      case 'codec':
        if (v !== 'text' && v !== 'genz') throw new UsageError(`--codec must be text or genz, got '${v}'`);
        fabric.codec = v;
        fabricOnly.push('--codec');
        break;
      case 'console':
        fabric.console = true;
        fabricOnly.push('--console');
        break;
      case 'ring-capacity': {
        const c = parseSize(v);
        if (c < 1024 || c > 2 ** 30) throw new UsageError(`--ring-capacity must be between 1K and 1G, got ${v}`);
        fabric.ringCapacity = c;
        fabricOnly.push('--ring-capacity');
        break;
      }
      case 'busy-poll':
        fabric.busyPollUs = parseInteger('--busy-poll', v, 0, 1_000_000, ' (microseconds)');
        fabricOnly.push('--busy-poll');
        break;
      case 'link':
        links.connect.push(parseLinkAddress('--link', v, 1));
        fabricOnly.push('--link');
        break;
      case 'link-listen':
        links.listen.push(parseLinkAddress('--link-listen', v, 0));
        fabricOnly.push('--link-listen');
        break;
      case 'link-provider':
        if (!/^[a-z][a-z0-9_;]*$/.test(v)) throw new UsageError(`--link-provider needs a libfabric provider name such as tcp or verbs, got '${v}'`);
        links.provider = v;
        linkProvider = true;
        fabricOnly.push('--link-provider');
        break;
      case 'link-heartbeat':
        links.heartbeatMs = parseInteger('--link-heartbeat', v, 10, 60_000, ' (milliseconds)');
        linkHeartbeat = true;
        fabricOnly.push('--link-heartbeat');
        break;
      case 'fam':
        if (!v) throw new UsageError('--fam needs a file (famez fam create FILE SIZE makes one)');
        fabric.fam = { file: v, key: null };
        fabricOnly.push('--fam');
        break;
      case 'fam-key':
        famKey = parseInteger('--fam-key', v, 0, 0xffff_ffff, ' (a Gen-Z R-Key is 32 bits)');
        fabricOnly.push('--fam-key');
        break;
      case 'max-queued':
        o.maxQueued = parseInteger('--max-queued', v, 0, 1_000_000);
        break;
      case 'id-policy':
        if (!ID_POLICIES.includes(v as IdPolicy)) throw new UsageError(`--id-policy must be one of ${ID_POLICIES.join(', ')}, got '${v}'`);
        idPolicy = v as IdPolicy;
        break;
      case 'keep-shm':
        o.keepShm = true;
        break;
      case 'memfd':
        memfd = true;
        break;
      case 'mode':
        o.mode = parseMode(v);
        break;
      case 'group':
        if (!v) throw new UsageError('--group needs a group name or number');
        if (/^\d+$/.test(v) && Number(v) > MAX_GID) throw new UsageError(`--group ${v} is not a group id (at most ${MAX_GID})`);
        o.group = v;
        break;
    }
  }
  if (memfd && (shmDir !== null || shmName !== null)) throw new UsageError('--memfd cannot be combined with --shm-name or --shm-dir');
  if (memfd) o.shm = { kind: 'memfd', name: 'famez' };
  else if (shmDir !== null) o.shm = { kind: 'file', name: `${shmDir.replace(/\/+$/, '') || '/'}/${shmName ?? DEFAULTS.shmName}` };
  else o.shm = { kind: 'posix', name: shmName ?? DEFAULTS.shmName };
  if (o.daemon && o.pidfile === null) o.pidfile = DEFAULTS.daemonPidfile;
  // --daemon has no terminal: its log goes beside its socket unless told.
  if (o.daemon && o.log.file === null) o.log.file = `${o.socket}.log`;
  o.log.level = level ?? (verbosity >= 2 ? 'trace' : verbosity === 1 ? 'debug' : 'info');
  if (http !== null && noHttp) throw new UsageError('--http and --no-http contradict each other');
  if (token !== null && tokenFile !== null) throw new UsageError('--http-token and --http-token-file: give one of them');
  // Off by default in --silent (the stock server), on at 127.0.0.1:1991 in a fabric.
  if (http !== null || (!silent && !noHttp)) {
    o.http = { ...(http ?? { host: '127.0.0.1', port: DEFAULTS.httpPort }), explicit: http !== null, token, tokenFile };
  } else if (token !== null || tokenFile !== null) {
    throw new UsageError(`${token !== null ? '--http-token' : '--http-token-file'} needs the HTTP API, which ${noHttp ? '--no-http turns off' : '--silent leaves off: add --http PORT'}`);
  }
  if (silent) {
    if (fabricOnly.length) throw new UsageError(`${fabricOnly[0]} applies to the fabric; it cannot be combined with --silent`);
    if (maxPeers !== null) o.maxPeers = parseInteger('--max-peers', maxPeers, 1, MAX_PEERS, ' (peer IDs are 16 bits)');
    // The stock ivshmem-server's IDs: each newcomer gets the next one.
    o.idPolicy = idPolicy ?? 'monotonic';
    o.vectors = vectors ?? DEFAULTS.vectors;
    return o;
  }
  if (maxPeers !== null) {
    fabric.nClients = parseInteger('--max-peers', maxPeers, 1, MAX_FABRIC_PEERS, ' in a fabric (the switch is N+1 and guests ring vectors 0..255; use --silent for more)');
  }
  if (fabric.codec === 'genz' && fabric.nClients > MAX_GENZ_PEERS) {
    throw new UsageError(
      `--codec genz allows at most ${MAX_GENZ_PEERS} peers, got ${fabric.nClients}: Gen-Z CIDs are 12 bits and FAME-Z's CID is ID x 100 (the switch, peer N+1, needs (N+1) x 100 <= 4095)`,
    );
  }
  const needed = fabric.nClients + 2;
  if (vectors !== null && vectors !== needed) {
    throw new UsageError(
      `-n ${vectors} contradicts the fabric: with ${fabric.nClients} peers every peer has ${needed} vectors (the vector is the sender's ID); drop -n, use -n ${needed}, or --silent`,
    );
  }
  if (o.size < needed * SLOT_SIZE) {
    throw new UsageError(`size ${formatSize(o.size)} cannot hold the mailbox of ${fabric.nClients} peers (${needed} slots of ${SLOT_SIZE} bytes)`);
  }
  if (links.listen.length || links.connect.length) {
    if ((fabric.nClients + 1) * 100 > 0xfff) {
      throw new UsageError(`--link needs Gen-Z CIDs for every peer: at most ${MAX_GENZ_PEERS} peers (FAME-Z's CID is ID x 100, 12 bits), got ${fabric.nClients}`);
    }
    fabric.links = links;
  } else if (linkProvider || linkHeartbeat) {
    throw new UsageError(`${linkProvider ? '--link-provider' : '--link-heartbeat'} applies to links: add --link HOST:PORT or --link-listen ADDR:PORT`);
  }
  if (famKey !== null) {
    if (!fabric.fam) throw new UsageError('--fam-key applies to the memory --fam FILE serves');
    fabric.fam.key = famKey;
  }
  o.vectors = needed;
  o.maxPeers = fabric.nClients;
  o.idPolicy = idPolicy ?? 'lowest';
  o.fabric = fabric;
  return o;
}

export const SERVE_HELP = `Usage: famez serve [options]

A drop-in replacement for QEMU's ivshmem-server: peers (QEMU
ivshmem-doorbell devices, famez clients) connect to a UNIX socket and get
the shared memory and each other's eventfds. By default it is also a
FAME-Z fabric switch: a peer itself (ID max-peers + 1) that peers message
through mailboxes at the start of the shared memory.

Stock ivshmem-server options:
  -S, --socket PATH      UNIX socket to listen on (default ${DEFAULTS.socket})
  -M, --shm-name NAME    POSIX shared-memory object /dev/shm/NAME (default ${DEFAULTS.shmName})
  -m, --shm-dir DIR      create the shared memory as the file DIR/NAME instead
                         (for hugetlbfs mounts)
  -l, --size SIZE        shared-memory size, a power of two, with K/M/G/T
                         suffixes (default 4M)
  -n, --vectors N        interrupt vectors per peer, 1..${MAX_VECTORS} (default 1; in a
                         fabric always max-peers + 2)
  -p, --pidfile FILE     write the server's pid to FILE
                         (default ${DEFAULTS.daemonPidfile} with --daemon)
  -v, --verbose          log at debug level: every message sent, in words
                         (-vv: trace, doorbells too)
  -F, --foreground       stay in the foreground (the default; accepted for
                         compatibility)
  -h, --help             show this help
      --version          famez's version

famez options:
      --daemon           detach into the background and write the pid file;
                         logs go to --log-file (default SOCKET.log)
      --max-peers N      refuse peers beyond N (alias --nClients; fabric: 1..${MAX_FABRIC_PEERS},
                         default ${DEFAULT_FABRIC_PEERS}; --silent: default 65536)
      --max-queued N     disconnect a peer that leaves more than N messages
                         unread beyond its socket buffer and its welcome
                         and has taken none for 5 s (default 4096; a peer
                         that reads may fall 64 x N behind)
      --id-policy P      how IDs are chosen: monotonic (the next one, as the
                         stock server; the --silent default), lowest (the
                         lowest free ID; the fabric default) or random.
                         Without recycling, an ID whose departure was told to
                         a peer still connected is not given out again (QEMU
                         7.2 corrupts its heap when it is)
      --keep-shm         leave the shared memory in place at exit
      --memfd            use an anonymous memfd (nothing to clean up)
      --mode MODE        octal permissions for the shared memory and the socket
                         (default 0600, whatever the umask). The socket always
                         gets the shared memory's mode: whoever can connect is
                         handed the shared memory. No setuid, setgid or
                         sticky bits
      --group GROUP      group (name or id) for the socket and shared memory

Logging:
      --log-level L      fatal, error, warn, info (default), debug, trace or
                         silent; overrides -v
      --log-format F     pretty (one readable line an event, the default) or
                         json (one JSON object a line, pino's format)
      --log-file FILE    append the log to FILE instead of stdout; SIGHUP
                         reopens it (for logrotate)

HTTP API and web view (docs/http-api.md):
      --http [HOST:]PORT serve the API, /metrics and the web view there
                         (default in a fabric: 127.0.0.1:${DEFAULTS.httpPort}, or any free
                         port when that one is taken; off with --silent)
      --no-http          no HTTP at all
      --http-token T     the bearer token for the admin actions (at least
                         16 characters); without one they are refused (403)
      --http-token-file F  read the token from F (its first line)

Fabric (the default; FAME-Z compatible):
      --silent           be exactly the stock server: no switch, no mailbox
      --no-recycle       tell peers when a peer leaves (by default its
                         eventfds are kept for the next peer with its ID)
      --no-pfm           the switch is not the Primordial Fabric Manager
                         (the same as --fm none)
      --fm ROLE          fabric manager across linked switches: primary (the
                         default: manages from the start), secondary (takes
                         over when no manager is in charge), none
      --sid N            the fabric's SID (default 27)
      --codec C          what the switch writes in the mailbox: text (FAME-Z's
                         language, the default) or genz (peers are configured
                         by a binary Gen-Z Control Write acknowledged by a
                         Control StandaloneAck; at most ${MAX_GENZ_PEERS} peers)
      --console          a console on stdin (default when stdin is a terminal)
      --ring-capacity C  bytes per ring channel, a power of two (messages up
                         to C/2 - 8 bytes); default: up to 16K as -l allows
      --busy-poll US     after each doorbell or link message, keep polling
                         for US microseconds (0..1000000) instead of sleeping,
                         yielding the CPU between looks: can lower latency
                         (measure on your host), a CPU busy meanwhile
                         (default 0: off)

Links to switches on other hosts (docs/multi-host.md; needs libfabric:
apt-get install libfabric1). Each famez is one subnet, its SID (--sid)
unique in the fabric; a peer's global ID is SID:CID:
      --link-listen ADDR:PORT  accept other switches' links there (repeatable;
                         port 0 picks one)
      --link HOST:PORT   keep a link to the switch listening there, reconnecting
                         with backoff (repeatable)
      --link-provider P  libfabric provider: tcp (the default) or verbs
      --link-heartbeat MS  a heartbeat on each link every MS milliseconds
                         (10..60000, default 100); a link is down after
                         three unheard: raise it on hosts too loaded to
                         answer within 300 ms
      --fam FILE         serve FILE (made by famez fam create) as the switch's
                         fabric-attached memory: Core64 Read/Write from any peer
                         of the fabric, at the switch's GCID
      --fam-key K        requests must carry R-Key K (32 bits)

Files: the shared memory (-M, -m) and the pid file are created new, never
through a symlink, and locked while the server runs; one held by a running
server is refused (naming its pid), a leftover of a server that died is
replaced. A live socket (one that takes a connection) is never replaced.
At exit a name is removed only while it still is this server's file.

Exit status: 0 after SIGINT/SIGTERM; 1 when a file is in use (a live
socket, shared memory or pid file) or cannot be created; 2 for a
command-line error (nothing is created).

Signals: SIGINT and SIGTERM close every client, remove the socket (and the
shared memory unless --keep-shm) and exit 0. SIGHUP reopens the log file
when there is one (--log-file, --daemon); without one it means the
terminal is gone, and it stops the server the same way.
`;
