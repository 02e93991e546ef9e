//! Cross-thread tests of the SPSC byte ring: bulk transfer (order, content, count),
//! backpressure without loss, and closed-ness when a half is dropped.

use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use vsync_dataplane::ring::{self, Consumer, Producer, RingError};
use xxhash_rust::xxh3::xxh3_64;

/// Upper bound for any single test loop, so a bug hangs no CI run.
const DEADLINE: Duration = Duration::from_secs(120);

/// How many records the bulk test moves (`RING_THREADS_RECORDS` overrides).
fn bulk_records() -> u64 {
    std::env::var("RING_THREADS_RECORDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2_000_000)
}

fn mix(seq: u64) -> u64 {
    let mut z = seq.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Payload length of record `seq`: 1..=2000, pseudo-random.
fn len_of(seq: u64) -> usize {
    (mix(seq) % 2000) as usize + 1
}

fn fill_byte(seq: u64) -> u8 {
    (mix(seq) >> 56) as u8
}

/// Writes record `seq` into `buf`: a per-record fill byte, the sequence number in the first
/// (up to) 8 bytes and, for records of 16+ bytes, an xxh3 of the rest in the last 8.
fn write_record(seq: u64, buf: &mut [u8]) {
    let len = buf.len();
    buf.fill(fill_byte(seq));
    let stamp = seq.to_le_bytes();
    let n = len.min(8);
    buf[..n].copy_from_slice(&stamp[..n]);
    if len >= 16 {
        let h = xxh3_64(&buf[..len - 8]);
        buf[len - 8..].copy_from_slice(&h.to_le_bytes());
    }
}

fn check_record(seq: u64, buf: &[u8]) {
    let len = buf.len();
    assert_eq!(len, len_of(seq), "length of record {seq}");
    let stamp = seq.to_le_bytes();
    let n = len.min(8);
    assert_eq!(&buf[..n], &stamp[..n], "sequence stamp of record {seq}");
    if len >= 16 {
        let h = xxh3_64(&buf[..len - 8]);
        assert_eq!(
            &buf[len - 8..],
            &h.to_le_bytes(),
            "checksum of record {seq}"
        );
        assert!(buf[8..len - 8].iter().all(|&b| b == fill_byte(seq)));
    } else {
        assert!(
            buf[n..].iter().all(|&b| b == fill_byte(seq)),
            "record {seq}"
        );
    }
}

fn send(p: &mut Producer, seq: u64) {
    let mut claim = p.claim_blocking(len_of(seq), None).expect("consumer alive");
    write_record(seq, &mut claim);
    claim.commit();
}

/// Polls until `f` returns true, spinning then yielding; panics after [`DEADLINE`].
fn poll_until(start: Instant, what: &str, mut f: impl FnMut() -> bool) {
    let mut idle = 0u32;
    while !f() {
        idle += 1;
        if idle < 64 {
            std::hint::spin_loop();
        } else {
            thread::yield_now();
        }
        assert!(start.elapsed() < DEADLINE, "timed out: {what}");
    }
}

#[test]
fn ring_bulk_transfer_keeps_order_content_and_count() {
    let n = bulk_records();
    let (mut p, mut c) = ring::channel(64 * 1024).unwrap();
    let start = Instant::now();
    let producer = thread::spawn(move || {
        let mut would_block = 0u64;
        for seq in 0..n {
            if seq % 3 == 0 {
                // The polling path: try_claim, yielding while full.
                loop {
                    match p.try_claim(len_of(seq)) {
                        Ok(mut claim) => {
                            write_record(seq, &mut claim);
                            claim.commit();
                            break;
                        }
                        Err(RingError::WouldBlock) => {
                            would_block += 1;
                            thread::yield_now();
                        }
                        Err(e) => panic!("claim failed: {e}"),
                    }
                }
            } else {
                send(&mut p, seq);
            }
        }
        would_block
    });

    let mut next = 0u64;
    let mut idle = 0u32;
    while next < n {
        // Alternate between the two read paths.
        let got = if next.is_multiple_of(2) {
            c.read_batch(64, |payload| {
                check_record(next, payload);
                next += 1;
            })
        } else {
            match c.try_read() {
                Some(record) => {
                    check_record(next, &record);
                    next += 1;
                    1
                }
                None => 0,
            }
        };
        if got == 0 {
            idle += 1;
            if idle.is_multiple_of(64) {
                thread::yield_now();
                assert!(start.elapsed() < DEADLINE, "stalled at record {next}");
            } else {
                std::hint::spin_loop();
            }
        }
    }
    let would_block = producer.join().expect("producer thread");
    assert_eq!(next, n);
    assert!(c.try_read().is_none(), "no record beyond the last");
    assert!(c.is_closed());
    eprintln!(
        "moved {n} records in {:?} ({would_block} WouldBlock retries on the polling path)",
        start.elapsed()
    );
}

#[test]
fn ring_stalled_consumer_is_backpressure_not_loss() {
    const N: u64 = 20_000;
    let (mut p, mut c) = ring::channel(16 * 1024).unwrap();
    let (full_tx, full_rx) = mpsc::channel::<u64>();
    let (resume_tx, resume_rx) = mpsc::channel::<()>();
    let producer = thread::spawn(move || {
        // Fill until the ring pushes back.
        let mut seq = 0u64;
        loop {
            match p.try_claim(len_of(seq)) {
                Ok(mut claim) => {
                    write_record(seq, &mut claim);
                    claim.commit();
                    seq += 1;
                }
                Err(RingError::WouldBlock) => break,
                Err(e) => panic!("unexpected {e}"),
            }
        }
        // A refused claim needs at most PAD + record, and a PAD is smaller than the record.
        assert!(p.free_bytes() < 2 * (8 + len_of(seq).next_multiple_of(8)));
        // It keeps pushing back, without loss, while the consumer does not read.
        for _ in 0..100 {
            assert_eq!(p.try_claim(len_of(seq)).unwrap_err(), RingError::WouldBlock);
        }
        assert_eq!(
            p.claim_blocking(len_of(seq), Some(Duration::from_millis(10)))
                .unwrap_err(),
            RingError::WouldBlock
        );
        full_tx.send(seq).unwrap();
        resume_rx.recv().unwrap();
        for s in seq..N {
            send(&mut p, s);
        }
        seq
    });

    let committed = full_rx.recv().unwrap();
    assert!(committed > 0);
    // Everything committed before the stall is there, untouched by the rejected claims.
    thread::sleep(Duration::from_millis(20));
    let pending = c.pending_hint();
    assert!(
        pending > 16 * 1024 - 2 * 2008,
        "ring should be nearly full: {pending}"
    );
    resume_tx.send(()).unwrap();

    let start = Instant::now();
    let mut next = 0u64;
    poll_until(start, "draining after resume", || {
        c.read_batch(usize::MAX, |payload| {
            check_record(next, payload);
            next += 1;
        });
        next == N
    });
    assert_eq!(producer.join().unwrap(), committed);
    assert!(c.try_read().is_none());
    assert!(c.is_closed());
}

#[test]
fn ring_dropping_the_consumer_wakes_a_blocked_producer_with_closed() {
    let (mut p, c) = ring::channel(4096).unwrap();
    let producer = thread::spawn(move || {
        let mut seq = 0;
        while let Ok(mut claim) = p.try_claim(len_of(seq)) {
            write_record(seq, &mut claim);
            claim.commit();
            seq += 1;
        }
        assert!(!p.is_closed());
        // Blocks (no timeout) until the consumer goes away.
        let err = p.claim_blocking(len_of(seq), None).unwrap_err();
        assert!(p.is_closed());
        assert_eq!(p.try_claim(1).unwrap_err(), RingError::Closed);
        err
    });
    thread::sleep(Duration::from_millis(50));
    drop(c);
    assert_eq!(producer.join().unwrap(), RingError::Closed);
}

#[test]
fn ring_dropping_the_producer_closes_after_the_last_record() {
    const N: u64 = 1000;
    let (mut p, c) = ring::channel(8192).unwrap();
    let consumer = thread::spawn(move || {
        let mut c: Consumer = c;
        let mut next = 0u64;
        loop {
            match c.read_blocking(None) {
                Ok(record) => {
                    check_record(next, &record);
                    next += 1;
                }
                Err(RingError::Closed) => break,
                Err(e) => panic!("unexpected {e}"),
            }
        }
        assert!(c.is_closed());
        assert!(c.try_read().is_none());
        next
    });
    for seq in 0..N {
        send(&mut p, seq);
    }
    thread::sleep(Duration::from_millis(20));
    drop(p);
    assert_eq!(consumer.join().unwrap(), N);
}
