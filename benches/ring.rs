//! Benchmarks of the SPSC byte ring (`vsync_dataplane::ring`): single-thread
//! claim+commit+read+release cost, and two-thread throughput of 64-byte records against a
//! `crossbeam_queue::ArrayQueue<[u8; 64]>` baseline moving the same payload.

use std::hint::black_box;
use std::thread;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use crossbeam_queue::ArrayQueue;
use vsync_dataplane::ring;

/// Ring size for the two-thread runs: 64 KiB, about 900 records of 64 B (72 B with header).
const RING_BYTES: usize = 64 * 1024;
/// ArrayQueue slots for the baseline, about the same number of 64-byte messages.
const QUEUE_SLOTS: usize = 1024;

/// Waits a little while the other side catches up: spin first, then yield (the machine may
/// have fewer free cores than threads).
#[inline]
fn relax(idle: &mut u32) {
    *idle += 1;
    if *idle < 128 {
        std::hint::spin_loop();
    } else {
        thread::yield_now();
    }
}

fn message(seq: u64) -> [u8; 64] {
    let mut m = [0x5Au8; 64];
    m[..8].copy_from_slice(&seq.to_le_bytes());
    m
}

fn single_thread(c: &mut Criterion) {
    let mut group = c.benchmark_group("ring_single_thread");
    group.throughput(Throughput::Elements(1));
    for size in [64usize, 1024] {
        let payload = vec![0xA5u8; size];
        group.bench_with_input(
            BenchmarkId::new("claim_commit_read_release", size),
            &size,
            |b, &size| {
                let (mut tx, mut rx) = ring::channel(1 << 20).unwrap();
                b.iter(|| {
                    let mut claim = tx.try_claim(size).unwrap();
                    claim.copy_from_slice(black_box(&payload));
                    claim.commit();
                    let record = rx.try_read().unwrap();
                    black_box(&record[..]);
                    record.release();
                })
            },
        );
    }
    group.finish();
}

/// Moves `iters` 64-byte messages producer thread → this thread through a ring; the
/// consumer uses `read_batch` when `batch`, else `try_read` + release per record.
fn ring_transfer(iters: u64, batch: bool) -> Duration {
    let (mut tx, mut rx) = ring::channel(RING_BYTES).unwrap();
    thread::scope(|s| {
        let start = Instant::now();
        s.spawn(move || {
            for seq in 0..iters {
                let msg = message(seq);
                let mut idle = 0;
                loop {
                    match tx.try_claim(64) {
                        Ok(mut claim) => {
                            claim.copy_from_slice(&msg);
                            claim.commit();
                            break;
                        }
                        Err(_) => relax(&mut idle),
                    }
                }
            }
        });
        let mut next = 0u64;
        let mut idle = 0;
        while next < iters {
            let got = if batch {
                rx.read_batch(usize::MAX, |payload| {
                    let seq = u64::from_le_bytes(payload[..8].try_into().unwrap());
                    debug_assert_eq!(seq, next);
                    black_box(seq);
                    next += 1;
                })
            } else if let Some(record) = rx.try_read() {
                let seq = u64::from_le_bytes(record[..8].try_into().unwrap());
                debug_assert_eq!(seq, next);
                black_box(seq);
                next += 1;
                1
            } else {
                0
            };
            if got == 0 {
                relax(&mut idle);
            } else {
                idle = 0;
            }
        }
        start.elapsed()
    })
}

/// The same transfer through `ArrayQueue<[u8; 64]>` (push / pop copy the message).
fn array_queue_transfer(iters: u64) -> Duration {
    let queue = ArrayQueue::<[u8; 64]>::new(QUEUE_SLOTS);
    thread::scope(|s| {
        let start = Instant::now();
        let q = &queue;
        s.spawn(move || {
            for seq in 0..iters {
                let mut msg = message(seq);
                let mut idle = 0;
                while let Err(back) = q.push(msg) {
                    msg = back;
                    relax(&mut idle);
                }
            }
        });
        let mut next = 0u64;
        let mut idle = 0;
        while next < iters {
            if let Some(msg) = queue.pop() {
                let seq = u64::from_le_bytes(msg[..8].try_into().unwrap());
                debug_assert_eq!(seq, next);
                black_box(seq);
                next += 1;
                idle = 0;
            } else {
                relax(&mut idle);
            }
        }
        start.elapsed()
    })
}

fn two_threads(c: &mut Criterion) {
    let mut group = c.benchmark_group("two_thread_64B");
    group.throughput(Throughput::Elements(1));
    group.bench_function(BenchmarkId::new("ring", "read_batch"), |b| {
        b.iter_custom(|iters| ring_transfer(iters, true))
    });
    group.bench_function(BenchmarkId::new("ring", "try_read"), |b| {
        b.iter_custom(|iters| ring_transfer(iters, false))
    });
    group.bench_function(BenchmarkId::new("crossbeam_ArrayQueue", "pop"), |b| {
        b.iter_custom(array_queue_transfer)
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2));
    targets = single_thread, two_threads
}
criterion_main!(benches);
