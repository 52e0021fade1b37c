// FAME's plain setup from the command line: `famez fam create` makes the
// FAM file (sparse, or reserved with --preallocate) and prints the stanza;
// `famez stanza --plain` prints it for an existing file. Bad input is one
// line and nothing left behind. Real files on this machine's file systems.
import * as fs from 'node:fs';
import * as path from 'node:path';

import anyTest, { type TestFn } from 'ava';

import { Scratch } from './helpers/serve.js';

const test = anyTest as TestFn<Scratch>;
const MiB = 1024 * 1024;

test.beforeEach((t) => {
  t.context = new Scratch();
});
test.afterEach.always(async (t) => {
  await t.context.cleanup();
});

test('fam create makes a sparse file of the size and prints the plain stanza for it', async (t) => {
  const file = path.join(t.context.dir(), 'fam');
  const p = await t.context.run(['fam', 'create', file, '--size', '64M']);
  t.deepEqual(p.exitInfo, { code: 0, signal: null }, p.stderr);
  const st = fs.statSync(file);
  t.is(st.size, 64 * MiB);
  t.true(st.blocks * 512 < MiB, 'sparse: almost nothing allocated');
  t.is(st.mode & 0o777, 0o600);
  t.regex(p.stdout, new RegExp(`created ${file}: 64M \\(sparse`));
  t.true(p.stdout.includes(`-object memory-backend-file,id=fam0,mem-path=${file},size=${64 * MiB},share=on -device ivshmem-plain,memdev=fam0`), p.stdout);
  t.true(p.stdout.includes("<qemu:arg value='ivshmem-plain,memdev=fam0'/>"));
});

test('fam create --preallocate reserves every block', async (t) => {
  const file = path.join(t.context.dir(), 'fam');
  const p = await t.context.run(['fam', 'create', '--preallocate', '-l', '8M', file, '--mode', '0660']);
  t.deepEqual(p.exitInfo, { code: 0, signal: null }, p.stderr);
  const st = fs.statSync(file);
  t.is(st.size, 8 * MiB);
  t.true(st.blocks * 512 >= 8 * MiB, `reserved: ${st.blocks * 512} bytes allocated`);
  t.is(st.mode & 0o777, 0o660);
});

test('fam create refuses an existing file (exit 1, untouched), a size that is not a power of two and a missing PATH or --size (exit 2, nothing made)', async (t) => {
  const dir = t.context.dir();
  const file = path.join(dir, 'fam');
  fs.writeFileSync(file, 'keep me');
  const exists = await t.context.run(['fam', 'create', file, '--size', '1M']);
  t.is(exists.exitInfo.code, 1);
  t.regex(exists.stderr, /^famez fam: .*fam exists \(7 bytes\): famez fam create makes a new file; remove it first, or use it as it is\n$/);
  t.is(fs.readFileSync(file, 'utf8'), 'keep me');
  for (const args of [['create', path.join(dir, 'b'), '--size', '3M'], ['create', path.join(dir, 'b')], ['create', '--size', '1M'], ['grow', path.join(dir, 'b')]]) {
    const p = await t.context.run(['fam', ...args]);
    t.is(p.exitInfo.code, 2, args.join(' '));
    t.regex(p.stderr, /^famez fam: [^\n]+\n$/, args.join(' '));
  }
  t.false(fs.existsSync(path.join(dir, 'b')));
  const nodir = await t.context.run(['fam', 'create', path.join(dir, 'no', 'fam'), '--size', '1M']);
  t.is(nodir.exitInfo.code, 1);
  t.regex(nodir.stderr, /does not exist: create the directory first/);
});

test('stanza --plain takes the size from the file, or --size for a file still to be made', async (t) => {
  const file = path.join(t.context.dir(), 'fam');
  fs.writeFileSync(file, '');
  fs.truncateSync(file, 2 * MiB);
  const p = await t.context.run(['stanza', '--plain', file, '--id', 'famA']);
  t.deepEqual(p.exitInfo, { code: 0, signal: null }, p.stderr);
  t.true(p.stdout.includes(`memory-backend-file,id=famA,mem-path=${file},size=${2 * MiB},share=on -device ivshmem-plain,memdev=famA`), p.stdout);
  const later = await t.context.run(['stanza', '--plain', '/dev/shm/famez-not-yet', '--size', '1G']);
  t.is(later.exitInfo.code, 0, later.stderr);
  t.true(later.stdout.includes("<shmem name='famez-not-yet'>"), "libvirt's own element for a /dev/shm file");
  const missing = await t.context.run(['stanza', '--plain', path.join(t.context.dir(), 'nope')]);
  t.is(missing.exitInfo.code, 2);
  t.regex(missing.stderr, /does not exist: give --size SIZE, or create it with 'famez fam create/);
  const mixed = await t.context.run(['stanza', '--plain', file, '-S', '/tmp/s']);
  t.is(mixed.exitInfo.code, 2);
  t.regex(mixed.stderr, /--plain is memory only/);
});
