// Files and permissions (issue 7, items 12-17): famez touches no file that
// is not its own. Real processes, real sockets, real /dev/shm objects and
// pid files; every wait bounded; everything removed at cleanup.
import anyTest, { type TestFn } from 'ava';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

import { Client } from '../ts/client/client.js';
import { SERVE_HELP } from '../ts/server/options.js';
import { Scratch, pidAlive, type FamezProcess } from './helpers/serve.js';
import { LineProcess } from './helpers/wait.js';

const test = anyTest as TestFn<Scratch>;

test.beforeEach((t) => {
  t.context = new Scratch();
});

test.afterEach.always(async (t) => {
  await t.context.cleanup();
});

const MiB = 2 ** 20;
const isRoot = process.getuid?.() === 0;

async function connect(sc: Scratch, sock: string): Promise<Client> {
  return sc.track(await Client.connect(sock, { timeoutMs: 20_000 }));
}

/** A refused start: exit `code`, exactly one line on stderr matching `re`. */
function refused(t: import('ava').ExecutionContext, p: FamezProcess, code: number, re: RegExp): void {
  t.deepEqual(p.exitInfo, { code, signal: null }, p.stderr);
  t.regex(p.stderr, /^famez serve: [^\n]+\n$/, 'one line on stderr');
  t.regex(p.stderr, re);
}

/** A process that listens (python) or holds a file open, until stopped. */
async function python(sc: Scratch, code: string, args: string[], cwd?: string): Promise<LineProcess> {
  const py = LineProcess.spawn('python3', ['-c', code, ...args], { cwd });
  sc.closers.push(() => void py.stop());
  await py.waitLine((l) => l === 'ok', 'python to be ready');
  return py;
}

// ---- 12. a live socket is decided by connecting ------------------------------

test('a live socket reached through a symlinked directory is refused with its pid, not replaced', async (t) => {
  const dir = t.context.dir();
  fs.mkdirSync(path.join(dir, 'real'));
  fs.symlinkSync(path.join(dir, 'real'), path.join(dir, 'link'));
  const first = await t.context.serve(['--silent', '-S', path.join(dir, 'link', 'sock'), '--memfd']);
  const second = await t.context.run(['serve', '--silent', '-S', path.join(dir, 'real', 'sock'), '--memfd']);
  refused(t, second, 1, new RegExp(`held by a running server \\(pid ${first.pid}\\)`));
  t.false(/replaced stale socket/.test(second.stdout));
  // The probe was closed at once: the first server saw a peer leave.
  await first.waitFor(/peer \d+ disconnected/);
  const c = await connect(t.context, path.join(dir, 'real', 'sock'));
  t.true(c.id >= 0, 'the first server still serves its socket');
  t.true(first.running);
});

test('a live socket that was renamed is refused, not replaced', async (t) => {
  const dir = t.context.dir();
  const first = await t.context.serve(['--silent', '-S', path.join(dir, 'a'), '--memfd']);
  fs.renameSync(path.join(dir, 'a'), path.join(dir, 'b'));
  const second = await t.context.run(['serve', '--silent', '-S', path.join(dir, 'b'), '--memfd']);
  refused(t, second, 1, new RegExp(`socket ${path.join(dir, 'b')} is held by a running server \\(pid ${first.pid}\\)`));
  t.true(fs.statSync(path.join(dir, 'b')).isSocket());
  await connect(t.context, path.join(dir, 'b'));
  t.pass();
});

test('a live socket bound by a relative path (another program) is refused with its pid', async (t) => {
  const dir = t.context.dir();
  const py = await python(
    t.context,
    'import socket,sys\ns=socket.socket(socket.AF_UNIX)\ns.bind("sock")\ns.listen()\nprint("ok",flush=True)\nsys.stdin.read()',
    [],
    dir,
  );
  const p = await t.context.run(['serve', '--silent', '-S', path.join(dir, 'sock'), '--memfd']);
  refused(t, p, 1, new RegExp(`held by a running server \\(pid ${py.pid}\\)`));
  t.true(fs.statSync(path.join(dir, 'sock')).isSocket(), 'the socket is still there');
});

// ---- 13. pid files ---------------------------------------------------------------

test('-p on a symlink is refused and its target is untouched', async (t) => {
  const dir = t.context.dir();
  const target = path.join(dir, 'target');
  fs.writeFileSync(target, 'precious\n');
  fs.symlinkSync(target, path.join(dir, 'pid'));
  const shm = t.context.shmName();
  const p = await t.context.run(['serve', '--silent', '-S', path.join(dir, 'sock'), '-M', shm, '-p', path.join(dir, 'pid')]);
  refused(t, p, 1, /pid file .*pid is a symbolic link; famez does not follow it/);
  t.is(fs.readFileSync(target, 'utf8'), 'precious\n');
  t.true(fs.lstatSync(path.join(dir, 'pid')).isSymbolicLink());
  t.false(fs.existsSync(path.join(dir, 'sock')), 'no socket left behind');
  t.false(fs.existsSync(`/dev/shm/${shm}`), 'no shared memory left behind');
});

test('a pid file held by a running server is refused naming its pid; it keeps it and removes it at exit', async (t) => {
  const dir = t.context.dir();
  const pidfile = path.join(dir, 'pid');
  const first = await t.context.serve(['--silent', '-S', path.join(dir, 's1'), '--memfd', '-p', pidfile]);
  t.is(fs.readFileSync(pidfile, 'utf8'), `${first.pid}\n`);
  const shm = t.context.shmName();
  const second = await t.context.run(['serve', '--silent', '-S', path.join(dir, 's2'), '-M', shm, '-p', pidfile]);
  refused(t, second, 1, new RegExp(`pid file ${pidfile} is held by a running process \\(pid ${first.pid}\\)`));
  t.is(fs.readFileSync(pidfile, 'utf8'), `${first.pid}\n`, 'not overwritten');
  t.false(fs.existsSync(path.join(dir, 's2')), 'the refused server left no socket');
  t.false(fs.existsSync(`/dev/shm/${shm}`), 'nor shared memory');
  await first.stop('SIGTERM');
  t.false(fs.existsSync(pidfile), 'the first server removed its pid file');
});

test('a stale pid file (nobody holds it) is taken over, and removed at exit', async (t) => {
  const dir = t.context.dir();
  const pidfile = path.join(dir, 'pid');
  fs.writeFileSync(pidfile, '999999\n');
  const s = await t.context.serve(['--silent', '-S', path.join(dir, 'sock'), '--memfd', '-p', pidfile]);
  t.regex(s.stdout, /took over stale pid file/);
  t.is(fs.readFileSync(pidfile, 'utf8'), `${s.pid}\n`);
  await s.stop('SIGTERM');
  t.false(fs.existsSync(pidfile));
});

test('a file that is not a pid file is never overwritten by -p', async (t) => {
  const dir = t.context.dir();
  const file = path.join(dir, 'notes');
  fs.writeFileSync(file, 'my notes\n');
  const p = await t.context.run(['serve', '--silent', '-S', path.join(dir, 'sock'), '--memfd', '-p', file]);
  refused(t, p, 1, /is not a pid file; famez will not overwrite it/);
  t.is(fs.readFileSync(file, 'utf8'), 'my notes\n');
});

test('at exit the pid file is removed only if the path still is this server\'s file', async (t) => {
  const dir = t.context.dir();
  const pidfile = path.join(dir, 'pid');
  const s = await t.context.serve(['--silent', '-S', path.join(dir, 'sock'), '--memfd', '-p', pidfile]);
  fs.unlinkSync(pidfile);
  fs.writeFileSync(pidfile, '12345\n'); // someone else's now
  await s.stop('SIGTERM');
  t.deepEqual(s.exitInfo, { code: 0, signal: null });
  t.is(fs.readFileSync(pidfile, 'utf8'), '12345\n');
});

// ---- 14/15. the shared memory: -M NAME and -m DIR -----------------------------------

type Backing = { kind: string; args: (sc: Scratch) => { args: string[]; file: string } };
const backings: Backing[] = [
  {
    kind: '-M NAME',
    args: (sc) => {
      const n = sc.shmName();
      return { args: ['-M', n], file: `/dev/shm/${n}` };
    },
  },
  {
    kind: '-m DIR',
    args: (sc) => {
      const d = sc.dir();
      return { args: ['-m', d, '-M', 'obj'], file: path.join(d, 'obj') };
    },
  },
];

for (const b of backings) {
  test(`${b.kind}: a second server is refused with the first's pid; the first's object is not resized, its peers keep working, and stays after the refusal`, async (t) => {
    const dir = t.context.dir();
    const { args, file } = b.args(t.context);
    const first = await t.context.serve(['--silent', '-S', path.join(dir, 's1'), ...args, '-l', '1M']);
    const c = await connect(t.context, path.join(dir, 's1'));
    const mem = new Uint8Array(c.memory);
    mem[MiB - 1] = 0x5a;
    const ino = fs.statSync(file).ino;
    const second = await t.context.run(['serve', '--silent', '-S', path.join(dir, 's2'), ...args, '-l', '2M']);
    refused(t, second, 1, new RegExp(`is in use by a running famez server \\(pid ${first.pid}\\); stop it or choose another name`));
    t.is(fs.statSync(file).size, MiB, 'not resized');
    t.is(fs.statSync(file).ino, ino, 'the same object under the name');
    t.is(mem[MiB - 1], 0x5a, 'a peer still reads its memory (no SIGBUS)');
    mem[0] = 1;
    t.false(fs.existsSync(path.join(dir, 's2')), 'the refused server left no socket');
    const d = await connect(t.context, path.join(dir, 's1'));
    t.is(new Uint8Array(d.memory)[0], 1, 'a new peer maps the same object');
    t.true(first.running);
  });

  test(`${b.kind}: a leftover object nobody uses is replaced by a new object`, async (t) => {
    const dir = t.context.dir();
    const { args, file } = b.args(t.context);
    fs.writeFileSync(file, Buffer.alloc(4096, 7), { mode: 0o600 });
    const s = await t.context.serve(['--silent', '-S', path.join(dir, 'sock'), ...args, '-l', '1M']);
    t.regex(s.stdout, /replaced stale shared memory/);
    t.is(fs.statSync(file).size, MiB);
    // Not compared by inode number: tmpfs reuses a freed inode's number at
    // once. The old object resized would still hold its 7s.
    const c = await connect(t.context, path.join(dir, 'sock'));
    t.true(new Uint8Array(c.memory).subarray(0, 4096).every((b) => b === 0), 'a new object: none of the old contents');
  });

  test(`${b.kind}: a leftover object that a process still has open is refused naming that process, untouched`, async (t) => {
    const dir = t.context.dir();
    const { args, file } = b.args(t.context);
    fs.writeFileSync(file, Buffer.alloc(4096, 7), { mode: 0o600 });
    const py = await python(t.context, 'import sys\nf=open(sys.argv[1],"rb")\nprint("ok",flush=True)\nsys.stdin.read()', [file]);
    const p = await t.context.run(['serve', '--silent', '-S', path.join(dir, 'sock'), ...args, '-l', '1M']);
    refused(t, p, 1, new RegExp(`exists and is in use by process ${py.pid} \\(open or mapped\\)`));
    t.is(fs.statSync(file).size, 4096);
    t.is(fs.readFileSync(file)[0], 7);
    t.false(fs.existsSync(path.join(dir, 'sock')));
  });

  test(`${b.kind}: at exit the name is removed only while it still is this server's object`, async (t) => {
    const dir = t.context.dir();
    const { args, file } = b.args(t.context);
    const s = await t.context.serve(['--silent', '-S', path.join(dir, 'sock'), ...args, '-l', '1M']);
    fs.unlinkSync(file);
    fs.writeFileSync(file, 'someone else\n');
    await s.stop('SIGTERM');
    t.deepEqual(s.exitInfo, { code: 0, signal: null }, s.stderr);
    t.is(fs.readFileSync(file, 'utf8'), 'someone else\n');
    t.regex(s.stdout, /left shared memory .* alone/);
  });

  test(`${b.kind}: an object owned by another user is refused, untouched`, async (t) => {
    if (!isRoot) {
      t.pass('needs root to make a file of another user');
      return;
    }
    const dir = t.context.dir();
    const { args, file } = b.args(t.context);
    fs.writeFileSync(file, Buffer.alloc(4096, 7), { mode: 0o644 });
    fs.chownSync(file, 65534, 65534);
    const p = await t.context.run(['serve', '--silent', '-S', path.join(dir, 'sock'), ...args, '-l', '1M']);
    refused(t, p, 1, /exists and belongs to uid 65534, not to this user/);
    const st = fs.statSync(file);
    t.deepEqual([st.size, st.uid, st.mode & 0o7777], [4096, 65534, 0o644]);
  });
}

test('-m DIR: a planted symlink is not followed: its target is neither truncated nor chmod-ed', async (t) => {
  const dir = t.context.dir();
  const shmDir = path.join(dir, 'shm');
  fs.mkdirSync(shmDir, { mode: 0o1777 });
  fs.chmodSync(shmDir, 0o1777);
  const target = path.join(dir, 'target');
  fs.writeFileSync(target, 'precious\n', { mode: 0o644 });
  fs.symlinkSync(target, path.join(shmDir, 'ivshmem'));
  const p = await t.context.run(['serve', '--silent', '-S', path.join(dir, 'sock'), '-m', shmDir, '-l', '1M', '--mode', '0666']);
  refused(t, p, 1, /is a symbolic link; famez never follows one/);
  const st = fs.statSync(target);
  t.is(fs.readFileSync(target, 'utf8'), 'precious\n');
  t.is(st.mode & 0o7777, 0o644);
  t.true(fs.lstatSync(path.join(shmDir, 'ivshmem')).isSymbolicLink());
  t.false(fs.existsSync(path.join(dir, 'sock')));
});

// ---- 16. the socket's mode is the shared memory's ---------------------------------

const umask000 = ['sh', '-c', 'umask 000 && exec "$0" "$@"'];

test('with umask 000 the socket gets the shared memory\'s mode (0600), not 0777', async (t) => {
  const dir = t.context.dir();
  const sock = path.join(dir, 'sock');
  const shm = t.context.shmName();
  const p = t.context.famezVia(umask000, ['serve', '--silent', '-S', sock, '-M', shm]);
  await p.waitFor(/serving on /, 60_000);
  t.is(fs.statSync(sock).mode & 0o7777, 0o600);
  t.is(fs.statSync(`/dev/shm/${shm}`).mode & 0o7777, 0o600);
  await connect(t.context, sock);
  t.pass();
});

test('--mode 0660 under umask 000 gives the socket and the shared memory 0660', async (t) => {
  const dir = t.context.dir();
  const sock = path.join(dir, 'sock');
  const shm = t.context.shmName();
  const p = t.context.famezVia(umask000, ['serve', '--silent', '-S', sock, '-M', shm, '--mode', '0660']);
  await p.waitFor(/serving on /, 60_000);
  t.is(fs.statSync(sock).mode & 0o7777, 0o660);
  t.is(fs.statSync(`/dev/shm/${shm}`).mode & 0o7777, 0o660);
});

test('the help says the socket gets the shared memory\'s mode, 0600 by default, and no special bits', (t) => {
  t.regex(SERVE_HELP, /--mode MODE[\s\S]*default 0600[\s\S]*socket always[\s\S]*gets the shared memory's mode[\s\S]*No setuid, setgid or[\s\S]*sticky bits/);
});

// ---- 17. a size the machine cannot map --------------------------------------------

// Not a LineProcess: a synchronous probe at load time, bounded by spawnSync's own timeout.
const hasPrlimit = spawnSync('prlimit', ['--version'], { timeout: 10_000, killSignal: 'SIGKILL' }).status === 0;

test('a size this process cannot map (mmap ENOMEM at start) is one clear line and exit 2, nothing left behind', async (t) => {
  if (!hasPrlimit) {
    t.pass('needs prlimit(1)');
    return;
  }
  const dir = t.context.dir();
  const shm = t.context.shmName();
  // 64 GiB of address space is enough for node; 128 GiB of shared memory is not.
  const p = t.context.famezVia(['prlimit', `--as=${64 * 2 ** 30}`, '--'], ['serve', '--silent', '-S', path.join(dir, 'sock'), '-M', shm, '-l', '128G']);
  await p.wait(30_000);
  refused(t, p, 2, /cannot map 137438953472 bytes of shared memory \(mmap: ENOMEM\).*choose a smaller -l/);
  t.deepEqual(fs.readdirSync(dir), [], 'no socket');
  t.false(fs.existsSync(`/dev/shm/${shm}`), 'no shared memory');
  t.false(pidAlive(p.pid));
});

test('an over-long socket path is refused before anything is created, also by the daemon launcher', async (t) => {
  const dir = t.context.dir();
  const shm = t.context.shmName();
  const pidfile = path.join(dir, 'pid');
  const long = path.join(dir, 'x'.repeat(120));
  const p = await t.context.run(['serve', '--silent', '--daemon', '-p', pidfile, '-S', long, '-M', shm]);
  refused(t, p, 2, /socket path .* has \d+ bytes, a UNIX socket path at most 107/);
  t.deepEqual(fs.readdirSync(dir), [], 'no socket, no pid file');
  t.false(fs.existsSync(`/dev/shm/${shm}`));
});
