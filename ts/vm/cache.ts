// The kernel ELF and the initramfs, built once per kernel and kept in
// $XDG_CACHE_HOME/famez/vm/VER (or ~/.cache/famez/vm/VER). A key file says
// what they were built from (the image's path, mtime and size, the modules'
// modules.dep, busybox, the initramfs format): any change rebuilds them.
// Every file is written to a temporary name and renamed, so a reader (a
// second `famez vm`) never sees half of one; the key goes last.
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { INITRAMFS_FORMAT, initramfs, readInitramfsInputs } from './initramfs.js';
import { extractVmlinux, type KernelCandidate } from './kernel.js';

export interface GuestFiles {
  kernel: string;
  initrd: string;
  /** Where they are: the cache folder, or a temporary one of the caller's. */
  dir: string;
  cached: boolean;
  /** Built now (false: found in the cache). */
  built: boolean;
  /** Why the cache was not used, when it was not. */
  note: string | null;
}

export function cacheRoot(env: NodeJS.ProcessEnv = process.env): string {
  const base = env.XDG_CACHE_HOME && path.isAbsolute(env.XDG_CACHE_HOME) ? env.XDG_CACHE_HOME : path.join(os.homedir(), '.cache');
  return path.join(base, 'famez', 'vm');
}

function stamp(file: string): string {
  const st = fs.statSync(file);
  return `${file}:${st.mtimeMs}:${st.size}`;
}

/** What the files are built from, as one hash. */
export function cacheKey(kernel: KernelCandidate, busybox: string): string {
  const parts = [`format ${INITRAMFS_FORMAT}`, stamp(kernel.image), stamp(path.join(kernel.modules, 'modules.dep')), stamp(busybox)];
  return createHash('sha256').update(parts.join('\n')).digest('hex');
}

function writeAtomic(file: string, data: Buffer | string): void {
  const tmp = `${file}.${process.pid}.${Math.random().toString(36).slice(2)}.tmp`;
  try {
    fs.writeFileSync(tmp, data, { mode: 0o644 });
    fs.renameSync(tmp, file);
  } catch (e) {
    fs.rmSync(tmp, { force: true });
    throw e;
  }
}

function build(dir: string, kernel: KernelCandidate, busybox: string): void {
  writeAtomic(path.join(dir, 'vmlinux'), extractVmlinux(fs.readFileSync(kernel.image)));
  writeAtomic(path.join(dir, 'initramfs.cpio'), initramfs(readInitramfsInputs(busybox, kernel.modules)));
}

/** The guest's kernel and initramfs for `kernel`: from the cache when its
 * key matches, else built there; built into `fallbackDir` when the cache
 * cannot be written (the caller removes that folder). */
export function guestFiles(kernel: KernelCandidate, busybox: string, fallbackDir: string, root = cacheRoot()): GuestFiles {
  const key = cacheKey(kernel, busybox);
  const dir = path.join(root, kernel.version.replace(/[^\w.+-]/g, '_'));
  const files = { kernel: path.join(dir, 'vmlinux'), initrd: path.join(dir, 'initramfs.cpio') };
  try {
    if (fs.readFileSync(path.join(dir, 'key'), 'utf8').trim() === key && fs.existsSync(files.kernel) && fs.existsSync(files.initrd)) {
      return { ...files, dir, cached: true, built: false, note: null };
    }
  } catch {
    // no key yet: build
  }
  try {
    fs.mkdirSync(dir, { recursive: true });
    build(dir, kernel, busybox);
    writeAtomic(path.join(dir, 'key'), `${key}\n`);
    return { ...files, dir, cached: true, built: true, note: null };
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code !== 'EACCES' && code !== 'EROFS' && code !== 'ENOSPC' && code !== 'EPERM') throw e;
    build(fallbackDir, kernel, busybox);
    return {
      kernel: path.join(fallbackDir, 'vmlinux'),
      initrd: path.join(fallbackDir, 'initramfs.cpio'),
      dir: fallbackDir,
      cached: false,
      built: true,
      note: `cannot write the cache ${dir} (${code}): built in ${fallbackDir} for this run`,
    };
  }
}
