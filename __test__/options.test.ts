// `famez serve` argument parsing: stock ivshmem-server flags in every value
// form, famez's extensions, sizes, and every refusal.
import test from 'ava';

import { DEFAULTS, MAX_GID, MAX_PEERS, MAX_VECTORS, SERVE_HELP, UsageError, maxMappableSize, parseServeArgs, parseSize, type ServeOptions } from '../ts/server/options.js';
import { parseFlags } from '../ts/args.js';

// The stock server's flags are tested in --silent mode, where famez is
// exactly the stock ivshmem-server; the fabric (the default) is tested below.
const stock = (argv: string[]): ServeOptions => parseServeArgs(['--silent', ...argv]);

const MiB = 2 ** 20;
const GiB = 2 ** 30;

// The stock defaults of every field this file knows; fields added later keep
// whatever stock([]) gives them (checked with t.like below).
const stockDefaults = {
  socket: '/tmp/ivshmem_socket',
  shm: { kind: 'posix', name: 'ivshmem' },
  size: 4 * MiB,
  vectors: 1,
  maxPeers: 65536,
  idPolicy: 'monotonic',
  pidfile: null,
  daemon: false,
  log: { level: 'info', format: 'pretty', file: null },
  http: null,
  keepShm: false,
  mode: null,
  group: null,
  help: false,
};
const VERBOSE = { level: 'debug', format: 'pretty', file: null } as const;
const defaults: ServeOptions = { ...stock([]), ...stockDefaults } as ServeOptions;

function usage(t: import('ava').ExecutionContext, argv: string[], message: RegExp): void {
  const err = t.throws(() => stock(argv), { instanceOf: UsageError }, argv.join(' '));
  if (err) {
    t.regex(err.message, message, argv.join(' '));
    t.is(err.name, 'UsageError');
  }
}

// ---- defaults --------------------------------------------------------------

test('--silent alone gives the stock defaults', (t) => {
  t.like(stock([]), stockDefaults);
  t.is(DEFAULTS.socket, '/tmp/ivshmem_socket');
  t.is(DEFAULTS.shmName, 'ivshmem');
  t.is(DEFAULTS.size, 4 * MiB);
  t.is(DEFAULTS.vectors, 1);
  t.is(DEFAULTS.daemonPidfile, '/var/run/ivshmem-server.pid');
  t.is(MAX_VECTORS, 256);
  t.is(MAX_PEERS, 65536);
});

// ---- every stock flag, short and long, every value form --------------------

const valueFlags: Array<{ short: string; long: string; value: string; patch: Partial<ServeOptions> }> = [
  { short: 'S', long: 'socket', value: '/run/x.sock', patch: { socket: '/run/x.sock' } },
  { short: 'M', long: 'shm-name', value: 'foo', patch: { shm: { kind: 'posix', name: 'foo' } } },
  { short: 'm', long: 'shm-dir', value: '/dev/hugepages', patch: { shm: { kind: 'file', name: '/dev/hugepages/ivshmem' } } },
  { short: 'l', long: 'size', value: '4M', patch: { size: 4 * MiB } },
  { short: 'l', long: 'size', value: '1G', patch: { size: GiB } },
  { short: 'n', long: 'vectors', value: '8', patch: { vectors: 8 } },
  { short: 'p', long: 'pidfile', value: '/tmp/p.pid', patch: { pidfile: '/tmp/p.pid' } },
];

for (const f of valueFlags) {
  const forms = [[`-${f.short}`, f.value], [`-${f.short}${f.value}`], [`--${f.long}=${f.value}`], [`--${f.long}`, f.value]];
  test(`-${f.short}/--${f.long} ${f.value} in all four value forms`, (t) => {
    // The flag sets its field and nothing else changes.
    for (const argv of forms) t.deepEqual(stock(argv), { ...defaults, ...f.patch }, argv.join(' '));
  });
}

test('boolean stock flags: -v/--verbose, -F/--foreground, -h/--help', (t) => {
  t.is(stock(['-v']).log.level, 'debug');
  t.is(stock(['--verbose']).log.level, 'debug');
  t.false(stock(['-F']).daemon);
  t.false(stock(['--foreground']).daemon);
  t.deepEqual(stock(['-F']), defaults, '-F changes nothing: foreground is the default');
  t.true(stock(['-h']).help);
  t.true(stock(['--help']).help);
  t.true(SERVE_HELP.includes('-S, --socket'));
});

test('grouped short flags: -vF, -Fv, a value flag last in a group takes the rest or the next argument', (t) => {
  for (const g of ['-vF', '-Fv']) {
    const o = stock([g]);
    t.is(o.log.level, 'debug', g);
    t.false(o.daemon, g);
  }
  t.deepEqual(stock(['-vFS', '/s']), { ...defaults, log: VERBOSE, socket: '/s' });
  t.deepEqual(stock(['-vFS/s']), { ...defaults, log: VERBOSE, socket: '/s' });
  t.deepEqual(stock(['-vn4']), { ...defaults, log: VERBOSE, vectors: 4 });
  t.deepEqual(stock(['-hv']), { ...defaults, log: VERBOSE, help: true });
});

test('a full stock command line', (t) => {
  t.deepEqual(stock(['-F', '-v', '-S', '/tmp/sock', '-M', 'shm0', '-l', '16M', '-n', '4', '-p', '/tmp/pid']), {
    ...defaults,
    log: VERBOSE,
    socket: '/tmp/sock',
    shm: { kind: 'posix', name: 'shm0' },
    size: 16 * MiB,
    vectors: 4,
    pidfile: '/tmp/pid',
  });
});

test('a repeated flag: the last one wins', (t) => {
  t.is(stock(['-n', '2', '--vectors=3']).vectors, 3);
  t.is(stock(['-S', '/a', '-S', '/b']).socket, '/b');
});

// ---- shared memory location ------------------------------------------------

test('-m DIR with -M NAME (either order) gives the file DIR/NAME; trailing slashes are dropped', (t) => {
  t.deepEqual(stock(['-m', '/dev/hugepages', '-M', 'big']).shm, { kind: 'file', name: '/dev/hugepages/big' });
  t.deepEqual(stock(['-M', 'big', '-m', '/dev/hugepages/']).shm, { kind: 'file', name: '/dev/hugepages/big' });
  t.deepEqual(stock(['-m', '/mnt//']).shm, { kind: 'file', name: '/mnt/ivshmem' });
  t.deepEqual(stock(['-m', 'rel']).shm, { kind: 'file', name: 'rel/ivshmem' });
});

test('-M accepts a leading slash (POSIX style) and refuses other slashes or an empty name', (t) => {
  t.deepEqual(stock(['-M', '/ivs']).shm, { kind: 'posix', name: 'ivs' });
  usage(t, ['-M', 'a/b'], /invalid shm name 'a\/b'/);
  usage(t, ['-M', '//x'], /invalid shm name/);
  usage(t, ['--shm-name='], /invalid shm name ''/);
});

test('--memfd gives an anonymous memfd and conflicts with -M and -m', (t) => {
  t.deepEqual(stock(['--memfd']).shm, { kind: 'memfd', name: 'famez' });
  for (const argv of [
    ['--memfd', '-M', 'x'],
    ['-M', 'x', '--memfd'],
    ['--memfd', '-m', '/tmp'],
    ['--shm-dir=/tmp', '--memfd'],
    ['--memfd', '-M', 'x', '-m', '/tmp'],
  ]) {
    usage(t, argv, /--memfd cannot be combined with --shm-name or --shm-dir/);
  }
  usage(t, ['--memfd=yes'], /--memfd takes no value/);
});

// ---- sizes -----------------------------------------------------------------

test('parseSize: K/M/G/T are powers of 1024, any case, with optional i/B', (t) => {
  const cases: Array<[string, number]> = [
    ['1', 1],
    ['65536', 65536],
    ['1K', 1024],
    ['1k', 1024],
    ['64K', 64 * 1024],
    ['4M', 4 * MiB],
    ['4m', 4 * MiB],
    ['4MB', 4 * MiB],
    ['4MiB', 4 * MiB],
    ['4Mi', 4 * MiB],
    ['1G', GiB],
    ['1g', GiB],
    ['2G', 2 * GiB],
    ['1T', 2 ** 40],
    ['1t', 2 ** 40],
    [' 8M ', 8 * MiB],
    ['8 M', 8 * MiB],
    ['4096T', 2 ** 52],
  ];
  for (const [text, n] of cases) t.is(parseSize(text), n, text);
});

test('sizes past 2 and 4 GiB are fine (the stock server fails at 2 GiB)', (t) => {
  t.is(parseSize('4G'), 4 * GiB);
  t.is(parseSize('8G'), 8 * GiB);
  t.is(parseSize('16384M'), 16 * GiB);
  t.is(parseSize(String(2 ** 33)), 2 ** 33);
  t.is(stock(['-l', '64G']).size, 64 * GiB);
});

test('non-powers of two are refused with the nearest valid sizes', (t) => {
  const cases: Array<[string, string, string]> = [
    ['3M', '2M', '4M'],
    ['5000', '4K', '8K'],
    ['3', '2', '4'],
    ['1536K', '1M', '2M'],
    ['3G', '2G', '4G'],
    ['6G', '4G', '8G'],
    ['1023', '512', '1K'],
    ['1025', '1K', '2K'],
    ['3T', '2T', '4T'],
  ];
  for (const [text, lo, hi] of cases) {
    const err = t.throws(() => parseSize(text), { instanceOf: UsageError }, text);
    t.true(err?.message.includes(`size ${text} is not a power of two`), err?.message);
    t.true(err?.message.endsWith(`the nearest valid sizes are ${lo} and ${hi}`), `${text}: ${err?.message}`);
  }
  usage(t, ['-l', '3M'], /nearest valid sizes are 2M and 4M/);
});

test('malformed or out-of-range sizes are refused', (t) => {
  for (const text of ['', 'M', '-1', '-4M', '1.5M', '4X', '4P', '0x100', '4 MB MB', 'four']) {
    const err = t.throws(() => parseSize(text), { instanceOf: UsageError }, JSON.stringify(text));
    t.regex(err?.message ?? '', /invalid size/, JSON.stringify(text));
  }
  for (const text of ['0', '0K', '8192T', '99999999999999999999']) {
    const err = t.throws(() => parseSize(text), { instanceOf: UsageError }, text);
    t.regex(err?.message ?? '', /between 1 and 8P/, text);
  }
});

// ---- vectors, peers, policies, mode, group ----------------------------------

test('vectors: 1..256 accepted; 0, 257 and non-numbers refused', (t) => {
  t.is(stock(['-n', '1']).vectors, 1);
  t.is(stock(['-n', '64']).vectors, 64);
  t.is(stock(['-n', '256']).vectors, 256);
  usage(t, ['-n', '0'], /-n\/--vectors must be between 1 and 256 \(a guest can only ring vectors 0\.\.255\), got 0/);
  usage(t, ['-n', '257'], /between 1 and 256.*got 257/);
  usage(t, ['-n', '100000'], /got 100000/);
  usage(t, ['-n', 'x'], /needs a whole number, got 'x'/);
  usage(t, ['-n', '-1'], /needs a whole number, got '-1'/);
  usage(t, ['-n', '2.5'], /needs a whole number/);
  usage(t, ['--vectors='], /needs a whole number, got ''/);
});

test('--max-peers: 1..65536', (t) => {
  t.is(stock(['--max-peers', '1']).maxPeers, 1);
  t.is(stock(['--max-peers=65536']).maxPeers, 65536);
  usage(t, ['--max-peers', '0'], /--max-peers must be between 1 and 65536/);
  usage(t, ['--max-peers', '65537'], /between 1 and 65536.*got 65537/);
});

test('--id-policy: lowest, monotonic, random; anything else refused', (t) => {
  for (const p of ['lowest', 'monotonic', 'random'] as const) {
    t.is(stock(['--id-policy', p]).idPolicy, p);
    t.is(stock([`--id-policy=${p}`]).idPolicy, p);
  }
  usage(t, ['--id-policy', 'highest'], /--id-policy must be one of lowest, monotonic, random, got 'highest'/);
  usage(t, ['--id-policy', 'Lowest'], /must be one of/);
});

test('--mode is octal, with or without a leading 0, 3 or 4 digits', (t) => {
  t.is(stock(['--mode', '0660']).mode, 0o660);
  t.is(stock(['--mode', '660']).mode, 0o660);
  t.is(stock(['--mode=600']).mode, 0o600);
  t.is(stock(['--mode', '0770']).mode, 0o770);
  for (const bad of ['0999', '66', '777777', 'rw', '0o660', '']) usage(t, ['--mode', bad], /--mode needs octal permission bits/);
});

test('--mode refuses setuid, setgid and sticky bits (the socket and shm get plain permission bits)', (t) => {
  for (const bad of ['2770', '02770', '4755', '1777', '7777']) {
    usage(t, ['--mode', bad], /--mode takes permission bits only.*setuid, setgid and sticky bits are refused/);
  }
  t.is(stock(['--mode', '0777']).mode, 0o777);
});

test('a group id past the largest gid is a usage error, not a run-time failure', (t) => {
  usage(t, ['--group', '99999999999'], /--group 99999999999 is not a group id/);
  usage(t, ['--group', String(MAX_GID + 1)], /is not a group id/);
  t.is(stock(['--group', String(MAX_GID)]).group, String(MAX_GID));
});

test('-M / and other names that are not a POSIX shm name are usage errors', (t) => {
  for (const bad of ['/', '//', '', '.', '..', '/..', 'a/b', 'x'.repeat(256)]) usage(t, ['-M', bad], /invalid shm name/);
  t.deepEqual(stock(['-M', 'x'.repeat(255)]).shm, { kind: 'posix', name: 'x'.repeat(255) });
});

test('a size that can never be mapped on this arch is a usage error at parse time', (t) => {
  t.is(maxMappableSize('x64'), 2 ** 46);
  t.is(maxMappableSize('arm64'), 2 ** 47);
  t.is(maxMappableSize('ia32'), 2 ** 31);
  usage(t, ['-l', '4096T'], /size 4096T can never be mapped on this machine/);
  const max = maxMappableSize();
  t.is(stock(['-l', String(max)]).size, max);
  usage(t, ['-l', String(max * 2)], /can never be mapped/);
});

test('--group keeps the name; an empty group is refused', (t) => {
  t.is(stock(['--group', 'kvm']).group, 'kvm');
  t.is(stock(['--group=36']).group, '36');
  usage(t, ['--group='], /--group needs a group name or number/);
});

test('--max-queued: 0..1000000, default null (the server decides)', (t) => {
  t.is(stock([]).maxQueued, null);
  t.is(stock(['--max-queued', '0']).maxQueued, 0);
  t.is(stock(['--max-queued=1000000']).maxQueued, 1_000_000);
  usage(t, ['--max-queued', '1000001'], /--max-queued must be between 0 and 1000000/);
  usage(t, ['--max-queued', 'x'], /--max-queued needs a whole number/);
});

test('--keep-shm', (t) => {
  t.true(stock(['--keep-shm']).keepShm);
});

test('--socket with an empty path is refused', (t) => {
  usage(t, ['--socket='], /--socket needs a path/);
  usage(t, ['-S', ''], /--socket needs a path/);
});

// ---- daemon and pid file ----------------------------------------------------

test('--daemon defaults the pid file to /var/run/ivshmem-server.pid; -p overrides; -F undoes --daemon', (t) => {
  // A daemon has no terminal: its log goes beside its socket.
  const log = { ...defaults.log, file: '/tmp/ivshmem_socket.log' };
  t.deepEqual(stock(['--daemon']), { ...defaults, daemon: true, pidfile: '/var/run/ivshmem-server.pid', log });
  t.deepEqual(stock(['--daemon', '-p', '/tmp/x.pid']), { ...defaults, daemon: true, pidfile: '/tmp/x.pid', log });
  t.deepEqual(stock(['-p', '/tmp/x.pid', '--daemon']), { ...defaults, daemon: true, pidfile: '/tmp/x.pid', log });
  t.deepEqual(stock(['-p', '/tmp/x.pid']), { ...defaults, pidfile: '/tmp/x.pid' }, 'a pid file in the foreground');
  t.deepEqual(stock(['--daemon', '-F']), defaults, 'the last of --daemon / -F wins');
  t.is(stock(['-F', '--daemon']).daemon, true);
});

test('logging: -v is debug, -vv trace, --log-level wins over both; --log-format and --log-file', (t) => {
  t.is(stock([]).log.level, 'info');
  t.is(stock(['-v']).log.level, 'debug');
  t.is(stock(['-vv']).log.level, 'trace');
  t.is(stock(['-v', '-v']).log.level, 'trace');
  t.is(stock(['-vv', '--log-level', 'warn']).log.level, 'warn');
  t.is(stock(['--log-level', 'silent']).log.level, 'silent');
  t.is(stock(['--log-format', 'json']).log.format, 'json');
  t.is(stock(['--log-file', '/tmp/f.log']).log.file, '/tmp/f.log');
  t.is(stock(['--daemon', '--log-file', '/tmp/f.log']).log.file, '/tmp/f.log', '--log-file beats the daemon default');
  usage(t, ['--log-level', 'loud'], /--log-level must be one of fatal, error, warn, info, debug, trace or silent, got 'loud'/);
  usage(t, ['--log-format', 'xml'], /--log-format must be pretty or json/);
});

test('HTTP: on at 127.0.0.1:1991 in a fabric, off with --silent unless --http; --no-http; [HOST:]PORT forms', (t) => {
  const fabric = parseServeArgs([]);
  t.deepEqual(fabric.http, { host: '127.0.0.1', port: 1991, explicit: false, token: null, tokenFile: null });
  t.is(parseServeArgs(['--no-http']).http, null);
  t.is(stock([]).http, null);
  t.like(stock(['--http', '8080']).http, { host: '127.0.0.1', port: 8080, explicit: true });
  t.like(parseServeArgs(['--http', '0.0.0.0:80']).http, { host: '0.0.0.0', port: 80 });
  t.like(parseServeArgs(['--http', '[::1]:1991']).http, { host: '::1', port: 1991 });
  t.like(parseServeArgs(['--http=localhost:0']).http, { host: 'localhost', port: 0 });
  t.like(parseServeArgs(['--http-token', 'x'.repeat(16)]).http, { token: 'x'.repeat(16) });
  for (const bad of ['', 'x', ':80', '1991:', '70000', 'host:port', '[::1]']) {
    const e = t.throws(() => parseServeArgs(['--http', bad]), { instanceOf: UsageError }, bad);
    t.regex(e?.message ?? '', /--http/, bad);
  }
  t.throws(() => parseServeArgs(['--http', '80', '--no-http']), { message: /contradict/ });
  t.throws(() => parseServeArgs(['--http-token', 'short']), { message: /at least 16 characters/ });
  t.throws(() => parseServeArgs(['--no-http', '--http-token', 'x'.repeat(16)]), { message: /--no-http turns off/ });
  t.throws(() => stock(['--http-token', 'x'.repeat(16)]), { message: /--silent leaves off: add --http PORT/ });
  t.throws(() => parseServeArgs(['--http-token', 'x'.repeat(16), '--http-token-file', '/f']), { message: /give one of them/ });
});

// ---- refusals of the command line itself -----------------------------------

test('unknown flags, stray arguments and missing values are usage errors', (t) => {
  usage(t, ['-x'], /unknown option '-x' \(see --help\)/);
  usage(t, ['-vx'], /unknown option '-x'/);
  usage(t, ['--bogus'], /unknown option '--bogus'/);
  usage(t, ['--bogus=1'], /unknown option '--bogus'/);
  usage(t, ['--SOCKET', '/x'], /unknown option '--SOCKET'/);
  usage(t, ['serve'], /unexpected argument 'serve'/);
  usage(t, ['-'], /unexpected argument '-'/);
  usage(t, ['-S'], /-S needs a value/);
  usage(t, ['-vS'], /-S needs a value/);
  usage(t, ['--size'], /--size needs a value/);
  usage(t, ['-F', '-l'], /-l needs a value/);
  usage(t, ['--verbose=1'], /--verbose takes no value/);
  usage(t, ['--help=yes'], /--help takes no value/);
});

test('a value that looks like a flag is taken as the value', (t) => {
  t.is(stock(['-S', '-v']).socket, '-v');
  t.is(stock(['--pidfile', '--daemon']).pidfile, '--daemon');
  t.false(stock(['--pidfile', '--daemon']).daemon);
});

// ---- parseFlags (every command's parser) on its own -------------------------

const specs = {
  alpha: { type: 'string', short: 'a' },
  bravo: { type: 'boolean', short: 'b' },
  charlie: { type: 'boolean' },
  delta: { type: 'string' },
} as const;
const tokenize = (argv: string[]) => parseFlags(argv, specs).map(({ name, value }) => [name, value]);

test('parseFlags: every form maps to (long name, value), in argv order', (t) => {
  t.deepEqual(tokenize([]), []);
  t.deepEqual(tokenize(['-a', 'x', '-ay', '--alpha', 'z', '--alpha=w', '--alpha=']), [
    ['alpha', 'x'],
    ['alpha', 'y'],
    ['alpha', 'z'],
    ['alpha', 'w'],
    ['alpha', ''],
  ]);
  t.deepEqual(tokenize(['-bb', '-ba=1', '--charlie', '--delta', '-b']), [
    ['bravo', null],
    ['bravo', null],
    ['bravo', null],
    ['alpha', '=1'],
    ['charlie', null],
    ['delta', '-b'],
  ]);
  t.deepEqual(tokenize(['--alpha=a=b']), [['alpha', 'a=b']], 'only the first = splits');
});

test('parseFlags: errors', (t) => {
  t.throws(() => tokenize(['-c']), { instanceOf: UsageError, message: /unknown option '-c'/ });
  t.throws(() => tokenize(['--charlie=1']), { instanceOf: UsageError, message: /--charlie takes no value/ });
  t.throws(() => tokenize(['--delta']), { instanceOf: UsageError, message: /--delta needs a value/ });
  t.throws(() => tokenize(['-a']), { instanceOf: UsageError, message: /-a needs a value/ });
  t.throws(() => tokenize(['x']), { instanceOf: UsageError, message: /unexpected argument 'x'/ });
  t.throws(() => tokenize(['--', '-a', 'x']), { instanceOf: UsageError, message: /unknown option '--'/ });
  t.throws(() => tokenize(['--constructor']), { instanceOf: UsageError, message: /unknown option '--constructor'/ });
});

// ---- the fabric (the default) ------------------------------------------------

function fabricUsage(t: import('ava').ExecutionContext, argv: string[], message: RegExp): void {
  const err = t.throws(() => parseServeArgs(argv), { instanceOf: UsageError }, argv.join(' '));
  if (err) t.regex(err.message, message, argv.join(' '));
}

test('with no arguments famez serves the fabric: 14 peers, 16 vectors, recycle and PFM on', (t) => {
  const o = parseServeArgs([]);
  t.like(o, { socket: '/tmp/ivshmem_socket', size: 4 * MiB, vectors: 16, maxPeers: 14 });
  t.deepEqual(o.fabric, { nClients: 14, recycle: true, pfm: true, fm: 'primary', sid: 27, codec: 'text', console: null, ringCapacity: null, links: null, fam: null, busyPollUs: 0 });
});

test('fabric: --fm picks the fabric-manager role; --no-pfm is --fm none; contradictions and unknown roles are usage errors', (t) => {
  t.like(parseServeArgs(['--fm', 'secondary']).fabric, { fm: 'secondary', pfm: true });
  t.like(parseServeArgs(['--fm', 'none']).fabric, { fm: 'none', pfm: false });
  t.like(parseServeArgs(['--no-pfm']).fabric, { fm: 'none', pfm: false });
  t.like(parseServeArgs(['--no-pfm', '--fm', 'none']).fabric, { fm: 'none', pfm: false });
  fabricUsage(t, ['--fm', 'boss'], /--fm needs primary, secondary or none, got 'boss'/);
  fabricUsage(t, ['--no-pfm', '--fm', 'primary'], /--fm primary contradicts --no-pfm/);
  fabricUsage(t, ['--fm', 'secondary', '--no-pfm'], /--no-pfm and --fm secondary contradict each other/);
});

test('fabric: --link and --link-listen repeat, --link-provider picks the provider, --fam and --fam-key name the memory', (t) => {
  const o = parseServeArgs(['--link', 'hosta:7000', '--link', '[::1]:7001', '--link-listen', '0.0.0.0:0', '--link-provider', 'verbs', '--fam', '/tmp/fam', '--fam-key', '42']);
  t.deepEqual(o.fabric?.links, { listen: ['0.0.0.0:0'], connect: ['hosta:7000', '[::1]:7001'], provider: 'verbs', heartbeatMs: 100 });
  t.deepEqual(o.fabric?.fam, { file: '/tmp/fam', key: 42 });
  t.is(parseServeArgs(['--link', 'h:1', '--link-heartbeat', '1000']).fabric?.links?.heartbeatMs, 1000);
  fabricUsage(t, ['--link', 'h:1', '--link-heartbeat', '5'], /--link-heartbeat must be between 10 and 60000 \(milliseconds\)/);
  fabricUsage(t, ['--link-heartbeat', '500'], /--link-heartbeat applies to links: add --link HOST:PORT or --link-listen ADDR:PORT/);
  fabricUsage(t, ['--fam-key', '1'], /--fam-key applies to the memory --fam FILE serves/);
  fabricUsage(t, ['--fam-key', 'x', '--fam', 'f'], /--fam-key needs a whole number/);
});

test('fabric: --max-peers and --nClients set N and the vectors follow as N+2', (t) => {
  t.like(parseServeArgs(['--max-peers', '4']), { vectors: 6, maxPeers: 4, fabric: { nClients: 4 } });
  t.like(parseServeArgs(['--nClients=62']), { vectors: 64, maxPeers: 62 });
  t.like(parseServeArgs(['--max-peers', '253']), { vectors: 255 });
  t.like(parseServeArgs(['--max-peers', '4', '-n', '6']), { vectors: 6 });
});

test('fabric: a contradicting -n, more than 253 peers or a size too small for the mailbox are usage errors', (t) => {
  fabricUsage(t, ['-n', '3'], /-n 3 contradicts the fabric: with 14 peers every peer has 16 vectors/);
  fabricUsage(t, ['--max-peers', '254'], /--max-peers must be between 1 and 253/);
  fabricUsage(t, ['--max-peers', '0'], /--max-peers must be between 1 and 253/);
  fabricUsage(t, ['-l', '4K'], /size 4K cannot hold the mailbox of 14 peers \(16 slots of 512 bytes\)/);
  t.is(parseServeArgs(['-l', '8K']).size, 8192);
});

test('fabric options: --no-recycle, --no-pfm, --sid, --codec, --console; refused with --silent', (t) => {
  t.like(parseServeArgs(['--no-recycle', '--no-pfm', '--sid', '5', '--codec', 'text', '--console']).fabric, {
    recycle: false,
    pfm: false,
    sid: 5,
    codec: 'text',
    console: true,
  });
  fabricUsage(t, ['--codec', 'xml'], /--codec must be text/);
  t.is(parseServeArgs(['--codec', 'genz']).fabric?.codec, 'genz');
  t.is(parseServeArgs(['--codec', 'genz', '--max-peers', '39']).fabric?.nClients, 39);
  fabricUsage(t, ['--codec', 'genz', '--max-peers', '40'], /--codec genz allows at most 39 peers, got 40/);
  fabricUsage(t, ['--sid', '70000'], /--sid must be between 0 and 65535/);
  for (const f of [['--no-recycle'], ['--no-pfm'], ['--sid', '3'], ['--codec', 'text'], ['--console']]) {
    fabricUsage(t, ['--silent', ...f], /applies to the fabric; it cannot be combined with --silent/);
  }
  t.is(parseServeArgs(['--silent']).fabric, null);
});

test('--busy-poll: microseconds 0..1000000 (default 0, off), fabric only', (t) => {
  t.is(parseServeArgs([]).fabric?.busyPollUs, 0);
  t.is(parseServeArgs(['--busy-poll', '200']).fabric?.busyPollUs, 200);
  t.is(parseServeArgs(['--busy-poll', '0']).fabric?.busyPollUs, 0);
  fabricUsage(t, ['--busy-poll', '1000001'], /--busy-poll must be between 0 and 1000000 \(microseconds\)/);
  fabricUsage(t, ['--busy-poll', '-5'], /--busy-poll/);
  fabricUsage(t, ['--busy-poll', 'fast'], /--busy-poll needs a whole number/);
  fabricUsage(t, ['--silent', '--busy-poll', '100'], /applies to the fabric/);
});

test('--ring-capacity: a power of two from 1K to 1G, fabric only', (t) => {
  t.is(parseServeArgs(['--ring-capacity', '256K']).fabric?.ringCapacity, 256 * 1024);
  fabricUsage(t, ['--ring-capacity', '512'], /--ring-capacity must be between 1K and 1G/);
  fabricUsage(t, ['--ring-capacity', '3K'], /not a power of two/);
  fabricUsage(t, ['--silent', '--ring-capacity', '4K'], /applies to the fabric/);
});

test('--silent gives IDs as the stock server does (monotonic); the fabric gives the lowest free ID; --id-policy overrides both', (t) => {
  t.is(stock([]).idPolicy, 'monotonic');
  t.is(parseServeArgs([]).idPolicy, 'lowest');
  t.is(stock(['--id-policy', 'lowest']).idPolicy, 'lowest');
  t.is(parseServeArgs(['--id-policy', 'random']).idPolicy, 'random');
});
