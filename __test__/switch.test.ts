// The switch / fabric manager state machine without I/O: FAME-Z's exchange
// message by message, and every bad input answered, never thrown.
import test from 'ava';

import { format, parse, toBytes, type TextMessage } from '../ts/genz/text.js';
import { Switch } from '../ts/fabric/switch.js';

const bytes = (s: string) => new TextEncoder().encode(s);
const texts = (r: { send: Array<{ to: number; message: TextMessage }> }) => r.send.map((o) => `${o.to}: ${format(o.message)}`);

function pfm(): Switch {
  return new Switch({ nClients: 14, pfm: true, sid: 27 });
}

test('a newcomer is asked for its attributes when the switch is the PFM, not otherwise', (t) => {
  t.deepEqual(texts(pfm().connect(3)), ['3: Link CTL Peer-Attribute']);
  t.deepEqual(texts(new Switch({ nClients: 14, pfm: false, sid: 27 }).connect(3)), []);
});

test('ping is answered with pong, Peer-Attribute with the switch attributes', (t) => {
  const s = pfm();
  s.connect(2);
  t.deepEqual(texts(s.receive(2, bytes('ping'))), ['2: pong']);
  t.deepEqual(texts(s.receive(2, bytes('ping!FZT=9'))), ['2: pong']);
  t.deepEqual(texts(s.receive(2, bytes('Link CTL Peer-Attribute'))), ['2: Link CTL ACK C-Class=FabricSwitch,SID0=27,CID0=1500']);
});

test('the whole link-up: ACK recorded, Link RFC -> CTL-Write, Standalone Acknowledgment -> configured and asked again', (t) => {
  const s = pfm();
  s.connect(5);
  s.receive(5, bytes('Link CTL ACK C-Class=Driverless QEMU,SID0=0,CID0=0'), 'z05');
  t.like(s.port(5), { nodename: 'z05', cclass: 'Driverless QEMU', SID0: 0, CID0: 0, link: 'up' });
  const rfc = s.receive(5, bytes('Link RFC TTC=27us'));
  t.deepEqual(texts(rfc), ['5: CTL-Write Space=0,PFMSID=27,PFMCID=1500,SID=27,CID=500,Tag=1']);
  t.is(s.port(5)?.link, 'configuring');
  const ack = s.receive(5, bytes('Standalone Acknowledgment Tag=1,Reason=OK'));
  t.deepEqual(texts(ack), ['5: Link CTL Peer-Attribute']);
  t.like(s.port(5), { SID0: 27, CID0: 500, link: 'configured' });
  s.receive(5, bytes('Link CTL ACK C-Class=Debugger,SID0=27,CID0=500'));
  t.is(s.port(5)?.cclass, 'Debugger');
  t.regex(s.picture(), /5 {2}\|-- Debugger z05 \[CID 500, SID 27\] configured/);
});

test('a TTC not in microseconds is dropped with a log line; a non-PFM switch NAKs Link RFC', (t) => {
  const s = pfm();
  s.connect(1);
  const r = s.receive(1, bytes('Link RFC TTC=27ms'));
  t.deepEqual(r.send, []);
  t.regex(r.log[0], /dropped: TTC must be in microseconds/);
  const plain = new Switch({ nClients: 4, pfm: false, sid: 27 });
  plain.connect(1);
  t.deepEqual(texts(plain.receive(1, bytes('Link RFC TTC=27us'))), ['1: Link CTL NAK Reason=no fabric manager here']);
});

test('bad input is answered or logged, never thrown', (t) => {
  const s = pfm();
  s.connect(4);
  const notText = s.receive(4, new Uint8Array([0xff, 0xfe, 0x01]));
  t.is(notText.send.length, 1);
  t.is(notText.send[0].message.kind, 'link-ctl-nak');
  t.regex(notText.log[0], /malformed message rejected: ENOTTEXT/);
  t.notThrows(() => parse(toBytes(notText.send[0].message)), 'the NAK itself is well formed');
  t.is(s.receive(4, bytes('frobnicate')).send[0].message.kind, 'link-ctl-nak');
  t.regex(s.receive(4, bytes('Standalone Acknowledgment Tag=77,Reason=OK')).log[0], /unknown tag 77/);
  t.deepEqual(texts(s.receive(4, bytes('CTL-Write Space=0,PFMSID=1,PFMCID=2,SID=3,CID=4,Tag=5'))), [
    '4: Standalone Acknowledgment Tag=5,Reason=UNSUPPORTED',
  ]);
  const stranger = s.receive(9, bytes('ping'));
  t.deepEqual(stranger.send, []);
  t.regex(stranger.log[0], /peer 9, which is not connected/);
});

test('a tag is only matched for the peer it was issued to, and forgotten when that peer leaves', (t) => {
  const s = pfm();
  s.connect(1);
  s.connect(2);
  s.receive(1, bytes('Link RFC TTC=27us'));
  t.regex(s.receive(2, bytes('Standalone Acknowledgment Tag=1,Reason=OK')).log[0], /unknown tag 1/);
  s.disconnect(1);
  s.connect(1);
  t.regex(s.receive(1, bytes('Standalone Acknowledgment Tag=1,Reason=OK')).log[0], /unknown tag 1/);
});

test('with a fabric manager elsewhere: peers are configured for it, and when it changes every configured peer gets a CTL-Write naming the new one', (t) => {
  let manager: { sid: number; cid: number } | null = { sid: 1, cid: 500 };
  const s = new Switch({ nClients: 4, pfm: false, sid: 3 });
  s.manager = () => manager;
  t.deepEqual(texts(s.connect(2)), ['2: Link CTL Peer-Attribute'], 'a manager is in charge: newcomers are asked');
  t.deepEqual(texts(s.receive(2, bytes('Link RFC TTC=27us'))), ['2: CTL-Write Space=0,PFMSID=1,PFMCID=500,SID=3,CID=200,Tag=1']);
  s.receive(2, bytes('Standalone Acknowledgment Tag=1,Reason=OK'));
  s.connect(3); // joined, never configured: not told
  manager = { sid: 2, cid: 500 };
  const r = s.reconfigure();
  t.deepEqual(texts(r), ['2: CTL-Write Space=0,PFMSID=2,PFMCID=500,SID=3,CID=200,Tag=2']);
  t.regex(r.log[0], /fabric manager is now 2:500/);
  t.deepEqual(texts(s.receive(2, bytes('Standalone Acknowledgment Tag=2,Reason=OK'))), ['2: Link CTL Peer-Attribute']);
  t.like(s.port(2), { SID0: 3, CID0: 200, link: 'configured' });
  manager = null;
  t.deepEqual(texts(s.reconfigure()), [], 'no manager: nothing to tell');
});

test('a switch with links holds a Link RFC while no fabric manager is in charge: answered when one is, NAKed when its time is up', (t) => {
  let manager: { sid: number; cid: number } | null = null;
  const s = new Switch({ nClients: 4, pfm: false, sid: 3 });
  s.manager = () => manager;
  s.connect(1);
  s.connect(2);
  s.connect(3);
  const r1 = s.receive(1, bytes('Link RFC TTC=27us'));
  t.deepEqual(texts(r1), [], 'no answer yet');
  t.is(r1.held, 1, 'the I/O layer is asked to release it later');
  t.is(s.receive(1, bytes('Link RFC TTC=27us')).held, undefined, 'asked again: held once');
  t.is(s.receive(2, bytes('Link RFC TTC=27us')).held, 2);
  t.is(s.receive(3, bytes('Link RFC TTC=27us')).held, 3);
  s.disconnect(3);
  t.deepEqual(texts(s.release(3)), [], 'a peer that left is not answered');
  manager = { sid: 1, cid: 500 };
  const r = s.reconfigure();
  t.deepEqual(texts(r), ['1: CTL-Write Space=0,PFMSID=1,PFMCID=500,SID=3,CID=100,Tag=1', '2: CTL-Write Space=0,PFMSID=1,PFMCID=500,SID=3,CID=200,Tag=2']);
  t.false(r.log.some((l) => /telling/.test(l)), 'no configured peer to tell: the held ones are answered');
  t.deepEqual(texts(s.release(1)), [], 'answered: its release is nothing');
  t.deepEqual(texts(s.receive(1, bytes('Standalone Acknowledgment Tag=1,Reason=OK'))), ['1: Link CTL Peer-Attribute']);
  manager = null;
  s.receive(2, bytes('Standalone Acknowledgment Tag=2,Reason=OK'));
  t.is(s.receive(2, bytes('Link RFC TTC=27us')).held, 2);
  const nak = s.release(2);
  t.deepEqual(texts(nak), ['2: Link CTL NAK Reason=no fabric manager here']);
  t.regex(nak.log[0], /no fabric manager in charge after 3000 ms/);
  t.deepEqual(texts(s.release(2)), [], 'released once');
});
