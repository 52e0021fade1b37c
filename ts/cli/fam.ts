// `famez fam`: FAME's plain setup, the fabric-attached memory file that
// VMs map through ivshmem-plain (no server, no doorbell).
import { UsageError, VersionRequest, parseFlags } from '../args.js';
import { FamError, createFam } from '../fam/create.js';
import { formatSize, parseSize } from '../server/options.js';
import { plainStanzaText } from '../stanza.js';

const HELP = `Usage: famez fam create PATH --size SIZE [--preallocate] [--mode MODE]

Creates the fabric-attached memory (FAM) file of FAME's plain setup and
prints the QEMU and libvirt arguments that give a VM that memory
(ivshmem-plain: BAR2 is the file). Every VM given the same file shares it.

  -l, --size SIZE     size, a power of two, K/M/G/T suffixes (e.g. 32G)
      --preallocate   reserve the blocks now (default: sparse, blocks are
                      taken as VMs write); on hugetlbfs the file is made as is
      --mode MODE     octal permissions (default 0600; QEMU must open it)
  -h, --help          show this help
      --version       famez's version

'famez stanza --plain PATH' prints the arguments for an existing file;
'famez vm --fam PATH' boots test VMs with it.
`;

export function runFam(argv: string[]): number {
  const [sub, ...rest] = argv;
  if (sub === undefined || sub === '-h' || sub === '--help' || sub === 'help') {
    process.stdout.write(HELP);
    return sub === undefined ? 2 : 0;
  }
  if (sub === '--version') throw new VersionRequest();
  try {
    if (sub !== 'create') throw new UsageError(`unknown subcommand '${sub}' (famez fam create PATH --size SIZE)`);
    const positional = rest.filter((a, i) => !a.startsWith('-') && !(i > 0 && ['-l', '--size', '--mode'].includes(rest[i - 1])));
    if (positional.length !== 1) throw new UsageError('famez fam create needs one PATH (see --help)');
    const file = positional[0];
    let size: number | null = null;
    let prealloc = false;
    let mode = 0o600;
    for (const flag of parseFlags(
      rest.filter((a) => a !== file),
      { size: { type: 'string', short: 'l' }, preallocate: { type: 'boolean' }, mode: { type: 'string' }, help: { type: 'boolean', short: 'h' } },
    )) {
      if (flag.name === 'help') {
        process.stdout.write(HELP);
        return 0;
      }
      if (flag.name === 'size') size = parseSize(flag.value);
      if (flag.name === 'preallocate') prealloc = true;
      if (flag.name === 'mode') {
        if (!/^0?[0-7]{3}$/.test(flag.value)) throw new UsageError(`--mode needs octal permission bits like 0660, got '${flag.value}'`);
        mode = parseInt(flag.value, 8);
      }
    }
    if (size === null) throw new UsageError('famez fam create needs --size SIZE (e.g. --size 32G)');
    const f = createFam(file, size, { preallocate: prealloc, mode });
    const how = f.hugetlbfs ? 'on hugetlbfs' : prealloc ? `${formatSize(f.allocated)} reserved` : `sparse, ${formatSize(f.allocated)} allocated`;
    process.stdout.write(`famez: created ${f.path}: ${formatSize(f.size)} (${how})\n\n${plainStanzaText({ path: f.path, size: f.size })}`);
    return 0;
  } catch (e) {
    if (e instanceof UsageError) {
      process.stderr.write(`famez fam: ${e.message}\n`);
      return 2;
    }
    if (e instanceof FamError) {
      process.stderr.write(`famez fam: ${e.message}\n`);
      return 1;
    }
    throw e;
  }
}
