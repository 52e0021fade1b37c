// The guest transport: a fabric peer inside a VM, on its ivshmem-doorbell
// device (docs/guest.md). The same three things as the host transport,
// from another place:
//
//   in    one eventfd per MSI-X vector, routed by VFIO (vector S rings
//         when peer S rang this peer; vector 0 when someone joined or left)
//   out   ring(peer, vector): one 32-bit store to BAR0's doorbell
//   mem   BAR2, the shared object
//
// A guest gets no join or leave messages (its QEMU does), so it learns who
// is present from the present words the switch keeps (presence.ts): read
// at open, again on every vector-0 interrupt, and every presenceCheckMs
// in case one was missed.
//
// Where VFIO is impossible (no IOMMU and no no-IOMMU mode, no vfio-pci)
// the polling fallback maps sysfs resource0/resource2 instead: rings work,
// nothing interrupts, and every pollMs the transport looks at each peer's
// slot and ring to this peer and reports an interrupt for those that hold
// something. It is marked as such (`mode`, `where`).
import '../dispose.js';
import { EventEmitter } from 'node:events';

import type { PeerTransport, TransportEvents } from '../transport.js';
import { EventFd, GuestDevice, Mailbox, errorCode, errorText, type RingLayoutInfo, type SharedMemory } from '../native.js';
import { GLOBAL_N_CLIENTS, GLOBAL_N_EVENTS } from '../layout.generated.js';
import { FEATURE_MEMBERSHIP_BELL } from '../fabric/features.js';
import { presenceChanges, readPresence } from '../fabric/presence.js';
import { RingReader, ringOffset } from '../fabric/ring.js';
import { Slots } from '../fabric/slots.js';
import { GuestError, bindVfio, choose, listIvshmem, type IvshmemDevice } from './pci.js';

export interface GuestTransportOptions {
  /** The device's PCI address (default: the only ivshmem-doorbell). */
  device?: string;
  /** 'vfio' (interrupts; fails when impossible), 'poll' (sysfs, no
   * interrupts) or 'auto' (default: VFIO, else poll, said in `notes`). */
  mode?: 'auto' | 'vfio' | 'poll';
  /** Poll interval of the fallback (default 2 ms). */
  pollMs?: number;
  /** How often to re-read the present words besides vector 0 (default
   * 1000 ms). */
  presenceCheckMs?: number;
  /** Where sysfs is (tests). */
  sysfs?: string;
}

export class GuestTransport extends EventEmitter<TransportEvents> implements PeerTransport {
  readonly id: number;
  readonly vectors: number;
  readonly where: string;
  readonly features = FEATURE_MEMBERSHIP_BELL;
  /** 'vfio' (interrupts) or 'poll' (the sysfs fallback). */
  readonly mode: 'vfio' | 'poll';
  /** What opening did and chose (binding, fallback), for a log. */
  readonly notes: string[];
  readonly sharedMemory: SharedMemory;
  private readonly device: GuestDevice;
  /** BAR0 mapped (null when it cannot be): ring() is one store to its
   * doorbell word, without a native call. */
  private readonly registers: SharedMemory | null;
  private readonly doorbell: Uint32Array | null;
  private readonly bells: EventFd[] = [];
  private memoryBuffer: ArrayBuffer | null = null;
  private present = new Map<number, bigint>();
  private readonly timers: NodeJS.Timeout[] = [];
  private closedReason: string | null = null;
  /** The fallback's view of the slots and rings. */
  private poller: Poller | null = null;

  private constructor(device: GuestDevice, dev: IvshmemDevice, notes: string[], options: GuestTransportOptions) {
    super();
    this.device = device;
    this.notes = notes;
    this.mode = device.mode === 'vfio' ? 'vfio' : 'poll';
    this.id = device.ivPosition;
    this.sharedMemory = device.sharedMemory();
    this.registers = device.registers();
    this.doorbell = this.registers ? new Uint32Array(this.registers.buffer as ArrayBuffer, 0, 4) : null;
    const memory = this.memory;
    if (this.mode === 'vfio') {
      this.vectors = device.vectors;
      for (let v = 0; v < this.vectors; v++) this.bells.push(new EventFd());
      try {
        device.setInterrupts(this.bells.map((b) => b.fd));
      } catch (e) {
        this.release();
        throw e;
      }
      this.bells.forEach((bell, vector) =>
        bell.watch((count) => {
          if (vector === 0) this.refresh();
          else this.emit('interrupt', { vector, count });
        }),
      );
    } else {
      // No MSI-X: the fabric's vector count, from the globals.
      this.vectors = Number(new BigUint64Array(memory, GLOBAL_N_EVENTS, 1)[0]);
      this.poller = new Poller(memory, this.sharedMemory, Number(new BigUint64Array(memory, GLOBAL_N_CLIENTS, 1)[0]), this.id);
      const every = options.pollMs ?? 2;
      this.timers.push(setInterval(() => this.poll(), every));
    }
    this.where = `PCI ${dev.bdf} (${this.mode === 'vfio' ? `VFIO, ${device.iommu}` : `sysfs polling every ${options.pollMs ?? 2} ms, no interrupts`})`;
    this.present = this.look();
    const check = setInterval(() => this.refresh(), options.presenceCheckMs ?? 1000);
    check.unref();
    this.timers.push(check);
  }

  /** Finds the device, binds it to vfio-pci when needed, and opens it.
   * Throws GuestError (or the binding's coded error) naming the fix. */
  static open(options: GuestTransportOptions = {}): GuestTransport {
    const sysfs = options.sysfs ?? '/sys';
    const mode = options.mode ?? 'auto';
    const dev = choose(listIvshmem(sysfs), options.device);
    const notes: string[] = [];
    let device: GuestDevice;
    if (mode === 'poll') {
      device = GuestDevice.openSysfs(dev.bdf);
      notes.push('polling over sysfs (asked for): no interrupts');
    } else {
      try {
        notes.push(...bindVfio(dev, sysfs));
        device = GuestDevice.openVfio(dev.bdf);
      } catch (e) {
        const code = e instanceof GuestError ? e.code : errorCode(e);
        if (mode === 'vfio' || code !== 'ENOTSUP') throw e;
        device = GuestDevice.openSysfs(dev.bdf);
        notes.push(`VFIO is impossible here (${e instanceof GuestError ? e.message : errorText(e)}); polling over sysfs instead: no interrupts`);
      }
    }
    try {
      return new GuestTransport(device, dev, notes, options);
    } catch (e) {
      device.close();
      throw e;
    }
  }

  get closed(): boolean {
    return this.closedReason !== null;
  }

  /** The shared object as one ArrayBuffer (throws past Node's limit). */
  get memory(): ArrayBuffer {
    this.memoryBuffer ??= this.sharedMemory.buffer as ArrayBuffer;
    return this.memoryBuffer;
  }

  peerIds(): number[] {
    return [...this.present.keys()].filter((id) => id !== this.id).sort((a, b) => a - b);
  }

  ring(peer: number, vector: number): void {
    if (this.closedReason !== null) throw new GuestError('EINVAL', `the guest transport is closed (${this.closedReason})`);
    if (!this.present.has(peer) && peer !== this.id) {
      this.refresh();
      if (!this.present.has(peer)) throw new GuestError('EINVAL', `peer ${peer} is not present (present: ${this.peerIds().join(', ') || 'none'})`);
    }
    if (!Number.isInteger(vector) || vector < 0 || vector >= this.vectors) throw new GuestError('EINVAL', `peers have vectors 0..${this.vectors - 1}, not ${vector}`);
    // One 32-bit store of peer << 16 | vector to BAR0 + 12 (MMIO: QEMU
    // signals the peer's eventfd).
    if (this.doorbell) this.doorbell[3] = ((peer << 16) | vector) >>> 0;
    else this.device.ring(peer, vector);
  }

  private look(): Map<number, bigint> {
    try {
      return readPresence(this.memory);
    } catch {
      return new Map();
    }
  }

  /** Reads the present words again and reports who joined and left. */
  private refresh(): void {
    if (this.closedReason !== null) return;
    const now = this.look();
    const { leave, join } = presenceChanges(this.present, now);
    this.present = now;
    for (const id of leave) if (id !== this.id) this.emit('leave', { id });
    for (const id of join) if (id !== this.id) this.emit('join', { id, vectors: this.vectors });
    // Our own word gone: the server dropped this VM's QEMU (or restarted).
    if (leave.includes(this.id) && !now.has(this.id)) this.shutdown('the switch says this peer has left (its QEMU was disconnected)');
  }

  private poll(): void {
    if (this.closedReason !== null || !this.poller) return;
    for (const vector of this.poller.pending(this.present.keys())) this.emit('interrupt', { vector, count: 1 });
  }

  private release(): void {
    for (const t of this.timers) clearInterval(t);
    for (const b of this.bells) b.close();
    this.poller?.close();
    this.memoryBuffer = null;
    this.registers?.close();
    this.sharedMemory.close();
    this.device.close();
  }

  private shutdown(reason: string): void {
    if (this.closedReason !== null) return;
    this.closedReason = reason;
    this.release();
    this.emit('close', { reason });
  }

  close(): void {
    this.shutdown('closed by the client');
  }

  /** close(), for `using`. */
  [Symbol.dispose](): void {
    this.close();
  }
}

/** The fallback's look at what peers left for this one: a slot whose
 * message is for it, a ring to it that is not empty. */
class Poller {
  private readonly slots: Slots;
  private readonly layout: RingLayoutInfo | null;
  private readonly rings = new Map<number, RingReader>();

  constructor(
    private readonly memory: ArrayBuffer,
    shm: SharedMemory,
    nClients: number,
    private readonly me: number,
  ) {
    this.slots = new Slots(memory, nClients + 1);
    const mb = new Mailbox(shm, nClients);
    try {
      this.layout = mb.ringLayout;
    } finally {
      mb.close();
    }
  }

  /** The senders with something for this peer, among `present`. */
  *pending(present: Iterable<number>): Generator<number> {
    for (const from of present) {
      if (from === this.me || from > this.slots.lastSlot) continue;
      if (this.slots.busy(from) && this.slots.lastResponder(from) === this.me) {
        yield from;
        continue;
      }
      if (this.layout && this.ringHolds(from)) yield from;
    }
  }

  /** Whether the ring from `from` holds something (corrupt counters
   * count as something: the reader will see and report them). */
  private ringHolds(from: number): boolean {
    let r = this.rings.get(from);
    if (!r) {
      r = new RingReader(this.memory, ringOffset(this.layout!, from, this.me), this.layout!.capacity);
      this.rings.set(from, r);
    }
    try {
      return !r.isEmpty;
    } catch {
      return true;
    }
  }

  close(): void {
    this.rings.clear();
  }
}
