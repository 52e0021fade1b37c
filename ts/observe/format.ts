// How the web view (web/app.ts) and `famez top` (ts/cli/top.ts) put the
// API's numbers and events into words. Pure and free of Node and of the
// DOM, so that both can use it (esbuild bundles it into the page); the
// shapes are the API's, from ./api-types.ts.
import type { ApiEvent } from './api-types.js';

/** An event of GET /api/v1/events. */
export type EventText = ApiEvent;

/** What a peer is drawn and listed as: the server's kind, and QEMU for a
 * peer whose C-Class says so (a QEMU that has not told its C-Class is a
 * 'Driverless QEMU' to the switch). */
export type PeerCategory = 'switch' | 'qemu' | 'client';

export function peerCategory(p: { kind: string; hardware: string }): PeerCategory {
  if (p.kind === 'switch') return 'switch';
  if (p.kind === 'qemu' || p.hardware === 'qemu') return 'qemu';
  return 'client';
}

/** 1536 -> "1.5 KiB"; exact below 1 KiB. */
export function formatBytes(n: number): string {
  if (!Number.isFinite(n)) return String(n);
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let v = n;
  let u = -1;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  const digits = v >= 100 || Number.isInteger(v) ? 0 : 1;
  return `${v.toFixed(digits)} ${units[u]}`;
}

/** 12345 -> "12,345". */
export function formatCount(n: number): string {
  return n.toLocaleString('en-US');
}

/** An ISO time as HH:MM:SS.mmm, local time. */
export function formatClock(iso: string): string {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  const p = (x: number, w = 2) => String(x).padStart(w, '0');
  return `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}.${p(d.getMilliseconds(), 3)}`;
}

/** Seconds as "3d 04:05:06" or "04:05". */
export function formatDuration(ms: number): string {
  const s = Math.max(0, Math.floor(ms / 1000));
  const p = (x: number) => String(x).padStart(2, '0');
  const days = Math.floor(s / 86400);
  const h = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  const clock = h || days ? `${p(h)}:${p(m)}:${p(s % 60)}` : `${p(m)}:${p(s % 60)}`;
  return days ? `${days}d ${clock}` : clock;
}

/** "alpha (1)", "peer 3" without a nodename. */
export function peerName(id: number | undefined, nodename?: string): string {
  if (id === undefined) return 'a peer';
  return nodename ? `${nodename} (${id})` : `peer ${id}`;
}

/** "SID 27 · CID 100", "" when neither is known. */
export function formatAddress(sid: number | null | undefined, cid: number | null | undefined): string {
  if (sid == null && cid == null) return '';
  return `SID ${sid ?? '?'} · CID ${cid ?? '?'}`;
}

/** One event as a line of text (without its time and type). */
export function describeEvent(e: EventText): string {
  const who = peerName(e.peer, e.nodename);
  switch (e.type) {
    case 'join':
      return `${who} joined${e.peers !== undefined ? ` (${e.peers} connected)` : ''}`;
    case 'leave':
      return `${who} left${e.reason ? `: ${e.reason}` : ''}${e.peers !== undefined ? ` (${e.peers} connected)` : ''}`;
    case 'refuse':
      return `a peer was refused${e.reason ? `: ${e.reason}` : ''}`;
    case 'link': {
      const parts = [e.link, e.cclass, formatAddress(e.sid, e.cid)].filter((x) => x);
      return `${who} link ${parts.join(', ')}`;
    }
    case 'message': {
      const arrow = e.direction === 'in' ? `${who} → switch` : `switch → ${who}`;
      const size = e.bytes !== undefined ? `, ${formatBytes(e.bytes)}` : '';
      const route = e.route ? ` by ${e.route}` : '';
      const text = e.text !== undefined ? `: “${e.text}”` : '';
      return `${arrow} ${e.kind ?? 'message'}${size}${route}${text}`;
    }
    case 'drop':
      return `${e.count ?? 1} message${e.count === 1 ? '' : 's'} for ${who} dropped${e.reason ? `: ${e.reason}` : ''}`;
    case 'undelivered':
      return e.reason ? `for ${who}: ${e.reason}` : `a message for ${who} was withdrawn untaken`;
    case 'reject':
      return `${who}'s message was rejected${e.reason ? `: ${e.reason}` : ''}`;
    case 'note':
      // Not the server's: a viewer's own remark (the server restarted).
      return e.reason ?? '';
    case 'skipped':
      return `${e.count ?? 0} event${e.count === 1 ? '' : 's'} not shown (too many at once, or read too slowly)`;
    default:
      return `${who}${e.reason ? `: ${e.reason}` : ''}`;
  }
}

/** Nodenames by peer ID, from the events and the peers seen, so that a
 * leave event (recorded once the name has gone with the peer's slot) can
 * still say who left. */
export class Nodenames {
  private readonly names = new Map<number, string>();

  note(id: number, nodename: string): void {
    if (nodename) this.names.set(id, nodename);
  }

  /** `e` with the departed peer's name added when it has none. */
  fill<T extends EventText>(e: T): T {
    if (e.peer === undefined) return e;
    if (e.nodename) {
      this.names.set(e.peer, e.nodename);
      return e;
    }
    const known = e.type === 'leave' ? this.names.get(e.peer) : undefined;
    return known ? { ...e, nodename: known } : e;
  }
}

/** A ring's fill as a whole percentage of its capacity, 0..100. */
export function fillPercent(used: number, capacity: number): number {
  if (!(capacity > 0)) return 0;
  return Math.min(100, Math.max(0, Math.round((used / capacity) * 100)));
}
