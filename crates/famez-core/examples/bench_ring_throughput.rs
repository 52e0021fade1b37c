//! Ring channel throughput between two processes over a memfd mapped in
//! each, with famez-core's RingLayout/Ring and EventFd doorbells; one JSON
//! line on stdout.
//!
//!   cargo run --release -p famez-core --example bench_ring_throughput -- \
//!       [--size 64] [--count 2000000] [--batches 20] [--batch 64 or 64 KiB]
//!       [--capacity BYTES] [--warmup N] [--spin-us 50] [--cpus A,B]
//!
//! The parent formats a FAME-Z mailbox for one client, publishes a ring
//! layout in it (capacity max(256 KiB, 4 x size) rounded up to a power of
//! two unless --capacity says otherwise) and forks. The memfd and the
//! consumer's eventfd go to the child over a famez-core UnixStream (SCM_RIGHTS);
//! the child maps the object, finds the layout from the mailbox and produces
//! (peer 1 -> switch 2) with push_batch of --batch messages, ringing the
//! consumer's doorbell only when a push found the ring empty; on a full ring
//! it spins (and yields). The parent consumes with read_batch (in place,
//! checking each message's sequence number where it lies) and, after
//! seeing the ring empty, spins up to --spin-us before it blocks in epoll on
//! its eventfd. Every message carries a sequence number the consumer checks.
//! Samples: messages per second, one per batch of count / batches messages,
//! timed at the consumer. `--cpus A,B` pins the parent (the consumer) to
//! CPU A and the child (the producer) to B.

mod common;

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use common::*;
use famez_core::ring::PushError;
use famez_core::{EventFd, Mailbox, RingLayout, SharedMemory, ShmBacking};

const USAGE: &str =
    "bench_ring_throughput [--size S] [--count N] [--batches B] [--batch M] [--capacity C] [--warmup N] [--spin-us U] [--cpus A,B]";

const PRODUCER: u64 = 1;
const CONSUMER: u64 = 2; // the switch's ID with one client

fn main() {
    let args = Args::parse(&["size", "count", "batches", "batch", "capacity", "warmup", "spin-us", "cpus"], USAGE);
    let cpus = Cpus::parse(&args);
    let size = args.u64("size", 64) as usize;
    if size < 8 {
        eprintln!("--size: at least 8 (the sequence number)");
        std::process::exit(2);
    }
    let default_count = if size <= 1024 { 2_000_000 } else { (2_000_000_000 / size as u64).max(1000) };
    let (per_batch, batches) = split(args.u64("count", default_count), args.u64("batches", 20));
    // Batches of at most 64 messages or 64 KiB: a batch is published at
    // once, and the consumer should not wait for a large one to end.
    let push_batch = args.u64("batch", (65536 / size as u64).clamp(1, 64)).max(1) as usize;
    let capacity = args.u64("capacity", (256u64 << 10).max(4 * size as u64).next_power_of_two());
    let warmup = args.u64("warmup", (per_batch * batches / 10).clamp(1000, 200_000));
    let spin = Duration::from_micros(args.u64("spin-us", 50));
    let total = warmup + per_batch * batches;
    let scenario = format!("ring-throughput-{size}");

    main_with(|| {
        let layout = RingLayout::with_default_base(1, capacity).map_err(err("ring layout"))?;
        if size > layout.max_message() {
            return Err(format!(
                "--size {size} is over the ring's limit {} (capacity {capacity})",
                layout.max_message()
            ));
        }
        let shm = SharedMemory::create(
            &ShmBacking::Memfd("famez-bench-ring".into()),
            layout.end().next_power_of_two(),
            0o600,
            None,
        )
        .map_err(io_err("memfd"))?;
        {
            let map = shm.map().map_err(io_err("mmap"))?;
            let mb = Mailbox::new(&map).map_err(err("mailbox"))?;
            mb.format(1).map_err(err("format"))?;
            layout.reset_all(&map).map_err(err("reset"))?;
            layout.publish(&mb).map_err(err("publish"))?;
        }

        let (child, mut sock) = spawn(cpus, |mut sock| {
            // The child: the producer.
            let shm =
                SharedMemory::from_fd(expect(&mut sock, 1, "memfd")?.fd.ok_or("no memfd")?).map_err(io_err("memfd"))?;
            let doorbell = EventFd::from_fd(expect(&mut sock, 2, "eventfd")?.fd.ok_or("no eventfd")?)
                .map_err(io_err("eventfd"))?;
            let map = shm.map().map_err(io_err("mmap"))?;
            let mb = Mailbox::new(&map).map_err(err("mailbox"))?;
            let layout = RingLayout::from_mailbox(&mb).map_err(err("layout"))?.ok_or("no rings in the mailbox")?;
            let ring = layout.ring(&map, PRODUCER, CONSUMER).map_err(err("ring"))?;
            let mut bufs = vec![vec![0x5au8; size]; push_batch];
            send(&sock, 3, None, "ready")?;
            expect(&mut sock, 4, "go")?;
            let mut seq = 0u64;
            let mut last_progress = Instant::now();
            let mut spins = 0u32;
            while seq < total {
                let n = (total - seq).min(push_batch as u64) as usize;
                for (i, b) in bufs[..n].iter_mut().enumerate() {
                    b[..8].copy_from_slice(&(seq + i as u64).to_le_bytes());
                }
                let mut off = 0;
                while off < n {
                    let got = match ring.push_batch(&bufs[off..n]) {
                        Ok(got) => got,
                        Err(PushError::Full) => famez_core::ring::BatchPush { pushed: 0, was_empty: false },
                        Err(e) => return Err(format!("push: {e}")),
                    };
                    if got.was_empty {
                        doorbell.signal(1).map_err(io_err("signal"))?;
                    }
                    if got.pushed > 0 {
                        off += got.pushed;
                        spins = 0;
                        continue;
                    }
                    // Full: spin a little, then yield; never past 30 s.
                    spins += 1;
                    if spins == 1 {
                        last_progress = Instant::now();
                    } else if spins.is_multiple_of(1024) && last_progress.elapsed() > TIMEOUT {
                        return Err("the ring stayed full for 30 s".into());
                    }
                    if spins < 64 {
                        std::hint::spin_loop();
                    } else {
                        std::thread::yield_now();
                    }
                }
                seq += n as u64;
            }
            Ok(())
        })?;

        let doorbell = EventFd::new().map_err(io_err("eventfd"))?;
        send(&sock, 1, Some(shm.as_fd()), "send memfd")?;
        send(&sock, 2, Some(doorbell.as_fd()), "send eventfd")?;
        let map = shm.map().map_err(io_err("mmap"))?;
        let mb = Mailbox::new(&map).map_err(err("mailbox"))?;
        if RingLayout::from_mailbox(&mb).map_err(err("layout"))? != Some(layout) {
            return Err("the mailbox does not describe the rings".into());
        }
        let ring = layout.ring(&map, PRODUCER, CONSUMER).map_err(err("ring"))?;
        let mut waiter = Waiter::new(WaitMode::Epoll, &[doorbell.as_fd()])?;
        expect(&mut sock, 3, "child ready")?;
        send(&sock, 4, None, "go")?;

        let mut got = 0u64;
        let mut bad: Option<String> = None;
        let mut samples = Vec::with_capacity(batches as usize);
        let mut next_mark = warmup;
        let mut mark_time = Instant::now();
        let mut idle_since: Option<Instant> = None;
        let mut batch_no = 0u64;
        while got < total {
            let want = (next_mark - got).min(256) as usize;
            let n = ring
                .read_batch(want, |m| {
                    // In place: the sequence number is read where it lies.
                    let seq = m.read_u64_le(0).unwrap_or(u64::MAX);
                    if bad.is_none() && (m.len() != size || seq != got) {
                        bad = Some(format!("message {got}: {} bytes, sequence {seq}", m.len()));
                    }
                    got += 1;
                })
                .map_err(err("pop"))?;
            if let Some(b) = bad.take() {
                return Err(b);
            }
            if got == next_mark {
                let now = Instant::now();
                if batch_no > 0 {
                    samples.push(per_batch as f64 / now.duration_since(mark_time).as_secs_f64());
                }
                mark_time = now;
                batch_no += 1;
                next_mark += per_batch;
            }
            if n < want {
                // Seen empty: spin a while, then sleep until the doorbell.
                let now = Instant::now();
                match idle_since {
                    None => idle_since = Some(now),
                    Some(t) if now.duration_since(t) >= spin => {
                        waiter.wait()?;
                        doorbell.drain().map_err(io_err("drain"))?;
                        idle_since = None;
                    }
                    Some(_) => std::hint::spin_loop(),
                }
            } else {
                idle_since = None;
            }
        }
        child.finish()?;
        print_json(&scenario, "msg/s", &samples, 0);
        Ok(())
    });
}
