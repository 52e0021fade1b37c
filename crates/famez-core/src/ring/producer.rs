//! The producer's half of a ring: writes records, publishes `head`, and
//! tells whether the receiver's doorbell must be rung (the protocol is in
//! the doc of [`super`]).

use std::ptr;
use std::sync::atomic::{fence, Ordering};

use super::{record_size, PushError, Ring, FLAG_WRAP, HEAD_OFFSET, RECORD_HEADER, TAIL_OFFSET};

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
}
