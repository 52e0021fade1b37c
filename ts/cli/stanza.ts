// `famez stanza`: print the QEMU and libvirt arguments for a server.
import { DEFAULTS, MAX_VECTORS, UsageError, tokenize } from '../server/options.js';
import { stanzaText } from '../stanza.js';

const HELP = `Usage: famez stanza [-S SOCKET] [-n VECTORS] [--id ID]

Prints the QEMU -chardev/-device arguments and the libvirt
<qemu:commandline> block for an ivshmem-doorbell device on SOCKET
(default ${DEFAULTS.socket}) with VECTORS vectors (default 1).
`;

export function runStanza(argv: string[]): number {
  try {
    let socket: string = DEFAULTS.socket;
    let vectors: number = DEFAULTS.vectors;
    let id = 'famez0';
    for (const [flag, v] of tokenize(argv, [
      { long: 'socket', short: 'S', value: true },
      { long: 'vectors', short: 'n', value: true },
      { long: 'id', value: true },
      { long: 'help', short: 'h', value: false },
    ])) {
      if (flag === 'help') {
        process.stdout.write(HELP);
        return 0;
      }
      if (flag === 'socket') socket = v!;
      if (flag === 'id') {
        if (!/^[A-Za-z][\w.-]*$/.test(v!)) throw new UsageError(`--id must start with a letter and hold letters, digits, '.', '-' or '_', got '${v}'`);
        id = v!;
      }
      if (flag === 'vectors') {
        vectors = Number(v);
        if (!/^\d+$/.test(v!) || vectors < 1 || vectors > MAX_VECTORS) throw new UsageError(`-n/--vectors must be between 1 and ${MAX_VECTORS}, got '${v}'`);
      }
    }
    process.stdout.write(stanzaText({ socket, vectors, id }));
    return 0;
  } catch (e) {
    if (e instanceof UsageError) {
      process.stderr.write(`famez stanza: ${e.message}\n`);
      return 2;
    }
    throw e;
  }
}
