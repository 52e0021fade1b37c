//! Doorbell round trip between two processes with famez-core's EventFd and
//! their own loop; one JSON line on stdout.
//!
//!   cargo run --release -p famez-core --example bench_doorbell_rtt -- \
//!       [--count 200000] [--batches 20] [--peers 2] [--warmup N] [--wait epoll|poll]
//!       [--busy-poll US] [--cpus A,B]
//!
//! The parent forks a child; each creates its own eventfd and sends it to the
//! other over a famez-core UnixStream socketpair (SCM_RIGHTS, as the ivshmem
//! protocol does). Each blocks in epoll (or poll) on its own eventfd, drains
//! it and signals the other's. `--peers K` (K >= 2) registers K - 2 idle
//! eventfds in each process's set, to model K peers connected; the scenario
//! is then `doorbell-rtt-peers-K`. `--busy-poll US` is famez Client's
//! busyPollUs: after a doorbell each side keeps reading its nonblocking
//! eventfd for up to US microseconds before it sleeps (the scenario gets
//! `-busy-poll`). `--cpus A,B` pins the parent to CPU A and the child to B.
//! Samples: microseconds per round trip, one per batch of count / batches
//! round trips.

mod common;

use std::os::fd::AsFd;

use common::*;
use famez_core::EventFd;

const USAGE: &str =
    "bench_doorbell_rtt [--count N] [--batches B] [--peers K] [--warmup N] [--wait epoll|poll] [--busy-poll US] [--cpus A,B]";

fn main() {
    let args = Args::parse(&["count", "batches", "peers", "warmup", "wait", "busy-poll", "cpus"], USAGE);
    let (per_batch, batches) = split(args.u64("count", 200_000), args.u64("batches", 20));
    let peers = args.u64("peers", 2);
    if peers < 2 {
        eprintln!("--peers: at least 2");
        std::process::exit(2);
    }
    // The C baseline's warm-up (bench/baseline/doorbell.c): a tenth of a
    // batch, plus one.
    let warmup = args.u64("warmup", per_batch / 10 + 1);
    let mode = WaitMode::parse(args.str("wait"));
    let total = warmup + per_batch * batches;
    let busy_us = args.u64("busy-poll", 0);
    let cpus = Cpus::parse(&args);
    let scenario = format!(
        "doorbell-rtt{}{}",
        if args.str("peers").is_some() { format!("-peers-{peers}") } else { String::new() },
        if busy_us > 0 { "-busy-poll" } else { "" }
    );

    main_with(|| {
        let (child, mut sock) = spawn(cpus, |mut sock| {
            // The child: answers every doorbell with one.
            let mine = EventFd::new().map_err(io_err("eventfd"))?;
            let idle = idle_eventfds(peers - 2)?;
            let theirs = EventFd::from_fd(
                expect(&mut sock, 1, "parent's eventfd")?.fd.ok_or("the parent's eventfd did not come")?,
            )
            .map_err(io_err("eventfd"))?;
            send(&sock, 2, Some(mine.as_fd()), "send eventfd")?;
            let fds: Vec<_> = std::iter::once(mine.as_fd()).chain(borrowed(&idle)).collect();
            let mut bell = Bell::new(Waiter::new(mode, &fds)?, busy_us);
            send(&sock, 3, None, "ready")?;
            let mut done = 0u64;
            while done < total {
                let n = bell.wait(&mine)?;
                for _ in 0..n {
                    theirs.signal(1).map_err(io_err("signal"))?;
                }
                bell.rang();
                done += n;
            }
            Ok(())
        })?;

        let mine = EventFd::new().map_err(io_err("eventfd"))?;
        let idle = idle_eventfds(peers - 2)?;
        send(&sock, 1, Some(mine.as_fd()), "send eventfd")?;
        let theirs =
            EventFd::from_fd(expect(&mut sock, 2, "child's eventfd")?.fd.ok_or("the child's eventfd did not come")?)
                .map_err(io_err("eventfd"))?;
        let fds: Vec<_> = std::iter::once(mine.as_fd()).chain(borrowed(&idle)).collect();
        let mut bell = Bell::new(Waiter::new(mode, &fds)?, busy_us);
        expect(&mut sock, 3, "child ready")?;

        let round = || -> Res<()> {
            theirs.signal(1).map_err(io_err("signal"))?;
            bell.rang();
            match bell.wait(&mine)? {
                1 => Ok(()),
                n => Err(format!("{n} doorbells for one round trip")),
            }
        };
        let samples = time_rounds(warmup, batches, per_batch, round)?;
        child.finish()?;
        print_json(&scenario, "us", &samples, 3);
        Ok(())
    });
}
