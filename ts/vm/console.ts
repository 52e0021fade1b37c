// A VM's serial console, read line by line on the host: what is the
// command's output, what is /init telling the host (its start, the command's
// exit status, why it could not run it), and what is firmware noise. Pure.
import { MARK } from './initramfs.js';

export type ConsoleLine =
  /** Output of the guest (the command, or the kernel). */
  | { kind: 'output'; text: string }
  /** /init has started: the kernel is up; `text` is what shared its line (a kernel message). */
  | { kind: 'init'; text: string }
  /** The command has exited with `status`; `text` is output that preceded the mark on its line. */
  | { kind: 'exit'; status: number; text: string }
  /** Something /init says (a setup failure, a missing folder). */
  | { kind: 'note'; text: string }
  /** Firmware and terminal noise, shown only when asked (-v). */
  | { kind: 'noise'; text: string };

// CSI sequences SeaBIOS writes (clear screen, wrap off) and other escapes.
// eslint-disable-next-line no-control-regex
const ESCAPES = /\x1b(\[[0-9;?]*[A-Za-z]|[()][A-Za-z0-9]|[A-Za-z=>])/g;
const FIRMWARE = /^(SeaBIOS \(version .*\)|iPXE .*|Booting from ROM\.\.)/;
// Found at the end of a line: a kernel message printed meanwhile, or output
// without a final newline, may come first.
const EXIT = new RegExp(`${MARK} exit (\\d+)$`);
const INIT = new RegExp(`${MARK} init$`);

export function classify(raw: string): ConsoleLine {
  // eslint-disable-next-line no-control-regex
  let text = raw.replace(ESCAPES, '').replace(/\r/g, '').replace(/[\x00-\x08\x0b\x0c\x0e-\x1f]/g, '');
  // SeaBIOS's last words share a line with the guest's first.
  const fw = FIRMWARE.exec(text);
  if (fw) {
    text = text.slice(fw[0].length);
    if (!text) return { kind: 'noise', text: fw[0] };
  }
  const exit = EXIT.exec(text);
  if (exit) return { kind: 'exit', status: Number(exit[1]), text: text.slice(0, exit.index) };
  const init = INIT.exec(text);
  if (init) return { kind: 'init', text: text.slice(0, init.index) };
  if (text.startsWith(`${MARK} `)) return { kind: 'note', text: text.slice(MARK.length + 1) };
  // poweroff -f's last kernel line, expected at every end.
  if (/^\[\s*\d+\.\d+\] reboot: Power down$/.test(text)) return { kind: 'noise', text };
  return { kind: 'output', text };
}
