//! `SharedMemory`: the ivshmem object and its one ArrayBuffer.
//!
//! The memory contract: a mapping is exposed to JavaScript as exactly one
//! external ArrayBuffer (two V8 buffers over the same memory can crash V8).
//! It is created with `napi_create_external_arraybuffer` directly, because
//! napi-rs's safe constructor silently copies when the runtime refuses
//! external buffers, which would be wrong for shared memory; here that
//! refusal is an error. `close()` detaches the buffer (every view over it
//! becomes length 0) and then unmaps, so unmapping never waits for the
//! garbage collector. If the object is collected without `close()`, the
//! buffer's finalizer keeps the mapping alive as long as the buffer lives.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::ptr;
use std::sync::{Arc, Mutex};

use famez_core::{Mapping, SharedMemory as CoreShm, ShmBacking};
use napi::bindgen_prelude::{Env, Unknown};
use napi::sys;
use napi_derive::napi;

use crate::error::{check, closed, coded, io_error, warn, Error, Result};

#[napi(object)]
pub struct ShmOptions {
    /// "posix" (a name in /dev/shm), "file" (a path, e.g. on hugetlbfs) or "memfd"
    pub kind: String,
    /// The POSIX name, the file path, or the memfd label.
    pub name: String,
    pub size: f64,
    /// Permission bits, default 0o600.
    pub mode: Option<u32>,
    /// Group id to give the object.
    pub gid: Option<u32>,
}

/// The mapping shared between this object and its ArrayBuffer's finalizer
/// (and the mailbox and ring views, see `mailbox`).
pub(crate) type MappingCell = Arc<Mutex<Option<Mapping>>>;

#[napi]
pub struct SharedMemory {
    shm: Option<CoreShm>,
    mapping: Option<MappingCell>,
    env: sys::napi_env,
    buffer: sys::napi_ref,
}

#[napi]
impl SharedMemory {
    /// Creates a new shared object. A POSIX name or a file is created
    /// exclusively: one in use (by a famez server, whose pid is named, or a
    /// process that has it open or mapped) is refused, a leftover nobody uses
    /// is replaced by a new object (`replacedStale`), never resized; symlinks
    /// are never followed. Refusals are "CODE: sentence" (EADDRINUSE,
    /// EEXIST, EACCES).
    #[napi(factory)]
    pub fn create(env: Env, options: ShmOptions) -> Result<Self> {
        let backing = match options.kind.as_str() {
            "posix" => ShmBacking::Posix(options.name.clone()),
            "file" => ShmBacking::File(PathBuf::from(&options.name)),
            "memfd" => ShmBacking::Memfd(options.name.clone()),
            k => return Err(coded("EINVAL", format_args!("unknown shared-memory kind {k:?}"))),
        };
        if !(options.size >= 0.0 && options.size.fract() == 0.0 && options.size <= 9.007_199_254_740_992e15) {
            return Err(coded("EINVAL", format_args!("invalid size {}", options.size)));
        }
        let shm = CoreShm::create(&backing, options.size as u64, options.mode.unwrap_or(0o600), options.gid)
            .map_err(|e| shm_error(&options.name, e))?;
        Ok(SharedMemory { shm: Some(shm), mapping: None, env: env.raw(), buffer: ptr::null_mut() })
    }

    /// Wraps a core object (a guest device's BAR2) for JavaScript.
    pub(crate) fn wrap(env: &Env, shm: CoreShm) -> Self {
        SharedMemory { shm: Some(shm), mapping: None, env: env.raw(), buffer: ptr::null_mut() }
    }

    /// Takes ownership of a received shared-memory fd.
    #[napi(factory)]
    pub fn from_fd(env: Env, fd: i32) -> Result<Self> {
        if fd < 0 {
            return Err(coded("EBADF", format_args!("{fd} is not an fd")));
        }
        // SAFETY: JavaScript hands over an fd the binding gave it and will
        // not use the number again.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        let shm = CoreShm::from_fd(owned).map_err(|e| io_error("fstat shared memory", e))?;
        Ok(SharedMemory { shm: Some(shm), mapping: None, env: env.raw(), buffer: ptr::null_mut() })
    }

    #[napi(getter)]
    pub fn fd(&self) -> i32 {
        self.shm.as_ref().map(|s| s.as_raw_fd()).unwrap_or(-1)
    }

    #[napi(getter)]
    pub fn size(&self) -> f64 {
        self.shm.as_ref().map(|s| s.size() as f64).unwrap_or(0.0)
    }

    /// The whole object as an ArrayBuffer, mapped on first use; the same
    /// buffer every time.
    #[napi(getter)]
    pub fn buffer(&mut self, env: Env) -> Result<Unknown<'_>> {
        let raw_env = env.raw();
        if !self.buffer.is_null() {
            let mut value = ptr::null_mut();
            // SAFETY: the reference is alive until close().
            check(
                unsafe { sys::napi_get_reference_value(raw_env, self.buffer, &mut value) },
                "napi_get_reference_value",
            )?;
            // SAFETY: value is a live ArrayBuffer in this env.
            return Ok(unsafe { Unknown::from_raw_unchecked(raw_env, value) });
        }
        let Some(shm) = &self.shm else { return Err(closed("shared memory")) };
        let mapping = shm.map().map_err(|e| io_error("mmap shared memory", e))?;
        let (data, len) = (mapping.as_ptr(), mapping.len());
        let cell: MappingCell = Arc::new(Mutex::new(Some(mapping)));
        let hint = Arc::into_raw(cell.clone()) as *mut std::ffi::c_void;
        let mut value = ptr::null_mut();
        // SAFETY: data/len describe a live MAP_SHARED mapping that stays
        // mapped until close() (after detaching) or until the finalizer
        // drops the last reference to the cell.
        let status = unsafe {
            sys::napi_create_external_arraybuffer(raw_env, data.cast(), len, Some(finalize_buffer), hint, &mut value)
        };
        if check(status, "napi_create_external_arraybuffer").is_err() {
            // Node calls the finalizer (releasing the hint) when it refuses
            // the buffer, e.g. past its maximum length (4 GiB in Node 20), so
            // dropping the hint here too would be a double free. Leave the
            // hint to the runtime and unmap now: no JavaScript can reach it.
            cell.lock().unwrap_or_else(|p| p.into_inner()).take();
            return Err(coded(
                "ENOBUFS",
                format_args!("this JavaScript runtime refused an external ArrayBuffer of {len} bytes (too large for it, or no external buffers), so the shared memory cannot be exposed without copying"),
            ));
        }
        let mut reference = ptr::null_mut();
        // SAFETY: value is the buffer just created.
        check(unsafe { sys::napi_create_reference(raw_env, value, 1, &mut reference) }, "napi_create_reference")?;
        self.buffer = reference;
        self.mapping = Some(cell);
        // SAFETY: as above.
        Ok(unsafe { Unknown::from_raw_unchecked(raw_env, value) })
    }

    /// Removes the object's name (POSIX name or file) if it still refers to
    /// this object: false when the name is another object's now (left
    /// alone) or there is none (memfd). Mappings stay valid.
    #[napi]
    pub fn unlink(&self) -> Result<bool> {
        let Some(shm) = &self.shm else { return Err(closed("shared memory")) };
        shm.unlink().map_err(|e| io_error("unlink shared memory", e))
    }

    /// A leftover object at the name was replaced by this new one.
    #[napi(getter)]
    pub fn replaced_stale(&self) -> bool {
        self.shm.as_ref().is_some_and(|s| s.replaced_stale())
    }

    /// Maps the whole object and unmaps it at once: says (ENOMEM) whether
    /// this process can map it, without creating the ArrayBuffer.
    #[napi]
    pub fn probe_map(&self) -> Result<()> {
        let Some(shm) = &self.shm else { return Err(closed("shared memory")) };
        shm.map().map(drop).map_err(|e| io_error("mmap shared memory", e))
    }

    /// Detaches the ArrayBuffer, unmaps and closes the fd. Idempotent.
    #[napi]
    pub fn close(&mut self) {
        self.release(true);
    }
}

impl SharedMemory {
    /// The mapping cell, mapping the object (and making its one ArrayBuffer)
    /// on first use. For the mailbox and ring views: they keep a clone, so
    /// the mapping lives while they do, and `close()` empties the cell for
    /// every holder at once.
    pub(crate) fn mapping_cell(&mut self, env: Env) -> Result<MappingCell> {
        if self.mapping.is_none() {
            self.buffer(env)?;
        }
        self.mapping.clone().ok_or_else(|| closed("shared memory"))
    }

    fn release(&mut self, unmap: bool) {
        // Unmapping is safe only once no JavaScript view can reach the
        // memory: after the detach. If that fails, the mapping is left to
        // the buffer's finalizer, as when the object is collected.
        let mut detached = true;
        if !self.buffer.is_null() {
            if unmap {
                detached = self.detach().map_err(|e| warn(&e)).is_ok();
            }
            // SAFETY: env and reference are from this object's creation and
            // this runs on the JS thread (close() or the wrapper's finalizer).
            let status = unsafe { sys::napi_delete_reference(self.env, self.buffer) };
            if let Err(e) = check(status, "napi_delete_reference") {
                warn(&e);
            }
            self.buffer = ptr::null_mut();
        }
        if let Some(cell) = self.mapping.take() {
            if unmap && detached {
                cell.lock().unwrap_or_else(|p| p.into_inner()).take();
            }
        }
        self.shm = None;
    }

    /// Detaches the ArrayBuffer: every view over it becomes length 0.
    fn detach(&self) -> Result<()> {
        let mut value = ptr::null_mut();
        // SAFETY: as in release(): a live reference of this env, on the JS thread.
        check(unsafe { sys::napi_get_reference_value(self.env, self.buffer, &mut value) }, "napi_get_reference_value")?;
        if value.is_null() {
            return Ok(()); // collected: no view is left
        }
        // SAFETY: value is the live ArrayBuffer of this object.
        check(unsafe { sys::napi_detach_arraybuffer(self.env, value) }, "napi_detach_arraybuffer")
    }
}

impl Drop for SharedMemory {
    fn drop(&mut self) {
        // Collected without close(): the buffer may outlive us, so leave the
        // unmapping to its finalizer.
        self.release(false);
    }
}

/// An OS error as "CODE: create shared memory NAME: text"; a refusal (a
/// sentence of its own) as "CODE: sentence".
fn shm_error(name: &str, e: std::io::Error) -> Error {
    if e.raw_os_error().is_some() {
        return io_error(&format!("create shared memory {name}"), e);
    }
    let code = match e.kind() {
        std::io::ErrorKind::AddrInUse => "EADDRINUSE",
        std::io::ErrorKind::PermissionDenied => "EACCES",
        std::io::ErrorKind::AlreadyExists => "EEXIST",
        std::io::ErrorKind::InvalidInput => "EINVAL",
        _ => "EIO",
    };
    coded(code, e)
}

unsafe extern "C" fn finalize_buffer(_env: sys::napi_env, _data: *mut std::ffi::c_void, hint: *mut std::ffi::c_void) {
    // SAFETY: hint is the Arc::into_raw made when the buffer was created,
    // released exactly once here.
    drop(unsafe { Arc::from_raw(hint as *const Mutex<Option<Mapping>>) });
}
