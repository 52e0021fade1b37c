//! fds really cross process boundaries: a forked child hands its eventfd and
//! shared memory to the parent over a UNIX socket, and both sides use them.

use std::os::fd::AsFd;

use famez_core::{EventFd, SharedMemory, ShmBacking, UnixStream};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult};

fn child(sock: UnixStream) -> i32 {
    let run = || -> std::io::Result<()> {
        let doorbell = EventFd::new()?;
        let shm = SharedMemory::create(&ShmBacking::Memfd("fork-test".into()), 1 << 20, 0o600, None)?;
        let map = shm.map()?;
        // SAFETY: the mapping is 1 MiB and alive until the end of this closure.
        unsafe { std::ptr::copy_nonoverlapping(b"hello".as_ptr(), map.as_ptr(), 5) };
        sock.send(0, None)?;
        sock.send(-1, Some(shm.as_fd()))?;
        sock.send(7, Some(doorbell.as_fd()))?;
        for _ in 0..500 {
            if doorbell.drain()? > 0 {
                // SAFETY: as above.
                unsafe { std::ptr::copy_nonoverlapping(b"ack".as_ptr(), map.as_ptr().add(8), 3) };
                return Ok(());
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "no doorbell from the parent"))
    };
    if run().is_ok() {
        0
    } else {
        1
    }
}

#[test]
fn eventfd_and_shm_pass_between_two_processes() {
    let (parent_sock, child_sock) = UnixStream::pair().unwrap();
    // SAFETY: the child only uses famez-core calls and exits with _exit-like
    // std::process::exit without returning into the test harness.
    match unsafe { fork() }.unwrap() {
        ForkResult::Child => {
            drop(parent_sock);
            std::process::exit(child(child_sock));
        }
        ForkResult::Parent { child: pid } => {
            drop(child_sock);
            let mut sock = parent_sock;
            let version = sock.recv_timeout(5000).unwrap();
            assert_eq!(version.value, 0);
            assert!(version.fd.is_none());
            let shm_msg = sock.recv_timeout(5000).unwrap();
            assert_eq!(shm_msg.value, -1);
            let shm = SharedMemory::from_fd(shm_msg.fd.expect("shm fd")).unwrap();
            assert_eq!(shm.size(), 1 << 20);
            let bell_msg = sock.recv_timeout(5000).unwrap();
            assert_eq!(bell_msg.value, 7);
            let bell = EventFd::from_fd(bell_msg.fd.expect("eventfd")).unwrap();

            let map = shm.map().unwrap();
            let mut seen = [0u8; 5];
            // SAFETY: the mapping is 1 MiB.
            unsafe { std::ptr::copy_nonoverlapping(map.as_ptr(), seen.as_mut_ptr(), 5) };
            assert_eq!(&seen, b"hello");

            bell.signal(1).unwrap();
            let status = waitpid(pid, None).unwrap();
            assert_eq!(status, WaitStatus::Exited(pid, 0));
            let mut ack = [0u8; 3];
            // SAFETY: as above.
            unsafe { std::ptr::copy_nonoverlapping(map.as_ptr().add(8), ack.as_mut_ptr(), 3) };
            assert_eq!(&ack, b"ack");

            // The child is gone; its end of the socket is closed.
            let eof = sock.recv_timeout(5000).unwrap_err();
            assert_eq!(eof.kind(), std::io::ErrorKind::UnexpectedEof);
        }
    }
}
