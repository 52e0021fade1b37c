//! The fd limit (RLIMIT_NOFILE): a fabric of N peers holds (N+1)*(N+2)
//! eventfds, so the server raises its soft limit to the hard one at start
//! and checks the result against what it will need.

use crate::Result;
use napi_derive::napi;
use nix::sys::resource::{getrlimit, setrlimit, Resource, RLIM_INFINITY};

use crate::io_error;

#[napi(object)]
pub struct FdLimit {
    /// The limit in force: no fd numbered this or higher can be opened
    /// (Infinity when unlimited).
    pub soft: f64,
    /// How far the soft limit may be raised without privilege.
    pub hard: f64,
}

fn as_number(v: nix::sys::resource::rlim_t) -> f64 {
    if v == RLIM_INFINITY {
        f64::INFINITY
    } else {
        v as f64
    }
}

/// The current RLIMIT_NOFILE.
#[napi]
pub fn fd_limit() -> Result<FdLimit> {
    let (soft, hard) =
        getrlimit(Resource::RLIMIT_NOFILE).map_err(|e| io_error("getrlimit(RLIMIT_NOFILE)", e.into()))?;
    Ok(FdLimit { soft: as_number(soft), hard: as_number(hard) })
}

/// Raises the soft RLIMIT_NOFILE to the hard limit and returns the limits
/// now in force. A kernel that refuses (a hard limit above
/// /proc/sys/fs/nr_open) leaves the soft limit where it was; the caller
/// judges the result, so that is not an error.
#[napi]
pub fn raise_fd_limit() -> Result<FdLimit> {
    let (soft, hard) =
        getrlimit(Resource::RLIMIT_NOFILE).map_err(|e| io_error("getrlimit(RLIMIT_NOFILE)", e.into()))?;
    if soft != hard {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
    fd_limit()
}
