// The guest kernel: which one to boot, and its uncompressed ELF (vmlinux)
// out of a bzImage, which QEMU boots directly through PVH (no in-guest
// decompression: about 2 s less under TCG).
//
// payloadOf() is pure (bytes in, where the compressed kernel is out); the
// decompression runs node:zlib for gzip and the xz / zstd programs for the
// rest, as the kernel's own scripts/extract-vmlinux does.
import { spawnSync } from 'node:child_process';
import * as zlib from 'node:zlib';

import { VmSetupError } from './errors.js';

export type Compression = 'gzip' | 'xz' | 'lzma' | 'zstd' | 'bzip2' | 'lz4';

export interface Payload {
  compression: Compression;
  /** Where the compressed stream starts in the bzImage. */
  offset: number;
  /** Its length, when the boot header tells it (without the kernel's
   * trailing 4-byte uncompressed size); null after a magic scan. */
  length: number | null;
}

const MAGICS: Array<[Compression, Buffer]> = [
  ['gzip', Buffer.from([0x1f, 0x8b, 0x08])],
  ['xz', Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00])],
  ['zstd', Buffer.from([0x28, 0xb5, 0x2f, 0xfd])],
  ['bzip2', Buffer.from('BZh', 'ascii')],
  ['lz4', Buffer.from([0x02, 0x21, 0x4c, 0x18])],
  ['lzma', Buffer.from([0x5d, 0x00, 0x00, 0x00])],
];

export const ELF_MAGIC = Buffer.from([0x7f, 0x45, 0x4c, 0x46]);

export function isElf(buf: Uint8Array): boolean {
  return buf.length >= 4 && Buffer.from(buf.buffer, buf.byteOffset, 4).equals(ELF_MAGIC);
}

function compressionAt(buf: Buffer, offset: number): Compression | null {
  for (const [c, magic] of MAGICS) {
    if (buf.subarray(offset, offset + magic.length).equals(magic)) return c;
  }
  return null;
}

/** Where the compressed kernel is in a bzImage. The x86 boot protocol
 * (2.08+) names it: payload_offset at 0x248 and payload_length at 0x24c,
 * both relative to the protected-mode code at (setup_sects + 1) x 512; the
 * payload ends with the uncompressed size (4 bytes, little-endian), which
 * xz refuses as trailing garbage. Images without that header are scanned
 * for the first known magic, as extract-vmlinux does. */
export function payloadOf(buf: Buffer): Payload {
  if (buf.length > 0x250 && buf.toString('ascii', 0x202, 0x206) === 'HdrS' && buf.readUInt16LE(0x206) >= 0x208) {
    const setupSects = buf[0x1f1] || 4;
    const offset = (setupSects + 1) * 512 + buf.readUInt32LE(0x248);
    const length = buf.readUInt32LE(0x24c);
    const compression = compressionAt(buf, offset);
    if (compression && length > 4 && offset + length <= buf.length) return { compression, offset, length: length - 4 };
  }
  let best: Payload | null = null;
  for (const [compression, magic] of MAGICS) {
    const offset = buf.indexOf(magic);
    if (offset >= 0 && (best === null || offset < best.offset)) best = { compression, offset, length: null };
  }
  if (!best) throw new VmSetupError('EKERNEL', 'the kernel image holds no compressed kernel famez can find (gzip, xz, lzma, zstd, bzip2, lz4)');
  return best;
}

const TOOLS: Record<Exclude<Compression, 'gzip'>, { argv: string[]; pkg: string }> = {
  xz: { argv: ['xz', '-dc'], pkg: 'xz-utils' },
  lzma: { argv: ['xz', '--format=lzma', '-dc'], pkg: 'xz-utils' },
  zstd: { argv: ['zstd', '-dc'], pkg: 'zstd' },
  bzip2: { argv: ['bzip2', '-dc'], pkg: 'bzip2' },
  lz4: { argv: ['lz4', '-dc'], pkg: 'lz4' },
};

/** Decompresses `data` (possibly followed by garbage, after a magic scan):
 * gzip in-process, the others through their program. */
export function decompress(compression: Compression, data: Buffer): Buffer {
  if (compression === 'gzip') {
    // finishFlush: a stream followed by bytes that are not gzip still gives its output.
    return zlib.gunzipSync(data, { finishFlush: zlib.constants.Z_SYNC_FLUSH });
  }
  const tool = TOOLS[compression];
  const r = spawnSync(tool.argv[0], tool.argv.slice(1), { input: data, maxBuffer: 1 << 30 });
  if (r.error) {
    throw new VmSetupError('ENOTOOL', `decompressing a ${compression} kernel needs '${tool.argv[0]}' (apt-get install ${tool.pkg}): ${r.error.message}`);
  }
  // After a magic scan the stream is followed by the rest of the image: a
  // non-zero status with output is the expected "trailing garbage" case.
  if (r.stdout.length === 0) throw new VmSetupError('EKERNEL', `${tool.argv[0]} could not decompress the kernel: ${r.stderr.toString().trim()}`);
  return r.stdout;
}

/** The uncompressed ELF of a kernel image: itself if it already is one. */
export function extractVmlinux(image: Buffer): Buffer {
  if (isElf(image)) return image;
  const p = payloadOf(image);
  const end = p.length === null ? image.length : p.offset + p.length;
  const elf = decompress(p.compression, image.subarray(p.offset, end));
  if (!isElf(elf)) throw new VmSetupError('EKERNEL', `the ${p.compression} payload of the kernel image is not an ELF file`);
  return elf;
}

// ---- which kernel ---------------------------------------------------------------------------

export interface KernelCandidate {
  /** The kernel release, e.g. 6.1.0-57-amd64. */
  version: string;
  image: string;
  modules: string;
}

/** Orders kernel releases as version numbers (6.10 after 6.9). */
export function compareVersions(a: string, b: string): number {
  return a.localeCompare(b, 'en', { numeric: true });
}

/** The kernel to boot, decided from what the host has: its own kernel if
 * its image and modules are installed, else the newest /boot/vmlinuz-VER
 * with /lib/modules/VER. `images` are file names in /boot; `hasModules`
 * tells whether /lib/modules/VER/modules.dep exists. */
export function chooseKernel(
  hostRelease: string,
  images: readonly string[],
  hasModules: (version: string) => boolean,
  boot = '/boot',
  modulesRoot = '/lib/modules',
): KernelCandidate | null {
  const versions = images
    .map((f) => /^vmlinuz-(.+)$/.exec(f)?.[1])
    .filter((v): v is string => v !== undefined && hasModules(v))
    .sort(compareVersions);
  const pick = versions.includes(hostRelease) ? hostRelease : versions.at(-1);
  if (pick === undefined) return null;
  return { version: pick, image: `${boot}/vmlinuz-${pick}`, modules: `${modulesRoot}/${pick}` };
}

/** The release a kernel image file is for, from its name (vmlinuz-VER,
 * vmlinux-VER, bzImage-VER); null when the name does not say. */
export function versionFromImageName(file: string): string | null {
  return /(?:^|\/)(?:vmlinuz|vmlinux|bzImage)-([^/]+)$/.exec(file)?.[1] ?? null;
}
