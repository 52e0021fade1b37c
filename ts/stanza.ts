// The QEMU arguments and the libvirt block that connect a VM's
// ivshmem-doorbell device to a famez server. Pure text.

export interface StanzaOptions {
  socket: string;
  vectors: number;
  /** chardev id; unique per device in one VM. */
  id?: string;
}

export function qemuArgs({ socket, vectors, id = 'famez0' }: StanzaOptions): string[] {
  return ['-chardev', `socket,path=${socket},id=${id}`, '-device', `ivshmem-doorbell,chardev=${id},vectors=${vectors}`];
}

function xmlEscape(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/'/g, '&apos;').replace(/"/g, '&quot;');
}

export function libvirtXml(opts: StanzaOptions): string {
  const args = qemuArgs(opts).map((a) => `    <qemu:arg value='${xmlEscape(a)}'/>`);
  return ['  <qemu:commandline>', ...args, '  </qemu:commandline>'].join('\n');
}

export function shellQuote(s: string): string {
  return /^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

export function stanzaText(opts: StanzaOptions): string {
  return [
    'QEMU:',
    `  ${qemuArgs(opts).map(shellQuote).join(' ')}`,
    '',
    "libvirt (in <domain type='kvm' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>):",
    libvirtXml(opts),
    '',
  ].join('\n');
}
