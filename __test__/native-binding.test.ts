// A native binding that does not load is one sentence a person can act on
// (ts/native.ts): which file or platform package was expected and how to get
// it. Run on copies of the built package (dist/, index.js, package.json)
// without the .node file, with a broken one, and as a checkout.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

import test from 'ava';

import { removeDir, tempDir } from './helpers/wait.js';

const ROOT = path.resolve(__dirname, '..');
const PKG = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { name: string; version: string };
const report = process.report?.getReport() as { header?: { glibcVersionRuntime?: string } } | undefined;
const PLATFORM = `linux-${process.arch}-${report?.header?.glibcVersionRuntime ? 'gnu' : 'musl'}`;
const built = fs.existsSync(path.join(ROOT, 'dist', 'cli', 'main.js')) && fs.existsSync(path.join(ROOT, 'index.js'));

/** A copy of the built package without any .node file. */
function copy(t: { teardown: (f: () => void) => void }): string {
  const dir = tempDir('famez-binding-');
  t.teardown(() => removeDir(dir));
  for (const f of ['dist', 'index.js', 'index.d.ts', 'package.json']) fs.cpSync(path.join(ROOT, f), path.join(dir, f), { recursive: true });
  fs.symlinkSync(path.join(ROOT, 'node_modules'), path.join(dir, 'node_modules'));
  return dir;
}

function famez(dir: string, args: string[]) {
  return spawnSync(process.execPath, [path.join(dir, 'dist', 'cli', 'main.js'), ...args], { encoding: 'utf8', timeout: 60_000, killSignal: 'SIGKILL', env: { ...process.env, NAPI_RS_NATIVE_LIBRARY_PATH: '' } });
}

function library(dir: string) {
  const r = spawnSync(process.execPath, ['-e', `const f = require(${JSON.stringify(path.join(dir, 'dist', 'index.js'))}); try { f.native.fdLimit(); console.log('loaded') } catch (e) { console.log(JSON.stringify([e instanceof f.NativeBindingError, e.code, e.message])) }`], { encoding: 'utf8', timeout: 60_000, killSignal: 'SIGKILL' });
  return JSON.parse(r.stdout.trim()) as [boolean, string, string];
}

(built ? test : test.skip)('without its platform package famez names it and how to install it, in one line; --version still works', (t) => {
  const dir = copy(t);
  t.is(famez(dir, ['--version']).stdout, `famez ${PKG.version}\n`);
  const r = famez(dir, ['serve', '--silent', '-S', path.join(dir, 'sock')]);
  t.is(r.status, 1);
  t.is(r.stderr, `famez: no native binding for ${PLATFORM}: the package ${PKG.name}-${PLATFORM}@${PKG.version} is not installed (npm installs it with famez unless optional dependencies are omitted: run 'npm install ${PKG.name}-${PLATFORM}@${PKG.version}', or reinstall famez with --include=optional)\n`);
  t.deepEqual(library(dir).slice(0, 2), [true, 'ENOBINDING']);
});

(built ? test : test.skip)("a .node file that does not load is named with the loader's first line, code EBINDING", (t) => {
  const dir = copy(t);
  const file = path.join(dir, `famez.${PLATFORM}.node`);
  fs.writeFileSync(file, 'not an ELF file');
  const r = famez(dir, ['serve', '--silent', '-S', path.join(dir, 'sock')]);
  t.is(r.status, 1);
  const lines = r.stderr.split('\n').filter(Boolean);
  t.is(lines.length, 1, r.stderr);
  t.true(lines[0]!.startsWith(`famez: the native binding ${file} does not load on this ${PLATFORM} system: `), lines[0]);
  const [isBindingError, code] = library(dir);
  t.true(isBindingError);
  t.is(code, 'EBINDING');
});

(built ? test : test.skip)('in a checkout without a build it says to run npm run build', (t) => {
  const dir = copy(t);
  fs.mkdirSync(path.join(dir, 'crates', 'famez-node'), { recursive: true });
  fs.writeFileSync(path.join(dir, 'crates', 'famez-node', 'Cargo.toml'), '');
  const [, code, message] = library(dir);
  t.is(code, 'ENOBINDING');
  t.is(message, `no native binding for ${PLATFORM}: famez.${PLATFORM}.node is not built in this checkout; run 'npm run build' (it needs Rust's cargo, https://rustup.rs)`);
});
