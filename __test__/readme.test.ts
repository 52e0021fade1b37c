// The README's examples run as written. Every code block marked runnable
//
//   <!-- runnable -->                      the block alone
//   <!-- runnable: famez serve ARGS -->    with `famez serve ARGS` running
//   ```ts
//   ...
//   ```
//
// is written to a fresh temp dir as an ES module and run there by Node
// (under tsx), with TMPDIR set to that dir and, for the second form,
// FAMEZ_SOCKET set to the socket of the real server the test started in
// it; the block fails the test when it throws, exits non-zero or does not
// finish in time. `from 'famez'` is the only thing changed: it imports this
// checkout's ts/index.ts (the packaging test checks that the installed
// package exports the same names).
import * as fs from 'node:fs';
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';

import anyTest, { type TestFn } from 'ava';

import { ROOT, Scratch } from './helpers/serve.js';
import { LineProcess } from './helpers/wait.js';

const test = anyTest as TestFn<Scratch>;
const RUN_MS = 60_000;

test.beforeEach((t) => {
  t.context = new Scratch();
});
test.afterEach.always(async (t) => {
  await t.context.cleanup();
});

export interface RunnableBlock {
  /** 1-based line of the opening fence. */
  line: number;
  lang: string;
  code: string;
  /** `famez serve` arguments to run it against, or null for the block alone. */
  serve: string[] | null;
}

const MARK = /^<!--\s*runnable(?::\s*famez serve\s*(.*?))?\s*-->\s*$/;

/** The blocks of `markdown` marked runnable; throws when a mark is not
 * followed by a ts/js code block (a mark that runs nothing is a mistake). */
export function runnableBlocks(markdown: string): RunnableBlock[] {
  const lines = markdown.split('\n');
  const blocks: RunnableBlock[] = [];
  for (let i = 0; i < lines.length; i++) {
    const mark = MARK.exec(lines[i]);
    if (!mark) continue;
    const fence = /^```(ts|js|typescript|javascript)\b/.exec(lines[i + 1] ?? '');
    if (!fence) throw new Error(`README.md:${i + 1}: a runnable mark must be followed by a \`\`\`ts or \`\`\`js block`);
    const end = lines.findIndex((l, j) => j > i + 1 && /^```\s*$/.test(l));
    if (end < 0) throw new Error(`README.md:${i + 2}: the runnable block is never closed`);
    const serve = mark[1] === undefined ? null : mark[1].split(/\s+/).filter(Boolean);
    blocks.push({ line: i + 2, lang: fence[1], code: lines.slice(i + 2, end).join('\n'), serve });
    i = end;
  }
  return blocks;
}

const readme = fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8');
const blocks = runnableBlocks(readme);
const famez = pathToFileURL(path.join(ROOT, 'ts', 'index.ts')).href;
/** tsx's loader by path: the block runs in a temp dir with no node_modules. */
const tsx = pathToFileURL(path.join(ROOT, 'node_modules', 'tsx', 'dist', 'loader.mjs')).href;

test('the README marks its library examples runnable', (t) => {
  t.true(blocks.length >= 2, `${blocks.length} runnable block(s)`);
  t.true(
    blocks.some((b) => /Client\.connect/.test(b.code)),
    'the Client example is one',
  );
  t.true(
    blocks.some((b) => /FabricClient\.connect/.test(b.code)),
    'the FabricClient example is one',
  );
});

test('a runnable mark without a code block after it is refused', (t) => {
  t.throws(() => runnableBlocks('<!-- runnable -->\ntext\n'), { message: /must be followed by/ });
  t.throws(() => runnableBlocks('<!-- runnable -->\n```ts\nnever closed\n'), { message: /never closed/ });
  t.deepEqual(runnableBlocks('<!-- runnable: famez serve --max-peers 2 -->\n```ts\nx;\n```\n'), [{ line: 2, lang: 'ts', code: 'x;', serve: ['--max-peers', '2'] }]);
});

for (const block of blocks) {
  const first = block.code.split('\n').find((l) => l.trim() && !l.startsWith('import')) ?? '';
  test(`README.md:${block.line} runs without an error${block.serve ? ` against famez serve ${block.serve.join(' ')}` : ''}: ${first.trim().slice(0, 60)}`, async (t) => {
    const dir = t.context.dir();
    const env: NodeJS.ProcessEnv = { ...process.env, TMPDIR: dir };
    if (block.serve) {
      const sock = path.join(dir, 'famez.sock');
      await t.context.serve(['-S', sock, '--memfd', '--no-http', ...block.serve]);
      env.FAMEZ_SOCKET = sock;
    }
    const code = block.code.replace(/(from\s+|import\s*\(\s*)(['"])famez\2/g, (_m, pre: string, q: string) => `${pre}${q}${famez}${q}`);
    const file = path.join(dir, `readme-${block.line}.${block.lang.startsWith('j') ? 'mjs' : 'mts'}`);
    fs.writeFileSync(file, code);
    const proc = LineProcess.spawn(process.execPath, [`--import=${tsx}`, file], { cwd: dir, env, stdio: ['ignore', 'pipe', 'pipe'] });
    t.context.procs.push(proc);
    const exit = await proc.wait(RUN_MS);
    t.deepEqual(exit, { code: 0, signal: null }, proc.transcript);
    t.log(proc.stdout.trim());
  });
}
