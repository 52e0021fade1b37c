// `famez serve` as a process people leave running: a closed stdout pipe
// (EPIPE), SIGHUP with and without a log file, a crash, Ctrl-C at the
// console on a real terminal (a pty), log lines that keep the prompt
// intact, the JSON log format and --daemon's log file.
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

import anyTest, { type TestFn } from 'ava';

import { Client } from '../ts/client/client.js';
import { FabricClient } from '../ts/fabric/client.js';
import { ROOT, Scratch, pidAlive } from './helpers/serve.js';
import { waitFor, within } from './helpers/wait.js';

const test = anyTest as TestFn<Scratch>;
const WAIT_MS = 20_000;
const PTY_RUN = path.join(__dirname, 'helpers', 'pty-run.py');

test.beforeEach((t) => {
  t.context = new Scratch();
});
test.afterEach.always(async (t) => {
  await t.context.cleanup();
});

/** What a server made, to check that it is all gone. */
function made(dir: string, shm: string): { sock: string; shm: string; pidfile: string } {
  return { sock: path.join(dir, 'sock'), shm: `/dev/shm/${shm}`, pidfile: path.join(dir, 'pid') };
}

function gone(t: { false: (v: boolean, m?: string) => void }, files: { sock: string; shm: string; pidfile: string }): void {
  t.false(fs.existsSync(files.sock), `${files.sock} is left`);
  t.false(fs.existsSync(files.shm), `${files.shm} is left`);
  t.false(fs.existsSync(files.pidfile), `${files.pidfile} is left`);
}

const readPid = (file: string) => Number(fs.readFileSync(file, 'utf8').trim());

test('famez serve | head -3: the closed pipe (EPIPE) does not stop the server; it serves peers and cleans up at SIGTERM', async (t) => {
  const dir = t.context.dir();
  const f = made(dir, t.context.shmName());
  // The server's stdout is head's stdin; head exits after 3 lines.
  const head = spawn('head', ['-3'], { stdio: ['pipe', 'pipe', 'ignore'] });
  const headDone = new Promise<number | null>((resolve) => head.on('exit', (code) => resolve(code)));
  const server = spawn(process.execPath, ['--import=tsx', path.join(ROOT, 'ts', 'cli', 'main.ts'), 'serve', '-S', f.sock, '-M', path.basename(f.shm), '-p', f.pidfile, '--no-http', '--no-recycle'], {
    cwd: ROOT,
    stdio: ['ignore', head.stdin, 'pipe'],
  });
  head.stdin.destroy();
  let stderr = '';
  server.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<number | null>((resolve) => server.on('exit', (code) => resolve(code)));
  t.context.pids.push(server.pid!);
  t.is(await within(headDone, 'head to take its 3 lines', WAIT_MS), 0);
  await waitFor(() => fs.existsSync(f.pidfile) && readPid(f.pidfile) > 0, 'the pid file', WAIT_MS);
  const pid = readPid(f.pidfile);
  // Many lines go to the dead pipe: each peer is logged.
  for (let i = 0; i < 5; i++) {
    const c = await Client.connect(f.sock, { timeoutMs: WAIT_MS });
    t.true(c.id >= 1);
    c.close();
  }
  t.true(pidAlive(pid), 'the server survived EPIPE');
  process.kill(pid, 'SIGTERM');
  t.is(await within(exited, 'the server to exit', WAIT_MS), 0);
  gone(t, f);
  t.regex(stderr, /WARN {2}stdout is gone \(EPIPE\): output goes to the next stream/, 'the log moved to stderr');
  t.notRegex(stderr, /\n\s+at |Uncaught|node:internal/, 'no stack trace');
});

test('SIGHUP without a log file is a hung-up terminal: the server stops cleanly, exit 0, nothing left', async (t) => {
  const dir = t.context.dir();
  const f = made(dir, t.context.shmName());
  const s = await t.context.serve(['-S', f.sock, '-M', path.basename(f.shm), '-p', f.pidfile, '--no-http']);
  s.kill('SIGHUP');
  const exit = await s.wait(WAIT_MS);
  t.is(exit.code, 0);
  t.regex(s.stdout, /SIGHUP: closing 0 peer\(s\) and exiting/);
  gone(t, f);
});

test('SIGHUP with --log-file reopens it: after logrotate moves the file, new lines go to a new file and the server goes on', async (t) => {
  const dir = t.context.dir();
  const f = made(dir, t.context.shmName());
  const log = path.join(dir, 'famez.log');
  const s = t.context.famez(['serve', '-S', f.sock, '-M', path.basename(f.shm), '--log-file', log, '--no-http']);
  await waitFor(() => fs.existsSync(log) && fs.readFileSync(log, 'utf8').includes('serving on'), 'serving on in the log file', WAIT_MS);
  t.is(s.stdout.includes('serving on'), false, 'the log goes to the file, not stdout');
  fs.renameSync(log, `${log}.1`);
  const a = t.context.track(await FabricClient.connect(f.sock, { nodename: 'before' }));
  await waitFor(() => fs.readFileSync(`${log}.1`, 'utf8').includes(`peer ${a.id} connected`), 'the old file to get the line', WAIT_MS);
  s.kill('SIGHUP');
  await waitFor(() => fs.existsSync(log) && fs.readFileSync(log, 'utf8').includes('SIGHUP: reopened log file'), 'the reopened file', WAIT_MS);
  const b = t.context.track(await FabricClient.connect(f.sock, { nodename: 'after' }));
  await waitFor(() => fs.readFileSync(log, 'utf8').includes(`peer ${b.id} connected`), 'the new file to get the next line', WAIT_MS);
  t.false(fs.readFileSync(`${log}.1`, 'utf8').includes(`peer ${b.id} connected`));
  t.true(s.running);
  // Its mode: a log is not world-writable.
  t.is(fs.statSync(log).mode & 0o022, 0);
});

/** A preload that throws from a timer once `file` exists: a real uncaught
 * exception (or rejection) inside the running server. */
function faultInjector(dir: string, when: string, kind: 'throw' | 'reject'): string {
  const file = path.join(dir, 'fault.cjs');
  const fault = kind === 'throw' ? `throw new Error('injected fault')` : `Promise.reject(new Error('injected rejection'))`;
  fs.writeFileSync(
    file,
    `const fs = require('node:fs');
const t = setInterval(() => {
  if (!fs.existsSync(${JSON.stringify(when)})) return;
  clearInterval(t);
  setTimeout(() => { ${fault}; }, 50);
}, 10);
t.unref();
`,
  );
  return file;
}

for (const kind of ['throw', 'reject'] as const) {
  test(`an uncaught ${kind === 'throw' ? 'exception' : 'rejection'} removes the socket, shm and pid file and exits 1 with one line`, async (t) => {
    const dir = t.context.dir();
    const f = made(dir, t.context.shmName());
    const s = t.context.famezVia([], ['serve', '-S', f.sock, '-M', path.basename(f.shm), '-p', f.pidfile, '--http', '0'], {
      nodeArgs: ['--require', faultInjector(dir, f.sock, kind)],
      // The built CLI, as installed: under tsx, tsx's own rejection handler
      // exits before the server's runs.
      built: true,
    });
    const exit = await s.wait(WAIT_MS);
    t.is(exit.code, 1, s.transcript);
    const lines = s.stderr.trim().split('\n');
    t.deepEqual(lines, [`famez serve: internal error: injected ${kind === 'throw' ? 'fault' : 'rejection'} (socket and shared memory removed)`]);
    t.notRegex(s.stdout, /internal error/, 'said once, on stderr');
    gone(t, f);
  });
}

test('Ctrl-C at the console (a real terminal) stops the server at the first press; log lines redraw the prompt instead of overwriting it', async (t) => {
  const dir = t.context.dir();
  const f = made(dir, t.context.shmName());
  const p = t.context.famezVia(['python3', PTY_RUN], ['serve', '-S', f.sock, '-M', path.basename(f.shm), '-p', f.pidfile, '--no-http'], { stdin: true });
  await waitFor(() => p.stdout.includes('Z-switch> '), 'the console prompt', WAIT_MS);
  // Half a command typed, then a peer connects: its log line clears the
  // prompt line, and the prompt comes back with what was typed.
  p.child.stdin!.write('du');
  // The terminal escapes readline writes between the prompt and the text.
  // eslint-disable-next-line no-control-regex
  await waitFor(() => /Z-switch> (\x1b\[\d+G)?du$/.test(p.stdout), 'the typed text echoed', WAIT_MS);
  const c = t.context.track(await FabricClient.connect(f.sock, { nodename: 'tty-peer' }));
  const line = new RegExp(`\\x1b\\[2K\\x1b\\[1G\\S+ \\x1b\\[32mINFO \\x1b\\[0m peer ${c.id} connected \\(1 peer\\)\\r?\\n\\x1b\\[1G\\x1b\\[0JZ-switch> (\\x1b\\[\\d+G)?du`);
  await waitFor(() => line.test(p.stdout), () => `the log line and the redrawn prompt in ${JSON.stringify(p.stdout.slice(-400))}`, WAIT_MS);
  p.child.stdin!.write('\x03');
  const exit = await p.wait(WAIT_MS);
  t.is(exit.code, 0, p.transcript);
  t.regex(p.stdout, /SIGINT: closing 1 peer\(s\) and exiting/);
  gone(t, f);
});

test('--log-format json: one JSON object a line, with level, time, event, peer and nodename', async (t) => {
  const dir = t.context.dir();
  const sock = path.join(dir, 'sock');
  const s = t.context.famez(['serve', '-S', sock, '--memfd', '--log-format', 'json', '--no-http']);
  await s.waitFor(/"event":"listening"/, WAIT_MS);
  const c = await FabricClient.connect(sock, { nodename: 'json-peer' });
  const id = c.id;
  // The switch learns the peer's name from its first stanza: close only
  // once it has (on a loaded machine connect() resolves well before).
  await s.waitFor(/"nodename":"json-peer"/, WAIT_MS);
  c.close();
  await s.waitFor(/"event":"disconnect"/, WAIT_MS);
  const events = s.lines.map((l) => JSON.parse(l) as Record<string, unknown>);
  for (const e of events) {
    t.true(typeof e.time === 'string' && !Number.isNaN(Date.parse(e.time as string)), JSON.stringify(e));
    t.true(['fatal', 'error', 'warn', 'info', 'debug', 'trace'].includes(e.level as string), JSON.stringify(e));
    t.is(typeof e.msg, 'string');
  }
  t.like(
    events.find((e) => e.event === 'connect'),
    { level: 'info', component: 'server', peer: id, peers: 1 },
  );
  t.like(
    events.find((e) => e.event === 'disconnect'),
    { level: 'info', peer: id, nodename: 'json-peer', reason: 'disconnected', peers: 0 },
  );
  t.like(
    events.find((e) => e.event === 'stanza'),
    { level: 'info' },
  );
});

test('--daemon logs to a file beside its socket (never /dev/null) and says where', async (t) => {
  const dir = t.context.dir();
  const f = made(dir, t.context.shmName());
  const r = await t.context.run(['serve', '--daemon', '-S', f.sock, '-M', path.basename(f.shm), '-p', f.pidfile, '--http', '0']);
  t.is(r.exitInfo.code, 0, r.transcript);
  const pid = readPid(f.pidfile);
  t.context.pids.push(pid);
  const log = `${f.sock}.log`;
  t.regex(r.stdout, new RegExp(`running in the background \\(pid ${pid}\\); log in ${log.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}; web view at http://127\\.0\\.0\\.1:\\d+/`));
  const c = await Client.connect(f.sock, { timeoutMs: WAIT_MS });
  const id = c.id;
  c.close();
  await waitFor(() => fs.readFileSync(log, 'utf8').includes(`peer ${id} disconnected`), 'the disconnect in the daemon log', WAIT_MS);
  const text = fs.readFileSync(log, 'utf8');
  t.regex(text, /INFO {2}serving on /);
  t.regex(text, /QEMU stanza/);
  process.kill(pid, 'SIGTERM');
  await waitFor(() => !pidAlive(pid), 'the daemon to exit', WAIT_MS);
  t.regex(fs.readFileSync(log, 'utf8'), /SIGTERM: closing 0 peer\(s\) and exiting/);
  t.false(fs.existsSync(f.sock));
});
