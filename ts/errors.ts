// The one base of famez's errors: a message a person can act on and a code a
// program can test (`err.code === 'EBUSY'`), stable across releases. Each
// module derives its own class (UsageError, ServerError, RingCorrupt, ...)
// for `instanceof` and a `name`, and narrows `C` to the codes it throws.
export class FamezError<C extends string = string> extends Error {
  constructor(
    readonly code: C,
    message: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}
