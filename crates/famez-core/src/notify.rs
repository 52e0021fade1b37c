//! systemd's readiness protocol (sd_notify(3)): a service started with
//! `Type=notify` finds `$NOTIFY_SOCKET` in its environment and sends one
//! datagram of newline-separated assignments (`READY=1`, `STATUS=...`,
//! `STOPPING=1`, `MAINPID=N`, `WATCHDOG=1`) to that AF_UNIX datagram
//! socket: a file system path, or an abstract address when it starts with
//! '@'. famez sends no fds, so no control message is involved.
//!
//! Unlike libsystemd's sd_notify the socket is nonblocking: a service
//! manager that stops reading gives `WouldBlock` instead of blocking the
//! caller (a server's event loop) for as long as it does not read.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::errno::Errno;
use nix::sys::socket::{sendto, socket, AddressFamily, MsgFlags, SockFlag, SockType, UnixAddr};

/// The environment variable systemd sets for a `Type=notify` service.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// `$NOTIFY_SOCKET`, when it is set.
pub fn notify_socket() -> Option<OsString> {
    std::env::var_os(NOTIFY_SOCKET)
}

/// Sends `state` (e.g. "READY=1\nSTATUS=serving") to the service manager
/// named by `$NOTIFY_SOCKET`: `Ok(false)` when it is unset (not started by
/// systemd as `Type=notify`), `Ok(true)` once the datagram is sent.
pub fn sd_notify(state: &str) -> io::Result<bool> {
    match notify_socket() {
        None => Ok(false),
        Some(address) => notify_to(&address, state).map(|()| true),
    }
}

/// Sends `state` as one datagram to `address`, written as in
/// `$NOTIFY_SOCKET`. An address that is neither an absolute path nor
/// '@' and a name (such as systemd's `vsock:` form) is
/// `ErrorKind::InvalidInput`; a receiver whose queue is full is
/// `ErrorKind::WouldBlock`.
pub fn notify_to(address: &OsStr, state: &str) -> io::Result<()> {
    let addr = match address.as_bytes() {
        [b'@', name @ ..] if !name.is_empty() => UnixAddr::new_abstract(name)?,
        [b'/', ..] => UnixAddr::new(Path::new(address))?,
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not an AF_UNIX address (an absolute path, or '@' and an abstract name)",
            ))
        }
    };
    let fd = socket(AddressFamily::Unix, SockType::Datagram, SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK, None)?;
    loop {
        return match sendto(fd.as_raw_fd(), state.as_bytes(), &addr, MsgFlags::MSG_NOSIGNAL) {
            Ok(n) if n == state.len() => Ok(()),
            // A datagram is sent whole or not at all; this is for form's sake.
            Ok(n) => Err(io::Error::new(io::ErrorKind::WriteZero, format!("sent {n} of {} bytes", state.len()))),
            Err(Errno::EINTR) => continue,
            Err(e) => Err(e.into()),
        };
    }
}
