// famez vm against real QEMU: small Linux guests (the host's Debian kernel
// booted through PVH, a busybox initramfs, the host's root over 9p) on a
// famez fabric. Few VMs in all (each boots in 2-5 s under TCG); every one
// and every server is stopped in teardown, every wait bounded.
// Skipped, with the reason printed, only when QEMU, a guest kernel with
// modules or a static busybox is missing (.ci/run installs them).
import { lineLogger } from '../ts/log.js';
import * as fs from 'node:fs';
import * as path from 'node:path';

import test from 'ava';

import { startServe } from '../ts/cli/start.js';
import { parseServeArgs } from '../ts/server/options.js';
import { guestFiles } from '../ts/vm/cache.js';
import { findKernel, findQemu, findStaticBusybox } from '../ts/vm/host.js';
import { bootVm, type Vm } from '../ts/vm/vm.js';
import { ROOT, Scratch, pidAlive } from './helpers/serve.js';
import { removeDir, tempDir, waitFor, within } from './helpers/wait.js';

/** Why these tests cannot run here, decided when the file loads. */
function missing(): string | null {
  try {
    findQemu();
    findKernel();
    findStaticBusybox();
    return null;
  } catch (e) {
    return (e as Error).message;
  }
}
const WHY = missing();
if (WHY) console.log(`famez vm tests skipped: ${WHY}`);
const vmTest = WHY ? test.serial.skip : test.serial;

// Generous for TCG on a busy 2-core machine: a VM boots in 2-5 s.
const VM_MS = 120_000;
// The host's python itself: a shim (pyenv) costs seconds of TCG time.
const PY = fs.existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3';
const PROBE = path.join('__test__', 'helpers', 'guest_ivshmem.py');

interface DeviceInfo {
  bdf: string;
  bar2: number;
  msix: boolean;
  ivposition?: number;
  marked?: boolean;
}

/** The JSON lines guest_ivshmem.py printed, from `vmN| ` prefixed lines or bare ones. */
function devices(lines: readonly string[], prefix = ''): DeviceInfo[] {
  return lines.filter((l) => l.startsWith(`${prefix}{`)).map((l) => JSON.parse(l.slice(prefix.length)) as DeviceInfo);
}

/** Pids whose parent is `pid` and whose command name starts with `comm`. */
function children(pid: number, comm: string): number[] {
  const out: number[] = [];
  for (const p of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(p)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${p}/stat`, 'utf8');
      const name = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === pid && name.startsWith(comm)) out.push(Number(p));
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

vmTest('famez vm runs one command in a VM and exits with its status, its output prefixed vm1|', async (t) => {
  t.timeout(VM_MS + 10_000);
  const sc = new Scratch();
  t.teardown(() => sc.cleanup());
  const run = await sc.run(['vm', '--', 'node', '--version'], VM_MS);
  t.is(run.exitInfo.code, 0, run.transcript);
  t.true(run.lines.includes(`vm1| ${process.version}`), run.transcript);
  t.regex(run.stderr, /famez vm: accelerator tcg/);
  t.regex(run.stderr, /famez vm: vm1 exited 0 \(boot [\d.]+ s, total [\d.]+ s\)/);
  t.log(run.stderr.match(/vm1 exited.*/)?.[0] ?? '');
  // A failing command's status is famez vm's.
  const failing = await sc.run(['vm', '--', 'sh', '-c', 'echo "in $FAMEZ_VM at $(pwd)"; exit 7'], VM_MS);
  t.is(failing.exitInfo.code, 7, failing.transcript);
  t.true(failing.lines.includes(`vm1| in vm1 at ${ROOT}`), failing.transcript);
});

vmTest("in the guest the doorbell device's BAR2 is the server's shared memory and IVPosition the ID it gave", async (t) => {
  t.timeout(VM_MS + 10_000);
  const dir = tempDir('famez-vm-test-');
  const socket = path.join(dir, 'fabric.sock');
  const o = parseServeArgs(['-S', socket, '--memfd', '-l', '2M', '--max-peers', '3']);
  const log: string[] = [];
  const { server } = startServe(o, { logger: lineLogger((l) => log.push(l)) });
  let vm: Vm | null = null;
  t.teardown(async () => {
    await vm?.kill();
    server.close();
    removeDir(dir);
  });
  const ids: number[] = [];
  server.on('connect', (p) => ids.push(p.id));
  const files = guestFiles(findKernel(), findStaticBusybox(), dir);
  vm = bootVm({ name: 'vm1', kernel: files.kernel, initrd: files.initrd, socket, vectors: o.vectors, command: [PY, PROBE], cwd: ROOT, scriptDir: dir });
  const exit = await within(vm.exited, 'the VM to run guest_ivshmem.py', VM_MS);
  t.is(exit.status, 0, `${exit.reason}\n${vm.lines.join('\n')}\n${vm.qemuLines.join('\n')}`);
  t.deepEqual(ids, [1], log.join('\n'));
  t.true(log.some((l) => /peer 1 connected/.test(l)), log.join('\n'));
  const found = devices(vm.lines);
  t.is(found.length, 1, vm.lines.join('\n'));
  t.like(found[0], { bar2: 2 * 2 ** 20, msix: true, ivposition: 1 });
  t.is(found[0].bar2, server.sharedMemory.size);
  t.log(`vm1: /init after ${vm.bootMs} ms, done after ${vm.uptimeMs} ms`);
});

vmTest('famez vm -n 2 boots vm1 and vm2, which get peer IDs 1 and 2', async (t) => {
  t.timeout(VM_MS + 10_000);
  const sc = new Scratch();
  t.teardown(() => sc.cleanup());
  const run = await sc.run(['vm', '-n', '2', '--', PY, PROBE], VM_MS);
  t.is(run.exitInfo.code, 0, run.transcript);
  t.regex(run.stderr, /vm1 is peer 1\n/);
  t.regex(run.stderr, /vm2 is peer 2\n/);
  t.deepEqual(devices(run.lines, 'vm1| ').map((d) => d.ivposition), [1], run.transcript);
  t.deepEqual(devices(run.lines, 'vm2| ').map((d) => d.ivposition), [2], run.transcript);
});

vmTest("--fam FILE adds a second 1af4:1110 device whose BAR2 is the file: the guest's marker is in it", async (t) => {
  t.timeout(VM_MS + 10_000);
  const sc = new Scratch();
  t.teardown(() => sc.cleanup());
  const fam = path.join(sc.dir(), 'fam.bin');
  const marker = `famez-fam-${process.pid}`;
  const run = await sc.run(['vm', '--fam', `${fam}:1M`, '--', PY, PROBE, '--mark', String(2 ** 20), marker], VM_MS);
  t.is(run.exitInfo.code, 0, run.transcript);
  const found = devices(run.lines, 'vm1| ');
  t.is(found.length, 2, run.transcript);
  t.like(found[0], { bar2: 4 * 2 ** 20, msix: true, ivposition: 1 });
  t.like(found[1], { bar2: 2 ** 20, msix: false, marked: true });
  t.is(fs.statSync(fam).size, 2 ** 20);
  t.is(fs.readFileSync(fam).toString('latin1', 0, marker.length), marker);
});

vmTest('SIGTERM to famez vm powers off every VM (no QEMU left) and removes its socket and temp folder', async (t) => {
  t.timeout(VM_MS + 30_000);
  const sc = new Scratch();
  t.teardown(() => sc.cleanup());
  const p = sc.famez(['vm', '-v', '-n', '2', '--', 'sleep', '600']);
  const socket = (await waitFor(() => /fabric on (\S+) /.exec(p.stderr), () => `the fabric line\n${p.transcript}`, VM_MS))[1];
  await waitFor(() => /vm2: \/init after/.test(p.stderr), () => `vm2 to boot\n${p.transcript}`, VM_MS);
  const qemus = children(p.pid, 'qemu-system');
  t.is(qemus.length, 2, p.transcript);
  // Tests run as root here: whatever is left must not outlive the test.
  sc.pids.push(...qemus);
  t.true(fs.existsSync(socket));
  p.child.kill('SIGTERM');
  const exit = await p.wait(30_000);
  t.is(exit.code, 143, p.transcript);
  t.regex(p.stderr, /SIGTERM: powering off 2 VM\(s\)/);
  for (const pid of qemus) t.false(pidAlive(pid), `QEMU ${pid} is still running`);
  t.false(fs.existsSync(socket), `${socket} is still there`);
  t.false(fs.existsSync(path.dirname(socket)), `${path.dirname(socket)} is still there`);
});

vmTest("a working directory under the host's /tmp (a checkout there) is the command's folder in the guest, read-only", async (t) => {
  t.timeout(VM_MS + 10_000);
  // /tmp itself (not TMPDIR): the guest's /tmp is its own.
  const dir = fs.mkdtempSync('/tmp/famez-vm-cwd-');
  t.teardown(() => removeDir(dir));
  fs.writeFileSync(path.join(dir, 'marker'), `here ${process.pid}\n`);
  const files = guestFiles(findKernel(), findStaticBusybox(), dir);
  const vm = bootVm({ name: 'vm1', kernel: files.kernel, initrd: files.initrd, socket: null, vectors: 1, command: ['sh', '-c', 'pwd; cat marker; touch x 2>/dev/null && echo writable || echo read-only'], cwd: dir, scriptDir: dir });
  t.teardown(() => vm.kill());
  const exit = await within(vm.exited, 'the VM to run in the folder', VM_MS);
  t.is(exit.status, 0, `${exit.reason}\n${vm.lines.join('\n')}`);
  t.deepEqual(vm.lines.filter((l) => !l.startsWith('famez-vm:')).slice(-3), [dir, `here ${process.pid}`, 'read-only'], vm.lines.join('\n'));
});
