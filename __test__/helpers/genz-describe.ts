// Run as a script (by __test__/genz-fast.test.ts, possibly under node
// --disallow-code-generation-from-strings): decodes the packets of
// genzSamples() and prints what it got, as JSON, to be compared with the same
// done in the test's own process.
import * as genz from '../../ts/genz/index.js';

/** One packet of each class and flag combination, with payloads. */
export function genzSamples(): Uint8Array[] {
  const out: Uint8Array[] = [];
  const classes: genz.PacketClass[] = [
    'Core64.Read',
    'Core64.Write',
    'Core64.ReadResponse',
    'Core64.StandaloneAck',
    'Control.Read',
    'Control.Write',
    'Control.ReadResponse',
    'Control.StandaloneAck',
    'Control.UnsolicitedEvent',
    'Atomic1.Add',
    'Atomic1.Swap',
    'Atomic1.CAS',
    'Atomic1.AtomicResultsResponse',
  ];
  for (const cls of classes) {
    for (let flags = 0; flags < 8; flags++) {
      const p: Record<string, unknown> = { class: cls, GC: flags & 1, NH: (flags >> 2) & 1, Tag: 0x123, DCID: 0xabc, SCID: 0x456 };
      const atomicRequest = cls.startsWith('Atomic1.') && !cls.endsWith('Response');
      if (atomicRequest) Object.assign(p, { RK: (flags >> 1) & 1, Addr: 0x1234_5678_9abc_def0n, Size: 8, SwapLo: 0xdeadbeef, SwapHi: 0x12345678 });
      if (cls === 'Atomic1.Add') Object.assign(p, { SwapLo: undefined, SwapHi: undefined, AddendLo: 1 + flags, AddendHi: 0x80000000 });
      if (cls === 'Atomic1.CAS') Object.assign(p, { CompareLo: flags, CompareHi: 0xffffffff });
      if (cls === 'Atomic1.AtomicResultsResponse') Object.assign(p, { Size: 4, ResultLo: 0xfffffff0 + flags });
      if (cls.endsWith('Read') || cls.endsWith('Write')) {
        p['RK'] = (flags >> 1) & 1;
        p['Addr'] = cls.startsWith('Core64') ? 0xfa3e_0100_8000_0000n : 0xf_0100_8000_0000n;
      }
      if (cls.endsWith('Write') || cls.endsWith('ReadResponse')) p['payload'] = Uint8Array.from({ length: 13 + flags }, (_, i) => i * 17);
      if (cls === 'Control.Read' || cls === 'Control.Write') p['MGRUUID'] = '00112233-4455-6677-8899-aabbccddeeff';
      out.push(genz.encode(p as unknown as genz.PacketInput));
    }
  }
  return out;
}

/** A decoded packet as text: its keys in order, each value's type and value. */
export function describe(p: genz.Packet): [string, string, string][] {
  return Object.entries(p).map(([k, v]) => [k, Object.prototype.toString.call(v), v instanceof Uint8Array ? Buffer.from(v).toString('hex') : String(v)]);
}

if (process.argv[2] === 'print') console.log(JSON.stringify(genzSamples().map((b) => describe(genz.decode(b)))));
