// The feature word of a slot (ts/fabric/features.ts): bits read back only
// under the magic, each slot's its own, each shared object its own (the
// module keeps one view per object), a slot outside the object refused.
import test from 'ava';

import { FEATURES_MAGIC, FEATURE_MEMBERSHIP_BELL, FEATURE_SWITCH_RING, clearFeatures, readFeatures, writeFeatures } from '../ts/fabric/features.js';
import { SLOT_FEATURES, SLOT_SIZE } from '../ts/layout.generated.js';

test('feature words: per slot and per object, only under the magic, cleared to none; a slot outside the object is a RangeError', (t) => {
  const a = new ArrayBuffer(SLOT_SIZE * 4);
  const b = new ArrayBuffer(SLOT_SIZE * 4);
  writeFeatures(a, 1, FEATURE_SWITCH_RING);
  writeFeatures(a, 2, FEATURE_SWITCH_RING | FEATURE_MEMBERSHIP_BELL);
  writeFeatures(b, 1, FEATURE_MEMBERSHIP_BELL);
  t.is(readFeatures(a, 1), FEATURE_SWITCH_RING);
  t.is(readFeatures(a, 2), FEATURE_SWITCH_RING | FEATURE_MEMBERSHIP_BELL);
  t.is(readFeatures(a, 3), 0, 'never written');
  t.is(readFeatures(b, 1), FEATURE_MEMBERSHIP_BELL, 'another object, its own word');
  // Where the word is: bits at SLOT_FEATURES of the slot, the magic after them.
  const w = new DataView(a);
  t.is(w.getUint32(2 * SLOT_SIZE + SLOT_FEATURES, true), FEATURE_SWITCH_RING | FEATURE_MEMBERSHIP_BELL);
  t.is(w.getUint32(2 * SLOT_SIZE + SLOT_FEATURES + 4, true), FEATURES_MAGIC);
  // Bits without the magic (a peer that wrote garbage) are no features.
  w.setUint32(2 * SLOT_SIZE + SLOT_FEATURES + 4, 0x12345678, true);
  t.is(readFeatures(a, 2), 0);
  clearFeatures(a, 1);
  t.is(readFeatures(a, 1), 0);
  t.is(w.getUint32(SLOT_SIZE + SLOT_FEATURES, true), 0, 'the bits are cleared too');
  for (const slot of [0, 4, 1.5, -1]) t.throws(() => readFeatures(a, slot), { instanceOf: RangeError, message: /outside the shared object/ });
  t.throws(() => writeFeatures(b, 4, 1), { instanceOf: RangeError });
});
