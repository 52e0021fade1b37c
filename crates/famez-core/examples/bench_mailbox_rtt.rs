//! FAME-Z mailbox round trip between two processes: a 64-byte request and
//! its answer through the slots, with EventFd doorbells; one JSON line on
//! stdout.
//!
//!   cargo run --release -p famez-core --example bench_mailbox_rtt -- \
//!       [--count 200000] [--batches 20] [--size 64] [--warmup N]
//!       [--busy-poll US] [--cpus A,B]
//!
//! The parent formats a mailbox for one client in a memfd (peer 1 and the
//! switch, 2) and forks; the memfd and the eventfds travel over a famez-core
//! UnixStream (SCM_RIGHTS). The parent (peer 1) posts a request from slot 1
//! to 2 and rings the child's eventfd; the child (peer 2) blocks in epoll,
//! drains, takes the request (freeing slot 1), posts the answer from slot 2
//! and rings back; the parent takes the answer and checks it. Samples:
//! microseconds per request and answer, one per batch of count / batches.
//! `--busy-poll US` (famez Client's busyPollUs: each side reads its
//! nonblocking eventfd for up to US microseconds after a doorbell before it
//! sleeps; the scenario is then `mailbox-rtt-busy-poll`) and `--cpus A,B`
//! (the parent on CPU A, the child on B) as in bench_doorbell_rtt.

mod common;

use std::os::fd::AsFd;

use common::*;
use famez_core::mailbox::MAX_PAYLOAD;
use famez_core::{EventFd, Mailbox, SharedMemory, ShmBacking};

const USAGE: &str =
    "bench_mailbox_rtt [--count N] [--batches B] [--size BYTES] [--warmup N] [--busy-poll US] [--cpus A,B]";

const CLIENT: u64 = 1;
const SERVER: u64 = 2;

fn main() {
    let args = Args::parse(&["count", "batches", "size", "warmup", "busy-poll", "cpus"], USAGE);
    let busy_us = args.u64("busy-poll", 0);
    let cpus = Cpus::parse(&args);
    let scenario = if busy_us > 0 { "mailbox-rtt-busy-poll" } else { "mailbox-rtt" };
    let (per_batch, batches) = split(args.u64("count", 200_000), args.u64("batches", 20));
    let size = args.u64("size", 64) as usize;
    if !(8..=MAX_PAYLOAD).contains(&size) {
        eprintln!("--size: 8 ..= {MAX_PAYLOAD}");
        std::process::exit(2);
    }
    let warmup = args.u64("warmup", (per_batch * batches / 10).clamp(100, 20_000));
    let total = warmup + per_batch * batches;

    main_with(|| {
        let shm = SharedMemory::create(&ShmBacking::Memfd("famez-bench-mailbox".into()), 4096, 0o600, None)
            .map_err(io_err("memfd"))?;
        let map = shm.map().map_err(io_err("mmap"))?;
        let mb = Mailbox::new(&map).map_err(err("mailbox"))?;
        mb.format(1).map_err(err("format"))?;
        let mb = mb.with_clients(1).map_err(err("mailbox"))?;

        let (child, mut sock) = spawn(cpus, |mut sock| {
            // The child: answers every request.
            let shm =
                SharedMemory::from_fd(expect(&mut sock, 1, "memfd")?.fd.ok_or("no memfd")?).map_err(io_err("memfd"))?;
            let theirs = EventFd::from_fd(expect(&mut sock, 2, "eventfd")?.fd.ok_or("no eventfd")?)
                .map_err(io_err("eventfd"))?;
            let mine = EventFd::new().map_err(io_err("eventfd"))?;
            send(&sock, 3, Some(mine.as_fd()), "send eventfd")?;
            // Its own mapping of the object.
            let map = shm.map().map_err(io_err("mmap"))?;
            let mb = Mailbox::new(&map).map_err(err("mailbox"))?;
            let n_clients = mb.globals().n_clients;
            let mb = mb.with_clients(n_clients).map_err(err("mailbox"))?;
            let mut bell = Bell::new(Waiter::new(WaitMode::Epoll, &[mine.as_fd()])?, busy_us);
            send(&sock, 4, None, "ready")?;
            let mut buf = [0u8; MAX_PAYLOAD];
            let mut done = 0u64;
            while done < total {
                bell.wait(&mine)?;
                if let Some(n) = mb.take_into(CLIENT, &mut buf).map_err(err("take"))? {
                    buf[8] = buf[8].wrapping_add(1); // the answer differs from the request
                    mb.post(SERVER, CLIENT, &buf[..n]).map_err(err("post"))?;
                    theirs.signal(1).map_err(io_err("signal"))?;
                    bell.rang();
                    done += 1;
                }
            }
            Ok(())
        })?;

        let mine = EventFd::new().map_err(io_err("eventfd"))?;
        send(&sock, 1, Some(shm.as_fd()), "send memfd")?;
        send(&sock, 2, Some(mine.as_fd()), "send eventfd")?;
        let theirs = EventFd::from_fd(expect(&mut sock, 3, "child's eventfd")?.fd.ok_or("no eventfd")?)
            .map_err(io_err("eventfd"))?;
        let mut bell = Bell::new(Waiter::new(WaitMode::Epoll, &[mine.as_fd()])?, busy_us);
        expect(&mut sock, 4, "child ready")?;

        let mut req = vec![0xa5u8; size];
        let mut ans = [0u8; MAX_PAYLOAD];
        let mut seq = 0u64;
        let round = || -> Res<()> {
            req[..8].copy_from_slice(&seq.to_le_bytes());
            mb.post(CLIENT, SERVER, &req).map_err(err("post"))?;
            theirs.signal(1).map_err(io_err("signal"))?;
            bell.rang();
            loop {
                bell.wait(&mine)?;
                if let Some(n) = mb.take_into(SERVER, &mut ans).map_err(err("take"))? {
                    if n != size || ans[..8] != req[..8] || ans[8] != req[8].wrapping_add(1) || ans[9..n] != req[9..] {
                        return Err(format!("answer {seq} does not match its request"));
                    }
                    seq += 1;
                    return Ok(());
                }
            }
        };
        let samples = time_rounds(warmup, batches, per_batch, round)?;
        child.finish()?;
        print_json(scenario, "us", &samples, 3);
        Ok(())
    });
}
