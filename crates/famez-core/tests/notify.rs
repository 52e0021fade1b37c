//! sd_notify's datagrams against real sockets: a path, an abstract
//! address, addresses systemd would not give, and a receiver that stops
//! reading (the sender must not block).
use std::ffi::OsStr;
use std::fs;
use std::io::ErrorKind;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::PathBuf;

use famez_core::notify::{notify_to, sd_notify, NOTIFY_SOCKET};

fn dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("famez-notify-{tag}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).unwrap();
    d
}

fn recv(sock: &UnixDatagram) -> String {
    sock.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    let mut buf = [0u8; 4096];
    let n = sock.recv(&mut buf).unwrap();
    String::from_utf8(buf[..n].to_vec()).unwrap()
}

#[test]
fn a_state_arrives_as_one_datagram_at_a_path() {
    let d = dir("path");
    let path = d.join("notify");
    let rx = UnixDatagram::bind(&path).unwrap();
    notify_to(path.as_os_str(), "READY=1\nSTATUS=serving on /run/famez/famez.sock").unwrap();
    notify_to(path.as_os_str(), "STOPPING=1").unwrap();
    assert_eq!(recv(&rx), "READY=1\nSTATUS=serving on /run/famez/famez.sock");
    assert_eq!(recv(&rx), "STOPPING=1");
    fs::remove_dir_all(&d).unwrap();
}

#[test]
fn an_address_starting_with_at_is_abstract() {
    let name = format!("famez-notify-test-{}", std::process::id());
    let rx = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap()).unwrap();
    notify_to(OsStr::new(&format!("@{name}")), "READY=1").unwrap();
    assert_eq!(recv(&rx), "READY=1");
}

#[test]
fn addresses_that_are_not_af_unix_ones_are_invalid_input() {
    for bad in ["", "@", "relative/path", "vsock:2:1234", "vsock-stream:2:1234"] {
        let e = notify_to(OsStr::new(bad), "READY=1").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{bad:?}: {e}");
    }
    let long = format!("/{}", "x".repeat(200));
    assert!(notify_to(OsStr::new(&long), "READY=1").is_err(), "a path longer than sun_path");
}

#[test]
fn a_missing_socket_or_one_nobody_has_bound_is_an_os_error() {
    let d = dir("missing");
    let e = notify_to(d.join("nothing").as_os_str(), "READY=1").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(nix::libc::ENOENT), "{e}");
    fs::write(d.join("file"), b"").unwrap();
    let e = notify_to(d.join("file").as_os_str(), "READY=1").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(nix::libc::ECONNREFUSED), "{e}");
    // A stream socket is the wrong kind of socket.
    let _l = std::os::unix::net::UnixListener::bind(d.join("stream")).unwrap();
    let e = notify_to(d.join("stream").as_os_str(), "READY=1").unwrap_err();
    assert!(e.raw_os_error().is_some(), "{e}");
    fs::remove_dir_all(&d).unwrap();
}

#[test]
fn a_receiver_that_stops_reading_makes_sending_fail_with_would_block_never_wait() {
    let d = dir("full");
    let path = d.join("notify");
    let _rx = UnixDatagram::bind(&path).unwrap();
    // The receiver's queue holds net.unix.max_dgram_qlen datagrams (512
    // by default) or its buffer's worth; far fewer sends than the bound.
    let mut sent = 0;
    let err = loop {
        match notify_to(path.as_os_str(), "WATCHDOG=1") {
            Ok(()) => sent += 1,
            Err(e) => break e,
        }
        assert!(sent < 1_000_000, "the receiver's queue never filled");
    };
    assert_eq!(err.kind(), ErrorKind::WouldBlock, "after {sent} datagrams: {err}");
    fs::remove_dir_all(&d).unwrap();
}

#[test]
fn without_notify_socket_sd_notify_sends_nothing_and_says_so() {
    // Not set under cargo test unless the caller runs it as a notify
    // service; the environment is never changed here (other tests' threads
    // read it).
    if std::env::var_os(NOTIFY_SOCKET).is_none() {
        assert!(!sd_notify("READY=1").unwrap());
    }
}
