//! The shared-memory object that every peer maps: a POSIX shm name, a file
//! in a directory (hugetlbfs included) or an anonymous memfd. Its size is the
//! size QEMU gives BAR2, so it must be a power of two; that rule is the
//! caller's (the server validates sizes before creating anything).

use std::ffi::c_void;
use std::io;
use std::num::NonZeroUsize;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::ptr::NonNull;

use nix::errno::Errno;
use nix::fcntl::{Flock, OFlag};
use nix::sys::mman::{mmap, munmap, shm_open, shm_unlink, MapFlags, ProtFlags};
use nix::sys::stat::{fchmod, fstat, lstat, Mode, SFlag};
use nix::unistd::{fchown, ftruncate, geteuid, Gid};

use crate::lock::{flock_holder, id_of, process_using, reopen_private, try_lock, FileId};

/// Where the shared object lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShmBacking {
    /// A POSIX shared-memory name (`/dev/shm/NAME` on Linux).
    Posix(String),
    /// A file at this path, typically in a hugetlbfs mount.
    File(PathBuf),
    /// An anonymous memfd; the name is only a label in /proc.
    Memfd(String),
}

impl ShmBacking {
    fn describe(&self) -> String {
        match self {
            ShmBacking::Posix(name) => format!("shared memory /dev/shm{}", posix_name(name)),
            ShmBacking::File(path) => format!("shared-memory file {}", path.display()),
            ShmBacking::Memfd(name) => format!("memfd {name}"),
        }
    }

    /// A new object at the name: O_CREAT|O_EXCL (never an existing object,
    /// never through a symlink: O_EXCL does not follow one), mode 0600 until
    /// it is set up.
    fn open_new(&self) -> nix::Result<OwnedFd> {
        let flags = OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_RDWR | OFlag::O_CLOEXEC;
        let perm = Mode::S_IRUSR | Mode::S_IWUSR;
        match self {
            ShmBacking::Posix(name) => shm_open(posix_name(name).as_str(), flags, perm),
            ShmBacking::File(path) => nix::fcntl::open(path, flags | OFlag::O_NOFOLLOW, perm),
            ShmBacking::Memfd(_) => Err(Errno::EINVAL),
        }
    }

    /// What is at the name now, opened read-only without following a
    /// symlink (glibc's shm_open adds O_NOFOLLOW) or blocking on a FIFO.
    fn open_existing(&self) -> nix::Result<OwnedFd> {
        let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
        match self {
            ShmBacking::Posix(name) => shm_open(posix_name(name).as_str(), flags, Mode::empty()),
            ShmBacking::File(path) => nix::fcntl::open(path, flags, Mode::empty()),
            ShmBacking::Memfd(_) => Err(Errno::EINVAL),
        }
    }

    /// The identity of what the name refers to now.
    fn id_now(&self) -> io::Result<Option<FileId>> {
        let st = match self {
            ShmBacking::Posix(name) => lstat(format!("/dev/shm{}", posix_name(name)).as_str()),
            ShmBacking::File(path) => lstat(path),
            ShmBacking::Memfd(_) => return Ok(None),
        };
        Ok(Some(id_of(&st?)))
    }

    fn unlink_name(&self) -> nix::Result<()> {
        match self {
            ShmBacking::Posix(name) => shm_unlink(posix_name(name).as_str()),
            ShmBacking::File(path) => nix::unistd::unlink(path),
            ShmBacking::Memfd(_) => Ok(()),
        }
    }
}

fn refusal(kind: io::ErrorKind, msg: String) -> io::Error {
    io::Error::new(kind, msg)
}

/// An open shared-memory object. Dropping it closes the fd but never
/// unlinks: removing the name is an explicit decision ([`SharedMemory::unlink`]).
#[derive(Debug)]
pub struct SharedMemory {
    fd: OwnedFd,
    size: u64,
    /// Where the object starts in the fd (non-zero for a device region).
    offset: u64,
    backing: Option<ShmBacking>,
    /// (device, inode) of the object, so only our own name is removed.
    id: FileId,
    /// For a named object: `flock(LOCK_EX)` on a private open file
    /// description (not the fd handed to peers, which they share), held
    /// while this object lives. It tells other servers the name is in use.
    _lock: Option<Flock<OwnedFd>>,
    replaced_stale: bool,
}

impl SharedMemory {
    /// Creates a new object and sets its size, permission bits and, when
    /// given, its group, all through the fd. A named object (POSIX or file)
    /// is created exclusively: an object already at the name is refused
    /// while a famez server holds it (naming that server's pid) or any
    /// process has it open or mapped, and otherwise (a leftover of a server
    /// that died) is replaced by unlinking the name and creating a new
    /// object, never resized. A symlink, a file that is not regular or one
    /// owned by another user is refused.
    pub fn create(backing: &ShmBacking, size: u64, mode: u32, group: Option<u32>) -> io::Result<Self> {
        let perm = Mode::from_bits_truncate(mode & 0o7777);
        let size_off = i64::try_from(size)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, format!("size {size} is too large")))?;
        if let ShmBacking::Memfd(name) = backing {
            let fd = nix::sys::memfd::memfd_create(name.as_str(), nix::sys::memfd::MFdFlags::MFD_CLOEXEC)?;
            ftruncate(&fd, size_off)?;
            fchmod(&fd, perm)?;
            if let Some(gid) = group {
                fchown(&fd, None, Some(Gid::from_raw(gid)))?;
            }
            let id = id_of(&fstat(&fd)?);
            return Ok(SharedMemory {
                fd,
                size,
                offset: 0,
                backing: Some(backing.clone()),
                id,
                _lock: None,
                replaced_stale: false,
            });
        }
        let mut replaced_stale = false;
        for _ in 0..2 {
            match backing.open_new() {
                Ok(fd) => {
                    let mut shm = Self::set_up(fd, backing, size, size_off, perm, group)?;
                    shm.replaced_stale = replaced_stale;
                    return Ok(shm);
                }
                Err(Errno::EEXIST) if !replaced_stale => {
                    remove_stale(backing)?;
                    replaced_stale = true;
                }
                Err(Errno::EEXIST) => break,
                Err(e) => return Err(e.into()),
            }
        }
        Err(refusal(
            io::ErrorKind::AlreadyExists,
            format!("{} appeared again while a stale one was being replaced: is another server starting with the same name?", backing.describe()),
        ))
    }

    /// Locks, sizes and sets the permissions of a newly created object; on
    /// failure its name is removed again (nothing is left behind).
    fn set_up(
        fd: OwnedFd,
        backing: &ShmBacking,
        size: u64,
        size_off: i64,
        perm: Mode,
        group: Option<u32>,
    ) -> io::Result<Self> {
        let id = id_of(&fstat(&fd)?);
        let lock = (|| -> io::Result<Flock<OwnedFd>> {
            // The umask may have removed even the owner's bits; the private
            // open below needs read permission.
            fchmod(&fd, Mode::S_IRUSR | Mode::S_IWUSR)?;
            let lock = match try_lock(reopen_private(&fd)?) {
                Ok(l) => l,
                Err((_, Errno::EWOULDBLOCK)) => {
                    return Err(refusal(
                        io::ErrorKind::AddrInUse,
                        format!("{} was taken by another server while this one created it", backing.describe()),
                    ))
                }
                Err((_, e)) => return Err(e.into()),
            };
            ftruncate(&fd, size_off)?;
            // The umask trimmed the creation mode; the caller asked for this one.
            fchmod(&fd, perm)?;
            if let Some(gid) = group {
                fchown(&fd, None, Some(Gid::from_raw(gid)))?;
            }
            Ok(lock)
        })();
        match lock {
            Ok(lock) => Ok(SharedMemory {
                fd,
                size,
                offset: 0,
                backing: Some(backing.clone()),
                id,
                _lock: Some(lock),
                replaced_stale: false,
            }),
            Err(e) => {
                if backing.id_now().ok().flatten() == Some(id) {
                    let _ = backing.unlink_name();
                }
                Err(e)
            }
        }
    }

    /// Wraps an fd received from a server; the size is the object's size now.
    pub fn from_fd(fd: OwnedFd) -> io::Result<Self> {
        let st = fstat(&fd)?;
        Ok(SharedMemory {
            fd,
            size: st.st_size as u64,
            offset: 0,
            backing: None,
            id: id_of(&st),
            _lock: None,
            replaced_stale: false,
        })
    }

    /// `size` bytes at `offset` of `fd`: a device region (a VFIO device's
    /// BAR2), whose fd has no size of its own.
    pub fn from_region(fd: OwnedFd, offset: u64, size: u64) -> Self {
        let id = fstat(&fd).map(|st| id_of(&st)).unwrap_or((0, 0));
        SharedMemory { fd, size, offset, backing: None, id, _lock: None, replaced_stale: false }
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn backing(&self) -> Option<&ShmBacking> {
        self.backing.as_ref()
    }

    /// A leftover object of a server that died was at the name and was
    /// replaced by this one.
    pub fn replaced_stale(&self) -> bool {
        self.replaced_stale
    }

    /// Removes the object's name so no new process can open it; mappings and
    /// fds already handed out stay valid. The name is removed only while it
    /// still refers to this object: false when it is another object now
    /// (left alone) or there is no name (a memfd); ENOENT when it is gone.
    pub fn unlink(&self) -> io::Result<bool> {
        let Some(backing) = &self.backing else { return Ok(false) };
        match backing.id_now()? {
            Some(id) if id == self.id => {
                backing.unlink_name()?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Maps the whole object read-write and shared.
    pub fn map(&self) -> io::Result<Mapping> {
        Mapping::new_at(self.fd.as_fd(), self.size, self.offset)
    }
}

/// Removes a leftover object at the name, or says why it is not one.
fn remove_stale(backing: &ShmBacking) -> io::Result<()> {
    let what = backing.describe();
    let fd = match backing.open_existing() {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return Ok(()),
        Err(Errno::ELOOP) => {
            return Err(refusal(
                io::ErrorKind::AlreadyExists,
                format!("{what} is a symbolic link; famez never follows one for its shared memory: remove it or choose another name"),
            ))
        }
        Err(e @ (Errno::EACCES | Errno::EPERM)) => {
            return Err(refusal(
                io::ErrorKind::PermissionDenied,
                format!("{what} exists and this user cannot open it to tell whether it is in use ({}): remove it or choose another name", crate::error_text(&io::Error::from(e))),
            ))
        }
        Err(e) => return Err(refusal(io::Error::from(e).kind(), format!("{what} exists and cannot be opened: {}", crate::error_text(&io::Error::from(e))))),
    };
    let st = fstat(&fd)?;
    if SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) != SFlag::S_IFREG {
        return Err(refusal(
            io::ErrorKind::AlreadyExists,
            format!("{what} exists and is not a regular file: remove it or choose another name"),
        ));
    }
    if st.st_uid != geteuid().as_raw() {
        return Err(refusal(
            io::ErrorKind::AlreadyExists,
            format!(
                "{what} exists and belongs to uid {}, not to this user; famez will not replace it: choose another name",
                st.st_uid
            ),
        ));
    }
    let id = id_of(&st);
    let lock = match try_lock(fd) {
        Ok(l) => l,
        Err((_, Errno::EWOULDBLOCK)) => {
            let who = flock_holder(id).map(|p| format!(" (pid {p})")).unwrap_or_default();
            return Err(refusal(
                io::ErrorKind::AddrInUse,
                format!("{what} is in use by a running famez server{who}; stop it or choose another name"),
            ));
        }
        Err((_, e)) => return Err(e.into()),
    };
    // No famez server holds it. A process that has it open or mapped (a
    // QEMU still running, an older famez) makes it not provably stale.
    if let Some(pid) = process_using(id, Some(lock.as_raw_fd())) {
        return Err(refusal(
            io::ErrorKind::AddrInUse,
            format!("{what} exists and is in use by process {pid} (open or mapped); famez replaces only a leftover nobody uses: stop that process or choose another name"),
        ));
    }
    if backing.id_now()? != Some(id) {
        return Err(refusal(
            io::ErrorKind::AlreadyExists,
            format!("{what} changed while famez checked it: is another server starting with the same name?"),
        ));
    }
    backing.unlink_name()?;
    Ok(())
}

fn posix_name(name: &str) -> String {
    if name.starts_with('/') {
        name.to_string()
    } else {
        format!("/{name}")
    }
}

impl AsFd for SharedMemory {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for SharedMemory {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// A `MAP_SHARED` read-write mapping, unmapped on drop.
#[derive(Debug)]
pub struct Mapping {
    ptr: NonNull<c_void>,
    len: usize,
}

// SAFETY: the mapping is plain shared memory with no thread affinity; all
// access goes through raw pointers whose synchronisation is the user's.
unsafe impl Send for Mapping {}
// SAFETY: as above; &Mapping only exposes the pointer and length.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps `len` bytes of `fd` from offset 0. POSIX leaves a zero-length
    /// mapping undefined (Linux says EINVAL), so it is refused here.
    pub fn new(fd: BorrowedFd<'_>, len: u64) -> io::Result<Self> {
        Self::new_at(fd, len, 0)
    }

    /// Maps `len` bytes of `fd` from `offset` (a multiple of the page size).
    pub fn new_at(fd: BorrowedFd<'_>, len: u64, offset: u64) -> io::Result<Self> {
        let len = usize::try_from(len)
            .ok()
            .and_then(NonZeroUsize::new)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("cannot map {len} bytes")))?;
        let offset = i64::try_from(offset)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, format!("offset {offset}")))?;
        // SAFETY: a fresh mapping chosen by the kernel (no fixed address) does
        // not alias any Rust object; fd stays open for the call.
        let ptr =
            unsafe { mmap(None, len, ProtFlags::PROT_READ | ProtFlags::PROT_WRITE, MapFlags::MAP_SHARED, fd, offset)? };
        Ok(Mapping { ptr, len: len.get() })
    }

    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr().cast()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: ptr/len came from a successful mmap and are unmapped once;
        // whoever borrowed the memory (a JS ArrayBuffer) was detached first.
        let _ = unsafe { munmap(self.ptr, self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memfd_has_size_and_maps_shared() {
        let shm = SharedMemory::create(&ShmBacking::Memfd("t".into()), 1 << 16, 0o600, None).unwrap();
        assert_eq!(fstat(&shm).unwrap().st_size, 1 << 16);
        let a = shm.map().unwrap();
        let b = shm.map().unwrap();
        // SAFETY: both mappings are 64 KiB and alive.
        unsafe {
            a.as_ptr().add(100).write_volatile(42);
            assert_eq!(b.as_ptr().add(100).read_volatile(), 42);
        }
    }

    #[test]
    fn posix_name_is_created_with_mode_and_unlinked() {
        let name = format!("famez-core-test-{}", std::process::id());
        let shm = SharedMemory::create(&ShmBacking::Posix(name.clone()), 4096, 0o640, None).unwrap();
        let path = format!("/dev/shm/{name}");
        let meta = std::fs::metadata(&path).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(meta.permissions().mode() & 0o777, 0o640);
        assert_eq!(meta.len(), 4096);
        shm.unlink().unwrap();
        assert!(std::fs::metadata(&path).is_err());
    }

    #[test]
    fn file_backing_supports_sizes_past_4_gib() {
        let dir = std::env::temp_dir().join(format!("famez-core-big-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("big");
        let size = 8u64 << 30;
        let shm = SharedMemory::create(&ShmBacking::File(path.clone()), size, 0o600, None).unwrap();
        let map = shm.map().unwrap();
        assert_eq!(map.len() as u64, size);
        // SAFETY: the offset is inside the 8 GiB mapping; the file is sparse.
        unsafe {
            map.as_ptr().add((size - 1) as usize).write_volatile(7);
            assert_eq!(map.as_ptr().add((size - 1) as usize).read_volatile(), 7);
        }
        shm.unlink().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn zero_length_is_refused() {
        let shm = SharedMemory::create(&ShmBacking::Memfd("z".into()), 0, 0o600, None).unwrap();
        assert_eq!(shm.map().unwrap_err().kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn a_held_name_is_refused_with_the_holders_pid_and_a_stale_one_replaced_without_resizing() {
        let name = format!("famez-core-excl-{}", std::process::id());
        let b = ShmBacking::Posix(name.clone());
        let a = SharedMemory::create(&b, 4096, 0o600, None).unwrap();
        let e = SharedMemory::create(&b, 8192, 0o600, None).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
        assert!(e.to_string().contains(&format!("pid {}", std::process::id())), "{e}");
        let path = format!("/dev/shm/{name}");
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 4096, "not resized");
        // A leftover: nobody holds it (the creator is gone).
        drop(a);
        let c = SharedMemory::create(&b, 8192, 0o600, None).unwrap();
        assert!(c.replaced_stale());
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 8192);
        assert!(c.unlink().unwrap());
    }

    #[test]
    fn unlink_leaves_a_name_that_is_no_longer_ours() {
        let name = format!("famez-core-ours-{}", std::process::id());
        let b = ShmBacking::Posix(name.clone());
        let a = SharedMemory::create(&b, 4096, 0o600, None).unwrap();
        shm_unlink(posix_name(&name).as_str()).unwrap();
        let other = SharedMemory::create(&b, 4096, 0o600, None).unwrap();
        assert!(!other.replaced_stale());
        assert!(!a.unlink().unwrap(), "someone else's object now");
        assert!(std::fs::metadata(format!("/dev/shm/{name}")).is_ok());
        assert!(other.unlink().unwrap());
    }

    #[test]
    fn a_planted_symlink_is_never_followed() {
        let dir = std::env::temp_dir().join(format!("famez-core-sym-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let target = dir.join("target");
        std::fs::write(&target, b"precious").unwrap();
        let link = dir.join("shm");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let e = SharedMemory::create(&ShmBacking::File(link.clone()), 1 << 20, 0o666, None).unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        assert_eq!(std::fs::read(&target).unwrap(), b"precious");
        assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
