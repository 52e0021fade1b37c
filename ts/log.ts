// The one logging interface of the library: the shape of pino's logger
// (which the CLI uses), so a pino logger, or a child of one, can be passed
// as it is. Library classes take `logger` and print nothing without one.
//
// Every event is `logger.LEVEL(fields, message)`: the message is a sentence
// a person reads, the fields what a program filters on. Conventions:
//   event:    what happened ('connect', 'disconnect', 'refuse', 'drop',
//             'undelivered', 'reject', 'message', ...)
//   peer:     the peer's ID;  nodename: its nodename, when it has one
//   reason:   why (a disconnect, a refusal, a drop)
//   component: 'server' or 'switch' (set by child loggers)

export type LogLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace';

export const LOG_LEVELS: readonly LogLevel[] = ['fatal', 'error', 'warn', 'info', 'debug', 'trace'];

export type LogFields = Record<string, unknown>;

export interface LogFn {
  (message: string): void;
  (fields: LogFields, message: string): void;
}

export interface Logger {
  fatal: LogFn;
  error: LogFn;
  warn: LogFn;
  info: LogFn;
  debug: LogFn;
  trace: LogFn;
  /** A logger that adds `bindings` to every event. */
  child(bindings: LogFields): Logger;
  /** Whether events at `level` go anywhere (to skip building them). */
  isLevelEnabled?(level: LogLevel): boolean;
}

const nothing = (): void => undefined;

/** A logger that drops everything: the library's default. */
export const silentLogger: Logger = {
  fatal: nothing,
  error: nothing,
  warn: nothing,
  info: nothing,
  debug: nothing,
  trace: nothing,
  child: () => silentLogger,
  isLevelEnabled: () => false,
};

/** One event as a `functionLogger` hands it over. */
export interface LogEvent {
  level: LogLevel;
  message: string;
  /** The child bindings and the event's own fields. */
  fields: LogFields;
}

/** A logger that hands each event at `level` or more severe to `sink`:
 * for embedding famez in a program with its own logging, and for tests
 * that read what was logged. */
export function functionLogger(sink: (event: LogEvent) => void, level: LogLevel = 'info'): Logger {
  const rank = LOG_LEVELS.indexOf(level);
  const make = (bindings: LogFields): Logger => {
    const at = (l: LogLevel): LogFn => {
      if (LOG_LEVELS.indexOf(l) > rank) return nothing;
      return ((a: LogFields | string, b?: string) => {
        if (typeof a === 'string') sink({ level: l, message: a, fields: { ...bindings } });
        else sink({ level: l, message: b ?? '', fields: { ...bindings, ...a } });
      }) as LogFn;
    };
    return {
      fatal: at('fatal'),
      error: at('error'),
      warn: at('warn'),
      info: at('info'),
      debug: at('debug'),
      trace: at('trace'),
      child: (more) => make({ ...bindings, ...more }),
      isLevelEnabled: (l) => LOG_LEVELS.indexOf(l) <= rank,
    };
  };
  return make({});
}

/** A logger that hands each event's message, as one line, to `write`
 * (a test's array, a program's own printer). */
export function lineLogger(write: (line: string) => void, level: LogLevel = 'info'): Logger {
  return functionLogger((e) => write(e.message), level);
}
