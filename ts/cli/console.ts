// The server console (`famez serve` with a terminal, or --console): FAME-Z's
// `help`, `dump` (the switch's picture) and `quit`.
import * as readline from 'node:readline';

import type { Switch } from '../fabric/switch.js';
import type { Server } from '../server/server.js';
import { keepPrompt, type Output } from './output.js';

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

/** The console on stdin. On a terminal: a `Z-switch> ` prompt that log
 * lines never overwrite (Output redraws it), Ctrl-C stops the server at
 * the first press and Ctrl-D quits; from a pipe, commands are read until
 * its end and the server goes on. */
export function startConsole(sw: Switch, server: Server, output: Output, quit: (why: string) => void): void {
  const tty = process.stdin.isTTY === true;
  const rl = readline.createInterface({ input: process.stdin, output: process.stdout, terminal: tty });
  rl.setPrompt('Z-switch> ');
  let done = false;
  let release = () => {};
  const end = (why: string) => {
    if (done) return;
    done = true;
    // The last lines (the stop) take the prompt's place.
    release();
    rl.close();
    quit(why);
  };
  if (tty) {
    release = keepPrompt(rl, output);
    // In raw mode Ctrl-C reaches readline, not the process: without this
    // listener readline only pauses, and the first press seems to do nothing.
    rl.on('SIGINT', () => end('SIGINT'));
    rl.on('close', () => end('quit'));
  }
  rl.on('line', (line) => {
    if (!consoleCommand(line, sw, server, (text) => output.write(`${text}\n`))) {
      end('quit');
      return;
    }
    if (tty) rl.prompt();
  });
}
