#!/usr/bin/env node
// Makes and publishes famez's npm packages from tested parts, the same way in
// CI (.github/workflows/CI.yml) and in __test__/packaging.test.ts:
//
//   node scripts/release.mjs pack --artifacts DIR --out DIR [--target TRIPLE]...
//     From a built checkout (dist/, index.js, index.d.ts; no cargo run here)
//     and the .node files in --artifacts (famez.linux-x64-gnu.node, ...):
//     the main tarball famez-V.tgz and one famez-PLATFORM-V.tgz per target.
//     The main package is staged from `npm pack` of the checkout; its
//     manifest loses `scripts` (every one of them needs the checkout: prepare
//     builds with cargo from crates/, which the package does not ship) and
//     gets the optionalDependencies that `napi pre-publish` writes. --target
//     limits the release to those targets (default: package.json's
//     napi.targets, each of which must have its .node in --artifacts).
//
//   node scripts/release.mjs publish --packages DIR [--tag TAG]
//     Publishes exactly the tarballs in DIR (made by `pack`, then tested):
//     `napi pre-publish` publishes the platform packages unpacked from
//     them, then `npm publish` the main tarball itself. The registry and its
//     credentials are npm's own configuration (npmrc, npm_config_registry).
//
// Every command it runs is bounded in time; temporary directories are removed.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import process from 'node:process';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const COMMAND_MS = 5 * 60_000;
const NAPI = path.join(ROOT, 'node_modules', '.bin', 'napi');

/** A step that cannot go on: thrown, so that withTemp's clean-up runs, and
 * reported as `release: MESSAGE` with exit status 1. */
class ReleaseError extends Error {}

function fail(message) {
  throw new ReleaseError(message);
}

function run(cmd, args, cwd) {
  const r = spawnSync(cmd, args, { cwd, encoding: 'utf8', timeout: COMMAND_MS, killSignal: 'SIGKILL', stdio: ['ignore', 'pipe', 'pipe'] });
  if (r.error || r.status !== 0) {
    fail(`${cmd} ${args.join(' ')} (in ${cwd}) failed: ${r.error?.message ?? `exit ${r.status}, signal ${r.signal}`}\n--- stdout\n${r.stdout}--- stderr\n${r.stderr}`);
  }
  return r.stdout;
}

const readJson = (file) => JSON.parse(fs.readFileSync(file, 'utf8'));
const writeJson = (file, value) => fs.writeFileSync(file, `${JSON.stringify(value, null, 2)}\n`);

/** `npm pack` of `dir` into `dest`; the tarball's path. */
function npmPack(dir, dest, extra = []) {
  const out = run('npm', ['pack', '--json', '--pack-destination', dest, ...extra], dir);
  return path.join(dest, JSON.parse(out.slice(out.indexOf('[')))[0].filename);
}

function untar(tarball, dir) {
  fs.mkdirSync(dir, { recursive: true });
  run('tar', ['xzf', tarball, '-C', dir, '--strip-components=1'], dir);
}

function withTemp(job) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'famez-release-'));
  try {
    return job(dir);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

function pack({ artifacts, out, target }) {
  if (!artifacts || !out) fail('pack needs --artifacts DIR and --out DIR');
  for (const f of ['dist/index.js', 'dist/cli/main.js', 'dist/web/app.js', 'index.js', 'index.d.ts']) {
    if (!fs.existsSync(path.join(ROOT, f))) fail(`${f} is missing: build the checkout first (npm run build, or npm run build:ts with the generated index.js and index.d.ts)`);
  }
  artifacts = path.resolve(artifacts);
  out = path.resolve(out);
  fs.mkdirSync(out, { recursive: true });
  return withTemp((tmp) => {
    // --ignore-scripts: prepare would rebuild the addon with cargo.
    const raw = npmPack(ROOT, tmp, ['--ignore-scripts']);
    const stage = path.join(tmp, 'stage');
    untar(raw, stage);
    const manifestPath = path.join(stage, 'package.json');
    const manifest = readJson(manifestPath);
    delete manifest.scripts;
    if (target.length > 0) {
      const unknown = target.filter((t) => !manifest.napi.targets.includes(t));
      if (unknown.length > 0) fail(`--target ${unknown.join(', ')} is not in package.json's napi.targets (${manifest.napi.targets.join(', ')})`);
      manifest.napi.targets = target;
    }
    writeJson(manifestPath, manifest);
    run(NAPI, ['create-npm-dirs'], stage);
    // A copy: --artifacts stays as it was, for the next step of the job.
    const copies = path.join(tmp, 'artifacts');
    fs.cpSync(artifacts, copies, { recursive: true });
    run(NAPI, ['artifacts', '--output-dir', copies], stage);
    // Writes optionalDependencies and checks every platform package; publishes nothing.
    run(NAPI, ['pre-publish', '-t', 'npm', '--no-gh-release', '--skip-optional-publish'], stage);
    const tarballs = [npmPack(stage, out, ['--ignore-scripts'])];
    const npmDir = path.join(stage, 'npm');
    for (const platform of fs.readdirSync(npmDir).sort()) tarballs.push(npmPack(path.join(npmDir, platform), out, ['--ignore-scripts']));
    const published = readJson(manifestPath);
    process.stdout.write(`${JSON.stringify({ tarballs, optionalDependencies: published.optionalDependencies ?? {} }, null, 2)}\n`);
  });
}

/** name and version inside a package tarball. */
function tarballManifest(tarball) {
  const text = run('tar', ['xzf', tarball, '-O', 'package/package.json'], path.dirname(tarball));
  return JSON.parse(text);
}

function publish({ packages, tag }) {
  if (!packages) fail('publish needs --packages DIR');
  packages = path.resolve(packages);
  const own = readJson(path.join(ROOT, 'package.json')).name;
  const tarballs = fs.readdirSync(packages).filter((f) => f.endsWith('.tgz')).map((f) => path.join(packages, f));
  const manifests = new Map(tarballs.map((t) => [t, tarballManifest(t)]));
  const main = tarballs.filter((t) => manifests.get(t).name === own);
  if (main.length !== 1) fail(`${packages} must hold exactly one ${own} tarball, not ${main.length}`);
  const mainManifest = manifests.get(main[0]);
  const expected = Object.keys(mainManifest.optionalDependencies ?? {}).sort();
  const platforms = tarballs.filter((t) => t !== main[0]);
  const names = platforms.map((t) => manifests.get(t).name).sort();
  if (JSON.stringify(expected) !== JSON.stringify(names)) fail(`the platform tarballs (${names.join(', ')}) are not the main package's optionalDependencies (${expected.join(', ')})`);
  for (const t of platforms) {
    if (manifests.get(t).version !== mainManifest.version) fail(`${path.basename(t)} is version ${manifests.get(t).version}, the main package ${mainManifest.version}`);
  }
  const tagArgs = tag ? ['--tag', tag] : [];
  withTemp((stage) => {
    untar(main[0], stage);
    for (const t of platforms) untar(t, path.join(stage, 'npm', manifests.get(t).name.slice(own.length + 1)));
    // napi publishes each npm/<platform> (npm publish in a copy of it).
    run(NAPI, ['pre-publish', '-t', 'npm', '--no-gh-release'], stage);
    run('npm', ['publish', main[0], '--access', 'public', ...tagArgs], stage);
  });
  process.stdout.write(`published ${mainManifest.name}@${mainManifest.version} and ${names.join(', ')}\n`);
}

const { positionals, values } = parseArgs({
  allowPositionals: true,
  options: {
    artifacts: { type: 'string' },
    out: { type: 'string' },
    target: { type: 'string', multiple: true, default: [] },
    packages: { type: 'string' },
    tag: { type: 'string' },
  },
});
try {
  if (positionals[0] === 'pack') pack(values);
  else if (positionals[0] === 'publish') publish(values);
  else fail('usage: release.mjs pack --artifacts DIR --out DIR [--target TRIPLE]... | publish --packages DIR [--tag TAG]');
} catch (e) {
  if (!(e instanceof ReleaseError)) throw e;
  process.stderr.write(`release: ${e.message}\n`);
  process.exitCode = 1;
}
