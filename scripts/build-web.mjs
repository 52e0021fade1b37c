// Builds the web view (web/) into dist/web/: app.ts and what it imports
// (cytoscape, ts/observe/format.ts, the layout constants) bundled by
// esbuild into one app.js, with index.html and app.css beside it. Run by
// `npm run build:ts`; `famez serve` serves the result at /. Everything the
// page needs is in these three files: it works offline.
import { build } from 'esbuild';
import { copyFileSync, mkdirSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const out = join(root, 'dist', 'web');

rmSync(out, { recursive: true, force: true });
mkdirSync(out, { recursive: true });
await build({
  entryPoints: [join(root, 'web', 'app.ts')],
  outfile: join(out, 'app.js'),
  bundle: true,
  format: 'iife',
  platform: 'browser',
  target: ['chrome110', 'firefox110', 'safari16'],
  minify: true,
  legalComments: 'eof',
  logLevel: 'warning',
  tsconfig: join(root, 'web', 'tsconfig.json'),
});
for (const file of ['index.html', 'app.css']) copyFileSync(join(root, 'web', file), join(out, file));
