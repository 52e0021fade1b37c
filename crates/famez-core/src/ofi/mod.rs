//! Links on libfabric: a connected endpoint (FI_EP_MSG) between two famez
//! switches, with send/receive of byte messages and RMA read/write on a
//! registered window, completions and connection events delivered through
//! wait fds that an event loop watches (no thread, no spinning).
//!
//! libfabric is loaded with dlopen when the first link is opened, never at
//! build or install time: `FAMEZ_LIBFABRIC` names the library (default
//! `libfabric.so.1`). A machine without it runs famez as before; opening a
//! link there fails with `OfiError::Missing`, whose text names the fix.
//!
//! All unsafe code is in `ffi` (sys.rs is bindgen's struct and constant
//! bindings, generated once by gen-sys.sh and committed). This module is
//! the safe API: `Listener` (a passive endpoint on ADDR:PORT), `Endpoint`
//! (one side of a link), `Window` (memory the peer reads and writes).
//!
//! Driving an endpoint: watch `cq_fd()` and `eq_fd()` for readability;
//! when one is readable call `progress()` (completions) or `events()`
//! (connected, shutdown, a failed connect). Both read until libfabric's
//! `fi_trywait` says it is safe to sleep again, so a level-triggered poll
//! of the fds never misses a completion. The provider makes progress only
//! inside these calls (manual progress is asked for), on the caller's
//! thread.

#![deny(unsafe_code)]

mod ffi;
#[rustfmt::skip]
#[allow(non_camel_case_types, non_upper_case_globals, non_snake_case, dead_code, unsafe_code, clippy::all)]
mod sys;

use std::fmt;
use std::net::SocketAddr;

pub use ffi::{Granted, Window};

/// The environment variable that names the libfabric library to load.
pub const LIBRARY_ENV: &str = "FAMEZ_LIBFABRIC";
pub const DEFAULT_LIBRARY: &str = "libfabric.so.1";

/// How a link is opened.
#[derive(Debug, Clone)]
pub struct Options {
    /// libfabric provider: "tcp" (default), "verbs"; any with FI_EP_MSG.
    pub provider: String,
    /// Receives kept posted and sends in flight at once (clamped to the
    /// provider's queue sizes).
    pub depth: usize,
    /// The largest message, in bytes: each side's receive buffers are this
    /// big, so both sides of a link must agree.
    pub max_message: usize,
    /// The library to dlopen; None: $FAMEZ_LIBFABRIC, else libfabric.so.1.
    pub library: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options { provider: "tcp".into(), depth: 32, max_message: 64 * 1024, library: None }
    }
}

/// A libfabric link's failure. `code()` is an errno-style name.
#[derive(Debug, Clone)]
pub enum OfiError {
    /// dlopen could not load the library.
    Missing {
        library: String,
        reason: String,
    },
    /// The library loaded but is not a usable libfabric.
    BadLibrary {
        library: String,
        reason: String,
    },
    /// The provider has no connected endpoint for that address.
    NoProvider {
        provider: String,
        node: String,
    },
    /// A libfabric call (or a completion, or a connection event) failed
    /// with a libfabric error number (errno values, or FI_E* from 256).
    Call {
        op: String,
        code: i32,
        text: String,
    },
    TooLong {
        len: usize,
        max: usize,
    },
    NoRma {
        provider: String,
    },
    OutOfRange {
        offset: u64,
        len: usize,
        size: u64,
    },
    Closed,
    Usage(String),
}

impl OfiError {
    /// The error's code: ELIBACC for a missing libfabric, the errno name
    /// of a libfabric error (ECONNREFUSED), FI_E* for libfabric's own.
    pub fn code(&self) -> String {
        match self {
            OfiError::Missing { .. } => "ELIBACC".into(),
            OfiError::BadLibrary { .. } => "ELIBBAD".into(),
            OfiError::NoProvider { .. } => "ENODATA".into(),
            OfiError::Call { code, .. } => code_name(*code),
            OfiError::TooLong { .. } => "EMSGSIZE".into(),
            OfiError::NoRma { .. } => "EOPNOTSUPP".into(),
            OfiError::OutOfRange { .. } => "ERANGE".into(),
            OfiError::Closed => "EBADF".into(),
            OfiError::Usage(_) => "EINVAL".into(),
        }
    }
}

/// The name of a libfabric error number.
pub fn code_name(code: i32) -> String {
    const OWN: [&str; 14] = [
        "FI_EOTHER",
        "FI_ETOOSMALL",
        "FI_EOPBADSTATE",
        "FI_EAVAIL",
        "FI_EBADFLAGS",
        "FI_ENOEQ",
        "FI_EDOMAIN",
        "FI_ENOCQ",
        "FI_ECRC",
        "FI_ETRUNC",
        "FI_ENOKEY",
        "FI_ENOAV",
        "FI_EOVERRUN",
        "FI_ENORX",
    ];
    match code {
        256..=269 => OWN[(code - 256) as usize].into(),
        c if c > 0 && c < 256 => format!("{:?}", nix::errno::Errno::from_raw(c)),
        _ => "EIO".into(),
    }
}

impl fmt::Display for OfiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // dlerror's text usually starts with the name already.
            OfiError::Missing { library, reason } if reason.starts_with(library.as_str()) => {
                write!(f, "libfabric is not installed: apt-get install libfabric1 ({reason})")
            }
            OfiError::Missing { library, reason } => {
                write!(f, "libfabric is not installed: apt-get install libfabric1 ({library}: {reason})")
            }
            OfiError::BadLibrary { library, reason } => write!(f, "{library} cannot be used: {reason}"),
            OfiError::NoProvider { provider, node } => write!(
                f,
                "libfabric's {provider} provider offers no connected endpoint (FI_EP_MSG) at {node} \
                 (`fi_info -p {provider}` lists what it offers)"
            ),
            OfiError::Call { op, text, .. } if op.is_empty() => write!(f, "{text}"),
            OfiError::Call { op, text, .. } => write!(f, "{op}: {text}"),
            OfiError::TooLong { len, max } => write!(f, "a {len}-byte message is longer than the link's {max} bytes"),
            OfiError::NoRma { provider } => write!(f, "provider {provider} has no RMA (FI_RMA) on this endpoint"),
            OfiError::OutOfRange { offset, len, size } => {
                write!(f, "{len} bytes at offset {offset} are outside the {size}-byte window")
            }
            OfiError::Closed => write!(f, "the link is closed"),
            OfiError::Usage(s) => write!(f, "{s}"),
        }
    }
}

impl std::error::Error for OfiError {}

pub type Result<T> = std::result::Result<T, OfiError>;

/// A finished operation, from `Endpoint::progress`.
#[derive(Debug)]
pub enum Completion {
    /// A message arrived (in the order the peer sent them).
    Message(Vec<u8>),
    /// An RMA read finished with these bytes.
    Read {
        id: u32,
        data: Vec<u8>,
    },
    Written {
        id: u32,
    },
    RmaFailed {
        id: u32,
        error: OfiError,
    },
    SendFailed(OfiError),
    /// A message could not be received: longer than this side's
    /// `max_message` (FI_ETRUNC), the peer disagreeing on it. Never
    /// delivered, not even in part; the tcp provider then ends the link.
    ReceiveFailed(OfiError),
}

/// A connection event, from `Endpoint::events`.
#[derive(Debug)]
pub enum LinkEvent {
    Connected,
    /// The peer shut the link down (or it broke).
    Shutdown,
    /// Connecting failed (ECONNREFUSED, ETIMEDOUT...) or the link failed.
    Error(OfiError),
}

/// Whether libfabric can be loaded (from `library`, or as `Options` would).
pub fn available(library: Option<&str>) -> Result<(u32, u32)> {
    Ok(ffi::load(&library_name(library))?.version())
}

fn library_name(library: Option<&str>) -> String {
    match library {
        Some(l) => l.to_owned(),
        None => std::env::var(LIBRARY_ENV).ok().filter(|s| !s.is_empty()).unwrap_or_else(|| DEFAULT_LIBRARY.into()),
    }
}

/// "HOST:PORT" (or "[V6]:PORT") as (host, port).
fn split_addr(addr: &str) -> Result<(String, String)> {
    let bad = || OfiError::Usage(format!("{addr:?} is not HOST:PORT"));
    let (host, port) = addr.rsplit_once(':').ok_or_else(bad)?;
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(bad());
    }
    Ok((host.to_owned(), port.to_owned()))
}

/// A passive endpoint listening on ADDR:PORT for links.
pub struct Listener {
    // Drop order: the pep, its EQ, then the domain and fabric.
    pep: ffi::Pep,
    eq: ffi::Eq,
    domain: std::rc::Rc<ffi::Domain>,
    _fabric: std::rc::Rc<ffi::FabricObj>,
    opts: Options,
}

impl Listener {
    /// Listens on `addr` ("127.0.0.1:0" picks a free port; see `local_addr`).
    pub fn bind(opts: &Options, addr: &str) -> Result<Listener> {
        let lib = ffi::load(&library_name(opts.library.as_deref()))?;
        let (host, port) = split_addr(addr)?;
        let info = ffi::Info::get(lib, &opts.provider, &host, &port, true)?;
        let fabric = ffi::FabricObj::open(&info)?;
        let domain = ffi::Domain::open(&fabric, &info)?;
        let eq = ffi::Eq::open(&fabric)?;
        let pep = ffi::Pep::listen(&fabric, &info, &eq)?;
        Ok(Listener { pep, eq, domain, _fabric: fabric, opts: opts.clone() })
    }

    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.pep.local_addr()
    }

    /// The fd that is readable when a connection request may be waiting.
    pub fn eq_fd(&self) -> i32 {
        self.eq.fd
    }

    /// Accepts the next connection request, if one is waiting: the new
    /// endpoint reports `LinkEvent::Connected` on its own EQ. None when
    /// nothing is waiting and it is safe to sleep on `eq_fd`.
    pub fn accept(&mut self) -> Result<Option<Endpoint>> {
        let mut empty_rounds = 0;
        loop {
            match self.eq.read()? {
                Some(ffi::EqEvent::ConnReq(req)) => {
                    let conn = match ffi::Conn::open(&self.domain, &req, &self.opts) {
                        Ok(c) => c,
                        Err(e) => {
                            // Refused, so the peer hears of it; the error is ours to report.
                            let _ = self.pep.reject(req);
                            return Err(e);
                        }
                    };
                    conn.accept()?;
                    return Ok(Some(Endpoint { conn, state: State::Connecting, peer: String::new() }));
                }
                Some(ffi::EqEvent::Error(e)) => return Err(e),
                Some(_) => {}
                None => {
                    empty_rounds += 1;
                    // As in Conn::progress: never hang on a refusing fi_trywait.
                    if self.eq.trywait() || empty_rounds > 64 {
                        return Ok(None);
                    }
                }
            }
        }
    }
}

/// Where an endpoint is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Connecting,
    Connected,
    /// The peer shut down, or connecting failed.
    Down,
    Closed,
}

/// The peer's window, as it told us: address base, key, size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteWindow {
    pub addr: u64,
    pub key: u64,
    pub size: u64,
}

impl Window {
    /// What the peer needs to read and write this window.
    pub fn remote(&self) -> RemoteWindow {
        RemoteWindow { addr: self.addr, key: self.key(), size: self.len() as u64 }
    }
}

/// One side of a link: a connected endpoint, its CQ and EQ.
pub struct Endpoint {
    conn: ffi::Conn,
    state: State,
    /// Who it connects to ("127.0.0.1:5000"), or "" for an accepted one: for messages.
    peer: String,
}

impl Endpoint {
    /// Starts connecting to `addr` (HOST:PORT); `LinkEvent::Connected` (or
    /// an Error, ECONNREFUSED when nobody listens) follows on the EQ.
    /// Sends and RMA operations may be queued before it.
    pub fn connect(opts: &Options, addr: &str) -> Result<Endpoint> {
        let lib = ffi::load(&library_name(opts.library.as_deref()))?;
        let (host, port) = split_addr(addr)?;
        let info = ffi::Info::get(lib, &opts.provider, &host, &port, false)?;
        let fabric = ffi::FabricObj::open(&info)?;
        let domain = ffi::Domain::open(&fabric, &info)?;
        let conn = ffi::Conn::open(&domain, &info, opts)?;
        conn.connect(&info)?;
        Ok(Endpoint { conn, state: State::Connecting, peer: addr.to_owned() })
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// What the provider granted (its name, RMA, queue sizes).
    pub fn granted(&self) -> &Granted {
        &self.conn.granted
    }

    pub fn cq_fd(&self) -> i32 {
        self.conn.cq_fd()
    }

    pub fn eq_fd(&self) -> i32 {
        self.conn.eq.fd
    }

    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.conn.local_addr()
    }

    fn open(&self) -> Result<()> {
        match self.state {
            State::Closed => Err(OfiError::Closed),
            State::Down => {
                Err(OfiError::Call { op: "send".into(), code: libc_enotconn(), text: "the link is down".into() })
            }
            _ => Ok(()),
        }
    }

    /// Sends a copy of `data` (at most `max_message` bytes). Messages arrive
    /// in order; what does not fit in flight now is queued here.
    pub fn send(&mut self, data: &[u8]) -> Result<()> {
        self.open()?;
        self.conn.send(data)
    }

    /// Starts an RMA read of `len` bytes at `offset` in the peer's window;
    /// `Completion::Read` with the same id carries the bytes.
    pub fn read(&mut self, window: &RemoteWindow, offset: u64, len: usize) -> Result<u32> {
        self.open()?;
        check_range(window, offset, len)?;
        self.conn.read(window.addr + offset, window.key, len)
    }

    /// Starts an RMA write of `data` at `offset` in the peer's window.
    pub fn write(&mut self, window: &RemoteWindow, offset: u64, data: &[u8]) -> Result<u32> {
        self.open()?;
        check_range(window, offset, data.len())?;
        self.conn.write(window.addr + offset, window.key, data)
    }

    /// A new zeroed window of `len` bytes in this endpoint's domain, for
    /// the peer's RMA (its `remote()` is what the peer needs).
    pub fn window(&self, len: usize) -> Result<Window> {
        if self.state == State::Closed {
            return Err(OfiError::Closed);
        }
        if !self.conn.granted.rma {
            return Err(OfiError::NoRma { provider: self.conn.granted.provider.clone() });
        }
        self.conn.window(len, ffi::next_key())
    }

    /// A window over the first `len` bytes of the file `fd` (its own shared
    /// mapping: what the peer writes lands in the file), registered with
    /// `key` when given (a provider that picks its own keys may ignore it:
    /// see `remote().key`), else a new one.
    pub fn window_over_file(&self, fd: std::os::fd::BorrowedFd<'_>, len: usize, key: Option<u64>) -> Result<Window> {
        if self.state == State::Closed {
            return Err(OfiError::Closed);
        }
        if !self.conn.granted.rma {
            return Err(OfiError::NoRma { provider: self.conn.granted.provider.clone() });
        }
        self.conn.window_over_file(fd, len, key.unwrap_or_else(ffi::next_key))
    }

    /// Operations queued and not yet handed to the provider.
    pub fn queued(&self) -> usize {
        self.conn.queued()
    }

    /// Operations handed to the provider and not yet completed.
    pub fn in_flight(&self) -> usize {
        self.conn.in_flight()
    }

    /// Reads the completions (see the module's doc).
    pub fn progress(&mut self, out: &mut Vec<Completion>) -> Result<()> {
        if self.state == State::Closed {
            return Ok(());
        }
        self.conn.progress(out)
    }

    /// Reads the connection events (see the module's doc) and follows them
    /// in `state()`.
    pub fn events(&mut self, out: &mut Vec<LinkEvent>) -> Result<()> {
        if self.state == State::Closed {
            return Ok(());
        }
        let from = out.len();
        self.conn.events(out)?;
        for e in &mut out[from..] {
            let was = self.state;
            self.state = match e {
                LinkEvent::Connected => State::Connected,
                LinkEvent::Shutdown | LinkEvent::Error(_) => State::Down,
            };
            // Name what failed: "connect to 127.0.0.1:5000: Connection refused".
            if let LinkEvent::Error(OfiError::Call { op, .. }) = e {
                *op = match (was, self.peer.as_str()) {
                    (State::Connecting, "") => "accepting a link".into(),
                    (State::Connecting, peer) => format!("connect to {peer}"),
                    (_, "") => "the link".into(),
                    (_, peer) => format!("the link to {peer}"),
                };
            }
        }
        Ok(())
    }

    /// Shuts the link down (the peer gets `LinkEvent::Shutdown`) and closes
    /// the endpoint; queued operations are dropped. Idempotent.
    pub fn close(&mut self) {
        if self.state == State::Closed {
            return;
        }
        if self.state == State::Connected {
            let _ = self.conn.shutdown();
        }
        self.conn.close();
        self.state = State::Closed;
    }
}

fn libc_enotconn() -> i32 {
    nix::errno::Errno::ENOTCONN as i32
}

fn check_range(window: &RemoteWindow, offset: u64, len: usize) -> Result<()> {
    match offset.checked_add(len as u64) {
        Some(end) if end <= window.size => Ok(()),
        _ => Err(OfiError::OutOfRange { offset, len, size: window.size }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_split() {
        assert_eq!(split_addr("127.0.0.1:5000").unwrap(), ("127.0.0.1".into(), "5000".into()));
        assert_eq!(split_addr("[::1]:7").unwrap(), ("::1".into(), "7".into()));
        assert!(split_addr("127.0.0.1").is_err());
        assert!(split_addr(":5").is_err());
        assert!(split_addr("h:99999").is_err());
    }

    #[test]
    fn codes_are_names() {
        assert_eq!(code_name(111), "ECONNREFUSED");
        assert_eq!(code_name(265), "FI_ETRUNC");
        assert_eq!(code_name(-3), "EIO");
    }

    #[test]
    fn a_missing_library_names_the_fix_in_one_line() {
        let e = available(Some("/nonexistent/libfabric.so")).unwrap_err();
        assert_eq!(e.code(), "ELIBACC");
        let text = e.to_string();
        assert!(text.starts_with("libfabric is not installed: apt-get install libfabric1 ("), "{text}");
        assert!(!text.contains('\n'));
    }
}
