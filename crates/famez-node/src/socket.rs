//! `UnixListener` and `UnixStream`: the ivshmem protocol's transport.
//!
//! A stream sends with `send(value, fd?)`. When the peer's socket buffer is
//! full the message is not lost: it (with a duplicate of its fd, since the
//! original may be closed before the flush) waits in an outbox that is
//! flushed, in order, when the socket becomes writable again; `send` returns
//! the outbox length so the caller can decide when a peer is too slow.
//! `trySend` never queues (nor duplicates an fd): it says false when the
//! socket is full, and `onDrain`'s callback runs once it is writable again,
//! so a caller with many fds to send keeps them as its own references.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::ErrorKind;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::rc::Rc;

use famez_core::socket::{socket_path_state, SocketPathState};
use famez_core::{error_text, UnixListener as CoreListener, UnixStream as CoreStream};
use napi::bindgen_prelude::{Env, This, Unknown, ValueType};
use napi::{sys, JsValue};
use napi_derive::napi;

use crate::error::{check, closed, coded, io_error, warn, FromNapi, Result};
use crate::poll::{Ctx, Poll, DISCONNECT, ERROR, READABLE, WRITABLE};

/// Most messages handed to JavaScript per wake-up, so one chatty socket
/// cannot starve the loop.
const MAX_BATCH: usize = 256;

#[napi(object)]
pub struct PathState {
    /// "free", "stale", "live", "not-a-socket" or "unknown"
    pub state: String,
    pub pid: Option<u32>,
    /// For "unknown": why connecting to it failed (e.g. "EACCES: Permission denied").
    pub reason: Option<String>,
}

/// What is at a socket path, decided by connecting to it: free, a stale
/// socket (connection refused), a live server (it took the connection, or
/// its backlog is full; with its pid when visible), something that is not a
/// socket, or unknown (connecting failed otherwise: never replace it).
#[napi]
pub fn socket_state(path: String) -> Result<PathState> {
    let s = socket_path_state(Path::new(&path)).map_err(|e| io_error(&format!("inspect {path}"), e))?;
    let simple = |state: &str| PathState { state: state.into(), pid: None, reason: None };
    Ok(match s {
        SocketPathState::Free => simple("free"),
        SocketPathState::Stale => simple("stale"),
        SocketPathState::Live(pid) => PathState { state: "live".into(), pid, reason: None },
        SocketPathState::NotASocket => simple("not-a-socket"),
        SocketPathState::Unknown(e) => PathState { state: "unknown".into(), pid: None, reason: Some(e.to_string()) },
    })
}

struct StreamState {
    sock: Option<CoreStream>,
    outbox: VecDeque<(i64, Option<OwnedFd>)>,
    poll: Option<Poll>,
    reading: bool,
    /// The peer must never write (an ivshmem peer to its server): any
    /// byte, even part of a message, ends the connection at once.
    one_way: bool,
    /// A trySend found the socket full: call `drain` when it is writable.
    want_writable: bool,
    /// The onDrain callback, with the env its reference belongs to.
    drain: Option<(sys::napi_env, sys::napi_ref)>,
}

impl StreamState {
    fn wanted_events(&self) -> i32 {
        let mut ev = 0;
        if self.reading {
            ev |= READABLE | DISCONNECT;
        }
        if !self.outbox.is_empty() || self.want_writable {
            ev |= WRITABLE;
        }
        ev
    }

    fn update_poll(&mut self) {
        let ev = self.wanted_events();
        if let Some(p) = &mut self.poll {
            let _ = p.set_events(ev);
        }
    }

    /// Sends queued messages until the outbox is empty or the socket is
    /// full again. An error other than a full buffer is returned.
    fn flush(&mut self) -> std::io::Result<()> {
        let Some(sock) = &self.sock else { return Ok(()) };
        while let Some((value, fd)) = self.outbox.front() {
            match sock.send(*value, fd.as_ref().map(|f| f.as_fd())) {
                Ok(()) => {
                    self.outbox.pop_front();
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn set_drain(&mut self, drain: Option<(sys::napi_env, sys::napi_ref)>) {
        if let Some((env, r)) = std::mem::replace(&mut self.drain, drain) {
            // SAFETY: the reference was created in this env, which is alive
            // while JavaScript (or its finalizer) can reach this stream.
            if let Err(e) = check(unsafe { sys::napi_delete_reference(env, r) }, "napi_delete_reference") {
                warn(&e);
            }
        }
    }

    fn close(&mut self) {
        if let Some(mut p) = self.poll.take() {
            p.close();
        }
        self.outbox.clear();
        self.want_writable = false;
        self.set_drain(None);
        self.sock = None;
    }
}

#[napi]
pub struct UnixStream {
    state: Rc<RefCell<StreamState>>,
}

impl UnixStream {
    fn wrap(sock: CoreStream) -> Self {
        UnixStream {
            state: Rc::new(RefCell::new(StreamState {
                sock: Some(sock),
                outbox: VecDeque::new(),
                poll: None,
                reading: false,
                one_way: false,
                want_writable: false,
                drain: None,
            })),
        }
    }

    /// Makes sure a poll exists (needed for the outbox even when nobody reads).
    fn ensure_poll(&self, env: &Env, callback: sys::napi_value, owner: sys::napi_value) -> Result<()> {
        let fd = self.fd();
        if fd < 0 {
            return Err(closed("socket"));
        }
        let weak = Rc::downgrade(&self.state);
        let handler = Box::new(move |ctx: &Ctx, events: i32| {
            if let Some(state) = weak.upgrade() {
                on_stream_ready(&state, ctx, events);
            }
        });
        // libuv refuses a second poll handle on one fd: close the old first.
        if let Some(mut old) = self.state.borrow_mut().poll.take() {
            old.close();
        }
        let poll = Poll::start(env, fd, 0, callback, owner, handler)?;
        let mut st = self.state.borrow_mut();
        st.poll = Some(poll);
        st.update_poll();
        Ok(())
    }
}

fn on_stream_ready(state: &Rc<RefCell<StreamState>>, ctx: &Ctx, events: i32) {
    if events & (WRITABLE | ERROR) != 0 {
        let mut st = state.borrow_mut();
        if let Err(e) = st.flush() {
            // The peer is gone; reading (if watched) reports it.
            st.outbox.clear();
            let _ = e;
        }
        // Writable with nothing queued: the trySend caller may go on (its
        // next trySend reports a broken socket, if that is what this is).
        let drained = st.want_writable && st.outbox.is_empty();
        if drained {
            st.want_writable = false;
        }
        st.update_poll();
        let drain = st.drain.map(|(_, r)| r);
        drop(st);
        if drained {
            if let Some(r) = drain {
                ctx.call_ref(r, |_| Ok([]));
            }
        }
    }
    if events & (READABLE | DISCONNECT | ERROR) == 0 || !state.borrow().reading {
        return;
    }
    let mut batch: Vec<(i64, i32)> = Vec::new();
    let mut failure: Option<String> = None;
    {
        let mut st = state.borrow_mut();
        let one_way = st.one_way;
        let Some(sock) = st.sock.as_mut() else { return };
        if one_way {
            failure = read_one_way(sock);
        } else {
            while batch.len() < MAX_BATCH {
                match sock.recv() {
                    Ok(Some(m)) => batch.push((m.value, m.fd.map(|f| f.into_raw_fd_checked()).unwrap_or(-1))),
                    Ok(None) => break,
                    Err(e) => {
                        failure =
                            Some(if e.kind() == ErrorKind::UnexpectedEof { "closed".into() } else { error_text(&e) });
                        break;
                    }
                }
            }
        }
        if failure.is_some() {
            // Level-triggered readiness would repeat the EOF forever.
            st.reading = false;
            st.update_poll();
        }
    }
    for (value, fd) in batch {
        ctx.call(|c| Ok([c.number(value as f64)?, c.number(fd as f64)?]));
    }
    if let Some(reason) = failure {
        if state.borrow().sock.is_some() {
            ctx.call(|c| Ok([c.null()?, c.number(-1.0)?, c.string(&reason)?]));
        }
    }
}

/// Reads a socket whose peer must never write: None when nothing came
/// (a spurious wake-up); "closed" at EOF (or the error, such as a reset)
/// when it wrote nothing; otherwise why the peer broke the protocol, with
/// what it wrote. Fds that came are closed here.
fn read_one_way(sock: &mut CoreStream) -> Option<String> {
    const WHY: &str = "protocol error: it wrote to the server, which an ivshmem peer never does";
    let mut messages = 0usize;
    let mut fds = 0usize;
    let said = |messages: usize, fds: usize, partial: usize| {
        let bytes = messages * famez_core::socket::MESSAGE_LEN + partial;
        let fds = if fds == 0 { String::new() } else { format!(" and {fds} fd{}", if fds == 1 { "" } else { "s" }) };
        format!("{bytes} byte{}{fds}", if bytes == 1 { "" } else { "s" })
    };
    loop {
        match sock.recv() {
            Ok(Some(m)) => {
                messages += 1;
                fds += usize::from(m.fd.is_some());
                if messages >= MAX_BATCH {
                    return Some(format!("{WHY} ({} or more)", said(messages, fds, 0)));
                }
            }
            Ok(None) if messages == 0 && sock.partial_len() == 0 => return None,
            Ok(None) => return Some(format!("{WHY} ({})", said(messages, fds, sock.partial_len()))),
            // Nothing written: an ordinary end (EOF, or a reset when it
            // left its welcome unread), reported as without oneWay.
            Err(e) if e.kind() != ErrorKind::InvalidData && messages == 0 && sock.partial_len() == 0 => {
                return Some(if e.kind() == ErrorKind::UnexpectedEof { "closed".into() } else { error_text(&e) })
            }
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => {
                return Some(format!("{WHY} ({}, then closed)", said(messages, fds, sock.partial_len())))
            }
            Err(e) => return Some(format!("{WHY} ({}; {})", said(messages, fds, sock.partial_len()), error_text(&e))),
        }
    }
}

trait IntoRawChecked {
    fn into_raw_fd_checked(self) -> i32;
}

impl IntoRawChecked for OwnedFd {
    fn into_raw_fd_checked(self) -> i32 {
        use std::os::fd::IntoRawFd;
        self.into_raw_fd()
    }
}

#[napi(object)]
pub struct ReceivedMessage {
    pub value: i64,
    /// -1 when the message carried no fd; otherwise an fd the caller now owns.
    pub fd: i32,
}

#[napi]
impl UnixStream {
    /// Connects to a listening server.
    #[napi(factory)]
    pub fn connect(path: String) -> Result<Self> {
        let s = CoreStream::connect(Path::new(&path)).map_err(|e| io_error(&format!("connect {path}"), e))?;
        Ok(Self::wrap(s))
    }

    #[napi(getter)]
    pub fn fd(&self) -> i32 {
        self.state.borrow().sock.as_ref().map(|s| s.as_raw_fd()).unwrap_or(-1)
    }

    #[napi(getter)]
    pub fn closed(&self) -> bool {
        self.state.borrow().sock.is_none()
    }

    /// The pid of the process at the other end when the connection was
    /// made (SO_PEERCRED; for an accepted stream, the process that
    /// connected): null when the kernel cannot tell (the peer is in a pid
    /// namespace this process cannot see) or the socket is closed. The
    /// process may have exited since, and its pid been reused.
    #[napi(getter)]
    pub fn peer_pid(&self) -> Option<u32> {
        self.state.borrow().sock.as_ref().and_then(|s| s.peer_pid())
    }

    /// Messages waiting for the peer's socket buffer to drain.
    #[napi(getter)]
    pub fn queued(&self) -> u32 {
        self.state.borrow().outbox.len() as u32
    }

    /// Sends one message, with `fd` when given (the fd stays the caller's).
    /// Returns the number of messages still queued (0: sent at once).
    #[napi]
    pub fn send(&self, env: Env, this: This, value: i64, fd: Option<i32>) -> Result<u32> {
        let mut st = self.state.borrow_mut();
        let Some(sock) = &st.sock else { return Err(closed("socket")) };
        // SAFETY: the caller passes an fd it keeps open for this call.
        let borrowed = fd.filter(|f| *f >= 0).map(|f| unsafe { BorrowedFd::borrow_raw(f) });
        if st.outbox.is_empty() {
            match sock.send(value, borrowed) {
                Ok(()) => return Ok(0),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => return Err(io_error("send", e)),
            }
        }
        let dup = match borrowed {
            Some(b) => Some(b.try_clone_to_owned().map_err(|e| io_error("dup fd for the outbox", e))?),
            None => None,
        };
        st.outbox.push_back((value, dup));
        let len = st.outbox.len() as u32;
        if st.poll.is_some() {
            st.update_poll();
            drop(st);
        } else {
            drop(st);
            // The poll holds the object, so queued messages are not lost
            // to the garbage collector.
            self.ensure_poll(&env, std::ptr::null_mut(), this.object.raw())?;
        }
        Ok(len)
    }

    /// Sends one message now, with `fd` when given (the fd stays the
    /// caller's, never duplicated): false when the socket is full (or
    /// earlier `send`s are still queued); the onDrain callback then runs
    /// once the socket is writable again. Throws when the peer is gone.
    #[napi]
    pub fn try_send(&self, env: Env, this: This, value: i64, fd: Option<i32>) -> Result<bool> {
        let mut st = self.state.borrow_mut();
        let Some(sock) = &st.sock else { return Err(closed("socket")) };
        if st.outbox.is_empty() {
            // SAFETY: the caller passes an fd it keeps open for this call.
            let borrowed = fd.filter(|f| *f >= 0).map(|f| unsafe { BorrowedFd::borrow_raw(f) });
            match sock.send(value, borrowed) {
                Ok(()) => return Ok(true),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => return Err(io_error("send", e)),
            }
        }
        st.want_writable = true;
        if st.poll.is_some() {
            st.update_poll();
        } else {
            drop(st);
            self.ensure_poll(&env, std::ptr::null_mut(), this.object.raw())?;
        }
        Ok(false)
    }

    /// Calls `callback()` whenever the socket is writable again after a
    /// trySend found it full; null removes it.
    #[napi(ts_args_type = "callback: (() => void) | null")]
    pub fn on_drain(&self, env: Env, callback: Option<Unknown>) -> Result<()> {
        let mut r = std::ptr::null_mut();
        if let Some(cb) = callback {
            if cb.get_type().coded()? != ValueType::Function {
                return Err(coded("EINVAL", "onDrain takes a function or null"));
            }
            // SAFETY: env is the current env; cb a live function value.
            check(unsafe { sys::napi_create_reference(env.raw(), cb.raw(), 1, &mut r) }, "napi_create_reference")?;
        }
        self.state.borrow_mut().set_drain((!r.is_null()).then_some((env.raw(), r)));
        Ok(())
    }

    /// Receives one message without waiting: null when none is available.
    /// Throws on EOF ("closed") or a protocol framing error.
    #[napi]
    pub fn recv(&self) -> Result<Option<ReceivedMessage>> {
        let mut st = self.state.borrow_mut();
        let Some(sock) = st.sock.as_mut() else { return Err(closed("socket")) };
        match sock.recv() {
            Ok(Some(m)) => {
                use std::os::fd::IntoRawFd;
                Ok(Some(ReceivedMessage { value: m.value, fd: m.fd.map(|f| f.into_raw_fd()).unwrap_or(-1) }))
            }
            Ok(None) => Ok(None),
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => Err(coded("EOF", "closed")),
            Err(e) => Err(io_error("recv", e)),
        }
    }

    /// Delivers every incoming message as `callback(value, fd)` (fd -1 when
    /// none; the callback owns any other fd) and the end of the connection
    /// as `callback(null, -1, reason)`. With `oneWay` the peer must never
    /// write (an ivshmem peer to its server): no message is delivered, and
    /// any byte it sends, even part of a message, ends the connection at
    /// once with a reason that starts "protocol error" (its fds closed).
    #[napi(ts_args_type = "callback: (value: number | null, fd: number, reason?: string) => void, oneWay?: boolean")]
    pub fn watch(&mut self, env: Env, this: This, callback: Unknown, one_way: Option<bool>) -> Result<()> {
        {
            let mut st = self.state.borrow_mut();
            st.reading = true;
            st.one_way = one_way.unwrap_or(false);
        }
        self.ensure_poll(&env, callback.raw(), this.object.raw())
    }

    #[napi(js_name = "ref")]
    pub fn keep_alive(&self, keep: Option<bool>) {
        if let Some(p) = &self.state.borrow().poll {
            p.set_ref(keep.unwrap_or(true));
        }
    }

    /// Closes the socket, dropping anything still queued. Idempotent.
    #[napi]
    pub fn close(&mut self) {
        self.state.borrow_mut().close();
    }
}

impl Drop for UnixStream {
    fn drop(&mut self) {
        self.state.borrow_mut().close();
    }
}

struct ListenerState {
    listener: Option<CoreListener>,
    poll: Option<Poll>,
}

#[napi]
pub struct UnixListener {
    state: Rc<RefCell<ListenerState>>,
}

#[napi]
impl UnixListener {
    /// Binds and listens; the path must be free (see `socketState`). With
    /// `mode`, the socket file is created with exactly those permission
    /// bits (the umask is set to their complement for the bind).
    #[napi(factory)]
    pub fn listen(path: String, mode: Option<u32>) -> Result<Self> {
        let l =
            CoreListener::bind_mode(Path::new(&path), mode).map_err(|e| io_error(&format!("listen on {path}"), e))?;
        Ok(UnixListener { state: Rc::new(RefCell::new(ListenerState { listener: Some(l), poll: None })) })
    }

    #[napi(getter)]
    pub fn fd(&self) -> i32 {
        self.state.borrow().listener.as_ref().map(|l| l.as_raw_fd()).unwrap_or(-1)
    }

    /// The next pending connection, or null.
    #[napi]
    pub fn accept(&self) -> Result<Option<UnixStream>> {
        let st = self.state.borrow();
        let Some(l) = &st.listener else { return Err(closed("listener")) };
        Ok(l.accept().map_err(|e| io_error("accept", e))?.map(UnixStream::wrap))
    }

    /// Calls `callback()` when connections are pending; call `accept()`
    /// until it returns null.
    #[napi(ts_args_type = "callback: () => void")]
    pub fn watch(&mut self, env: Env, this: This, callback: Unknown) -> Result<()> {
        let fd = self.fd();
        if fd < 0 {
            return Err(closed("listener"));
        }
        let handler = Box::new(|ctx: &Ctx, events: i32| {
            if events & ERROR == 0 {
                ctx.call(|_| Ok([]));
            }
        });
        if let Some(mut old) = self.state.borrow_mut().poll.take() {
            old.close();
        }
        let poll = Poll::start(&env, fd, READABLE, callback.raw(), this.object.raw(), handler)?;
        self.state.borrow_mut().poll = Some(poll);
        Ok(())
    }

    /// Stops delivering readiness; pending connections wait in the backlog.
    #[napi]
    pub fn unwatch(&mut self) {
        if let Some(mut p) = self.state.borrow_mut().poll.take() {
            p.close();
        }
    }

    #[napi(js_name = "ref")]
    pub fn keep_alive(&self, keep: Option<bool>) {
        if let Some(p) = &self.state.borrow().poll {
            p.set_ref(keep.unwrap_or(true));
        }
    }

    /// Stops listening and closes the socket (the path is the caller's to
    /// remove). Idempotent.
    #[napi]
    pub fn close(&mut self) {
        let mut st = self.state.borrow_mut();
        if let Some(mut p) = st.poll.take() {
            p.close();
        }
        st.listener = None;
    }
}

impl Drop for UnixListener {
    fn drop(&mut self) {
        self.close();
    }
}
