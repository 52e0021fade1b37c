// The built command is what `npx famez` runs in a checkout: it must be an
// executable script (npm links it as is for the package's own directory).
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

import test from 'ava';

const ROOT = path.resolve(__dirname, '..');

test('dist/cli/main.js is executable and runs by itself', (t) => {
  const bin = path.join(ROOT, 'dist/cli/main.js');
  t.true((fs.statSync(bin).mode & 0o111) !== 0, 'executable bits set (npm run build:ts does it)');
  const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { version: string; bin: { famez: string } };
  t.is(pkg.bin.famez, 'dist/cli/main.js');
  // Not a LineProcess: a synchronous run to completion, killed at execFileSync's own timeout.
  t.is(execFileSync(bin, ['--version'], { encoding: 'utf8', timeout: 30_000 }).trim(), `famez ${pkg.version}`);
});
