// Who is present, written into the shared object for peers that get no
// join or leave messages (a guest: its QEMU hears them, the guest does
// not). docs/guest.md has the contract:
//
//   slot S, offset SLOT_PRESENT (u64): S's connection number while S is
//     connected (the switch's is 1, each connect takes the next), 0 once it
//     has left; written by the switch only.
//   slot 0, offset GLOBAL_MEMBERSHIP (u64): one more after every change of
//     a present word; then the switch rings vector 0 of every connected peer
//     whose feature word has FEATURE_MEMBERSHIP_BELL.
//
// A reader compares the present words with what it saw before: a word that
// turned non-zero is a join, one that turned 0 a leave, and one that
// changed from one number to another a leave and a join (the peer
// reconnected between two looks). Like every word in the shared object any
// peer can overwrite them; a false one makes a reader ring a vector nobody
// listens to, which QEMU and the server drop.
import { GLOBAL_MEMBERSHIP, GLOBAL_N_CLIENTS, SLOT_PRESENT, SLOT_SIZE } from '../layout.generated.js';

/** One present word's view (u64 at the slot's SLOT_PRESENT). */
function word(memory: ArrayBuffer, slot: number): BigUint64Array {
  const at = slot * SLOT_SIZE + SLOT_PRESENT;
  if (!Number.isInteger(slot) || slot < 1 || at + 8 > memory.byteLength) throw new RangeError(`slot ${slot} is outside the shared object`);
  return new BigUint64Array(memory, at, 1);
}

export function writePresent(memory: ArrayBuffer, slot: number, connection: bigint): void {
  Atomics.store(word(memory, slot), 0, connection);
}

/** Adds one to the membership count (after a present word changed). */
export function bumpMembership(memory: ArrayBuffer): bigint {
  return Atomics.add(new BigUint64Array(memory, GLOBAL_MEMBERSHIP, 1), 0, 1n) + 1n;
}

export function readMembership(memory: ArrayBuffer): bigint {
  return Atomics.load(new BigUint64Array(memory, GLOBAL_MEMBERSHIP, 1), 0);
}

/** The present words of slots 1 ..= nClients + 1 (the switch's is last),
 * non-zero ones only: ID -> connection number. `nClients` is read from the
 * globals unless given; a value that does not fit the object is clamped. */
export function readPresence(memory: ArrayBuffer, nClients?: number): Map<number, bigint> {
  const n = nClients ?? Number(Atomics.load(new BigUint64Array(memory, GLOBAL_N_CLIENTS, 1), 0));
  const last = Math.min(n + 1, Math.floor(memory.byteLength / SLOT_SIZE) - 1);
  const out = new Map<number, bigint>();
  for (let slot = 1; slot <= last; slot++) {
    const v = Atomics.load(word(memory, slot), 0);
    if (v !== 0n) out.set(slot, v);
  }
  return out;
}

export interface PresenceChanges {
  /** IDs that left (or reconnected: then also in `join`), ascending. */
  leave: number[];
  join: number[];
}

/** What changed between two looks at the present words (pure). */
export function presenceChanges(before: ReadonlyMap<number, bigint>, after: ReadonlyMap<number, bigint>): PresenceChanges {
  const leave: number[] = [];
  const join: number[] = [];
  for (const [id, conn] of before) {
    const now = after.get(id);
    if (now === undefined) leave.push(id);
    else if (now !== conn) {
      leave.push(id);
      join.push(id);
    }
  }
  for (const id of after.keys()) if (!before.has(id)) join.push(id);
  leave.sort((a, b) => a - b);
  join.sort((a, b) => a - b);
  return { leave, join };
}
