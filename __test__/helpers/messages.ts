// Deterministic test messages for the mailbox and ring bursts: message i
// starts with i as a little-endian u32, then bytes derived from i, with a
// length derived from i, so a receiver can check order and content alone.

/** Length of message i: 4..max, most of them short. */
export function messageLength(i: number, max: number): number {
  const h = Math.imul(i + 1, 0x9e3779b1) >>> 0;
  if (h % 97 === 0) return max;
  return 4 + (h % Math.min(max - 3, 1000));
}

/** Message i, at most `max` bytes (max >= 4). */
export function message(i: number, max: number): Buffer {
  const len = messageLength(i, max);
  const b = Buffer.allocUnsafe(len);
  b.writeUInt32LE(i >>> 0, 0);
  for (let k = 4; k < len; k++) b[k] = (i * 31 + k * 7) & 0xff;
  return b;
}

/** Why `m` is not message `i` (or null when it is). */
export function mismatch(m: Uint8Array, i: number, max: number): string | null {
  const want = message(i, max);
  if (m.length !== want.length) return `message ${i}: ${m.length} bytes, want ${want.length}`;
  const seq = Buffer.from(m.buffer, m.byteOffset, m.length).readUInt32LE(0);
  if (seq !== i) return `message ${i}: got sequence ${seq}`;
  if (Buffer.compare(Buffer.from(m.buffer, m.byteOffset, m.length), want) !== 0) return `message ${i}: content differs`;
  return null;
}
