//! Readiness of fds on Node's own event loop, through libuv's `uv_poll`.
//!
//! No thread and no cross-thread hop: libuv's epoll reports an eventfd or a
//! socket ready, a Rust handler runs on the loop thread (drains the eventfd,
//! reads the socket) and calls the JavaScript callback through
//! `napi_make_callback`, which runs promise jobs and `process.nextTick`
//! queues afterwards, as any libuv-driven callback in Node does (a `Batch`
//! gives the same for many calls in one wake-up, with each call's callback
//! scope opened ahead of it).
//!
//! Memory contract: the `uv_poll_t` and the handler state live on the heap
//! and never move; libuv's handle `data` points at the state. `close()` stops
//! polling at once (uv_close removes the fd from epoll synchronously, so the
//! caller may close the fd right after) and the memory is freed in the close
//! callback. An env cleanup hook closes handles still open when a worker or
//! the process tears the env down. The loop is taken from the env, never
//! `uv_default_loop()`, so worker threads poll on their own loop.

use std::ffi::{c_char, c_int, c_void, CStr};
use std::ptr;

use napi::{sys, Env};

use crate::error::{check, coded, warn, Error, FromNapi, Result};

// libuv is linked into the node binary, which exports these symbols.
extern "C" {
    fn uv_handle_size(kind: c_int) -> usize;
    fn uv_poll_init(lp: *mut sys::uv_loop_s, handle: *mut c_void, fd: c_int) -> c_int;
    fn uv_poll_start(handle: *mut c_void, events: c_int, cb: extern "C" fn(*mut c_void, c_int, c_int)) -> c_int;
    fn uv_close(handle: *mut c_void, cb: extern "C" fn(*mut c_void));
    fn uv_handle_set_data(handle: *mut c_void, data: *mut c_void);
    fn uv_handle_get_data(handle: *const c_void) -> *mut c_void;
    fn uv_strerror(err: c_int) -> *const c_char;
    fn uv_ref(handle: *mut c_void);
    fn uv_unref(handle: *mut c_void);
    fn uv_backend_fd(lp: *const sys::uv_loop_s) -> c_int;
    fn uv_backend_timeout(lp: *const sys::uv_loop_s) -> c_int;
    fn uv_update_time(lp: *mut sys::uv_loop_s);
}

const UV_POLL: c_int = 8;
pub const READABLE: i32 = 1;
pub const WRITABLE: i32 = 2;
pub const DISCONNECT: i32 = 4;
/// Passed to handlers in place of events when libuv reports an error.
pub const ERROR: i32 = 1 << 30;

fn uv_error(what: &str, code: c_int) -> Error {
    // SAFETY: uv_strerror returns a static NUL-terminated string for any code.
    let text = unsafe { CStr::from_ptr(uv_strerror(code)) }.to_string_lossy();
    // libuv's codes are negated errnos on Unix.
    coded(crate::error::errno_name(-code), format_args!("{what}: {text}"))
}

/// What a handler gets to call JavaScript with.
pub struct Ctx {
    lp: *mut sys::uv_loop_s,
    env: sys::napi_env,
    callback: sys::napi_ref,
    async_ctx: sys::napi_async_context,
    state: *const PollState,
}

impl Ctx {
    /// Whether the poll is still open: JavaScript may have closed it (or
    /// replaced the watch) from the callback a handler just called.
    pub fn is_open(&self) -> bool {
        // SAFETY: the state is freed only in on_close, which libuv never
        // runs before the poll callback that made this Ctx returns.
        unsafe { !(*self.state).closing }
    }

    /// Sleeps where libuv itself would, for as long as libuv would (until
    /// its next timer; no timer of its own, so no extra clock interrupt),
    /// provided the loop has nothing else to do, and tells whether what
    /// woke it was `fd` alone: then the handler can take it at once,
    /// without the rest of a turn of the loop (its phases, the poll's
    /// return and dispatch). False, at once, when the loop has work
    /// (`uv_backend_timeout` is 0: immediates, pending or closing handles,
    /// watchers to register with epoll, a stop; it is what libuv's own
    /// poll would not wait for), when a timer is due, when a signal
    /// interrupts, and when any other fd of the loop is ready: the handler
    /// returns and libuv runs as usual. libuv's epoll set is level-
    /// triggered, so what this wait saw and left is still there for
    /// libuv's own.
    pub fn wait_alone(&self, fd: i32) -> bool {
        if !self.is_open() {
            return false;
        }
        // SAFETY: the loop outlives every handle on it, and this runs on
        // its thread inside one of its callbacks; the three calls are
        // libuv's API for embedders that poll its backend fd themselves.
        let (epfd, timeout) = unsafe {
            uv_update_time(self.lp);
            (uv_backend_fd(self.lp), uv_backend_timeout(self.lp))
        };
        if timeout == 0 || epfd < 0 {
            return false;
        }
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; 8];
        // SAFETY: events has room for the 8 entries epoll_wait may fill;
        // waiting on libuv's epoll fd only reads its ready list (level-
        // triggered: nothing is consumed).
        let n = unsafe { libc::epoll_wait(epfd, events.as_mut_ptr(), events.len() as c_int, timeout) };
        // libuv stores the fd in epoll_data's `fd` member: the first 4
        // bytes of the union.
        let fd_of = |e: &libc::epoll_event| {
            let data = e.u64;
            if cfg!(target_endian = "little") {
                data as u32 as i32
            } else {
                (data >> 32) as u32 as i32
            }
        };
        n > 0 && events[..n as usize].iter().all(|e| fd_of(e) == fd)
    }

    pub fn number(&self, v: f64) -> Result<sys::napi_value> {
        let mut out = ptr::null_mut();
        // SAFETY: called on the loop thread inside an open handle scope.
        check(unsafe { sys::napi_create_double(self.env, v, &mut out) }, "napi_create_double")?;
        Ok(out)
    }

    pub fn null(&self) -> Result<sys::napi_value> {
        let mut out = ptr::null_mut();
        // SAFETY: as above.
        check(unsafe { sys::napi_get_null(self.env, &mut out) }, "napi_get_null")?;
        Ok(out)
    }

    pub fn string(&self, s: &str) -> Result<sys::napi_value> {
        let mut out = ptr::null_mut();
        // SAFETY: as above; the pointer and length describe valid UTF-8.
        let status = unsafe { sys::napi_create_string_utf8(self.env, s.as_ptr().cast(), s.len() as isize, &mut out) };
        check(status, "napi_create_string_utf8")?;
        Ok(out)
    }

    /// A Node Buffer holding a copy of `data`.
    pub fn buffer(&self, data: &[u8]) -> Result<sys::napi_value> {
        let (mut out, mut at) = (ptr::null_mut(), ptr::null_mut());
        // SAFETY: as above; Node copies len bytes from data into a Buffer it owns.
        let status =
            unsafe { sys::napi_create_buffer_copy(self.env, data.len(), data.as_ptr().cast(), &mut at, &mut out) };
        check(status, "napi_create_buffer_copy")?;
        Ok(out)
    }

    /// Calls the JavaScript callback with the arguments `args` makes. An
    /// exception it throws goes to `process.on('uncaughtException')` like
    /// one from any other callback, and so does a failure to make the
    /// arguments or the call; returns false then, so the handler can stop
    /// its batch.
    pub fn call<const N: usize>(&self, args: impl FnOnce(&Ctx) -> Result<[sys::napi_value; N]>) -> bool {
        self.call_ref(self.callback, args)
    }

    /// A number `v` as an i32, or None (not a number).
    pub fn int32(&self, v: sys::napi_value) -> Option<i32> {
        let mut out = 0i32;
        // SAFETY: v is a live value of this env (a call's result, in the
        // handle scope it was made in), on the loop thread.
        let status = unsafe { sys::napi_get_value_int32(self.env, v, &mut out) };
        (status == sys::Status::napi_ok).then_some(out)
    }

    /// Like `call`, for another function held by a reference (null: no-op).
    pub fn call_ref<const N: usize>(
        &self,
        callback: sys::napi_ref,
        args: impl FnOnce(&Ctx) -> Result<[sys::napi_value; N]>,
    ) -> bool {
        if callback.is_null() {
            return true;
        }
        match self.try_call(callback, args) {
            Ok(()) => true,
            Err(e) => {
                self.raise(e);
                false
            }
        }
    }

    fn try_call<const N: usize>(
        &self,
        callback: sys::napi_ref,
        args: impl FnOnce(&Ctx) -> Result<[sys::napi_value; N]>,
    ) -> Result<()> {
        let args = args(self)?;
        // SAFETY: env, reference and async context are alive while the poll
        // is open, and this runs on the loop thread inside a handle scope.
        unsafe {
            let mut func = ptr::null_mut();
            check(sys::napi_get_reference_value(self.env, callback, &mut func), "napi_get_reference_value")?;
            if func.is_null() {
                // The function was collected: nothing to call.
                return Ok(());
            }
            // napi_make_callback converts the receiver to an object, so
            // undefined is refused; the global object is what a plain call gets.
            let mut recv = ptr::null_mut();
            check(sys::napi_get_global(self.env, &mut recv), "napi_get_global")?;
            let mut result = ptr::null_mut();
            let status =
                sys::napi_make_callback(self.env, self.async_ctx, recv, func, args.len(), args.as_ptr(), &mut result);
            check(status, "napi_make_callback")
        }
    }

    /// For a handler that calls back many times in one wake-up (a watch's
    /// busy polling): see `Batch`. None when the scope cannot be opened
    /// (the env is going away), or there is nothing to call.
    pub fn batch(&self) -> Option<Batch<'_>> {
        if self.callback.is_null() {
            return None;
        }
        let (mut func, mut recv) = (ptr::null_mut(), ptr::null_mut());
        // SAFETY: as in try_call; the values live in the poll callback's
        // handle scope, which outlives the batch.
        let got = unsafe {
            check(sys::napi_get_reference_value(self.env, self.callback, &mut func), "napi_get_reference_value")
                .and_then(|()| check(sys::napi_get_global(self.env, &mut recv), "napi_get_global"))
        };
        if let Err(e) = got {
            warn(&e);
            return None;
        }
        if func.is_null() {
            return None;
        }
        let mut batch = Batch { ctx: self, func, recv, scope: ptr::null_mut(), handles: ptr::null_mut(), calls: 0 };
        batch.open().then_some(batch)
    }

    /// Delivers a failure on the loop as an uncaught exception: the one the
    /// callback threw (pending), or an Error made from `e`.
    fn raise(&self, e: Error) {
        let exc = (|| -> Result<sys::napi_value> {
            let mut pending = false;
            // SAFETY: env is alive on the loop thread (see try_call).
            check(unsafe { sys::napi_is_exception_pending(self.env, &mut pending) }, "napi_is_exception_pending")?;
            let mut exc = ptr::null_mut();
            if pending {
                // SAFETY: as above.
                check(
                    unsafe { sys::napi_get_and_clear_last_exception(self.env, &mut exc) },
                    "napi_get_and_clear_last_exception",
                )?;
            } else {
                // SAFETY: as above; into_value makes a new Error value.
                exc =
                    unsafe { napi::JsError::from(Error::new(e.status.clone(), e.reason.clone())).into_value(self.env) };
                if exc.is_null() {
                    return Err(coded("EIO", "cannot create an Error"));
                }
            }
            Ok(exc)
        })();
        let delivered = exc.and_then(|exc| {
            // SAFETY: as above; exc is a live value of this env.
            check(unsafe { sys::napi_fatal_exception(self.env, exc) }, "napi_fatal_exception")
        });
        if let Err(failed) = delivered {
            warn(&failed);
            warn(&e);
        }
    }
}

/// Calls back as `Ctx::call` does (the same async context; promise jobs
/// and `process.nextTick` callbacks run after each call), with the
/// callback scope opened ahead: each call's scope is closed right after
/// it, and the next one opened then, so what comes between a ring that
/// is read and the callback that answers it is only the call itself. The
/// values of the calls live in a handle scope of the batch, renewed every
/// HANDLES_EVERY calls (a long batch does not pile them up).
pub struct Batch<'a> {
    ctx: &'a Ctx,
    func: sys::napi_value,
    recv: sys::napi_value,
    scope: sys::napi_callback_scope,
    handles: sys::napi_handle_scope,
    calls: u32,
}

const HANDLES_EVERY: u32 = 1024;

impl Batch<'_> {
    /// Opens the next call's scopes (the handle scope when there is none).
    fn open(&mut self) -> bool {
        let env = self.ctx.env;
        // SAFETY: on the loop thread inside the poll callback's handle
        // scope; the async context is alive while the poll is open. The
        // handle scope is opened outside the callback scope and closed
        // after it (close_call, then close_handles).
        let opened = unsafe {
            (if self.handles.is_null() {
                check(sys::napi_open_handle_scope(env, &mut self.handles), "napi_open_handle_scope")
            } else {
                Ok(())
            })
            .and_then(|()| {
                check(
                    sys::napi_open_callback_scope(env, ptr::null_mut(), self.ctx.async_ctx, &mut self.scope),
                    "napi_open_callback_scope",
                )
            })
        };
        if let Err(e) = opened {
            warn(&e);
            self.close_call();
            self.close_handles();
            return false;
        }
        true
    }

    /// Closes the call's callback scope: its promise jobs and ticks run now.
    fn close_call(&mut self) {
        if !self.scope.is_null() {
            // SAFETY: opened by open() on this thread, closed once.
            let closed = unsafe { sys::napi_close_callback_scope(self.ctx.env, self.scope) };
            if let Err(e) = check(closed, "napi_close_callback_scope") {
                warn(&e);
            }
            self.scope = ptr::null_mut();
        }
    }

    fn close_handles(&mut self) {
        if !self.handles.is_null() {
            // SAFETY: opened by open() on this thread, closed once, after
            // the callback scope opened inside it.
            let closed = unsafe { sys::napi_close_handle_scope(self.ctx.env, self.handles) };
            if let Err(e) = check(closed, "napi_close_handle_scope") {
                warn(&e);
            }
            self.handles = ptr::null_mut();
        }
    }

    /// As `Ctx::call`: false when the call (or making its arguments)
    /// failed, the failure then delivered as an uncaught exception, or when
    /// the next call's scope cannot be opened. `then` gets what the
    /// callback returned as soon as it has returned: before its call's
    /// promise jobs and ticks.
    pub fn call_then<const N: usize>(
        &mut self,
        args: impl FnOnce(&Ctx) -> Result<[sys::napi_value; N]>,
        then: impl FnOnce(&Ctx, sys::napi_value),
    ) -> bool {
        let ctx = self.ctx;
        let called = args(ctx).and_then(|args| {
            let mut result = ptr::null_mut();
            // SAFETY: inside the open callback scope, on the loop thread;
            // func and recv are live values of this env (see Ctx::batch).
            let status = unsafe {
                sys::napi_call_function(ctx.env, self.recv, self.func, args.len(), args.as_ptr(), &mut result)
            };
            check(status, "napi_call_function")?;
            then(ctx, result);
            Ok(())
        });
        let ok = match called {
            Ok(()) => true,
            Err(e) => {
                ctx.raise(e);
                false
            }
        };
        self.close_call();
        self.calls = self.calls.wrapping_add(1);
        if self.calls.is_multiple_of(HANDLES_EVERY) {
            self.close_handles();
        }
        ok && self.open()
    }
}

impl Drop for Batch<'_> {
    fn drop(&mut self) {
        self.close_call();
        self.close_handles();
    }
}

pub type Handler = Box<dyn FnMut(&Ctx, i32)>;

struct PollState {
    /// The loop the handle is on (a worker's own, not always the default).
    lp: *mut sys::uv_loop_s,
    handle: *mut c_void,
    env: sys::napi_env,
    callback: sys::napi_ref,
    async_ctx: sys::napi_async_context,
    /// A strong reference to the JavaScript object that owns the poll: an
    /// object being watched stays alive (as an active Node handle does)
    /// until it is unwatched or closed, so the garbage collector can never
    /// silently end a watch by dropping the object.
    owner: sys::napi_ref,
    handler: Option<Handler>,
    closing: bool,
}

/// A started `uv_poll` with its handler. Closing is explicit (and also done
/// on drop); the memory is released by libuv's close callback.
pub struct Poll {
    state: *mut PollState,
}

impl Poll {
    /// Starts watching `fd` for `events`; `callback` (a JS function, or
    /// null) is what the handler's `ctx.call` invokes; `owner` (the JS
    /// object, or null) is kept alive until the poll is closed.
    pub fn start(
        env: &Env,
        fd: i32,
        events: i32,
        callback: sys::napi_value,
        owner: sys::napi_value,
        handler: Handler,
    ) -> Result<Poll> {
        let raw_env = env.raw();
        let lp = env.get_uv_event_loop().coded()?;
        // SAFETY: uv_handle_size is a pure function of the handle kind.
        let size = unsafe { uv_handle_size(UV_POLL) };
        let mut callback_ref = ptr::null_mut();
        let mut owner_ref = ptr::null_mut();
        let mut async_ctx = ptr::null_mut();
        // SAFETY: env is the current env on the loop thread; the handle
        // buffer is large enough for a uv_poll_t as libuv itself reports.
        let handle = unsafe {
            let made = (|| -> Result<()> {
                if !callback.is_null() {
                    check(
                        sys::napi_create_reference(raw_env, callback, 1, &mut callback_ref),
                        "napi_create_reference",
                    )?;
                }
                if !owner.is_null() {
                    check(sys::napi_create_reference(raw_env, owner, 1, &mut owner_ref), "napi_create_reference")?;
                }
                let mut name = ptr::null_mut();
                check(
                    sys::napi_create_string_utf8(raw_env, c"famez:poll".as_ptr(), -1, &mut name),
                    "napi_create_string_utf8",
                )?;
                // Node 20 rejects a null resource object, so give it a fresh one.
                let mut resource = ptr::null_mut();
                check(sys::napi_create_object(raw_env, &mut resource), "napi_create_object")?;
                check(sys::napi_async_init(raw_env, resource, name, &mut async_ctx), "napi_async_init")
            })();
            if let Err(e) = made {
                release_js(raw_env, [callback_ref, owner_ref], async_ctx);
                return Err(e);
            }
            // The handle must not move while libuv knows it: a boxed buffer
            // (u64 elements for alignment) freed only in the close callback.
            let handle = Box::into_raw(vec![0u64; size.div_ceil(8)].into_boxed_slice()) as *mut u64 as *mut c_void;
            let rc = uv_poll_init(lp, handle, fd);
            if rc != 0 {
                drop(Box::from_raw(ptr::slice_from_raw_parts_mut(handle as *mut u64, size.div_ceil(8))));
                release_js(raw_env, [callback_ref, owner_ref], async_ctx);
                return Err(uv_error("uv_poll_init", rc));
            }
            handle
        };
        let state = Box::into_raw(Box::new(PollState {
            lp,
            handle,
            env: raw_env,
            callback: callback_ref,
            async_ctx,
            owner: owner_ref,
            handler: Some(handler),
            closing: false,
        }));
        // SAFETY: handle was initialised above; state outlives the handle
        // (both are freed together in on_close).
        let hooked = unsafe {
            uv_handle_set_data(handle, state.cast());
            check(
                sys::napi_add_env_cleanup_hook(raw_env, Some(cleanup_hook), state.cast()),
                "napi_add_env_cleanup_hook",
            )
        };
        if let Err(e) = hooked {
            // SAFETY: state is live and has no hook to remove.
            unsafe { close_state(state) };
            return Err(e);
        }
        let mut poll = Poll { state };
        poll.set_events(events)?;
        Ok(poll)
    }

    /// Changes what is watched; 0 stops watching but keeps the handle.
    pub fn set_events(&mut self, events: i32) -> Result<()> {
        if self.state.is_null() {
            return Ok(());
        }
        // SAFETY: state is live until close() nulls it.
        let handle = unsafe { (*self.state).handle };
        // SAFETY: handle is an initialised, not yet closed uv_poll_t.
        let rc = unsafe {
            if events == 0 {
                uv_poll_stop(handle)
            } else {
                uv_poll_start(handle, events, on_poll)
            }
        };
        if rc != 0 {
            return Err(uv_error("uv_poll_start", rc));
        }
        Ok(())
    }

    /// Whether this poll keeps the event loop (and so the process) alive.
    pub fn set_ref(&self, keep_alive: bool) {
        if self.state.is_null() {
            return;
        }
        // SAFETY: the handle is live while state is.
        unsafe {
            let h = (*self.state).handle;
            if keep_alive {
                uv_ref(h)
            } else {
                uv_unref(h)
            }
        }
    }

    pub fn close(&mut self) {
        if self.state.is_null() {
            return;
        }
        // SAFETY: state is live; close_state is idempotent per state.
        unsafe {
            let removed = sys::napi_remove_env_cleanup_hook((*self.state).env, Some(cleanup_hook), self.state.cast());
            if let Err(e) = check(removed, "napi_remove_env_cleanup_hook") {
                warn(&e);
            }
            close_state(self.state);
        }
        self.state = ptr::null_mut();
    }
}

extern "C" {
    fn uv_poll_stop(handle: *mut c_void) -> c_int;
}

impl Drop for Poll {
    fn drop(&mut self) {
        self.close();
    }
}

/// # Safety
/// `state` must be live and owned by an open poll.
unsafe fn close_state(state: *mut PollState) {
    // SAFETY: guaranteed by the caller.
    unsafe {
        if (*state).closing {
            return;
        }
        (*state).closing = true;
        uv_close((*state).handle, on_close);
    }
}

/// # Safety
/// Valid env and either null or live references and async context.
unsafe fn release_js(env: sys::napi_env, refs: [sys::napi_ref; 2], async_ctx: sys::napi_async_context) {
    // SAFETY: guaranteed by the caller.
    unsafe {
        for r in refs {
            if !r.is_null() {
                if let Err(e) = check(sys::napi_delete_reference(env, r), "napi_delete_reference") {
                    warn(&e);
                }
            }
        }
        if !async_ctx.is_null() {
            if let Err(e) = check(sys::napi_async_destroy(env, async_ctx), "napi_async_destroy") {
                warn(&e);
            }
        }
    }
}

extern "C" fn cleanup_hook(arg: *mut c_void) {
    // SAFETY: the hook is removed in Poll::close, so while it can run the
    // state is live and not yet closing. The env is being torn down and
    // libuv runs on_close only after every cleanup hook (napi's own
    // teardown included), so the JS reference and async context are
    // released now, while the env is still valid, not in on_close.
    unsafe {
        let state: *mut PollState = arg.cast();
        release_js((*state).env, [(*state).callback, (*state).owner], (*state).async_ctx);
        (*state).callback = ptr::null_mut();
        (*state).owner = ptr::null_mut();
        (*state).async_ctx = ptr::null_mut();
        close_state(state)
    }
}

extern "C" fn on_close(handle: *mut c_void) {
    // SAFETY: libuv calls this once, after which it never touches the
    // handle again; data points at the state allocated in Poll::start.
    unsafe {
        let state = Box::from_raw(uv_handle_get_data(handle) as *mut PollState);
        release_js(state.env, [state.callback, state.owner], state.async_ctx);
        let size = uv_handle_size(UV_POLL);
        drop(Box::from_raw(ptr::slice_from_raw_parts_mut(handle as *mut u64, size.div_ceil(8))));
        drop(state);
    }
}

extern "C" fn on_poll(handle: *mut c_void, status: c_int, events: c_int) {
    // SAFETY: data points at the live state (freed only in on_close, which
    // libuv never runs before this callback returns).
    let state = unsafe { uv_handle_get_data(handle) as *mut PollState };
    // SAFETY: as above; the handler is taken out while it runs so a
    // re-entrant close() from JavaScript never aliases it.
    unsafe {
        if (*state).closing {
            return;
        }
        let env = (*state).env;
        let mut scope = ptr::null_mut();
        if let Err(e) = check(sys::napi_open_handle_scope(env, &mut scope), "napi_open_handle_scope") {
            // No scope, no JavaScript values: the env is going away.
            warn(&e);
            return;
        }
        let ctx = Ctx { lp: (*state).lp, env, callback: (*state).callback, async_ctx: (*state).async_ctx, state };
        if let Some(mut handler) = (*state).handler.take() {
            handler(&ctx, if status < 0 { ERROR } else { events });
            (*state).handler = Some(handler);
        }
        if let Err(e) = check(sys::napi_close_handle_scope(env, scope), "napi_close_handle_scope") {
            warn(&e);
        }
    }
}
