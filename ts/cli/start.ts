// From parsed `famez serve` options to a running server (and its switch):
// the one mapping of ServeOptions onto Server and Fabric, used by the CLI
// and by tests that run the same server in their own process.
import * as fs from 'node:fs';

import { BusyPoll } from '../busy-poll.js';
import { FamezError } from '../errors.js';
import { SharedMemory } from '../native.js';
import type { FamStore } from '../link/fam.js';
import { silentLogger, type Logger } from '../log.js';
import { Fabric } from '../fabric/fabric.js';
import { genzFabricHooks } from '../fabric/genz-codec.js';
import { openMailbox } from '../fabric/mailbox.js';
import { linkDefaults, type ServeOptions } from '../server/options.js';
import { DEFAULT_MAX_QUEUED, Server, type ServerConfig } from '../server/server.js';
import { page } from '../link/directory.js';
import { UNREACHABLE } from '../fabric/remote.js';
import { SwitchLinks } from '../link/switch-links.js';
import type { NodeEntry } from '../link/topology.js';

export interface Served {
  server: Server;
  /** The switch, unless --silent. */
  fabric: Fabric | null;
  /** The switch's links to other switches (--link, --link-listen). */
  links: SwitchLinks | null;
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
  // One busy poll for the process: doorbells and link messages kick it.
  const busyPoll = fabric && o.fabric && o.fabric.busyPollUs > 0 ? new BusyPoll(o.fabric.busyPollUs) : null;
  if (fabric && busyPoll) {
    fabric.busyPoll = busyPoll;
    server.on('close', () => busyPoll.close());
  }
  let links: SwitchLinks | null = null;
  // `famez-nodes?` is answered with or without links (an empty list then).
  if (fabric) fabric.switch.directory = (p) => page(links?.remoteNodes() ?? [], p);
  if (fabric && (o.fabric?.links || o.fabric?.fam)) {
    const l = o.fabric.links ?? linkDefaults();
    let fam: FamStore | null = null;
    let famShm: SharedMemory | null = null;
    if (o.fabric.fam) {
      try {
        famShm = SharedMemory.fromFd(fs.openSync(o.fabric.fam.file, 'r+'));
        // Its own descriptor for the links' RMA windows (each maps it on its own).
        const fd = fs.openSync(o.fabric.fam.file, 'r+');
        server.on('close', () => fs.closeSync(fd));
        fam = { bytes: new Uint8Array(famShm.buffer as ArrayBuffer), key: o.fabric.fam.key, fd };
      } catch (e) {
        famShm?.close();
        server.close();
        fabric.close();
        throw new FabricSetupError(`--fam ${o.fabric.fam.file}: ${(e as Error).message}`, { cause: e });
      }
      const shm = famShm;
      server.on('close', () => shm.close());
    }
    const f = fabric;
    links = new SwitchLinks({
      sid: o.fabric.sid,
      cid: fabric.switch.serverId * 100,
      listen: l.listen,
      connect: l.connect,
      provider: l.provider,
      heartbeatMs: l.heartbeatMs,
      logger,
      deliver: (peer, messages, taken) => f.deliverRemote(peer, messages, taken),
      fam,
      resume: (peer) => f.resume(peer),
      fm: o.fabric.fm,
      ...(busyPoll ? { busyPoll } : {}),
    });
    try {
      links.start();
    } catch (e) {
      // LinkError: no libfabric (ELIBACC), an address in use, ...
      server.close();
      fabric.close();
      famShm?.close();
      throw e;
    }
    fabric.forwarder = links;
    if (l.listen.length || l.connect.length) {
      // Peers are configured for the fabric manager in charge, wherever it is.
      const sl = links;
      fabric.switch.manager = () => {
        const m = sl.manager;
        return m ? { sid: m.sid, cid: m.cid } : null;
      };
      links.on('manager', () => f.managerChanged());
    }
    links.on('unreachable', (sids) => f.broadcast(`${UNREACHABLE}${sids.join(',')}`));

    follow(fabric, server, links);
  }
  return { server, fabric, links };
}

/** The switch's peers as its advertisement lists them: the switch and
 * every connected peer, by the CID FAME-Z gives it (ID x 100). */
export function localNodes(fabric: Fabric): NodeEntry[] {
  return fabric.switch.portList
    .filter((p) => p.id * 100 <= 0xfff)
    .map((p) => ({ cid: p.id * 100, nodename: fabric.nodename(p.id), cclass: p.cclass }))
    .concat([{ cid: fabric.switch.serverId * 100, nodename: fabric.nodename(fabric.switch.serverId) || 'Z-switch', cclass: 'FabricSwitch' }]);
}

/** Keeps the links' advertisement current: on every join, leave and port
 * change, and each second for nodenames (a peer writes its slot's name
 * without telling). Closes the links with the server. */
function follow(fabric: Fabric, server: Server, links: SwitchLinks): void {
  const update = () => {
    if (!links.closed && !fabric.closed) links.setNodes(localNodes(fabric));
  };
  update();
  const timer = setInterval(update, 1000).unref();
  const later = () => setImmediate(update);
  server.on('connect', later);
  server.on('disconnect', later);
  fabric.on('port', later);
  server.on('close', () => {
    clearInterval(timer);
    server.off('connect', later);
    server.off('disconnect', later);
    fabric.off('port', later);
    links.close();
  });
}
