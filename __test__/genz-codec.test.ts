// `--codec genz`: the switch's CTL-Write becomes a Gen-Z Control Write of the
// Core structure's PFM fields, SID0 and CID0, acknowledged by a Control
// StandaloneAck with the same Tag. Unit tests of the mapping (offsets read
// back per genz-packets.md, round trips, tags, refusals), the pure switch
// running the exchange through the codec, and `famez serve --codec genz`
// end to end with a peer that reads and writes the mailbox by hand.
import * as path from 'node:path';

import anyTest, { type TestFn } from 'ava';
import fc from 'fast-check';

import { Client } from '../ts/client/client.js';
import {
  CONFIGURE_ADDR,
  CONFIGURE_BYTES,
  GenZCodec,
  GenZCodecError,
  MAX_GENZ_PEERS,
  ackFor,
  genzFabricHooks,
  readConfigurePayload,
} from '../ts/fabric/genz-codec.js';
import { Switch } from '../ts/fabric/switch.js';
import * as genz from '../ts/genz/index.js';
import { format, toBytes, type CtlWrite, type TextMessage } from '../ts/genz/text.js';
import { Scratch } from './helpers/serve.js';
import { waitFor } from './helpers/wait.js';

const test = anyTest as TestFn<Scratch>;
test.beforeEach((t) => {
  t.context = new Scratch();
});
test.afterEach.always(async (t) => {
  await t.context.cleanup();
});

const CONFIGURE: CtlWrite = { kind: 'ctl-write', Space: 0, PFMSID: 27, PFMCID: 500, SID: 27, CID: 100, Tag: 1 };

/** The Core structure a peer would hold after applying `write`: 0x100 bytes,
 * the payload copied at Addr. Fields are then read at genz-packets.md's
 * offsets, independently of the codec. */
function coreAfter(write: genz.ControlWrite): DataView {
  const core = new Uint8Array(0x100);
  core.set(write.payload, Number(write.Addr));
  return new DataView(core.buffer);
}
const bits = (v: bigint, hi: number, lo: number) => Number((v >> BigInt(lo)) & ((1n << BigInt(hi - lo + 1)) - 1n));

test('CTL-Write becomes a Control Write of CID0, SID0 and the PFM fields at their Core-structure offsets', (t) => {
  const bytes = new GenZCodec({ cid: 500 }).encode(CONFIGURE, 1);
  const p = genz.decode(bytes) as genz.ControlWrite;
  t.like(p, { class: 'Control.Write', OCL: 0x01, OpCode: 0x04, DCID: 100, SCID: 500, Tag: 1, GC: 0, Addr: 0xb0n, PadCNT: 0, LEN: 16 });
  t.is(p.Addr, CONFIGURE_ADDR);
  t.is(p.payload.length, 24);
  t.is(CONFIGURE_BYTES, 24);
  const core = coreAfter(p);
  const pfm = core.getBigUint64(0xb0, true);
  t.is(bits(pfm, 11, 0), 0, 'PMCID');
  t.is(bits(pfm, 23, 12), 0, 'PWRMGRCID');
  t.is(bits(pfm, 35, 24), 500, 'PFMCID');
  t.is(bits(pfm, 51, 36), 27, 'PFMSID');
  t.is(bits(pfm, 63, 52), 0, 'SFMCID');
  t.is(bits(core.getBigUint64(0xb8, true), 15, 0), 27, 'SID0');
  t.is(core.getBigUint64(0xb8, true), 27n, 'nothing else at 0xb8');
  const c0 = core.getBigUint64(0xc0, true);
  t.is(bits(c0, 7, 0), 1, 'CV: CID0 valid');
  t.is(bits(c0, 19, 8), 100, 'CID0');
  t.is(c0 >> 20n, 0n, 'CID1..CID3 and BufferTC untouched (0)');
  // The raw bytes: payload right after the Addr dwords (dword 3: DRIface and
  // Addr[51:32], dword 4: Addr[31:0]).
  t.is(new DataView(bytes.buffer).getUint32(16, true), 0xb0);
  t.deepEqual([...bytes.subarray(20, 44)], [...p.payload]);
});

test('the peer side: decode(encode(CTL-Write)) is the CTL-Write, for every value the fields hold', (t) => {
  fc.assert(
    fc.property(
      fc.record({
        PFMSID: fc.integer({ min: 0, max: 0xffff }),
        PFMCID: fc.integer({ min: 0, max: 0xfff }),
        SID: fc.integer({ min: 0, max: 0xffff }),
        CID: fc.integer({ min: 0, max: 0xfff }),
        Tag: fc.integer({ min: 0, max: 0xfff }),
      }),
      (f) => {
        const m: CtlWrite = { kind: 'ctl-write', Space: 0, ...f };
        const bytes = new GenZCodec().encode(m, 3);
        t.deepEqual(new GenZCodec().decode(bytes, 9), m);
        const p = genz.decode(bytes) as genz.ControlWrite;
        t.deepEqual(readConfigurePayload(p.payload), { PFMCID: f.PFMCID, PFMSID: f.PFMSID, SID0: f.SID, CID0: f.CID, CV: 1 });
        t.like(p, { DCID: f.CID, SCID: f.PFMCID, Tag: f.Tag });
      },
    ),
    { numRuns: 200 },
  );
});

test('the acknowledgment is a Control StandaloneAck with the same Tag, addressed back, Reason 0 = OK', (t) => {
  const sw = new GenZCodec({ cid: 500 });
  const peer = new GenZCodec();
  const write = peer.decode(sw.encode({ ...CONFIGURE, Tag: 7 }, 1), 5);
  t.deepEqual(write, { ...CONFIGURE, Tag: 7 });
  const ackBytes = peer.encode({ kind: 'standalone-ack', Tag: 7, Reason: 'OK' }, 5);
  t.like(genz.decode(ackBytes), { class: 'Control.StandaloneAck', OCL: 0x01, OpCode: 0x00, Tag: 7, Reason: 0, DCID: 500, SCID: 100, LEN: 4 });
  t.deepEqual(sw.decode(ackBytes, 1), { kind: 'standalone-ack', Tag: 7, Reason: 'OK' });
  // ackFor builds the same packet straight from the decoded write.
  const pw = genz.decode(sw.encode({ ...CONFIGURE, Tag: 7 }, 1)) as genz.ControlWrite;
  t.deepEqual(genz.encode(ackFor(pw)), ackBytes);
  // Refusals carry their Reason both ways.
  for (const [text, code] of [['UNSUPPORTED', 2], ['MalformedPkt', 3], ['InvAccPerm', 7], ['0x2a', 0x2a]] as const) {
    const b = peer.encode({ kind: 'standalone-ack', Tag: 8, Reason: text }, 5);
    t.is((genz.decode(b) as genz.ControlStandaloneAck).Reason, code);
    t.deepEqual(sw.decode(b, 1), { kind: 'standalone-ack', Tag: 8, Reason: text === 'UNSUPPORTED' ? 'UnsupportedReq' : text });
  }
});

test('tags past 12 bits go out mod 4096 and come back as the tag the switch issued, from the same peer only', (t) => {
  const sw = new GenZCodec({ cid: 500 });
  const w = genz.decode(sw.encode({ ...CONFIGURE, Tag: 4097 }, 1)) as genz.ControlWrite;
  t.is(w.Tag, 1);
  const ack = genz.encode(ackFor(w));
  t.deepEqual(sw.decode(ack, 2), { kind: 'standalone-ack', Tag: 1, Reason: 'OK' }, 'another peer: not lifted');
  t.deepEqual(sw.decode(ack, 1), { kind: 'standalone-ack', Tag: 4097, Reason: 'OK' });
  t.deepEqual(sw.decode(ack, 1), { kind: 'standalone-ack', Tag: 1, Reason: 'OK' }, 'a second ack of the same tag is not lifted again');
});

test('every other message stays FAME-Z text, byte for byte as --codec text, and text is read in genz mode', (t) => {
  const codec = new GenZCodec();
  const messages: TextMessage[] = [
    { kind: 'ping' },
    { kind: 'pong', tracker: 4 },
    { kind: 'dump' },
    { kind: 'link-ctl-peer-attribute' },
    { kind: 'link-ctl-ack', attributes: { 'C-Class': 'FabricSwitch', SID0: '27', CID0: '500' } },
    { kind: 'link-ctl-nak', details: 'Reason=unknown command' },
    { kind: 'link-rfc', TTC: '27us' },
    { kind: 'text', text: 'hello there' },
  ];
  for (const m of messages) {
    t.deepEqual(codec.encode(m, 1), toBytes(m), format(m));
    t.deepEqual(codec.decode(toBytes(m), 1), m, format(m));
  }
  // A peer may also answer in text: the switch reads it.
  t.deepEqual(codec.decode(new TextEncoder().encode('Standalone Acknowledgment Tag=1,Reason=OK\0'), 1), { kind: 'standalone-ack', Tag: 1, Reason: 'OK' });
});

test('bytes that are neither, packets not served here, and values Gen-Z cannot carry are typed errors', (t) => {
  const codec = new GenZCodec({ cid: 500 });
  const good = codec.encode(CONFIGURE, 1);
  const bad = good.slice();
  bad[bad.length - 1] ^= 0xff;
  const neither = t.throws(() => codec.decode(bad, 1), { instanceOf: GenZCodecError });
  t.is(neither?.code, 'ENEITHER');
  t.regex(String(neither), /^ENEITHER: neither a Gen-Z packet \(EECRC: .*\) nor text/);
  t.is(t.throws(() => codec.decode(good.subarray(0, 12), 1), { instanceOf: GenZCodecError })?.code, 'ENEITHER');
  t.is(t.throws(() => codec.decode(new Uint8Array([0xff, 0xfe]), 1), { instanceOf: GenZCodecError })?.code, 'ENEITHER');
  const read = genz.encode({ class: 'Control.Read', DCID: 500, SCID: 100, Tag: 3, Addr: 0xb0n, RDSize: 24 });
  const unsupported = t.throws(() => codec.decode(read, 1), { instanceOf: GenZCodecError });
  t.is(unsupported?.code, 'EUNSUPPORTED');
  t.regex(unsupported!.message, /Control\.Read at 0xb0 \(Tag 3\) is not served here/);
  const elsewhere = genz.encode({ class: 'Control.Write', Addr: 0x10n, payload: new Uint8Array(8) });
  t.is(t.throws(() => codec.decode(elsewhere, 1), { instanceOf: GenZCodecError })?.code, 'EUNSUPPORTED');
  t.is(t.throws(() => codec.decode(genz.encode({ class: 'Core64.StandaloneAck', Tag: 1 }), 1), { instanceOf: GenZCodecError })?.code, 'EUNSUPPORTED');
  // Text that is text but not a message keeps the text codec's error.
  t.is(t.throws(() => codec.decode(new TextEncoder().encode('Link CTL'), 1), { instanceOf: genz.GenZTextError })?.code, 'EARGS');
  // encode: what a Gen-Z field cannot hold.
  t.is(t.throws(() => codec.encode({ ...CONFIGURE, CID: 4100 }, 41), { instanceOf: GenZCodecError })?.code, 'ECID');
  t.is(t.throws(() => codec.encode({ ...CONFIGURE, PFMSID: 70000 }, 1), { instanceOf: GenZCodecError })?.code, 'ECID');
  t.is(t.throws(() => codec.encode({ ...CONFIGURE, Space: 1 }, 1), { instanceOf: GenZCodecError })?.code, 'ESPACE');
  t.is(t.throws(() => codec.encode({ kind: 'standalone-ack', Tag: 1, Reason: 'maybe' }, 1), { instanceOf: GenZCodecError })?.code, 'EREASON');
  t.is(t.throws(() => new GenZCodec().encode({ kind: 'standalone-ack', Tag: 1, Reason: 'OK' }, 41), { instanceOf: GenZCodecError })?.code, 'ECID');
});

test('the hooks of --codec genz stop at 39 peers, where FAME-Z CIDs (ID x 100) leave 12 bits', (t) => {
  t.is(MAX_GENZ_PEERS, 39);
  t.notThrows(() => genzFabricHooks({ nClients: 39 }));
  t.throws(() => genzFabricHooks({ nClients: 40 }), { instanceOf: RangeError, message: /at most 39 peers/ });
});

test('the pure switch with the genz hooks: the whole exchange, and bad packets answered, never thrown', (t) => {
  const hooks = genzFabricHooks({ nClients: 4 });
  const sw = new Switch({ nClients: 4, pfm: true, sid: 27, decode: hooks.decode });
  const peer = new GenZCodec();
  const wire = (r: { send: Array<{ to: number; message: TextMessage }> }) => r.send.map((o) => ({ to: o.to, bytes: hooks.encode(o.message, o.to) }));
  const text = (s: string) => new TextEncoder().encode(s);

  t.deepEqual(wire(sw.connect(1)).map((o) => new TextDecoder().decode(o.bytes)), ['Link CTL Peer-Attribute']);
  const [write] = wire(sw.receive(1, text('Link RFC TTC=27us')));
  t.is(write.to, 1);
  const packet = genz.decode(write.bytes) as genz.ControlWrite;
  t.like(packet, { class: 'Control.Write', DCID: 100, SCID: 500, Tag: 1 });
  t.deepEqual(peer.decode(write.bytes, 5), { kind: 'ctl-write', Space: 0, PFMSID: 27, PFMCID: 500, SID: 27, CID: 100, Tag: 1 });
  t.is(sw.port(1)?.link, 'configuring');
  const done = sw.receive(1, peer.encode({ kind: 'standalone-ack', Tag: 1, Reason: 'OK' }, 5));
  t.deepEqual(done.log, ['peer 1: configured SID0=27,CID0=100']);
  t.deepEqual(done.send, [{ to: 1, message: { kind: 'link-ctl-peer-attribute' }, keep: true }]);
  t.like(sw.port(1), { SID0: 27, CID0: 100, link: 'configured' });

  // A corrupted packet: a NAK (text) and a log line.
  const bad = write.bytes.slice();
  bad[9] ^= 0x40;
  const nak = sw.receive(1, bad);
  t.is(nak.send[0].message.kind, 'link-ctl-nak');
  t.regex(nak.log[0], /peer 1: malformed message rejected: ENEITHER: neither a Gen-Z packet \(EECRC/);
  // A peer's own configuring Control Write: refused with a binary
  // StandaloneAck UnsupportedReq, same Tag, addressed back to its SCID.
  const theirs = genz.encode({ class: 'Control.Write', DCID: 500, SCID: 100, Tag: 42, Addr: 0xb0n, payload: new GenZCodec().encode(CONFIGURE).subarray(20, 44) });
  const [refusal] = wire(sw.receive(1, theirs));
  t.like(genz.decode(refusal.bytes), { class: 'Control.StandaloneAck', Tag: 42, Reason: genz.Reason.UnsupportedReq, DCID: 100, SCID: 500 });
  // An acknowledgment nobody asked for is logged, not acted on.
  t.deepEqual(sw.receive(1, genz.encode({ class: 'Control.StandaloneAck', DCID: 500, SCID: 100, Tag: 99 })).log, [
    'peer 1: Standalone Acknowledgment for unknown tag 99 ignored',
  ]);
  // An unserved packet: NAKed and logged.
  const read = sw.receive(1, genz.encode({ class: 'Control.Read', Tag: 5, Addr: 0xc0n, RDSize: 8 }));
  t.is(read.send[0].message.kind, 'link-ctl-nak');
  t.regex(read.log[0], /EUNSUPPORTED: Control\.Read at 0xc0/);
  t.deepEqual(wire(sw.receive(1, text('ping'))).map((o) => new TextDecoder().decode(o.bytes)), ['pong'], 'still working');
});

// ---- end to end: famez serve --codec genz and a peer doing the mailbox by hand

const SLOT = 512;
const BUF = 128;
const WAIT_MS = 15_000;

/** FAME-Z's mailbox over a client's mapping, from the documented layout. */
class HandMailbox {
  private readonly view: DataView;
  constructor(
    private readonly memory: ArrayBuffer,
    readonly me: number,
    readonly serverId: number,
  ) {
    this.view = new DataView(memory);
  }

  buflen(slot: number): number {
    return Number(this.view.getBigUint64(slot * SLOT + 32, true));
  }

  /** Waits (bounded) for the switch's next message and frees its slot. */
  async take(what: string): Promise<Uint8Array> {
    await waitFor(() => this.buflen(this.serverId) !== 0, `the switch's ${what}`, WAIT_MS, 2);
    const base = this.serverId * SLOT;
    const n = this.buflen(this.serverId);
    const bytes = new Uint8Array(this.memory, base + BUF, n).slice();
    this.view.setBigUint64(base + 32, 0n, true);
    return bytes;
  }

  /** Waits (bounded) for our slot to be free, posts, rings the switch. */
  async send(client: Client, bytes: Uint8Array): Promise<void> {
    await waitFor(() => this.buflen(this.me) === 0, 'the switch to take our slot', WAIT_MS, 2);
    const base = this.me * SLOT;
    new Uint8Array(this.memory, base + BUF, bytes.length + 1).set([...bytes, 0]);
    this.view.setBigUint64(base + 48, BigInt(this.serverId), true);
    this.view.setBigUint64(base + 32, BigInt(bytes.length), true);
    client.ring(this.serverId, this.me);
  }

  setNodename(name: string): void {
    new Uint8Array(this.memory, this.me * SLOT, 32).set(new TextEncoder().encode(name.padEnd(32, '\0')).subarray(0, 32));
  }
}

const asText = (b: Uint8Array) => new TextDecoder().decode(b);
const textBytes = (s: string) => new TextEncoder().encode(s);

test.serial('famez serve --codec genz: Link RFC -> Control Write, StandaloneAck -> configured', async (t) => {
  const sock = path.join(t.context.dir(), 'sock');
  const s = await t.context.serve(['-S', sock, '--memfd', '--max-peers', '4', '--codec', 'genz']);
  await s.waitFor(/fabric of 4 peers \(IDs 1\.\.4\); the switch is peer 5, the fabric manager \(SID 27\); recycle on; codec genz/);
  const client = t.context.track(await Client.connect(sock, { vectors: 6, timeoutMs: WAIT_MS }));
  t.is(client.id, 1);
  const globals = new DataView(client.memory);
  const serverId = Number(globals.getBigUint64(32, true));
  t.is(serverId, 5);
  const mb = new HandMailbox(client.memory, client.id, serverId);
  mb.setNodename('genZ');

  t.is(asText(await mb.take('Peer-Attribute request')), 'Link CTL Peer-Attribute', 'Link CTL stays text');
  await mb.send(client, textBytes('Link CTL ACK C-Class=GenZTest,SID0=0,CID0=0'));
  await mb.send(client, textBytes('Link RFC TTC=27us'));
  const writeBytes = await mb.take('Control Write');
  const write = genz.decode(writeBytes) as genz.ControlWrite;
  t.like(write, { class: 'Control.Write', Addr: 0xb0n, DCID: 100, SCID: 500, Tag: 1 });
  // The peer applies the write to its Core structure and reads its new IDs.
  const core = coreAfter(write);
  const pfm = core.getBigUint64(0xb0, true);
  const applied = { PFMCID: bits(pfm, 35, 24), PFMSID: bits(pfm, 51, 36), SID0: bits(core.getBigUint64(0xb8, true), 15, 0), CID0: bits(core.getBigUint64(0xc0, true), 19, 8) };
  t.deepEqual(applied, { PFMCID: 500, PFMSID: 27, SID0: 27, CID0: 100 });
  await mb.send(client, genz.encode({ class: 'Control.StandaloneAck', DCID: write.SCID, SCID: applied.CID0, Tag: write.Tag, Reason: 0 }));
  t.is(asText(await mb.take('follow-up')), 'Link CTL Peer-Attribute', 'the switch follows up as in FAME-Z');
  await s.waitFor(/switch: peer 1: configured SID0=27,CID0=100/);
  await mb.send(client, textBytes('Link CTL ACK C-Class=GenZTest,SID0=27,CID0=100'));
  await s.waitFor(/switch: peer 1: C-Class=GenZTest,SID0=27,CID0=100/);

  // Bad input keeps the fabric working: a corrupted packet is NAKed and logged.
  const bad = writeBytes.slice();
  bad[bad.length - 2] ^= 0x01;
  await mb.send(client, bad);
  t.regex(asText(await mb.take('NAK')), /^Link CTL NAK Reason=malformed \(ENEITHER: neither a Gen-Z packet \(EECRC/);
  await s.waitFor(/switch: peer 1: malformed message rejected: ENEITHER/);
  // A Control Write to the switch is refused in Gen-Z: StandaloneAck UnsupportedReq.
  await mb.send(client, genz.encode({ class: 'Control.Write', DCID: 500, SCID: 100, Tag: 9, Addr: 0xb0n, payload: write.payload }));
  t.like(genz.decode(await mb.take('refusal')), { class: 'Control.StandaloneAck', Tag: 9, Reason: genz.Reason.UnsupportedReq, DCID: 100, SCID: 500 });
  await mb.send(client, textBytes('ping'));
  t.is(asText(await mb.take('pong')), 'pong');
  t.true(s.running);
});

test.serial('famez serve --codec genz with more than 39 peers is a usage error', async (t) => {
  const sock = path.join(t.context.dir(), 'sock');
  const p = await t.context.run(['serve', '-S', sock, '--memfd', '--max-peers', '40', '--codec', 'genz']);
  t.is(p.exitInfo.code, 2);
  t.regex(p.stderr, /--codec genz allows at most 39 peers, got 40/);
});

test('FabricClient.linkUp completes against famez serve --codec genz: the binary Control Write is applied and acknowledged in Gen-Z', async (t) => {
  const { FabricClient } = await import('../ts/fabric/client.js');
  const sock = path.join(t.context.dir(), 'sock');
  const s = await t.context.serve(['-S', sock, '--memfd', '--max-peers', '4', '--codec', 'genz']);
  const c = t.context.track(await FabricClient.connect(sock, { requestTimeoutMs: 15_000 }));
  const info = await c.linkUp();
  t.like(info, { SID0: 27, CID0: c.id * 100, PFMSID: 27, PFMCID: 500, from: 5 });
  t.like(c.attributes, { SID0: 27, CID0: c.id * 100, link: 'configured' });
  await s.waitFor(new RegExp(`peer ${c.id}: configured SID0=27,CID0=${c.id * 100}`), 15_000);
});
