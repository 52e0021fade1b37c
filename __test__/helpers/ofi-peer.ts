// One end of a libfabric link in its own Node process, for ofi-link.test.ts:
//   ofi-peer.ts exchange HOST:PORT COUNT   connects, sends COUNT numbered
//     messages while receiving the peer's COUNT, checks their order, and
//     prints one JSON line: what it saw, the active resources during the
//     exchange (no Timeout: only the link's fds woke it) and its CPU time
//     over 500 ms idle after it (no spinning); exits when the peer closes.
//   ofi-peer.ts missing                    tries to open a link and prints
//     the error's code and message as JSON (FAMEZ_LIBFABRIC set by the test).
import { EventFd } from '../../ts/native.js';
import { Link, LinkError } from '../../ts/link/ofi.js';

const [mode, addr, countArg] = process.argv.slice(2);

if (mode === 'missing') {
  // famez itself runs without libfabric: the binding loads, an eventfd works.
  const e = new EventFd();
  e.signal();
  const drained = e.drain();
  e.close();
  try {
    Link.connect('127.0.0.1:1');
    console.log(JSON.stringify({ opened: true }));
  } catch (err) {
    const le = err as LinkError;
    console.log(JSON.stringify({ drained, isLinkError: le instanceof LinkError, code: le.code, message: le.message }));
  }
} else if (mode === 'exchange') {
  const count = Number(countArg);
  const link = Link.connect(addr!);
  let expected = 0;
  let outOfOrder = 0;
  const resources = new Set<string>();
  link.on('message', (m) => {
    if (m.readUInt32LE(0) !== expected) outOfOrder++;
    expected++;
    if (expected % 1000 === 0) for (const r of process.getActiveResourcesInfo()) resources.add(r);
    if (expected === count) {
      const start = process.cpuUsage();
      setTimeout(() => {
        const used = process.cpuUsage(start);
        console.log(JSON.stringify({ received: expected, outOfOrder, resources: [...resources], idleCpuMs: (used.user + used.system) / 1000 }));
      }, 500);
    }
  });
  link.on('down', () => {
    link.close();
  });
  void link.ready().then(() => {
    for (let i = 0; i < count; i++) {
      const m = Buffer.alloc(i % 10 === 9 ? 4096 : 64, i & 0xff);
      m.writeUInt32LE(i, 0);
      link.send(m);
    }
  });
}
