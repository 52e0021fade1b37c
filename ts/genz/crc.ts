// The two CRCs of an explicit Gen-Z packet (genz-packets.md, "CRCs"). PCRC
// guards only VC and LEN so a receiver can trust LEN before it has the whole
// packet; ECRC guards everything else. Both are reflected, table driven.

/** PCRC nibble table: reflected CRC-6, polynomial 0x2f (0x3d reflected). */
const PCRC_TABLE = [0x00, 0x16, 0x2c, 0x3a, 0x23, 0x35, 0x0f, 0x19, 0x3d, 0x2b, 0x11, 0x07, 0x1e, 0x08, 0x32, 0x24];

/** The 6-bit PCRC of the 12-bit value `VC << 7 | LEN`, four bits at a time,
 * lowest nibble first; initial value and final XOR 0x3f. */
export function pcrc(VC: number, LEN: number): number {
  const data = ((VC & 0x1f) << 7) | (LEN & 0x7f);
  let crc = 0x3f;
  for (let shift = 0; shift < 12; shift += 4) {
    crc = PCRC_TABLE[(crc ^ (data >>> shift)) & 0x0f]! ^ (crc >>> 4);
  }
  return (crc ^ 0x3f) & 0x3f;
}

/** 0x5bc4f5 with its 24 bits reversed, for the right-shifting form. */
const ECRC_POLY_REFLECTED = reflect24(0x5bc4f5);

function reflect24(value: number): number {
  let out = 0;
  for (let bit = 0; bit < 24; bit++) if (value & (1 << bit)) out |= 1 << (23 - bit);
  return out;
}

const ECRC_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let crc = n;
    for (let k = 0; k < 8; k++) crc = crc & 1 ? (crc >>> 1) ^ ECRC_POLY_REFLECTED : crc >>> 1;
    table[n] = crc;
  }
  return table;
})();

/** The 24-bit ECRC of `bytes`: reflected CRC-24, polynomial 0x5bc4f5,
 * initial value and final XOR 0xffffff. For a packet, pass every byte but
 * the top three of its last dword. */
export function ecrc(bytes: Uint8Array): number {
  let crc = 0xffffff;
  for (let i = 0; i < bytes.length; i++) crc = ECRC_TABLE[(crc ^ bytes[i]!) & 0xff]! ^ (crc >>> 8);
  return (crc ^ 0xffffff) & 0xffffff;
}
