//! The consumer's half of a ring: finds and checks records against
//! `head`, copies them out or hands them over in place, publishes `tail`
//! (the protocol is in the doc of [`super`]).

use std::marker::PhantomData;
use std::ptr;
use std::sync::atomic::{fence, Ordering};

use super::{PopError, Ring, ERRORS_OFFSET, FLAG_WRAP, HEAD_OFFSET, RECORD_HEADER, TAIL_OFFSET};

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

    /// Copies all `len` bytes to `out`, which may be uninitialised memory
    /// (a buffer just allocated for them).
    ///
    /// # Safety
    /// `out` must be valid for writes of `len` bytes and must not overlap
    /// the ring.
    pub unsafe fn copy_to_ptr(&self, out: *mut u8) {
        // SAFETY: as in copy_to; the caller vouches for out.
        unsafe { ptr::copy_nonoverlapping(self.ptr, out, self.len) };
    }

    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = vec![0u8; self.len];
        self.copy_to(&mut v);
        v
    }

    #[cfg(test)]
    pub(crate) fn ptr_for_tests(&self) -> *const u8 {
        self.ptr
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

/// Where `Ring::scan` stopped.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// Nothing left before `head`.
    Caught,
    /// `max` records taken, or the callback refused one.
    Full,
}

#[cold]
fn corrupt(why: String) -> PopError {
    PopError::Corrupt(why)
}

impl<'a> Ring<'a> {
    /// The consumer's hot loop: hands the records from `*tail` up to `head`
    /// to `f` (at most `max - *n` of them), advancing `*tail` past each one
    /// `f` takes and counting it in `*n`; `*last` is where the last one
    /// taken started. Everything read from the memory is checked before it
    /// is followed. The checks that hold for the whole span are made once
    /// per `head`: `head - tail` is at most one capacity and `tail` is on
    /// the 8-byte grid; each step moves `tail` by a multiple of 8 towards
    /// `head`, so both stay true. Per record: the header is inside the
    /// span, the flags are 0 (or WRAP, whose skip stays inside it), and the
    /// record is inside the span and the data area and at most half the
    /// capacity.
    #[inline(always)]
    fn scan<F: FnMut(Record<'_>) -> bool>(
        &self,
        tail: &mut u64,
        head: u64,
        max: usize,
        n: &mut usize,
        last: &mut u64,
        f: &mut F,
    ) -> Result<Stop, PopError> {
        let cap = self.capacity;
        let mut t = *tail;
        if head.wrapping_sub(t) > cap || !t.is_multiple_of(8) {
            return Err(corrupt(format!("head {head}, tail {t}")));
        }
        let data = self.data(0);
        let mask = cap - 1;
        let half = cap / 2;
        let mut left = max.saturating_sub(*n);
        let mut prev = *last;
        let result = loop {
            if left == 0 {
                break Ok(Stop::Full);
            }
            let avail = head.wrapping_sub(t);
            if avail < RECORD_HEADER {
                if avail == 0 {
                    break Ok(Stop::Caught);
                }
                break Err(corrupt(format!("head {head}, tail {t}")));
            }
            let pos = t & mask;
            // SAFETY: pos is 8-aligned (t is) and pos + 8 <= capacity (pos
            // is a multiple of 8 below a capacity that is one): inside the
            // data area. The bytes are before head (Acquire-loaded), so
            // the producer wrote them and will not touch them until tail
            // passes them.
            let at = unsafe { data.add(pos as usize) };
            // SAFETY: as above; 8-aligned.
            let header = u64::from_le(unsafe { at.cast::<u64>().read() });
            // The record's size from the whole header: with flags (bits
            // 32-63) it is 2^32 or more and fails the bound below. One
            // bound for the rules: inside the span, before the end of the
            // data area, and at most half the capacity (len <=
            // max_message, both sides being multiples of 8).
            let rec = RECORD_HEADER + (header.wrapping_add(7) & !7);
            if rec > avail.min(cap - pos).min(half) || header > u64::from(u32::MAX) {
                match self.skip_wrap(header, pos, avail) {
                    Ok(skip) => {
                        t = t.wrapping_add(skip);
                        continue;
                    }
                    Err(e) => break Err(e),
                }
            }
            // SAFETY: pos + RECORD_HEADER + len <= pos + rec <= capacity.
            let ptr = unsafe { at.add(RECORD_HEADER as usize) };
            if !f(Record { ptr, len: header as usize, _ring: PhantomData }) {
                break Ok(Stop::Full);
            }
            prev = t;
            t = t.wrapping_add(rec);
            left -= 1;
        };
        *n = max - left;
        *last = prev;
        *tail = t;
        result
    }

    /// The header at `pos` (`avail` bytes before head) that failed the
    /// hot loop's one bound: the bytes a WRAP marker skips, or the
    /// corruption.
    #[cold]
    #[inline(never)]
    fn skip_wrap(&self, header: u64, pos: u64, avail: u64) -> Result<u64, PopError> {
        let (len, flags) = (header as u32, (header >> 32) as u32);
        match flags {
            FLAG_WRAP => {
                let skip = self.capacity - pos;
                if skip > avail {
                    return Err(corrupt(format!("wrap at {pos} passes head")));
                }
                Ok(skip)
            }
            0 => Err(corrupt(format!("record of {len} bytes at {pos}, {avail} available"))),
            _ => Err(corrupt(format!("unknown flags {flags:#x} at {pos}"))),
        }
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
        let mut too_small = None;
        let mut got = 0;
        let n = self.read_batch_while(1, |rec| {
            if rec.len() > buf.len() {
                too_small = Some(rec.len());
                return false;
            }
            got = rec.copy_to(buf);
            true
        })?;
        match too_small {
            Some(need) => Err(PopError::BufferTooSmall { need }),
            None => Ok((n == 1).then_some(got)),
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
        self.read_batch_while(max, |rec| {
            f(rec);
            true
        })
    }

    /// Like [`Ring::read_batch`], for a consumer that may fail to take a
    /// message (it could not allocate the copy): when `f` returns false,
    /// that message is not consumed and the batch ends there, with the tail
    /// published past the messages before it; it and the rest stay in the
    /// ring for the next read. Returns how many `f` took.
    pub fn read_batch_while(&self, max: usize, mut f: impl FnMut(Record<'_>) -> bool) -> Result<usize, PopError> {
        let tail0 = self.load(TAIL_OFFSET, Ordering::Relaxed);
        let mut tail = tail0;
        let mut head = self.load(HEAD_OFFSET, Ordering::Acquire);
        let (mut n, mut last) = (0, tail);
        loop {
            match self.scan(&mut tail, head, max, &mut n, &mut last, &mut f) {
                Ok(Stop::Caught) => match self.recheck(tail0, tail, head) {
                    Some(fresh) => head = fresh,
                    None => return Ok(n),
                },
                Ok(Stop::Full) => break,
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

/// A consumer that polls its ring instead of sleeping on the doorbell
/// between reads (a busy-poll window), made by [`Ring::reader`].
///
/// Same byte protocol, one difference in what the producer sees: while the
/// reader is caught up with `head` it keeps the last record it took
/// counted as in use (it publishes `tail` at that record's start, a record
/// boundary), so a producer that pushes meanwhile does not find the ring
/// empty and does not ring a doorbell nobody needs. Before the consumer
/// sleeps, [`Reader::settle`] gives every record back and tells, after the
/// full barrier, whether it may. The last record is held only while the
/// producer could still push any allowed message after it (see
/// [`Reader::may_hold`]), so holding it never makes a push wait.
///
/// The reader keeps its own position, so it must be the ring's only
/// consumer while it lives; dropping it gives every record it took back.
pub struct Reader<'r, 'a> {
    ring: &'r Ring<'a>,
    /// Past the last record taken.
    tail: u64,
    /// What the ring's `tail` says (at most `tail`).
    published: u64,
    /// The last head read: records up to it are there to take without
    /// reading head again (a line the producer writes).
    head: u64,
}

impl<'a> Ring<'a> {
    /// A [`Reader`] from the ring's current tail.
    pub fn reader(&self) -> Reader<'_, 'a> {
        let tail = self.load(TAIL_OFFSET, Ordering::Relaxed);
        Reader { ring: self, tail, published: tail, head: tail }
    }
}

impl Reader<'_, '_> {
    fn publish(&mut self, to: u64) {
        if to != self.published {
            // Release: every read of the records before `to` is done.
            self.ring.store(TAIL_OFFSET, to, Ordering::Release);
            self.published = to;
        }
    }

    /// Whether the record `last..tail`, the last one before `head ==
    /// tail`, may stay counted as in use: a producer at `tail` must still
    /// have room for the largest allowed record (half the capacity) and
    /// the WRAP padding it may need there.
    fn may_hold(&self, last: u64, tail: u64) -> bool {
        let cap = self.ring.capacity;
        let half = cap / 2;
        let room_to_end = cap - (tail & (cap - 1));
        let pad = if half <= room_to_end { 0 } else { room_to_end };
        tail.wrapping_sub(last) + pad + half <= cap
    }

    /// Like [`Ring::read_batch`], without the barrier: when nothing new is
    /// there it returns 0 at once (the consumer spins and reads again, or
    /// calls [`Reader::settle`] before it sleeps). A corrupt record is
    /// reported as in [`Ring::read_batch`]: after the good ones before it,
    /// with the tail published past them.
    pub fn read_batch(&mut self, max: usize, mut f: impl FnMut(Record<'_>)) -> Result<usize, PopError> {
        self.read_batch_while(max, |rec| {
            f(rec);
            true
        })
    }

    /// Like [`Ring::read_batch_while`], without the barrier (see
    /// [`Reader::read_batch`]).
    pub fn read_batch_while(&mut self, max: usize, mut f: impl FnMut(Record<'_>) -> bool) -> Result<usize, PopError> {
        let (mut n, mut last) = (0, self.tail);
        let mut tail = self.tail;
        let mut head = self.head;
        loop {
            if tail == head {
                // Acquire pairs with the producer's head Release: records
                // are whole.
                let fresh = self.ring.load(HEAD_OFFSET, Ordering::Acquire);
                if fresh == head {
                    break;
                }
                head = fresh;
                self.head = fresh;
            }
            match self.ring.scan(&mut tail, head, max, &mut n, &mut last, &mut f) {
                Ok(Stop::Caught) if n < max => continue,
                Ok(_) => break,
                Err(e) => {
                    self.tail = tail;
                    self.publish(tail);
                    return Err(e);
                }
            }
        }
        self.tail = tail;
        if tail != head {
            self.publish(tail);
        } else if n > 0 {
            // Caught up: hold the last record if that is safe.
            self.publish(if self.may_hold(last, tail) { last } else { tail });
        }
        // Caught up without taking anything: whatever is held stays held
        // (the producer has not published since).
        Ok(n)
    }

    /// Gives every record taken back (publishes the tail), then, after the
    /// full barrier the doorbell rule needs (module doc), looks at `head`
    /// again: true when the ring is empty and the consumer may sleep until
    /// the doorbell, false when more has come (read again).
    pub fn settle(&mut self) -> bool {
        self.publish(self.tail);
        fence(Ordering::SeqCst);
        self.head = self.ring.load(HEAD_OFFSET, Ordering::Acquire);
        self.head == self.tail
    }

    /// [`Ring::discard_corrupt`] for this reader: drops everything in the
    /// ring and goes on from the new tail. Returns the bytes dropped.
    pub fn discard_corrupt(&mut self) -> u64 {
        self.publish(self.tail);
        let dropped = self.ring.discard_corrupt();
        self.tail = self.ring.load(TAIL_OFFSET, Ordering::Relaxed);
        self.published = self.tail;
        self.head = self.tail;
        dropped
    }
}

impl Drop for Reader<'_, '_> {
    fn drop(&mut self) {
        self.publish(self.tail);
    }
}
