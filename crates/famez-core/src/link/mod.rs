//! The link protocol between switches, without I/O: the frame codec
//! (`frame`) and one link end's state machine (`streams`), the Rust twins of
//! ts/link/frame.ts and ts/link/streams.ts (docs/multi-host.md, "The link
//! frame"). The bytes they make and take are the same.

pub mod frame;
pub mod streams;

pub use frame::{decode, decode_train, unit_fault, Frame, FrameCode, FrameError};
pub use streams::{Config, Delivered, LinkEnd, LinkEvent, Stats, Stream, UsageError};
