//! famez-core: the only part of famez that touches raw file descriptors.
//!
//! It provides what an ivshmem server or client needs from the kernel:
//! eventfds (doorbells), UNIX stream sockets that carry one 8-byte message
//! and at most one fd per `sendmsg`, and the shared-memory object with its
//! mapping. Everything is nonblocking and close-on-exec; nothing here knows
//! about Node.js. Over the mapping: the FAME-Z mailbox (`mailbox`) and
//! famez's ring channels (`ring`), with their byte layout in `layout`. And
//! systemd's readiness notification (`notify`), which Node cannot send.

pub mod eventfd;
pub mod layout;
pub mod lock;
pub mod mailbox;
pub mod notify;
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
