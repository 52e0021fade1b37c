//! The framing rules of the ivshmem protocol on a real socket pair.

use std::io::{ErrorKind, IoSlice};
use std::os::fd::{AsFd, AsRawFd};

use famez_core::{EventFd, UnixListener, UnixStream};
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};

#[test]
fn values_are_little_endian_and_signed() {
    let (a, mut b) = UnixStream::pair().unwrap();
    for v in [0i64, 1, -1, 65535, i64::MIN, i64::MAX] {
        a.send(v, None).unwrap();
        let m = b.recv_timeout(1000).unwrap();
        assert_eq!(m.value, v);
        assert!(m.fd.is_none());
    }
    a.send(0x0102, None).unwrap();
    let mut raw = [0u8; 8];
    nix::unistd::read(b.as_fd(), &mut raw).unwrap();
    assert_eq!(raw, [2, 1, 0, 0, 0, 0, 0, 0]);
}

#[test]
fn a_message_split_across_reads_is_reassembled_with_its_fd() {
    let (a, mut b) = UnixStream::pair().unwrap();
    let e = EventFd::new().unwrap();
    let bytes = 42i64.to_le_bytes();
    let fds = [e.as_raw_fd()];
    sendmsg::<()>(
        a.as_raw_fd(),
        &[IoSlice::new(&bytes[..3])],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .unwrap();
    assert!(b.recv().unwrap().is_none(), "three bytes are not a message");
    nix::unistd::write(a.as_fd(), &bytes[3..]).unwrap();
    let m = b.recv().unwrap().expect("whole message");
    assert_eq!(m.value, 42);
    let got = EventFd::from_fd(m.fd.expect("fd travels with the first part")).unwrap();
    got.signal(2).unwrap();
    assert_eq!(e.drain().unwrap(), 2, "the received fd is the same eventfd");
}

#[test]
fn more_than_one_fd_in_a_message_is_an_error() {
    let (a, mut b) = UnixStream::pair().unwrap();
    let e1 = EventFd::new().unwrap();
    let e2 = EventFd::new().unwrap();
    let bytes = 1i64.to_le_bytes();
    let fds = [e1.as_raw_fd(), e2.as_raw_fd()];
    sendmsg::<()>(a.as_raw_fd(), &[IoSlice::new(&bytes)], &[ControlMessage::ScmRights(&fds)], MsgFlags::empty(), None)
        .unwrap();
    let err = b.recv().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidData);
}

#[test]
fn a_full_socket_buffer_is_would_block_not_a_lost_message() {
    let (a, mut b) = UnixStream::pair().unwrap();
    let mut sent = 0i64;
    loop {
        match a.send(sent, None) {
            Ok(()) => sent += 1,
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::WouldBlock);
                break;
            }
        }
        assert!(sent < 10_000_000, "the socket buffer never filled");
    }
    for want in 0..sent {
        assert_eq!(b.recv().unwrap().expect("queued message").value, want);
    }
    assert!(b.recv().unwrap().is_none());
}

#[test]
fn listener_accepts_and_reports_no_pending_connection_as_none() {
    let dir = std::env::temp_dir().join(format!("famez-framing-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("sock");
    let _ = std::fs::remove_file(&path);
    let l = UnixListener::bind(&path).unwrap();
    assert!(l.accept().unwrap().is_none());
    assert_eq!(
        famez_core::socket::socket_path_state(&path).unwrap(),
        famez_core::socket::SocketPathState::Live(Some(std::process::id()))
    );
    // socket_path_state decided by connecting: its probe (already closed) is pending.
    drop(l.accept().unwrap().expect("the probe connection"));
    let c = UnixStream::connect(&path).unwrap();
    let mut s = l.accept().unwrap().expect("pending connection");
    c.send(5, None).unwrap();
    drop(c);
    assert_eq!(s.recv_timeout(1000).unwrap().value, 5);
    assert_eq!(s.recv_timeout(1000).unwrap_err().kind(), ErrorKind::UnexpectedEof);
    drop(l);
    assert_eq!(famez_core::socket::socket_path_state(&path).unwrap(), famez_core::socket::SocketPathState::Stale);
    std::fs::remove_dir_all(&dir).unwrap();
}
