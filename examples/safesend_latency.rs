//! SafeSend latency and throughput, against OrderedSend and OrderedQuery, on one host.
//!
//! Three members (three `System`s in this process, loopback, embedded oracle on a free port)
//! join one group per configuration. The sender is the rank-1 member (not the OrderedSend
//! sequencer). For each configuration:
//!
//! * **latency**: one message at a time; time from the send call to the delivery upcall at the
//!   sender (a SafeSend is delivered there only after `Φ` acceptors logged it), p50 / p99;
//!   for OrderedQuery the time of a query waiting for all three replies;
//! * **throughput**: a burst of messages sent back to back, until every member delivered all.
//!
//! ```text
//! cargo run --release --example safesend_latency [-- --dir /path/for/disk/logs --n 2000 --burst 20000]
//! ```
//!
//! The disk logs go to a fresh directory under `--dir` (default: the system temp directory);
//! it is removed at the end.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use vsync::durability::DiskLogger;
use vsync::{Group, NReplies, System, Timeout, VsyncError};

const MSG: u32 = 0;
const ASK: u32 = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Prim {
    Ordered,
    OrderedQuery,
    Safe,
}

#[derive(Clone, Copy, Debug)]
struct Config {
    prim: Prim,
    phi: usize,
    disk: bool,
}

impl Config {
    fn name(&self) -> String {
        match self.prim {
            Prim::Ordered => "OrderedSend".into(),
            Prim::OrderedQuery => "OrderedQuery (all 3 replies)".into(),
            Prim::Safe => format!(
                "SafeSend Φ={}{} {}",
                self.phi,
                if self.phi == 3 { " (all)" } else { "" },
                if self.disk {
                    "DiskLogger"
                } else {
                    "MemoryLogger"
                }
            ),
        }
    }
}

struct Member {
    group: Group,
    count: Arc<AtomicU64>,
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() -> Result<(), VsyncError> {
    let mut args = std::env::args().skip(1);
    let mut dir = std::env::temp_dir();
    let mut n = 2000usize;
    let mut burst = 20_000u64;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--dir" => dir = args.next().expect("--dir PATH").into(),
            "--n" => n = args.next().and_then(|v| v.parse().ok()).expect("--n COUNT"),
            "--burst" => {
                burst = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--burst COUNT")
            }
            other => panic!("unknown argument {other}"),
        }
    }
    let dir = dir.join(format!("vsync-safesend-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("log directory");
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("free port");
    let systems: Vec<System> = (0..3)
        .map(|_| System::builder().oracle_port(port).start())
        .collect::<Result<_, _>>()?;
    let configs = [
        Config {
            prim: Prim::Ordered,
            phi: 0,
            disk: false,
        },
        Config {
            prim: Prim::OrderedQuery,
            phi: 0,
            disk: false,
        },
        Config {
            prim: Prim::Safe,
            phi: 1,
            disk: false,
        },
        Config {
            prim: Prim::Safe,
            phi: 3,
            disk: false,
        },
        Config {
            prim: Prim::Safe,
            phi: 1,
            disk: true,
        },
        Config {
            prim: Prim::Safe,
            phi: 3,
            disk: true,
        },
    ];
    println!("3 members, one process, loopback; sender = rank 1; {n} sequential sends for latency, bursts of {burst}");
    println!("| primitive | latency p50 | latency p99 | throughput (msgs/s) |");
    println!("|---|---|---|---|");
    for (ci, cfg) in configs.iter().enumerate() {
        let name = format!("bench{ci}");
        let (tx, rx) = mpsc::channel::<u64>();
        let mut members = Vec::new();
        for (i, sys) in systems.iter().enumerate() {
            let g = Group::new(sys, &name)?;
            let count = Arc::new(AtomicU64::new(0));
            let c = count.clone();
            let tx = tx.clone();
            g.on(MSG, move |seq: u64| {
                c.fetch_add(1, Ordering::Relaxed);
                if i == 1 {
                    let _ = tx.send(seq);
                }
            })?;
            g.on(ASK, |x: u64| x)?;
            if cfg.prim == Prim::Safe {
                g.set_safe_send_threshold(cfg.phi)?;
                if cfg.disk {
                    let log = DiskLogger::open(dir.join(format!("{name}-")), i)
                        .map_err(|e| VsyncError::Config(e.to_string()))?;
                    g.set_durability_method(log)?;
                }
            }
            members.push(Member { group: g, count });
        }
        for m in &members {
            m.group.join()?;
        }
        let t0 = Instant::now();
        while members
            .iter()
            .any(|m| m.group.view().is_none_or(|v| v.len() < 3))
        {
            assert!(t0.elapsed() < Duration::from_secs(20), "views");
            std::thread::sleep(Duration::from_millis(2));
        }
        let sender = &members[1].group;
        assert_eq!(sender.my_rank(), Some(1));
        let send = |seq: u64| -> Result<(), VsyncError> {
            match cfg.prim {
                Prim::Ordered => sender.ordered_send(MSG, (seq,)),
                Prim::Safe => sender.safe_send(MSG, (seq,)).map(|_| ()),
                Prim::OrderedQuery => sender
                    .ordered_query(NReplies::All, Timeout::default(), ASK, (seq,))
                    .map(|_| ()),
            }
        };
        // Latency, one at a time (after a short warm-up).
        let mut lat = Vec::with_capacity(n);
        for k in 0..(n + 100) as u64 {
            let t = Instant::now();
            send(k)?;
            if cfg.prim != Prim::OrderedQuery {
                loop {
                    let got = rx.recv_timeout(Duration::from_secs(10)).expect("delivery");
                    if got == k {
                        break;
                    }
                }
            }
            if k >= 100 {
                lat.push(t.elapsed());
            }
        }
        lat.sort();
        // Throughput.
        let tput = if cfg.prim == Prim::OrderedQuery {
            let total: Duration = lat.iter().sum();
            n as f64 / total.as_secs_f64()
        } else {
            let base: Vec<u64> = members
                .iter()
                .map(|m| m.count.load(Ordering::Relaxed))
                .collect();
            let t = Instant::now();
            for k in 0..burst {
                send(1_000_000 + k)?;
            }
            while members
                .iter()
                .zip(&base)
                .any(|(m, b)| m.count.load(Ordering::Relaxed) < b + burst)
            {
                assert!(t.elapsed() < Duration::from_secs(120), "burst stalled");
                std::thread::sleep(Duration::from_micros(200));
            }
            burst as f64 / t.elapsed().as_secs_f64()
        };
        while rx.try_recv().is_ok() {}
        println!(
            "| {} | {:.0} µs | {:.0} µs | {:.0}{} |",
            cfg.name(),
            pct(&lat, 0.50).as_secs_f64() * 1e6,
            pct(&lat, 0.99).as_secs_f64() * 1e6,
            tput,
            if cfg.prim == Prim::OrderedQuery {
                " (sequential)"
            } else {
                ""
            }
        );
        for m in &members {
            m.group.leave()?;
        }
    }
    for s in &systems {
        s.shutdown()?;
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
