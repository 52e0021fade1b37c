// Finding the ivshmem device inside a guest and handing it to vfio-pci,
// through sysfs (docs/guest.md). The parsing and the choice are pure
// functions over what sysfs says; the rest reads and writes sysfs files
// and runs modprobe, and every failure names its fix.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';

import { FamezError } from '../errors.js';
import { findExecutable } from '../executables.js';

export type GuestErrorCode = 'ENODEV' | 'ENOTSUP' | 'EACCES' | 'EBUSY' | 'EINVAL' | 'ENOTFABRIC';

/** What the guest side throws; the message names the fix. */
export class GuestError extends FamezError<GuestErrorCode> {
  override name = 'GuestError';
}

/** QEMU's ivshmem: vendor 1af4 (Red Hat), device 1110, both kinds. */
export const IVSHMEM_VENDOR = 0x1af4;
export const IVSHMEM_DEVICE = 0x1110;

export interface IvshmemDevice {
  /** The PCI address, e.g. 0000:00:03.0. */
  bdf: string;
  /** ivshmem-doorbell (BAR1 is its MSI-X table: a fabric peer) or
   * ivshmem-plain (no BAR1: FAME's fabric-attached memory). */
  kind: 'doorbell' | 'plain';
  /** The bound driver's name, or null. */
  driver: string | null;
  /** The shared object's size (BAR2). */
  size: number;
}

export interface Resource {
  start: bigint;
  end: bigint;
  flags: bigint;
}

/** sysfs `resource`: one `start end flags` line (hex) per region. */
export function parseResource(text: string): Resource[] {
  return text
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((line) => {
      const [start, end, flags] = line.trim().split(/\s+/).map((w) => BigInt(w));
      return { start, end, flags };
    });
}

function regionSize(r: Resource | undefined): number {
  return r && r.end > r.start ? Number(r.end - r.start + 1n) : 0;
}

/** Doorbell or plain, and the shared object's size, from the resources. */
export function classify(resources: Resource[]): { kind: 'doorbell' | 'plain'; size: number } {
  return { kind: regionSize(resources[1]) > 0 ? 'doorbell' : 'plain', size: regionSize(resources[2]) };
}

/** The device to use: `wanted` (a BDF, with or without the 0000: domain)
 * or the only doorbell device; throws ENODEV / EINVAL naming the fix. */
export function choose(devices: IvshmemDevice[], wanted?: string): IvshmemDevice {
  const doorbells = devices.filter((d) => d.kind === 'doorbell');
  const list = devices.map((d) => `${d.bdf} (${d.kind})`).join(', ');
  if (wanted !== undefined) {
    const bdf = wanted.includes(':') && wanted.split(':').length === 3 ? wanted : `0000:${wanted}`;
    const d = devices.find((x) => x.bdf === bdf);
    if (!d) throw new GuestError('ENODEV', `no ivshmem device at ${wanted}; this machine has ${list || 'none'}`);
    if (d.kind !== 'doorbell') throw new GuestError('EINVAL', `${d.bdf} is an ivshmem-plain device (memory only, no doorbell); a fabric peer needs an ivshmem-doorbell device`);
    return d;
  }
  if (doorbells.length === 0) {
    throw new GuestError(
      'ENODEV',
      `no ivshmem-doorbell device (PCI 1af4:1110 with an MSI-X BAR) in this machine${devices.length ? ` (only ${list})` : ''}: start the VM with -chardev socket,path=SOCK,id=fz -device ivshmem-doorbell,chardev=fz,vectors=N ('famez stanza' prints it)`,
    );
  }
  if (doorbells.length > 1) {
    throw new GuestError('EINVAL', `${doorbells.length} ivshmem-doorbell devices (${doorbells.map((d) => d.bdf).join(', ')}): choose one with --device BDF`);
  }
  return doorbells[0];
}

function read(file: string): string | null {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    return null;
  }
}

function driverOf(dir: string): string | null {
  try {
    return path.basename(fs.readlinkSync(path.join(dir, 'driver')));
  } catch {
    return null;
  }
}

/** Every ivshmem device the kernel lists under `sysfs`/bus/pci/devices. */
export function listIvshmem(sysfs = '/sys'): IvshmemDevice[] {
  const root = path.join(sysfs, 'bus/pci/devices');
  let names: string[];
  try {
    names = fs.readdirSync(root).sort();
  } catch {
    return [];
  }
  const out: IvshmemDevice[] = [];
  for (const bdf of names) {
    const dir = path.join(root, bdf);
    if (Number(read(path.join(dir, 'vendor'))?.trim()) !== IVSHMEM_VENDOR) continue;
    if (Number(read(path.join(dir, 'device'))?.trim()) !== IVSHMEM_DEVICE) continue;
    const { kind, size } = classify(parseResource(read(path.join(dir, 'resource')) ?? ''));
    out.push({ bdf, kind, size, driver: driverOf(dir) });
  }
  return out;
}

function write(file: string, value: string, what: string): void {
  try {
    fs.writeFileSync(file, value);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'EACCES' || code === 'EPERM') throw new GuestError('EACCES', `${what} needs root (writing ${file}): run famez guest as root`);
    throw new GuestError('EBUSY', `${what} failed (writing ${value.trim()} to ${file}: ${(e as Error).message})`);
  }
}

function modprobe(module: string, ...params: string[]): string | null {
  const r = spawnSync(findExecutable('modprobe') ?? 'modprobe', [module, ...params], { encoding: 'utf8', timeout: 30_000 });
  if (r.error) return `modprobe: ${r.error.message}`;
  return r.status === 0 ? null : r.stderr.trim() || `modprobe ${module} exited ${r.status}`;
}

const NOIOMMU_PARAM = '/sys/module/vfio/parameters/enable_unsafe_noiommu_mode';

/** Makes sure `dev` is bound to vfio-pci: loads the modules, turns on
 * VFIO's no-IOMMU mode where there is no IOMMU but the kernel has that
 * mode, and binds the device (when no driver has it). Returns what it did,
 * for the log. Throws EACCES (not root), ENOTSUP (no vfio-pci, no IOMMU
 * and no no-IOMMU mode), EBUSY (another driver has it, or the kernel would
 * not bind it). */
export function bindVfio(dev: IvshmemDevice, sysfs = '/sys'): string[] {
  const did: string[] = [];
  const dir = path.join(sysfs, 'bus/pci/devices', dev.bdf);
  const bound = driverOf(dir);
  if (bound === 'vfio-pci') return did;
  // Another driver (a FAME-Z kernel module, pci-stub, uio) may be someone's
  // set-up: never taken from it.
  if (bound !== null) {
    throw new GuestError(
      'EBUSY',
      `${dev.bdf} is bound to ${bound}, and famez guest does not take a device from another driver: unbind it (echo ${dev.bdf} > ${sysfs}/bus/pci/drivers/${bound}/unbind) and run famez guest again`,
    );
  }
  if (process.getuid?.() !== 0) {
    throw new GuestError(
      'EACCES',
      `${dev.bdf} is bound to ${dev.driver ?? 'no driver'}, and binding it to vfio-pci needs root: run famez guest as root, or bind it first (echo vfio-pci > ${dir}/driver_override; echo ${dev.bdf} > ${sysfs}/bus/pci/drivers_probe)`,
    );
  }
  const drivers = path.join(sysfs, 'bus/pci/drivers');
  if (!fs.existsSync(path.join(drivers, 'vfio-pci'))) {
    const why = modprobe('vfio-pci');
    modprobe('vfio_iommu_type1');
    if (!fs.existsSync(path.join(drivers, 'vfio-pci'))) {
      throw new GuestError(
        'ENOTSUP',
        `the vfio-pci driver is not available (modprobe vfio-pci: ${why ?? 'loaded, but no driver appeared'}): install this kernel's modules (Debian: the linux-image package of $(uname -r)), or use --poll (no interrupts)`,
      );
    }
    did.push('loaded vfio-pci');
  }
  if (!fs.existsSync(path.join(dir, 'iommu_group'))) {
    if (!fs.existsSync(NOIOMMU_PARAM)) {
      throw new GuestError(
        'ENOTSUP',
        `${dev.bdf} has no IOMMU group and this kernel has no VFIO no-IOMMU mode (CONFIG_VFIO_NOIOMMU): give the VM an IOMMU (QEMU -machine q35 -device intel-iommu,intremap=on, and intel_iommu=on on the guest kernel's command line), or use --poll (no interrupts)`,
      );
    }
    if (read(NOIOMMU_PARAM)?.trim() !== 'Y') {
      write(NOIOMMU_PARAM, 'Y', "turning on VFIO's no-IOMMU mode");
      did.push("turned on VFIO's no-IOMMU mode (no DMA isolation: fine for ivshmem, which does no DMA)");
    }
  }
  write(path.join(dir, 'driver_override'), 'vfio-pci', `binding ${dev.bdf} to vfio-pci`);
  write(path.join(sysfs, 'bus/pci/drivers_probe'), dev.bdf, `binding ${dev.bdf} to vfio-pci`);
  const now = driverOf(dir);
  if (now !== 'vfio-pci') throw new GuestError('EBUSY', `${dev.bdf} did not bind to vfio-pci (its driver is ${now ?? 'none'}); see dmesg`);
  did.push(`bound ${dev.bdf} to vfio-pci`);
  return did;
}
