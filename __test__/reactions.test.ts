// The peer side of the FAME-Z exchange, pure: what a peer answers and learns.
import test from 'ava';

import { reactTo } from '../ts/fabric/reactions.js';
import type { OwnAttributes } from '../ts/fabric/peer-types.js';

const own: OwnAttributes = { cclass: 'Debugger', SID0: 0, CID0: 0, link: 'up', PFMSID: null, PFMCID: null };

test('ping is answered pong; Peer-Attribute with the own attributes', (t) => {
  t.deepEqual(reactTo(5, { kind: 'ping' }, own), { reply: { kind: 'pong' } });
  t.deepEqual(reactTo(5, { kind: 'link-ctl-peer-attribute' }, own).reply, { kind: 'link-ctl-ack', attributes: { 'C-Class': 'Debugger', SID0: '0', CID0: '0' } });
});

test('a CTL-Write of space 0 configures the peer and is acknowledged OK; another space is UNSUPPORTED and changes nothing', (t) => {
  const r = reactTo(5, { kind: 'ctl-write', Space: 0, PFMSID: 27, PFMCID: 500, SID: 27, CID: 300, Tag: 9 }, own);
  t.deepEqual(r.reply, { kind: 'standalone-ack', Tag: 9, Reason: 'OK' });
  t.deepEqual(r.configure, {
    own: { cclass: 'Debugger', SID0: 27, CID0: 300, link: 'configured', PFMSID: 27, PFMCID: 500 },
    info: { SID0: 27, CID0: 300, PFMSID: 27, PFMCID: 500, from: 5, Tag: 9 },
  });
  t.is(own.link, 'up', 'the input is not changed');
  const other = reactTo(5, { kind: 'ctl-write', Space: 1, PFMSID: 27, PFMCID: 500, SID: 27, CID: 300, Tag: 10 }, own);
  t.deepEqual(other, { reply: { kind: 'standalone-ack', Tag: 10, Reason: 'UNSUPPORTED' } });
});

test('a Link CTL ACK is recorded as the sender\'s attributes; bad values are warned about and the C-Class kept', (t) => {
  t.deepEqual(reactTo(2, { kind: 'link-ctl-ack', attributes: { 'C-Class': 'Switch', SID0: '27', CID0: '200' } }, own), {
    reply: null,
    attributes: { all: { 'C-Class': 'Switch', SID0: '27', CID0: '200' }, cclass: 'Switch', SID0: 27, CID0: 200 },
  });
  const bad = reactTo(2, { kind: 'link-ctl-ack', attributes: { 'C-Class': 'X', SID0: 'nope' } }, own);
  t.is(bad.attributes?.cclass, 'X');
  t.regex(bad.warning ?? '', /^peer 2: /);
});

test('answers and pongs themselves need no answer', (t) => {
  for (const m of [{ kind: 'pong' }, { kind: 'standalone-ack', Tag: 1, Reason: 'OK' }, { kind: 'link-ctl-nak', details: 'x' }] as const) {
    t.deepEqual(reactTo(1, m, own), { reply: null });
  }
});
