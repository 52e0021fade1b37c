#!/usr/bin/env node
// famez command line: `famez serve | client | guest | vm | stanza | fam | top`.
import { VersionRequest } from '../args.js';
import { famezVersion } from '../version.js';
import { runClient } from './client.js';
import { runFam } from './fam.js';
import { runGuest } from './guest.js';
import { runServe } from './serve.js';
import { runStanza } from './stanza.js';
import { runTop } from './top.js';
import { runVm } from './vm.js';

const HELP = `Usage: famez <command> [options]

Commands:
  serve     run the ivshmem server (a drop-in for QEMU's ivshmem-server)
  client    join a server as a peer; type 'help' at its prompt
  guest     inside a VM: join the fabric through its ivshmem-doorbell device
  vm        boot test VMs on a fabric, each running one command (famez guest by default)
  stanza    print the QEMU and libvirt arguments for a server (or --plain FILE)
  fam       create FAME's fabric-attached memory file (famez fam create PATH --size 32G)
  top       a live text view of a server's peers and events over its HTTP API (famez top [URL])
  bench     run the benchmarks (a source checkout only: npm run bench)

Run 'famez <command> --help' for a command's options. 'famez --version',
or --version after any command, prints famez's version.
`;

/** `famez bench`: the runner lives in bench/, which only a source checkout
 * has (the published package does not ship it). */
async function runBench(args: string[]): Promise<number> {
  const { existsSync } = await import('node:fs');
  const { join, resolve } = await import('node:path');
  const { spawn } = await import('node:child_process');
  const root = resolve(__dirname, '..', '..');
  if (!existsSync(join(root, 'bench', 'run.ts'))) {
    process.stderr.write(`famez bench: the benchmarks are not part of the published package; run 'npm run bench' in a famez source checkout\n`);
    return 2;
  }
  const child = spawn(process.execPath, ['--import=tsx', join('bench', 'run.ts'), ...args], { cwd: root, stdio: 'inherit' });
  const stop = (sig: NodeJS.Signals) => child.kill(sig);
  process.on('SIGINT', stop).on('SIGTERM', stop);
  return new Promise((done) => child.on('close', (code) => done(code ?? 1)));
}

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  switch (command) {
    case 'serve':
      return runServe(rest);
    case 'client':
      // Done with the terminal either way; an open stdin would keep Node alive.
      return runClient(rest).finally(() => process.stdin.destroy());
    case 'guest':
      return runGuest(rest).finally(() => process.stdin.destroy());
    case 'stanza':
      return runStanza(rest);
    case 'fam':
      return runFam(rest);
    case 'vm':
      return runVm(rest);
    case 'top':
      return runTop(rest);
    case 'bench':
      return runBench(rest);
    case undefined:
    case 'help':
    case '-h':
    case '--help':
      process.stdout.write(HELP);
      return 0;
    case '--version':
    case '-V':
      throw new VersionRequest();
    default:
      process.stderr.write(`famez: unknown command '${command}'\n${HELP}`);
      return 2;
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    if (code !== undefined && code >= 0) process.exitCode = code;
  },
  (err: unknown) => {
    if (err instanceof VersionRequest) {
      process.stdout.write(`famez ${famezVersion()}\n`);
      process.exitCode = 0;
      return;
    }
    process.stderr.write(`famez: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 1;
  },
);
