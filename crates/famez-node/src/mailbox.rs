//! `Mailbox`: famez-core's FAME-Z slots as a JavaScript class over a
//! `SharedMemory` (see `view` for the lifetime and the error codes).

use std::sync::atomic::Ordering;

use famez_core::mailbox::{Globals, MailboxError, SlotInfo as CoreSlot};
use famez_core::{Mailbox as CoreMailbox, Mapping, RingLayout};
use napi::bindgen_prelude::*;
use napi_derive::napi;

use crate::error::{coded, layout_error, mailbox_error, Result};
use crate::ring::{make_layout, RingLayoutInfo};
use crate::shm::{MappingCell, SharedMemory};
use crate::view::{buffer_copy, null, outside, to_u64, with_map};

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
            let n = u32::try_from(n).map_err(|_| coded("EINVAL", format_args!("nClients {n} in slot 0")))?;
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
