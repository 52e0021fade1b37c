// The QEMU arguments and the libvirt blocks that connect a VM's
// ivshmem-doorbell device to a famez server, or give it FAME's plain
// fabric-attached memory (ivshmem-plain over a file). Pure text.

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
  return commandline(qemuArgs(opts));
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
    "libvirt's own element (in <devices>):",
    libvirtDoorbellShmem(opts),
    '',
  ].join('\n');
}

/** FAME's plain setup: a file shared as one VM's fabric-attached memory
 * (ivshmem-plain: BAR2 only, no doorbell, no server). */
export interface PlainStanzaOptions {
  /** The backing file (tmpfs, hugetlbfs or any file system). */
  path: string;
  /** Its size in bytes (QEMU needs it; a power of two). */
  size: number;
  /** The memory backend's id; unique per device in one VM. */
  id?: string;
}

export function plainQemuArgs({ path, size, id = 'fam0' }: PlainStanzaOptions): string[] {
  return ['-object', `memory-backend-file,id=${id},mem-path=${path},size=${size},share=on`, '-device', `ivshmem-plain,memdev=${id}`];
}

/** libvirt's own element for ivshmem-plain. It takes a name, not a path:
 * libvirt backs it with /dev/shm/NAME, so it fits only a file there. */
export function libvirtPlainShmem({ path, size }: PlainStanzaOptions): string | null {
  const m = /^\/dev\/shm\/([^/]+)$/.exec(path);
  if (!m) return null;
  return [`  <shmem name='${xmlEscape(m[1])}'>`, "    <model type='ivshmem-plain'/>", `    <size unit='B'>${size}</size>`, '  </shmem>'].join('\n');
}

/** libvirt's own element for ivshmem-doorbell on a famez server. */
export function libvirtDoorbellShmem({ socket, vectors, id = 'famez0' }: StanzaOptions): string {
  return [
    `  <shmem name='${xmlEscape(id)}'>`,
    "    <model type='ivshmem-doorbell'/>",
    `    <server path='${xmlEscape(socket)}'/>`,
    `    <msi vectors='${vectors}' ioeventfd='on'/>`,
    '  </shmem>',
  ].join('\n');
}

function commandline(args: string[]): string {
  return ['  <qemu:commandline>', ...args.map((a) => `    <qemu:arg value='${xmlEscape(a)}'/>`), '  </qemu:commandline>'].join('\n');
}

export function plainStanzaText(opts: PlainStanzaOptions): string {
  const native = libvirtPlainShmem(opts);
  return [
    'QEMU:',
    `  ${plainQemuArgs(opts).map(shellQuote).join(' ')}`,
    '',
    "libvirt (in <domain type='kvm' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>):",
    commandline(plainQemuArgs(opts)),
    '',
    native
      ? `libvirt's own element (in <devices>; libvirt backs it with ${opts.path}):\n${native}`
      : `libvirt's own <shmem> element backs the memory with /dev/shm/NAME only; for ${opts.path} use the <qemu:commandline> block`,
    '',
  ].join('\n');
}
