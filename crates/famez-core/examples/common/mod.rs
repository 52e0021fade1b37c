//! Shared pieces of the two-process benchmark examples (bench_*.rs):
//! argument parsing, pinning to CPUs (`--cpus A,B`), forking a child that
//! never outlives the parent and never waits more than 30 s, an epoll/poll
//! waiter with optional busy polling and the JSON line.
//!
//! This is a directory module (examples/common/mod.rs) so that cargo does
//! not take it for an example of its own.
#![allow(dead_code)]

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

use famez_core::EventFd;
use famez_core::UnixStream;
use nix::errno::Errno;
use nix::sched::{sched_setaffinity, CpuSet};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, getpid, getppid, ForkResult, Pid};

/// No wait in either process lasts longer than this.
pub const TIMEOUT_MS: u16 = 30_000;
pub const TIMEOUT: Duration = Duration::from_millis(TIMEOUT_MS as u64);

pub type Res<T> = Result<T, String>;

pub fn err<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> String + '_ {
    move |e| format!("{what}: {e}")
}

// ---- arguments ----

/// `--name value` pairs; every name must be one the benchmark knows.
pub struct Args {
    pairs: Vec<(String, String)>,
}

impl Args {
    pub fn parse(known: &[&str], usage: &str) -> Args {
        let mut pairs = Vec::new();
        let mut it = std::env::args().skip(1);
        while let Some(a) = it.next() {
            if a == "--help" || a == "-h" {
                eprintln!("{usage}");
                std::process::exit(0);
            }
            let (name, value) = match a.split_once('=') {
                Some((n, v)) => (n.to_string(), Some(v.to_string())),
                None => (a.clone(), None),
            };
            let Some(key) = name.strip_prefix("--").filter(|k| known.contains(k)) else {
                eprintln!("unknown argument {a}\n{usage}");
                std::process::exit(2);
            };
            let value = match value.or_else(|| it.next()) {
                Some(v) => v,
                None => {
                    eprintln!("{name} needs a value\n{usage}");
                    std::process::exit(2);
                }
            };
            pairs.push((key.to_string(), value));
        }
        Args { pairs }
    }

    pub fn str(&self, name: &str) -> Option<&str> {
        self.pairs.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    pub fn u64(&self, name: &str, default: u64) -> u64 {
        match self.str(name) {
            None => default,
            Some(v) => parse_num(v).unwrap_or_else(|| {
                eprintln!("--{name}: not a number: {v}");
                std::process::exit(2);
            }),
        }
    }
}

/// 20000, 20_000, 20k, 2m, 64Ki, 256KiB...
fn parse_num(v: &str) -> Option<u64> {
    let v = v.replace('_', "");
    let lower = v.to_ascii_lowercase();
    let (digits, mult) =
        [("kib", 1u64 << 10), ("mib", 1 << 20), ("ki", 1 << 10), ("mi", 1 << 20), ("k", 1000), ("m", 1_000_000)]
            .iter()
            .find_map(|(s, m)| lower.strip_suffix(s).map(|d| (d.to_string(), *m)))
            .unwrap_or((lower.clone(), 1));
    digits.parse::<u64>().ok()?.checked_mul(mult)
}

// ---- CPUs ----

/// `--cpus A,B`: the parent runs on CPU A, the forked child on CPU B
/// (sched_setaffinity; A == B puts both on one CPU). Without it neither is
/// pinned.
#[derive(Clone, Copy, Debug)]
pub struct Cpus(Option<(usize, usize)>);

impl Cpus {
    pub fn parse(args: &Args) -> Cpus {
        let Some(v) = args.str("cpus") else { return Cpus(None) };
        let parsed = v.split_once(',').and_then(|(a, b)| Some((a.trim().parse().ok()?, b.trim().parse().ok()?)));
        match parsed {
            Some(ab) => Cpus(Some(ab)),
            None => {
                eprintln!("--cpus: A,B (two CPU numbers), not {v}");
                std::process::exit(2);
            }
        }
    }

    fn parent(&self) -> Res<()> {
        self.0.map_or(Ok(()), |(a, _)| pin(a))
    }

    fn child(&self) -> Res<()> {
        self.0.map_or(Ok(()), |(_, b)| pin(b))
    }
}

/// Pins the calling process (its one thread) to `cpu`.
pub fn pin(cpu: usize) -> Res<()> {
    let mut set = CpuSet::new();
    set.set(cpu).map_err(err("CPU number"))?;
    sched_setaffinity(Pid::from_raw(0), &set).map_err(|e| format!("sched_setaffinity(CPU {cpu}): {e}"))
}

/// Splits `count` operations into `batches` equal batches (at least one
/// operation each): (per_batch, batches).
pub fn split(count: u64, batches: u64) -> (u64, u64) {
    let batches = batches.max(1);
    ((count / batches).max(1), batches)
}

// ---- the child process ----

/// The forked child, killed (if still there) and reaped when dropped.
pub struct Child {
    pid: Pid,
    reaped: bool,
}

/// Forks; the child runs `body` with its end of a socketpair and exits (0
/// on Ok, 1 with the message on stderr on Err). The child gets SIGKILL when
/// the parent dies (PR_SET_PDEATHSIG), so it never outlives it. With
/// `--cpus A,B` the parent pins itself to A before the fork and the child
/// itself to B after it.
///
/// Call this before creating threads (these benchmarks have none).
pub fn spawn<F: FnOnce(UnixStream) -> Res<()>>(cpus: Cpus, body: F) -> Res<(Child, UnixStream)> {
    let (ours, theirs) = UnixStream::pair().map_err(err("socketpair"))?;
    cpus.parent()?;
    let parent = getpid();
    // SAFETY: the process is single-threaded here, so the child may run
    // arbitrary code after fork.
    match unsafe { fork() }.map_err(err("fork"))? {
        ForkResult::Child => {
            drop(ours);
            let code = match nix::sys::prctl::set_pdeathsig(Signal::SIGKILL) {
                Err(e) => {
                    eprintln!("child: prctl(PR_SET_PDEATHSIG): {e}");
                    1
                }
                // The parent may have died before prctl: then we are orphaned.
                Ok(()) if getppid() != parent => 1,
                Ok(()) => match cpus.child().and_then(|()| body(theirs)) {
                    Ok(()) => 0,
                    Err(e) => {
                        eprintln!("child: {e}");
                        1
                    }
                },
            };
            std::process::exit(code);
        }
        ForkResult::Parent { child } => {
            drop(theirs);
            Ok((Child { pid: child, reaped: false }, ours))
        }
    }
}

impl Child {
    /// Waits (at most 30 s) for the child to exit and checks it succeeded.
    pub fn finish(mut self) -> Res<()> {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            match waitpid(self.pid, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => {
                    if Instant::now() > deadline {
                        return Err("the child did not exit within 30 s".into());
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
                Ok(WaitStatus::Exited(_, code)) => {
                    self.reaped = true;
                    return if code == 0 { Ok(()) } else { Err(format!("the child exited with {code}")) };
                }
                Ok(WaitStatus::Signaled(_, sig, _)) => {
                    self.reaped = true;
                    return Err(format!("the child was killed by {sig:?}"));
                }
                Ok(_) => continue,
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    self.reaped = true;
                    return Err(format!("waitpid: {e}"));
                }
            }
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if !self.reaped {
            let _ = kill(self.pid, Signal::SIGKILL);
            let _ = waitpid(self.pid, None);
        }
    }
}

/// Receives one socket message (value, optional fd), waiting at most 30 s.
pub fn recv(sock: &mut UnixStream, what: &str) -> Res<famez_core::socket::Message> {
    sock.recv_timeout(TIMEOUT_MS as i32).map_err(err(what))
}

/// Receives a message that must carry `value`.
pub fn expect(sock: &mut UnixStream, value: i64, what: &str) -> Res<famez_core::socket::Message> {
    let m = recv(sock, what)?;
    if m.value != value {
        return Err(format!("{what}: expected {value}, got {}", m.value));
    }
    Ok(m)
}

pub fn send(sock: &UnixStream, value: i64, fd: Option<BorrowedFd<'_>>, what: &str) -> Res<()> {
    sock.send(value, fd).map_err(err(what))
}

// ---- waiting for doorbells ----

/// How a process blocks for its doorbell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitMode {
    Epoll,
    Poll,
}

impl WaitMode {
    pub fn parse(s: Option<&str>) -> WaitMode {
        match s {
            None | Some("epoll") => WaitMode::Epoll,
            Some("poll") => WaitMode::Poll,
            Some(o) => {
                eprintln!("--wait: epoll or poll, not {o}");
                std::process::exit(2);
            }
        }
    }
}

/// Blocks until one of a set of fds (the process's own eventfd first, then
/// idle ones that model other peers) is readable, for at most 30 s.
pub enum Waiter<'a> {
    Epoll { epoll: Epoll, events: Vec<EpollEvent> },
    Poll { fds: Vec<nix::poll::PollFd<'a>> },
}

impl<'a> Waiter<'a> {
    pub fn new(mode: WaitMode, fds: &[BorrowedFd<'a>]) -> Res<Waiter<'a>> {
        match mode {
            WaitMode::Epoll => {
                let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(err("epoll_create"))?;
                for (i, fd) in fds.iter().enumerate() {
                    epoll.add(fd, EpollEvent::new(EpollFlags::EPOLLIN, i as u64)).map_err(err("epoll_ctl"))?;
                }
                Ok(Waiter::Epoll { epoll, events: vec![EpollEvent::empty(); fds.len().max(1)] })
            }
            WaitMode::Poll => Ok(Waiter::Poll {
                fds: fds.iter().map(|fd| nix::poll::PollFd::new(*fd, nix::poll::PollFlags::POLLIN)).collect(),
            }),
        }
    }

    /// Waits until something is readable; an error after 30 s of silence.
    pub fn wait(&mut self) -> Res<()> {
        loop {
            let r = match self {
                Waiter::Epoll { epoll, events } => epoll.wait(events, TIMEOUT_MS),
                Waiter::Poll { fds } => nix::poll::poll(fds, TIMEOUT_MS).map(|n| n as usize),
            };
            match r {
                Ok(0) => return Err("no doorbell for 30 s".into()),
                Ok(_) => return Ok(()),
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(format!("wait: {e}")),
            }
        }
    }
}

/// A process's own doorbell: waits for it (a [`Waiter`]) and drains it,
/// busy polling first when a window is set (famez Client's `busyPollUs`):
/// after this side rang or was rung it keeps reading its nonblocking
/// eventfd until the window has passed, then sleeps in the waiter.
pub struct Bell<'a> {
    waiter: Waiter<'a>,
    window: Duration,
    last: Instant,
}

impl<'a> Bell<'a> {
    pub fn new(waiter: Waiter<'a>, busy_poll_us: u64) -> Bell<'a> {
        Bell { waiter, window: Duration::from_micros(busy_poll_us), last: Instant::now() }
    }

    /// This side just rang another: the busy-poll window starts again.
    pub fn rang(&mut self) {
        if !self.window.is_zero() {
            self.last = Instant::now();
        }
    }

    /// Waits until `mine` has been rung; the count drained (at least 1).
    pub fn wait(&mut self, mine: &EventFd) -> Res<u64> {
        if !self.window.is_zero() {
            let until = self.last + self.window;
            loop {
                let n = mine.drain().map_err(io_err("drain"))?;
                if n > 0 {
                    self.last = Instant::now();
                    return Ok(n);
                }
                if Instant::now() >= until {
                    break;
                }
            }
        }
        loop {
            self.waiter.wait()?;
            let n = mine.drain().map_err(io_err("drain"))?;
            if n > 0 {
                self.rang();
                return Ok(n);
            }
        }
    }
}

/// Idle eventfds, to model other peers connected (registered, never rung).
pub fn idle_eventfds(n: u64) -> Res<Vec<famez_core::EventFd>> {
    (0..n).map(|_| famez_core::EventFd::new().map_err(err("eventfd"))).collect()
}

pub fn borrowed<'a, T: AsFd>(v: &'a [T]) -> impl Iterator<Item = BorrowedFd<'a>> {
    v.iter().map(|f| f.as_fd())
}

// ---- output ----

/// The one line on stdout.
/// Runs `warmup` untimed rounds, then `batches` timed batches of
/// `per_batch` rounds; each sample is microseconds per round.
pub fn time_rounds(warmup: u64, batches: u64, per_batch: u64, mut round: impl FnMut() -> Res<()>) -> Res<Vec<f64>> {
    for _ in 0..warmup {
        round()?;
    }
    let mut samples = Vec::with_capacity(batches as usize);
    for _ in 0..batches {
        let t = Instant::now();
        for _ in 0..per_batch {
            round()?;
        }
        samples.push(t.elapsed().as_secs_f64() * 1e6 / per_batch as f64);
    }
    Ok(samples)
}

pub fn print_json(scenario: &str, unit: &str, samples: &[f64], decimals: usize) {
    let nums: Vec<String> =
        samples.iter().map(|s| if s.is_finite() { format!("{s:.decimals$}") } else { "null".into() }).collect();
    println!(
        "{{\"scenario\": \"{scenario}\", \"impl\": \"rust\", \"unit\": \"{unit}\", \"samples\": [{}]}}",
        nums.join(", ")
    );
}

/// Runs the parent's side; on error prints it and exits 1 (the Child guard
/// inside has killed the child by then).
pub fn main_with(f: impl FnOnce() -> Res<()>) {
    if let Err(e) = f() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

pub fn io_err(what: &str) -> impl FnOnce(io::Error) -> String + '_ {
    err(what)
}
