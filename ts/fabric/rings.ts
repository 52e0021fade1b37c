// The server's ring-channel set-up (docs/ring-channels.md): one ring per
// ordered pair of endpoints after the mailbox slots, described in slot 0.
// The capacity is the largest power of two up to DEFAULT_RING_CAPACITY for
// which every ring fits in the shared object; when not even MIN_RING_CAPACITY
// fits, the fabric runs without rings (the mailbox slots still work) and
// says so.
import type { RingLayoutInfo } from '../native.js';
import { FamezError } from '../errors.js';
import { ringLayout, type Mailbox } from '../native.js';

/** 16 KiB rings (messages up to 8,184 bytes): 210 of them fit in the
 * default 4 MiB object of 14 peers. */
export const DEFAULT_RING_CAPACITY = 16 * 1024;
/** Below this a ring carries messages hardly bigger than a slot's. */
export const MIN_RING_CAPACITY = 1024;

/** The largest ring capacity (a power of two, MIN..max) whose layout fits
 * in `size` bytes for `nClients` peers, or null. */
export function fitRingCapacity(nClients: number, size: number, max = DEFAULT_RING_CAPACITY, min = MIN_RING_CAPACITY): number | null {
  for (let capacity = max; capacity >= min; capacity /= 2) {
    if (ringLayout(nClients, capacity).end <= size) return capacity;
  }
  return null;
}

/** The requested ring capacity does not fit the shared object. */
export class RingsDoNotFit extends FamezError<'ENOSPC'> {
  override name = 'RingsDoNotFit';
  constructor(message: string) {
    super('ENOSPC', message);
  }
}

function kib(n: number): string {
  return n % 1024 === 0 ? `${n / 1024} KiB` : `${n} bytes`;
}

/** Sets up the rings in a freshly formatted mailbox, before any peer
 * connects; returns their layout, or null (with a log line) when they do
 * not fit. */
export function setupFabricRings(
  mailbox: Mailbox,
  size: number,
  nClients: number,
  log?: (line: string) => void,
  requested: number | null = null,
): RingLayoutInfo | null {
  if (requested !== null && ringLayout(nClients, requested).end > size) {
    throw new RingsDoNotFit(
      `rings of ${kib(requested)} for ${nClients} peers need ${ringLayout(nClients, requested).end} bytes of shared memory; -l gives ${size}: raise -l or lower --ring-capacity`,
    );
  }
  const capacity = requested ?? fitRingCapacity(nClients, size);
  if (capacity === null) {
    const smallest = ringLayout(nClients, MIN_RING_CAPACITY);
    log?.(
      `no ring channels: ${smallest.count} rings of ${kib(MIN_RING_CAPACITY)} need ${smallest.end} bytes of shared memory, there are ${size}; the mailbox slots work without them`,
    );
    return null;
  }
  const layout = mailbox.setupRings(capacity);
  log?.(
    `ring channels: ${layout.count} rings of ${kib(layout.capacity)} (messages up to ${layout.maxMessage} bytes) at ${layout.base}..${layout.end}`,
  );
  return layout;
}
