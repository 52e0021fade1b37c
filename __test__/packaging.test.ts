// The prebuilt path users take: the published `famez` tarball plus the
// per-platform package (famez-linux-x64-gnu, ...) installed into an empty
// project with no Rust toolchain on PATH, then `famez serve` / `famez client`
// run from node_modules/.bin.
//
// The tarballs are made the way the publish job in .github/workflows/CI.yml
// makes them: `npm pack --ignore-scripts` of the already-built checkout, then
// in a staged copy `napi create-npm-dirs`, `napi artifacts` (with this host's
// freshly built .node as the only artifact) and `napi prepublish
// --skip-optional-publish`, which writes the root package's
// optionalDependencies exactly as it does at publish time. Nothing in the
// checkout is modified and nothing touches the network (`npm install
// --offline`, private npm cache and user config).
//
// Needs a built checkout (`npm run build`: famez.<platform>.node, index.js,
// dist/). Skipped on hosts that are not one of package.json's napi.targets.
import { spawnSync, type SpawnSyncOptions } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import test, { type ExecutionContext } from 'ava';

import { LineProcess, spawnChild, which, type Exit } from './helpers/wait.js';

const ROOT = path.resolve(__dirname, '..');
const PKG = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as {
  name: string;
  version: string;
  napi: { binaryName: string; targets: string[] };
};
// Bounds: one npm/napi command, one wait for a line or an exit, the whole test.
const COMMAND_MS = 180_000;
const WAIT_MS = 20_000;
const TEST_MS = 10 * 60_000;
const SYSTEM_DIRS = ['/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin'];
const RUST_TOOLS = ['cargo', 'rustc'];

// napi platform suffix -> Rust target triple, for the targets package.json builds.
const TRIPLES: Record<string, string> = {
  'linux-x64-gnu': 'x86_64-unknown-linux-gnu',
  'linux-arm64-gnu': 'aarch64-unknown-linux-gnu',
  'linux-x64-musl': 'x86_64-unknown-linux-musl',
  'linux-arm64-musl': 'aarch64-unknown-linux-musl',
};

function hostPlatform(): string | null {
  if (process.platform !== 'linux') return null;
  const report = process.report?.getReport() as { header?: { glibcVersionRuntime?: string } } | undefined;
  const platform = `linux-${process.arch}-${report?.header?.glibcVersionRuntime ? 'gnu' : 'musl'}`;
  const triple = TRIPLES[platform];
  return triple !== undefined && PKG.napi.targets.includes(triple) ? platform : null;
}

const PLATFORM = hostPlatform();

// --- processes -------------------------------------------------------------

/** A command of the packaging flow: the tests' LineProcess, with this
 * file's longer default wait. */
class Proc extends LineProcess {
  get out(): string {
    return this.stdout;
  }
  get err(): string {
    return this.stderr;
  }
  override waitFor(re: RegExp, ms = WAIT_MS): Promise<RegExpMatchArray> {
    return super.waitFor(re, ms);
  }
  override wait(ms = WAIT_MS): Promise<Exit> {
    return super.wait(ms);
  }
}

const procs: Proc[] = [];
let tmp: string | null = null;

function start(cmd: string, args: string[], cwd: string, env: NodeJS.ProcessEnv): Proc {
  const p = new Proc(spawnChild(cmd, args, { cwd, env }), `${cmd} ${args.join(' ')}`);
  procs.push(p);
  return p;
}

/** Runs a command to completion (bounded); throws with its output unless it exits 0.
 * Not a LineProcess: a synchronous run to completion, SIGKILLed at spawnSync's own timeout. */
function run(cmd: string, args: string[], opts: SpawnSyncOptions & { cwd: string; env: NodeJS.ProcessEnv }): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: COMMAND_MS, killSignal: 'SIGKILL', stdio: ['ignore', 'pipe', 'pipe'], ...opts });
  if (r.error || r.status !== 0) {
    throw new Error(
      `${cmd} ${args.join(' ')} (in ${opts.cwd}) failed: ${r.error?.message ?? `exit ${r.status} signal ${r.signal}`}\n` +
        `--- stdout\n${String(r.stdout)}--- stderr\n${String(r.stderr)}`,
    );
  }
  return String(r.stdout);
}

// --- npm -------------------------------------------------------------------

/** The environment for child npm/napi/famez runs: no inherited npm_* settings
 * (npm test sets plenty), a private cache and an empty user config. */
function childEnv(dir: string, pathValue: string): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (/^npm_/i.test(k) || k === 'NODE_OPTIONS' || k === 'NAPI_RS_NATIVE_LIBRARY_PATH' || k === 'DEBUG') continue;
    env[k] = v;
  }
  env.PATH = pathValue;
  env.npm_config_cache = path.join(dir, 'npm-cache');
  env.npm_config_userconfig = path.join(dir, 'npmrc');
  env.npm_config_update_notifier = 'false';
  env.npm_config_fund = 'false';
  env.npm_config_audit = 'false';
  return env;
}

interface Packed {
  tarball: string;
  files: string[];
}

/** `npm pack` in `cwd` into `dest`, returning the tarball and its file list. */
function pack(cwd: string, dest: string, env: NodeJS.ProcessEnv, extra: string[] = []): Packed {
  const out = run('npm', ['pack', '--json', '--pack-destination', dest, ...extra], { cwd, env });
  const json = JSON.parse(out.slice(out.indexOf('['))) as Array<{ filename: string; files: Array<{ path: string }> }>;
  const entry = json[0]!;
  return { tarball: path.join(dest, entry.filename), files: entry.files.map((f) => f.path).sort() };
}

function readJson(file: string): Record<string, unknown> {
  return JSON.parse(fs.readFileSync(file, 'utf8')) as Record<string, unknown>;
}

function writeJson(file: string, value: unknown): void {
  fs.writeFileSync(file, `${JSON.stringify(value, null, 2)}\n`);
}

/** `name` on `pathValue` only (no fallback folders). */
function findOnPath(name: string, pathValue = process.env.PATH ?? ''): string | null {
  return which(name, pathValue, true);
}

function walk(dir: string): string[] {
  const found: string[] = [];
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) found.push(...walk(p));
    else found.push(p);
  }
  return found;
}

/** The main tarball ships JS, types and docs only: no addon, no Rust. */
function checkMainFiles(t: ExecutionContext, files: string[], which: string): void {
  const forbidden = files.filter(
    (f) =>
      f.endsWith('.node') ||
      f.endsWith('.rs') ||
      f.endsWith('.tgz') ||
      /(^|\/)Cargo\.(toml|lock)$/.test(f) ||
      /^(crates|target|node_modules|npm)\//.test(f),
  );
  t.deepEqual(forbidden, [], `${which}: the main tarball must not ship a .node file or Rust sources`);
  for (const needed of ['package.json', 'index.js', 'index.d.ts', 'dist/index.js', 'dist/index.d.ts', 'dist/cli/main.js', 'dist/web/index.html', 'dist/web/app.js', 'dist/web/app.css', 'schemas/peer.json', 'contrib/famez.service', 'README.md', 'LICENSE']) {
    t.true(files.includes(needed), `${which}: the main tarball lacks ${needed}; files: ${files.join(', ')}`);
  }
}

// --- the test --------------------------------------------------------------

test.after.always(async () => {
  await Promise.all(procs.map((p) => p.stop('SIGKILL')));
  if (tmp !== null) fs.rmSync(tmp, { recursive: true, force: true });
});

(PLATFORM === null ? test.serial.skip : test.serial)(
  'the packed tarballs install without Rust and the installed famez serves and connects',
  async (t) => {
    t.timeout(TEST_MS, 'packaging test exceeded its time bound');
    const platform = PLATFORM!;
    const triple = TRIPLES[platform]!;
    const platformPkg = `${PKG.name}-${platform}`;
    const binary = `${PKG.napi.binaryName}.${platform}.node`;
    const built = path.join(ROOT, binary);
    if (!fs.existsSync(built) || !fs.existsSync(path.join(ROOT, 'dist', 'cli', 'main.js'))) {
      t.fail(`${binary} or dist/ is missing: build the checkout first (npm run build)`);
      return;
    }

    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'famez-packaging-'));
    const dir = tmp;
    const out = path.join(dir, 'out');
    for (const d of ['raw', 'stage', 'artifacts', 'out', 'bin', 'app']) fs.mkdirSync(path.join(dir, d));
    fs.writeFileSync(path.join(dir, 'npmrc'), '');
    const env = childEnv(dir, process.env.PATH ?? '');
    const napi = path.join(ROOT, 'node_modules', '.bin', 'napi');

    // (b, first half) The checkout as npm would pack it; --ignore-scripts skips
    // `prepare`, which would rebuild with cargo.
    const raw = pack(ROOT, path.join(dir, 'raw'), env, ['--ignore-scripts']);
    checkMainFiles(t, raw.files, 'npm pack of the checkout');

    // (a) Stage it as the publish job does: per-platform package dirs, this
    // host's addon as the only artifact, and napi prepublish writing the
    // root's optionalDependencies (without publishing anything). Only this
    // host's target is configured in the staged copy, since only its binary
    // exists here; napi.targets is restored afterwards.
    run('tar', ['xzf', raw.tarball, '-C', path.join(dir, 'stage')], { cwd: dir, env });
    const stage = path.join(dir, 'stage', 'package');
    const stagedJson = path.join(stage, 'package.json');
    const staged = readJson(stagedJson) as typeof PKG & Record<string, unknown>;
    writeJson(stagedJson, { ...staged, napi: { ...staged.napi, targets: [triple] } });
    fs.copyFileSync(built, path.join(dir, 'artifacts', binary));
    run(napi, ['create-npm-dirs'], { cwd: stage, env });
    run(napi, ['artifacts', '--output-dir', path.join(dir, 'artifacts')], { cwd: stage, env });
    run(napi, ['prepublish', '-t', 'npm', '--no-gh-release', '--skip-optional-publish'], { cwd: stage, env });
    const published = readJson(stagedJson) as typeof staged & { optionalDependencies?: Record<string, string> };
    t.deepEqual(published.optionalDependencies, { [platformPkg]: PKG.version }, 'napi prepublish lists the platform package');
    writeJson(stagedJson, { ...published, napi: staged.napi });

    const platformDir = path.join(stage, 'npm', platform);
    const platformJson = readJson(path.join(platformDir, 'package.json'));
    t.is(platformJson.name, platformPkg);
    t.is(platformJson.version, PKG.version);
    t.is(platformJson.main, binary);
    t.deepEqual(platformJson.os, ['linux']);
    t.deepEqual(platformJson.cpu, [process.arch]);
    t.deepEqual(platformJson.libc, [platform.endsWith('-musl') ? 'musl' : 'glibc']);
    const platformPacked = pack(platformDir, out, env);
    t.true(platformPacked.files.includes(binary), `the platform tarball lacks ${binary}: ${platformPacked.files.join(', ')}`);

    // (b) The main package as it would be published.
    const mainPacked = pack(stage, out, env, ['--ignore-scripts']);
    checkMainFiles(t, mainPacked.files, 'the staged main package');

    // (c) An empty project, with only node/npm and system dirs on PATH.
    const bin = path.join(dir, 'bin');
    for (const tool of ['node', 'npm']) {
      const found = tool === 'node' ? process.execPath : findOnPath(tool);
      if (found === null) throw new Error(`${tool} is not on PATH`);
      fs.symlinkSync(fs.realpathSync(found), path.join(bin, tool));
    }
    const systemDirs = SYSTEM_DIRS.filter((d) => fs.existsSync(d) && !RUST_TOOLS.some((tool) => fs.existsSync(path.join(d, tool))));
    const userPath = [bin, ...systemDirs].join(path.delimiter);
    t.log(`PATH for the install: ${userPath}`);
    for (const tool of RUST_TOOLS) t.is(findOnPath(tool, userPath), null, `${tool} must not be reachable on the install PATH`);
    const userEnv = childEnv(dir, userPath);
    delete userEnv.CARGO;
    // spawnSync, like run(): synchronous and bounded by its own timeout, nothing left running.
    const probe = spawnSync('/bin/sh', ['-c', 'command -v cargo'], { env: userEnv, encoding: 'utf8', timeout: WAIT_MS });
    t.not(probe.status, 0, `cargo found on the install PATH: ${String(probe.stdout)}`);

    const app = path.join(dir, 'app');
    const npm = path.join(bin, 'npm');
    run(npm, ['init', '-y'], { cwd: app, env: userEnv });
    // famez's own dependencies (pino, prom-client and theirs) come from a
    // registry for a user; here, offline, as tarballs packed from this
    // checkout's node_modules: npm places them where famez finds them.
    const depsOut = path.join(dir, 'deps');
    fs.mkdirSync(depsOut);
    const tree = run('npm', ['ls', '--omit=dev', '--all', '--parseable'], { cwd: ROOT, env }).trim().split('\n').slice(1);
    t.true(tree.some((d) => d.endsWith(`${path.sep}pino`)), `npm ls lists pino: ${tree.join(', ')}`);
    const deps = [...new Set(tree)].map((d) => pack(d, depsOut, env, ['--ignore-scripts']).tarball);
    run(npm, ['install', '--offline', '--no-audit', '--no-fund', mainPacked.tarball, platformPacked.tarball, ...deps], { cwd: app, env: userEnv });

    const installed = path.join(app, 'node_modules', PKG.name);
    const strayAddons = walk(installed).filter((f) => f.endsWith('.node'));
    t.deepEqual(strayAddons, [], 'no addon inside node_modules/famez: it must come from the platform package');
    const resolved = require.resolve(platformPkg, { paths: [app] });
    t.is(resolved, path.join(app, 'node_modules', platformPkg, binary));
    // The loader, run as a user would, really loads the platform package's binary.
    const loaded = run(
      path.join(bin, 'node'),
      ['-e', `require(${JSON.stringify(PKG.name)}); console.log(JSON.stringify(Object.keys(require.cache).filter((k) => k.endsWith('.node'))))`],
      { cwd: app, env: userEnv },
    );
    t.deepEqual(JSON.parse(loaded.trim()), [fs.realpathSync(resolved)]);

    // (d) The installed CLI: serve, a client dump, SIGTERM.
    const famez = path.join(app, 'node_modules', '.bin', 'famez');
    t.is(run(famez, ['--version'], { cwd: app, env: userEnv }).trim(), `famez ${PKG.version}`);
    const sock = path.join(dir, 'sock');
    const server = start(famez, ['serve', '--silent', '-S', sock, '--memfd'], app, userEnv);
    server.child.stdin?.end();
    await server.waitFor(/serving on /);
    t.true(fs.existsSync(sock), 'the server socket exists');

    const client = start(famez, ['client', '-S', sock], app, userEnv);
    await client.waitFor(/connected to /);
    client.child.stdin!.end('dump\nquit\n');
    const clientExit = await client.wait();
    t.deepEqual(clientExit, { code: 0, signal: null }, client.transcript);
    t.true(client.out.includes(`connected to ${sock}`), client.transcript);
    t.regex(client.out, /peer 0\b/, client.transcript);

    server.kill('SIGTERM');
    const serverExit = await server.wait();
    t.deepEqual(serverExit, { code: 0, signal: null }, server.transcript);
    t.false(fs.existsSync(sock), 'the server removes its socket on SIGTERM');

    // (e) The installed package's web view: a fabric server serves it from
    // its own dist/web, cytoscape bundled in (nothing fetched elsewhere).
    const fabricSock = path.join(dir, 'fabric-sock');
    const fabric = start(famez, ['serve', '-S', fabricSock, '--memfd', '--max-peers', '2', '--http', '0'], app, userEnv);
    fabric.child.stdin?.end();
    const web = (await fabric.waitFor(/web view and API at (http:\/\/[^\s;]+\/)/))[1];
    for (const [file, type] of [['', /^text\/html/], ['app.js', /^text\/javascript/], ['app.css', /^text\/css/]] as const) {
      const res = await fetch(new URL(file, web), { signal: AbortSignal.timeout(COMMAND_MS) });
      t.is(res.status, 200, `GET /${file} from the installed package`);
      t.regex(res.headers.get('content-type') ?? '', type, file);
      const body = await res.text();
      if (file === 'app.js') t.true(body.includes('cytoscape'), 'app.js bundles cytoscape');
      if (file === '') t.false(/https?:\/\//.test(body), 'index.html loads nothing from elsewhere');
    }
    fabric.kill('SIGTERM');
    t.deepEqual(await fabric.wait(), { code: 0, signal: null }, fabric.transcript);
  },
);
