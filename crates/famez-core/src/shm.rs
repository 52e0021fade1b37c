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

use nix::fcntl::OFlag;
use nix::sys::mman::{mmap, munmap, shm_open, shm_unlink, MapFlags, ProtFlags};
use nix::sys::stat::{fchmod, fstat, Mode};
use nix::unistd::{fchown, ftruncate, Gid};

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

/// An open shared-memory object. Dropping it closes the fd but never
/// unlinks: removing the name is an explicit decision ([`SharedMemory::unlink`]).
#[derive(Debug)]
pub struct SharedMemory {
    fd: OwnedFd,
    size: u64,
    backing: Option<ShmBacking>,
}

impl SharedMemory {
    /// Creates (or opens, when it exists) the object and sets its size,
    /// permission bits and, when given, its group.
    pub fn create(backing: &ShmBacking, size: u64, mode: u32, group: Option<u32>) -> io::Result<Self> {
        let perm = Mode::from_bits_truncate(mode & 0o7777);
        let flags = OFlag::O_CREAT | OFlag::O_RDWR | OFlag::O_CLOEXEC;
        let fd: OwnedFd = match backing {
            ShmBacking::Posix(name) => shm_open(posix_name(name).as_str(), flags, perm)?,
            ShmBacking::File(path) => nix::fcntl::open(path, flags, perm)?,
            ShmBacking::Memfd(name) => {
                nix::sys::memfd::memfd_create(name.as_str(), nix::sys::memfd::MFdFlags::MFD_CLOEXEC)?
            }
        };
        let size_off = i64::try_from(size)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, format!("size {size} is too large")))?;
        ftruncate(&fd, size_off)?;
        // The umask trimmed the creation mode; the caller asked for this one.
        fchmod(&fd, perm)?;
        if let Some(gid) = group {
            fchown(&fd, None, Some(Gid::from_raw(gid)))?;
        }
        Ok(SharedMemory { fd, size, backing: Some(backing.clone()) })
    }

    /// Wraps an fd received from a server; the size is the object's size now.
    pub fn from_fd(fd: OwnedFd) -> io::Result<Self> {
        let st = fstat(&fd)?;
        Ok(SharedMemory { fd, size: st.st_size as u64, backing: None })
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn backing(&self) -> Option<&ShmBacking> {
        self.backing.as_ref()
    }

    /// Removes the object's name so no new process can open it; mappings and
    /// fds already handed out stay valid. A memfd has no name to remove.
    pub fn unlink(&self) -> io::Result<()> {
        match &self.backing {
            Some(ShmBacking::Posix(name)) => Ok(shm_unlink(posix_name(name).as_str())?),
            Some(ShmBacking::File(path)) => Ok(nix::unistd::unlink(path)?),
            _ => Ok(()),
        }
    }

    /// Maps the whole object read-write and shared.
    pub fn map(&self) -> io::Result<Mapping> {
        Mapping::new(self.fd.as_fd(), self.size)
    }
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
        let len = usize::try_from(len)
            .ok()
            .and_then(NonZeroUsize::new)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("cannot map {len} bytes")))?;
        // SAFETY: a fresh mapping chosen by the kernel (no fixed address) does
        // not alias any Rust object; fd stays open for the call.
        let ptr = unsafe {
            mmap(None, len, ProtFlags::PROT_READ | ProtFlags::PROT_WRITE, MapFlags::MAP_SHARED, fd, 0)?
        };
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
}
