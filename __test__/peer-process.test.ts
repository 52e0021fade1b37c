// Peer credentials against the real kernel: UnixStream.peerPid (SO_PEERCRED)
// names the process that connected, and peerProcess reads what that process
// is from /proc.
import * as fs from 'node:fs';
import * as path from 'node:path';

import anyTest, { type TestFn } from 'ava';

import { UnixListener, UnixStream } from '../ts/native.js';
import { describePeerProcess, peerKind, peerProcess } from '../ts/server/peer-process.js';
import { LineProcess, removeDir, tempDir, waitFor, which } from './helpers/wait.js';

interface Context {
  dir: string;
  procs: LineProcess[];
  closers: Array<{ close(): void }>;
}
const test = anyTest as TestFn<Context>;

test.beforeEach((t) => {
  t.context = { dir: tempDir('famez-peer-process-'), procs: [], closers: [] };
});

test.afterEach.always(async (t) => {
  for (const c of t.context.closers) c.close();
  await Promise.all(t.context.procs.map((p) => p.stop('SIGKILL')));
  removeDir(t.context.dir);
});

/** A child process run under the tests' child helper, stopped at cleanup
 * (by its pid) and tied to this process (pdeathsig) in case cleanup never runs. */
function child(t: { context: Context }, cmd: string, args: string[]): LineProcess {
  const p = LineProcess.spawn(cmd, args, { pdeathsig: true, stdio: ['pipe', 'pipe', 'pipe'] });
  t.context.procs.push(p);
  return p;
}

/** Node connecting to `sock` with its own net module (a plain stream
 * socket, no famez code), saying "connected" and holding the connection
 * until its stdin closes. */
const CONNECTOR = `
const s = require('node:net').connect(process.argv[1], () => console.log('connected'));
s.on('error', (e) => { console.error(e.message); process.exit(1); });
process.stdin.on('end', () => process.exit(0)).resume();
`;

/** A child process connected to a listener of this process, and the
 * accepted end. */
async function childConnection(t: { context: Context }): Promise<{ c: LineProcess; accepted: UnixStream }> {
  const sock = path.join(t.context.dir, 'sock');
  const listener = UnixListener.listen(sock);
  t.context.closers.push(listener);
  const c = child(t, process.execPath, ['-e', CONNECTOR, sock]);
  await c.waitFor(/connected/, 15_000);
  const accepted: UnixStream = await waitFor(() => listener.accept(), "the child's connection");
  t.context.closers.push(accepted);
  return { c, accepted };
}

test('an accepted UnixStream reports the pid of the process that connected (a child), and peerProcess names it', async (t) => {
  const { c, accepted } = await childConnection(t);
  t.not(c.pid, process.pid);
  t.is(accepted.peerPid, c.pid, 'the connecting process, not this one');
  const who = peerProcess(accepted.peerPid!);
  t.deepEqual(who, { pid: c.pid, command: fs.readFileSync(`/proc/${c.pid}/comm`, 'utf8').trim(), kind: 'process' });
  t.regex(who.command!, /^node/);
  t.is(describePeerProcess(who), `${who.command}, pid ${c.pid}`);
  accepted.close();
  t.is(accepted.peerPid, null, 'a closed stream has no peer');
});

test('the pid stays the connecting process\'s after it exits (SO_PEERCRED is taken at connect); /proc then knows nothing', async (t) => {
  const { c, accepted } = await childConnection(t);
  const pid = c.pid;
  c.child.stdin!.end();
  await c.wait(15_000);
  // Reaped: unless the pid was reused at once, /proc has no such entry.
  t.is(accepted.peerPid, pid);
  if (!fs.existsSync(`/proc/${pid}`)) t.deepEqual(peerProcess(pid), { pid, command: null, kind: 'process' });
});

test('both ends of a connection made by this process name this process', (t) => {
  const sock = path.join(t.context.dir, 'sock');
  const listener = UnixListener.listen(sock);
  t.context.closers.push(listener);
  const client = UnixStream.connect(sock);
  t.context.closers.push(client);
  const accepted = listener.accept();
  t.truthy(accepted);
  t.context.closers.push(accepted!);
  t.is(accepted!.peerPid, process.pid);
  t.is(client.peerPid, process.pid, 'the listener\'s process');
});

test('peerProcess classifies a real process whose command starts with "qemu" as a QEMU (comm cut to 15 bytes)', async (t) => {
  // The kernel names a process after the file it executed: a symlink
  // called qemu-system-x86_64 to sleep(1) runs as "qemu-system-x86".
  const sleep = which('sleep');
  if (!sleep) return t.fail('no sleep(1) on this machine');
  const fake = path.join(t.context.dir, 'qemu-system-x86_64');
  fs.symlinkSync(sleep, fake);
  const p = child(t, fake, ['120']);
  const who = await waitFor(() => {
    const w = peerProcess(p.pid);
    return w.command === 'qemu-system-x86' ? w : null;
  }, () => `/proc/${p.pid}/comm to be qemu-system-x86 (it is ${JSON.stringify(peerProcess(p.pid).command)})`);
  t.deepEqual(who, { pid: p.pid, command: 'qemu-system-x86', kind: 'qemu' });
  t.is(describePeerProcess(who), `qemu-system-x86, pid ${p.pid}`);
});

test('a command name with control characters is shown with \'?\' in their place (it goes into log lines)', async (t) => {
  // A process may rename itself (here by writing /proc/self/comm).
  const p = child(t, process.execPath, ['-e', 'require("fs").writeFileSync("/proc/self/comm", "qemu\\nfake\\x1b[2J"); console.log("renamed"); setInterval(() => {}, 1000);']);
  await p.waitFor(/renamed/, 15_000);
  t.deepEqual(peerProcess(p.pid), { pid: p.pid, command: 'qemu?fake?[2J', kind: 'qemu' });
});

test('peerProcess of a pid with no process, or of no pid at all, has no command and is a plain process', (t) => {
  const pidMax = Number(fs.readFileSync('/proc/sys/kernel/pid_max', 'utf8'));
  for (const pid of [pidMax + 1, 0, -1, 1.5, Number.NaN]) {
    t.deepEqual(peerProcess(pid), { pid, command: null, kind: 'process' }, String(pid));
  }
  t.is(describePeerProcess(peerProcess(0)), 'pid 0');
});

test('peerKind: a command starting with "qemu" is a QEMU, anything else a process', (t) => {
  for (const c of ['qemu-system-x86', 'qemu-kvm', 'qemu-system-aar', 'qemu']) t.is(peerKind(c), 'qemu', c);
  for (const c of ['node', 'python3', 'famez', 'xqemu', 'QEMU', '', null]) t.is(peerKind(c), 'process', String(c));
});
