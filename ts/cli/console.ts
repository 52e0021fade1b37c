// The server console (`famez serve` with a terminal, or --console): FAME-Z's
// `help`, `dump` (the switch's picture) and `quit`.
import * as readline from 'node:readline';

import type { Switch } from '../fabric/switch.js';
import type { Server } from '../server/server.js';

const HELP = 'commands: help, dump (the switch and its ports), quit (disconnect every peer and exit)';

/** Runs one console line; returns false on quit. */
export function consoleCommand(line: string, sw: Switch, server: Server, say: (text: string) => void): boolean {
  const cmd = line.trim().split(/\s+/)[0] ?? '';
  switch (cmd) {
    case '':
      return true;
    case 'help':
    case 'h':
    case '?':
      say(HELP);
      return true;
    case 'dump':
    case 'd':
      say(sw.picture());
      say(`connected: ${server.peerIds.join(', ') || 'none'}`);
      return true;
    case 'quit':
    case 'q':
      return false;
    default:
      say(`unknown command '${cmd}'; ${HELP}`);
      return true;
  }
}

export function startConsole(sw: Switch, server: Server, quit: () => void): void {
  const rl = readline.createInterface({ input: process.stdin, output: process.stdout, terminal: process.stdin.isTTY === true });
  rl.setPrompt('Z-switch> ');
  if (process.stdin.isTTY) rl.prompt();
  rl.on('line', (line) => {
    if (!consoleCommand(line, sw, server, (text) => process.stdout.write(`${text}\n`))) {
      rl.close();
      quit();
      return;
    }
    if (process.stdin.isTTY) rl.prompt();
  });
}
