//! The FAME-Z mailbox: the slot layout at the start of the shared object, and
//! lock-free post / take over it.
//!
//! Layout (byte-compatible with FAME-Z; every integer is a little-endian u64):
//! slot 0 holds the globals (`slotsize` 512, `buf_offset` 128, `nClients`,
//! `nEvents` = nClients + 2, `server_id` = nClients + 1); slot i (1 ..=
//! server_id) starts at i x 512 and holds `nodename` (char[32]), `buflen`,
//! `peer_id`, `last_responder`, `peer_SID`, `peer_CID` and, at 128, `buf`
//! (383 bytes of payload and a NUL). famez's own extensions (the ring
//! channels, see [`crate::ring`]) are described by words after the five
//! globals, from [`global::EXTENSIONS`] on; FAME-Z never reads them.
//!
//! The handshake: slot S belongs to sender S. To post S -> R, S waits until
//! `buflen` is 0, writes `buf`, sets `last_responder`, and only then
//! publishes `buflen` with Release ordering; the receiver reads `buflen` with
//! Acquire (so it sees the whole `buf`), copies the message, and clears
//! `buflen` with Release (so S's next write to `buf` cannot be seen before
//! the copy is done). Clearing `buflen` is the "hardware ready" signal back
//! to S. [`Mailbox::post`] never overwrites an unread message: it reports
//! [`MailboxError::SlotBusy`] and the caller decides how long to wait.
//!
//! Memory model: the object is mapped `MAP_SHARED` into several processes
//! (QEMU guests through BAR2 among them). Every word is accessed through an
//! `AtomicU64` made with `AtomicU64::from_ptr`: lock-free atomics on u64 are
//! plain aligned loads and stores (with the ordering's barriers) on the
//! physical memory, so they synchronise across processes exactly as across
//! threads (C++'s "address-free" guarantee for lock-free atomics, which Rust
//! shares). `buf` bytes are copied with raw-pointer copies, never through a
//! Rust reference, and only while the handshake gives this side ownership of
//! them. Everything read from the memory is validated (a peer may be buggy or
//! hostile): a bad `buflen` is reported, never used to index.

use std::marker::PhantomData;
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::shm::Mapping;

// The layout's numbers live in crate::layout (one source for Rust and,
// through ts/layout.generated.ts, TypeScript).
pub use crate::layout::{field, global, BUF_OFFSET, BUF_SIZE, MAX_PAYLOAD, NODENAME_SIZE, SLOT_SIZE};

/// FAME-Z's five globals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Globals {
    pub slotsize: u64,
    pub buf_offset: u64,
    pub n_clients: u64,
    pub n_events: u64,
    pub server_id: u64,
}

impl Globals {
    /// The globals a server with `n_clients` peers writes.
    pub fn for_clients(n_clients: u64) -> Self {
        Globals {
            slotsize: SLOT_SIZE as u64,
            buf_offset: BUF_OFFSET as u64,
            n_clients,
            n_events: n_clients + 2,
            server_id: n_clients + 1,
        }
    }
}

/// Every field of one peer slot, read at one moment (for dumps).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotInfo {
    /// The name up to its NUL (at most 31 bytes; any bytes, as written).
    pub nodename: Vec<u8>,
    pub buflen: u64,
    pub peer_id: u64,
    pub last_responder: u64,
    pub peer_sid: u64,
    pub peer_cid: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MailboxError {
    /// The memory cannot hold the globals and the slots asked for.
    #[error("the shared memory ({len} bytes) is too small for the mailbox ({need} bytes)")]
    TooSmall { len: usize, need: usize },
    /// A raw base pointer that is not 8-byte aligned.
    #[error("the mailbox base is not 8-byte aligned")]
    Misaligned,
    /// A slot index outside 1..=max (slot 0 is the globals).
    #[error("slot {slot} is not a peer slot (1..={max})")]
    BadSlot { slot: u64, max: u64 },
    /// A message over [`MAX_PAYLOAD`] bytes.
    #[error("a message of {len} bytes is over the mailbox limit of {max} bytes")]
    TooLong { len: usize, max: usize },
    /// An empty message: `buflen` 0 means "slot free", so it cannot be sent.
    #[error("an empty message cannot be posted (buflen 0 means free)")]
    Empty,
    /// The sender's slot still holds an unread message of `pending` bytes.
    #[error("slot {slot} still holds an unread message of {pending} bytes")]
    SlotBusy { slot: u64, pending: u64 },
    /// The slot's `buflen` was over [`MAX_PAYLOAD`]: a broken or hostile
    /// sender. The slot was cleared so the sender can go on.
    #[error("slot {slot} has buflen {buflen}, over the limit of {MAX_PAYLOAD}; the slot was cleared")]
    BadLength { slot: u64, buflen: u64 },
    /// A nodename over 31 bytes.
    #[error("a nodename of {len} bytes is over the limit of {} bytes", NODENAME_SIZE - 1)]
    NameTooLong { len: usize },
    /// A global's offset that is not a multiple of 8 inside slot 0.
    #[error("offset {offset} is not a u64 inside slot 0")]
    BadOffset { offset: usize },
    /// nClients of 0, or too many for the memory.
    #[error("nClients {n_clients} is 0 or does not fit in the shared memory")]
    BadClients { n_clients: u64 },
}

/// A view of the mailbox over a mapping (or raw memory, see
/// [`Mailbox::from_raw`]). It holds no state of its own: everything lives in
/// the shared memory, so any number of views (in any processes) may exist.
///
/// The one rule that is the caller's: a slot's message area has one writer,
/// its sender. Two views posting from the same slot at the same time (in any
/// process) would race on `buf`; famez's server and clients only post from
/// their own ID's slot. The view is `Send` but not `Sync` to keep the rule
/// visible within a process.
#[derive(Debug)]
pub struct Mailbox<'a> {
    base: NonNull<u8>,
    len: usize,
    /// The highest usable slot index.
    max_slot: u64,
    _mem: PhantomData<&'a Mapping>,
}

// SAFETY: the view only holds a pointer into memory that is valid for 'a and
// shared by design; moving it to another thread changes nothing about how
// the memory is accessed (atomics and handshake-owned copies).
unsafe impl Send for Mailbox<'_> {}

impl<'a> Mailbox<'a> {
    /// A view over a whole mapping. Slot indexes are checked against the
    /// mapping's size; [`Mailbox::with_clients`] narrows them to nClients.
    pub fn new(map: &'a Mapping) -> Result<Self, MailboxError> {
        // A Mapping comes from mmap: page-aligned and valid while borrowed.
        let base = NonNull::new(map.as_ptr()).ok_or(MailboxError::Misaligned)?;
        // SAFETY: the mapping is valid for reads and writes of len bytes for
        // 'a (the borrow), and page-aligned.
        unsafe { Self::from_raw(base, map.len()) }
    }

    /// A view over raw memory.
    ///
    /// # Safety
    /// `base` must be valid for reads and writes of `len` bytes for `'a`, and
    /// shared only with parties that follow this module's protocol (words
    /// through atomics, `buf` only under the handshake).
    pub unsafe fn from_raw(base: NonNull<u8>, len: usize) -> Result<Self, MailboxError> {
        if !(base.as_ptr() as usize).is_multiple_of(8) {
            return Err(MailboxError::Misaligned);
        }
        if len < 2 * SLOT_SIZE {
            return Err(MailboxError::TooSmall { len, need: 2 * SLOT_SIZE });
        }
        Ok(Mailbox { base, len, max_slot: (len / SLOT_SIZE - 1) as u64, _mem: PhantomData })
    }

    /// Limits slot indexes to 1..=nClients+1 (the switch's slot last), so a
    /// bad index can never reach the memory after the mailbox.
    pub fn with_clients(mut self, n_clients: u64) -> Result<Self, MailboxError> {
        let need = slots_bytes(n_clients).ok_or(MailboxError::BadClients { n_clients })?;
        if n_clients == 0 || need > self.len {
            return Err(MailboxError::BadClients { n_clients });
        }
        self.max_slot = n_clients + 1;
        Ok(self)
    }

    /// The highest slot index this view accepts.
    pub fn max_slot(&self) -> u64 {
        self.max_slot
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The word at `off`, which the callers have bounds-checked.
    fn word(&self, off: usize) -> &AtomicU64 {
        debug_assert!(off.is_multiple_of(8) && off + 8 <= self.len);
        // SAFETY: off + 8 <= len and base is 8-aligned, so the pointer is an
        // aligned u64 inside memory valid for 'a (which outlives &self). All
        // parties access these words atomically (module doc), which is what
        // AtomicU64::from_ptr requires of concurrent access.
        unsafe { AtomicU64::from_ptr(self.base.as_ptr().add(off).cast()) }
    }

    fn load(&self, off: usize, order: Ordering) -> u64 {
        u64::from_le(self.word(off).load(order))
    }

    fn store(&self, off: usize, value: u64, order: Ordering) {
        self.word(off).store(value.to_le(), order)
    }

    fn slot_base(&self, slot: u64) -> Result<usize, MailboxError> {
        if slot == 0 || slot > self.max_slot {
            return Err(MailboxError::BadSlot { slot, max: self.max_slot });
        }
        // max_slot was derived from len, so this cannot overflow or overrun.
        Ok(slot as usize * SLOT_SIZE)
    }

    // ---- globals ----

    /// FAME-Z's five globals as they are now.
    pub fn globals(&self) -> Globals {
        Globals {
            slotsize: self.load(global::SLOTSIZE, Ordering::Relaxed),
            buf_offset: self.load(global::BUF_OFFSET, Ordering::Relaxed),
            n_clients: self.load(global::N_CLIENTS, Ordering::Relaxed),
            n_events: self.load(global::N_EVENTS, Ordering::Relaxed),
            // Acquire pairs with write_globals' Release: whoever sees the
            // server_id sees the other four.
            server_id: self.load(global::SERVER_ID, Ordering::Acquire),
        }
    }

    /// Writes the five globals for `n_clients` peers (the server does this
    /// before anyone connects).
    pub fn write_globals(&self, n_clients: u64) -> Result<Globals, MailboxError> {
        match slots_bytes(n_clients) {
            Some(need) if n_clients > 0 && need <= self.len => {}
            _ => return Err(MailboxError::BadClients { n_clients }),
        }
        let g = Globals::for_clients(n_clients);
        self.store(global::SLOTSIZE, g.slotsize, Ordering::Relaxed);
        self.store(global::BUF_OFFSET, g.buf_offset, Ordering::Relaxed);
        self.store(global::N_CLIENTS, g.n_clients, Ordering::Relaxed);
        self.store(global::N_EVENTS, g.n_events, Ordering::Relaxed);
        self.store(global::SERVER_ID, g.server_id, Ordering::Release);
        Ok(g)
    }

    /// The server's start-up: zeroes slot 0 and every peer slot, writes the
    /// globals and each slot's `peer_id`. Only while no peer uses the mailbox.
    pub fn format(&self, n_clients: u64) -> Result<Globals, MailboxError> {
        let need = match slots_bytes(n_clients) {
            Some(need) if n_clients > 0 && need <= self.len => need,
            _ => return Err(MailboxError::BadClients { n_clients }),
        };
        for off in (0..need).step_by(8) {
            self.store(off, 0, Ordering::Relaxed);
        }
        for slot in 1..=n_clients + 1 {
            self.store(slot as usize * SLOT_SIZE + field::PEER_ID, slot, Ordering::Relaxed);
        }
        self.write_globals(n_clients)
    }

    /// A u64 in slot 0 (FAME-Z's globals or famez's extensions).
    pub fn global(&self, offset: usize, order: Ordering) -> Result<u64, MailboxError> {
        check_global(offset)?;
        Ok(self.load(offset, order))
    }

    /// Sets a u64 in slot 0.
    pub fn set_global(&self, offset: usize, value: u64, order: Ordering) -> Result<(), MailboxError> {
        check_global(offset)?;
        self.store(offset, value, order);
        Ok(())
    }

    // ---- per-slot fields ----

    /// The slot's nodename up to its NUL.
    pub fn nodename(&self, slot: u64) -> Result<Vec<u8>, MailboxError> {
        let base = self.slot_base(slot)?;
        let mut raw = [0u8; NODENAME_SIZE];
        for (i, chunk) in raw.chunks_exact_mut(8).enumerate() {
            chunk.copy_from_slice(&self.word(base + field::NODENAME + 8 * i).load(Ordering::Relaxed).to_ne_bytes());
        }
        let end = raw.iter().position(|&b| b == 0).unwrap_or(NODENAME_SIZE);
        Ok(raw[..end].to_vec())
    }

    /// Sets the slot's nodename (at most 31 bytes; the rest is zeroed, so
    /// the empty name clears it, as the server does on disconnect).
    pub fn set_nodename(&self, slot: u64, name: &[u8]) -> Result<(), MailboxError> {
        let base = self.slot_base(slot)?;
        if name.len() >= NODENAME_SIZE {
            return Err(MailboxError::NameTooLong { len: name.len() });
        }
        let mut raw = [0u8; NODENAME_SIZE];
        raw[..name.len()].copy_from_slice(name);
        for (i, chunk) in raw.chunks_exact(8).enumerate() {
            let word = u64::from_ne_bytes(chunk.try_into().expect("8 bytes"));
            self.word(base + field::NODENAME + 8 * i).store(word, Ordering::Relaxed);
        }
        Ok(())
    }

    fn field(&self, slot: u64, off: usize) -> Result<u64, MailboxError> {
        Ok(self.load(self.slot_base(slot)? + off, Ordering::Relaxed))
    }

    fn set_field(&self, slot: u64, off: usize, value: u64) -> Result<(), MailboxError> {
        self.store(self.slot_base(slot)? + off, value, Ordering::Relaxed);
        Ok(())
    }

    /// The pending message's length (0 = free), with Acquire ordering.
    pub fn buflen(&self, slot: u64) -> Result<u64, MailboxError> {
        Ok(self.load(self.slot_base(slot)? + field::BUFLEN, Ordering::Acquire))
    }

    /// Whether the slot still holds an unread message.
    pub fn is_busy(&self, slot: u64) -> Result<bool, MailboxError> {
        Ok(self.buflen(slot)? != 0)
    }

    pub fn peer_id(&self, slot: u64) -> Result<u64, MailboxError> {
        self.field(slot, field::PEER_ID)
    }
    pub fn set_peer_id(&self, slot: u64, value: u64) -> Result<(), MailboxError> {
        self.set_field(slot, field::PEER_ID, value)
    }
    pub fn last_responder(&self, slot: u64) -> Result<u64, MailboxError> {
        self.field(slot, field::LAST_RESPONDER)
    }
    pub fn set_last_responder(&self, slot: u64, value: u64) -> Result<(), MailboxError> {
        self.set_field(slot, field::LAST_RESPONDER, value)
    }
    pub fn peer_sid(&self, slot: u64) -> Result<u64, MailboxError> {
        self.field(slot, field::PEER_SID)
    }
    pub fn set_peer_sid(&self, slot: u64, value: u64) -> Result<(), MailboxError> {
        self.set_field(slot, field::PEER_SID, value)
    }
    pub fn peer_cid(&self, slot: u64) -> Result<u64, MailboxError> {
        self.field(slot, field::PEER_CID)
    }
    pub fn set_peer_cid(&self, slot: u64, value: u64) -> Result<(), MailboxError> {
        self.set_field(slot, field::PEER_CID, value)
    }

    /// Every field of a slot.
    pub fn slot(&self, slot: u64) -> Result<SlotInfo, MailboxError> {
        Ok(SlotInfo {
            nodename: self.nodename(slot)?,
            buflen: self.buflen(slot)?,
            peer_id: self.peer_id(slot)?,
            last_responder: self.last_responder(slot)?,
            peer_sid: self.peer_sid(slot)?,
            peer_cid: self.peer_cid(slot)?,
        })
    }

    // ---- messages ----

    /// Posts `msg` from `sender` to `receiver`: writes `buf` and its NUL,
    /// sets `last_responder`, then publishes `buflen` (Release). The caller
    /// rings the receiver's vector `sender` afterwards.
    ///
    /// `last_responder` is set *before* `buflen` (FAME-Z sets it after), so a
    /// receiver that sees the message also sees whom it was for.
    pub fn post(&self, sender: u64, receiver: u64, msg: &[u8]) -> Result<(), MailboxError> {
        let base = self.slot_base(sender)?;
        self.slot_base(receiver)?;
        if msg.is_empty() {
            return Err(MailboxError::Empty);
        }
        if msg.len() > MAX_PAYLOAD {
            return Err(MailboxError::TooLong { len: msg.len(), max: MAX_PAYLOAD });
        }
        // Acquire pairs with the receiver's clearing Release: our writes to
        // buf below happen after its copy of the previous message.
        let pending = self.load(base + field::BUFLEN, Ordering::Acquire);
        if pending != 0 {
            return Err(MailboxError::SlotBusy { slot: sender, pending });
        }
        // SAFETY: base + BUF_OFFSET + MAX_PAYLOAD + 1 <= base + SLOT_SIZE,
        // inside the memory (slot_base checked the slot). buflen is 0, so by
        // the handshake no one reads buf now and only this sender writes it.
        unsafe {
            let buf = self.base.as_ptr().add(base + field::BUF);
            ptr::copy_nonoverlapping(msg.as_ptr(), buf, msg.len());
            buf.add(msg.len()).write(0);
        }
        self.store(base + field::LAST_RESPONDER, receiver, Ordering::Relaxed);
        // Release: whoever reads this length sees buf and last_responder.
        self.store(base + field::BUFLEN, msg.len() as u64, Ordering::Release);
        Ok(())
    }

    /// Takes the message pending in `sender`'s slot into `out` (which must
    /// hold [`MAX_PAYLOAD`] bytes to take any message) and frees the slot.
    /// `Ok(None)` when the slot is empty.
    pub fn take_into(&self, sender: u64, out: &mut [u8]) -> Result<Option<usize>, MailboxError> {
        let base = self.slot_base(sender)?;
        // Acquire pairs with post's Release: buf is complete.
        let len = self.load(base + field::BUFLEN, Ordering::Acquire);
        if len == 0 {
            return Ok(None);
        }
        if len > MAX_PAYLOAD as u64 {
            // Never index with it; free the slot so the fabric keeps going.
            self.store(base + field::BUFLEN, 0, Ordering::Release);
            return Err(MailboxError::BadLength { slot: sender, buflen: len });
        }
        let len = len as usize;
        if out.len() < len {
            return Err(MailboxError::TooLong { len, max: out.len() });
        }
        // SAFETY: len <= MAX_PAYLOAD keeps the copy inside the slot; buflen
        // is non-zero, so by the handshake the sender does not write buf
        // until we clear it below. out is a distinct Rust buffer.
        unsafe { ptr::copy_nonoverlapping(self.base.as_ptr().add(base + field::BUF), out.as_mut_ptr(), len) };
        // Release: the copy above is done before the sender may reuse buf.
        self.store(base + field::BUFLEN, 0, Ordering::Release);
        Ok(Some(len))
    }

    /// Takes the message pending in `sender`'s slot, freeing the slot.
    pub fn take(&self, sender: u64) -> Result<Option<Vec<u8>>, MailboxError> {
        let mut out = [0u8; MAX_PAYLOAD];
        Ok(self.take_into(sender, &mut out)?.map(|n| out[..n].to_vec()))
    }

    /// Frees a slot without reading it (the server, when its owner left).
    pub fn clear(&self, slot: u64) -> Result<(), MailboxError> {
        let base = self.slot_base(slot)?;
        self.store(base + field::BUFLEN, 0, Ordering::Release);
        Ok(())
    }
}

/// Bytes the globals and the slots of `n_clients` peers and the switch take.
pub fn slots_bytes(n_clients: u64) -> Option<usize> {
    usize::try_from(n_clients).ok()?.checked_add(2)?.checked_mul(SLOT_SIZE)
}

fn check_global(offset: usize) -> Result<(), MailboxError> {
    if !offset.is_multiple_of(8) || offset + 8 > SLOT_SIZE {
        return Err(MailboxError::BadOffset { offset });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shm::{SharedMemory, ShmBacking};

    fn memfd(size: u64) -> (SharedMemory, Mapping) {
        let shm = SharedMemory::create(&ShmBacking::Memfd("mailbox-test".into()), size, 0o600, None).unwrap();
        let map = shm.map().unwrap();
        (shm, map)
    }

    fn raw_u64(map: &Mapping, off: usize) -> u64 {
        let mut b = [0u8; 8];
        // SAFETY: tests read inside the mapping while nothing writes.
        unsafe { ptr::copy_nonoverlapping(map.as_ptr().add(off), b.as_mut_ptr(), 8) };
        u64::from_le_bytes(b)
    }

    #[test]
    fn format_writes_fame_z_globals_byte_for_byte() {
        let (_shm, map) = memfd(16 * 512);
        let mb = Mailbox::new(&map).unwrap();
        let g = mb.format(14).unwrap();
        assert_eq!(g, Globals { slotsize: 512, buf_offset: 128, n_clients: 14, n_events: 16, server_id: 15 });
        assert_eq!(mb.globals(), g);
        let expect = [512u64, 128, 14, 16, 15];
        for (i, v) in expect.iter().enumerate() {
            assert_eq!(raw_u64(&map, i * 8), *v);
        }
        for slot in 1..=15u64 {
            assert_eq!(raw_u64(&map, slot as usize * 512 + 40), slot);
            assert_eq!(mb.peer_id(slot).unwrap(), slot);
        }
        // nClients 15 needs 17 slots: more than 16 x 512.
        assert_eq!(mb.format(15).unwrap_err(), MailboxError::BadClients { n_clients: 15 });
        assert_eq!(mb.format(0).unwrap_err(), MailboxError::BadClients { n_clients: 0 });
    }

    #[test]
    fn post_writes_the_documented_bytes_and_take_frees_the_slot() {
        let (_shm, map) = memfd(16 * 512);
        let mb = Mailbox::new(&map).unwrap().with_clients(14).unwrap();
        mb.format(14).unwrap();
        mb.post(3, 15, b"ping").unwrap();
        let s = 3 * 512;
        assert_eq!(raw_u64(&map, s + 32), 4);
        assert_eq!(raw_u64(&map, s + 48), 15);
        let mut buf = [0xffu8; 5];
        // SAFETY: inside the mapping.
        unsafe { ptr::copy_nonoverlapping(map.as_ptr().add(s + 128), buf.as_mut_ptr(), 5) };
        assert_eq!(&buf, b"ping\0");
        assert_eq!(mb.take(3).unwrap().unwrap(), b"ping");
        assert_eq!(raw_u64(&map, s + 32), 0);
        assert_eq!(mb.take(3).unwrap(), None);
    }

    #[test]
    fn busy_slot_is_refused_never_overwritten() {
        let (_shm, map) = memfd(16 * 512);
        let mb = Mailbox::new(&map).unwrap();
        mb.format(14).unwrap();
        mb.post(1, 2, b"first").unwrap();
        assert_eq!(mb.post(1, 3, b"second").unwrap_err(), MailboxError::SlotBusy { slot: 1, pending: 5 });
        assert_eq!(mb.last_responder(1).unwrap(), 2);
        assert!(mb.is_busy(1).unwrap());
        // Other senders are independent.
        mb.post(2, 1, b"other").unwrap();
        assert_eq!(mb.take(1).unwrap().unwrap(), b"first");
        mb.post(1, 3, b"second").unwrap();
        assert_eq!(mb.take(1).unwrap().unwrap(), b"second");
        assert_eq!(mb.take(2).unwrap().unwrap(), b"other");
    }

    #[test]
    fn payload_limits() {
        let (_shm, map) = memfd(16 * 512);
        let mb = Mailbox::new(&map).unwrap();
        mb.format(14).unwrap();
        let max = vec![b'x'; 383];
        mb.post(1, 2, &max).unwrap();
        assert_eq!(mb.take(1).unwrap().unwrap(), max);
        assert_eq!(mb.post(1, 2, &[b'y'; 384]).unwrap_err(), MailboxError::TooLong { len: 384, max: 383 });
        assert_eq!(mb.post(1, 2, b"").unwrap_err(), MailboxError::Empty);
        assert!(!mb.is_busy(1).unwrap());
        // The NUL after a maximal message is the last byte of the slot.
        // SAFETY: inside the mapping.
        assert_eq!(unsafe { map.as_ptr().add(2 * 512 - 1).read() }, 0);
    }

    #[test]
    fn hostile_buflen_is_rejected_and_cleared() {
        let (_shm, map) = memfd(16 * 512);
        let mb = Mailbox::new(&map).unwrap();
        mb.format(14).unwrap();
        // SAFETY: inside the mapping; a peer writing a bad length.
        unsafe { map.as_ptr().add(4 * 512 + 32).cast::<u64>().write(5000u64.to_le()) };
        assert_eq!(mb.take(4).unwrap_err(), MailboxError::BadLength { slot: 4, buflen: 5000 });
        assert_eq!(mb.buflen(4).unwrap(), 0);
    }

    #[test]
    fn slot_indexes_are_validated() {
        let (_shm, map) = memfd(4 * 512);
        let mb = Mailbox::new(&map).unwrap();
        assert_eq!(mb.max_slot(), 3);
        assert_eq!(mb.post(0, 1, b"x").unwrap_err(), MailboxError::BadSlot { slot: 0, max: 3 });
        assert_eq!(mb.post(4, 1, b"x").unwrap_err(), MailboxError::BadSlot { slot: 4, max: 3 });
        assert_eq!(mb.post(1, 4, b"x").unwrap_err(), MailboxError::BadSlot { slot: 4, max: 3 });
        assert_eq!(mb.take(u64::MAX).unwrap_err(), MailboxError::BadSlot { slot: u64::MAX, max: 3 });
        assert!(mb.nodename(4).is_err());
        let (_shm2, big) = memfd(1 << 16);
        let mb = Mailbox::new(&big).unwrap().with_clients(2).unwrap();
        assert_eq!(mb.max_slot(), 3);
        assert!(mb.set_peer_cid(4, 1).is_err());
        assert!(Mailbox::new(&big).unwrap().with_clients(127).is_err());
        let (_shm3, tiny) = memfd(512);
        assert_eq!(Mailbox::new(&tiny).unwrap_err(), MailboxError::TooSmall { len: 512, need: 1024 });
    }

    #[test]
    fn nodename_and_fields_round_trip() {
        let (_shm, map) = memfd(16 * 512);
        let mb = Mailbox::new(&map).unwrap();
        mb.format(14).unwrap();
        mb.set_nodename(15, b"Z-switch").unwrap();
        assert_eq!(mb.nodename(15).unwrap(), b"Z-switch");
        let name31 = [b'n'; 31];
        mb.set_nodename(2, &name31).unwrap();
        assert_eq!(mb.nodename(2).unwrap(), name31);
        assert_eq!(mb.set_nodename(2, &[b'n'; 32]).unwrap_err(), MailboxError::NameTooLong { len: 32 });
        mb.set_nodename(2, b"").unwrap();
        assert_eq!(mb.nodename(2).unwrap(), b"");
        mb.set_peer_sid(2, 27).unwrap();
        mb.set_peer_cid(2, 200).unwrap();
        mb.set_last_responder(2, 15).unwrap();
        let info = mb.slot(2).unwrap();
        assert_eq!(
            info,
            SlotInfo { nodename: vec![], buflen: 0, peer_id: 2, last_responder: 15, peer_sid: 27, peer_cid: 200 }
        );
        assert_eq!(raw_u64(&map, 2 * 512 + 56), 27);
        assert_eq!(raw_u64(&map, 2 * 512 + 64), 200);
        // SAFETY: inside the mapping.
        let name = unsafe { std::slice::from_raw_parts(map.as_ptr().add(15 * 512), 9) };
        assert_eq!(name, b"Z-switch\0");
        assert!(mb.global(41, Ordering::Relaxed).is_err());
        assert!(mb.global(512, Ordering::Relaxed).is_err());
        mb.set_global(504, 9, Ordering::Relaxed).unwrap();
        assert_eq!(mb.global(504, Ordering::Relaxed).unwrap(), 9);
    }

    #[test]
    fn two_threads_pass_messages_through_the_handshake() {
        let (_shm, map) = memfd(16 * 512);
        Mailbox::new(&map).unwrap().format(14).unwrap();
        const N: u32 = 50_000;
        std::thread::scope(|s| {
            s.spawn(|| {
                let mb = Mailbox::new(&map).unwrap();
                for i in 0..N {
                    let msg = format!("msg {i} {}", "x".repeat((i % 300) as usize));
                    loop {
                        match mb.post(5, 6, msg.as_bytes()) {
                            Ok(()) => break,
                            Err(MailboxError::SlotBusy { .. }) => std::hint::spin_loop(),
                            Err(e) => panic!("{e}"),
                        }
                    }
                }
            });
            let mb = Mailbox::new(&map).unwrap();
            let mut next = 0;
            while next < N {
                if let Some(m) = mb.take(5).unwrap() {
                    let want = format!("msg {next} {}", "x".repeat((next % 300) as usize));
                    assert_eq!(m, want.as_bytes());
                    next += 1;
                } else {
                    std::hint::spin_loop();
                }
            }
        });
    }
}
