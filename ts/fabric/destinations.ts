// What a DEST names, as a pure function of who is connected: an ID, a
// nodename, `server`/`switch`, `all` (every other connected peer, the
// switch included) or `others` (every other peer but the switch). Numeric
// strings are IDs.
import { FabricClientError, type Dest } from './peer-types.js';

export interface FabricView {
  /** This peer's ID. */
  self: number;
  /** The switch's ID (nClients + 1, the highest). */
  serverId: number;
  /** Connected peers (the switch included; this peer may be in it). */
  connected: ReadonlySet<number>;
  nodename(id: number): string;
}

/** The IDs `dest` names, ascending for `all`/`others`; throws ENOPEER /
 * EINVAL. `all` and `others` may name nobody (an empty list). */
export function resolveDest(dest: Dest, v: FabricView): number[] {
  if (typeof dest === 'number' || /^\d+$/.test(dest.trim())) {
    const id = typeof dest === 'number' ? dest : Number(dest.trim());
    if (!Number.isSafeInteger(id) || id < 1 || id > v.serverId) {
      throw new FabricClientError('ENOPEER', `peer ${dest} is outside the fabric's IDs 1..${v.serverId}`);
    }
    if (id !== v.self && !v.connected.has(id)) throw new FabricClientError('ENOPEER', `peer ${id} is not connected`);
    return [id];
  }
  const name = dest.trim();
  const others = [...v.connected].filter((id) => id !== v.self).sort((a, b) => a - b);
  switch (name.toLowerCase()) {
    case 'server':
    case 'switch':
      if (!v.connected.has(v.serverId)) throw new FabricClientError('ENOPEER', `the switch (peer ${v.serverId}) is not connected`);
      return [v.serverId];
    case 'all':
      return others;
    case 'others':
      return others.filter((id) => id !== v.serverId);
  }
  if (!name) throw new FabricClientError('ENOPEER', 'an empty DEST');
  const named = [v.self, ...others].filter((id) => v.nodename(id) === name);
  if (named.length === 0) throw new FabricClientError('ENOPEER', `no connected peer is named '${name}'`);
  if (named.length > 1) throw new FabricClientError('EINVAL', `'${name}' names several peers (${named.join(', ')}); use an ID`);
  return named;
}
