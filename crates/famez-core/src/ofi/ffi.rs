//! Every unsafe line of the libfabric binding: loading the library with
//! dlopen, the static inline `fi_*` calls made through the ops tables of the
//! fid structs (sys.rs has their layouts), and the buffers that libfabric
//! reads and writes while an operation is in flight. Each type here owns
//! one libfabric object and closes it on drop, children before parents
//! (they hold an `Rc` of their parent); the safe API is in `mod.rs`.
//!
//! Memory contract of the data path: a buffer handed to libfabric (a
//! receive slot, a send slot, an RMA operation's bytes, a window) is owned
//! by the `Conn` or `Window` that posted or registered it, and is freed only
//! after the endpoint (or the memory region) is closed, after which the
//! provider never touches it. The provider runs only inside our calls
//! (FI_PROGRESS_MANUAL is asked for; see `getinfo`), on the caller's thread,
//! so no memory is shared with another thread.

#![allow(unsafe_code)]

use std::collections::{HashMap, VecDeque};
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::ptr::{self, NonNull};
use std::rc::Rc;
use std::sync::OnceLock;

use super::sys;
use super::{Completion, LinkEvent, OfiError, Options};

/// `FI_VERSION(1, 10)`: the API version asked of `fi_getinfo`. Every
/// libfabric since 1.10 (Ubuntu 22.04's 1.11, Debian 12's 1.17, 2.x) serves
/// it; the struct layouts in sys.rs are 1.17's, whose prefix is what 1.10's
/// API defines (libfabric only appends fields).
pub const API_VERSION: u32 = (1 << 16) | 10;
const FI_ADDR_UNSPEC: u64 = u64::MAX;
const PAGE: usize = 4096;

/// Memory region keys, unique in the process (so in every domain) for
/// providers that take the key we ask for (no FI_MR_PROV_KEY).
static NEXT_KEY: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0x100);

pub fn next_key() -> u64 {
    NEXT_KEY.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

type GetInfo =
    unsafe extern "C" fn(u32, *const c_char, *const c_char, u64, *const sys::fi_info, *mut *mut sys::fi_info) -> c_int;
type FreeInfo = unsafe extern "C" fn(*mut sys::fi_info);
type DupInfo = unsafe extern "C" fn(*const sys::fi_info) -> *mut sys::fi_info;
type Fabric = unsafe extern "C" fn(*mut sys::fi_fabric_attr, *mut *mut sys::fid_fabric, *mut c_void) -> c_int;
type StrError = unsafe extern "C" fn(c_int) -> *const c_char;
type Version = unsafe extern "C" fn() -> u32;

/// The loaded libfabric: its six real exports. Never unloaded (providers
/// keep threads and atexit handlers of their own), so `&'static`.
pub struct Lib {
    pub path: String,
    getinfo: GetInfo,
    freeinfo: FreeInfo,
    dupinfo: DupInfo,
    fabric: Fabric,
    strerror: StrError,
    version: Version,
}

/// dlerror's text, or `fallback`.
fn dlerror(fallback: &str) -> String {
    // SAFETY: dlerror returns null or a NUL-terminated string valid until
    // the next dl* call on this thread; it is copied at once.
    let e = unsafe { libc::dlerror() };
    if e.is_null() {
        fallback.to_owned()
    } else {
        // SAFETY: as above, non-null.
        unsafe { CStr::from_ptr(e) }.to_string_lossy().into_owned()
    }
}

/// The symbol `name` of `handle`, at ELF symbol version `version` where the
/// C library can ask for one (glibc's dlvsym: the version whose struct
/// layout sys.rs describes), else its default version.
fn symbol(handle: *mut c_void, name: &str, version: &str) -> Option<*mut c_void> {
    let cname = CString::new(name).ok()?;
    #[cfg(target_env = "gnu")]
    {
        let cver = CString::new(version).ok()?;
        // SAFETY: handle is a live dlopen handle; both strings are NUL-terminated.
        let p = unsafe { libc::dlvsym(handle, cname.as_ptr(), cver.as_ptr()) };
        if !p.is_null() {
            return Some(p);
        }
    }
    #[cfg(not(target_env = "gnu"))]
    let _ = version;
    // SAFETY: as above.
    let p = unsafe { libc::dlsym(handle, cname.as_ptr()) };
    (!p.is_null()).then_some(p)
}

/// Loads libfabric from `path` (a file name the dynamic loader searches
/// for, or a path), once per path per process.
pub fn load(path: &str) -> Result<&'static Lib, OfiError> {
    static LOADED: OnceLock<std::sync::Mutex<HashMap<String, &'static Lib>>> = OnceLock::new();
    let map = LOADED.get_or_init(Default::default);
    let mut map = map.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(lib) = map.get(path) {
        return Ok(lib);
    }
    let missing = |reason: String| OfiError::Missing { library: path.to_owned(), reason };
    let cpath = CString::new(path).map_err(|_| missing("the name has a NUL byte".into()))?;
    // SAFETY: dlopen with a NUL-terminated name; libfabric's constructors
    // only initialise its own state.
    let handle = unsafe { libc::dlopen(cpath.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    if handle.is_null() {
        return Err(missing(dlerror("dlopen failed")));
    }
    let get = |name: &str, version: &str| {
        symbol(handle, name, version).ok_or_else(|| OfiError::BadLibrary {
            library: path.to_owned(),
            reason: format!("it has no {name}: not libfabric 1.x"),
        })
    };
    // SAFETY: each symbol is the libfabric function of that name, whose C
    // signature the type spells (fabric.h); a fn pointer has a pointer's size.
    let lib = unsafe {
        Lib {
            path: path.to_owned(),
            getinfo: std::mem::transmute::<*mut c_void, GetInfo>(get("fi_getinfo", "FABRIC_1.3")?),
            freeinfo: std::mem::transmute::<*mut c_void, FreeInfo>(get("fi_freeinfo", "FABRIC_1.3")?),
            dupinfo: std::mem::transmute::<*mut c_void, DupInfo>(get("fi_dupinfo", "FABRIC_1.3")?),
            fabric: std::mem::transmute::<*mut c_void, Fabric>(get("fi_fabric", "FABRIC_1.1")?),
            strerror: std::mem::transmute::<*mut c_void, StrError>(get("fi_strerror", "FABRIC_1.0")?),
            version: std::mem::transmute::<*mut c_void, Version>(get("fi_version", "FABRIC_1.0")?),
        }
    };
    // SAFETY: fi_version takes no arguments and returns a number.
    let v = unsafe { (lib.version)() };
    if v < API_VERSION {
        return Err(OfiError::BadLibrary {
            library: path.to_owned(),
            reason: format!("it is libfabric {}.{}; famez needs 1.10 or later", v >> 16, v & 0xffff),
        });
    }
    let lib: &'static Lib = Box::leak(Box::new(lib));
    map.insert(path.to_owned(), lib);
    Ok(lib)
}

impl Lib {
    /// libfabric's version as (major, minor).
    pub fn version(&self) -> (u32, u32) {
        // SAFETY: as in load.
        let v = unsafe { (self.version)() };
        (v >> 16, v & 0xffff)
    }

    /// fi_strerror's text for a positive libfabric error number.
    pub fn strerror(&self, code: i32) -> String {
        // SAFETY: fi_strerror returns a static NUL-terminated string for any number.
        let p = unsafe { (self.strerror)(code) };
        if p.is_null() {
            return format!("libfabric error {code}");
        }
        // SAFETY: non-null, static, NUL-terminated.
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    }

    fn error(&self, op: &str, ret: isize) -> OfiError {
        let code = ret.unsigned_abs() as i32;
        OfiError::Call { op: op.to_owned(), code, text: self.strerror(code) }
    }

    /// Ok for a non-negative return, the libfabric error otherwise.
    fn check(&self, op: &str, ret: c_int) -> Result<(), OfiError> {
        if ret < 0 {
            Err(self.error(op, ret as isize))
        } else {
            Ok(())
        }
    }
}

/// Calls the static-inline-wrapped op `$field` of the ops table `$table`
/// (a pointer to an `fi_ops_*` struct) as `fi_*` would; a provider that
/// leaves the op null gets -FI_ENOSYS, as FI_CHECK_OP would.
macro_rules! op {
    ($table:expr, $field:ident, $($arg:expr),* $(,)?) => {{
        let table = $table;
        match if table.is_null() { None } else { (*table).$field } {
            Some(f) => f($($arg),*) as isize,
            None => -(libc::ENOSYS as isize),
        }
    }};
}

/// A libfabric object pointer that `fi_close`s itself. `T` is an `fid_*`
/// struct, all of which start with `struct fid`.
struct Handle<T> {
    ptr: NonNull<T>,
    what: &'static str,
}

impl<T> Handle<T> {
    fn fid(&self) -> *mut sys::fid {
        self.ptr.as_ptr().cast()
    }

    fn raw(&self) -> *mut T {
        self.ptr.as_ptr()
    }

    /// fi_control(fid, FI_GETWAIT): the wait fd of a CQ or EQ opened with FI_WAIT_FD.
    fn wait_fd(&self, lib: &Lib) -> Result<i32, OfiError> {
        let mut fd: c_int = -1;
        // SAFETY: the fid is live; FI_GETWAIT with FI_WAIT_FD writes an int.
        let ret = unsafe {
            op!((*self.fid()).ops, control, self.fid(), sys::FI_GETWAIT as c_int, (&mut fd as *mut c_int).cast())
        };
        lib.check(&format!("fi_control({}, FI_GETWAIT)", self.what), ret as c_int)?;
        Ok(fd)
    }
}

impl<T> Drop for Handle<T> {
    fn drop(&mut self) {
        // SAFETY: the fid is live and closed exactly once, here; its children
        // were dropped before (they hold an Rc of their parent).
        let ret = unsafe { op!((*self.fid()).ops, close, self.fid()) };
        if ret < 0 {
            eprintln!("famez: fi_close({}) failed: libfabric error {}", self.what, -ret);
        }
    }
}

fn handle<T>(ptr: *mut T, what: &'static str) -> Result<Handle<T>, OfiError> {
    NonNull::new(ptr).map(|ptr| Handle { ptr, what }).ok_or_else(|| OfiError::Call {
        op: what.to_owned(),
        code: sys::FI_EOTHER as i32,
        text: "libfabric returned no object".into(),
    })
}

/// An `fi_info` list from fi_getinfo (or a connection request), freed with fi_freeinfo.
pub struct Info {
    lib: &'static Lib,
    ptr: NonNull<sys::fi_info>,
}

impl Drop for Info {
    fn drop(&mut self) {
        // SAFETY: ptr came from fi_getinfo/fi_dupinfo/an FI_CONNREQ event and is freed once.
        unsafe { (self.lib.freeinfo)(self.ptr.as_ptr()) }
    }
}

/// What the link needs of a provider, as `fi_getinfo` hints: `rma` asks for
/// FI_RMA as well, `manual` for manual progress (no provider thread).
fn hints(lib: &'static Lib, provider: &str, rma: bool, manual: bool) -> Result<Info, OfiError> {
    // SAFETY: fi_dupinfo(NULL) (fi_allocinfo) returns a zeroed fi_info with
    // all its attr structs allocated, or null.
    let raw = unsafe { (lib.dupinfo)(ptr::null()) };
    let ptr = NonNull::new(raw).ok_or_else(|| lib.error("fi_allocinfo", -(libc::ENOMEM as isize)))?;
    let info = Info { lib, ptr };
    let prov = CString::new(provider).map_err(|_| OfiError::Usage("the provider name has a NUL byte".into()))?;
    // SAFETY: the attr pointers of an fi_allocinfo result are valid; the
    // provider name is strdup'ed because fi_freeinfo frees it.
    unsafe {
        let i = info.ptr.as_ptr();
        let mut caps = (sys::FI_MSG | sys::FI_SEND | sys::FI_RECV) as u64;
        if rma {
            caps |= (sys::FI_RMA | sys::FI_READ | sys::FI_WRITE | sys::FI_REMOTE_READ | sys::FI_REMOTE_WRITE) as u64;
        }
        (*i).caps = caps;
        (*i).mode = 0;
        (*(*i).ep_attr).type_ = sys::FI_EP_MSG;
        let d = (*i).domain_attr;
        (*d).mr_mode = (sys::FI_MR_LOCAL | sys::FI_MR_VIRT_ADDR | sys::FI_MR_ALLOCATED | sys::FI_MR_PROV_KEY) as c_int;
        (*d).threading = sys::FI_THREAD_DOMAIN;
        if manual {
            (*d).control_progress = sys::FI_PROGRESS_MANUAL;
            (*d).data_progress = sys::FI_PROGRESS_MANUAL;
        }
        (*(*i).fabric_attr).prov_name = libc::strdup(prov.as_ptr());
    }
    Ok(info)
}

/// What the provider granted, read from an `fi_info`.
#[derive(Debug, Clone)]
pub struct Granted {
    pub provider: String,
    pub rma: bool,
    pub mr_local: bool,
    pub virt_addr: bool,
    pub prov_key: bool,
    pub rx_size: usize,
    pub tx_size: usize,
    pub max_msg_size: usize,
}

impl Info {
    /// fi_getinfo for a link endpoint: `source` true for a listener
    /// (FI_SOURCE: node/service name the local address). Tries with RMA and
    /// manual progress first, then without each.
    pub fn get(lib: &'static Lib, provider: &str, node: &str, service: &str, source: bool) -> Result<Info, OfiError> {
        let cnode = CString::new(node).map_err(|_| OfiError::Usage("the address has a NUL byte".into()))?;
        let cservice = CString::new(service).map_err(|_| OfiError::Usage("the port has a NUL byte".into()))?;
        let flags = if source { sys::FI_SOURCE } else { 0 };
        let mut first = None;
        for (rma, manual) in [(true, true), (true, false), (false, true), (false, false)] {
            let h = hints(lib, provider, rma, manual)?;
            let mut out = ptr::null_mut();
            // SAFETY: valid strings and hints; out receives a list we own.
            let ret = unsafe {
                (lib.getinfo)(API_VERSION, cnode.as_ptr(), cservice.as_ptr(), flags, h.ptr.as_ptr(), &mut out)
            };
            if ret == 0 {
                if let Some(ptr) = NonNull::new(out) {
                    return Ok(Info { lib, ptr });
                }
            }
            first.get_or_insert(ret);
        }
        let ret = first.unwrap_or(-(sys::FI_EOTHER as c_int));
        if -ret == libc::ENODATA {
            return Err(OfiError::NoProvider { provider: provider.to_owned(), node: node.to_owned() });
        }
        Err(lib.error(&format!("fi_getinfo({provider}, {node}:{service})"), ret as isize))
    }

    pub fn granted(&self) -> Granted {
        // SAFETY: a provider's fi_info has all its attr pointers set.
        unsafe {
            let i = self.ptr.as_ptr();
            let d = (*i).domain_attr;
            let mr = (*d).mr_mode as u32;
            let name = (*(*i).fabric_attr).prov_name;
            Granted {
                provider: if name.is_null() {
                    String::new()
                } else {
                    CStr::from_ptr(name).to_string_lossy().into_owned()
                },
                rma: (*i).caps & sys::FI_RMA as u64 != 0,
                mr_local: mr & sys::FI_MR_LOCAL != 0,
                virt_addr: mr & sys::FI_MR_VIRT_ADDR != 0,
                prov_key: mr & sys::FI_MR_PROV_KEY != 0,
                rx_size: (*(*i).rx_attr).size,
                tx_size: (*(*i).tx_attr).size,
                max_msg_size: (*(*i).ep_attr).max_msg_size,
            }
        }
    }
}

pub struct FabricObj {
    lib: &'static Lib,
    h: Handle<sys::fid_fabric>,
}

impl FabricObj {
    pub fn open(info: &Info) -> Result<Rc<FabricObj>, OfiError> {
        let lib = info.lib;
        let mut f = ptr::null_mut();
        // SAFETY: the info's fabric_attr is valid; f receives the fabric.
        let ret = unsafe { (lib.fabric)((*info.ptr.as_ptr()).fabric_attr, &mut f, ptr::null_mut()) };
        lib.check("fi_fabric", ret)?;
        Ok(Rc::new(FabricObj { lib, h: handle(f, "fabric")? }))
    }

    /// fi_trywait on one CQ or EQ: true when it is safe to sleep on its
    /// wait fd (nothing is left to read).
    fn trywait(&self, fid: *mut sys::fid) -> bool {
        let mut fids = [fid];
        // SAFETY: fabric and fid are live; the array holds one fid.
        let ret = unsafe { op!((*self.h.raw()).ops, trywait, self.h.raw(), fids.as_mut_ptr(), 1) };
        ret == 0
    }
}

pub struct Domain {
    h: Handle<sys::fid_domain>,
    fabric: Rc<FabricObj>,
}

impl Domain {
    pub fn open(fabric: &Rc<FabricObj>, info: &Info) -> Result<Rc<Domain>, OfiError> {
        let mut d = ptr::null_mut();
        // SAFETY: fabric and info are live; d receives the domain.
        let ret =
            unsafe { op!((*fabric.h.raw()).ops, domain, fabric.h.raw(), info.ptr.as_ptr(), &mut d, ptr::null_mut()) };
        fabric.lib.check("fi_domain", ret as c_int)?;
        Ok(Rc::new(Domain { h: handle(d, "domain")?, fabric: fabric.clone() }))
    }

    fn lib(&self) -> &'static Lib {
        self.fabric.lib
    }

    /// fi_mr_reg of `len` bytes at `buf`.
    ///
    /// # Safety
    /// The memory must stay valid until the returned handle is dropped.
    unsafe fn register(
        &self,
        buf: *mut u8,
        len: usize,
        access: u64,
        key: u64,
    ) -> Result<Handle<sys::fid_mr>, OfiError> {
        let mut mr = ptr::null_mut();
        // SAFETY: domain is live; the caller keeps the memory valid.
        let ret = unsafe {
            op!(
                (*self.h.raw()).mr,
                reg,
                self.h.fid(),
                buf as *const c_void,
                len,
                access,
                0,
                key,
                0,
                &mut mr,
                ptr::null_mut()
            )
        };
        self.lib().check("fi_mr_reg", ret as c_int)?;
        handle(mr, "memory region")
    }
}

/// An event queue with a wait fd.
pub struct Eq {
    h: Handle<sys::fid_eq>,
    fabric: Rc<FabricObj>,
    pub fd: i32,
}

/// One event read from an EQ.
pub enum EqEvent {
    ConnReq(Info),
    Connected,
    Shutdown,
    Error(OfiError),
}

impl Eq {
    pub fn open(fabric: &Rc<FabricObj>) -> Result<Eq, OfiError> {
        let mut attr = sys::fi_eq_attr { size: 64, wait_obj: sys::FI_WAIT_FD, ..Default::default() };
        let mut eq = ptr::null_mut();
        // SAFETY: fabric is live; attr is a valid attr struct.
        let ret = unsafe { op!((*fabric.h.raw()).ops, eq_open, fabric.h.raw(), &mut attr, &mut eq, ptr::null_mut()) };
        fabric.lib.check("fi_eq_open", ret as c_int)?;
        let h = handle(eq, "event queue")?;
        let fd = h.wait_fd(fabric.lib)?;
        Ok(Eq { h, fabric: fabric.clone(), fd })
    }

    /// The next event, or None when the queue is empty.
    pub fn read(&self) -> Result<Option<EqEvent>, OfiError> {
        let lib = self.fabric.lib;
        let mut event = 0u32;
        // An fi_eq_cm_entry and room for connection data.
        let mut buf = [0u64; 32];
        // SAFETY: eq is live; buf has room for the bytes passed.
        let ret = unsafe {
            op!(
                (*self.h.raw()).ops,
                read,
                self.h.raw(),
                &mut event,
                buf.as_mut_ptr().cast(),
                std::mem::size_of_val(&buf),
                0
            )
        };
        if ret == -(libc::EAGAIN as isize) {
            return Ok(None);
        }
        if ret == -(sys::FI_EAVAIL as isize) {
            let mut err = sys::fi_eq_err_entry::default();
            // SAFETY: eq is live; err_data_size 0 lets the provider keep its error data.
            let r = unsafe { op!((*self.h.raw()).ops, readerr, self.h.raw(), &mut err, 0) };
            if r < 0 {
                return Err(lib.error("fi_eq_readerr", r));
            }
            let text = self.strerror(err.prov_errno, err.err_data, lib.strerror(err.err));
            return Ok(Some(EqEvent::Error(OfiError::Call { op: "connection".into(), code: err.err, text })));
        }
        if ret < 0 {
            return Err(lib.error("fi_eq_read", ret));
        }
        // SAFETY: for CM events the buffer starts with an fi_eq_cm_entry
        // (fid, info), 8-aligned as buf is.
        let entry = unsafe { &*(buf.as_ptr() as *const sys::fi_eq_cm_entry) };
        Ok(Some(match event {
            sys::FI_CONNREQ => match NonNull::new(entry.info) {
                Some(ptr) => EqEvent::ConnReq(Info { lib, ptr }),
                None => return Ok(None),
            },
            sys::FI_CONNECTED => EqEvent::Connected,
            sys::FI_SHUTDOWN => EqEvent::Shutdown,
            _ => return Ok(None),
        }))
    }

    fn strerror(&self, prov_errno: c_int, data: *mut c_void, fallback: String) -> String {
        let mut text = [0 as c_char; 256];
        // SAFETY: eq is live; text has room for len bytes; the result is
        // null or a NUL-terminated string.
        let p = unsafe {
            op!((*self.h.raw()).ops, strerror, self.h.raw(), prov_errno, data, text.as_mut_ptr(), text.len())
                as *const c_char
        };
        if p.is_null() || prov_errno == 0 {
            return fallback;
        }
        // SAFETY: as above.
        let t = unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned();
        if t.is_empty() || t == fallback {
            fallback
        } else {
            format!("{fallback} ({t})")
        }
    }

    /// True when it is safe to sleep on the wait fd.
    pub fn trywait(&self) -> bool {
        self.fabric.trywait(self.h.fid())
    }
}

/// A listening passive endpoint.
pub struct Pep {
    h: Handle<sys::fid_pep>,
    lib: &'static Lib,
}

impl Pep {
    pub fn listen(fabric: &Rc<FabricObj>, info: &Info, eq: &Eq) -> Result<Pep, OfiError> {
        let lib = fabric.lib;
        let mut p = ptr::null_mut();
        // SAFETY: fabric, info and eq are live; p receives the pep.
        unsafe {
            let ret =
                op!((*fabric.h.raw()).ops, passive_ep, fabric.h.raw(), info.ptr.as_ptr(), &mut p, ptr::null_mut());
            lib.check("fi_passive_ep", ret as c_int)?;
            let pep = Pep { h: handle(p, "passive endpoint")?, lib };
            let ret = op!((*pep.h.fid()).ops, bind, pep.h.fid(), eq.h.fid(), 0);
            lib.check("fi_pep_bind", ret as c_int)?;
            let ret = op!((*pep.h.raw()).cm, listen, pep.h.raw());
            lib.check("fi_listen", ret as c_int)?;
            Ok(pep)
        }
    }

    /// The bound address (fi_getname): where the OS put port 0.
    pub fn local_addr(&self) -> Result<std::net::SocketAddr, OfiError> {
        // SAFETY: the pep is live; getname writes at most len bytes.
        unsafe { getname(self.lib, self.h.fid(), (*self.h.raw()).cm) }
    }

    /// Refuses a connection request.
    pub fn reject(&self, req: Info) -> Result<(), OfiError> {
        // SAFETY: pep is live; the request's handle names the pending connection.
        let ret = unsafe { op!((*self.h.raw()).cm, reject, self.h.raw(), (*req.ptr.as_ptr()).handle, ptr::null(), 0) };
        self.lib.check("fi_reject", ret as c_int)
    }
}

/// # Safety
/// `fid` and `cm` must be a live endpoint's (or pep's) fid and cm table.
unsafe fn getname(lib: &Lib, fid: *mut sys::fid, cm: *mut sys::fi_ops_cm) -> Result<std::net::SocketAddr, OfiError> {
    // SAFETY: sockaddr_storage is plain integers, for which all zeroes is valid.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of_val(&ss);
    // SAFETY: guaranteed by the caller; ss has room for len bytes.
    let ret = unsafe { op!(cm, getname, fid, (&mut ss as *mut libc::sockaddr_storage).cast(), &mut len) };
    lib.check("fi_getname", ret as c_int)?;
    // SAFETY: a sockaddr_in or sockaddr_in6 by its family, as written above.
    unsafe {
        match ss.ss_family as c_int {
            libc::AF_INET => {
                let a = &*(&ss as *const _ as *const libc::sockaddr_in);
                Ok(std::net::SocketAddr::from((
                    u32::from_be(a.sin_addr.s_addr).to_be_bytes(),
                    u16::from_be(a.sin_port),
                )))
            }
            libc::AF_INET6 => {
                let a = &*(&ss as *const _ as *const libc::sockaddr_in6);
                Ok(std::net::SocketAddr::from((a.sin6_addr.s6_addr, u16::from_be(a.sin6_port))))
            }
            f => Err(OfiError::Usage(format!("fi_getname: address family {f} is not IP"))),
        }
    }
}

/// Page-aligned memory that libfabric may read and write: zeroed and
/// owned, or a shared mapping of a file (fabric-attached memory: what the
/// peer writes lands in the file); freed or unmapped on drop.
struct Mem {
    ptr: NonNull<u8>,
    len: usize,
    mapped: bool,
}

impl Mem {
    fn new(len: usize) -> Mem {
        let layout = std::alloc::Layout::from_size_align(len.max(1), PAGE).expect("a page-aligned layout");
        // SAFETY: the layout has a non-zero size.
        let p = unsafe { std::alloc::alloc_zeroed(layout) };
        Mem { ptr: NonNull::new(p).unwrap_or_else(|| std::alloc::handle_alloc_error(layout)), len, mapped: false }
    }

    /// A shared read-write mapping of the first `len` bytes of `fd` (its own
    /// mapping: it lives as long as this Mem, whatever becomes of `fd`).
    fn map(fd: std::os::fd::BorrowedFd<'_>, len: usize) -> Result<Mem, OfiError> {
        let size = std::num::NonZeroUsize::new(len)
            .ok_or_else(|| OfiError::Usage("a window over a file needs at least one byte".into()))?;
        let flags = nix::sys::mman::ProtFlags::PROT_READ | nix::sys::mman::ProtFlags::PROT_WRITE;
        // SAFETY: a fresh mapping chosen by the kernel (no address hint), so
        // it aliases nothing of ours; it is unmapped only in drop.
        let p = unsafe { nix::sys::mman::mmap(None, size, flags, nix::sys::mman::MapFlags::MAP_SHARED, fd, 0) }
            .map_err(|e| OfiError::Call { op: "mmap".into(), code: e as i32, text: e.desc().into() })?;
        Ok(Mem { ptr: p.cast(), len, mapped: true })
    }

    fn at(&self, offset: usize) -> *mut u8 {
        debug_assert!(offset <= self.len);
        // SAFETY: in bounds (the callers check offsets against len).
        unsafe { self.ptr.as_ptr().add(offset) }
    }

    /// Copies out `len` bytes at `offset` (bounds checked by the caller).
    fn copy_out(&self, offset: usize, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        // SAFETY: [offset, offset+len) is inside the allocation; no other
        // thread writes it (manual progress: the provider writes only inside
        // our own calls).
        unsafe { ptr::copy_nonoverlapping(self.at(offset), v.as_mut_ptr(), len) };
        v
    }

    fn copy_in(&self, offset: usize, data: &[u8]) {
        // SAFETY: as in copy_out.
        unsafe { ptr::copy_nonoverlapping(data.as_ptr(), self.at(offset), data.len()) };
    }
}

impl Drop for Mem {
    fn drop(&mut self) {
        if self.mapped {
            // SAFETY: mapped in map() with this length; nothing refers to it
            // any more (the Window that owns it deregistered it first).
            let _ = unsafe { nix::sys::mman::munmap(self.ptr.cast(), self.len) };
            return;
        }
        let layout = std::alloc::Layout::from_size_align(self.len.max(1), PAGE).expect("a page-aligned layout");
        // SAFETY: allocated in new with this layout.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), layout) }
    }
}

/// A registered memory window that the peer reads and writes with RMA.
pub struct Window {
    mr: Handle<sys::fid_mr>,
    mem: Mem,
    _domain: Rc<Domain>,
    pub addr: u64,
}

impl Window {
    pub fn new(domain: &Rc<Domain>, len: usize, granted: &Granted, key: u64) -> Result<Window, OfiError> {
        Window::over(domain, Mem::new(len), granted, key)
    }

    /// A window over the first `len` bytes of the file `fd`, shared with
    /// every other mapping of it.
    pub fn over_file(
        domain: &Rc<Domain>,
        fd: std::os::fd::BorrowedFd<'_>,
        len: usize,
        granted: &Granted,
        key: u64,
    ) -> Result<Window, OfiError> {
        Window::over(domain, Mem::map(fd, len)?, granted, key)
    }

    fn over(domain: &Rc<Domain>, mem: Mem, granted: &Granted, key: u64) -> Result<Window, OfiError> {
        let len = mem.len;
        let access = (sys::FI_REMOTE_READ | sys::FI_REMOTE_WRITE | sys::FI_READ | sys::FI_WRITE) as u64;
        // SAFETY: mem outlives mr (fields drop in order: mr first).
        let mr = unsafe { domain.register(mem.at(0), len, access, key)? };
        let addr = if granted.virt_addr { mem.at(0) as u64 } else { 0 };
        Ok(Window { mr, mem, _domain: domain.clone(), addr })
    }

    pub fn key(&self) -> u64 {
        // SAFETY: fi_mr_key reads the live mr's key field.
        unsafe { (*self.mr.raw()).key }
    }

    pub fn len(&self) -> usize {
        self.mem.len
    }

    pub fn is_empty(&self) -> bool {
        self.mem.len == 0
    }

    pub fn read(&self, offset: usize, len: usize) -> Vec<u8> {
        self.mem.copy_out(offset, len)
    }

    pub fn write(&self, offset: usize, data: &[u8]) {
        self.mem.copy_in(offset, data)
    }
}

/// A CQ with a wait fd.
pub struct Cq {
    h: Handle<sys::fid_cq>,
    domain: Rc<Domain>,
    pub fd: i32,
}

impl Cq {
    fn open(domain: &Rc<Domain>, size: usize) -> Result<Cq, OfiError> {
        let mut attr = sys::fi_cq_attr {
            size,
            format: sys::FI_CQ_FORMAT_MSG,
            wait_obj: sys::FI_WAIT_FD,
            wait_cond: sys::FI_CQ_COND_NONE,
            ..Default::default()
        };
        let mut cq = ptr::null_mut();
        // SAFETY: domain is live; attr is valid.
        let ret = unsafe { op!((*domain.h.raw()).ops, cq_open, domain.h.raw(), &mut attr, &mut cq, ptr::null_mut()) };
        domain.lib().check("fi_cq_open", ret as c_int)?;
        let h = handle(cq, "completion queue")?;
        let fd = h.wait_fd(domain.lib())?;
        Ok(Cq { h, domain: domain.clone(), fd })
    }
}

/// What a posted operation's context number names.
const TAG_RECV: u64 = 1 << 32;
const TAG_SEND: u64 = 2 << 32;
const TAG_RMA: u64 = 3 << 32;
const TAG_KIND: u64 = 0xffff_ffff << 32;

enum TxOp {
    Send(Vec<u8>),
    Read { id: u32, addr: u64, key: u64, len: usize },
    Write { id: u32, addr: u64, key: u64, data: Vec<u8> },
}

struct RmaOp {
    /// Its registration where the provider needs local buffers registered
    /// (FI_MR_LOCAL); dropped before the memory.
    mr: Option<Handle<sys::fid_mr>>,
    mem: Mem,
    read: bool,
}

/// A connected (or connecting) endpoint with its queues and buffers.
pub struct Conn {
    // Drop order: Drop closes the endpoint first; then the regions, the
    // queues and the domain, then the memory they pointed at.
    ep: Option<Handle<sys::fid_ep>>,
    pool_mrs: Vec<Handle<sys::fid_mr>>,
    rma: HashMap<u32, RmaOp>,
    cq: Cq,
    pub eq: Eq,
    domain: Rc<Domain>,
    recv_pool: Mem,
    send_pool: Mem,
    recv_desc: *mut c_void,
    send_desc: *mut c_void,
    slot: usize,
    /// Receives posted, send slots, and RMA operations in flight at most.
    depth: usize,
    free_send: Vec<usize>,
    queue: VecDeque<TxOp>,
    pub granted: Granted,
    next_rma: u32,
    /// Receives posted (and not yet completed).
    posted: usize,
    /// Set on FI_CONNECTED: operations queued before it are posted then.
    connected: bool,
}

impl Conn {
    /// Opens an endpoint for `info` (fi_getinfo's for a connect, or a
    /// connection request's), binds it to a new EQ and CQ, enables it and
    /// posts its receives.
    pub fn open(domain: &Rc<Domain>, info: &Info, opts: &Options) -> Result<Conn, OfiError> {
        let lib = domain.lib();
        let granted = info.granted();
        // A queue size of 0 is a provider saying nothing: no limit of its own.
        let limit = |n: usize| if n == 0 { usize::MAX } else { n };
        let depth = opts.depth.max(1).min(limit(granted.rx_size)).min(limit(granted.tx_size));
        let slot = opts.max_message;
        if granted.max_msg_size < slot {
            return Err(OfiError::Usage(format!(
                "provider {} carries messages of at most {} bytes; max_message is {slot}",
                granted.provider, granted.max_msg_size
            )));
        }
        let eq = Eq::open(&domain.fabric)?;
        // Room for every completion that can be pending at once: depth
        // receives, depth sends and depth RMA operations (pump's bounds).
        let cq = Cq::open(domain, depth * 3 + 16)?;
        let recv_pool = Mem::new(depth * slot);
        let send_pool = Mem::new(depth * slot);
        let mut conn = Conn {
            ep: None,
            pool_mrs: Vec::new(),
            rma: HashMap::new(),
            cq,
            eq,
            domain: domain.clone(),
            recv_pool,
            send_pool,
            recv_desc: ptr::null_mut(),
            send_desc: ptr::null_mut(),
            slot,
            depth,
            free_send: (0..depth).rev().collect(),
            queue: VecDeque::new(),
            granted: granted.clone(),
            next_rma: 1,
            posted: 0,
            connected: false,
        };
        if granted.mr_local {
            let access = (sys::FI_SEND | sys::FI_RECV) as u64;
            // SAFETY: the pools outlive their registrations (Conn's drop
            // order) and are never reallocated.
            unsafe {
                let r = domain.register(conn.recv_pool.at(0), depth * slot, access, next_key())?;
                let s = domain.register(conn.send_pool.at(0), depth * slot, access, next_key())?;
                conn.recv_desc = (*r.raw()).mem_desc;
                conn.send_desc = (*s.raw()).mem_desc;
                conn.pool_mrs.extend([r, s]);
            }
        }
        let mut ep = ptr::null_mut();
        // SAFETY: domain, info, eq and cq are live; ep receives the endpoint.
        unsafe {
            let ret = op!((*domain.h.raw()).ops, endpoint, domain.h.raw(), info.ptr.as_ptr(), &mut ep, ptr::null_mut());
            lib.check("fi_endpoint", ret as c_int)?;
            let h = handle(ep, "endpoint")?;
            let fid = h.fid();
            conn.ep = Some(h);
            let ret = op!((*fid).ops, bind, fid, conn.eq.h.fid(), 0);
            lib.check("fi_ep_bind(eq)", ret as c_int)?;
            let ret = op!((*fid).ops, bind, fid, conn.cq.h.fid(), (sys::FI_TRANSMIT | sys::FI_RECV) as u64);
            lib.check("fi_ep_bind(cq)", ret as c_int)?;
            let ret = op!((*fid).ops, control, fid, sys::FI_ENABLE as c_int, ptr::null_mut());
            lib.check("fi_enable", ret as c_int)?;
        }
        for i in 0..depth {
            conn.post_recv(i)?;
        }
        Ok(conn)
    }

    fn ep(&self) -> Result<*mut sys::fid_ep, OfiError> {
        self.ep.as_ref().map(|h| h.raw()).ok_or(OfiError::Closed)
    }

    fn post_recv(&mut self, i: usize) -> Result<(), OfiError> {
        let ep = self.ep()?;
        // SAFETY: slot i of the receive pool is ours until its completion
        // (or the endpoint's close); the pool outlives the endpoint.
        let ret = unsafe {
            op!(
                (*ep).msg,
                recv,
                ep,
                self.recv_pool.at(i * self.slot).cast(),
                self.slot,
                self.recv_desc,
                FI_ADDR_UNSPEC,
                (TAG_RECV | i as u64) as *mut c_void
            )
        };
        if ret < 0 {
            return Err(self.domain.lib().error("fi_recv", ret));
        }
        self.posted += 1;
        Ok(())
    }

    /// fi_connect to the info's destination.
    pub fn connect(&self, info: &Info) -> Result<(), OfiError> {
        let ep = self.ep()?;
        // SAFETY: ep is live; dest_addr is the info's own address of dest_addrlen bytes.
        let ret = unsafe { op!((*ep).cm, connect, ep, (*info.ptr.as_ptr()).dest_addr, ptr::null(), 0) };
        self.domain.lib().check("fi_connect", ret as c_int)
    }

    pub fn accept(&self) -> Result<(), OfiError> {
        let ep = self.ep()?;
        // SAFETY: ep is live and was opened from a connection request.
        let ret = unsafe { op!((*ep).cm, accept, ep, ptr::null(), 0) };
        self.domain.lib().check("fi_accept", ret as c_int)
    }

    pub fn local_addr(&self) -> Result<std::net::SocketAddr, OfiError> {
        let ep = self.ep()?;
        // SAFETY: ep is live.
        unsafe { getname(self.domain.lib(), ep.cast(), (*ep).cm) }
    }

    pub fn cq_fd(&self) -> i32 {
        self.cq.fd
    }

    pub fn window(&self, len: usize, key: u64) -> Result<Window, OfiError> {
        Window::new(&self.domain, len, &self.granted, key)
    }

    pub fn window_over_file(&self, fd: std::os::fd::BorrowedFd<'_>, len: usize, key: u64) -> Result<Window, OfiError> {
        Window::over_file(&self.domain, fd, len, &self.granted, key)
    }

    /// Queues a send (copied); posts what the queue and the free slots allow.
    pub fn send(&mut self, data: &[u8]) -> Result<(), OfiError> {
        if data.len() > self.slot {
            return Err(OfiError::TooLong { len: data.len(), max: self.slot });
        }
        self.queue.push_back(TxOp::Send(data.to_vec()));
        self.pump()
    }

    pub fn read(&mut self, addr: u64, key: u64, len: usize) -> Result<u32, OfiError> {
        let id = self.rma_id()?;
        self.queue.push_back(TxOp::Read { id, addr, key, len });
        self.pump()?;
        Ok(id)
    }

    pub fn write(&mut self, addr: u64, key: u64, data: &[u8]) -> Result<u32, OfiError> {
        let id = self.rma_id()?;
        self.queue.push_back(TxOp::Write { id, addr, key, data: data.to_vec() });
        self.pump()?;
        Ok(id)
    }

    fn rma_id(&mut self) -> Result<u32, OfiError> {
        if !self.granted.rma {
            return Err(OfiError::NoRma { provider: self.granted.provider.clone() });
        }
        let id = self.next_rma;
        self.next_rma = self.next_rma.checked_add(1).unwrap_or(1);
        Ok(id)
    }

    /// Sends and RMA operations waiting in the queue.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Operations posted and not yet completed (sends and RMA).
    pub fn in_flight(&self) -> usize {
        (self.depth - self.free_send.len()) + self.rma.len()
    }

    /// Posts queued operations until the queue is empty, the send slots
    /// are all in flight, or the provider says -FI_EAGAIN.
    fn pump(&mut self) -> Result<(), OfiError> {
        let lib = self.domain.lib();
        if !self.connected {
            return Ok(());
        }
        while let Some(op) = self.queue.front() {
            let ep = self.ep()?;
            let ret = match op {
                TxOp::Send(data) => {
                    let Some(&i) = self.free_send.last() else { break };
                    self.send_pool.copy_in(i * self.slot, data);
                    // SAFETY: slot i is free and stays ours until its completion.
                    let ret = unsafe {
                        op!(
                            (*ep).msg,
                            send,
                            ep,
                            self.send_pool.at(i * self.slot) as *const c_void,
                            data.len(),
                            self.send_desc,
                            FI_ADDR_UNSPEC,
                            (TAG_SEND | i as u64) as *mut c_void
                        )
                    };
                    if ret == 0 {
                        self.free_send.pop();
                    }
                    ret
                }
                TxOp::Read { .. } | TxOp::Write { .. } if self.rma.len() >= self.depth => break,
                TxOp::Read { id, addr, key, len } => {
                    let (id, addr, key, len) = (*id, *addr, *key, *len);
                    let op = self.rma_buffer(len, true)?;
                    // SAFETY: op's memory is kept in self.rma until its completion.
                    let ret = unsafe {
                        op!(
                            (*ep).rma,
                            read,
                            ep,
                            op.mem.at(0).cast(),
                            len,
                            rma_desc(&op),
                            FI_ADDR_UNSPEC,
                            addr,
                            key,
                            (TAG_RMA | id as u64) as *mut c_void
                        )
                    };
                    if ret == 0 {
                        self.rma.insert(id, op);
                    }
                    ret
                }
                TxOp::Write { id, addr, key, data } => {
                    let (id, addr, key) = (*id, *addr, *key);
                    let op = self.rma_buffer(data.len(), false)?;
                    op.mem.copy_in(0, data);
                    let len = data.len();
                    // SAFETY: as for a read.
                    let ret = unsafe {
                        op!(
                            (*ep).rma,
                            write,
                            ep,
                            op.mem.at(0) as *const c_void,
                            len,
                            rma_desc(&op),
                            FI_ADDR_UNSPEC,
                            addr,
                            key,
                            (TAG_RMA | id as u64) as *mut c_void
                        )
                    };
                    if ret == 0 {
                        self.rma.insert(id, op);
                    }
                    ret
                }
            };
            if ret == -(libc::EAGAIN as isize) {
                break;
            }
            if ret < 0 {
                let what = match self.queue.pop_front() {
                    Some(TxOp::Send(_)) => "fi_send",
                    Some(TxOp::Read { .. }) => "fi_read",
                    _ => "fi_write",
                };
                return Err(lib.error(what, ret));
            }
            self.queue.pop_front();
        }
        Ok(())
    }

    fn rma_buffer(&self, len: usize, read: bool) -> Result<RmaOp, OfiError> {
        let mem = Mem::new(len);
        let mr = if self.granted.mr_local {
            let access = if read { sys::FI_READ } else { sys::FI_WRITE } as u64;
            // SAFETY: the RmaOp keeps mem alive past mr (field order).
            Some(unsafe { self.domain.register(mem.at(0), len.max(1), access, next_key())? })
        } else {
            None
        };
        Ok(RmaOp { mr, mem, read })
    }

    /// Reads every completion into `out`, reposts receives, posts what was
    /// queued, until fi_trywait says it is safe to sleep on the CQ's fd.
    pub fn progress(&mut self, out: &mut Vec<Completion>) -> Result<(), OfiError> {
        let lib = self.domain.lib();
        // fi_trywait refusing again and again with nothing to read would be
        // a provider's bug; after this many empty rounds return (the fd
        // stays readable, so the loop comes back) rather than hang here.
        let mut empty_rounds = 0;
        loop {
            let mut entries = [sys::fi_cq_msg_entry::default(); 16];
            // SAFETY: cq is live; entries has room for 16 FI_CQ_FORMAT_MSG entries.
            let n = unsafe {
                op!((*self.cq.h.raw()).ops, read, self.cq.h.raw(), entries.as_mut_ptr().cast(), entries.len())
            };
            if n == -(libc::EAGAIN as isize) {
                self.pump()?;
                empty_rounds += 1;
                if self.cq.domain.fabric.trywait(self.cq.h.fid()) || empty_rounds > 64 {
                    return Ok(());
                }
                continue;
            }
            empty_rounds = 0;
            if n == -(sys::FI_EAVAIL as isize) {
                let mut err = sys::fi_cq_err_entry::default();
                // SAFETY: cq is live; a zeroed err entry (err_data_size 0) is valid.
                let r = unsafe { op!((*self.cq.h.raw()).ops, readerr, self.cq.h.raw(), &mut err, 0) };
                if r < 0 {
                    return Err(lib.error("fi_cq_readerr", r));
                }
                self.failed(err.op_context as u64, err.err, out)?;
                continue;
            }
            if n < 0 {
                return Err(lib.error("fi_cq_read", n));
            }
            for e in &entries[..n as usize] {
                self.completed(e.op_context as u64, e.len, out)?;
            }
        }
    }

    fn completed(&mut self, tag: u64, len: usize, out: &mut Vec<Completion>) -> Result<(), OfiError> {
        let i = (tag & 0xffff_ffff) as usize;
        match tag & TAG_KIND {
            TAG_RECV => {
                self.posted -= 1;
                out.push(Completion::Message(self.recv_pool.copy_out(i * self.slot, len.min(self.slot))));
                self.post_recv(i)?;
            }
            TAG_SEND => self.free_send.push(i),
            TAG_RMA => {
                if let Some(op) = self.rma.remove(&(i as u32)) {
                    out.push(if op.read {
                        Completion::Read { id: i as u32, data: op.mem.copy_out(0, op.mem.len) }
                    } else {
                        Completion::Written { id: i as u32 }
                    });
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn failed(&mut self, tag: u64, err: c_int, out: &mut Vec<Completion>) -> Result<(), OfiError> {
        let lib = self.domain.lib();
        let i = (tag & 0xffff_ffff) as usize;
        let error = |op: &str| OfiError::Call { op: op.into(), code: err, text: lib.strerror(err) };
        match tag & TAG_KIND {
            TAG_RECV => {
                self.posted -= 1;
                // A receive flushed by a closing connection is no failure of
                // its own; any other (a truncated message) is reported, and
                // the buffer posted again while the link is up.
                if err != libc::ECANCELED && self.connected {
                    out.push(Completion::ReceiveFailed(error("fi_recv")));
                    self.post_recv(i)?;
                }
            }
            TAG_SEND => {
                self.free_send.push(i);
                out.push(Completion::SendFailed(error("fi_send")));
            }
            TAG_RMA => {
                if let Some(op) = self.rma.remove(&(i as u32)) {
                    let op = if op.read { "fi_read" } else { "fi_write" };
                    out.push(Completion::RmaFailed { id: i as u32, error: error(op) });
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Reads the endpoint's connection events until it is safe to sleep on the EQ's fd.
    pub fn events(&mut self, out: &mut Vec<LinkEvent>) -> Result<(), OfiError> {
        let mut empty_rounds = 0;
        loop {
            match self.eq.read()? {
                Some(EqEvent::Connected) => {
                    self.connected = true;
                    out.push(LinkEvent::Connected);
                    self.pump()?;
                }
                Some(EqEvent::Shutdown) => {
                    self.connected = false;
                    out.push(LinkEvent::Shutdown);
                }
                Some(EqEvent::Error(e)) => out.push(LinkEvent::Error(e)),
                Some(EqEvent::ConnReq(_)) => {}
                None => {
                    empty_rounds += 1;
                    if self.eq.trywait() || empty_rounds > 64 {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// fi_shutdown: tells the peer (FI_SHUTDOWN on its EQ); the endpoint stays open.
    pub fn shutdown(&self) -> Result<(), OfiError> {
        let ep = self.ep()?;
        // SAFETY: ep is live.
        let ret = unsafe { op!((*ep).cm, shutdown, ep, 0) };
        self.domain.lib().check("fi_shutdown", ret as c_int)
    }

    /// Closes the endpoint (the buffers are freed with the Conn).
    pub fn close(&mut self) {
        self.ep = None;
        self.queue.clear();
    }
}

fn rma_desc(op: &RmaOp) -> *mut c_void {
    // SAFETY: the mr is live while op is; fi_mr_desc reads its mem_desc field.
    op.mr.as_ref().map_or(ptr::null_mut(), |mr| unsafe { (*mr.raw()).mem_desc })
}

impl Drop for Conn {
    fn drop(&mut self) {
        // The endpoint first: after fi_close returns, the provider touches
        // none of the buffers, which the fields' drops then free.
        self.close();
        self.rma.clear();
        self.pool_mrs.clear();
    }
}
