// `famez serve`: options, daemon mode, pid file, signals, the QEMU stanza.
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

import type { Fabric } from '../fabric/fabric.js';
import { startConsole } from './console.js';
import { PidFile, errorCode, errorText, groupId, raiseFdLimit, type FdLimit } from '../native.js';
import { Server, ServerError } from '../server/server.js';
import { MAX_GID, MAX_PEERS, MAX_SOCKET_PATH, SERVE_HELP, UsageError, formatSize, parseServeArgs, type ServeOptions } from '../server/options.js';
import { FabricSetupError, startServe } from './start.js';
import { stanzaText } from '../stanza.js';
import { notifyReady, notifyStopping } from './systemd.js';

const DAEMON_ENV = 'FAMEZ_DAEMON_CHILD';

function resolveGroup(group: string): number {
  let gid: number | null = /^\d+$/.test(group) ? Number(group) : null;
  if (gid === null) {
    try {
      gid = groupId(group);
    } catch {
      // the group database cannot be read: the error below
    }
  }
  if (gid === null) throw new UsageError(`unknown group '${group}'`);
  if (gid > MAX_GID) throw new UsageError(`--group ${group} is not a group id (at most ${MAX_GID})`);
  // Only root may give a file a group it is not a member of.
  const uid = process.geteuid?.() ?? 0;
  if (uid !== 0 && gid !== process.getegid?.() && !(process.getgroups?.() ?? []).includes(gid)) {
    throw new UsageError(`--group ${group}: this user is not a member of group ${gid}, so it cannot give files that group`);
  }
  return gid;
}

/** Checks what can be checked before anything is created. */
function preflight(o: ServeOptions): number | null {
  const socket = path.resolve(o.socket);
  const dir = path.dirname(socket);
  if (!fs.existsSync(dir)) throw new UsageError(`socket directory ${dir} does not exist`);
  const bytes = Buffer.byteLength(socket);
  if (bytes > MAX_SOCKET_PATH) {
    throw new UsageError(`socket path ${socket} has ${bytes} bytes, a UNIX socket path at most ${MAX_SOCKET_PATH}; choose a shorter one with -S`);
  }
  if (o.pidfile !== null && !fs.existsSync(path.dirname(path.resolve(o.pidfile)))) {
    throw new UsageError(`pid file directory ${path.dirname(path.resolve(o.pidfile))} does not exist`);
  }
  if (o.shm.kind === 'file' && !fs.existsSync(path.dirname(o.shm.name))) {
    throw new UsageError(`shared-memory directory ${path.dirname(o.shm.name)} does not exist`);
  }
  return o.group === null ? null : resolveGroup(o.group);
}

/** Creates and locks the pid file (see PidFile): a ServerError-like line
 * and exit 1 when it is held or is not a pid file. */
function createPidFile(file: string): PidFile {
  try {
    return PidFile.create(path.resolve(file));
  } catch (e) {
    throw new ServerError(errorCode(e) === 'ENOENT' ? 'ENOENT' : 'EADDRINUSE', errorText(e));
  }
}

/** Fds this process may open beyond the server's own: the ones open now
 * plus a margin for Node and the pid file. */
function fdsBesidesPeers(): number {
  let open = 64;
  try {
    open = fs.readdirSync('/proc/self/fd').length;
  } catch {
    // no /proc: assume a typical Node process
  }
  return open + 16;
}

/** Raises the soft fd limit to the hard one, then checks it against what
 * the server will hold: a fabric of N peers keeps (N+1) x (N+2) eventfds
 * (every peer's and the switch's vectors) and N sockets, so a limit too low
 * for that is a usage error (one line, exit 2, before anything is created);
 * --silent has no fixed need (its default --max-peers is 65536), so a limit
 * below --max-peers is only noted. */
function checkFdLimit(o: ServeOptions): void {
  let limit: FdLimit;
  try {
    limit = raiseFdLimit();
  } catch {
    return; // cannot tell: go on, as the stock server does
  }
  if (!Number.isFinite(limit.soft)) return;
  const base = fdsBesidesPeers();
  const perPeer = o.vectors + 1;
  const n = (x: number) => x.toLocaleString('en-US');
  if (o.fabric) {
    const need = (peers: number) => (peers + 1) * o.vectors + peers + base;
    if (need(o.maxPeers) <= limit.soft) return;
    let fits = o.maxPeers;
    while (fits > 0 && (fits + 1) * (fits + 2) + fits + base > limit.soft) fits--;
    throw new UsageError(
      `a fabric of ${o.maxPeers} peers needs about ${n(need(o.maxPeers))} file descriptors ` +
        `(${o.maxPeers + 1} x ${o.vectors} eventfds, ${o.maxPeers} sockets, ${base} for the server itself) ` +
        `but the fd limit is ${n(limit.soft)} (hard limit ${n(limit.hard)}); raise it (ulimit -n ${need(o.maxPeers)}) ` +
        (fits > 0 ? `or use --max-peers ${fits} or fewer` : 'or use a smaller --max-peers'),
    );
  }
  // The default --max-peers (65536, the ID space) asks for no number of
  // peers: say nothing then; peers past the limit are refused with a line.
  if (o.maxPeers >= MAX_PEERS) return;
  const fits = Math.max(0, Math.floor((limit.soft - base) / perPeer));
  if (fits < o.maxPeers) {
    console.log(
      `famez: the fd limit (${n(limit.soft)}) is enough for about ${n(fits)} peer${fits === 1 ? '' : 's'}, fewer than --max-peers (${n(o.maxPeers)}): ` +
        `each holds ${perPeer} fds, and peers beyond the limit are refused; raise it with ulimit -n`,
    );
  }
}

export async function runServe(argv: string[]): Promise<number> {
  let o: ServeOptions;
  let gid: number | null;
  try {
    o = parseServeArgs(argv);
    if (o.help) {
      process.stdout.write(SERVE_HELP);
      return 0;
    }
    gid = preflight(o);
  } catch (e) {
    if (e instanceof UsageError) {
      process.stderr.write(`famez serve: ${e.message}\n`);
      return 2;
    }
    throw e;
  }
  if (o.daemon && process.env[DAEMON_ENV] !== '1') return detach();

  const daemonChild = process.env[DAEMON_ENV] === '1';
  const report = (line: string) => {
    if (daemonChild) {
      try {
        fs.writeSync(3, `${line}\n`);
      } catch {
        // the parent is gone
      }
    }
  };
  try {
    checkFdLimit(o);
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    process.stderr.write(`famez serve: ${e.message}\n`);
    report(`error 2 ${e.message}`);
    return 2;
  }
  let server: Server;
  let fabric: Fabric | null;
  // The pid file first: a server already running with it is refused before
  // anything else is created. It is locked for this process's life.
  let pidfile: PidFile | null = null;
  try {
    if (o.pidfile !== null) pidfile = createPidFile(o.pidfile);
    if (pidfile?.tookOver) console.log(`famez: took over stale pid file ${o.pidfile}`);
    ({ server, fabric } = startServe(o, { gid }));
  } catch (e) {
    pidfile?.remove();
    if (e instanceof ServerError || e instanceof FabricSetupError) {
      const code = e instanceof FabricSetupError || e.usage ? 2 : 1;
      process.stderr.write(`famez serve: ${e.message}\n`);
      report(`error ${code} ${e.message}`);
      return code;
    }
    throw e;
  }
  const stop = (signal: string) => {
    notifyStopping(`${signal}: closing ${server.peerIds.length} peer(s)`); // systemd, when it started us
    console.log(`famez: ${signal}: closing ${server.peerIds.length} peer(s) and exiting`);
    server.close();
    // Removed only if the path still is our (locked) pid file.
    pidfile?.remove();
    process.exit(0);
  };
  // Before "serving on": whoever reads that line may signal at once.
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGHUP', () => undefined);
  const shmDesc = o.shm.kind === 'memfd' ? 'memfd' : o.shm.kind === 'file' ? o.shm.name : `/dev/shm/${o.shm.name}`;
  console.log(
    `famez: serving on ${server.socketPath} (shared memory ${shmDesc}, ${formatSize(o.size)}, ${o.vectors} vector${o.vectors === 1 ? '' : 's'}; pid ${process.pid})`,
  );
  if (o.fabric) {
    const f = o.fabric;
    console.log(
      `famez: fabric of ${f.nClients} peers (IDs 1..${f.nClients}); the switch is peer ${f.nClients + 1}${f.pfm ? `, the fabric manager (SID ${f.sid})` : ''}; recycle ${f.recycle ? 'on' : 'off'}${f.codec === 'genz' ? '; codec genz' : ''}`,
    );
  }
  process.stdout.write(stanzaText({ socket: server.socketPath, vectors: o.vectors }));
  report(`ready ${process.pid}`);
  if (!daemonChild) notifyReady(`serving on ${server.socketPath}`); // systemd (--daemon: the parent tells it)
  if (daemonChild) {
    try {
      fs.closeSync(3);
    } catch {
      // already closed
    }
  }

  if (fabric && o.fabric && (o.fabric.console ?? (process.stdin.isTTY === true && !daemonChild))) {
    startConsole(fabric.switch, server, () => stop('quit'));
  }
  return -1; // keep running
}

/** Re-runs this command detached, waits for it to report "ready" (or an
 * error) on an extra pipe, and exits with its verdict. */
function detach(): Promise<number> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [...process.execArgv, ...process.argv.slice(1)], {
      detached: true,
      stdio: ['ignore', 'ignore', 'ignore', 'pipe'],
      env: { ...process.env, [DAEMON_ENV]: '1' },
    });
    let text = '';
    const pipe = child.stdio[3] as NodeJS.ReadableStream;
    pipe.setEncoding('utf8');
    pipe.on('data', (chunk: string) => (text += chunk));
    pipe.on('end', () => {
      const line = text.split('\n')[0] ?? '';
      const ready = /^ready (\d+)/.exec(line);
      const error = /^error (\d) (.*)/.exec(line);
      child.unref();
      if (ready) {
        notifyReady(`serving (pid ${ready[1]})`, Number(ready[1])); // under systemd, the detached server is the service now
        console.log(`famez: server running in the background (pid ${ready[1]})`);
        resolve(0);
      } else if (error) {
        process.stderr.write(`famez serve: ${error[2]}\n`);
        resolve(Number(error[1]));
      } else {
        process.stderr.write('famez serve: the background server exited before it was ready\n');
        resolve(1);
      }
    });
  });
}
