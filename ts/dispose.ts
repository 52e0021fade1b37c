// Symbol.dispose and Symbol.asyncDispose, so that `using` and `await using`
// close famez's objects. Node defines both from 20.4 (and 18.18) as
// Symbol.for('nodejs.dispose') / Symbol.for('nodejs.asyncDispose') until
// V8 has them; an older Node gets the same symbols here, so the methods
// are found by Node's, TypeScript's and esbuild's `using` alike. Every
// module whose classes have such methods imports this first.
const symbols = Symbol as unknown as { dispose?: symbol; asyncDispose?: symbol };
symbols.dispose ??= Symbol.for('nodejs.dispose');
symbols.asyncDispose ??= Symbol.for('nodejs.asyncDispose');

export {};
