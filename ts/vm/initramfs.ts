// The guest's initramfs: a static busybox, the modules for 9p over
// virtio-pci, and an /init that mounts the host's root read-only over 9p,
// builds a chroot of it (a tmpfs whose top-level folders are bind mounts of
// the host's, with fresh proc, sys, dev, /tmp, /run), runs the VM's command
// there and reports its exit status on the console.
//
// The archive is the same for every VM of a kernel (it is cached); what a VM
// runs comes from a per-VM script on the host, named on the kernel command
// line (famez_script=PATH) and read over 9p. Pure: text and entries in,
// bytes out (readInitramfsInputs is the I/O).
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as zlib from 'node:zlib';

import { cpioArchive, type CpioEntry } from './cpio.js';
import { VmSetupError } from './errors.js';
import { decompress } from './kernel.js';
import { GUEST_MODULES, parseBuiltin, parseModulesDep, resolveModules, type ModuleFile } from './modules.js';

/** Bump when the archive's contents or /init change: cached archives of an
 * older format are rebuilt. */
export const INITRAMFS_FORMAT = 3;

/** What /init prints, for the host side (see console.ts). */
export const MARK = 'famez-vm:';
/** The status /init reports when it cannot run the command at all. */
export const SETUP_FAILED_STATUS = 125;

/** Top-level host folders that get a fresh file system instead of a bind. */
const FRESH = ['proc', 'sys', 'dev', 'run', 'tmp'];

/** /init: busybox sh, PID 1. `modules` are names, loaded in that order
 * from /lib/modules/NAME.ko. */
export function initScript(modules: readonly string[]): string {
  return `#!/bin/busybox sh
# famez vm /init (initramfs format ${INITRAMFS_FORMAT}): mount the host's root over
# 9p, chroot into a view of it, run the command named by famez_script=.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
fail() { echo "${MARK} $*"; echo "${MARK} exit ${SETUP_FAILED_STATUS}"; poweroff -f; }
echo "${MARK} init"
for m in ${modules.join(' ')}; do
  insmod /lib/modules/$m.ko || fail "insmod $m failed"
done
name=; script=; cwd=
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    famez_name=*) name="\${arg#famez_name=}" ;;
    famez_script=*) script="\${arg#famez_script=}" ;;
    famez_cwd=*) cwd="\${arg#famez_cwd=}" ;;
  esac
done
[ -n "$name" ] && hostname "$name"
mkdir -p /host /newroot
# msize: 6.1's default (8 KiB) costs a round trip per 8 KiB read; cache=loose
# keeps what was read (the host's root is read-only to the guest): node and
# its addon load 3-4x faster.
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=262144,cache=loose hostroot /host || fail "cannot mount the host's root (9p mount_tag hostroot)"
mount -t tmpfs -o mode=0755 famez /newroot
for d in /host/*; do
  n="\${d#/host/}"
  case "$n" in ${FRESH.join('|')}) continue ;; esac
  if [ -L "$d" ]; then ln -s "$(readlink "$d")" "/newroot/$n"
  elif [ -d "$d" ]; then mkdir "/newroot/$n" && mount --bind "$d" "/newroot/$n"
  fi
done
for n in ${FRESH.join(' ')}; do mkdir -p "/newroot/$n"; done
mount -t proc proc /newroot/proc
mount -t sysfs sysfs /newroot/sys
mount -t devtmpfs devtmpfs /newroot/dev
mkdir -p /newroot/dev/pts /newroot/dev/shm
mount -t devpts -o newinstance,ptmxmode=0666 devpts /newroot/dev/pts
mount -t tmpfs -o mode=1777 shm /newroot/dev/shm
mount -t tmpfs -o mode=1777 tmp /newroot/tmp
mount -t tmpfs -o mode=0755 run /newroot/run
# The command's folder under a fresh one (a checkout in /tmp): the host's,
# read-only, at the same path.
case "$cwd" in
  /tmp/?*|/run/?*) [ -d "/host$cwd" ] && mkdir -p "/newroot$cwd" && mount --bind "/host$cwd" "/newroot$cwd" ;;
esac
[ -n "$script" ] || fail "no famez_script= on the kernel command line"
cp "/host$script" /newroot/run/famez-vm.sh || fail "cannot read $script from the host"
chroot /newroot /bin/sh /run/famez-vm.sh
echo "${MARK} exit $?"
poweroff -f
`;
}

export interface InitramfsInputs {
  busybox: Buffer;
  /** Module name and its (uncompressed) .ko bytes, in load order. */
  modules: Array<{ name: string; data: Buffer }>;
}

/** The archive's entries: the folders /init mounts on, busybox, the modules, /init. */
export function initramfsEntries({ busybox, modules }: InitramfsInputs): CpioEntry[] {
  return [
    ...['bin', 'dev', 'proc', 'sys', 'lib', 'lib/modules', 'host', 'newroot'].map((p): CpioEntry => ({ kind: 'dir', path: p })),
    // The kernel opens /dev/console before /init runs (and before devtmpfs).
    { kind: 'char', path: 'dev/console', major: 5, minor: 1 },
    { kind: 'file', path: 'bin/busybox', data: busybox, mode: 0o755 },
    ...modules.map((m): CpioEntry => ({ kind: 'file', path: `lib/modules/${m.name}.ko`, data: m.data })),
    { kind: 'file', path: 'init', data: Buffer.from(initScript(modules.map((m) => m.name))), mode: 0o755 },
  ];
}

/** The archive, gzip'd or not (the kernel unpacks both; uncompressed boots
 * a little faster under TCG, and it is cached anyway). */
export function initramfs(inputs: InitramfsInputs, gzip = false): Buffer {
  const archive = cpioArchive(initramfsEntries(inputs));
  return gzip ? zlib.gzipSync(archive) : archive;
}

// ---- reading the inputs from the host --------------------------------------------------------

/** The program interpreter (PT_INTERP) of a 64- or 32-bit little-endian
 * ELF executable: null for a static one. Throws for a file that is not ELF. */
export function elfInterpreter(buf: Buffer): string | null {
  if (buf.length < 52 || buf.readUInt32BE(0) !== 0x7f454c46) throw new Error('not an ELF file');
  const is64 = buf[4] === 2;
  const phoff = is64 ? Number(buf.readBigUInt64LE(0x20)) : buf.readUInt32LE(0x1c);
  const phentsize = buf.readUInt16LE(is64 ? 0x36 : 0x2a);
  const phnum = buf.readUInt16LE(is64 ? 0x38 : 0x2c);
  for (let i = 0; i < phnum; i++) {
    const ph = phoff + i * phentsize;
    if (ph + phentsize > buf.length) break;
    if (buf.readUInt32LE(ph) !== 3) continue; // PT_INTERP
    const off = is64 ? Number(buf.readBigUInt64LE(ph + 8)) : buf.readUInt32LE(ph + 4);
    const size = is64 ? Number(buf.readBigUInt64LE(ph + 32)) : buf.readUInt32LE(ph + 16);
    return buf.toString('latin1', off, off + size).replace(/\0+$/, '');
  }
  return null;
}

/** Where a static busybox may be: Debian's busybox-static installs
 * /bin/busybox (the dynamic `busybox` package does too, so it is checked). */
export const BUSYBOX_PATHS = ['/bin/busybox', '/usr/bin/busybox', '/sbin/busybox', '/usr/lib/initramfs-tools/bin/busybox'];

/** The first static busybox of `candidates`, or a VmSetupError naming the fix. */
export function findStaticBusybox(candidates: readonly string[] = BUSYBOX_PATHS): string {
  const dynamic: string[] = [];
  for (const p of candidates) {
    let buf: Buffer;
    try {
      buf = fs.readFileSync(p);
    } catch {
      continue;
    }
    try {
      if (elfInterpreter(buf) === null) return p;
      dynamic.push(p);
    } catch {
      // not ELF (a script?): not usable
    }
  }
  const why = dynamic.length ? `${dynamic.join(', ')} is dynamically linked` : 'there is no busybox';
  throw new VmSetupError('ENOBUSYBOX', `the guest's initramfs needs a static busybox, but ${why}: apt-get install busybox-static`);
}

/** A module file's bytes, decompressed (busybox insmod may not read .ko.xz / .ko.zst). */
function readModule(file: string): Buffer {
  const data = fs.readFileSync(file);
  if (file.endsWith('.ko.xz')) return decompress('xz', data);
  if (file.endsWith('.ko.zst')) return decompress('zstd', data);
  if (file.endsWith('.ko.gz')) return zlib.gunzipSync(data);
  return data;
}

/** The modules the guest needs, from `modulesDir` (/lib/modules/VER). */
export function readGuestModules(modulesDir: string, wanted: readonly string[] = GUEST_MODULES): ModuleFile[] {
  let depText: string;
  try {
    depText = fs.readFileSync(path.join(modulesDir, 'modules.dep'), 'utf8');
  } catch (e) {
    throw new VmSetupError('EMODULES', `cannot read ${modulesDir}/modules.dep (${(e as Error).message}): the kernel's modules are not installed`);
  }
  let builtin = new Set<string>();
  try {
    builtin = parseBuiltin(fs.readFileSync(path.join(modulesDir, 'modules.builtin'), 'utf8'));
  } catch {
    // no list: every wanted module must be in modules.dep
  }
  try {
    return resolveModules(parseModulesDep(depText), wanted, builtin);
  } catch (e) {
    throw new VmSetupError('EMODULES', `${modulesDir}: ${(e as Error).message}`);
  }
}

export function readInitramfsInputs(busyboxPath: string, modulesDir: string): InitramfsInputs {
  const modules = readGuestModules(modulesDir).map((m) => ({ name: m.name, data: readModule(path.join(modulesDir, m.path)) }));
  return { busybox: fs.readFileSync(busyboxPath), modules };
}
