// famez guest in real Linux VMs (famez vm's kernel, initramfs and 9p root)
// on a real `famez serve` fabric: two VMs link up with the switch, ping
// each other and the switch, send text to each other and to a host
// `famez client`; 10,000 ring-channel messages go guest to guest; both see
// FAME's plain memory (a host file) at the same offsets; a VM that powers
// off and boots again gets its ID back and its neighbour reaches it; and
// every refusal (no vfio, no device, bound elsewhere, not root, in use) is
// one line and exit 2. Few VMs (four boots), every wait bounded, every VM
// and process stopped in teardown.
import * as fs from 'node:fs';
import * as path from 'node:path';

import test from 'ava';

import { createFam } from '../ts/fam/create.js';
import { guestFiles } from '../ts/vm/cache.js';
import { findKernel, findQemu, findStaticBusybox } from '../ts/vm/host.js';
import { bootVm, type Vm } from '../ts/vm/vm.js';
import { ROOT, Scratch, type } from './helpers/serve.js';
import { waitFor, within } from './helpers/wait.js';

function missing(): string | null {
  try {
    findQemu();
    findKernel();
    findStaticBusybox();
    if (!fs.existsSync(path.join(ROOT, 'dist', 'cli', 'main.js'))) return 'dist/ is not built (npm run build)';
    return null;
  } catch (e) {
    return (e as Error).message;
  }
}
const WHY = missing();
if (WHY) console.log(`famez guest VM tests skipped: ${WHY}`);
const vmTest = WHY ? test.serial.skip : test.serial;

// TCG on a busy 2-core machine: generous, and every wait is bounded by it.
const STEP_MS = 120_000;
const NODE = process.execPath;
const MAIN = path.join(ROOT, 'dist', 'cli', 'main.js');
const WORK = ['--import=tsx', path.join('__test__', 'helpers', 'guest-work.ts')];
const BURST = 10_000;
const FAM_SIZE = 4 * 1024 * 1024;
const FAM_AT = 65_536;

/** A shell line that runs `famez guest` with the console's echo off (the
 * test types into it). */
const guest = (name: string) => `${NODE} ${MAIN} guest -N ${name}`;
const work = (...args: Array<string | number>) => `${NODE} ${WORK.join(' ')} ${args.join(' ')}`;

/** Waits until the VM has printed a line matching `re` (after `from`
 * lines), and returns the match. */
function line(vm: Vm, re: RegExp, from = 0): Promise<RegExpMatchArray> {
  return waitFor(
    () => {
      for (const l of vm.lines.slice(from)) {
        const m = re.exec(l);
        if (m) return m;
      }
      return null;
    },
    () => `${vm.name} to print ${re}; it printed:\n${vm.lines.join('\n')}\n${vm.qemuLines.join('\n')}`,
    STEP_MS,
  );
}

function json(vm: Vm, key: string): Record<string, unknown> | null {
  for (const l of vm.lines) {
    if (!l.startsWith('{')) continue;
    const o = JSON.parse(l) as Record<string, unknown>;
    if (key in o || 'error' in o) return o;
  }
  return null;
}

async function jsonLine(vm: Vm, key: string): Promise<Record<string, unknown>> {
  return waitFor(() => json(vm, key), () => `${vm.name}'s ${key} line:\n${vm.lines.join('\n')}`, STEP_MS * 2);
}

function say(vm: Vm, command: string): number {
  const at = vm.lines.length;
  vm.write(`${command}\n`);
  return at;
}

vmTest('two VMs on a fabric: link-up, ping, send to a VM and a host client, a 10,000-message ring burst, FAM shared, a reboot gets its ID back', async (t) => {
  t.timeout(STEP_MS * 8);
  const sc = new Scratch();
  const vms: Vm[] = [];
  t.teardown(async () => {
    await Promise.all(vms.map((vm) => vm.kill()));
    await sc.cleanup();
  });
  const dir = sc.dir();
  const sock = path.join(dir, 'sock');
  const fam = createFam(path.join(dir, 'fam'), FAM_SIZE);
  const server = sc.famez(['serve', '-S', sock, '--memfd', '--max-peers', '4', '--console'], { stdin: true });
  await server.waitFor(/serving on /, STEP_MS);
  const files = guestFiles(findKernel(), findStaticBusybox(), dir);
  const boot = (name: string, script: string) => {
    const vm = bootVm({
      name,
      kernel: files.kernel,
      initrd: files.initrd,
      socket: sock,
      vectors: 6,
      fam: { path: fam.path, size: fam.size },
      command: ['sh', '-c', `stty -echo 2>/dev/null; ${script}`],
      cwd: ROOT,
      scriptDir: dir,
    });
    vms.push(vm);
    return vm;
  };
  const mark = `famez-fam-from-vmA-${process.pid}`;
  const a = boot('vmA', [guest('vmA'), work('fam-write', FAM_AT, mark), work('burst-send', 2, BURST), guest('vmA')].join(' && '));
  await line(a, /attached to PCI \S+ \(VFIO, type1v2\) as peer 1 \(6 vector\(s\)\)/);
  const b = boot('vmB', [guest('vmB'), work('fam-read', FAM_AT, mark), work('burst-recv', 1, BURST)].join(' && '));

  // Link-up: Link RFC, CTL-Write, Standalone Acknowledgment, in both.
  await line(a, /^link up: configured by 5 as SID0=27,CID0=100 \(fabric manager SID 27\)$/);
  await line(b, /^attached to PCI \S+ \(VFIO, type1v2\) as peer 2 \(6 vector\(s\)\); peers: 1, 5$/);
  await line(b, /^link up: configured by 5 as SID0=27,CID0=200/);
  // The switch has each one's C-Class from its answer to Peer-Attribute.
  await server.waitFor(/switch: peer 1: C-Class=Debugger,SID0=27,CID0=100/, STEP_MS);
  await server.waitFor(/switch: peer 2: C-Class=Debugger,SID0=27,CID0=200/, STEP_MS);
  type(server, 'dump');
  await server.waitFor(/\| {3}1 {2}\|-- Debugger vmA \[CID 100, SID 27\] configured\n {2}\| {3}2 {2}\|-- Debugger vmB \[CID 200, SID 27\] configured/, STEP_MS);

  const host = sc.client(['-S', sock, '-N', 'hostC']);
  await host.waitFor(/fabric of 4 peers: this is peer 3 'hostC'/, STEP_MS);
  await line(a, /^peer 3 joined$/);

  // A pings B (B answers by itself) and the switch; B sees the ping.
  let at = say(a, 'ping vmB');
  await line(a, /^from 2 \(vmB\): pong$/, at);
  await line(b, /^from 1 \(vmA\): ping$/);
  at = say(a, 'ping switch');
  await line(a, /^from 5 \(Z-switch\): pong$/, at);
  say(a, 'send vmB hello from vmA');
  await line(b, /^from 1 \(vmA\): hello from vmA$/);
  say(a, 'send hostC hello from the guest');
  await host.waitFor(/from 1 \(vmA\): hello from the guest/, STEP_MS);
  type(host, 'ping vmB');
  await host.waitFor(/from 2 \(vmB\): pong/, STEP_MS);
  at = say(a, 'who');
  await line(a, /^2 vmB$/, at);
  await line(a, /^3 hostC$/, at);

  // B's famez guest leaves first (its QEMU stays: no leave), then A's: B
  // waits for A's mark in FAM and reads the burst, A writes both.
  say(b, 'quit');
  say(a, 'quit');
  const wrote = await jsonLine(a, 'wrote');
  t.like(wrote, { wrote: mark, offset: FAM_AT, size: FAM_SIZE });
  const read = await jsonLine(b, 'read');
  t.like(read, { read: mark, offset: FAM_AT, size: FAM_SIZE });
  t.is(fs.readFileSync(fam.path).toString('latin1', FAM_AT, FAM_AT + mark.length), mark, 'the host file has it at the same offset');
  const sent = await jsonLine(a, 'sent');
  t.like(sent, { sent: BURST, id: 1 });
  const afterBurst = a.lines.length;
  const got = await jsonLine(b, 'received');
  t.like(got, { received: BURST, bad: null, id: 2 }, 'none lost, duplicated or reordered');
  t.log(`ring burst: ${BURST} messages in ${String(got.wakeups)} wake-ups`);

  // B powers off; booted again it gets ID 2 back and A reaches it.
  const bExit = await within(b.exited, 'vmB to power off', STEP_MS);
  t.is(bExit.status, 0, bExit.reason ?? '');
  await server.waitFor(/peer 2 disconnected/, STEP_MS);
  const b2 = boot('vmB2', guest('vmB'));
  await line(b2, /as peer 2 \(6 vector\(s\)\)/);
  await line(b2, /^link up: configured by 5/);
  await line(a, /^link up: configured by 5/, afterBurst);
  at = say(a, 'ping vmB');
  await line(a, /^from 2 \(vmB\): pong$/, at);
  say(a, 'quit');
  say(b2, 'quit');
  for (const vm of [a, b2]) {
    const exit = await within(vm.exited, `${vm.name} to power off`, STEP_MS);
    t.is(exit.status, 0, `${vm.name}: ${exit.reason}\n${vm.lines.join('\n')}`);
  }
});

vmTest('famez guest refuses with one line and exit 2: no vfio-pci, no device, bound to another driver, not root, in use; --poll works without VFIO', async (t) => {
  t.timeout(STEP_MS * 3);
  const sc = new Scratch();
  let vm: Vm | null = null;
  t.teardown(async () => {
    await vm?.kill();
    await sc.cleanup();
  });
  const dir = sc.dir();
  const sock = path.join(dir, 'sock');
  await sc.serve(['-S', sock, '--memfd', '--max-peers', '2'], STEP_MS);
  const files = guestFiles(findKernel(), findStaticBusybox(), dir);
  vm = bootVm({
    name: 'vmR',
    kernel: files.kernel,
    initrd: files.initrd,
    socket: sock,
    vectors: 4,
    command: ['sh', path.join('__test__', 'helpers', 'guest-refusals.sh'), NODE, MAIN, 'guest'],
    cwd: ROOT,
    scriptDir: dir,
  });
  const exit = await within(vm.exited, 'the refusals to run', STEP_MS * 2);
  const out = vm.lines.join('\n');
  t.is(exit.status, 0, `${exit.reason}\n${out}`);
  // What famez guest said in each case: the lines before its "case" line.
  const said = new Map<string, { rc: number; lines: string[]; all: string[] }>();
  let since: string[] = [];
  for (const l of vm.lines) {
    const m = /^case (\S+) rc=(\d+)$/.exec(l);
    if (!m) {
      since.push(l);
      continue;
    }
    said.set(m[1], { rc: Number(m[2]), lines: since.filter((x) => x.startsWith('famez guest:')), all: since });
    since = [];
  }
  const cases: Array<[string, RegExp]> = [
    ['no-vfio', /^famez guest: ENOTSUP: the vfio-pci driver is not available \(modprobe vfio-pci: .*\): install this kernel's modules .*or use --poll/],
    ['no-device', /^famez guest: ENODEV: no ivshmem-doorbell device \(PCI 1af4:1110 with an MSI-X BAR\) in this machine: start the VM with -chardev socket,path=SOCK,id=fz -device ivshmem-doorbell/],
    ['bound-elsewhere', /^famez guest: EBUSY: 0000:\S+ is bound to pci-stub, and famez guest does not take a device from another driver: unbind it \(echo 0000:\S+ > \/sys\/bus\/pci\/drivers\/pci-stub\/unbind\)/],
    ['not-root', /^famez guest: EACCES: .*needs root/],
    ['in-use', /^famez guest: EBUSY: 0000:\S+ is in use: another process \(another famez guest\?\) has its IOMMU group \d+ open .*; stop it first/],
  ];
  for (const [name, re] of cases) {
    const c = said.get(name);
    t.truthy(c, `case ${name}\n${out}`);
    t.is(c?.rc, 2, `${name}: exit 2\n${out}`);
    t.is(c?.lines.length, 1, `${name}: one line\n${out}`);
    t.regex(c?.lines[0] ?? '', re, name);
    t.log(`${name}: ${c?.lines[0]}`);
  }
  // The polling fallback works, and says what it is.
  const poll = said.get('poll');
  t.is(poll?.rc, 0, out);
  t.true(poll?.all.some((l) => /^attached to PCI \S+ \(sysfs polling every 2 ms, no interrupts\) as peer 1/.test(l)), out);
  t.true(poll?.all.includes('link up: configured by 3 as SID0=27,CID0=100 (fabric manager SID 27)'), out);
  t.true(poll?.all.includes('from 3 (Z-switch): pong'), out);
  t.regex(out, /attached to PCI \S+ \(VFIO, type1v2\) as peer 1/, 'the holder got the device');
  t.regex(out, /holder rc=0/);
});

vmTest('famez vm 2, the demo: two VMs link up with the switch and ping each other; Ctrl-C powers them off', async (t) => {
  t.timeout(STEP_MS * 2);
  const sc = new Scratch();
  t.teardown(() => sc.cleanup());
  const p = sc.famez(['vm', '2']);
  for (const re of [/^vm1\| link up: configured by 15 as SID0=27,CID0=100/m, /^vm2\| link up: configured by 15 as SID0=27,CID0=200/m, /^vm1\| from 2 \(vm2-2\): pong$/m, /^vm2\| from 1 \(vm1-1\): pong$/m]) {
    await p.waitFor(re, STEP_MS);
  }
  p.child.kill('SIGINT');
  const exit = await p.wait(30_000);
  t.is(exit.code, 130, p.transcript);
  t.regex(p.stderr, /vm1 powered off \(SIGINT\)/);
  t.regex(p.stderr, /vm2 powered off \(SIGINT\)/);
});
