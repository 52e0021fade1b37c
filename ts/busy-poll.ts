// Busy polling for a process's event loop (famez serve --busy-poll): after
// kick(), for a window of microseconds, the loop never sleeps. It turns
// through a chain of immediates, so libuv polls every fd (doorbells,
// sockets, a link's completion queue) without a timeout and sees what
// arrives without a wake-up; each turn first yields the CPU (sched_yield),
// so a process that shares the CPU (the peer beside a switch) still runs.
// Every kick starts the window again. Off (0), it does nothing.
import { yieldCpu } from './native.js';

export class BusyPoll {
  private until = 0;
  private handle: NodeJS.Immediate | null = null;
  private closed = false;

  /** `us`: the window, 0..1,000,000 microseconds (0: off). */
  constructor(readonly us: number) {
    if (!(Number.isInteger(us) && us >= 0 && us <= 1_000_000)) throw new RangeError(`busy polling is 0..1000000 microseconds, not ${us}`);
  }

  /** Something happened: poll for the window from now. */
  kick(): void {
    if (this.us === 0 || this.closed) return;
    this.until = performance.now() + this.us / 1000;
    this.handle ??= setImmediate(this.turn);
  }

  /** Whether the loop is polling now. */
  get polling(): boolean {
    return this.handle !== null;
  }

  /** Stops polling for good (the process's loop may then end). */
  close(): void {
    this.closed = true;
    if (this.handle) clearImmediate(this.handle);
    this.handle = null;
  }

  private readonly turn = (): void => {
    if (this.closed || performance.now() >= this.until) {
      this.handle = null;
      return;
    }
    yieldCpu();
    this.handle = setImmediate(this.turn);
  };
}
