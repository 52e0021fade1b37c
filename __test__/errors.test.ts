// famez's errors share one base: each class keeps its name and its codes, is
// an Error and a FamezError, and `instanceof` tells them apart.
import test from 'ava';

import { UsageError } from '../ts/args.js';
import { ClientError } from '../ts/client/client.js';
import { FamezError } from '../ts/errors.js';
import { GenZCodecError } from '../ts/fabric/genz-codec.js';
import { RingsDoNotFit } from '../ts/fabric/rings.js';
import { GenZPacketError } from '../ts/genz/packets.js';
import { GenZTextError } from '../ts/genz/text.js';
import { FabricSetupError } from '../ts/cli/start.js';
import { ServerError } from '../ts/server/server.js';

const cases: Array<[FamezError, string, string]> = [
  [new UsageError('bad flag'), 'UsageError', 'EUSAGE'],
  [new ServerError('EADDRINUSE', 'bad flag'), 'ServerError', 'EADDRINUSE'],
  [new ClientError('EREFUSED', 'bad flag'), 'ClientError', 'EREFUSED'],
  [new GenZTextError('ENOTTEXT', 'bad flag'), 'GenZTextError', 'ENOTTEXT'],
  [new GenZPacketError('ETRUNC', 'bad flag'), 'GenZPacketError', 'ETRUNC'],
  [new GenZCodecError('EUNSUPPORTED', 'bad flag'), 'GenZCodecError', 'EUNSUPPORTED'],
  [new RingsDoNotFit('bad flag'), 'RingsDoNotFit', 'ENOSPC'],
  [new FabricSetupError('bad flag'), 'FabricSetupError', 'ENOSPC'],
];

test('every famez error is a FamezError with its own name, code and message', (t) => {
  for (const [err, name, code] of cases) {
    t.true(err instanceof Error, name);
    t.true(err instanceof FamezError, name);
    t.is(err.name, name);
    t.is(err.code, code, name);
    t.is(err.message, 'bad flag', name);
    t.is(String(err), name === 'GenZCodecError' ? `${code}: bad flag` : `${name}: bad flag`);
    t.true(err.stack?.startsWith(`${name}: bad flag`), name);
    for (const [other, otherName] of cases) if (other.constructor !== err.constructor) t.false(err instanceof other.constructor, `${name} is no ${otherName}`);
  }
});

test('a FabricSetupError keeps the error it wraps as its cause', (t) => {
  const cause = new RingsDoNotFit('rings do not fit');
  t.is(new FabricSetupError(cause.message, { cause }).cause, cause);
});
