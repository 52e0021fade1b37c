// A cpio "newc" archive writer (the format the Linux kernel unpacks as an
// initramfs, see Documentation/driver-api/early-userspace/buffer-format.rst).
// Pure: entries in, bytes out; no file system access.
//
// Each entry is a 110-byte ASCII header (magic 070701 and 13 fields of 8 hex
// digits), the NUL-terminated name padded to a multiple of 4 bytes, then the
// data padded to a multiple of 4; the archive ends with the entry
// "TRAILER!!!".

export type CpioEntry =
  | { kind: 'dir'; path: string; mode?: number }
  | { kind: 'file'; path: string; data: Uint8Array; mode?: number }
  | { kind: 'symlink'; path: string; target: string }
  | { kind: 'char'; path: string; major: number; minor: number; mode?: number };

const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;
const S_IFCHR = 0o020000;

const MAGIC = '070701';
const HEADER_SIZE = 110;
export const TRAILER = 'TRAILER!!!';

function hex8(n: number): string {
  if (!Number.isInteger(n) || n < 0 || n > 0xffffffff) throw new RangeError(`cpio field ${n} does not fit 32 bits`);
  return n.toString(16).padStart(8, '0');
}

const pad4 = (n: number) => (4 - (n % 4)) % 4;

/** One header + name + data, each padded as newc requires. */
function record(ino: number, mode: number, nlink: number, name: string, data: Uint8Array, rdev: [number, number] = [0, 0]): Buffer {
  const nameBytes = Buffer.from(`${name}\0`, 'utf8');
  const header =
    MAGIC +
    [ino, mode, 0, 0, nlink, 0, data.length, 0, 0, rdev[0], rdev[1], nameBytes.length, 0].map(hex8).join('');
  return Buffer.concat([
    Buffer.from(header, 'ascii'),
    nameBytes,
    Buffer.alloc(pad4(HEADER_SIZE + nameBytes.length)),
    data,
    Buffer.alloc(pad4(data.length)),
  ]);
}

/** The archive of `entries`, in their order (a directory must come before
 * what it holds, as the kernel creates them in order). Names are stored
 * without a leading slash, as `cpio -o` from `find .` would. uid/gid 0 and
 * mtime 0, so the same entries always give the same bytes. */
export function cpioArchive(entries: readonly CpioEntry[]): Buffer {
  const parts: Buffer[] = [];
  let ino = 1;
  for (const e of entries) {
    const name = e.path.replace(/^\/+/, '');
    if (!name || name.split('/').some((c) => c === '..')) throw new Error(`cpio: invalid path '${e.path}'`);
    switch (e.kind) {
      case 'dir':
        parts.push(record(ino++, S_IFDIR | (e.mode ?? 0o755), 2, name, new Uint8Array()));
        break;
      case 'file':
        parts.push(record(ino++, S_IFREG | (e.mode ?? 0o644), 1, name, e.data));
        break;
      case 'symlink':
        parts.push(record(ino++, S_IFLNK | 0o777, 1, name, Buffer.from(e.target, 'utf8')));
        break;
      case 'char':
        parts.push(record(ino++, S_IFCHR | (e.mode ?? 0o600), 1, name, new Uint8Array(), [e.major, e.minor]));
        break;
    }
  }
  parts.push(record(0, 0, 1, TRAILER, new Uint8Array()));
  return Buffer.concat(parts);
}

export interface CpioHeader {
  name: string;
  mode: number;
  size: number;
  rdevMajor: number;
  rdevMinor: number;
  data: Buffer;
}

/** Reads a newc archive back (for tests and for checking a cached file):
 * every entry up to the trailer. Throws on a malformed archive. */
export function parseCpio(buf: Buffer): CpioHeader[] {
  const out: CpioHeader[] = [];
  let off = 0;
  for (;;) {
    if (off + HEADER_SIZE > buf.length) throw new Error(`cpio: truncated header at ${off}`);
    const h = buf.toString('ascii', off, off + HEADER_SIZE);
    if (!h.startsWith(MAGIC)) throw new Error(`cpio: bad magic at ${off}: '${h.slice(0, 6)}'`);
    const field = (i: number) => parseInt(h.slice(6 + i * 8, 14 + i * 8), 16);
    const mode = field(1);
    const size = field(6);
    const nameSize = field(11);
    const nameStart = off + HEADER_SIZE;
    const name = buf.toString('utf8', nameStart, nameStart + nameSize - 1);
    const dataStart = nameStart + nameSize + pad4(HEADER_SIZE + nameSize);
    if (dataStart + size > buf.length) throw new Error(`cpio: truncated data of '${name}'`);
    if (name === TRAILER) return out;
    out.push({ name, mode, size, rdevMajor: field(9), rdevMinor: field(10), data: buf.subarray(dataStart, dataStart + size) });
    off = dataStart + size + pad4(size);
  }
}
