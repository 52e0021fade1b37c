//! The consumer's half of a ring: finds and checks records against
//! `head`, copies them out or hands them over in place, publishes `tail`
//! (the protocol is in the doc of [`super`]).

use std::marker::PhantomData;
use std::ptr;
use std::sync::atomic::{fence, Ordering};

use super::{record_size, PopError, Ring, ERRORS_OFFSET, FLAG_WRAP, HEAD_OFFSET, PREFETCH, RECORD_HEADER, TAIL_OFFSET};

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

    /// The little-endian u64 at byte `at`, if the message holds it.
    pub fn read_u64_le(&self, at: usize) -> Option<u64> {
        if at.checked_add(8)? > self.len {
            return None;
        }
        // SAFETY: at + 8 <= len, inside the record; unaligned read.
        Some(u64::from_le(unsafe { self.ptr.add(at).cast::<u64>().read_unaligned() }))
    }
}

impl Ring<'_> {
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
        let mut fetched = tail;
        let mut n = 0;
        while n < max {
            match self.next_record(&mut tail, head) {
                Ok(Some((pos, len))) => {
                    let next = tail.wrapping_add(record_size(len));
                    self.prefetch(&mut fetched, next, head);
                    if !f(Record { ptr: self.data(pos), len, _ring: PhantomData }) {
                        break;
                    }
                    tail = next;
                    n += 1;
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
