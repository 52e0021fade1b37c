//! famez-core's link end state machine (`link::LinkEnd`) as a JavaScript
//! class, `LinkEndCore`. ts/link/native-streams.ts wraps it in the same
//! interface as ts/link/streams.ts's LinkEnd (streams as objects, errors as
//! RangeError and FrameError); this layer takes GCIDs as numbers. Nothing
//! here touches an fd or a clock.

use famez_core::link::{Config, LinkEnd, LinkEvent, Stats, Stream, UsageError};
use napi::bindgen_prelude::{Buffer, Uint8ArraySlice};
use napi_derive::napi;

use crate::error::{coded, Error, Result};

#[napi(object)]
pub struct LinkEndCoreConfig {
    pub instance: u32,
    pub source: Option<u32>,
    pub window: Option<u32>,
    pub max_unit: Option<u32>,
    pub heartbeat_ms: Option<f64>,
    pub missed_heartbeats: Option<f64>,
    pub late_ms: Option<f64>,
    pub rto_ms: Option<f64>,
    pub max_rto_ms: Option<f64>,
    pub max_streams: Option<u32>,
    pub ack_delay_ms: Option<f64>,
}

#[napi(object)]
pub struct LinkEndCoreDelivery {
    pub source: u32,
    pub destination: u32,
    pub packet: Buffer,
}

/// An event: `kind` 'up' (instance, path), 'dead' (path), 'restarted'
/// (instance, resent), 'stalled' or 'ready' (source, destination).
#[napi(object)]
pub struct LinkEndCoreEvent {
    pub kind: String,
    pub instance: Option<u32>,
    pub path: Option<u32>,
    pub resent: Option<u32>,
    pub source: Option<u32>,
    pub destination: Option<u32>,
}

#[napi(object)]
pub struct LinkEndCoreStats {
    pub frames_sent: f64,
    pub frames_received: f64,
    pub bad_frames: f64,
    pub rejected_frames: f64,
    pub duplicates: f64,
    pub out_of_window: f64,
    pub retransmits: f64,
    pub last_bad_frame: Option<String>,
}

fn stats(s: Stats) -> LinkEndCoreStats {
    LinkEndCoreStats {
        frames_sent: s.frames_sent as f64,
        frames_received: s.frames_received as f64,
        bad_frames: s.bad_frames as f64,
        rejected_frames: s.rejected_frames as f64,
        duplicates: s.duplicates as f64,
        out_of_window: s.out_of_window as f64,
        retransmits: s.retransmits as f64,
        last_bad_frame: s.last_bad_frame,
    }
}

/// ERANGE for what the TypeScript throws as a RangeError, the frame code
/// (EPACKET, EFIELD) for a FrameError.
fn usage(e: UsageError) -> Error {
    match e {
        UsageError::Range(m) => coded("ERANGE", m),
        UsageError::Frame(f) => coded(f.code.name(), f.message),
    }
}

fn stream(source: u32, destination: u32) -> Stream {
    Stream { source, destination }
}

#[napi]
pub struct LinkEndCore {
    end: LinkEnd,
}

#[napi]
impl LinkEndCore {
    #[napi(constructor)]
    pub fn new(c: LinkEndCoreConfig) -> Result<Self> {
        let d = Config::default();
        let config = Config {
            instance: c.instance,
            source: c.source.unwrap_or(d.source),
            window: c.window.unwrap_or(d.window),
            max_unit: c.max_unit.map_or(d.max_unit, |v| v as usize),
            heartbeat_ms: c.heartbeat_ms.unwrap_or(d.heartbeat_ms),
            missed_heartbeats: c.missed_heartbeats.unwrap_or(d.missed_heartbeats),
            late_ms: c.late_ms.unwrap_or(d.late_ms),
            rto_ms: c.rto_ms.unwrap_or(d.rto_ms),
            max_rto_ms: c.max_rto_ms.unwrap_or(d.max_rto_ms),
            max_streams: c.max_streams.map_or(d.max_streams, |v| v as usize),
            ack_delay_ms: c.ack_delay_ms.unwrap_or(d.ack_delay_ms),
        };
        Ok(LinkEndCore { end: LinkEnd::new(config).map_err(usage)? })
    }

    #[napi]
    pub fn submit(&mut self, source: u32, destination: u32, unit: Uint8ArraySlice, checked: bool) -> Result<bool> {
        self.end.submit(stream(source, destination), unit.as_ref(), checked).map_err(usage)
    }

    #[napi]
    pub fn consumed(&mut self, source: u32, destination: u32, n: f64) -> Result<()> {
        if n.fract() != 0.0 || !n.is_finite() {
            return Err(coded(
                "ERANGE",
                format_args!("consumed({source}->{destination}, {n}): more than was delivered"),
            ));
        }
        self.end.consumed(stream(source, destination), n as i64).map_err(usage)
    }

    #[napi]
    pub fn link_up(&mut self, now: f64, path: u32) {
        self.end.link_up(now, path);
    }

    #[napi]
    pub fn link_down(&mut self, path: u32) {
        self.end.link_down(path);
    }

    #[napi]
    pub fn receive(&mut self, bytes: Uint8ArraySlice, now: f64, path: u32) {
        self.end.receive(bytes.as_ref(), now, path);
    }

    #[napi]
    pub fn handle_timeout(&mut self, now: f64) {
        self.end.handle_timeout(now);
    }

    #[napi]
    pub fn poll_transmit(&mut self, now: f64, path: u32) -> Option<Buffer> {
        self.end.poll_transmit(now, path).map(Buffer::from)
    }

    #[napi]
    pub fn poll_train(&mut self, now: f64, path: u32, max_bytes: u32) -> Result<Option<Buffer>> {
        Ok(self.end.poll_train(now, path, max_bytes as usize).map_err(usage)?.map(Buffer::from))
    }

    #[napi]
    pub fn poll_timeout(&mut self, now: f64) -> Option<f64> {
        self.end.poll_timeout(now)
    }

    #[napi]
    pub fn poll_deliver(&mut self) -> Option<LinkEndCoreDelivery> {
        self.end.poll_deliver().map(|d| LinkEndCoreDelivery {
            source: d.stream.source,
            destination: d.stream.destination,
            packet: Buffer::from(d.unit),
        })
    }

    #[napi]
    pub fn poll_event(&mut self) -> Option<LinkEndCoreEvent> {
        let none = LinkEndCoreEvent {
            kind: String::new(),
            instance: None,
            path: None,
            resent: None,
            source: None,
            destination: None,
        };
        Some(match self.end.poll_event()? {
            LinkEvent::Up { instance, path } => {
                LinkEndCoreEvent { kind: "up".into(), instance: Some(instance), path: Some(path), ..none }
            }
            LinkEvent::Dead { path } => LinkEndCoreEvent { kind: "dead".into(), path: Some(path), ..none },
            LinkEvent::Restarted { instance, resent } => LinkEndCoreEvent {
                kind: "restarted".into(),
                instance: Some(instance),
                resent: Some(resent as u32),
                ..none
            },
            LinkEvent::Stalled { stream } => LinkEndCoreEvent {
                kind: "stalled".into(),
                source: Some(stream.source),
                destination: Some(stream.destination),
                ..none
            },
            LinkEvent::Ready { stream } => LinkEndCoreEvent {
                kind: "ready".into(),
                source: Some(stream.source),
                destination: Some(stream.destination),
                ..none
            },
        })
    }

    #[napi]
    pub fn is_up(&self) -> bool {
        self.end.is_up()
    }

    #[napi]
    pub fn path_up(&self, path: u32) -> bool {
        self.end.path_up(path)
    }

    #[napi]
    pub fn up_paths(&self) -> Vec<u32> {
        self.end.up_paths()
    }

    #[napi]
    pub fn drop_path(&mut self, path: u32) {
        self.end.drop_path(path);
    }

    #[napi]
    pub fn dead_after_ms(&self) -> f64 {
        self.end.dead_after_ms()
    }

    #[napi]
    pub fn heard_at(&self, path: u32) -> f64 {
        self.end.heard_at(path)
    }

    #[napi]
    pub fn peer(&self) -> Option<u32> {
        self.end.peer()
    }

    #[napi]
    pub fn stats(&self) -> LinkEndCoreStats {
        stats(self.end.stats())
    }

    #[napi]
    pub fn path_stats(&self, path: u32) -> LinkEndCoreStats {
        stats(self.end.path_stats(path))
    }

    #[napi]
    pub fn path_bad(&self, path: u32) -> f64 {
        self.end.path_bad(path) as f64
    }

    #[napi]
    pub fn send_buffered(&self, source: u32, destination: u32) -> u32 {
        self.end.send_buffered(stream(source, destination)) as u32
    }

    #[napi]
    pub fn receive_buffered(&self, source: u32, destination: u32) -> f64 {
        self.end.receive_buffered(stream(source, destination)) as f64
    }

    #[napi]
    pub fn credit(&self, source: u32, destination: u32) -> f64 {
        self.end.credit(stream(source, destination)) as f64
    }
}
