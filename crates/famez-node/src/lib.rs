//! famez-node: famez-core as JavaScript classes (napi-rs).
//!
//! Thin on purpose: every class owns its fds and releases them in an
//! explicit `close()` (and on garbage collection as a fallback); readiness
//! is delivered on Node's own event loop (see `poll`); the shared memory is
//! exposed as exactly one external ArrayBuffer per mapping (see `shm`);
//! errors carry their code in `err.code` (see `error`).

// Under `cargo test` napi-derive registers nothing with Node, so every
// exported function looks unused to the test build.
#![cfg_attr(test, allow(dead_code))]

mod error;
mod eventfd;
mod genz;
mod group;
mod guest;
mod link;
mod mailbox;
mod notify;
mod ofi;
mod pidfile;
mod poll;
mod resource;
mod ring;
mod shm;
mod socket;
mod view;

use std::os::fd::{FromRawFd, OwnedFd};

use napi_derive::napi;

pub(crate) use error::{closed, io_error, Result};

/// Takes ownership of a received fd number that JavaScript does not want.
#[napi]
pub fn close_fd(fd: i32) -> Result<()> {
    if fd < 0 {
        return Ok(());
    }
    // SAFETY: JavaScript hands back an fd that the binding gave it (a
    // received SCM_RIGHTS fd) and promises not to use it again.
    drop(unsafe { OwnedFd::from_raw_fd(fd) });
    Ok(())
}

/// Gives the CPU to another runnable thread or process, if any (sched_yield):
/// what a busy-polling loop does between two looks, so that a process it
/// shares the CPU with runs meanwhile.
#[napi]
pub fn yield_cpu() {
    std::thread::yield_now();
}

/// Reserves the blocks of `[0, size)` of the file behind `fd` (posix_fallocate:
/// a FAM file that will not hit ENOSPC later), growing it to `size` if it is
/// shorter. ENOSPC when the filesystem lacks the room; EOPNOTSUPP where the
/// filesystem cannot reserve.
#[napi]
pub fn preallocate(fd: i32, size: f64) -> Result<()> {
    if !(size.is_finite() && size > 0.0 && size.fract() == 0.0 && size <= i64::MAX as f64) {
        return Err(error::coded("EINVAL", format_args!("size {size} is not a positive whole number of bytes")));
    }
    // SAFETY: the fd is only borrowed for the duration of the call.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    nix::fcntl::posix_fallocate(borrowed, 0, size as i64).map_err(|e| io_error("posix_fallocate", e.into()))
}

/// Size of the object behind an fd (fstat), without taking ownership.
#[napi]
pub fn fd_size(fd: i32) -> Result<f64> {
    // SAFETY: the fd is only borrowed for the duration of fstat.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    let st = nix::sys::stat::fstat(borrowed).map_err(|e| io_error("fstat", e.into()))?;
    Ok(st.st_size as f64)
}
