#!/usr/bin/env node
// famez command line: `famez serve | client | stanza`.
import { runClient } from './client.js';
import { runServe } from './serve.js';
import { runStanza } from './stanza.js';

const HELP = `Usage: famez <command> [options]

Commands:
  serve     run the ivshmem server (a drop-in for QEMU's ivshmem-server)
  client    join a server as a peer; type 'help' at its prompt
  stanza    print the QEMU and libvirt arguments for a server

Run 'famez <command> --help' for a command's options.
`;

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  switch (command) {
    case 'serve':
      return runServe(rest);
    case 'client':
      // Done with the terminal either way; an open stdin would keep Node alive.
      return runClient(rest).finally(() => process.stdin.destroy());
    case 'stanza':
      return runStanza(rest);
    case undefined:
    case 'help':
    case '-h':
    case '--help':
      process.stdout.write(HELP);
      return 0;
    case '--version':
    case '-V':
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      process.stdout.write(`famez ${require('../../package.json').version}\n`);
      return 0;
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
    process.stderr.write(`famez: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 1;
  },
);
