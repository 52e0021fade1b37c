// Where the CLI's text goes: stdout, or stderr once stdout is gone, or
// nowhere once both are. A closed pipe (`famez serve | head -3`), a
// terminal that went away (EIO) or any other write error never crashes the
// process: the stream is marked dead and the next one is used. A console
// prompt on the terminal is redrawn under every line written, so log lines
// never land in the middle of what the operator is typing.
import * as fs from 'node:fs';
import * as readline from 'node:readline';

/** What the console registers so that output keeps its prompt intact. */
export interface PromptLine {
  /** Clears the prompt line before output... */
  hide(): void;
  /** ...and draws it again, with what was typed, after it. */
  show(): void;
}

type Stream = NodeJS.WriteStream;

export class Output {
  private readonly dead = new Set<Stream>();
  private prompt: PromptLine | null = null;
  private lost = 0;

  constructor(
    private readonly streams: Stream[] = [process.stdout, process.stderr],
    /** Called once when a stream dies (to log it where the next one goes). */
    private readonly onDeath: (what: string) => void = () => undefined,
  ) {
    for (const s of streams) {
      // Without a listener an EPIPE from a closed pipe is an uncaught
      // exception; with one, the stream is just given up.
      s.on('error', (e: NodeJS.ErrnoException) => this.kill(s, e));
    }
  }

  /** Whether some stream still takes text. */
  get alive(): boolean {
    return this.streams.some((s) => !this.dead.has(s));
  }

  /** Whether the first live stream is a terminal. */
  get isTTY(): boolean {
    return this.current()?.isTTY === true;
  }

  /** Lines that went nowhere (every stream dead). */
  get dropped(): number {
    return this.lost;
  }

  setPrompt(prompt: PromptLine | null): void {
    this.prompt = prompt;
  }

  /** Writes `text` (whole lines) to the first live stream. */
  write(text: string): void {
    const s = this.current();
    if (!s) {
      this.lost++;
      return;
    }
    const prompt = this.prompt !== null && s.isTTY === true ? this.prompt : null;
    try {
      prompt?.hide();
      s.write(text);
      prompt?.show();
    } catch (e) {
      this.kill(s, e as NodeJS.ErrnoException);
      this.write(text);
    }
  }

  private current(): Stream | undefined {
    return this.streams.find((s) => !this.dead.has(s) && !s.destroyed && s.writable !== false);
  }

  private kill(s: Stream, e: NodeJS.ErrnoException): void {
    if (this.dead.has(s)) return;
    this.dead.add(s);
    const name = s === process.stdout ? 'stdout' : s === process.stderr ? 'stderr' : "a stream";
    this.onDeath(`${name} is gone (${e.code ?? e.message}): output goes ${this.current() ? 'to the next stream' : 'nowhere'}`);
  }
}

/** Keeps `rl`'s prompt (on the terminal at stdout) under every line
 * `output` writes, and shows it. Returns what ends that: the prompt line
 * cleared, for the last lines to take its place; idempotent. */
export function keepPrompt(rl: readline.Interface, output: Output): () => void {
  const hide = () => {
    readline.clearLine(process.stdout, 0);
    readline.cursorTo(process.stdout, 0);
  };
  output.setPrompt({ hide, show: () => rl.prompt(true) });
  rl.prompt();
  let kept = true;
  return () => {
    if (!kept) return;
    kept = false;
    if (output.isTTY) hide();
    output.setPrompt(null);
  };
}

/** A file the log is appended to, reopened on demand (SIGHUP, after
 * logrotate moved it). A write that fails is counted, never thrown. */
export class LogFile {
  private fd: number;
  failed = 0;

  constructor(readonly path: string) {
    this.fd = LogFile.open(path);
  }

  private static open(path: string): number {
    return fs.openSync(path, fs.constants.O_WRONLY | fs.constants.O_APPEND | fs.constants.O_CREAT, 0o640);
  }

  write(text: string): void {
    if (this.fd < 0) {
      this.failed++;
      return;
    }
    try {
      fs.writeSync(this.fd, text);
    } catch {
      this.failed++;
    }
  }

  /** Opens the path again (a new file when it was moved away). Throws
   * when it cannot be opened; the old file is kept then. */
  reopen(): void {
    const fd = LogFile.open(this.path);
    if (this.fd >= 0) fs.closeSync(this.fd);
    this.fd = fd;
  }

  close(): void {
    if (this.fd >= 0) fs.closeSync(this.fd);
    this.fd = -1;
  }
}
