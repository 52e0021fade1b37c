// The CLI's logger: pino, writing synchronously (no worker thread) into a
// sink that either passes its JSON lines on (--log-format json) or turns
// each into one readable line:
//   2026-12-03T08:40:01.123Z INFO  switch: peer 1 -> switch: ping (4 bytes, slot)
// to the terminal (Output: EPIPE-safe, prompt-safe) or to --log-file.
import { pino, type Logger as PinoLogger } from 'pino';

import type { LogOptions } from '../server/options.js';
import { LogFile, Output } from './output.js';

const LABELS: Record<string, string> = { fatal: 'FATAL', error: 'ERROR', warn: 'WARN ', info: 'INFO ', debug: 'DEBUG', trace: 'TRACE' };
const COLOURS: Record<string, string> = { fatal: '35', error: '31', warn: '33', info: '32', debug: '36', trace: '90' };

/** One pino JSON line as one readable line: time, level, message. The
 * fields are not repeated (the message says them; --log-format json has
 * them all). */
export function prettyLine(json: string, colour = false): string {
  let e: Record<string, unknown>;
  try {
    e = JSON.parse(json) as Record<string, unknown>;
  } catch {
    return json.endsWith('\n') ? json : `${json}\n`;
  }
  const level = String(e.level);
  let label = LABELS[level] ?? level.toUpperCase();
  if (colour) label = `\x1b[${COLOURS[level] ?? '0'}m${label}\x1b[0m`;
  const component = e.component === 'switch' ? 'switch: ' : '';
  const err = e.err as { message?: string } | undefined;
  const extra = err?.message && !String(e.msg).includes(err.message) ? `: ${err.message}` : '';
  return `${String(e.time)} ${label} ${component}${String(e.msg ?? '')}${extra}\n`;
}

export interface CliLogger {
  logger: PinoLogger;
  /** Reopens --log-file (SIGHUP); false when there is none. Throws when
   * the file cannot be opened again. */
  reopen(): boolean;
  /** The log file, when there is one. */
  file: LogFile | null;
  close(): void;
}

/** A logger writing per `o`: to `output` (the terminal, stdout) or to
 * o.file. Throws when the file cannot be opened. */
export function createCliLogger(o: LogOptions, output: Output, bindings: Record<string, unknown> = {}): CliLogger {
  const file = o.file === null ? null : new LogFile(o.file);
  const colour = file === null && output.isTTY && !process.env.NO_COLOR;
  const sink = {
    write(line: string): void {
      const text = o.format === 'json' ? line : prettyLine(line, colour);
      if (file) file.write(text);
      else output.write(text);
    },
  };
  const logger = pino(
    {
      level: o.level,
      base: { pid: process.pid, ...bindings },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    sink,
  );
  return {
    logger,
    file,
    reopen(): boolean {
      if (!file) return false;
      file.reopen();
      return true;
    },
    close(): void {
      file?.close();
    },
  };
}
