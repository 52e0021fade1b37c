// `famez client`: the stock ivshmem-client's behaviour on a famez Client —
// retry until the server appears (and again when it goes away), print
// interrupts and peer changes, and take `dump`, `int PEER VECTOR`,
// `int PEER all`, `int all` on stdin, at a `cmd> ` prompt on a terminal.
import * as readline from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';

import { Client, ClientError } from '../client/client.js';
import { FABRIC_COMMANDS, FabricSession } from './fabric-client.js';
import { UsageError, parseFlags } from '../args.js';
import { DEFAULTS } from '../server/options.js';
import { Output, keepPrompt } from './output.js';
import { bindingLoadError } from '../native.js';

const HELP = `Usage: famez client [-S SOCKET] [-N NODENAME] [-v] [--no-reconnect]

Joins an ivshmem server (famez serve, or QEMU's ivshmem-server) as a peer.
Retries every second until the server is there, and when it goes away
waits for it to come back. On a terminal, commands are typed at a 'cmd> '
prompt; Ctrl-C or Ctrl-D leaves. From a pipe, the end of input leaves
once the commands given have run.

  -S, --socket PATH   server socket (default ${DEFAULTS.socket})
  -N, --nodename NAME this peer's nodename in a fabric (default <host>-<ID>)
  -v, --verbose       say more
      --no-reconnect  when the server goes away, exit 1 instead of waiting
  -h, --help          show this help
      --version       famez's version

Fabric commands (stdin, when the server is a FAME-Z fabric: famez serve):
${FABRIC_COMMANDS.replace(/^commands:\n/, '')}

Stock commands (stdin, against famez serve --silent or QEMU's server):
  dump [--json]       this peer's ID, vectors, the other peers, memory size
  int PEER VECTOR     ring PEER's VECTOR
  int PEER all        ring all of PEER's vectors
  int all             ring every vector of every peer
  help                this list
  quit                leave
`;

const COMMANDS = 'commands: dump [--json], int PEER VECTOR, int PEER all, int all, help, quit';

/** Runs one command line against a connected client; returns false on quit. */
export function command(client: Client, line: string, say: (line: string) => void): boolean {
  const words = line.trim().split(/\s+/).filter(Boolean);
  if (words.length === 0) return true;
  const [cmd, a, b] = words;
  try {
    switch (cmd) {
      case 'help':
      case '?':
        say(COMMANDS);
        return true;
      case 'quit':
      case 'exit':
        return false;
      case 'dump': {
        if (a === '--json' && words.length === 2) {
          const peers = [...client.peers.values()].map((p) => ({ id: p.id, vectors: p.vectors }));
          say(JSON.stringify({ id: client.id, vectors: client.vectors, memory: client.memory.byteLength, peers }));
          return true;
        }
        if (words.length > 1) {
          say('usage: dump [--json]');
          return true;
        }
        say(`peer ${client.id}: ${client.vectors} vector(s), shared memory ${client.memory.byteLength} bytes`);
        if (client.peers.size === 0) say('no other peers');
        for (const p of client.peers.values()) say(`peer ${p.id}: ${p.vectors} vector(s)`);
        return true;
      }
      case 'int': {
        if (a === 'all' && b === undefined) {
          for (const p of client.peers.values()) client.ring(p.id, 'all');
          say(`rang every vector of ${client.peers.size} peer(s)`);
          return true;
        }
        if (a === undefined || b === undefined || words.length > 3 || !/^\d+$/.test(a) || !(b === 'all' || /^\d+$/.test(b))) {
          say('usage: int PEER VECTOR | int PEER all | int all');
          return true;
        }
        client.ring(Number(a), b === 'all' ? 'all' : Number(b));
        say(`rang peer ${a} vector ${b}`);
        return true;
      }
      default:
        say(`unknown command '${cmd}'; ${COMMANDS}`);
        return true;
    }
  } catch (e) {
    say(`error: ${(e as Error).message}`);
    return true;
  }
}

export async function runClient(argv: string[]): Promise<number> {
  let socket: string = DEFAULTS.socket;
  let verbose = false;
  let reconnect = true;
  let nodename: string | undefined;
  try {
    for (const flag of parseFlags(argv, {
      socket: { type: 'string', short: 'S' },
      verbose: { type: 'boolean', short: 'v' },
      reconnect: { type: 'boolean' },
      'no-reconnect': { type: 'boolean' },
      nodename: { type: 'string', short: 'N' },
      help: { type: 'boolean', short: 'h' },
    })) {
      if (flag.name === 'help') {
        process.stdout.write(HELP);
        return 0;
      }
      if (flag.name === 'socket') socket = flag.value;
      if (flag.name === 'verbose') verbose = true;
      if (flag.name === 'reconnect') reconnect = true;
      if (flag.name === 'no-reconnect') reconnect = false;
      if (flag.name === 'nodename') nodename = flag.value;
    }
  } catch (e) {
    if (e instanceof UsageError) {
      process.stderr.write(`famez client: ${e.message}\n`);
      return 2;
    }
    throw e;
  }

  // stdout, then stderr, then nowhere: a closed pipe never crashes the client.
  const output = new Output();
  const say = (line: string) => output.write(`${line}\n`);
  let client: Client | null = null;
  // Set while connected to a fabric server: its commands replace the stock ones.
  let fabric: FabricSession | null = null;
  let quitting = false;
  let sleeper: AbortController | null = null;
  // Commands typed (or piped) before the connection is up wait for it.
  const pending: string[] = [];
  let stdinDone = false;
  const run = (line: string) => {
    if (quitting) return;
    if (!client || client.closed) {
      pending.push(line);
      return;
    }
    if (fabric) {
      void fabric.command(line).then((go) => {
        if (!go) stop();
      });
      return;
    }
    if (!command(client, line, say)) stop();
  };
  // At the end of input, quit once the commands given so far have run.
  const finish = () => {
    if (fabric) void fabric.idle().then(stop);
    else stop();
  };
  // On a terminal, the stock client's `cmd> ` prompt, redrawn under every
  // line printed so that output never lands in what is being typed.
  const tty = process.stdin.isTTY === true && process.stdout.isTTY === true;
  const rl = readline.createInterface({ input: process.stdin, output: tty ? process.stdout : undefined, terminal: tty });
  let release = () => {};
  if (tty) {
    rl.setPrompt('cmd> ');
    release = keepPrompt(rl, output);
    // In raw mode Ctrl-C reaches readline, not the process.
    rl.on('SIGINT', () => stop());
  }
  rl.on('line', (line) => {
    run(line);
    if (tty && !quitting) rl.prompt();
  });
  // End of input (Ctrl-D) is a quit, once the queued commands have run.
  rl.on('close', () => {
    stdinDone = true;
    if (client && !client.closed && pending.length === 0) finish();
    else if (tty && (!client || client.closed)) stop();
  });
  const stop = () => {
    quitting = true;
    release();
    sleeper?.abort();
    client?.close();
    rl.close();
    // readline leaves stdin open, which would keep the process alive.
    process.stdin.destroy();
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);

  // Retrying cannot bring a missing native binding: say so once, as one line.
  if (bindingLoadError !== null) {
    release();
    process.stderr.write(`famez client: ${bindingLoadError.message}\n`);
    rl.close();
    return 1;
  }
  let announcedWait = false;
  while (!quitting) {
    try {
      client = await Client.connect(socket, { retry: false });
    } catch (e) {
      if (e instanceof ClientError && (e.code === 'EREFUSED' || e.code === 'EPROTO')) {
        release();
        process.stderr.write(`famez client: ${e.message}\n`);
        rl.close();
        return 1;
      }
      if (!announcedWait) {
        say(`waiting for a server on ${socket} (${(e as Error).message}); retrying every second`);
        announcedWait = true;
      }
      sleeper = new AbortController();
      await sleep(1000, undefined, { signal: sleeper.signal }).catch(() => undefined);
      continue;
    }
    const c = client;
    const peers = [...c.peers.keys()];
    say(`connected to ${socket} as peer ${c.id} (${c.vectors} vector(s)); peers: ${peers.length ? peers.join(', ') : 'none'}`);
    fabric = FabricSession.attach(c, { nodename, verbose, say });
    if (fabric) say(fabric.describe());
    else {
      c.on('interrupt', ({ vector, count }) => say(`interrupt on vector ${vector} (count ${count})`));
      c.on('join', ({ id, vectors }) => say(`peer ${id} joined (${vectors} vector(s))`));
      c.on('leave', ({ id }) => say(`peer ${id} left`));
    }
    for (const line of pending.splice(0)) run(line);
    if (stdinDone && !quitting) finish();
    const reason = await new Promise<string>((resolve) => c.once('close', ({ reason }) => resolve(reason)));
    fabric = null;
    if (quitting) break;
    say(`disconnected: ${reason}`);
    if (!reconnect) {
      release();
      rl.close();
      return 1;
    }
    say(`waiting for the server on ${socket} to come back; retrying every second (--no-reconnect to exit instead)`);
    announcedWait = true;
  }
  rl.close();
  return 0;
}
