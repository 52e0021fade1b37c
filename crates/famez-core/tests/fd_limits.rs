//! Every fd that arrives with a message is closed when the message is
//! refused, whatever the reason: more fds than the protocol allows (up to
//! the kernel's 253 per send), fds split over the pieces of one message, and
//! a receiver out of fds (the kernel sets MSG_CTRUNC and hands over only
//! some). The check is a pipe: its read end sees EOF only once every copy
//! of its write end, the received ones included, is closed.

use std::io::{ErrorKind, IoSlice};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};

use famez_core::UnixStream;
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::libc;
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, pipe2, ForkResult};

/// The forked child of one test would hold copies of another test's pipe
/// ends (and so hide their EOF) if they ran at once: one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Sends `bytes` with `copies` copies of `fd` in one sendmsg.
fn send_copies(sock: &UnixStream, bytes: &[u8], fd: RawFd, copies: usize) {
    let fds = vec![fd; copies];
    let n = sendmsg::<()>(
        sock.as_raw_fd(),
        &[IoSlice::new(bytes)],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .expect("sendmsg");
    assert_eq!(n, bytes.len());
}

/// True when every copy of the pipe's write end is closed: a read gives EOF
/// rather than EAGAIN.
fn all_write_ends_closed(read_end: &OwnedFd) -> bool {
    let mut b = [0u8; 1];
    match nix::unistd::read(read_end.as_fd(), &mut b) {
        Ok(0) => true,
        Err(Errno::EAGAIN) => false,
        other => panic!("unexpected read result {other:?}"),
    }
}

fn refused_message_closes_its_fds(copies: usize) {
    let _one = serial();
    let (a, mut b) = UnixStream::pair().unwrap();
    let (r, w) = pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC).unwrap();
    send_copies(&a, &7i64.to_le_bytes(), w.as_raw_fd(), copies);
    drop(w);
    let err = b.recv().expect_err("a message with several fds is a protocol error");
    assert_eq!(err.kind(), ErrorKind::InvalidData, "{err}");
    assert!(all_write_ends_closed(&r), "{copies} fds arrived with one message and not all of them were closed ({err})");
}

#[test]
fn a_message_with_three_fds_is_refused_and_all_three_are_closed() {
    refused_message_closes_its_fds(3);
}

#[test]
fn a_message_with_the_kernels_most_fds_is_refused_and_all_are_closed() {
    refused_message_closes_its_fds(253);
}

#[test]
fn two_fds_within_the_pieces_of_one_message_are_both_closed() {
    let _one = serial();
    let (a, mut b) = UnixStream::pair().unwrap();
    let (r, w) = pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC).unwrap();
    let bytes = 9i64.to_le_bytes();
    send_copies(&a, &bytes[..3], w.as_raw_fd(), 1);
    send_copies(&a, &bytes[3..], w.as_raw_fd(), 1);
    drop(w);
    let mut result = b.recv();
    // The two pieces may come in one read or two.
    if matches!(result, Ok(None)) {
        result = b.recv();
    }
    assert_eq!(result.expect_err("two fds in one message").kind(), ErrorKind::InvalidData);
    drop(b);
    assert!(all_write_ends_closed(&r));
}

/// In a forked child (so the fd limit is its own): leave room for exactly
/// two more fds, receive a message with three, and check that the two the
/// kernel installed were closed by trying to open two fds again.
fn child_out_of_fds(a: &UnixStream, b: &mut UnixStream, w: RawFd) -> i32 {
    // The lowest two free fd numbers, found without allocating.
    let mut free = Vec::with_capacity(2);
    let mut fd = 0;
    while free.len() < 2 {
        // SAFETY: F_GETFD only asks whether `fd` is open.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
            free.push(fd);
        }
        fd += 1;
    }
    send_copies(a, &5i64.to_le_bytes(), w, 3);
    let lim = libc::rlimit { rlim_cur: (free[1] + 1) as libc::rlim_t, rlim_max: (free[1] + 1) as libc::rlim_t };
    // SAFETY: setrlimit reads the struct we pass.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        return 10;
    }
    match b.recv() {
        Err(e) if e.kind() == ErrorKind::InvalidData && e.to_string().contains("truncated") => {}
        _ => return 11,
    }
    // SAFETY: dup only reads the open fd it is given; the child exits next.
    let (d1, d2) = unsafe { (libc::dup(a.as_raw_fd()), libc::dup(a.as_raw_fd())) };
    if d1 < 0 || d2 < 0 {
        return 12; // the two received fds are still open
    }
    0
}

#[test]
fn a_receiver_out_of_fds_closes_the_fds_the_kernel_could_install() {
    let _one = serial();
    let (a, mut b) = UnixStream::pair().unwrap();
    let (_r, w) = pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC).unwrap();
    // SAFETY: the child runs only famez-core calls and libc calls, then
    // exits without returning into the test harness.
    match unsafe { fork() }.unwrap() {
        ForkResult::Child => {
            let code = child_out_of_fds(&a, &mut b, w.as_raw_fd());
            // SAFETY: _exit ends the child at once, skipping the parent's
            // atexit handlers and test harness state.
            unsafe { libc::_exit(code) };
        }
        ForkResult::Parent { child } => match waitpid(child, None).unwrap() {
            WaitStatus::Exited(_, 0) => {}
            WaitStatus::Exited(_, 11) => panic!("recv did not report the truncated control message"),
            WaitStatus::Exited(_, 12) => panic!("the fds the kernel installed before running out stayed open"),
            other => panic!("child: {other:?}"),
        },
    }
}
