// famez's feature word in a FAME-Z slot: what a peer says it can do, in
// the slot's padding (offsets 72..79, which FAME-Z leaves unused), so the
// switch can route to it without a message exchange. The peer writes its
// own slot's word after it joins; the switch zeroes a departed peer's.
//
//   offset 72  u32  feature bits
//   offset 76  u32  FEATURES_MAGIC ("FZF1"); anything else: no features
//
// A reader that sees the magic (written last) sees the bits. Like the rest
// of a slot, any peer can write it (see docs/reliability.md: the trust
// model): a false word only misroutes messages to the peer it names. The
// offsets and values come from ../layout.generated.ts (famez-core's
// layout.rs).

import * as layout from '../layout.generated.js';

// Module-local copies (see ring.ts): the switch reads a feature word per message.
const FEATURES_MAGIC = layout.FEATURES_MAGIC;
const FEATURE_MEMBERSHIP_BELL = layout.FEATURE_MEMBERSHIP_BELL;
const FEATURE_SWITCH_RING = layout.FEATURE_SWITCH_RING;
const BITS = layout.SLOT_FEATURES;
const SLOT = layout.SLOT_SIZE;

/** "FZF1" in little-endian bytes; the bit the peer sets when it reads the
 * switch's messages from the switch's ring channel to it. */
export { FEATURES_MAGIC, FEATURE_SWITCH_RING };
/** The bit a peer sets to have vector 0 rung when someone joins or leaves
 * (presence.ts). */
export { FEATURE_MEMBERSHIP_BELL };

/** One u32 view of each shared object, made once: the switch reads a
 * feature word per message, and a view per read was a typed array made
 * (and collected) per message. Weak: a closed object's view goes with it. */
const VIEWS = new WeakMap<ArrayBuffer, Uint32Array>();

/** The index in `view(memory)` of the slot's feature bits (its magic is the next word). */
function at(memory: ArrayBuffer, slot: number): number {
  const base = slot * SLOT;
  if (!Number.isInteger(slot) || slot < 1 || base + SLOT > memory.byteLength) throw new RangeError(`slot ${slot} is outside the shared object`);
  return (base + BITS) >>> 2;
}

function view(memory: ArrayBuffer): Uint32Array {
  let v = VIEWS.get(memory);
  if (!v) VIEWS.set(memory, (v = new Uint32Array(memory, 0, memory.byteLength >>> 2)));
  return v;
}

/** The slot's feature bits (0 without the magic). */
export function readFeatures(memory: ArrayBuffer, slot: number): number {
  const i = at(memory, slot);
  const w = view(memory);
  return Atomics.load(w, i + 1) === FEATURES_MAGIC ? Atomics.load(w, i) : 0;
}

export function writeFeatures(memory: ArrayBuffer, slot: number, bits: number): void {
  const i = at(memory, slot);
  const w = view(memory);
  Atomics.store(w, i, bits >>> 0);
  Atomics.store(w, i + 1, FEATURES_MAGIC);
}

export function clearFeatures(memory: ArrayBuffer, slot: number): void {
  const i = at(memory, slot);
  const w = view(memory);
  Atomics.store(w, i + 1, 0);
  Atomics.store(w, i, 0);
}
