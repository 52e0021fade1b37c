// `famez serve`: options, daemon mode, pid file, signals, the QEMU stanza.
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

import type { Fabric } from '../fabric/fabric.js';
import { LinkError } from '../link/ofi.js';
import type { SwitchLinks } from '../link/switch-links.js';
import { startConsole } from './console.js';
import { PidFile, errorCode, errorText, groupId, raiseFdLimit, type FdLimit } from '../native.js';
import { Server, ServerError } from '../server/server.js';
import { MAX_GID, MAX_PEERS, MAX_SOCKET_PATH, SERVE_HELP, UsageError, formatSize, parseServeArgs, type ServeOptions } from '../server/options.js';
import { FabricSetupError, startServe } from './start.js';
import { stanzaText } from '../stanza.js';
import type { HttpService } from '../http/api.js';
import { Monitor } from '../observe/monitor.js';
import { famezVersion } from '../version.js';
import type { CliLogger } from './logging.js';
import { Output } from './output.js';
import type { Logger as PinoLogger } from 'pino';
import { notifyReady, notifyStopping } from './systemd.js';
import { peerProcess } from '../server/peer-process.js';

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
function checkFdLimit(o: ServeOptions, log: PinoLogger): void {
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
    log.warn(
      { event: 'fd-limit', soft: limit.soft, fits },
      `the fd limit (${n(limit.soft)}) is enough for about ${n(fits)} peer${fits === 1 ? '' : 's'}, fewer than --max-peers (${n(o.maxPeers)}): ` +
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
  if (o.daemon && process.env[DAEMON_ENV] !== '1') return detach(o);

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
  const refuse = (code: number, message: string): number => {
    process.stderr.write(`famez serve: ${message}\n`);
    report(`error ${code} ${message}`);
    return code;
  };
  // stdout, then stderr, then nowhere: a closed pipe never crashes the server.
  let logger: PinoLogger | null = null;
  const output = new Output([process.stdout, process.stderr], (what) => logger?.warn({ event: 'output' }, what));
  let cli: CliLogger;
  // pino is loaded once the command line is known good: a refusal costs nothing.
  const { createCliLogger } = await import('./logging.js');
  try {
    cli = createCliLogger(o.log, output);
  } catch (e) {
    return refuse(2, `cannot open log file ${o.log.file}: ${describeError(e)}`);
  }
  logger = cli.logger;
  const log = cli.logger;
  let token: string | null = o.http?.token ?? null;
  try {
    if (o.http?.tokenFile) token = readToken(o.http.tokenFile);
    checkFdLimit(o, log);
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    return refuse(2, e.message);
  }
  let server: Server;
  let fabric: Fabric | null;
  let links: SwitchLinks | null;
  // The pid file first: a server already running with it is refused before
  // anything else is created. It is locked for this process's life.
  let pidfile: PidFile | null = null;
  try {
    if (o.pidfile !== null) pidfile = createPidFile(o.pidfile);
    if (pidfile?.tookOver) log.warn({ event: 'replaced-stale', pidfile: o.pidfile }, `took over stale pid file ${o.pidfile}`);
    ({ server, fabric, links } = startServe(o, { gid, logger: log }));
  } catch (e) {
    pidfile?.remove();
    if (e instanceof LinkError) return refuse(1, `${o.fabric?.links?.listen.length ? '--link-listen' : '--link'}: ${e.message}`);
    if (e instanceof ServerError || e instanceof FabricSetupError) return refuse(e instanceof FabricSetupError || e.usage ? 2 : 1, e.message);
    throw e;
  }
  const monitor = new Monitor(
    server,
    fabric,
    (id) => {
      const pid = server.peerPid(id);
      return pid === null ? null : { pid, command: peerProcess(pid).command };
    },
    links,
  );
  let http: HttpService | null = null;
  let stopping = false;
  /** Removes what the server made (socket, shm, pid file). Idempotent. */
  const cleanUp = () => {
    server.close();
    // Removed only if the path still is our (locked) pid file.
    pidfile?.remove();
    void http?.close();
  };
  const stop = (why: string) => {
    if (stopping) return;
    stopping = true;
    notifyStopping(`${why}: closing ${server.peerIds.length} peer(s)`); // systemd, when it started us
    log.info({ event: 'stop', signal: why, peers: server.peerIds.length }, `${why}: closing ${server.peerIds.length} peer(s) and exiting`);
    cleanUp();
    cli.close();
    process.exit(0);
  };
  // Whatever goes wrong inside, the socket and the shared memory go with it.
  const crash = (e: unknown) => {
    const message = e instanceof Error ? e.message : String(e);
    try {
      // One line on stderr says it; the log (a file, JSON, or -v on a
      // terminal) gets the event with its stack too.
      if (o.log.file !== null || o.log.format === 'json' || o.log.level === 'debug' || o.log.level === 'trace') {
        log.fatal({ event: 'crash', err: e }, `internal error: ${message}; removing the socket and shared memory`);
      }
      cleanUp();
    } finally {
      process.stderr.write(`famez serve: internal error: ${message} (socket and shared memory removed)\n`);
      process.exit(1);
    }
  };
  process.on('uncaughtException', crash);
  process.on('unhandledRejection', crash);
  // Before "serving on": whoever reads that line may signal at once.
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));
  // SIGHUP: logrotate's "reopen your log" when there is a log file; the
  // terminal hanging up when there is none.
  process.on('SIGHUP', () => {
    if (!cli.file) return stop('SIGHUP');
    try {
      cli.reopen();
      log.info({ event: 'reopen', file: cli.file.path }, `SIGHUP: reopened log file ${cli.file.path}`);
    } catch (e) {
      log.error({ event: 'reopen-failed', file: cli.file.path, reason: describeError(e) }, `SIGHUP: cannot reopen log file ${cli.file.path}: ${describeError(e)}; still writing the old one`);
    }
  });
  if (o.http) {
    // Loaded only when asked for. prom-client (0.2 s to load) comes after
    // the server is up, before the first scrape needs it.
    const { HttpError, startHttp } = await import('../http/api.js');
    const metrics = new Promise<void>((resolve) => setImmediate(resolve))
      .then(() => import('../http/metrics.js'))
      .then((m) => m.createMetrics(monitor, famezVersion()));
    try {
      http = await startHttp(monitor, { host: o.http.host, port: o.http.port, explicit: o.http.explicit, token, logger: log, version: famezVersion() }, metrics);
    } catch (e) {
      cleanUp();
      if (e instanceof HttpError) return refuse(1, e.message);
      throw e;
    }
  }
  const shmDesc = o.shm.kind === 'memfd' ? 'memfd' : o.shm.kind === 'file' ? o.shm.name : `/dev/shm/${o.shm.name}`;
  log.info(
    { event: 'listening', socket: server.socketPath, shm: shmDesc, size: o.size, vectors: o.vectors },
    `serving on ${server.socketPath} (shared memory ${shmDesc}, ${formatSize(o.size)}, ${o.vectors} vector${o.vectors === 1 ? '' : 's'}; pid ${process.pid})`,
  );
  if (o.fabric) {
    const f = o.fabric;
    log.info(
      { event: 'fabric', nClients: f.nClients, switch: f.nClients + 1, sid: f.sid, pfm: f.pfm, recycle: f.recycle, codec: f.codec },
      `fabric of ${f.nClients} peers (IDs 1..${f.nClients}); the switch is peer ${f.nClients + 1}${f.pfm ? `, the fabric manager (SID ${f.sid})` : ''}; recycle ${f.recycle ? 'on' : 'off'}${f.codec === 'genz' ? '; codec genz' : ''}`,
    );
  }
  if (o.fabric?.fam) {
    const fam = o.fabric.fam;
    log.info({ event: 'fam', file: fam.file, key: fam.key !== null }, `fabric-attached memory ${fam.file} (${formatSize(fs.statSync(fam.file).size)}) at ${o.fabric.sid}:${(o.fabric.nClients + 1) * 100}${fam.key !== null ? ', R-Key required' : ''}`);
  }
  if (links && o.fabric?.links) {
    const l = o.fabric.links;
    const parts = [...(links.listening.length ? [`listening on ${links.listening.join(', ')}`] : []), ...(l.connect.length ? [`linking to ${l.connect.join(', ')}`] : [])];
    log.info({ event: 'links', sid: o.fabric.sid, listen: links.listening, connect: l.connect, provider: l.provider }, `links (${l.provider}): SID ${o.fabric.sid}, ${parts.join('; ')}`);
  }
  if (http) {
    const moved = http.movedFrom === null ? '' : ` (port ${http.movedFrom} is in use)`;
    log.info({ event: 'http', url: http.url, admin: token !== null }, `web view and API at ${http.url}${moved}; metrics at ${http.url}metrics`);
  }
  const stanza = stanzaText({ socket: server.socketPath, vectors: o.vectors });
  if (o.log.format === 'json' || o.log.file !== null) log.info({ event: 'stanza', stanza }, 'QEMU stanza');
  if (o.log.format !== 'json') output.write(stanza);
  report(`ready ${process.pid}${http ? ` ${http.url}` : ''}`);
  if (!daemonChild) notifyReady(`serving on ${server.socketPath}`); // systemd (--daemon: the parent tells it)
  if (daemonChild) {
    try {
      fs.closeSync(3);
    } catch {
      // already closed
    }
  }

  if (fabric && o.fabric && (o.fabric.console ?? (process.stdin.isTTY === true && !daemonChild))) {
    startConsole(fabric.switch, server, output, (why) => stop(why));
  }
  return -1; // keep running
}

/** The admin token from the first line of `file`. */
function readToken(file: string): string {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new UsageError(`cannot read --http-token-file ${file}: ${describeError(e)}`);
  }
  const token = text.split('\n')[0].trim();
  if (token.length < 16) throw new UsageError(`--http-token-file ${file}: its first line must hold a token of at least 16 characters`);
  return token;
}

/** An fs error as a short phrase (ENOENT -> "no such file or directory"). */
function describeError(e: unknown): string {
  const err = e as NodeJS.ErrnoException;
  const words: Record<string, string> = { ENOENT: 'no such file or directory', EACCES: 'permission denied', EISDIR: 'it is a directory', EROFS: 'read-only file system', ENOSPC: 'no space left' };
  return (err.code && words[err.code]) ?? err.message;
}

/** Re-runs this command detached, waits for it to report "ready" (or an
 * error) on an extra pipe, and exits with its verdict. */
function detach(o: ServeOptions): Promise<number> {
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
        const url = /^ready \d+ (\S+)/.exec(line)?.[1];
        notifyReady(`serving (pid ${ready[1]})`, Number(ready[1])); // under systemd, the detached server is the service now
        console.log(`famez: server running in the background (pid ${ready[1]}); log in ${path.resolve(o.log.file ?? '')}${url ? `; web view at ${url}` : ''}`);
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
