//! The producer's half of a ring: writes records, publishes `head`, and
//! tells whether the receiver's doorbell must be rung (the protocol is in
//! the doc of [`super`]).

use std::marker::PhantomData;
use std::ptr;
use std::sync::atomic::{fence, Ordering};

use super::{max_message, record_size, PushError, Ring, FLAG_WRAP, HEAD_OFFSET, RECORD_HEADER, TAIL_OFFSET};

/// What [`Ring::push_batch`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchPush {
    /// Messages pushed, from the front; fewer than given when the ring
    /// filled up (the rest are the caller's to retry).
    pub pushed: usize,
    /// The ring was empty before: ring the receiver's doorbell.
    pub was_empty: bool,
}

impl Ring<'_> {
    /// Reserves one record of `len` payload bytes at `*head` if it fits
    /// given `tail` (writing the WRAP marker it may need and the record's
    /// header) and advances the local head (not yet published); returns a
    /// pointer to the payload. Lengths are checked by the caller.
    #[inline(always)]
    fn reserve(&self, head: &mut u64, tail: u64, len: usize) -> Option<*mut u8> {
        let mask = self.capacity - 1;
        let rec = record_size(len);
        let pos = *head & mask;
        let room_to_end = self.capacity - pos;
        let pad = if rec <= room_to_end { 0 } else { room_to_end };
        if head.wrapping_sub(tail) + pad + rec > self.capacity {
            return None;
        }
        if pad != 0 {
            // SAFETY: pos is 8-aligned (records are) and pos + 8 <= capacity;
            // the bytes from pos to the end are free (checked above), so the
            // consumer does not read them until head is published.
            unsafe { self.data(pos).cast::<u64>().write((u64::from(FLAG_WRAP) << 32).to_le()) };
            *head = head.wrapping_add(pad);
        }
        let pos = *head & mask;
        let at = self.data(pos);
        // SAFETY: pos + rec <= capacity (the record fits before the end, by
        // the choice of pad), pos is 8-aligned, and the space is free as
        // above.
        unsafe { at.cast::<u64>().write((len as u64).to_le()) };
        *head = head.wrapping_add(rec);
        // SAFETY: the payload follows the 8-byte header inside the record
        // (pos + 8 <= pos + rec <= capacity).
        Some(unsafe { at.add(RECORD_HEADER as usize) })
    }

    /// Writes one record at `*head` if it fits given `tail`; advances the
    /// local head (not yet published). Lengths are checked by the caller.
    fn write_record(&self, head: &mut u64, tail: u64, msg: &[u8]) -> bool {
        let Some(at) = self.reserve(head, tail, msg.len()) else { return false };
        // SAFETY: reserve gave len bytes of free space of ours at `at`; msg
        // is a Rust slice that cannot overlap the mapping's free space.
        unsafe { ptr::copy_nonoverlapping(msg.as_ptr(), at, msg.len()) };
        true
    }

    /// A fresh tail for a producer that found no room with `tail`: `None`
    /// when the consumer has freed nothing since, or when its tail is not
    /// within one capacity behind `old_head` (garbage: then the ring stays
    /// full for this batch, and the next one reports it corrupt).
    fn refresh_tail(&self, old_head: u64, tail: u64) -> Option<u64> {
        let fresh = self.load(TAIL_OFFSET, Ordering::Acquire);
        (fresh != tail && old_head.wrapping_sub(fresh) <= self.capacity).then_some(fresh)
    }

    /// Publishes `head`, then tells whether the ring was empty before it
    /// (the tail had caught up with `old_head`), with the full barrier the
    /// doorbell rule needs (module doc).
    fn publish(&self, old_head: u64, head: u64) -> bool {
        self.publish_tail(old_head, head).0
    }

    /// [`Ring::publish`], also returning the tail it read (Acquire, so a
    /// producer may reuse the space it frees).
    fn publish_tail(&self, old_head: u64, head: u64) -> (bool, u64) {
        self.store(HEAD_OFFSET, head, Ordering::Release);
        fence(Ordering::SeqCst);
        let tail = self.load(TAIL_OFFSET, Ordering::Acquire);
        (tail == old_head, tail)
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
                let Some(fresh) = self.refresh_tail(old_head, tail) else { break };
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
}

/// Records written in place, made by [`Ring::writer`]: each
/// [`Writer::push_with`] reserves a record and lets the caller fill its
/// payload where it lies (a header, a sequence number, a copy), and
/// [`Writer::publish`] (or [`Writer::commit`]) publishes those written
/// since the last one at once, with one barrier and one doorbell decision,
/// as [`Ring::push_batch`] does. Nothing is published before that; a
/// writer dropped without it leaves the ring as it was. A writer kept
/// across batches reads the consumer's tail only when it runs out of the
/// room it knew of (and in each publish, which reads it anyway). One
/// writer at a time (the ring's one producer): a writer starts at the
/// published head, so a second one made while the first holds unpublished
/// records would write over them.
pub struct Writer<'r, 'a> {
    ring: &'r Ring<'a>,
    /// The data area and its size, copied here: the writer is a local of
    /// its caller, so they stay in registers across the payload copies.
    data: *mut u8,
    capacity: u64,
    old_head: u64,
    head: u64,
    tail: u64,
    pushed: usize,
}

/// The payload of one record being written, `len` bytes in the ring's
/// free space, handed out by [`Writer::push_with`]. As with
/// [`super::Record`], no Rust reference to the shared bytes is made: every
/// access is a bounds-checked raw copy. Bytes left unwritten hold whatever
/// the ring held there.
pub struct RecordMut<'w> {
    ptr: *mut u8,
    len: usize,
    _writer: PhantomData<&'w mut ()>,
}

impl RecordMut<'_> {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Copies `src` to byte `at` of the payload.
    ///
    /// # Panics
    /// When `at + src.len()` is past the payload's end.
    #[inline(always)]
    pub fn copy_from(&mut self, at: usize, src: &[u8]) {
        assert!(at <= self.len && src.len() <= self.len - at, "write past the record's end");
        // SAFETY: at + src.len() <= len: inside the reserved record, which
        // is this producer's until head is published; src is a Rust slice
        // that cannot overlap the ring's free space.
        unsafe { ptr::copy_nonoverlapping(src.as_ptr(), self.ptr.add(at), src.len()) };
    }

    /// Writes `value` as a little-endian u64 at byte `at` of the payload.
    ///
    /// # Panics
    /// When `at + 8` is past the payload's end.
    #[inline(always)]
    pub fn write_u64_le(&mut self, at: usize, value: u64) {
        self.copy_from(at, &value.to_le_bytes());
    }
}

impl<'a> Ring<'a> {
    /// A [`Writer`] starting at the ring's head. `Err(Corrupt)` when the
    /// consumer's tail is garbage.
    pub fn writer(&self) -> Result<Writer<'_, 'a>, PushError> {
        let (head, tail) = self.producer_state()?;
        Ok(Writer { ring: self, data: self.data(0), capacity: self.capacity, old_head: head, head, tail, pushed: 0 })
    }
}

impl Writer<'_, '_> {
    /// Where a record of `rec` bytes goes from `head` given `tail`: the
    /// WRAP padding before it (0 if none), or `None` when it does not fit.
    #[inline(always)]
    fn room(&self, rec: u64) -> Option<u64> {
        let cap = self.capacity;
        let room_to_end = cap - (self.head & (cap - 1));
        let pad = if rec <= room_to_end { 0 } else { room_to_end };
        (self.head.wrapping_sub(self.tail) + pad + rec <= cap).then_some(pad)
    }

    /// Reserves a record of `len` payload bytes and calls `fill` to write
    /// it. `Err(Full)` when it does not fit (backpressure: publish what is
    /// there, retry later); `Err(TooLarge)` over the ring's limit;
    /// `Err(Corrupt)` when the consumer's tail turned out garbage. In each
    /// case nothing was reserved and `fill` was not called.
    #[inline(always)]
    pub fn push_with(&mut self, len: usize, fill: impl FnOnce(&mut RecordMut<'_>)) -> Result<(), PushError> {
        let cap = self.capacity;
        let max = max_message(cap);
        if len > max {
            return Err(PushError::TooLarge { index: self.pushed, len, max });
        }
        let rec = record_size(len);
        let pad = match self.room(rec) {
            Some(pad) => pad,
            None => self.more_room(rec)?,
        };
        let mask = cap - 1;
        if pad != 0 {
            // SAFETY: head's position is 8-aligned (records are) and 8
            // bytes before the end; the bytes from it to the end are free
            // (room checked), so the consumer does not read them until
            // head is published.
            unsafe {
                self.data.add((self.head & mask) as usize).cast::<u64>().write((u64::from(FLAG_WRAP) << 32).to_le())
            };
            self.head = self.head.wrapping_add(pad);
        }
        // SAFETY: the record fits before the end of the data area (by the
        // choice of pad) in free space (room checked), at an 8-aligned
        // position.
        let at = unsafe { self.data.add((self.head & mask) as usize) };
        // SAFETY: as above.
        unsafe { at.cast::<u64>().write((len as u64).to_le()) };
        // SAFETY: the payload follows the 8-byte header inside the record.
        let ptr = unsafe { at.add(RECORD_HEADER as usize) };
        fill(&mut RecordMut { ptr, len, _writer: PhantomData });
        self.head = self.head.wrapping_add(rec);
        self.pushed += 1;
        Ok(())
    }

    /// No room with the tail the writer knows: reads the consumer's tail
    /// again (it may have freed space since); the padding to use, or
    /// `Full`, or `Corrupt` when the tail is not within one capacity behind
    /// the published head.
    #[cold]
    fn more_room(&mut self, rec: u64) -> Result<u64, PushError> {
        let fresh = self.ring.load(TAIL_OFFSET, Ordering::Acquire);
        if self.old_head.wrapping_sub(fresh) > self.capacity {
            return Err(PushError::Corrupt { head: self.old_head, tail: fresh });
        }
        self.tail = fresh;
        self.room(rec).ok_or(PushError::Full)
    }

    /// Reserves and copies one message (see [`Writer::push_with`]).
    pub fn push(&mut self, msg: &[u8]) -> Result<(), PushError> {
        self.push_with(msg.len(), |rec| rec.copy_from(0, msg))
    }

    /// Records written since the last publish.
    pub fn pushed(&self) -> usize {
        self.pushed
    }

    /// Bytes written since the last publish (records and padding).
    pub fn bytes(&self) -> u64 {
        self.head.wrapping_sub(self.old_head)
    }

    /// Publishes the records written since the last publish: what
    /// [`Ring::push_batch`] returns (`was_empty`: ring the receiver's
    /// doorbell). The writer goes on after them.
    pub fn publish(&mut self) -> BatchPush {
        if self.pushed == 0 {
            return BatchPush { pushed: 0, was_empty: false };
        }
        let (was_empty, tail) = self.ring.publish_tail(self.old_head, self.head);
        let done = BatchPush { pushed: self.pushed, was_empty };
        // The tail just read is the freshest room there is. Garbage (not
        // within one capacity behind head) counts as no room: the next
        // push reads it again and reports it.
        self.tail =
            if self.head.wrapping_sub(tail) <= self.capacity { tail } else { self.head.wrapping_sub(self.capacity) };
        self.old_head = self.head;
        self.pushed = 0;
        done
    }

    /// [`Writer::publish`], and the end of the writer.
    pub fn commit(mut self) -> BatchPush {
        self.publish()
    }
}
