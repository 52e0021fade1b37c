import test from 'ava';

import { libvirtXml, qemuArgs, stanzaText } from '../ts/stanza.js';

test('the QEMU stanza names the socket and the vector count', (t) => {
  t.deepEqual(qemuArgs({ socket: '/tmp/ivshmem_socket', vectors: 4 }), [
    '-chardev',
    'socket,path=/tmp/ivshmem_socket,id=famez0',
    '-device',
    'ivshmem-doorbell,chardev=famez0,vectors=4',
  ]);
});

test('the libvirt block carries the same arguments, XML-escaped', (t) => {
  const xml = libvirtXml({ socket: "/tmp/a'b&c", vectors: 1, id: 'x' });
  t.true(xml.startsWith('  <qemu:commandline>'));
  t.true(xml.includes("<qemu:arg value='socket,path=/tmp/a&apos;b&amp;c,id=x'/>"));
  t.true(xml.includes("<qemu:arg value='ivshmem-doorbell,chardev=x,vectors=1'/>"));
  t.true(stanzaText({ socket: '/s', vectors: 2 }).includes('-device ivshmem-doorbell,chardev=famez0,vectors=2'));
});
