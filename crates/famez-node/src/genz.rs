//! Gen-Z packet CRCs for packets end to end in one buffer (famez-core's
//! `genz`): one call seals or checks every piece of a message. The buffers
//! are the process's own (a message being packed, a copy read from a ring
//! or a link), never a view into shared memory, which another process may
//! write while the CRC runs.

use famez_core::genz::{self, Fault};
use napi::bindgen_prelude::Uint8ArraySlice;
use napi_derive::napi;

use crate::error::{coded, Result};

fn fault_text(f: Fault) -> String {
    match f {
        Fault::Tiling { at } => format!("the bytes at {at} are no whole packet (LEN)"),
        Fault::Pcrc { at } => format!("the packet at {at} has a bad PCRC"),
        Fault::Ecrc { at } => format!("the packet at {at} has a bad ECRC"),
    }
}

/// Writes the ECRC of every packet of `packets` (end to end, as their LEN
/// lays them) into its last three bytes; returns how many. EINVAL, with
/// nothing written, when the bytes are not whole packets.
#[napi]
pub fn genz_seal(mut packets: Uint8ArraySlice) -> Result<u32> {
    // SAFETY: the slice is the typed array's memory, valid for this
    // synchronous call; JavaScript cannot run (and so cannot touch it)
    // until the call returns, and the caller passes a buffer of its own,
    // not shared memory (see the module comment).
    let bytes = unsafe { packets.as_mut() };
    genz::seal(bytes).map(|n| n as u32).map_err(|f| coded("EINVAL", fault_text(f)))
}

/// Checks every packet of `packets` (end to end, as their LEN lays them):
/// -1 when each is whole with both CRCs right (none: -1 too), else the byte
/// offset of the first that is not.
#[napi]
pub fn genz_check(packets: Uint8ArraySlice) -> i32 {
    match genz::check(packets.as_ref()) {
        Ok(_) => -1,
        Err(Fault::Tiling { at } | Fault::Pcrc { at } | Fault::Ecrc { at }) => at as i32,
    }
}

/// The 24-bit ECRC of `bytes`.
#[napi]
pub fn genz_ecrc(bytes: Uint8ArraySlice) -> u32 {
    genz::ecrc(bytes.as_ref())
}
