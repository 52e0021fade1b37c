//! `sdNotify`: systemd's readiness notification (see famez_core::notify),
//! a UNIX datagram that Node itself cannot send.

use famez_core::notify::{notify_socket, notify_to};
use napi_derive::napi;

use crate::error::{coded, io_error, Result};

/// Sends `state` ("READY=1\nSTATUS=...", "STOPPING=1", ...) to the service
/// manager at `$NOTIFY_SOCKET`: false when it is unset (not started by
/// systemd as a Type=notify service), true once sent. Throws when it is
/// set but the datagram cannot be sent: EINVAL for an address that is not
/// an AF_UNIX one, the OS error otherwise (EAGAIN when the manager's queue
/// is full: the send never waits).
#[napi]
pub fn sd_notify(state: String) -> Result<bool> {
    let Some(address) = notify_socket() else { return Ok(false) };
    notify_to(&address, &state).map(|()| true).map_err(|e| {
        let what = format!("sd_notify to NOTIFY_SOCKET={}", address.to_string_lossy());
        match e.raw_os_error() {
            Some(_) => io_error(&what, e),
            None if e.kind() == std::io::ErrorKind::InvalidInput => coded("EINVAL", format_args!("{what}: {e}")),
            None => io_error(&what, e),
        }
    })
}
