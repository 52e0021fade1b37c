// What can stop `famez vm` before a VM boots: each a sentence naming the
// fix (usually a package to install). The CLI prints it and exits 2.
import { FamezError } from '../errors.js';

export type VmSetupCode = 'ENOKERNEL' | 'EKERNEL' | 'ENOBUSYBOX' | 'ENOQEMU' | 'ENOTOOL' | 'EMODULES';

export class VmSetupError extends FamezError<VmSetupCode> {
  override name = 'VmSetupError';
}
