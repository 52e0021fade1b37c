//! `EventFd`: a doorbell. `signal()` rings it, `watch()` delivers the summed
//! count of rings to a callback on Node's loop (drained natively, so a burst
//! of rings is one call).

use std::cell::{Cell, RefCell};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::rc::Rc;
use std::time::{Duration, Instant};

use famez_core::EventFd as CoreEventFd;
use napi::bindgen_prelude::{Env, FromNapiValue, This, Unknown};
use napi::sys;
use napi::JsValue;
use napi_derive::napi;

use crate::error::{check, closed, coded, errno_name, io_error, warn, Error, FromNapi, Result};
use crate::poll::{Poll, ERROR, READABLE};

type Shared = Rc<RefCell<Option<CoreEventFd>>>;

/// A set of fd numbers as a bitmap: fds are small, dense integers, and
/// `signalFd` asks on every doorbell (no hashing on that path).
#[derive(Default)]
struct FdSet(Vec<u64>);

impl FdSet {
    fn insert(&mut self, fd: i32) {
        let Ok(i) = usize::try_from(fd) else { return };
        if self.0.len() <= i / 64 {
            self.0.resize(i / 64 + 1, 0);
        }
        self.0[i / 64] |= 1 << (i % 64);
    }

    fn remove(&mut self, fd: i32) {
        if let Ok(i) = usize::try_from(fd) {
            if let Some(w) = self.0.get_mut(i / 64) {
                *w &= !(1 << (i % 64));
            }
        }
    }

    fn contains(&self, fd: i32) -> bool {
        let Ok(i) = usize::try_from(fd) else { return false };
        self.0.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0)
    }
}

thread_local! {
    /// The fd numbers of this thread's open EventFds: `signalFd` writes only
    /// to these, so a stale number (closed, maybe reused for a file) is
    /// refused instead of written to.
    static LIVE: RefCell<FdSet> = RefCell::new(FdSet::default());
}

fn live(e: CoreEventFd) -> Shared {
    LIVE.with(|l| l.borrow_mut().insert(e.as_raw_fd()));
    Rc::new(RefCell::new(Some(e)))
}

/// `signalFd(fd, count?)`: rings the EventFd whose number is `fd`, as
/// `signal` does, for hot paths: a plain Node-API function (no class
/// unwrapping), about 400 ns cheaper per call than the method. Throws
/// EBADF for a number that is not an open EventFd of this thread.
extern "C" fn signal_fd_raw(env: sys::napi_env, info: sys::napi_callback_info) -> sys::napi_value {
    if let Err(e) = signal_fd(env, info) {
        throw(env, e);
    }
    std::ptr::null_mut()
}

fn signal_fd(env: sys::napi_env, info: sys::napi_callback_info) -> Result<()> {
    let mut argc = 2usize;
    let mut argv = [std::ptr::null_mut(); 2];
    let mut fd = -1i32;
    let mut count = 1.0f64;
    // SAFETY: called by Node with a valid env and callback info; argv has
    // room for argc values.
    let status = unsafe {
        sys::napi_get_cb_info(env, info, &mut argc, argv.as_mut_ptr(), std::ptr::null_mut(), std::ptr::null_mut())
    };
    check(status, "napi_get_cb_info")?;
    if argc >= 1 {
        // SAFETY: argv[0] is a live argument. A non-number leaves fd at -1,
        // which is refused below as no EventFd.
        let status = unsafe { sys::napi_get_value_int32(env, argv[0], &mut fd) };
        if status != sys::Status::napi_number_expected {
            check(status, "napi_get_value_int32")?;
        }
    }
    if argc >= 2 {
        let mut c = 1.0f64;
        // SAFETY: as above; a non-number count is the default, 1.
        let status = unsafe { sys::napi_get_value_double(env, argv[1], &mut c) };
        if status != sys::Status::napi_number_expected {
            check(status, "napi_get_value_double")?;
            if c >= 1.0 {
                count = c;
            }
        }
    }
    if !LIVE.with(|l| l.borrow().contains(fd)) {
        return Err(coded("EBADF", format_args!("{fd} is not an open EventFd")));
    }
    // fd belongs to an open EventFd of this thread (LIVE), which stays open
    // for this synchronous call.
    match raw_io(libc::SYS_write, fd, (count as u64).to_ne_bytes()) {
        Ok(_) => Ok(()),
        Err(e) => Err(coded(errno_name(e as i32), format_args!("eventfd signal: {}", e.desc()))),
    }
}

/// One 8-byte read or write of an eventfd as the bare system call: libc's
/// `read` and `write` are cancellation points, which costs every call two
/// more library calls around the system call (about 3 % of a busy-polled
/// watch's time per ring, in perf); nothing here uses thread
/// cancellation. Retries EINTR. The caller guarantees `fd` is an open
/// eventfd for the duration of the call.
fn raw_io(call: libc::c_long, fd: i32, mut buf: [u8; 8]) -> std::result::Result<[u8; 8], nix::errno::Errno> {
    loop {
        // SAFETY: buf is a live 8-byte buffer for the whole call; the
        // kernel reads (write) or fills (read) exactly those 8 bytes.
        let n = unsafe { libc::syscall(call, libc::c_long::from(fd), buf.as_mut_ptr(), 8usize) };
        match n {
            8 => return Ok(buf),
            n if n >= 0 => return Err(nix::errno::Errno::EIO),
            _ => match nix::errno::Errno::last() {
                nix::errno::Errno::EINTR => continue,
                e => return Err(e),
            },
        }
    }
}

/// Reads and resets an eventfd's counter: 0 when it was not signalled
/// (EAGAIN) or cannot be read (the watch then stops at the next check).
fn drain_raw(fd: i32) -> u64 {
    raw_io(libc::SYS_read, fd, [0; 8]).map(u64::from_ne_bytes).unwrap_or(0)
}

/// What a watch's callback returned: the number of an open EventFd of this
/// thread is rung once (its answer, without a call back into the binding);
/// anything else is nothing. A number that is no open EventFd is ignored,
/// as `signalFd` refuses it.
fn answer(ctx: &crate::poll::Ctx, result: sys::napi_value) {
    let Some(fd) = ctx.int32(result) else { return };
    if fd >= 0 && LIVE.with(|l| l.borrow().contains(fd)) {
        // fd is an open EventFd of this thread (LIVE) for this synchronous
        // write; a full counter (2^64 - 2 rings unread) is the one failure,
        // and then the other end has a ring to read anyway.
        let _ = raw_io(libc::SYS_write, fd, 1u64.to_ne_bytes());
    }
}

/// Throws `e` as a JavaScript Error with its code (for a raw Node-API
/// function, which has no napi-rs wrapper to do it).
fn throw(env: sys::napi_env, e: Error) {
    let code = std::ffi::CString::new(e.status.as_ref()).unwrap_or_default();
    let msg = std::ffi::CString::new(e.reason.as_str()).unwrap_or_default();
    // SAFETY: env is valid; both are NUL-terminated strings.
    let status = unsafe { sys::napi_throw_error(env, code.as_ptr(), msg.as_ptr()) };
    if let Err(failed) = check(status, "napi_throw_error") {
        warn(&failed);
        warn(&e);
    }
}

/// Returns the `signalFd` function (see `signal_fd_raw`).
#[napi(ts_return_type = "(fd: number, count?: number) => void")]
pub fn signal_fd_function(env: Env) -> Result<Unknown<'static>> {
    let mut f = std::ptr::null_mut();
    // SAFETY: env is the current env; the name is a static C string and the
    // callback a valid extern "C" function with no data.
    let status = unsafe {
        sys::napi_create_function(
            env.raw(),
            c"signalFd".as_ptr(),
            -1,
            Some(signal_fd_raw),
            std::ptr::null_mut(),
            &mut f,
        )
    };
    check(status, "napi_create_function")?;
    // SAFETY: f is a function value just created in this env.
    unsafe { Unknown::from_napi_value(env.raw(), f) }.coded()
}

/// The longest a watch's handler keeps taking rings in one wake-up (busy
/// polling, or sleeping for the next ring while the loop has nothing else
/// to do), however busy the doorbell: then it returns to Node's loop
/// (sockets, timers, immediates), which calls it again at once if the
/// eventfd is still ringing.
const MAX_SPIN: Duration = Duration::from_millis(2);

/// While busy polling, the clock is read at least once in this many rings.
const CLOCK_EVERY: u32 = 8;

/// While busy polling, after this many empty reads in a row (some 10 us
/// here: longer than a doorbell's answer takes) each further empty read is
/// followed by a sched_yield, so that another process on this CPU (the
/// switch a peer waits on, when they share one) runs meanwhile instead of
/// waiting for the spin to end. Alone on its CPU, the yield returns at once.
const YIELD_AFTER: u32 = 32;

#[napi]
pub struct EventFd {
    inner: Shared,
    poll: Option<Poll>,
    /// Busy-poll window in microseconds (0: off), read by the watch.
    spin_us: Rc<Cell<u32>>,
}

#[napi]
impl EventFd {
    /// A new nonblocking, close-on-exec eventfd.
    #[napi(constructor)]
    pub fn new() -> Result<Self> {
        let e = CoreEventFd::new().map_err(|e| io_error("eventfd", e))?;
        Ok(EventFd { inner: live(e), poll: None, spin_us: Rc::new(Cell::new(0)) })
    }

    /// Takes ownership of a received eventfd number.
    #[napi(factory)]
    pub fn adopt(fd: i32) -> Result<Self> {
        if fd < 0 {
            return Err(coded("EBADF", format_args!("{fd} is not an fd")));
        }
        // SAFETY: JavaScript hands over an fd the binding gave it and will
        // not use the number again (documented contract of `adopt`).
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        let e = CoreEventFd::from_fd(owned).map_err(|e| io_error("adopt eventfd", e))?;
        Ok(EventFd { inner: live(e), poll: None, spin_us: Rc::new(Cell::new(0)) })
    }

    #[napi(getter)]
    pub fn fd(&self) -> i32 {
        self.inner.borrow().as_ref().map(|e| e.as_raw_fd()).unwrap_or(-1)
    }

    #[napi(getter)]
    pub fn closed(&self) -> bool {
        self.inner.borrow().is_none()
    }

    /// Adds `count` (default 1) to the counter.
    #[napi]
    pub fn signal(&self, count: Option<f64>) -> Result<()> {
        let n = count.unwrap_or(1.0).max(1.0) as u64;
        match &*self.inner.borrow() {
            Some(e) => e.signal(n).map_err(|e| io_error("eventfd signal", e)),
            None => Err(closed("eventfd")),
        }
    }

    /// Reads and resets the counter (0 when nothing was signalled).
    #[napi]
    pub fn drain(&self) -> Result<f64> {
        match &*self.inner.borrow() {
            Some(e) => e.drain().map(|n| n as f64).map_err(|e| io_error("eventfd drain", e)),
            None => Err(closed("eventfd")),
        }
    }

    /// Calls `callback(count)` on Node's loop whenever the eventfd is
    /// signalled; replaces an earlier watch. While watched, the object is
    /// kept alive (like an active Node handle) until unwatch() or close().
    /// After a callback, while the loop has nothing else to do (no timer
    /// due, no immediate, no other fd ready), the watch sleeps for the
    /// next ring itself, in libuv's epoll set, and calls back without a
    /// turn of the loop (at most 2 ms of rings in one go); whatever else
    /// wakes it goes to the loop as before. Such a sleep counts as busy,
    /// not idle, in `performance.eventLoopUtilization()`.
    /// The callback may return the fd number of an open EventFd (its
    /// answer): the watch rings it once as soon as the callback has
    /// returned, which costs less than a `signalFd` call inside it.
    #[napi(ts_args_type = "callback: (count: number) => number | void")]
    pub fn watch(&mut self, env: Env, this: This, callback: Unknown) -> Result<()> {
        let fd = self.fd();
        if fd < 0 {
            return Err(closed("eventfd"));
        }
        self.unwatch();
        let inner = self.inner.clone();
        let spin_us = self.spin_us.clone();
        let handler = Box::new(move |ctx: &crate::poll::Ctx, events: i32| {
            if events & ERROR != 0 {
                return;
            }
            // The fd is open while inner holds the EventFd (close() takes
            // it, and unwatches first).
            let drain = || inner.borrow().as_ref().map(|e| drain_raw(e.as_raw_fd()));
            let Some(count) = drain() else { return };
            if count == 0 {
                return;
            }
            // Every call in a batch, a lone ring's too: its answer is then
            // rung before its promise jobs and ticks run (one of which
            // might close that EventFd).
            let Some(mut b) = ctx.batch() else { return };
            if !b.call_then(|c| Ok([c.number(count as f64)?]), answer) {
                return;
            }
            // Then the next rings are taken here, each calling back at
            // once, until MAX_SPIN has passed (the loop's turn) or the
            // watch is closed. Busy polling: for the window after the last
            // ring (each one starts it again), the eventfd is read without
            // a sleep, so the answer to what the callback just rang is seen
            // without a wake-up. Otherwise, when the loop has nothing else
            // to do, the handler sleeps where libuv would (wait_alone) and
            // takes the next ring without a turn of the loop.
            let started = Instant::now();
            let mut last = started;
            let mut called = false;
            // Calls since the clock was last read: right after a call the
            // window has just started again, so while rings keep coming
            // the clock is read only every CLOCK_EVERY of them (the last
            // ring's time is then that much early: microseconds).
            let mut unclocked = 0u32;
            let mut empty = 0u32;
            let mut spinning;
            loop {
                if called && unclocked < CLOCK_EVERY && spin_us.get() > 0 {
                    unclocked += 1;
                    called = false;
                    spinning = ctx.is_open();
                    if !spinning {
                        return;
                    }
                } else {
                    let now = Instant::now();
                    unclocked = 0;
                    if called {
                        last = now;
                        called = false;
                    }
                    if now.duration_since(started) >= MAX_SPIN || !ctx.is_open() {
                        return;
                    }
                    let window = Duration::from_micros(u64::from(spin_us.get()));
                    spinning = now.duration_since(last) < window;
                }
                // The loop has work, or this wake-up's time is up: the
                // ring (if any) stays readable for libuv's own poll.
                if !spinning && (!ctx.wait_alone(fd) || started.elapsed() >= MAX_SPIN) {
                    return;
                }
                match drain() {
                    None => return,
                    // The read itself is the pause between two looks (as
                    // in the C baseline's loop); after a while a yield too.
                    Some(0) if spinning => {
                        empty += 1;
                        if empty >= YIELD_AFTER {
                            std::thread::yield_now();
                        }
                    }
                    Some(0) => return,
                    Some(n) => {
                        empty = 0;
                        if !b.call_then(|c| Ok([c.number(n as f64)?]), answer) {
                            return;
                        }
                        called = true;
                    }
                }
            }
        });
        self.poll = Some(Poll::start(&env, fd, READABLE, callback.raw(), this.object.raw(), handler)?);
        Ok(())
    }

    /// Busy polling: after each callback of the watch, keep reading the
    /// eventfd for up to `us` microseconds (0, the default: off) and call
    /// the callback at once for what arrives, instead of sleeping. Never
    /// more than 2 ms in one go.
    #[napi]
    pub fn spin(&self, us: u32) {
        self.spin_us.set(us.min(1_000_000));
    }

    /// Stops watching; the eventfd stays open.
    #[napi]
    pub fn unwatch(&mut self) {
        if let Some(mut p) = self.poll.take() {
            p.close();
        }
    }

    /// Whether an active watch keeps the process alive (default true).
    #[napi(js_name = "ref")]
    pub fn keep_alive(&self, keep: Option<bool>) {
        if let Some(p) = &self.poll {
            p.set_ref(keep.unwrap_or(true));
        }
    }

    /// Stops watching and closes the fd. Idempotent.
    #[napi]
    pub fn close(&mut self) {
        self.unwatch();
        if let Some(e) = self.inner.borrow_mut().take() {
            // Before the fd is closed (and its number free for reuse).
            LIVE.with(|l| l.borrow_mut().remove(e.as_raw_fd()));
        }
    }
}

impl Drop for EventFd {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests {
    use super::FdSet;

    #[test]
    fn fd_set_holds_what_was_inserted_and_nothing_else() {
        let mut s = FdSet::default();
        for fd in [0, 3, 63, 64, 1000] {
            assert!(!s.contains(fd));
            s.insert(fd);
            assert!(s.contains(fd));
        }
        assert!(!s.contains(4) && !s.contains(65) && !s.contains(-1) && !s.contains(100_000));
        s.remove(64);
        assert!(!s.contains(64) && s.contains(63) && s.contains(1000));
        s.remove(-1);
        s.remove(100_000);
        s.insert(-1);
        assert!(!s.contains(-1));
    }
}
