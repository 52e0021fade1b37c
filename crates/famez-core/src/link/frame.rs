//! The link frame (docs/multi-host.md, "The link frame"), byte for byte as
//! ts/link/frame.ts has it: a 32-byte header (stream, sequence, ack,
//! credit, guarded by its own CRC) and, in a data frame, a unit of one or
//! more explicit Gen-Z packets end to end. A link message is a train of
//! frames. Pure: no I/O, no state.

use crate::genz;

/// "FZ" in bytes 0 and 1.
pub const MAGIC: u16 = 0x5a46;
/// 3: a data frame carries a unit; sequence numbers and credits count units.
pub const VERSION: u8 = 3;
pub const HEADER_BYTES: usize = 32;
/// The largest explicit Gen-Z packet: LEN is 7 bits of dwords.
pub const MAX_PACKET_BYTES: usize = 127 * 4;
/// The smallest: LEN 4.
pub const MIN_PACKET_BYTES: usize = 16;
/// The most bytes of packets one data frame carries.
pub const MAX_UNIT_BYTES: usize = 8192;
/// GCIDs are SID (16 bits) above CID (12 bits).
pub const GCID_LIMIT: u32 = 1 << 28;

const TYPE_HELLO: u8 = 1;
const TYPE_HEARTBEAT: u8 = 2;
const TYPE_DATA: u8 = 3;
const TYPE_ACK: u8 = 4;
const TYPE_PROBE: u8 = 5;
/// A hello's flag: its sender saw the receiver's hello on this connection.
const FLAG_SEEN: u8 = 0x01;
/// A data frame's flag: ack and credit are the reverse stream's ack.
const FLAG_ACK: u8 = 0x01;

/// One frame; a data frame's unit borrows the bytes it was decoded from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame<'a> {
    Hello { instance: u32, window: u32, seen: bool, source: u32 },
    Heartbeat,
    Data { source: u32, destination: u32, seq: u32, unit: &'a [u8], reverse: Option<(u32, u32)> },
    Ack { source: u32, destination: u32, ack: u32, credit: u32 },
    Probe { source: u32, destination: u32, seq: u32 },
}

impl Frame<'_> {
    /// The bytes it encodes to.
    pub fn len(&self) -> usize {
        HEADER_BYTES + if let Frame::Data { unit, .. } = self { unit.len() } else { 0 }
    }

    pub fn is_empty(&self) -> bool {
        false
    }
}

/// Why bytes are no frame: the same codes as ts/link/frame.ts's FrameError.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameCode {
    Trunc,
    Trailing,
    Magic,
    Version,
    Crc,
    Type,
    Field,
    Packet,
}

impl FrameCode {
    pub fn name(self) -> &'static str {
        match self {
            FrameCode::Trunc => "ETRUNC",
            FrameCode::Trailing => "ETRAILING",
            FrameCode::Magic => "EMAGIC",
            FrameCode::Version => "EVERSION",
            FrameCode::Crc => "ECRC",
            FrameCode::Type => "ETYPE",
            FrameCode::Field => "EFIELD",
            FrameCode::Packet => "EPACKET",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameError {
    pub code: FrameCode,
    pub message: String,
}

fn bad(code: FrameCode, message: String) -> FrameError {
    FrameError { code, message }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// LEN x 4 of the packet at `at`; 0 past the end.
fn len_bytes(b: &[u8], at: usize) -> usize {
    if at + 2 > b.len() {
        return 0;
    }
    (usize::from(b[at] >> 5) | (usize::from(b[at + 1] >> 4) << 3)) * 4
}

/// Why `bytes` is not one sound explicit Gen-Z packet, or None.
pub fn packet_fault(bytes: &[u8]) -> Option<String> {
    let n = bytes.len();
    if !(MIN_PACKET_BYTES..=MAX_PACKET_BYTES).contains(&n) || !n.is_multiple_of(4) {
        return Some(format!("{n} bytes is not a packet length (16..508, whole dwords)"));
    }
    let d0 = u32_at(bytes, 0);
    let len = ((d0 >> 5) & 0x7) | (((d0 >> 12) & 0xf) << 3);
    let vc = (d0 >> 19) & 0x1f;
    let pcrc = d0 >> 26;
    if pcrc != genz::pcrc(vc, len) {
        return Some(format!("PCRC 0x{pcrc:x} does not match VC {vc}, LEN {len}"));
    }
    if len as usize * 4 != n {
        return Some(format!("LEN {len} is {} bytes, the payload {n}", len * 4));
    }
    let sum = u32::from(bytes[n - 3]) | u32::from(bytes[n - 2]) << 8 | u32::from(bytes[n - 1]) << 16;
    if sum != genz::ecrc(&bytes[..n - 3]) {
        return Some(format!("ECRC 0x{sum:x} does not match the packet"));
    }
    None
}

/// Why `bytes` is not a sound unit (one or more packets end to end, tiling
/// it by their LEN, each sound, MAX_UNIT_BYTES at most), or None.
pub fn unit_fault(bytes: &[u8]) -> Option<String> {
    let n = bytes.len();
    if (2..=MAX_PACKET_BYTES).contains(&n) && len_bytes(bytes, 0) == n {
        return packet_fault(bytes);
    }
    if n > MAX_UNIT_BYTES {
        return Some(format!("{n} bytes of packets is more than a unit ({MAX_UNIT_BYTES})"));
    }
    if n < MIN_PACKET_BYTES {
        return packet_fault(bytes);
    }
    if genz::check(bytes).is_ok() {
        return None;
    }
    // Name the fault as the packet by packet check does.
    let (mut at, mut k) = (0, 0);
    while at < n {
        let len = len_bytes(bytes, at);
        if len == 0 || at + len > n {
            return Some(format!("the bytes at {at} are no whole packet (LEN {}, {} bytes left)", len / 4, n - at));
        }
        if let Some(f) = packet_fault(&bytes[at..at + len]) {
            return Some(format!("packet {} of the unit: {f}", k + 1));
        }
        at += len;
        k += 1;
    }
    None
}

fn header_crc(h: &[u8]) -> u32 {
    genz::ecrc(&h[..HEADER_BYTES - 3])
}

/// Decodes one frame (all of `bytes`).
pub fn decode(bytes: &[u8]) -> Result<Frame<'_>, FrameError> {
    if bytes.len() < HEADER_BYTES {
        return Err(bad(FrameCode::Trunc, format!("{} bytes: a link frame's header is {HEADER_BYTES}", bytes.len())));
    }
    if u16::from_le_bytes([bytes[0], bytes[1]]) != MAGIC {
        return Err(bad(FrameCode::Magic, "not a famez link frame (bytes 0..1 are not \"FZ\")".into()));
    }
    if bytes[2] != VERSION {
        return Err(bad(FrameCode::Version, format!("link frame version {}; this famez speaks {VERSION}", bytes[2])));
    }
    let crc = u32::from(bytes[29]) | u32::from(bytes[30]) << 8 | u32::from(bytes[31]) << 16;
    if crc != header_crc(bytes) {
        return Err(bad(FrameCode::Crc, "the link frame header CRC does not match the header".into()));
    }
    let length = usize::from(u16::from_le_bytes([bytes[6], bytes[7]]));
    if bytes.len() < HEADER_BYTES + length {
        return Err(bad(
            FrameCode::Trunc,
            format!("the header says {length} payload bytes, {} came", bytes.len() - HEADER_BYTES),
        ));
    }
    if bytes.len() > HEADER_BYTES + length {
        return Err(bad(
            FrameCode::Trailing,
            format!("{} bytes after the {length} payload bytes", bytes.len() - HEADER_BYTES - length),
        ));
    }
    let ty = bytes[3];
    if !(TYPE_HELLO..=TYPE_PROBE).contains(&ty) {
        return Err(bad(FrameCode::Type, format!("link frame type {ty} is unknown")));
    }
    let flags = bytes[4];
    if bytes[5] != 0 || bytes[28] != 0 {
        return Err(bad(FrameCode::Field, "a reserved header byte is not zero".into()));
    }
    let (source, destination, seq, ack, credit) =
        (u32_at(bytes, 8), u32_at(bytes, 12), u32_at(bytes, 16), u32_at(bytes, 20), u32_at(bytes, 24));
    let length = length as u32;
    match ty {
        TYPE_HELLO => {
            if flags & !FLAG_SEEN != 0 {
                return Err(bad(FrameCode::Field, format!("unknown hello flags 0x{flags:x}")));
            }
            zero("hello", &[("length", length), ("destination", destination), ("ack", ack)])?;
            key(source, destination)?;
            if credit == 0 || credit >= 1 << 31 {
                return Err(bad(FrameCode::Field, format!("a hello's window must be 1..2^31-1, not {credit}")));
            }
            Ok(Frame::Hello { instance: seq, window: credit, seen: flags & FLAG_SEEN != 0, source })
        }
        TYPE_HEARTBEAT => {
            zero(
                "heartbeat",
                &[
                    ("flags", u32::from(flags)),
                    ("length", length),
                    ("source", source),
                    ("destination", destination),
                    ("seq", seq),
                    ("ack", ack),
                    ("credit", credit),
                ],
            )?;
            Ok(Frame::Heartbeat)
        }
        TYPE_DATA => {
            if flags & !FLAG_ACK != 0 {
                return Err(bad(FrameCode::Field, format!("unknown data flags 0x{flags:x}")));
            }
            if flags & FLAG_ACK == 0 {
                zero("data", &[("ack", ack), ("credit", credit)])?;
            }
            key(source, destination)?;
            let unit = &bytes[HEADER_BYTES..];
            if let Some(f) = unit_fault(unit) {
                return Err(bad(FrameCode::Packet, format!("data frame {seq} of {source}->{destination}: {f}")));
            }
            let reverse = if flags & FLAG_ACK != 0 { Some((ack, credit)) } else { None };
            Ok(Frame::Data { source, destination, seq, unit, reverse })
        }
        TYPE_ACK => {
            zero("ack", &[("flags", u32::from(flags)), ("length", length), ("seq", seq)])?;
            key(source, destination)?;
            Ok(Frame::Ack { source, destination, ack, credit })
        }
        _ => {
            zero("probe", &[("flags", u32::from(flags)), ("length", length), ("ack", ack), ("credit", credit)])?;
            key(source, destination)?;
            Ok(Frame::Probe { source, destination, seq })
        }
    }
}

fn zero(ty: &str, fields: &[(&str, u32)]) -> Result<(), FrameError> {
    for &(name, v) in fields {
        if v != 0 {
            return Err(bad(FrameCode::Field, format!("a {ty} frame's {name} must be 0, not {v}")));
        }
    }
    Ok(())
}

fn key(source: u32, destination: u32) -> Result<(), FrameError> {
    if source >= GCID_LIMIT || destination >= GCID_LIMIT {
        return Err(bad(
            FrameCode::Field,
            format!("GCIDs are 28 bits: source 0x{source:x}, destination 0x{destination:x}"),
        ));
    }
    Ok(())
}

/// Splits a link message into its frames and decodes each, stopping at the
/// first that does not decode: the frames before it, and its error.
pub fn decode_train(bytes: &[u8]) -> (Vec<Frame<'_>>, Option<FrameError>) {
    let mut frames = Vec::new();
    if bytes.is_empty() {
        return (frames, Some(bad(FrameCode::Trunc, "an empty link message".into())));
    }
    let mut at = 0;
    while at < bytes.len() {
        // The length is trusted only once decode checked the header CRC.
        let len =
            if at + 8 <= bytes.len() { usize::from(u16::from_le_bytes([bytes[at + 6], bytes[at + 7]])) } else { 0 };
        let end = bytes.len().min(at + HEADER_BYTES + len);
        match decode(&bytes[at..end]) {
            Ok(f) => frames.push(f),
            Err(e) => {
                let e = if frames.is_empty() {
                    e
                } else {
                    FrameError {
                        code: e.code,
                        message: format!("frame {} of a train: {}", frames.len() + 1, e.message),
                    }
                };
                return (frames, Some(e));
            }
        }
        at = end;
    }
    (frames, None)
}

/// Appends `frame`'s bytes to `out`. The caller checked the fields (GCIDs of
/// 28 bits, a hello's window 1..2^31-1, a sound unit of at most
/// MAX_UNIT_BYTES): this is the encoder of frames the state machine made.
pub fn encode_into(frame: &Frame<'_>, out: &mut Vec<u8>) {
    let (ty, flags, source, destination, seq, ack, credit, unit): (u8, u8, u32, u32, u32, u32, u32, &[u8]) =
        match *frame {
            Frame::Hello { instance, window, seen, source } => {
                (TYPE_HELLO, if seen { FLAG_SEEN } else { 0 }, source, 0, instance, 0, window, &[])
            }
            Frame::Heartbeat => (TYPE_HEARTBEAT, 0, 0, 0, 0, 0, 0, &[]),
            Frame::Data { source, destination, seq, unit, reverse } => {
                let (flags, (ack, credit)) = match reverse {
                    Some(r) => (FLAG_ACK, r),
                    None => (0, (0, 0)),
                };
                (TYPE_DATA, flags, source, destination, seq, ack, credit, unit)
            }
            Frame::Ack { source, destination, ack, credit } => (TYPE_ACK, 0, source, destination, 0, ack, credit, &[]),
            Frame::Probe { source, destination, seq } => (TYPE_PROBE, 0, source, destination, seq, 0, 0, &[]),
        };
    debug_assert!(unit.len() <= MAX_UNIT_BYTES);
    let start = out.len();
    out.extend_from_slice(&MAGIC.to_le_bytes());
    out.extend_from_slice(&[VERSION, ty, flags, 0]);
    out.extend_from_slice(&(unit.len() as u16).to_le_bytes());
    for v in [source, destination, seq, ack, credit] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.push(0);
    let crc = header_crc(&out[start..start + HEADER_BYTES - 3]);
    out.extend_from_slice(&crc.to_le_bytes()[..3]);
    out.extend_from_slice(unit);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    fn encode(f: &Frame<'_>) -> Vec<u8> {
        let mut v = Vec::new();
        encode_into(f, &mut v);
        v
    }

    /// A sound packet: a 16-byte one (LEN 4) with its PCRC and ECRC.
    fn packet(tag: u8) -> Vec<u8> {
        let mut p = vec![0u8; 16];
        let len = 4u32;
        let d0 = ((len & 7) << 5) | ((len >> 3) << 12) | (genz::pcrc(0, len) << 26);
        p[..4].copy_from_slice(&d0.to_le_bytes());
        p[5] = tag;
        genz::seal(&mut p).unwrap();
        p
    }

    // The same bytes as __test__/link-frame.test.ts pins.
    #[test]
    fn pinned_bytes() {
        assert_eq!(hex(&encode(&Frame::Heartbeat)), "465a030200000000000000000000000000000000000000000000000000e11145");
        let ack = Frame::Ack { source: 0x1005, destination: 0x2003, ack: 3, credit: 67 };
        assert_eq!(hex(&encode(&ack)), "465a030400000000051000000320000000000000030000004300000000c255eb");
    }

    #[test]
    fn frames_round_trip_and_units_are_checked() {
        let p = packet(7);
        let two = [p.clone(), packet(8)].concat();
        let frames = [
            Frame::Hello { instance: 0xdead_beef, window: 64, seen: true, source: 0x2064 },
            Frame::Heartbeat,
            Frame::Data { source: 0x1005, destination: 0x2003, seq: 9, unit: &p, reverse: None },
            Frame::Data { source: 0x1005, destination: 0x2003, seq: 10, unit: &two, reverse: Some((3, 70)) },
            Frame::Ack { source: 1, destination: 2, ack: 3, credit: 4 },
            Frame::Probe { source: 1, destination: 2, seq: 5 },
        ];
        let mut train = Vec::new();
        for f in &frames {
            let one = encode(f);
            assert_eq!(one.len(), f.len());
            assert_eq!(decode(&one).as_ref(), Ok(f));
            train.extend_from_slice(&one);
        }
        let (got, err) = decode_train(&train);
        assert_eq!(got, frames);
        assert_eq!(err, None);
        // A corrupt second packet: EPACKET, named.
        let mut badly = two.clone();
        badly[16 + 6] ^= 1;
        let f = encode(&Frame::Data { source: 1, destination: 2, seq: 0, unit: &badly, reverse: None });
        let e = decode(&f).unwrap_err();
        assert_eq!(e.code, FrameCode::Packet);
        assert!(e.message.contains("packet 2 of the unit: ECRC"), "{}", e.message);
        // A train cut inside its second frame.
        let (got, err) = decode_train(&train[..HEADER_BYTES + 5]);
        assert_eq!(got.len(), 1);
        assert!(err.unwrap().message.starts_with("frame 2 of a train: "));
        assert_eq!(decode_train(&[]).1.unwrap().code, FrameCode::Trunc);
    }

    #[test]
    fn every_single_bit_error_in_a_header_is_caught() {
        let f = encode(&Frame::Ack { source: 1, destination: 2, ack: 3, credit: 4 });
        for bit in 0..HEADER_BYTES * 8 {
            let mut g = f.clone();
            g[bit / 8] ^= 1 << (bit % 8);
            assert!(decode(&g).is_err(), "bit {bit}");
        }
    }
}
