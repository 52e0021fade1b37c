// The switch's answer to `famez-nodes? PAGE` (ts/link/directory.ts): pages
// that each fit one slot message, cut the same way every time, that parse
// back to every node in order.
import test from 'ava';
import fc from 'fast-check';

import { ask, asked, page, parsePage } from '../ts/link/directory.js';
import type { RemoteNode } from '../ts/link/topology.js';

const node = (sid: number, cid: number, nodename: string, cclass = 'Debugger', hops = 1): RemoteNode => ({ sid, cid, gcid: sid * 0x1000 + cid, nodename, cclass, hops });

test('a question names its page; anything else is no question', (t) => {
  t.is(asked(ask(3)), 3);
  t.is(asked('famez-nodes? x'), null);
  t.is(asked('ping'), null);
});

test('every node comes back, in order, over pages of at most 383 bytes', (t) => {
  fc.assert(
    fc.property(fc.array(fc.tuple(fc.integer({ min: 0, max: 0xffff }), fc.integer({ min: 0, max: 0xfff }), fc.string({ maxLength: 31 }), fc.string({ maxLength: 20 })), { maxLength: 60 }), (raw) => {
      const nodes = raw.map(([s, c, n, cc]) => node(s, c, n, cc));
      const got: string[] = [];
      let p: number | null = 0;
      for (let guard = 0; p !== null; guard++) {
        if (guard > 100) throw new Error('no end');
        const text = page(nodes, p);
        t.true(Buffer.byteLength(text) <= 383, text);
        t.is(page(nodes, p), text, 'cut the same way again');
        const parsed = parsePage(text, p);
        if (!parsed) throw new Error(`does not parse: ${text}`);
        got.push(...parsed.entries.map((e) => e[0]));
        p = parsed.next;
      }
      t.deepEqual(got, nodes.map((n) => `${n.sid}:${n.cid}`));
    }),
    { numRuns: 200 },
  );
});

test('control characters in a nodename become ?, and a page past the end is empty', (t) => {
  const text = page([node(2, 100, 'a\u0000b\nc')], 0);
  t.deepEqual(parsePage(text, 0), { entries: [['2:100', 'a?b?c', 'Debugger', 1]], next: null });
  t.deepEqual(parsePage(page([node(2, 100, 'x')], 5), 5), { entries: [], next: null });
  t.is(parsePage('famez-nodes 0 - nope', 0), null);
  t.is(parsePage(text, 1), null, 'the answer to another page');
});
