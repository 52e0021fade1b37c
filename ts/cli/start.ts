// From parsed `famez serve` options to a running server (and its switch):
// the one mapping of ServeOptions onto Server and Fabric, used by the CLI
// and by tests that run the same server in their own process.
import { FamezError } from '../errors.js';
import { silentLogger, type Logger } from '../log.js';
import { Fabric } from '../fabric/fabric.js';
import { genzFabricHooks } from '../fabric/genz-codec.js';
import { openMailbox } from '../fabric/mailbox.js';
import type { ServeOptions } from '../server/options.js';
import { DEFAULT_MAX_QUEUED, Server, type ServerConfig } from '../server/server.js';

export interface Served {
  server: Server;
  /** The switch, unless --silent. */
  fabric: Fabric | null;
}

/** The fabric's mailbox does not fit what the options ask (-l, --ring-capacity). */
export class FabricSetupError extends FamezError<'ENOSPC'> {
  override name = 'FabricSetupError';
  constructor(message: string, options?: ErrorOptions) {
    super('ENOSPC', message, options);
  }
}

/** Starts the server `o` describes. Throws ServerError from the start or
 * FabricSetupError from the mailbox, in both cases with nothing left behind. */
export function startServe(
  o: ServeOptions,
  { gid = null, logger = silentLogger, overrides = {} }: { gid?: number | null; logger?: Logger; overrides?: Partial<ServerConfig> } = {},
): Served {
  const fabric = o.fabric
    ? new Fabric({ nClients: o.fabric.nClients, pfm: o.fabric.pfm, sid: o.fabric.sid, logger, ...(o.fabric.codec === 'genz' ? genzFabricHooks(o.fabric) : {}) })
    : null;
  let server: Server;
  try {
    server = Server.start({
      socket: o.socket,
      shm: o.shm,
      size: o.size,
      vectors: o.vectors,
      maxPeers: o.maxPeers,
      maxQueued: o.maxQueued ?? DEFAULT_MAX_QUEUED,
      idPolicy: o.idPolicy,
      keepShm: o.keepShm,
      mode: o.mode,
      gid,
      ids: o.fabric ? { min: 1, max: o.fabric.nClients } : undefined,
      member: fabric?.member,
      recycle: o.fabric?.recycle ?? false,
      logger,
      ...overrides,
    });
  } catch (e) {
    fabric?.close();
    throw e;
  }
  if (fabric && o.fabric) {
    try {
      const rings = (line: string) => logger.info({ component: 'switch', event: 'rings' }, line);
      fabric.attach(server, openMailbox(server.sharedMemory, o.fabric.nClients, rings, o.fabric.ringCapacity));
    } catch (e) {
      // Only the sizes can be wrong here; undo everything the start made.
      server.close();
      fabric.close();
      throw new FabricSetupError((e as Error).message, { cause: e });
    }
  }
  return { server, fabric };
}
