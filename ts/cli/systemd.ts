// `famez serve` as a systemd Type=notify service (contrib/famez.service,
// docs/systemd.md): READY=1 once the socket listens, STOPPING=1 when it
// stops, and WATCHDOG=1 keep-alives when the unit sets WatchdogSec=. Each
// is a datagram to $NOTIFY_SOCKET sent by the binding's sdNotify (Node
// cannot send UNIX datagrams); without NOTIFY_SOCKET nothing is sent.
import { errorText, sdNotify } from '../native.js';

/** Why the last notification of each kind failed, so that a failure that
 * repeats (a watchdog keep-alive every few seconds) is one line, not one
 * line per keep-alive. */
const failed = new Map<string, string>();

/** Sends `state`; a failure is a line on stderr, never an exception: the
 * server goes on serving (a systemd waiting for READY=1 times out and
 * says so in its journal). True when sent. */
export function notify(state: string): boolean {
  const kind = state.split('=', 1)[0];
  try {
    const sent = sdNotify(state);
    failed.delete(kind);
    return sent;
  } catch (e) {
    const why = errorText(e);
    if (failed.get(kind) !== why) process.stderr.write(`famez serve: cannot notify systemd (${kind}): ${why}\n`);
    failed.set(kind, why);
    return false;
  }
}

let watchdog: NodeJS.Timeout | null = null;

/** READY=1 and `status` (shown by systemctl status). `mainPid`: the
 * process that is the service from now on, when it is not this one (the
 * detached server of --daemon: this process, the one systemd started,
 * tells it before it exits). Starts the watchdog keep-alives when systemd
 * asks this process for them. */
export function notifyReady(status: string, mainPid?: number): void {
  notify(`${mainPid === undefined ? '' : `MAINPID=${mainPid}\n`}READY=1\nSTATUS=${oneLine(status)}`);
  if (mainPid === undefined) startWatchdog();
}

/** STOPPING=1 and `status`; stops the keep-alives. */
export function notifyStopping(status: string): void {
  if (watchdog) clearInterval(watchdog);
  watchdog = null;
  notify(`STOPPING=1\nSTATUS=${oneLine(status)}`);
}

/** With WatchdogSec= systemd sets WATCHDOG_USEC (and WATCHDOG_PID, the
 * process it expects them from) and restarts a service that sends no
 * WATCHDOG=1 for that long: they are sent from the event loop at half the
 * interval, as sd_watchdog_enabled(3) advises, so a server whose loop is
 * stuck stops sending them. The timer does not keep the process alive. */
function startWatchdog(): void {
  const usec = Number(process.env.WATCHDOG_USEC);
  const pid = process.env.WATCHDOG_PID;
  if (watchdog || !Number.isSafeInteger(usec) || usec <= 0) return;
  if (pid !== undefined && pid !== '' && Number(pid) !== process.pid) return;
  const ms = Math.max(1, Math.floor(usec / 2000));
  notify('WATCHDOG=1');
  watchdog = setInterval(() => notify('WATCHDOG=1'), ms);
  watchdog.unref();
}

/** One line: a STATUS value ends at a newline. */
function oneLine(s: string): string {
  return s.replace(/[\r\n]+/g, ' ');
}
