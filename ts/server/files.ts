// What the server owns on the machine: its socket and shared-memory files,
// removed only while they are still the files it made (a successor's are
// left alone), and the one fd it keeps in reserve to refuse peers politely
// when the fd limit is reached.
import * as fs from 'node:fs';

import { fdLimit } from '../native.js';

export type FileIdentity = { dev: bigint; ino: bigint };

export function identity(p: string): FileIdentity | null {
  try {
    const st = fs.lstatSync(p, { bigint: true });
    return { dev: st.dev, ino: st.ino };
  } catch {
    return null;
  }
}

/** Removes `p` only while it is still the file `id` (ours). */
export function unlinkIfOurs(p: string, id: FileIdentity | null): boolean {
  const now = identity(p);
  if (!id || !now || now.dev !== id.dev || now.ino !== id.ino) return false;
  try {
    fs.unlinkSync(p);
    return true;
  } catch {
    return false;
  }
}

/** The fd kept in reserve for refusing peers when out of fds; null when
 * none can be opened. */
export function openReserve(): number | null {
  try {
    return fs.openSync('/dev/null', 'r');
  } catch {
    return null;
  }
}

export function describeFdLimit(): string {
  try {
    const { soft } = fdLimit();
    return `the limit is ${soft} fds`;
  } catch {
    return 'the fd limit is reached';
  }
}
