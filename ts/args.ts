// Command lines: every famez command (serve, client, stanza, bench) reads
// its flags through parseFlags, Node's util.parseArgs underneath, and every
// refusal is one UsageError, one line a person can act on.
import { parseArgs } from 'node:util';

import { FamezError } from './errors.js';

/** A command line that cannot work: the CLI prints it and exits 2. */
export class UsageError extends FamezError<'EUSAGE'> {
  override name = 'UsageError';
  constructor(message: string) {
    super('EUSAGE', message);
  }
}

/** `--version` on a command's line: not an error, but the end of parsing
 * all the same. The CLI's entry point catches it, prints famez's version
 * and exits 0, so every command has the flag without declaring it. */
export class VersionRequest extends Error {
  override name = 'VersionRequest';
  constructor() {
    super('--version');
  }
}

/** The flags a command takes, as util.parseArgs spells them. */
export type FlagSpecs = Record<string, { type: 'string' | 'boolean'; short?: string }>;

/** One flag of a command line, in argv order: a string flag carries its
 * value, a boolean one null. */
export type Flag<S extends FlagSpecs> = {
  [N in keyof S & string]: { name: N; value: S[N]['type'] extends 'string' ? string : null };
}[keyof S & string];

/** The flags of `argv` in the order given, repeats included, in getopt's
 * forms: `-S x`, `-Sx`, `-vF`, `--size x`, `--size=x`. Unknown flags, a
 * missing value, a value given to a boolean flag and stray arguments are
 * UsageErrors. `--version`, unless the command declares its own, throws
 * VersionRequest.
 *
 * util.parseArgs reads the command line (its tokens keep the order); the
 * checks strict mode makes are made here over the tokens, all but one:
 * strict mode refuses a value that starts with a dash (`-S -v`), which
 * getopt, and so the stock ivshmem-server, takes as the value. */
export function parseFlags<const S extends FlagSpecs>(argv: readonly string[], specs: S): Array<Flag<S>> {
  const { tokens } = parseArgs({ args: [...argv], options: specs, strict: false, allowPositionals: true, tokens: true });
  const flags: Array<{ name: string; value: string | null }> = [];
  for (const token of tokens) {
    if (token.kind === 'positional') throw new UsageError(`unexpected argument '${token.value}' (see --help)`);
    if (token.kind === 'option-terminator') throw new UsageError(`unknown option '--' (see --help)`);
    if (token.rawName === '--version' && !Object.hasOwn(specs, 'version')) throw new VersionRequest();
    const spec = Object.hasOwn(specs, token.name) ? specs[token.name] : undefined;
    // parseArgs names an unknown -x 'x': known only by its own spelling.
    if (!spec || (token.rawName !== `--${token.name}` && token.rawName !== `-${spec.short}`)) {
      throw new UsageError(`unknown option '${token.rawName}' (see --help)`);
    }
    if (spec.type === 'string') {
      if (token.value === undefined) throw new UsageError(`${token.rawName} needs a value`);
      flags.push({ name: token.name, value: token.value });
    } else {
      if (token.value !== undefined) throw new UsageError(`${token.rawName} takes no value`);
      flags.push({ name: token.name, value: null });
    }
  }
  return flags as Array<Flag<S>>;
}
