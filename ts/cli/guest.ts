// `famez guest`, run inside a VM: the VM's ivshmem-doorbell device as a
// fabric peer (ts/guest/transport.ts), with the commands and output of
// `famez client` on a fabric (fabric-client.ts). It links up with the
// switch on start and answers the switch and other peers by itself.
import * as os from 'node:os';
import * as readline from 'node:readline';

import { UsageError, parseFlags } from '../args.js';
import { errorCode, errorText } from '../native.js';
import { GuestTransport } from '../guest/transport.js';
import { FABRIC_COMMANDS, FabricSession } from './fabric-client.js';

const HELP = `Usage: famez guest [--device BDF] [--poll | --vfio] [-N NODENAME] [--no-link] [--ping-peers] [-v]

Inside a VM started with an ivshmem-doorbell device on a famez fabric
('famez stanza' prints the QEMU arguments; 'famez vm' boots such VMs):
joins the fabric as a peer from userspace. Binds the device to vfio-pci
(as root) and takes its interrupts through VFIO; where VFIO is impossible
(no IOMMU and no no-IOMMU mode) it polls the shared memory over sysfs,
and says so.

      --device BDF    the device's PCI address (default: the only ivshmem-doorbell)
      --vfio          VFIO or nothing (no polling fallback)
      --poll          poll over sysfs (no interrupts, no vfio-pci)
      --poll-ms MS    the poll interval (default 2)
  -N, --nodename NAME this peer's nodename (default <host>-<ID>)
      --no-link       do not link up with the switch on start
      --ping-peers    after link-up, ping every other peer, and each one that
                      joins later (the demo 'famez vm' runs)
  -v, --verbose       say more (what is sent)
  -h, --help          show this help
      --version       famez's version

Commands (stdin, a terminal or a pipe; end of input quits):
${FABRIC_COMMANDS.replace(/^commands:\n/, '')}
`;

function say(line: string): void {
  process.stdout.write(`${line}\n`);
}

interface GuestArgs {
  device?: string;
  mode: 'auto' | 'vfio' | 'poll';
  pollMs?: number;
  nodename?: string;
  link: boolean;
  pingPeers: boolean;
  verbose: boolean;
  help: boolean;
}

export function parseGuestArgs(argv: string[]): GuestArgs {
  const a: GuestArgs = { mode: 'auto', link: true, pingPeers: false, verbose: false, help: false };
  for (const flag of parseFlags(argv, {
    device: { type: 'string' },
    vfio: { type: 'boolean' },
    poll: { type: 'boolean' },
    'poll-ms': { type: 'string' },
    nodename: { type: 'string', short: 'N' },
    'no-link': { type: 'boolean' },
    'ping-peers': { type: 'boolean' },
    verbose: { type: 'boolean', short: 'v' },
    help: { type: 'boolean', short: 'h' },
  })) {
    switch (flag.name) {
      case 'device':
        if (!/^([0-9a-f]{4}:)?[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$/i.test(flag.value)) throw new UsageError(`--device wants a PCI address such as 0000:00:03.0, not '${flag.value}'`);
        a.device = flag.value.toLowerCase();
        break;
      case 'vfio':
      case 'poll':
        if (a.mode !== 'auto' && a.mode !== flag.name) throw new UsageError('--vfio and --poll exclude each other');
        a.mode = flag.name;
        break;
      case 'poll-ms': {
        const ms = Number(flag.value);
        if (!/^\d+$/.test(flag.value) || ms < 1 || ms > 10_000) throw new UsageError(`--poll-ms wants 1..10000 milliseconds, not '${flag.value}'`);
        a.pollMs = ms;
        break;
      }
      case 'nodename':
        a.nodename = flag.value;
        break;
      case 'no-link':
        a.link = false;
        break;
      case 'ping-peers':
        a.pingPeers = true;
        break;
      case 'verbose':
        a.verbose = true;
        break;
      case 'help':
        a.help = true;
        break;
    }
  }
  return a;
}

export async function runGuest(argv: string[]): Promise<number> {
  let args: GuestArgs;
  try {
    args = parseGuestArgs(argv);
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    process.stderr.write(`famez guest: ${e.message}\n`);
    return 2;
  }
  if (args.help) {
    process.stdout.write(HELP);
    return 0;
  }
  let transport: GuestTransport;
  try {
    transport = GuestTransport.open({ device: args.device, mode: args.mode, pollMs: args.pollMs });
  } catch (e) {
    const code = errorCode(e) || (e as { code?: string }).code || '';
    process.stderr.write(`famez guest: ${code ? `${code}: ` : ''}${errorText(e)}\n`);
    return 2;
  }
  for (const note of transport.notes) say(note);
  const peers = transport.peerIds();
  say(`attached to ${transport.where} as peer ${transport.id} (${transport.vectors} vector(s)); peers: ${peers.length ? peers.join(', ') : 'none'}`);
  let session: FabricSession | null;
  try {
    // A VM without a hostname says '(none)': then the nodename is guest-ID.
    const host = os.hostname().split('.')[0];
    const nodename = args.nodename ?? (host === '' || host === '(none)' || host === 'localhost' ? `guest-${transport.id}` : undefined);
    session = FabricSession.attach(transport, { nodename, verbose: args.verbose, say, plainFallback: false });
  } catch (e) {
    transport.close();
    throw e;
  }
  if (!session) {
    transport.close();
    return 2;
  }
  const s = session;
  say(s.describe());

  const closed = new Promise<string>((resolve) => s.fabric.once('close', ({ reason }) => resolve(reason)));
  let quitting = false;
  const stop = () => {
    quitting = true;
    if (!s.fabric.closed) s.fabric.close();
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);

  // Link-up first; commands typed meanwhile run after it (the session's
  // chain keeps their order).
  if (args.link) {
    void s.run(async () => {
      try {
        const l = await s.fabric.linkUp();
        say(`link up: configured by ${l.from} as SID0=${l.SID0},CID0=${l.CID0} (fabric manager SID ${l.PFMSID})`);
      } catch (e) {
        say(`link-up failed: ${(e as Error).message}`);
      }
    });
  }
  if (args.pingPeers) s.pingPeers();
  const rl = readline.createInterface({ input: process.stdin, terminal: false });
  rl.on('line', (line) => {
    if (quitting) return;
    void s.command(line).then((go) => {
      if (!go) stop();
    });
  });
  rl.on('close', () => void s.idle().then(stop));
  const reason = await closed;
  rl.close();
  process.stdin.destroy();
  process.off('SIGINT', stop);
  process.off('SIGTERM', stop);
  if (quitting) return 0;
  say(`left the fabric: ${reason}`);
  return 1;
}
