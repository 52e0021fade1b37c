// For the churn and peer-ID tests: an in-process Server (and fabric switch)
// configured from `famez serve` arguments exactly as the CLI configures it,
// and a peer in its own process that can be SIGKILLed while it holds its
// eventfds (__test__/helpers/ivshmem_probe.py, a raw reader that shares no
// code with famez).
import { lineLogger } from '../../ts/log.js';
import * as path from 'node:path';

import type { Fabric } from '../../ts/fabric/fabric.js';
import { parseServeArgs, type ServeOptions } from '../../ts/server/options.js';
import type { Server, ServerConfig } from '../../ts/server/server.js';
import { startServe } from '../../ts/cli/start.js';
import { LineProcess, waitFor } from './wait.js';

export interface Served {
  server: Server;
  fabric: Fabric | null;
  options: ServeOptions;
  socket: string;
}

/** Starts what `famez serve ARGV -S SOCKET --memfd` starts, in this process
 * (so its peer table and fds can be inspected). `overrides` replaces parts
 * of the server's configuration; say why wherever it is used. */
export function serveInProcess(argv: string[], socket: string, log: (line: string) => void, overrides: Partial<ServerConfig> = {}): Served {
  const options = parseServeArgs([...argv, '-S', socket, '--memfd']);
  const { server, fabric } = startServe(options, { logger: lineLogger(log, 'debug'), overrides });
  return { server, fabric, options, socket: server.socketPath };
}

interface ProbeRecord {
  index?: number;
  value?: number;
  hasFd?: boolean;
  event?: string;
}

/** A raw ivshmem peer process (python3 ivshmem_probe.py) that keeps every
 * fd it is sent until it dies. */
export class ProbePeer {
  private constructor(readonly proc: LineProcess) {}

  static spawn(socket: string): ProbePeer {
    return new ProbePeer(LineProcess.spawn('python3', [path.join(__dirname, 'ivshmem_probe.py'), socket]));
  }

  private records(): ProbeRecord[] {
    return this.proc.lines.map((l) => JSON.parse(l) as ProbeRecord);
  }

  /** The ID the server gave (message 1), -1 before it arrived. */
  get id(): number {
    return this.records().find((r) => r.index === 1)?.value ?? -1;
  }

  /** Waits until the peer has connected (and, with `vectors`, until all of
   * its own eventfds, the end of its welcome, have arrived). */
  async ready(vectors = 0, ms = 20_000): Promise<void> {
    await waitFor(
      () => {
        const recs = this.records();
        if (recs.some((r) => r.event === 'eof')) throw new Error(`the probe peer was closed by the server: ${this.proc.lines.slice(0, 4).join(' ')}`);
        if (!recs.some((r) => r.event === 'connected')) return false;
        const id = recs.find((r) => r.index === 1)?.value;
        return vectors === 0 || (id !== undefined && recs.filter((r) => r.index !== undefined && r.index > 2 && r.hasFd && r.value === id).length >= vectors);
      },
      `a probe peer's ${vectors ? 'welcome' : 'connection'} (stderr: ${this.proc.stderr.slice(-300)})`,
      ms,
      10,
    );
  }

  /** SIGKILL, then wait (bounded) until it is gone. */
  async kill(): Promise<void> {
    if (!this.proc.exit) this.proc.child.kill('SIGKILL');
    await this.proc.stop();
  }
}
