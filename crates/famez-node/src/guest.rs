//! `GuestDevice`: an ivshmem-doorbell device seen from inside a VM, through
//! VFIO (interrupts as eventfds) or, as the marked fallback, through sysfs
//! `resourceN` files (no interrupts: the caller polls). The device's
//! discovery and binding to vfio-pci are sysfs writes done in TypeScript
//! (ts/guest/); this class only opens and drives it.

use std::os::fd::BorrowedFd;

use famez_core::vfio::{SysfsDevice, VfioDevice, VfioError};
use napi::bindgen_prelude::Env;
use napi_derive::napi;

use crate::error::{coded, io_error, Error, Result};
use crate::shm::SharedMemory;

enum Device {
    Vfio(VfioDevice),
    Sysfs(SysfsDevice),
}

#[napi]
pub struct GuestDevice {
    device: Option<Device>,
    bdf: String,
}

fn vfio_error(e: VfioError) -> Error {
    coded(e.code(), e)
}

#[napi]
impl GuestDevice {
    /// Opens `bdf` (bound to vfio-pci) through VFIO. Errors name the fix:
    /// ENODEV (no such device), ENOTSUP (no VFIO, no IOMMU, not bound),
    /// EBUSY (in use, or its IOMMU group is not all vfio-pci), EACCES (not root).
    #[napi(factory)]
    pub fn open_vfio(bdf: String) -> Result<Self> {
        let d = VfioDevice::open(&bdf).map_err(vfio_error)?;
        Ok(GuestDevice { device: Some(Device::Vfio(d)), bdf })
    }

    /// Opens `bdf` through sysfs resource0/resource2: rings work,
    /// interrupts do not (poll the mailbox).
    #[napi(factory)]
    pub fn open_sysfs(bdf: String) -> Result<Self> {
        let d = SysfsDevice::open(&bdf).map_err(vfio_error)?;
        Ok(GuestDevice { device: Some(Device::Sysfs(d)), bdf })
    }

    fn device(&self) -> Result<&Device> {
        self.device.as_ref().ok_or_else(|| coded("EBADF", format_args!("device {} is closed", self.bdf)))
    }

    /// "vfio" or "sysfs" (polling).
    #[napi(getter)]
    pub fn mode(&self) -> &'static str {
        match self.device {
            Some(Device::Sysfs(_)) => "sysfs",
            _ => "vfio",
        }
    }

    /// The IOMMU under VFIO ("type1v2" or "noiommu"); "none" over sysfs.
    #[napi(getter)]
    pub fn iommu(&self) -> &'static str {
        match &self.device {
            Some(Device::Vfio(d)) => d.iommu().name(),
            _ => "none",
        }
    }

    /// MSI-X vectors the device has (0 over sysfs: no interrupts).
    #[napi(getter)]
    pub fn vectors(&self) -> u32 {
        match &self.device {
            Some(Device::Vfio(d)) => d.vectors(),
            _ => 0,
        }
    }

    /// IVPosition: the peer ID the server gave this VM's QEMU.
    #[napi(getter)]
    pub fn iv_position(&self) -> Result<u32> {
        let r = match self.device()? {
            Device::Vfio(d) => d.iv_position(),
            Device::Sysfs(d) => d.iv_position(),
        };
        r.map_err(|e| io_error("read IVPosition", e))
    }

    /// Rings `peer`'s vector `vector` (one 32-bit doorbell store).
    #[napi]
    pub fn ring(&self, peer: u32, vector: u32) -> Result<()> {
        if peer > 0xffff || vector > 0xffff {
            return Err(coded(
                "EINVAL",
                format_args!("peer {peer} / vector {vector} do not fit the doorbell's 16 bits"),
            ));
        }
        let r = match self.device()? {
            Device::Vfio(d) => d.ring(peer as u16, vector as u16),
            Device::Sysfs(d) => d.ring(peer as u16, vector as u16),
        };
        r.map_err(|e| io_error("ring the doorbell", e))
    }

    /// Routes MSI-X vector i to the eventfd `fds[i]` (EventFd.fd numbers,
    /// kept open by the caller; the kernel takes its own reference) and
    /// turns bus mastering on. An empty list stops the routing.
    #[napi]
    pub fn set_interrupts(&self, fds: Vec<i32>) -> Result<()> {
        let Device::Vfio(d) = self.device()? else {
            return Err(coded("ENOTSUP", "the sysfs fallback has no interrupts: poll"));
        };
        if let Some(bad) = fds.iter().find(|&&fd| fd < 0) {
            return Err(coded("EBADF", format_args!("{bad} is not an fd")));
        }
        // SAFETY: the caller's EventFd objects own these fds and keep them
        // open for this call; VFIO takes its own references.
        let borrowed: Vec<BorrowedFd<'_>> = fds.iter().map(|&fd| unsafe { BorrowedFd::borrow_raw(fd) }).collect();
        d.set_interrupts(&borrowed).map_err(vfio_error)
    }

    /// BAR2, the shared object (a new SharedMemory over a duplicate fd;
    /// close it on its own).
    #[napi]
    pub fn shared_memory(&self, env: Env) -> Result<SharedMemory> {
        let r = match self.device()? {
            Device::Vfio(d) => d.shared_memory(),
            Device::Sysfs(d) => d.shared_memory(),
        };
        let shm = r.map_err(|e| io_error("open BAR2", e))?;
        Ok(SharedMemory::wrap(&env, shm))
    }

    /// BAR0, the registers (IVPosition at 8, the doorbell at 12), for a
    /// caller that rings with its own 32-bit store; null when VFIO does not
    /// let BAR0 be mapped (then ring()).
    #[napi]
    pub fn registers(&self, env: Env) -> Result<Option<SharedMemory>> {
        let r = match self.device()? {
            Device::Vfio(d) => d.registers(),
            Device::Sysfs(d) => Some(d.registers()),
        };
        match r {
            None => Ok(None),
            Some(r) => Ok(Some(SharedMemory::wrap(&env, r.map_err(|e| io_error("map BAR0", e))?))),
        }
    }

    /// Closes the device (its MSI-X routing ends with it). Idempotent.
    #[napi]
    pub fn close(&mut self) {
        self.device = None;
    }
}
