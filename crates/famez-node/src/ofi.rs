//! Links on libfabric (famez_core::ofi) as JavaScript classes: `OfiListener`
//! (a passive endpoint on ADDR:PORT), `OfiLink` (one side of a link) and
//! `OfiWindow` (memory the peer reads and writes with RMA), plus the
//! `libfabricAvailable()` probe.
//!
//! libfabric is loaded only when a listener or link is opened (dlopen; see
//! docs/multi-host.md); without it they throw ELIBACC, "libfabric is not
//! installed: apt-get install libfabric1 (...)".
//!
//! Completions and connection events arrive on Node's loop through the
//! CQ's and EQ's wait fds, watched with `uv_poll` (see `poll`): no thread,
//! no timer. One callback gets everything, as `(kind, id, data, code,
//! message)`: kinds are the `LINK_*` numbers below (ts/link/ofi.ts names them).

use std::cell::RefCell;
use std::rc::Rc;

use famez_core::ofi::{self, Completion, LinkEvent, OfiError, Options, RemoteWindow, State};
use napi::bindgen_prelude::{BigInt, Buffer, Env, This, Uint8ArraySlice, Unknown};
use napi::JsValue;
use napi_derive::napi;

use crate::error::{coded, Error, Result};
use crate::poll::{Ctx, Poll, ERROR, READABLE};

/// A message arrived: `data`.
pub const LINK_MESSAGE: u32 = 0;
/// An RMA read finished: `id`, `data`.
pub const LINK_READ: u32 = 1;
/// An RMA write finished: `id`.
pub const LINK_WRITTEN: u32 = 2;
/// An RMA operation failed: `id`, `code`, `message`.
pub const LINK_RMA_FAILED: u32 = 3;
/// A send failed: `code`, `message`.
pub const LINK_SEND_FAILED: u32 = 4;
pub const LINK_CONNECTED: u32 = 5;
/// The peer shut the link down.
pub const LINK_SHUTDOWN: u32 = 6;
/// Connecting failed, or the link did: `code`, `message`.
pub const LINK_ERROR: u32 = 7;
/// A message could not be received (longer than maxMessage: FI_ETRUNC): `code`, `message`.
pub const LINK_RECEIVE_FAILED: u32 = 8;

fn ofi_error(e: OfiError) -> Error {
    coded(e.code(), e)
}

/// How a listener or link is opened (all optional).
#[napi(object)]
pub struct LinkOptions {
    /// libfabric provider with connected endpoints (FI_EP_MSG): "tcp" (default), "verbs".
    pub provider: Option<String>,
    /// Receives kept posted and sends in flight (default 32).
    pub depth: Option<u32>,
    /// The largest message in bytes (default 65536); both ends must agree.
    pub max_message: Option<u32>,
    /// The library to dlopen (default $FAMEZ_LIBFABRIC, else libfabric.so.1).
    pub library: Option<String>,
}

fn options(o: Option<LinkOptions>) -> Result<Options> {
    let d = Options::default();
    let Some(o) = o else { return Ok(d) };
    let depth = o.depth.map_or(d.depth, |v| v as usize);
    let max_message = o.max_message.map_or(d.max_message, |v| v as usize);
    if depth == 0 || max_message == 0 {
        return Err(coded("EINVAL", "depth and maxMessage must be positive"));
    }
    Ok(Options { provider: o.provider.unwrap_or(d.provider), depth, max_message, library: o.library })
}

#[napi(object)]
pub struct LibfabricProbe {
    pub available: bool,
    /// "1.17" when available.
    pub version: Option<String>,
    /// ELIBACC or ELIBBAD when not.
    pub code: Option<String>,
    /// The one-line reason (naming the fix) when not.
    pub error: Option<String>,
}

/// Whether libfabric can be loaded (from `library`, else as a link would),
/// without opening anything.
#[napi]
pub fn libfabric_available(library: Option<String>) -> LibfabricProbe {
    match ofi::available(library.as_deref()) {
        Ok((major, minor)) => {
            LibfabricProbe { available: true, version: Some(format!("{major}.{minor}")), code: None, error: None }
        }
        Err(e) => LibfabricProbe { available: false, version: None, code: Some(e.code()), error: Some(e.to_string()) },
    }
}

/// The peer's window: what `OfiWindow.remote` gives its owner to send.
#[napi(object)]
pub struct RemoteWindowInfo {
    pub addr: BigInt,
    pub key: BigInt,
    pub size: f64,
}

fn u64_of(what: &str, b: &BigInt) -> Result<u64> {
    let (negative, v, lossless) = b.get_u64();
    if negative || !lossless {
        return Err(coded("ERANGE", format_args!("{what} is not a 64-bit unsigned number")));
    }
    Ok(v)
}

fn remote_of(w: &RemoteWindowInfo) -> Result<RemoteWindow> {
    if !(w.size.is_finite() && w.size >= 0.0) {
        return Err(coded("EINVAL", "the window's size is not a number of bytes"));
    }
    Ok(RemoteWindow { addr: u64_of("addr", &w.addr)?, key: u64_of("key", &w.key)?, size: w.size as u64 })
}

fn offset_of(offset: f64) -> Result<u64> {
    if !(offset.is_finite() && offset >= 0.0 && offset.fract() == 0.0 && offset <= u64::MAX as f64) {
        return Err(coded("EINVAL", format_args!("offset {offset} is not a whole number of bytes")));
    }
    Ok(offset as u64)
}

type Shared = Rc<RefCell<Option<ofi::Endpoint>>>;

/// One side of a link.
#[napi]
pub struct OfiLink {
    ep: Shared,
    polls: Vec<Poll>,
}

#[napi]
impl OfiLink {
    /// Starts connecting to `addr` (HOST:PORT): LINK_CONNECTED, or
    /// LINK_ERROR with ECONNREFUSED, follows through `watch`'s callback.
    #[napi(factory)]
    pub fn connect(addr: String, options: Option<LinkOptions>) -> Result<Self> {
        let ep = ofi::Endpoint::connect(&self::options(options)?, &addr).map_err(ofi_error)?;
        Ok(OfiLink { ep: Rc::new(RefCell::new(Some(ep))), polls: Vec::new() })
    }

    /// "connecting", "connected", "down" (the peer shut down, or connecting
    /// failed) or "closed".
    #[napi(getter, ts_return_type = "'connecting' | 'connected' | 'down' | 'closed'")]
    pub fn state(&self) -> &'static str {
        match self.ep.borrow().as_ref().map(|e| e.state()) {
            Some(State::Connecting) => "connecting",
            Some(State::Connected) => "connected",
            Some(State::Down) => "down",
            Some(State::Closed) | None => "closed",
        }
    }

    /// The provider that serves the link ("tcp").
    #[napi(getter)]
    pub fn provider(&self) -> String {
        self.ep.borrow().as_ref().map(|e| e.granted().provider.clone()).unwrap_or_default()
    }

    /// Whether the provider grants RMA (read/write/createWindow).
    #[napi(getter)]
    pub fn rma(&self) -> bool {
        self.ep.borrow().as_ref().is_some_and(|e| e.granted().rma)
    }

    /// The local "ADDR:PORT".
    #[napi(getter)]
    pub fn local_address(&self) -> Result<String> {
        self.with(|e| e.local_addr().map(|a| a.to_string()).map_err(ofi_error))
    }

    /// Sends and RMA operations queued (not yet handed to libfabric).
    #[napi(getter)]
    pub fn queued(&self) -> u32 {
        self.ep.borrow().as_ref().map_or(0, |e| e.queued() as u32)
    }

    /// Operations handed to libfabric and not yet completed.
    #[napi(getter)]
    pub fn in_flight(&self) -> u32 {
        self.ep.borrow().as_ref().map_or(0, |e| e.in_flight() as u32)
    }

    fn with<T>(&self, f: impl FnOnce(&mut ofi::Endpoint) -> Result<T>) -> Result<T> {
        match self.ep.borrow_mut().as_mut() {
            Some(e) if e.state() != State::Closed => f(e),
            _ => Err(ofi_error(OfiError::Closed)),
        }
    }

    /// Sends a copy of `data`; messages arrive in order. Throws EMSGSIZE
    /// past maxMessage, ENOTCONN once the link is down, EBADF once closed.
    /// May be called while connecting: the message goes out on connect.
    #[napi]
    pub fn send(&self, data: Uint8ArraySlice) -> Result<()> {
        self.with(|e| e.send(&data).map_err(ofi_error))
    }

    /// Starts an RMA read of `len` bytes at `offset` in the peer's window;
    /// returns the id that LINK_READ (or LINK_RMA_FAILED) carries.
    #[napi]
    pub fn read(&self, window: RemoteWindowInfo, offset: f64, len: u32) -> Result<u32> {
        let w = remote_of(&window)?;
        let offset = offset_of(offset)?;
        self.with(|e| e.read(&w, offset, len as usize).map_err(ofi_error))
    }

    /// Starts an RMA write of `data` at `offset` in the peer's window;
    /// returns the id that LINK_WRITTEN (or LINK_RMA_FAILED) carries.
    #[napi]
    pub fn write(&self, window: RemoteWindowInfo, offset: f64, data: Uint8ArraySlice) -> Result<u32> {
        let w = remote_of(&window)?;
        let offset = offset_of(offset)?;
        self.with(|e| e.write(&w, offset, &data).map_err(ofi_error))
    }

    /// A new zeroed window of `size` bytes that the peer may read and write.
    #[napi]
    pub fn create_window(&self, size: u32) -> Result<OfiWindow> {
        let w = self.with(|e| e.window(size as usize).map_err(ofi_error))?;
        Ok(OfiWindow { window: Some(w) })
    }

    /// A window over the first `size` bytes of the open file `fd` (mapped
    /// shared on its own: what the peer writes lands in the file, and the
    /// window outlives `fd`), registered with `key` when given.
    #[napi]
    pub fn create_file_window(&self, fd: i32, size: f64, key: Option<BigInt>) -> Result<OfiWindow> {
        if fd < 0 {
            return Err(coded("EBADF", format_args!("{fd} is not a file descriptor")));
        }
        if !(size.is_finite() && size >= 1.0 && size.fract() == 0.0 && size <= usize::MAX as f64) {
            return Err(coded("EINVAL", format_args!("a file window of {size} bytes")));
        }
        let key = key.as_ref().map(|k| u64_of("key", k)).transpose()?;
        // SAFETY: the caller owns `fd` and keeps it open for this call; the
        // window maps it and keeps no reference to the descriptor.
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        let w = self.with(|e| e.window_over_file(fd, size as usize, key).map_err(ofi_error))?;
        Ok(OfiWindow { window: Some(w) })
    }

    /// Delivers completions and connection events to `callback` on Node's
    /// loop, woken by the CQ's and EQ's fds; replaces an earlier watch.
    /// While watched the object stays alive (like an active handle) until
    /// unwatch() or close().
    #[napi(
        ts_args_type = "callback: (kind: number, id: number, data: Buffer | null, code: string | null, message: string | null) => void"
    )]
    pub fn watch(&mut self, env: Env, this: This, callback: Unknown) -> Result<()> {
        let (cq, eq) = self.with(|e| Ok((e.cq_fd(), e.eq_fd())))?;
        self.unwatch();
        let ep = self.ep.clone();
        let on_cq = Box::new(move |ctx: &Ctx, events: i32| {
            if events & ERROR == 0 {
                deliver_completions(&ep, ctx)
            }
        });
        let ep = self.ep.clone();
        let on_eq = Box::new(move |ctx: &Ctx, events: i32| {
            if events & ERROR == 0 {
                deliver_events(&ep, ctx)
            }
        });
        self.polls.push(Poll::start(&env, eq, READABLE, callback.raw(), this.object.raw(), on_eq)?);
        self.polls.push(Poll::start(&env, cq, READABLE, callback.raw(), this.object.raw(), on_cq)?);
        Ok(())
    }

    /// Stops watching; the link stays open.
    #[napi]
    pub fn unwatch(&mut self) {
        for mut p in self.polls.drain(..) {
            p.close();
        }
    }

    /// Whether an active watch keeps the process alive (default true).
    #[napi(js_name = "ref")]
    pub fn keep_alive(&self, keep: Option<bool>) {
        for p in &self.polls {
            p.set_ref(keep.unwrap_or(true));
        }
    }

    /// Shuts the link down (the peer gets LINK_SHUTDOWN), stops watching
    /// and closes the endpoint and its queues. Idempotent.
    #[napi]
    pub fn close(&mut self) {
        self.unwatch();
        if let Some(mut e) = self.ep.borrow_mut().take() {
            e.close();
        }
    }
}

impl Drop for OfiLink {
    fn drop(&mut self) {
        self.close();
    }
}

/// Reads the CQ (the endpoint borrowed only meanwhile, so the callback may
/// send), then calls JavaScript once per completion.
fn deliver_completions(ep: &Shared, ctx: &Ctx) {
    let mut got = Vec::new();
    let failed = match ep.borrow_mut().as_mut() {
        Some(e) => e.progress(&mut got).err(),
        None => return,
    };
    for c in got {
        if ep.borrow().is_none() {
            // Closed by an earlier callback of this batch.
            return;
        }
        let ok = match c {
            Completion::Message(m) => {
                ctx.call(|c| Ok([c.number(LINK_MESSAGE as f64)?, c.number(0.0)?, c.buffer(&m)?, c.null()?, c.null()?]))
            }
            Completion::Read { id, data } => ctx.call(|c| {
                Ok([c.number(LINK_READ as f64)?, c.number(id as f64)?, c.buffer(&data)?, c.null()?, c.null()?])
            }),
            Completion::Written { id } => ctx
                .call(|c| Ok([c.number(LINK_WRITTEN as f64)?, c.number(id as f64)?, c.null()?, c.null()?, c.null()?])),
            Completion::RmaFailed { id, error } => call_error(ctx, LINK_RMA_FAILED, id, &error),
            Completion::SendFailed(error) => call_error(ctx, LINK_SEND_FAILED, 0, &error),
            Completion::ReceiveFailed(error) => call_error(ctx, LINK_RECEIVE_FAILED, 0, &error),
        };
        if !ok {
            // The callback threw: the rest of the batch is lost with it, as
            // an EventEmitter's listeners after a throwing one would be.
            return;
        }
    }
    if let Some(e) = failed {
        call_error(ctx, LINK_ERROR, 0, &e);
    }
}

fn deliver_events(ep: &Shared, ctx: &Ctx) {
    let mut got = Vec::new();
    let failed = match ep.borrow_mut().as_mut() {
        Some(e) => e.events(&mut got).err(),
        None => return,
    };
    for ev in got {
        if ep.borrow().is_none() {
            return;
        }
        let ok = match ev {
            LinkEvent::Connected => {
                ctx.call(|c| Ok([c.number(LINK_CONNECTED as f64)?, c.number(0.0)?, c.null()?, c.null()?, c.null()?]))
            }
            LinkEvent::Shutdown => {
                ctx.call(|c| Ok([c.number(LINK_SHUTDOWN as f64)?, c.number(0.0)?, c.null()?, c.null()?, c.null()?]))
            }
            LinkEvent::Error(e) => call_error(ctx, LINK_ERROR, 0, &e),
        };
        if !ok {
            return;
        }
    }
    if let Some(e) = failed {
        call_error(ctx, LINK_ERROR, 0, &e);
    }
}

fn call_error(ctx: &Ctx, kind: u32, id: u32, e: &OfiError) -> bool {
    let code = e.code();
    let message = format!("{code}: {e}");
    ctx.call(|c| Ok([c.number(kind as f64)?, c.number(id as f64)?, c.null()?, c.string(&code)?, c.string(&message)?]))
}

/// A passive endpoint listening for links.
#[napi]
pub struct OfiListener {
    listener: Rc<RefCell<Option<ofi::Listener>>>,
    poll: Option<Poll>,
}

#[napi]
impl OfiListener {
    /// Listens on `addr` (HOST:PORT; port 0 picks one, see `address`).
    #[napi(factory)]
    pub fn listen(addr: String, options: Option<LinkOptions>) -> Result<Self> {
        let l = ofi::Listener::bind(&self::options(options)?, &addr).map_err(ofi_error)?;
        Ok(OfiListener { listener: Rc::new(RefCell::new(Some(l))), poll: None })
    }

    /// The bound "ADDR:PORT".
    #[napi(getter)]
    pub fn address(&self) -> Result<String> {
        match &*self.listener.borrow() {
            Some(l) => l.local_addr().map(|a| a.to_string()).map_err(ofi_error),
            None => Err(ofi_error(OfiError::Closed)),
        }
    }

    /// Accepts the next connection request: a link that reports
    /// LINK_CONNECTED once watched; null when none is waiting.
    #[napi]
    pub fn accept(&self) -> Result<Option<OfiLink>> {
        let ep = match self.listener.borrow_mut().as_mut() {
            Some(l) => l.accept().map_err(ofi_error)?,
            None => return Err(ofi_error(OfiError::Closed)),
        };
        Ok(ep.map(|ep| OfiLink { ep: Rc::new(RefCell::new(Some(ep))), polls: Vec::new() }))
    }

    /// Calls `callback()` on Node's loop when a connection request may be
    /// waiting (then `accept()` until null); replaces an earlier watch.
    #[napi(ts_args_type = "callback: () => void")]
    pub fn watch(&mut self, env: Env, this: This, callback: Unknown) -> Result<()> {
        let fd = match &*self.listener.borrow() {
            Some(l) => l.eq_fd(),
            None => return Err(ofi_error(OfiError::Closed)),
        };
        self.unwatch();
        let handler = Box::new(move |ctx: &Ctx, events: i32| {
            if events & ERROR == 0 {
                ctx.call(|_| Ok([]));
            }
        });
        self.poll = Some(Poll::start(&env, fd, READABLE, callback.raw(), this.object.raw(), handler)?);
        Ok(())
    }

    #[napi]
    pub fn unwatch(&mut self) {
        if let Some(mut p) = self.poll.take() {
            p.close();
        }
    }

    #[napi(js_name = "ref")]
    pub fn keep_alive(&self, keep: Option<bool>) {
        if let Some(p) = &self.poll {
            p.set_ref(keep.unwrap_or(true));
        }
    }

    /// Stops listening. Links already accepted stay open. Idempotent.
    #[napi]
    pub fn close(&mut self) {
        self.unwatch();
        self.listener.borrow_mut().take();
    }
}

impl Drop for OfiListener {
    fn drop(&mut self) {
        self.close();
    }
}

/// Memory registered for the peer's RMA. It stays registered (and valid)
/// until closed, even after its link closes.
#[napi]
pub struct OfiWindow {
    window: Option<ofi::Window>,
}

#[napi]
impl OfiWindow {
    fn get(&self) -> Result<&ofi::Window> {
        self.window.as_ref().ok_or_else(|| coded("EBADF", "the window is closed"))
    }

    fn range(&self, offset: f64, len: usize) -> Result<(&ofi::Window, usize)> {
        let w = self.get()?;
        let off = offset_of(offset)?;
        match off.checked_add(len as u64) {
            Some(end) if end <= w.len() as u64 => Ok((w, off as usize)),
            _ => Err(coded("ERANGE", format_args!("{len} bytes at {off} are outside the {}-byte window", w.len()))),
        }
    }

    /// What the peer needs to read and write it: send it over the link.
    #[napi(getter)]
    pub fn remote(&self) -> Result<RemoteWindowInfo> {
        let r = self.get()?.remote();
        Ok(RemoteWindowInfo { addr: BigInt::from(r.addr), key: BigInt::from(r.key), size: r.size as f64 })
    }

    #[napi(getter)]
    pub fn size(&self) -> Result<f64> {
        Ok(self.get()?.len() as f64)
    }

    /// A copy of `len` bytes at `offset`.
    #[napi]
    pub fn read(&self, offset: f64, len: u32) -> Result<Buffer> {
        let (w, off) = self.range(offset, len as usize)?;
        Ok(Buffer::from(w.read(off, len as usize)))
    }

    #[napi]
    pub fn write(&self, offset: f64, data: Uint8ArraySlice) -> Result<()> {
        let (w, off) = self.range(offset, data.len())?;
        w.write(off, &data);
        Ok(())
    }

    /// Deregisters the memory (the peer's later accesses fail) and frees it.
    #[napi]
    pub fn close(&mut self) {
        self.window = None;
    }
}
