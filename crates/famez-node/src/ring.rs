//! `Ring`: one of famez-core's ring channels as a JavaScript class over a
//! `SharedMemory` (see `view` for the lifetime and the error codes), and
//! the ring layout.

use std::borrow::Cow;
use std::ptr;

use famez_core::ring::{PushError, Record};
use famez_core::{Mailbox as CoreMailbox, Mapping, RingLayout};
use napi::bindgen_prelude::*;
use napi::sys;
use napi_derive::napi;

use crate::error::{check, coded, layout_error, mailbox_error, pop_error, push_error, Error, Result};
use crate::shm::{MappingCell, SharedMemory};
use crate::view::{null, outside, to_u64, with_map};

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

pub(crate) fn make_layout(n_clients: u32, capacity: f64, base: Option<f64>) -> Result<RingLayout> {
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
                RingLayout::from_mailbox(&mb)
                    .map_err(layout_error)?
                    .ok_or_else(|| coded("EINVAL", "slot 0 describes no rings (and no layout was given)"))
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
            let mut value = Ok(None);
            // A message whose copy fails stays in the ring (false).
            r.read_batch_while(1, |rec| {
                value = buffer_of(raw, &rec).map(Some);
                value.is_ok()
            })
            .map_err(pop_error)?;
            value?.map_or_else(|| null(raw), Ok)
        })?;
        // SAFETY: value was just created in this env.
        Ok(unsafe { Unknown::from_raw_unchecked(raw, value) })
    }

    /// Pops up to `max` messages (all there are when omitted) in one call.
    /// Fewer than `max` means the ring was seen empty: wait for the doorbell.
    /// A corrupt record throws EBADMSG at once; the error's `messages` holds
    /// the good messages popped before it (consumed: the tail is past them),
    /// and `discardCorrupt()` drops the rest. A message this process cannot
    /// copy (napi cannot allocate its Buffer) is not consumed: it and the
    /// rest stay in the ring, and the error (napi's code, not EBADMSG) has
    /// the messages before it as `messages`.
    #[napi(ts_return_type = "Buffer[]")]
    pub fn pop_batch(&self, env: Env, max: Option<u32>) -> Result<Unknown<'_>> {
        let raw = env.raw();
        let max = max.map_or(usize::MAX, |m| m as usize);
        let array = self.with(|_, r| {
            let mut array = ptr::null_mut();
            // SAFETY: env is the current call's env.
            check(unsafe { sys::napi_create_array(raw, &mut array) }, "napi_create_array")?;
            let mut failed = None;
            let mut i = 0u32;
            let popped = r.read_batch_while(max, |rec| {
                let element = buffer_of(raw, &rec).and_then(|b| {
                    // SAFETY: array and b are live values of this env.
                    check(unsafe { sys::napi_set_element(raw, array, i, b) }, "napi_set_element")
                });
                match element {
                    Ok(()) => i += 1,
                    Err(e) => failed = Some(e),
                }
                failed.is_none()
            });
            match (failed, popped) {
                (None, Ok(_)) => Ok(array),
                // The messages before the one that failed (or the bad
                // record) are consumed: they travel on the error, not lost.
                (Some(e), _) => Err(throw_with_messages(raw, e, array)),
                (None, Err(e)) => Err(throw_with_messages(raw, pop_error(e), array)),
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

/// A Node Buffer holding a copy of the record (one copy, straight from the
/// ring into the Buffer's memory).
fn buffer_of(env: sys::napi_env, rec: &Record<'_>) -> Result<sys::napi_value> {
    let (mut value, mut data) = (ptr::null_mut(), ptr::null_mut());
    // SAFETY: env is the current call's env; Node allocates len bytes it
    // owns and returns their address in data.
    check(unsafe { sys::napi_create_buffer(env, rec.len(), &mut data, &mut value) }, "napi_create_buffer")?;
    if !rec.is_empty() {
        // SAFETY: data is valid for len bytes (just allocated, not in the
        // ring: a Buffer of Node's own, not the SharedMemory's mapping).
        unsafe { rec.copy_to_ptr(data.cast()) };
    }
    Ok(value)
}

/// Throws `e` (its code and message) with `messages` set to `array` (the
/// messages popped before it); returns the error that tells napi-rs the
/// exception is already pending, or `e` itself when it cannot be thrown so.
fn throw_with_messages(env: sys::napi_env, e: Error, array: sys::napi_value) -> Error {
    let thrown = (|| -> Result<()> {
        let (mut code, mut msg, mut err) = (ptr::null_mut(), ptr::null_mut(), ptr::null_mut());
        let c = e.status.as_ref();
        // SAFETY: env is the current call's env; the strings are valid
        // UTF-8 of the given lengths, copied by Node; array is a live value.
        unsafe {
            check(
                sys::napi_create_string_utf8(env, c.as_ptr().cast(), c.len() as isize, &mut code),
                "napi_create_string_utf8",
            )?;
            check(
                sys::napi_create_string_utf8(env, e.reason.as_ptr().cast(), e.reason.len() as isize, &mut msg),
                "napi_create_string_utf8",
            )?;
            check(sys::napi_create_error(env, code, msg, &mut err), "napi_create_error")?;
            check(sys::napi_set_named_property(env, err, c"messages".as_ptr(), array), "napi_set_named_property")?;
            check(sys::napi_throw(env, err), "napi_throw")
        }
    })();
    match thrown {
        Ok(()) => crate::error::pending(),
        Err(_) => e,
    }
}
