//! famez's ring channels: one single-producer / single-consumer ring per
//! ordered pair of peers (sender S, receiver R), in the shared object after
//! the mailbox slots. Where a FAME-Z slot carries one message of at most 383
//! bytes per sender, a ring carries any number of variable-size messages, so
//! a burst never waits for a round trip and nothing is ever overwritten.
//! `docs/ring-channels.md` gives the byte layout for guest drivers.
//!
//! The contract, in short (every integer little-endian):
//! - A ring is a 256-byte header and a data area of `capacity` bytes (a power
//!   of two). `head` (offset 0) is written only by the producer, `tail`
//!   (offset 128) only by the consumer; they are free-running byte counters
//!   (position = counter mod capacity) on separate 128-byte blocks so the two
//!   sides never share a cache line (or an adjacent-line prefetch pair).
//! - A record is an 8-byte header (u32 length, u32 flags) and the payload,
//!   padded to a multiple of 8. A record never wraps: when it does not fit
//!   before the end of the data area, the producer writes a header with the
//!   WRAP flag and the record starts again at position 0; the consumer skips
//!   from a WRAP header to the end of the area. A record takes at most half
//!   the capacity, so an empty ring always accepts any allowed message.
//! - The producer writes records, then publishes `head` (Release); the
//!   consumer reads `head` (Acquire), copies records, then publishes `tail`
//!   (Release). The producer reads `tail` (Acquire) before reusing space.
//! - Doorbell: the producer rings the receiver only when the ring was empty
//!   before its push. To make that safe against a consumer that is just
//!   going to sleep, both sides put a full barrier between publishing their
//!   own counter and reading the other's (producer: head, barrier, tail;
//!   consumer: tail, barrier, head). Then either the producer sees the ring
//!   empty (and rings) or the consumer sees the new head (and pops it).
//!   A consumer may wait for the doorbell only after a pop saw the ring
//!   empty; a spurious doorbell is harmless.
//!
//! As in [`crate::mailbox`], counters are `AtomicU64`s over the mapping and
//! payloads are raw-pointer copies made while the protocol gives this side
//! the bytes; nothing read from the memory is trusted (a hostile producer or
//! consumer gives [`PopError::Corrupt`] / [`PushError::Corrupt`], never an
//! out-of-bounds access).
//!
//! The parts: [`layout`] (where the rings are, and their description in
//! slot 0), `producer` (push), `consumer` (pop, and read in place),
//! [`errors`]; the ring view itself and the wire constants are here.

use std::marker::PhantomData;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::shm::Mapping;

mod consumer;
pub mod errors;
pub mod layout;
mod producer;
#[cfg(test)]
mod tests;

pub use consumer::{Reader, Record};
pub use errors::{LayoutError, PopError, PushError};
pub use layout::RingLayout;
pub use producer::{BatchPush, RecordMut, Writer};

pub use crate::layout::ring::{
    ERRORS_OFFSET, FLAG_WRAP, HEAD_OFFSET, MAX_CAPACITY, MIN_CAPACITY, RECORD_HEADER, RING_ALIGN, RING_HEADER,
    RING_MAGIC, TAIL_OFFSET,
};

/// Where the ring description lives in slot 0, after FAME-Z's five globals
/// (see [`crate::layout::global`]).
pub mod global {
    pub use crate::layout::global::{
        RING_BASE as BASE, RING_CAPACITY as CAPACITY, RING_COUNT as COUNT, RING_MAGIC as MAGIC,
    };
}

/// Size of a record carrying `len` payload bytes.
pub fn record_size(len: usize) -> u64 {
    RECORD_HEADER + (len as u64).div_ceil(8) * 8
}

pub(crate) fn max_message(capacity: u64) -> usize {
    (capacity / 2 - RECORD_HEADER) as usize
}

/// A view of one ring. Like [`Mailbox`], it holds no state: head and tail
/// live in the shared memory, so views may be created and dropped freely.
///
/// Single producer, single consumer: at any moment at most one party (in
/// any process) pushes and at most one pops. That is the pair's protocol
/// (only S pushes into ring S->R, only R pops from it); breaking it garbles
/// messages, which the consumer reports as corrupt. The view is `Send` but
/// not `Sync`: a thread that pushes and one that pops each take their own.
#[derive(Debug)]
pub struct Ring<'a> {
    ring: NonNull<u8>,
    capacity: u64,
    _mem: PhantomData<&'a Mapping>,
}

// SAFETY: a pointer into shared memory valid for 'a; see the type's doc for
// why Send (not Sync) keeps the one-producer/one-consumer rule visible.
unsafe impl Send for Ring<'_> {}

impl<'a> Ring<'a> {
    /// A view of the ring whose header is at `ring`.
    ///
    /// # Safety
    /// `ring` must be 128-byte aligned (8 at least) and valid for reads and
    /// writes of `RING_HEADER + capacity` bytes for `'a`; `capacity` must be
    /// a power of two in MIN_CAPACITY..=MAX_CAPACITY; the memory is shared
    /// only with parties that follow this module's protocol.
    pub unsafe fn from_raw(ring: NonNull<u8>, capacity: u64) -> Self {
        debug_assert!(capacity.is_power_of_two() && (MIN_CAPACITY..=MAX_CAPACITY).contains(&capacity));
        debug_assert!((ring.as_ptr() as usize).is_multiple_of(8));
        Ring { ring, capacity, _mem: PhantomData }
    }

    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    pub fn max_message(&self) -> usize {
        max_message(self.capacity)
    }

    fn counter(&self, off: u64) -> &AtomicU64 {
        // SAFETY: off is HEAD_OFFSET, TAIL_OFFSET or ERRORS_OFFSET, inside the header;
        // aligned, and valid for 'a per from_raw's contract. Both sides
        // access the counters only atomically.
        unsafe { AtomicU64::from_ptr(self.ring.as_ptr().add(off as usize).cast()) }
    }

    fn load(&self, off: u64, order: Ordering) -> u64 {
        u64::from_le(self.counter(off).load(order))
    }

    fn store(&self, off: u64, value: u64, order: Ordering) {
        self.counter(off).store(value.to_le(), order)
    }

    /// Pointer to data-area position `pos` (< capacity).
    fn data(&self, pos: u64) -> *mut u8 {
        debug_assert!(pos < self.capacity);
        // SAFETY: RING_HEADER + pos < RING_HEADER + capacity: inside the ring.
        unsafe { self.ring.as_ptr().add((RING_HEADER + pos) as usize) }
    }

    /// Bytes in use (records and padding) as the counters say now.
    pub fn used_bytes(&self) -> u64 {
        self.load(HEAD_OFFSET, Ordering::Acquire).wrapping_sub(self.load(TAIL_OFFSET, Ordering::Acquire))
    }

    pub fn is_empty(&self) -> bool {
        self.used_bytes() == 0
    }

    /// Zeroes head, tail and the error count. Only while neither side uses
    /// the ring.
    pub fn reset(&self) {
        self.store(HEAD_OFFSET, 0, Ordering::Relaxed);
        self.store(ERRORS_OFFSET, 0, Ordering::Relaxed);
        self.store(TAIL_OFFSET, 0, Ordering::Release);
    }
}
