// AbortSignal support for every call that waits, as Node's own APIs do it:
// an already-aborted signal rejects at once, an abort rejects with the
// signal's reason (an AbortError DOMException unless the caller gave
// another, a TimeoutError for AbortSignal.timeout), and whatever was
// waiting is undone — every listener and timer a call added is removed
// whichever way it ends.

/** `signal` checked as an option: undefined, or an AbortSignal (else a
 * TypeError, as Node's APIs throw for a wrong `signal`). */
export function checkSignal(signal: unknown, where = 'options.signal'): AbortSignal | undefined {
  if (signal === undefined) return undefined;
  if (!(signal instanceof AbortSignal)) throw new TypeError(`${where} must be an AbortSignal, not ${signal === null ? 'null' : typeof signal}`);
  return signal;
}

const noop = (): void => undefined;

/** Calls `onAbort(reason)` once when `signal` aborts; when it already has,
 * on the next microtask (after the caller has set up what it undoes).
 * Returns what removes the listener: call it whichever way the wait ends. */
export function whenAborted(signal: AbortSignal | undefined, onAbort: (reason: unknown) => void): () => void {
  if (!signal) return noop;
  let live = true;
  if (signal.aborted) {
    queueMicrotask(() => {
      if (live) onAbort(signal.reason);
    });
    return () => {
      live = false;
    };
  }
  const listener = () => {
    live = false;
    onAbort(signal.reason);
  };
  signal.addEventListener('abort', listener, { once: true });
  return () => {
    live = false;
    signal.removeEventListener('abort', listener);
  };
}

/** `p`'s outcome, or the signal's reason as soon as it aborts (then
 * `onAbort` undoes the wait). The listener goes when either happens. */
export function raceAbort<T>(p: Promise<T>, signal: AbortSignal | undefined, onAbort: () => void = noop): Promise<T> {
  if (!signal) return p;
  if (signal.aborted) {
    onAbort();
    return Promise.reject(signal.reason);
  }
  return new Promise<T>((resolve, reject) => {
    const stop = whenAborted(signal, (reason) => {
      onAbort();
      reject(reason);
    });
    p.then(
      (v) => {
        stop();
        resolve(v);
      },
      (e: unknown) => {
        stop();
        reject(e);
      },
    );
  });
}

/** Waits `ms`; an abort ends the wait at once (its timer cleared) and
 * rejects with the signal's reason. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  if (signal?.aborted) return Promise.reject(signal.reason);
  return new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => {
      stop();
      resolve();
    }, ms);
    const stop = whenAborted(signal, (reason) => {
      clearTimeout(timer);
      reject(reason);
    });
  });
}
