//! One end of a link as a pure state machine: the Rust twin of
//! ts/link/streams.ts's `LinkEnd` (docs/multi-host.md, "Streams, credits,
//! acks"), rule for rule and frame for frame, so that either can drive a
//! link and the TypeScript property tests hold for both. No fds, no
//! clock: time is only the `now` argument (ms, as f64, like the TS's).
//!
//! Iteration orders follow the TypeScript's Maps and Sets (insertion
//! order), so the same inputs give the same frames in both.

use std::collections::{BTreeMap, HashMap, VecDeque};

use super::frame::{
    decode_train, encode_into, unit_fault, Frame, FrameCode, FrameError, GCID_LIMIT, HEADER_BYTES, MAX_PACKET_BYTES,
    MAX_UNIT_BYTES,
};

const SEQ: i64 = 1 << 32;

/// One direction of one (source GCID, destination GCID) pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Stream {
    pub source: u32,
    pub destination: u32,
}

impl Stream {
    fn key(self) -> u64 {
        u64::from(self.source) * u64::from(GCID_LIMIT) + u64::from(self.destination)
    }

    fn reverse(self) -> Stream {
        Stream { source: self.destination, destination: self.source }
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub instance: u32,
    pub source: u32,
    pub window: u32,
    pub max_unit: usize,
    pub heartbeat_ms: f64,
    pub missed_heartbeats: f64,
    pub late_ms: f64,
    pub rto_ms: f64,
    pub max_rto_ms: f64,
    pub max_streams: usize,
    pub ack_delay_ms: f64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            instance: 0,
            source: 0,
            window: 64,
            max_unit: MAX_UNIT_BYTES,
            heartbeat_ms: 100.0,
            missed_heartbeats: 3.0,
            late_ms: 0.0,
            rto_ms: 200.0,
            max_rto_ms: 1600.0,
            max_streams: 65536,
            ack_delay_ms: 0.0,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum LinkEvent {
    Up { instance: u32, path: u32 },
    Dead { path: u32 },
    Restarted { instance: u32, resent: usize },
    Stalled { stream: Stream },
    Ready { stream: Stream },
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stats {
    pub frames_sent: u64,
    pub frames_received: u64,
    pub bad_frames: u64,
    pub rejected_frames: u64,
    pub duplicates: u64,
    pub out_of_window: u64,
    pub retransmits: u64,
    pub last_bad_frame: Option<String>,
}

/// A refused call: the TypeScript's RangeError or FrameError.
#[derive(Debug, Clone, PartialEq)]
pub enum UsageError {
    Range(String),
    Frame(FrameError),
}

#[derive(Debug)]
struct Path {
    id: u32,
    up: bool,
    hello_seen: bool,
    hello_confirmed: bool,
    hello_due: f64,
    last_rx: f64,
    last_tx: f64,
    stats: Stats,
}

#[derive(Debug)]
struct Tx {
    stream: Stream,
    acked: i64,
    buf: VecDeque<Vec<u8>>,
    sent: i64,
    limit: i64,
    stalled: bool,
    rto: f64,
    rto_at: f64,
    probe_at: f64,
}

#[derive(Debug)]
struct Rx {
    stream: Stream,
    expected: i64,
    held: HashMap<i64, Vec<u8>>,
    handed: i64,
    consumed: i64,
    granted: i64,
    told: i64,
}

/// A set that iterates in insertion order (a JavaScript Set).
#[derive(Debug, Default)]
struct OrderedSet {
    next: u64,
    by_order: BTreeMap<u64, u64>,
    order_of: HashMap<u64, u64>,
}

impl OrderedSet {
    fn insert(&mut self, k: u64) {
        if self.order_of.contains_key(&k) {
            return;
        }
        self.order_of.insert(k, self.next);
        self.by_order.insert(self.next, k);
        self.next += 1;
    }

    fn remove(&mut self, k: u64) {
        if let Some(o) = self.order_of.remove(&k) {
            self.by_order.remove(&o);
        }
    }

    fn contains(&self, k: u64) -> bool {
        self.order_of.contains_key(&k)
    }

    fn first(&self) -> Option<u64> {
        self.by_order.values().next().copied()
    }

    fn len(&self) -> usize {
        self.order_of.len()
    }
}

/// The sequence number congruent to `wire` (mod 2^32) nearest `near`.
pub fn unwrap_seq(near: i64, wire: u32) -> i64 {
    // JavaScript's % truncates toward zero, as Rust's does.
    let mut d = (i64::from(wire) - (near % SEQ)) % SEQ;
    if d < 0 {
        d += SEQ;
    }
    if d >= SEQ / 2 {
        d -= SEQ;
    }
    near + d
}

fn wire(v: i64) -> u32 {
    v.rem_euclid(SEQ) as u32
}

pub struct Delivered {
    pub stream: Stream,
    pub unit: Vec<u8>,
}

pub struct LinkEnd {
    c: Config,
    dead_ms: f64,
    paths: Vec<Path>,
    peer_instance: Option<u32>,
    peer_window: i64,
    tx_index: HashMap<u64, usize>,
    tx: Vec<Tx>,
    rr: usize,
    rx_index: HashMap<u64, usize>,
    rx: Vec<Rx>,
    ack_owed: OrderedSet,
    ack_urgent: bool,
    /// NaN: at the next `now` seen plus ack_delay_ms; infinity: none owed.
    ack_due_at: f64,
    probe_owed: OrderedSet,
    deliveries: VecDeque<Delivered>,
    events: VecDeque<LinkEvent>,
    counts: Stats,
}

fn range(m: &str) -> UsageError {
    UsageError::Range(m.into())
}

impl LinkEnd {
    // The negated comparisons refuse NaN as well, as the TypeScript's do.
    #[allow(clippy::neg_cmp_op_on_partial_ord)]
    pub fn new(c: Config) -> Result<LinkEnd, UsageError> {
        if !(c.late_ms >= 0.0 && c.late_ms < c.heartbeat_ms) {
            return Err(range("0 <= lateMs < heartbeatMs"));
        }
        let dead_ms = c.heartbeat_ms * c.missed_heartbeats - c.late_ms;
        if c.window < 1 || c.window >= 1 << 30 {
            return Err(range("window must be 1..2^30-1"));
        }
        if !(c.heartbeat_ms > 0.0) || !(dead_ms > c.heartbeat_ms) {
            return Err(range("heartbeatMs > 0 and missedHeartbeats > 1"));
        }
        if !(c.rto_ms > 0.0) || !(c.max_rto_ms >= c.rto_ms) {
            return Err(range("0 < rtoMs <= maxRtoMs"));
        }
        if !(c.ack_delay_ms >= 0.0) || !(c.ack_delay_ms < c.rto_ms) {
            return Err(range("0 <= ackDelayMs < rtoMs"));
        }
        if c.max_unit < MAX_PACKET_BYTES || c.max_unit > MAX_UNIT_BYTES {
            return Err(UsageError::Range(format!("maxUnit must be {MAX_PACKET_BYTES}..{MAX_UNIT_BYTES}")));
        }
        Ok(LinkEnd {
            c,
            dead_ms,
            paths: Vec::new(),
            peer_instance: None,
            peer_window: -1,
            tx_index: HashMap::new(),
            tx: Vec::new(),
            rr: 0,
            rx_index: HashMap::new(),
            rx: Vec::new(),
            ack_owed: OrderedSet::default(),
            ack_urgent: false,
            ack_due_at: f64::INFINITY,
            probe_owed: OrderedSet::default(),
            deliveries: VecDeque::new(),
            events: VecDeque::new(),
            counts: Stats::default(),
        })
    }

    fn path(&self, id: u32) -> Option<usize> {
        self.paths.iter().position(|p| p.id == id)
    }

    // ---- inputs -------------------------------------------------------------

    /// Queues one unit on `stream`; false without credit (not taken).
    pub fn submit(&mut self, stream: Stream, unit: &[u8], checked: bool) -> Result<bool, UsageError> {
        check_stream(stream)?;
        if !checked {
            if let Some(f) = unit_fault(unit) {
                return Err(UsageError::Frame(FrameError { code: FrameCode::Packet, message: format!("submit: {f}") }));
            }
        }
        if unit.len() > self.c.max_unit {
            return Err(UsageError::Frame(FrameError {
                code: FrameCode::Packet,
                message: format!("submit: a unit of {} bytes, more than this end's {}", unit.len(), self.c.max_unit),
            }));
        }
        let i = self.tx_of(stream);
        let t = &mut self.tx[i];
        if t.acked + t.buf.len() as i64 >= t.limit {
            if !t.stalled {
                t.stalled = true;
                t.probe_at = f64::NAN;
                let s = t.stream;
                self.events.push_back(LinkEvent::Stalled { stream: s });
            }
            return Ok(false);
        }
        t.buf.push_back(unit.to_vec());
        Ok(true)
    }

    /// The destination of `stream` took `n` more of what pollDeliver gave.
    pub fn consumed(&mut self, stream: Stream, n: i64) -> Result<(), UsageError> {
        let i = self.rx_index.get(&stream.key()).copied();
        match i {
            Some(i) if n >= 0 && self.rx[i].consumed + n <= self.rx[i].handed => {
                self.rx[i].consumed += n;
                self.grant(i);
                Ok(())
            }
            _ => Err(UsageError::Range(format!(
                "consumed({}->{}, {n}): more than was delivered",
                stream.source, stream.destination
            ))),
        }
    }

    pub fn link_up(&mut self, now: f64, path: u32) {
        let others = self.is_up();
        let fresh = |stats| Path {
            id: path,
            up: true,
            hello_seen: false,
            hello_confirmed: false,
            hello_due: now,
            last_rx: now,
            last_tx: f64::NEG_INFINITY,
            stats,
        };
        match self.path(path) {
            Some(i) => {
                let stats = std::mem::take(&mut self.paths[i].stats);
                self.paths[i] = fresh(stats);
            }
            None => self.paths.push(fresh(Stats::default())),
        }
        if !others {
            for i in 0..self.tx.len() {
                self.rewind(i, now);
            }
        }
        for i in 0..self.rx.len() {
            let k = self.rx[i].stream.key();
            self.owe(k, true);
        }
    }

    pub fn link_down(&mut self, path: u32) {
        let Some(i) = self.path(path) else { return };
        if !self.paths[i].up {
            return;
        }
        self.paths[i].up = false;
        self.failover();
    }

    /// One link message (a train) arrived on `path`.
    pub fn receive(&mut self, bytes: &[u8], now: f64, path: u32) {
        let Some(pi) = self.path(path) else { return };
        if !self.paths[pi].up {
            return;
        }
        let (frames, error) = decode_train(bytes);
        for f in &frames {
            self.counts.frames_received += 1;
            let p = &mut self.paths[pi];
            p.stats.frames_received += 1;
            p.last_rx = now;
            self.take(pi, f, now);
        }
        self.ack_due(now);
        if let Some(e) = error {
            self.counts.bad_frames += 1;
            self.counts.last_bad_frame = Some(e.message.clone());
            let p = &mut self.paths[pi];
            p.stats.bad_frames += 1;
            p.stats.last_bad_frame = Some(e.message);
        }
    }

    fn take(&mut self, pi: usize, f: &Frame<'_>, now: f64) {
        match *f {
            Frame::Hello { instance, window, seen, .. } => return self.on_hello(pi, instance, window, seen, now),
            Frame::Heartbeat => return,
            _ => {}
        }
        if !self.paths[pi].hello_seen {
            return self.reject(pi);
        }
        match *f {
            Frame::Data { source, destination, seq, unit, reverse } => {
                if let Some((ack, credit)) = reverse {
                    self.on_ack(pi, Stream { source: destination, destination: source }, ack, credit, now);
                }
                self.on_data(pi, Stream { source, destination }, seq, unit);
            }
            Frame::Probe { source, destination, .. } => {
                let s = Stream { source, destination };
                if self.rx_of(s).is_some() {
                    self.owe(s.key(), true);
                } else {
                    self.reject(pi);
                }
            }
            Frame::Ack { source, destination, ack, credit } => {
                self.on_ack(pi, Stream { source, destination }, ack, credit, now)
            }
            _ => {}
        }
    }

    pub fn handle_timeout(&mut self, now: f64) {
        let mut died = false;
        for p in &mut self.paths {
            if p.up && now - p.last_rx >= self.dead_ms {
                p.up = false;
                died = true;
                self.events.push_back(LinkEvent::Dead { path: p.id });
            }
        }
        if died {
            self.failover();
        }
        if !self.is_up() {
            return;
        }
        for i in 0..self.tx.len() {
            let probe = self.needs_probe(i);
            let max_rto = self.c.max_rto_ms;
            let t = &mut self.tx[i];
            if t.sent > t.acked {
                if now >= t.rto_at {
                    self.counts.retransmits += (t.sent - t.acked) as u64;
                    t.sent = t.acked;
                    t.rto = max_rto.min(t.rto * 2.0);
                    t.rto_at = now + t.rto;
                }
            } else if probe {
                if t.probe_at.is_nan() {
                    t.probe_at = now + t.rto;
                } else if now >= t.probe_at {
                    let k = t.stream.key();
                    t.rto = max_rto.min(t.rto * 2.0);
                    t.probe_at = now + t.rto;
                    self.probe_owed.insert(k);
                }
            }
        }
    }

    // ---- outputs ------------------------------------------------------------

    /// The next frame to send now on `path`, or None.
    pub fn poll_transmit(&mut self, now: f64, path: u32) -> Option<Vec<u8>> {
        let pi = self.path(path)?;
        if !self.paths[pi].up {
            return None;
        }
        let mut out = Vec::new();
        if !self.next_frame(pi, now, false, usize::MAX, &mut out) {
            return None;
        }
        self.paths[pi].last_tx = now;
        self.counts.frames_sent += 1;
        self.paths[pi].stats.frames_sent += 1;
        Some(out)
    }

    /// Every frame due on `path` that fits in `max_bytes`, as one train.
    pub fn poll_train(&mut self, now: f64, path: u32, max_bytes: usize) -> Result<Option<Vec<u8>>, UsageError> {
        let Some(pi) = self.path(path) else { return Ok(None) };
        if !self.paths[pi].up {
            return Ok(None);
        }
        if max_bytes < HEADER_BYTES + self.c.max_unit {
            return Err(UsageError::Range(format!("a train of at most {max_bytes} bytes cannot hold every frame")));
        }
        let mut out = Vec::new();
        let mut n = 0u64;
        while out.len() + HEADER_BYTES <= max_bytes {
            let room = max_bytes - out.len();
            if !self.next_frame(pi, now, n > 0, room, &mut out) {
                break;
            }
            self.paths[pi].last_tx = now;
            n += 1;
        }
        if n == 0 {
            return Ok(None);
        }
        self.counts.frames_sent += n;
        self.paths[pi].stats.frames_sent += n;
        Ok(Some(out))
    }

    /// When to call handle_timeout next; None while every path is down.
    pub fn poll_timeout(&mut self, now: f64) -> Option<f64> {
        let mut at = f64::INFINITY;
        let mut any = false;
        for p in &self.paths {
            if !p.up {
                continue;
            }
            any = true;
            at = at.min(p.last_rx + self.dead_ms).min(p.last_tx + self.c.heartbeat_ms).min(p.hello_due);
        }
        if !any {
            return None;
        }
        if self.is_up() {
            if self.probe_owed.len() > 0 || (self.ack_owed.len() > 0 && self.ack_urgent) {
                return Some(now);
            }
            if self.ack_owed.len() > 0 {
                at = at.min(self.ack_due(now));
            }
            for i in 0..self.tx.len() {
                if self.sendable(i) {
                    return Some(now);
                }
                let t = &self.tx[i];
                if t.sent > t.acked {
                    at = at.min(t.rto_at);
                } else if self.needs_probe(i) {
                    at = at.min(if t.probe_at.is_nan() { now } else { t.probe_at });
                }
            }
        }
        Some(now.max(at))
    }

    pub fn poll_deliver(&mut self) -> Option<Delivered> {
        let d = self.deliveries.pop_front()?;
        if let Some(&i) = self.rx_index.get(&d.stream.key()) {
            self.rx[i].handed += 1;
        }
        Some(d)
    }

    pub fn poll_event(&mut self) -> Option<LinkEvent> {
        self.events.pop_front()
    }

    pub fn is_up(&self) -> bool {
        self.paths.iter().any(|p| p.up && p.hello_seen)
    }

    pub fn path_up(&self, path: u32) -> bool {
        self.path(path).is_some_and(|i| self.paths[i].up && self.paths[i].hello_seen)
    }

    pub fn up_paths(&self) -> Vec<u32> {
        self.paths.iter().filter(|p| p.up).map(|p| p.id).collect()
    }

    pub fn drop_path(&mut self, path: u32) {
        if let Some(i) = self.path(path) {
            if !self.paths[i].up {
                self.paths.remove(i);
            }
        }
    }

    pub fn dead_after_ms(&self) -> f64 {
        self.dead_ms
    }

    pub fn heard_at(&self, path: u32) -> f64 {
        self.path(path).map_or(f64::NEG_INFINITY, |i| self.paths[i].last_rx)
    }

    pub fn peer(&self) -> Option<u32> {
        self.peer_instance
    }

    pub fn stats(&self) -> Stats {
        self.counts.clone()
    }

    pub fn path_stats(&self, path: u32) -> Stats {
        let p = self.path(path).map(|i| self.paths[i].stats.clone()).unwrap_or_default();
        Stats {
            frames_sent: p.frames_sent,
            frames_received: p.frames_received,
            bad_frames: p.bad_frames,
            rejected_frames: p.rejected_frames,
            last_bad_frame: p.last_bad_frame,
            ..self.counts.clone()
        }
    }

    /// Frames of `path` dropped as bad or refused: what path_stats counts
    /// as bad_frames + rejected_frames, without copying the stats.
    pub fn path_bad(&self, path: u32) -> u64 {
        self.path(path).map_or(0, |i| self.paths[i].stats.bad_frames + self.paths[i].stats.rejected_frames)
    }

    pub fn send_buffered(&self, stream: Stream) -> usize {
        self.tx_index.get(&stream.key()).map_or(0, |&i| self.tx[i].buf.len())
    }

    pub fn receive_buffered(&self, stream: Stream) -> i64 {
        self.rx_index.get(&stream.key()).map_or(0, |&i| {
            let r = &self.rx[i];
            r.held.len() as i64 + (r.expected - r.handed)
        })
    }

    pub fn credit(&self, stream: Stream) -> i64 {
        match self.tx_index.get(&stream.key()) {
            None => self.peer_window.max(0),
            Some(&i) => {
                let t = &self.tx[i];
                0.max(t.limit - t.acked - t.buf.len() as i64)
            }
        }
    }

    // ---- inside -------------------------------------------------------------

    fn tx_of(&mut self, stream: Stream) -> usize {
        let key = stream.key();
        if let Some(&i) = self.tx_index.get(&key) {
            return i;
        }
        self.tx.push(Tx {
            stream,
            acked: 0,
            buf: VecDeque::new(),
            sent: 0,
            limit: self.peer_window,
            stalled: false,
            rto: self.c.rto_ms,
            rto_at: f64::INFINITY,
            probe_at: f64::NAN,
        });
        self.tx_index.insert(key, self.tx.len() - 1);
        self.tx.len() - 1
    }

    fn rx_of(&mut self, stream: Stream) -> Option<usize> {
        let key = stream.key();
        if let Some(&i) = self.rx_index.get(&key) {
            return Some(i);
        }
        if self.rx.len() >= self.c.max_streams {
            return None;
        }
        let w = i64::from(self.c.window);
        self.rx.push(Rx { stream, expected: 0, held: HashMap::new(), handed: 0, consumed: 0, granted: w, told: w });
        self.rx_index.insert(key, self.rx.len() - 1);
        Some(self.rx.len() - 1)
    }

    fn reject(&mut self, pi: usize) {
        self.counts.rejected_frames += 1;
        self.paths[pi].stats.rejected_frames += 1;
    }

    fn failover(&mut self) {
        if !self.is_up() {
            return;
        }
        for t in &mut self.tx {
            if t.sent > t.acked {
                self.counts.retransmits += (t.sent - t.acked) as u64;
            }
            t.sent = t.acked;
        }
    }

    fn rewind(&mut self, i: usize, now: f64) {
        let t = &mut self.tx[i];
        t.sent = t.acked;
        t.rto = self.c.rto_ms;
        t.rto_at = now + t.rto;
    }

    fn grant(&mut self, i: usize) {
        let w = i64::from(self.c.window);
        let r = &mut self.rx[i];
        let g = r.consumed + w;
        if g > r.granted {
            r.granted = g;
        }
        let urgent = ((r.told - r.expected) as f64) < f64::from(self.c.window) / 2.0;
        let k = r.stream.key();
        self.owe(k, urgent);
    }

    fn set_credit(&mut self, i: usize, limit: i64) {
        let rto = self.c.rto_ms;
        let t = &mut self.tx[i];
        if limit > t.limit {
            t.limit = limit;
        }
        if t.stalled && t.acked + (t.buf.len() as i64) < t.limit {
            t.stalled = false;
            t.probe_at = f64::NAN;
            t.rto = rto;
            let s = t.stream;
            self.events.push_back(LinkEvent::Ready { stream: s });
        }
    }

    fn on_hello(&mut self, pi: usize, instance: u32, window: u32, seen: bool, now: f64) {
        if self.peer_instance.is_some_and(|p| p != instance) {
            self.restart(instance, window, now);
        }
        self.peer_instance = Some(instance);
        self.peer_window = i64::from(window);
        for i in 0..self.tx.len() {
            if self.tx[i].limit < 0 {
                self.set_credit(i, i64::from(window));
            }
        }
        let p = &mut self.paths[pi];
        if !p.hello_seen {
            p.hello_seen = true;
            let path = p.id;
            self.events.push_back(LinkEvent::Up { instance, path });
        }
        let p = &mut self.paths[pi];
        if seen {
            p.hello_confirmed = true;
            p.hello_due = f64::INFINITY;
        } else {
            p.hello_due = now;
        }
    }

    fn restart(&mut self, instance: u32, window: u32, now: f64) {
        let mut resent = 0;
        for i in 0..self.tx.len() {
            resent += self.tx[i].buf.len();
            self.tx[i].acked = 0;
            self.tx[i].limit = i64::from(window);
            self.rewind(i, now);
            self.set_credit(i, i64::from(window));
        }
        for i in 0..self.rx.len() {
            let r = &mut self.rx[i];
            let e = r.expected;
            r.expected = 0;
            r.handed -= e;
            r.consumed -= e;
            r.held.clear();
            r.granted = i64::from(self.c.window);
            r.told = 0;
            self.grant(i);
        }
        self.events.push_back(LinkEvent::Restarted { instance, resent });
    }

    fn on_data(&mut self, pi: usize, stream: Stream, seq_wire: u32, unit: &[u8]) {
        let Some(i) = self.rx_of(stream) else { return self.reject(pi) };
        let key = stream.key();
        let r = &self.rx[i];
        let seq = unwrap_seq(r.expected, seq_wire);
        if seq < r.expected || r.held.contains_key(&seq) {
            self.owe(key, true);
            self.counts.duplicates += 1;
            return;
        }
        if seq >= r.granted {
            self.owe(key, true);
            self.counts.out_of_window += 1;
            return;
        }
        self.owe(key, false);
        let r = &mut self.rx[i];
        if seq > r.expected {
            r.held.insert(seq, unit.to_vec());
            return;
        }
        let s = r.stream;
        self.deliveries.push_back(Delivered { stream: s, unit: unit.to_vec() });
        r.expected += 1;
        while let Some(u) = r.held.remove(&r.expected) {
            self.deliveries.push_back(Delivered { stream: s, unit: u });
            r.expected += 1;
        }
    }

    fn on_ack(&mut self, pi: usize, stream: Stream, ack_wire: u32, credit_wire: u32, now: f64) {
        let Some(&i) = self.tx_index.get(&stream.key()) else { return self.reject(pi) };
        let t = &self.tx[i];
        let ack = unwrap_seq(t.acked, ack_wire);
        let credit = unwrap_seq(ack, credit_wire);
        let next = t.acked + t.buf.len() as i64;
        if ack > next || credit < ack || credit - ack > self.peer_window {
            return self.reject(pi);
        }
        let rto = self.c.rto_ms;
        let t = &mut self.tx[i];
        if ack > t.acked {
            t.buf.drain(..(ack - t.acked) as usize);
            if t.sent < ack {
                t.sent = ack;
            }
            t.acked = ack;
            t.rto = rto;
            t.rto_at = now + t.rto;
        }
        self.set_credit(i, credit);
    }

    fn needs_probe(&self, i: usize) -> bool {
        let t = &self.tx[i];
        t.sent == t.acked && t.limit >= 0 && !self.sendable(i) && (t.stalled || !t.buf.is_empty())
    }

    fn sendable(&self, i: usize) -> bool {
        let t = &self.tx[i];
        t.sent < t.acked + t.buf.len() as i64 && t.sent < t.limit
    }

    fn ack_of(&mut self, ri: usize) -> (u32, u32) {
        let r = &mut self.rx[ri];
        r.told = r.granted;
        (wire(r.expected), wire(r.granted))
    }

    fn owe(&mut self, key: u64, urgent: bool) {
        if urgent || self.c.ack_delay_ms == 0.0 {
            self.ack_urgent = true;
        } else if self.ack_owed.len() == 0 || self.ack_due_at == f64::INFINITY {
            self.ack_due_at = f64::NAN;
        }
        self.ack_owed.insert(key);
    }

    fn ack_due(&mut self, now: f64) -> f64 {
        if self.ack_due_at.is_nan() {
            self.ack_due_at = now + self.c.ack_delay_ms;
        }
        self.ack_due_at
    }

    fn ack_sent(&mut self, key: u64) {
        self.ack_owed.remove(key);
        if self.ack_owed.len() == 0 {
            self.ack_urgent = false;
            self.ack_due_at = f64::INFINITY;
        }
    }

    /// Appends the next frame due on path `pi` to `out` (false: none).
    fn next_frame(&mut self, pi: usize, now: f64, riding: bool, room: usize, out: &mut Vec<u8>) -> bool {
        let hb = self.c.heartbeat_ms;
        let p = &mut self.paths[pi];
        if now >= p.hello_due {
            p.hello_due = if p.hello_confirmed { f64::INFINITY } else { now + hb };
            let seen = p.hello_seen;
            let f = Frame::Hello { instance: self.c.instance, window: self.c.window, seen, source: self.c.source };
            encode_into(&f, out);
            return true;
        }
        if p.hello_seen {
            let last_tx = p.last_tx;
            let n = self.tx.len();
            for k in 0..n {
                let i = (self.rr + k) % n;
                if !self.sendable(i) {
                    continue;
                }
                let t = &self.tx[i];
                if HEADER_BYTES + t.buf[(t.sent - t.acked) as usize].len() > room {
                    continue;
                }
                self.rr = (self.rr + k + 1) % n;
                let t = &mut self.tx[i];
                if t.sent == t.acked {
                    t.rto_at = now + t.rto;
                }
                let seq = t.sent;
                t.sent += 1;
                let stream = t.stream;
                let reverse_key = stream.reverse().key();
                let reverse = if self.ack_owed.contains(reverse_key) {
                    self.ack_sent(reverse_key);
                    let ri = self.rx_index[&reverse_key];
                    Some(self.ack_of(ri))
                } else {
                    None
                };
                let t = &self.tx[i];
                let f = Frame::Data {
                    source: stream.source,
                    destination: stream.destination,
                    seq: wire(seq),
                    unit: &t.buf[(seq - t.acked) as usize],
                    reverse,
                };
                encode_into(&f, out);
                return true;
            }
            if self.ack_owed.len() > 0 && (riding || self.ack_urgent || now >= self.ack_due(now) || now - last_tx >= hb)
            {
                if let Some(key) = self.ack_owed.first() {
                    self.ack_sent(key);
                    let ri = self.rx_index[&key];
                    let s = self.rx[ri].stream;
                    let (ack, credit) = self.ack_of(ri);
                    encode_into(&Frame::Ack { source: s.source, destination: s.destination, ack, credit }, out);
                    return true;
                }
            }
            if let Some(key) = self.probe_owed.first() {
                self.probe_owed.remove(key);
                let i = self.tx_index[&key];
                let t = &self.tx[i];
                let seq = wire(t.acked + t.buf.len() as i64);
                let s = t.stream;
                encode_into(&Frame::Probe { source: s.source, destination: s.destination, seq }, out);
                return true;
            }
        }
        if now - self.paths[pi].last_tx >= hb {
            encode_into(&Frame::Heartbeat, out);
            return true;
        }
        false
    }
}

fn check_stream(s: Stream) -> Result<(), UsageError> {
    for v in [s.source, s.destination] {
        if v >= GCID_LIMIT {
            return Err(UsageError::Frame(FrameError {
                code: FrameCode::Field,
                message: format!("a GCID is 28 bits, not {v}"),
            }));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::genz;

    fn packet(i: u16) -> Vec<u8> {
        let mut p = vec![0u8; 16];
        let len = 4u32;
        let d0 = ((len & 7) << 5) | ((len >> 3) << 12) | (genz::pcrc(0, len) << 26);
        p[..4].copy_from_slice(&d0.to_le_bytes());
        p[8..10].copy_from_slice(&i.to_le_bytes());
        genz::seal(&mut p).unwrap();
        p
    }

    const S: Stream = Stream { source: 0x1001, destination: 0x2001 };

    fn exchange(a: &mut LinkEnd, b: &mut LinkEnd, now: f64) {
        for _ in 0..100 {
            let mut moved = false;
            while let Some(f) = a.poll_train(now, 0, 65536).unwrap() {
                b.receive(&f, now, 0);
                moved = true;
            }
            while let Some(f) = b.poll_train(now, 0, 65536).unwrap() {
                a.receive(&f, now, 0);
                moved = true;
            }
            if !moved {
                return;
            }
        }
    }

    fn pair() -> (LinkEnd, LinkEnd) {
        let mut a = LinkEnd::new(Config { instance: 1, ..Config::default() }).unwrap();
        let mut b = LinkEnd::new(Config { instance: 2, ..Config::default() }).unwrap();
        a.link_up(0.0, 0);
        b.link_up(0.0, 0);
        exchange(&mut a, &mut b, 0.0);
        (a, b)
    }

    #[test]
    fn unwrap_seq_takes_the_nearest() {
        assert_eq!(unwrap_seq(0, 5), 5);
        assert_eq!(unwrap_seq(0, u32::MAX), -1);
        assert_eq!(unwrap_seq((1 << 32) - 2, 1), (1 << 32) + 1);
        assert_eq!(unwrap_seq(-1, 3), 3);
    }

    #[test]
    fn units_arrive_once_in_order_and_credit_holds_back_only_its_stream() {
        let (mut a, mut b) = pair();
        assert!(a.is_up() && b.is_up());
        for i in 0..64 {
            assert!(a.submit(S, &packet(i), false).unwrap());
        }
        assert!(!a.submit(S, &packet(64), false).unwrap(), "the window is 64");
        assert_eq!(a.poll_event(), Some(LinkEvent::Up { instance: 2, path: 0 }));
        assert_eq!(a.poll_event(), Some(LinkEvent::Stalled { stream: S }));
        let other = Stream { source: 0x1002, destination: 0x2001 };
        assert!(a.submit(other, &packet(0), false).unwrap(), "another stream goes on");
        exchange(&mut a, &mut b, 1.0);
        let mut got = Vec::new();
        while let Some(d) = b.poll_deliver() {
            if d.stream == S {
                got.push(u16::from_le_bytes([d.unit[8], d.unit[9]]));
            }
        }
        assert_eq!(got, (0..64).collect::<Vec<_>>());
        b.consumed(S, 64).unwrap();
        exchange(&mut a, &mut b, 2.0);
        assert_eq!(a.poll_event(), Some(LinkEvent::Ready { stream: S }));
        assert_eq!(a.send_buffered(S), 0);
        assert!(b.consumed(S, 1).is_err(), "more than was delivered");
    }

    #[test]
    fn a_silent_path_dies_after_three_heartbeats() {
        let (mut a, _b) = pair();
        while a.poll_event().is_some() {}
        a.handle_timeout(299.0);
        assert_eq!(a.poll_event(), None);
        a.handle_timeout(300.0);
        assert_eq!(a.poll_event(), Some(LinkEvent::Dead { path: 0 }));
        assert_eq!(a.poll_timeout(300.0), None);
    }
}
