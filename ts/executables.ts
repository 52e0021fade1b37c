// Finding a program: on PATH, else in the folders a minimal PATH leaves out
// (a guest's /init, a daemon's environment). Used by famez vm (QEMU,
// setpriv) and the guest side (modprobe).
import * as fs from 'node:fs';
import * as path from 'node:path';

/** An executable `name` on PATH (or in /usr/bin, /usr/local/bin, /usr/sbin,
 * /sbin, /bin), or null. */
export function findExecutable(name: string, envPath = process.env.PATH ?? ''): string | null {
  if (name.includes('/')) return isExecutable(name) ? name : null;
  for (const dir of [...envPath.split(path.delimiter), '/usr/bin', '/usr/local/bin', '/usr/sbin', '/sbin', '/bin']) {
    if (dir && isExecutable(path.join(dir, name))) return path.join(dir, name);
  }
  return null;
}

function isExecutable(file: string): boolean {
  try {
    fs.accessSync(file, fs.constants.X_OK);
    return fs.statSync(file).isFile();
  } catch {
    return false;
  }
}
