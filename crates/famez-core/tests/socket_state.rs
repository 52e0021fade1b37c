//! socket_path_state decides by connecting, whatever the path looks like.
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use famez_core::socket::{socket_path_state, SocketPathState};
use famez_core::UnixListener;

fn dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("famez-sockstate-{tag}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn a_live_socket_is_live_through_a_symlinked_directory_and_after_a_rename() {
    let d = dir("live");
    let real = d.join("real");
    fs::create_dir(&real).unwrap();
    std::os::unix::fs::symlink(&real, d.join("link")).unwrap();
    let l = UnixListener::bind(&d.join("link").join("a")).unwrap();
    let me = Some(std::process::id());
    assert_eq!(socket_path_state(&real.join("a")).unwrap(), SocketPathState::Live(me));
    fs::rename(real.join("a"), real.join("b")).unwrap();
    assert_eq!(socket_path_state(&real.join("b")).unwrap(), SocketPathState::Live(me));
    drop(l);
    assert_eq!(socket_path_state(&real.join("b")).unwrap(), SocketPathState::Stale);
    fs::remove_dir_all(&d).unwrap();
}

#[test]
fn bind_mode_gives_the_socket_exactly_that_mode_whatever_the_umask() {
    let d = dir("mode");
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::empty());
    let l = UnixListener::bind_mode(&d.join("s"), Some(0o600));
    nix::sys::stat::umask(old);
    let _l = l.unwrap();
    assert_eq!(fs::symlink_metadata(d.join("s")).unwrap().permissions().mode() & 0o7777, 0o600);
    fs::remove_dir_all(&d).unwrap();
}
