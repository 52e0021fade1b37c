//! Files a server owns for its life: who holds them, and the pid file.
//!
//! A famez server holds `flock(LOCK_EX)` on each file it names (the pid file,
//! the shared-memory object) from a private open file description that is
//! never handed to anyone, so the lock lives exactly as long as the server:
//! a second server finds it held and is refused (with the holder's pid from
//! /proc/locks); a file whose lock nobody holds is a leftover of a server
//! that died. Names are removed at exit only while they still refer to the
//! file that was created (same device and inode).

use std::fs;
use std::io::{self, Read, Seek, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg, OFlag};
use nix::sys::stat::{fstat, lstat, major, minor, Mode, SFlag};

/// A file's identity: (device, inode).
pub type FileId = (u64, u64);

// dev_t and ino_t are not u64 on every target.
#[allow(clippy::unnecessary_cast)]
pub fn id_of(st: &nix::sys::stat::FileStat) -> FileId {
    (st.st_dev as u64, st.st_ino as u64)
}

/// The identity of what `path` names now (not following a final symlink).
pub fn id_at(path: &Path) -> io::Result<FileId> {
    Ok(id_of(&lstat(path)?))
}

/// Takes `flock(LOCK_EX | LOCK_NB)` on `fd`'s open file description.
/// `Err((fd, EWOULDBLOCK))` when someone else holds a lock on the file.
pub fn try_lock(mut fd: OwnedFd) -> Result<Flock<OwnedFd>, (OwnedFd, Errno)> {
    loop {
        match Flock::lock(fd, FlockArg::LockExclusiveNonblock) {
            Err((again, Errno::EINTR)) => fd = again,
            other => return other,
        }
    }
}

/// A private open file description of the object behind `fd` (through
/// /proc/self/fd, so it is the same inode whatever happened to its name),
/// read-only and close-on-exec: a lock on it is not shared with anyone the
/// fd itself is handed to.
pub fn reopen_private(fd: &impl AsRawFd) -> io::Result<OwnedFd> {
    let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
    Ok(nix::fcntl::open(path.as_str(), OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK, Mode::empty())?)
}

/// The pid of a process holding a `flock` on file `id`, from /proc/locks
/// (the pids this process's pid namespace can see).
pub fn flock_holder(id: FileId) -> Option<u32> {
    let table = fs::read_to_string("/proc/locks").ok()?;
    let want = format!("{:02x}:{:02x}:{}", major(id.0 as _), minor(id.0 as _), id.1);
    // "1: FLOCK  ADVISORY  WRITE 1234 00:1b:20 0 EOF"; waiters have "->".
    for line in table.lines() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.len() < 6 || cols[1] != "FLOCK" {
            continue;
        }
        if cols[5] == want {
            if let Ok(pid) = cols[4].parse::<i64>() {
                if pid > 0 {
                    return u32::try_from(pid).ok();
                }
            }
        }
    }
    None
}

/// A process (other than `skip`, an fd of this process) that has file `id`
/// open or mapped, as far as /proc shows this user.
pub fn process_using(id: FileId, skip: Option<RawFd>) -> Option<u32> {
    let me = std::process::id();
    let (maj, min) = (major(id.0 as _), minor(id.0 as _));
    for entry in fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        if let Ok(fds) = fs::read_dir(entry.path().join("fd")) {
            for fd in fds.flatten() {
                if pid == me && skip.is_some_and(|s| fd.file_name().to_str() == Some(s.to_string().as_str())) {
                    continue;
                }
                // stat() follows the magic link to the open file itself.
                if let Ok(m) = fs::metadata(fd.path()) {
                    if (m.dev(), m.ino()) == id {
                        return Some(pid);
                    }
                }
            }
        }
        if let Ok(maps) = fs::read_to_string(entry.path().join("maps")) {
            // "start-end perms offset MM:mm inode path"
            for line in maps.lines() {
                let mut cols = line.split_whitespace().skip(3);
                let (Some(dev), Some(ino)) = (cols.next(), cols.next()) else { continue };
                if ino.parse::<u64>().ok() != Some(id.1) {
                    continue;
                }
                let mut mm = dev.split(':').map(|x| u64::from_str_radix(x, 16).ok());
                if let (Some(Some(a)), Some(Some(b))) = (mm.next(), mm.next()) {
                    if (a, b) == (maj, min) {
                        return Some(pid);
                    }
                }
            }
        }
    }
    None
}

/// A pid file created for the life of a server: never through a symlink,
/// locked while the server runs, removed at exit only if the name is
/// still this file.
#[derive(Debug)]
pub struct PidFile {
    file: Flock<OwnedFd>,
    path: PathBuf,
    id: FileId,
    /// An unlocked leftover of a server that died was taken over.
    pub took_over: bool,
}

fn refused(kind: io::ErrorKind, msg: String) -> io::Error {
    io::Error::new(kind, msg)
}

impl PidFile {
    /// Creates `path` (O_CREAT|O_EXCL|O_NOFOLLOW, mode 0644) holding `pid`,
    /// or takes over a stale one (a regular file holding a pid or nothing,
    /// that no process has locked). A file locked by a live process is
    /// refused naming its pid; a symlink or another kind of file is refused.
    pub fn create(path: &Path, pid: u32) -> io::Result<Self> {
        let shown = path.display();
        for _ in 0..3 {
            let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
            match nix::fcntl::open(path, flags, Mode::from_bits_truncate(0o644)) {
                Ok(fd) => {
                    let id = id_of(&fstat(&fd)?);
                    match try_lock(fd) {
                        Ok(file) => return Self::finish(file, path, id, pid, false),
                        // Another server took it over between our create
                        // and our lock: it is that server's now.
                        Err((_, Errno::EWOULDBLOCK)) => return Err(Self::held(path, id, None)),
                        Err((_, e)) => return Err(e.into()),
                    }
                }
                Err(Errno::EEXIST) => {}
                Err(e) => {
                    return Err(refused(
                        io::Error::from(e).kind(),
                        format!("cannot create pid file {shown}: {}", crate::error_text(&io::Error::from(e))),
                    ))
                }
            }
            // Something is there: only a stale pid file may be taken over.
            let fd = match nix::fcntl::open(path, OFlag::O_RDWR | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC, Mode::empty()) {
                Ok(fd) => fd,
                Err(Errno::ENOENT) => continue, // removed meanwhile: create again
                Err(Errno::ELOOP) => {
                    return Err(refused(
                        io::ErrorKind::AlreadyExists,
                        format!("pid file {shown} is a symbolic link; famez does not follow it (remove it or choose another path with -p)"),
                    ))
                }
                Err(e) => return Err(refused(io::Error::from(e).kind(), format!("pid file {shown} exists and cannot be opened: {}", crate::error_text(&io::Error::from(e))))),
            };
            let st = fstat(&fd)?;
            if SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) != SFlag::S_IFREG {
                return Err(refused(
                    io::ErrorKind::AlreadyExists,
                    format!("{shown} exists and is not a regular file; choose another path with -p"),
                ));
            }
            let id = id_of(&st);
            let file = match try_lock(fd) {
                Ok(f) => f,
                Err((fd, Errno::EWOULDBLOCK)) => return Err(Self::held(path, id, Some(&fd))),
                Err((_, e)) => return Err(e.into()),
            };
            // Locked: no live process holds it. Is the name still this file?
            if id_at(path).ok() != Some(id) {
                continue;
            }
            let mut text = String::new();
            let mut f = fs::File::from(file.as_fd().try_clone_to_owned()?);
            f.read_to_string(&mut text).ok();
            if !(text.trim().is_empty() || text.trim().chars().all(|c| c.is_ascii_digit())) || text.len() > 32 {
                return Err(refused(
                    io::ErrorKind::AlreadyExists,
                    format!("{shown} exists and is not a pid file; famez will not overwrite it (choose another path with -p)"),
                ));
            }
            return Self::finish(file, path, id, pid, true);
        }
        Err(refused(
            io::ErrorKind::AlreadyExists,
            format!("pid file {shown} keeps changing; is another server starting?"),
        ))
    }

    fn held(path: &Path, id: FileId, fd: Option<&OwnedFd>) -> io::Error {
        let mut pid = flock_holder(id);
        if pid.is_none() {
            if let Some(fd) = fd {
                let mut text = String::new();
                if let Ok(c) = fd.try_clone() {
                    fs::File::from(c).read_to_string(&mut text).ok();
                }
                pid = text.trim().parse().ok();
            }
        }
        let who = pid.map(|p| format!("a running process (pid {p})")).unwrap_or_else(|| "a running process".into());
        refused(
            io::ErrorKind::AddrInUse,
            format!("pid file {} is held by {who}; stop it or choose another path with -p", path.display()),
        )
    }

    fn finish(file: Flock<OwnedFd>, path: &Path, id: FileId, pid: u32, took_over: bool) -> io::Result<Self> {
        let mut f = fs::File::from(file.as_fd().try_clone_to_owned()?);
        f.set_len(0)?;
        f.seek(io::SeekFrom::Start(0))?;
        f.write_all(format!("{pid}\n").as_bytes())?;
        Ok(PidFile { file, path: path.to_path_buf(), id, took_over })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the name if it still is this file (true), then releases the
    /// lock. False: the name is gone or is another file now, left alone.
    pub fn remove(self) -> bool {
        let ours = id_at(&self.path).ok() == Some(self.id);
        if ours {
            let _ = fs::remove_file(&self.path);
        }
        drop(self.file);
        ours
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("famez-lock-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn pid_file_is_exclusive_while_held_and_stale_after() {
        let d = dir("pid");
        let p = d.join("pid");
        let a = PidFile::create(&p, 4242).unwrap();
        assert_eq!(fs::read_to_string(&p).unwrap(), "4242\n");
        let e = PidFile::create(&p, 1).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
        assert!(e.to_string().contains(&format!("pid {}", std::process::id())), "{e}");
        assert!(a.remove());
        assert!(!p.exists());
        fs::write(&p, "999999\n").unwrap();
        let b = PidFile::create(&p, 7).unwrap();
        assert!(b.took_over);
        assert_eq!(fs::read_to_string(&p).unwrap(), "7\n");
        b.remove();
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn pid_file_never_follows_a_symlink_nor_overwrites_other_files() {
        let d = dir("sym");
        let target = d.join("target");
        fs::write(&target, "precious").unwrap();
        let p = d.join("pid");
        std::os::unix::fs::symlink(&target, &p).unwrap();
        assert!(PidFile::create(&p, 1).unwrap_err().to_string().contains("symbolic link"));
        fs::remove_file(&p).unwrap();
        assert!(PidFile::create(&target, 1).unwrap_err().to_string().contains("not a pid file"));
        assert_eq!(fs::read_to_string(&target).unwrap(), "precious");
        fs::remove_dir_all(&d).unwrap();
    }
}
