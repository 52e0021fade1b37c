// The switch's answer to "who is on the other switches" (docs/multi-host.md,
// "Remote peers"), for peers that speak to it only through the mailbox: a
// peer sends the text `famez-nodes? PAGE` to the switch and gets back
// `famez-nodes PAGE NEXT JSON`, where JSON is an array of
// [GCID "SID:CID", nodename, C-Class, hops] and NEXT the page to ask for
// next ('-' after the last). Each answer fits one slot message (383 bytes).
// Pure: it formats and parses, nothing else.
import type { RemoteNode } from './topology.js';

export const ASK = 'famez-nodes?';
export const ANSWER = 'famez-nodes';
/** An answer's limit: one slot message. */
const LIMIT = 383;

export type DirectoryEntry = [gcid: string, nodename: string, cclass: string, hops: number];

const utf8 = (s: string) => Buffer.byteLength(s);

/** The question for page `page`. */
export function ask(page: number): string {
  return `${ASK} ${page}`;
}

/** The page a question asks for, or null when `text` is not one. */
export function asked(text: string): number | null {
  const m = /^famez-nodes\? (\d{1,6})$/.exec(text.trim());
  return m ? Number(m[1]) : null;
}

/** A node's entry; control characters become '?' (an entry then always fits a page). */
function entry(n: RemoteNode): DirectoryEntry {
  // eslint-disable-next-line no-control-regex
  const clean = (s: string) => s.replace(/[\u0000-\u001f\u007f]/g, '?');
  return [`${n.sid}:${n.cid}`, clean(n.nodename), clean(n.cclass), n.hops];
}

/** Page `page` of `nodes`: the entries from where page - 1 ended, as many
 * as fit. Pages are cut the same way every time. */
export function page(nodes: readonly RemoteNode[], page: number): string {
  let start = 0;
  for (let p = 0; ; p++) {
    const entries: DirectoryEntry[] = [];
    let end = start;
    for (; end < nodes.length; end++) {
      const e = entry(nodes[end]);
      // Room for the header with a 6-digit NEXT.
      if (entries.length > 0 && utf8(`${ANSWER} ${page} 999999 ${JSON.stringify([...entries, e])}`) > LIMIT) break;
      entries.push(e);
    }
    if (p === page) return `${ANSWER} ${page} ${end < nodes.length ? String(page + 1) : '-'} ${JSON.stringify(entries)}`;
    if (end >= nodes.length) return `${ANSWER} ${page} - []`;
    start = end;
  }
}

/** An answer to the question for `page`: its entries and the next page
 * (null after the last); null when `text` is no such answer. */
export function parsePage(text: string, page: number): { entries: DirectoryEntry[]; next: number | null } | null {
  const prefix = `${ANSWER} ${page} `;
  if (!text.startsWith(prefix)) return null;
  const rest = text.slice(prefix.length);
  const sp = rest.indexOf(' ');
  if (sp < 0) return null;
  const nextText = rest.slice(0, sp);
  let entries: unknown;
  try {
    entries = JSON.parse(rest.slice(sp + 1));
  } catch {
    return null;
  }
  const ok = (e: unknown): e is DirectoryEntry =>
    Array.isArray(e) && e.length === 4 && typeof e[0] === 'string' && /^\d+:\d+$/.test(e[0]) && typeof e[1] === 'string' && typeof e[2] === 'string' && typeof e[3] === 'number';
  if (!Array.isArray(entries) || !entries.every(ok)) return null;
  if (nextText !== '-' && !/^\d+$/.test(nextText)) return null;
  return { entries, next: nextText === '-' ? null : Number(nextText) };
}
