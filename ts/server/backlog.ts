// What a peer's socket had no room for yet, and when that makes the peer
// too slow: pure state over plain values (the server executes it), so the
// rules are unit-tested with a fake clock (__test__/backlog.test.ts).
//
// Messages are kept as runs: `count` messages of one value, the first with
// `fd` and each next with the next vector of the same peer (a whole group
// is one run). Fds are named, not held, so a backlog costs no descriptors.
// A peer may have `maxQueued` messages waiting beyond its welcome (sent all
// at once before it could read any); over that it is too slow once it has
// taken nothing for `stallMs`, or at once past HARD_QUEUE_FACTOR times the
// bound, even while it reads.
import type { FdRef } from '../protocol.js';

/** A reading peer's backlog may grow to this many times maxQueued. */
export const HARD_QUEUE_FACTOR = 64;

export interface Waiting {
  value: number;
  fd: FdRef | null;
}

interface Run extends Waiting {
  count: number;
}

export class Backlog {
  private runs: Run[] = [];
  private head = 0;
  /** Messages waiting. */
  waiting = 0;
  /** When the socket last took one (or the peer connected). */
  private progress: number;

  /** `welcome`: the messages of the peer's welcome, which never count. */
  constructor(
    now: number,
    private readonly welcome: number,
  ) {
    this.progress = now;
  }

  get empty(): boolean {
    return this.head === this.runs.length;
  }

  /** Appends a message, extending the last run when it is its next one. */
  push(s: Waiting): void {
    this.waiting++;
    const last = this.empty ? undefined : this.runs[this.runs.length - 1];
    if (last && last.value === s.value && last.fd?.kind === 'vector' && s.fd?.kind === 'vector' && s.fd.peer === last.fd.peer && s.fd.vector === last.fd.vector + last.count) {
      last.count++;
      return;
    }
    this.runs.push({ value: s.value, fd: s.fd, count: 1 });
  }

  /** The oldest waiting message, or null. */
  front(): Waiting | null {
    if (this.empty) return null;
    const r = this.runs[this.head];
    return { value: r.value, fd: r.fd };
  }

  /** The front message left (sent, or skipped because its fd's owner left) at `now`. */
  shift(now: number): void {
    if (this.empty) return;
    const r = this.runs[this.head];
    this.waiting--;
    this.progress = now;
    if (--r.count === 0) this.head++;
    else if (r.fd?.kind === 'vector') r.fd = { ...r.fd, vector: r.fd.vector + 1 };
    if (this.empty) {
      this.runs = [];
      this.head = 0;
    } else if (this.head > 1024 && this.head * 2 > this.runs.length) {
      this.runs = this.runs.slice(this.head);
      this.head = 0;
    }
  }

  /** Why the peer is too slow at `now`, or null while it is not. */
  tooSlow(now: number, maxQueued: number, stallMs: number): string | null {
    if (this.waiting <= maxQueued + this.welcome) return null;
    const idle = now - this.progress;
    if (idle > stallMs) return `too slow: ${this.waiting} messages waiting beyond its socket buffer (limit ${maxQueued}) and none taken for ${idle} ms`;
    if (this.waiting > maxQueued * HARD_QUEUE_FACTOR + this.welcome) {
      return `too slow: ${this.waiting} messages waiting beyond its socket buffer (limit ${maxQueued}; a peer that reads may have ${maxQueued * HARD_QUEUE_FACTOR})`;
    }
    return null;
  }
}
