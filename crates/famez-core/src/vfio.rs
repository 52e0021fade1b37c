//! A guest's side of an ivshmem-doorbell device through VFIO: the same three
//! things a host peer gets from the server's socket — one eventfd per
//! vector in, a doorbell out, the shared object mapped — from the PCI
//! device instead.
//!
//! The device must already be bound to `vfio-pci` (binding is sysfs
//! writes, done by the caller). Opening it: the VFIO container
//! (`/dev/vfio/vfio`), the device's group (`/dev/vfio/GROUP`, or
//! `/dev/vfio/noiommu-GROUP` in the kernel's no-IOMMU mode), the IOMMU
//! type (type1v2, or no-IOMMU), the device fd, and its regions: BAR0 (the
//! registers: IVPosition @8, Doorbell @12), BAR2 (the shared object) and
//! the config space. MSI-X vectors are routed to eventfds with
//! `VFIO_DEVICE_SET_IRQS`, and bus mastering is switched on in the command
//! register (VFIO leaves it off, and without it no MSI-X message is sent).
//!
//! Also the fallback without VFIO: the same registers and shared object
//! through sysfs `resourceN` files (no interrupts: the caller polls).
//!
//! All ioctls (their numbers and structs are linux/vfio.h's) and raw
//! register accesses are in this file, each with its SAFETY comment.

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::shm::{Mapping, SharedMemory};

/// ivshmem's BAR0 registers.
pub const REG_IV_POSITION: u64 = 8;
pub const REG_DOORBELL: u64 = 12;
/// The PCI command register and its bus-master bit.
const PCI_COMMAND: u64 = 4;
const PCI_COMMAND_MASTER: u16 = 1 << 2;

// linux/vfio.h
const VFIO_TYPE: u8 = b';';
const VFIO_BASE: u8 = 100;
const VFIO_API_VERSION: i32 = 0;
const VFIO_TYPE1V2_IOMMU: i32 = 3;
const VFIO_NOIOMMU_IOMMU: i32 = 8;
const VFIO_GROUP_FLAGS_VIABLE: u32 = 1;
const VFIO_REGION_INFO_FLAG_MMAP: u32 = 1 << 2;
const VFIO_PCI_BAR0_REGION_INDEX: u32 = 0;
const VFIO_PCI_BAR2_REGION_INDEX: u32 = 2;
const VFIO_PCI_CONFIG_REGION_INDEX: u32 = 7;
const VFIO_PCI_MSIX_IRQ_INDEX: u32 = 2;
const VFIO_IRQ_SET_DATA_NONE: u32 = 1 << 0;
const VFIO_IRQ_SET_DATA_EVENTFD: u32 = 1 << 2;
const VFIO_IRQ_SET_ACTION_TRIGGER: u32 = 1 << 5;

nix::ioctl_none_bad!(vfio_get_api_version, nix::request_code_none!(VFIO_TYPE, VFIO_BASE));
nix::ioctl_write_int_bad!(vfio_check_extension, nix::request_code_none!(VFIO_TYPE, VFIO_BASE + 1));
nix::ioctl_write_int_bad!(vfio_set_iommu, nix::request_code_none!(VFIO_TYPE, VFIO_BASE + 2));
nix::ioctl_readwrite_bad!(vfio_group_get_status, nix::request_code_none!(VFIO_TYPE, VFIO_BASE + 3), GroupStatus);
nix::ioctl_write_ptr_bad!(vfio_group_set_container, nix::request_code_none!(VFIO_TYPE, VFIO_BASE + 4), RawFd);
nix::ioctl_write_ptr_bad!(vfio_group_get_device_fd, nix::request_code_none!(VFIO_TYPE, VFIO_BASE + 6), libc_char);
nix::ioctl_readwrite_bad!(vfio_device_get_region_info, nix::request_code_none!(VFIO_TYPE, VFIO_BASE + 8), RegionInfo);
nix::ioctl_readwrite_bad!(vfio_device_get_irq_info, nix::request_code_none!(VFIO_TYPE, VFIO_BASE + 9), IrqInfo);
nix::ioctl_write_ptr_bad!(vfio_device_set_irqs, nix::request_code_none!(VFIO_TYPE, VFIO_BASE + 10), u32);

#[allow(non_camel_case_types)]
type libc_char = std::ffi::c_char;

#[repr(C)]
#[derive(Debug, Default)]
struct GroupStatus {
    argsz: u32,
    flags: u32,
}

#[repr(C)]
#[derive(Debug, Default)]
struct RegionInfo {
    argsz: u32,
    flags: u32,
    index: u32,
    cap_offset: u32,
    size: u64,
    offset: u64,
}

#[repr(C)]
#[derive(Debug, Default)]
struct IrqInfo {
    argsz: u32,
    flags: u32,
    index: u32,
    count: u32,
}

/// What went wrong opening or driving the device; `code()` is an
/// errno-style name, the message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum VfioError {
    #[error("{0}")]
    NoDevice(String),
    #[error("{0}")]
    NoVfio(String),
    #[error("{0}")]
    NotViable(String),
    #[error("{0}")]
    Permission(String),
    #[error("{0}")]
    BadDevice(String),
    #[error("{what}: {}", crate::error_text(.source))]
    Os { what: String, source: io::Error },
}

impl VfioError {
    pub fn code(&self) -> &'static str {
        match self {
            VfioError::NoDevice(_) => "ENODEV",
            VfioError::NoVfio(_) => "ENOTSUP",
            VfioError::NotViable(_) => "EBUSY",
            VfioError::Permission(_) => "EACCES",
            VfioError::BadDevice(_) => "EINVAL",
            VfioError::Os { source, .. } => match source.raw_os_error() {
                Some(libc_errno) => errno_name(libc_errno),
                None => "EIO",
            },
        }
    }
}

fn errno_name(e: i32) -> &'static str {
    match nix::errno::Errno::from_raw(e) {
        nix::errno::Errno::ENOENT => "ENOENT",
        nix::errno::Errno::EACCES => "EACCES",
        nix::errno::Errno::EPERM => "EPERM",
        nix::errno::Errno::EBUSY => "EBUSY",
        nix::errno::Errno::EINVAL => "EINVAL",
        nix::errno::Errno::ENODEV => "ENODEV",
        nix::errno::Errno::ENOTTY => "ENOTTY",
        _ => "EIO",
    }
}

fn os(what: impl Into<String>) -> impl FnOnce(nix::errno::Errno) -> VfioError {
    let what = what.into();
    move |e| VfioError::Os { what, source: io::Error::from(e) }
}

fn open_rw(path: &Path) -> io::Result<File> {
    // std opens with O_CLOEXEC.
    OpenOptions::new().read(true).write(true).open(path)
}

/// Which IOMMU backs the container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Iommu {
    Type1v2,
    NoIommu,
}

impl Iommu {
    pub fn name(self) -> &'static str {
        match self {
            Iommu::Type1v2 => "type1v2",
            Iommu::NoIommu => "noiommu",
        }
    }
}

/// 32-bit registers: a mapping, or reads and writes at an offset of the
/// device fd where the region cannot be mapped (a BAR smaller than a page).
#[derive(Debug)]
enum Registers {
    Mapped(Mapping),
    Fd { file: File, offset: u64, size: u64 },
}

impl Registers {
    fn check(&self, off: u64) -> io::Result<()> {
        let size = match self {
            Registers::Mapped(m) => m.len() as u64,
            Registers::Fd { size, .. } => *size,
        };
        if !off.is_multiple_of(4) || off + 4 > size {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("register {off} outside BAR0's {size} bytes"),
            ));
        }
        Ok(())
    }

    fn read32(&self, off: u64) -> io::Result<u32> {
        self.check(off)?;
        match self {
            // SAFETY: off + 4 is within the live mapping (checked) and 4-aligned;
            // a volatile read is one 32-bit MMIO load.
            Registers::Mapped(m) => Ok(unsafe { std::ptr::read_volatile(m.as_ptr().add(off as usize).cast::<u32>()) }),
            Registers::Fd { file, offset, .. } => {
                let mut b = [0u8; 4];
                file.read_exact_at(&mut b, offset + off)?;
                Ok(u32::from_le_bytes(b))
            }
        }
    }

    fn write32(&self, off: u64, value: u32) -> io::Result<()> {
        self.check(off)?;
        match self {
            Registers::Mapped(m) => {
                // SAFETY: as in read32; one 32-bit MMIO store.
                unsafe { std::ptr::write_volatile(m.as_ptr().add(off as usize).cast::<u32>(), value) };
                Ok(())
            }
            Registers::Fd { file, offset, .. } => file.write_all_at(&value.to_le_bytes(), offset + off),
        }
    }
}

/// An ivshmem-doorbell device opened through VFIO.
#[derive(Debug)]
pub struct VfioDevice {
    // Dropped in this order: the device (its MSI-X set-up dies with it),
    // then the group, then the container.
    bar0: Registers,
    device: File,
    /// BAR0's (offset, size) in the device fd, when it can be mapped.
    bar0_map: Option<(u64, u64)>,
    bar2: (u64, u64),
    config: u64,
    vectors: u32,
    iommu: Iommu,
    _group: File,
    _container: File,
}

impl VfioDevice {
    /// Opens `bdf` (e.g. `0000:00:03.0`), which must be bound to vfio-pci.
    pub fn open(bdf: &str) -> Result<Self, VfioError> {
        let sys = Path::new("/sys/bus/pci/devices").join(bdf);
        if !sys.exists() {
            return Err(VfioError::NoDevice(format!(
                "there is no PCI device {bdf} (see lspci, or /sys/bus/pci/devices)"
            )));
        }
        let group_link = std::fs::read_link(sys.join("iommu_group")).map_err(|_| {
            VfioError::NoVfio(format!(
                "{bdf} has no IOMMU group: the VM needs an IOMMU (QEMU: -machine q35 -device intel-iommu,intremap=on, and intel_iommu=on on the guest kernel's command line) or a kernel with VFIO's no-IOMMU mode (modprobe vfio enable_unsafe_noiommu_mode=1)"
            ))
        })?;
        let group = group_link
            .file_name()
            .and_then(|g| g.to_str())
            .ok_or_else(|| VfioError::BadDevice(format!("{bdf}: unreadable iommu_group link")))?
            .to_string();
        let container = open_rw(Path::new("/dev/vfio/vfio")).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => {
                VfioError::NoVfio("/dev/vfio/vfio is missing: load the vfio-pci module (modprobe vfio-pci)".into())
            }
            io::ErrorKind::PermissionDenied => VfioError::Permission("cannot open /dev/vfio/vfio: run as root".into()),
            _ => VfioError::Os { what: "open /dev/vfio/vfio".into(), source: e },
        })?;
        // SAFETY: container is an open VFIO container fd; the ioctl takes no argument.
        let api = unsafe { vfio_get_api_version(container.as_raw_fd()) }.map_err(os("VFIO_GET_API_VERSION"))?;
        if api != VFIO_API_VERSION {
            return Err(VfioError::NoVfio(format!("this kernel's VFIO API is version {api}, not {VFIO_API_VERSION}")));
        }
        let (group_file, iommu) = match open_rw(&Path::new("/dev/vfio").join(&group)) {
            Ok(f) => (f, Iommu::Type1v2),
            Err(e) if e.kind() == io::ErrorKind::NotFound => match open_rw(&Path::new("/dev/vfio").join(format!("noiommu-{group}"))) {
                Ok(f) => (f, Iommu::NoIommu),
                Err(_) => {
                    return Err(VfioError::NoVfio(format!(
                        "/dev/vfio/{group} is missing: bind {bdf} to vfio-pci first (echo vfio-pci > /sys/bus/pci/devices/{bdf}/driver_override; echo {bdf} > /sys/bus/pci/drivers_probe)"
                    )))
                }
            },
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                return Err(VfioError::Permission(format!("cannot open /dev/vfio/{group}: run as root")))
            }
            // VFIO lets one process at a time hold a group.
            Err(e) if e.raw_os_error() == Some(nix::libc::EBUSY) => {
                return Err(VfioError::NotViable(format!(
                    "{bdf} is in use: another process (another famez guest?) has its IOMMU group {group} open (/dev/vfio/{group}); stop it first"
                )))
            }
            Err(e) => return Err(VfioError::Os { what: format!("open /dev/vfio/{group}"), source: e }),
        };
        let wanted = if iommu == Iommu::NoIommu { VFIO_NOIOMMU_IOMMU } else { VFIO_TYPE1V2_IOMMU };
        // SAFETY: an int argument to the container's ioctl.
        let has = unsafe { vfio_check_extension(container.as_raw_fd(), wanted) }.map_err(os("VFIO_CHECK_EXTENSION"))?;
        if has != 1 {
            return Err(VfioError::NoVfio(format!(
                "this kernel's VFIO does not offer the {} IOMMU (modprobe vfio_iommu_type1, or a kernel with no-IOMMU mode)",
                iommu.name()
            )));
        }
        let mut status = GroupStatus { argsz: std::mem::size_of::<GroupStatus>() as u32, flags: 0 };
        // SAFETY: status is a live, correctly sized vfio_group_status the kernel fills in.
        unsafe { vfio_group_get_status(group_file.as_raw_fd(), &mut status) }.map_err(os("VFIO_GROUP_GET_STATUS"))?;
        if status.flags & VFIO_GROUP_FLAGS_VIABLE == 0 {
            return Err(VfioError::NotViable(format!(
                "IOMMU group {group} is not viable: every device in /sys/kernel/iommu_groups/{group}/devices must be bound to vfio-pci"
            )));
        }
        let cfd = container.as_raw_fd();
        // SAFETY: a pointer to a live int holding the container fd.
        unsafe { vfio_group_set_container(group_file.as_raw_fd(), &cfd) }.map_err(|e| match e {
            nix::errno::Errno::EBUSY => {
                VfioError::NotViable(format!("IOMMU group {group} is in use by another process"))
            }
            e => os("VFIO_GROUP_SET_CONTAINER")(e),
        })?;
        // SAFETY: an int argument to the container's ioctl.
        unsafe { vfio_set_iommu(cfd, wanted) }.map_err(os("VFIO_SET_IOMMU"))?;
        let name = CString::new(bdf).map_err(|_| VfioError::BadDevice(format!("bad PCI address {bdf:?}")))?;
        // SAFETY: name is a NUL-terminated string that outlives the call; on
        // success the kernel returns a new fd that we own.
        let dfd = unsafe { vfio_group_get_device_fd(group_file.as_raw_fd(), name.as_ptr()) }.map_err(|e| match e {
            nix::errno::Errno::EBUSY => VfioError::NotViable(format!("{bdf} is in use by another process")),
            e => os(format!("VFIO_GROUP_GET_DEVICE_FD {bdf}"))(e),
        })?;
        // SAFETY: dfd is a fresh fd returned by the kernel, owned from here on.
        let device = File::from(unsafe { OwnedFd::from_raw_fd(dfd) });
        let bar0 = region(&device, VFIO_PCI_BAR0_REGION_INDEX)?;
        let bar2 = region(&device, VFIO_PCI_BAR2_REGION_INDEX)?;
        let config = region(&device, VFIO_PCI_CONFIG_REGION_INDEX)?;
        if bar0.size < REG_DOORBELL + 4 || bar2.size == 0 {
            return Err(VfioError::BadDevice(format!(
                "{bdf} is not an ivshmem-doorbell device (BAR0 {} bytes, BAR2 {} bytes)",
                bar0.size, bar2.size
            )));
        }
        let mut irq = IrqInfo {
            argsz: std::mem::size_of::<IrqInfo>() as u32,
            index: VFIO_PCI_MSIX_IRQ_INDEX,
            ..Default::default()
        };
        // SAFETY: irq is a live, correctly sized vfio_irq_info the kernel fills in.
        unsafe { vfio_device_get_irq_info(device.as_raw_fd(), &mut irq) }.map_err(os("VFIO_DEVICE_GET_IRQ_INFO"))?;
        let registers = if bar0.flags & VFIO_REGION_INFO_FLAG_MMAP != 0 {
            Registers::Mapped(
                Mapping::new_at(device.as_fd(), bar0.size, bar0.offset)
                    .map_err(|e| VfioError::Os { what: "mmap BAR0".into(), source: e })?,
            )
        } else {
            let file = device.try_clone().map_err(|e| VfioError::Os { what: "dup the device fd".into(), source: e })?;
            Registers::Fd { file, offset: bar0.offset, size: bar0.size }
        };
        let bar0_map = matches!(registers, Registers::Mapped(_)).then_some((bar0.offset, bar0.size));
        Ok(VfioDevice {
            bar0: registers,
            device,
            bar0_map,
            bar2: (bar2.offset, bar2.size),
            config: config.offset,
            vectors: irq.count,
            iommu,
            _group: group_file,
            _container: container,
        })
    }

    /// The peer ID the server gave this device's QEMU.
    pub fn iv_position(&self) -> io::Result<u32> {
        self.bar0.read32(REG_IV_POSITION)
    }

    /// Rings `peer`'s vector `vector`: one 32-bit store to the doorbell.
    pub fn ring(&self, peer: u16, vector: u16) -> io::Result<()> {
        self.bar0.write32(REG_DOORBELL, (u32::from(peer) << 16) | u32::from(vector))
    }

    /// MSI-X vectors the device has.
    pub fn vectors(&self) -> u32 {
        self.vectors
    }

    pub fn iommu(&self) -> Iommu {
        self.iommu
    }

    /// Routes MSI-X vector i to `eventfds[i]` (the kernel takes its own
    /// reference to each) and turns bus mastering on. An empty list tears
    /// the routing down.
    pub fn set_interrupts(&self, eventfds: &[BorrowedFd<'_>]) -> Result<(), VfioError> {
        if eventfds.len() > self.vectors as usize {
            return Err(VfioError::BadDevice(format!(
                "{} eventfds for {} MSI-X vectors",
                eventfds.len(),
                self.vectors
            )));
        }
        // struct vfio_irq_set { argsz, flags, index, start, count; u8 data[] }
        // with data = one s32 fd per vector: all 4-byte words.
        let mut words: Vec<u32> = vec![0; 5 + eventfds.len()];
        words[0] = (words.len() * 4) as u32;
        words[1] = if eventfds.is_empty() { VFIO_IRQ_SET_DATA_NONE } else { VFIO_IRQ_SET_DATA_EVENTFD }
            | VFIO_IRQ_SET_ACTION_TRIGGER;
        words[2] = VFIO_PCI_MSIX_IRQ_INDEX;
        words[3] = 0;
        words[4] = eventfds.len() as u32;
        for (i, fd) in eventfds.iter().enumerate() {
            words[5 + i] = fd.as_raw_fd() as u32;
        }
        // SAFETY: words is a live vfio_irq_set of argsz bytes; the fds in it
        // are open for the call (borrowed), the kernel takes its own references.
        unsafe { vfio_device_set_irqs(self.device.as_raw_fd(), words.as_ptr()) }
            .map_err(os("VFIO_DEVICE_SET_IRQS (MSI-X)"))?;
        if !eventfds.is_empty() {
            self.bus_master().map_err(|e| VfioError::Os { what: "enable bus mastering".into(), source: e })?;
        }
        Ok(())
    }

    fn bus_master(&self) -> io::Result<()> {
        let mut b = [0u8; 2];
        self.device.read_exact_at(&mut b, self.config + PCI_COMMAND)?;
        let cmd = u16::from_le_bytes(b);
        if cmd & PCI_COMMAND_MASTER == 0 {
            self.device.write_all_at(&(cmd | PCI_COMMAND_MASTER).to_le_bytes(), self.config + PCI_COMMAND)?;
        }
        Ok(())
    }

    /// BAR2, the shared object, as a SharedMemory over a duplicate of the
    /// device fd (mapped at the region's offset).
    pub fn shared_memory(&self) -> io::Result<SharedMemory> {
        let fd: OwnedFd = self.device.try_clone()?.into();
        Ok(SharedMemory::from_region(fd, self.bar2.0, self.bar2.1))
    }

    /// BAR0, the registers, as a SharedMemory (for a caller that rings with
    /// its own 32-bit store to the doorbell at 12); None when VFIO does not
    /// let BAR0 be mapped (ring() then writes through the fd).
    pub fn registers(&self) -> Option<io::Result<SharedMemory>> {
        let (offset, size) = self.bar0_map?;
        Some(self.device.try_clone().map(|f| SharedMemory::from_region(f.into(), offset, size)))
    }
}

struct Region {
    flags: u32,
    size: u64,
    offset: u64,
}

fn region(device: &File, index: u32) -> Result<Region, VfioError> {
    let mut info = RegionInfo { argsz: std::mem::size_of::<RegionInfo>() as u32, index, ..Default::default() };
    // SAFETY: info is a live, correctly sized vfio_region_info the kernel fills in.
    unsafe { vfio_device_get_region_info(device.as_raw_fd(), &mut info) }
        .map_err(os(format!("VFIO_DEVICE_GET_REGION_INFO {index}")))?;
    Ok(Region { flags: info.flags, size: info.size, offset: info.offset })
}

/// The fallback without VFIO: BAR0 and BAR2 through sysfs `resource0` and
/// `resource2` (root only). Rings work; interrupts do not: poll.
#[derive(Debug)]
pub struct SysfsDevice {
    bar0: Registers,
    bar0_file: File,
    bar2: File,
}

impl SysfsDevice {
    pub fn open(bdf: &str) -> Result<Self, VfioError> {
        let dir = Path::new("/sys/bus/pci/devices").join(bdf);
        let open = |name: &str| {
            open_rw(&dir.join(name)).map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => VfioError::NoVfio(format!("{bdf} has no {name}: is it a PCI device?")),
                io::ErrorKind::PermissionDenied => {
                    VfioError::Permission(format!("cannot open {}: run as root", dir.join(name).display()))
                }
                _ => VfioError::Os { what: format!("open {}", dir.join(name).display()), source: e },
            })
        };
        let r0 = open("resource0")?;
        let bar2 = open("resource2")?;
        let size0 = r0.metadata().map_err(|e| VfioError::Os { what: "stat resource0".into(), source: e })?.len();
        if size0 < REG_DOORBELL + 4 {
            return Err(VfioError::BadDevice(format!("{bdf} is not an ivshmem device (BAR0 {size0} bytes)")));
        }
        let map = Mapping::new_at(r0.as_fd(), size0, 0)
            .map_err(|e| VfioError::Os { what: "mmap resource0".into(), source: e })?;
        Ok(SysfsDevice { bar0: Registers::Mapped(map), bar0_file: r0, bar2 })
    }

    pub fn iv_position(&self) -> io::Result<u32> {
        self.bar0.read32(REG_IV_POSITION)
    }

    pub fn ring(&self, peer: u16, vector: u16) -> io::Result<()> {
        self.bar0.write32(REG_DOORBELL, (u32::from(peer) << 16) | u32::from(vector))
    }

    pub fn shared_memory(&self) -> io::Result<SharedMemory> {
        let fd: OwnedFd = self.bar2.try_clone()?.into();
        SharedMemory::from_fd(fd)
    }

    /// BAR0 (resource0) as a SharedMemory, as VfioDevice::registers.
    pub fn registers(&self) -> io::Result<SharedMemory> {
        SharedMemory::from_fd(self.bar0_file.try_clone()?.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_structs_have_the_kernel_sizes() {
        assert_eq!(std::mem::size_of::<GroupStatus>(), 8);
        assert_eq!(std::mem::size_of::<RegionInfo>(), 32);
        assert_eq!(std::mem::size_of::<IrqInfo>(), 16);
    }

    #[test]
    fn ioctl_numbers_are_linux_vfio_h() {
        // _IO(';', 100 + n): no size, no direction.
        assert_eq!(nix::request_code_none!(VFIO_TYPE, VFIO_BASE), 0x3b64);
        assert_eq!(nix::request_code_none!(VFIO_TYPE, VFIO_BASE + 10), 0x3b6e);
    }

    #[test]
    fn a_device_that_is_not_there_names_the_fix() {
        let e = VfioDevice::open("0000:ff:1f.7").unwrap_err();
        assert_eq!(e.code(), "ENODEV", "{e}");
        assert!(e.to_string().contains("no PCI device 0000:ff:1f.7"), "{e}");
        let e = SysfsDevice::open("0000:ff:1f.7").unwrap_err();
        assert_eq!(e.code(), "ENOTSUP", "{e}");
    }

    #[test]
    fn registers_over_a_file_are_bounds_checked() {
        let f = tempfile_with(16);
        let r = Registers::Fd { file: f, offset: 0, size: 16 };
        r.write32(REG_DOORBELL, 0x0002_0003).unwrap();
        assert_eq!(r.read32(REG_DOORBELL).unwrap(), 0x0002_0003);
        assert!(r.read32(14).is_err());
        assert!(r.write32(16, 0).is_err());
    }

    fn tempfile_with(len: u64) -> File {
        let path = std::env::temp_dir().join(format!("famez-vfio-test-{}", std::process::id()));
        let f = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        f.set_len(len).unwrap();
        f
    }
}
