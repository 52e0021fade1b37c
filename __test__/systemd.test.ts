// `famez serve` as a systemd Type=notify service, without systemd: the real
// server is started with NOTIFY_SOCKET naming a datagram socket that a
// python3 receiver binds (as systemd's is, with SO_PASSCRED so that each
// datagram comes with its sender's pid, which is what systemd's
// NotifyAccess=main checks), and contrib/famez.service is checked by
// systemd-analyze verify where it is installed.
import * as fs from 'node:fs';
import * as path from 'node:path';

import anyTest, { type TestFn } from 'ava';

import { Client } from '../ts/client/client.js';
import { socketState } from '../ts/native.js';
import { parseServeArgs } from '../ts/server/options.js';
import { ROOT, Scratch, pidAlive, uniqueName } from './helpers/serve.js';
import { LineProcess, waitFor, which } from './helpers/wait.js';

const test = anyTest as TestFn<Scratch>;

test.beforeEach((t) => {
  t.context = new Scratch();
});

test.afterEach.always(async (t) => {
  await t.context.cleanup();
});

/** Binds argv[1] (a path, or '@' and an abstract name) as a datagram
 * socket, says "bound", then prints each datagram as one JSON line with
 * the sender's pid; it exits by itself after argv[2] seconds at most. */
const RECEIVER = `
import json, signal, socket, struct, sys
signal.alarm(int(sys.argv[2]))
address = sys.argv[1]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
s.bind('\\0' + address[1:] if address.startswith('@') else address)
print('bound', flush=True)
while True:
    data, ancillary, _, _ = s.recvmsg(65536, socket.CMSG_SPACE(12))
    pid = None
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
            pid = struct.unpack('iII', payload[:12])[0]
    print(json.dumps({'pid': pid, 'state': data.decode('utf-8', 'replace')}), flush=True)
`;

interface Note {
  /** The sending process, from SCM_CREDENTIALS. */
  pid: number;
  state: string;
  fields: Record<string, string>;
}

class NotifyReceiver {
  private constructor(readonly proc: LineProcess) {}

  static async start(sc: Scratch, address: string): Promise<NotifyReceiver> {
    const p = LineProcess.spawn('python3', ['-c', RECEIVER, address, '300'], { pdeathsig: true, stdio: ['ignore', 'pipe', 'pipe'] });
    sc.procs.push(p);
    await p.waitLine((l) => l === 'bound', `the receiver to bind ${address}`, 0, 15_000);
    return new NotifyReceiver(p);
  }

  get notes(): Note[] {
    return this.proc.lines.slice(1).map((l) => {
      const { pid, state } = JSON.parse(l) as { pid: number; state: string };
      const fields: Record<string, string> = {};
      for (const line of state.split('\n')) {
        const eq = line.indexOf('=');
        if (eq > 0) fields[line.slice(0, eq)] = line.slice(eq + 1);
      }
      return { pid, state, fields };
    });
  }

  /** The index of the first note at or after `from` that has `key`. */
  async waitFor(key: string, from = 0, ms = 30_000): Promise<number> {
    return waitFor(
      () => {
        const i = this.notes.findIndex((n, j) => j >= from && key in n.fields);
        return i >= 0 ? i + 1 : 0;
      },
      () => `a notification with ${key}= (so far: ${JSON.stringify(this.notes.map((n) => n.state))})`,
      ms,
    ).then((i) => i - 1);
  }
}

function serveArgs(sc: Scratch, dir: string): { sock: string; args: string[] } {
  const sock = path.join(dir, 'sock');
  return { sock, args: ['serve', '--silent', '-S', sock, '-M', sc.shmName()] };
}

test('under NOTIFY_SOCKET (a path) famez serve sends READY=1 from its own pid once its socket listens, and STOPPING=1 on SIGTERM', async (t) => {
  const dir = t.context.dir();
  const rx = await NotifyReceiver.start(t.context, path.join(dir, 'notify'));
  const { sock, args } = serveArgs(t.context, dir);
  const serve = t.context.famez(args, { env: { NOTIFY_SOCKET: path.join(dir, 'notify'), WATCHDOG_USEC: undefined } });
  const ready = await rx.waitFor('READY');
  // The kernel holds the listening socket before the datagram is sent.
  t.is(socketState(sock).state, 'live', 'the socket listens when READY=1 arrives');
  t.is(ready, 0, 'nothing before READY=1');
  t.deepEqual(rx.notes[0], { pid: serve.pid, state: `READY=1\nSTATUS=serving on ${sock}`, fields: { READY: '1', STATUS: `serving on ${sock}` } });

  // (The probe above took ID 0: --silent's IDs are the stock monotonic ones.)
  t.context.track(await Client.connect(sock, { timeoutMs: 20_000 }));
  serve.kill('SIGTERM');
  const stopping = await rx.waitFor('STOPPING', 1);
  t.deepEqual(rx.notes[stopping], {
    pid: serve.pid,
    state: 'STOPPING=1\nSTATUS=SIGTERM: closing 1 peer(s)',
    fields: { STOPPING: '1', STATUS: 'SIGTERM: closing 1 peer(s)' },
  });
  t.deepEqual(await serve.wait(20_000), { code: 0, signal: null }, serve.stderr);
  t.is(rx.notes.length, 2, 'READY and STOPPING, nothing else');
  t.is(serve.stderr, '');
  t.false(fs.existsSync(sock));
});

test('an abstract NOTIFY_SOCKET (@name) gets READY=1, and STOPPING=1 on SIGINT', async (t) => {
  const dir = t.context.dir();
  const address = `@${uniqueName('famez-notify')}`;
  const rx = await NotifyReceiver.start(t.context, address);
  const { sock, args } = serveArgs(t.context, dir);
  const serve = t.context.famez(args, { env: { NOTIFY_SOCKET: address, WATCHDOG_USEC: undefined } });
  await rx.waitFor('READY');
  t.is(socketState(sock).state, 'live');
  t.is(rx.notes[0].pid, serve.pid);
  serve.kill('SIGINT');
  const stopping = await rx.waitFor('STOPPING', 1);
  t.is(rx.notes[stopping].fields.STATUS, 'SIGINT: closing 0 peer(s)');
  t.deepEqual(await serve.wait(20_000), { code: 0, signal: null }, serve.stderr);
});

test('with WatchdogSec= (WATCHDOG_USEC) it sends WATCHDOG=1 keep-alives after READY=1, until it stops', async (t) => {
  const dir = t.context.dir();
  const rx = await NotifyReceiver.start(t.context, path.join(dir, 'notify'));
  const { args } = serveArgs(t.context, dir);
  // 0.2 s: a keep-alive every 0.1 s. No WATCHDOG_PID: any pid may send them.
  const serve = t.context.famez(args, { env: { NOTIFY_SOCKET: path.join(dir, 'notify'), WATCHDOG_USEC: '200000', WATCHDOG_PID: undefined } });
  await rx.waitFor('READY');
  await waitFor(() => rx.notes.filter((n) => n.state === 'WATCHDOG=1').length >= 3, 'three keep-alives', 30_000);
  t.true(rx.notes.filter((n) => n.state === 'WATCHDOG=1').every((n) => n.pid === serve.pid));
  t.is(rx.notes[0].fields.READY, '1', 'READY=1 comes first');
  serve.kill('SIGTERM');
  const stopping = await rx.waitFor('STOPPING');
  t.deepEqual(await serve.wait(20_000), { code: 0, signal: null }, serve.stderr);
  t.is(stopping, rx.notes.length - 1, 'nothing after STOPPING=1');
});

test('WATCHDOG_PID naming another process means the keep-alives are not this one\'s to send', async (t) => {
  const dir = t.context.dir();
  const rx = await NotifyReceiver.start(t.context, path.join(dir, 'notify'));
  const { args } = serveArgs(t.context, dir);
  const serve = t.context.famez(args, { env: { NOTIFY_SOCKET: path.join(dir, 'notify'), WATCHDOG_USEC: '60000000', WATCHDOG_PID: '1' } });
  await rx.waitFor('READY');
  serve.kill('SIGTERM');
  await rx.waitFor('STOPPING');
  await serve.wait(20_000);
  // Enabled, the first keep-alive would have gone out right after READY=1.
  t.deepEqual(rx.notes.map((n) => Object.keys(n.fields)[0]), ['READY', 'STOPPING']);
});

test('--daemon under NOTIFY_SOCKET: the launcher systemd started sends MAINPID=<the server> with READY=1; the server sends STOPPING=1', async (t) => {
  const dir = t.context.dir();
  const rx = await NotifyReceiver.start(t.context, path.join(dir, 'notify'));
  const { sock, args } = serveArgs(t.context, dir);
  const pidfile = path.join(dir, 'pidfile');
  const launcher = t.context.famez([...args, '--daemon', '-p', pidfile], { env: { NOTIFY_SOCKET: path.join(dir, 'notify'), WATCHDOG_USEC: undefined } });
  const exit = await launcher.wait(120_000);
  const pid = Number(fs.existsSync(pidfile) ? fs.readFileSync(pidfile, 'utf8').trim() : '0');
  if (pid > 0) t.context.pids.push(pid);
  t.deepEqual(exit, { code: 0, signal: null }, launcher.stderr);
  t.true(pid > 0 && pid !== launcher.pid && pidAlive(pid), `the server's pid file: ${pid}`);
  await rx.waitFor('READY');
  t.deepEqual(rx.notes[0], {
    pid: launcher.pid,
    state: `MAINPID=${pid}\nREADY=1\nSTATUS=serving (pid ${pid})`,
    fields: { MAINPID: String(pid), READY: '1', STATUS: `serving (pid ${pid})` },
  });
  t.is(socketState(sock).state, 'live');
  process.kill(pid, 'SIGTERM');
  const stopping = await rx.waitFor('STOPPING', 1);
  t.is(rx.notes[stopping].pid, pid, 'from the server, the main pid now');
  await waitFor(() => !pidAlive(pid), 'the server to exit', 20_000);
  t.is(rx.notes.length, 2, 'the server itself sends no READY=1 of its own');
});

test('a NOTIFY_SOCKET that cannot be reached is one line on stderr per kind of message; the server serves all the same', async (t) => {
  const dir = t.context.dir();
  const missing = path.join(dir, 'no-such-socket');
  const { sock, args } = serveArgs(t.context, dir);
  const serve = t.context.famez(args, { env: { NOTIFY_SOCKET: missing, WATCHDOG_USEC: '200000', WATCHDOG_PID: undefined } });
  await serve.waitFor(/serving on /);
  const line = (kind: string) => `famez serve: cannot notify systemd (${kind}): sd_notify to NOTIFY_SOCKET=${missing}: No such file or directory`;
  await waitFor(() => serve.stderr.includes(line('WATCHDOG')), 'the failed keep-alive line', 30_000);
  const client = t.context.track(await Client.connect(sock, { timeoutMs: 20_000 }));
  t.is(client.id, 0, 'it serves');
  serve.kill('SIGTERM');
  t.deepEqual(await serve.wait(20_000), { code: 0, signal: null });
  t.deepEqual(serve.stderr.trimEnd().split('\n'), [line('READY'), line('WATCHDOG'), line('STOPPING')], 'a failing keep-alive is reported once, not every 0.1 s');
});

test('a NOTIFY_SOCKET that is not an AF_UNIX address (systemd\'s vsock: form) is refused in one clear line', async (t) => {
  const dir = t.context.dir();
  const { args } = serveArgs(t.context, dir);
  const serve = t.context.famez(args, { env: { NOTIFY_SOCKET: 'vsock:2:9999', WATCHDOG_USEC: undefined } });
  await serve.waitFor(/serving on /);
  await waitFor(() => serve.stderr.includes('\n'), 'the line on stderr');
  t.is(serve.stderr, 'famez serve: cannot notify systemd (READY): sd_notify to NOTIFY_SOCKET=vsock:2:9999: not an AF_UNIX address (an absolute path, or \'@\' and an abstract name)\n');
});

test('without NOTIFY_SOCKET nothing is sent and nothing said', async (t) => {
  const dir = t.context.dir();
  const { args } = serveArgs(t.context, dir);
  const serve = t.context.famez(args, { env: { NOTIFY_SOCKET: undefined, WATCHDOG_USEC: '200000' } });
  await serve.waitFor(/serving on /);
  serve.kill('SIGTERM');
  t.deepEqual(await serve.wait(20_000), { code: 0, signal: null });
  t.is(serve.stderr, '');
});

// ---- contrib/famez.service ---------------------------------------------------

const UNIT = path.join(ROOT, 'contrib', 'famez.service');

/** The unit's [Service] settings, each key with every value it is given. */
function unitSettings(): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const raw of fs.readFileSync(UNIT, 'utf8').split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#') || line.startsWith('[')) continue;
    const eq = line.indexOf('=');
    out.set(line.slice(0, eq), [...(out.get(line.slice(0, eq)) ?? []), line.slice(eq + 1)]);
  }
  return out;
}

test('contrib/famez.service: a notify service whose ExecStart famez serve accepts, its socket in its RuntimeDirectory', (t) => {
  const u = unitSettings();
  t.deepEqual(u.get('Type'), ['notify']);
  t.deepEqual(u.get('KillSignal'), ['SIGTERM']);
  t.deepEqual(u.get('Restart'), ['on-failure']);
  const exec = u.get('ExecStart')?.[0] ?? '';
  const m = /^\/usr\/bin\/env famez serve (.*) \$FAMEZ_OPTS$/.exec(exec);
  t.truthy(m, exec);
  const o = parseServeArgs(m![1].split(/\s+/));
  t.is(o.socket, '/run/famez/famez.sock');
  t.is(path.dirname(o.socket), `/run/${u.get('RuntimeDirectory')?.[0]}`, 'the socket is in the runtime directory systemd creates');
  t.deepEqual(o.shm, { kind: 'posix', name: 'famez' });
  t.is(o.mode, 0o660);
  t.is(o.group, u.get('SupplementaryGroups')?.[0] ?? null, 'the service is a member of the group it gives the socket');
  t.not(o.fabric, null, 'a fabric by default');
  for (const forbidden of ['MemoryDenyWriteExecute', 'ProtectProc', 'ProcSubset', 'PrivateUsers']) t.false(u.has(forbidden), `${forbidden} would break famez (see the unit)`);
});

test('contrib/famez.service passes systemd-analyze verify with nothing to say', async (t) => {
  const analyze = which('systemd-analyze');
  if (!analyze) {
    t.log('systemd-analyze is not installed here (Debian: apt-get install systemd; .ci/run installs it): the unit was not verified');
    t.pass();
    return;
  }
  // A copy, so that no drop-in or installed famez.service is read with
  // it. verify warns (exit 0) about unknown keys and bad values, and
  // fails when ExecStart's program is missing (/usr/bin/env is there).
  const dir = t.context.dir();
  fs.copyFileSync(UNIT, path.join(dir, 'famez.service'));
  const p = LineProcess.spawn(analyze, ['verify', path.join(dir, 'famez.service')], { stdio: ['ignore', 'pipe', 'pipe'] });
  t.context.procs.push(p);
  t.deepEqual(await p.wait(60_000), { code: 0, signal: null }, p.transcript);
  t.is(p.stderr, '', 'no warnings');
  t.is(p.stdout, '');
});
