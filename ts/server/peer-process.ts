// Who is at the other end of a peer's socket, for log lines: the pid the
// kernel recorded when it connected (UnixStream.peerPid, SO_PEERCRED) and
// that process's command name from /proc, so that a line can say whether a
// QEMU or some other process joined.
import * as fs from 'node:fs';

export type PeerKind = 'qemu' | 'process';

export interface PeerProcess {
  pid: number;
  /** The kernel's name of the process (/proc/PID/comm): the file name it
   * executed, cut to 15 bytes ("qemu-system-x86" for qemu-system-x86_64),
   * unless it renamed itself; control characters are shown as '?' (the
   * process chooses this text, and it goes into log lines). Null when it
   * cannot be read: the process is gone, or /proc hides it (hidepid). */
  command: string | null;
  /** 'qemu' when the command starts with "qemu" (qemu-system-*, qemu-kvm),
   * else 'process' (a famez client, a test peer, anything else). A peer
   * can name itself anything: this is for reading logs, not for trust. */
  kind: PeerKind;
}

/** The process `pid` (a peer's UnixStream.peerPid) as far as /proc tells. */
export function peerProcess(pid: number): PeerProcess {
  let command: string | null = null;
  if (Number.isSafeInteger(pid) && pid > 0) {
    try {
      // eslint-disable-next-line no-control-regex
      command = fs.readFileSync(`/proc/${pid}/comm`, 'utf8').replace(/\n$/, '').replace(/[\u0000-\u001f\u007f]/g, '?');
    } catch {
      // gone, or not visible to this process
    }
  }
  return { pid, command, kind: peerKind(command) };
}

/** 'qemu' for a command starting with "qemu", else 'process'. */
export function peerKind(command: string | null): PeerKind {
  return command?.startsWith('qemu') ? 'qemu' : 'process';
}

/** "qemu-system-x86, pid 4242" (or "pid 4242" when the command is unknown). */
export function describePeerProcess(p: PeerProcess): string {
  return p.command === null ? `pid ${p.pid}` : `${p.command}, pid ${p.pid}`;
}
