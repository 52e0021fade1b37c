//! famez-core: the only part of famez that touches raw file descriptors.
//!
//! It provides what an ivshmem server or client needs from the kernel:
//! eventfds (doorbells), UNIX stream sockets that carry one 8-byte message
//! and at most one fd per `sendmsg`, and the shared-memory object with its
//! mapping. Everything is nonblocking and close-on-exec; nothing here knows
//! about Node.js. Over the mapping: the FAME-Z mailbox (`mailbox`) and
//! famez's ring channels (`ring`), with their byte layout in `layout`. And
//! systemd's readiness notification (`notify`), which Node cannot send. And
//! links between switches on libfabric (`ofi`), which is loaded with dlopen
//! only when a link is opened.

pub mod eventfd;
pub mod genz;
pub mod layout;
pub mod link;
pub mod lock;
pub mod mailbox;
pub mod notify;
pub mod ofi;
pub mod ring;
pub mod shm;
pub mod socket;
pub mod vfio;

pub use eventfd::EventFd;
pub use lock::PidFile;
pub use mailbox::{Mailbox, MailboxError};
pub use ring::{Ring, RingLayout};
pub use shm::{Mapping, SharedMemory, ShmBacking};
pub use socket::{UnixListener, UnixStream};
pub use vfio::{SysfsDevice, VfioDevice, VfioError};

/// An error's words for a person. An OS error reads as the C library's
/// text for its errno ("Broken pipe"), without the " (os error 32)" that
/// std's Display appends; any other error as it displays itself.
pub fn error_text(e: &std::io::Error) -> String {
    let text = e.to_string();
    match e.raw_os_error() {
        // std's text is strerror's; nix's own table words some differently.
        Some(errno) => text.strip_suffix(&format!(" (os error {errno})")).map_or_else(|| text.clone(), str::to_owned),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::error_text;
    use std::io;

    #[test]
    fn os_errors_read_without_their_number() {
        assert_eq!(error_text(&io::Error::from_raw_os_error(32)), "Broken pipe");
        assert_eq!(error_text(&io::Error::from(nix::errno::Errno::ENOENT)), "No such file or directory");
        assert_eq!(error_text(&io::Error::from(nix::errno::Errno::EBADF)), "Bad file descriptor");
        assert_eq!(error_text(&io::Error::new(io::ErrorKind::InvalidData, "two fds")), "two fds");
    }
}
