//! The ring's errors: a layout that cannot be, a push refused, a pop that
//! found something no correct producer writes.

use super::{MAX_CAPACITY, MIN_CAPACITY, RING_ALIGN};
use crate::mailbox::MailboxError;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    /// Capacity not a power of two in MIN_CAPACITY..=MAX_CAPACITY.
    #[error("ring capacity {capacity} is not a power of two between {MIN_CAPACITY} and {MAX_CAPACITY}")]
    BadCapacity { capacity: u64 },
    /// nClients of 0, or a layout whose size overflows.
    #[error("nClients {n_clients} cannot have rings")]
    BadClients { n_clients: u64 },
    /// A base inside the mailbox, or not a multiple of [`RING_ALIGN`].
    #[error("ring base {base} must be at least {min} (after the mailbox) and a multiple of {RING_ALIGN}")]
    BadBase { base: u64, min: u64 },
    /// No ring for this pair (an ID outside 1..=nClients+1, or S = R).
    #[error("there is no ring from {sender} to {receiver}")]
    NoSuchPair { sender: u64, receiver: u64 },
    /// The memory ends before the last ring does.
    #[error("the shared memory ({len} bytes) ends before the rings do ({need} bytes)")]
    TooSmall { len: u64, need: u64 },
    /// Slot 0 describes rings that make no sense (written by someone else).
    #[error("the ring description in slot 0 is invalid: {0}")]
    BadGlobals(String),
}

impl From<MailboxError> for LayoutError {
    fn from(e: MailboxError) -> Self {
        LayoutError::BadGlobals(e.to_string())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    /// Not enough free space now: backpressure; retry after the consumer
    /// has taken some messages.
    #[error("the ring is full")]
    Full,
    /// Over the ring's message limit (half the capacity, less 8 bytes);
    /// `index` is the message's place in a batch.
    #[error("message {index} of {len} bytes is over the ring's limit of {max} bytes")]
    TooLarge { index: usize, len: usize, max: usize },
    /// `tail` is not within one capacity behind `head`: the consumer side
    /// wrote garbage.
    #[error("corrupt ring: head {head}, tail {tail}")]
    Corrupt { head: u64, tail: u64 },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PopError {
    /// The next message has `need` bytes, more than the buffer; it stays.
    #[error("the next message needs a buffer of {need} bytes")]
    BufferTooSmall { need: usize },
    /// The ring holds something no correct producer writes. Nothing at or
    /// after the bad record was consumed (a batch read has handed every
    /// good message before it to its callback, and published the tail past
    /// them). [`super::Ring::discard_corrupt`] drops the rest to resynchronise.
    #[error("corrupt ring: {0}")]
    Corrupt(String),
}
