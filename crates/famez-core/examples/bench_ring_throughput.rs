//! Ring channel throughput between two processes over a memfd mapped in
//! each, with famez-core's RingLayout/Ring and EventFd doorbells; one JSON
//! line on stdout.
//!
//!   cargo run --release -p famez-core --example bench_ring_throughput -- \
//!       [--size 64] [--count 2000000] [--batches 20] [--batch-bytes BYTES]
//!       [--capacity BYTES] [--warmup N] [--spin-us 50] [--stats 1] [--cpus A,B]
//!       [--read-max 256] [--pause 1] [--full-spins 64]
//!
//! The parent formats a FAME-Z mailbox for one client, publishes a ring
//! layout in it (capacity max(256 KiB, 4 x size) rounded up to a power of
//! two unless --capacity says otherwise) and forks. The memfd and the
//! consumer's eventfd go to the child over a famez-core UnixStream (SCM_RIGHTS);
//! the child maps the object, finds the layout from the mailbox and produces
//! (peer 1 -> switch 2) with one `Writer`: per message it reserves the
//! record, stamps the sequence number and copies the rest of the payload in
//! from one source buffer, and publishes every --batch-bytes (a 16th of the
//! ring, 64 KiB to 256 KiB), ringing
//! the consumer's doorbell only when a publish found the ring empty; on a
//! full ring it spins (and yields). The parent consumes with a `Reader`: it copies
//! each message out into one buffer and checks its length and sequence
//! number there (the C baseline's copy out), and, after seeing the ring
//! empty, spins up to --spin-us before it settles (gives the ring back, full
//! barrier, looks again) and blocks in epoll on its eventfd. While it
//! spins, the reader holds its last record, so the producer does not find
//! the ring empty and rings no doorbell nobody waits for.
//! The first --warmup messages (10 % of the count, 1000 to 200,000) are not
//! timed, as in the C baseline. Samples: messages per second, one per batch
//! of count / batches messages, timed at the consumer. `--stats 1` prints
//! the doorbells, full rings and sleeps to stderr. `--cpus A,B` pins the
//! parent (the consumer) to CPU A and the child (the producer) to B. Knobs
//! for tuning (the defaults measured best): --read-max, the records a read
//! takes at most (it publishes its tail after them); --pause, spin hints
//! between the consumer's polls of an empty ring; --full-spins, the
//! producer's spins on a full ring before it yields instead.

mod common;

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use common::*;
use famez_core::ring::PushError;
use famez_core::{EventFd, Mailbox, RingLayout, SharedMemory, ShmBacking};

const USAGE: &str = "bench_ring_throughput [--size S] [--count N] [--batches B] [--batch-bytes BYTES] [--capacity C] [--warmup N] [--spin-us U] [--stats 1] [--read-max R] [--pause P] [--full-spins F] [--cpus A,B]";

/// Notes the first message that is not what was sent (out of the hot loop).
#[cold]
fn mismatch(bad: &mut Option<String>, got: u64, len: usize, seq: u64) {
    bad.get_or_insert_with(|| format!("message {got}: {len} bytes, sequence {seq}"));
}

const PRODUCER: u64 = 1;
const CONSUMER: u64 = 2; // the switch's ID with one client

fn main() {
    let args = Args::parse(
        &[
            "size",
            "count",
            "batches",
            "batch-bytes",
            "capacity",
            "warmup",
            "spin-us",
            "stats",
            "pause",
            "read-max",
            "full-spins",
            "cpus",
        ],
        USAGE,
    );
    let cpus = Cpus::parse(&args);
    let size = args.u64("size", 64) as usize;
    if size < 8 {
        eprintln!("--size: at least 8 (the sequence number)");
        std::process::exit(2);
    }
    let default_count = if size <= 1024 { 2_000_000 } else { (2_000_000_000 / size as u64).max(1000) };
    let (per_batch, batches) = split(args.u64("count", default_count), args.u64("batches", 20));
    // A publish every 1/16 of the ring, 64 KiB to 256 KiB (at least one
    // message): the consumer works on one batch while the next is
    // written, and the barrier and doorbell decision are paid once a
    // batch. (The bench's 4 MiB rings: 256 KiB, which measured faster than
    // 64 KiB at 64-byte messages, 0.98 of C against 0.94; at 256 B to
    // 4 KiB the two were within the runs' noise; docs/performance.md.)
    let capacity = args.u64("capacity", (256u64 << 10).max(4 * size as u64).next_power_of_two());
    let batch_bytes = args.u64("batch-bytes", (capacity / 16).clamp(64 << 10, 256 << 10)).max(1);
    let warmup = args.u64("warmup", (per_batch * batches / 10).clamp(1000, 200_000));
    let spin = Duration::from_micros(args.u64("spin-us", 50));
    let stats = args.u64("stats", 0) != 0;
    let pause = args.u64("pause", 1);
    let read_max = args.u64("read-max", 256).max(1);
    let full_spins = args.u64("full-spins", 64) as u32;
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
            let src = vec![0x5au8; size];
            send(&sock, 3, None, "ready")?;
            expect(&mut sock, 4, "go")?;
            let (mut bells, mut fulls) = (0u64, 0u64);
            let mut seq = 0u64;
            let mut last_progress = Instant::now();
            let mut spins = 0u32;
            let mut w = ring.writer().map_err(err("push"))?;
            // Messages a batch: enough records to reach --batch-bytes.
            let per_publish = batch_bytes.div_ceil(famez_core::ring::record_size(size)).max(1);
            let payload = &src[8..];
            while seq < total {
                let end = total.min(seq + per_publish);
                while seq < end {
                    // The sequence number by value: a closure holding a
                    // reference to `seq` would keep it in memory.
                    let s = seq;
                    let stamped = w.push_with(size, |rec| {
                        rec.write_u64_le(0, s);
                        rec.copy_from(8, payload);
                    });
                    match stamped {
                        Ok(()) => seq += 1,
                        Err(PushError::Full) => break,
                        Err(e) => return Err(format!("push: {e}")),
                    }
                }
                let got = w.publish();
                if got.was_empty {
                    bells += 1;
                    doorbell.signal(1).map_err(io_err("signal"))?;
                }
                if got.pushed > 0 {
                    spins = 0;
                    continue;
                }
                // Full: spin a little, then yield; never past 30 s.
                fulls += 1;
                spins += 1;
                if spins == 1 {
                    last_progress = Instant::now();
                } else if spins.is_multiple_of(1024) && last_progress.elapsed() > TIMEOUT {
                    return Err("the ring stayed full for 30 s".into());
                }
                if spins < full_spins {
                    std::hint::spin_loop();
                } else {
                    std::thread::yield_now();
                }
            }
            if stats {
                eprintln!("producer: {seq} messages, {bells} doorbells, {fulls} times full");
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

        let mut out = vec![0u8; size];
        let mut got = 0u64;
        let mut bad: Option<String> = None;
        let mut samples = Vec::with_capacity(batches as usize);
        let mut next_mark = warmup;
        let mut mark_time = Instant::now();
        let mut reader = ring.reader();
        let (mut empty_polls, mut idle_since) = (0u32, None::<Instant>);
        let (mut sleeps, mut settles, mut dry) = (0u64, 0u64, 0u64);
        let mut batch_no = 0u64;
        while got < total {
            let want = (next_mark - got).min(read_max) as usize;
            let n = reader
                .read_batch(want, |m| {
                    // Copied out, as the C baseline does, and checked there.
                    m.copy_to(&mut out);
                    let seq = u64::from_le_bytes(out[..8].try_into().expect("8 bytes"));
                    if m.len() != size || seq != got {
                        mismatch(&mut bad, got, m.len(), seq);
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
            if n > 0 {
                empty_polls = 0;
                idle_since = None;
                continue;
            }
            // Nothing new: spin a while (looking at the clock every 64
            // polls), then settle and sleep until the doorbell.
            empty_polls += 1;
            dry += 1;
            for _ in 0..pause {
                std::hint::spin_loop();
            }
            if !empty_polls.is_multiple_of(64) {
                continue;
            }
            let now = Instant::now();
            let since = *idle_since.get_or_insert(now);
            if now.duration_since(since) < spin {
                continue;
            }
            settles += 1;
            if reader.settle() {
                sleeps += 1;
                waiter.wait()?;
                doorbell.drain().map_err(io_err("drain"))?;
            }
            empty_polls = 0;
            idle_since = None;
        }
        drop(reader);
        if stats {
            eprintln!("consumer: {got} messages, {dry} empty polls, {settles} settles, {sleeps} sleeps");
        }
        child.finish()?;
        print_json(&scenario, "msg/s", &samples, 0);
        Ok(())
    });
}
