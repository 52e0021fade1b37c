//! `Mailbox` and `Ring`: famez-core's FAME-Z slots and ring channels as
//! JavaScript classes over a `SharedMemory`.
//!
//! Lifetime choice: each view keeps a clone of the SharedMemory's mapping
//! cell (`Arc<Mutex<Option<Mapping>>>`) and locks it for the length of one
//! call. So the mapping cannot be unmapped under a call (close() takes the
//! same lock, and everything runs on the JS thread anyway), a view outliving
//! a garbage-collected SharedMemory keeps the memory mapped instead of
//! dangling, and after `SharedMemory.close()` every call fails with EBADF
//! instead of touching unmapped memory. An uncontended lock costs tens of
//! nanoseconds, paid once per call, and the batch calls (`pushBatch`,
//! `popBatch`) pay it once per batch: one native crossing, one lock, one
//! memory barrier, one doorbell decision per batch.
//!
//! Errors carry a code at the front of the message, as elsewhere in the
//! binding: EMSGSIZE (over a size limit), ERANGE (no such slot or pair),
//! EBADMSG (the other side wrote something invalid; the message is logged
//! and skipped by the caller; `popBatch`'s carries the good messages before
//! the bad record as `messages`), EINVAL (bad arguments or layout), EBADF
//! (closed). Expected outcomes are values, not errors: a busy slot makes
//! `post` return false, a full ring makes `push` return -1.

use std::borrow::Cow;
use std::ptr;
use std::sync::atomic::Ordering;

use famez_core::mailbox::{Globals, MailboxError, SlotInfo as CoreSlot};
use famez_core::ring::{LayoutError, PopError, PushError};
use famez_core::{Mailbox as CoreMailbox, Mapping, RingLayout};
use napi::bindgen_prelude::*;
use napi::sys;
use napi_derive::napi;

use crate::closed;
use crate::shm::{MappingCell, SharedMemory};

fn code_error(code: &str, status: Status, what: impl std::fmt::Display) -> Error {
    Error::new(status, format!("{code}: {what}"))
}

fn mailbox_error(e: MailboxError) -> Error {
    let code = match &e {
        MailboxError::TooLong { .. } => "EMSGSIZE",
        MailboxError::NameTooLong { .. } => "ENAMETOOLONG",
        MailboxError::BadSlot { .. } => "ERANGE",
        MailboxError::BadLength { .. } => "EBADMSG",
        MailboxError::SlotBusy { .. } => "EBUSY",
        _ => "EINVAL",
    };
    let status = if matches!(e, MailboxError::BadLength { .. }) { Status::GenericFailure } else { Status::InvalidArg };
    code_error(code, status, e)
}

fn layout_error(e: LayoutError) -> Error {
    let code = match &e {
        LayoutError::NoSuchPair { .. } => "ERANGE",
        LayoutError::BadGlobals(_) => "EBADMSG",
        _ => "EINVAL",
    };
    code_error(code, Status::InvalidArg, e)
}

fn push_error(e: PushError) -> Error {
    match e {
        PushError::TooLarge { .. } => code_error("EMSGSIZE", Status::InvalidArg, e),
        _ => code_error("EBADMSG", Status::GenericFailure, e),
    }
}

fn pop_error(e: PopError) -> Error {
    code_error("EBADMSG", Status::GenericFailure, e)
}

/// Throws an EBADMSG Error for `e` whose `messages` property is `array`
/// (the good messages popped before the bad record); returns the error that
/// tells napi-rs the exception is already pending.
fn throw_with_messages(env: sys::napi_env, e: PopError, array: sys::napi_value) -> Error {
    let text = format!("EBADMSG: {e}");
    let thrown = (|| -> Result<()> {
        let (mut code, mut msg, mut err) = (ptr::null_mut(), ptr::null_mut(), ptr::null_mut());
        // SAFETY: env is the current call's env; the strings are valid
        // UTF-8 of the given lengths, copied by Node; array is a live value.
        unsafe {
            check(sys::napi_create_string_utf8(env, c"EBADMSG".as_ptr(), 7, &mut code), "create string")?;
            check(sys::napi_create_string_utf8(env, text.as_ptr().cast(), text.len() as isize, &mut msg), "create string")?;
            check(sys::napi_create_error(env, code, msg, &mut err), "create error")?;
            check(sys::napi_set_named_property(env, err, c"messages".as_ptr(), array), "set messages")?;
            check(sys::napi_throw(env, err), "throw")
        }
    })();
    match thrown {
        Ok(()) => Error::new(Status::PendingException, text),
        Err(_) => code_error("EBADMSG", Status::GenericFailure, e),
    }
}

/// A JS number that must be a non-negative safe integer (a u64 field).
fn to_u64(what: &str, v: f64) -> Result<u64> {
    if v >= 0.0 && v.fract() == 0.0 && v <= 9_007_199_254_740_991.0 {
        Ok(v as u64)
    } else {
        Err(code_error("EINVAL", Status::InvalidArg, format!("{what} {v} is not a non-negative safe integer")))
    }
}

/// Runs `f` on the mapping, holding the cell's lock for the call.
fn with_map<R>(cell: &Option<MappingCell>, what: &str, f: impl FnOnce(&Mapping) -> Result<R>) -> Result<R> {
    let cell = cell.as_ref().ok_or_else(|| closed(what))?;
    let guard = cell.lock().unwrap_or_else(|p| p.into_inner());
    let map = guard.as_ref().ok_or_else(|| closed("shared memory"))?;
    f(map)
}

/// The bytes of a JS array to copy into the mapping. A Uint8Array may be a
/// view of this very mapping (of the SharedMemory's ArrayBuffer); copying
/// such bytes straight into the ring or slot could overlap the destination,
/// which `copy_nonoverlapping` forbids, so those are copied out first.
fn outside<'a>(map: &Mapping, data: &'a [u8]) -> Cow<'a, [u8]> {
    let (start, end) = (map.as_ptr() as usize, map.as_ptr() as usize + map.len());
    let (d0, d1) = (data.as_ptr() as usize, data.as_ptr() as usize + data.len());
    if d0 < end && start < d1 {
        Cow::Owned(data.to_vec())
    } else {
        Cow::Borrowed(data)
    }
}

/// A Node Buffer holding a copy of `bytes`.
fn buffer_copy(env: sys::napi_env, bytes: &[u8]) -> Result<sys::napi_value> {
    let mut value = ptr::null_mut();
    // SAFETY: bytes is a valid slice for the call; Node copies it into a
    // buffer it owns. The data out-pointer is not wanted.
    let status =
        unsafe { sys::napi_create_buffer_copy(env, bytes.len(), bytes.as_ptr().cast(), ptr::null_mut(), &mut value) };
    check(status, "create Buffer")?;
    Ok(value)
}

fn check(status: sys::napi_status, what: &str) -> Result<()> {
    if status == sys::Status::napi_ok {
        Ok(())
    } else {
        Err(Error::new(Status::GenericFailure, format!("{what}: napi status {status}")))
    }
}

fn null(env: sys::napi_env) -> Result<sys::napi_value> {
    let mut value = ptr::null_mut();
    // SAFETY: env is the current call's env.
    check(unsafe { sys::napi_get_null(env, &mut value) }, "null")?;
    Ok(value)
}

/// FAME-Z's five globals (slot 0).
#[napi(object)]
pub struct MailboxGlobals {
    pub slotsize: f64,
    pub buf_offset: f64,
    pub n_clients: f64,
    pub n_events: f64,
    pub server_id: f64,
}

impl From<Globals> for MailboxGlobals {
    fn from(g: Globals) -> Self {
        MailboxGlobals {
            slotsize: g.slotsize as f64,
            buf_offset: g.buf_offset as f64,
            n_clients: g.n_clients as f64,
            n_events: g.n_events as f64,
            server_id: g.server_id as f64,
        }
    }
}

/// Every field of one peer slot.
#[napi(object)]
pub struct MailboxSlot {
    /// The name up to its NUL (bytes that are not UTF-8 become U+FFFD).
    pub nodename: String,
    pub buflen: f64,
    pub peer_id: f64,
    pub last_responder: f64,
    pub peer_sid: f64,
    pub peer_cid: f64,
}

impl From<CoreSlot> for MailboxSlot {
    fn from(s: CoreSlot) -> Self {
        MailboxSlot {
            nodename: String::from_utf8_lossy(&s.nodename).into_owned(),
            buflen: s.buflen as f64,
            peer_id: s.peer_id as f64,
            last_responder: s.last_responder as f64,
            peer_sid: s.peer_sid as f64,
            peer_cid: s.peer_cid as f64,
        }
    }
}

/// Where the ring channels are.
#[napi(object)]
pub struct RingLayoutInfo {
    pub n_clients: u32,
    /// Data bytes of each ring (a power of two).
    pub capacity: f64,
    /// Offset of the first ring in the shared object.
    pub base: f64,
    /// Bytes from one ring to the next (256-byte header + capacity).
    pub stride: f64,
    /// Number of rings: (nClients + 1) x nClients.
    pub count: f64,
    /// First byte after the last ring: the object must be at least this big.
    pub end: f64,
    /// Largest message: capacity / 2 - 8.
    pub max_message: f64,
}

impl From<RingLayout> for RingLayoutInfo {
    fn from(l: RingLayout) -> Self {
        RingLayoutInfo {
            n_clients: l.n_clients() as u32,
            capacity: l.capacity() as f64,
            base: l.base() as f64,
            stride: l.stride() as f64,
            count: l.ring_count() as f64,
            end: l.end() as f64,
            max_message: l.max_message() as f64,
        }
    }
}

/// A ring layout given explicitly (instead of read from slot 0).
#[napi(object)]
pub struct RingLayoutOptions {
    pub n_clients: u32,
    pub capacity: f64,
    /// Default: the first page boundary after the mailbox slots.
    pub base: Option<f64>,
}

fn make_layout(n_clients: u32, capacity: f64, base: Option<f64>) -> Result<RingLayout> {
    let capacity = to_u64("capacity", capacity)?;
    match base {
        Some(b) => RingLayout::new(n_clients.into(), capacity, to_u64("base", b)?),
        None => RingLayout::with_default_base(n_clients.into(), capacity),
    }
    .map_err(layout_error)
}

/// The ring layout for `nClients` peers with rings of `capacity` bytes
/// (what `famez serve` checks the object's size against).
#[napi]
pub fn ring_layout(n_clients: u32, capacity: f64, base: Option<f64>) -> Result<RingLayoutInfo> {
    Ok(make_layout(n_clients, capacity, base)?.into())
}

/// The FAME-Z mailbox of a shared object.
#[napi]
pub struct Mailbox {
    cell: Option<MappingCell>,
    /// Slot indexes are limited to 1..=nClients+1 when known (else by size).
    n_clients: Option<u64>,
}

impl Mailbox {
    fn with<R>(&self, f: impl FnOnce(&Mapping, &CoreMailbox<'_>) -> Result<R>) -> Result<R> {
        with_map(&self.cell, "mailbox", |map| {
            let mut mb = CoreMailbox::new(map).map_err(mailbox_error)?;
            if let Some(n) = self.n_clients {
                mb = mb.with_clients(n).map_err(mailbox_error)?;
            }
            f(map, &mb)
        })
    }
}

#[napi]
impl Mailbox {
    /// A view of `shm`'s mailbox (mapping it if needed). Slot indexes are
    /// checked against `nClients` when given, else against the globals when
    /// they are written and fit, else against the object's size.
    #[napi(constructor)]
    pub fn new(env: Env, shm: &mut SharedMemory, n_clients: Option<u32>) -> Result<Self> {
        let cell = Some(shm.mapping_cell(env)?);
        let mut mailbox = Mailbox { cell, n_clients: None };
        let n = match n_clients {
            Some(n) => Some(u64::from(n)),
            None => mailbox.with(|_, mb| {
                let n = mb.globals().n_clients;
                Ok((n > 0 && mb.max_slot() > n).then_some(n))
            })?,
        };
        if let Some(n) = n {
            mailbox.with(|map, _| {
                CoreMailbox::new(map).and_then(|m| m.with_clients(n)).map(drop).map_err(mailbox_error)
            })?;
        }
        mailbox.n_clients = n;
        Ok(mailbox)
    }

    /// The highest valid slot index (the switch's, when nClients is known).
    #[napi(getter)]
    pub fn max_slot(&self) -> Result<u32> {
        self.with(|_, mb| Ok(mb.max_slot() as u32))
    }

    /// FAME-Z's five globals as they are in the memory now.
    #[napi(getter)]
    pub fn globals(&self) -> Result<MailboxGlobals> {
        self.with(|_, mb| Ok(mb.globals().into()))
    }

    /// Writes the five globals for `nClients` peers.
    #[napi]
    pub fn write_globals(&mut self, n_clients: u32) -> Result<MailboxGlobals> {
        let g = self.with(|_, mb| mb.write_globals(n_clients.into()).map_err(mailbox_error))?;
        self.n_clients = Some(n_clients.into());
        Ok(g.into())
    }

    /// The server's start-up: zeroes the globals and slots 1..=nClients+1,
    /// writes the globals and every slot's peer_id. Not while peers run.
    #[napi]
    pub fn format(&mut self, n_clients: u32) -> Result<MailboxGlobals> {
        self.n_clients = None;
        let g = self.with(|_, mb| mb.format(n_clients.into()).map_err(mailbox_error))?;
        self.n_clients = Some(n_clients.into());
        Ok(g.into())
    }

    /// Posts `data` (1..383 bytes) from `sender`'s slot to `receiver`. False
    /// when the slot still holds an unread message: it is never overwritten.
    /// The caller rings the receiver's vector `sender` after a true.
    #[napi]
    pub fn post(&self, sender: u32, receiver: u32, data: Uint8ArraySlice) -> Result<bool> {
        self.with(|map, mb| match mb.post(sender.into(), receiver.into(), &outside(map, data.as_ref())) {
            Ok(()) => Ok(true),
            Err(MailboxError::SlotBusy { .. }) => Ok(false),
            Err(e) => Err(mailbox_error(e)),
        })
    }

    /// Takes the message in `sender`'s slot and frees the slot (the
    /// "hardware ready" handshake); null when there is none. A buflen over
    /// 383 throws EBADMSG after freeing the slot.
    #[napi(ts_return_type = "Buffer | null")]
    pub fn take(&self, env: Env, sender: u32) -> Result<Unknown<'_>> {
        let raw = env.raw();
        let value = self.with(|_, mb| match mb.take(sender.into()).map_err(mailbox_error)? {
            Some(bytes) => buffer_copy(raw, &bytes),
            None => null(raw),
        })?;
        // SAFETY: value was just created in this env.
        Ok(unsafe { Unknown::from_raw_unchecked(raw, value) })
    }

    /// Whether `sender`'s slot holds an unread message.
    #[napi]
    pub fn busy(&self, sender: u32) -> Result<bool> {
        self.with(|_, mb| mb.is_busy(sender.into()).map_err(mailbox_error))
    }

    /// Frees a slot without reading it (its owner left).
    #[napi]
    pub fn clear(&self, slot: u32) -> Result<()> {
        self.with(|_, mb| mb.clear(slot.into()).map_err(mailbox_error))
    }

    /// Every field of a slot.
    #[napi]
    pub fn slot(&self, slot: u32) -> Result<MailboxSlot> {
        self.with(|_, mb| mb.slot(slot.into()).map(Into::into).map_err(mailbox_error))
    }

    #[napi]
    pub fn nodename(&self, slot: u32) -> Result<String> {
        self.with(|_, mb| {
            mb.nodename(slot.into()).map(|n| String::from_utf8_lossy(&n).into_owned()).map_err(mailbox_error)
        })
    }

    /// Sets a slot's nodename (at most 31 bytes of UTF-8; "" clears it).
    #[napi]
    pub fn set_nodename(&self, slot: u32, name: String) -> Result<()> {
        self.with(|_, mb| mb.set_nodename(slot.into(), name.as_bytes()).map_err(mailbox_error))
    }

    #[napi]
    pub fn set_peer_id(&self, slot: u32, value: f64) -> Result<()> {
        let v = to_u64("peer_id", value)?;
        self.with(|_, mb| mb.set_peer_id(slot.into(), v).map_err(mailbox_error))
    }

    #[napi]
    pub fn set_last_responder(&self, slot: u32, value: f64) -> Result<()> {
        let v = to_u64("last_responder", value)?;
        self.with(|_, mb| mb.set_last_responder(slot.into(), v).map_err(mailbox_error))
    }

    #[napi]
    pub fn set_peer_sid(&self, slot: u32, value: f64) -> Result<()> {
        let v = to_u64("peer_SID", value)?;
        self.with(|_, mb| mb.set_peer_sid(slot.into(), v).map_err(mailbox_error))
    }

    #[napi]
    pub fn set_peer_cid(&self, slot: u32, value: f64) -> Result<()> {
        let v = to_u64("peer_CID", value)?;
        self.with(|_, mb| mb.set_peer_cid(slot.into(), v).map_err(mailbox_error))
    }

    /// The server's ring set-up: rings of `capacity` bytes for every pair of
    /// the globals' nClients + 1 endpoints, counters zeroed, described in
    /// slot 0 after FAME-Z's globals. Not while peers use the rings.
    #[napi]
    pub fn setup_rings(&self, capacity: f64, base: Option<f64>) -> Result<RingLayoutInfo> {
        self.with(|map, mb| {
            let n = mb.globals().n_clients;
            let n = u32::try_from(n)
                .map_err(|_| code_error("EINVAL", Status::InvalidArg, format!("nClients {n} in slot 0")))?;
            let layout = make_layout(n, capacity, base)?;
            layout.reset_all(map).map_err(layout_error)?;
            layout.publish(mb).map_err(layout_error)?;
            Ok(layout.into())
        })
    }

    /// The ring layout described in slot 0, or null when there are no rings.
    #[napi(getter)]
    pub fn ring_layout(&self) -> Result<Option<RingLayoutInfo>> {
        self.with(|_, mb| Ok(RingLayout::from_mailbox(mb).map_err(layout_error)?.map(Into::into)))
    }

    /// A u64 word of slot 0 by byte offset (globals and extensions).
    #[napi]
    pub fn global(&self, offset: u32) -> Result<f64> {
        self.with(|_, mb| mb.global(offset as usize, Ordering::Acquire).map(|v| v as f64).map_err(mailbox_error))
    }

    /// Drops this view's hold on the mapping. Idempotent.
    #[napi]
    pub fn close(&mut self) {
        self.cell = None;
    }
}

/// One ring channel, sender -> receiver. The sender pushes, the receiver
/// pops; one pusher and one popper at a time (the pair's protocol).
#[napi]
pub struct Ring {
    cell: Option<MappingCell>,
    layout: RingLayout,
    sender: u64,
    receiver: u64,
    was_empty: bool,
}

impl Ring {
    fn with<R>(&self, f: impl FnOnce(&Mapping, &famez_core::Ring<'_>) -> Result<R>) -> Result<R> {
        with_map(&self.cell, "ring", |map| {
            let ring = self.layout.ring(map, self.sender, self.receiver).map_err(layout_error)?;
            f(map, &ring)
        })
    }
}

#[napi]
impl Ring {
    /// The ring from `sender` to `receiver` in `shm`, where slot 0 says the
    /// rings are (see `Mailbox.setupRings`), or where `layout` says.
    #[napi(constructor)]
    pub fn new(
        env: Env,
        shm: &mut SharedMemory,
        sender: u32,
        receiver: u32,
        layout: Option<RingLayoutOptions>,
    ) -> Result<Self> {
        let cell = Some(shm.mapping_cell(env)?);
        let layout = match layout {
            Some(o) => make_layout(o.n_clients, o.capacity, o.base)?,
            None => with_map(&cell, "ring", |map| {
                let mb = CoreMailbox::new(map).map_err(mailbox_error)?;
                RingLayout::from_mailbox(&mb).map_err(layout_error)?.ok_or_else(|| {
                    code_error("EINVAL", Status::InvalidArg, "slot 0 describes no rings (and no layout was given)")
                })
            })?,
        };
        let ring = Ring { cell, layout, sender: sender.into(), receiver: receiver.into(), was_empty: false };
        ring.with(|_, _| Ok(()))?; // the pair exists and fits in the memory
        Ok(ring)
    }

    #[napi(getter)]
    pub fn sender(&self) -> u32 {
        self.sender as u32
    }

    #[napi(getter)]
    pub fn receiver(&self) -> u32 {
        self.receiver as u32
    }

    #[napi(getter)]
    pub fn capacity(&self) -> f64 {
        self.layout.capacity() as f64
    }

    /// The largest message: capacity / 2 - 8 bytes.
    #[napi(getter)]
    pub fn max_message(&self) -> f64 {
        self.layout.max_message() as f64
    }

    /// The ring's layout (the same for every ring of the object).
    #[napi(getter)]
    pub fn layout(&self) -> RingLayoutInfo {
        self.layout.into()
    }

    /// Bytes in use now (records and padding).
    #[napi(getter)]
    pub fn used_bytes(&self) -> Result<f64> {
        self.with(|_, r| Ok(r.used_bytes() as f64))
    }

    /// Whether the last push or pushBatch that pushed anything found the
    /// ring empty: the receiver's doorbell must be rung.
    #[napi(getter)]
    pub fn was_empty(&self) -> bool {
        self.was_empty
    }

    /// Pushes one message: 1 = pushed into an empty ring (ring the
    /// receiver's doorbell), 0 = pushed, -1 = full (backpressure: retry
    /// later). Throws EMSGSIZE over maxMessage.
    #[napi]
    pub fn push(&mut self, data: Uint8ArraySlice) -> Result<i32> {
        let result = self.with(|map, r| match r.push(&outside(map, data.as_ref())) {
            Ok(empty) => Ok(Some(empty)),
            Err(PushError::Full) => Ok(None),
            Err(e) => Err(push_error(e)),
        })?;
        Ok(match result {
            Some(empty) => {
                self.was_empty = empty;
                i32::from(empty)
            }
            None => -1,
        })
    }

    /// Pushes as many messages as fit, in order, published together; returns
    /// how many (the rest are the caller's to retry). `wasEmpty` then says
    /// whether to ring the doorbell. Any message over maxMessage throws
    /// EMSGSIZE before anything is pushed.
    #[napi]
    pub fn push_batch(&mut self, messages: Vec<Uint8ArraySlice>) -> Result<u32> {
        let got = self.with(|map, r| {
            let msgs: Vec<Cow<'_, [u8]>> = messages.iter().map(|m| outside(map, m.as_ref())).collect();
            r.push_batch(&msgs).map_err(push_error)
        })?;
        if got.pushed > 0 {
            self.was_empty = got.was_empty;
        }
        Ok(got.pushed as u32)
    }

    /// Pops one message; null when the ring is empty (then wait for the
    /// doorbell). Throws EBADMSG when the producer wrote garbage.
    #[napi(ts_return_type = "Buffer | null")]
    pub fn pop(&self, env: Env) -> Result<Unknown<'_>> {
        let raw = env.raw();
        let value = self.with(|_, r| {
            let mut value = None;
            let mut failed = None;
            r.pop_batch(1, |m| match buffer_copy(raw, m) {
                Ok(v) => value = Some(v),
                Err(e) => failed = Some(e),
            })
            .map_err(pop_error)?;
            if let Some(e) = failed {
                return Err(e);
            }
            value.map_or_else(|| null(raw), Ok)
        })?;
        // SAFETY: value was just created in this env.
        Ok(unsafe { Unknown::from_raw_unchecked(raw, value) })
    }

    /// Pops up to `max` messages (all there are when omitted) in one call.
    /// Fewer than `max` means the ring was seen empty: wait for the doorbell.
    /// A corrupt record throws EBADMSG at once; the error's `messages` holds
    /// the good messages popped before it (consumed: the tail is past them),
    /// and `discardCorrupt()` drops the rest.
    #[napi(ts_return_type = "Buffer[]")]
    pub fn pop_batch(&self, env: Env, max: Option<u32>) -> Result<Unknown<'_>> {
        let raw = env.raw();
        let max = max.map_or(usize::MAX, |m| m as usize);
        let array = self.with(|_, r| {
            let mut array = ptr::null_mut();
            // SAFETY: env is the current call's env.
            check(unsafe { sys::napi_create_array(raw, &mut array) }, "create array")?;
            let mut failed = None;
            let mut i = 0u32;
            let popped = r.pop_batch(max, |m| {
                if failed.is_some() {
                    return;
                }
                let element = buffer_copy(raw, m).and_then(|b| {
                    // SAFETY: array and b are live values of this env.
                    check(unsafe { sys::napi_set_element(raw, array, i, b) }, "set element")
                });
                match element {
                    Ok(()) => i += 1,
                    Err(e) => failed = Some(e),
                }
            });
            match (failed, popped) {
                (Some(e), _) => Err(e),
                (None, Ok(_)) => Ok(array),
                // The good messages before the bad record are consumed:
                // they travel on the error, not lost.
                (None, Err(e)) => Err(throw_with_messages(raw, e, array)),
            }
        })?;
        // SAFETY: array was just created in this env.
        Ok(unsafe { Unknown::from_raw_unchecked(raw, array) })
    }

    /// Drops everything in the ring (the consumer's way out of a corrupt
    /// ring); returns the bytes dropped.
    #[napi]
    pub fn discard(&self) -> Result<f64> {
        self.with(|_, r| Ok(r.discard() as f64))
    }

    /// `discard()` after an EBADMSG, counted in the ring's error word for
    /// the producer to see (`errors`); returns the bytes dropped.
    #[napi]
    pub fn discard_corrupt(&self) -> Result<f64> {
        self.with(|_, r| Ok(r.discard_corrupt() as f64))
    }

    /// How many times the consumer has dropped this ring's contents as
    /// corrupt (only grows; the producer compares it with an earlier value).
    #[napi(getter)]
    pub fn errors(&self) -> Result<f64> {
        self.with(|_, r| Ok(r.errors() as f64))
    }

    /// Drops this view's hold on the mapping. Idempotent.
    #[napi]
    pub fn close(&mut self) {
        self.cell = None;
    }
}
