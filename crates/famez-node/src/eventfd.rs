//! `EventFd`: a doorbell. `signal()` rings it, `watch()` delivers the summed
//! count of rings to a callback on Node's loop (drained natively, so a burst
//! of rings is one call).

use std::cell::RefCell;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::rc::Rc;

use famez_core::EventFd as CoreEventFd;
use napi::bindgen_prelude::*;
use napi_derive::napi;

use crate::poll::{Poll, ERROR, READABLE};
use crate::{closed, io_error};

type Shared = Rc<RefCell<Option<CoreEventFd>>>;

#[napi]
pub struct EventFd {
    inner: Shared,
    poll: Option<Poll>,
}

#[napi]
impl EventFd {
    /// A new nonblocking, close-on-exec eventfd.
    #[napi(constructor)]
    pub fn new() -> Result<Self> {
        let e = CoreEventFd::new().map_err(|e| io_error("eventfd", e))?;
        Ok(EventFd { inner: Rc::new(RefCell::new(Some(e))), poll: None })
    }

    /// Takes ownership of a received eventfd number.
    #[napi(factory)]
    pub fn adopt(fd: i32) -> Result<Self> {
        if fd < 0 {
            return Err(Error::new(Status::InvalidArg, format!("EBADF: {fd} is not an fd")));
        }
        // SAFETY: JavaScript hands over an fd the binding gave it and will
        // not use the number again (documented contract of `adopt`).
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        let e = CoreEventFd::from_fd(owned).map_err(|e| io_error("adopt eventfd", e))?;
        Ok(EventFd { inner: Rc::new(RefCell::new(Some(e))), poll: None })
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
    #[napi(ts_args_type = "callback: (count: number) => void")]
    pub fn watch(&mut self, env: Env, this: This, callback: Unknown) -> Result<()> {
        let fd = self.fd();
        if fd < 0 {
            return Err(closed("eventfd"));
        }
        self.unwatch();
        let inner = self.inner.clone();
        let handler = Box::new(move |ctx: &crate::poll::Ctx, events: i32| {
            if events & ERROR != 0 {
                return;
            }
            let count = match &*inner.borrow() {
                Some(e) => e.drain().unwrap_or(0),
                None => return,
            };
            if count > 0 {
                ctx.call(&[ctx.number(count as f64)]);
            }
        });
        self.poll = Some(Poll::start(&env, fd, READABLE, callback.raw(), this.object.raw(), handler)?);
        Ok(())
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
        self.inner.borrow_mut().take();
    }
}

impl Drop for EventFd {
    fn drop(&mut self) {
        self.close();
    }
}
