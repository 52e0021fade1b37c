//! UnixStream::peer_pid: the kernel's record of who is at the other end.
use std::fs;

use famez_core::{UnixListener, UnixStream};

#[test]
fn both_ends_of_a_connection_made_by_this_process_name_this_process() {
    let d = std::env::temp_dir().join(format!("famez-peercred-{}", std::process::id()));
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).unwrap();
    let l = UnixListener::bind(&d.join("s")).unwrap();
    let client = UnixStream::connect(&d.join("s")).unwrap();
    let accepted = l.accept().unwrap().expect("a pending connection");
    let me = Some(std::process::id());
    assert_eq!(accepted.peer_pid(), me, "the connecting process");
    assert_eq!(client.peer_pid(), me, "the listening process");
    let (a, b) = UnixStream::pair().unwrap();
    assert_eq!((a.peer_pid(), b.peer_pid()), (me, me), "a pair's creator");
    fs::remove_dir_all(&d).unwrap();
}

#[test]
fn the_pid_outlives_the_peer_connection_it_was_taken_from() {
    // SO_PEERCRED is recorded at connect time: it still answers once the
    // peer has closed its end.
    let (a, b) = UnixStream::pair().unwrap();
    drop(b);
    assert_eq!(a.peer_pid(), Some(std::process::id()));
}
