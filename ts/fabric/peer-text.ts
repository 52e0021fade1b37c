// Small pure helpers of the fabric client: message text, nodenames, and
// why slot 0 describes no mailbox.
import * as os from 'node:os';

import type { MailboxGlobals } from '../native.js';
import { toBytes, type TextMessage } from '../genz/text.js';
import { BUF_OFFSET, SLOT_SIZE as SLOTSIZE } from '../layout.generated.js';
import { MAX_NODENAME } from './peer-types.js';

const DECODER = new TextDecoder('utf-8');

export function textOf(bytes: Uint8Array): string {
  let end = bytes.length;
  while (end > 0 && bytes[end - 1] === 0) end--;
  return DECODER.decode(bytes.subarray(0, end));
}

/** Why FAME-Z's five globals (slot 0) describe no mailbox in an object of
 * `size` bytes, naming the values found; null when they do describe one. */
export function mailboxProblem(g: MailboxGlobals, size: number): string | null {
  const found = `globals slotsize=${g.slotsize}, buf_offset=${g.bufOffset}, nClients=${g.nClients}, nEvents=${g.nEvents}, server_id=${g.serverId}`;
  if (g.slotsize === 0 && g.bufOffset === 0 && g.nClients === 0 && g.nEvents === 0 && g.serverId === 0) {
    return `${found}, all zero: a famez serve --silent or a stock ivshmem server, or a fabric whose mailbox a peer wiped`;
  }
  const why =
    g.slotsize !== SLOTSIZE
      ? `slotsize is not ${SLOTSIZE}`
      : g.bufOffset !== BUF_OFFSET
        ? `buf_offset is not ${BUF_OFFSET}`
        : g.nClients < 1
          ? 'nClients is below 1'
          : g.nEvents !== g.nClients + 2
            ? 'nEvents is not nClients + 2'
            : g.serverId !== g.nClients + 1
              ? 'server_id is not nClients + 1'
              : (g.serverId + 1) * SLOTSIZE > size
                ? `${g.serverId + 1} slots do not fit in ${size} bytes`
                : null;
  return why === null ? null : `${found}: ${why} (a damaged mailbox, or not FAME-Z's)`;
}

/** A nodename (written by its peer) fit for one log line. */
export function printable(name: string): string {
  return JSON.stringify(name);
}

/** `name` cut to at most 31 bytes of UTF-8 (whole characters). */
export function fitNodename(name: string): string {
  let out = '';
  let bytes = 0;
  for (const ch of name) {
    const n = Buffer.byteLength(ch);
    if (bytes + n > MAX_NODENAME) break;
    out += ch;
    bytes += n;
  }
  return out;
}

export function defaultNodename(id: number): string {
  const host = (os.hostname().split('.')[0] || 'host').replace(/\s+/g, '');
  const suffix = `-${id}`;
  return fitNodename(host.slice(0, MAX_NODENAME - suffix.length)) + suffix;
}

export function encodeMessage(message: string | TextMessage | Uint8Array): Uint8Array {
  if (typeof message === 'string') return Buffer.from(message, 'utf8');
  if (message instanceof Uint8Array) return message;
  return toBytes(message);
}

