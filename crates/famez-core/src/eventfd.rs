//! Eventfds in counter mode: every `signal(n)` adds n, one `drain()` returns
//! the sum of all signals since the last drain and resets it to zero. That
//! coalescing is what lets a poller handle a burst of doorbells in one wake-up.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::eventfd::{EfdFlags, EventFd as NixEventFd};

/// An owned eventfd. Created nonblocking and close-on-exec.
#[derive(Debug)]
pub struct EventFd(OwnedFd);

impl EventFd {
    /// A new eventfd with a zero counter.
    pub fn new() -> io::Result<Self> {
        let efd = NixEventFd::from_value_and_flags(0, EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC)?;
        Ok(EventFd(OwnedFd::from(efd)))
    }

    /// Adopts an eventfd received from elsewhere (for instance over
    /// SCM_RIGHTS) and makes it nonblocking. The nonblocking flag belongs to
    /// the open file description, which the sender shares; famez's own
    /// eventfds are nonblocking already, and QEMU polls its copies.
    pub fn from_fd(fd: OwnedFd) -> io::Result<Self> {
        let flags = OFlag::from_bits_truncate(fcntl(&fd, FcntlArg::F_GETFL)?);
        if !flags.contains(OFlag::O_NONBLOCK) {
            fcntl(&fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
        }
        Ok(EventFd(fd))
    }

    /// Adds `n` (at least 1) to the counter, waking whoever polls it.
    pub fn signal(&self, n: u64) -> io::Result<()> {
        let n = n.max(1);
        loop {
            match nix::unistd::write(&self.0, &n.to_ne_bytes()) {
                Ok(_) => return Ok(()),
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Reads and resets the counter: the number of signals since the last
    /// drain, or 0 when there were none.
    pub fn drain(&self) -> io::Result<u64> {
        let mut buf = [0u8; 8];
        loop {
            match nix::unistd::read(&self.0, &mut buf) {
                Ok(8) => return Ok(u64::from_ne_bytes(buf)),
                Ok(n) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("eventfd read returned {n} bytes instead of 8"),
                    ))
                }
                Err(Errno::EAGAIN) => return Ok(0),
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }
}

impl AsFd for EventFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl AsRawFd for EventFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

impl IntoRawFd for EventFd {
    fn into_raw_fd(self) -> RawFd {
        self.0.into_raw_fd()
    }
}

impl From<EventFd> for OwnedFd {
    fn from(e: EventFd) -> OwnedFd {
        e.0
    }
}

impl FromRawFd for EventFd {
    /// # Safety
    /// `fd` must be an open eventfd that the caller owns.
    unsafe fn from_raw_fd(fd: RawFd) -> Self {
        // SAFETY: the caller hands over ownership of an open fd.
        EventFd(unsafe { OwnedFd::from_raw_fd(fd) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drain_sums_signals_and_resets() {
        let e = EventFd::new().unwrap();
        assert_eq!(e.drain().unwrap(), 0);
        e.signal(1).unwrap();
        e.signal(3).unwrap();
        assert_eq!(e.drain().unwrap(), 4);
        assert_eq!(e.drain().unwrap(), 0);
    }

    #[test]
    fn signal_zero_counts_as_one() {
        let e = EventFd::new().unwrap();
        e.signal(0).unwrap();
        assert_eq!(e.drain().unwrap(), 1);
    }

    #[test]
    fn eventfd_is_nonblocking_and_cloexec() {
        let e = EventFd::new().unwrap();
        let fl = OFlag::from_bits_truncate(fcntl(&e, FcntlArg::F_GETFL).unwrap());
        assert!(fl.contains(OFlag::O_NONBLOCK));
        let fd = nix::fcntl::FdFlag::from_bits_truncate(fcntl(&e, FcntlArg::F_GETFD).unwrap());
        assert!(fd.contains(nix::fcntl::FdFlag::FD_CLOEXEC));
    }
}
