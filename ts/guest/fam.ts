// FAME's plain region seen from a guest: an ivshmem-plain device's BAR2
// (the host's FAM file), mapped through sysfs resource2. Memory only: no
// doorbell, no interrupts, no server; every VM given the same file sees
// the same bytes.
import '../dispose.js';
import { GuestDevice, type SharedMemory } from '../native.js';
import { GuestError, listIvshmem, type IvshmemDevice } from './pci.js';

export interface FamRegion {
  bdf: string;
  size: number;
  /** BAR2 mapped (its `buffer` is the ArrayBuffer when it fits one). */
  sharedMemory: SharedMemory;
  close(): void;
  /** close(), for `using`. */
  [Symbol.dispose](): void;
}

/** The plain device to use: `wanted`, or the only one. */
export function chooseFam(devices: IvshmemDevice[], wanted?: string): IvshmemDevice {
  const plain = devices.filter((d) => d.kind === 'plain');
  if (wanted !== undefined) {
    const bdf = wanted.split(':').length === 3 ? wanted : `0000:${wanted}`;
    const d = devices.find((x) => x.bdf === bdf);
    if (!d) throw new GuestError('ENODEV', `no ivshmem device at ${wanted}`);
    if (d.kind !== 'plain') throw new GuestError('EINVAL', `${d.bdf} is an ivshmem-doorbell device (a fabric peer: famez guest); FAM is an ivshmem-plain device`);
    return d;
  }
  if (plain.length === 0) {
    throw new GuestError('ENODEV', `no ivshmem-plain device (PCI 1af4:1110 without an MSI-X BAR) in this machine: start the VM with the arguments 'famez stanza --plain FILE' prints`);
  }
  if (plain.length > 1) throw new GuestError('EINVAL', `${plain.length} ivshmem-plain devices (${plain.map((d) => d.bdf).join(', ')}): choose one by its PCI address`);
  return plain[0];
}

/** Maps the VM's FAM (as root: sysfs resource files are root's). */
export function openFam(options: { device?: string; sysfs?: string } = {}): FamRegion {
  const dev = chooseFam(listIvshmem(options.sysfs), options.device);
  const device = GuestDevice.openSysfs(dev.bdf);
  let shm: SharedMemory;
  try {
    shm = device.sharedMemory();
  } finally {
    device.close();
  }
  const close = () => shm.close();
  return { bdf: dev.bdf, size: dev.size, sharedMemory: shm, close, [Symbol.dispose]: close };
}
