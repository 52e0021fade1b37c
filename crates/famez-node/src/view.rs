//! What the `Mailbox` and `Ring` views share.
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
//! Errors carry their code in `err.code` (and at the front of the message):
//! EMSGSIZE (over a size limit), ERANGE (no such slot or pair), EBADMSG (the
//! other side wrote something invalid; the message is logged and skipped by
//! the caller; `popBatch`'s carries the good messages before the bad record
//! as `messages`), EINVAL (bad arguments or layout), EBADF (closed).
//! Expected outcomes are values, not errors: a busy slot makes `post` return
//! false, a full ring makes `push` return -1.

use std::borrow::Cow;
use std::ptr;

use famez_core::Mapping;
use napi::sys;

use crate::closed;
use crate::error::{check, coded, Result};
use crate::shm::MappingCell;

/// A JS number that must be a non-negative safe integer (a u64 field).
pub fn to_u64(what: &str, v: f64) -> Result<u64> {
    if v >= 0.0 && v.fract() == 0.0 && v <= 9_007_199_254_740_991.0 {
        Ok(v as u64)
    } else {
        Err(coded("EINVAL", format_args!("{what} {v} is not a non-negative safe integer")))
    }
}

/// Runs `f` on the mapping, holding the cell's lock for the call.
pub fn with_map<R>(cell: &Option<MappingCell>, what: &str, f: impl FnOnce(&Mapping) -> Result<R>) -> Result<R> {
    let cell = cell.as_ref().ok_or_else(|| closed(what))?;
    let guard = cell.lock().unwrap_or_else(|p| p.into_inner());
    let map = guard.as_ref().ok_or_else(|| closed("shared memory"))?;
    f(map)
}

/// The bytes of a JS array to copy into the mapping. A Uint8Array may be a
/// view of this very mapping (of the SharedMemory's ArrayBuffer); copying
/// such bytes straight into the ring or slot could overlap the destination,
/// which `copy_nonoverlapping` forbids, so those are copied out first.
pub fn outside<'a>(map: &Mapping, data: &'a [u8]) -> Cow<'a, [u8]> {
    let (start, end) = (map.as_ptr() as usize, map.as_ptr() as usize + map.len());
    let (d0, d1) = (data.as_ptr() as usize, data.as_ptr() as usize + data.len());
    if d0 < end && start < d1 {
        Cow::Owned(data.to_vec())
    } else {
        Cow::Borrowed(data)
    }
}

/// A Node Buffer holding a copy of `bytes`.
pub fn buffer_copy(env: sys::napi_env, bytes: &[u8]) -> Result<sys::napi_value> {
    let mut value = ptr::null_mut();
    // SAFETY: bytes is a valid slice for the call; Node copies it into a
    // buffer it owns. The data out-pointer is not wanted.
    let status =
        unsafe { sys::napi_create_buffer_copy(env, bytes.len(), bytes.as_ptr().cast(), ptr::null_mut(), &mut value) };
    check(status, "napi_create_buffer_copy")?;
    Ok(value)
}

pub fn null(env: sys::napi_env) -> Result<sys::napi_value> {
    let mut value = ptr::null_mut();
    // SAFETY: env is the current call's env.
    check(unsafe { sys::napi_get_null(env, &mut value) }, "napi_get_null")?;
    Ok(value)
}
