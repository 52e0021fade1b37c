//! `PidFile`: a server's pid file, created without following symlinks and
//! locked (flock) for the server's life (see famez_core::lock).

use std::path::Path;

use famez_core::PidFile as CorePidFile;
use napi_derive::napi;

use crate::error::{coded, errno_name, Result};

#[napi]
pub struct PidFile {
    file: Option<CorePidFile>,
    took_over: bool,
}

#[napi]
impl PidFile {
    /// Creates `path` holding this process's pid and locks it. A pid file
    /// locked by a live process is refused ("EADDRINUSE: ... (pid N)"); a
    /// symlink, a non-regular file or a file that is not a pid file is
    /// refused ("EEXIST: ..."); a stale pid file (nobody holds its lock) is
    /// taken over (`tookOver`).
    #[napi(factory)]
    pub fn create(path: String) -> Result<Self> {
        let f = CorePidFile::create(Path::new(&path), std::process::id()).map_err(|e| {
            let code = match e.kind() {
                std::io::ErrorKind::AddrInUse => "EADDRINUSE".to_string(),
                std::io::ErrorKind::AlreadyExists => "EEXIST".to_string(),
                std::io::ErrorKind::PermissionDenied => "EACCES".to_string(),
                std::io::ErrorKind::NotFound => "ENOENT".to_string(),
                _ => e.raw_os_error().map_or_else(|| "EIO".into(), errno_name),
            };
            coded(code, famez_core::error_text(&e))
        })?;
        let took_over = f.took_over;
        Ok(PidFile { file: Some(f), took_over })
    }

    /// A stale pid file (of a server that died) was taken over.
    #[napi(getter)]
    pub fn took_over(&self) -> bool {
        self.took_over
    }

    /// Removes the pid file if the path still is this file, and releases
    /// the lock. False when it was gone or is another file now. Idempotent.
    #[napi]
    pub fn remove(&mut self) -> bool {
        self.file.take().is_some_and(|f| f.remove())
    }
}
