// famez vm as a library: find what the host has, build (or take from the
// cache) the guest's kernel and initramfs, boot VMs; the QEMU line and the
// archive writer are pure and usable alone.
export { bootVm, Vm, type VmEvents, type VmExit, type VmOptions } from './vm.js';
export { guestFiles, cacheRoot, type GuestFiles } from './cache.js';
export { findKernel, findQemu, findStaticBusybox } from './host.js';
export { buildQemuArgs, formatCommand, guestScript, kernelCommandLine, type Accel, type FamDevice, type QemuConfig } from './qemu-args.js';
export { cpioArchive, parseCpio, type CpioEntry } from './cpio.js';
export { extractVmlinux, payloadOf } from './kernel.js';
export { VmSetupError, type VmSetupCode } from './errors.js';
export { DEFAULT_GUEST_COMMAND } from './options.js';
