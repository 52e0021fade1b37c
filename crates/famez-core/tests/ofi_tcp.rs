//! Links over libfabric's real tcp provider on 127.0.0.1: both ends in one
//! process, driven only by their wait fds (poll(2) says which is readable,
//! and only that one is read), as Node's loop drives them.
//!
//! Skipped with the reason where libfabric is not installed (the release's
//! artifact tests run there, and test the missing-library path); where
//! `libfabric.so.1` is installed (.ci/run installs it) famez failing to load
//! it fails the tests instead of skipping them.

#![allow(clippy::needless_range_loop)] // two sides, indexed by who sends

use std::os::fd::BorrowedFd;
use std::time::{Duration, Instant};

use famez_core::ofi::{self, Completion, Endpoint, LinkEvent, Listener, Options, RemoteWindow, State};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

/// Whether the library famez would load is on this machine: the file
/// FAMEZ_LIBFABRIC names, else libfabric.so.1 where the loader looks.
fn installed() -> bool {
    if let Some(named) = std::env::var_os(ofi::LIBRARY_ENV).filter(|v| !v.is_empty()) {
        let named = std::path::PathBuf::from(named);
        return named.components().count() > 1 && named.exists();
    }
    let listed = std::process::Command::new("ldconfig")
        .arg("-p")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("libfabric.so.1 "));
    listed
        || ["/usr/lib", "/usr/lib64", "/usr/local/lib", "/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu"]
            .iter()
            .any(|d| std::path::Path::new(d).join("libfabric.so.1").exists())
}

fn libfabric() -> bool {
    match ofi::available(None) {
        Ok(_) => true,
        Err(e) if !installed() => {
            eprintln!("skipped: {e}");
            false
        }
        Err(e) => panic!("libfabric.so.1 is installed, yet: {e}"),
    }
}

#[derive(Default)]
struct Side {
    ep: Option<Endpoint>,
    messages: Vec<Vec<u8>>,
    events: Vec<LinkEvent>,
    done: Vec<Completion>,
    cq_wakes: usize,
}

impl Side {
    fn ep(&mut self) -> &mut Endpoint {
        self.ep.as_mut().expect("an endpoint")
    }

    fn absorb(&mut self, got: Vec<Completion>) {
        for c in got {
            match c {
                Completion::Message(m) => self.messages.push(m),
                other => self.done.push(other),
            }
        }
    }
}

/// A listener and the endpoints on both sides: [0] connects, [1] is accepted.
struct Net {
    listener: Option<Listener>,
    sides: [Side; 2],
}

impl Net {
    fn new(opts: &Options) -> Net {
        let listener = Listener::bind(opts, "127.0.0.1:0").expect("listen");
        Self::with(listener, opts)
    }

    fn with(listener: Listener, opts: &Options) -> Net {
        let port = listener.local_addr().unwrap().port();
        assert_ne!(port, 0);
        let ep = Endpoint::connect(opts, &format!("127.0.0.1:{port}")).expect("connect");
        let mut net = Net { listener: Some(listener), sides: [Side::default(), Side::default()] };
        net.sides[0].ep = Some(ep);
        net.run_until("connected", |n| {
            n.sides.iter().all(|s| s.ep.as_ref().is_some_and(|e| e.state() == State::Connected))
        });
        net
    }

    /// One wait on every fd, then the work of the readable ones only.
    fn turn(&mut self, timeout: Duration) {
        let mut fds: Vec<(i32, usize, u8)> = Vec::new(); // fd, who (2 = listener), 0 = EQ / 1 = CQ
        if let Some(l) = &self.listener {
            fds.push((l.eq_fd(), 2, 0));
        }
        for (i, s) in self.sides.iter().enumerate() {
            if let Some(ep) = &s.ep {
                fds.push((ep.eq_fd(), i, 0));
                fds.push((ep.cq_fd(), i, 1));
            }
        }
        // SAFETY: the fds belong to the live listener and endpoints above.
        let mut pfds: Vec<PollFd> =
            fds.iter().map(|f| PollFd::new(unsafe { BorrowedFd::borrow_raw(f.0) }, PollFlags::POLLIN)).collect();
        let n = poll(&mut pfds, PollTimeout::try_from(timeout.as_millis() as i32).unwrap()).expect("poll");
        if n == 0 {
            return;
        }
        let ready: Vec<bool> = pfds.iter().map(|p| p.revents().is_some_and(|r| !r.is_empty())).collect();
        for (k, &(_, who, kind)) in fds.iter().enumerate() {
            if !ready[k] {
                continue;
            }
            if who == 2 {
                while let Some(ep) = self.listener.as_mut().unwrap().accept().expect("accept") {
                    assert!(self.sides[1].ep.is_none(), "one connection expected");
                    self.sides[1].ep = Some(ep);
                    // A new endpoint's fds are watched from the next turn;
                    // read once now, as a new watch would.
                    let s = &mut self.sides[1];
                    let mut ev = Vec::new();
                    s.ep().events(&mut ev).unwrap();
                    s.events.extend(ev);
                }
                continue;
            }
            let s = &mut self.sides[who];
            if kind == 0 {
                let mut ev = Vec::new();
                s.ep().events(&mut ev).expect("events");
                s.events.extend(ev);
            } else {
                s.cq_wakes += 1;
                let mut got = Vec::new();
                s.ep().progress(&mut got).expect("progress");
                s.absorb(got);
            }
        }
    }

    /// How many fds are readable within `timeout` (0 when idle: no wait fd
    /// stays readable once its queue is drained, so nothing spins).
    fn readable(&self, timeout: Duration) -> usize {
        let mut fds = Vec::new();
        if let Some(l) = &self.listener {
            fds.push(l.eq_fd());
        }
        for s in &self.sides {
            if let Some(ep) = &s.ep {
                fds.extend([ep.eq_fd(), ep.cq_fd()]);
            }
        }
        // SAFETY: as in turn.
        let mut pfds: Vec<PollFd> =
            fds.iter().map(|&f| PollFd::new(unsafe { BorrowedFd::borrow_raw(f) }, PollFlags::POLLIN)).collect();
        poll(&mut pfds, PollTimeout::try_from(timeout.as_millis() as i32).unwrap()).expect("poll") as usize
    }

    fn run_until(&mut self, what: &str, done: impl Fn(&Net) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !done(self) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            self.turn(Duration::from_millis(200));
        }
    }
}

fn pattern(len: usize, seed: u32) -> Vec<u8> {
    (0..len).map(|i| (i as u32).wrapping_mul(2654435761).wrapping_add(seed).to_le_bytes()[1]).collect()
}

#[test]
fn messages_of_64_bytes_and_64_kib_both_ways_in_order() {
    if !libfabric() {
        return;
    }
    let opts = Options::default();
    let mut net = Net::new(&opts);
    assert_eq!(net.sides[0].ep().granted().provider, "tcp");
    let count = 300;
    let mut sent: [Vec<Vec<u8>>; 2] = Default::default();
    for n in 0..count {
        for who in 0..2 {
            let len = if n % 3 == 2 { 64 * 1024 } else { 64 };
            let mut m = pattern(len, (n * 2 + who) as u32);
            m[..4].copy_from_slice(&(n as u32).to_le_bytes());
            net.sides[who].ep().send(&m).unwrap();
            sent[who].push(m);
        }
    }
    net.run_until("every message", |n| n.sides.iter().all(|s| s.messages.len() == count));
    for who in 0..2 {
        assert!(net.sides[1 - who].messages == sent[who], "side {who}'s messages arrive complete and in order");
        assert!(net.sides[who].cq_wakes > 0, "the CQ fd woke the loop");
    }
    // Nothing left over, nothing in flight, and once drained no fd stays
    // readable (a level-triggered loop would spin on one that did).
    net.run_until("the sends' completions", |n| n.sides.iter().all(|s| s.ep.as_ref().unwrap().in_flight() == 0));
    for who in 0..2 {
        assert_eq!(net.sides[who].ep().queued(), 0);
        assert!(net.sides[who].done.is_empty(), "no failed completions");
    }
    assert_eq!(net.readable(Duration::from_millis(300)), 0, "an idle link's fds are quiet");
    let threads = std::fs::read_dir("/proc/self/task").unwrap().count();
    eprintln!("threads in the test process: {threads}; granted: {:?}", net.sides[0].ep().granted());
    let too_long = vec![0u8; opts.max_message + 1];
    let e = net.sides[0].ep().send(&too_long).unwrap_err();
    assert_eq!(e.code(), "EMSGSIZE");
}

/// Two connected sides whose provider grants RMA, or None (skipped: no
/// libfabric, or no FI_RMA).
fn rma_net() -> Option<Net> {
    if !libfabric() {
        return None;
    }
    let mut net = Net::new(&Options::default());
    if !net.sides[1].ep().granted().rma {
        eprintln!("skipped: this provider grants no FI_RMA");
        return None;
    }
    Some(net)
}

#[test]
fn rma_write_then_read_of_a_registered_window() {
    let Some(mut net) = rma_net() else {
        return;
    };
    let window = net.sides[1].ep().window(1 << 20).unwrap();
    // The window's coordinates go to the peer in a message, as a link would send them.
    let r = window.remote();
    let mut desc = Vec::new();
    for v in [r.addr, r.key, r.size] {
        desc.extend_from_slice(&v.to_le_bytes());
    }
    net.sides[1].ep().send(&desc).unwrap();
    net.run_until("the window's coordinates", |n| n.sides[0].messages.len() == 1);
    let m = &net.sides[0].messages[0];
    let word = |i: usize| u64::from_le_bytes(m[i * 8..i * 8 + 8].try_into().unwrap());
    let remote = RemoteWindow { addr: word(0), key: word(1), size: word(2) };
    assert_eq!(remote, r);

    let data = pattern(64 * 1024, 7);
    let w = net.sides[0].ep().write(&remote, 4096, &data).unwrap();
    net.run_until("the write", |n| n.sides[0].done.iter().any(|c| matches!(c, Completion::Written { id } if *id == w)));
    // FI_ORDER_RAW: a read posted after the write sees it; read it back two ways.
    let rd = net.sides[0].ep().read(&remote, 4096, data.len()).unwrap();
    let small = net.sides[0].ep().read(&remote, 4096 + 100, 64).unwrap();
    net.run_until("the reads", |n| {
        n.sides[0].done.iter().filter(|c| matches!(c, Completion::Read { id, .. } if *id == rd || *id == small)).count()
            == 2
    });
    for c in &net.sides[0].done {
        match c {
            Completion::Read { id, data: got } if *id == rd => assert!(got == &data),
            Completion::Read { id, data: got } if *id == small => assert_eq!(got[..], data[100..164]),
            Completion::Written { .. } | Completion::Read { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(window.read(4096, data.len()) == data, "the target's window holds the written bytes");
    assert!(window.read(0, 4096).iter().all(|&b| b == 0), "and nothing before them");
    // The owner writes locally; the peer reads it.
    window.write(0, b"famez");
    let rd = net.sides[0].ep().read(&remote, 0, 5).unwrap();
    net.run_until("the read", |n| {
        n.sides[0].done.iter().any(|c| matches!(c, Completion::Read { id, .. } if *id == rd))
    });
    assert!(net.sides[0]
        .done
        .iter()
        .any(|c| matches!(c, Completion::Read { id, data } if *id == rd && data == b"famez")));

    let e = net.sides[0].ep().read(&remote, remote.size - 10, 11).unwrap_err();
    assert_eq!(e.code(), "ERANGE");
}

#[test]
fn a_window_over_a_file_is_the_file_the_peer_reads_and_writes_by_rma() {
    let Some(mut net) = rma_net() else {
        return;
    };
    let path = std::env::temp_dir().join(format!("famez-ofi-fam-{}", std::process::id()));
    let file = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&path).unwrap();
    file.set_len(1 << 16).unwrap();
    let _ = std::fs::remove_file(&path);
    use std::os::fd::AsFd;
    let window = net.sides[1].ep().window_over_file(file.as_fd(), 1 << 16, Some(0xfa3e_0001)).unwrap();
    let remote = window.remote();
    assert_eq!(remote.size, 1 << 16);
    if !net.sides[1].ep().granted().prov_key {
        assert_eq!(remote.key, 0xfa3e_0001, "the key asked for");
    }
    // The descriptor may go: the window has its own mapping.
    let probe = file.try_clone().unwrap();
    drop(file);
    let data = pattern(8192, 3);
    let w = net.sides[0].ep().write(&remote, 1000, &data).unwrap();
    net.run_until("the write", |n| n.sides[0].done.iter().any(|c| matches!(c, Completion::Written { id } if *id == w)));
    use std::os::unix::fs::FileExt;
    let mut got = vec![0u8; data.len()];
    probe.read_exact_at(&mut got, 1000).unwrap();
    assert!(got == data, "the peer's RMA write is in the file");
    probe.write_all_at(b"from the file", 60_000).unwrap();
    let rd = net.sides[0].ep().read(&remote, 60_000, 13).unwrap();
    net.run_until("the read", |n| {
        n.sides[0].done.iter().any(|c| matches!(c, Completion::Read { id, .. } if *id == rd))
    });
    assert!(net.sides[0]
        .done
        .iter()
        .any(|c| matches!(c, Completion::Read { id, data } if *id == rd && data == b"from the file")));
    assert_eq!(net.sides[0].ep().write(&remote, (1 << 16) - 4, &[0; 8]).unwrap_err().code(), "ERANGE");
    drop(window);
    match net.sides[1].ep().window_over_file(probe.as_fd(), 0, None) {
        Err(e) => assert!(e.to_string().contains("at least one byte"), "{e}"),
        Ok(_) => panic!("a window of no bytes over a file"),
    }
}

#[test]
fn close_tells_the_peer_and_a_link_reopens_on_the_same_port() {
    if !libfabric() {
        return;
    }
    let opts = Options::default();
    let mut net = Net::new(&opts);
    let addr = net.listener.as_ref().unwrap().local_addr().unwrap();
    net.sides[0].ep().close();
    assert_eq!(net.sides[0].ep().state(), State::Closed);
    assert_eq!(net.sides[0].ep().send(b"x").unwrap_err().code(), "EBADF");
    net.run_until("the peer's shutdown", |n| n.sides[1].ep.as_ref().unwrap().state() == State::Down);
    assert!(net.sides[1].events.iter().any(|e| matches!(e, LinkEvent::Shutdown)));
    assert_eq!(net.sides[1].ep().send(b"x").unwrap_err().code(), "ENOTCONN");
    // Everything closed (in order, by drop), then the same port again.
    drop(net);
    let listener = Listener::bind(&opts, &addr.to_string()).expect("the same port again");
    let mut net = Net::with(listener, &opts);
    net.sides[0].ep().send(b"again").unwrap();
    net.run_until("a message", |n| n.sides[1].messages.len() == 1);
    assert_eq!(net.sides[1].messages[0], b"again");
}

#[test]
fn many_links_open_and_close_without_leaking_fds() {
    if !libfabric() {
        return;
    }
    let opts = Options { depth: 4, max_message: 4096, ..Options::default() };
    let fds = || std::fs::read_dir("/proc/self/fd").unwrap().count();
    // Warm up: libfabric's providers open fds of their own once.
    drop(Net::new(&opts));
    let before = fds();
    for _ in 0..20 {
        let mut net = Net::new(&opts);
        net.sides[0].ep().send(b"ping").unwrap();
        net.run_until("a ping", |n| n.sides[1].messages.len() == 1);
    }
    // Other tests run in parallel threads of this process and hold fds of
    // their own: allow them a margin, never 20 links' worth.
    assert!(fds() <= before + 30, "{} fds before, {} after 20 links", before, fds());
}

#[test]
fn a_connect_to_a_port_nobody_listens_on_fails_with_econnrefused() {
    if !libfabric() {
        return;
    }
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let opts = Options::default();
    let ep = Endpoint::connect(&opts, &format!("127.0.0.1:{port}"));
    let mut ep = match ep {
        // Some providers refuse at once.
        Err(e) => {
            assert_eq!(e.code(), "ECONNREFUSED", "{e}");
            return;
        }
        Ok(ep) => ep,
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut events = Vec::new();
    while ep.state() == State::Connecting {
        assert!(Instant::now() < deadline, "no connection error within 10 s");
        // SAFETY: the EQ fd of the live endpoint.
        let mut p = [PollFd::new(unsafe { BorrowedFd::borrow_raw(ep.eq_fd()) }, PollFlags::POLLIN)];
        poll(&mut p, PollTimeout::from(200u16)).unwrap();
        ep.events(&mut events).unwrap();
    }
    assert_eq!(ep.state(), State::Down);
    let e = events.iter().find_map(|e| if let LinkEvent::Error(e) = e { Some(e) } else { None }).expect("an error");
    assert_eq!(e.code(), "ECONNREFUSED", "{e}");
    eprintln!("refused: {e}");
    assert!(!e.to_string().contains('\n'));
    assert_eq!(ep.send(b"x").unwrap_err().code(), "ENOTCONN");
}

#[test]
fn an_unknown_provider_or_a_missing_library_is_one_clear_error() {
    let e =
        Endpoint::connect(&Options { library: Some("/nonexistent.so".into()), ..Options::default() }, "127.0.0.1:1")
            .err()
            .expect("no library");
    assert_eq!(e.code(), "ELIBACC");
    assert!(e.to_string().starts_with("libfabric is not installed: apt-get install libfabric1"), "{e}");
    if !libfabric() {
        return;
    }
    let e = Listener::bind(&Options { provider: "nosuchprovider".into(), ..Options::default() }, "127.0.0.1:0")
        .err()
        .expect("no provider");
    assert_eq!(e.code(), "ENODATA", "{e}");
    // shm has no connected endpoints (FI_EP_RDM only): the same clear error.
    let e = Listener::bind(&Options { provider: "shm".into(), ..Options::default() }, "127.0.0.1:0")
        .err()
        .expect("no FI_EP_MSG in shm");
    assert_eq!(e.code(), "ENODATA", "{e}");
    eprintln!("shm: {e}");
    // A library that is not libfabric.
    let e = ofi::available(Some("libc.so.6")).unwrap_err();
    assert_eq!(e.code(), "ELIBBAD", "{e}");
    eprintln!("libc: {e}");
}

#[test]
fn operations_beyond_the_depth_wait_in_the_queue_and_all_complete() {
    if !libfabric() {
        return;
    }
    // Four slots: 200 RMA writes, 200 reads and 500 sends of 16 KiB must queue.
    let opts = Options { depth: 4, max_message: 16 * 1024, ..Options::default() };
    let mut net = Net::new(&opts);
    let window = net.sides[1].ep().window(200 * 64).unwrap();
    let remote = window.remote();
    let mut writes = Vec::new();
    for i in 0..200u64 {
        writes.push(net.sides[0].ep().write(&remote, i * 64, &pattern(64, i as u32)).unwrap());
    }
    let mut reads = Vec::new();
    for i in 0..200u64 {
        reads.push(net.sides[0].ep().read(&remote, i * 64, 64).unwrap());
    }
    for n in 0..500u32 {
        let mut m = pattern(16 * 1024, n);
        m[..4].copy_from_slice(&n.to_le_bytes());
        net.sides[0].ep().send(&m).unwrap();
    }
    assert!(net.sides[0].ep().queued() > 0, "more than the depth waits in the queue");
    assert!(net.sides[0].ep().in_flight() <= 8, "at most depth sends and depth RMA in flight");
    net.run_until("everything", |n| n.sides[0].done.len() == 400 && n.sides[1].messages.len() == 500);
    for (k, m) in net.sides[1].messages.iter().enumerate() {
        assert_eq!(u32::from_le_bytes(m[..4].try_into().unwrap()), k as u32, "in order");
    }
    let mut read_back = 0;
    for c in &net.sides[0].done {
        match c {
            Completion::Written { id } => assert!(writes.contains(id)),
            Completion::Read { id, data } => {
                let i = reads.iter().position(|r| r == id).expect("a read of ours");
                assert!(data == &pattern(64, i as u32), "read {i} sees write {i} (FI_ORDER_RAW)");
                read_back += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(read_back, 200);
    assert_eq!(net.sides[0].ep().queued(), 0);
}

#[test]
fn a_message_longer_than_the_receivers_max_is_reported_never_delivered_and_ends_the_link() {
    if !libfabric() {
        return;
    }
    let small = Options { max_message: 4096, ..Options::default() };
    let listener = Listener::bind(&small, "127.0.0.1:0").expect("listen");
    let port = listener.local_addr().unwrap().port();
    let mut net = Net { listener: Some(listener), sides: [Side::default(), Side::default()] };
    net.sides[0].ep = Some(Endpoint::connect(&Options::default(), &format!("127.0.0.1:{port}")).unwrap());
    net.run_until("connected", |n| {
        n.sides.iter().all(|s| s.ep.as_ref().is_some_and(|e| e.state() == State::Connected))
    });
    net.sides[0].ep().send(&[7u8; 8192]).unwrap();
    net.run_until("the failure", |n| !n.sides[1].done.is_empty());
    assert!(net.sides[1].messages.is_empty(), "never delivered, not even truncated");
    match &net.sides[1].done[..] {
        [Completion::ReceiveFailed(e)] => assert_eq!(e.code(), "FI_ETRUNC", "{e}"),
        other => panic!("expected one FI_ETRUNC, got {other:?}"),
    }
    // The tcp provider then ends the connection: both sides see it go down.
    net.run_until("the link's end", |n| n.sides.iter().all(|s| s.ep.as_ref().unwrap().state() == State::Down));
    assert!(net.sides[1].messages.is_empty());
}

#[test]
fn messages_sent_while_connecting_go_out_once_connected_in_order() {
    if !libfabric() {
        return;
    }
    let opts = Options::default();
    let listener = Listener::bind(&opts, "127.0.0.1:0").expect("listen");
    let port = listener.local_addr().unwrap().port();
    let mut ep = Endpoint::connect(&opts, &format!("127.0.0.1:{port}")).unwrap();
    assert_eq!(ep.state(), State::Connecting);
    for m in [&b"one"[..], b"two", b"three"] {
        ep.send(m).unwrap();
    }
    assert_eq!(ep.queued(), 3, "held until connected");
    let mut net = Net { listener: Some(listener), sides: [Side::default(), Side::default()] };
    net.sides[0].ep = Some(ep);
    net.run_until("three messages", |n| n.sides[1].messages.len() == 3);
    assert_eq!(net.sides[1].messages, [&b"one"[..], b"two", b"three"]);
}
