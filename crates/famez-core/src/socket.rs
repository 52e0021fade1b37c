//! UNIX stream sockets that speak the ivshmem server protocol's framing:
//! every message is one signed 64-bit little-endian integer sent with its own
//! `sendmsg`, carrying at most one file descriptor (SCM_RIGHTS).
//!
//! The kernel never merges two fd-carrying sends into one read on a stream
//! socket, but a reader can still see a message split across reads; the
//! receiver keeps the partial bytes (and any fd that came with them) until
//! the message is whole. Received fds are owned at once and close-on-exec.

use std::fs;
use std::io::{self, IoSlice};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::libc;
use nix::sys::socket::{
    accept4, bind, connect, getsockopt, listen, sendmsg, socket, socketpair, sockopt, AddressFamily, Backlog,
    ControlMessage, MsgFlags, SockFlag, SockType, UnixAddr,
};
use nix::sys::stat::{umask, Mode};

/// Bytes in one protocol message.
pub const MESSAGE_LEN: usize = 8;

fn stream_socket() -> io::Result<OwnedFd> {
    Ok(socket(AddressFamily::Unix, SockType::Stream, SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC, None)?)
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

/// Most fds one `sendmsg` can carry on Linux (SCM_MAX_FD in
/// include/net/scm.h). A stream socket never hands over the fds of two
/// sends in one read, so a control buffer with room for this many is never
/// truncated by SCM_RIGHTS; only a receiver out of fds still sees
/// MSG_CTRUNC.
const SCM_MAX_FD: usize = 253;

/// The control buffer for one SCM_RIGHTS message of SCM_MAX_FD fds, in
/// u64 words so that it is aligned for `cmsghdr`.
// SAFETY: CMSG_SPACE is plain arithmetic on its argument.
const CONTROL_WORDS: usize =
    (unsafe { libc::CMSG_SPACE((SCM_MAX_FD * std::mem::size_of::<libc::c_int>()) as libc::c_uint) } as usize)
        .div_ceil(8);

/// One `recvmsg` into `buf`: the bytes read, every fd the kernel installed
/// (owned at once, truncated control data or not: nix's `cmsgs()` refuses
/// to walk a truncated buffer, which would leave them open), and whether
/// the control data was truncated.
fn recv_owning_fds(sock: BorrowedFd<'_>, buf: &mut [u8]) -> Result<(usize, Vec<OwnedFd>, bool), Errno> {
    let mut control = [0u64; CONTROL_WORDS];
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    // SAFETY: an all-zero msghdr is a valid value (no name, no iovecs, no
    // control buffer); the fields that matter are set below.
    let mut mhdr: libc::msghdr = unsafe { std::mem::zeroed() };
    mhdr.msg_iov = &mut iov;
    mhdr.msg_iovlen = 1;
    mhdr.msg_control = control.as_mut_ptr().cast();
    mhdr.msg_controllen = std::mem::size_of_val(&control) as _;
    // SAFETY: mhdr points at `iov` (which points at `buf`) and at `control`,
    // with their true lengths; both outlive the call.
    let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut mhdr, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(Errno::last());
    }
    let truncated = mhdr.msg_flags & libc::MSG_CTRUNC != 0;
    let control_end = control.as_ptr() as usize + (mhdr.msg_controllen as usize).min(std::mem::size_of_val(&control));
    let mut fds = Vec::new();
    // SAFETY: the kernel set msg_controllen to the control bytes it wrote,
    // within `control`; CMSG_FIRSTHDR and CMSG_NXTHDR only return headers
    // that lie wholly inside that length (or null).
    let mut c = unsafe { libc::CMSG_FIRSTHDR(&mhdr) };
    while !c.is_null() {
        // SAFETY: `c` is a whole, aligned cmsghdr inside `control` (above).
        let (level, kind, len) = unsafe { ((*c).cmsg_level, (*c).cmsg_type, (*c).cmsg_len as usize) };
        if level == libc::SOL_SOCKET && kind == libc::SCM_RIGHTS {
            // SAFETY: CMSG_DATA and CMSG_LEN are pointer and length
            // arithmetic on a header inside the buffer.
            let (data, header) = unsafe { (libc::CMSG_DATA(c), libc::CMSG_LEN(0) as usize) };
            // A truncated message says how much it holds; never read past
            // what the kernel wrote, whatever the header claims.
            let bytes = len.saturating_sub(header).min(control_end.saturating_sub(data as usize));
            for i in 0..bytes / std::mem::size_of::<libc::c_int>() {
                // SAFETY: fd i lies inside the data just bounded; the data
                // need not be aligned for c_int, hence read_unaligned.
                let raw = unsafe { std::ptr::read_unaligned(data.cast::<libc::c_int>().add(i)) };
                // SAFETY: the kernel just installed this fd in our table
                // for us alone.
                fds.push(unsafe { owned(raw) });
            }
        }
        // SAFETY: as for CMSG_FIRSTHDR: null past the written control data.
        c = unsafe { libc::CMSG_NXTHDR(&mhdr, c) };
    }
    Ok((n as usize, fds, truncated))
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
        let (a, b) =
            socketpair(AddressFamily::Unix, SockType::Stream, None, SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC)?;
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
    /// `ErrorKind::UnexpectedEof`; more than one fd with a message, or fds
    /// the kernel could not install (the control data was truncated), is
    /// `ErrorKind::InvalidData`. Every fd that arrives is owned at once, so
    /// each error closes whatever came with it.
    pub fn recv(&mut self) -> io::Result<Option<Message>> {
        while self.have < MESSAGE_LEN {
            let (n, mut fds, truncated) = match recv_owning_fds(self.fd.as_fd(), &mut self.partial[self.have..]) {
                Ok(r) => r,
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => return Ok(None),
                Err(e) => return Err(e.into()),
            };
            // From here every return drops `fds`, closing them.
            if truncated {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "control message truncated: the kernel could not hand over every fd sent with a message ({} received and closed; out of file descriptors?)",
                        fds.len()
                    ),
                ));
            }
            if fds.len() > 1 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{} fds arrived with one message; the protocol allows one", fds.len()),
                ));
            }
            if n == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed"));
            }
            if let Some(fd) = fds.pop() {
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

    /// The pid of the process at the other end, as the kernel recorded it
    /// when the connection was made (SO_PEERCRED: the connecting process
    /// for an accepted socket, the listener for a connected one, the
    /// creator for a pair). `None` when the kernel cannot tell: a pid 0
    /// (the peer is in a pid namespace this process cannot see) or the
    /// option failing. The process may have exited, and the pid be reused,
    /// since.
    pub fn peer_pid(&self) -> Option<u32> {
        getsockopt(&self.fd, sockopt::PeerCredentials).ok().map(|c| c.pid()).filter(|p| *p > 0).map(|p| p as u32)
    }

    /// Bytes of a message received so far but not yet whole (0 between
    /// messages).
    pub fn partial_len(&self) -> usize {
        self.have
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
