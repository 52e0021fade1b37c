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

use std::marker::PhantomData;
use std::ptr::{self, NonNull};
use std::sync::atomic::{fence, AtomicU64, Ordering};

use crate::mailbox::{self, Mailbox, MailboxError};
use crate::shm::Mapping;

/// Bytes before a ring's data area.
pub const RING_HEADER: u64 = 256;
/// Offset of `head` (producer's counter) in the ring header.
pub const HEAD_OFFSET: u64 = 0;
/// Offset of `tail` (consumer's counter) in the ring header.
pub const TAIL_OFFSET: u64 = 128;
/// Offset of `errors` in the ring header, beside `tail` in the consumer's
/// block: how many times the consumer found the ring corrupt and dropped
/// its contents ([`Ring::discard_corrupt`]), so the producer can tell.
pub const ERRORS_OFFSET: u64 = 136;
/// Bytes of a record header: u32 length, u32 flags.
pub const RECORD_HEADER: u64 = 8;
/// Record flag: skip to the start of the data area.
pub const FLAG_WRAP: u32 = 1;
/// The smallest data area.
pub const MIN_CAPACITY: u64 = 256;
/// The largest data area (lengths are u32; half of this is the message limit).
pub const MAX_CAPACITY: u64 = 1 << 31;
/// How far ahead of its tail a consumer asks the CPU to fetch records
/// (x86-64 only).
const PREFETCH: u64 = 1024;
/// Rings start on this alignment (two cache lines).
pub const RING_ALIGN: u64 = 128;
/// "FZRING01" read as a little-endian u64: rings are present and described
/// by the words after it.
pub const RING_MAGIC: u64 = u64::from_le_bytes(*b"FZRING01");

/// Where the ring description lives in slot 0, after FAME-Z's five globals.
pub mod global {
    use crate::mailbox::global::EXTENSIONS;
    /// [`super::RING_MAGIC`] when rings are set up; written last.
    pub const MAGIC: usize = EXTENSIONS;
    /// Byte offset of ring 0 in the shared object.
    pub const BASE: usize = EXTENSIONS + 8;
    /// Data bytes of every ring (a power of two).
    pub const CAPACITY: usize = EXTENSIONS + 16;
    /// Number of rings, (nClients + 1) x nClients, for cross-checking.
    pub const COUNT: usize = EXTENSIONS + 24;
}

/// Size of a record carrying `len` payload bytes.
pub fn record_size(len: usize) -> u64 {
    RECORD_HEADER + (len as u64).div_ceil(8) * 8
}

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

/// Where every ring is, computed from (nClients, capacity, base) so that the
/// server and every peer agree. Endpoints are IDs 1..=nClients+1 (the switch
/// last); there is a ring for every ordered pair of distinct endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingLayout {
    n_clients: u64,
    capacity: u64,
    base: u64,
}

impl RingLayout {
    pub fn new(n_clients: u64, capacity: u64, base: u64) -> Result<Self, LayoutError> {
        if !(MIN_CAPACITY..=MAX_CAPACITY).contains(&capacity) || !capacity.is_power_of_two() {
            return Err(LayoutError::BadCapacity { capacity });
        }
        let min = mailbox::slots_bytes(n_clients).ok_or(LayoutError::BadClients { n_clients })? as u64;
        if n_clients == 0 {
            return Err(LayoutError::BadClients { n_clients });
        }
        if base < min || !base.is_multiple_of(RING_ALIGN) {
            return Err(LayoutError::BadBase { base, min });
        }
        let layout = RingLayout { n_clients, capacity, base };
        layout.checked_end().ok_or(LayoutError::BadClients { n_clients })?;
        Ok(layout)
    }

    /// The layout with its base at [`RingLayout::default_base`].
    pub fn with_default_base(n_clients: u64, capacity: u64) -> Result<Self, LayoutError> {
        let base = Self::default_base(n_clients).ok_or(LayoutError::BadClients { n_clients })?;
        Self::new(n_clients, capacity, base)
    }

    /// The first page boundary after the mailbox slots.
    pub fn default_base(n_clients: u64) -> Option<u64> {
        let end = mailbox::slots_bytes(n_clients)? as u64;
        end.checked_add(4095).map(|e| e / 4096 * 4096)
    }

    pub fn n_clients(&self) -> u64 {
        self.n_clients
    }
    pub fn capacity(&self) -> u64 {
        self.capacity
    }
    pub fn base(&self) -> u64 {
        self.base
    }
    /// Endpoints: the peers 1..=nClients and the switch, nClients + 1.
    pub fn endpoints(&self) -> u64 {
        self.n_clients + 1
    }
    /// Bytes from one ring to the next: header and data area.
    pub fn stride(&self) -> u64 {
        RING_HEADER + self.capacity
    }
    pub fn ring_count(&self) -> u64 {
        self.endpoints() * (self.endpoints() - 1)
    }
    /// The largest message a ring carries: a record takes at most half the
    /// data area, so an empty ring always has room for it.
    pub fn max_message(&self) -> usize {
        max_message(self.capacity)
    }

    fn checked_end(&self) -> Option<u64> {
        self.ring_count().checked_mul(self.stride())?.checked_add(self.base)
    }

    /// First byte after the last ring: the object must be at least this big.
    pub fn end(&self) -> u64 {
        self.checked_end().expect("checked in new")
    }

    /// The ring's number: rings of sender S come together, ordered by
    /// receiver, skipping S itself: k = (S-1) x nClients + (R-1) - (R > S).
    pub fn index(&self, sender: u64, receiver: u64) -> Result<u64, LayoutError> {
        let e = self.endpoints();
        if sender == 0 || receiver == 0 || sender > e || receiver > e || sender == receiver {
            return Err(LayoutError::NoSuchPair { sender, receiver });
        }
        Ok((sender - 1) * (e - 1) + (receiver - 1) - u64::from(receiver > sender))
    }

    /// Byte offset of the ring's header in the shared object.
    pub fn offset(&self, sender: u64, receiver: u64) -> Result<u64, LayoutError> {
        Ok(self.base + self.index(sender, receiver)? * self.stride())
    }

    fn check_len(&self, len: usize) -> Result<(), LayoutError> {
        if (len as u64) < self.end() {
            return Err(LayoutError::TooSmall { len: len as u64, need: self.end() });
        }
        Ok(())
    }

    /// A view of the ring from `sender` to `receiver` in `map`.
    pub fn ring<'a>(&self, map: &'a Mapping, sender: u64, receiver: u64) -> Result<Ring<'a>, LayoutError> {
        self.check_len(map.len())?;
        let off = self.offset(sender, receiver)?;
        // SAFETY: off + stride <= end <= map.len(), the mapping is valid for
        // 'a and page-aligned, and off is a multiple of 128.
        Ok(unsafe { Ring::from_raw(NonNull::new_unchecked(map.as_ptr().add(off as usize)), self.capacity) })
    }

    /// Zeroes every ring's counters (the server, before anyone connects).
    pub fn reset_all(&self, map: &Mapping) -> Result<(), LayoutError> {
        self.check_len(map.len())?;
        for k in 0..self.ring_count() {
            let off = self.base + k * self.stride();
            // SAFETY: as in ring(): inside the mapping, aligned.
            let ring = unsafe { Ring::from_raw(NonNull::new_unchecked(map.as_ptr().add(off as usize)), self.capacity) };
            ring.reset();
        }
        Ok(())
    }

    /// Describes the rings in slot 0 (after FAME-Z's globals), the magic
    /// last with Release so a reader that sees it sees the rest.
    pub fn publish(&self, mb: &Mailbox<'_>) -> Result<(), LayoutError> {
        self.check_len(mb.len())?;
        mb.set_global(global::BASE, self.base, Ordering::Relaxed)?;
        mb.set_global(global::CAPACITY, self.capacity, Ordering::Relaxed)?;
        mb.set_global(global::COUNT, self.ring_count(), Ordering::Relaxed)?;
        mb.set_global(global::MAGIC, RING_MAGIC, Ordering::Release)?;
        Ok(())
    }

    /// Reads the description from slot 0: `Ok(None)` when there are no
    /// rings (a FAME-Z server, or rings not set up).
    pub fn from_mailbox(mb: &Mailbox<'_>) -> Result<Option<Self>, LayoutError> {
        if mb.global(global::MAGIC, Ordering::Acquire)? != RING_MAGIC {
            return Ok(None);
        }
        let n_clients = mb.globals().n_clients;
        let layout = Self::new(
            n_clients,
            mb.global(global::CAPACITY, Ordering::Relaxed)?,
            mb.global(global::BASE, Ordering::Relaxed)?,
        )
        .map_err(|e| LayoutError::BadGlobals(e.to_string()))?;
        let count = mb.global(global::COUNT, Ordering::Relaxed)?;
        if count != layout.ring_count() {
            return Err(LayoutError::BadGlobals(format!(
                "ring count {count} does not match nClients {n_clients} ({} rings)",
                layout.ring_count()
            )));
        }
        layout.check_len(mb.len()).map_err(|e| LayoutError::BadGlobals(e.to_string()))?;
        Ok(Some(layout))
    }
}

fn max_message(capacity: u64) -> usize {
    (capacity / 2 - RECORD_HEADER) as usize
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
    /// them). [`Ring::discard_corrupt`] drops the rest to resynchronise.
    #[error("corrupt ring: {0}")]
    Corrupt(String),
}

/// What [`Ring::push_batch`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchPush {
    /// Messages pushed, from the front; fewer than given when the ring
    /// filled up (the rest are the caller's to retry).
    pub pushed: usize,
    /// The ring was empty before: ring the receiver's doorbell.
    pub was_empty: bool,
}

/// One message read in place by [`Ring::read_batch`]: `len` bytes in the
/// ring's data area, which the producer leaves alone until the consumer
/// publishes its tail (after the callback). No Rust reference to the shared
/// bytes is ever made (a producer breaking the protocol could be writing
/// them): every access is a raw copy.
pub struct Record<'r> {
    ptr: *const u8,
    len: usize,
    _ring: PhantomData<&'r ()>,
}

impl Record<'_> {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Copies the first `min(len, out.len())` bytes into `out`; returns
    /// how many.
    pub fn copy_to(&self, out: &mut [u8]) -> usize {
        let n = self.len.min(out.len());
        // SAFETY: ptr is valid for len >= n bytes (read_batch checked the
        // record against the data area); out is a distinct Rust buffer.
        unsafe { ptr::copy_nonoverlapping(self.ptr, out.as_mut_ptr(), n) };
        n
    }

    /// # Safety
    /// `out` must be valid for writes of `len` bytes.
    unsafe fn copy_to_ptr(&self, out: *mut u8) {
        // SAFETY: as in copy_to; the caller vouches for out.
        unsafe { ptr::copy_nonoverlapping(self.ptr, out, self.len) };
    }

    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = vec![0u8; self.len];
        self.copy_to(&mut v);
        v
    }

    /// The little-endian u64 at byte `at`, if the message holds it.
    pub fn read_u64_le(&self, at: usize) -> Option<u64> {
        if at.checked_add(8)? > self.len {
            return None;
        }
        // SAFETY: at + 8 <= len, inside the record; unaligned read.
        Some(u64::from_le(unsafe { self.ptr.add(at).cast::<u64>().read_unaligned() }))
    }
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

    // ---- producer ----

    /// Writes one record at `*head` if it fits given `tail`; advances the
    /// local head (not yet published). Lengths are checked by the caller.
    fn write_record(&self, head: &mut u64, tail: u64, msg: &[u8]) -> bool {
        let mask = self.capacity - 1;
        let rec = record_size(msg.len());
        let pos = *head & mask;
        let room_to_end = self.capacity - pos;
        let pad = if rec <= room_to_end { 0 } else { room_to_end };
        if head.wrapping_sub(tail) + pad + rec > self.capacity {
            return false;
        }
        if pad != 0 {
            // SAFETY: pos is 8-aligned (records are) and pos + 8 <= capacity;
            // the bytes from pos to the end are free (checked above), so the
            // consumer does not read them until head is published.
            unsafe { self.data(pos).cast::<u64>().write((u64::from(FLAG_WRAP) << 32).to_le()) };
            *head = head.wrapping_add(pad);
        }
        let pos = *head & mask;
        // SAFETY: pos + rec <= capacity (the record fits before the end, by
        // the choice of pad) and the space is free as above; msg is a Rust
        // slice that cannot overlap the mapping's free space we own.
        unsafe {
            let at = self.data(pos);
            at.cast::<u64>().write((msg.len() as u64).to_le());
            ptr::copy_nonoverlapping(msg.as_ptr(), at.add(RECORD_HEADER as usize), msg.len());
        }
        *head = head.wrapping_add(rec);
        true
    }

    /// Publishes `head`, then tells whether the ring was empty before it
    /// (the tail had caught up with `old_head`), with the full barrier the
    /// doorbell rule needs (module doc).
    fn publish(&self, old_head: u64, head: u64) -> bool {
        self.store(HEAD_OFFSET, head, Ordering::Release);
        fence(Ordering::SeqCst);
        self.load(TAIL_OFFSET, Ordering::Relaxed) == old_head
    }

    fn producer_state(&self) -> Result<(u64, u64), PushError> {
        let head = self.load(HEAD_OFFSET, Ordering::Relaxed);
        // Acquire pairs with the consumer's tail Release: its copies out of
        // the space we are about to reuse are done.
        let tail = self.load(TAIL_OFFSET, Ordering::Acquire);
        if head.wrapping_sub(tail) > self.capacity {
            return Err(PushError::Corrupt { head, tail });
        }
        Ok((head, tail))
    }

    /// Pushes one message. `Ok(true)`: the ring was empty, ring the
    /// receiver's doorbell; `Ok(false)`: it was not (the consumer will see
    /// this message before it sleeps). `Err(Full)` is backpressure.
    pub fn push(&self, msg: &[u8]) -> Result<bool, PushError> {
        if msg.len() > self.max_message() {
            return Err(PushError::TooLarge { index: 0, len: msg.len(), max: self.max_message() });
        }
        let (old_head, tail) = self.producer_state()?;
        let mut head = old_head;
        if !self.write_record(&mut head, tail, msg) {
            return Err(PushError::Full);
        }
        Ok(self.publish(old_head, head))
    }

    /// Pushes as many of `msgs` as fit, in order, and publishes them at once
    /// (one barrier, one doorbell decision). Any message over the limit
    /// fails the whole batch before anything is written.
    pub fn push_batch<T: AsRef<[u8]>>(&self, msgs: &[T]) -> Result<BatchPush, PushError> {
        let max = self.max_message();
        if let Some((index, m)) = msgs.iter().enumerate().find(|(_, m)| m.as_ref().len() > max) {
            return Err(PushError::TooLarge { index, len: m.as_ref().len(), max });
        }
        let (old_head, mut tail) = self.producer_state()?;
        let mut head = old_head;
        let mut pushed = 0;
        for m in msgs {
            if !self.write_record(&mut head, tail, m.as_ref()) {
                // The consumer may have freed space since the batch began.
                let fresh = self.load(TAIL_OFFSET, Ordering::Acquire);
                if fresh == tail || old_head.wrapping_sub(fresh) > self.capacity {
                    break;
                }
                tail = fresh;
                if !self.write_record(&mut head, tail, m.as_ref()) {
                    break;
                }
            }
            pushed += 1;
        }
        if pushed == 0 {
            return Ok(BatchPush { pushed, was_empty: false });
        }
        Ok(BatchPush { pushed, was_empty: self.publish(old_head, head) })
    }

    // ---- consumer ----

    /// Finds the next message at or after `*tail` (skipping WRAP padding),
    /// checking everything against `head`: `Ok(Some((pos, len)))` for the
    /// payload's position, `Ok(None)` when nothing is left before `head`.
    fn next_record(&self, tail: &mut u64, head: u64) -> Result<Option<(u64, usize)>, PopError> {
        let mask = self.capacity - 1;
        loop {
            let avail = head.wrapping_sub(*tail);
            if avail == 0 {
                return Ok(None);
            }
            let pos = *tail & mask;
            if avail > self.capacity || avail < RECORD_HEADER || !pos.is_multiple_of(8) {
                return Err(PopError::Corrupt(format!("head {head}, tail {tail}")));
            }
            // SAFETY: pos is 8-aligned and pos + 8 <= capacity; the bytes
            // are before head (Acquire-loaded), so the producer wrote them
            // and will not touch them until tail passes them.
            let header = u64::from_le(unsafe { self.data(pos).cast::<u64>().read() });
            let (len, flags) = (header as u32 as usize, (header >> 32) as u32);
            match flags {
                FLAG_WRAP => {
                    let skip = self.capacity - pos;
                    if skip > avail {
                        return Err(PopError::Corrupt(format!("wrap at {pos} passes head")));
                    }
                    *tail = tail.wrapping_add(skip);
                }
                0 => {
                    let rec = record_size(len);
                    if len > self.max_message() || rec > avail || pos + rec > self.capacity {
                        return Err(PopError::Corrupt(format!("record of {len} bytes at {pos}, {avail} available")));
                    }
                    return Ok(Some((pos + RECORD_HEADER, len)));
                }
                _ => return Err(PopError::Corrupt(format!("unknown flags {flags:#x} at {pos}"))),
            }
        }
    }

    /// Copies the payload at data position `pos` into `out`.
    fn copy_out(&self, pos: u64, out: *mut u8, len: usize) {
        // SAFETY: next_record checked pos + len <= capacity; the record is
        // before head, so the producer leaves it alone until tail passes
        // it; out is valid for len bytes (the callers' buffers).
        unsafe { ptr::copy_nonoverlapping(self.data(pos), out, len) };
    }

    /// Asks the CPU to start fetching the published bytes up to PREFETCH
    /// bytes past `tail` (but not past `head`), from `*done` on, one hint
    /// per cache line: they were written on another core, and fetching them
    /// ahead hides that transfer. A hint only, never a fault.
    #[inline(always)]
    fn prefetch(&self, done: &mut u64, tail: u64, head: u64) {
        #[cfg(target_arch = "x86_64")]
        {
            let ahead = head.wrapping_sub(tail).min(PREFETCH);
            let end = tail.wrapping_add(ahead);
            if done.wrapping_sub(tail) > PREFETCH {
                *done = tail;
            }
            while end.wrapping_sub(*done) as i64 > 0 {
                let pos = *done & (self.capacity - 1);
                // SAFETY: a prefetch has no architectural effect; the
                // address is inside the data area anyway.
                unsafe {
                    use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
                    _mm_prefetch::<_MM_HINT_T0>(self.data(pos).cast::<i8>());
                }
                *done = done.wrapping_add(64);
            }
        }
        let _ = (done, tail, head);
    }

    /// Reloads head after a full barrier, for a consumer that found the ring
    /// empty (module doc); `Some(new head)` if there is more after all.
    fn recheck(&self, tail0: u64, tail: u64, head: u64) -> Option<u64> {
        if tail != tail0 {
            self.store(TAIL_OFFSET, tail, Ordering::Release);
        }
        fence(Ordering::SeqCst);
        let fresh = self.load(HEAD_OFFSET, Ordering::Acquire);
        (fresh != head).then_some(fresh)
    }

    /// Pops one message into `buf`: its length, or `Ok(None)` when the ring
    /// is empty (after which the consumer may wait for the doorbell).
    pub fn pop(&self, buf: &mut [u8]) -> Result<Option<usize>, PopError> {
        let tail0 = self.load(TAIL_OFFSET, Ordering::Relaxed);
        let mut tail = tail0;
        // Acquire pairs with the producer's head Release: records are whole.
        let mut head = self.load(HEAD_OFFSET, Ordering::Acquire);
        loop {
            match self.next_record(&mut tail, head)? {
                Some((pos, len)) => {
                    if len > buf.len() {
                        return Err(PopError::BufferTooSmall { need: len });
                    }
                    self.copy_out(pos, buf.as_mut_ptr(), len);
                    // Release: the copy is done before the producer reuses it.
                    self.store(TAIL_OFFSET, tail.wrapping_add(record_size(len)), Ordering::Release);
                    return Ok(Some(len));
                }
                None => match self.recheck(tail0, tail, head) {
                    Some(fresh) => head = fresh,
                    None => return Ok(None),
                },
            }
        }
    }

    /// Pops one message into a new vector.
    pub fn pop_vec(&self) -> Result<Option<Vec<u8>>, PopError> {
        let mut out = Vec::new();
        let got = self.pop_batch(1, |m| out = m.to_vec())?;
        Ok((got == 1).then_some(out))
    }

    /// Pops up to `max` messages, handing each to `f` (a copy, never the
    /// shared memory itself), and publishes the tail once at the end.
    /// Returns how many; fewer than `max` means the ring was seen empty and
    /// the consumer may wait for the doorbell. A corrupt record is an error
    /// at once, even after good messages: `f` has had every one before it
    /// (they are consumed, not lost), then [`Ring::discard_corrupt`] is the
    /// way on.
    pub fn pop_batch(&self, max: usize, mut f: impl FnMut(&[u8])) -> Result<usize, PopError> {
        let mut scratch: Vec<u8> = Vec::new();
        self.read_batch(max, |rec| {
            scratch.clear();
            scratch.reserve(rec.len());
            // SAFETY: reserve made room for len bytes; copy_to_ptr
            // initialises exactly that many.
            unsafe {
                rec.copy_to_ptr(scratch.as_mut_ptr());
                scratch.set_len(rec.len());
            }
            f(&scratch)
        })
    }

    /// Like [`Ring::pop_batch`], without the copy: `f` gets each message as
    /// a [`Record`] over the ring itself, valid during the call, to read in
    /// place (a sequence number, a header) or copy out. The tail is
    /// published once at the end, so the bytes stay put until then. A
    /// corrupt record is reported as in [`Ring::pop_batch`]: after the
    /// good messages before it, with the tail published past them.
    pub fn read_batch(&self, max: usize, mut f: impl FnMut(Record<'_>)) -> Result<usize, PopError> {
        let tail0 = self.load(TAIL_OFFSET, Ordering::Relaxed);
        let mut tail = tail0;
        let mut head = self.load(HEAD_OFFSET, Ordering::Acquire);
        let mut fetched = tail;
        let mut n = 0;
        while n < max {
            match self.next_record(&mut tail, head) {
                Ok(Some((pos, len))) => {
                    tail = tail.wrapping_add(record_size(len));
                    self.prefetch(&mut fetched, tail, head);
                    n += 1;
                    f(Record { ptr: self.data(pos), len, _ring: PhantomData });
                }
                Ok(None) => match self.recheck(tail0, tail, head) {
                    Some(fresh) => head = fresh,
                    None => return Ok(n),
                },
                Err(e) => {
                    // The good records before the bad one are consumed
                    // (f had them); the bad one stays for discard_corrupt.
                    if tail != tail0 {
                        self.store(TAIL_OFFSET, tail, Ordering::Release);
                    }
                    return Err(e);
                }
            }
        }
        // Release: every read above is done before the producer reuses it.
        self.store(TAIL_OFFSET, tail, Ordering::Release);
        Ok(n)
    }

    /// Drops everything in the ring (tail = head): the consumer's way out of
    /// a corrupt ring. Returns the bytes dropped.
    pub fn discard(&self) -> u64 {
        let head = self.load(HEAD_OFFSET, Ordering::Acquire);
        let tail = self.load(TAIL_OFFSET, Ordering::Relaxed);
        self.store(TAIL_OFFSET, head, Ordering::Release);
        head.wrapping_sub(tail)
    }

    /// [`Ring::discard`] after a [`PopError::Corrupt`], counted in the
    /// ring's `errors` word for the producer to see ([`Ring::errors`]).
    /// Returns the bytes dropped.
    pub fn discard_corrupt(&self) -> u64 {
        let dropped = self.discard();
        // Only the consumer writes this word (module doc), so no RMW race.
        let errors = self.load(ERRORS_OFFSET, Ordering::Relaxed);
        self.store(ERRORS_OFFSET, errors.wrapping_add(1), Ordering::Release);
        dropped
    }

    /// How many times the consumer has dropped this ring's contents as
    /// corrupt (a counter that only grows; compare with an earlier value).
    pub fn errors(&self) -> u64 {
        self.load(ERRORS_OFFSET, Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shm::{SharedMemory, ShmBacking};

    fn memfd(size: u64) -> (SharedMemory, Mapping) {
        let shm = SharedMemory::create(&ShmBacking::Memfd("ring-test".into()), size, 0o600, None).unwrap();
        let map = shm.map().unwrap();
        (shm, map)
    }

    /// One ring of `cap` bytes at offset 0 of its own mapping.
    fn lone(cap: u64) -> (SharedMemory, Mapping) {
        memfd((RING_HEADER + cap).next_power_of_two().max(4096))
    }

    fn view(map: &Mapping, cap: u64) -> Ring<'_> {
        // SAFETY: the mapping holds RING_HEADER + cap bytes and is aligned.
        unsafe { Ring::from_raw(NonNull::new(map.as_ptr()).unwrap(), cap) }
    }

    fn raw(map: &Mapping, off: u64) -> u64 {
        // SAFETY: tests read inside the mapping while nothing writes.
        u64::from_le(unsafe { map.as_ptr().add(off as usize).cast::<u64>().read() })
    }

    fn set_raw(map: &Mapping, off: u64, v: u64) {
        // SAFETY: as above, writing.
        unsafe { map.as_ptr().add(off as usize).cast::<u64>().write(v.to_le()) }
    }

    #[test]
    fn empty_ring_pops_nothing() {
        let (_s, map) = lone(256);
        let r = view(&map, 256);
        let mut buf = [0u8; 200];
        assert_eq!(r.pop(&mut buf).unwrap(), None);
        assert_eq!(r.pop_vec().unwrap(), None);
        assert_eq!(r.pop_batch(10, |_| panic!()).unwrap(), 0);
        assert!(r.is_empty());
    }

    #[test]
    fn read_batch_reads_in_place_across_the_wrap() {
        let (_s, map) = lone(1024);
        let r = view(&map, 1024);
        let mut sent = 0u64;
        let mut got = 0u64;
        for round in 0..200u64 {
            let len = 8 + (round * 37 % 300) as usize;
            let mut m = vec![(round & 0xff) as u8; len];
            m[..8].copy_from_slice(&sent.to_le_bytes());
            if r.push(&m).is_ok() {
                sent += 1;
            }
            if round % 3 == 0 {
                r.read_batch(usize::MAX, |rec| {
                    assert_eq!(rec.read_u64_le(0), Some(got));
                    assert_eq!(rec.read_u64_le(rec.len() - 7), None);
                    let mut first = [0u8; 4];
                    assert_eq!(rec.copy_to(&mut first), 4);
                    assert_eq!(rec.to_vec()[..8], got.to_le_bytes());
                    assert!(!rec.is_empty());
                    got += 1;
                })
                .unwrap();
            }
        }
        r.read_batch(usize::MAX, |_| got += 1).unwrap();
        assert_eq!(got, sent);
        assert!(r.is_empty());
        assert!(raw(&map, HEAD_OFFSET) > 1024 * 10, "wrapped many times");
    }

    #[test]
    fn doorbell_only_on_empty_to_non_empty() {
        let (_s, map) = lone(1024);
        let r = view(&map, 1024);
        assert!(r.push(b"a").unwrap());
        assert!(!r.push(b"bb").unwrap());
        assert!(!r.push(b"").unwrap());
        assert_eq!(r.pop_vec().unwrap().unwrap(), b"a");
        assert!(!r.push(b"ccc").unwrap(), "still not empty");
        let mut got = vec![];
        assert_eq!(r.pop_batch(usize::MAX, |m| got.push(m.to_vec())).unwrap(), 3);
        assert_eq!(got, vec![b"bb".to_vec(), vec![], b"ccc".to_vec()]);
        assert!(r.push(b"d").unwrap(), "empty again");
    }

    #[test]
    fn records_are_length_prefixed_and_8_aligned() {
        let (_s, map) = lone(256);
        let r = view(&map, 256);
        r.push(b"hello").unwrap();
        r.push(&[7u8; 8]).unwrap();
        assert_eq!(raw(&map, HEAD_OFFSET), 16 + 16);
        assert_eq!(raw(&map, RING_HEADER), 5);
        // SAFETY: inside the mapping.
        assert_eq!(unsafe { std::slice::from_raw_parts(map.as_ptr().add(264), 5) }, b"hello");
        assert_eq!(raw(&map, RING_HEADER + 16), 8);
        assert_eq!(raw(&map, TAIL_OFFSET), 0);
        r.pop_vec().unwrap();
        assert_eq!(raw(&map, TAIL_OFFSET), 16);
    }

    #[test]
    fn exact_fill_then_full_then_room_again() {
        let (_s, map) = lone(256);
        let r = view(&map, 256);
        assert_eq!(r.max_message(), 120);
        let a = [1u8; 120];
        let b = [2u8; 120];
        assert!(r.push(&a).unwrap());
        assert!(!r.push(&b).unwrap());
        assert_eq!(r.used_bytes(), 256);
        assert_eq!(r.push(b"").unwrap_err(), PushError::Full);
        assert_eq!(r.pop_vec().unwrap().unwrap(), a);
        // Exactly the freed 128 bytes, at position 0 (no padding needed).
        let c = [3u8; 120];
        assert!(!r.push(&c).unwrap());
        assert_eq!(r.push(b"x").unwrap_err(), PushError::Full);
        assert_eq!(r.pop_vec().unwrap().unwrap(), b);
        assert_eq!(r.pop_vec().unwrap().unwrap(), c);
        assert_eq!(r.pop_vec().unwrap(), None);
    }

    #[test]
    fn wrap_marker_when_a_record_does_not_fit_before_the_end() {
        let (_s, map) = lone(256);
        let r = view(&map, 256);
        let m = [9u8; 100]; // record 112
        r.push(&m).unwrap();
        r.pop_vec().unwrap();
        r.push(&m).unwrap();
        r.pop_vec().unwrap();
        // head at 224: 32 bytes to the end, the record needs 112.
        assert_eq!(raw(&map, HEAD_OFFSET), 224);
        assert!(r.push(&m).unwrap());
        assert_eq!(raw(&map, HEAD_OFFSET), 256 + 112);
        assert_eq!(raw(&map, RING_HEADER + 224), u64::from(FLAG_WRAP) << 32);
        assert_eq!(raw(&map, RING_HEADER), 100);
        assert_eq!(r.pop_vec().unwrap().unwrap(), m);
        assert_eq!(raw(&map, TAIL_OFFSET), 256 + 112);
        // With the padding the push needs pad + record free: not there.
        let (_s2, map2) = lone(256);
        let r = view(&map2, 256);
        r.push(&[1u8; 100]).unwrap();
        r.push(&[1u8; 100]).unwrap(); // head 224, tail 0
        r.pop_vec().unwrap(); // tail 112: 144 free, but 32 + 112 = 144 needed
        assert!(!r.push(&m).unwrap());
        assert_eq!(r.push(b"").unwrap_err(), PushError::Full);
        r.pop_vec().unwrap();
        assert_eq!(r.pop_vec().unwrap().unwrap(), m);
    }

    #[test]
    fn wrap_only_leaves_the_ring_empty_and_pop_skips_it() {
        let (_s, map) = lone(256);
        let r = view(&map, 256);
        // Hand-made: a WRAP at 248 with nothing after it.
        set_raw(&map, HEAD_OFFSET, 248);
        set_raw(&map, TAIL_OFFSET, 248);
        assert!(r.push(b"12345678").unwrap());
        assert_eq!(raw(&map, HEAD_OFFSET), 256 + 16);
        assert_eq!(r.pop_vec().unwrap().unwrap(), b"12345678");
        set_raw(&map, HEAD_OFFSET, 256 + 248 + 8);
        set_raw(&map, TAIL_OFFSET, 256 + 248);
        set_raw(&map, RING_HEADER + 248, u64::from(FLAG_WRAP) << 32);
        assert_eq!(r.pop_vec().unwrap(), None);
        assert_eq!(raw(&map, TAIL_OFFSET), 512, "the padding was consumed");
    }

    #[test]
    fn max_size_messages() {
        let cap = 256 * 1024;
        let (_s, map) = lone(cap);
        let r = view(&map, cap);
        let max = r.max_message();
        assert_eq!(max, 128 * 1024 - 8);
        assert!(max >= 64 * 1024);
        let big: Vec<u8> = (0..max).map(|i| (i * 31 % 251) as u8).collect();
        // From every position, a maximal message goes into an empty ring.
        for _ in 0..20 {
            assert!(r.push(&big).unwrap());
            assert_eq!(r.pop_vec().unwrap().unwrap(), big);
            r.push(b"shift").unwrap();
            r.pop_vec().unwrap();
        }
        assert_eq!(r.push(&vec![0; max + 1]).unwrap_err(), PushError::TooLarge { index: 0, len: max + 1, max });
        let mut small = [0u8; 10];
        r.push(&big).unwrap();
        assert_eq!(r.pop(&mut small).unwrap_err(), PopError::BufferTooSmall { need: max });
        let mut buf = vec![0u8; max];
        assert_eq!(r.pop(&mut buf).unwrap(), Some(max));
        assert_eq!(buf, big);
    }

    #[test]
    fn batches_fill_partially_and_drain_in_order() {
        let (_s, map) = lone(1024);
        let r = view(&map, 1024);
        let msgs: Vec<Vec<u8>> = (0..100u8).map(|i| vec![i; 40]).collect(); // 48-byte records
        let first = r.push_batch(&msgs).unwrap();
        assert_eq!(first, BatchPush { pushed: 21, was_empty: true }); // 21 x 48 = 1008
        assert_eq!(r.push_batch(&msgs[21..]).unwrap(), BatchPush { pushed: 0, was_empty: false });
        let mut got = vec![];
        assert_eq!(r.pop_batch(5, |m| got.push(m[0])).unwrap(), 5);
        let second = r.push_batch(&msgs[21..]).unwrap();
        assert_eq!(second, BatchPush { pushed: 5, was_empty: false });
        assert_eq!(r.pop_batch(1000, |m| got.push(m[0])).unwrap(), 21);
        assert_eq!(got, (0..26).collect::<Vec<u8>>());
        let err = r.push_batch(&[vec![1u8; 3], vec![0u8; 2000]]).unwrap_err();
        assert_eq!(err, PushError::TooLarge { index: 1, len: 2000, max: 504 });
        assert!(r.is_empty(), "nothing of a refused batch was written");
        assert_eq!(r.push_batch::<&[u8]>(&[]).unwrap().pushed, 0);
    }

    #[test]
    fn counters_wrap_around_u64() {
        let (_s, map) = lone(256);
        let r = view(&map, 256);
        let start = u64::MAX - 300;
        set_raw(&map, HEAD_OFFSET, start & !7);
        set_raw(&map, TAIL_OFFSET, start & !7);
        for i in 0..200u32 {
            let m = vec![i as u8; (i % 90) as usize];
            r.push(&m).unwrap();
            assert_eq!(r.pop_vec().unwrap().unwrap(), m);
        }
        assert!(raw(&map, HEAD_OFFSET) < 100_000, "the counter wrapped");
    }

    #[test]
    fn corruption_is_reported_not_followed() {
        let (_s, map) = lone(256);
        let r = view(&map, 256);
        r.push(b"ok").unwrap();
        set_raw(&map, RING_HEADER, 5000); // length over the limit
        assert!(matches!(r.pop_vec(), Err(PopError::Corrupt(_))));
        set_raw(&map, RING_HEADER, 2 | (4u64 << 32)); // unknown flag
        assert!(matches!(r.pop_vec(), Err(PopError::Corrupt(_))));
        set_raw(&map, RING_HEADER, 100); // runs past head
        assert!(matches!(r.pop_vec(), Err(PopError::Corrupt(_))));
        assert_eq!(r.discard(), 16);
        assert_eq!(r.pop_vec().unwrap(), None);
        set_raw(&map, TAIL_OFFSET, 1 << 40); // consumer garbage
        assert!(matches!(r.push(b"x"), Err(PushError::Corrupt { .. })));
        set_raw(&map, HEAD_OFFSET, 5000);
        set_raw(&map, TAIL_OFFSET, 3);
        assert!(matches!(r.pop_vec(), Err(PopError::Corrupt(_))));
    }

    #[test]
    fn a_corrupt_record_after_good_ones_is_reported_at_once_and_the_good_ones_are_consumed() {
        let (_s, map) = lone(1024);
        let r = view(&map, 1024);
        for i in 0..3u8 {
            r.push(&[i; 5]).unwrap();
        }
        r.push(b"bad").unwrap();
        r.push(b"after").unwrap();
        // The fourth record (each takes 16 bytes) gets an unknown flag.
        set_raw(&map, RING_HEADER + 3 * 16, 3 | (4u64 << 32));
        let mut got = Vec::new();
        let e = r.read_batch(usize::MAX, |m| got.push(m.to_vec())).unwrap_err();
        assert!(matches!(e, PopError::Corrupt(ref why) if why.contains("unknown flags")), "{e}");
        assert_eq!(got, vec![vec![0u8; 5], vec![1; 5], vec![2; 5]]);
        assert_eq!(raw(&map, TAIL_OFFSET), 48, "the good records are given back");
        // The same through pop_batch (copies), after resetting the tail.
        set_raw(&map, TAIL_OFFSET, 0);
        let mut n = 0;
        assert!(r.pop_batch(usize::MAX, |_| n += 1).is_err());
        assert_eq!(n, 3);
        // The corruption stays until discarded, and is counted for the producer.
        assert!(r.pop_vec().is_err());
        assert_eq!(r.errors(), 0);
        assert_eq!(r.discard_corrupt(), 32);
        assert_eq!(r.errors(), 1);
        assert_eq!(r.pop_vec().unwrap(), None);
        r.push(b"again").unwrap();
        assert_eq!(r.pop_vec().unwrap().unwrap(), b"again");
        r.reset();
        assert_eq!(r.errors(), 0);
    }

    #[test]
    fn layout_places_every_pair_once() {
        let l = RingLayout::with_default_base(14, 4096).unwrap();
        assert_eq!(l.base(), 8192); // 16 slots x 512 = 8192, already a page boundary
        assert_eq!(l.endpoints(), 15);
        assert_eq!(l.ring_count(), 210);
        assert_eq!(l.stride(), 4096 + 256);
        let mut seen = std::collections::HashSet::new();
        for s in 1..=15 {
            for r in 1..=15 {
                if s == r {
                    assert!(l.index(s, r).is_err());
                    continue;
                }
                let k = l.index(s, r).unwrap();
                assert!(k < l.ring_count());
                assert!(seen.insert(k));
                assert_eq!(l.offset(s, r).unwrap(), l.base() + k * l.stride());
            }
        }
        assert_eq!(l.index(1, 2).unwrap(), 0);
        assert_eq!(l.index(2, 1).unwrap(), 14);
        assert_eq!(l.index(15, 14).unwrap(), 209);
        assert!(l.index(0, 1).is_err() && l.index(1, 16).is_err());
        assert_eq!(l.end(), 8192 + 210 * 4352);
        assert_eq!(RingLayout::default_base(1), Some(4096));
        assert_eq!(RingLayout::new(14, 1000, 8192).unwrap_err(), LayoutError::BadCapacity { capacity: 1000 });
        assert_eq!(RingLayout::new(14, 128, 8192).unwrap_err(), LayoutError::BadCapacity { capacity: 128 });
        assert_eq!(RingLayout::new(14, 4096, 8000).unwrap_err(), LayoutError::BadBase { base: 8000, min: 8192 });
        assert_eq!(RingLayout::new(14, 4096, 8192 + 64).unwrap_err(), LayoutError::BadBase { base: 8256, min: 8192 });
        assert!(RingLayout::new(0, 4096, 8192).is_err());
        assert!(RingLayout::new(u64::MAX, 4096, 8192).is_err());
    }

    #[test]
    fn layout_round_trips_through_slot_0_and_rings_do_not_overlap() {
        let (_s, map) = memfd(1 << 20);
        let mb = Mailbox::new(&map).unwrap();
        mb.format(3).unwrap();
        assert_eq!(RingLayout::from_mailbox(&mb).unwrap(), None);
        let l = RingLayout::with_default_base(3, 4096).unwrap();
        l.publish(&mb).unwrap();
        l.reset_all(&map).unwrap();
        assert_eq!(raw(&map, 40), RING_MAGIC);
        assert_eq!(raw(&map, 48), 4096);
        assert_eq!(raw(&map, 56), 4096);
        assert_eq!(raw(&map, 64), 12);
        assert_eq!(mb.globals().n_clients, 3, "FAME-Z's globals untouched");
        assert_eq!(RingLayout::from_mailbox(&mb).unwrap(), Some(l));
        // Fill every ring with its own pair's bytes, then check each.
        for s in 1..=4 {
            for r in (1..=4).filter(|&r| r != s) {
                let ring = l.ring(&map, s, r).unwrap();
                while ring.push(&[(s * 16 + r) as u8; 500]).is_ok() {}
            }
        }
        for s in 1..=4 {
            for r in (1..=4).filter(|&r| r != s) {
                let ring = l.ring(&map, s, r).unwrap();
                let n = ring.pop_batch(usize::MAX, |m| assert!(m.iter().all(|&b| b == (s * 16 + r) as u8))).unwrap();
                assert_eq!(n, 4096 / 504);
            }
        }
        assert!(mb.post(4, 1, b"slot still works").is_ok());
        // A description that disagrees with nClients is refused.
        mb.set_global(global::COUNT, 13, Ordering::Relaxed).unwrap();
        assert!(matches!(RingLayout::from_mailbox(&mb), Err(LayoutError::BadGlobals(_))));
        let (_s2, small) = memfd(8192);
        assert!(matches!(l.ring(&small, 1, 2), Err(LayoutError::TooSmall { .. })));
    }

    /// Deterministic message i: an 8-byte sequence number, then bytes from
    /// a xorshift of i, with sizes from 8 up to past 4 KiB (and rare big ones).
    fn message(i: u64, out: &mut Vec<u8>) {
        let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let len = match next() % 1000 {
            0 => 8 + (next() % 60_000) as usize,
            1..=50 => 8 + (next() % 4096) as usize,
            _ => 8 + (next() % 120) as usize,
        };
        out.clear();
        out.extend_from_slice(&i.to_le_bytes());
        while out.len() < len {
            out.extend_from_slice(&next().to_le_bytes());
        }
        out.truncate(len);
    }

    #[test]
    fn two_threads_one_million_messages_none_lost_duplicated_or_reordered() {
        const N: u64 = 1_000_000;
        let cap = 128 * 1024;
        let (_s, map) = lone(cap);
        let total_sent = std::thread::scope(|sc| {
            let producer = sc.spawn(|| {
                let r = view(&map, cap);
                let mut sum = 0u64;
                let mut i = 0;
                let mut batch: Vec<Vec<u8>> = Vec::new();
                while i < N {
                    if i % 3 == 0 {
                        // A batch of up to 16.
                        batch.clear();
                        for j in i..(i + 16).min(N) {
                            let mut m = Vec::new();
                            message(j, &mut m);
                            batch.push(m);
                        }
                        let mut off = 0;
                        while off < batch.len() {
                            let got = r.push_batch(&batch[off..]).unwrap();
                            off += got.pushed;
                            if got.pushed == 0 {
                                std::thread::yield_now();
                            }
                        }
                        for m in &batch {
                            sum = sum.wrapping_add(crc(m));
                        }
                        i += batch.len() as u64;
                    } else {
                        let mut m = Vec::new();
                        message(i, &mut m);
                        loop {
                            match r.push(&m) {
                                Ok(_) => break,
                                Err(PushError::Full) => std::thread::yield_now(),
                                Err(e) => panic!("{e}"),
                            }
                        }
                        sum = sum.wrapping_add(crc(&m));
                        i += 1;
                    }
                }
                sum
            });
            let r = view(&map, cap);
            let mut expect = 0u64;
            let mut sum = 0u64;
            let mut want = Vec::new();
            let mut buf = vec![0u8; r.max_message()];
            let mut check = |m: &[u8], expect: &mut u64, sum: &mut u64| {
                message(*expect, &mut want);
                assert_eq!(m.len(), want.len(), "message {expect}: length");
                assert_eq!(u64::from_le_bytes(m[..8].try_into().unwrap()), *expect, "sequence");
                assert!(m == want.as_slice(), "message {expect}: content");
                *sum = sum.wrapping_add(crc(m));
                *expect += 1;
            };
            while expect < N {
                if expect.is_multiple_of(2) {
                    let n = r.pop_batch(64, |m| check(m, &mut expect, &mut sum)).unwrap();
                    if n == 0 {
                        std::thread::yield_now();
                    }
                } else if let Some(n) = r.pop(&mut buf).unwrap() {
                    check(&buf[..n], &mut expect, &mut sum);
                } else {
                    std::thread::yield_now();
                }
            }
            assert_eq!(r.pop_vec().unwrap(), None, "nothing after the last message");
            assert_eq!(producer.join().unwrap(), sum, "checksums");
            expect
        });
        assert_eq!(total_sent, N);
    }

    /// FNV-1a, a checksum the test can compute on both sides.
    fn crc(m: &[u8]) -> u64 {
        m.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
    }
}
