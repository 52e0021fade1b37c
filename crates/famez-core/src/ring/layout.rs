//! Where every ring is in the shared object, and the rings' description in
//! slot 0 after FAME-Z's globals.

use std::ptr::NonNull;
use std::sync::atomic::Ordering;

use super::{global, max_message, LayoutError, Ring, MAX_CAPACITY, MIN_CAPACITY, RING_ALIGN, RING_HEADER, RING_MAGIC};
use crate::mailbox::{self, Mailbox};
use crate::shm::Mapping;

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
