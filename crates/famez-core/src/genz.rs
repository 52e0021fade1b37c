//! The two CRCs of an explicit Gen-Z packet (docs/genz-packets.md, "CRCs"),
//! for packets laid end to end in one buffer: a message's pieces as a peer
//! hands them to its switch, or as a switch checks them. The TypeScript
//! codec (ts/genz/crc.ts) is the reference; this is the same arithmetic
//! for the hot path, where one call covers every packet of a message.
//!
//! PCRC is a reflected CRC-6 (polynomial 0x2f, initial value and final XOR
//! 0x3f) over the 12 bits `VC << 7 | LEN`; ECRC a reflected CRC-24
//! (polynomial 0x5bc4f5, initial value and final XOR 0xffffff) over every
//! byte of the packet but the top three of its last dword, where it goes.
//! A packet's length is LEN dwords, LEN from dword 0 (bits 7:5 and 15:12).

/// 0x5bc4f5 with its 24 bits reversed, for the right-shifting form.
const ECRC_POLY_REFLECTED: u32 = reflect24(0x5b_c4f5);

const fn reflect24(value: u32) -> u32 {
    let mut out = 0;
    let mut bit = 0;
    while bit < 24 {
        if value & (1 << bit) != 0 {
            out |= 1 << (23 - bit);
        }
        bit += 1;
    }
    out
}

/// Slicing-by-8: row k, entry n is the register after byte n and then k
/// zero bytes, from a zero register (row 0 the usual byte-at-a-time table).
const ECRC_TABLES: [[u32; 256]; 8] = ecrc_tables();

const fn ecrc_tables() -> [[u32; 256]; 8] {
    let mut t = [[0u32; 256]; 8];
    let mut n = 0;
    while n < 256 {
        let mut crc = n as u32;
        let mut k = 0;
        while k < 8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ ECRC_POLY_REFLECTED } else { crc >> 1 };
            k += 1;
        }
        t[0][n] = crc;
        n += 1;
    }
    let mut k = 1;
    while k < 8 {
        let mut n = 0;
        while n < 256 {
            let prev = t[k - 1][n];
            t[k][n] = t[0][(prev & 0xff) as usize] ^ (prev >> 8);
            n += 1;
        }
        k += 1;
    }
    t
}

/// The 24-bit ECRC of `bytes`.
pub fn ecrc(bytes: &[u8]) -> u32 {
    let t = &ECRC_TABLES;
    let mut crc: u32 = 0xff_ffff;
    let mut blocks = bytes.chunks_exact(8);
    for b in &mut blocks {
        // The register (24 bits) is narrower than a dword: XOR it into the
        // block's first dword and look up all eight bytes at once.
        let lo = crc ^ u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        crc = t[7][(lo & 0xff) as usize]
            ^ t[6][((lo >> 8) & 0xff) as usize]
            ^ t[5][((lo >> 16) & 0xff) as usize]
            ^ t[4][(lo >> 24) as usize]
            ^ t[3][b[4] as usize]
            ^ t[2][b[5] as usize]
            ^ t[1][b[6] as usize]
            ^ t[0][b[7] as usize];
    }
    for &b in blocks.remainder() {
        crc = t[0][((crc ^ u32::from(b)) & 0xff) as usize] ^ (crc >> 8);
    }
    (crc ^ 0xff_ffff) & 0xff_ffff
}

/// The 6-bit PCRC of `VC << 7 | LEN` (VC 5 bits, LEN 7), a nibble at a time.
pub fn pcrc(vc: u32, len: u32) -> u32 {
    const NIBBLE: [u32; 16] =
        [0x00, 0x16, 0x2c, 0x3a, 0x23, 0x35, 0x0f, 0x19, 0x3d, 0x2b, 0x11, 0x07, 0x1e, 0x08, 0x32, 0x24];
    let data = ((vc & 0x1f) << 7) | (len & 0x7f);
    let mut crc = 0x3f;
    for shift in [0, 4, 8] {
        crc = NIBBLE[((crc ^ (data >> shift)) & 0x0f) as usize] ^ (crc >> 4);
    }
    (crc ^ 0x3f) & 0x3f
}

/// The smallest explicit packet: four dwords.
const MIN_PACKET: usize = 16;

/// The length in bytes of the packet at the start of `bytes`, from its LEN;
/// None when fewer than two bytes are left.
fn packet_bytes(bytes: &[u8]) -> Option<usize> {
    let (&b0, &b1) = (bytes.first()?, bytes.get(1)?);
    Some((usize::from(b0 >> 5) | (usize::from(b1 >> 4) << 3)) * 4)
}

/// Why packets laid end to end do not check out, and where.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The bytes at `at` are no whole packet: LEN is under four dwords, or
    /// runs past the end.
    Tiling { at: usize },
    /// The packet at `at` has a PCRC that does not match its VC and LEN.
    Pcrc { at: usize },
    /// The packet at `at` has an ECRC that does not match it.
    Ecrc { at: usize },
}

/// The packets of `bytes` and their lengths, one after another by LEN.
fn packets(bytes: &[u8]) -> impl Iterator<Item = Result<(usize, usize), Fault>> + '_ {
    let mut at = 0;
    std::iter::from_fn(move || {
        if at >= bytes.len() {
            return None;
        }
        let n = packet_bytes(&bytes[at..]).unwrap_or(0);
        if n < MIN_PACKET || at + n > bytes.len() {
            let bad = at;
            at = bytes.len();
            return Some(Err(Fault::Tiling { at: bad }));
        }
        let here = at;
        at += n;
        Some(Ok((here, n)))
    })
}

/// Checks every packet of `bytes` (packets end to end, as LEN lays them):
/// the number of packets, or the first fault. Empty bytes hold no packet.
pub fn check(bytes: &[u8]) -> Result<usize, Fault> {
    let mut count = 0;
    for p in packets(bytes) {
        let (at, n) = p?;
        let packet = &bytes[at..at + n];
        let d0 = u32::from_le_bytes([packet[0], packet[1], packet[2], packet[3]]);
        let len = (d0 >> 5) & 0x7 | ((d0 >> 12) & 0xf) << 3;
        if d0 >> 26 != pcrc((d0 >> 19) & 0x1f, len) {
            return Err(Fault::Pcrc { at });
        }
        let sum = u32::from(packet[n - 3]) | u32::from(packet[n - 2]) << 8 | u32::from(packet[n - 1]) << 16;
        if sum != ecrc(&packet[..n - 3]) {
            return Err(Fault::Ecrc { at });
        }
        count += 1;
    }
    Ok(count)
}

/// Writes the ECRC of every packet of `bytes` (end to end, as LEN lays
/// them) into its last three bytes: the number of packets sealed, or where
/// the bytes stop being whole packets (nothing after that is written).
pub fn seal(bytes: &mut [u8]) -> Result<usize, Fault> {
    let mut spans = Vec::new();
    for p in packets(bytes) {
        spans.push(p?);
    }
    for &(at, n) in &spans {
        let sum = ecrc(&bytes[at..at + n - 3]);
        bytes[at + n - 3..at + n].copy_from_slice(&sum.to_le_bytes()[..3]);
    }
    Ok(spans.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bit-at-a-time definition the tables are built from.
    fn ecrc_bitwise(bytes: &[u8]) -> u32 {
        let mut crc: u32 = 0xff_ffff;
        for &b in bytes {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 != 0 { (crc >> 1) ^ ECRC_POLY_REFLECTED } else { crc >> 1 };
            }
        }
        (crc ^ 0xff_ffff) & 0xff_ffff
    }

    /// A packet of `dwords` dwords (VC 0), its PCRC right, its ECRC zero.
    fn packet(dwords: usize, fill: u8) -> Vec<u8> {
        let mut p = vec![fill; dwords * 4];
        let len = dwords as u32;
        let d0 =
            (u32::from_le_bytes([p[0], p[1], p[2], p[3]]) & !(0x7 << 5) & !(0xf << 12) & !(0x1f << 19) & !(0x3f << 26))
                | (len & 0x7) << 5
                | ((len >> 3) & 0xf) << 12
                | pcrc(0, len) << 26;
        p[..4].copy_from_slice(&d0.to_le_bytes());
        let n = p.len();
        p[n - 3..].fill(0);
        p
    }

    #[test]
    fn ecrc_slicing_is_the_bitwise_crc_for_every_length_and_alignment() {
        let data: Vec<u8> = (0..600u32).map(|i| (i * 131 + 7) as u8).collect();
        for start in 0..9 {
            for end in start..data.len() {
                assert_eq!(ecrc(&data[start..end]), ecrc_bitwise(&data[start..end]), "{start}..{end}");
            }
        }
    }

    #[test]
    fn pcrc_is_the_nibble_definition_bit_by_bit() {
        // Reflected CRC-6, polynomial 0x2f (0x3d reflected), init and final XOR 0x3f.
        for data in 0..(1u32 << 12) {
            let mut crc = 0x3f;
            for bit in 0..12 {
                let b = (data >> bit) & 1;
                crc = if (crc ^ b) & 1 != 0 { (crc >> 1) ^ 0x3d } else { crc >> 1 };
            }
            assert_eq!(pcrc(data >> 7, data & 0x7f), (crc ^ 0x3f) & 0x3f, "{data:#x}");
        }
    }

    #[test]
    fn seal_then_check_counts_every_packet_and_finds_each_corruption() {
        let mut run = Vec::new();
        for (dwords, fill) in [(7, 1u8), (127, 2), (4, 3), (20, 4)] {
            run.extend(packet(dwords, fill));
        }
        assert_eq!(check(&run), Err(Fault::Ecrc { at: 0 }));
        assert_eq!(seal(&mut run), Ok(4));
        assert_eq!(check(&run), Ok(4));
        // A flipped payload bit: that packet's ECRC.
        let mut bad = run.clone();
        bad[28 + 30] ^= 0x10;
        assert_eq!(check(&bad), Err(Fault::Ecrc { at: 28 }));
        // A flipped LEN bit: its PCRC.
        let mut bad = run.clone();
        bad[28] ^= 0x20;
        assert_eq!(check(&bad), Err(Fault::Pcrc { at: 28 }));
        // Cut short: the last packet runs past the end.
        assert_eq!(check(&run[..run.len() - 4]), Err(Fault::Tiling { at: run.len() - 80 }));
        assert_eq!(check(&[]), Ok(0));
        assert_eq!(check(&[0x20]), Err(Fault::Tiling { at: 0 }));
    }

    #[test]
    fn seal_writes_nothing_when_the_bytes_are_not_whole_packets() {
        let mut run = packet(7, 9);
        run.extend([0u8; 3]);
        let before = run.clone();
        assert_eq!(seal(&mut run), Err(Fault::Tiling { at: 28 }));
        assert_eq!(run, before);
    }
}
