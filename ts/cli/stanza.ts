// `famez stanza`: print the QEMU and libvirt arguments for a server.
import { UsageError, parseFlags } from '../args.js';
import { DEFAULTS, DEFAULT_FABRIC_PEERS, MAX_FABRIC_PEERS, MAX_VECTORS } from '../server/options.js';
import * as fs from 'node:fs';

import { parseSize } from '../server/options.js';
import { plainStanzaText, stanzaText } from '../stanza.js';

const HELP = `Usage: famez stanza [-S SOCKET] [--max-peers N | --silent -n VECTORS] [--id ID]
       famez stanza --plain PATH [--size SIZE] [--id ID]

Prints the QEMU -chardev/-device arguments and the libvirt
<qemu:commandline> block for an ivshmem-doorbell device on SOCKET
(default ${DEFAULTS.socket}). For a fabric of N peers (default
${DEFAULT_FABRIC_PEERS}) every device needs N+2 vectors; for a --silent (stock)
server, VECTORS (default 1). Also libvirt's own <shmem> element.

With --plain: FAME's fabric-attached memory, the file PATH shared as an
ivshmem-plain device (-object memory-backend-file,...,share=on -device
ivshmem-plain,memdev=...). SIZE defaults to the file's size ('famez fam
create' makes the file).

--help shows this text; --version prints famez's version.
`;

function integer(flag: string, v: string, max: number): number {
  if (!/^\d+$/.test(v) || Number(v) < 1 || Number(v) > max) throw new UsageError(`${flag} must be between 1 and ${max}, got '${v}'`);
  return Number(v);
}

export function runStanza(argv: string[]): number {
  try {
    let socket: string = DEFAULTS.socket;
    let vectors: number | null = null;
    let peers: number | null = null;
    let silent = false;
    let id: string | null = null;
    let plain: string | null = null;
    let size: number | null = null;
    for (const { name, value } of parseFlags(argv, {
      socket: { type: 'string', short: 'S' },
      vectors: { type: 'string', short: 'n' },
      'max-peers': { type: 'string' },
      nClients: { type: 'string' },
      silent: { type: 'boolean' },
      id: { type: 'string' },
      plain: { type: 'string' },
      size: { type: 'string', short: 'l' },
      help: { type: 'boolean', short: 'h' },
    })) {
      const v = value ?? '';
      if (name === 'help') {
        process.stdout.write(HELP);
        return 0;
      }
      if (name === 'socket') socket = v;
      if (name === 'plain') plain = v;
      if (name === 'size') size = parseSize(v);
      if (name === 'silent') silent = true;
      if (name === 'id') {
        if (!/^[A-Za-z][\w.-]*$/.test(v)) throw new UsageError(`--id must start with a letter and hold letters, digits, '.', '-' or '_', got '${v}'`);
        id = v;
      }
      if (name === 'vectors') vectors = integer('-n/--vectors', v, MAX_VECTORS);
      if (name === 'max-peers' || name === 'nClients') peers = integer('--max-peers', v, MAX_FABRIC_PEERS);
    }
    if (plain !== null) {
      if (socket !== DEFAULTS.socket || vectors !== null || peers !== null || silent) throw new UsageError('--plain is memory only: no -S, -n, --max-peers or --silent');
      if (size === null) {
        let st: fs.Stats;
        try {
          st = fs.statSync(plain);
        } catch {
          throw new UsageError(`${plain} does not exist: give --size SIZE, or create it with 'famez fam create ${plain} --size SIZE'`);
        }
        size = parseSize(String(st.size));
      }
      process.stdout.write(plainStanzaText({ path: plain, size, id: id ?? 'fam0' }));
      return 0;
    }
    if (size !== null) throw new UsageError('--size goes with --plain (a server sets its own size)');
    if (silent && peers !== null) throw new UsageError('--max-peers sets a fabric size; with --silent give -n VECTORS');
    if (!silent) {
      const needed = (peers ?? DEFAULT_FABRIC_PEERS) + 2;
      if (vectors !== null && vectors !== needed) {
        throw new UsageError(`-n ${vectors} contradicts a fabric of ${needed - 2} peers, which needs vectors=${needed}; drop -n or use --silent`);
      }
      vectors = needed;
    }
    process.stdout.write(stanzaText({ socket, vectors: vectors ?? DEFAULTS.vectors, id: id ?? 'famez0' }));
    return 0;
  } catch (e) {
    if (e instanceof UsageError) {
      process.stderr.write(`famez stanza: ${e.message}\n`);
      return 2;
    }
    throw e;
  }
}
