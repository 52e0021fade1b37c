// DEST resolution, pure: IDs, names, switch/all/others, and the refusals.
import test from 'ava';

import { resolveDest, type FabricView } from '../ts/fabric/destinations.js';
import { FabricClientError } from '../ts/fabric/peer-types.js';

const names: Record<number, string> = { 1: 'a', 2: 'b', 3: 'twin', 4: 'twin', 5: 'Z-switch' };
const view: FabricView = { self: 1, serverId: 5, connected: new Set([1, 2, 3, 4, 5]), nodename: (id) => names[id] ?? '' };

test('IDs (numbers or numeric strings), names, switch, all and others', (t) => {
  t.deepEqual(resolveDest(2, view), [2]);
  t.deepEqual(resolveDest(' 3 ', view), [3]);
  t.deepEqual(resolveDest(1, view), [1], 'itself');
  t.deepEqual(resolveDest('b', view), [2]);
  t.deepEqual(resolveDest('SWITCH', view), [5]);
  t.deepEqual(resolveDest('server', view), [5]);
  t.deepEqual(resolveDest('all', view), [2, 3, 4, 5]);
  t.deepEqual(resolveDest('others', view), [2, 3, 4]);
});

test('refusals: outside the IDs, not connected, unknown or ambiguous names, empty', (t) => {
  const code = (dest: string | number) => {
    try {
      resolveDest(dest, { ...view, connected: new Set([1, 2, 3, 4]) });
      return 'none';
    } catch (e) {
      return e instanceof FabricClientError ? `${e.code}: ${e.message}` : String(e);
    }
  };
  t.is(code(9), "ENOPEER: peer 9 is outside the fabric's IDs 1..5");
  t.is(code(5), 'ENOPEER: peer 5 is not connected');
  t.is(code('switch'), 'ENOPEER: the switch (peer 5) is not connected');
  t.is(code('nobody'), "ENOPEER: no connected peer is named 'nobody'");
  t.is(code('twin'), "EINVAL: 'twin' names several peers (3, 4); use an ID");
  t.is(code('  '), 'ENOPEER: an empty DEST');
});
