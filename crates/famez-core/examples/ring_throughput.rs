//! Ring channel throughput, one process, a producer thread and a consumer
//! thread over a memfd mapping; informational, not a test.
//!
//!   cargo run --release -p famez-core --example ring_throughput [MESSAGES]
//!
//! For 64-byte and 4 KiB messages, single push/pop and batches of 64: the
//! messages per second and bytes per second. Neither side sleeps (a full or
//! empty ring makes it spin with a yield), so this is the ring's own cost,
//! without doorbells.

use std::time::Instant;

use famez_core::ring::PushError;
use famez_core::{RingLayout, SharedMemory, ShmBacking};

fn run(size: usize, batch: usize, messages: usize, capacity: u64) -> f64 {
    let layout = RingLayout::with_default_base(1, capacity).unwrap();
    let shm =
        SharedMemory::create(&ShmBacking::Memfd("ring-bench".into()), layout.end().next_power_of_two(), 0o600, None)
            .unwrap();
    let map = shm.map().unwrap();
    layout.reset_all(&map).unwrap();
    let msg = vec![0x5au8; size];
    let start = Instant::now();
    std::thread::scope(|s| {
        s.spawn(|| {
            let ring = layout.ring(&map, 1, 2).unwrap();
            let msgs = vec![msg.as_slice(); batch];
            let mut sent = 0;
            while sent < messages {
                if batch == 1 {
                    match ring.push(&msg) {
                        Ok(_) => sent += 1,
                        Err(PushError::Full) => std::thread::yield_now(),
                        Err(e) => panic!("{e}"),
                    }
                } else {
                    let n = (messages - sent).min(batch);
                    let got = ring.push_batch(&msgs[..n]).unwrap();
                    sent += got.pushed;
                    if got.pushed == 0 {
                        std::thread::yield_now();
                    }
                }
            }
        });
        let ring = layout.ring(&map, 1, 2).unwrap();
        let mut buf = vec![0u8; ring.max_message()];
        let mut got = 0;
        let mut bytes = 0usize;
        while got < messages {
            if batch == 1 {
                match ring.pop(&mut buf).unwrap() {
                    Some(n) => {
                        bytes += n;
                        got += 1;
                    }
                    None => std::thread::yield_now(),
                }
            } else {
                let n = ring.pop_batch(batch, |m| bytes += m.len()).unwrap();
                got += n;
                if n == 0 {
                    std::thread::yield_now();
                }
            }
        }
        assert_eq!(bytes, messages * size);
    });
    messages as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let messages: usize = std::env::args().nth(1).map(|s| s.parse().unwrap()).unwrap_or(2_000_000);
    let capacity = 256 * 1024;
    println!("ring capacity {capacity} bytes, {messages} messages per run");
    for size in [64usize, 4096] {
        for batch in [1usize, 64] {
            let n = if size > 1024 { messages / 4 } else { messages };
            let rate = run(size, batch, n, capacity);
            println!(
                "{size:>5} B  batch {batch:>2}: {:>12.0} messages/s  {:>8.1} MB/s",
                rate,
                rate * size as f64 / 1e6
            );
        }
    }
}
