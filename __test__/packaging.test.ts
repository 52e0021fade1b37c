// The path users take: `npm install famez` from a registry, npm's own
// optionalDependencies resolution picking the platform package
// (famez-linux-x64-gnu, ...), into an empty project with no Rust toolchain
// on PATH; then ESM import, CJS require, the types under tsc, and the
// installed CLI (`famez --version`, serve, client, the web view).
//
// The registry is a private verdaccio on 127.0.0.1 (a port the kernel picks,
// storage in a temp dir, no uplinks: offline). Into it go the tarballs the
// release would publish, published the way CI's publish job does it
// (`node scripts/release.mjs publish`: `napi pre-publish`, then `npm publish`
// of the main tarball), and famez's runtime dependencies, packed from this
// checkout's node_modules. The tarballs are FAMEZ_PACKAGES's (CI: the
// artifacts it tested and would publish) or, by default, made here by
// `node scripts/release.mjs pack` from the built checkout with this host's
// .node. publint and are-the-types-wrong check the main tarball.
//
// Needs a built checkout (`npm run build`). Skipped on hosts that are not one
// of package.json's napi.targets. Every command is bounded; verdaccio is
// killed by its pid and the temp dir removed whatever happens.
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
// Bounds: one npm/napi command, one wait for a line or an exit, the set-up, one test.
const COMMAND_MS = 180_000;
const WAIT_MS = 30_000;
const SETUP_MS = 15 * 60_000;
const TEST_MS = 5 * 60_000;
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
const PLATFORM_PKG = `${PKG.name}-${PLATFORM}`;
const BINARY = `${PKG.napi.binaryName}.${PLATFORM}.node`;

// --- processes -------------------------------------------------------------

const procs: LineProcess[] = [];
let tmp: string | null = null;

function start(cmd: string, args: string[], cwd: string, env: NodeJS.ProcessEnv): LineProcess {
  const p = new LineProcess(spawnChild(cmd, args, { cwd, env, pdeathsig: true }), `${cmd} ${args.join(' ')}`);
  procs.push(p);
  return p;
}

interface Run {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a command to completion, SIGKILLed at spawnSync's timeout. */
function runRaw(cmd: string, args: string[], opts: SpawnSyncOptions & { cwd: string; env: NodeJS.ProcessEnv }): Run {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: COMMAND_MS, killSignal: 'SIGKILL', stdio: ['ignore', 'pipe', 'pipe'], ...opts });
  if (r.error) throw new Error(`${cmd} ${args.join(' ')} (in ${opts.cwd}) failed: ${r.error.message}`);
  return { status: r.status, stdout: String(r.stdout), stderr: String(r.stderr) };
}

/** Runs a command to completion; throws with its output unless it exits 0. */
function run(cmd: string, args: string[], opts: SpawnSyncOptions & { cwd: string; env: NodeJS.ProcessEnv }): string {
  const r = runRaw(cmd, args, opts);
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} (in ${opts.cwd}) exited ${r.status}\n--- stdout\n${r.stdout}--- stderr\n${r.stderr}`);
  return r.stdout;
}

// --- npm -------------------------------------------------------------------

/** The environment for child npm/napi/famez runs: no inherited npm_* settings
 * (npm test sets plenty), a private cache, the test's own npmrc (the
 * registry and its token), no update checks. */
function childEnv(dir: string, pathValue: string): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (/^npm_/i.test(k) || k === 'NODE_OPTIONS' || k === 'NAPI_RS_NATIVE_LIBRARY_PATH' || k === 'DEBUG' || k === 'GITHUB_TOKEN') continue;
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

interface LsNode {
  path?: string;
  extraneous?: boolean;
  dependencies?: Record<string, LsNode>;
}

/** The folders of famez's runtime dependencies, all the way down, from
 * `npm ls --json --long` (not what happens to lie extraneous in node_modules). */
function runtimeDependencies(root: LsNode): string[] {
  const found = new Set<string>();
  const visit = (node: LsNode) => {
    for (const dep of Object.values(node.dependencies ?? {})) {
      if (dep.extraneous || dep.path === undefined || found.has(dep.path)) continue;
      found.add(dep.path);
      visit(dep);
    }
  };
  visit(root);
  return [...found];
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

/** The files of a package tarball, without the leading package/. */
function tarballFiles(tarball: string, env: NodeJS.ProcessEnv): string[] {
  return run('tar', ['tzf', tarball], { cwd: path.dirname(tarball), env })
    .split('\n')
    .filter((f) => f !== '' && !f.endsWith('/'))
    .map((f) => f.replace(/^package\//, ''))
    .sort();
}

function tarballManifest(tarball: string, env: NodeJS.ProcessEnv): Record<string, unknown> {
  return JSON.parse(run('tar', ['xzf', tarball, '-O', 'package/package.json'], { cwd: path.dirname(tarball), env })) as Record<string, unknown>;
}

// --- the set-up: packages, registry, installed app -----------------------------

interface Setup {
  dir: string;
  main: string; // the main tarball
  mainFiles: string[];
  mainManifest: Record<string, unknown>;
  platformTarball: string;
  registry: string;
  env: NodeJS.ProcessEnv; // the registry's npm, the full PATH
  userEnv: NodeJS.ProcessEnv; // the same with only node, npm and system dirs on PATH
  bin: string; // node and npm, for userEnv
  app: string;
}

let setup: Setup | null = null;

async function prepare(t: ExecutionContext): Promise<Setup> {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'famez-packaging-'));
  const dir = tmp;
  for (const d of ['artifacts', 'deps', 'bin', 'app', 'storage']) fs.mkdirSync(path.join(dir, d));
  fs.writeFileSync(path.join(dir, 'npmrc'), '');
  const env = childEnv(dir, process.env.PATH ?? '');

  // (a) The tarballs a release publishes.
  let packages = process.env.FAMEZ_PACKAGES;
  if (packages) {
    packages = path.resolve(packages);
    t.log(`packages from FAMEZ_PACKAGES: ${packages}`);
  } else {
    const built = path.join(ROOT, BINARY);
    if (!fs.existsSync(built) || !fs.existsSync(path.join(ROOT, 'dist', 'cli', 'main.js'))) {
      throw new Error(`${BINARY} or dist/ is missing: build the checkout first (npm run build)`);
    }
    fs.copyFileSync(built, path.join(dir, 'artifacts', BINARY));
    packages = path.join(dir, 'packages');
    run(process.execPath, [path.join(ROOT, 'scripts', 'release.mjs'), 'pack', '--artifacts', path.join(dir, 'artifacts'), '--out', packages, '--target', TRIPLES[PLATFORM!]!], { cwd: ROOT, env });
  }
  const tarballs = fs.readdirSync(packages).filter((f) => f.endsWith('.tgz'));
  const main = path.join(packages, `${PKG.name}-${PKG.version}.tgz`);
  const platformTarball = path.join(packages, `${PLATFORM_PKG}-${PKG.version}.tgz`);
  for (const f of [main, platformTarball]) if (!fs.existsSync(f)) throw new Error(`${f} is missing among ${tarballs.join(', ')}`);

  // (b) The registry: verdaccio in its own process, a user and its token.
  const htpasswd = path.join(dir, 'htpasswd');
  fs.writeFileSync(
    path.join(dir, 'verdaccio.yaml'),
    [
      `storage: ${path.join(dir, 'storage')}`,
      'auth:',
      '  htpasswd:',
      `    file: ${htpasswd}`,
      '    max_users: 1',
      'uplinks: {}',
      'packages:',
      "  '**':",
      '    access: $all',
      '    publish: $authenticated',
      'web:',
      '  enable: false',
      'log: { type: stdout, format: pretty, level: warn }',
      '',
    ].join('\n'),
  );
  const verdaccio = start(process.execPath, [path.join(__dirname, 'helpers', 'verdaccio-server.cjs'), path.join(dir, 'verdaccio.yaml')], ROOT, env);
  const registry = (await verdaccio.waitFor(/registry listening on (http:\/\/127\.0\.0\.1:\d+\/)/, WAIT_MS))[1]!;
  t.log(`verdaccio (pid ${verdaccio.pid}) at ${registry}`);
  const user = await fetch(new URL('-/user/org.couchdb.user:famez-test', registry), {
    method: 'PUT',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ name: 'famez-test', password: 'famez-test-password', type: 'user' }),
    signal: AbortSignal.timeout(WAIT_MS),
  });
  const token = ((await user.json()) as { token?: string }).token;
  if (!user.ok || !token) throw new Error(`verdaccio did not register the test user: ${user.status}`);
  const host = registry.replace(/^http:/, '');
  fs.writeFileSync(path.join(dir, 'npmrc'), `registry=${registry}\n${host}:_authToken=${token}\nnoproxy=127.0.0.1\n`);

  // (c) famez's runtime dependencies into it, packed from this checkout's node_modules.
  const tree = runtimeDependencies(JSON.parse(run('npm', ['ls', '--omit=dev', '--all', '--json', '--long'], { cwd: ROOT, env })) as LsNode);
  if (!tree.some((d) => d.endsWith(`${path.sep}pino`))) throw new Error(`npm ls does not list pino: ${tree.join(', ')}`);
  for (const d of tree) {
    const out = run('npm', ['pack', '--json', '--ignore-scripts', '--pack-destination', path.join(dir, 'deps')], { cwd: d, env });
    const tarball = path.join(dir, 'deps', (JSON.parse(out.slice(out.indexOf('['))) as Array<{ filename: string }>)[0]!.filename);
    // publishConfig could name another registry: nothing here may leave the machine.
    const { publishConfig } = tarballManifest(tarball, env) as { publishConfig?: Record<string, unknown> };
    if (publishConfig && Object.keys(publishConfig).some((k) => /registry/i.test(k))) throw new Error(`${tarball} names a registry in publishConfig`);
    run('npm', ['publish', tarball, '--registry', registry, '--ignore-scripts'], { cwd: dir, env });
  }

  // (d) The release into it, as CI's publish job does it.
  const published = run(process.execPath, [path.join(ROOT, 'scripts', 'release.mjs'), 'publish', '--packages', packages], { cwd: ROOT, env });
  t.log(published.trim());

  // (e) An empty project, with only node/npm and system dirs on PATH, and `npm install famez`.
  const bin = path.join(dir, 'bin');
  for (const tool of ['node', 'npm']) {
    const found = tool === 'node' ? process.execPath : which(tool, env.PATH, true);
    if (found === null) throw new Error(`${tool} is not on PATH`);
    fs.symlinkSync(fs.realpathSync(found), path.join(bin, tool));
  }
  const systemDirs = SYSTEM_DIRS.filter((d) => fs.existsSync(d) && !RUST_TOOLS.some((tool) => fs.existsSync(path.join(d, tool))));
  const userEnv = childEnv(dir, [bin, ...systemDirs].join(path.delimiter));
  delete userEnv.CARGO;
  for (const tool of RUST_TOOLS) if (which(tool, userEnv.PATH, true) !== null) throw new Error(`${tool} is reachable on the install PATH`);
  const app = path.join(dir, 'app');
  const npm = path.join(bin, 'npm');
  run(npm, ['init', '-y'], { cwd: app, env: userEnv });
  run(npm, ['install', PKG.name], { cwd: app, env: userEnv });

  return { dir, main, mainFiles: tarballFiles(main, env), mainManifest: tarballManifest(main, env), platformTarball, registry, env, userEnv, bin, app };
}

test.before(async (t) => {
  if (PLATFORM === null) return;
  t.timeout(SETUP_MS, 'the packaging set-up exceeded its time bound');
  setup = await prepare(t);
});

test.after.always(async () => {
  await Promise.all(procs.map((p) => p.stop('SIGKILL')));
  if (tmp !== null) fs.rmSync(tmp, { recursive: true, force: true });
});

const serial = PLATFORM === null ? test.serial.skip : test.serial;

function ready(t: ExecutionContext): Setup {
  t.timeout(TEST_MS);
  if (setup === null) throw new Error('the packaging set-up did not run');
  return setup;
}

// --- the tests -------------------------------------------------------------

serial('the main tarball ships JS, types and docs, no addon, no Rust, no source maps', (t) => {
  const { mainFiles: files } = ready(t);
  const forbidden = files.filter(
    (f) => f.endsWith('.node') || f.endsWith('.rs') || f.endsWith('.tgz') || f.endsWith('.map') || /(^|\/)Cargo\.(toml|lock)$/.test(f) || /^(crates|target|node_modules|npm|scripts|bench|ts)\//.test(f),
  );
  t.deepEqual(forbidden, []);
  for (const needed of ['package.json', 'index.js', 'index.d.ts', 'dist/index.js', 'dist/index.d.ts', 'dist/cli/main.js', 'dist/web/index.html', 'dist/web/app.js', 'dist/web/app.css', 'schemas/peer.json', 'contrib/famez.service', 'README.md', 'LICENSE']) {
    t.true(files.includes(needed), `the main tarball lacks ${needed}`);
  }
});

serial('the published manifest has an exports map, a type, engines, a git+https repository and no install-time scripts', (t) => {
  const { mainManifest: m } = ready(t);
  t.is(m.type, 'commonjs');
  t.deepEqual(m.exports, {
    '.': { types: './dist/index.d.ts', import: './dist/index.js', require: './dist/index.js', default: './dist/index.js' },
    './package.json': './package.json',
  });
  t.deepEqual(m.engines, { node: '>=20' });
  t.regex((m.repository as { url: string }).url, /^git\+https:\/\//);
  t.is(m.scripts, undefined, 'no scripts: prepare (the checkout build) and the rest need the checkout');
  const optional = m.optionalDependencies as Record<string, string>;
  t.is(optional[PLATFORM_PKG], PKG.version);
  for (const name of Object.keys(optional)) t.regex(name, new RegExp(`^${PKG.name}-linux-(x64|arm64)-(gnu|musl)$`));
});

serial('publint and are-the-types-wrong find nothing in the main tarball', (t) => {
  const { main, env } = ready(t);
  const bin = (name: string) => path.join(ROOT, 'node_modules', '.bin', name);
  const publint = runRaw(bin('publint'), ['run', main, '--strict'], { cwd: ROOT, env });
  t.is(publint.status, 0, `${publint.stdout}${publint.stderr}`);
  t.regex(publint.stdout, /All good/);
  const attw = runRaw(bin('attw'), [main, '--format', 'ascii', '--no-color', '--no-emoji'], { cwd: ROOT, env });
  t.is(attw.status, 0, `${attw.stdout}${attw.stderr}`);
  t.regex(attw.stdout, /No problems found/);
});

serial('the registry has the platform packages napi pre-publish published and famez listing them', (t) => {
  const { registry, env, dir } = ready(t);
  const view = (name: string) => JSON.parse(run('npm', ['view', name, '--json', '--registry', registry], { cwd: dir, env })) as Record<string, unknown>;
  const platform = view(PLATFORM_PKG);
  t.is(platform.version, PKG.version);
  t.is(platform.main, BINARY);
  t.deepEqual(platform.os, ['linux']);
  t.deepEqual(platform.cpu, [process.arch]);
  t.deepEqual(platform.libc, [PLATFORM!.endsWith('-musl') ? 'musl' : 'glibc']);
  const main = view(PKG.name);
  t.is(main.version, PKG.version);
  const optional = main.optionalDependencies as Record<string, string>;
  t.is(optional[PLATFORM_PKG], PKG.version);
  // Every platform package the main one names is there, at its version.
  for (const [name, version] of Object.entries(optional)) if (name !== PLATFORM_PKG) t.is(view(name).version, version, name);
});

serial("npm's optionalDependencies resolution installs this platform's package and no other, and famez loads its binary", (t) => {
  const { app, bin, userEnv, mainManifest } = ready(t);
  const others = Object.keys(mainManifest.optionalDependencies as Record<string, string>).filter((name) => name !== PLATFORM_PKG);
  t.deepEqual(others.filter((name) => fs.existsSync(path.join(app, 'node_modules', name))), [], 'npm skips the packages of other platforms (os, cpu, libc)');
  const installed = path.join(app, 'node_modules', PKG.name);
  t.deepEqual(walk(installed).filter((f) => f.endsWith('.node')), [], 'no addon inside node_modules/famez');
  const resolved = require.resolve(PLATFORM_PKG, { paths: [app] });
  t.is(resolved, path.join(app, 'node_modules', PLATFORM_PKG, BINARY));
  const loaded = run(path.join(bin, 'node'), ['-e', `require(${JSON.stringify(PKG.name)}); console.log(JSON.stringify(Object.keys(require.cache).filter((k) => k.endsWith('.node'))))`], { cwd: app, env: userEnv });
  t.deepEqual(JSON.parse(loaded.trim()), [fs.realpathSync(resolved)]);
});

serial('require and import give the same named exports, Fabric among them; deep imports are closed', (t) => {
  const { app, bin, userEnv } = ready(t);
  const node = path.join(bin, 'node');
  const cjs = JSON.parse(run(node, ['-e', `const f = require('famez'); console.log(JSON.stringify(Object.keys(f).sort()))`], { cwd: app, env: userEnv }).trim()) as string[];
  for (const name of ['Server', 'Client', 'FabricClient', 'Fabric', 'Monitor', 'FamezError', 'NativeBindingError', 'genz', 'protocol', 'vm', 'native']) t.true(cjs.includes(name), `require('famez') lacks ${name}`);
  const esm = run(
    node,
    [
      '--input-type=module',
      '-e',
      `import { Server, Client, Fabric, FabricClient, genz } from 'famez';
       import * as ns from 'famez';
       import { createRequire } from 'node:module';
       const cjs = createRequire(import.meta.url)('famez');
       if (Server !== cjs.Server || Fabric !== cjs.Fabric) throw new Error('import and require give different classes');
       for (const f of [Server, Client, Fabric, FabricClient]) if (typeof f !== 'function') throw new Error('not a class');
       if (typeof genz.encode !== 'function') throw new Error('genz.encode');
       console.log(JSON.stringify(Object.keys(ns).filter((k) => !['default', 'module.exports', '__esModule'].includes(k)).sort()));`,
    ],
    { cwd: app, env: userEnv },
  );
  t.deepEqual(JSON.parse(esm.trim()), cjs, 'every CommonJS export is an ESM named export');
  const version = run(node, ['-e', `console.log(require('famez/package.json').version)`], { cwd: app, env: userEnv }).trim();
  t.is(version, PKG.version);
  const deep = runRaw(node, ['-e', `require('famez/dist/native.js')`], { cwd: app, env: userEnv });
  t.not(deep.status, 0);
  t.regex(deep.stderr, /ERR_PACKAGE_PATH_NOT_EXPORTED/);
});

serial('the types check under tsc for an ESM and a CommonJS consumer', (t) => {
  const { app, env } = ready(t);
  const types = path.join(app, 'types');
  fs.mkdirSync(types, { recursive: true });
  fs.writeFileSync(
    path.join(types, 'esm.mts'),
    `import { Client, Fabric, Server, genz, type ServerConfig, type FabricConfig } from 'famez';
const config: ServerConfig = { socket: '/tmp/x.sock', shm: { kind: 'memfd', name: 'x' }, size: 1 << 20, vectors: 2 };
export const start: (c: ServerConfig) => Server = (c) => Server.start(c);
export const fabric = (c: FabricConfig): Fabric => new Fabric(c);
export const connect: Promise<Client> = Client.connect(config.socket);
export const bytes: Uint8Array = genz.encode({ class: 'Control.StandaloneAck', DCID: 1, SCID: 2, Tag: 5, Reason: 0 });
// @ts-expect-error: only '.' and './package.json' are exported
export type Deep = typeof import('famez/dist/native.js');
`,
  );
  fs.writeFileSync(
    path.join(types, 'cjs.cts'),
    `import famez = require('famez');
export const server: typeof famez.Server = famez.Server;
export const error: famez.NativeBindingError | null = null;
export const text = famez.genz.text.parse('ping');
`,
  );
  fs.writeFileSync(
    path.join(types, 'tsconfig.json'),
    JSON.stringify({
      compilerOptions: { module: 'nodenext', moduleResolution: 'nodenext', target: 'es2022', strict: true, noEmit: true, skipLibCheck: false, typeRoots: [path.join(ROOT, 'node_modules', '@types')], types: ['node'] },
      files: ['esm.mts', 'cjs.cts'],
    }),
  );
  const tsc = runRaw(process.execPath, [path.join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', types], { cwd: app, env });
  t.is(tsc.status, 0, `${tsc.stdout}${tsc.stderr}`);
});

serial('the installed CLI: --version, serve, a client dump, SIGTERM, and the web view from dist/web', async (t) => {
  const { app, dir, userEnv } = ready(t);
  const famez = path.join(app, 'node_modules', '.bin', 'famez');
  t.is(run(famez, ['--version'], { cwd: app, env: userEnv }).trim(), `famez ${PKG.version}`);
  const sock = path.join(dir, 'sock');
  const server = start(famez, ['serve', '--silent', '-S', sock, '--memfd'], app, userEnv);
  server.child.stdin?.end();
  await server.waitFor(/serving on /, WAIT_MS);
  const client = start(famez, ['client', '-S', sock], app, userEnv);
  await client.waitFor(/connected to /, WAIT_MS);
  client.child.stdin!.end('dump\nquit\n');
  t.deepEqual(await client.wait(WAIT_MS), { code: 0, signal: null } satisfies Exit, client.transcript);
  t.regex(client.stdout, /peer 0\b/, client.transcript);
  server.kill('SIGTERM');
  t.deepEqual(await server.wait(WAIT_MS), { code: 0, signal: null }, server.transcript);
  t.false(fs.existsSync(sock), 'the server removes its socket on SIGTERM');

  const fabric = start(famez, ['serve', '-S', path.join(dir, 'fabric-sock'), '--memfd', '--max-peers', '2', '--http', '0'], app, userEnv);
  fabric.child.stdin?.end();
  const web = (await fabric.waitFor(/web view and API at (http:\/\/[^\s;]+\/)/, WAIT_MS))[1]!;
  for (const [file, type] of [['', /^text\/html/], ['app.js', /^text\/javascript/], ['app.css', /^text\/css/]] as const) {
    const res = await fetch(new URL(file, web), { signal: AbortSignal.timeout(WAIT_MS) });
    t.is(res.status, 200, `GET /${file} from the installed package`);
    t.regex(res.headers.get('content-type') ?? '', type, file);
    const body = await res.text();
    if (file === 'app.js') t.true(body.includes('cytoscape'), 'app.js bundles cytoscape');
    if (file === '') t.false(/https?:\/\//.test(body), 'index.html loads nothing from elsewhere');
  }
  fabric.kill('SIGTERM');
  t.deepEqual(await fabric.wait(WAIT_MS), { code: 0, signal: null }, fabric.transcript);
});

serial('without the platform package famez says in one line which package it expected and how to get it', (t) => {
  const { app, dir, bin, userEnv } = ready(t);
  // A copy of the installed project without node_modules/famez-<platform>.
  const bare = path.join(dir, 'app-without-binding');
  fs.cpSync(app, bare, { recursive: true, verbatimSymlinks: true });
  fs.rmSync(path.join(bare, 'node_modules', PLATFORM_PKG), { recursive: true });
  const famez = path.join(bare, 'node_modules', '.bin', 'famez');
  const expected = `no native binding for ${PLATFORM}: the package ${PLATFORM_PKG}@${PKG.version} is not installed`;

  t.is(run(famez, ['--version'], { cwd: bare, env: userEnv }).trim(), `famez ${PKG.version}`, '--version needs no binding');
  for (const command of [['serve', '--silent', '-S', path.join(dir, 'bare-sock')], ['client', '-S', path.join(dir, 'bare-sock')]]) {
    const r = runRaw(famez, command, { cwd: bare, env: userEnv });
    t.is(r.status, 1, `famez ${command[0]}: ${r.stderr}`);
    const lines = r.stderr.split('\n').filter((l) => l !== '');
    t.is(lines.length, 1, `famez ${command[0]} says one line:\n${r.stderr}`);
    t.true(lines[0]!.includes(expected), lines[0]);
    t.true(lines[0]!.includes(`npm install ${PLATFORM_PKG}@${PKG.version}`), lines[0]);
  }
  const lib = runRaw(
    path.join(bin, 'node'),
    ['-e', `const f = require('famez'); try { new f.native.EventFd(); } catch (e) { console.log(JSON.stringify([e instanceof f.NativeBindingError, e.code, e.message])); }`],
    { cwd: bare, env: userEnv },
  );
  const [isBindingError, code, message] = JSON.parse(lib.stdout.trim()) as [boolean, string, string];
  t.true(isBindingError, lib.stdout + lib.stderr);
  t.is(code, 'ENOBINDING');
  t.true(message.startsWith(expected), message);
});
