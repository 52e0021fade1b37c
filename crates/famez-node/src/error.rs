//! The binding's errors: napi's `Error` with a string code, so a thrown
//! JavaScript error has `err.code` set (`'EBADMSG'`, `'ENOENT'`, ...) and
//! callers test the code, never the message. The message is a line for a
//! person; it starts with the same code, as Node's own fs errors do
//! ("ENOENT: ..."). And the one place a raw napi status is checked.

use std::borrow::Cow;
use std::fmt::Display;

use famez_core::ring::{LayoutError, PopError, PushError};
use famez_core::{error_text, MailboxError};
use napi::{sys, Status};

/// `err.code` of a thrown error: an errno-style name, or, for a failed napi
/// call, napi's own status name ("GenericFailure", "PendingException": the
/// latter tells napi-rs that a JavaScript exception is already pending).
#[derive(Debug, Clone)]
pub struct Code(Cow<'static, str>);

impl AsRef<str> for Code {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

pub type Error = napi::Error<Code>;
pub type Result<T> = std::result::Result<T, Error>;

/// An error with `code` and the message "CODE: what".
pub fn coded(code: impl Into<Cow<'static, str>>, what: impl Display) -> Error {
    let code = code.into();
    let reason = format!("{code}: {what}");
    Error::new(Code(code), reason)
}

/// An OS error as "CODE: what: text" with its errno name as the code (EIO
/// when it has none).
pub fn io_error(what: &str, e: std::io::Error) -> Error {
    match e.raw_os_error() {
        Some(c) => coded(errno_name(c), format_args!("{what}: {}", error_text(&e))),
        None => coded("EIO", format_args!("{what}: {e}")),
    }
}

/// "ENOENT" for 2: nix's name of an errno value.
pub fn errno_name(errno: i32) -> String {
    format!("{:?}", nix::errno::Errno::from_raw(errno))
}

pub fn closed(what: &str) -> Error {
    coded("EBADF", format_args!("{what} is closed"))
}

/// The one check of a raw napi call's status: `what` names the call.
pub fn check(status: sys::napi_status, what: &str) -> Result<()> {
    if status == sys::Status::napi_ok {
        return Ok(());
    }
    let status = Status::from(status);
    Err(Error::new(napi_code(status), format!("{what} failed: napi status {status}")))
}

/// What a function returns after throwing a JavaScript error itself: napi-rs
/// sees the exception pending and leaves it alone.
pub fn pending() -> Error {
    Error::new(napi_code(Status::PendingException), "a JavaScript exception is pending")
}

/// napi's status name as a code.
fn napi_code(status: Status) -> Code {
    Code(Cow::Owned(status.as_ref().to_owned()))
}

/// Into this binding's errors from napi-rs's own (from a napi-rs API call),
/// keeping napi's status name as the code.
pub trait FromNapi<T> {
    fn coded(self) -> Result<T>;
}

impl<T> FromNapi<T> for napi::Result<T> {
    fn coded(self) -> Result<T> {
        self.map_err(|e| Error::new(napi_code(e.status), e.reason.clone()))
    }
}

/// A failure with no JavaScript caller to throw to (in a finalizer, or
/// while the env is torn down): one line on stderr, never silence.
pub fn warn(e: &Error) {
    eprintln!("famez: internal error in the native binding: {}", e.reason);
}

pub fn mailbox_error(e: MailboxError) -> Error {
    let code = match &e {
        MailboxError::TooLong { .. } => "EMSGSIZE",
        MailboxError::NameTooLong { .. } => "ENAMETOOLONG",
        MailboxError::BadSlot { .. } => "ERANGE",
        MailboxError::BadLength { .. } => "EBADMSG",
        MailboxError::SlotBusy { .. } => "EBUSY",
        _ => "EINVAL",
    };
    coded(code, e)
}

pub fn layout_error(e: LayoutError) -> Error {
    let code = match &e {
        LayoutError::NoSuchPair { .. } => "ERANGE",
        LayoutError::BadGlobals(_) => "EBADMSG",
        _ => "EINVAL",
    };
    coded(code, e)
}

pub fn push_error(e: PushError) -> Error {
    match e {
        PushError::TooLarge { .. } => coded("EMSGSIZE", e),
        _ => coded("EBADMSG", e),
    }
}

pub fn pop_error(e: PopError) -> Error {
    coded("EBADMSG", e)
}
