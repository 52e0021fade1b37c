// The FAME-Z text control language: every message kind parses to its typed
// object and formats back to the same text, the !FZT= tracker rides along,
// dispatch takes the longest known prefix as FAME-Z does, and anything
// malformed is a GenZTextError with a code, whatever the input.
import test from 'ava';
import * as assert from 'node:assert/strict';
import fc from 'fast-check';

import * as genz from '../ts/genz/index.js';

const { parse, format } = genz.text;

/** Canonical texts, as FAME-Z writes them, and their messages. */
const KINDS: [string, genz.TextMessage][] = [
  ['ping', { kind: 'ping' }],
  ['pong', { kind: 'pong' }],
  ['dump', { kind: 'dump' }],
  ['Link CTL Peer-Attribute', { kind: 'link-ctl-peer-attribute' }],
  ['Link CTL ACK C-Class=Switch,SID0=27,CID0=1500', { kind: 'link-ctl-ack', attributes: { 'C-Class': 'Switch', SID0: '27', CID0: '1500' } }],
  // FAME-Z's own order (CID0 before SID0) and a C-Class with a space.
  ['Link CTL ACK C-Class=Driverless QEMU,CID0=0,SID0=0', { kind: 'link-ctl-ack', attributes: { 'C-Class': 'Driverless QEMU', CID0: '0', SID0: '0' } }],
  ['Link CTL NAK Reason=Unsupported', { kind: 'link-ctl-nak', details: 'Reason=Unsupported' }],
  ['Link CTL NAK', { kind: 'link-ctl-nak', details: '' }],
  ['Link RFC TTC=27us', { kind: 'link-rfc', TTC: '27us' }],
  [
    'CTL-Write Space=0,PFMSID=27,PFMCID=1500,SID=27,CID=300,Tag=1',
    { kind: 'ctl-write', Space: 0, PFMSID: 27, PFMCID: 1500, SID: 27, CID: 300, Tag: 1 },
  ],
  ['Standalone Acknowledgment Tag=1,Reason=OK', { kind: 'standalone-ack', Tag: 1, Reason: 'OK' }],
  ['hello from z03', { kind: 'text', text: 'hello from z03' }],
];

for (const [text, message] of KINDS) {
  test(`"${text}" parses to its ${message.kind} message and formats back`, (t) => {
    t.deepEqual(parse(text), message);
    t.is(format(message), text);
    t.is(format(parse(text)), text);
  });
}

test('the tracker is parsed into a field and written back last', (t) => {
  t.deepEqual(parse('pong!FZT=12'), { kind: 'pong', tracker: 12 });
  t.is(format({ kind: 'pong', tracker: 12 }), 'pong!FZT=12');
  t.deepEqual(parse('ping!FZT=0'), { kind: 'ping', tracker: 0 });
  const write = 'CTL-Write Space=0,PFMSID=27,PFMCID=1500,SID=27,CID=300,Tag=4!FZT=9';
  t.like(parse(write), { kind: 'ctl-write', Tag: 4, tracker: 9 });
  t.is(format(parse(write)), write);
  t.deepEqual(parse('Link CTL ACK C-Class=Debugger,CID0=100,SID0=27!FZT=3'), {
    kind: 'link-ctl-ack',
    attributes: { 'C-Class': 'Debugger', CID0: '100', SID0: '27' },
    tracker: 3,
  });
  t.deepEqual(parse('hi there !FZT=5'), { kind: 'text', text: 'hi there ', tracker: 5 }, 'free text stays verbatim');
  t.false('tracker' in parse('ping'), 'no tracker field when the message has none');
});

test('the longest known prefix decides the kind', (t) => {
  t.is(parse('Link CTL Peer-Attribute').kind, 'link-ctl-peer-attribute');
  t.is(parse('Link CTL ACK SID0=1').kind, 'link-ctl-ack');
  t.is(parse('Link RFC TTC=1us').kind, 'link-rfc');
  t.is(parse('Standalone Acknowledgment Tag=2,Reason=OK').kind, 'standalone-ack');
  // Prefixes of commands, and words that only start like one, are free text.
  for (const text of ['Link', 'Link RFCs TTC=1us', 'Standalone', 'Standalone Ack Tag=1', 'CTL-Writer x', 'pinging', 'PING', 'CTL Write']) {
    t.deepEqual(parse(text), { kind: 'text', text }, text);
  }
  // Link CTL is itself known, so what follows it must be a subcommand.
  t.is(t.throws(() => parse('Link CTL'), { instanceOf: genz.GenZTextError })?.code, 'EARGS');
  t.is(t.throws(() => parse('Link CTL Bogus'), { instanceOf: genz.GenZTextError })?.code, 'EARGS');
});

test('whitespace between words is free, as FAME-Z splits on it', (t) => {
  t.deepEqual(parse('  ping \n'), { kind: 'ping' });
  t.deepEqual(parse('Link   CTL\tPeer-Attribute'), { kind: 'link-ctl-peer-attribute' });
  t.deepEqual(parse('Standalone Acknowledgment Tag = 7 , Reason = OK '), { kind: 'standalone-ack', Tag: 7, Reason: 'OK' });
  t.deepEqual(parse('ping !FZT=2'), { kind: 'ping', tracker: 2 });
});

test('mailbox bytes parse, a C-string terminator ignored', (t) => {
  const bytes = new TextEncoder().encode('Link RFC TTC=27us\0\0\0');
  t.deepEqual(parse(bytes), { kind: 'link-rfc', TTC: '27us' });
  t.deepEqual(genz.text.toBytes({ kind: 'pong', tracker: 1 }), new TextEncoder().encode('pong!FZT=1'));
  t.deepEqual(parse(new TextEncoder().encode('héllo')), { kind: 'text', text: 'héllo' });
});

const MALFORMED: [string | Uint8Array, genz.GenZTextErrorCode][] = [
  ['', 'EEMPTY'],
  [' \t ', 'EEMPTY'],
  ['!FZT=5', 'EEMPTY'],
  ['ping!FZT=', 'ETRACKER'],
  ['ping!FZT=x', 'ETRACKER'],
  ['ping!FZT=-1', 'ETRACKER'],
  ['ping!FZT=1 more', 'ETRACKER'],
  ['ping!FZT=1!FZT=2', 'ETRACKER'],
  ['ping!FZT=99999999999999999999', 'ETRACKER'],
  ['ping now', 'EARGS'],
  ['pong pong', 'EARGS'],
  ['Link CTL Peer-Attribute please', 'EARGS'],
  ['Link CTL ACK', 'EARGS'],
  ['Link CTL ACK C-Class', 'EKV'],
  ['Link CTL ACK =x', 'EKV'],
  ['Link CTL ACK a=1,a=2', 'EKV'],
  ['Link CTL ACK a=1,', 'EKV'],
  ['Link CTL ACK C Class=x', 'EKV'],
  ['Link RFC TTC=27us,Speed=1', 'EKV'],
  ['Link RFC 27us', 'EKV'],
  ['CTL-Write Space=0,PFMSID=27,PFMCID=1500,SID=27,CID=300,Tag=1,Extra=2', 'EKV'],
  ['Link RFC', 'EMISSING'],
  ['Link RFC TTC=', 'EMISSING'],
  ['CTL-Write Space=0,PFMSID=27,PFMCID=1500,SID=27,CID=300', 'EMISSING'],
  ['Standalone Acknowledgment Tag=1', 'EMISSING'],
  ['Standalone Acknowledgment', 'EMISSING'],
  ['CTL-Write Space=0,PFMSID=x,PFMCID=1500,SID=27,CID=300,Tag=1', 'ENUMBER'],
  ['CTL-Write Space=0,PFMSID=27,PFMCID=1500,SID=27,CID=99999999999999999999,Tag=1', 'ENUMBER'],
  ['Standalone Acknowledgment Tag=-1,Reason=OK', 'ENUMBER'],
  ['Standalone Acknowledgment Tag=0x10,Reason=OK', 'ENUMBER'],
  ['Standalone Acknowledgment Tag=1e3,Reason=OK', 'ENUMBER'],
  ['pi\0ng', 'ENOTTEXT'],
  ['ping\x1b[0m', 'ENOTTEXT'],
  ['\ud800ping', 'ENOTTEXT'],
  [new Uint8Array([0xff, 0xfe, 0x70]), 'ENOTTEXT'],
  [new Uint8Array([0x70, 0x00, 0x69]), 'ENOTTEXT'],
];

for (const [input, code] of MALFORMED) {
  const name = typeof input === 'string' ? JSON.stringify(input) : `bytes ${Buffer.from(input).toString('hex')}`;
  test(`${name} is refused with ${code}`, (t) => {
    const e = t.throws(() => parse(input), { instanceOf: genz.GenZTextError });
    t.is(e?.code, code);
    t.is(e?.name, 'GenZTextError');
    t.true((e?.message.length ?? 0) > 0, 'the error says what is wrong');
  });
}

test('parse refuses what is neither a string nor bytes', (t) => {
  for (const input of [42, null, undefined, {}, ['ping']]) {
    t.is(t.throws(() => parse(input as unknown as string), { instanceOf: genz.GenZTextError })?.code, 'EINPUT');
  }
});

test('format refuses messages that would not parse back', (t) => {
  const bad: genz.TextMessage[] = [
    { kind: 'standalone-ack', Tag: 1, Reason: 'OK,really' },
    { kind: 'standalone-ack', Tag: 1, Reason: '' },
    { kind: 'standalone-ack', Tag: -1, Reason: 'OK' },
    { kind: 'standalone-ack', Tag: 1, Reason: ' OK' },
    { kind: 'ctl-write', Space: 0, PFMSID: 27, PFMCID: 1500, SID: 1.5, CID: 300, Tag: 1 },
    { kind: 'link-rfc', TTC: '' },
    { kind: 'link-rfc', TTC: '27us!FZT=1' },
    { kind: 'link-ctl-ack', attributes: {} },
    { kind: 'link-ctl-ack', attributes: { 'a=b': 'c' } },
    { kind: 'link-ctl-ack', attributes: { 'C Class': 'x' } },
    { kind: 'link-ctl-ack', attributes: { a: 'x,y' } },
    { kind: 'link-ctl-nak', details: 'bad\0' },
    { kind: 'text', text: 'ping me' },
    { kind: 'text', text: '  Link CTL ACK x=1' },
    { kind: 'text', text: '   ' },
    { kind: 'text', text: 'a!FZT=1' },
    { kind: 'ping', tracker: -1 },
  ];
  for (const m of bad) t.is(t.throws(() => format(m), { instanceOf: genz.GenZTextError })?.code, 'EVALUE', JSON.stringify(m));
  t.is(t.throws(() => format({ kind: 'bogus' } as unknown as genz.TextMessage), { instanceOf: genz.GenZTextError })?.code, 'EINPUT');
  t.is(t.throws(() => format(null as unknown as genz.TextMessage), { instanceOf: genz.GenZTextError })?.code, 'EINPUT');
});

test('a TTC not in microseconds is detectable', (t) => {
  const rfc = parse('Link RFC TTC=5ms');
  t.deepEqual(rfc, { kind: 'link-rfc', TTC: '5ms' });
  t.is(genz.text.ttcMicroseconds('5ms'), undefined);
  for (const ttc of ['1s', 'us', '27', '27 us please', '-3us', '']) t.is(genz.text.ttcMicroseconds(ttc), undefined, ttc);
  for (const ttc of ['27us', '27 us', '27US', '27usec', '27µs', '27μs']) t.is(genz.text.ttcMicroseconds(ttc), 27, ttc);
});

test('peer attributes come out of a Link CTL ACK typed', (t) => {
  const ack = parse('Link CTL ACK C-Class=Debugger,CID0=200,SID0=27');
  if (ack.kind !== 'link-ctl-ack') return t.fail(ack.kind);
  t.deepEqual(genz.text.peerAttributes(ack), { cclass: 'Debugger', SID0: 27, CID0: 200 });
  const partial = parse('Link CTL ACK C-Class=Driverless QEMU');
  if (partial.kind !== 'link-ctl-ack') return t.fail(partial.kind);
  t.deepEqual(genz.text.peerAttributes(partial), { cclass: 'Driverless QEMU', SID0: undefined, CID0: undefined });
  const bad = parse('Link CTL ACK SID0=twenty');
  if (bad.kind !== 'link-ctl-ack') return t.fail(bad.kind);
  t.is(t.throws(() => genz.text.peerAttributes(bad), { instanceOf: genz.GenZTextError })?.code, 'ENUMBER');
});

// ---- properties -----------------------------------------------------------

const valueChar = fc.constantFrom(...'abcXYZ019 -_.:/=µé'.split(''));
const value = fc.string({ unit: valueChar, minLength: 1, maxLength: 12 }).filter((s) => s.trim() === s);
const key = fc.string({ unit: fc.constantFrom(...'abcCID0-_'.split('')), minLength: 1, maxLength: 8 });
const num = fc.maxSafeNat();
const tracker = fc.option(fc.maxSafeNat(), { nil: undefined });
const withTracker = (m: genz.TextMessage, t: number | undefined): genz.TextMessage => (t === undefined ? m : { ...m, tracker: t });
const freeText = fc
  .string({ unit: fc.constantFrom(...'pingLk CTRF-é\tAcw'.split('')), minLength: 1, maxLength: 20 })
  .filter((text) => {
    try {
      format({ kind: 'text', text });
      return true;
    } catch {
      return false;
    }
  });

const message: fc.Arbitrary<genz.TextMessage> = fc
  .tuple(
    fc.oneof(
      fc.constantFrom<genz.TextMessage>({ kind: 'ping' }, { kind: 'pong' }, { kind: 'dump' }, { kind: 'link-ctl-peer-attribute' }),
      fc.dictionary(key, fc.oneof(value, fc.constant('')), { minKeys: 1, maxKeys: 4 }).map((attributes): genz.TextMessage => ({ kind: 'link-ctl-ack', attributes: { ...attributes } })),
      fc.oneof(value, fc.constant('')).map((details): genz.TextMessage => ({ kind: 'link-ctl-nak', details })),
      value.map((TTC): genz.TextMessage => ({ kind: 'link-rfc', TTC })),
      fc.tuple(num, num, num, num, num, num).map(([Space, PFMSID, PFMCID, SID, CID, Tag]): genz.TextMessage => ({ kind: 'ctl-write', Space, PFMSID, PFMCID, SID, CID, Tag })),
      fc.tuple(num, value).map(([Tag, Reason]): genz.TextMessage => ({ kind: 'standalone-ack', Tag, Reason })),
      freeText.map((text): genz.TextMessage => ({ kind: 'text', text })),
    ),
    tracker,
  )
  .map(([m, t]) => withTracker(m, t));

test('parse(format(m)) is m for random messages of every kind', (t) => {
  fc.assert(
    fc.property(message, (m) => {
      const text = format(m);
      assert.deepStrictEqual(parse(text), m);
      assert.equal(format(parse(text)), text, 'formatting is canonical');
    }),
    { numRuns: 2000 },
  );
  t.pass();
});

const WORDS = ['ping', 'pong', 'dump', 'Link', 'CTL', 'ACK', 'NAK', 'Peer-Attribute', 'RFC', 'CTL-Write', 'Standalone', 'Acknowledgment'];
const PIECES = [...WORDS, 'TTC=27us', 'Tag=1', 'Reason=OK', 'Space=0', 'SID=27', 'C-Class=Driverless QEMU', ',', '=', ' ', '  ', '\t', '!FZT=', '3', 'x', 'é', '\0'];
const noisy = fc.array(fc.constantFrom(...PIECES), { maxLength: 10 }).map((parts) => parts.join(''));

test('any input gives a message or a GenZTextError, and every message formats back', (t) => {
  const check = (input: string | Uint8Array) => {
    let m: genz.TextMessage;
    try {
      m = parse(input);
    } catch (e) {
      assert.ok(e instanceof genz.GenZTextError, `parse threw ${String(e)}`);
      return;
    }
    assert.deepStrictEqual(parse(format(m)), m);
  };
  fc.assert(fc.property(noisy, check), { numRuns: 3000 });
  fc.assert(fc.property(fc.string({ unit: 'binary', maxLength: 40 }), check), { numRuns: 2000 });
  fc.assert(fc.property(fc.uint8Array({ maxLength: 40 }), check), { numRuns: 2000 });
  t.pass();
});
