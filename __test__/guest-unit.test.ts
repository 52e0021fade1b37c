// The guest side's pure parts: reading sysfs `resource`, telling the two
// ivshmem kinds apart, choosing the device (every refusal names its fix),
// parsing `famez guest`'s flags; and FAME's plain stanza with libvirt's own
// <shmem> elements. The VFIO path itself runs in real VMs (vm.test.ts).
import test from 'ava';

import { parseGuestArgs } from '../ts/cli/guest.js';
import { UsageError } from '../ts/args.js';
import { chooseFam } from '../ts/guest/fam.js';
import { choose, classify, listIvshmem, parseResource, type IvshmemDevice } from '../ts/guest/pci.js';
import { Scratch } from './helpers/serve.js';
import { libvirtDoorbellShmem, libvirtPlainShmem, plainQemuArgs, plainStanzaText, stanzaText } from '../ts/stanza.js';

// What a q35 guest's sysfs said (first three lines of `resource`) for
// `-device ivshmem-doorbell,vectors=16` on a 4 MiB server and for
// ivshmem-plain over a 64 MiB file, in one VM.
const DOORBELL = `0x00000000febf2000 0x00000000febf20ff 0x0000000000040200
0x00000000febf3000 0x00000000febf3fff 0x0000000000040200
0x00000000fd000000 0x00000000fd3fffff 0x000000000014220c
`;
const PLAIN = `0x00000000febf4000 0x00000000febf40ff 0x0000000000040200
0x0000000000000000 0x0000000000000000 0x0000000000000000
0x00000000f8000000 0x00000000fbffffff 0x000000000014220c
`;

test('a doorbell device has a BAR1 (its MSI-X table), a plain one none; BAR2 is the shared object', (t) => {
  t.deepEqual(classify(parseResource(DOORBELL)), { kind: 'doorbell', size: 4 * 1024 * 1024 });
  t.deepEqual(classify(parseResource(PLAIN)), { kind: 'plain', size: 64 * 1024 * 1024 });
  t.deepEqual(classify(parseResource('')), { kind: 'plain', size: 0 });
});

const dev = (bdf: string, kind: 'doorbell' | 'plain'): IvshmemDevice => ({ bdf, kind, driver: null, size: 1 << 22 });

test('choose takes the only doorbell device, or the one --device names', (t) => {
  const both = [dev('0000:00:03.0', 'doorbell'), dev('0000:00:04.0', 'plain')];
  t.is(choose(both).bdf, '0000:00:03.0');
  t.is(choose(both, '00:03.0').bdf, '0000:00:03.0', 'the domain may be left out');
  t.is(chooseFam(both).bdf, '0000:00:04.0');
});

test('choose refuses with the fix: no device, only a plain one, two doorbells, a plain one named', (t) => {
  const none = t.throws(() => choose([]), { instanceOf: Error })!;
  t.is((none as { code?: string }).code, 'ENODEV');
  t.regex(none.message, /no ivshmem-doorbell device .* -device ivshmem-doorbell,chardev=fz,vectors=N/);
  t.regex(t.throws(() => choose([dev('0000:00:04.0', 'plain')]))!.message, /only 0000:00:04\.0 \(plain\)/);
  t.regex(t.throws(() => choose([dev('0000:00:03.0', 'doorbell'), dev('0000:00:05.0', 'doorbell')]))!.message, /choose one with --device BDF/);
  t.regex(t.throws(() => choose([dev('0000:00:04.0', 'plain')], '0000:00:04.0'))!.message, /ivshmem-plain device .* needs an ivshmem-doorbell/);
  t.regex(t.throws(() => choose([dev('0000:00:03.0', 'doorbell')], '0000:00:09.0'))!.message, /no ivshmem device at 0000:00:09\.0; this machine has 0000:00:03\.0 \(doorbell\)/);
  t.regex(t.throws(() => chooseFam([dev('0000:00:03.0', 'doorbell')]))!.message, /no ivshmem-plain device/);
});

test('famez guest flags: defaults, --poll/--vfio exclusive, a BDF and a poll interval checked', (t) => {
  t.like(parseGuestArgs([]), { mode: 'auto', link: true, verbose: false });
  t.like(parseGuestArgs(['--poll', '--poll-ms', '5', '-N', 'g', '--no-link', '--device', '00:03.0']), { mode: 'poll', pollMs: 5, nodename: 'g', link: false, device: '00:03.0' });
  for (const bad of [['--poll', '--vfio'], ['--device', 'eth0'], ['--poll-ms', '0'], ['--poll-ms', 'x'], ['stray']]) {
    t.throws(() => parseGuestArgs(bad), { instanceOf: UsageError }, bad.join(' '));
  }
});

test("FAME's plain stanza: a shared file backend and ivshmem-plain, libvirt's <shmem> only for /dev/shm", (t) => {
  t.deepEqual(plainQemuArgs({ path: '/fam/f', size: 1 << 30 }), ['-object', 'memory-backend-file,id=fam0,mem-path=/fam/f,size=1073741824,share=on', '-device', 'ivshmem-plain,memdev=fam0']);
  t.is(libvirtPlainShmem({ path: '/fam/f', size: 1 }), null);
  t.is(libvirtPlainShmem({ path: '/dev/shm/famA', size: 4096 }), "  <shmem name='famA'>\n    <model type='ivshmem-plain'/>\n    <size unit='B'>4096</size>\n  </shmem>");
  t.regex(plainStanzaText({ path: '/fam/f', size: 1 << 30 }), /<qemu:arg value='memory-backend-file,id=fam0,mem-path=\/fam\/f,size=1073741824,share=on'\/>/);
  t.regex(plainStanzaText({ path: '/fam/f', size: 1 << 30 }), /for \/fam\/f use the <qemu:commandline> block/);
});

test("the doorbell stanza carries libvirt's own <shmem> element too", (t) => {
  const xml = libvirtDoorbellShmem({ socket: "/run/f'z", vectors: 16 });
  t.is(xml, "  <shmem name='famez0'>\n    <model type='ivshmem-doorbell'/>\n    <server path='/run/f&apos;z'/>\n    <msi vectors='16' ioeventfd='on'/>\n  </shmem>");
  t.true(stanzaText({ socket: '/s', vectors: 16 }).includes("<server path='/s'/>"));
});

test('famez guest on a machine without the device (this host): one line naming the QEMU arguments, exit 2; a bad flag exit 2', async (t) => {
  const sc = new Scratch();
  t.teardown(() => sc.cleanup());
  if (listIvshmem().length > 0) {
    t.log('this machine has an ivshmem device: the refusal is tested in a VM instead (vm-guest.test.ts)');
    t.pass();
    return;
  }
  const p = await sc.run(['guest', '--no-link']);
  t.is(p.exitInfo.code, 2);
  t.regex(p.stderr, /^famez guest: ENODEV: no ivshmem-doorbell device \(PCI 1af4:1110 with an MSI-X BAR\) in this machine: start the VM with -chardev socket,path=SOCK,id=fz -device ivshmem-doorbell,chardev=fz,vectors=N \('famez stanza' prints it\)\n$/);
  t.is(p.stdout, '');
  const bad = await sc.run(['guest', '--poll-ms', '0']);
  t.is(bad.exitInfo.code, 2);
  t.regex(bad.stderr, /^famez guest: --poll-ms wants 1\.\.10000 milliseconds, not '0'\n$/);
});
