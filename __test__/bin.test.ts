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

test('--version works after every command, before anything else happens, and -V at the top', (t) => {
  const bin = path.join(ROOT, 'dist/cli/main.js');
  const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { version: string };
  // No server on this socket, no VM, no file: --version must not get that far.
  const lines = [
    ['-V'],
    ['serve', '--version'],
    ['serve', '-S', '/nonexistent/sock', '--version'],
    ['client', '--version'],
    ['guest', '--version'],
    ['vm', '--version'],
    ['stanza', '--version'],
    ['fam', '--version'],
    ['fam', 'create', '/nonexistent/fam', '--version'],
    ['top', '--version'],
  ];
  for (const args of lines) {
    t.is(execFileSync(bin, args, { encoding: 'utf8', timeout: 30_000 }).trim(), `famez ${pkg.version}`, args.join(' '));
  }
  // After `--` it is the VM command's own argument, not famez's.
  const help = execFileSync(bin, ['--help'], { encoding: 'utf8', timeout: 30_000 });
  t.regex(help, /--version/);
});
