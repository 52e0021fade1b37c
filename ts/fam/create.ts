// FAME's fabric-attached memory: the backing file every VM maps as its
// ivshmem-plain region (famez stanza --plain, famez vm --fam). Sparse by
// default (blocks are taken as VMs write), reserved with `preallocate`;
// on hugetlbfs the size must be a whole number of huge pages, and the file
// is made the same way (hugetlbfs files are never sparse: pages are taken
// when they are first touched).
import * as fs from 'node:fs';
import * as path from 'node:path';

import { FamezError } from '../errors.js';
import { errorCode, errorText, preallocate } from '../native.js';

export class FamError extends FamezError<'EEXIST' | 'ENOENT' | 'ENOSPC' | 'EINVAL' | 'EACCES' | 'EIO'> {
  override name = 'FamError';
}

/** statfs f_type of hugetlbfs. */
const HUGETLBFS_MAGIC = 0x958458f6;

export interface FamFile {
  path: string;
  size: number;
  /** Bytes the file system has reserved for it now. */
  allocated: number;
  hugetlbfs: boolean;
}

export function describeFam(file: string): FamFile {
  const st = fs.statSync(file);
  const fsInfo = fs.statfsSync(path.dirname(file));
  return { path: file, size: st.size, allocated: st.blocks * 512, hugetlbfs: fsInfo.type === HUGETLBFS_MAGIC };
}

/** Creates `file` of `size` bytes (never an existing one). */
export function createFam(file: string, size: number, options: { preallocate?: boolean; mode?: number } = {}): FamFile {
  const dir = path.dirname(path.resolve(file));
  let fsInfo: fs.StatsFs;
  try {
    fsInfo = fs.statfsSync(dir);
  } catch {
    throw new FamError('ENOENT', `${dir} does not exist: create the directory first`);
  }
  const huge = fsInfo.type === HUGETLBFS_MAGIC;
  if (huge && size % fsInfo.bsize !== 0) {
    throw new FamError('EINVAL', `${dir} is hugetlbfs with ${fsInfo.bsize}-byte pages: the size must be a multiple of that`);
  }
  const free = fsInfo.bavail * fsInfo.bsize;
  if (options.preallocate && size > free) {
    throw new FamError('ENOSPC', `${dir} has ${free} bytes free; reserving ${size} needs more: free space or drop --preallocate (a sparse file takes blocks as VMs write)`);
  }
  let fd: number;
  try {
    fd = fs.openSync(file, 'wx', options.mode ?? 0o600);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') {
      throw new FamError('EEXIST', `${file} exists (${fs.statSync(file).size} bytes): famez fam create makes a new file; remove it first, or use it as it is`);
    }
    if (code === 'EACCES' || code === 'EPERM') throw new FamError('EACCES', `cannot create ${file}: permission denied`);
    throw new FamError('EIO', `cannot create ${file}: ${(e as Error).message}`);
  }
  try {
    // Exactly the mode asked for, whatever the umask.
    fs.fchmodSync(fd, options.mode ?? 0o600);
    if (options.preallocate) preallocate(fd, size);
    else fs.ftruncateSync(fd, size);
  } catch (e) {
    fs.closeSync(fd);
    fs.unlinkSync(file);
    const code = errorCode(e) || (e as NodeJS.ErrnoException).code;
    if (code === 'ENOSPC') throw new FamError('ENOSPC', `${dir} ran out of space reserving ${size} bytes; nothing was left behind`);
    throw new FamError('EIO', `could not size ${file} to ${size} bytes (${errorText(e)}); nothing was left behind`);
  }
  fs.closeSync(fd);
  return describeFam(file);
}
