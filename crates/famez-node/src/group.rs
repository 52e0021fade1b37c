//! Group lookup through the system's group database (getgrnam_r, so NSS
//! sources such as LDAP count, not only /etc/group).

use napi_derive::napi;
use nix::unistd::Group;

use crate::{io_error, Result};

/// The id of the group named `name`, or null when there is no such group.
#[napi]
pub fn group_id(name: String) -> Result<Option<u32>> {
    match Group::from_name(&name) {
        Ok(g) => Ok(g.map(|g| g.gid.as_raw())),
        Err(e) => Err(io_error(&format!("look up group {name}"), e.into())),
    }
}
