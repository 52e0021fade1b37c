// ts/link/streams.ts's LinkEnd, run by the native core
// (crates/famez-core/src/link/streams.rs through famez-node's LinkEndCore):
// the same rules, the same frames for the same inputs (tested against each
// other), the same interface. Streams are objects here and GCID pairs there;
// the core's ERANGE is a RangeError here, its EPACKET and EFIELD a FrameError.
import { errorCode, errorText, LinkEndCore } from '../native.js';
import { FrameError, type FrameErrorCode } from './frame.js';
import type { Delivered, LinkEndConfig, LinkEndStats, LinkEvent, Stream } from './streams.js';

function rethrow(e: unknown): never {
  const code = errorCode(e);
  if (code === 'ERANGE') throw new RangeError(errorText(e));
  if (code === 'EPACKET' || code === 'EFIELD') throw new FrameError(code as FrameErrorCode, errorText(e));
  throw e;
}

function u32(name: string, v: unknown): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v >= 2 ** 32) throw new RangeError(`${name} must be a u32`);
  return v;
}

function gcid(v: number): number {
  if (!Number.isInteger(v) || v < 0 || v >= 2 ** 28) throw new FrameError('EFIELD', `a GCID is 28 bits, not ${String(v)}`);
  return v;
}

type CoreStats = ReturnType<LinkEndCore['stats']>;
const statsOf = (s: CoreStats): LinkEndStats => ({ ...s, lastBadFrame: s.lastBadFrame ?? null });

export class NativeLinkEnd {
  private readonly core: LinkEndCore;

  constructor(config: LinkEndConfig) {
    const window = config.window ?? 64;
    if (!Number.isInteger(window) || window < 1 || window >= 2 ** 30) throw new RangeError('window must be 1..2^30-1');
    try {
      this.core = new LinkEndCore({ ...config, instance: u32('instance', config.instance), window, source: config.source === undefined ? undefined : gcid(config.source) });
    } catch (e) {
      rethrow(e);
    }
  }

  submit(stream: Stream, packet: Uint8Array, checked = false): boolean {
    try {
      return this.core.submit(gcid(stream.source), gcid(stream.destination), packet, checked);
    } catch (e) {
      rethrow(e);
    }
  }

  consumed(stream: Stream, n: number): void {
    try {
      this.core.consumed(stream.source, stream.destination, n);
    } catch (e) {
      rethrow(e);
    }
  }

  linkUp(now: number, path = 0): void {
    this.core.linkUp(now, path);
  }

  linkDown(path = 0): void {
    this.core.linkDown(path);
  }

  receive(bytes: Uint8Array, now: number, path = 0): void {
    this.core.receive(bytes, now, path);
  }

  handleTimeout(now: number): void {
    this.core.handleTimeout(now);
  }

  pollTransmit(now: number, path = 0): Uint8Array | null {
    return this.core.pollTransmit(now, path);
  }

  pollTrain(now: number, path = 0, maxBytes = 65536): Uint8Array | null {
    try {
      return this.core.pollTrain(now, path, maxBytes);
    } catch (e) {
      rethrow(e);
    }
  }

  pollTimeout(now: number): number | null {
    return this.core.pollTimeout(now);
  }

  pollDeliver(): Delivered | null {
    const d = this.core.pollDeliver();
    return d ? { stream: { source: d.source, destination: d.destination }, packet: d.packet } : null;
  }

  pollEvent(): LinkEvent | null {
    const e = this.core.pollEvent();
    if (!e) return null;
    switch (e.kind) {
      case 'up':
        return { kind: 'up', instance: e.instance!, path: e.path! };
      case 'dead':
        return { kind: 'dead', path: e.path! };
      case 'restarted':
        return { kind: 'restarted', instance: e.instance!, resent: e.resent! };
      default:
        return { kind: e.kind as 'stalled' | 'ready', stream: { source: e.source!, destination: e.destination! } };
    }
  }

  get isUp(): boolean {
    return this.core.isUp();
  }

  pathUp(path = 0): boolean {
    return this.core.pathUp(path);
  }

  get upPaths(): number[] {
    return this.core.upPaths();
  }

  dropPath(path: number): void {
    this.core.dropPath(path);
  }

  get deadAfterMs(): number {
    return this.core.deadAfterMs();
  }

  heardAt(path = 0): number {
    return this.core.heardAt(path);
  }

  get peer(): number | null {
    return this.core.peer() ?? null;
  }

  get stats(): LinkEndStats {
    return statsOf(this.core.stats());
  }

  pathStats(path = 0): LinkEndStats {
    return statsOf(this.core.pathStats(path));
  }

  /** Frames of `path` dropped as bad or refused (pathStats' badFrames +
   * rejectedFrames), without making the stats object. */
  pathBad(path = 0): number {
    return this.core.pathBad(path);
  }

  sendBuffered(stream: Stream): number {
    return this.core.sendBuffered(stream.source, stream.destination);
  }

  receiveBuffered(stream: Stream): number {
    return this.core.receiveBuffered(stream.source, stream.destination);
  }

  credit(stream: Stream): number {
    return this.core.credit(stream.source, stream.destination);
  }
}
