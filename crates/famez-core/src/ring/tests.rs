//! The ring's unit tests (the cross-process ones are in tests/).

use super::*;
use std::ptr::NonNull;
use std::sync::atomic::Ordering;

use crate::mailbox::Mailbox;
use crate::shm::{Mapping, SharedMemory, ShmBacking};

fn memfd(size: u64) -> (SharedMemory, Mapping) {
    let shm = SharedMemory::create(&ShmBacking::Memfd("ring-test".into()), size, 0o600, None).unwrap();
    let map = shm.map().unwrap();
    (shm, map)
}

/// One ring of `cap` bytes at offset 0 of its own mapping.
fn lone(cap: u64) -> (SharedMemory, Mapping) {
    memfd((RING_HEADER + cap).next_power_of_two().max(4096))
}

fn view(map: &Mapping, cap: u64) -> Ring<'_> {
    // SAFETY: the mapping holds RING_HEADER + cap bytes and is aligned.
    unsafe { Ring::from_raw(NonNull::new(map.as_ptr()).unwrap(), cap) }
}

fn raw(map: &Mapping, off: u64) -> u64 {
    // SAFETY: tests read inside the mapping while nothing writes.
    u64::from_le(unsafe { map.as_ptr().add(off as usize).cast::<u64>().read() })
}

fn set_raw(map: &Mapping, off: u64, v: u64) {
    // SAFETY: as above, writing.
    unsafe { map.as_ptr().add(off as usize).cast::<u64>().write(v.to_le()) }
}

#[test]
fn empty_ring_pops_nothing() {
    let (_s, map) = lone(256);
    let r = view(&map, 256);
    let mut buf = [0u8; 200];
    assert_eq!(r.pop(&mut buf).unwrap(), None);
    assert_eq!(r.pop_vec().unwrap(), None);
    assert_eq!(r.pop_batch(10, |_| panic!()).unwrap(), 0);
    assert!(r.is_empty());
}

#[test]
fn read_batch_reads_in_place_across_the_wrap() {
    let (_s, map) = lone(1024);
    let r = view(&map, 1024);
    let mut sent = 0u64;
    let mut got = 0u64;
    for round in 0..200u64 {
        let len = 8 + (round * 37 % 300) as usize;
        let mut m = vec![(round & 0xff) as u8; len];
        m[..8].copy_from_slice(&sent.to_le_bytes());
        if r.push(&m).is_ok() {
            sent += 1;
        }
        if round % 3 == 0 {
            r.read_batch(usize::MAX, |rec| {
                assert_eq!(rec.read_u64_le(0), Some(got));
                assert_eq!(rec.read_u64_le(rec.len() - 7), None);
                let mut first = [0u8; 4];
                assert_eq!(rec.copy_to(&mut first), 4);
                assert_eq!(rec.to_vec()[..8], got.to_le_bytes());
                assert!(!rec.is_empty());
                got += 1;
            })
            .unwrap();
        }
    }
    r.read_batch(usize::MAX, |_| got += 1).unwrap();
    assert_eq!(got, sent);
    assert!(r.is_empty());
    assert!(raw(&map, HEAD_OFFSET) > 1024 * 10, "wrapped many times");
}

#[test]
fn doorbell_only_on_empty_to_non_empty() {
    let (_s, map) = lone(1024);
    let r = view(&map, 1024);
    assert!(r.push(b"a").unwrap());
    assert!(!r.push(b"bb").unwrap());
    assert!(!r.push(b"").unwrap());
    assert_eq!(r.pop_vec().unwrap().unwrap(), b"a");
    assert!(!r.push(b"ccc").unwrap(), "still not empty");
    let mut got = vec![];
    assert_eq!(r.pop_batch(usize::MAX, |m| got.push(m.to_vec())).unwrap(), 3);
    assert_eq!(got, vec![b"bb".to_vec(), vec![], b"ccc".to_vec()]);
    assert!(r.push(b"d").unwrap(), "empty again");
}

#[test]
fn records_are_length_prefixed_and_8_aligned() {
    let (_s, map) = lone(256);
    let r = view(&map, 256);
    r.push(b"hello").unwrap();
    r.push(&[7u8; 8]).unwrap();
    assert_eq!(raw(&map, HEAD_OFFSET), 16 + 16);
    assert_eq!(raw(&map, RING_HEADER), 5);
    // SAFETY: inside the mapping.
    assert_eq!(unsafe { std::slice::from_raw_parts(map.as_ptr().add(264), 5) }, b"hello");
    assert_eq!(raw(&map, RING_HEADER + 16), 8);
    assert_eq!(raw(&map, TAIL_OFFSET), 0);
    r.pop_vec().unwrap();
    assert_eq!(raw(&map, TAIL_OFFSET), 16);
}

#[test]
fn exact_fill_then_full_then_room_again() {
    let (_s, map) = lone(256);
    let r = view(&map, 256);
    assert_eq!(r.max_message(), 120);
    let a = [1u8; 120];
    let b = [2u8; 120];
    assert!(r.push(&a).unwrap());
    assert!(!r.push(&b).unwrap());
    assert_eq!(r.used_bytes(), 256);
    assert_eq!(r.push(b"").unwrap_err(), PushError::Full);
    assert_eq!(r.pop_vec().unwrap().unwrap(), a);
    // Exactly the freed 128 bytes, at position 0 (no padding needed).
    let c = [3u8; 120];
    assert!(!r.push(&c).unwrap());
    assert_eq!(r.push(b"x").unwrap_err(), PushError::Full);
    assert_eq!(r.pop_vec().unwrap().unwrap(), b);
    assert_eq!(r.pop_vec().unwrap().unwrap(), c);
    assert_eq!(r.pop_vec().unwrap(), None);
}

#[test]
fn wrap_marker_when_a_record_does_not_fit_before_the_end() {
    let (_s, map) = lone(256);
    let r = view(&map, 256);
    let m = [9u8; 100]; // record 112
    r.push(&m).unwrap();
    r.pop_vec().unwrap();
    r.push(&m).unwrap();
    r.pop_vec().unwrap();
    // head at 224: 32 bytes to the end, the record needs 112.
    assert_eq!(raw(&map, HEAD_OFFSET), 224);
    assert!(r.push(&m).unwrap());
    assert_eq!(raw(&map, HEAD_OFFSET), 256 + 112);
    assert_eq!(raw(&map, RING_HEADER + 224), u64::from(FLAG_WRAP) << 32);
    assert_eq!(raw(&map, RING_HEADER), 100);
    assert_eq!(r.pop_vec().unwrap().unwrap(), m);
    assert_eq!(raw(&map, TAIL_OFFSET), 256 + 112);
    // With the padding the push needs pad + record free: not there.
    let (_s2, map2) = lone(256);
    let r = view(&map2, 256);
    r.push(&[1u8; 100]).unwrap();
    r.push(&[1u8; 100]).unwrap(); // head 224, tail 0
    r.pop_vec().unwrap(); // tail 112: 144 free, but 32 + 112 = 144 needed
    assert!(!r.push(&m).unwrap());
    assert_eq!(r.push(b"").unwrap_err(), PushError::Full);
    r.pop_vec().unwrap();
    assert_eq!(r.pop_vec().unwrap().unwrap(), m);
}

#[test]
fn wrap_only_leaves_the_ring_empty_and_pop_skips_it() {
    let (_s, map) = lone(256);
    let r = view(&map, 256);
    // Hand-made: a WRAP at 248 with nothing after it.
    set_raw(&map, HEAD_OFFSET, 248);
    set_raw(&map, TAIL_OFFSET, 248);
    assert!(r.push(b"12345678").unwrap());
    assert_eq!(raw(&map, HEAD_OFFSET), 256 + 16);
    assert_eq!(r.pop_vec().unwrap().unwrap(), b"12345678");
    set_raw(&map, HEAD_OFFSET, 256 + 248 + 8);
    set_raw(&map, TAIL_OFFSET, 256 + 248);
    set_raw(&map, RING_HEADER + 248, u64::from(FLAG_WRAP) << 32);
    assert_eq!(r.pop_vec().unwrap(), None);
    assert_eq!(raw(&map, TAIL_OFFSET), 512, "the padding was consumed");
}

#[test]
fn max_size_messages() {
    let cap = 256 * 1024;
    let (_s, map) = lone(cap);
    let r = view(&map, cap);
    let max = r.max_message();
    assert_eq!(max, 128 * 1024 - 8);
    assert!(max >= 64 * 1024);
    let big: Vec<u8> = (0..max).map(|i| (i * 31 % 251) as u8).collect();
    // From every position, a maximal message goes into an empty ring.
    for _ in 0..20 {
        assert!(r.push(&big).unwrap());
        assert_eq!(r.pop_vec().unwrap().unwrap(), big);
        r.push(b"shift").unwrap();
        r.pop_vec().unwrap();
    }
    assert_eq!(r.push(&vec![0; max + 1]).unwrap_err(), PushError::TooLarge { index: 0, len: max + 1, max });
    let mut small = [0u8; 10];
    r.push(&big).unwrap();
    assert_eq!(r.pop(&mut small).unwrap_err(), PopError::BufferTooSmall { need: max });
    let mut buf = vec![0u8; max];
    assert_eq!(r.pop(&mut buf).unwrap(), Some(max));
    assert_eq!(buf, big);
}

#[test]
fn batches_fill_partially_and_drain_in_order() {
    let (_s, map) = lone(1024);
    let r = view(&map, 1024);
    let msgs: Vec<Vec<u8>> = (0..100u8).map(|i| vec![i; 40]).collect(); // 48-byte records
    let first = r.push_batch(&msgs).unwrap();
    assert_eq!(first, BatchPush { pushed: 21, was_empty: true }); // 21 x 48 = 1008
    assert_eq!(r.push_batch(&msgs[21..]).unwrap(), BatchPush { pushed: 0, was_empty: false });
    let mut got = vec![];
    assert_eq!(r.pop_batch(5, |m| got.push(m[0])).unwrap(), 5);
    let second = r.push_batch(&msgs[21..]).unwrap();
    assert_eq!(second, BatchPush { pushed: 5, was_empty: false });
    assert_eq!(r.pop_batch(1000, |m| got.push(m[0])).unwrap(), 21);
    assert_eq!(got, (0..26).collect::<Vec<u8>>());
    let err = r.push_batch(&[vec![1u8; 3], vec![0u8; 2000]]).unwrap_err();
    assert_eq!(err, PushError::TooLarge { index: 1, len: 2000, max: 504 });
    assert!(r.is_empty(), "nothing of a refused batch was written");
    assert_eq!(r.push_batch::<&[u8]>(&[]).unwrap().pushed, 0);
}

#[test]
fn counters_wrap_around_u64() {
    let (_s, map) = lone(256);
    let r = view(&map, 256);
    let start = u64::MAX - 300;
    set_raw(&map, HEAD_OFFSET, start & !7);
    set_raw(&map, TAIL_OFFSET, start & !7);
    for i in 0..200u32 {
        let m = vec![i as u8; (i % 90) as usize];
        r.push(&m).unwrap();
        assert_eq!(r.pop_vec().unwrap().unwrap(), m);
    }
    assert!(raw(&map, HEAD_OFFSET) < 100_000, "the counter wrapped");
}

#[test]
fn corruption_is_reported_not_followed() {
    let (_s, map) = lone(256);
    let r = view(&map, 256);
    r.push(b"ok").unwrap();
    set_raw(&map, RING_HEADER, 5000); // length over the limit
    assert!(matches!(r.pop_vec(), Err(PopError::Corrupt(_))));
    set_raw(&map, RING_HEADER, 2 | (4u64 << 32)); // unknown flag
    assert!(matches!(r.pop_vec(), Err(PopError::Corrupt(_))));
    set_raw(&map, RING_HEADER, 100); // runs past head
    assert!(matches!(r.pop_vec(), Err(PopError::Corrupt(_))));
    assert_eq!(r.discard(), 16);
    assert_eq!(r.pop_vec().unwrap(), None);
    set_raw(&map, TAIL_OFFSET, 1 << 40); // consumer garbage
    assert!(matches!(r.push(b"x"), Err(PushError::Corrupt { .. })));
    set_raw(&map, HEAD_OFFSET, 5000);
    set_raw(&map, TAIL_OFFSET, 3);
    assert!(matches!(r.pop_vec(), Err(PopError::Corrupt(_))));
}

#[test]
fn a_message_the_consumer_cannot_take_stays_in_the_ring_with_the_rest() {
    let (_s, map) = lone(1024);
    let r = view(&map, 1024);
    for i in 0..5u8 {
        r.push(&[i; 5]).unwrap();
    }
    let mut got = Vec::new();
    // The consumer takes two, then fails to take the third.
    let n = r
        .read_batch_while(usize::MAX, |m| {
            if got.len() == 2 {
                return false;
            }
            got.push(m.to_vec());
            true
        })
        .unwrap();
    assert_eq!(n, 2);
    assert_eq!(raw(&map, TAIL_OFFSET), 32, "the tail is past the two taken");
    let mut rest = Vec::new();
    assert_eq!(r.pop_batch(usize::MAX, |m| rest.push(m[0])).unwrap(), 3);
    assert_eq!(rest, vec![2, 3, 4]);
    // Refusing the first takes nothing and publishes nothing new.
    r.push(b"x").unwrap();
    assert_eq!(r.read_batch_while(usize::MAX, |_| false).unwrap(), 0);
    assert_eq!(r.pop_vec().unwrap().unwrap(), b"x");
}

#[test]
fn a_corrupt_record_after_good_ones_is_reported_at_once_and_the_good_ones_are_consumed() {
    let (_s, map) = lone(1024);
    let r = view(&map, 1024);
    for i in 0..3u8 {
        r.push(&[i; 5]).unwrap();
    }
    r.push(b"bad").unwrap();
    r.push(b"after").unwrap();
    // The fourth record (each takes 16 bytes) gets an unknown flag.
    set_raw(&map, RING_HEADER + 3 * 16, 3 | (4u64 << 32));
    let mut got = Vec::new();
    let e = r.read_batch(usize::MAX, |m| got.push(m.to_vec())).unwrap_err();
    assert!(matches!(e, PopError::Corrupt(ref why) if why.contains("unknown flags")), "{e}");
    assert_eq!(got, vec![vec![0u8; 5], vec![1; 5], vec![2; 5]]);
    assert_eq!(raw(&map, TAIL_OFFSET), 48, "the good records are given back");
    // The same through pop_batch (copies), after resetting the tail.
    set_raw(&map, TAIL_OFFSET, 0);
    let mut n = 0;
    assert!(r.pop_batch(usize::MAX, |_| n += 1).is_err());
    assert_eq!(n, 3);
    // The corruption stays until discarded, and is counted for the producer.
    assert!(r.pop_vec().is_err());
    assert_eq!(r.errors(), 0);
    assert_eq!(r.discard_corrupt(), 32);
    assert_eq!(r.errors(), 1);
    assert_eq!(r.pop_vec().unwrap(), None);
    r.push(b"again").unwrap();
    assert_eq!(r.pop_vec().unwrap().unwrap(), b"again");
    r.reset();
    assert_eq!(r.errors(), 0);
}

#[test]
fn layout_places_every_pair_once() {
    let l = RingLayout::with_default_base(14, 4096).unwrap();
    assert_eq!(l.base(), 8192); // 16 slots x 512 = 8192, already a page boundary
    assert_eq!(l.endpoints(), 15);
    assert_eq!(l.ring_count(), 210);
    assert_eq!(l.stride(), 4096 + 256);
    let mut seen = std::collections::HashSet::new();
    for s in 1..=15 {
        for r in 1..=15 {
            if s == r {
                assert!(l.index(s, r).is_err());
                continue;
            }
            let k = l.index(s, r).unwrap();
            assert!(k < l.ring_count());
            assert!(seen.insert(k));
            assert_eq!(l.offset(s, r).unwrap(), l.base() + k * l.stride());
        }
    }
    assert_eq!(l.index(1, 2).unwrap(), 0);
    assert_eq!(l.index(2, 1).unwrap(), 14);
    assert_eq!(l.index(15, 14).unwrap(), 209);
    assert!(l.index(0, 1).is_err() && l.index(1, 16).is_err());
    assert_eq!(l.end(), 8192 + 210 * 4352);
    assert_eq!(RingLayout::default_base(1), Some(4096));
    assert_eq!(RingLayout::new(14, 1000, 8192).unwrap_err(), LayoutError::BadCapacity { capacity: 1000 });
    assert_eq!(RingLayout::new(14, 128, 8192).unwrap_err(), LayoutError::BadCapacity { capacity: 128 });
    assert_eq!(RingLayout::new(14, 4096, 8000).unwrap_err(), LayoutError::BadBase { base: 8000, min: 8192 });
    assert_eq!(RingLayout::new(14, 4096, 8192 + 64).unwrap_err(), LayoutError::BadBase { base: 8256, min: 8192 });
    assert!(RingLayout::new(0, 4096, 8192).is_err());
    assert!(RingLayout::new(u64::MAX, 4096, 8192).is_err());
}

#[test]
fn layout_round_trips_through_slot_0_and_rings_do_not_overlap() {
    let (_s, map) = memfd(1 << 20);
    let mb = Mailbox::new(&map).unwrap();
    mb.format(3).unwrap();
    assert_eq!(RingLayout::from_mailbox(&mb).unwrap(), None);
    let l = RingLayout::with_default_base(3, 4096).unwrap();
    l.publish(&mb).unwrap();
    l.reset_all(&map).unwrap();
    assert_eq!(raw(&map, 40), RING_MAGIC);
    assert_eq!(raw(&map, 48), 4096);
    assert_eq!(raw(&map, 56), 4096);
    assert_eq!(raw(&map, 64), 12);
    assert_eq!(mb.globals().n_clients, 3, "FAME-Z's globals untouched");
    assert_eq!(RingLayout::from_mailbox(&mb).unwrap(), Some(l));
    // Fill every ring with its own pair's bytes, then check each.
    for s in 1..=4 {
        for r in (1..=4).filter(|&r| r != s) {
            let ring = l.ring(&map, s, r).unwrap();
            while ring.push(&[(s * 16 + r) as u8; 500]).is_ok() {}
        }
    }
    for s in 1..=4 {
        for r in (1..=4).filter(|&r| r != s) {
            let ring = l.ring(&map, s, r).unwrap();
            let n = ring.pop_batch(usize::MAX, |m| assert!(m.iter().all(|&b| b == (s * 16 + r) as u8))).unwrap();
            assert_eq!(n, 4096 / 504);
        }
    }
    assert!(mb.post(4, 1, b"slot still works").is_ok());
    // A description that disagrees with nClients is refused.
    mb.set_global(global::COUNT, 13, Ordering::Relaxed).unwrap();
    assert!(matches!(RingLayout::from_mailbox(&mb), Err(LayoutError::BadGlobals(_))));
    let (_s2, small) = memfd(8192);
    assert!(matches!(l.ring(&small, 1, 2), Err(LayoutError::TooSmall { .. })));
}

/// Deterministic message i: an 8-byte sequence number, then bytes from
/// a xorshift of i, with sizes from 8 up to past 4 KiB (and rare big ones).
fn message(i: u64, out: &mut Vec<u8>) {
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let len = match next() % 1000 {
        0 => 8 + (next() % 60_000) as usize,
        1..=50 => 8 + (next() % 4096) as usize,
        _ => 8 + (next() % 120) as usize,
    };
    out.clear();
    out.extend_from_slice(&i.to_le_bytes());
    while out.len() < len {
        out.extend_from_slice(&next().to_le_bytes());
    }
    out.truncate(len);
}

#[test]
fn two_threads_one_million_messages_none_lost_duplicated_or_reordered() {
    const N: u64 = 1_000_000;
    let cap = 128 * 1024;
    let (_s, map) = lone(cap);
    let total_sent = std::thread::scope(|sc| {
        let producer = sc.spawn(|| {
            let r = view(&map, cap);
            let mut sum = 0u64;
            let mut i = 0;
            let mut batch: Vec<Vec<u8>> = Vec::new();
            while i < N {
                if i % 3 == 0 {
                    // A batch of up to 16.
                    batch.clear();
                    for j in i..(i + 16).min(N) {
                        let mut m = Vec::new();
                        message(j, &mut m);
                        batch.push(m);
                    }
                    let mut off = 0;
                    while off < batch.len() {
                        let got = r.push_batch(&batch[off..]).unwrap();
                        off += got.pushed;
                        if got.pushed == 0 {
                            std::thread::yield_now();
                        }
                    }
                    for m in &batch {
                        sum = sum.wrapping_add(crc(m));
                    }
                    i += batch.len() as u64;
                } else {
                    let mut m = Vec::new();
                    message(i, &mut m);
                    loop {
                        match r.push(&m) {
                            Ok(_) => break,
                            Err(PushError::Full) => std::thread::yield_now(),
                            Err(e) => panic!("{e}"),
                        }
                    }
                    sum = sum.wrapping_add(crc(&m));
                    i += 1;
                }
            }
            sum
        });
        let r = view(&map, cap);
        let mut expect = 0u64;
        let mut sum = 0u64;
        let mut want = Vec::new();
        let mut buf = vec![0u8; r.max_message()];
        let mut check = |m: &[u8], expect: &mut u64, sum: &mut u64| {
            message(*expect, &mut want);
            assert_eq!(m.len(), want.len(), "message {expect}: length");
            assert_eq!(u64::from_le_bytes(m[..8].try_into().unwrap()), *expect, "sequence");
            assert!(m == want.as_slice(), "message {expect}: content");
            *sum = sum.wrapping_add(crc(m));
            *expect += 1;
        };
        while expect < N {
            if expect.is_multiple_of(2) {
                let n = r.pop_batch(64, |m| check(m, &mut expect, &mut sum)).unwrap();
                if n == 0 {
                    std::thread::yield_now();
                }
            } else if let Some(n) = r.pop(&mut buf).unwrap() {
                check(&buf[..n], &mut expect, &mut sum);
            } else {
                std::thread::yield_now();
            }
        }
        assert_eq!(r.pop_vec().unwrap(), None, "nothing after the last message");
        assert_eq!(producer.join().unwrap(), sum, "checksums");
        expect
    });
    assert_eq!(total_sent, N);
}

/// FNV-1a, a checksum the test can compute on both sides.
fn crc(m: &[u8]) -> u64 {
    m.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}

// ---- Writer (in place) and Reader (polling consumer) ----

#[test]
fn writer_writes_in_place_and_publishes_on_commit_only() {
    let (_s, map) = lone(1024);
    let r = view(&map, 1024);
    let mut w = r.writer().unwrap();
    for i in 0..3u64 {
        w.push_with(20, |rec| {
            assert_eq!(rec.len(), 20);
            assert!(!rec.is_empty());
            rec.write_u64_le(0, i);
            rec.copy_from(8, &[0xab; 12]);
        })
        .unwrap();
    }
    w.push(b"plain").unwrap();
    assert_eq!(w.pushed(), 4);
    assert_eq!(w.bytes(), 3 * 32 + 16);
    assert_eq!(raw(&map, HEAD_OFFSET), 0, "nothing published before the commit");
    assert_eq!(r.pop_vec().unwrap(), None);
    assert_eq!(w.commit(), BatchPush { pushed: 4, was_empty: true });
    assert_eq!(raw(&map, HEAD_OFFSET), 3 * 32 + 16);
    // The same bytes a push would have written: header, payload.
    assert_eq!(raw(&map, RING_HEADER), 20);
    let mut got = Vec::new();
    r.pop_batch(usize::MAX, |m| got.push(m.to_vec())).unwrap();
    for (i, m) in got[..3].iter().enumerate() {
        assert_eq!(m[..8], (i as u64).to_le_bytes());
        assert_eq!(m[8..], [0xab; 12]);
    }
    assert_eq!(got[3], b"plain");
    // A writer dropped without commit leaves the ring as it was.
    let mut w = r.writer().unwrap();
    w.push(b"lost").unwrap();
    let _ = w; // abandoned without a commit
    assert_eq!(r.pop_vec().unwrap(), None);
    assert_eq!(r.writer().unwrap().commit(), BatchPush { pushed: 0, was_empty: false });
    // The next commit finds the ring empty and not, as push does.
    let mut w = r.writer().unwrap();
    w.push(b"a").unwrap();
    assert!(w.commit().was_empty);
    let mut w = r.writer().unwrap();
    w.push(b"b").unwrap();
    assert!(!w.commit().was_empty);
}

#[test]
fn writer_refuses_too_large_and_full_without_reserving() {
    let (_s, map) = lone(256);
    let r = view(&map, 256);
    let mut w = r.writer().unwrap();
    assert_eq!(
        w.push_with(121, |_| panic!("not called")).unwrap_err(),
        PushError::TooLarge { index: 0, len: 121, max: 120 }
    );
    w.push(&[1; 120]).unwrap();
    w.push(&[2; 120]).unwrap();
    assert_eq!(w.push_with(0, |_| panic!("not called")).unwrap_err(), PushError::Full);
    assert_eq!(w.bytes(), 256);
    assert_eq!(w.commit().pushed, 2);
    // Room freed while a batch is being written is found (a fresh tail).
    let mut w = r.writer().unwrap();
    assert_eq!(r.pop_vec().unwrap().unwrap(), [1; 120]);
    w.push(&[3; 120]).unwrap();
    assert!(!w.commit().was_empty);
    assert_eq!(r.pop_vec().unwrap().unwrap(), [2; 120]);
    assert_eq!(r.pop_vec().unwrap().unwrap(), [3; 120]);
    // A consumer's garbage tail: the writer is refused.
    set_raw(&map, TAIL_OFFSET, 1 << 40);
    assert!(matches!(r.writer(), Err(PushError::Corrupt { .. })));
}

#[test]
#[should_panic(expected = "past the record's end")]
fn writer_record_writes_are_bounds_checked() {
    let (_s, map) = lone(256);
    let r = view(&map, 256);
    let mut w = r.writer().unwrap();
    let _ = w.push_with(10, |rec| rec.write_u64_le(3, 0));
}

#[test]
fn writer_wraps_like_push() {
    let (_s, map) = lone(256);
    let r = view(&map, 256);
    for i in 0..100u64 {
        let len = 8 + (i * 13 % 100) as usize;
        let mut w = r.writer().unwrap();
        w.push_with(len, |rec| {
            rec.write_u64_le(0, i);
            rec.copy_from(8, &vec![i as u8; len - 8]);
        })
        .unwrap();
        w.commit();
        let m = r.pop_vec().unwrap().unwrap();
        assert_eq!(m.len(), len);
        assert_eq!(m[..8], i.to_le_bytes());
        assert!(m[8..].iter().all(|&b| b == i as u8));
    }
}

#[test]
fn reader_holds_the_last_record_so_the_producer_rings_no_doorbell() {
    let (_s, map) = lone(4096);
    let r = view(&map, 4096);
    assert!(r.push(b"one").unwrap());
    let mut rd = r.reader();
    let mut got = Vec::new();
    assert_eq!(rd.read_batch(usize::MAX, |m| got.push(m.to_vec())).unwrap(), 1);
    assert_eq!(raw(&map, TAIL_OFFSET), 0, "the last record is held");
    assert!(!r.push(b"two").unwrap(), "not empty to the producer: no doorbell");
    assert!(!r.push(b"three").unwrap());
    assert_eq!(rd.read_batch(usize::MAX, |m| got.push(m.to_vec())).unwrap(), 2);
    assert_eq!(raw(&map, TAIL_OFFSET), 32, "past all but the last");
    // Nothing new: nothing changes, no barrier, no tail store.
    assert_eq!(rd.read_batch(usize::MAX, |_| panic!()).unwrap(), 0);
    assert_eq!(raw(&map, TAIL_OFFSET), 32);
    // Settling gives everything back; then the ring is empty again.
    assert!(rd.settle());
    assert_eq!(raw(&map, TAIL_OFFSET), 48);
    assert!(r.push(b"four").unwrap(), "empty: the doorbell is due");
    assert!(!rd.settle(), "something came: read before sleeping");
    assert_eq!(rd.read_batch(1, |m| got.push(m.to_vec())).unwrap(), 1);
    drop(rd);
    assert_eq!(raw(&map, TAIL_OFFSET), raw(&map, HEAD_OFFSET), "dropping gives the held record back");
    assert_eq!(got, [&b"one"[..], b"two", b"three", b"four"]);
    // max reached before head: everything taken is given back.
    for m in [b"5", b"6", b"7"] {
        r.push(m).unwrap();
    }
    let mut rd = r.reader();
    assert_eq!(rd.read_batch(2, |_| ()).unwrap(), 2);
    assert_eq!(raw(&map, HEAD_OFFSET) - raw(&map, TAIL_OFFSET), 16, "the third is left");
    assert_eq!(rd.read_batch_while(usize::MAX, |_| false).unwrap(), 0);
    assert_eq!(rd.read_batch(usize::MAX, |m| assert_eq!(m.to_vec(), b"7")).unwrap(), 1);
    assert!(rd.settle());
    assert!(r.is_empty());
}

#[test]
fn a_held_record_never_keeps_out_the_largest_message() {
    // For every position of head, a reader holding what it just read must
    // leave room for a message of the limit, wherever it has to go.
    let cap = 1024;
    let (_s, map) = lone(cap);
    let r = view(&map, cap);
    let big = vec![9u8; r.max_message()];
    for small in [0usize, 8, 40, 200, 400, r.max_message()] {
        for step in 0..(cap / 8) {
            r.reset();
            // Put head at 8 * step, the ring empty.
            if step > 0 {
                set_raw(&map, HEAD_OFFSET, 8 * step);
                set_raw(&map, TAIL_OFFSET, 8 * step);
            }
            let mut rd = r.reader();
            if r.push(&vec![1u8; small]).is_err() {
                continue;
            }
            assert_eq!(rd.read_batch(usize::MAX, |_| ()).unwrap(), 1);
            let pushed = r.push(&big);
            assert!(pushed.is_ok(), "small {small} at {}: {pushed:?}", 8 * step);
            let mut n = 0;
            rd.read_batch(usize::MAX, |m| {
                assert_eq!(m.len(), big.len());
                n += 1;
            })
            .unwrap();
            assert_eq!(n, 1);
            assert!(rd.settle());
        }
    }
}

#[test]
fn reader_reports_corruption_after_the_good_records_and_discards() {
    let (_s, map) = lone(1024);
    let r = view(&map, 1024);
    for i in 0..3u8 {
        r.push(&[i; 5]).unwrap();
    }
    r.push(b"bad").unwrap();
    r.push(b"after").unwrap();
    set_raw(&map, RING_HEADER + 3 * 16, 5000); // over the limit
    let mut rd = r.reader();
    let mut got = Vec::new();
    let e = rd.read_batch(usize::MAX, |m| got.push(m.to_vec())).unwrap_err();
    assert!(matches!(e, PopError::Corrupt(_)), "{e}");
    assert_eq!(got, vec![vec![0u8; 5], vec![1; 5], vec![2; 5]]);
    assert_eq!(raw(&map, TAIL_OFFSET), 48, "the good records are given back");
    assert!(rd.read_batch(usize::MAX, |_| panic!()).is_err(), "it stays until discarded");
    assert_eq!(rd.discard_corrupt(), 32);
    assert_eq!(r.errors(), 1);
    assert_eq!(rd.read_batch(usize::MAX, |_| panic!()).unwrap(), 0);
    r.push(b"again").unwrap();
    assert_eq!(rd.read_batch(usize::MAX, |m| assert_eq!(m.to_vec(), b"again")).unwrap(), 1);
    drop(rd);
    // Garbage counters are refused before anything is read.
    for (head, tail) in [(5000u64, 0u64), (64, 3), (1 << 63, 0)] {
        set_raw(&map, HEAD_OFFSET, head);
        set_raw(&map, TAIL_OFFSET, tail);
        let mut rd = r.reader();
        assert!(matches!(rd.read_batch(usize::MAX, |_| panic!()), Err(PopError::Corrupt(_))));
        std::mem::forget(rd);
    }
}

#[test]
fn hostile_producer_bytes_never_make_the_consumer_read_outside_the_ring() {
    // Random headers and counters: every read is either a record inside
    // the data area or an error, through all three readers.
    let cap = 512u64;
    let (_s, map) = lone(cap);
    let r = view(&map, cap);
    let mut x = 0x1234_5678_9abc_def1u64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let data = map.as_ptr() as usize + RING_HEADER as usize;
    for _ in 0..20_000 {
        for w in 0..cap / 8 {
            let v = match next() % 4 {
                0 => next() % 600,               // a length, often valid
                1 => u64::from(FLAG_WRAP) << 32, // a WRAP marker
                2 => next(),                     // anything
                _ => (next() % 64) | ((next() % 3) << 32),
            };
            set_raw(&map, RING_HEADER + 8 * w, v);
        }
        let tail = (next() % (4 * cap)) & if next().is_multiple_of(8) { !0 } else { !7 };
        let head = tail.wrapping_add(next() % (cap + 64));
        set_raw(&map, TAIL_OFFSET, tail);
        set_raw(&map, HEAD_OFFSET, head);
        let mut check = |m: Record<'_>| {
            let p = m.ptr_for_tests() as usize;
            assert!(p >= data + 8 && p + m.len() <= data + cap as usize, "record outside the data area");
            assert!(m.len() <= r.max_message());
        };
        let _ = r.read_batch(usize::MAX, &mut check);
        set_raw(&map, TAIL_OFFSET, tail);
        let mut rd = r.reader();
        let _ = rd.read_batch(usize::MAX, &mut check);
        std::mem::forget(rd);
        set_raw(&map, TAIL_OFFSET, tail);
        let mut buf = [0u8; 256];
        let _ = r.pop(&mut buf);
    }
}

#[test]
fn two_threads_with_doorbells_writer_and_reader_lose_no_wakeup() {
    // The consumer sleeps on an eventfd only after settle() said the ring
    // is empty; the producer rings only when a commit found it empty. A
    // lost wake-up would leave messages in the ring with the consumer
    // asleep: the poll's timeout catches that.
    use crate::EventFd;
    use std::os::fd::AsFd;
    const N: u64 = 300_000;
    let cap = 64 * 1024;
    let (_s, map) = lone(cap);
    let bell = EventFd::new().unwrap();
    std::thread::scope(|sc| {
        sc.spawn(|| {
            let r = view(&map, cap);
            let mut i = 0u64;
            let mut m = Vec::new();
            // One writer for many batches, a fresh one now and then.
            let mut w = r.writer().unwrap();
            while i < N {
                // Batches of 1 to 40 messages, sometimes a pause.
                let want = 1 + i % 40;
                while w.pushed() < want as usize && i < N {
                    message(i, &mut m);
                    let len = m.len().min(r.max_message());
                    match w.push_with(len, |rec| rec.copy_from(0, &m[..len])) {
                        Ok(()) => i += 1,
                        Err(PushError::Full) => break,
                        Err(e) => panic!("{e}"),
                    }
                }
                let got = w.publish();
                if i.is_multiple_of(7) {
                    w = r.writer().unwrap();
                }
                if got.was_empty {
                    bell.signal(1).unwrap();
                }
                if got.pushed == 0 || i.is_multiple_of(997) {
                    std::thread::yield_now();
                }
            }
        });
        let r = view(&map, cap);
        let mut rd = r.reader();
        let mut expect = 0u64;
        let mut want = Vec::new();
        let mut sleeps = 0;
        let mut idle = 0u32;
        while expect < N {
            let n = rd
                .read_batch(64, |m| {
                    message(expect, &mut want);
                    let len = want.len().min(r.max_message());
                    assert_eq!(m.to_vec(), want[..len], "message {expect}");
                    expect += 1;
                })
                .unwrap();
            if n > 0 {
                idle = 0;
                continue;
            }
            idle += 1;
            if idle < 50 {
                std::hint::spin_loop();
                continue;
            }
            idle = 0;
            if rd.settle() {
                sleeps += 1;
                let mut fds = [nix::poll::PollFd::new(bell.as_fd(), nix::poll::PollFlags::POLLIN)];
                let ready = nix::poll::poll(&mut fds, 5000u16).unwrap();
                assert_eq!(ready, 1, "asleep for 5 s at message {expect}: a lost wake-up");
                bell.drain().unwrap();
            }
        }
        assert!(rd.settle());
        assert!(sleeps > 0, "the consumer slept at least once");
    });
}

#[test]
fn a_writer_publishes_batch_after_batch_and_reads_tail_only_when_short_of_room() {
    let (_s, map) = lone(256);
    let r = view(&map, 256);
    let mut w = r.writer().unwrap();
    w.push(&[1; 56]).unwrap();
    assert_eq!(w.publish(), BatchPush { pushed: 1, was_empty: true });
    assert_eq!((w.pushed(), w.bytes()), (0, 0));
    w.push(&[2; 56]).unwrap();
    w.push(&[3; 56]).unwrap();
    assert_eq!(w.publish(), BatchPush { pushed: 2, was_empty: false });
    assert_eq!(w.publish(), BatchPush { pushed: 0, was_empty: false }, "nothing new");
    w.push(&[4; 56]).unwrap();
    assert_eq!(w.push(b"").unwrap_err(), PushError::Full);
    // The consumer frees room; the writer finds it when it runs short.
    let mut got = Vec::new();
    r.pop_batch(2, |m| got.push(m[0])).unwrap();
    w.push(&[5; 56]).unwrap();
    assert!(!w.publish().was_empty);
    r.pop_batch(usize::MAX, |m| got.push(m[0])).unwrap();
    assert_eq!(got, [1, 2, 3, 4, 5]);
    w.push(b"x").unwrap();
    assert!(w.commit().was_empty, "the consumer had caught up");
    // A garbage tail seen by a publish is reported by the next push.
    let mut w = r.writer().unwrap();
    r.pop_vec().unwrap();
    w.push(b"y").unwrap();
    set_raw(&map, TAIL_OFFSET, 1 << 40);
    w.publish();
    assert!(matches!(w.push(b"z"), Err(PushError::Corrupt { .. })));
}
