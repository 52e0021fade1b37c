// famez's version, from its package.json (beside dist/ and ts/ alike).
import * as fs from 'node:fs';
import * as path from 'node:path';

let cached: string | null = null;

export function famezVersion(): string {
  cached ??= (JSON.parse(fs.readFileSync(path.resolve(__dirname, '..', 'package.json'), 'utf8')) as { version: string }).version;
  return cached;
}
