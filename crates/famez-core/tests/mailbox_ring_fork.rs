//! Mailbox slots and ring channels between two real processes: a forked
//! child maps the same memfd on its own, and the two sides talk only through
//! the shared memory and eventfd doorbells, as a guest and the switch would.
//! The consumer sleeps on its doorbell whenever a ring or slot is empty, so a
//! lost wake-up shows up as a timeout, not as a slow pass.

use std::time::{Duration, Instant};

use famez_core::mailbox::MailboxError;
use famez_core::ring::PushError;
use famez_core::{EventFd, Mailbox, RingLayout, SharedMemory, ShmBacking};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult};

const RING_MESSAGES: u64 = 200_000;
const SLOT_MESSAGES: u64 = 20_000;
const CHILD: u64 = 1;
const PARENT: u64 = 2; // the "switch": nClients 1, server_id 2

/// Message i: its sequence number, then bytes derived from it; 8..~4 KiB.
fn message(i: u64, max: usize, out: &mut Vec<u8>) {
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let len = if next() % 20 == 0 { 8 + (next() % 4096) as usize } else { 8 + (next() % 200) as usize };
    out.clear();
    out.extend_from_slice(&i.to_le_bytes());
    while out.len() < len {
        out.extend_from_slice(&next().to_le_bytes());
    }
    out.truncate(len.min(max));
}

/// Waits for a doorbell; false after `limit` with none (a lost wake-up).
fn wait_bell(bell: &EventFd, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if bell.drain().unwrap() > 0 {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_micros(20));
    }
}

fn child(shm: &SharedMemory, to_parent: &EventFd, to_child: &EventFd) -> Result<(), String> {
    let map = shm.map().map_err(|e| e.to_string())?;
    let mb = Mailbox::new(&map).map_err(|e| e.to_string())?;
    let layout = RingLayout::from_mailbox(&mb).map_err(|e| e.to_string())?.ok_or("no rings in slot 0")?;
    mb.set_nodename(CHILD, b"forked-child").map_err(|e| e.to_string())?;

    // Bounded everywhere, so a failed parent never leaves the child spinning.
    let deadline = Instant::now() + Duration::from_secs(60);
    let overdue = || Instant::now() > deadline;

    // Ring phase: push everything, ringing only on empty -> non-empty.
    let ring = layout.ring(&map, CHILD, PARENT).map_err(|e| e.to_string())?;
    let mut m = Vec::new();
    let mut bells = 0u64;
    for i in 0..RING_MESSAGES {
        message(i, ring.max_message(), &mut m);
        loop {
            match ring.push(&m) {
                Ok(was_empty) => {
                    if was_empty {
                        to_parent.signal(1).map_err(|e| e.to_string())?;
                        bells += 1;
                    }
                    break;
                }
                Err(PushError::Full) if !overdue() => std::thread::yield_now(),
                Err(e) => return Err(format!("ring message {i}: {e}")),
            }
        }
    }

    // Slot phase: one message in flight, refused (never overwritten) while
    // the parent has not taken the previous one.
    let mut refused = 0u64;
    for i in 0..SLOT_MESSAGES {
        let text = format!("slot {i} {}", "z".repeat((i % 350) as usize));
        loop {
            match mb.post(CHILD, PARENT, text.as_bytes()) {
                Ok(()) => break,
                Err(MailboxError::SlotBusy { .. }) if !overdue() => {
                    refused += 1;
                    std::thread::yield_now()
                }
                Err(e) => return Err(format!("slot message {i}: {e}")),
            }
        }
        to_parent.signal(1).map_err(|e| e.to_string())?;
    }

    // The parent's answer comes back through the other ring.
    let back = layout.ring(&map, PARENT, CHILD).map_err(|e| e.to_string())?;
    loop {
        if let Some(reply) = back.pop_vec().map_err(|e| e.to_string())? {
            let want = format!("got {RING_MESSAGES} and {SLOT_MESSAGES}");
            if reply != want.as_bytes() {
                return Err(format!("bad reply {:?}", String::from_utf8_lossy(&reply)));
            }
            break;
        }
        if !wait_bell(to_child, deadline.saturating_duration_since(Instant::now())) {
            return Err("no reply from the parent".into());
        }
    }
    eprintln!("child: {bells} doorbells for {RING_MESSAGES} ring messages, {refused} busy refusals");
    Ok(())
}

#[test]
fn rings_and_slots_between_two_processes() {
    let shm = SharedMemory::create(&ShmBacking::Memfd("ring-fork".into()), 4 << 20, 0o600, None).unwrap();
    let to_parent = EventFd::new().unwrap();
    let to_child = EventFd::new().unwrap();
    {
        let map = shm.map().unwrap();
        let mb = Mailbox::new(&map).unwrap();
        mb.format(1).unwrap();
        let layout = RingLayout::with_default_base(1, 64 * 1024).unwrap();
        layout.reset_all(&map).unwrap();
        layout.publish(&mb).unwrap();
    }
    // SAFETY: the child only uses famez-core calls and leaves with
    // std::process::exit, never returning into the test harness.
    match unsafe { fork() }.unwrap() {
        ForkResult::Child => {
            let code = match std::panic::catch_unwind(|| child(&shm, &to_parent, &to_child)) {
                Ok(Ok(())) => 0,
                Ok(Err(e)) => {
                    eprintln!("child: {e}");
                    1
                }
                Err(_) => 2,
            };
            std::process::exit(code);
        }
        ForkResult::Parent { child: pid } => {
            let map = shm.map().unwrap();
            let mb = Mailbox::new(&map).unwrap().with_clients(1).unwrap();
            let layout = RingLayout::from_mailbox(&mb).unwrap().unwrap();
            let ring = layout.ring(&map, CHILD, PARENT).unwrap();
            let limit = Duration::from_secs(20);

            let mut expect = 0u64;
            let mut want = Vec::new();
            let mut wakeups = 0u64;
            while expect < RING_MESSAGES {
                let n = ring
                    .pop_batch(256, |m| {
                        message(expect, ring.max_message(), &mut want);
                        assert_eq!(m, want.as_slice(), "ring message {expect}");
                        expect += 1;
                    })
                    .unwrap();
                if n < 256 && expect < RING_MESSAGES {
                    // Seen empty after the barrier: sleeping is safe now.
                    assert!(wait_bell(&to_parent, limit), "lost wake-up after ring message {expect}");
                    wakeups += 1;
                }
            }

            let mut taken = 0u64;
            while taken < SLOT_MESSAGES {
                match mb.take(CHILD).unwrap() {
                    Some(m) => {
                        let want = format!("slot {taken} {}", "z".repeat((taken % 350) as usize));
                        assert_eq!(m, want.as_bytes(), "slot message {taken}");
                        assert_eq!(mb.last_responder(CHILD).unwrap(), PARENT);
                        taken += 1;
                    }
                    None => assert!(wait_bell(&to_parent, limit), "lost wake-up after slot message {taken}"),
                }
            }
            assert_eq!(mb.nodename(CHILD).unwrap(), b"forked-child");

            let back = layout.ring(&map, PARENT, CHILD).unwrap();
            if back.push(format!("got {expect} and {taken}").as_bytes()).unwrap() {
                to_child.signal(1).unwrap();
            }
            let status = waitpid(pid, None).unwrap();
            assert_eq!(status, WaitStatus::Exited(pid, 0));
            assert!(ring.is_empty() && !mb.is_busy(CHILD).unwrap());
            eprintln!("parent: {wakeups} doorbell waits for {RING_MESSAGES} ring messages");
        }
    }
}
