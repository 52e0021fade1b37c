// The native core's Gen-Z CRCs (crates/famez-core/src/genz.rs through
// genzEcrc, genzCheck, genzSeal) against the TypeScript codec, the
// reference: the published vectors, any bytes, runs of packets sound,
// mutated and cut.
import * as fs from 'node:fs';
import * as path from 'node:path';

import test from 'ava';
import fc from 'fast-check';

import { ecrc } from '../ts/genz/crc.js';
import { packetFault } from '../ts/link/frame.js';
import { pieces } from '../ts/link/carry.js';
import { genzCheck, genzEcrc, genzSeal } from '../ts/native.js';

const vectors = JSON.parse(fs.readFileSync(path.join(__dirname, 'fixtures', 'genz-vectors.json'), 'utf8')) as Array<{ hex: string }>;

/** The offset of the first packet (end to end, by LEN) that packetFault refuses, or -1. */
function firstFault(bytes: Uint8Array): number {
  for (let at = 0; at < bytes.length; ) {
    const n = at + 2 <= bytes.length ? ((bytes[at]! >>> 5) | ((bytes[at + 1]! >>> 4) << 3)) * 4 : 0;
    if (n < 16 || at + n > bytes.length) return at;
    if (packetFault(bytes.subarray(at, at + n)) !== null) return at;
    at += n;
  }
  return -1;
}

test('genzEcrc is the codec ECRC: on the published vectors and on any bytes', (t) => {
  t.true(vectors.length > 0);
  for (const v of vectors) {
    const p = Buffer.from(v.hex, 'hex');
    const sum = p[p.length - 3]! | (p[p.length - 2]! << 8) | (p[p.length - 1]! << 16);
    t.is(genzEcrc(p.subarray(0, p.length - 3)), sum, v.hex);
  }
  fc.assert(fc.property(fc.uint8Array({ maxLength: 5000 }), (b) => genzEcrc(b) === ecrc(b)), { numRuns: 500 });
});

test('genzCheck finds the first packet packetFault refuses, in runs sound, mutated and cut; -1 when all are sound', (t) => {
  const run = Buffer.concat([...pieces('ring', 0x1064, 0x20c8, new Uint8Array(2000).map((_, i) => i), 5), ...pieces('mailbox', 0x20c8, 0x1064, Buffer.from('hi'), 6)]);
  t.is(genzCheck(run), -1);
  t.is(genzCheck(new Uint8Array(0)), -1);
  for (const v of vectors) t.is(genzCheck(Buffer.from(v.hex, 'hex')), -1, v.hex);
  fc.assert(
    fc.property(fc.array(fc.tuple(fc.nat(run.length - 1), fc.nat(255)), { maxLength: 3 }), fc.nat(run.length), (edits, cut) => {
      const b = Buffer.from(run.subarray(0, cut));
      for (const [i, x] of edits) if (i < b.length) b[i] = x;
      return genzCheck(b) === firstFault(b);
    }),
    { numRuns: 1000 },
  );
});

test('genzSeal writes every ECRC of a run as the codec does, and refuses bytes that are not whole packets, writing nothing', (t) => {
  const run = Buffer.concat(pieces('ring', 0x1064, 0x20c8, new Uint8Array(3000).fill(7), 9));
  const blank = Buffer.from(run);
  for (let at = 0; at < blank.length; ) {
    const n = ((blank[at]! >>> 5) | ((blank[at + 1]! >>> 4) << 3)) * 4;
    blank.fill(0, at + n - 3, at + n);
    at += n;
  }
  t.is(genzSeal(blank), pieces('ring', 0x1064, 0x20c8, new Uint8Array(3000).fill(7), 9).length);
  t.deepEqual(blank, run);
  const short = Buffer.from(run.subarray(0, run.length - 4));
  const before = Buffer.from(short);
  t.throws(() => genzSeal(short), { code: 'EINVAL', message: /no whole packet/ });
  t.deepEqual(short, before);
});
