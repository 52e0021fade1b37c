// famez vm's pure parts, without booting anything: the cpio writer (read
// back by cpio(1) where it is installed), kernel payload extraction,
// modules.dep order, the QEMU arguments, the guest script, the console
// classifier, the options, the cache of guest files, and the command's
// refusals (none of which boot a VM).
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as zlib from 'node:zlib';

import test from 'ava';

import { cacheKey, guestFiles } from '../ts/vm/cache.js';
import { thisFamez } from '../ts/vm/host.js';
import { classify } from '../ts/vm/console.js';
import { cpioArchive, parseCpio, type CpioEntry } from '../ts/vm/cpio.js';
import { elfInterpreter, findStaticBusybox, initScript, initramfsEntries, readInitramfsInputs } from '../ts/vm/initramfs.js';
import { chooseKernel, extractVmlinux, payloadOf, versionFromImageName } from '../ts/vm/kernel.js';
import { GUEST_MODULES, moduleName, parseModulesDep, resolveModules } from '../ts/vm/modules.js';
import { DEFAULT_GUEST_COMMAND, parseVmArgs } from '../ts/vm/options.js';
import { buildQemuArgs, guestEnv, guestScript, kernelCommandLine, type QemuConfig } from '../ts/vm/qemu-args.js';
import { UsageError } from '../ts/args.js';
import { Scratch } from './helpers/serve.js';
import { removeDir, tempDir } from './helpers/wait.js';

const hasCpio = spawnSync('cpio', ['--version']).status === 0;

const ENTRIES: CpioEntry[] = [
  { kind: 'dir', path: 'bin' },
  { kind: 'file', path: 'bin/hello', data: Buffer.from('#!/bin/sh\necho hi\n'), mode: 0o755 },
  { kind: 'symlink', path: 'bin/sh', target: 'hello' },
  { kind: 'file', path: 'odd', data: Buffer.from('12345') },
  { kind: 'char', path: 'console', major: 5, minor: 1 },
];

test('a cpio newc entry is its 110-byte header, the padded name and the padded data, byte for byte', (t) => {
  const buf = cpioArchive([{ kind: 'file', path: '/ab', data: Buffer.from('xyz'), mode: 0o600 }]);
  const header =
    '070701' + ['00000001', '00008180', '00000000', '00000000', '00000001', '00000000', '00000003', '00000000', '00000000', '00000000', '00000000', '00000003', '00000000'].join('');
  t.is(buf.toString('ascii', 0, 110), header);
  // 110 + 3 name bytes ("ab\0") = 113, padded to 116; 3 data bytes padded to 4.
  t.is(buf.toString('latin1', 110, 116), 'ab\0\0\0\0');
  t.is(buf.toString('latin1', 116, 120), 'xyz\0');
  t.is(buf.toString('ascii', 120, 126), '070701');
  t.is(buf.length % 4, 0);
  t.true(buf.includes('TRAILER!!!\0'));
});

test('a cpio archive reads back with every entry, mode and byte', (t) => {
  const back = parseCpio(cpioArchive(ENTRIES));
  t.deepEqual(
    back.map((e) => [e.name, e.mode.toString(8), e.data.toString()]),
    [
      ['bin', '40755', ''],
      ['bin/hello', '100755', '#!/bin/sh\necho hi\n'],
      ['bin/sh', '120777', 'hello'],
      ['odd', '100644', '12345'],
      ['console', '20600', ''],
    ],
  );
  t.deepEqual([back[4].rdevMajor, back[4].rdevMinor], [5, 1]);
});

test('a cpio archive refuses paths that climb out', (t) => {
  t.throws(() => cpioArchive([{ kind: 'dir', path: '../x' }]), { message: /invalid path/ });
});

(hasCpio ? test : test.skip)('cpio(1) lists and unpacks the archive as written', (t) => {
  const listed = spawnSync('cpio', ['-t', '--quiet'], { input: cpioArchive(ENTRIES) });
  t.is(listed.status, 0, listed.stderr.toString());
  t.deepEqual(listed.stdout.toString().trim().split('\n'), ['bin', 'bin/hello', 'bin/sh', 'odd', 'console']);
  const dir = tempDir('famez-cpio-');
  t.teardown(() => removeDir(dir));
  const files = ENTRIES.filter((e) => e.kind !== 'char');
  const out = spawnSync('cpio', ['-i', '--quiet', '--make-directories', '--no-absolute-filenames'], { input: cpioArchive(files), cwd: dir });
  t.is(out.status, 0, out.stderr.toString());
  t.is(fs.readFileSync(path.join(dir, 'bin/hello'), 'utf8'), '#!/bin/sh\necho hi\n');
  t.is(fs.statSync(path.join(dir, 'bin/hello')).mode & 0o777, 0o755);
  t.is(fs.readlinkSync(path.join(dir, 'bin/sh')), 'hello');
  t.is(fs.readFileSync(path.join(dir, 'odd'), 'utf8'), '12345');
});

/** A minimal bzImage: the boot header's fields that payloadOf reads, then
 * `payload` (plus the kernel's trailing 4-byte size) after setup. */
function fakeBzImage(payload: Buffer, { header = true } = {}): Buffer {
  const setupSects = 3;
  const pm = (setupSects + 1) * 512;
  const gap = 64;
  const img = Buffer.alloc(pm + gap + payload.length + 4 + 32);
  img[0x1f1] = setupSects;
  if (header) {
    img.write('HdrS', 0x202, 'ascii');
    img.writeUInt16LE(0x20f, 0x206);
    img.writeUInt32LE(gap, 0x248);
    img.writeUInt32LE(payload.length + 4, 0x24c);
  }
  payload.copy(img, pm + gap);
  return img;
}

const FAKE_ELF = Buffer.concat([Buffer.from([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1]), Buffer.alloc(200, 7)]);

test('the kernel payload is found from the boot header, without the trailing size', (t) => {
  const gz = zlib.gzipSync(FAKE_ELF);
  const img = fakeBzImage(gz);
  t.deepEqual(payloadOf(img), { compression: 'gzip', offset: 4 * 512 + 64, length: gz.length });
  t.deepEqual(extractVmlinux(img), FAKE_ELF);
});

test('without a boot header the payload is found by its magic, as extract-vmlinux does', (t) => {
  const img = fakeBzImage(zlib.gzipSync(FAKE_ELF), { header: false });
  t.like(payloadOf(img), { compression: 'gzip', length: null });
  t.deepEqual(extractVmlinux(img), FAKE_ELF);
});

test('an ELF kernel is used as it is; an image with no known payload is refused with a code', (t) => {
  t.is(extractVmlinux(FAKE_ELF), FAKE_ELF);
  t.throws(() => payloadOf(Buffer.alloc(4096)), { code: 'EKERNEL' } as never);
});

(spawnSync('xz', ['--version']).status === 0 ? test : test.skip)('an xz payload goes through xz(1)', (t) => {
  const xz = spawnSync('xz', ['-c', '--check=crc32'], { input: FAKE_ELF }).stdout;
  t.deepEqual(extractVmlinux(fakeBzImage(xz)), FAKE_ELF);
});

const BOOT_IMAGE = fs.existsSync('/boot') ? fs.readdirSync('/boot').find((f) => f.startsWith('vmlinuz-')) : undefined;
(BOOT_IMAGE ? test : test.skip)("the host's /boot/vmlinuz-* payload starts with its compressor's magic", (t) => {
  const img = fs.readFileSync(`/boot/${BOOT_IMAGE}`);
  const p = payloadOf(img);
  t.not(p.length, null, 'a modern bzImage names its payload in the boot header');
  t.log(`${BOOT_IMAGE}: ${p.compression} at ${p.offset}, ${p.length} bytes`);
});

// The lines of Debian 6.1's modules.dep that the guest's modules need (and a few others).
const MODULES_DEP = `kernel/fs/netfs/netfs.ko:
kernel/fs/fscache/fscache.ko: kernel/fs/netfs/netfs.ko
kernel/fs/9p/9p.ko: kernel/net/9p/9pnet.ko kernel/fs/fscache/fscache.ko kernel/fs/netfs/netfs.ko
kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
kernel/drivers/virtio/virtio_pci_legacy_dev.ko:
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_legacy_dev.ko kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/net/9p/9pnet.ko:
kernel/net/9p/9pnet_virtio.ko: kernel/net/9p/9pnet.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/char/hw_random/virtio-rng.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
`;

test('the guest modules load in modules.dep order, each after its dependencies', (t) => {
  const dep = parseModulesDep(MODULES_DEP);
  t.deepEqual(
    resolveModules(dep, GUEST_MODULES).map((m) => m.name),
    [...GUEST_MODULES],
  );
  // Asked for alone, 9p brings what it needs, deepest first.
  t.deepEqual(
    resolveModules(dep, ['9p']).map((m) => m.path),
    ['kernel/fs/netfs/netfs.ko', 'kernel/fs/fscache/fscache.ko', 'kernel/net/9p/9pnet.ko', 'kernel/fs/9p/9p.ko'],
  );
  t.is(dep.get('virtio_rng')?.path, 'kernel/drivers/char/hw_random/virtio-rng.ko');
});

test('a module neither in modules.dep nor built in is an error naming who needs it; a built-in one is skipped', (t) => {
  const dep = parseModulesDep('kernel/fs/9p/9p.ko: kernel/net/9p/9pnet.ko\n');
  t.throws(() => resolveModules(dep, ['9p']), { message: /module 9pnet \(needed by 9p\)/ });
  t.deepEqual(resolveModules(dep, ['9p'], new Set(['9pnet'])).map((m) => m.name), ['9p']);
  t.is(moduleName('kernel/x/virtio-rng.ko.zst'), 'virtio_rng');
});

test("the host's kernel is chosen when its modules are there, else the newest with modules", (t) => {
  const images = ['vmlinuz-6.9.0-1-amd64', 'vmlinuz-6.10.0-2-amd64', 'vmlinuz-6.11.0-3-amd64', 'config-6.11.0-3-amd64'];
  const withModules = (v: string) => v !== '6.11.0-3-amd64';
  t.like(chooseKernel('6.9.0-1-amd64', images, withModules), { version: '6.9.0-1-amd64', image: '/boot/vmlinuz-6.9.0-1-amd64' });
  t.like(chooseKernel('6.18.44-fc', images, withModules), { version: '6.10.0-2-amd64', modules: '/lib/modules/6.10.0-2-amd64' });
  t.is(chooseKernel('6.18.44-fc', images, () => false), null);
  t.is(versionFromImageName('/boot/vmlinuz-6.1.0-57-amd64'), '6.1.0-57-amd64');
  t.is(versionFromImageName('/tmp/kernel'), null);
});

test('a static ELF has no program interpreter; a dynamic one names it', (t) => {
  t.regex(elfInterpreter(fs.readFileSync(process.execPath)) ?? '', /ld-linux|ld-musl/);
  t.throws(() => elfInterpreter(Buffer.from('#!/bin/sh\n'.padEnd(64))), { message: /not an ELF/ });
  if (fs.existsSync('/bin/busybox')) t.log(`/bin/busybox interpreter: ${elfInterpreter(fs.readFileSync('/bin/busybox'))}`);
});

test('the initramfs holds busybox, the modules in load order and an /init that loads them in that order', (t) => {
  const entries = initramfsEntries({ busybox: Buffer.from('bb'), modules: [{ name: 'virtio_ring', data: Buffer.from('a') }, { name: '9p', data: Buffer.from('b') }] });
  const names = entries.map((e) => e.path);
  t.true(names.indexOf('bin') < names.indexOf('bin/busybox'));
  t.true(names.indexOf('lib/modules/virtio_ring.ko') < names.indexOf('lib/modules/9p.ko'));
  t.true(names.includes('dev/console'));
  const init = entries.find((e) => e.path === 'init');
  t.is(init?.kind === 'file' ? init.mode : 0, 0o755);
  t.regex(initScript(['virtio_ring', '9p']), /for m in virtio_ring 9p; do/);
  t.regex(initScript([]), /mount -t 9p -o trans=virtio,version=9p2000\.L,ro,msize=\d+,cache=loose hostroot \/host/);
  t.regex(initScript([]), /echo "famez-vm: exit \$\?"\npoweroff -f/);
});

const BASE: QemuConfig = {
  name: 'vm1',
  kernel: '/c/vmlinux',
  initrd: '/c/initramfs.cpio',
  accel: 'tcg',
  memory: '512M',
  smp: 1,
  socket: '/tmp/s.sock',
  vectors: 16,
  fam: null,
  script: '/tmp/d/vm1.sh',
};

/** The value after `flag`, for each time it appears. */
const values = (args: string[], flag: string) => args.flatMap((a, i) => (a === flag ? [args[i + 1]] : []));

test('the QEMU line: q35 with the emulated IOMMU, the virtfs root, the doorbell on the socket', (t) => {
  const args = buildQemuArgs(BASE);
  t.deepEqual(values(args, '-machine'), ['q35']);
  t.deepEqual(values(args, '-accel'), ['tcg']);
  t.deepEqual(values(args, '-device'), ['intel-iommu,intremap=on', 'ivshmem-doorbell,chardev=fz,vectors=16']);
  t.deepEqual(values(args, '-chardev'), ['socket,path=/tmp/s.sock,id=fz']);
  t.deepEqual(values(args, '-virtfs'), ['local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap']);
  t.deepEqual(values(args, '-kernel'), ['/c/vmlinux']);
  t.deepEqual(values(args, '-nic'), ['none']);
  t.true(args.includes('-nographic') && args.includes('-no-reboot'));
  t.is(values(args, '-append')[0], 'console=ttyS0 panic=-1 no_timer_check intel_iommu=on quiet famez_name=vm1 famez_script=/tmp/d/vm1.sh');
});

test('with KVM the irqchip is split (the IOMMU needs it); --fam adds the plain device; no socket, no doorbell', (t) => {
  const kvm = buildQemuArgs({ ...BASE, accel: 'kvm' });
  t.deepEqual(values(kvm, '-machine'), ['q35,kernel-irqchip=split']);
  t.deepEqual(values(kvm, '-accel'), ['kvm']);
  const fam = buildQemuArgs({ ...BASE, socket: null, fam: { path: '/f/fam', size: 1 << 20 } });
  t.deepEqual(values(fam, '-object'), ['memory-backend-file,id=fam,mem-path=/f/fam,size=1048576,share=on']);
  t.deepEqual(values(fam, '-device'), ['intel-iommu,intremap=on', 'ivshmem-plain,memdev=fam']);
  t.deepEqual(values(fam, '-chardev'), []);
  t.throws(() => buildQemuArgs({ ...BASE, script: '/tmp/a b/vm1.sh' }), { message: /must not contain spaces/ });
  t.is(kernelCommandLine({ name: 'x', script: null, append: ['loglevel=7'] }), 'console=ttyS0 panic=-1 no_timer_check intel_iommu=on quiet famez_name=x loglevel=7');
});

test('the guest script runs the command in the working directory with only the given environment', (t) => {
  const dir = tempDir('famez-guest-script-');
  t.teardown(() => removeDir(dir));
  const env = guestEnv('vm7', { PATH: process.env.PATH, HOME: '/root', SECRET: 'x' }, { GREETING: "it's" });
  t.deepEqual(Object.keys(env).sort(), ['FAMEZ_VM', 'GREETING', 'HOME', 'PATH']);
  const script = guestScript({ name: 'vm7', argv: ['sh', '-c', 'echo "$FAMEZ_VM $GREETING ${SECRET:-none}"; pwd; exit 4'], cwd: dir, env });
  fs.writeFileSync(path.join(dir, 's.sh'), script);
  const r = spawnSync('sh', [path.join(dir, 's.sh')], { env: { SECRET: 'leak' } });
  t.is(r.status, 4);
  t.deepEqual(r.stdout.toString().trim().split('\n'), ["vm7 it's none", fs.realpathSync(dir)]);
  const missing = spawnSync('sh', ['-c', guestScript({ name: 'v', argv: ['pwd'], cwd: '/no/such/dir', env: { PATH: '/usr/bin:/bin' } })]);
  t.deepEqual(missing.stdout.toString().trim().split('\n'), ['famez-vm: /no/such/dir is not in the guest; running in /', '/']);
});

test('the console: firmware noise and escapes go, the exit mark is found even after unterminated output', (t) => {
  t.deepEqual(classify('\x1bc\x1b[?7l\x1b[2J\x1b[0mSeaBIOS (version 1.16.2-debian-1.16.2-1)'), { kind: 'noise', text: 'SeaBIOS (version 1.16.2-debian-1.16.2-1)' });
  t.deepEqual(classify('Booting from ROM..famez-vm: init\r'), { kind: 'init', text: '' });
  t.deepEqual(classify('[    3.1] clocksource: x famez-vm: init'), { kind: 'init', text: '[    3.1] clocksource: x ' });
  t.deepEqual(classify('v20.20.2\r'), { kind: 'output', text: 'v20.20.2' });
  t.deepEqual(classify('famez-vm: exit 3'), { kind: 'exit', status: 3, text: '' });
  t.deepEqual(classify('no newlinefamez-vm: exit 0'), { kind: 'exit', status: 0, text: 'no newline' });
  t.deepEqual(classify('famez-vm: insmod 9p failed'), { kind: 'note', text: 'insmod 9p failed' });
  t.deepEqual(classify('[    4.478518] reboot: Power down'), { kind: 'noise', text: '[    4.478518] reboot: Power down' });
  t.deepEqual(classify('[    1.0] Kernel panic - not syncing: x'), { kind: 'output', text: '[    1.0] Kernel panic - not syncing: x' });
});

test('famez vm options: defaults, the command after --, and one-line refusals', (t) => {
  const d = parseVmArgs([]);
  t.like(d, { count: 1, socket: null, accel: 'auto', memory: '512M', fam: null });
  t.like(parseVmArgs(['2', '-v']), { count: 2, verbose: true }, '`famez vm 2`: the count may come first');
  t.like(parseVmArgs(['3', '--', 'true']), { count: 3, command: ['true'] });
  t.deepEqual(d.command, ['famez', ...DEFAULT_GUEST_COMMAND]);
  t.deepEqual(parseVmArgs([], ['/usr/bin/node', '/x/main.js']).command, ['/usr/bin/node', '/x/main.js', ...DEFAULT_GUEST_COMMAND]);
  const o = parseVmArgs(['-n', '2', '--fam', '/tmp/f:1M', '-e', 'A=b=c', '--', 'node', '--version', '--', 'x']);
  t.like(o, { count: 2, fam: { path: '/tmp/f', size: 1 << 20 }, env: { A: 'b=c' } });
  t.deepEqual(o.command, ['node', '--version', '--', 'x']);
  t.is(parseVmArgs(['--fam', '/tmp/f']).fam?.size, null);
  const refused = (argv: string[], re: RegExp) => t.throws(() => parseVmArgs(argv), { instanceOf: UsageError, message: re });
  refused(['--fam', '/tmp/f:3M'], /not a power of two/);
  refused(['-n', '0'], /between 1 and/);
  refused(['0'], /the VM count must be between 1 and/);
  refused(['--accel', 'hvf'], /tcg, kvm or auto/);
  refused(['--vectors', '4'], /--vectors is for --socket/);
  refused(['-n', '20', '--max-peers', '10'], /do not fit/);
  refused(['--'], /nothing to run/);
  refused(['node'], /unexpected argument 'node'/);
});

test('the guest files are built once, then taken from the cache until the kernel changes; no temporary file stays', (t) => {
  const dir = tempDir('famez-vm-cache-');
  t.teardown(() => removeDir(dir));
  const modules = path.join(dir, 'modules');
  fs.mkdirSync(modules);
  fs.writeFileSync(path.join(modules, 'modules.dep'), GUEST_MODULES.map((m) => `kernel/${m}.ko:`).join('\n'));
  for (const m of GUEST_MODULES) {
    fs.mkdirSync(path.join(modules, 'kernel'), { recursive: true });
    fs.writeFileSync(path.join(modules, 'kernel', `${m}.ko`), `module ${m}`);
  }
  const image = path.join(dir, 'vmlinuz-9.9.9-test');
  fs.writeFileSync(image, fakeBzImage(zlib.gzipSync(FAKE_ELF)));
  const busybox = path.join(dir, 'busybox');
  fs.writeFileSync(busybox, 'not really busybox');
  const kernel = { version: '9.9.9-test', image, modules };
  const root = path.join(dir, 'cache');
  const first = guestFiles(kernel, busybox, dir, root);
  t.like(first, { built: true, cached: true, dir: path.join(root, '9.9.9-test') });
  t.deepEqual(fs.readFileSync(first.kernel), FAKE_ELF);
  t.deepEqual(
    parseCpio(fs.readFileSync(first.initrd))
      .map((e) => e.name)
      .filter((n) => n.endsWith('.ko')),
    GUEST_MODULES.map((m) => `lib/modules/${m}.ko`),
  );
  t.like(guestFiles(kernel, busybox, dir, root), { built: false, cached: true });
  const key = cacheKey(kernel, busybox);
  fs.utimesSync(image, new Date(), new Date(Date.now() + 5_000));
  t.not(cacheKey(kernel, busybox), key);
  t.like(guestFiles(kernel, busybox, dir, root), { built: true });
  t.deepEqual(fs.readdirSync(first.dir).sort(), ['initramfs.cpio', 'key', 'vmlinux']);
});

(spawnSync('xz', ['--version']).status === 0 ? test : test.skip)('a compressed module (.ko.xz) goes into the initramfs decompressed', (t) => {
  const dir = tempDir('famez-vm-modules-');
  t.teardown(() => removeDir(dir));
  fs.mkdirSync(path.join(dir, 'kernel'));
  fs.writeFileSync(path.join(dir, 'modules.dep'), GUEST_MODULES.map((m) => `kernel/${m}.ko${m === '9p' ? '.xz' : ''}:`).join('\n'));
  for (const m of GUEST_MODULES) {
    const data = Buffer.from(`module ${m}`);
    fs.writeFileSync(path.join(dir, 'kernel', m === '9p' ? '9p.ko.xz' : `${m}.ko`), m === '9p' ? spawnSync('xz', ['-c'], { input: data }).stdout : data);
  }
  const inputs = readInitramfsInputs(process.execPath, dir);
  t.is(inputs.modules.find((m) => m.name === '9p')?.data.toString(), 'module 9p');
});

test('findStaticBusybox refuses a dynamic busybox, naming busybox-static', (t) => {
  t.throws(() => findStaticBusybox([process.execPath]), { code: 'ENOBUSYBOX', message: /is dynamically linked: apt-get install busybox-static/ } as never);
  t.throws(() => findStaticBusybox(['/no/such/busybox']), { message: /there is no busybox: apt-get install busybox-static/ });
});

test('famez vm: --help, and one-line refusals with exit 2 for a bad option, a missing QEMU, a missing kernel', async (t) => {
  const sc = new Scratch();
  t.teardown(() => sc.cleanup());
  const help = await sc.run(['vm', '--help']);
  t.is(help.exitInfo.code, 0);
  t.regex(help.stdout, /^Usage: famez vm /);
  const cases: Array<[string[], RegExp]> = [
    [['vm', '--bogus'], /^famez vm: unknown option '--bogus' \(see --help\)\n$/],
    [['vm', '--qemu', '/no/such/qemu'], /^famez vm: \/no\/such\/qemu not found: apt-get install qemu-system-x86\n$/],
    [['vm', '--qemu', '/bin/true', '--kernel', '/no/such/vmlinuz-1.0'], /famez vm: --kernel \/no\/such\/vmlinuz-1.0: no such file\n$/],
  ];
  for (const [args, re] of cases) {
    const r = await sc.run(args);
    t.is(r.exitInfo.code, 2, r.transcript);
    t.regex(r.stderr, re);
  }
});

test("the default guest command is this famez: a checkout's dist/cli/main.js only while it is newer than ts/", (t) => {
  const dir = tempDir('famez-vm-self-');
  t.teardown(() => removeDir(dir));
  for (const f of ['ts/cli/main.ts', 'ts/vm/host.ts', 'dist/cli/main.js']) {
    fs.mkdirSync(path.dirname(path.join(dir, f)), { recursive: true });
    fs.writeFileSync(path.join(dir, f), '');
  }
  const old = new Date(Date.now() - 60_000);
  for (const f of ['ts/cli/main.ts', 'ts/vm/host.ts']) fs.utimesSync(path.join(dir, f), old, old);
  const script = path.join(dir, 'ts/cli/main.ts');
  t.deepEqual(thisFamez(script, ['--import=tsx']), [process.execPath, path.join(dir, 'dist/cli/main.js')]);
  fs.utimesSync(path.join(dir, 'ts/vm/host.ts'), new Date(), new Date(Date.now() + 60_000));
  t.deepEqual(thisFamez(script, ['--import=tsx']), [process.execPath, '--import=tsx', script]);
  t.deepEqual(thisFamez('/opt/famez/dist/cli/main.js', []), [process.execPath, '/opt/famez/dist/cli/main.js']);
});
