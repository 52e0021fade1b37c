//! The shared object's byte layout, in one place: FAME-Z's mailbox slots
//! (and the words famez adds to them), slot 0's globals, and famez's ring
//! channels. `mailbox` and `ring` use these constants; nothing else in
//! famez writes these numbers down.
//!
//! TypeScript reads them from `ts/layout.generated.ts`, which
//! `examples/layout_ts.rs` writes from the [`TABLE`]s below (`npm run build`
//! regenerates it; `cargo test` and `npm test` fail while the committed
//! file differs). `docs/ring-channels.md` describes the same bytes for
//! guest drivers.
//!
//! Every integer in the shared object is little-endian.

/// One constant as the TypeScript generator sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Constant {
    /// Its name in `ts/layout.generated.ts`.
    pub ts_name: &'static str,
    pub value: u64,
    /// Its doc comment.
    pub doc: &'static str,
}

/// Defines `pub const`s and a `TABLE` listing them for the generator.
macro_rules! layout {
    ($($(#[doc = $doc:expr])* $name:ident: $ty:ty = $value:expr => $ts:literal;)*) => {
        $($(#[doc = $doc])* pub const $name: $ty = $value;)*
        /// These constants, for `examples/layout_ts.rs`.
        pub const TABLE: &[$crate::layout::Constant] = &[$($crate::layout::Constant {
            ts_name: $ts,
            value: $name as u64,
            doc: concat!($($doc, "\n",)*),
        },)*];
    };
}

layout! {
    /// Size of a mailbox slot, the globals' slot 0 included.
    SLOT_SIZE: usize = 512 => "SLOT_SIZE";
    /// Offset of `buf` within a slot.
    BUF_OFFSET: usize = 128 => "BUF_OFFSET";
    /// Size of `buf`: the message and its terminating NUL.
    BUF_SIZE: usize = SLOT_SIZE - BUF_OFFSET => "BUF_SIZE";
    /// The largest message a slot carries (FAME-Z keeps a NUL after it).
    MAX_PAYLOAD: usize = BUF_SIZE - 1 => "MAX_SLOT_PAYLOAD";
    /// Size of the `nodename` field; names are at most 31 bytes plus a NUL.
    NODENAME_SIZE: usize = 32 => "NODENAME_SIZE";
}

/// Byte offsets of the fields within a peer slot (slot i at i x
/// [`SLOT_SIZE`]).
pub mod field {
    layout! {
        /// `nodename`: char[32], NUL-terminated.
        NODENAME: usize = 0 => "SLOT_NODENAME";
        /// `buflen` (u64): the length of the unread message in `buf`; 0 = free.
        BUFLEN: usize = 32 => "SLOT_BUFLEN";
        /// `peer_id` (u64): the slot's index, written by the server.
        PEER_ID: usize = 40 => "SLOT_PEER_ID";
        /// `last_responder` (u64): whom the slot's last message was for.
        LAST_RESPONDER: usize = 48 => "SLOT_LAST_RESPONDER";
        /// `peer_SID` (u64).
        PEER_SID: usize = 56 => "SLOT_PEER_SID";
        /// `peer_CID` (u64).
        PEER_CID: usize = 64 => "SLOT_PEER_CID";
        /// famez's feature word, in padding FAME-Z leaves unused: the u32
        /// feature bits here, the u32 features magic ("FZF1") at +4, written
        /// last.
        FEATURES: usize = 72 => "SLOT_FEATURES";
        /// `present` (u64), famez's, written by the server only: the
        /// peer's connection number (non-zero) while it is connected, 0
        /// once it has left. How a guest, which gets no join or leave
        /// messages, learns who is there (docs/guest.md).
        PRESENT: usize = 80 => "SLOT_PRESENT";
        /// `buf`: the message, then a NUL.
        BUF: usize = super::BUF_OFFSET => "SLOT_BUF";
    }
}

/// Byte offsets of the globals (u64 words) in slot 0.
pub mod global {
    layout! {
        /// FAME-Z's `slotsize`: the slot size.
        SLOTSIZE: usize = 0 => "GLOBAL_SLOTSIZE";
        /// FAME-Z's `buf_offset`: the offset of `buf` in a slot.
        BUF_OFFSET: usize = 8 => "GLOBAL_BUF_OFFSET";
        /// FAME-Z's `nClients`.
        N_CLIENTS: usize = 16 => "GLOBAL_N_CLIENTS";
        /// FAME-Z's `nEvents`: nClients + 2.
        N_EVENTS: usize = 24 => "GLOBAL_N_EVENTS";
        /// FAME-Z's `server_id`: nClients + 1 (the switch); written last.
        SERVER_ID: usize = 32 => "GLOBAL_SERVER_ID";
        /// First word after FAME-Z's five globals: famez's extensions start here.
        EXTENSIONS: usize = 40 => "GLOBAL_EXTENSIONS";
        /// `ring_magic`: the ring magic ("FZRING01") when rings are set up;
        /// written last.
        RING_MAGIC: usize = EXTENSIONS => "GLOBAL_RING_MAGIC";
        /// `ring_base`: byte offset of ring 0 in the shared object.
        RING_BASE: usize = EXTENSIONS + 8 => "GLOBAL_RING_BASE";
        /// `ring_capacity`: data bytes of every ring (a power of two).
        RING_CAPACITY: usize = EXTENSIONS + 16 => "GLOBAL_RING_CAPACITY";
        /// `ring_count`: (nClients + 1) x nClients, for cross-checking.
        RING_COUNT: usize = EXTENSIONS + 24 => "GLOBAL_RING_COUNT";
        /// First byte after the fixed words the server owns (FAME-Z's and famez's).
        END: usize = EXTENSIONS + 32 => "GLOBALS_END";
        /// `membership` (u64): the server adds one after every change of a
        /// slot's `present` word, then rings vector 0 of every peer (vector
        /// 0 is nobody's: IDs start at 1).
        MEMBERSHIP: usize = END => "GLOBAL_MEMBERSHIP";
    }
}

/// A ring channel: a header, then a data area of records.
pub mod ring {
    layout! {
        /// Bytes before a ring's data area.
        RING_HEADER: u64 = 256 => "RING_HEADER";
        /// Offset of `head` (the producer's counter, u64) in the ring header.
        HEAD_OFFSET: u64 = 0 => "RING_HEAD";
        /// Offset of `tail` (the consumer's counter, u64) in the ring header,
        /// in a 128-byte block of its own.
        TAIL_OFFSET: u64 = 128 => "RING_TAIL";
        /// Offset of `errors` (u64) in the ring header, beside `tail` in the
        /// consumer's block: how many times the consumer found the ring
        /// corrupt and dropped its contents, so the producer can tell.
        ERRORS_OFFSET: u64 = 136 => "RING_ERRORS";
        /// Bytes of a record header: u32 length, u32 flags.
        RECORD_HEADER: u64 = 8 => "RECORD_HEADER";
        /// Record flag: skip to the start of the data area.
        FLAG_WRAP: u32 = 1 => "FLAG_WRAP";
        /// The smallest data area.
        MIN_CAPACITY: u64 = 256 => "RING_MIN_CAPACITY";
        /// The largest data area (lengths are u32; half of this is the message limit).
        MAX_CAPACITY: u64 = 1 << 31 => "RING_MAX_CAPACITY";
        /// Rings start on this alignment (two cache lines).
        RING_ALIGN: u64 = 128 => "RING_ALIGN";
        /// "FZRING01" read as a little-endian u64: rings are present and
        /// described by the words after it in slot 0.
        RING_MAGIC: u64 = u64::from_le_bytes(*b"FZRING01") => "RING_MAGIC";
    }
}

/// famez's feature word in a peer slot ([`field::FEATURES`]): what the peer
/// says it can do, so the switch can route to it without a message
/// exchange.
pub mod features {
    layout! {
        /// "FZF1" in little-endian bytes, at the slot's feature word + 4;
        /// anything else there: no features.
        MAGIC: u32 = u32::from_le_bytes(*b"FZF1") => "FEATURES_MAGIC";
        /// The peer reads the switch's messages from the switch's ring
        /// channel to it (docs/ring-channels.md), not only from the
        /// switch's slot.
        SWITCH_RING: u32 = 1 => "FEATURE_SWITCH_RING";
        /// The peer wants vector 0 rung after every change of the slots'
        /// `present` words (a guest: it gets no join or leave messages).
        /// Opt-in, so a FAME-Z driver never sees an interrupt it does not
        /// expect.
        MEMBERSHIP_BELL: u32 = 2 => "FEATURE_MEMBERSHIP_BELL";
    }
}

/// Every table, in the order the generator writes them.
pub const TABLES: &[(&str, &[Constant])] = &[
    ("Mailbox slots", TABLE),
    ("Fields of a peer slot (byte offsets within the slot)", field::TABLE),
    ("Globals in slot 0 (byte offsets of u64 words)", global::TABLE),
    ("Ring channels", ring::TABLE),
    ("famez's feature word", features::TABLE),
];

// The layout's own consistency, checked at compile time (as oxc's
// assert_layouts.rs checks its structs): a change that makes two fields
// overlap or leave their block does not build.
const _: () = {
    use field::*;
    // Fields are u64 words in order, before buf, without overlap.
    assert!(NODENAME + NODENAME_SIZE <= BUFLEN);
    assert!(BUFLEN + 8 <= PEER_ID && PEER_ID + 8 <= LAST_RESPONDER);
    assert!(LAST_RESPONDER + 8 <= PEER_SID && PEER_SID + 8 <= PEER_CID);
    assert!(PEER_CID + 8 <= FEATURES && FEATURES + 8 <= PRESENT && PRESENT + 8 <= BUF);
    assert!(BUF + MAX_PAYLOAD + 1 == SLOT_SIZE);
    assert!(BUFLEN.is_multiple_of(8) && LAST_RESPONDER.is_multiple_of(8) && FEATURES.is_multiple_of(8));
    // The globals fit in slot 0 and famez's come after FAME-Z's.
    assert!(global::SERVER_ID + 8 == global::EXTENSIONS);
    assert!(global::RING_COUNT + 8 == global::END && global::MEMBERSHIP + 8 <= SLOT_SIZE);
    // The ring header: head and tail on separate 128-byte blocks, errors
    // in the consumer's.
    assert!(ring::HEAD_OFFSET + 8 <= ring::TAIL_OFFSET && ring::TAIL_OFFSET.is_multiple_of(128));
    assert!(ring::TAIL_OFFSET + 8 <= ring::ERRORS_OFFSET && ring::ERRORS_OFFSET + 8 <= ring::RING_HEADER);
    assert!(ring::RING_HEADER.is_multiple_of(ring::RING_ALIGN) && ring::MIN_CAPACITY.is_power_of_two());
    assert!(ring::MAX_CAPACITY.is_power_of_two() && ring::MAX_CAPACITY <= 1 << 32);
};
