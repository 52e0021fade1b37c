//! UNIX stream sockets that speak the ivshmem server protocol's framing:
//! every message is one signed 64-bit little-endian integer sent with its own
//! `sendmsg`, carrying at most one file descriptor (SCM_RIGHTS).
//!
//! The kernel never merges two fd-carrying sends into one read on a stream
//! socket, but a reader can still see a message split across reads; the
//! receiver keeps the partial bytes (and any fd that came with them) until
//! the message is whole. Received fds are owned at once and close-on-exec.

use std::fs;
use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sys::stat::{umask, Mode};
use nix::sys::socket::{
    accept4, bind, connect, getsockopt, listen, recvmsg, sendmsg, socket, socketpair, sockopt, AddressFamily,
    Backlog, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType, UnixAddr,
};

/// Bytes in one protocol message.
pub const MESSAGE_LEN: usize = 8;

fn stream_socket() -> io::Result<OwnedFd> {
    Ok(socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )?)
}

/// What sits at a socket path before a server binds it.
#[derive(Debug, PartialEq, Eq)]
pub enum SocketPathState {
    /// Nothing there.
    Free,
    /// A socket file nobody listens on (connecting is refused): safe to replace.
    Stale,
    /// A socket with a live listener (it took a connection, or its backlog
    /// is full); the listener's pid when it could be found.
    Live(Option<u32>),
    /// Something that is not a socket.
    NotASocket,
    /// A socket whose state cannot be told (connecting failed otherwise,
    /// e.g. EACCES): never to be replaced.
    Unknown(Errno),
}

/// Tells whether a server listens at `path` by connecting to it, which is
/// the only test that holds whatever the path looks like (a symlinked
/// directory, a relative bind, a renamed socket, another network namespace).
/// The probe connection is closed at once; a famez server sees a peer that
/// left before its welcome.
pub fn socket_path_state(path: &Path) -> io::Result<SocketPathState> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(SocketPathState::Free),
        Err(e) => return Err(e),
    };
    if !meta.file_type().is_socket() {
        return Ok(SocketPathState::NotASocket);
    }
    let probe = stream_socket()?;
    let addr = UnixAddr::new(path)?;
    loop {
        return match connect(probe.as_raw_fd(), &addr) {
            // Who called listen() on it, in our pid namespace (0: not visible).
            Ok(()) => Ok(SocketPathState::Live(
                getsockopt(&probe, sockopt::PeerCredentials).ok().map(|c| c.pid()).filter(|p| *p > 0).map(|p| p as u32),
            )),
            // A nonblocking connect to a listener whose backlog is full.
            Err(Errno::EAGAIN) => Ok(SocketPathState::Live(listener_pid(path))),
            Err(Errno::ECONNREFUSED) => Ok(SocketPathState::Stale),
            Err(Errno::ENOENT) => Ok(SocketPathState::Free),
            Err(Errno::EINTR) => continue,
            Err(e) => Ok(SocketPathState::Unknown(e)),
        };
    }
}

/// The pid of the process listening at `path`, from the kernel's table of
/// UNIX sockets when its bound path is textually `path` (only used to name
/// a server whose backlog is full).
fn listener_pid(path: &Path) -> Option<u32> {
    let abs = fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let table = fs::read_to_string("/proc/net/unix").ok()?;
    // Columns: Num RefCount Protocol Flags Type St Inode Path; flag
    // 0x10000 (__SO_ACCEPTCON) marks a listening socket.
    for line in table.lines().skip(1) {
        let Some((cols, path_col)) = split_columns(line, 7) else { continue };
        let listening = u32::from_str_radix(cols[3], 16).map(|f| f & 0x10000 != 0).unwrap_or(false);
        let p = Path::new(path_col);
        if listening && (p == path || p == abs) {
            return cols[6].parse::<u64>().ok().and_then(pid_holding_inode);
        }
    }
    None
}

/// The first `n` whitespace-separated columns of `line` and the rest (a
/// path may contain spaces).
fn split_columns(line: &str, n: usize) -> Option<(Vec<&str>, &str)> {
    let mut rest = line.trim_start();
    let mut cols = Vec::with_capacity(n);
    for _ in 0..n {
        let end = rest.find(' ')?;
        cols.push(&rest[..end]);
        rest = rest[end..].trim_start();
    }
    (!rest.is_empty()).then_some((cols, rest))
}

/// The pid of a process that has socket `inode` open, if this user can see it.
fn pid_holding_inode(inode: u64) -> Option<u32> {
    let want = format!("socket:[{inode}]");
    for proc_entry in fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = proc_entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(fds) = fs::read_dir(proc_entry.path().join("fd")) else { continue };
        for fd in fds.flatten() {
            if fs::read_link(fd.path()).map(|l| l.as_os_str() == want.as_str()).unwrap_or(false) {
                return Some(pid);
            }
        }
    }
    None
}

/// A listening UNIX stream socket, nonblocking and close-on-exec.
#[derive(Debug)]
pub struct UnixListener {
    fd: OwnedFd,
    path: PathBuf,
}

impl UnixListener {
    /// Binds and listens at `path`, which must be free (see
    /// [`socket_path_state`] for replacing a stale socket first).
    pub fn bind(path: &Path) -> io::Result<Self> {
        Self::bind_mode(path, None)
    }

    /// As [`UnixListener::bind`], the socket file getting permission bits
    /// `mode` (e.g. 0600) at creation: bind runs with the umask set to
    /// `!mode`, so nothing is changed through the path afterwards (where a
    /// symlink could have been planted). The umask is process-wide: for the
    /// length of the bind, another thread creating a file gets this umask.
    pub fn bind_mode(path: &Path, mode: Option<u32>) -> io::Result<Self> {
        let fd = stream_socket()?;
        let addr = UnixAddr::new(path)?;
        match mode {
            Some(m) => {
                let old = umask(Mode::from_bits_truncate(!m & 0o777));
                let bound = bind(fd.as_raw_fd(), &addr);
                umask(old);
                bound?;
            }
            None => bind(fd.as_raw_fd(), &addr)?,
        }
        if let Err(e) = listen(&fd, Backlog::MAXCONN) {
            let _ = fs::remove_file(path);
            return Err(e.into());
        }
        Ok(UnixListener { fd, path: path.to_path_buf() })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The next pending connection, or `None` when there is none.
    pub fn accept(&self) -> io::Result<Option<UnixStream>> {
        loop {
            match accept4(self.fd.as_raw_fd(), SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC) {
                // SAFETY: accept4 returned a new fd that nothing else owns.
                Ok(raw) => return Ok(Some(UnixStream::from_owned(unsafe { owned(raw) }))),
                Err(Errno::EAGAIN) => return Ok(None),
                Err(Errno::EINTR) | Err(Errno::ECONNABORTED) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }
}

impl AsFd for UnixListener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for UnixListener {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// # Safety
/// `raw` must be an open fd owned by nobody else.
unsafe fn owned(raw: RawFd) -> OwnedFd {
    use std::os::fd::FromRawFd;
    // SAFETY: guaranteed by the caller.
    unsafe { OwnedFd::from_raw_fd(raw) }
}

/// One received protocol message.
#[derive(Debug)]
pub struct Message {
    pub value: i64,
    pub fd: Option<OwnedFd>,
}

/// A connected UNIX stream socket carrying ivshmem protocol messages.
#[derive(Debug)]
pub struct UnixStream {
    fd: OwnedFd,
    partial: [u8; MESSAGE_LEN],
    have: usize,
    partial_fd: Option<OwnedFd>,
}

impl UnixStream {
    fn from_owned(fd: OwnedFd) -> Self {
        UnixStream { fd, partial: [0; MESSAGE_LEN], have: 0, partial_fd: None }
    }

    /// Connects to a server at `path`. The connect itself waits for the
    /// server to accept into its backlog; the returned socket is nonblocking.
    pub fn connect(path: &Path) -> io::Result<Self> {
        let fd = socket(AddressFamily::Unix, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
        let addr = UnixAddr::new(path)?;
        loop {
            match connect(fd.as_raw_fd(), &addr) {
                Ok(()) => break,
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        set_nonblocking(&fd)?;
        Ok(Self::from_owned(fd))
    }

    /// A connected pair, for tests and for forked helpers.
    pub fn pair() -> io::Result<(Self, Self)> {
        let (a, b) = socketpair(
            AddressFamily::Unix,
            SockType::Stream,
            None,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        )?;
        Ok((Self::from_owned(a), Self::from_owned(b)))
    }

    /// Sends one message with at most one fd. A full socket buffer gives
    /// `ErrorKind::WouldBlock` and sends nothing: eight bytes go in one skb,
    /// so a stream socket never takes part of them.
    pub fn send(&self, value: i64, fd: Option<BorrowedFd<'_>>) -> io::Result<()> {
        let bytes = value.to_le_bytes();
        let iov = [IoSlice::new(&bytes)];
        let raw;
        let cmsg_storage;
        let cmsgs: &[ControlMessage] = match fd {
            Some(f) => {
                raw = [f.as_raw_fd()];
                cmsg_storage = [ControlMessage::ScmRights(&raw)];
                &cmsg_storage
            }
            None => &[],
        };
        loop {
            match sendmsg::<()>(self.fd.as_raw_fd(), &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None) {
                Ok(MESSAGE_LEN) => return Ok(()),
                Ok(n) => {
                    return Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        format!("sendmsg took {n} of {MESSAGE_LEN} bytes"),
                    ))
                }
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Receives one whole message, or `None` when no whole message is
    /// available yet. The peer closing the connection is
    /// `ErrorKind::UnexpectedEof`; a truncated control message (an fd the
    /// kernel had to drop) is `ErrorKind::InvalidData`.
    pub fn recv(&mut self) -> io::Result<Option<Message>> {
        while self.have < MESSAGE_LEN {
            let mut cmsg_space = nix::cmsg_space!([RawFd; 1]);
            let (n, fd) = {
                let mut iov = [IoSliceMut::new(&mut self.partial[self.have..])];
                let msg = match recvmsg::<()>(
                    self.fd.as_raw_fd(),
                    &mut iov,
                    Some(&mut cmsg_space),
                    MsgFlags::MSG_CMSG_CLOEXEC,
                ) {
                    Ok(m) => m,
                    Err(Errno::EINTR) => continue,
                    Err(Errno::EAGAIN) => return Ok(None),
                    Err(e) => return Err(e.into()),
                };
                let mut fds = Vec::new();
                for c in msg.cmsgs()? {
                    if let ControlMessageOwned::ScmRights(list) = c {
                        // SAFETY: the kernel just installed these fds in our table.
                        fds.extend(list.into_iter().map(|r| unsafe { owned(r) }));
                    }
                }
                if msg.flags.contains(MsgFlags::MSG_CTRUNC) {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "control message truncated: the peer sent more than one fd with a message",
                    ));
                }
                if fds.len() > 1 {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("{} fds arrived with one message; the protocol allows one", fds.len()),
                    ));
                }
                (msg.bytes, fds.pop())
            };
            if n == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed"));
            }
            if let Some(fd) = fd {
                if self.partial_fd.is_some() {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, "two fds arrived within one message"));
                }
                self.partial_fd = Some(fd);
            }
            self.have += n;
        }
        self.have = 0;
        Ok(Some(Message { value: i64::from_le_bytes(self.partial), fd: self.partial_fd.take() }))
    }

    /// Waits up to `timeout_ms` for the socket to become readable; used by
    /// blocking callers (tests, forked helpers).
    pub fn wait_readable(&self, timeout_ms: i32) -> io::Result<bool> {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        let mut fds = [PollFd::new(self.fd.as_fd(), PollFlags::POLLIN)];
        let t = PollTimeout::try_from(timeout_ms).unwrap_or(PollTimeout::MAX);
        loop {
            match poll(&mut fds, t) {
                Ok(n) => return Ok(n > 0),
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Receives one message, waiting up to `timeout_ms` for it.
    pub fn recv_timeout(&mut self, timeout_ms: i32) -> io::Result<Message> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_millis(timeout_ms.max(0) as u64);
        loop {
            if let Some(m) = self.recv()? {
                return Ok(m);
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now()).as_millis() as i32;
            if left == 0 || !self.wait_readable(left)? {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "no message within the timeout"));
            }
        }
    }
}

fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL)?);
    fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(())
}

impl AsFd for UnixStream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for UnixStream {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}
