// Fabric-attached memory served by its switch (ts/link/fam.ts): Core64
// Read -> ReadResponse, Core64 Write -> StandaloneAck, and every refusal
// as a StandaloneAck with its Gen-Z Reason, answered to the requester with
// the request's tag.
import test from 'ava';
import fc from 'fast-check';

import { Reason } from '../ts/genz/codes.js';
import { decode } from '../ts/genz/packets.js';
import { MAX_READ, parseResponse, readRequest, serve, writeRequest, type FamStore } from '../ts/link/fam.js';

const OWNER = 0x1000 + 1500; // 1:1500
const PEER = 0x2000 + 300; // 2:300

const store = (size = 4096, key: number | null = null): FamStore => ({ bytes: new Uint8Array(size), key });
const ask = (bytes: Uint8Array, s: FamStore | null) => parseResponse(serve(decode(bytes), s, OWNER));

test('a write is acknowledged and a read gives the bytes back, to the requester, with its tag', (t) => {
  const s = store();
  const w = ask(writeRequest({ from: PEER, to: OWNER, tag: 7, offset: 100, data: Buffer.from('hello') }), s);
  t.deepEqual(w, { tag: 7, source: OWNER, ok: true, data: null });
  t.is(Buffer.from(s.bytes.subarray(100, 105)).toString(), 'hello');
  const answer = serve(decode(readRequest({ from: PEER, to: OWNER, tag: 8, offset: 99, length: 7 })), s, OWNER);
  const p = decode(answer);
  t.deepEqual([p.class, p.DSID, p.DCID, p.SSID, p.SCID, p.Tag], ['Core64.ReadResponse', 2, 300, 1, 1500, 8]);
  const r = parseResponse(answer);
  t.true(r?.ok);
  t.deepEqual(Buffer.from((r as { data: Uint8Array }).data), Buffer.from('\0hello\0'));
});

test('outside the memory, a bad length, no R-Key, no memory: each refused with its Reason, the memory untouched', (t) => {
  const s = store(1024, 0xabcd);
  const reason = (bytes: Uint8Array, st: FamStore | null = s) => {
    const r = ask(bytes, st);
    return r && !r.ok ? r.reason : 'ok';
  };
  const key = 0xabcd;
  t.is(reason(readRequest({ from: PEER, to: OWNER, tag: 1, offset: 1020, length: 5, key })), Reason.InvAccPerm);
  t.is(reason(writeRequest({ from: PEER, to: OWNER, tag: 1, offset: 2 ** 40, data: Buffer.from('x'), key })), Reason.InvAccPerm);
  t.is(reason(readRequest({ from: PEER, to: OWNER, tag: 1, offset: 0, length: 0, key })), Reason.MalformedPkt);
  t.is(reason(readRequest({ from: PEER, to: OWNER, tag: 1, offset: 0, length: MAX_READ + 1, key })), Reason.MalformedPkt);
  t.is(reason(writeRequest({ from: PEER, to: OWNER, tag: 1, offset: 0, data: Buffer.from('x') })), Reason.InvAccKey);
  t.is(reason(writeRequest({ from: PEER, to: OWNER, tag: 1, offset: 0, data: Buffer.from('x'), key: key + 1 })), Reason.InvAccKey);
  t.is(reason(readRequest({ from: PEER, to: OWNER, tag: 1, offset: 0, length: 4 }), null), Reason.UnsupportedReq);
  t.true(s.bytes.every((b) => b === 0));
  t.is(reason(writeRequest({ from: PEER, to: OWNER, tag: 1, offset: 1023, data: Buffer.from('x'), key })), 'ok');
});

test('any request in range reads back what was written', (t) => {
  fc.assert(
    fc.property(fc.nat(4000), fc.uint8Array({ minLength: 1, maxLength: 96 }), fc.nat(4095), (offset, data, tag) => {
      const s = store();
      if (offset + data.length > 4096) return;
      t.true(ask(writeRequest({ from: PEER, to: OWNER, tag, offset, data }), s)?.ok);
      const r = ask(readRequest({ from: PEER, to: OWNER, tag, offset, length: data.length }), s);
      t.deepEqual(Buffer.from((r as { data: Uint8Array }).data), Buffer.from(data));
    }),
    { numRuns: 200 },
  );
});
