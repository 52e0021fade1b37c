// What `famez vm` needs from the host, found or refused with the fix named:
// QEMU, a guest kernel with its modules, a static busybox. The choices are
// made by the pure functions of kernel.ts and initramfs.ts; this is the I/O.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { findExecutable } from '../executables.js';
import { VmSetupError } from './errors.js';
import { findStaticBusybox } from './initramfs.js';
import { chooseKernel, versionFromImageName, type KernelCandidate } from './kernel.js';

export const QEMU_BINARY = 'qemu-system-x86_64';

export { findExecutable };

export function findQemu(binary = QEMU_BINARY): string {
  const found = findExecutable(binary);
  if (!found) throw new VmSetupError('ENOQEMU', `${binary} not found${binary.includes('/') ? '' : ' on PATH'}: apt-get install qemu-system-x86`);
  return found;
}

const hasModulesDep = (dir: string) => fs.existsSync(path.join(dir, 'modules.dep'));

/** The guest kernel: `image` (--kernel) with `modules` (--modules, else
 * /lib/modules/VER from its file name), or the host's own kernel when its
 * modules are installed, else the newest /boot/vmlinuz-VER that has them. */
export function findKernel({ image, modules }: { image?: string | null; modules?: string | null } = {}): KernelCandidate {
  if (image) {
    if (!fs.existsSync(image)) throw new VmSetupError('ENOKERNEL', `--kernel ${image}: no such file`);
    const version = versionFromImageName(image) ?? (modules ? path.basename(modules) : null);
    const dir = modules ?? (version ? `/lib/modules/${version}` : null);
    if (!dir || !version) throw new VmSetupError('ENOKERNEL', `--kernel ${image}: cannot tell its release from the name; give its modules folder with --modules /lib/modules/VER`);
    if (!hasModulesDep(dir)) throw new VmSetupError('EMODULES', `--kernel ${image}: ${dir}/modules.dep not found; give the kernel's modules folder with --modules`);
    return { version, image: path.resolve(image), modules: path.resolve(dir) };
  }
  let images: string[] = [];
  try {
    images = fs.readdirSync('/boot');
  } catch {
    // no /boot: nothing to choose from
  }
  const pick = chooseKernel(os.release(), images, (v) => hasModulesDep(`/lib/modules/${v}`));
  if (!pick) {
    throw new VmSetupError(
      'ENOKERNEL',
      `no guest kernel: neither the host's kernel (${os.release()}) nor any /boot/vmlinuz-* has its modules in /lib/modules: apt-get install linux-image-amd64 (or give --kernel PATH)`,
    );
  }
  if (modules) pick.modules = path.resolve(modules);
  return pick;
}

export { findStaticBusybox };

/** The argv that runs this very famez (node, its flags, the script), for
 * the guest, which sees the same files over 9p. From a source checkout run
 * through tsx (ts/cli/main.ts), the compiled dist/cli/main.js when it is
 * newer than every file under ts/: tsx transpiling in the guest costs about
 * 12 s under TCG, the compiled CLI starts in 2. */
export function thisFamez(script = process.argv[1], execArgv = process.execArgv): string[] {
  const source = /^(.*)\/ts\/cli\/main\.ts$/.exec(script);
  if (source) {
    const dist = path.join(source[1], 'dist', 'cli', 'main.js');
    if (newerThanSources(dist, path.join(source[1], 'ts'))) return [process.execPath, dist];
  }
  return [process.execPath, ...execArgv, script];
}

/** Whether `file` is newer than every .ts file under `dir` (a build that
 * is current). */
export function newerThanSources(file: string, dir: string): boolean {
  try {
    const built = fs.statSync(file).mtimeMs;
    const entries = fs.readdirSync(dir, { recursive: true, encoding: 'utf8' });
    return entries.every((e) => !e.endsWith('.ts') || fs.statSync(path.join(dir, e)).mtimeMs <= built);
  } catch {
    return false;
  }
}
