// The two CRCs of an explicit Gen-Z packet (genz-packets.md, "CRCs"). PCRC
// guards only VC and LEN so a receiver can trust LEN before it has the whole
// packet; ECRC guards everything else. Both are reflected, table driven; both
// sit on the hot path of every packet sent or checked, so PCRC is one lookup
// in a table of all 4096 inputs and ECRC goes eight bytes at a time.

/** PCRC nibble table: reflected CRC-6, polynomial 0x2f (0x3d reflected). */
const PCRC_NIBBLE = [0x00, 0x16, 0x2c, 0x3a, 0x23, 0x35, 0x0f, 0x19, 0x3d, 0x2b, 0x11, 0x07, 0x1e, 0x08, 0x32, 0x24];

/** The PCRC of a 12-bit `VC << 7 | LEN`, four bits at a time, lowest nibble
 * first; initial value and final XOR 0x3f. */
function pcrcOf(data: number): number {
  let crc = 0x3f;
  for (let shift = 0; shift < 12; shift += 4) {
    crc = PCRC_NIBBLE[(crc ^ (data >>> shift)) & 0x0f]! ^ (crc >>> 4);
  }
  return (crc ^ 0x3f) & 0x3f;
}

/** Every PCRC there is: 12 bits of input make 4 KiB of table. */
const PCRC_TABLE = (() => {
  const table = new Uint8Array(1 << 12);
  for (let data = 0; data < table.length; data++) table[data] = pcrcOf(data);
  return table;
})();

/** The 6-bit PCRC of the 12-bit value `VC << 7 | LEN`. */
export function pcrc(VC: number, LEN: number): number {
  return PCRC_TABLE[((VC & 0x1f) << 7) | (LEN & 0x7f)]!;
}

/** 0x5bc4f5 with its 24 bits reversed, for the right-shifting form. */
const ECRC_POLY_REFLECTED = reflect24(0x5bc4f5);

function reflect24(value: number): number {
  let out = 0;
  for (let bit = 0; bit < 24; bit++) if (value & (1 << bit)) out |= 1 << (23 - bit);
  return out;
}

/** Slicing-by-8 tables, one Uint32Array of 8 x 256: entry k * 256 + n is the
 * register after byte n and then k zero bytes, from a zero register. Row 0 is
 * the usual byte-at-a-time table. Because the register (24 bits) is narrower
 * than a dword, XORing it into the first dword of a block and looking up each
 * of the eight bytes in its row gives the register after the block: the
 * lookups are independent, where the byte-at-a-time form is a chain of them. */
const ECRC_TABLES = (() => {
  const table = new Uint32Array(8 * 256);
  for (let n = 0; n < 256; n++) {
    let crc = n;
    for (let k = 0; k < 8; k++) crc = crc & 1 ? (crc >>> 1) ^ ECRC_POLY_REFLECTED : crc >>> 1;
    table[n] = crc;
  }
  for (let n = 0; n < 256; n++) {
    for (let k = 1; k < 8; k++) {
      const prev = table[(k - 1) * 256 + n]!;
      table[k * 256 + n] = table[prev & 0xff]! ^ (prev >>> 8);
    }
  }
  return table;
})();

/** The 24-bit ECRC of `bytes`: reflected CRC-24, polynomial 0x5bc4f5,
 * initial value and final XOR 0xffffff. For a packet, pass every byte but
 * the top three of its last dword. */
export function ecrc(bytes: Uint8Array): number {
  return ecrcTo(bytes, bytes.length);
}

/** The ECRC of `bytes[0..end)`, for a caller that would otherwise make a
 * subarray just to say where to stop. */
export function ecrcTo(bytes: Uint8Array, end: number): number {
  return ecrcRange(bytes, 0, end);
}

/** The ECRC of `bytes[start..end)`: a packet among others in one buffer. */
export function ecrcRange(bytes: Uint8Array, start: number, end: number): number {
  const t = ECRC_TABLES;
  const n = Math.min(end, bytes.length);
  let crc = 0xffffff;
  let i = start;
  for (const end = n - 7; i < end; i += 8) {
    const lo = crc ^ (bytes[i]! | (bytes[i + 1]! << 8) | (bytes[i + 2]! << 16) | (bytes[i + 3]! << 24));
    crc =
      t[0x700 + (lo & 0xff)]! ^
      t[0x600 + ((lo >>> 8) & 0xff)]! ^
      t[0x500 + ((lo >>> 16) & 0xff)]! ^
      t[0x400 + (lo >>> 24)]! ^
      t[0x300 + bytes[i + 4]!]! ^
      t[0x200 + bytes[i + 5]!]! ^
      t[0x100 + bytes[i + 6]!]! ^
      t[bytes[i + 7]!]!;
  }
  for (; i < n; i++) crc = t[(crc ^ bytes[i]!) & 0xff]! ^ (crc >>> 8);
  return (crc ^ 0xffffff) & 0xffffff;
}
